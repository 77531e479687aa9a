"""Two network namespaces joined by veth links, for the tests of the heartbeat media and service
(``test_ha_media.py``, ``test_ha_service.py``) and of the probes and the ping check
(``test_ha_connectivity.py``, ``test_checks_ping.py``).

Root only. Each test module names its namespaces ``<prefix>-a`` and ``<prefix>-b`` with a prefix of
its own (its process id in it) and a subnet of its own (``net``: 10.<net>.0.0/24), so modules may
run side by side. All ``<prefix>-*`` namespaces are removed before they are made and when the
block ends.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator, Mapping

import pytest

from director.lab import netns as N


def ip(*args: str) -> None:
    """Run ``ip ARGS``; raises CalledProcessError when it fails, TimeoutExpired after 30 s."""
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@contextlib.contextmanager
def broadcast_pair(prefix: str, net: int) -> Iterator[tuple[str, str]]:
    """Namespaces A and B joined by veth ``a0`` (in A, 10.<net>.0.1/24) <-> ``b0`` (in B,
    10.<net>.0.2/24), both with the broadcast address 10.<net>.0.255, and by a second veth
    ``c0`` (in A, 10.<net>.1.1/24 without a broadcast address) <-> ``d0`` (in B, no address);
    yields their names ``(A, B)``.

    Skips the test when not root or when the namespaces cannot be made."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    a, b = f"{prefix}-a", f"{prefix}-b"
    N.cleanup_netns(prefix)
    try:
        N.create_netns(a)
        N.create_netns(b)
    except OSError as err:
        N.cleanup_netns(prefix)
        pytest.skip(f"cannot create network namespaces: {err}")
    try:
        N.add_veth(a, "a0", b, "b0")
        N.add_veth(a, "c0", b, "d0")
        ip("-n", a, "addr", "add", f"10.{net}.0.1/24", "brd", "+", "dev", "a0")
        ip("-n", b, "addr", "add", f"10.{net}.0.2/24", "brd", "+", "dev", "b0")
        ip("-n", a, "addr", "add", f"10.{net}.1.1/24", "dev", "c0")  # no broadcast address
        yield a, b
    finally:
        N.cleanup_netns(prefix)


@contextlib.contextmanager
def eth0_link(
    prefix: str, net: int, sysctls: Mapping[str, str], b_sysctls: Mapping[str, str] | None = None
) -> Iterator[tuple[str, str]]:
    """Namespaces A and B, each with ``sysctls`` set (e.g. no IPv6 duplicate address detection)
    and B with ``b_sysctls`` as well (e.g. forwarding), joined by one veth, ``eth0`` in both: A
    has 10.<net>.0.1/24 and fd00:<net>::1/64, B .2 and ::2; yields their names ``(A, B)``.

    Raises what `director.lab.netns` raises when a namespace, link or address cannot be made."""
    a, b = f"{prefix}-a", f"{prefix}-b"
    N.cleanup_netns(prefix)
    try:
        for ns in (a, b):
            N.create_netns(ns)
            N.set_sysctls(ns, sysctls)
        if b_sysctls:
            N.set_sysctls(b, b_sysctls)
        N.add_veth(a, "eth0", b, "eth0")
        for ns, n in ((a, 1), (b, 2)):
            N.add_address(ns, "eth0", f"10.{net}.0.{n}/24")
            N.add_address(ns, "eth0", f"fd00:{net}::{n}/64")
        yield a, b
    finally:
        N.cleanup_netns(prefix)
