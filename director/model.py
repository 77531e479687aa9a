"""The director's data model: configured virtual services and the kernel's IPVS table.

Two layers, both immutable:

* configuration objects (`Config`, `VirtualService`, `RealServer`,
  `FallbackServer`, `Persistence`), produced by `director.config`;
* kernel-table objects (`ServiceKey`, `ServiceAttrs`, `DestKey`, `DestAttrs`,
  `KernelService`, `KernelDest`), the shape in which `director.ipvs` dumps
  the IPVS table and in which `director.planner` compares desired and observed
  state.

Names and numbers follow the kernel's IPVS UAPI (``include/uapi/linux/ip_vs.h``):
``IP_VS_CONN_F_MASQ`` = 0, ``IP_VS_CONN_F_TUNNEL`` = 2, ``IP_VS_CONN_F_DROUTE``
= 3, service flags ``IP_VS_SVC_F_PERSISTENT`` = 0x1, ``IP_VS_SVC_F_SCHED1``
= 0x8 (sh/mh fallback), ``IP_VS_SVC_F_SCHED2`` = 0x10 (sh/mh port).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from checks.spec import CheckSpec
from ha.bgp.model import BgpConfig
from ha.model import HAConfig

# --- kernel constants (include/uapi/linux/ip_vs.h) ---------------------------

#: Forwarding method name -> IPVS_DEST_ATTR_FWD_METHOD value.
FWD_METHODS: Mapping[str, int] = {"nat": 0, "tun": 2, "dr": 3}
FWD_NAMES: Mapping[int, str] = {0: "nat", 1: "local", 2: "tun", 3: "dr"}

#: Every scheduler the stock kernel ships (net/netfilter/ipvs/ip_vs_*.c).
SCHEDULERS = frozenset({"rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos"})

IP_VS_SVC_F_PERSISTENT = 0x0001
IP_VS_SVC_F_HASHED = 0x0002  # set by the kernel, never by us
IP_VS_SVC_F_ONEPACKET = 0x0004
IP_VS_SVC_F_SCHED1 = 0x0008  # sh-fallback / mh-fallback
IP_VS_SVC_F_SCHED2 = 0x0010  # sh-port / mh-port
IP_VS_SVC_F_SCHED3 = 0x0020

#: Scheduler flag name -> (schedulers it applies to, service flag bit).
SCHEDULER_FLAGS: Mapping[str, tuple[frozenset[str], int]] = {
    "sh-fallback": (frozenset({"sh"}), IP_VS_SVC_F_SCHED1),
    "sh-port": (frozenset({"sh"}), IP_VS_SVC_F_SCHED2),
    "mh-fallback": (frozenset({"mh"}), IP_VS_SVC_F_SCHED1),
    "mh-port": (frozenset({"mh"}), IP_VS_SVC_F_SCHED2),
}

#: Flag bits that we own and compare; HASHED and others the kernel sets are ignored.
MANAGED_SERVICE_FLAGS = (
    IP_VS_SVC_F_PERSISTENT | IP_VS_SVC_F_ONEPACKET | IP_VS_SVC_F_SCHED1 | IP_VS_SVC_F_SCHED2 | IP_VS_SVC_F_SCHED3
)

PROTOCOLS: Mapping[str, int] = {
    "tcp": socket.IPPROTO_TCP,
    "udp": socket.IPPROTO_UDP,
    "sctp": socket.IPPROTO_SCTP,
}
PROTOCOL_NAMES: Mapping[int, str] = {v: k for k, v in PROTOCOLS.items()}

Family = Literal["inet", "inet6"]
FAMILIES: Mapping[str, int] = {"inet": socket.AF_INET, "inet6": socket.AF_INET6}


def canonical_ip(text: str) -> str:
    """Return the canonical text form of an IPv4/IPv6 address.

    Raises:
        ValueError: ``text`` is not an IP address.
    """
    return str(ipaddress.ip_address(text))


def ip_family(address: str) -> int:
    """``socket.AF_INET`` or ``socket.AF_INET6`` for an address string.

    Raises:
        ValueError: not an IP address.
    """
    return socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET


def host_port(address: str, port: int) -> str:
    """``10.0.0.1:80`` or ``[2001:db8::1]:80``."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


