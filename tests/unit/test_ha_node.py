"""Tests for ha.node (the heartbeat node state machine) and ha.identity.

Two HeartbeatNodes talk through an in-memory wire driven by a fake clock
(`Sim` below): it delivers every `Send` to the other node after a small
latency, can drop packets at random, cut and heal the link, kill a node (no
more delivery, no more ticks) and restart it with a new generation, and acts
as the driver: it carries out Acquire / Release (a set of configured groups
per node) and confirms them after a short delay.

Interop: nodeb's packets from a real heartbeat 3.0.6 capture are fed to a
node configured as nodea, and its answers are compared with what the real
nodea answered. Every packet a node emits is decoded with ha.wire and its
outer and inner MACs are checked with an independent HMAC computation.
"""

from __future__ import annotations

import heapq
import logging
import os
import random
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hbpcap import DATA, check_macs, udp_payloads

from ha.auth import parse_authkeys
from ha.identity import IdentityError, NodeIdentity, generation_path, load_identity, uuid_path
from ha.model import HAConfig, Medium, Resource, ResourceGroup, Timers
from ha.node import (
    COUNTERS,
    REANNOUNCE_REASON,
    Acquire,
    HeartbeatNode,
    Log,
    PeerStatus,
    Release,
    Send,
    Stopped,
    TimersLate,
)
from ha.wire import Message, add_standard_fields, decode_packet, encode_packet

KEY = b"testkey123"
KEYS = parse_authkeys((DATA / "authkeys.sha1").read_bytes(), "authkeys.sha1")
OTHER_KEYS = parse_authkeys(b"auth 1\n1 sha1 notthekey\n", "other")
MD5_KEYS = parse_authkeys((DATA / "authkeys.md5").read_bytes(), "authkeys.md5")

VIP = ResourceGroup("nodea", (Resource("192.168.50.10", 32, "eth0"),))
VIP_B = ResourceGroup("nodeb", (Resource("192.168.50.20", 32, "eth0"),))
DEFAULT = Timers()
HB_TIMERS = Timers(keepalive=1.0, warntime=3.0, deadtime=6.0, initdead=12.0)
UUIDS = {"nodea": bytes(range(1, 17)), "nodeb": bytes(range(101, 117))}


def make_config(node: str, *, auto_failback=True, timers=DEFAULT, groups=(VIP,), compat="directord", **kw) -> HAConfig:
    return HAConfig(
        node=node,
        nodes=("nodea", "nodeb"),
        media=(Medium("bcast", "eth0"),),
        authkeys="authkeys",
        timers=timers,
        auto_failback=auto_failback,
        groups=groups,
        compat=compat,
        **kw,
    )


def decode(raw: bytes) -> Message:
    """Decode with the project's codec and verify both MACs independently."""
    msg = decode_packet(raw, KEYS, check_inner_auth=True)
    check_macs(raw, KEY)
    return msg


def sends(actions) -> list[Message]:
    return [decode(a.payload) for a in actions if isinstance(a, Send)]


def of_type(actions, cls):
    return [a for a in actions if isinstance(a, cls)]


def logs(actions) -> str:
    return "\n".join(a.message for a in actions if isinstance(a, Log))


def forge(msg_pairs, *, src="nodeb", seq=None, hg=200, ts=1_700_000_000, keys=KEYS, dest=None, uuid=None) -> bytes:
    """A packet as nodeb would send it (signed with `keys`)."""
    msg = Message.from_pairs(msg_pairs)
    full = add_standard_fields(
        msg,
        src=src,
        srcuuid=uuid or UUIDS.get(src, bytes(range(201, 217))),
        seq=seq,
        hg=hg,
        ts=ts,
        ld=None if seq is None else "0.00 0.00 0.00 1/1 1",
        ttl=3,
        destuuid=UUIDS["nodea"] if dest == "nodea" else None,
    )
    return encode_packet(full, keys)


def status_pkt(seq, st="active", *, hg=200, dt=1000, protocol=True, **kw) -> bytes:
    pairs = [("t", "status"), ("st", st), ("dt", format(dt, "x"))]
    if protocol:
        pairs.append(("protocol", "1"))
    return forge(pairs, seq=seq, hg=hg, **kw)


# --- the simulator ---------------------------------------------------------------------------


@dataclass
class SimNode:
    name: str
    node: HeartbeatNode
    alive: bool = True
    configured: set = field(default_factory=set)  # groups whose addresses are present (driver state)
    started_at: float = 0.0
    stopped: bool = False
    paused_until: float = 0.0


class Sim:
    """Discrete-event driver for two (or one) HeartbeatNodes."""

    def __init__(
        self,
        *,
        auto_failback=True,
        timers=DEFAULT,
        groups=(VIP,),
        compat="directord",
        seed=1,
        tick=0.05,
        latency=0.0005,
        driver_delay=0.02,
        generation=100,
        **config_kw,
    ):
        self.cfg = dict(auto_failback=auto_failback, timers=timers, groups=groups, compat=compat, **config_kw)
        self.rng = random.Random(seed)
        self.tick = tick
        self.latency = latency
        self.driver_delay = driver_delay
        self.now = 0.0
        self.nodes: dict[str, SimNode] = {}
        self.generations = {"nodea": generation, "nodeb": generation + 7}
        self.queue: list = []
        self.counter = 0
        self.loss: dict[tuple[str, str], float] = {}
        self.cut = False
        self.fail_acquire: set[str] = set()
        self.events: list[tuple[float, str, object]] = []  # (time, node, action)
        self.sent: list[tuple[float, str, bytes]] = []
        self.delivered: list[tuple[float, str, str, bytes]] = []
        self.holders_log: list[tuple[float, frozenset]] = []
        self.verified: set[bytes] = set()

    # -- plumbing
    def push(self, when, kind, *args):
        self.counter += 1
        heapq.heappush(self.queue, (when, self.counter, kind, args))

    def new_node(self, name: str) -> HeartbeatNode:
        self.generations[name] += 1
        identity = NodeIdentity(UUIDS[name], self.generations[name])
        return HeartbeatNode(
            make_config(name, **self.cfg),
            KEYS,
            identity,
            wallclock=lambda: 1_700_000_000 + self.now,
            rng=random.Random(hash((name, self.generations[name])) & 0xFFFF),
        )

    def add(self, name: str, at: float = 0.0):
        self.push(at, "start", name)

    def handle(self, name: str, actions):
        sn = self.nodes[name]
        for a in actions:
            self.events.append((self.now, name, a))
            if isinstance(a, Send):
                if a.payload not in self.verified:  # every packet: codec + independent MACs
                    decode(a.payload)
                    self.verified.add(a.payload)
                self.sent.append((self.now, name, a.payload))
                for other, osn in self.nodes.items():
                    if other == name:
                        continue
                    if self.cut:
                        continue
                    if self.rng.random() < self.loss.get((name, other), 0.0):
                        continue
                    self.push(self.now + self.latency, "deliver", other, name, a.payload, osn.node)
            elif isinstance(a, Acquire):
                self.push(self.now + self.driver_delay, "acquired", name, a.group, sn.node)
            elif isinstance(a, Release):
                self.push(self.now + self.driver_delay, "released", name, a.group, sn.node)
            elif isinstance(a, Stopped):
                sn.stopped = True
        self.record_holders()

    def record_holders(self):
        h = frozenset(n for n, sn in self.nodes.items() if VIP in sn.configured)
        if not self.holders_log or self.holders_log[-1][1] != h:
            self.holders_log.append((self.now, h))

    def step(self):
        when, _, kind, args = heapq.heappop(self.queue)
        self.now = max(self.now, when)
        target = args[0] if kind != "start" else None
        if target in self.nodes and self.nodes[target].paused_until > self.now:
            # a stalled process: packets wait in its socket, timers do not run
            self.push(self.nodes[target].paused_until, kind, *args)
            return
        if kind == "start":
            (name,) = args
            node = self.new_node(name)
            old = self.nodes.get(name)
            sn = SimNode(name, node, configured=old.configured if old else set(), started_at=self.now)
            self.nodes[name] = sn
            self.handle(name, node.start(self.now))
            phase = self.rng.random() * self.tick
            self.push(self.now + phase, "tick", name, node)
        elif kind == "tick":
            name, node = args
            sn = self.nodes[name]
            if sn.node is not node or not sn.alive or sn.stopped:
                return
            self.handle(name, node.on_tick(self.now))
            self.push(self.now + self.tick, "tick", name, node)
        elif kind == "deliver":
            dst, src, payload, node = args
            sn = self.nodes[dst]
            if sn.node is not node and sn.node is not None:
                node = sn.node  # delivered to whatever process listens now
            if not sn.alive or sn.stopped:
                return
            self.delivered.append((self.now, src, dst, payload))
            self.handle(dst, sn.node.on_packet(payload, src, self.now))
        elif kind in ("acquired", "released"):
            name, group, node = args
            sn = self.nodes[name]
            if sn.node is not node or not sn.alive or sn.stopped:
                return
            if kind == "acquired":
                ok = name not in self.fail_acquire
                if ok:
                    sn.configured.add(group)
                self.handle(name, node.acquired(group, ok, self.now))
            else:
                sn.configured.discard(group)
                self.handle(name, node.released(group, self.now))

    def run(self, until: float):
        while self.queue and self.queue[0][0] <= until:
            self.step()
        self.now = max(self.now, until)

    def run_until(self, pred, limit: float) -> float:
        while self.queue and self.queue[0][0] <= limit:
            self.step()
            if pred():
                return self.now
        raise AssertionError(f"condition not reached by t={limit} (now {self.now})")

    # -- scenario controls
    def kill(self, name: str):
        self.nodes[name].alive = False

    def pause(self, name: str, seconds: float):
        self.nodes[name].paused_until = self.now + seconds

    def restart(self, name: str, at: float | None = None):
        self.push(self.now if at is None else at, "start", name)

    def stop(self, name: str):
        sn = self.nodes[name]
        self.handle(name, sn.node.stop(self.now))

    def holders(self, group=VIP) -> set[str]:
        return {n for n, sn in self.nodes.items() if group in sn.configured and sn.alive}

    def actions(self, name=None, cls=object, since=0.0):
        return [a for t, n, a in self.events if (name is None or n == name) and isinstance(a, cls) and t >= since]

    def timed(self, name, cls, since=0.0):
        return [(t, a) for t, n, a in self.events if n == name and isinstance(a, cls) and t >= since]

    def messages(self, name, since=0.0):
        return [(t, decode(p)) for t, n, p in self.sent if n == name and t >= since]

    def peer_status(self, name):
        st = [a for t, n, a in self.events if n == name and isinstance(a, PeerStatus)]
        return st[-1].status if st else None


