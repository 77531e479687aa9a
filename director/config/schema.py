"""The pydantic models of the file's structure (`RootSchema` and the models of its sections), and
pydantic's errors written as plain-words messages (`pydantic_message`).

Unknown keys are errors, types are strict (a string is not an integer, a boolean is not an
integer; integers are accepted where a number of seconds is expected).  The ``ha:`` and ``bgp:``
sections are not modelled here: `director.config.ha` and `director.config.bgp` check them.  Pure.

Every field carries its meaning (``Field(description=...)``) and, where its default is worked out
elsewhere (a ``None`` standing for "the virtual port"), the default to show (`_shown`), and where
its annotation says too little, the type to show (``type_text``): `director.config.reference`
renders them as docs/configuration.md.  None of them changes validation.
"""

from __future__ import annotations

import difflib
import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, TypeAdapter, field_validator, model_validator
from pydantic_core import ErrorDetails

from checks.spec import CheckSpec, CheckType
from director.config.issues import describe, quote
from director.config.located import Path
from director.model import (
    DEFAULT_HOOK_TIMEOUT,
    DEFAULT_HOOKS_RUNNING,
    DEFAULT_HTTP_HOST,
    DEFAULT_HTTP_PORT,
    PROTOCOLS,
    Family,
    ForwardingName,
    OnFailure,
    Settings,
    host_port,
)

__all__ = [
    "DEFAULT_PERSISTENCE_TIMEOUT",
    "LIST_OR_NULL",
    "CheckSchema",
    "DialogueStepSchema",
    "FallbackSchema",
    "HTTPSchema",
    "HookSchema",
    "NotifySchema",
    "PersistenceSchema",
    "RealServerSchema",
    "RootSchema",
    "ServiceSchema",
    "SettingsSchema",
    "SyncDaemonSchema",
    "pydantic_message",
]

#: Default persistence timeout in seconds when ``persistence:`` omits it (ipvsadm's default).
DEFAULT_PERSISTENCE_TIMEOUT = 300


ProtocolName = Literal["tcp", "udp", "sctp"]
assert set(typing.get_args(ProtocolName)) == set(PROTOCOLS)


class _Schema(BaseModel):
    """Base of the schema models: unknown keys are errors, types are strict, no inf/nan."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


#: A check with every default (`checks.spec.CheckSpec`): the source of `CheckSchema`'s defaults.
_SPEC = CheckSpec()


def _shown(text: str) -> dict[str, JsonValue]:
    """``json_schema_extra`` of a field whose default is worked out elsewhere (a ``None`` that
    means "the service's port"): ``text`` is the default the reference shows
    (`director.config.reference`).  Documentation only: validation ignores it."""
    return {"default_text": text}


class DialogueStepSchema(_Schema):
    """One step of a ``tcp`` check's ``dialogue``: exactly one of its keys."""

    send: str | None = Field(None, description="Text sent (Latin-1 bytes).")
    expect: str | None = Field(None, description="RE2 regex awaited in what arrives.")
    fail: str | None = Field(
        None, description="RE2 regex: the `expect` step before it fails at once when this matches first."
    )
    starttls: bool | None = Field(None, description="`true`: start TLS here.")

    @model_validator(mode="after")
    def _one_key(self) -> DialogueStepSchema:
        keys = [name for name in ("send", "expect", "fail", "starttls") if getattr(self, name) is not None]
        if len(keys) != 1:
            raise ValueError(
                "a dialogue step is a mapping of exactly one key, send, expect, fail or starttls; "
                + (f"this one has {', '.join(keys)}" if keys else "this one has none")
            )
        if self.starttls is False:
            raise ValueError("starttls: false is not a step; leave the step out")
        return self


