"""Tests for ha.node.handover: connectivity reports and the handovers they decide,
and hb_takeover requests, driven directly (a real ResourceProtocol on a fake host)."""

from __future__ import annotations

import logging

from nodefakes import TIMERS, VIP_A, VIP_B, FakeHost, config, confirm_all, membership, stable_holding_ours

from ha.connectivity import Connectivity
from ha.node.handover import CONN_HOLDOFF, CONN_RESEND, CONN_RETRY, ConnectivityHandover
from ha.node.resources import ResourceProtocol
from ha.wire import Message

GOOD = Connectivity(True, 2, 2)
WORSE = Connectivity(True, 1, 2)


def setup(*, auto_failback=True, ping_nodes=()):
    conf = config(timers=TIMERS, auto_failback=auto_failback, groups=(VIP_A, VIP_B), ping_nodes=ping_nodes)
    members = membership()
    host = FakeHost(10.0)
    rsc = ResourceProtocol(conf, members, host)
    handover = ConnectivityHandover(conf, members, rsc, host)
    host.rsc, host.handover = rsc, handover
    peer = members.peers["nodeb"]
    return handover, rsc, host, peer


def report(up: int) -> Message:
    return Message.from_pairs([("t", "directord-connectivity"), ("link", "up"), ("ping", f"{up}/2"), ("src", "nodeb")])


def test_the_settle_time():
    assert setup()[0].settle == 2.0
    assert setup(ping_nodes=("192.0.2.1",))[0].settle == 2.0 + 1.0  # + ping_interval


def test_our_report_goes_out_on_change_and_every_two_seconds():
    handover, _, host, _ = setup()
    handover.set_ours(GOOD, comm_up=False)
    assert host.sent == [] and handover.next_send == host.now and handover.deadlines() == [host.now]
    handover.timers(host.now, comm_up=False)
    assert host.sent == [] and handover.next_send == host.now + CONN_RESEND
    host.now += CONN_RESEND
    handover.timers(host.now, comm_up=True)
    assert host.sent == [{"t": "directord-connectivity", "link": "up", "ping": "2/2"}]
    handover.set_ours(WORSE, comm_up=True)
    assert host.sent[-1]["ping"] == "1/2" and handover.next_send == host.now + CONN_RESEND
    assert host.logs[-1] == (logging.WARNING, f"connectivity changed: {GOOD} -> {WORSE}")
    handover.set_ours(WORSE, comm_up=True)  # unchanged: nothing sent
    assert len(host.sent) == 2


def test_resend_soon_and_peer_lost():
    handover, _, host, _ = setup()
    handover.resend_soon()
    assert handover.next_send is None  # nothing to send yet
    handover.ours = GOOD
    handover.resend_soon()
    assert handover.next_send == host.now
    handover.theirs = WORSE
    handover.peer_lost()
    assert handover.theirs is None


def test_peer_reports():
    handover, _, host, peer = setup()
    handover.peer_report(
        peer, Message.from_pairs([("t", "directord-connectivity"), ("link", "sideways")]), comm_up=True
    )
    assert host.logs[-1][0] == logging.ERROR and handover.theirs is None
    handover.set_ours(GOOD, comm_up=False)
    handover.peer_report(peer, report(2), comm_up=True)
    assert handover.theirs == Connectivity(True, 2, 2)
    assert host.sent == [{"t": "directord-connectivity", "link": "up", "ping": "2/2"}]  # it needs ours too
    assert host.logs[-1] == (logging.INFO, f"nodeb reports {GOOD}")
    handover.peer_report(peer, report(1), comm_up=True)
    assert host.logs[-1] == (logging.WARNING, f"nodeb reports {WORSE}") and len(host.sent) == 1


