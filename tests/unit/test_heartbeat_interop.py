"""Interoperability with a real heartbeat 3.0.6 daemon, each node in its own network namespace.

The real daemon runs through :mod:`heartbeat_harness` (Debian package
``heartbeat``; ``tests/run`` installs it). Tests needing it are skipped when
it is missing or we are not root. Most are slow (marked ``slow``): heartbeat
with ``crm no`` waits 10 s (``RQSTDELAY``, ``hb_resource.c``) before a node
that starts together with its peer takes its resources, and the ``IPaddr``
resource agent takes a second or two per run. Timers are short (keepalive
0.5 s, deadtime 2 s); ``initdead`` is 12 s, heartbeat's floor for a deadtime
under 6 s (``config.c``).

* two real nodes: the harness itself (peers active, VIP, graceful handover,
  nothing left behind);
* directord's node (`ha.node.HeartbeatNode` on a minimal threaded driver,
  `NodeDriver`) paired with a real node, in both roles: start-up takeover,
  takeover after a crash, auto_failback after a restart, shutdown notice;
* the same under 30 % loss towards the real node (retransmission requests
  answered);
* directord's node as the owner: the real node's datagrams reordered in
  pairs are not loss; standby, the real node's ``hb_standby foreign`` and
  a takeover through its ``rc.d/hb_takeover``, with the reasons logged;
* ``directord run`` with ``compat: heartbeat`` paired with a real node.

The real node's log must never show "authtoken does not match", a replay
or a partition ("returning after partition").
"""

from __future__ import annotations

import errno
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

import pytest
from heartbeat_harness import HeartbeatNet, RealHeartbeat, _own_lines, heartbeat_installed, wait_for

from director import control
from director.lab.netns import call_in_netns, list_netns, pids_in_netns, run_in_netns, socket_in_netns
from ha.auth import load_authkeys
from ha.identity import load_identity
from ha.model import HAConfig, Medium, Resource, ResourceGroup, Timers
from ha.node import Acquire, AdminRefused, HeartbeatNode, Log, PeerStatus, Release, Send, Stopped

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "heartbeat"
VIP = "10.250.0.100"
HARESOURCES = f"nodea {VIP}/24/eth0\n"
KEEPALIVE, WARNTIME, DEADTIME, INITDEAD = 0.5, 1.0, 2.0, 12.0


def ha_cf(deadtime: float = DEADTIME, warntime: float = WARNTIME, initdead: float = INITDEAD) -> str:
    """The real node's ha.cf (timers in seconds)."""
    return f"""\
logfile /nonexistent/replaced-by-the-harness
keepalive {int(KEEPALIVE * 1000)}ms
warntime {warntime:g}
deadtime {deadtime:g}
initdead {initdead:g}
udpport 694
bcast eth0
auto_failback on
node nodea
node nodeb
crm no
"""


HA_CF = ha_cf()
#: The lossy-link test's timers: 30 % loss makes four keepalives in a row go missing
#: (deadtime 2 s) about once a minute, so its deadtime spans 16 keepalives (0.3^16 ~ 4e-9).
LOSSY_DEADTIME, LOSSY_WARNTIME, LOSSY_INITDEAD = 8.0, 4.0, 16.0
#: What a real node logs when it dislikes what its peer sends (heartbeat.c).
BAD_SIGNS = ("authtoken does not match", "replay", "returning after partition")

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
def test_cleanup_of_a_starting_node_leaves_nothing(net: HeartbeatNet, tmp_path: Path) -> None:
    """cleanup() right after start(): every process of the tree goes, no mount shows on the host."""
    a = RealHeartbeat(net.ns("a"), "nodea", tmp_path / "a", HA_CF, HARESOURCES, authkeys())
    a.start()
    try:
        wait_for(lambda: len(pids_in_netns(net.ns("a"))) >= 2, timeout=10, what="heartbeat processes")
        a.wait_log(r"Local status now set to: 'up'", timeout=10)  # after its uuid and generation
        assert a.running and a.master_pid in pids_in_netns(net.ns("a"))
        assert str(tmp_path) not in _mounts()
    finally:
        a.cleanup()
    assert not a.running and a.processes() == []
    assert pids_in_netns(net.ns("a")) == []
    assert str(tmp_path) not in _mounts()
    assert (tmp_path / "a" / "varlib" / "hb_uuid").exists()  # the node's state stays for a restart


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
        assert not any(
            os.path.exists(f"/proc/{p}") and Path(f"/proc/{p}/stat").read_text().split()[2] != "Z" for p in pids
        )
        assert pids_in_netns(net.ns("a")) == [] and pids_in_netns(net.ns("b")) == []
        assert b.has_address(VIP)  # a SIGKILL leaves the address configured, as after a crash
    finally:
        a.cleanup()
        b.cleanup()


