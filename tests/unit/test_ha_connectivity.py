"""The probes (`ha.probe`) in network namespaces; the ICMP echo codec is tested in test_checks_icmp.py."""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import time

import pytest
from nspair import eth0_link

from director.lab import netns as N

PREFIX = f"hcn{os.getpid()}"


@pytest.fixture
def link():
    """Namespaces a (10.218.0.1, fd00:218::1 on eth0) and b (.2, ::2), one veth between them."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    sysctls = {
        "net.ipv6.conf.all.accept_dad": "0",
        "net.ipv6.conf.default.accept_dad": "0",
        "net.ipv6.conf.all.keep_addr_on_down": "1",
    }
    with eth0_link(PREFIX, 218, sysctls) as names:
        yield names


def run_in(ns: str, coro_factory):
    return N.call_in_netns(ns, lambda: asyncio.run(coro_factory()))


def test_pinger_and_link_monitor(link):
    a, b = link

    async def scenario():
        from ha.probe import LinkMonitor, Pinger

        events: list[str] = []
        links = LinkMonitor(["eth0", "missing0"], lambda: events.append("link"))
        pinger = Pinger(
            ["10.218.0.2", "fd00:218::2", "10.218.0.99"],
            interval=0.1,
            timeout=0.1,
            rise=2,
            fall=3,
            on_change=lambda: events.append("ping"),
        )
        await links.start()
        await pinger.start()
        try:
            seen = {"start": dict(links.state)}
            await asyncio.sleep(1.0)
            seen["reachable"] = {t: tr.reachable for t, tr in pinger.trackers.items()}
            subprocess.run(["ip", "-n", b, "link", "set", "dev", "eth0", "down"], check=True)
            await asyncio.sleep(0.8)
            seen["down"] = (dict(links.state), pinger.reachable)
            subprocess.run(["ip", "-n", b, "link", "set", "dev", "eth0", "up"], check=True)
            for _ in range(50):
                await asyncio.sleep(0.1)
                if links.up("eth0") and pinger.reachable == 2:
                    break
            seen["up"] = (dict(links.state), pinger.reachable)
            seen["events"] = list(events)
            return seen
        finally:
            pinger.close()
            links.close()

    seen = run_in(a, scenario)
    assert seen["start"] == {"eth0": True, "missing0": None}
    assert seen["reachable"] == {"10.218.0.2": True, "fd00:218::2": True, "10.218.0.99": False}
    assert seen["down"] == ({"eth0": False, "missing0": None}, 0)
    assert seen["up"] == ({"eth0": True, "missing0": None}, 2)
    assert seen["events"][0] == "ping"  # 10.218.0.99 never answers: unreachable after 3 probes
    assert "link" in seen["events"]


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_link_polls_leave_no_memory_behind():
    """A director polls its links ten times a second for months: a poll must leave nothing
    behind. Polled with pyroute2's "get" (which asks for an acknowledgement), each poll left
    the kernel's acknowledgement queued for good: +1.6 KiB of RSS per poll here, and both
    directors of the hour-long soak grew by 50 MB an hour."""
    from ha.probe import LinkMonitor

    async def scenario() -> tuple[int, int]:
        links = LinkMonitor(["lo"], lambda: None, interval=0.0001)
        await links.start()
        try:
            while links.polls < 500:  # warm-up: allocator pools, pyroute2's caches
                await asyncio.sleep(0.01)
            gc.collect()
            before, start = _rss_kib(), links.polls
            deadline = time.monotonic() + 60
            while links.polls < start + 4000 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            gc.collect()
            assert links.state == {"lo": True}
            return links.polls - start, _rss_kib() - before
        finally:
            links.close()

    polls, grown_kib = asyncio.run(scenario())
    assert polls >= 4000, f"only {polls} polls in 60 s"
    assert grown_kib < 2048, f"RSS grew {grown_kib} KiB over {polls} polls"
