"""A relay between python-oracledb's thin driver and an Oracle listener that checks TNS framing.

The ``oracle`` check (`checks.protocols.sql.check_oracle`) does not let python-oracledb
connect to the real server itself: the driver connects to a one-use listener on
127.0.0.1 that `TnsGuard` opens, and `TnsGuard` relays its bytes to the real server's
connection, which it made itself (numeric address, no name resolution).  Every byte
from the server goes through `TnsGuard.from_server` first, which reads the TNS packet
headers (Oracle Net: 8 bytes, the length in the first 2 bytes until the server's
``ACCEPT``, in the first 4 bytes after it, the type in byte 5, as python-oracledb's
``Transport.extract_packet`` reads them) and stops the check -- both connections
aborted, the reason kept in `TnsGuard.failure` -- when the server:

* announces a packet shorter than its own 8-byte header: python-oracledb 26.1's
  thin driver spins without end on a packet length of 0 (``extract_packet`` returns
  an empty packet and keeps the same buffer), which would stop the checker's whole
  event loop;
* sends anything after its ``ACCEPT`` before the driver has answered it (the driver
  switches to 4-byte lengths only once it has processed the ``ACCEPT``: a packet
  arriving with it would be framed differently by the driver and by this guard);
* sends ``REDIRECT`` (a listener handing the connection to a shared-server dispatcher
  or, with RAC, to another node): its address may be a host name, which the driver
  would resolve with a blocking ``getaddrinfo`` on the event loop, and it would
  connect there past this guard; the check fails instead;
* sends more than `MAX_ORACLE_READ` bytes in one check.

The connect descriptor the server receives names the relay's address
(``(HOST=127.0.0.1)(PORT=...)``): a listener routes by SID or service name, not by that
address, which only shows in its log.

Cost: one listening socket and one more connection over loopback per check.  A
local process can connect to the one-use listener before the driver does: the
driver's connection is then refused and the check fails (nothing of the real
server's is given away: the intruder would be relayed to the real server as any
client of the network can connect there).
"""

from __future__ import annotations

import asyncio
import socket
from typing import cast

__all__ = ["TnsGuard", "MAX_ORACLE_READ", "TNS_HEADER"]

#: Bytes read from an Oracle server in one check, the login exchange included (1 MiB).
MAX_ORACLE_READ = 1024 * 1024

#: Length of a TNS packet header (Oracle Net): length, checksum, type, flags, header checksum.
TNS_HEADER = 8

_ACCEPT = 2
_REDIRECT = 5


class _ServerSide(asyncio.Protocol):
    """The connection to the real server."""

    def __init__(self, guard: TnsGuard) -> None:
        self.guard = guard

    def data_received(self, data: bytes) -> None:
        self.guard.from_server(data)

    def eof_received(self) -> bool:
        self.guard.server_closed()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.server_closed()


