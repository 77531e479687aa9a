"""The health-check engine: every target checked on its own schedule, on one loop.

Each target gets one asyncio task that runs a check every ``spec.interval``
seconds, start to start (a check that outlasts the interval is followed at
once by the next).  While a state change is pending (a failure while up, a
success while down, rise/fall still counting) the next check is due
``min(spec.retry_interval, spec.interval)`` seconds after the last one
(`next_delay`).  Checks of different targets never wait for one
another, so one hung real server cannot delay the verdict on any other; each
check is itself bounded by ``spec.timeout`` (`checks.base.run_check`).

Targets that start together (all of them at `HealthEngine.start`, the new or
changed ones of one `HealthEngine.update`) do not all check at the same
instant: their first checks are spread over one interval in batches
`SPREAD_TICK` apart (`spread_offsets`).  Each target's checks are due on a
fixed grid from its first (due times, not actual start times, advance by the
interval), so a batch stays together: its checks share the event loop's
wake-ups, and one loop timer for their start and one for their time limits
(`checks.timers`), which costs half the CPU of checks that each wake the loop alone,
while no single burst is large (200 real servers every second: 10 checks every
50 ms rather than 200 at once, a burst that keeps a slow CPU busy past the
check timeout and fails the checks at its tail).  A check that outlasts its
interval is followed at once by the next, which starts a new grid.

When the checks due need more CPU than the checker has, fewer start at once
(`checks.admission`): checks wait for a slot before they start, so a
starved checker checks each real server less often instead of timing out
checks that would have passed.

Results go through rise/fall counting (`apply_result`, pure) and only state
changes are reported, as `Transition` objects, to a plain callback.  States are
``"unknown"`` (no result yet), ``"up"`` and ``"down"``.  From ``"unknown"`` the
first result decides, so a restarted director settles within one check;
afterwards ``spec.rise`` consecutive successes bring a real server up and
``spec.fall`` consecutive failures take it down.

Each `HealthStatus` also counts, since its target was added, the checks that
passed, failed and timed out and their durations as a histogram over the bounds
`CHECK_DURATION_BUCKETS` (seconds), for a metrics endpoint: counters and
histogram in Prometheus's sense, folded in by `apply_result` at the cost of one
`bisect` and the status it builds anyway.
"""

from __future__ import annotations

import asyncio
import logging
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass, replace
from operator import add
from typing import Literal

from checks.admission import MAX_LIMIT, OVERLOAD_LAG, PROBE_INTERVAL, START_LIMIT, Gate, next_limit
from checks.base import CheckResult, CheckTarget, describe_error, run_check
from checks.timers import WakeUps

__all__ = [
    "CHECK_DURATION_BUCKETS",
    "HealthEngine",
    "HealthStatus",
    "Load",
    "Transition",
    "State",
    "apply_result",
    "pending",
    "report_load",
    "next_delay",
    "spread_offsets",
    "SPREAD_TICK",
    "Runner",
]

log = logging.getLogger("directord.checks")

State = Literal["unknown", "up", "down"]

#: The check function the engine calls: ``runner(target, None) -> CheckResult`` (the second
#: argument is always ``None``; `checks.base.run_check` ignores it).
Runner = Callable[[CheckTarget, None], Awaitable[CheckResult]]

#: Upper bounds, seconds, ascending, of the buckets of the check-duration histogram
#: (`HealthStatus.duration_buckets`, one count per bound; a check of exactly a bound's duration
#: is counted in it, Prometheus's ``le``).  The +Inf bucket is `HealthStatus.checks`.  A check
#: lasts at most about its ``spec.timeout`` (1 s by default): the bounds from 1 s on hold the checks
#: that reached their time limit.
CHECK_DURATION_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip

#: `HealthStatus.duration_buckets` before the first check: one 0 per bound (one shared tuple).
_NO_DURATIONS: tuple[int, ...] = (0,) * len(CHECK_DURATION_BUCKETS)

#: ``_BUCKET_STEPS[i]``: what one check whose duration falls in bucket ``i`` (``bisect_left`` of its
#: duration in `CHECK_DURATION_BUCKETS`) adds to the cumulative counts: 0 below bound ``i``, 1 from
#: it on; ``i == len(CHECK_DURATION_BUCKETS)`` (longer than the last bound) adds nothing.
_BUCKET_STEPS: tuple[tuple[int, ...], ...] = tuple(
    tuple(int(j >= i) for j in range(len(CHECK_DURATION_BUCKETS))) for i in range(len(CHECK_DURATION_BUCKETS) + 1)
)


