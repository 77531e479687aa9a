"""One request datagram and its replies, on a connected non-blocking UDP socket.

The UDP checks (`checks.protocols.radius`, `checks.protocols.sip`) send one datagram to the real
server and read replies on the running event loop until one decides the check.
The socket is *connected* to the real server, so the kernel drops datagrams
from any other address or port, and an ICMP port unreachable answering the
request comes back as ``ECONNREFUSED`` on the next receive: the check fails at
once (`PORT_UNREACHABLE`) instead of waiting for its time limit.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import TypeVar

from checks.protocols.tcp import socket_address

__all__ = ["PORT_UNREACHABLE", "connected_udp_socket", "exchange"]

#: Reason of a check whose request was answered by an ICMP port unreachable.
PORT_UNREACHABLE = "ICMP port unreachable"

T = TypeVar("T")


def connected_udp_socket(address: str, port: int) -> socket.socket:
    """A non-blocking UDP socket connected to the numeric ``address``:``port``.

    Connecting a UDP socket sends nothing (it only fixes the peer and picks the
    local address and port), so it never blocks.

    Raises:
        ValueError: ``address`` is not a numeric IP address.
        OSError: no route to the address (``ENETUNREACH``...).
    """
    family, sockaddr = socket_address(address, port)
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.connect(sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock


async def exchange(sock: socket.socket, request: bytes, size: int, accept: Callable[[bytes], T | None]) -> T:
    """Send ``request`` on the connected ``sock``, then read datagrams until ``accept`` takes one.

    Each received datagram (at most ``size`` bytes; a longer one is cut to
    ``size``, so pass one more than the longest valid reply to tell) is given to
    ``accept``, which returns the decoded reply, ``None`` to skip it and wait
    for the next (a provisional answer), or raises to end the check.  Every
    wait is an ``await``: the caller's time limit bounds the whole exchange.

    Raises:
        ConnectionRefusedError: the request was answered by an ICMP port
            unreachable (the caller reports `PORT_UNREACHABLE`).
        OSError: another socket error (``EHOSTUNREACH``...).
        Exception: whatever ``accept`` raises.
    """
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(sock, request)
    while True:
        data = await loop.sock_recv(sock, size)
        decoded = accept(data)
        if decoded is not None:
            return decoded
