"""Configuration loader: a YAML file in, a validated `director.model.Config` out.

The format is defined by the sample ``etc/directord.yaml``.  Loading runs in
three stages, and every problem found in any stage is collected, so one run
reports all of them at once:

1. **Located YAML loading** (`LocatedLoader`): PyYAML's safe loader, extended
   so that duplicate keys are reported (PyYAML would keep the last one
   silently) and every constructed mapping and sequence remembers the line
   and column of itself, of each key and of each value.
2. **Schema validation** with pydantic v2 models (`RootSchema` and friends):
   unknown keys are errors, types are strict (a string is not an integer, a
   boolean is not an integer; integers are accepted where a number of seconds
   is expected).  Each pydantic error location is mapped back to the YAML node
   it came from.
3. **Semantic checks and conversion** to the frozen dataclasses of
   `director.model`: ranges, cross-field rules (fwmark vs address services,
   scheduler flags, address families, forwarding methods, duplicates) and the
   merging of service-level and real-server-level ``check`` mappings.

The file is hostile input until validated: it must be a regular file of at
most `MAX_CONFIG_BYTES` (read with `ha.readfile.read_regular_file`, so a FIFO
or a device is refused, not waited on or read forever), nested at most
`MAX_YAML_DEPTH` levels, with at most `MAX_YAML_NODES` values counting what
each alias stands for; every time and count has a range (``CHECK_*_RANGE``,
``RECONCILE_INTERVAL_RANGE``, ``DRAIN_TIMEOUT_RANGE``); ``expect_body`` must
be RE2 syntax (`re2_problem`); and messages quote at most `MAX_QUOTED`
characters of a value, control characters escaped (`quote`).

Problems are `ConfigIssue` objects (file, 1-based line and column, dotted field
path such as ``virtual_services[0].real_servers[1].weight``, message) carried
by one `ConfigError`.

Kernel facts behind some rules: the kernel rejects a destination whose lower
connection threshold is above its upper one (``ip_vs_add_dest`` in
``net/netfilter/ipvs/ip_vs_ctl.c`` returns ERANGE); a destination of another
address family than its service is only allowed with tunnelling; with direct
routing and tunnelling the packet's port is not rewritten, which is why
ipvsadm forces the real port of such destinations to the virtual port for
non-fwmark services.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import socket
import stat
import typing
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import re2
import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from checks.spec import (
    DEFAULT_FALL,
    DEFAULT_INTERVAL,
    DEFAULT_RETRY_INTERVAL,
    DEFAULT_RISE,
    DEFAULT_TIMEOUT,
    CheckSpec,
    CheckType,
)
from director.model import (
    FAMILIES,
    IFNAME_MAX,
    PROTOCOLS,
    SCHEDULER_FLAGS,
    SCHEDULERS,
    Config,
    FallbackServer,
    Family,
    ForwardingName,
    OnFailure,
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
from ha.readfile import ReadFileError, file_kind, read_regular_file

__all__ = [
    "MAX_CONFIG_BYTES",
    "MAX_YAML_DEPTH",
    "MAX_YAML_NODES",
    "CheckSchema",
    "ConfigError",
    "ConfigIssue",
    "FallbackSchema",
    "LocatedLoader",
    "PersistenceSchema",
    "RealServerSchema",
    "RootSchema",
    "ServiceSchema",
    "SettingsSchema",
    "format_issues",
    "load_config",
    "parse_config",
    "quote",
    "re2_problem",
]

U32_MAX = 0xFFFFFFFF
#: Largest configuration file accepted, in bytes (8 MiB: thousands of real servers fit many times over).
MAX_CONFIG_BYTES = 8 * 1024 * 1024
#: Deepest nesting of YAML mappings and sequences accepted (the format itself needs 6).
MAX_YAML_DEPTH = 32
#: Most YAML values (scalars, mappings, sequences) in one document, counting what an alias
#: refers to at each use, so that a few aliases cannot multiply the work of validation.
MAX_YAML_NODES = 2_000_000
#: Most issues one `ConfigError` lists; the rest are counted in a last issue.
MAX_ISSUES = 100
#: Longest quoted value shown in a message, in characters (longer ones end with ``...``).
MAX_QUOTED = 60
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
#: Bounds of ``global.reconcile_interval`` and ``global.drain_timeout``, seconds.
RECONCILE_INTERVAL_RANGE = (0.1, 3600.0)
DRAIN_TIMEOUT_RANGE = (0.0, 86400.0)
#: Default persistence timeout in seconds when ``persistence:`` omits it (ipvsadm's default).
DEFAULT_PERSISTENCE_TIMEOUT = 300
#: Longest unix socket path: ``sizeof(sun_path)`` is 108 bytes including the NUL (unix(7)).
MAX_UNIX_PATH_BYTES = 107
#: An HTTP method is a token (RFC 9110 section 9.1, token syntax in section 5.6.2).
_HTTP_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


# --- issues ---------------------------------------------------------------------


def _escape(text: str) -> str:
    """``text`` with every non-printable character (ESC, NUL, newline...) written as a Python escape."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def quote(value: Any, limit: int = MAX_QUOTED) -> str:
    """A value quoted for a message: ``repr`` of its first ``limit`` characters, ``...`` after when cut.

    A string is quoted; another value (a number...) is its ``repr``, cut alike.

    Control characters come out escaped (``'\\x1b'``), so a message is always
    one printable line, and a 50 MB scalar costs 60 characters.
    """
    if not isinstance(value, str):
        return _bounded(repr(value), limit)
    if len(value) > limit:
        return repr(value[:limit]) + "..."
    return repr(value)


