"""Tests for ha.node.resources: heartbeat's v1 resource protocol (nice_failback,
takeover of a dead peer, the failback handshake, standby refusals, split brain
healed, the graceful stop's releases), driven directly through a fake host."""

from __future__ import annotations

import logging

import pytest
from nodefakes import (
    TIMERS,
    VIP_A,
    VIP_B,
    FakeHost,
    config,
    confirm_all,
    membership,
    peer_msg,
    resource_protocol,
    stable_holding_ours,
)

from ha.connectivity import Connectivity
from ha.node.api import REANNOUNCE_REASON, Acquire, Release
from ha.node.groups import ALL, FOREIGN, LOCAL, NONE
from ha.node.resources import HB_RQSTDELAY, STOP_WAIT, ResourceProtocol, upd_rsc


def setup(*, auto_failback=True, compat="directord"):
    return resource_protocol(100.0, auto_failback=auto_failback, compat=compat)


def test_upd_rsc():
    assert upd_rsc(True, ALL, LOCAL) == LOCAL
    assert upd_rsc(False, LOCAL, FOREIGN) == ALL
    assert upd_rsc(False, ALL, NONE) == NONE


def test_the_local_takeover_delay():
    assert setup(compat="heartbeat")[0].rqst_delay == HB_RQSTDELAY
    assert setup()[0].rqst_delay == 2 * TIMERS.keepalive


def test_both_starting_each_takes_its_own_groups_after_the_delay():
    rsc, host, peer = setup()
    rsc.comm_up()
    assert host.types() == ["starting"] and rsc.rstate == "starting"
    rsc.peer_starting(peer, comm_up=True)
    assert rsc.rstate == "rscrcvd" and host.last("resource")["isstable"] == "0"
    assert rsc.local_takeover_time == host.now + rsc.rqst_delay
    rsc.process_resources(
        peer_msg(("t", "resource"), ("rsc_hold", "none"), ("rtype", "full"), ("isstable", "0")), from_self=False
    )
    assert host.actions == [] and rsc.deadlines() == [host.now + rsc.rqst_delay]
    host.now += rsc.rqst_delay
    rsc.timers(host.now)
    assert host.actions == [Acquire(VIP_A, "local takeover delay passed: taking our own groups")]
    assert rsc.rstate == "stable" and rsc.i_hold == LOCAL
    confirm_all(rsc, host)
    resp = host.last("ip-request-resp")
    assert (resp["dest"], resp["weown"], resp["ok"]) == ("nodea", "yes", "OK")
    assert host.last("resource") == {
        "t": "resource",
        "rsc_hold": "local",
        "rtype": "full",
        "isstable": "1",
        "info": "req_our_resources()",
    }


def test_a_starting_before_comm_up_is_answered_at_comm_up():
    rsc, host, peer = setup()
    rsc.peer_starting(peer, comm_up=False)
    assert host.sent == [] and rsc.early_starting == {"nodeb"}
    rsc.comm_up()
    assert host.types() == ["starting", "resource"] and rsc.rstate == "rscrcvd" and not rsc.early_starting


def test_a_stable_peer_lets_the_preferred_owner_take_its_groups_at_once():
    rsc, host, peer = setup()
    stable_holding_ours(rsc, host, peer)
    assert rsc.rstate == "stable" and rsc.other_is_stable and rsc.i_hold == LOCAL
    assert rsc.table.infos()[0].held and not rsc.table.infos()[1].held
    assert rsc.transition_refusal(running=True, comm_up=True) is None


def test_dead_peer_takeover_then_failback_handshake():
    rsc, host, peer = setup()
    stable_holding_ours(rsc, host, peer)
    peer.declare_dead()
    rsc.recover_dead_resources(peer)
    host.drain()
    assert host.last("stonith") == {"t": "stonith", "node": "nodeb", "result": "n_stnth"}
    assert host.actions == [Acquire(VIP_B, "takeover from nodeb: node dead")]
    confirm_all(rsc, host)
    assert host.last("resource") == {"t": "resource", "rsc_hold": "foreign", "info": "mach_down"}
    assert rsc.i_hold == ALL and rsc.rsc_needs_failback and not rsc.takeover_in_progress

    # the peer comes back and becomes stable: its groups go back through ask_resources
    peer.status = "active"
    host.sent.clear()
    rsc.process_starting()
    assert not rsc.other_is_stable
    rsc.process_resources(
        peer_msg(("t", "resource"), ("rsc_hold", "none"), ("rtype", "full"), ("isstable", "1")), from_self=False
    )
    assert host.last("ask_resources") == {"t": "ask_resources", "rsc_hold": "foreign", "info": "me"}
    assert rsc.going_standby == "me" and rsc.failback_in_progress
    assert rsc.standby_refusal(ALL, running=True, comm_up=True) == (
        "the peer's groups are in transition; try again in a moment"
    )
    rsc.ask_for_resources(peer_msg(("t", "ask_resources"), ("rsc_hold", "foreign"), ("info", "other")), from_self=False)
    assert host.actions == [Release(VIP_B, "failback to the preferred owner nodeb")]
    confirm_all(rsc, host)
    assert host.last("ask_resources")["info"] == "done" and rsc.going_standby == "done"
    rsc.ask_for_resources(peer_msg(("t", "ask_resources"), ("rsc_hold", "foreign"), ("info", "done")), from_self=False)
    assert rsc.going_standby == "not" and rsc.standby_running is None and not rsc.failback_in_progress
    assert rsc.i_hold == LOCAL and host.last("resource")["isstable"] == "1"


