"""The local control socket: a root-only unix stream socket speaking one JSON line each way.

Request: one line ``{"command": "status"}`` (or ``"reload"``, or
``{"command": "standby"|"takeover", "which": "all"|"local"|"foreign"}``); response: one
JSON line, ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``.  A ``reload`` is
answered once the file is loaded and adopted or refused (`director.daemon.Daemon.reload_report`):
``{"ok": true, "services": N, ...}``, or ``{"ok": false, "error": "...", "errors": N}`` with the
file's problems one per line (``FILE:LINE:COL: FIELD: MESSAGE``).

The one streaming request, ``{"command": "events", "recent": N, "follow": true|false,
"kinds": [KIND, ...]}`` (every field optional: 0, true, every kind), answers ``{"ok": true}``,
then the last ``N`` events kept by the daemon (at most `director.events.DEFAULT_HISTORY`) and,
with ``follow``, every new one, one JSON line each (`director.events.to_json`), until the client
hangs up or the daemon stops. A client that reads too slowly loses the oldest events waiting
for it (at most `STREAM_QUEUE` wait); a line ``{"kind": "stream.dropped", "dropped": N}`` says
how many were lost so far. A client that takes more than `STREAM_STALL` seconds to accept a line
is cut off. At most `MAX_STREAMS` streams are served at once; one more is refused with
``{"ok": false, "error": ...}``.

A request line longer than `MAX_REQUEST` bytes is answered ``{"ok": false, "error": ...}``
and hung up on; one not complete within `REQUEST_TIMEOUT` seconds is hung up on without an
answer; other clients are served meanwhile.

The socket file is created with mode 0600 in a 0700 directory, so only root (the daemon's
user) can talk to the daemon.

The daemon replaces only a stale socket at its path (never a regular file,
directory, symlink or FIFO), and at stop removes the socket only while it is
still the one it bound (same device and inode).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import stat
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from .events import DEFAULT_HISTORY, EventBus, Subscription, to_json

log = logging.getLogger("directord.control")

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
MAX_REQUEST = 64 * 1024  # bytes
#: Seconds a client may take to send its request line before it is hung up on.
REQUEST_TIMEOUT = 5.0
#: Events that may wait for one streaming client before its oldest are dropped.
STREAM_QUEUE = 10_000
#: Seconds a streaming client may take to accept one more line before it is cut off.
STREAM_STALL = 30.0
#: Event streams served at once; one more is refused (each may hold `STREAM_QUEUE` events).
MAX_STREAMS = 16
#: Most event kinds one streaming request may name.
MAX_STREAM_KINDS = 64
#: Longest line a client of the event stream accepts, in bytes.
MAX_STREAM_LINE = 1024 * 1024


class ControlServer:
    """Serves control requests on a unix socket until stopped.

    Args:
        path: socket path; a stale socket file left by a dead daemon is replaced,
            a live one (another daemon answering) makes `start` raise, and so
            does anything that is not a socket (left untouched).
        handler: coroutine taking the request dict and returning the response dict.
        events: the daemon's event bus, for ``events`` requests (refused without one).

    Raises:
        RuntimeError: from `start`, when another daemon already serves ``path``
            or ``path`` is something other than a socket.
    """

    def __init__(self, path: str, handler: Handler, events: EventBus | None = None) -> None:
        self.path = path
        self._handler = handler
        self._events = events
        self._streams: set[Subscription] = set()
        self._server: asyncio.base_events.Server | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the socket we bound

    async def start(self) -> None:
        """Bind the socket (mode 0600) and start serving.

        Raises:
            RuntimeError: ``path`` is not a socket (a regular file, directory,
                symlink, FIFO...: it is left as it is), or another daemon answers there.
            OSError: the directory cannot be made or the socket cannot be bound.
        """
        directory = os.path.dirname(self.path) or "."
        os.makedirs(directory, mode=0o700, exist_ok=True)
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            st = None
        if st is not None:
            if not stat.S_ISSOCK(st.st_mode):
                raise RuntimeError(
                    f"{self.path} exists and is {_kind(st.st_mode)}, not a socket: refusing to replace it "
                    "(remove it or choose another global.control_socket)"
                )
            if _alive(self.path):
                raise RuntimeError(f"another directord is already serving {self.path}")
            os.unlink(self.path)  # a stale socket left by a daemon that died
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=self.path, limit=MAX_REQUEST)
        finally:
            os.umask(old)
        st = os.lstat(self.path)
        self._identity = (st.st_dev, st.st_ino)
        os.chmod(self.path, 0o600)

    async def stop(self) -> None:
        """Stop serving and remove the socket file, if it is still the socket bound by `start`.

        Whatever replaced it meanwhile (another daemon's socket, a file) is left alone.
        """
        for subscription in list(self._streams):
            subscription.close()  # ends every event stream: its connection closes
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
            identity, self._identity = self._identity, None
            try:
                st = os.lstat(self.path)
            except FileNotFoundError:
                return
            if stat.S_ISSOCK(st.st_mode) and (st.st_dev, st.st_ino) == identity:
                os.unlink(self.path)
            else:
                log.warning("%s is no longer the socket this daemon bound: left in place", self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                line = await asyncio.wait_for(reader.readline(), timeout=REQUEST_TIMEOUT)
            except (ValueError, asyncio.LimitOverrunError):
                writer.write(_encode({"ok": False, "error": f"request longer than {MAX_REQUEST} bytes"}))
                await writer.drain()
                return
            try:
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise ValueError("request is not a JSON object")
                if request.get("command") == "events":
                    await self._stream(request, writer)
                    return
                response = await self._handler(request)
            except (ValueError, KeyError) as exc:
                response = {"ok": False, "error": f"bad request: {exc}"}
            except Exception as exc:  # a handler bug must not kill the daemon
                log.exception("control request failed")
                response = {"ok": False, "error": str(exc)}
            # encoded in a worker thread: a status of thousands of real servers is megabytes of JSON
            writer.write(await asyncio.to_thread(_encode, response))
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()

    async def _stream(self, request: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        """Serve an ``events`` request (see the module docstring) until the client or the daemon
        stops; connection errors and a stalled client end it quietly.

        Raises:
            ValueError: the request's fields are wrong (nothing has been written yet).
        """
        if self._events is None:
            raise ValueError("this daemon has no event stream")
        recent, follow, kinds = stream_request(request)
        if len(self._streams) >= MAX_STREAMS:
            raise ValueError(f"too many event streams: {MAX_STREAMS} are open; close one and retry")
        subscription = self._events.subscribe(maxsize=STREAM_QUEUE, kinds=kinds, replay=recent)
        self._streams.add(subscription)
        reported = 0
        try:
            writer.write(_encode({"ok": True}))
            while True:
                envelope = subscription.get_nowait() if not follow else await subscription.get()
                if envelope is None:
                    break
                if subscription.dropped != reported:
                    reported = subscription.dropped
                    writer.write(_encode({"kind": "stream.dropped", "dropped": reported}))
                writer.write(_encode(to_json(envelope)))
                await asyncio.wait_for(writer.drain(), STREAM_STALL)
            await asyncio.wait_for(writer.drain(), STREAM_STALL)
        except (TimeoutError, ConnectionError):
            pass
        finally:
            self._streams.discard(subscription)
            subscription.close()


def stream_request(request: dict[str, Any]) -> tuple[int, bool, frozenset[str] | None]:
    """``(recent, follow, kinds)`` of an ``events`` request (pure): ``recent`` an integer
    0..`DEFAULT_HISTORY` (default 0), ``follow`` a boolean (default true), ``kinds`` a list of at
    most `MAX_STREAM_KINDS` strings (default: every kind, ``None``).

    Raises:
        ValueError: a field of another type or out of range.
    """
    recent = request.get("recent", 0)
    if isinstance(recent, bool) or not isinstance(recent, int) or not 0 <= recent <= DEFAULT_HISTORY:
        raise ValueError(f"recent must be an integer 0..{DEFAULT_HISTORY}")
    follow = request.get("follow", True)
    if not isinstance(follow, bool):
        raise ValueError("follow must be true or false")
    kinds = request.get("kinds")
    if kinds is None:
        return recent, follow, None
    if (
        not isinstance(kinds, list)
        or len(kinds) > MAX_STREAM_KINDS
        or not all(isinstance(kind, str) and len(kind) <= 64 for kind in kinds)
    ):
        raise ValueError(f"kinds must be a list of at most {MAX_STREAM_KINDS} event kinds")
    return recent, follow, frozenset(kinds)


def _encode(response: dict[str, Any]) -> bytes:
    """One response line: compact JSON and a newline."""
    return json.dumps(response).encode() + b"\n"


def _kind(mode: int) -> str:
    """What a file of ``mode`` is, for messages."""
    for test, name in (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _alive(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(1)
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


class NoAnswer(ConnectionError):
    """A daemon accepted the connection but gave no answer: it closed the connection or stopped
    first, or took longer than the timeout. What came of the request is not known."""


def request(path: str, command: str, timeout: float = 10.0, **fields: Any) -> dict[str, Any]:
    """Send one command (with extra JSON ``fields``) to a running daemon and return its response
    (blocking; ``timeout``: seconds each socket operation may wait, the answer's too).

    Raises:
        NoAnswer: connected, but no answer came (see `NoAnswer`).
        PermissionError: the socket refused this user.
        ConnectionError / FileNotFoundError / OSError: no daemon answers at ``path`` (nothing was asked).
        ValueError: the answer is not JSON.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        chunks = []
        try:
            s.sendall(json.dumps({"command": command, **fields}).encode() + b"\n")
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                if chunk.endswith(b"\n"):
                    break
        except TimeoutError:
            raise NoAnswer(f"no answer within {timeout:g} s") from None
        except OSError as exc:
            raise NoAnswer(f"the connection failed before the answer: {exc.strerror or exc}") from None
    if not chunks:
        raise NoAnswer("the daemon closed the connection without answering")
    return json.loads(b"".join(chunks))


def stream(path: str, timeout: float | None = None, **fields: Any) -> Iterator[dict[str, Any]]:
    """Send an ``events`` request (with JSON ``fields``: ``recent``, ``follow``, ``kinds``) to a
    running daemon and yield each JSON line it sends, the ``{"ok": ...}`` answer first (blocking;
    ``timeout``: seconds to wait for each line, ``None`` for ever).

    Raises:
        ConnectionError / FileNotFoundError / OSError: no daemon answers at ``path``.
        ValueError: a line is not JSON, or is longer than `MAX_STREAM_LINE` bytes.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(json.dumps({"command": "events", **fields}).encode() + b"\n")
        with s.makefile("rb") as lines:
            while True:
                line = lines.readline(MAX_STREAM_LINE + 1)
                if not line:
                    return
                if len(line) > MAX_STREAM_LINE:
                    raise ValueError(f"a line of the event stream is longer than {MAX_STREAM_LINE} bytes")
                yield json.loads(line)