def steady_pair(**kw) -> Sim:
    sim = Sim(**kw)
    sim.add("nodea")
    sim.add("nodeb")
    sim.run(12.0)
    assert sim.holders() == {"nodea"}
    return sim


# --- identity ----------------------------------------------------------------------------------


def test_identity_created_then_generation_grows(tmp_path):
    state = tmp_path / "state"
    first = load_identity(state, "nodea", clock=lambda: 1_000_000.7)
    assert len(first.uuid) == 16 and any(first.uuid)
    assert first.generation == 1_000_001  # time-based start, as heartbeat
    second = load_identity(state, "nodea", clock=lambda: 5.0)
    third = load_identity(state, "nodea")
    assert second.uuid == first.uuid == third.uuid
    assert (second.generation, third.generation) == (1_000_002, 1_000_003)
    assert Path(generation_path(state, "nodea")).read_text() == "1000003\n"
    assert Path(uuid_path(state, "nodea")).read_bytes() == first.uuid
    # another node in the same directory gets its own uuid
    other = load_identity(state, "nodeb", clock=lambda: 7.0)
    assert other.uuid != first.uuid and other.generation == 8
    assert sorted(os.listdir(state)) == [
        "nodea.hb_generation",
        "nodea.hb_uuid",
        "nodeb.hb_generation",
        "nodeb.hb_uuid",
    ]


def test_identity_errors_name_the_file(tmp_path):
    load_identity(tmp_path, "nodea")
    Path(uuid_path(tmp_path, "nodea")).write_bytes(b"short")
    with pytest.raises(IdentityError) as info:
        load_identity(tmp_path, "nodea")
    assert info.value.path == uuid_path(tmp_path, "nodea") and "16" in str(info.value)
    Path(uuid_path(tmp_path, "nodea")).write_bytes(bytes(16))
    with pytest.raises(IdentityError, match="all-zero"):
        load_identity(tmp_path, "nodea")
    Path(uuid_path(tmp_path, "nodea")).write_bytes(b"u" * 16)
    Path(generation_path(tmp_path, "nodea")).write_text("garbage\n")
    with pytest.raises(IdentityError) as info:
        load_identity(tmp_path, "nodea")
    assert str(info.value).startswith(generation_path(tmp_path, "nodea") + ":")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(IdentityError) as info:
        load_identity(blocker / "sub", "nodea")
    assert str(blocker / "sub") in str(info.value)
    with pytest.raises(ValueError):
        load_identity(tmp_path, "../evil")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_identity_unwritable_directory(tmp_path):
    load_identity(tmp_path, "nodea")
    tmp_path.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(IdentityError, match="cannot write"):
            load_identity(tmp_path, "nodea")
    finally:
        tmp_path.chmod(stat.S_IRWXU)


def test_identity_write_is_atomic(tmp_path, monkeypatch):
    load_identity(tmp_path, "nodea", clock=lambda: 41.0)
    real_replace = os.replace

    def failing_replace(a, b):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(IdentityError, match="No space left"):
        load_identity(tmp_path, "nodea")
    monkeypatch.setattr(os, "replace", real_replace)
    # the old value is intact and no temporary file is left behind
    assert Path(generation_path(tmp_path, "nodea")).read_text() == "42\n"
    assert sorted(os.listdir(tmp_path)) == ["nodea.hb_generation", "nodea.hb_uuid"]
    assert load_identity(tmp_path, "nodea").generation == 43


def test_node_identity_validation():
    with pytest.raises(ValueError):
        NodeIdentity(b"x" * 15, 1)
    with pytest.raises(ValueError):
        NodeIdentity(bytes(16), 1)
    with pytest.raises(ValueError):
        NodeIdentity(b"x" * 16, 0)


# --- construction and the first packets ----------------------------------------------------------


def new_node(node="nodea", generation=300, **kw) -> HeartbeatNode:
    cfg_kw = {k: kw.pop(k) for k in list(kw) if k in ("auto_failback", "timers", "groups", "compat")}
    return HeartbeatNode(
        make_config(node, **cfg_kw),
        KEYS,
        NodeIdentity(UUIDS[node], generation),
        wallclock=lambda: 1_700_000_000,
        rng=random.Random(5),
        **kw,
    )


def test_config_validation():
    with pytest.raises(ValueError, match="not in the node list"):
        HeartbeatNode(make_config("nodec"), KEYS, NodeIdentity(UUIDS["nodea"], 1))
    cfg = HAConfig(node="a", nodes=("a", "b", "c"), media=(), authkeys="k")
    with pytest.raises(ValueError, match="one or two nodes"):
        HeartbeatNode(cfg, KEYS, NodeIdentity(UUIDS["nodea"], 1))
    with pytest.raises(ValueError, match="owner"):
        HeartbeatNode(make_config("nodea", groups=(ResourceGroup("x", ()),)), KEYS, NodeIdentity(UUIDS["nodea"], 1))
    with pytest.raises(ValueError, match="duplicate resource groups"):
        HeartbeatNode(make_config("nodea", groups=(VIP, VIP)), KEYS, NodeIdentity(UUIDS["nodea"], 1))
    with pytest.raises(ValueError, match="keepalive"):
        HeartbeatNode(make_config("nodea", timers=Timers(keepalive=0)), KEYS, NodeIdentity(UUIDS["nodea"], 1))


def test_start_sends_init_up_up_with_standard_fields():
    node = new_node(loadavg=lambda: "0.42 0.40 0.30 2/99 123\nignored")
    out = node.start(10.0)
    assert of_type(out, Release) == [Release(VIP, "start: nothing is ours until the peers agree")]
    msgs = sends(out)
    assert [m["st"] for m in msgs] == ["init", "up", "up"]
    for i, m in enumerate(msgs, start=1):
        assert m.names == ["t", "st", "dt", "protocol", "src", "srcuuid", "seq", "hg", "ts", "ld", "ttl", "auth"]
        assert m["t"] == "status" and m["protocol"] == "1" and m["src"] == "nodea"
        assert m["dt"] == format(800 + 2000, "x")  # deadtime + 2000 ms for the first 5 s
        assert m["seq"] == format(i, "x") and m["hg"] == format(300, "x")
        assert m["ts"] == format(1_700_000_000, "x") and m["ttl"] == "3"
        assert m["ld"] == "0.42 0.40 0.30 2/99 123"
        assert m.get_binary("srcuuid") == UUIDS["nodea"]
    with pytest.raises(RuntimeError):
        node.start(11.0)


