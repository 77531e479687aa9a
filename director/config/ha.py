"""The ``ha:`` section of directord's YAML configuration: validation and conversion to `ha.model.HAConfig`.

`parse_ha` is called by `director.config.builder` with the located YAML document; it checks the
section as a file (types, ranges, heartbeat's rules, the authkeys file) and returns its problems
as located `ConfigIssue` objects (``FILE:LINE:COL: ha.FIELD: message``), all of them at once.
What depends on the machine (interfaces and their addresses) is checked at start-up by
`ha.environment.check_ha_environment`, so that a file can be validated on another machine.
heartbeat's own rules (time syntax, booleans, timer defaults) come from `ha.config`.

Why this module is near 1,150 lines: the section has 22 keys, each with heartbeat's syntax and
directord's mapping forms, every rule reports a located, specific message, and every key is
documented here (`KEY_DOCS` and the sub-key tables) for the configuration reference.

The section (the sample ``etc/directord-ha.yaml`` documents it too)::

    ha:
      node: dir1                  # our node name; default: the host name (uname -n)
      nodes: [dir1, dir2]         # every node, ours included (ha.cf "node")
      media:                      # one or more; heartbeat's ha.cf lines or mappings
        - bcast eth1              # "bcast IF [IF...]"
        - mcast eth1 239.0.0.1 694 1 0   # "mcast IF GROUP PORT TTL LOOP"
        - ucast eth1 10.0.1.2     # "ucast IF PEER [PEER...]"
        - {bcast: eth1}
        - {mcast: eth1, group: 239.0.0.1, port: 694, ttl: 1, loop: false}
        - {ucast: eth1, peer: 10.0.1.2}
      udpport: 694                # bcast/ucast port and mcast's default
      authkeys: /etc/directord/authkeys   # heartbeat's authkeys file, mode 600
      keepalive: 0.2              # seconds (0.01..60); or "200ms", "200000us", "0.2s"
      warntime: 0.4               # 0.01..3600
      deadtime: 0.8               # 0.01..3600
      initdead: 3                 # 0..86400
      auto_failback: true         # true/on, false/off, or "legacy"
      resources:                  # haresources: preferred owner + addresses
        - owner: dir1
          addresses: [192.168.10.100/32/eth0, {address: 192.168.10.101, prefix: 32, interface: eth0}]
        - "dir2 192.168.10.102/32/eth0"   # a haresources line
      ping_nodes: [192.168.10.1]
      ping_interval: 1            # seconds between probes of each ping node
      ping_timeout: 1             # seconds an echo reply may take (<= ping_interval)
      ping_rise: 2                # answered probes in a row: reachable again
      ping_fall: 3                # missed probes in a row: unreachable
      link_monitor: true          # watch the carrier of the resource interfaces
      compat: directord           # or heartbeat
      state_dir: /var/lib/directord
      announce_repeats: 3
      announce_interval: 1.1      # seconds, > 1
      announce_refresh: 0         # seconds, 0 = off, else > 1

Heartbeat facts used here (heartbeat 3.0.6 sources):

* times (``lib/clplumbing/cl_misc.c``, ``cl_get_msec``): a decimal number of
  seconds, or with an ``ms`` / ``us`` suffix, rounded to the nearest
  millisecond.  directord also accepts an ``s`` suffix and YAML numbers.
* timers (``heartbeat/config.c``, ``init_config``): keepalive 1 s, deadtime
  30 s; warntime unset -> deadtime / 2; deadtime must exceed 2 x keepalive;
  initdead unset -> deadtime if deadtime > 10 s, 12 s if deadtime < 6 s,
  else 2 x deadtime; initdead must be >= deadtime.
* node names are case-insensitive: heartbeat lowercases them (``add_node``)
  and so does this parser; our own name must be one of them.
* ``auto_failback`` (``set_auto_failback``): a boolean, or ``legacy``; absent
  means ``legacy`` in heartbeat.
* media: ``bcast`` takes one or more interfaces (one medium each); ``mcast``
  exactly interface, IPv4 multicast group, port, TTL and loop (0 or 1)
  (``lib/plugins/HBcomm/mcast.c``); ``ucast`` an interface and peer IPv4
  address(es) (``ucast.c``).  directord requires peer addresses, not host
  names, so that no DNS lookup happens while loading.
* the authkeys file (``heartbeat/auth.c``): see `ha.auth.load_authkeys`;
  heartbeat refuses to start on any problem there, so loading it is part of
  the file-level validation.
* resources (``haresources``; ``IPaddr``/``IPaddr2`` arguments
  ``IP/PREFIX/IF``): the first column is the preferred owner.  Here every
  address needs its prefix length and interface (directord does not guess
  the interface from the routing table); an ``IPaddr::`` or ``IPaddr2::``
  prefix from a pasted haresources line is accepted.

The two profiles (``compat``):

* ``directord`` (default): keepalive 0.2 s, deadtime 0.8 s, warntime =
  deadtime / 2 (0.4 s), initdead = max(3 s, deadtime), auto_failback on: a
  peer's death on a LAN is detected in under a second.  Also requires
  warntime < deadtime.
* ``heartbeat``: heartbeat's own defaults and rules, as listed above, with
  ``auto_failback`` absent meaning ``legacy``.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
from typing import Any, Literal, NamedTuple, cast

from director.config.issues import ConfigIssue, describe, quote
from director.config.located import Path, field_path, locate
from director.model import IFNAME_MAX, canonical_ip, valid_ifname
from ha.auth import AuthKeysError, load_authkeys
from ha.config import (
    FALSE_WORDS,
    TRUE_WORDS,
    Compat,
    default_node_name,
    heartbeat_time_msec,
    resolve_timers,
)
from ha.model import (
    DEFAULT_DEADTIME,
    DEFAULT_INITDEAD,
    DEFAULT_KEEPALIVE,
    HEARTBEAT_DEADTIME,
    HEARTBEAT_KEEPALIVE,
    NEIGH_LOCKTIME,
    UDP_PORT,
    HAConfig,
    Medium,
    Resource,
    ResourceGroup,
    Timers,
)

__all__ = [
    "ADDRESS_KEY_DOCS",
    "KEYS",
    "KEY_DOCS",
    "MAX_ANNOUNCE_INTERVAL",
    "MAX_ANNOUNCE_REFRESH",
    "MAX_ANNOUNCE_REPEATS",
    "MAX_MEDIA",
    "MAX_PING_NODES",
    "MAX_RESOURCE_ADDRESSES",
    "MEDIUM_KEY_DOCS",
    "PING_TIME_RANGE",
    "RESOURCE_KEY_DOCS",
    "TIMER_RANGES",
    "KeyDoc",
    "ifname_problem",
    "parse_duration",
    "parse_ha",
]

#: Every key of the ``ha:`` mapping.
KEYS = (
    "node",
    "nodes",
    "media",
    "udpport",
    "authkeys",
    "keepalive",
    "warntime",
    "deadtime",
    "initdead",
    "auto_failback",
    "resources",
    "ping_nodes",
    "compat",
    "state_dir",
    "announce_repeats",
    "announce_interval",
    "announce_refresh",
    "ping_interval",
    "ping_timeout",
    "ping_rise",
    "ping_fall",
    "link_monitor",
)


class KeyDoc(NamedTuple):
    """The documentation of one key of the ``ha:`` section (or of one of its mappings), for the
    configuration reference (`director.config.reference`): its ``type``, its ``default`` (text:
    ``required``, a value, or what stands in for it) and its ``meaning``, in markdown."""

    type: str
    default: str
    meaning: str


_HA_DEFAULTS = HAConfig.__dataclass_fields__
#: The documentation of every key of `KEYS`, in the order of the reference (tests hold the two together).
KEY_DOCS: dict[str, KeyDoc] = {
    "node": KeyDoc(
        "string",
        "the host name (`uname -n`)",
        "Our node name, one of `nodes`. Node names are case-insensitive (heartbeat lowercases them).",
    ),
    "nodes": KeyDoc(
        "list of strings",
        "required",
        'Every node of the pair, ours included (ha.cf "node"): one or two names.',
    ),
    "media": KeyDoc(
        "list of strings or mappings",
        "required",
        "How heartbeats travel, one or more: heartbeat's ha.cf lines `bcast IF [IF...]` (one medium per "
        "interface, sent to its IPv4 broadcast address), `mcast IF GROUP PORT TTL LOOP` (an IPv4 multicast "
        "group, TTL 1-255, LOOP 0/1), `ucast IF PEER [PEER...]` (to the peers' IPv4 addresses, not host "
        "names), or mappings (see the medium keys below).",
    ),
    "udpport": KeyDoc(
        "integer",
        f"{UDP_PORT}",
        "UDP port of `bcast` and `ucast` media, and the default of `mcast`'s (1-65535).",
    ),
    "authkeys": KeyDoc(
        "string",
        "required",
        "Path of heartbeat's authkeys file (`auth N` + `N sha1|md5|crc [KEY]`), mode 600: a file readable "
        "by group or others is refused, as heartbeat does. A relative path is relative to the "
        "configuration file's directory.",
    ),
    "keepalive": KeyDoc(
        "time",
        f"{DEFAULT_KEEPALIVE:g} (compat heartbeat: {HEARTBEAT_KEEPALIVE:g})",
        "Seconds between heartbeats.",
    ),
    "warntime": KeyDoc(
        "time",
        "deadtime / 2",
        "A heartbeat this late is logged. With compat directord it must be below `deadtime`.",
    ),
    "deadtime": KeyDoc(
        "time",
        f"{DEFAULT_DEADTIME:g} (compat heartbeat: {HEARTBEAT_DEADTIME:g})",
        "A peer silent this long is dead; must exceed 2 x `keepalive`.",
    ),
    "initdead": KeyDoc(
        "time",
        f"max({DEFAULT_INITDEAD:g}, deadtime) (compat heartbeat: deadtime if deadtime > 10, 12 if deadtime "
        "< 6, else 2 x deadtime)",
        "The deadtime until the peer was first heard; at least `deadtime`.",
    ),
    "auto_failback": KeyDoc(
        "boolean or `legacy`",
        "`true` (compat heartbeat: `legacy`, as heartbeat)",
        "`true`/`on`: the preferred owner takes its resources back when it returns; `false`/`off`: "
        "resources stay where they are (heartbeat's nice_failback); `legacy`: heartbeat's old mode. "
        "Standby, takeover, ping nodes and link monitoring need true or false.",
    ),
    "resources": KeyDoc(
        "list of strings or mappings",
        "none",
        "Resource groups, as haresources lines: a preferred owner (one of the nodes) and one or more "
        "addresses, each `IP/PREFIX/IF` or a mapping (see the resource keys below). A whole haresources "
        "line is accepted too: `dir1 192.168.10.100/32/eth0` (an `IPaddr::` or `IPaddr2::` prefix is "
        "allowed). Every address needs its prefix length and interface.",
    ),
    "ping_nodes": KeyDoc(
        "list of strings",
        "none",
        "IP addresses (IPv4 or IPv6, not host names) probed with ICMP echo, heartbeat's `ping` acted upon "
        "as its ipfail plugin does: while the peer is alive, the node that reaches fewer ping nodes hands "
        "its resources to the other.",
    ),
    "compat": KeyDoc(
        "`directord` or `heartbeat`",
        "`directord`",
        "`directord`: the fast defaults, failover in about a second on a LAN; `heartbeat`: heartbeat's own "
        "defaults and rules, for a pair where one side still runs heartbeat.",
    ),
    "state_dir": KeyDoc(
        "string",
        f"`{_HA_DEFAULTS['state_dir'].default}`",
        "Absolute path of the directory where the node keeps its uuid and generation counter.",
    ),
    "announce_repeats": KeyDoc(
        "integer",
        f"{_HA_DEFAULTS['announce_repeats'].default}",
        "After a takeover, gratuitous ARP / unsolicited NA are sent in this many rounds.",
    ),
    "announce_interval": KeyDoc(
        "time",
        f"{_HA_DEFAULTS['announce_interval'].default:g}",
        f"Seconds between two announcement rounds; more than {NEIGH_LOCKTIME:g} s (the kernel ignores a "
        "neighbour update within its locktime of the previous one).",
    ),
    "announce_refresh": KeyDoc(
        "time",
        f"{_HA_DEFAULTS['announce_refresh'].default:g} (off)",
        f"Seconds between re-announcements while active; 0 = off, else more than {NEIGH_LOCKTIME:g} s.",
    ),
    "ping_interval": KeyDoc(
        "time",
        f"{_HA_DEFAULTS['ping_interval'].default:g}",
        "Seconds between two probes of each ping node.",
    ),
    "ping_timeout": KeyDoc(
        "time",
        f"{_HA_DEFAULTS['ping_timeout'].default:g}",
        "Seconds a reply may take; at most `ping_interval`.",
    ),
    "ping_rise": KeyDoc(
        "integer",
        f"{_HA_DEFAULTS['ping_rise'].default}",
        "Answered probes in a row that make a ping node reachable again (1-100).",
    ),
    "ping_fall": KeyDoc(
        "integer",
        f"{_HA_DEFAULTS['ping_fall'].default}",
        "Missed probes in a row that make a ping node unreachable (1-100).",
    ),
    "link_monitor": KeyDoc(
        "boolean",
        f"`{str(_HA_DEFAULTS['link_monitor'].default).lower()}`",
        "Watch the carrier of every interface that carries a resource address (as bonding's miimon does). "
        "While the peer is alive, a node whose resource link is down hands its resources over; carrier "
        "counts before ping nodes. Needs a directord peer (a heartbeat node sends no reports).",
    ),
}

#: Accepted range of each timer, in seconds.  Heartbeat reads times in milliseconds
#: (``cl_get_msec``), so 10 ms is the finest keepalive; its documented values are a
#: keepalive of seconds, a deadtime of tens of seconds and an initdead of minutes.
TIMER_RANGES: dict[str, tuple[float, float]] = {
    "keepalive": (0.01, 60.0),
    "warntime": (0.01, 3600.0),
    "deadtime": (0.01, 3600.0),
    "initdead": (0.0, 86400.0),
}
#: Accepted range of ping_interval and ping_timeout, in seconds.
PING_TIME_RANGE = (0.01, 3600.0)
#: Largest announce_interval and announce_refresh, in seconds, and most announce_repeats.
MAX_ANNOUNCE_INTERVAL = 3600.0
MAX_ANNOUNCE_REFRESH = 86400.0
MAX_ANNOUNCE_REPEATS = 100
#: Most media lines (each opens sockets), ping nodes (each probed every ping_interval)
#: and resource addresses (each added and announced on takeover) in the section.
MAX_MEDIA = 64
MAX_PING_NODES = 64
MAX_RESOURCE_ADDRESSES = 1024

_MEDIUM_KINDS = ("bcast", "mcast", "ucast")
_MEDIUM_KEYS = {
    "bcast": ("bcast",),
    "mcast": ("mcast", "group", "port", "ttl", "loop"),
    "ucast": ("ucast", "peer"),
}
_RESOURCE_KEYS = ("owner", "addresses")
_ADDRESS_KEYS = ("address", "prefix", "interface")
_RESOURCE_AGENTS = ("IPaddr::", "IPaddr2::")

#: The documentation of the keys of a medium mapping (every key of ``_MEDIUM_KEYS``): exactly
#: one of ``bcast``, ``mcast``, ``ucast`` names the kind and its interface.
MEDIUM_KEY_DOCS: dict[str, KeyDoc] = {
    "bcast": KeyDoc(
        "string",
        "required (one of the three kinds)",
        "`{bcast: IF}`: broadcast on this interface (its IPv4 broadcast address).",
    ),
    "mcast": KeyDoc(
        "string",
        "required (one of the three kinds)",
        "`{mcast: IF, group: GROUP, ...}`: multicast from this interface (with `group`).",
    ),
    "group": KeyDoc("string", "required (mcast)", "The IPv4 multicast group (224.0.0.0/4)."),
    "port": KeyDoc("integer", "`udpport`", "The multicast UDP port (1-65535)."),
    "ttl": KeyDoc("integer", "1", "The multicast TTL (1-255)."),
    "loop": KeyDoc("boolean", "`false`", "Whether multicast is looped back to this host."),
    "ucast": KeyDoc(
        "string",
        "required (one of the three kinds)",
        "`{ucast: IF, peer: ADDRESS}`: unicast from this interface (with `peer`).",
    ),
    "peer": KeyDoc("string", "required (ucast)", "The peer's IPv4 address (not a host name)."),
}
#: The documentation of the keys of a resource group mapping (``_RESOURCE_KEYS``).
RESOURCE_KEY_DOCS: dict[str, KeyDoc] = {
    "owner": KeyDoc("string", "required", "The preferred owner, one of `nodes` (haresources' first column)."),
    "addresses": KeyDoc(
        "list of strings or mappings",
        "required",
        "One or more addresses: `IP/PREFIX/IF` strings (`192.168.10.100/32/eth0`) or address mappings.",
    ),
}
#: The documentation of the keys of an address mapping (``_ADDRESS_KEYS``), all required.
ADDRESS_KEY_DOCS: dict[str, KeyDoc] = {
    "address": KeyDoc("string", "required", "The IP address (IPv4 or IPv6; not unspecified or multicast)."),
    "prefix": KeyDoc("integer", "required", "Its prefix length (1-32 for IPv4, 1-128 for IPv6)."),
    "interface": KeyDoc("string", "required", "The interface it is added to."),
}


# --- pure helpers --------------------------------------------------------------------------


def parse_duration(value: Any) -> float:
    """A time in seconds from a YAML number or a heartbeat time string, rounded to the millisecond.

    Accepted: integers and floats (seconds), and strings ``N``, ``Ns``, ``Nms``,
    ``Nus`` where ``N`` is a decimal number with an optional fraction (suffix
    case-insensitive, blanks allowed around it), as heartbeat's ``cl_get_msec``
    (``lib/clplumbing/cl_misc.c``) reads them, plus the ``s`` suffix.  A
    string is counted in milliseconds exactly as heartbeat does
    (`ha.config.heartbeat_msec`); a number is rounded to the nearest millisecond,
    halves up.

    Raises:
        TypeError: ``value`` is a boolean or neither a number nor a string.
        ValueError: a string of another form or longer than 32 characters, or
            an infinite / NaN number or one too large to count milliseconds of.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TypeError(f"expected a number of seconds or a string such as '200ms', got {describe(value)}")
    if isinstance(value, str):
        try:
            return heartbeat_time_msec(value) / 1000.0
        except ValueError:
            raise ValueError(
                f"not a time: {quote(value)}; write seconds (0.5) or a string with a unit: '500ms', '500000us', '0.5s'"
            ) from None
    else:
        seconds = float(value)
    if not math.isfinite(seconds * 1000.0):
        raise ValueError(f"expected a finite number of seconds, got {quote(value)}")
    return math.floor(seconds * 1000.0 + 0.5) / 1000.0


