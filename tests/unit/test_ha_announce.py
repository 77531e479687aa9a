"""Tests of ha.announce: gratuitous ARP and unsolicited NA, byte for byte and on the wire.

Pure tests compare the frames with hand-written bytes and with a decoder
written here (struct, not ha.announce), and the ICMPv6 checksum with an
independent computation (the whole buffer read as one big integer modulo
0xffff, since 2**16 == 1 mod 0xffff) and with a checksum the kernel computed.

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
import struct
import time

import pytest
from hapair import Capture  # frames received (not sent) on an interface of a namespace

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
ETH_P_ALL = 0x0003


# --- independent decoders ------------------------------------------------------------------


def decode_arp(frame: bytes) -> dict:
    """Ethernet + ARP (RFC 826) into a dict, written independently of ha.announce."""
    assert len(frame) >= 42
    dst, src, ethertype = struct.unpack("!6s6sH", frame[:14])
    htype, ptype, hlen, plen, op = struct.unpack("!HHBBH", frame[14:22])
    sha, spa, tha, tpa = struct.unpack("!6s4s6s4s", frame[22:42])
    return {
        "dst": dst,
        "src": src,
        "type": ethertype,
        "htype": htype,
        "ptype": ptype,
        "hlen": hlen,
        "plen": plen,
        "op": op,
        "sha": sha,
        "spa": socket.inet_ntop(socket.AF_INET, spa),
        "tha": tha,
        "tpa": socket.inet_ntop(socket.AF_INET, tpa),
    }


def decode_na(payload: bytes) -> dict:
    """An ICMPv6 Neighbor Advertisement (RFC 4861 4.4) with its options."""
    icmp_type, code, csum, word = struct.unpack("!BBHI", payload[:8])
    target = socket.inet_ntop(socket.AF_INET6, payload[8:24])
    options = []
    rest = payload[24:]
    while rest:
        otype, olen = rest[0], rest[1]
        assert olen > 0
        options.append((otype, olen, rest[2 : olen * 8]))
        rest = rest[olen * 8 :]
    return {
        "type": icmp_type,
        "code": code,
        "checksum": csum,
        "R": word >> 31,
        "S": (word >> 30) & 1,
        "O": (word >> 29) & 1,
        "reserved": word & 0x1FFFFFFF,
        "target": target,
        "options": options,
    }


def decode_ipv6_frame(frame: bytes) -> dict:
    """Ethernet + IPv6 fixed header (RFC 8200 section 3)."""
    dst, src, ethertype = struct.unpack("!6s6sH", frame[:14])
    vtf, plen, nxt, hlim = struct.unpack("!IHBB", frame[14:22])
    return {
        "dst": dst,
        "src": src,
        "type": ethertype,
        "version": vtf >> 28,
        "plen": plen,
        "next": nxt,
        "hlim": hlim,
        "saddr": socket.inet_ntop(socket.AF_INET6, frame[22:38]),
        "daddr": socket.inet_ntop(socket.AF_INET6, frame[38:54]),
        "payload": frame[54 : 54 + plen],
    }


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
    for frame, op, tha in ((request, 1, bytes(6)), (reply, 2, MACB)):
        d = decode_arp(frame)
        assert len(frame) == 42
        assert d["dst"] == b"\xff" * 6 and d["src"] == MACB and d["type"] == 0x0806
        assert (d["htype"], d["ptype"], d["hlen"], d["plen"]) == (1, 0x0800, 6, 4)
        assert d["op"] == op and d["sha"] == MACB and d["tha"] == tha
        assert d["spa"] == d["tpa"] == VIP


def test_arp_frame_target_override_and_errors():
    d = decode_arp(arp_frame(ARPOP_REQUEST, MACB, VIP, target_mac="ff:ff:ff:ff:ff:ff"))
    assert d["tha"] == b"\xff" * 6 and d["op"] == 1
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
    d = decode_na(na)
    assert (d["type"], d["code"], d["R"], d["S"], d["O"], d["reserved"]) == (136, 0, 0, 0, 1, 0)
    assert d["target"] == VIP6
    assert d["options"] == [(2, 1, MACB)]
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


def test_na_frame_is_a_complete_valid_packet():
    frame = na_frame(MAC, VIP6)
    assert len(frame) == A.NA_FRAME_LEN == 86
    d = decode_ipv6_frame(frame)
    assert d["dst"] == bytes.fromhex("333300000001") and d["src"] == MACB and d["type"] == 0x86DD
    assert (d["version"], d["plen"], d["next"], d["hlim"]) == (6, 32, 58, 255)
    assert frame[14:18] == b"\x60\x00\x00\x00"  # traffic class and flow label 0
    assert d["saddr"] == VIP6 and d["daddr"] == "ff02::1"
    na = d["payload"]
    assert ref_checksum(VIP6, "ff02::1", na) == 0  # checksum filled in and right
    zeroed = na[:2] + b"\x00\x00" + na[4:]
    assert zeroed == unsolicited_na(MACB, VIP6)
    assert decode_ipv6_frame(na_frame(MAC, VIP6, src="fe80::1"))["saddr"] == "fe80::1"


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


def _netns_problem() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    name = f"{PREFIX}-probe"
    try:
        N.create_netns(name)
        N.delete_netns(name)
    except Exception as e:
        return f"cannot create network namespaces: {e}"
    return None


_problem = _netns_problem()
needs_netns = pytest.mark.skipif(_problem is not None, reason=_problem or "")


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


def is_garp_for(vip: str):
    packed = socket.inet_aton(vip)
    return lambda f: len(f) >= 42 and f[12:14] == b"\x08\x06" and f[28:32] == packed and f[38:42] == packed


def is_na_for(vip6: str):
    packed = ipaddress.IPv6Address(vip6).packed
    return lambda f: len(f) >= 86 and f[12:14] == b"\x86\xdd" and f[20] == 58 and f[54] == 136 and f[62:78] == packed


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
    decoded = sorted((decode_arp(f) for f in frames), key=lambda d: d["op"])
    mac_a = parse_mac(pair.mac_a)
    assert [d["op"] for d in decoded] == [1, 2]
    for d in decoded:
        assert d["dst"] == b"\xff" * 6 and d["src"] == mac_a and d["sha"] == mac_a
        assert d["spa"] == d["tpa"] == VIP
    assert decoded[0]["tha"] == bytes(6) and decoded[1]["tha"] == mac_a
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
    d = decode_ipv6_frame(frames[0])
    mac_a = parse_mac(pair.mac_a)
    assert d["dst"] == bytes.fromhex("333300000001") and d["src"] == mac_a
    assert d["hlim"] == 255 and d["next"] == 58 and d["daddr"] == "ff02::1"
    na = decode_na(d["payload"])
    assert (na["type"], na["code"], na["R"], na["S"], na["O"]) == (136, 0, 0, 0, 1)
    assert na["target"] == VIP6 and na["options"] == [(2, 1, mac_a)]
    # the kernel filled in the checksum; ours and the independent one agree with it
    zeroed = d["payload"][:2] + b"\x00\x00" + d["payload"][4:]
    assert icmpv6_checksum(d["saddr"], d["daddr"], zeroed) == na["checksum"]
    assert ref_checksum(d["saddr"], d["daddr"], d["payload"]) == 0
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
    mac_a = parse_mac(pair.mac_a)
    assert mac_a != parse_mac(mac_a1)
    for leg in ("b0", "b1"):
        assert sorted(decode_arp(f)["op"] for f in garps[leg]) == [1, 2]
        assert all(decode_arp(f)["sha"] == mac_a and decode_arp(f)["src"] == mac_a for f in garps[leg])
        assert len(nas[leg]) == 1
        d = decode_ipv6_frame(nas[leg][0])
        assert d["hlim"] == 255 and d["src"] == mac_a
        assert decode_na(d["payload"])["options"] == [(2, 1, mac_a)]
        assert ref_checksum(d["saddr"], d["daddr"], d["payload"]) == 0
    # the second leg carries the hand-built frame, sourced from the VIP itself
    assert decode_ipv6_frame(nas["b1"][0])["saddr"] == VIP6


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
    ops = [decode_arp(f)["op"] for _, f in got]
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
        assert [decode_arp(f)["sha"] for f in frames] == [parse_mac(mac)] * 2
    finally:
        an.close()


# The bond test (a VIP on a balance-xor bond, announced on every slave) needs the bonding
# module: tests/kernel/test_ha_bond.py, run in the test VM.
