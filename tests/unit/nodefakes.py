"""What the unit tests of the heartbeat node's parts share (``test_ha_node_*.py``).

Each part of `ha.node` (the group table, legacy failback, outbound, receiver, the resource
protocol, the connectivity handover) talks to the node through a small host protocol of its
own; `FakeHost` implements all of them at once and records what the part did. The parts are
built in one cluster: we are ``nodea``, the peer is ``nodeb``, each preferred owner of one
group (`VIP_A`, `VIP_B`), media ``bcast eth0``, sha1 `KEYS`.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import Any

from ha.auth import parse_authkeys
from ha.model import HAConfig, Medium, Resource, ResourceGroup, Timers
from ha.node.api import Acquire, Send
from ha.node.handover import ConnectivityHandover
from ha.node.membership import Membership, Peer
from ha.node.resources import ResourceProtocol
from ha.wire import Message, decode_packet

KEYS = parse_authkeys(b"auth 1\n1 sha1 clusterkey\n", "authkeys")
UUID_A, UUID_B = bytes(range(1, 17)), bytes(range(101, 117))
VIP_A = ResourceGroup("nodea", (Resource("192.168.50.10", 32, "eth0"),))
VIP_B = ResourceGroup("nodeb", (Resource("192.168.50.20", 32, "eth0"),))
TIMERS = Timers(keepalive=1.0, warntime=3.0, deadtime=6.0, initdead=12.0)


def config(*, nodes: Sequence[str] = ("nodea", "nodeb"), **kwargs: Any) -> HAConfig:
    """``nodea``'s configuration (media ``bcast eth0``, authkeys ``a``); ``kwargs`` add to it."""
    return HAConfig(node="nodea", nodes=tuple(nodes), media=(Medium("bcast", "eth0"),), authkeys="a", **kwargs)


def membership(peers: Sequence[str] = ("nodeb",)) -> Membership:
    """``nodea``'s peers, with the deadtime, warntime and initdead of `TIMERS`."""
    return Membership(list(peers), deadtime=TIMERS.deadtime, warntime=TIMERS.warntime, initdead=TIMERS.initdead)


class FakeHost:
    """The node as its parts see it, recording what they do.

    ``sent``: the messages sent, as ``{name: value}``; ``actions``: the actions emitted;
    ``logs``: ``(level, message)``, rate-limited ones included; ``counts``: the counters;
    ``looped``: the messages looped back; ``reports``: ``(peer, status, reason)``;
    ``deferred``: the calls `drain` runs. The resource messages we send come back to `rsc`
    as the node's loopback does, and `send_shutdone` loops one ``shutdone`` back, once.
    `connectivity` answers from `handover` when there is one, else ``conn``.
    """

    def __init__(self, now: float = 0.0) -> None:
        self.now = now
        self.sent: list[dict[str, str]] = []
        self.actions: list[Any] = []
        self.logs: list[tuple[int, str]] = []
        self.deferred: deque[Callable[[], object]] = deque()
        self.counts: Counter[str] = Counter()
        self.looped: list[Message] = []
        self.reports: list[tuple[str, str, str]] = []
        self.conn: tuple[Any, Any] = (None, None)
        self.shutdones = 0
        self.rsc: ResourceProtocol | None = None
        self.handover: ConnectivityHandover | None = None

    # --- the host protocols -----------------------------------------------------------------

    def send(self, fields: list[tuple[str, str]]) -> None:
        """Record a message; loop our resource messages back to `rsc`."""
        self.sent.append(dict(fields))
        if fields[0][1] in ("resource", "ask_resources") and self.rsc is not None:
            self.rsc.own_message(Message.from_pairs([*fields, ("src", "nodea")]))

    def emit(self, action: Any) -> None:
        """Record an action."""
        self.actions.append(action)

    def log(self, level: int, message: str) -> None:
        """Record a log line."""
        self.logs.append((level, message))

    def log_limited(self, key: str, level: int, message: str) -> None:
        """Record a rate-limited log line (every one)."""
        self.logs.append((level, message))

    def defer(self, fn: Callable[[], object]) -> None:
        """Keep ``fn`` for `drain`."""
        self.deferred.append(fn)

    def count(self, counter: str, n: int = 1) -> None:
        """Add ``n`` to ``counter``."""
        self.counts[counter] += n

    def loopback(self, msg: Message) -> None:
        """Record a message looped back."""
        self.looped.append(msg)

    def report(self, peer: Peer, status: str, reason: str) -> None:
        """Record a peer's new status."""
        self.reports.append((peer.name, status, reason))

    def connectivity(self) -> tuple[Any, Any]:
        """Ours and the peer's connectivity: `handover`'s when there is one, else ``conn``."""
        if self.handover is not None:
            return self.handover.ours, self.handover.theirs
        return self.conn

    def send_shutdone(self) -> bool:
        """Loop a ``shutdone`` back to `rsc` the first time; False afterwards."""
        if self.shutdones:
            return False
        self.shutdones += 1
        assert self.rsc is not None
        self.rsc.own_message(Message.from_pairs([("t", "shutdone"), ("st", "dead"), ("src", "nodea")]))
        return True

    # --- reading and driving ----------------------------------------------------------------

    def drain(self) -> None:
        """Run the deferred calls, including those they defer."""
        while self.deferred:
            self.deferred.popleft()()

    def types(self) -> list[str]:
        """The type (``t``) of each message sent."""
        return [m["t"] for m in self.sent]

    def last(self, mtype: str) -> dict[str, str]:
        """The last message of type ``mtype`` sent."""
        return next(m for m in reversed(self.sent) if m["t"] == mtype)

    def packets(self) -> list[Message]:
        """The datagrams emitted (`Send` actions), decoded with `KEYS`."""
        return [decode_packet(a.payload, KEYS) for a in self.actions if isinstance(a, Send)]


def peer_msg(*pairs: tuple[str, str]) -> Message:
    """A message from ``nodeb``."""
    return Message.from_pairs([*pairs, ("src", "nodeb")])


def resource_protocol(now: float, **kwargs: Any) -> tuple[ResourceProtocol, FakeHost, Peer]:
    """A `ResourceProtocol` of `config` (`TIMERS`, groups `VIP_A` and `VIP_B`, ``kwargs``) on a
    `FakeHost` at time ``now``; returns it, the host and the peer ``nodeb``."""
    members = membership()
    host = FakeHost(now)
    rsc = ResourceProtocol(config(timers=TIMERS, groups=(VIP_A, VIP_B), **kwargs), members, host)
    host.rsc = rsc
    return rsc, host, members.peers["nodeb"]


def confirm_all(rsc: ResourceProtocol, host: FakeHost, ok: bool = True) -> None:
    """Confirm every operation the driver was given, in order."""
    for action in host.actions:
        if isinstance(action, Acquire):
            rsc.table.confirm_acquired(action.group, ok, host.now, retry=not rsc.stop_requested)
        else:
            rsc.table.confirm_released(action.group)
        host.drain()
    host.actions.clear()


def stable_holding_ours(rsc: ResourceProtocol, host: FakeHost, peer: Peer) -> None:
    """Both nodes came up; the peer is stable; we hold our own group."""
    peer.anypacketsyet = True
    rsc.comm_up()
    rsc.process_resources(
        peer_msg(("t", "resource"), ("rsc_hold", "local"), ("rtype", "full"), ("isstable", "1")), from_self=False
    )
    confirm_all(rsc, host)
    host.sent.clear()
