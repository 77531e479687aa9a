"""Tests of ha.media: bcast, mcast and ucast heartbeat media between two network namespaces.

Root only. Each test builds its own namespaces ``<PREFIX>-a`` and
``<PREFIX>-b`` joined by a veth pair (``a0`` in A, ``b0`` in B) with
10.214.0.1/24 and 10.214.0.2/24 (broadcast 10.214.0.255), and a second veth
pair ``c0``/``d0`` whose A end has an address without a broadcast address.
The media run on an event loop in a thread that entered the namespace (the
sockets belong to the namespace of the thread that creates them).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
from nspair import broadcast_pair, ip

from director.lab import flood as flood_module
from director.lab import netns as N
from ha.environment import check_ha_environment
from ha.media import Media, MediumError, broadcast_address, describe, open_medium
from ha.model import HAConfig, Medium

PREFIX = f"hmd{os.getpid()}"
A_ADDR, B_ADDR, BRD = "10.214.0.1", "10.214.0.2", "10.214.0.255"
GROUP = "239.214.0.1"
PORT = 694


@pytest.fixture
def pair():
    with broadcast_pair(PREFIX, 214) as names:
        yield names


def run_in(ns: str, coro_fn) -> threading.Thread:
    """Run ``asyncio.run(coro_fn())`` in a thread inside ``ns``; exceptions land in ``thread.error``."""

    def target() -> None:
        try:
            N.call_in_netns(ns, lambda: asyncio.run(coro_fn()))
        except BaseException as exc:  # reported by the test
            t.error = exc

    t = threading.Thread(target=target, daemon=True)
    t.error = None
    t.start()
    return t


def exchange(a: str, b: str, medium_a: Medium, medium_b: Medium, payload: bytes) -> tuple[list, list, dict]:
    """A sends ``payload`` (every 50 ms) until B received it; returns (B's packets, A's packets, A's stats)."""
    got_b: list[tuple[bytes, str]] = []
    got_a: list[tuple[bytes, str]] = []
    ready = threading.Event()
    done = threading.Event()
    info: dict = {}

    async def receiver() -> None:
        media = Media([medium_b], lambda data, src: got_b.append((data, src)))
        await media.start()
        ready.set()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(d == payload for d, _ in got_b):
            await asyncio.sleep(0.02)
        done.set()
        media.close()

    async def sender() -> None:
        assert ready.wait(5)
        media = Media([medium_a], lambda data, src: got_a.append((data, src)))
        await media.start()
        sock = media.sockets[0].sock
        info["bindtodevice"] = sock.getsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, 16).rstrip(b"\0")
        info["broadcast"] = sock.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST)
        info["dontroute"] = sock.getsockopt(socket.SOL_SOCKET, socket.SO_DONTROUTE)
        info["destination"] = media.sockets[0].destination
        sent = 0
        while not done.is_set() and sent < 100:
            sent += media.send(payload)
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.05)
        info["stats"] = media.stats()
        media.close()

    rx = run_in(b, receiver)
    tx = run_in(a, sender)
    rx.join(15)
    tx.join(15)
    assert rx.error is None, rx.error
    assert tx.error is None, tx.error
    return got_b, got_a, info


def test_bcast_delivers_to_the_broadcast_address(pair):
    a, b = pair
    payload = b"###\nbcast test\n%%%\n"
    got_b, got_a, info = exchange(a, b, Medium("bcast", "a0", PORT), Medium("bcast", "b0", PORT), payload)
    assert (payload, f"{A_ADDR}:{PORT}") in got_b
    assert info["destination"] == (BRD, PORT)
    assert info["bindtodevice"] == b"a0"
    assert info["broadcast"] == 1 and info["dontroute"] == 1
    # our own broadcasts come back to us (the node drops them as its own)
    assert any(d == payload for d, _ in got_a)
    assert info["stats"][0]["sent"] >= 1 and info["stats"][0]["send_errors"] == 0


def test_mcast_delivers_to_the_group(pair):
    a, b = pair
    payload = b"mcast test"
    m_a = Medium("mcast", "a0", 1694, group=GROUP, ttl=1, loop=False)
    m_b = Medium("mcast", "b0", 1694, group=GROUP, ttl=1, loop=False)
    got_b, got_a, info = exchange(a, b, m_a, m_b, payload)
    assert (payload, f"{A_ADDR}:1694") in got_b
    assert info["destination"] == (GROUP, 1694)
    assert got_a == []  # loop off: our own multicast does not come back


def test_ucast_delivers_to_the_peer(pair):
    a, b = pair
    payload = b"ucast test"
    got_b, _got_a, info = exchange(
        a, b, Medium("ucast", "a0", PORT, peer=B_ADDR), Medium("ucast", "b0", PORT, peer=A_ADDR), payload
    )
    assert (payload, f"{A_ADDR}:{PORT}") in got_b
    assert info["destination"] == (B_ADDR, PORT)
    assert info["bindtodevice"] == b"a0"