def test_keepalive_and_dt_after_five_seconds():
    node = new_node()
    node.start(0.0)
    node.released(VIP, 0.0)
    seen = []
    t = 0.0
    while t < 6.0:
        t = round(t + 0.05, 2)
        for m in sends(node.on_tick(t)):
            seen.append((t, m.msg_type, m.get("dt")))
    statuses = [(t, dt) for t, mt, dt in seen if mt == "status"]
    # every keepalive (0.2 s), dt 2800 ms then deadtime once 5 s have passed (sent at once)
    assert statuses[0] == (0.2, "af0")  # 2800 ms
    assert all(dt == "af0" for t, dt in statuses if t < 5.0)
    assert [(t, dt) for t, dt in statuses if t >= 5.0][0] == (5.0, "320")  # 800 ms, sent at once
    assert all(dt == "320" for t, dt in statuses if t >= 5.0)
    assert 0 < node.next_deadline() - 6.0 <= 0.2


def test_heartbeat_compat_heartbeat_timers():
    node = new_node(timers=HB_TIMERS, compat="heartbeat")
    msgs = sends(node.start(0.0))
    assert msgs[0]["dt"] == "1f40"  # 8000 ms, as the captured real daemons
    assert node.next_deadline() == pytest.approx(1.0)


# --- two nodes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("auto_failback", [True, False, "legacy"])
def test_start_together_owner_acquires_quickly(auto_failback):
    sim = Sim(auto_failback=auto_failback)
    sim.add("nodea")
    sim.add("nodeb")
    t = sim.run_until(lambda: sim.holders() == {"nodea"}, 10.0)
    # legacy waits for an answer to ip-request that never comes (nobody holds it)
    assert t < (DEFAULT.initdead if auto_failback != "legacy" else DEFAULT.initdead + 1.0)
    sim.run(20.0)
    assert sim.holders() == {"nodea"}
    assert not sim.actions("nodeb", Acquire)
    assert sim.peer_status("nodea") == "active" and sim.peer_status("nodeb") == "active"
    assert sim.nodes["nodea"].node.snapshot().status == "active"
    for name in ("nodea", "nodeb"):
        assert sim.nodes[name].node.counters["internal_errors"] == 0
        assert not [a for a in sim.actions(name, Log) if a.level >= logging.ERROR], logs(sim.actions(name))


def test_start_staggered_and_alone():
    sim = Sim()
    sim.add("nodeb")
    sim.add("nodea", at=2.0)
    t = sim.run_until(lambda: sim.holders() == {"nodea"}, 10.0)
    assert 2.0 < t < 3.0
    assert not sim.actions("nodeb", Acquire)


@pytest.mark.parametrize("alone", ["nodea", "nodeb"])
def test_alone_takes_everything_after_initdead(alone):
    sim = Sim()
    sim.add(alone)
    t = sim.run_until(lambda: sim.holders() == {alone}, 10.0)
    assert DEFAULT.initdead <= t < DEFAULT.initdead + 0.2
    stonith = [m for _, m in sim.messages(alone) if m.msg_type == "stonith"]
    assert [(m["node"], m["result"]) for m in stonith] == [({"nodea": "nodeb", "nodeb": "nodea"}[alone], "n_stnth")]
    assert sim.nodes[alone].node.snapshot().status == "active"


def test_kill_active_standby_takes_over_after_deadtime():
    sim = steady_pair()
    killed = sim.now
    sim.kill("nodea")
    t = sim.run_until(lambda: "nodeb" in sim.holders(), killed + 5)
    acq = sim.timed("nodeb", Acquire, since=killed)
    took = acq[0][0]
    assert DEFAULT.deadtime - DEFAULT.keepalive < took - killed < DEFAULT.deadtime + 2 * sim.tick
    assert t == pytest.approx(took + sim.driver_delay)
    dead = [a for a in sim.actions("nodeb", PeerStatus, since=killed)]
    assert dead and dead[0].status == "dead" and dead[0].node == "nodea"
    msgs = [m for t, m in sim.messages("nodeb", since=killed) if m.msg_type != "status"]
    types = [(m.msg_type, m.get("result") or m.get("info")) for m in msgs if m.msg_type != "NS_ackmsg"]
    assert types[:3] == [("stonith", "n_stnth"), ("resource", "req_our_resources()"), ("resource", "mach_down")]
    assert msgs[1]["rsc_hold"] == "all"


@pytest.mark.parametrize("auto_failback", [True, False])
def test_restart_of_the_owner(auto_failback):
    sim = steady_pair(auto_failback=auto_failback)
    sim.kill("nodea")
    sim.run(sim.now + 3)
    assert sim.holders() == {"nodeb"}
    restarted = sim.now
    sim.restart("nodea")
    sim.run(restarted + 15)
    ask = [(n, decode(p)) for t, n, p in sim.sent if t >= restarted and decode(p).msg_type == "ask_resources"]
    if auto_failback:
        assert sim.holders() == {"nodea"}
        assert [(n, m["info"], m["rsc_hold"]) for n, m in ask] == [
            ("nodeb", "me", "foreign"),
            ("nodea", "other", "foreign"),
            ("nodeb", "done", "foreign"),
            ("nodea", "done", "foreign"),
        ]
        # never both: nodeb released before nodea acquired
        rel = sim.timed("nodeb", Release, since=restarted)[0][0]
        acq = [t for t, a in sim.timed("nodea", Acquire, since=restarted)][0]
        assert rel < acq < restarted + 1.0
        live = [h for t, h in sim.holders_log if t > restarted + 0.05]
        assert all(len(h) <= 1 for h in live)
    else:
        assert sim.holders() == {"nodeb"}
        assert not ask
        assert not sim.actions("nodea", Acquire, since=restarted)


def test_graceful_stop_of_the_active_node():
    sim = steady_pair()
    stopping = sim.now
    sim.stop("nodea")
    shutdone = sim.run_until(
        lambda: any(decode(p).msg_type == "shutdone" for t, n, p in sim.sent if n == "nodea" and t >= stopping),
        stopping + 2,
    )
    msgs = [m for t, m in sim.messages("nodea", since=stopping)]
    assert msgs[0].msg_type == "status"  # heartbeat sends its status first
    msgs = [m for m in msgs if m.msg_type not in ("NS_ackmsg", "status")]
    assert [m.msg_type for m in msgs] == ["resource", "shutdone"]
    assert (msgs[0]["rsc_hold"], msgs[0]["isstable"], msgs[0]["info"]) == ("none", "0", "shutdown")
    assert msgs[1]["st"] == "dead"
    assert sim.actions("nodea", Release, since=stopping)
    sim.run(shutdone + sim.tick)
    acq = sim.timed("nodeb", Acquire, since=stopping)
    assert acq and acq[0][0] - shutdone < sim.tick  # at once, no deadtime wait
    sim.run(stopping + 3)
    assert sim.nodes["nodea"].stopped and sim.holders() == {"nodeb"}
    assert of_type(sim.actions("nodea", Stopped), Stopped)
    assert sim.actions("nodeb", PeerStatus, since=stopping)[0] == PeerStatus("nodea", "dead", "graceful shutdown")
    # after its deadtime the quiet peer is declared dead; it held nothing: "unneeded"
    sim.run(stopping + 5)
    stonith = [m for t, m in sim.messages("nodeb", since=stopping) if m.msg_type == "stonith"]
    assert [m["result"] for m in stonith] == ["unneeded"]
    assert sim.nodes["nodea"].node.on_tick(sim.now) == [] and sim.nodes["nodea"].node.next_deadline() == float("inf")


def test_graceful_stop_of_the_standby_moves_nothing():
    sim = steady_pair()
    stopping = sim.now
    sim.stop("nodeb")
    sim.run(stopping + 5)
    assert sim.nodes["nodeb"].stopped
    assert sim.holders() == {"nodea"}
    assert not sim.actions("nodea", Release, since=stopping)
    assert not sim.actions("nodea", Acquire, since=stopping)


