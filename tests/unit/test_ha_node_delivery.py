"""Tests for ha.node.delivery: sequence numbers, the send history, retransmission
requests and answers, acks, the reorder window and the generation checks
(heartbeat 3.0.6 heartbeat.c / hb_rexmit.c rules), without a node around them."""

from __future__ import annotations

import random
import time

import pytest

from ha.node.delivery import (
    ACK_DIV,
    FLOWCONTROL_LIMIT,
    HISTORY_SIZE,
    MAX_MISSING,
    MAX_REXMIT_BATCH,
    REXMIT_ACCEPT,
    REXMIT_INTERVAL,
    REXMIT_MIN,
    Generation,
    PeerStream,
    Retransmission,
    SendHistory,
    check_generation,
)


def history_of(n: int, size: int = HISTORY_SIZE) -> SendHistory:
    h = SendHistory(size)
    for _ in range(n):
        seq = h.next_seq()
        h.record(seq, f"packet {seq}".encode())
    return h


def stream_at(last: int, trigger: int = 0) -> PeerStream:
    s = PeerStream(trigger)
    s.last_seq = last
    return s


# --- the send history ------------------------------------------------------------------------


def test_sequence_numbers_start_at_one_and_the_history_keeps_the_last_packets():
    h = SendHistory(size=3)
    assert h.last_seq == 0 and len(h) == 0
    for _ in range(5):
        seq = h.next_seq()
        h.record(seq, b"p%d" % seq)
    assert h.last_seq == 5 and len(h) == 3
    answer = h.answer(1, 5, acked=0, now=10.0)
    assert answer.answers == (
        Retransmission(1, None, "seqno too low"),
        Retransmission(2, None, "seqno too low"),
        Retransmission(3, b"p3"),
        Retransmission(4, b"p4"),
        Retransmission(5, b"p5"),
    )
    assert answer.beyond is None


def test_answer_skips_what_the_peer_acknowledged_and_stops_beyond_our_last_seq():
    h = history_of(10)
    answer = h.answer(5, 14, acked=7, now=1.0)
    assert [a.seq for a in answer.answers] == [8, 9, 10]
    assert all(a.payload == f"packet {a.seq}".encode() for a in answer.answers)
    assert answer.beyond == 11


def test_a_packet_is_resent_at_most_once_per_rexmit_accept_seconds():
    h = history_of(3)
    assert [a.seq for a in h.answer(2, 2, 0, now=100.0).answers] == [2]
    assert h.answer(2, 2, 0, now=100.0 + REXMIT_ACCEPT - 0.01).answers == ()
    assert [a.seq for a in h.answer(2, 2, 0, now=100.0 + REXMIT_ACCEPT + 1e-9).answers] == [2]


def test_recently_resent_packets_do_not_count_against_the_batch():
    h = history_of(MAX_REXMIT_BATCH + 10)
    h.answer(1, 5, 0, now=0.0)  # 1..5 resent just now
    answer = h.answer(1, MAX_REXMIT_BATCH + 10, 0, now=0.1)
    assert [a.seq for a in answer.answers] == list(range(6, 6 + MAX_REXMIT_BATCH))


def test_a_seq_missing_inside_the_history_is_not_found():
    h = SendHistory()
    h.next_seq()  # seq 1 given out but never recorded (sending failed)
    h.record(h.next_seq(), b"two")
    assert h.answer(1, 2, 0, now=0.0).answers == (
        Retransmission(1, None, "seqno too low"),
        Retransmission(2, b"two"),
    )
    h2 = SendHistory()
    h2.record(h2.next_seq(), b"one")
    h2.next_seq()
    h2.record(h2.next_seq(), b"three")
    assert h2.answer(2, 2, 0, now=0.0).answers == (Retransmission(2, None, "seqno not found"),)


def test_a_packet_is_refused_at_most_once_per_rexmit_accept_seconds():
    """A replayed request for a packet out of the history gets one NS_nak_rexmit per
    REXMIT_ACCEPT, not one per datagram; refusals skipped count against the batch."""
    h = history_of(10, size=3)  # 1..7 are out of the history
    assert [(a.seq, a.reason) for a in h.answer(2, 2, 0, now=50.0).answers] == [(2, "seqno too low")]
    for i in range(1000):
        assert h.answer(2, 2, 0, now=50.0 + i * REXMIT_ACCEPT / 1000).answers == ()
    assert [a.seq for a in h.answer(2, 2, 0, now=50.0 + REXMIT_ACCEPT).answers] == [2]
    assert len(h.answer(1, 7, 0, now=60.0).answers) == 7
    assert [a.seq for a in h.answer(1, 10, 0, now=60.1).answers] == [8, 9, 10]
    big = history_of(2 * MAX_REXMIT_BATCH, size=3)
    assert len(big.answer(1, MAX_REXMIT_BATCH, 0, now=0.0).answers) == MAX_REXMIT_BATCH
    assert big.answer(1, 2 * MAX_REXMIT_BATCH, 0, now=0.1).answers == ()  # the batch went to the skipped ones
    # the memory of refusals stays bounded whatever is asked
    for first in range(1, 100_000, 7):
        h.answer(first, first + 6, 0, now=70.0)
    assert len(h._refused) <= 4 * MAX_REXMIT_BATCH + MAX_REXMIT_BATCH


