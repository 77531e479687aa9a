"""The weight of each up real server when it is not its configured one: pure bookkeeping.

Two things move a real server's IPVS weight away from its configured weight while it is up:

- its checks ask for a weight (`checks.engine.Transition.weight`): an agent's percentage
  (`checks.protocols.agent`), ``drain`` (0), an ``external`` check's ``dynamic_weight``;
- a slow start (``check.slow_start``, HAProxy's ``slowstart``): a real server that comes back
  up (down -> up; not unknown -> up, so a restarted director does not ramp healthy servers)
  ramps from weight 1 to its weight in at most `checks.spec.SLOW_START_STEPS` steps
  (`slow_start_weight`), each one IPVS command.

The ramp scales whatever weight the checks ask for (an agent's 50% of 10 ramps to 5).
`WeightBook` holds both per target and answers, per virtual service, the weights that differ
from the configured ones (`WeightBook.overrides`), which the reconciler plans with
(`director.planner.desired_service`).  Times are monotonic seconds given by the caller; the
daemon wakes the reconciler at each step (`WeightBook.step_times`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from checks.spec import SLOW_START_STEPS

from .model import DestKey, ServiceKey

__all__ = ["Ramp", "WeightBook", "ramp_steps", "slow_start_weight"]

TargetKey = tuple[ServiceKey, DestKey]


def ramp_steps(weight: int, steps: int = SLOW_START_STEPS) -> int:
    """How many steps a ramp to ``weight`` takes: ``steps``, fewer for a small weight (a ramp to
    3 has 3 steps: 1, 1, 2, then 3), at least 1."""
    return max(1, min(steps, weight))


def slow_start_weight(weight: int, elapsed: float, duration: float, steps: int = SLOW_START_STEPS) -> int | None:
    """The weight ``elapsed`` seconds into a slow start of ``duration`` seconds to ``weight``.

    The ramp has ``n = ramp_steps(weight, steps)`` steps of ``duration / n`` seconds; in step
    ``i`` (0-based) the weight is ``weight * i // n``, at least 1.  Pure.

    Returns:
        The weight, or ``None`` once the ramp is over (``elapsed >= duration``), for a weight of
        0 or 1 (nothing to ramp), or without a duration.
    """
    if duration <= 0 or elapsed >= duration or weight <= 1:
        return None
    n = ramp_steps(weight, steps)
    i = max(0, int(elapsed * n / duration))
    return max(1, weight * i // n)


@dataclass(frozen=True)
class Ramp:
    """A slow start in progress: since monotonic ``start``, for ``duration`` seconds."""

    start: float
    duration: float


class WeightBook:
    """Weights asked by checks and slow starts in progress, by target (service key, dest key).

    ``configured`` gives a target's configured weight; it is read at each `overrides` call.
    """

    def __init__(self) -> None:
        self._asked: dict[TargetKey, int] = {}
        self._ramps: dict[TargetKey, Ramp] = {}
        self._by_service: dict[ServiceKey, set[DestKey]] = {}

    def _mark(self, key: TargetKey) -> None:
        service, dest = key
        if key in self._asked or key in self._ramps:
            self._by_service.setdefault(service, set()).add(dest)
            return
        dests = self._by_service.get(service)
        if dests is not None:
            dests.discard(dest)
            if not dests:
                del self._by_service[service]

    def ask(self, key: TargetKey, weight: int | None) -> bool:
        """The checks of ``key`` ask for ``weight`` (``None``: the configured one).  Returns
        whether that changed anything."""
        if self._asked.get(key) == weight:
            return False
        if weight is None:
            del self._asked[key]
        else:
            self._asked[key] = weight
        self._mark(key)
        return True

    def start_ramp(self, key: TargetKey, now: float, duration: float) -> None:
        """``key`` came back up at ``now``: ramp it over ``duration`` seconds (0: no ramp)."""
        if duration > 0:
            self._ramps[key] = Ramp(now, duration)
        else:
            self._ramps.pop(key, None)
        self._mark(key)

    def stop_ramp(self, key: TargetKey) -> bool:
        """End ``key``'s ramp (it went down, or the ramp is over). Returns whether it had one."""
        if self._ramps.pop(key, None) is None:
            return False
        self._mark(key)
        return True

    def forget(self, keys: list[TargetKey] | set[TargetKey] | tuple[TargetKey, ...]) -> None:
        """Drop what is known of ``keys`` (targets removed from the configuration)."""
        for key in keys:
            self._asked.pop(key, None)
            self._ramps.pop(key, None)
            self._mark(key)

    def ramp(self, key: TargetKey) -> Ramp | None:
        """``key``'s slow start in progress, if any."""
        return self._ramps.get(key)

    def asked(self, key: TargetKey) -> int | None:
        """The weight ``key``'s checks ask for, ``None`` for the configured one."""
        return self._asked.get(key)

    def step_times(self, key: TargetKey, configured: int) -> list[float]:
        """Monotonic times at which ``key``'s ramp changes its weight, the last being its end;
        empty without a ramp."""
        ramp = self._ramps.get(key)
        if ramp is None:
            return []
        n = ramp_steps(self._asked.get(key, configured))
        return [ramp.start + ramp.duration * i / n for i in range(1, n + 1)]

    def weight(self, key: TargetKey, configured: int, now: float) -> int | None:
        """The weight of up target ``key`` at ``now`` when it is not ``configured``, else ``None``."""
        base = self._asked.get(key, configured)
        ramp = self._ramps.get(key)
        if ramp is not None:
            stepped = slow_start_weight(base, now - ramp.start, ramp.duration)
            if stepped is not None:
                return stepped
        return None if base == configured else base

    def overrides(
        self, service: ServiceKey, configured: Callable[[TargetKey], int | None], now: float
    ) -> dict[DestKey, int] | None:
        """The weights of ``service``'s targets that differ from their configured ones
        (``configured(key)`` gives a target's configured weight; a key it gives ``None`` for is
        skipped); ``None`` when there are none."""
        dests = self._by_service.get(service)
        if not dests:
            return None
        out: dict[DestKey, int] = {}
        for dest in dests:
            key = (service, dest)
            weight = configured(key)
            if weight is None:
                continue
            value = self.weight(key, weight, now)
            if value is not None:
                out[dest] = value
        return out or None
