"""Every `directord lab drill` scenario on real IPVS (run inside the stock-kernel VM).

One HA pair lab (client, dir1, dir2, three DR real servers, heartbeat on its
own bridge) is built for the module; each test restores it (links up,
daemons and HTTP servers running, dir1 holding the VIP), runs one scenario
with a steady client and asserts the scenario's declared expectations
(`director.lab.scenarios.SCENARIOS`) plus the figures that make it a drill.
A scenario's report is printed on failure.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import threading
import time

import pytest

from director.lab.drill import run_scenario
from director.lab.pair import PairLab, PairOptions
from director.lab.scenarios import DEADTIME, MARGIN, SCENARIOS
from director.lab.verdict import render

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


class DestWatch(threading.Thread):
    """Reads dir1's IPVS table with ``ipvsadm -Ln`` in its namespace (a reader independent of
    the daemon and its log) about every ``interval`` seconds until `stop`; records each real
    server's weight in the lab's virtual service, None when the real server is not listed.
    Failed reads (``{}``) are not recorded."""

    def __init__(self, pair: PairLab, interval: float = 0.25) -> None:
        super().__init__(daemon=True, name="ipvsadm-watch")
        self.pair, self.interval = pair, interval
        self.samples: list[tuple[float, dict[str, int | None]]] = []  # (monotonic s, {rs: weight})
        self.halt = threading.Event()

    def read(self) -> dict[str, int | None] | None:
        """One ``ipvsadm -Ln`` read: ``{rs: weight or None}``, None when the read failed or the
        virtual service is missing."""
        port = self.pair.options.port
        service = self.pair.ipvs_table("dir1").get(f"TCP {self.pair.vip}:{port}")
        if service is None:
            return None
        weights: dict[str, int | None] = {}
        for rs in self.pair.plan.real_servers:
            dest = service["dests"].get(f"{self.pair.lab.rip(rs)}:{port}")
            weights[rs] = None if dest is None else dest[1]  # (forward, weight, active, inactive)
        return weights

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                weights = self.read()
            except (OSError, subprocess.SubprocessError):  # ipvsadm could not run or hung: read again
                weights = None
            if weights is not None:
                self.samples.append((time.monotonic(), weights))
            self.halt.wait(self.interval)

    def stop(self) -> None:
        self.halt.set()
        self.join(30)

    def states(self, rs: str) -> list[str]:
        """``rs``'s rotation state in each sample, runs of the same state collapsed: a list of
        ``"in"`` (listed, weight > 0) and ``"out"`` (weight 0, quiescent, or not listed)."""
        seq = ["in" if (w.get(rs) or 0) > 0 else "out" for _t, w in self.samples]
        return [state for state, _run in itertools.groupby(seq)]


def drill(pair: PairLab, name: str, watch: bool = False) -> tuple[dict, DestWatch | None]:
    """Restore the pair and run scenario ``name``; with ``watch``, dir1's IPVS table is read
    with ipvsadm throughout (from the restored, settled pair to the end of the drill)."""
    pair.restore()
    watcher = DestWatch(pair) if watch else None
    if watcher is not None:
        watcher.start()
    try:
        report = run_scenario(pair, name, rate=RATE)
    finally:
        if watcher is not None:
            watcher.stop()
    print(render(report))
    failed = [c for c in report["checks"] if not c["ok"]]
    assert report["ok"], f"{failed}\n{render(report)}\n{json.dumps(report['figures'])}\n" + "\n".join(
        f"--- {n}\n{pair.log_tail(n)}" for n in ("dir1", "dir2")
    )
    return report, watcher


def test_fail_active_moves_the_vip_to_dir2_within_deadtime_plus_margin(pair):
    report, _ = drill(pair, "fail-active")
    f = report["figures"]
    assert f["detection_s"] is not None and f["vip_moved_s"] is not None
    assert f["longest_gap_s"] <= DEADTIME + MARGIN
    assert f["announcements"] >= 2  # the gratuitous ARP pair reached the client
    assert f["requests"] > 50
    assert report["holders"][-1]["holder"] == "dir2"


def test_crash_daemon_stale_vip_is_dropped_and_one_holder_remains(pair):
    report, _ = drill(pair, "crash-daemon")
    kinds = [(e["source"], e["kind"]) for e in report["timeline"]]
    assert ("dir2", "detect") in kinds and ("dir1", "vip-removed") in kinds  # the restart dropped the stale VIP
    assert report["holders"][-1]["holder"] == "dir1"


def test_stop_active_hands_over_without_waiting_for_the_deadtime(pair):
    report, _ = drill(pair, "stop-active")
    assert report["figures"]["vip_moved_s"] is not None
    assert report["figures"]["longest_gap_s"] <= SCENARIOS["stop-active"].expect.max_gap_s


def test_cut_heartbeat_split_brain_heals_to_one_owner(pair):
    report, _ = drill(pair, "cut-heartbeat")
    assert any(h["holder"] == "dir1+dir2" for h in report["holders"])  # the split brain did happen
    assert report["holders"][-1]["holder"] == "dir1"


def test_kill_realserver_leaves_rotation(pair):
    report, watch = drill(pair, "kill-realserver", watch=True)
    assert any(e["kind"] == "rs-down" and e["source"] == "dir1" for e in report["timeline"])
    # the kernel's table, read with ipvsadm: rs2 was in rotation, then quiesced (weight 0) or
    # removed, and stays out while its HTTP server is dead; the other real servers stay in
    assert watch.states("rs2") == ["in", "out"], watch.samples
    now = watch.read()
    assert now is not None and not now["rs2"], now
    others = [rs for rs in pair.plan.real_servers if rs != "rs2"]
    assert all(watch.states(rs) == ["in"] for rs in others), watch.samples


def test_flap_realserver_comes_back(pair):
    report, watch = drill(pair, "flap-realserver", watch=True)
    assert any(e["kind"] == "rs-up" and e["source"] == "dir1" for e in report["timeline"])
    # the kernel's table, read with ipvsadm: rs2 went out of rotation (weight 0 or removed)
    # while its port was down, and is back with a non-zero weight at the end
    states = watch.states("rs2")
    assert states[0] == "in" and "out" in states and states[-1] == "in", watch.samples
    now = watch.read()
    assert now is not None and (now["rs2"] or 0) > 0, now


def test_restart_director_changes_nothing_for_clients(pair):
    report, _ = drill(pair, "restart-director")
    # Two VIP moves (graceful stop, failback); a request caught in one may be reset, nothing else fails.
    moves = [e for e in report["timeline"] if e["kind"] == "vip-added"]
    assert len(moves) == 2
    assert report["figures"]["failed"] <= 2
    assert set(report["figures"]["failed_results"]) <= {"ConnectionResetError"}
