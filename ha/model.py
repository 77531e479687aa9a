"""The validated HA configuration (the ``ha:`` section of directord's YAML), as immutable data.

Produced by `director.config.ha`, consumed by the node state machine (`ha.node`), the
media (`ha.media`) and VIP handling (`ha.vip`, `ha.announce`).  Times are in
seconds (floats).  Meanings follow heartbeat 3.0.6's ``ha.cf`` and
``haresources`` (see its ``config.c`` and ``hb_resource.c``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: directord's shipped timers: a LAN failover in under a second (a peer silent for four
#: keepalives is dead; keepalived's VRRP waits three advertisements plus a skew).
DEFAULT_KEEPALIVE = 0.2
DEFAULT_DEADTIME = 0.8
DEFAULT_WARNTIME = 0.4
DEFAULT_INITDEAD = 3.0
#: heartbeat's own defaults (ha.cf), used by ``compat: heartbeat``.
HEARTBEAT_KEEPALIVE = 1.0
HEARTBEAT_DEADTIME = 30.0
UDP_PORT = 694
#: Linux's default neighbour ``locktime`` in seconds (``net.ipv4.neigh.default.locktime``, 100
#: jiffies): the kernel ignores a neighbour update less than this after the previous one, so
#: gratuitous ARP / unsolicited NA rounds must be further apart.
NEIGH_LOCKTIME = 1.0


@dataclass(frozen=True)
class Timers:
    """Heartbeat timers in seconds.

    Attributes:
        keepalive: interval between two status messages.
        warntime: a heartbeat later than this is logged as late.
        deadtime: a peer silent this long is declared dead (must exceed 2 x keepalive).
        initdead: deadtime applied before the peer was ever heard (>= deadtime).
    """

    keepalive: float = DEFAULT_KEEPALIVE
    warntime: float = DEFAULT_WARNTIME
    deadtime: float = DEFAULT_DEADTIME
    initdead: float = DEFAULT_INITDEAD


@dataclass(frozen=True)
class Medium:
    """One heartbeat medium (ha.cf ``bcast``/``mcast``/``ucast`` line).

    Attributes:
        kind: ``bcast`` (to the interface's broadcast address), ``mcast``
            (to ``group``), ``ucast`` (to ``peer``).
        interface: the interface sent on and bound to (SO_BINDTODEVICE).
        group: multicast group (mcast only).
        peer: peer address (ucast only).
        port: UDP port (mcast may set its own; else the global udpport).
        ttl: multicast TTL (mcast only; 1..255).
        loop: multicast loopback (mcast only).
    """

    kind: Literal["bcast", "mcast", "ucast"]
    interface: str
    port: int = UDP_PORT
    group: str | None = None
    peer: str | None = None
    ttl: int = 1
    loop: bool = False

    def as_ha_cf(self) -> str:
        """The medium as its ha.cf line: ``bcast IF``, ``ucast IF PEER`` or ``mcast IF GROUP PORT TTL LOOP``
        (heartbeat's ``lib/plugins/HBcomm/{bcast,ucast,mcast}.c`` read these)."""
        if self.kind == "bcast":
            return f"bcast {self.interface}"
        if self.kind == "ucast":
            return f"ucast {self.interface} {self.peer}"
        return f"mcast {self.interface} {self.group} {self.port} {self.ttl} {int(self.loop)}"


@dataclass(frozen=True)
class Resource:
    """An address resource (haresources ``IP/PREFIX/IF`` or IPaddr's arguments).

    Attributes:
        address: canonical IP text (a VIP, or for NAT the real servers' gateway).
        prefixlen: prefix length to configure (32 / 128 for a VIP is common).
        interface: interface that carries it.
    """

    address: str
    prefixlen: int
    interface: str

    def __str__(self) -> str:
        return f"{self.address}/{self.prefixlen}/{self.interface}"


@dataclass(frozen=True)
class ResourceGroup:
    """One haresources line: the preferred owner (first column) and its resources."""

    owner: str
    resources: tuple[Resource, ...]


@dataclass(frozen=True)
class HAConfig:
    """The whole ``ha:`` section.

    Attributes:
        node: our node name (default: the host name, as ``uname -n``).
        nodes: every node of the cluster, ours included (ha.cf ``node``).
        media: one or more media.
        udpport: default UDP port (694).
        authkeys: path of heartbeat's authkeys file (mode 600).
        timers: keepalive/warntime/deadtime/initdead in seconds.
        auto_failback: ``True`` (on: nice_failback + failback), ``False``
            (off: nice_failback only), or ``"legacy"`` (absent in heartbeat's
            compat profile).
        groups: resource groups with their preferred owners.
        ping_nodes: addresses whose reachability counts (heartbeat ``ping``).
        compat: ``directord`` (fast defaults) or ``heartbeat`` (heartbeat's
            defaults and rules).
        state_dir: where the node keeps its uuid and generation counter.
        announce_repeats / announce_interval: gratuitous ARP/NA bursts after a
            takeover: ``announce_repeats`` rounds spaced ``announce_interval``
            seconds apart (> 1 s, the kernel's neighbour locktime).
        announce_refresh: seconds between periodic re-announcements while
            active; 0 disables.
        ping_interval / ping_timeout: seconds between two ICMP echo probes of
            each ping node, and how long an answer may take.
        ping_rise / ping_fall: answered probes in a row that make a ping node
            reachable again / missed ones that make it unreachable.
        link_monitor: watch the carrier of the resource interfaces; a node
            whose resource link is down hands its groups to a live peer.
        line: line of the ``ha:`` key in the configuration file.
    """

    node: str
    nodes: tuple[str, ...]
    media: tuple[Medium, ...]
    authkeys: str
    udpport: int = UDP_PORT
    timers: Timers = Timers()
    auto_failback: bool | Literal["legacy"] = True
    groups: tuple[ResourceGroup, ...] = ()
    ping_nodes: tuple[str, ...] = ()
    compat: Literal["directord", "heartbeat"] = "directord"
    state_dir: str = "/var/lib/directord"
    announce_repeats: int = 3
    announce_interval: float = 1.1
    announce_refresh: float = 0.0
    ping_interval: float = 1.0
    ping_timeout: float = 1.0
    ping_rise: int = 2
    ping_fall: int = 3
    link_monitor: bool = True
    line: int = 0


#: Largest generation (``hg``) accepted: the largest signed 64-bit integer.
MAX_GENERATION = 2**63 - 1


@dataclass(frozen=True)
class NodeIdentity:
    """Who this process is on the wire.

    Attributes:
        uuid: 16 raw bytes (the ``srcuuid`` field), never all zero.
        generation: positive int (the ``hg`` field, sent in hex), larger on
            every start of the process.

    Raises ``ValueError`` on a uuid that is not 16 bytes or is all zero, or a
    generation that is not a positive int.
    """

    uuid: bytes
    generation: int

    def __post_init__(self) -> None:
        if not isinstance(self.uuid, (bytes, bytearray)) or len(self.uuid) != 16:
            raise ValueError("uuid must be 16 bytes")
        if not any(self.uuid):
            raise ValueError("uuid must not be all zero (heartbeat treats it as no uuid)")
        object.__setattr__(self, "uuid", bytes(self.uuid))
        if isinstance(self.generation, bool) or not isinstance(self.generation, int):
            raise ValueError("generation must be an int")
        if not 0 < self.generation <= MAX_GENERATION:
            raise ValueError(f"generation {self.generation} out of range 1..{MAX_GENERATION}")
