"""Tests for ha.node.legacy: ``auto_failback: legacy`` (heartbeat's nice_failback
off), the ip-request / ip-request-resp exchange, without a node."""

from __future__ import annotations

import logging

from nodefakes import VIP_A, VIP_B, FakeHost, config, membership

from ha.node.api import Acquire, Release
from ha.node.groups import GroupTable
from ha.node.legacy import LegacyFailback
from ha.node.membership import Membership

KEY_A, KEY_B = str(VIP_A.resources[0]), str(VIP_B.resources[0])


def setup(delay: float = 2.0):
    host = FakeHost(50.0)
    table = GroupTable(config(auto_failback="legacy", groups=(VIP_A, VIP_B)), host, lambda: None)
    members = membership()
    return LegacyFailback("nodea", table, members, host, delay), table, host, members.peers["nodeb"]


def test_with_a_peer_up_the_owner_asks_for_its_groups():
    legacy, table, host, peer = setup()
    peer.anypacketsyet = True
    legacy.request_our_groups("preferred owner at start")
    assert host.sent == [{"t": "ip-request", "ipaddr": KEY_A}] and host.actions == []
    assert table.groups[0].legacy_deadline == host.now + 2.0 and table.deadlines() == [host.now + 2.0]


def test_nobody_answers_the_owner_takes_its_group_after_the_delay():
    legacy, table, host, peer = setup()
    peer.anypacketsyet = True
    legacy.request_our_groups("preferred owner at start")
    legacy.deadline_passed(0, stopping=False)
    assert table.groups[0].legacy_deadline is None
    assert host.actions == [Acquire(VIP_A, "preferred owner, no answer to ip-request")]
    assert host.logs == [
        (logging.WARNING, f"no answer to ip-request for {table.groups[0].describe()}: nobody holds it, taking it")
    ]
    legacy.deadline_passed(0, stopping=False)  # held (pending) now: nothing more
    assert len(host.actions) == 1
    _, table2, host2, _ = setup()
    LegacyFailback("nodea", table2, Membership([], deadtime=1, warntime=1, initdead=1), host2, 2.0).deadline_passed(
        0, stopping=True
    )
    assert host2.actions == []


def test_alone_the_owner_takes_its_groups_at_once_and_says_so():
    legacy, table, host, _ = setup()
    legacy.request_our_groups("preferred owner at start")
    assert host.actions == [Acquire(VIP_A, "preferred owner at start")] and host.sent == []
    table.confirm_acquired(VIP_A, True, host.now, retry=True)
    host.drain()
    assert host.sent == [{"t": "ip-request-resp", "dest": "nodea", "ipaddr": KEY_A, "weown": "yes", "ok": "OK"}]


def test_the_holder_releases_the_owners_group_then_answers():
    legacy, table, host, peer = setup()
    table.acquire(1, "takeover")
    table.confirm_acquired(VIP_B, True, host.now, retry=True)
    host.actions.clear()
    legacy.ip_request(peer, KEY_B, stopping=False)
    assert host.actions == [Release(VIP_B, "nodeb asks for its group back (ip-request)")] and host.sent == []
    table.confirm_released(VIP_B)
    host.drain()
    assert host.sent == [{"t": "ip-request-resp", "dest": "nodeb", "ipaddr": KEY_B, "ok": "OK"}]


def test_ip_requests_we_do_not_serve():
    legacy, table, host, peer = setup()
    legacy.ip_request(peer, KEY_A, stopping=False)  # not its group
    assert host.logs and "which it does not own: ignored" in host.logs[0][1]
    legacy.ip_request(peer, KEY_B, stopping=False)  # we do not hold it
    legacy.ip_request(peer, "10.9.9.9", stopping=False)  # unknown
    legacy.ip_request(peer, None, stopping=False)
    table.acquire(1, "takeover")
    host.actions.clear()
    legacy.ip_request(peer, KEY_B, stopping=True)  # stopping: the stop releases it anyway
    assert host.actions == [] and host.sent == []


def test_the_answer_gives_the_owner_its_group():
    legacy, table, host, peer = setup()
    peer.anypacketsyet = True
    legacy.request_our_groups("preferred owner at start")
    legacy.ip_request_resp(peer, KEY_A, stopping=False)
    assert table.groups[0].legacy_deadline is None
    assert host.actions == [Acquire(VIP_A, "nodeb gave our group back (ip-request-resp)")]
    legacy.ip_request_resp(peer, KEY_B, stopping=False)  # not ours
    legacy.ip_request_resp(peer, KEY_A, stopping=True)
    assert len(host.actions) == 1
