"""`HeartbeatNode`: the heartbeat 3.0.6 node composed of its parts.

The protocol and the choices made are described in the package docstring (`ha.node`).
Admission of datagrams is `ha.node.inbound`, our messages and status
`ha.node.outbound`, the sequencing of received messages, acks and
retransmissions `ha.node.receiver` (on `ha.node.delivery`), liveness
`ha.node.membership`, the resource protocol `ha.node.resources` (with
`ha.node.groups` and `ha.node.legacy`), the connectivity handovers and
``hb_takeover`` requests `ha.node.handover`. This module keeps the entry points,
the call plumbing (actions, logs, the stall guard), the dispatch of accepted
messages and the comm state (``reqnodes``), and implements the small host
interface through which the parts emit actions.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from collections.abc import Callable

from ha.auth import AuthKeys
from ha.connectivity import Connectivity
from ha.model import HAConfig, NodeIdentity, ResourceGroup
from ha.node.api import (
    CONNECTIVITY_TYPE,
    COUNTERS,
    TAKEOVER_TYPE,
    Action,
    AdminRefused,
    Log,
    NodeSnapshot,
    PeerInfo,
    PeerStatus,
    Send,
    Stopped,
    TimersLate,
)
from ha.node.groups import rsc_name, rsc_type
from ha.node.handover import ConnectivityHandover
from ha.node.inbound import (
    Dropped,
    RejectLedger,
    admit,
    parse_hex,
)
from ha.node.membership import DEAD, Membership, Peer
from ha.node.outbound import Outbound
from ha.node.receiver import Receiver
from ha.node.resources import ResourceProtocol
from ha.wire import (
    Message,
)

__all__ = ["HeartbeatNode"]

# --- protocol constants (heartbeat 3.0.6) ----------------------------------------------------

_REQNODES_INTERVAL = 1.0

# --- directord choices -----------------------------------------------------------------------

_STALL_TOLERANCE = 0.5
_LOG_INTERVAL = 10.0  # rate limit for logs an attacker can trigger


def _default_loadavg() -> str:
    return "0.00 0.00 0.00 1/1 1"


# --- the node --------------------------------------------------------------------------------


#: Datagrams of the peers kept (accepted) that the node remembers, so that the same bytes
#: again are dropped without a MAC or a parse (a replay flood of a captured status) ...
KEPT_PACKETS = 256
#: ... when at most this long (a status is 300-600 bytes).
KEPT_MAX_BYTES = 2048


class HeartbeatNode:
    """One director's heartbeat node (see the `ha.node` package docstring for the protocol).

    Args:
        config: the validated HA configuration; `config.node` is us, and
            `config.nodes` holds one or two names (ours included). Times in
            `config.timers` are seconds.
        keys: the authkeys (signs what we send, verifies what we receive).
        identity: our uuid and this process's generation (`ha.identity`).
        loadavg: returns the ``/proc/loadavg`` line for the ``ld`` field
            (default: a fixed string; only the first line is used).
        wallclock: returns seconds since the epoch for the ``ts`` field. The
            daemon passes ``time.time``; by default ``ts`` is derived from
            ``now`` (fine for tests: peers only compare it with itself).
        rng: randomness for the ack trigger and the retransmission-request
            jitter; by default seeded from the identity (deterministic).

    Raises ``ValueError`` for a configuration this node cannot run: our node
    not in `nodes`, duplicate or more than two nodes, a group owned by an
    unknown node, duplicate groups, non-positive timers.

    `counters` (dict, keys in `COUNTERS`) counts packets by fate. Entry
    points return lists of actions; `on_packet` never raises for any bytes.
    """

    def __init__(
        self,
        config: HAConfig,
        keys: AuthKeys,
        identity: NodeIdentity,
        *,
        loadavg: Callable[[], str] = _default_loadavg,
        wallclock: Callable[[], float] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        lowered = [n.lower() for n in config.nodes]
        if config.node.lower() not in lowered:
            raise ValueError(f"node {config.node!r} is not in the node list {list(config.nodes)}")
        if len(set(lowered)) != len(lowered):
            raise ValueError(f"duplicate node names in {list(config.nodes)}")
        if len(config.nodes) > 2:
            raise ValueError("heartbeat's v1 resource takeover supports one or two nodes")
        if len(set(config.groups)) != len(config.groups):
            raise ValueError("duplicate resource groups")
        for g in config.groups:
            if g.owner.lower() not in lowered:
                raise ValueError(f"resource group owner {g.owner!r} is not a configured node")
        t = config.timers
        for label, value in (
            ("keepalive", t.keepalive),
            ("deadtime", t.deadtime),
            ("warntime", t.warntime),
            ("initdead", t.initdead),
        ):
            if not value > 0:
                raise ValueError(f"{label} must be positive, not {value!r}")
        if not isinstance(identity, NodeIdentity):
            raise ValueError("identity must be a NodeIdentity")

        self.config = config
        self.node = config.node
        self._me = config.node.lower()
        self._keys = keys
        self.identity = identity
        seed = int.from_bytes(identity.uuid, "big") ^ identity.generation
        self._rng = rng if rng is not None else random.Random(seed)

        self._keepalive = float(t.keepalive)
        self._deadtime = float(t.deadtime)
        self._linger = 2.0 if config.compat == "heartbeat" else max(4 * self._keepalive, 1.0)

        self.counters: dict[str, int] = {name: 0 for name in COUNTERS}
        self._rejects = RejectLedger()
        #: datagrams (bytes) of the peers' current generations we kept -> (peer key, seq):
        #: the same bytes again are a duplicate or old, known without a MAC or a parse
        self._kept: dict[bytes, tuple[str, int]] = {}
        #: our own datagrams lately sent (as dict keys, oldest first): one coming back (our
        #: broadcast, or anybody echoing it at us) is ours, known without a MAC or a parse
        self._sent: dict[bytes, None] = {}
        #: where the datagram being handled came from (None outside `on_packet`)
        self._source: str | None = None
        #: source address -> {"packets", per-reason counts, "last"}: see `rejected_sources`
        self.rejected_by_source: dict[str, dict[str, float]] = self._rejects.entries

        others = [name for name in config.nodes if name.lower() != self._me]
        self._members = Membership(
            others, deadtime=self._deadtime, warntime=float(t.warntime), initdead=float(t.initdead)
        )
        host = _Host(self)
        self._rsc = ResourceProtocol(config, self._members, host)
        # connectivity (ping nodes, resource links) and hb_takeover requests
        self._handover = ConnectivityHandover(config, self._members, self._rsc, host)

        # lifecycle
        self._started = False
        self._stopped = False
        self._linger_until: float | None = None

        # our heartbeat: messages, status, history
        self._outbound = Outbound(config, keys, identity, self._members, host, loadavg=loadavg, wallclock=wallclock)
        self._history = self._outbound.history
        # the peers' packet streams: sequencing, acks, retransmissions
        self._receiver = Receiver(identity, self._me, self._members, self._outbound, host, self._rng)

        # comm
        self._comm_up = False
        self._got_reqnodes_reply = False
        self._next_reqnodes: float | None = None

        # per call
        self._out: list[Action] = []
        self._deferred: deque[Callable[[], None]] = deque()
        self._now = 0.0
        self._due: float | None = None
        #: `next_deadline()` as of the last `_finish` (None: not running): a datagram
        #: dropped at admission changes no timer, so it need not recompute it
        self._deadline: float | None = None
        self._log_times: dict[str, tuple[float, int]] = {}

    # ----------------------------------------------------------------- public entry points

    def start(self, now: float) -> list[Action]:
        """Start heartbeating: three status messages (init, up, up). A warning is
        logged when authkeys has a crc index (it authenticates nothing).

        ``RuntimeError`` if called twice."""
        if self._started:
            raise RuntimeError("HeartbeatNode.start() called twice")
        self._started = True
        self._begin(now)
        self._log(logging.INFO, f"heartbeat node {self.node} starting, generation {self.identity.generation}")
        crc = sorted(i for i, m in self._keys.methods.items() if m.method == "crc")
        if crc:
            # a received packet is checked with the method of the index it names: one crc index is enough
            self._log(
                logging.WARNING,
                f"{self._keys.path}: index {', '.join(map(str, crc))} uses crc, a checksum anybody can compute: "
                "whoever can send to the heartbeat media can forge this cluster's messages and move its "
                "resources; use sha1 unless the media are a private cable",
            )
        self._members.start(now)  # initdead counts from our start
        self._rsc.table.release_all_at_start()
        self._outbound.start(now)
        self._check_comm_isup()
        return self._finish()

    def on_packet(self, data: bytes, source: str, now: float) -> list[Action]:
        """Process one received datagram from `source` (an address, for logs).

        Never raises: unusable packets are dropped and counted."""
        stalls = self.counters["stalls"]
        self._begin(now)
        self.counters["received"] += 1
        try:
            if not self._running():
                self.counters["ignored"] += 1
            elif (
                not self._receive_from(data, source)
                and self.counters["stalls"] == stalls
                and self._deadline is not None
            ):
                # dropped at admission: no state but counters changed, the timers stand
                # (a flood of forged datagrams is rejected without recomputing them)
                out, self._out = self._out, []
                self._due = max(self._deadline, now)
                return out
            else:
                self._drain()
        except Exception as exc:  # a bug must not take the node down
            self.counters["internal_errors"] += 1
            self._log(logging.ERROR, f"internal error on a packet from {source}: {type(exc).__name__}: {exc}")
        return self._finish()

    def on_tick(self, now: float) -> list[Action]:
        """Run timers: keepalives, timeouts, retransmission requests, delays."""
        self._begin(now)
        if self._running():
            self._timers()
            self._drain()
        return self._finish()

    def stop(self, now: float) -> list[Action]:
        """Start a graceful stop (heartbeat's shutdown sequence).

        Releases every group (`Release` actions), then sends ``shutdone`` and
        keeps heartbeating briefly; `Stopped` comes from a later ``on_tick``.
        A second call does nothing."""
        self._begin(now)
        if not self._started:
            self._started = True
            self._stopped = True
            self._out.append(Stopped())
            return self._finish()
        if self._rsc.stop_requested or self._stopped:
            return self._finish()
        self._rsc.begin_stop(now)
        self._log(logging.INFO, "graceful stop requested")
        self._outbound.send_status()
        self._rsc.try_giveup()
        self._drain()
        return self._finish()

    def acquired(self, group: ResourceGroup, ok: bool, now: float) -> list[Action]:
        """The driver carried out an `Acquire` of `group`; `ok` False if it failed."""
        self._begin(now)
        table = self._rsc.table
        if not (self._stopped and table.configured(group)):
            table.confirm_acquired(group, ok, now, retry=not self._rsc.stop_requested)
            self._drain()
        return self._finish()

    def released(self, group: ResourceGroup, now: float) -> list[Action]:
        """The driver carried out a `Release` of `group`."""
        self._begin(now)
        table = self._rsc.table
        if not (self._stopped and table.configured(group)):
            table.confirm_released(group)
            self._drain()
        return self._finish()

    def set_connectivity(self, conn: Connectivity, now: float) -> list[Action]:
        """Our connectivity changed (or is reported for the first time).

        The report goes to the peer at once and every 2 s after (a
        ``directord-connectivity`` message: ``link=up|down ping=UP/TOTAL``).
        While the peer is alive and reports a better `Connectivity.score`,
        we hand every group we hold to it (the ``ask_resources`` standby
        handshake); once ours is as good again, groups we own come back only
        under the failback rule (auto_failback on), through ``hb_takeover``.
        A real heartbeat peer sends no reports: then nothing is decided here.
        """
        self._begin(now)
        if self._running():
            self._handover.set_ours(conn, comm_up=self._comm_up)
            self._drain()
        return self._finish()

    def standby(self, now: float, which: str = "all") -> list[Action]:
        """Hand groups to the peer gracefully (heartbeat's ``hb_standby``).

        Args:
            now: monotonic seconds.
            which: ``all``, ``local`` (the groups we are the preferred owner
                of) or ``foreign`` (the peer's groups we hold).

        Sends ``ask_resources rsc_hold=WHICH info=me``; the peer answers
        ``other``, we release, it acquires (``hb_resource.c``'s
        ``ask_for_resources``). The groups stay with the peer until a
        `takeover`, a failure of the peer, or a restart.

        Raises:
            AdminRefused: not possible now (legacy mode, no live peer, a
                transition or another standby in progress, nothing held).
            ValueError: `which` is not all/local/foreign.
        """
        rtype = rsc_type(which)
        refusal = self._rsc.standby_refusal(rtype, running=self._running(), comm_up=self._comm_up)
        if refusal:
            raise AdminRefused(refusal)
        self._begin(now)
        self._log(logging.INFO, f"standby requested [{which}]")
        self._rsc.start_standby(rtype)
        self._drain()
        return self._finish()

    def takeover(self, now: float, which: str = "all") -> list[Action]:
        """Ask the peer to hand groups to us (heartbeat's ``hb_takeover``).

        Sends ``hb_takeover rsc_hold=WHICH`` (from our point of view: ``local``
        = the groups we own). A directord peer answers by going standby for
        them (`standby`); a heartbeat 3.0.6 peer runs its ``rc.d/hb_takeover``
        script, which in Debian's package goes standby for them as well.

        Raises:
            AdminRefused: not possible now (legacy mode, no live peer, a
                transition in progress, we already hold those groups).
            ValueError: `which` is not all/local/foreign.
        """
        rtype = rsc_type(which)
        refusal = self._rsc.takeover_refusal(rtype, running=self._running(), comm_up=self._comm_up)
        if refusal:
            raise AdminRefused(refusal)
        self._begin(now)
        self._log(logging.INFO, f"takeover requested [{which}]: asking the peer to go standby")
        self._rsc.ask_takeover(rsc_name(rtype))
        self._drain()
        return self._finish()

    def next_deadline(self) -> float:
        """Monotonic time (seconds) of the next timer; ``inf`` when none
        (not started, or stopped). Call ``on_tick`` then, or earlier."""
        if not self._running():
            return float("inf")
        cands = self._outbound.deadlines()
        cands.extend(self._members.deadlines())
        cands.extend(self._receiver.deadlines())
        cands.extend(self._rsc.deadlines())
        cands.extend(self._handover.deadlines())
        for value in (
            self._next_reqnodes if self._members.linksup and not self._got_reqnodes_reply else None,
            self._linger_until,
        ):
            if value is not None:
                cands.append(value)
        return min(cands)

    def snapshot(self) -> NodeSnapshot:
        """Our state and our view of the peers and groups, for status reports."""
        peers = tuple(
            PeerInfo(
                name=p.name,
                status=DEAD if p.shutdone else p.status,
                generation=s.generation,
                uuid=p.uuid,
                last_seq=s.last_seq,
                missing=tuple(sorted(s.missing)),
                dead_time=p.dead_time,
                last_heard=p.last_heard,
                ack_trigger=s.ack_trigger,
                shut_down=p.shutdone,
            )
            for p, s in ((p, self._receiver.streams[p.key]) for p in self._members.peers.values())
        )
        return NodeSnapshot(
            node=self.node,
            status=self._outbound.status,
            generation=self.identity.generation,
            last_seq=self._history.last_seq,
            resource_state=self._rsc.rstate,
            holds=rsc_name(self._rsc.i_hold),
            stopping=self._rsc.stop_requested,
            stopped=self._stopped,
            peers=peers,
            groups=self._rsc.table.infos(),
            connectivity=self._handover.ours,
            peer_connectivity=self._handover.theirs,
            standby=self._rsc.going_standby,
        )

    # ------------------------------------------------------------------ call plumbing

    def _running(self) -> bool:
        return self._started and not self._stopped

    def _begin(self, now: float) -> None:
        self._out = []
        self._now = now
        if self._running() and self._due is not None:
            late = now - self._due
            if late > _STALL_TOLERANCE:
                self._stalled(late)

    def _finish(self) -> list[Action]:
        out, self._out = self._out, []
        for action in out:
            if isinstance(action, Send) and len(action.payload) <= KEPT_MAX_BYTES:
                self._sent[action.payload] = None
                if len(self._sent) > KEPT_PACKETS:
                    del self._sent[next(iter(self._sent))]
        # lateness is measured from our last run, so a stall is counted once
        running = self._running()
        self._deadline = self.next_deadline() if running else None
        self._due = max(self._deadline, self._now) if self._deadline is not None else None
        return out

    def _drain(self) -> None:
        while self._deferred:
            self._deferred.popleft()()

    def _stalled(self, late: float) -> None:
        self.counters["stalls"] += 1
        self._members.give_grace(late)
        self._out.append(TimersLate(late))
        silent = self._outbound.silent_for(self._now)
        advertised = self._outbound.advertised_dt()
        if silent > advertised:
            self._log(
                logging.CRITICAL,
                f"no heartbeat sent for {silent:.2f} s, more than the {advertised:.1f} s deadtime we "
                "advertise: the peer may have declared us dead and taken our groups",
            )

    def _log(self, level: int, message: str) -> None:
        self._out.append(Log(level, message))

    def _log_limited(self, key: str, level: int, message: str) -> None:
        """Log at most once per 10 s per `key` (things an attacker can trigger)."""
        last = self._log_times.get(key)
        if last is None or self._now - last[0] >= _LOG_INTERVAL:
            suppressed = last[1] if last else 0
            extra = f" ({suppressed} similar messages suppressed)" if suppressed else ""
            self._log(level, message + extra)
            self._log_times[key] = (self._now, 0)
        else:
            self._log_times[key] = (last[0], last[1] + 1)

    def _report(self, peer: Peer, status: str, reason: str) -> None:
        if not peer.should_report(status):
            return
        self._out.append(PeerStatus(peer.name, status, reason))

    # ------------------------------------------------------------------------ timers

    def _timers(self) -> None:
        now = self._now
        self._rsc.standby_timers(now)
        self._check_for_timeouts()
        if not self._members.linksup:
            self._check_comm_isup()
        if (
            self._members.linksup
            and not self._got_reqnodes_reply
            and self._next_reqnodes is not None
            and now >= self._next_reqnodes
        ):
            self._send_reqnodes()
        self._rsc.timers(now)
        self._handover.timers(now, comm_up=self._comm_up)
        self._receiver.request_retransmissions(now)
        self._outbound.timers(now)
        self._rsc.stop_timers(now, stopping=self._linger_until is not None)
        if self._linger_until is not None and now >= self._linger_until:
            self._linger_until = None
            self._stopped = True
            self._log(logging.INFO, "heartbeat stopped")
            self._out.append(Stopped())

    def _check_for_timeouts(self) -> None:
        for peer, why in self._members.timed_out(self._now):
            self._mark_dead(peer, why)

    def _mark_dead(self, peer: Peer, why: str) -> None:
        self._log(logging.WARNING, f"node {peer.name}: is dead: {why}")
        peer.declare_dead()
        self._report(peer, DEAD, why)
        self._handover.peer_lost()
        self._rsc.recover_dead_resources(peer)
        peer.forget()
        self._receiver.forget(peer)
        self._kept.clear()

    # ------------------------------------------------------------------------ receiving

    def _receive_from(self, data: bytes, source: str) -> bool:
        self._source = source
        try:
            return self._receive(data, source)
        finally:
            self._source = None

    def _receive(self, data: bytes, source: str) -> bool:
        """Handle one datagram; False if it was dropped at admission (`admit`: nothing
        but counters, the per-source ledger and rate-limited logs changed)."""
        kept = None
        if isinstance(data, bytes) and len(data) <= KEPT_MAX_BYTES:  # hashable, and cheap to hash
            if data in self._sent:
                self.counters["own"] += 1
                return False
            kept = self._kept.get(data)
        if kept is not None and not self._members.peers[kept[0]].dead:
            # a replay of a datagram we took: what `sequence` would say of it (a parse costs
            # ten times the rest; a replayed authentic status cost 150 us, a forged one 10 us)
            key, seq = kept
            self.counters["duplicate" if seq == self._receiver.streams[key].last_seq else "old"] += 1
            return False
        inbound = admit(data, source, self._keys, me=self._me, uuid=self.identity.uuid, peers=self._members.peers)
        if isinstance(inbound, Dropped):
            if inbound.per_source:
                self._reject(source, inbound.counter)
            else:
                self.counters[inbound.counter] += 1
            if inbound.log_key is not None:
                self._log_limited(inbound.log_key, inbound.level, inbound.message)
            return False
        msg, mtype, seq, gen, ts = inbound.msg, inbound.mtype, inbound.seq, inbound.gen, inbound.ts
        srcuuid = inbound.srcuuid
        peer = self._members.peers[inbound.peer_key]
        if srcuuid is not None and len(srcuuid) == 16 and srcuuid != peer.uuid:
            if peer.uuid is not None:
                self._log(logging.INFO, f"node {peer.name} has a new uuid")
            peer.uuid = srcuuid
        peer.anypacketsyet = True

        if inbound.noseq:
            if self._receiver.accept_noseq(peer, msg, mtype, gen):
                if not self._members.linksup:
                    self._check_comm_isup()
                self._receiver.handle_noseq(peer, msg, mtype)
            return True

        if mtype != "status" and self._receiver.from_dead(peer, gen):
            # a peer declared dead speaks again through its status first
            self.counters["from_dead"] += 1
            return True
        result = self._receiver.sequence(peer, msg, mtype, seq, gen, ts)
        if result.new_gen:
            self._rsc.early_starting.discard(peer.key)
        if result.new_gen or result.healed:  # the peer's sequence tracking started over
            self._kept.clear()
        if not result.keep:
            return True
        if isinstance(data, bytes) and len(data) <= KEPT_MAX_BYTES:
            self._kept[data] = (peer.key, seq)
            if len(self._kept) > KEPT_PACKETS:
                del self._kept[next(iter(self._kept))]
        self.counters["accepted"] += 1
        self._dispatch(peer, msg, mtype, seq, ts, restart=result.restart, healed=result.healed)
        if not self._members.linksup:
            self._check_comm_isup()
        return True

    def _reject(self, source: str, reason: str) -> None:
        """Count a datagram dropped before it reached a peer, in total and per source address."""
        self.counters[reason] += 1
        self._rejects.add(source, reason, self._now)

    def rejected_sources(self, now: float) -> list[dict[str, str | float]]:
        """Datagrams dropped before reaching a peer, per source address, busiest first.

        Returns ``[{"address": str, "packets": int, "<reason>": int, ...,
        "last_s": float}]``, at most `MAX_REJECT_SOURCES` entries; reasons are
        the counters ``bad_auth``, ``unknown_auth_index``, ``malformed``,
        ``unknown_node``, ``name_conflict`` and ``replay`` (an authentic packet
        of a peer's earlier generation); ``last_s`` is the seconds since the
        last one (`now` is monotonic seconds).
        """
        return self._rejects.rows(now)

    def _dispatch(
        self, peer: Peer, msg: Message, mtype: str, seq: int, ts: int, *, restart: bool, healed: bool
    ) -> None:
        if mtype == "status":
            self._handle_status(peer, msg, seq, ts, restart)
            if restart:
                self._handover.peer_lost()
            if restart or healed:
                self._handover.resend_soon()  # it lost our report
            if healed:
                self._rsc.partition_healed(peer, self._receiver.streams[peer.key].generation)
        elif mtype == CONNECTIVITY_TYPE:
            self._handover.peer_report(peer, msg, comm_up=self._comm_up)
        elif mtype == TAKEOVER_TYPE:
            if self._comm_up:
                self._handover.peer_takeover(peer, msg, comm_up=self._comm_up)
        elif mtype == "reqnodes":
            self._outbound.send(
                [
                    ("dest", peer.name),
                    ("t", "repnodes"),
                    ("nodelist", "".join(f"{n} " for n in self.config.nodes)),
                    ("delnodelist", " "),
                ]
            )
        elif mtype == "repnodes":
            self._handle_repnodes(peer, msg)
        elif mtype == "starting":
            self._rsc.peer_starting(peer, self._comm_up)
        elif mtype == "resource":
            if self._comm_up and self._rsc.nice:
                self._rsc.process_resources(msg, from_self=False)
        elif mtype == "ask_resources":
            if self._comm_up:
                self._rsc.ask_for_resources(msg, from_self=False)
        elif mtype == "shutdone":
            self._handover.peer_lost()
            self._rsc.peer_shutdone(peer)
        elif mtype == "stonith":
            node = msg.get("node")
            if node is not None and node.lower() == self._me:
                self._log(
                    logging.WARNING,
                    f"{peer.name} declared us dead (stonith result {msg.get('result')}): it may have taken our groups",
                )
        elif mtype == "ip-request":
            if self._comm_up and not self._rsc.nice:
                self._rsc.legacy.ip_request(peer, msg.get("ipaddr"), stopping=self._rsc.stop_requested)
        elif mtype == "ip-request-resp":
            if not self._rsc.nice and (msg.get("ok") == "OK"):
                self._rsc.legacy.ip_request_resp(peer, msg.get("ipaddr"), stopping=self._rsc.stop_requested)

    def _handle_status(self, peer: Peer, msg: Message, seq: int, ts: int, restart: bool) -> None:
        st = msg.get("st")
        if not st:
            self._log_limited("status", logging.ERROR, f"status from {peer.name} without st")
            return
        if peer.stale_status(seq, ts):
            return
        if msg.get("protocol") is None and self._outbound.flow_control:
            self._outbound.flow_control = False
            self._log(logging.INFO, f"flow control disabled: {peer.name} sends no protocol version")
        late = self._members.status_arrived(peer, self._now)
        if late is not None:
            self.counters["late_heartbeats"] += 1
            if late.beyond_deadtime:
                self._log(
                    logging.CRITICAL,
                    f"Late heartbeat: node {peer.name}: interval {late.interval * 1000:.0f} ms (> deadtime)",
                )
            else:
                self._log(logging.WARNING, f"Late heartbeat: node {peer.name}: interval {late.interval * 1000:.0f} ms")
        if seq < peer.status_seqno:
            return  # a retransmitted older status: alive, but not news
        if peer.take_status(st, seq, ts, parse_hex(msg.get("dt"))):
            self._log(logging.INFO, f"status update for node {peer.name}: status {st}")
        if not peer.shutdone:
            self._report(peer, st, "restarted" if restart else "status message")

    def _handle_repnodes(self, peer: Peer, msg: Message) -> None:
        nodelist = msg.get("nodelist")
        if nodelist is not None:
            theirs = {n.lower() for n in nodelist.split()}
            ours = {n.lower() for n in self.config.nodes}
            if self._me not in theirs:
                self._log(logging.ERROR, f"{peer.name}'s node list {nodelist.strip()!r} does not include us")
            elif theirs != ours:
                self._log(
                    logging.WARNING,
                    f"{peer.name}'s node list {nodelist.strip()!r} differs from ours {' '.join(self.config.nodes)!r}",
                )
        if nodelist is not None or msg.get("delnodelist") is not None:
            self._got_reqnodes_reply = True
        self._comm_now_up()

    # ---------------------------------------------------------------------- comm state

    def _check_comm_isup(self) -> None:
        if self._members.linksup:
            return
        if self._members.links_up():
            if self._outbound.flow_control:
                self._send_reqnodes()
            else:
                self._comm_now_up()

    def _send_reqnodes(self) -> None:
        if self._got_reqnodes_reply:
            return
        dest = self._members.first_alive()
        if dest is None:
            self._got_reqnodes_reply = True
            self._comm_now_up()
            return
        self._outbound.send([("t", "reqnodes"), ("dest", dest.name)])
        self._next_reqnodes = self._now + _REQNODES_INTERVAL

    def _comm_now_up(self) -> None:
        if self._comm_up:
            return
        self._comm_up = True
        self._log(logging.INFO, "communication is up: status active")
        self._outbound.status = "active"
        self._outbound.send_status()
        self._handover.resend_soon()
        self._rsc.comm_up()

    # ------------------------------------------------------------------------- shutdown

    def _send_shutdone(self) -> bool:
        """``shutdone``, then keepalives for a short while (to answer
        retransmission requests), then `Stopped`. False if already sent."""
        if self._linger_until is not None or self._stopped:
            return False
        self._log(logging.INFO, "all groups released: sending shutdone")
        self._outbound.send([("t", "shutdone"), ("st", "dead")])
        self._linger_until = self._now + self._linger
        return True


class _Host:
    """The node as its parts see it: `ha.node.resources.ResourceHost`,
    `ha.node.handover.HandoverHost`, `ha.node.outbound.OutboundHost`,
    `ha.node.receiver.ReceiverHost`."""

    def __init__(self, node: HeartbeatNode) -> None:
        self._node = node

    @property
    def now(self) -> float:
        return self._node._now

    def send(self, fields: list[tuple[str, str]]) -> None:
        self._node._outbound.send(fields)

    def emit(self, action: Action) -> None:
        self._node._out.append(action)

    def log(self, level: int, message: str) -> None:
        self._node._log(level, message)

    def log_limited(self, key: str, level: int, message: str) -> None:
        self._node._log_limited(key, level, message)

    def defer(self, fn: Callable[[], None]) -> None:
        self._node._deferred.append(fn)

    def count(self, counter: str, n: int = 1) -> None:
        node = self._node
        node.counters[counter] += n
        if counter == "replay" and node._source is not None:  # a replay of an earlier run: whose?
            node._rejects.add(node._source, counter, node._now)

    def report(self, peer: Peer, status: str, reason: str) -> None:
        self._node._report(peer, status, reason)

    def connectivity(self) -> tuple[Connectivity | None, Connectivity | None]:
        return self._node._handover.ours, self._node._handover.theirs

    def loopback(self, msg: Message) -> None:
        self._node._rsc.own_message(msg)

    def send_shutdone(self) -> bool:
        return self._node._send_shutdone()
