"""`directord run`: the supervisor that owns every running component.

Components (each with start/stop, all owned here): the health checks, run by
the check engine in a checker child process (`checks.process.CheckerProcess`,
so thousands of checks a second never delay the heartbeat), the reconciler
(`director.reconciler`) and the control socket (`director.control`), and
with an ``ha:`` section the heartbeat HA service (`ha.service.HAService`,
started after the control socket, stopped first so the VIP is released
gracefully and the peer takes over at once).  Signals: SIGTERM/SIGINT stop cleanly (the IPVS table is left
in place, so a restart changes nothing), SIGHUP reloads the configuration
(validated first; an invalid file is logged and the running configuration
stays).  Changes to the ``ha:`` section need a restart: a reload logs them and
keeps the running HA service.  ``directord reload`` asks for a reload over the
control socket and gets its outcome (`Daemon.reload_report`); loads never overlap,
however many SIGHUPs and requests arrive at once.

A reload reads, parses and validates the file in a worker thread
(`load_prepared`), never on the event loop that sends the heartbeats: a file
of thousands of real servers takes seconds to validate, longer than the
deadtime.  Whatever that raises (including RecursionError or MemoryError on a
hostile file) ends as one logged error and the running configuration stays.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import os
import resource
import signal
import time
from collections.abc import Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from checks.base import CheckTarget
from checks.engine import CHECK_DURATION_BUCKETS, Load, Transition
from checks.process import CheckerProcess
from ha.durable import make_directories
from ha.identity import IdentityError, NodeLock, lock_file

from .admin import ADMIN_FILE, AdminStateError, AdminStore
from .config import ConfigError, load_config
from .config.issues import MAX_ISSUES, bounded, escape
from .control import ControlServer
from .events import (
    AdminChanged,
    CheckerBehind,
    CheckerCaughtUp,
    EventBus,
    HealthChanged,
    ReloadAccepted,
    ReloadRefused,
    ServiceDown,
    ServiceUp,
    WeightChanged,
    log_event,
    to_json,
)
from .hooks.dispatcher import HookDispatcher
from .ipvs import IPVSError, KernelIPVS
from .model import Config, DestKey, NotifySettings, ServiceKey, VirtualService, canonical_ip
from .planner import AdminState, HealthState
from .reconciler import Reconciler
from .status import build_status, printable
from .systemd import Notifier, status_line
from .web.tally import EventTally
from .weights import WeightBook

if TYPE_CHECKING:
    from ha.bgp.service import BgpService
    from ha.service import HAService

    from .web.metrics import Scrape
    from .web.server import HTTPServer

log = logging.getLogger("directord")

#: Seconds between two recomputations of the bgp VIPs' health without an event (`Daemon._bgp_ticker`).
BGP_TICK = 1.0


def raise_nofile_limit() -> int:
    """Raise the open-file soft limit to the hard limit (one socket per check in flight).

    Returns the soft limit in force afterwards.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


TargetKey = tuple[ServiceKey, DestKey]
Targets = dict[TargetKey, CheckTarget]


