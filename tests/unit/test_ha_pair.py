"""Two `directord run` processes as a heartbeat pair, in network namespaces: VIP takeover end to end.

Root only. Topology (all namespaces created here, deleted afterwards): a
switch namespace ``<PREFIX>-sw`` with bridge ``br0``; ``<PREFIX>-dir1``
(10.216.0.10), ``<PREFIX>-dir2`` (10.216.0.11) and ``<PREFIX>-client``
(10.216.0.2), each with an ``eth0`` veth plugged into the bridge, addresses
with broadcast 10.216.0.255. Each director runs ``directord run`` with a
configuration holding only an ``ha:`` section (no virtual services; without
ip_vs in the kernel the daemon logs the IPVS error and keeps running):
bcast on eth0, keepalive 0.2 s, deadtime 1 s, auto_failback on, one
resource group ``dir1 10.216.0.100/32/eth0``.

Scenario (one test, phases in order; the measured times are printed):

1. both start together: dir1, the preferred owner, takes the VIP, dir2 never
   holds it; the client sees dir1's gratuitous ARP pair and resolves the
   VIP to dir1's MAC;
2. dir1's daemon is SIGKILLed and its link taken down (after its first 5 s,
   during which it advertises deadtime + 2 s): dir2 holds the VIP within
   deadtime + 2 s and the client's neighbour entry moves to
   dir2's MAC (dir2's gratuitous ARP);
3. dir1 restarts (a new daemon, then its link up once the daemon removed the
   address its killed predecessor left behind): with auto_failback the VIP
   goes back to dir1 and leaves dir2; sampled in both namespaces, the VIP is
   never on both for longer than a short handover window;
4. SIGTERM of the active dir1: dir2 takes over within a fraction of the
   deadtime (the graceful ``shutdone`` path, not death detection);
   ``directord status`` of dir2 shows it as the holder.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from director import control
from director.lab import netns as N

PREFIX = f"hpr{os.getpid()}"
SUBNET = "10.216.0"
ADDR = {"client": f"{SUBNET}.2", "dir1": f"{SUBNET}.10", "dir2": f"{SUBNET}.11"}
VIP = f"{SUBNET}.100"
KEEPALIVE, DEADTIME = 0.2, 1.0
REPO = Path(__file__).resolve().parents[2]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def ns(role: str) -> str:
    return f"{PREFIX}-{role}"


@pytest.fixture
def lab():
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    N.cleanup_netns(PREFIX)
    try:
        N.create_netns(ns("sw"))
    except OSError as err:
        N.cleanup_netns(PREFIX)
        pytest.skip(f"cannot create network namespaces: {err}")
    try:
        N.add_bridge(ns("sw"), "br0")
        for role, addr in ADDR.items():
            N.create_netns(ns(role))
            N.add_veth(ns("sw"), role, ns(role), "eth0")
            N.set_master(ns("sw"), role, "br0")
            _ip("-n", ns(role), "addr", "add", f"{addr}/24", "brd", "+", "dev", "eth0")
        yield
    finally:
        N.cleanup_netns(PREFIX)


class Director:
    """One `directord run` in its namespace, with its own configuration, state, socket and log."""

    def __init__(self, role: str, workdir: Path, authkeys: Path) -> None:
        self.role = role
        self.dir = workdir / role
        self.dir.mkdir()
        self.config = self.dir / "directord.yaml"
        self.socket = str(self.dir / "directord.sock")
        self.log = self.dir / "directord.log"
        self.proc: subprocess.Popen | None = None
        self.config.write_text(textwrap.dedent(f"""\
            ha:
              node: {role}
              nodes: [dir1, dir2]
              media: [bcast eth0]
              authkeys: {authkeys}
              keepalive: {KEEPALIVE}
              warntime: 0.5
              deadtime: {DEADTIME}
              initdead: 3
              auto_failback: true
              resources: ["dir1 {VIP}/32/eth0"]
              state_dir: {self.dir / 'state'}
              announce_repeats: 2
              announce_interval: 1.1
            """))

    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        with open(self.log, "ab") as logf:
            self.proc = N.run_in_netns(
                ns(self.role),
                [sys.executable, "-m", "director.cli", "run", "-c", str(self.config), "--control-socket", self.socket],
                stdout=logf, stderr=subprocess.STDOUT, env=env,
            )

    def signal(self, sig: int) -> None:
        assert self.proc is not None and self.proc.poll() is None, self.tail()
        # ip netns exec execs the program: the Popen pid is the daemon itself
        os.kill(self.proc.pid, sig)

    def wait(self, timeout: float = 20) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def tail(self, chars: int = 4000) -> str:
        try:
            return f"--- {self.role} log ---\n" + self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def has_vip(role: str) -> bool:
    return any(a.split("/")[0] == VIP for a in N.list_addresses(ns(role), "eth0"))


def neighbour_mac(role: str) -> str | None:
    out = subprocess.run(["ip", "-n", ns(role), "neigh", "show", VIP, "dev", "eth0"],
                         capture_output=True, text=True, timeout=10).stdout.split()
    return out[out.index("lladdr") + 1].lower() if "lladdr" in out else None


def wait_for(pred, timeout: float, what: str, dirs=()) -> float:
    """Poll ``pred`` every 20 ms; returns the seconds it took. AssertionError (with logs) on timeout."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return time.monotonic() - t0
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n" + "\n".join(d.tail() for d in dirs))