@dataclass(frozen=True)
class HealthStatus:
    """Health of one target at one moment (a snapshot; never mutated).

    Attributes:
        state: ``"unknown"``, ``"up"`` or ``"down"``.
        since: monotonic time in seconds of the last state change (for
            ``"unknown"``: when the target was added).
        last_result: the latest check result, ``None`` before the first.
        successes: consecutive successful checks up to now (0 after a failure).
        failures: consecutive failed checks up to now (0 after a success).
        checks: number of checks completed for this target.
        passed_checks: checks that passed (`CheckResult.ok`).
        failed_checks: checks that failed other than by their time limit (refused, HTTP 503,
            exit 1, a socket's own ``ETIMEDOUT``...).
        timed_out_checks: checks that failed because they reached their time limit
            ``spec.timeout`` (`CheckResult.timed_out`).
        duration_sum: seconds, the sum of the durations (`CheckResult.duration`) of all
            ``checks`` checks.
        duration_buckets: the check-duration histogram: a tuple of
            ``len(CHECK_DURATION_BUCKETS)`` ints, item ``i`` the number of checks that took at most
            ``CHECK_DURATION_BUCKETS[i]`` seconds (cumulative, as Prometheus's ``le`` buckets:
            non-decreasing, each at most ``checks``); the +Inf bucket is ``checks``.
        weight: the IPVS weight the latest passing check asked for (`CheckResult.weight`: an
            agent's, an ``external`` check's ``dynamic_weight``); ``None``: the configured one.
            A failed check keeps it.

    ``checks``, ``passed_checks``, ``failed_checks``, ``timed_out_checks``, ``duration_sum`` and
    ``duration_buckets`` are cumulative since the target was added to the engine: kept when its
    settings change (`HealthEngine.update`), started again from 0 by a new engine (a new checker
    child, a restarted director), as Prometheus counters that reset.  ``passed_checks +
    failed_checks + timed_out_checks == checks``.  A status built without them (the director's
    fallback while its checker child is away, `checks.process.CheckerProcess.snapshot`) carries
    zeros: ``checks == 0`` with a ``last_result`` tells such a status apart, as the engine's own
    statuses have ``checks >= 1`` once there is a result.
    """

    state: State
    since: float
    last_result: CheckResult | None = None
    successes: int = 0
    failures: int = 0
    checks: int = 0
    passed_checks: int = 0
    failed_checks: int = 0
    timed_out_checks: int = 0
    duration_sum: float = 0.0
    duration_buckets: tuple[int, ...] = _NO_DURATIONS
    weight: int | None = None


@dataclass(frozen=True)
class Load:
    """The engine started or stopped holding checks back because its event loop runs late
    (`checks.admission`), as reported to the engine's ``on_load`` callback.

    Attributes:
        behind: True when the cap on checks in flight starts binding (the loop woke more than
            `checks.admission.OVERLOAD_LAG` late), False once there is no cap again.
        late: how late the probe of the loop woke, seconds.
        in_flight: checks in flight at that probe.
        limit: the cap on checks in flight from now on; ``None`` when there is none.
    """

    behind: bool
    late: float
    in_flight: int
    limit: int | None

    def __str__(self) -> str:
        if self.behind:
            return (
                f"checks are falling behind (event loop {self.late * 1e3:.0f} ms late, {self.in_flight} checks in "
                f"flight): at most {self.limit} at a time until they catch up; real servers are checked less often "
                "meanwhile"
            )
        return "checks caught up: no limit on checks in flight"


def report_load(on_load: Callable[[Load], None] | None, load: Load) -> None:
    """Hand ``load`` to ``on_load``; without one, log it as a warning. An exception of
    ``on_load`` is logged and goes no further (checking must go on)."""
    if on_load is None:
        log.warning("%s", load)
        return
    try:
        on_load(load)
    except Exception:  # noqa: BLE001 - a faulty listener must not stop checks
        log.exception("load callback failed")


@dataclass(frozen=True)
class Transition:
    """A state change of one target, as reported to the engine's callback.

    Attributes:
        key: the target's key in the mapping given to `HealthEngine.update`
            (normally equal to `CheckTarget.key`).
        name: the target's log name (`CheckTarget.name`).
        old: state before (``"unknown"``, ``"up"`` or ``"down"``).
        new: state after (``"up"`` or ``"down"``).
        reason: e.g. ``"HTTP 503 after 2 failures"``, ``"HTTP 200 (first check)"``.
        result: the check result that caused the change.
        weight: the weight the checks ask for from now on (`HealthStatus.weight`).  A change of
            it alone, while up, is reported too, as a transition with ``old == new == "up"``.
    """

    key: Hashable
    name: str
    old: State
    new: State
    reason: str
    result: CheckResult
    weight: int | None = None


