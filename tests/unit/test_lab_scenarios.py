"""Host tests of the drill's pure parts: scenario table, log parsing, ARP frames, gap,
timeline, expectation checks, report rendering, and the pair's generated configuration."""

from __future__ import annotations

import argparse
import json

import pytest

from director.config import load_config
from director.lab import scenarios as S
from director.lab import verdict as V
from director.lab.pair import pair_config
from director.lab.scenarios import DrillRecord, Event, HolderSample, Sample
from director.lab.topology import plan_lab
from ha.announce import garp_pair

VIP = "10.77.0.100"


def ok(start: float, who: str = "rs1", dur: float = 0.01) -> Sample:
    return Sample(start, start + dur, True, who)


def bad(start: float, why: str = "TimeoutError", dur: float = 0.5) -> Sample:
    return Sample(start, start + dur, False, why)


def holders(*spec: tuple[float, tuple[str, ...]]) -> list[HolderSample]:
    return [HolderSample(t, h) for t, h in spec]


# --- the scenario table ---------------------------------------------------------------------


def test_every_scenario_is_declared_with_known_actions_and_conditions():
    from director.lab.drill import ACTIONS, CONDITION_TEXT, CONDITIONS

    assert set(S.SCENARIOS) >= {
        "fail-active",
        "crash-daemon",
        "stop-active",
        "cut-heartbeat",
        "kill-realserver",
        "flap-realserver",
        "restart-director",
    }
    for scn in S.SCENARIOS.values():
        assert scn.steps and scn.steps[0][0] not in ("wait", "sleep"), scn.name  # the first step is the fault
        for action, _arg in scn.steps:
            assert action in ACTIONS or action in ("wait", "sleep"), (scn.name, action)
        for action, arg in scn.steps:
            if action == "wait":
                assert arg in CONDITIONS
        assert scn.until in CONDITIONS and scn.until in CONDITION_TEXT
        assert scn.expect.final_holder in S.DIRECTORS
        assert (scn.victim is not None) == (scn.expect.victim_out or scn.expect.victim_back), scn.name


def test_scenario_lookup_accepts_aliases():
    assert S.scenario("kill-active") is S.SCENARIOS["fail-active"]
    assert S.scenario("restart-director").expect.resets_only_at_moves
    assert "kill-active" in S.scenario_names() and "kill-active" not in S.scenario_names(with_aliases=False)
    with pytest.raises(KeyError, match="fail-active"):
        S.scenario("reboot-everything")


# --- log lines ----------------------------------------------------------------------------------


def ev(kind, at=1_714_557_600.0, **fields):
    """A JSON log line of an event, as `director.events.JSONFormatter` writes it."""
    return json.dumps(
        {
            "at": at,
            "level": "INFO",
            "logger": "directord.ha",
            "message": fields.pop("message", "m"),
            "seq": 1,
            "kind": kind,
            **fields,
        }
    )


def test_parse_log_line_reads_json_records_only():
    line = ev("ha.peer", node="dir1", status="dead", reason="deadtime")
    assert S.parse_log_line(line + "\n")["node"] == "dir1"
    for other in (
        "Traceback (most recent call last):",
        "2024-05-01 10:00:00,123 INFO directord.checks: x",
        '{"at": "soon"}',
        "{cut",
        "[1, 2]",
        "{" + "x" * 70_000,
    ):
        assert S.parse_log_line(other) is None


@pytest.mark.parametrize(
    "kind, fields, timeline",
    [
        ("ha.peer", {"node": "dir1", "status": "dead"}, "detect"),
        ("ha.peer", {"node": "dir1", "status": "active"}, None),
        ("ha.acquiring", {"group": "dir1: 10.77.0.100/32/eth0"}, "acquire"),
        ("ha.releasing", {"group": "dir1: 10.77.0.100/32/eth0"}, "release"),
        ("ha.address_added", {"address": "10.77.0.100/32/eth0"}, "vip-added"),
        ("ha.address_removed", {"address": "10.77.0.100/32/bond0", "error": None}, "vip-removed"),
        ("ha.address_removed", {"address": "10.77.0.100/32/eth0", "error": "EPERM"}, None),
        ("ha.address_added", {"address": "10.77.1.254/24/eth2"}, None),
        ("ha.address_added", {"address": "10.77.0.1000/32/eth0"}, None),
        ("ipvs.applied", {"op": "set_dest", "weight": 0}, "ipvs"),
        ("check.health", {"new": "down"}, "rs-down"),
        ("check.health", {"new": "up"}, "rs-up"),
        ("config.reloaded", {}, None),
        (None, {}, None),
    ],
)
def test_classify_event_goes_by_kind_and_fields(kind, fields, timeline):
    record = {"at": 0.0, "message": "reworded at will", **fields}
    if kind is not None:
        record["kind"] = kind
    assert S.classify_event(record, VIP) == timeline


