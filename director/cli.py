"""The `directord` command line: run, check, reload, status, events, rs, standby, takeover; more come
from `COMMAND_MODULES`.

Each command function imports what it needs when it runs (start-up time, not import cycles):
`directord status` or `check` should not pay for the daemon's modules, nor `run` for the tools'.
Building the parser imports only the light modules of `COMMAND_MODULES`, whose commands import
their implementation when they run too.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from typing import Any, Protocol

from checks.logs import LOG_FORMAT as LOG_FORMAT  # the checker child's too (tests compare)
from checks.logs import JournalFormatter, journal_stream, text_formatter

DEFAULT_CONFIG = "/etc/directord/directord.yaml"
DEFAULT_SOCKET = "/run/directord/directord.sock"
#: Modules that register further subcommands: each has ``add_commands(subparsers)`` and imports
#: little more than argparse (every command builds the whole parser); their commands import their
#: implementation when they run.
COMMAND_MODULES = ("director.lab.cli", "director.realserver.cli", "director.convert.cli")


class Subcommands(Protocol):
    """What an ``add_commands`` of `COMMAND_MODULES` uses of the object
    ``ArgumentParser.add_subparsers()`` returns: ``add_parser`` makes a subcommand's parser."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        """A new subcommand ``name``; ``kwargs`` as for `argparse.ArgumentParser` (and ``help``)."""


def setup_logging(verbose: bool, log_format: str = "text") -> None:
    """Log to stderr at INFO (DEBUG when ``verbose``); pyroute2 only from WARNING.

    ``log_format``: ``text`` (`checks.logs.LOG_FORMAT`) or ``json`` (one JSON object per line,
    `director.events.JSONFormatter`: events carry their kind and fields). When stderr is the
    journal (`checks.logs.journal_stream`: under systemd), each line starts with its syslog
    priority and the text format leaves the time to the journal (`checks.logs`; the checker
    child does the same).
    """
    handler = logging.StreamHandler(sys.stderr)
    journal = journal_stream(sys.stderr)
    if log_format == "json":
        from .events import JSONFormatter

        handler.setFormatter(JournalFormatter(JSONFormatter()) if journal else JSONFormatter())
    else:
        handler.setFormatter(text_formatter(journal))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    logging.getLogger("pyroute2").setLevel(logging.WARNING)


def cmd_run(args: argparse.Namespace) -> int:
    import asyncio

    from .daemon import Daemon

    setup_logging(args.verbose, args.log_format)
    return asyncio.run(Daemon(args.config, control_socket=args.control_socket, adopt_orphans=True).run())


