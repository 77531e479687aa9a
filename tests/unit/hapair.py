"""Helpers for end-to-end tests of two `directord run` daemons as a heartbeat pair, in namespaces.

Root only; everything lives in network namespaces made here and deleted
afterwards. Nothing here uses the ``ha`` package: addresses are read with
netlink, frames are captured with ``AF_PACKET`` sockets and decoded with
scapy, heartbeat packets are taken apart and signed again with
`hbpcap` (an implementation independent of ``ha.wire``).

`PairNet` is not `director.lab.pair.PairLab` (``directord lab up``), on
purpose: the lab builds a whole load-balancing site (real servers with their
HTTP servers, IPVS on the directors, a bond, a state file that outlives the
process) and needs ``ip_vs``, while these tests need only the heartbeat
pair's network, with what the lab does not offer: nodes that only sit on the
heartbeat link (``hb_nodes``, an intruder), IPv6 on the service LAN, subnets
of their own (tests may run side by side) and daemons with ``ha:``-only
configurations whose timers and media each test chooses. Building on the lab
would make every test pay for its real servers and IPVS.

* `PairNet`: a switch namespace ``<prefix>-sw`` with bridge ``br0`` (the
  service LAN) and the nodes ``client`` (.2), ``dir1`` (.10), ``dir2``
  (.11), each with ``eth0`` plugged into ``br0`` (IPv4 ``<subnet>.N/24`` with
  a broadcast address; ``fd00:216::N/64`` as well with ``ipv6``). With
  ``hb_link`` the directors also get ``eth1`` on a second bridge ``hb0``
  (the dedicated heartbeat link, ``<hb_subnet>.N/24``), and ``hb_nodes``
  adds further namespaces with ``eth0`` on ``hb0`` only (e.g. an intruder
  that injects packets on the heartbeat medium).
* `Director`: one ``directord run`` in a director namespace, with a
  configuration holding only an ``ha:`` section (no virtual services), its
  own state directory, control socket and log.
* `VipSampler`: a thread that samples which directors hold given addresses
  every 20 ms, so a test can assert what held when (and for how long).
* `Capture`: a thread collecting the frames an interface receives.
* Decoders (`decode_arp`, `decode_ipv6_na`) and predicates for gratuitous ARP
  and unsolicited NA (RFC 826, RFC 4861 section 4.4).
* `resign` / `build_packet`: take a captured heartbeat packet apart and sign
  it again (HMAC, heartbeat 3.0.6 netstring framing: ``###``/``%%%``
  markers, the inner ``auth`` field, the outer ``N:INDEX MAC,`` netstring).

Times are seconds (``time.monotonic()``) unless said otherwise.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from hbpcap import inner_text, split_packet
from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6
from scapy.layers.l2 import ARP, Ether

from director import control
from director.lab import netns as N
from ha.model import DEFAULT_DEADTIME, DEFAULT_INITDEAD, DEFAULT_KEEPALIVE, DEFAULT_WARNTIME

REPO = Path(__file__).resolve().parents[2]
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4  # linux/if_packet.h: a frame this host sent
#: Default heartbeat timers of the pair (seconds): the shipped directord defaults.
KEEPALIVE, WARNTIME, DEADTIME, INITDEAD = DEFAULT_KEEPALIVE, DEFAULT_WARNTIME, DEFAULT_DEADTIME, DEFAULT_INITDEAD
#: A node advertises deadtime + 2 s for its first 5 s (heartbeat's hb_add_deadtime).
STARTUP_DT_PERIOD = 5.0
SECRET = "pair-test-secret"


def netns_problem() -> str | None:
    """None if network namespaces can be made here, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    name = f"hpp{os.getpid()}-probe"
    try:
        N.create_netns(name)
    except OSError as err:
        return f"cannot create network namespaces: {err}"
    finally:
        N.delete_netns(name)
    return None


def wait_for(
    pred: Callable[[], object], timeout: float, what: str, dirs: Iterable[Director] = (), interval: float = 0.02
) -> float:
    """Poll ``pred`` every ``interval`` s until it is true; returns the seconds it took.

    Raises:
        AssertionError: not true within ``timeout`` s (with the daemons' log tails).
    """
    t0 = time.monotonic()
    while True:
        if pred():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}\n" + tails(dirs))
        time.sleep(interval)


