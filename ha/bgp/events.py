"""Typed events of the BGP side (`ha.bgp.service.BgpService`), in the form of `ha.events`:
frozen dataclasses with a stable ``kind``, a ``level`` and ``logger`` for the log, and their
log line as ``str(event)``.  Pure data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

__all__ = ["BGP_EVENTS", "BgpDrainChanged", "BgpRouteChanged", "BgpSessionChanged", "BgpSpeakerChanged"]


@dataclass(frozen=True)
class BgpRouteChanged:
    """The route of ``vip`` became ``route`` (``announced``, ``graceful_shutdown`` or
    ``withdrawn``) in the table BIRD exports from, for ``reason``."""

    kind: ClassVar[str] = "bgp.route"
    logger: ClassVar[str] = "directord.bgp"
    level: ClassVar[int] = logging.INFO
    vip: str
    route: str
    reason: str

    def __str__(self) -> str:
        words = {"announced": "announced", "graceful_shutdown": "announced with GRACEFUL_SHUTDOWN"}
        return f"VIP {self.vip} {words.get(self.route, 'withdrawn')} ({self.reason})"


@dataclass(frozen=True)
class BgpSpeakerChanged:
    """The BIRD directord runs changed ``state``: ``running``, ``exited`` (it will be
    restarted), ``failed`` (it cannot be started) or ``stopped``."""

    kind: ClassVar[str] = "bgp.speaker"
    logger: ClassVar[str] = "directord.bgp"
    state: str
    detail: str

    @property
    def level(self) -> int:
        """WARNING unless it runs or was stopped."""
        return logging.INFO if self.state in ("running", "stopped") else logging.WARNING

    def __str__(self) -> str:
        return f"BGP speaker {self.state}" + (f": {self.detail}" if self.detail else "")


@dataclass(frozen=True)
class BgpSessionChanged:
    """The BGP session with ``neighbor`` (its name) went to ``state`` (BIRD's words:
    ``Established``, ``Active``, ``Connect``, ``Idle`` ...), ``info`` BIRD's last error if any."""

    kind: ClassVar[str] = "bgp.session"
    logger: ClassVar[str] = "directord.bgp"
    neighbor: str
    state: str
    info: str

    @property
    def level(self) -> int:
        """INFO when established, WARNING otherwise."""
        return logging.INFO if self.state == "Established" else logging.WARNING

    def __str__(self) -> str:
        return f"BGP session {self.neighbor} {self.state}" + (f" ({self.info})" if self.info else "")


@dataclass(frozen=True)
class BgpDrainChanged:
    """The operator drained (``drained`` true) or undrained this director's announcements."""

    kind: ClassVar[str] = "bgp.drain"
    logger: ClassVar[str] = "directord.bgp"
    level: ClassVar[int] = logging.WARNING
    drained: bool

    def __str__(self) -> str:
        return "director drained: VIPs withdrawn after GRACEFUL_SHUTDOWN" if self.drained else "director undrained"


#: Every BGP event class, for consumers that list or decode the kinds.
BGP_EVENTS: tuple[type, ...] = (BgpRouteChanged, BgpSpeakerChanged, BgpSessionChanged, BgpDrainChanged)
