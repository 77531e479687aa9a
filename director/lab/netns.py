"""Network-namespace building blocks: namespaces, code and processes inside them, links,
addresses, routes and sysctls.

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

The lab built from these (`director.lab.site.Lab`, planned by
`director.lab.topology.plan_lab`) is the classic director topology: a "switch" namespace
holding a bridge, and namespaces ``client``, ``dir1`` (the director) and ``rs1..rsN`` (real
servers), each with an ``eth0`` veth plugged into the bridge.
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
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from director.sysctl import proc_path, read_sysctl, write_sysctl
from ha.rtnl import in_thread, iproute, netlink_error, netns_create, netns_remove

log = logging.getLogger("directord.lab")

T = TypeVar("T")

NETNS_RUN_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000  # include/uapi/linux/sched.h
IFA_F_NODAD = 0x02  # include/uapi/linux/if_addr.h: skip IPv6 duplicate address detection


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


def link_index(ipr: Any, ifname: str) -> int:
    """The index of ``ifname`` through the open rtnetlink socket ``ipr``.

    Raises:
        FileNotFoundError: (ENODEV) no such interface.
    """
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
                ipr.link("set", index=link_index(ipr, ifname), state="up")
            if up and (peer_ns is None or peer_ns == ns):
                ipr.link("set", index=link_index(ipr, peer_ifname), state="up")

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
                ipr.link("set", index=link_index(ipr, ifname), state="up")

    call_in_netns(ns, work)


def set_master(ns: str | None, ifname: str, master: str | None) -> None:
    """Enslave ``ifname`` to bridge/bond ``master`` (None: release it)."""

    def work():
        with _ipr() as ipr:
            m = link_index(ipr, master) if master else 0
            ipr.link("set", index=link_index(ipr, ifname), master=m)

    call_in_netns(ns, work)


def link_set(ns: str | None, ifname: str, *, up: bool) -> None:
    """Set a link administratively up or down.

    Raises:
        FileNotFoundError: no such interface in ``ns``.
    """

    def work():
        with _ipr() as ipr:
            ipr.link("set", index=link_index(ipr, ifname), state="up" if up else "down")

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
            return ipr.get_links(link_index(ipr, ifname))[0].get_attr("IFLA_ADDRESS")

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


def address_kwargs(cidr: str) -> dict[str, Any]:
    """pyroute2 ``addr`` arguments of ``cidr`` (``"10.0.0.1/24"``): address, prefix length, and
    the broadcast address (IPv4 below /31, as ``ip addr add ... brd +``) or ``IFA_F_NODAD``
    (IPv6: no duplicate address detection in a lab)."""
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
                ipr.addr("add", index=link_index(ipr, ifname), **address_kwargs(cidr))
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
            kw = address_kwargs(cidr)
            kw.pop("flags", None)
            try:
                ipr.addr("del", index=link_index(ipr, ifname), **kw)
            except netlink_error() as e:
                if not (missing_ok and e.code == errno.EADDRNOTAVAIL):
                    raise

    call_in_netns(ns, work)


def list_addresses(ns: str | None, ifname: str | None = None) -> list[str]:
    """Addresses in ``ns`` as ``"addr/prefixlen"`` strings (optionally of one link)."""

    def work():
        with _ipr() as ipr:
            kw = {"index": link_index(ipr, ifname)} if ifname else {}
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
                kw["oif"] = link_index(ipr, ifname)
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
