"""The checker process: the frame codec, and a real checker child on loopback (TCP checks)."""

import asyncio
import contextlib
import gc
import json
import logging
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from checks.base import CheckResult, CheckTarget
from checks.engine import CHECK_DURATION_BUCKETS, HealthEngine, HealthStatus
from checks.process import (
    _BOOTSTRAP,
    LOG_FORMAT,
    LOOP_ENV,
    MAX_FRAME,
    SNAPSHOT_CHUNK,
    CheckerProcess,
    FrameError,
    encode_frame,
    read_frame,
)
from checks.spec import CheckSpec
from director.cli import LOG_FORMAT as DIRECTOR_LOG_FORMAT

FAST = CheckSpec(type="tcp", interval=0.1, retry_interval=0.1, timeout=0.5, rise=1, fall=1)


# --- frames ------------------------------------------------------------------------


def reader_of(data: bytes, eof: bool = True) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return reader


def test_frame_is_a_big_endian_length_then_the_pickle():
    message = ("snapshot", 7)
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    assert encode_frame(message) == struct.pack(">I", len(body)) + body


async def test_frames_round_trip_back_to_back():
    target = CheckTarget(3, "rs 10.0.0.2:80 of web", "10.0.0.1", 80, "10.0.0.2", 80, FAST)
    reader = reader_of(encode_frame(("update", {3: target})) + encode_frame(("stop",)))
    assert await read_frame(reader) == ("update", {3: target})
    assert await read_frame(reader) == ("stop",)
    with pytest.raises(asyncio.IncompleteReadError) as err:
        await read_frame(reader)
    assert err.value.partial == b""


async def test_bad_frames_raise_frame_error():
    with pytest.raises(FrameError, match="exceeds"):
        await read_frame(reader_of(struct.pack(">I", MAX_FRAME + 1)))
    with pytest.raises(FrameError, match="does not unpickle"):
        await read_frame(reader_of(struct.pack(">I", 3) + b"xyz"))
    body = pickle.dumps([1, 2])
    with pytest.raises(FrameError, match="not a message tuple: list"):
        await read_frame(reader_of(struct.pack(">I", len(body)) + body))
    with pytest.raises(asyncio.IncompleteReadError):  # cut inside the body
        await read_frame(reader_of(struct.pack(">I", 10) + b"abc"))


def test_log_format_is_the_directors():
    assert LOG_FORMAT is DIRECTOR_LOG_FORMAT  # one definition, checks.logs


def test_the_child_logs_with_journald_priorities_when_stderr_is_the_journal(tmp_path, monkeypatch):
    from checks.process import child_log_handler

    record = logging.LogRecord("directord.checks", logging.WARNING, __file__, 1, "killed %d", (3,), None)
    with open(tmp_path / "err", "w") as f:
        info = os.fstat(f.fileno())
        monkeypatch.setattr(sys, "stderr", f)
        monkeypatch.setenv("JOURNAL_STREAM", f"{info.st_dev}:{info.st_ino}")
        assert child_log_handler().format(record) == "<4>WARNING directord.checks: killed 3"
        monkeypatch.delenv("JOURNAL_STREAM")
        assert child_log_handler().format(record).endswith(" WARNING directord.checks: killed 3")


async def test_engine_snapshot_is_its_status_and_logging_can_be_left_to_the_caller(caplog):
    async def ok(target, session):
        from checks.base import CheckResult

        return CheckResult(True, "fine", 0.0, 0.0)

    seen = []
    engine = HealthEngine(seen.append, runner=ok, log_transitions=False)
    engine.update({"a": CheckTarget("a", "rs a", None, 0, "127.0.0.1", 1, FAST)})
    caplog.set_level(logging.INFO, logger="directord.checks")
    await engine.start()
    try:
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.01)
        assert [t.new for t in seen] == ["up"]
        assert await engine.snapshot() == engine.status()
        assert "rs a up" not in caplog.text
    finally:
        await engine.stop()


# --- a real child --------------------------------------------------------------------


