"""`directord lab ...`: the HA pair lab and the routed ECMP lab (up, down, status), drills, the demo and
the stock-kernel VM runner.

``lab up`` / ``lab down`` / ``lab status`` act on this machine's kernel: they
need root and ``ip_vs`` and say so otherwise. A lab built inside the VM
cannot outlive the VM's single command, so ``--vm`` belongs to ``lab drill``
(and ``lab demo``): build the lab, run the scenario and tear it down in one
boot. ``lab vm -- CMD`` runs any command in that VM.

`directord` builds its parser from this module for every subcommand, ``run`` included, so the
command functions import the lab's modules when they run (start-up time, not import cycles), and
the drills' names and summaries (``lab drill``'s choices, help and epilog) are read from the
scenario modules when first asked for (`_drills`).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

from ..lazy import LazyHelpAction

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
    if args.topology == "ecmp" and (args.mode != "dr" or args.bond):
        print("directord lab up: --mode and --bond are options of the pair topology", file=sys.stderr)
        return 2
    if args.topology == "pair" and args.directors not in (None, 2):
        print(
            "directord lab up: the pair topology has two directors (--directors is for --topology ecmp)",
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
    if args.topology == "ecmp":
        return _ecmp_up(args)
    pair = PairLab(_options(args))
    p = pair.plan
    return _build(
        pair,
        args,
        f"building the lab {args.prefix}: client, dir1, dir2, {args.real_servers} real servers ({args.mode}"
        f"{', bonded uplinks' if args.bond else ''}), heartbeat bridge on eth1",
        f"client {p.addr['client']}; dir1 {p.addr['dir1']}, dir2 {p.addr['dir2']} (service interface "
        f"{p.service_if}, heartbeat {p.heartbeat_if} {p.hb_addr['dir1']}/{p.hb_addr['dir2']}); VIP {p.vip}; "
        f"real servers {', '.join(pair.lab.rips)}"
        f"{' prepared with directord realserver prep' if pair.use_prep_cmd else ''}",
        f"the lab is up: dir1 holds the VIP. Try:\n"
        f"  ip netns exec {pair.lab.client} curl -s http://{p.vip}/\n"
        f"  directord lab status --prefix {args.prefix}\n"
        f"  directord lab drill fail-active --prefix {args.prefix}\n"
        f"  directord lab down --prefix {args.prefix}",
    )


def _ecmp_up(args: argparse.Namespace) -> int:
    from .ecmp_site import EcmpLab, EcmpOptions

    try:
        lab = EcmpLab(EcmpOptions(prefix=args.prefix, directors=args.directors or 3, real_servers=args.real_servers))
    except ValueError as e:
        print(f"directord lab up: {e}", file=sys.stderr)
        return 2
    e, p = lab.ecmp, lab.plan
    return _build(
        lab,
        args,
        f"building the lab {args.prefix}: client, router (BIRD), {', '.join(lab.directors)}, "
        f"{args.real_servers} real servers (dr)",
        f"client {p.addr['client']} via router {e.router_client_addr}; router {e.router_addr} (AS {e.router_as}, "
        f"BIRD socket {lab.bird_socket}); directors "
        + ", ".join(f"{d} {p.addr[d]} (AS {e.director_as[d]})" for d in lab.directors)
        + f"; VIP {p.vip}; real servers {', '.join(lab.lab.rips)}"
        f"{' prepared with directord realserver prep' if lab.use_prep_cmd else ''}",
        f"the lab is up; the directors announce {p.vip} once their real servers are healthy. Try:\n"
        f"  directord lab status --prefix {args.prefix}\n"
        f"  ip netns exec {lab.lab.client} curl -s http://{p.vip}/\n"
        f"  birdc -s {lab.bird_socket} show route {p.vip}/32 all\n"
        f"  directord lab down --prefix {args.prefix}",
    )


def _build(lab, args: argparse.Namespace, building: str, summary: str, ready: str) -> int:
    """Build ``lab`` (`up` with ``--timeout``) between the ``building`` line and the ``summary``,
    each director's configuration and the ``ready`` text; 1 when it failed."""
    print(building, flush=True)
    try:
        lab.up(timeout=args.timeout)
    except (TimeoutError, RuntimeError, OSError) as e:
        print(f"directord lab up: {e}", file=sys.stderr)
        return 1
    print(summary)
    for node in lab.directors:
        print(f"\n--- {lab.config_path(node)} (directord run in {lab.lab.ns(node)}, log {lab.log_path(node)})")
        print(lab.config_text(node), end="")
    print("\n" + ready)
    return 0


