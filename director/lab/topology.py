"""The lab's topology as a pure plan (`plan_lab`): namespaces, links to the switch's bridges,
addresses, routes and sysctls of the client, the director(s) and the real servers, per
forwarding method (dr, nat, tun). `director.lab.site.Lab` builds it in namespaces.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["dr", "nat", "tun"]


@dataclass(frozen=True)
class Node:
    """One namespace of the lab.

    ``role``: ``"client"``, ``"dir1"``.., ``"rs1"``..; ``ns``: namespace name
    (``<prefix>-<role>``); ``links``: ``(ifname, bridge)`` pairs, each link is
    a veth whose other end, named ``<role>-<ifname>`` (truncated to 15
    characters), is a port of ``bridge`` in the switch namespace;
    ``addresses``: ``(ifname, cidr)``; ``routes``: ``(dst, gateway)``;
    ``sysctls``: ``(key, value)`` in write order.
    """

    role: str
    ns: str
    links: tuple[tuple[str, str], ...]
    addresses: tuple[tuple[str, str], ...]
    routes: tuple[tuple[str, str], ...] = ()
    sysctls: tuple[tuple[str, str], ...] = ()
    tunnel: bool = False  # bring up tunl0 (ipip) and put the VIP on it
    #: ``(bond ifname, (slave ifnames...))``: bonds made of some of ``links``
    #: (balance-xor, layer3+4 hash, see :data:`BOND_OPTIONS`).
    bonds: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class LabPlan:
    """The complete address and preparation plan of a lab (no I/O).

    Addresses are strings without prefix length in the lookup maps:
    ``addr[role]`` is the node's address on the front subnet (for NAT real
    servers: on the inside subnet), ``vip`` the virtual IP, ``addr6``/
    ``vip6`` the IPv6 ones when ``ipv6`` was asked for (else empty / None).
    """

    prefix: str
    mode: Mode
    switch_ns: str
    bridges: tuple[str, ...]
    nodes: tuple[Node, ...]
    vip: str
    vip6: str | None
    addr: Mapping[str, str]
    addr6: Mapping[str, str]
    prefixlen: int
    prefixlen6: int
    directors: tuple[str, ...]
    real_servers: tuple[str, ...]
    client: str = "client"
    #: the directors' interface on the front subnet: ``eth0``, or ``bond0`` with ``bond``
    service_if: str = "eth0"
    #: the directors' heartbeat interface (``eth1`` on bridge ``hb0``), None without ``ha_link``
    heartbeat_if: str | None = None
    #: heartbeat-link address of each director (``{"dir1": "10.77.2.10"}``), empty without ``ha_link``
    hb_addr: Mapping[str, str] = field(default_factory=dict)
    #: ``(bridge, bridge)`` pairs joined by a veth pair in the switch namespace (leaf switches)
    bridge_links: tuple[tuple[str, str], ...] = ()
    #: NAT: the directors' inside interface and the real servers' default gateway
    inside_if: str | None = None
    nat_gateway: str | None = None

    def node(self, role: str) -> Node:
        """The node of a role; KeyError if there is none."""
        for n in self.nodes:
            if n.role == role:
                return n
        raise KeyError(role)


def _host(net: ipaddress._BaseNetwork, offset: int) -> str:
    addr = net.network_address + offset
    if addr not in net or addr == net.broadcast_address:
        raise ValueError(f"host offset {offset} outside {net}")
    return str(addr)


def port_name(role: str, ifname: str) -> str:
    """Name of the switch-side veth end for ``role``'s ``ifname`` (max 15 characters, IFNAMSIZ-1)."""
    name = role if ifname == "eth0" else f"{role}-{ifname}"
    if len(name) > 15:
        raise ValueError(f"interface name {name!r} longer than 15 characters")
    return name


