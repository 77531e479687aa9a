"""External check: run a command; exit status 0 means the real server is up.

The command is ``spec.command`` followed by four arguments, VIP, virtual port,
RIP and checked port (ldirectord's ``checktype = external`` convention; an
empty string stands for the VIP of a fwmark service).  It runs without a shell,
in a process group of its own, with stdin and stdout on ``/dev/null``, stderr
on a pipe and no other file descriptor (``close_fds``: nothing of the checker,
such as its socket to the director, reaches the command).

The verdict is the exit status of the command itself, seen through a pidfd
(Linux 5.3, ``pidfd_open(2)``) on the event loop: the same on asyncio and
uvloop, and independent of background processes the command leaves behind
holding its stderr open (the check does not wait for end of file).  Of stderr,
at most `MAX_OUTPUT` bytes are read and the last `STDERR_TAIL` bytes kept; the
last line goes into the reason.  A command that writes more blocks on the full
pipe and ends at the time limit.

When the check ends -- the command exited, or the check was cancelled by the
time limit of `checks.base.run_check` or by the engine stopping -- the whole
process group gets ``SIGKILL`` (while the exited command is still an unreaped
zombie, so its process group id cannot be reused), then the command is reaped.
No process of the command that stayed in its group survives its check.

The program must be named by an absolute path and be one no one but root (or
the checker's own user) can replace (`command_problem`, checked before every
run, as sshd's ``StrictModes`` checks the files it trusts): the checker runs it
as root, so a script in a directory others can write would run their code.

A process that leaves the group (``setsid``, ``setpgid``: a daemon) escapes the
group kill.  The checker child (`checks.process`) makes itself a child
subreaper (``PR_SET_CHILD_SUBREAPER``, prctl(2)), so such a process is adopted
by the checker once its parent dies, and kills it with `reap_orphans`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import stat
import subprocess
from collections.abc import Iterable
from typing import TYPE_CHECKING

from checks.trust import replaceable, unsafe_directory

if TYPE_CHECKING:  # pragma: no cover
    from checks.base import CheckTarget

__all__ = [
    "check_external",
    "child_subreaper",
    "command_problem",
    "set_child_subreaper",
    "reap_orphans",
    "become_subreaper",
    "running_commands",
    "STDERR_TAIL",
    "MAX_OUTPUT",
]

#: Bytes of the command's stderr kept (the end of it) to find the last line.
STDERR_TAIL = 4096

#: Most bytes of stderr read from one command (1 MiB); past it the pipe is no longer read.
MAX_OUTPUT = 1024 * 1024

#: Seconds between two looks at the exit of a command where pidfds are missing (Linux < 5.3).
POLL_INTERVAL = 0.05

_READ_CHUNK = 65536

#: Process ids of the commands running now (spawned and not yet reaped by their check).
_running: set[int] = set()


def running_commands() -> frozenset[int]:
    """Process ids of the external check commands running now in this process."""
    return frozenset(_running)


def command_problem(path: str, *, missing_ok: bool = False) -> str | None:
    """Why the checker must not run ``path`` as the program of an external check, or ``None``.

    Refused, each with a reason naming the path: a path that is not absolute (the checker
    runs from ``/`` without a ``PATH`` search); a missing file (unless ``missing_ok``: the
    configuration may name a script deployed later); anything but an executable regular file;
    and, as sshd's ``StrictModes``, a program others could replace: the file, or a directory
    on its path (as written and after symbolic links are resolved), owned by a user other
    than root or this process's effective user, the file writable by group or others, a
    directory writable by group or others without the sticky bit (``/tmp`` is fine; a
    directory of its own under it must be safe too).  A few ``stat`` calls; never raises.
    """
    if not os.path.isabs(path):
        return f"command must be an absolute path, got {path!r}"
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None if missing_ok else f"command not found: {path}"
    except OSError as exc:
        return f"command not usable: {path}: {exc.strerror or exc}"
    if stat.S_ISDIR(info.st_mode):
        return f"command not executable: {path} is a directory"
    if not stat.S_ISREG(info.st_mode) or not info.st_mode & 0o111:
        return f"command not executable: {path}"
    euid = os.geteuid()
    real = os.path.realpath(path)
    problem = replaceable(real, info, euid)
    if problem is not None:
        return f"command not trusted: {problem}"
    try:
        found = unsafe_directory(path, euid)
    except OSError as exc:
        return f"command not usable: {exc.filename}: {exc.strerror or exc}"
    if found is not None:
        return f"command not trusted: {found[2]}"
    return None


def _last_line(data: bytes) -> str:
    for line in reversed(data.decode("utf-8", errors="replace").splitlines()):
        line = line.strip()
        if line:
            return line[:160]
    return ""


def _verdict(status: int, tail: bytes, dynamic: bool = False) -> tuple[bool, str] | tuple[bool, str, int]:
    code = os.waitstatus_to_exitcode(status)
    if code == 0:
        return True, "exit 0"
    if dynamic and 2 <= code <= 255:
        return True, f"exit {code}: weight {code - 2}", code - 2
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        reason = f"killed by {name}"
    else:
        reason = f"exit {code}"
    last = _last_line(tail)
    return False, f"{reason}: {last}" if last else reason


class _Stderr:
    """Reads a command's stderr pipe on the loop: keeps the tail, stops after `MAX_OUTPUT` bytes."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        self._loop = loop
        self._fd = fd
        self.tail = b""
        self._total = 0
        self._reading = True
        os.set_blocking(fd, False)
        loop.add_reader(fd, self.read)

    def read(self) -> None:
        """Read what the pipe holds now (never blocks); stop at end of file or at `MAX_OUTPUT`."""
        while self._reading:
            try:
                chunk = os.read(self._fd, min(_READ_CHUNK, MAX_OUTPUT - self._total))
            except BlockingIOError:
                return
            except OSError:
                chunk = b""
            if not chunk:
                self._stop()
                return
            self.tail = (self.tail + chunk)[-STDERR_TAIL:]
            self._total += len(chunk)
            if self._total >= MAX_OUTPUT:
                self._stop()

    def _stop(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def close(self) -> None:
        """Stop reading and close the pipe."""
        self._stop()
        os.close(self._fd)


def _exited_now(pid: int) -> bool:
    """The command has exited (it stays a zombie: ``WNOWAIT``)."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


async def _wait_exit(loop: asyncio.AbstractEventLoop, pid: int) -> None:
    """Return once the command ``pid`` has exited, without reaping it."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        while not _exited_now(pid):
            await asyncio.sleep(POLL_INTERVAL)
        return
    exited = loop.create_future()

    def on_exit() -> None:
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(pidfd, on_exit)
    try:
        await exited
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)


