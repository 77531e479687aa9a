"""The BIRD directord runs: its configuration file, its process, its restarts.

`BirdSpeaker` writes the configuration text it is given (rendered by `ha.bgp.bird`) to
``RUN_DIR/bird.conf``, has BIRD check it (``bird -p -c FILE``: parse only), starts
``bird -f -c RUN_DIR/bird.conf -s RUN_DIR/bird.ctl -P RUN_DIR/bird.pid`` as its child, waits
until the control socket answers, and then supervises it: a BIRD that exits unexpectedly is
reported and started again after a delay that doubles from 1 s up to 30 s (back to 1 s once a
BIRD stayed up 60 s).  A new configuration is checked first and then loaded with BIRD's
``configure`` (no restart: sessions whose settings did not change stay up).

``RUN_DIR/bird.conf`` is always a configuration BIRD accepted: a candidate is written to
``RUN_DIR/bird.conf.new``, checked, and only then renamed over it, so that a restart after a
refused configuration still finds the last good one.

The child is asked to die with directord: it is started through ``setpriv --pdeathsig TERM``
(util-linux), which sets ``PR_SET_PDEATHSIG`` (``prctl(2)``) and execs BIRD.  That avoids
running Python code between ``fork`` and ``exec`` (``preexec_fn``), which is unsafe in a
process with threads (a lock held by another thread at the fork stays locked in the child).
``prctl(2)``: the signal is sent when the *thread* that created the child exits, so the
speaker is to be started from the event loop of the main thread.  The child is in a session
of its own (a terminal's Ctrl-C does not reach it; `BirdSpeaker.stop` stops it).

Nothing here blocks the event loop: files are written in a worker thread, processes are
asyncio subprocesses, and every wait is bounded.  Times are in seconds.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ha.bgp.birdctl import BirdError, ProtocolState, bird_command, bird_configure, parse_protocols
from ha.durable import make_directories, move_file_into_place, remove_file, write_file_atomic

__all__ = [
    "CONFIG_NAME",
    "PID_NAME",
    "SETPRIV",
    "SOCKET_NAME",
    "BirdConfigError",
    "BirdSpeaker",
    "SpeakerError",
    "SpeakerEvent",
]

log = logging.getLogger("directord.bgp")

CONFIG_NAME = "bird.conf"
CANDIDATE_NAME = "bird.conf.new"
SOCKET_NAME = "bird.ctl"
PID_NAME = "bird.pid"
#: util-linux's ``setpriv``; ``--pdeathsig TERM`` sets PR_SET_PDEATHSIG, then it execs the command.
SETPRIV = "/usr/bin/setpriv"

#: Longest configuration accepted, in bytes (the renderer's output for MAX_NEIGHBORS and MAX_VIPS
#: is far smaller).
MAX_CONFIG_BYTES = 16 << 20
#: Lines and characters of BIRD's output kept for an error message.
_MESSAGE_LINES = 10
_MESSAGE_LINE_CHARS = 300
#: BIRD's output copied into the log: at most this many lines per window of this many seconds.
_LOG_LINES = 50
_LOG_WINDOW = 10.0
_LOG_LINE_CHARS = 1000
#: Bytes of a ``bird -p`` run's output read (the rest is drained and dropped).
_CHECK_OUTPUT_BYTES = 64 << 10


class SpeakerError(Exception):
    """BIRD could not be started, or the run directory is not usable.  The message says why,
    with BIRD's last lines of output when it exited."""


class BirdConfigError(SpeakerError):
    """BIRD refused a configuration (``bird -p`` failed, or ``configure`` answered an error).

    Attributes:
        lines: BIRD's message, at most 10 lines of at most 300 characters, e.g.
            ``["bird: /run/directord/bgp/bird.conf.new:7:57 syntax error, unexpected ';'"]``.
    """

    def __init__(self, message: str, lines: Sequence[str]) -> None:
        self.lines = list(lines)
        super().__init__(message + (": " + " | ".join(self.lines) if self.lines else ""))


@dataclass(frozen=True)
class SpeakerEvent:
    """Something that happened to the BIRD the speaker runs.

    ``kind`` is one of ``"started"`` (BIRD answers on its socket; detail: pid), ``"exited"``
    (BIRD exited unexpectedly; detail: status and its last lines), ``"restart_failed"`` (a
    restart did not come up; detail: why, and the next delay), ``"restarted"`` (detail: pid),
    ``"reconfigured"`` (detail: BIRD's answer), ``"stopped"``, ``"supervision_failed"`` (a bug:
    BIRD is no longer restarted)."""

    kind: str
    detail: str


