"""The pydantic models of the file's structure (`RootSchema` and the models of its sections), and
pydantic's errors written as plain-words messages (`pydantic_message`).

Unknown keys are errors, types are strict (a string is not an integer, a boolean is not an
integer; integers are accepted where a number of seconds is expected).  The ``ha:`` section is
not modelled here: `director.config.ha` checks it.  Pure.
"""

from __future__ import annotations

import difflib
import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
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


class CheckSchema(_Schema):
    """A ``check:`` mapping (service level or real-server override).

    Only the keys actually present take part in merging (service keys, then the
    real server's keys on top, then the `CheckSpec` defaults); the defaults
    below are `CheckSpec`'s own (`_SPEC`), so they document the result and cannot
    drift from it.  Times are seconds.
    """

    type: CheckType = _SPEC.type
    port: int | None = _SPEC.port
    interval: float = _SPEC.interval
    retry_interval: float = _SPEC.retry_interval
    timeout: float = _SPEC.timeout
    rise: int = _SPEC.rise
    fall: int = _SPEC.fall
    method: str = _SPEC.method
    path: str = _SPEC.path
    host: str | None = _SPEC.host
    expect_status: list[int] = Field(default_factory=lambda: sorted(_SPEC.expect_status))
    expect_body: str | None = _SPEC.expect_body
    verify_tls: bool = _SPEC.verify_tls
    command: list[str] = Field(default_factory=lambda: list(_SPEC.command))


class PersistenceSchema(_Schema):
    """A ``persistence:`` mapping.

    ``timeout`` is in seconds.  ``netmask`` is a dotted IPv4 mask (IPv4
    services) or a prefix length (IPv6 services); its type depends on the
    service's family, so it is checked after schema validation.  Default:
    ``255.255.255.255`` / ``128``.
    """

    timeout: int = DEFAULT_PERSISTENCE_TIMEOUT
    netmask: Any = None


class FallbackSchema(_Schema):
    """A ``fallback:`` mapping (sorry server).  Port, weight and forwarding default from the service."""

    address: str
    port: int | None = None
    weight: int = 1
    forwarding: ForwardingName | None = None


class RealServerSchema(_Schema):
    """One entry of ``real_servers:``.  ``port`` defaults to the virtual port (0 for fwmark services)."""

    address: str
    port: int | None = None
    weight: int = 1
    forwarding: ForwardingName | None = None
    upper_threshold: int = 0
    lower_threshold: int = 0
    check: CheckSchema | None = None


class ServiceSchema(_Schema):
    """One entry of ``virtual_services:``: ``address`` + ``port`` (+ ``protocol``) or ``fwmark`` (+ ``family``)."""

    name: str | None = None
    address: str | None = None
    port: int | None = None
    protocol: ProtocolName | None = None
    fwmark: int | None = None
    family: Family | None = None
    scheduler: str = "wlc"
    scheduler_flags: list[str] = Field(default_factory=list)
    forwarding: ForwardingName = "dr"
    persistence: PersistenceSchema | None = None
    on_failure: OnFailure = "quiescent"
    check: CheckSchema | None = None
    real_servers: list[RealServerSchema] | None = None
    fallback: FallbackSchema | None = None


class SyncDaemonSchema(_Schema):
    """The ``global.sync_daemon:`` mapping (IPVS connection synchronisation)."""

    interface: str
    syncid: int = 0


class HTTPSchema(_Schema):
    """The ``global.http:`` mapping (metrics and the status page).  ``listen`` is
    ``ADDRESS:PORT`` (``[ADDRESS]:PORT`` for IPv6); ``token_file``, an absolute path."""

    listen: str = host_port(DEFAULT_HTTP_HOST, DEFAULT_HTTP_PORT)
    token_file: str | None = None


class SettingsSchema(_Schema):
    """The ``global:`` mapping.  Times are seconds."""

    reconcile_interval: float = Settings.reconcile_interval
    drain_timeout: float = Settings.drain_timeout
    control_socket: str = Settings.control_socket
    sync_daemon: SyncDaemonSchema | None = None
    http: HTTPSchema | None = None
    state_dir: str = Settings.state_dir


class HookSchema(_Schema):
    """One item of ``notify.hooks``: ``events`` (kinds of `director.model.HOOK_EVENTS`),
    ``command`` (an argv), optional ``name``, ``service`` and ``timeout`` (seconds)."""

    events: list[str]
    command: list[str]
    name: str | None = None
    service: str | None = None
    timeout: float | None = None


class NotifySchema(_Schema):
    """The ``notify:`` mapping: the hooks, their default ``timeout`` (seconds) and how many
    run at once."""

    timeout: float = DEFAULT_HOOK_TIMEOUT
    max_running: int = DEFAULT_HOOKS_RUNNING
    hooks: list[HookSchema] = Field(default_factory=list)


class RootSchema(_Schema):
    """The whole file.  Every section is optional."""

    global_: SettingsSchema | None = Field(default=None, alias="global")
    virtual_services: list[ServiceSchema] | None = None
    notify: NotifySchema | None = None
    # The ha section is checked and converted by director.config.ha.parse_ha.
    ha: dict[Any, Any] | None = None


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
    return err["msg"]