def cmd_check(args: argparse.Namespace) -> int:
    from .config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        print(f"{args.config}: {exc.total} error(s)", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{args.config}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    n_rs = sum(len(s.real_servers) for s in config.services)
    print(f"{args.config}: OK ({len(config.services)} virtual services, {n_rs} real servers)")
    return 0


def _socket_path(args: argparse.Namespace) -> str:
    """The control socket to ask: ``--control-socket``, else ``global.control_socket`` of ``-c FILE``,
    else `DEFAULT_SOCKET`.

    A file that does not validate (the one ``reload`` is about to be refused, say) still gives its
    ``global.control_socket`` when the YAML can be read (`_raw_control_socket`).
    """
    if args.control_socket:
        return args.control_socket
    if args.config:
        from .config import load_config

        try:
            return load_config(args.config).settings.control_socket
        except Exception:
            return _raw_control_socket(args.config) or DEFAULT_SOCKET
    return DEFAULT_SOCKET


def _raw_control_socket(path: str) -> str | None:
    """``global.control_socket`` of the YAML file at ``path`` without validating anything else,
    or ``None`` when the file cannot be read as the daemon reads it (a regular file of at most
    `director.config.MAX_CONFIG_BYTES`, bounded YAML: `director.config.located.load_yaml`), or
    has no such string."""
    from ha.readfile import read_regular_file

    from .config import MAX_CONFIG_BYTES
    from .config.located import load_yaml

    try:
        root, _ = load_yaml(read_regular_file(path, MAX_CONFIG_BYTES).decode("utf-8"), path)
    except Exception:  # unreadable, not UTF-8...: the caller tries the default socket
        return None
    settings = root.get("global") if isinstance(root, dict) else None
    value = settings.get("control_socket") if isinstance(settings, dict) else None
    return value if isinstance(value, str) and value else None


def _permission_text(path: str) -> str:
    """The error for a control socket that refused us with EACCES/EPERM."""
    return (
        f"permission denied on {path}: the control socket and its directory are open to the daemon's "
        "user only (root); run this command as root"
    )


def cmd_status(args: argparse.Namespace) -> int:
    from . import control
    from .status import build_status, render_status

    doc = None
    path = _socket_path(args)
    try:
        reply = control.request(path, "status")
        if reply.get("ok"):
            doc = reply["status"]
    except PermissionError:
        # a daemon may well be running: the kernel table alone would say "no daemon" wrongly
        print(_permission_text(path), file=sys.stderr)
        return 1
    except (OSError, ValueError):
        doc = None
    if doc is None:
        import asyncio

        from .ipvs import IPVSError, KernelIPVS

        async def dump():
            async with KernelIPVS() as k:
                return await k.dump()

        try:
            table = asyncio.run(dump())
        except IPVSError as exc:
            print(f"no daemon answering and cannot read the kernel table: {exc}", file=sys.stderr)
            return 1
        doc = build_status(None, table)
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True))
    else:
        print(render_status(doc))
    return 0


def cmd_ha_request(args: argparse.Namespace) -> int:
    from . import control
    from .status import printable

    path = _socket_path(args)
    try:
        reply = control.request(path, args.command, which=args.which)
    except PermissionError:
        print(_permission_text(path), file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"no directord answering on {path}: {exc}", file=sys.stderr)
        return 1
    if not reply.get("ok"):
        print(printable(reply.get("error", "refused")), file=sys.stderr)  # may name nodes from a peer's packets
        return 1
    print(printable(reply.get("message", "done")))
    return 0


def cmd_rs(args: argparse.Namespace) -> int:
    """``directord rs enable|drain|disable SERVICE REAL_SERVER``: the operator's state of one real
    server, applied and kept by the running daemon. Exit 0 done, 1 refused (why on stderr),
    2 no daemon could be asked."""
    from .status import printable

    reply = _change_request(
        args, "rs", action=args.action, service=args.service, real_server=args.real_server, reason=args.reason
    )
    if isinstance(reply, int):
        return reply
    print(printable(reply.get("message", "done")))
    return 0


def _change_request(args: argparse.Namespace, command: str, **fields: Any) -> dict[str, Any] | int:
    """Send a request that changes the daemon's state; its accepted reply, or the exit status
    after writing why on stderr: 1 refused, 2 no daemon could be asked (nothing changed)."""
    from . import control
    from .status import printable

    path = _socket_path(args)
    try:
        reply = control.request(path, command, **fields)
    except PermissionError:
        print(_permission_text(path), file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"no directord answering on {path}: {exc}; nothing changed", file=sys.stderr)
        return 2
    if not reply.get("ok"):
        print(printable(reply.get("error", "refused")), file=sys.stderr)
        return 1
    return reply


def cmd_bgp(args: argparse.Namespace) -> int:
    """``directord bgp drain|undrain|status``: the announcements of an active-active director.
    drain: GRACEFUL_SHUTDOWN on its VIPs, then withdrawn (kept across restarts); undrain:
    announced again while healthy; status: sessions and VIPs.  Exit 0 done, 1 refused (why on
    stderr), 2 no daemon could be asked."""
    from .status import printable, render_bgp

    reply = _change_request(args, "bgp", action=args.action)
    if isinstance(reply, int):
        return reply
    if args.action == "status":
        doc = reply.get("bgp") or {}
        print(json.dumps(doc, indent=2, sort_keys=True) if args.json else "\n".join(map(printable, render_bgp(doc))))
        return 0
    print(printable(reply.get("message", "done")))
    return 0


