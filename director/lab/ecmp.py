"""The routed lab of active-active directors as a pure plan (`plan_ecmp`), with the router's
BIRD configuration (`router_bird_conf`) and each director's ``directord run`` configuration
(`director_config`). `director.lab.ecmp_site.EcmpLab` builds and runs it.

Topology: a client on its own network (bridge ``cl0``) behind a router; the router, the N
directors and the real servers share the service network (bridge ``br0``). The router runs
BIRD 2 with one eBGP session per director (the router passive, AS `ROUTER_AS`; director
``dirK`` in AS ``ROUTER_AS + K``), BFD on the service network, and installs the VIP's route
into its kernel as one multipath route over every director that announces it. The kernel
spreads flows over the next hops by their layer-4 hash (``fib_multipath_hash_policy=1``);
the directors forward by direct routing (DR) to the real servers, whose replies go straight
to the client through the router (their default route).

The VIP lies outside every subnet of the lab, so that it is reached only through the
routes the directors announce (nothing answers ARP for it).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from .scenarios import service_yaml
from .topology import LabPlan, Node, _host, plan_lab

#: The router's AS; director ``dirK`` is in AS ``ROUTER_AS + K`` (private ASNs, RFC 6996).
ROUTER_AS = 65000
#: Director counts of the topology (the router's kernel merges up to `MERGE_LIMIT` paths).
MIN_DIRECTORS, MAX_DIRECTORS = 2, 8
#: Next hops per route the router's BIRD merges into one kernel route ("merge paths ... limit",
#: BIRD 2.0 User's Guide, Kernel protocol).
MERGE_LIMIT = 16
#: BGP hold time of the sessions, seconds (RFC 4271 section 4.2: 0 or at least 3).
HOLD_TIME = 3
#: BFD (RFC 5880) interval in milliseconds and detection multiplier: 300 ms to detect a death.
BFD_INTERVAL_MS, BFD_MULTIPLIER = 100, 3
#: Seconds a director announces with GRACEFUL_SHUTDOWN (RFC 8326) before it withdraws.
GRACEFUL_SHUTDOWN_WAIT = 2
#: The role of the router in the plan.
ROUTER = "router"


@dataclass(frozen=True)
class EcmpPlan:
    """The routed lab (no I/O).

    ``lab``: the namespaces, links, addresses, routes and sysctls (built by
    `director.lab.site.Lab`); its ``addr["router"]`` is the router's address on the service
    network (every director's BGP neighbour and the real servers' gateway), and
    ``addr["client"]`` the client's on the client network. ``router_client_addr``: the
    router's address on the client network (the client's gateway). ``director_as``: each
    director's AS. ``merge_limit``: next hops per kernel route.
    """

    lab: LabPlan
    router_client_addr: str
    director_as: Mapping[str, int]
    router: str = ROUTER
    router_as: int = ROUTER_AS
    hold_time: int = HOLD_TIME
    bfd_interval_ms: int = BFD_INTERVAL_MS
    bfd_multiplier: int = BFD_MULTIPLIER
    merge_limit: int = MERGE_LIMIT

    @property
    def vip(self) -> str:
        """The VIP (IPv4)."""
        return self.lab.vip

    @property
    def directors(self) -> tuple[str, ...]:
        """``("dir1", ..., "dirN")``."""
        return self.lab.directors

    @property
    def router_addr(self) -> str:
        """The router's address on the service network."""
        return self.lab.addr[self.router]

    @property
    def router_ns(self) -> str:
        """The router's namespace."""
        return self.lab.node(self.router).ns


