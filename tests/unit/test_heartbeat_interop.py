"""Interoperability with a real heartbeat 3.0.6 daemon, each node in its own network namespace.

The real daemon runs through :mod:`heartbeat_harness` (Debian package
``heartbeat``; ``tests/run`` installs it). Tests needing it are skipped when
it is missing or we are not root. They are slow (marked ``slow``): heartbeat
with ``crm no`` waits 10 s (``RQSTDELAY``, ``hb_resource.c``) before a node
that starts together with its peer takes its resources, and the ``IPaddr``
resource agent takes a second or two per run. Timers are short (keepalive
0.5 s, deadtime 2 s); ``initdead`` is 12 s, heartbeat's floor for a deadtime
under 6 s (``config.c``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from director.lab.netns import list_netns, pids_in_netns
from heartbeat_harness import HeartbeatNet, RealHeartbeat, _own_lines, heartbeat_installed, wait_for

DATA = Path(__file__).resolve().parents[1] / "data" / "heartbeat"
VIP = "10.250.0.100"
HARESOURCES = f"nodea {VIP}/24/eth0\n"
KEEPALIVE, WARNTIME, DEADTIME, INITDEAD = 0.5, 1.0, 2.0, 12.0
HA_CF = f"""\
logfile /nonexistent/replaced-by-the-harness
keepalive {int(KEEPALIVE * 1000)}ms
warntime {WARNTIME:g}
deadtime {DEADTIME:g}
initdead {INITDEAD:g}
udpport 694
bcast eth0
auto_failback on
node nodea
node nodeb
crm no
"""
#: What a real node logs when it dislikes what its peer sends (heartbeat.c).
BAD_SIGNS = ("authtoken does not match", "replay", "returning after partition", "Late heartbeat")

needs_heartbeat = pytest.mark.skipif(
    os.geteuid() != 0 or not heartbeat_installed() or shutil.which("unshare") is None,
    reason="needs root and the heartbeat package (apt-get install heartbeat)",
)


def authkeys() -> str:
    return (DATA / "authkeys.sha1").read_text()


def test_own_lines_drops_log_settings() -> None:
    text = "logfile /x\nDebugFile /y\nuse_logd yes\nlogfacility local0\nkeepalive 1\n# logfile in a comment\n"
    assert _own_lines(text) == ["keepalive 1", "# logfile in a comment"]


def _mounts() -> str:
    return Path("/proc/self/mountinfo").read_text()


@pytest.fixture
def net():
    with HeartbeatNet(("a", "b")) as n:
        yield n
    assert not any(name.startswith(n.prefix + "-") for name in list_netns())


@needs_heartbeat
@pytest.mark.slow
def test_two_real_nodes_reach_each_other_and_the_owner_takes_the_vip(net: HeartbeatNet, tmp_path: Path) -> None:
    """Proves the harness: two real daemons hear each other, nodea takes its VIP,
    a graceful stop hands it to nodeb at once, and nothing is left behind."""
    a = RealHeartbeat(net.ns("a"), "nodea", tmp_path / "a", HA_CF, HARESOURCES, authkeys())
    b = RealHeartbeat(net.ns("b"), "nodeb", tmp_path / "b", HA_CF, HARESOURCES, authkeys())
    try:
        a.start()
        b.start()
        a.wait_log(r"Status update for node nodeb: status active", timeout=20)
        b.wait_log(r"Status update for node nodea: status active", timeout=20)
        # neither is stable at a joint start: nodea takes its group after RQSTDELAY (10 s)
        wait_for(lambda: a.has_address(VIP), timeout=30, what="VIP on nodea")
        assert not b.has_address(VIP)
        # the mounts live in the daemons' own mount namespaces only
        assert str(tmp_path) not in _mounts()
        assert a.master_pid is not None and a.processes()

        since = b.log_size()
        assert a.stop(graceful=True) == 0
        assert not a.has_address(VIP)  # released on the way out
        wait_for(lambda: b.has_address(VIP), timeout=15, what="VIP on nodeb after nodea's shutdown")
        b.wait_log(r"Received shutdown notice from 'nodea'", timeout=5, since=0)
        assert "nodea" in b.log_text()[since:]
        for text in (a.log_text(), b.log_text()):
            for bad in BAD_SIGNS:
                assert bad not in text

        pids = b.processes()
        assert b.stop(graceful=False) is not None
        assert not any(os.path.exists(f"/proc/{p}") and Path(f"/proc/{p}/stat").read_text().split()[2] != "Z"
                       for p in pids)
        assert pids_in_netns(net.ns("a")) == [] and pids_in_netns(net.ns("b")) == []
        assert b.has_address(VIP)  # a SIGKILL leaves the address configured, as after a crash
    finally:
        a.cleanup()
        b.cleanup()
