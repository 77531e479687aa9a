"""Two `directord run` daemons: `directord standby` / `takeover`, ping-node loss and carrier loss.

Root only; a `hapair.PairNet` with a separate heartbeat link (media ``bcast
eth1`` on bridge ``hb0``), the VIP on the service LAN (``eth0`` on ``br0``)
and the client namespace as the ping node. Probing is fast here (ping every
0.2 s, 3 missed = unreachable, 2 answered = reachable again).

One test, phases in order:

1. both start, dir1 (the preferred owner) holds the VIP; each sees the
   other's connectivity report (link up, ping nodes 1/1);
2. ``directord standby`` on dir1: dir2 holds the VIP, never both for more
   than a short handover window; a second standby is refused with the
   reason; ``directord takeover`` on dir1 brings it back;
3. dir1 loses its ping node (the client drops what it sends to dir1): dir2
   takes the VIP; the ping node answers again: the VIP returns to dir1
   (auto_failback on);
4. dir1's service link loses carrier (the switch port goes down) while the
   heartbeat link stays up: dir2 takes the VIP and reports dir1's link down
   in its status; carrier back: the VIP returns to dir1;
5. the address audit: the VIP deleted by hand on dir1 comes back, the VIP
   added by hand (with directord's label) on dir2 is removed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hapair import REPO, Director, PairNet, VipSampler, netns_problem, wait_for, write_authkeys

from director.lab import netns as N

_problem = netns_problem()
pytestmark = pytest.mark.skipif(_problem is not None, reason=_problem or "")

ONLY1, ONLY2 = frozenset({"dir1"}), frozenset({"dir2"})
PROBING = """\
  ping_nodes: [{ping}]
  ping_interval: 0.2
  ping_timeout: 0.2
  ping_rise: 2
  ping_fall: 3