@pytest.fixture
def ports():
    """(listening port, refused port) on 127.0.0.1."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    refused = probe.getsockname()[1]
    probe.close()
    yield listener.getsockname()[1], refused
    listener.close()


def targets_for(up_port: int, down_port: int) -> dict:
    # the director's keys are tuples of its own model; any hashable crosses the wire as an id
    return {
        ("web", "up"): CheckTarget(("web", "up"), "rs up of web", "127.0.0.100", 80, "127.0.0.1", up_port, FAST),
        ("web", "down"): CheckTarget(
            ("web", "down"), "rs down of web", "127.0.0.100", 80, "127.0.0.1", down_port, FAST
        ),
    }


async def wait_for(predicate, timeout=15.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead too
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # reaped meanwhile: reading its stat gives ESRCH
        return False


BOTH = {("web", "up"): "up", ("web", "down"): "down"}


@contextlib.asynccontextmanager
async def settled_checker(ports, **kwargs):
    """A started `CheckerProcess` on `targets_for` both ports, once both first results are in;
    yields ``(checker, transitions seen)`` and stops it afterwards."""
    seen = []
    checker = CheckerProcess(seen.append, **kwargs)
    checker.update(targets_for(*ports))
    await checker.start()
    try:
        await wait_for(lambda: len(seen) == 2)
        yield checker, seen
    finally:
        await checker.stop()


async def test_child_checks_and_reports_with_the_callers_keys(ports, caplog):
    up_port, down_port = ports
    seen = []
    caplog.set_level(logging.INFO, logger="directord.checks")
    checker = CheckerProcess(seen.append)
    checker.update(targets_for(up_port, down_port))  # before start: sent when the child runs
    await checker.start()
    try:
        pid = checker.pid
        assert pid is not None and pid != os.getpid()
        await wait_for(lambda: len(seen) == 2)
        assert {t.key: t.new for t in seen} == {("web", "up"): "up", ("web", "down"): "down"}
        assert {t.key: t.reason for t in seen}[("web", "down")] == "connection refused (first check)"
        # logged once, by the director's side, in the engine's words
        assert caplog.text.count("rs up of web up: connected (first check)") == 1

        snap = await checker.snapshot()
        assert {k: s.state for k, s in snap.items()} == {("web", "up"): "up", ("web", "down"): "down"}
        assert all(s.checks >= 1 for s in snap.values())

        # a removed key is no longer checked nor reported
        checker.update({k: t for k, t in targets_for(up_port, down_port).items() if k == ("web", "up")})
        snap = await checker.snapshot()
        assert list(snap) == [("web", "up")]
        assert checker.targets() == {("web", "up"): targets_for(up_port, down_port)[("web", "up")]}
    finally:
        await checker.stop()
    assert checker.pid is None
    await wait_for(lambda: not alive(pid), timeout=5)


async def test_a_dead_child_is_replaced_and_gets_the_targets_again(ports, caplog):
    async with settled_checker(ports, restart_delay=0.1) as (checker, seen):
        first = checker.pid
        os.kill(first, signal.SIGKILL)
        await wait_for(lambda: checker.restarts == 1 and checker.pid not in (None, first))
        # the new child starts from "unknown": its first results are reported again
        await wait_for(lambda: len(seen) == 4)
        assert {t.key: t.new for t in seen[2:]} == BOTH
        assert "exited (status -9); starting another" in caplog.text
        snap = await checker.snapshot()
        assert {k: s.state for k, s in snap.items()} == BOTH


async def test_snapshot_falls_back_to_the_transitions_when_the_child_is_gone(ports):
    async with settled_checker(ports, restart_delay=30) as (checker, seen):
        os.kill(checker.pid, signal.SIGKILL)
        await wait_for(lambda: checker.pid is None)
        snap = await checker.snapshot(timeout=1)
        assert {k: s.state for k, s in snap.items()} == BOTH
        assert all(s.checks == 0 and s.last_result is not None for s in snap.values())
        # the fallback counts nothing, in the same shape
        zeros = (0, 0, 0, 0.0, (0,) * len(CHECK_DURATION_BUCKETS))
        assert all(
            (s.passed_checks, s.failed_checks, s.timed_out_checks, s.duration_sum, s.duration_buckets) == zeros
            for s in snap.values()
        )


async def test_check_counters_and_durations_cross_from_the_child(ports):
    """The cumulative counters and the duration histogram of each status survive the snapshot's
    trip from the checker child, as does `CheckResult.timed_out` in transitions: TCP to the
    listener passes, TCP to the closed port fails, HTTP to the listener (which never answers)
    reaches its 0.2 s time limit."""
    up_port, down_port = ports
    http = CheckSpec(type="http", interval=0.2, retry_interval=0.2, timeout=0.2, rise=1, fall=1)
    hung = ("web", "hung")
    targets = targets_for(up_port, down_port)
    targets[hung] = CheckTarget(hung, "rs hung", "127.0.0.100", 80, "127.0.0.1", up_port, http)
    seen = []
    checker = CheckerProcess(seen.append)
    checker.update(targets)
    await checker.start()
    try:
        await wait_for(lambda: len(seen) == 3)
        for _ in range(100):
            snap = await checker.snapshot(timeout=5)
            if all(s.checks >= 2 for s in snap.values()):
                break
            await asyncio.sleep(0.1)
    finally:
        await checker.stop()
    assert {t.key: t.result.timed_out for t in seen} == {("web", "up"): False, ("web", "down"): False, hung: True}
    up, down, slow = snap[("web", "up")], snap[("web", "down")], snap[hung]
    assert up.checks >= 2 and (up.passed_checks, up.failed_checks, up.timed_out_checks) == (up.checks, 0, 0)
    assert down.checks >= 2 and (down.passed_checks, down.failed_checks, down.timed_out_checks) == (0, down.checks, 0)
    assert slow.checks >= 2 and (slow.passed_checks, slow.failed_checks, slow.timed_out_checks) == (0, 0, slow.checks)
    below = CHECK_DURATION_BUCKETS.index(0.1) + 1
    assert slow.duration_buckets[:below] == (0,) * below
    assert slow.duration_buckets[CHECK_DURATION_BUCKETS.index(2.5)] == slow.checks
    assert 0.15 * slow.checks <= slow.duration_sum < 5.0 * slow.checks
    for s in snap.values():
        assert len(s.duration_buckets) == len(CHECK_DURATION_BUCKETS)
        assert list(s.duration_buckets) == sorted(s.duration_buckets) and s.duration_buckets[-1] <= s.checks
    assert up.duration_sum > 0 and down.duration_sum > 0


def busy_status(i: int) -> HealthStatus:
    """A status after a year of checks every second (counters in the tens of millions)."""
    year = 365 * 86400
    result = CheckResult(False, "timeout after 2 s", 2.0004 + i * 1e-7, 1e7 + i, True)
    return HealthStatus(
        "down",
        since=1e7 + i,
        last_result=result,
        failures=3,
        checks=year + i,
        passed_checks=year - 3000 + i,
        failed_checks=2000,
        timed_out_checks=1000,
        duration_sum=year * 0.0021 + i * 1e-3,
        duration_buckets=tuple(year // 20 * k + i for k in range(1, len(CHECK_DURATION_BUCKETS) + 1)),
    )


def test_a_snapshot_of_100000_busy_statuses_fits_the_frames():
    """Every counter in use costs a status at most ~200 bytes in a snapshot frame (`SNAPSHOT_CHUNK`
    statuses, about 50 KB): 100,000 would fit in one frame of `MAX_FRAME` many times over."""
    part = {i: busy_status(i) for i in range(SNAPSHOT_CHUNK)}
    frame = encode_frame(("snapshot", 1, part, True))
    per_status = len(frame) / SNAPSHOT_CHUNK
    print(f"{per_status:.0f} bytes per busy status in a frame of {SNAPSHOT_CHUNK}")
    assert per_status < 256
    assert per_status * 100_000 < MAX_FRAME / 8
    assert pickle.loads(frame[4:])[2] == part


async def test_child_exits_when_the_director_goes_away(ports):
    up_port, down_port = ports
    checker = CheckerProcess(lambda t: None)
    checker.update(targets_for(up_port, down_port))
    await checker.start()
    pid = checker.pid
    try:
        # the director's end of the socket closes without a stop frame (as when it is killed)
        checker._writer.transport.abort()
        await wait_for(lambda: not alive(pid), timeout=10)
    finally:
        await checker.stop()


async def test_child_ignores_sigterm_and_sigint(ports):
    up_port, down_port = ports
    seen = []
    checker = CheckerProcess(seen.append, restart_delay=0.1)
    checker.update(targets_for(up_port, down_port))
    await checker.start()
    try:
        pid = checker.pid
        await wait_for(lambda: len(seen) == 2)  # past the child's start-up (slow on a busy machine)
        os.kill(pid, signal.SIGTERM)
        os.kill(pid, signal.SIGINT)
        await asyncio.sleep(0.5)
        assert alive(pid) and checker.pid == pid and checker.restarts == 0
    finally:
        await checker.stop()
    await wait_for(lambda: not alive(pid), timeout=5)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
async def test_external_checks_run_in_the_child_with_default_signal_dispositions(tmp_path, monkeypatch, loop):
    # the child ignores SIGTERM itself; its external check commands must not inherit that
    # (uvloop's spawn resets every disposition; asyncio's keeps an ignored one)
    monkeypatch.setenv(LOOP_ENV, loop)
    script = tmp_path / "check.sh"
    script.write_text("#!/bin/sh\nkill -TERM $$\nexit 0\n")
    script.chmod(0o755)
    spec = CheckSpec(type="external", interval=0.2, timeout=2.0, rise=1, fall=1, command=(str(script),))
    ok_spec = CheckSpec(type="external", interval=0.2, timeout=2.0, rise=1, fall=1, command=("/bin/true",))
    seen = []
    checker = CheckerProcess(seen.append)
    checker.update(
        {
            "term": CheckTarget("term", "rs term", "10.0.0.1", 80, "10.0.0.2", 80, spec),
            "true": CheckTarget("true", "rs true", "10.0.0.1", 80, "10.0.0.3", 80, ok_spec),
        }
    )
    await checker.start()
    try:
        await wait_for(lambda: len(seen) == 2)
        assert {t.key: t.new for t in seen} == {"term": "down", "true": "up"}
    finally:
        await checker.stop()


async def test_snapshot_does_not_wait_for_a_slow_starting_child(ports, tmp_path):
    # in the emulated test VM the child needs seconds to import aiohttp; `directord status`
    # must not wait for it
    slow = tmp_path / "slow-python"
    slow.write_text(f'#!/bin/sh\nsleep 3\nexec {sys.executable} "$@"\n')
    slow.chmod(0o755)
    seen = []
    checker = CheckerProcess(seen.append, python=str(slow))
    checker.update(targets_for(*ports))
    await checker.start()
    try:
        t = time.monotonic()
        snap = await checker.snapshot()
        assert time.monotonic() - t < 0.5
        assert {k: s.state for k, s in snap.items()} == {k: "unknown" for k in BOTH}
        await wait_for(lambda: len(seen) == 2)
        snap = await checker.snapshot()  # ready now: the child's own counters
        assert {k: s.state for k, s in snap.items()} == BOTH and all(s.checks >= 1 for s in snap.values())
    finally:
        await checker.stop()
    assert await CheckerProcess(seen.append).snapshot() == {}  # nothing to check: nothing to ask


async def test_a_child_still_starting_is_killed_at_once_on_stop(ports, tmp_path, caplog):
    # a quick restart in the emulated VM stopped the daemon while its child was still importing:
    # the stop waited for the import, then for the 5 s timeout, and logged a warning
    slow = tmp_path / "slow-python"
    slow.write_text(f'#!/bin/sh\nsleep 20\nexec {sys.executable} "$@"\n')
    slow.chmod(0o755)
    checker = CheckerProcess(lambda _t: None, python=str(slow))
    checker.update(targets_for(*ports))
    await checker.start()
    await wait_for(lambda: checker.pid is not None)
    pid = checker.pid
    t = time.monotonic()
    await checker.stop(timeout=30)
    assert time.monotonic() - t < 10  # not the 20 s start-up, nor the timeout
    assert not os.path.exists(f"/proc/{pid}")  # killed and reaped
    assert "did not stop" not in caplog.text


async def test_no_child_until_there_is_something_to_check(ports):
    # a director with only an ha section must not pay for a second interpreter
    seen = []
    checker = CheckerProcess(seen.append)
    await checker.start()
    try:
        checker.update({})
        await asyncio.sleep(0.3)
        assert checker.running and checker.pid is None
        checker.update(targets_for(*ports))  # the first targets start the child
        await wait_for(lambda: checker.pid is not None)
        await wait_for(lambda: len(seen) == 2)
        assert {t.key: t.new for t in seen} == BOTH
        pid = checker.pid
    finally:
        await checker.stop()
    assert checker.pid is None
    await wait_for(lambda: not alive(pid), timeout=5)


async def test_child_never_imports_a_checks_package_from_the_working_directory(ports, tmp_path, monkeypatch):
    # the director runs as root; a `checks` package in its working directory must not be run by
    # the checker child (``python -m`` would put the working directory first on the module path)
    evil = tmp_path / "cwd" / "checks"
    evil.mkdir(parents=True)
    marker = tmp_path / "marker"
    payload = f"open({str(marker)!r}, 'a').write(__name__ + '\\n')\n"
    (evil / "__init__.py").write_text(payload)
    (evil / "process.py").write_text(payload)
    # and a module of the standard library the child imports (PYTHONPATH comes before it)
    (evil.parent / "pickle.py").write_text(payload)
    monkeypatch.chdir(evil.parent)
    monkeypatch.setenv("PYTHONPATH", str(evil.parent))
    try:
        async with settled_checker(ports) as (checker, seen):
            assert {t.key: t.new for t in seen} == BOTH  # checks still run
            assert os.readlink(f"/proc/{checker.pid}/cwd") == "/"
    finally:
        assert not marker.exists(), f"imported from the working directory: {marker.read_text()}"


def test_the_childs_entry_point_puts_nothing_before_the_standard_library(tmp_path):
    # the directory of the director's `checks` package (site-packages, or a source tree) is not put
    # on the module path: a module beside the package must not shadow the standard library's
    root = tmp_path / "root"
    (root / "checks").mkdir(parents=True)
    (root / "checks" / "__init__.py").write_text("")
    (root / "checks" / "helper.py").write_text("WHERE = __file__\n")
    (root / "checks" / "process.py").write_text(
        "import json, sys\nfrom checks.helper import WHERE\n"
        "def child_main(argv):\n    print(json.__file__, WHERE, argv)\n    return 0\n"
    )
    (root / "json.py").write_text("raise SystemExit('json.py beside the package was imported')\n")
    result = subprocess.run(
        [sys.executable, "-I", "-c", _BOOTSTRAP, str(root), "7"], cwd="/", capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    stdlib_json, helper, argv = result.stdout.split(" ", 2)
    assert stdlib_json == json.__file__ and helper == str(root / "checks" / "helper.py")
    assert argv.strip() == "['7']"


async def test_a_large_update_is_encoded_off_the_loop(ports):
    """Sending 60,000 targets to the child (copy and pickle: ~0.9 s of CPU here, seconds in a
    slow VM) does not hold the event loop, which also carries the heartbeat: `update` returns
    after the bookkeeping (measured in CPU time of the loop's thread, which a loaded machine
    does not inflate) and the child gets them all."""
    up_port, _ = ports
    slow = CheckSpec(type="tcp", interval=3600.0, timeout=1.0)  # first checks spread over an hour
    checker = CheckerProcess(lambda t: None)
    checker.update({("web", "up"): CheckTarget(("web", "up"), "rs up", "127.0.0.100", 80, "127.0.0.1", up_port, slow)})
    await checker.start()
    try:
        await wait_for(lambda: checker._ready, timeout=30)
        many = {
            ("web", i): CheckTarget(("web", i), f"rs {i}", "127.0.0.100", 80, "127.0.0.1", up_port, slow)
            for i in range(60_000)
        }
        t0 = time.thread_time()
        checker.update(many)
        held = time.thread_time() - t0
        for _ in range(300):
            if len(await checker.snapshot(timeout=5)) == len(many):  # the child has them
                break
            await asyncio.sleep(0.1)
        assert len(await checker.snapshot(timeout=5)) == len(many)
        print(f"update() of {len(many)} targets: {held:.3f} s of CPU on the loop")
        assert held < 0.15, f"update() held the loop {held:.2f} s of CPU"
    finally:
        await checker.stop()


async def test_a_large_snapshot_is_decoded_a_frame_at_a_time(ports):
    """The checker's answer to `snapshot` for 100,000 targets (0.15-0.17 s of CPU to decode in
    one piece here, seconds in a slow VM) crosses in frames of `SNAPSHOT_CHUNK` statuses and
    the loop runs between two. Measured by a 1 ms ticker on the loop as the most CPU time of the
    loop's thread between two ticks (CPU time: a loaded machine does not inflate it): about
    2 ms for a frame, up to 20 ms when a full collection of the statuses received so far falls
    in one step, against 0.15 s or more for one frame of all. The snapshot is whole."""
    up_port, _ = ports
    slow = CheckSpec(type="tcp", interval=3600.0, timeout=1.0)  # first checks spread over an hour
    many = {
        ("web", i): CheckTarget(("web", i), f"rs {i}", "127.0.0.100", 80, "127.0.0.1", up_port, slow)
        for i in range(100_000)
    }
    checker = CheckerProcess(lambda t: None)
    checker.update(many)
    await checker.start()
    try:
        await wait_for(lambda: checker._ready, timeout=30)
        for _ in range(300):
            if len(await checker.snapshot(timeout=30)) == len(many):  # the child has them all
                break
            await asyncio.sleep(0.1)
        longest = 0.0
        last = time.thread_time()

        async def tick() -> None:
            nonlocal longest, last
            while True:
                await asyncio.sleep(0.001)
                now = time.thread_time()
                longest, last = max(longest, now - last), now

        ticker = asyncio.ensure_future(tick())
        await asyncio.sleep(0.01)
        longest = 0.0
        gc.freeze()  # as the daemon's loads freeze its configuration: a full collection skips it
        try:
            snapshot = await checker.snapshot(timeout=30)
            await asyncio.sleep(0.01)  # the ticker's next tick measures the step that ended the read
        finally:
            ticker.cancel()
            gc.unfreeze()
        assert set(snapshot) == set(many)
        print(f"snapshot of {len(many)} targets: loop held at most {longest * 1000:.1f} ms of CPU")
        assert longest < 0.05, f"reading the snapshot held the loop {longest:.3f} s of CPU at once"
    finally:
        await checker.stop()


async def test_a_stopped_child_reports_falling_behind_then_catching_up_to_on_load(ports):
    """SIGSTOP freezes the child for 0.5 s while HTTP checks wait on a server that never answers
    (always one in flight, so the engine's probe of its loop runs): once it runs again it reports
    through a ``load`` frame that it fell behind, then that it caught up."""
    silent_port, _ = ports  # accepts connections, never answers
    spec = CheckSpec(type="http", interval=0.2, retry_interval=0.2, timeout=2, rise=1, fall=1)
    targets = {i: CheckTarget(i, f"rs {i}", "127.0.0.100", 80, "127.0.0.1", silent_port, spec) for i in range(3)}
    loads = []
    checker = CheckerProcess(lambda t: None, on_load=loads.append)
    checker.update(targets)
    await checker.start()
    try:
        await wait_for(lambda: checker._ready)
        await asyncio.sleep(1.0)  # the cap has grown from its start value to none
        assert loads == []
        os.kill(checker.pid, signal.SIGSTOP)
        await asyncio.sleep(0.5)
        os.kill(checker.pid, signal.SIGCONT)
        await wait_for(lambda: len(loads) >= 2, timeout=20)
    finally:
        await checker.stop()
    behind, caught_up = loads[:2]
    assert behind.behind and behind.late > 0.3 and behind.in_flight >= 1
    assert not caught_up.behind


def test_a_checker_started_while_the_sweep_is_held_becomes_a_subreaper_only_once_released():
    """The hook runner starts through a short-lived ``setsid --fork`` with the subreaper flag
    cleared and the sweep held (`hold_sweep`); a checker starting meanwhile must not set the flag
    under it (the runner would become the director's orphan, and the sweep would kill it and the
    daemons its hooks start). Run in a child interpreter: the flag is process-wide."""
    code = (
        "import asyncio\n"
        "from checks.protocols.external import child_subreaper\n"
        "from checks.process import CheckerProcess\n"
        "async def main():\n"
        "    checker = CheckerProcess(lambda t: None, adopt_orphans=True)\n"
        "    with checker.hold_sweep():\n"
        "        await checker.start()\n"
        "        held = child_subreaper()\n"
        "    released = child_subreaper()\n"
        "    await checker.stop()\n"
        "    print(held, released)\n"
        "asyncio.run(main())\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=root)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True"]
