"""The ``dns`` check (`checks.protocols.dns`): its query and reply matching byte for byte, against a real
DNS server (dnsmasq, `dnsserver`), and against hostile fake servers (strays, spoofs, garbage,
truncation, silence)."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from checkhelpers import bare_target, run_checks
from dnsserver import free_port, start_dnsmasq

from checks.base import CheckTarget, run_check
from checks.protocols.dns import MAX_STRAYS, TRUNCATED, answers_query, judge_reply, query_wire

# RFC 1035 section 4.1.1 header: ID 0; flags 0x0100 (QR 0, opcode 0 QUERY, RD 1); QDCOUNT 1;
# AN/NS/ARCOUNT 0.  Section 4.1.2 question: QNAME as labels (2 "ok", 4 "test", root 0), QTYPE
# A (1), QCLASS IN (1).
OK_A = bytes.fromhex("0000 0100 0001 0000 0000 0000 02 6f6b 04 74657374 00 0001 0001")
# the same question answered: ID 0x1234, flags 0x8580 (QR, AA, RD, RA; rcode 0), ANCOUNT 1; the
# answer's owner is a pointer to offset 12 (c00c, section 4.1.4), type A, class IN, TTL 0,
# RDLENGTH 4, 192.0.2.7 (section 3.4.1)
OK_REPLY = bytes.fromhex(
    "1234 8580 0001 0001 0000 0000 02 6f6b 04 74657374 00 0001 0001 c00c 0001 0001 00000000 0004 c0000207"
)


def _query(qid: int = 0x1234) -> bytes:
    return qid.to_bytes(2, "big") + OK_A[2:]


def test_query_wire_bytes():
    assert query_wire("ok.test", "A") == OK_A
    assert query_wire("ok.test.", "a") == OK_A
    # MX is type 15 (RFC 1035 section 3.2.2), AAAA 28 (RFC 3596 section 2.1); the root name is one 0 byte
    assert query_wire("ok.test", "MX")[-4:] == b"\x00\x0f\x00\x01"
    assert query_wire(".", "AAAA") == bytes.fromhex("0000 0100 0001 0000 0000 0000 00 001c 0001")


def test_answers_query():
    query = _query()
    assert answers_query(OK_REPLY, query)
    assert answers_query(OK_REPLY.replace(b"\x02ok\x04test", b"\x02OK\x04TeSt"), query)  # case (RFC 1035 2.3.3)
    assert not answers_query(OK_REPLY, _query(0x1235))  # another ID
    assert not answers_query(query, query)  # QR not set: a query, not a reply
    assert not answers_query(OK_REPLY.replace(b"\x02ok", b"\x02no"), query)  # another name
    assert not answers_query(OK_REPLY[:21] + b"\x00\x1c" + OK_REPLY[23:], query)  # another type (AAAA)
    assert not answers_query(OK_REPLY[:2] + b"\x8d" + OK_REPLY[3:], query)  # opcode 1 (IQUERY)
    assert not answers_query(OK_REPLY[:20], query)  # question cut short
    assert not answers_query(OK_REPLY[:11], query)  # header cut short
    assert not answers_query(b"", query)
    assert not answers_query(OK_REPLY[:4] + b"\x00\x02" + OK_REPLY[6:], query)  # two questions
    # an error without its question (RFC 1035 7.3 allows it): REFUSED (5) counts, NOERROR does not
    refused = bytes.fromhex("1234 8105 0000 0000 0000 0000")
    assert answers_query(refused, query)
    assert not answers_query(bytes.fromhex("1234 8100 0000 0000 0000 0000"), query)


def test_judge_reply_bytes():
    async def judge(reply: bytes, rcode: str = "NOERROR", expect: str | None = None, udp: bool = True):
        return await judge_reply(reply, rcode, expect, udp=udp)

    async def scenario():
        return [
            await judge(OK_REPLY),
            await judge(OK_REPLY, expect=r"IN A 192\.0\.2\.7$"),
            await judge(OK_REPLY, expect=r"192\.0\.2\.8"),
            await judge(OK_REPLY, "NXDOMAIN"),
            await judge(OK_REPLY[:2] + b"\x87" + OK_REPLY[3:]),  # TC (0x02 of the third byte)
            await judge(OK_REPLY[:2] + b"\x87" + OK_REPLY[3:], udp=False),
            await judge(OK_REPLY[:-3], expect="."),  # the address cut short
            await judge(OK_REPLY[:-3]),  # without expect the records are not decoded
            await judge(OK_REPLY[:3] + b"\x83" + OK_REPLY[4:]),  # rcode 3
            await judge(OK_REPLY[:3] + b"\x8c" + OK_REPLY[4:]),  # rcode 12: unassigned, no name
        ]

    assert asyncio.run(scenario()) == [
        (True, "DNS NOERROR, 1 answer"),
        (True, "DNS NOERROR, 1 answer"),
        (False, r"answer does not match '192\\.0\\.2\\.8'"),
        (False, "DNS rcode NOERROR"),
        (False, TRUNCATED),
        (False, "reply truncated (TC)"),
        (False, "malformed DNS reply: DNS message is malformed."),
        (True, "DNS NOERROR, 1 answer"),
        (False, "DNS rcode NXDOMAIN"),
        (False, "DNS rcode 12"),
    ]


def _target(port: int, rip: str = "127.0.0.1", **spec) -> CheckTarget:
    return bare_target(
        port, rip, **({"type": "dns", "query_name": "ok.test", "transport": "udp", "timeout": 2.0} | spec)
    )


def test_against_dnsmasq():
    with start_dnsmasq() as port:
        cases = {
            "udp": _target(port, expect=r"^ok\.test\. \d+ IN A 192\.0\.2\.7$"),
            "tcp": _target(port, transport="tcp", expect=r"192\.0\.2\.7"),
            "mx": _target(port, query_type="MX", expect=r"MX 10 mail\.ok\.test\.$"),
            "nx": _target(port, query_name="nx.test"),
            "nx expected": _target(port, query_name="nx.test", expect_rcode="NXDOMAIN"),
            "nx expected tcp": _target(port, query_name="nx.test", expect_rcode="nxdomain", transport="tcp"),
            "refused": _target(port, query_name="elsewhere.test"),
            "wrong expect": _target(port, expect=r"192\.0\.2\.8"),
            "wrong expect tcp": _target(port, transport="tcp", expect=r"192\.0\.2\.8"),
            "truncated": _target(port, query_name="big.test", query_type="TXT"),
            "big over tcp": _target(port, query_name="big.test", query_type="TXT", transport="tcp", expect="11x{98}"),
        }
        results = dict(zip(cases, run_checks(list(cases.values())), strict=True))
    stopped = run_checks([_target(port), _target(port, transport="tcp")])
    seen = {name: result[:2] for name, result in results.items()}
    assert seen == {
        "udp": (True, "DNS NOERROR, 1 answer"),
        "tcp": (True, "DNS NOERROR, 1 answer"),
        "mx": (True, "DNS NOERROR, 1 answer"),
        "nx": (False, "DNS rcode NXDOMAIN"),
        "nx expected": (True, "DNS NXDOMAIN, 0 answers"),
        "nx expected tcp": (True, "DNS NXDOMAIN, 0 answers"),
        "refused": (False, "DNS rcode REFUSED"),
        "wrong expect": (False, r"answer does not match '192\\.0\\.2\\.8'"),
        "wrong expect tcp": (False, r"answer does not match '192\\.0\\.2\\.8'"),
        "truncated": (False, TRUNCATED),
        "big over tcp": (True, "DNS NOERROR, 12 answers"),
    }
    # the server stopped: the ICMP port unreachable fails a UDP check at once, TCP is refused
    assert [result[:3] for result in stopped] == [
        (False, "ICMP port unreachable", False),
        (False, "connection refused", False),
    ]
    assert all(result[3] < 0.5 for result in stopped), stopped


def test_silent_servers_time_out():
    """A UDP socket that receives and never answers, a TCP listener that accepts (in its backlog)
    and never answers: the check ends at its time limit."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
        udp.bind(("127.0.0.1", 0))
        tcp.bind(("127.0.0.1", 0))
        tcp.listen(8)
        results = run_checks(
            [
                _target(udp.getsockname()[1], timeout=0.3),
                _target(tcp.getsockname()[1], transport="tcp", timeout=0.3),
            ]
        )
        assert udp.recv(512)[2:] == OK_A[2:]  # the query did arrive
    for ok, reason, timed_out, duration in results:
        assert (ok, reason, timed_out) == (False, "timeout after 0.3 s", True)
        assert 0.3 <= duration < 0.6


