"""``directord run`` with a ``bgp:`` section, on this host's kernel (no ip_vs: the services are
never programmed, so nothing is announced): the routed lab (`director.lab.ecmp_site.EcmpLab`)
with a real BIRD as the router and two directors running the daemon.

Shows that the daemon's BIRD stays up (the checker's sweep of adopted orphans once killed it
0.1 s after each start), its session with the router is established, ``directord bgp
status|drain|undrain`` answer and keep the drain in the state directory, the VIP is on ``lo``
while the daemon runs, and a stop removes it and BIRD.

Root only; skipped without /usr/sbin/bird (package bird2) or network namespaces."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from netnsprobe import netns_problem, netns_skip

from director.lab.ecmp_site import BIRD, EcmpLab, EcmpOptions

PREFIX = f"tbd{os.getpid()}"

pytestmark = [
    netns_skip(netns_problem(PREFIX)),
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
    pytest.mark.skipif(not os.path.exists(BIRD), reason="BIRD 2 (package bird2) is not installed"),
]


def directord(lab: EcmpLab, node: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "director.cli", *args, "--control-socket", str(lab.socket_path(node))],
        capture_output=True,
        text=True,
        timeout=30,
    )


def bgp_status(lab: EcmpLab, node: str) -> dict:
    done = directord(lab, node, "bgp", "status", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout} s (last {last!r})")


@pytest.fixture
def lab(tmp_path):
    lab = EcmpLab(EcmpOptions(prefix=PREFIX, directors=2), workdir=tmp_path / "lab")
    lab.up(start_daemons=True)
    try:
        yield lab
    finally:
        lab.down()


def test_the_daemon_runs_bird_and_answers_bgp_commands(lab):
    sessions = wait(
        lambda: (
            all(row.get("info", "").startswith("Established") for row in lab.bgp_sessions().values())
            and lab.bgp_sessions()
        ),
        20,
        "both directors' sessions established at the router",
    )
    assert set(sessions) == {"dir1", "dir2"}
    pid = bgp_status(lab, "dir1")  # BIRD still runs a while later: not swept as an orphan
    time.sleep(1.0)
    status = bgp_status(lab, "dir1")
    assert status["speaker"] == "running" and pid["speaker"] == "running"
    assert [(s["neighbor"], s["state"]) for s in status["sessions"]] == [("router", "Established")]
    [vip] = status["vips"]
    assert vip["route"] == "withdrawn" and "not programmed in IPVS" in vip["reason"]
    assert "sloppy_tcp" in " ".join(status["problems"])  # no ip_vs here
    assert lab.vip_route().strip() == ""  # nothing announced
    lo = subprocess.run(["ip", "-n", f"{PREFIX}-dir1", "addr", "show", "dev", "lo"], capture_output=True, text=True)
    assert f"{lab.vip}/32" in lo.stdout
    # drain and undrain, kept in the state directory
    done = directord(lab, "dir1", "bgp", "drain")
    assert done.returncode == 0 and done.stdout.startswith("drained: GRACEFUL_SHUTDOWN now"), done
    drain_file = lab.workdir / "dir1" / "state" / "bgp-drain.json"
    assert json.loads(drain_file.read_text()) == {"drained": True}
    assert bgp_status(lab, "dir1")["drained"] is True
    assert directord(lab, "dir1", "bgp", "undrain").returncode == 0
    assert not drain_file.exists() and bgp_status(lab, "dir1")["drained"] is False
    # a stop: the daemon exits, its BIRD with it, the VIP leaves lo, the router's session ends
    lab.signal_daemon("dir1", signal.SIGTERM)
    wait(lambda: lab.daemon_pid("dir1") is None, 20, "dir1's daemon stopped")
    lo = subprocess.run(["ip", "-n", f"{PREFIX}-dir1", "addr", "show", "dev", "lo"], capture_output=True, text=True)
    assert f"{lab.vip}/32" not in lo.stdout
    wait(
        lambda: not lab.bgp_sessions().get("dir1", {}).get("info", "").startswith("Established"),
        10,
        "the router's session with dir1 ended",
    )
    assert directord(lab, "dir2", "bgp", "status").returncode == 0
    assert directord(lab, "dir1", "bgp", "status").returncode == 2  # no daemon answering