def test_bcast_without_a_broadcast_address_is_refused(pair):
    a, _b = pair
    cfg = HAConfig(node="dir1", nodes=("dir1", "dir2"), media=(Medium("bcast", "c0"),), authkeys="/x", line=7)
    problems = check_ha_environment(cfg, netns=a, file="/etc/directord/directord.yaml")
    assert len(problems) == 1
    assert problems[0].startswith("/etc/directord/directord.yaml:7: ha.media: bcast c0: ")
    assert "broadcast" in problems[0]

    async def try_open() -> tuple[str | None, str | None]:
        with pytest.raises(MediumError) as err:
            await open_medium(Medium("bcast", "c0"))
        assert "bcast c0" in str(err.value) and "broadcast" in str(err.value)
        with pytest.raises(MediumError, match="no such network interface 'nope0'"):
            await open_medium(Medium("bcast", "nope0"))
        return await broadcast_address("c0"), await broadcast_address("a0")

    assert N.call_in_netns(a, lambda: asyncio.run(try_open())) == (None, BRD)


def test_send_errors_are_counted_not_raised(pair):
    a, _b = pair

    async def go() -> dict:
        media = Media([Medium("ucast", "a0", PORT, peer=B_ADDR)], lambda d, s: None)
        await media.start()
        ip("-n", a, "link", "set", "a0", "down")
        assert media.send(b"x" * 70000) == 0  # too big for a datagram: refused, logged
        stats = media.stats()[0]
        media.close()
        media.close()  # idempotent
        return stats

    stats = N.call_in_netns(a, lambda: asyncio.run(go()))
    assert stats["send_errors"] == 1 and stats["sent"] == 0
    assert describe(Medium("mcast", "a0", 1694, group=GROUP)) == f"mcast a0 {GROUP} 1694"


def test_a_flood_cannot_hold_the_loop_past_the_receive_budget(pair, tmp_path):
    """Under a flood of datagrams that each cost the handler 3 ms of CPU, one wake-up of
    the reader stops at its time budget (5 ms), where 64 datagrams a wake-up held the loop
    ~190 ms; so a 20 ms timer on the same loop runs on time. The wake-ups are measured in
    CPU time of the loop's thread, which a loaded machine does not inflate; the timer's
    lateness (wall clock) is printed. The receive buffer is grown so a burst does not push
    a peer's keepalive out."""
    from ha.media import RECEIVE_BUDGET, RECEIVE_BUFFER

    a, b = pair
    info: dict = {}

    def costly(data: bytes, src: str) -> None:
        end = time.thread_time() + 0.003
        while time.thread_time() < end:
            pass

    async def receiver() -> None:
        media = Media([Medium("bcast", "b0", port=PORT)], costly)
        await media.start()
        info["rcvbuf"] = media.sockets[0].sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        wakeups: list[float] = []
        readable = media._readable

        def timed(*args) -> None:  # CPU time of one wake-up of the reader
            t0 = time.thread_time()
            readable(*args)
            wakeups.append(time.thread_time() - t0)

        loop = asyncio.get_running_loop()
        sock = media.sockets[0].sock
        loop.remove_reader(sock.fileno())
        loop.add_reader(sock.fileno(), timed, media.sockets[0], sock, True)
        late = []
        info["ready"] = True
        t_end = loop.time() + 2.0
        while loop.time() < t_end:
            due = loop.time() + 0.02
            await asyncio.sleep(0.02)
            late.append(loop.time() - due)
        info["late"] = late
        info["wakeups"] = wakeups
        info["stats"] = media.stats()
        media.close()

    packets = tmp_path / "packets.json"
    flood_module.write_packets(packets, [b"###\n" + b"x" * 200])
    rx = run_in(b, receiver)
    deadline = time.monotonic() + 5
    while not info.get("ready") and time.monotonic() < deadline:
        time.sleep(0.01)
    # a separate process, so it takes nothing from the receiver's interpreter
    tx = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            a,
            sys.executable,
            "-I",
            flood_module.__file__,
            "--packets",
            str(packets),
            "--dest",
            BRD,
            "--port",
            str(PORT),
            "--seconds",
            "2.5",
            "--max",
            "500000",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    info["sent"] = tx.stdout.split()[-3] if tx.stdout.strip() else tx.stderr  # the last "sent N errors M"
    rx.join(20)
    assert rx.error is None, rx.error
    stats = info["stats"][0]
    assert stats["received"] > 100 and stats["budget_exhausted"] > 10, (stats, info.get("sent"))
    held = max(info["wakeups"])
    print(
        f"flood: {info.get('sent')} sent, {stats['received']} handled, longest wake-up {held * 1000:.1f} ms CPU, "
        f"worst timer lateness {max(info['late']) * 1000:.1f} ms"
    )
    assert held < 10 * RECEIVE_BUDGET, f"one wake-up held the loop {held * 1000:.0f} ms of CPU"
    assert info["rcvbuf"] >= RECEIVE_BUFFER


