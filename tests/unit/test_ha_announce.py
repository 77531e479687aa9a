"""Tests of ha.announce: gratuitous ARP and unsolicited NA, byte for byte and on the wire.

Pure tests compare the frames with hand-written bytes and with scapy's
decoding (an implementation independent of ha.announce), and the ICMPv6
checksum with two independent computations (the whole buffer read as one big
integer modulo 0xffff, since 2**16 == 1 mod 0xffff; scapy's) and with a
checksum the kernel computed. Captured frames are decoded with scapy too.

Wire tests need root and network namespaces. Each builds two namespaces of
its own, ``<PREFIX>-a`` and ``<PREFIX>-b``, joined by a veth pair (``a0`` in
A, ``b0`` in B), with 10.213.0.0/24 and fd00:213::/64 inside them only, and
deletes them afterwards. The announcer runs in a thread that entered A
(its sockets live in A); B captures with an ``AF_PACKET`` socket created in
B. Neighbour-table checks follow Linux's rules (``net/ipv4/arp.c``,
``net/ipv6/ndisc.c``): a gratuitous ARP or an NA with the Override flag
updates an *existing* entry, so the tests first plant a stale entry for the
VIP pointing at a wrong MAC (the previous owner's, as after a failover); a
new entry is created from a gratuitous ARP only with ``arp_accept=1``, which
one test checks both ways.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import time

import pytest
from hapair import (
    Capture,  # frames received (not sent) on an interface of a namespace
    is_garp_for,  # predicates on captured frames, decoding with scapy
    is_na_for,
)
from netnsprobe import netns_problem, netns_skip
from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6, in6_chksum
from scapy.layers.l2 import ARP, Ether

import ha.announce as A
from director.lab import netns as N
from ha.announce import (
    ARPOP_REPLY,
    ARPOP_REQUEST,
    Announcer,
    Link,
    NoSuchInterface,
    announce_legs,
    announce_schedule,
    arp_frame,
    format_mac,
    garp_pair,
    icmpv6_checksum,
    interfaces_for,
    na_frame,
    parse_mac,
    unsolicited_na,
)
from ha.model import Resource
from ha.vip import add_vip

PREFIX = f"han{os.getpid()}"
MAC = "02:11:22:33:44:55"
MACB = bytes.fromhex("021122334455")
VIP = "10.213.0.100"
VIP6 = "fd00:213::100"
WRONG_MAC = "02:00:00:00:00:99"
BROADCAST = "ff:ff:ff:ff:ff:ff"
ALL_NODES_MAC = "33:33:00:00:00:01"  # ff02::1 over Ethernet (RFC 2464 section 7)


# --- independent decoding (scapy) ---------------------------------------------------------


def arp_of(frame: bytes) -> Ether:
    """``frame`` decoded by scapy; asserts Ethernet + ARP for IPv4 over Ethernet (RFC 826)."""
    pkt = Ether(frame)
    assert pkt.type == 0x0806 and ARP in pkt, pkt.summary()
    arp = pkt[ARP]
    assert (arp.hwtype, arp.ptype, arp.hwlen, arp.plen) == (1, 0x0800, 6, 4), arp.summary()
    return pkt


def na_of(frame: bytes) -> Ether:
    """``frame`` decoded by scapy; asserts Ethernet + IPv6 (no extension header) + an ICMPv6
    Neighbor Advertisement (RFC 4861 section 4.4) carrying exactly one option, the target
    link-layer address (type 2, scapy's ``ICMPv6NDOptDstLLAddr``), and nothing after it."""
    pkt = Ether(frame)
    assert pkt.type == 0x86DD and isinstance(pkt.payload, IPv6), pkt.summary()
    assert pkt[IPv6].nh == 58 and isinstance(pkt[IPv6].payload, ICMPv6ND_NA), pkt.summary()
    opt = pkt[ICMPv6ND_NA].payload
    assert isinstance(opt, ICMPv6NDOptDstLLAddr) and not opt.payload, pkt.summary()
    return pkt


def scapy_checksum(pkt: Ether) -> int:
    """The checksum scapy computes for the NA of ``pkt`` (RFC 4443 section 2.3, over the IPv6
    pseudo-header): the frame rebuilt with the checksum left for scapy to fill in."""
    again = pkt.copy()
    del again[ICMPv6ND_NA].cksum
    return Ether(bytes(again))[ICMPv6ND_NA].cksum


def ref_checksum(src: str, dst: str, payload: bytes) -> int:
    """ICMPv6 checksum by another route: the one's complement sum is the value mod 0xffff."""
    pseudo = (
        ipaddress.IPv6Address(src).packed
        + ipaddress.IPv6Address(dst).packed
        + len(payload).to_bytes(4, "big")
        + bytes(3)
        + bytes([58])
    )
    data = pseudo + payload + (b"\x00" if len(payload) % 2 else b"")
    big = int.from_bytes(data, "big")
    s = big % 0xFFFF
    if s == 0 and big:
        s = 0xFFFF
    return 0xFFFF - s


# --- pure: frames ----------------------------------------------------------------------


def test_garp_request_bytes():
    # fmt: off
    expected = bytes.fromhex(
        "ffffffffffff" "021122334455" "0806"  # broadcast, our MAC, ARP
        "0001" "0800" "06" "04" "0001"  # Ethernet, IPv4, hlen, plen, request
        "021122334455" "0ad50064"  # SHA, SPA = VIP
        "000000000000" "0ad50064"  # THA = 0, TPA = VIP
    )
    # fmt: on
    assert arp_frame(ARPOP_REQUEST, MACB, VIP) == expected
    assert len(expected) == A.ARP_FRAME_LEN == 42


def test_garp_reply_bytes():
    # fmt: off
    expected = bytes.fromhex(
        "ffffffffffff" "021122334455" "0806" "0001" "0800" "06" "04" "0002"
        "021122334455" "0ad50064" "021122334455" "0ad50064"  # THA = own MAC
    )
    # fmt: on
    assert arp_frame(ARPOP_REPLY, MACB, VIP) == expected


def test_garp_pair_decodes_as_gratuitous():
    request, reply = garp_pair(MAC, VIP)  # text MAC accepted
    for frame, op, tha in ((request, 1, "00:00:00:00:00:00"), (reply, 2, MAC)):
        pkt = arp_of(frame)  # EtherType, hardware and protocol types and lengths checked there
        assert len(frame) == 42 and not pkt[ARP].payload  # nothing after the ARP header
        assert pkt.dst == BROADCAST and pkt.src == MAC
        arp = pkt[ARP]
        assert arp.op == op and arp.hwsrc == MAC and arp.hwdst == tha
        assert arp.psrc == arp.pdst == VIP


def test_arp_frame_target_override_and_errors():
    arp = arp_of(arp_frame(ARPOP_REQUEST, MACB, VIP, target_mac="ff:ff:ff:ff:ff:ff"))[ARP]
    assert arp.hwdst == BROADCAST and arp.op == 1 and arp.hwsrc == MAC
    with pytest.raises(ValueError):
        arp_frame(3, MACB, VIP)
    with pytest.raises(ValueError):
        arp_frame(ARPOP_REQUEST, b"\x02\x11", VIP)
    with pytest.raises(ValueError):
        arp_frame(ARPOP_REQUEST, MACB, VIP6)
    with pytest.raises(ValueError):
        garp_pair("02:11:22:33:44", VIP)


def test_mac_parsing():
    assert parse_mac("02:11:22:33:44:55") == parse_mac("02-11-22-33-44-55") == MACB
    assert format_mac(MACB) == MAC
    for bad in ("", "02:11:22:33:44:5g", "02:11:22:33:44:55:66", "0211.2233.4455", b"\x00" * 7):
        with pytest.raises(ValueError):
            parse_mac(bad)


def test_unsolicited_na_bytes():
    # fmt: off
    expected = bytes.fromhex(
        "88" "00" "0000" "20000000"  # type 136, code 0, checksum 0, R=0 S=0 O=1
        "fd000213000000000000000000000100"  # target = VIP6
        "02" "01" "021122334455"  # target link-layer address option, 8 octets
    )
    # fmt: on
    na = unsolicited_na(MACB, VIP6)
    assert na == expected and len(na) == A.NA_LEN == 32
    d = ICMPv6ND_NA(na)
    assert (d.type, d.code, d.cksum, d.R, d.S, d.O, d.res) == (136, 0, 0, 0, 0, 1, 0)
    assert d.tgt == VIP6
    opt = d.payload  # exactly one option: the target link-layer address
    assert isinstance(opt, ICMPv6NDOptDstLLAddr) and not opt.payload
    assert (opt.type, opt.len, opt.lladdr) == (2, 1, MAC)
    with pytest.raises(ValueError):
        unsolicited_na(MACB, VIP)


def test_icmpv6_checksum_against_independent_computation():
    import random

    rnd = random.Random(4861)
    for n in range(200):
        payload = bytearray(rnd.randbytes(rnd.randrange(4, 90)))
        payload[2:4] = b"\x00\x00"
        src = str(ipaddress.IPv6Address(rnd.getrandbits(128)))
        dst = "ff02::1" if n % 2 else str(ipaddress.IPv6Address(rnd.getrandbits(128)))
        c = icmpv6_checksum(src, dst, bytes(payload))
        assert c == ref_checksum(src, dst, bytes(payload)), (src, dst, payload.hex())
        assert c == in6_chksum(58, IPv6(src=src, dst=dst), bytes(payload)), (src, dst, payload.hex())
        # with the checksum in place, the packet sums to zero
        payload[2:4] = c.to_bytes(2, "big")
        assert icmpv6_checksum(src, dst, bytes(payload)) == 0
    # addresses as packed bytes too
    assert icmpv6_checksum(
        ipaddress.IPv6Address(VIP6).packed, b"\xff\x02" + bytes(13) + b"\x01", unsolicited_na(MACB, VIP6)
    ) == icmpv6_checksum(VIP6, "ff02::1", unsolicited_na(MACB, VIP6))


def test_icmpv6_checksum_matches_a_kernel_computed_one():
    # An NA sent by this module on a raw ICMPv6 socket and captured on the wire:
    # source fd00:213::100, to ff02::1, MAC 42:40:c0:ba:6a:88; the kernel wrote 0xe8f4.
    assert icmpv6_checksum(VIP6, "ff02::1", unsolicited_na("42:40:c0:ba:6a:88", VIP6)) == 0xE8F4
    assert scapy_checksum(na_of(na_frame("42:40:c0:ba:6a:88", VIP6))) == 0xE8F4


def test_na_frame_is_a_complete_valid_packet():
    frame = na_frame(MAC, VIP6)
    assert len(frame) == A.NA_FRAME_LEN == 86
    pkt = na_of(frame)  # Ethernet / IPv6 / NA / one option, nothing else
    assert pkt.dst == ALL_NODES_MAC and pkt.src == MAC
    ip = pkt[IPv6]
    assert (ip.version, ip.tc, ip.fl, ip.plen, ip.nh, ip.hlim) == (6, 0, 0, 32, 58, 255)
    assert ip.src == VIP6 and ip.dst == "ff02::1"
    na = frame[54:]
    assert bytes(ip.payload) == na
    na_pkt = pkt[ICMPv6ND_NA]
    assert (na_pkt.type, na_pkt.code, na_pkt.R, na_pkt.S, na_pkt.O, na_pkt.res) == (136, 0, 0, 0, 1, 0)
    assert na_pkt.tgt == VIP6 and na_pkt[ICMPv6NDOptDstLLAddr].lladdr == MAC
    # checksum filled in and right: scapy computes the same, the independent sum is 0
    assert na_pkt.cksum == scapy_checksum(pkt) != 0
    assert ref_checksum(VIP6, "ff02::1", na) == 0
    zeroed = na[:2] + b"\x00\x00" + na[4:]
    assert zeroed == unsolicited_na(MACB, VIP6)
    other = na_of(na_frame(MAC, VIP6, src="fe80::1"))
    assert other[IPv6].src == "fe80::1" and other[ICMPv6ND_NA].cksum == scapy_checksum(other)


# --- pure: schedule and legs ----------------------------------------------------------------


def test_announce_schedule():
    assert announce_schedule(3, 1.1, 2) == [0.0, 0.0, 1.1, 2.2, pytest.approx(3.3)]
    assert announce_schedule(0, 0.0, 1) == [0.0]
    assert announce_schedule(2, 5, 3) == [0.0, 0.0, 0.0, 5.0, 10.0]
    offsets = announce_schedule(5, 1.5, 1)
    assert all(b - a == pytest.approx(1.5) for a, b in zip(offsets, offsets[1:]))


@pytest.mark.parametrize(
    "args", [(1, 1.0, 1), (1, 0.5, 1), (-1, 1.1, 1), (1, 1.1, 0), (1.5, 1.1, 1), (True, 1.1, 1), (1, 1.1, True)]
)
def test_announce_schedule_rejects(args):
    with pytest.raises(ValueError):
        announce_schedule(*args)


def test_announce_legs():
    links = [
        Link(1, "lo"),
        Link(2, "eth0", "veth"),
        Link(7, "bond0", "bond"),
        Link(9, "eth2", "veth", master=7),
        Link(8, "eth1", "veth", master=7),
        Link(10, "br0", "bridge"),
        Link(11, "eth3", "veth", master=10),  # a bridge port, not a bond leg
    ]
    assert announce_legs(links, "eth0") == ["eth0"]
    assert announce_legs(links, "bond0") == ["bond0", "eth1", "eth2"]
    assert announce_legs(links, "br0") == ["br0"]
    assert announce_legs(links, "eth1") == ["eth1"]
    assert announce_legs([Link(3, "bond1", "bond")], "bond1") == ["bond1"]  # no slaves yet
    with pytest.raises(NoSuchInterface) as ei:
        announce_legs(links, "eth9")
    assert "eth9" in str(ei.value) and ei.value.ifname == "eth9"
    assert isinstance(ei.value, OSError) and ei.value.errno == 19


# --- wire tests (root, namespaces) ------------------------------------------------------


_problem = netns_problem(PREFIX)
needs_netns = netns_skip(_problem)


class Pair:
    """Namespaces A and B joined by veth a0 <-> b0."""

    def __init__(self, a: str, b: str) -> None:
        self.a, self.b = a, b
        self.mac_a = N.link_mac(a, "a0")
        self.mac_b = N.link_mac(b, "b0")

    def in_a(self, fn, *args, **kwargs):
        return N.call_in_netns(self.a, fn, *args, **kwargs)

    def run_a(self, coro):
        """Run a coroutine on an event loop in a thread inside A."""
        return N.call_in_netns(self.a, asyncio.run, coro)


@pytest.fixture
def pair():
    N.cleanup_netns(PREFIX)
    a, b = f"{PREFIX}-a", f"{PREFIX}-b"
    N.create_netns(a)
    N.create_netns(b)
    try:
        N.add_veth(a, "a0", b, "b0")
        N.add_address(a, "a0", "10.213.0.1/24")
        N.add_address(b, "b0", "10.213.0.2/24")
        N.add_address(a, "a0", "fd00:213::1/64")
        N.add_address(b, "b0", "fd00:213::2/64")
        yield Pair(a, b)
    finally:
        N.cleanup_netns(PREFIX)


def neighbour_lladdr(ns: str, dst: str) -> str | None:
    """B's neighbour table entry for ``dst``: its link-layer address, or None."""

    def work():
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            for n in ipr.get_neighbours(dst=dst):
                return n.get_attr("NDA_LLADDR")
        return None

    return N.call_in_netns(ns, work)


def plant_neighbour(ns: str, ifname: str, dst: str, lladdr: str) -> None:
    """A stale neighbour entry ``dst -> lladdr`` (as left by a previous owner of the VIP)."""

    def work():
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            ipr.neigh("replace", dst=dst, lladdr=lladdr, ifindex=ipr.link_lookup(ifname=ifname)[0], state=0x04)

    N.call_in_netns(ns, work)
    assert neighbour_lladdr(ns, dst) == lladdr


def wait_neighbour(ns: str, dst: str, lladdr: str, timeout: float = 3.0) -> str | None:
    deadline = time.monotonic() + timeout
    while True:
        got = neighbour_lladdr(ns, dst)
        if got == lladdr or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


@needs_netns
def test_garp_pair_reaches_the_peer_and_overrides_its_stale_entry(pair):
    plant_neighbour(pair.b, "b0", VIP, WRONG_MAC)
    cap = Capture(pair.b, "b0", 0x0806)
    try:
        pair.run_a(add_vip(Resource(VIP, 32, "a0")))

        def send():
            with Announcer() as an:
                return an.send_once("a0", VIP)

        assert pair.in_a(send) == 2
        frames = [f for _, f in cap.wait(is_garp_for(VIP), 2)]
    finally:
        cap.close()
    assert len(frames) == 2
    decoded = sorted((arp_of(f) for f in frames), key=lambda p: p[ARP].op)
    mac_a = pair.mac_a
    assert [p[ARP].op for p in decoded] == [1, 2]
    for p in decoded:
        assert p.dst == BROADCAST and p.src == mac_a and p[ARP].hwsrc == mac_a
        assert p[ARP].psrc == p[ARP].pdst == VIP
    assert decoded[0][ARP].hwdst == "00:00:00:00:00:00" and decoded[1][ARP].hwdst == mac_a
    assert wait_neighbour(pair.b, VIP, pair.mac_a) == pair.mac_a


@needs_netns
def test_garp_creates_an_entry_only_with_arp_accept(pair):
    def send():
        with Announcer() as an:
            return an.send_once("a0", VIP)

    assert N.get_sysctl(pair.b, "net.ipv4.conf.b0.arp_accept") == "0"
    cap = Capture(pair.b, "b0", 0x0806)
    try:
        assert pair.in_a(send) == 2
        assert len(cap.wait(is_garp_for(VIP), 2)) == 2
        assert neighbour_lladdr(pair.b, VIP) is None  # heard, but no entry created
        N.set_sysctl(pair.b, "net.ipv4.conf.b0.arp_accept", 1)
        assert pair.in_a(send) == 2
        assert len(cap.wait(is_garp_for(VIP), 4)) == 4
    finally:
        cap.close()
    assert wait_neighbour(pair.b, VIP, pair.mac_a) == pair.mac_a


@needs_netns
def test_unsolicited_na_reaches_the_peer_with_hop_limit_255(pair):
    plant_neighbour(pair.b, "b0", VIP6, WRONG_MAC)
    cap = Capture(pair.b, "b0", 0x86DD)
    try:
        pair.run_a(add_vip(Resource(VIP6, 128, "a0")))

        def send():
            with Announcer() as an:
                return an.send_once("a0", VIP6)

        assert pair.in_a(send) == 1
        frames = [f for _, f in cap.wait(is_na_for(VIP6), 1)]
    finally:
        cap.close()
    assert len(frames) == 1
    pkt = na_of(frames[0])  # Ethernet / IPv6 / NA / one option, nothing else
    mac_a = pair.mac_a
    ip, na = pkt[IPv6], pkt[ICMPv6ND_NA]
    assert pkt.dst == ALL_NODES_MAC and pkt.src == mac_a
    assert ip.hlim == 255 and ip.nh == 58 and ip.dst == "ff02::1"
    assert (na.type, na.code, na.R, na.S, na.O) == (136, 0, 0, 0, 1)
    assert na.tgt == VIP6 and (na[ICMPv6NDOptDstLLAddr].type, na[ICMPv6NDOptDstLLAddr].lladdr) == (2, mac_a)
    # the kernel filled in the checksum; ours, scapy's and the independent one agree with it
    payload = bytes(ip.payload)
    zeroed = payload[:2] + b"\x00\x00" + payload[4:]
    assert icmpv6_checksum(ip.src, ip.dst, zeroed) == na.cksum == scapy_checksum(pkt)
    assert ref_checksum(ip.src, ip.dst, payload) == 0
    assert wait_neighbour(pair.b, VIP6, pair.mac_a) == pair.mac_a


@needs_netns
def test_na_frame_on_a_packet_socket_updates_the_peer(pair):
    """The hand-built frame (the bond-slave path) is accepted by the peer's neighbour discovery."""
    plant_neighbour(pair.b, "b0", VIP6, WRONG_MAC)
    pair.run_a(add_vip(Resource(VIP6, 128, "a0")))
    s = N.socket_in_netns(pair.a, socket.AF_PACKET, socket.SOCK_RAW, 0)
    try:
        s.bind(("a0", 0))
        s.send(na_frame(pair.mac_a, VIP6))
    finally:
        s.close()
    assert wait_neighbour(pair.b, VIP6, pair.mac_a) == pair.mac_a


@needs_netns
def test_every_leg_gets_the_announcement_with_the_first_legs_mac(pair, monkeypatch):
    """The bond double-send path without a bond: legs a0 and a1 (a second veth to B's b1)."""
    N.add_veth(pair.a, "a1", pair.b, "b1")
    mac_a1 = N.link_mac(pair.a, "a1")
    monkeypatch.setattr(A, "interfaces_for", lambda ifname: [ifname, "a1"])
    caps = {leg: Capture(pair.b, leg) for leg in ("b0", "b1")}
    try:
        pair.run_a(add_vip(Resource(VIP6, 128, "a0")))

        def send():
            with Announcer() as an:
                return an.send_once("a0", VIP), an.send_once("a0", VIP6)

        assert pair.in_a(send) == (4, 2)
        garps = {leg: [f for _, f in c.wait(is_garp_for(VIP), 2)] for leg, c in caps.items()}
        nas = {leg: [f for _, f in c.wait(is_na_for(VIP6), 1)] for leg, c in caps.items()}
    finally:
        for c in caps.values():
            c.close()
    mac_a = pair.mac_a
    assert parse_mac(mac_a) != parse_mac(mac_a1)
    for leg in ("b0", "b1"):
        assert sorted(arp_of(f)[ARP].op for f in garps[leg]) == [1, 2]
        assert all(arp_of(f)[ARP].hwsrc == mac_a and arp_of(f).src == mac_a for f in garps[leg])
        assert len(nas[leg]) == 1
        pkt = na_of(nas[leg][0])  # exactly one option, checked there
        assert pkt[IPv6].hlim == 255 and pkt.src == mac_a
        assert (pkt[ICMPv6NDOptDstLLAddr].type, pkt[ICMPv6NDOptDstLLAddr].len) == (2, 1)
        assert pkt[ICMPv6NDOptDstLLAddr].lladdr == mac_a
        assert pkt[ICMPv6ND_NA].cksum == scapy_checksum(pkt)
        assert ref_checksum(pkt[IPv6].src, pkt[IPv6].dst, bytes(pkt[IPv6].payload)) == 0
    # the second leg carries the hand-built frame, sourced from the VIP itself
    assert na_of(nas["b1"][0])[IPv6].src == VIP6


@needs_netns
def test_announce_follows_the_schedule(pair):
    cap = Capture(pair.b, "b0", 0x0806)
    try:

        async def main():
            with Announcer() as an:
                return await an.announce(Resource(VIP, 32, "a0"), repeats=1, interval=1.05, burst=2)

        assert pair.run_a(main()) == 6
        got = cap.wait(is_garp_for(VIP), 6)
    finally:
        cap.close()
    assert len(got) == 6
    times = [t for t, _ in got]
    ops = [arp_of(f)[ARP].op for _, f in got]
    assert ops == [1, 2, 1, 2, 1, 2]
    # burst of two pairs together, the repeat about 1.05 s later (wide margins)
    assert times[3] - times[0] < 0.5
    assert 0.9 < times[4] - times[0] < 3.0


@needs_netns
def test_announce_is_cancellable(pair):
    cap = Capture(pair.b, "b0", 0x0806)
    try:

        async def main():
            with Announcer() as an:
                task = asyncio.create_task(an.announce(Resource(VIP, 32, "a0"), repeats=5, interval=1.1, burst=1))
                await asyncio.sleep(0.3)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task

        pair.run_a(main())
        time.sleep(1.5)  # past the first repeat's time: nothing more may come
        got = cap.matching(is_garp_for(VIP))
    finally:
        cap.close()
    assert len(got) == 2


@needs_netns
def test_missing_and_non_ethernet_interfaces(pair):
    def work():
        with Announcer() as an:
            with pytest.raises(NoSuchInterface, match="nope0"):
                an.send_once("nope0", VIP)
            with pytest.raises(NoSuchInterface, match="nope0"):
                asyncio.run(an.announce(Resource(VIP, 32, "nope0"), repeats=0, burst=1))
            with pytest.raises(ValueError, match="not an Ethernet"):
                an.send_once("lo", VIP)
            with pytest.raises(ValueError):
                an.send_once("a0", "not-an-address")
        with pytest.raises(NoSuchInterface):
            interfaces_for("nope0")
        return interfaces_for("a0"), asyncio.run(A.interfaces_for_async("a0"))

    assert pair.in_a(work) == (["a0"], ["a0"])


@needs_netns
def test_socket_reopened_after_the_interface_is_recreated(pair):
    an = Announcer()
    try:
        assert pair.in_a(an.send_once, "a0", VIP) == 2
        N.delete_link(pair.a, "a0")
        N.add_veth(pair.a, "a0", pair.b, "b0")
        mac = N.link_mac(pair.a, "a0")
        cap = Capture(pair.b, "b0", 0x0806)
        try:
            assert pair.in_a(an.send_once, "a0", VIP) == 2
            frames = [f for _, f in cap.wait(is_garp_for(VIP), 2)]
        finally:
            cap.close()
        assert [arp_of(f)[ARP].hwsrc for f in frames] == [mac] * 2
    finally:
        an.close()


# The bond test (a VIP on a balance-xor bond, announced on every slave) needs the bonding
# module: tests/kernel/test_ha_bond.py, run in the test VM.