def test_stop_waits_for_a_pending_acquisition():
    node = new_node()
    node.start(0.0)
    node.released(VIP, 0.0)
    t = 0.0
    out = []
    while not of_type(out, Acquire):  # alone: takeover after initdead
        t = round(t + 0.05, 2)
        out = node.on_tick(t)
    out = node.stop(t)
    assert not of_type(out, Release) and "delayed" in logs(out)
    out = node.acquired(VIP, True, t + 0.1)
    assert of_type(out, Release) == [Release(VIP, "graceful shutdown")]
    done_at = t + 0.2
    out = node.released(VIP, done_at)
    assert [m.msg_type for m in sends(out)] == ["shutdone"]
    statuses = 0
    while not of_type(out, Stopped):
        t = round(t + 0.05, 2)
        out = node.on_tick(t)
        statuses += len([m for m in sends(out) if m.msg_type == "status"])
    # keeps heartbeating a little (to answer retransmission requests), then stops
    assert done_at + 0.9 < t < done_at + 1.1 and statuses >= 4


def test_stop_before_start():
    node = new_node()
    assert node.stop(0.0) == [Stopped()]
    assert node.on_tick(1.0) == [] and node.next_deadline() == float("inf")


@pytest.mark.parametrize("auto_failback", [True, False, "legacy"])
@pytest.mark.parametrize("holder_before", ["nodea", "nodeb"])
def test_split_brain_then_heal(auto_failback, holder_before):
    sim = steady_pair(auto_failback=auto_failback)
    if holder_before == "nodeb":  # fail over first, and keep it there (failback or not)
        sim.kill("nodea")
        sim.run(sim.now + 3)
        sim.restart("nodea")
        sim.run(sim.now + 5)
        if auto_failback is False:
            assert sim.holders() == {"nodeb"}
    sim.cut = True
    cut = sim.now
    sim.run(cut + 3)
    assert sim.holders() == {"nodea", "nodeb"}  # split brain
    sim.cut = False
    healed = sim.now
    sim.run(healed + 6)
    assert sim.holders() == {"nodea"}  # the preferred owner keeps it
    assert sim.actions("nodeb", Release, since=healed)
    re = [(t, a) for t, a in sim.timed("nodea", Acquire, since=healed) if a.reason == REANNOUNCE_REASON]
    assert len(re) == 2 and re[0][0] - healed < 0.5
    assert re[1][0] - re[0][0] == pytest.approx(3 * 1.1, abs=0.1)
    assert not [a for a in sim.actions("nodeb", Acquire, since=healed)]
    for name in ("nodea", "nodeb"):
        node = sim.nodes[name].node
        assert node.counters["partitions_healed"] == 1
        assert "returning after partition" in logs(sim.actions(name, Log, since=healed))
    # stable afterwards: nothing moves any more, both see each other active
    later = sim.now
    sim.run(later + 10)
    assert sim.holders() == {"nodea"}
    assert not sim.actions(None, Release, since=later) and not sim.actions(None, Acquire, since=later)
    assert sim.peer_status("nodea") == "active" and sim.peer_status("nodeb") == "active"


# --- lossy links, retransmissions ----------------------------------------------------------------


@pytest.mark.parametrize(
    "timers, loss",
    [
        (DEFAULT, 0.3),  # the shipped 0.2 s keepalive / 0.8 s deadtime
        (Timers(keepalive=0.2, warntime=0.5, deadtime=1.0, initdead=3.0), 0.4),
    ],
)
def test_heavy_loss_no_false_death_and_identical_retransmissions(timers, loss):
    sim = Sim(seed=3, timers=timers)
    sim.loss = {("nodea", "nodeb"): loss, ("nodeb", "nodea"): loss}
    sim.add("nodea")
    sim.add("nodeb")
    sim.run(600.0)  # ten minutes
    for name in ("nodea", "nodeb"):
        assert not [a for a in sim.actions(name, PeerStatus) if a.status == "dead"]
        c = sim.nodes[name].node.counters
        assert c["lost_packets"] > 20 and c["rexmit_requests_sent"] > 20 and c["retransmitted"] > 20
        assert c["copies_sent"] > 1000 and c["internal_errors"] == 0
    assert sim.holders() == {"nodea"}
    assert [h for _, h in sim.holders_log] == [frozenset(), frozenset({"nodea"})]
    # every NS_rexmit that got through was answered with the very bytes first sent
    seq_field = re.compile(rb"\(0\)seq=([0-9a-f]+),")
    first_sent = {}  # (node, seq) -> bytes first sent
    sent_at = {}  # (node, time) -> [(seq, bytes)]
    for t, n, p in sim.sent:
        found = seq_field.search(p)
        if found:
            seq = int(found.group(1), 16)
            first_sent.setdefault((n, seq), p)
            sent_at.setdefault((n, t), []).append((seq, p))
    answered = 0
    for t, _src, dst, p in sim.delivered:
        if b"(0)t=NS_rexmit," not in p:
            continue
        m = decode(p)
        assert m["firstseq"] == m["lastseq"] and m["firstseq"].isdigit()  # decimal
        seq = int(m["firstseq"])
        resent = [q for s, q in sent_at.get((dst, t), []) if s == seq]
        if resent:  # answered in the same call (unless sent within the last 240 ms)
            answered += 1
            assert resent[0] == first_sent[(dst, seq)]
    assert answered > 20


def test_gap_requests_retransmission_then_acks():
    node = new_node()
    node.start(0.0)
    node.released(VIP, 0.0)
    out = node.on_packet(status_pkt(1, "up"), "b", 0.01)
    out += node.on_packet(status_pkt(2, "up"), "b", 0.02)
    trigger = node.snapshot().peers[0].ack_trigger
    # seqs 3..5 lost, 6 arrives
    out = node.on_packet(status_pkt(6, "up"), "b", 0.03)
    assert not [m for m in sends(out) if m.msg_type == "NS_rexmit"]  # not at once: 50..250 ms later
    assert node.snapshot().peers[0].missing == (3, 4, 5)
    reqs = []
    t = 0.03
    while t < 0.6:
        t = round(t + 0.01, 2)
        reqs += [(t, m) for m in sends(node.on_tick(t)) if m.msg_type == "NS_rexmit"]
    first = {}
    for tt, m in reqs:
        first.setdefault(int(m["firstseq"]), tt)
    assert set(first) == {3, 4, 5} and all(0.08 <= tt <= 0.29 for tt in first.values())
    for _, m in reqs:
        assert m["dest"] == "nodeb" and m["firstseq"] == m["lastseq"]
        assert m.get_binary("destuuid") == UUIDS["nodeb"] and m.get("seq") is None
    per_seq = sorted(tt for tt, m in reqs if m["firstseq"] == "4")
    assert all(b - a == pytest.approx(0.25, abs=0.011) for a, b in zip(per_seq, per_seq[1:]))  # every 250 ms
    # the missing ones arrive (retransmitted): requests stop, the gap closes
    for seq in (3, 4, 5):
        out = node.on_packet(status_pkt(seq, "up"), "b", t)
    assert node.snapshot().peers[0].missing == ()
    later = [m for tt in (0.7, 0.8, 0.9, 1.0) for m in sends(node.on_tick(tt)) if m.msg_type == "NS_rexmit"]
    assert later == []
    acks = [int(m["ackseq"], 16) for m in sends(out) if m.msg_type == "NS_ackmsg"]
    expected_ack = max(s for s in range(1, 7) if s % 10 == trigger) if trigger <= 6 and trigger >= 1 else None
    assert acks == ([expected_ack] if expected_ack and expected_ack >= 3 else [])


def test_acks_every_tenth_message():
    node = new_node()
    node.start(0.0)
    trigger = node.snapshot().peers[0].ack_trigger
    acked = []
    for seq in range(1, 45):
        out = node.on_packet(status_pkt(seq, "up"), "b", 0.001 * seq)
        acked += [m["ackseq"] for m in sends(out) if m.msg_type == "NS_ackmsg"]
    assert acked == [format(s, "x") for s in range(1, 45) if s % 10 == trigger]
    assert node.counters["acks_sent"] == len(acked)


def history_node():
    node = new_node()
    out = node.start(0.0)
    node.released(VIP, 0.0)
    node.on_packet(status_pkt(1, "up"), "b", 0.01)
    sent = {int(m["seq"], 16): a.payload for a in out if isinstance(a, Send) for m in [decode(a.payload)]}
    t = 0.0
    while len(sent) < 700:
        t = round(t + 0.05, 2)
        for a in node.on_tick(t):
            if isinstance(a, Send):
                m = decode(a.payload)
                if m.get("seq") is not None:
                    sent[int(m["seq"], 16)] = a.payload
        if t > 2:  # keep the peer alive
            node.on_packet(status_pkt(int(t * 10), "up"), "b", t)
    return node, sent, t


def rexmit_pkt(first, last, **kw):
    pairs = [("t", "NS_rexmit"), ("dest", "nodea"), ("firstseq", str(first)), ("lastseq", str(last))]
    return forge(pairs, dest="nodea", **kw)


