"""Configuration loader: a YAML file in, a validated `director.model.Config` out.

One configuration system for the whole file, the ``ha:`` and ``bgp:`` sections included.  Its
modules, each importing only those listed before it:

* `director.config.issues`: `ConfigIssue`, `ConfigError`, and the quoting of values in messages;
* `director.config.located`: the located, bounded YAML loader (`LocatedLoader`, `locate`);
* `director.config.schema`: the pydantic models of the file's structure;
* `director.config.ha`: the ``ha:`` section (heartbeat's rules come from `ha.config`);
* `director.config.bgp`: the ``bgp:`` section (its model is `ha.bgp.model`), and the warnings
  about the virtual services of its VIPs;
* `director.config.builder`: semantic checks and conversion of the whole document;
* `director.config.reference`: the configuration reference (``docs/configuration.md``), rendered from
  the schema's descriptions and the ``ha:`` and ``bgp:`` key tables
  (``python3 -m director.config.reference``);
* this module: `load_config` and `parse_config`, the entry points.

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
each alias stands for, `MAX_SERVICES` virtual services and `MAX_REAL_SERVERS`
real servers; every time and count has a range (``CHECK_*_RANGE``,
``RECONCILE_INTERVAL_RANGE``, ``DRAIN_TIMEOUT_RANGE``); ``expect_body`` must
be RE2 syntax (`re2_problem`); and messages quote at most `MAX_QUOTED`
characters of a value, control characters escaped (`quote`).

Problems are `ConfigIssue` objects (file, 1-based line and column, dotted field
path such as ``virtual_services[0].real_servers[1].weight``, message) carried
by one `ConfigError`.  Warnings (a file that works but is likely a mistake, such as a
virtual service of a BGP VIP whose scheduler is not ``mh``) are located the same
way and kept, as text, in `director.model.Config.warnings`; ``directord check``
prints them.

Kernel facts behind some rules: the kernel rejects a destination whose lower
connection threshold is above its upper one (``ip_vs_add_dest`` in
``net/netfilter/ipvs/ip_vs_ctl.c`` returns ERANGE); a destination of another
address family than its service is only allowed with tunnelling; with direct
routing and tunnelling the packet's port is not rewritten, which is why
ipvsadm forces the real port of such destinations to the virtual port for
non-fwmark services.
"""

from __future__ import annotations

from director.config.builder import (
    CHECK_COUNT_RANGE,
    CHECK_INTERVAL_RANGE,
    CHECK_TIMEOUT_RANGE,
    DRAIN_TIMEOUT_RANGE,
    MAX_EXPECT_BODY,
    MAX_REAL_SERVERS,
    MAX_SERVICES,
    RECONCILE_INTERVAL_RANGE,
    build_config,
    check_problems,
    re2_problem,
)
from director.config.issues import MAX_ISSUES, MAX_QUOTED, ConfigError, ConfigIssue, describe, format_issues, quote
from director.config.located import MAX_YAML_DEPTH, MAX_YAML_NODES, LocatedLoader, YamlMap, YamlSeq, load_yaml
from director.config.schema import (
    CheckSchema,
    FallbackSchema,
    PersistenceSchema,
    RealServerSchema,
    RootSchema,
    ServiceSchema,
    SettingsSchema,
)
from director.model import Config
from ha.readfile import ReadFileError, read_regular_file

__all__ = [
    "CHECK_COUNT_RANGE",
    "CHECK_INTERVAL_RANGE",
    "CHECK_TIMEOUT_RANGE",
    "DRAIN_TIMEOUT_RANGE",
    "MAX_CONFIG_BYTES",
    "MAX_EXPECT_BODY",
    "MAX_ISSUES",
    "MAX_QUOTED",
    "MAX_REAL_SERVERS",
    "MAX_SERVICES",
    "MAX_YAML_DEPTH",
    "MAX_YAML_NODES",
    "RECONCILE_INTERVAL_RANGE",
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
    "YamlMap",
    "YamlSeq",
    "check_problems",
    "describe",
    "format_issues",
    "load_config",
    "parse_config",
    "quote",
    "re2_problem",
]

#: Largest configuration file accepted, in bytes (8 MiB: thousands of real servers fit many times over).
MAX_CONFIG_BYTES = 8 * 1024 * 1024


def parse_config(text: str, path: str = "<string>") -> Config:
    """Parse and validate configuration ``text``; ``path`` is used in messages and `Config.path`.

    Returns:
        the validated `Config` (frozen, hashable dataclasses; services and real
        servers in file order).

    Raises:
        ConfigError: with every problem found (YAML syntax, duplicate keys,
            unknown keys, wrong types, out-of-range values, rule violations).
    """
    data, issues = load_yaml(text, path)
    if issues:
        raise ConfigError(issues)
    config, issues = build_config(data, path)
    if issues or config is None:
        raise ConfigError(sorted(issues, key=lambda issue: (issue.line, issue.column)))
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
