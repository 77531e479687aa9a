"""Tests for ha.node.receiver: generation and sequence checks of admitted
messages, acks, retransmission requests and answers, driven directly (a real
Outbound and Membership on a fake host)."""

from __future__ import annotations

import logging
import random

from nodefakes import KEYS, TIMERS, UUID_A, FakeHost, config, membership

from ha.identity import NodeIdentity
from ha.node.delivery import REXMIT_INTERVAL
from ha.node.outbound import Outbound
from ha.node.receiver import Receiver, Sequenced
from ha.wire import Message


def setup(seed: int = 1):
    members = membership()
    host = FakeHost(50.0)
    identity = NodeIdentity(UUID_A, 9)
    out = Outbound(config(timers=TIMERS), KEYS, identity, members, host, loadavg=lambda: "0.00", wallclock=None)
    receiver = Receiver(identity, "nodea", members, out, host, random.Random(seed))
    return receiver, out, host, members.peers["nodeb"]


def msg(*pairs: tuple[str, str]) -> Message:
    return Message.from_pairs(pairs)


STATUS = msg(("t", "status"), ("st", "up"))


def test_one_ack_trigger_per_peer_drawn_in_order():
    receiver, _, _, _ = setup(seed=4)
    assert receiver.streams["nodeb"].ack_trigger == random.Random(4).randrange(10)


def test_generations_first_restart_replay_and_early():
    receiver, _, host, peer = setup()
    assert receiver.sequence(peer, STATUS, "status", 1, 5, 100) == Sequenced(True, new_gen=True)
    assert receiver.streams["nodeb"].generation == 5 and peer.last_heard == host.now
    assert receiver.sequence(peer, STATUS, "status", 1, 4, 100) == Sequenced(False)
    assert host.counts["replay"] == 1 and "attempted replay attack" in host.logs[-1][1]
    early = msg(("t", "resource"), ("rsc_hold", "none"))
    assert receiver.sequence(peer, early, "resource", 1, 6, 100) == Sequenced(False)
    assert host.counts["old"] == 1
    restarted = receiver.sequence(peer, STATUS, "status", 1, 6, 100)
    assert restarted == Sequenced(True, new_gen=True, restart=True)
    assert (logging.INFO, "heartbeat restart on node nodeb (generation 6)") in host.logs
    assert receiver.sequence(peer, STATUS, "status", 1, 6, 100) == Sequenced(False)
    assert host.counts["duplicate"] == 1


def test_a_dead_peer_returns_through_a_new_status():
    receiver, _, _, peer = setup()
    receiver.sequence(peer, STATUS, "status", 1, 5, 100)
    peer.take_status("up", 1, 100, None)
    peer.declare_dead()
    receiver.forget(peer)
    assert receiver.from_dead(peer, 5) and not receiver.from_dead(peer, 6)
    assert receiver.sequence(peer, STATUS, "status", 1, 5, 100) == Sequenced(False)  # not newer
    assert receiver.sequence(peer, STATUS, "status", 2, 5, 101) == Sequenced(True, healed=True)


def test_messages_for_another_node_are_tracked_but_not_kept():
    receiver, _, host, peer = setup()
    receiver.sequence(peer, STATUS, "status", 1, 5, 100)
    other = msg(("t", "repnodes"), ("dest", "nodec"))
    assert receiver.sequence(peer, other, "repnodes", 2, 5, 100) == Sequenced(False)
    assert host.counts["not_for_us"] == 1 and receiver.streams["nodeb"].last_seq == 2


def test_gaps_are_asked_for_once_out_of_the_reorder_window():
    receiver, out, host, peer = setup()
    peer.status = "up"
    receiver.sequence(peer, STATUS, "status", 1, 5, 100)
    receiver.sequence(peer, STATUS, "status", 4, 5, 100)
    assert receiver.streams["nodeb"].missing == {2, 3} and host.counts["lost_packets"] == 0
    host.now += REXMIT_INTERVAL
    receiver.request_retransmissions(host.now)
    requests = [m for m in host.packets() if m.get("t") == "NS_rexmit"]
    assert [(m.get("firstseq"), m.get("lastseq"), m.get("dest")) for m in requests] == [
        ("2", "2", "nodeb"),
        ("3", "3", "nodeb"),
    ]
    assert host.counts["lost_packets"] == 2 and out.loss_until is not None
    assert receiver.deadlines() == [host.now + REXMIT_INTERVAL] * 2
    receiver.sequence(peer, STATUS, "status", 2, 5, 100)  # the retransmission arrives
    assert host.counts["reordered"] == 0 and receiver.streams["nodeb"].missing == {3}
    peer.status = "dead"
    host.now += REXMIT_INTERVAL
    receiver.request_retransmissions(host.now)
    assert receiver.deadlines() == []  # not asked of a peer that is not up