def _kill_group(pgid: int) -> None:
    """SIGKILL the process group ``pgid`` (the command's; its leader is not reaped yet)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


async def check_external(target: CheckTarget) -> tuple[bool, str] | tuple[bool, str, int]:
    """Run ``spec.command VIP VPORT RIP RPORT`` and judge its exit status.

    Returns:
        ``(True, "exit 0")``, with ``spec.dynamic_weight`` ``(True, "exit 7: weight 5", 5)`` for
        an exit status 2-255 (keepalived's ``misc_dynamic``: the real server is up at weight
        status - 2), ``(False, "exit 1: <last stderr line>")``,
        ``(False, "killed by SIGSEGV")``, ``(False, "command not found: <path>")``,
        ``(False, "command not executable: <path>")``, ``(False, "no command configured")``,
        ``(False, "command not trusted: <dir> is writable by group or others (mode 0777)")``
        and the other reasons of `command_problem`.

    Raises:
        OSError: the command could not be started for another reason; the
            caller turns it into a failed result.
        asyncio.CancelledError: the check was cancelled (time limit, engine
            stopping); the command's process group has been killed and the
            command reaped (or is being reaped in the background if a second
            cancellation arrived meanwhile).
    """
    command = target.spec.command
    if not command:
        return False, "no command configured"
    problem = command_problem(command[0])
    if problem is not None:
        return False, problem
    argv = (*command, target.vip or "", str(target.vport), target.rip, str(target.rport))
    loop = asyncio.get_running_loop()
    read_fd, write_fd = os.pipe()  # both close-on-exec; Popen puts write_fd on the command's fd 2
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=write_fd,
            close_fds=True,
            process_group=0,
            restore_signals=True,
        )
    except FileNotFoundError:
        os.close(read_fd)
        return False, f"command not found: {command[0]}"
    except PermissionError:
        os.close(read_fd)
        return False, f"command not executable: {command[0]}"
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    pid = process.pid
    _running.add(pid)
    stderr = _Stderr(loop, read_fd)
    try:
        await _wait_exit(loop, pid)
        stderr.read()  # what the command wrote before it exited
    except BaseException:
        _kill_group(pid)
        stderr.close()
        await _reap(loop, process)
        raise
    _kill_group(pid)  # its background processes: the group id is still held by the zombie
    stderr.close()
    status = _reap_now(process)
    return _verdict(status, stderr.tail, target.spec.dynamic_weight)


def _reap_now(process: subprocess.Popen[bytes]) -> int:
    """Reap an exited command; return its wait status."""
    try:
        _pid, status = os.waitpid(process.pid, 0)
    except ChildProcessError:  # reaped by someone else: status unknown
        status = 255 << 8
    process.returncode = os.waitstatus_to_exitcode(status)
    _running.discard(process.pid)
    return status


async def _reap(loop: asyncio.AbstractEventLoop, process: subprocess.Popen[bytes]) -> None:
    """Wait for a killed command and reap it, even if our task is cancelled meanwhile."""

    async def reap() -> None:
        await _wait_exit(loop, process.pid)
        _reap_now(process)

    waiter = asyncio.ensure_future(reap())
    try:
        await asyncio.shield(waiter)
    except asyncio.CancelledError:
        # Cancelled again while reaping: the command has SIGKILL already, so the
        # wait ends soon; let it finish on its own and go on cancelling.
        pass


def become_subreaper() -> bool:
    """Make this process a child subreaper (``prctl(PR_SET_CHILD_SUBREAPER, 1)``, Linux 3.4):
    orphaned descendants are re-parented to it instead of init, for `reap_orphans`.

    Returns:
        ``True`` when set, ``False`` when the system does not support it.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER = 36 (linux/prctl.h)
    except (OSError, AttributeError):
        return False


