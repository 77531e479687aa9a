"""A director namespace and a router namespace on one veth, with a plain BIRD 2 playing the
router, for the tests of the BGP speaker and service (``test_bgp_speaker.py``,
``test_bgp_service.py``, ``test_bgp_neighbours.py``).

Root only (``needs_bird`` skips a module without root or without /usr/sbin/bird, Debian package
bird2). The namespaces are `nspair.eth0_link`'s: the director has 10.<net>.0.1 (AS 65001), the
router 10.<net>.0.2 (AS 65000); the router's BGP session with the director is ``dir1``, passive,
hold time 3 s, and it imports every route and exports none. A test may give the router a
configuration of its own and more addresses (`router_pair`'s ``config`` and ``extra_hosts``),
and run more router BIRDs beside it on those addresses (`router_bird`); `birdc` speaks to a
router's BIRD with BIRD's own client.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from checkhelpers import stop_process
from nspair import eth0_link

BIRD = "/usr/sbin/bird"
#: BIRD's command-line client (package bird2).
BIRDC = "/usr/sbin/birdc"

#: A test module's ``pytestmark``: root, and BIRD 2 installed.
needs_bird = [
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
    pytest.mark.skipif(not os.path.exists(BIRD), reason="BIRD 2 (/usr/sbin/bird, package bird2) is not installed"),
]


def director_address(net: int) -> str:
    """The director's address in the pair of subnet 10.<net>.0.0/24."""
    return f"10.{net}.0.1"


def router_address(net: int) -> str:
    """The router's address in the pair of subnet 10.<net>.0.0/24."""
    return f"10.{net}.0.2"


def router_host(net: int, host: int) -> str:
    """The address ``10.<net>.0.<host>`` (host 2 is `router_address`; more hosts of the router:
    `router_pair`'s ``extra_hosts``)."""
    return f"10.{net}.0.{host}"


def router_config(net: int) -> str:
    """The router BIRD's configuration (BIRD 2 syntax) for subnet 10.<net>.0.0/24."""
    router, director = router_address(net), director_address(net)
    return textwrap.dedent(
        f"""\
        router id {router};
        protocol device {{}}
        protocol bgp dir1 {{
            local {router} as 65000;
            neighbor {director} as 65001;
            passive on;
            hold time 3;
            error wait time 1, 2;
            ipv4 {{ import all; export none; }};
        }}
        """
    )


@contextlib.contextmanager
def router_pair(
    prefix: str, net: int, directory: Path, *, config: str | None = None, extra_hosts: Sequence[int] = ()
) -> Iterator[tuple[str, str, str]]:
    """Namespaces ``<prefix>-a`` (the director) and ``<prefix>-b`` (the router) joined by
    ``eth0`` (`nspair.eth0_link`), and the router's BIRD running in B with its configuration,
    control socket and pid file in ``directory`` (``router.conf``, ``router.ctl``,
    ``router.pid``); yields ``(director namespace, router namespace, router's control socket)``.

    ``config`` is the router BIRD's configuration (BIRD 2 syntax), `router_config` when None;
    ``extra_hosts`` are more addresses of the router, ``10.<net>.0.<host>/24`` on its ``eth0``
    (`router_host`), added before BIRD starts so that its protocols may listen on them.

    At the end BIRD gets SIGTERM (SIGKILL after 3 s) and the namespaces are removed. Raises what
    `nspair.eth0_link` raises when the namespaces cannot be made, CalledProcessError when an
    extra address cannot be added."""
    with eth0_link(prefix, net, {}) as (a, b):
        for host in extra_hosts:
            subprocess.run(
                ["ip", "-n", b, "addr", "add", f"{router_host(net, host)}/24", "dev", "eth0"],
                check=True,
                capture_output=True,
                timeout=30,
            )
        with router_bird(b, directory, "router", router_config(net) if config is None else config) as ctl:
            yield a, b, ctl


@contextlib.contextmanager
def router_bird(ns: str, directory: Path, name: str, config: str) -> Iterator[str]:
    """A BIRD running in namespace ``ns`` with configuration ``config`` (BIRD 2 syntax), its
    configuration, control socket and pid file in ``directory`` (``NAME.conf``, ``NAME.ctl``,
    ``NAME.pid``); yields its control socket's path. Several may run in one namespace (more
    routers, each on an address of its own: ``strict bind on`` in their BGP protocols, as
    BIRD lets one BGP session at a time use a given neighbour address).

    At the end BIRD gets SIGTERM (SIGKILL after 3 s). Raises OSError when BIRD cannot be run."""
    conf = directory / f"{name}.conf"
    conf.write_text(config)
    ctl = str(directory / f"{name}.ctl")
    bird = subprocess.Popen(
        ["ip", "netns", "exec", ns, BIRD, "-f", "-c", str(conf), "-s", ctl, "-P", str(directory / f"{name}.pid")],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield ctl
    finally:
        stop_process(bird, 3.0)


def birdc(ctl: str, command: str, timeout: float = 10.0) -> str:
    """``command`` (e.g. ``"show route all"``, ``"disable NAME"``) given to the BIRD of control
    socket ``ctl`` by BIRD's own client (``birdc -s CTL``): its output, the greeting line left
    out. Raises CalledProcessError when birdc fails (e.g. no BIRD on the socket), TimeoutExpired
    after ``timeout`` seconds."""
    done = subprocess.run([BIRDC, "-s", ctl, command], capture_output=True, text=True, check=True, timeout=timeout)
    lines = done.stdout.splitlines()
    if lines and lines[0].startswith("BIRD ") and lines[0].endswith(" ready."):
        lines = lines[1:]
    return "".join(line + "\n" for line in lines)