def tails(dirs: Iterable[Director]) -> str:
    return "\n".join(d.tail() for d in dirs)


class PairNet:
    """The namespaces and bridges of a pair test, nothing else: no daemons, no IPVS, no real
    servers (see the module docstring); a context manager.

    Args:
        tag: short namespace prefix tag; the prefix is ``<tag><pid>``.
        hb_link: give the directors ``eth1`` on a separate heartbeat bridge ``hb0``.
        hb_nodes: extra roles with ``eth0`` on ``hb0`` (needs ``hb_link``),
            addresses ``<hb_subnet>.66``, ``.67``...
        ipv6: IPv6 addresses on the service LAN as well (DAD off in every node).
        subnet, hb_subnet, subnet6: the first three octets of the IPv4 /24s
            and the IPv6 /64 prefix (``"fd00:216::"``).
    """

    DIRS = ("dir1", "dir2")

    def __init__(
        self,
        tag: str,
        *,
        hb_link: bool = False,
        hb_nodes: Sequence[str] = (),
        ipv6: bool = False,
        subnet: str = "10.216.0",
        hb_subnet: str = "10.216.1",
        subnet6: str = "fd00:216::",
    ) -> None:
        assert hb_link or not hb_nodes
        self.prefix = f"{tag}{os.getpid()}"
        self.hb_link = hb_link
        self.hb_nodes = tuple(hb_nodes)
        self.ipv6 = ipv6
        self.subnet, self.hb_subnet = subnet, hb_subnet
        self.addr = {"client": f"{subnet}.2", "dir1": f"{subnet}.10", "dir2": f"{subnet}.11"}
        self.addr6 = {r: f"{subnet6}{a.rsplit('.', 1)[1]}" for r, a in self.addr.items()}
        self.hb_addr = {"dir1": f"{hb_subnet}.10", "dir2": f"{hb_subnet}.11"} if hb_link else {}
        for i, role in enumerate(self.hb_nodes):
            self.hb_addr[role] = f"{hb_subnet}.{66 + i}"
        self.vip = f"{subnet}.100"
        self.vip6 = f"{subnet6}100"
        self.hb_broadcast = f"{hb_subnet}.255"

    def ns(self, role: str) -> str:
        return f"{self.prefix}-{role}"

    def __enter__(self) -> PairNet:
        N.cleanup_netns(self.prefix)
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _node(self, role: str) -> None:
        N.create_netns(self.ns(role))
        if self.ipv6:
            N.set_sysctls(self.ns(role), {"net.ipv6.conf.default.accept_dad": "0", "net.ipv6.conf.all.accept_dad": "0"})

    def _plug(self, role: str, ifname: str, bridge: str, port: str, cidr: str, cidr6: str | None = None) -> None:
        N.add_veth(self.ns("sw"), port, self.ns(role), ifname)
        N.set_master(self.ns("sw"), port, bridge)
        subprocess.run(
            ["ip", "-n", self.ns(role), "addr", "add", cidr, "brd", "+", "dev", ifname],
            check=True,
            capture_output=True,
            timeout=30,
        )
        if cidr6:
            N.add_address(self.ns(role), ifname, cidr6)

    def _build(self) -> None:
        N.create_netns(self.ns("sw"))
        N.add_bridge(self.ns("sw"), "br0")
        if self.hb_link:
            N.add_bridge(self.ns("sw"), "hb0")
        for role, addr in self.addr.items():
            self._node(role)
            self._plug(role, "eth0", "br0", role, f"{addr}/24", f"{self.addr6[role]}/64" if self.ipv6 else None)
        for role in self.DIRS if self.hb_link else ():
            self._plug(role, "eth1", "hb0", f"{role}h", f"{self.hb_addr[role]}/24")
        for role in self.hb_nodes:
            self._node(role)
            self._plug(role, "eth0", "hb0", role, f"{self.hb_addr[role]}/24")

    def close(self) -> None:
        N.cleanup_netns(self.prefix)

    # --- state and faults ------------------------------------------------------------

    def mac(self, role: str, ifname: str = "eth0") -> bytes:
        return bytes.fromhex(N.link_mac(self.ns(role), ifname).replace(":", ""))

    def holds(self, role: str, address: str | None = None, ifname: str = "eth0") -> bool:
        """True if ``address`` (default: the IPv4 VIP) is configured on ``role``'s ``ifname``."""
        want = ipaddress.ip_address(address or self.vip)
        return any(ipaddress.ip_address(a.split("/")[0]) == want for a in N.list_addresses(self.ns(role), ifname))

    def holders(self, address: str | None = None) -> frozenset[str]:
        return frozenset(r for r in self.DIRS if self.holds(r, address))

    def set_heartbeat_link(self, up: bool) -> None:
        """Cut or heal the heartbeat bridge: the directors' ``hb0`` ports down / up (carrier stays on their side)."""
        for role in self.DIRS:
            N.link_set(self.ns("sw"), f"{role}h", up=up)

    def neighbour_mac(self, role: str, address: str | None = None) -> bytes | None:
        """The link-layer address ``role`` maps ``address`` (default: the VIP) to, or None."""
        out = subprocess.run(
            ["ip", "-n", self.ns(role), "neigh", "show", address or self.vip, "dev", "eth0"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.split()
        return bytes.fromhex(out[out.index("lladdr") + 1].replace(":", "")) if "lladdr" in out else None


def ha_config(
    role: str,
    *,
    media: Sequence[str],
    resources: Sequence[str],
    authkeys: Path,
    state_dir: Path,
    auto_failback: bool | str = True,
    keepalive: float = KEEPALIVE,
    warntime: float = WARNTIME,
    deadtime: float = DEADTIME,
    initdead: float = INITDEAD,
    announce_repeats: int = 2,
    announce_interval: float = 1.1,
) -> str:
    """The YAML of a configuration with only an ``ha:`` section for node ``role`` of dir1/dir2."""
    failback = auto_failback if isinstance(auto_failback, str) else str(auto_failback).lower()
    return textwrap.dedent(f"""\
        ha:
          node: {role}
          nodes: [dir1, dir2]
          media: {json.dumps(list(media))}
          authkeys: {authkeys}
          keepalive: {keepalive}
          warntime: {warntime}
          deadtime: {deadtime}
          initdead: {initdead}
          auto_failback: {failback}
          resources: {json.dumps(list(resources))}
          state_dir: {state_dir}
          announce_repeats: {announce_repeats}
          announce_interval: {announce_interval}
        """)


def write_authkeys(path: Path, secret: str = SECRET) -> Path:
    """heartbeat's authkeys file (sha1, index 1), mode 600."""
    path.write_text(f"auth 1\n1 sha1 {secret}\n")
    path.chmod(0o600)
    return path


class Director:
    """One ``directord run`` in ``lab.ns(role)`` (or in namespace ``netns``); files under ``workdir/role``.

    ``config_kwargs`` go to `ha_config` (``media`` and ``resources`` at least);
    ``config`` (a path) can be rewritten before `start`.
    """

    def __init__(
        self,
        lab: PairNet | None,
        role: str,
        workdir: Path,
        authkeys: Path,
        *,
        netns: str | None = None,
        **config_kwargs,
    ) -> None:
        assert lab is not None or netns is not None
        self.netns = netns if netns is not None else lab.ns(role)  # type: ignore[union-attr]
        self.role = role
        self.dir = workdir / role
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config = self.dir / "directord.yaml"
        self.socket = str(self.dir / "directord.sock")
        self.log = self.dir / "directord.log"
        self.proc: subprocess.Popen | None = None
        self.started_at: float | None = None
        self.config.write_text(ha_config(role, authkeys=authkeys, state_dir=self.dir / "state", **config_kwargs))

    def start(self) -> float:
        """Start the daemon; returns the monotonic start time."""
        env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
        with open(self.log, "ab") as logf:
            logf.write(f"--- start at {time.monotonic():.3f} ---\n".encode())
            logf.flush()
            self.started_at = time.monotonic()
            self.proc = N.run_in_netns(
                self.netns,
                [sys.executable, "-m", "director.cli", "run", "-c", str(self.config), "--control-socket", self.socket],
                stdout=logf,
                stderr=subprocess.STDOUT,
                env=env,
            )
        return self.started_at

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        assert self.running(), self.tail()
        assert self.proc is not None
        os.kill(self.proc.pid, sig)  # ip netns exec execs the program: this is the daemon itself

    def crash(self) -> None:
        """SIGKILL the daemon and reap it (its addresses stay configured)."""
        self.signal(signal.SIGKILL)
        self.wait()

    def wait(self, timeout: float = 20) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.running():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)

    def status(self) -> dict:
        """The HA part of the daemon's status document (control socket)."""
        return control.request(self.socket, "status", 5)["status"]["ha"]

    def try_status(self) -> dict | None:
        """`status`, or None while no daemon answers on the control socket (starting, stopped)."""
        try:
            return self.status()
        except (OSError, ValueError, KeyError):
            return None

    def peer_status(self) -> str | None:
        """The status (``active``, ``dead``...) this daemon sees of its one peer; None if it does not answer."""
        doc = self.try_status()
        return doc["peers"][0]["status"] if doc and doc.get("peers") else None

    def status_cli(self) -> dict:
        """``directord status --json`` against this daemon; the whole document."""
        out = subprocess.run(
            [sys.executable, "-m", "director.cli", "status", "--json", "--control-socket", self.socket],
            capture_output=True,
            text=True,
            timeout=30,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
        )
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def node_started_at(self, timeout: float = 20) -> float:
        """Monotonic time at which the current daemon's heartbeat node started (its log line
        ``heartbeat node <role> starting``, wall-clock stamped); waits up to ``timeout`` s for it."""
        found: list[float] = []

        def look() -> bool:
            text = self.log.read_text(errors="replace")
            text = text[text.rfind("--- start at ") :]
            for line in text.splitlines():
                if f"heartbeat node {self.role} starting" in line:
                    stamp, _, millis = line[:23].partition(",")
                    wall = time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) + int(millis) / 1000
                    found.append(wall - time.time() + time.monotonic())
                    return True
            return False

        wait_for(look, timeout, f"{self.role}'s heartbeat node to start", (self,), interval=0.05)
        return found[0]

    def past_startup_bonus(self, margin: float = 1.0) -> None:
        """Sleep until this daemon advertises its plain deadtime (the first 5 s of its node are over,
        plus ``margin``); process start-up under load does not count."""
        started = self.node_started_at()
        time.sleep(max(0.0, started + STARTUP_DT_PERIOD + margin - time.monotonic()))

    def tail(self, chars: int = 4000) -> str:
        try:
            return f"--- {self.role} log ---\n" + self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


