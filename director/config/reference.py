"""The configuration reference, docs/configuration.md, rendered from the code that reads the file.

`render_reference` builds the markdown from the pydantic models of `director.config.schema` (each
field's type, default and ``description``), the ranges and bounds that `director.config.builder`
enforces (its named constants, `RANGES`), the ``ha:`` section's key documentation
(`director.config.ha.KEY_DOCS` and its sub-key tables, ranges from its constants), the ``bgp:``
section's (`director.config.bgp.KEY_DOCS` and its sub-key tables) and the hook events of
`director.model.HOOK_EVENTS`.  So the reference cannot drift from the code:
tests/unit/test_config_reference.py compares the committed file with the output, byte for byte.

Regenerate it with `COMMAND` (this module's ``main`` prints the markdown on stdout).  Pure, apart
from `main`.
"""

from __future__ import annotations

import re
import sys
import types
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from checks.protocols.dialogue import LDIRECTORD_DIALOGUES
from checks.spec import MAX_BODY_PROGRAM, MAX_DIALOGUE_STEPS
from director.config.bgp import (
    BFD_INTERVAL_MS_RANGE,
    BFD_KEY_DOCS,
    BFD_MULTIPLIER_RANGE,
    GRACEFUL_SHUTDOWN_WAIT_RANGE,
    HOLD_TIME_RANGE,
    MAX_COMMUNITIES,
    MAX_PASSWORD,
    MAX_PREPEND,
    MULTIHOP_RANGE,
    NEIGHBOR_KEY_DOCS,
    RESERVED_TABLES,
    SPEAKER_KEY_DOCS,
    VIP_KEY_DOCS,
)
from director.config.bgp import KEY_DOCS as BGP_KEY_DOCS
from director.config.builder import (
    CHECK_COUNT_RANGE,
    CHECK_INTERVAL_RANGE,
    CHECK_TIMEOUT_RANGE,
    CHECK_TYPES_BY_PROTOCOL,
    DNS_RCODES,
    DNS_TYPES,
    DRAIN_TIMEOUT_RANGE,
    HOOK_TIMEOUT_RANGE,
    MAX_CHECK_HOST,
    MAX_CHECK_PATH,
    MAX_COMMAND_ARG,
    MAX_COMMAND_ARGS,
    MAX_EXPECT_BODY,
    MAX_HOOK_ARG,
    MAX_HOOK_ARGS,
    MAX_HOOKS,
    MAX_HOOKS_RUNNING,
    MAX_METHOD,
    MAX_REAL_SERVERS,
    MAX_SEND,
    MAX_SERVICES,
    MAX_TOKEN_FILE,
    MAX_UNIX_PATH_BYTES,
    RECONCILE_INTERVAL_RANGE,
    SLOW_START_RANGE,
    U32_MAX,
)
from director.config.ha import (
    ADDRESS_KEY_DOCS,
    KEY_DOCS,
    MAX_ANNOUNCE_INTERVAL,
    MAX_ANNOUNCE_REFRESH,
    MAX_ANNOUNCE_REPEATS,
    MAX_MEDIA,
    MAX_PING_NODES,
    MAX_RESOURCE_ADDRESSES,
    MEDIUM_KEY_DOCS,
    PING_TIME_RANGE,
    RESOURCE_KEY_DOCS,
    TIMER_RANGES,
    KeyDoc,
)
from director.config.schema import (
    CheckSchema,
    DialogueStepSchema,
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
)
from director.model import HOOK_EVENTS, SCHEDULER_FLAGS, SCHEDULERS, SERVICE_EVENTS
from ha.bgp.model import MAX_NEIGHBORS, MAX_VIPS
from ha.model import NEIGH_LOCKTIME

__all__ = [
    "BGP_RANGES",
    "COMMAND",
    "HA_RANGES",
    "MODEL_SECTIONS",
    "RANGES",
    "main",
    "render_reference",
    "schema_models",
    "slug",
]

#: The command that writes docs/configuration.md (named in the file and in the test's failure).
COMMAND = "python3 -m director.config.reference > docs/configuration.md"


def _span(bounds: tuple[float, float], unit: str = "") -> str:
    low, high = bounds
    return f"{low:g}-{high:g}{unit}"