def check_targets(config: Config, known: Mapping[TargetKey, TargetKey] | None = None) -> Targets:
    """One health-check target per (virtual service, real server) of ``config``.

    ``known`` maps the keys of the running targets to themselves: a key equal
    to one of them is replaced by that very object, so that adopting the new
    targets on the event loop finds every unchanged one by identity (a lookup
    of an equal but distinct key compares the dataclasses field by field).
    """
    known = known or {}
    targets = {}
    for svc in config.services:
        for rs in svc.real_servers:
            key = (svc.key, rs.key)
            key = known.get(key, key)
            targets[key] = CheckTarget(
                key=key,
                name=f"rs {rs.key} of {printable(svc.name)}",
                vip=svc.key.address or None,
                vport=svc.key.port,
                rip=rs.address,
                rport=rs.check.port if rs.check.port is not None else rs.port,
                spec=rs.check,
                weight=rs.weight,
            )
    return targets


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A configuration loaded off the event loop, ready to adopt.

    Attributes:
        config: the validated configuration.
        targets: its check targets (`check_targets`).
        gone: keys of ``previous`` (see `load_prepared`) that ``targets`` lacks.
    """

    config: Config
    targets: Targets
    gone: list[TargetKey]


#: Events in a status document (``recent_events``; ``directord events --recent N`` gives more).
STATUS_EVENTS = 10

#: The oldest generation's threshold while a file is parsed (`gc.set_threshold`): so high that no
#: full collection runs (it would traverse the configuration built so far).
FULL_COLLECTION_HELD = 1 << 30


def load_prepared(path: str, running: Collection[TargetKey] = (), previous: Iterable[TargetKey] = ()) -> Prepared:
    """Load and validate the configuration at ``path`` and build its check targets.

    ``running``: keys of the targets checked now (reused, see `check_targets`);
    ``previous``: keys the daemon holds health state for, to work out which go.

    Blocking and CPU-bound (seconds for thousands of real servers): the daemon
    runs it in a worker thread, so it touches no daemon state.  Garbage
    collection is arranged so that a reload costs the event loop one
    collection, not a series of them (a full traversal holds the interpreter
    lock, and with it the loop: up to about 0.1 s for 5,000 real servers
    here):

    * first everything the previous load froze is unfrozen and collected
      once: objects that were alive at that freeze and have died since
      (replies in flight, tasks, connections; pyroute2's messages are
      cyclic) are garbage only a collection of unfrozen objects finds.
      Without this every reload leaked what was in flight at the previous
      one (about a thousand objects per reload in the soak, 7-8 MB an hour
      in both directors);
    * while the file is parsed, young collections go on (each traverses at
      most a few thousand new objects), full ones are held back
      (`FULL_COLLECTION_HELD`);
    * at the end the young generations are collected (so their garbage is
      not frozen) and every object alive (the new configuration among them)
      is frozen (`gc.freeze`, O(1)) and not traversed again until the next
      load.

    Raises:
        ConfigError: the file cannot be read or is invalid (`load_config`).
        Exception: anything else a hostile file provokes (RecursionError,
            MemoryError); the caller logs it and keeps its configuration.
    """
    gc.unfreeze()  # what the previous load froze and has died since is garbage only this finds
    gc.collect()
    thresholds = gc.get_threshold()
    gc.set_threshold(thresholds[0], thresholds[1], FULL_COLLECTION_HELD)
    try:
        config = load_config(path)
        targets = check_targets(config, {key: key for key in running})
        return Prepared(config, targets, [key for key in previous if key not in targets])
    finally:
        gc.collect(1)  # the young generations (a few thousand objects at most): their garbage is not frozen
        gc.freeze()  # O(1): the survivors (the new configuration) are never traversed again
        gc.set_threshold(*thresholds)


#: The lock file in ``global.state_dir`` that one daemon holds while it runs (`lock_state_dir`);
#: ``{net}`` is the inode of its network namespace (one IPVS table per namespace: the lab's and
#: the tests' directors, each in its namespace, may share a state directory).
INSTANCE_LOCK = "directord.net{net}.lock"


class InstanceLockedError(IdentityError):
    """Another daemon runs on this state directory (``str(err)`` names the lock file and its pid)."""

    def __init__(self, path: str, pid: int | None) -> None:
        holder = f"process {pid}" if pid is not None else "another process (pid unknown)"
        super().__init__(
            path,
            f"another directord runs on this state directory in this network namespace: {holder} holds "
            "this lock; two daemons would program one IPVS table and overwrite each other's admin.json",
        )


def lock_state_dir(state_dir: str) -> NodeLock:
    """Take the daemon's lock, ``STATE_DIR/directord.netINODE.lock`` (`INSTANCE_LOCK`: INODE is
    the network namespace's; ``flock(2)``, exclusive, not waiting), creating ``state_dir`` (0700)
    when missing.

    Raises:
        InstanceLockedError: another daemon holds it.
        IdentityError: the directory or the lock file cannot be made or locked (a symlink in
            place, not a directory, no permission).
    """
    try:
        make_directories(state_dir, 0o700)
    except OSError as exc:
        raise IdentityError(state_dir, f"cannot create the state directory: {exc.strerror or exc}") from exc
    path = os.path.join(state_dir, INSTANCE_LOCK.format(net=os.stat("/proc/self/ns/net").st_ino))
    return lock_file(path, lambda pid: InstanceLockedError(path, pid))


#: At most this many problems of an invalid file are logged (a hostile file can have millions).
MAX_LOGGED_ISSUES = 50
#: Longest ``error`` of a refused reload's answer (`refusal_text`), in characters: its problems
#: (each at most about 1,200 characters, `director.config.ConfigIssue`) are kept whole while they fit.
MAX_REFUSAL_TEXT = 16_000


def _load_failure(exc: BaseException) -> str:
    """Why loading failed, for the log: the first `MAX_LOGGED_ISSUES` problems of an invalid file."""
    if isinstance(exc, ConfigError):
        shown = "\n".join(str(issue) for issue in exc.issues[:MAX_LOGGED_ISSUES])
        more = exc.total - MAX_LOGGED_ISSUES  # every problem found, listed in exc.issues or not
        return f"\n{shown}" + (f"\n... and {more} more problems (directord check lists them all)" if more > 0 else "")
    if isinstance(exc, OSError):
        return f"cannot read the file: {exc.strerror or exc}"
    return f"cannot load the file: {type(exc).__name__}: {exc}"


def refusal_text(path: str, exc: BaseException) -> str:
    """Why loading ``path`` failed, as ``directord check`` prints it, for a ``reload`` answer.

    For an invalid file (`ConfigError`): one ``FILE:LINE:COL: FIELD: MESSAGE`` line per problem,
    the first `MAX_LOGGED_ISSUES` that fit in `MAX_REFUSAL_TEXT` characters, a line counting the
    ones left out, then ``FILE: N error(s)``.  Otherwise (unreadable file, RecursionError or
    MemoryError on a hostile file) one line ``PATH: cannot ...: REASON``, bounded and escaped.
    """
    if not isinstance(exc, ConfigError):
        return f"{escape(path)}: {bounded(_load_failure(exc), 1000)}"
    lines: list[str] = []
    size = 0
    for issue in exc.issues[: min(MAX_LOGGED_ISSUES, MAX_ISSUES)]:  # the problems themselves (see ConfigError)
        line = str(issue)
        if lines and size + len(line) + 1 > MAX_REFUSAL_TEXT:
            break
        lines.append(line[:MAX_REFUSAL_TEXT])
        size += len(line) + 1
    more = exc.total - len(lines)
    if more > 0:
        lines.append(f"... and {more} more problem{'s' if more != 1 else ''} (directord check lists them all)")
    file = exc.issues[0].file if exc.issues else escape(path)
    lines.append(f"{file}: {exc.total} error{'s' if exc.total != 1 else ''}")
    return "\n".join(lines)


def _same_ha(old: Config | None, new: Config) -> bool:
    """True when both configurations have the same ha section (its line in the file aside)."""
    a, b = (old.ha if old else None), new.ha
    if a is None or b is None:
        return a is b
    return dataclasses.replace(a, line=0) == dataclasses.replace(b, line=0)


class Daemon:
    """The directord daemon for one configuration file.

    Args:
        config_path: path of the YAML configuration.
        control_socket: overrides the configuration's control socket path.
        adopt_orphans: this process is the daemon's own (``directord run``), with no children
            but the checker child: it adopts and kills what external checks leave behind when a
            checker child dies (`checks.process.CheckerProcess`'s ``adopt_orphans``).  Not for a
            daemon run inside another program, whose other children it would kill.
    """

    def __init__(self, config_path: str, control_socket: str | None = None, *, adopt_orphans: bool = False) -> None:
        self.config_path = config_path
        self._control_override = control_socket
        self.config: Config | None = None
        self._states: dict[tuple[ServiceKey, DestKey], HealthState] = {}
        #: Counts of the published events, for the metrics (`director.web.tally`).
        self.tally = EventTally()
        #: Every state change of this daemon as a typed event (`director.events`); it logs and counts them.
        self.events = EventBus(log=self._log_event)
        self.kernel = KernelIPVS()
        self.engine = CheckerProcess(  # transitions and load reports are logged as events
            self._on_transition, log_transitions=False, on_load=self._on_load, adopt_orphans=adopt_orphans
        )
        #: The operator's real-server states (`director.admin`), read from the state directory at start.
        self.admin = AdminStore(None)
        self._instance_lock: NodeLock | None = None  # on STATE_DIR/INSTANCE_LOCK while running
        self._admin_lock = asyncio.Lock()
        #: Weights asked by checks (agents, dynamic external checks) and slow starts (`director.weights`).
        self.weights = WeightBook()
        self._targets: dict[tuple[ServiceKey, DestKey], CheckTarget] = {}  # the running configuration's
        self._ramp_tasks: dict[tuple[ServiceKey, DestKey], asyncio.Task[None]] = {}
        self.reconciler = Reconciler(
            self.kernel,
            self._health,
            on_event=self.events.publish,
            admin=self._admin_for,
            weights=self._weights_for,
        )
        #: The ``notify:`` hooks (`director.hooks`): every published event is offered to them.
        self.hooks = HookDispatcher(NotifySettings(), self.events.publish, hold_sweep=self.engine.hold_sweep)
        self._services: dict[ServiceKey, VirtualService] = {}  # the running configuration's, by key
        #: per virtual service name: True while a real server is in service, False after `ServiceDown`
        self._in_service: dict[str, bool] = {}
        self.control: ControlServer | None = None
        self.ha: HAService | None = None  # when the configuration has an ha section
        self.bgp: BgpService | None = None  # when the configuration has a bgp section
        self._bgp_due = False  # a recomputation of the VIPs' health is scheduled
        self._bgp_tick: asyncio.Task[None] | None = None
        #: the kernel switches of the bgp mode that could not be set (`director.bgp.prepare_sysctls`)
        self.bgp_problems: list[str] = []
        #: where `_start_bgp` recorded the switches it changed, until `_stop_bgp` restores them
        self._bgp_state_dir: str | None = None
        self.http: HTTPServer | None = None  # when the configuration has a global.http section
        self._stop = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._reloads: set[asyncio.Task[dict[str, Any]]] = set()  # reloads in flight (kept referenced)
        self._queued_reload: asyncio.Task[dict[str, Any]] | None = None  # the next load, not started yet
        #: how the last reload went (``None`` before the first): the ``reload`` answer and ``at`` (Unix time)
        self.last_reload: dict[str, Any] | None = None
        self._started = time.monotonic()
        self._started_wall = time.time()
        #: The service manager's notifications and watchdog (`director.systemd`; set up by `run`
        #: from the environment: a no-op outside a ``Type=notify`` unit).
        self.systemd = Notifier(None)

    def _log_event(self, envelope: Any) -> None:
        """The bus's first stop for every envelope: the log, then the metrics' tally."""
        log_event(envelope)
        self.tally.add(envelope)
        self.hooks.offer(envelope)

    # --- health -----------------------------------------------------------------

    def _health(self, service: ServiceKey, dest: DestKey) -> HealthState:
        return self._states.get((service, dest), "unknown")

    def _admin_for(self, svc: VirtualService) -> dict[DestKey, AdminState]:
        """The real servers of ``svc`` an operator drained or disabled (for the reconciler)."""
        states = self.admin.for_service(svc.name)
        if not states:
            return {}
        return {rs.key: states[name] for rs in svc.real_servers if (name := str(rs.key)) in states}

    def _on_load(self, load: Load) -> None:
        """The checker fell behind or caught up: published as an event."""
        if load.behind:
            self.events.publish(CheckerBehind(load.late, load.in_flight, load.limit or 0))
        else:
            self.events.publish(CheckerCaughtUp())

    def _configured_weight(self, key: tuple[ServiceKey, DestKey]) -> int | None:
        target = self._targets.get(key)
        return None if target is None else target.weight

    def _weights_for(self, service: ServiceKey) -> dict[DestKey, int] | None:
        """The weights of ``service``'s up real servers that are not their configured ones."""
        return self.weights.overrides(service, self._configured_weight, time.monotonic())

    def _on_transition(self, t: Transition) -> None:
        service, dest = t.key
        key: tuple[ServiceKey, DestKey] = t.key
        name = self.reconciler.service_name(service)
        asked = self.weights.ask(key, t.weight)
        if t.old == t.new:  # only the weight the checks ask for changed (`checks.engine.Transition`)
            if asked:
                self._publish_weight(key, t.name, t.reason)
                self.reconciler.on_health(service, dest)
            return
        self._states[key] = t.new
        self.events.publish(HealthChanged(t.name, name, str(dest), t.old, t.new, t.reason))
        target = self._targets.get(key)
        if t.new == "up" and t.old == "down" and target is not None and target.spec.slow_start > 0:
            self._start_ramp(key, target)
        elif t.new != "up":
            self._stop_ramp(key)
        self.reconciler.on_health(service, dest)
        svc = self._services.get(service)
        if svc is not None:
            self._judge_service(svc)
        self._bgp_changed()

    def _publish_weight(self, key: tuple[ServiceKey, DestKey], name: str, reason: str) -> None:
        configured = self._configured_weight(key)
        if configured is None:
            return
        weight = self.weights.weight(key, configured, time.monotonic())
        self.events.publish(
            WeightChanged(
                name,
                self.reconciler.service_name(key[0]),
                str(key[1]),
                configured if weight is None else weight,
                reason,
            )
        )

    def _start_ramp(self, key: tuple[ServiceKey, DestKey], target: CheckTarget) -> None:
        """Slow start of ``key`` (``check.slow_start``): wake the reconciler at each step."""
        self._stop_ramp(key)
        self.weights.start_ramp(key, time.monotonic(), target.spec.slow_start)
        times = self.weights.step_times(key, target.weight)
        if not times:
            return
        self._ramp_tasks[key] = asyncio.get_running_loop().create_task(
            self._ramp(key, target.name, times), name=f"slow start {target.name}"
        )
        self._publish_weight(key, target.name, f"slow start 0/{len(times)}")

    def _stop_ramp(self, key: tuple[ServiceKey, DestKey]) -> None:
        task = self._ramp_tasks.pop(key, None)
        if task is not None:
            task.cancel()
        self.weights.stop_ramp(key)

    async def _ramp(self, key: tuple[ServiceKey, DestKey], name: str, times: list[float]) -> None:
        for step, at in enumerate(times, 1):
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            if step == len(times):
                self.weights.stop_ramp(key)
                self._ramp_tasks.pop(key, None)
            self._publish_weight(key, name, f"slow start {step}/{len(times)}")
            self.reconciler.on_health(*key)

    def _judge_service(self, svc: VirtualService) -> None:
        """Publish `ServiceDown` when ``svc`` has no real server in service (up by its checks and
        neither drained nor disabled) and all of them have been checked at least once (or it has
        none); `ServiceUp` when it has one again after that (`HOOK_EVENTS`)."""
        admin = self._admin_for(svc)
        up = 0
        unknown = False
        for rs in svc.real_servers:
            health = self._states.get((svc.key, rs.key), "unknown")
            if health == "up" and admin.get(rs.key, "enabled") == "enabled":
                up += 1
            elif health == "unknown":
                unknown = True
        before = self._in_service.get(svc.name)
        if up:
            self._in_service[svc.name] = True
            if before is False:
                self.events.publish(ServiceUp(svc.name, up))
        elif not unknown and before is not False:
            self._in_service[svc.name] = False
            self.events.publish(ServiceDown(svc.name, len(svc.real_servers)))

    # --- lifecycle ----------------------------------------------------------------

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT. Returns the process exit status (1: bad configuration).

        Under systemd (sd_notify(3), systemd.service(5) ``Type=notify``): the
        watchdog is fed from the event loop from the start; ``READY=1`` is sent
        once the control socket answers, the HA service (if any) started and the
        reconciler's first pass ran; ``STATUS=`` follows the state (at most once
        a second); ``STOPPING=1`` when stopping begins.
        """
        self.systemd = Notifier.from_environ()
        self.systemd.start_watchdog()
        try:
            return await self._run()
        finally:
            self.systemd.close()
            lock, self._instance_lock = self._instance_lock, None
            if lock is not None:
                lock.release()

    async def _run(self) -> int:
        try:
            prepared = await asyncio.to_thread(load_prepared, self.config_path)
        except Exception as exc:  # a hostile file must give one clear error, not a traceback
            log.error("invalid configuration %s, not starting: %s", self.config_path, _load_failure(exc))
            return 1
        raise_nofile_limit()
        for warning in prepared.config.warnings:
            log.warning("configuration: %s", warning)
        state_dir = prepared.config.settings.state_dir
        try:
            self._instance_lock = await asyncio.to_thread(lock_state_dir, state_dir)
        except IdentityError as exc:
            log.error("not starting: %s", exc)
            return 1
        admin = AdminStore(os.path.join(state_dir, ADMIN_FILE))
        try:
            await asyncio.to_thread(admin.load)
        except AdminStateError as exc:
            log.error("cannot read the operator's real-server states, not starting: %s (fix or remove it)", exc)
            return 1
        self.admin = admin

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload_on_signal)
        config = prepared.config
        await self._adopt(prepared)
        path = self._control_override or config.settings.control_socket
        self.control = ControlServer(path, self._handle, self.events)
        try:
            await self.control.start()
        except (RuntimeError, OSError) as exc:
            log.error("control socket %s: %s", path, exc)
            return 1
        if config.ha is not None:
            # imported here, not at the top, for start-up time only (no cycle): the HA service and
            # what it imports take ~0.16 s here and seconds in the emulated test VM, which a
            # director without an ha section should not pay
            from ha.service import HAService, HAStartError

            self.ha = HAService(config.ha, config_file=config.path, on_event=self.events.publish)
            try:
                await self.ha.start()
            except HAStartError as exc:
                log.error("%s", exc)
                await self.ha.stop()
                await self.control.stop()
                return 1
        if config.bgp is not None and not await self._start_bgp(config):
            if self.ha is not None:
                await self.ha.stop()
            await self.control.stop()
            return 1
        try:
            await self.engine.start()
        except OSError as exc:
            log.error("cannot start the checker process: %s", exc)
            if self.bgp is not None:
                await self._stop_bgp()
            if self.ha is not None:
                await self.ha.stop()
            await self.control.stop()
            return 1
        if config.settings.http is not None:
            await self._start_http(config)
        await self.reconciler.start()
        await self.reconciler.first_pass()
        log.info(
            "directord started: %d virtual services, %d real servers, control socket %s",
            len(config.services),
            sum(len(s.real_servers) for s in config.services),
            path,
        )
        self.systemd.ready(self._status_line())
        self.systemd.start_status(self._status_line, lambda: self.events.published)
        try:
            await self._stop.wait()
        finally:
            log.info("stopping (the IPVS table is left in place)")
            self.systemd.stopping()
            if self.bgp is not None:  # first: routers move the flows away while this director forwards
                await self._stop_bgp()
            if self.ha is not None:
                await self.ha.stop()
            if self.http is not None:
                await self.http.stop()
            await self.control.stop()
            await self.engine.stop()
            for task in self._ramp_tasks.values():
                task.cancel()
            await self.hooks.close()
            await self.reconciler.stop()
            await self.kernel.close()
        return 0

    # --- bgp (active-active) ---------------------------------------------------------

    async def _start_bgp(self, config: Config) -> bool:
        """Start the BGP service of the ``bgp:`` section (`ha.bgp.service`); False when it cannot
        start (logged, and `_stop_bgp` has undone what was done).  The kernel switches it needs
        are set here first, their previous values recorded in the state directory
        (`director.bgp.prepare_sysctls`)."""
        from ha.bgp.service import BgpService, BgpStateError  # imported here for start-up time
        from ha.bgp.speaker import SpeakerError

        from .bgp import prepare_sysctls

        assert config.bgp is not None
        self._bgp_state_dir = config.settings.state_dir
        self.bgp_problems = await asyncio.to_thread(prepare_sysctls, self._bgp_state_dir)
        for problem in self.bgp_problems:
            log.error("bgp: %s", problem)
        bgp = BgpService(
            config.bgp,
            source=config.path,
            state_dir=config.settings.state_dir,
            on_event=self.events.publish,
            spawn_guard=self.engine.hold_sweep,  # BIRD is our child: not an orphan to sweep
        )
        self.bgp = bgp
        self.engine.spare_children = bgp.child_pids
        try:
            await self.bgp.start()
        except (BgpStateError, SpeakerError, OSError, ValueError) as exc:
            log.error("cannot start the BGP service: %s", exc)
            await self._stop_bgp()
            return False
        self._bgp_tick = asyncio.get_running_loop().create_task(self._bgp_ticker(), name="bgp health")
        self._bgp_changed()
        return True

    async def _stop_bgp(self) -> None:
        """Stop the BGP service (VIPs withdrawn, BIRD stopped, VIPs off ``lo``), then put back the
        kernel switches `_start_bgp` changed (`director.bgp.restore_sysctls`).  Never raises."""
        if self._bgp_tick is not None:
            self._bgp_tick.cancel()
            self._bgp_tick = None
        if self.bgp is not None:
            await self.bgp.stop()
        if self._bgp_state_dir is not None:
            from .bgp import restore_sysctls

            state_dir, self._bgp_state_dir = self._bgp_state_dir, None
            await asyncio.to_thread(restore_sysctls, state_dir)

    def _bgp_changed(self) -> None:
        """Health, an operator's state or the kernel table changed: tell the BGP service the
        VIPs' health soon (once for all the changes of one loop iteration)."""
        if self.bgp is None or self._bgp_due:
            return
        self._bgp_due = True
        asyncio.get_running_loop().call_soon(self._bgp_update)

    def _bgp_update(self) -> None:
        self._bgp_due = False
        if self.bgp is None or self.config is None:
            return
        from .bgp import vip_health

        self.bgp.update(
            vip_health(self.config, self.bgp.config, self._health, self._admin_for, self.reconciler.programmed)
        )

    async def _bgp_ticker(self) -> None:
        """Every second: the VIPs' health again, so that what the reconciler programmed (or
        lost) in the kernel reaches the announcements without an event of its own."""
        while True:
            await asyncio.sleep(BGP_TICK)
            self._bgp_changed()

    async def _bgp_request(self, request: dict[str, Any]) -> dict[str, Any]:
        """The control ``bgp`` request: ``action`` drain, undrain or status."""
        if self.bgp is None:
            return {"ok": False, "error": "this director announces nothing over BGP (no bgp section)"}
        action = request.get("action")
        if action == "status":
            return {"ok": True, "bgp": self.bgp_status()}
        if action not in ("drain", "undrain"):
            return {"ok": False, "error": "bgp needs action drain, undrain or status"}
        try:
            await (self.bgp.drain() if action == "drain" else self.bgp.undrain())
        except OSError as exc:
            return {"ok": False, "error": f"cannot keep the drain in the state directory: {exc}; nothing changed"}
        if action == "drain":
            wait = self.bgp.config.graceful_shutdown_wait
            return {"ok": True, "message": f"drained: GRACEFUL_SHUTDOWN now, VIPs withdrawn in {wait:g} s"}
        return {"ok": True, "message": "undrained: healthy VIPs announced"}

    def bgp_status(self) -> dict[str, Any]:
        """The ``bgp`` part of the status document."""
        assert self.bgp is not None
        doc = self.bgp.status()
        doc["problems"] = list(self.bgp_problems)
        return doc

    async def _start_http(self, config: Config) -> None:
        """Start the metrics listener of ``global.http``; a failure is logged and the daemon runs
        on without it (balancing matters more than its metrics; ``up`` tells Prometheus)."""
        settings = config.settings.http
        assert settings is not None
        # imported here, not at the top, for start-up time only: aiohttp's server and
        # prometheus-client are not needed by a director without a global.http section
        from .web.server import HTTPServer

        server = HTTPServer(settings, self.metrics_scrape, self.status)
        try:
            await server.start()
        except OSError as exc:
            log.error("cannot listen for metrics on %s: %s; running without them", settings.listen, exc)
            return
        self.http = server

    async def metrics_scrape(self) -> Scrape:
        """What one metrics scrape reads (`director.web.metrics.Scrape`): a fresh dump of the IPVS
        table with the kernel's counters (the cached table, marked unreadable, when the dump
        fails), the checker's snapshot, the HA state, and copies of the event counts."""
        # imported here with the listener (`_start_http`): only a director with global.http scrapes
        from .version import version
        from .web.metrics import DaemonFacts, Scrape

        try:
            table = await self.reconciler.read_table(stats=True)
            readable = True
        except IPVSError:
            table, readable = dict(self.reconciler.table), False
        health = await self.engine.snapshot()
        return Scrape(
            config=self.config,
            table=table,
            health=health,
            draining=self.reconciler.draining(),
            ha=self.ha.snapshot() if self.ha is not None else None,
            bgp=self.bgp_status() if self.bgp is not None else None,
            tally=self.tally.copy(),
            daemon=DaemonFacts(
                version=version(),
                started_at=self._started_wall,
                ops_applied=self.reconciler.ops_applied,
                kernel_errors=self.reconciler.errors,
                table_readable=readable,
                checker_restarts=self.engine.restarts,
                checker_running=self.engine.pid is not None,
            ),
            check_buckets=CHECK_DURATION_BUCKETS,
            admin=self.admin.entries(),
        )

    async def _adopt(self, prepared: Prepared) -> None:
        for key in prepared.gone:
            self._states.pop(key, None)
            self._stop_ramp(key)
        self.weights.forget(prepared.gone)
        self._targets = prepared.targets
        self.engine.update(prepared.targets)
        await self.reconciler.adopt_config(prepared.config)
        self.config = prepared.config
        self._services = {svc.key: svc for svc in prepared.config.services}
        names = {svc.name for svc in prepared.config.services}
        self._in_service = {name: value for name, value in self._in_service.items() if name in names}
        self.hooks.update(prepared.config.notify or NotifySettings())
        self._warn_stale_admin(prepared.config)
        for svc in prepared.config.services:
            self._judge_service(svc)
        self._bgp_changed()

    async def reload(self) -> bool:
        """Re-read the configuration file; keep the running one if it is invalid (`reload_report`).

        Returns True when the new configuration was adopted.
        """
        return bool((await self.reload_report())["ok"])

    async def reload_report(self) -> dict[str, Any]:
        """Re-read the configuration file as `reload` does and say how it went: the answer to a
        control ``reload`` request.

        Loads never overlap, whatever asks for them (SIGHUP, control requests, at once or not):
        a request made while a load runs waits for the next load, which it shares with every
        request made meanwhile, so each answer is that of a load that read the file after the
        request was made, and a burst of requests costs at most two loads.

        Returns:
            adopted: ``{"ok": True, "path": PATH, "services": N, "real_servers": N, "seconds": S,
            "warnings": [TEXT, ...]}`` (``seconds``: how long the load took; ``warnings``: what
            the reload could not apply, e.g. a changed ``ha`` section);
            refused, the running configuration kept: ``{"ok": False, "path": PATH, "error": TEXT,
            "errors": N}``, ``TEXT`` from `refusal_text`, ``N`` the problems found (1 when the
            file could not be read at all).
        """
        return await asyncio.shield(self._queue_reload())

    def _queue_reload(self) -> asyncio.Task[dict[str, Any]]:
        """The load a reload asked for now gets: the one queued and not started yet, or a new one."""
        task = self._queued_reload
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(self._reload_when_free(), name="reload")
            self._queued_reload = task
            self._reloads.add(task)
            task.add_done_callback(self._reload_done)
        return task

    async def _reload_when_free(self) -> dict[str, Any]:
        """Wait for the load in progress, if any, then load (`reload_report`)."""
        async with self._reload_lock:
            self._queued_reload = None  # from now on a request waits for the load after this one
            report = await self._load_and_adopt()
            self.last_reload = {**report, "at": time.time()}
            return report

    async def _load_and_adopt(self) -> dict[str, Any]:
        """One load of the file and, when it is valid, its adoption (`reload_report`'s answer)."""
        log.info("reloading %s", self.config_path)
        started = time.monotonic()
        try:
            # off the loop: parsing and validating a large file takes longer than the deadtime
            prepared = await asyncio.to_thread(
                load_prepared, self.config_path, self.engine.targets().keys(), list(self._states)
            )
        except Exception as exc:  # RecursionError, MemoryError...: logged, never raised to the loop
            self.events.publish(ReloadRefused(self.config_path, _load_failure(exc)))
            errors = exc.total if isinstance(exc, ConfigError) else 1
            return {
                "ok": False,
                "path": self.config_path,
                "error": refusal_text(self.config_path, exc),
                "errors": errors,
            }
        warnings = list(prepared.config.warnings)
        for warning in warnings:
            log.warning("configuration: %s", warning)
        if not _same_ha(self.config, prepared.config):
            warnings.append(
                "the ha section changed: HA changes need a restart; the running HA service (if any) is kept"
            )
            log.warning("%s", warnings[-1])
        if (self.config.bgp if self.config else None) != prepared.config.bgp:
            warnings.append(
                "the bgp section changed: BGP changes need a restart; the running BGP service (if any) is kept"
            )
            log.warning("%s", warnings[-1])
        old_dir = self.config.settings.state_dir if self.config is not None else None
        if old_dir is not None and old_dir != prepared.config.settings.state_dir:
            warnings.append("global.state_dir changed: the daemon keeps using the one it started with until a restart")
            log.warning("%s", warnings[-1])
        http_warning = self._http_change(prepared.config)
        if http_warning is not None:
            warnings.append(http_warning)
            log.warning("%s", warnings[-1])
        await self._adopt(prepared)
        config = prepared.config
        self.events.publish(ReloadAccepted(self.config_path, len(config.services)))
        return {
            "ok": True,
            "path": self.config_path,
            "services": len(config.services),
            "real_servers": sum(len(s.real_servers) for s in config.services),
            "seconds": round(time.monotonic() - started, 3),
            "warnings": warnings,
        }

    def _http_change(self, new: Config) -> str | None:
        """Apply what a reload changed in ``global.http`` that can be applied at once (the token);
        the warning to give when something else changed (the listener needs a restart)."""
        old = self.config.settings.http if self.config is not None else None
        now = new.settings.http
        if old == now:
            return None
        if old is not None and now is not None and (old.host, old.port) == (now.host, now.port):
            if self.http is not None:
                self.http.set_token(now.token)
            return None
        return "global.http changed: the metrics listener changes at the next restart; the running one is kept"

    def _reload_on_signal(self) -> None:
        """SIGHUP: reload (`reload_report`, between the service manager's ``RELOADING=1`` and
        ``READY=1``) in a task that is kept referenced and whose outcome is always retrieved."""
        task = asyncio.get_running_loop().create_task(self.systemd.reloading(self.reload_report), name="reload")
        self._reloads.add(task)
        task.add_done_callback(self._reload_done)

    def _reload_done(self, task: asyncio.Task[dict[str, Any]]) -> None:
        self._reloads.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("reload of %s failed", self.config_path, exc_info=exc)

    def stop(self) -> None:
        """Ask the daemon to stop (as SIGTERM does)."""
        self._stop.set()

    def _status_line(self) -> str:
        """The one-line state for the service manager (`director.systemd.status_line`)."""
        config = self.config
        total = sum(len(s.real_servers) for s in config.services) if config is not None else 0
        up = sum(1 for state in self._states.values() if state == "up")
        ha = None
        if self.ha is not None:
            node = self.ha.node
            if node is None:
                ha = "starting"
            else:
                snap = node.snapshot()
                ha = f"{snap.status}, holding {snap.holds}"
                ha += "".join(f", peer {peer.name} {peer.status}" for peer in snap.peers)
        return status_line(len(config.services) if config is not None else 0, up, total, ha)

    # --- control ------------------------------------------------------------------

    async def status(self, events: int = STATUS_EVENTS) -> dict[str, Any]:
        """The status document (`director.status.build_status`, built off the event loop) with a
        fresh kernel dump, and the last ``events`` events (``recent_events``, oldest first,
        `director.events.to_json` objects; `STATUS_EVENTS` by default)."""
        try:
            table = await self.reconciler.read_table()
            kernel_error = None
        except IPVSError as exc:
            table, kernel_error = dict(self.reconciler.table), str(exc)
        health = await self.engine.snapshot()
        # built in a worker thread: for thousands of real servers this takes longer than a
        # keepalive; its inputs are this daemon's own copies (the cached table's entries are
        # replaced, never changed, by the reconciler)
        doc = await asyncio.to_thread(
            build_status,
            self.config,
            table,
            health,
            self.reconciler.draining(),
            now=time.monotonic(),
            admin=self.admin.entries(),
        )
        doc.update(
            pid=os.getpid(),
            checker_pid=self.engine.pid,
            checker_restarts=self.engine.restarts,
            uptime_s=round(time.monotonic() - self._started, 1),
            ops_applied=self.reconciler.ops_applied,
            kernel_errors=self.reconciler.errors,
            kernel_error=kernel_error,
            sync_daemons=None
            if self.reconciler.sync_daemons is None
            else [str(d) for d in self.reconciler.sync_daemons],
            last_reload=self.last_reload,
        )
        if self.ha is not None:
            doc["ha"] = self.ha.snapshot()
        if self.bgp is not None:
            doc["bgp"] = self.bgp_status()
        doc["recent_events"] = [to_json(envelope) for envelope in self.events.recent(events)]
        return doc

    async def _handle(self, request: dict[str, Any]) -> dict[str, Any]:
        command = request.get("command")
        if command == "status":
            return {"ok": True, "status": await self.status()}
        if command == "reload":
            return await self.systemd.reloading(self.reload_report)
        if command == "rs":
            return await self._rs_admin(request)
        if command == "bgp":
            return await self._bgp_request(request)
        if command in ("standby", "takeover"):
            if self.ha is None:
                return {"ok": False, "error": "this director runs no HA (no ha section)"}
            from ha.service import AdminRefused  # already imported with HAService (see run)

            which = request.get("which", "all")
            try:
                message = getattr(self.ha, command)(which if isinstance(which, str) else "")
            except (AdminRefused, ValueError) as exc:
                return {"ok": False, "error": f"{command} refused: {exc}"}
            return {"ok": True, "message": message}
        return {"ok": False, "error": f"unknown command '{_shown(command)}'"}

    async def _rs_admin(self, request: dict[str, Any]) -> dict[str, Any]:
        """The control ``rs`` request (``directord rs enable|drain|disable``): ``action``,
        ``service`` (a configured virtual service's name), ``real_server`` (``ADDRESS:PORT``
        of one of its real servers), ``reason``. The new state is written to the state file
        before it is applied; a state that cannot be written is not applied."""
        action, service, real_server = request.get("action"), request.get("service"), request.get("real_server")
        reason = request.get("reason") or ""
        state = {"enable": "enabled", "drain": "drain", "disable": "disabled"}.get(str(action))
        if (
            state is None
            or not isinstance(service, str)
            or not isinstance(real_server, str)
            or not isinstance(reason, str)
        ):
            return {"ok": False, "error": "rs needs action enable|drain|disable, service, real_server (ADDRESS:PORT)"}
        config = self.config
        svc = next((s for s in config.services if s.name == service), None) if config is not None else None
        if state == "enabled" and self.admin.get(service, real_server) is not None:
            if svc is None or not any(str(r.key) == real_server for r in svc.real_servers):
                return await self._forget_stale(service, real_server)
        if svc is None:
            return {"ok": False, "error": f"no virtual service named '{_shown(service)}'"}
        rs = next((r for r in svc.real_servers if str(r.key) == _canonical_rs(real_server)), None)
        if rs is None:
            known = ", ".join(str(r.key) for r in svc.real_servers[:10])
            return {
                "ok": False,
                "error": f"{_shown(real_server)} is not a real server of {printable(svc.name)} ({known})",
            }
        new = await self._change_admin(svc.name, str(rs.key), state, reason)
        if isinstance(new, dict):
            return new
        entry = new.get(svc.name, str(rs.key))
        self.events.publish(AdminChanged(svc.name, str(rs.key), state, entry.reason if entry else ""))
        self.reconciler.on_health(svc.key, rs.key)
        self._judge_service(svc)
        self._bgp_changed()
        return {"ok": True, "message": f"rs {rs.key} of {printable(svc.name)}: {state}"}

    async def _change_admin(
        self, service: str, real_server: str, state: str, reason: str
    ) -> AdminStore | dict[str, Any]:
        """Write the operator's new ``state`` of that real server to the state file, then adopt
        it; the new store when done, else the refusal to answer (nothing changed)."""
        async with self._admin_lock:  # one change at a time: each builds on the one before
            try:
                new = self.admin.changed(service, real_server, state, reason, time.time())
                await asyncio.to_thread(new.save)
            except AdminStateError as exc:
                return {"ok": False, "error": str(exc)}
            except OSError as exc:
                return {"ok": False, "error": f"cannot write {new.path}: {exc.strerror or exc}; nothing changed"}
            self.admin = new
        return new

    async def _forget_stale(self, service: str, real_server: str) -> dict[str, Any]:
        """``rs enable`` of an entry of the state file that names no configured real server (a
        service renamed or a real server removed since): remove it from the file."""
        new = await self._change_admin(service, real_server, "enabled", "")
        if isinstance(new, dict):
            return new
        message = f"removed the state of {_shown(real_server)} of {_shown(service)} (not configured)"
        return {"ok": True, "message": message}

    def _warn_stale_admin(self, config: Config) -> None:
        """Log the operator's states that name no configured real server (kept, not applied)."""
        configured = {(svc.name, str(rs.key)) for svc in config.services for rs in svc.real_servers}
        stale = [(name, rs, e.state) for (name, rs), e in self.admin.entries().items() if (name, rs) not in configured]
        if not stale:
            return
        shown = ", ".join(f"{printable(rs)} of {printable(name)} ({state})" for name, rs, state in sorted(stale)[:10])
        more = f" and {len(stale) - 10} more" if len(stale) > 10 else ""
        log.warning(
            "%d operator state(s) in %s name no configured real server (a service renamed or a real server "
            "removed?): %s%s; they are kept but not applied: `directord rs enable SERVICE ADDRESS:PORT` removes one",
            len(stale),
            self.admin.path,
            shown,
            more,
        )


#: Characters of a value from a control request echoed in its error.
MAX_SHOWN = 200


def _shown(value: object) -> str:
    """A value from a control request, for an error: at most `MAX_SHOWN` characters, escaped."""
    return bounded(str(value), MAX_SHOWN)


def _canonical_rs(text: str) -> str:
    """``ADDRESS:PORT`` with the address in canonical form (``[v6]:port`` for IPv6); the text
    itself when it is not one."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        return text
    try:
        return str(DestKey(canonical_ip(host.strip("[]")), int(port)))
    except ValueError:
        return text
