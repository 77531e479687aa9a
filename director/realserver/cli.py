"""The ``directord realserver prep|undo|status`` command line: the arguments (`add_commands`) and
the commands' entry points (`cmd_prep`, `cmd_undo`, `cmd_status`).

Every ``directord`` command builds the whole parser, these arguments included, so this module
imports no more than argparse: each entry point imports :mod:`~director.realserver.commands`
(the kernel layer, rtnetlink, the state file) when it runs, a VIP argument is read by
:func:`~director.realserver.model.parse_vip` when one is given, and the help of ``--persist``
names the files of :mod:`~director.realserver.persist` when it is shown.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..lazy import LazyHelpAction

if TYPE_CHECKING:  # pragma: no cover
    from ..cli import Subcommands
    from .model import IPAddress


def cmd_prep(args: argparse.Namespace) -> int:
    """``directord realserver prep`` (:func:`director.realserver.commands.cmd_prep`): the exit status."""
    from . import commands

    return commands.cmd_prep(args)


def cmd_undo(args: argparse.Namespace) -> int:
    """``directord realserver undo`` (:func:`director.realserver.commands.cmd_undo`): the exit status."""
    from . import commands

    return commands.cmd_undo(args)


def cmd_status(args: argparse.Namespace) -> int:
    """``directord realserver status`` (:func:`director.realserver.commands.cmd_status`): the exit status."""
    from . import commands

    return commands.cmd_status(args)


def _vip_arg(text: str) -> IPAddress:
    from .model import parse_vip

    try:
        return parse_vip(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _ip_arg(text: str) -> IPAddress:
    import ipaddress

    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address: {text!r}") from None


def _add_request_args(p: argparse.ArgumentParser, *, required_mode_default: bool) -> None:
    p.add_argument(
        "--vip",
        action="extend",
        nargs="+",
        type=_vip_arg,
        metavar="VIP",
        help="virtual IP address served by this real server (repeatable; IPv4 or IPv6)",
    )
    p.add_argument(
        "--mode",
        choices=("dr", "tun", "nat"),
        default="dr" if required_mode_default else None,
        help="forwarding method of the director (default dr)",
    )
    p.add_argument(
        "--interface",
        action="extend",
        nargs="+",
        metavar="IF",
        help="set the ARP sysctls on these interfaces only (default: every interface that hears ARP)",
    )
    p.add_argument(
        "--director", type=_ip_arg, metavar="DIP", help="nat: the director's address, expected as the default gateway"
    )
    p.add_argument(
        "--state-file",
        metavar="PATH",
        help="where prep records what it changed, for undo "
        "(default /var/lib/directord/realserver.json, realserver-<netns>.json in a namespace)",
    )


class _PersistFlag(LazyHelpAction):
    """``prep --persist``: a flag (``store_true``) whose help names the files it writes, read from
    :mod:`~director.realserver.persist` when the help is shown, not when the parser is built."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, const=True, default=False, **kwargs)

    def help_text(self) -> str:
        """The files ``--persist`` writes and the unit it enables."""
        from .persist import ENV_FILE, SYSCTL_CONF, UNIT_NAME

        return f"also write /{SYSCTL_CONF}, /{ENV_FILE} and install and enable {UNIT_NAME}"


def add_commands(sub: Subcommands) -> None:
    """Register ``directord realserver prep|undo|status`` on the top-level subparsers ``sub``."""
    rs = sub.add_parser("realserver", help="prepare this host as a real server (VIP, ARP and rp_filter sysctls)")
    rssub = rs.add_subparsers(dest="realserver_command", required=True)

    p = rssub.add_parser("prep", help="configure the VIPs and sysctls a real server needs (idempotent)")
    _add_request_args(p, required_mode_default=True)
    p.add_argument("--dry-run", action="store_true", help="print every change, change nothing")
    p.add_argument("--persist", action=_PersistFlag)
    p.add_argument("--persist-root", metavar="DIR", help="write the --persist files below DIR instead of /")
    p.set_defaults(func=cmd_prep)

    u = rssub.add_parser("undo", help="revert what prep changed (recorded in the state file)")
    u.add_argument("--state-file", metavar="PATH", help="the state file prep wrote (same default as prep)")
    u.add_argument("--dry-run", action="store_true", help="print what would be reverted")
    u.set_defaults(func=cmd_undo)

    s = rssub.add_parser("status", help="what is in place and what is missing; exit 0 only when ready")
    _add_request_args(s, required_mode_default=False)
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_status)