def _dialogue_yaml(steps: tuple[tuple[str, str], ...]) -> str:
    """``[{expect: '^220'}, {send: "QUIT\\r\\n"}]``: a dialogue as it is written in YAML."""
    out = []
    for kind, text in steps:
        if kind == "starttls":
            out.append("{starttls: true}")
        elif kind == "send":
            escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\r", "\\r").replace("\n", "\\n")
            out.append(f'{{send: "{escaped}"}}')
        else:  # expect, fail: a regex in a single-quoted YAML string
            out.append(f"{{{kind}: '" + text.replace("'", "''") + "'}")
    return "[" + ", ".join(out) + "]"


#: The range or bound of a schema field that `director.config.builder` enforces with a named
#: constant (or `director.model` lists the values of), keyed by (model, field name).  Ranges the
#: builder writes as literals (ports, weights) are stated in the fields' descriptions.
RANGES: dict[tuple[type[BaseModel], str], str] = {
    (RootSchema, "virtual_services"): f"at most {MAX_SERVICES:,} services",
    (SettingsSchema, "reconcile_interval"): _span(RECONCILE_INTERVAL_RANGE, " s"),
    (SettingsSchema, "drain_timeout"): _span(DRAIN_TIMEOUT_RANGE, " s"),
    (SettingsSchema, "control_socket"): f"at most {MAX_UNIX_PATH_BYTES} bytes",
    (HTTPSchema, "token_file"): f"a file of at most {MAX_TOKEN_FILE:,} bytes",
    (ServiceSchema, "fwmark"): f"1-{U32_MAX}",
    (ServiceSchema, "scheduler"): "one of " + ", ".join(f"`{name}`" for name in sorted(SCHEDULERS)),
    (ServiceSchema, "scheduler_flags"): ", ".join(
        f"`{flag}` ({', '.join(sorted(schedulers))})" for flag, (schedulers, _) in SCHEDULER_FLAGS.items()
    ),
    (ServiceSchema, "real_servers"): f"at most {MAX_REAL_SERVERS:,} in the file (all services together)",
    (PersistenceSchema, "timeout"): f"1-{U32_MAX} s",
    (RealServerSchema, "upper_threshold"): f"0-{U32_MAX}",
    (RealServerSchema, "lower_threshold"): f"0-{U32_MAX}",
    (CheckSchema, "interval"): _span(CHECK_INTERVAL_RANGE, " s"),
    (CheckSchema, "retry_interval"): _span(CHECK_INTERVAL_RANGE, " s"),
    (CheckSchema, "timeout"): _span(CHECK_TIMEOUT_RANGE, " s"),
    (CheckSchema, "rise"): _span(CHECK_COUNT_RANGE),
    (CheckSchema, "fall"): _span(CHECK_COUNT_RANGE),
    (CheckSchema, "method"): f"at most {MAX_METHOD} characters",
    (CheckSchema, "path"): f"at most {MAX_CHECK_PATH:,} characters",
    (CheckSchema, "host"): f"at most {MAX_CHECK_HOST} characters",
    (CheckSchema, "expect_body"): (
        f"at most {MAX_EXPECT_BODY:,} characters, compiling to at most {MAX_BODY_PROGRAM:,} RE2 instructions"
    ),
    (CheckSchema, "command"): f"at most {MAX_COMMAND_ARGS} items of at most {MAX_COMMAND_ARG:,} characters",
    (CheckSchema, "dialogue"): f"at most {MAX_DIALOGUE_STEPS} steps",
    (CheckSchema, "send"): f"at most {MAX_SEND:,} characters",
    (CheckSchema, "slow_start"): _span(SLOW_START_RANGE, " s"),
    (CheckSchema, "agent_port"): "1-65535",
    (CheckSchema, "query_type"): ", ".join(f"`{name}`" for name in sorted(DNS_TYPES)),
    (CheckSchema, "expect_rcode"): ", ".join(f"`{name}`" for name in DNS_RCODES),
    (CheckSchema, "type"): "; ".join(
        f"{protocol.upper()} services: " + ", ".join(types) for protocol, types in CHECK_TYPES_BY_PROTOCOL.items()
    ),
    (NotifySchema, "timeout"): _span(HOOK_TIMEOUT_RANGE, " s"),
    (NotifySchema, "max_running"): f"1-{MAX_HOOKS_RUNNING}",
    (NotifySchema, "hooks"): f"at most {MAX_HOOKS}",
    (HookSchema, "command"): f"at most {MAX_HOOK_ARGS} items of at most {MAX_HOOK_ARG:,} characters",
    (HookSchema, "timeout"): _span(HOOK_TIMEOUT_RANGE, " s"),
}

