"""The local control socket: a root-only unix stream socket speaking one JSON line each way.

Request: one line ``{"command": "status"}`` (or ``"reload"``, or
``{"command": "standby"|"takeover", "which": "all"|"local"|"foreign"}``); response: one
JSON line, ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``.  The
socket file is created with mode 0600 in a 0700 directory, so only root (the
daemon's user) can talk to the daemon.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from typing import Any, Awaitable, Callable

log = logging.getLogger("directord.control")

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
MAX_REQUEST = 64 * 1024  # bytes


class ControlServer:
    """Serves control requests on a unix socket until stopped.

    Args:
        path: socket path; a stale socket file left by a dead daemon is replaced,
            a live one (another daemon answering) makes `start` raise.
        handler: coroutine taking the request dict and returning the response dict.

    Raises:
        RuntimeError: from `start`, when another daemon already serves ``path``.
    """

    def __init__(self, path: str, handler: Handler) -> None:
        self.path = path
        self._handler = handler
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        """Bind the socket (mode 0600) and start serving."""
        directory = os.path.dirname(self.path) or "."
        os.makedirs(directory, mode=0o700, exist_ok=True)
        if os.path.exists(self.path):
            if _alive(self.path):
                raise RuntimeError(f"another directord is already serving {self.path}")
            os.unlink(self.path)
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=self.path, limit=MAX_REQUEST)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)

    async def stop(self) -> None:
        """Stop serving and remove the socket file."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

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
            writer.write(json.dumps(response).encode() + b"\n")
            await writer.drain()
        except (asyncio.TimeoutError, ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()


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
