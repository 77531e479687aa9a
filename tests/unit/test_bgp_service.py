"""`ha.bgp.service.BgpService` with a real BIRD: the director's service runs in one network
namespace (through ``bgp_service_driver.py``, spoken to by ``bgp_driver_client.py``), a plain
BIRD plays the router in another, and what the router receives is read from it (``show route
all``; the pair: ``routerbird.py``).

Shows: nothing is announced before the services are healthy; a VIP is announced with its
communities and MED when its services have min_healthy real servers in service and withdrawn
at once when not; a drain sends GRACEFUL_SHUTDOWN (65535,0), then withdraws after the wait and
is kept across a restart; undrain announces again; a second neighbour that never answers holds
up nothing; a BIRD killed is restarted and announces
again; a stop sends GRACEFUL_SHUTDOWN, withdraws, ends the session and removes the VIPs from
``lo`` and the routes from the kernel table.

Root only; skipped without /usr/sbin/bird (Debian package bird2)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time

import pytest
from bgp_driver_client import Driver
from routerbird import director_address, needs_bird, router_address, router_pair

from ha.bgp.birdctl import bird_command

PREFIX = f"bsv{os.getpid()}"
NET = 232
DIRECTOR = director_address(NET)
ROUTER = router_address(NET)
VIP_A, VIP_B = "192.0.2.10", "192.0.2.11"
UNREACHABLE = f"10.{NET}.0.99"
GSHUT = "(65535,0)"

pytestmark = needs_bird


def router_view(ctl: str) -> dict[str, str]:
    """The router's routes: VIP -> its BGP.community line ("" when it has none)."""
    reply = asyncio.run(bird_command(ctl, "show route all"))
    communities: dict[str, str] = {}
    meds: dict[str, str] = {}
    current = None
    for line in reply.lines:
        text = line.text.strip()
        if line.code == 1007 and "/32" in text:
            current = text.split("/")[0]
            communities[current] = ""
        elif current and text.startswith("BGP.community:"):
            communities[current] = text.split(":", 1)[1].strip()
        elif current and text.startswith("BGP.med:"):
            meds[current] = f" med {text.split(':', 1)[1].strip()}"
    return {k: (v + meds.get(k, "")).strip() for k, v in communities.items()}


def wait_view(ctl: str, want, timeout: float = 8.0, what: str = "") -> dict[str, str]:
    deadline = time.monotonic() + timeout
    view: dict[str, str] = {}
    while time.monotonic() < deadline:
        view = router_view(ctl)
        if want(view):
            return view
        time.sleep(0.05)
    raise AssertionError(f"{what}: the router has {view}")


def ns_output(ns: str, *args: str) -> str:
    return subprocess.run(["ip", "-n", ns, *args], capture_output=True, text=True, check=True, timeout=10).stdout


@pytest.fixture
def lab(tmp_path):
    """(director namespace, router's control socket, the service's JSON config, state dir)."""
    with router_pair(PREFIX, NET, tmp_path) as (a, _, ctl):
        subprocess.run(["ip", "-n", a, "link", "set", "lo", "up"], check=True)
        config = {
            "local_as": 65001,
            "router_id": DIRECTOR,
            "neighbors": [
                {"address": ROUTER, "remote_as": 65000, "name": "r1", "bfd": False},
                # a second router that never answers: it must not hold up the first
                {"address": UNREACHABLE, "remote_as": 65000, "name": "r2", "bfd": False},
            ],
            "vips": [
                {"address": VIP_A, "communities": [[65001, 100]], "med": 50},
                {"address": VIP_B, "min_healthy": 2},
            ],
            "graceful_shutdown_wait": 1.0,
            "run_dir": str(tmp_path / "run"),
        }
        state = tmp_path / "state"
        state.mkdir()
        yield a, ctl, config, state


