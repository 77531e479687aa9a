"""Names with control characters (from a configuration file or a peer's packet) are shown escaped.

A service name, node name or check reason holding ESC, NUL or a newline must
neither drive the operator's terminal nor forge a line of ``directord status``
or of the daemon's log.
"""

import logging
import socket

from checks.base import CheckResult
from checks.engine import HealthStatus
from director.ipvs import KernelIPVS
from director.model import (
    Config,
    DestAttrs,
    DestKey,
    KernelDest,
    KernelService,
    RealServer,
    ServiceAttrs,
    ServiceKey,
    VirtualService,
)
from director.reconciler import Reconciler
from director.status import build_status, printable, render_status

WEB = ServiceKey(socket.AF_INET, socket.IPPROTO_TCP, "10.0.0.100", 80)
RS1, RS2 = DestKey("10.0.0.11", 80), DestKey("10.0.0.12", 80)
HOSTILE = "web\x1b[2J\x00\nFAKE: all real servers up\u202e"


def control_characters(text: str) -> set[str]:
    return {ch for ch in text if not ch.isprintable()}


def test_printable_escapes_control_and_format_characters_only():
    assert printable("web-1 (prod)") == "web-1 (prod)"
    assert printable("a\x1b[31mb") == "a\\x1b[31mb"
    assert printable("x\x00y\nz\t\x7f") == "x\\x00y\\nz\\t\\x7f"
    assert printable("ok\u202eko") == "ok\\u202eko"
    assert printable("café ünïcode") == "café ünïcode"
    assert printable(7) == "7"


def test_status_text_escapes_hostile_names_and_reasons():
    svc = VirtualService(name=HOSTILE, key=WEB, scheduler="rr", real_servers=(RealServer("10.0.0.11", 80),))
    table = {WEB: KernelService(ServiceAttrs("rr"), {RS1: KernelDest(DestAttrs(1, 1))})}
    result = CheckResult(True, "HTTP 200\x1b]0;pwned\x07", 0.01, 1.0)
    health = {(WEB, RS1): HealthStatus("up", since=1.0, last_result=result)}
    doc = build_status(Config(path="/etc/d\nyaml", services=(svc,)), table, health, now=2.0)
    doc["ha"] = {
        "node": "dir1\x1b[1m",
        "state": "active",
        "groups": [{"resources": ["10.0.0.100\n"], "owner": "dir1\x1b[1m", "holder": "dir2\x00"}],
        "peers": [{"node": "dir2\x00\nHA node evil: active", "status": "active", "last_heard_s": 0.1}],
        "media": [{"medium": "bcast eth0\r", "link": "up", "sent": 1, "received": 1, "send_errors": 0}],
        "ping_nodes": [],
    }
    text = render_status(doc)
    assert control_characters(text) == {"\n"}  # only the line breaks of the table itself
    lines = text.split("\n")
    assert not any(line.startswith(("FAKE", "HA node evil", "yaml")) for line in lines)
    assert "web\\x1b[2J\\x00\\nFAKE: all real servers up\\u202e: tcp 10.0.0.100:80" in text
    assert "HTTP 200\\x1b]0;pwned\\x07" in text
    assert "peer dir2\\x00\\nHA node evil: active: active" in text
    assert "configuration /etc/d\\nyaml" in text


def test_reconciler_logs_escape_service_names(caplog):
    rs1, rs2 = RealServer("10.0.0.11", 80), RealServer("10.0.0.12", 80)
    old = VirtualService(name=HOSTILE, key=WEB, scheduler="rr", real_servers=(rs1, rs2))
    reconciler = Reconciler(KernelIPVS(), lambda service, dest: "up")
    reconciler.set_config(Config(path="a.yaml", services=(old,)))
    with caplog.at_level(logging.INFO, logger="directord.reconciler"):
        new = VirtualService(name=HOSTILE, key=WEB, real_servers=(rs1,))
        reconciler.set_config(Config(path="a.yaml", services=(new,)))
    (record,) = [r for r in caplog.records if "draining" in r.getMessage()]
    message = record.getMessage()
    assert control_characters(message) == set()
    assert "web\\x1b[2J\\x00\\nFAKE" in message and str(RS2) in message