def test_one_wake_up_reads_at_most_receive_batch_datagrams(monkeypatch):
    """However cheap the datagrams and long the time budget, one wake-up of the reader takes
    at most RECEIVE_BATCH of them; the rest wait for the next wake-up (loopback UDP)."""
    from types import SimpleNamespace

    from ha import media as media_module

    monkeypatch.setattr(media_module, "RECEIVE_BUDGET", 60.0)  # only the count ends a wake-up here
    batch = media_module.RECEIVE_BATCH
    got: list[bytes] = []
    media = Media([], lambda data, src: got.append(data))
    ms = SimpleNamespace(peer_socks={}, seen_before=lambda data: False, received=0, budget_exhausted=0, medium=None)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        rx.bind(("127.0.0.1", 0))
        rx.setblocking(False)
        for i in range(3 * batch):
            tx.sendto(b"datagram %d" % i, rx.getsockname())
        media._readable(ms, rx, True)
        assert len(got) == ms.received == batch
        media._readable(ms, rx, True)
        assert len(got) == 2 * batch and got[batch] == b"datagram %d" % batch


def test_a_learned_peer_has_a_receive_queue_of_its_own(pair):
    """After `learn_peer`, the peer's broadcasts come once, through a socket connected
    to it, and a queue filled by another sender does not hold them back."""
    a, b = pair
    got: list[tuple[bytes, str]] = []
    info: dict = {}

    async def receiver() -> None:
        media = Media([Medium("bcast", "b0", port=PORT)], lambda data, src: got.append((data, src)))
        await media.start()
        media.sockets[0].sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # easy to fill
        peer = N.socket_in_netns(a, socket.AF_INET, socket.SOCK_DGRAM)
        other = N.socket_in_netns(a, socket.AF_INET, socket.SOCK_DGRAM)
        for s in (peer, other):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        peer.bind((A_ADDR, 6940))
        media.learn_peer(f"{A_ADDR}:6940")
        info["stats"] = media.stats()
        for i in range(200):  # fill the medium's own queue while the loop is not reading
            other.sendto(b"flood %d" % i, (BRD, PORT))
        for i in range(5):
            peer.sendto(b"peer %d" % i, (BRD, PORT))
        await asyncio.sleep(0.5)
        media.close()
        peer.close()
        other.close()

    rx = run_in(b, receiver)
    rx.join(15)
    assert rx.error is None, rx.error
    assert info["stats"][0]["peer_sources"] == [f"{A_ADDR}:6940"]
    from_peer = [d for d, src in got if src == f"{A_ADDR}:6940"]
    assert from_peer == [b"peer %d" % i for i in range(5)]  # all, once each, in order
    flood = [d for d, src in got if d.startswith(b"flood")]
    assert 0 < len(flood) < 200  # the small queue did overflow: the peer's were not behind it


def test_a_peer_learned_with_datagrams_queued_loses_none_and_duplicates_none(pair):
    """Datagrams of the peer already queued on the shared socket when its own socket opens
    are delivered, and each broadcast that reaches both sockets is delivered once."""
    a, b = pair
    got: list[tuple[bytes, str]] = []

    async def receiver() -> None:
        media = Media([Medium("bcast", "b0", port=PORT)], lambda data, src: got.append((data, src)))
        await media.start()  # the loop reads nothing before the first await below
        peer = N.socket_in_netns(a, socket.AF_INET, socket.SOCK_DGRAM)
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        peer.bind((A_ADDR, 6941))
        for i in range(3):
            peer.sendto(b"queued %d" % i, (BRD, PORT))
        time.sleep(0.2)  # they are in the shared socket's queue
        media.learn_peer(f"{A_ADDR}:6941")
        for i in range(3):
            peer.sendto(b"after %d" % i, (BRD, PORT))
        await asyncio.sleep(0.5)
        info["after"] = media.stats()[0]["copies_dropped"]
        for _ in range(100):  # one datagram over and over (a replay under the peer's address)
            peer.sendto(b"again", (BRD, PORT))
        await asyncio.sleep(0.5)
        info["again"] = media.stats()[0]["copies_dropped"]
        media.close()
        peer.close()

    info: dict = {}
    rx = run_in(b, receiver)
    rx.join(15)
    assert rx.error is None, rx.error
    from_peer = sorted(d for d, src in got if src == f"{A_ADDR}:6941")
    assert from_peer == sorted([b"queued %d" % i for i in range(3)] + [b"again"] + [b"after %d" % i for i in range(3)])
    # each broadcast after learn_peer reached both sockets: one copy dropped each; the repeated
    # datagram, delivered once, is counted 199 times (it was invisible in status before)
    assert (info["after"], info["again"]) == (3, 3 + 199), info
