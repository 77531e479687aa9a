"""Adding and removing a VIP (an address resource) on the director, over netlink.

What heartbeat's ``IPaddr``/``IPaddr2`` resource agents do with ``ifconfig``
/ ``ip addr``, done with pyroute2's ``AsyncIPRoute`` (`ha.rtnl`) in the network namespace
of the calling thread (the daemon runs inside the director's namespace).
Announcing the VIP afterwards is :mod:`ha.announce`'s job.

Ownership: only addresses directord added are found (:func:`has_vip`) and
removed (:func:`remove_vip`), so an address an administrator configured by
hand is never taken away.

* IPv4: the address carries a label (``IFA_LABEL``, at most 15 characters,
  ``IFNAMSIZ`` - 1), by default ``<ifname>:dd`` (see :func:`vip_label`), the
  alias form ``ip addr``/``ifconfig`` show. The kernel compares the label
  when deleting (``inet_rtm_deladdr`` in ``net/ipv4/devinet.c``), so a
  removal never hits an unlabelled twin.
* IPv6 has no labels: the address carries ``IFA_PROTO`` = :data:`ADDR_PROTO`
  (the "address protocol", kernel 5.18+, ``include/uapi/linux/if_addr.h``),
  and is added with ``IFA_F_NODAD`` so it is usable at once (no duplicate
  address detection delay). On a kernel older than 5.18 (no ``IFA_PROTO``)
  any matching IPv6 address counts as ours.

IPv4 addresses carry ``IFA_PROTO`` too (informational). Adding an address
already present is a no-op, removing an absent one too.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import re
import socket
from typing import Any

from ha.announce import NoSuchInterface
from ha.events import AddressAdded, AddressRemoved, HAEventSink, emit
from ha.rtnl import async_iproute, netlink_error

log = logging.getLogger("directord.ha")

__all__ = [
    "ADDR_PROTO",
    "IFA_F_NODAD",
    "LABEL_TAG",
    "MAX_LABEL_LEN",
    "NoSuchInterface",
    "vip_label",
    "add_vip",
    "remove_vip",
    "has_vip",
    "kernel_has_ifa_proto",
]

#: include/uapi/linux/if_addr.h: skip IPv6 duplicate address detection.
IFA_F_NODAD = 0x02
#: ``IFA_PROTO`` value marking directord's addresses (kernel values are 0-3; 0xdd = "dd").
ADDR_PROTO = 0xDD
#: Suffix of directord's IPv4 address labels.
LABEL_TAG = "dd"
#: ``IFA_LABEL`` holds IFNAMSIZ (16) bytes including the NUL; longer labels get ERANGE.
MAX_LABEL_LEN = 15


def kernel_has_ifa_proto(release: str | None = None) -> bool:
    """True if the kernel of ``release`` (default: the running one, ``uname -r``) keeps an
    address's ``IFA_PROTO`` (Linux 5.18 and later); an unreadable release counts as true."""
    m = re.match(r"(\d+)\.(\d+)", release if release is not None else os.uname().release)
    return m is None or (int(m[1]), int(m[2])) >= (5, 18)


_HAS_IFA_PROTO = kernel_has_ifa_proto()


def vip_label(ifname: str, tag: str = LABEL_TAG) -> str:
    """The IPv4 address label directord uses on ``ifname``: ``"<ifname>:<tag>"``, at most 15 characters.

    When that is too long the interface name is cut (``"enp0s31f6.1234"`` ->
    ``"enp0s31f6.12:dd"``): the label only has to be stable, since addresses
    are always matched on their interface index as well.

    Raises:
        ValueError: empty ``ifname``, or a ``tag`` that is empty, holds ``:``
            or leaves no room for a name character.
    """
    if not ifname:
        raise ValueError("empty interface name")
    if not tag or ":" in tag or len(tag) > MAX_LABEL_LEN - 2:
        raise ValueError(f"bad label tag {tag!r}")
    room = MAX_LABEL_LEN - 1 - len(tag)
    return f"{ifname[:room]}:{tag}"


def _parse(resource: Any) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    try:
        return ipaddress.ip_interface(f"{resource.address}/{resource.prefixlen}")
    except ValueError as e:
        raise ValueError(f"bad address resource {resource}: {e}") from None


def _label_for(resource: Any, label: str | None) -> str:
    lab = label if label is not None else vip_label(resource.interface)
    if not lab or len(lab.encode()) > MAX_LABEL_LEN:
        raise ValueError(f"address label {lab!r} must have 1..{MAX_LABEL_LEN} bytes")
    return lab


