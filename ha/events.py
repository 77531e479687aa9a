"""Typed events of the HA side: what `ha.service.HAService` did, as data.

Every event is a frozen dataclass with

* ``kind``: a stable dotted name (``ha.peer``, ``ha.acquiring`` ...). Consumers (the lab's
  drills, ``directord events``, tests) match on ``kind`` and the fields, never on the text;
* ``level``: the `logging` level of its log line, and ``logger``: the name of the logger it
  goes to;
* ``str(event)``: its log line, the text ``directord run`` writes on the ``directord.ha``
  logger.

The service hands each event to the sink it was given (the daemon's `director.events.EventBus`,
which stamps, logs and distributes it). Pure data: no I/O here.

Group names follow the log's form ``OWNER: ADDRESS/PREFIX/IF ...`` (`group_text`); addresses
are ``ADDRESS/PREFIX/IF`` strings, as in haresources.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Protocol, TypeVar

from ha.model import ResourceGroup

__all__ = [
    "HA_EVENTS",
    "AddressAdded",
    "AddressRemoved",
    "AddressRepaired",
    "AnnounceFailed",
    "AnnouncementSent",
    "GroupAcquireFailed",
    "GroupAcquired",
    "GroupAcquiring",
    "GroupReleased",
    "GroupReleasing",
    "HAEvent",
    "HAEventSink",
    "LoggedEvent",
    "PeerChanged",
    "TimersLate",
    "emit",
    "group_text",
]


def group_text(group: ResourceGroup) -> str:
    """``OWNER: ADDRESS/PREFIX/IF ...``: a resource group as the log names it."""
    return f"{group.owner}: " + " ".join(str(r) for r in group.resources)


@dataclass(frozen=True)
class PeerChanged:
    """The peer ``node`` changed state: ``init``, ``up``, ``active`` or ``dead`` (heartbeat's
    node states, ``heartbeat/hb_api.h``), for ``reason``."""

    kind: ClassVar[str] = "ha.peer"
    logger: ClassVar[str] = "directord.ha"
    level: ClassVar[int] = logging.INFO
    node: str
    status: str
    reason: str

    def __str__(self) -> str:
        return f"peer {self.node} is {self.status} ({self.reason})"


@dataclass(frozen=True)
class GroupAcquiring:
    """This node starts taking ``group`` over (adding its addresses, then announcing them)."""

    kind: ClassVar[str] = "ha.acquiring"
    logger: ClassVar[str] = "directord.ha"
    level: ClassVar[int] = logging.INFO
    group: str
    reason: str

    def __str__(self) -> str:
        return f"acquiring {self.group} ({self.reason})"


@dataclass(frozen=True)
class GroupAcquired:
    """Every address of ``group`` is configured here and its first announcement round is out."""

    kind: ClassVar[str] = "ha.acquired"
    logger: ClassVar[str] = "directord.ha"
    level: ClassVar[int] = logging.INFO
    group: str

    def __str__(self) -> str:
        return f"acquired {self.group}"


@dataclass(frozen=True)
class GroupAcquireFailed:
    """Adding ``address`` of ``group`` failed with ``error``; the addresses already added are
    removed again and the node retries."""

    kind: ClassVar[str] = "ha.acquire_failed"
    logger: ClassVar[str] = "directord.ha"
    level: ClassVar[int] = logging.ERROR
    group: str
    address: str
    error: str

    def __str__(self) -> str:
        return f"acquiring {self.group} failed at {self.address}: {self.error}"


@dataclass(frozen=True)
class GroupReleasing:
    """This node gives ``group`` up (``held``: it held it; False for a release that only makes
    sure nothing is left, logged at DEBUG)."""

    kind: ClassVar[str] = "ha.releasing"
    logger: ClassVar[str] = "directord.ha"
    group: str
    reason: str
    held: bool = True

    @property
    def level(self) -> int:
        """INFO when the group was held here, DEBUG otherwise."""
        return logging.INFO if self.held else logging.DEBUG

    def __str__(self) -> str:
        return f"releasing {self.group} ({self.reason})"


@dataclass(frozen=True)
class GroupReleased:
    """Every address of ``group`` is gone from here (or failed to go: see `AddressRemoved`)."""

    kind: ClassVar[str] = "ha.released"
    logger: ClassVar[str] = "directord.ha"
    level: ClassVar[int] = logging.INFO
    group: str

    def __str__(self) -> str:
        return f"released {self.group}"


@dataclass(frozen=True)
class AddressAdded:
    """``address`` (``ADDRESS/PREFIX/IF``) was added here, marked as directord's."""

    kind: ClassVar[str] = "ha.address_added"
    logger: ClassVar[str] = "directord.ha"
    level: ClassVar[int] = logging.INFO
    address: str

    def __str__(self) -> str:
        return f"added {self.address}"


