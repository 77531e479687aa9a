"""Tests of ha.vip: adding, finding and removing VIPs over netlink.

The label rule is pure; everything else needs root and a network namespace.
Each test builds its own namespace ``<PREFIX>-a`` with a veth pair
(``a0``/``a0p``) and runs ha.vip's coroutines on an event loop in a thread
inside it (the functions act on the calling thread's namespace). Addresses
are read back with pyroute2 from inside the namespace, independently of
ha.vip.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

import pytest
from netnsprobe import netns_problem, netns_skip

from director.lab import netns as N
from ha.model import Resource
from ha.vip import (
    ADDR_PROTO,
    IFA_F_NODAD,
    NoSuchInterface,
    add_vip,
    has_vip,
    kernel_has_ifa_proto,
    remove_vip,
    vip_label,
)

PREFIX = f"hvp{os.getpid()}"
VIP = "10.213.0.100"
VIP6 = "fd00:213::100"
IFA_F_TENTATIVE = 0x40


# --- pure ----------------------------------------------------------------------------------


def test_vip_label():
    assert vip_label("eth0") == "eth0:dd"
    assert vip_label("bond0", "x1") == "bond0:x1"
    assert vip_label("enp0s31f6.12") == "enp0s31f6.12:dd"  # exactly 15
    assert vip_label("enp0s31f6.123") == "enp0s31f6.12:dd"
    assert vip_label("enp0s31f6.1234") == "enp0s31f6.12:dd"
    assert vip_label("abcdefghijklmno") == "abcdefghijkl:dd"
    assert all(len(vip_label("x" * n)) <= 15 for n in range(1, 16))
    assert vip_label("enp0s31f6.1234") == vip_label("enp0s31f6.1234")  # stable
    for bad in (("",), ("eth0", ""), ("eth0", "a:b"), ("eth0", "t" * 14)):
        with pytest.raises(ValueError):
            vip_label(*bad)


def test_kernel_version_gate_for_ifa_proto():
    assert kernel_has_ifa_proto("5.18.0")
    assert kernel_has_ifa_proto("6.1.0-18-amd64")
    assert not kernel_has_ifa_proto("5.10.0-28-amd64")
    assert not kernel_has_ifa_proto("4.19.0")


# --- namespace tests -------------------------------------------------------------------------


_problem = netns_problem(PREFIX)
needs_netns = netns_skip(_problem)


@pytest.fixture
def ns():
    N.cleanup_netns(PREFIX)
    name = f"{PREFIX}-a"
    N.create_netns(name)
    try:
        N.add_veth(name, "a0", name, "a0p")
        yield name
    finally:
        N.cleanup_netns(PREFIX)


def run(ns: str, coro):
    """Run ``coro`` on a fresh event loop in a thread inside ``ns``."""
    return N.call_in_netns(ns, asyncio.run, coro)


def addrs(ns: str, ifname: str = "a0") -> dict[str, dict]:
    """``{"addr/prefix": {"label":..., "proto":..., "flags":...}}`` of ``ifname``, read with pyroute2."""

    def work():
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            idx = ipr.link_lookup(ifname=ifname)[0]
            out = {}
            for m in ipr.get_addr(index=idx):
                key = f"{m.get_attr('IFA_ADDRESS')}/{m['prefixlen']}"
                out[key] = {
                    "label": m.get_attr("IFA_LABEL"),
                    "proto": m.get_attr("IFA_PROTO"),
                    "flags": m.get_attr("IFA_FLAGS") or m["flags"],
                }
            return out

    return N.call_in_netns(ns, work)


@needs_netns
def test_ipv4_add_has_remove_are_idempotent(ns):
    r = Resource(VIP, 32, "a0")
    assert run(ns, has_vip(r)) is False
    assert run(ns, add_vip(r)) is True
    got = addrs(ns)[f"{VIP}/32"]
    assert got["label"] == "a0:dd"
    assert got["proto"] == ADDR_PROTO
    assert run(ns, add_vip(r)) is False  # already there: no-op
    assert run(ns, has_vip(r)) is True
    assert run(ns, has_vip(Resource(VIP, 24, "a0"))) is False  # another prefix length is another address
    assert run(ns, remove_vip(r)) is True
    assert f"{VIP}/32" not in addrs(ns)
    assert run(ns, remove_vip(r)) is False  # absent: no-op
    assert run(ns, has_vip(r)) is False


@needs_netns
def test_ipv4_address_without_our_label_is_left_alone(ns, caplog):
    r = Resource(VIP, 32, "a0")
    N.add_address(ns, "a0", f"{VIP}/32")  # configured by hand: label "a0"
    assert addrs(ns)[f"{VIP}/32"]["label"] == "a0"
    assert run(ns, has_vip(r)) is False
    assert run(ns, remove_vip(r)) is False
    assert f"{VIP}/32" in addrs(ns)
    with caplog.at_level(logging.WARNING, logger="directord.ha"):
        assert run(ns, add_vip(r)) is False
    assert "will not be removed" in caplog.text
    assert run(ns, remove_vip(r)) is False
    assert addrs(ns)[f"{VIP}/32"]["label"] == "a0"


@needs_netns
def test_ipv4_custom_label(ns):
    r = Resource(VIP, 32, "a0")
    assert run(ns, add_vip(r, label="a0:7")) is True
    assert addrs(ns)[f"{VIP}/32"]["label"] == "a0:7"
    assert run(ns, has_vip(r)) is False
    assert run(ns, has_vip(r, label="a0:7")) is True
    assert run(ns, remove_vip(r)) is False
    assert run(ns, remove_vip(r, label="a0:7")) is True
    assert f"{VIP}/32" not in addrs(ns)
    with pytest.raises(ValueError):
        run(ns, add_vip(r, label="a0:much-too-long"))


@needs_netns
def test_ipv6_nodad_usable_at_once_and_idempotent(ns):
    r = Resource(VIP6, 128, "a0")

    def add_and_bind():
        assert asyncio.run(add_vip(r)) is True
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        try:
            s.bind((VIP6, 0))  # a tentative (DAD pending) address cannot be bound
        finally:
            s.close()

    N.call_in_netns(ns, add_and_bind)
    got = addrs(ns)[f"{VIP6}/128"]
    assert got["flags"] & IFA_F_NODAD and not got["flags"] & IFA_F_TENTATIVE
    assert got["proto"] == ADDR_PROTO
    assert run(ns, add_vip(r)) is False
    assert run(ns, has_vip(r)) is True
    assert run(ns, remove_vip(r)) is True
    assert f"{VIP6}/128" not in addrs(ns)
    assert run(ns, remove_vip(r)) is False
    assert run(ns, has_vip(r)) is False


@needs_netns
def test_ipv6_address_not_ours_is_left_alone(ns):
    if not kernel_has_ifa_proto():
        pytest.skip("kernel older than 5.18 keeps no IFA_PROTO")
    r = Resource(VIP6, 128, "a0")
    N.add_address(ns, "a0", f"{VIP6}/128")  # by hand, no protocol mark
    assert run(ns, has_vip(r)) is False
    assert run(ns, remove_vip(r)) is False
    assert run(ns, add_vip(r)) is False
    assert f"{VIP6}/128" in addrs(ns)


@needs_netns
def test_missing_interface_is_named(ns):
    for coro_fn in (add_vip, has_vip, remove_vip):
        for r in (Resource(VIP, 32, "nope0"), Resource(VIP6, 128, "nope0")):
            with pytest.raises(NoSuchInterface, match="nope0"):
                run(ns, coro_fn(r))


@needs_netns
def test_bad_resources(ns):
    with pytest.raises(ValueError):
        run(ns, add_vip(Resource("10.213.0.300", 32, "a0")))
    with pytest.raises(ValueError):
        run(ns, add_vip(Resource(VIP, 33, "a0")))
    assert not [a for a in addrs(ns) if a.startswith("10.213.")]
