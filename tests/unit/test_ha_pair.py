"""Two `directord run` processes as a heartbeat pair, in network namespaces: VIP takeover end to end.

Root only. Topology (`hapair.PairNet`, namespaces created here and deleted
afterwards): a switch namespace ``<PREFIX>-sw`` with bridge ``br0``;
``<PREFIX>-dir1`` (10.216.0.10), ``<PREFIX>-dir2`` (10.216.0.11) and
``<PREFIX>-client`` (10.216.0.2), each with an ``eth0`` veth plugged into
the bridge, addresses with broadcast 10.216.0.255. Each director runs
``directord run`` with a configuration holding only an ``ha:`` section (no
virtual services; without ip_vs in the kernel the daemon logs the IPVS error
and keeps running): bcast on eth0, keepalive 0.2 s, deadtime 0.8 s,
auto_failback on, one resource group ``dir1 10.216.0.100/32/eth0``.
The faults of the issue's other scenarios are in test_ha_faults.py.

Scenario (one test, phases in order; the measured times are printed):

1. both start together: dir1, the preferred owner, takes the VIP, dir2 never
   holds it; the client sees dir1's gratuitous ARP pair and resolves the
   VIP to dir1's MAC;
2. dir1's daemon is SIGKILLed and its link taken down (after its first 5 s,
   during which it advertises deadtime + 2 s): dir2 holds the VIP within
   deadtime + 2 s and the client's neighbour entry moves to
   dir2's MAC (dir2's gratuitous ARP);
3. dir1 restarts (a new daemon, then its link up once the daemon removed the
   address its killed predecessor left behind): with auto_failback the VIP
   goes back to dir1 and leaves dir2; sampled in both namespaces, the VIP is
   never on both for longer than a short handover window;
4. SIGTERM of the active dir1: dir2 takes over within a fraction of the
   deadtime (the graceful ``shutdone`` path, not death detection);
   ``directord status`` of dir2 shows it as the holder.
"""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest
from hapair import (
    DEADTIME,
    KEEPALIVE,
    Capture,
    Director,
    PairNet,
    VipSampler,
    decode_arp,
    is_garp_for,
    netns_problem,
    wait_for,
    write_authkeys,
)

from director.lab import netns as N

_problem = netns_problem()
pytestmark = pytest.mark.skipif(_problem is not None, reason=_problem or "")


@pytest.fixture
def lab():
    with PairNet("hpr") as the_lab:
        yield the_lab


def make_pair(lab: PairNet, tmp_path: Path, **kwargs) -> tuple[Director, Director]:
    keys = write_authkeys(tmp_path / "authkeys")
    conf = dict(media=["bcast eth0"], resources=[f"dir1 {lab.vip}/32/eth0"], auto_failback=True)
    conf.update(kwargs)
    return Director(lab, "dir1", tmp_path, keys, **conf), Director(lab, "dir2", tmp_path, keys, **conf)


