"""Reliable delivery, driven: what an admitted message's generation and sequence
number mean (replay, restart, healed partition, duplicate, gap, reordered), the
acks we send, the retransmission requests we make for missing packets, and our
answers to the peers' requests (``NS_rexmit``, ``NS_nak_rexmit``, ``NS_ackmsg``).

Pure: no I/O, no clock reads; built on `ha.node.delivery` (the data structures),
`ha.node.membership` (liveness) and `ha.node.outbound` (sending). Logs, counters
and resent datagrams go out through a `ReceiverHost` (the node); times are
monotonic seconds.

Protocol sources (facts only): heartbeat 3.0.6 ``heartbeat/heartbeat.c``
(``should_drop_message``, ``is_lost_packet``, ``send_ack_if_needed``,
``process_rexmit``, ``nak_rexmit``), ``heartbeat/hb_rexmit.c`` (requests).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Protocol

from ha.model import NodeIdentity
from ha.node.api import Action, Send
from ha.node.delivery import ACK_DIV, Fill, Generation, PeerStream, check_generation
from ha.node.inbound import addressed_to, parse_dec, parse_hex
from ha.node.membership import Membership, Peer
from ha.node.outbound import Outbound
from ha.wire import Message

__all__ = ["Receiver", "ReceiverHost", "Sequenced"]


class ReceiverHost(Protocol):
    """What the receiver needs from the node around it."""

    @property
    def now(self) -> float:
        """The current entry point's time, monotonic seconds."""

    def emit(self, action: Action) -> None:
        """Hand a `Send` (a retransmission) to the driver."""

    def log(self, level: int, message: str) -> None:
        """Log (`level` a `logging` level)."""

    def log_limited(self, key: str, level: int, message: str) -> None:
        """Log at most once per 10 s per `key`."""

    def count(self, counter: str, n: int = 1) -> None:
        """Add `n` to the node counter `counter` (`ha.node.api.COUNTERS`)."""


@dataclass(frozen=True)
class Sequenced:
    """The fate of a sequenced message (`Receiver.sequence`): `keep` it (new and
    for us); `new_gen`: a status of a new generation (first known or `restart`);
    `healed`: a peer declared dead returned with the same generation."""

    keep: bool
    new_gen: bool = False
    restart: bool = False
    healed: bool = False


_DROP = Sequenced(False)


