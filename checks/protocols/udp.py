"""UDP check: one request datagram, one reply datagram.

``spec.send`` (Latin-1 text, one byte per character) is sent from a connected UDP socket to
RIP:port, and the check waits for one reply datagram from that address (a connected UDP
socket receives from its peer only):

- passes: a reply arrives, and ``spec.expect`` is unset or its RE2 regex is found in the reply
  decoded as Latin-1 (reason ``"reply of 4 bytes"``);
- fails: the reply does not match (``"reply does not match 'PONG'"``); an ICMP port
  unreachable comes back (the connected socket's ``ECONNREFUSED``: ``"ICMP port
  unreachable"``, at once); another ICMP error (``"no route to host"``..., at once too:
  `report_icmp_errors`); no reply within
  ``spec.timeout`` (`checks.base.run_check`'s ``timed_out``).

ldirectord has no UDP check of its own (its UDP services are checked with ``ping``, ``dns``,
``radius``, ``sip`` or ``external``); this is keepalived's ``UDP_CHECK`` with a payload and a
reply pattern.  A reply is read into a buffer of `checks.spec.MAX_EXPECT_READ` (64 KiB): no UDP
payload is longer (RFC 768, 65,507 bytes over IPv4).
"""

from __future__ import annotations

import asyncio
import functools
import socket
from typing import TYPE_CHECKING

from checks.protocols.http import body_matches, compile_body_pattern
from checks.protocols.tcp import socket_address
from checks.spec import MAX_EXPECT_READ

if TYPE_CHECKING:  # pragma: no cover
    from checks.base import CheckTarget

__all__ = ["check_udp", "datagram_of", "report_icmp_errors"]

_IP_RECVERR = 11  # <linux/in.h>
_IPV6_RECVERR = 25  # <linux/in6.h>


def report_icmp_errors(sock: socket.socket, family: int) -> None:
    """Have every ICMP error about ``sock``'s datagrams fail its next receive at once.

    Without it Linux reports only the "hard" errors to a connected datagram socket (port or
    protocol unreachable: ``ECONNREFUSED``...); with ``IP_RECVERR`` / ``IPV6_RECVERR`` (ip(7),
    ipv6(7)) also a host or network unreachable from a router on the way (``EHOSTUNREACH``,
    ``ENETUNREACH``), which would otherwise leave the check waiting for its time limit.

    Raises:
        OSError: the option cannot be set (not an IP socket).
    """
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_RECVERR, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IP, _IP_RECVERR, 1)


@functools.lru_cache(maxsize=1024)
def datagram_of(text: str) -> bytes:
    """``text`` as the bytes of a datagram: one byte per character (Latin-1); cached.

    Raises:
        UnicodeEncodeError: a character above U+00FF (the loader refuses those).
    """
    return text.encode("latin-1")


async def check_udp(target: CheckTarget) -> tuple[bool, str]:
    """Send ``spec.send`` to ``target.rip``:``target.rport`` over UDP and judge the first reply.

    Returns:
        ``(True, "reply of N bytes")``, ``(False, "reply does not match 'X'")``, ``(False,
        "ICMP port unreachable")``, ``(False, "bad expect regex: ...")``.

    Raises:
        OSError: sending or receiving failed (``EHOSTUNREACH`` from an ICMP host unreachable,
            ``ENETUNREACH`` without a route...).
        ValueError: ``spec.send`` is unset, or ``target.rip`` is not an IP address.
    """
    spec = target.spec
    if spec.send is None:
        raise ValueError("a udp check needs send")
    pattern = None
    if spec.expect is not None:
        pattern = compile_body_pattern(spec.expect)
        if isinstance(pattern, str):
            return False, f"bad expect regex: {pattern}"
    family, sockaddr = socket_address(target.rip, target.rport)
    loop = asyncio.get_running_loop()
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        report_icmp_errors(sock, family)
        sock.connect(sockaddr)  # UDP: no packet, never blocks; from now on only its replies arrive
        await loop.sock_sendall(sock, datagram_of(spec.send))
        reply = await loop.sock_recv(sock, MAX_EXPECT_READ)
    except ConnectionRefusedError:
        return False, "ICMP port unreachable"
    finally:
        sock.close()
    if pattern is not None and not await body_matches(pattern, reply.decode("latin-1")):
        return False, f"reply does not match {spec.expect!r}"
    return True, f"reply of {len(reply)} bytes"
