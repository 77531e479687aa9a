"""The node's receive path under hostile and disordered input (ha.node).

* rejected datagrams are counted per source address, in a bounded table;
* a reordered sequence (heartbeat 3.0.6 sometimes sends seq N+1 just before N)
  is not loss: nothing is counted lost, no retransmission is asked for and no
  status copies are sent, unless the packet is still missing when its first
  retransmission request is due;
* replayed acknowledgements are old news, not accepted packets;
* the reason of an acquisition after the peer's ``hb_standby`` says so.

The node is driven with bytes and times; packets are built and signed as the
peer would (``test_ha_node.forge``).
"""

from __future__ import annotations

import logging
import random

from test_ha_node import KEYS, OTHER_KEYS, UUIDS, forge, make_config, new_node, status_pkt, steady_pair

from ha.auth import parse_authkeys
from ha.model import NodeIdentity
from ha.node import MAX_REJECT_SOURCES, Acquire, HeartbeatNode, Log, Send
from ha.wire import decode_packet


def _sent_types(actions) -> list[str]:
    return [decode_packet(a.payload, KEYS).msg_type or "" for a in actions if isinstance(a, Send)]


def _logs(actions) -> str:
    return "\n".join(a.message for a in actions if isinstance(a, Log))


def test_rejected_datagrams_are_counted_per_source_address():
    node = node_up()
    forged = status_pkt(2, "up", keys=OTHER_KEYS)
    for _ in range(3):
        node.on_packet(forged, "10.9.9.9:694", 1.0)
    node.on_packet(forged, "10.9.9.9:40000", 1.1)  # another port, same address
    node.on_packet(b"garbage", "10.9.9.8:694", 1.2)
    node.on_packet(forge([("t", "status"), ("st", "up")], src="stranger", seq=1), "10.9.9.7:694", 1.3)
    rows = node.rejected_sources(2.0)
    assert rows == [
        {"address": "10.9.9.9", "packets": 4, "bad_auth": 4, "last_s": 0.9},
        {"address": "10.9.9.7", "packets": 1, "unknown_node": 1, "last_s": 0.7},
        {"address": "10.9.9.8", "packets": 1, "malformed": 1, "last_s": 0.8},
    ]
    assert node.counters["bad_auth"] == 4 and node.counters["malformed"] == 1
    # accepted packets are not in the table
    node.on_packet(status_pkt(2, "up"), "10.0.0.2:694", 2.0)
    assert sum(r["packets"] for r in node.rejected_sources(2.0)) == 6


def test_our_own_datagrams_coming_back_are_known_without_a_parse(monkeypatch):
    """Our broadcasts come back to us, and anybody can echo them at us: each is ours
    (counted own) without a MAC or a parse (77 us each before, 1 us now)."""
    import ha.wire as wire

    node = node_up()
    ours: list[bytes] = []
    t = 0.5
    while len(ours) < 5:
        t += 0.05
        ours += [a.payload for a in node.on_tick(t) if isinstance(a, Send)]
    parses: list[bytes] = []
    real = wire.parse_packet
    monkeypatch.setattr(wire, "parse_packet", lambda data: parses.append(data) or real(data))
    before = dict(node.counters)
    for i in range(1000):
        assert node.on_packet(ours[i % len(ours)], "10.9.9.9:694", t) == []
    moved = {k: v - before[k] for k, v in node.counters.items() if v != before[k]}
    assert moved == {"received": 1000, "own": 1000} and parses == [], (moved, len(parses))


def test_replays_of_an_earlier_generation_are_counted_per_source_address():
    """An authentic packet of the peer's earlier run is rejected as a replay: the table of
    rejected datagrams says from where it came (it was counted in total only)."""
    node = node_up()  # nodeb at generation 200
    old_run = forge([("t", "status"), ("st", "up")], seq=9, hg=199)
    for _ in range(3):
        node.on_packet(old_run, "10.9.9.5:694", 1.0)
    node.on_packet(forge([("t", "NS_ackmsg"), ("dest", "nodea"), ("ackseq", "1")], hg=199), "10.9.9.5:694", 1.5)
    assert node.counters["replay"] == 4
    assert node.rejected_sources(2.0) == [{"address": "10.9.9.5", "packets": 4, "replay": 4, "last_s": 0.5}]


