"""The heartbeat v1 resource protocol (haresources, ``crm no``): who holds which
resource group, and how groups move between the two nodes.

* the failback modes: ``auto_failback`` on / off (heartbeat's nice_failback:
  ``starting`` and ``resource`` messages, the local takeover delay) and
  ``legacy`` (`ha.node.legacy`);
* takeover of a dead or gracefully stopped peer's groups (``stonith`` notice);
* standby and takeover requests and the failback handshake (``ask_resources``
  ``me`` / ``other`` / ``done``);
* split brain healed (each group to its preferred owner), one-way partitions;
* the graceful stop's release of every group (``hb_giveup_resources``).

The groups and the driver operations on them are `ha.node.groups`.

Pure: no I/O, no clock reads. It works through a `ResourceHost` (the node):
the current time (monotonic seconds), sending cluster messages, emitting
actions and logs. The behaviour and the choices made are described in the
`ha.node` package docstring.

Protocol sources (facts only): heartbeat 3.0.6 ``heartbeat/hb_resource.c``
(``enum hb_rsc_state``, ``enum standby``, ``HB_UPD_RSC``, ``process_resources``,
``req_our_resources``, ``takeover_from_node``, ``hb_rsc_recover_dead_resources``,
``ask_for_resources``, ``go_standby``, ``hb_giveup_resources``, ``RQSTDELAY``,
``STANDBY_INIT_TO_MS``, ``HB_STANDBY_RSC_TO_MS``).

Why this module is about 800 lines: it is one state machine, heartbeat's ``hb_resource.c``,
whose failback modes, standby handshake, takeover and split-brain rules read and change the
same per-group state; the groups and driver operations already live apart (`ha.node.groups`,
`ha.node.legacy`, `ha.node.handover`).
"""

from __future__ import annotations

import logging
from typing import Protocol

from ha.connectivity import Connectivity
from ha.model import HAConfig
from ha.node.api import REANNOUNCE_REASON, TAKEOVER_TYPE
from ha.node.groups import (
    ALL,
    FOREIGN,
    LOCAL,
    NONE,
    RSC_NAMES,
    GroupTable,
    rsc_name,
)
from ha.node.legacy import LegacyFailback, LegacyHost
from ha.node.membership import DEAD, Membership, Peer
from ha.wire import Message

__all__ = [
    "HB_RQSTDELAY",
    "R_BOTHSTARTING",
    "R_INIT",
    "R_RSCRCVD",
    "R_SHUTDOWN",
    "R_STABLE",
    "R_STARTING",
    "STOP_WAIT",
    "S_DONE",
    "S_ME",
    "S_NOT",
    "S_OTHER",
    "ResourceHost",
    "ResourceProtocol",
    "upd_rsc",
]

# resource states (enum hb_rsc_state)
R_INIT, R_STARTING, R_BOTHSTARTING, R_RSCRCVD, R_STABLE, R_SHUTDOWN = (
    "init",
    "starting",
    "bothstarting",
    "rscrcvd",
    "stable",
    "shutdown",
)
# standby states (enum standby)
S_NOT, S_ME, S_OTHER, S_DONE = "not", "me", "other", "done"

#: RQSTDELAY (seconds): local takeover when nobody becomes stable (``compat: heartbeat``).
HB_RQSTDELAY = 10.0
_STANDBY_FIRST_REPLY = 10.0  # STANDBY_INIT_TO_MS, seconds
_STANDBY_RESOURCES = 3600.0  # HB_STANDBY_RSC_TO_MS, seconds
_AUTOFAILBACK_RETRY = 1.0
#: Seconds after our ``hb_takeover`` request during which the peer's standby is its answer
#: (a heartbeat 3.0.6 peer answers through its ``rc.d/hb_takeover`` script, within a second or two).
TAKEOVER_ANSWER_WAIT = 60.0
#: Seconds a graceful stop waits for outstanding driver operations, then for the releases.
STOP_WAIT = 30.0


def upd_rsc(full: bool, cur: int, new: int) -> int:
    """HB_UPD_RSC: a full update replaces, a partial one adds (none clears)."""
    if full:
        return new
    return NONE if new == NONE else (new | cur)


