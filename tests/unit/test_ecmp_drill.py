"""The routed lab's drills: verdict and report (pure), the long-lived client's answer reader
and the lab HTTP server's persistent connections (loopback)."""

from __future__ import annotations

import socket
import threading

import pytest

from director.lab.ecmp import director_config, plan_ecmp
from director.lab.ecmp_drill import _Closed, _read_answer
from director.lab.ecmp_scenarios import (
    EcmpRecord,
    LongLived,
    director_log_events,
    evaluate,
    parse_ipvsadm_connections,
    render,
    summary,
)
from director.lab.httpd import ServerState, build_response, make_server, wants_keep_alive
from director.lab.scenarios import Sample

DIRS = ("dir1", "dir2", "dir3")


def _record(scenario: str, scheduler: str = "mh", victim: str = "dir1", **kw) -> EcmpRecord:
    rec = EcmpRecord(scenario, scheduler, DIRS, victim, fault_t=2.0, settled=True, **kw)
    rec.next_hops = [(0.0, DIRS), (2.4, ("dir2", "dir3"))]
    rec.samples = [Sample(t / 10, t / 10 + 0.01, True, "rs1") for t in range(60)]
    rec.long_lived = [
        LongLived(i, port=40000 + i, answers=50, real_server="rs2", director_before=d) for i, d in enumerate(DIRS * 2)
    ]
    return rec


def _check(checks, prefix):
    return next(c for c in checks if c.name.startswith(prefix))


def test_fail_director_ok_when_nothing_lost_and_failures_end_with_the_move():
    rec = _record("fail-director")
    rec.samples[21] = Sample(2.1, 2.6, False, "TimeoutError")
    checks = evaluate(rec)
    assert all(c.ok for c in checks), checks
    report = summary(rec, checks)
    assert report["ok"] and report["figures"]["failed"] == 1 and report["figures"]["change_s"] == pytest.approx(0.4)
    assert report["figures"]["long_lived_via_victim"] == 2
    assert "drill OK" in render(report)


def test_fail_director_fails_on_a_late_failure_and_on_a_lost_connection_with_mh():
    rec = _record("fail-director")
    rec.samples[50] = Sample(5.0, 5.5, False, "ConnectionRefusedError")
    rec.long_lived[0].lost, rec.long_lived[0].lost_t = "reset", 2.5
    checks = evaluate(rec)
    assert not _check(checks, "new connections fail only").ok
    assert not _check(checks, "long-lived connections").ok
    report = summary(rec, checks)
    assert not report["ok"] and report["figures"]["lost_reasons"] == {"reset": 1}
    assert "DRILL FAILED" in render(report)


def test_wlc_losses_are_printed_but_do_not_fail_the_drill():
    rec = _record("fail-director", scheduler="wlc")
    rec.long_lived[1].lost = "wrong real server (rs3)"
    checks = evaluate(rec)
    ll = _check(checks, "long-lived connections")
    assert not ll.ok and ll.info
    report = summary(rec, checks)
    assert report["ok"] and report["figures"]["lost_reasons"] == {"wrong real server": 1}
    assert "[note] long-lived connections: 1 of 6 lost" in render(report)


def test_drain_fails_on_any_failed_request_and_needs_the_next_hop_change():
    rec = _record("drain-director", victim="dir1")
    assert all(c.ok for c in evaluate(rec))
    rec.samples[40] = Sample(4.0, 4.5, False, "TimeoutError")
    assert not _check(evaluate(rec), "failed requests").ok
    rec.next_hops = [(0.0, DIRS)]
    assert not _check(evaluate(rec), "dir1 left").ok


def test_add_director_wants_the_victim_to_join():
    rec = _record("add-director", victim="dir3")
    rec.next_hops = [(0.0, ("dir1", "dir2")), (3.0, DIRS)]
    checks = evaluate(rec)
    assert _check(checks, "dir3 joined").ok and summary(rec, checks)["ok"]