#: The range or bound of an ``ha:`` key from `director.config.ha`'s constants.
HA_RANGES: dict[str, str] = {
    **{key: _span(bounds, " s") for key, bounds in TIMER_RANGES.items()},
    "ping_interval": _span(PING_TIME_RANGE, " s"),
    "ping_timeout": _span(PING_TIME_RANGE, " s"),
    "announce_repeats": f"1-{MAX_ANNOUNCE_REPEATS}",
    "announce_interval": f"more than {NEIGH_LOCKTIME:g} s, at most {MAX_ANNOUNCE_INTERVAL:g} s",
    "announce_refresh": f"0, or more than {NEIGH_LOCKTIME:g} s and at most {MAX_ANNOUNCE_REFRESH:g} s",
    "media": f"at most {MAX_MEDIA}",
    "ping_nodes": f"at most {MAX_PING_NODES}",
    "resources": f"at most {MAX_RESOURCE_ADDRESSES:,} addresses in all",
}

#: The range or bound of a ``bgp:`` key, and of its mappings' keys (``mapping.key``), from
#: `director.config.bgp`'s constants and `ha.bgp.model`'s.
BGP_RANGES: dict[str, str] = {
    "local_as": f"1-{U32_MAX}",
    "neighbors": f"at most {MAX_NEIGHBORS}",
    "graceful_shutdown_wait": _span(GRACEFUL_SHUTDOWN_WAIT_RANGE, " s"),
    "kernel_table": f"1-{U32_MAX}, not " + ", ".join(str(table) for table in RESERVED_TABLES),
    "vips": f"at most {MAX_VIPS:,}",
    "neighbors.as": f"1-{U32_MAX}",
    "neighbors.hold_time": _span(HOLD_TIME_RANGE, " s"),
    "neighbors.password": f"1-{MAX_PASSWORD} characters",
    "neighbors.multihop": _span(MULTIHOP_RANGE),
    "neighbors.port": "1-65535",
    "vips.min_healthy": f"1-{U32_MAX}, or 1-100%",
    "vips.communities": f"at most {MAX_COMMUNITIES}; each part 0-65535",
    "vips.large_communities": f"at most {MAX_COMMUNITIES}; each part 0-{U32_MAX}",
    "vips.med": f"0-{U32_MAX}",
    "vips.prepend": f"0-{MAX_PREPEND}",
    "bfd.interval": f"{BFD_INTERVAL_MS_RANGE[0]}ms-{BFD_INTERVAL_MS_RANGE[1] // 1000}s",
    "bfd.multiplier": _span(BFD_MULTIPLIER_RANGE),
}


@dataclass(frozen=True)
class _Section:
    """One heading of the reference: its ``title`` (markdown), heading ``level`` and ``intro``."""

    title: str
    level: int
    intro: str


