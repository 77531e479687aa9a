"""The checker process: the health-check engine in a child process of its own.

keepalived runs its checks in a checker child, apart from its VRRP child, and
heartbeat runs ldirectord apart from its own heartbeat processes; directord
does the same for the same reason: thousands of checks a second keep an event
loop busy, and the director's own loop must stay free for the peer heartbeat
(keepalive every 0.2 s, deadtime 0.8 s), the reconciler and the control socket.
In the emulated test VM, 200 HTTP checks a second made a 0.2 s timer on the
same loop wake up to 0.8 s late (`bench/check_cost.py`, docs/benchmarks.md);
with the checks in their own process it woke at most 48 ms late.

`CheckerProcess` (director side) has the interface of `checks.engine.HealthEngine`
(``start``, ``update``, ``targets``, ``snapshot``, ``stop``, transitions to a
callback) and runs the engine in a child interpreter started isolated
(``python -I``, from ``/``, importing only the director's own `checks`
package), the child side (`child_main`), on uvloop when it is installed (asyncio otherwise, or when
the environment variable ``DIRECTORD_CHECKER_LOOP`` is ``asyncio``).

Wire between the two: a Unix stream socket pair, frames of a 4-byte
big-endian length followed by a pickle (`encode_frame`, `read_frame`); both
ends are this same code, started by the director itself, so the pickles are
trusted.  Director -> checker: ``("update", {id: CheckTarget})``,
``("snapshot", request_id)``, ``("ping",)``, ``("stop",)``.  Checker -> director:
``("ready",)`` once its engine runs, ``("pong",)``, ``("transition", Transition)``, ``("load", Load)`` when
the cap on checks in flight starts or stops binding (`checks.engine.Load`),
``("snapshot", request_id, {id: HealthStatus}, more)``: a snapshot crosses in
frames of at most `SNAPSHOT_CHUNK` targets, ``more`` true on all but the last,
so that the director decodes it a frame at a time and its loop runs between two
(decoding 100,000 statuses in one piece takes 0.5 s here, ten seconds in a slow VM).
Target keys cross as small integers (the director keeps the map), so the child
needs nothing of the director's model.

Failure handling: the child exits when its socket reaches end of file (the
director died) and, as a backstop, gets SIGKILL when its parent dies
(``PR_SET_PDEATHSIG``).  It leads a session of its own and ignores SIGINT and
SIGTERM (systemd's stop reaches the whole cgroup): the director decides when it
stops.  When the child dies while the director runs -- seen by its exit, not
only by end of file on the socket -- the director logs it, kills what is left
in the child's session (its external checks' processes), starts a new one
after `RESTART_DELAY` seconds and sends it the targets again; the
real servers keep their last state until the new checker's first results
(its first result per real server decides, as after a director restart).
A child that is alive but answers nothing -- no frame for `HANG_LIMIT` seconds while pinged
(stopped, deadlocked) -- is killed and replaced the same way, with its own log line.
A process of an external check that left the child's session (a daemon,
``setsid``) and was still alive when the child died is re-parented to init
and escapes that kill, unless the director is itself a child subreaper
(``adopt_orphans``, which ``directord run`` sets): it then adopts such
processes, kills them at once and sweeps for more every `ORPHAN_SWEEP` seconds.
No child runs while there is nothing to check: the first targets start it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import pickle
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from pathlib import Path

from checks.base import CheckTarget
from checks.engine import HealthEngine, HealthStatus, Load, Transition, report_load
from checks.logs import LOG_FORMAT, journal_stream, text_formatter
from checks.protocols.external import become_subreaper, reap_orphans

__all__ = [
    "CheckerProcess",
    "child_log_handler",
    "encode_frame",
    "read_frame",
    "child_main",
    "LOG_FORMAT",
    "LOOP_ENV",
    "RESTART_DELAY",
    "MAX_FRAME",
    "EXIT_GRACE",
    "SNAPSHOT_CHUNK",
]

log = logging.getLogger("directord.checks")


#: Environment variable choosing the checker child's event loop: ``uvloop`` (the default,
#: when installed) or ``asyncio``.
LOOP_ENV = "DIRECTORD_CHECKER_LOOP"

#: The checker child's threshold of young-generation collections (`gc.set_threshold`; Python's
#: default is 700).  A check in flight holds a few dozen container objects (its task, coroutines,
#: futures, transport, timer), so with hundreds of checks in flight the default threshold is
#: crossed every few checks and each collection walks all of them: about a tenth of the child's
#: CPU at 2,000 HTTP checks per second.  The checks make no reference cycles on uvloop, so the
#: collections freed nothing; at this threshold they are rare, and a collection of up to this
#: many objects takes a few milliseconds.
CHILD_GC_THRESHOLD = 20_000

#: Seconds between the death of a checker child and the start of the next one.
RESTART_DELAY = 1.0

#: Largest frame accepted, bytes (a status snapshot of 100,000 real servers fits).
MAX_FRAME = 256 * 1024 * 1024

#: Most targets in one snapshot frame (125 since the statuses carry check counters and a
#: duration histogram, which doubled their decoding): decoding one takes about 1.5 ms here (30 ms in the
#: emulated VM), and the director's loop runs between two frames.
SNAPSHOT_CHUNK = 125

#: Seconds a running checker child may go without sending a frame while it is pinged every
#: third of that (``("ping",)``, answered by ``("pong",)``) before the director takes it for hung
#: (stopped, deadlocked), kills it and starts another.
HANG_LIMIT = 30.0

#: Seconds a new checker child has to say ``ready`` (import its modules, start its engine:
#: about 0.3 s here, seconds in the emulated test VM) before the director takes it for hung,
#: kills it and starts another.
START_LIMIT = 120.0

#: Seconds a checker child has to exit after its socket reached end of file, before SIGKILL.
EXIT_GRACE = 5.0

#: Seconds between two sweeps of the checker child for processes its external checks left
#: behind outside their process group (`checks.protocols.external.reap_orphans`).
ORPHAN_SWEEP = 0.1

#: Seconds between two sweeps while the last one found something: a killed process's children
#: are adopted at once and are the next sweep's, so a chain or a tree of daemons (a fork bomb
#: that calls ``setsid``) loses a generation every few milliseconds, faster than it can grow.
ORPHAN_CHASE = 0.005

#: Most seconds the checker child spends at exit killing what its external checks left behind.
FINAL_SWEEP = 2.0

#: The child's entry point, run with ``python -I -c``: ``argv[1]`` is the directory holding
#: the director's own `checks` package, the rest goes to `child_main`.  That package is loaded
#: from there by its path alone: the directory is not put on the module path, where whatever
#: else it holds would be found before the standard library (a ``json.py`` beside the package,
#: a backport left in site-packages).
_BOOTSTRAP = (
    "import sys, importlib.util as u; d = sys.argv[1] + '/checks'; "
    "s = u.spec_from_file_location('checks', d + '/__init__.py', submodule_search_locations=[d]); "
    "m = sys.modules['checks'] = u.module_from_spec(s); s.loader.exec_module(m); "
    "from checks.process import child_main; sys.exit(child_main(sys.argv[2:]))"
)

_LENGTH = struct.Struct(">I")


class FrameError(Exception):
    """A frame that is too long or does not unpickle."""


def _encode_targets(targets: Mapping[Hashable, CheckTarget], ids: Mapping[Hashable, int]) -> bytes:
    """The ``update`` frame: every target keyed (and with its ``key``) by its small integer id."""
    by_id = {ids[key]: dataclasses.replace(target, key=ids[key]) for key, target in targets.items()}
    return encode_frame(("update", by_id))


def encode_frame(message: tuple) -> bytes:
    """One frame: 4-byte big-endian length, then ``pickle.dumps(message)`` (highest protocol).

    Raises:
        FrameError: the pickle is longer than `MAX_FRAME` bytes.
    """
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    if len(body) > MAX_FRAME:
        raise FrameError(f"frame of {len(body)} bytes exceeds {MAX_FRAME}")
    return _LENGTH.pack(len(body)) + body


async def read_frame(reader: asyncio.StreamReader) -> tuple:
    """Read one frame written by `encode_frame` and return its message.

    Raises:
        asyncio.IncompleteReadError: end of file (at a frame boundary: ``partial`` is empty).
        FrameError: a length above `MAX_FRAME`, or a body that does not unpickle to a tuple.
    """
    (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    if length > MAX_FRAME:
        raise FrameError(f"frame length {length} exceeds {MAX_FRAME}")
    body = await reader.readexactly(length)
    try:
        message = pickle.loads(body)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad frame
        raise FrameError(f"frame does not unpickle: {exc}") from exc
    if not isinstance(message, tuple) or not message:
        raise FrameError(f"frame is not a message tuple: {type(message).__name__}")
    return message


class CheckerProcess:
    """The health-check engine run in a child process; the director's side of it.

    Same lifecycle as `checks.engine.HealthEngine`: ``await start()``, any number
    of ``update(targets)`` (before or after start), ``await snapshot()``,
    ``await stop()``.

    Args:
        on_transition: called on the director's loop, synchronously, for every
            state change reported by the checker (with the caller's own target
            keys); exceptions it raises are logged and ignored.  With ``log_transitions``
            each transition is also logged here (``"NAME up: REASON"``, logger
            ``directord.checks``); the daemon logs them as events instead.
        python: interpreter for the child, ``sys.executable`` by default.
        restart_delay: seconds before a dead child is replaced (`RESTART_DELAY`).
        hang_limit: seconds a child that said ``ready`` may leave pings unanswered before it is
            killed as hung and replaced (`HANG_LIMIT`).
        start_limit: seconds a new child may take to say ``ready`` before it is killed as hung
            and replaced (`START_LIMIT`).
        log_transitions: log each transition here (see ``on_transition``).
        on_load: called on the director's loop with the child's `checks.engine.Load` reports
            (its event loop fell behind, or caught up); without it they are logged here.
        adopt_orphans: make this process a child subreaper (``PR_SET_CHILD_SUBREAPER``) at
            `start` and kill what it adopts: the processes external checks left behind when a
            checker child died (`checks.protocols.external.reap_orphans`).  Only for a process that starts
            no other children (the director of ``directord run``): every child but the checker
            child gets ``SIGKILL``.
    """

    def __init__(
        self,
        on_transition: Callable[[Transition], None],
        *,
        python: str | None = None,
        restart_delay: float = RESTART_DELAY,
        hang_limit: float = HANG_LIMIT,
        start_limit: float = START_LIMIT,
        log_transitions: bool = True,
        on_load: Callable[[Load], None] | None = None,
        adopt_orphans: bool = False,
    ) -> None:
        self._on_transition = on_transition
        self._adopt_orphans = adopt_orphans
        #: the pids of other children of this process that the orphan sweep must leave alone
        #: (``directord run``'s BIRD, `ha.bgp.service.BgpService.child_pids`)
        self.spare_children: Callable[[], Iterable[int]] | None = None
        self._orphan_sweeper: asyncio.Task[None] | None = None
        self._spawning = False  # a child is being started: its pid is not known yet
        self._held = 0  # `hold_sweep` depth
        #: `start` asked to become a child subreaper while the sweep was held: done when released
        self._subreaper_pending = False
        self._on_load = on_load
        self._log_transitions = log_transitions
        self._python = python or sys.executable
        self._restart_delay = restart_delay
        self._hang_limit = hang_limit
        self._start_limit = start_limit
        self._last_frame = time.monotonic()  # when the current child last sent a frame
        self._targets: dict[Hashable, CheckTarget] = {}
        self._ids: dict[Hashable, int] = {}
        self._keys: dict[int, Hashable] = {}
        self._next_id = 0
        self._known: dict[Hashable, HealthStatus] = {}  # from transitions: the fallback snapshot
        self._proc: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._supervisor: asyncio.Task[None] | None = None
        # snapshot requests in flight: the future and the statuses received so far, by key
        self._requests: dict[
            int, tuple[asyncio.Future[dict[Hashable, HealthStatus]], dict[Hashable, HealthStatus]]
        ] = {}
        self._request_id = 0
        self._send_seq = 0  # updates sent to the child; a frame encoded for an older one is dropped
        self._sends: set[asyncio.Task] = set()
        self._ready = False  # the current child has started its engine (its "ready" frame)
        self._running = False
        self.restarts = 0
        """Number of checker children started after the first (each after a death)."""

    # --- lifecycle -----------------------------------------------------------

    @property
    def running(self) -> bool:
        """``True`` between `start` and `stop`."""
        return self._running

    @property
    def pid(self) -> int | None:
        """Process id of the current checker child, ``None`` when there is none."""
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    async def start(self) -> None:
        """Start checking: start the checker child and send it the targets; returns once the
        process exists (its engine runs once it has imported its modules, which takes seconds on
        a slow machine; `snapshot` answers from the transitions until then).

        With no targets yet (a director with only an ``ha`` section) no child is
        started: the first `update` with targets starts it (an interpreter costs
        about 40 MB).  Idempotent while running.

        Raises:
            OSError: the child could not be started (a child started later by
                `update` is retried every ``restart_delay`` seconds instead).
        """
        if self._running:
            return
        self._running = True
        if self._adopt_orphans and self._orphan_sweeper is None:
            # while another part of the director starts a child of its own with the subreaper flag
            # cleared (`hold_sweep`: the hook runner's ``setsid --fork``), setting the flag now
            # would make that child ours when its short-lived parent exits: set it once released
            self._subreaper_pending = bool(self._held)
            if self._subreaper_pending or become_subreaper():
                self._orphan_sweeper = asyncio.get_running_loop().create_task(
                    self._sweep_orphans(), name="checker orphan sweep"
                )
        if not self._targets:
            return
        try:
            reader = await self._spawn()
        except BaseException:
            self._running = False
            raise
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise(reader), name="checker process")

    async def stop(self, timeout: float = 5.0) -> None:
        """Ask the child to stop, wait up to ``timeout`` seconds, then kill it; a child that
        has not said ``ready`` yet (still importing) is killed at once.

        The targets are kept; a later `start` checks them again in a new child,
        whose first result per target decides (the child's counters die with it).
        """
        self._running = False
        self._send_seq += 1  # a targets frame still being encoded is not sent after "stop"
        for task in list(self._sends):
            task.cancel()
        await asyncio.gather(*self._sends, return_exceptions=True)
        supervisor, self._supervisor = self._supervisor, None
        proc, writer = self._proc, self._writer
        if writer is not None:
            try:
                writer.write(encode_frame(("stop",)))
                await asyncio.wait_for(writer.drain(), timeout)
            except (TimeoutError, OSError, RuntimeError):
                pass
        if proc is not None and proc.returncode is None and not self._ready:
            proc.kill()  # still starting (importing: seconds on a slow machine), nothing to finish
            await proc.wait()
        elif proc is not None and proc.returncode is None:
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                log.warning("checker process %d did not stop in %g s; killing it", proc.pid, timeout)
                proc.kill()
                await proc.wait()
        if supervisor is not None:
            supervisor.cancel()
            await asyncio.gather(supervisor, return_exceptions=True)
        if self._proc is not proc and self._proc is not None and self._proc.returncode is None:
            self._proc.kill()  # started by a supervisor cancelled while it connected
            await self._proc.wait()
        for child in {proc, self._proc} - {None}:
            assert child is not None
            _kill_session(child.pid)
        sweeper, self._orphan_sweeper = self._orphan_sweeper, None
        if sweeper is not None:
            sweeper.cancel()
            await asyncio.gather(sweeper, return_exceptions=True)
            await self._kill_adopted(FINAL_SWEEP)
        self._disconnect()

    # --- targets -------------------------------------------------------------

    def update(self, targets: Mapping[Hashable, CheckTarget]) -> None:
        """Replace the set of checked targets (the rules of `HealthEngine.update`).

        Keys removed here lose their state; the rest is the checker's business.
        Before `start` (or while the child is being replaced) it only records
        the targets; they are sent when the child starts.  After a `start`
        that had no targets, the first targets start the child (in a task:
        this method does not wait for it).
        """
        self._targets = dict(targets)
        for key in [k for k in self._ids if k not in self._targets]:
            del self._keys[self._ids.pop(key)]
            self._known.pop(key, None)
        for key in self._targets:
            if key not in self._ids:
                self._ids[key] = self._next_id
                self._keys[self._next_id] = key
                self._next_id += 1
        if self._running and self._supervisor is None and self._targets:
            self._supervisor = asyncio.get_running_loop().create_task(self._supervise(None), name="checker process")
        self._send_targets()

    def targets(self) -> dict[Hashable, CheckTarget]:
        """The targets currently checked, keyed by target key."""
        return dict(self._targets)

    async def snapshot(self, timeout: float = 2.0) -> dict[Hashable, HealthStatus]:
        """Every target's health, keyed by target key, as the checker has it now.

        While the checker is not ready (still starting: importing takes seconds
        on a slow machine, or being replaced) or when it does not answer within
        ``timeout`` seconds (stuck), the answer is built at once from the
        transitions seen so far (`_fallback_snapshot`): state and ``since`` right, counters 0.
        """
        writer = self._writer
        if not self._targets:
            return {}
        if writer is not None and self._ready:
            self._request_id += 1
            request_id = self._request_id
            future: asyncio.Future[dict[Hashable, HealthStatus]] = asyncio.get_running_loop().create_future()
            self._requests[request_id] = (future, {})
            try:
                writer.write(encode_frame(("snapshot", request_id)))
                return await asyncio.wait_for(future, timeout)
            except (TimeoutError, OSError, RuntimeError, ConnectionError):
                pass
            finally:
                self._requests.pop(request_id, None)
        return self._fallback_snapshot()

    def _fallback_snapshot(self) -> dict[Hashable, HealthStatus]:
        """Every target's health as the transitions seen so far tell it, keyed by target key, for
        when the checker cannot answer: ``state``, ``since`` (monotonic seconds, when the
        transition arrived here) and ``last_result`` (the result that caused it) of the latest
        transition, ``"unknown"`` since now without one.  Everything the checker counts is 0:
        ``successes``, ``failures``, ``checks``, ``passed_checks``, ``failed_checks``,
        ``timed_out_checks``, ``duration_sum`` and every count of ``duration_buckets`` (still one
        per bound of `checks.engine.CHECK_DURATION_BUCKETS`).  A reader of the cumulative
        counters tells these zeros from a counter reset by ``checks == 0`` with a ``last_result``.
        """
        now = time.monotonic()
        return {key: self._known.get(key, HealthStatus(state="unknown", since=now)) for key in self._targets}

    # --- child ---------------------------------------------------------------

    async def _spawn(self) -> asyncio.StreamReader:
        """Start one child, connect to it, send it the targets; return the reader of its frames.

        The interpreter runs isolated (``-I``: no current directory, script
        directory, ``PYTHON*`` variables or user site-packages on the module
        path) from ``/``, and imports `checks` from the directory this process
        imported it from (`_BOOTSTRAP`): a ``checks`` package in the working
        directory is never imported.  The child leads a session of its own,
        which the processes of its external checks share (see `_kill_session`).
        """
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        root = str(Path(__file__).resolve().parent.parent)
        level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
        self._spawning = True  # forked before its pid is known: no orphan sweep meanwhile
        try:
            self._proc = await asyncio.create_subprocess_exec(
                self._python,
                "-I",
                "-c",
                _BOOTSTRAP,
                root,
                str(theirs.fileno()),
                str(os.getpid()),
                str(level),
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                cwd="/",
                start_new_session=True,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            self._spawning = False
            theirs.close()
        reader, self._writer = await asyncio.open_connection(sock=ours, limit=2**20)
        log.info("checker process %d started", self._proc.pid)
        self._send_targets()
        return reader

    def _send_targets(self) -> None:
        """Send the targets to the child, encoded off the event loop.

        Copying and pickling every target takes seconds for the largest table a
        configuration may hold, longer than the HA deadtime: it runs in a worker
        thread, and only the write is done on the loop. Frames go out in the order
        of the updates; a frame overtaken by a newer update is not sent (each
        frame holds the whole set).
        """
        if self._writer is None:
            return
        self._send_seq += 1
        seq = self._send_seq
        targets, ids = dict(self._targets), dict(self._ids)
        task = asyncio.get_running_loop().create_task(self._send_encoded(seq, targets, ids), name="checker targets")
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _send_encoded(self, seq: int, targets: dict[Hashable, CheckTarget], ids: dict[Hashable, int]) -> None:
        frame = await asyncio.to_thread(_encode_targets, targets, ids)
        writer = self._writer
        if seq != self._send_seq or writer is None:
            return
        try:
            writer.write(frame)
        except (OSError, RuntimeError) as exc:
            log.warning("checker process: cannot send the targets: %s", exc)

    def _disconnect(self) -> None:
        self._ready = False
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        for future, _ in self._requests.values():
            if not future.done():
                future.set_exception(ConnectionError("checker process gone"))
        self._requests.clear()

    async def _supervise(self, reader: asyncio.StreamReader | None) -> None:
        """Read the child's frames; when it dies while running, start another one.

        The child's death is seen by its exit (the process's return code), not
        only by end of file on the socket, which a process the child left
        behind could hold open.  ``reader`` is ``None`` when no child runs yet:
        one is started first.
        """
        if reader is None:
            reader = await self._spawn_until_started()
        while True:
            proc = self._proc
            assert proc is not None
            status = await self._read_until_exit(reader, proc)
            self._disconnect()
            if self._running:
                log.error(
                    "checker process %s exited (status %s); starting another in %g s",
                    proc.pid,
                    status,
                    self._restart_delay,
                )
            _kill_session(proc.pid)
            if self._orphan_sweeper is not None:
                await self._kill_adopted(FINAL_SWEEP)
            if not self._running:
                return
            await asyncio.sleep(self._restart_delay)
            reader = await self._spawn_until_started()
            self.restarts += 1

    async def _read_until_exit(self, reader: asyncio.StreamReader, proc: asyncio.subprocess.Process) -> int:
        """Dispatch the child's frames until it exits; return its return code.

        After end of file (or a bad frame) the child gets `EXIT_GRACE` seconds to
        exit, then SIGKILL.
        """
        frames = asyncio.ensure_future(self._read(reader))
        exited = asyncio.ensure_future(proc.wait())
        watchdog = asyncio.ensure_future(self._watch(proc))
        try:
            await asyncio.wait((frames, exited, watchdog), return_when=asyncio.FIRST_COMPLETED)
            if not exited.done():
                try:
                    await asyncio.wait_for(asyncio.shield(exited), EXIT_GRACE)
                except TimeoutError:
                    log.warning("checker process %d closed its socket but did not exit; killing it", proc.pid)
                    proc.kill()
            return await exited
        finally:
            for task in (frames, exited, watchdog):
                task.cancel()
            await asyncio.gather(frames, exited, watchdog, return_exceptions=True)

    @contextlib.contextmanager
    def hold_sweep(self) -> Iterator[None]:
        """While inside, the orphan sweep (`adopt_orphans`) kills nothing: for another part of
        the director starting a child of its own (`director.hooks` starts its runner through a
        short-lived ``setsid --fork``, which the sweep would otherwise take for an orphan)."""
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1
            if not self._held and self._subreaper_pending:
                self._subreaper_pending = False
                become_subreaper()

    def _own_children(self) -> set[int]:
        own = set() if self._proc is None else {self._proc.pid}
        if self.spare_children is not None:
            own |= set(self.spare_children())
        return own

    async def _kill_adopted(self, limit: float) -> None:
        """Kill what this process adopted (`adopt_orphans`) until none is left or ``limit``
        seconds have passed; log how many."""
        deadline = time.monotonic() + limit
        count = 0
        while not self._spawning and not self._held:
            killed = reap_orphans(self._own_children())
            count += killed
            if not killed or time.monotonic() >= deadline:
                break
            await asyncio.sleep(ORPHAN_CHASE)
        if count:
            log.warning("killed %d process(es) left behind by external checks outside the checker's session", count)

    async def _sweep_orphans(self) -> None:
        """Every `ORPHAN_SWEEP` seconds, kill what this process adopted (`adopt_orphans`)."""
        while True:
            await asyncio.sleep(ORPHAN_SWEEP)
            if not self._spawning and not self._held:
                await self._kill_adopted(FINAL_SWEEP)

    async def _watch(self, proc: asyncio.subprocess.Process) -> None:
        """Ping the child every third of ``hang_limit``; once it has said ``ready`` and then sent
        nothing for ``hang_limit`` seconds, or when it has not said ``ready`` within
        ``start_limit`` seconds, log it, kill it and return (its exit follows)."""
        started = self._last_frame = time.monotonic()
        while True:
            await asyncio.sleep(min(self._hang_limit, self._start_limit) / 3)
            silent = time.monotonic() - self._last_frame
            if not self._ready and time.monotonic() - started > self._start_limit:
                log.error(
                    "checker process %d has not started its checks within %.0f s (stopped or hung); killing it",
                    proc.pid,
                    self._start_limit,
                )
                proc.kill()
                return
            if self._ready and silent > self._hang_limit:
                log.error(
                    "checker process %d has not answered for %.0f s (stopped or hung); killing it",
                    proc.pid,
                    silent,
                )
                proc.kill()
                return
            writer = self._writer
            if self._ready and writer is not None and not writer.is_closing():
                try:
                    writer.write(encode_frame(("ping",)))
                except (OSError, RuntimeError):
                    pass

    async def _spawn_until_started(self) -> asyncio.StreamReader:
        """`_spawn`, again every ``restart_delay`` seconds while it raises OSError."""
        while True:
            try:
                return await self._spawn()
            except OSError as exc:
                log.error("checker process cannot start: %s; retrying in %g s", exc, self._restart_delay)
                await asyncio.sleep(self._restart_delay)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        """Dispatch the child's frames until end of file or a bad frame, letting the loop run
        after each (frames already buffered are read without a wait: a burst of transitions or
        the parts of a large snapshot would otherwise be handled in one go)."""
        while True:
            try:
                message = await read_frame(reader)
            except (asyncio.IncompleteReadError, ConnectionError, OSError):
                return
            except FrameError as exc:
                log.error("checker process sent a bad frame (%s); dropping it", exc)
                if self._proc is not None and self._proc.returncode is None:
                    self._proc.kill()
                return
            self._last_frame = time.monotonic()
            kind = message[0]
            if kind == "transition":
                self._transition(message[1])
            elif kind == "ready":
                self._ready = True
            elif kind == "snapshot":
                self._snapshot_part(message[1], message[2], message[3])
            elif kind == "load":
                report_load(self._on_load, message[1])
            await asyncio.sleep(0)

    def _snapshot_part(self, request_id: int, part: dict[int, HealthStatus], more: bool) -> None:
        """One frame of the answer to snapshot request ``request_id`` (ignored when that request
        has timed out): ``part`` maps target ids to statuses; ``more`` is false on the last."""
        request = self._requests.get(request_id)
        if request is None or request[0].done():
            return
        future, collected = request
        keys = self._keys
        collected.update((keys[i], status) for i, status in part.items() if i in keys)
        if not more:
            future.set_result(collected)

    def _transition(self, t: Transition) -> None:
        key = self._keys.get(t.key)
        if key is None:  # a target removed meanwhile
            return
        t = dataclasses.replace(t, key=key)
        if self._log_transitions:
            log.info("%s %s: %s", t.name, t.new, t.reason)
        self._known[key] = HealthStatus(state=t.new, since=time.monotonic(), last_result=t.result, weight=t.weight)
        try:
            self._on_transition(t)
        except Exception:  # noqa: BLE001 - a faulty listener must not stop the checker
            log.exception("transition callback failed for %s", t.name)


def _kill_session(sid: int) -> int:
    """SIGKILL every process left in session ``sid``: a dead checker child's external checks
    and what they started (the child leads that session; see `CheckerProcess._spawn`).

    Reads ``/proc/PID/stat`` (proc(5)); never raises.  Returns the number of processes signalled.
    """
    count = 0
    try:
        entries = os.listdir("/proc")
    except OSError:
        return 0
    for entry in entries:
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read(4096).rsplit(b")", 1)[1].split()
            if int(fields[3]) != sid:  # state, ppid, pgrp, session
                continue
            os.kill(int(entry), signal.SIGKILL)
            count += 1
        except (OSError, IndexError, ValueError):
            continue
    if count:
        log.warning("killed %d process(es) left behind by checker process %d", count, sid)
    return count


# --- the child ---------------------------------------------------------------


def _ignore(signum: int, frame: object) -> None:
    """Signal handler that does nothing (SIGINT/SIGTERM in the checker child)."""


def _die_with_parent(parent: int) -> None:
    """SIGKILL this process when its parent dies (``prctl(PR_SET_PDEATHSIG)``, Linux)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1 (linux/prctl.h)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the prctl
        os._exit(0)


