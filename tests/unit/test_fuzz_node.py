"""Property-based fuzzing of ha.node.HeartbeatNode (nodea of a two-node cluster).

Hypothesis drives one node through generated steps: packets and clock
advances. Packets are heartbeat messages of every type the node knows (and
some it does not), with generated field values, signed with the cluster's
keys so they get past the MAC; some are then mutated as bytes, signed with
other keys, or sent as our own or an unknown node. The test plays the driver:
every `Acquire` / `Release` is confirmed at once (or, for some acquisitions,
reported failed).

Invariants, after every step:

* no entry point raises, and ``internal_errors`` stays 0;
* counters add up: every ``on_packet`` call raises ``received`` by one and
  exactly one outcome counter (``accepted`` or one reason to drop the packet)
  by one, so ``received`` is the sum of the outcomes;
* a packet the node does not accept changes nothing a driver acts on: no
  `Acquire`, `Release` or `PeerStatus` comes out of that call;
* a packet never gives us the peer's group unless it is an accepted message
  that hands groups over in heartbeat's protocol: ``shutdone`` (the peer
  stopped), ``ask_resources`` (the standby handshake) or ``status`` (a peer
  restart: its groups are recovered as after a death).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from fuzzprofile import fuzz_settings
from hypothesis import given
from hypothesis import strategies as st

from ha.auth import parse_authkeys
from ha.identity import NodeIdentity
from ha.model import HAConfig, Medium, Resource, ResourceGroup, Timers
from ha.node import (
    CONNECTIVITY_TYPE,
    TAKEOVER_TYPE,
    Acquire,
    HeartbeatNode,
    PeerStatus,
    Release,
)
from ha.wire import (
    Message,
    WireError,
    add_standard_fields,
    decode_packet,
    encode_packet,
)

KEYS = parse_authkeys(b"auth 1\n1 sha1 clusterkey\n", "authkeys")
WRONG_KEYS = parse_authkeys(b"auth 1\n1 sha1 guessed\n", "wrong")
OTHER_INDEX = parse_authkeys(b"auth 2\n2 md5 clusterkey\n", "other-index")
UUIDS = {"nodea": bytes(range(1, 17)), "nodeb": bytes(range(101, 117)), "mallory": bytes(range(201, 217))}
VIP_A = ResourceGroup("nodea", (Resource("192.168.50.10", 32, "eth0"),))
VIP_B = ResourceGroup("nodeb", (Resource("192.168.50.20", 32, "eth0"),))
KEY_A, KEY_B = str(VIP_A.resources[0]), str(VIP_B.resources[0])

#: Outcome counters: each packet given to on_packet raises exactly one of them.
OUTCOMES = (
    "accepted",
    "malformed",
    "bad_auth",
    "unknown_auth_index",
    "unknown_node",
    "own",
    "name_conflict",
    "replay",
    "duplicate",
    "old",
    "not_for_us",
    "from_dead",
    "ignored",
    "naks_received",
    "internal_errors",
)
#: Accepted message types that may hand the peer's groups to us (see the module docstring).
HANDOVER_TYPES = ("shutdone", "ask_resources", "status")


def make_node(auto_failback: object, compat: str) -> HeartbeatNode:
    config = HAConfig(
        node="nodea",
        nodes=("nodea", "nodeb"),
        media=(Medium("bcast", "eth0"),),
        authkeys="authkeys",
        timers=Timers(),
        auto_failback=auto_failback,
        groups=(VIP_A, VIP_B),
        compat=compat,
    )
    return HeartbeatNode(
        config, KEYS, NodeIdentity(UUIDS["nodea"], 300), wallclock=lambda: 1_700_000_000.0, rng=random.Random(7)
    )


# --- generated packets ------------------------------------------------------------------------

TYPES = (
    "status",
    "NS_rexmit",
    "NS_ackmsg",
    "NS_nak_rexmit",
    "reqnodes",
    "repnodes",
    "starting",
    "resource",
    "ask_resources",
    "shutdone",
    "stonith",
    "ip-request",
    "ip-request-resp",
    CONNECTIVITY_TYPE,
    TAKEOVER_TYPE,
    "NS_unknown",
    "no-such-type",
)
_ANY = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\0"), max_size=12)
_HEX = st.integers(0, 2**40).map(lambda n: format(n, "x"))


def _mostly(*good: str) -> st.SearchStrategy[str]:
    """One of `good` four times in five, else any text."""
    usual = st.sampled_from(good)
    return st.one_of(usual, usual, usual, usual, _ANY)


VALUES = {
    "st": _mostly("init", "up", "active", "active", "dead"),
    "dt": _mostly("3e8", "320", "fa0", "0") | _HEX,
    "protocol": st.sampled_from(["1", "0"]),
    "rsc_hold": _mostly("none", "local", "foreign", "all"),
    "rtype": st.sampled_from(["full", "partial"]),
    "isstable": _mostly("0", "1"),
    "info": _mostly("me", "other", "done", "mach_down", "shutdown", "req_our_resources()"),
    "dest": st.sampled_from(["nodea", "nodeb", "NODEA", "nodec"]),
    "firstseq": _HEX | _ANY,
    "lastseq": _HEX | _ANY,
    "ackseq": _HEX | _ANY,
    "nodelist": st.sampled_from(["nodea nodeb ", "nodeb ", ""]),
    "node": st.sampled_from(["nodea", "nodeb"]),
    "result": st.sampled_from(["n_stnth", "unneeded", "OK"]),
    "ipaddr": st.sampled_from([KEY_A, KEY_B, "10.0.0.1"]),
    "ok": st.sampled_from(["OK", "no"]),
    "weown": st.sampled_from(["yes", "no"]),
    "link": _mostly("up", "down"),
    "ping": _mostly("1/1", "0/1", "0/0", "2/1"),
}
_VALUE_NAMES = st.lists(st.sampled_from(sorted(VALUES)), max_size=2)


@dataclass(frozen=True)
class Pkt:
    """One generated datagram and what it was meant to be (for failure reports)."""

    data: bytes
    what: str


#: Fields each type usually carries (heartbeat 3.0.6 and directord's own types); any may be left out.
TEMPLATES = {
    "status": ("st", "dt", "protocol"),
    "NS_rexmit": ("dest", "firstseq", "lastseq"),
    "NS_ackmsg": ("dest", "ackseq"),
    "NS_nak_rexmit": ("dest", "firstseq"),
    "reqnodes": ("dest",),
    "repnodes": ("dest", "nodelist"),
    "starting": (),
    "resource": ("rsc_hold", "rtype", "isstable", "info"),
    "ask_resources": ("rsc_hold", "info"),
    "shutdone": ("st",),
    "stonith": ("node", "result"),
    "ip-request": ("ipaddr",),
    "ip-request-resp": ("dest", "ipaddr", "weown", "ok"),
    CONNECTIVITY_TYPE: ("link", "ping"),
    TAKEOVER_TYPE: ("rsc_hold",),
    "NS_unknown": (),
    "no-such-type": (),
}
_TYPES = st.sampled_from(sorted(TEMPLATES))
_KEEP = st.integers(0, 9)  # a usual field is kept 9 times in 10
_SRC = st.sampled_from(["nodeb"] * 8 + ["nodea", "mallory", "NodeB"])
_KIND = st.sampled_from(["signed"] * 12 + ["mutated", "wrong-key", "other-index", "bare"])
_MOVE = st.sampled_from(["next"] * 8 + ["same", "back", "gap", "restart", "old-generation"])
_SRCUUID = st.sampled_from([UUIDS["nodeb"]] * 4 + [UUIDS["nodea"], UUIDS["mallory"]])
_DEST = st.sampled_from([None, "nodea", "nodeb"])
_BAD_TS = st.sampled_from(["0", "zz", "1"])
_BYTE = st.integers(0, 255)


@st.composite
def messages(draw) -> Message:
    """A message of a known (mostly) or unknown type: its usual fields, some dropped, some extra."""
    mtype = draw(_TYPES)
    names = [n for n in TEMPLATES[mtype] if draw(_KEEP)]
    names += [n for n in draw(_VALUE_NAMES) if n not in names]
    pairs = [("t", mtype)] + [(name, draw(VALUES[name])) for name in names]
    return Message.from_pairs(pairs)


class Peer:
    """What nodeb has sent so far: its generation and last sequence number."""

    def __init__(self) -> None:
        self.generation = 200
        self.seq = 0


def packet(draw, peer: Peer) -> Pkt:
    """One datagram, mostly from nodeb in sequence, built with `draw` (hypothesis' data.draw)."""
    msg = draw(messages())
    mtype = msg["t"]
    noseq = mtype.startswith("NS_")
    src = draw(_SRC)
    kind = draw(_KIND)
    seq: int | None = None
    hg = peer.generation
    if not noseq:
        move = draw(_MOVE)
        if move == "restart":
            peer.generation += 1
            peer.seq = 0
            hg = peer.generation
        elif move == "old-generation":
            hg = peer.generation - 1
        if move in ("next", "restart", "old-generation"):
            peer.seq += 1
        elif move == "gap":
            peer.seq += draw(st.integers(2, 300))
        seq = max(peer.seq, 1) if move != "back" else max(peer.seq - draw(st.integers(1, 5)), 1)
    if kind == "bare":
        # no standard trailing fields (src and a bad ts at most): malformed
        extra = [("src", src)] if draw(st.booleans()) else []
        extra += [("ts", draw(_BAD_TS))]
        full = Message(list(msg.fields) + list(Message.from_pairs(extra).fields))
    else:
        dest = draw(_DEST) if "dest" in msg else None
        full = add_standard_fields(
            msg,
            src=src,
            srcuuid=draw(_SRCUUID),
            seq=seq,
            hg=hg,
            ts=1_700_000_000 + peer.seq,
            ld=None if noseq else "0.00 0.00 0.00 1/1 1",
            ttl=3,
            destuuid=UUIDS[dest] if dest else None,
        )
    keys = {"wrong-key": WRONG_KEYS, "other-index": OTHER_INDEX}.get(kind, KEYS)
    data = encode_packet(full, keys)
    if kind == "mutated":
        raw = bytearray(data)
        for _ in range(draw(st.integers(1, 3))):
            raw[draw(st.integers(0, len(raw) - 1))] = draw(_BYTE)
        data = bytes(raw)
    return Pkt(data, f"{kind} {full!r}")


#: Clock advances (seconds) before a packet and before a tick.
_TICK_OR_PACKET = st.integers(0, 3)  # a tick one step in four
PACKET_GAPS = st.sampled_from([0.0, 0.001, 0.05, 0.2, 0.5])
TICK_GAPS = st.sampled_from([0.05, 0.25, 0.25, 0.5, 1.0, 3.0, 31.0])


# --- the driver and the invariants ------------------------------------------------------------


class Driver:
    """Plays the daemon: confirms every Acquire / Release at once; some acquisitions fail."""

    def __init__(self, node: HeartbeatNode, failures: list[bool]) -> None:
        self.node = node
        self.failures = failures
        self.now = 0.0

    def carry_out(self, actions: list) -> None:
        pending = list(actions)
        rounds = 0
        while pending:
            rounds += 1
            assert rounds < 100, "Acquire/Release confirmations never settle"
            follow: list = []
            for action in pending:
                if isinstance(action, Acquire):
                    ok = self.failures.pop() if self.failures else True
                    follow += self.node.acquired(action.group, ok, self.now)
                elif isinstance(action, Release):
                    follow += self.node.released(action.group, self.now)
            pending = follow


def accepted_type(data: bytes) -> str | None:
    try:
        return decode_packet(data, KEYS).get("t")
    except WireError:
        return None


@fuzz_settings(1.5)  # one example is a whole run of a node: a few more of them
@given(
    st.sampled_from([True, False, "legacy"]),
    st.sampled_from(["directord", "heartbeat"]),
    st.lists(st.booleans(), max_size=5),
    st.integers(1, 60),
    st.data(),
)
def test_fuzz_node_packets_and_times(auto_failback, compat, failures, nsteps, data):
    node = make_node(auto_failback, compat)
    driver = Driver(node, failures)
    peer = Peer()
    driver.carry_out(node.start(0.0))
    for _ in range(nsteps):
        if data.draw(_TICK_OR_PACKET) == 0:
            driver.now += data.draw(TICK_GAPS)
            driver.carry_out(node.on_tick(driver.now))
            assert node.counters["internal_errors"] == 0
            continue
        driver.now += data.draw(PACKET_GAPS)
        pkt = packet(data.draw, peer)
        before = dict(node.counters)
        out = node.on_packet(pkt.data, "192.168.50.2", driver.now)
        assert isinstance(out, list)
        grown = {name: node.counters[name] - before[name] for name in OUTCOMES if node.counters[name] != before[name]}
        assert node.counters["received"] == before["received"] + 1
        assert list(grown.values()) == [1] and "internal_errors" not in grown, (pkt.what, grown)
        if "accepted" not in grown:
            moved = [a for a in out if isinstance(a, (Acquire, Release, PeerStatus))]
            assert not moved, (pkt.what, grown, moved)
        if any(isinstance(a, Acquire) and a.group == VIP_B for a in out):
            assert "accepted" in grown and accepted_type(pkt.data) in HANDOVER_TYPES, (pkt.what, out)
        driver.carry_out(out)
        node.snapshot()
    assert node.counters["internal_errors"] == 0
    assert node.counters["received"] == sum(node.counters[name] for name in OUTCOMES)
