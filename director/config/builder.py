"""Semantic checks of a located configuration document and its conversion to `director.model.Config`.

`build_config` validates the structure of each part with the pydantic models of
`director.config.schema` (each sub-mapping on its own, so that a type error in one does not hide
the problems of the others), then the ranges and cross-field rules (fwmark vs address services,
scheduler flags, address families, forwarding methods, duplicates), merges service-level and
real-server-level ``check`` mappings, and hands the ``ha:`` section to
`director.config.ha.parse_ha` and the ``bgp:`` section to `director.config.bgp.parse_bgp`.  Every
problem is collected as a located `ConfigIssue`; so is every warning (a file that works but is
likely a mistake), which ends up in `director.model.Config.warnings` as text.

Kernel facts behind some rules: the kernel rejects a destination whose lower connection threshold
is above its upper one (``ip_vs_add_dest`` in ``net/netfilter/ipvs/ip_vs_ctl.c`` returns
ERANGE); a destination of another address family than its service is only allowed with
tunnelling; with direct routing and tunnelling the packet's port is not rewritten, which is why
ipvsadm forces the real port of such destinations to the virtual port for non-fwmark services.

Why this module is near 700 lines: one `_Builder` walks the whole document and must see all of it
(duplicate services, names and real servers are found across sections); its helpers are one per
section of the format.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import socket
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import re2
from pydantic import BaseModel, ValidationError

from checks.protocols.dialogue import line_problem
from checks.protocols.external import command_problem
from checks.protocols.radius import MAX_PASSWORD as RADIUS_MAX_PASSWORD
from checks.protocols.radius import MAX_VALUE as RADIUS_MAX_VALUE
from checks.protocols.sip import login_problem as sip_login_problem
from checks.protocols.sql import missing_driver, oracle_database_problem
from checks.spec import MAX_BODY_PROGRAM, MAX_DIALOGUE_STEPS, CheckSpec
from director.config.bgp import parse_bgp
from director.config.ha import parse_ha
from director.config.issues import ConfigIssue, bounded, describe, quote
from director.config.located import Path, YamlMap, YamlSeq, field_path, locate
from director.config.schema import (
    LIST_OR_NULL,
    CheckSchema,
    FallbackSchema,
    HookSchema,
    HTTPSchema,
    NotifySchema,
    PersistenceSchema,
    RealServerSchema,
    RootSchema,
    ServiceSchema,
    SettingsSchema,
    SyncDaemonSchema,
    pydantic_message,
)
from director.model import (
    FAMILIES,
    HOOK_EVENTS,
    IFNAME_MAX,
    PROTOCOLS,
    SCHEDULER_FLAGS,
    SCHEDULERS,
    SERVICE_EVENTS,
    Config,
    FallbackServer,
    ForwardingName,
    Hook,
    HTTPSettings,
    NotifySettings,
    Persistence,
    RealServer,
    ServiceKey,
    Settings,
    SyncSettings,
    VirtualService,
    canonical_ip,
    host_port,
    ip_family,
    valid_ifname,
)
from ha.readfile import ReadFileError, file_kind, read_regular_file, secret_file_problem, secret_path_problem

__all__ = [
    "CHECK_COUNT_RANGE",
    "CHECK_INTERVAL_RANGE",
    "CHECK_TIMEOUT_RANGE",
    "DRAIN_TIMEOUT_RANGE",
    "MAX_EXPECT_BODY",
    "MAX_REAL_SERVERS",
    "MAX_SERVICES",
    "RECONCILE_INTERVAL_RANGE",
    "build_config",
    "check_problems",
    "re2_problem",
]

U32_MAX = 0xFFFFFFFF
#: Most virtual services, and most real servers of all of them together, in one file: four
#: times the largest table measured (1,000 services of 20 real servers, docs/benchmarks.md).
#: A reload of a file at these bounds keeps the loop that sends the heartbeats responsive
#: (tests/unit/test_reload_loop.py); far beyond them, the work that must run on that loop
#: (adopting the new targets, the one full garbage collection of a load) would not (a file
#: of 50,000 real servers held it about 1 s, past the shipped deadtime of 0.8 s).
MAX_SERVICES = 5_000
MAX_REAL_SERVERS = 20_000
#: Bounds of the ``notify:`` section: hooks, hooks running at once, arguments of one command
#: and characters of one argument; the range of a hook's timeout in seconds.
MAX_HOOKS = 256
MAX_HOOKS_RUNNING = 64
MAX_HOOK_ARGS = 64
MAX_HOOK_ARG = 4096
HOOK_TIMEOUT_RANGE = (0.1, 3600.0)
HOOK_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
#: Bounds of a health check's times in seconds and of its counts (keepalived's and
#: ldirectord's users set intervals of seconds and timeouts of a few seconds).
CHECK_INTERVAL_RANGE = (0.05, 3600.0)
CHECK_TIMEOUT_RANGE = (0.01, 3600.0)
CHECK_COUNT_RANGE = (1, 1000)
#: Longest ``expect_body`` pattern, in characters.
MAX_EXPECT_BODY = 4096
#: Longest HTTP method token, check path (a request line of 8 KiB is the usual server
#: limit) and Host header value (a DNS name is at most 253 characters, plus a port), characters.
MAX_METHOD = 32
MAX_CHECK_PATH = 8192
MAX_CHECK_HOST = 260
#: Most items of an external check's command, and longest item, in characters.
MAX_COMMAND_ARGS = 256
MAX_COMMAND_ARG = 4096
#: The check types each protocol of a virtual service takes (a fwmark service takes them all).
CHECK_TYPES_BY_PROTOCOL: dict[str, tuple[str, ...]] = {
    "tcp": ("tcp", "http", "https", "dns", "mysql", "pgsql", "oracle", "ldap", "ftp", "ping", "external", "none"),
    "udp": ("udp", "dns", "radius", "sip", "ping", "external", "none"),
    "sctp": ("ping", "external", "none"),
}
#: Range of ``check.slow_start``, seconds (0: none).
SLOW_START_RANGE = (0.0, 3600.0)
#: Longest text sent by a check (``send``, a dialogue's ``send``) and longest credential or query,
#: characters.
MAX_SEND = 4096
MAX_CREDENTIAL = 4096
#: DNS record types and response codes a ``dns`` check may name (RFC 1035, 3596, 2782, 4034,
#: 6698, 8659, 9460; rcodes RFC 1035 section 4.1.1 and RFC 2136).
DNS_TYPES = frozenset(
    "A AAAA CAA CNAME DNSKEY DS HTTPS MX NAPTR NS PTR SOA SRV SSHFP SVCB TLSA TXT".split()
)  # fmt: skip
DNS_RCODES = ("NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED")
_LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_DNS_NAME = re.compile(rf"(?=.{{1,253}}$)({_LABEL}\.)*{_LABEL}\.?")
_DNS_QUERY = re.compile(rf"\.|(\*\.)?({_LABEL}\.)*{_LABEL}\.?")
#: Bounds of ``global.reconcile_interval`` and ``global.drain_timeout``, seconds.
RECONCILE_INTERVAL_RANGE = (0.1, 3600.0)
DRAIN_TIMEOUT_RANGE = (0.0, 86400.0)
#: Longest unix socket path: ``sizeof(sun_path)`` is 108 bytes including the NUL (unix(7)).
MAX_UNIX_PATH_BYTES = 107
#: An HTTP method is a token (RFC 9110 section 9.1, token syntax in section 5.6.2).
_HTTP_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
#: Largest token file accepted, bytes.
MAX_TOKEN_FILE = 4096
#: Characters of a file's path quoted in a message (a path is worth more than a scalar).
MAX_PATH_QUOTED = 512
#: A bearer token: RFC 6750 section 2.1's b64token, at least 16 characters (a guessable
#: token protects nothing).
_BEARER_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]{16,}=*")


# --- semantic checks and conversion to the model ---------------------------------------


def _parse_ip(text: str) -> str:
    """Canonical address text; raises ValueError for non-addresses and scoped IPv6 addresses."""
    if "%" in text:
        raise ValueError("scoped addresses are not supported")
    return canonical_ip(text)


def _dotted_mask(text: str) -> str | None:
    """Canonical dotted IPv4 netmask (contiguous ones, not 0.0.0.0), or ``None``."""
    try:
        value = int(ipaddress.IPv4Address(text))
    except ValueError:
        return None
    inverse = value ^ U32_MAX
    if value == 0 or inverse & (inverse + 1):
        return None
    return str(ipaddress.IPv4Address(value))


def _family_name(family: int) -> str:
    return "IPv6" if family == socket.AF_INET6 else "IPv4"


def check_problems(spec: CheckSpec, protocol: str | None, fwmark: bool) -> Iterator[tuple[tuple[str, ...], str]]:
    """Problems of an effective health check, as ``(fields, message)`` pairs.

    ``fields`` names the check keys involved, the first being where the issue is
    normally reported.  ``protocol`` is ``tcp``/``udp``/``sctp``, or ``None``
    for a fwmark service.  Pure function.
    """
    allowed = CHECK_TYPES_BY_PROTOCOL.get(protocol or "", ())
    if protocol is not None and spec.type not in allowed:
        yield (
            ("type",),
            (
                f"a {protocol.upper()} virtual service takes check types {', '.join(allowed)}; "
                f"the check type is {spec.type}"
            ),
        )
    if fwmark and spec.type not in ("none", "ping") and spec.port is None:
        yield (
            ("port", "type"),
            (
                f"a fwmark virtual service needs check.port for a {spec.type} check "
                "(the service has no port of its own); only check type none does without"
            ),
        )
    if spec.port is not None and not 1 <= spec.port <= 65535:
        yield ("port",), f"port {spec.port} is out of range 1..65535"
    for name, (low, high) in (
        ("interval", CHECK_INTERVAL_RANGE),
        ("retry_interval", CHECK_INTERVAL_RANGE),
        ("timeout", CHECK_TIMEOUT_RANGE),
    ):
        value = getattr(spec, name)
        if not low <= value <= high:
            yield (name,), f"{name} must be {low:g}..{high:g} seconds, got {value:g}"
    for name in ("rise", "fall"):
        value = getattr(spec, name)
        if not CHECK_COUNT_RANGE[0] <= value <= CHECK_COUNT_RANGE[1]:
            yield (name,), f"{name} must be {CHECK_COUNT_RANGE[0]}..{CHECK_COUNT_RANGE[1]}, got {quote(value)}"
    if len(spec.method) > MAX_METHOD or not _HTTP_TOKEN.fullmatch(spec.method):
        yield (
            ("method",),
            (
                f"method must be an HTTP method token such as GET or HEAD (at most {MAX_METHOD} "
                f"characters), got {quote(spec.method)}"
            ),
        )
    if not spec.path.startswith("/"):
        yield ("path",), f"path must start with '/', got {quote(spec.path)}"
    elif len(spec.path) > MAX_CHECK_PATH:
        yield ("path",), f"path is {len(spec.path)} characters long; at most {MAX_CHECK_PATH}"
    if spec.host is not None and len(spec.host) > MAX_CHECK_HOST:
        yield ("host",), f"host is {len(spec.host)} characters long; at most {MAX_CHECK_HOST}"
    if not spec.expect_status:
        yield ("expect_status",), "expect_status must list at least one status code"
    bad_codes = sorted(code for code in spec.expect_status if not 100 <= code <= 599)
    if bad_codes:
        more = f" (and {len(bad_codes) - 1} more)" if len(bad_codes) > 1 else ""
        yield ("expect_status",), f"status code {quote(bad_codes[0])} is out of range 100..599{more}"
    if spec.expect_body is not None:
        problem = re2_problem(spec.expect_body)
        if problem is not None:
            yield ("expect_body",), f"expect_body {problem}"
    yield from _protocol_check_problems(spec)
    if spec.type == "external" and (not spec.command or not spec.command[0]):
        yield ("command", "type"), "an external check needs a non-empty command (a list: program and arguments)"
    if len(spec.command) > MAX_COMMAND_ARGS:
        yield ("command",), f"command has {len(spec.command)} items; at most {MAX_COMMAND_ARGS}"
    longest = max((len(arg) for arg in spec.command), default=0)
    if longest > MAX_COMMAND_ARG:
        yield ("command",), f"a command argument is {longest} characters long; at most {MAX_COMMAND_ARG}"


def _latin1_problem(text: str, name: str) -> str | None:
    if len(text) > MAX_SEND:
        return f"{name} is {len(text)} characters long; at most {MAX_SEND}"
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return f"{name} must be Latin-1 text (it is sent as bytes, one per character), got {quote(bounded(text, 60))}"
    return None


def _protocol_check_problems(spec: CheckSpec) -> Iterator[tuple[tuple[str, ...], str]]:
    """Problems of the keys of the protocol checks (tcp dialogue, udp, dns, radius, sip, sql, TLS)."""
    if spec.ca_file is not None and not spec.ca_file.startswith("/"):
        yield ("ca_file",), f"ca_file must be an absolute path, got {quote(bounded(spec.ca_file, MAX_PATH_QUOTED))}"
    if spec.sni is not None and not _DNS_NAME.fullmatch(spec.sni):
        yield ("sni",), f"sni must be a DNS name, got {quote(bounded(spec.sni, 60))}"
    if spec.dialogue and spec.type != "tcp":
        yield ("dialogue", "type"), f"dialogue is for tcp checks; the check type is {spec.type}"
    if spec.tls and spec.type not in ("tcp", "ldap"):
        yield ("tls", "type"), f"tls is for tcp and ldap checks (https has TLS already); the check type is {spec.type}"
    if len(spec.dialogue) > MAX_DIALOGUE_STEPS:
        yield ("dialogue",), f"dialogue has {len(spec.dialogue)} steps; at most {MAX_DIALOGUE_STEPS}"
    tls = spec.tls
    previous = None
    for i, (kind, text) in enumerate(spec.dialogue[:MAX_DIALOGUE_STEPS]):
        where = f"dialogue step {i + 1}"
        if kind == "send":
            problem = _latin1_problem(text, f"{where}'s send")
        elif kind == "fail" and previous not in ("expect", "fail"):
            problem = f"{where}'s fail must follow an expect step (it ends that step early)"
        elif kind in ("expect", "fail"):
            problem = re2_problem(text)
            problem = None if problem is None else f"{where}'s {kind} {problem}"
        elif tls:
            problem = f"{where} starts TLS on a connection that has TLS already"
        else:
            tls, problem = True, None
        if problem is not None:
            yield ("dialogue",), problem
        previous = kind
    if spec.type == "udp" and spec.send is None:
        yield ("send", "type"), "a udp check needs send: the datagram it sends"
    if spec.send is not None:
        problem = _latin1_problem(spec.send, "send")
        if problem is not None:
            yield ("send",), problem
    if spec.expect is not None:
        problem = re2_problem(spec.expect)
        if problem is not None:
            yield ("expect",), f"expect {problem}"
    if spec.type == "dns" and not spec.query_name:
        yield ("query_name", "type"), "a dns check needs query_name: the name it asks for"
    if spec.query_name is not None and (len(spec.query_name) > 253 or not _DNS_QUERY.fullmatch(spec.query_name)):
        yield ("query_name",), f"query_name must be a DNS name, got {quote(bounded(spec.query_name, 60))}"
    if spec.query_type.upper() not in DNS_TYPES:
        yield ("query_type",), f"query_type must be one of {', '.join(sorted(DNS_TYPES))}, got {quote(spec.query_type)}"
    if spec.expect_rcode.upper() not in DNS_RCODES:
        yield (
            ("expect_rcode",),
            f"expect_rcode must be one of {', '.join(DNS_RCODES)}, got {quote(bounded(spec.expect_rcode, 40))}",
        )
    if spec.agent_port is not None and not 1 <= spec.agent_port <= 65535:
        yield ("agent_port",), f"agent_port {spec.agent_port} is out of range 1..65535"
    if spec.agent_send is not None:
        problem = _latin1_problem(spec.agent_send, "agent_send")
        if problem is not None:
            yield ("agent_send",), problem
    if spec.dynamic_weight and spec.type != "external":
        yield ("dynamic_weight", "type"), f"dynamic_weight is for external checks; the check type is {spec.type}"
    if not SLOW_START_RANGE[0] <= spec.slow_start <= SLOW_START_RANGE[1]:
        yield (
            ("slow_start",),
            f"slow_start must be {SLOW_START_RANGE[0]:g}..{SLOW_START_RANGE[1]:g} seconds, got {spec.slow_start:g}",
        )
    if spec.type == "radius" and not spec.secret:
        yield ("secret", "type"), "a radius check needs secret: the shared secret of the RADIUS server"
    if spec.type in ("mysql", "pgsql", "oracle") and not spec.login:
        article = "an" if spec.type == "oracle" else "a"
        yield ("login", "type"), f"{article} {spec.type} check needs login: the user it connects as"
    if spec.type == "oracle":
        problem = oracle_database_problem(spec.database)
        if problem is not None:
            yield ("database", "type"), problem
    missing = missing_driver(spec.type)
    if missing is not None:  # every real server of the service would be down
        yield ("type",), missing
    for name in ("login", "password", "secret", "database", "query"):
        value = getattr(spec, name)
        if value is not None and len(value) > MAX_CREDENTIAL:
            yield (name,), f"{name} is {len(value)} characters long; at most {MAX_CREDENTIAL}"
    yield from _credential_problems(spec)


#: Check types that send ``login``/``password`` inside a line of text (a CR, LF or NUL there
#: would end the line and let the rest be a line of its own), and which of the two they send.
TEXT_CREDENTIALS: dict[str, tuple[str, ...]] = {"sip": ("login",)}
#: Longest radius ``login`` and ``password`` in bytes of UTF-8 (RFC 2865 sections 5.1 and 5.2),
#: with the section that says so.
_RADIUS_LIMITS = (
    ("login", RADIUS_MAX_VALUE, "5.1 (User-Name)"),
    ("password", RADIUS_MAX_PASSWORD, "5.2 (User-Password)"),
)


def _credential_problems(spec: CheckSpec) -> Iterator[tuple[tuple[str, ...], str]]:
    """What the radius and sip checks would refuse at run time in ``login``/``password``
    (`checks.protocols.radius`, `checks.protocols.sip.login_problem`), and line breaks in the credentials of the
    types of `TEXT_CREDENTIALS`; one problem per field at most."""
    refused: set[str] = set()
    for name in TEXT_CREDENTIALS.get(spec.type, ()):
        value = getattr(spec, name)
        problem = None if value is None else line_problem(name, value)
        if problem is not None:
            refused.add(name)
            yield (name,), problem
    if spec.type == "radius":
        for name, limit, section in _RADIUS_LIMITS:
            value = getattr(spec, name)
            if value is None or len(value) > MAX_CREDENTIAL:
                continue  # too long already said
            try:
                size = len(value.encode())
            except UnicodeEncodeError:
                yield (name,), f"a radius {name} must be text UTF-8 can encode (it holds a lone surrogate)"
                continue
            if size > limit:
                yield (name,), f"a radius {name} is at most {limit} bytes (RFC 2865 section {section}), got {size}"
    if spec.type == "sip" and spec.login and "login" not in refused and len(spec.login) <= MAX_CREDENTIAL:
        problem = sip_login_problem(spec.login)
        if problem is not None:
            yield ("login",), problem


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # the reason is in the exception; RE2 would also print it on stderr


def re2_problem(pattern: str) -> str | None:
    """Why ``pattern`` cannot be matched by the HTTP checker, or ``None`` when it can.

    The checker searches the body with RE2 (google-re2), in time linear in the
    body, so the pattern must be RE2 syntax (https://github.com/google/re2/wiki/Syntax):
    no backreferences (``\\1``), no lookahead or lookbehind (``(?=``, ``(?!``,
    ``(?<=``, ``(?<!``), no possessive or atomic groups.  At most
    `MAX_EXPECT_BODY` characters, compiling to at most `checks.spec.MAX_BODY_PROGRAM`
    instructions.  Pure function; used by the loader and by
    ``directord convert`` for ldirectord's ``receive=``.
    """
    if len(pattern) > MAX_EXPECT_BODY:
        return f"is {len(pattern)} characters long; at most {MAX_EXPECT_BODY}"
    try:
        compiled = re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as err:
        reason = err.args[0].decode("utf-8", "replace") if err.args and isinstance(err.args[0], bytes) else str(err)
        return (
            f"is not a regular expression the checker can use: {bounded(reason, 120)} (it is matched "
            "with RE2 syntax: no backreferences, no lookahead or lookbehind)"
        )
    if compiled.programsize > MAX_BODY_PROGRAM:
        return (
            f"compiles to {compiled.programsize} RE2 instructions; at most {MAX_BODY_PROGRAM} (the time "
            "to search a body grows with them): shorten it, or use fewer counted repetitions"
        )
    return None


def _make_check(fields: dict[str, Any], protocol: str | None) -> CheckSpec:
    """`CheckSpec` from merged schema fields (lists become tuples/frozensets, times floats,
    ``verify_tls`` a mode, a ``dns`` check's ``transport`` the service's ``protocol``, or ``udp``
    for a fwmark service)."""
    values = dict(fields)
    if values.get("type") == "dns" and values.get("transport") is None:
        values["transport"] = "tcp" if protocol == "tcp" else "udp"
    if "expect_status" in values:
        values["expect_status"] = frozenset(values["expect_status"])
    if "command" in values:
        values["command"] = tuple(values["command"])
    if "verify_tls" in values and isinstance(values["verify_tls"], bool):
        values["verify_tls"] = "full" if values["verify_tls"] else "none"
    if "dialogue" in values:
        values["dialogue"] = tuple(_dialogue_step(step) for step in values["dialogue"])
    for name in ("interval", "retry_interval", "timeout", "slow_start"):
        if name in values:
            values[name] = float(values[name])
    return CheckSpec(**values)


def _dialogue_step(step: dict[str, Any]) -> tuple[str, str]:
    """``{"send": "x"}`` -> ``("send", "x")``; ``{"starttls": True}`` -> ``("starttls", "")``.  A step
    with no key or several has been reported (`_Builder.check_section`); it becomes an ``expect``
    of its first text, or ``("starttls", "")``."""
    for kind in ("send", "expect", "fail"):
        if step.get(kind) is not None:
            return kind, step[kind]
    return "starttls", ""


@dataclass
class _ServiceContext:
    """What real servers and checks of one service need to know about it."""

    path: Path
    family: int | None  # AF_INET / AF_INET6, None when the VIP is invalid
    protocol: str | None  # tcp/udp/sctp; None for fwmark services
    fwmark: bool
    vport: int  # 0 for fwmark services (or when invalid)
    forwarding: ForwardingName
    check_fields: dict[str, Any]  # keys set in the service's check mapping
    check_ok: bool  # False when that mapping is invalid: its merged checks are not judged


def _split_listen(text: str) -> tuple[str | None, int | None]:
    """``("127.0.0.1", 9199)`` from ``"127.0.0.1:9199"`` (``"[::1]:9199"`` for IPv6), the
    address canonical; ``(None, None)`` when ``text`` is not an IP literal and a port 1-65535."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
        return None, None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if ":" not in host:
            return None, None
    elif ":" in host:
        return None, None
    try:
        return _parse_ip(host), int(port)
    except ValueError:
        return None, None


def _socket_path_problem(path: str) -> str | None:
    """Why the daemon must not bind its control socket at ``path``, or ``None``.

    The daemon replaces a stale socket there and removes it when it stops, so
    anything else already at that path (a regular file, a directory, a
    symbolic link...) would be destroyed: it is refused.  A path that does
    not exist, or cannot be examined, is fine here (binding reports the rest).
    """
    try:
        info = os.lstat(path)
    except OSError:
        return None
    if stat.S_ISSOCK(info.st_mode):
        return None
    return (
        f"{quote(path, MAX_UNIX_PATH_BYTES)} exists and is a {file_kind(info.st_mode)}, not a socket; "
        "the daemon would replace and later delete it: choose another path or remove it"
    )


class _Builder:
    """Validates located data piece by piece and converts it; collects every issue."""

    def __init__(self, file: str, root: Any) -> None:
        self.file = file
        self.root = root
        self.issues: list[ConfigIssue] = []
        self.service_keys: dict[ServiceKey, int] = {}
        self.service_names: dict[str, int] = {}

    # -- issue helpers

    def issue(self, path: Path, message: str, at_key: bool = False) -> None:
        line, column = locate(self.root, path, at_key)
        self.issues.append(ConfigIssue(self.file, line, column, field_path(path), message))

    def line_of(self, path: Path) -> int:
        return locate(self.root, path)[0]

    def validate(self, schema: type[BaseModel], value: Any, path: Path, drop: tuple[str, ...] = ()) -> Any:
        """Validate the mapping ``value`` with ``schema``, keys in ``drop`` left out.

        Every error is reported.  When the only errors are unknown keys, the
        model validated without them is still returned, so that a typo does
        not hide the semantic problems of the rest; otherwise ``None``.
        """
        if drop and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k not in drop}
        try:
            return schema.model_validate(value)
        except ValidationError as err:
            self._report_pydantic(schema, err, path)
            errors = err.errors(include_url=False)
        if not isinstance(value, dict) or any(e["type"] != "extra_forbidden" or len(e["loc"]) != 1 for e in errors):
            return None
        unknown = {e["loc"][0] for e in errors}
        try:
            return schema.model_validate({k: v for k, v in value.items() if k not in unknown})
        except ValidationError:  # pragma: no cover - only unknown keys were wrong
            return None

    def section(
        self, schema: type[BaseModel], parent: Any, key: str, path: Path, drop: tuple[str, ...] = ()
    ) -> tuple[Any, bool]:
        """Validate the optional sub-mapping ``parent[key]`` on its own.

        Returns ``(model or None, ok)``: ``(None, True)`` when the key is absent
        or null, ``(None, False)`` when it is invalid (already reported).
        """
        value = parent.get(key) if isinstance(parent, dict) else None
        if value is None:
            return None, True
        model = self.validate(schema, value, path + (key,), drop)
        return model, model is not None

    def validate_list(self, value: Any, path: Path) -> bool:
        try:
            LIST_OR_NULL.validate_python(value, strict=True)
            return True
        except ValidationError as err:
            self._report_pydantic(None, err, path)
            return False

    def _report_pydantic(self, schema: type[BaseModel] | None, err: ValidationError, path: Path) -> None:
        for error in err.errors(include_url=False):
            full = path + tuple(error["loc"])
            self.issue(full, pydantic_message(schema, error), at_key=error["type"] == "extra_forbidden")

    # -- whole file

    def duplicate_keys(self, node: Any, path: Path, seen: set[int]) -> None:
        """Report the duplicate keys recorded by the loader, anywhere in the data."""
        if id(node) in seen:
            return
        if isinstance(node, YamlMap):
            seen.add(id(node))
            for key, (line, column), (first_line, _) in node.duplicates:
                self.issues.append(
                    ConfigIssue(
                        self.file,
                        line,
                        column,
                        field_path(path + (key,)),
                        f"duplicate key {quote(str(key))} (first defined on line {first_line})",
                    )
                )
            for key, value in node.items():
                self.duplicate_keys(value, path + (key,), seen)
        elif isinstance(node, YamlSeq):
            seen.add(id(node))
            for index, value in enumerate(node):
                self.duplicate_keys(value, path + (index,), seen)

    def build(self) -> Config | None:
        root = self.root
        if root is None:
            self.issues.append(
                ConfigIssue(
                    self.file,
                    1,
                    1,
                    "",
                    "the configuration file is empty (expected a mapping with "
                    "global, virtual_services, ha, bgp and notify sections)",
                )
            )
            return None
        if not isinstance(root, dict):
            self.issue(
                (), f"the top level must be a mapping (global, virtual_services, ha, bgp, notify), got {describe(root)}"
            )
            return None
        self.duplicate_keys(root, (), set())
        self.validate(RootSchema, root, (), drop=("global", "virtual_services", "notify"))
        settings_schema, _ = self.section(SettingsSchema, root, "global", ())
        settings = self.settings(settings_schema) if settings_schema is not None else Settings()
        indexed: list[tuple[int, VirtualService]] = []  # each with its index in virtual_services
        raw_services = root.get("virtual_services")
        if (
            self.validate_list(raw_services, ("virtual_services",))
            and raw_services
            and self.within_bounds(raw_services)
        ):
            for index, raw in enumerate(raw_services):
                service = self.service(index, raw)
                if service is not None:
                    indexed.append((index, service))
        services = [service for _, service in indexed]
        ha = None
        if isinstance(root.get("ha"), dict):
            ha, ha_issues = parse_ha(root, self.file)
            self.issues.extend(ha_issues)
        bgp = None
        warnings: list[ConfigIssue] = []
        if isinstance(root.get("bgp"), dict):
            bgp, bgp_issues, warnings = parse_bgp(root, self.file, indexed, ha)
            self.issues.extend(bgp_issues)
        notify_schema, _ = self.section(NotifySchema, root, "notify", ())
        notify = self.notify(notify_schema, services) if notify_schema is not None else None
        warnings.sort(key=lambda issue: (issue.line, issue.column))
        return Config(
            path=self.file,
            settings=settings,
            services=tuple(services),
            ha=ha,
            notify=notify,
            bgp=bgp,
            warnings=tuple(str(warning) for warning in warnings),
        )

    def notify(self, schema: NotifySchema, services: list[VirtualService]) -> NotifySettings:
        """``notify:``: the hooks, each with known event kinds, a command whose program only
        root can replace (`checks.protocols.external.command_problem`; a program deployed later is
        checked again before every run), a timeout in range and, when given, a known service."""
        base: Path = ("notify",)
        low, high = HOOK_TIMEOUT_RANGE
        if not low <= schema.timeout <= high:
            self.issue(base + ("timeout",), f"must be {low:g}..{high:g} seconds, got {schema.timeout:g}")
        if not 1 <= schema.max_running <= MAX_HOOKS_RUNNING:
            self.issue(base + ("max_running",), f"must be 1..{MAX_HOOKS_RUNNING}, got {schema.max_running}")
        if len(schema.hooks) > MAX_HOOKS:
            self.issue(base + ("hooks",), f"at most {MAX_HOOKS} hooks, got {len(schema.hooks)}")
            return NotifySettings(max_running=schema.max_running)
        names = {svc.name for svc in services}
        hooks = []
        for index, item in enumerate(schema.hooks):
            hook = self.hook(item, base + ("hooks", index), schema.timeout, names)
            if hook is not None:
                hooks.append(hook)
        return NotifySettings(hooks=tuple(hooks), max_running=schema.max_running)

    def hook(self, schema: HookSchema, path: Path, timeout: float, services: set[str]) -> Hook | None:
        """One ``notify.hooks`` item, or None when it is invalid (reported)."""
        ok = True
        if not schema.events:
            self.issue(path + ("events",), f"must name at least one event: {', '.join(HOOK_EVENTS)}")
            ok = False
        for index, kind in enumerate(schema.events):
            if kind not in HOOK_EVENTS:
                close = difflib.get_close_matches(kind, list(HOOK_EVENTS), n=1)
                hint = f"; did you mean '{close[0]}'?" if close else f"; valid: {', '.join(HOOK_EVENTS)}"
                self.issue(path + ("events", index), f"unknown event {quote(kind)}{hint}")
                ok = False
        command = schema.command
        if not command or not command[0]:
            self.issue(path + ("command",), "must be a non-empty list: the program's absolute path, then its arguments")
            ok = False
        elif len(command) > MAX_HOOK_ARGS or any(len(arg) > MAX_HOOK_ARG or "\0" in arg for arg in command):
            self.issue(
                path + ("command",),
                f"at most {MAX_HOOK_ARGS} arguments of at most {MAX_HOOK_ARG} characters, without NUL characters",
            )
            ok = False
        else:
            problem = command_problem(command[0], missing_ok=True)
            if problem is not None:
                self.issue(path + ("command",), bounded(problem, MAX_PATH_QUOTED + 80))
                ok = False
        low, high = HOOK_TIMEOUT_RANGE
        if schema.timeout is not None and not low <= schema.timeout <= high:
            self.issue(path + ("timeout",), f"must be {low:g}..{high:g} seconds, got {schema.timeout:g}")
            ok = False
        if schema.service is not None:
            if schema.service not in services:
                close = difflib.get_close_matches(schema.service, sorted(services), n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                self.issue(path + ("service",), f"no virtual service is named {quote(schema.service)}{hint}")
                ok = False
            elif not SERVICE_EVENTS.intersection(schema.events):
                self.issue(
                    path + ("service",),
                    "only applies to the events of a virtual service "
                    f"({', '.join(sorted(SERVICE_EVENTS))}); this hook runs on none of them",
                )
                ok = False
        name = schema.name if schema.name is not None else os.path.basename(command[0]) if command else ""
        if schema.name is not None and not HOOK_NAME.fullmatch(schema.name):
            self.issue(path + ("name",), f"must be 1-64 letters, digits and ._- characters, got {quote(schema.name)}")
            ok = False
        if not ok:
            return None
        return Hook(
            events=frozenset(schema.events),
            command=tuple(command),
            timeout=float(schema.timeout if schema.timeout is not None else timeout),
            service=schema.service,
            name=name[:64],
            line=self.line_of(path),
        )

    def within_bounds(self, raw_services: list[Any]) -> bool:
        """False (with an issue) when the file has more than `MAX_SERVICES` virtual services or
        `MAX_REAL_SERVERS` real servers: then none is built (a hostile file is refused fast)."""
        if len(raw_services) > MAX_SERVICES:
            self.issue(
                ("virtual_services",), f"at most {MAX_SERVICES} virtual services in one file, got {len(raw_services)}"
            )
            return False
        total = sum(
            len(raw["real_servers"])
            for raw in raw_services
            if isinstance(raw, dict) and isinstance(raw.get("real_servers"), list)
        )
        if total > MAX_REAL_SERVERS:
            self.issue(
                ("virtual_services",),
                f"at most {MAX_REAL_SERVERS} real servers in one file (all services together), got {total}",
            )
            return False
        return True

    def settings(self, schema: SettingsSchema) -> Settings:
        base = ("global",)
        for name, (low, high) in (
            ("reconcile_interval", RECONCILE_INTERVAL_RANGE),
            ("drain_timeout", DRAIN_TIMEOUT_RANGE),
        ):
            value = getattr(schema, name)
            if not low <= value <= high:
                self.issue(base + (name,), f"must be {low:g}..{high:g} seconds, got {value:g}")
        sock = schema.control_socket
        if not sock.startswith("/"):
            self.issue(base + ("control_socket",), f"must be an absolute path, got {quote(sock)}")
        elif "\0" in sock or len(os.fsencode(sock)) > MAX_UNIX_PATH_BYTES:
            self.issue(
                base + ("control_socket",),
                f"a unix socket path must be at most {MAX_UNIX_PATH_BYTES} bytes without NUL characters",
            )
        else:
            problem = _socket_path_problem(sock)
            if problem is not None:
                self.issue(base + ("control_socket",), problem)
        if not schema.state_dir.startswith("/") or "\0" in schema.state_dir:
            self.issue(base + ("state_dir",), f"must be an absolute path, got {quote(schema.state_dir)}")
        return Settings(
            state_dir=schema.state_dir,
            reconcile_interval=float(schema.reconcile_interval),
            drain_timeout=float(schema.drain_timeout),
            control_socket=sock,
            sync_daemon=self.sync_daemon(schema.sync_daemon),
            http=self.http(schema.http),
        )

    def http(self, schema: HTTPSchema | None) -> HTTPSettings | None:
        """``global.http``: the listen address (an IP literal and a port), and the token read
        from ``token_file``, which is required unless the address is loopback."""
        if schema is None:
            return None
        base = ("global", "http")
        host, port = _split_listen(schema.listen)
        if host is None or port is None:
            self.issue(
                base + ("listen",),
                f"not ADDRESS:PORT (an IP address, [ADDRESS] for IPv6, and a port 1-65535): {quote(schema.listen)}",
            )
            return None
        token = None
        if schema.token_file is not None:
            token = self.token(schema.token_file, base + ("token_file",))
        elif not ipaddress.ip_address(host).is_loopback:
            self.issue(
                base + ("listen",),
                f"{host_port(host, port)} is not a loopback address: anyone who can reach it could read the "
                "director's state, so a token_file is required",
            )
        return HTTPSettings(host=host, port=port, token=token, token_file=schema.token_file)

    def token(self, path: str, where: Path) -> str | None:
        """The bearer token in the file at ``path`` (one line; surrounding whitespace ignored)."""
        if not path.startswith("/"):
            self.issue(where, f"must be an absolute path, got {quote(path)}")
            return None
        try:
            data = read_regular_file(
                path, MAX_TOKEN_FILE, lambda info: secret_file_problem(info) or secret_path_problem(path)
            )
        except ReadFileError as exc:
            self.issue(where, f"{quote(path, MAX_PATH_QUOTED)}: {exc.reason}")
            return None
        token = data.decode("ascii", "replace").strip()
        if not _BEARER_TOKEN.fullmatch(token):
            self.issue(
                where,
                f"{quote(path, MAX_PATH_QUOTED)} must hold one token of at least 16 characters from "
                "A-Z a-z 0-9 - . _ ~ + / (e.g. the output of 'openssl rand -hex 32')",
            )
            return None
        return token

    def sync_daemon(self, schema: SyncDaemonSchema | None) -> SyncSettings | None:
        if schema is None:
            return None
        base = ("global", "sync_daemon")
        name = schema.interface
        if not valid_ifname(name):
            self.issue(
                base + ("interface",),
                f"not an interface name: {quote(name)} (1-{IFNAME_MAX} bytes, "
                "no '/', ':', whitespace, not '.' or '..')",
            )
        if not 0 <= schema.syncid <= 255:
            self.issue(base + ("syncid",), f"must be 0-255, got {schema.syncid}")
        return SyncSettings(interface=name, syncid=schema.syncid)

    # -- virtual services

    def service(self, index: int, raw: Any) -> VirtualService | None:
        """Check and convert one ``virtual_services`` entry (``None`` when it is unusable).

        The entry's sub-mappings (check, persistence, fallback, each real
        server) are validated on their own, so a type error in one of them
        does not hide the problems of the others.
        """
        path = ("virtual_services", index)
        schema: ServiceSchema | None = self.validate(
            ServiceSchema, raw, path, drop=("real_servers", "check", "persistence", "fallback")
        )
        check_schema, check_ok = self.section(CheckSchema, raw, "check", path)
        persistence_schema, _ = self.section(PersistenceSchema, raw, "persistence", path)
        fallback_schema, _ = self.section(FallbackSchema, raw, "fallback", path)
        server_schemas: list[tuple[int, RealServerSchema, CheckSchema | None, bool]] = []
        raw_servers = raw.get("real_servers") if isinstance(raw, dict) else None
        if self.validate_list(raw_servers, path + ("real_servers",)) and raw_servers:
            for j, item in enumerate(raw_servers):
                rs_path = path + ("real_servers", j)
                rs = self.validate(RealServerSchema, item, rs_path, drop=("check",))
                rs_check, rs_check_ok = self.section(CheckSchema, item, "check", rs_path)
                if rs is not None:
                    server_schemas.append((j, rs, rs_check, rs_check_ok))
        if schema is None:
            return None

        key, family = self.service_key(schema, path)
        line = self.line_of(path)
        name = schema.name if schema.name is not None else (str(key) if key is not None else None)
        self.register_service(key, name, schema.name, path, line)
        if schema.scheduler not in SCHEDULERS:
            self.issue(
                path + ("scheduler",),
                f"unknown scheduler {quote(schema.scheduler)}; valid schedulers: {', '.join(sorted(SCHEDULERS))}",
            )
        self.scheduler_flags(schema, path)
        persistence = self.persistence(persistence_schema, family, path) if persistence_schema else None

        check_fields = check_schema.model_dump(exclude_unset=True) if check_schema else {}
        ctx = _ServiceContext(
            path=path,
            family=family,
            protocol=None if schema.fwmark is not None else (schema.protocol or "tcp"),
            fwmark=schema.fwmark is not None,
            vport=key.port if key is not None else 0,
            forwarding=schema.forwarding,
            check_fields=check_fields,
            check_ok=check_ok,
        )
        check = _make_check(check_fields, ctx.protocol)
        if check_ok:
            self.report_check(check, ctx, check_fields, path + ("check",), only_own=False)

        servers: list[RealServer] = []
        seen: dict[tuple[str, int], int] = {}
        for j, rs, rs_check, rs_check_ok in server_schemas:
            server = self.real_server(j, rs, rs_check, rs_check_ok, ctx)
            if server is None:
                continue
            dest = (server.address, server.port)
            if dest in seen:
                self.issue(
                    path + ("real_servers", j),
                    f"duplicate real server {host_port(*dest)} (first defined on line {seen[dest]})",
                )
            else:
                seen[dest] = server.line
            servers.append(server)
        fallback = self.fallback(fallback_schema, ctx, seen) if fallback_schema else None

        if key is None or name is None:
            return None
        return VirtualService(
            name=name,
            key=key,
            scheduler=schema.scheduler,
            scheduler_flags=frozenset(schema.scheduler_flags),
            forwarding=schema.forwarding,
            persistence=persistence,
            on_failure=schema.on_failure,
            check=check,
            real_servers=tuple(servers),
            fallback=fallback,
            line=line,
        )

    def register_service(
        self, key: ServiceKey | None, name: str | None, explicit_name: str | None, path: Path, line: int
    ) -> None:
        """Report a service key or name already used by an earlier service.

        A defaulted name that repeats only because the key repeats is not
        reported a second time.
        """
        if key is not None:
            if key in self.service_keys:
                self.issue(
                    path,
                    f"duplicate virtual service {key}: lines {self.service_keys[key]} and {line} "
                    "define the same kernel service",
                )
            else:
                self.service_keys[key] = line
        if name is not None:
            if name in self.service_names and not (
                explicit_name is None and key in self.service_keys and self.service_keys[key] != line
            ):
                self.issue(
                    path + ("name",),
                    f"duplicate virtual service name {quote(name)} (first used on line {self.service_names[name]})",
                )
            else:
                self.service_names[name] = line

    def service_key(self, schema: ServiceSchema, path: Path) -> tuple[ServiceKey | None, int | None]:
        """The service's `ServiceKey` and address family (``None`` where invalid)."""
        if schema.name is not None and not schema.name.strip():
            self.issue(path + ("name",), "must not be empty")
        family: int | None
        if schema.fwmark is not None:
            for name in ("address", "port", "protocol"):
                if getattr(schema, name) is not None:
                    self.issue(
                        path + (name,),
                        f"'{name}' cannot be combined with fwmark: a virtual service has either address "
                        "and port (and protocol) or fwmark (and family)",
                        at_key=True,
                    )
            family = FAMILIES[schema.family or "inet"]
            if not 1 <= schema.fwmark <= U32_MAX:
                self.issue(path + ("fwmark",), f"fwmark {schema.fwmark} is out of range 1..{U32_MAX}")
                return None, family
            return ServiceKey(int(family), 0, "", 0, schema.fwmark), family

        address: str | None = None
        family = None
        if schema.address is None:
            self.issue(path + ("address",), "missing required key 'address' (or 'fwmark' for a fwmark service)")
        else:
            address, family = self.address(schema.address, path + ("address",))
        port_ok = False
        if schema.port is None:
            self.issue(path + ("port",), "missing required key 'port'")
        elif not 1 <= schema.port <= 65535:
            self.issue(path + ("port",), f"port {schema.port} is out of range 1..65535")
        else:
            port_ok = True
        if family is not None and schema.family is not None and FAMILIES[schema.family] != family:
            self.issue(
                path + ("family",),
                f"family {schema.family} does not match the {_family_name(family)} address {address}",
            )
        if address is None or family is None or not port_ok or schema.port is None:  # port_ok: a port is there
            return None, family
        protocol = PROTOCOLS[schema.protocol or "tcp"]
        return ServiceKey(int(family), int(protocol), address, schema.port), family

    def address(self, text: str, path: Path) -> tuple[str | None, int | None]:
        try:
            address = _parse_ip(text)
        except ValueError:
            self.issue(path, f"not an IP address: {quote(text)}")
            return None, None
        return address, ip_family(address)

    def scheduler_flags(self, schema: ServiceSchema, path: Path) -> None:
        for index, flag in enumerate(schema.scheduler_flags):
            where = path + ("scheduler_flags", index)
            if flag not in SCHEDULER_FLAGS:
                self.issue(
                    where, f"unknown scheduler flag {quote(flag)}; valid flags: {', '.join(sorted(SCHEDULER_FLAGS))}"
                )
                continue
            schedulers = SCHEDULER_FLAGS[flag][0]
            if schema.scheduler not in schedulers:
                self.issue(
                    where,
                    f"scheduler flag {quote(flag)} is only valid with scheduler {', '.join(sorted(schedulers))}, "
                    f"not {quote(schema.scheduler)}",
                )

    def persistence(self, schema: PersistenceSchema, family: int | None, path: Path) -> Persistence:
        base = path + ("persistence",)
        if not 1 <= schema.timeout <= U32_MAX:
            self.issue(
                base + ("timeout",), f"persistence timeout {schema.timeout} is out of range 1..{U32_MAX} seconds"
            )
        value = schema.netmask
        netmask: str | int
        if family == socket.AF_INET6:
            netmask = 128
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, int):
                    self.issue(
                        base + ("netmask",),
                        f"an IPv6 service takes a prefix length 1..128 as netmask, got {describe(value)}",
                    )
                elif not 1 <= value <= 128:
                    self.issue(base + ("netmask",), f"prefix length {value} is out of range 1..128")
                else:
                    netmask = value
        else:
            netmask = "255.255.255.255"
            if value is not None:
                mask = _dotted_mask(value) if isinstance(value, str) else None
                if mask is None:
                    self.issue(
                        base + ("netmask",),
                        f"an IPv4 service takes a dotted netmask such as 255.255.255.0, got {describe(value)}",
                    )
                else:
                    netmask = mask
        return Persistence(timeout=schema.timeout, netmask=netmask)

    def report_check(
        self, spec: CheckSpec, ctx: _ServiceContext, own: dict[str, Any], base: Path, only_own: bool
    ) -> None:
        """Report the problems of ``spec``.

        With ``only_own`` (a real server's merged check) only problems that
        involve a key the real server sets itself are reported, so that a
        problem of the service-level check is reported once, at the service.
        """
        for fields, message in check_problems(spec, ctx.protocol, ctx.fwmark):
            if fields[0] in own or not only_own:
                self.issue(base + (fields[0],), message)
                continue
            mine = [name for name in fields if name in own]
            if mine:
                self.issue(base + (mine[0],), message)
        if spec.type == "external" and spec.command and spec.command[0] and ("command" in own or not only_own):
            # the checker refuses such a program at every run (a file deployed later is checked then)
            problem = command_problem(spec.command[0], missing_ok=True)
            if problem is not None:
                self.issue(base + ("command",), bounded(problem, MAX_PATH_QUOTED + 80))

    # -- real servers and fallback

    def dest_port(self, port: int | None, forwarding: str, ctx: _ServiceContext, path: Path) -> int:
        """The destination port of a real server or fallback, defaulted and checked."""
        if port is None:
            return ctx.vport
        if port == 0 and not ctx.fwmark:
            self.issue(path, "port 0 (keep the packet's port) is only valid in a fwmark service")
        elif not 0 <= port <= 65535:
            self.issue(path, f"port {port} is out of range {0 if ctx.fwmark else 1}..65535")
        elif not ctx.fwmark and forwarding in ("dr", "tun") and ctx.vport and port != ctx.vport:
            self.issue(
                path,
                f"with forwarding {forwarding} the real port must equal the virtual port {ctx.vport} "
                "(packets are forwarded unchanged); use forwarding nat to change the port",
            )
        return port

    def family_mismatch(self, family: int | None, forwarding: str, ctx: _ServiceContext, path: Path, what: str) -> None:
        if family is None or ctx.family is None or family == ctx.family or forwarding == "tun":
            return
        self.issue(
            path,
            f"{what} is {_family_name(family)} but the virtual service is {_family_name(ctx.family)}; "
            "mixing address families needs forwarding tun",
        )

    def weight(self, weight: int, path: Path) -> None:
        if not 0 <= weight <= 65535:
            self.issue(path, f"weight {weight} is out of range 0..65535")

    def real_server(
        self, j: int, schema: RealServerSchema, check_schema: CheckSchema | None, check_ok: bool, ctx: _ServiceContext
    ) -> RealServer | None:
        path = ctx.path + ("real_servers", j)
        address, family = self.address(schema.address, path + ("address",))
        forwarding = schema.forwarding or ctx.forwarding
        port = self.dest_port(schema.port, forwarding, ctx, path + ("port",))
        self.weight(schema.weight, path + ("weight",))
        thresholds_ok = True
        for name in ("upper_threshold", "lower_threshold"):
            value = getattr(schema, name)
            if not 0 <= value <= U32_MAX:
                self.issue(path + (name,), f"{value} is out of range 0..{U32_MAX} (0 = no threshold)")
                thresholds_ok = False
        if thresholds_ok and schema.lower_threshold > schema.upper_threshold:
            self.issue(
                path + ("lower_threshold",),
                f"lower_threshold {schema.lower_threshold} is above upper_threshold {schema.upper_threshold} "
                "(the kernel rejects it)",
            )
        self.family_mismatch(family, forwarding, ctx, path + ("address",), f"real server {address}")
        own = check_schema.model_dump(exclude_unset=True) if check_schema else {}
        check = _make_check({**ctx.check_fields, **own}, ctx.protocol)
        if check_ok and ctx.check_ok:
            self.report_check(check, ctx, own, path + ("check",), only_own=True)
        if address is None:
            return None
        return RealServer(
            address=address,
            port=port,
            weight=schema.weight,
            forwarding=forwarding,
            upper_threshold=schema.upper_threshold,
            lower_threshold=schema.lower_threshold,
            check=check,
            line=self.line_of(path),
        )

    def fallback(
        self, schema: FallbackSchema, ctx: _ServiceContext, real_servers: dict[tuple[str, int], int]
    ) -> FallbackServer | None:
        path = ctx.path + ("fallback",)
        address, family = self.address(schema.address, path + ("address",))
        forwarding = schema.forwarding or ctx.forwarding
        port = self.dest_port(schema.port, forwarding, ctx, path + ("port",))
        self.weight(schema.weight, path + ("weight",))
        self.family_mismatch(family, forwarding, ctx, path + ("address",), f"fallback server {address}")
        if address is None:
            return None
        if (address, port) in real_servers:
            self.issue(
                path,
                f"fallback server {host_port(address, port)} is also a real server of this service "
                f"(line {real_servers[(address, port)]})",
            )
        return FallbackServer(address=address, port=port, weight=schema.weight, forwarding=forwarding)


def build_config(root: Any, file: str) -> tuple[Config | None, list[ConfigIssue]]:
    """Check and convert a located document (as `director.config.located.load_yaml` returns it).

    Args:
        root: the loaded document: a `YamlMap` for a well-formed file, ``None`` for an empty one,
            any other value for a file whose top level is not a mapping.
        file: path of the configuration file, for messages (a relative ``ha.authkeys`` path is
            taken relative to its directory).

    Returns:
        ``(config, issues)``: the `Config` and every problem found, located, in the order found
        (the caller sorts them).  When ``issues`` is not empty the ``config`` must not be used;
        it is ``None`` when the document is not a mapping.  Never raises for bad input.
    """
    builder = _Builder(file, root)
    config = builder.build()
    return config, builder.issues