def _bounded(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters (``...`` appended) and escaped (see `_escape`)."""
    if len(text) > limit:
        text = text[:limit] + "..."
    return _escape(text)




@dataclass(frozen=True)
class ConfigIssue:
    """One problem found in a configuration file.

    Attributes:
        file: path of the configuration file, as given to the loader.
        line: 1-based line of the offending YAML node; 0 when the problem has
            no position (the file could not be read).
        column: 1-based column of that node; 0 when ``line`` is 0.
        field: dotted path of the offending value, e.g.
            ``virtual_services[0].real_servers[1].weight``; ``""`` for problems
            of the file as a whole (YAML syntax, empty file).
        message: what is wrong, in plain words.

    ``str(issue)`` is ``FILE:LINE:COL: FIELD: MESSAGE``; the ``FIELD: `` part is
    left out when ``field`` is empty, and ``:LINE:COL`` when ``line`` is 0.
    """

    file: str
    line: int
    column: int
    field: str
    message: str

    def __post_init__(self) -> None:
        # Whatever a message quotes, an issue stays one printable line of bounded length.
        object.__setattr__(self, "field", _bounded(self.field, 200))
        object.__setattr__(self, "message", _bounded(self.message, 1000))

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        if self.field:
            return f"{where}: {self.field}: {self.message}"
        return f"{where}: {self.message}"


class ConfigError(Exception):
    """A configuration file is invalid.

    Attributes:
        issues: the problems found, sorted by position in the file (never
            empty): the first `MAX_ISSUES`, then, when there were more, one
            issue without position saying how many were left out.
            ``str(error)`` lists them, one per line.
        total: how many problems were found (``len(issues)`` unless some
            were left out).
    """

    def __init__(self, issues: list[ConfigIssue]) -> None:
        kept = list(issues[:MAX_ISSUES])
        if len(issues) > MAX_ISSUES:
            rest = len(issues) - MAX_ISSUES
            kept.append(ConfigIssue(kept[0].file, 0, 0, "", f"{rest} more problem{'s' if rest != 1 else ''} not listed"))
        self.issues: list[ConfigIssue] = kept
        self.total = len(issues)
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(issue) for issue in self.issues)


def format_issues(err: ConfigError) -> str:
    """Human-readable report for ``directord check``: one issue per line, then a count line.

    Example::

        /etc/directord/directord.yaml:14:11: virtual_services[0].port: port 70000 is out of range 1..65535
        /etc/directord/directord.yaml: 1 error
    """
    count = err.total
    file = err.issues[0].file if err.issues else "configuration"
    noun = "error" if count == 1 else "errors"
    return f"{err}\n{file}: {count} {noun}"


# --- pydantic schema --------------------------------------------------------------

ProtocolName = Literal["tcp", "udp", "sctp"]
assert set(typing.get_args(ProtocolName)) == set(PROTOCOLS)


class _Schema(BaseModel):
    """Base of the schema models: unknown keys are errors, types are strict, no inf/nan."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class CheckSchema(_Schema):
    """A ``check:`` mapping (service level or real-server override).

    Only the keys actually present take part in merging (service keys, then the
    real server's keys on top, then the `CheckSpec` defaults); the defaults
    below document the result.  Times are seconds.
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
    expect_status: list[int] = Field(default_factory=lambda: [200])
    expect_body: str | None = None
    verify_tls: bool = False
    command: list[str] = Field(default_factory=list)


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


class SettingsSchema(_Schema):
    """The ``global:`` mapping.  Times are seconds."""

    reconcile_interval: float = Settings.reconcile_interval
    drain_timeout: float = Settings.drain_timeout
    control_socket: str = Settings.control_socket
    sync_daemon: SyncDaemonSchema | None = None


class RootSchema(_Schema):
    """The whole file.  Every section is optional."""

    global_: SettingsSchema | None = Field(default=None, alias="global")
    virtual_services: list[ServiceSchema] | None = None
    # The ha section is checked and converted by ha.config.parse_ha.
    ha: dict[Any, Any] | None = None


_LIST_OR_NULL: TypeAdapter[list[Any] | None] = TypeAdapter(list[Any] | None)


# --- located YAML loading ------------------------------------------------------------

#: (line, column), both 1-based.
Position = tuple[int, int]


def _position(mark: yaml.Mark) -> Position:
    return (mark.line + 1, mark.column + 1)


class YamlMap(dict):
    """A constructed YAML mapping that knows where it, its keys and its values are.

    Attributes:
        pos: position of the mapping itself.
        key_pos / value_pos: position of each key / of each key's value.
        duplicates: ``(key, position of the repeated key, position of the first)``
            for every key written twice in this mapping (the first one is kept).
    """

    __slots__ = ("duplicates", "key_pos", "pos", "value_pos")

    def __init__(self, pos: Position) -> None:
        super().__init__()
        self.pos = pos
        self.key_pos: dict[Any, Position] = {}
        self.value_pos: dict[Any, Position] = {}
        self.duplicates: list[tuple[Any, Position, Position]] = []


class YamlSeq(list):
    """A constructed YAML sequence that knows where it and each item are (``pos``, ``item_pos``)."""

    __slots__ = ("item_pos", "pos")

    def __init__(self, pos: Position, item_pos: list[Position]) -> None:
        super().__init__()
        self.pos = pos
        self.item_pos = item_pos


class LocatedLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that builds `YamlMap`/`YamlSeq` and records duplicate keys.

    Duplicate keys are not raised (so that all problems can be reported at
    once) but stored in `YamlMap.duplicates`; keys brought in by a ``<<`` merge
    may be overridden as YAML intends and are not duplicates.
    """

    _MERGE_TAG = "tag:yaml.org,2002:merge"

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0
        self._expanded = 0
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent: Any, index: Any) -> Any:
        """PyYAML's composer, bounded: nesting up to `MAX_YAML_DEPTH`, at most `MAX_YAML_NODES` values.

        An alias counts as many values as the node it refers to; an alias to
        a node that contains it (a recursive structure) is refused.
        """
        mark = self.peek_event().start_mark
        alias = self.check_event(yaml.AliasEvent)
        if not alias:
            if self._depth >= MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nesting deeper than {MAX_YAML_DEPTH} levels of mappings and lists", mark
                )
            self._depth += 1
        before = self._expanded
        try:
            node = super().compose_node(parent, index)
        finally:
            if not alias:
                self._depth -= 1
        if alias:
            size = self._sizes.get(id(node))
            if size is None:
                raise yaml.composer.ComposerError(
                    None, None, "an alias refers to a node that contains it (recursive structure)", mark
                )
            self._expanded += size
        else:
            self._expanded += 1
            self._sizes[id(node)] = self._expanded - before
        if self._expanded > MAX_YAML_NODES:
            raise yaml.composer.ComposerError(
                None, None, f"more than {MAX_YAML_NODES} values (what an alias refers to counts at each use)", mark
            )
        return node

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        """PyYAML's constructor; a value it cannot build (an integer of over 4300 digits...) is a located error."""
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as err:
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read this {node.tag.rsplit(':', 1)[-1]} value: {_escape(str(err)[:120])}",
                node.start_mark,
            ) from None

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> YamlMap:
        if not isinstance(node, yaml.MappingNode):
            raise yaml.constructor.ConstructorError(
                None, None, f"expected a mapping node, but found {node.id}", node.start_mark
            )
        data = YamlMap(_position(node.start_mark))
        self._fill_mapping(data, node, deep)
        return data

    def _fill_mapping(self, data: YamlMap, node: yaml.MappingNode, deep: bool) -> None:
        own_keys = {id(key) for key, _ in node.value if key.tag != self._MERGE_TAG}
        self.flatten_mapping(node)  # resolves "<<" merges: merged pairs first, own pairs last
        first_seen: dict[Any, Position] = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark, "found unhashable key", key_node.start_mark
                )
            key_pos = _position(key_node.start_mark)
            if id(key_node) in own_keys:
                if key in first_seen:
                    data.duplicates.append((key, key_pos, first_seen[key]))
                    continue
                first_seen[key] = key_pos
            data[key] = self.construct_object(value_node, deep=deep)
            data.key_pos[key] = key_pos
            data.value_pos[key] = _position(value_node.start_mark)

    def construct_located_map(self, node: yaml.MappingNode) -> Iterator[YamlMap]:
        data = YamlMap(_position(node.start_mark))
        yield data
        self._fill_mapping(data, node, deep=False)

    def construct_located_seq(self, node: yaml.SequenceNode) -> Iterator[YamlSeq]:
        data = YamlSeq(_position(node.start_mark), [_position(item.start_mark) for item in node.value])
        yield data
        data.extend(self.construct_sequence(node))