def test_log_events_are_relative_to_t0_and_filtered():
    t0 = 1_714_557_600.0
    lines = [
        ev("ha.acquiring", at=t0 - 1, group="dir1: x", reason="start", message="acquiring dir1: x (start)"),
        ev("ha.peer", at=t0 + 2.5, node="dir1", status="dead", reason="x", message="peer dir1 is dead (x)"),
        json.dumps({"at": t0 + 2.6, "level": "INFO", "logger": "directord.ha", "message": "heartbeat medium open"}),
        "garbage",
    ]
    evs = S.log_events(lines, "dir2", vip=VIP, t0_epoch=t0, since=0.0)
    assert evs == [Event(2.5, "dir2", "detect", "peer dir1 is dead (x)")]
    assert len(S.log_events(lines, "dir2", vip=VIP, t0_epoch=t0)) == 2


# --- ARP ------------------------------------------------------------------------------------------


def test_gratuitous_arp_frames_become_announce_events():
    mac = "02:00:00:00:00:0b"
    request, reply = garp_pair(mac, VIP)
    assert S.parse_arp(request) == (1, mac, VIP, "00:00:00:00:00:00", VIP)
    assert S.parse_arp(reply) == (2, mac, VIP, mac, VIP)
    ev = S.announce_event(3.25, reply, VIP, {mac: "dir2"})
    assert ev == Event(3.25, "client", "announce", f"gratuitous ARP reply {VIP} is-at {mac} (dir2)")
    ev = S.announce_event(1.0004, request, VIP, {})  # an unknown sender is named by its MAC
    assert ev == Event(1.0, "client", "announce", f"gratuitous ARP request {VIP} is-at {mac} ({mac})")
    other = S.announce_event(1.0, garp_pair(mac, "10.77.0.10")[0], VIP, {})
    assert other is None


def test_parse_arp_refuses_what_is_not_ipv4_over_ethernet_arp():
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import ARP, Ether

    request = garp_pair("02:00:00:00:00:0b", VIP)[0]
    assert S.parse_arp(b"\x00" * 60) is None  # an 802.3 length, no EtherType
    assert S.parse_arp(request[:30]) is None and S.parse_arp(request[:41]) is None  # cut short
    assert S.parse_arp(request[:12]) is None and S.parse_arp(b"") is None
    assert S.parse_arp(bytes(Ether() / IP(dst=VIP) / UDP(dport=694))) is None
    assert S.parse_arp(request[:12] + b"\x08\x00" + request[14:]) is None  # ARP bytes, IPv4 EtherType
    # RFC 826 with another hardware or protocol type
    assert S.parse_arp(request[:14] + b"\x00\x06" + request[16:]) is None
    assert S.parse_arp(bytes(Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(ptype=0x86DD, plen=16))) is None
    # a frame with trailing padding (the 60-byte minimum on the wire) still decodes
    assert S.parse_arp(request + bytes(18)) == S.parse_arp(request)


