"""`directord realserver prep|undo|status`: preparing a host to be an LVS real server.

What each forwarding method needs on the real server (LVS documentation,
"LVS-DR" and "LVS-Tun"; the sysctls are the table of
:mod:`director.realserver.sysctl`):

* ``dr``: the director forwards frames unchanged to the real server's MAC, so
  the real server must accept packets for the VIP: each VIP on ``lo`` as
  /32 (/128), and it must never answer ARP for the VIP (``arp_ignore=1``,
  ``arp_announce=2``). IPv6 VIPs go on ``lo`` with ``IFA_F_NODAD``; IPv6
  neighbour solicitations are only answered for addresses of the receiving
  interface, so no sysctl is needed for them.
* ``tun``: the director wraps packets in IP-in-IP (RFC 2003); the ``ipip``
  module's ``tunl0`` decapsulates them, the VIP sits on ``tunl0``, and
  reverse-path filtering must be relaxed on ``tunl0`` and ``all``. ARP is
  handled as for dr (the VIP is still a local address). IPv4 only.
* ``nat``: nothing to add; replies must go back through the director, so the
  default route must point at it (checked with ``--director DIP``).

Design: :func:`gather` reads the host (pyroute2 for links, addresses and
routes; ``/proc/sys`` for sysctls, which resolves per network namespace of
the calling thread) into a :class:`HostState`; :func:`plan` (pure) turns a
:class:`Request` and a :class:`HostState` into a :class:`Plan` of items
(present or missing) and the :class:`Change` list that makes the missing
ones present; :func:`apply` runs the changes through a :class:`Backend`,
recording each one's previous state, and rolls back what it did in that run
when one fails. The records go to a JSON state file (written after every
change) that ``undo`` replays backwards.

Ownership: addresses are added the way :mod:`ha.vip` marks directord's own
(IPv4 label ``<ifname>:dd``, IPv6 ``IFA_PROTO``), and ``undo`` removes only
addresses recorded as added by ``prep``.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal, Protocol

from ha.durable import make_directories, remove_file, replace_symlink, write_file_atomic
from ha.readfile import ReadFileError, read_regular_file

from . import sysctl as rsysctl

Mode = Literal["dr", "tun", "nat"]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

STATE_DIR = "/var/lib/directord"
#: Largest state file read, bytes (a record is ~100 bytes; prep writes a few dozen).
MAX_STATE_BYTES = 16 << 20
#: Largest ``--persist`` file read back (sysctl.d file, EnvironmentFile, unit), bytes.
MAX_PERSIST_FILE_BYTES = 1 << 20
SYSCTL_CONF = "etc/sysctl.d/60-directord-realserver.conf"
ENV_FILE = "etc/default/directord-realserver"
UNIT_NAME = "directord-realserver.service"
UNIT_FILE = f"etc/systemd/system/{UNIT_NAME}"
UNIT_LINK = f"etc/systemd/system/multi-user.target.wants/{UNIT_NAME}"
#: The variable of :data:`ENV_FILE` the unit's ``ExecStart`` expands.
ENV_VAR = "DIRECTORD_REALSERVER_ARGS"
#: The unit as shipped in the repository's ``etc/`` (this module's copy is used when that file is absent).
UNIT_SOURCE = Path(__file__).resolve().parents[2] / "etc" / UNIT_NAME

IFF_LOOPBACK = 0x8  # include/uapi/linux/if.h
IFF_NOARP = 0x80

KERNEL_LACKS_IPIP = (
    "tun mode needs IP-in-IP decapsulation (the ipip module and its tunl0 device), "
    "but this kernel has no ipip module (modprobe ipip fails); use dr or nat here, "
    "or a kernel built with CONFIG_NET_IPIP"
)


class RealServerError(Exception):
    """A request that cannot be carried out (bad input, missing kernel feature, refused change)."""


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


def vip_device(mode: str) -> str:
    """Where the VIPs go: ``lo`` for dr, ``tunl0`` for tun (nat: none, ValueError)."""
    if mode == "dr":
        return "lo"
    if mode == "tun":
        return rsysctl.TUNNEL
    raise ValueError(f"no VIP device in mode {mode!r}")


def _label(ifname: str) -> str:
    from ha.vip import vip_label

    return vip_label(ifname)


def is_ours(addr: Address, *, ifa_proto: bool = True) -> bool:
    """True if ``addr`` carries directord's mark (the :mod:`ha.vip` convention).

    IPv4: label ``<ifname>:dd``; IPv6: ``IFA_PROTO`` = ``ha.vip.ADDR_PROTO``
    (any matching IPv6 address when the kernel has no ``IFA_PROTO``).
    """
    from ha.vip import ADDR_PROTO

    if ipaddress.ip_address(addr.address).version == 4:
        return addr.label == _label(addr.ifname)
    return addr.proto == ADDR_PROTO or not ifa_proto


def arp_interfaces(request: Request, state: HostState) -> list[str]:
    """The interfaces whose ARP sysctls are set: ``request.interfaces`` if given,
    else every link that is neither loopback nor ``IFF_NOARP``, in link order."""
    if request.interfaces:
        return [n for n in request.interfaces if n != "lo"]
    return [lk.name for lk in state.links if not lk.loopback and not lk.noarp]


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def plan(request: Request, state: HostState) -> Plan:
    """Compare ``state`` with what ``request`` needs (pure; see the module notes).

    Items come in the order they must be applied: the tunnel (tun), then
    the sysctls (so the host never answers ARP for a VIP it already holds),
    then the VIP addresses; for nat the default-route check. Errors (the
    plan must not be applied) for: no VIP in dr/tun, an IPv6 VIP in tun, an
    ``--interface`` that does not exist, a VIP already configured on an
    interface that hears ARP/NDP (the host would answer for it), tun on a
    kernel without ipip.
    """
    items: list[Item] = []
    errors: list[str] = []
    notes: list[str] = []
    mode = request.mode
    if mode not in ("dr", "tun", "nat"):
        return Plan(request, (), (f"unknown forwarding method {mode!r} (dr, tun or nat)",))
    for name in request.interfaces:
        if state.link(name) is None:
            errors.append(f"no such interface: {name}")

    if mode == "nat":
        if request.vips:
            notes.append("nat: the VIPs stay on the director; nothing is configured for them here")
        if request.director is None:
            notes.append("nat: give --director DIP to check that replies are routed through the director")
        else:
            gw = state.default_gateways.get(request.director.version)
            ok = gw is not None and ipaddress.ip_address(gw) == request.director
            where = "no default route" if gw is None else f"default route via {gw}"
            items.append(Item(
                f"IPv{request.director.version} default route via the director {request.director}", ok,
                where + ("" if ok else " (replies would bypass the director)"),
            ))
        return Plan(request, tuple(items), tuple(errors), tuple(notes))

    if not request.vips:
        errors.append(f"{mode}: give at least one --vip")
    if mode == "tun" and any(v.version == 6 for v in request.vips):
        errors.append("tun: IPv6 VIPs need an IPv6-in-IPv6 tunnel (ip6tnl), which is not supported; use dr")
    dev = vip_device(mode)
    tunnel = state.link(rsysctl.TUNNEL)

    if mode == "tun":
        if tunnel is None:
            if state.ipip == "absent":
                errors.append(KERNEL_LACKS_IPIP)
                items.append(Item(f"{rsysctl.TUNNEL} (ipip)", False, "the kernel has no ipip module"))
            else:
                items.append(Item("module ipip", False, "", Change("module", "ipip")))
                items.append(Item(f"{rsysctl.TUNNEL} (ipip)", False, "missing", Change("tunnel", rsysctl.TUNNEL)))
        if tunnel is None or not tunnel.up:
            items.append(Item(f"{rsysctl.TUNNEL} up", False, "down" if tunnel else "", Change("link_up", rsysctl.TUNNEL)))
        else:
            items.append(Item(f"{rsysctl.TUNNEL} up", True, "up"))

    if any(v.version == 4 for v in request.vips):
        for key, rule in rsysctl.wanted(mode, arp_interfaces(request, state)):
            now = state.sysctls.get(key)
            shown = rsysctl.display_key(key)
            if _int(now) in rule.accept:
                items.append(Item(shown, True, f"= {now}", sysctl=(key, str(now))))
            else:
                detail = f"= {'absent' if now is None else now}, want {rule.want}: {rule.why}"
                items.append(Item(shown, False, detail, Change("sysctl", key, str(rule.want), now),
                                  sysctl=(key, str(rule.want))))

    ifaces = {lk.name: lk for lk in state.links}
    for vip in request.vips:
        plen = vip.max_prefixlen
        cidr = f"{vip}/{plen}"
        same = [a for a in state.addresses if ipaddress.ip_address(a.address) == vip]
        for a in same:
            lk = ifaces.get(a.ifname)
            if a.ifname != dev and lk is not None and not lk.loopback and not lk.noarp:
                errors.append(
                    f"VIP {vip} is configured on {a.ifname}: this host would answer "
                    f"{'ARP' if vip.version == 4 else 'neighbour solicitations'} for it; remove it there first"
                )
        here = [a for a in same if a.ifname == dev and a.prefixlen == plen]
        if here:
            mine = any(is_ours(a, ifa_proto=state.ifa_proto) for a in here)
            items.append(Item(f"{cidr} on {dev}", True, "" if mine else "(configured by someone else: undo leaves it)"))
        else:
            label = _label(dev) if vip.version == 4 else None
            items.append(Item(f"{cidr} on {dev}", False, "", Change("address", dev, cidr, None, label)))
    return Plan(request, tuple(items), tuple(errors), tuple(notes))


# --- persistence (pure part) --------------------------------------------------------------


@dataclass(frozen=True)
class PersistPaths:
    """Where ``--persist`` writes: ``sysctl_conf`` (sysctl.d), ``env_file`` (the
    unit's ``EnvironmentFile``), ``unit_file`` and ``unit_link`` (the
    ``multi-user.target.wants`` link ``systemctl enable`` makes)."""

    sysctl_conf: str
    env_file: str
    unit_file: str
    unit_link: str

    @classmethod
    def under(cls, root: str = "/") -> PersistPaths:
        """The standard paths below ``root`` (``"/"`` on a real host)."""
        r = Path(root)
        return cls(str(r / SYSCTL_CONF), str(r / ENV_FILE), str(r / UNIT_FILE), str(r / UNIT_LINK))


def unit_text() -> str:
    """The systemd unit shipped as ``etc/directord-realserver.service`` (this module's copy if the file is absent)."""
    try:
        return UNIT_SOURCE.read_text()
    except OSError:
        return UNIT_FALLBACK


def sysctl_conf_text(p: Plan) -> str:
    """The sysctl.d file making ``p``'s sysctls permanent: each managed key with
    the value it will have after ``prep`` (the current one if acceptable)."""
    lines = [
        "# Written by `directord realserver prep --persist` (LVS real server, forwarding method "
        f"{p.request.mode}).",
        "# Removed by `directord realserver undo`.",
    ]
    for item in p.items:
        if item.sysctl is not None:
            lines.append(f"{rsysctl.display_key(item.sysctl[0])} = {item.sysctl[1]}")
    return "\n".join(lines) + "\n"


def env_file_text(request: Request, state_file: str | None) -> str:
    """The ``EnvironmentFile`` of the unit: :data:`ENV_VAR` holds the ``prep`` arguments.

    Raises:
        ValueError: an argument systemd's ``$VAR`` word splitting cannot carry.
    """
    argv = request.argv() + (["--state-file", state_file] if state_file else [])
    bad = [a for a in argv if not a or any(c.isspace() or c in "\"'\\$%" for c in a)]
    if bad:
        # systemd splits $VAR at whitespace and interprets no quotes in it
        raise ValueError(f"cannot pass {bad[0]!r} through {ENV_VAR} (whitespace, quote, $ or %)")
    return (
        "# Written by `directord realserver prep --persist`; read by directord-realserver.service.\n"
        f'{ENV_VAR}="{" ".join(argv)}"\n'
    )


def plan_persist(
    p: Plan, paths: PersistPaths, existing: Mapping[str, str | None], state_file: str | None = None
) -> list[Item]:
    """Items (with changes) for ``--persist`` (pure).

    ``existing`` maps each path of ``paths`` to its current content (for the
    link: its target), None when absent. ``state_file`` is repeated in the
    unit's arguments when it is not the default.
    """
    wanted = [
        (paths.sysctl_conf, "file", sysctl_conf_text(p)),
        (paths.env_file, "file", env_file_text(p.request, state_file)),
        (paths.unit_file, "file", unit_text()),
        (paths.unit_link, "symlink", os.path.relpath(paths.unit_file, os.path.dirname(paths.unit_link))),
    ]
    items = []
    for path, kind, content in wanted:
        now = existing.get(path)
        if now == content:
            items.append(Item(path, True, "up to date"))
        else:
            items.append(Item(path, False, "missing" if now is None else "differs", Change(kind, path, content, now)))
    return items


# --- applying and undoing -------------------------------------------------------------


class Backend(Protocol):
    """The I/O :func:`apply` and :func:`revert` need (:class:`KernelBackend` on a host).

    Sysctl keys are ``/proc/sys``-relative paths, values text without the
    newline; ``read_*`` return None for what does not exist; ``add_address``
    / ``remove_address`` return False when there was nothing to do. Any
    method may raise OSError / ``pyroute2.NetlinkError`` / RealServerError.
    """

    def read_sysctl(self, key: str) -> str | None:
        """The value of ``key``, None if it does not exist."""

    def write_sysctl(self, key: str, value: str) -> None:
        """Write ``value`` to ``key``."""

    def load_module(self, name: str) -> None:
        """Load kernel module ``name`` (no-op when loaded)."""

    def link_exists(self, name: str) -> bool:
        """True if link ``name`` exists."""

    def create_tunnel(self, name: str) -> None:
        """Create IP-in-IP device ``name``."""

    def delete_link(self, name: str) -> None:
        """Delete link ``name``."""

    def link_is_up(self, name: str) -> bool:
        """True if link ``name`` is administratively up."""

    def set_link(self, name: str, up: bool) -> None:
        """Set link ``name`` up or down."""

    def add_address(self, ifname: str, cidr: str, label: str | None) -> bool:
        """Add ``cidr`` to ``ifname`` with directord's mark; False if present already."""

    def remove_address(self, ifname: str, cidr: str, label: str | None) -> bool:
        """Remove our ``cidr`` from ``ifname``; False if absent or not ours."""

    def read_file(self, path: str) -> str | None:
        """Content of ``path``, None if absent.

        Raises:
            RealServerError: not a regular file, too large, not UTF-8 (message names the path).
        """

    def write_file(self, path: str, text: str | None) -> None:
        """Replace ``path`` with ``text`` (None: remove it)."""

    def read_link(self, path: str) -> str | None:
        """Target of symbolic link ``path``, None if absent."""

    def write_link(self, path: str, target: str | None) -> None:
        """Make ``path`` a symbolic link to ``target`` (None: remove it)."""


class ApplyError(RealServerError):
    """A change failed; the changes of the run were rolled back.

    ``change``: the failing :class:`Change`; ``undone``: records rolled back;
    ``left``: records whose rollback failed (still applied), with messages in
    ``rollback_errors``.
    """

    def __init__(self, message: str, change: Change, undone: list[dict], left: list[dict], rollback_errors: list[str]):
        super().__init__(message)
        self.change = change
        self.undone = undone
        self.left = left
        self.rollback_errors = rollback_errors


def _explain(exc: BaseException) -> str:
    code = getattr(exc, "code", None) if not isinstance(exc, OSError) else exc.errno
    if isinstance(exc, PermissionError) or code in (errno.EPERM, errno.EACCES):
        return f"permission denied ({exc}): run as root (CAP_NET_ADMIN in this network namespace)"
    return str(exc) or type(exc).__name__


def apply_one(change: Change, backend: Backend) -> dict | None:
    """Make ``change``; return its record for undo (None when nothing had to be done).

    Records: ``{"kind": "sysctl", "key", "value", "old"}`` (``old`` read just
    before writing), ``{"kind": "address", "ifname", "cidr", "label"}``,
    ``{"kind": "link_up", "ifname"}``, ``{"kind": "tunnel", "ifname"}`` (only
    if created), ``{"kind": "module", "name"}``, ``{"kind": "file" |
    "symlink", "path", "value", "old"}``.

    Raises:
        whatever the backend raises.
    """
    k = change.kind
    if k == "module":
        backend.load_module(change.target)
        return {"kind": "module", "name": change.target}
    if k == "tunnel":
        if backend.link_exists(change.target):
            return None
        backend.create_tunnel(change.target)
        return {"kind": "tunnel", "ifname": change.target}
    if k == "link_up":
        if backend.link_is_up(change.target):
            return None
        backend.set_link(change.target, True)
        return {"kind": "link_up", "ifname": change.target}
    if k == "sysctl":
        old = backend.read_sysctl(change.target)
        if old is None:
            raise FileNotFoundError(errno.ENOENT, "no such sysctl", "/proc/sys/" + change.target)
        if old == change.value:
            return None
        backend.write_sysctl(change.target, change.value or "")
        return {"kind": "sysctl", "key": change.target, "value": change.value, "old": old}
    if k == "address":
        if not backend.add_address(change.target, change.value or "", change.label):
            return None
        return {"kind": "address", "ifname": change.target, "cidr": change.value, "label": change.label}
    if k == "file":
        old = backend.read_file(change.target)
        backend.write_file(change.target, change.value)
        return {"kind": "file", "path": change.target, "value": change.value, "old": old}
    if k == "symlink":
        old = backend.read_link(change.target)
        backend.write_link(change.target, change.value)
        return {"kind": "symlink", "path": change.target, "value": change.value, "old": old}
    raise ValueError(f"unknown change kind {k!r}")


def describe_record(rec: Mapping[str, Any]) -> str:
    """What undoing ``rec`` does, in one line."""
    k = rec["kind"]
    if k == "sysctl":
        return f"{rsysctl.display_key(rec['key'])} = {rec['old']} (back from {rec['value']})"
    if k == "address":
        return f"remove {rec['cidr']} from {rec['ifname']}"
    if k == "link_up":
        return f"set link {rec['ifname']} down"
    if k == "tunnel":
        return f"delete {rec['ifname']}"
    if k == "module":
        return f"leave module {rec['name']} loaded (other tunnels may use it)"
    if k in ("file", "symlink"):
        return f"{'remove' if rec['old'] is None else 'restore'} {rec['path']}"
    return f"unknown record {rec!r}"


def revert(rec: Mapping[str, Any], backend: Backend) -> str | None:
    """Undo one record of :func:`apply_one`.

    Returns None when done, or a warning when the item was left alone
    because someone changed it since (a sysctl no longer at our value, a
    file no longer our content).

    Raises:
        whatever the backend raises.
    """
    k = rec["kind"]
    if k == "sysctl":
        now = backend.read_sysctl(rec["key"])
        if now is None:
            return f"{rsysctl.display_key(rec['key'])} is gone (interface removed?); nothing to restore"
        if now != rec["value"]:
            return f"{rsysctl.display_key(rec['key'])} is {now}, not {rec['value']} as set by prep: left alone"
        backend.write_sysctl(rec["key"], rec["old"])
    elif k == "address":
        backend.remove_address(rec["ifname"], rec["cidr"], rec.get("label"))
    elif k == "link_up":
        if backend.link_exists(rec["ifname"]):
            backend.set_link(rec["ifname"], False)
    elif k == "tunnel":
        if backend.link_exists(rec["ifname"]):
            backend.delete_link(rec["ifname"])
    elif k == "module":
        return None
    elif k == "file":
        if backend.read_file(rec["path"]) != rec["value"]:
            return f"{rec['path']} was changed since prep wrote it: left alone"
        backend.write_file(rec["path"], rec["old"])
    elif k == "symlink":
        if backend.read_link(rec["path"]) != rec["value"]:
            return f"{rec['path']} was changed since prep made it: left alone"
        backend.write_link(rec["path"], rec["old"])
    else:
        raise ValueError(f"unknown record kind {k!r}")
    return None


def apply(
    changes: Sequence[Change],
    backend: Backend,
    *,
    on_record: Callable[[list[dict]], None] | None = None,
    report: Callable[[Change, dict | None], None] | None = None,
) -> list[dict]:
    """Apply ``changes`` in order; return the records of what was done.

    ``on_record(records)`` is called after each change that did something
    (the caller journals them); ``report(change, record)`` after each change.
    If a change (or ``on_record``) fails, every change of this run is
    reverted in reverse order and :class:`ApplyError` is raised.

    Raises:
        ApplyError: a change failed (message says which and why).
    """
    done: list[dict] = []
    for change in changes:
        try:
            rec = apply_one(change, backend)
            if rec is not None:
                done.append(rec)
                if on_record is not None:
                    on_record(list(done))
        except Exception as exc:
            undone, left, errs = [], [], []
            for r in reversed(done):
                try:
                    warn = revert(r, backend)
                    if warn:
                        errs.append(warn)
                    undone.append(r)
                except Exception as rexc:  # keep rolling back the others
                    left.append(r)
                    errs.append(f"{describe_record(r)}: {_explain(rexc)}")
            if on_record is not None:
                try:
                    on_record(left)
                except Exception as jexc:
                    errs.append(f"state file: {_explain(jexc)}")
            raise ApplyError(
                f"{change.describe()}: {_explain(exc)}", change, undone, left, errs
            ) from exc
        if report is not None:
            report(change, rec)
    return done


def merge_records(old: Sequence[Mapping], new: Sequence[Mapping]) -> list[dict]:
    """The records of an earlier run followed by this run's, for one undo.

    A sysctl or file already recorded keeps its first ``old`` value (what the
    host had before directord touched it) and takes the new ``value``; an
    address, link or tunnel already recorded is not repeated.
    """

    def ident(r: Mapping) -> tuple:
        k = r["kind"]
        if k == "sysctl":
            return (k, r["key"])
        if k in ("file", "symlink"):
            return (k, r["path"])
        if k == "address":
            return (k, r["ifname"], r["cidr"])
        return (k, r.get("ifname") or r.get("name"))

    out = [dict(r) for r in old]
    index = {ident(r): i for i, r in enumerate(out)}
    for r in new:
        i = index.get(ident(r))
        if i is None:
            index[ident(r)] = len(out)
            out.append(dict(r))
        elif "value" in r:
            out[i]["value"] = r["value"]
    return out


# --- the state file ----------------------------------------------------------------------


def current_netns_name() -> str | None:
    """Name of the calling process's network namespace: the ``/run/netns`` name of a
    named one, None for the initial one (PID 1's, or when that cannot be read),
    else ``netns-<inode>``."""
    try:
        me = os.stat("/proc/self/ns/net")
    except OSError:
        return None
    try:
        for name in sorted(os.listdir("/run/netns")):
            try:
                st = os.stat(os.path.join("/run/netns", name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == (me.st_dev, me.st_ino):
                return name
    except OSError:
        pass
    try:
        init = os.stat("/proc/1/ns/net")
    except OSError:
        return None
    return None if (init.st_dev, init.st_ino) == (me.st_dev, me.st_ino) else f"netns-{me.st_ino}"


def default_state_file() -> str:
    """``/var/lib/directord/realserver.json``; in a network namespace other than the
    initial one ``realserver-<netns name>.json`` (namespaces share the file system)."""
    name = current_netns_name()
    return os.path.join(STATE_DIR, f"realserver-{name}.json" if name else "realserver.json")


def _read_text(path: str, limit: int) -> str | None:
    """The UTF-8 text of the regular file ``path`` (at most ``limit`` bytes), None if it does not exist.

    Raises:
        ReadFileError: not a regular file (a FIFO does not block), too large, unreadable.
        UnicodeDecodeError: not UTF-8.
    """
    try:
        data = read_regular_file(path, limit)
    except ReadFileError as exc:
        if isinstance(exc.__cause__, FileNotFoundError):
            return None
        raise
    return data.decode("utf-8")


def load_state(path: str) -> dict | None:
    """The state document at ``path``, None if there is none.

    The file must be a regular file of at most :data:`MAX_STATE_BYTES` bytes
    (a FIFO or a device there is an error, not a hang).

    Raises:
        RealServerError: unreadable or not a state document.
    """
    try:
        text = _read_text(path, MAX_STATE_BYTES)
        if text is None:
            return None
        doc = json.loads(text)
    except ReadFileError as exc:
        raise RealServerError(f"state file {path}: {exc.reason}") from None
    except (ValueError, RecursionError) as exc:  # RecursionError: JSON nested too deep
        raise RealServerError(f"state file {path}: not JSON: {_explain(exc)}") from None
    if not isinstance(doc, dict) or doc.get("version") != 1 or not isinstance(doc.get("applied"), list):
        raise RealServerError(f"state file {path}: not a directord realserver state (version 1)")
    return doc


def save_state(path: str, doc: Mapping | None) -> None:
    """Write ``doc`` to ``path`` (mode 0644, creating the folder); None removes the file.

    Atomic and durable (`ha.durable.write_file_atomic`: the file and its
    folder are fsync'ed), so that ``undo`` finds the whole state after a
    power cut, and a removal is durable too.

    Raises:
        OSError: the file cannot be written (or is not a regular file:
            `ha.durable.NotRegularFileError`).
    """
    if doc is None:
        remove_file(path)
        return
    text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    make_directories(os.path.dirname(os.path.abspath(path)))
    write_file_atomic(path, text.encode(), 0o644)


# --- the kernel ------------------------------------------------------------------------------


def _proc_path(key: str) -> str:
    if ".." in key.split("/"):
        raise ValueError(f"invalid sysctl key {key!r}")
    return "/proc/sys/" + key


def _ipip_available() -> bool:
    if os.path.isdir("/sys/module/ipip"):
        return True
    if shutil.which("modprobe") is None:
        return False
    r = subprocess.run(["modprobe", "-n", "-q", "ipip"], capture_output=True)
    return r.returncode == 0


def gather(request: Request | None = None) -> HostState:
    """Read the host as the planner needs it, in the calling thread's network namespace.

    Links and addresses with ``IFA_LABEL``/``IFA_PROTO`` (pyroute2, rtnetlink),
    the main table's default routes, every ``net/ipv4/conf/<dev>/<name>``
    of the table's names from ``/proc/sys``, and whether ``ipip`` is usable
    (``tunl0`` present, ``/sys/module/ipip``, or ``modprobe -n ipip``; only
    looked at for tun).

    Raises:
        RealServerError: netlink refused.
    """
    from pyroute2 import IPRoute, NetlinkError

    from ha.vip import kernel_has_ifa_proto

    try:
        with IPRoute() as ipr:
            links = []
            names = {}
            for msg in ipr.get_links():
                name = msg.get_attr("IFLA_IFNAME")
                flags = msg["flags"]
                names[msg["index"]] = name
                links.append(Link(name, msg["index"], bool(flags & 1), bool(flags & IFF_LOOPBACK), bool(flags & IFF_NOARP)))
            addrs = []
            for msg in ipr.get_addr():
                text = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
                if text is None:
                    continue
                addrs.append(Address(
                    names.get(msg["index"], str(msg["index"])), text, msg["prefixlen"],
                    msg.get_attr("IFA_LABEL"), msg.get_attr("IFA_PROTO") or 0,
                ))
            gws: dict[int, str | None] = {4: None, 6: None}
            for family, version in ((socket.AF_INET, 4), (socket.AF_INET6, 6)):
                for r in ipr.get_routes(family=family, table=254):
                    if r["dst_len"] == 0 and r.get_attr("RTA_GATEWAY"):
                        gws[version] = r.get_attr("RTA_GATEWAY")
                        break
    except NetlinkError as exc:
        raise RealServerError(f"reading links and addresses: {_explain(exc)}") from None
    sysctls: dict[str, str] = {}
    base = "/proc/sys/net/ipv4/conf"
    for dev in os.listdir(base):
        for name in rsysctl.names():
            try:
                with open(os.path.join(base, dev, name)) as f:
                    sysctls[rsysctl.conf_key(dev, name)] = f.read().strip()
            except (OSError, ValueError):
                pass
    ipip: Literal["tunnel", "module", "absent"] = "absent"
    if any(lk.name == rsysctl.TUNNEL for lk in links):
        ipip = "tunnel"
    elif request is not None and request.mode == "tun" and _ipip_available():
        ipip = "module"
    return HostState(tuple(links), tuple(addrs), sysctls, gws, ipip, kernel_has_ifa_proto())


class KernelBackend:  # method docstrings: see Backend
    """:class:`Backend` on the running kernel, in the calling thread's network namespace.

    Sysctls through ``/proc/sys``; links through pyroute2; addresses through
    :func:`ha.vip.add_vip` / :func:`ha.vip.remove_vip` (label / ``IFA_PROTO``
    marking, ``IFA_F_NODAD`` for IPv6); modules with ``modprobe``; files
    and links written atomically and durably (`ha.durable`).
    """

    def read_sysctl(self, key: str) -> str | None:
        try:
            with open(_proc_path(key)) as f:
                return f.read().strip()
        except FileNotFoundError:
            return None

    def write_sysctl(self, key: str, value: str) -> None:
        with open(_proc_path(key), "w") as f:
            f.write(f"{value}\n")

    def load_module(self, name: str) -> None:
        if os.path.isdir(f"/sys/module/{name}"):
            return
        try:
            r = subprocess.run(["modprobe", name], capture_output=True, text=True)
        except OSError as e:  # no modprobe (kmod) on this host
            r = subprocess.CompletedProcess(["modprobe", name], 1, "", f"modprobe: {e.strerror}")
        if r.returncode != 0:
            detail = r.stderr.strip() or f"modprobe exited {r.returncode}"
            if name == "ipip":
                raise RealServerError(f"{KERNEL_LACKS_IPIP} ({detail})")
            raise RealServerError(f"modprobe {name}: {detail}")

    def _ipr(self):
        from pyroute2 import IPRoute

        return IPRoute()

    def _index(self, ipr, name: str) -> int:
        idx = ipr.link_lookup(ifname=name)
        if not idx:
            raise RealServerError(f"no such interface: {name}")
        return idx[0]

    def link_exists(self, name: str) -> bool:
        with self._ipr() as ipr:
            return bool(ipr.link_lookup(ifname=name))

    def create_tunnel(self, name: str) -> None:
        from pyroute2 import NetlinkError

        with self._ipr() as ipr:
            try:
                ipr.link("add", ifname=name, kind="ipip")
            except NetlinkError as exc:
                if exc.code == errno.EOPNOTSUPP:
                    raise RealServerError(KERNEL_LACKS_IPIP) from None
                raise

    def delete_link(self, name: str) -> None:
        with self._ipr() as ipr:
            ipr.link("del", index=self._index(ipr, name))

    def link_is_up(self, name: str) -> bool:
        with self._ipr() as ipr:
            return bool(ipr.get_links(self._index(ipr, name))[0]["flags"] & 1)

    def set_link(self, name: str, up: bool) -> None:
        with self._ipr() as ipr:
            ipr.link("set", index=self._index(ipr, name), state="up" if up else "down")

    @staticmethod
    def _resource(ifname: str, cidr: str) -> SimpleNamespace:
        iface = ipaddress.ip_interface(cidr)
        return SimpleNamespace(address=str(iface.ip), prefixlen=iface.network.prefixlen, interface=ifname)

    def add_address(self, ifname: str, cidr: str, label: str | None) -> bool:
        import asyncio

        from ha.vip import add_vip

        return asyncio.run(add_vip(self._resource(ifname, cidr), label=label))

    def remove_address(self, ifname: str, cidr: str, label: str | None) -> bool:
        import asyncio

        from ha.vip import NoSuchInterface, remove_vip

        try:
            return asyncio.run(remove_vip(self._resource(ifname, cidr), label=label))
        except NoSuchInterface:
            return False

    def read_file(self, path: str) -> str | None:
        try:
            return _read_text(path, MAX_PERSIST_FILE_BYTES)
        except ReadFileError as exc:
            raise RealServerError(str(exc)) from None
        except ValueError as exc:
            raise RealServerError(f"{path}: not UTF-8 text: {exc}") from None

    def write_file(self, path: str, text: str | None) -> None:
        if text is None:
            remove_file(path)
            return
        make_directories(os.path.dirname(os.path.abspath(path)))
        write_file_atomic(path, text.encode(), 0o644)

    def read_link(self, path: str) -> str | None:
        try:
            return os.readlink(path)
        except (FileNotFoundError, OSError):
            return None

    def write_link(self, path: str, target: str | None) -> None:
        if target is None:
            remove_file(path)
            return
        make_directories(os.path.dirname(os.path.abspath(path)))
        replace_symlink(path, target)


# --- the commands --------------------------------------------------------------------------------


def _out(line: str) -> None:
    print(line, flush=True)


def _err(line: str) -> None:
    print(f"directord realserver: {line}", file=sys.stderr, flush=True)


def _request_from_args(args: argparse.Namespace) -> Request:
    return Request(
        vips=tuple(dict.fromkeys(args.vip or ())),
        mode=args.mode or "dr",
        interfaces=tuple(dict.fromkeys(args.interface or ())),
        director=args.director,
    )


def _status_lines(items: Iterable[Item]) -> list[str]:
    return [f"{'present' if i.present else 'missing'}  {i.what}" + (f" {i.detail}" if i.detail else "") for i in items]


def prep(
    request: Request,
    *,
    state_file: str,
    dry_run: bool = False,
    persist_root: str | None = None,
    backend: Backend | None = None,
    host: HostState | None = None,
    out: Callable[[str], None] = _out,
) -> int:
    """``directord realserver prep``: plan, print, apply, journal. Returns the exit status.

    ``persist_root``: also write the persistence files below that root (``"/"``
    on a real host). ``backend``/``host`` replace the kernel (tests).
    0: the host is ready (changed or already so); 1: refused or failed
    (message on stderr, nothing left half-applied).
    """
    backend = backend or KernelBackend()
    try:
        host = host or gather(request)
        p = plan(request, host)
    except RealServerError as exc:
        _err(str(exc))
        return 1
    for note in p.notes:
        out(f"note: {note}")
    if p.errors:
        for e in p.errors:
            _err(e)
        _err("nothing changed")
        return 1
    checks_failed = [i for i in p.items if not i.present and i.change is None]
    items = list(p.items)
    if persist_root is not None:
        paths = PersistPaths.under(persist_root)
        try:
            existing = {
                paths.sysctl_conf: backend.read_file(paths.sysctl_conf),
                paths.env_file: backend.read_file(paths.env_file),
                paths.unit_file: backend.read_file(paths.unit_file),
                paths.unit_link: backend.read_link(paths.unit_link),
            }
        except RealServerError as exc:
            _err(f"{exc}; nothing changed")
            return 1
        sf = None if state_file == default_state_file() else state_file
        try:
            items += plan_persist(p, paths, existing, sf)
        except ValueError as exc:
            _err(f"--persist: {exc}; nothing changed")
            return 1
    changes = [i.change for i in items if i.change is not None]
    if dry_run:
        for c in changes:
            out(f"would {c.describe() if c.kind != 'sysctl' else 'set ' + c.describe()}")
            if c.kind == "file":
                for line in (c.value or "").splitlines():
                    out(f"    | {line}")
        for i in checks_failed:
            out(f"check failed: {i.what}: {i.detail}")
        out(f"dry run: {len(changes)} change(s) planned, nothing done")
        return 0 if not checks_failed else 1
    if not changes:
        for i in checks_failed:
            _err(f"{i.what}: {i.detail}")
        if checks_failed:
            return 1
        out(f"nothing to change: the host is ready as a {request.mode} real server")
        return 0

    try:
        previous = load_state(state_file)
    except RealServerError as exc:
        _err(str(exc))
        return 1
    base = previous["applied"] if previous else []

    def journal(records: list[dict]) -> None:
        if not records and previous is None:
            save_state(state_file, None)
            return
        save_state(state_file, {
            "version": 1,
            "netns": current_netns_name(),
            "request": request.to_json(),
            "persist_root": persist_root,
            "applied": merge_records(base, records),
        })

    def report(change: Change, rec: dict | None) -> None:
        if rec is None:
            out(f"already: {change.describe()}")
        elif change.kind == "sysctl":
            out(f"set {rsysctl.display_key(change.target)} = {change.value} (was {rec['old']})")
        else:
            out(change.describe())

    try:
        journal([])  # the state file must be writable before anything changes
    except OSError as exc:
        _err(f"state file {state_file}: {_explain(exc)}; nothing changed")
        return 1
    try:
        apply(changes, backend, on_record=journal, report=report)
    except ApplyError as exc:
        _err(f"failed: {exc}")
        if exc.undone:
            _err(f"rolled back {len(exc.undone)} change(s) made in this run")
        for e in exc.rollback_errors:
            _err(f"rollback: {e}")
        if exc.left:
            _err(f"{len(exc.left)} change(s) could not be rolled back; they stay recorded in {state_file}")
        return 1
    if persist_root == "/" and os.path.isdir("/run/systemd/system") and shutil.which("systemctl"):
        subprocess.run(["systemctl", "daemon-reload"], capture_output=True)
    for i in checks_failed:
        _err(f"{i.what}: {i.detail}")
    out(f"done: {len(changes)} change(s); undo with: directord realserver undo --state-file {state_file}")
    return 1 if checks_failed else 0


def undo(
    *, state_file: str, dry_run: bool = False, backend: Backend | None = None, out: Callable[[str], None] = _out
) -> int:
    """``directord realserver undo``: revert the recorded changes, newest first. Returns the exit status.

    0: everything reverted (or nothing recorded); 1: some records could not
    be reverted (they stay in the state file).
    """
    backend = backend or KernelBackend()
    try:
        doc = load_state(state_file)
    except RealServerError as exc:
        _err(str(exc))
        return 1
    if doc is None or not doc["applied"]:
        out(f"nothing to undo (no changes recorded in {state_file})")
        if doc is not None and not dry_run:
            save_state(state_file, None)
        return 0
    records = doc["applied"]
    if dry_run:
        for rec in reversed(records):
            out(f"would {describe_record(rec)}")
        out(f"dry run: {len(records)} record(s), nothing done")
        return 0
    left = []
    for rec in reversed(records):
        try:
            warn = revert(rec, backend)
        except Exception as exc:
            _err(f"{describe_record(rec)}: {_explain(exc)}")
            left.insert(0, rec)
            continue
        out(f"warning: {warn}" if warn else describe_record(rec))
    if left:
        save_state(state_file, {**doc, "applied": left})
        _err(f"{len(left)} change(s) not undone; they stay recorded in {state_file}")
        return 1
    if doc.get("persist_root") == "/" and os.path.isdir("/run/systemd/system") and shutil.which("systemctl"):
        subprocess.run(["systemctl", "daemon-reload"], capture_output=True)
    save_state(state_file, None)
    out(f"undone: {len(records)} change(s)")
    return 0


def status(
    request: Request, *, as_json: bool = False, host: HostState | None = None, out: Callable[[str], None] = _out
) -> int:
    """``directord realserver status``: each item present or missing. 0 only when ready."""
    try:
        p = plan(request, host or gather(request))
    except RealServerError as exc:
        _err(str(exc))
        return 1
    if as_json:
        out(json.dumps({
            "ready": p.ready,
            "request": request.to_json(),
            "items": [{"what": i.what, "present": i.present, "detail": i.detail} for i in p.items],
            "errors": list(p.errors),
            "notes": list(p.notes),
        }, indent=2))
    else:
        for line in _status_lines(p.items):
            out(line)
        for e in p.errors:
            out(f"error    {e}")
        for n in p.notes:
            out(f"note     {n}")
        out(f"{'ready' if p.ready else 'not ready'}: {request.mode} real server")
    return 0 if p.ready else 1


# --- argument parsing ---------------------------------------------------------------------------


def _vip_arg(text: str) -> IPAddress:
    try:
        return parse_vip(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _ip_arg(text: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address: {text!r}") from None


def _add_request_args(p: argparse.ArgumentParser, *, required_mode_default: bool) -> None:
    p.add_argument("--vip", action="extend", nargs="+", type=_vip_arg, metavar="VIP",
                   help="virtual IP address served by this real server (repeatable; IPv4 or IPv6)")
    p.add_argument("--mode", choices=("dr", "tun", "nat"), default="dr" if required_mode_default else None,
                   help="forwarding method of the director (default dr)")
    p.add_argument("--interface", action="extend", nargs="+", metavar="IF",
                   help="set the ARP sysctls on these interfaces only (default: every interface that hears ARP)")
    p.add_argument("--director", type=_ip_arg, metavar="DIP",
                   help="nat: the director's address, expected as the default gateway")
    p.add_argument("--state-file", metavar="PATH",
                   help="where prep records what it changed, for undo "
                        "(default /var/lib/directord/realserver.json, realserver-<netns>.json in a namespace)")


def cmd_prep(args: argparse.Namespace) -> int:
    """``directord realserver prep`` (see :func:`prep`)."""
    request = _request_from_args(args)
    root = (args.persist_root or "/") if args.persist else None
    return prep(request, state_file=args.state_file or default_state_file(), dry_run=args.dry_run, persist_root=root)


def cmd_undo(args: argparse.Namespace) -> int:
    """``directord realserver undo`` (see :func:`undo`)."""
    return undo(state_file=args.state_file or default_state_file(), dry_run=args.dry_run)


def cmd_status(args: argparse.Namespace) -> int:
    """``directord realserver status``: the request given, else the one recorded by prep (see :func:`status`)."""
    request = _request_from_args(args)
    if not args.vip and not args.director:
        try:
            doc = load_state(args.state_file or default_state_file())
        except RealServerError as exc:
            _err(str(exc))
            return 1
        if doc is None or "request" not in doc:
            _err("give --vip (and --mode), or run prep first")
            return 1
        recorded = Request.from_json(doc["request"])
        request = Request(recorded.vips, args.mode or recorded.mode,
                          request.interfaces or recorded.interfaces, recorded.director)
    return status(request, as_json=args.json)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``directord realserver prep|undo|status`` on the top-level subparsers ``sub``."""
    rs = sub.add_parser("realserver", help="prepare this host as a real server (VIP, ARP and rp_filter sysctls)")
    rssub = rs.add_subparsers(dest="realserver_command", required=True)

    p = rssub.add_parser("prep", help="configure the VIPs and sysctls a real server needs (idempotent)")
    _add_request_args(p, required_mode_default=True)
    p.add_argument("--dry-run", action="store_true", help="print every change, change nothing")
    p.add_argument("--persist", action="store_true",
                   help=f"also write /{SYSCTL_CONF}, /{ENV_FILE} and install and enable {UNIT_NAME}")
    p.add_argument("--persist-root", metavar="DIR", help="write the --persist files below DIR instead of /")
    p.set_defaults(func=cmd_prep)

    u = rssub.add_parser("undo", help="revert what prep changed (recorded in the state file)")
    u.add_argument("--state-file", metavar="PATH", help="the state file prep wrote (same default as prep)")
    u.add_argument("--dry-run", action="store_true", help="print what would be reverted")
    u.set_defaults(func=cmd_undo)

    s = rssub.add_parser("status", help="what is in place and what is missing; exit 0 only when ready")
    _add_request_args(s, required_mode_default=False)
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_status)


#: Copy of etc/directord-realserver.service, used when that file is not installed.
UNIT_FALLBACK = """\
[Unit]
Description=directord: prepare this host as an LVS real server (VIPs, ARP and rp_filter sysctls)
Documentation=man:ipvsadm(8)
# Before the network comes up, so the host never answers ARP for a VIP it holds.
DefaultDependencies=no
After=systemd-sysctl.service systemd-modules-load.service local-fs.target
Before=network-pre.target shutdown.target
Wants=network-pre.target
Conflicts=shutdown.target
ConditionPathExists=/etc/default/directord-realserver

[Service]
Type=oneshot
RemainAfterExit=yes
# DIRECTORD_REALSERVER_ARGS holds the prep arguments ("--vip VIP ... --mode dr"),
# written by `directord realserver prep --persist`.
EnvironmentFile=/etc/default/directord-realserver
ExecStart=/usr/local/bin/directord realserver prep $DIRECTORD_REALSERVER_ARGS

[Install]
WantedBy=multi-user.target
"""
