"""The daemon's event stream: every state change as a typed event, on one bus, to every consumer.

Producers hand events to `EventBus.publish`: the HA service (`ha.events`), the health checks
(`HealthChanged`, from `checks.engine.Transition`), the reconciler (`IPVSApplied`,
`IPVSFailed`, `IPVSDriftRepaired`) and the daemon (`ReloadAccepted`, `ReloadRefused`, `AdminChanged`). The bus stamps
each with a sequence number and the wall-clock time (`Envelope`), keeps the last ones
(`EventBus.recent`) and gives every subscriber its own bounded queue (`Subscription`): a slow
consumer loses its oldest events, counted, and never slows the producers or the others.

Consumers read events, not log text: the log (`log_event`: ``str(event)`` at ``event.level`` on
``event.logger``), the control socket's subscription (``directord events``, JSON lines of
`to_json`), the lab's drills and the tests.

An event is a frozen dataclass with a class-level ``kind`` (a stable dotted name) and ``logger``
(a logger name), a ``level`` (a `logging` level) and ``str(event)``, its log line. Pure apart from
`log_event`: no sockets, no tasks; `Subscription.get` waits on the running event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from ha.events import LoggedEvent

__all__ = [
    "AdminChanged",
    "DEFAULT_HISTORY",
    "DEFAULT_QUEUE",
    "DRIFT_OPERATIONS_SHOWN",
    "Envelope",
    "Event",
    "EventBus",
    "CheckerBehind",
    "CheckerCaughtUp",
    "HealthChanged",
    "HookFinished",
    "HooksDropped",
    "JSONFormatter",
    "IPVSApplied",
    "IPVSDriftRepaired",
    "IPVSFailed",
    "ReloadAccepted",
    "ReloadRefused",
    "ServiceDown",
    "ServiceUp",
    "Subscription",
    "log_event",
    "to_json",
]

#: Events the bus keeps for late subscribers and ``directord events --recent``.
DEFAULT_HISTORY = 1000
#: Events a subscriber may have waiting before its oldest are dropped.
DEFAULT_QUEUE = 10_000


#: What the bus needs of an event (a frozen dataclass with ``kind``, ``logger``, ``level`` and its
#: log line as ``str``): the protocol every producer's events meet, `ha.events.LoggedEvent`.
Event = LoggedEvent


# --- the director's own events ------------------------------------------------------------


@dataclass(frozen=True)
class HealthChanged:
    """The health checks moved ``real_server`` of ``service`` from ``old`` to ``new`` (``unknown``,
    ``up``, ``down``) for ``reason`` (`checks.engine.Transition`). ``name`` is the target's log
    name (``rs ADDRESS:PORT of SERVICE``)."""

    kind: ClassVar[str] = "check.health"
    logger: ClassVar[str] = "directord.checks"
    level: ClassVar[int] = logging.INFO
    name: str
    service: str
    real_server: str
    old: str
    new: str
    reason: str

    def __str__(self) -> str:
        return f"{self.name} {self.new}: {self.reason}"


@dataclass(frozen=True)
class WeightChanged:
    """An up ``real_server`` of ``service`` is now asked to take ``weight`` (its IPVS weight from
    the next command on) for ``reason``: its agent's answer or ``external`` check's status
    (``agent: 50%``, ``exit 7: weight 5``), or a slow start's step (``slow start 3/10``), or
    ``configured`` once neither applies (`director.weights`)."""

    kind: ClassVar[str] = "check.weight"
    logger: ClassVar[str] = "directord.checks"
    level: ClassVar[int] = logging.INFO
    name: str
    service: str
    real_server: str
    weight: int
    reason: str

    def __str__(self) -> str:
        return f"{self.name} weight {self.weight}: {self.reason}"


@dataclass(frozen=True)
class CheckerBehind:
    """The checker's event loop woke ``late`` seconds late with ``in_flight`` checks in flight:
    it now runs at most ``limit`` at a time, so real servers are checked less often until it
    catches up (`checks.engine.Load`, `checks.admission`)."""

    kind: ClassVar[str] = "check.behind"
    logger: ClassVar[str] = "directord.checks"
    level: ClassVar[int] = logging.WARNING
    late: float
    in_flight: int
    limit: int

    def __str__(self) -> str:
        return (
            f"checks are falling behind (event loop {self.late * 1e3:.0f} ms late, {self.in_flight} checks in "
            f"flight): at most {self.limit} at a time until they catch up; real servers are checked less often "
            "meanwhile"
        )


@dataclass(frozen=True)
class CheckerCaughtUp:
    """The checker caught up after `CheckerBehind`: no cap on checks in flight any more."""

    kind: ClassVar[str] = "check.caught_up"
    logger: ClassVar[str] = "directord.checks"
    level: ClassVar[int] = logging.WARNING

    def __str__(self) -> str:
        return "checks caught up: no limit on checks in flight"


@dataclass(frozen=True)
class IPVSApplied:
    """The kernel accepted the IPVS operation ``op`` (`director.planner.Op` kinds: ``add_service``,
    ``set_service``, ``del_service``, ``add_dest``, ``set_dest``, ``del_dest``) on the virtual
    service ``virtual`` (its key as text) named ``service``; for a destination, ``real_server``
    (``ADDRESS:PORT``) and, when added or set, its ``weight`` and ``forwarding``; for an added or
    set service, its ``scheduler``. A weight change is a ``set_dest`` with the new ``weight``."""

    kind: ClassVar[str] = "ipvs.applied"
    logger: ClassVar[str] = "directord.reconciler"
    level: ClassVar[int] = logging.INFO
    op: str
    service: str
    virtual: str
    real_server: str | None = None
    weight: int | None = None
    forwarding: str | None = None
    scheduler: str | None = None

    def __str__(self) -> str:
        text = f"ipvs {self.op} {self.virtual}"
        if self.real_server is not None:
            text += f" -> {self.real_server}"
        if self.weight is not None:
            text += f" weight {self.weight} fwd {self.forwarding}"
        elif self.scheduler is not None:
            text += f" scheduler {self.scheduler}"
        return text


@dataclass(frozen=True)
class IPVSFailed:
    """The kernel refused the IPVS operation ``op`` on ``service`` with ``error``; the next
    reconcile pass retries it. ``repeated``: it refused the same command with the same error the
    last time it was sent too (a lasting condition, e.g. a scheduler whose module is missing):
    published as every refusal is, logged at DEBUG, not again at ERROR at every pass."""

    kind: ClassVar[str] = "ipvs.failed"
    logger: ClassVar[str] = "directord.reconciler"
    op: str
    service: str
    error: str
    repeated: bool = False

    @property
    def level(self) -> int:
        """ERROR for a new refusal (or a new error), DEBUG for a repeated one."""
        return logging.DEBUG if self.repeated else logging.ERROR

    def __str__(self) -> str:
        if self.repeated:
            return f"ipvs {self.op} (service {self.service}) still failing: {self.error}"
        return (
            f"ipvs {self.op} (service {self.service}) failed: {self.error}; retrying on the next pass "
            "(logged again when the error changes or the command is accepted)"
        )


#: The `IPVSDriftRepaired.operations` an event and its log line name; the others are counted only.
DRIFT_OPERATIONS_SHOWN = 10


@dataclass(frozen=True)
class IPVSDriftRepaired:
    """A full reconcile pass found the kernel's IPVS entry of the virtual service ``virtual``
    (its key as text) named ``service`` changed outside directord (``ipvsadm``, another tool)
    and put it back: ``counts`` gives the operations the kernel accepted for that, by kind
    (`IPVSApplied` kinds, in the planner's order: pairs of kind and number, each kind at
    most once); ``operations`` names the first `DRIFT_OPERATIONS_SHOWN` of them (``add_dest
    10.0.0.12:80``). One event per service and pass, after that pass's `IPVSApplied` events
    of those operations; an operation directord itself asked for (a reload, a health
    transition, an operator's ``directord rs``) is never one of them."""

    kind: ClassVar[str] = "ipvs.drift"
    logger: ClassVar[str] = "directord.reconciler"
    level: ClassVar[int] = logging.WARNING
    service: str
    virtual: str
    counts: tuple[tuple[str, int], ...]
    operations: tuple[str, ...] = ()

    @property
    def total(self) -> int:
        """How many operations repaired the service (the sum of ``counts``)."""
        return sum(n for _, n in self.counts)

    def __str__(self) -> str:
        total = self.total
        named = ", ".join(self.operations)
        more = total - len(self.operations)
        if more > 0:
            named += f" and {more} more" if named else f"{more} operations"
        return (
            f"ipvs {self.virtual} (service {self.service}) was changed outside directord: repaired with "
            f"{total} operation{'s' if total != 1 else ''} nobody asked for: {named}"
        )


@dataclass(frozen=True)
class AdminChanged:
    """An operator put ``real_server`` (``ADDRESS:PORT``) of ``service`` in ``state``
    (``enabled``, ``drain``, ``disabled``: `director.planner.AdminState`) for ``reason``
    (``directord rs``)."""

    kind: ClassVar[str] = "rs.admin"
    logger: ClassVar[str] = "directord"
    level: ClassVar[int] = logging.WARNING
    service: str
    real_server: str
    state: str
    reason: str

    def __str__(self) -> str:
        why = f" ({self.reason})" if self.reason else ""
        return f"rs {self.real_server} of {self.service}: {self.state} by the operator{why}"


@dataclass(frozen=True)
class ReloadAccepted:
    """A new configuration from ``path`` is running, with ``services`` virtual services."""

    kind: ClassVar[str] = "config.reloaded"
    logger: ClassVar[str] = "directord"
    level: ClassVar[int] = logging.INFO
    path: str
    services: int

    def __str__(self) -> str:
        return f"reloaded: {self.services} virtual services"


@dataclass(frozen=True)
class ReloadRefused:
    """The configuration at ``path`` was refused (``reason``: its problems); the running one is kept."""

    kind: ClassVar[str] = "config.refused"
    logger: ClassVar[str] = "directord"
    level: ClassVar[int] = logging.ERROR
    path: str
    reason: str

    def __str__(self) -> str:
        return f"reload refused ({self.path}), keeping the running configuration: {self.reason}"


@dataclass(frozen=True)
class ServiceDown:
    """Virtual service ``service`` has no real server in service: every one is down (by its
    checks), drained or disabled, or it has none (``real_servers``: how many it has). What
    ``on_failure`` says happens now (the fallback server, if any, takes over)."""

    kind: ClassVar[str] = "service.down"
    logger: ClassVar[str] = "directord"
    level: ClassVar[int] = logging.WARNING
    service: str
    real_servers: int

    def __str__(self) -> str:
        return f"virtual service {self.service} has no real server in service (of {self.real_servers})"


@dataclass(frozen=True)
class ServiceUp:
    """Virtual service ``service``, down before (`ServiceDown`), has ``up`` real servers in
    service again."""

    kind: ClassVar[str] = "service.up"
    logger: ClassVar[str] = "directord"
    level: ClassVar[int] = logging.INFO
    service: str
    up: int

    def __str__(self) -> str:
        return f"virtual service {self.service} has {self.up} real server(s) in service again"


@dataclass(frozen=True)
class HookFinished:
    """Notify hook ``hook`` ran for event ``event`` (its kind, seq ``event_seq``) as process
    ``pid`` for ``seconds``: ``result`` is ``exit N``, ``signal N``, ``timeout`` (killed after its
    timeout) or ``not run`` (``error`` says why: the program is missing or not trusted, the hook
    runner is gone). ``output``: the end of what it wrote to stdout and stderr. Logged at INFO
    when it exited 0, WARNING otherwise (`director.hooks`)."""

    kind: ClassVar[str] = "hook.finished"
    logger: ClassVar[str] = "directord.hooks"
    hook: str
    event: str
    event_seq: int
    result: str
    seconds: float
    pid: int | None = None
    output: str = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        """The hook ran and exited 0."""
        return self.result == "exit 0"

    @property
    def level(self) -> int:
        """INFO when the hook exited 0, WARNING otherwise."""
        return logging.INFO if self.ok else logging.WARNING

    def __str__(self) -> str:
        text = f"hook {self.hook} ({self.event}): {self.result} after {self.seconds:.3f} s"
        if self.error:
            text += f": {self.error}"
        if self.output and not self.ok:
            text += f"; output: {self.output}"
        return text


@dataclass(frozen=True)
class HooksDropped:
    """``dropped`` events found ``queued`` hook runs waiting already (`director.hooks`'s bound):
    their hooks were not run (counted since the last such event)."""

    kind: ClassVar[str] = "hook.dropped"
    logger: ClassVar[str] = "directord.hooks"
    level: ClassVar[int] = logging.WARNING
    dropped: int
    queued: int

    def __str__(self) -> str:
        return f"{self.dropped} event(s) not given to their hooks: {self.queued} hook runs are waiting already"


# --- envelopes and their JSON form ----------------------------------------------------------


@dataclass(frozen=True)
class Envelope:
    """One published event: ``seq`` (1, 2, ... per bus), ``at`` (Unix time, seconds, float)."""

    seq: int
    at: float
    event: Any


def to_json(envelope: Envelope) -> dict[str, Any]:
    """The JSON object of an envelope: ``seq``, ``at`` (seconds), ``kind``, ``level`` (its
    `logging` name, e.g. ``INFO``), ``message`` (the log line), then the event's own fields.

    Field values are JSON scalars, lists (from tuples) or objects; a field named like one of
    the envelope's keys would be overwritten, so events do not use those names.
    """
    event = envelope.event
    out: dict[str, Any] = {
        "seq": envelope.seq,
        "at": round(envelope.at, 6),
        "kind": event.kind,
        "level": logging.getLevelName(event.level),
        "message": str(event),
    }
    for field in dataclasses.fields(event):
        value = getattr(event, field.name)
        out.setdefault(field.name, list(value) if isinstance(value, tuple) else value)
    return out


def log_event(envelope: Envelope) -> None:
    """Write ``envelope``'s event as its log line, at its ``level``, to its ``logger``; the record
    carries the event as ``record.event`` (its `to_json` object), which `JSONFormatter` writes."""
    event = envelope.event
    logging.getLogger(event.logger).log(event.level, "%s", event, extra={"event": to_json(envelope)})


class JSONFormatter(logging.Formatter):
    """Log records as JSON lines (``directord run --log-format json``): ``at`` (Unix time,
    seconds), ``level``, ``logger``, ``message``; a record of an event (`log_event`) carries the
    event's `to_json` object too (``seq``, ``kind`` and the event's fields), so that a reader of
    the log matches events by ``kind``, never by text. An exception's traceback is ``exc``."""

    def format(self, record: logging.LogRecord) -> str:
        """One JSON object, one line."""
        out: dict[str, Any] = {
            "at": round(record.created, 6),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        event = getattr(record, "event", None)
        if isinstance(event, dict):
            out.update((key, value) for key, value in event.items() if key not in out)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


# --- the bus -----------------------------------------------------------------------------


class Subscription:
    """One consumer's view of the bus: the events published since it subscribed, in order.

    At most ``maxsize`` wait; when one more comes, the oldest waiting is dropped and counted in
    `dropped`, so a stuck consumer costs bounded memory and never blocks the producers.
    """

    def __init__(self, bus: EventBus, maxsize: int, kinds: frozenset[str] | None) -> None:
        self._bus = bus
        self._queue: deque[Envelope] = deque()
        self._maxsize = maxsize
        self._kinds = kinds
        self._waiter: asyncio.Future[None] | None = None
        #: Events dropped because ``maxsize`` were waiting.
        self.dropped = 0
        self.closed = False

    def offer(self, envelope: Envelope) -> None:
        """Queue ``envelope`` if its kind is wanted (called by the bus)."""
        if self.closed or (self._kinds is not None and envelope.event.kind not in self._kinds):
            return
        if len(self._queue) >= self._maxsize:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(envelope)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def pending(self) -> int:
        """How many events wait."""
        return len(self._queue)

    def get_nowait(self) -> Envelope | None:
        """The oldest waiting event, or ``None`` when none waits."""
        return self._queue.popleft() if self._queue else None

    async def get(self) -> Envelope | None:
        """The oldest waiting event; waits for one. ``None`` once closed and empty."""
        while not self._queue:
            if self.closed:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._queue.popleft()

    def close(self) -> None:
        """Stop receiving events (idempotent); a waiting `get` returns ``None``."""
        if self.closed:
            return
        self.closed = True
        self._bus.unsubscribe(self)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class EventBus:
    """Stamps, keeps and distributes events (see the module docstring).

    Args:
        history: how many of the latest envelopes `recent` keeps.
        clock: the wall clock stamped into envelopes (Unix time, seconds).
        log: called with every envelope first, on the publisher's thread (`log_event`,
            normally); an exception it raises propagates to the publisher.

    `publish` and `subscribe` are for the event loop's thread only.
    """

    def __init__(
        self,
        *,
        history: int = DEFAULT_HISTORY,
        clock: Callable[[], float] = time.time,
        log: Callable[[Envelope], None] | None = None,
    ) -> None:
        if history < 0:
            raise ValueError(f"history must be >= 0, got {history}")
        self._history: deque[Envelope] = deque(maxlen=history)
        self._clock = clock
        self._log = log
        self._subscriptions: list[Subscription] = []
        self._seq = 0

    @property
    def published(self) -> int:
        """How many events were published (the last ``seq``)."""
        return self._seq

    def publish(self, event: Any) -> Envelope:
        """Stamp ``event``, log it, keep it and offer it to every subscriber; returns its envelope.

        Raises:
            TypeError: ``event`` is not a dataclass instance with a ``kind``.
        """
        if (
            not dataclasses.is_dataclass(event)
            or isinstance(event, type)
            or not isinstance(getattr(event, "kind", None), str)
        ):
            raise TypeError(f"not an event: {event!r}")
        self._seq += 1
        envelope = Envelope(self._seq, self._clock(), event)
        if self._log is not None:
            self._log(envelope)
        self._history.append(envelope)
        for subscription in list(self._subscriptions):
            subscription.offer(envelope)
        return envelope

    def recent(self, limit: int | None = None) -> list[Envelope]:
        """The latest kept envelopes, oldest first (at most ``limit`` of them)."""
        items = list(self._history)
        return items if limit is None else items[max(0, len(items) - limit) :]

    def subscribe(
        self, *, maxsize: int = DEFAULT_QUEUE, kinds: frozenset[str] | None = None, replay: int = 0
    ) -> Subscription:
        """A new `Subscription` to the events published from now on (of ``kinds`` only, when
        given), starting with up to ``replay`` of the `recent` ones.

        Raises:
            ValueError: ``maxsize`` < 1 or ``replay`` < 0.
        """
        if maxsize < 1 or replay < 0:
            raise ValueError(f"maxsize must be >= 1 and replay >= 0, got {maxsize} and {replay}")
        subscription = Subscription(self, maxsize, kinds)
        for envelope in self.recent(replay) if replay else ():
            subscription.offer(envelope)
        self._subscriptions.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Forget ``subscription`` (idempotent; `Subscription.close` calls this)."""
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)

    @property
    def subscribers(self) -> int:
        """How many subscriptions are open."""
        return len(self._subscriptions)
