"""IPVS connection synchronisation on real IPVS (run inside the stock-kernel VM).

One HA pair lab (client, dir1, dir2, two DR real servers, heartbeat bridge). A
connection is set up through the VIP on dir1 and left half-way through its
request; dir1 stops gracefully, so the VIP moves to dir2; then the request is
finished on the same connection. Without synchronisation dir2 has no IPVS
entry for the connection and its own stack resets it; with
``global.sync_daemon`` on both directors (turned on by a reload) dir2 learnt
the entry from dir1's master sync daemon, forwards the rest to the same real
server, and the answer comes back. The daemons are read back with ``ipvsadm
-L --daemon`` and the synced entry with ``ipvsadm -Lnc``, both independent of
directord; a reload without the setting stops the daemons.
"""

from __future__ import annotations

import os
import re
import signal
import time

import pytest

from director.lab.netns import socket_in_netns, wait_until
from director.lab.pair import PairLab, PairOptions

pytestmark = pytest.mark.kernel

SYNCID = 42
WAIT = 60.0  # seconds: generous for the slow emulated guest


@pytest.fixture(scope="module")
def pair(_ipvs_problem, tmp_path_factory):
    if _ipvs_problem:
        pytest.skip(_ipvs_problem)
    the_pair = PairLab(PairOptions(prefix=f"ks{os.getpid()}", real_servers=2), tmp_path_factory.mktemp("sync"))
    try:
        the_pair.up()
        yield the_pair
    finally:
        the_pair.down()


def daemons(pair: PairLab, node: str) -> str:
    return pair.lab.exec(node, ["ipvsadm", "-L", "--daemon"]).stdout


def connections(pair: PairLab, node: str) -> str:
    return pair.lab.exec(node, ["ipvsadm", "-Lnc"]).stdout


def reload_both(pair: PairLab, sync: bool) -> None:
    for node in ("dir1", "dir2"):
        text = pair.config_text(node)
        if sync:
            text = text.replace(
                "global:\n", f"global:\n  sync_daemon: {{interface: {pair.plan.heartbeat_if}, syncid: {SYNCID}}}\n", 1
            )
            assert "sync_daemon" in text
        pair.config_path(node).write_text(text)
        assert pair.signal_daemon(node, signal.SIGHUP) is not None


def request_across_a_vip_move(pair: PairLab, expect_synced: bool) -> bytes | Exception:
    """Open a connection through dir1, move the VIP to dir2 by a graceful stop of dir1, finish
    the request; returns the answer's bytes or the error the client got."""
    pair.restore()
    assert pair.holders() == ("dir1",)
    sock = socket_in_netns(pair.lab.ns("client"))
    try:
        sock.settimeout(10.0)
        sock.connect((pair.vip, 80))
        sock.sendall(b"GET / HTTP/1.0\r\n")
        sock.sendall(b"Host: sync-test\r\n")  # the third packet in: the kernel syncs the entry now
        host, port = sock.getsockname()
        local = f"{host}:{port:d}"
        if expect_synced:
            wait_until(lambda: local in connections(pair, "dir2"), 15.0, 0.2, f"{local} in dir2's ipvsadm -Lnc")
        else:
            time.sleep(3.0)  # longer than the kernel's sync flush time (2 s)
            assert local not in connections(pair, "dir2")
        assert pair.signal_daemon("dir1", signal.SIGTERM) is not None
        wait_until(lambda: pair.holders() == ("dir2",), WAIT, 0.2, "dir2 alone holds the VIP")
        try:
            sock.sendall(b"\r\n")
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
            return answer
        except OSError as exc:
            return exc
    finally:
        sock.close()


def test_sync_daemons_keep_a_connection_across_a_vip_move(pair):
    # without synchronisation: the new holder resets the connection (the control case)
    got = request_across_a_vip_move(pair, expect_synced=False)
    assert isinstance(got, ConnectionResetError), got

    pair.restore()
    reload_both(pair, sync=True)
    iface = re.escape(pair.plan.heartbeat_if)
    for node in ("dir1", "dir2"):
        for state in ("master", "backup"):
            pattern = rf"{state} sync daemon \(mcast={iface}, syncid={SYNCID}\b"
            wait_until(
                lambda pattern=pattern, node=node: re.search(pattern, daemons(pair, node)),
                WAIT,
                0.2,
                f"{state} sync daemon in {node}'s ipvsadm -L --daemon",
            )

    got = request_across_a_vip_move(pair, expect_synced=True)
    assert isinstance(got, bytes) and got.startswith(b"HTTP/1.") and b" 200 " in got.split(b"\r\n", 1)[0], got

    pair.restore()  # dir1 back; it read the configuration with sync_daemon again
    reload_both(pair, sync=False)
    for node in ("dir1", "dir2"):
        wait_until(lambda node=node: "sync daemon" not in daemons(pair, node), WAIT, 0.2, f"no sync daemon in {node}")