def plan_lab(
    prefix: str,
    *,
    real_servers: int = 3,
    directors: int = 1,
    mode: Mode = "dr",
    subnet: str = "10.77.0.0/24",
    inside_subnet: str = "10.77.1.0/24",
    ipv6: bool = False,
    subnet6: str = "fd00:77::/64",
    inside_subnet6: str = "fd00:77:1::/64",
    ha_link: bool = False,
    heartbeat_subnet: str = "10.77.2.0/24",
    bond: bool = False,
    prepare_real_servers: bool = True,
    vip: str | None = None,
) -> LabPlan:
    """Plan a lab: namespaces, links, addresses, routes and sysctls (pure).

    Front subnet (bridge ``br0``): client ``.2``, directors ``.10``, ``.11``..
    (DIPs), VIP ``.100``; real servers ``.21``, ``.22``.. on it for ``dr`` and
    ``tun``. For ``nat`` the real servers sit on the inside subnet (bridge
    ``br1``) at ``.21``.., each director has ``eth1`` at inside ``.1``, ``.2``..
    with ``net.ipv4.ip_forward=1``, and the real servers' default route points
    at ``dir1``'s inside address. IPv6 (``ipv6=True``) mirrors the same host
    numbers in ``subnet6``/``inside_subnet6``.

    Real-server preparation (LVS documentation, "LVS-DR"/"LVS-Tun"):

    * ``dr``: VIP/32 (VIP6/128) on ``lo``; ``arp_ignore=1`` and
      ``arp_announce=2`` on ``all``, ``lo`` and ``eth0`` (the kernel applies
      the larger of ``all`` and the device's value);
    * ``tun``: VIP/32 on ``tunl0`` (module ``ipip``), ARP settings as for dr,
      ``rp_filter=0`` on ``all``, ``default``, ``eth0`` and ``tunl0``
      (decapsulated packets arrive on tunl0 from the client's address);
    * ``nat``: nothing beyond the default route via the director.

    ``ha_link``: a separate heartbeat bridge ``hb0``; each director gets
    ``eth1`` on it at ``heartbeat_subnet`` ``.10``, ``.11``.. (as sites run
    heartbeat on a dedicated ``eth1``). NAT directors then use ``eth2`` for
    the inside subnet, and the real servers' default gateway is the floating
    inside address ``.254`` (``nat_gateway``), to be held by the active
    director together with the VIP.

    ``bond``: each director's front uplink is ``bond0``, a balance-xor bond
    (``xmit_hash_policy`` layer3+4) of ``eth0a`` and ``eth0b``; each leg is
    a port of its own bridge (``leaf1``, ``leaf2``: two leaf switches), and
    both leaf bridges are joined to ``br0`` (the service LAN) by a veth pair.
    Front addresses go on ``bond0``.

    ``prepare_real_servers`` false leaves the dr/tun preparation above out of
    the plan (no VIP, no ARP or rp_filter sysctls on the real servers), for a
    caller that prepares them with ``directord realserver prep``.

    ``vip``: the IPv4 VIP when it is not the front subnet's ``.100`` (a routed
    lab announces a VIP outside every subnet).

    Raises:
        ValueError: bad counts, mode, subnets too small or a VIP that is not IPv4.
    """
    if mode not in ("dr", "nat", "tun"):
        raise ValueError(f"unknown forwarding mode {mode!r}")
    if not 1 <= real_servers <= 70 or not 1 <= directors <= 10:
        raise ValueError("need 1..70 real servers and 1..10 directors")
    if not prefix or "/" in prefix or len(prefix) > 40:
        raise ValueError(f"invalid prefix {prefix!r}")
    front = ipaddress.ip_network(subnet)
    inside = ipaddress.ip_network(inside_subnet)
    front6 = ipaddress.ip_network(subnet6)
    inside6 = ipaddress.ip_network(inside_subnet6)
    hbnet = ipaddress.ip_network(heartbeat_subnet)
    if hbnet.version != 4 or hbnet.prefixlen > 24:
        raise ValueError("heartbeat_subnet must be an IPv4 /24 or larger")
    if front.version != 4 or inside.version != 4 or front6.version != 6 or inside6.version != 6:
        raise ValueError("subnet/inside_subnet must be IPv4, subnet6/inside_subnet6 IPv6")
    if front.prefixlen > 24 or inside.prefixlen > 24:
        raise ValueError("subnets must be /24 or larger")

    ns = lambda role: f"{prefix}-{role}"  # noqa: E731
    dir_roles = tuple(f"dir{i}" for i in range(1, directors + 1))
    rs_roles = tuple(f"rs{i}" for i in range(1, real_servers + 1))
    if vip is None:
        vip = _host(front, 100)
    elif ipaddress.ip_address(vip).version != 4:
        raise ValueError(f"the VIP must be IPv4: {vip!r}")
    vip6 = _host(front6, 0x100) if ipv6 else None
    addr: dict[str, str] = {"client": _host(front, 2)}
    addr6: dict[str, str] = {"client": _host(front6, 2)} if ipv6 else {}
    plen, plen6 = front.prefixlen, front6.prefixlen
    nodes: list[Node] = []

    client_addrs = [("eth0", f"{addr['client']}/{plen}")]
    if ipv6:
        client_addrs.append(("eth0", f"{addr6['client']}/{plen6}"))
    nodes.append(Node("client", ns("client"), (("eth0", "br0"),), tuple(client_addrs)))

    service_if = "bond0" if bond else "eth0"
    inside_if = ("eth2" if ha_link else "eth1") if mode == "nat" else None
    nat_gateway = (_host(inside, 254) if ha_link else _host(inside, 1)) if mode == "nat" else None
    hb_addr: dict[str, str] = {}
    for i, role in enumerate(dir_roles):
        addr[role] = _host(front, 10 + i)
        if ipv6:
            addr6[role] = _host(front6, 0x10 + i)
        bonds: tuple[tuple[str, tuple[str, ...]], ...] = ()
        if bond:
            links = [("eth0a", "leaf1"), ("eth0b", "leaf2")]
            bonds = (("bond0", ("eth0a", "eth0b")),)
        else:
            links = [("eth0", "br0")]
        a = [(service_if, f"{addr[role]}/{plen}")] + ([(service_if, f"{addr6[role]}/{plen6}")] if ipv6 else [])
        if ha_link:
            hb_addr[role] = _host(hbnet, 10 + i)
            links.append(("eth1", "hb0"))
            a.append(("eth1", f"{hb_addr[role]}/{hbnet.prefixlen}"))
        sysctls: list[tuple[str, str]] = []
        if mode == "nat":
            assert inside_if is not None
            links.append((inside_if, "br1"))
            a.append((inside_if, f"{_host(inside, 1 + i)}/{inside.prefixlen}"))
            sysctls.append(("net.ipv4.ip_forward", "1"))
            if ipv6:
                a.append((inside_if, f"{_host(inside6, 1 + i)}/{inside6.prefixlen}"))
                sysctls.append(("net.ipv6.conf.all.forwarding", "1"))
        nodes.append(Node(role, ns(role), tuple(links), tuple(a), (), tuple(sysctls), bonds=bonds))

    for i, role in enumerate(rs_roles):
        net4, net6 = (inside, inside6) if mode == "nat" else (front, front6)
        addr[role] = _host(net4, 21 + i)
        a = [("eth0", f"{addr[role]}/{net4.prefixlen}")]
        if ipv6:
            addr6[role] = _host(net6, 0x21 + i)
            a.append(("eth0", f"{addr6[role]}/{net6.prefixlen}"))
        routes: list[tuple[str, str]] = []
        sysctls = []
        tunnel = False
        if mode == "nat":
            assert nat_gateway is not None
            routes.append(("default", nat_gateway))
            if ipv6:
                routes.append(("default6", _host(inside6, 1)))
        elif prepare_real_servers:
            arp = []
            devs = ("all", "lo", "eth0") if mode == "dr" else ("all", "lo", "eth0", "tunl0")
            for dev in devs:
                arp += [(f"net.ipv4.conf.{dev}.arp_ignore", "1"), (f"net.ipv4.conf.{dev}.arp_announce", "2")]
            sysctls += arp
            if mode == "dr":
                a.append(("lo", f"{vip}/32"))
                if ipv6:
                    a.append(("lo", f"{vip6}/128"))
            else:
                tunnel = True
                a.append(("tunl0", f"{vip}/32"))
                sysctls += [(f"net.ipv4.conf.{dev}.rp_filter", "0") for dev in ("all", "default", "eth0", "tunl0")]
        nodes.append(
            Node(
                role,
                ns(role),
                (("eth0", "br1" if mode == "nat" else "br0"),),
                tuple(a),
                tuple(routes),
                tuple(sysctls),
                tunnel,
            )
        )

    bridges = ["br0"] + (["br1"] if mode == "nat" else [])
    if ha_link:
        bridges.append("hb0")
    if bond:
        bridges += ["leaf1", "leaf2"]
    return LabPlan(
        prefix=prefix,
        mode=mode,
        switch_ns=ns("sw"),
        bridges=tuple(bridges),
        nodes=tuple(nodes),
        vip=vip,
        vip6=vip6,
        addr=addr,
        addr6=addr6,
        prefixlen=plen,
        prefixlen6=plen6,
        directors=dir_roles,
        real_servers=rs_roles,
        service_if=service_if,
        heartbeat_if="eth1" if ha_link else None,
        hb_addr=hb_addr,
        bridge_links=(("leaf1", "br0"), ("leaf2", "br0")) if bond else (),
        inside_if=inside_if,
        nat_gateway=nat_gateway,
    )
