"""Announcing a VIP after a takeover: gratuitous ARP (IPv4) and unsolicited NA (IPv6).

When a director takes a VIP over, the hosts and switches on the segment still
map the VIP to the previous owner's MAC. They are told otherwise with:

* IPv4: a gratuitous ARP *pair* (RFC 826 frame layout, "gratuitous" in the
  sense of RFC 5227 section 3): an ARP request and an ARP reply, both
  broadcast, sender hardware address (SHA) = our MAC, sender and target
  protocol addresses (SPA = TPA) = the VIP; the request's target hardware
  address (THA) is zero, the reply's is our MAC. Linux treats both as
  gratuitous (``arp_is_garp()`` in ``net/ipv4/arp.c``: a reply only if
  THA == SHA) and then updates an existing neighbour entry even inside its
  ``locktime``; other stacks honour one or the other, hence the pair.
* IPv6: an unsolicited Neighbor Advertisement (RFC 4861 sections 4.4 and
  7.2.6): ICMPv6 type 136 to ff02::1, hop limit 255, Override flag set,
  Solicited and Router flags clear, target = the VIP, with a target
  link-layer address option (type 2, length 1 = 8 octets) carrying our MAC.

Repeats are spaced more than one second apart: a Linux neighbour entry
updated less than ``locktime`` ago (``net.ipv4.neigh.*.locktime``, 1 s by
default) ignores non-gratuitous updates, and a single frame may be lost.
See :func:`announce_schedule`.

Bonded interfaces: a bond in a hash mode sends a broadcast on one leg only,
so the switch behind the other leg keeps a stale entry. For a bond the
announcement is sent on the bond *and* on every slave (see
:func:`interfaces_for`), always carrying the bond's MAC.

Layout: pure builders and the schedule first (bytes in, bytes out, no
sockets, no clock), then the I/O (:class:`Announcer`). Sockets are created
in the network namespace of the calling thread; the daemon runs inside the
director's namespace. Frames go out on raw ``AF_PACKET`` sockets bound to the
interface (no receive queue: protocol 0) and, for the NA on the bond or
plain interface, on a raw ICMPv6 socket whose checksum the kernel fills in
(``IPV6_CHECKSUM`` is always on for ICMPv6 raw sockets, RFC 3542 section
3.1). Bond slaves carry no IPv6 configuration (the kernel skips addrconf on
``IFF_SLAVE`` devices), so there the NA goes out as a complete Ethernet/IPv6
frame built by :func:`na_frame`, checksum included.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
import struct
from collections.abc import Iterable
from typing import Any, NamedTuple

from checks.protocols.icmp import internet_checksum

from .model import NEIGH_LOCKTIME
from .rtnl import async_iproute, in_thread, iproute

log = logging.getLogger("directord.ha")

__all__ = [
    "ETH_P_ARP",
    "ETH_P_IPV6",
    "ARPOP_REQUEST",
    "ARPOP_REPLY",
    "ARP_FRAME_LEN",
    "NA_LEN",
    "NA_FRAME_LEN",
    "ND_HOP_LIMIT",
    "NEIGH_LOCKTIME",
    "DEFAULT_REPEATS",
    "DEFAULT_INTERVAL",
    "DEFAULT_BURST",
    "NoSuchInterface",
    "parse_mac",
    "format_mac",
    "arp_frame",
    "garp_pair",
    "unsolicited_na",
    "icmpv6_checksum",
    "na_frame",
    "announce_schedule",
    "Link",
    "announce_legs",
    "interfaces_for",
    "interfaces_for_async",
    "Announcer",
]

# --- constants (include/uapi/linux/if_ether.h, if_arp.h, icmpv6.h; RFC 826, RFC 4861) ---

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ARPHRD_ETHER = 1
ARPOP_REQUEST = 1
ARPOP_REPLY = 2
ETH_ALEN = 6
BROADCAST_MAC = b"\xff" * ETH_ALEN
ZERO_MAC = b"\x00" * ETH_ALEN
#: All-nodes link-local multicast group and its Ethernet mapping (RFC 2464 section 7).
ALL_NODES = "ff02::1"
ALL_NODES_MAC = b"\x33\x33\x00\x00\x00\x01"
IPPROTO_ICMPV6 = 58
ND_NEIGHBOR_ADVERT = 136
ND_OPT_TARGET_LL_ADDR = 2
NA_FLAG_ROUTER = 0x80000000
NA_FLAG_SOLICITED = 0x40000000
NA_FLAG_OVERRIDE = 0x20000000
#: Hop limit of every neighbour discovery message (RFC 4861 section 7.1.2).
ND_HOP_LIMIT = 255
#: RFC 4861 section 10: MAX_NEIGHBOR_ADVERTISEMENT (unsolicited NAs a node may send).
MAX_NEIGHBOR_ADVERTISEMENT = 3
ICMP6_FILTER = 1  # include/uapi/linux/icmpv6.h ICMPV6_FILTER: 256-bit "block" mask
PACKET_OUTGOING = 4  # include/uapi/linux/if_packet.h

ARP_FRAME_LEN = 42  # 14 Ethernet + 28 ARP
NA_LEN = 32  # 24 NA + 8 target link-layer address option
NA_FRAME_LEN = 14 + 40 + NA_LEN

#: Defaults matching the ``ha:`` section (``announce_repeats``, ``announce_interval``).
DEFAULT_REPEATS = 3
DEFAULT_INTERVAL = 1.1
#: Pairs (IPv4) or NAs (IPv6) sent back to back at once; stays within MAX_NEIGHBOR_ADVERTISEMENT.
DEFAULT_BURST = 2


class NoSuchInterface(OSError):
    """The named network interface does not exist in the current network namespace.

    An ``OSError`` with errno ``ENODEV``; ``ifname`` holds the name.
    """

    def __init__(self, ifname: str) -> None:
        super().__init__(errno.ENODEV, f"no such network interface {ifname!r} in this network namespace")
        self.ifname = ifname


# --- pure: frames ---------------------------------------------------------------------


def parse_mac(mac: bytes | str) -> bytes:
    """A MAC as 6 raw bytes, from 6 bytes or ``"aa:bb:cc:dd:ee:ff"`` (``-`` separators too).

    Raises:
        ValueError: not a 48-bit MAC.
    """
    if isinstance(mac, (bytes, bytearray, memoryview)):
        raw = bytes(mac)
    else:
        parts = mac.replace("-", ":").split(":")
        if len(parts) != ETH_ALEN or not all(1 <= len(p) <= 2 for p in parts):
            raise ValueError(f"not a MAC address: {mac!r}")
        try:
            raw = bytes(int(p, 16) for p in parts)
        except ValueError:
            raise ValueError(f"not a MAC address: {mac!r}") from None
    if len(raw) != ETH_ALEN:
        raise ValueError(f"a MAC address has 6 bytes, got {len(raw)}")
    return raw


def format_mac(mac: bytes) -> str:
    """``b"\\x02\\x00..."`` -> ``"02:00:..."`` (lowercase, colon separated)."""
    return ":".join(f"{b:02x}" for b in mac)


def _ipv4(addr: str) -> bytes:
    ip = ipaddress.ip_address(addr)
    if ip.version != 4:
        raise ValueError(f"not an IPv4 address: {addr!r}")
    return ip.packed


def _ipv6(addr: str | bytes) -> bytes:
    if isinstance(addr, (bytes, bytearray)):
        if len(addr) != 16:
            raise ValueError("an IPv6 address has 16 bytes")
        return bytes(addr)
    ip = ipaddress.ip_address(addr)
    if ip.version != 6:
        raise ValueError(f"not an IPv6 address: {addr!r}")
    return ip.packed


def arp_frame(op: int, src_mac: bytes | str, vip: str, *, target_mac: bytes | str | None = None) -> bytes:
    """One 42-byte broadcast Ethernet frame carrying a gratuitous ARP (RFC 826, RFC 5227 s. 3).

    Layout (network byte order): Ethernet destination ff:ff:ff:ff:ff:ff,
    source ``src_mac``, type 0x0806; ARP htype 1 (Ethernet), ptype 0x0800,
    hlen 6, plen 4, ``op``, SHA = ``src_mac``, SPA = ``vip``, THA, TPA = ``vip``.

    Args:
        op: ``ARPOP_REQUEST`` (1) or ``ARPOP_REPLY`` (2).
        src_mac: our MAC (6 bytes or text).
        vip: the IPv4 VIP.
        target_mac: THA; default 00:00:00:00:00:00 for a request and
            ``src_mac`` for a reply (Linux accepts a reply as gratuitous only
            when THA == SHA).

    Raises:
        ValueError: bad ``op``, MAC or address (IPv6 included).
    """
    if op not in (ARPOP_REQUEST, ARPOP_REPLY):
        raise ValueError(f"ARP op must be 1 (request) or 2 (reply), got {op!r}")
    sha = parse_mac(src_mac)
    ip = _ipv4(vip)
    if target_mac is None:
        tha = ZERO_MAC if op == ARPOP_REQUEST else sha
    else:
        tha = parse_mac(target_mac)
    eth = BROADCAST_MAC + sha + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", ARPHRD_ETHER, ETH_P_IP, ETH_ALEN, 4, op) + sha + ip + tha + ip
    return eth + arp


def garp_pair(mac: bytes | str, vip: str) -> tuple[bytes, bytes]:
    """``(request, reply)``: the two gratuitous ARP frames announcing ``vip`` at ``mac``.

    See :func:`arp_frame`. Raises ValueError on a bad MAC or a non-IPv4 VIP.
    """
    return arp_frame(ARPOP_REQUEST, mac, vip), arp_frame(ARPOP_REPLY, mac, vip)


def unsolicited_na(mac: bytes | str, vip6: str) -> bytes:
    """The 32-byte ICMPv6 payload of an unsolicited Neighbor Advertisement for ``vip6``.

    RFC 4861 section 4.4 (format) and 7.2.6 (unsolicited advertisements):
    type 136, code 0, checksum 0 (a raw ICMPv6 socket has the kernel compute
    it, RFC 3542 section 3.1; see :func:`icmpv6_checksum` for frames built by
    hand), flags R=0 S=0 O=1, 29 reserved bits, target address ``vip6``,
    then option type 2 (target link-layer address), length 1 (8 octets),
    ``mac``. Send to ff02::1 with hop limit 255.

    Raises:
        ValueError: bad MAC or a non-IPv6 address.
    """
    lladdr = parse_mac(mac)
    target = _ipv6(vip6)
    head = struct.pack("!BBHI", ND_NEIGHBOR_ADVERT, 0, 0, NA_FLAG_OVERRIDE)
    option = struct.pack("!BB", ND_OPT_TARGET_LL_ADDR, 1) + lladdr
    return head + target + option


def icmpv6_checksum(src: str | bytes, dst: str | bytes, payload: bytes) -> int:
    """The ICMPv6 checksum of ``payload`` sent from ``src`` to ``dst`` (a 16-bit int).

    RFC 4443 section 2.3 with the IPv6 pseudo-header of RFC 8200 section 8.1
    (source, destination, 32-bit upper-layer length, 3 zero bytes, next
    header 58): the one's complement of the one's complement sum of 16-bit
    words. The checksum field (bytes 2-3) of ``payload`` must be zero when
    computing; over a packet carrying a correct checksum the result is 0.

    Raises:
        ValueError: an address is not IPv6.
    """
    pseudo = _ipv6(src) + _ipv6(dst) + struct.pack("!I3xB", len(payload), IPPROTO_ICMPV6)
    return internet_checksum(pseudo + payload)


def na_frame(mac: bytes | str, vip6: str, *, src: str | None = None) -> bytes:
    """A complete 86-byte Ethernet/IPv6 frame carrying :func:`unsolicited_na`, checksum filled in.

    For interfaces without IPv6 configuration of their own (bond slaves),
    sent on an ``AF_PACKET`` socket. Ethernet destination 33:33:00:00:00:01
    (ff02::1, RFC 2464 section 7), source ``mac``, type 0x86DD; IPv6 version
    6, traffic class and flow label 0, payload length 32, next header 58,
    hop limit 255, source ``src`` (default ``vip6`` itself: RFC 4861 s. 4.4
    asks for an address assigned to the sending interface, and the VIP is),
    destination ff02::1.

    Raises:
        ValueError: bad MAC or addresses.
    """
    lladdr = parse_mac(mac)
    source = _ipv6(src if src is not None else vip6)
    dest = _ipv6(ALL_NODES)
    na = bytearray(unsolicited_na(lladdr, vip6))
    struct.pack_into("!H", na, 2, icmpv6_checksum(source, dest, bytes(na)))
    ip6 = struct.pack("!IHBB", 6 << 28, len(na), IPPROTO_ICMPV6, ND_HOP_LIMIT) + source + dest
    return ALL_NODES_MAC + lladdr + struct.pack("!H", ETH_P_IPV6) + ip6 + bytes(na)


def announce_schedule(repeats: int, interval: float, burst: int) -> list[float]:
    """When to send, as offsets in seconds from the takeover: one entry per round.

    A round is a gratuitous ARP pair (IPv4) or one NA (IPv6) on every leg.
    ``burst`` rounds go at offset 0 back to back, then ``repeats`` more at
    ``interval``, ``2 * interval``, ... ``repeats * interval``. E.g.
    ``announce_schedule(3, 1.1, 2) == [0.0, 0.0, 1.1, 2.2, 3.3]``.

    Args:
        repeats: rounds after the burst (>= 0).
        interval: seconds between repeats; must exceed ``NEIGH_LOCKTIME``
            (1 s) when ``repeats`` > 0, since Linux ignores updates of a
            neighbour entry younger than its locktime.
        burst: rounds sent at once (>= 1).

    Raises:
        ValueError: on the bounds above.
    """
    if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
        raise ValueError(f"burst must be an integer >= 1, got {burst!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 0:
        raise ValueError(f"repeats must be an integer >= 0, got {repeats!r}")
    if repeats and not interval > NEIGH_LOCKTIME:
        raise ValueError(f"interval must exceed the neighbour locktime ({NEIGH_LOCKTIME} s), got {interval!r} s")
    return [0.0] * burst + [k * float(interval) for k in range(1, repeats + 1)]


class Link(NamedTuple):
    """What :func:`announce_legs` needs of a link (from an ``RTM_NEWLINK`` dump).

    Attributes:
        index: ifindex.
        name: ``IFLA_IFNAME``.
        kind: ``IFLA_LINKINFO/IFLA_INFO_KIND`` (``"bond"``, ``"veth"``...), None if absent.
        master: ``IFLA_MASTER`` (ifindex of the bond/bridge it is enslaved to), 0 if none.
    """

    index: int
    name: str
    kind: str | None = None
    master: int = 0


def announce_legs(links: Iterable[Link], ifname: str) -> list[str]:
    """Interfaces an announcement for a VIP on ``ifname`` must go out on.

    ``[ifname]`` for a plain interface; for a bond (kind ``"bond"``) the bond
    followed by every slave (links whose master is the bond), by ifindex.

    Raises:
        NoSuchInterface: ``ifname`` is not among ``links``.
    """
    links = list(links)
    for link in links:
        if link.name == ifname:
            break
    else:
        raise NoSuchInterface(ifname)
    if link.kind != "bond":
        return [ifname]
    slaves = sorted((s for s in links if s.master == link.index and s.index != link.index), key=lambda s: s.index)
    return [ifname, *(s.name for s in slaves)]


# --- I/O: links ---------------------------------------------------------------------------


def _link_of(msg: Any) -> Link:
    info = msg.get_attr("IFLA_LINKINFO")
    kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
    return Link(msg["index"], msg.get_attr("IFLA_IFNAME"), kind, msg.get_attr("IFLA_MASTER") or 0)


def _dump_links() -> list[Link]:
    with iproute() as ipr:
        return [_link_of(m) for m in ipr.get_links()]


def interfaces_for(ifname: str) -> list[str]:
    """The interfaces to announce a VIP of ``ifname`` on: itself, plus every slave if it is a bond.

    Read over netlink (an ``RTM_GETLINK`` dump, ``IFLA_LINKINFO`` kind
    ``bond`` and ``IFLA_MASTER``) in the calling thread's network namespace;
    ``/sys/class/net`` is not used because it shows the namespace that
    mounted ``/sys``, not the caller's. Blocks for a few milliseconds; usable
    from an event-loop thread (the query runs in a short-lived thread), but
    coroutines should prefer :func:`interfaces_for_async`.

    Raises:
        NoSuchInterface: no such interface here.
    """
    return announce_legs(in_thread(_dump_links, name="announce-netlink"), ifname)


async def interfaces_for_async(ifname: str) -> list[str]:
    """:func:`interfaces_for` on pyroute2's ``AsyncIPRoute`` (current namespace).

    Raises:
        NoSuchInterface: no such interface here.
    """
    async with async_iproute() as ipr:
        links = [_link_of(m) async for m in await ipr.get_links()]
    return announce_legs(links, ifname)


# --- I/O: sending ------------------------------------------------------------------------

#: errno values meaning "this socket's interface is gone" (deleted or recreated): reopen once.
_STALE = (errno.ENXIO, errno.ENODEV)


class Announcer:
    """Sends gratuitous ARP pairs and unsolicited NAs, on every leg of the VIP's interface.

    Keeps one raw ``AF_PACKET`` socket per interface (bound to it, protocol
    0 so nothing is ever queued for reading) and one raw ICMPv6 socket per
    interface for NAs (hop limits 255, ``SO_BINDTODEVICE`` and
    ``IPV6_MULTICAST_IF`` to the interface, all incoming ICMPv6 blocked by
    ``ICMP6_FILTER``, sent to ff02::1). Sockets are created lazily in the
    network namespace of the calling thread and reopened once when their
    interface was deleted and recreated. Sockets are non-blocking: a frame
    the device cannot queue is counted as not sent and logged, never waited
    for.

    The source MAC and SHA are read from the first leg (the bond itself for a
    bond) at each round, so a bond whose MAC changed is announced correctly.

    Not thread-safe; use from one thread (the event loop). ``close()`` (or
    ``with``) releases the sockets.
    """

    def __init__(self) -> None:
        self._packet: dict[str, socket.socket] = {}
        self._icmp6: dict[str, tuple[socket.socket, int]] = {}

    def __enter__(self) -> Announcer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every socket (idempotent). The announcer may be used again afterwards."""
        for s in self._packet.values():
            s.close()
        for s, _ in self._icmp6.values():
            s.close()
        self._packet.clear()
        self._icmp6.clear()

    # -- sockets --

    def _packet_socket(self, ifname: str) -> socket.socket:
        """The packet socket bound to ``ifname``; reopened if the interface was recreated.

        A socket stays bound to an ifindex: once its interface is deleted,
        ``getsockname()`` names no device (or, should the index be reused,
        another one), so a cached socket is checked against the name first.
        """
        s = self._packet.get(ifname)
        if s is not None:
            try:
                if s.getsockname()[0] == ifname:
                    return s
            except OSError:
                pass
            self._drop(ifname)
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            s.bind((ifname, 0))
        except OSError as e:
            s.close()
            if e.errno in _STALE:
                raise NoSuchInterface(ifname) from e
            raise
        s.setblocking(False)
        self._packet[ifname] = s
        return s

    def _icmp6_socket(self, ifname: str) -> tuple[socket.socket, int]:
        """The raw ICMPv6 socket for ``ifname`` and its ifindex; reopened if the index changed."""
        try:
            ifindex = socket.if_nametoindex(ifname)
        except OSError as e:
            raise NoSuchInterface(ifname) from e
        entry = self._icmp6.get(ifname)
        if entry is not None:
            if entry[1] == ifindex:
                return entry
            self._drop(ifname)
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        try:
            s.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, b"\xff" * 32)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, ND_HOP_LIMIT)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ND_HOP_LIMIT)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
        except OSError as e:
            s.close()
            if e.errno in _STALE:
                raise NoSuchInterface(ifname) from e
            raise
        s.setblocking(False)
        entry = self._icmp6[ifname] = (s, ifindex)
        return entry

    def _drop(self, ifname: str) -> None:
        s = self._packet.pop(ifname, None)
        if s is not None:
            s.close()
        e = self._icmp6.pop(ifname, None)
        if e is not None:
            e[0].close()

    def mac_of(self, ifname: str) -> bytes:
        """The link-layer address of ``ifname`` (6 bytes), from its bound packet socket.

        Raises:
            NoSuchInterface: no such interface here.
            ValueError: not an Ethernet interface (no ARP/ND announcement possible).
        """
        _name, _proto, _pkttype, hatype, addr = self._packet_socket(ifname).getsockname()
        if hatype != ARPHRD_ETHER or len(addr) != ETH_ALEN:
            raise ValueError(f"{ifname} is not an Ethernet interface (hardware type {hatype})")
        return bytes(addr)

    def _send(self, ifname: str, data: bytes, *, icmp6: bool = False) -> bool:
        """Send one frame (or one NA payload); False (logged) if the kernel refused it."""
        for attempt in (0, 1):
            try:
                if icmp6:
                    s, ifindex = self._icmp6_socket(ifname)
                    s.sendto(data, (ALL_NODES, 0, 0, ifindex))
                else:
                    # validated at the start of the round (_round), not per frame
                    (self._packet.get(ifname) or self._packet_socket(ifname)).send(data)
                return True
            except NoSuchInterface as e:
                log.warning("announce: %s", e)
                return False
            except OSError as e:
                if attempt == 0 and e.errno in _STALE:
                    self._drop(ifname)  # the interface was recreated: new ifindex
                    continue
                log.warning("announce on %s: %s", ifname, e)
                return False
        return False

    # -- rounds --

    def _round(self, legs: list[str], vip: str, *, skip_first: bool = False) -> int:
        """One round: an ARP pair (IPv4) or an NA (IPv6) on every leg, with the MAC of
        ``legs[0]`` (the VIP's own interface); ``skip_first``: not on ``legs[0]`` itself (it
        already had this round). Returns frames sent."""
        ip = ipaddress.ip_address(vip)
        mac = self.mac_of(legs[0])
        for leg in legs[1:]:
            try:
                self._packet_socket(leg)  # (re)open and check each leg's socket once per round
            except NoSuchInterface:
                pass  # logged when sending
        sent = 0
        if ip.version == 4:
            request, reply = garp_pair(mac, str(ip))
            for leg in legs[1:] if skip_first else legs:
                sent += self._send(leg, request)
                sent += self._send(leg, reply)
        else:
            if not skip_first:
                sent += self._send(legs[0], unsolicited_na(mac, str(ip)), icmp6=True)
            if len(legs) > 1:
                frame = na_frame(mac, str(ip))
                for leg in legs[1:]:
                    sent += self._send(leg, frame)
        return sent

    def send_once(self, ifname: str, vip: str) -> int:
        """One round for ``vip`` on ``ifname`` (and every slave if it is a bond), now.

        Returns the frames sent: 2 per leg for IPv4 (request and reply), 1
        per leg for IPv6. Frames the kernel refused (link down...) are logged
        and not counted.

        Raises:
            NoSuchInterface: ``ifname`` does not exist here.
            ValueError: ``vip`` is not an IP address, or not an Ethernet interface.
        """
        ipaddress.ip_address(vip)
        return self._round(interfaces_for(ifname), vip)

    def first_round(self, resource: Any) -> int:
        """The first announcement round of ``resource`` (address, interface) on its own
        interface, now, without awaiting anything: what a takeover sends before any other
        work. Pass ``first_sent=True`` to :meth:`announce` afterwards.

        Returns:
            Frames sent (2 for IPv4: request and reply; 1 for IPv6).

        Raises:
            NoSuchInterface: the interface does not exist here.
            ValueError: bad address, or a non-Ethernet interface.
        """
        return self._round([resource.interface], str(ipaddress.ip_address(resource.address)))

    async def announce(
        self,
        resource: Any,
        *,
        repeats: int = DEFAULT_REPEATS,
        interval: float = DEFAULT_INTERVAL,
        burst: int = DEFAULT_BURST,
        first_sent: bool = False,
    ) -> int:
        """Announce ``resource`` (an :class:`ha.model.Resource`: address, interface) after a takeover.

        Sends ``burst`` rounds at once, then ``repeats`` rounds ``interval``
        seconds apart (see :func:`announce_schedule`), sleeping with
        ``asyncio.sleep`` in between. The first round goes out on the
        interface itself before anything else; then the legs (bond slaves)
        are looked up once (a netlink dump) and get that first round too, so
        every leg sees every round and the first frames never wait for the
        lookup. ``first_sent``: that first round on the interface was sent
        already (:meth:`first_round`); the slaves still get it here.
        Cancellable at any sleep (``CancelledError`` propagates;
        rounds already sent stay sent).

        Returns:
            Frames sent (2 per leg per round for IPv4, 1 for IPv6).

        Raises:
            NoSuchInterface: the interface does not exist here.
            ValueError: bad schedule parameters or address, or a non-Ethernet interface.
        """
        offsets = announce_schedule(repeats, interval, burst)
        vip = str(ipaddress.ip_address(resource.address))
        loop = asyncio.get_running_loop()
        start = loop.time()
        sent = 0 if first_sent else self._round([resource.interface], vip)  # at once, on the VIP's interface
        legs = await interfaces_for_async(resource.interface)  # the interface first, then its slaves
        try:
            if len(legs) > 1:
                sent += self._round(legs, vip, skip_first=True)  # the first round on the bond's slaves
            for offset in offsets[1:]:
                delay = start + offset - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                sent += self._round(legs, vip)
        except asyncio.CancelledError:
            log.debug("announcing %s on %s cancelled after %d frames", vip, ",".join(legs), sent)
            raise
        log.debug("announced %s on %s: %d frames", vip, ",".join(legs), sent)
        return sent
