"""The sysctl settings a real server needs, as one declarative table (pure data, no I/O).

Every setting `directord realserver` manages is a row of :data:`TABLE`; the
planner in :mod:`director.realserver.planner` only walks this table. Values are the
integers of ``/proc/sys/net/ipv4/conf/<dev>/<name>``; the semantics are those
of the kernel's ``Documentation/networking/ip-sysctl.rst``:

* ``arp_ignore`` = 1: reply to an ARP request only if the target address is
  configured on the interface the request came in on. The VIP lives on
  ``lo`` (dr) or ``tunl0`` (tun), so the real server never answers ARP for it
  on its LAN interface; only the director does. The kernel applies the
  larger of ``conf/all`` and ``conf/<dev>`` (``IN_DEV_ARP_IGNORE``), so 2
  (reply only when the sender is on the same subnet, stricter) is accepted.
* ``arp_announce`` = 2: always use the best local address of the outgoing
  interface as the sender address of the host's own ARP requests, never the
  VIP (which would teach the LAN that the VIP lives here). Also the larger of
  ``all`` and ``<dev>`` applies.
* ``rp_filter`` relaxed (0 = off, 2 = loose): a packet the ``ipip`` module
  decapsulates arrives on ``tunl0`` with the client's source address, whose
  route goes out of the LAN interface, so strict reverse-path filtering (1)
  drops it. The kernel applies the larger of ``all`` and ``<dev>``, so both
  must be relaxed; 0 is written, 2 is accepted as found.

Device placeholders in :attr:`SysctlRule.devices`: ``"all"``, ``"lo"``,
:data:`ARP_INTERFACES` (every interface that can hear ARP for the VIP: the
non-loopback interfaces without ``IFF_NOARP``, or those named with
``--interface``) and :data:`TUNNEL` (``tunl0``).

Keys are handled in their path form relative to ``/proc/sys``
(``net/ipv4/conf/eth0.100/arp_ignore``) so interface names with dots stay
unambiguous; :func:`display_key` gives the ``sysctl(8)`` form, also valid in
``sysctl.d(5)`` files (``net.ipv4.conf.eth0/100.arp_ignore``).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Placeholder for the interfaces that can hear ARP requests for the VIP.
ARP_INTERFACES = "<arp-interfaces>"
#: The IP-in-IP fallback tunnel device the ``ipip`` module creates in every namespace.
TUNNEL = "tunl0"


@dataclass(frozen=True)
class SysctlRule:
    """One managed per-device IPv4 setting.

    ``name``: attribute under ``net/ipv4/conf/<dev>/``; ``want``: the value
    written when the current one is not acceptable; ``accept``: values left
    alone when found; ``modes``: forwarding methods (``dr``, ``tun``) that
    need it; ``devices``: device names or the placeholders of the module
    notes; ``why``: one line shown by ``status``.
    """

    name: str
    want: int
    accept: frozenset[int]
    modes: frozenset[str]
    devices: tuple[str, ...]
    why: str


TABLE: tuple[SysctlRule, ...] = (
    SysctlRule(
        "arp_ignore",
        1,
        frozenset({1, 2}),
        frozenset({"dr", "tun"}),
        ("all", "lo", ARP_INTERFACES),
        "answer ARP only for addresses of the receiving interface (not the VIP)",
    ),
    SysctlRule(
        "arp_announce",
        2,
        frozenset({2}),
        frozenset({"dr", "tun"}),
        ("all", "lo", ARP_INTERFACES),
        "never use the VIP as the sender address of ARP requests",
    ),
    SysctlRule(
        "rp_filter",
        0,
        frozenset({0, 2}),
        frozenset({"tun"}),
        ("all", TUNNEL),
        "accept decapsulated packets on tunl0 from clients routed elsewhere",
    ),
)


def conf_key(device: str, name: str) -> str:
    """``/proc/sys``-relative path of ``net.ipv4.conf.<device>.<name>``.

    Raises:
        ValueError: a device name that cannot be an interface (empty, ``/``, ``.``, ``..``).
    """
    if not device or "/" in device or device in (".", ".."):
        raise ValueError(f"invalid device name {device!r}")
    return f"net/ipv4/conf/{device}/{name}"


def display_key(key: str) -> str:
    """The ``sysctl(8)``/``sysctl.d(5)`` form of a path key: dots and slashes swapped.

    ``net/ipv4/conf/eth0.100/arp_ignore`` -> ``net.ipv4.conf.eth0/100.arp_ignore``.
    """
    return ".".join(part.replace(".", "/") for part in key.split("/"))


def path_key(display: str) -> str:
    """Inverse of :func:`display_key` (a key containing ``/`` before any ``.`` is already a path)."""
    if "/" in display and ("." not in display or display.index("/") < display.index(".")):
        return display
    return "/".join(part.replace("/", ".") for part in display.split("."))


def wanted(mode: str, arp_interfaces: list[str] | tuple[str, ...]) -> list[tuple[str, SysctlRule]]:
    """The ``(key, rule)`` pairs ``mode`` needs, in table order then device order, without duplicates.

    ``arp_interfaces`` replaces :data:`ARP_INTERFACES`. Pure; an empty list
    for ``nat`` (nothing to set on a NAT real server).
    """
    out: list[tuple[str, SysctlRule]] = []
    seen: set[str] = set()
    for rule in TABLE:
        if mode not in rule.modes:
            continue
        for dev in rule.devices:
            for d in arp_interfaces if dev == ARP_INTERFACES else (dev,):
                key = conf_key(d, rule.name)
                if key not in seen:
                    seen.add(key)
                    out.append((key, rule))
    return out


def names() -> tuple[str, ...]:
    """The attribute names the table manages (what to read under each ``net/ipv4/conf/<dev>/``)."""
    return tuple(dict.fromkeys(rule.name for rule in TABLE))
