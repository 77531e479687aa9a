"""The ``ping`` check (`checks.ping`) inside two network namespaces joined by a veth pair: live
addresses answer, a missing one times out, an ICMP error fails at once; with raw sockets (the
default ``net.ipv4.ping_group_range`` of a new namespace) and with datagram ICMP sockets."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest
from netnsprobe import netns_problem, netns_skip

import checks.ping
from checks.base import CheckTarget, run_check
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
    N.cleanup_netns(PREFIX)
    a, b = f"{PREFIX}-a", f"{PREFIX}-b"
    try:
        for ns in (a, b):
            N.create_netns(ns)
            N.set_sysctls(ns, {"net.ipv6.conf.all.accept_dad": "0", "net.ipv6.conf.default.accept_dad": "0"})
        # b forwards, and sends every ICMP error (no rate limit per destination: 1 s by default)
        N.set_sysctls(
            b,
            {
                "net.ipv4.ip_forward": "1",
                "net.ipv6.conf.all.forwarding": "1",
                "net.ipv4.icmp_ratelimit": "0",
                "net.ipv6.icmp.ratelimit": "0",
            },
        )
        N.add_veth(a, "eth0", b, "eth0")
        for ns, n in ((a, 1), (b, 2)):
            N.add_address(ns, "eth0", f"10.219.0.{n}/24")
            N.add_address(ns, "eth0", f"fd00:219::{n}/64")
        N.exec_in_netns(a, ["ip", "route", "add", "10.230.0.0/24", "via", "10.219.0.2"])
        N.exec_in_netns(a, ["ip", "-6", "route", "add", "fd00:230::/64", "via", "fd00:219::2"])
        N.exec_in_netns(b, ["ip", "route", "add", "unreachable", "10.230.0.0/24"])
        N.exec_in_netns(b, ["ip", "-6", "route", "add", "unreachable", "fd00:230::/64"])
        yield a, b
    finally:
        N.cleanup_netns(PREFIX)


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
    checks.ping._raw_families.clear()
    try:
        results = _check_all(a)
        used_raw = set(checks.ping._raw_families)
    finally:
        checks.ping._raw_families.clear()
        N.set_sysctl(a, "net.ipv4.ping_group_range", "1 0")
    assert used_raw == ({socket.AF_INET, socket.AF_INET6} if kind == "raw" else set())
    assert {rip: result[:3] for rip, result in results.items()} == RIPS
    for rip, (_ok, _reason, timed_out, duration) in results.items():
        # answers and ICMP errors come at once; the silent addresses end at the time limit
        assert 0.4 <= duration < 0.7 if timed_out else duration < 0.2, (rip, duration)


@needs_netns
def test_udp_and_dns_fail_at_once_on_icmp_errors(pair):
    """The datagram checks get the router's host/network unreachable too (`checks.udp.report_icmp_errors`),
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