def _clip(lines: Sequence[str]) -> list[str]:
    return [line[:_MESSAGE_LINE_CHARS] for line in list(lines)[:_MESSAGE_LINES]]


def _status(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


class BirdSpeaker:
    """Runs and supervises one BIRD.

    Args:
        run_dir: directory of ``bird.conf``, ``bird.ctl`` and ``bird.pid``; created mode 0700
            (a symbolic link, or something that is not a directory, is refused).
        config: the configuration text (BIRD 2 syntax).
        binary: the ``bird`` executable.
        command_prefix: words put before the BIRD command lines, e.g.
            ``("ip", "netns", "exec", "NS")`` to run BIRD in a network namespace.
        on_event: called with each `SpeakerEvent` (exceptions it raises are logged and dropped).
            Each event is also logged (``BIRD KIND: DETAIL``, logger ``directord.bgp``): at
            INFO without ``on_event``, at DEBUG with it (the sink is then the one to report it).
        ready_timeout: seconds a started BIRD has to answer on its control socket.
        check_timeout: seconds ``bird -p`` may run.
        stop_timeout: seconds between SIGTERM and SIGKILL at a stop.
        backoff_initial, backoff_max, backoff_reset: restart delays: the first, the largest
            (each failure doubles it), and the uptime after which it is back to the first.
        command_timeout: seconds for one command on the control socket.
        pdeathsig: start BIRD through `SETPRIV` so that it gets SIGTERM when directord dies
            (without it, with a warning, when `SETPRIV` is missing).
        spawn_guard: a context manager factory held while a child is started and until its
            pid is known (`child_pid`), and while ``bird -p`` runs: ``directord run`` passes
            the checker's ``hold_sweep``, so that its sweep of adopted orphans (it is a child
            subreaper) does not take BIRD for one.
    """

    def __init__(
        self,
        run_dir: str,
        config: str,
        *,
        binary: str = "/usr/sbin/bird",
        command_prefix: Sequence[str] = (),
        on_event: Callable[[SpeakerEvent], None] | None = None,
        ready_timeout: float = 5.0,
        check_timeout: float = 10.0,
        stop_timeout: float = 3.0,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
        backoff_reset: float = 60.0,
        command_timeout: float = 2.0,
        pdeathsig: bool = True,
        spawn_guard: Callable[[], contextlib.AbstractContextManager[object]] = contextlib.nullcontext,
    ) -> None:
        self.run_dir = os.path.abspath(run_dir)
        self.config_path = os.path.join(self.run_dir, CONFIG_NAME)
        self.candidate_path = os.path.join(self.run_dir, CANDIDATE_NAME)
        self.socket_path = os.path.join(self.run_dir, SOCKET_NAME)
        self.pid_path = os.path.join(self.run_dir, PID_NAME)
        self.binary = binary
        self.command_prefix = tuple(command_prefix)
        self.on_event = on_event
        self.ready_timeout = ready_timeout
        self.check_timeout = check_timeout
        self.stop_timeout = stop_timeout
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.backoff_reset = backoff_reset
        self.command_timeout = command_timeout
        self.spawn_guard = spawn_guard
        self._setpriv: str | None = None
        if pdeathsig:
            if os.access(SETPRIV, os.X_OK):
                self._setpriv = SETPRIV
            else:
                log.warning("%s is missing: BIRD will not be stopped if directord dies (package util-linux)", SETPRIV)
        self._config = config
        self._proc: asyncio.subprocess.Process | None = None
        self._output_task: asyncio.Task[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._stopping = False
        self._tail: collections.deque[str] = collections.deque(maxlen=_MESSAGE_LINES)
        self.restarts = 0

    # --- state ------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while a BIRD started by this speaker is alive (it may not answer yet)."""
        return self._proc is not None and self._proc.returncode is None

    @property
    def child_pid(self) -> int | None:
        """The pid of the last BIRD started, running or exited and not yet replaced (a child of
        this process until the next start), or None."""
        return self._proc.pid if self._proc is not None else None

    @property
    def pid(self) -> int | None:
        """The pid of the running BIRD, None when none runs."""
        return self._proc.pid if self.running and self._proc is not None else None

    def _emit(self, kind: str, detail: str) -> None:
        if self.on_event is None:
            log.info("BIRD %s: %s", kind, detail)
            return
        log.debug("BIRD %s: %s", kind, detail)  # the sink reports it (directord's event log)
        try:
            self.on_event(SpeakerEvent(kind, detail))
        except Exception:
            log.exception("the BGP speaker's event callback failed on BIRD %s: %s", kind, detail)

    # --- files --------------------------------------------------------------------------------

    def _prepare_dir(self) -> None:
        try:
            st = os.lstat(self.run_dir)
        except FileNotFoundError:
            make_directories(self.run_dir, 0o700)
            st = os.lstat(self.run_dir)
        except OSError as err:
            raise SpeakerError(f"run directory {self.run_dir}: {err.strerror}") from None
        if stat.S_ISLNK(st.st_mode):
            raise SpeakerError(f"run directory {self.run_dir} is a symbolic link; refusing it")
        if not stat.S_ISDIR(st.st_mode):
            raise SpeakerError(f"run directory {self.run_dir} is not a directory")
        if st.st_uid != os.geteuid():
            raise SpeakerError(f"run directory {self.run_dir} is owned by uid {st.st_uid}, not {os.geteuid()}")
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.chmod(self.run_dir, 0o700, follow_symlinks=False)

    def _write_candidate(self, data: bytes) -> None:
        self._prepare_dir()
        write_file_atomic(self.candidate_path, data, 0o600)

    def _discard_candidate(self) -> None:
        try:
            remove_file(self.candidate_path)
        except OSError as err:
            log.warning("cannot remove %s: %s", self.candidate_path, err)

    def _install_candidate(self) -> None:
        move_file_into_place(self.candidate_path, self.config_path)

    def _remove_runtime_files(self) -> None:
        for path in (self.pid_path, self.socket_path):
            try:
                remove_file(path)
            except OSError as err:
                log.warning("cannot remove %s: %s", path, err)

    @staticmethod
    def _encode(config: str) -> bytes:
        if not isinstance(config, str):
            raise TypeError(f"config must be str, not {type(config).__name__}")
        data = config.encode("utf-8")
        if len(data) > MAX_CONFIG_BYTES:
            raise SpeakerError(f"configuration is {len(data)} bytes, more than {MAX_CONFIG_BYTES}")
        if b"\0" in data:
            raise SpeakerError("configuration contains a NUL character")
        return data

    async def _stage(self, config: str) -> None:
        """Write ``config`` as the candidate, have BIRD check it, and install it."""
        data = self._encode(config)
        try:
            await asyncio.to_thread(self._write_candidate, data)
        except OSError as err:
            raise SpeakerError(f"cannot write {self.candidate_path}: {err}") from None
        try:
            await self._check(self.candidate_path)
        except SpeakerError:
            await asyncio.to_thread(self._discard_candidate)
            raise
        try:
            await asyncio.to_thread(self._install_candidate)
        except OSError as err:
            raise SpeakerError(f"cannot install {self.config_path}: {err}") from None

    # --- processes ----------------------------------------------------------------------------

    def _argv(self, *bird_args: str) -> list[str]:
        prefix = [self._setpriv, "--pdeathsig", "TERM", "--"] if self._setpriv else []
        return [*prefix, *self.command_prefix, self.binary, *bird_args]

    async def _exec(self, *bird_args: str) -> asyncio.subprocess.Process:
        """Start ``bird BIRD_ARGS`` (through `SETPRIV` and ``command_prefix``, `_argv`) in a
        session of its own, stdin from /dev/null, stdout and stderr on one pipe (``stdout``).

        Raises:
            SpeakerError: it could not be run (the executable is missing, ...).
        """
        try:
            return await asyncio.create_subprocess_exec(
                *self._argv(*bird_args),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as err:
            raise SpeakerError(f"cannot run {self.binary}: {err}") from None

    async def _check(self, path: str) -> None:
        """``bird -p -c PATH``: BIRD parses the file and exits (0 when it is valid); run inside
        ``spawn_guard``.

        Raises:
            BirdConfigError, SpeakerError: as `_check_unguarded`.
        """
        with self.spawn_guard():
            await self._check_unguarded(path)

    async def _check_unguarded(self, path: str) -> None:
        """``bird -p -c PATH``: BIRD parses the file and exits (0 when it is valid).

        Raises:
            BirdConfigError: BIRD refused it (its message in ``lines``), or did not finish in
                ``check_timeout`` seconds.
            SpeakerError: BIRD could not be run.
        """
        proc = await self._exec("-p", "-c", path)
        assert proc.stdout is not None
        output = bytearray()
        try:
            async with asyncio.timeout(self.check_timeout):
                while chunk := await proc.stdout.read(65536):
                    if len(output) < _CHECK_OUTPUT_BYTES:
                        output += chunk[: _CHECK_OUTPUT_BYTES - len(output)]
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise BirdConfigError(f"BIRD did not check {path} within {self.check_timeout:g} s", []) from None
        if proc.returncode != 0:
            lines = [line for line in output.decode("utf-8", "replace").splitlines() if line.strip()]
            raise BirdConfigError(f"BIRD refused the configuration ({_status(proc.returncode or 0)})", _clip(lines))

    async def _answers(self) -> bool:
        try:
            await bird_command(self.socket_path, "show status", timeout=min(1.0, self.command_timeout))
        except BirdError:
            return False
        return True

    async def _read_output(self, stream: asyncio.StreamReader) -> None:
        """Copy BIRD's output into the log, line by line, at most _LOG_LINES per _LOG_WINDOW s."""
        buf = b""
        window_start, in_window, dropped = time.monotonic(), 0, 0
        while True:
            chunk = await stream.read(65536)
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            if len(buf) > _LOG_LINE_CHARS:  # a line without end: cut it
                lines.append(buf)
                buf = b""
            for raw in lines:
                line = raw[:_LOG_LINE_CHARS].decode("utf-8", "replace").rstrip()
                if not line:
                    continue
                self._tail.append(line)
                now = time.monotonic()
                if now - window_start >= _LOG_WINDOW:
                    if dropped:
                        log.warning("BIRD: %d lines of output not logged", dropped)
                    window_start, in_window, dropped = now, 0, 0
                if in_window < _LOG_LINES:
                    in_window += 1
                    log.info("BIRD: %s", line)
                else:
                    dropped += 1
        if dropped:
            log.warning("BIRD: %d lines of output not logged", dropped)

    async def _spawn(self) -> None:
        """Start BIRD and wait until its control socket answers (``ready_timeout``).

        Raises:
            SpeakerError: another process answers on the socket, BIRD could not be run, it
                exited, or it did not answer in time (it is then killed).
        """
        if await self._answers():
            raise SpeakerError(f"a BIRD already answers on {self.socket_path}; not starting another")
        await asyncio.to_thread(self._remove_runtime_files)
        self._tail.clear()
        with self.spawn_guard():  # until the child's pid is known (`child_pid`)
            proc = await self._exec("-f", "-c", self.config_path, "-s", self.socket_path, "-P", self.pid_path)
            self._proc = proc
        assert proc.stdout is not None
        self._output_task = asyncio.create_task(self._read_output(proc.stdout), name="bird-output")
        deadline = time.monotonic() + self.ready_timeout
        while True:
            if proc.returncode is not None:
                await self._drain_output()
                raise SpeakerError(f"BIRD exited at start ({_status(proc.returncode)}): " + " | ".join(self._tail))
            if await self._answers():
                return
            if time.monotonic() >= deadline:
                await self._terminate(proc)
                raise SpeakerError(f"BIRD did not answer on {self.socket_path} within {self.ready_timeout:g} s")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05):
                    await proc.wait()

    async def _drain_output(self) -> None:
        task = self._output_task
        if task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                async with asyncio.timeout(1.0):
                    await asyncio.shield(task)

    async def _terminate(self, proc: asyncio.subprocess.Process) -> None:
        """SIGTERM, up to ``stop_timeout`` seconds, SIGKILL; reaps the process."""
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(self.stop_timeout):
                    await proc.wait()
            except TimeoutError:
                log.warning("BIRD (pid %d) still running %g s after SIGTERM; killing it", proc.pid, self.stop_timeout)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        await self._drain_output()
        if self._output_task is not None and not self._output_task.done():
            self._output_task.cancel()

    async def _supervise(self) -> None:
        try:
            await self._supervise_loop()
        except Exception as err:  # a bug here must not end the supervision silently
            log.exception("the supervision of BIRD failed")
            self._emit("supervision_failed", repr(err)[:500])

    async def _supervise_loop(self) -> None:
        delay = self.backoff_initial
        while True:
            proc = self._proc
            assert proc is not None
            started = time.monotonic()
            await proc.wait()
            if self._stopping:
                return
            await self._drain_output()
            uptime = time.monotonic() - started
            if uptime >= self.backoff_reset:
                delay = self.backoff_initial
            tail = " | ".join(_clip(self._tail))
            status = f"{_status(proc.returncode or 0)} after {uptime:.1f} s"
            self._emit("exited", f"{status}: {tail}" if tail else status)
            while True:
                await asyncio.sleep(delay)
                async with self._lock:
                    if self._stopping:
                        return
                    try:
                        await self._spawn()
                    except (SpeakerError, OSError) as err:
                        delay = min(delay * 2, self.backoff_max)
                        self._emit("restart_failed", f"{err}; next attempt in {delay:g} s")
                        continue
                self.restarts += 1
                self._emit("restarted", f"pid {self.pid}")
                delay = min(delay * 2, self.backoff_max)
                break

    # --- public -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Write and check the configuration, start BIRD, wait until it answers, supervise it.

        Raises:
            BirdConfigError: BIRD refused the configuration (nothing was started).
            SpeakerError: the run directory is not usable, or BIRD did not come up.
        """
        async with self._lock:
            if self.running:
                raise SpeakerError("BIRD is already running")
            self._stopping = False
            await self._stage(self._config)
            await self._spawn()
            assert self._proc is not None
            self._emit("started", f"pid {self._proc.pid}")
            self._supervisor = asyncio.create_task(self._supervise(), name="bird-supervisor")

    async def reconfigure(self, config: str) -> str:
        """Write and check ``config``, then have the running BIRD load it (``configure``).

        With no BIRD running (between restarts), the file is installed and the next start uses
        it.  Returns BIRD's answer (e.g. ``"Reconfigured"``), or ``"not running"``.

        Raises:
            BirdConfigError: BIRD refused the configuration: the running BIRD and ``bird.conf``
                are left as they were.
            SpeakerError: the file could not be written, or BIRD could not be asked.
        """
        async with self._lock:
            await self._stage(config)
            self._config = config
            if not self.running:
                return "not running"
            try:
                result = await bird_configure(self.socket_path, timeout=self.command_timeout)
            except BirdError as err:
                raise SpeakerError(f"cannot ask BIRD to reload its configuration: {err}") from None
            if not result.ok:
                raise BirdConfigError("BIRD refused the configuration", _clip([f"{result.code:04d} {result.message}"]))
            self._emit("reconfigured", result.message)
            return result.message

    async def stop(self) -> None:
        """Stop BIRD (SIGTERM; SIGKILL after ``stop_timeout`` s) and remove its pid file and
        socket.  Idempotent; BIRD's graceful stop sends each neighbour a Cease NOTIFICATION."""
        self._stopping = True
        async with self._lock:
            supervisor, self._supervisor = self._supervisor, None
            if supervisor is not None:
                supervisor.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await supervisor
            proc = self._proc
            if proc is not None:
                await self._terminate(proc)
                self._proc = None
            await asyncio.to_thread(self._remove_runtime_files)
            if proc is not None:
                self._emit("stopped", _status(proc.returncode or 0))

    async def sessions(self) -> list[ProtocolState]:
        """The BGP protocols of the running BIRD (``show protocols``), bounded by
        ``command_timeout``.  Never raises: when BIRD is down or does not answer, one entry
        ``ProtocolState(name="bird", proto="BIRD", table="---", state="down", since="",
        info=WHY)`` is returned instead."""
        if not self.running:
            return [_down("BIRD is not running")]
        try:
            reply = await bird_command(self.socket_path, "show protocols", timeout=self.command_timeout)
            return [p for p in parse_protocols(reply) if p.proto == "BGP"]
        except BirdError as err:
            return [_down(str(err))]


def _down(why: str) -> ProtocolState:
    return ProtocolState(name="bird", proto="BIRD", table="---", state="down", since="", info=why[:500])
