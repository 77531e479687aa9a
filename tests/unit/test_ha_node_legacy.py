"""Tests for ha.node.legacy: ``auto_failback: legacy`` (heartbeat's nice_failback
off), the ip-request / ip-request-resp exchange, without a node."""

from __future__ import annotations

import logging
from collections import deque

from ha.model import HAConfig, Medium, Resource, ResourceGroup
from ha.node.api import Acquire, Release
from ha.node.groups import GroupTable
from ha.node.legacy import LegacyFailback
from ha.node.membership import Membership

VIP_A = ResourceGroup("nodea", (Resource("192.168.50.10", 32, "eth0"),))
VIP_B = ResourceGroup("nodeb", (Resource("192.168.50.20", 32, "eth0"),))
KEY_A, KEY_B = str(VIP_A.resources[0]), str(VIP_B.resources[0])


class Host:
    """A `LegacyHost` recording messages, actions and logs."""

    def __init__(self) -> None:
        self.now = 50.0
        self.sent: list[dict[str, str]] = []
        self.actions: list = []
        self.logs: list[tuple[int, str]] = []
        self.deferred: deque = deque()

    def send(self, fields: list[tuple[str, str]]) -> None:
        self.sent.append(dict(fields))

    def emit(self, action) -> None:
        self.actions.append(action)

    def log(self, level: int, message: str) -> None:
        self.logs.append((level, message))

    def defer(self, fn) -> None:
        self.deferred.append(fn)

    def count(self, counter: str) -> None:
        pass

    def drain(self) -> None:
        while self.deferred:
            self.deferred.popleft()()


def setup(delay: float = 2.0):
    config = HAConfig(
        node="nodea",
        nodes=("nodea", "nodeb"),
        media=(Medium("bcast", "eth0"),),
        authkeys="a",
        auto_failback="legacy",
        groups=(VIP_A, VIP_B),
    )
    host = Host()
    table = GroupTable(config, host, lambda: None)
    members = Membership(["nodeb"], deadtime=6.0, warntime=3.0, initdead=12.0)
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
