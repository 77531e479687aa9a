"""`directord lab ...`: the namespace labs, drills and the stock-kernel VM runner."""

from __future__ import annotations

import argparse
import sys


def cmd_lab_vm(args: argparse.Namespace) -> int:
    from . import vm

    argv = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        print("directord lab vm: give a command to run in the guest", file=sys.stderr)
        return 2
    vm.ensure_vm_prerequisites()
    return vm.run_in_vm(argv, out_dir=args.out, timeout_s=args.timeout)


def cmd_lab_demo(args: argparse.Namespace) -> int:
    from ..cli import setup_logging
    from . import demo

    setup_logging(False)
    return demo.main(vm=args.vm, requests=args.requests)


def cmd_lab_drill(args: argparse.Namespace) -> int:
    from ..cli import setup_logging
    from . import drill

    setup_logging(False)
    return drill.main(args.scenario, vm=args.vm, as_json=args.json)


def add_commands(sub: "argparse._SubParsersAction") -> None:
    """Register ``directord lab ...`` on the top-level subparsers ``sub``."""
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