def garp_senders(capture: socket.socket) -> list[bytes]:
    """Sender MACs of the gratuitous ARPs for the VIP read so far (SPA == TPA == VIP)."""
    macs = []
    while True:
        try:
            frame = capture.recv(2048)
        except (BlockingIOError, socket.timeout):
            return macs
        if len(frame) >= 42 and struct.unpack("!H", frame[12:14])[0] == 0x0806:
            sha, spa, tpa = frame[22:28], frame[28:32], frame[38:42]
            if spa == tpa == socket.inet_aton(VIP):
                macs.append(sha)


def test_vip_follows_the_active_director(lab, tmp_path: Path):
    keys = tmp_path / "authkeys"
    keys.write_text("auth 1\n1 sha1 pair-test-secret\n")
    keys.chmod(0o600)
    d1, d2 = Director("dir1", tmp_path, keys), Director("dir2", tmp_path, keys)
    dirs = (d1, d2)
    mac1, mac2 = N.link_mac(ns("dir1"), "eth0").lower(), N.link_mac(ns("dir2"), "eth0").lower()
    capture = N.socket_in_netns(ns("client"), socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
    capture.bind(("eth0", 0))
    capture.setblocking(False)
    probe = N.socket_in_netns(ns("client"), socket.AF_INET, socket.SOCK_DGRAM)
    times: dict[str, float] = {}
    try:
        # 1. both start: the preferred owner takes the VIP
        started = time.monotonic()
        d1.start()
        d2.start()
        times["initial acquisition by dir1"] = wait_for(lambda: has_vip("dir1"), 20, "dir1 to take the VIP", dirs)
        time.sleep(1.0)
        assert not has_vip("dir2"), d2.tail()
        assert bytes.fromhex(mac1.replace(":", "")) in garp_senders(capture)
        probe.sendto(b"x", (VIP, 9))  # the client resolves the VIP
        wait_for(lambda: neighbour_mac("client") == mac1, 5, "the client to resolve the VIP to dir1")
        doc = control.request(d1.socket, "status", 5)["status"]
        assert doc["ha"]["node"] == "dir1" and doc["ha"]["groups"][0]["holder"] == "dir1"
        assert doc["ha"]["peers"][0]["node"] == "dir2" and doc["ha"]["peers"][0]["status"] == "active"

        # 2. crash of dir1 (SIGKILL, link down): dir2 takes over after the deadtime (once the
        #    first 5 s are over: until then a node advertises deadtime + 2 s, as heartbeat does)
        time.sleep(max(0.0, started + 6.5 - time.monotonic()))
        d1.signal(signal.SIGKILL)
        d1.wait()
        N.link_set(ns("dir1"), "eth0", up=False)
        t = wait_for(lambda: has_vip("dir2"), DEADTIME + 2, "dir2 to take the VIP after the crash", dirs)
        times["takeover after SIGKILL + link down"] = t
        assert t >= DEADTIME * 0.5, "dir2 took the VIP before the peer could have been declared dead"
        times["client neighbour entry -> dir2"] = t + wait_for(
            lambda: neighbour_mac("client") == mac2, 6, "the client's neighbour entry to move to dir2", dirs
        )
        assert bytes.fromhex(mac2.replace(":", "")) in garp_senders(capture)

        # 3. dir1 comes back: the new daemon removes the address its killed predecessor left,
        #    the link comes up, and auto_failback returns the VIP to dir1
        assert has_vip("dir1")  # left behind by the killed daemon
        d1.start()
        wait_for(lambda: not has_vip("dir1"), 20, "the restarted dir1 to clear the stale VIP", dirs)
        N.link_set(ns("dir1"), "eth0", up=True)
        t0 = time.monotonic()
        both = 0.0
        last = t0
        while time.monotonic() - t0 < 20:
            on1, on2 = has_vip("dir1"), has_vip("dir2")
            now = time.monotonic()
            if on1 and on2:
                both += now - last
            last = now
            if on1 and not on2:
                break
            time.sleep(0.02)
        else:
            raise AssertionError("the VIP did not fail back to dir1\n" + d1.tail() + d2.tail())
        times["failback to dir1 after link up"] = time.monotonic() - t0
        times["VIP on both during failback"] = both
        assert both <= 0.5, f"VIP on both directors for {both:.3f} s"
        for _ in range(25):  # and it stays there
            assert has_vip("dir1") and not has_vip("dir2")
            time.sleep(0.04)

        # 4. graceful stop of the active director: the peer takes over at once
        garp_senders(capture)  # drain
        d1.signal(signal.SIGTERM)
        t = wait_for(lambda: has_vip("dir2"), 5, "dir2 to take the VIP after SIGTERM of dir1", dirs)
        times["takeover after SIGTERM"] = t
        assert t < DEADTIME, f"graceful handover took {t:.3f} s: as slow as a death detection"
        assert d1.wait() == 0, d1.tail()
        assert not has_vip("dir1")
        doc = control.request(d2.socket, "status", 5)["status"]
        assert doc["ha"]["groups"][0]["holder"] == "dir2" and doc["ha"]["groups"][0]["held"] is True
        assert doc["ha"]["peers"][0]["status"] == "dead"
        wait_for(lambda: neighbour_mac("client") == mac2, 6, "the client's neighbour entry to move to dir2", dirs)
        d2.signal(signal.SIGTERM)
        assert d2.wait() == 0, d2.tail()
        assert not has_vip("dir2")
    finally:
        capture.close()
        probe.close()
        for d in dirs:
            d.kill()
        print("\nHA pair timings (seconds):")
        for name, value in times.items():
            print(f"  {name}: {value:.3f}")


def test_refusal_and_reload_of_the_ha_section(lab, tmp_path: Path):
    keys = tmp_path / "authkeys"
    keys.write_text("auth 1\n1 sha1 pair-test-secret\n")
    keys.chmod(0o600)
    d = Director("dir1", tmp_path, keys)
    good = d.config.read_text()
    try:
        # lo has no broadcast address: the environment check refuses to start, naming the file
        d.config.write_text(good.replace("media: [bcast eth0]", "media: [bcast lo]"))
        d.start()
        assert d.wait() == 1, d.tail()
        log = d.log.read_text()
        assert f"{d.config}:1: ha.media: bcast lo: interface 'lo' has no IPv4 address with a broadcast" in log

        # a running daemon keeps its HA service on a reload that changes the ha section
        d.config.write_text(good)
        d.start()
        wait_for(lambda: has_vip("dir1"), 20, "dir1 to take the VIP alone", (d,))
        d.config.write_text(good.replace(f"keepalive: {KEEPALIVE}", "keepalive: 0.3"))
        d.signal(signal.SIGHUP)
        wait_for(lambda: "HA changes need a restart" in d.log.read_text(), 10, "the reload warning", (d,))
        doc = control.request(d.socket, "status", 5)["status"]
        assert doc["ha"]["state"] == "active" and doc["ha"]["groups"][0]["holder"] == "dir1"
        assert doc["ha"]["peers"] == [{"node": "dir2", "status": "dead", "last_heard_s": None}]
        d.signal(signal.SIGTERM)
        assert d.wait() == 0, d.tail()
        assert not has_vip("dir1")
    finally:
        d.kill()