#: Longest interface name the kernel takes, in bytes: ``IFNAMSIZ`` (16, ``include/uapi/linux/if.h``)
#: less its NUL; IPVS's ``IP_VS_IFNAME_MAXLEN`` for a sync daemon's interface is the same 16.
IFNAME_MAX = 15


def valid_ifname(name: str) -> bool:
    """Whether ``name`` can name a network interface of the director (e.g. the interface of
    ``global.sync_daemon``): what the kernel's ``dev_valid_name`` accepts (net/core/dev.c),
    within `IFNAME_MAX` bytes: not empty, not ``.`` or ``..``, no ``/``, ``:``, whitespace
    or NUL."""
    return (
        0 < len(name.encode()) <= IFNAME_MAX
        and name not in (".", "..")
        and not any(c in "/:\0" or c.isspace() for c in name)
    )


# --- kernel table -------------------------------------------------------------


@dataclass(frozen=True, order=True)
class ServiceKey:
    """Identity of an IPVS virtual service (the kernel's lookup key).

    Attributes:
        family: ``socket.AF_INET`` or ``socket.AF_INET6`` (IPVS_SVC_ATTR_AF).
        protocol: IP protocol number (IPVS_SVC_ATTR_PROTOCOL); 0 for fwmark.
        address: canonical VIP text; ``""`` for a fwmark service.
        port: virtual port; 0 for a fwmark service.
        fwmark: firewall mark (IPVS_SVC_ATTR_FWMARK); 0 for an address service.
    """

    family: int
    protocol: int
    address: str
    port: int
    fwmark: int = 0

    def __str__(self) -> str:
        if self.fwmark:
            fam = "inet6" if self.family == socket.AF_INET6 else "inet"
            return f"fwmark {self.fwmark} ({fam})"
        proto = PROTOCOL_NAMES.get(self.protocol, str(self.protocol))
        return f"{proto} {host_port(self.address, self.port)}"


@dataclass(frozen=True)
class ServiceAttrs:
    """The mutable attributes of a virtual service, as the kernel stores them.

    Attributes:
        scheduler: IPVS_SVC_ATTR_SCHED_NAME, e.g. ``wlc``.
        flags: IPVS_SVC_ATTR_FLAGS restricted to `MANAGED_SERVICE_FLAGS`.
        timeout: persistence timeout in seconds (IPVS_SVC_ATTR_TIMEOUT); 0 = none.
        netmask: IPVS_SVC_ATTR_NETMASK; for IPv4 a dotted mask
            (``255.255.255.255``), for IPv6 the prefix length as an int.
        pe_name: persistence engine (IPVS_SVC_ATTR_PE_NAME), ``""`` for none.
    """

    scheduler: str = "wlc"
    flags: int = 0
    timeout: int = 0
    netmask: str | int = "255.255.255.255"
    pe_name: str = ""


@dataclass(frozen=True, order=True)
class DestKey:
    """Identity of a real server inside one virtual service: RIP and port."""

    address: str
    port: int

    def __str__(self) -> str:
        return host_port(self.address, self.port)


@dataclass(frozen=True)
class DestAttrs:
    """The mutable attributes of a destination (real server) in the kernel.

    Attributes:
        fwd_method: IPVS_DEST_ATTR_FWD_METHOD (0 nat, 2 tun, 3 dr).
        weight: IPVS_DEST_ATTR_WEIGHT, 0..65535; 0 = quiescent.
        u_thresh: IPVS_DEST_ATTR_U_THRESH, upper connection threshold (0 = none).
        l_thresh: IPVS_DEST_ATTR_L_THRESH, lower connection threshold (0 = none).
    """

    fwd_method: int = 3
    weight: int = 1
    u_thresh: int = 0
    l_thresh: int = 0


