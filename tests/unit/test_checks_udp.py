"""The ``udp`` check (`checks.protocols.udp`): against a real UDP service (dnsmasq's DNS port, asked with a
raw DNS query as ``send``), a stopped one, a silent one, and huge or non-matching replies."""

from __future__ import annotations

import asyncio
import socket

from checkhelpers import bare_target, run_checks
from dnsserver import OK_QUERY, start_dnsmasq

from checks.base import CheckTarget, run_check
from checks.protocols.udp import datagram_of

#: `dnsserver.OK_QUERY` as the Latin-1 text of ``send`` (one character per byte)
SEND = OK_QUERY.decode("latin-1")


def _target(port: int, rip: str = "127.0.0.1", **spec) -> CheckTarget:
    return bare_target(port, rip, **({"type": "udp", "send": SEND, "timeout": 2.0} | spec))


def test_datagram_is_latin1():
    assert datagram_of("B\x00\xe9\xff") == b"B\x00\xe9\xff"
    assert datagram_of(SEND) == OK_QUERY


def test_against_dnsmasq():
    # the reply to OK_QUERY: ID 4242, then flags 8580 (QR AA RD RA, NOERROR), ..., and the
    # address 192.0.2.7 (c0 00 02 07) at its end
    with start_dnsmasq() as port:
        results = run_checks(
            [
                _target(port),
                _target(port, expect=r"^\x42\x42\x85\x80"),
                _target(port, expect=r"\xc0\x00\x02\x07$"),
                _target(port, expect="PONG"),
            ]
        )
    stopped = run_checks([_target(port)])
    assert [result[:2] for result in results] == [
        (True, "reply of 41 bytes"),
        (True, "reply of 41 bytes"),
        (True, "reply of 41 bytes"),
        (False, "reply does not match 'PONG'"),
    ]
    assert stopped[0][:3] == (False, "ICMP port unreachable", False)
    assert stopped[0][3] < 0.5  # at once, not at the time limit


def test_silent_server_times_out():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        [(ok, reason, timed_out, duration)] = run_checks([_target(silent.getsockname()[1], timeout=0.3)])
        assert silent.recv(512) == OK_QUERY  # it did receive the datagram
    assert (ok, reason, timed_out) == (False, "timeout after 0.3 s", True)
    assert 0.3 <= duration < 0.6


def _fake(reply: bytes, *, family: int = socket.AF_INET, **spec) -> tuple[bool, str]:
    """One check against a server that answers any datagram with ``reply``."""
    host = "::1" if family == socket.AF_INET6 else "127.0.0.1"

    async def scenario():
        loop = asyncio.get_running_loop()
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.bind((host, 0))
            sock.setblocking(False)

            async def serve():
                data, peer = await loop.sock_recvfrom(sock, 65535)
                await loop.sock_sendto(sock, reply, peer)

            server = asyncio.create_task(serve())
            try:
                result = await run_check(_target(sock.getsockname()[1], rip=host, **spec), None)
            finally:
                server.cancel()
            return result.ok, result.reason

    return asyncio.run(scenario())


def test_replies_of_every_size():
    assert _fake(b"") == (True, "reply of 0 bytes")
    assert _fake(b"", expect="x") == (False, "reply does not match 'x'")
    # the largest UDP payload over IPv4 (65,535 - 20 - 8), the match at its very end
    assert _fake(b"\xff" * 65500 + b"PONG\r\n", expect=r"PONG\r\n$") == (True, "reply of 65506 bytes")
    assert _fake(b"+PONG\xe9", expect="^\\+PONG\xe9$", family=socket.AF_INET6) == (True, "reply of 6 bytes")