class CheckSchema(_Schema):
    """A ``check:`` mapping (service level or real-server override).

    Only the keys actually present take part in merging (service keys, then the
    real server's keys on top, then the `CheckSpec` defaults); the defaults
    below are `CheckSpec`'s own (`_SPEC`), so they document the result and cannot
    drift from it.  Times are seconds.
    """

    type: CheckType = Field(
        _SPEC.type,
        description="`tcp` (connect, then an optional `dialogue`), `http`, `https`, `dns`, `udp` (a datagram and "
        "its reply), `ping` (ICMP echo), `radius` (Access-Request), `sip` (OPTIONS), `mysql`, `pgsql`, `oracle`, "
        "`ldap` (bind and a base search), `ftp` (login and an optional download), `none` "
        "(always up), `external` (a command). UDP services take `dns`, `udp`, `radius`, `sip`; every service takes "
        "`ping`, `external`, `none`.",
    )
    port: int | None = Field(
        _SPEC.port,
        description="Port to check; required for fwmark services (unless the type is `none`).",
        json_schema_extra=_shown("the real server's port"),
    )
    interval: float = Field(_SPEC.interval, description="Seconds between the starts of two checks.")
    retry_interval: float = Field(
        _SPEC.retry_interval,
        description="Seconds between the starts of two checks while rise/fall counts (a failure while up, "
        "a success while down); never more than `interval` (keepalived's `delay_before_retry`).",
    )
    timeout: float = Field(
        _SPEC.timeout,
        description="Seconds; hard bound on the whole check (connect + request + body, or the command).",
    )
    rise: int = Field(_SPEC.rise, description="Consecutive successes for a real server to come up.")
    fall: int = Field(_SPEC.fall, description="Consecutive failures for a real server to go down.")
    method: str = Field(_SPEC.method, description="HTTP request method (`http`, `https`): an HTTP token.")
    path: str = Field(_SPEC.path, description="HTTP request path (`http`, `https`); starts with `/`.")
    host: str | None = Field(
        _SPEC.host,
        description="The Host header (and TLS SNI) of the HTTP request.",
        json_schema_extra=_shown("the real server's address"),
    )
    expect_status: list[int] = Field(
        default_factory=lambda: sorted(_SPEC.expect_status),
        description="Accepted HTTP status codes (100-599), at least one.",
    )
    expect_body: str | None = Field(
        _SPEC.expect_body,
        description="Regular expression searched in the first 64 KiB of the body, in RE2 syntax (linear time: "
        "no backreferences or lookaround; `directord check` names what RE2 refuses). The worst search "
        "takes about half a second, on a thread of its own: the check's timeout holds.",
    )
    verify_tls: Literal[False, True, "none", "chain", "full"] = Field(
        _SPEC.verify_tls,
        description="How `https` (and TLS in a `tcp` check) judges the server's certificate: `none` (not at all), "
        "`chain` (it must chain to a trusted CA, whatever its name: what ldirectord's `https` check does), `full` "
        "(chain and name: `sni`, else `host` without its port, else the RIP). `true` is `full`, `false` is `none`.",
    )

    @field_validator("verify_tls", mode="before")
    @classmethod
    def _no_integer(cls, value: Any) -> Any:
        # a Literal of True and False takes 1 and 0 too; the file's booleans are strict
        if isinstance(value, int) and not isinstance(value, bool):
            raise ValueError(f"expected true, false, none, chain or full, got {describe(value)}")
        return value

    ca_file: str | None = Field(
        _SPEC.ca_file,
        description="PEM file of the CAs that `chain` and `full` trust (an absolute path).",
        json_schema_extra=_shown("the system's CA store"),
    )
    sni: str | None = Field(
        _SPEC.sni,
        description="The TLS server name sent (SNI) and, with `verify_tls: full`, checked.",
        json_schema_extra=_shown("`host` without its port; none when `host` is unset"),
    )
    command: list[str] = Field(
        default_factory=lambda: list(_SPEC.command),
        description="`external`: argv run without a shell from `/`, with VIP, virtual port, RIP and checked "
        "port appended; its own exit status decides (0 = up), whatever processes it leaves behind. The "
        "program is named by an absolute path and only root may be able to replace it (as sshd's "
        "StrictModes: owned by root, not writable by group or others, nor any directory on its path unless "
        "sticky like `/tmp`); `directord check` refuses one that is not, and the checker does not run it.",
    )
    tls: bool = Field(_SPEC.tls, description="`tcp`, `ldap`: TLS from the first byte (smtps, pop3s, imaps, ldaps).")
    dialogue: list[DialogueStepSchema] = Field(
        default_factory=list,
        description="`tcp`: steps run in order once connected, each a mapping of one key: `send: TEXT` (sent as "
        "Latin-1 bytes; write `\\r\\n` in a double-quoted YAML string), `expect: REGEX` (RE2; read until it "
        "matches what arrived since the last send, at most 64 KiB), `fail: REGEX` (RE2; after an `expect`: that "
        "step fails at once when this matches first, e.g. `-ERR` from a server that keeps the connection open), "
        "`starttls: true` (TLS from here on, as `verify_tls`). Empty: connect only.",
        json_schema_extra={"type_text": "list of mappings"},
    )
    send: str | None = Field(_SPEC.send, description="`udp`: the datagram sent (Latin-1 text).")
    expect: str | None = Field(
        _SPEC.expect,
        description="RE2 regex the answer must match: `udp` the reply, `dns` the answer section (one record per "
        "line, zone-file text), `mysql`/`pgsql`/`oracle` the query's first row (values joined by tabs, NULL as empty), "
        "`sip` the status line. Unset: any answer passes (`sip`: status 200).",
    )
    query_name: str | None = Field(_SPEC.query_name, description="`dns`: the name asked for (required).")
    query_type: str = Field(_SPEC.query_type, description="`dns`: the record type asked for: `A`, `AAAA`, `MX`...")
    transport: Literal["udp", "tcp"] | None = Field(
        _SPEC.transport,
        description="`dns`: `udp` or `tcp`.",
        json_schema_extra=_shown("the virtual service's protocol (udp for a fwmark service)"),
    )
    expect_rcode: str = Field(
        _SPEC.expect_rcode, description="`dns`: the response code that passes: `NOERROR`, `NXDOMAIN`..."
    )
    login: str | None = Field(
        _SPEC.login,
        description="`radius`, `mysql`, `pgsql`, `oracle`, `ftp`: the user name; `ldap`: the bind DN (unset: "
        "anonymous); `sip`: the URI's `user@host` (ldirectord's `login`). "
        "`radius` with a login passes on Access-Accept only (as ldirectord); without, it sends User-Name `directord` "
        "and any authenticated answer passes (Accept, Reject, Challenge). `sip` without: `directord@<RIP>`.",
    )
    password: str | None = Field(_SPEC.password, description="`radius`, `mysql`, `pgsql`, `oracle`: the password.")
    secret: str | None = Field(_SPEC.secret, description="`radius`: the shared secret (RFC 2865).")
    database: str | None = Field(
        _SPEC.database,
        description="`mysql`, `pgsql`: the database to connect to; `oracle` (required): the instance's SID, or "
        "`service:NAME` for a service name (a pluggable database: `service:FREEPDB1`).",
    )
    query: str | None = Field(
        _SPEC.query,
        description="`mysql`, `pgsql`, `oracle`: a query run once connected; `ldap`: the base DN of a base-scope "
        "search that must find one entry (its DN matched by `expect`); `ftp`: a file downloaded (its first 64 KiB "
        "matched by `expect`).",
    )
    agent_port: int | None = Field(
        _SPEC.agent_port,
        description="The port of an agent on the real server (HAProxy's agent-check), asked after each passing "
        "check: `75%` sets the weight to that share of the configured one, `drain` to 0, `down`/`fail`/`stopped`/"
        "`maint` fail the check, `up`/`ready` restore it. An agent that does not answer changes nothing.",
        json_schema_extra=_shown("no agent"),
    )
    agent_send: str | None = Field(
        _SPEC.agent_send, description="Text sent to the agent once connected (HAProxy's `agent-send`)."
    )
    dynamic_weight: bool = Field(
        _SPEC.dynamic_weight,
        description="`external`: exit status 2-255 means up at weight status - 2 (keepalived's `misc_dynamic`); "
        "0 is up at the configured weight, 1 down.",
    )
    slow_start: float = Field(
        _SPEC.slow_start,
        description="Seconds over which a real server that comes back up ramps from weight 1 to its weight, in at "
        "most 10 steps (HAProxy's `slowstart`); not at the director's start. 0: at once.",
    )


