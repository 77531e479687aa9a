"""The ``bgp:`` section of the configuration, as frozen dataclasses.  Pure.

Built by `director.config.bgp` from the YAML file (located errors are its job); read by the
BIRD configuration writer (`ha.bgp.bird`), the announcement policy (`ha.bgp.policy`) and the
BGP service.  Times are in seconds unless a name says ``_ms`` (milliseconds).

How directord tells BIRD what to announce: each VIP it announces is a route
``VIP/32`` (``/128``) ``dev lo`` in the kernel routing table `BgpConfig.kernel_table`, with the
route protocol (``rtm_protocol``, BIRD's ``krt_source``) `ROUTE_PROTO_ANNOUNCE`, or
`ROUTE_PROTO_GRACEFUL_SHUTDOWN` while the RFC 8326 GRACEFUL_SHUTDOWN community is to be sent
with it.  BIRD's ``kernel`` protocol learns that table (``learn``) and its BGP protocols export
what it learned.  No ``ip rule`` points at the table, so it routes no packet.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_BFD_INTERVAL_MS",
    "DEFAULT_BFD_MULTIPLIER",
    "DEFAULT_GRACEFUL_SHUTDOWN_WAIT",
    "DEFAULT_HOLD_TIME",
    "DEFAULT_KERNEL_TABLE",
    "GRACEFUL_SHUTDOWN",
    "MAX_NEIGHBORS",
    "MAX_VIPS",
    "ROUTE_PROTO_ANNOUNCE",
    "ROUTE_PROTO_GRACEFUL_SHUTDOWN",
    "BfdSettings",
    "BgpConfig",
    "MinHealthy",
    "Neighbor",
    "SpeakerSettings",
    "VipAnnouncement",
]

#: RFC 8326, section 4: the well-known community GRACEFUL_SHUTDOWN (0xFFFF0000), as (ASN, value).
GRACEFUL_SHUTDOWN = (65535, 0)
#: ``rtm_protocol`` of a VIP route BIRD announces as it is (BIRD's ``krt_source``).  The kernel's
#: own values are 0-4 and registered ones stay under 200 (``/etc/iproute2/rt_protos``).
ROUTE_PROTO_ANNOUNCE = 0xDD
#: ``rtm_protocol`` of a VIP route BIRD announces with GRACEFUL_SHUTDOWN added.
ROUTE_PROTO_GRACEFUL_SHUTDOWN = 0xDE
#: The kernel routing table directord's VIP routes live in (no ``ip rule`` uses it).
DEFAULT_KERNEL_TABLE = 221
#: BGP hold time in seconds (RFC 4271 section 4.2: 0 or at least 3); BFD detects faster.
DEFAULT_HOLD_TIME = 3
#: BFD (RFC 5880) transmit and receive interval, milliseconds, and detection multiplier:
#: a dead director is detected after interval x multiplier (300 ms).
DEFAULT_BFD_INTERVAL_MS = 100
DEFAULT_BFD_MULTIPLIER = 3
#: Seconds between sending GRACEFUL_SHUTDOWN and withdrawing, at a drain or a stop.
DEFAULT_GRACEFUL_SHUTDOWN_WAIT = 5.0
#: Bounds on the section, so that a careless file cannot make a huge BIRD configuration.
MAX_NEIGHBORS = 64
MAX_VIPS = 4096


@dataclass(frozen=True)
class MinHealthy:
    """How many real servers of each of a VIP's virtual services must be in service for the VIP
    to be announced: ``count`` real servers, or ``percent`` of the service's real servers
    (rounded up, at least 1).  Exactly one is set."""

    count: int | None = 1
    percent: float | None = None

    def needed(self, total: int) -> int:
        """The number of in-service real servers needed out of ``total`` configured ones."""
        if self.percent is None:
            return self.count if self.count is not None else 1
        exact = total * self.percent / 100.0
        whole = int(exact)
        return max(1, whole + (1 if exact > whole + 1e-9 else 0))

    def text(self) -> str:
        """As written in the file: ``"2"`` or ``"50%"``."""
        if self.percent is None:
            return str(self.count)
        return f"{self.percent:g}%"


@dataclass(frozen=True)
class VipAnnouncement:
    """One VIP this director announces (a host route: /32 or /128).

    Attributes:
        address: the VIP, canonical text form.
        communities: RFC 1997 communities added on export, as (ASN, value) pairs of 16 bits each.
        large_communities: RFC 8092 large communities, as (global admin, data 1, data 2), 32 bits each.
        med: MULTI_EXIT_DISC (RFC 4271 section 5.1.4), or None to send none.
        prepend: how many extra times the local AS is prepended to the AS path (0-16).
        min_healthy: see `MinHealthy`.
    """

    address: str
    communities: tuple[tuple[int, int], ...] = ()
    large_communities: tuple[tuple[int, int, int], ...] = ()
    med: int | None = None
    prepend: int = 0
    min_healthy: MinHealthy = field(default_factory=MinHealthy)

    @property
    def version(self) -> int:
        """4 or 6."""
        return ipaddress.ip_address(self.address).version

    @property
    def prefix(self) -> str:
        """``"192.0.2.10/32"`` or ``"2001:db8::10/128"``."""
        return f"{self.address}/{32 if self.version == 4 else 128}"


@dataclass(frozen=True)
class Neighbor:
    """One BGP neighbour (a router) of this director.

    Attributes:
        address: the router's address, canonical text form.
        remote_as: the router's AS number (1-4294967295).
        name: the BGP protocol's name in BIRD and in ``directord status``
            (letters, digits, ``_``; at most 32 characters).
        hold_time: BGP hold time in seconds (3-65535); keepalives go every hold_time / 3.
        bfd: run a BFD session with the router (RFC 5880), so that either side detects the
            other's death in `BfdSettings` interval x multiplier instead of the hold time.
        password: the TCP MD5 signature key (RFC 2385), or None.
        source_address: the local address of the session, or None to let the kernel choose.
        multihop: the TTL for a neighbour that is not directly connected (eBGP multihop), or
            None for a directly connected one.
        port: the router's BGP TCP port (179).
    """

    address: str
    remote_as: int
    name: str
    hold_time: int = DEFAULT_HOLD_TIME
    bfd: bool = True
    password: str | None = None
    source_address: str | None = None
    multihop: int | None = None
    port: int = 179

    @property
    def version(self) -> int:
        """4 or 6: the address family of the session (its routes are of the same family)."""
        return ipaddress.ip_address(self.address).version


@dataclass(frozen=True)
class BfdSettings:
    """BFD timers (RFC 5880 section 6.8.4): detection time = ``interval_ms`` x ``multiplier``."""

    interval_ms: int = DEFAULT_BFD_INTERVAL_MS
    multiplier: int = DEFAULT_BFD_MULTIPLIER


@dataclass(frozen=True)
class SpeakerSettings:
    """The BIRD directord runs and supervises.

    Attributes:
        binary: absolute path of the ``bird`` executable (Debian package ``bird2``).
        run_dir: directory of BIRD's generated configuration (``bird.conf``) and control socket
            (``bird.ctl``); created mode 0700, owned by root.
    """

    binary: str = "/usr/sbin/bird"
    run_dir: str = "/run/directord/bgp"


@dataclass(frozen=True)
class BgpConfig:
    """The ``bgp:`` section.

    Attributes:
        local_as: this director's AS number (1-4294967295).
        router_id: BGP identifier (an IPv4 address), or None for BIRD's choice (the lowest
            IPv4 address of the director).
        neighbors: the routers, at least one.
        vips: the VIPs announced, at least one; each must be the address of a virtual service.
        bfd: BFD timers for the neighbours with ``bfd``.
        graceful_shutdown_wait: seconds between adding GRACEFUL_SHUTDOWN and withdrawing, at a
            drain and at a graceful stop (0: withdraw at once).
        kernel_table: the kernel routing table of the VIP routes (1-4294967295, not 253-255).
        interface: where the VIPs are added as local addresses (never ARP-announced there).
        speaker: the BIRD that is run.
    """

    local_as: int
    neighbors: tuple[Neighbor, ...]
    vips: tuple[VipAnnouncement, ...]
    router_id: str | None = None
    bfd: BfdSettings = field(default_factory=BfdSettings)
    graceful_shutdown_wait: float = DEFAULT_GRACEFUL_SHUTDOWN_WAIT
    kernel_table: int = DEFAULT_KERNEL_TABLE
    interface: str = "lo"
    speaker: SpeakerSettings = field(default_factory=SpeakerSettings)

    def vip(self, address: str) -> VipAnnouncement | None:
        """The announcement of ``address`` (canonical text form), or None."""
        for v in self.vips:
            if v.address == address:
                return v
        return None