def cmd_install_units(args: argparse.Namespace) -> int:
    """``directord install-units``: the shipped units with this directord's path (`director.units`)."""
    from . import units

    command = units.installed_command()
    names = [units.DAEMON_UNIT] + ([units.REALSERVER_UNIT] if args.realserver else [])
    try:
        written = units.install_units(args.dest, command, names)
    except (OSError, ValueError) as exc:
        print(f"cannot write the units into {args.dest}: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path} (ExecStart: {command})")
    print("now: systemctl daemon-reload")
    return 0


_MANUAL_EXTRA = "the manual extra is not installed: pip install 'directord[manual]' ({})"


def cmd_completion(args: argparse.Namespace) -> int:
    """``directord completion bash|zsh``: the completion script of every command and option,
    generated from this parser by shtab (e.g. ``directord completion bash >
    /etc/bash_completion.d/directord``)."""
    try:
        import shtab  # an optional extra (manual), imported only here
    except ImportError as exc:
        print(_MANUAL_EXTRA.format(exc), file=sys.stderr)
        return 1
    print(shtab.complete(build_parser(), args.shell))
    return 0


def cmd_manpage(args: argparse.Namespace) -> int:
    """``directord manpage``: the manual page (troff) of every command, generated from this
    parser by argparse-manpage (``directord manpage > /usr/local/share/man/man1/directord.1``)."""
    try:
        from argparse_manpage.manpage import Manpage  # an optional extra (manual), imported only here
    except ImportError as exc:
        print(_MANUAL_EXTRA.format(exc), file=sys.stderr)
        return 1
    print(str(Manpage(build_parser())))
    return 0


#: Exit statuses of ``directord reload``: the file was adopted; it was refused (the daemon runs
#: the previous configuration); no daemon could be asked (none listening, or permission denied);
#: the daemon was asked but did not answer in time or stopped (the outcome is not known).
RELOAD_ADOPTED, RELOAD_REFUSED, RELOAD_NOT_ASKED, RELOAD_NO_ANSWER = 0, 1, 2, 3


def cmd_reload(args: argparse.Namespace) -> int:
    """``directord reload``: ask the running daemon to reload its configuration file and wait for
    the outcome. Returns one of ``RELOAD_*``: 0 adopted, 1 refused (the located problems on
    stderr), 2 no daemon could be asked, 3 asked but no answer (see `RELOAD_ADOPTED`)."""
    from . import control
    from .status import printable

    path = _socket_path(args)
    try:
        reply = control.request(path, "reload", timeout=args.timeout)
    except PermissionError:
        print(_permission_text(path), file=sys.stderr)
        return RELOAD_NOT_ASKED
    except control.NoAnswer as exc:
        print(
            f"directord on {path} took the reload request but gave no answer ({exc}): the reload may have "
            "happened or not (directord status shows the last reload)",
            file=sys.stderr,
        )
        return RELOAD_NO_ANSWER
    except ValueError as exc:
        print(f"directord on {path} gave an answer that is not JSON: {exc}", file=sys.stderr)
        return RELOAD_NO_ANSWER
    except OSError as exc:
        print(f"no directord answering on {path}: {exc.strerror or exc}; nothing was reloaded", file=sys.stderr)
        if args.config and not args.control_socket and _raw_control_socket(args.config) is None:
            print(
                printable(
                    f"({args.config} could not be read as YAML, so the socket is the default one; "
                    "directord check -c FILE says why; --control-socket PATH names the socket)"
                ),
                file=sys.stderr,
            )
        return RELOAD_NOT_ASKED
    daemon_file = reply.get("path")
    if args.config and isinstance(daemon_file, str) and not _same_file(args.config, daemon_file):
        print(
            printable(f"note: the daemon reloads its own file {daemon_file}, not {args.config}"),
            file=sys.stderr,
        )
    if not reply.get("ok"):
        error = reply.get("error") or "refused (the daemon's log says why)"
        for line in str(error).splitlines():
            print(printable(line), file=sys.stderr)
        print("reload refused: the daemon keeps its running configuration", file=sys.stderr)
        return RELOAD_REFUSED
    for warning in reply.get("warnings") or ():
        print(printable(f"warning: {warning}"), file=sys.stderr)
    if "services" in reply:
        print(
            printable(
                f"reloaded {daemon_file}: {reply.get('services')} virtual services, "
                f"{reply.get('real_servers')} real servers ({reply.get('seconds')} s)"
            )
        )
    else:
        print("reloaded")
    return RELOAD_ADOPTED