class PersistenceSchema(_Schema):
    """A ``persistence:`` mapping.

    ``timeout`` is in seconds.  ``netmask`` is a dotted IPv4 mask (IPv4
    services) or a prefix length (IPv6 services); its type depends on the
    service's family, so it is checked after schema validation.  Default:
    ``255.255.255.255`` / ``128``.
    """

    timeout: int = Field(
        DEFAULT_PERSISTENCE_TIMEOUT,
        description="Seconds a client stays with the real server it was sent to (ipvsadm's `-p`).",
    )
    netmask: Any = Field(
        None,
        description="Clients whose addresses share this mask share a real server: a dotted netmask for an "
        "IPv4 service (such as 255.255.255.0), a prefix length 1-128 for an IPv6 service.",
        json_schema_extra={**_shown("`255.255.255.255` (IPv4), `128` (IPv6)"), "type_text": "string or integer"},
    )


class FallbackSchema(_Schema):
    """A ``fallback:`` mapping (sorry server).  Port, weight and forwarding default from the service."""

    address: str = Field(description="The sorry server's IP address.")
    port: int | None = Field(
        None,
        description="Its port (as a real server's).",
        json_schema_extra=_shown("the virtual port"),
    )
    weight: int = Field(1, description="Its weight, 0-65535.")
    forwarding: ForwardingName | None = Field(
        None,
        description="Its forwarding method (as a real server's).",
        json_schema_extra=_shown("the service's"),
    )


