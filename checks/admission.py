"""Admission control: how many checks may be in flight when the checker runs short of CPU.

A check is cheap in wall time but not in CPU (a TCP handshake, an HTTP request
and response: about 0.1 ms of CPU on a server, ten times that or more in an
emulated guest).  When the checks due each second need more CPU
than the checker has, its event loop falls behind: responses sit unread in
socket buffers while the loop works through its backlog, and checks that
would have passed hit their timeout.  Without a limit that feeds itself:
failed checks are retried after ``retry_interval``, which adds load, and in
the end every real server flaps.  Measured on a host with the checker held to
0.12 of a core (cgroup ``cpu.cfs_quota_us``): 200 real servers at 1 s, 0 to
77 of them up after 20 s, depending on the event loop.

The cure is to start fewer checks, not to let them fail: `Gate` caps the
checks in flight, and `next_limit` adapts the cap to the lateness of the
event loop (additive increase while the loop is on time, multiplicative
decrease when it is late, as TCP congestion control does; from a small cap at
start, `START_LIMIT`).  Checks beyond
the cap wait for a slot *before* they start, so their timeout has not begun;
under overload each real server is simply checked less often, and a check's
verdict stays about the real server.  The engine (`checks.engine`) probes the
lateness every `PROBE_INTERVAL` seconds and logs when the cap starts to bind
and when it no longer does.
"""

from __future__ import annotations

import asyncio
from collections import deque

__all__ = ["Gate", "next_limit", "PROBE_INTERVAL", "OVERLOAD_LAG", "MIN_LIMIT", "MAX_LIMIT", "START_LIMIT"]

#: Seconds between two probes of the event loop's lateness.
PROBE_INTERVAL = 0.05

#: Lateness of the probe (seconds) from which the loop counts as overloaded.
OVERLOAD_LAG = 0.1

#: The cap never goes below this many checks in flight.
MIN_LIMIT = 4

#: The cap when the loop is on time (effectively none: each check is one socket).
MAX_LIMIT = 65536

#: The cap when the engine starts: it doubles every on-time probe (65,536 within 0.6 s), so a
#: start with thousands of real servers cannot swamp a slow checker before the first probe.
START_LIMIT = 32


def next_limit(limit: int, in_flight: int, lag: float) -> int:
    """The cap on checks in flight after one probe (pure).

    Args:
        limit: the cap now.
        in_flight: checks in flight now.
        lag: how late the probe woke, seconds.

    Returns:
        When ``lag`` exceeds `OVERLOAD_LAG`: half of ``min(limit, in_flight)``
        (never below `MIN_LIMIT`).  Otherwise, up to `MAX_LIMIT`: twice the cap
        while it does not bind (less than half of it in flight), else a quarter
        more (at least 4).  Like TCP's slow start and congestion avoidance.
    """
    if lag > OVERLOAD_LAG:
        return max(MIN_LIMIT, min(limit, in_flight) // 2)
    if 2 * in_flight < limit:
        return min(MAX_LIMIT, 2 * limit)
    return min(MAX_LIMIT, limit + max(4, limit // 4))


class Gate:
    """A counting gate whose limit can change: `acquire` waits (first come, first served)
    while ``limit`` checks are in flight; `release` frees a slot.  Loop-bound, not thread-safe."""

    def __init__(self, limit: int = MAX_LIMIT) -> None:
        self.limit = limit
        self.in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._busy: asyncio.Future[None] | None = None  # resolved by the next acquire

    async def wait_busy(self) -> None:
        """Return at once when a check is in flight or waiting, else at the next `acquire`."""
        if self.in_flight or self._waiters:
            return
        if self._busy is None or self._busy.done():
            self._busy = asyncio.get_running_loop().create_future()
        await self._busy

    @property
    def waiting(self) -> int:
        """Checks waiting for a slot."""
        return sum(1 for f in self._waiters if not f.done())

    def try_acquire(self) -> bool:
        """Take a slot if one is free and nobody waits for one: `acquire` without waiting.
        Returns whether a slot was taken."""
        if self._busy is not None:
            if not self._busy.done():
                self._busy.set_result(None)
            self._busy = None
        if self.in_flight < self.limit and not self._waiters:
            self.in_flight += 1
            return True
        return False

    async def acquire(self) -> None:
        """Take a slot, waiting for one if need be.

        Raises:
            asyncio.CancelledError: cancelled while waiting (no slot is kept).
        """
        if self.try_acquire():
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # a slot was handed over just as we were cancelled
            else:
                try:
                    self._waiters.remove(future)
                except ValueError:
                    pass
            raise

    def release(self) -> None:
        """Give a slot back; the longest waiter (if any) gets it."""
        self.in_flight -= 1
        self._wake()

    def set_limit(self, limit: int) -> None:
        """Change the limit; a higher one lets waiters in at once (checks in flight are never stopped)."""
        self.limit = limit
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self.limit:
            future = self._waiters.popleft()
            if not future.done():
                self.in_flight += 1
                future.set_result(None)
