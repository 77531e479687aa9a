"""The hook runner: a small process that runs notify hooks for the director (standard library only).

Why a process of its own: ``directord run`` is a child subreaper and kills every process it
adopts (what external checks leave behind, `checks.process`).  A hook that starts a daemon
(``/etc/init.d/httpd start``, a haresources resource) leaves that daemon behind on purpose; run
by the director, it would be adopted and killed.  So the director starts this runner through
``setsid --fork`` (util-linux) with its subreaper flag cleared for that moment: the runner is
re-parented to init (or the service manager), outside the director's tree, and what its hooks
leave behind is re-parented there too, as with heartbeat or keepalived.

Protocol (JSON lines on the unix stream socket whose descriptor is ``argv[1]``):

* director -> runner: ``{"id": N, "argv": [...], "env": {...}, "timeout": SECONDS}``;
* runner -> director: ``{"id": N, "pid": PID or null, "result": "exit N" | "signal N" |
  "timeout" | "not run", "seconds": S, "output": TEXT, "error": TEXT or null}``.

Each hook runs with ``cwd`` ``/``, stdin ``/dev/null``, stdout and stderr on a pipe of which
the last `MAX_OUTPUT` bytes are kept, in a session of its own.  Its exit is watched through a
pidfd (Linux 5.3), not through the pipe: a daemon it started may hold the pipe for good; such a
pipe is drained and discarded until it closes (at most `MAX_LINGERING`; beyond that the oldest is
closed), so the daemon never blocks on a full pipe nor gets SIGPIPE.  After ``timeout`` seconds
the hook's process group gets SIGTERM, and SIGKILL `KILL_GRACE` seconds later.

The runner exits when the director's socket reaches end of file (the director stopped or died)
and no hook is running any more.  It takes at most `MAX_LINE` bytes per request and `MAX_RUNNING`
hooks at once (the director sends fewer); a malformed request is answered ``not run``.
"""

from __future__ import annotations

import errno
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
import typing

MAX_LINE = 1 << 20
MAX_OUTPUT = 2048
MAX_RUNNING = 256
MAX_LINGERING = 64
KILL_GRACE = 2.0
READ_SIZE = 65536


class _Hook:
    """One running hook: its process, pidfd, output pipe and deadlines (monotonic seconds)."""

    def __init__(
        self, request_id: object, proc: subprocess.Popen[bytes], pidfd: int, pipe: int, timeout: float
    ) -> None:
        self.id = request_id
        self.proc = proc
        self.pidfd = pidfd
        self.pipe = pipe
        self.started = time.monotonic()
        self.deadline = self.started + timeout
        self.output = bytearray()
        self.timed_out = False
        self.killed = False