def _count(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def apply_result(
    status: HealthStatus, result: CheckResult, *, rise: int, fall: int, now: float
) -> tuple[HealthStatus, str | None]:
    """Fold one check result into a target's health (pure rise/fall logic).

    Rules: from ``"unknown"`` the result decides at once (up if ok, down if
    not); from ``"down"``, ``rise`` consecutive successes go up; from ``"up"``,
    ``fall`` consecutive failures go down.  ``rise``/``fall`` below 1 count
    as 1.  The counters of checks and the duration histogram (`HealthStatus`) count ``result``:
    ``passed_checks`` when it is ok, else ``timed_out_checks`` when it reached its time limit
    (`CheckResult.timed_out`), else ``failed_checks``; its ``duration`` (seconds) is added to
    ``duration_sum`` and to every bucket of `CHECK_DURATION_BUCKETS` whose bound it does not
    exceed.

    Args:
        status: health before this result.
        result: the new check result.
        rise: consecutive successes needed to go from down to up.
        fall: consecutive failures needed to go from up to down.
        now: monotonic time in seconds, recorded as ``since`` on a change.

    Returns:
        ``(new_status, reason)`` where ``reason`` is ``None`` when the state
        did not change, else the transition's reason text, e.g.
        ``"HTTP 503 after 2 failures"``.
    """
    passed, failed, timed_out = status.passed_checks, status.failed_checks, status.timed_out_checks
    if result.ok:
        successes, failures = status.successes + 1, 0
        passed += 1
    else:
        successes, failures = 0, status.failures + 1
        if result.timed_out:
            timed_out += 1
        else:
            failed += 1
    buckets = status.duration_buckets or _NO_DURATIONS
    bucket = bisect_left(CHECK_DURATION_BUCKETS, result.duration)
    if bucket < len(CHECK_DURATION_BUCKETS):  # else only the +Inf bucket (checks) counts it
        buckets = tuple(map(add, buckets, _BUCKET_STEPS[bucket]))
    state = status.state
    reason: str | None = None
    if state == "unknown":
        state = "up" if result.ok else "down"
        reason = f"{result.reason} (first check)"
    elif state == "down" and successes >= max(rise, 1):
        state = "up"
        reason = f"{result.reason} after {_count(successes, 'success', 'successes')}"
    elif state == "up" and failures >= max(fall, 1):
        state = "down"
        reason = f"{result.reason} after {_count(failures, 'failure', 'failures')}"
    new = HealthStatus(
        state=state,
        since=now if reason is not None else status.since,
        last_result=result,
        successes=successes,
        failures=failures,
        checks=status.checks + 1,
        passed_checks=passed,
        failed_checks=failed,
        timed_out_checks=timed_out,
        duration_sum=status.duration_sum + result.duration,
        duration_buckets=buckets,
        weight=result.weight if result.ok else status.weight,
    )
    return new, reason


def pending(status: HealthStatus) -> bool:
    """True while a state change is being counted: the latest result disagrees with the state
    (``"up"`` with failures, ``"down"`` with successes).  Pure."""
    return (status.state == "up" and status.failures > 0) or (status.state == "down" and status.successes > 0)


def next_delay(status: HealthStatus, interval: float, retry_interval: float) -> float:
    """Seconds from the start of the latest check to the start of the next one (pure).

    ``min(retry_interval, interval)`` while a state change is pending (`pending`),
    else ``interval``.  Both arguments are seconds.
    """
    return min(retry_interval, interval) if pending(status) else interval


#: Seconds between two batches of first checks (`spread_offsets`).
SPREAD_TICK = 0.05


def spread_offsets(intervals: list[float], tick: float = SPREAD_TICK) -> list[float]:
    """Delays (seconds) before the first checks of targets that start together (pure).

    Each target's interval is cut into ``max(1, int(interval / tick))`` batch
    slots; target ``i`` of ``n`` goes into slot ``i * slots // n``, so the
    first target checks at once and the others follow in batches of about
    equal size over their interval.  ``intervals`` are the targets'
    ``spec.interval`` in seconds, in launch order; ``tick`` is in seconds.
    Example: 200 targets at interval 1 s -> 20 batches of 10, 50 ms apart.
    """
    n = len(intervals)
    offsets = []
    for i, interval in enumerate(intervals):
        slots = max(1, int(interval / tick + 1e-9))
        offsets.append((i * slots // n) * interval / slots)
    return offsets


class _Slot:
    """Engine-internal record of one target: its target, health and task."""

    __slots__ = ("key", "target", "status", "task")

    def __init__(self, key: Hashable, target: CheckTarget, status: HealthStatus) -> None:
        self.key = key
        self.target = target
        self.status = status
        self.task: asyncio.Task[None] | None = None


class HealthEngine:
    """Runs the health checks of a changing set of targets and reports transitions.

    Lifecycle: ``await start()``, any number of ``update(targets)`` (before or
    after start), ``await stop()``.

    Args:
        on_transition: called on the event loop, synchronously, for every
            state change; exceptions it raises are logged and ignored.
        clock: monotonic clock in seconds used for `HealthStatus.since`.
            Scheduling always uses the event loop's own clock.
        runner: the check function, `checks.base.run_check` by default;
            tests inject a fake one.  It should not raise; if it does, the
            exception is logged and counted as a failed check.
        log_transitions: log every state change at INFO (``"NAME up: REASON"``);
            the checker child (`checks.process`) leaves that to the director.
        on_load: called with a `Load` when the cap on checks in flight starts or stops
            binding; without it, the `Load` is logged as a warning instead.
    """

    def __init__(
        self,
        on_transition: Callable[[Transition], None],
        *,
        clock: Callable[[], float] = time.monotonic,
        runner: Runner | None = None,
        log_transitions: bool = True,
        on_load: Callable[[Load], None] | None = None,
    ) -> None:
        self._on_transition = on_transition
        self._on_load = on_load
        self._log_transitions = log_transitions
        self._clock = clock
        self._runner: Runner = runner if runner is not None else run_check
        self._slots: dict[Hashable, _Slot] = {}
        self._stopping: set[asyncio.Task[None]] = set()
        self._running = False
        self._gate = Gate(START_LIMIT)
        self._probe_task: asyncio.Task[None] | None = None
        self._overloaded = False
        self._wake_ups: WakeUps | None = None  # of the loop `start` ran on

    # --- lifecycle -----------------------------------------------------------

    @property
    def running(self) -> bool:
        """``True`` between `start` and `stop`."""
        return self._running

    async def start(self) -> None:
        """Start checking every known target.

        Idempotent while running.
        """
        if self._running:
            return
        self._running = True
        self._gate.set_limit(START_LIMIT)
        self._overloaded = False
        loop = asyncio.get_running_loop()
        self._wake_ups = WakeUps(loop)
        self._probe_task = loop.create_task(self._probe(), name="check admission probe")
        self._launch_spread(list(self._slots.values()))

    async def stop(self) -> None:
        """Cancel every check task and wait for all of them.

        Target states are kept; a later `start` resumes checking them.
        """
        self._running = False
        tasks = [slot.task for slot in self._slots.values() if slot.task is not None]
        if self._probe_task is not None:
            tasks.append(self._probe_task)
            self._probe_task = None
        for slot in self._slots.values():
            slot.task = None
        tasks.extend(self._stopping)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._stopping.clear()

    # --- targets -------------------------------------------------------------

    def update(self, targets: Mapping[Hashable, CheckTarget]) -> None:
        """Replace the set of checked targets.

        * a new key starts in ``"unknown"`` and is checked within one interval
          (at once when it is the only one; the first checks of the keys
          added or changed by one call are spread over their interval,
          `spread_offsets`);
        * a removed key stops being checked and its state is dropped;
        * a key whose target is equal to before keeps its task and state;
        * a key whose target changed (spec, port, addresses, name) restarts
          its check (spread with the new ones) but keeps its state (consecutive counts restart
          at 0), so a reload does not make it flap; its cumulative counters and duration
          histogram (`HealthStatus`) go on.

        Must be called from the event loop's thread; before `start` it only
        records the targets.
        """
        now = self._clock()
        for key in [k for k in self._slots if k not in targets]:
            slot = self._slots.pop(key)
            self._cancel(slot)
        launch = []
        for key, target in targets.items():
            slot = self._slots.get(key)
            if slot is None:
                slot = _Slot(key, target, HealthStatus(state="unknown", since=now))
                self._slots[key] = slot
                launch.append(slot)
            elif slot.target != target:
                self._cancel(slot)
                slot.target = target
                slot.status = replace(slot.status, successes=0, failures=0)
                launch.append(slot)
        self._launch_spread(launch)

    def status(self) -> dict[Hashable, HealthStatus]:
        """A snapshot of every target's health, keyed by target key."""
        return {key: slot.status for key, slot in self._slots.items()}

    async def snapshot(self) -> dict[Hashable, HealthStatus]:
        """`status`, awaitable: the interface `checks.process.CheckerProcess` shares."""
        return self.status()

    def targets(self) -> dict[Hashable, CheckTarget]:
        """The targets currently checked, keyed by target key."""
        return {key: slot.target for key, slot in self._slots.items()}

    # --- internals -----------------------------------------------------------

    def _launch_spread(self, slots: list[_Slot]) -> None:
        """Start the check tasks of ``slots``, their first checks spread over one interval."""
        if not self._running:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        offsets = spread_offsets([slot.target.spec.interval for slot in slots])
        for slot, offset in zip(slots, offsets):
            slot.task = loop.create_task(self._run(slot, slot.target, now + offset), name=f"check {slot.target.name}")

    def _cancel(self, slot: _Slot) -> None:
        task, slot.task = slot.task, None
        if task is not None and not task.done():
            task.cancel()
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)

    async def _run(self, slot: _Slot, target: CheckTarget, due: float) -> None:
        """Check ``target`` forever from ``due`` (event-loop time, seconds): each next check is due
        ``spec.interval`` s after the previous one was due (``spec.retry_interval`` s while a state
        change is pending), or at once when the previous check outlasted that."""
        loop = asyncio.get_running_loop()
        interval, retry_interval = target.spec.interval, target.spec.retry_interval
        runner, gate, wake_ups = self._runner, self._gate, self._wake_ups
        assert wake_ups is not None
        while True:
            await wake_ups.at(due)  # always yields, even when late
            if not gate.try_acquire():
                await gate.acquire()
            started = loop.time()
            try:
                result = await runner(target, None)
            except Exception as exc:  # noqa: BLE001 - a broken runner must not end checking
                log.exception("check of %s raised", target.name)
                result = CheckResult(False, describe_error(exc), loop.time() - started, self._clock())
            finally:
                gate.release()
            if slot.target is not target:  # replaced meanwhile; its new task reports
                return
            self._record(slot, target, result)
            due += next_delay(slot.status, interval, retry_interval)
            now = loop.time()
            if due < now:  # outlasted its interval: the next check at once, on a new grid
                due = now

    @property
    def check_limit(self) -> int | None:
        """The cap on checks in flight while the checker is short of CPU, ``None`` when there is none
        (`checks.admission`)."""
        return self._gate.limit if self._gate.limit < MAX_LIMIT else None

    async def _probe(self) -> None:
        """Every `PROBE_INTERVAL` s, measure how late the loop wakes and adapt the cap on checks in
        flight (`checks.admission.next_limit`); log when the cap starts and stops binding.  While
        no check is in flight and there is no cap, it sleeps until the next check starts."""
        loop = asyncio.get_running_loop()
        gate = self._gate
        while True:
            if gate.limit == MAX_LIMIT:
                await gate.wait_busy()
            t = loop.time()
            await asyncio.sleep(PROBE_INTERVAL)
            lag = loop.time() - t - PROBE_INTERVAL
            limit = next_limit(gate.limit, gate.in_flight, lag)
            if lag > OVERLOAD_LAG and not self._overloaded:
                self._overloaded = True
                report_load(self._on_load, Load(True, lag, gate.in_flight, limit))
            elif limit == MAX_LIMIT and self._overloaded:
                self._overloaded = False
                report_load(self._on_load, Load(False, lag, gate.in_flight, None))
            gate.set_limit(limit)

    def _record(self, slot: _Slot, target: CheckTarget, result: CheckResult) -> None:
        old = slot.status
        spec = target.spec
        slot.status, reason = apply_result(old, result, rise=spec.rise, fall=spec.fall, now=self._clock())
        if reason is None:
            if slot.status.weight == old.weight or slot.status.state != "up":
                return
            reason = f"weight {'configured' if slot.status.weight is None else slot.status.weight}: {result.reason}"
        new_state = slot.status.state
        if self._log_transitions:
            log.info("%s %s: %s", target.name, new_state, reason)
        transition = Transition(slot.key, target.name, old.state, new_state, reason, result, slot.status.weight)
        try:
            self._on_transition(transition)
        except Exception:  # noqa: BLE001 - a faulty listener must not stop checks
            log.exception("transition callback failed for %s", target.name)