def test_announce_events_from_a_pcap_capture(tmp_path):
    """The drill's ARP capture as tcpdump would have written it: a pcap file (made with scapy),
    read back with scapy, its times made relative to t0, turned into announce events."""
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import ARP, Ether
    from scapy.utils import rdpcap, wrpcap

    mac1, mac2 = "02:00:00:00:00:0a", "02:00:00:00:00:0b"
    t0 = 1_714_557_600.0
    frames = [
        (t0 + 1.0, garp_pair(mac1, VIP)[0]),
        (t0 + 1.5, bytes(Ether(src=mac1) / ARP(op=1, hwsrc=mac1, psrc="10.77.0.10", pdst="10.77.0.2"))),  # a query
        (t0 + 2.0, bytes(Ether(src=mac2) / IP(src="10.77.0.11", dst=VIP) / UDP(sport=694, dport=694))),
        (t0 + 4.25, garp_pair(mac2, VIP)[0]),
        (t0 + 4.2504, garp_pair(mac2, VIP)[1] + bytes(18)),  # padded to the 60-byte minimum
        (t0 + 5.0, garp_pair(mac2, "10.77.0.11")[0]),  # gratuitous, another address
        (t0 + 6.0, garp_pair(mac2, VIP)[1][:40]),  # cut short
    ]
    packets = []
    for t, frame in frames:
        pkt = Ether(frame)
        pkt.time = t
        packets.append(pkt)
    path = tmp_path / "arp.pcap"
    wrpcap(str(path), packets)

    captured = [(float(p.time) - t0, bytes(p)) for p in rdpcap(str(path))]
    assert [f for _, f in captured] == [f for _, f in frames]
    events = S.announce_events(captured, VIP, {mac1: "dir1", mac2: "dir2"})
    assert events == [
        Event(1.0, "client", "announce", f"gratuitous ARP request {VIP} is-at {mac1} (dir1)"),
        Event(4.25, "client", "announce", f"gratuitous ARP request {VIP} is-at {mac2} (dir2)"),
        Event(4.25, "client", "announce", f"gratuitous ARP reply {VIP} is-at {mac2} (dir2)"),
    ]
    # on the timeline: after the fault, in time order, the capture's order kept at equal times
    rec = DrillRecord(
        "fail-active",
        fault_t=2.0,
        events=[Event(2.0, "drill", "fault", "FAULT"), *events, Event(4.1, "dir2", "acquire", "acquiring")],
    )
    tl = [(e.t, e.kind, e.text.split(" ")[2] if e.kind == "announce" else "") for e in S.build_timeline(rec)]
    assert tl == [
        (1.0, "announce", "request"),
        (2.0, "fault", ""),
        (4.1, "acquire", ""),
        (4.25, "announce", "request"),
        (4.25, "announce", "reply"),
    ]


def test_announce_events_of_heartbeats_own_takeover_capture():
    """The gratuitous ARPs of two real heartbeat 3.0.6 nodes (tests/data/heartbeat, the failover
    capture: nodea takes VIP 10.250.0.100, is killed, nodeb takes over), read with scapy as the
    drill reads its capture: heartbeat's send_arp alternates requests and replies 0.25 s apart,
    ten pairs per takeover."""
    import itertools
    from pathlib import Path

    from scapy.layers.l2 import Ether  # noqa: F401 - registers the Ethernet link type for rdpcap
    from scapy.utils import rdpcap

    pcap = rdpcap(str(Path(__file__).resolve().parents[1] / "data" / "heartbeat" / "pair-sha1-failover.pcap"))
    t0 = float(pcap[0].time)
    frames = [(float(p.time) - t0, bytes(p)) for p in pcap]
    macs = {"d6:e5:64:b6:ab:d9": "nodea", "42:d3:9c:7d:26:a5": "nodeb"}
    events = S.announce_events(frames, "10.250.0.100", macs)
    assert len(frames) == 358 and len(events) == 40
    runs = [(who, list(run)) for who, run in itertools.groupby(events, key=lambda e: e.text.rsplit(" ", 1)[1])]
    assert [(who, len(run)) for who, run in runs] == [("(nodea)", 20), ("(nodeb)", 20)]
    for who, run in runs:
        mac = {f"({name})": m for m, name in macs.items()}[who]
        assert [e.text for e in run] == [
            f"gratuitous ARP {op} 10.250.0.100 is-at {mac} {who}" for op in ["request", "reply"] * 10
        ]
        assert all(e.source == "client" and e.kind == "announce" for e in run)
        assert all(0.2 < b.t - a.t < 0.3 for a, b in zip(run, run[1:]))
    assert runs[1][1][0].t - runs[0][1][-1].t > 6  # nodeb's takeover: after heartbeat's deadtime
    assert S.announce_events(frames, "10.250.0.1", macs) == []  # the nodes' own addresses: no announcement


