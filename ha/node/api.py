"""The heartbeat node's vocabulary: the actions it returns, its errors, the message
types of its own, its counters and the snapshot types of its state.

Shared by every part of `ha.node` and by its drivers (`ha.service`); re-exported by
`ha.node`. Times in snapshots are monotonic seconds, like the ``now`` of the entry points.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ha.connectivity import Connectivity
from ha.model import ResourceGroup

__all__ = [
    "Send",
    "Acquire",
    "Release",
    "PeerStatus",
    "Log",
    "TimersLate",
    "Stopped",
    "Action",
    "PeerInfo",
    "GroupInfo",
    "NodeSnapshot",
    "REANNOUNCE_REASON",
    "COUNTERS",
    "MAX_REJECT_SOURCES",
    "AdminRefused",
    "CONNECTIVITY_TYPE",
    "TAKEOVER_TYPE",
]


# --- actions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    """Send `payload` (one datagram, already signed) on every medium."""

    payload: bytes


@dataclass(frozen=True)
class Acquire:
    """Configure `group`'s addresses here and announce them (gratuitous ARP /
    unsolicited NA); confirm with `HeartbeatNode.acquired`. Idempotent: a
    group already present is only announced again (`reason` says why)."""

    group: ResourceGroup
    reason: str


@dataclass(frozen=True)
class Release:
    """Remove `group`'s addresses here; confirm with `HeartbeatNode.released`."""

    group: ResourceGroup
    reason: str


#: The peer statuses the node reports (`PeerStatus.status`).
ReportedStatus = Literal["init", "up", "active", "dead"]


@dataclass(frozen=True)
class PeerStatus:
    """The peer `node` changed state: ``init``, ``up``, ``active`` (as it
    announces) or ``dead`` (declared dead, or gracefully gone)."""

    node: str
    status: ReportedStatus
    reason: str


@dataclass(frozen=True)
class Log:
    """A log record; `level` is a `logging` level (``logging.INFO`` ...)."""

    level: int
    message: str


@dataclass(frozen=True)
class TimersLate:
    """The node's timers ran ``late`` seconds after they were due (the process was stalled:
    swapped out, stopped, a blocked event loop); the peers got as much grace before they can
    be declared dead. The driver reports it (`ha.events.TimersLate`)."""

    late: float


@dataclass(frozen=True)
class Stopped:
    """The graceful stop is complete: the driver may close its media and exit."""


Action = Send | Acquire | Release | PeerStatus | Log | TimersLate | Stopped


class AdminRefused(ValueError):
    """`HeartbeatNode.standby` / `takeover` cannot be carried out now; the message says why."""


#: Message type of our connectivity reports (ping nodes reachable, resource links up).
#: Not a heartbeat type: a real heartbeat node passes it to its API clients (none in
#: a v1 setup) and otherwise ignores it.
CONNECTIVITY_TYPE = "directord-connectivity"
#: heartbeat's ``hb_takeover`` cluster message (``rsc_hold=all|local|foreign``, from the
#: sender's point of view), as its ``hb_takeover`` script sends it; a directord peer goes
#: standby for the matching groups, a heartbeat 3.0.6 peer through its ``rc.d/hb_takeover``.
TAKEOVER_TYPE = "hb_takeover"

#: `Acquire.reason` of the re-announcements made after a partition healed.
REANNOUNCE_REASON = "re-announce after partition"

#: Keys of `HeartbeatNode.counters` (all start at 0).
COUNTERS = (
    "received",  # datagrams given to on_packet
    "accepted",  # authenticated, well-formed, from a known peer, not a duplicate
    "malformed",  # not a heartbeat message, or missing/garbled t, src, ts, seq, hg
    "bad_auth",  # wrong or missing MAC (forged or corrupted)
    "unknown_auth_index",  # signed with an authkeys index we do not have
    "unknown_node",  # src is not in the configured nodes
    "own",  # our own packets coming back (broadcast loop)
    "name_conflict",  # our node name with another uuid
    "replay",  # lower generation than known: "attempted replay attack"
    "duplicate",  # same seq as the last one
    "old",  # older seq not missing, stale status, ack or nak of nothing new
    "not_for_us",  # addressed to another node
    "from_dead",  # non-status packet from a peer declared dead
    "ignored",  # received while not running
    "lost_packets",  # peers' packets still missing when their retransmission is first asked for
    "reordered",  # peers' packets that arrived late, before a retransmission was asked for
    "rexmit_requests_sent",
    "rexmit_requests_received",
    "retransmitted",  # packets resent from history
    "naks_sent",
    "naks_received",
    "acks_sent",
    "acks_received",
    "late_heartbeats",
    "sent",  # datagrams emitted (copies included)
    "copies_sent",  # redundant status copies on lossy links
    "stalls",  # entry points running late: our process was stalled
    "acquire_failures",
    "partitions_healed",
    "internal_errors",  # a bug caught at the on_packet boundary
)

#: Source addresses kept in the per-source account of rejected datagrams.
MAX_REJECT_SOURCES = 32


# --- introspection ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PeerInfo:
    """What we know of one peer (seconds are monotonic, like ``now``)."""

    name: str
    status: str
    generation: int
    uuid: bytes | None
    last_seq: int | None
    missing: tuple[int, ...]
    dead_time: float
    last_heard: float | None
    ack_trigger: int
    shut_down: bool


@dataclass(frozen=True)
class GroupInfo:
    """One resource group: `held` as last confirmed by the driver, `pending`
    the operations not yet confirmed (``"acquire"`` / ``"release"``)."""

    group: ResourceGroup
    held: bool
    pending: tuple[str, ...]


@dataclass(frozen=True)
class NodeSnapshot:
    """Our own state: `status` (init/up/active), `resource_state`
    (heartbeat's init/starting/bothstarting/rscrcvd/stable/shutdown), `holds`
    (none/local/foreign/all, what we claim on the wire)."""

    node: str
    status: str
    generation: int
    last_seq: int
    resource_state: str
    holds: str
    stopping: bool
    stopped: bool
    peers: tuple[PeerInfo, ...]
    groups: tuple[GroupInfo, ...]
    connectivity: Connectivity | None = None
    peer_connectivity: Connectivity | None = None
    standby: str = "not"