@dataclass(frozen=True)
class IPVSStats:
    """The kernel's traffic counters of a virtual service or a destination (``struct
    ip_vs_kstats``, dumped as IPVS_SVC_ATTR_STATS64 / IPVS_DEST_ATTR_STATS64), named as the
    kernel names them.

    Attributes:
        conns: connections scheduled since the entry was created.
        inpkts, outpkts: packets in (client to real server) and out, since then.
        inbytes, outbytes: bytes in and out, since then.
        cps: connections per second, the kernel estimator's current rate.
        inpps, outpps: packets per second in and out (current rates).
        inbps, outbps: bytes per second in and out (current rates).
    """

    conns: int = 0
    inpkts: int = 0
    outpkts: int = 0
    inbytes: int = 0
    outbytes: int = 0
    cps: int = 0
    inpps: int = 0
    outpps: int = 0
    inbps: int = 0
    outbps: int = 0


@dataclass(frozen=True)
class KernelDest:
    """A destination as dumped from the kernel: its attributes, connection counters and, when
    the dump asked for them, its traffic counters (``stats``; None otherwise)."""

    attrs: DestAttrs
    active_conns: int = 0
    inactive_conns: int = 0
    persist_conns: int = 0
    stats: IPVSStats | None = None


@dataclass(frozen=True)
class KernelService:
    """A virtual service as dumped from the kernel, with its destinations and, when the dump
    asked for them, its traffic counters (``stats``; None otherwise)."""

    attrs: ServiceAttrs
    dests: Mapping[DestKey, KernelDest] = field(default_factory=dict)
    stats: IPVSStats | None = None


#: The kernel's whole IPVS table (one network namespace).
KernelTable = Mapping[ServiceKey, KernelService]


@dataclass(frozen=True)
class DesiredService:
    """A virtual service as it should be in the kernel: attributes and destinations."""

    attrs: ServiceAttrs
    dests: Mapping[DestKey, DestAttrs] = field(default_factory=dict)


#: What the kernel table should hold for the services directord manages.
DesiredTable = Mapping[ServiceKey, DesiredService]


# --- configuration ------------------------------------------------------------

OnFailure = Literal["quiescent", "remove"]
ForwardingName = Literal["dr", "nat", "tun"]


@dataclass(frozen=True)
class Persistence:
    """Persistence (ipvsadm ``-p``/``-M``): timeout in seconds and client netmask.

    ``netmask`` is a dotted IPv4 mask for IPv4 services and a prefix length
    (1..128) for IPv6 services, as the kernel expects.
    """

    timeout: int
    netmask: str | int


@dataclass(frozen=True)
class RealServer:
    """A configured real server (RIP) of one virtual service.

    Attributes:
        address: canonical RIP text.
        port: real port (0 for a fwmark service that keeps the packet's port).
        weight: configured weight 0..65535.
        forwarding: forwarding method, inherited from the service unless set.
        upper_threshold / lower_threshold: connection thresholds (0 = none).
        check: the effective health check (service check merged with overrides).
        line: line of the entry in its configuration file (1-based), for messages.
    """

    address: str
    port: int
    weight: int = 1
    forwarding: ForwardingName = "dr"
    upper_threshold: int = 0
    lower_threshold: int = 0
    check: CheckSpec = field(default_factory=CheckSpec)
    line: int = 0

    @property
    def key(self) -> DestKey:
        return DestKey(self.address, self.port)

    def dest_attrs(self, weight: int | None = None) -> DestAttrs:
        """Kernel attributes for this real server, at ``weight`` (default: configured)."""
        return DestAttrs(
            fwd_method=FWD_METHODS[self.forwarding],
            weight=self.weight if weight is None else weight,
            u_thresh=self.upper_threshold,
            l_thresh=self.lower_threshold,
        )