def test_realserver_down_everywhere():
    rec = _record("realserver-down-everywhere", victim="rs2")
    rec.quiesced_t, rec.weights = 3.0, {"dir1": 0, "dir2": 0, "dir3": 0}
    rec.long_lived[0].real_server = "rs1"
    for c in rec.long_lived[1:]:
        c.lost = "reset"
    rec.samples[25] = Sample(2.5, 2.5, False, "ConnectionRefusedError")
    checks = evaluate(rec)
    assert all(c.ok for c in checks), checks
    rec.weights["dir2"] = 1
    assert not _check(evaluate(rec), "weight 0 everywhere").ok
    rec.long_lived[0].lost = "timeout"
    assert not _check(evaluate(rec), "long-lived on the other").ok


def test_runner_problems_and_unsettled_fail():
    rec = _record("drain-director")
    rec.problems.append("bgp drain exited 1")
    rec.settled = False
    checks = evaluate(rec)
    assert not _check(checks, "runner").ok and not _check(checks, "settled").ok


def test_parse_ipvsadm_connections():
    text = (
        "IPVS connection entries\n"
        "pro expire state       source             virtual            destination\n"
        "TCP 14:59  ESTABLISHED 10.77.3.2:45678    10.77.100.1:80     10.77.0.21:80\n"
        "TCP 01:50  FIN_WAIT    10.77.3.2:45679    10.77.100.1:80     10.77.0.22:80\n"
        "garbage\n"
    )
    assert parse_ipvsadm_connections(text) == [
        ("ESTABLISHED", 899, "10.77.3.2:45678", "10.77.100.1:80", "10.77.0.21:80"),
        ("FIN_WAIT", 110, "10.77.3.2:45679", "10.77.100.1:80", "10.77.0.22:80"),
    ]


def test_director_config_scheduler():
    plan = plan_ecmp("t", directors=2)
    assert "mh-port" in director_config(plan, "dir1", state_dir="/s", bgp_run_dir="/b")
    wlc = director_config(plan, "dir1", state_dir="/s", bgp_run_dir="/b", scheduler="wlc")
    assert "wlc" in wlc and "mh-port" not in wlc
    with pytest.raises(ValueError):
        director_config(plan, "dir1", state_dir="/s", bgp_run_dir="/b", scheduler="rr")


