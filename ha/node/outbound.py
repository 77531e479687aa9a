"""Our side of the wire: the trailing fields of every message, signing, sequence
numbers and the send history, and the status messages (our status, the ``dt``
we advertise with its startup bonus, the keepalive schedule, and redundant copies
of each status on a lossy link).

Pure: no I/O, no clock reads; the wall clock (for ``ts``) and the load average
(for ``ld``) are injected callables, times are monotonic seconds. `Send` actions
go out through an `OutboundHost` (the node).

Protocol sources (facts only): heartbeat 3.0.6 ``heartbeat/heartbeat.c``
(``add_control_msg_fields`` via `ha.wire.add_standard_fields`, the status
message ``st``/``dt``/``protocol``, ``hb_add_deadtime(2000)`` at start popped
after 5 s, ``send_local_status``), ``lib/clplumbing/cl_msg.c`` (``ttl`` =
hopfudge + node count).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from ha.auth import AuthKeys
from ha.model import HAConfig, NodeIdentity
from ha.node.api import Action, Send
from ha.node.delivery import SendHistory
from ha.node.membership import Membership
from ha.wire import Message, add_standard_fields, encode_packet, is_noseq_type

__all__ = [
    "HOPFUDGE",
    "LOOPBACK_TYPES",
    "LOSS_MEMORY",
    "STARTUP_DT_BONUS",
    "STARTUP_DT_PERIOD",
    "STATUS_COPIES",
    "Outbound",
    "OutboundHost",
]

#: Seconds added to the deadtime we advertise at start (heartbeat's hb_add_deadtime(2000)) ...
STARTUP_DT_BONUS = 2.0
#: ... for this many seconds after the start.
STARTUP_DT_PERIOD = 5.0
#: ``ttl`` is HOPFUDGE + the number of nodes.
HOPFUDGE = 1
#: Seconds status copies go on being sent after the last sign of loss (directord).
LOSS_MEMORY = 60.0
#: Status sends per keepalive on a lossy link (identical bytes, spread over the interval).
STATUS_COPIES = 3
#: Our own messages of these types are also processed by us (heartbeat's loopback).
LOOPBACK_TYPES = ("resource", "ask_resources", "shutdone")


class OutboundHost(Protocol):
    """What sending needs from the node around it."""

    @property
    def now(self) -> float:
        """The current entry point's time, monotonic seconds."""

    def emit(self, action: Action) -> None:
        """Hand a `Send` to the driver."""

    def log(self, level: int, message: str) -> None:
        """Log (`level` a `logging` level)."""

    def count(self, counter: str) -> None:
        """Add one to the node counter `counter` (`ha.node.api.COUNTERS`)."""

    def loopback(self, msg: Message) -> None:
        """Process our own message `msg` (a type in `LOOPBACK_TYPES`), as sent."""