def test_answering_a_huge_range_costs_the_batch_not_the_range():
    """A request from seq 1 after a long run (everything up to `acked` acknowledged) starts
    past `acked`: it did one step per acknowledged seq (10 million here, seconds of the loop)."""
    h = SendHistory()
    h.last_seq = 10_000_000  # a long run: 500 packets kept
    for _ in range(5):
        h.record(h.next_seq(), b"late")
    t0 = time.process_time()
    answer = h.answer(1, 2**62, acked=10_000_002, now=0.0)
    spent = time.process_time() - t0
    assert [a.seq for a in answer.answers] == [10_000_003, 10_000_004, 10_000_005]
    assert answer.beyond == 10_000_006
    assert spent < 0.05, spent


def test_an_empty_history_refuses_nothing_it_never_sent():
    h = SendHistory()
    answer = h.answer(1, 3, 0, now=0.0)
    assert answer.answers == () and answer.beyond == 1


# --- generation checks -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("known", "gen", "status", "dead", "seq", "status_seqno", "verdict"),
    [
        (5, 4, True, False, 9, 0, Generation.REPLAY),
        (5, 4, False, False, 9, 0, Generation.REPLAY),
        (0, 3, True, False, 1, 0, Generation.FIRST),
        (3, 4, True, False, 1, 0, Generation.RESTART),
        (3, 3, True, False, 7, 0, Generation.CURRENT),
        (3, 3, True, True, 7, 6, Generation.HEALED),
        (3, 3, True, True, 6, 6, Generation.STALE),
        (0, 0, True, True, 1, 0, Generation.CURRENT),
        (3, 4, False, False, 2, 0, Generation.EARLY),
        (0, 4, False, False, 2, 0, Generation.CURRENT),
        (3, 3, False, True, 2, 0, Generation.CURRENT),
    ],
)
def test_check_generation(known, gen, status, dead, seq, status_seqno, verdict):
    assert check_generation(known, gen, status=status, peer_dead=dead, seq=seq, status_seqno=status_seqno) == verdict


# --- receiving: gaps, the reorder window, acks -----------------------------------------------


def test_in_order_packets_are_acknowledged_on_the_trigger_digit():
    s = PeerStream(ack_trigger=3)
    rng = random.Random(1)
    kinds = [s.arrive(seq, 0.0, rng, resync=False, flow_control=True) for seq in range(1, 25)]
    assert all(a.kind == "next" and a.keep for a in kinds)
    assert [a.ack for a in kinds if a.ack is not None] == [3, 13, 23]
    s2 = PeerStream(ack_trigger=3)
    assert all(s2.arrive(q, 0.0, rng, resync=False, flow_control=False).ack is None for q in range(1, 25))


def test_the_first_packet_sets_the_sequence_wherever_it_starts():
    s = PeerStream(0)
    a = s.arrive(40, 0.0, random.Random(), resync=False, flow_control=True)
    assert a.kind == "next" and a.ack == 40 and s.last_seq == 40


def test_duplicate_and_old_packets_are_dropped():
    s = stream_at(10)
    rng = random.Random()
    dup = s.arrive(10, 0.0, rng, resync=False, flow_control=True)
    old = s.arrive(7, 0.0, rng, resync=False, flow_control=True)
    assert (dup.kind, dup.keep, old.kind, old.keep) == ("duplicate", False, "old", False)


def test_a_gap_schedules_one_request_per_missing_seq_inside_the_reorder_window():
    s = stream_at(10)
    rng = random.Random(7)
    a = s.arrive(14, 100.0, rng, resync=False, flow_control=True)
    assert a.kind == "gap" and a.keep and a.lost == 0 and a.ack is None
    assert s.missing == {11, 12, 13} and s.first_missing == 11 and s.last_seq == 14
    assert all(100.0 + REXMIT_MIN <= t <= 100.0 + REXMIT_INTERVAL for t in s.rexmit_due.values())
    # the same draws, in seq order
    check = random.Random(7)
    expected = [100.0 + check.uniform(REXMIT_MIN, REXMIT_INTERVAL) for _ in range(3)]
    assert [s.rexmit_due[k] for k in (11, 12, 13)] == expected
    assert sorted(s.deadlines()) == sorted(s.rexmit_due.values())


