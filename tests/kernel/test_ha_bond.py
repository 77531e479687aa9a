"""A VIP on a bond: the takeover announcement goes out on the bond and on every slave.

A bond in a hash mode (balance-xor) sends a broadcast on one leg only, so the
switch behind the other leg would keep a stale entry; ``ha.announce`` sends
the gratuitous ARP pair and the unsolicited NA on the bond *and* on each
slave, always with the bond's MAC (see ha/announce.py).

Needs the ``bonding`` module, which the stock kernel of the test VM has (run
with ``flock /tmp/directord-vm.lock python -m director.lab.vm ... -- python -m
pytest tests/kernel/test_ha_bond.py``). Elsewhere the tests are skipped, or
fail under ``DIRECTORD_REQUIRE_KERNEL=1``.

Topology (namespaces made here, deleted afterwards): ``<PREFIX>-a`` holds
``bond0`` (balance-xor, mode 2, ``include/uapi/linux/if_bonding.h``) made of
``a1`` and ``a2``; each is a veth to its own leg ``b1`` / ``b2`` in
``<PREFIX>-b``, where AF_PACKET sockets capture what arrives on each leg
(two switch ports). Addresses: 10.214.0.1/24 (broadcast 10.214.0.255) on
bond0, VIPs 10.214.0.100 and fd00:214::100.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))

from hapair import (  # noqa: E402
    Capture,
    Director,
    decode_arp,
    decode_ipv6_na,
    is_garp_for,
    is_na_for,
    wait_for,
    write_authkeys,
)

from director.lab import netns as N  # noqa: E402
from ha.announce import Announcer, interfaces_for  # noqa: E402
from ha.model import Resource  # noqa: E402
from ha.vip import add_vip  # noqa: E402

pytestmark = pytest.mark.kernel

PREFIX = f"hbd{os.getpid()}"
VIP = "10.214.0.100"
VIP6 = "fd00:214::100"
LEGS = {"a1": "b1", "a2": "b2"}
#: The guest runs 10-25x slower than the host: deadlines for a daemon there.
SLOW = 120.0


def _bond_problem() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    name = f"{PREFIX}-probe"
    try:
        N.create_netns(name)

        def work():
            from pyroute2 import IPRoute

            with IPRoute() as ipr:
                ipr.link("add", ifname="bond0", kind="bond", bond_mode=2)

        N.call_in_netns(name, work)
    except Exception as e:
        return f"the kernel cannot create a bond here (bonding module missing?): {e}; runs in the test VM"
    finally:
        N.delete_netns(name)
    return None


@pytest.fixture
def bond():
    """``(ns A, ns B, bond MAC as bytes)``; torn down afterwards."""
    problem = _bond_problem()
    if problem:
        if os.environ.get("DIRECTORD_REQUIRE_KERNEL") == "1":
            pytest.fail(problem)
        pytest.skip(problem)
    N.cleanup_netns(PREFIX)
    a, b = f"{PREFIX}-a", f"{PREFIX}-b"
    try:
        N.create_netns(a)
        N.create_netns(b)
        N.set_sysctls(a, {"net.ipv6.conf.default.accept_dad": "0", "net.ipv6.conf.all.accept_dad": "0"})

        def build():
            from pyroute2 import IPRoute

            with IPRoute() as ipr:
                ipr.link("add", ifname="bond0", kind="bond", bond_mode=2)  # balance-xor: one leg per flow

        N.call_in_netns(a, build)
        for leg, peer in LEGS.items():
            N.add_veth(a, leg, b, peer, up=False)
            N.set_master(a, leg, "bond0")
            N.link_set(a, leg, up=True)
            N.link_set(b, peer, up=True)
        N.link_set(a, "bond0", up=True)
        N.exec_in_netns(a, ["ip", "addr", "add", "10.214.0.1/24", "brd", "+", "dev", "bond0"])
        yield a, b, bytes.fromhex(N.link_mac(a, "bond0").replace(":", ""))
    finally:
        N.cleanup_netns(PREFIX)


def _check_legs(caps: dict[str, Capture], bond_mac: bytes, since: float, timeout: float) -> None:
    """Each leg received a gratuitous ARP request and reply for VIP and an unsolicited NA for VIP6,
    all carrying the bond's MAC."""
    for peer, cap in caps.items():
        garps = [f for _, f in cap.wait(is_garp_for(VIP), 2, timeout, since)]
        assert len(garps) >= 2, f"{peer}: {len(garps)} gratuitous ARP frame(s)"
        arps = [decode_arp(f) for f in garps]
        assert {a["op"] for a in arps} == {1, 2}, f"{peer}: not a request/reply pair"
        for arp in arps:
            assert arp["sha"] == arp["src"] == bond_mac and arp["dst"] == b"\xff" * 6, (peer, arp)
            assert arp["spa"] == arp["tpa"] == VIP, (peer, arp)
        nas = [f for _, f in cap.wait(is_na_for(VIP6), 1, timeout, since)]
        assert nas, f"{peer}: no unsolicited NA"
        for frame in nas:
            na = decode_ipv6_na(frame)
            assert (na["type"], na["O"], na["S"], na["hlim"]) == (136, 1, 0, 255), (peer, na)
            assert na["target"] == VIP6 and na["tlla"] == na["src"] == bond_mac, (peer, na)
            assert na["daddr"] == "ff02::1", (peer, na)


def test_bond_announces_on_the_bond_and_every_slave(bond):
    """The announcer alone: one round for each VIP reaches both legs."""
    a, b, bond_mac = bond
    assert N.call_in_netns(a, interfaces_for, "bond0") == ["bond0", "a1", "a2"]
    caps = {peer: Capture(b, peer) for peer in LEGS.values()}
    try:
        N.call_in_netns(a, asyncio.run, add_vip(Resource(VIP6, 128, "bond0")))
        since = time.monotonic()

        def send():
            with Announcer() as an:
                return an.send_once("bond0", VIP), an.send_once("bond0", VIP6)

        assert N.call_in_netns(a, send) == (6, 3)  # (bond + 2 slaves) x (request, reply) / x one NA
        _check_legs(caps, bond_mac, since, 10)
    finally:
        for c in caps.values():
            c.close()


def test_directord_takes_a_vip_on_a_bond_and_announces_it_on_each_leg(bond, tmp_path: Path):
    """``directord run`` (an ha section alone, its peer absent): after initdead it takes the
    group, IPv4 and IPv6 VIPs on bond0, and both legs hear the announcements."""
    a, b, bond_mac = bond
    keys = write_authkeys(tmp_path / "authkeys")
    d = Director(
        None,
        "dir1",
        tmp_path,
        keys,
        netns=a,
        media=["bcast bond0"],
        resources=[f"dir1 {VIP}/32/bond0 {VIP6}/128/bond0"],
        announce_repeats=1,
    )
    caps = {peer: Capture(b, peer) for peer in LEGS.values()}
    try:
        since = time.monotonic()
        d.start()

        def holds() -> bool:
            addrs = {x.split("/")[0] for x in N.list_addresses(a, "bond0")}
            return {VIP, VIP6} <= addrs

        wait_for(holds, SLOW, "dir1 to take the VIPs on bond0", (d,), interval=0.2)
        _check_legs(caps, bond_mac, since, 30)
        assert d.status()["groups"][0]["held"] is True
    finally:
        for c in caps.values():
            c.close()
        d.kill()