# --- directord's node against the real daemon ---------------------------------------------------


class NodeDriver:
    """A minimal driver of `ha.node.HeartbeatNode` for one ``bcast`` medium, on a thread.

    One UDP socket made in namespace ``ns`` (``SO_BROADCAST``, ``SO_DONTROUTE``,
    ``SO_BINDTODEVICE`` ``ifname``, bound to port 694, as heartbeat's
    ``bcast.c``), sending to ``broadcast``; ``time.monotonic`` drives the
    node (a tick at least every 250 ms). `Acquire` / `Release` add / remove
    the group's addresses with pyroute2 inside ``ns`` (no announcements).
    `events` records ``(monotonic seconds, action)`` for every action but `Send`.
    `call` runs a node entry point (standby, takeover) on the driver's thread;
    `swap_from` makes the network reorder a peer's datagrams (see there).
    """

    def __init__(self, ns: str, ifname: str, broadcast: str, node: HeartbeatNode, port: int = 694) -> None:
        self.ns = ns
        self.node = node
        self.dest = (broadcast, port)
        self.events: list[tuple[float, object]] = []
        self.send_errors = 0
        sock = socket_in_netns(ns, socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_DONTROUTE, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        sock.bind(("", port))
        self.sock = sock
        self._lock = threading.Lock()
        self._stop_wanted = threading.Event()
        self._crash = threading.Event()
        self.stopped = threading.Event()
        self._error: BaseException | None = None
        self._calls: deque[tuple[Callable[[float], list], Future]] = deque()
        self._swap_ip: str | None = None
        self._swaps_left = 0
        self._held: tuple[bytes, str, float] | None = None
        self.swapped = 0  # pairs of datagrams delivered in swapped order
        self._thread = threading.Thread(target=self._run, name=f"hbnode-{ns}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            node = self.node
            self._do(node.start(time.monotonic()))
            stop_sent = False
            last_tick = time.monotonic()
            while not self.stopped.is_set() and not self._crash.is_set():
                if self._stop_wanted.is_set() and not stop_sent:
                    stop_sent = True
                    self._do(node.stop(time.monotonic()))
                now = time.monotonic()
                wait = max(0.0, min(node.next_deadline() - now, 0.25 - (now - last_tick), 0.25))
                ready, _, _ = select.select([self.sock], [], [], wait)
                if ready:
                    data, (ip, port) = self.sock.recvfrom(65535)
                    self._receive(data, ip, f"{ip}:{port}")
                if self._held is not None and time.monotonic() - self._held[2] > 1.0:  # nothing followed it
                    held, self._held = self._held, None
                    self._do(node.on_packet(held[0], held[1], time.monotonic()))
                while self._calls:
                    fn, future = self._calls.popleft()
                    try:
                        actions = fn(time.monotonic())
                    except Exception as exc:  # e.g. AdminRefused: the caller sees it
                        future.set_exception(exc)
                        continue
                    self._do(actions)
                    future.set_result(actions)
                now = time.monotonic()
                if now >= node.next_deadline() or now - last_tick >= 0.25:
                    last_tick = now
                    self._do(node.on_tick(now))
        except BaseException as e:  # surfaced by check()
            self._error = e

    def _receive(self, data: bytes, ip: str, source: str) -> None:
        if self._swaps_left > 0 and ip == self._swap_ip:
            if self._held is None:
                self._held = (data, source, time.monotonic())  # held until the next one arrives
                return
            held, self._held = self._held, None
            self._do(self.node.on_packet(data, source, time.monotonic()))  # the later one first ...
            self._do(self.node.on_packet(held[0], held[1], time.monotonic()))  # ... then the earlier
            self._swaps_left -= 1
            self.swapped += 1
            return
        self._do(self.node.on_packet(data, source, time.monotonic()))

    def swap_from(self, ip: str, pairs: int) -> None:
        """Reorder the next ``2 * pairs`` datagrams from address ``ip`` as a network may: each
        one is held until the next arrives, which the node then gets just before it (a
        datagram followed by nothing for 1 s is delivered alone). `swapped` counts the pairs."""
        self._swap_ip = ip
        self._swaps_left = pairs

    def call(self, fn: Callable[[float], list], timeout: float = 5.0) -> list:
        """Run ``fn(now)`` (a node entry point returning actions, e.g.
        ``lambda now: node.takeover(now, "local")``) on the driver's thread and carry
        out its actions; returns them, or raises what ``fn`` raised."""
        future: Future = Future()
        self._calls.append((fn, future))
        return future.result(timeout)

    def logs(self) -> str:
        """The node's log messages so far, one a line."""
        return "\n".join(a.message for a in self.actions(Log))

    def _do(self, actions: list) -> None:
        queue = deque(actions)
        while queue:
            action = queue.popleft()
            if isinstance(action, Send):
                try:
                    self.sock.sendto(action.payload, self.dest)
                except OSError:  # link down: heartbeat's write process fails the same way
                    self.send_errors += 1
                continue
            with self._lock:
                self.events.append((time.monotonic(), action))
            if isinstance(action, Acquire):
                ok = call_in_netns(self.ns, self._addresses, action.group, True)
                queue.extend(self.node.acquired(action.group, ok, time.monotonic()))
            elif isinstance(action, Release):
                call_in_netns(self.ns, self._addresses, action.group, False)
                queue.extend(self.node.released(action.group, time.monotonic()))
            elif isinstance(action, Stopped):
                self.stopped.set()

    @staticmethod
    def _addresses(group: ResourceGroup, add: bool) -> bool:
        from pyroute2 import IPRoute, NetlinkError

        with IPRoute() as ipr:
            for r in group.resources:
                idx = ipr.link_lookup(ifname=r.interface)
                if not idx:
                    return False
                try:
                    ipr.addr("add" if add else "del", index=idx[0], address=r.address, prefixlen=r.prefixlen)
                except NetlinkError as e:
                    if e.code not in (errno.EEXIST, errno.EADDRNOTAVAIL):
                        raise
        return True

    def actions(self, kind: type) -> list:
        with self._lock:
            return [a for _, a in self.events if isinstance(a, kind)]

    def peer_reported(self, node: str, status: str) -> bool:
        return any(a.node.lower() == node and a.status == status for a in self.actions(PeerStatus))

    def check(self) -> None:
        """Re-raise an exception of the driver thread."""
        if self._error is not None:
            raise AssertionError(f"driver thread failed: {self._error!r}") from self._error

    def stop(self, timeout: float = 15.0) -> bool:
        """Graceful stop (`HeartbeatNode.stop`); True once the node said `Stopped`."""
        self._stop_wanted.set()
        ok = self.stopped.wait(timeout)
        self.close()
        return ok

    def close(self) -> None:
        """End the thread at once (a crash, as far as the peer can tell) and close the socket."""
        self._crash.set()
        if self._thread.is_alive():
            self._thread.join(5.0)
        self.sock.close()


def our_node(
    net: HeartbeatNet,
    tmp_path: Path,
    name: str = "nodeb",
    *,
    deadtime: float = DEADTIME,
    warntime: float = WARNTIME,
    initdead: float = INITDEAD,
) -> HeartbeatNode:
    keys = tmp_path / "authkeys"
    fd = os.open(keys, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(authkeys())
    config = HAConfig(
        node=name,
        nodes=("nodea", "nodeb"),
        media=(Medium(kind="bcast", interface="eth0"),),
        authkeys=str(keys),
        timers=Timers(keepalive=KEEPALIVE, warntime=warntime, deadtime=deadtime, initdead=initdead),
        auto_failback=True,
        groups=(ResourceGroup("nodea", (Resource(VIP, 24, "eth0"),)),),
        compat="heartbeat",
        state_dir=str(tmp_path / "state"),
    )
    return HeartbeatNode(
        config,
        load_authkeys(keys),
        load_identity(config.state_dir, name),
        wallclock=time.time,
        loadavg=lambda: Path("/proc/loadavg").read_text(),
    )


@needs_heartbeat
@pytest.mark.slow
def test_mixed_pair_real_heartbeat_and_our_node(net: HeartbeatNet, tmp_path: Path) -> None:
    """Real heartbeat as nodea (owner of the VIP), directord's node as nodeb:
    each sees the other active, nodea takes its VIP, a crash of nodea (SIGKILL
    and link down) hands it to nodeb, nodea's restart takes it back
    (auto_failback), and a graceful stop of nodeb is a shutdown notice."""
    a = RealHeartbeat(net.ns("a"), "nodea", tmp_path / "a", HA_CF, HARESOURCES, authkeys())
    b = NodeDriver(net.ns("b"), "eth0", net.broadcast, our_node(net, tmp_path))
    timings: dict[str, float] = {}
    try:
        t0 = time.monotonic()
        a.start()
        b.start()
        a.wait_log(r"Status update for node nodeb: status active", timeout=20)
        wait_for(lambda: b.peer_reported("nodea", "active"), timeout=20, what="nodeb sees nodea active")
        timings["both active"] = time.monotonic() - t0
        wait_for(lambda: a.has_address(VIP), timeout=30, what="VIP on the real nodea")
        timings["VIP on nodea"] = time.monotonic() - t0
        assert not net_has(net, "b", VIP)
        b.check()

        # crash of the real node: its address stays, so its link goes down too
        a.stop(graceful=False)
        net.link_set("a", up=False)
        t1 = time.monotonic()
        wait_for(lambda: net_has(net, "b", VIP), timeout=DEADTIME + 10, what="takeover by nodeb")
        timings["takeover after crash"] = time.monotonic() - t1
        assert b.peer_reported("nodea", "dead")
        b.check()

        # nodea comes back (a reboot: the stale address is gone), takes its VIP back
        call_in_netns(net.ns("a"), NodeDriver._addresses, ResourceGroup("nodea", (Resource(VIP, 24, "eth0"),)), False)
        assert not a.has_address(VIP)
        net.link_set("a", up=True)
        since = a.log_size()
        releases = len(b.actions(Release))
        t2 = time.monotonic()
        a.start()
        a.wait_log(r"Status update for node nodeb: status active", timeout=20, since=since)
        wait_for(lambda: a.has_address(VIP) and not net_has(net, "b", VIP), timeout=30, what="failback to nodea")
        timings["failback after restart"] = time.monotonic() - t2
        a.wait_log(r"IPaddr 10\.250\.0\.100/24/eth0 start", timeout=5, since=since)
        assert len(b.actions(Release)) > releases

        # graceful stop of our node: the real one gets a shutdown notice and keeps the VIP
        since = a.log_size()
        assert b.stop(timeout=15)
        a.wait_log(r"Received shutdown notice from 'nodeb'", timeout=10, since=since)
        assert a.has_address(VIP)

        text = a.log_text()
        for bad in BAD_SIGNS:
            assert bad not in text, f"real heartbeat logged {bad!r}"
        counters = b.node.counters
        assert counters["bad_auth"] == 0 and counters["malformed"] == 0, counters
        assert counters["accepted"] > 10
        print("timings (s):", {k: round(v, 1) for k, v in timings.items()})
    finally:
        b.close()
        a.cleanup()


def net_has(net: HeartbeatNet, role: str, addr: str) -> bool:
    """True if ``addr`` is configured in ``role``'s namespace."""
    return any(a.split("/")[0] == addr for a in net.addresses(role))


@needs_heartbeat
@pytest.mark.slow
def test_mixed_pair_our_node_owns_the_vip(net: HeartbeatNet, tmp_path: Path) -> None:
    """Roles swapped: directord's node is nodea (preferred owner), real heartbeat
    is nodeb. Our crash (no goodbye, link down) makes the real node take the
    VIP; our restart (a new generation) gets it back through the real node's
    auto_failback handshake, without the real node suspecting a replay or a
    partition."""
    group = ResourceGroup("nodea", (Resource(VIP, 24, "eth0"),))
    b = RealHeartbeat(net.ns("b"), "nodeb", tmp_path / "b", HA_CF, HARESOURCES, authkeys())
    first = our_node(net, tmp_path, "nodea")
    a = NodeDriver(net.ns("a"), "eth0", net.broadcast, first)
    a2: NodeDriver | None = None
    timings: dict[str, float] = {}
    try:
        t0 = time.monotonic()
        b.start()
        a.start()
        b.wait_log(r"Status update for node nodea: status active", timeout=20)
        wait_for(lambda: net_has(net, "a", VIP), timeout=30, what="VIP on our nodea")
        timings["VIP on nodea"] = time.monotonic() - t0
        assert not b.has_address(VIP)
        a.check()

        # our process dies without a word; the address stays, the link goes down
        a.close()
        net.link_set("a", up=False)
        since = b.log_size()
        t1 = time.monotonic()
        wait_for(lambda: b.has_address(VIP), timeout=DEADTIME + 15, what="takeover by the real nodeb")
        timings["takeover by real node"] = time.monotonic() - t1
        b.wait_log(r"node nodea: is dead", timeout=1, since=since)

        # restart (a reboot: the stale address is gone): a higher generation, VIP back to us
        call_in_netns(net.ns("a"), NodeDriver._addresses, group, False)
        net.link_set("a", up=True)
        second = our_node(net, tmp_path, "nodea")
        assert second.identity.generation > first.identity.generation
        since = b.log_size()
        t2 = time.monotonic()
        a2 = NodeDriver(net.ns("a"), "eth0", net.broadcast, second)
        a2.start()
        b.wait_log(r"Status update for node nodea: status active", timeout=20, since=since)
        wait_for(lambda: net_has(net, "a", VIP) and not b.has_address(VIP), timeout=30, what="failback to our nodea")
        timings["failback to our node"] = time.monotonic() - t2
        a2.check()

        text = b.log_text()
        for bad in BAD_SIGNS:
            assert bad not in text, f"real heartbeat logged {bad!r}"
        for node in (first, second):
            assert node.counters["bad_auth"] == 0 and node.counters["malformed"] == 0, node.counters
        print("timings (s):", {k: round(v, 1) for k, v in timings.items()})
    finally:
        a.close()
        if a2 is not None:
            a2.close()
        b.cleanup()


HB_STANDBY = "/usr/share/heartbeat/hb_standby"


def admin(driver: NodeDriver, fn: Callable[[float], list], what: str, timeout: float = 30.0) -> None:
    """Run an admin entry point of `driver`'s node (``fn(now)``), again while it is refused
    (`AdminRefused`: a transition of either side still settling)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            driver.call(fn)
            return
        except AdminRefused as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} refused for {timeout} s: {exc}") from exc
            time.sleep(0.2)


def acquire_reasons(driver: NodeDriver, since: int) -> list[str]:
    """Reasons of the `Acquire` actions among `driver`'s events from index `since` on."""
    with driver._lock:
        return [a.reason for _, a in driver.events[since:] if isinstance(a, Acquire)]


@needs_heartbeat
@pytest.mark.slow
def test_mixed_pair_reordering_standby_and_takeover(net: HeartbeatNet, tmp_path: Path) -> None:
    """directord's node as nodea (owner of the VIP), the real heartbeat as nodeb:

    * the real node's datagrams reordered in pairs on the way (seq N+1 just
      before N, as heartbeat 3.0.6 itself sometimes sends them) are counted as
      reordered, not lost: no retransmission request, no status copies;
    * our standby (all): the real node takes the VIP;
    * the real node's own ``hb_standby foreign``: the VIP comes back, and the
      reason names the peer's standby, not a failback handshake;
    * after another standby, our takeover (local, heartbeat's ``hb_takeover``):
      Debian's ``rc.d/hb_takeover`` on the real node runs its standby and the
      VIP comes back, the reason naming our request."""
    a = NodeDriver(net.ns("a"), "eth0", net.broadcast, our_node(net, tmp_path, "nodea"))
    b = RealHeartbeat(net.ns("b"), "nodeb", tmp_path / "b", HA_CF, HARESOURCES, authkeys())
    timings: dict[str, float] = {}
    try:
        b.start()
        a.start()
        b.wait_log(r"Status update for node nodea: status active", timeout=20)
        wait_for(lambda: net_has(net, "a", VIP), timeout=30, what="VIP on our nodea")
        wait_for(lambda: a.peer_reported("nodeb", "active"), timeout=20, what="nodea sees nodeb active")

        # the network swaps the real node's datagrams in pairs
        before = dict(a.node.counters)
        a.swap_from(net.addr("b"), 10)
        wait_for(lambda: a.swapped >= 10, timeout=30, what="10 pairs of the real node's datagrams swapped")
        time.sleep(1.0)  # past every reorder window and retransmission request
        after = dict(a.node.counters)
        delta = {k: after[k] - before[k] for k in ("reordered", "lost_packets", "rexmit_requests_sent", "copies_sent")}
        assert delta["reordered"] >= 4, delta  # (an NS_ackmsg in a pair carries no seq: 5 of 8 seen)
        assert delta["lost_packets"] == delta["rexmit_requests_sent"] == delta["copies_sent"] == 0, delta
        assert "packet loss seen" not in a.logs()

        # our standby: the real node takes the VIP
        since = b.log_size()
        admin(a, lambda now: a.node.standby(now, "all"), "standby all")
        t0 = time.monotonic()
        wait_for(lambda: b.has_address(VIP) and not net_has(net, "a", VIP), timeout=30, what="VIP on the real nodeb")
        timings["our standby"] = time.monotonic() - t0
        b.wait_log(r"Standby resource acquisition done", timeout=20, since=since)

        # the real node's own hb_standby foreign hands our group back
        mark = len(a.events)
        t0 = time.monotonic()
        done = b.run([HB_STANDBY, "foreign"])
        assert done.returncode == 0, done.stdout + done.stderr
        wait_for(lambda: net_has(net, "a", VIP) and not b.has_address(VIP), timeout=30, what="VIP back on nodea")
        timings["its hb_standby foreign"] = time.monotonic() - t0
        assert acquire_reasons(a, mark) == ["the peer nodeb went standby (foreign): taking our groups"]

        # our takeover: the real node follows through its rc.d/hb_takeover
        since = b.log_size()
        admin(a, lambda now: a.node.standby(now, "all"), "standby all")
        wait_for(lambda: b.has_address(VIP) and not net_has(net, "a", VIP), timeout=30, what="VIP on the real nodeb")
        b.wait_log(r"Standby resource acquisition done", timeout=20, since=since)
        mark = len(a.events)
        t0 = time.monotonic()
        admin(a, lambda now: a.node.takeover(now, "local"), "takeover local")
        wait_for(lambda: net_has(net, "a", VIP) and not b.has_address(VIP), timeout=30, what="VIP back on nodea")
        timings["our takeover"] = time.monotonic() - t0
        assert acquire_reasons(a, mark) == [
            "takeover requested: the peer nodeb went standby (foreign), taking our groups"
        ]

        text = b.log_text()
        for bad in BAD_SIGNS:
            assert bad not in text, f"real heartbeat logged {bad!r}"
        assert "is dead" not in text
        assert not a.peer_reported("nodeb", "dead")
        counters = a.node.counters
        assert counters["bad_auth"] == 0 and counters["malformed"] == 0, counters
        a.check()
        print("timings (s):", {k: round(v, 2) for k, v in timings.items()})
    finally:
        a.close()
        b.cleanup()


# --- directord run against the real daemon ------------------------------------------------------


class Directord:
    """``directord run`` in namespace ``ns`` with only an ``ha:`` section (compat heartbeat),
    as node ``node``, with the same timers, authkeys and haresources as the real node."""

    def __init__(self, ns: str, node: str, workdir: Path) -> None:
        self.ns = ns
        self.dir = workdir
        self.dir.mkdir(parents=True)
        keys = self.dir / "authkeys"
        fd = os.open(keys, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(authkeys())
        self.socket = str(self.dir / "directord.sock")
        self.log = self.dir / "directord.log"
        self.config = self.dir / "directord.yaml"
        self.config.write_text(
            f"""ha:
  node: {node}
  nodes: [nodea, nodeb]
  media: [bcast eth0]
  udpport: 694
  authkeys: {keys}
  keepalive: {KEEPALIVE}
  warntime: {WARNTIME}
  deadtime: {DEADTIME}
  initdead: {INITDEAD}
  auto_failback: true
  resources: ["{HARESOURCES.strip()}"]
  compat: heartbeat
  state_dir: {self.dir / "state"}
"""
        )
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        with open(self.log, "ab") as logf:
            self.proc = run_in_netns(
                self.ns,
                [sys.executable, "-m", "director.cli", "run", "-c", str(self.config), "--control-socket", self.socket],
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def status(self) -> dict:
        return control.request(self.socket, "status", 5)["status"]

    def peer_status(self) -> str | None:
        try:
            peers = self.status()["ha"]["peers"]
        except Exception:
            return None
        return peers[0]["status"] if peers else None

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@needs_heartbeat
@pytest.mark.slow
def test_directord_run_paired_with_real_heartbeat(net: HeartbeatNet, tmp_path: Path) -> None:
    """`directord run` (``compat: heartbeat``) as nodeb, real heartbeat as nodea, the
    owner of the VIP: each sees the other active, nodea takes its VIP, nodea's crash
    (SIGKILL + link down) hands it to directord, nodea's restart takes it back
    (auto_failback), SIGTERM of directord is a shutdown notice to nodea."""
    a = RealHeartbeat(net.ns("a"), "nodea", tmp_path / "a", HA_CF, HARESOURCES, authkeys())
    d = Directord(net.ns("b"), "nodeb", tmp_path / "d")
    timings: dict[str, float] = {}
    try:
        t0 = time.monotonic()
        a.start()
        d.start()
        a.wait_log(r"Status update for node nodeb: status active", timeout=20)
        wait_for(lambda: d.peer_status() == "active", timeout=20, what="directord sees nodea active")
        timings["both active"] = time.monotonic() - t0
        wait_for(lambda: a.has_address(VIP), timeout=30, what="VIP on the real nodea")
        timings["VIP on nodea"] = time.monotonic() - t0
        assert not net_has(net, "b", VIP), d.tail()
        assert d.proc is not None and d.proc.poll() is None, d.tail()

        a.stop(graceful=False)
        net.link_set("a", up=False)
        t1 = time.monotonic()
        wait_for(lambda: net_has(net, "b", VIP), timeout=DEADTIME + 10, what="takeover by directord")
        timings["takeover by directord after crash"] = time.monotonic() - t1
        assert d.peer_status() == "dead"

        call_in_netns(net.ns("a"), NodeDriver._addresses, ResourceGroup("nodea", (Resource(VIP, 24, "eth0"),)), False)
        assert not a.has_address(VIP)
        net.link_set("a", up=True)
        since = a.log_size()
        t2 = time.monotonic()
        a.start()
        a.wait_log(r"Status update for node nodeb: status active", timeout=20, since=since)
        wait_for(lambda: a.has_address(VIP) and not net_has(net, "b", VIP), timeout=30, what="failback to nodea")
        timings["failback to restarted nodea"] = time.monotonic() - t2
        a.wait_log(r"IPaddr 10\.250\.0\.100/24/eth0 start", timeout=5, since=since)
        wait_for(lambda: d.peer_status() == "active", timeout=10, what="directord sees nodea active again")

        since = a.log_size()
        os.kill(d.proc.pid, signal.SIGTERM)
        assert d.proc.wait(20) == 0, d.tail()
        a.wait_log(r"Received shutdown notice from 'nodeb'", timeout=10, since=since)
        assert a.has_address(VIP)

        text = a.log_text()
        for bad in BAD_SIGNS:
            assert bad not in text, f"real heartbeat logged {bad!r}"
        print("timings (s):", {k: round(v, 1) for k, v in timings.items()})
    except BaseException:
        print(d.tail())
        raise
    finally:
        d.kill()
        a.cleanup()


@needs_heartbeat
@pytest.mark.slow
@pytest.mark.skipif(shutil.which("iptables") is None, reason="needs iptables (statistic match) for packet loss")
def test_mixed_pair_with_loss_towards_the_real_node(net: HeartbeatNet, tmp_path: Path) -> None:
    """30 % of the heartbeat packets reaching the real node are dropped: it asks
    our node for retransmissions (``NS_rexmit``), which our node answers from
    its history; it never declares our node dead, and the start-up takeover
    still gives nodea its VIP. Both run a deadtime of 16 keepalives here (see
    `LOSSY_DEADTIME`), so only the retransmission path is under test, not luck."""
    timers = dict(deadtime=LOSSY_DEADTIME, warntime=LOSSY_WARNTIME, initdead=LOSSY_INITDEAD)
    a = RealHeartbeat(net.ns("a"), "nodea", tmp_path / "a", ha_cf(**timers), HARESOURCES, authkeys())
    b = NodeDriver(net.ns("b"), "eth0", net.broadcast, our_node(net, tmp_path, **timers))
    try:
        a.start()
        b.start()
        a.wait_log(r"Status update for node nodeb: status active", timeout=20)
        subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                net.ns("a"),
                "iptables",
                "-A",
                "INPUT",
                "-p",
                "udp",
                "--dport",
                "694",
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                "0.3",
                "-j",
                "DROP",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )
        wait_for(lambda: a.has_address(VIP), timeout=30, what="VIP on the real nodea over a lossy link")
        wait_for(lambda: b.node.counters["retransmitted"] >= 1, timeout=30, what="a retransmission to nodea")
        time.sleep(3 * DEADTIME)  # 12 keepalives more under loss
        assert not net_has(net, "b", VIP)
        counters = b.node.counters
        assert counters["rexmit_requests_received"] > 0 and counters["copies_sent"] > 0, counters
        text = a.log_text()
        assert "node nodeb: is dead" not in text
        assert re.search(r"lost packet\(s\) for \[nodeb\]", text)
        for bad in BAD_SIGNS:
            assert bad not in text, f"real heartbeat logged {bad!r}"
        assert not b.peer_reported("nodea", "dead")
        b.check()
    finally:
        b.close()
        a.cleanup()


@needs_heartbeat
@pytest.mark.slow
@pytest.mark.skipif(shutil.which("iptables") is None, reason="needs iptables to cut the heartbeat")
def test_mixed_pair_heartbeat_cut_and_heal(net: HeartbeatNet, tmp_path: Path) -> None:
    """Heartbeat cut while the LAN stays up (UDP 694 dropped both ways in nodeb's namespace):
    both take the VIP; after the heal exactly one keeps it, and keeps it. The real node may
    restart itself on "returning after partition" (heartbeat's own rule); directord stays up."""
    a = RealHeartbeat(net.ns("a"), "nodea", tmp_path / "a", HA_CF, HARESOURCES, authkeys())
    d = Directord(net.ns("b"), "nodeb", tmp_path / "d")
    rules = [
        ["INPUT", "-p", "udp", "--dport", "694", "-j", "DROP"],
        ["OUTPUT", "-p", "udp", "--dport", "694", "-j", "DROP"],
    ]

    def iptables(op: str) -> None:
        for rule in rules:
            subprocess.run(
                ["ip", "netns", "exec", net.ns("b"), "iptables", op, *rule], check=True, capture_output=True, timeout=30
            )

    def holders() -> set[str]:
        return {n for n, held in (("nodea", a.has_address(VIP)), ("nodeb", net_has(net, "b", VIP))) if held}

    timings: dict[str, float] = {}
    try:
        a.start()
        d.start()
        a.wait_log(r"Status update for node nodeb: status active", timeout=20)
        wait_for(lambda: holders() == {"nodea"}, timeout=30, what="VIP on the real nodea")

        t0 = time.monotonic()
        iptables("-A")
        wait_for(lambda: holders() == {"nodea", "nodeb"}, timeout=DEADTIME + 15, what="both hold the VIP (cut)")
        timings["both active after the cut"] = time.monotonic() - t0
        assert d.peer_status() == "dead"

        t1 = time.monotonic()
        iptables("-D")
        wait_for(lambda: len(holders()) == 1, timeout=90, what="one holder after the heal")
        timings["one holder after the heal"] = time.monotonic() - t1
        keeper = holders()
        t2 = time.monotonic()
        while time.monotonic() - t2 < 3 * DEADTIME:  # and it stays that way
            assert len(holders()) <= 1, holders()
            time.sleep(0.1)
        assert len(holders()) == 1
        assert d.proc is not None and d.proc.poll() is None, d.tail()
        text = a.log_text()
        for bad in ("authtoken does not match", "replay"):
            assert bad not in text, f"real heartbeat logged {bad!r}"
        print("keeper:", keeper, "timings (s):", {k: round(v, 1) for k, v in timings.items()})
    except BaseException:
        print(d.tail())
        print(a.log_text()[-3000:])
        raise
    finally:
        d.kill()
        a.cleanup()
