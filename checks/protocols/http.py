"""HTTP and HTTPS checks: one request on a connection of its own (`checks.protocols.httpclient`).

One request per check: ``spec.method`` on ``spec.path`` of the real server, with ``Host``
``spec.host`` or else the RIP (IPv6 in brackets, RFC 3986 section 3.2.2) followed by
``:port`` unless the port is the scheme's default, ``User-Agent: directord-healthcheck`` and
``Connection: close``.  The real server is up when the status is in ``spec.expect_status`` and,
if ``spec.expect_body`` is set, the regular expression is found in the first 64 KiB of the
body.  ``expect_body`` is matched with RE2 (google-re2), whose
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

No connection is kept alive between checks, redirects are not followed (a 301 is status
301), no cookies are kept, no proxy is used.  ``https`` verifies the server's certificate as
``spec.verify_tls`` says (`checks.protocols.tls`), sending ``spec.sni`` (else ``spec.host`` without its
port) as TLS server name.  The time limit is applied by the caller (`checks.base.run_check`).

ldirectord (``sub check_http``) also counts a server up on a status and a regular
expression of the page; it follows no redirect either.  Its ``https`` verifies the chain but
not the name (``verify_tls: chain`` here, see `checks.protocols.tls`).
"""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import re2

from checks.protocols.httpclient import MAX_BODY, USER_AGENT, encode_request, fetch, host_header
from checks.protocols.tls import context_for, server_name
from checks.spec import MAX_BODY_PROGRAM

if TYPE_CHECKING:  # pragma: no cover
    from checks.base import CheckTarget

__all__ = ["check_http", "build_url", "compile_body_pattern", "body_matches", "MAX_BODY", "USER_AGENT"]

#: Body bytes times pattern instructions up to which a body is searched on the event loop
#: itself (a millisecond at worst); a larger search runs on the matcher thread.
INLINE_SEARCH = 1 << 17

_matcher: ThreadPoolExecutor | None = None


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


async def check_http(target: CheckTarget) -> tuple[bool, str]:
    """Make one HTTP(S) request to ``target`` and judge the response.

    Returns:
        ``(ok, reason)``: ``(True, "HTTP 200")``, ``(False, "HTTP 503")``,
        ``(False, "body does not match 'ok'")``, ``(False, "bad expect_body regex:
        missing ): (")`` (RE2 cannot compile the pattern: no request is made).

    Raises:
        OSError, ssl.SSLError, checks.protocols.httpclient.ResponseError, ValueError: the request
            failed (`checks.protocols.httpclient.fetch`); the caller turns the error into a failed result.
    """
    spec = target.spec
    https = spec.type == "https"
    pattern = None if spec.expect_body is None else compile_body_pattern(spec.expect_body)
    if isinstance(pattern, str):
        return False, f"bad expect_body regex: {pattern}"
    host = spec.host if spec.host is not None else host_header(target.rip, target.rport, https)
    request = encode_request(spec.method, spec.path, host)
    read_body = pattern is not None and spec.method != "HEAD"
    if https:
        status, body = await fetch(
            target.rip, target.rport, request, tls=context_for(spec), server_hostname=server_name(spec), body=read_body
        )
    else:
        status, body = await fetch(target.rip, target.rport, request, body=read_body)
    if status not in spec.expect_status:
        return False, f"HTTP {status}"
    if pattern is not None and not await body_matches(pattern, body.decode("utf-8", errors="replace")):
        return False, f"body does not match {spec.expect_body!r}"
    return True, f"HTTP {status}"
