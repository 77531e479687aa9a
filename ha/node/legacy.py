"""``auto_failback: legacy`` (heartbeat's nice_failback off): the preferred owner
of a group asks the peer for it with ``ip-request ipaddr=<key>``; the holder
releases it and answers ``ip-request-resp dest=<asker> ipaddr=<key> ok=OK``,
then the owner takes it (failback always). No ``starting`` / ``resource``
messages. Heartbeat never takes a group nobody answered for; here the owner
takes it after the local takeover delay. Alone, the owner takes its groups at once.

Pure: no I/O, no clock reads; works through a `LegacyHost` (the node), times
in monotonic seconds.

Protocol sources (facts only): heartbeat 3.0.6 ``heartbeat/hb_resource.c``
(``req_our_resources`` without nice_failback), ``lib/req_resource`` and
``rc.d/ip-request``, ``rc.d/ip-request-resp`` (the messages and their fields).
"""

from __future__ import annotations

import logging
from typing import Protocol

from ha.node.groups import LOCAL, DriverHost, GroupTable
from ha.node.membership import Membership, Peer

__all__ = ["LegacyFailback", "LegacyHost"]


class LegacyHost(DriverHost, Protocol):
    """What legacy mode needs from the node around it (besides `DriverHost`)."""

    def send(self, fields: list[tuple[str, str]]) -> None:
        """Send a cluster message (``t`` first)."""


class LegacyFailback:
    """The ``ip-request`` exchange of legacy mode.

    Args:
        node: our node name (``dest`` of our own ``ip-request-resp``).
        table: the groups (`ha.node.groups.GroupTable`).
        members: the peers (`ha.node.membership.Membership`).
        host: the node (`LegacyHost`).
        delay: seconds the owner waits for an answer before taking a group
            (the local takeover delay).
    """

    def __init__(self, node: str, table: GroupTable, members: Membership, host: LegacyHost, delay: float) -> None:
        self.node = node
        self._table = table
        self._members = members
        self._host = host
        self.delay = delay

    def announce_owned(self, newly: list[int]) -> None:
        """After acquiring groups we own (indexes `newly`): for each one held,
        ``ip-request-resp dest=<us> ipaddr=<key> weown=yes ok=OK`` (heartbeat
        sends it to trigger its own handler; peers ignore it)."""
        for i in newly:
            g = self._table.groups[i]
            if g.held and g.key is not None:
                self._host.send(
                    [
                        ("t", "ip-request-resp"),
                        ("dest", self.node),
                        ("ipaddr", g.key),
                        ("weown", "yes"),
                        ("ok", "OK"),
                    ]
                )

    def request_our_groups(self, reason: str) -> None:
        """Get our groups: ask a live peer for each one we do not hold (answer
        awaited `delay` seconds), or take them at once when no peer is up;
        `reason` goes with the `Acquire` actions."""
        # heartbeat counts "active" peers; at comm up the peer answered our
        # reqnodes but its status may not have arrived yet: alive is enough
        peer_up = self._members.any_heard_alive()
        local = self._table.groups_of(LOCAL)
        if peer_up:
            for i in local:
                g = self._table.groups[i]
                if not g.target and g.key is not None:
                    self._host.send([("t", "ip-request"), ("ipaddr", g.key)])
                    g.legacy_deadline = self._host.now + self.delay
            return
        newly = [i for i in local if not self._table.groups[i].target]
        self._table.start_batch(local, "acquire", reason, lambda now: self.announce_owned(newly))

    def deadline_passed(self, idx: int, *, stopping: bool) -> None:
        """Nobody answered our ``ip-request`` for group `idx` in time: nobody holds
        it, we take it (unless we hold it already or are `stopping`)."""
        g = self._table.groups[idx]
        g.legacy_deadline = None
        if not g.target and not stopping:
            self._host.log(logging.WARNING, f"no answer to ip-request for {g.describe()}: nobody holds it, taking it")
            self._table.start_batch([idx], "acquire", "preferred owner, no answer to ip-request", None)

    def ip_request(self, peer: Peer, key: str | None, *, stopping: bool) -> None:
        """`peer` asks for its group named by `key` (``ip-request ipaddr=``): we
        release it if we hold it, then answer ``ip-request-resp ok=OK``."""
        idx = self._table.by_key(key)
        if idx is None:
            return
        g = self._table.groups[idx]
        if g.group.owner.lower() != peer.name.lower():
            self._host.log(logging.WARNING, f"{peer.name} asks for {g.describe()}, which it does not own: ignored")
            return
        if not g.target or stopping:
            return

        def done(now: float) -> None:
            self._host.send([("t", "ip-request-resp"), ("dest", peer.name), ("ipaddr", key or ""), ("ok", "OK")])

        self._table.start_batch([idx], "release", f"{peer.name} asks for its group back (ip-request)", done)

    def ip_request_resp(self, peer: Peer, key: str | None, *, stopping: bool) -> None:
        """`peer` released our group `key` (``ip-request-resp ok=OK``): we take it."""
        idx = self._table.by_key(key)
        if idx is None or not self._table.groups[idx].local or stopping:
            return
        self._table.groups[idx].legacy_deadline = None
        self._table.start_batch([idx], "acquire", f"{peer.name} gave our group back (ip-request-resp)", None)