async def _sweep_orphans(interval: float) -> None:
    """Every ``interval`` seconds, kill what external checks left behind (`reap_orphans`); while
    a sweep finds some, sweep again after `ORPHAN_CHASE` seconds."""
    while True:
        await asyncio.sleep(interval)
        while reap_orphans():
            await asyncio.sleep(ORPHAN_CHASE)


async def _final_sweep(limit: float) -> None:
    """At exit: `reap_orphans` until none is left or ``limit`` seconds have passed."""
    deadline = time.monotonic() + limit
    while reap_orphans() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


async def _serve(sock: socket.socket, subreaper: bool = False) -> None:
    """The checker child's loop: run an engine, answer the director's frames until stop or EOF.

    With ``subreaper`` (this process is a child subreaper), processes left
    behind by external checks are killed every `ORPHAN_SWEEP` seconds and at exit.
    """
    reader, writer = await asyncio.open_connection(sock=sock, limit=2**20)

    def send(message: tuple) -> None:
        if not writer.is_closing():
            writer.write(encode_frame(message))

    engine = HealthEngine(
        lambda t: send(("transition", t)), log_transitions=False, on_load=lambda load: send(("load", load))
    )
    await engine.start()
    sweeper = asyncio.ensure_future(_sweep_orphans(ORPHAN_SWEEP)) if subreaper else None
    send(("ready",))
    try:
        while True:
            try:
                message = await read_frame(reader)
            except (asyncio.IncompleteReadError, ConnectionError, OSError):
                return  # the director is gone
            kind = message[0]
            if kind == "update":
                engine.update(message[1])
            elif kind == "snapshot":
                items = list(engine.status().items())
                for start in range(0, len(items), SNAPSHOT_CHUNK):
                    more = start + SNAPSHOT_CHUNK < len(items)
                    send(("snapshot", message[1], dict(items[start : start + SNAPSHOT_CHUNK]), more))
                if not items:
                    send(("snapshot", message[1], {}, False))
            elif kind == "ping":
                send(("pong",))
            elif kind == "stop":
                return
    finally:
        await engine.stop()
        if sweeper is not None:
            sweeper.cancel()
            await asyncio.gather(sweeper, return_exceptions=True)
            await _final_sweep(FINAL_SWEEP)
        writer.close()


