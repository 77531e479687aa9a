"""The pure node's admin requests (standby, takeover) and connectivity-driven handovers.

Two `HeartbeatNode`s wired by the discrete-event simulator of
``test_ha_node`` (no sockets, no clock): nodea owns the VIP group.
"""

from __future__ import annotations

import pytest
from test_ha_node import Sim, decode, steady_pair

from ha.connectivity import Connectivity
from ha.node import CONNECTIVITY_TYPE, TAKEOVER_TYPE, AdminRefused, Release

GOOD = Connectivity(True, 1, 1)
NO_PING = Connectivity(True, 0, 1)
NO_LINK = Connectivity(False, 1, 1)


def sent_types(sim: Sim, name: str, since: float) -> list[tuple[str, str | None, str | None]]:
    out = []
    for t, n, p in sim.sent:
        if n == name and t >= since:
            m = decode(p)
            if m.msg_type in ("ask_resources", TAKEOVER_TYPE):
                out.append((m.msg_type, m.get("rsc_hold"), m.get("info")))
    return out


def single_holder_throughout(sim: Sim, since: float) -> bool:
    return all(len(h) <= 1 for t, h in sim.holders_log if t > since)


def report(sim: Sim, name: str, conn: Connectivity) -> None:
    sn = sim.nodes[name]
    sim.handle(name, sn.node.set_connectivity(conn, sim.now))


def test_standby_hands_everything_to_the_peer_and_it_stays_there():
    sim = steady_pair()
    t0 = sim.now
    sim.handle("nodea", sim.nodes["nodea"].node.standby(sim.now))
    sim.run_until(lambda: sim.holders() == {"nodeb"}, t0 + 2)
    assert sent_types(sim, "nodea", t0) == [("ask_resources", "all", "me"), ("ask_resources", "all", "done")]
    assert sent_types(sim, "nodeb", t0) == [("ask_resources", "all", "other"), ("ask_resources", "all", "done")]
    rel = sim.timed("nodea", Release, since=t0)[0][0]
    assert rel - t0 < 0.2
    assert single_holder_throughout(sim, t0)
    sim.run(t0 + 20)  # auto_failback does not undo an administrative standby
    assert sim.holders() == {"nodeb"}
    assert sim.nodes["nodea"].node.snapshot().standby == "not"


def test_takeover_brings_the_groups_back():
    sim = steady_pair()
    sim.handle("nodea", sim.nodes["nodea"].node.standby(sim.now))
    sim.run(sim.now + 3)
    assert sim.holders() == {"nodeb"}
    t0 = sim.now
    sim.handle("nodea", sim.nodes["nodea"].node.takeover(sim.now))
    sim.run_until(lambda: sim.holders() == {"nodea"}, t0 + 2)
    assert sent_types(sim, "nodea", t0)[0] == (TAKEOVER_TYPE, "all", None)
    # nodeb went standby for everything it held
    assert sent_types(sim, "nodeb", t0)[0] == ("ask_resources", "all", "me")
    assert single_holder_throughout(sim, t0)


@pytest.mark.parametrize(
    "request_, setup, reason",
    [
        ("standby", "standby-node", "we hold none of the all groups"),
        ("takeover", "active", "we already hold the all groups"),
        ("standby", "peer-dead", "the peer is not alive"),
        ("standby", "legacy", "not legacy"),
    ],
)
def test_refusals_say_why(request_, setup, reason):
    if setup == "legacy":
        sim = Sim(auto_failback="legacy")
        sim.add("nodea")
        sim.add("nodeb")
        sim.run(12)
        name = "nodea"
    else:
        sim = steady_pair()
        name = "nodeb" if setup == "standby-node" else "nodea"
        if setup == "peer-dead":
            sim.kill("nodeb")
            sim.run(sim.now + 3)
    node = sim.nodes[name].node
    sent_before = len(sim.sent)
    with pytest.raises(AdminRefused, match=reason):
        getattr(node, request_)(sim.now)
    sim.run(sim.now + 1)
    assert not [
        p for t, n, p in sim.sent[sent_before:] if n == name and decode(p).msg_type in ("ask_resources", TAKEOVER_TYPE)
    ]
    with pytest.raises(ValueError):
        node.standby(sim.now, "everything")


