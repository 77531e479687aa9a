"""Shared check timers (checks/timers.py): wake-ups and time limits, one loop timer per tick."""

from __future__ import annotations

import asyncio

import pytest

from checks.base import CheckTarget, run_check
from checks.engine import HealthEngine
from checks.spec import CheckSpec
from checks.timers import DEADLINE_TICK, Deadlines, WakeUps, deadlines_for


def counting_timers(loop: asyncio.AbstractEventLoop) -> list[float]:
    """Count the loop's timers from now on: returns the list every ``call_at``/``call_later``
    appends its due time to (asyncio's ``call_later`` goes through ``call_at``)."""
    calls: list[float] = []
    call_at = loop.call_at

    def counted(when, callback, *args, context=None):
        calls.append(when)
        return call_at(when, callback, *args, context=context)

    loop.call_at = counted  # type: ignore[method-assign]
    return calls


def test_wake_ups_in_one_tick_share_one_timer_and_come_on_time():
    async def main():
        loop = asyncio.get_running_loop()
        wake_ups = WakeUps(loop)
        timers = counting_timers(loop)
        due = loop.time() + 0.05
        woke: list[float] = []

        async def sleeper(when):
            await wake_ups.at(when)
            woke.append(loop.time())

        await asyncio.gather(*(sleeper(due) for _ in range(50)), sleeper(due + 0.1))
        return due, woke, timers

    due, woke, timers = asyncio.run(main())
    assert len(timers) == 2  # one for the 50 due together, one for the last
    assert len(woke) == 51
    assert all(due <= t < due + 0.1 for t in woke[:50])
    assert woke[50] >= due + 0.1


def test_cancelling_one_wake_up_leaves_the_others_waiting():
    async def main():
        loop = asyncio.get_running_loop()
        wake_ups = WakeUps(loop)
        due = loop.time() + 0.05
        first = loop.create_task(asyncio.wait_for(wake_ups.at(due), 1))
        second = loop.create_task(asyncio.wait_for(wake_ups.at(due), 1))
        await asyncio.sleep(0)
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        await second
        return first.cancelled(), second.done() and not second.cancelled()

    assert asyncio.run(main()) == (True, True)


def test_a_wake_up_in_the_past_comes_at_the_next_iteration():
    async def main():
        loop = asyncio.get_running_loop()
        start = loop.time()
        await WakeUps(loop).at(start - 5)
        return loop.time() - start

    assert asyncio.run(main()) < 0.05


def test_deadline_cancels_the_task_and_end_says_it_was_the_limit():
    async def main():
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        tasks = deadlines_for(loop).add(task, 0.05)
        start = loop.time()
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            limit = Deadlines.end(tasks, task)
        finally:
            Deadlines.end(tasks, task)
        took = loop.time() - start
        await asyncio.sleep(0.01)  # no cancel request is left pending on the task
        return limit, took, task.cancelling()

    limit, took, cancelling = asyncio.run(main())
    assert limit is True
    assert 0.05 <= took < 0.05 + DEADLINE_TICK + 0.1
    assert cancelling == 0


async def limited_sleeper(timeout: float, out: list[bool]) -> None:
    """Sleep 10 s under a time limit of ``timeout`` s; on cancellation, append what
    `Deadlines.end` says (was it the limit alone?) to ``out`` and let the cancellation go on."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    tasks = deadlines_for(loop).add(task, timeout)
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        out.append(Deadlines.end(tasks, task))
        raise
    finally:
        Deadlines.end(tasks, task)


def test_an_outside_cancel_is_not_taken_for_the_limit():
    async def main():
        out: list[bool] = []
        task = asyncio.get_running_loop().create_task(limited_sleeper(5.0, out))
        await asyncio.sleep(0)  # the sleeper has its limit
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return out

    assert asyncio.run(main()) == [False]


def test_an_outside_cancel_at_the_limit_still_propagates():
    async def main():
        out: list[bool] = []
        loop = asyncio.get_running_loop()
        task = loop.create_task(limited_sleeper(0.02, out))
        await asyncio.sleep(0)  # the sleeper has its limit
        deadlines = deadlines_for(loop)
        for tick in list(deadlines._ticks):  # the limit fires ...
            deadlines._fire(tick)
        task.cancel()  # ... and an outside cancel comes before the task runs again
        with pytest.raises(asyncio.CancelledError):
            await task
        return out

    assert asyncio.run(main()) == [False]


def test_a_task_that_ends_in_time_is_never_cancelled():
    async def main():
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        tasks = deadlines_for(loop).add(task, 0.02)
        Deadlines.end(tasks, task)
        await asyncio.sleep(0.05 + DEADLINE_TICK)  # past the limit: no CancelledError here
        return task.cancelling()

    assert asyncio.run(main()) == 0


def silent_target(port: int, timeout: float, key: int = 0) -> CheckTarget:
    spec = CheckSpec(type="http", timeout=timeout, interval=1.0)
    return CheckTarget(key, f"rs {key}", None, 80, "127.0.0.1", port, spec)


async def silent_server() -> tuple[asyncio.AbstractServer, int]:
    """A server on loopback that accepts and never answers."""

    async def handle(reader, writer):
        try:
            await reader.read()
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_checks_started_together_share_their_time_limit_timers():
    async def main():
        loop = asyncio.get_running_loop()
        server, port = await silent_server()
        async with server:
            timers = counting_timers(loop)
            results = await asyncio.gather(*(run_check(silent_target(port, 0.2, i)) for i in range(40)))
        return results, timers

    results, timers = asyncio.run(main())
    assert all(r.timed_out and not r.ok and r.reason == "timeout after 0.2 s" for r in results)
    assert all(0.2 <= r.duration < 0.2 + DEADLINE_TICK + 0.2 for r in results)
    assert len(timers) <= 3  # 40 checks: one or two ticks of time limits (was one timer a check)


def test_engine_checks_due_together_share_their_wake_up_timers():
    async def main():
        loop = asyncio.get_running_loop()
        server, port = await silent_server()
        async with server:
            engine = HealthEngine(lambda t: None, log_transitions=False)
            spec = CheckSpec(type="tcp", timeout=0.5, interval=0.2)
            engine.update({i: CheckTarget(i, f"rs {i}", None, 80, "127.0.0.1", port, spec) for i in range(40)})
            await engine.start()
            await asyncio.sleep(0.1)  # past the first checks (spread over 0.2 s in 4 batches)
            timers = counting_timers(loop)
            await asyncio.sleep(0.4)
            await engine.stop()
            checks = sum(s.checks for s in engine.status().values())
        return timers, checks

    timers, checks = asyncio.run(main())
    assert checks >= 80  # every target checked about every 0.2 s
    # 40 targets in 4 batches, each batch checked two or three times: a wake-up timer and one or
    # two time-limit timers (a batch's checks may start across a tick) per batch and round, and
    # the admission probe's; one timer per check and per time limit would be about 160
    assert len(timers) <= 60, len(timers)
