"""Which VIPs a director announces, and how: the announcement policy.  Pure (clock injected).

A VIP is announced while this director can serve it (`vip_ready`): every virtual service on
the VIP's address is programmed in the kernel's IPVS table and has at least
`MinHealthy.needed` real servers in service (up by its checks and neither drained nor disabled
by the operator).  A fallback server does not count.  When it cannot, the route is withdrawn at
once: a router should stop sending flows a director would drop.

When the operator drains the director (``directord bgp drain``) or the daemon stops
gracefully, each announced VIP first gets the GRACEFUL_SHUTDOWN community (RFC 8326) for
`BgpConfig.graceful_shutdown_wait` seconds, so that routers which honour it move new flows to
the other directors while this one still forwards; then it is withdrawn.  A VIP that was not
announced is not announced for that.  ``undrain`` announces again at once.

`AnnouncePolicy.step` is fed the facts and the time, and returns the route each VIP should
have and when to call it again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from ha.bgp.model import BgpConfig, MinHealthy

__all__ = ["AnnouncePolicy", "Decision", "RouteState", "ServiceHealth", "vip_ready"]

#: The route of a VIP in the kernel table BIRD learns from: none, plain, or with GRACEFUL_SHUTDOWN.
RouteState = Literal["withdrawn", "announced", "graceful_shutdown"]


@dataclass(frozen=True)
class ServiceHealth:
    """One virtual service on a VIP, as the director sees it.

    Attributes:
        name: the virtual service's name (for reasons shown to the operator).
        programmed: the service is in the kernel's IPVS table as configured.
        in_service: real servers up by their checks and enabled by the operator.
        total: real servers configured.
        unknown: real servers not disabled by the operator whose checks have no result yet.
    """

    name: str
    programmed: bool
    in_service: int
    total: int
    unknown: int = 0


def vip_ready(services: tuple[ServiceHealth, ...], min_healthy: MinHealthy) -> tuple[bool, str]:
    """Whether a VIP with ``services`` may be announced, and why (a short text for the operator).

    Not ready when it has no service, when one is not programmed, when one has a real server
    not checked yet (a director that just started would otherwise announce with fewer real
    servers than the others, and with ``mh`` send a moved flow to another real server), or
    when one has fewer real servers in service than ``min_healthy`` asks of it.
    """
    if not services:
        return False, "no virtual service on this VIP"
    for svc in services:
        if not svc.programmed:
            return False, f"virtual service {svc.name} not programmed in IPVS"
        if svc.unknown:
            return False, f"virtual service {svc.name}: {svc.unknown} real servers not checked yet"
        needed = min_healthy.needed(svc.total)
        if svc.in_service < needed:
            counts = f"{svc.in_service}/{svc.total} real servers in service"
            return False, f"virtual service {svc.name}: {counts}, needs {needed}"
    return True, ", ".join(f"{s.name}: {s.in_service}/{s.total} in service" for s in services)


@dataclass(frozen=True)
class Decision:
    """What `AnnouncePolicy.step` decided for one VIP: its route and why."""

    route: RouteState
    reason: str


class AnnouncePolicy:
    """The routes of ``config``'s VIPs over time.  Times are seconds of a monotonic clock.

    Keeps, per VIP, the route last decided and when its GRACEFUL_SHUTDOWN began.
    """

    def __init__(self, config: BgpConfig) -> None:
        self._config = config
        self._routes: dict[str, RouteState] = {v.address: "withdrawn" for v in config.vips}
        self._shutdown_since: dict[str, float] = {}

    @property
    def routes(self) -> Mapping[str, RouteState]:
        """The route last decided for each VIP (address -> state)."""
        return dict(self._routes)

    def step(
        self,
        now: float,
        health: Mapping[str, tuple[ServiceHealth, ...]],
        *,
        drained: bool,
        stopping: bool,
    ) -> tuple[dict[str, Decision], float | None]:
        """Decide every VIP's route at ``now``.

        Args:
            now: the monotonic time, seconds.
            health: the virtual services of each VIP (address -> services); a VIP missing
                from it has none.
            drained: the operator drained this director.
            stopping: the daemon is stopping gracefully.

        Returns:
            The decision per VIP address, and the monotonic time at which a GRACEFUL_SHUTDOWN
            ends (call again then), or None when nothing is timed.
        """
        decisions: dict[str, Decision] = {}
        wake: float | None = None
        wait = self._config.graceful_shutdown_wait
        for vip in self._config.vips:
            address = vip.address
            ready, why = vip_ready(health.get(address, ()), vip.min_healthy)
            before = self._routes[address]
            leaving = "stopping" if stopping else "drained" if drained else None
            if not ready:
                decision = Decision("withdrawn", why)
            elif leaving is None:
                decision = Decision("announced", why)
            elif before == "withdrawn":
                decision = Decision("withdrawn", f"director {leaving}")
            else:
                since = self._shutdown_since.setdefault(address, now)
                ends = since + wait
                if now >= ends:
                    decision = Decision("withdrawn", f"director {leaving}, graceful shutdown over")
                else:
                    decision = Decision("graceful_shutdown", f"director {leaving}, withdrawn in {ends - now:.1f} s")
                    wake = ends if wake is None else min(wake, ends)
            if decision.route != "graceful_shutdown":
                self._shutdown_since.pop(address, None)
            self._routes[address] = decision.route
            decisions[address] = decision
        return decisions, wake
