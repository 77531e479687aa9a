"""Tests of ha.service: the HA driver with real sockets, addresses and announcements in a namespace.

Root only (except the pure parts). Each test builds its own namespaces
``<PREFIX>-a`` (the director under test, ``a0`` 10.215.0.1/24 brd +) and
``<PREFIX>-b`` (the segment's other side, ``b0`` 10.215.0.2/24 brd +) joined by
a veth pair. The service runs on an event loop in a thread inside A. B plays
an absent peer: a UDP socket bound there reads what A broadcasts, and an
``AF_PACKET`` socket there sees A's gratuitous ARP. Heartbeat packets are decoded
with ha.wire and the authkeys written by the test, the ARP frames with scapy.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from pathlib import Path

import pytest
from nspair import broadcast_pair
from scapy.layers.l2 import ARP, Ether

from director.lab import netns as N
from director.status import render_status
from ha.auth import parse_authkeys
from ha.model import HAConfig, Medium, Resource, ResourceGroup, Timers
from ha.service import HAService, HAStartError, read_loadavg
from ha.wire import decode_packet

PREFIX = f"hsv{os.getpid()}"
A_ADDR, B_ADDR = "10.215.0.1", "10.215.0.2"
VIP = "10.215.0.100"
KEYTEXT = "auth 1\n1 sha1 service-test-key\n"
FAST = Timers(keepalive=0.1, warntime=0.3, deadtime=0.5, initdead=0.5)
MEDIA = (Medium("bcast", "a0"),)  # the default media of config()


@pytest.fixture
def pair():
    with broadcast_pair(PREFIX, 215) as names:
        yield names


def authkeys(tmp_path: Path, mode: int = 0o600) -> str:
    path = tmp_path / "authkeys"
    path.write_text(KEYTEXT)
    path.chmod(mode)
    return str(path)


def config(tmp_path: Path, *, media=MEDIA, groups=None, mode=0o600, **kw) -> HAConfig:
    if groups is None:
        groups = (ResourceGroup("dir1", (Resource(VIP, 32, "a0"),)),)
    return HAConfig(
        node="dir1",
        nodes=("dir1", "dir2"),
        media=media,
        authkeys=authkeys(tmp_path, mode),
        timers=FAST,
        groups=groups,
        state_dir=str(tmp_path / "state"),
        announce_repeats=0,
        line=3,
        **kw,
    )


def addresses(ns: str) -> list[str]:
    return N.list_addresses(ns, "a0")


def in_ns(ns: str, coro_fn):
    return N.call_in_netns(ns, lambda: asyncio.run(coro_fn()))


async def wait_for(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def read_heartbeats(sock: socket.socket, keys) -> list:
    out = []
    sock.setblocking(False)
    while True:
        try:
            data, _src = sock.recvfrom(65535)
        except BlockingIOError:
            return out
        out.append(decode_packet(data, keys))


# --- pure ----------------------------------------------------------------------------------


def test_read_loadavg(tmp_path: Path):
    f = tmp_path / "loadavg"
    f.write_text("0.50 0.40 0.30 2/345 6789\n")
    assert read_loadavg(str(f)) == "0.50 0.40 0.30 2/345 6789"
    assert read_loadavg(str(tmp_path / "missing")) == "0.00 0.00 0.00 1/1 1"
    assert len(read_loadavg().split()) == 5


def test_render_status_shows_the_ha_entry():
    doc = {
        "daemon": True,
        "config": "/etc/directord/directord.yaml",
        "services": [],
        "ha": {
            "node": "dir1",
            "state": "active",
            "peers": [{"node": "dir2", "status": "dead"}],
            "groups": [{"owner": "dir1", "resources": ["10.0.0.100/32/eth0"], "holder": "dir1"}],
            "connectivity": {"link": "up", "ping_up": 0, "ping_total": 1},
            "media": [{"medium": "bcast eth1", "link": "down", "sent": 7, "received": 0, "send_errors": 2}],
            "ping_nodes": [{"address": "10.0.0.1", "reachable": False, "sent": 9, "answered": 4}],
        },
    }
    text = render_status(doc)
    assert "HA node dir1: active (heartbeat status active), connectivity link up, ping nodes 0/1" in text
    assert "peer dir2: dead, last heard never, connectivity unknown" in text
    assert "group 10.0.0.100/32/eth0 (owner dir1): held by dir1" in text
    assert "medium bcast eth1: link down, sent 7, received 0, send errors 2" in text
    assert "ping node 10.0.0.1: UNREACHABLE (4/9 answered)" in text
    assert "rejected from" not in text
    doc["ha"]["rejected_sources"] = [
        {"address": f"10.0.0.{i}", "packets": 100 - i, "bad_auth": 100 - i, "last_s": 0.5} for i in range(7)
    ]
    doc["ha"]["rejected_sources"][0]["malformed"] = 3
    text = render_status(doc)
    assert "rejected from 10.0.0.0: 100 datagrams (bad_auth 100, malformed 3), last 0.5 s ago" in text
    assert "rejected from 10.0.0.4: 96 datagrams" in text and "10.0.0.5" not in text
    assert "rejected from 2 more source(s): see --json" in text
    doc["ha"]["groups"][0]["holder"] = "dir2"
    assert "HA node dir1: standby" in render_status(doc)


# --- in namespaces -------------------------------------------------------------------------


def test_alone_it_takes_its_vip_announces_and_gives_it_back_on_stop(pair, tmp_path: Path):
    a, b = pair
    cfg = config(tmp_path)
    keys = parse_authkeys(KEYTEXT.encode(), "k")
    listener = N.socket_in_netns(b, socket.AF_INET, socket.SOCK_DGRAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("", 694))
    capture = N.socket_in_netns(b, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
    capture.bind(("b0", 0))
    capture.settimeout(0.2)
    a_mac = N.link_mac(a, "a0")
    changes: list = []
    seen: dict = {}
    events: list[str] = []

    def role_change(group, held) -> None:
        changes.append(held)
        events.append(f"role {held}")

    async def go() -> None:
        svc = HAService(cfg, config_file="/etc/d.yaml", on_role_change=role_change)
        first_round = svc.announcer._round

        def traced_round(*args, **kwargs):
            events.append("announce round")
            return first_round(*args, **kwargs)

        svc.announcer._round = traced_round
        assert svc.snapshot()["state"] == "starting"
        await svc.start()
        try:
            await wait_for(lambda: VIP in {a.split("/")[0] for a in addresses(a)}, 10, "the VIP")
            await wait_for(lambda: changes == [True], 5, "the role change")
            # the burst's second round follows the slave lookup (a netlink dump): not cancelled by the stop
            await wait_for(lambda: events.count("announce round") >= 2, 5, "the second round")
            seen["snapshot"] = svc.snapshot()
        finally:
            t0 = time.monotonic()
            await svc.stop()
            seen["stop_s"] = time.monotonic() - t0
        seen["after"] = addresses(a)
        await svc.stop()  # idempotent

    try:
        in_ns(a, go)
        packets = read_heartbeats(listener, keys)
        frames = []
        while True:
            try:
                frames.append(capture.recv(2048))
            except (TimeoutError, BlockingIOError):
                break
    finally:
        listener.close()
        capture.close()

    snap = seen["snapshot"]
    assert snap["node"] == "dir1" and snap["state"] == "active"
    assert snap["peers"] == [{"node": "dir2", "status": "dead", "last_heard_s": None}]
    assert snap["groups"][0]["held"] is True and snap["groups"][0]["holder"] == "dir1"
    assert snap["media"][0]["destination"] == "10.215.0.255:694"
    assert snap["counters"]["sent"] >= 3
    assert VIP not in {x.split("/")[0] for x in seen["after"]}
    assert changes == [True, False]
    # the first gratuitous ARP round leaves before the node's bookkeeping after the acquisition;
    # the burst's second round follows (announce_repeats 0, no refresh), no round twice
    assert events == ["announce round", "role True", "announce round", "role False"], events
    assert seen["stop_s"] < 10
    types = [m.get("t") for m in packets]
    assert types[:3] == ["status"] * 3 and [m.get("st") for m in packets[:3]] == ["init", "up", "up"]
    assert all(m.get("src") == "dir1" for m in packets)
    assert "shutdone" in types
    # the gratuitous ARP pair for the VIP from A's MAC (SPA = TPA = VIP)
    garps = []
    for f in frames:
        pkt = Ether(f)
        if ARP in pkt and pkt[ARP].psrc == pkt[ARP].pdst == VIP:
            garps.append((pkt[ARP].op, pkt[ARP].hwsrc))
    assert (1, a_mac) in garps and (2, a_mac) in garps


def test_refuses_to_start_when_the_environment_does_not_fit(pair, tmp_path: Path):
    a, _b = pair
    cfg = config(tmp_path, media=(Medium("bcast", "c0"),))

    async def go() -> str:
        svc = HAService(cfg, config_file="/etc/directord/directord.yaml")
        with pytest.raises(HAStartError) as err:
            await svc.start()
        await svc.stop()
        return str(err.value)

    message = in_ns(a, go)
    assert "/etc/directord/directord.yaml:3: ha.media: bcast c0: " in message
    assert "broadcast address" in message


def test_refuses_a_world_readable_authkeys_file(pair, tmp_path: Path):
    a, _b = pair
    cfg = config(tmp_path, mode=0o644)

    async def go() -> str:
        svc = HAService(cfg, config_file="/etc/d.yaml")
        with pytest.raises(HAStartError) as err:
            await svc.start()
        return str(err.value)

    message = in_ns(a, go)
    assert message.startswith("/etc/d.yaml: ha.authkeys: ") and "bad permissions 644" in message


def test_a_failed_acquisition_is_reported_and_the_service_keeps_running(pair, tmp_path: Path):
    a, _b = pair
    # a second address on an interface that does not exist: add_vip fails after the first succeeded
    groups = (ResourceGroup("dir1", (Resource(VIP, 32, "a0"), Resource("10.215.0.101", 32, "nope0"))),)
    cfg = config(tmp_path, groups=groups)
    seen: dict = {}

    async def go() -> None:
        svc = HAService(cfg, check_environment=False)
        await svc.start()
        try:
            await wait_for(lambda: svc.node.counters["acquire_failures"] >= 1, 10, "a failed acquisition")
            await asyncio.sleep(0.3)
            seen["snapshot"] = svc.snapshot()
            seen["addresses"] = addresses(a)
            seen["ticking"] = svc._ticker is not None and not svc._ticker.done()
        finally:
            await svc.stop()

    in_ns(a, go)
    snap = seen["snapshot"]
    assert snap["groups"][0]["held"] is False and snap["state"] == "active"
    assert VIP not in {x.split("/")[0] for x in seen["addresses"]}  # the partial acquisition was undone
    assert seen["ticking"]


def test_reload_compares_the_ha_section_without_its_line(tmp_path: Path):
    from director.daemon import _same_ha
    from director.model import Config

    cfg = config(tmp_path)
    moved = HAConfig(**{**cfg.__dict__, "line": 40})
    changed = HAConfig(**{**cfg.__dict__, "timers": Timers(keepalive=0.2, warntime=0.5, deadtime=1.0, initdead=3.0)})
    assert _same_ha(Config(path="a", ha=cfg), Config(path="a", ha=moved))
    assert not _same_ha(Config(path="a", ha=cfg), Config(path="a", ha=changed))
    assert not _same_ha(Config(path="a", ha=cfg), Config(path="a"))
    assert _same_ha(Config(path="a"), Config(path="a"))


def test_a_stalled_event_loop_is_reported_as_a_timers_late_event(pair, tmp_path: Path):
    a, _b = pair
    cfg = config(tmp_path)
    events: list = []

    async def go() -> None:
        svc = HAService(cfg, check_environment=False, on_event=events.append)
        await svc.start()
        try:
            await asyncio.sleep(0.3)
            time.sleep(1.5)  # the whole process stops, as a stall does: no timer can run
            await wait_for(lambda: any(e.kind == "ha.timers_late" for e in events), 5, "a timers-late event")
        finally:
            await svc.stop()

    in_ns(a, go)
    (late,) = [e for e in events if e.kind == "ha.timers_late"]
    assert 1.0 < late.late < 3.0
    assert str(late).startswith(f"timers ran {late.late:.2f} s late")
