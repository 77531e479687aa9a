"""The health-check engine: rise/fall logic, scheduling, target updates, lifecycle."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import defaultdict
from itertools import pairwise

import pytest

from checks.base import CheckResult, CheckTarget
from checks.engine import (
    CHECK_DURATION_BUCKETS,
    HealthEngine,
    HealthStatus,
    Transition,
    apply_result,
    next_delay,
    pending,
    spread_offsets,
)
from checks.spec import CheckSpec

# --- helpers ----------------------------------------------------------------


def target(key: str, spec: CheckSpec | None = None, *, rip: str = "127.0.0.1", port: int = 80) -> CheckTarget:
    spec = spec or CheckSpec(type="tcp", interval=0.01, timeout=0.5)
    return CheckTarget(key=key, name=f"rs {rip}:{port} of {key}", vip="192.168.10.100", vport=80,
                       rip=rip, rport=port, spec=spec)  # fmt: skip


def res(ok: bool, reason: str | None = None) -> CheckResult:
    return CheckResult(ok, reason or ("fake ok" if ok else "fake fail"), 0.0, time.monotonic())


async def wait_until(predicate, timeout: float = 5.0, step: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(step)


class Scripted:
    """A fake runner: plays a list of outcomes per key, then parks forever."""

    def __init__(self, outcomes: dict[str, list[bool]] | None = None) -> None:
        self.outcomes = {k: list(v) for k, v in (outcomes or {}).items()}
        self.calls: dict[str, int] = defaultdict(int)
        self.starts: dict[str, list[float]] = defaultdict(list)

    def exhausted(self, key: str) -> bool:
        return not self.outcomes[key]

    async def __call__(self, t: CheckTarget, session) -> CheckResult:
        self.calls[t.key] += 1
        self.starts[t.key].append(time.monotonic())
        seq = self.outcomes.get(t.key)
        if not seq:
            await asyncio.Event().wait()
        return res(seq.pop(0))


class Recorder:
    def __init__(self) -> None:
        self.transitions: list[Transition] = []

    def __call__(self, tr: Transition) -> None:
        self.transitions.append(tr)

    def summary(self, key: str | None = None) -> list[tuple[str, str, str]]:
        return [(t.old, t.new, t.reason) for t in self.transitions if key is None or t.key == key]


@pytest.fixture
async def engine_factory():
    engines: list[HealthEngine] = []

    def make(runner=None, on_transition=None, **kw) -> tuple[HealthEngine, Recorder]:
        rec = Recorder()
        eng = HealthEngine(on_transition or rec, runner=runner, **kw)
        engines.append(eng)
        return eng, rec

    yield make
    for eng in engines:
        await eng.stop()


# --- apply_result (pure) ------------------------------------------------------------


def fold(outcomes: list[bool], rise: int, fall: int) -> tuple[HealthStatus, list[tuple[str, str]]]:
    status = HealthStatus(state="unknown", since=0.0)
    changes = []
    for i, ok in enumerate(outcomes, 1):
        old = status.state
        status, reason = apply_result(status, res(ok), rise=rise, fall=fall, now=float(i))
        if reason is not None:
            changes.append((f"{old}->{status.state}@{i}", reason))
    return status, changes


def test_first_result_decides_up():
    status, changes = fold([True], rise=5, fall=5)
    assert status.state == "up" and status.since == 1.0
    assert changes == [("unknown->up@1", "fake ok (first check)")]


def test_first_result_decides_down():
    status, changes = fold([False], rise=5, fall=5)
    assert status.state == "down"
    assert changes == [("unknown->down@1", "fake fail (first check)")]


def test_fall_counts_consecutive_failures_exactly():
    status, changes = fold([True, False, False, True, False, False, False], rise=2, fall=3)
    assert changes == [
        ("unknown->up@1", "fake ok (first check)"),
        ("up->down@7", "fake fail after 3 failures"),
    ]
    assert (status.failures, status.successes, status.checks, status.since) == (3, 0, 7, 7.0)


def test_rise_counts_consecutive_successes_exactly():
    status, changes = fold([False, True, True, False, True, True, True, True], rise=3, fall=1)
    assert changes == [
        ("unknown->down@1", "fake fail (first check)"),
        ("down->up@7", "fake ok after 3 successes"),
    ]
    assert (status.state, status.successes, status.failures, status.checks) == ("up", 4, 0, 8)


def test_singular_reason_and_no_change_keeps_since():
    status, changes = fold([True, True, False], rise=1, fall=1)
    assert changes[-1] == ("up->down@3", "fake fail after 1 failure")
    status, reason = apply_result(status, res(False), rise=1, fall=1, now=99.0)
    assert reason is None and status.since == 3.0 and status.failures == 2


def test_rise_fall_below_one_count_as_one():
    _status, changes = fold([True, False, True], rise=0, fall=0)
    assert [c[0] for c in changes] == ["unknown->up@1", "up->down@2", "down->up@3"]


# --- cumulative counters and the duration histogram (apply_result, pure) ------------------------


def timed(ok: bool, duration: float, *, timed_out: bool = False) -> CheckResult:
    return CheckResult(ok, "fake ok" if ok else "fake fail", duration, 0.0, timed_out)


def test_check_duration_bounds_are_seconds_ascending():
    assert CHECK_DURATION_BUCKETS == (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
    assert list(CHECK_DURATION_BUCKETS) == sorted(set(CHECK_DURATION_BUCKETS))


def test_a_new_status_counts_nothing_in_every_bucket():
    status = HealthStatus(state="unknown", since=0.0)
    assert (status.passed_checks, status.failed_checks, status.timed_out_checks, status.duration_sum) == (0, 0, 0, 0.0)
    assert status.duration_buckets == (0,) * len(CHECK_DURATION_BUCKETS)


def test_counters_and_duration_histogram_after_known_results():
    """Passed, failed (not by the time limit) and timed-out checks are counted apart and sum to
    ``checks``; the histogram is cumulative (Prometheus ``le``): a duration equal to a bound
    (0.5, 1, 10 s) counts in that bound's bucket, one past the last bound (12 s) only in +Inf
    (``checks``).  The durations are binary fractions, so their sum is exact."""
    sequence = [
        timed(True, 2**-10),  # 0.0009765625 s: every bucket
        timed(True, 0.5),  # exactly the bound 0.5
        timed(False, 0.03125),  # a refusal, say: from the bound 0.05 on
        timed(False, 2.0, timed_out=True),  # from 2.5 on
        timed(False, 12.0, timed_out=True),  # past 10 s: +Inf only
        timed(True, 1.0),  # exactly the bound 1
        timed(False, 10.0),  # exactly the last bound
    ]
    status = HealthStatus(state="unknown", since=0.0)
    for i, result in enumerate(sequence, 1):
        status, _ = apply_result(status, result, rise=1, fall=1, now=float(i))
    assert (status.checks, status.passed_checks, status.failed_checks, status.timed_out_checks) == (7, 3, 2, 2)
    assert status.duration_sum == 25.5322265625
    #                                0.001 .0025 .005 .01 .025 .05 .1 .25 .5  1 2.5  5 10
    assert status.duration_buckets == (1, 1, 1, 1, 1, 2, 2, 2, 3, 4, 5, 5, 6)
    # rise/fall counting is unchanged by it
    assert (status.state, status.successes, status.failures, status.since) == ("down", 0, 1, 7.0)


def test_a_status_built_without_buckets_still_folds_into_every_bucket():
    """A status built with ``duration_buckets=()`` (by hand, an older caller) starts from zeros."""
    status, _ = apply_result(
        HealthStatus(state="up", since=0.0, duration_buckets=()), timed(True, 0.02), rise=1, fall=1, now=1.0
    )
    assert status.duration_buckets == (0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1)
    assert (status.checks, status.passed_checks, status.duration_sum) == (1, 1, 0.02)


def test_an_ok_result_is_passed_whatever_its_timed_out_says():
    status, _ = apply_result(
        HealthStatus(state="up", since=0.0), timed(True, 0.0, timed_out=True), rise=1, fall=1, now=1.0
    )
    assert (status.passed_checks, status.failed_checks, status.timed_out_checks) == (1, 0, 0)


# --- engine: counting through the real task loop -------------------------------------


async def test_engine_reports_exact_transitions(engine_factory):
    runner = Scripted({"a": [True, False, True, False, False, False, True, True, True]})
    eng, rec = engine_factory(runner)
    spec = CheckSpec(interval=0.01, rise=2, fall=2)
    eng.update({"a": target("a", spec)})
    await eng.start()
    await wait_until(lambda: runner.exhausted("a") and eng.status()["a"].checks == 9)
    assert rec.summary() == [
        ("unknown", "up", "fake ok (first check)"),
        ("up", "down", "fake fail after 2 failures"),
        ("down", "up", "fake ok after 2 successes"),
    ]
    st = eng.status()["a"]
    assert (st.state, st.successes, st.failures, st.checks) == ("up", 3, 0, 9)
    assert st.last_result is not None and st.last_result.ok
    assert rec.transitions[0].name == "rs 127.0.0.1:80 of a"
    assert rec.transitions[1].result.reason == "fake fail"


async def test_first_check_is_immediate_and_decides(engine_factory):
    runner = Scripted({"a": [False]})
    eng, rec = engine_factory(runner)
    await eng.start()
    t0 = time.monotonic()
    eng.update({"a": target("a", CheckSpec(interval=30, rise=5, fall=5))})
    await wait_until(lambda: rec.transitions, timeout=2)
    assert runner.starts["a"][0] - t0 < 1.0  # not after the 30 s interval
    assert rec.summary() == [("unknown", "down", "fake fail (first check)")]


async def test_unknown_before_first_result(engine_factory):
    runner = Scripted({"a": []})  # parks forever in its first check
    eng, _rec = engine_factory(runner, clock=lambda: 42.0)
    eng.update({"a": target("a")})
    assert eng.status() == {"a": HealthStatus(state="unknown", since=42.0)}
    await eng.start()
    await wait_until(lambda: runner.calls["a"] == 1)
    assert eng.status()["a"].state == "unknown"


async def test_transition_logged_at_info(engine_factory, caplog):
    runner = Scripted({"a": [True, False, False]})
    eng, rec = engine_factory(runner)
    caplog.set_level(logging.INFO, logger="directord.checks")
    eng.update({"a": target("a", CheckSpec(interval=0.01, fall=2))})
    await eng.start()
    await wait_until(lambda: len(rec.transitions) == 2)
    messages = [r.getMessage() for r in caplog.records if r.name == "directord.checks"]
    assert messages == [
        "rs 127.0.0.1:80 of a up: fake ok (first check)",
        "rs 127.0.0.1:80 of a down: fake fail after 2 failures",
    ]
    assert all(r.levelno == logging.INFO for r in caplog.records if r.name == "directord.checks")


# --- scheduling ------------------------------------------------------------------


async def test_interval_is_start_to_start(engine_factory):
    """Each check takes 0.2 s; with interval 0.4 s checks start 0.4 s apart, not 0.4 + 0.2 s."""
    starts: list[float] = []
    ends: list[float] = []

    async def takes_a_while(t, session):
        starts.append(time.monotonic())
        await asyncio.sleep(0.2)
        ends.append(time.monotonic())
        return res(True)

    eng, _ = engine_factory(takes_a_while)
    eng.update({"a": target("a", CheckSpec(interval=0.4))})
    await eng.start()
    await wait_until(lambda: len(starts) >= 4)
    assert all(e - s >= 0.19 for s, e in zip(starts, ends)), (starts, ends)  # the checks really took time
    gaps = [b - a for a, b in pairwise(starts)]
    # start to start = the interval (0.4 s); end to start would give 0.6 s
    assert all(0.39 <= g < 0.5 for g in gaps), gaps


def test_spread_offsets_share_out_one_interval():
    assert spread_offsets([]) == []
    assert spread_offsets([1.0]) == [0.0]
    assert spread_offsets([1.0] * 4) == [0.0, 0.25, 0.5, 0.75]
    assert spread_offsets([2.0, 1.0]) == [0.0, 0.5]  # each within its own interval


async def test_targets_that_start_together_are_spread_over_the_interval(engine_factory):
    runner = Scripted({k: [True] * 3 for k in "abcd"})
    eng, _ = engine_factory(runner)
    eng.update({k: target(k, CheckSpec(interval=0.4)) for k in "abcd"})
    t0 = time.monotonic()
    await eng.start()
    await wait_until(lambda: all(runner.calls[k] >= 2 for k in "abcd"))
    firsts = [runner.starts[k][0] - t0 for k in "abcd"]
    assert firsts[0] < 0.05, firsts
    gaps = [b - a for a, b in zip(firsts, firsts[1:])]
    assert all(0.07 <= g <= 0.2 for g in gaps), firsts  # 0.1 s apart, not all at once
    # the start-to-start schedule keeps them apart
    seconds = [runner.starts[k][1] - t0 for k in "abcd"]
    assert all(0.07 <= b - a for a, b in zip(seconds, seconds[1:])), seconds

    # one target added later is checked at once
    runner.outcomes["e"] = [True]
    t1 = time.monotonic()
    eng.update({k: target(k, CheckSpec(interval=0.4)) for k in "abcde"})
    await wait_until(lambda: runner.calls["e"] >= 1)
    assert runner.starts["e"][0] - t1 < 0.05


@pytest.mark.parametrize(
    ("state", "successes", "failures", "delay"),
    [
        ("unknown", 0, 0, 1.0),
        ("up", 3, 0, 1.0),  # steady
        ("up", 0, 1, 0.25),  # a failure while up: fall is counting
        ("down", 0, 4, 1.0),  # steady
        ("down", 1, 0, 0.25),  # a success while down: rise is counting
    ],
)
def test_next_delay_is_the_retry_interval_only_while_a_change_is_pending(state, successes, failures, delay):
    status = HealthStatus(state, 0.0, successes=successes, failures=failures)
    assert pending(status) is (delay == 0.25)
    assert next_delay(status, 1.0, 0.25) == delay
    assert next_delay(status, 0.1, 0.25) == 0.1  # never longer than the interval


async def test_retry_interval_while_rise_or_fall_counts(engine_factory):
    # up, 3 failures (fall 3) -> down, one more failure, 2 successes (rise 2) -> up, one more
    outcomes = [True, False, False, False, False, True, True, True]
    runner = Scripted({"a": list(outcomes)})
    eng, rec = engine_factory(runner)
    eng.update({"a": target("a", CheckSpec(interval=0.3, retry_interval=0.05, rise=2, fall=3))})
    await eng.start()
    await wait_until(lambda: runner.calls["a"] >= len(outcomes))
    gaps = [b - a for a, b in zip(runner.starts["a"], runner.starts["a"][1:])]
    kinds = ["retry" if g < 0.2 else "interval" for g in gaps]
    # after: up(first) | 1st, 2nd failure (pending) | 3rd -> down | failure while down | 1st success (pending)
    # | 2nd -> up
    assert kinds == ["interval", "retry", "retry", "interval", "interval", "retry", "interval"], gaps
    assert all(g >= 0.29 for g, k in zip(gaps, kinds) if k == "interval"), gaps
    assert [t.new for t in rec.transitions] == ["up", "down", "up"]


async def test_slow_check_is_followed_at_once(engine_factory):
    starts: list[float] = []

    async def slow(t, session):
        starts.append(time.monotonic())
        await asyncio.sleep(0.3)
        return res(True)

    eng, _ = engine_factory(slow)
    eng.update({"a": target("a", CheckSpec(interval=0.1))})
    await eng.start()
    await wait_until(lambda: len(starts) >= 3)
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    # start to start = the check's own 0.3 s, not 0.3 + 0.1 s
    assert all(0.29 <= g < 0.39 for g in gaps), gaps


async def test_hung_target_does_not_delay_others(engine_factory):
    stuck = asyncio.Event()
    healthy_ok = True
    healthy_calls = 0

    async def runner(t, session):
        nonlocal healthy_calls
        if t.key.startswith("hung"):
            stuck.set()
            await asyncio.Event().wait()  # never answers
        healthy_calls += 1
        return res(healthy_ok, "HTTP 200" if healthy_ok else "HTTP 503")

    eng, rec = engine_factory(runner)
    spec = CheckSpec(interval=0.1, rise=2, fall=2)
    targets = {f"hung{i}": target(f"hung{i}", spec, port=1000 + i) for i in range(20)}
    targets["good"] = target("good", spec)
    eng.update(targets)
    await eng.start()
    await wait_until(lambda: stuck.is_set() and healthy_calls >= 5, timeout=5)
    healthy_ok = False
    await wait_until(lambda: len(rec.summary("good")) == 2, timeout=5)
    assert rec.summary("good") == [
        ("unknown", "up", "HTTP 200 (first check)"),
        ("up", "down", "HTTP 503 after 2 failures"),
    ]
    assert all(eng.status()[f"hung{i}"].checks == 0 for i in range(20))


async def test_hung_real_server_does_not_delay_real_checks(engine_factory):
    """With the real run_check: a server that never answers, and a healthy one."""
    hung_conns: list[asyncio.StreamWriter] = []
    release = asyncio.Event()
    status = {"code": 200}

    async def hang(reader, writer):
        hung_conns.append(writer)
        await release.wait()
        writer.close()

    async def healthy(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(f"HTTP/1.1 {status['code']} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    hung_srv = await asyncio.start_server(hang, "127.0.0.1", 0)
    good_srv = await asyncio.start_server(healthy, "127.0.0.1", 0)
    hung_port = hung_srv.sockets[0].getsockname()[1]
    good_port = good_srv.sockets[0].getsockname()[1]
    hung_timeout = 12.0  # seconds: far beyond the healthy server's whole detection
    eng, rec = engine_factory()
    try:
        eng.update({
            "hung": target("hung", CheckSpec(type="http", interval=0.1, timeout=hung_timeout), port=hung_port),
            "good": target("good", CheckSpec(type="http", interval=0.1, timeout=1, fall=2), port=good_port),
        })  # fmt: skip
        t0 = time.monotonic()
        await eng.start()
        # the healthy server is checked again and again while the hung check is in flight
        await wait_until(lambda: hung_conns and eng.status()["good"].checks >= 5, timeout=hung_timeout)
        status["code"] = 503
        failing_since = time.monotonic()
        await wait_until(lambda: len(rec.summary("good")) == 2, timeout=hung_timeout)
        detected = time.monotonic()
        assert rec.summary("good") == [
            ("unknown", "up", "HTTP 200 (first check)"),
            ("up", "down", "HTTP 503 after 2 failures"),
        ]
        # down-detection took about interval * fall (0.2 s), not a wait behind the hung check:
        # a checker that ran one check at a time could not have finished before hung_timeout
        assert detected - failing_since < 3.0, detected - failing_since
        assert detected - t0 < hung_timeout / 3, detected - t0
        # the hung check is still in flight: one connection, never answered, never retried
        assert len(hung_conns) == 1
        assert eng.status()["hung"] == HealthStatus(state="unknown", since=eng.status()["hung"].since)
        assert eng.status()["hung"].checks == 0
    finally:
        await eng.stop()
        release.set()
        for srv in (hung_srv, good_srv):
            srv.close()
            await srv.wait_closed()


# --- update --------------------------------------------------------------------------


async def test_unchanged_target_keeps_task_and_state(engine_factory):
    runner = Scripted({"a": [True, True]})
    eng, rec = engine_factory(runner)
    spec = CheckSpec(interval=0.5)
    eng.update({"a": target("a", spec)})
    await eng.start()
    await wait_until(lambda: runner.calls["a"] == 1 and eng.status()["a"].state == "up")
    before = eng.status()["a"]
    eng.update({"a": target("a", CheckSpec(interval=0.5))})  # equal, not identical
    await asyncio.sleep(0.2)
    # a restarted task would have checked again at once
    assert runner.calls["a"] == 1
    assert eng.status()["a"] == before
    assert len(rec.transitions) == 1


async def test_changed_target_restarts_check_but_keeps_state(engine_factory):
    calls: dict[str, int] = defaultdict(int)

    async def runner(t, session):
        calls[t.spec.path] += 1
        ok = t.spec.path == "/a"
        return res(ok, "HTTP 200" if ok else "HTTP 503")

    eng, rec = engine_factory(runner)
    eng.update({"a": target("a", CheckSpec(type="http", path="/a", interval=30, fall=3))})
    await eng.start()
    await wait_until(lambda: eng.status()["a"].state == "up")
    eng.update({"a": target("a", CheckSpec(type="http", path="/b", interval=0.02, fall=3))})
    assert eng.status()["a"].state == "up"  # no flap on reload
    await wait_until(lambda: eng.status()["a"].state == "down")
    assert calls["/a"] == 1  # the old task ended; the new one started at once
    assert rec.summary() == [
        ("unknown", "up", "HTTP 200 (first check)"),
        ("up", "down", "HTTP 503 after 3 failures"),
    ]
    status = eng.status()["a"]  # the cumulative counters went on across the change
    assert status.passed_checks == 1 and status.failed_checks == status.checks - 1 >= 3
    assert status.duration_buckets[0] == status.checks  # the fake checks take 0 s


async def test_changed_port_restarts_check(engine_factory):
    runner = Scripted({"a": [True] * 50})
    eng, _ = engine_factory(runner)
    eng.update({"a": target("a", CheckSpec(interval=30), port=80)})
    await eng.start()
    await wait_until(lambda: runner.calls["a"] == 1)
    eng.update({"a": target("a", CheckSpec(interval=30), port=8080)})
    await wait_until(lambda: runner.calls["a"] == 2, timeout=2)  # at once, not in 30 s
    assert eng.targets()["a"].rport == 8080
    assert eng.status()["a"].state == "up"


async def test_removed_target_stops(engine_factory):
    runner = Scripted({"a": [True] * 1000, "b": [True] * 1000})
    eng, _ = engine_factory(runner)
    eng.update({"a": target("a", CheckSpec(interval=0.02)), "b": target("b", CheckSpec(interval=0.02))})
    await eng.start()
    await wait_until(lambda: runner.calls["a"] >= 2 and runner.calls["b"] >= 2)
    eng.update({"a": target("a", CheckSpec(interval=0.02))})
    await asyncio.sleep(0)
    removed_calls = runner.calls["b"]
    kept_calls = runner.calls["a"]
    await asyncio.sleep(0.2)
    assert runner.calls["b"] == removed_calls
    assert runner.calls["a"] > kept_calls
    assert set(eng.status()) == {"a"}
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "check rs 127.0.0.1:80 of b"]


async def test_readded_target_starts_unknown(engine_factory):
    runner = Scripted({"a": [True, False]})
    eng, rec = engine_factory(runner)
    spec = CheckSpec(interval=30, fall=5)  # one check each: a lone target checks at once
    eng.update({"a": target("a", spec)})
    await eng.start()
    await wait_until(lambda: eng.status()["a"].checks == 1)
    eng.update({})
    eng.update({"a": target("a", spec)})
    await wait_until(lambda: len(rec.transitions) == 2)
    assert rec.summary() == [
        ("unknown", "up", "fake ok (first check)"),
        ("unknown", "down", "fake fail (first check)"),
    ]
    status = eng.status()["a"]  # its counters started again from 0
    assert (status.checks, status.passed_checks, status.failed_checks) == (1, 0, 1)


async def test_real_checks_count_passed_failed_and_timed_out(engine_factory):
    """The default runner against 127.0.0.1: a listener that accepts (TCP passes), a closed port
    (TCP refused: failed, not timed out) and an HTTP server that never answers (its check reaches
    its 0.2 s time limit: timed out, and its durations land past the 0.1 s bound)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)  # never accepts: the kernel completes handshakes, nobody answers
    silent_port = listener.getsockname()[1]
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    refused_port = probe.getsockname()[1]
    probe.close()
    tcp = CheckSpec(type="tcp", interval=0.2, retry_interval=0.2, timeout=0.5, rise=1, fall=1)
    http = CheckSpec(type="http", interval=0.2, retry_interval=0.2, timeout=0.2, rise=1, fall=1)
    eng, rec = engine_factory()
    eng.update(
        {
            "up": target("up", tcp, port=silent_port),
            "refused": target("refused", tcp, port=refused_port),
            "hung": target("hung", http, port=silent_port),
        }
    )
    try:
        await eng.start()
        await wait_until(lambda: all(s.checks >= 2 for s in eng.status().values()), timeout=10)
        status = eng.status()
    finally:
        await eng.stop()
        listener.close()
    up, refused, hung = status["up"], status["refused"], status["hung"]
    assert (up.passed_checks, up.failed_checks, up.timed_out_checks) == (up.checks, 0, 0)
    assert (refused.passed_checks, refused.failed_checks, refused.timed_out_checks) == (0, refused.checks, 0)
    assert (hung.passed_checks, hung.failed_checks, hung.timed_out_checks) == (0, 0, hung.checks)
    assert hung.last_result is not None and hung.last_result.timed_out
    assert [t.result.timed_out for t in rec.transitions if t.key == "hung"] == [True]
    below = CHECK_DURATION_BUCKETS.index(0.1) + 1
    assert hung.duration_buckets[:below] == (0,) * below  # each took its 0.2 s...
    assert hung.duration_buckets[CHECK_DURATION_BUCKETS.index(2.5)] == hung.checks  # ...and not seconds
    assert 0.19 * hung.checks <= hung.duration_sum < 5.0 * hung.checks
    for s in status.values():
        assert s.passed_checks + s.failed_checks + s.timed_out_checks == s.checks
        assert len(s.duration_buckets) == len(CHECK_DURATION_BUCKETS)
        assert list(s.duration_buckets) == sorted(s.duration_buckets) and s.duration_buckets[-1] <= s.checks