LocatedLoader.add_constructor("tag:yaml.org,2002:map", LocatedLoader.construct_located_map)
LocatedLoader.add_constructor("tag:yaml.org,2002:seq", LocatedLoader.construct_located_seq)


def _load_yaml(text: str, file: str) -> tuple[Any, list[ConfigIssue]]:
    """Parse ``text``; return the located data (or ``None``) and syntax issues."""
    loader: LocatedLoader | None = None
    try:
        loader = LocatedLoader(text)  # the reader checks for unprintable characters here
        return loader.get_single_data(), []
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line, column = _position(mark) if mark is not None else (1, 1)
        message = f"invalid YAML: {err.problem or err.context}"
        if err.context and err.problem:
            where = f" started on line {err.context_mark.line + 1}" if err.context_mark is not None else ""
            message += f" ({err.context}{where})"
        return None, [ConfigIssue(file, line, column, "", message)]
    except yaml.reader.ReaderError as err:
        before = text[: err.position]
        line = before.count("\n") + 1
        column = err.position - (before.rfind("\n") + 1) + 1
        char = err.character if isinstance(err.character, int) else ord(err.character)
        return None, [ConfigIssue(file, line, column, "", f"invalid YAML: unacceptable character U+{char:04X}")]
    except yaml.YAMLError as err:  # pragma: no cover - every PyYAML error above carries a position
        return None, [ConfigIssue(file, 1, 1, "", f"invalid YAML: {err}")]
    finally:
        if loader is not None:
            loader.dispose()