def child_subreaper() -> bool:
    """Whether this process is a child subreaper (``prctl(PR_GET_CHILD_SUBREAPER)``, Linux 3.4);
    False where that cannot be read."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        value = ctypes.c_int(0)
        return libc.prctl(37, ctypes.byref(value), 0, 0, 0) == 0 and value.value != 0  # PR_GET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


def set_child_subreaper(on: bool) -> bool:
    """Set or clear this process's child subreaper flag (``prctl(PR_SET_CHILD_SUBREAPER)``);
    True when done.  While it is clear, orphaned descendants go to init (or the next subreaper
    above): the director clears it for the moment it starts a process meant to live outside
    its tree (`director.hooks`)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(36, 1 if on else 0, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER = 36
    except (OSError, AttributeError):
        return False


def _children() -> set[int]:
    """Process ids of this process's children (``/proc/PID/task/TID/children``, Linux 3.5)."""
    pids: set[int] = set()
    base = f"/proc/{os.getpid()}/task"
    try:
        tids = os.listdir(base)
    except OSError:
        return pids
    for tid in tids:
        try:
            with open(f"{base}/{tid}/children", "rb") as fh:
                pids.update(int(p) for p in fh.read(1 << 20).split())
        except (OSError, ValueError):
            continue
    return pids


def reap_orphans(spare: Iterable[int] | None = None) -> int:
    """Kill and reap the processes this process adopted as a subreaper (`become_subreaper`).

    Every child of this process that is not in ``spare`` (by default the
    running external check commands, `running_commands`) is a descendant of a
    process whose parent died: it gets ``SIGKILL`` (its process group too when
    it leads one, as a daemon that called ``setsid`` does) and is reaped if it
    has exited.  Its own children are adopted in turn and handled by the next
    call.  Only for a process whose only children are the ones in ``spare``:
    the checker child (its external check commands) and the director of
    ``directord run`` (its checker child, `checks.process.CheckerProcess`).
    Never blocks.

    Args:
        spare: process ids of this process's own children, left alone.

    Returns:
        The number of processes signalled or reaped.
    """
    count = 0
    for pid in _children() - (_running if spare is None else set(spare)):
        # an unreaped child of ours: its pid (and a group it leads) cannot be reused meanwhile
        with contextlib.suppress(OSError):
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        count += 1
    return count