class VipSampler:
    """Samples, every ``interval`` s in a thread, which directors hold ``address``.

    ``samples`` is a list of ``(monotonic time, frozenset of roles)``; use as a
    context manager (the thread stops at exit).
    """

    def __init__(self, lab: PairNet, address: str | None = None, interval: float = 0.02) -> None:
        self.lab = lab
        self.address = address or lab.vip
        self.interval = interval
        self.samples: list[tuple[float, frozenset[str]]] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> VipSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                holders = self.lab.holders(self.address)
            except Exception as exc:  # a namespace gone at teardown
                self.errors.append(repr(exc))
                holders = None
            if holders is not None:
                with self._lock:
                    self.samples.append((time.monotonic(), holders))
            time.sleep(self.interval)

    def since(self, t0: float, t1: float | None = None) -> list[tuple[float, frozenset[str]]]:
        with self._lock:
            return [(t, h) for t, h in self.samples if t >= t0 and (t1 is None or t <= t1)]

    def now(self) -> frozenset[str]:
        """Holders in the newest sample taken after this call."""
        t0 = time.monotonic()
        wait_for(lambda: self.since(t0), 5, "a VIP sample")
        return self.since(t0)[-1][1]

    def wait(
        self,
        pred: Callable[[frozenset[str]], bool],
        timeout: float,
        what: str,
        dirs: Iterable[Director] = (),
        since: float | None = None,
    ) -> float:
        """Seconds from ``since`` (default: now) to the first sample after it with ``pred(holders)`` true."""
        t0 = time.monotonic() if since is None else since
        found: list[float] = []

        def check() -> bool:
            for t, h in self.since(t0):
                if pred(h):
                    found.append(t)
                    return True
            return False

        wait_for(check, timeout, what, dirs)
        return found[0] - t0

    def duration(self, pred: Callable[[frozenset[str]], bool], t0: float, t1: float | None = None) -> float:
        """Total seconds between ``t0`` and ``t1`` during which ``pred(holders)`` held (sample to sample)."""
        samples = self.since(t0, t1)
        total = 0.0
        for (ta, ha), (tb, _) in zip(samples, samples[1:]):
            if pred(ha):
                total += tb - ta
        return total

    def seen(self, t0: float, t1: float | None = None) -> set[frozenset[str]]:
        """Every distinct set of holders sampled between ``t0`` and ``t1``."""
        return {h for _, h in self.since(t0, t1)}


