"""The HTTP check's own client (`checks.protocols.httpclient`): request bytes, response framing, and
hostile replies (garbage, endless headers, bodies cut short), against raw servers on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import pytest

from checks.base import CheckTarget, run_check
from checks.protocols.httpclient import MAX_HEAD, ResponseError, encode_request, fetch, host_header
from checks.spec import CheckSpec

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def raw_server(reply: bytes | Handler, *, close: bool = True):
    """A server on 127.0.0.1 that reads one request head and sends ``reply`` (then closes when
    ``close``), or runs ``reply`` as its handler; yields ``(port, heads)``: the request heads."""
    heads: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if callable(reply):
                await reply(reader, writer)
                return
            heads.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(reply)
            await writer.drain()
            if not close:
                await asyncio.sleep(30)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield srv.sockets[0].getsockname()[1], heads
    finally:
        srv.close()
        await srv.wait_closed()


def http_target(port: int, **spec: object) -> CheckTarget:
    return CheckTarget("k", f"rs 127.0.0.1:{port}", None, 80, "127.0.0.1", port, CheckSpec(type="http", **spec))  # type: ignore[arg-type]


# --- request bytes (RFC 9112 section 3, RFC 9110 section 7.2) ------------------------------------


def test_request_bytes():
    assert encode_request("GET", "/healthz", "10.0.0.2") == (
        b"GET /healthz HTTP/1.1\r\n"
        b"Host: 10.0.0.2\r\n"
        b"User-Agent: directord-healthcheck\r\n"
        b"Accept: */*\r\n"
        b"Connection: close\r\n"
        b"\r\n"
    )
    # a method that may carry a body announces an empty one (RFC 9110 section 8.6)
    assert encode_request("POST", "/", "h") == (
        b"POST / HTTP/1.1\r\nHost: h\r\nUser-Agent: directord-healthcheck\r\nAccept: */*\r\n"
        b"Content-Length: 0\r\nConnection: close\r\n\r\n"
    )


def test_request_target_is_encoded_and_has_no_fragment():
    assert encode_request("GET", "status page?x=1 2#top", "h").startswith(b"GET /status%20page?x=1%202 HTTP/1.1\r\n")
    assert encode_request("GET", "/caf\u00e9/%41", "h").startswith(b"GET /caf%C3%A9/%41 HTTP/1.1\r\n")
    assert encode_request("GET", "/a\r\nX-Evil: 1", "h").startswith(b"GET /a%0D%0AX-Evil:%201 HTTP/1.1\r\n")


def test_request_refuses_header_injection():
    with pytest.raises(ValueError, match="control character"):
        encode_request("GET", "/", "www.example.com\r\nX-Evil: 1")
    with pytest.raises(ValueError, match="method"):
        encode_request("GET /x", "/", "h")


def test_default_host_header():
    assert host_header("10.0.0.2", 80, False) == "10.0.0.2"
    assert host_header("10.0.0.2", 8080, False) == "10.0.0.2:8080"
    assert host_header("10.0.0.2", 443, True) == "10.0.0.2"
    assert host_header("10.0.0.2", 80, True) == "10.0.0.2:80"
    assert host_header("2001:db8::2", 443, True) == "[2001:db8::2]"
    assert host_header("fe80::1%eth0", 8080, False) == "[fe80::1]:8080"


# --- framing (RFC 9112 section 6.3) ---------------------------------------------------------------


async def test_chunked_body_is_read():
    reply = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nall \r\n3\r\nok!\r\n0\r\n\r\n"
    async with raw_server(reply, close=False) as (port, _):
        assert await fetch("127.0.0.1", port, encode_request("GET", "/", "h"), body=True) == (200, b"all ok!")
        result = await run_check(http_target(port, expect_body="all ok!", timeout=2.0))
    assert (result.ok, result.reason) == (True, "HTTP 200")


async def test_content_length_body_is_read_without_waiting_for_the_close():
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
    async with raw_server(reply, close=False) as (port, _):
        started = time.monotonic()
        assert await fetch("127.0.0.1", port, encode_request("GET", "/", "h"), body=True) == (200, b"hello")
    assert time.monotonic() - started < 1


async def test_body_until_close():
    async with raw_server(b"HTTP/1.0 200 OK\r\n\r\nno length, ends at the close") as (port, _):
        result = await run_check(http_target(port, expect_body="ends at the close$", timeout=2.0))
    assert (result.ok, result.reason) == (True, "HTTP 200")


async def test_body_cut_short_fails():
    async with raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nok, and then") as (port, _):
        result = await run_check(http_target(port, expect_body="ok", timeout=2.0))
        plain = await run_check(http_target(port, timeout=2.0))
    assert (result.ok, result.reason) == (False, "bad HTTP body: the connection closed before the end of the body")
    assert (plain.ok, plain.reason) == (True, "HTTP 200")  # no body wanted: the headers decide


async def test_body_kept_is_bounded():
    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        while True:  # chunks for ever
            writer.write(b"400\r\n" + b"y" * 1024 + b"\r\n")
            await writer.drain()

    async with raw_server(endless) as (port, _):
        status, body = await asyncio.wait_for(fetch("127.0.0.1", port, encode_request("GET", "/", "h"), body=True), 5)
    assert status == 200 and body == b"y" * 65536


async def test_interim_100_continue_is_skipped():
    reply = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n"
    async with raw_server(reply) as (port, _):
        result = await run_check(http_target(port, timeout=2.0))
    assert (result.ok, result.reason) == (False, "HTTP 503")


async def test_head_with_expect_body_does_not_wait_for_a_body():
    # a response to HEAD announces the length of the body it does not send (RFC 9110 section 9.3.2)
    async with raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", close=False) as (port, heads):
        result = await run_check(http_target(port, method="HEAD", expect_body="^$", timeout=2.0))
    assert (result.ok, result.reason) == (True, "HTTP 200")
    assert heads[0].startswith(b"HEAD / HTTP/1.1\r\n")


async def test_lines_ended_by_a_bare_lf_are_accepted():
    async with raw_server(b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok") as (port, _):
        result = await run_check(http_target(port, expect_body="^ok$", timeout=2.0))
    assert (result.ok, result.reason) == (True, "HTTP 200")


async def test_host_header_names_a_port_other_than_the_default():
    async with raw_server(b"HTTP/1.1 204 No Content\r\n\r\n") as (port, heads):
        target = http_target(port, timeout=2.0, expect_status=frozenset({204}))
        result = await run_check(target)
    assert result.ok, result
    assert f"\r\nHost: 127.0.0.1:{port}\r\n".encode() in heads[0]
    assert b"\r\nConnection: close\r\n" in heads[0]


# --- hostile replies ---------------------------------------------------------------------------


async def test_garbage_is_a_bad_response():
    async with raw_server(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n") as (port, _):
        result = await run_check(http_target(port, timeout=2.0))
    assert not result.ok and result.reason.startswith("bad HTTP response: "), result.reason
    assert not result.timed_out


async def test_bad_status_line_is_a_bad_response():
    async with raw_server(b"HTTP/1.1 abc OK\r\n\r\n") as (port, _):
        result = await run_check(http_target(port, timeout=2.0))
    assert not result.ok and result.reason.startswith("bad HTTP response: "), result.reason


async def test_endless_headers_fail_at_the_bound():
    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\n")
        while True:
            writer.write(b"X-Filler: " + b"z" * 1000 + b"\r\n")
            await writer.drain()

    async with raw_server(endless) as (port, _):
        started = time.monotonic()
        result = await run_check(http_target(port, timeout=5.0))
    assert (result.ok, result.reason) == (False, f"bad HTTP response: headers longer than {MAX_HEAD} bytes")
    assert time.monotonic() - started < 3


async def test_closed_inside_the_headers():
    async with raw_server(b"HTTP/1.1 200 OK\r\nContent-Le") as (port, _):
        result = await run_check(http_target(port, timeout=2.0))
    assert (result.ok, result.reason) == (False, "bad HTTP response: the connection closed inside the headers")


async def test_silent_server_times_out_and_leaves_no_connection():
    accepted: list[asyncio.StreamWriter] = []
    closed = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        await reader.read()  # until the checker closes
        closed.set()

    async with raw_server(silent) as (port, _):
        started = time.monotonic()
        result = await run_check(http_target(port, timeout=0.2))
        elapsed = time.monotonic() - started
        await asyncio.wait_for(closed.wait(), 2)  # the check closed its connection
    assert (result.ok, result.reason, result.timed_out) == (False, "timeout after 0.2 s", True)
    assert 0.15 <= elapsed < 0.7


async def test_fetch_refuses_a_name():
    with pytest.raises(ValueError, match="not an IP address"):
        await fetch("localhost", 80, encode_request("GET", "/", "h"))


def test_response_error_is_the_reason():
    assert str(ResponseError("server closed the connection")) == "server closed the connection"


# --- on uvloop, the checker child's loop ---------------------------------------------------------


def test_checks_on_uvloop():
    uvloop = pytest.importorskip("uvloop")

    async def main() -> list[tuple[bool, str]]:
        results = []
        chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
        async with raw_server(chunked) as (port, heads):
            results.append(await run_check(http_target(port, expect_body="^ok$", timeout=2.0)))
            tcp = CheckTarget("k", "rs", None, 80, "127.0.0.1", port, CheckSpec(type="tcp", timeout=2.0))
            results.append(await run_check(tcp))
        async with raw_server(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n") as (port, _):
            results.append(await run_check(http_target(port, timeout=2.0)))
        async with raw_server(b"garbage\r\n\r\n") as (port, _):
            results.append(await run_check(http_target(port, timeout=2.0)))
        results.append(await run_check(http_target(port, timeout=2.0)))  # closed: refused
        results.append(await run_check(CheckTarget("k", "rs", None, 80, "127.0.0.1", port, CheckSpec(type="tcp"))))
        assert heads[0].startswith(b"GET / HTTP/1.1\r\n")
        return [(r.ok, r.reason) for r in results]

    assert uvloop.run(main()) == [
        (True, "HTTP 200"),
        (True, "connected"),
        (False, "HTTP 503"),
        (False, "bad HTTP response: expected HTTP/, RTSP/ or ICE/"),
        (False, "connection refused"),
        (False, "connection refused"),
    ]