def _same_file(a: str, b: str) -> bool:
    """True when paths ``a`` and ``b`` name the same file (or the same path, when either is missing)."""
    import os

    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def cmd_events(args: argparse.Namespace) -> int:
    """``directord events``: the daemon's events, one per line (``--json``: its JSON objects)."""
    import datetime

    from . import control
    from .status import printable

    path = _socket_path(args)
    fields: dict[str, object] = {"recent": args.recent, "follow": not args.no_follow}
    if args.kind:
        fields["kinds"] = args.kind
    try:
        lines = control.stream(path, **fields)
        answer = next(lines, None)
        if answer is None or not answer.get("ok"):
            error = "no answer" if answer is None else answer.get("error", "refused")
            print(printable(f"{path}: {error}"), file=sys.stderr)
            return 1
        for item in lines:
            if args.json:
                print(json.dumps(item, sort_keys=True), flush=True)
                continue
            if item.get("kind") == "stream.dropped":
                print(f"... {item.get('dropped')} events dropped so far (this reader was too slow)", flush=True)
                continue
            when = datetime.datetime.fromtimestamp(item.get("at", 0)).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
            print(
                printable(f"{when} {item.get('level', '')} {item.get('kind', '')}: {item.get('message', '')}"),
                flush=True,
            )
    except PermissionError:
        print(_permission_text(path), file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"no directord answering on {path}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


#: Seconds ``directord reload`` waits for the daemon's answer by default.
RELOAD_TIMEOUT = 300.0


def _positive_seconds(text: str) -> float:
    """A command-line number of seconds, > 0 and finite. Raises `argparse.ArgumentTypeError`."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


class _VersionAction(argparse.Action):
    """``--version``: print ``directord X.Y.Z`` and exit 0 (the version is looked up only then)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        from director.version import version  # only now: importlib.metadata costs every command start-up time

        print(f"directord {version()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="directord", description="IPVS director: virtual services, health checks, HA")
    p.add_argument("--version", action=_VersionAction, help="print directord's version and exit")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon in the foreground (logs to stderr)")
    run.add_argument("-c", "--config", default=DEFAULT_CONFIG)
    run.add_argument("--control-socket", help="override global.control_socket")
    run.add_argument("-v", "--verbose", action="store_true")
    run.add_argument(
        "--log-format",
        choices=["text", "json"],
        default="text",
        help="text lines (default) or one JSON object per line, events with their kind and fields",
    )
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check", help="validate a configuration file and print every error")
    check.add_argument("-c", "--config", default=DEFAULT_CONFIG)
    check.set_defaults(func=cmd_check)

    reload = sub.add_parser(
        "reload",
        help="make the running daemon reload its configuration file and wait for the outcome",
        description="Exit status: 0 adopted; 1 refused (the problems are printed, the daemon keeps its running "
        "configuration); 2 no daemon could be asked; 3 the daemon was asked but did not answer (outcome unknown).",
    )
    reload.add_argument("-c", "--config", help="read the control socket path from this configuration")
    reload.add_argument("--control-socket")
    reload.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=RELOAD_TIMEOUT,
        metavar="SECONDS",
        help=f"how long to wait for the answer (default {RELOAD_TIMEOUT:g}; large files take seconds)",
    )
    reload.set_defaults(func=cmd_reload)

    status = sub.add_parser("status", help="virtual services, real servers, health and connections")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("-c", "--config", help="read the control socket path from this configuration")
    status.add_argument("--control-socket")
    status.set_defaults(func=cmd_status)

    events = sub.add_parser("events", help="the daemon's events (health, weights, IPVS, HA, reloads) as they happen")
    events.add_argument("--json", action="store_true", help="one JSON object per line")
    events.add_argument(
        "--recent", type=int, default=0, metavar="N", help="start with the last N events the daemon kept (at most 1000)"
    )
    events.add_argument("--no-follow", action="store_true", help="print the recent events and exit")
    events.add_argument("--kind", action="append", metavar="KIND", help="only events of this kind (repeatable)")
    events.add_argument("-c", "--config", help="read the control socket path from this configuration")
    events.add_argument("--control-socket")
    events.set_defaults(func=cmd_events)

    for name, text in (
        ("standby", "hand the resources to the peer director (heartbeat's hb_standby)"),
        ("takeover", "take the resources from the peer director (heartbeat's hb_takeover)"),
    ):
        ha = sub.add_parser(name, help=text)
        ha.add_argument(
            "which",
            nargs="?",
            default="all",
            choices=["all", "local", "foreign"],
            help="all (default), local (the groups this node owns) or foreign (the peer's)",
        )
        ha.add_argument("-c", "--config", help="read the control socket path from this configuration")
        ha.add_argument("--control-socket")
        ha.set_defaults(func=cmd_ha_request)

    rs = sub.add_parser(
        "rs",
        help="take a real server out for maintenance or bring it back (kept across restarts)",
        description="enable: follow its health checks again; drain: weight 0, no new connections, its "
        "connections go on; disable: out of the IPVS table. The state is kept in global.state_dir.",
    )
    rs.add_argument("action", choices=["enable", "drain", "disable"])
    rs.add_argument("service", help="the virtual service's name")
    rs.add_argument("real_server", help="ADDRESS:PORT ([ADDRESS]:PORT for IPv6)")
    rs.add_argument("--reason", default="", help="why (shown in status, the page and the event)")
    rs.add_argument("-c", "--config", help="read the control socket path from this configuration")
    rs.add_argument("--control-socket")
    rs.set_defaults(func=cmd_rs)

    bgp = sub.add_parser(
        "bgp",
        help="drain or undrain this active-active director's BGP announcements (kept across restarts), or show them",
        description="drain: the VIPs get the GRACEFUL_SHUTDOWN community, then are withdrawn after "
        "bgp.graceful_shutdown_wait; undrain: announced again while healthy; status: BGP sessions and VIPs.",
    )
    bgp.add_argument("action", choices=["drain", "undrain", "status"])
    bgp.add_argument("--json", action="store_true", help="status as JSON")
    bgp.add_argument("-c", "--config", help="read the control socket path from this configuration")
    bgp.add_argument("--control-socket")
    bgp.set_defaults(func=cmd_bgp)

    units = sub.add_parser(
        "install-units",
        help="write directord.service naming this directord's own path (a venv's too)",
        description="Write the systemd unit of the daemon (and with --realserver the real server's) into "
        "DEST with ExecStart= naming the directord this command runs from; then systemctl daemon-reload.",
    )
    units.add_argument("--dest", default="/etc/systemd/system", help="directory (default /etc/systemd/system)")
    units.add_argument("--realserver", action="store_true", help="also directord-realserver.service")
    units.set_defaults(func=cmd_install_units)
    completion = sub.add_parser("completion", help="print a shell completion script (bash or zsh) for directord")
    completion.add_argument("shell", choices=["bash", "zsh"])
    completion.set_defaults(func=cmd_completion)
    manpage = sub.add_parser("manpage", help="print directord's manual page (troff; man -l - reads it)")
    manpage.set_defaults(func=cmd_manpage)

    for module in COMMAND_MODULES:
        importlib.import_module(module).add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `directord` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
