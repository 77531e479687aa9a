"""Faults of a directord heartbeat pair, end to end: two `directord run` daemons in namespaces.

Root only; this host's kernel (no IPVS: the configurations hold only an
``ha:`` section). Topologies are `hapair.PairLab`s: ``client``, ``dir1``,
``dir2`` on the service bridge ``br0`` (10.216.0.0/24, VIP 10.216.0.100 on
the directors' ``eth0``), and for the heartbeat-link tests the directors'
``eth1`` on a separate heartbeat bridge ``hb0`` (10.216.1.0/24, ``media:
bcast eth1``, as sites run heartbeat on a dedicated link). Timers are the
shipped defaults: keepalive 0.2 s, deadtime 1 s, initdead 3 s.

The faults, as the HA design defines them:

* daemon crash: SIGKILL of the active daemon alone, its link stays up. Its
  VIP stays configured (heartbeat behaves the same), so once the peer takes
  over both hold the VIP until the crashed daemon restarts; the restarted
  daemon drops the stale VIP at once, sees the active peer, stays standby.
* heartbeat cut and heal: the heartbeat bridge goes down while the service
  LAN stays up: both become active; on heal exactly one keeps the VIP, by
  the deterministic rule (the group's preferred owner), and re-announces it.
* forged, replayed and malformed heartbeat packets injected from a third
  namespace on the heartbeat link: dropped, counted, no role change.
* node failure (daemon killed, link down) carried over mcast and ucast media.
* an IPv6 VIP: announced by an unsolicited Neighbor Advertisement.

Waits poll until a condition or a deadline; the deadlines carry wide margins.
Measured times are printed (``pytest -s``).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from director.lab import netns as N
from hapair import (
    DEADTIME,
    Capture,
    Director,
    PairLab,
    VipSampler,
    decode_arp,
    is_garp_for,
    netns_problem,
    wait_for,
    write_authkeys,
)

_problem = netns_problem()
pytestmark = pytest.mark.skipif(_problem is not None, reason=_problem or "")

#: Margin on top of a protocol deadline (seconds): the CI machine can be loaded.
MARGIN = 2.0
ONLY1, ONLY2, BOTH = frozenset({"dir1"}), frozenset({"dir2"}), frozenset({"dir1", "dir2"})


def report(title: str, times: dict[str, float]) -> None:
    print(f"\n{title} (seconds):")
    for name, value in times.items():
        print(f"  {name}: {value:.3f}")


def pair(lab: PairLab, tmp_path: Path, **conf) -> tuple[Director, Director]:
    keys = write_authkeys(tmp_path / "authkeys")
    conf.setdefault("media", ["bcast eth0"])
    conf.setdefault("resources", [f"dir1 {lab.vip}/32/eth0"])
    return Director(lab, "dir1", tmp_path, keys, **conf), Director(lab, "dir2", tmp_path, keys, **conf)


def start_pair(lab: PairLab, d1: Director, d2: Director) -> float:
    """Start both; wait until dir1 (the preferred owner) holds the VIP and both see each other active."""
    d1.start()
    d2.start()
    t = wait_for(lambda: lab.holds("dir1"), 20, "dir1 to take the VIP", (d1, d2))
    wait_for(lambda: all(d.status()["peers"][0]["status"] == "active" for d in (d1, d2)), 10,
             "both daemons to see their peer active", (d1, d2))
    return t


# --- daemon crash --------------------------------------------------------------------------


def test_daemon_crash_and_restart(tmp_path: Path):
    """SIGKILL of the active daemon alone: takeover, two holders until the restart, then one."""
    times: dict[str, float] = {}
    with PairLab("hfc") as lab:
        d1, d2 = pair(lab, tmp_path, auto_failback=False)
        dirs = (d1, d2)
        try:
            times["initial acquisition by dir1"] = start_pair(lab, d1, d2)
            d1.past_startup_bonus(1.0)
            with VipSampler(lab) as vips:
                t_kill = time.monotonic()
                d1.crash()  # the link stays up
                t = vips.wait(lambda h: "dir2" in h, DEADTIME + MARGIN, "dir2 to take over", dirs, since=t_kill)
                times["takeover by dir2 after SIGKILL of dir1"] = t
                assert t >= DEADTIME * 0.5, "dir2 took over before dir1 could have been declared dead"
                # dir1's VIP stays behind: two holders, as documented, until dir1 restarts
                t1 = time.monotonic()
                time.sleep(1.0)
                assert vips.seen(t1) == {BOTH}, vips.seen(t1)
                assert d2.status()["peers"][0]["status"] == "dead"

                t_start = d1.start()
                t = vips.wait(lambda h: "dir1" not in h, 2.0, "the restarted dir1 to drop its stale VIP at once",
                              dirs, since=t_start)
                times["stale VIP dropped after the restart"] = t
                assert "dir2" in vips.now()
                wait_for(lambda: d1.status()["peers"][0]["status"] == "active", 10,
                         "the restarted dir1 to see dir2 active", dirs)
                # dir1 stays standby (auto_failback off): well past its takeover delay and initdead
                t2 = time.monotonic()
                time.sleep(3.0)
                assert vips.seen(t2) == {ONLY2}, vips.seen(t2)
                assert vips.since(t_start)[-1][1] == ONLY2
                assert vips.seen(t_start) <= {BOTH, ONLY2}, "dir2 let go of the VIP during dir1's restart"
            s1, s2 = d1.status(), d2.status()
            assert s1["groups"][0]["held"] is False and s1["groups"][0]["holder"] == "dir2"
            assert s1["peers"][0]["status"] == "active"
            assert s2["groups"][0]["held"] is True and s2["peers"][0]["status"] == "active"
        finally:
            for d in dirs:
                d.kill()
            report("daemon crash", times)
