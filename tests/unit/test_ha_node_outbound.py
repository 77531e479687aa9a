"""Tests for ha.node.outbound: our messages (trailing fields, signing, sequence
numbers and history, loopback of our resource messages) and our status (dt with
the startup bonus, keepalive schedule, copies on a lossy link), without a node."""

from __future__ import annotations

import logging

from nodefakes import KEYS, TIMERS, UUID_A, UUID_B, FakeHost, config, membership

from ha.identity import NodeIdentity
from ha.node.outbound import (
    LOSS_MEMORY,
    STARTUP_DT_BONUS,
    STARTUP_DT_PERIOD,
    STATUS_COPIES,
    Outbound,
)


def setup(*, wallclock=None, loadavg=lambda: "0.10 0.20 0.30 1/99 42\nsecond line"):
    members = membership()
    members.peers["nodeb"].uuid = UUID_B
    host = FakeHost(1000.0)
    out = Outbound(
        config(timers=TIMERS), KEYS, NodeIdentity(UUID_A, 7), members, host, loadavg=loadavg, wallclock=wallclock
    )
    return out, host


def test_start_sends_init_up_up_with_the_startup_bonus():
    out, host = setup()
    out.start(host.now)
    sent = host.packets()
    assert [(m.get("t"), m.get("st")) for m in sent] == [("status", "init"), ("status", "up"), ("status", "up")]
    assert {m.get("dt") for m in sent} == {format(int((6.0 + STARTUP_DT_BONUS) * 1000), "x")}
    assert [m.get("seq") for m in sent] == ["1", "2", "3"] and all(m.get("protocol") == "1" for m in sent)
    first = sent[0]
    assert (first.get("src"), first.get_binary("srcuuid"), first.get("hg"), first.get("ttl")) == (
        "nodea",
        UUID_A,
        "7",
        "3",
    )
    assert first.get("ld") == "0.10 0.20 0.30 1/99 42" and first.get("ts") == format(1000, "x")
    assert out.next_status == host.now + 1.0 and out.history.last_seq == 3 and host.counts["sent"] == 3
    assert sorted(out.deadlines()) == [host.now + 1.0, host.now + STARTUP_DT_PERIOD]


def test_the_bonus_ends_with_a_status_and_keepalives_follow():
    out, host = setup()
    out.start(host.now)
    host.actions.clear()
    host.now += 1.0
    out.timers(host.now)
    assert [m.get("dt") for m in host.packets()] == [format(8000, "x")]
    host.now += STARTUP_DT_PERIOD - 1.0
    out.timers(host.now)  # the bonus ends: a status at once, then the keepalive one
    assert [m.get("dt") for m in host.packets()][-2:] == [format(6000, "x"), format(6000, "x")]
    assert out.advertised_dt() == 6.0 and out.silent_for(host.now + 0.5) == 0.5
    host.now += 10.0  # late: the schedule restarts from now
    out.timers(host.now)
    assert out.next_status == host.now + 1.0


def test_sequenced_and_noseq_messages_and_the_history():
    out, host = setup()
    raw = out.send([("t", "repnodes"), ("dest", "nodeb"), ("nodelist", "nodea nodeb ")])
    ack = out.send([("t", "NS_ackmsg"), ("dest", "nodeb"), ("ackseq", "a")])
    rep, nak = host.packets()
    assert rep.get("seq") == "1" and rep.get_binary("destuuid") == UUID_B and rep.get("ld") is not None
    assert nak.get("seq") is None and nak.get("ld") is None
    assert out.history.last_seq == 1 and len(out.history) == 1
    assert out.history.answer(1, 1, 0, host.now).answers[0].payload == raw != ack


def test_our_resource_messages_come_back():
    out, host = setup()
    out.send([("t", "resource"), ("rsc_hold", "local"), ("rtype", "full"), ("isstable", "1")])
    out.send([("t", "starting")])
    assert [m.get("t") for m in host.looped] == ["resource"] and host.looped[0].get("src") == "nodea"


def test_loss_makes_each_status_go_out_several_times():
    out, host = setup()
    out.start(host.now)
    host.actions.clear()
    out.loss_seen()
    out.loss_seen()
    assert host.logs == [(logging.INFO, "packet loss seen: sending each status several times")]
    out.send_status()
    assert len(out.copies) == STATUS_COPIES - 1 and all(raw == out.copies[0][1] for _, raw in out.copies)
    step = 1.0 / STATUS_COPIES
    assert [due for due, _ in out.copies] == [host.now + step * k for k in range(1, STATUS_COPIES)]
    host.now += step
    out.timers(host.now)
    assert host.counts["copies_sent"] == 1 and host.actions[-1] == host.actions[0]
    host.now += LOSS_MEMORY
    out.send_status()
    assert out.copies == []


def test_the_clocks_and_the_load_average_never_break_sending():
    def broken():
        raise OSError("no clock")

    out, host = setup(wallclock=broken, loadavg=broken)
    out.send([("t", "starting")])
    msg = host.packets()[0]
    assert msg.get("ts") == format(1000, "x") and msg.get("ld") == "n/a"
    out2, host2 = setup(wallclock=lambda: 1_700_000_000.7)
    out2.send([("t", "starting")])
    assert host2.packets()[0].get("ts") == format(1_700_000_000, "x")


def test_without_flow_control_no_protocol_field():
    out, host = setup()
    out.flow_control = False
    out.send_status()
    assert host.packets()[0].get("protocol") is None
