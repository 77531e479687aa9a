"""The ``bgp:`` section of directord's YAML configuration: validation and conversion to
`ha.bgp.model.BgpConfig`.

`parse_bgp` is called by `director.config.builder` with the located YAML document, the virtual
services built from it and the ``ha:`` section; it checks the section (types, ranges, the rules
between the VIPs, the virtual services, the neighbours and the ``ha:`` section) and returns its
problems as located `ConfigIssue` objects (``FILE:LINE:COL: bgp.FIELD: message``), all of them at
once, and its warnings the same way.  Pure: nothing of the machine is looked at.

The section (the sample ``etc/directord-bgp.yaml`` documents it too)::

    bgp:
      local_as: 65001                 # required, 1..4294967295
      router_id: 10.0.0.11            # an IPv4 address; default: BIRD's choice
      neighbors:                      # required, 1..MAX_NEIGHBORS
        - address: 10.0.0.1           # required, IPv4 or IPv6; unique
          as: 65000                   # required, 1..4294967295
          name: r1                    # default n1, n2... (by position); unique
          hold_time: 3                # seconds, 3..65535
          bfd: true
          password: secret            # TCP MD5 key (RFC 2385)
          source_address: 10.0.0.11   # same family as address
          multihop: 2                 # 1..255
          port: 179
      bfd: {interval: 100ms, multiplier: 3}
      graceful_shutdown_wait: 5s      # 0..600 s
      kernel_table: 221               # not 253, 254, 255
      interface: lo
      speaker: {binary: /usr/sbin/bird, run_dir: /run/directord/bgp}
      vips:                           # required, 1..MAX_VIPS
        - 192.0.2.10                  # an address, or a mapping:
        - address: 192.0.2.11
          min_healthy: 2              # or "50%"
          communities: ["65001:100"]
          large_communities: ["65001:1:2"]
          med: 50
          prepend: 2

Rules between parts of the file: each VIP is the address of at least one virtual service that is
not a fwmark service; no VIP is also an address of the ``ha:`` section's resources (the two
sections may run side by side for different VIPs); each VIP has a neighbour of its address
family (BGP carries IPv4 routes over IPv4 sessions and IPv6 routes over IPv6 sessions here).

Warnings, for each virtual service on a VIP of the section: a scheduler other than ``mh`` (a
router that rehashes a flow to another director must find it on the same real server there:
Maglev hashing, IPVS ``mh``, gives every director the same choice); ``nat`` forwarding (the
reply must pass the director that took the request, and ECMP does not promise it); a
``min_healthy`` count above the service's real servers (the VIP would never be announced).

Facts used here: BGP hold time 0 or at least 3 s (RFC 4271 section 4.2; 0 is not offered); AS
numbers are 32 bits (RFC 6793); communities are two 16-bit halves (RFC 1997), large communities
three 32-bit parts (RFC 8092); kernel routing tables 253, 254, 255 are ``default``, ``main`` and
``local`` (``include/uapi/linux/rtnetlink.h``, ``RT_TABLE_*``); a unix socket path is at most
107 bytes (``sun_path``, unix(7)), which bounds the speaker's ``run_dir`` since BIRD's control
socket is ``RUN_DIR/bird.ctl``; BIRD reads the TCP MD5 ``password`` as a double-quoted string
(BIRD 2 user's guide, "Protocols > BGP > password") and the kernel takes keys of at most 80
bytes (``TCP_MD5SIG_MAXKEYLEN``, ``include/uapi/linux/tcp.h``).
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Sequence
from typing import Any, cast

from director.config.ha import KeyDoc, ifname_problem, parse_duration
from director.config.issues import ConfigIssue, describe, quote
from director.config.located import Path, field_path, locate
from director.model import VirtualService, canonical_ip
from ha.bgp.model import (
    DEFAULT_BFD_INTERVAL_MS,
    DEFAULT_BFD_MULTIPLIER,
    DEFAULT_GRACEFUL_SHUTDOWN_WAIT,
    DEFAULT_HOLD_TIME,
    DEFAULT_KERNEL_TABLE,
    MAX_NEIGHBORS,
    MAX_VIPS,
    BfdSettings,
    BgpConfig,
    MinHealthy,
    Neighbor,
    SpeakerSettings,
    VipAnnouncement,
)
from ha.model import HAConfig

__all__ = [
    "BFD_INTERVAL_MS_RANGE",
    "BFD_KEY_DOCS",
    "BFD_KEYS",
    "BFD_MULTIPLIER_RANGE",
    "GRACEFUL_SHUTDOWN_WAIT_RANGE",
    "HOLD_TIME_RANGE",
    "KEYS",
    "KEY_DOCS",
    "MAX_COMMUNITIES",
    "MAX_PASSWORD",
    "MAX_PREPEND",
    "MAX_SPEAKER_PATH",
    "MULTIHOP_RANGE",
    "NEIGHBOR_KEYS",
    "NEIGHBOR_KEY_DOCS",
    "RESERVED_TABLES",
    "SPEAKER_KEYS",
    "SPEAKER_KEY_DOCS",
    "VIP_KEYS",
    "VIP_KEY_DOCS",
    "parse_bgp",
]

U32_MAX = 0xFFFFFFFF
#: Every key of the ``bgp:`` mapping, of a neighbour, of a VIP mapping, of ``bfd`` and of ``speaker``.
KEYS = (
    "local_as",
    "router_id",
    "neighbors",
    "bfd",
    "graceful_shutdown_wait",
    "kernel_table",
    "interface",
    "speaker",
    "vips",
)
NEIGHBOR_KEYS = ("address", "as", "name", "hold_time", "bfd", "password", "source_address", "multihop", "port")
VIP_KEYS = ("address", "min_healthy", "communities", "large_communities", "med", "prepend")
BFD_KEYS = ("interval", "multiplier")
SPEAKER_KEYS = ("binary", "run_dir")

#: BGP hold time, seconds (RFC 4271 section 4.2: 0 or at least 3; 0, no keepalives, is not offered).
HOLD_TIME_RANGE = (3, 65535)
#: BFD transmit/receive interval, milliseconds, and detection multiplier (RFC 5880: 8 bits).
BFD_INTERVAL_MS_RANGE = (10, 10_000)
BFD_MULTIPLIER_RANGE = (1, 255)
#: Seconds between adding GRACEFUL_SHUTDOWN and withdrawing.
GRACEFUL_SHUTDOWN_WAIT_RANGE = (0.0, 600.0)
#: eBGP multihop TTL.
MULTIHOP_RANGE = (1, 255)
#: Kernel routing tables the VIP routes must not go to: 253 default, 254 main, 255 local
#: (``RT_TABLE_DEFAULT``, ``RT_TABLE_MAIN``, ``RT_TABLE_LOCAL``); 0 is ``RT_TABLE_UNSPEC``.
RESERVED_TABLES = {253: "default", 254: "main", 255: "local"}
#: Longest TCP MD5 key, characters (``TCP_MD5SIG_MAXKEYLEN``).
MAX_PASSWORD = 80
#: Most communities, and most large communities, of one VIP.
MAX_COMMUNITIES = 32
#: Most extra copies of the local AS prepended to the AS path of one VIP.
MAX_PREPEND = 16
#: Longest speaker path, bytes (``PATH_MAX`` is 4096 with its NUL).
MAX_SPEAKER_PATH = 4095
#: Longest unix socket path (``sun_path`` is 108 bytes with its NUL, unix(7)): BIRD's
#: control socket is ``RUN_DIR/bird.ctl``.
_MAX_UNIX_PATH_BYTES = 107
_CONTROL_SOCKET = "bird.ctl"
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")
_PERCENT = re.compile(r"([0-9]{1,3}(?:\.[0-9]{1,6})?)%")
_COMMUNITY = re.compile(r"[0-9]{1,10}(?::[0-9]{1,10})+")

_DEFAULT_SPEAKER = SpeakerSettings()

#: The documentation of every key of `KEYS`, in the order of the reference.
KEY_DOCS: dict[str, KeyDoc] = {
    "local_as": KeyDoc("integer", "required", "This director's AS number (32 bits, RFC 6793)."),
    "router_id": KeyDoc(
        "string",
        "BIRD's choice (the lowest IPv4 address of the director)",
        "The BGP identifier, an IPv4 address (not 0.0.0.0). Give each director its own.",
    ),
    "neighbors": KeyDoc(
        "list of mappings",
        "required",
        "The routers this director opens BGP sessions with, one or more (see the neighbour keys below).",
    ),
    "bfd": KeyDoc(
        "mapping",
        f"interval {DEFAULT_BFD_INTERVAL_MS}ms, multiplier {DEFAULT_BFD_MULTIPLIER}",
        "BFD timers (RFC 5880) of the neighbours with `bfd: true`: a dead peer is detected after "
        "interval x multiplier.",
    ),
    "graceful_shutdown_wait": KeyDoc(
        "time",
        f"{DEFAULT_GRACEFUL_SHUTDOWN_WAIT:g}",
        "Seconds between announcing a VIP with the GRACEFUL_SHUTDOWN community (RFC 8326), which makes "
        "the routers prefer the other directors, and withdrawing it, at a drain or a stop. 0: withdraw at once.",
    ),
    "kernel_table": KeyDoc(
        "integer",
        f"{DEFAULT_KERNEL_TABLE}",
        "The kernel routing table where directord puts one route per VIP it announces; BIRD learns the "
        "table and announces what is there. No rule routes packets with it. Not 253, 254 or 255 "
        "(default, main, local).",
    ),
    "interface": KeyDoc(
        "string",
        f"`{BgpConfig.__dataclass_fields__['interface'].default}`",
        "The interface the VIPs are added to as local addresses (no ARP is answered for them there).",
    ),
    "speaker": KeyDoc(
        "mapping",
        f"binary `{_DEFAULT_SPEAKER.binary}`, run_dir `{_DEFAULT_SPEAKER.run_dir}`",
        "The BIRD 2 that directord runs and supervises (see the speaker keys below).",
    ),
    "vips": KeyDoc(
        "list of strings or mappings",
        "required",
        "The VIPs this director announces, one or more: an address, or a mapping (see the VIP keys below). "
        "Each must be the address of a virtual service (not a fwmark one), must not be an address of the "
        "`ha` section, and needs a neighbour of its address family.",
    ),
}
#: The documentation of the keys of a neighbour (`NEIGHBOR_KEYS`).
NEIGHBOR_KEY_DOCS: dict[str, KeyDoc] = {
    "address": KeyDoc("string", "required", "The router's IP address (IPv4 or IPv6, not link-local); unique."),
    "as": KeyDoc("integer", "required", "The router's AS number (32 bits); `local_as` for iBGP."),
    "name": KeyDoc(
        "string",
        "`n1`, `n2`... (by position)",
        "The session's name in BIRD and in `directord status`: a letter, then letters, digits or `_`, "
        "at most 32 characters; unique.",
    ),
    "hold_time": KeyDoc(
        "integer",
        f"{DEFAULT_HOLD_TIME}",
        "BGP hold time in seconds (RFC 4271); keepalives go every third of it. BFD detects a death faster.",
    ),
    "bfd": KeyDoc("boolean", "`true`", "Run a BFD session with the router (the router must run BFD too)."),
    "password": KeyDoc(
        "string",
        "none",
        'The TCP MD5 signature key (RFC 2385): printable ASCII without `"` or `\\`.',
    ),
    "source_address": KeyDoc(
        "string",
        "the kernel's choice",
        "The local address of the session, of the same family as `address`.",
    ),
    "multihop": KeyDoc(
        "integer",
        "none (a directly connected router)",
        "The TTL of the session's packets, for a router that is not directly connected (eBGP multihop).",
    ),
    "port": KeyDoc("integer", "179", "The router's BGP TCP port (1-65535)."),
}
#: The documentation of the keys of a VIP mapping (`VIP_KEYS`).
VIP_KEY_DOCS: dict[str, KeyDoc] = {
    "address": KeyDoc("string", "required", "The VIP (announced as a /32 or /128 route)."),
    "min_healthy": KeyDoc(
        "integer or string",
        "1",
        "The VIP is announced while each of its virtual services has this many real servers in service: "
        'a count, or a percentage of the service\'s real servers such as `"50%"` (rounded up).',
    ),
    "communities": KeyDoc(
        "list of strings",
        "none",
        'BGP communities (RFC 1997) added to the route, each `"ASN:VALUE"` (quoted: YAML reads some '
        "unquoted pairs as numbers).",
    ),
    "large_communities": KeyDoc(
        "list of strings",
        "none",
        'BGP large communities (RFC 8092) added to the route, each `"ASN:DATA1:DATA2"`, quoted.',
    ),
    "med": KeyDoc("integer", "none", "The MULTI_EXIT_DISC sent with the route (RFC 4271); lower is preferred."),
    "prepend": KeyDoc(
        "integer", "0", "How many more times the local AS is put in the AS path (a longer path is less preferred)."
    ),
}
#: The documentation of the keys of ``bfd`` (`BFD_KEYS`).
BFD_KEY_DOCS: dict[str, KeyDoc] = {
    "interval": KeyDoc(
        "time",
        f"{DEFAULT_BFD_INTERVAL_MS}ms",
        "The BFD transmit and receive interval, kept to the millisecond.",
    ),
    "multiplier": KeyDoc(
        "integer",
        f"{DEFAULT_BFD_MULTIPLIER}",
        "Missed BFD packets in a row that make the peer dead.",
    ),
}
#: The documentation of the keys of ``speaker`` (`SPEAKER_KEYS`).
SPEAKER_KEY_DOCS: dict[str, KeyDoc] = {
    "binary": KeyDoc("string", f"`{_DEFAULT_SPEAKER.binary}`", "Absolute path of the `bird` program (BIRD 2)."),
    "run_dir": KeyDoc(
        "string",
        f"`{_DEFAULT_SPEAKER.run_dir}`",
        f"Absolute path of the directory of BIRD's configuration and control socket (`{_CONTROL_SOCKET}`); "
        "created mode 0700.",
    ),
}

_ECMP_SCHEDULER = "mh"
_WARN_SCHEDULER = (
    "flows a router rehashes to another director land on another real server; use mh (Maglev hashing) for active-active"
)
# ip_vs_mh.c: a destination set to weight 0 keeps its last weight, so its slots in the lookup
# table stay and other flows do not move; without mh-fallback a new flow hashed to it is dropped
_WARN_MH_FALLBACK = (
    "a real server at weight 0 keeps its slots in mh's table, so a new flow hashed to it is dropped; "
    "add mh-fallback to send those flows to the next real server"
)
# ip_vs_mh.c builds the table from the destinations in list order; a destination deleted and added
# again goes elsewhere in the list, so directors with another history build another table
_WARN_MH_REMOVE = (
    "deleting and re-adding a real server rebuilds mh's table in another order than on the other "
    "directors, so they choose other real servers for some flows; use on_failure: quiescent"
)
_WARN_NAT = (
    "replies of a NAT service must pass the director that took the request; with ECMP they may not; use dr or tun"
)


def _vip_problem(address: str) -> str | None:
    parsed = ipaddress.ip_address(address)
    if parsed.is_unspecified or parsed.is_multicast or parsed.is_loopback:
        return f"{address} cannot be announced (unspecified, multicast or loopback)"
    return None


class _BgpParser:
    """Checks and converts the ``bgp:`` mapping of one located document; collects every issue."""

    def __init__(self, root: Any, file: str) -> None:
        self.root = root
        self.file = file
        self.section: dict[Any, Any] = root["bgp"]
        self.issues: list[ConfigIssue] = []
        self.warnings: list[ConfigIssue] = []
        #: the address families of the neighbours whose address is valid, whatever else is wrong
        #: with them (so that a VIP is not also said to lack a neighbour of its family)
        self.families: set[int] = set()

    # -- issue and type helpers

    def _located(self, path: Path, message: str, at_key: bool) -> ConfigIssue:
        line, column = locate(self.root, path, at_key)
        return ConfigIssue(self.file, line, column, field_path(path), message)

    def issue(self, rel: Path, message: str, at_key: bool = False) -> None:
        self.issues.append(self._located(("bgp",) + rel, message, at_key))

    def warn(self, path: Path, message: str) -> None:
        """A warning at ``path``, a path from the top of the document (not under ``bgp``)."""
        self.warnings.append(self._located(path, message, False))

    def unknown_keys(self, mapping: dict[Any, Any], allowed: tuple[str, ...], rel: Path) -> None:
        for key in mapping:
            if isinstance(key, str) and key in allowed:
                continue
            close = difflib.get_close_matches(str(key), allowed, n=1) if isinstance(key, str) else []
            hint = f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(allowed)}"
            self.issue(rel + (key,), f"unknown key {quote(str(key))}{hint}", at_key=True)

    def mapping(self, value: Any, rel: Path) -> dict[Any, Any] | None:
        if isinstance(value, dict):
            return value
        self.issue(rel, f"expected a mapping, got {describe(value)}")
        return None

    def string(self, value: Any, rel: Path) -> str | None:
        if isinstance(value, str):
            return value
        self.issue(rel, f"expected a string, got {describe(value)}")
        return None

    def integer(self, value: Any, rel: Path, low: int, high: int, what: str) -> int | None:
        if not isinstance(value, int) or isinstance(value, bool):
            self.issue(rel, f"expected an integer, got {describe(value)}")
            return None
        if not low <= value <= high:
            self.issue(rel, f"{what} {value} is out of range {low}..{high}")
            return None
        return value

    def boolean(self, value: Any, rel: Path) -> bool | None:
        if isinstance(value, bool):
            return value
        self.issue(rel, f"expected true or false, got {describe(value)}")
        return None

    def seq(self, value: Any, rel: Path, what: str, most: int) -> list[Any] | None:
        """A list of 1..``most`` items (a longer one is refused whole, unread)."""
        if not isinstance(value, list):
            self.issue(rel, f"expected a list, got {describe(value)}")
            return None
        if not value:
            self.issue(rel, f"must list at least one {what}")
            return None
        if len(value) > most:
            self.issue(rel, f"{len(value)} {what}s; at most {most}")
            return None
        return value

    def ip(self, value: Any, rel: Path, what: str) -> str | None:
        """Canonical IPv4 or IPv6 address text (unscoped)."""
        text = self.string(value, rel)
        if text is None:
            return None
        try:
            if "%" in text:
                raise ValueError(text)
            return canonical_ip(text)
        except ValueError:
            self.issue(rel, f"{what} is not an IP address: {quote(text)}")
            return None

    def duration(self, value: Any, rel: Path, low: float, high: float) -> float | None:
        try:
            seconds = parse_duration(value)
        except (TypeError, ValueError) as err:
            self.issue(rel, str(err))
            return None
        if not low <= seconds <= high:
            self.issue(rel, f"must be {low:g}..{high:g} seconds, got {seconds:g} s")
            return None
        return seconds

    # -- the whole section

    def parse(self, services: Sequence[tuple[int, VirtualService]], ha: HAConfig | None) -> BgpConfig | None:
        section = self.section
        self.unknown_keys(section, KEYS, ())
        local_as = None
        if section.get("local_as") is None:
            self.issue(("local_as",), "missing required key 'local_as' (this director's AS number)")
        else:
            local_as = self.integer(section["local_as"], ("local_as",), 1, U32_MAX, "AS number")
        router_id = self.router_id()
        neighbors = self.neighbors()
        bfd = self.bfd()
        wait = DEFAULT_GRACEFUL_SHUTDOWN_WAIT
        if section.get("graceful_shutdown_wait") is not None:
            low, high = GRACEFUL_SHUTDOWN_WAIT_RANGE
            got = self.duration(section["graceful_shutdown_wait"], ("graceful_shutdown_wait",), low, high)
            wait = wait if got is None else got
        table = self.kernel_table()
        interface = self.interface()
        speaker = self.speaker()
        vips = self.vips(ha)
        if vips:
            self.service_warnings(vips, services)
        if self.issues or local_as is None or not neighbors or not vips:
            return None
        return BgpConfig(
            local_as=local_as,
            neighbors=tuple(neighbors),
            vips=tuple(vip for vip, _ in vips),
            router_id=router_id,
            bfd=bfd,
            graceful_shutdown_wait=wait,
            kernel_table=table,
            interface=interface,
            speaker=speaker,
        )

    def router_id(self) -> str | None:
        value = self.section.get("router_id")
        if value is None:
            return None
        text = self.string(value, ("router_id",))
        if text is None:
            return None
        try:
            address = ipaddress.IPv4Address(text)
        except ValueError:
            self.issue(("router_id",), f"a router id is an IPv4 address, got {quote(text)}")
            return None
        if int(address) == 0:
            self.issue(("router_id",), "a router id must not be 0.0.0.0")
            return None
        return str(address)

    def kernel_table(self) -> int:
        value = self.section.get("kernel_table")
        if value is None:
            return DEFAULT_KERNEL_TABLE
        table = self.integer(value, ("kernel_table",), 1, U32_MAX, "table")
        if table in RESERVED_TABLES:
            self.issue(
                ("kernel_table",),
                f"table {table} is the kernel's {RESERVED_TABLES[table]} table; choose another "
                f"(default {DEFAULT_KERNEL_TABLE})",
            )
            return DEFAULT_KERNEL_TABLE
        return DEFAULT_KERNEL_TABLE if table is None else table

    def interface(self) -> str:
        default = cast(str, BgpConfig.__dataclass_fields__["interface"].default)  # a Field's default is untyped
        value = self.section.get("interface")
        if value is None:
            return default
        name = self.string(value, ("interface",))
        if name is None:
            return default
        problem = ifname_problem(name)
        if problem is not None:
            self.issue(("interface",), problem)
            return default
        return name

    def bfd(self) -> BfdSettings:
        value = self.section.get("bfd")
        if value is None:
            return BfdSettings()
        item = self.mapping(value, ("bfd",))
        if item is None:
            return BfdSettings()
        self.unknown_keys(item, BFD_KEYS, ("bfd",))
        interval = DEFAULT_BFD_INTERVAL_MS
        if item.get("interval") is not None:
            low, high = BFD_INTERVAL_MS_RANGE
            seconds = self.duration(item["interval"], ("bfd", "interval"), low / 1000, high / 1000)
            interval = interval if seconds is None else round(seconds * 1000)
        multiplier = DEFAULT_BFD_MULTIPLIER
        if item.get("multiplier") is not None:
            low, high = BFD_MULTIPLIER_RANGE
            got = self.integer(item["multiplier"], ("bfd", "multiplier"), low, high, "multiplier")
            multiplier = multiplier if got is None else got
        return BfdSettings(interval_ms=interval, multiplier=multiplier)

    def speaker(self) -> SpeakerSettings:
        value = self.section.get("speaker")
        if value is None:
            return SpeakerSettings()
        item = self.mapping(value, ("speaker",))
        if item is None:
            return SpeakerSettings()
        self.unknown_keys(item, SPEAKER_KEYS, ("speaker",))
        paths = {"binary": _DEFAULT_SPEAKER.binary, "run_dir": _DEFAULT_SPEAKER.run_dir}
        for key in SPEAKER_KEYS:
            if item.get(key) is None:
                continue
            rel = ("speaker", key)
            text = self.string(item[key], rel)
            if text is None:
                continue
            if not text.startswith("/") or "\0" in text or "\n" in text or len(os.fsencode(text)) > MAX_SPEAKER_PATH:
                self.issue(
                    rel,
                    f"must be an absolute path of at most {MAX_SPEAKER_PATH} bytes, without NUL or newline, "
                    f"got {quote(text)}",
                )
                continue
            if key == "run_dir":
                socket_path = os.path.join(text, _CONTROL_SOCKET)
                if len(os.fsencode(socket_path)) > _MAX_UNIX_PATH_BYTES:
                    self.issue(
                        rel,
                        f"BIRD's control socket {quote(socket_path)} would be longer than "
                        f"{_MAX_UNIX_PATH_BYTES} bytes (the longest unix socket path): choose a shorter run_dir",
                    )
                    continue
            paths[key] = text
        return SpeakerSettings(binary=paths["binary"], run_dir=paths["run_dir"])

    # -- neighbours

    def neighbors(self) -> list[Neighbor]:
        value = self.section.get("neighbors")
        if value is None:
            self.issue(("neighbors",), "missing required key 'neighbors' (the routers to open sessions with)")
            return []
        items = self.seq(value, ("neighbors",), "neighbour", MAX_NEIGHBORS)
        if items is None:
            return []
        found: list[Neighbor] = []
        addresses: dict[str, int] = {}
        names: dict[str, int] = {}
        for index, item in enumerate(items):
            neighbor = self.neighbor(index, item)
            if neighbor is None:
                continue
            rel = ("neighbors", index)
            if neighbor.address in addresses:
                self.issue(
                    rel + ("address",),
                    f"duplicate neighbour {neighbor.address} (same as neighbors[{addresses[neighbor.address]}])",
                )
                continue
            if neighbor.name in names:
                where = rel + ("name",) if isinstance(item.get("name"), str) else rel
                first = names[neighbor.name]
                self.issue(where, f"duplicate neighbour name {quote(neighbor.name)} (same as neighbors[{first}])")
                continue
            addresses[neighbor.address] = index
            names[neighbor.name] = index
            found.append(neighbor)
        return found

    def neighbor(self, index: int, value: Any) -> Neighbor | None:
        rel: Path = ("neighbors", index)
        item = self.mapping(value, rel)
        if item is None:
            return None
        self.unknown_keys(item, NEIGHBOR_KEYS, rel)
        before = len(self.issues)
        address = None
        if item.get("address") is None:
            self.issue(rel + ("address",), "missing required key 'address' (the router's IP address)")
        else:
            address = self.ip(item["address"], rel + ("address",), "address")
            if address is not None:
                parsed = ipaddress.ip_address(address)
                self.families.add(parsed.version)
                if parsed.is_unspecified or parsed.is_multicast:
                    self.issue(rel + ("address",), f"{address} cannot be a neighbour (unspecified or multicast)")
                elif parsed.version == 6 and parsed.is_link_local:
                    self.issue(
                        rel + ("address",),
                        f"{address} is link-local: a session to it needs an interface, which is not supported; "
                        "use the router's global address",
                    )
        remote_as = None
        if item.get("as") is None:
            self.issue(rel + ("as",), "missing required key 'as' (the router's AS number)")
        else:
            remote_as = self.integer(item["as"], rel + ("as",), 1, U32_MAX, "AS number")
        name = f"n{index + 1}"
        if item.get("name") is not None:
            text = self.string(item["name"], rel + ("name",))
            if text is not None and not _NAME.fullmatch(text):
                self.issue(
                    rel + ("name",),
                    f"a neighbour name is a letter, then letters, digits or '_', at most 32 characters; "
                    f"got {quote(text)}",
                )
            elif text is not None:
                name = text
        hold_time = DEFAULT_HOLD_TIME
        if item.get("hold_time") is not None:
            low, high = HOLD_TIME_RANGE
            got = self.integer(item["hold_time"], rel + ("hold_time",), low, high, "hold time")
            hold_time = hold_time if got is None else got
        bfd = True
        if item.get("bfd") is not None:
            bfd = bool(self.boolean(item["bfd"], rel + ("bfd",)))
        password = None
        if item.get("password") is not None:
            password = self.password(item["password"], rel + ("password",))
        source = None
        if item.get("source_address") is not None:
            source = self.ip(item["source_address"], rel + ("source_address",), "source_address")
            if source is not None and address is not None:
                if ipaddress.ip_address(source).version != ipaddress.ip_address(address).version:
                    self.issue(
                        rel + ("source_address",),
                        f"source_address {source} is not of the family of the neighbour's address {address}",
                    )
        multihop = None
        if item.get("multihop") is not None:
            low, high = MULTIHOP_RANGE
            multihop = self.integer(item["multihop"], rel + ("multihop",), low, high, "multihop TTL")
        port = 179
        if item.get("port") is not None:
            port = self.integer(item["port"], rel + ("port",), 1, 65535, "port") or port
        if len(self.issues) != before or address is None or remote_as is None:
            return None
        return Neighbor(
            address=address,
            remote_as=remote_as,
            name=name,
            hold_time=hold_time,
            bfd=bfd,
            password=password,
            source_address=source,
            multihop=multihop,
            port=port,
        )

    def password(self, value: Any, rel: Path) -> str | None:
        text = self.string(value, rel)
        if text is None:
            return None
        if not 1 <= len(text) <= MAX_PASSWORD:
            self.issue(rel, f"a TCP MD5 password is 1..{MAX_PASSWORD} characters, got {len(text)}")
            return None
        bad = [c for c in text if not " " <= c <= "~" or c in '"\\']
        if bad:
            self.issue(rel, f"a password is printable ASCII without '\"' or '\\'; it holds {quote(bad[0])}")
            return None
        return text

    # -- VIPs

    def vips(self, ha: HAConfig | None) -> list[tuple[VipAnnouncement, int]]:
        """The VIPs with their index in ``vips``."""
        value = self.section.get("vips")
        if value is None:
            self.issue(("vips",), "missing required key 'vips' (the addresses to announce)")
            return []
        items = self.seq(value, ("vips",), "VIP", MAX_VIPS)
        if items is None:
            return []
        service_addresses = self.service_addresses()
        ha_addresses = {
            resource.address: group.owner
            for group in (ha.groups if ha is not None else ())
            for resource in group.resources
        }
        found: list[tuple[VipAnnouncement, int]] = []
        seen: dict[str, int] = {}
        for index, item in enumerate(items):
            rel: Path = ("vips", index)
            at_address = rel + ("address",) if isinstance(item, dict) else rel
            vip = self.vip(item, rel)
            if vip is None:
                continue
            address = vip.address
            if address in seen:
                self.issue(at_address, f"duplicate VIP {address} (same as vips[{seen[address]}])")
                continue
            seen[address] = index
            if address not in service_addresses:
                self.issue(
                    at_address,
                    f"VIP {address} is the address of no virtual service (fwmark services do not count)",
                )
            if address in ha_addresses:
                self.issue(
                    at_address,
                    f"VIP {address} is in both ha and bgp (a resource of {ha_addresses[address]} in ha.resources): "
                    "a VIP is either moved between two directors or announced by all of them",
                )
            if self.families and vip.version not in self.families:
                family = "IPv6" if vip.version == 6 else "IPv4"
                self.issue(at_address, f"VIP {address} is {family} but no neighbour is: it could not be announced")
            found.append((vip, index))
        return found

    def service_addresses(self) -> set[str]:
        """The canonical addresses of the file's address (not fwmark) virtual services, read from
        the document itself, so that a service with another problem still counts here."""
        raw = self.root.get("virtual_services")
        found: set[str] = set()
        if not isinstance(raw, list):
            return found
        for entry in raw:
            if isinstance(entry, dict) and entry.get("fwmark") is None and isinstance(entry.get("address"), str):
                try:
                    if "%" not in entry["address"]:
                        found.add(canonical_ip(entry["address"]))
                except ValueError:
                    continue
        return found

    def vip(self, item: Any, rel: Path) -> VipAnnouncement | None:
        if isinstance(item, str):
            address = self.ip(item, rel, "VIP")
            if address is None:
                return None
            problem = _vip_problem(address)
            if problem is not None:
                self.issue(rel, problem)
                return None
            return VipAnnouncement(address=address)
        if not isinstance(item, dict):
            self.issue(rel, f"expected an address or a mapping (address, min_healthy...), got {describe(item)}")
            return None
        self.unknown_keys(item, VIP_KEYS, rel)
        before = len(self.issues)
        address = None
        if item.get("address") is None:
            self.issue(rel + ("address",), "missing required key 'address' (the VIP)")
        else:
            address = self.ip(item["address"], rel + ("address",), "VIP")
            problem = _vip_problem(address) if address is not None else None
            if problem is not None:
                self.issue(rel + ("address",), problem)
        min_healthy = MinHealthy()
        if item.get("min_healthy") is not None:
            min_healthy = self.min_healthy(item["min_healthy"], rel + ("min_healthy",)) or min_healthy
        communities = self.communities(item.get("communities"), rel + ("communities",), 2, 0xFFFF)
        large = self.communities(item.get("large_communities"), rel + ("large_communities",), 3, U32_MAX)
        med = None
        if item.get("med") is not None:
            med = self.integer(item["med"], rel + ("med",), 0, U32_MAX, "MED")
        prepend = 0
        if item.get("prepend") is not None:
            prepend = self.integer(item["prepend"], rel + ("prepend",), 0, MAX_PREPEND, "prepend") or 0
        if len(self.issues) != before or address is None:
            return None
        return VipAnnouncement(
            address=address,
            communities=tuple((c[0], c[1]) for c in communities),
            large_communities=tuple((c[0], c[1], c[2]) for c in large),
            med=med,
            prepend=prepend,
            min_healthy=min_healthy,
        )

    def min_healthy(self, value: Any, rel: Path) -> MinHealthy | None:
        if isinstance(value, int) and not isinstance(value, bool):
            count = self.integer(value, rel, 1, U32_MAX, "min_healthy")
            return None if count is None else MinHealthy(count=count)
        if isinstance(value, str):
            match = _PERCENT.fullmatch(value.strip()) if len(value) <= 16 else None
            if match is None:
                self.issue(rel, f'expected a count (2) or a percentage ("50%"), got {quote(value)}')
                return None
            percent = float(match.group(1))
            if not 1 <= percent <= 100:
                self.issue(rel, f"a percentage must be 1..100%, got {quote(value)}")
                return None
            return MinHealthy(count=None, percent=percent)
        self.issue(rel, f'expected a count (2) or a percentage ("50%"), got {describe(value)}')
        return None

    def communities(self, value: Any, rel: Path, parts: int, high: int) -> list[tuple[int, ...]]:
        """``"A:B"`` (``parts`` 2) or ``"A:B:C"`` (3) strings, each part 0..``high``."""
        if value is None:
            return []
        if not isinstance(value, list):
            self.issue(rel, f"expected a list, got {describe(value)}")
            return []
        if len(value) > MAX_COMMUNITIES:
            self.issue(rel, f"{len(value)} communities; at most {MAX_COMMUNITIES}")
            return []
        shape = ":".join(("ASN", "VALUE") if parts == 2 else ("ASN", "DATA1", "DATA2"))
        found: list[tuple[int, ...]] = []
        for index, item in enumerate(value):
            where = rel + (index,)
            if isinstance(item, int) and not isinstance(item, bool):
                self.issue(
                    where,
                    f"expected a string '{shape}', got the integer {item}: quote it (YAML 1.1 reads some "
                    "unquoted A:B values as base-60 numbers)",
                )
                continue
            text = self.string(item, where)
            if text is None:
                continue
            numbers = [int(part) for part in text.split(":")] if _COMMUNITY.fullmatch(text) else []
            if len(numbers) != parts or any(n > high for n in numbers):
                self.issue(where, f"expected '{shape}' with each part 0..{high}, got {quote(text)}")
                continue
            found.append(tuple(numbers))
        return found

    # -- warnings about the virtual services of the VIPs

    def service_warnings(
        self, vips: list[tuple[VipAnnouncement, int]], services: Sequence[tuple[int, VirtualService]]
    ) -> None:
        announced = {vip.address: vip for vip, _ in vips}
        for index, service in services:
            vip = announced.get(service.key.address) if not service.key.fwmark else None
            if vip is None:
                continue
            path: Path = ("virtual_services", index)
            what = f"virtual service {service.name} on BGP VIP {vip.address}"
            if service.scheduler != _ECMP_SCHEDULER:
                self.warn(path + ("scheduler",), f"{what} uses scheduler {service.scheduler}: {_WARN_SCHEDULER}")
            else:
                if "mh-fallback" not in service.scheduler_flags:
                    self.warn(path + ("scheduler_flags",), f"{what} has no mh-fallback: {_WARN_MH_FALLBACK}")
                if service.on_failure == "remove":
                    self.warn(path + ("on_failure",), f"{what} removes failed real servers: {_WARN_MH_REMOVE}")
            if service.forwarding == "nat":
                self.warn(path + ("forwarding",), f"{what} forwards with nat: {_WARN_NAT}")
            else:
                for j, server in enumerate(service.real_servers):
                    if server.forwarding == "nat":
                        self.warn(
                            path + ("real_servers", j, "forwarding"),
                            f"real server {server.address} of {what} forwards with nat: {_WARN_NAT}",
                        )
            total = len(service.real_servers)
            if vip.min_healthy.needed(total) > total:
                self.warn(
                    path,
                    f"{what} has {total} real servers, fewer than the VIP's min_healthy "
                    f"{vip.min_healthy.text()}: the VIP is never announced",
                )


def parse_bgp(
    root: Any, file: str, services: Sequence[tuple[int, VirtualService]], ha: HAConfig | None
) -> tuple[BgpConfig | None, list[ConfigIssue], list[ConfigIssue]]:
    """Validate and convert the ``bgp:`` section of a located YAML document.

    Args:
        root: the whole document as built by `director.config.located.LocatedLoader` (a
            `director.config.located.YamlMap` whose ``"bgp"`` value is a mapping).
        file: path of the configuration file, for messages.
        services: the virtual services built from the document, each with its index in
            ``virtual_services`` (for the warnings' locations).
        ha: the ``ha:`` section as built, or None (absent or invalid): its resource addresses
            cannot be VIPs of this section.

    Returns:
        ``(config, issues, warnings)``: the `BgpConfig` (None when there is any issue), every
        problem found and every warning, located, with fields ``bgp.KEY...`` (warnings are about
        ``virtual_services[N]...``).  Never raises for bad input; bounded by `MAX_NEIGHBORS`,
        `MAX_VIPS` and `MAX_COMMUNITIES` (a longer list is one issue, its items unread).

    Raises:
        TypeError: ``root["bgp"]`` is not a mapping (the builder checks that first).
    """
    section = root.get("bgp") if isinstance(root, dict) else None
    if not isinstance(section, dict):
        raise TypeError("parse_bgp needs a document whose 'bgp' value is a mapping")
    parser = _BgpParser(root, file)
    config = parser.parse(services, ha)
    return config, parser.issues, parser.warnings
