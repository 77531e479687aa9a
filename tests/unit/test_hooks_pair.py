"""Role hooks on a real pair of `directord run` daemons in namespaces: a slow hook and a failing
hook on ``ha.acquired`` neither delay the takeover nor the failback, run only once the VIP is
up, are logged with their exit status, and the ``ha.released`` hook waits for the one before it.
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import pytest
from hapair import DEADTIME, Director, PairNet, VipSampler, netns_problem, wait_for, write_authkeys
from prometheus_client.parser import text_string_to_metric_families
from test_checks_faults import script

from director.lab import netns as N

_problem = netns_problem()
pytestmark = pytest.mark.skipif(_problem is not None, reason=_problem or "")

SLOW = 10.0
METRICS = "127.0.0.1:9199"


def scrape(lab: PairNet, role: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """``/metrics`` of the daemon in ``role``'s namespace (curl on its loopback), by sample name."""
    argv = ["curl", "-sS", "--max-time", "10", f"http://{METRICS}/metrics"]
    text = N.exec_in_netns(lab.ns(role), argv, timeout=20).stdout
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return found


def metric(found, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels`` (0 when none)."""
    return sum(v for have, v in found.get(name, []) if all(have.get(k) == w for k, w in labels.items()))


def test_role_hooks_run_after_the_takeover_and_never_delay_or_reorder_it(tmp_path: Path):
    log = tmp_path / "hooks.log"
    with PairNet("hkp") as lab:
        vip = lab.vip
        slow = script(
            tmp_path / "slow",
            f'held=no; ip -o addr show dev eth0 | grep -q " {vip}/" && held=yes\n'
            f'echo "start $DIRECTORD_EVENT $DIRECTORD_ROLE $DIRECTORD_TIME $(date +%s.%N) $held" >> {log}\n'
            f'sleep {SLOW}; echo "end $DIRECTORD_EVENT" >> {log}\n',
        )
        fail = script(tmp_path / "fail", "echo boom; exit 3\n")
        released = script(tmp_path / "released", f'echo "start $DIRECTORD_EVENT $DIRECTORD_ROLE" >> {log}\n')
        keys = write_authkeys(tmp_path / "authkeys")
        conf = dict(media=["bcast eth0"], resources=[f"dir1 {vip}/32/eth0"], auto_failback=True)
        d1 = Director(lab, "dir1", tmp_path, keys, **conf)
        d2 = Director(lab, "dir2", tmp_path, keys, **conf)
        d2.config.write_text(
            d2.config.read_text() + f"notify:\n  hooks:\n"
            f"    - {{name: fail, events: [ha.acquired], command: [{fail}]}}\n"
            f"    - {{name: slow, events: [ha.acquired], command: [{slow}], timeout: 30}}\n"
            f"    - {{name: released, events: [ha.released], command: [{released}]}}\n"
        )
        for d in (d1, d2):  # the metrics listener on each director's loopback
            d.config.write_text(f'global:\n  http: {{listen: "{METRICS}"}}\n' + d.config.read_text())
        dirs = (d1, d2)
        try:
            d1.start()
            d2.start()
            wait_for(lambda: lab.holds("dir1"), 20, "dir1 to take the VIP", dirs)
            d1.past_startup_bonus(1.5)
            before = {role: scrape(lab, role) for role in ("dir1", "dir2")}
            assert metric(before["dir1"], "directord_ha_group_held") == 1
            assert metric(before["dir2"], "directord_ha_group_held") == 0
            assert metric(before["dir2"], "directord_ha_peer_up", peer="dir1") == 1

            # node failure of dir1: dir2 takes over within the deadtime, as without hooks
            d1.crash()
            N.link_set(lab.ns("dir1"), "eth0", up=False)
            takeover = wait_for(lambda: lab.holds("dir2"), DEADTIME + 2, "dir2 to take the VIP", dirs)
            t_takeover = time.monotonic()
            # dir1 returns at once, while the slow hook runs: the failback does not wait for it
            with VipSampler(lab) as sampler:
                N.link_set(lab.ns("dir1"), "eth0", up=True)
                d1.start()
                failback = sampler.wait(lambda h: h == {"dir1"}, 20, "the VIP to fail back", dirs, since=t_takeover)
                assert "end ha.acquired" not in log.read_text(), (
                    f"the failback ({failback:.1f} s after the takeover) waited for the {SLOW:g} s role hook"
                )

            # the role change on both directors, as their metrics show it
            m1, m2 = scrape(lab, "dir1"), scrape(lab, "dir2")
            assert metric(m1, "directord_ha_group_held") == 1
            assert metric(m2, "directord_ha_group_held") == 0
            assert (
                metric(m2, "directord_ha_takeovers_total") == metric(before["dir2"], "directord_ha_takeovers_total") + 1
            )
            assert metric(m2, "directord_ha_releases_total") >= 1

            # the role hooks ran once the VIP was up, and were logged with their status
            start = log.read_text().split("\n")[0].split()
            assert start[:3] == ["start", "ha.acquired", "active"]
            acquired_at, hook_started_at, held = float(start[3]), float(start[4]), start[5]
            assert held == "yes", "the role hook started before the VIP was up"
            assert hook_started_at >= acquired_at
            assert "hook fail (ha.acquired): exit 3" in d2.tail() and "output: boom" in d2.tail()

            # the released hook runs once the slow hook before it has ended
            wait_for(lambda: "start ha.released" in log.read_text(), SLOW + 10, "the released hook", dirs)
            lines = log.read_text().split("\n")[:-1]
            assert [line.split()[:2] for line in lines] == [
                ["start", "ha.acquired"],
                ["end", "ha.acquired"],
                ["start", "ha.released"],
            ]
            assert lines[2].split()[2] == "standby"
            wait_for(lambda: "hook released (ha.released)" in d2.tail(), 10, "the released hook's log line", dirs)
            finished = re.findall(r"hook (\w+) \(ha\.\w+\): (exit \d+) after ([\d.]+) s", d2.tail(20000))
            assert [(name, result) for name, result, _ in finished] == [
                ("fail", "exit 3"),
                ("slow", "exit 0"),
                ("released", "exit 0"),
            ]
            assert float(finished[1][2]) >= SLOW
            m2 = scrape(lab, "dir2")
            assert metric(m2, "directord_hook_runs_total", hook="fail", result="failed") == 1
            assert metric(m2, "directord_hook_runs_total", hook="slow", result="ok") == 1
            assert metric(m2, "directord_hook_runs_total", hook="released", result="ok") == 1
            print(
                f"\ntakeover with a {SLOW:g} s and a failing role hook: {takeover:.3f} s (deadtime {DEADTIME} s); "
                f"failback {failback:.3f} s after the takeover"
            )
            for d in dirs:
                d.signal(signal.SIGTERM)
                assert d.wait() == 0, d.tail()
        finally:
            for d in dirs:
                d.kill()