Path = tuple[Any, ...]


def field_path(path: Path) -> str:
    """``("virtual_services", 0, "port")`` -> ``virtual_services[0].port``."""
    out = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _locate(root: Any, path: Path, at_key: bool = False) -> Position:
    """Position of the value at ``path`` in located data.

    Where the path leaves the data (a missing key), the position of the deepest
    existing mapping or sequence is returned.  With ``at_key``, the position of
    the last key itself rather than of its value.
    """
    node = root
    pos: Position = getattr(root, "pos", (1, 1))
    for index, part in enumerate(path):
        last = index == len(path) - 1
        if isinstance(node, YamlMap) and isinstance(part, Hashable) and part in node:
            pos = node.key_pos[part] if (last and at_key) else node.value_pos[part]
            node = node[part]
        elif isinstance(node, YamlSeq) and isinstance(part, int) and 0 <= part < len(node):
            pos = node.item_pos[part]
            node = node[part]
        else:
            break
    return pos


def _yaml_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, list):
        return "list"
    return type(value).__name__


def _describe(value: Any) -> str:
    """``string '80'``, ``boolean True``, ``mapping``: a short description of a YAML value."""
    kind = _yaml_kind(value)
    if value is None or isinstance(value, (dict, list)):
        return kind
    return f"{kind} {quote(value, 40) if isinstance(value, str) else _bounded(repr(value), 40)}"


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


