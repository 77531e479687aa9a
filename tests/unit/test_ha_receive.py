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

from test_ha_node import KEYS, OTHER_KEYS, forge, new_node, status_pkt, steady_pair

from ha.node import MAX_REJECT_SOURCES, Acquire, Log, Send
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