def test_auto_failback_waits_while_the_peer_has_worse_connectivity():
    rsc, host, peer = setup()
    stable_holding_ours(rsc, host, peer)
    peer.declare_dead()
    rsc.recover_dead_resources(peer)
    host.drain()
    confirm_all(rsc, host)
    host.conn = (Connectivity(True, 1, 1), Connectivity(True, 0, 1))
    rsc.process_starting()
    rsc.process_resources(
        peer_msg(("t", "resource"), ("rsc_hold", "none"), ("rtype", "full"), ("isstable", "1")), from_self=False
    )
    assert "ask_resources" not in host.types() and rsc.autofailback_at == host.now + 1.0
    host.conn = (None, None)
    host.now += 1.0
    rsc.timers(host.now)
    assert host.last("ask_resources")["info"] == "me"


def test_a_dead_peer_that_held_nothing_needs_no_stonith():
    rsc, host, peer = setup()
    stable_holding_ours(rsc, host, peer)
    rsc.process_resources(
        peer_msg(("t", "resource"), ("rsc_hold", "none"), ("rtype", "full"), ("isstable", "1")), from_self=False
    )
    peer.declare_dead()
    rsc.recover_dead_resources(peer)
    host.drain()
    assert host.last("stonith")["result"] == "unneeded"
    assert host.actions == [Acquire(VIP_B, "takeover from nodeb: node dead")]


def test_a_peer_shutdone_hands_its_groups_over_at_once():
    rsc, host, peer = setup()
    stable_holding_ours(rsc, host, peer)
    rsc.peer_shutdone(peer)
    assert peer.shutdone and host.reports == [("nodeb", "dead", "graceful shutdown")]
    assert host.actions == [Acquire(VIP_B, "takeover from nodeb: peer shut down")]
    assert "stonith" not in host.types()


def test_standby_and_takeover_refusals():
    rsc, host, peer = setup()
    assert rsc.transition_refusal(running=False, comm_up=True) == "the node is stopping"
    peer.declare_dead()
    assert rsc.transition_refusal(running=True, comm_up=True) == "the peer is not alive"
    peer.status = "up"
    assert rsc.transition_refusal(running=True, comm_up=False) == "our groups are in transition; try again in a moment"
    stable_holding_ours(rsc, host, peer)
    assert rsc.standby_refusal(FOREIGN, running=True, comm_up=True) == "we hold none of the foreign groups"
    assert rsc.takeover_refusal(LOCAL, running=True, comm_up=True) == "we already hold the local groups"
    assert rsc.standby_refusal(LOCAL, running=True, comm_up=True) is None
    assert rsc.takeover_refusal(FOREIGN, running=True, comm_up=True) is None
    legacy, _, _ = setup(auto_failback="legacy")
    assert "not legacy" in (legacy.transition_refusal(running=True, comm_up=True) or "")


def test_standby_request_hands_our_groups_to_the_peer():
    rsc, host, peer = setup()
    stable_holding_ours(rsc, host, peer)
    rsc.start_standby(LOCAL)
    assert host.last("ask_resources") == {"t": "ask_resources", "rsc_hold": "local", "info": "me"}
    assert rsc.going_standby == "me" and rsc.deadlines() == [host.now + 10.0]
    # no answer: the request is cancelled
    host.now += 10.0
    rsc.standby_timers(host.now)
    assert rsc.going_standby == "not" and rsc.standby_running is None
    assert (logging.WARNING, "no reply to the standby request: cancelled") in host.logs