def _pydantic_message(schema: type[BaseModel] | None, err: Any) -> str:
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
        return f"expected {_EXPECTED[kind]}, got {_describe(value)}"
    if kind == "literal_error":
        return f"expected one of {err['ctx']['expected']}, got {_describe(value)}"
    if kind == "finite_number":
        return f"expected a finite number, got {_describe(value)}"
    return err["msg"]


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
    if protocol in ("udp", "sctp") and spec.type not in ("external", "none"):
        name = protocol.upper()
        yield ("type",), (
            f"a {name} virtual service allows only check types external and none "
            f"(a {name} health check does not exist yet); the check type is {spec.type}"
        )
    if fwmark and spec.type != "none" and spec.port is None:
        yield ("port", "type"), (
            f"a fwmark virtual service needs check.port for a {spec.type} check "
            "(the service has no port of its own); only check type none does without"
        )
    if spec.port is not None and not 1 <= spec.port <= 65535:
        yield ("port",), f"port {spec.port} is out of range 1..65535"
    for name, (low, high) in (("interval", CHECK_INTERVAL_RANGE), ("retry_interval", CHECK_INTERVAL_RANGE),
                              ("timeout", CHECK_TIMEOUT_RANGE)):
        value = getattr(spec, name)
        if not low <= value <= high:
            yield (name,), f"{name} must be {low:g}..{high:g} seconds, got {value:g}"
    for name in ("rise", "fall"):
        value = getattr(spec, name)
        if not CHECK_COUNT_RANGE[0] <= value <= CHECK_COUNT_RANGE[1]:
            yield (name,), f"{name} must be {CHECK_COUNT_RANGE[0]}..{CHECK_COUNT_RANGE[1]}, got {quote(value)}"
    if len(spec.method) > MAX_METHOD or not _HTTP_TOKEN.fullmatch(spec.method):
        yield ("method",), (f"method must be an HTTP method token such as GET or HEAD (at most {MAX_METHOD} "
                            f"characters), got {quote(spec.method)}")
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
    if spec.type == "external" and (not spec.command or not spec.command[0]):
        yield ("command", "type"), "an external check needs a non-empty command (a list: program and arguments)"
    if len(spec.command) > MAX_COMMAND_ARGS:
        yield ("command",), f"command has {len(spec.command)} items; at most {MAX_COMMAND_ARGS}"
    longest = max((len(arg) for arg in spec.command), default=0)
    if longest > MAX_COMMAND_ARG:
        yield ("command",), f"a command argument is {longest} characters long; at most {MAX_COMMAND_ARG}"


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # the reason is in the exception; RE2 would also print it on stderr


