"""The planner of `directord realserver` (pure): a request and a host snapshot in, a plan out.

:func:`plan` walks the sysctl table (:mod:`director.realserver.sysctl`), the
VIP addresses (on ``lo`` for dr, on ``tunl0`` for tun, marked the way
:mod:`ha.vip` marks directord's own) and, for nat, the default route; it
returns each thing a ready host has as an :class:`~director.realserver.model.Item`,
present or missing with the change that makes it present.
"""

from __future__ import annotations

import ipaddress

from ha.vip import ADDR_PROTO, vip_label

from . import sysctl as rsysctl
from .model import KERNEL_LACKS_IPIP, Address, Change, HostState, Item, Plan, Request


def vip_device(mode: str) -> str:
    """Where the VIPs go: ``lo`` for dr, ``tunl0`` for tun (nat: none, ValueError)."""
    if mode == "dr":
        return "lo"
    if mode == "tun":
        return rsysctl.TUNNEL
    raise ValueError(f"no VIP device in mode {mode!r}")


def is_ours(addr: Address, *, ifa_proto: bool = True) -> bool:
    """True if ``addr`` carries directord's mark (the :mod:`ha.vip` convention).

    IPv4: label ``<ifname>:dd``; IPv6: ``IFA_PROTO`` = ``ha.vip.ADDR_PROTO``
    (any matching IPv6 address when the kernel has no ``IFA_PROTO``).
    """
    if ipaddress.ip_address(addr.address).version == 4:
        return addr.label == vip_label(addr.ifname)
    return addr.proto == ADDR_PROTO or not ifa_proto


def arp_interfaces(request: Request, state: HostState) -> list[str]:
    """The interfaces whose ARP sysctls are set: ``request.interfaces`` if given,
    else every link that is neither loopback nor ``IFF_NOARP``, in link order."""
    if request.interfaces:
        return [n for n in request.interfaces if n != "lo"]
    return [lk.name for lk in state.links if not lk.loopback and not lk.noarp]


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def plan(request: Request, state: HostState) -> Plan:
    """Compare ``state`` with what ``request`` needs (pure; see the notes of :mod:`director.realserver`).

    Items come in the order they must be applied: the tunnel (tun), then
    the sysctls (so the host never answers ARP for a VIP it already holds),
    then the VIP addresses; for nat the default-route check. Errors (the
    plan must not be applied) for: no VIP in dr/tun, an IPv6 VIP in tun, an
    ``--interface`` that does not exist, a VIP already configured on an
    interface that hears ARP/NDP (the host would answer for it), tun on a
    kernel without ipip.
    """
    items: list[Item] = []
    errors: list[str] = []
    notes: list[str] = []
    mode = request.mode
    if mode not in ("dr", "tun", "nat"):
        return Plan(request, (), (f"unknown forwarding method {mode!r} (dr, tun or nat)",))
    for name in request.interfaces:
        if state.link(name) is None:
            errors.append(f"no such interface: {name}")

    if mode == "nat":
        if request.vips:
            notes.append("nat: the VIPs stay on the director; nothing is configured for them here")
        if request.director is None:
            notes.append("nat: give --director DIP to check that replies are routed through the director")
        else:
            gw = state.default_gateways.get(request.director.version)
            ok = gw is not None and ipaddress.ip_address(gw) == request.director
            where = "no default route" if gw is None else f"default route via {gw}"
            items.append(
                Item(
                    f"IPv{request.director.version} default route via the director {request.director}",
                    ok,
                    where + ("" if ok else " (replies would bypass the director)"),
                )
            )
        return Plan(request, tuple(items), tuple(errors), tuple(notes))

    if not request.vips:
        errors.append(f"{mode}: give at least one --vip")
    if mode == "tun" and any(v.version == 6 for v in request.vips):
        errors.append("tun: IPv6 VIPs need an IPv6-in-IPv6 tunnel (ip6tnl), which is not supported; use dr")
    dev = vip_device(mode)
    tunnel = state.link(rsysctl.TUNNEL)

    if mode == "tun":
        if tunnel is None:
            if state.ipip == "absent":
                errors.append(KERNEL_LACKS_IPIP)
                items.append(Item(f"{rsysctl.TUNNEL} (ipip)", False, "the kernel has no ipip module"))
            else:
                items.append(Item("module ipip", False, "", Change("module", "ipip")))
                items.append(Item(f"{rsysctl.TUNNEL} (ipip)", False, "missing", Change("tunnel", rsysctl.TUNNEL)))
        if tunnel is None or not tunnel.up:
            items.append(
                Item(f"{rsysctl.TUNNEL} up", False, "down" if tunnel else "", Change("link_up", rsysctl.TUNNEL))
            )
        else:
            items.append(Item(f"{rsysctl.TUNNEL} up", True, "up"))

    if any(v.version == 4 for v in request.vips):
        for key, rule in rsysctl.wanted(mode, arp_interfaces(request, state)):
            now = state.sysctls.get(key)
            shown = rsysctl.display_key(key)
            if _int(now) in rule.accept:
                items.append(Item(shown, True, f"= {now}", sysctl=(key, str(now))))
            else:
                detail = f"= {'absent' if now is None else now}, want {rule.want}: {rule.why}"
                items.append(
                    Item(shown, False, detail, Change("sysctl", key, str(rule.want), now), sysctl=(key, str(rule.want)))
                )

    ifaces = {lk.name: lk for lk in state.links}
    for vip in request.vips:
        plen = vip.max_prefixlen
        cidr = f"{vip}/{plen}"
        same = [a for a in state.addresses if ipaddress.ip_address(a.address) == vip]
        for a in same:
            lk = ifaces.get(a.ifname)
            if a.ifname != dev and lk is not None and not lk.loopback and not lk.noarp:
                errors.append(
                    f"VIP {vip} is configured on {a.ifname}: this host would answer "
                    f"{'ARP' if vip.version == 4 else 'neighbour solicitations'} for it; remove it there first"
                )
        here = [a for a in same if a.ifname == dev and a.prefixlen == plen]
        if here:
            mine = any(is_ours(a, ifa_proto=state.ifa_proto) for a in here)
            items.append(Item(f"{cidr} on {dev}", True, "" if mine else "(configured by someone else: undo leaves it)"))
        else:
            label = vip_label(dev) if vip.version == 4 else None
            items.append(Item(f"{cidr} on {dev}", False, "", Change("address", dev, cidr, None, label)))
    return Plan(request, tuple(items), tuple(errors), tuple(notes))
