"""Tests of ha.rtnl, the one owner of rtnetlink access: pyroute2 is imported late and once, the
constants and error class are pyroute2's, the worker thread returns and re-raises, and sockets
open in the calling thread's namespace or in a named one (root, namespaces named ``tr<pid>-*``)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from pathlib import Path

import pyroute2
import pytest
from netnsprobe import netns_problem, netns_skip
from pyroute2.netlink import NLM_F_REQUEST
from pyroute2.netlink.rtnl import RTM_GETLINK

from ha import rtnl

ROOT = Path(__file__).resolve().parents[2]
PREFIX = f"tr{os.getpid()}"


def test_constants_and_error_class_are_pyroute2s():
    assert (rtnl.NLM_F_REQUEST, rtnl.RTM_GETLINK) == (NLM_F_REQUEST, RTM_GETLINK) == (1, 18)
    assert rtnl.netlink_error() is pyroute2.NetlinkError
    assert issubclass(rtnl.netlink_error(), Exception)


def test_pyroute2_is_imported_only_when_a_socket_or_its_error_is_asked_for():
    users = (
        "director.cli, director.daemon, ha.service, ha.vip, ha.announce, ha.media, ha.probe, ha.environment, "
        "director.realserver.kernel, director.lab.netns, director.lab.pair"
    )
    code = (
        f"import sys, {users}\n"
        "before = 'pyroute2' in sys.modules\n"
        "from ha import rtnl\n"
        "rtnl.netlink_error()\n"
        "print(before, 'pyroute2' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [b"False", b"True"]


def test_in_thread_returns_the_result_from_a_named_thread_of_its_own():
    seen: list[threading.Thread] = []

    def fn() -> int:
        seen.append(threading.current_thread())
        return 42

    assert rtnl.in_thread(fn, name="rtnl-test") == 42
    assert seen[0] is not threading.current_thread() and seen[0].name == "rtnl-test" and seen[0].daemon
    assert not seen[0].is_alive()


def test_in_thread_reraises_the_exception_itself():
    error = OSError(19, "no such device")

    def fn() -> None:
        raise error

    with pytest.raises(OSError) as info:
        rtnl.in_thread(fn, name="rtnl-test")
    assert info.value is error


def test_the_synchronous_socket_works_from_an_event_loop_through_in_thread():
    def names() -> list[str]:
        with rtnl.iproute() as ipr:
            return [m.get_attr("IFLA_IFNAME") for m in ipr.get_links()]

    async def main() -> list[str]:
        return rtnl.in_thread(names, name="rtnl-test")

    assert "lo" in asyncio.run(main())


def test_the_asynchronous_socket_reads_the_links():
    async def main() -> list[str]:
        async with rtnl.async_iproute() as ipr:
            return [m.get_attr("IFLA_IFNAME") async for m in await ipr.get_links()]

    assert "lo" in asyncio.run(main())


needs_netns = netns_skip(netns_problem(PREFIX, create=rtnl.netns_create, remove=rtnl.netns_remove))


@needs_netns
def test_a_socket_in_a_named_namespace_sees_that_namespace_only():
    name = f"{PREFIX}-a"
    rtnl.netns_create(name)
    try:
        assert os.path.exists(f"/run/netns/{name}")
        with rtnl.iproute(name) as ipr:
            assert [m.get_attr("IFLA_IFNAME") for m in ipr.get_links()] == ["lo"]
            with pytest.raises(rtnl.netlink_error()) as info:
                ipr.link("del", index=ipr.link_lookup(ifname="lo")[0])
            assert info.value.code > 0
    finally:
        rtnl.netns_remove(name)
    assert not os.path.exists(f"/run/netns/{name}")
    with pytest.raises(OSError):
        rtnl.iproute(name)  # flags=0: a missing namespace is not created
    assert not os.path.exists(f"/run/netns/{name}")
