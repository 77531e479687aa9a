"""``directord run`` with a ``bgp:`` section, on this host's kernel (no ip_vs: the services are
never programmed, so nothing is announced): the routed lab (`director.lab.ecmp_site.EcmpLab`)
with a real BIRD as the router and two directors running the daemon.

Shows that the daemon's BIRD stays up (the checker's sweep of adopted orphans once killed it
0.1 s after each start), its session with the router is established, ``directord bgp
status|drain|undrain`` answer and keep the drain in the state directory, the VIP is on ``lo``
while the daemon runs, and a stop removes it and BIRD, then puts back the kernel switches the
start changed (recorded in the state directory meanwhile).

Root only; skipped without /usr/sbin/bird (package bird2) or network namespaces.  The order of
the daemon's BGP start and stop (switches set, service started; service stopped, switches put
back) is also tested without BIRD, with the BGP service and the switches replaced."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from netnsprobe import netns_problem, netns_skip
from polling import wait_for

import director.bgp
import ha.bgp.service
from director.bgp import BGP_SYSCTLS, SYSCTL_FILE, load_sysctl_record
from director.daemon import Daemon
from director.lab.ecmp_site import BIRD, EcmpLab, EcmpOptions
from director.lab.netns import call_in_netns
from director.model import Config, Settings
from director.sysctl import read_sysctl, write_sysctl
from ha.bgp.model import BgpConfig, Neighbor, VipAnnouncement

PREFIX = f"tbd{os.getpid()}"

LAB_MARKS = (
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
    pytest.mark.skipif(not os.path.exists(BIRD), reason="BIRD 2 (package bird2) is not installed"),
)


def needs_lab(test):
    """Root, BIRD 2 and network namespaces (probed only where BIRD is installed)."""
    for mark in LAB_MARKS:
        test = mark(test)
    if os.path.exists(BIRD):
        test = netns_skip(netns_problem(PREFIX))(test)
    return test


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


def switches(lab: EcmpLab, node: str) -> dict[str, str]:
    """The bgp mode's kernel switches in ``node``'s namespace (path-form key -> value; those that
    do not exist, the ``vs`` ones without ip_vs, left out)."""

    def read() -> dict[str, str]:
        found = {}
        for key, _ in BGP_SYSCTLS:
            try:
                found[key] = read_sysctl(key)
            except FileNotFoundError:
                pass
        return found

    return call_in_netns(f"{PREFIX}-{node}", read)


ARP = {"net/ipv4/conf/all/arp_ignore": "0", "net/ipv4/conf/all/arp_announce": "0"}


@pytest.fixture
def lab(tmp_path):
    """Two directors running the daemon; before it starts, each namespace's ARP switches are
    the kernel's defaults (`ARP`), whatever the host's are."""
    lab = EcmpLab(EcmpOptions(prefix=PREFIX, directors=2), workdir=tmp_path / "lab")
    lab.up(start_daemons=False)
    try:
        for node in lab.directors:
            call_in_netns(f"{PREFIX}-{node}", lambda: [write_sysctl(key, value) for key, value in ARP.items()])
            lab.start_daemon(node)
        yield lab
    finally:
        lab.down()


@needs_lab
def test_the_daemon_runs_bird_and_answers_bgp_commands(lab):
    sessions = wait_for(
        lambda: (
            all(row.get("info", "").startswith("Established") for row in lab.bgp_sessions().values())
            and lab.bgp_sessions()
        ),
        20,
        "both directors' sessions established at the router",
        step=0.2,
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
    # the switches are set; what they were before is recorded in the state directory
    state_dir = str(lab.workdir / "dir1" / "state")
    running = switches(lab, "dir1")
    assert running == {key: value for key, value in BGP_SYSCTLS if key in running}
    recorded = load_sysctl_record(state_dir) or {}
    assert {key: recorded.get(key) for key in ARP} == ARP
    assert all(running[key] != value for key, value in recorded.items())  # only what was changed
    # a stop: the daemon exits, its BIRD with it, the VIP leaves lo, the router's session ends
    lab.signal_daemon("dir1", signal.SIGTERM)
    wait_for(lambda: lab.daemon_pid("dir1") is None, 20, "dir1's daemon stopped", step=0.2)
    lo = subprocess.run(["ip", "-n", f"{PREFIX}-dir1", "addr", "show", "dev", "lo"], capture_output=True, text=True)
    assert f"{lab.vip}/32" not in lo.stdout
    # and the switches are back as they were, the record gone
    back = switches(lab, "dir1")
    assert back == {**running, **recorded} and {key: back[key] for key in ARP} == ARP
    assert not os.path.exists(os.path.join(state_dir, SYSCTL_FILE))
    wait_for(
        lambda: not lab.bgp_sessions().get("dir1", {}).get("info", "").startswith("Established"),
        10,
        "the router's session with dir1 ended",
        step=0.2,
    )
    assert directord(lab, "dir2", "bgp", "status").returncode == 0
    assert directord(lab, "dir1", "bgp", "status").returncode == 2  # no daemon answering


class FakeBgpService:
    """`ha.bgp.service.BgpService` without BIRD: notes its start and stop in ``calls``."""

    calls: list[object] = []
    fail_start = False

    def __init__(self, config, *, source, state_dir, on_event, spawn_guard) -> None:
        self.config = config
        self.calls.append(("service", state_dir))

    def child_pids(self) -> set[int]:
        return set()

    async def start(self) -> None:
        self.calls.append("start")
        if self.fail_start:
            raise OSError(13, "Permission denied")

    async def stop(self) -> None:
        self.calls.append("stop")


@pytest.fixture
def fake_bgp(monkeypatch, tmp_path):
    """The daemon's BGP start and stop without BIRD or /proc/sys: the calls made, in order."""
    calls: list[object] = []
    monkeypatch.setattr(FakeBgpService, "calls", calls)
    monkeypatch.setattr(ha.bgp.service, "BgpService", FakeBgpService)
    monkeypatch.setattr(director.bgp, "prepare_sysctls", lambda state_dir: calls.append(("prepare", state_dir)) or [])
    monkeypatch.setattr(director.bgp, "restore_sysctls", lambda state_dir: calls.append(("restore", state_dir)))
    bgp = BgpConfig(65001, (Neighbor("10.0.1.1", 65000, "router"),), (VipAnnouncement("192.0.2.10"),))
    config = Config(path=str(tmp_path / "directord.yaml"), settings=Settings(state_dir=str(tmp_path)), bgp=bgp)
    return calls, config


async def test_the_daemon_puts_the_switches_back_after_the_bgp_service_stopped(fake_bgp, tmp_path):
    calls, config = fake_bgp
    daemon = Daemon(config.path)
    assert await daemon._start_bgp(config) is True
    state_dir = str(tmp_path)
    assert calls == [("prepare", state_dir), ("service", state_dir), "start"]
    await daemon._stop_bgp()
    assert calls[3:] == ["stop", ("restore", state_dir)]
    await daemon._stop_bgp()  # again: nothing is put back twice
    assert calls[5:] == ["stop"]


async def test_a_bgp_service_that_cannot_start_has_its_switches_put_back(fake_bgp, tmp_path, monkeypatch):
    calls, config = fake_bgp
    monkeypatch.setattr(FakeBgpService, "fail_start", True)
    daemon = Daemon(config.path)
    assert await daemon._start_bgp(config) is False
    state_dir = str(tmp_path)
    assert calls == [("prepare", state_dir), ("service", state_dir), "start", "stop", ("restore", state_dir)]