def test_announcements_follow_health_drain_and_stop(lab):
    ns, ctl, config, state = lab
    d = Driver(ns, config, state)
    try:
        # the VIPs are local addresses on lo, labelled as directord's
        addrs = ns_output(ns, "-4", "addr", "show", "dev", "lo")
        assert f"inet {VIP_A}/32 scope global lo:dd" in addrs and f"inet {VIP_B}/32" in addrs
        # nothing before health is known
        time.sleep(2.0)  # long enough for the session (connect delay 1 s)
        assert router_view(ctl) == {}
        # A healthy (1 of 1), B not (1 of 3, needs 2)
        d.send({"health": {VIP_A: [1, 1, 1], VIP_B: [1, 3, 1]}})
        view = wait_view(ctl, lambda v: VIP_A in v, what="A announced")
        assert view == {VIP_A: "(65001,100) med 50"}
        status = d.send({"do": "status"}, "status")["status"]
        sessions = {x["neighbor"]: x["state"] for x in status["sessions"]}
        assert sessions["r1"] == "Established" and sessions["r2"] in ("Active", "Connect", "Idle")
        reasons = {v["vip"]: (v["route"], v["reason"]) for v in status["vips"]}
        assert reasons[VIP_B] == ("withdrawn", "virtual service web: 1/3 real servers in service, needs 2")
        # B healthy; A's service not programmed -> A withdrawn at once
        d.send({"health": {VIP_A: [1, 1, 0], VIP_B: [2, 3, 1]}})
        view = wait_view(ctl, lambda v: VIP_B in v and VIP_A not in v, what="B in, A out")
        assert view == {VIP_B: ""}
        table = ns_output(ns, "route", "show", "table", "221").split()
        assert table == [VIP_B, "dev", "lo", "proto", "221", "scope", "link"]
        # drain: GRACEFUL_SHUTDOWN first, withdrawn after the 1 s wait, kept in the state dir
        d.send({"health": {VIP_A: [1, 1, 1], VIP_B: [2, 3, 1]}})
        wait_view(ctl, lambda v: set(v) == {VIP_A, VIP_B}, what="both announced")
        drained_at = time.monotonic()
        d.send({"do": "drain"})
        view = wait_view(ctl, lambda v: v.get(VIP_B) == GSHUT, timeout=0.9, what="GRACEFUL_SHUTDOWN")
        assert view[VIP_A] == f"(65001,100) {GSHUT} med 50"
        wait_view(ctl, lambda v: v == {}, what="withdrawn after the wait")
        assert time.monotonic() - drained_at >= 0.9
        assert json.loads((state / "bgp-drain.json").read_text()) == {"drained": True}
        d.send({"do": "stop"})
    finally:
        d.close()
    # a restart stays drained until undrain
    d = Driver(ns, config, state)
    try:
        d.send({"health": {VIP_A: [1, 1, 1], VIP_B: [3, 3, 1]}})
        time.sleep(2.0)
        assert router_view(ctl) == {}
        assert d.send({"do": "status"}, "status")["status"]["drained"] is True
        d.send({"do": "undrain"})
        wait_view(ctl, lambda v: set(v) == {VIP_A, VIP_B}, what="announced after undrain")
        assert not (state / "bgp-drain.json").exists()
        # BIRD killed: reported, restarted, announcing again
        d.send({"do": "kill_bird"})
        wait_view(ctl, lambda v: v == {}, what="the router lost the dead BIRD's routes")
        wait_view(ctl, lambda v: set(v) == {VIP_A, VIP_B}, timeout=12, what="announced again after the restart")
        d.send({"do": "status"}, "status")  # reads the events written so far
        kinds = [(e["event"], e.get("state")) for e in d.events if e["event"] == "bgp.speaker"]
        assert ("bgp.speaker", "exited") in kinds and kinds[-1] == ("bgp.speaker", "running")
        # stop: GRACEFUL_SHUTDOWN, withdraw, then the session ends and lo and table 221 are clean
        d.write({"do": "stop"})
        wait_view(ctl, lambda v: v.get(VIP_B) == GSHUT, timeout=0.9, what="GRACEFUL_SHUTDOWN at stop")
        d.expect("ok", 10)
        assert router_view(ctl) == {}
        assert VIP_A not in ns_output(ns, "addr", "show", "dev", "lo")
        assert ns_output(ns, "route", "show", "table", "221").strip() == ""
        routes = [(e["vip"], e["route"]) for e in d.routes()]
        assert routes[-4:] == [
            (VIP_A, "graceful_shutdown"),
            (VIP_B, "graceful_shutdown"),
            (VIP_A, "withdrawn"),
            (VIP_B, "withdrawn"),
        ]
    finally:
        d.close()