def test_a_peer_standby_request_is_answered_and_its_groups_taken():
    rsc, host, peer = setup()
    stable_holding_ours(rsc, host, peer)
    rsc.ask_for_resources(peer_msg(("t", "ask_resources"), ("rsc_hold", "all"), ("info", "me")), from_self=False)
    assert host.last("ask_resources") == {"t": "ask_resources", "rsc_hold": "all", "info": "other"}
    assert rsc.going_standby == "other"
    rsc.ask_for_resources(peer_msg(("t", "ask_resources"), ("rsc_hold", "all"), ("info", "done")), from_self=False)
    assert host.actions == [Acquire(VIP_B, "the peer nodeb went standby (all): taking its groups")]
    confirm_all(rsc, host)
    assert rsc.going_standby == "not" and rsc.i_hold == ALL


def test_partition_healed_gives_each_group_to_its_preferred_owner():
    rsc, host, peer = setup()
    stable_holding_ours(rsc, host, peer)
    peer.declare_dead()
    rsc.recover_dead_resources(peer)
    host.drain()
    confirm_all(rsc, host)
    rsc.partition_healed(peer, 7)
    assert host.counts["partitions_healed"] == 1
    assert any(level == logging.CRITICAL and "same generation 7" in m for level, m in host.logs)
    assert host.actions == [
        Release(VIP_B, "partition healed: nodeb is the preferred owner"),
        Acquire(VIP_A, REANNOUNCE_REASON),
    ]
    config = rsc.config
    assert rsc.reannounce_at == host.now + max(config.announce_repeats, 1) * config.announce_interval
    assert (rsc.i_hold, rsc.other_holds, rsc.rstate) == (LOCAL, LOCAL, "stable")
    confirm_all(rsc, host)
    assert host.last("resource")["isstable"] == "1"
    host.now = rsc.reannounce_at
    rsc.timers(host.now)
    assert host.actions == [Acquire(VIP_A, REANNOUNCE_REASON)]


def test_the_peer_claiming_its_groups_makes_us_release_them():
    rsc, host, peer = setup()
    stable_holding_ours(rsc, host, peer)
    peer.declare_dead()
    rsc.recover_dead_resources(peer)
    host.drain()
    confirm_all(rsc, host)
    peer.status = "active"
    rsc.process_resources(
        peer_msg(("t", "resource"), ("rsc_hold", "local"), ("rtype", "full"), ("isstable", "1")), from_self=False
    )
    assert Release(VIP_B, "nodeb claims its groups: it is their preferred owner") in host.actions
    assert not rsc.i_hold & FOREIGN


def test_graceful_stop_releases_everything_then_shutdone():
    rsc, host, peer = setup()
    stable_holding_ours(rsc, host, peer)
    rsc.begin_stop(host.now)
    rsc.try_giveup()
    assert rsc.giveup_started and rsc.rstate == "shutdown" and rsc.i_hold == NONE
    assert host.last("resource") == {
        "t": "resource",
        "rsc_hold": "none",
        "rtype": "full",
        "isstable": "0",
        "info": "shutdown",
    }
    assert host.actions == [Release(VIP_A, "graceful shutdown")]
    assert rsc.release_deadline == host.now + STOP_WAIT
    confirm_all(rsc, host)
    assert host.shutdones == 1 and rsc.release_deadline is None


def test_graceful_stop_waits_for_operations_then_gives_up_on_them():
    rsc, host, peer = setup()
    peer.anypacketsyet = True
    rsc.comm_up()
    rsc.process_resources(
        peer_msg(("t", "resource"), ("rsc_hold", "local"), ("rtype", "full"), ("isstable", "1")), from_self=False
    )
    assert rsc.table.busy()
    rsc.begin_stop(host.now)
    rsc.try_giveup()
    assert not rsc.giveup_started and rsc.deadlines() == [host.now + STOP_WAIT]
    host.now += STOP_WAIT
    rsc.stop_timers(host.now, stopping=False)
    assert rsc.giveup_started
    assert (logging.ERROR, f"resource operations not confirmed within {STOP_WAIT:.0f} s: stopping anyway") in host.logs
    # the releases are not confirmed either: shutdone anyway
    host.now += STOP_WAIT
    rsc.stop_timers(host.now, stopping=False)
    assert host.shutdones == 1


def test_no_takeover_while_stopping():
    rsc, host, peer = setup()
    stable_holding_ours(rsc, host, peer)
    rsc.begin_stop(host.now)
    peer.declare_dead()
    rsc.recover_dead_resources(peer)
    host.drain()
    assert "stonith" not in host.types()


@pytest.mark.parametrize("auto_failback", [True, False])
def test_a_single_node_takes_its_groups_at_comm_up(auto_failback):
    host = FakeHost(100.0)
    rsc = ResourceProtocol(config(nodes=("nodea",), auto_failback=auto_failback, groups=(VIP_A,)), membership(()), host)
    host.rsc = rsc
    rsc.comm_up()
    assert rsc.rstate == "stable" and host.actions == [Acquire(VIP_A, "single node: taking our groups")]