#: Each schema model's section, in the order of the reference.
MODEL_SECTIONS: dict[type[BaseModel], _Section] = {
    RootSchema: _Section(
        "The file",
        2,
        "A mapping of five sections, each optional. The samples `etc/directord.yaml`, "
        "`etc/directord-ha.yaml` and `etc/directord-bgp.yaml` show them in use.",
    ),
    SettingsSchema: _Section("`global`", 2, "Daemon-wide settings."),
    HTTPSchema: _Section(
        "`global.http`",
        3,
        "The metrics (`/metrics`, Prometheus' text format) and the status page over HTTP; `{}` takes every default.",
    ),
    SyncDaemonSchema: _Section(
        "`global.sync_daemon`",
        3,
        "IPVS connection synchronisation (keepalived's `lvs_sync_daemon`): the kernel's master and backup "
        "sync daemons run on both directors, so an established connection survives a VIP move.",
    ),
    ServiceSchema: _Section(
        "`virtual_services`",
        2,
        "A list; each entry is a virtual service: `address` + `port` (+ `protocol`), or `fwmark` (+ `family`).",
    ),
    PersistenceSchema: _Section("`persistence`", 3, "A virtual service's client persistence."),
    RealServerSchema: _Section("`real_servers`", 3, "A list; each entry is a real server of the service."),
    FallbackSchema: _Section(
        "`fallback`",
        3,
        "The sorry server (ldirectord's `fallback`): in the IPVS table only while no real server of the service is up.",
    ),
    CheckSchema: _Section(
        "`check`",
        3,
        "The health check of a virtual service's real servers. A real server's own `check:` overrides single "
        "fields of its service's; what neither sets takes the default below.",
    ),
    DialogueStepSchema: _Section(
        "`check.dialogue`",
        4,
        "A list; each entry is one step of a `tcp` check's conversation, a mapping of exactly one of these keys. "
        "ldirectord's negotiate checks as dialogues (what `directord convert` writes, without a login): "
        + "; ".join(f"{name} `{_dialogue_yaml(LDIRECTORD_DIALOGUES[name])}`" for name in ("smtp", "pop", "nntp"))
        + ".",
    ),
    NotifySchema: _Section(
        "`notify`",
        2,
        "Programs run on events (keepalived's `notify_master`/`notify_backup` and `notify_up`/`notify_down`, "
        "heartbeat's haresources scripts, ldirectord's `fallbackcommand`). README.md (Configuration) "
        "describes how they run: environment, order, results.",
    ),
    HookSchema: _Section("`notify.hooks`", 3, "A list; each entry is a hook."),
}

_HA_TITLE = "`ha`"
_BGP_TITLE = "`bgp`"
_NEIGHBOR_TITLE = "`bgp.neighbors` mappings"
_VIP_TITLE = "`bgp.vips` mappings"
_BFD_TITLE = "`bgp.bfd`"
_SPEAKER_TITLE = "`bgp.speaker`"
_EVENTS_TITLE = "Events"
_MEDIUM_TITLE = "`ha.media` mappings"
_RESOURCE_TITLE = "`ha.resources` mappings"
_ADDRESS_TITLE = "`ha.resources[].addresses` mappings"


def slug(title: str) -> str:
    """The anchor a GitHub-flavoured markdown renderer gives a heading ``title`` (markdown text):
    lower case, punctuation but ``-`` and ``_`` dropped, spaces as ``-``."""
    return re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")


def _link(title: str) -> str:
    return f"[{title}](#{slug(title)})"


def _cell(text: str) -> str:
    """``text`` as one table cell: ``|`` escaped (also inside code spans, as GFM tables need)."""
    if "\n" in text:
        raise ValueError(f"a table cell must be one line: {text!r}")
    return text.replace("|", "\\|")


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines.extend("| " + " | ".join(_cell(cell) for cell in row) + " |" for row in rows)
    return lines


def _models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in typing.get_args(annotation):
        yield from _models_in(arg)


def schema_models() -> list[type[BaseModel]]:
    """Every model of the file's structure: `RootSchema` and the models its fields reach, in the
    order first reached."""
    found: list[type[BaseModel]] = [RootSchema]
    for model in found:  # grows while walked
        for info in model.model_fields.values():
            found.extend(m for m in _models_in(info.annotation) if m not in found)
    return found


def _type_text(annotation: Any) -> str:
    """A field's type in words: ``integer``, ``list of strings``, ``mapping`` (linked to its
    section), the values of a ``Literal``; ``None`` of an optional type left out (the default
    column says what absence means).

    Raises:
        ValueError: a model without a section in `MODEL_SECTIONS`, or a type not handled here.
    """
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        parts = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return " or ".join(_type_text(arg) for arg in parts)
    if origin is Literal:
        return ", ".join(f"`{value}`" for value in typing.get_args(annotation))
    if origin is list:
        (item,) = typing.get_args(annotation)
        text = _type_text(item)
        if text.startswith("mapping"):
            return "list of mappings" + text[len("mapping") :]
        return f"list of {text}s" if " " not in text and "`" not in text else f"list of {text}"
    if origin is dict or annotation is dict:
        return "mapping"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation not in MODEL_SECTIONS:
            raise ValueError(f"{annotation.__name__} has no section in MODEL_SECTIONS")
        return f"mapping ({_link(MODEL_SECTIONS[annotation].title)})"
    names = {int: "integer", float: "number", str: "string", bool: "boolean"}
    if annotation in names:
        return names[annotation]
    raise ValueError(f"no words for the type {annotation!r}")