def ifname_problem(name: str) -> str | None:
    """Why ``name`` cannot be a Linux interface name (``dev_valid_name`` in net/core/dev.c), or ``None``."""
    if not name:
        return "an interface name must not be empty"
    if len(name.encode()) > IFNAME_MAX:
        return f"interface name {quote(name)} is longer than {IFNAME_MAX} bytes"
    if not valid_ifname(name):  # the kernel's rule, one copy (director.model)
        return f"invalid interface name {quote(name)} (no '/', ':', blanks or NUL; not '.' or '..')"
    return None


def _seconds(value: float) -> str:
    return f"{value:g} s"


# --- the section parser ------------------------------------------------------------------


class _HAParser:
    """Checks and converts the ``ha:`` mapping of one located document; collects every issue."""

    def __init__(self, root: Any, file: str) -> None:
        self.root = root
        self.file = file
        self.section = root["ha"]
        self.issues: list[ConfigIssue] = []

    # -- issue and type helpers

    def issue(self, rel: Path, message: str, at_key: bool = False) -> None:
        path = ("ha",) + rel
        line, column = locate(self.root, path, at_key)
        self.issues.append(ConfigIssue(self.file, line, column, field_path(path), message))

    def unknown_keys(self, mapping: dict[Any, Any], allowed: tuple[str, ...], rel: Path) -> None:
        for key in mapping:
            if isinstance(key, str) and key in allowed:
                continue
            close = difflib.get_close_matches(str(key), allowed, n=1) if isinstance(key, str) else []
            hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(sorted(allowed))}"
            self.issue(rel + (key,), f"unknown key '{key}'{hint}", at_key=True)

    def get(self, key: str) -> Any:
        return self.section.get(key)

    def present(self, key: str) -> bool:
        return self.section.get(key) is not None

    def string(self, value: Any, rel: Path) -> str | None:
        if isinstance(value, str):
            return value
        self.issue(rel, f"expected a string, got {describe(value)}")
        return None

    def integer(self, value: Any, rel: Path, low: int, high: int | None, what: str = "value") -> int | None:
        if not isinstance(value, int) or isinstance(value, bool):
            self.issue(rel, f"expected an integer, got {describe(value)}")
            return None
        if high is None and value < low:
            self.issue(rel, f"must be >= {low}, got {value}")
            return None
        if high is not None and not low <= value <= high:
            self.issue(rel, f"{what} {value} is out of range {low}..{high}")
            return None
        return value

    def seq(self, value: Any, rel: Path) -> list[Any] | None:
        if isinstance(value, list):
            return value
        self.issue(rel, f"expected a list, got {describe(value)}")
        return None

    def time(self, key: str) -> float | None:
        """The time at ``key`` in seconds (``None`` when absent or invalid, reported)."""
        value = self.get(key)
        if value is None:
            return None
        try:
            return parse_duration(value)
        except (TypeError, ValueError) as err:
            self.issue((key,), str(err))
            return None

    def ipv4(self, text: str, rel: Path, what: str) -> str | None:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            self.issue(rel, f"{what} {quote(text)} is not an IP address")
            return None
        if address.version != 4:
            self.issue(rel, f"{what} {text} is IPv6; heartbeat's media are IPv4 only")
            return None
        return str(address)

    # -- whole section

    def parse(self) -> HAConfig | None:
        self.unknown_keys(self.section, KEYS, ())
        compat = self.compat()
        udpport = UDP_PORT
        if self.present("udpport"):
            udpport = self.integer(self.get("udpport"), ("udpport",), 1, 65535, "port") or UDP_PORT
        nodes = self.nodes()
        node = self.node(nodes)
        media = self.media(udpport)
        authkeys = self.authkeys()
        timers = self.timers(compat)
        auto_failback = self.auto_failback(compat)
        groups = self.resources(nodes)
        ping_nodes = self.ping_nodes()
        state_dir = self.state_dir()
        repeats, interval, refresh = self.announce()
        probing = self.probing()
        if self.issues:
            return None
        assert nodes is not None and node is not None and authkeys is not None and timers is not None
        return HAConfig(
            node=node,
            nodes=tuple(nodes),
            media=tuple(media),
            authkeys=authkeys,
            udpport=udpport,
            timers=timers,
            auto_failback=auto_failback,
            groups=tuple(groups),
            ping_nodes=tuple(ping_nodes),
            compat=compat,
            state_dir=state_dir,
            announce_repeats=repeats,
            announce_interval=interval,
            announce_refresh=refresh,
            **probing,
            line=self.root.key_pos["ha"][0],
        )

    def compat(self) -> Compat:
        value = self.get("compat")
        if value is None:
            return "directord"
        if value in ("directord", "heartbeat"):
            return cast(Compat, value)  # one of the two names (just checked)
        self.issue(("compat",), f"expected directord or heartbeat, got {describe(value)}")
        return "directord"

    # -- nodes

    def node_name(self, value: Any, rel: Path) -> str | None:
        name = self.string(value, rel)
        if name is None:
            return None
        if not name or any(c.isspace() for c in name):
            self.issue(rel, f"a node name must be one word without blanks, got {quote(name)}")
            return None
        return name.lower()

    def nodes(self) -> list[str] | None:
        value = self.get("nodes")
        if value is None:
            self.issue(("nodes",), "missing required key 'nodes' (every node of the cluster, ours included)")
            return None
        items = self.seq(value, ("nodes",))
        if items is None:
            return None
        if not items:
            self.issue(("nodes",), "must list at least one node (ours)")
            return None
        names: list[str] = []
        ok = True
        for index, item in enumerate(items):
            name = self.node_name(item, ("nodes", index))
            if name is None:
                ok = False
            elif name in names:
                self.issue(("nodes", index), f"duplicate node {quote(name)} (node names are case-insensitive)")
            else:
                names.append(name)
        if ok and len(names) > 2:
            self.issue(
                ("nodes",), f"{len(names)} nodes: directord pairs two directors (heartbeat's v1 resource protocol)"
            )
            return None
        return names if ok else None

    def node(self, nodes: list[str] | None) -> str | None:
        explicit = self.present("node")
        name = self.node_name(self.get("node"), ("node",)) if explicit else default_node_name()
        if name is None or nodes is None:
            return name
        if name not in nodes:
            if explicit:
                self.issue(("node",), f"our node name {quote(name)} is not among the nodes ({', '.join(nodes)})")
            else:
                self.issue(
                    ("nodes",),
                    f"our node name {quote(name)} (the host name; set 'node' to choose another) is not among "
                    f"the nodes ({', '.join(nodes)})",
                )
        return name

    # -- media

    def media(self, udpport: int) -> list[Medium]:
        value = self.get("media")
        if value is None:
            self.issue(("media",), "missing required key 'media' (at least one of bcast, mcast, ucast)")
            return []
        items = self.seq(value, ("media",))
        if items is None:
            return []
        if not items:
            self.issue(("media",), "must list at least one medium (bcast, mcast or ucast)")
            return []
        if len(items) > MAX_MEDIA:
            self.issue(("media",), f"{len(items)} media; at most {MAX_MEDIA}")
            return []
        media: list[Medium] = []
        seen: dict[Medium, int] = {}
        for index, item in enumerate(items):
            rel = ("media", index)
            if isinstance(item, str):
                found = self.medium_line(item, rel, udpport)
            elif isinstance(item, dict):
                found = self.medium_mapping(item, rel, udpport)
            else:
                self.issue(
                    rel, f"expected a heartbeat medium line such as 'bcast eth1' or a mapping, got {describe(item)}"
                )
                continue
            for medium in found:
                if medium in seen:
                    self.issue(rel, f"duplicate medium {medium.as_ha_cf()} (same as media[{seen[medium]}])")
                else:
                    seen[medium] = index
                    media.append(medium)
        return media

    def interface(self, name: str, rel: Path) -> bool:
        problem = ifname_problem(name)
        if problem:
            self.issue(rel, problem)
        return problem is None

    def medium_line(self, text: str, rel: Path, udpport: int) -> list[Medium]:
        """``bcast IF [IF...]``, ``mcast IF GROUP PORT TTL LOOP`` or ``ucast IF PEER [PEER...]``."""
        tokens = text.split()
        if not tokens or tokens[0] not in _MEDIUM_KINDS:
            first = tokens[0] if tokens else ""
            self.issue(rel, f"unknown medium {quote(first)}; expected bcast, mcast or ucast")
            return []
        kind, args = tokens[0], tokens[1:]
        if kind == "bcast":
            if not args:
                self.issue(rel, "expected 'bcast IF [IF...]': no interface given")
                return []
            return [Medium("bcast", name, port=udpport) for name in args if self.interface(name, rel)]
        if kind == "ucast":
            if len(args) < 2:
                self.issue(rel, f"expected 'ucast IF PEER-ADDRESS [PEER-ADDRESS...]', got {quote(text.strip())}")
                return []
            if not self.interface(args[0], rel):
                return []
            peers = [self.ucast_peer(peer, rel) for peer in args[1:]]
            return [Medium("ucast", args[0], port=udpport, peer=peer) for peer in peers if peer is not None]
        if len(args) != 5:
            self.issue(rel, f"expected 'mcast IF GROUP PORT TTL LOOP' (five values), got {quote(text.strip())}")
            return []
        name, group_text, port_text, ttl_text, loop_text = args
        ok = self.interface(name, rel)
        group = self.mcast_group(group_text, rel)
        port = self.number_token(port_text, rel, "mcast port", 1, 65535)
        ttl = self.number_token(ttl_text, rel, "mcast TTL", 1, 255)
        if loop_text not in ("0", "1"):
            self.issue(rel, f"mcast loop must be 0 or 1, got {quote(loop_text)}")
            ok = False
        if not ok or group is None or port is None or ttl is None:
            return []
        return [Medium("mcast", name, port=port, group=group, ttl=ttl, loop=loop_text == "1")]

    def number_token(self, text: str, rel: Path, what: str, low: int, high: int) -> int | None:
        if not text.isdigit() or not low <= int(text) <= high:
            self.issue(rel, f"{what} must be an integer {low}..{high}, got {quote(text)}")
            return None
        return int(text)

    def mcast_group(self, text: str, rel: Path) -> str | None:
        group = self.ipv4(text, rel, "mcast group")
        if group is not None and not ipaddress.IPv4Address(group).is_multicast:
            self.issue(rel, f"mcast group {group} is not a multicast address (224.0.0.0/4)")
            return None
        return group

    def ucast_peer(self, text: str, rel: Path) -> str | None:
        peer = self.ipv4(text, rel, "ucast peer")
        if peer is None:
            return None
        address = ipaddress.IPv4Address(peer)
        if address.is_multicast or address.is_unspecified or peer == "255.255.255.255":
            self.issue(rel, f"ucast peer {peer} is not a unicast address")
            return None
        return peer

    def medium_mapping(self, item: dict[Any, Any], rel: Path, udpport: int) -> list[Medium]:
        """``{bcast: IF}``, ``{ucast: IF, peer: ADDR}`` or ``{mcast: IF, group, port, ttl, loop}``."""
        kinds = [kind for kind in _MEDIUM_KINDS if kind in item]
        if len(kinds) != 1:
            found = f"{', '.join(kinds)} together" if kinds else "none of them"
            self.issue(rel, f"a medium mapping names exactly one of bcast, mcast, ucast (its interface); found {found}")
            return []
        kind = kinds[0]
        self.unknown_keys(item, _MEDIUM_KEYS[kind], rel)
        name = self.string(item[kind], rel + (kind,))
        ok = name is not None and self.interface(name, rel + (kind,))
        if kind == "bcast":
            return [Medium("bcast", name, port=udpport)] if ok and name is not None else []
        if kind == "ucast":
            if item.get("peer") is None:
                self.issue(rel + ("peer",), "missing required key 'peer' (the peer's IPv4 address)")
                return []
            text = self.string(item["peer"], rel + ("peer",))
            peer = self.ucast_peer(text, rel + ("peer",)) if text is not None else None
            if not ok or name is None or peer is None:
                return []
            return [Medium("ucast", name, port=udpport, peer=peer)]
        group: str | None = None
        if item.get("group") is None:
            self.issue(rel + ("group",), "missing required key 'group' (an IPv4 multicast address)")
        else:
            text = self.string(item["group"], rel + ("group",))
            group = self.mcast_group(text, rel + ("group",)) if text is not None else None
        port: int | None = udpport
        if item.get("port") is not None:
            port = self.integer(item["port"], rel + ("port",), 1, 65535, "port")
        ttl: int | None = 1
        if item.get("ttl") is not None:
            ttl = self.integer(item["ttl"], rel + ("ttl",), 1, 255, "TTL")
        loop = item.get("loop", False)
        if not isinstance(loop, bool):
            self.issue(rel + ("loop",), f"expected a boolean (true or false), got {describe(loop)}")
            loop = None
        if not ok or name is None or group is None or port is None or ttl is None or loop is None:
            return []
        return [Medium("mcast", name, port=port, group=group, ttl=ttl, loop=loop)]

    # -- authkeys

    def authkeys(self) -> str | None:
        value = self.get("authkeys")
        if value is None:
            self.issue(("authkeys",), "missing required key 'authkeys' (path of heartbeat's authkeys file)")
            return None
        text = self.string(value, ("authkeys",))
        if text is None:
            return None
        if not text or "\0" in text:
            self.issue(("authkeys",), "must be a file path")
            return None
        path = text
        if not os.path.isabs(path):
            path = os.path.join(os.path.dirname(self.file), path)
        try:
            load_authkeys(path)
        except AuthKeysError as err:
            self.issue(("authkeys",), f"unusable authkeys file: {err}")
        return path

    # -- timers

    def timers(self, compat: Compat) -> Timers | None:
        """Explicit timers checked, the others defaulted, then the cross rules.

        A rule is skipped when a timer it involves is itself invalid (already
        reported), so that every other problem is still reported.
        """
        given = {key: self.time(key) for key in ("keepalive", "warntime", "deadtime", "initdead")}
        invalid = {key for key in given if given[key] is None and self.present(key)}
        for key, (low, high) in TIMER_RANGES.items():
            value = given[key]
            if value is not None and not low <= value <= high:
                self.issue((key,), f"must be {low:g}..{high:g} seconds, got {quote(self.get(key))}")
                invalid.add(key)
        timers = resolve_timers(compat, **{key: None if key in invalid else value for key, value in given.items()})

        def shown(key: str) -> str:
            value = _seconds(getattr(timers, key))
            return value if given[key] is not None else f"{value} (default)"

        def applies(*keys: str) -> bool:
            return not invalid.intersection(keys)

        ok = not invalid
        if applies("deadtime", "keepalive") and not timers.deadtime > 2 * timers.keepalive:
            where = "deadtime" if given["deadtime"] is not None or given["keepalive"] is None else "keepalive"
            self.issue((where,), f"deadtime {shown('deadtime')} must exceed 2 x keepalive {shown('keepalive')}")
            ok = False
        if applies("initdead", "deadtime") and timers.initdead < timers.deadtime:
            where = "initdead" if given["initdead"] is not None else "deadtime"
            self.issue((where,), f"initdead {shown('initdead')} must be >= deadtime {shown('deadtime')}")
            ok = False
        if compat == "directord" and applies("warntime", "deadtime") and not timers.warntime < timers.deadtime:
            where = "warntime" if given["warntime"] is not None else "deadtime"
            self.issue(
                (where,),
                f"warntime {shown('warntime')} must be below deadtime {shown('deadtime')} "
                "(compat heartbeat does not require it)",
            )
            ok = False
        return timers if ok else None

    def auto_failback(self, compat: Compat) -> bool | Literal["legacy"]:
        value = self.get("auto_failback")
        if value is None:
            return "legacy" if compat == "heartbeat" else True
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            word = value.strip().lower()
            if word == "legacy":
                return "legacy"
            if word in TRUE_WORDS:
                return True
            if word in FALSE_WORDS:
                return False
        self.issue(("auto_failback",), f"expected true (on), false (off) or legacy, got {describe(value)}")
        return True

    # -- resources

    def resources(self, nodes: list[str] | None) -> list[ResourceGroup]:
        value = self.get("resources")
        if value is None:
            return []
        items = self.seq(value, ("resources",))
        if items is None:
            return []
        if len(items) > MAX_RESOURCE_ADDRESSES:
            self.issue(
                ("resources",), f"{len(items)} resource groups; at most {MAX_RESOURCE_ADDRESSES} addresses in all"
            )
            return []
        groups: list[ResourceGroup] = []
        seen: dict[str, str] = {}  # address -> field path of its first definition
        for index, item in enumerate(items):
            rel: Path = ("resources", index)
            if isinstance(item, str):
                group = self.group_line(item, rel, nodes, seen)
            elif isinstance(item, dict):
                group = self.group_mapping(item, rel, nodes, seen)
            else:
                self.issue(rel, f"expected a mapping (owner, addresses) or a haresources line, got {describe(item)}")
                continue
            if group is not None:
                groups.append(group)
            if len(seen) > MAX_RESOURCE_ADDRESSES:
                self.issue(("resources",), f"more than {MAX_RESOURCE_ADDRESSES} resource addresses")
                return []
        return groups

    def owner(self, name: str | None, rel: Path, nodes: list[str] | None) -> str | None:
        if name is None:
            return None
        if nodes is not None and name not in nodes:
            self.issue(rel, f"owner {quote(name)} is not among the nodes ({', '.join(nodes)})")
            return None
        return name

    def register(self, resource: Resource | None, rel: Path, seen: dict[str, str]) -> Resource | None:
        if resource is None:
            return None
        if resource.address in seen:
            self.issue(rel, f"address {resource.address} is already a resource ({seen[resource.address]})")
            return None
        seen[resource.address] = field_path(("ha",) + rel)
        return resource

    def group_line(self, text: str, rel: Path, nodes: list[str] | None, seen: dict[str, str]) -> ResourceGroup | None:
        tokens = text.split()
        if len(tokens) < 2:
            self.issue(rel, f"expected a haresources line 'OWNER IP/PREFIX/IF [IP/PREFIX/IF...]', got {quote(text)}")
            return None
        owner = self.owner(self.node_name(tokens[0], rel), rel, nodes)
        resources = [self.register(self.address_text(token, rel), rel, seen) for token in tokens[1:]]
        if owner is None or any(r is None for r in resources):
            return None
        return ResourceGroup(owner, tuple(r for r in resources if r is not None))

    def group_mapping(
        self, item: dict[Any, Any], rel: Path, nodes: list[str] | None, seen: dict[str, str]
    ) -> ResourceGroup | None:
        self.unknown_keys(item, _RESOURCE_KEYS, rel)
        owner = None
        if item.get("owner") is None:
            self.issue(rel + ("owner",), "missing required key 'owner' (the preferred node, haresources' first column)")
        else:
            owner = self.owner(self.node_name(item["owner"], rel + ("owner",)), rel + ("owner",), nodes)
        if item.get("addresses") is None:
            self.issue(rel + ("addresses",), "missing required key 'addresses' (IP/PREFIX/IF strings or mappings)")
            return None
        addresses = self.seq(item["addresses"], rel + ("addresses",))
        if addresses is None:
            return None
        if not addresses:
            self.issue(rel + ("addresses",), "must list at least one address")
            return None
        resources: list[Resource | None] = []
        for index, entry in enumerate(addresses):
            where = rel + ("addresses", index)
            if isinstance(entry, str):
                resource = self.address_text(entry, where)
            elif isinstance(entry, dict):
                resource = self.address_mapping(entry, where)
            else:
                self.issue(
                    where, f"expected 'IP/PREFIX/IF' or a mapping (address, prefix, interface), got {describe(entry)}"
                )
                resource = None
            resources.append(self.register(resource, where, seen))
        if owner is None or any(r is None for r in resources):
            return None
        return ResourceGroup(owner, tuple(r for r in resources if r is not None))

    def address_text(self, text: str, rel: Path) -> Resource | None:
        """``IP/PREFIX/IF``, optionally after ``IPaddr::`` or ``IPaddr2::``."""
        body = text
        for agent in _RESOURCE_AGENTS:
            if body.startswith(agent):
                body = body[len(agent) :]
                break
        parts = body.split("/")
        if len(parts) != 3 or not all(parts):
            self.issue(rel, f"expected IP/PREFIX/IF such as 192.168.10.100/32/eth0, got {quote(text)}")
            return None
        address, prefix, name = parts
        if not prefix.isdigit():
            self.issue(rel, f"prefix length {quote(prefix)} is not a number")
            return None
        return self.resource(address, int(prefix), name, rel, rel, rel)

    def address_mapping(self, item: dict[Any, Any], rel: Path) -> Resource | None:
        self.unknown_keys(item, _ADDRESS_KEYS, rel)
        for key in _ADDRESS_KEYS:
            if item.get(key) is None:
                self.issue(rel + (key,), f"missing required key '{key}'")
        address = self.string(item["address"], rel + ("address",)) if item.get("address") is not None else None
        name = self.string(item["interface"], rel + ("interface",)) if item.get("interface") is not None else None
        prefix = item.get("prefix")
        if prefix is not None and (isinstance(prefix, bool) or not isinstance(prefix, int)):
            self.issue(rel + ("prefix",), f"expected an integer, got {describe(prefix)}")
            prefix = None
        if address is None or name is None or prefix is None:
            if address is not None:  # still judge what is there
                self.ip(address, rel + ("address",))
            if name is not None:
                self.interface(name, rel + ("interface",))
            return None
        return self.resource(address, prefix, name, rel + ("address",), rel + ("prefix",), rel + ("interface",))

    def resource(
        self, text: str, prefix: int, name: str, at_address: Path, at_prefix: Path, at_interface: Path
    ) -> Resource | None:
        ok = self.interface(name, at_interface)
        address = self.ip(text, at_address)
        if address is None:
            return None
        bits = ipaddress.ip_address(address).max_prefixlen
        if not 1 <= prefix <= bits:
            self.issue(at_prefix, f"prefix length {prefix} is out of range 1..{bits}")
            ok = False
        return Resource(address, prefix, name) if ok else None

    def ip(self, text: str, rel: Path) -> str | None:
        """Canonical resource address (IPv4 or IPv6, unscoped, not unspecified or multicast)."""
        try:
            if "%" in text:
                raise ValueError(text)
            address = canonical_ip(text)
        except ValueError:
            self.issue(rel, f"not an IP address: {quote(text)}")
            return None
        parsed = ipaddress.ip_address(address)
        if parsed.is_unspecified or parsed.is_multicast:
            self.issue(rel, f"{address} cannot be a resource address (unspecified or multicast)")
            return None
        return address

    # -- the rest

    def ping_nodes(self) -> list[str]:
        value = self.get("ping_nodes")
        if value is None:
            return []
        items = self.seq(value, ("ping_nodes",))
        if items is None:
            return []
        if len(items) > MAX_PING_NODES:
            self.issue(("ping_nodes",), f"{len(items)} ping nodes; at most {MAX_PING_NODES}")
            return []
        found: list[str] = []
        for index, item in enumerate(items):
            rel = ("ping_nodes", index)
            text = self.string(item, rel)
            if text is None:
                continue
            try:
                if "%" in text:
                    raise ValueError(text)
                address = canonical_ip(text)
            except ValueError:
                self.issue(rel, f"not an IP address: {quote(text)} (ping nodes are addresses, not host names)")
                continue
            if address in found:
                self.issue(rel, f"duplicate ping node {address}")
            else:
                found.append(address)
        return found

    def state_dir(self) -> str:
        default = cast(str, HAConfig.__dataclass_fields__["state_dir"].default)
        value = self.get("state_dir")
        if value is None:
            return default
        text = self.string(value, ("state_dir",))
        if text is None:
            return default
        if not text.startswith("/") or "\0" in text:
            self.issue(("state_dir",), f"must be an absolute directory path, got {quote(text)}")
        return text

    def announce(self) -> tuple[int, float, float]:
        fields = HAConfig.__dataclass_fields__
        # the fields' defaults (the casts state their types: a dataclass Field's default is untyped)
        repeats = cast(int, fields["announce_repeats"].default)
        interval = cast(float, fields["announce_interval"].default)
        refresh = cast(float, fields["announce_refresh"].default)
        if self.present("announce_repeats"):
            repeats = (
                self.integer(
                    self.get("announce_repeats"), ("announce_repeats",), 1, MAX_ANNOUNCE_REPEATS, "announce_repeats"
                )
                or repeats
            )
        value = self.time("announce_interval")
        if value is not None:
            if value > MAX_ANNOUNCE_INTERVAL:
                self.issue(
                    ("announce_interval",), f"must be at most {MAX_ANNOUNCE_INTERVAL:g} s, got {_seconds(value)}"
                )
            elif not value > NEIGH_LOCKTIME:
                self.issue(
                    ("announce_interval",),
                    f"must be > {NEIGH_LOCKTIME:g} s (the kernel ignores neighbour updates within its 1 s "
                    f"locktime), got {_seconds(value)}",
                )
            interval = value
        value = self.time("announce_refresh")
        if value is not None:
            if value > MAX_ANNOUNCE_REFRESH:
                self.issue(("announce_refresh",), f"must be at most {MAX_ANNOUNCE_REFRESH:g} s, got {_seconds(value)}")
            elif value != 0 and not value > NEIGH_LOCKTIME:
                self.issue(("announce_refresh",), f"must be 0 (off) or > {NEIGH_LOCKTIME:g} s, got {_seconds(value)}")
            refresh = value
        return repeats, interval, refresh

    def probing(self) -> dict[str, Any]:
        """ping_interval, ping_timeout (seconds, > 0, timeout <= interval), ping_rise, ping_fall (>= 1),
        link_monitor."""
        fields = HAConfig.__dataclass_fields__
        out: dict[str, Any] = {}
        for key in ("ping_interval", "ping_timeout"):
            value = self.time(key)
            if value is not None:
                if not PING_TIME_RANGE[0] <= value <= PING_TIME_RANGE[1]:
                    low, high = PING_TIME_RANGE
                    self.issue((key,), f"must be {low:g}..{high:g} s, got {_seconds(value)}")
                else:
                    out[key] = value
        interval = out.get("ping_interval", fields["ping_interval"].default)
        timeout = out.get("ping_timeout", fields["ping_timeout"].default)
        if timeout > interval and ("ping_timeout" in out or "ping_interval" in out):
            where = "ping_timeout" if "ping_timeout" in out else "ping_interval"
            self.issue(
                (where,), f"ping_timeout ({_seconds(timeout)}) must not exceed ping_interval ({_seconds(interval)})"
            )
        for key in ("ping_rise", "ping_fall"):
            if self.present(key):
                value = self.integer(self.get(key), (key,), 1, 100)
                if value is not None:
                    out[key] = value
        if self.present("link_monitor"):
            value = self.get("link_monitor")
            if isinstance(value, bool):
                out["link_monitor"] = value
            else:
                self.issue(("link_monitor",), f"expected true or false, got {describe(value)}")
        return out


def parse_ha(root: Any, file: str) -> tuple[HAConfig | None, list[ConfigIssue]]:
    """Validate and convert the ``ha:`` section of a located YAML document.

    Args:
        root: the whole document as built by `director.config.located.LocatedLoader` (a
            `director.config.located.YamlMap` whose ``"ha"`` value is a mapping).
        file: path of the configuration file, for messages; a relative
            ``authkeys`` path is taken relative to its directory.

    Returns:
        ``(config, issues)``: the `HAConfig` (``None`` when there is any issue)
        and every problem found, located, with fields ``ha.KEY...``.  File-level
        checks only (including loading the authkeys file with
        `ha.auth.load_authkeys`); see `ha.environment.check_ha_environment` for interfaces.
        The node name defaults to `ha.config.default_node_name`.

    Raises:
        TypeError: ``root["ha"]`` is not a mapping (the loader checks that first).
    """
    section = root.get("ha") if isinstance(root, dict) else None
    if not isinstance(section, dict):
        raise TypeError("parse_ha needs a document whose 'ha' value is a mapping")
    parser = _HAParser(root, file)
    config = parser.parse()
    return config, parser.issues