# --- robustness and lifecycle ------------------------------------------------------


async def test_callback_exception_does_not_stop_engine(engine_factory, caplog):
    seen: list[Transition] = []

    def bad(tr: Transition) -> None:
        seen.append(tr)
        raise RuntimeError("listener broke")

    runner = Scripted({"a": [True, False, False, True, True]})
    eng, _ = engine_factory(runner, on_transition=bad)
    eng.update({"a": target("a", CheckSpec(interval=0.01, rise=2, fall=2))})
    await eng.start()
    await wait_until(lambda: len(seen) == 3)
    assert [(t.old, t.new) for t in seen] == [("unknown", "up"), ("up", "down"), ("down", "up")]
    assert "transition callback failed" in caplog.text


async def test_runner_exception_counts_as_failure(engine_factory, caplog):
    async def broken(t, session):
        raise ValueError("boom")

    eng, rec = engine_factory(broken)
    eng.update({"a": target("a", CheckSpec(interval=0.01, fall=2))})
    await eng.start()
    await wait_until(lambda: eng.status()["a"].checks >= 3)
    assert rec.summary() == [("unknown", "down", "ValueError: boom (first check)")]


async def test_update_before_start_then_start(engine_factory):
    runner = Scripted({"a": [True]})
    eng, rec = engine_factory(runner)
    eng.update({"a": target("a")})
    await asyncio.sleep(0.05)
    assert runner.calls["a"] == 0 and not eng.running
    await eng.start()
    assert eng.running
    await wait_until(lambda: rec.transitions)
    assert rec.summary() == [("unknown", "up", "fake ok (first check)")]