def re2_problem(pattern: str) -> str | None:
    """Why ``pattern`` cannot be matched by the HTTP checker, or ``None`` when it can.

    The checker searches the body with RE2 (google-re2), in time linear in the
    body, so the pattern must be RE2 syntax (https://github.com/google/re2/wiki/Syntax):
    no backreferences (``\\1``), no lookahead or lookbehind (``(?=``, ``(?!``,
    ``(?<=``, ``(?<!``), no possessive or atomic groups.  At most
    `MAX_EXPECT_BODY` characters.  Pure function; used by the loader and by
    ``directord convert`` for ldirectord's ``receive=``.
    """
    if len(pattern) > MAX_EXPECT_BODY:
        return f"is {len(pattern)} characters long; at most {MAX_EXPECT_BODY}"
    try:
        re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as err:
        reason = err.args[0].decode("utf-8", "replace") if err.args and isinstance(err.args[0], bytes) else str(err)
        return (f"is not a regular expression the checker can use: {_bounded(reason, 120)} (it is matched "
                "with RE2 syntax: no backreferences, no lookahead or lookbehind)")
    return None


def _make_check(fields: dict[str, Any]) -> CheckSpec:
    """`CheckSpec` from merged schema fields (lists become tuples/frozensets, times floats)."""
    values = dict(fields)
    if "expect_status" in values:
        values["expect_status"] = frozenset(values["expect_status"])
    if "command" in values:
        values["command"] = tuple(values["command"])
    for name in ("interval", "retry_interval", "timeout"):
        if name in values:
            values[name] = float(values[name])
    return CheckSpec(**values)


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
    return (f"{quote(path, MAX_UNIX_PATH_BYTES)} exists and is a {file_kind(info.st_mode)}, not a socket; the daemon would replace "
            "and later delete it: choose another path or remove it")


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
        line, column = _locate(self.root, path, at_key)
        self.issues.append(ConfigIssue(self.file, line, column, field_path(path), message))

    def line_of(self, path: Path) -> int:
        return _locate(self.root, path)[0]

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

    def section(self, schema: type[BaseModel], parent: Any, key: str, path: Path,
                drop: tuple[str, ...] = ()) -> tuple[Any, bool]:
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
            _LIST_OR_NULL.validate_python(value, strict=True)
            return True
        except ValidationError as err:
            self._report_pydantic(None, err, path)
            return False

    def _report_pydantic(self, schema: type[BaseModel] | None, err: ValidationError, path: Path) -> None:
        for error in err.errors(include_url=False):
            full = path + tuple(error["loc"])
            self.issue(full, _pydantic_message(schema, error), at_key=error["type"] == "extra_forbidden")

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
                        self.file, line, column, field_path(path + (key,)),
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
                ConfigIssue(self.file, 1, 1, "", "the configuration file is empty (expected a mapping with "
                            "global, virtual_services and ha sections)")
            )
            return None
        if not isinstance(root, dict):
            self.issue((), f"the top level must be a mapping (global, virtual_services, ha), got {_describe(root)}")
            return None
        self.duplicate_keys(root, (), set())
        self.validate(RootSchema, root, (), drop=("global", "virtual_services"))
        settings_schema, _ = self.section(SettingsSchema, root, "global", ())
        settings = self.settings(settings_schema) if settings_schema is not None else Settings()
        services: list[VirtualService] = []
        raw_services = root.get("virtual_services")
        if self.validate_list(raw_services, ("virtual_services",)) and raw_services:
            for index, raw in enumerate(raw_services):
                service = self.service(index, raw)
                if service is not None:
                    services.append(service)
        ha = None
        if isinstance(root.get("ha"), dict):
            from ha.config import (
                parse_ha,  # imported here: ha.config builds on this module
            )

            ha, ha_issues = parse_ha(root, self.file)
            self.issues.extend(ha_issues)
        return Config(path=self.file, settings=settings, services=tuple(services), ha=ha)

    def settings(self, schema: SettingsSchema) -> Settings:
        base = ("global",)
        for name, (low, high) in (("reconcile_interval", RECONCILE_INTERVAL_RANGE),
                                  ("drain_timeout", DRAIN_TIMEOUT_RANGE)):
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
        return Settings(
            reconcile_interval=float(schema.reconcile_interval),
            drain_timeout=float(schema.drain_timeout),
            control_socket=sock,
            sync_daemon=self.sync_daemon(schema.sync_daemon),
        )

    def sync_daemon(self, schema: SyncDaemonSchema | None) -> SyncSettings | None:
        if schema is None:
            return None
        base = ("global", "sync_daemon")
        name = schema.interface
        if not valid_ifname(name):
            self.issue(base + ("interface",), f"not an interface name: {quote(name)} (1-{IFNAME_MAX} bytes, no '/', ':', "
                                              "whitespace, not '.' or '..')")
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
        check = _make_check(check_fields)
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

    def register_service(self, key: ServiceKey | None, name: str | None, explicit_name: str | None, path: Path,
                         line: int) -> None:
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
            if name in self.service_names and not (explicit_name is None and key in self.service_keys
                                                     and self.service_keys[key] != line):
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
        family: int | None = None
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
        if address is None or family is None or not port_ok:
            return None, family
        protocol = PROTOCOLS[schema.protocol or "tcp"]
        return ServiceKey(int(family), int(protocol), address, schema.port), family  # type: ignore[arg-type]

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
                        f"an IPv6 service takes a prefix length 1..128 as netmask, got {_describe(value)}",
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
                        f"an IPv4 service takes a dotted netmask such as 255.255.255.0, got {_describe(value)}",
                    )
                else:
                    netmask = mask
        return Persistence(timeout=schema.timeout, netmask=netmask)

    def report_check(self, spec: CheckSpec, ctx: _ServiceContext, own: dict[str, Any], base: Path,
                     only_own: bool) -> None:
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

    def family_mismatch(self, family: int | None, forwarding: str, ctx: _ServiceContext, path: Path,
                        what: str) -> None:
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

    def real_server(self, j: int, schema: RealServerSchema, check_schema: CheckSchema | None, check_ok: bool,
                    ctx: _ServiceContext) -> RealServer | None:
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
        check = _make_check({**ctx.check_fields, **own})
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

    def fallback(self, schema: FallbackSchema, ctx: _ServiceContext,
                 real_servers: dict[tuple[str, int], int]) -> FallbackServer | None:
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