class _DriverSide(asyncio.Protocol):
    """The driver's connection to the one-use listener."""

    def __init__(self, guard: TnsGuard) -> None:
        self.guard = guard
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are no asyncio.Transport subclass
        self.guard.driver_connected(self)

    def data_received(self, data: bytes) -> None:
        self.guard.from_driver(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.driver_closed(self)


class TnsGuard:
    """One check's relay: `open` it, point the driver at `port`, `close` it in ``finally``.

    Attributes:
        failure: why the guard stopped the check (``"bad TNS packet: length 0"``,
            ``"server sent more than 1 MiB"``...), ``None`` while it has not; when set,
            both connections are aborted and the driver fails with a closed connection,
            which the caller replaces by this reason.
        port: the one-use listener's port on 127.0.0.1 (0 before `open`).
    """

    def __init__(self) -> None:
        self.failure: str | None = None
        self.port = 0
        self._server: asyncio.Transport | None = None
        self._listener: asyncio.AbstractServer | None = None
        self._driver: _DriverSide | None = None
        self._held: list[bytes] = []  # server bytes that came before the driver connected
        self._read = 0
        self._header = b""
        self._left = 0  # bytes of the current packet's body still to come
        self._large = False  # 4-byte packet lengths (after ACCEPT)
        self._in_accept = False
        self._await_driver = False  # ACCEPT relayed: the server must wait for the driver's answer
        self._closed = False

    async def open(self, family: int, sockaddr: tuple[object, ...]) -> int:
        """Connect to the real server at ``sockaddr`` and listen on 127.0.0.1; return the port.

        Raises:
            OSError: the connection to the real server failed (refused, unreachable...).
        """
        loop = asyncio.get_running_loop()
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, sockaddr)
            self._server, _ = await loop.create_connection(lambda: _ServerSide(self), sock=sock)
        except BaseException:
            sock.close()
            raise
        listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listening.bind(("127.0.0.1", 0))
            listening.listen(1)
            listening.setblocking(False)
            self.port = listening.getsockname()[1]
            self._listener = await loop.create_server(lambda: _DriverSide(self), sock=listening)
        except BaseException:
            listening.close()
            raise
        return self.port

    def close(self) -> None:
        """Abort both connections and stop listening; idempotent, never raises."""
        self._closed = True
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._server is not None:
            self._server.abort()
            self._server = None
        if self._driver is not None and self._driver.transport is not None:
            self._driver.transport.abort()
        self._held.clear()

    def _stop(self, reason: str) -> None:
        if self.failure is None:
            self.failure = reason
        self.close()

    def driver_connected(self, side: _DriverSide) -> None:
        """The driver connected to the listener: the first connection is relayed, any other aborted."""
        assert side.transport is not None
        if self._driver is not None or self._closed:
            side.transport.abort()
            return
        self._driver = side
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for data in self._held:
            side.transport.write(data)
        self._held.clear()

    def driver_closed(self, side: _DriverSide) -> None:
        """The driver closed its connection (logged off, or failed): the server's is closed too."""
        if side is self._driver and self._server is not None:
            self._server.close()

    def from_driver(self, data: bytes) -> None:
        """Bytes the driver sends: relayed as they are."""
        self._await_driver = False
        if self._server is not None:
            self._server.write(data)

    def server_closed(self) -> None:
        """The server closed or lost its connection: the driver's is closed once it has the rest."""
        self._server = None
        if self._driver is not None and self._driver.transport is not None:
            self._driver.transport.close()

    def from_server(self, data: bytes) -> None:
        """Bytes the server sends: framed (`frame_problem`), then relayed, or the check stopped."""
        if self._closed:
            return
        problem = self.frame_problem(data)
        if problem is not None:
            self._stop(problem)
        elif self._driver is not None and self._driver.transport is not None:
            self._driver.transport.write(data)
        else:
            self._held.append(data)

    def frame_problem(self, data: bytes) -> str | None:
        """Read the TNS packet headers in ``data`` (the next bytes from the server).

        Returns:
            ``None`` when the bytes may be relayed, else a short reason: ``"server sent
            more than 1 MiB"``, ``"bad TNS packet: length 3"``, ``"server sent data
            before the client answered its ACCEPT"``, ``"listener redirected the
            connection (not followed)"``.
        """
        self._read += len(data)
        if self._read > MAX_ORACLE_READ:
            return f"server sent more than {MAX_ORACLE_READ // (1024 * 1024)} MiB"
        i, end = 0, len(data)
        while i < end:  # each turn consumes at least one byte
            if self._left:
                step = min(self._left, end - i)
                self._left -= step
                i += step
                if not self._left and self._in_accept:
                    self._in_accept, self._large, self._await_driver = False, True, True
                continue
            if self._await_driver:
                return "server sent data before the client answered its ACCEPT"
            take = min(TNS_HEADER - len(self._header), end - i)
            self._header += data[i : i + take]
            i += take
            if len(self._header) < TNS_HEADER:
                break
            header, self._header = self._header, b""
            size = int.from_bytes(header[:4] if self._large else header[:2], "big")
            if size < TNS_HEADER:
                return f"bad TNS packet: length {size}"
            kind = header[4]
            if kind == _REDIRECT:
                return "listener redirected the connection (not followed)"
            self._left = size - TNS_HEADER
            if kind == _ACCEPT and not self._large:
                self._in_accept = True
                if not self._left:
                    self._in_accept, self._large, self._await_driver = False, True, True
        return None
