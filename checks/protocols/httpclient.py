"""A lean HTTP/1.1 client for health checks: one request per connection, on an asyncio protocol.

`fetch` connects a fresh socket to a real server, writes one pre-encoded request
(`encode_request`, cached), parses the response with httptools (llhttp, Node.js's parser) and
returns its status and, when asked, the first `MAX_BODY` bytes of its body.  Then the
connection is aborted (see `fetch`).  It does what a check needs and nothing else: no
keep-alive, no redirects, no cookies, no proxies, no content decoding (the request asks for
none), no DNS (addresses are numeric, `checks.protocols.tcp.socket_address`).  A check costs a socket,
a transport, a protocol, a parser and two futures; no stream reader or writer.

Hostile responses are bounded: at most `MAX_HEAD` bytes (64 KiB) of status line and
headers, at most `MAX_BODY` bytes of body kept; a response that is not HTTP/1.x, or whose
headers run past `MAX_HEAD`, or whose body stops before its announced end, fails with a
`ResponseError` naming what went wrong.  The time limit is the caller's
(`checks.base.run_check`); every await is cancellable and the connection is closed on
cancellation too.

Framing follows RFC 9112 section 6.3 (llhttp): ``Content-Length``, ``chunked``, or the body
runs until the server closes.  Interim ``1xx`` responses other than ``101`` are skipped
(RFC 9110 section 15.2); a response to ``HEAD`` has no body (RFC 9110 section 9.3.2).
"""

from __future__ import annotations

import asyncio
import functools
import socket
import ssl
from urllib.parse import quote

import httptools

from checks.protocols.tcp import socket_address

__all__ = ["fetch", "encode_request", "host_header", "ResponseError", "MAX_BODY", "MAX_HEAD", "USER_AGENT"]

#: Bytes of the response body kept for ``expect_body`` (64 KiB); the rest is not read.
MAX_BODY = 64 * 1024

#: Most bytes of status line and headers (64 KiB); past it the response fails.
MAX_HEAD = 64 * 1024

#: User-Agent sent with every check, so real servers can tell checks apart in logs.
USER_AGENT = "directord-healthcheck"

#: Methods sent without ``Content-Length: 0`` (they take no body; others announce an empty one).
_BODILESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "CONNECT"})

#: Characters of a path sent as they are; any other is percent-encoded as UTF-8 (RFC 3986
#: section 2.1).  ``%`` is kept: a path may already be encoded.
_PATH_SAFE = "/:@!$&'()*+,;=?%~"


class ResponseError(Exception):
    """The real server's reply is not an acceptable HTTP response.

    ``str(error)`` is the check's whole reason: ``"server closed the connection"``,
    ``"bad HTTP response: invalid status code"``, ``"bad HTTP response: headers longer than
    65536 bytes"``, ``"bad HTTP body: the connection closed before the end of the body"``.
    """


@functools.lru_cache(maxsize=8192)
def host_header(address: str, port: int, https: bool) -> str:
    """The default ``Host`` of a check (RFC 9110 section 7.2): the address, an IPv6 one in
    brackets (RFC 3986 section 3.2.2) without its zone, then ``:port`` unless the port is the
    scheme's default (80 for http, 443 for https).

    ``("10.0.0.2", 80, False)`` -> ``"10.0.0.2"``; ``("2001:db8::2", 8443, True)`` ->
    ``"[2001:db8::2]:8443"``.
    """
    host = f"[{address.split('%', 1)[0]}]" if ":" in address else address
    return host if port == (443 if https else 80) else f"{host}:{port}"


