"""Counts of the daemon's events, for the metrics: what happened since the daemon started.

`EventTally.add` is given every envelope the bus publishes (`director.events.EventBus`'s
``log`` hook, on the event loop's thread) and keeps counters and a few last values; the
metrics (`director.web.metrics`) read them at each scrape. Pure: no I/O, no clock of its own
(times come from the envelopes).
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EventTally", "hook_result"]

log = logging.getLogger("directord.web")


@dataclass
class EventTally:
    """Counters of published events, by kind and by what they name.

    Attributes:
        events: events by ``kind`` (``check.health``, ``ha.acquired``, ...).
        transitions: real-server health changes by (service name, real server
            ``ADDRESS:PORT``, new state).
        ipvs_ops: IPVS operations the kernel accepted, by operation (``add_dest``, ...).
        ipvs_failures: IPVS operations the kernel refused, by operation.
        ipvs_drift_repairs: IPVS operations that repaired a change made outside directord
            (`director.events.IPVSDriftRepaired`), by (service name, operation).
        announcements: gratuitous ARP / unsolicited NA rounds sent, by round (``first``,
            ``repeat``, ``refresh``).
        reloads: configuration loads by result (``adopted``, ``refused``).
        hook_runs: notify hook runs (`director.events.HookFinished`) by (hook name, result:
            ``ok``, ``failed`` (a non-zero exit or a signal), ``timeout``, ``not_run``).
        last_reload_ok: whether the last load was adopted; None before the first.
        last_reload_at: Unix time (seconds) of the last load's event; None before the first.
        checker_behind: whether the checker holds checks back (`director.events.CheckerBehind`).
        checker_limit: its cap on checks in flight while behind; None when there is none.
        checker_late: how late (seconds) its loop woke at its last load report; 0.0 before.
        ha_timers_late: how late (seconds) the HA node's timers ran the last time they did.
        errors: events the tally could not read (a bug, logged once each).
    """

    events: Counter[str] = field(default_factory=Counter)
    transitions: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    ipvs_ops: Counter[str] = field(default_factory=Counter)
    ipvs_failures: Counter[str] = field(default_factory=Counter)
    ipvs_drift_repairs: Counter[tuple[str, str]] = field(default_factory=Counter)
    announcements: Counter[str] = field(default_factory=Counter)
    reloads: Counter[str] = field(default_factory=Counter)
    hook_runs: Counter[tuple[str, str]] = field(default_factory=Counter)
    last_reload_ok: bool | None = None
    last_reload_at: float | None = None
    checker_behind: bool = False
    checker_limit: int | None = None
    checker_late: float = 0.0
    ha_timers_late: float = 0.0
    errors: int = 0

    def add(self, envelope: Any) -> None:
        """Count one published envelope (`director.events.Envelope`: ``.event``, ``.at``).
        Never raises: an event it cannot read is counted in ``errors`` and logged."""
        try:
            self._add(envelope.event, float(envelope.at))
        except Exception:  # a tally must never break publishing
            self.errors += 1
            if self.errors == 1:
                log.exception("cannot count event %r for the metrics", envelope)

    def _add(self, event: Any, at: float) -> None:
        kind = event.kind
        self.events[kind] += 1
        if kind == "check.health":
            self.transitions[(event.service, event.real_server, event.new)] += 1
        elif kind == "ipvs.applied":
            self.ipvs_ops[event.op] += 1
        elif kind == "ipvs.failed":
            self.ipvs_failures[event.op] += 1
        elif kind == "ipvs.drift":
            for op, n in event.counts:
                self.ipvs_drift_repairs[(event.service, op)] += int(n)
        elif kind == "ha.announced":
            self.announcements[event.round] += 1
        elif kind in ("config.reloaded", "config.refused"):
            ok = kind == "config.reloaded"
            self.reloads["adopted" if ok else "refused"] += 1
            self.last_reload_ok, self.last_reload_at = ok, at
        elif kind == "hook.finished":
            self.hook_runs[(event.hook, hook_result(event.result))] += 1
        elif kind == "check.behind":
            self.checker_behind, self.checker_limit, self.checker_late = True, event.limit, event.late
        elif kind == "check.caught_up":
            self.checker_behind, self.checker_limit = False, None
        elif kind == "ha.timers_late":
            self.ha_timers_late = event.late

    def copy(self) -> EventTally:
        """An independent copy (for a reader on another thread while this one keeps counting)."""
        return dataclasses.replace(
            self,
            events=Counter(self.events),
            transitions=Counter(self.transitions),
            ipvs_ops=Counter(self.ipvs_ops),
            ipvs_failures=Counter(self.ipvs_failures),
            ipvs_drift_repairs=Counter(self.ipvs_drift_repairs),
            announcements=Counter(self.announcements),
            reloads=Counter(self.reloads),
            hook_runs=Counter(self.hook_runs),
        )


def hook_result(result: str) -> str:
    """The metrics' class of a hook's result (`director.events.HookFinished.result`): ``ok``
    (``exit 0``), ``timeout``, ``not_run``, else ``failed``."""
    if result == "exit 0":
        return "ok"
    if result in ("timeout", "not run"):
        return result.replace(" ", "_")
    return "failed"