class Capture:
    """Frames received (not sent) on ``ifname`` of namespace ``ns``, collected by a thread.

    ``frames`` is a list of ``(monotonic time, frame bytes)``; `close` stops it.
    """

    def __init__(self, ns: str, ifname: str = "eth0", ethertype: int = ETH_P_ALL) -> None:
        self.sock = N.socket_in_netns(ns, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ethertype))
        self.sock.bind((ifname, ethertype))
        self.sock.settimeout(0.05)
        self.frames: list[tuple[float, bytes]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            if addr[2] == PACKET_OUTGOING:
                continue
            with self._lock:
                self.frames.append((time.monotonic(), data))

    def matching(self, pred: Callable[[bytes], bool], since: float = 0.0) -> list[tuple[float, bytes]]:
        with self._lock:
            return [(t, f) for t, f in self.frames if t >= since and pred(f)]

    def wait(
        self, pred: Callable[[bytes], bool], count: int = 1, timeout: float = 5.0, since: float = 0.0
    ) -> list[tuple[float, bytes]]:
        """The matching frames once there are ``count`` (or whatever came by ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.matching(pred, since)
            if len(got) >= count or time.monotonic() > deadline:
                return got
            time.sleep(0.02)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- frame decoders (RFC 826 ARP, RFC 8200 IPv6, RFC 4861 NA): scapy, independent of ha.announce ---


def _mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


@functools.lru_cache(maxsize=4096)
def _arp_fields(frame: bytes) -> dict | None:
    """`decode_arp`'s dict, or None for a frame that is no Ethernet/ARP for IPv4 (memoized: the
    predicates see every captured frame at each poll of `Capture.wait`)."""
    if len(frame) < 14:
        return None
    pkt = Ether(frame)
    if pkt.type != 0x0806 or ARP not in pkt:
        return None
    arp = pkt[ARP]
    if (arp.hwtype, arp.ptype, arp.hwlen, arp.plen) != (1, 0x0800, 6, 4):
        return None
    return {
        "dst": _mac_bytes(pkt.dst),
        "src": _mac_bytes(pkt.src),
        "op": arp.op,
        "sha": _mac_bytes(arp.hwsrc),
        "spa": arp.psrc,
        "tha": _mac_bytes(arp.hwdst),
        "tpa": arp.pdst,
    }


def decode_arp(frame: bytes) -> dict:
    """Ethernet + ARP: ``{"dst", "src", "op", "sha", "spa", "tha", "tpa"}`` (MACs as bytes, IPs as text).

    AssertionError on a frame that is not ARP for IPv4 over Ethernet.
    """
    fields = _arp_fields(frame)
    assert fields is not None, f"not an Ethernet/ARP frame for IPv4: {frame[:42].hex()}"
    return dict(fields)


def is_garp_for(vip: str) -> Callable[[bytes], bool]:
    """Predicate: an ARP frame with SPA == TPA == ``vip`` (a gratuitous ARP, RFC 5227 section 3)."""

    def pred(frame: bytes) -> bool:
        fields = _arp_fields(frame)
        return fields is not None and fields["spa"] == fields["tpa"] == vip

    return pred


@functools.lru_cache(maxsize=4096)
def _na_fields(frame: bytes) -> dict | None:
    """`decode_ipv6_na`'s dict, or None for a frame that is no Ethernet/IPv6/NA (memoized)."""
    if len(frame) < 14:
        return None
    pkt = Ether(frame)
    if pkt.type != 0x86DD or not isinstance(pkt.payload, IPv6):
        return None
    ip = pkt[IPv6]
    if ip.nh != 58 or not isinstance(ip.payload, ICMPv6ND_NA):  # no extension headers
        return None
    na = ip.payload
    return {
        "dst": _mac_bytes(pkt.dst),
        "src": _mac_bytes(pkt.src),
        "hlim": ip.hlim,
        "saddr": ip.src,
        "daddr": ip.dst,
        "type": na.type,
        "code": na.code,
        "R": na.R,
        "S": na.S,
        "O": na.O,
        "target": na.tgt,
        "tlla": _mac_bytes(na[ICMPv6NDOptDstLLAddr].lladdr) if ICMPv6NDOptDstLLAddr in na else None,
    }