class RealServerSchema(_Schema):
    """One entry of ``real_servers:``.  ``port`` defaults to the virtual port (0 for fwmark services)."""

    address: str = Field(
        description="The real server's IP address (RIP). Another address family than the VIP's needs forwarding `tun`."
    )
    port: int | None = Field(
        None,
        description="The real port. With `dr` and `tun` it must equal the virtual port (the packet is not "
        "rewritten); only `nat` may map ports. 0 (keep the packet's port) only in a fwmark service.",
        json_schema_extra=_shown("the virtual port (0 for fwmark services)"),
    )
    weight: int = Field(1, description="Its weight, 0-65535 (0: no new connections).")
    forwarding: ForwardingName | None = Field(
        None,
        description="`dr`, `nat` or `tun`, overriding the service's.",
        json_schema_extra=_shown("the service's"),
    )
    upper_threshold: int = Field(
        0,
        description="Connections (active and inactive) at which the kernel sends it no new ones (0 = no threshold).",
    )
    lower_threshold: int = Field(
        0,
        description="Once over `upper_threshold`, it gets new connections again below this many (0: below "
        "three quarters of `upper_threshold`, the kernel's rule); not above `upper_threshold`.",
    )
    check: CheckSchema | None = Field(
        None,
        description="Overrides single fields of the service's `check:`.",
        json_schema_extra=_shown("the service's check"),
    )


class ServiceSchema(_Schema):
    """One entry of ``virtual_services:``: ``address`` + ``port`` (+ ``protocol``) or ``fwmark`` (+ ``family``)."""

    name: str | None = Field(
        None,
        description="Name in logs, status and hooks (`service:`); unique.",
        json_schema_extra=_shown("the key's text, e.g. `tcp 10.0.0.1:80`"),
    )
    address: str | None = Field(
        None, description="The VIP (IPv4 or IPv6), with `port` and `protocol`; not with `fwmark`."
    )
    port: int | None = Field(None, description="The virtual port, 1-65535; required with `address`.")
    protocol: ProtocolName | None = Field(
        None, description="The transport protocol of `address` and `port`.", json_schema_extra=_shown("`tcp`")
    )
    fwmark: int | None = Field(
        None, description="Instead of address/port/protocol: a firewall-mark service, for packets of this mark."
    )
    family: Family | None = Field(
        None,
        description="`inet` (IPv4) or `inet6` (IPv6): the family of a fwmark service (with an address, it "
        "must match it).",
        json_schema_extra=_shown("`inet`"),
    )
    scheduler: str = Field(
        "wlc",
        description="The IPVS scheduler (`wlc` is the kernel's default; `twos` needs a kernel that has it).",
    )
    scheduler_flags: list[str] = Field(
        default_factory=list,
        description="Scheduler flags (ipvsadm's `-b`), each valid with its scheduler only.",
    )
    forwarding: ForwardingName = Field(
        "dr",
        description="`dr` (direct routing), `nat` (masquerading), `tun` (ipip tunnelling); real servers inherit it.",
    )
    persistence: PersistenceSchema | None = Field(None, description="Client persistence (sticky sessions).")
    on_failure: OnFailure = Field(
        "quiescent",
        description="`quiescent`: a failed real server stays at weight 0 so its connections drain; "
        "`remove`: it is deleted.",
    )
    check: CheckSchema | None = Field(
        None,
        description="The health check of every real server.",
        json_schema_extra=_shown("a `tcp` check"),
    )
    real_servers: list[RealServerSchema] | None = Field(None, description="The real servers.")
    fallback: FallbackSchema | None = Field(
        None, description="The sorry server: in the table only while no real server is up."
    )


