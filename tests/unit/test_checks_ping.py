"""The ``ping`` check (`checks.protocols.ping`) inside two network namespaces joined by a veth pair: live
addresses answer, a missing one times out, an ICMP error fails at once; with raw sockets (the
default ``net.ipv4.ping_group_range`` of a new namespace) and with datagram ICMP sockets."""

from __future__ import annotations

import asyncio
import os
import socket
import struct

import pytest
from netnsprobe import netns_problem, netns_skip
from nspair import eth0_link

import checks.protocols.ping
from checks.base import CheckTarget, run_check
from checks.protocols.icmp import decode_echo_message, decode_echo_reply, encode_echo_request
from checks.protocols.ping import echo_reply_filter, filter_echo_reply
from checks.spec import CheckSpec
from director.lab import netns as N

PREFIX = f"hcp{os.getpid()}"
_problem = netns_problem(PREFIX)
needs_netns = netns_skip(_problem)


@pytest.fixture(scope="module")
def pair():
    """Namespaces a (10.219.0.1, fd00:219::1 on eth0) and b (.2, ::2), one veth between them.

    b forwards, and has "unreachable" routes for 10.230.0.0/24 and fd00:230::/64 (a's routes to
    them go through b): b answers a packet to them with an ICMP destination unreachable.
    """
    no_dad = {"net.ipv6.conf.all.accept_dad": "0", "net.ipv6.conf.default.accept_dad": "0"}
    # b forwards, and sends every ICMP error (no rate limit per destination: 1 s by default)
    router = {
        "net.ipv4.ip_forward": "1",
        "net.ipv6.conf.all.forwarding": "1",
        "net.ipv4.icmp_ratelimit": "0",
        "net.ipv6.icmp.ratelimit": "0",
    }
    with eth0_link(PREFIX, 219, no_dad, router) as (a, b):
        N.exec_in_netns(a, ["ip", "route", "add", "10.230.0.0/24", "via", "10.219.0.2"])
        N.exec_in_netns(a, ["ip", "-6", "route", "add", "fd00:230::/64", "via", "fd00:219::2"])
        N.exec_in_netns(b, ["ip", "route", "add", "unreachable", "10.230.0.0/24"])
        N.exec_in_netns(b, ["ip", "-6", "route", "add", "unreachable", "fd00:230::/64"])
        yield a, b


def _target(rip: str, timeout: float = 2.0) -> CheckTarget:
    spec = CheckSpec(type="ping", timeout=timeout)
    return CheckTarget(key=rip, name=rip, vip=None, vport=0, rip=rip, rport=0, spec=spec)


RIPS = {
    "127.0.0.1": (True, "echo reply", False),
    "::1": (True, "echo reply", False),
    "10.219.0.2": (True, "echo reply", False),
    "fd00:219::2": (True, "echo reply", False),
    "10.219.0.99": (False, "timeout after 0.4 s", True),  # on the link, nothing behind it
    "fd00:219::99": (False, "timeout after 0.4 s", True),
    "10.230.0.1": (False, "no route to host", False),  # b: ICMP host unreachable
    "fd00:230::1": (False, "network is unreachable", False),  # b: ICMPv6 no route to destination
    "10.240.0.1": (False, "network is unreachable", False),  # a has no route at all
}


def _check_all(ns: str) -> dict[str, tuple[bool, str, bool, float]]:
    async def scenario():
        results = await asyncio.gather(*(run_check(_target(rip, timeout=0.4), None) for rip in RIPS))
        return {rip: (r.ok, r.reason, r.timed_out, r.duration) for rip, r in zip(RIPS, results, strict=True)}

    return N.call_in_netns(ns, lambda: asyncio.run(scenario()))


@needs_netns
@pytest.mark.parametrize("kind", ["raw", "datagram"])
def test_ping(pair, kind):
    a, _b = pair
    # a new namespace's net.ipv4.ping_group_range is "1 0": no group may open a datagram ICMP socket
    assert N.get_sysctl(a, "net.ipv4.ping_group_range").split() == ["1", "0"]
    if kind == "datagram":
        N.set_sysctl(a, "net.ipv4.ping_group_range", f"{os.getgid()} {os.getgid()}")
    checks.protocols.ping._raw_families.clear()
    try:
        results = _check_all(a)
        used_raw = set(checks.protocols.ping._raw_families)
    finally:
        checks.protocols.ping._raw_families.clear()
        N.set_sysctl(a, "net.ipv4.ping_group_range", "1 0")
    assert used_raw == ({socket.AF_INET, socket.AF_INET6} if kind == "raw" else set())
    assert {rip: result[:3] for rip, result in results.items()} == RIPS
    for rip, (_ok, _reason, timed_out, duration) in results.items():
        # answers and ICMP errors come at once; the silent addresses end at the time limit
        assert 0.4 <= duration < 0.7 if timed_out else duration < 0.2, (rip, duration)


