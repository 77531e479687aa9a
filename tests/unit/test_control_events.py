"""The control socket's event stream ({"command": "events"}) on a real unix socket, read by a
client as ``directord events`` reads it."""

from __future__ import annotations

import asyncio
import json

import pytest

from director import control
from director.control import ControlServer, stream_request
from director.events import EventBus
from ha.events import AddressAdded, PeerChanged


async def unused_handler(request):
    return {"ok": True}


async def open_stream(path, **fields):
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(json.dumps({"command": "events", **fields}).encode() + b"\n")
    await writer.drain()
    return reader, writer


async def next_line(reader):
    line = await asyncio.wait_for(reader.readline(), 10)
    return json.loads(line) if line else None


@pytest.fixture
async def served(tmp_path):
    bus = EventBus()
    server = ControlServer(str(tmp_path / "ctl.sock"), unused_handler, bus)
    await server.start()
    yield server, bus
    await server.stop()


async def test_a_stream_replays_recent_events_then_follows(served):
    server, bus = served
    for name in ("a", "b", "c"):
        bus.publish(AddressAdded(name))
    reader, writer = await open_stream(server.path, recent=2)
    assert await next_line(reader) == {"ok": True}
    assert [(await next_line(reader))["address"] for _ in range(2)] == ["b", "c"]
    bus.publish(PeerChanged("dir2", "dead", "no keepalive for 0.8 s"))
    line = await next_line(reader)
    assert (line["seq"], line["kind"], line["node"], line["message"]) == (
        4,
        "ha.peer",
        "dir2",
        "peer dir2 is dead (no keepalive for 0.8 s)",
    )
    writer.close()


async def test_a_stream_sends_only_the_kinds_asked_for(served):
    server, bus = served
    reader, writer = await open_stream(server.path, kinds=["ha.peer"])
    assert await next_line(reader) == {"ok": True}
    bus.publish(AddressAdded("a"))
    bus.publish(PeerChanged("dir2", "up", "first keepalive"))
    assert (await next_line(reader))["kind"] == "ha.peer"
    writer.close()


async def test_without_follow_the_stream_ends_after_the_recent_events(served):
    server, bus = served
    bus.publish(AddressAdded("a"))
    reader, writer = await open_stream(server.path, recent=5, follow=False)
    assert await next_line(reader) == {"ok": True}
    assert (await next_line(reader))["address"] == "a"
    assert await next_line(reader) is None
    writer.close()


async def test_stopping_the_server_ends_every_stream(tmp_path):
    bus = EventBus()
    server = ControlServer(str(tmp_path / "ctl.sock"), unused_handler, bus)
    await server.start()
    reader, writer = await open_stream(server.path)
    assert await next_line(reader) == {"ok": True}
    await server.stop()
    assert await next_line(reader) is None
    assert bus.subscribers == 0
    writer.close()


async def test_a_slow_reader_loses_its_oldest_events_and_is_told(served, monkeypatch):
    monkeypatch.setattr(control, "STREAM_QUEUE", 2)
    server, bus = served
    reader, writer = await open_stream(server.path)
    assert await next_line(reader) == {"ok": True}
    for i in range(10):  # no await between: the server's task cannot send any of them yet
        bus.publish(AddressAdded(str(i)))
    assert await next_line(reader) == {"kind": "stream.dropped", "dropped": 8}
    assert [(await next_line(reader))["address"] for _ in range(2)] == ["8", "9"]
    writer.close()


@pytest.mark.parametrize(
    "fields",
    [
        {"recent": -1},
        {"recent": 1001},
        {"recent": "5"},
        {"follow": "yes"},
        {"kinds": "ha.peer"},
        {"kinds": [1]},
        {"kinds": ["k"] * 65},
    ],
)
async def test_a_bad_stream_request_is_refused_with_one_line(served, fields):
    server, bus = served
    reader, writer = await open_stream(server.path, **fields)
    answer = await next_line(reader)
    assert answer["ok"] is False and answer["error"].startswith("bad request: ")
    assert await next_line(reader) is None
    assert bus.subscribers == 0
    writer.close()


async def test_one_stream_more_than_max_streams_is_refused_and_a_closed_one_frees_its_place(served):
    server, bus = served
    open_ = []
    for _ in range(control.MAX_STREAMS):
        reader, writer = await open_stream(server.path)
        assert await next_line(reader) == {"ok": True}
        open_.append((reader, writer))
    reader, writer = await open_stream(server.path)
    answer = await next_line(reader)
    assert answer["ok"] is False and "too many event streams" in answer["error"]
    assert bus.subscribers == control.MAX_STREAMS
    writer.close()
    # the streams served keep receiving
    bus.publish(AddressAdded("a"))
    assert (await next_line(open_[0][0]))["address"] == "a"
    # one hangs up: its place is free again
    open_[0][1].close()
    for _ in range(100):
        if bus.subscribers < control.MAX_STREAMS:
            break
        bus.publish(AddressAdded("tick"))  # the stream notices the hang-up when it writes
        await asyncio.sleep(0.05)
    reader, writer = await open_stream(server.path)
    assert await next_line(reader) == {"ok": True}
    for _, w in open_[1:] + [(reader, writer)]:
        w.close()


async def test_a_daemon_without_an_event_bus_refuses_streams(tmp_path):
    server = ControlServer(str(tmp_path / "ctl.sock"), unused_handler)
    await server.start()
    try:
        reader, writer = await open_stream(server.path)
        answer = await next_line(reader)
        assert answer == {"ok": False, "error": "bad request: this daemon has no event stream"}
        writer.close()
    finally:
        await server.stop()


async def test_the_blocking_client_reads_what_directord_events_prints(served):
    server, bus = served
    bus.publish(AddressAdded("192.168.10.100/32/eth0"))
    lines = await asyncio.to_thread(lambda: list(control.stream(server.path, timeout=10, recent=1, follow=False)))
    assert lines[0] == {"ok": True}
    assert [(item["kind"], item["message"]) for item in lines[1:]] == [
        ("ha.address_added", "added 192.168.10.100/32/eth0")
    ]


def test_stream_request_defaults():
    assert stream_request({"command": "events"}) == (0, True, None)
    assert stream_request({"recent": 3, "follow": False, "kinds": ["ha.peer"]}) == (3, False, frozenset({"ha.peer"}))
