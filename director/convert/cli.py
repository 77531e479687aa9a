"""The ``directord convert`` command line: its arguments (`add_commands`) and its entry point
(`cmd_convert`).

Every ``directord`` command builds the whole parser, this command's arguments included, so this
module imports nothing but argparse: the converter (`director.convert.driver`, with the
configuration loader that checks its output: a fifth of a second) is imported when the command
runs.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from director.cli import Subcommands


def cmd_convert(args: argparse.Namespace) -> int:
    """Run ``directord convert`` (`director.convert.driver.cmd_convert`, imported now); returns the
    exit status: 0 written, 1 errors (nothing written)."""
    from director.convert import driver

    return driver.cmd_convert(args)


def add_commands(sub: Subcommands) -> None:
    """Register ``directord convert`` on the top-level subparsers ``sub``."""
    p = sub.add_parser(
        "convert",
        help="convert an ldirectord.cf (and heartbeat's ha.cf/haresources) to directord YAML",
        description="Convert an ldirectord (+ heartbeat) configuration to directord's YAML. "
        "Errors name FILE:LINE and nothing is written; warnings name what directord "
        "cannot express yet, among them each weaker check: a virtual service whose real "
        "servers directord would check less than ldirectord does (a connect where ldirectord "
        "negotiated, a receive pattern left out), listed at its virtual= line.",
    )
    p.add_argument("--ldirectord", required=True, metavar="FILE", help="ldirectord.cf to convert")
    p.add_argument("--ha-cf", metavar="FILE", help="heartbeat's ha.cf: adds the ha section")
    p.add_argument("--haresources", metavar="FILE", help="heartbeat's haresources: the ha resources (VIPs)")
    p.add_argument(
        "--authkeys",
        metavar="FILE",
        help="heartbeat's authkeys file, referenced by path (default: authkeys next to ha.cf)",
    )
    p.add_argument("--node", metavar="NAME", help="write ha.node (default: none, the host name is used)")
    p.add_argument("-o", "--output", metavar="FILE", help="write here (atomically) instead of stdout")
    p.add_argument("-v", "--verbose", action="store_true", help="also print the notes on stderr")
    p.add_argument(
        "--strict",
        action="store_true",
        help="refuse (exit 1, nothing written) when a virtual service would be checked less than by "
        "ldirectord (unchecked, a connect where ldirectord negotiated, a receive pattern left out...); "
        "each is listed with the file:line of its virtual= block",
    )
    p.set_defaults(func=cmd_convert)