def child_log_handler() -> logging.Handler:
    """The checker child's log handler: to stderr (the director's), in the director's text
    format (`checks.logs.text_formatter`), with journald's priorities when stderr is the journal."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(text_formatter(journal_stream(sys.stderr)))
    return handler


def child_main(argv: list[str]) -> int:
    """Entry point of the checker child, ``FD PARENT_PID LOG_LEVEL`` (`_BOOTSTRAP`, or
    ``python -m checks.process``): serve the engine on the inherited socket ``FD`` (see the
    module docstring).  The child is a subreaper of what its external checks leave behind
    (`checks.protocols.external.reap_orphans`).  Returns the exit status."""
    fd, parent, level = int(argv[0]), int(argv[1]), argv[2] if len(argv) > 2 else "INFO"
    _die_with_parent(parent)
    # ignored by a handler that does nothing, not SIG_IGN: an ignored disposition would be
    # inherited by the commands of external checks across exec, a handler is not
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _ignore)
    # the open-file limit comes from the director, which raised it before starting us
    logging.basicConfig(level=getattr(logging, level, logging.INFO), handlers=[child_log_handler()])
    # inherited on purpose, but no command of an external check may inherit it in turn
    os.set_inheritable(fd, False)
    sock = socket.socket(fileno=fd)
    subreaper = become_subreaper()
    gc.set_threshold(CHILD_GC_THRESHOLD, *gc.get_threshold()[1:])
    if os.environ.get(LOOP_ENV, "uvloop") != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            uvloop.run(_serve(sock, subreaper))
            return 0
    asyncio.run(_serve(sock, subreaper))
    return 0


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