def test_too_many_missing_restarts_the_tracking_and_counts_them_lost():
    s = stream_at(10)
    a = s.arrive(12 + FLOWCONTROL_LIMIT, 0.0, random.Random(), resync=False, flow_control=True)
    assert a.kind == "gap" and a.lost == FLOWCONTROL_LIMIT + 1
    assert s.missing == set() and s.rexmit_due == {} and s.last_seq == 12 + FLOWCONTROL_LIMIT


def test_missing_seqs_are_bounded_the_lowest_go_first():
    s = stream_at(0)
    rng = random.Random()
    seq = 1
    while len(s.missing) < MAX_MISSING:
        seq += 2  # one missing in two
        s.arrive(seq, 0.0, rng, resync=False, flow_control=True)
    lowest = min(s.missing)
    s.ask(lowest, 0.0)
    s.arrive(seq + 2, 0.0, rng, resync=False, flow_control=True)
    assert len(s.missing) == MAX_MISSING and lowest not in s.missing
    assert lowest not in s.rexmit_due and lowest not in s.requested


def test_a_reordered_packet_fills_its_gap_before_any_request():
    s = stream_at(10)
    rng = random.Random()
    s.arrive(12, 0.0, rng, resync=False, flow_control=True)
    a = s.arrive(11, 0.01, rng, resync=False, flow_control=True)
    assert a.kind == "filled" and a.keep
    assert a.fill is not None and not a.fill.requested and a.fill.recovered
    assert s.missing == set() and s.first_missing is None and s.rexmit_due == {}


def test_requests_come_due_then_repeat_every_rexmit_interval():
    s = stream_at(10)
    s.arrive(13, 0.0, random.Random(3), resync=False, flow_control=True)
    assert s.due_requests(0.0) == []
    assert s.due_requests(REXMIT_INTERVAL) == [11, 12]
    assert s.ask(11, 1.0) is True and s.ask(11, 1.25) is False
    assert s.rexmit_due[11] == 1.25 + REXMIT_INTERVAL and s.requested == {11}
    s.cancel_request(12)
    assert 12 in s.missing and 12 not in s.rexmit_due
    fill = s.fill(11, flow_control=True)
    assert fill is not None and fill.requested and not fill.recovered
    assert s.first_missing == 12


def test_filling_the_first_gap_acknowledges_the_held_back_trigger():
    # trigger 5: seq 15 would have been acked, but 14 was missing
    s = stream_at(13, trigger=5)
    rng = random.Random()
    assert s.arrive(15, 0.0, rng, resync=False, flow_control=True).ack is None
    assert s.arrive(16, 0.0, rng, resync=False, flow_control=True).ack is None
    a = s.arrive(14, 0.0, rng, resync=False, flow_control=True)
    assert a.fill is not None and a.fill.ack == 15
    # without flow control nothing is acknowledged
    s2 = stream_at(13, trigger=5)
    s2.arrive(16, 0.0, rng, resync=False, flow_control=False)
    assert s2.fill(14, flow_control=False).ack is None


def test_filling_a_later_gap_acknowledges_nothing():
    s = stream_at(10, trigger=5)
    rng = random.Random()
    s.arrive(12, 0.0, rng, resync=False, flow_control=True)  # 11 missing
    s.arrive(14, 0.0, rng, resync=False, flow_control=True)  # 13 missing
    fill = s.fill(13, flow_control=True)
    assert fill is not None and fill.ack is None and s.first_missing == 11
    assert s.fill(99, flow_control=True) is None


def test_an_older_seq_of_a_new_generation_restarts_the_tracking():
    s = stream_at(50, trigger=2)
    s.acked = 9
    a = s.arrive(2, 0.0, random.Random(), resync=True, flow_control=True)
    assert a.kind == "resync" and a.keep and a.ack == 2
    assert s.last_seq == 2 and s.acked == 0 and s.missing == set()


def test_acks_of_our_packets():
    s = PeerStream(0)
    assert s.acknowledge(10, sent=20) and s.acked == 10
    assert s.acknowledge(5, sent=20) and s.acked == 10  # overtaken: nothing new
    assert not s.acknowledge(21, sent=20) and s.acked == 10  # never sent
    s.reset()
    assert s.acked == 0 and s.last_seq is None


def test_ack_trigger_digits():
    for trigger in range(ACK_DIV):
        s = PeerStream(trigger)
        due = [q for q in range(1, 31) if s.ack_due(q, True)]
        assert due == [q for q in range(1, 31) if q % ACK_DIV == trigger]
