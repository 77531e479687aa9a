"""Membership and liveness of the heartbeat peers: who they are, when we last heard
them, their status, the deadtime / warntime / initdead rules, late heartbeats,
grace after a stall of our own process, dead and alive transitions.

Pure: no I/O, no clock reads; times are monotonic seconds passed in. The node
(`ha.node.core`) acts on what is decided here (logs, `PeerStatus`, takeover).

Protocol sources (facts only): heartbeat 3.0.6 ``heartbeat/heartbeat.c``
(``struct node_info``, ``check_for_timeouts``, ``heartbeat_monitor``'s late
heartbeat warnings, the status message handling, ``comm_now_up``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeGuard

from ha.node.api import ReportedStatus

__all__ = ["DEAD", "REPORTABLE", "LateHeartbeat", "Membership", "Peer"]

#: The status of a peer we declared dead (heartbeat's DEADSTATUS).
DEAD = "dead"
#: Peer statuses the node reports (`ha.node.api.PeerStatus`); others are kept but not reported.
REPORTABLE: tuple[ReportedStatus, ...] = ("init", "up", "active", "dead")


class Peer:
    """One peer (heartbeat's ``struct node_info``).

    `name` as configured, `key` its lower-case form; `status` as the peer
    announces it (``init``/``up``/``active``...) or `DEAD` once declared dead
    (a graceful ``shutdone`` sets `shutdone` instead); `reported` the last
    status reported to the driver; `uuid` (16 bytes, or None while unknown);
    `dead_time` the deadtime it advertises (``dt``, seconds); `last_heard`
    (monotonic seconds) the liveness reference; `last_status` when its last
    status arrived (late heartbeats); `rmt_lastupdate` / `status_seqno` the
    ``ts`` and seq of the last status taken; `anypacketsyet` anything heard
    since start or since its death; `has_resources` it may hold groups (a
    restart makes that so until a ``shutdone``).
    """

    def __init__(self, name: str, dead_time: float, now: float = 0.0) -> None:
        self.name = name
        self.key = name.lower()
        self.status = "init"  # as heartbeat keeps it (never "dead" on shutdone)
        self.reported: str | None = None
        self.uuid: bytes | None = None
        self.dead_time = dead_time
        self.last_heard = now
        self.last_status: float | None = None
        self.rmt_lastupdate = 0
        self.status_seqno = 0
        self.anypacketsyet = False
        self.has_resources = False
        self.shutdone = False

    @property
    def dead(self) -> bool:
        """Declared dead (a graceful ``shutdone`` alone does not make it so)."""
        return self.status == DEAD

    def heard(self, now: float) -> None:
        """A new packet of its current generation arrived at `now`: it is alive."""
        self.last_heard = now

    def restarted(self) -> None:
        """A status of a new generation arrived: forget the old run's status."""
        self.rmt_lastupdate = 0
        self.status_seqno = 0
        self.last_status = None
        self.has_resources = True
        self.shutdone = False

    def declare_dead(self) -> None:
        """Mark it `DEAD` (the node then recovers its groups, then calls `forget`)."""
        self.status = DEAD

    def forget(self) -> None:
        """After its death: what it sent before no longer counts."""
        self.rmt_lastupdate = 0
        self.anypacketsyet = False
        self.last_status = None

    def should_report(self, status: str) -> TypeGuard[ReportedStatus]:
        """Whether `status` is news for the driver (`REPORTABLE`, not the last
        one reported); if so it becomes the last one reported."""
        if status not in REPORTABLE or self.reported == status:
            return False
        self.reported = status
        return True

    def stale_status(self, seq: int, ts: int) -> bool:
        """A status older, by both ``ts`` and seq, than the last one taken: ignored entirely."""
        return ts < self.rmt_lastupdate and seq < self.status_seqno

    def take_status(self, st: str, seq: int, ts: int, dt_ms: int | None) -> bool:
        """Take a status message: ``st``, its seq and ``ts``, and ``dt`` (the peer's
        deadtime in milliseconds, None or 0 when absent). Returns True when
        `status` changed. A retransmitted older status (seq below the last
        one) changes nothing and returns False."""
        if seq < self.status_seqno:
            return False
        changed = self.status != st
        self.status = st
        if dt_ms:
            self.dead_time = dt_ms / 1000.0
        self.rmt_lastupdate = ts
        self.status_seqno = seq
        return changed


@dataclass(frozen=True)
class LateHeartbeat:
    """A status that came later than warntime (`beyond_deadtime`: later than
    deadtime too) after the previous one; `interval` in seconds."""

    interval: float
    beyond_deadtime: bool


class Membership:
    """The peers of this node and the liveness rules applied to them.

    Args:
        peers: the other nodes' names (ours excluded), in configuration order.
        deadtime, warntime, initdead: our timers, seconds (> 0).
        now: monotonic seconds; every peer counts as heard then.

    `peers` maps `Peer.key` to `Peer`. `linksup` becomes True once every peer
    was heard from or declared dead (heartbeat's "all links up"); until then
    `initdead` applies instead of each peer's advertised deadtime.
    """

    def __init__(
        self, peers: Iterable[str], *, deadtime: float, warntime: float, initdead: float, now: float = 0.0
    ) -> None:
        self.deadtime = deadtime
        self.warntime = warntime
        self.initdead = initdead
        self.peers: dict[str, Peer] = {}
        for name in peers:
            peer = Peer(name, deadtime, now)
            self.peers[peer.key] = peer
        self.linksup = False

    def get(self, name: str) -> Peer | None:
        """The peer called `name` (any case), or None."""
        return self.peers.get(name.lower())

    def start(self, now: float) -> None:
        """Our start: initdead counts from `now`."""
        for peer in self.peers.values():
            peer.last_heard = now

    def dead_limit(self, peer: Peer) -> float:
        """Seconds of silence after which `peer` is dead: initdead before the
        links are up, then the deadtime it advertises."""
        return self.initdead if not self.linksup else peer.dead_time

    def timed_out(self, now: float) -> list[tuple[Peer, str]]:
        """Live peers silent for their `dead_limit` at `now`, with the reason
        to give (``check_for_timeouts``)."""
        out = []
        for peer in self.peers.values():
            if peer.dead:
                continue
            limit = self.dead_limit(peer)
            silent = now - peer.last_heard
            if silent >= limit:
                if not self.linksup and not peer.anypacketsyet:
                    why = f"not heard within initdead ({limit:.1f} s)"
                else:
                    why = f"no heartbeat for {silent:.2f} s (deadtime {limit:.1f} s)"
                out.append((peer, why))
        return out

    def deadlines(self) -> list[float]:
        """Monotonic seconds at which a live peer would be declared dead."""
        return [p.last_heard + self.dead_limit(p) for p in self.peers.values() if not p.dead]

    def give_grace(self, late: float) -> None:
        """Our own process was stalled `late` seconds: live peers get that much
        more time (their queued packets arrive right after the stall)."""
        for peer in self.peers.values():
            if not peer.dead:
                peer.last_heard += late

    def links_up(self) -> bool:
        """Set and return `linksup` once every peer was heard from or is dead."""
        if not self.linksup and all(p.anypacketsyet or p.dead for p in self.peers.values()):
            self.linksup = True
        return self.linksup

    def first_alive(self) -> Peer | None:
        """The first peer not declared dead (the one ``reqnodes`` goes to)."""
        return next((p for p in self.peers.values() if not p.dead), None)

    def live_peer(self) -> Peer | None:
        """The first peer neither dead nor gracefully gone."""
        return next((p for p in self.peers.values() if not p.dead and not p.shutdone), None)

    def any_heard_alive(self) -> bool:
        """Some peer is alive, was heard from and has not shut down (legacy mode's "a peer is up")."""
        return any(not p.dead and p.anypacketsyet and not p.shutdone for p in self.peers.values())

    def status_arrived(self, peer: Peer, now: float) -> LateHeartbeat | None:
        """A status of `peer` arrived at `now`: returns a `LateHeartbeat` when it
        came more than warntime after the previous one (heartbeat's "Late
        heartbeat" warning), else None. A status later than deadtime is only
        reported: the peer stays alive."""
        late = None
        if peer.last_status is not None:
            interval = now - peer.last_status
            if interval > self.deadtime:
                late = LateHeartbeat(interval, True)
            elif interval > self.warntime:
                late = LateHeartbeat(interval, False)
        peer.last_status = now
        return late
