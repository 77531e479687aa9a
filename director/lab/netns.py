"""Network-namespace building blocks and the DR/NAT/TUN lab topology.

Everything here acts inside named network namespaces (``/run/netns/<name>``,
the convention of iproute2's ``ip netns``); nothing touches the links of the
namespace the caller runs in. The kernel switches namespaces per *thread*
(``setns(2)`` with ``CLONE_NEWNET`` changes only the calling thread), so every
operation runs in a short-lived worker thread that enters the namespace,
does its work and exits: the caller's thread, and any asyncio event loop on
it, never changes namespace. Sockets keep the namespace they were created in,
so a socket made in such a thread can be used from any thread afterwards.

Links, addresses and routes go through pyroute2's netlink API (``IPRoute``
from :mod:`ha.rtnl`, opened inside the worker thread), not ``ip``
subprocesses: starting processes is the slowest thing in the test VM.
Sysctls are plain writes to ``/proc/sys`` (:mod:`director.sysctl`) from a
thread inside the namespace (``/proc/sys/net`` resolves against the
namespace of the reading/writing thread). Long-lived programs (daemons, HTTP
servers) are started with ``ip netns exec`` because a process, unlike a
thread, must be started in the namespace.

The :class:`Lab` builds the classic director topology: a "switch" namespace
holding a bridge, and namespaces ``client``, ``dir1`` (the director) and
``rs1..rsN`` (real servers), each with an ``eth0`` veth plugged into the
bridge. See :func:`plan_lab` for the address plan and the per-mode
preparation of real servers (dr, nat, tun).
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from director.sysctl import proc_path, read_sysctl, write_sysctl
from ha.rtnl import in_thread, iproute, netlink_error, netns_create, netns_remove

log = logging.getLogger(__name__)

T = TypeVar("T")

NETNS_RUN_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000  # include/uapi/linux/sched.h
IFA_F_NODAD = 0x02  # include/uapi/linux/if_addr.h: skip IPv6 duplicate address detection
#: Bond of the ``bond`` lab option (pyroute2 names of IFLA_BOND_* attributes):
#: mode 2 = balance-xor (BOND_MODE_XOR), xmit_hash_policy 1 = layer3+4
#: (BOND_XMIT_POLICY_LAYER34), both from include/uapi/linux/if_bonding.h;
#: miimon in milliseconds.
BOND_OPTIONS = {"bond_mode": 2, "bond_xmit_hash_policy": 1, "bond_miimon": 100}

#: Repository root (holds the ``director`` package), put on PYTHONPATH of lab processes.
_REPO_ROOT = Path(__file__).resolve().parents[2]

_libc = ctypes.CDLL(None, use_errno=True)


# --- namespaces ----------------------------------------------------------------


def netns_path(name: str) -> str:
    """``/run/netns/<name>``, the bind mount that keeps a named namespace alive."""
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"invalid namespace name {name!r}")
    return os.path.join(NETNS_RUN_DIR, name)


def list_netns() -> list[str]:
    """Names of the named network namespaces (sorted); [] when there are none."""
    try:
        return sorted(os.listdir(NETNS_RUN_DIR))
    except FileNotFoundError:
        return []


def netns_exists(name: str) -> bool:
    """True if the named namespace exists."""
    return os.path.exists(netns_path(name))


def create_netns(name: str, *, exist_ok: bool = False, lo_up: bool = True) -> None:
    """Create the named network namespace and bring its ``lo`` up.

    Uses ``pyroute2.netns.create`` (`ha.rtnl.netns_create`; the same ``/run/netns`` bind-mount scheme
    as ``ip netns add``, so ``ip netns exec`` sees it).

    Raises:
        FileExistsError: it exists and ``exist_ok`` is false.
        OSError: the kernel refused (not root, no namespace support).
    """
    path = netns_path(name)
    if os.path.exists(path):
        if not exist_ok:
            raise FileExistsError(errno.EEXIST, "network namespace exists", name)
    else:
        netns_create(name)
    if lo_up:
        link_set(name, "lo", up=True)


def pids_in_netns(name: str) -> list[int]:
    """PIDs of the processes whose network namespace is the named one.

    Compares ``/proc/<pid>/ns/net`` with the namespace's bind mount (device
    and inode). Returns [] if the namespace does not exist.
    """
    try:
        st = os.stat(netns_path(name))
    except FileNotFoundError:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            pst = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        if (pst.st_dev, pst.st_ino) == (st.st_dev, st.st_ino):
            pids.append(int(entry))
    return pids


def kill_netns_processes(name: str, *, grace_s: float = 2.0) -> list[int]:
    """SIGTERM every process in the namespace, SIGKILL those left after ``grace_s`` seconds.

    Returns the PIDs that were signalled. Never signals the calling process.
    """
    me = os.getpid()
    pids = [p for p in pids_in_netns(name) if p != me]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if _alive(p)]
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            # state "Z" (zombie) counts as gone
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def delete_netns(name: str, *, kill: bool = True, missing_ok: bool = True) -> None:
    """Delete the named namespace (its links go with it once nothing holds it).

    With ``kill`` the processes inside are terminated first (see
    :func:`kill_netns_processes`); otherwise they keep the namespace alive,
    unnamed, until they exit.

    Raises:
        FileNotFoundError: it does not exist and ``missing_ok`` is false.
    """
    path = netns_path(name)
    if not os.path.exists(path):
        if missing_ok:
            return
        raise FileNotFoundError(errno.ENOENT, "no such network namespace", name)
    if kill:
        kill_netns_processes(name)
    netns_remove(name)


def cleanup_netns(prefix: str) -> list[str]:
    """Delete every namespace named ``<prefix>-*`` (and kill its processes).

    Idempotent: leftovers of an interrupted run go, nothing else is touched.
    Returns the names deleted.
    """
    if not prefix:
        raise ValueError("empty prefix")
    gone = []
    for name in list_netns():
        if name.startswith(prefix + "-"):
            try:
                delete_netns(name)
                gone.append(name)
            except OSError as e:
                log.warning("cannot delete namespace %s: %s", name, e)
    return gone


# --- running code inside a namespace ----------------------------------------------


def _setns(name: str) -> None:
    fd = os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({name}): {os.strerror(err)}")
    finally:
        os.close(fd)


def enter_netns(name: str) -> None:
    """Move the *calling thread* into namespace ``name`` for good (``setns(2)``).

    Only for a dedicated thread that does all its work there and then exits
    (a drill's client); everything else uses :func:`call_in_netns`.

    Raises:
        OSError: the namespace does not exist or cannot be entered.
    """
    _setns(name)


def call_in_netns(ns: str | None, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn(*args, **kwargs)`` in a new thread that has entered namespace ``ns``.

    Blocks until it returns; returns its result or re-raises its exception.
    ``ns`` None runs it in the caller's namespace (still in a fresh thread,
    which has no running asyncio loop, so pyroute2's synchronous API works
    even when called from an event-loop thread). The thread exits afterwards,
    so no thread is ever left in a namespace.

    Raises:
        OSError: the namespace does not exist or cannot be entered.
    """

    def runner() -> T:
        if ns is not None:
            _setns(ns)
        return fn(*args, **kwargs)

    return in_thread(runner, name=f"netns-{ns}")


def socket_in_netns(
    ns: str | None, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM, proto: int = 0
) -> socket.socket:
    """A new socket living in namespace ``ns``, usable from any thread.

    Created by a short-lived thread that ``setns()``es (no process is
    started). The caller owns and must close it.

    Raises:
        OSError: namespace missing, or the socket cannot be created.
    """
    return call_in_netns(ns, socket.socket, family, type, proto)


def _family_of(addr: str) -> int:
    return socket.AF_INET6 if ipaddress.ip_address(addr).version == 6 else socket.AF_INET


def http_get(
    ns: str | None,
    addr: str,
    port: int = 80,
    path: str = "/",
    timeout: float = 1.0,
    *,
    host: str | None = None,
) -> tuple[int, str]:
    """One HTTP/1.0 GET from namespace ``ns`` over a fresh TCP connection.

    ``addr`` is an IPv4/IPv6 address (a URL ``http://addr[:port]/path`` is
    accepted too and overrides ``port``/``path``); ``timeout`` is in seconds
    and bounds the whole exchange. Returns ``(status, body)`` with the body
    decoded as UTF-8 (replacement on errors). No process is spawned.

    Raises:
        TimeoutError: no complete answer within ``timeout``.
        OSError: connection refused/reset, unreachable, namespace missing.
        ValueError: the answer is not an HTTP response.
    """
    if "://" in addr:
        addr, port, path = _split_url(addr, port)
    deadline = time.monotonic() + timeout
    sock = socket_in_netns(ns, _family_of(addr), socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect((addr, port))
        hosthdr = host or (f"[{addr}]" if ":" in addr else addr)
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {hosthdr}\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"http_get {addr}:{port}{path}: no complete answer in {timeout} s")
            sock.settimeout(left)
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    except TimeoutError as e:  # socket.timeout is TimeoutError on 3.10+, keep the message useful
        raise TimeoutError(f"http_get {addr}:{port}{path}: timed out after {timeout} s") from e
    finally:
        sock.close()
    return parse_http_response(b"".join(chunks))


def _split_url(url: str, default_port: int) -> tuple[str, int, str]:
    rest = url.split("://", 1)[1]
    hostport, _, path = rest.partition("/")
    path = "/" + path
    if hostport.startswith("["):
        host, _, after = hostport[1:].partition("]")
        port = int(after[1:]) if after.startswith(":") else default_port
    elif hostport.count(":") == 1:
        host, p = hostport.split(":")
        port = int(p)
    else:
        host, port = hostport, default_port
    return host, port, path


def parse_http_response(raw: bytes) -> tuple[int, str]:
    """``(status, body)`` of a complete HTTP/1.x response (RFC 9112 status line).

    Raises:
        ValueError: empty or malformed response.
    """
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = raw.partition(b"\n\n")
    status_line = head.split(b"\n", 1)[0].strip()
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise ValueError(f"not an HTTP response: {raw[:80]!r}")
    return int(parts[1]), body.decode("utf-8", "replace")


def tcp_connectable(ns: str | None, addr: str, port: int, timeout: float = 0.5) -> bool:
    """True if a TCP connection to ``addr:port`` from ``ns`` succeeds within ``timeout`` seconds."""
    sock = socket_in_netns(ns, _family_of(addr), socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect((addr, port))
        return True
    except OSError:
        return False
    finally:
        sock.close()


def wait_until(pred: Callable[[], bool], timeout: float, interval: float = 0.1, what: str = "condition") -> None:
    """Poll ``pred`` every ``interval`` seconds until true.

    Raises:
        TimeoutError: still false after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not reached within {timeout} s")
        time.sleep(interval)


def netns_exec_argv(ns: str, argv: Sequence[str]) -> list[str]:
    """The argv that runs ``argv`` inside ``ns``: ``ip netns exec <ns> ...``."""
    return ["ip", "netns", "exec", ns, *argv]


def run_in_netns(ns: str, argv: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen:
    """Start a long-lived process inside ``ns`` (``ip netns exec``); returns the Popen.

    ``popen_kwargs`` go to :class:`subprocess.Popen` unchanged. The caller
    stops and waits for it. A process, unlike a thread, cannot be moved into
    a namespace after the fact, and ``ip netns exec`` also mounts a matching
    ``/sys`` and applies ``/etc/netns/<ns>``.
    """
    netns_path(ns)  # validates the name
    return subprocess.Popen(netns_exec_argv(ns, argv), **popen_kwargs)


def exec_in_netns(
    ns: str,
    argv: Sequence[str],
    *,
    input: str | None = None,
    check: bool = True,
    timeout: float | None = 60.0,
) -> subprocess.CompletedProcess:
    """Run a short command in ``ns`` to completion (text mode, output captured).

    ``timeout`` in seconds. Use sparingly on timed paths: in the VM each
    process start costs about 0.1 s.

    Raises:
        subprocess.CalledProcessError: non-zero exit with ``check``.
        subprocess.TimeoutExpired: it ran longer than ``timeout``.
    """
    return subprocess.run(
        netns_exec_argv(ns, argv), input=input, capture_output=True, text=True, check=check, timeout=timeout
    )


# --- links, addresses, routes, sysctls ----------------------------------------------


def _ipr():
    return iproute()


def _index(ipr, ifname: str) -> int:
    idx = ipr.link_lookup(ifname=ifname)
    if not idx:
        raise FileNotFoundError(errno.ENODEV, "no such interface", ifname)
    return idx[0]


def add_veth(ns: str | None, ifname: str, peer_ns: str | None, peer_ifname: str, *, up: bool = True) -> None:
    """Create a veth pair: ``ifname`` in ``ns`` and ``peer_ifname`` in ``peer_ns``.

    The peer is created directly in ``peer_ns`` (``IFLA_NET_NS_FD`` in the
    peer's link info), so its name only has to be free there. With ``up``
    both ends are brought up.

    Raises:
        pyroute2.NetlinkError: e.g. code 17 (EEXIST) if a name is taken.
    """
    peer: dict[str, Any] = {"ifname": peer_ifname}
    if peer_ns is not None and peer_ns != ns:
        peer["net_ns_fd"] = peer_ns

    def work():
        with _ipr() as ipr:
            ipr.link("add", ifname=ifname, kind="veth", peer=peer)
            if up:
                ipr.link("set", index=_index(ipr, ifname), state="up")
            if up and (peer_ns is None or peer_ns == ns):
                ipr.link("set", index=_index(ipr, peer_ifname), state="up")

    call_in_netns(ns, work)
    if up and peer_ns is not None and peer_ns != ns:
        link_set(peer_ns, peer_ifname, up=True)


def add_bridge(ns: str | None, ifname: str, *, up: bool = True) -> None:
    """Create a Linux bridge (STP off, forward delay 0, so ports forward at once).

    Raises:
        pyroute2.NetlinkError: e.g. 17 (EEXIST).
    """

    def work():
        with _ipr() as ipr:
            ipr.link("add", ifname=ifname, kind="bridge", br_stp_state=0, br_forward_delay=0)
            if up:
                ipr.link("set", index=_index(ipr, ifname), state="up")

    call_in_netns(ns, work)


def set_master(ns: str | None, ifname: str, master: str | None) -> None:
    """Enslave ``ifname`` to bridge/bond ``master`` (None: release it)."""

    def work():
        with _ipr() as ipr:
            m = _index(ipr, master) if master else 0
            ipr.link("set", index=_index(ipr, ifname), master=m)

    call_in_netns(ns, work)


def link_set(ns: str | None, ifname: str, *, up: bool) -> None:
    """Set a link administratively up or down.

    Raises:
        FileNotFoundError: no such interface in ``ns``.
    """

    def work():
        with _ipr() as ipr:
            ipr.link("set", index=_index(ipr, ifname), state="up" if up else "down")

    call_in_netns(ns, work)


def link_exists(ns: str | None, ifname: str) -> bool:
    """True if ``ifname`` exists in ``ns``."""

    def work():
        with _ipr() as ipr:
            return bool(ipr.link_lookup(ifname=ifname))

    return call_in_netns(ns, work)


def link_mac(ns: str | None, ifname: str) -> str:
    """The link-layer address of ``ifname`` in ``ns`` (``"aa:bb:cc:dd:ee:ff"``).

    Read over netlink (``IFLA_ADDRESS``): ``/sys/class/net`` shows the
    namespace that mounted ``/sys``, not the calling thread's.

    Raises:
        FileNotFoundError: no such interface.
    """

    def work():
        with _ipr() as ipr:
            return ipr.get_links(_index(ipr, ifname))[0].get_attr("IFLA_ADDRESS")

    return call_in_netns(ns, work)


def delete_link(ns: str | None, ifname: str, *, missing_ok: bool = True) -> None:
    """Delete a link (a veth takes its peer with it)."""

    def work():
        with _ipr() as ipr:
            idx = ipr.link_lookup(ifname=ifname)
            if not idx:
                if missing_ok:
                    return
                raise FileNotFoundError(errno.ENODEV, "no such interface", ifname)
            ipr.link("del", index=idx[0])

    call_in_netns(ns, work)


def _addr_kwargs(cidr: str) -> dict[str, Any]:
    iface = ipaddress.ip_interface(cidr)
    kw: dict[str, Any] = {"address": str(iface.ip), "prefixlen": iface.network.prefixlen}
    if iface.version == 6:
        kw["flags"] = IFA_F_NODAD
    elif iface.network.prefixlen < 31:
        kw["broadcast"] = str(iface.network.broadcast_address)  # as `ip addr add ... brd +`
    return kw


def add_address(ns: str | None, ifname: str, cidr: str, *, exist_ok: bool = False) -> None:
    """Add ``cidr`` (``"10.77.0.10/24"``, ``"fd77::10/64"``) to ``ifname``.

    IPv6 addresses are added with ``IFA_F_NODAD`` (usable at once; the lab
    plans unique addresses).

    Raises:
        pyroute2.NetlinkError: code 17 (EEXIST) if present and not ``exist_ok``.
    """

    def work():
        with _ipr() as ipr:
            try:
                ipr.addr("add", index=_index(ipr, ifname), **_addr_kwargs(cidr))
            except netlink_error() as e:
                if not (exist_ok and e.code == errno.EEXIST):
                    raise

    call_in_netns(ns, work)


def del_address(ns: str | None, ifname: str, cidr: str, *, missing_ok: bool = True) -> None:
    """Remove ``cidr`` from ``ifname``.

    Raises:
        pyroute2.NetlinkError: code 99 (EADDRNOTAVAIL) if absent and not ``missing_ok``.
    """

    def work():
        with _ipr() as ipr:
            kw = _addr_kwargs(cidr)
            kw.pop("flags", None)
            try:
                ipr.addr("del", index=_index(ipr, ifname), **kw)
            except netlink_error() as e:
                if not (missing_ok and e.code == errno.EADDRNOTAVAIL):
                    raise

    call_in_netns(ns, work)


def list_addresses(ns: str | None, ifname: str | None = None) -> list[str]:
    """Addresses in ``ns`` as ``"addr/prefixlen"`` strings (optionally of one link)."""

    def work():
        with _ipr() as ipr:
            kw = {"index": _index(ipr, ifname)} if ifname else {}
            return [f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}" for a in ipr.get_addr(**kw)]

    return call_in_netns(ns, work)


def add_route(
    ns: str | None, dst: str, *, gateway: str | None = None, ifname: str | None = None, replace: bool = True
) -> None:
    """Add (or replace) a route; ``dst`` is a prefix or ``"default"``/``"default6"``.

    Raises:
        pyroute2.NetlinkError: e.g. 101 (ENETUNREACH) when the gateway is not on-link.
    """

    def work():
        with _ipr() as ipr:
            kw: dict[str, Any] = {}
            if dst in ("default", "default6"):
                kw["dst"] = "::/0" if dst == "default6" or (gateway and ":" in gateway) else "0.0.0.0/0"
            else:
                kw["dst"] = str(ipaddress.ip_network(dst, strict=False))
            if gateway:
                kw["gateway"] = gateway
            if ifname:
                kw["oif"] = _index(ipr, ifname)
            ipr.route("replace" if replace else "add", **kw)

    call_in_netns(ns, work)


def _sysctl_key(key: str) -> str:
    """The path form (`director.sysctl`) of a key as the lab takes it (see `sysctl_path`)."""
    rel = key if "/" in key else key.replace(".", "/")
    rel = rel.lstrip("/")
    if rel.startswith("proc/sys/"):
        rel = rel[len("proc/sys/") :]
    return rel


def sysctl_path(key: str) -> str:
    """``/proc/sys`` path of a sysctl key.

    ``"net.ipv4.conf.eth0.arp_ignore"`` -> ``/proc/sys/net/ipv4/conf/eth0/arp_ignore``;
    a key containing ``/`` is taken as a path below ``/proc/sys`` as is (needed
    for interface names with dots, such as ``eth0.100``).

    Raises:
        ValueError: a ``..`` component (`director.sysctl.proc_path`).
    """
    return proc_path(_sysctl_key(key))


def set_sysctls(ns: str | None, values: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> None:
    """Write sysctls inside ``ns`` (one thread for all of them), in order.

    Raises:
        FileNotFoundError: unknown key (e.g. an interface that does not exist).
    """
    items = list(values.items() if isinstance(values, Mapping) else values)

    def work():
        for key, value in items:
            write_sysctl(_sysctl_key(key), value)

    call_in_netns(ns, work)


def set_sysctl(ns: str | None, key: str, value: Any) -> None:
    """Write one sysctl inside ``ns`` (see :func:`set_sysctls`)."""
    set_sysctls(ns, [(key, value)])


def get_sysctl(ns: str | None, key: str) -> str:
    """Read one sysctl inside ``ns`` (stripped text)."""

    def work():
        return read_sysctl(_sysctl_key(key))

    return call_in_netns(ns, work)


# --- the lab topology (pure plan) ---------------------------------------------------

Mode = Literal["dr", "nat", "tun"]


@dataclass(frozen=True)
class Node:
    """One namespace of the lab.

    ``role``: ``"client"``, ``"dir1"``.., ``"rs1"``..; ``ns``: namespace name
    (``<prefix>-<role>``); ``links``: ``(ifname, bridge)`` pairs, each link is
    a veth whose other end, named ``<role>-<ifname>`` (truncated to 15
    characters), is a port of ``bridge`` in the switch namespace;
    ``addresses``: ``(ifname, cidr)``; ``routes``: ``(dst, gateway)``;
    ``sysctls``: ``(key, value)`` in write order.
    """

    role: str
    ns: str
    links: tuple[tuple[str, str], ...]
    addresses: tuple[tuple[str, str], ...]
    routes: tuple[tuple[str, str], ...] = ()
    sysctls: tuple[tuple[str, str], ...] = ()
    tunnel: bool = False  # bring up tunl0 (ipip) and put the VIP on it
    #: ``(bond ifname, (slave ifnames...))``: bonds made of some of ``links``
    #: (balance-xor, layer3+4 hash, see :data:`BOND_OPTIONS`).
    bonds: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class LabPlan:
    """The complete address and preparation plan of a lab (no I/O).

    Addresses are strings without prefix length in the lookup maps:
    ``addr[role]`` is the node's address on the front subnet (for NAT real
    servers: on the inside subnet), ``vip`` the virtual IP, ``addr6``/
    ``vip6`` the IPv6 ones when ``ipv6`` was asked for (else empty / None).
    """

    prefix: str
    mode: Mode
    switch_ns: str
    bridges: tuple[str, ...]
    nodes: tuple[Node, ...]
    vip: str
    vip6: str | None
    addr: Mapping[str, str]
    addr6: Mapping[str, str]
    prefixlen: int
    prefixlen6: int
    directors: tuple[str, ...]
    real_servers: tuple[str, ...]
    client: str = "client"
    #: the directors' interface on the front subnet: ``eth0``, or ``bond0`` with ``bond``
    service_if: str = "eth0"
    #: the directors' heartbeat interface (``eth1`` on bridge ``hb0``), None without ``ha_link``
    heartbeat_if: str | None = None
    #: heartbeat-link address of each director (``{"dir1": "10.77.2.10"}``), empty without ``ha_link``
    hb_addr: Mapping[str, str] = field(default_factory=dict)
    #: ``(bridge, bridge)`` pairs joined by a veth pair in the switch namespace (leaf switches)
    bridge_links: tuple[tuple[str, str], ...] = ()
    #: NAT: the directors' inside interface and the real servers' default gateway
    inside_if: str | None = None
    nat_gateway: str | None = None

    def node(self, role: str) -> Node:
        """The node of a role; KeyError if there is none."""
        for n in self.nodes:
            if n.role == role:
                return n
        raise KeyError(role)


def _host(net: ipaddress._BaseNetwork, offset: int) -> str:
    addr = net.network_address + offset
    if addr not in net or addr == net.broadcast_address:
        raise ValueError(f"host offset {offset} outside {net}")
    return str(addr)


def port_name(role: str, ifname: str) -> str:
    """Name of the switch-side veth end for ``role``'s ``ifname`` (max 15 characters, IFNAMSIZ-1)."""
    name = role if ifname == "eth0" else f"{role}-{ifname}"
    if len(name) > 15:
        raise ValueError(f"interface name {name!r} longer than 15 characters")
    return name


def plan_lab(
    prefix: str,
    *,
    real_servers: int = 3,
    directors: int = 1,
    mode: Mode = "dr",
    subnet: str = "10.77.0.0/24",
    inside_subnet: str = "10.77.1.0/24",
    ipv6: bool = False,
    subnet6: str = "fd00:77::/64",
    inside_subnet6: str = "fd00:77:1::/64",
    ha_link: bool = False,
    heartbeat_subnet: str = "10.77.2.0/24",
    bond: bool = False,
    prepare_real_servers: bool = True,
) -> LabPlan:
    """Plan a lab: namespaces, links, addresses, routes and sysctls (pure).

    Front subnet (bridge ``br0``): client ``.2``, directors ``.10``, ``.11``..
    (DIPs), VIP ``.100``; real servers ``.21``, ``.22``.. on it for ``dr`` and
    ``tun``. For ``nat`` the real servers sit on the inside subnet (bridge
    ``br1``) at ``.21``.., each director has ``eth1`` at inside ``.1``, ``.2``..
    with ``net.ipv4.ip_forward=1``, and the real servers' default route points
    at ``dir1``'s inside address. IPv6 (``ipv6=True``) mirrors the same host
    numbers in ``subnet6``/``inside_subnet6``.

    Real-server preparation (LVS documentation, "LVS-DR"/"LVS-Tun"):

    * ``dr``: VIP/32 (VIP6/128) on ``lo``; ``arp_ignore=1`` and
      ``arp_announce=2`` on ``all``, ``lo`` and ``eth0`` (the kernel applies
      the larger of ``all`` and the device's value);
    * ``tun``: VIP/32 on ``tunl0`` (module ``ipip``), ARP settings as for dr,
      ``rp_filter=0`` on ``all``, ``default``, ``eth0`` and ``tunl0``
      (decapsulated packets arrive on tunl0 from the client's address);
    * ``nat``: nothing beyond the default route via the director.

    ``ha_link``: a separate heartbeat bridge ``hb0``; each director gets
    ``eth1`` on it at ``heartbeat_subnet`` ``.10``, ``.11``.. (as sites run
    heartbeat on a dedicated ``eth1``). NAT directors then use ``eth2`` for
    the inside subnet, and the real servers' default gateway is the floating
    inside address ``.254`` (``nat_gateway``), to be held by the active
    director together with the VIP.

    ``bond``: each director's front uplink is ``bond0``, a balance-xor bond
    (``xmit_hash_policy`` layer3+4) of ``eth0a`` and ``eth0b``; each leg is
    a port of its own bridge (``leaf1``, ``leaf2``: two leaf switches), and
    both leaf bridges are joined to ``br0`` (the service LAN) by a veth pair.
    Front addresses go on ``bond0``.

    ``prepare_real_servers`` false leaves the dr/tun preparation above out of
    the plan (no VIP, no ARP or rp_filter sysctls on the real servers), for a
    caller that prepares them with ``directord realserver prep``.

    Raises:
        ValueError: bad counts, mode or subnets too small.
    """
    if mode not in ("dr", "nat", "tun"):
        raise ValueError(f"unknown forwarding mode {mode!r}")
    if not 1 <= real_servers <= 70 or not 1 <= directors <= 10:
        raise ValueError("need 1..70 real servers and 1..10 directors")
    if not prefix or "/" in prefix or len(prefix) > 40:
        raise ValueError(f"invalid prefix {prefix!r}")
    front = ipaddress.ip_network(subnet)
    inside = ipaddress.ip_network(inside_subnet)
    front6 = ipaddress.ip_network(subnet6)
    inside6 = ipaddress.ip_network(inside_subnet6)
    hbnet = ipaddress.ip_network(heartbeat_subnet)
    if hbnet.version != 4 or hbnet.prefixlen > 24:
        raise ValueError("heartbeat_subnet must be an IPv4 /24 or larger")
    if front.version != 4 or inside.version != 4 or front6.version != 6 or inside6.version != 6:
        raise ValueError("subnet/inside_subnet must be IPv4, subnet6/inside_subnet6 IPv6")
    if front.prefixlen > 24 or inside.prefixlen > 24:
        raise ValueError("subnets must be /24 or larger")

    ns = lambda role: f"{prefix}-{role}"  # noqa: E731
    dir_roles = tuple(f"dir{i}" for i in range(1, directors + 1))
    rs_roles = tuple(f"rs{i}" for i in range(1, real_servers + 1))
    vip = _host(front, 100)
    vip6 = _host(front6, 0x100) if ipv6 else None
    addr: dict[str, str] = {"client": _host(front, 2)}
    addr6: dict[str, str] = {"client": _host(front6, 2)} if ipv6 else {}
    plen, plen6 = front.prefixlen, front6.prefixlen
    nodes: list[Node] = []

    client_addrs = [("eth0", f"{addr['client']}/{plen}")]
    if ipv6:
        client_addrs.append(("eth0", f"{addr6['client']}/{plen6}"))
    nodes.append(Node("client", ns("client"), (("eth0", "br0"),), tuple(client_addrs)))

    service_if = "bond0" if bond else "eth0"
    inside_if = ("eth2" if ha_link else "eth1") if mode == "nat" else None
    nat_gateway = (_host(inside, 254) if ha_link else _host(inside, 1)) if mode == "nat" else None
    hb_addr: dict[str, str] = {}
    for i, role in enumerate(dir_roles):
        addr[role] = _host(front, 10 + i)
        if ipv6:
            addr6[role] = _host(front6, 0x10 + i)
        bonds: tuple[tuple[str, tuple[str, ...]], ...] = ()
        if bond:
            links = [("eth0a", "leaf1"), ("eth0b", "leaf2")]
            bonds = (("bond0", ("eth0a", "eth0b")),)
        else:
            links = [("eth0", "br0")]
        a = [(service_if, f"{addr[role]}/{plen}")] + ([(service_if, f"{addr6[role]}/{plen6}")] if ipv6 else [])
        if ha_link:
            hb_addr[role] = _host(hbnet, 10 + i)
            links.append(("eth1", "hb0"))
            a.append(("eth1", f"{hb_addr[role]}/{hbnet.prefixlen}"))
        sysctls: list[tuple[str, str]] = []
        if mode == "nat":
            assert inside_if is not None
            links.append((inside_if, "br1"))
            a.append((inside_if, f"{_host(inside, 1 + i)}/{inside.prefixlen}"))
            sysctls.append(("net.ipv4.ip_forward", "1"))
            if ipv6:
                a.append((inside_if, f"{_host(inside6, 1 + i)}/{inside6.prefixlen}"))
                sysctls.append(("net.ipv6.conf.all.forwarding", "1"))
        nodes.append(Node(role, ns(role), tuple(links), tuple(a), (), tuple(sysctls), bonds=bonds))

    for i, role in enumerate(rs_roles):
        net4, net6 = (inside, inside6) if mode == "nat" else (front, front6)
        addr[role] = _host(net4, 21 + i)
        a = [("eth0", f"{addr[role]}/{net4.prefixlen}")]
        if ipv6:
            addr6[role] = _host(net6, 0x21 + i)
            a.append(("eth0", f"{addr6[role]}/{net6.prefixlen}"))
        routes: list[tuple[str, str]] = []
        sysctls = []
        tunnel = False
        if mode == "nat":
            assert nat_gateway is not None
            routes.append(("default", nat_gateway))
            if ipv6:
                routes.append(("default6", _host(inside6, 1)))
        elif prepare_real_servers:
            arp = []
            devs = ("all", "lo", "eth0") if mode == "dr" else ("all", "lo", "eth0", "tunl0")
            for dev in devs:
                arp += [(f"net.ipv4.conf.{dev}.arp_ignore", "1"), (f"net.ipv4.conf.{dev}.arp_announce", "2")]
            sysctls += arp
            if mode == "dr":
                a.append(("lo", f"{vip}/32"))
                if ipv6:
                    a.append(("lo", f"{vip6}/128"))
            else:
                tunnel = True
                a.append(("tunl0", f"{vip}/32"))
                sysctls += [(f"net.ipv4.conf.{dev}.rp_filter", "0") for dev in ("all", "default", "eth0", "tunl0")]
        nodes.append(
            Node(
                role,
                ns(role),
                (("eth0", "br1" if mode == "nat" else "br0"),),
                tuple(a),
                tuple(routes),
                tuple(sysctls),
                tunnel,
            )
        )

    bridges = ["br0"] + (["br1"] if mode == "nat" else [])
    if ha_link:
        bridges.append("hb0")
    if bond:
        bridges += ["leaf1", "leaf2"]
    return LabPlan(
        prefix=prefix,
        mode=mode,
        switch_ns=ns("sw"),
        bridges=tuple(bridges),
        nodes=tuple(nodes),
        vip=vip,
        vip6=vip6,
        addr=addr,
        addr6=addr6,
        prefixlen=plen,
        prefixlen6=plen6,
        directors=dir_roles,
        real_servers=rs_roles,
        service_if=service_if,
        heartbeat_if="eth1" if ha_link else None,
        hb_addr=hb_addr,
        bridge_links=(("leaf1", "br0"), ("leaf2", "br0")) if bond else (),
        inside_if=inside_if,
        nat_gateway=nat_gateway,
    )


# --- the lab (I/O) -------------------------------------------------------------------


@dataclass
class _HttpdProc:
    proc: subprocess.Popen
    argv: list[str]
    log_path: Path
    normal: bool  # started without --hang/--status
    hung: bool = False  # hang mode switched on by signal


class Lab:
    """A namespace lab of a client, director(s) and real servers on one bridge.

    Use as a context manager::

        with Lab("t1", real_servers=3) as lab:
            lab.exec(lab.director, ["ipvsadm", "-A", "-t", f"{lab.vip}:80", "-s", "rr"])
            status, body = lab.get("/")          # client -> VIP:80

    ``build()`` first deletes leftovers named ``<prefix>-*`` (an earlier run
    that was killed), then creates the switch namespace ``<prefix>-sw`` with
    the bridge(s), one namespace per node (see :func:`plan_lab`), the VIP on
    ``dir1``'s ``eth0`` (``vip_on_director``), and starts
    ``python -m director.lab.httpd --name rsN --port <http_port>`` in every
    real server (``start_httpd``), waiting until each accepts connections
    (``ready_timeout`` seconds). ``close()`` (also on exceptions and
    KeyboardInterrupt) kills the lab's processes and deletes its namespaces;
    it is idempotent.

    Not thread-safe: drive one Lab from one thread at a time. Every method
    may be called from an asyncio event-loop thread (netlink work happens in
    worker threads) but blocks it for its duration.

    Raises (from ``build``): OSError / pyroute2.NetlinkError on kernel
    refusal (not root, missing module such as ``ipip`` for ``tun``),
    TimeoutError if a real server's httpd does not come up.
    """

    def __init__(
        self,
        prefix: str = "dlab",
        *,
        real_servers: int = 3,
        directors: int = 1,
        mode: Mode = "dr",
        subnet: str = "10.77.0.0/24",
        inside_subnet: str = "10.77.1.0/24",
        ipv6: bool = False,
        ha_link: bool = False,
        bond: bool = False,
        prepare_real_servers: bool = True,
        vip_on_director: bool = True,
        http_port: int = 80,
        start_httpd: bool = True,
        ready_timeout: float = 60.0,
        log_dir: str | os.PathLike | None = None,
        python: str | None = None,
    ) -> None:
        self.plan = plan_lab(
            prefix,
            real_servers=real_servers,
            directors=directors,
            mode=mode,
            subnet=subnet,
            inside_subnet=inside_subnet,
            ipv6=ipv6,
            ha_link=ha_link,
            bond=bond,
            prepare_real_servers=prepare_real_servers,
        )
        self.prefix = prefix
        self.mode: Mode = mode
        self.http_port = http_port
        self.ready_timeout = ready_timeout
        self.python = python or sys.executable
        self._vip_on_director = vip_on_director
        self._start_httpd = start_httpd
        self._own_log_dir = log_dir is None
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix=f"{prefix}-lab-"))
        self._httpd: dict[str, _HttpdProc] = {}
        self._procs: list[subprocess.Popen] = []
        self._built = False

    # -- naming ----------------------------------------------------------------

    @property
    def client(self) -> str:
        """Namespace name of the client."""
        return self.ns("client")

    @property
    def director(self) -> str:
        """Namespace name of ``dir1``."""
        return self.ns("dir1")

    @property
    def directors(self) -> list[str]:
        """Namespace names of the directors, ``dir1`` first."""
        return [self.ns(r) for r in self.plan.directors]

    @property
    def real_servers(self) -> list[str]:
        """Roles of the real servers: ``["rs1", "rs2", ...]``."""
        return list(self.plan.real_servers)

    @property
    def switch(self) -> str:
        """Namespace name holding the bridge(s)."""
        return self.plan.switch_ns

    @property
    def vip(self) -> str:
        """The IPv4 VIP (front subnet ``.100``)."""
        return self.plan.vip

    @property
    def vip6(self) -> str | None:
        """The IPv6 VIP, or None without ``ipv6``."""
        return self.plan.vip6

    @property
    def dip(self) -> str:
        """``dir1``'s front address (DIP)."""
        return self.plan.addr["dir1"]

    def ns(self, role: str) -> str:
        """Namespace name of a role (``"client"``, ``"dir1"``, ``"rs2"``) or of a name already prefixed.

        Raises:
            KeyError: unknown role.
        """
        if role.startswith(self.prefix + "-"):
            return role
        if role == "sw":
            return self.plan.switch_ns
        return self.plan.node(role).ns

    def role(self, name: str) -> str:
        """The role of a namespace or role name (inverse of :meth:`ns`)."""
        return name[len(self.prefix) + 1 :] if name.startswith(self.prefix + "-") else name

    def addr(self, role: str) -> str:
        """IPv4 address of a role (for NAT real servers: the inside address)."""
        return self.plan.addr[self.role(role)]

    def rip(self, rs: str) -> str:
        """The RIP of real server ``rs`` (``"rs1"``)."""
        return self.addr(rs)

    @property
    def rips(self) -> list[str]:
        """RIPs in real-server order."""
        return [self.addr(r) for r in self.plan.real_servers]

    # -- life cycle ------------------------------------------------------------

    def __enter__(self) -> Lab:
        try:
            return self.build()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()

    def build(self) -> Lab:
        """Create everything (see the class doc); returns self."""
        plan = self.plan
        removed = cleanup_netns(self.prefix)
        if removed:
            log.info("removed leftover namespaces %s", removed)
        self._built = True
        self.log_dir.mkdir(parents=True, exist_ok=True)
        create_netns(plan.switch_ns)
        for br in plan.bridges:
            add_bridge(plan.switch_ns, br)
        for node in plan.nodes:
            create_netns(node.ns)
        # One worker thread per namespace for all of its netlink work.
        call_in_netns(plan.switch_ns, self._wire_switch)
        for node in plan.nodes:
            call_in_netns(node.ns, self._configure_node, node)
            if node.sysctls:
                set_sysctls(node.ns, node.sysctls)
        if self._vip_on_director:
            self.add_vip("dir1")
        if self._start_httpd:
            for rs in plan.real_servers:
                self.start_httpd(rs, wait=False)
            for rs in plan.real_servers:
                self.wait_httpd(rs)
        return self

    def _wire_switch(self) -> None:
        with _ipr() as ipr:
            for a, b in self.plan.bridge_links:
                ipr.link("add", ifname=f"{a}-{b}", kind="veth", peer={"ifname": f"{b}-{a}"})
                for port, bridge in ((f"{a}-{b}", a), (f"{b}-{a}", b)):
                    idx = _index(ipr, port)
                    ipr.link("set", index=idx, master=_index(ipr, bridge))
                    ipr.link("set", index=idx, state="up")
            for node in self.plan.nodes:
                for ifname, bridge in node.links:
                    port = port_name(node.role, ifname)
                    ipr.link("add", ifname=port, kind="veth", peer={"ifname": ifname, "net_ns_fd": node.ns})
                    idx = _index(ipr, port)
                    ipr.link("set", index=idx, master=_index(ipr, bridge))
                    ipr.link("set", index=idx, state="up")

    def _configure_node(self, node: Node) -> None:
        with _ipr() as ipr:
            if node.tunnel:
                # tunl0 appears in every namespace once the ipip module is loaded.
                idx = ipr.link_lookup(ifname="tunl0")
                if not idx:
                    raise FileNotFoundError(errno.ENODEV, "tunl0 missing (is the ipip module loaded?)", node.ns)
                ipr.link("set", index=idx[0], state="up")
            for bond, legs in node.bonds:
                ipr.link("add", ifname=bond, kind="bond", **BOND_OPTIONS)
                bidx = _index(ipr, bond)
                for leg in legs:  # a slave must be down while it is enslaved
                    lidx = _index(ipr, leg)
                    ipr.link("set", index=lidx, state="down")
                    ipr.link("set", index=lidx, master=bidx)
                ipr.link("set", index=bidx, state="up")
            for ifname, _bridge in node.links:
                ipr.link("set", index=_index(ipr, ifname), state="up")
            for ifname, cidr in node.addresses:
                ipr.addr("add", index=_index(ipr, ifname), **_addr_kwargs(cidr))
            for dst, gw in node.routes:
                fam_dst = "::/0" if dst == "default6" else ("0.0.0.0/0" if dst == "default" else dst)
                ipr.route("replace", dst=fam_dst, gateway=gw)

    def close(self) -> None:
        """Stop the lab's processes and delete its namespaces (idempotent, never raises)."""
        for rs in list(self._httpd):
            try:
                self.stop_httpd(rs, timeout=2.0)
            except Exception as e:  # keep tearing down
                log.warning("stopping httpd %s: %s", rs, e)
        for p in self._procs:
            _terminate(p, 2.0)
        self._procs.clear()
        if self._built:
            try:
                cleanup_netns(self.prefix)
            except Exception as e:
                log.warning("deleting lab namespaces: %s", e)
            self._built = False
        if self._own_log_dir:
            for f in self.log_dir.glob("*"):
                try:
                    f.unlink()
                except OSError:
                    pass
            try:
                self.log_dir.rmdir()
            except OSError:
                pass

    # -- addresses and links ---------------------------------------------------

    def add_vip(self, role: str = "dir1", ifname: str | None = None) -> None:
        """Put the VIP (and VIP6) on ``role``'s ``ifname`` (default: the service
        interface, see `LabPlan.service_if`) as /32 (/128); no-op if present."""
        ifname = ifname or self.plan.service_if
        add_address(self.ns(role), ifname, f"{self.vip}/32", exist_ok=True)
        if self.vip6:
            add_address(self.ns(role), ifname, f"{self.vip6}/128", exist_ok=True)

    def del_vip(self, role: str = "dir1", ifname: str | None = None) -> None:
        """Remove the VIP (and VIP6) from ``role``'s ``ifname`` (default: the service interface); no-op if absent."""
        ifname = ifname or self.plan.service_if
        del_address(self.ns(role), ifname, f"{self.vip}/32")
        if self.vip6:
            del_address(self.ns(role), ifname, f"{self.vip6}/128")

    def link_set(self, role: str, *, up: bool, ifname: str = "eth0") -> None:
        """Take a node's link up/down (a "cable pull" seen from the node)."""
        link_set(self.ns(role), ifname, up=up)

    def port_set(self, role: str, *, up: bool, ifname: str = "eth0") -> None:
        """Take the switch-side port of a node's link up/down (a switch port failure).

        The node's own interface stays administratively up but loses carrier
        (a veth reports its peer's state), and keeps its addresses.
        """
        link_set(self.plan.switch_ns, port_name(self.role(role), ifname), up=up)

    def sysctl(self, role: str, key: str, value: Any = None) -> str:
        """Read (``value`` None) or write a sysctl in a node; returns the value read/written."""
        if value is None:
            return get_sysctl(self.ns(role), key)
        set_sysctl(self.ns(role), key, value)
        return str(value)

    # -- processes ---------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        pp = env.get("PYTHONPATH")
        env["PYTHONPATH"] = str(_REPO_ROOT) + (os.pathsep + pp if pp else "")
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def popen(self, role: str, argv: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen:
        """Start a process in a node (``ip netns exec``); the lab stops it on close."""
        popen_kwargs.setdefault("env", self._env())
        p = run_in_netns(self.ns(role), argv, **popen_kwargs)
        self._procs.append(p)
        return p

    def exec(
        self,
        role: str,
        argv: Sequence[str],
        *,
        input: str | None = None,
        check: bool = True,
        timeout: float | None = 60.0,
    ) -> subprocess.CompletedProcess:
        """Run a short command in a node to completion (see :func:`exec_in_netns`)."""
        return exec_in_netns(self.ns(role), argv, input=input, check=check, timeout=timeout)

    def start_httpd(
        self,
        rs: str,
        *,
        hang: bool = False,
        status: int | None = None,
        port: int | None = None,
        wait: bool = True,
    ) -> subprocess.Popen:
        """(Re)start the HTTP server of real server ``rs`` (``"rs1"``).

        A running one is stopped first. ``hang``: accept and never answer;
        ``status``: answer every request with that HTTP status. With ``wait``
        block until it accepts connections (``ready_timeout`` seconds).
        Its output goes to ``<log_dir>/<rs>-httpd.log``.

        Raises:
            TimeoutError: not accepting connections in time.
        """
        rs = self.role(rs)
        if rs in self._httpd:
            self.stop_httpd(rs)
        port = port or self.http_port
        argv = [self.python, "-m", "director.lab.httpd", "--name", rs, "--port", str(port)]
        if hang:
            argv.append("--hang")
        if status is not None:
            argv += ["--status", str(status)]
        log_path = self.log_dir / f"{rs}-httpd.log"
        with open(log_path, "ab") as logf:
            proc = run_in_netns(
                self.ns(rs), argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, env=self._env()
            )
        self._httpd[rs] = _HttpdProc(proc, argv, log_path, normal=not hang and status is None)
        if wait:
            self.wait_httpd(rs, port=port)
        return proc

    def wait_httpd(self, rs: str, *, port: int | None = None, timeout: float | None = None) -> None:
        """Wait until ``rs``'s HTTP server accepts TCP connections on its RIP.

        Raises:
            TimeoutError: not within ``timeout`` (default ``ready_timeout``) seconds.
            RuntimeError: the server process exited (its log is in the message).
        """
        rs = self.role(rs)
        port = port or self.http_port
        h = self._httpd.get(rs)
        deadline = time.monotonic() + (timeout or self.ready_timeout)
        while True:
            if h is not None and h.proc.poll() is not None:
                raise RuntimeError(f"httpd of {rs} exited with {h.proc.returncode}: {self._tail(h.log_path)}")
            if tcp_connectable(self.ns(rs), self.addr(rs), port, timeout=0.5):
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"httpd of {rs} not accepting on {self.addr(rs)}:{port}: {self._tail(h.log_path) if h else ''}"
                )
            time.sleep(0.1)

    @staticmethod
    def _tail(path: Path, n: int = 2000) -> str:
        try:
            return path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop_httpd(self, rs: str, *, kill: bool = False, timeout: float = 10.0) -> None:
        """Stop ``rs``'s HTTP server: SIGTERM (SIGKILL with ``kill``, or after ``timeout`` seconds)."""
        rs = self.role(rs)
        h = self._httpd.pop(rs, None)
        if h is None:
            return
        if kill:
            h.proc.kill()
            h.proc.wait()
        else:
            _terminate(h.proc, timeout)

    def httpd(self, rs: str) -> subprocess.Popen | None:
        """The running HTTP server process of ``rs``, or None."""
        h = self._httpd.get(self.role(rs))
        return h.proc if h else None

    def set_hang(self, rs: str, hang: bool = True) -> None:
        """Switch ``rs``'s running HTTP server into (or out of) hang mode (SIGUSR1 / SIGUSR2).

        ``ip netns exec`` execs the command in place, so the Popen's pid is the server's.

        Raises:
            RuntimeError: no server running for ``rs``.
        """
        h = self._httpd.get(self.role(rs))
        if h is None or h.proc.poll() is not None:
            raise RuntimeError(f"no httpd running for {rs}")
        h.proc.send_signal(signal.SIGUSR1 if hang else signal.SIGUSR2)
        h.hung = hang

    def reset_real_servers(self) -> None:
        """Bring every real server back to normal: switch ports and links up, HTTP servers
        running, answering 200 and not hanging (restarted where needed).

        For fixtures shared by several tests. Waits for restarted servers (``ready_timeout``).
        """
        restarted = []
        for rs in self.plan.real_servers:
            node = self.plan.node(rs)
            for ifname, _bridge in node.links:
                link_set(self.plan.switch_ns, port_name(rs, ifname), up=True)
                link_set(node.ns, ifname, up=True)
            h = self._httpd.get(rs)
            if h is None or h.proc.poll() is not None or not h.normal:
                self.start_httpd(rs, wait=False)
                restarted.append(rs)
            elif h.hung:
                self.set_hang(rs, False)
        for rs in restarted:
            self.wait_httpd(rs)

    def get(
        self,
        path: str = "/",
        *,
        addr: str | None = None,
        port: int | None = None,
        timeout: float = 1.0,
        role: str = "client",
    ) -> tuple[int, str]:
        """HTTP GET from ``role`` (default the client) to ``addr`` (default the VIP); see :func:`http_get`.

        ``path`` may also be a whole URL (``"http://10.77.0.21:80/x"``), which then wins over ``addr``/``port``.
        """
        if "://" in path:
            return http_get(self.ns(role), path, port or self.http_port, "/", timeout)
        return http_get(self.ns(role), addr or self.vip, port or self.http_port, path, timeout)


def _terminate(p: subprocess.Popen, timeout: float) -> None:
    if p.poll() is not None:
        return
    try:
        p.terminate()
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    except ProcessLookupError:
        pass