async def test_stop_leaves_no_pending_tasks(engine_factory):
    parked: list[str] = []
    cleaned: list[str] = []

    async def runner(t, session):
        if eng.status()[t.key].checks == 0:
            return res(True)
        parked.append(t.key)
        try:
            await asyncio.Event().wait()
        finally:  # slow clean-up on cancel, like reaping a killed command
            await asyncio.sleep(0.2 if t.key == "c" else 0.01)
            cleaned.append(t.key)
        return res(True)

    eng, _ = engine_factory(runner)
    eng.update({k: target(k, CheckSpec(interval=0.01)) for k in "abc"})
    await eng.start()
    await wait_until(lambda: sorted(parked) == ["a", "b", "c"])
    # b changes (old task cancelled), c goes away (task cancelled): stop must await those too
    eng.update({"a": target("a", CheckSpec(interval=0.01)), "b": target("b", CheckSpec(interval=0.5))})
    await eng.stop()
    assert sorted(cleaned) == sorted(parked)
    assert not eng.running
    others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert others == []
    assert set(eng.status()) == {"a", "b"}  # states are kept across stop()


async def test_stop_kills_running_external_check(engine_factory, tmp_path):
    pidfile = tmp_path / "pid"
    cmd = tmp_path / "hang.sh"
    cmd.write_text(f"#!/bin/sh\necho $$ > {pidfile}\nexec sleep 30\n")
    cmd.chmod(0o755)
    eng, _ = engine_factory()
    eng.update({"x": target("x", CheckSpec(type="external", command=(str(cmd),), timeout=30))})
    await eng.start()
    await wait_until(lambda: pidfile.exists() and pidfile.read_text().strip())
    pid = int(pidfile.read_text())
    await eng.stop()
    with pytest.raises(ProcessLookupError):  # killed and reaped
        os.kill(pid, 0)
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