def plan_ecmp(
    prefix: str,
    *,
    directors: int = 3,
    real_servers: int = 3,
    service_subnet: str = "10.77.0.0/24",
    client_subnet: str = "10.77.3.0/24",
    vip: str = "10.77.100.1",
    prepare_real_servers: bool = True,
) -> EcmpPlan:
    """Plan the routed lab (pure).

    Service network (bridge ``br0``): router ``.1``, directors ``.10``, ``.11``.., real
    servers ``.21``, ``.22``.. (as `director.lab.topology.plan_lab` numbers them). Client
    network (bridge ``cl0``): router ``.1``, client ``.2``. Every node but the router has its
    default route via the router. The router's sysctls: ``net.ipv4.ip_forward=1`` and
    ``net.ipv4.fib_multipath_hash_policy=1`` (layer-4 hash of a flow's 5-tuple over the next
    hops of a multipath route; kernel Documentation/networking/ip-sysctl.rst). The directors
    get no VIP and no sysctl here: ``directord run`` puts the VIP on ``lo`` and sets what DR
    needs. The real servers are DR real servers (VIP on ``lo``, ARP sysctls) unless
    ``prepare_real_servers`` is false (the caller runs ``directord realserver prep``).

    Raises:
        ValueError: ``directors`` outside `MIN_DIRECTORS`..`MAX_DIRECTORS`, a bad count,
        prefix or subnet, subnets that overlap, or a VIP inside one of them.
    """
    if not MIN_DIRECTORS <= directors <= MAX_DIRECTORS:
        raise ValueError(f"need {MIN_DIRECTORS}..{MAX_DIRECTORS} directors, not {directors}")
    client_net = ipaddress.ip_network(client_subnet)
    service_net = ipaddress.ip_network(service_subnet)
    if client_net.version != 4 or client_net.prefixlen > 24:
        raise ValueError("client_subnet must be an IPv4 /24 or larger")
    if client_net.overlaps(service_net):
        raise ValueError(f"client subnet {client_net} overlaps the service subnet {service_net}")
    if any(ipaddress.ip_address(vip) in net for net in (client_net, service_net)):
        raise ValueError(f"the VIP {vip} must lie outside the client and service subnets")
    base = plan_lab(
        prefix,
        real_servers=real_servers,
        directors=directors,
        mode="dr",
        subnet=service_subnet,
        prepare_real_servers=prepare_real_servers,
        vip=vip,
    )
    router_addr = _host(service_net, 1)
    router_client = _host(client_net, 1)
    client_addr = _host(client_net, 2)
    to_router = (("default", router_addr),)
    client = Node(
        "client",
        f"{prefix}-client",
        (("eth0", "cl0"),),
        (("eth0", f"{client_addr}/{client_net.prefixlen}"),),
        routes=(("default", router_client),),
    )
    nodes = [
        client,
        Node(
            ROUTER,
            f"{prefix}-{ROUTER}",
            (("eth0", "cl0"), ("eth1", "br0")),
            (
                ("eth0", f"{router_client}/{client_net.prefixlen}"),
                ("eth1", f"{router_addr}/{service_net.prefixlen}"),
            ),
            sysctls=(("net.ipv4.ip_forward", "1"), ("net.ipv4.fib_multipath_hash_policy", "1")),
        ),
    ]
    nodes += [dataclasses.replace(n, routes=n.routes + to_router) for n in base.nodes if n.role != "client"]
    addr = {**base.addr, "client": client_addr, ROUTER: router_addr}
    lab = dataclasses.replace(base, bridges=("cl0", *base.bridges), nodes=tuple(nodes), addr=addr)
    return EcmpPlan(
        lab=lab,
        router_client_addr=router_client,
        director_as={d: ROUTER_AS + i for i, d in enumerate(lab.directors, start=1)},
    )


