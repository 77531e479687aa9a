"""The BGP service of an active-active director: VIPs on ``lo``, BIRD, and the routes it announces.

`BgpService` owns, for the ``bgp:`` section:

* the VIPs as local addresses on `BgpConfig.interface` (``lo``), added at start and removed
  at stop (`ha.vip`: labelled ``lo:dd``, so an address added by hand is never removed).  IPVS
  takes a packet for the VIP on the local-input path; the ARP sysctls that keep the director
  from answering ARP for it are the daemon's business (`director.bgp`);
* the BIRD it runs (`ha.bgp.speaker.BirdSpeaker`), with the configuration rendered from the
  section (`ha.bgp.bird`);
* one kernel route per announced VIP in the table BIRD learns from (`ha.bgp.routes`), set
  as the announcement policy decides (`ha.bgp.policy`) from the health the daemon reports
  (`update`), the operator's drain (`drain`, `undrain`, kept in the state directory across
  restarts) and a graceful stop (`stop`: GRACEFUL_SHUTDOWN, the wait, the withdraw, and only
  then BIRD and the addresses).

At start every route of directord's in the table is removed before BIRD starts, so a
restarted director announces nothing until its services are programmed and its real servers
checked.  A BIRD that dies takes the routes' announcements with it (its routers see the
session close); it is restarted by the speaker, and `status` reports the VIPs as not
announced meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any

from ha.bgp.bird import protocol_name, render_bird_config
from ha.bgp.events import BgpDrainChanged, BgpRouteChanged, BgpSessionChanged, BgpSpeakerChanged
from ha.bgp.model import BgpConfig
from ha.bgp.policy import AnnouncePolicy, Decision, RouteState, ServiceHealth
from ha.bgp.routes import read_routes, set_route
from ha.bgp.speaker import BirdSpeaker, SpeakerEvent
from ha.durable import remove_file, write_file_atomic
from ha.events import emit
from ha.model import Resource
from ha.readfile import ReadFileError, read_regular_file_if_exists
from ha.vip import add_vip, remove_vip

log = logging.getLogger("directord.bgp")

__all__ = ["DRAIN_FILE", "BgpService", "BgpStateError", "read_drained"]

#: The operator's drain, in the state directory: ``{"drained": true}``; absent = not drained.
DRAIN_FILE = "bgp-drain.json"
_MAX_DRAIN_FILE = 4096
#: Seconds between two reads of BIRD's session states (for `status` and the session events).
SESSION_POLL = 1.0
#: Seconds a graceful stop may take past `BgpConfig.graceful_shutdown_wait`.
STOP_MARGIN = 2.0


#: The speaker's event kinds (`ha.bgp.speaker.SpeakerEvent`) as `BgpSpeakerChanged` states.
_SPEAKER_STATES = {
    "started": "running",
    "restarted": "running",
    "reconfigured": "running",
    "exited": "exited",
    "restart_failed": "failed",
    "supervision_failed": "failed",
    "stopped": "stopped",
}


class BgpStateError(Exception):
    """The drain file in the state directory cannot be read or is not what directord writes."""


def read_drained(state_dir: str) -> bool:
    """Whether the operator drained this director (``STATE_DIR/bgp-drain.json``).

    Raises:
        BgpStateError: the file exists but is not a regular file of at most 4 KiB holding
            ``{"drained": true|false}``.
    """
    path = os.path.join(state_dir, DRAIN_FILE)
    try:
        data = read_regular_file_if_exists(path, _MAX_DRAIN_FILE)
    except ReadFileError as exc:
        raise BgpStateError(str(exc)) from exc
    if data is None:
        return False
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise BgpStateError(f"{path}: not JSON: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("drained"), bool):
        raise BgpStateError(f'{path}: expected {{"drained": true|false}}')
    return bool(doc["drained"])


class BgpService:
    """The BGP side of one director, with ``async start()`` / ``stop()``.

    Args:
        config: the ``bgp:`` section.
        source: the configuration file's path (named in BIRD's generated file).
        state_dir: where the drain is kept (`DRAIN_FILE`).
        on_event: where the `ha.bgp.events` go (the daemon's event bus), on the loop's thread.
        command_prefix: words run before BIRD's command line (``ip netns exec NS`` in tests).
        spawn_guard: held while BIRD is started (`ha.bgp.speaker.BirdSpeaker`'s ``spawn_guard``).
        clock: the monotonic clock, seconds.
    """

    def __init__(
        self,
        config: BgpConfig,
        *,
        source: str,
        state_dir: str,
        on_event: Callable[[Any], None] | None = None,
        command_prefix: tuple[str, ...] = (),
        spawn_guard: Callable[[], contextlib.AbstractContextManager[object]] = contextlib.nullcontext,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._source = source
        self._state_dir = state_dir
        self._on_event = on_event
        self._clock = clock
        self.policy = AnnouncePolicy(config)
        self._command_prefix = command_prefix
        self._spawn_guard = spawn_guard
        #: the BIRD this service runs (made by `start`, with the rendered configuration)
        self.speaker: BirdSpeaker | None = None
        self._health: dict[str, tuple[ServiceHealth, ...]] = {}
        self.drained = False
        self._stopping = False
        #: the route each VIP has in the kernel table, as last set (or read at start)
        self.routes: dict[str, RouteState] = {}
        #: the policy's last decision per VIP
        self.decisions: dict[str, Decision] = {}
        self._sessions: dict[str, tuple[str, str]] = {}
        self._lock = asyncio.Lock()
        self._wake: asyncio.TimerHandle | None = None
        self._pending: asyncio.Task[None] | None = None
        self._again = False  # a pass was asked for while one ran
        self._stopped = False  # past the graceful part of `stop`: no more passes
        self._poller: asyncio.Task[None] | None = None
        self._oif = 0
        self.errors = 0

    def _resources(self) -> list[Resource]:
        return [Resource(v.address, 32 if v.version == 4 else 128, self.config.interface) for v in self.config.vips]

    async def start(self) -> None:
        """Read the drain, add the VIPs on the interface, clear directord's routes from the
        table, then start BIRD.  Nothing is announced until `update` reports healthy services.

        Raises:
            BgpStateError: the drain file is unreadable (fix or remove it).
            ha.bgp.speaker.SpeakerError: BIRD refused its configuration or did not start.
            OSError: the interface does not exist, or the kernel refused an address or route.
        """
        self.drained = await asyncio.to_thread(read_drained, self._state_dir)
        self._oif = socket.if_nametoindex(self.config.interface)
        for resource in self._resources():
            await add_vip(resource, on_event=self._on_event)
        table = self.config.kernel_table
        for address in await read_routes(table):
            await set_route(address, "withdrawn", table=table, oif=self._oif)
        self.routes = {v.address: "withdrawn" for v in self.config.vips}
        self.speaker = BirdSpeaker(
            self.config.speaker.run_dir,
            render_bird_config(self.config, source=self._source),
            binary=self.config.speaker.binary,
            command_prefix=self._command_prefix,
            on_event=self._speaker_event,
            spawn_guard=self._spawn_guard,
        )
        await self.speaker.start()
        self._poller = asyncio.get_running_loop().create_task(self._poll_sessions(), name="bgp sessions")
        if self.drained:
            log.warning("this director is drained (%s): no VIP is announced until `directord bgp undrain`", DRAIN_FILE)

    def _speaker_event(self, event: SpeakerEvent) -> None:
        """The speaker's report, as a `BgpSpeakerChanged` (``running``, ``exited``, ``failed``,
        ``stopped``); a BIRD that exited carried the announcements with it."""
        state = _SPEAKER_STATES.get(event.kind, event.kind)
        emit(self._on_event, BgpSpeakerChanged(state, event.detail))

    def child_pids(self) -> set[int]:
        """The processes this service started that are this process's children (BIRD)."""
        pid = self.speaker.child_pid if self.speaker is not None else None
        return set() if pid is None else {pid}

    @property
    def running(self) -> bool:
        """True while the BIRD of this service runs."""
        return self.speaker is not None and self.speaker.running

    def update(self, health: Mapping[str, tuple[ServiceHealth, ...]]) -> None:
        """The daemon's view of each VIP's virtual services changed (VIP address -> services):
        decide and set the routes soon (coalesced: one pass for many calls)."""
        self._health = dict(health)
        self._schedule()

    def _schedule(self) -> None:
        """Run `_apply` soon; when a pass is under way, once more after it (so that what
        changed while it waited on the kernel is not left for the next change)."""
        if self._stopped:
            return
        if self._pending is None or self._pending.done():
            self._pending = asyncio.get_running_loop().create_task(self._passes(), name="bgp routes")
        else:
            self._again = True

    async def _passes(self) -> None:
        while True:
            self._again = False
            await self._apply()
            if not self._again:
                return

    async def _apply(self) -> None:
        """One pass of the policy, and the routes that changed set in the kernel table."""
        async with self._lock:
            decisions, wake = self.policy.step(
                self._clock(), self._health, drained=self.drained, stopping=self._stopping
            )
            for address, decision in decisions.items():
                self.decisions[address] = decision
                if self.routes.get(address) == decision.route:
                    continue
                try:
                    await set_route(address, decision.route, table=self.config.kernel_table, oif=self._oif)
                except Exception as exc:  # a kernel refusal: logged, retried at the next pass
                    self.errors += 1
                    log.error("cannot set the route of VIP %s to %s: %s", address, decision.route, exc)
                    self.routes.pop(address, None)
                    continue
                self.routes[address] = decision.route
                emit(self._on_event, BgpRouteChanged(address, decision.route, decision.reason))
            if self._wake is not None:
                self._wake.cancel()
                self._wake = None
            if wake is not None:
                loop = asyncio.get_running_loop()
                self._wake = loop.call_later(max(0.0, wake - self._clock()), self._schedule)

    async def _persist_drain(self, drained: bool) -> None:
        path = os.path.join(self._state_dir, DRAIN_FILE)
        if drained:
            data = json.dumps({"drained": True}).encode() + b"\n"
            await asyncio.to_thread(write_file_atomic, path, data, 0o600)
        else:
            await asyncio.to_thread(remove_file, path)

    async def drain(self) -> None:
        """Drain this director: GRACEFUL_SHUTDOWN on its announced VIPs, then withdraw them
        after `BgpConfig.graceful_shutdown_wait`.  Kept across restarts.

        Raises:
            OSError: the drain cannot be written to the state directory (nothing changed).
        """
        await self._persist_drain(True)
        if not self.drained:
            self.drained = True
            emit(self._on_event, BgpDrainChanged(True))
        self._schedule()

    async def undrain(self) -> None:
        """Announce again the VIPs whose services are healthy.

        Raises:
            OSError: the drain file cannot be removed (nothing changed).
        """
        await self._persist_drain(False)
        if self.drained:
            self.drained = False
            emit(self._on_event, BgpDrainChanged(False))
        self._schedule()

    async def stop(self) -> None:
        """Stop gracefully: GRACEFUL_SHUTDOWN on the announced VIPs for the configured wait,
        withdraw them, then stop BIRD and remove the VIPs from the interface.  Never raises."""
        self._stopping = True
        deadline = self._clock() + self.config.graceful_shutdown_wait + STOP_MARGIN
        try:
            if self.running:
                await self._apply()
                while any(r == "graceful_shutdown" for r in self.routes.values()) and self._clock() < deadline:
                    await asyncio.sleep(min(0.1, max(0.0, deadline - self._clock())))
                    await self._apply()
        except Exception:
            log.exception("graceful shutdown of the BGP announcements failed; withdrawing")
        self._stopped = True
        if self._wake is not None:
            self._wake.cancel()
        for task in (self._pending, self._poller):
            if task is not None:
                task.cancel()
        for address in list(self.routes):
            try:
                await set_route(address, "withdrawn", table=self.config.kernel_table, oif=self._oif)
                if self.routes.get(address) != "withdrawn":
                    emit(self._on_event, BgpRouteChanged(address, "withdrawn", "director stopping"))
                self.routes[address] = "withdrawn"
            except Exception as exc:
                log.error("cannot withdraw the route of VIP %s: %s", address, exc)
        if self.speaker is not None:
            await self.speaker.stop()
        for resource in self._resources():
            try:
                await remove_vip(resource, on_event=self._on_event)
            except Exception as exc:
                log.error("cannot remove %s: %s", resource, exc)

    async def _poll_sessions(self) -> None:
        """Read BIRD's session states every `SESSION_POLL` seconds; publish changes."""
        names = {protocol_name(n): n.name for n in self.config.neighbors}
        while True:
            try:
                states = await self.speaker.sessions() if self.speaker is not None else []
            except Exception as exc:  # the speaker reports; this loop must go on
                log.debug("cannot read BIRD's sessions: %s", exc)
                states = []
            seen: dict[str, tuple[str, str]] = {}
            for proto in states:
                name = names.get(proto.name)
                if name is not None:
                    seen[name] = (_session_state(proto), proto.info if _session_state(proto) != proto.info else "")
            for name in names.values():
                now = seen.get(name, ("Down", "" if self.running else "BGP speaker not running"))
                if self._sessions.get(name) != now:
                    self._sessions[name] = now
                    emit(self._on_event, BgpSessionChanged(name, now[0], now[1]))
            await asyncio.sleep(SESSION_POLL)

    def status(self) -> dict[str, Any]:
        """The BGP part of ``directord status``: the speaker, each session, each VIP."""
        running = self.running
        vips = []
        for v in self.config.vips:
            route = self.routes.get(v.address, "withdrawn")
            decision = self.decisions.get(v.address)
            vips.append(
                {
                    "vip": v.address,
                    "route": route,
                    "announced": running and route != "withdrawn",
                    "reason": decision.reason if decision else "not decided yet",
                    "min_healthy": v.min_healthy.text(),
                }
            )
        return {
            "speaker": "running" if running else "not running",
            "drained": self.drained,
            "stopping": self._stopping,
            "sessions": [
                {"neighbor": n.name, "address": n.address, "as": n.remote_as, "state": s[0], "info": s[1]}
                for n in self.config.neighbors
                for s in [self._sessions.get(n.name, ("unknown", ""))]
            ],
            "vips": vips,
            "errors": self.errors,
        }


def _session_state(proto: Any) -> str:
    """A BGP protocol's session state from BIRD's ``show protocols`` row: its ``info`` column
    (``Established``, ``Active``, ``Connect`` ...) when the protocol is up or starting, else
    its state (``down``)."""
    info = (proto.info or "").split()
    return info[0] if info else proto.state