def test_rexmit_answered_from_history_with_identical_bytes():
    node, sent, t = history_node()
    top = max(sent)
    out = node.on_packet(rexmit_pkt(top - 3, top - 1), "b", t + 0.01)
    resent = [a.payload for a in out if isinstance(a, Send)]
    assert resent == [sent[top - 3], sent[top - 2], sent[top - 1]]
    # asked again within 240 ms: not resent; later: resent again
    assert [a for a in node.on_packet(rexmit_pkt(top - 2, top - 2), "b", t + 0.2) if isinstance(a, Send)] == []
    again = [a.payload for a in node.on_packet(rexmit_pkt(top - 2, top - 2), "b", t + 0.3) if isinstance(a, Send)]
    assert again == [sent[top - 2]]
    # out of the 500-packet history: NS_nak_rexmit (firstseq in hex)
    out = node.on_packet(rexmit_pkt(top - 600, top - 600), "b", t + 0.4)
    naks = sends(out)
    assert [(m.msg_type, m["firstseq"], m["dest"], m["info"]) for m in naks] == [
        ("NS_nak_rexmit", format(top - 600, "x"), "nodeb", "seqno too low")
    ]
    assert naks[0].names == ["t", "firstseq", "dest", "info", "destuuid", "src", "srcuuid", "hg", "ts", "ttl", "auth"]
    # a huge range is answered with 50 packets at most (here naks: all out of history)
    out = node.on_packet(rexmit_pkt(1, top), "b", t + 5)
    assert len(of_type(out, Send)) == 50 and {m.msg_type for m in sends(out)} == {"NS_nak_rexmit"}
    # acknowledged packets are not resent; garbage ranges are ignored
    ack = forge([("t", "NS_ackmsg"), ("dest", "nodea"), ("ackseq", format(top - 1, "x"))], dest="nodea")
    node.on_packet(ack, "b", t + 6)
    assert of_type(node.on_packet(rexmit_pkt(top - 1, top - 1), "b", t + 6.5), Send) == []
    assert of_type(node.on_packet(rexmit_pkt(5, 2), "b", t + 7), Send) == []
    assert node.counters["retransmitted"] == 3 + 1 and node.counters["naks_sent"] == 1 + 50


def test_nak_from_peer_stops_requests():
    node = new_node()
    node.start(0.0)
    node.on_packet(status_pkt(1, "up"), "b", 0.01)
    node.on_packet(status_pkt(3, "up"), "b", 0.02)
    assert node.snapshot().peers[0].missing == (2,)
    nak = forge([("t", "NS_nak_rexmit"), ("firstseq", "2"), ("dest", "nodea"), ("info", "seqno too low")], dest="nodea")
    out = node.on_packet(nak, "b", 0.03)
    assert node.snapshot().peers[0].missing == () and "lost" in logs(out)
    assert [m for t in (0.3, 0.6) for m in sends(node.on_tick(t)) if m.msg_type == "NS_rexmit"] == []


# --- replay, forgery, garbage --------------------------------------------------------------------


def test_replayed_old_generation_is_dropped_and_counted():
    node = new_node()
    node.start(0.0)
    old = status_pkt(5, "active", hg=200)
    node.on_packet(old, "b", 0.01)
    node.on_packet(status_pkt(1, "init", hg=201), "b", 0.02)  # the peer restarted
    assert node.snapshot().peers[0].generation == 201
    before = node.snapshot().peers[0]
    out = node.on_packet(old, "b", 0.03)  # an attacker replays a packet of the old generation
    assert node.counters["replay"] == 1 and "attempted replay attack" in logs(out)
    assert not of_type(out, PeerStatus) and node.snapshot().peers[0] == before
    # a replayed packet of the current generation is an old duplicate
    node.on_packet(status_pkt(2, "up", hg=201), "b", 0.04)
    node.on_packet(status_pkt(1, "init", hg=201), "b", 0.05)
    # seq 1 < last seq 2 and not awaited as missing: "old", not "duplicate" (that is seq == last seq)
    assert node.counters["old"] == 1 and node.counters["duplicate"] == 0
    assert node.snapshot().peers[0].status == "up"


def test_replayed_status_does_not_bring_a_dead_peer_back():
    """A status of a dead peer's current generation counts only if it is newer than its last status.

    heartbeat 3.0.6 should_drop_message: for a node marked dead, a status of the same
    generation with seq <= the last status seq is an old packet, dropped; otherwise the
    node returns after a partition."""
    node = new_node()
    node.start(0.0)
    recorded = [status_pkt(seq, "up", dt=1000) for seq in (1, 2, 3)]
    for i, pkt in enumerate(recorded):
        node.on_packet(pkt, "b", 0.1 * (i + 1))
    assert node.snapshot().peers[0].status == "up"
    t, died = 0.3, None
    while died is None and t < 3.0:
        t = round(t + 0.05, 2)
        died = next((a for a in of_type(node.on_tick(t), PeerStatus) if a.status == "dead"), None)
    assert died is not None and node.snapshot().peers[0].status == "dead"
    old_before = node.counters["old"]
    # an attacker replays the dead peer's recorded (authentic) status packets, newest first
    for i, pkt in enumerate(reversed(recorded)):
        out = node.on_packet(pkt, "b", t + 0.1 * (i + 1))
        assert not of_type(out, PeerStatus) and not of_type(out, Acquire) and not of_type(out, Release)
        assert node.snapshot().peers[0].status == "dead"
    assert node.counters["old"] - old_before == len(recorded)
    assert node.counters["partitions_healed"] == 0 and node.counters["accepted"] == len(recorded)
    # the peer's next, genuinely new status brings it back (a healed partition)
    out = node.on_packet(status_pkt(4, "up", dt=1000), "b", t + 1.0)
    assert [a.status for a in of_type(out, PeerStatus)] == ["up"]
    assert node.snapshot().peers[0].status == "up" and node.counters["partitions_healed"] == 1


def test_forged_and_foreign_packets_are_dropped_and_counted():
    node = new_node()
    node.start(0.0)
    good = status_pkt(1, "up")
    tampered = good.replace(b"(0)st=up,", b"(0)st=ok,")
    assert len(tampered) == len(good)
    out = node.on_packet(tampered, "b", 0.01)
    out += node.on_packet(status_pkt(1, "up", keys=OTHER_KEYS), "b", 0.02)
    assert node.counters["bad_auth"] == 2 and not of_type(out, PeerStatus)
    node.on_packet(status_pkt(1, "up", keys=MD5_KEYS), "b", 0.03)
    assert node.counters["unknown_auth_index"] == 1
    node.on_packet(status_pkt(1, "up", src="mallory"), "b", 0.04)
    assert node.counters["unknown_node"] == 1
    own = of_type(new_node(generation=299).start(0.0), Send)[0].payload
    node.on_packet(own, "a", 0.05)
    assert node.counters["own"] == 1
    impostor = forge([("t", "status"), ("st", "up"), ("dt", "3e8")], src="nodea", seq=1, uuid=b"i" * 16)
    out = node.on_packet(impostor, "x", 0.06)
    assert node.counters["name_conflict"] == 1 and "our node name" in logs(out)
    not_for_us = forge([("t", "reqnodes"), ("dest", "nodec")], seq=1)
    node.on_packet(not_for_us, "b", 0.07)
    assert node.counters["not_for_us"] == 1
    assert node.snapshot().peers[0].status == "init"  # nothing of that changed the peer
    assert node.counters["accepted"] == 0 and node.counters["received"] == 7
    # logs an attacker can trigger are rate limited
    many = []
    for i in range(100):
        many += node.on_packet(tampered, "b", 0.1 + i * 0.01)
    assert len(of_type(many, Log)) <= 1


def captured(name):
    return udp_payloads(DATA / name)


def fuzz_inputs(rng):
    pool = [p.payload for p in captured("pair-sha1-failover.pcap")[:60]]
    pool += [status_pkt(7), rexmit_pkt(1, 5), forge([("t", "resource"), ("rsc_hold", "all")], seq=9)]
    for _ in range(1500):
        kind = rng.randrange(4)
        if kind == 0:
            yield rng.randbytes(rng.randrange(0, 200))
        elif kind == 1:
            raw = rng.choice(pool)
            yield raw[: rng.randrange(len(raw))]
        elif kind == 2:
            raw = bytearray(rng.choice(pool))
            for _ in range(rng.randrange(1, 4)):
                raw[rng.randrange(len(raw))] = rng.randrange(256)
            yield bytes(raw)
        else:
            yield rng.choice([b"", b"###\n", b">>>\n", b"###\n%%%\n", b"###\n%%%\n1:1 x,", b"\0" * 70000])


