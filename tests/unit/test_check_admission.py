"""Admission control of checks: the AIMD cap (pure), the gate, and the engine under CPU starvation."""

import asyncio
import logging
import time

import pytest

from checks.admission import MAX_LIMIT, MIN_LIMIT, OVERLOAD_LAG, Gate, next_limit
from checks.base import CheckResult, CheckTarget
from checks.engine import HealthEngine
from checks.spec import CheckSpec

# --- next_limit -------------------------------------------------------------------------


def test_a_late_loop_halves_what_is_in_flight():
    assert next_limit(MAX_LIMIT, 200, OVERLOAD_LAG + 0.01) == 100
    assert next_limit(40, 200, 0.5) == 20  # the cap, not the backlog, when the cap binds
    assert next_limit(8, 3, 1.0) == MIN_LIMIT  # never below the floor


def test_an_on_time_loop_grows_the_cap_back():
    assert next_limit(40, 40, 0.0) == 50  # binding: a quarter more
    assert next_limit(8, 8, OVERLOAD_LAG) == 12  # at least 4; the threshold itself is on time
    assert next_limit(100, 20, 0.0) == 200  # not binding: doubles
    assert next_limit(40000, 0, 0.0) == MAX_LIMIT
    assert next_limit(MAX_LIMIT, 0, 0.0) == MAX_LIMIT


# --- Gate ---------------------------------------------------------------------------------


async def test_gate_queues_in_order_and_follows_its_limit():
    gate = Gate(limit=2)
    order = []

    async def worker(name):
        await gate.acquire()
        order.append(name)

    await gate.acquire()
    await gate.acquire()
    tasks = [asyncio.create_task(worker(n)) for n in "abc"]
    await asyncio.sleep(0)
    assert order == [] and gate.waiting == 3 and gate.in_flight == 2
    gate.release()
    await asyncio.sleep(0)
    assert order == ["a"] and gate.in_flight == 2
    gate.set_limit(4)  # a higher limit lets waiters in at once
    await asyncio.sleep(0)
    assert order == ["a", "b", "c"] and gate.in_flight == 4 and gate.waiting == 0
    await asyncio.gather(*tasks)
    gate.set_limit(1)  # a lower one stops nothing in flight
    assert gate.in_flight == 4


async def test_a_cancelled_waiter_keeps_no_slot():
    gate = Gate(limit=1)
    await gate.acquire()
    waiter = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert gate.waiting == 0
    # handed a slot and cancelled in the same step: the slot comes back
    waiter = asyncio.create_task(gate.acquire())
    await asyncio.sleep(0)
    gate.release()  # hands the slot to the waiter
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert gate.in_flight == 0
    await gate.acquire()
    assert gate.in_flight == 1


async def test_wait_busy_returns_at_the_next_acquire():
    gate = Gate()
    waiter = asyncio.create_task(gate.wait_busy())
    await asyncio.sleep(0.05)
    assert not waiter.done()  # idle: nothing to wake for
    await gate.acquire()
    await asyncio.sleep(0)
    assert waiter.done()
    await asyncio.wait_for(gate.wait_busy(), 0.1)  # a check in flight: at once
    gate.release()
    waiter = asyncio.create_task(gate.wait_busy())
    await asyncio.sleep(0)
    waiter.cancel()  # a cancelled wait leaves the gate usable
    await asyncio.gather(waiter, return_exceptions=True)
    again = asyncio.create_task(gate.wait_busy())
    await asyncio.sleep(0)
    await gate.acquire()
    await asyncio.wait_for(again, 0.1)


async def test_an_idle_engine_stops_probing_the_loop(monkeypatch):
    import checks.engine

    probes = []
    real = checks.engine.next_limit
    monkeypatch.setattr(checks.engine, "next_limit", lambda *a: probes.append(a) or real(*a))
    engine = HealthEngine(lambda t: None, log_transitions=False)
    await engine.start()
    try:
        for _ in range(100):  # the cap grows from its start value to no cap, then the probe rests
            if engine.check_limit is None:
                break
            await asyncio.sleep(0.05)
        assert engine.check_limit is None
        before = len(probes)
        await asyncio.sleep(0.5)
        assert len(probes) == before
    finally:
        await engine.stop()


# --- the engine short of CPU ------------------------------------------------------------------


async def test_a_starved_engine_checks_less_often_instead_of_failing():
    """Each check burns 4 ms of CPU (blocking the loop) and then waits 50 ms for its "response",
    which it must get within the timeout measured from its start, as a real check would.
    200 targets every 0.2 s ask for 4 s of CPU per second: without admission control the loop
    falls behind, responses come late and checks time out; with it, none fails."""
    timeout = 0.4
    failures = []

    async def starving_runner(target, session):
        loop = asyncio.get_running_loop()
        start = loop.time()
        t = time.perf_counter()
        while time.perf_counter() - t < 0.004:
            pass
        await asyncio.sleep(0.05)
        took = loop.time() - start
        ok = took <= timeout
        if not ok:
            failures.append(took)
        return CheckResult(ok, "ok" if ok else f"late {took:.2f}", took, time.monotonic())

    spec = CheckSpec(type="tcp", interval=0.2, retry_interval=0.2, timeout=timeout, rise=1, fall=1)
    engine = HealthEngine(lambda t: None, runner=starving_runner, log_transitions=False)
    engine.update({i: CheckTarget(i, f"rs {i}", None, 0, "127.0.0.1", 1, spec) for i in range(200)})
    await engine.start()
    try:
        await asyncio.sleep(3.0)
        limited = engine.check_limit
        status = engine.status()
    finally:
        await engine.stop()
    checks = sum(s.checks for s in status.values())
    assert len(failures) <= 0.01 * checks, (len(failures), checks)
    assert checks > 200  # everybody was checked, at a rate the CPU allows
    assert limited is not None and limited < 200  # because the cap binds
    assert all(s.state == "up" for s in status.values() if s.checks)


async def test_the_engine_reports_falling_behind_and_catching_up_to_on_load(caplog):
    """A check that blocks the loop for 0.3 s makes the next probe wake late: the engine reports
    a `Load` that is behind (with the cap it sets), then one that has caught up once the cap has
    grown back; with an ``on_load`` callback nothing is logged."""
    blocked = []

    async def blocking_runner(target, session):
        if not blocked:
            blocked.append(True)
            time.sleep(0.3)  # the whole loop stops, as a CPU-starved checker's does
        await asyncio.sleep(0.05)
        return CheckResult(True, "ok", 0.05, time.monotonic())

    loads = []
    spec = CheckSpec(type="tcp", interval=0.1, retry_interval=0.1, timeout=1, rise=1, fall=1)
    engine = HealthEngine(lambda t: None, runner=blocking_runner, log_transitions=False, on_load=loads.append)
    engine.update({i: CheckTarget(i, f"rs {i}", None, 0, "127.0.0.1", 1, spec) for i in range(4)})
    caplog.set_level(logging.WARNING, logger="directord.checks")
    await engine.start()
    try:
        for _ in range(100):
            if len(loads) >= 2:
                break
            await asyncio.sleep(0.05)
    finally:
        await engine.stop()
    behind, caught_up = loads[:2]
    assert behind.behind and 0.2 < behind.late < 1.0 and behind.limit is not None and behind.limit >= MIN_LIMIT
    assert str(behind).startswith(f"checks are falling behind (event loop {behind.late * 1e3:.0f} ms late")
    assert not caught_up.behind and caught_up.limit is None
    assert str(caught_up) == "checks caught up: no limit on checks in flight"
    assert "falling behind" not in caplog.text
