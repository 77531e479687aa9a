"""The reconciler: owns the kernel IPVS table for the configured virtual services.

It keeps a cached copy of the kernel table, refreshed by a full dump at start
and every ``reconcile_interval`` seconds (drift repair), and updated in place
after each successful command.  Three things make it act:

* a health transition (`on_health`): only the service concerned is planned
  against the cache, which for a weight change gives one netlink command and
  no dump;
* a new configuration (`set_config`, on reload): everything is planned;
  real servers removed from the configuration are drained (weight 0) and
  deleted when their ActiveConn reaches 0 or after ``drain_timeout`` seconds
  (UDP destinations always wait the timeout: the kernel's counters do not
  say when a datagram flow ends); services removed from the configuration
  are deleted;
* the periodic pass: a fresh dump and a full plan.

A full pass also tells drift repairs from requested changes: an operation that only undoes a
change made outside directord (an operator's ``ipvsadm -d``, another tool editing a managed
service) is one whose target the cached table, as directord last knew it before this pass's
dump, already held in the state the operation puts it in (`is_drift_repair`). Those done on a
service are published after its `IPVSApplied` events as one `IPVSDriftRepaired` (``ipvs.drift``,
a WARNING line) per service and pass, counted by the metrics. Nothing is counted at the first
full pass, nor at the first one after the table could not be read: directord knew no table
then, so a change made while it did not look (or was not running) is applied, not counted.

Each full pass also keeps the kernel's IPVS sync daemons as ``global.sync_daemon``
says (`director.ipvs.sync.plan_sync`): master and backup on its interface, started
again if someone stopped them; when a reload removes the setting, the daemons
are stopped once and then left alone.

Kernel errors are logged with the service and real server concerned and
retried on the next pass; they never stop the loop.  A kernel table that cannot
be read (ip_vs not loaded, a refused dump), a sync daemon the kernel refuses and
a command the kernel refuses pass after pass (a scheduler whose module is missing)
are conditions, not events: each is logged when it starts, when it changes and
when it ends, not again at every pass while it lasts (`_Conditions`; `directord
status` shows the current kernel error).  A refused command is still an
``ipvs.failed`` event each time (the machine record: counted and streamed), its
repeats marked ``repeated`` and logged at DEBUG.  ip_vs missing is an error only
while the configuration needs it (virtual services or a sync daemon): a director
with neither (HA only) logs it once, at INFO.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import Counter
from collections.abc import Callable, Collection, Hashable, Iterator, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar, get_args

from ha.events import emit

from .events import DRIFT_OPERATIONS_SHOWN, IPVSApplied, IPVSDriftRepaired, IPVSFailed
from .ipvs import IPVSError, IPVSUnavailable, KernelIPVS, SyncDaemon, plan_sync, sync_daemons_for
from .model import Config, DesiredService, DestKey, KernelService, ServiceKey, VirtualService
from .planner import (
    PLAN_BUDGET,
    AdminState,
    HealthState,
    Op,
    OpKind,
    desired_service,
    desired_service_steps,
    normalize_service_attrs,
    plan_chunks,
    plan_service,
    plan_service_parts,
    record_op,
)
from .status import printable

log = logging.getLogger("directord.reconciler")

#: Seconds between two looks at the connection counters of draining destinations.
DRAIN_POLL_INTERVAL = 1.0
#: Real servers compared between two yields to the event loop when a configuration is adopted.
ADOPT_CHUNK = 2000

_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")
#: What a refused command is about: (operation kind, service, destination or None).
_Target = tuple[OpKind, ServiceKey, DestKey | None]
#: The events the reconciler publishes.
ReconcilerEvent = IPVSApplied | IPVSFailed | IPVSDriftRepaired
#: The operation kinds in the planner's order (how an `IPVSDriftRepaired` lists its counts).
_KINDS: tuple[OpKind, ...] = get_args(OpKind)


class _Conditions(Generic[_K, _V]):
    """Lasting kernel conditions by key, each with the value it was last logged with (its error
    text; never None): a condition is logged when it starts, when its value changes and when it
    ends, not again at every pass while it lasts. This says which line is due; the caller
    writes it, in the words of its own condition."""

    def __init__(self) -> None:
        #: the conditions that hold, as last logged
        self.now: dict[_K, _V] = {}

    def holds(self, key: _K, value: _V) -> bool:
        """Condition ``key`` holds, with ``value``: True when that is news to log (it did not
        hold, or held with another value), False when it was logged so already."""
        news = key not in self.now or self.now[key] != value
        self.now[key] = value
        return news

    def ends(self, key: _K) -> _V | None:
        """Condition ``key`` does not hold: the value it held until now (its end is to be
        logged), or None when it did not hold."""
        return self.now.pop(key, None)

    def only(self, keys: Collection[_K]) -> dict[_K, _V]:
        """Only the conditions in ``keys`` may still hold: the others end; returns them with the
        values they held (their ends are to be logged)."""
        ended = {key: value for key, value in self.now.items() if key not in keys}
        for key in ended:
            del self.now[key]
        return ended


class _Pacer:
    """Yields to the event loop once every `PLAN_BUDGET` units of planning work (real servers)."""

    def __init__(self) -> None:
        self.work = 0

    async def spent(self, units: int) -> None:
        self.work += units
        if self.work >= PLAN_BUDGET:
            self.work = 0
            await asyncio.sleep(0)


@dataclass
class Drain:
    """A real server removed from the configuration, held at weight 0 until drained."""

    deadline: float  # monotonic seconds
    udp: bool


class Reconciler:
    """Keeps the kernel's IPVS table equal to the configuration and health state.

    Args:
        kernel: an opened or unopened `KernelIPVS` (opened on `start`).
        health: callable returning the current health state of (service key,
            destination key); ``unknown`` when there is no check result yet.
        clock: monotonic clock in seconds (injectable for tests).
        on_event: where each IPVS operation goes as an event (`director.events.IPVSApplied`,
            `IPVSFailed`; a full pass's drift repairs as `IPVSDriftRepaired`, one per service):
            the daemon's `EventBus.publish`, which logs it; without one, each is logged.
        admin: callable returning, for a configured virtual service, the operator's state of
            its real servers that are not ``enabled`` (`director.planner.AdminState`, by
            destination key); after a change, call `on_health` for that real server.
        weights: callable returning, for a configured virtual service's key, the weights of its
            up real servers that are not their configured ones (by destination key: an agent's
            share, a slow start's step); after a change, call `on_health` for that real server.
    """

    def __init__(
        self,
        kernel: KernelIPVS,
        health: Callable[[ServiceKey, DestKey], HealthState],
        *,
        clock: Callable[[], float] = time.monotonic,
        on_event: Callable[[ReconcilerEvent], object] | None = None,
        admin: Callable[[VirtualService], Mapping[DestKey, AdminState]] | None = None,
        weights: Callable[[ServiceKey], Mapping[DestKey, int]] | None = None,
    ) -> None:
        self.kernel = kernel
        self._on_event = on_event
        self._health = health
        self._admin = admin
        self._weights = weights
        self._clock = clock
        self.config: Config | None = None
        self._services: dict[ServiceKey, VirtualService] = {}
        self.table: dict[ServiceKey, KernelService] = {}
        self._table_valid = False
        self._retired: set[ServiceKey] = set()
        self._draining: dict[ServiceKey, dict[DestKey, Drain]] = {}
        self._dirty: set[ServiceKey] = set()
        self._full_pass = asyncio.Event()
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task | None = None
        self.ops_applied = 0
        self.errors = 0
        self.last_dump: float | None = None
        #: sync daemons seen at the last full pass (None: not read, or not managed)
        self.sync_daemons: list[SyncDaemon] | None = None
        self._sync_managed = False
        #: the kernel table's condition (key ``"dump"``) as last logged: (error text, whether the
        #: configuration needs IPVS); none while the table can be read
        self._table_trouble: _Conditions[str, tuple[str, bool]] = _Conditions()
        #: the sync daemon errors of the last full pass (by their text)
        self._sync_trouble: _Conditions[str, str] = _Conditions()
        #: the commands the kernel refused the last time they were sent, with its error text
        self._refused: _Conditions[_Target, str] = _Conditions()
        self._first_pass = asyncio.Event()  # set once the first full pass ran (see first_pass)

    # --- inputs ---------------------------------------------------------------

    def set_config(self, config: Config) -> None:
        """Adopt a (validated) configuration; the next pass applies it.

        Real servers that the previous configuration had and this one drops
        start draining; services it drops are retired (deleted).  Runs at once,
        in one go: the daemon uses `adopt_config`, which yields to the loop.
        """
        for _ in self._config_steps(config):
            pass

    async def adopt_config(self, config: Config) -> None:
        """`set_config` in parts of `ADOPT_CHUNK` real servers, yielding to the event loop between them.

        Comparing a configuration of 100,000 real servers with the previous one
        takes longer than the HA deadtime; the heartbeat runs on the same loop.
        The reconciler's lock is held meanwhile, so no pass sees a half-adopted
        configuration; the new one is committed at once at the end.
        """
        async with self._lock:
            for _ in self._config_steps(config):
                await asyncio.sleep(0)

    def _config_steps(self, config: Config) -> Iterator[None]:
        """Work out drains and retired services for ``config``, yielding every `ADOPT_CHUNK`
        real servers; the reconciler's state changes only after the last step."""
        now = self._clock()
        old = self._services
        work = 0
        new: dict[ServiceKey, VirtualService] = {}
        for svc in config.services:
            new[svc.key] = svc
            work += 1
            if work >= ADOPT_CHUNK:
                work = 0
                yield
        draining = {key: dict(drains) for key, drains in self._draining.items()}
        retired = set(self._retired)
        started: list[tuple[DestKey, str]] = []
        for key, svc in old.items():
            if key not in new:
                retired.add(key)
                draining.pop(key, None)
                continue
            kept = {rs.key for rs in new[key].real_servers}
            if new[key].fallback is not None:
                kept.add(new[key].fallback.key)
            for rs in svc.real_servers:
                dkey = rs.key
                if dkey not in kept:
                    draining.setdefault(key, {})[dkey] = Drain(
                        deadline=now + config.settings.drain_timeout,
                        udp=key.protocol == socket.IPPROTO_UDP,
                    )
                    started.append((dkey, svc.name))
            work += len(kept) + len(svc.real_servers) + 1
            if work >= ADOPT_CHUNK:
                work = 0
                yield
        for key, drains in list(draining.items()):
            svc = new[key]
            configured = {rs.key for rs in svc.real_servers} | ({svc.fallback.key} if svc.fallback else set())
            for dkey in [d for d in drains if d in configured]:
                del drains[dkey]  # configured again: no longer draining
            if not drains:
                del draining[key]
            work += len(configured) + 1
            if work >= ADOPT_CHUNK:
                work = 0
                yield
        retired -= new.keys()
        # commit: nothing below yields
        self._draining = draining
        self._retired = retired
        self.config = config
        self._services = new
        self._full_pass.set()
        self._wake.set()
        for dkey, name in started:
            log.info("rs %s of %s removed from configuration: draining", dkey, printable(name))

    def on_health(self, service: ServiceKey, dest: DestKey) -> None:
        """A real server of ``service`` changed state: plan that service at once."""
        if service in self._services:
            self._dirty.add(service)
            self._wake.set()

    # --- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        """Start the reconcile loop (the first pass runs at once)."""
        self._full_pass.set()
        self._task = asyncio.create_task(self._run(), name="reconciler")

    async def first_pass(self) -> None:
        """Return once the loop's first full pass ran (applied, or failed and logged: a
        kernel without ip_vs is retried later, not waited for), or once the loop has ended
        (stopped, or died of a bug: the caller must not wait forever)."""
        if self._task is None:
            return
        waiter = asyncio.ensure_future(self._first_pass.wait())
        try:
            await asyncio.wait({waiter, self._task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()

    async def stop(self) -> None:
        """Stop the loop; the kernel table is left as it is."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        next_full = 0.0
        while True:
            interval = self.config.settings.reconcile_interval if self.config else 10.0
            now = self._clock()
            if now >= next_full:
                self._full_pass.set()
            if self._full_pass.is_set():
                self._full_pass.clear()
                next_full = now + interval
                await self.full_pass()
                self._first_pass.set()
            if self._dirty:
                await self.service_pass()
            if self._draining:
                await self.drain_pass()
            wait = max(0.0, next_full - self._clock())
            if self._draining:
                wait = min(wait, DRAIN_POLL_INTERVAL)
            self._wake.clear()
            if self._dirty or self._full_pass.is_set():
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=wait)
            except TimeoutError:
                pass

    # --- passes ---------------------------------------------------------------

    async def full_pass(self) -> list[Op]:
        """Dump the kernel table, plan every managed service and apply the plan; the operations
        that repair drift (`is_drift_repair` against the cached table before the dump, when it
        was valid) are published per service as `IPVSDriftRepaired` too."""
        async with self._lock:
            # the table as directord last knew it: the previous dump and its own commands since;
            # the dump below takes its place, and nothing changes this dict from then on
            known = self.table if self._table_valid else None
            try:
                await self.kernel.open()
                self.table = await self.kernel.dump()
            except IPVSError as exc:
                self._table_valid = False
                self._table_unreadable(exc)
                return []
            trouble = self._table_trouble.ends("dump")
            if trouble is not None:
                log.info("the IPVS table can be read again (it could not: %s)", trouble[0])
            self._table_valid = True
            self.last_dump = self._clock()
            self._dirty.clear()
            # in parts, yielding between them: on a slow machine a table of thousands of
            # real servers takes long enough to delay the heartbeat on this loop
            desired = {}
            pacer = _Pacer()
            for key, svc in list(self._services.items()):
                desired[key] = await self._desired_paced(svc, pacer)
            ops: list[Op] = []
            for part in plan_chunks(desired, self.table, self._retired):
                ops.extend(part)
                await asyncio.sleep(0)
            refused = await self._apply(ops, known)
            # a command refused before and not planned now (the configuration or the table
            # changed) is no longer refused: that condition ends too
            for (kind, key, dest), error in self._refused.only(refused).items():
                op = Op(kind, key, dest=dest)
                log.info(
                    "ipvs %s (service %s) is no longer sent (it was refused: %s)", op, self.service_name(key), error
                )
            self._retired = {k for k in self._retired if k in self.table}
            await self.sync_pass()
            return ops

    def _table_unreadable(self, exc: IPVSError) -> None:
        """Log that the kernel table cannot be read (``exc``), once per condition.

        An error when the configuration needs IPVS (virtual services or a sync daemon), INFO
        when it needs none (a director for HA only: ip_vs missing changes nothing); logged
        again only when the error or that need changes, at DEBUG on the passes between.
        """
        text = str(exc) if isinstance(exc, IPVSUnavailable) else f"cannot read the IPVS table: {exc}"
        needed = bool(self._services) or (self.config is not None and self.config.settings.sync_daemon is not None)
        if not self._table_trouble.holds("dump", (text, needed)):
            log.debug("%s; still retrying", text)
            return
        if needed:
            log.error(
                "%s; retrying every %.0f s (logged again when this changes or is repaired)", text, self._interval()
            )
        else:
            log.info("%s; nothing to program (no virtual service, no sync daemon configured)", text)

    async def sync_pass(self) -> None:
        """Start or stop the kernel's sync daemons as the configuration says; errors are
        logged and retried on the next full pass."""
        sync = self.config.settings.sync_daemon if self.config else None
        if sync is None and not self._sync_managed:
            self.sync_daemons = None
            self._sync_trouble.only(())  # nothing is asked of the kernel any more
            return
        desired = list(sync_daemons_for(sync.interface, sync.syncid)) if sync is not None else []
        troubles: list[str] = []
        try:
            running = await self.kernel.sync_daemons()
            ops = plan_sync(desired, running)
            results = await self.kernel.apply_sync(ops) if ops else []
        except IPVSError as exc:
            self.errors += 1
            self._sync_troubles([f"cannot manage the IPVS sync daemons: {exc}"])
            return
        now = {d.state: d for d in running}
        for op, error in results:
            if error is not None:
                self.errors += 1
                troubles.append(f"IPVS: cannot {error}")
                continue
            log.info("IPVS: %s", op)
            if op.kind == "start":
                now[op.daemon.state] = op.daemon
            else:
                del now[op.daemon.state]  # plan_sync stops only daemons that run
        if all(error is None for _, error in results):
            self._sync_managed = sync is not None
        self.sync_daemons = sorted(now.values())
        self._sync_troubles(troubles)

    def _sync_troubles(self, troubles: list[str]) -> None:
        """Log this pass's sync daemon errors: an error the previous pass did not have at ERROR,
        one it had at DEBUG (retried each full pass, not logged each time), and their end at INFO."""
        for text in troubles:
            if self._sync_trouble.holds(text, text):
                log.error("%s; retrying every %.0f s (logged again when this changes)", text, self._interval())
            else:
                log.debug("%s; still retrying", text)
        if self._sync_trouble.only(troubles) and not troubles:
            log.info("IPVS sync daemons: as configured again")

    async def service_pass(self) -> list[Op]:
        """Plan and apply only the services marked by health transitions (no dump)."""
        async with self._lock:
            dirty, self._dirty = self._dirty, set()
            if not self._table_valid:
                return []  # the next full pass plans every service anyway
            ops: list[Op] = []
            pacer = _Pacer()
            for key in sorted(dirty):
                svc = self._services.get(key)
                if svc is not None:
                    ops.extend(await self._plan_paced(svc, pacer))
            await self._apply(ops)
            return ops

    async def drain_pass(self) -> None:
        """Finish drains whose ActiveConn reached 0 or whose deadline passed."""
        async with self._lock:
            if not self._table_valid:
                return
            now = self._clock()
            finished: list[ServiceKey] = []
            for key, drains in list(self._draining.items()):
                try:
                    counters = await self.kernel.dump_dests(key)
                except IPVSError as exc:
                    log.warning("cannot read counters of %s: %s", self.service_name(key), exc)
                    continue
                done = False
                for dkey, drain in list(drains.items()):
                    dest = counters.get(dkey)
                    if dest is None:
                        reason = "gone from the kernel"
                    elif now >= drain.deadline:
                        reason = f"drain timeout, {dest.active_conns} active connections cut"
                    elif not drain.udp and dest.active_conns == 0:
                        reason = "no active connection left"
                    else:
                        continue
                    del drains[dkey]
                    done = True
                    log.info("rs %s of %s drained (%s): deleting", dkey, self.service_name(key), reason)
                if not drains:
                    del self._draining[key]
                if done:
                    finished.append(key)
            ops: list[Op] = []
            pacer = _Pacer()
            for key in finished:
                svc = self._services.get(key)
                if svc is not None:
                    ops.extend(await self._plan_paced(svc, pacer))
            await self._apply(ops)

    async def read_table(self, *, stats: bool = False) -> dict[ServiceKey, KernelService]:
        """A fresh dump for status readers, serialised with the reconciler's own commands;
        with ``stats``, with the kernel's traffic counters (`KernelIPVS.dump`).

        Raises:
            IPVSError: the kernel table cannot be read.
        """
        async with self._lock:
            await self.kernel.open()
            return await (self.kernel.dump(stats=True) if stats else self.kernel.dump())

    # --- helpers --------------------------------------------------------------

    def _interval(self) -> float:
        return self.config.settings.reconcile_interval if self.config else 10.0

    def programmed(self, key: ServiceKey) -> bool:
        """True when the virtual service ``key`` is in the kernel's IPVS table as directord last
        read or changed it (False while the table cannot be read)."""
        return self._table_valid and key in self.table

    def service_name(self, key: ServiceKey) -> str:
        """The configured name of the service ``key`` (printable), or the key as text when unknown."""
        svc = self._services.get(key)
        return printable(svc.name) if svc is not None else str(key)

    def _admin_of(self, svc: VirtualService) -> Mapping[DestKey, AdminState]:
        """The real servers of ``svc`` an operator drained or disabled."""
        return {} if self._admin is None else self._admin(svc)

    def _desired(self, svc: VirtualService) -> DesiredService:
        health = {rs.key: self._health(svc.key, rs.key) for rs in svc.real_servers}
        return desired_service(
            svc,
            health,
            self.table.get(svc.key),
            self._draining.get(svc.key, {}).keys(),
            self._admin_of(svc),
            self._weights_of(svc.key),
        )

    def _weights_of(self, key: ServiceKey) -> Mapping[DestKey, int] | None:
        """The weights of ``key``'s up real servers that differ from their configured ones."""
        return None if self._weights is None else self._weights(key)

    async def _desired_paced(self, svc: VirtualService, pacer: _Pacer) -> DesiredService:
        """`_desired`, yielding to the event loop every `PLAN_BUDGET` real servers (``pacer``
        counts across services; one service of 100,000 alone takes about a second here)."""
        if len(svc.real_servers) <= PLAN_BUDGET:
            desired = self._desired(svc)
            await pacer.spent(len(svc.real_servers) + 1)
            return desired
        health: dict[DestKey, HealthState] = {}
        for count, rs in enumerate(svc.real_servers, 1):
            health[rs.key] = self._health(svc.key, rs.key)
            if count % PLAN_BUDGET == 0:
                await asyncio.sleep(0)
        draining = tuple(self._draining.get(svc.key, {}))
        steps = desired_service_steps(
            svc,
            health,
            self.table.get(svc.key),
            draining,
            PLAN_BUDGET,
            admin=self._admin_of(svc),
            weights=self._weights_of(svc.key),
        )
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value
            await asyncio.sleep(0)

    async def _plan_paced(self, svc: VirtualService, pacer: _Pacer) -> list[Op]:
        """`plan_service` of ``svc`` against the cached table, yielding to the event loop every
        `PLAN_BUDGET` real servers (``pacer`` counts across services)."""
        desired = await self._desired_paced(svc, pacer)
        observed = self.table.get(svc.key)
        cost = len(desired.dests) + (len(observed.dests) if observed is not None else 0)
        if cost <= PLAN_BUDGET:
            await pacer.spent(cost)
            return plan_service(svc.key, desired, observed)
        ops: list[Op] = []
        for part in plan_service_parts(svc.key, desired, observed, PLAN_BUDGET):
            ops.extend(part)
            await asyncio.sleep(0)
        return ops

    async def _apply(self, ops: list[Op], known: Mapping[ServiceKey, KernelService] | None = None) -> set[_Target]:
        """Send ``ops``; each done is recorded in the cached table and published (`IPVSApplied`),
        each refused is counted in `errors` and published (`IPVSFailed`, ``repeated`` when the
        kernel refused it so the last time: logged at DEBUG). A refused command accepted now is
        logged once. With ``known`` (a full pass: the table as directord knew it before its
        dump), those done that repair drift (`is_drift_repair`) are published once more per
        service, after the others, as `IPVSDriftRepaired`. Returns the refused ones' targets
        (kind, service, destination)."""
        refused: set[_Target] = set()
        if not ops:
            return refused
        result = await self.kernel.apply_all(ops)
        repaired: dict[ServiceKey, list[Op]] = {}
        for op in result.done:
            record_op(self.table, op)
            name = self.service_name(op.service)
            self._emit(_applied(op, name))
            error = self._refused.ends((op.kind, op.service, op.dest))
            if error is not None:
                log.info("ipvs %s (service %s) accepted (it was refused: %s)", op, name, error)
            if known is not None and is_drift_repair(op, known):
                repaired.setdefault(op.service, []).append(op)
        self.ops_applied += len(result.done)
        for op, exc in result.failed:
            self.errors += 1
            target = (op.kind, op.service, op.dest)
            refused.add(target)
            news = self._refused.holds(target, str(exc))
            self._emit(IPVSFailed(op.kind, self.service_name(op.service), str(exc), repeated=not news))
        for key, done in repaired.items():
            self._emit(_drift_repaired(key, self.service_name(key), done))
        return refused

    def _emit(self, event: ReconcilerEvent) -> None:
        """Hand ``event`` to the sink (`ha.events.emit`: logged when there is none)."""
        emit(self._on_event, event)

    def draining(self) -> dict[ServiceKey, set[DestKey]]:
        """Destinations currently draining, per service."""
        return {k: set(v) for k, v in self._draining.items()}


def _applied(op: Op, name: str) -> IPVSApplied:
    """The event of ``op`` done on the service named ``name``."""
    dest, service = op.dest_attrs, op.service_attrs
    return IPVSApplied(
        op.kind,
        name,
        str(op.service),
        real_server=None if op.dest is None else str(op.dest),
        weight=None if dest is None else dest.weight,
        forwarding=None if dest is None else str(dest.fwd_method),
        scheduler=None if dest is not None or service is None else service.scheduler,
    )


def is_drift_repair(op: Op, known: Mapping[ServiceKey, KernelService]) -> bool:
    """Whether ``op`` only undoes a change made outside directord: ``known`` (the kernel table as
    directord last knew it: its last dump and the commands it sent since) already holds the
    operation's target as the operation leaves it, so no change that directord asked for (a
    reload, a health transition, an operator's ``directord rs``) needs it: only the kernel
    changing behind directord's back does. Pure; O(1).

    * ``add_service``, ``set_service``: ``known`` has the service, with these attributes
      (`normalize_service_attrs`: the kernel's own flag bits aside);
    * ``del_service``: ``known`` lacks the service;
    * ``add_dest``, ``set_dest``: ``known`` has the destination in the service, with these
      attributes (connection counters aside);
    * ``del_dest``: ``known`` lacks the destination (or its whole service).

    An operation directord wants (a weight changed, a real server added) differs from ``known``
    and is not a repair, even when someone also changed the same entry meanwhile.
    """
    service = known.get(op.service)
    if op.kind == "del_service":
        return service is None
    if op.kind in ("add_service", "set_service"):
        return service is not None and normalize_service_attrs(service.attrs) == op.service_attrs
    dest = service.dests.get(op.dest) if service is not None and op.dest is not None else None
    if op.kind == "del_dest":
        return dest is None
    return dest is not None and dest.attrs == op.dest_attrs


def _drift_repaired(key: ServiceKey, name: str, done: list[Op]) -> IPVSDriftRepaired:
    """The event of the drift repairs ``done`` (non-empty) on the service ``key`` named ``name``."""
    counts = Counter(op.kind for op in done)
    shown = tuple(op.kind if op.dest is None else f"{op.kind} {op.dest}" for op in done[:DRIFT_OPERATIONS_SHOWN])
    return IPVSDriftRepaired(
        name, str(key), tuple((kind, counts[kind]) for kind in _KINDS if counts[kind]), operations=shown
    )
