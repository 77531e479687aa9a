"""The host as `directord realserver` reads and changes it: :func:`gather` and :class:`KernelBackend`.

Both work in the network namespace of the calling thread: links, addresses
and routes through rtnetlink (pyroute2), sysctls through ``/proc/sys``
(which resolves per network namespace), VIP addresses through
:mod:`ha.vip` (directord's mark: IPv4 label ``<ifname>:dd``, IPv6
``IFA_PROTO``), kernel modules with ``modprobe``, the ``--persist`` files
atomically and durably (:mod:`ha.durable`). rtnetlink sockets come from
:mod:`ha.rtnl` (which imports pyroute2 on first use: ``realserver status``
and a dry run do not touch netlink), ``/proc/sys`` paths from :mod:`director.sysctl`.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import shutil
import socket
import subprocess
from types import SimpleNamespace
from typing import Literal

from director.sysctl import proc_path, read_sysctl, write_sysctl
from ha.durable import make_directories, remove_file, replace_symlink, write_file_atomic
from ha.readfile import ReadFileError
from ha.rtnl import iproute, netlink_error
from ha.vip import NoSuchInterface, add_vip, kernel_has_ifa_proto, remove_vip

from . import sysctl as rsysctl
from .model import KERNEL_LACKS_IPIP, Address, HostState, Link, RealServerError, Request, explain_error
from .statefile import read_text_file

#: Largest ``--persist`` file read back (sysctl.d file, EnvironmentFile, unit), bytes.
MAX_PERSIST_FILE_BYTES = 1 << 20

IFF_LOOPBACK = 0x8  # include/uapi/linux/if.h
IFF_NOARP = 0x80


def ipip_available() -> bool:
    """True when this kernel can decapsulate IP-in-IP: the ``ipip`` module is loaded
    (``/sys/module/ipip``) or ``modprobe -n -q ipip`` (a dry run, it loads nothing) finds it.

    False when neither holds, or when there is no ``modprobe``.

    Raises:
        OSError: ``modprobe`` is on the path but cannot be run.
    """
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
    try:
        with iproute() as ipr:
            links = []
            names = {}
            for msg in ipr.get_links():
                name = msg.get_attr("IFLA_IFNAME")
                flags = msg["flags"]
                names[msg["index"]] = name
                links.append(
                    Link(name, msg["index"], bool(flags & 1), bool(flags & IFF_LOOPBACK), bool(flags & IFF_NOARP))
                )
            addrs = []
            for msg in ipr.get_addr():
                text = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
                if text is None:
                    continue
                addrs.append(
                    Address(
                        names.get(msg["index"], str(msg["index"])),
                        text,
                        msg["prefixlen"],
                        msg.get_attr("IFA_LABEL"),
                        msg.get_attr("IFA_PROTO") or 0,
                    )
                )
            gws: dict[int, str | None] = {4: None, 6: None}
            for family, version in ((socket.AF_INET, 4), (socket.AF_INET6, 6)):
                for r in ipr.get_routes(family=family, table=254):
                    if r["dst_len"] == 0 and r.get_attr("RTA_GATEWAY"):
                        gws[version] = r.get_attr("RTA_GATEWAY")
                        break
    except netlink_error() as exc:
        raise RealServerError(f"reading links and addresses: {explain_error(exc)}") from None
    sysctls: dict[str, str] = {}
    for dev in os.listdir(proc_path("net/ipv4/conf")):
        for name in rsysctl.names():
            try:
                key = rsysctl.conf_key(dev, name)
                sysctls[key] = read_sysctl(key)
            except (OSError, ValueError):
                pass
    ipip: Literal["tunnel", "module", "absent"] = "absent"
    if any(lk.name == rsysctl.TUNNEL for lk in links):
        ipip = "tunnel"
    elif request is not None and request.mode == "tun" and ipip_available():
        ipip = "module"
    return HostState(tuple(links), tuple(addrs), sysctls, gws, ipip, kernel_has_ifa_proto())


class KernelBackend:  # method docstrings: see director.realserver.changes.Backend
    """:class:`~director.realserver.changes.Backend` on the running kernel, in the calling thread's network namespace.

    Sysctls through ``/proc/sys``; links through pyroute2; addresses through
    :func:`ha.vip.add_vip` / :func:`ha.vip.remove_vip` (label / ``IFA_PROTO``
    marking, ``IFA_F_NODAD`` for IPv6); modules with ``modprobe``; files
    and links written atomically and durably (`ha.durable`).
    """

    def read_sysctl(self, key: str) -> str | None:
        try:
            return read_sysctl(key)
        except FileNotFoundError:
            return None

    def write_sysctl(self, key: str, value: str) -> None:
        write_sysctl(key, value)

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
        return iproute()

    def _index(self, ipr, name: str) -> int:
        idx = ipr.link_lookup(ifname=name)
        if not idx:
            raise RealServerError(f"no such interface: {name}")
        return idx[0]

    def link_exists(self, name: str) -> bool:
        with self._ipr() as ipr:
            return bool(ipr.link_lookup(ifname=name))

    def create_tunnel(self, name: str) -> None:
        with self._ipr() as ipr:
            try:
                ipr.link("add", ifname=name, kind="ipip")
            except netlink_error() as exc:
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
        return asyncio.run(add_vip(self._resource(ifname, cidr), label=label))

    def remove_address(self, ifname: str, cidr: str, label: str | None) -> bool:
        try:
            return asyncio.run(remove_vip(self._resource(ifname, cidr), label=label))
        except NoSuchInterface:
            return False

    def read_file(self, path: str) -> str | None:
        try:
            return read_text_file(path, MAX_PERSIST_FILE_BYTES)
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