def test_too_many_missing_counts_them_lost_at_once():
    receiver, _, host, peer = setup()
    receiver.sequence(peer, STATUS, "status", 1, 5, 100)
    receiver.sequence(peer, STATUS, "status", 1000, 5, 100)
    assert host.counts["lost_packets"] == 998
    assert (logging.ERROR, "lost a lot of packets from nodeb: sequence tracking restarted") in host.logs


def test_acks_follow_the_trigger_digit():
    receiver, _, host, peer = setup()
    trigger = receiver.streams["nodeb"].ack_trigger
    receiver.sequence(peer, STATUS, "status", 1, 5, 100)
    for seq in range(2, 22):
        receiver.sequence(peer, STATUS, "status", seq, 5, 100)
    acks = [int(m.get("ackseq"), 16) for m in host.packets() if m.get("t") == "NS_ackmsg"]
    assert acks == [s for s in range(1, 22) if s % 10 == trigger] and host.counts["acks_sent"] == len(acks)


def test_noseq_messages():
    receiver, out, host, peer = setup()
    receiver.sequence(peer, STATUS, "status", 1, 5, 100)
    for _ in range(3):
        out.send([("t", "starting")])
    host.actions.clear()
    request = msg(("t", "NS_rexmit"), ("dest", "nodea"), ("firstseq", "1"), ("lastseq", "5"))
    assert receiver.accept_noseq(peer, request, "NS_rexmit", 5)
    receiver.handle_noseq(peer, request, "NS_rexmit")
    assert host.counts["retransmitted"] == 3 and host.counts["rexmit_requests_received"] == 1
    assert any("asks for seq 4, 3 is max" in m for _, m in host.logs)
    assert not receiver.accept_noseq(peer, request, "NS_rexmit", 4)  # an older generation: a replay
    assert not receiver.accept_noseq(peer, msg(("t", "NS_rexmit"), ("dest", "nodec")), "NS_rexmit", 5)
    ack = msg(("t", "NS_ackmsg"), ("dest", "nodea"), ("ackseq", "2"))
    assert receiver.accept_noseq(peer, ack, "NS_ackmsg", 5)
    receiver.handle_noseq(peer, ack, "NS_ackmsg")
    assert receiver.streams["nodeb"].acked == 2
    assert not receiver.accept_noseq(peer, ack, "NS_ackmsg", 5) and host.counts["old"] == 1
    too_far = msg(("t", "NS_ackmsg"), ("dest", "nodea"), ("ackseq", "63"))
    receiver.handle_noseq(peer, too_far, "NS_ackmsg")
    assert receiver.streams["nodeb"].acked == 2 and "we sent 3" in host.logs[-1][1]


def test_a_nak_gives_the_packet_up():
    receiver, _, host, peer = setup()
    receiver.sequence(peer, STATUS, "status", 1, 5, 100)
    receiver.sequence(peer, STATUS, "status", 3, 5, 100)
    nak = msg(("t", "NS_nak_rexmit"), ("firstseq", "2"), ("dest", "nodea"))
    assert not receiver.accept_noseq(peer, nak, "NS_nak_rexmit", 5)
    assert host.counts["naks_received"] == 1 and receiver.streams["nodeb"].missing == set()
    assert (logging.ERROR, "irretrievably lost packet: node nodeb seq 2") in host.logs


def test_requests_beyond_the_history_are_refused():
    receiver, out, host, peer = setup()
    for _ in range(3):
        out.send([("t", "starting")])
    out.history.size = 1
    out.send([("t", "starting")])  # only seq 4 is kept now
    host.actions.clear()
    request = msg(("t", "NS_rexmit"), ("dest", "nodea"), ("firstseq", "3"), ("lastseq", "4"))
    receiver.handle_noseq(peer, request, "NS_rexmit")
    naks = [m for m in host.packets() if m.get("t") == "NS_nak_rexmit"]
    assert [(m.get("firstseq"), m.get("info")) for m in naks] == [("3", "seqno too low")]
    assert host.counts["naks_sent"] == 1 and host.counts["retransmitted"] == 1
    receiver.handle_noseq(peer, msg(("t", "NS_rexmit"), ("firstseq", "x")), "NS_rexmit")
    assert "invalid retransmission request from nodeb" in host.logs[-1][1]