class Runner:
    """The runner's state and loop (`serve`)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sel = selectors.DefaultSelector()
        self.buffer = bytearray()
        self.out = bytearray()
        self.hooks: dict[int, _Hook] = {}  # by pidfd
        #: output pipe fd -> [its file object, its hook (None once the hook exited: lingering)]
        self.pipes: dict[int, list[typing.Any]] = {}
        self.lingering: list[int] = []
        self.open = True
        sock.setblocking(False)
        self.sel.register(sock, selectors.EVENT_READ, "control")

    # -- requests

    def _reply(self, message: dict[str, object]) -> None:
        self.out += json.dumps(message).encode() + b"\n"
        self._flush()

    def _flush(self) -> None:
        while self.out:
            try:
                sent = self.sock.send(self.out)
            except BlockingIOError:
                self.sel.modify(self.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, "control")
                return
            except OSError:
                self.out.clear()
                return
            del self.out[:sent]
        if self.open:
            self.sel.modify(self.sock, selectors.EVENT_READ, "control")

    def _read_control(self) -> None:
        try:
            data = self.sock.recv(READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.open = False
            self.sel.unregister(self.sock)
            return
        self.buffer += data
        while True:
            end = self.buffer.find(b"\n")
            if end < 0:
                if len(self.buffer) > MAX_LINE:
                    self.buffer.clear()
                    self._reply({"id": None, "pid": None, "result": "not run", "seconds": 0, "output": "",
                                 "error": f"request longer than {MAX_LINE} bytes"})  # fmt: skip
                return
            line = bytes(self.buffer[:end])
            del self.buffer[: end + 1]
            self._start(line)

    def _start(self, line: bytes) -> None:
        request_id: object = None
        try:
            request = json.loads(line)
            request_id = request["id"]
            argv = request["argv"]
            env = request["env"]
            timeout = float(request["timeout"])
            if not (isinstance(argv, list) and argv and all(isinstance(a, str) and "\0" not in a for a in argv)):
                raise ValueError("argv must be a non-empty list of strings")
            if not (isinstance(env, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())):
                raise ValueError("env must map strings to strings")
            if not 0 < timeout <= 86400:
                raise ValueError("timeout out of range")
            if len(self.hooks) >= MAX_RUNNING:
                raise ValueError(f"{MAX_RUNNING} hooks running already")
        except (ValueError, KeyError, TypeError) as exc:
            self._reply({"id": request_id, "pid": None, "result": "not run", "seconds": 0, "output": "",
                         "error": f"bad request: {exc}"})  # fmt: skip
            return
        try:
            proc = subprocess.Popen(
                argv,
                env=env,
                cwd="/",
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        except (OSError, ValueError) as exc:
            self._reply({"id": request_id, "pid": None, "result": "not run", "seconds": 0, "output": "",
                         "error": str(exc)})  # fmt: skip
            return
        try:
            pidfd = os.pidfd_open(proc.pid)
        except OSError as exc:  # a kernel without pidfds: wait for it (never on a supported kernel)
            proc.wait()
            self._reply({"id": request_id, "pid": proc.pid, "result": "not run", "seconds": 0, "output": "",
                         "error": f"pidfd_open: {exc}"})  # fmt: skip
            return
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        hook = _Hook(request_id, proc, pidfd, fd, timeout)
        self.hooks[pidfd] = hook
        self.sel.register(pidfd, selectors.EVENT_READ, "exit")
        os.set_blocking(fd, False)
        self.pipes[fd] = [proc.stdout, hook]
        proc.stdout = None  # the pipe is the runner's: Popen.wait must not close it
        self.sel.register(fd, selectors.EVENT_READ, "pipe")

    # -- hooks

    def _read_pipe(self, fd: int) -> bool:
        """Read what is waiting on output pipe ``fd``; False at end of file (then it is closed)."""
        hook = self.pipes[fd][1]
        while True:
            try:
                data = os.read(fd, READ_SIZE)
            except BlockingIOError:
                return True
            except OSError:
                data = b""
            if not data:
                self._close_pipe(fd)
                return False
            if hook is not None:
                hook.output += data
                del hook.output[:-MAX_OUTPUT]

    def _close_pipe(self, fd: int) -> None:
        file, _ = self.pipes.pop(fd)
        self.sel.unregister(fd)
        if fd in self.lingering:
            self.lingering.remove(fd)
        file.close()

    def _exited(self, pidfd: int) -> None:
        hook = self.hooks.pop(pidfd)
        self.sel.unregister(pidfd)
        os.close(pidfd)
        status = hook.proc.wait()
        seconds = time.monotonic() - hook.started
        fd = hook.pipe
        if fd in self.pipes and self._read_pipe(fd):
            # a process it started still holds the pipe: drain and discard until it closes
            self.pipes[fd][1] = None
            self.lingering.append(fd)
            if len(self.lingering) > MAX_LINGERING:
                self._close_pipe(self.lingering[0])
        if hook.timed_out:
            result = "timeout"
        elif status < 0:
            result = f"signal {-status}"
        else:
            result = f"exit {status}"
        self._reply(
            {
                "id": hook.id,
                "pid": hook.proc.pid,
                "result": result,
                "seconds": round(seconds, 6),
                "output": hook.output.decode("utf-8", "replace"),
                "error": None,
            }
        )

    def _expire(self, now: float) -> float | None:
        """Signal the hooks past their deadline; the seconds until the next deadline, or None."""
        nearest: float | None = None
        for hook in self.hooks.values():
            if now >= hook.deadline:
                if not hook.timed_out:
                    hook.timed_out = True
                    _kill_group(hook.proc.pid, signal.SIGTERM)
                    hook.deadline = now + KILL_GRACE
                elif not hook.killed:
                    hook.killed = True
                    _kill_group(hook.proc.pid, signal.SIGKILL)
                    hook.deadline = now + 3600
            left = hook.deadline - now
            nearest = left if nearest is None else min(nearest, left)
        return nearest

    def serve(self) -> None:
        """Run hooks until the director's socket is closed and no hook runs."""
        while self.open or self.hooks:
            timeout = self._expire(time.monotonic())
            for key, _ in self.sel.select(None if timeout is None else max(timeout, 0.0)):
                if key.data == "control":
                    self._read_control()
                    self._flush()
                elif key.data == "exit":
                    self._exited(key.fd)
                elif key.data == "pipe" and key.fd in self.pipes:
                    self._read_pipe(key.fd)


def _kill_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except OSError as exc:
        if exc.errno != errno.ESRCH:
            raise


def main(argv: list[str]) -> int:
    """``runner.py FD``: serve the director on the unix socket FD; returns the exit status."""
    if len(argv) != 2 or not argv[1].isdigit():
        print("usage: runner.py FD", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the director decides when the runner stops
    os.chdir("/")
    sock = socket.socket(fileno=int(argv[1]))
    Runner(sock).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