async def _fake_udp_server(sock: socket.socket, replies) -> None:
    """Answer the first query on ``sock`` with ``replies(query)``: a list of datagrams."""
    loop = asyncio.get_running_loop()
    query, peer = await loop.sock_recvfrom(sock, 65535)
    for datagram in replies(query):
        await loop.sock_sendto(sock, datagram, peer)


def _answer(query: bytes, reply: bytes = OK_REPLY) -> bytes:
    return query[:2] + reply[2:]


def _hostile_udp(replies, **spec) -> tuple[bool, str, bool, float]:
    async def scenario():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            server = asyncio.create_task(_fake_udp_server(sock, replies))
            try:
                result = await run_check(_target(sock.getsockname()[1], **spec), None)
            finally:
                server.cancel()
            return result.ok, result.reason, result.timed_out, result.duration

    return asyncio.run(scenario())


def test_strays_and_spoofs_are_ignored():
    def replies(query: bytes) -> list[bytes]:
        other_id = bytes([query[0] ^ 0xFF, query[1]])
        return [
            other_id + OK_REPLY[2:],  # another ID
            _answer(query, OK_REPLY.replace(b"\x02ok", b"\x02no")),  # another question
            _answer(query, OK_REPLY[:3] + b"\x83" + OK_REPLY[4:])[:11],  # a short header
            query,  # the query itself (QR not set)
            b"",
            _answer(query),
        ]

    assert _hostile_udp(replies, expect=r"192\.0\.2\.7")[:3] == (True, "DNS NOERROR, 1 answer", False)


