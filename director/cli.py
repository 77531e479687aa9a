"""The `directord` command line: run, check, status, lab."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys

DEFAULT_CONFIG = "/etc/directord/directord.yaml"
DEFAULT_SOCKET = "/run/directord/directord.sock"


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("pyroute2").setLevel(logging.WARNING)


def cmd_run(args: argparse.Namespace) -> int:
    from .daemon import Daemon

    _setup_logging(args.verbose)
    return asyncio.run(Daemon(args.config, control_socket=args.control_socket).run())


def cmd_check(args: argparse.Namespace) -> int:
    from .config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        print(f"{args.config}: {len(exc.issues)} error(s)", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{args.config}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    n_rs = sum(len(s.real_servers) for s in config.services)
    print(f"{args.config}: OK ({len(config.services)} virtual services, {n_rs} real servers)")
    return 0


def _socket_path(args: argparse.Namespace) -> str:
    if args.control_socket:
        return args.control_socket
    if args.config:
        from .config import load_config

        try:
            return load_config(args.config).settings.control_socket
        except Exception:
            pass
    return DEFAULT_SOCKET


def cmd_status(args: argparse.Namespace) -> int:
    from . import control
    from .status import build_status, render_status

    doc = None
    try:
        reply = control.request(_socket_path(args), "status")
        if reply.get("ok"):
            doc = reply["status"]
    except (OSError, ValueError):
        doc = None
    if doc is None:
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


def cmd_lab_vm(args: argparse.Namespace) -> int:
    from .lab import vm

    argv = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        print("directord lab vm: give a command to run in the guest", file=sys.stderr)
        return 2
    vm.ensure_vm_prerequisites()
    return vm.run_in_vm(argv, out_dir=args.out, timeout_s=args.timeout)


def cmd_lab_demo(args: argparse.Namespace) -> int:
    from .lab import demo

    _setup_logging(False)
    return demo.main(vm=args.vm, requests=args.requests)


def cmd_lab_drill(args: argparse.Namespace) -> int:
    from .lab import drill

    _setup_logging(False)
    return drill.main(args.scenario, vm=args.vm, as_json=args.json)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="directord", description="IPVS director: virtual services, health checks, HA")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the daemon in the foreground (logs to stderr)")
    run.add_argument("-c", "--config", default=DEFAULT_CONFIG)
    run.add_argument("--control-socket", help="override global.control_socket")
    run.add_argument("-v", "--verbose", action="store_true")
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check", help="validate a configuration file and print every error")
    check.add_argument("-c", "--config", default=DEFAULT_CONFIG)
    check.set_defaults(func=cmd_check)

    status = sub.add_parser("status", help="virtual services, real servers, health and connections")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument("-c", "--config", help="read the control socket path from this configuration")
    status.add_argument("--control-socket")
    status.set_defaults(func=cmd_status)

    lab = sub.add_parser("lab", help="namespace labs and the stock-kernel VM")
    labsub = lab.add_subparsers(dest="lab_command", required=True)
    vm = labsub.add_parser("vm", help="run a command inside the stock-kernel VM (installs what it needs)")
    vm.add_argument("--timeout", type=float, default=3600, help="seconds")
    vm.add_argument("--out", default=None, help="folder for the guest's logs and exit status")
    vm.add_argument("argv", nargs=argparse.REMAINDER)
    vm.set_defaults(func=cmd_lab_vm)
    demo = labsub.add_parser("demo", help="a DR lab on real IPVS: client -> VIP -> three real servers")
    demo.add_argument("--vm", action="store_true", help="boot the stock-kernel VM and run the demo there")
    demo.add_argument("--requests", type=int, default=60, help="requests in the spread test (a multiple of 6)")
    demo.set_defaults(func=cmd_lab_demo)
    drill = labsub.add_parser("drill", help="a failover drill: two directors, real IPVS, a steady client")
    drill.add_argument("scenario", choices=["fail-active"])
    drill.add_argument("--vm", action="store_true", help="boot the stock-kernel VM and run the drill there")
    drill.add_argument("--json", action="store_true")
    drill.set_defaults(func=cmd_lab_drill)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `directord` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