def test_keep_alive_request_heads():
    assert wants_keep_alive(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert not wants_keep_alive(b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n")
    assert not wants_keep_alive(b"GET / HTTP/1.0\r\n\r\n")
    state = ServerState(name="rs1")
    assert build_response(state, "GET", "/", keep_alive=True).startswith(b"HTTP/1.1 200 OK")
    assert b"Connection: close" in build_response(state, "GET", "/")


def test_persistent_connection_on_loopback():
    server = make_server("127.0.0.1", 0, ServerState(name="rs7"))
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=5) as s:
            buf = b""
            for _ in range(3):
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                body, buf = _read_answer(s, buf)
                assert body == "rs7"
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert _read_answer(s, buf)[0] == "rs7"
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            with pytest.raises(OSError):  # _Closed, or a reset of the closed socket
                _read_answer(s, b"")
    finally:
        server.shutdown()
        server.server_close()
    assert issubclass(_Closed, OSError)


def test_real_server_order_is_an_info_check():
    rec = _record("fail-director")
    rec.orders = {"before": {"dir1": ["a:80", "b:80"], "dir2": ["b:80", "a:80"]}, "after": {"dir2": ["b:80"]}}
    checks = evaluate(rec)
    before, after = _check(checks, "real server order before"), _check(checks, "real server order after")
    assert not before.ok and before.info and after.ok
    assert "dir2: b:80 a:80" in before.detail
    assert summary(rec, checks)["ok"]


def test_director_log_events_keep_bgp_lines():
    lines = [
        '{"at": 1010.5, "level": "INFO", "message": "bgp: session with router Established"}',
        '{"at": 1011.0, "level": "INFO", "message": "reconcile: nothing to do"}',
        "Traceback (most recent call last):",
    ]
    evs = director_log_events(lines, "dir3", 1000.0)
    assert [(e.t, e.source, e.kind) for e in evs] == [(10.5, "dir3", "log")]


def test_director_log_events_keep_health_changes_of_any_wording():
    # a health change on any director goes into the timeline: one that quiesces a real server
    # alone sends the flows moved to it to another real server (mh-fallback)
    lines = [
        '{"at": 1012.25, "level": "INFO", "kind": "check.health", "message": "rs 10.77.0.21:80 of web down: timeout"}',
        '{"at": 1012.5, "level": "INFO", "kind": "check.result", "message": "rs 10.77.0.22:80 of web ok"}',
    ]
    evs = director_log_events(lines, "dir1", 1000.0)
    assert [(e.t, e.source, e.text) for e in evs] == [(12.25, "dir1", "rs 10.77.0.21:80 of web down: timeout")]


def test_next_hops_of_ip_monitor_lines(tmp_path):
    from director.lab.ecmp_drill import NextHopSampler
    from director.lab.ecmp_site import EcmpLab, EcmpOptions

    sampler = NextHopSampler(EcmpLab(EcmpOptions(prefix="tnh"), tmp_path), 0.0)
    multipath = (
        "10.77.100.1 proto bird metric 32 \\\tnexthop via 10.77.0.11 dev eth1 weight 1 "
        "\\\tnexthop via 10.77.0.10 dev eth1 weight 1 "
    )
    assert sampler.hops_of(multipath) == ("dir1", "dir2")
    assert sampler.hops_of("10.77.100.1 via 10.77.0.12 dev eth1 proto bird metric 32") == ("dir3",)
    assert sampler.hops_of("Deleted 10.77.100.1 via 10.77.0.12 dev eth1 proto bird metric 32") == ()
    assert sampler.hops_of("10.77.100.10 via 10.77.0.12 dev eth1 proto bird") is None
    assert sampler.hops_of("local 10.77.100.1 dev lo table local") is None
    assert sampler.hops_of("") is None


def test_an_entry_forwarding_a_long_lived_connection_elsewhere_is_named():
    rec = _record("drain-director", victim="dir3")
    for c in rec.long_lived:
        c.director_after, c.entry_after = "dir2", "rs2"
    rec.long_lived[2].entry_after = "rs3"
    rec.long_lived[2].lost = "reset"
    checks = evaluate(rec)
    entries = _check(checks, "long-lived entries at the end")
    assert not entries.ok and entries.info
    assert entries.detail == "#2 (port 40002): answered by rs2, the entry on dir2 forwards to rs3"
    text = render(summary(rec, checks))
    assert "  2   40002  dir3    dir2    rs2          rs3          50" in text
    rec.long_lived[2].entry_after = "rs2"
    assert _check(evaluate(rec), "long-lived entries at the end").ok


def test_failures_before_the_fault_are_the_labs_not_the_drains():
    # a BFD flap as the clients start: three requests fail before the drain
    rec = _record("drain-director", victim="dir3")
    rec.next_hops = [(0.0, DIRS), (2.4, ("dir1", "dir2"))]
    for i in (5, 6, 7):
        rec.samples[i] = Sample(i / 10, i / 10 + 0.5, False, "TimeoutError")
    checks = evaluate(rec)
    assert _check(checks, "failed requests").ok
    early = _check(checks, "failed before the fault")
    assert not early.ok and early.info and early.detail.startswith("3 ended before the fault (first at 0.50 s")
    report = summary(rec, checks)
    assert report["ok"] and report["figures"]["failed"] == 0 and report["figures"]["failed_before_fault"] == 3
    assert "0 failed (-) and 3 before the fault; " in render(report)
    # one that ends after the fault is the drill's
    rec.samples[19] = Sample(1.9, 2.1, False, "TimeoutError")
    assert not _check(evaluate(rec), "failed requests").ok
