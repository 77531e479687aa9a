"""The lab's flooder (`director.lab.flood`), on loopback: what it sends, in what order, how fast."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from director.lab import flood


def receiver() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    s.bind(("127.0.0.1", 0))
    s.settimeout(2.0)
    return s


def drain(s: socket.socket) -> list[bytes]:
    got = []
    s.settimeout(0.2)
    try:
        while True:
            got.append(s.recv(70000))
    except TimeoutError:
        return got


def test_packets_round_trip_through_the_file_and_are_bounded(tmp_path):
    path = tmp_path / "p.json"
    flood.write_packets(path, [b"\x00abc", b"x" * 70000])
    assert flood.load_packets(path) == [b"\x00abc", b"x" * flood.MAX_DATAGRAM]
    flood.write_packets(path, [b"y"] * (flood.MAX_PACKETS + 5))
    assert len(flood.load_packets(path)) == flood.MAX_PACKETS
    for text in ("[]", '{"a": 1}', "[1, 2]"):
        path.write_text(text)
        with pytest.raises(ValueError):
            flood.load_packets(path)


def test_datagrams_go_in_turn_up_to_the_limit():
    rx = receiver()
    try:
        sent, errors = flood.flood([b"a", b"bb", b"ccc"], rx.getsockname(), seconds=10, limit=7)
        assert (sent, errors) == (7, 0)
        assert drain(rx) == [b"a", b"bb", b"ccc", b"a", b"bb", b"ccc", b"a"]
    finally:
        rx.close()


def test_a_rate_is_never_exceeded():
    # 200 a second for 0.5 s: bursts of 4 every 20 ms, so at most 100 plus one burst
    rx = receiver()
    try:
        sent, _ = flood.flood([b"p"], rx.getsockname(), seconds=0.5, rate=200)
        assert 0 < sent <= 104
        assert len(drain(rx)) == sent
    finally:
        rx.close()
    with pytest.raises(ValueError, match="rate"):
        flood.flood([b"p"], ("127.0.0.1", 9), seconds=1, rate=0)


def test_the_command_line_runs_isolated_and_reports(tmp_path):
    rx = receiver()
    path = tmp_path / "p.json"
    flood.write_packets(path, [b"one", b"two"])
    try:
        out = subprocess.run(
            [
                sys.executable,
                "-I",
                flood.__file__,
                "--packets",
                str(path),
                "--dest",
                "127.0.0.1",
                "--port",
                str(rx.getsockname()[1]),
                "--seconds",
                "5",
                "--max",
                "5",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=tmp_path,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["sent", "5", "errors", "0"]
        assert drain(rx) == [b"one", b"two", b"one", b"two", b"one"]
        bad = subprocess.run(
            [
                sys.executable,
                "-I",
                flood.__file__,
                "--packets",
                str(tmp_path / "none"),
                "--dest",
                "127.0.0.1",
                "--seconds",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert bad.returncode == 2 and "none" in bad.stderr
    finally:
        rx.close()


def test_reports_come_every_10_seconds_at_full_speed_too():
    # a clock that advances 1 s a reading: 25 s of flood at full speed must report at 10 and 20 s
    # (the first version reported only at the end when no rate was given)
    now = [0.0]

    def clock() -> float:
        now[0] += 1.0
        return now[0]

    reports: list[tuple[int, int]] = []
    rx = receiver()
    try:
        sent, _ = flood.flood(
            [b"r"], rx.getsockname(), seconds=25, clock=clock, report=lambda s, e: reports.append((s, e))
        )
    finally:
        rx.close()
    assert len(reports) == 2 and 0 < reports[0][0] < reports[1][0] < sent, (reports, sent)
