"""Timers shared by many checks: one event-loop timer per tick instead of one per check.

A checker runs thousands of checks a second, and each needs two timers: the wake-up of its
next check (`WakeUps`) and its time limit (`Deadlines`).  An event-loop timer costs more
than the rest of a check's scheduling (on uvloop each is a libuv timer of its own), while
checks come in batches that share their due times (`checks.engine.spread_offsets`).  So the
timers here are shared: every wake-up or time limit that falls in the same tick of the
loop's clock is served by one timer, at the end of that tick.

* `WakeUps`: ``await wake_ups.at(when)`` returns at ``when`` (loop time, seconds) or up to
  `WAKE_TICK` seconds later.  libuv's timers count whole milliseconds anyway, so on uvloop
  this is as precise as ``asyncio.sleep``.
* `Deadlines`: ``deadlines.add(task, timeout)`` cancels ``task`` once ``timeout`` seconds
  have passed, up to `DEADLINE_TICK` seconds later, unless `Deadlines.end` comes first;
  `Deadlines.end` also tells the time limit's cancellation apart from any other.  Like
  ``asyncio.timeout``, but one timer per tick.

Both belong to one event loop and are not thread-safe; `deadlines_for` keeps one
`Deadlines` per thread for the loop running in it.
"""

from __future__ import annotations

import asyncio
import math
import threading

__all__ = ["DEADLINE_TICK", "Deadlines", "WAKE_TICK", "WakeUps", "deadlines_for"]

#: Seconds: wake-ups due within one tick share one timer (`WakeUps`).
WAKE_TICK = 0.001

#: Seconds: time limits that end within one tick share one timer (`Deadlines`); a check may
#: run up to this much past its ``spec.timeout``.
DEADLINE_TICK = 0.01


class WakeUps:
    """Wake-ups of many tasks, one loop timer per `WAKE_TICK` of loop time.

    Args:
        loop: the event loop whose clock (``loop.time()``, seconds) the times are on.
    """

    __slots__ = ("_loop", "_due")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._due: dict[int, list[asyncio.Future[None]]] = {}

    def at(self, when: float) -> asyncio.Future[None]:
        """A future resolved at loop time ``when`` (seconds), or up to `WAKE_TICK` s later.

        Each call gets its own future, so cancelling one waiter leaves the others waiting.
        A time already past resolves at the next iteration of the loop.
        """
        future: asyncio.Future[None] = self._loop.create_future()
        tick = math.ceil(when / WAKE_TICK)
        waiters = self._due.get(tick)
        if waiters is None:
            self._due[tick] = [future]
            self._loop.call_at(tick * WAKE_TICK, self._fire, tick)
        else:
            waiters.append(future)
        return future

    def _fire(self, tick: int) -> None:
        for future in self._due.pop(tick, ()):
            if not future.done():
                future.set_result(None)


class _Tick(set[asyncio.Task[object]]):
    """The tasks whose time limit ends in one tick; ``fired`` once they were cancelled for it."""

    __slots__ = ("fired",)

    def __init__(self) -> None:
        super().__init__()
        self.fired = False


class Deadlines:
    """Time limits of many tasks, one loop timer per `DEADLINE_TICK` of loop time.

    Use::

        tasks = deadlines.add(task, timeout)
        try:
            ...                                    # the work under the time limit
        except asyncio.CancelledError:
            if not Deadlines.end(tasks, task):     # not the limit alone: an outside cancel
                raise
            ...                                    # timed out
        finally:
            Deadlines.end(tasks, task)

    Args:
        loop: the event loop whose clock (``loop.time()``, seconds) the limits are on.
    """

    __slots__ = ("loop", "_ticks")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._ticks: dict[int, _Tick] = {}

    def add(self, task: asyncio.Task[object], timeout: float) -> set[asyncio.Task[object]]:
        """Cancel ``task`` ``timeout`` seconds from now (up to `DEADLINE_TICK` s later) unless it
        is removed from the returned set first (``set.discard(task)``)."""
        tick = math.ceil((self.loop.time() + timeout) / DEADLINE_TICK)
        tasks = self._ticks.get(tick)
        if tasks is None:
            tasks = self._ticks[tick] = _Tick()
            self.loop.call_at(tick * DEADLINE_TICK, self._fire, tick)
        tasks.add(task)
        return tasks

    def _fire(self, tick: int) -> None:
        tasks = self._ticks.pop(tick, None)
        if tasks is None:
            return
        tasks.fired = True
        for task in tasks:
            task.cancel()

    @staticmethod
    def end(tasks: set[asyncio.Task[object]], task: asyncio.Task[object]) -> bool:
        """Take ``task`` off its time limit (``tasks``, from `add`).

        Returns:
            True when the limit had fired and cancelled ``task`` and nothing else cancelled it:
            the cancel request is withdrawn (``Task.uncancel``), and on ``asyncio.CancelledError``
            the caller has timed out.  False otherwise (the limit had not fired, or ``task`` was
            also cancelled from outside, or it was already ended): a ``CancelledError`` must then
            propagate.
        """
        if task not in tasks:
            return False
        tasks.discard(task)
        return isinstance(tasks, _Tick) and tasks.fired and task.uncancel() == 0


_local = threading.local()


def deadlines_for(loop: asyncio.AbstractEventLoop) -> Deadlines:
    """The `Deadlines` of ``loop``, the loop running in this thread (one per thread, replaced when
    the thread runs another loop)."""
    deadlines: Deadlines | None = getattr(_local, "deadlines", None)
    if deadlines is None or deadlines.loop is not loop:
        deadlines = _local.deadlines = Deadlines(loop)
    return deadlines
