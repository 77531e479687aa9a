"""The HA service: the I/O around the pure heartbeat node (`ha.node.HeartbeatNode`).

`HAService` owns, for one ``ha:`` section:

* the node, fed with ``time.monotonic()`` (``now``, seconds), ``time.time``
  as its wall clock and ``/proc/loadavg`` for the ``ld`` field;
* the media (`ha.media.Media`): every received datagram goes to
  ``node.on_packet``; every `Send` goes out on every medium;
* a ticker: ``node.on_tick`` at ``node.next_deadline()`` and at least every
  250 ms (heartbeat checks timeouts every 250 ms, ``heartbeat.c``);
* one worker per resource group that carries out the node's `Acquire` and
  `Release` actions of that group in the order given: `Acquire` adds every
  address (`ha.vip.add_vip`), starts the announcements (`ha.announce.Announcer`:
  a burst at once, ``announce_repeats`` rounds ``announce_interval`` seconds
  apart, then one round every ``announce_refresh`` seconds while held when
  that is > 0) and confirms with ``node.acquired(group, ok, now)``; `Release`
  cancels the group's announcements, removes its addresses
  (`ha.vip.remove_vip`) and confirms with ``node.released``. An I/O error is
  logged and reported as ``acquired(ok=False)`` (the node retries); the
  addresses already added by a failed acquisition are removed again.
  Nothing here raises into the daemon after `start`.

* an address audit every `AUDIT_INTERVAL` seconds: an address of a group
  this node holds that went missing (someone ran ``ip addr del``) is added
  and announced again; an address of ours present while the group is not
  held here is removed ("VIP present <=> this node holds the group");
* connectivity: a `ha.probe.LinkMonitor` on the resource and medium
  interfaces and, with ping nodes, a `ha.probe.Pinger`; every change gives
  the node a new `ha.connectivity.Connectivity` (``node.set_connectivity``);
* admin requests `standby` / `takeover` (``directord standby|takeover``).

`Log` actions are logged on the ``directord.ha`` logger; what the service does (peer
changes, acquisitions, releases, addresses, announcement failures) goes out as typed events
(`ha.events`) to the ``on_event`` sink, which logs them.
Everything runs on the daemon's event loop, in the daemon's network
namespace (sockets, addresses and announcements live there).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ha.announce import Announcer
from ha.auth import AuthKeysError, load_authkeys
from ha.connectivity import Connectivity
from ha.environment import check_ha_environment
from ha.events import (
    AddressRemoved,
    AddressRepaired,
    AnnounceFailed,
    AnnouncementSent,
    GroupAcquired,
    GroupAcquireFailed,
    GroupAcquiring,
    GroupReleased,
    GroupReleasing,
    HAEvent,
    HAEventSink,
    PeerChanged,
    TimersLate,
    emit,
    group_text,
)
from ha.identity import IdentityError, NodeLock, load_identity, lock_node
from ha.media import Media, MediumError
from ha.model import HAConfig, ResourceGroup
from ha.node import Acquire, AdminRefused, HeartbeatNode, Log, PeerStatus, Release, Send, Stopped
from ha.node import TimersLate as NodeTimersLate
from ha.probe import LinkMonitor, Pinger, ProbeError
from ha.vip import add_vip, has_vip, remove_vip

log = logging.getLogger("directord.ha")

__all__ = ["HAStartError", "HAService", "AdminRefused", "TICK_MAX", "read_loadavg"]

#: Longest interval between two ``on_tick`` calls, seconds (heartbeat's 250 ms timeout checks).
TICK_MAX = 0.25
#: Default bound of a graceful stop, seconds (releases, ``shutdone``, the node's linger).
STOP_TIMEOUT = 15.0
#: Seconds between two audits of the addresses against the groups held.
AUDIT_INTERVAL = 1.0


class HAStartError(RuntimeError):
    """The HA service cannot start; the message names the file and the problem(s)."""


def read_loadavg(path: str = "/proc/loadavg") -> str:
    """The first line of ``/proc/loadavg`` (heartbeat's ``ld`` field); a neutral line if unreadable."""
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return fh.readline().strip() or "0.00 0.00 0.00 1/1 1"
    except OSError:
        return "0.00 0.00 0.00 1/1 1"


@dataclass
class _GroupIO:
    queue: asyncio.Queue
    worker: asyncio.Task | None = None
    announcing: asyncio.Task | None = None
    busy: bool = False


class _Audit:
    """A queued address audit of one group (runs in the group's worker, between node actions)."""


class HAService:
    """Runs heartbeat HA for one ``ha:`` section (see the module docstring).

    Args:
        config: the validated ``ha:`` section.
        on_role_change: called as ``on_role_change(group, held)`` after a
            group was acquired (``held`` True) or released (False) here;
            exceptions it raises are logged.
        config_file: the configuration file's path, for error messages.
        check_environment: run `ha.environment.check_ha_environment` in `start`.
        on_event: where the service's events go (`ha.events`: peer changes, acquisitions,
            releases, addresses added and removed, announcement failures), on the event
            loop's thread; it logs them (the daemon's `director.events.EventBus` does). Without
            one, each event is logged on the ``directord.ha`` logger. Exceptions it raises are
            logged.

    Lifecycle: ``await start()`` once, ``await stop()`` once; `snapshot`
    at any time.
    """

    def __init__(
        self,
        config: HAConfig,
        *,
        on_role_change: Callable[[ResourceGroup, bool], None] | None = None,
        config_file: str | None = None,
        check_environment: bool = True,
        on_event: HAEventSink | None = None,
    ) -> None:
        self.config = config
        self._on_event = on_event
        self._on_role_change = on_role_change
        self._file = config_file
        self._check_environment = check_environment
        self.node: HeartbeatNode | None = None
        self.media: Media | None = None
        self.announcer = Announcer()
        self._groups: dict[ResourceGroup, _GroupIO] = {}
        self._ticker: asyncio.Task | None = None
        self._auditor: asyncio.Task | None = None
        self.repairs = 0
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._started = False
        self._closed = False
        self.held: set[ResourceGroup] = set()
        self.failures = 0
        self.links: LinkMonitor | None = None
        self.pinger: Pinger | None = None
        self._node_lock: NodeLock | None = None  # one process per node and state_dir (ha.identity.lock_node)
        self._resource_ifaces = sorted({r.interface for g in config.groups for r in g.resources})

    # --- lifecycle ----------------------------------------------------------------

    def _emit(self, event: HAEvent) -> None:
        """Hand ``event`` to the sink (`ha.events.emit`: logged when there is none)."""
        emit(self._on_event, event)

    def _where(self) -> str:
        return self._file or "the ha section"

    async def start(self) -> None:
        """Check the environment, load authkeys and identity, open the media, start heartbeating.

        Raises:
            HAStartError: the environment check found problems (one line
                each, prefixed with the file and line of the ``ha:`` key),
                the authkeys or identity files are unusable, another
                process runs this node on this state_dir (its lock file), the node
                refuses the configuration, or a medium cannot be opened.
            RuntimeError: called twice.
        """
        if self._started:
            raise RuntimeError("HAService.start() called twice")
        self._started = True
        cfg = self.config
        if self._check_environment:
            try:
                problems = await asyncio.to_thread(check_ha_environment, cfg, file=self._file)
            except OSError as exc:
                raise HAStartError(f"{self._where()}: cannot inspect the network interfaces: {exc}") from exc
            if problems:
                raise HAStartError("HA not started, the ha section does not fit this machine:\n" + "\n".join(problems))
        try:
            keys = load_authkeys(cfg.authkeys)
        except AuthKeysError as exc:
            raise HAStartError(f"{self._where()}: ha.authkeys: {exc}") from exc
        try:
            self._node_lock = lock_node(cfg.state_dir, cfg.node)
            identity = load_identity(cfg.state_dir, cfg.node)
        except (IdentityError, ValueError) as exc:
            raise HAStartError(f"{self._where()}: ha.state_dir: {exc}") from exc
        try:
            self.node = HeartbeatNode(cfg, keys, identity, loadavg=read_loadavg, wallclock=time.time)
        except ValueError as exc:
            raise HAStartError(f"{self._where()}: ha: {exc}") from exc
        self.media = Media(cfg.media, self._on_packet)
        try:
            await self.media.start()
        except MediumError as exc:
            raise HAStartError(f"{self._where()}: ha.media: {exc}") from exc
        try:
            await self._start_probes()
        except ProbeError as exc:
            self.media.close()
            raise HAStartError(f"{self._where()}: ha: {exc}") from exc
        loop = asyncio.get_running_loop()
        for group in cfg.groups:
            io = _GroupIO(asyncio.Queue())
            io.worker = loop.create_task(self._group_worker(group, io), name=f"ha-group-{group.owner}")
            self._groups[group] = io
        log.info(
            "HA node %s (generation %d) starting: peers %s, %d resource group(s), keepalive %.3f s, deadtime %.3f s",
            cfg.node,
            identity.generation,
            [n for n in cfg.nodes if n.lower() != cfg.node.lower()],
            len(cfg.groups),
            cfg.timers.keepalive,
            cfg.timers.deadtime,
        )
        self._execute(self.node.start(time.monotonic()))
        self._connectivity_changed()
        self._ticker = loop.create_task(self._tick_loop(), name="ha-ticker")
        self._auditor = loop.create_task(self._audit_loop(), name="ha-audit")

    async def _start_probes(self) -> None:
        cfg = self.config
        watched = set(self._resource_ifaces) | {m.interface for m in cfg.media}
        if watched:
            self.links = LinkMonitor(watched, self._connectivity_changed)
            await self.links.start()
        if cfg.ping_nodes:
            self.pinger = Pinger(
                cfg.ping_nodes,
                interval=cfg.ping_interval,
                timeout=cfg.ping_timeout,
                rise=cfg.ping_rise,
                fall=cfg.ping_fall,
                on_change=self._connectivity_changed,
            )
            try:
                await self.pinger.start()
            except ProbeError:
                if self.links is not None:
                    self.links.close()
                raise

    def connectivity(self) -> Connectivity:
        """Our `Connectivity` now: carrier of every resource interface (when
        ``link_monitor`` is on) and the ping nodes reachable."""
        link_up = True
        if self.config.link_monitor and self.links is not None:
            link_up = all(self.links.up(name) for name in self._resource_ifaces)
        if self.pinger is None:
            return Connectivity(link_up, 0, 0)
        return Connectivity(link_up, self.pinger.reachable, len(self.pinger.targets))

    def _connectivity_changed(self) -> None:
        if self.node is None or self._stopped.is_set() or self._closed:
            return
        self._execute(self.node.set_connectivity(self.connectivity(), time.monotonic()))

    # --- admin requests -------------------------------------------------------------

    def standby(self, which: str = "all") -> str:
        """Hand our groups to the peer (``directord standby``); returns what was done.

        Raises:
            AdminRefused: not possible now (the message says why).
            ValueError: `which` is not all/local/foreign.
        """
        if self.node is None or self._closed:
            raise AdminRefused("HA is not running")
        self._execute(self.node.standby(time.monotonic(), which))
        return f"standby [{which}] requested: the peer takes the groups over"

    def takeover(self, which: str = "all") -> str:
        """Ask the peer to hand its groups to us (``directord takeover``); returns what was done.

        Raises:
            AdminRefused: not possible now (the message says why).
            ValueError: `which` is not all/local/foreign.
        """
        if self.node is None or self._closed:
            raise AdminRefused("HA is not running")
        self._execute(self.node.takeover(time.monotonic(), which))
        return f"takeover [{which}] requested: the peer hands the groups over"

    async def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop gracefully: release every group, tell the peer (``shutdone``), close the media.

        Waits until the node reports `Stopped` or ``timeout`` seconds have
        passed; after a timeout the addresses this service holds are removed
        anyway (a dead node must not keep a VIP). Idempotent; never raises.
        """
        if not self._started or self._closed:
            self._closed = True
            return
        self._closed = True
        node = self.node
        if node is not None and self._ticker is not None and not self._stopped.is_set():
            self._execute(node.stop(time.monotonic()))
            try:
                await asyncio.wait_for(self._stopped.wait(), timeout)
            except TimeoutError:
                log.error("HA node did not finish its graceful stop in %.1f s; removing its addresses", timeout)
        tasks = [t for t in (self._ticker, self._auditor) if t is not None]
        for io in self._groups.values():
            tasks.extend(t for t in (io.worker, io.announcing) if t is not None)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for group in list(self.held):
            await self._remove_addresses(group)
            self.held.discard(group)
        if self.media is not None:
            self.media.close()
        if self.pinger is not None:
            self.pinger.close()
        if self.links is not None:
            self.links.close()
        self.announcer.close()
        if self._node_lock is not None:
            self._node_lock.release()
        log.info("HA node %s stopped", self.config.node)

    # --- the node's inputs ----------------------------------------------------------

    def _on_packet(self, data: bytes, source: str) -> None:
        node = self.node
        if node is None or self._stopped.is_set():
            return
        accepted = node.counters["accepted"]
        self._execute(node.on_packet(data, source, time.monotonic()))
        if node.counters["accepted"] > accepted and self.media is not None:
            self.media.learn_peer(source)  # authentic and new: the peer's own receive queue

    async def _tick_loop(self) -> None:
        node = self.node
        assert node is not None
        while not self._stopped.is_set():
            now = time.monotonic()
            delay = min(node.next_deadline() - now, TICK_MAX)
            if delay > 0:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), delay)
                except TimeoutError:
                    pass
            try:
                self._execute(node.on_tick(time.monotonic()))
            except Exception:  # a bug in the node must not stop the heartbeat loop silently
                log.exception("HA node tick failed")
                await asyncio.sleep(TICK_MAX)

    # --- actions ----------------------------------------------------------------------

    def _execute(self, actions: Iterable[Any]) -> None:
        """Carry out the node's actions in order (Acquire/Release go to their group's worker)."""
        for action in actions:
            if isinstance(action, Send):
                if self.media is not None:
                    self.media.send(action.payload)
            elif isinstance(action, Log):
                log.log(action.level, "%s", action.message)
            elif isinstance(action, PeerStatus):
                self._emit(PeerChanged(action.node, action.status, action.reason))
            elif isinstance(action, NodeTimersLate):
                self._emit(TimersLate(action.late))
            elif isinstance(action, (Acquire, Release)):
                io = self._groups.get(action.group)
                if io is None:
                    log.error("%s of an unknown group %s", type(action).__name__, action.group)
                    continue
                io.queue.put_nowait(action)
            elif isinstance(action, Stopped):
                self._stopped.set()
            else:
                log.warning("unknown HA action %r", action)
        # a packet or a confirmation may have moved the next deadline closer
        self._wake.set()

    async def _audit_loop(self) -> None:
        while not self._stopped.is_set():
            await asyncio.sleep(AUDIT_INTERVAL)
            node = self.node
            if node is None or self._closed:
                continue
            pending = {g.group for g in node.snapshot().groups if g.pending}
            for group, io in self._groups.items():
                if group not in pending and io.queue.empty() and not io.busy:
                    io.queue.put_nowait(_Audit())

    async def _audit(self, group: ResourceGroup, io: _GroupIO) -> None:
        """Make the addresses of ``group`` match whether we hold it."""
        held = group in self.held
        for resource in group.resources:
            try:
                present = await has_vip(resource)
                if held and not present:
                    self.repairs += 1
                    self._emit(AddressRepaired(str(resource), group_text(group), "added"))
                    await add_vip(resource, on_event=self._emit)
                    self._start_announcing(group, io)
                elif not held and present:
                    self.repairs += 1
                    self._emit(AddressRepaired(str(resource), group_text(group), "removed"))
                    await remove_vip(resource, on_event=self._emit)
            except Exception as exc:
                log.debug("address audit of %s: %s: %s", resource, type(exc).__name__, exc)

    async def _group_worker(self, group: ResourceGroup, io: _GroupIO) -> None:
        while True:
            action = await io.queue.get()
            io.busy = True
            try:
                if isinstance(action, _Audit):
                    if io.queue.empty() and not self._closed:
                        await self._audit(group, io)
                elif isinstance(action, Acquire):
                    ok = await self._acquire(group, io, action.reason)
                    if self.node is not None:
                        self._execute(self.node.acquired(group, ok, time.monotonic()))
                    if ok:
                        self._role_change(group, True)
                else:
                    was_held = group in self.held
                    await self._release(group, io, action.reason)
                    if self.node is not None:
                        self._execute(self.node.released(group, time.monotonic()))
                    if was_held:
                        self._role_change(group, False)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("HA group %s: handling %s failed", group_text(group), type(action).__name__)
            finally:
                io.busy = False

    def _role_change(self, group: ResourceGroup, held: bool) -> None:
        if self._on_role_change is None:
            return
        try:
            self._on_role_change(group, held)
        except Exception:
            log.exception("role change callback failed")

    async def _acquire(self, group: ResourceGroup, io: _GroupIO, reason: str) -> bool:
        self._emit(GroupAcquiring(group_text(group), reason))
        added = []
        try:
            for resource in group.resources:
                await add_vip(resource, on_event=self._emit)
                added.append(resource)
        except Exception as exc:
            self.failures += 1
            self._emit(
                GroupAcquireFailed(group_text(group), str(group.resources[len(added)]), f"{type(exc).__name__}: {exc}")
            )
            for resource in added:
                try:
                    await remove_vip(resource, on_event=self._emit)
                except Exception as exc2:
                    self._emit(AddressRemoved(str(resource), f"{type(exc2).__name__}: {exc2}"))
            return False
        self.held.add(group)
        self._start_announcing(group, io)
        self._emit(GroupAcquired(group_text(group)))
        return True

    def _start_announcing(self, group: ResourceGroup, io: _GroupIO) -> None:
        """Replace ``group``'s announcements: the first round on each address's interface at
        once, before any bookkeeping (the clients' ARP caches decide when traffic comes
        here), then a task for the rest (and the bond slaves' first round)."""
        self._cancel_announcements(io)
        first_sent = set()
        for resource in group.resources:
            try:
                self.announcer.first_round(resource)
                first_sent.add(resource)
            except Exception as exc:
                self._emit(AnnounceFailed(str(resource), f"{type(exc).__name__}: {exc}"))
        for resource in (r for r in group.resources if r in first_sent):  # after every first round is out
            self._emit(AnnouncementSent(str(resource), "first"))
        io.announcing = asyncio.get_running_loop().create_task(
            self._announce(group, first_sent=frozenset(first_sent)), name=f"ha-announce-{group.owner}"
        )

    async def _announce(self, group: ResourceGroup, *, first_sent: frozenset = frozenset()) -> None:
        """Announce every address of ``group`` (in parallel), then refresh while held.

        ``first_sent``: the resources whose first round on their own interface has been
        sent already (`Announcer.first_round`)."""
        cfg = self.config

        async def one(resource: Any, repeats: int, burst: int, first: bool = False) -> None:
            try:
                await self.announcer.announce(
                    resource, repeats=repeats, interval=cfg.announce_interval, burst=burst, first_sent=first
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._emit(AnnounceFailed(str(resource), f"{type(exc).__name__}: {exc}"))
            else:
                self._emit(AnnouncementSent(str(resource), "repeats" if repeats else "refresh"))

        await asyncio.gather(*(one(r, cfg.announce_repeats, 2, r in first_sent) for r in group.resources))
        if cfg.announce_refresh > 0:
            while True:
                await asyncio.sleep(cfg.announce_refresh)
                await asyncio.gather(*(one(r, 0, 1) for r in group.resources))

    @staticmethod
    def _cancel_announcements(io: _GroupIO) -> None:
        if io.announcing is not None and not io.announcing.done():
            io.announcing.cancel()
        io.announcing = None

    async def _release(self, group: ResourceGroup, io: _GroupIO, reason: str) -> None:
        self._cancel_announcements(io)
        held = group in self.held
        self._emit(GroupReleasing(group_text(group), reason, held=held))
        await self._remove_addresses(group)
        self.held.discard(group)
        if held:
            self._emit(GroupReleased(group_text(group)))

    async def _remove_addresses(self, group: ResourceGroup) -> None:
        for resource in group.resources:
            try:
                await remove_vip(resource, on_event=self._emit)
            except Exception as exc:
                self.failures += 1
                self._emit(AddressRemoved(str(resource), f"{type(exc).__name__}: {exc}"))

    # --- status -------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The HA part of the status document (JSON-ready).

        Returns:
            ``{"node", "state", "generation", "resource_state", "holds",
            "stopping", "peers": [{"node", "status", "last_heard_s"}],
            "groups": [{"owner", "resources", "held", "holder", "pending"}],
            "media": [{"medium", "destination", "sent", "send_errors",
            "received", "link"}], "links": {IFNAME: "up"|"down"|"missing"},
            "connectivity" / "peer_connectivity": {"link", "ping_up",
            "ping_total"} or None (the peer's: its last report), "ping_nodes":
            [{"address", "reachable", "sent", "answered"}], "standby":
            heartbeat's standby state (not/me/other/done), "counters": {...},
            "rejected_sources": datagrams dropped before reaching a peer, per
            source address (`HeartbeatNode.rejected_sources`)}``.
            ``state`` is our status on
            the wire (``init``/``up``/``active``, ``stopped`` after a stop,
            ``starting`` before the node runs). A group's ``holder`` is this
            node when it holds the group, else the peer when that is alive
            (as far as this node knows), else None. ``last_heard_s`` is
            seconds since the peer was last heard.
        """
        cfg = self.config
        if self.node is None:
            return {
                "node": cfg.node,
                "state": "starting",
                "peers": [],
                "groups": [
                    {
                        "owner": g.owner,
                        "resources": [str(r) for r in g.resources],
                        "held": False,
                        "holder": None,
                        "pending": [],
                    }
                    for g in cfg.groups
                ],
            }
        snap = self.node.snapshot()
        now = time.monotonic()
        links = (
            {}
            if self.links is None
            else {name: ("up" if up else "down" if up is False else "missing") for name, up in self.links.state.items()}
        )
        media = self.media.stats() if self.media is not None else []
        for entry, medium in zip(media, self.media.sockets if self.media is not None else []):
            entry["link"] = links.get(medium.medium.interface, "unknown")
        alive = [p.name for p in snap.peers if p.status != "dead"]
        peers = [
            {
                "node": p.name,
                "status": p.status,
                "last_heard_s": round(now - p.last_heard, 3) if p.last_heard is not None and p.uuid else None,
            }
            for p in snap.peers
        ]
        groups = []
        for g in snap.groups:
            holder = snap.node if g.held else (alive[0] if alive else None)
            groups.append(
                {
                    "owner": g.group.owner,
                    "resources": [str(r) for r in g.group.resources],
                    "held": g.held,
                    "holder": holder,
                    "pending": list(g.pending),
                }
            )
        return {
            "node": snap.node,
            "state": "stopped" if snap.stopped else snap.status,
            "generation": snap.generation,
            "resource_state": snap.resource_state,
            "holds": snap.holds,
            "stopping": snap.stopping,
            "peers": peers,
            "groups": groups,
            "media": media,
            "links": dict(links),
            "connectivity": _conn_doc(snap.connectivity),
            "peer_connectivity": _conn_doc(snap.peer_connectivity),
            "ping_nodes": self.pinger.stats() if self.pinger is not None else [],
            "standby": snap.standby,
            "counters": dict(self.node.counters, address_repairs=self.repairs),
            "rejected_sources": self.node.rejected_sources(time.monotonic()),
        }


def _conn_doc(conn: Connectivity | None) -> dict[str, Any] | None:
    if conn is None:
        return None
    return {"link": "up" if conn.link_up else "down", "ping_up": conn.ping_up, "ping_total": conn.ping_total}