def decode_ipv6_na(frame: bytes) -> dict:
    """Ethernet + IPv6 + ICMPv6 Neighbor Advertisement.

    Returns ``{"dst", "src", "hlim", "saddr", "daddr", "type", "code", "R", "S",
    "O", "target", "tlla"}``; ``tlla`` is the target link-layer address
    option's (type 2) MAC or None. AssertionError on a frame that is not one.
    """
    fields = _na_fields(frame)
    assert fields is not None, f"not an Ethernet/IPv6/ICMPv6 NA frame: {frame[:86].hex()}"
    return dict(fields)


def is_na_for(vip6: str) -> Callable[[bytes], bool]:
    """Predicate: an ICMPv6 Neighbor Advertisement (no extension headers) whose target is ``vip6``."""
    want = ipaddress.IPv6Address(vip6)

    def pred(frame: bytes) -> bool:
        fields = _na_fields(frame)
        return fields is not None and ipaddress.IPv6Address(fields["target"]) == want

    return pred


# --- heartbeat packets (heartbeat 3.0.6 netstring framing), via hbpcap ----------------------


def packet_fields(packet: bytes) -> dict[str, bytes]:
    """``{name: raw value}`` (first of each name) of a netstring heartbeat packet."""
    _signed, fields, _idx, _mac = split_packet(packet)
    out: dict[str, bytes] = {}
    for _t, name, value in fields:
        out.setdefault(name.decode(), value)
    return out