def test_worse_connectivity_hands_over_and_failback_brings_it_back():
    sim = steady_pair()
    report(sim, "nodea", GOOD)
    report(sim, "nodeb", GOOD)
    sim.run(sim.now + 1)
    assert sim.holders() == {"nodea"}
    assert sim.nodes["nodeb"].node.snapshot().peer_connectivity == GOOD
    t0 = sim.now
    report(sim, "nodea", NO_PING)  # nodea cannot reach the router any more
    sim.run_until(lambda: sim.holders() == {"nodeb"}, t0 + 2)
    assert single_holder_throughout(sim, t0)
    sim.run(sim.now + 5)
    assert sim.holders() == {"nodeb"}  # stays while nodea is worse, no flapping
    t1 = sim.now
    report(sim, "nodea", GOOD)
    sim.run_until(lambda: sim.holders() == {"nodea"}, t1 + 3)
    assert sent_types(sim, "nodea", t1)[0] == (TAKEOVER_TYPE, "local", None)
    assert single_holder_throughout(sim, t1)


def test_recovery_with_auto_failback_off_leaves_the_groups_with_the_peer():
    sim = steady_pair(auto_failback=False)
    report(sim, "nodea", GOOD)
    report(sim, "nodeb", GOOD)
    sim.run(sim.now + 1)
    report(sim, "nodea", NO_LINK)
    sim.run(sim.now + 2)
    assert sim.holders() == {"nodeb"}
    report(sim, "nodea", GOOD)
    sim.run(sim.now + 5)
    assert sim.holders() == {"nodeb"}


def test_equal_bad_connectivity_moves_nothing():
    """The ping node itself died: both lose it, nobody moves (ipfail's point)."""
    sim = steady_pair()
    for n in ("nodea", "nodeb"):
        report(sim, n, GOOD)
    sim.run(sim.now + 1)
    t0 = sim.now
    report(sim, "nodeb", NO_PING)
    report(sim, "nodea", NO_PING)
    sim.run(t0 + 5)
    assert sim.holders() == {"nodea"}
    assert not sim.actions("nodea", Release, since=t0)


def test_peer_with_bad_connectivity_does_not_get_failback():
    """The preferred owner returns with no carrier: the holder keeps its groups."""
    sim = steady_pair()
    sim.kill("nodea")
    sim.run(sim.now + 3)
    report(sim, "nodeb", GOOD)
    t0 = sim.now
    sim.restart("nodea")
    sim.run(t0 + 0.01)
    report(sim, "nodea", NO_LINK)
    sim.run(t0 + 15)
    assert sim.holders() == {"nodeb"}
    report(sim, "nodea", GOOD)
    sim.run_until(lambda: sim.holders() == {"nodea"}, sim.now + 5)


def test_reports_on_the_wire_and_malformed_ones_ignored():
    sim = steady_pair()
    t0 = sim.now
    report(sim, "nodea", Connectivity(True, 2, 3))
    sim.run(t0 + 4.5)
    reports = [(t, m) for t, m in sim.messages("nodea", since=t0) if m.msg_type == CONNECTIVITY_TYPE]
    assert [(m["link"], m["ping"]) for t, m in reports[:1]] == [("up", "2/3")]
    assert 2 <= len(reports) <= 4  # at once, then every 2 s
    for link, ping in (("sideways", "1/1"), ("up", "3/2"), ("up", "x"), (None, "1/1")):
        with pytest.raises(ValueError):
            Connectivity.from_fields(link, ping)


def test_ping_tracker_rise_and_fall():
    from ha.connectivity import PingTracker

    t = PingTracker(rise=2, fall=3)
    assert t.reachable
    assert [t.record(False) for _ in range(3)] == [False, False, True] and not t.reachable
    assert [t.record(True), t.record(False), t.record(True), t.record(True)] == [False, False, False, True]
    assert t.reachable and (t.sent, t.answered) == (7, 3)
    with pytest.raises(ValueError):
        PingTracker(0, 1)
