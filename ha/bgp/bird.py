"""BIRD 2's configuration for a director, rendered from the ``bgp:`` section.  Pure.

What the file makes BIRD do (BIRD 2 User's Guide, chapters "Protocols" and "Filters"):

* ``protocol kernel`` with ``learn`` reads the kernel routing table `BgpConfig.kernel_table`
  into BIRD's table ``directord_vips4`` (``directord_vips6``).  BIRD hears the kernel's route
  notifications at once, so a route directord adds or removes over netlink is announced or
  withdrawn without a command.  Only routes of directord's route protocols
  (`ROUTE_PROTO_ANNOUNCE`, `ROUTE_PROTO_GRACEFUL_SHUTDOWN`, BIRD's ``krt_source``) and of the
  configured VIPs are imported; ``export none``: BIRD never writes the kernel's tables.
* one ``protocol bgp`` per neighbour, importing nothing (a director needs no route from its
  routers) and exporting the learned VIP routes through ``directord_export4``/``6``, which adds
  each VIP's communities, large communities, MED and AS-path prepends, and for a route of
  `ROUTE_PROTO_GRACEFUL_SHUTDOWN` the GRACEFUL_SHUTDOWN community (RFC 8326 section 4) and
  LOCAL_PREF 0 (what RFC 8326 asks of an iBGP speaker; BIRD drops LOCAL_PREF on eBGP sessions).
  ``graceful restart off``: a router must never keep a director's routes after its session is
  gone.  ``next hop self``: the routers forward to this director.
* ``protocol bfd`` with the section's interval and multiplier, for the neighbours with ``bfd``
  (RFC 5880): a dead director is withdrawn after interval x multiplier.
* the timers that make a lost session come back fast: ``connect delay time 1`` and
  ``connect retry time 2`` (BIRD's defaults are 5 s and 120 s), ``error wait time 1, 30``.

Every value written comes from the validated model (numbers, canonical addresses, names of
``[A-Za-z][A-Za-z0-9_]*``, a password without ``"`` or ``\\``); `render_bird_config` checks the
strings once more, so no value can end a string or a statement early.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from ha.bgp.model import (
    GRACEFUL_SHUTDOWN,
    ROUTE_PROTO_ANNOUNCE,
    ROUTE_PROTO_GRACEFUL_SHUTDOWN,
    BgpConfig,
    Neighbor,
    VipAnnouncement,
)

__all__ = ["BIRD_TABLES", "UnsafeValueError", "protocol_name", "render_bird_config"]

#: BIRD's routing table of the VIP routes, per IP version.
BIRD_TABLES = {4: "directord_vips4", 6: "directord_vips6"}
#: Prefix of the BGP protocols' names in BIRD (``bgp_`` + the neighbour's name).
_BGP_PREFIX = "bgp_"
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")
_PASSWORD = re.compile(r"[ !#-\[\]-~]{1,80}")  # printable ASCII without '"' and '\'


class UnsafeValueError(ValueError):
    """A value of the model cannot be written into BIRD's configuration as it is."""


def protocol_name(neighbor: Neighbor) -> str:
    """The name of ``neighbor``'s BGP protocol in BIRD: ``"bgp_" + neighbor.name``."""
    return _BGP_PREFIX + neighbor.name


def _address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise UnsafeValueError(f"not an IP address: {text!r}") from None


def _name(text: str) -> str:
    if not _NAME.fullmatch(text):
        raise UnsafeValueError(f"not a BIRD protocol name: {text!r}")
    return text


def _password(text: str) -> str:
    if not _PASSWORD.fullmatch(text):
        raise UnsafeValueError("a BGP password must be 1-80 printable ASCII characters without '\"' or '\\'")
    return text


def _u16(n: int) -> int:
    if not 0 <= n <= 0xFFFF:
        raise UnsafeValueError(f"not a 16-bit number: {n}")
    return n


def _u32(n: int) -> int:
    if not 0 <= n <= 0xFFFFFFFF:
        raise UnsafeValueError(f"not a 32-bit number: {n}")
    return n


def _vip_block(vip: VipAnnouncement, local_as: int) -> list[str]:
    """The export filter's statements for one VIP: ``if net = PREFIX then { ...; accept; }``."""
    body: list[str] = []
    for a, b in vip.communities:
        body.append(f"bgp_community.add(({_u16(a)}, {_u16(b)}));")
    for a, b, c in vip.large_communities:
        body.append(f"bgp_large_community.add(({_u32(a)}, {_u32(b)}, {_u32(c)}));")
    if vip.med is not None:
        body.append(f"bgp_med = {_u32(vip.med)};")
    if not 0 <= vip.prepend <= 16:
        raise UnsafeValueError(f"prepend out of 0-16: {vip.prepend}")
    body.extend(f"bgp_path.prepend({_u32(local_as)});" for _ in range(vip.prepend))
    body.append(
        f"if krt_source = {ROUTE_PROTO_GRACEFUL_SHUTDOWN} then {{ "
        f"bgp_community.add(({GRACEFUL_SHUTDOWN[0]}, {GRACEFUL_SHUTDOWN[1]})); bgp_local_pref = 0; }}"
    )
    body.append("accept;")
    prefix = f"{_address(vip.address)}/{32 if vip.version == 4 else 128}"
    return [f"  if net = {prefix} then {{", *(f"    {line}" for line in body), "  }"]