def _value_text(value: Any) -> str:
    if value is None or value == []:
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "`[" + ", ".join(str(item) for item in value) + "]`"
    return f"`{value}`"


def _extra(info: FieldInfo, key: str) -> str | None:
    extra = info.json_schema_extra
    if isinstance(extra, dict) and key in extra:
        return str(extra[key])
    return None


def _default_text(info: FieldInfo) -> str:
    shown = _extra(info, "default_text")
    if shown is not None:
        return shown
    if info.is_required():
        return "required"
    return _value_text(info.get_default(call_default_factory=True))


def _model_rows(model: type[BaseModel]) -> list[tuple[str, ...]]:
    """One row per field: key, type, default, range, meaning.

    Raises:
        ValueError: a field without a description.
    """
    rows: list[tuple[str, ...]] = []
    for name, info in model.model_fields.items():
        key = info.alias or name
        if not info.description:
            raise ValueError(f"{model.__name__}.{name} has no description")
        type_text = _extra(info, "type_text")
        if type_text is None:
            titles = {"ha": _HA_TITLE, "bgp": _BGP_TITLE}
            type_text = f"mapping ({_link(titles[key])})" if key in titles else _type_text(info.annotation)
        rows.append((f"`{key}`", type_text, _default_text(info), RANGES.get((model, name), ""), info.description))
    return rows


def _heading(section: _Section) -> str:
    return "#" * section.level + " " + section.title


def _ha_rows(docs: dict[str, KeyDoc], ranges: dict[str, str], links: dict[str, str]) -> list[tuple[str, ...]]:
    """One row per documented key; ``links`` maps a key to the title of its mappings' section."""
    rows: list[tuple[str, ...]] = []
    for key, doc in docs.items():
        type_text = f"{doc.type} ({_link(links[key])})" if key in links else doc.type
        rows.append((f"`{key}`", type_text, doc.default, ranges.get(key, ""), doc.meaning))
    return rows


_HEADER = ("key", "type", "default", "range", "meaning")


def render_reference() -> str:
    """docs/configuration.md: the markdown reference of every key of the configuration file, one
    table per section (key, type, default, range, meaning), nested mappings linked, then the hook
    events, the ``ha:`` section and the ``bgp:`` section.  Ends with a newline.

    Raises:
        ValueError: a schema field without a description, a model of the schema without a section
            in `MODEL_SECTIONS` (or a section of no model), or a type the renderer has no words for
            (a test renders the reference, so each fails it).
    """
    missing = set(schema_models()).symmetric_difference(MODEL_SECTIONS)
    if missing:
        raise ValueError(f"models and MODEL_SECTIONS differ: {sorted(m.__name__ for m in missing)}")
    out = [
        "# Configuration reference",
        "",
        f"*Generated by `{COMMAND}` from director/config/schema.py, director/config/ha.py,",
        "director/config/bgp.py, director/config/builder.py and director/model.py; do not edit: change the",
        "code and regenerate.*",
        "",
        "directord's configuration is one YAML file (`/etc/directord/directord.yaml` by default;",
        "`directord check FILE` validates one). Times are seconds (fractions allowed), counts are",
        "integers. Unknown keys, duplicate keys, wrong types (a string is not a number, a boolean not",
        "an integer) and out-of-range values are errors naming the file, line and field; every error",
        "of a file is reported at once. The range column gives the bounds the loader enforces.",
    ]
    for model, section in MODEL_SECTIONS.items():
        out += ["", _heading(section), "", section.intro, ""]
        out += _table(_HEADER, _model_rows(model))
        if model is HookSchema:
            out += ["", f"### {_EVENTS_TITLE}", ""]
            out += [
                "The event kinds a hook's `events` may name. A hook's `service:` limits it to the events "
                "of one virtual service: those marked below.",
                "",
            ]
            rows = [(f"`{kind}`", when, "yes" if kind in SERVICE_EVENTS else "") for kind, when in HOOK_EVENTS.items()]
            out += _table(("event", "when", "of a service"), rows)
    out += [
        "",
        f"## {_HA_TITLE}",
        "",
        "High availability: with this section `directord run` is a heartbeat 3.0.6-compatible node of a pair "
        "of directors, which moves the resource addresses (the VIPs) between them. A time is seconds, or a "
        "string with heartbeat's units. Changes to the section need a restart (a reload keeps the running HA "
        "service). Whether the interfaces exist is checked when the daemon starts, not by `directord check`, "
        "so a file can be checked on any machine. A *time* is seconds (fractions allowed) or a string with "
        "heartbeat's units, `200ms`, `200000us`, `0.2s`, kept to the millisecond.",
        "",
    ]
    out += _table(_HEADER, _ha_rows(KEY_DOCS, HA_RANGES, {"media": _MEDIUM_TITLE, "resources": _RESOURCE_TITLE}))
    sub_tables: tuple[tuple[str, str, dict[str, KeyDoc], dict[str, str]], ...] = (
        (
            _MEDIUM_TITLE,
            "A medium given as a mapping names exactly one of `bcast`, `mcast`, `ucast`.",
            MEDIUM_KEY_DOCS,
            {},
        ),
        (_RESOURCE_TITLE, "A resource group given as a mapping.", RESOURCE_KEY_DOCS, {"addresses": _ADDRESS_TITLE}),
        (_ADDRESS_TITLE, "A resource address given as a mapping instead of `IP/PREFIX/IF`.", ADDRESS_KEY_DOCS, {}),
    )
    for title, intro, docs, links in sub_tables:
        out += ["", f"### {title}", "", intro, ""]
        out += _table(_HEADER, _ha_rows(docs, {}, links))
    out += _bgp_section()
    return "\n".join(out) + "\n"