def router_bird_conf(plan: EcmpPlan, *, log_path: str) -> str:
    """The router's BIRD 2 configuration (pure; text).

    ``protocol device``; ``protocol kernel`` exporting the BGP routes to the kernel's main
    table with ``merge paths on limit <merge_limit>`` (equal BGP routes from several
    directors become one ECMP route; BIRD 2.0 User's Guide, Kernel protocol, "merge paths");
    ``protocol bfd`` on the service interface (``interval`` ms, ``multiplier``); one
    ``protocol bgp dirK`` per director: passive (the director connects), eBGP from the
    router's AS to the director's, ``hold time``, ``bfd on``, importing every route (one with
    the GRACEFUL_SHUTDOWN community at LOCAL_PREF 0, RFC 8326) and exporting none.  Log lines
    go to ``log_path`` (a path without ``"``).

    Raises:
        ValueError: ``log_path`` contains ``"`` or a newline.
    """
    if '"' in log_path or "\n" in log_path:
        raise ValueError(f"log path {log_path!r} cannot be written in a BIRD configuration")
    service_if = next(i for i, bridge in plan.lab.node(plan.router).links if bridge == "br0")
    lines = [
        f"# BIRD configuration of the router of the lab {plan.lab.prefix} (generated by `directord lab up`)",
        f"router id {plan.router_addr};",
        f'log "{log_path}" all;',
        "",
        "protocol device {",
        "}",
        "",
        "protocol kernel {",
        "  ipv4 {",
        "    import none;",
        "    export where source = RTS_BGP;",
        "  };",
        f"  merge paths on limit {plan.merge_limit};",
        "}",
        "",
        "# RFC 8326: a route with GRACEFUL_SHUTDOWN gets LOCAL_PREF 0, which takes it out of the",
        "# ECMP route while the other directors' routes are there",
        "filter directord_gshut {",
        "  if (65535, 0) ~ bgp_community then bgp_local_pref = 0;",
        "  accept;",
        "}",
        "",
        "protocol bfd {",
        f'  interface "{service_if}" {{',
        f"    interval {plan.bfd_interval_ms} ms;",
        f"    multiplier {plan.bfd_multiplier};",
        "  };",
        "}",
    ]
    for node in plan.directors:
        lines += [
            "",
            f"protocol bgp {node} {{",
            f"  local {plan.router_addr} as {plan.router_as};",
            f"  neighbor {plan.lab.addr[node]} as {plan.director_as[node]};",
            "  passive on;",
            f"  hold time {plan.hold_time};",
            "  bfd on;",
            "  ipv4 {",
            "    import filter directord_gshut;",
            "    export none;",
            "  };",
            "}",
        ]
    return "\n".join(lines) + "\n"


def director_config(
    plan: EcmpPlan, node: str, *, state_dir: str, bgp_run_dir: str, port: int = 80, scheduler: str = "mh"
) -> str:
    """The ``directord run`` configuration of director ``node`` (pure; YAML text).

    One virtual service ``web`` on VIP:port (tcp; scheduler ``mh`` with flags ``mh-port``, so
    that every director picks the same real server for a flow, and ``mh-fallback``, so that a
    flow hashed to a real server at weight 0 goes to the next one instead of being dropped;
    DR; the lab's HTTP check; quiescent real servers) over every real server, and a ``bgp`` section: the director's
    AS and router id (its address), the router as its one neighbour (hold time in seconds,
    BFD), BFD ``interval`` (ms) and ``multiplier``, the GRACEFUL_SHUTDOWN wait (seconds), the
    BIRD it runs in ``bgp_run_dir``, and the VIP to announce. ``scheduler`` ``"wlc"`` instead
    of ``mh`` (no flags: each director picks real servers for itself; the drills compare).

    Raises:
        ValueError: ``node`` is not a director of the plan, or a scheduler other than mh/wlc.
    """
    if node not in plan.directors:
        raise ValueError(f"{node!r} is not a director of the plan")
    if scheduler not in ("mh", "wlc"):
        raise ValueError(f"scheduler {scheduler!r}: the lab uses mh or wlc")
    rips = [plan.lab.addr[r] for r in plan.lab.real_servers]
    services = service_yaml(
        plan.vip,
        port,
        rips,
        scheduler=scheduler,
        scheduler_flags=["mh-fallback", "mh-port"] if scheduler == "mh" else [],
        forwarding="dr",
        on_failure="quiescent",
    )
    me = plan.lab.addr[node]
    return f"""\
# directord configuration of {node} in the lab {plan.lab.prefix} (generated by `directord lab up`)
global:
  reconcile_interval: 5
  state_dir: {state_dir}
{services}\
bgp:
  local_as: {plan.director_as[node]}
  router_id: {me}
  neighbors:
    - {{address: {plan.router_addr}, as: {plan.router_as}, name: router, hold_time: {plan.hold_time}, bfd: true}}
  bfd: {{interval: {plan.bfd_interval_ms}ms, multiplier: {plan.bfd_multiplier}}}
  graceful_shutdown_wait: {GRACEFUL_SHUTDOWN_WAIT}s
  speaker: {{run_dir: {bgp_run_dir}}}
  vips: [{plan.vip}]
"""