def test_fuzz_on_packet_never_raises():
    rng = random.Random(17)
    node = new_node()
    node.start(0.0)
    for i, data in enumerate(fuzz_inputs(rng)):
        out = node.on_packet(data, "fuzz", 0.001 * i)
        assert isinstance(out, list)
    assert node.counters["internal_errors"] == 0
    assert node.counters["received"] == 1500
    # valid packets with absurd field values do not break it either
    weird = [
        [("t", "status"), ("st", "x" * 50), ("dt", "ffffffffffffffff")],
        [("t", "status"), ("st", "up"), ("dt", "zz")],
        [("t", "resource"), ("rsc_hold", "everything"), ("isstable", "2")],
        [("t", "ask_resources"), ("info", "me")],
        [("t", "NS_rexmit"), ("dest", "nodea"), ("firstseq", "-1"), ("lastseq", "99999999999999999999")],
        [("t", "NS_ackmsg"), ("dest", "nodea"), ("ackseq", "ffffffff")],
        [("t", "repnodes"), ("dest", "nodea"), ("nodelist", "x y z")],
        [("t", "shutdone"), ("st", "dead")],
        [("t", "stonith"), ("node", "nodea"), ("result", "OK")],
        [("t", "ip-request"), ("ipaddr", "1.2.3.4")],
        [("t", "ip-request-resp"), ("dest", "nodea"), ("ipaddr", "1.2.3.4"), ("ok", "OK")],
    ]
    for i, pairs in enumerate(weird, start=2000):
        noseq = pairs[0][1].startswith("NS_")
        node.on_packet(forge(pairs, seq=None if noseq else i), "b", 10 + i * 0.001)
    bad_fields = [
        Message.from_pairs([("t", "status"), ("src", "nodeb"), ("ts", "0"), ("seq", "1")]),
        Message.from_pairs([("t", "status"), ("src", "nodeb"), ("ts", "10"), ("seq", "zz")]),
        Message.from_pairs([("t", "status"), ("src", "nodeb"), ("ts", "10"), ("seq", "5"), ("hg", "-1")]),
        Message.from_pairs([("src", "nodeb"), ("ts", "10"), ("seq", "5")]),
    ]
    for msg in bad_fields:
        node.on_packet(encode_packet(msg, KEYS), "b", 20.0)
    assert node.counters["malformed"] >= 4 and node.counters["internal_errors"] == 0
    node.on_tick(21.0)


# --- interop with the real heartbeat 3.0.6 captures ------------------------------------------------

CAP_VIP = ResourceGroup("nodea", (Resource("10.250.0.100", 24, "eth0"),))
NODEA_IP, NODEB_IP = "10.250.0.1", "10.250.0.2"


class Replay:
    """Drive one node (as nodea) with nodeb's captured packets at their capture
    times; tick every 250 ms; confirm Acquire/Release 100 ms after they are asked."""

    def __init__(self, start: float, generation: int, uuid: bytes):
        self.node = HeartbeatNode(
            make_config("nodea", timers=HB_TIMERS, compat="heartbeat", groups=(CAP_VIP,)),
            KEYS,
            NodeIdentity(uuid, generation),  # the captured nodea's uuid: nodeb addresses it
            wallclock=lambda: self.now,
            rng=random.Random(generation),
        )
        self.now = start
        self.out: list[tuple[float, object]] = []
        self.ops: list[tuple[float, str, ResourceGroup]] = []
        self.take(self.node.start(start))
        self.next_tick = start + 0.25

    def take(self, actions):
        for a in actions:
            self.out.append((self.now, a))
            if isinstance(a, Acquire):
                self.ops.append((self.now + 0.1, "acquired", a.group))
            elif isinstance(a, Release):
                self.ops.append((self.now + 0.1, "released", a.group))

    def advance(self, until: float):
        while True:
            due_op = min((o for o in self.ops), default=None, key=lambda o: o[0])
            nxt = min(self.next_tick, due_op[0] if due_op else float("inf"))
            if nxt > until:
                break
            self.now = nxt
            if due_op and due_op[0] == nxt:
                self.ops.remove(due_op)
                if due_op[1] == "acquired":
                    self.take(self.node.acquired(due_op[2], True, nxt))
                else:
                    self.take(self.node.released(due_op[2], nxt))
            else:
                self.take(self.node.on_tick(nxt))
                self.next_tick = nxt + 0.25
        self.now = until

    def feed(self, pkt):
        self.advance(pkt.time)
        self.take(self.node.on_packet(pkt.payload, pkt.src, pkt.time))

    def sent(self, since=0.0):
        return [(t, decode(a.payload)) for t, a in self.out if isinstance(a, Send) and t >= since]

    def not_status(self, since=0.0, until=float("inf")):
        return [(t, m) for t, m in self.sent(since) if t < until and m.msg_type not in ("status", "NS_ackmsg")]


def brief(m: Message) -> tuple:
    keep = ("dest", "rsc_hold", "isstable", "info", "ipaddr", "weown", "ok")
    keep += ("node", "result", "nodelist", "delnodelist")
    return (m.msg_type,) + tuple((k, m.get(k)) for k in keep if m.get(k) is not None)


def real_answers(packets, src, since, until):
    out = []
    for p in packets:
        if p.src == src and since <= p.time < until:
            m = decode(p.payload)
            if m.msg_type not in ("status", "NS_ackmsg"):
                out.append((p.time, m))
    return out


def uuid_of(packets, src):
    return next(decode(p.payload).get_binary("srcuuid") for p in packets if p.src == src)