# --- figures ----------------------------------------------------------------------------------------


def test_longest_gap_counts_only_gaps_ending_after_since():
    samples = [ok(0.0), ok(0.1), bad(0.2), ok(5.0), ok(5.1), ok(5.2)]
    # gaps between ends: 0.01->0.11 (0.1), 0.11->5.01 (4.9)
    gap, at = S.longest_gap(samples, since=1.0)
    assert gap == pytest.approx(4.9) and at == pytest.approx(0.11)
    assert S.longest_gap(samples, since=6.0) == (0.0, 6.0)
    assert S.longest_gap([ok(1.0)], 0.0) == (0.0, 0.0)


def test_table_shape_drops_counters():
    parsed = {
        "TCP 10.77.0.100:80": {
            "line": "TCP  10.77.0.100:80 rr",
            "dests": {"10.77.0.21:80": ("Route", 1, 5, 7), "10.77.0.22:80": ("Route", 0, 0, 0)},
        }
    }
    assert S.table_shape(parsed) == {
        "TCP  10.77.0.100:80 rr": {"10.77.0.21:80": ("Route", 1), "10.77.0.22:80": ("Route", 0)}
    }


def test_timeline_merges_events_holder_changes_and_first_success():
    rec = DrillRecord(
        "fail-active",
        fault_t=2.0,
        samples=[ok(1.0), bad(2.05), ok(3.5, "rs3")],
        holders=holders((0.5, ("dir1",)), (1.5, ("dir1",)), (3.0, ("dir2",))),
        events=[Event(2.0, "drill", "fault", "FAULT"), Event(3.0, "dir2", "detect", "peer dir1 is dead")],
    )
    tl = S.build_timeline(rec)
    assert [(e.t, e.kind) for e in tl] == [
        (0.5, "holder"),
        (2.0, "fault"),
        (2.05, "failed"),
        (3.0, "holder"),
        (3.0, "detect"),
        (3.51, "first-success"),
    ]
    assert "rs3" in tl[-1].text and "1.51 s after the fault" in tl[-1].text


def test_failure_events_group_runs_of_failed_requests():
    samples = [
        ok(1.0),
        bad(2.0),
        bad(2.5, "ConnectionRefusedError", dur=0.01),
        bad(2.6),
        ok(3.0),
        bad(40.0, "ConnectionResetError", dur=0.012),
        ok(40.1),
    ]
    assert [(e.t, e.source, e.kind, e.text) for e in S.failure_events(samples)] == [
        (
            2.0,
            "client",
            "failed",
            "3 requests failed (started 2.000 to 2.600, last ended 3.100): TimeoutError x2, ConnectionRefusedError",
        ),
        (40.0, "client", "failed", "1 request failed (started 40.000, ended 40.012): ConnectionResetError"),
    ]
    assert S.failure_events([ok(1.0), ok(2.0)]) == []


# --- expectations -------------------------------------------------------------------------------------


def fail_active_record(**kw) -> DrillRecord:
    base = dict(
        fault_t=2.0,
        settled=True,
        samples=[ok(0.0), ok(1.0), ok(1.9), bad(2.1), bad(2.7), ok(3.4, "rs2"), ok(3.5, "rs3"), ok(4.0)],
        holders=holders((0.1, ("dir1",)), (2.2, ()), (3.2, ("dir2",)), (4.5, ("dir2",))),
    )
    base.update(kw)
    return DrillRecord("fail-active", **base)


def verdict(checks) -> dict[str, bool]:
    return {c.name: c.ok for c in checks}


def test_fail_active_expectations_hold_for_a_clean_takeover():
    expect = S.SCENARIOS["fail-active"].expect
    v = verdict(V.evaluate(expect, fail_active_record()))
    assert v == {
        "runner": True,
        "settled": True,
        "final holder": True,
        "one holder": True,
        "VIP moved": True,
        "longest gap": True,
        "no failure after first-success": True,
    }


