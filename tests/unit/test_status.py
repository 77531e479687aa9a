"""The status document and its table form."""

import socket
import time

from checks.base import CheckResult
from checks.engine import HealthStatus
from director.events import EventBus, HealthChanged, to_json
from director.model import (
    Config,
    DestAttrs,
    DestKey,
    FallbackServer,
    KernelDest,
    KernelService,
    RealServer,
    ServiceAttrs,
    ServiceKey,
    VirtualService,
)
from director.status import build_status, render_status
from ha.events import PeerChanged

WEB = ServiceKey(socket.AF_INET, socket.IPPROTO_TCP, "10.0.0.100", 80)
OTHER = ServiceKey(socket.AF_INET6, socket.IPPROTO_UDP, "2001:db8::1", 53)
RS1, RS2 = DestKey("10.0.0.11", 80), DestKey("10.0.0.12", 80)


def test_status_merges_configuration_kernel_and_health():
    svc = VirtualService(
        name="web",
        key=WEB,
        scheduler="wrr",
        real_servers=(RealServer("10.0.0.11", 80, weight=3), RealServer("10.0.0.12", 80, weight=2)),
        fallback=FallbackServer("127.0.0.1", 80),
    )
    table = {
        WEB: KernelService(
            ServiceAttrs("wrr", flags=0x1, timeout=300, netmask="255.255.255.0"),
            {RS1: KernelDest(DestAttrs(3, 3), active_conns=4, inactive_conns=9), RS2: KernelDest(DestAttrs(3, 0))},
        ),
        OTHER: KernelService(ServiceAttrs("rr", netmask=128), {}),
    }
    health = {
        (WEB, RS1): HealthStatus("up", since=90.0, last_result=CheckResult(True, "HTTP 200", 0.01, 99.0)),
        (WEB, RS2): HealthStatus("down", since=95.0, last_result=CheckResult(False, "HTTP 503", 0.01, 99.0)),
    }
    doc = build_status(Config(path="/etc/d.yaml", services=(svc,)), table, health, now=100.0)
    web, other = doc["services"]
    assert web["name"] == "web" and web["scheduler"] == "wrr" and web["managed"]
    assert web["persistence"] == {"timeout": 300, "netmask": "255.255.255.0"}
    rs1, rs2, fb = web["real_servers"]
    assert (rs1["configured_weight"], rs1["weight"], rs1["health"], rs1["in_state_s"]) == (3, 3, "up", 10.0)
    assert (rs1["active_conns"], rs1["inactive_conns"], rs1["last_check"]) == (4, 9, "HTTP 200")
    assert (rs2["configured_weight"], rs2["weight"], rs2["health"], rs2["last_check_ok"]) == (2, 0, "down", False)
    assert fb["role"] == "fallback" and fb["weight"] is None
    assert other["managed"] is False and other["key"] == "udp [2001:db8::1]:53"
    text = render_status(doc)
    assert "web: tcp 10.0.0.100:80  scheduler wrr  forwarding dr  persistent 300 s mask 255.255.255.0" in text
    assert "HTTP 503" in text and "(not managed by directord)" in text


def test_kernel_only_status_without_daemon():
    table = {WEB: KernelService(ServiceAttrs("rr"), {RS1: KernelDest(DestAttrs(0, 1), active_conns=2)})}
    doc = build_status(None, table)
    assert doc["daemon"] is False
    (svc,) = doc["services"]
    assert svc["real_servers"][0]["kernel_forwarding"] == "nat"
    assert svc["real_servers"][0]["active_conns"] == 2
    assert render_status(doc).startswith("no directord daemon answering")


def test_sync_daemons_are_shown_when_managed():
    doc = build_status(None, {})
    assert "connection synchronisation" not in render_status(doc)  # not managed: no line
    doc["sync_daemons"] = []
    assert "connection synchronisation: no sync daemon running" in render_status(doc)
    doc["sync_daemons"] = [
        "backup sync daemon (interface eth1, syncid 0)",
        "master sync daemon (interface eth1, syncid 0)",
    ]
    assert (
        "connection synchronisation: backup sync daemon (interface eth1, syncid 0), "
        "master sync daemon (interface eth1, syncid 0)"
    ) in render_status(doc)


def test_recent_events_are_shown_oldest_first_with_their_time_kind_and_line():
    bus = EventBus(clock=lambda: 1_765_000_000.0)
    down = HealthChanged("web 10.0.0.2:80", "web", "10.0.0.2:80", "up", "down", "connection refused")
    bus.publish(down)
    bus.publish(PeerChanged("dir2", "dead", "no keepalive for 0.8 s"))
    doc = build_status(None, {})
    doc["recent_events"] = [to_json(e) for e in bus.recent(10)]
    text = render_status(doc).splitlines()
    at = time.strftime("%H:%M:%S", time.localtime(1_765_000_000.0))
    start = text.index("recent events (directord events --recent N for more):")
    assert text[start + 1 : start + 3] == [
        f"  {at} check.health: {down}",
        f"  {at} ha.peer: peer dir2 is dead (no keepalive for 0.8 s)",
    ]
    del doc["recent_events"]
    assert "recent events" not in render_status(doc)
