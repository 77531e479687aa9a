"""A director namespace and a router namespace on one veth, with a plain BIRD 2 playing the
router, for the tests of the BGP speaker and service (``test_bgp_speaker.py``,
``test_bgp_service.py``).

Root only (``needs_bird`` skips a module without root or without /usr/sbin/bird, Debian package
bird2). The namespaces are `nspair.eth0_link`'s: the director has 10.<net>.0.1 (AS 65001), the
router 10.<net>.0.2 (AS 65000); the router's BGP session with the director is ``dir1``, passive,
hold time 3 s, and it imports every route and exports none.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from checkhelpers import stop_process
from nspair import eth0_link

BIRD = "/usr/sbin/bird"

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
def router_pair(prefix: str, net: int, directory: Path) -> Iterator[tuple[str, str, str]]:
    """Namespaces ``<prefix>-a`` (the director) and ``<prefix>-b`` (the router) joined by
    ``eth0`` (`nspair.eth0_link`), and the router's BIRD running in B with its configuration,
    control socket and pid file in ``directory`` (``router.conf``, ``router.ctl``,
    ``router.pid``); yields ``(director namespace, router namespace, router's control socket)``.

    At the end BIRD gets SIGTERM (SIGKILL after 3 s) and the namespaces are removed. Raises what
    `nspair.eth0_link` raises when the namespaces cannot be made."""
    with eth0_link(prefix, net, {}) as (a, b):
        conf = directory / "router.conf"
        conf.write_text(router_config(net))
        ctl = str(directory / "router.ctl")
        router = subprocess.Popen(
            ["ip", "netns", "exec", b, BIRD, "-f", "-c", str(conf), "-s", ctl, "-P", str(directory / "router.pid")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            yield a, b, ctl
        finally:
            stop_process(router, 3.0)