"""


def cli(d: Director, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "director.cli", *args, "--control-socket", d.socket],
        capture_output=True,
        text=True,
        timeout=30,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )


def test_standby_takeover_ping_and_carrier(tmp_path: Path):
    times: dict[str, float] = {}
    with PairNet("hadm", hb_link=True, subnet="10.217.0", hb_subnet="10.217.1") as lab:
        keys = write_authkeys(tmp_path / "authkeys")
        conf = dict(media=["bcast eth1"], resources=[f"dir1 {lab.vip}/32/eth0"])
        d1 = Director(lab, "dir1", tmp_path, keys, **conf)
        d2 = Director(lab, "dir2", tmp_path, keys, **conf)
        dirs = (d1, d2)
        for d in dirs:
            d.config.write_text(d.config.read_text() + PROBING.format(ping=lab.addr["client"]))
        try:
            # 1. start; reports exchanged
            d1.start()
            d2.start()
            wait_for(lambda: lab.holds("dir1"), 20, "dir1 to take the VIP", dirs)
            both_reports = {"link": "up", "ping_up": 1, "ping_total": 1}
            wait_for(
                lambda: all(d.status()["peer_connectivity"] == both_reports for d in dirs),
                10,
                "both to see the other's connectivity report",
                dirs,
            )
            doc = d1.status()
            assert doc["connectivity"] == both_reports and doc["links"] == {"eth0": "up", "eth1": "up"}
            assert [m["link"] for m in doc["media"]] == ["up"]
            assert doc["ping_nodes"][0]["address"] == lab.addr["client"] and doc["ping_nodes"][0]["reachable"]
            text = cli(d1, "status").stdout
            assert "HA node dir1: active" in text and "medium bcast eth1: link up" in text, text

            with VipSampler(lab) as sampler:
                # 2. standby, refused second standby, takeover
                t0 = time.monotonic()
                out = cli(d1, "standby")
                assert out.returncode == 0 and "standby [all] requested" in out.stdout, out.stderr
                times["standby: VIP on dir2"] = sampler.wait(
                    lambda h: h == ONLY2, 5, "dir2 to hold the VIP", dirs, since=t0
                )
                out = cli(d1, "standby")
                assert out.returncode == 1 and "standby refused: we hold none of the all groups" in out.stderr
                assert "HA node dir1: standby" in cli(d1, "status").stdout
                t1 = time.monotonic()
                out = cli(d1, "takeover")
                assert out.returncode == 0, out.stderr
                times["takeover: VIP on dir1"] = sampler.wait(
                    lambda h: h == ONLY1, 5, "dir1 to take the VIP back", dirs, since=t1
                )
                assert sampler.duration(lambda h: len(h) == 2, t0) <= 0.5

                # 3. ping node lost by dir1 only, then back
                time.sleep(0.5)
                t2 = time.monotonic()
                subprocess.run(
                    ["ip", "-n", lab.ns("client"), "route", "add", "blackhole", f"{lab.addr['dir1']}/32"],
                    check=True,
                    timeout=10,
                )
                times["ping node lost: VIP on dir2"] = sampler.wait(
                    lambda h: h == ONLY2, 8, "dir2 to take the VIP when dir1 loses its ping node", dirs, since=t2
                )
                st = d1.status()
                assert st["connectivity"]["ping_up"] == 0 and not st["ping_nodes"][0]["reachable"]
                time.sleep(1.0)
                assert sampler.now() == ONLY2  # no flapping while dir1 is worse
                t3 = time.monotonic()
                subprocess.run(
                    ["ip", "-n", lab.ns("client"), "route", "del", "blackhole", f"{lab.addr['dir1']}/32"],
                    check=True,
                    timeout=10,
                )
                times["ping node back: VIP on dir1"] = sampler.wait(
                    lambda h: h == ONLY1, 10, "the VIP to return to dir1", dirs, since=t3
                )
                assert sampler.duration(lambda h: len(h) == 2, t2) <= 0.5

                # 4. carrier loss on dir1's service link (heartbeat link up)
                time.sleep(2.5)  # past the hold-off between two connectivity handovers
                t4 = time.monotonic()
                N.link_set(lab.ns("sw"), "dir1", up=False)
                times["carrier lost: VIP on dir2"] = sampler.wait(
                    lambda h: h == ONLY2, 8, "dir2 to take the VIP when dir1's link goes down", dirs, since=t4
                )
                assert d2.status()["peer_connectivity"]["link"] == "down"
                assert d1.status()["links"]["eth0"] == "down"
                t5 = time.monotonic()
                N.link_set(lab.ns("sw"), "dir1", up=True)
                times["carrier back: VIP on dir1"] = sampler.wait(
                    lambda h: h == ONLY1, 10, "the VIP to return to dir1", dirs, since=t5
                )
                assert sampler.duration(lambda h: len(h) == 2, t4) <= 0.5

                # 5. the address audit: a VIP deleted by hand on the holder comes back, one of
                #    ours added by hand on the standby goes away; a foreign one is left alone
                ip = ["ip", "-n"]
                subprocess.run(ip + [lab.ns("dir1"), "addr", "del", f"{lab.vip}/32", "dev", "eth0"], check=True)
                times["VIP deleted by hand: back on dir1"] = sampler.wait(
                    lambda h: h == ONLY1, 5, "the audit to add the VIP again", dirs, since=time.monotonic()
                )
                subprocess.run(
                    ip + [lab.ns("dir2"), "addr", "add", f"{lab.vip}/32", "dev", "eth0", "label", "eth0:dd"], check=True
                )
                t6 = time.monotonic()
                times["stray VIP on dir2: removed"] = sampler.wait(
                    lambda h: h == ONLY1, 5, "the audit to remove the stray VIP", dirs, since=t6
                )
                assert d1.status()["counters"]["address_repairs"] == 1
                assert d2.status()["counters"]["address_repairs"] == 1
                other = "10.217.0.77"
                subprocess.run(ip + [lab.ns("dir2"), "addr", "add", f"{other}/32", "dev", "eth0"], check=True)
                time.sleep(2.5)
                assert lab.holds("dir2", other)
        finally:
            for d in dirs:
                d.kill()
            print("\nstandby / takeover / connectivity timings (seconds):")
            for name, value in times.items():
                print(f"  {name}: {value:.3f}")