def _attach(prefix: str):
    """The lab of ``prefix`` (pair or ecmp, from its state file), or None when there is none."""
    from .pair import PairLab, read_state

    try:
        topology = read_state(prefix)["topology"]
    except FileNotFoundError:
        return None
    if topology == "ecmp":
        from .ecmp_site import EcmpLab

        return EcmpLab.attach(prefix)
    return PairLab.attach(prefix)


def cmd_lab_down(args: argparse.Namespace) -> int:
    from .netns import cleanup_netns

    lab = _attach(args.prefix)
    gone = lab.down() if lab is not None else cleanup_netns(args.prefix)
    print(f"lab {args.prefix}: " + (f"removed {len(gone)} namespaces" if gone else "nothing to remove"))
    return 0


def cmd_lab_status(args: argparse.Namespace) -> int:
    from . import ecmp_site, pair

    lab = _attach(args.prefix)
    if lab is None:
        print(f"no lab {args.prefix} (no state file); `directord lab up --prefix {args.prefix}` builds one")
        return 1
    doc = lab.status()
    if doc["topology"] == "ecmp":
        print(json.dumps(doc, indent=2, default=str) if args.json else ecmp_site.render_status(doc))
        return 0 if doc["namespaces"] and doc["router"].get("next_hops") else 1
    print(json.dumps(doc, indent=2, default=str) if args.json else pair.render_status(doc))
    return 0 if doc["namespaces"] and doc["holders"] else 1


def cmd_lab_drill(args: argparse.Namespace) -> int:
    from ..cli import setup_logging
    from . import drill
    from .ecmp_scenarios import ECMP_SCENARIOS

    setup_logging(False)
    if (args.topology == "ecmp") != (args.scenario in ECMP_SCENARIOS):
        print(
            f"directord lab drill: {args.scenario} is a drill of the "
            f"{'pair' if args.topology == 'ecmp' else 'ecmp'} topology (--topology)",
            file=sys.stderr,
        )
        return 2
    if args.topology == "ecmp":
        from . import ecmp_drill
        from .ecmp_site import EcmpOptions

        if args.mode != "dr" or args.bond:
            print("directord lab drill: --mode and --bond are options of the pair topology", file=sys.stderr)
            return 2
        opts = EcmpOptions(
            prefix=args.prefix, directors=args.directors, real_servers=args.real_servers, scheduler=args.scheduler
        )
        return ecmp_drill.main(
            args.scenario, options=opts, vm=args.vm, as_json=args.json, rate=args.rate, long_lived=args.long_lived
        )
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


class _Drills(NamedTuple):
    """What ``lab drill`` says of its scenarios (`_drills`).

    Attributes:
        names: the SCENARIO names it accepts: the pair's drills (aliases included), then the
            ecmp topology's.
        help: SCENARIO's help: the drills' names.
        epilog: each drill's name (and aliases) with its summary.
    """

    names: list[str]
    help: str
    epilog: str


@functools.cache
def _drills() -> _Drills:
    """``lab drill``'s scenarios, from the scenario modules, imported now (they take some
    milliseconds, which every other command would pay if the parser imported them)."""
    from .ecmp_scenarios import ECMP_SCENARIOS
    from .scenarios import SCENARIOS, scenario_names

    epilog = "scenarios:\n" + "\n".join(
        f"  {s.name}{' (alias ' + ', '.join(s.aliases) + ')' if s.aliases else ''}: {s.summary}"
        for s in SCENARIOS.values()
    )
    epilog += "\n\necmp drills (--topology ecmp):\n" + "\n".join(
        f"  {s.name}: {s.summary}" for s in ECMP_SCENARIOS.values()
    )
    return _Drills(scenario_names() + list(ECMP_SCENARIOS), ", ".join([*SCENARIOS, *ECMP_SCENARIOS]), epilog)