@functools.lru_cache(maxsize=8192)
def encode_request(method: str, path: str, host: str) -> bytes:
    """The bytes of a check's request (RFC 9112 section 3), cached per (method, path, host).

    ``encode_request("GET", "/healthz", "10.0.0.2")`` is
    ``b"GET /healthz HTTP/1.1\\r\\nHost: 10.0.0.2\\r\\nUser-Agent: directord-healthcheck\\r\\n"
    b"Accept: */*\\r\\nConnection: close\\r\\n\\r\\n"``.  A ``path`` without a leading ``/``
    gets one; its fragment (``#...``) is not sent; characters outside RFC 3986's path and query
    characters are percent-encoded.  A method other than GET, HEAD, OPTIONS, TRACE and CONNECT
    also sends ``Content-Length: 0``.

    Raises:
        ValueError: ``method`` is not a token, or ``host`` holds a control character
            (it would end the header).
    """
    if not method or not all(33 <= ord(c) < 127 for c in method):
        raise ValueError(f"bad HTTP method {method!r}")
    if any(ord(c) < 32 or ord(c) == 127 for c in host):
        raise ValueError(f"bad Host header {host!r}: control character")
    path = path.split("#", 1)[0]
    if not path.startswith("/"):
        path = "/" + path
    target = quote(path, safe=_PATH_SAFE, encoding="utf-8")
    length = "" if method in _BODILESS_METHODS else "Content-Length: 0\r\n"
    return (
        f"{method} {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {USER_AGENT}\r\n"
        f"Accept: */*\r\n{length}Connection: close\r\n\r\n"
    ).encode()


class _Head(asyncio.Protocol):
    """Send the request, parse the response, resolve ``done`` with ``(status, body)`` at the
    end of the final response's headers (``body`` is ``b""``)."""

    __slots__ = ("done", "request", "parser", "head_left", "status", "transport")

    def __init__(self, done: asyncio.Future[tuple[int, bytes]], request: bytes) -> None:
        self.done = done
        self.request = request
        self.parser = httptools.HttpResponseParser(self)
        # lines ended by a bare LF are accepted, as aiohttp and LWP (ldirectord) accept them
        self.parser.set_dangerous_leniencies(lenient_optional_cr_before_lf=True)
        self.head_left = MAX_HEAD  # bytes still allowed before the end of the headers; -1 after
        self.status = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if self.done.done():
            return
        try:
            left = self.head_left
            if left < 0:
                self.parser.feed_data(data)
            elif len(data) <= left:
                self.head_left = left - len(data)
                self.parser.feed_data(data)
            else:  # the headers must end within the allowance; the rest is body
                self.parser.feed_data(data[:left])
                if self.head_left >= 0:
                    raise ResponseError(f"bad HTTP response: headers longer than {MAX_HEAD} bytes")
                self.parser.feed_data(data[left:])
        except httptools.HttpParserUpgrade:
            self._finish()
        except httptools.HttpParserCallbackError as exc:
            if not self.done.done():
                self._fail(exc.__context__ or exc)
        except httptools.HttpParserError as exc:
            self._fail(ResponseError(f"bad HTTP response: {_parser_reason(exc)}"))
        except ResponseError as exc:
            self._fail(exc)

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:  # interim: the final response follows
            return
        self.status = status
        self.head_left = -1
        self._headers_done()

    def _headers_done(self) -> None:
        self._finish()

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result((self.status, b""))

    def _fail(self, exc: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(exc)

    def eof_received(self) -> bool | None:
        self._eof()
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        del self.transport
        if exc is not None:
            self._fail(exc)
        else:
            self._eof()

    def _eof(self) -> None:
        if self.done.done():
            return
        if self.head_left == MAX_HEAD:
            self._fail(ResponseError("server closed the connection"))
        else:
            self._fail(ResponseError("bad HTTP response: the connection closed inside the headers"))


class _Body(_Head):
    """`_Head` that also reads the body: resolves at the end of the message, at `MAX_BODY`
    bytes of body, or when the server closes a body that runs until the close."""

    __slots__ = ("chunks", "size", "framed")

    def __init__(self, done: asyncio.Future[tuple[int, bytes]], request: bytes) -> None:
        super().__init__(done, request)
        self.chunks: list[bytes] = []
        self.size = 0
        self.framed = False  # Content-Length or Transfer-Encoding: the body has a known end

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) in (14, 17) and name.lower() in (b"content-length", b"transfer-encoding"):
            self.framed = True

    def on_message_begin(self) -> None:
        self.framed = False  # again for the final response after an interim one

    def _headers_done(self) -> None:
        pass  # the body follows

    def on_body(self, body: bytes) -> None:
        if self.head_left >= 0 or self.done.done():
            return
        self.chunks.append(body)
        self.size += len(body)
        if self.size >= MAX_BODY:
            self._finish()

    def on_message_complete(self) -> None:
        if self.head_left < 0:
            self._finish()

    def _finish(self) -> None:
        if not self.done.done():
            body = b"".join(self.chunks)
            self.done.set_result((self.status, body[:MAX_BODY]))

    def _eof(self) -> None:
        if self.done.done():
            return
        if self.head_left >= 0:
            super()._eof()
        elif self.framed:
            self._fail(ResponseError("bad HTTP body: the connection closed before the end of the body"))
        else:  # the body ran until the close (RFC 9112 section 6.3, point 8)
            self._finish()