# --- entry points --------------------------------------------------------------------------


def parse_config(text: str, path: str = "<string>") -> Config:
    """Parse and validate configuration ``text``; ``path`` is used in messages and `Config.path`.

    Returns:
        the validated `Config` (frozen, hashable dataclasses; services and real
        servers in file order).

    Raises:
        ConfigError: with every problem found (YAML syntax, duplicate keys,
            unknown keys, wrong types, out-of-range values, rule violations).
    """
    data, issues = _load_yaml(text, path)
    if issues:
        raise ConfigError(issues)
    builder = _Builder(path, data)
    config = builder.build()
    if builder.issues or config is None:
        raise ConfigError(sorted(builder.issues, key=lambda issue: (issue.line, issue.column)))
    return config


def load_config(path: str) -> Config:
    """Read, parse and validate the YAML configuration file at ``path`` (UTF-8).

    The file must be a regular file (a symbolic link to one is fine) of at
    most `MAX_CONFIG_BYTES` bytes: a FIFO, a device or a directory is refused
    without being read (`ha.readfile.read_regular_file`).

    Raises:
        ConfigError: the file cannot be read, is not a regular file or is too
            large (one issue with line 0), is not UTF-8, or is invalid (see
            `parse_config`).
    """
    try:
        raw = read_regular_file(path, MAX_CONFIG_BYTES)
    except ReadFileError as err:
        raise ConfigError([ConfigIssue(path, 0, 0, "", err.reason)]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        before = raw[: err.start]
        line = before.count(b"\n") + 1
        column = err.start - (before.rfind(b"\n") + 1) + 1
        raise ConfigError(
            [ConfigIssue(path, line, column, "", f"not valid UTF-8 (byte 0x{raw[err.start]:02x})")]
        ) from None
    return parse_config(text, path)
