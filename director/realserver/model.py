"""The vocabulary of `directord realserver` (pure data, no I/O): the request, the host as read, the plan.

* :class:`Request`: what to prepare (VIPs, forwarding method, ARP
  interfaces, the director for nat), with :func:`parse_vip`;
* :class:`HostState` of :class:`Link` and :class:`Address`: the host as
  :func:`director.realserver.kernel.gather` reads it;
* :class:`Plan` of :class:`Item`, each with the :class:`Change` that makes
  it present: what :func:`director.realserver.planner.plan` returns;
* :class:`RealServerError`, raised by every part, and :func:`explain_error`,
  the one line every part prints for a failure.
"""

from __future__ import annotations

import errno
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from . import sysctl as rsysctl

#: A forwarding method of the director: direct routing, IP-in-IP tunnel, NAT.
Mode = Literal["dr", "tun", "nat"]
#: A VIP or director address.
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Why tun cannot work here (planner errors, `KernelBackend` failures).
KERNEL_LACKS_IPIP = (
    "tun mode needs IP-in-IP decapsulation (the ipip module and its tunl0 device), "
    "but this kernel has no ipip module (modprobe ipip fails); use dr or nat here, "
    "or a kernel built with CONFIG_NET_IPIP"
)


class RealServerError(Exception):
    """A request that cannot be carried out (bad input, missing kernel feature, refused change)."""


def explain_error(exc: BaseException) -> str:
    """One line for ``exc``, a failure to read or change the host (shown after what failed).

    ``str(exc)`` (the exception's type name when that is empty); for EPERM or
    EACCES (an OSError's ``errno``, or the ``code`` of a pyroute2
    ``NetlinkError``) a message saying to run as root instead.
    """
    code = getattr(exc, "code", None) if not isinstance(exc, OSError) else exc.errno
    if isinstance(exc, PermissionError) or code in (errno.EPERM, errno.EACCES):
        return f"permission denied ({exc}): run as root (CAP_NET_ADMIN in this network namespace)"
    return str(exc) or type(exc).__name__


# --- the request ------------------------------------------------------------------


def parse_vip(text: str) -> IPAddress:
    """An IPv4/IPv6 address, optionally written with a host prefix (``/32``, ``/128``).

    Raises:
        ValueError: not an IP address, or a prefix other than the host prefix.
    """
    try:
        iface = ipaddress.ip_interface(text.strip())
    except ValueError:
        raise ValueError(f"not an IP address: {text!r}") from None
    if "/" in text and iface.network.prefixlen != iface.max_prefixlen:
        raise ValueError(f"a VIP is a single address (/{iface.max_prefixlen}), not {text!r}")
    return iface.ip