def _parser_reason(exc: Exception) -> str:
    text = str(exc).strip().rstrip(".")
    return text[:1].lower() + text[1:] if text else type(exc).__name__


async def fetch(
    address: str,
    port: int,
    request: bytes,
    *,
    tls: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    body: bool = False,
) -> tuple[int, bytes]:
    """Send ``request`` (from `encode_request`) to ``address``:``port`` on a new connection and
    read the response.

    Args:
        address: the real server's numeric IPv4/IPv6 address (scoped ``fe80::1%eth0`` too).
        port: its TCP port.
        request: the request's bytes.
        tls: the client context for HTTPS (`checks.protocols.tls.context_for`), ``None`` for plain HTTP.
        server_hostname: the TLS server name (SNI and the name ``full`` verification checks);
            ``None`` means the address (no SNI is sent for an address).
        body: read the body (up to `MAX_BODY` bytes) rather than stop at the end of the headers.
            Give ``False`` for a ``HEAD`` request, whose response has no body.

    Returns:
        ``(status, body)``: the final response's status code (an int, 101..599 or whatever
        three digits the server sent) and the first `MAX_BODY` bytes of its body
        (``b""`` when ``body`` is false).

    Raises:
        OSError: the connection failed (``ConnectionRefusedError``...) or broke.
        ssl.SSLError: the TLS handshake failed (``ssl.SSLCertVerificationError`` for a
            certificate that does not verify).
        ResponseError: the reply is not an acceptable HTTP response.
        ValueError: ``address`` is not a numeric IP address.

    The connection is aborted when the response is read (or on any error or cancellation):
    the socket is closed at once, without waiting for the server's FIN or a TLS
    ``close_notify``.  The server has sent its response by then; an unread rest of a body
    makes the kernel answer it with a reset, as any client closing early does.
    """
    family, _sockaddr = socket_address(address, port)  # refuses a name: no DNS
    loop = asyncio.get_running_loop()
    done: asyncio.Future[tuple[int, bytes]] = loop.create_future()
    protocol = (_Body if body else _Head)(done, request)
    try:
        if tls is None:
            transport, _ = await loop.create_connection(
                lambda: protocol, address, port, family=family, flags=socket.AI_NUMERICHOST
            )
        else:
            name = server_hostname if server_hostname is not None else address.split("%", 1)[0]
            transport, _ = await loop.create_connection(
                lambda: protocol, address, port, family=family, flags=socket.AI_NUMERICHOST, ssl=tls,
                server_hostname=name,
            )  # fmt: skip
        try:
            return await done
        finally:
            transport.abort()  # no more data_received; connection_lost comes soon
    finally:
        done.cancel()  # a no-op once resolved; else late callbacks find it done
        del protocol.parser  # the parser holds the protocol's methods: no cycle left for the GC