@needs_netns
def test_udp_and_dns_fail_at_once_on_icmp_errors(pair):
    """The datagram checks get the router's host/network unreachable too (`checks.protocols.udp.report_icmp_errors`),
    not only a port unreachable: they fail at once instead of at their time limit."""
    a, _b = pair

    def target(kind: str, rip: str) -> CheckTarget:
        extra = {"send": "ping"} if kind == "udp" else {"query_name": "ok.test", "transport": "udp"}
        spec = CheckSpec(type=kind, timeout=0.4, **extra)  # type: ignore[arg-type]
        return CheckTarget(key=rip, name=rip, vip=None, vport=0, rip=rip, rport=53, spec=spec)

    async def scenario():
        targets = [target(kind, rip) for kind in ("udp", "dns") for rip in ("10.230.0.1", "fd00:230::1")]
        return [await run_check(t, None) for t in targets]

    results = N.call_in_netns(a, lambda: asyncio.run(scenario()))
    assert [(r.ok, r.reason, r.timed_out) for r in results] == [
        (False, "no route to host", False),
        (False, "network is unreachable", False),
    ] * 2
    assert all(r.duration < 0.2 for r in results), [r.duration for r in results]


def test_echo_reply_filter_program():
    """The classic BPF programs, instruction by instruction, as ``tcpdump -dd`` prints them
    (``{ code, jt, jf, k }``; codes from <linux/filter.h>)."""

    def decode(program: bytes) -> list[tuple[int, int, int, int]]:
        return [tuple(insn) for insn in struct.iter_unpack("=HBBI", program)]  # type: ignore[misc]

    assert decode(echo_reply_filter(0x1234, 7, ipv6=True)) == [
        (0x28, 0, 0, 4),  # ldh [4]: the identifier (the ICMPv6 message comes first)
        (0x15, 0, 3, 0x1234),  # jeq #0x1234, else drop
        (0x28, 0, 0, 6),  # ldh [6]: the sequence number
        (0x15, 0, 1, 7),  # jeq #7, else drop
        (0x06, 0, 0, 0xFFFF),  # ret #65535: accept
        (0x06, 0, 0, 0),  # ret #0: drop
    ]
    assert decode(echo_reply_filter(0xFFFF, 0, ipv6=False)) == [
        (0xB1, 0, 0, 0),  # ldxb 4*([0]&0xf): X = the IPv4 header's length
        (0x48, 0, 0, 4),  # ldh [x + 4]
        (0x15, 0, 3, 0xFFFF),
        (0x48, 0, 0, 6),  # ldh [x + 6]
        (0x15, 0, 1, 0),
        (0x06, 0, 0, 0xFFFF),
        (0x06, 0, 0, 0),
    ]
    with pytest.raises(ValueError):
        echo_reply_filter(0x10000, 0, ipv6=False)


@needs_netns
@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
def test_raw_socket_gets_only_its_reply(pair, address):
    """Inside a namespace: echo requests with three (identifier, sequence) pairs to ``address``;
    the raw socket filtered for one of them reads that reply alone, an unfiltered one all three."""
    a, _b = pair
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    proto = socket.IPPROTO_ICMPV6 if family == socket.AF_INET6 else socket.IPPROTO_ICMP

    def scenario() -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        sender = socket.socket(family, socket.SOCK_RAW, proto)
        filtered = socket.socket(family, socket.SOCK_RAW, proto)
        unfiltered = socket.socket(family, socket.SOCK_RAW, proto)
        try:
            filter_echo_reply(filtered, 0x4321, 9)
            for sock in (filtered, unfiltered):
                sock.connect((address, 0))
                sock.settimeout(0.2)
            for ident, seq in ((0x4321, 10), (0x4322, 9), (0x4321, 9)):
                sender.sendto(encode_echo_request(ident, seq, b"x", ipv6=family == socket.AF_INET6), (address, 0))
            seen = []
            for sock in (filtered, unfiltered):
                got = []
                while True:
                    try:
                        data = sock.recv(512)
                    except TimeoutError:
                        break
                    if family == socket.AF_INET6:
                        reply = decode_echo_message(data, ipv6=True)
                    else:
                        reply = decode_echo_reply(data)
                    if reply is not None:  # the unfiltered one also reads the requests
                        got.append(reply[:2])
                seen.append(got)
            return seen[0], seen[1]
        finally:
            for sock in (sender, filtered, unfiltered):
                sock.close()

    filtered, unfiltered = N.call_in_netns(a, scenario)
    assert filtered == [(0x4321, 9)]
    assert sorted(unfiltered) == [(0x4321, 9), (0x4321, 10), (0x4322, 9)]
