"""The local control socket: a root-only unix stream socket speaking one JSON line each way.

Request: one line ``{"command": "status"}`` (or ``"reload"``, or
``{"command": "standby"|"takeover", "which": "all"|"local"|"foreign"}``); response: one
JSON line, ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``.  The
socket file is created with mode 0600 in a 0700 directory, so only root (the
daemon's user) can talk to the daemon.

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
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("directord.control")

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
MAX_REQUEST = 64 * 1024  # bytes


class ControlServer:
    """Serves control requests on a unix socket until stopped.

    Args:
        path: socket path; a stale socket file left by a dead daemon is replaced,
            a live one (another daemon answering) makes `start` raise, and so
            does anything that is not a socket (left untouched).
        handler: coroutine taking the request dict and returning the response dict.

    Raises:
        RuntimeError: from `start`, when another daemon already serves ``path``
            or ``path`` is something other than a socket.
    """

    def __init__(self, path: str, handler: Handler) -> None:
        self.path = path
        self._handler = handler
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
            line = await asyncio.wait_for(reader.readline(), timeout=5)
            try:
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise ValueError("request is not a JSON object")
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


def request(path: str, command: str, timeout: float = 10.0, **fields: Any) -> dict[str, Any]:
    """Send one command (with extra JSON ``fields``) to a running daemon and return its response (blocking).

    Raises:
        ConnectionError / FileNotFoundError / OSError: no daemon answers at ``path``.
        ValueError: the answer is not JSON.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(json.dumps({"command": command, **fields}).encode() + b"\n")
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            if chunk.endswith(b"\n"):
                break
    return json.loads(b"".join(chunks))
