"""TCP connect check: the real server is up when it completes the handshake.

On asyncio's own event loops a non-blocking socket is connected with
`loop.sock_connect` and closed at once: a check costs one socket and no other
objects.  On other loops (uvloop, the checker child's) the connection is made by
`loop.create_connection` on the numeric address (flag ``AI_NUMERICHOST``: never a
DNS query) and aborted at once: uvloop's `sock_connect` resolves the address again
through getaddrinfo on its thread pool (its numeric shortcut needs a socket type,
which sock_connect does not pass), a thread round trip per check that made a TCP
check cost more CPU than an HTTP one.  IPv4 and IPv6 (including scoped
``fe80::1%eth0`` addresses) work.
The time limit is applied by the caller (`checks.base.run_check`).
"""

from __future__ import annotations

import asyncio
import functools
import socket

__all__ = ["check_tcp", "socket_address"]


@functools.lru_cache(maxsize=8192)
def socket_address(address: str, port: int) -> tuple[int, tuple]:
    """``(family, sockaddr)`` for a numeric IP address and a port.

    Uses ``getaddrinfo`` with ``AI_NUMERICHOST``, so it never queries DNS and
    never blocks.  Results are cached.

    Raises:
        ValueError: ``address`` is not a numeric IPv4/IPv6 address.
    """
    try:
        infos = socket.getaddrinfo(
            address, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
        )
    except socket.gaierror:
        raise ValueError(f"not an IP address: {address!r}") from None
    family, _type, _proto, _canon, sockaddr = infos[0]
    return family, sockaddr


async def check_tcp(address: str, port: int) -> tuple[bool, str]:
    """Open a TCP connection to ``address``:``port`` and close it.

    Returns:
        ``(True, "connected")`` once the three-way handshake completes.

    Raises:
        OSError: the connect failed (``ConnectionRefusedError`` on a RST,
            ``OSError(EHOSTUNREACH)`` and so on); the caller turns it into a
            failed result.
        ValueError: ``address`` is not an IP address.
    """
    family, sockaddr = socket_address(address, port)
    loop = asyncio.get_running_loop()
    if isinstance(loop, asyncio.BaseEventLoop):
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, sockaddr)
        finally:
            sock.close()
    else:
        transport, _ = await loop.create_connection(
            asyncio.Protocol, address, port, family=family, flags=socket.AI_NUMERICHOST
        )
        transport.abort()
    return True, "connected"