@dataclass(frozen=True)
class AddressRemoved:
    """``address`` was removed here; ``error`` says why it could not be, if it could not."""

    kind: ClassVar[str] = "ha.address_removed"
    logger: ClassVar[str] = "directord.ha"
    address: str
    error: str | None = None

    @property
    def level(self) -> int:
        """INFO when the address is gone, ERROR when removing it failed."""
        return logging.INFO if self.error is None else logging.ERROR

    def __str__(self) -> str:
        if self.error is None:
            return f"removed {self.address}"
        return f"removing {self.address} failed: {self.error}"


@dataclass(frozen=True)
class AddressRepaired:
    """The address audit found ``address`` of ``group`` out of line and fixed it: ``added``
    (missing while the group is held here) or ``removed`` (present while it is not)."""

    kind: ClassVar[str] = "ha.address_repaired"
    logger: ClassVar[str] = "directord.ha"
    level: ClassVar[int] = logging.WARNING
    address: str
    group: str
    action: str

    def __str__(self) -> str:
        if self.action == "added":
            return f"{self.address} went missing while we hold {self.group}: adding and announcing it again"
        return f"{self.address} is configured but we do not hold {self.group}: removing it"


@dataclass(frozen=True)
class AnnouncementSent:
    """Gratuitous ARP / unsolicited NA for ``address`` went out: its ``first`` round (on the
    address's own interface, at once on acquisition; logged at INFO), the ``repeats`` that follow
    it (on every bond slave too) or a ``refresh`` round while held (both at DEBUG)."""

    kind: ClassVar[str] = "ha.announced"
    logger: ClassVar[str] = "directord.ha"
    address: str
    round: str

    @property
    def level(self) -> int:
        """INFO for the first round, DEBUG for the others."""
        return logging.INFO if self.round == "first" else logging.DEBUG

    def __str__(self) -> str:
        return (
            f"announced {self.address} ({self.round} round)"
            if self.round == "first"
            else (f"announced {self.address} ({self.round})")
        )


@dataclass(frozen=True)
class AnnounceFailed:
    """Sending the gratuitous ARP / unsolicited NA of ``address`` failed with ``error``."""

    kind: ClassVar[str] = "ha.announce_failed"
    logger: ClassVar[str] = "directord.ha"
    level: ClassVar[int] = logging.WARNING
    address: str
    error: str

    def __str__(self) -> str:
        return f"announcing {self.address} failed: {self.error}"


@dataclass(frozen=True)
class TimersLate:
    """The heartbeat node's timers ran ``late`` seconds after they were due: this process was
    stalled (`ha.node.TimersLate`). The peers were given as much grace; a stall longer than
    the deadtime may still have let the peer take over."""

    kind: ClassVar[str] = "ha.timers_late"
    logger: ClassVar[str] = "directord.ha"
    level: ClassVar[int] = logging.WARNING
    late: float

    def __str__(self) -> str:
        return f"timers ran {self.late:.2f} s late (was this process stalled?): peers get {self.late:.2f} s of grace"


HAEvent = (
    PeerChanged
    | GroupAcquiring
    | GroupAcquired
    | GroupAcquireFailed
    | GroupReleasing
    | GroupReleased
    | AddressAdded
    | AddressRemoved
    | AddressRepaired
    | AnnouncementSent
    | AnnounceFailed
    | TimersLate
)
#: Every HA event class, for consumers that list or decode the kinds.
HA_EVENTS: tuple[type, ...] = (
    PeerChanged,
    GroupAcquiring,
    GroupAcquired,
    GroupAcquireFailed,
    GroupReleasing,
    GroupReleased,
    AddressAdded,
    AddressRemoved,
    AddressRepaired,
    AnnouncementSent,
    AnnounceFailed,
    TimersLate,
)
#: Where `ha.service.HAService` sends its events: called on the event loop's thread, must not
#: block or raise.
HAEventSink = Callable[[HAEvent], None]


class LoggedEvent(Protocol):
    """What `emit` needs of an event (every event of `ha.events` and `director.events`)."""

    kind: ClassVar[str]
    logger: ClassVar[str]

    @property
    def level(self) -> int: ...

    def __str__(self) -> str: ...


_Event = TypeVar("_Event", bound=LoggedEvent)


def emit(sink: Callable[[_Event], object] | None, event: _Event) -> None:
    """Hand ``event`` to ``sink``, the one way every producer (`ha.service.HAService`,
    `ha.vip`, `director.reconciler.Reconciler`) reports a state change.

    Without a sink (a producer used alone, e.g. by ``directord realserver`` or a test), the
    event's log line is written instead: ``str(event)`` on the logger ``event.logger`` at
    ``event.level``. A sink that raises is logged there with its traceback and the error goes
    no further: a consumer's bug must not stop a takeover or an IPVS pass half-way.
    """
    if sink is None:
        logging.getLogger(event.logger).log(event.level, "%s", event)
        return
    try:
        sink(event)
    except Exception:
        logging.getLogger(event.logger).exception("event sink failed on %s", event.kind)