class Outbound:
    """Our messages and status.

    Args:
        config: the HA configuration (`config.node` is us; `nodes` for the
            ``ttl``; `timers.keepalive` / `timers.deadtime` seconds).
        keys: the authkeys we sign with.
        identity: our uuid and generation.
        members: the peers (a ``dest`` peer's uuid goes in ``destuuid``).
        host: the node (`OutboundHost`).
        loadavg: returns the ``/proc/loadavg`` line for ``ld`` (first line used).
        wallclock: returns seconds since the epoch for ``ts``; None: ``ts`` is
            derived from the monotonic ``now``.

    `status` is ours as advertised (``init``/``up``/``active``); `history`
    our sequence numbers and sent packets; `flow_control` whether we speak
    heartbeat's protocol 1 (acks, ``protocol=1`` in our status): off once a peer
    sends statuses without it. Times are monotonic seconds.
    """

    def __init__(
        self,
        config: HAConfig,
        keys: AuthKeys,
        identity: NodeIdentity,
        members: Membership,
        host: OutboundHost,
        *,
        loadavg: Callable[[], str],
        wallclock: Callable[[], float] | None,
    ) -> None:
        self.node = config.node
        self._me = config.node.lower()
        self._keys = keys
        self.identity = identity
        self._members = members
        self._host = host
        self._loadavg = loadavg
        self._wallclock = wallclock
        self.keepalive = float(config.timers.keepalive)
        self.deadtime = float(config.timers.deadtime)
        self.ttl = HOPFUDGE + len(config.nodes)
        self.status = "init"
        self.history = SendHistory()
        self.next_status = 0.0
        self.dt_bonus_until: float | None = None
        self.last_status_sent = 0.0
        self.copies: list[tuple[float, bytes]] = []
        self.loss_until: float | None = None
        self.flow_control = True

    def advertised_dt(self) -> float:
        """The deadtime (seconds) our status advertises: deadtime, + STARTUP_DT_BONUS at start."""
        if self.dt_bonus_until is not None:
            return self.deadtime + STARTUP_DT_BONUS
        return self.deadtime

    def start(self, now: float) -> None:
        """Our start at `now`: three statuses (``init``, ``up``, ``up``), then one every keepalive."""
        self.dt_bonus_until = now + STARTUP_DT_PERIOD
        self.send_status()  # "init": the deadtime bump triggers it
        self.status = "up"
        self.send_status()
        self.send_status()
        self.next_status = now + self.keepalive

    def send(self, fields: list[tuple[str, str]]) -> bytes:
        """Add the trailing fields, sign, emit `Send`, keep sequenced packets in
        the history and hand our own resource messages back (`LOOPBACK_TYPES`).
        Returns the datagram."""
        msg = Message.from_pairs(fields)
        mtype = msg.msg_type
        noseq = is_noseq_type(mtype)
        dest = msg.get("dest")
        seq = None
        if not noseq:
            seq = self.history.next_seq()
        full = add_standard_fields(
            msg,
            src=self.node,
            srcuuid=self.identity.uuid,
            hg=self.identity.generation,
            ts=self._ts(),
            ttl=self.ttl,
            seq=seq,
            ld=None if noseq else self._ld(),
            destuuid=self._uuid_of(dest) if dest is not None else None,
        )
        raw = encode_packet(full, self._keys)
        if seq is not None:
            self.history.record(seq, raw)
        self._host.emit(Send(raw))
        self._host.count("sent")
        if mtype in LOOPBACK_TYPES:
            self._host.loopback(full)
        return raw

    def send_status(self) -> None:
        """Send our status (``st``, ``dt`` in hex milliseconds, ``protocol=1``
        with flow control); on a lossy link, schedule its copies."""
        now = self._host.now
        fields = [
            ("t", "status"),
            ("st", self.status),
            ("dt", format(int(round(self.advertised_dt() * 1000)), "x")),
        ]
        if self.flow_control:
            fields.append(("protocol", "1"))
        raw = self.send(fields)
        self.last_status_sent = now
        if self.loss_until is not None and now < self.loss_until:
            step = self.keepalive / STATUS_COPIES
            self.copies = [(now + step * k, raw) for k in range(1, STATUS_COPIES)]
        else:
            self.copies = []

    def loss_seen(self) -> None:
        """Loss was seen (a gap in a peer's stream, a retransmission request for
        ours): copies of each status go out for the next LOSS_MEMORY seconds."""
        now = self._host.now
        if self.loss_until is None or now >= self.loss_until:
            self._host.log(logging.INFO, "packet loss seen: sending each status several times")
        self.loss_until = now + LOSS_MEMORY

    def silent_for(self, now: float) -> float:
        """Seconds since our last status at `now`."""
        return now - self.last_status_sent

    def timers(self, now: float) -> None:
        """The end of the startup bonus (a status at once), the keepalive, the copies due."""
        if self.dt_bonus_until is not None and now >= self.dt_bonus_until:
            self.dt_bonus_until = None
            self.send_status()
        if now >= self.next_status:
            self.send_status()
            self.next_status += self.keepalive
            if self.next_status <= now:
                self.next_status = now + self.keepalive
        if self.copies:
            keep = []
            for due, raw in self.copies:
                if now >= due:
                    self._host.emit(Send(raw))
                    self._host.count("sent")
                    self._host.count("copies_sent")
                else:
                    keep.append((due, raw))
            self.copies = keep

    def deadlines(self) -> list[float]:
        """Monotonic seconds of the next status, its copies, the end of the startup bonus."""
        cands = [self.next_status]
        cands.extend(due for due, _ in self.copies)
        if self.dt_bonus_until is not None:
            cands.append(self.dt_bonus_until)
        return cands

    def _ts(self) -> int:
        if self._wallclock is not None:
            try:
                return max(int(self._wallclock()), 1)
            except Exception:  # the driver's clock must not break sending
                pass
        return max(int(self._host.now), 1)

    def _ld(self) -> str:
        try:
            text = str(self._loadavg())
        except Exception:
            text = "n/a"
        text = text.split("\n", 1)[0].replace("\0", "")
        return text or "n/a"

    def _uuid_of(self, name: str) -> bytes | None:
        if name.lower() == self._me:
            return self.identity.uuid
        peer = self._members.get(name)
        return peer.uuid if peer is not None else None