class SyncDaemonSchema(_Schema):
    """The ``global.sync_daemon:`` mapping (IPVS connection synchronisation)."""

    interface: str = Field(
        description="The interface the kernel's master and backup sync daemons run on (multicast "
        "224.0.0.81, UDP 8848), so that the director that takes the VIP already knows the established "
        "connections. Same setting on both directors."
    )
    syncid: int = Field(0, description="0-255; keeps pairs on one network apart.")


class HTTPSchema(_Schema):
    """The ``global.http:`` mapping (metrics and the status page).  ``listen`` is
    ``ADDRESS:PORT`` (``[ADDRESS]:PORT`` for IPv6); ``token_file``, an absolute path."""

    listen: str = Field(
        host_port(DEFAULT_HTTP_HOST, DEFAULT_HTTP_PORT),
        description="An IP address and a port (`[::1]:9199` for IPv6; no host names). Any address but "
        "loopback needs `token_file`. A new `listen` applies at the next restart.",
    )
    token_file: str | None = Field(
        None,
        description="Absolute path of a file of mode 600 (root's) holding one token of 16 or more "
        "characters (`openssl rand -hex 32`), which every request must send as `Authorization: Bearer "
        "TOKEN`. A reload applies a new token at once.",
    )


class SettingsSchema(_Schema):
    """The ``global:`` mapping.  Times are seconds."""

    reconcile_interval: float = Field(
        Settings.reconcile_interval,
        description="Seconds between drift-repair passes (full dump of the IPVS table).",
    )
    drain_timeout: float = Field(
        Settings.drain_timeout, description="Seconds a removed real server may drain before it is deleted."
    )
    control_socket: str = Field(Settings.control_socket, description="The status/control socket: an absolute path.")
    sync_daemon: SyncDaemonSchema | None = Field(
        None,
        description="IPVS connection synchronisation: the kernel's sync daemons (`directord status` lists them).",
    )
    http: HTTPSchema | None = Field(
        None,
        description="Metrics (and the status page) over HTTP; `{}` listens on the default address.",
        json_schema_extra=_shown("none (no listener)"),
    )
    state_dir: str = Field(
        Settings.state_dir,
        description="The daemon's own state: the operator's real-server states (`admin.json`, see "
        "`directord rs`); systemd's `StateDirectory=directord`.",
    )


class HookSchema(_Schema):
    """One item of ``notify.hooks``: ``events`` (kinds of `director.model.HOOK_EVENTS`),
    ``command`` (an argv), optional ``name``, ``service`` and ``timeout`` (seconds)."""

    events: list[str] = Field(
        description="The event kinds that run the hook (see the events below), at least one.",
        json_schema_extra={"type_text": "list of event kinds"},
    )
    command: list[str] = Field(
        description="An argv, run without a shell: the program's absolute path (only root may be able to "
        "replace it, as for an `external` check), then its arguments."
    )
    name: str | None = Field(
        None,
        description="Its name in logs: 1-64 letters, digits and `._-` characters.",
        json_schema_extra=_shown("the program's file name"),
    )
    service: str | None = Field(
        None,
        description="Only that virtual service's events (the `name` of a virtual service; for the events "
        "of a service only).",
    )
    timeout: float | None = Field(
        None,
        description="Seconds it may run; then SIGTERM, SIGKILL 2 s later.",
        json_schema_extra=_shown("`notify.timeout`"),
    )