def test_vip_follows_the_active_director(lab: PairNet, tmp_path: Path):
    d1, d2 = make_pair(lab, tmp_path)
    dirs = (d1, d2)
    vip = lab.vip
    mac1, mac2 = lab.mac("dir1"), lab.mac("dir2")
    capture = Capture(lab.ns("client"), "eth0", 0x0806)
    probe = N.socket_in_netns(lab.ns("client"), socket.AF_INET, socket.SOCK_DGRAM)
    times: dict[str, float] = {}

    def garp_senders(since: float) -> set[bytes]:
        return {decode_arp(f)["sha"] for _, f in capture.matching(is_garp_for(vip), since)}

    try:
        # 1. both start: the preferred owner takes the VIP
        d1.start()
        d2.start()
        times["initial acquisition by dir1"] = wait_for(lambda: lab.holds("dir1"), 20, "dir1 to take the VIP", dirs)
        time.sleep(1.0)
        assert not lab.holds("dir2"), d2.tail()
        assert mac1 in garp_senders(0)
        probe.sendto(b"x", (vip, 9))  # the client resolves the VIP
        wait_for(lambda: lab.neighbour_mac("client") == mac1, 5, "the client to resolve the VIP to dir1")
        doc = d1.status()
        assert doc["node"] == "dir1" and doc["groups"][0]["holder"] == "dir1"
        assert doc["peers"][0]["node"] == "dir2" and doc["peers"][0]["status"] == "active"

        # 2. node failure of dir1 (SIGKILL, link down): dir2 takes over after the deadtime (once the
        #    first 5 s are over: until then a node advertises deadtime + 2 s, as heartbeat does)
        d1.past_startup_bonus(1.5)
        t_fail = time.monotonic()
        d1.crash()
        N.link_set(lab.ns("dir1"), "eth0", up=False)
        t = wait_for(lambda: lab.holds("dir2"), DEADTIME + 2, "dir2 to take the VIP after the crash", dirs)
        times["takeover after SIGKILL + link down"] = t
        assert t >= DEADTIME * 0.5, "dir2 took the VIP before the peer could have been declared dead"
        times["client neighbour entry -> dir2"] = t + wait_for(
            lambda: lab.neighbour_mac("client") == mac2, 6, "the client's neighbour entry to move to dir2", dirs
        )
        assert mac2 in garp_senders(t_fail)

        # 3. dir1 comes back: the new daemon removes the address its killed predecessor left,
        #    the link comes up, and auto_failback returns the VIP to dir1
        assert lab.holds("dir1")  # left behind by the killed daemon
        d1.start()
        wait_for(lambda: not lab.holds("dir1"), 20, "the restarted dir1 to clear the stale VIP", dirs)
        N.link_set(lab.ns("dir1"), "eth0", up=True)
        with VipSampler(lab) as sampler:
            t0 = time.monotonic()
            t = sampler.wait(lambda h: h == {"dir1"}, 20, "the VIP to fail back to dir1", dirs, since=t0)
            times["failback to dir1 after link up"] = t
            both = sampler.duration(lambda h: len(h) == 2, t0)
            times["VIP on both during failback"] = both
            assert both <= 0.5, f"VIP on both directors for {both:.3f} s"
            t1 = time.monotonic()
            time.sleep(1.0)  # and it stays there
            assert sampler.seen(t1) == {frozenset({"dir1"})}

        # 4. graceful stop of the active director: the peer takes over at once
        d1.signal(signal.SIGTERM)
        t = wait_for(lambda: lab.holds("dir2"), 5, "dir2 to take the VIP after SIGTERM of dir1", dirs)
        times["takeover after SIGTERM"] = t
        assert t < DEADTIME, f"graceful handover took {t:.3f} s: as slow as a death detection"
        assert d1.wait() == 0, d1.tail()
        assert not lab.holds("dir1")
        doc = d2.status()
        assert doc["groups"][0]["holder"] == "dir2" and doc["groups"][0]["held"] is True
        assert doc["peers"][0]["status"] == "dead"
        wait_for(lambda: lab.neighbour_mac("client") == mac2, 6, "the client's neighbour entry to move to dir2", dirs)
        d2.signal(signal.SIGTERM)
        assert d2.wait() == 0, d2.tail()
        assert not lab.holds("dir2")
    finally:
        capture.close()
        probe.close()
        for d in dirs:
            d.kill()
        print("\nHA pair timings (seconds):")
        for name, value in times.items():
            print(f"  {name}: {value:.3f}")


def test_refusal_and_reload_of_the_ha_section(lab: PairNet, tmp_path: Path):
    d, _ = make_pair(lab, tmp_path)
    good = d.config.read_text()
    try:
        # lo has no broadcast address: the environment check refuses to start, naming the file
        d.config.write_text(good.replace('media: ["bcast eth0"]', 'media: ["bcast lo"]'))
        d.start()
        assert d.wait() == 1, d.tail()
        log = d.log.read_text()
        assert f"{d.config}:1: ha.media: bcast lo: interface 'lo' has no IPv4 address with a broadcast" in log

        # a running daemon keeps its HA service on a reload that changes the ha section
        d.config.write_text(good)
        d.start()
        wait_for(lambda: lab.holds("dir1"), 20, "dir1 to take the VIP alone", (d,))
        d.config.write_text(good.replace(f"keepalive: {KEEPALIVE}", "keepalive: 0.3"))
        d.signal(signal.SIGHUP)
        wait_for(lambda: "HA changes need a restart" in d.log.read_text(), 10, "the reload warning", (d,))
        doc = d.status()
        assert doc["state"] == "active" and doc["groups"][0]["holder"] == "dir1"
        assert doc["peers"] == [{"node": "dir2", "status": "dead", "last_heard_s": None}]
        d.signal(signal.SIGTERM)
        assert d.wait() == 0, d.tail()
        assert not lab.holds("dir1")
    finally:
        d.kill()