def _filters(config: BgpConfig, versions: Iterable[int]) -> list[str]:
    out: list[str] = []
    for version in versions:
        vips = [v for v in config.vips if v.version == version]
        prefixes = ", ".join(v.prefix for v in vips)
        out += [
            f"filter directord_import{version} {{",
            f"  if krt_source != {ROUTE_PROTO_ANNOUNCE} && krt_source != {ROUTE_PROTO_GRACEFUL_SHUTDOWN} then reject;",
            f"  if net ~ [ {prefixes} ] then accept;",
            "  reject;",
            "}",
            "",
            f"filter directord_export{version} {{",
            f"  if krt_source != {ROUTE_PROTO_ANNOUNCE} && krt_source != {ROUTE_PROTO_GRACEFUL_SHUTDOWN} then reject;",
        ]
        for vip in vips:
            out += _vip_block(vip, config.local_as)
        out += ["  reject;", "}", ""]
    return out


def _neighbor_block(config: BgpConfig, n: Neighbor) -> list[str]:
    version = n.version
    local = f"local {_address(n.source_address)} as" if n.source_address else "local as"
    lines = [
        f"protocol bgp {protocol_name(n)} {{",
        f"  {local} {_u32(config.local_as)};",
        f"  neighbor {_address(n.address)} port {_u16(n.port)} as {_u32(n.remote_as)};",
        f"  hold time {n.hold_time};",
        f"  keepalive time {max(1, n.hold_time // 3)};",
        "  connect delay time 1;",
        "  connect retry time 2;",
        "  error wait time 1, 30;",
        "  graceful restart off;",
    ]
    if n.multihop is not None:
        lines.append(f"  multihop {n.multihop};")
    else:
        lines.append("  direct;")
    if n.bfd:
        lines.append("  bfd on;")
    if n.password is not None:
        lines.append(f'  password "{_password(n.password)}";')
    lines += [
        f"  ipv{version} {{",
        f"    table {BIRD_TABLES[version]};",
        "    import none;",
        f"    export filter directord_export{version};",
        "    next hop self;",
        "  };",
        "}",
        "",
    ]
    return lines


def render_bird_config(config: BgpConfig, *, source: str = "the bgp section") -> str:
    """BIRD 2's configuration file for ``config``, as text (lines end with ``\\n``).

    ``source`` names where the section came from (the configuration file's path), for the
    file's first comment line.  The VIPs of a version with no neighbour of that version are
    left out (the configuration loader refuses such a file: an IPv6 VIP needs an IPv6
    neighbour).

    Raises:
        UnsafeValueError: a name, address, password or number of ``config`` that the
            configuration loader should have refused.
    """
    for address in [n.address for n in config.neighbors] + [v.address for v in config.vips]:
        _address(address)  # before anything asks an address for its version
    versions = sorted({n.version for n in config.neighbors} & {v.version for v in config.vips})
    first = source.replace("\n", " ").replace("\r", " ")[:200]
    lines = [
        f"# Written by directord from {first}; rewritten at every start: do not edit.",
        "log stderr all;",
    ]
    if config.router_id is not None:
        if ipaddress.ip_address(config.router_id).version != 4:
            raise UnsafeValueError(f"a router id is an IPv4 address: {config.router_id!r}")
        lines.append(f"router id {_address(config.router_id)};")
    lines.append("")
    for version in versions:
        lines.append(f"ipv{version} table {BIRD_TABLES[version]};")
    lines += ["", "protocol device {", "  scan time 10;", "}", ""]
    lines += _filters(config, versions)
    for version in versions:
        lines += [
            f"protocol kernel directord_kernel{version} {{",
            f"  kernel table {_u32(config.kernel_table)};",
            "  learn;",
            "  scan time 10;",
            f"  ipv{version} {{",
            f"    table {BIRD_TABLES[version]};",
            f"    import filter directord_import{version};",
            "    export none;",
            "  };",
            "}",
            "",
        ]
    if any(n.bfd for n in config.neighbors):
        timers = f"interval {config.bfd.interval_ms} ms; multiplier {config.bfd.multiplier};"
        lines += [
            "protocol bfd directord_bfd {",
            f'  interface "*" {{ {timers} }};',
            f"  multihop {{ {timers} }};",
            "}",
            "",
        ]
    for n in config.neighbors:
        if n.version in versions:
            _name(n.name)
            lines += _neighbor_block(config, n)
    return "\n".join(lines).rstrip("\n") + "\n"