@dataclass(frozen=True)
class FallbackServer:
    """The fallback (sorry) server of a service: in the table only while no real server is up."""

    address: str
    port: int
    weight: int = 1
    forwarding: ForwardingName = "dr"

    @property
    def key(self) -> DestKey:
        return DestKey(self.address, self.port)

    def dest_attrs(self) -> DestAttrs:
        return DestAttrs(fwd_method=FWD_METHODS[self.forwarding], weight=self.weight)


@dataclass(frozen=True)
class VirtualService:
    """A configured virtual service.

    Attributes:
        name: unique name (defaults to the key's text form), used in logs and status.
        key: the kernel identity (VIP:port/protocol, or fwmark + family).
        scheduler: kernel scheduler name (see `SCHEDULERS`).
        scheduler_flags: e.g. ``{"sh-port"}`` (see `SCHEDULER_FLAGS`).
        forwarding: default forwarding method of its real servers.
        persistence: ``None`` or the persistence settings.
        on_failure: ``quiescent`` (weight 0) or ``remove`` (delete the destination).
        check: the service-level check (real servers may override it).
        real_servers: the configured real servers, in file order.
        fallback: the fallback (sorry) server, or ``None``.
        line: line of the entry in its configuration file.
    """

    name: str
    key: ServiceKey
    scheduler: str = "wlc"
    scheduler_flags: frozenset[str] = frozenset()
    forwarding: ForwardingName = "dr"
    persistence: Persistence | None = None
    on_failure: OnFailure = "quiescent"
    check: CheckSpec = field(default_factory=CheckSpec)
    real_servers: tuple[RealServer, ...] = ()
    fallback: FallbackServer | None = None
    line: int = 0

    def service_attrs(self) -> ServiceAttrs:
        """The kernel attributes this service should have."""
        flags = 0
        for name in self.scheduler_flags:
            flags |= SCHEDULER_FLAGS[name][1]
        default_mask: str | int = 128 if self.key.family == socket.AF_INET6 else "255.255.255.255"
        if self.persistence is not None:
            return ServiceAttrs(
                scheduler=self.scheduler,
                flags=flags | IP_VS_SVC_F_PERSISTENT,
                timeout=self.persistence.timeout,
                netmask=self.persistence.netmask,
            )
        return ServiceAttrs(scheduler=self.scheduler, flags=flags, timeout=0, netmask=default_mask)


@dataclass(frozen=True)
class SyncSettings:
    """IPVS connection synchronisation (``global.sync_daemon``): the kernel's master and
    backup sync daemons run on every director, multicasting on ``interface`` (a name in
    the director's namespace, `valid_ifname`) with ``syncid`` 0-255 (`director.ipvs.sync`)."""

    interface: str
    syncid: int = 0


#: Default address and port of the HTTP listener (``global.http.listen``).
DEFAULT_HTTP_HOST = "127.0.0.1"
DEFAULT_HTTP_PORT = 9199


@dataclass(frozen=True)
class HTTPSettings:
    """The HTTP listener for metrics and the status page (``global.http``).

    Attributes:
        host: the IP address to listen on (a literal: no name lookup), e.g. ``127.0.0.1``, ``::``.
        port: TCP port, 1-65535.
        token: the bearer token every request must carry (``Authorization: Bearer TOKEN``),
            read from ``token_file``; None: no token asked (allowed on loopback only).
        token_file: where ``token`` was read from, or None.
    """

    host: str = DEFAULT_HTTP_HOST
    port: int = DEFAULT_HTTP_PORT
    token: str | None = field(default=None, repr=False)
    token_file: str | None = None

    @property
    def loopback(self) -> bool:
        """True when only this host can connect (``127.0.0.0/8`` or ``::1``)."""
        return ipaddress.ip_address(self.host).is_loopback

    @property
    def listen(self) -> str:
        """``HOST:PORT`` (``[HOST]:PORT`` for IPv6), as in the file."""
        return host_port(self.host, self.port)


