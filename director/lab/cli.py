"""`directord lab ...`: the HA pair lab (up, down, status, drill), the demo and the stock-kernel VM runner.

``lab up`` / ``lab down`` / ``lab status`` act on this machine's kernel: they
need root and ``ip_vs`` and say so otherwise. A lab built inside the VM
cannot outlive the VM's single command, so ``--vm`` belongs to ``lab drill``
(and ``lab demo``): build the lab, run the scenario and tear it down in one
boot. ``lab vm -- CMD`` runs any command in that VM.

`directord` builds its parser from this module for every subcommand, ``run`` included, so the
command functions import the lab's modules when they run (start-up time, not import cycles).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from .scenarios import SCENARIOS, scenario_names

if TYPE_CHECKING:  # pragma: no cover
    from ..cli import Subcommands


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


def _options(args: argparse.Namespace):
    from .pair import PairOptions

    return PairOptions(prefix=args.prefix, real_servers=args.real_servers, mode=args.mode, bond=args.bond)


def _no_ipvs(command: str) -> int | None:
    from .pair import ipvs_problem

    problem = ipvs_problem()
    if problem:
        print(
            f"directord lab {command}: {problem}. A lab cannot outlive the stock-kernel VM's single command, "
            "so on this machine run a whole drill there instead: directord lab drill fail-active --vm",
            file=sys.stderr,
        )
        return 2
    return None


def cmd_lab_up(args: argparse.Namespace) -> int:
    from ..cli import setup_logging
    from .pair import PairLab, state_file

    setup_logging(False)
    if args.vm:
        print(
            "directord lab up: a lab built in the VM would vanish when the VM powers off after its one "
            "command; use `directord lab drill SCENARIO --vm` (build, drill and tear down in one boot) or "
            "`directord lab vm -- directord lab up ...` followed by your commands in the same guest command",
            file=sys.stderr,
        )
        return 2
    rc = _no_ipvs("up")
    if rc is not None:
        return rc
    if PairLab.exists(args.prefix):
        print(
            f"directord lab up: the lab {args.prefix} exists ({state_file(args.prefix)}); "
            f"`directord lab down --prefix {args.prefix}` first",
            file=sys.stderr,
        )
        return 1
    pair = PairLab(_options(args))
    p = pair.plan
    print(
        f"building the lab {args.prefix}: client, dir1, dir2, {args.real_servers} real servers ({args.mode}"
        f"{', bonded uplinks' if args.bond else ''}), heartbeat bridge on eth1",
        flush=True,
    )
    try:
        pair.up(timeout=args.timeout)
    except (TimeoutError, RuntimeError, OSError) as e:
        print(f"directord lab up: {e}", file=sys.stderr)
        return 1
    print(
        f"client {p.addr['client']}; dir1 {p.addr['dir1']}, dir2 {p.addr['dir2']} (service interface "
        f"{p.service_if}, heartbeat {p.heartbeat_if} {p.hb_addr['dir1']}/{p.hb_addr['dir2']}); VIP {p.vip}; "
        f"real servers {', '.join(pair.lab.rips)}"
        f"{' prepared with directord realserver prep' if pair.use_prep_cmd else ''}"
    )
    for node in ("dir1", "dir2"):
        print(f"\n--- {pair.config_path(node)} (directord run in {pair.lab.ns(node)}, log {pair.log_path(node)})")
        print(pair.config_text(node), end="")
    print(
        f"\nthe lab is up: dir1 holds the VIP. Try:\n"
        f"  ip netns exec {pair.lab.client} curl -s http://{p.vip}/\n"
        f"  directord lab status --prefix {args.prefix}\n"
        f"  directord lab drill fail-active --prefix {args.prefix}\n"
        f"  directord lab down --prefix {args.prefix}"
    )
    return 0


def cmd_lab_down(args: argparse.Namespace) -> int:
    from .netns import cleanup_netns
    from .pair import PairLab

    if PairLab.exists(args.prefix):
        gone = PairLab.attach(args.prefix).down()
    else:
        gone = cleanup_netns(args.prefix)
    print(f"lab {args.prefix}: " + (f"removed {len(gone)} namespaces" if gone else "nothing to remove"))
    return 0


def cmd_lab_status(args: argparse.Namespace) -> int:
    from .pair import PairLab, render_status

    if not PairLab.exists(args.prefix):
        print(f"no lab {args.prefix} (no state file); `directord lab up --prefix {args.prefix}` builds one")
        return 1
    doc = PairLab.attach(args.prefix).status()
    print(json.dumps(doc, indent=2, default=str) if args.json else render_status(doc))
    return 0 if doc["namespaces"] and doc["holders"] else 1


def cmd_lab_drill(args: argparse.Namespace) -> int:
    from ..cli import setup_logging
    from . import drill

    setup_logging(False)
    return drill.main(args.scenario, vm=args.vm, as_json=args.json, rate=args.rate, options=_options(args))


def _lab_options(p: argparse.ArgumentParser, default_prefix: str, shape: bool = True) -> None:
    p.add_argument("--prefix", default=default_prefix, help=f"namespace prefix (default {default_prefix})")
    if shape:
        p.add_argument("--real-servers", type=int, default=3, metavar="N", help="real servers (default 3)")
        p.add_argument("--mode", choices=["dr", "nat", "tun"], default="dr", help="forwarding method (default dr)")
        p.add_argument(
            "--bond",
            action="store_true",
            help="each director's service uplink is a balance-xor bond of two legs on two leaf switches",
        )


def add_commands(sub: Subcommands) -> None:
    """Register ``directord lab ...`` on the top-level subparsers ``sub``."""
    lab = sub.add_parser("lab", help="namespace labs: an HA pair of directors, failover drills, the stock-kernel VM")
    labsub = lab.add_subparsers(dest="lab_command", required=True)

    up = labsub.add_parser("up", help="build the HA pair lab and start both directors (needs root and ip_vs)")
    _lab_options(up, "dlab")
    up.add_argument("--timeout", type=float, default=300, help="seconds to wait for the pair to settle")
    up.add_argument("--vm", action="store_true", help=argparse.SUPPRESS)
    up.set_defaults(func=cmd_lab_up)

    down = labsub.add_parser("down", help="stop the lab's processes, delete its namespaces and files")
    _lab_options(down, "dlab", shape=False)
    down.set_defaults(func=cmd_lab_down)

    status = labsub.add_parser("status", help="namespaces, processes, VIP holder and IPVS tables of the lab")
    _lab_options(status, "dlab", shape=False)
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_lab_status)

    epilog = "scenarios:\n" + "\n".join(
        f"  {s.name}{' (alias ' + ', '.join(s.aliases) + ')' if s.aliases else ''}: {s.summary}"
        for s in SCENARIOS.values()
    )
    drill = labsub.add_parser(
        "drill",
        help="a failover drill: two directors, real IPVS, a steady client, one fault",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Runs on the lab `lab up` built with the same --prefix (and leaves it up), or builds a lab "
        "for the drill and removes it afterwards. Exit status 0 when every expectation held.",
    )
    drill.add_argument("scenario", choices=scenario_names(), metavar="SCENARIO", help=", ".join(SCENARIOS))
    drill.add_argument("--rate", type=float, default=50.0, help="client requests per second (default 50)")
    drill.add_argument("--json", action="store_true", help="print the report as JSON")
    drill.add_argument("--vm", action="store_true", help="boot the stock-kernel VM and run the drill there")
    _lab_options(drill, "ddrill")
    drill.set_defaults(func=cmd_lab_drill)

    demo = labsub.add_parser("demo", help="a DR lab on real IPVS: client -> VIP -> three real servers")
    demo.add_argument("--vm", action="store_true", help="boot the stock-kernel VM and run the demo there")
    demo.add_argument("--requests", type=int, default=60, help="requests in the spread test (a multiple of 6)")
    demo.set_defaults(func=cmd_lab_demo)

    vm = labsub.add_parser("vm", help="run a command inside the stock-kernel VM (installs what it needs)")
    vm.add_argument("--timeout", type=float, default=3600, help="seconds")
    vm.add_argument("--out", default=None, help="folder for the guest's logs and exit status")
    vm.add_argument("argv", nargs=argparse.REMAINDER)
    vm.set_defaults(func=cmd_lab_vm)
