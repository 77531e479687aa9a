"""What a health check is asked to do: the validated, immutable check settings.

`CheckSpec` is produced by the director's configuration loader and consumed by
the check engine (`checks.engine`).  Times are in seconds (floats), counts are
plain integers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

CheckType = Literal[
    "tcp", "http", "https", "none", "external", "dns", "udp", "ping", "radius", "sip", "mysql", "pgsql", "oracle",
    "ldap", "ftp",
]  # fmt: skip

#: TLS verification modes of ``https`` and of TLS in a ``tcp`` dialogue (`CheckSpec.verify_tls`).
TLSVerify = Literal["none", "chain", "full"]

#: Kinds of one step of a ``tcp`` dialogue (`CheckSpec.dialogue`).
DialogueKind = Literal["send", "expect", "fail", "starttls"]

#: Most weight steps of a slow start (`CheckSpec.slow_start`): each is one netlink message.
SLOW_START_STEPS = 10

#: Most steps of a ``tcp`` dialogue.
MAX_DIALOGUE_STEPS = 32

#: Bytes read while waiting for one ``expect`` (a dialogue step, a UDP or SIP reply): past this
#: many bytes without a match the check fails (64 KiB, as an HTTP body).
MAX_EXPECT_READ = 64 * 1024

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
#: about half a second of CPU, which `checks.protocols.http` spends on a thread of its own.
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
        verify_tls: how ``https`` (and TLS in a ``tcp`` check) judges the
            server's certificate: ``"none"`` (not at all), ``"chain"`` (the
            chain must lead to a trusted CA; any name), ``"full"`` (chain and
            the name: ``sni``, else ``host`` without its port, else the RIP).
        command: argv of an ``external`` check; the engine appends
            VIP, virtual port, RIP and checked port as four more arguments
            (ldirectord's external-check convention).
        ca_file: PEM file of the CAs trusted by ``chain``/``full``; ``None``
            means the system's store.
        sni: TLS server name sent (SNI, RFC 6066 section 3); ``None`` means
            ``host`` without its port when set, else no SNI.
        tls: ``tcp``, ``ldap``: TLS from the first byte (smtps, pop3s, imaps, ldaps).
        dialogue: ``tcp``: steps run in order after connecting, each
            ``("send", text)`` (text sent as Latin-1 bytes), ``("expect",
            regex)`` (read until the RE2 regex matches what arrived since the
            previous send, at most `MAX_EXPECT_READ` bytes) or ``("starttls",
            "")`` (TLS from here on, as `verify_tls`).  Empty: connect only.
        send: ``udp``: the datagram sent (Latin-1 text).
        expect: RE2 regex the answer must match: ``udp`` the reply datagram,
            ``dns`` the answer section (one record per line in zone-file
            text), ``mysql``/``pgsql``/``oracle`` the query's first row (values
            joined by tabs), ``sip`` the reply's status line; ``None`` accepts any.
        query_name: ``dns``: the name asked for.
        query_type: ``dns``: the record type asked for (``A``, ``AAAA``,
            ``MX``, ``SOA``...).
        transport: ``dns``: ``udp`` or ``tcp``; ``None`` means the virtual
            service's protocol (UDP for a fwmark service).
        expect_rcode: ``dns``: the response code that passes (``NOERROR``,
            ``NXDOMAIN``...).
        login: ``radius``/``mysql``/``pgsql``/``oracle``/``ftp``: the user name; ``ldap``: the bind
            DN (anonymous bind when unset); ``sip``: the URI's ``user@host`` (as
            ldirectord's ``login``).
        password: ``radius``/``mysql``/``pgsql``/``oracle``: the user's password.
        secret: ``radius``: the shared secret (RFC 2865 section 3).
        database: ``mysql``/``pgsql``: the database to connect to; ``oracle``: the
            instance's SID, or ``service:NAME`` for a service name.
        query: ``mysql``/``pgsql``/``oracle``: a query run after connecting; ``ldap``: the base DN
            of a base-scope search for ``(objectClass=*)`` that must find one entry;
            ``ftp``: the path of a file fetched (its first 64 KiB matched by ``expect``).
        agent_port: the port of the real server's agent (HAProxy's ``agent-check``,
            `checks.protocols.agent`), asked after each passing check for a weight or a state;
            ``None``: no agent.
        agent_send: text sent to the agent once connected (HAProxy's ``agent-send``).
        dynamic_weight: ``external``: exit statuses 2-255 mean up at weight status - 2
            (keepalived's ``misc_dynamic``); without it any status but 0 is down.
        slow_start: seconds over which a real server that comes back up (down -> up, not
            at the director's start) ramps from weight 1 to its weight, in at most
            `SLOW_START_STEPS` steps (HAProxy's ``slowstart``); 0: at once.
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
    verify_tls: TLSVerify = "none"
    command: tuple[str, ...] = ()
    ca_file: str | None = None
    sni: str | None = None
    tls: bool = False
    dialogue: tuple[tuple[DialogueKind, str], ...] = ()
    send: str | None = None
    expect: str | None = None
    query_name: str | None = None
    query_type: str = "A"
    transport: Literal["udp", "tcp"] | None = None
    expect_rcode: str = "NOERROR"
    login: str | None = None
    password: str | None = None
    secret: str | None = None
    database: str | None = None
    query: str | None = None
    agent_port: int | None = None
    agent_send: str | None = None
    dynamic_weight: bool = False
    slow_start: float = 0.0