def test_interop_failover_capture_as_nodea():
    pk = captured("pair-sha1-failover.pcap")
    uuid_a = uuid_of(pk, NODEA_IP)
    a_times = [p.time for p in pk if p.src == NODEA_IP]
    gap = max(range(1, len(a_times)), key=lambda i: a_times[i] - a_times[i - 1])
    start1, killed, start2 = a_times[0], a_times[gap - 1] + 0.1, a_times[gap]
    stop_time = [p.time for p in pk if p.src == NODEA_IP and decode(p.payload).get("info") == "shutdown"][-1]
    b_pkts = [p for p in pk if p.src == NODEB_IP]

    # -- first life of nodea: start after nodeb, both start, nodea takes its VIP
    r = Replay(start1, 500, uuid_a)
    for p in b_pkts:
        if start1 <= p.time < killed:
            r.feed(p)
    r.advance(killed)
    ours = [brief(m) for t, m in r.not_status()]
    real = [brief(m) for t, m in real_answers(pk, NODEA_IP, start1, killed)]
    expected = [
        ("reqnodes", ("dest", "nodeb")),
        ("repnodes", ("dest", "nodeb"), ("nodelist", "nodea nodeb "), ("delnodelist", " ")),
        ("starting",),
        ("resource", ("rsc_hold", "none"), ("isstable", "0")),
        ("resource", ("rsc_hold", "local"), ("isstable", "1")),
        ("resource", ("rsc_hold", "local"), ("isstable", "1")),
        ("ip-request-resp", ("dest", "nodea"), ("ipaddr", "10.250.0.100/24/eth0"), ("weown", "yes"), ("ok", "OK")),
        ("resource", ("rsc_hold", "local"), ("isstable", "1"), ("info", "req_our_resources()")),
    ]
    assert real == expected  # what the real nodea answered
    # and what we answer: the same messages; only the timer-driven local takeover
    # may come before nodeb's "stable" (the real daemon's timer fired late)
    assert sorted(ours) == sorted(expected)
    assert ours[:5] == expected[:5] and ours.index(expected[6]) < ours.index(expected[7])
    first = dict((brief(m)[0], t) for t, m in reversed(r.not_status()))
    real_first = dict((brief(m)[0], t) for t, m in reversed(real_answers(pk, NODEA_IP, start1, killed)))
    for mtype in ("reqnodes", "repnodes", "starting"):
        assert abs(first[mtype] - real_first[mtype]) < 0.6, mtype
    # the local takeover waits RQSTDELAY (10 s) after both nodes started, as the real one did
    acq = [t for t, a in r.out if isinstance(a, Acquire)]
    assert len(acq) == 1 and 9.0 < acq[0] - first["starting"] < 10.6
    assert abs(acq[0] - real_first["ip-request-resp"]) < 0.7
    # acks: every nodeb seq with seq % 10 == our trigger
    trigger = r.node.snapshot().peers[0].ack_trigger
    b_seqs = [
        int(decode(p.payload)["seq"], 16) for p in b_pkts if start1 <= p.time < killed and b"(0)seq=" in p.payload
    ]
    acks = [int(m["ackseq"], 16) for t, m in r.sent() if m.msg_type == "NS_ackmsg"]
    assert acks == [s for s in b_seqs if s % 10 == trigger] and len(acks) >= 3
    assert all(
        m["dest"] == "nodeb" and m.get_binary("destuuid") == decode(b_pkts[0].payload).get_binary("srcuuid")
        for t, m in r.sent()
        if m.msg_type == "NS_ackmsg"
    )
    assert r.node.counters["accepted"] > 30
    assert r.node.counters["bad_auth"] == r.node.counters["malformed"] == r.node.counters["internal_errors"] == 0

    # -- second life: nodea restarts; nodeb holds the VIP and hands it back (auto_failback on)
    r2 = Replay(start2, 501, uuid_a)
    for p in b_pkts:
        if start2 <= p.time < stop_time:
            r2.feed(p)
    handback_end = start2 + 10
    ours = [brief(m) for t, m in r2.not_status(until=handback_end)]
    real = [brief(m) for t, m in real_answers(pk, NODEA_IP, start2, handback_end)]
    expected = [
        ("reqnodes", ("dest", "nodeb")),
        ("starting",),
        ("resource", ("rsc_hold", "none"), ("isstable", "0")),
        ("resource", ("rsc_hold", "none"), ("isstable", "1")),
        ("ask_resources", ("rsc_hold", "foreign"), ("info", "other")),
        ("ask_resources", ("rsc_hold", "foreign"), ("info", "done")),
        ("resource", ("rsc_hold", "local"), ("isstable", "1")),
        ("resource", ("rsc_hold", "local"), ("isstable", "1")),
    ]
    assert sorted(real) == sorted(expected)  # (the real one sent "done" after the next message)
    assert ours == expected
    acq = [a for t, a in r2.out if isinstance(a, Acquire)]
    assert acq == [Acquire(CAP_VIP, "failback handshake: the peer nodeb hands our groups back")]

    # nodeb's SIGTERM: it hands over at once (shutdone), later dies quietly: "unneeded"
    shut_b = [p.time for p in b_pkts if decode(p.payload).msg_type == "shutdone"][0]
    r2.advance(stop_time)
    ours = [(t, brief(m)) for t, m in r2.not_status(since=shut_b - 1)]
    assert [b for t, b in ours] == [
        ("resource", ("rsc_hold", "all"), ("isstable", "1"), ("info", "req_our_resources()")),
        ("resource", ("rsc_hold", "foreign"), ("info", "mach_down")),
        ("stonith", ("node", "nodeb"), ("result", "unneeded")),
    ]
    assert ours[0][0] - shut_b < 0.01
    real_stonith = [t for t, m in real_answers(pk, NODEA_IP, shut_b, stop_time) if m.msg_type == "stonith"][0]
    assert abs(ours[2][0] - real_stonith) < 0.7
    assert PeerStatus("nodeb", "dead", "graceful shutdown") in [a for t, a in r2.out]
    assert [a.status for t, a in r2.out if isinstance(a, PeerStatus)][-1] == "dead"

    # -- nodea's SIGTERM
    r2.take(r2.node.stop(stop_time))
    r2.advance(stop_time + 3)
    ours = [brief(m) for t, m in r2.not_status(since=stop_time)]
    real = [brief(m) for t, m in real_answers(pk, NODEA_IP, stop_time, stop_time + 3)]
    assert (
        ours
        == real
        == [
            ("resource", ("rsc_hold", "none"), ("isstable", "0"), ("info", "shutdown")),
            ("shutdone",),
        ]
    )
    assert Release(CAP_VIP, "graceful shutdown") in [a for t, a in r2.out]
    assert isinstance(r2.out[-1][1], Stopped) or any(isinstance(a, Stopped) for t, a in r2.out)
    assert r2.node.counters["internal_errors"] == 0


def test_interop_loss_capture_requests_what_the_real_node_requested():
    pk = captured("pair-sha1-loss-rexmit.pcap")
    requested = []
    for p in pk:
        if p.src == NODEA_IP and b"(0)t=NS_rexmit," in p.payload:
            m = decode(p.payload)
            requested.append(int(m["firstseq"]))
    missed = set(requested)
    assert len(missed) >= 10
    # what the real nodea received: nodeb's packets minus the first copy of each seq it asked for
    fed, dropped = [], set()
    for p in pk:
        if p.src != NODEB_IP:
            continue
        m = decode(p.payload)
        seq = m.get("seq")
        if seq is not None and int(seq, 16) in missed and int(seq, 16) not in dropped:
            dropped.add(int(seq, 16))
            continue
        fed.append(p)
    assert dropped == missed
    start = [p.time for p in pk if p.src == NODEA_IP][0]
    r = Replay(start, 700, uuid_of(pk, NODEA_IP))
    for p in fed:
        r.feed(p)
    r.advance(fed[-1].time + 1)
    ours = [m for t, m in r.sent() if m.msg_type == "NS_rexmit"]
    assert {int(m["firstseq"]) for m in ours} == missed
    for m in ours:
        assert m["firstseq"] == m["lastseq"] and m["dest"] == "nodeb"
    assert r.node.counters["lost_packets"] == len(missed)
    assert r.node.counters["internal_errors"] == 0
    # every retransmission filled its gap: nothing is missing at the end
    assert all(not p.missing for p in r.node.snapshot().peers)


@pytest.mark.parametrize(
    "capture, keys, index, digest, key",
    [
        ("start-md5.pcap", MD5_KEYS, 2, "md5", b"md5secret"),
    ],
)
def test_interop_md5_capture_is_understood(capture, keys, index, digest, key):
    node = HeartbeatNode(
        make_config("nodeb", timers=HB_TIMERS, compat="heartbeat"),
        keys,
        NodeIdentity(UUIDS["nodeb"], 9),
        rng=random.Random(1),
    )
    pk = captured(capture)
    out = node.start(pk[0].time)
    for p in pk:
        out += node.on_packet(p.payload, p.src, p.time)
    # everything but nodea's ack to itself (heartbeat acks its own broadcasts)
    assert node.counters["accepted"] == len(pk) - 1 and node.counters["not_for_us"] == 1
    assert node.counters["bad_auth"] == 0
    for a in of_type(out, Send):
        check_macs(a.payload, key, index, digest)
    assert any(isinstance(a, PeerStatus) and a.node == "nodea" for a in out)


# --- timing details, stalls, restarts ---------------------------------------------------------------


def test_our_stall_does_not_kill_the_peer_and_the_owner_reannounces():
    sim = steady_pair()
    stalled = sim.now
    sim.pause("nodea", 2.5)  # nodea's process stops for longer than the deadtime
    sim.run(stalled + 2.4)
    assert "nodeb" in sim.holders()  # nodeb declared nodea dead and took its VIP
    sim.run(stalled + 8)
    a = sim.nodes["nodea"].node
    assert a.counters["stalls"] == 1
    (late,) = sim.actions("nodea", TimersLate, since=stalled)
    assert 2.0 < late.late < 3.0  # the 2.5 s pause, as the node's tick saw it
    alog = logs(sim.actions("nodea", Log, since=stalled))
    assert "may have declared us dead" in alog
    # nodea gave nodeb grace: it never declared nodeb dead
    assert not [x for x in sim.actions("nodea", PeerStatus, since=stalled) if x.status == "dead"]
    # nodeb saw nodea come back with the same generation and gave the VIP back;
    # nodea re-announced once nodeb stopped claiming it
    assert sim.holders() == {"nodea"}
    assert [x.reason for x in sim.actions("nodea", Acquire, since=stalled)] == [REANNOUNCE_REASON]
    assert sim.nodes["nodeb"].node.counters["partitions_healed"] == 1


def test_late_heartbeats_are_logged():
    node = new_node()
    node.start(0.0)
    node.on_packet(status_pkt(1, "up", dt=3000), "b", 0.1)
    out = node.on_packet(status_pkt(2, "up", dt=3000), "b", 0.3)
    assert "Late heartbeat" not in logs(out)
    out = node.on_packet(status_pkt(3, "up", dt=3000), "b", 0.9)  # 600 ms > warntime 500 ms
    assert "Late heartbeat: node nodeb: interval 600 ms" in logs(out)
    out = node.on_packet(status_pkt(4, "up", dt=3000), "b", 2.0)  # 1100 ms > deadtime, still alive (dt 3 s)
    assert "(> deadtime)" in logs(out)
    assert node.counters["late_heartbeats"] == 2
    assert node.snapshot().peers[0].status == "up"