def _bgp_section() -> list[str]:
    """The ``bgp:`` section's tables: its keys, then those of a neighbour, a VIP mapping, ``bfd``
    and ``speaker``."""
    out = [
        "",
        f"## {_BGP_TITLE}",
        "",
        "Active-active directors: every director announces the VIPs to its routers over BGP, and the "
        "routers spread the flows over the directors that announce them (ECMP). directord runs and "
        "supervises a BIRD 2 for it. A VIP is announced while each of its virtual services has "
        "`min_healthy` real servers in service, and withdrawn when the director is drained or stops. "
        "`directord check` warns about a virtual service of a VIP whose scheduler is not `mh` (another "
        "director would send a flow to another real server) or that forwards with `nat` (the reply must "
        "pass the director that took the request). A *time* is seconds or a string with a unit, "
        "`500ms`, `5s`.",
        "",
    ]
    links = {"neighbors": _NEIGHBOR_TITLE, "vips": _VIP_TITLE, "bfd": _BFD_TITLE, "speaker": _SPEAKER_TITLE}
    out += _table(_HEADER, _ha_rows(BGP_KEY_DOCS, BGP_RANGES, links))
    sub_tables: tuple[tuple[str, str, str, dict[str, KeyDoc]], ...] = (
        (_NEIGHBOR_TITLE, "neighbors", "A router this director opens a BGP session with.", NEIGHBOR_KEY_DOCS),
        (_VIP_TITLE, "vips", "A VIP given as a mapping instead of an address.", VIP_KEY_DOCS),
        (_BFD_TITLE, "bfd", "BFD timers (RFC 5880) of the neighbours with `bfd: true`.", BFD_KEY_DOCS),
        (_SPEAKER_TITLE, "speaker", "The BIRD that directord runs.", SPEAKER_KEY_DOCS),
    )
    for title, key, intro, docs in sub_tables:
        ranges = {name.split(".", 1)[1]: text for name, text in BGP_RANGES.items() if name.startswith(key + ".")}
        out += ["", f"### {title}", "", intro, ""]
        out += _table(_HEADER, _ha_rows(docs, ranges, {}))
    return out


def main() -> int:
    """Print the reference on stdout (`COMMAND` writes it to docs/configuration.md); returns 0."""
    sys.stdout.write(render_reference())
    return 0


if __name__ == "__main__":
    sys.exit(main())