def test_fail_active_expectations_catch_each_failure():
    expect = S.SCENARIOS["fail-active"].expect
    # the VIP never moved and both held it at some point
    v = verdict(
        V.evaluate(
            expect, fail_active_record(holders=holders((0.1, ("dir1",)), (3.0, ("dir1", "dir2")), (4.0, ("dir1",))))
        )
    )
    assert not v["final holder"] and not v["one holder"]
    # a failure after the first success following the fault
    v = verdict(V.evaluate(expect, fail_active_record(samples=[ok(0.0), ok(1.9), ok(3.4), bad(3.6), ok(4.0)])))
    assert not v["no failure after first-success"]
    # a gap longer than deadtime + margin
    v = verdict(
        V.evaluate(expect, fail_active_record(samples=[ok(0.0), ok(1.9), ok(1.95 + S.DEADTIME + S.MARGIN + 0.1)]))
    )
    assert not v["longest gap"]
    # the runner's problems and an end condition not reached fail the drill
    v = verdict(V.evaluate(expect, fail_active_record(problems=["boom"], settled=False)))
    assert not v["runner"] and not v["settled"]


def test_first_success_counts_from_when_the_fault_is_complete():
    # The daemon is killed at 2.0 s but the node's links go down only at 2.3 s: a request
    # started in between is still served by the old holder's IPVS; the in-flight and later
    # requests then time out until dir2 announces. Those are not failures after recovery.
    expect = S.SCENARIOS["fail-active"].expect
    samples = [ok(0.0), ok(1.9), ok(2.1), bad(2.2), bad(2.35), ok(3.4, "rs2"), ok(3.5)]
    v = verdict(V.evaluate(expect, fail_active_record(samples=samples, fault_end_t=2.3)))
    assert v["no failure after first-success"]
    # counted from the kill alone, the 2.1 s success would wrongly mark the recovery
    assert not verdict(V.evaluate(expect, fail_active_record(samples=samples)))["no failure after first-success"]
    rep = V.summary(fail_active_record(samples=samples, fault_end_t=2.3), [], S.SCENARIOS["fail-active"])
    assert rep["fault_end_t"] == 2.3 and rep["figures"]["first_success_s"] == pytest.approx(1.41)


def test_split_brain_is_tolerated_only_where_declared():
    rec = fail_active_record(holders=holders((0.1, ("dir1",)), (3.0, ("dir1", "dir2")), (5.0, ("dir1",))))
    cut = S.SCENARIOS["cut-heartbeat"].expect
    v = verdict(V.evaluate(cut, rec))
    assert v["final holder"] and v["VIP moved"] and "one holder" not in v
    stop = S.SCENARIOS["stop-active"].expect
    assert not verdict(V.evaluate(stop, rec))["one holder"]


#: A restart's two VIP moves as the daemons log them: dir1 -> dir2 at 2.2 s, dir2 -> dir1 at 36.2 s.
MOVES = [
    Event(2.23, "dir1", "vip-removed", "removed 10.77.0.100/32/eth0"),
    Event(2.29, "dir2", "vip-added", "added 10.77.0.100/32/eth0"),
    Event(36.24, "dir2", "vip-removed", "removed 10.77.0.100/32/eth0"),
    Event(36.33, "dir1", "vip-added", "added 10.77.0.100/32/eth0"),
]


def test_vip_moves_pair_a_removal_with_the_other_directors_next_addition():
    stray = Event(10.0, "dir2", "vip-added", "added 10.77.0.100/32/eth0")  # no removal before it
    assert V.vip_moves([stray, *MOVES]) == [(2.23, 2.29), (36.24, 36.33)]
    assert V.vip_moves([Event(1.0, "dir1", "vip-removed", "x"), Event(2.0, "dir1", "vip-added", "x")]) == []


def test_only_a_reset_in_flight_at_a_move_is_explained():
    moves = [(2.23, 2.29), (36.24, 36.33)]
    reset = lambda start, dur=0.2: bad(start, "ConnectionResetError", dur)  # noqa: E731
    assert V.failures_outside_moves([ok(1.0), reset(2.2), ok(2.5), reset(36.3)], moves) == []
    # the same requests far from a move, or failing another way, are not explained
    assert V.failures_outside_moves([reset(20.0)], moves) == [reset(20.0)]
    assert V.failures_outside_moves([bad(2.2)], moves) == [bad(2.2)]
    # one request per move: a second reset at the same move is not explained
    assert V.failures_outside_moves([reset(2.0), reset(2.3)], moves) == [reset(2.3)]
    # the slack: a request ending 0.4 s before the removal counts, one ending 0.6 s before does not
    assert V.failures_outside_moves([reset(1.63, 0.2)], moves) == []
    assert V.failures_outside_moves([reset(1.43, 0.2)], moves) == [reset(1.43, 0.2)]