class _LabParser(argparse.ArgumentParser):
    """The parser of a ``directord lab`` subcommand. Its epilog may be left to a function of no
    arguments, `epilog_later`, called when the epilog is first read (the help, the manual page)."""

    epilog_later: Callable[[], str] | None = None
    _epilog: str | None

    @property
    def epilog(self) -> str | None:
        """The text after the arguments' help, or None."""
        if self.epilog_later is not None:
            self._epilog, self.epilog_later = self.epilog_later(), None
        return self._epilog

    @epilog.setter
    def epilog(self, value: str | None) -> None:
        self._epilog, self.epilog_later = value, None


class _ScenarioArgument(LazyHelpAction):
    """``lab drill SCENARIO``, stored as given. Its ``choices`` and ``help`` are the drills' names,
    read from the scenario modules (`_drills`) when first asked for (parsing SCENARIO, the help,
    the completion script), not when the parser is built."""

    @property
    def choices(self) -> Iterable[Any] | None:
        """The scenario names accepted."""
        return _drills().names

    @choices.setter
    def choices(self, value: Iterable[Any] | None) -> None:  # argparse.Action.__init__ sets None
        pass

    def help_text(self) -> str:
        """The help of SCENARIO: the drills' names."""
        return _drills().help


def add_commands(sub: Subcommands) -> None:
    """Register ``directord lab ...`` on the top-level subparsers ``sub``."""
    lab = sub.add_parser("lab", help="namespace labs: an HA pair of directors, failover drills, the stock-kernel VM")
    labsub = lab.add_subparsers(dest="lab_command", required=True, parser_class=_LabParser)

    up = labsub.add_parser(
        "up", help="build the HA pair lab (or the routed ECMP lab) and start the directors (needs root and ip_vs)"
    )
    _lab_options(up, "dlab")
    up.add_argument(
        "--topology",
        choices=["pair", "ecmp"],
        default="pair",
        help="pair: two directors, active/standby (default); ecmp: a client behind a router running BIRD, "
        "N active directors announcing the VIP over BGP, ECMP over them",
    )
    up.add_argument(
        "--directors", type=int, default=None, metavar="N", help="directors of the ecmp topology, 2-8 (default 3)"
    )
    up.add_argument(
        "--timeout",
        type=float,
        default=300,
        help="seconds to wait for the pair to settle (ecmp: for the router's BIRD to answer)",
    )
    up.add_argument("--vm", action="store_true", help=argparse.SUPPRESS)
    up.set_defaults(func=cmd_lab_up)

    down = labsub.add_parser("down", help="stop the lab's processes, delete its namespaces and files")
    _lab_options(down, "dlab", shape=False)
    down.set_defaults(func=cmd_lab_down)

    status = labsub.add_parser(
        "status",
        help="namespaces, processes, VIP holder and IPVS tables of the lab (ecmp: the router's BGP sessions, "
        "route and next hops)",
    )
    _lab_options(status, "dlab", shape=False)
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_lab_status)

    drill = labsub.add_parser(
        "drill",
        help="a failover drill: two directors, real IPVS, a steady client, one fault",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Runs on the lab `lab up` built with the same --prefix (and leaves it up), or builds a lab "
        "for the drill and removes it afterwards. Exit status 0 when every expectation held.",
    )
    drill.epilog_later = lambda: _drills().epilog
    drill.add_argument("scenario", action=_ScenarioArgument, metavar="SCENARIO")
    drill.add_argument(
        "--topology",
        choices=["pair", "ecmp"],
        default="pair",
        help="pair: the HA pair's drills (default); ecmp: the routed lab's drills",
    )
    drill.add_argument("--directors", type=int, default=3, metavar="N", help="ecmp: directors, 2-8 (default 3)")
    drill.add_argument(
        "--scheduler", choices=["mh", "wlc"], default="mh", help="ecmp: the virtual service's scheduler (default mh)"
    )
    drill.add_argument(
        "--long-lived", type=int, default=12, metavar="M", help="ecmp: long-lived connections held (default 12)"
    )
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