def test_the_peers_advertised_deadtime_applies():
    node = new_node()
    node.start(0.0)
    node.on_packet(status_pkt(1, "up", dt=2500), "b", 0.1)
    repnodes = [("dest", "nodea"), ("t", "repnodes"), ("nodelist", "nodea nodeb "), ("delnodelist", " ")]
    node.on_packet(forge(repnodes, seq=2, dest="nodea"), "b", 0.1)
    assert node.snapshot().peers[0].dead_time == 2.5
    assert node.next_deadline() <= 0.2
    t, dead = 0.1, None
    while dead is None and t < 5:
        t = round(t + 0.05, 2)
        if of_type(node.on_tick(t), PeerStatus):
            dead = t
    assert dead == pytest.approx(2.6)  # 2.5 s after the last status, not our 1 s


def test_peer_restart_faster_than_deadtime():
    sim = steady_pair()
    before = sim.now
    sim.kill("nodeb")
    sim.restart("nodeb", at=before + 0.3)  # back before nodea's deadtime expires
    sim.run(before + 5)
    a_status = [x for x in sim.actions("nodea", PeerStatus, since=before)]
    assert [x.status for x in a_status][:1] == ["init"] and a_status[0].reason == "restarted"
    assert "dead" not in [x.status for x in a_status]
    assert "heartbeat restart on node nodeb" in logs(sim.actions("nodea", Log, since=before))
    assert sim.holders() == {"nodea"}
    assert not sim.actions("nodea", Release, since=before)


def test_heartbeat_compat_waits_rqstdelay_on_simultaneous_start():
    sim = Sim(timers=HB_TIMERS, compat="heartbeat", tick=0.25)
    sim.add("nodea")
    sim.add("nodeb")
    t = sim.run_until(lambda: sim.holders() == {"nodea"}, 30)
    assert 10.0 <= t < 11.0  # RQSTDELAY, as the captured real daemons


def test_driver_that_sleeps_until_next_deadline():
    """Only ever woken at next_deadline() (or by a packet): no periodic tick."""
    sim = Sim(tick=1000.0)  # the periodic tick never comes in time
    orig_handle = sim.handle

    def handle(name, actions):
        orig_handle(name, actions)
        sn = sim.nodes[name]
        nd = sn.node.next_deadline()
        if nd != float("inf") and getattr(sn, "wake", None) != nd:
            sn.wake = nd
            sim.push(nd, "tick-once", name, sn.node)

    sim.handle = handle
    orig_step = sim.step

    def step():
        if sim.queue and sim.queue[0][2] == "tick-once":
            when, _, _, (name, node) = heapq.heappop(sim.queue)
            sim.now = max(sim.now, when)
            sn = sim.nodes[name]
            if sn.node is node and sn.alive and not sn.stopped:
                handle(name, node.on_tick(sim.now))
            return
        orig_step()

    sim.step = step
    sim.add("nodea")
    sim.add("nodeb")
    sim.run(12)
    assert sim.holders() == {"nodea"}
    statuses = [t for t, m in sim.messages("nodea", since=6) if m.msg_type == "status"]
    gaps = [b - a for a, b in zip(statuses, statuses[1:])]
    assert gaps and max(gaps) == pytest.approx(0.2, abs=1e-6)
    killed = sim.now
    sim.kill("nodea")
    took = sim.run_until(lambda: sim.actions("nodeb", Acquire, since=killed), killed + 3)
    assert DEFAULT.deadtime - DEFAULT.keepalive < took - killed <= DEFAULT.deadtime + sim.latency + 1e-6


def test_failed_acquisition_is_retried():
    sim = Sim()
    sim.fail_acquire.add("nodea")
    sim.add("nodea")
    sim.add("nodeb")
    sim.run(3)
    assert sim.holders() == set()
    assert "acquisition of group 192.168.50.10/32/eth0 (owner nodea) failed" in logs(sim.actions("nodea", Log))
    sim.fail_acquire.clear()
    t = sim.run_until(lambda: sim.holders() == {"nodea"}, 12)
    assert 5.0 < t < 6.0  # retried 5 s after the failure
    retries = [a.reason for a in sim.actions("nodea", Acquire)]
    assert retries[-1] == "retry after a failed acquisition"
    assert sim.nodes["nodea"].node.counters["acquire_failures"] == 1


def test_peer_without_protocol_disables_flow_control():
    node = new_node()
    node.start(0.0)
    trigger = node.snapshot().peers[0].ack_trigger
    out = []
    for seq in range(1, 25):
        out += node.on_packet(status_pkt(seq, "up", protocol=False), "b", 0.01 * seq)
    assert [m for m in sends(out) if m.msg_type in ("NS_ackmsg", "reqnodes")] == []
    assert "flow control disabled" in logs(out)
    statuses = [m for m in sends(node.on_tick(1.0)) if m.msg_type == "status"]
    assert statuses and all("protocol" not in m for m in statuses)
    assert node.snapshot().status == "active"  # comm up without reqnodes
    assert trigger in range(10)


def test_shutdone_received_while_stopping_cancels_the_takeover():
    sim = steady_pair()
    now = sim.now
    sim.stop("nodeb")
    sim.stop("nodea")
    sim.run(now + 5)
    assert sim.nodes["nodea"].stopped and sim.nodes["nodeb"].stopped
    assert not sim.actions("nodeb", Acquire, since=now)
    assert sim.holders() == set()


def test_legacy_failback_through_ip_request():
    sim = steady_pair(auto_failback="legacy")
    assert not [m for t, m in sim.messages("nodea") if m.msg_type in ("starting", "resource")]
    sim.kill("nodea")
    sim.run(sim.now + 3)
    assert sim.holders() == {"nodeb"}
    back = sim.now
    sim.restart("nodea")
    sim.run(back + 3)
    assert sim.holders() == {"nodea"}
    req = [m for t, m in sim.messages("nodea", since=back) if m.msg_type == "ip-request"]
    resp = [m for t, m in sim.messages("nodeb", since=back) if m.msg_type == "ip-request-resp"]
    assert [m["ipaddr"] for m in req] == ["192.168.50.10/32/eth0"]
    assert [(m["dest"], m["ipaddr"], m["ok"]) for m in resp] == [("nodea", "192.168.50.10/32/eth0", "OK")]
    rel = sim.timed("nodeb", Release, since=back)[0][0]
    acq = [t for t, a in sim.timed("nodea", Acquire, since=back)][0]
    assert rel < acq


def test_snapshot_and_counters():
    sim = steady_pair()
    snap = sim.nodes["nodea"].node.snapshot()
    assert (snap.node, snap.status, snap.resource_state, snap.holds) == ("nodea", "active", "stable", "local")
    assert snap.groups[0].held and snap.groups[0].pending == ()
    (peer,) = snap.peers
    assert peer.name == "nodeb" and peer.status == "active" and peer.uuid == UUIDS["nodeb"]
    assert peer.generation == sim.generations["nodeb"] and not peer.missing and peer.dead_time == 0.8
    assert set(sim.nodes["nodea"].node.counters) == set(COUNTERS)


@pytest.mark.parametrize("holder_before", ["nodea", "nodeb"])
def test_one_way_partition_then_heal(holder_before):
    """nodeb's packets stop reaching nodea (nodea still reaches nodeb)."""
    sim = steady_pair(auto_failback=False)
    if holder_before == "nodeb":
        sim.kill("nodea")
        sim.run(sim.now + 3)
        sim.restart("nodea")
        sim.run(sim.now + 5)
        assert sim.holders() == {"nodeb"}
    cut = sim.now
    sim.loss[("nodeb", "nodea")] = 1.0
    sim.run(cut + 3)
    # nodea declared nodeb dead and holds its own group; nodeb, which still hears
    # nodea claim it, lets go of it instead of keeping a duplicate
    assert sim.holders() == {"nodea"}
    if holder_before == "nodeb":
        assert "both nodes claim nodea's groups" in logs(sim.actions("nodeb", Log, since=cut))
    del sim.loss[("nodeb", "nodea")]
    healed = sim.now
    sim.run(healed + 6)
    assert sim.holders() == {"nodea"}
    assert [a.reason for a in sim.actions("nodea", Acquire, since=healed)][:1] == [REANNOUNCE_REASON]
    later = sim.now
    sim.run(later + 5)
    assert not sim.actions(None, Acquire, since=later) and not sim.actions(None, Release, since=later)