@dataclass(frozen=True)
class Settings:
    """Daemon-wide settings (the ``global`` section). Times in seconds.

    Attributes:
        reconcile_interval: seconds between two drift-repair dumps of the kernel table.
        drain_timeout: seconds a removed real server may drain before it is deleted
            while it still has active connections (UDP destinations always wait this long).
        control_socket: path of the root-only unix control socket.
        sync_daemon: connection synchronisation, or None (directord leaves the kernel's
            sync daemons alone).
        http: the metrics and status page listener, or None (no HTTP listener).
        state_dir: directory of the daemon's own state (the operator's real-server states,
            ``admin.json``); systemd's ``StateDirectory=directord``.
    """

    reconcile_interval: float = 10.0
    drain_timeout: float = 300.0
    control_socket: str = "/run/directord/directord.sock"
    sync_daemon: SyncSettings | None = None
    http: HTTPSettings | None = None
    state_dir: str = "/var/lib/directord"


#: The event kinds a notify hook may run on (`director.events`, `ha.events` and the daemon's
#: ``service.down``/``service.up``), with what each means for the hook; the high-rate kinds
#: (announcements, IPVS operations) are left out on purpose.
HOOK_EVENTS: Mapping[str, str] = {
    "ha.acquired": "this director took a resource group over: its addresses are up and announced",
    "ha.released": "this director gave a resource group up: its addresses are gone",
    "ha.acquire_failed": "adding an address of a resource group failed (the node retries)",
    "ha.peer": "the peer director changed state (init, up, active, dead)",
    "check.health": "a real server's health changed (up, down)",
    "service.down": "a virtual service has no real server in service (all down, drained or disabled)",
    "service.up": "a virtual service that was down has a real server in service again",
    "rs.admin": "an operator drained, disabled or enabled a real server",
    "config.reloaded": "a reload was accepted",
    "config.refused": "a reload was refused (the previous configuration stays)",
}
#: Event kinds that concern one virtual service (a hook's ``service:`` filter applies to them).
SERVICE_EVENTS = frozenset({"check.health", "service.down", "service.up", "rs.admin"})
#: Default seconds a hook may run before it is killed, and default hooks running at once.
DEFAULT_HOOK_TIMEOUT = 30.0
DEFAULT_HOOKS_RUNNING = 4


@dataclass(frozen=True)
class Hook:
    """One notify hook: run ``command`` (an argv, no shell; ``command[0]`` an absolute path)
    on each event whose kind is in ``events`` (`HOOK_EVENTS`), for at most ``timeout``
    seconds.  ``service`` limits it to the events of that virtual service (`SERVICE_EVENTS`).
    ``name`` names it in logs (default: the program's file name); ``line``, its place in the
    file."""

    events: frozenset[str]
    command: tuple[str, ...]
    timeout: float = DEFAULT_HOOK_TIMEOUT
    service: str | None = None
    name: str = ""
    line: int = 0


@dataclass(frozen=True)
class NotifySettings:
    """The ``notify:`` section: the hooks in file order, and at most ``max_running`` of them
    running at once besides the one HA hook that may be running (`director.hooks`)."""

    hooks: tuple[Hook, ...] = ()
    max_running: int = DEFAULT_HOOKS_RUNNING


@dataclass(frozen=True)
class Config:
    """A whole validated configuration file."""

    path: str
    settings: Settings = field(default_factory=Settings)
    services: tuple[VirtualService, ...] = ()
    ha: HAConfig | None = None
    notify: NotifySettings | None = None
    #: the ``bgp:`` section (active-active directors announcing their VIPs), or None
    bgp: BgpConfig | None = None
    #: what the file does that works but is likely a mistake, each one line as a located
    #: problem is written (``FILE:LINE:COL: FIELD: MESSAGE``); ``directord check`` prints them
    warnings: tuple[str, ...] = ()
