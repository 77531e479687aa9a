"""`wait_for`: wait for a condition by asking again and again, for the tests that watch real
processes (``test_bgp_neighbours.py``, ``test_bgp_daemon.py``). Times are seconds."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float, what: str, step: float = 0.1) -> T:
    """Call ``predicate`` every ``step`` seconds until it returns a true value, and return that
    value. Raises AssertionError naming ``what`` and the last value when none is true within
    ``timeout`` seconds; what ``predicate`` raises goes through."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(step)
    raise AssertionError(f"{what}: not within {timeout} s (last: {last!r})")