@dataclass(frozen=True)
class Request:
    """What to prepare: ``vips`` (in the order given), the forwarding ``mode``,
    ``interfaces`` (ARP interfaces to set; empty: every interface that can hear
    ARP) and ``director`` (the DIP expected as default gateway, nat)."""

    vips: tuple[IPAddress, ...] = ()
    mode: Mode = "dr"
    interfaces: tuple[str, ...] = ()
    director: IPAddress | None = None

    def argv(self) -> list[str]:
        """The ``prep`` arguments that reproduce this request."""
        out: list[str] = []
        for vip in self.vips:
            out += ["--vip", str(vip)]
        out += ["--mode", self.mode]
        for name in self.interfaces:
            out += ["--interface", name]
        if self.director is not None:
            out += ["--director", str(self.director)]
        return out

    def to_json(self) -> dict[str, Any]:
        """JSON-able form (addresses as strings)."""
        return {
            "vips": [str(v) for v in self.vips],
            "mode": self.mode,
            "interfaces": list(self.interfaces),
            "director": None if self.director is None else str(self.director),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Request:
        """Inverse of :meth:`to_json`.

        Raises:
            ValueError / KeyError: malformed document.
        """
        d = doc.get("director")
        return cls(
            vips=tuple(parse_vip(v) for v in doc.get("vips", ())),
            mode=doc.get("mode", "dr"),
            interfaces=tuple(doc.get("interfaces", ())),
            director=None if d is None else ipaddress.ip_address(d),
        )


# --- the host as read ---------------------------------------------------------------


@dataclass(frozen=True)
class Link:
    """A network interface: ``name``, ``index``, ``up`` (``IFF_UP``), ``loopback``
    (``IFF_LOOPBACK``), ``noarp`` (``IFF_NOARP``: does not hear ARP)."""

    name: str
    index: int = 0
    up: bool = True
    loopback: bool = False
    noarp: bool = False


@dataclass(frozen=True)
class Address:
    """An address on ``ifname``: ``address``/``prefixlen``, IPv4 ``label`` (``IFA_LABEL``),
    ``proto`` (``IFA_PROTO``, 0 when the kernel reports none)."""

    ifname: str
    address: str
    prefixlen: int
    label: str | None = None
    proto: int = 0


@dataclass(frozen=True)
class HostState:
    """A snapshot of what the planner looks at.

    ``sysctls``: path key -> value text, for the keys that exist;
    ``default_gateways``: IP version (4, 6) -> gateway of the main table's
    default route (None: no default route or no gateway); ``ipip``:
    ``"tunnel"`` (``tunl0`` exists), ``"module"`` (the module is loaded or
    loadable but ``tunl0`` is missing) or ``"absent"``; ``ifa_proto``: the
    kernel keeps ``IFA_PROTO`` (5.18+), which marks our IPv6 addresses.
    """

    links: tuple[Link, ...] = ()
    addresses: tuple[Address, ...] = ()
    sysctls: Mapping[str, str] = field(default_factory=dict)
    default_gateways: Mapping[int, str | None] = field(default_factory=dict)
    ipip: Literal["tunnel", "module", "absent"] = "absent"
    ifa_proto: bool = True

    def link(self, name: str) -> Link | None:
        """The link named ``name``, or None."""
        return next((lk for lk in self.links if lk.name == name), None)


# --- the plan (pure) ------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One change to the host.

    ``kind`` and its fields:

    * ``"module"``: load kernel module ``target``;
    * ``"tunnel"``: make sure IP-in-IP device ``target`` exists (created if
      loading the module did not create it);
    * ``"link_up"``: set link ``target`` up;
    * ``"sysctl"``: write ``value`` to key ``target`` (``old``: value read
      when planning, None if the key did not exist yet);
    * ``"address"``: add ``value`` (``"addr/prefixlen"``) to link ``target``
      with ``label`` (IPv4) / ``IFA_PROTO`` (IPv6);
    * ``"file"``: write text ``value`` to path ``target`` (``old``: its
      content, None if absent);
    * ``"symlink"``: make ``target`` a symbolic link to ``value``.
    """

    kind: Literal["module", "tunnel", "link_up", "sysctl", "address", "file", "symlink"]
    target: str
    value: str | None = None
    old: str | None = None
    label: str | None = None

    def describe(self) -> str:
        """One line for humans, without a verb tense (``"net.ipv4.conf.all.arp_ignore = 1 (now 0)"``)."""
        if self.kind == "module":
            return f"load kernel module {self.target}"
        if self.kind == "tunnel":
            return f"create IP-in-IP device {self.target} (if loading ipip does not)"
        if self.kind == "link_up":
            return f"set link {self.target} up"
        if self.kind == "sysctl":
            now = "absent" if self.old is None else self.old
            return f"{rsysctl.display_key(self.target)} = {self.value} (now {now})"
        if self.kind == "address":
            lab = f" label {self.label}" if self.label else ""
            return f"add {self.value} to {self.target}{lab}"
        if self.kind == "file":
            return f"{'write' if self.old is None else 'replace'} {self.target}"
        return f"link {self.target} -> {self.value}"


@dataclass(frozen=True)
class Item:
    """One thing a ready host has: ``what`` it is, whether it is ``present``,
    a ``detail`` line, the ``change`` that makes it present (None when
    present, or when it is a check such as the NAT default route), and for
    sysctl items ``sysctl`` = (path key, value once present)."""

    what: str
    present: bool
    detail: str = ""
    change: Change | None = None
    sysctl: tuple[str, str] | None = None  # (path key, value it has once present), for sysctl items


@dataclass(frozen=True)
class Plan:
    """Result of :func:`plan`: ``items`` in apply order, ``errors`` (the request
    cannot be carried out: nothing may be applied), ``notes`` (informational)."""

    request: Request
    items: tuple[Item, ...]
    errors: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def changes(self) -> list[Change]:
        """The changes of the missing items, in apply order."""
        return [i.change for i in self.items if i.change is not None]

    @property
    def ready(self) -> bool:
        """True when nothing is missing and there is no error."""
        return not self.errors and all(i.present for i in self.items)