class Receiver:
    """The peers' packet streams and the protocol around them.

    Args:
        identity: our uuid (``destuuid`` addressing).
        me: our node name, lower case.
        members: the peers (`ha.node.membership`), in configuration order.
        outbound: our sending side (acks, requests, answers; the send history).
        host: the node (`ReceiverHost`).
        rng: draws each peer's ack trigger now (one per peer, in order) and
            each missing packet's reorder window later.

    `streams` maps `Peer.key` to its `PeerStream`.
    """

    def __init__(
        self,
        identity: NodeIdentity,
        me: str,
        members: Membership,
        outbound: Outbound,
        host: ReceiverHost,
        rng: random.Random,
    ) -> None:
        self._uuid = identity.uuid
        self._me = me
        self._members = members
        self._outbound = outbound
        self._host = host
        self._rng = rng
        self.streams = {key: PeerStream(rng.randrange(ACK_DIV)) for key in members.peers}

    def deadlines(self) -> list[float]:
        """Monotonic seconds of the pending retransmission requests."""
        out: list[float] = []
        for stream in self.streams.values():
            out.extend(stream.deadlines())
        return out

    def forget(self, peer: Peer) -> None:
        """`peer` was declared dead: its sequence tracking starts over."""
        self.streams[peer.key].reset()

    def from_dead(self, peer: Peer, gen: int) -> bool:
        """A non-status message of generation `gen` from `peer` declared dead: it
        must speak through its status first (dropped)."""
        return peer.dead and gen <= self.streams[peer.key].generation

    # ------------------------------------------------------------------ NS_* messages

    def accept_noseq(self, peer: Peer, msg: Message, mtype: str, gen: int) -> bool:
        """Check an ``NS_*`` message (no sequence number) from `peer`. An
        ``NS_nak_rexmit`` is handled here: it gives up a packet still missing
        (logged), else it is old news (a replay: counted ``old``, not logged).
        Returns True when accepted (counted): then call `handle_noseq`."""
        stream = self.streams[peer.key]
        if check_generation(stream.generation, gen, status=False) == Generation.REPLAY:
            # no seq to check, but the generation still tells a replay of an old run
            self._host.count("replay")
            self._host.log_limited(
                f"replay-{peer.name}",
                logging.ERROR,
                f"attempted replay attack from {peer.name}? {mtype} of generation {gen} < {stream.generation}: dropped",
            )
            return False
        if mtype == "NS_nak_rexmit":
            nseq = parse_hex(msg.get("firstseq"))
            if not nseq:
                self._host.count("malformed")
                return False
            fill = stream.fill(nseq, self._outbound.flow_control)
            if fill is None:  # not missing: a replay, or an answer to a request already filled
                self._host.count("old")
                return False
            self._host.count("naks_received")
            self._host.log(logging.ERROR, f"irretrievably lost packet: node {peer.name} seq {nseq}")
            self._filled(peer, fill)
            return False
        dest = msg.get("dest")
        if dest is not None and dest.lower() != self._me:
            self._host.count("not_for_us")
            return False
        if mtype == "NS_ackmsg":
            ackseq = parse_hex(msg.get("ackseq"))
            if ackseq is None:
                self._host.count("malformed")
                return False
            if ackseq <= stream.acked:  # a replayed or overtaken ack: nothing new
                self._host.count("old")
                return False
        self._host.count("accepted")
        return True

    def handle_noseq(self, peer: Peer, msg: Message, mtype: str) -> None:
        """An accepted ``NS_rexmit`` (answered from the history) or ``NS_ackmsg``."""
        if mtype == "NS_rexmit":
            self._host.count("rexmit_requests_received")
            self._outbound.loss_seen()
            self._answer_rexmit(peer, msg)
        elif mtype == "NS_ackmsg":
            self._host.count("acks_received")
            ackseq = parse_hex(msg.get("ackseq"))
            if ackseq is None:
                return
            sent = self._outbound.history.last_seq
            if not self.streams[peer.key].acknowledge(ackseq, sent):
                self._host.log_limited("ack", logging.ERROR, f"ack from {peer.name} for seq {ackseq}, we sent {sent}")

    # ------------------------------------------------------------------ sequenced messages

    def sequence(self, peer: Peer, msg: Message, mtype: str, seq: int, gen: int, ts: int) -> Sequenced:
        """``should_drop_message`` for a sequenced message (`seq` > 0, generation
        `gen`, ``ts``) from `peer`: generation checks, sequence tracking, acks,
        liveness (a kept or reordered new packet refreshes `Peer.last_heard`)."""
        stream = self.streams[peer.key]
        is_status = mtype == "status"
        verdict = check_generation(
            stream.generation,
            gen,
            status=is_status,
            peer_dead=peer.dead,
            seq=seq,
            status_seqno=peer.status_seqno,
        )
        if verdict == Generation.REPLAY:
            self._host.count("replay")
            self._host.log_limited(
                f"replay-{peer.name}",
                logging.ERROR,
                f"attempted replay attack from {peer.name}? generation {gen} < {stream.generation}: dropped",
            )
            return _DROP
        if verdict in (Generation.STALE, Generation.EARLY):
            # EARLY: a restarted peer speaks through its status first (seq 1)
            self._host.count("old")
            return _DROP
        healed = verdict == Generation.HEALED
        new_gen = verdict in (Generation.FIRST, Generation.RESTART)
        restart = verdict == Generation.RESTART
        if new_gen:
            if restart:
                self._host.log(logging.INFO, f"heartbeat restart on node {peer.name} (generation {gen})")
            stream.reset()
            peer.restarted()
        if is_status:
            stream.generation = gen

        to_us = addressed_to(msg, self._me, self._uuid)
        now = self._host.now
        flow_control = self._outbound.flow_control
        arrival = stream.arrive(seq, now, self._rng, resync=healed or new_gen, flow_control=flow_control)
        if not arrival.keep:
            self._host.count(arrival.kind)  # "duplicate" or "old"
            return Sequenced(False, new_gen)
        if arrival.lost:
            self._host.count("lost_packets", arrival.lost)
            self._outbound.loss_seen()
            self._host.log(logging.ERROR, f"lost a lot of packets from {peer.name}: sequence tracking restarted")
        if arrival.fill is not None:
            self._filled(peer, arrival.fill)
        if arrival.kind == "resync":
            peer.rmt_lastupdate = ts
        peer.heard(now)
        if arrival.ack is not None:
            self._send_ack(peer, arrival.ack)
        if not to_us:
            self._host.count("not_for_us")
            return Sequenced(False, new_gen, restart, healed)
        return Sequenced(True, new_gen, restart, healed)

    # ------------------------------------------------------------------ timers

    def request_retransmissions(self, now: float) -> None:
        """Ask up peers for their missing packets whose request is due (one
        ``NS_rexmit`` per packet, decimal ``firstseq``/``lastseq``); a packet
        still missing at its first request counts as lost."""
        for peer in self._members.peers.values():
            stream = self.streams[peer.key]
            for s in stream.due_requests(now):
                if peer.status in ("up", "active"):
                    if stream.ask(s, now):  # past the reorder window: lost
                        self._host.count("lost_packets")
                        self._outbound.loss_seen()
                        self._host.log_limited(
                            f"lost-{peer.name}",
                            logging.WARNING,
                            f"lost packet(s) from {peer.name} (seq {s}): asking for retransmission",
                        )
                    self._outbound.send(
                        [("t", "NS_rexmit"), ("dest", peer.name), ("firstseq", str(s)), ("lastseq", str(s))]
                    )
                    self._host.count("rexmit_requests_sent")
                else:
                    stream.cancel_request(s)

    # ------------------------------------------------------------------ internals

    def _filled(self, peer: Peer, fill: Fill | None) -> None:
        if fill is None:
            return
        if not fill.requested:
            self._host.count("reordered")
        if fill.recovered:
            self._host.log_limited(f"recovered-{peer.name}", logging.INFO, f"no packets missing from {peer.name}")
        if fill.ack is not None:
            self._send_ack(peer, fill.ack)

    def _send_ack(self, peer: Peer, seq: int) -> None:
        self._outbound.send([("t", "NS_ackmsg"), ("dest", peer.name), ("ackseq", format(seq, "x"))])
        self._host.count("acks_sent")

    def _answer_rexmit(self, peer: Peer, msg: Message) -> None:
        fseq = parse_dec(msg.get("firstseq"))
        lseq = parse_dec(msg.get("lastseq"))
        if not fseq or not lseq or fseq > lseq:
            self._host.log_limited("rexmit", logging.ERROR, f"invalid retransmission request from {peer.name}")
            return
        history = self._outbound.history
        answer = history.answer(fseq, lseq, self.streams[peer.key].acked, self._host.now)
        for item in answer.answers:
            if item.payload is None:
                self._outbound.send(
                    [
                        ("t", "NS_nak_rexmit"),
                        ("firstseq", format(item.seq, "x")),
                        ("dest", peer.name),
                        ("info", item.reason),
                    ]
                )
                self._host.count("naks_sent")
                self._host.log_limited(
                    "nak", logging.ERROR, f"cannot retransmit seq {item.seq} to {peer.name}: {item.reason}"
                )
            else:
                self._host.emit(Send(item.payload))
                self._host.count("sent")
                self._host.count("retransmitted")
        if answer.beyond is not None:
            self._host.log_limited(
                "rexmit-high",
                logging.WARNING,
                f"{peer.name} asks for seq {answer.beyond}, {history.last_seq} is max",
            )