def test_a_flood_of_strays_fails():
    def replies(query: bytes) -> list[bytes]:
        return [bytes([query[0] ^ 0xFF, query[1]]) + OK_REPLY[2:]] * (MAX_STRAYS + 1) + [_answer(query)]

    ok, reason, timed_out, _ = _hostile_udp(replies)
    assert (ok, reason, timed_out) == (False, f"{MAX_STRAYS + 1} datagrams that do not answer the query", False)


def test_garbage_and_huge_replies_fail():
    def garbage(query: bytes) -> list[bytes]:
        return [query[:2] + OK_REPLY[2:30] + b"\xff" * 40]

    def huge(query: bytes) -> list[bytes]:
        return [_answer(query) + bytes(65000)]  # the trailing bytes are ignored (ignore_trailing)

    def huge_garbage(query: bytes) -> list[bytes]:
        return [_answer(query)[:-6] + b"\xff" * 65000]

    assert _hostile_udp(garbage, expect=".")[:2] == (False, "malformed DNS reply: DNS message is malformed.")
    assert _hostile_udp(huge, expect=r"192\.0\.2\.7")[:2] == (True, "DNS NOERROR, 1 answer")
    ok, reason, _, _ = _hostile_udp(huge_garbage, expect=".")
    assert not ok and reason.startswith("malformed DNS reply"), reason


def _hostile_tcp(send, **spec) -> tuple[bool, str, bool, float]:
    """A TCP server that reads the query and then calls ``send(conn, query)``."""

    async def scenario():
        loop = asyncio.get_running_loop()
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(4)
            listener.setblocking(False)

            async def serve():
                conn, _ = await loop.sock_accept(listener)
                with conn:
                    data = b""
                    while len(data) < 2 or len(data) < 2 + int.from_bytes(data[:2], "big"):
                        data += await loop.sock_recv(conn, 4096)
                    await send(loop, conn, data[2:])

            server = asyncio.create_task(serve())
            try:
                result = await run_check(_target(listener.getsockname()[1], transport="tcp", **spec), None)
            finally:
                server.cancel()
            return result.ok, result.reason, result.timed_out, result.duration

    return asyncio.run(scenario())


def test_tcp_hostile_replies():
    async def in_pieces(loop, conn, query):
        reply = _answer(query)
        framed = len(reply).to_bytes(2, "big") + reply
        for i in range(len(framed)):  # one byte at a time
            await loop.sock_sendall(conn, framed[i : i + 1])
            await asyncio.sleep(0.001)

    async def closes_early(loop, conn, query):
        await loop.sock_sendall(conn, b"\x00\x40" + _answer(query)[:20])

    async def other_id(loop, conn, query):
        reply = _answer(bytes([query[0] ^ 1, query[1]]))
        await loop.sock_sendall(conn, len(reply).to_bytes(2, "big") + reply)

    async def huge(loop, conn, query):
        await loop.sock_sendall(conn, b"\xff\xff" + _answer(query)[:30] + b"\xff" * (65535 - 30) + b"more")

    async def empty(loop, conn, query):
        await loop.sock_sendall(conn, b"\x00\x00")

    assert _hostile_tcp(in_pieces)[:2] == (True, "DNS NOERROR, 1 answer")
    assert _hostile_tcp(closes_early)[:2] == (False, "server closed the connection")
    assert _hostile_tcp(other_id)[:2] == (False, "reply does not answer the query (another ID or question)")
    assert _hostile_tcp(huge, expect=".")[:2] == (False, "malformed DNS reply: DNS message is malformed.")
    assert _hostile_tcp(huge)[:2] == (True, "DNS NOERROR, 1 answer")  # header and question alone
    assert _hostile_tcp(empty)[:2] == (False, "reply does not answer the query (another ID or question)")


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_ipv6_loopback(transport):
    """Over ::1 (a fake server: dnsmasq here listens on 127.0.0.1 only)."""
    family = socket.AF_INET6
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    try:
        sock = socket.socket(family, kind)
        sock.bind(("::1", free_port()))
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")

    async def scenario():
        loop = asyncio.get_running_loop()
        sock.setblocking(False)
        if transport == "udp":
            server = asyncio.create_task(_fake_udp_server(sock, lambda q: [_answer(q)]))
        else:
            sock.listen(1)

            async def serve():
                conn, _ = await loop.sock_accept(sock)
                with conn:
                    data = await loop.sock_recv(conn, 4096)
                    reply = _answer(data[2:])
                    await loop.sock_sendall(conn, len(reply).to_bytes(2, "big") + reply)

            server = asyncio.create_task(serve())
        try:
            result = await run_check(_target(sock.getsockname()[1], rip="::1", transport=transport), None)
        finally:
            server.cancel()
        return result.ok, result.reason

    with sock:
        started = time.monotonic()
        assert asyncio.run(scenario()) == (True, "DNS NOERROR, 1 answer")
        assert time.monotonic() - started < 1