def test_the_per_source_table_is_bounded_and_keeps_the_busiest():
    node = node_up()
    for _ in range(50):
        node.on_packet(b"x", "10.1.0.1:694", 1.0)
    for i in range(10 * MAX_REJECT_SOURCES):  # a spoofing flood of ever new addresses
        node.on_packet(b"x", f"10.2.{i // 250}.{i % 250}:694", 1.0)
    rows = node.rejected_sources(1.0)
    assert len(rows) == MAX_REJECT_SOURCES
    assert rows[0] == {"address": "10.1.0.1", "packets": 50, "malformed": 50, "last_s": 0.0}
    assert node.counters["malformed"] == 50 + 10 * MAX_REJECT_SOURCES


def test_a_datagram_rejected_at_admission_does_not_recompute_the_timers(monkeypatch):
    """Rejecting a forged datagram changes counters only: the node keeps the timers it had
    instead of recomputing every deadline (a fifth of the cost of a rejection); an
    accepted packet, or a stall seen on the way in, still recomputes them."""
    node = node_up()
    calls: list[float] = []
    real = node.next_deadline
    monkeypatch.setattr(node, "next_deadline", lambda: calls.append(1) or real())
    due = node.next_deadline()
    calls.clear()
    forged = status_pkt(2, "up", keys=OTHER_KEYS)
    stranger = forge([("t", "status"), ("st", "up")], src="stranger", seq=1)
    for i, raw in enumerate((forged, b"garbage", stranger, b"###\n" + b"7:(0)a=bc," * 6000 + b"%%%\n")):
        assert all(isinstance(a, Log) for a in node.on_packet(raw, "10.9.9.9:694", 0.6 + i * 0.01))
    assert calls == [] and node.next_deadline() == due
    assert node.counters["bad_auth"] == 2 and node.counters["malformed"] == 1 and node.counters["unknown_node"] == 1
    calls.clear()
    node.on_packet(status_pkt(2, "up"), "10.0.0.2:694", 0.7)
    assert calls == [1]
    calls.clear()
    node.on_packet(forged, "10.9.9.9:694", due + 5.0)  # the loop stalled for 5 s: counted, timers recomputed
    assert node.counters["stalls"] == 1 and calls == [1]


