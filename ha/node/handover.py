"""Handovers the node starts on its own or at the peer's request: connectivity
(ipfail's idea without ipfail's API messages) and heartbeat's ``hb_takeover``.

* Each node sends ``directord-connectivity link=up|down ping=UP/TOTAL`` on
  change and every 2 s. While the peer is alive and its report has been
  better for a settle time (2 x keepalive, + ping_interval with ping nodes,
  as both sides probe at different moments), the worse node goes standby for
  everything it holds; once its report is as good again it sends
  ``hb_takeover rsc_hold=local`` if auto_failback is on. Two connectivity
  handovers are at least 2 s apart.
* ``hb_takeover rsc_hold=all|local|foreign`` (from the sender's point of
  view) received: we go standby for the matching groups.

Pure: no I/O, no clock reads; works through a `HandoverHost` (the node),
times in monotonic seconds. Call only while the node runs (started, not stopped).

Protocol sources (facts only): heartbeat 3.0.6 ``rc.d/hb_takeover`` and
``lib/hb_takeover`` (the ``hb_takeover`` message and its ``rsc_hold``); the
connectivity report is directord's own message (a heartbeat peer passes it
to its API clients and otherwise ignores it).
"""

from __future__ import annotations

import logging
from typing import Protocol

from ha.connectivity import Connectivity
from ha.model import HAConfig
from ha.node.api import CONNECTIVITY_TYPE
from ha.node.groups import ALL, FOREIGN, LOCAL, rsc_name
from ha.node.membership import Membership, Peer
from ha.node.resources import ResourceProtocol
from ha.wire import Message

__all__ = ["CONN_HOLDOFF", "CONN_RESEND", "CONN_RETRY", "ConnectivityHandover", "HandoverHost"]

#: Our connectivity report is repeated this often (seconds).
CONN_RESEND = 2.0
#: At least this long (seconds) between two connectivity-driven handovers.
CONN_HOLDOFF = 2.0
#: A handover that cannot start now is retried after this long (seconds).
CONN_RETRY = 1.0


class HandoverHost(Protocol):
    """What the handovers need from the node around it."""

    @property
    def now(self) -> float:
        """The current entry point's time, monotonic seconds."""

    def send(self, fields: list[tuple[str, str]]) -> None:
        """Send a cluster message (``t`` first)."""

    def log(self, level: int, message: str) -> None:
        """Log (`level` a `logging` level)."""

    def log_limited(self, key: str, level: int, message: str) -> None:
        """Log at most once per 10 s per `key`."""