def test_restart_director_allows_only_resets_at_moves_and_needs_an_unchanged_table():
    expect = S.SCENARIOS["restart-director"].expect
    table = {"TCP 10.77.0.100:80 rr": {"10.77.0.21:80": ("Route", 1)}}
    base = dict(
        fault_t=2.0,
        settled=True,
        samples=[ok(0.0), ok(2.5), ok(3.0)],
        events=list(MOVES),
        holders=holders((0.0, ("dir1",)), (2.5, ("dir2",)), (37.0, ("dir1",))),
        tables_before={"dir1": table, "dir2": table},
        tables_after={"dir1": table, "dir2": table},
    )
    assert all(c.ok for c in V.evaluate(expect, DrillRecord("restart-director", **base)))
    changed = {"TCP 10.77.0.100:80 rr": {"10.77.0.21:80": ("Route", 0)}}
    v = verdict(
        V.evaluate(
            expect, DrillRecord("restart-director", **{**base, "tables_after": {"dir1": changed, "dir2": table}})
        )
    )
    assert not v["IPVS unchanged"]
    logged = [*MOVES, Event(4.0, "dir1", "ipvs", "ipvs edit-dest weight 1 fwd dr")]
    v = verdict(V.evaluate(expect, DrillRecord("restart-director", **{**base, "events": logged})))
    assert not v["IPVS unchanged"]
    reset_at_move = bad(36.3, "ConnectionResetError", 0.21)
    check = {
        c.name: c
        for c in V.evaluate(expect, DrillRecord("restart-director", **{**base, "samples": [ok(0.0), reset_at_move]}))
    }
    assert check["failed requests"].ok, check["failed requests"].detail
    assert "each a reset of a request in flight at a move" in check["failed requests"].detail
    v = verdict(V.evaluate(expect, DrillRecord("restart-director", **{**base, "samples": [ok(0.0), bad(2.5)]})))
    assert not v["failed requests"]
    reset_elsewhere = bad(20.0, "ConnectionResetError", 0.01)
    v = verdict(V.evaluate(expect, DrillRecord("restart-director", **{**base, "samples": [ok(0.0), reset_elsewhere]})))
    assert not v["failed requests"]


def test_kill_realserver_victim_must_leave_rotation_on_the_active_director():
    expect = S.SCENARIOS["kill-realserver"].expect
    down = Event(4.0, "dir1", "rs-down", "rs 10.77.0.22:80 of web down: connection refused")
    base = dict(
        fault_t=2.0,
        settled=True,
        victim="rs2",
        victim_addr="10.77.0.22",
        holders=holders((0.0, ("dir1",)), (5.0, ("dir1",))),
        samples=[
            ok(0.0, "rs1"),
            ok(1.0, "rs2"),
            bad(2.5, "ConnectionRefusedError"),
            ok(3.0, "rs3"),
            ok(4.8, "rs1"),
            ok(5.0, "rs3"),
        ],
    )
    assert all(c.ok for c in V.evaluate(expect, DrillRecord("kill-realserver", events=[down], **base)))
    # no rs-down from dir1 (only dir2 saw it): the victim never left the active table
    v = verdict(
        V.evaluate(expect, DrillRecord("kill-realserver", events=[Event(4.0, "dir2", "rs-down", down.text)], **base))
    )
    assert not v["victim out"]
    # the victim still answered well after it was taken out
    late = base | {"samples": base["samples"] + [ok(6.0, "rs2")]}
    assert not verdict(V.evaluate(expect, DrillRecord("kill-realserver", events=[down], **late)))["victim out"]
    # a failure after the detection (plus grace)
    late = base | {"samples": base["samples"] + [bad(5.5, "ConnectionRefusedError")]}
    v = verdict(V.evaluate(expect, DrillRecord("kill-realserver", events=[down], **late)))
    assert not v["no failure after rs-down"]
    # another holder at any time
    moved = base | {"holders": holders((0.0, ("dir1",)), (3.0, ("dir2",)), (5.0, ("dir1",)))}
    assert not verdict(V.evaluate(expect, DrillRecord("kill-realserver", events=[down], **moved)))["holder constant"]