def test_a_crc_index_in_authkeys_is_warned_about_at_start():
    """crc is a checksum: with a crc index configured, a packet anybody forged is accepted
    (here a status of nodeb's that nodeb never sent), so the node says so when it starts."""
    crc_keys = parse_authkeys(b"auth 1\n1 sha1 secret\n2 crc\n", "/etc/ha.d/authkeys")
    node = HeartbeatNode(make_config("nodea"), crc_keys, NodeIdentity(UUIDS["nodea"], 300), rng=random.Random(5))
    out = node.start(0.0)
    warnings = [a.message for a in out if isinstance(a, Log) and a.level == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("/etc/ha.d/authkeys: index 2 uses crc"), warnings
    anybody = parse_authkeys(b"auth 2\n2 crc\n", "anybody")
    forged = forge([("t", "status"), ("st", "active")], seq=1, hg=7, keys=anybody)
    node.on_packet(forged, "10.9.9.9:694", 0.1)
    assert node.counters["accepted"] == 1 and node.snapshot().peers[0].status == "active"
    assert not [a for a in new_node().start(0.0) if isinstance(a, Log) and a.level >= logging.WARNING]


def test_a_replayed_authentic_datagram_is_old_or_duplicate_without_a_parse(monkeypatch):
    """The bytes of a datagram the node took, sent again (anybody on the link can capture
    and replay one), are counted as `sequence` would count them, without a MAC or a parse:
    a parse made a replayed status cost 150 us, fifteen times a forged one. A new
    generation of the peer starts over: its old packets are then replays, parsed as such."""
    import ha.wire as wire

    node = node_up()  # seq 1 taken
    taken = {seq: status_pkt(seq, "up") for seq in (2, 3)}
    for seq, raw in taken.items():
        node.on_packet(raw, "10.0.0.2:694", 0.5 + seq / 100)
    parses: list[bytes] = []
    real = wire.parse_packet
    monkeypatch.setattr(wire, "parse_packet", lambda data: parses.append(data) or real(data))
    before = dict(node.counters)
    for _ in range(500):
        node.on_packet(taken[2], "10.9.9.9:694", 0.6)
        node.on_packet(taken[3], "10.9.9.9:694", 0.6)
    moved = {k: v - before[k] for k, v in node.counters.items() if v != before[k]}
    assert moved == {"received": 1000, "old": 500, "duplicate": 500}, moved
    assert parses == [] and node.snapshot().peers[0].last_seq == 3
    # the peer restarts (generation 201): what it sent before is a replay of an older run
    node.on_packet(status_pkt(1, "up", hg=201), "10.0.0.2:694", 0.7)
    node.on_packet(taken[3], "10.9.9.9:694", 0.71)
    assert node.counters["replay"] == 1 and node.counters["old"] == before["old"] + 500
    assert parses == [status_pkt(1, "up", hg=201), taken[3]]
    # any bytes-like datagram, hashable or not, goes through
    node.on_packet(bytearray(status_pkt(2, "up", hg=201)), "10.0.0.2:694", 0.72)
    assert node.snapshot().peers[0].last_seq == 2 and node.counters["internal_errors"] == 0


def node_up():
    node = new_node()
    node.start(0.0)
    node.on_packet(status_pkt(1, "up"), "10.0.0.2:694", 0.5)
    assert node.snapshot().peers[0].status == "up"
    return node


def test_a_reordered_packet_is_not_loss():
    node = node_up()
    out = node.on_packet(status_pkt(3, "up"), "b", 0.60)  # seq 3 before seq 2
    out += node.on_packet(status_pkt(2, "up"), "b", 0.61)
    t = 0.61
    while t < 2.0:  # past every retransmission delay
        t += 0.05
        out += node.on_tick(t)
    assert node.counters["lost_packets"] == 0 and node.counters["reordered"] == 1
    assert "NS_rexmit" not in _sent_types(out)
    assert "packet loss seen" not in _logs(out)
    assert node.counters["copies_sent"] == 0
    assert not node.snapshot().peers[0].missing


def test_a_packet_still_missing_at_its_first_request_is_lost():
    node = node_up()
    out = node.on_packet(status_pkt(3, "up"), "b", 0.60)  # seq 2 never comes
    assert node.counters["lost_packets"] == 0  # not yet: it may be late
    t = 0.60
    while t < 1.2:
        t += 0.05
        out += node.on_tick(t)
    assert node.counters["lost_packets"] == 1 and node.counters["reordered"] == 0
    assert "NS_rexmit" in _sent_types(out)
    assert "packet loss seen" in _logs(out) and "lost packet(s) from nodeb (seq 2)" in _logs(out)
    requests = node.counters["rexmit_requests_sent"]
    assert requests >= 1
    while t < 1.8:  # asked again, but lost only once
        t += 0.05
        node.on_tick(t)
    assert node.counters["rexmit_requests_sent"] > requests and node.counters["lost_packets"] == 1
    # the retransmission arrives: recovered, not counted as reordered
    node.on_packet(status_pkt(2, "up"), "b", t)
    assert node.counters["reordered"] == 0 and not node.snapshot().peers[0].missing


def test_a_replayed_ack_is_old_not_accepted():
    node = node_up()
    t = 0.5
    while node.counters["sent"] < 15:  # our seq goes past 10
        t += 0.05
        node.on_tick(t)
    ack = forge([("t", "NS_ackmsg"), ("dest", "nodea"), ("ackseq", format(10, "x"))], dest="nodea")
    accepted = node.counters["accepted"]
    node.on_packet(ack, "b", t)
    assert node.counters["acks_received"] == 1 and node.counters["accepted"] == accepted + 1
    for _ in range(3):
        node.on_packet(ack, "b", t)  # replays
    assert node.counters["acks_received"] == 1 and node.counters["accepted"] == accepted + 1
    assert node.counters["old"] == 3
    # an ack of an older generation of the peer is a replay
    old_gen = forge([("t", "NS_ackmsg"), ("dest", "nodea"), ("ackseq", format(12, "x"))], dest="nodea", hg=199)
    node.on_packet(old_gen, "b", t)
    assert node.counters["replay"] == 1 and node.counters["acks_received"] == 1


def test_replayed_naks_and_rexmit_requests_are_neither_logged_nor_answered_per_datagram():
    """An authentic NS_nak_rexmit or NS_rexmit of the peer's current generation carries no
    seq: anybody on the link can replay one captured earlier. Each replayed nak logged an
    ERROR (a thousand datagrams, a thousand lines), and each replayed request for a packet
    out of our history sent an NS_nak_rexmit: a log flood and a reflector."""
    node = node_up()
    out = node.on_packet(status_pkt(3, "up"), "b", 0.60)  # seq 2 missing
    nak = forge([("t", "NS_nak_rexmit"), ("firstseq", "2"), ("dest", "nodea"), ("info", "seqno too low")])
    out = node.on_packet(nak, "b", 0.61)  # the peer gives seq 2 up: logged once
    assert _logs(out).count("irretrievably lost packet") == 1 and node.counters["naks_received"] == 1
    old = node.counters["old"]
    out = []
    for i in range(1000):
        out += node.on_packet(nak, "b", 0.62 + i * 1e-4)
    assert "irretrievably" not in _logs(out) and not [a for a in out if isinstance(a, Log)]
    assert node.counters["naks_received"] == 1 and node.counters["old"] == old + 1000
    # a request for seq 1, which our history no longer holds, replayed a thousand times
    history = node._outbound.history
    history.size = 1
    t, target = 0.7, history.last_seq + 2
    while history.last_seq < target:  # two more sent: only the last is kept
        t += 0.05
        node.on_tick(t)
    assert len(history) == 1
    request = forge([("t", "NS_rexmit"), ("dest", "nodea"), ("firstseq", "1"), ("lastseq", "1")], dest="nodea")
    out = []
    for i in range(1000):
        out += node.on_packet(request, "b", t + i * 1e-4)  # 0.1 s: within one REXMIT_ACCEPT
    assert _sent_types(out) == ["NS_nak_rexmit"] and node.counters["naks_sent"] == 1


def test_acquisition_after_the_peers_standby_names_the_standby():
    sim = steady_pair()
    assert sim.holders() == {"nodea"}
    t0 = sim.now
    sim.handle("nodea", sim.nodes["nodea"].node.standby(sim.now, "all"))
    sim.run_until(lambda: sim.holders() == {"nodeb"}, t0 + 5)
    reasons = [a.reason for a in sim.actions("nodeb", Acquire, since=t0)]
    assert reasons and all("nodea went standby (all)" in r for r in reasons), reasons
    assert not any("failback" in r for r in reasons)


def test_acquisition_after_our_takeover_request_names_the_request():
    # nodeb asks for everything (heartbeat's hb_takeover): nodea goes standby, nodeb takes the VIP
    sim = steady_pair()
    t0 = sim.now
    sim.handle("nodeb", sim.nodes["nodeb"].node.takeover(sim.now, "all"))
    sim.run_until(lambda: sim.holders() == {"nodeb"}, t0 + 5)
    reasons = [a.reason for a in sim.actions("nodeb", Acquire, since=t0)]
    assert reasons == ["takeover requested: the peer nodea went standby (all), taking its groups"], reasons
    # asking for the peer's groups only ("foreign", ours point of view): as Debian's
    # rc.d/hb_takeover does, the peer goes standby for its local groups
    sim = steady_pair()
    t0 = sim.now
    sim.handle("nodeb", sim.nodes["nodeb"].node.takeover(sim.now, "foreign"))
    sim.run_until(lambda: sim.holders() == {"nodeb"}, t0 + 5)
    reasons = [a.reason for a in sim.actions("nodeb", Acquire, since=t0)]
    assert reasons == ["takeover requested: the peer nodea went standby (local), taking its groups"], reasons


def test_the_peers_standby_foreign_is_not_a_failback_handshake():
    # nodea hands everything to nodeb, which holds nodea's group from then on (no failback
    # after a standby); later nodeb goes standby for its foreign groups (hb_standby foreign):
    # nodea takes its group back because nodeb went standby, not in a failback handshake
    sim = steady_pair()
    sim.handle("nodea", sim.nodes["nodea"].node.standby(sim.now, "all"))
    sim.run_until(lambda: sim.holders() == {"nodeb"}, sim.now + 5)
    sim.run(sim.now + 5)
    assert sim.holders() == {"nodeb"}
    t0 = sim.now
    sim.handle("nodeb", sim.nodes["nodeb"].node.standby(sim.now, "foreign"))
    sim.run_until(lambda: sim.holders() == {"nodea"}, t0 + 5)
    reasons = [a.reason for a in sim.actions("nodea", Acquire, since=t0)]
    assert reasons == ["the peer nodeb went standby (foreign): taking our groups"], reasons


def test_the_failback_handshake_after_a_restart_is_named_so():
    # nodea crashes, nodeb takes its group, nodea restarts: nodeb hands it back (auto_failback)
    sim = steady_pair()
    sim.kill("nodea")
    sim.run_until(lambda: sim.holders() == {"nodeb"}, sim.now + 5)
    t0 = sim.now
    sim.restart("nodea")
    sim.run_until(lambda: sim.holders() == {"nodea"}, t0 + 30)
    reasons = [a.reason for a in sim.actions("nodea", Acquire, since=t0)]
    assert reasons == ["failback handshake: the peer nodeb hands our groups back"], reasons