class ConnectivityHandover:
    """Connectivity reports and the handovers they decide; ``hb_takeover`` requests.

    Args:
        config: the HA configuration (`timers.keepalive`, `ping_nodes`,
            `ping_interval`, seconds).
        members: the peers (`ha.node.membership`).
        resources: the resource protocol that carries handovers out.
        host: the node (`HandoverHost`).

    `ours` / `theirs`: our connectivity and the peer's last report (None while
    unknown); `next_send` / `retry_at`: timers (monotonic seconds or None);
    `gave_up`: we handed our groups over because of connectivity.
    """

    def __init__(self, config: HAConfig, members: Membership, resources: ResourceProtocol, host: HandoverHost) -> None:
        self._members = members
        self._rsc = resources
        self._host = host
        self.ours: Connectivity | None = None
        self.theirs: Connectivity | None = None
        self.next_send: float | None = None
        self.gave_up = False
        self.hold_until = 0.0
        self.retry_at: float | None = None
        self.worse_since: float | None = None
        # both nodes see a ping node fail, at times up to one probe interval
        # apart: a difference must last this long before it moves groups
        keepalive = float(config.timers.keepalive)
        self.settle = 2 * keepalive + (config.ping_interval if config.ping_nodes else 0.0)

    def deadlines(self) -> list[float]:
        """Monotonic seconds of the pending timers."""
        return [t for t in (self.next_send, self.retry_at) if t is not None]

    def set_ours(self, conn: Connectivity, *, comm_up: bool) -> None:
        """Our connectivity is `conn` (changed or first known): report it, decide."""
        changed = conn != self.ours
        if changed and self.ours is not None:
            self._host.log(
                logging.WARNING if conn.score < self.ours.score else logging.INFO,
                f"connectivity changed: {self.ours} -> {conn}",
            )
        self.ours = conn
        if changed and comm_up:
            self._send_report()
        elif self.next_send is None:
            self.next_send = self._host.now
        self.decide(comm_up=comm_up)

    def resend_soon(self) -> None:
        """The peer needs our report now (our comm came up, it restarted or returned)."""
        if self.ours is not None:
            self.next_send = self._host.now

    def peer_lost(self) -> None:
        """The peer died, shut down or restarted: its report no longer holds."""
        self.theirs = None

    def timers(self, now: float, *, comm_up: bool) -> None:
        """Repeat our report; retry a handover that had to wait."""
        if self.next_send is not None and now >= self.next_send:
            if comm_up and self.ours is not None:
                self._send_report()
            else:
                self.next_send = now + CONN_RESEND
        if self.retry_at is not None and now >= self.retry_at:
            self.decide(comm_up=comm_up)

    def peer_report(self, peer: Peer, msg: Message, *, comm_up: bool) -> None:
        """A ``directord-connectivity`` message (``link``, ``ping``) from `peer`."""
        try:
            conn = Connectivity.from_fields(msg.get("link"), msg.get("ping"))
        except ValueError as exc:
            self._host.log_limited(f"conn-{peer.name}", logging.ERROR, f"connectivity report from {peer.name}: {exc}")
            return
        first = self.theirs is None
        if conn != self.theirs:
            level = logging.INFO if first else logging.WARNING
            self._host.log(level, f"{peer.name} reports {conn}")
        self.theirs = conn
        if first and self.ours is not None and comm_up:
            self._send_report()  # it may have restarted: it needs ours too
        self.decide(comm_up=comm_up)

    def peer_takeover(self, peer: Peer, msg: Message, *, comm_up: bool) -> None:
        """``hb_takeover rsc_hold=all|local|foreign`` from `peer`: go standby for
        the matching groups (the sender's local groups are our foreign ones)."""
        which = msg.get("rsc_hold") or "all"
        mine = {"local": FOREIGN, "foreign": LOCAL, "all": ALL}.get(which)
        if mine is None:
            self._host.log_limited(
                "takeover-bad", logging.ERROR, f"hb_takeover from {peer.name} with rsc_hold {which[:20]!r}"
            )
            return
        refusal = self._rsc.standby_refusal(mine, running=True, comm_up=comm_up)
        if refusal:
            self._host.log(logging.WARNING, f"{peer.name} asks to take over [{which}]: refused: {refusal}")
            return
        self._host.log(logging.INFO, f"{peer.name} asks to take over [{which}]: going standby [{rsc_name(mine)}]")
        self.gave_up = False
        self._rsc.start_standby(mine)

    def decide(self, *, comm_up: bool) -> None:
        """Hand over when the live peer's connectivity is better; take back when ours recovered."""
        now = self._host.now
        self.retry_at = None
        mine, theirs = self.ours, self.theirs
        if mine is None or theirs is None or not self._rsc.nice or not comm_up or self._rsc.stop_requested:
            return
        peer = self._members.live_peer()
        if peer is None:
            return
        if mine.score < theirs.score and any(g.target for g in self._rsc.groups):
            action = "give"
            if self.worse_since is None:
                self.worse_since = now
            settled = self.worse_since + self.settle
            if now < settled:
                self.retry_at = settled
                return
        else:
            self.worse_since = None
            if self.gave_up and mine.score >= theirs.score:
                action = "take"
            else:
                return
        if now < self.hold_until:
            self.retry_at = self.hold_until
            return
        if action == "give":
            refusal = self._rsc.standby_refusal(ALL, running=True, comm_up=comm_up)
            if refusal:
                self._host.log_limited("conn-give", logging.INFO, f"connectivity handover waits: {refusal}")
                self.retry_at = now + CONN_RETRY
                return
            self._host.log(
                logging.WARNING,
                f"our connectivity ({mine}) is worse than {peer.name}'s ({theirs}): handing our groups to it",
            )
            self.gave_up = True
            self.hold_until = now + CONN_HOLDOFF
            self._rsc.start_standby(ALL)
            return
        local = self._rsc.table.groups_of(LOCAL)
        if not self._rsc.failback or not local or all(self._rsc.groups[i].target for i in local):
            self.gave_up = False  # auto_failback off: the groups stay where they are
            return
        refusal = self._rsc.takeover_refusal(LOCAL, running=True, comm_up=comm_up)
        if refusal:
            self._host.log_limited("conn-take", logging.INFO, f"taking our groups back waits: {refusal}")
            self.retry_at = now + CONN_RETRY
            return
        self._host.log(logging.INFO, f"our connectivity recovered ({mine}): taking our groups back (auto_failback)")
        self.gave_up = False
        self.hold_until = now + CONN_HOLDOFF
        self._rsc.ask_takeover("local")

    def _send_report(self) -> None:
        assert self.ours is not None
        self._host.send([("t", CONNECTIVITY_TYPE), *self.ours.to_fields()])
        self.next_send = self._host.now + CONN_RESEND
