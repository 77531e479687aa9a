"""Tests for ha.node.membership: the peers' liveness (deadtime, initdead, warntime,
late heartbeats, grace after a stall, dead/alive transitions), without a node."""

from __future__ import annotations

from ha.node.membership import DEAD, REPORTABLE, LateHeartbeat, Membership, Peer


def members(*names: str, deadtime: float = 2.0, warntime: float = 1.0, initdead: float = 10.0) -> Membership:
    return Membership(names, deadtime=deadtime, warntime=warntime, initdead=initdead)


def test_peers_are_kept_by_lower_case_name_in_configuration_order():
    m = members("NodeB", "nodec")
    assert list(m.peers) == ["nodeb", "nodec"]
    assert m.get("NODEB") is m.peers["nodeb"] and m.get("nobody") is None
    peer = m.peers["nodeb"]
    assert (peer.name, peer.key, peer.status, peer.dead_time, peer.dead) == ("NodeB", "nodeb", "init", 2.0, False)


def test_initdead_applies_until_the_links_are_up():
    m = members("nodeb")
    m.start(100.0)
    peer = m.peers["nodeb"]
    assert m.dead_limit(peer) == 10.0 and m.deadlines() == [110.0]
    assert m.timed_out(109.9) == []
    [(dead, why)] = m.timed_out(110.0)
    assert dead is peer and why == "not heard within initdead (10.0 s)"


def test_once_heard_a_timeout_names_the_silence():
    m = members("nodeb")
    m.start(0.0)
    peer = m.peers["nodeb"]
    peer.anypacketsyet = True
    peer.heard(3.0)
    [(_, why)] = m.timed_out(13.5)
    assert why == "no heartbeat for 10.50 s (deadtime 10.0 s)"


def test_links_up_switches_to_the_advertised_deadtime():
    m = members("nodeb", "nodec")
    b, c = m.peers["nodeb"], m.peers["nodec"]
    b.anypacketsyet = True
    assert not m.links_up() and not m.linksup
    c.declare_dead()
    assert m.links_up() and m.linksup
    b.take_status("up", 5, 100, 1500)  # dt 1500 ms
    assert m.dead_limit(b) == 1.5
    b.heard(50.0)
    assert m.deadlines() == [51.5]  # the dead peer has none
    assert m.timed_out(51.4) == [] and [p for p, _ in m.timed_out(51.5)] == [b]


def test_grace_after_a_stall_only_for_live_peers():
    m = members("nodeb", "nodec")
    m.start(10.0)
    m.peers["nodec"].declare_dead()
    m.give_grace(3.0)
    assert m.peers["nodeb"].last_heard == 13.0 and m.peers["nodec"].last_heard == 10.0


def test_live_peers():
    m = members("nodeb", "nodec")
    b, c = m.peers["nodeb"], m.peers["nodec"]
    assert m.first_alive() is b and m.live_peer() is b and not m.any_heard_alive()
    b.shutdone = True
    c.anypacketsyet = True
    assert m.first_alive() is b and m.live_peer() is c and m.any_heard_alive()
    c.declare_dead()
    assert m.live_peer() is None and not m.any_heard_alive()
    b.declare_dead()
    assert m.first_alive() is None
    assert members().live_peer() is None and members().links_up()


def test_death_and_restart_forget_the_old_status():
    peer = Peer("nodeb", 2.0)
    peer.anypacketsyet = True
    peer.take_status("active", 7, 1000, None)
    peer.last_status = 5.0
    peer.declare_dead()
    assert peer.dead and peer.status == DEAD
    peer.forget()
    assert (peer.anypacketsyet, peer.last_status, peer.rmt_lastupdate) == (False, None, 0)
    assert peer.status_seqno == 7  # a healed partition's status must be newer
    peer.shutdone = True
    peer.restarted()
    assert (peer.status_seqno, peer.rmt_lastupdate, peer.has_resources, peer.shutdone) == (0, 0, True, False)


def test_status_messages():
    peer = Peer("nodeb", 2.0)
    assert peer.take_status("up", 1, 100, 8000)  # dt 8000 ms
    assert peer.dead_time == 8.0 and (peer.status_seqno, peer.rmt_lastupdate) == (1, 100)
    assert not peer.take_status("up", 2, 101, None)  # no change, no dt: deadtime kept
    assert peer.dead_time == 8.0 and peer.status_seqno == 2
    assert not peer.take_status("active", 1, 102, 500)  # a retransmitted older one
    assert peer.status == "up" and peer.dead_time == 8.0
    assert peer.take_status("active", 3, 102, 500) and peer.dead_time == 0.5
    assert peer.stale_status(2, 101) and not peer.stale_status(2, 103) and not peer.stale_status(4, 50)


def test_reports_are_deduplicated_and_only_for_reportable_statuses():
    peer = Peer("nodeb", 2.0)
    assert peer.should_report("up") and not peer.should_report("up")
    assert not peer.should_report("ping")
    assert peer.should_report(DEAD) and peer.reported == DEAD
    assert set(REPORTABLE) == {"init", "up", "active", "dead"}


def test_late_heartbeats():
    m = members("nodeb", deadtime=2.0, warntime=1.0)
    peer = m.peers["nodeb"]
    assert m.status_arrived(peer, 10.0) is None  # the first one
    assert m.status_arrived(peer, 11.0) is None  # exactly warntime: on time
    assert m.status_arrived(peer, 12.5) == LateHeartbeat(1.5, False)
    late = m.status_arrived(peer, 15.0)
    assert late == LateHeartbeat(2.5, True) and peer.last_status == 15.0
    assert not peer.dead  # late beyond deadtime is only reported