def test_flap_realserver_victim_must_answer_after_its_last_return():
    expect = S.SCENARIOS["flap-realserver"].expect
    up = Event(9.0, "dir1", "rs-up", "rs 10.77.0.22:80 of web up: HTTP 200")
    base = dict(
        fault_t=2.0,
        settled=True,
        victim="rs2",
        victim_addr="10.77.0.22",
        holders=holders((0.0, ("dir1",)), (10.0, ("dir1",))),
    )
    good = DrillRecord("flap-realserver", events=[up], samples=[ok(0.0, "rs2"), ok(9.5, "rs2")], **base)
    assert all(c.ok for c in V.evaluate(expect, good))
    silent = DrillRecord("flap-realserver", events=[up], samples=[ok(0.0, "rs2"), ok(9.5, "rs1")], **base)
    assert not verdict(V.evaluate(expect, silent))["victim back"]
    never = DrillRecord("flap-realserver", samples=[ok(9.5, "rs2")], **base)
    assert not verdict(V.evaluate(expect, never))["victim back"]


def test_summary_and_render_carry_the_figures_and_the_verdict():
    scn = S.SCENARIOS["fail-active"]
    rec = fail_active_record(
        events=[
            Event(2.0, "drill", "fault", "FAULT: dir1 down"),
            Event(3.1, "dir2", "detect", "peer dir1 is dead (x)"),
            Event(3.3, "client", "announce", "gratuitous ARP request"),
        ]
    )
    report = V.summary(rec, V.evaluate(scn.expect, rec), scn)
    f = report["figures"]
    assert report["ok"] and report["scenario"] == "fail-active"
    assert f["requests"] == 8 and f["failed"] == 2 and f["failed_results"] == ["TimeoutError"]
    assert f["detection_s"] == pytest.approx(1.1) and f["vip_moved_s"] == pytest.approx(1.2)
    assert f["announcements"] == 1 and f["first_announcement_s"] == pytest.approx(1.3)
    assert f["first_success_s"] == pytest.approx(1.41)
    text = V.render(report)
    assert "peer dir1 is dead" in text and "drill OK" in text and "longest gap" in text
    bad_report = {**report, "ok": False}
    assert "DRILL FAILED" in V.render(bad_report)


# --- the pair's configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode, bond", [("dr", False), ("nat", False), ("tun", True)])
def test_pair_config_loads_and_describes_the_pair(tmp_path, mode, bond):
    keys = tmp_path / "authkeys"
    keys.write_text("auth 1\n1 sha1 secret\n")
    keys.chmod(0o600)
    plan = plan_lab("p", directors=2, real_servers=2, mode=mode, ha_link=True, bond=bond)
    for node in ("dir1", "dir2"):
        path = tmp_path / f"{node}.yaml"
        path.write_text(pair_config(plan, node, authkeys=str(keys), state_dir=str(tmp_path / node)))
        cfg = load_config(str(path))
        (svc,) = cfg.services
        assert (svc.key.address, svc.key.port) == (plan.vip, 80)
        assert svc.forwarding == mode and svc.check.rise == S.CHECK_RISE and svc.check.fall == S.CHECK_FALL
        assert [str(rs.address) for rs in svc.real_servers] == [plan.addr["rs1"], plan.addr["rs2"]]
        ha = cfg.ha
        assert ha.node == node and list(ha.nodes) == ["dir1", "dir2"]
        assert ha.timers.deadtime == S.DEADTIME and ha.auto_failback is True
        text = path.read_text()
        assert "media: [bcast eth1]" in text and "auto_failback: true" in text
        assert f"{plan.vip}/32/{'bond0' if bond else 'eth0'}" in text
        assert ("10.77.1.254/24/eth2" in text) == (mode == "nat")


def test_pair_config_needs_a_heartbeat_link_and_a_director():
    from director.lab.pair import pair_config as pc

    with pytest.raises(ValueError):
        pc(plan_lab("p", directors=2), "dir1", authkeys="/k", state_dir="/s")
    with pytest.raises(ValueError):
        pc(plan_lab("p", directors=2, ha_link=True), "rs1", authkeys="/k", state_dir="/s")


