"""HTTP and HTTPS checks with aiohttp.

One request per check: ``spec.method`` on ``spec.path`` of the real server
(``http://RIP:port/path``, IPv6 RIPs in brackets, RFC 3986 section 3.2.2).  The
real server is up when the status is in ``spec.expect_status`` and, if
``spec.expect_body`` is set, the regular expression is found in the first
64 KiB of the body.  ``expect_body`` is matched with RE2 (google-re2), whose
time is linear in the body's length whatever the pattern: a pattern that
backtracks catastrophically in Python's `re` cannot hold the checker.  Its
slowest path still grows with the compiled pattern (up to half a second for a
64 KiB body at `checks.spec.MAX_BODY_PROGRAM` instructions), so a search that
may take more than about a millisecond runs on a thread of its own (one, shared
by all checks; RE2 releases the GIL): the event loop goes on and the check's
time limit holds (a search still waiting for the thread when it fires is
dropped).  RE2 has no backreferences nor lookaround; a pattern it cannot
compile, or one of more instructions, fails the check
(``"bad expect_body regex: ..."``) without a request.  Without ``expect_body`` the body is not read:
the check ends with the status line and headers.

All checks share one `aiohttp.ClientSession` (`make_session`) whose connector
never keeps a connection alive between checks (``force_close``) and has no
connection limit (a limit would queue one target's check behind another's).
Redirects are not followed: a 301 is status 301.  Cookies are not kept.  The
time limit is applied by the caller (`checks.base.run_check`).
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import aiohttp
import re2

from checks.spec import MAX_BODY_PROGRAM, CheckSpec
from checks.tls import context_for

if TYPE_CHECKING:  # pragma: no cover
    from checks.base import CheckTarget

__all__ = ["check_http", "make_session", "build_url", "compile_body_pattern", "body_matches", "MAX_BODY", "USER_AGENT"]

#: Bytes of the response body searched by ``expect_body`` (64 KiB).
MAX_BODY = 64 * 1024

#: Body bytes times pattern instructions up to which a body is searched on the event loop
#: itself (a millisecond at worst); a larger search runs on the matcher thread.
INLINE_SEARCH = 1 << 17

_matcher: ThreadPoolExecutor | None = None

#: User-Agent sent with every check, so real servers can tell checks apart in logs.
USER_AGENT = "directord-healthcheck"


def make_session() -> aiohttp.ClientSession:
    """Create the session shared by all HTTP(S) checks; call inside the loop.

    The connector closes every connection after its response
    (``force_close=True``), has no limit on concurrent connections
    (``limit=0``), keeps no cookies and ignores proxy environment variables.
    The caller owns the session and must ``await session.close()``.
    """
    connector = aiohttp.TCPConnector(force_close=True, limit=0, limit_per_host=0)
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None),  # bounded by run_check instead
        headers={"User-Agent": USER_AGENT},
        trust_env=False,
        raise_for_status=False,
    )


@functools.lru_cache(maxsize=4096)
def build_url(scheme: str, address: str, port: int, path: str) -> str:
    """``http://10.0.0.2:80/healthz`` or ``https://[2001:db8::2]:443/``.

    ``path`` should start with ``/``; one is added when it does not.
    """
    host = f"[{address}]" if ":" in address else address
    if not path.startswith("/"):
        path = "/" + path
    return f"{scheme}://{host}:{port}{path}"


def _re2_options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # a bad pattern is reported in the check's reason, not on stderr
    return options


_OPTIONS = _re2_options()


@functools.lru_cache(maxsize=1024)
def compile_body_pattern(pattern: str) -> re2._Regexp | str:
    """Compile an ``expect_body`` pattern with RE2; results are cached.

    Returns:
        The compiled pattern, or, when RE2 cannot compile it (a syntax error,
        a backreference, a lookaround, a pattern past RE2's memory budget) or it
        compiles to more than `checks.spec.MAX_BODY_PROGRAM` instructions, the
        text of the error.
    """
    try:
        compiled = re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        detail = exc.args[0] if exc.args else exc
        return detail.decode("utf-8", errors="replace") if isinstance(detail, bytes) else str(detail)
    if compiled.programsize > MAX_BODY_PROGRAM:
        return f"{compiled.programsize} RE2 instructions; at most {MAX_BODY_PROGRAM}"
    return compiled


async def body_matches(pattern: re2._Regexp, body: str) -> bool:
    """Whether ``pattern`` (from `compile_body_pattern`) is found in ``body``.

    A search that may take more than about a millisecond (``len(body)`` times the pattern's
    instructions above `INLINE_SEARCH`) runs on the matcher thread, so that the event loop
    goes on and a cancellation (the check's time limit) ends the wait at once; a search that
    has not started then is dropped, one that has runs to its end (bounded by
    `checks.spec.MAX_BODY_PROGRAM`).
    """
    if len(body) * pattern.programsize <= INLINE_SEARCH:
        return pattern.search(body) is not None
    global _matcher
    if _matcher is None:
        _matcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="expect_body")
    return await asyncio.get_running_loop().run_in_executor(_matcher, _found, pattern, body)


def _found(pattern: re2._Regexp, body: str) -> bool:
    return pattern.search(body) is not None


async def _read_prefix(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """Read at most ``limit`` bytes of the body (less at end of body)."""
    chunks: list[bytes] = []
    left = limit
    while left > 0:
        chunk = await response.content.read(left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


async def check_http(target: CheckTarget, session: aiohttp.ClientSession) -> tuple[bool, str]:
    """Make one HTTP(S) request to ``target`` and judge the response.

    The ``Host`` header is ``spec.host`` when set; otherwise aiohttp's default,
    the URL's authority: the RIP (IPv6 in brackets) followed by ``:port``
    unless the port is the scheme's default (RFC 9110 section 7.2).  For
    ``https`` with ``spec.host`` set, that name is also sent as TLS SNI and
    checked against the certificate when ``verify_tls`` is true.

    Returns:
        ``(ok, reason)``: ``(True, "HTTP 200")``, ``(False, "HTTP 503")``,
        ``(False, "body does not match 'ok'")``, ``(False, "bad expect_body regex:
        missing ): (")`` (RE2 cannot compile the pattern: no request is made).

    Raises:
        aiohttp.ClientError, OSError, ssl.SSLError: the request failed; the
            caller turns the error into a failed result.
    """
    spec = target.spec
    https = spec.type == "https"
    url = build_url("https" if https else "http", target.rip, target.rport, spec.path)
    pattern = None if spec.expect_body is None else compile_body_pattern(spec.expect_body)
    if isinstance(pattern, str):
        return False, f"bad expect_body regex: {pattern}"
    headers = None
    server_hostname = None
    if spec.host is not None:
        headers = {"Host": spec.host}
        if https:
            server_hostname = _host_without_port(spec.host)
    async with session.request(
        spec.method,
        url,
        headers=headers,
        allow_redirects=False,
        ssl=_ssl_setting(spec) if https else False,
        server_hostname=server_hostname,
    ) as response:
        status = response.status
        if status not in spec.expect_status:
            return False, f"HTTP {status}"
        if pattern is None:
            return True, f"HTTP {status}"
        body = await _read_prefix(response, MAX_BODY)
        if not await body_matches(pattern, body.decode("utf-8", errors="replace")):
            return False, f"body does not match {spec.expect_body!r}"
        return True, f"HTTP {status}"


def _host_without_port(host: str) -> str:
    """``www.example.com:8443`` -> ``www.example.com``; ``[::1]:80`` -> ``::1``."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


def _ssl_setting(spec: CheckSpec) -> bool | ssl.SSLContext:
    """aiohttp's ``ssl=`` for ``spec.verify_tls``: ``False`` (no verification) or the shared
    context of the mode (`checks.tls.context_for`)."""
    if spec.verify_tls == "none":
        return False
    return context_for(spec)
