"""Tests of the event stream: director.events (bus, subscriptions, JSON) and the event types of
ha.events and director.events (kinds, levels, log lines)."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging

import pytest

from director.events import (
    CheckerBehind,
    CheckerCaughtUp,
    Envelope,
    EventBus,
    HealthChanged,
    IPVSApplied,
    IPVSDriftRepaired,
    IPVSFailed,
    JSONFormatter,
    ReloadAccepted,
    ReloadRefused,
    log_event,
    to_json,
)
from ha.events import (
    HA_EVENTS,
    AddressAdded,
    AddressRemoved,
    AddressRepaired,
    AnnounceFailed,
    AnnouncementSent,
    GroupAcquired,
    GroupAcquireFailed,
    GroupAcquiring,
    GroupReleased,
    GroupReleasing,
    PeerChanged,
    TimersLate,
    emit,
    group_text,
)
from ha.model import Resource, ResourceGroup

GROUP = "dir1: 192.168.10.100/32/eth0"


def ticking_clock(start: float = 1_700_000_000.0, step: float = 0.5):
    now = [start - step]

    def clock() -> float:
        now[0] += step
        return now[0]

    return clock


# --- event types ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "event, kind, level, text",
    [
        (
            PeerChanged("dir2", "dead", "no keepalive for 0.8 s"),
            "ha.peer",
            logging.INFO,
            "peer dir2 is dead (no keepalive for 0.8 s)",
        ),
        (
            GroupAcquiring(GROUP, "peer dir2 is dead"),
            "ha.acquiring",
            logging.INFO,
            f"acquiring {GROUP} (peer dir2 is dead)",
        ),
        (GroupAcquired(GROUP), "ha.acquired", logging.INFO, f"acquired {GROUP}"),
        (
            GroupAcquireFailed(GROUP, "192.168.10.100/32/eth0", "OSError: no such device"),
            "ha.acquire_failed",
            logging.ERROR,
            f"acquiring {GROUP} failed at 192.168.10.100/32/eth0: OSError: no such device",
        ),
        (GroupReleasing(GROUP, "standby"), "ha.releasing", logging.INFO, f"releasing {GROUP} (standby)"),
        (GroupReleasing(GROUP, "start-up", held=False), "ha.releasing", logging.DEBUG, f"releasing {GROUP} (start-up)"),
        (GroupReleased(GROUP), "ha.released", logging.INFO, f"released {GROUP}"),
        (AddressAdded("192.168.10.100/32/eth0"), "ha.address_added", logging.INFO, "added 192.168.10.100/32/eth0"),
        (
            AddressRemoved("192.168.10.100/32/eth0"),
            "ha.address_removed",
            logging.INFO,
            "removed 192.168.10.100/32/eth0",
        ),
        (
            AddressRemoved("192.168.10.100/32/eth0", "EPERM"),
            "ha.address_removed",
            logging.ERROR,
            "removing 192.168.10.100/32/eth0 failed: EPERM",
        ),
        (
            AddressRepaired("192.168.10.100/32/eth0", GROUP, "added"),
            "ha.address_repaired",
            logging.WARNING,
            f"192.168.10.100/32/eth0 went missing while we hold {GROUP}: adding and announcing it again",
        ),
        (
            AddressRepaired("192.168.10.100/32/eth0", GROUP, "removed"),
            "ha.address_repaired",
            logging.WARNING,
            f"192.168.10.100/32/eth0 is configured but we do not hold {GROUP}: removing it",
        ),
        (
            AnnouncementSent("192.168.10.100/32/eth0", "first"),
            "ha.announced",
            logging.INFO,
            "announced 192.168.10.100/32/eth0 (first round)",
        ),
        (
            AnnouncementSent("192.168.10.100/32/eth0", "refresh"),
            "ha.announced",
            logging.DEBUG,
            "announced 192.168.10.100/32/eth0 (refresh)",
        ),
        (
            AnnounceFailed("192.168.10.100/32/eth0", "OSError: ENETDOWN"),
            "ha.announce_failed",
            logging.WARNING,
            "announcing 192.168.10.100/32/eth0 failed: OSError: ENETDOWN",
        ),
        (
            HealthChanged("rs 10.0.0.2:80 of web", "web", "10.0.0.2:80", "up", "down", "HTTP 503 after 2 failures"),
            "check.health",
            logging.INFO,
            "rs 10.0.0.2:80 of web down: HTTP 503 after 2 failures",
        ),
        (
            IPVSApplied("set_dest", "web", "TCP 192.168.10.100:80", "10.0.0.2:80", weight=0, forwarding="dr"),
            "ipvs.applied",
            logging.INFO,
            "ipvs set_dest TCP 192.168.10.100:80 -> 10.0.0.2:80 weight 0 fwd dr",
        ),
        (
            IPVSApplied("add_service", "web", "TCP 192.168.10.100:80", scheduler="wlc"),
            "ipvs.applied",
            logging.INFO,
            "ipvs add_service TCP 192.168.10.100:80 scheduler wlc",
        ),
        (
            IPVSApplied("del_dest", "web", "TCP 192.168.10.100:80", "10.0.0.2:80"),
            "ipvs.applied",
            logging.INFO,
            "ipvs del_dest TCP 192.168.10.100:80 -> 10.0.0.2:80",
        ),
        (
            IPVSFailed("add-dest 10.0.0.2:80", "web", "ENOENT"),
            "ipvs.failed",
            logging.ERROR,
            "ipvs add-dest 10.0.0.2:80 (service web) failed: ENOENT; retrying on the next pass "
            "(logged again when the error changes or the command is accepted)",
        ),
        (
            IPVSFailed("add-dest 10.0.0.2:80", "web", "ENOENT", repeated=True),
            "ipvs.failed",
            logging.DEBUG,
            "ipvs add-dest 10.0.0.2:80 (service web) still failing: ENOENT",
        ),
        (
            IPVSDriftRepaired("web", "TCP 192.168.10.100:80", (("add_dest", 1),), ("add_dest 10.0.0.2:80",)),
            "ipvs.drift",
            logging.WARNING,
            "ipvs TCP 192.168.10.100:80 (service web) was changed outside directord: repaired with 1 operation "
            "nobody asked for: add_dest 10.0.0.2:80",
        ),
        (
            IPVSDriftRepaired(
                "web", "TCP 192.168.10.100:80", (("set_service", 1), ("add_dest", 11)), ("set_service", "add_dest a")
            ),
            "ipvs.drift",
            logging.WARNING,
            "ipvs TCP 192.168.10.100:80 (service web) was changed outside directord: repaired with 12 operations "
            "nobody asked for: set_service, add_dest a and 10 more",
        ),
        (
            CheckerBehind(0.8744, 12, 6),
            "check.behind",
            logging.WARNING,
            "checks are falling behind (event loop 874 ms late, 12 checks in flight): at most 6 at a time until "
            "they catch up; real servers are checked less often meanwhile",
        ),
        (
            CheckerCaughtUp(),
            "check.caught_up",
            logging.WARNING,
            "checks caught up: no limit on checks in flight",
        ),
        (
            TimersLate(0.6444),
            "ha.timers_late",
            logging.WARNING,
            "timers ran 0.64 s late (was this process stalled?): peers get 0.64 s of grace",
        ),
        (
            ReloadAccepted("/etc/directord/directord.yaml", 3),
            "config.reloaded",
            logging.INFO,
            "reloaded: 3 virtual services",
        ),
        (
            ReloadRefused("/etc/directord/directord.yaml", "t.yaml:3:1: port: ..."),
            "config.refused",
            logging.ERROR,
            "reload refused (/etc/directord/directord.yaml), keeping the running configuration: t.yaml:3:1: port: ...",
        ),
    ],
)
def test_an_event_has_its_kind_level_and_log_line(event, kind, level, text):
    assert (event.kind, event.level, str(event)) == (kind, level, text)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.kind_of_change = 1  # events are immutable


def test_every_ha_event_kind_is_distinct_and_dotted():
    kinds = [cls.kind for cls in HA_EVENTS]
    assert len(set(kinds)) == len(kinds)
    assert all(kind.startswith("ha.") for kind in kinds)


def test_group_text_is_the_logs_group_name():
    group = ResourceGroup("dir1", (Resource("192.168.10.100", 32, "eth0"), Resource("192.168.10.101", 32, "eth0")))
    assert group_text(group) == "dir1: 192.168.10.100/32/eth0 192.168.10.101/32/eth0"


# --- the bus -------------------------------------------------------------------------------


def test_publish_stamps_sequence_and_wall_clock_and_keeps_history():
    bus = EventBus(history=2, clock=ticking_clock())
    first = bus.publish(AddressAdded("a"))
    bus.publish(AddressAdded("b"))
    third = bus.publish(AddressAdded("c"))
    assert (first.seq, first.at) == (1, 1_700_000_000.0)
    assert (third.seq, third.at) == (3, 1_700_000_001.0)
    assert [e.event.address for e in bus.recent()] == ["b", "c"]
    assert [e.event.address for e in bus.recent(1)] == ["c"]
    assert bus.published == 3


@pytest.mark.parametrize("thing", [object(), "ha.peer", {"kind": "ha.peer"}, AddressAdded])
def test_publish_refuses_what_is_not_an_event(thing):
    with pytest.raises(TypeError):
        EventBus().publish(thing)


def test_every_subscriber_sees_every_event_in_order_from_its_subscription_on():
    bus = EventBus()
    bus.publish(AddressAdded("before"))
    one, two = bus.subscribe(), bus.subscribe()
    for name in ("a", "b", "c"):
        bus.publish(AddressAdded(name))
    for sub in (one, two):
        got = []
        while (envelope := sub.get_nowait()) is not None:
            got.append(envelope.event.address)
        assert got == ["a", "b", "c"]


def test_replay_starts_a_subscription_with_recent_events():
    bus = EventBus()
    for name in ("a", "b", "c"):
        bus.publish(AddressAdded(name))
    sub = bus.subscribe(replay=2)
    bus.publish(AddressAdded("d"))
    assert [sub.get_nowait().event.address for _ in range(3)] == ["b", "c", "d"]


def test_a_subscription_filters_by_kind():
    bus = EventBus()
    sub = bus.subscribe(kinds=frozenset({"ha.peer"}))
    bus.publish(AddressAdded("a"))
    bus.publish(PeerChanged("dir2", "dead", "r"))
    assert sub.pending() == 1
    assert sub.get_nowait().event.kind == "ha.peer"


def test_a_slow_subscriber_loses_its_oldest_events_counted_and_others_lose_none():
    bus = EventBus()
    slow, fast = bus.subscribe(maxsize=3), bus.subscribe()
    for i in range(10):
        bus.publish(AddressAdded(str(i)))
    assert slow.dropped == 7 and fast.dropped == 0
    assert [slow.get_nowait().event.address for _ in range(3)] == ["7", "8", "9"]
    assert fast.pending() == 10


def test_a_closed_subscription_receives_nothing_and_is_forgotten():
    bus = EventBus()
    sub = bus.subscribe()
    assert bus.subscribers == 1
    sub.close()
    sub.close()
    bus.publish(AddressAdded("a"))
    assert (sub.pending(), bus.subscribers) == (0, 0)


@pytest.mark.parametrize("kwargs", [{"maxsize": 0}, {"replay": -1}])
def test_subscribe_refuses_bad_bounds(kwargs):
    with pytest.raises(ValueError):
        EventBus().subscribe(**kwargs)


def test_history_must_not_be_negative():
    with pytest.raises(ValueError):
        EventBus(history=-1)


async def test_get_waits_for_the_next_event_and_returns_none_once_closed():
    bus = EventBus()
    sub = bus.subscribe()
    waiting = asyncio.ensure_future(sub.get())
    await asyncio.sleep(0)
    assert not waiting.done()
    bus.publish(AddressAdded("a"))
    assert (await asyncio.wait_for(waiting, 5)).event.address == "a"
    waiting = asyncio.ensure_future(sub.get())
    await asyncio.sleep(0)
    sub.close()
    assert await asyncio.wait_for(waiting, 5) is None


# --- log and JSON forms ---------------------------------------------------------------------


def test_the_bus_logs_each_event_on_its_logger_at_its_level(caplog):
    bus = EventBus(log=log_event)
    sub = bus.subscribe()
    with caplog.at_level(logging.DEBUG):
        bus.publish(GroupReleasing(GROUP, "start-up", held=False))
        bus.publish(PeerChanged("dir2", "up", "first keepalive"))
        bus.publish(AddressAdded("192.168.10.100/32/eth0"))
        bus.publish(IPVSFailed("add-dest 10.0.0.2:80", "web", "ENOENT"))
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("directord.ha", logging.DEBUG, f"releasing {GROUP} (start-up)"),
        ("directord.ha", logging.INFO, "peer dir2 is up (first keepalive)"),
        ("directord.ha", logging.INFO, "added 192.168.10.100/32/eth0"),
        (
            "directord.reconciler",
            logging.ERROR,
            "ipvs add-dest 10.0.0.2:80 (service web) failed: ENOENT; retrying on the next pass "
            "(logged again when the error changes or the command is accepted)",
        ),
    ]
    assert sub.pending() == 4


def test_to_json_carries_the_envelope_the_kind_the_line_and_the_fields():
    envelope = Envelope(7, 1_700_000_000.1234567, GroupAcquireFailed(GROUP, "192.168.10.100/32/eth0", "ENODEV"))
    out = to_json(envelope)
    assert out == {
        "seq": 7,
        "at": 1_700_000_000.123457,
        "kind": "ha.acquire_failed",
        "level": "ERROR",
        "message": f"acquiring {GROUP} failed at 192.168.10.100/32/eth0: ENODEV",
        "group": GROUP,
        "address": "192.168.10.100/32/eth0",
        "error": "ENODEV",
    }
    assert json.loads(json.dumps(out)) == out


def test_the_json_log_format_carries_an_events_kind_and_fields():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JSONFormatter())
    logger = logging.getLogger("directord.ha")
    logger.addHandler(handler)
    try:
        with_level = logger.level
        logger.setLevel(logging.INFO)
        log_event(Envelope(3, 1_700_000_000.0, PeerChanged("dir2", "dead", "no keepalive for 0.8 s")))
        logger.info("a plain line")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(with_level)
    event, plain = (json.loads(line) for line in stream.getvalue().splitlines())
    assert event["kind"] == "ha.peer" and event["seq"] == 3
    assert (event["logger"], event["level"], event["message"]) == (
        "directord.ha",
        "INFO",
        "peer dir2 is dead (no keepalive for 0.8 s)",
    )
    assert (event["node"], event["status"], event["reason"]) == ("dir2", "dead", "no keepalive for 0.8 s")
    assert plain.keys() == {"at", "level", "logger", "message"} and plain["message"] == "a plain line"


def test_emit_without_a_sink_writes_the_events_log_line(caplog):
    with caplog.at_level(logging.DEBUG):
        emit(None, AddressAdded("192.168.10.100/32/eth0"))
    (record,) = [r for r in caplog.records if r.name == AddressAdded.logger]
    assert (record.levelno, record.getMessage()) == (AddressAdded.level, str(AddressAdded("192.168.10.100/32/eth0")))


def test_emit_hands_the_event_to_the_sink_and_a_failing_sink_goes_no_further(caplog):
    got = []
    emit(got.append, PeerChanged("dir2", "up", "first keepalive"))
    assert got == [PeerChanged("dir2", "up", "first keepalive")]

    def broken(event):
        raise RuntimeError("consumer bug")

    with caplog.at_level(logging.ERROR):
        emit(broken, IPVSFailed("add_dest", "web", "EEXIST"))  # does not raise
    (record,) = [r for r in caplog.records if r.name == IPVSFailed.logger]
    assert "event sink failed on ipvs.failed" in record.getMessage() and record.exc_info


def test_a_checker_event_says_what_the_engines_load_report_says():
    from checks.engine import Load

    assert str(CheckerBehind(0.25, 3, 4)) == str(Load(True, 0.25, 3, 4))
    assert str(CheckerCaughtUp()) == str(Load(False, 0.01, 0, None))


def test_a_drift_event_in_json_carries_its_counts_and_operations():
    event = IPVSDriftRepaired("web", "TCP 192.168.10.100:80", (("set_dest", 2),), ("set_dest a", "set_dest b"))
    out = to_json(Envelope(1, 1_700_000_000.0, event))
    assert (out["kind"], out["level"], out["service"], out["virtual"]) == (
        "ipvs.drift",
        "WARNING",
        "web",
        "TCP 192.168.10.100:80",
    )
    assert out["counts"] == [("set_dest", 2)] and out["operations"] == ["set_dest a", "set_dest b"]
    assert json.loads(json.dumps(out))["counts"] == [["set_dest", 2]]
    assert event.total == 2