def test_drill_vm_argv_repeats_the_options_without_vm():
    from director.lab.drill import vm_argv
    from director.lab.pair import PairOptions

    argv = vm_argv("fail-active", PairOptions(prefix="x", real_servers=2, mode="tun", bond=True), 25, True)
    assert argv[1:] == [
        "-m",
        "director.cli",
        "lab",
        "drill",
        "fail-active",
        "--rate",
        "25",
        "--real-servers",
        "2",
        "--mode",
        "tun",
        "--prefix",
        "x",
        "--bond",
        "--json",
    ]
    assert "--vm" not in argv


def test_vm_prerequisites_install_the_lab_packages_on_the_host(monkeypatch):
    """The guest runs with the host's site-packages: the lab's Python packages (the ``lab``
    extra of pyproject.toml) are pip-installed on the host when missing."""
    import sys
    import tomllib
    from pathlib import Path

    from director.lab import vm

    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    extras = pyproject["project"]["optional-dependencies"]
    assert sorted(vm.GUEST_PYTHON_PACKAGES.values()) == sorted(extras["lab"])
    assert "directord[lab]" in extras["vm"] and "directord[lab]" in extras["test"]
    assert vm.missing_python_packages() == []  # installed with the test extra
    assert vm.missing_python_packages({"scapy": "scapy>=2.5", "no_such_module_0": "nosuch>=1"}) == ["nosuch>=1"]
    calls = []
    monkeypatch.setattr(vm, "_run", lambda argv, **kw: calls.append((list(argv), kw.get("check"))))
    vm.ensure_python_packages()
    assert calls == []
    vm.ensure_python_packages({"scapy": "scapy>=2.5", "no_such_module_0": "nosuch>=1"})
    assert calls == [([sys.executable, "-m", "pip", "install", "-q", "nosuch>=1"], True)]


def test_lab_cli_parses_the_subcommands():
    from director.lab.cli import add_commands

    ap = argparse.ArgumentParser()
    add_commands(ap.add_subparsers(dest="command"))
    a = ap.parse_args(["lab", "up", "--real-servers", "4", "--mode", "nat", "--bond", "--prefix", "t"])
    assert (a.real_servers, a.mode, a.bond, a.prefix) == (4, "nat", True, "t")
    a = ap.parse_args(["lab", "drill", "kill-active", "--rate", "20", "--json", "--vm"])
    assert (a.scenario, a.rate, a.json, a.vm, a.prefix) == ("kill-active", 20.0, True, True, "ddrill")
    assert ap.parse_args(["lab", "status", "--json"]).json
    with pytest.raises(SystemExit):
        ap.parse_args(["lab", "drill", "reboot-everything"])


def test_realserver_prep_is_available_when_the_realserver_package_imports(monkeypatch):
    import sys

    from director.cli import build_parser
    from director.lab.pair import realserver_prep_available
    from director.realserver import cmd_prep

    # the function the lab looks for is what `directord realserver prep` runs
    assert build_parser().parse_args(["realserver", "prep", "--vip", "10.0.0.1"]).func is cmd_prep
    assert realserver_prep_available()
    monkeypatch.setitem(sys.modules, "director.realserver", None)  # the package fails to import
    assert not realserver_prep_available()


def test_parse_ifconf_lists_ipv4_addresses_with_their_labels():
    import socket
    import struct

    from director.lab.pair import parse_ifconf

    def ifreq(name: str, ip: str, family: int = socket.AF_INET) -> bytes:
        return name.encode().ljust(16, b"\0") + struct.pack("<HH", family, 0) + socket.inet_aton(ip) + bytes(16)

    buf = ifreq("lo", "127.0.0.1") + ifreq("eth0", "10.77.0.11") + ifreq("eth0", VIP) + ifreq("x", "1.2.3.4", 99)
    assert parse_ifconf(buf) == [("lo", "127.0.0.1"), ("eth0", "10.77.0.11"), ("eth0", VIP)]
    assert parse_ifconf(buf[:50]) == [("lo", "127.0.0.1")]
