"""Every `directord lab drill` scenario on real IPVS (run inside the stock-kernel VM).

One HA pair lab (client, dir1, dir2, three DR real servers, heartbeat on its
own bridge) is built for the module; each test restores it (links up,
daemons and HTTP servers running, dir1 holding the VIP), runs one scenario
with a steady client and asserts the scenario's declared expectations
(`director.lab.scenarios.SCENARIOS`) plus the figures that make it a drill.
A scenario's report is printed on failure.
"""

from __future__ import annotations

import json
import os

import pytest

from director.lab.drill import run_scenario
from director.lab.pair import PairLab, PairOptions
from director.lab.scenarios import DEADTIME, MARGIN, SCENARIOS, render

pytestmark = pytest.mark.kernel

RATE = 20.0  # requests per second: enough samples, less load on the slow guest (a daemon start competes with it)


@pytest.fixture(scope="module")
def pair(_ipvs_problem, tmp_path_factory):
    if _ipvs_problem:
        pytest.skip(_ipvs_problem)
    the_pair = PairLab(PairOptions(prefix=f"kd{os.getpid()}"), tmp_path_factory.mktemp("pair"))
    try:
        the_pair.up()
        yield the_pair
    finally:
        the_pair.down()


def drill(pair: PairLab, name: str) -> dict:
    pair.restore()
    report = run_scenario(pair, name, rate=RATE)
    print(render(report))
    failed = [c for c in report["checks"] if not c["ok"]]
    assert report["ok"], f"{failed}\n{render(report)}\n{json.dumps(report['figures'])}\n" + "\n".join(
        f"--- {n}\n{pair.log_tail(n)}" for n in ("dir1", "dir2"))
    return report


def test_fail_active_moves_the_vip_to_dir2_within_deadtime_plus_margin(pair):
    report = drill(pair, "fail-active")
    f = report["figures"]
    assert f["detection_s"] is not None and f["vip_moved_s"] is not None
    assert f["longest_gap_s"] <= DEADTIME + MARGIN
    assert f["announcements"] >= 2  # the gratuitous ARP pair reached the client
    assert f["requests"] > 50
    assert report["holders"][-1]["holder"] == "dir2"


def test_crash_daemon_stale_vip_is_dropped_and_one_holder_remains(pair):
    report = drill(pair, "crash-daemon")
    kinds = [(e["source"], e["kind"]) for e in report["timeline"]]
    assert ("dir2", "detect") in kinds and ("dir1", "vip-removed") in kinds  # the restart dropped the stale VIP
    assert report["holders"][-1]["holder"] == "dir1"


def test_stop_active_hands_over_without_waiting_for_the_deadtime(pair):
    report = drill(pair, "stop-active")
    assert report["figures"]["vip_moved_s"] is not None
    assert report["figures"]["longest_gap_s"] <= SCENARIOS["stop-active"].expect.max_gap_s


def test_cut_heartbeat_split_brain_heals_to_one_owner(pair):
    report = drill(pair, "cut-heartbeat")
    assert any(h["holder"] == "dir1+dir2" for h in report["holders"])  # the split brain did happen
    assert report["holders"][-1]["holder"] == "dir1"


def test_kill_realserver_leaves_rotation(pair):
    report = drill(pair, "kill-realserver")
    assert any(e["kind"] == "rs-down" and e["source"] == "dir1" for e in report["timeline"])


def test_flap_realserver_comes_back(pair):
    report = drill(pair, "flap-realserver")
    assert any(e["kind"] == "rs-up" and e["source"] == "dir1" for e in report["timeline"])


def test_restart_director_changes_nothing_for_clients(pair):
    report = drill(pair, "restart-director")
    # Two VIP moves (graceful stop, failback); a request caught in one may be reset, nothing else fails.
    moves = [e for e in report["timeline"] if e["kind"] == "vip-added"]
    assert len(moves) == 2
    assert report["figures"]["failed"] <= 2
    assert set(report["figures"]["failed_results"]) <= {"ConnectionResetError"}
