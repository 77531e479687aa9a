"""A reload of a large configuration during a heartbeat pair's steady state changes no ownership.

Root only; two `directord run` daemons in network namespaces (`hapair.PairNet`,
shipped timers: keepalive 0.2 s, deadtime 0.8 s).  The active one gets a file of as many
real servers as `check` accepts (check type none: nothing is sent) and a SIGHUP; parsing it takes
seconds, and were it done on the loop that sends the heartbeats, the standby
would declare the active director dead and both would hold the VIP.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from hapair import Director, PairNet, VipSampler, netns_problem, wait_for, write_authkeys
from test_reload_loop import big_config

from director.config import MAX_REAL_SERVERS

_problem = netns_problem()
pytestmark = [pytest.mark.skipif(_problem is not None, reason=_problem or ""), pytest.mark.slow]

ONLY1 = frozenset({"dir1"})


def reloaded(d: Director, since: int) -> bool:
    """True once ``d``'s log after offset ``since`` says the 80 services were adopted."""
    return "reloaded: 80 virtual services" in d.log.read_text(errors="replace")[since:]


def test_reload_of_the_largest_file_check_accepts_keeps_the_pair_steady(tmp_path: Path):
    with PairNet("rlp") as lab:
        keys = write_authkeys(tmp_path / "authkeys")
        conf = {"media": ["bcast eth0"], "resources": [f"dir1 {lab.vip}/32/eth0"]}
        d1, d2 = Director(lab, "dir1", tmp_path, keys, **conf), Director(lab, "dir2", tmp_path, keys, **conf)
        dirs = (d1, d2)
        try:
            d1.start()
            d2.start()
            wait_for(lambda: lab.holds("dir1"), 20, "dir1 to take the VIP", dirs)
            wait_for(
                lambda: d1.peer_status() == d2.peer_status() == "active",
                10,
                "both daemons to see their peer active",
                dirs,
            )
            d1.past_startup_bonus(0.5)
            d2.past_startup_bonus(0.5)
            d1.config.write_text(
                d1.config.read_text() + big_config(d1.socket, 80, MAX_REAL_SERVERS // 80)
            )  # ha unchanged
            mark = len(d1.log.read_text(errors="replace"))
            with VipSampler(lab) as vips:
                t0 = time.monotonic()
                d1.signal(signal.SIGHUP)  # the active director, holding the VIP
                wait_for(lambda: reloaded(d1, mark), 60, "the reload", dirs)
                time.sleep(1.0)  # a deadtime and more after the reload
                assert vips.seen(t0) == {ONLY1}, vips.since(t0)
            for d in dirs:
                assert d.peer_status() == "active", d.tail()
            log = d1.log.read_text(errors="replace")[mark:]
            assert "no heartbeat sent" not in log and "timers ran" not in log, d1.tail()
        finally:
            for d in dirs:
                d.kill()
