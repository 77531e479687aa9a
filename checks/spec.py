"""What a health check is asked to do: the validated, immutable check settings.

`CheckSpec` is produced by the director's configuration loader and consumed by
the check engine (`checks.engine`).  Times are in seconds (floats), counts are
plain integers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

CheckType = Literal["tcp", "http", "https", "none", "external"]

#: Defaults applied when the configuration leaves a field out.  Chosen so that a
#: backend killed outright leaves rotation at most interval + (fall - 1) x
#: retry_interval = 1.5 s after it dies, and a hung backend at most
#: (fall - 1) x max(retry_interval, timeout) + timeout = 2 s after its first
#: failing check starts.
DEFAULT_INTERVAL = 1.0  # seconds between the starts of two checks
DEFAULT_RETRY_INTERVAL = 0.5  # seconds between check starts while a state change is pending
DEFAULT_TIMEOUT = 1.0  # seconds: hard bound on one whole check
DEFAULT_RISE = 2  # consecutive successes to go up
DEFAULT_FALL = 2  # consecutive failures to go down

#: Most instructions of a compiled ``expect_body`` pattern (RE2's program size).  RE2's time is
#: linear in the body, but its slowest path (when its DFA gives up) also grows with the program:
#: about 7 ns per body byte and instruction here, so the longest search of a 64 KiB body is
#: about half a second of CPU, which `checks.http` spends on a thread of its own.
MAX_BODY_PROGRAM = 1000


@dataclass(frozen=True)
class CheckSpec:
    """Settings of one health check.

    Attributes:
        type: ``tcp`` (connect only), ``http``/``https`` (one request, status
            and optional body regex), ``none`` (always up), ``external`` (run
            ``command`` without a shell; its own exit status 0 = up).
        port: port to check; ``None`` means the real server's own port.
        interval: seconds between the starts of two consecutive checks.
        retry_interval: seconds between the starts of two checks while a
            state change is pending: the latest result disagrees with the
            state (a failure while up, a success while down) and rise/fall
            is still counting.  The engine uses ``min(retry_interval,
            interval)``.  keepalived's ``delay_before_retry`` and HAProxy's
            ``fastinter`` play the same part: a dead server is confirmed
            without waiting whole intervals, a steady one is checked at
            ``interval``.
        timeout: seconds; a hard bound on the whole check (connect, request,
            response body, or the external command's run time).
        rise: consecutive successes that bring a down (or unknown) server up.
        fall: consecutive failures that take an up (or unknown) server down.
        method: HTTP method (``http``/``https``).
        path: HTTP request path, starting with ``/``.
        host: HTTP ``Host`` header; ``None`` means the real server's address.
        expect_status: HTTP status codes counted as success.
        expect_body: a regular expression searched for in the first 64 KiB of
            the response body, with RE2 syntax and linear-time matching
            (google-re2; no backreferences nor lookaround), compiling to at
            most `MAX_BODY_PROGRAM` instructions; ``None`` skips the body test.
        verify_tls: verify the server certificate for ``https``.
        command: argv of an ``external`` check; the engine appends
            VIP, virtual port, RIP and checked port as four more arguments
            (ldirectord's external-check convention).
    """

    type: CheckType = "tcp"
    port: int | None = None
    interval: float = DEFAULT_INTERVAL
    retry_interval: float = DEFAULT_RETRY_INTERVAL
    timeout: float = DEFAULT_TIMEOUT
    rise: int = DEFAULT_RISE
    fall: int = DEFAULT_FALL
    method: str = "GET"
    path: str = "/"
    host: str | None = None
    expect_status: frozenset[int] = field(default_factory=lambda: frozenset({200}))
    expect_body: str | None = None
    verify_tls: bool = False
    command: tuple[str, ...] = ()
