"""Tests for ha.node.inbound: admission of received datagrams (signature, required
fields, own packets, unknown senders), addressing, and the per-source account of
rejected datagrams, without a node."""

from __future__ import annotations

import logging

from nodefakes import KEYS, UUID_A, UUID_B

from ha.auth import parse_authkeys
from ha.node.inbound import (
    Dropped,
    Inbound,
    RejectLedger,
    addressed_to,
    admit,
    parse_dec,
    parse_hex,
)
from ha.wire import Message, add_standard_fields, encode_packet

WRONG = parse_authkeys(b"auth 1\n1 sha1 guessed\n", "wrong")
OTHER_INDEX = parse_authkeys(b"auth 2\n2 sha1 clusterkey\n", "other-index")


def packet(pairs, *, src="nodeb", seq=5, hg=3, ts=1_700_000_000, keys=KEYS, uuid=UUID_B, destuuid=None) -> bytes:
    msg = add_standard_fields(
        Message.from_pairs(pairs),
        src=src,
        srcuuid=uuid,
        hg=hg,
        ts=ts,
        ttl=3,
        seq=seq,
        ld=None if seq is None else "0.00",
        destuuid=destuuid,
    )
    return encode_packet(msg, keys)


def check(data: bytes) -> Inbound | Dropped:
    return admit(data, "10.0.0.2:694", KEYS, me="nodea", uuid=UUID_A, peers={"nodeb"})


def test_parse_fields():
    assert parse_hex("1f") == 31 and parse_hex("") is None and parse_hex(None) is None
    assert parse_hex("x1") is None and parse_hex("1" * 17) is None
    assert parse_dec("42") == 42 and parse_dec("4a") is None and parse_dec("٣") is None and parse_dec("1" * 20) is None


def test_a_peers_message_is_admitted():
    verdict = check(packet([("t", "status"), ("st", "up")], src="NodeB"))
    assert isinstance(verdict, Inbound)
    assert (verdict.mtype, verdict.src, verdict.peer_key, verdict.seq, verdict.gen, verdict.noseq) == (
        "status",
        "NodeB",
        "nodeb",
        5,
        3,
        False,
    )
    assert verdict.ts == 1_700_000_000 and verdict.srcuuid == UUID_B
    ack = check(packet([("t", "NS_ackmsg"), ("dest", "nodea"), ("ackseq", "a")], seq=None))
    assert isinstance(ack, Inbound) and ack.noseq and ack.seq == 0


def test_signature_failures_are_counted_per_source():
    forged = check(packet([("t", "status")], keys=WRONG))
    assert isinstance(forged, Dropped) and (forged.counter, forged.per_source, forged.log_key, forged.level) == (
        "bad_auth",
        True,
        "bad-auth",
        logging.WARNING,
    )
    assert forged.message.startswith("packet from 10.0.0.2:694 failed authentication")
    unknown = check(packet([("t", "status")], keys=OTHER_INDEX))
    assert isinstance(unknown, Dropped) and (unknown.counter, unknown.per_source) == ("unknown_auth_index", True)
    garbage = check(b"garbage")
    assert isinstance(garbage, Dropped) and (garbage.counter, garbage.per_source, garbage.log_key) == (
        "malformed",
        True,
        "malformed",
    )


def test_missing_or_bad_fields():
    bad_ts = check(packet([("t", "status")], ts=0))
    assert isinstance(bad_ts, Dropped) and (bad_ts.counter, bad_ts.per_source, bad_ts.log_key) == (
        "malformed",
        False,
        "fields",
    )
    no_seq = Message.from_pairs([("t", "status"), ("src", "nodeb"), ("ts", "10"), ("hg", "1")])
    verdict = check(encode_packet(no_seq, KEYS))
    assert isinstance(verdict, Dropped) and verdict.message == "status from nodeb has no valid seq"
    no_src = Message.from_pairs([("t", "status"), ("ts", "10")])
    verdict = check(encode_packet(no_src, KEYS))
    assert isinstance(verdict, Dropped) and verdict.per_source and "lacks t, src or ts" in verdict.message
    bad_gen = Message.from_pairs([("t", "status"), ("src", "nodeb"), ("seq", "1"), ("ts", "10"), ("hg", "zz")])
    verdict = check(encode_packet(bad_gen, KEYS))
    assert isinstance(verdict, Dropped) and verdict.message == "status from nodeb has a bad generation"
    no_gen = Message.from_pairs([("t", "status"), ("src", "nodeb"), ("seq", "1"), ("ts", "10")])
    verdict = check(encode_packet(no_gen, KEYS))
    assert isinstance(verdict, Inbound) and verdict.gen == 0


def test_own_packets_name_conflicts_and_strangers():
    assert check(packet([("t", "status")], src="nodea", uuid=UUID_A)) == Dropped("own")
    conflict = check(packet([("t", "status")], src="nodea", uuid=UUID_B))
    assert isinstance(conflict, Dropped) and (conflict.counter, conflict.per_source, conflict.level) == (
        "name_conflict",
        True,
        logging.ERROR,
    )
    stranger = check(packet([("t", "status")], src="mallory"))
    assert isinstance(stranger, Dropped) and stranger.counter == "unknown_node" and "'mallory'" in stranger.message


def test_addressing():
    assert addressed_to(Message.from_pairs([("t", "x")]), "nodea", UUID_A)
    assert addressed_to(Message.from_pairs([("t", "x"), ("dest", "NodeA")]), "nodea", UUID_A)
    assert not addressed_to(Message.from_pairs([("t", "x"), ("dest", "nodeb")]), "nodea", UUID_A)
    to_a = Message.from_pairs([("t", "x"), ("dest", "nodeb"), ("destuuid", UUID_A)])
    assert addressed_to(to_a, "nodea", UUID_A)  # the uuid decides
    zero = Message.from_pairs([("t", "x"), ("dest", "nodea"), ("destuuid", bytes(16))])
    assert addressed_to(zero, "nodea", UUID_A)  # an all-zero uuid does not


def test_the_ledger_keeps_the_busiest_sources():
    ledger = RejectLedger(limit=2)
    ledger.add("10.0.0.1:694", "bad_auth", 1.0)
    ledger.add("10.0.0.1:4000", "malformed", 2.0)
    ledger.add("10.0.0.2", "unknown_node", 3.0)
    ledger.add("10.0.0.3:694", "malformed", 4.0)  # the quietest (10.0.0.2) makes room
    assert ledger.rows(5.0) == [
        {"address": "10.0.0.1", "packets": 2, "bad_auth": 1, "malformed": 1, "last_s": 3.0},
        {"address": "10.0.0.3", "packets": 1, "malformed": 1, "last_s": 1.0},
    ]
    assert ledger.rows(0.0)[0]["last_s"] == 0.0