class NotifySchema(_Schema):
    """The ``notify:`` mapping: the hooks, their default ``timeout`` (seconds) and how many
    run at once."""

    timeout: float = Field(
        DEFAULT_HOOK_TIMEOUT,
        description="Default seconds a hook may run; then SIGTERM, SIGKILL 2 s later.",
    )
    max_running: int = Field(DEFAULT_HOOKS_RUNNING, description="Hooks running at once, besides the one HA hook.")
    hooks: list[HookSchema] = Field(default_factory=list, description="Programs run on events, in file order.")


class RootSchema(_Schema):
    """The whole file.  Every section is optional."""

    global_: SettingsSchema | None = Field(
        default=None, alias="global", description="Daemon-wide settings.", json_schema_extra=_shown("the defaults")
    )
    virtual_services: list[ServiceSchema] | None = Field(
        None, description="The virtual services and their real servers."
    )
    notify: NotifySchema | None = Field(None, description="Programs run on events (hooks).")
    # The ha section is checked and converted by director.config.ha.parse_ha.
    ha: dict[Any, Any] | None = Field(
        None,
        description="High availability: a heartbeat 3.0.6-compatible pair of directors.",
        json_schema_extra=_shown("none (a single director)"),
    )
    # The bgp section is checked and converted by director.config.bgp.parse_bgp.
    bgp: dict[Any, Any] | None = Field(
        None,
        description="Active-active: every director announces the VIPs to its routers over BGP.",
        json_schema_extra=_shown("none (no BGP)"),
    )


#: A list or null, validated strictly (the ``virtual_services`` value).
LIST_OR_NULL: TypeAdapter[list[Any] | None] = TypeAdapter(list[Any] | None)


# --- pydantic errors as located issues ------------------------------------------------------

_EXPECTED = {
    "int_type": "an integer",
    "float_type": "a number",
    "string_type": "a string",
    "bool_type": "a boolean (true or false)",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


def _find_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _find_model(arg)
        if found is not None:
            return found
    return None


def _schema_keys(schema: type[BaseModel], rel: Path) -> list[str]:
    """The keys allowed in the mapping at relative path ``rel`` inside ``schema``."""
    model: type[BaseModel] | None = schema
    for part in rel:
        if isinstance(part, int) or model is None:
            continue
        fields = {info.alias or name: info for name, info in model.model_fields.items()}
        model = _find_model(fields[part].annotation) if part in fields else None
    if model is None:
        return []
    return sorted(info.alias or name for name, info in model.model_fields.items())


def pydantic_message(schema: type[BaseModel] | None, err: ErrorDetails) -> str:
    """One pydantic error (an item of ``ValidationError.errors()``) in plain words: a missing key, an
    unknown key with the closest valid one (``did you mean``) or the valid keys of ``schema`` at that
    place, or the expected type and a short description of the value found (`describe`).
    """
    kind, rel, value = err["type"], tuple(err["loc"]), err.get("input")
    if kind == "missing":
        return f"missing required key '{rel[-1]}'"
    if kind == "extra_forbidden":
        key = rel[-1]
        allowed = _schema_keys(schema, rel[:-1]) if schema is not None else []
        close = difflib.get_close_matches(str(key), allowed, n=1)
        if close:
            return f"unknown key {quote(str(key))}; did you mean '{close[0]}'?"
        return f"unknown key {quote(str(key))}" + (f"; valid keys: {', '.join(allowed)}" if allowed else "")
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {describe(value)}"
    if kind == "literal_error":
        return f"expected one of {err['ctx']['expected']}, got {describe(value)}"
    if kind == "finite_number":
        return f"expected a finite number, got {describe(value)}"
    if kind == "value_error" and "error" in err.get("ctx", {}):
        return str(err["ctx"]["error"])  # a model's own rule (`DialogueStepSchema`): its text as is
    return err["msg"]
