"""Reliable delivery of heartbeat 3.0.6 packets: sequence numbers, the send history,
retransmission requests and their answers, acks, the reorder window and the
generation (replay / restart) checks.

Pure: no I/O, no clock reads; times (monotonic seconds) and randomness come in
as arguments. The node (`ha.node.core`) turns the values returned here into
packets and logs.

Protocol sources (facts only): heartbeat 3.0.6 ``heartbeat/heartbeat.c``
(``should_drop_message``, ``is_lost_packet``, ``send_ack_if_needed``,
``process_rexmit``, ``nak_rexmit``, ``MAXMSGHIST``, ``ACK_MSG_DIV``,
``FLOWCONTROL_LIMIT``) and ``heartbeat/hb_rexmit.c`` (the delay of retransmission
requests, ``max_rexmit_delay``).
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

__all__ = [
    "ACK_DIV",
    "FLOWCONTROL_LIMIT",
    "HISTORY_SIZE",
    "MAX_MISSING",
    "MAX_REXMIT_BATCH",
    "REXMIT_ACCEPT",
    "REXMIT_INTERVAL",
    "REXMIT_MIN",
    "Arrival",
    "Fill",
    "Generation",
    "PeerStream",
    "Retransmission",
    "RexmitAnswer",
    "SendHistory",
    "check_generation",
]

#: Sent packets kept for retransmission (heartbeat's MAXMSGHIST).
HISTORY_SIZE = 500
#: More packets missing at once than this: sequence tracking starts over (FLOWCONTROL_LIMIT).
FLOWCONTROL_LIMIT = HISTORY_SIZE // 2
#: At most this many missing sequence numbers are tracked per peer (the lowest go first).
MAX_MISSING = HISTORY_SIZE
#: An ``NS_ackmsg`` acknowledges every ACK_DIV-th packet (ACK_MSG_DIV).
ACK_DIV = 10
#: The first retransmission request for a missing packet goes out after a random
#: REXMIT_MIN..REXMIT_INTERVAL seconds (the reorder window) ...
REXMIT_MIN = 0.05
#: ... and is repeated every REXMIT_INTERVAL seconds until the packet arrives.
REXMIT_INTERVAL = 0.25
#: One of our packets is resent at most once per REXMIT_ACCEPT seconds.
REXMIT_ACCEPT = 0.24
#: At most this many packets are answered (resent or refused) per request.
MAX_REXMIT_BATCH = 50


# --- what we sent --------------------------------------------------------------------------


@dataclass(frozen=True)
class Retransmission:
    """One answer to a retransmission request: `payload` is the packet as first
    sent (resend it unchanged), or ``None`` when it is out of the history: then
    answer ``NS_nak_rexmit`` for `seq` with `reason` as ``info``."""

    seq: int
    payload: bytes | None
    reason: str = ""


@dataclass(frozen=True)
class RexmitAnswer:
    """The answers to one ``NS_rexmit`` request, in sequence order; `beyond` is a
    requested sequence number higher than any we sent (the answers stop there),
    else ``None``."""

    answers: tuple[Retransmission, ...]
    beyond: int | None = None


class _Sent:
    """A packet of the history: the signed datagram and when it was last resent (monotonic), if ever."""

    __slots__ = ("payload", "resent")

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.resent: float | None = None


class SendHistory:
    """Our sequence numbers and the last `size` sequenced packets, as sent.

    `last_seq` is the highest sequence number given out so far (0 before the
    first). Sequence numbers start at 1; ``NS_*`` packets carry none.
    """

    def __init__(self, size: int = HISTORY_SIZE) -> None:
        self.size = size
        self.last_seq = 0
        self._packets: dict[int, _Sent] = {}
        self._order: deque[int] = deque()
        #: seq -> when we last refused it (NS_nak_rexmit), monotonic; pruned in `answer`
        self._refused: dict[int, float] = {}

    def next_seq(self) -> int:
        """Give out the next sequence number (the packet is then `record`ed)."""
        self.last_seq += 1
        return self.last_seq

    def record(self, seq: int, payload: bytes) -> None:
        """Keep `payload` (the signed datagram) for retransmission; the oldest
        packet beyond `size` is forgotten."""
        self._packets[seq] = _Sent(payload)
        self._order.append(seq)
        while len(self._order) > self.size:
            del self._packets[self._order.popleft()]

    def __len__(self) -> int:
        return len(self._order)

    def answer(self, first: int, last: int, acked: int, now: float) -> RexmitAnswer:
        """Answer a peer's request for our packets `first`..`last` (inclusive).

        Args:
            first, last: the requested range (``firstseq``/``lastseq``, 1 <= first <= last).
            acked: the highest of our packets this peer acknowledged; those are skipped.
            now: monotonic seconds; a packet resent less than `REXMIT_ACCEPT`
                seconds ago is skipped (and does not count against the batch);
                one refused less than `REXMIT_ACCEPT` seconds ago is not refused
                again (and counts against the batch), so a replayed request
                cannot make us send a refusal per datagram.

        At most `MAX_REXMIT_BATCH` answers; the work is bounded by the batch and
        the history, not by the range or `acked`. A packet no longer in the
        history is refused: ``seqno too low`` below the oldest one kept, else
        ``seqno not found`` (heartbeat.c's ``nak_rexmit`` reasons).
        """
        low = self._order[0] if self._order else self.last_seq + 1
        answers: list[Retransmission] = []
        beyond = None
        count = 0
        seq = max(first, acked + 1)
        if len(self._refused) > 4 * MAX_REXMIT_BATCH:
            self._refused = {s: t for s, t in self._refused.items() if now - t < REXMIT_ACCEPT}
            if len(self._refused) > 4 * MAX_REXMIT_BATCH:
                self._refused.clear()
        while seq <= last and count < MAX_REXMIT_BATCH:
            if seq > self.last_seq:
                beyond = seq
                break
            entry = self._packets.get(seq)
            count += 1
            if entry is None:
                refused = self._refused.get(seq)
                if refused is None or now - refused >= REXMIT_ACCEPT:
                    self._refused[seq] = now
                    answers.append(Retransmission(seq, None, "seqno too low" if seq < low else "seqno not found"))
            elif entry.resent is not None and now - entry.resent < REXMIT_ACCEPT:
                count -= 1
            else:
                entry.resent = now
                answers.append(Retransmission(seq, entry.payload))
            seq += 1
        return RexmitAnswer(tuple(answers), beyond)


# --- what a peer sends -----------------------------------------------------------------------


class Generation:
    """Verdicts of `check_generation` (the peer's ``hg`` against the one we know)."""

    CURRENT = "current"  # the generation we know (or none known yet, for non-status packets)
    FIRST = "first"  # a status of a first known generation
    RESTART = "restart"  # a status of a higher generation: the peer restarted
    HEALED = "healed"  # a new status of the same generation from a peer declared dead
    STALE = "stale"  # an old status of the same generation from a peer declared dead
    EARLY = "early"  # a non-status packet of a higher generation (the status comes first)
    REPLAY = "replay"  # a lower generation: a replay of an earlier run


def check_generation(
    known: int, gen: int, *, status: bool, peer_dead: bool = False, seq: int = 0, status_seqno: int = 0
) -> str:
    """Classify a packet by its generation (``hg``), as ``should_drop_message`` does.

    Args:
        known: the peer's generation we know (0: none yet).
        gen: the packet's ``hg``.
        status: the packet is a ``status`` message.
        peer_dead: we declared the peer dead.
        seq: the packet's sequence number; status_seqno: that of the peer's
            last status we took (both only matter for a dead peer's status).

    Returns a `Generation` verdict. `Generation.REPLAY`, `STALE` and `EARLY`
    packets are dropped; a status of a new generation (`FIRST`, `RESTART`)
    starts the peer's sequence tracking over.
    """
    if gen < known:
        return Generation.REPLAY
    if status:
        if gen == known and gen > 0:
            if peer_dead:
                return Generation.STALE if seq <= status_seqno else Generation.HEALED
            return Generation.CURRENT
        if gen > known:
            return Generation.RESTART if known > 0 else Generation.FIRST
        return Generation.CURRENT
    if gen > known > 0:
        return Generation.EARLY
    return Generation.CURRENT


@dataclass(frozen=True)
class Fill:
    """A missing packet arrived (`PeerStream.fill`): `requested` if its
    retransmission had been asked for (else it was only reordered),
    `recovered` when nothing is missing any more, `ack` a sequence number to
    acknowledge now (``NS_ackmsg``), or ``None``."""

    requested: bool
    recovered: bool
    ack: int | None


@dataclass(frozen=True)
class Arrival:
    """The fate of a sequenced packet (`PeerStream.arrive`).

    `kind`:

    * ``next``: the expected one (or the first); acknowledge `ack` if not None;
    * ``gap``: newer than expected; `lost` packets were given up at once when
      more than `FLOWCONTROL_LIMIT` were missing (tracking restarted), else the
      missing ones wait in the reorder window (`lost` is 0);
    * ``filled``: one that was missing (`fill` says more);
    * ``resync``: an older one opening a new generation or a healed partition:
      tracking restarts from it; acknowledge `ack` if not None;
    * ``duplicate``: the same as the last one; ``old``: older and not missing.
      Both are dropped.
    """

    kind: str
    ack: int | None = None
    lost: int = 0
    fill: Fill | None = None

    @property
    def keep(self) -> bool:
        """The packet is new: process it."""
        return self.kind not in ("duplicate", "old")


class PeerStream:
    """One peer's packet stream as we receive it (heartbeat's ``struct seqtrack``,
    plus what it acknowledged of ours and its generation).

    `last_seq` (None before the first packet), `missing` (sequence numbers not
    received yet), `first_missing` (the lowest of them or None), `rexmit_due`
    (missing seq -> monotonic seconds of its next retransmission request),
    `requested` (missing ones whose retransmission was asked for), `acked`
    (the highest of *our* sequence numbers it acknowledged), `ack_trigger`
    (0..ACK_DIV-1: we acknowledge its seqs ending in this digit), `generation`
    (its ``hg``, 0 while unknown).
    """

    def __init__(self, ack_trigger: int) -> None:
        self.generation = 0
        self.ack_trigger = ack_trigger
        self.last_seq: int | None = None
        self.missing: set[int] = set()
        self.first_missing: int | None = None
        self.rexmit_due: dict[int, float] = {}
        self.requested: set[int] = set()
        self.acked = 0

    def reset(self) -> None:
        """Forget the sequence tracking (a restart, a death, too many lost)."""
        self.missing.clear()
        self.first_missing = None
        self.rexmit_due.clear()
        self.requested.clear()
        self.last_seq = None
        self.acked = 0

    def ack_due(self, seq: int, flow_control: bool) -> bool:
        """Whether receiving `seq` calls for an ``NS_ackmsg`` (``send_ack_if_needed``):
        with flow control, nothing missing before it and ``seq % ACK_DIV`` our trigger."""
        if not flow_control:
            return False
        if self.first_missing is not None and seq > self.first_missing:
            return False
        return seq % ACK_DIV == self.ack_trigger

    def arrive(self, seq: int, now: float, rng: random.Random, *, resync: bool, flow_control: bool) -> Arrival:
        """Track a sequenced packet `seq` (> 0) whose generation was accepted.

        Args:
            now: monotonic seconds (retransmission requests are scheduled from it).
            rng: draws each new missing packet's reorder window, in seq order
                (uniform REXMIT_MIN..REXMIT_INTERVAL seconds).
            resync: the packet opens a new generation or a healed partition
                (`check_generation`): an older seq restarts the tracking.
            flow_control: acks are sent at all (the peer speaks protocol 1).
        """
        if self.last_seq is None or seq == self.last_seq + 1:
            self.last_seq = seq
            return Arrival("next", ack=seq if self.ack_due(seq, flow_control) else None)
        if seq == self.last_seq:
            return Arrival("duplicate")
        if seq > self.last_seq:
            # the missing packets may only be late (heartbeat 3.0.6 sometimes sends
            # seq N+1 just before N): they count as lost only when still missing at
            # their first retransmission request (`due_requests`)
            nlost = seq - (self.last_seq + 1)
            lost = 0
            if nlost > FLOWCONTROL_LIMIT:
                lost = nlost
                self.reset()
            else:
                for k in range(self.last_seq + 1, seq):
                    if len(self.missing) >= MAX_MISSING:
                        lowest = min(self.missing)
                        self.missing.discard(lowest)
                        self.rexmit_due.pop(lowest, None)
                        self.requested.discard(lowest)
                    self.missing.add(k)
                    self.rexmit_due[k] = now + rng.uniform(REXMIT_MIN, REXMIT_INTERVAL)
                self.first_missing = min(self.missing) if self.missing else None
            self.last_seq = seq
            return Arrival("gap", lost=lost)
        fill = self.fill(seq, flow_control)
        if fill is not None:
            return Arrival("filled", fill=fill)
        if resync:
            ack = seq if self.ack_due(seq, flow_control) else None
            self.reset()
            self.last_seq = seq
            return Arrival("resync", ack=ack)
        return Arrival("old")

    def fill(self, seq: int, flow_control: bool) -> Fill | None:
        """A packet that was missing arrived, or the peer gave it up (``NS_nak_rexmit``).

        Returns ``None`` when `seq` was not missing. When it was the first
        missing one, the ack that was held back for it is due (the highest seq
        ending in our trigger digit below the next gap, if not acknowledged
        before: ``is_lost_packet``)."""
        if seq not in self.missing:
            return None
        self.missing.discard(seq)
        self.rexmit_due.pop(seq, None)
        requested = seq in self.requested
        self.requested.discard(seq)
        old_first = self.first_missing
        if not self.missing:
            self.first_missing = None
        elif seq == old_first:
            self.first_missing = min(self.missing)
        ack = None
        if flow_control and old_first is not None and seq == old_first:
            last = self.last_seq if self.first_missing is None else self.first_missing - 1
            if last is not None:
                if last % ACK_DIV >= self.ack_trigger:
                    candidate = last // ACK_DIV * ACK_DIV + self.ack_trigger
                else:
                    candidate = (last // ACK_DIV - 1) * ACK_DIV + self.ack_trigger
                if candidate >= old_first and self.ack_due(candidate, flow_control):
                    ack = candidate
        return Fill(requested=requested, recovered=not self.missing, ack=ack)

    def due_requests(self, now: float) -> list[int]:
        """Missing sequence numbers whose retransmission request is due at `now`, ascending."""
        return sorted(s for s, t in self.rexmit_due.items() if now >= t)

    def ask(self, seq: int, now: float) -> bool:
        """A retransmission request for `seq` goes out at `now`; the next one is
        due `REXMIT_INTERVAL` seconds later. Returns True for the first request
        (the packet left the reorder window: it is lost)."""
        first = seq not in self.requested
        self.requested.add(seq)
        self.rexmit_due[seq] = now + REXMIT_INTERVAL
        return first

    def cancel_request(self, seq: int) -> None:
        """Stop asking for `seq` (the peer is not up); it stays missing."""
        del self.rexmit_due[seq]

    def acknowledge(self, ackseq: int, sent: int) -> bool:
        """The peer acknowledged our packets up to `ackseq` (``NS_ackmsg``).

        `sent` is our highest sequence number. Returns False for an ack of a
        packet we never sent (ignored); an ack not above the last one changes nothing."""
        if ackseq <= self.acked:
            return True
        if ackseq > sent:
            return False
        self.acked = ackseq
        return True

    def deadlines(self) -> list[float]:
        """Monotonic seconds of the pending retransmission requests."""
        return list(self.rexmit_due.values())