def build_packet(fields: list[tuple[int, bytes, bytes]], key: bytes, index: int = 1, digest: str = "sha1") -> bytes:
    """A signed netstring packet of ``fields`` (``(type, name, raw value)``, no ``auth``):
    the inner ``auth`` field last, then the outer MAC over everything up to ``%%%``."""
    fields = [f for f in fields if f[1] != b"auth"]
    inner = hmac.new(key, inner_text(fields), getattr(hashlib, digest)).hexdigest()
    fields.append((0, b"auth", f"{index} {inner}".encode()))
    body = b"###\n"
    for ftype, name, value in fields:
        item = b"(%d)" % ftype + name + b"=" + value
        body += b"%d:" % len(item) + item + b","
    body += b"%%%\n"
    outer = f"{index} {hmac.new(key, body, getattr(hashlib, digest)).hexdigest()}".encode()
    return body + b"%d:" % len(outer) + outer + b","


def resign(packet: bytes, key: bytes, index: int = 1, **changes: bytes) -> bytes:
    """``packet`` with fields changed (``seq=b"7a"``) and signed again with ``key`` / ``index``."""
    _signed, fields, _idx, _mac = split_packet(packet)
    out = []
    for ftype, name, value in fields:
        out.append((ftype, name, changes.get(name.decode(), value)))
    return build_packet(out, key, index)


class HeartbeatTap:
    """A UDP socket on the heartbeat port in namespace ``ns``: hears the pair's
    broadcasts and injects datagrams (to the broadcast address ``bcast``)."""

    def __init__(self, ns: str, bcast: str, port: int = 694) -> None:
        self.bcast, self.port = bcast, port
        self.sock = N.socket_in_netns(ns, socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("", port))
        self.sock.settimeout(0.1)

    def receive(self, pred: Callable[[bytes, dict[str, bytes]], bool], timeout: float = 5.0) -> bytes:
        """The first packet heard with ``pred(packet, fields)`` true. AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data, _ = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            try:
                fields = packet_fields(data)
            except (AssertionError, ValueError):
                continue
            if pred(data, fields):
                return data
        raise AssertionError(f"no matching heartbeat packet within {timeout} s")

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, (self.bcast, self.port))

    def close(self) -> None:
        self.sock.close()