def _index(ifname: str) -> int:
    """Index of ``ifname`` in the calling thread's namespace (``if_nametoindex(3)``: one ioctl,
    where a netlink ``RTM_GETLINK`` answer takes pyroute2 ~100x longer to decode)."""
    try:
        return socket.if_nametoindex(ifname)
    except OSError:
        raise NoSuchInterface(ifname) from None


def _matches(msg: Any, iface: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> bool:
    if msg["prefixlen"] != iface.network.prefixlen:
        return False
    # IFA_LOCAL is the address itself for IPv4 (IFA_ADDRESS is the peer on point-to-point links)
    text = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
    return text is not None and ipaddress.ip_address(text) == iface.ip


def _ours(msg: Any, version: int, label: str) -> bool:
    if version == 4:
        return msg.get_attr("IFA_LABEL") == label
    # the kernel reports IFA_PROTO only when non-zero (inet6_fill_ifaddr)
    return msg.get_attr("IFA_PROTO") == ADDR_PROTO or not _HAS_IFA_PROTO


async def _find(ipr: Any, index: int, iface: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> list[Any]:
    family = socket.AF_INET if iface.version == 4 else socket.AF_INET6
    return [m async for m in await ipr.get_addr(family=family, index=index) if _matches(m, iface)]


async def add_vip(resource: Any, *, label: str | None = None, on_event: HAEventSink | None = None) -> bool:
    """Configure ``resource`` (address, prefixlen, interface) on its interface.

    IPv4: labelled ``label`` (default :func:`vip_label`); IPv6: ``IFA_F_NODAD``;
    both marked with ``IFA_PROTO`` = :data:`ADDR_PROTO`.
    ``on_event`` receives an `ha.events.AddressAdded` when the address is added now;
    without it, that is logged.

    Returns:
        True if added now; False if the address was already there (a no-op).
        An address already present but not ours (no/other label, other
        protocol) is left alone with a warning: the VIP works, but
        :func:`remove_vip` will not remove it.

    Raises:
        NoSuchInterface: the interface does not exist in this namespace.
        ValueError: bad address, prefix length or label.
        pyroute2.NetlinkError: any other kernel refusal.
    """
    iface = _parse(resource)
    kw: dict[str, Any] = {"address": str(iface.ip), "prefixlen": iface.network.prefixlen, "proto": ADDR_PROTO}
    lab = _label_for(resource, label) if iface.version == 4 else ""
    if iface.version == 4:
        kw["label"] = lab
    else:
        kw["flags"] = IFA_F_NODAD
    async with async_iproute() as ipr:
        index = _index(resource.interface)
        try:
            await ipr.addr("add", index=index, **kw)
        except netlink_error() as e:
            if e.code != errno.EEXIST:
                raise
            present = await _find(ipr, index, iface)
            if not any(_ours(m, iface.version, lab) for m in present):
                log.warning("%s is already configured by someone else; it will not be removed on release", resource)
            return False
    emit(on_event, AddressAdded(str(resource)))
    return True


async def remove_vip(resource: Any, *, label: str | None = None, on_event: HAEventSink | None = None) -> bool:
    """Remove ``resource`` from its interface if it is ours (see the module notes).
    ``on_event`` receives an `ha.events.AddressRemoved` when it is removed; without it,
    that is logged.

    Returns:
        True if removed; False if absent, or present but not ours (left alone).

    Raises:
        NoSuchInterface: the interface does not exist in this namespace.
        ValueError: bad address, prefix length or label.
        pyroute2.NetlinkError: any other kernel refusal.
    """
    iface = _parse(resource)
    kw: dict[str, Any] = {"address": str(iface.ip), "prefixlen": iface.network.prefixlen}
    async with async_iproute() as ipr:
        index = _index(resource.interface)
        if iface.version == 4:
            kw["label"] = _label_for(resource, label)  # the kernel deletes only a label match
        else:
            present = await _find(ipr, index, iface)
            if not any(_ours(m, 6, "") for m in present):
                if present:
                    log.info("%s is not ours; not removed", resource)
                return False
        try:
            await ipr.addr("del", index=index, **kw)
        except netlink_error() as e:
            if e.code in (errno.EADDRNOTAVAIL, errno.ENOENT, errno.ESRCH):
                return False
            raise
    emit(on_event, AddressRemoved(str(resource)))
    return True


async def has_vip(resource: Any, *, label: str | None = None) -> bool:
    """True if ``resource`` is configured on its interface by us (label / protocol, see the module notes).

    Raises:
        NoSuchInterface: the interface does not exist in this namespace.
        ValueError: bad address, prefix length or label.
    """
    iface = _parse(resource)
    lab = _label_for(resource, label) if iface.version == 4 else ""
    async with async_iproute() as ipr:
        index = _index(resource.interface)
        return any(_ours(m, iface.version, lab) for m in await _find(ipr, index, iface))