def test_worse_connectivity_hands_our_groups_over_after_the_settle_time_and_back():
    handover, rsc, host, peer = setup()
    stable_holding_ours(rsc, host, peer)
    handover.set_ours(GOOD, comm_up=True)
    handover.peer_report(peer, report(2), comm_up=True)
    host.sent.clear()
    handover.set_ours(WORSE, comm_up=True)
    assert handover.retry_at == host.now + handover.settle and "ask_resources" not in host.types()
    host.now += handover.settle
    handover.timers(host.now, comm_up=True)
    assert host.sent[-1] == {"t": "ask_resources", "rsc_hold": "all", "info": "me"}
    assert handover.gave_up and handover.hold_until == host.now + CONN_HOLDOFF
    assert any("handing our groups to it" in m for _, m in host.logs)

    # the standby completes: the peer holds everything
    rsc.ask_for_resources(
        Message.from_pairs([("t", "ask_resources"), ("rsc_hold", "all"), ("info", "other"), ("src", "nodeb")]),
        from_self=False,
    )
    confirm_all(rsc, host)
    rsc.ask_for_resources(
        Message.from_pairs([("t", "ask_resources"), ("rsc_hold", "all"), ("info", "done"), ("src", "nodeb")]),
        from_self=False,
    )
    rsc.process_resources(
        Message.from_pairs(
            [("t", "resource"), ("rsc_hold", "all"), ("rtype", "full"), ("isstable", "1"), ("src", "nodeb")]
        ),
        from_self=False,
    )
    assert not any(g.target for g in rsc.groups)

    # ours recovers: within the holdoff the take-back waits, then hb_takeover local
    handover.set_ours(GOOD, comm_up=True)
    assert handover.retry_at == handover.hold_until
    host.now = handover.hold_until
    handover.timers(host.now, comm_up=True)
    assert host.sent[-1] == {"t": "hb_takeover", "rsc_hold": "local"} and not handover.gave_up


def test_with_auto_failback_off_our_groups_stay_with_the_peer():
    handover, rsc, host, peer = setup(auto_failback=False)
    stable_holding_ours(rsc, host, peer)
    handover.gave_up = True
    for g in rsc.groups:
        g.held = False
    handover.ours, handover.theirs = GOOD, GOOD
    handover.decide(comm_up=True)
    assert not handover.gave_up and host.sent == []


def test_a_handover_that_cannot_start_is_retried():
    handover, rsc, host, peer = setup()
    stable_holding_ours(rsc, host, peer)
    rsc.other_is_stable = False  # the peer's groups are in transition
    handover.ours, handover.theirs = WORSE, GOOD
    handover.worse_since = host.now - handover.settle
    handover.decide(comm_up=True)
    assert handover.retry_at == host.now + CONN_RETRY and "ask_resources" not in host.types()
    assert "connectivity handover waits" in host.logs[-1][1]


def test_nothing_is_decided_without_both_reports_a_live_peer_or_comm():
    handover, rsc, host, peer = setup()
    stable_holding_ours(rsc, host, peer)
    handover.ours = WORSE
    handover.decide(comm_up=True)
    handover.theirs = GOOD
    handover.decide(comm_up=False)
    peer.declare_dead()
    handover.decide(comm_up=True)
    assert host.sent == [] and handover.retry_at is None


def test_hb_takeover_requests():
    handover, rsc, host, peer = setup()
    stable_holding_ours(rsc, host, peer)
    handover.peer_takeover(peer, Message.from_pairs([("t", "hb_takeover"), ("rsc_hold", "mine")]), comm_up=True)
    assert host.logs[-1][0] == logging.ERROR
    # "local" from the peer's point of view: its groups, which we do not hold
    handover.peer_takeover(peer, Message.from_pairs([("t", "hb_takeover"), ("rsc_hold", "local")]), comm_up=True)
    assert "refused: we hold none of the foreign groups" in host.logs[-1][1] and host.sent == []
    handover.gave_up = True
    handover.peer_takeover(peer, Message.from_pairs([("t", "hb_takeover"), ("rsc_hold", "foreign")]), comm_up=True)
    assert host.sent[-1] == {"t": "ask_resources", "rsc_hold": "local", "info": "me"} and not handover.gave_up