class ResourceHost(LegacyHost, Protocol):
    """What the resource protocol needs from the node around it (besides
    `LegacyHost`). Our own ``resource``, ``ask_resources`` and ``shutdone``
    messages sent through it must come back through `ResourceProtocol.own_message`."""

    def log_limited(self, key: str, level: int, message: str) -> None:
        """Log at most once per 10 s per `key`."""

    def report(self, peer: Peer, status: str, reason: str) -> None:
        """Report the peer's status to the driver (`PeerStatus`)."""

    def connectivity(self) -> tuple[Connectivity | None, Connectivity | None]:
        """Our connectivity and the peer's last report (None while unknown)."""

    def send_shutdone(self) -> bool:
        """Send ``shutdone`` and start the end of the graceful stop; False
        (nothing sent) when that already happened."""


class ResourceProtocol:
    """heartbeat's v1 resource manager (``hb_resource.c``) for one or two nodes.

    Args:
        config: the HA configuration (`config.node` is us; `config.groups`,
            `auto_failback`, `compat`, `timers.keepalive` seconds, the
            announcement repeats for re-announcements).
        members: the peers (`ha.node.membership`).
        host: the node (`ResourceHost`).

    State (heartbeat's names): `rstate` (``init``/``starting``/``bothstarting``/
    ``rscrcvd``/``stable``/``shutdown``), `i_hold` / `other_holds` (resource
    sets: `NONE`/`LOCAL`/`FOREIGN`/`ALL`), `other_is_stable`,
    `going_standby` (``not``/``me``/``other``/``done``), `groups`
    (`GroupState`, in configuration order); timers in monotonic seconds.
    """

    def __init__(self, config: HAConfig, members: Membership, host: ResourceHost) -> None:
        self.config = config
        self.node = config.node
        self._members = members
        self._host = host
        self.nice = config.auto_failback != "legacy"
        self.failback = config.auto_failback is True
        keepalive = float(config.timers.keepalive)
        self.rqst_delay = HB_RQSTDELAY if config.compat == "heartbeat" else 2 * keepalive
        self.table = GroupTable(config, host, self._shutdown_if_needed)
        self.groups = self.table.groups  # the same list: GroupState by index
        self.legacy = LegacyFailback(config.node, self.table, members, host, self.rqst_delay)

        self.rstate = R_INIT
        self.i_hold = NONE
        self.other_holds = NONE
        self.other_is_stable = False
        self.takeover_in_progress = False
        self.rsc_needs_failback = False
        self.failback_in_progress = False
        # the peer holds our groups since we came up (auto_failback on): its standby
        # [foreign] that hands them back is the failback handshake
        self.failback_expected = False
        # monotonic seconds until which the peer's standby answers our hb_takeover request
        self.takeover_asked_until: float | None = None
        self.going_standby = S_NOT
        self.standby_running: float | None = None
        self.standby_rsctype = ALL
        self.local_takeover_time: float | None = None
        self.autofailback_at: float | None = None
        self.reannounce_at: float | None = None
        self.last_resolution: float | None = None
        self.early_starting: set[str] = set()  # keys of peers whose `starting` came before comm up

        # the graceful stop
        self.stop_requested = False
        self.giveup_started = False
        self.stop_deadline: float | None = None
        self.release_deadline: float | None = None
        self._shutdown_delay_logged = False

    # ------------------------------------------------------------------ driven by the node

    def comm_up(self) -> None:
        """Our communication is up (every peer heard or dead): the first resource step."""
        if not self._members.peers:
            self.rstate = R_STABLE
            self._req_our_resources(True, "single node: taking our groups")
            return
        if self.nice:
            self._host.send([("t", "starting")])
            self.rstate = R_STARTING
            if self.early_starting:
                self.early_starting.clear()
                self.process_starting()
        else:
            self._req_our_resources(False, "preferred owner at start")

    def peer_starting(self, peer: Peer, comm_up: bool) -> None:
        """`peer` sent ``starting``: kept until our communication is up, then answered."""
        if not comm_up:
            self.early_starting.add(peer.key)
        elif self.nice:
            self.process_starting()

    def begin_stop(self, now: float) -> None:
        """A graceful stop was requested at `now` (then call `try_giveup`)."""
        self.stop_requested = True
        self.stop_deadline = now + STOP_WAIT

    def standby_timers(self, now: float) -> None:
        """Timers run first at each tick: the standby handshake's timeout."""
        if self.standby_running is not None and now >= self.standby_running:
            self._standby_timeout()

    def timers(self, now: float) -> None:
        """The resource timers: local takeover delay, auto failback retries,
        legacy ip-request answers, acquisition retries, re-announcements."""
        if (
            self.nice
            and self.rstate == R_RSCRCVD
            and self.local_takeover_time is not None
            and now >= self.local_takeover_time
        ):
            self.rstate = R_STABLE
            self._req_our_resources(False, "local takeover delay passed: taking our own groups")
            self._host.log(logging.INFO, "local resource transition completed")
            self._send_resources_held(True, None)
            self._audit_resources()
        if self.autofailback_at is not None and now >= self.autofailback_at:
            self.autofailback_at = None
            self._perform_auto_failback()
        for idx, g in enumerate(self.groups):
            if g.legacy_deadline is not None and now >= g.legacy_deadline:
                self.legacy.deadline_passed(idx, stopping=self.stop_requested)
            if g.retry_at is not None and now >= g.retry_at:
                g.retry_at = None
                if g.want and not g.held and not g.ops and not self.stop_requested:
                    self.table.acquire(idx, "retry after a failed acquisition")
        if self.reannounce_at is not None and now >= self.reannounce_at:
            self.reannounce_at = None
            self._reannounce_local()

    def stop_timers(self, now: float, stopping: bool) -> None:
        """Timers of the graceful stop, run last at each tick; `stopping` means
        ``shutdone`` went out already."""
        if self.stop_requested and not self.giveup_started:
            self.try_giveup()
        if self.release_deadline is not None and now >= self.release_deadline:
            self.release_deadline = None
            if not stopping:
                self._host.log(
                    logging.ERROR, f"releases not confirmed within {STOP_WAIT:.0f} s: sending shutdone anyway"
                )
                self.table.drop_batches()
                self.send_shutdone()

    def deadlines(self) -> list[float]:
        """Monotonic seconds of the pending resource timers."""
        cands = []
        for value in (
            self.local_takeover_time if self.rstate == R_RSCRCVD else None,
            self.standby_running,
            self.autofailback_at,
            self.reannounce_at,
            self.stop_deadline if self.stop_requested and not self.giveup_started else None,
            self.release_deadline,
        ):
            if value is not None:
                cands.append(value)
        cands.extend(self.table.deadlines())
        return cands

    # ------------------------------------------------------------- standby and takeover requests

    def transition_refusal(self, *, running: bool, comm_up: bool) -> str | None:
        """Why no standby / takeover can start now (None: it can). `running`: the
        node is started and not stopped; `comm_up`: our communication is up."""
        if not running or self.stop_requested:
            return "the node is stopping"
        if not self.nice:
            return "standby and takeover need auto_failback on or off (heartbeat's nice_failback), not legacy"
        if self._members.live_peer() is None:
            return "the peer is not alive"
        if not comm_up or self.rstate != R_STABLE or self.table.busy():
            return "our groups are in transition; try again in a moment"
        if not self.other_is_stable:
            return "the peer's groups are in transition; try again in a moment"
        if self.going_standby != S_NOT or self.standby_running is not None:
            return "a standby handover is already in progress"
        return None

    def standby_refusal(self, rtype: int, *, running: bool, comm_up: bool) -> str | None:
        """Why we cannot go standby for the resource set `rtype` now (None: we can)."""
        refusal = self.transition_refusal(running=running, comm_up=comm_up)
        if refusal is None and not any(self.groups[i].target for i in self.table.groups_of(rtype)):
            refusal = f"we hold none of the {rsc_name(rtype)} groups"
        return refusal

    def takeover_refusal(self, rtype: int, *, running: bool, comm_up: bool) -> str | None:
        """Why we cannot ask for the resource set `rtype` now (None: we can)."""
        refusal = self.transition_refusal(running=running, comm_up=comm_up)
        if refusal is None and all(self.groups[i].target for i in self.table.groups_of(rtype)):
            refusal = f"we already hold the {rsc_name(rtype)} groups"
        return refusal

    def start_standby(self, rtype: int) -> None:
        """Hand the resource set `rtype` to the peer: ``ask_resources info=me``."""
        self.standby_rsctype = rtype
        self.failback_expected = False
        self._send_standby_msg(S_ME)

    def ask_takeover(self, which: str) -> None:
        """Ask the peer for the resource set `which` (``all``/``local``/``foreign``, ours
        point of view): ``hb_takeover rsc_hold=WHICH``. The peer's standby that follows
        within `TAKEOVER_ANSWER_WAIT` seconds is logged as its answer."""
        self.takeover_asked_until = self._host.now + TAKEOVER_ANSWER_WAIT
        self._host.send([("t", TAKEOVER_TYPE), ("rsc_hold", which)])

    def send_shutdone(self) -> None:
        """Every group is released (or the wait is over): ``shutdone``."""
        if self._host.send_shutdone():
            self.release_deadline = None

    # ------------------------------------------------------------------ resource protocol

    def _send_resources_held(self, stable: bool, comment: str | None) -> None:
        if not self.nice:
            return
        fields = [
            ("t", "resource"),
            ("rsc_hold", rsc_name(self.i_hold)),
            ("rtype", "full"),
            ("isstable", "1" if stable else "0"),
        ]
        if comment:
            fields.append(("info", comment))
        self._host.send(fields)

    def own_message(self, msg: Message) -> None:
        """Our own ``resource`` / ``ask_resources`` / ``shutdone`` message `msg`, as
        sent: processed as heartbeat processes its loopback."""
        mtype = msg.msg_type
        if mtype == "resource":
            if self.nice:
                self.process_resources(msg, from_self=True)
        elif mtype == "ask_resources":
            self.ask_for_resources(msg, from_self=True)
        elif mtype == "shutdone":
            self.rstate = R_SHUTDOWN
            self.i_hold = NONE

    def process_starting(self) -> None:
        """The peer sent ``starting`` (once our communication is up, nice_failback)."""
        if self.rstate in (R_RSCRCVD, R_STABLE, R_SHUTDOWN):
            pass
        elif self.rstate == R_STARTING:
            self.rstate = R_BOTHSTARTING
        else:
            self._host.log(logging.ERROR, f"'starting' received in resource state {self.rstate}")
            return
        self.other_is_stable = False
        if self.takeover_in_progress:
            self._host.log(logging.WARNING, "'starting' received during a takeover")
        self._send_resources_held(self.rstate == R_STABLE, None)

    def process_resources(self, msg: Message, *, from_self: bool) -> None:
        """A ``resource`` message (``rsc_hold``, ``rtype``, ``isstable``, ``info``):
        the peer's (`from_self` False) or our own loopback (``process_resources``)."""
        hold = msg.get("rsc_hold")
        if hold is None:
            self._host.log(logging.ERROR, "resource message without rsc_hold")
            return
        if hold in RSC_NAMES:
            n = RSC_NAMES.index(hold)
        else:
            self._host.log_limited("rsc-hold", logging.ERROR, f"bad rsc_hold {hold[:20]!r}")
            n = NONE
        full = msg.get("rtype") == "full"
        state = self.rstate
        newstate = state
        if state in (R_BOTHSTARTING, R_STARTING):
            newstate = R_RSCRCVD
        elif state not in (R_RSCRCVD, R_STABLE, R_SHUTDOWN):
            self._host.log(logging.ERROR, f"resource message received in resource state {state}")
            return
        if not from_self:
            before = self.other_holds
            self.other_holds = upd_rsc(full, self.other_holds, n)
            stable = msg.get("isstable")
            if stable is not None:
                if stable == "1":
                    if not self.other_is_stable:
                        self._host.log(logging.INFO, "remote resource transition completed")
                        self.other_is_stable = True
                        self._send_resources_held(self.rstate == R_STABLE, None)
                        self._perform_auto_failback()
                else:
                    self.other_is_stable = False
            if state not in (R_STABLE, R_SHUTDOWN) and self.other_is_stable:
                self._host.log(logging.INFO, "peer is stable: resource transition completed")
                self._req_our_resources(False, "preferred owner, peer stable")
                newstate = R_STABLE
                self._send_resources_held(True, None)
                self._perform_auto_failback()
            if (
                self.other_holds & LOCAL
                and self.i_hold & FOREIGN
                and self.going_standby == S_NOT
                and not self.stop_requested
            ):
                self._yield_foreign_groups()
            if before & FOREIGN and not self.other_holds & FOREIGN and self.i_hold & LOCAL:
                # the peer stops claiming our groups while we hold them: it may
                # have announced them meanwhile (split brain, our stall)
                if not self.stop_requested and any(g.held and not g.ops for g in self.groups if g.local):
                    self._host.log(logging.WARNING, "peer released its claim on our groups: re-announcing them")
                    self._reannounce_local()
        else:
            self.i_hold = upd_rsc(full, self.i_hold, n)
            comment = msg.get("info")
            if comment == "mach_down":
                self._host.log(logging.INFO, "takeover of the peer's groups complete")
                self.takeover_in_progress = False
                self.i_hold |= FOREIGN
                self.rsc_needs_failback = True
                self.other_is_stable = True
            elif comment == "shutdown":
                self.rstate = newstate = R_SHUTDOWN
        self.rstate = R_SHUTDOWN if self.giveup_started else newstate
        if self.rstate == R_RSCRCVD and self.local_takeover_time is None:
            self.local_takeover_time = self._host.now + self.rqst_delay
        self._audit_resources()
        self._shutdown_if_needed()

    def isstable(self) -> bool:
        """Both sides stable, no takeover, standby or driver operation under way."""
        busy = self.table.busy()
        return (
            self.other_is_stable
            and not self.takeover_in_progress
            and self.going_standby == S_NOT
            and self.standby_running is None
            and not busy
            and self.rstate in (R_STABLE, R_SHUTDOWN, R_INIT)
        )

    def _audit_resources(self) -> None:
        if not self.nice:
            return
        if self.i_hold & LOCAL and self.other_holds & FOREIGN:
            self._host.log_limited("audit-local", logging.ERROR, "both nodes claim our groups")
        if self.other_holds & LOCAL and self.i_hold & FOREIGN:
            self._host.log_limited("audit-foreign", logging.ERROR, "both nodes claim the peer's groups")
        if self.isstable() and not self.stop_requested and self.rstate != R_SHUTDOWN and self._members.peers:
            if not self.i_hold & LOCAL and not self.other_holds & FOREIGN and self.table.groups_of(LOCAL):
                self._host.log_limited("orphan-local", logging.ERROR, "nobody holds our groups")
            if not self.other_holds & LOCAL and not self.i_hold & FOREIGN and self.table.groups_of(FOREIGN):
                self._host.log_limited("orphan-foreign", logging.ERROR, "nobody holds the peer's groups")

    def _req_our_resources(self, getthemanyway: bool, reason: str) -> None:
        if self.stop_requested:
            return
        local = self.table.groups_of(LOCAL)
        if not self.nice:
            self.legacy.request_our_groups(reason)
            return
        if (self.other_holds & FOREIGN or self.i_hold & LOCAL) and not getthemanyway:
            if self.going_standby == S_NOT:
                self._host.log(logging.INFO, "local resource acquisition completed (none needed)")
                # the peer holds our groups: with auto_failback it hands them back
                self.failback_expected = self.failback and bool(self.other_holds & FOREIGN)
                return
        self.i_hold |= LOCAL
        newly = [i for i in local if not self.groups[i].target]

        def done(now: float) -> None:
            self.legacy.announce_owned(newly)
            if not self.stop_requested:
                if not local:
                    self._host.log(logging.INFO, "no local groups to acquire")
                self._send_resources_held(True, "req_our_resources()")

        self.table.start_batch(local, "acquire", reason, done)

    def _takeover_from_node(self, peer: Peer, why: str) -> None:
        if self.stop_requested:
            self._host.log(logging.INFO, "resource takeover cancelled: shutdown in progress")
            return
        self._host.log(logging.INFO, f"resources being acquired from {peer.name} ({why})")
        self.failback_expected = False
        if self.nice:
            self.i_hold |= FOREIGN
            self.other_holds = NONE
            self.other_is_stable = True
            self.takeover_in_progress = True
        self._req_our_resources(True, f"takeover: {why}")
        peer.anypacketsyet = True
        foreign = [i for i, g in enumerate(self.groups) if g.group.owner.lower() == peer.name.lower()]

        def mach_down(now: float) -> None:
            if self.nice and not self.stop_requested:
                self._host.send([("t", "resource"), ("rsc_hold", "foreign"), ("info", "mach_down")])

        self.table.start_batch(foreign, "acquire", f"takeover from {peer.name}: {why}", mach_down)

    def recover_dead_resources(self, peer: Peer) -> None:
        """`peer` was declared dead: ``stonith`` notice and takeover of its groups
        (``hb_rsc_recover_dead_resources``); a pending standby is cancelled."""
        if self.going_standby != S_NOT:
            self._host.log(logging.INFO, "cancelling the pending standby operation")
            self.going_standby = S_NOT
            self.standby_running = None
            if not self.other_is_stable and self.i_hold == ALL:
                self.other_is_stable = True
        if self.stop_requested:
            return
        self.rsc_needs_failback = True
        need_stonith = True
        if peer.anypacketsyet:
            if self.nice:
                if self.other_holds == NONE:
                    need_stonith = False
            elif not peer.has_resources:
                need_stonith = False
        if need_stonith:
            self._host.send([("t", "stonith"), ("node", peer.name), ("result", "n_stnth")])
            self._host.log(logging.WARNING, "no STONITH device configured: shared resources are not protected")
            self._takeover_from_node(peer, "node dead")
        else:
            self._host.log(logging.INFO, f"dead node {peer.name} held no groups")
            self._host.send([("t", "stonith"), ("node", peer.name), ("result", "unneeded")])
            if self.nice:
                if self.i_hold == ALL:
                    self.other_is_stable = True
                    return
                if not self.i_hold & LOCAL:
                    self._req_our_resources(True, "peer dead")
                if not self.i_hold & FOREIGN:
                    self._takeover_from_node(peer, "node dead")
            else:
                self._takeover_from_node(peer, "node dead")

    def peer_shutdone(self, peer: Peer) -> None:
        """`peer` sent ``shutdone``: it released everything; take its groups at once."""
        peer.has_resources = False
        self.other_is_stable = False
        self.other_holds = NONE
        self._host.log(logging.INFO, f"received shutdown notice from {peer.name}")
        peer.shutdone = True
        self._host.report(peer, DEAD, "graceful shutdown")
        self._takeover_from_node(peer, "peer shut down")

    def _perform_auto_failback(self) -> None:
        if self.stop_requested or not self.i_hold & FOREIGN or not self.rsc_needs_failback or not self.failback:
            self.rsc_needs_failback = False
            self._shutdown_if_needed()
            return
        if self.going_standby != S_NOT or not self.other_is_stable or self.rstate != R_STABLE:
            self._host.log(logging.DEBUG, "auto failback delayed")
            self.autofailback_at = self._host.now + _AUTOFAILBACK_RETRY
            return
        conn, peer_conn = self._host.connectivity()
        if conn is not None and peer_conn is not None and peer_conn.score < conn.score:
            self._host.log_limited(
                "failback-connectivity",
                logging.INFO,
                f"auto failback delayed: the peer's connectivity ({peer_conn}) is worse than ours ({conn})",
            )
            self.autofailback_at = self._host.now + _AUTOFAILBACK_RETRY
            return
        self._host.log(logging.INFO, "auto failback: handing the peer's groups back")
        self.failback_in_progress = True
        self.standby_rsctype = FOREIGN
        self.rsc_needs_failback = False
        self._send_standby_msg(S_ME)

    def _send_standby_msg(self, state: str) -> None:
        self._host.send([("t", "ask_resources"), ("rsc_hold", rsc_name(self.standby_rsctype)), ("info", state)])

    def _standby_timeout(self) -> None:
        self.standby_running = None
        self.other_is_stable = True
        self.going_standby = S_NOT
        self._host.log(logging.WARNING, "no reply to the standby request: cancelled")
        if self.failback_in_progress and self.failback and self.i_hold & FOREIGN:
            self.rsc_needs_failback = True
            self.autofailback_at = self._host.now + _AUTOFAILBACK_RETRY
        self.failback_in_progress = False
        self._shutdown_if_needed()

    def ask_for_resources(self, msg: Message, *, from_self: bool) -> None:
        """An ``ask_resources`` message (``info=me|other|done``, ``rsc_hold``), the
        peer's or our own: one step of the standby handshake (``ask_for_resources``)."""
        if not self.nice:
            self._host.log(logging.INFO, "standby is only implemented with auto_failback on or off")
            return
        if self.rstate == R_SHUTDOWN:
            return
        info = msg.get("info")
        frm = msg.get("src")
        hold = msg.get("rsc_hold")
        rtype = ALL if hold is None else (RSC_NAMES.index(hold) if hold in RSC_NAMES else NONE)
        if info is None or frm is None:
            self._host.log(logging.ERROR, "standby message without info or src")
            return
        info = info.lower()
        orig = self.going_standby
        ignored = False
        now = self._host.now
        if self.standby_running is not None and now < self.standby_running and info == "me":
            left = self.standby_running - now
            self._host.log(logging.WARNING, f"standby in progress: new request from {frm} ignored ({left:.0f} s left)")
            return
        if orig == S_NOT:
            if not self.other_is_stable:
                self._host.log(logging.WARNING, f"standby message [{info}] from {frm} ignored: the peer is in flux")
                return
            if self.rstate != R_STABLE:
                self._host.log(logging.WARNING, f"standby message [{info}] from {frm} ignored: our groups are in flux")
                return
            self.standby_rsctype = rtype
            if info == S_ME:
                self.other_is_stable = False
                self._host.log(logging.INFO, f"{frm} wants to go standby [{rsc_name(rtype)}]")
                if from_self:
                    self.standby_running = now + _STANDBY_FIRST_REPLY
                    self.going_standby = S_ME
                else:
                    self.going_standby = S_OTHER
                    self._send_standby_msg(S_OTHER)
                    self.standby_running = now + _STANDBY_RESOURCES
            else:
                ignored = True
        elif orig == S_ME:
            if not from_self:
                self.standby_rsctype = rtype
                self.standby_running = now + _STANDBY_RESOURCES
                if info == S_OTHER:
                    self._host.log(logging.INFO, f"standby: {frm} can take our {rsc_name(rtype)} groups")
                    self._go_standby(S_ME, rtype)
                else:
                    ignored = True
            elif info == S_DONE:
                self._host.log(logging.INFO, f"local standby completed [{rsc_name(rtype)}]")
                self.going_standby = S_DONE
                self.i_hold &= ~self.standby_rsctype & ALL
                self.standby_running = now + _STANDBY_RESOURCES
            else:
                ignored = True
        elif orig == S_OTHER:
            self.standby_rsctype = rtype
            if info == S_DONE:
                self.standby_running = now + _STANDBY_RESOURCES
                if not from_self:
                    self._host.log(logging.INFO, f"standby: acquiring [{rsc_name(rtype)}] groups from {frm}")
                    self._go_standby(S_OTHER, self.standby_rsctype)
                    self.going_standby = S_DONE
                else:
                    ignored = True
            elif not from_self or info != S_OTHER:
                ignored = True
        elif orig == S_DONE:
            self.standby_rsctype = rtype
            if info == S_DONE:
                self.standby_running = None
                self.going_standby = S_NOT
                if from_self:
                    self._host.log(logging.INFO, f"standby acquisition done [{rsc_name(rtype)}]")
                    rup = {LOCAL: FOREIGN, FOREIGN: LOCAL, ALL: ALL}.get(rtype, NONE)
                    self.i_hold |= rup
                else:
                    self._host.log(logging.INFO, f"{frm} completed the standby takeover of {rsc_name(rtype)} groups")
                self.failback_in_progress = False
                self._send_resources_held(True, None)
                self.going_standby = S_NOT
            else:
                ignored = True
        if ignored:
            self._host.log(logging.ERROR, f"ignored standby message '{info}' from {frm} in standby state {orig}")
        self._shutdown_if_needed()

    def _go_standby(self, who: str, resourceset: int) -> None:
        if who == S_ME:
            self.other_is_stable = False
            self.i_hold &= ~resourceset & ALL
            self._send_resources_held(False, "standby")
            op = "release"
        else:
            op = "acquire"
        if resourceset == FOREIGN:
            act = FOREIGN if who == S_ME else LOCAL
        elif resourceset == LOCAL:
            act = LOCAL if who == S_ME else FOREIGN
        elif resourceset == ALL:
            act = ALL
        else:
            self._host.log(logging.ERROR, f"no groups to {op} (standby)")
            return
        self._host.log(logging.INFO, f"{op} {rsc_name(act)} groups (standby)")
        peer = next(iter(self._members.peers.values()), None)
        name = peer.name if peer else "?"
        if op == "release":
            reason = f"standby: handing {rsc_name(act)} groups to {name}"
            if self.failback_in_progress:
                reason = f"failback to the preferred owner {name}"
        else:
            now = self._host.now
            asked = self.takeover_asked_until is not None and now < self.takeover_asked_until
            expected = self.failback_expected and resourceset == FOREIGN
            self.takeover_asked_until = None
            self.failback_expected = False
            what = "our groups" if act == LOCAL else "its groups"
            if asked:
                # our hb_takeover: a heartbeat 3.0.6 peer answers with its hb_standby (rc.d/hb_takeover)
                reason = f"takeover requested: the peer {name} went standby ({rsc_name(resourceset)}), taking {what}"
            elif expected:
                # the peer took our groups while we were away and hands them back (auto_failback)
                reason = f"failback handshake: the peer {name} hands our groups back"
            else:
                # the peer's own standby (hb_standby / directord standby, any set)
                reason = f"the peer {name} went standby ({rsc_name(resourceset)}): taking {what}"

        def done(now: float) -> None:
            self._host.log(logging.INFO, f"{rsc_name(act)} groups {op} completed (standby)")
            self._send_standby_msg(S_DONE)

        self.table.start_batch(self.table.groups_of(act), op, reason, done)

    # ------------------------------------------------------------------ split brain healed

    def partition_healed(self, peer: Peer, generation: int) -> None:
        """`peer`, declared dead, speaks again with the same `generation`: each
        group goes to (or stays with) its preferred owner (see `ha.node`)."""
        self._host.count("partitions_healed")
        self._host.log(
            logging.CRITICAL,
            f"cluster node {peer.name} returning after partition (same generation {generation}): "
            "both nodes held groups; each group goes to its preferred owner",
        )
        self._host.log(logging.WARNING, "deadtime may be too small for this network")
        if self.stop_requested:
            return
        self.going_standby = S_NOT
        self.standby_running = None
        self.takeover_in_progress = False
        self.rsc_needs_failback = False
        self.failback_in_progress = False
        self.autofailback_at = None
        self.other_holds = LOCAL
        self.other_is_stable = False
        self.i_hold = LOCAL
        if self.nice and self.rstate != R_SHUTDOWN:
            self.rstate = R_STABLE
        self._send_resources_held(False, None)
        foreign = self.table.groups_of(FOREIGN)
        local = self.table.groups_of(LOCAL)
        for i in foreign:
            self.table.release(i, f"partition healed: {peer.name} is the preferred owner")
        for i in local:
            g = self.groups[i]
            if g.held and not g.ops:
                self.table.acquire(i, REANNOUNCE_REASON, force=True)
            else:
                self.table.acquire(i, "partition healed: we are the preferred owner")
        self.last_resolution = self._host.now
        self.reannounce_at = self._host.now + max(self.config.announce_repeats, 1) * self.config.announce_interval

        def done(now: float) -> None:
            self._send_resources_held(True, None)

        self.table.start_batch(foreign + local, None, "", done)

    def _yield_foreign_groups(self) -> None:
        """The peer claims its own groups while we hold them too (heartbeat only
        logs "both machines own foreign resources"): its claim comes after a
        takeover we did not see (one-way partition) or a resolution; the
        preferred owner keeps its groups, so we let go of ours."""
        peer = next(iter(self._members.peers.values()))
        self._host.log(
            logging.ERROR,
            f"both nodes claim {peer.name}'s groups: {peer.name} is their preferred owner, releasing them",
        )
        self.i_hold &= ~FOREIGN & ALL
        self.rsc_needs_failback = False
        self.autofailback_at = None
        self._send_resources_held(False, None)
        foreign = self.table.groups_of(FOREIGN)

        def done(now: float) -> None:
            if not self.stop_requested:
                self._send_resources_held(True, None)

        self.table.start_batch(foreign, "release", f"{peer.name} claims its groups: it is their preferred owner", done)

    def _reannounce_local(self) -> None:
        if self.stop_requested:
            return
        for i in self.table.groups_of(LOCAL):
            g = self.groups[i]
            if g.held and not g.ops:
                self.table.acquire(i, REANNOUNCE_REASON, force=True)

    # ------------------------------------------------------------------------- shutdown

    def _shutdown_if_needed(self) -> None:
        if self.stop_requested and not self.giveup_started:
            self.try_giveup()

    def try_giveup(self) -> None:
        """The graceful stop (``hb_giveup_resources``): once no driver operation is
        outstanding (or `STOP_WAIT` passed), release everything, then ``shutdone``."""
        if self.giveup_started:
            return
        busy = self.table.busy()
        if busy and self.stop_deadline is not None and self._host.now < self.stop_deadline:
            if not self._shutdown_delay_logged:
                self._shutdown_delay_logged = True
                self._host.log(logging.WARNING, "shutdown delayed until current resource activity finishes")
            return
        if busy:
            self._host.log(
                logging.ERROR, f"resource operations not confirmed within {STOP_WAIT:.0f} s: stopping anyway"
            )
            self.table.abandon()
        self.giveup_started = True
        self.going_standby = S_NOT
        self.standby_running = None
        self.takeover_in_progress = False
        self.autofailback_at = None
        self.reannounce_at = None
        self.i_hold = NONE
        self.rstate = R_SHUTDOWN
        self._send_resources_held(False, "shutdown")
        self._host.log(logging.INFO, "heartbeat shutdown in progress: giving up all groups")
        release = [i for i, g in enumerate(self.groups) if g.target or (g.want and not g.held)]
        for i in release:
            if not self.groups[i].target:  # a failed acquisition may have left addresses behind
                self.table.force_release(i, "graceful shutdown")
        self.release_deadline = self._host.now + STOP_WAIT
        self.table.start_batch(release, "release", "graceful shutdown", lambda now: self.send_shutdone())
