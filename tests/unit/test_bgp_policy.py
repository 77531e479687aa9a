"""The announcement policy (`ha.bgp.policy`): health, min_healthy, drain and stop, with
GRACEFUL_SHUTDOWN before the withdraw.  Pure, clock injected."""

from __future__ import annotations

import pytest

from ha.bgp.model import BgpConfig, MinHealthy, Neighbor, VipAnnouncement
from ha.bgp.policy import AnnouncePolicy, ServiceHealth, vip_ready

A, B = "192.0.2.10", "192.0.2.11"


def config(wait: float = 5.0, min_b: MinHealthy | None = None) -> BgpConfig:
    return BgpConfig(
        local_as=65001,
        neighbors=(Neighbor("10.0.0.1", 65000, "r1"),),
        vips=(VipAnnouncement(A), VipAnnouncement(B, min_healthy=min_b or MinHealthy(None, 50.0))),
        graceful_shutdown_wait=wait,
    )


def svc(up: int, total: int = 4, programmed: bool = True, name: str = "web") -> ServiceHealth:
    return ServiceHealth(name, programmed, up, total)


def routes(decisions: dict) -> dict[str, str]:
    return {k: d.route for k, d in decisions.items()}


def test_min_healthy_count_and_percent() -> None:
    assert MinHealthy(2).needed(10) == 2
    assert MinHealthy(None, 50.0).needed(3) == 2  # rounded up
    assert MinHealthy(None, 50.0).needed(4) == 2
    assert MinHealthy(None, 1.0).needed(3) == 1  # at least one
    assert MinHealthy(None, 100.0).needed(3) == 3
    assert MinHealthy(None, 100.0).needed(0) == 1
    assert (MinHealthy(3).text(), MinHealthy(None, 12.5).text()) == ("3", "12.5%")


def test_ready_needs_every_service_programmed_and_healthy() -> None:
    assert vip_ready((), MinHealthy()) == (False, "no virtual service on this VIP")
    ok, why = vip_ready((svc(1), svc(1, name="tls")), MinHealthy())
    assert ok and why == "web: 1/4 in service, tls: 1/4 in service"
    ok, why = vip_ready((svc(4), svc(4, programmed=False, name="tls")), MinHealthy())
    assert not ok and why == "virtual service tls not programmed in IPVS"
    ok, why = vip_ready((svc(4), ServiceHealth("tls", True, 3, 4, unknown=1)), MinHealthy())
    assert not ok and why == "virtual service tls: 1 real servers not checked yet"
    ok, why = vip_ready((svc(4), svc(1, name="tls")), MinHealthy(2))
    assert not ok and why == "virtual service tls: 1/4 real servers in service, needs 2"


def test_health_announces_and_withdraws_at_once() -> None:
    p = AnnouncePolicy(config())
    d, wake = p.step(0.0, {}, drained=False, stopping=False)
    assert routes(d) == {A: "withdrawn", B: "withdrawn"} and wake is None
    d, wake = p.step(1.0, {A: (svc(1),), B: (svc(2),)}, drained=False, stopping=False)
    assert routes(d) == {A: "announced", B: "announced"} and wake is None
    d, _ = p.step(2.0, {A: (svc(0),), B: (svc(1),)}, drained=False, stopping=False)  # B needs 50% of 4
    assert routes(d) == {A: "withdrawn", B: "withdrawn"}
    assert d[B].reason == "virtual service web: 1/4 real servers in service, needs 2"


@pytest.mark.parametrize("leaving", ["drained", "stopping"])
def test_graceful_shutdown_then_withdraw(leaving: str) -> None:
    p = AnnouncePolicy(config(wait=5.0))
    healthy = {A: (svc(4),), B: (svc(4),)}
    p.step(0.0, healthy, drained=False, stopping=False)
    flags = {"drained": leaving == "drained", "stopping": leaving == "stopping"}
    d, wake = p.step(10.0, healthy, **flags)
    assert routes(d) == {A: "graceful_shutdown", B: "graceful_shutdown"} and wake == 15.0
    assert d[A].reason == f"director {leaving}, withdrawn in 5.0 s"
    d, wake = p.step(14.9, healthy, **flags)
    assert routes(d) == {A: "graceful_shutdown", B: "graceful_shutdown"} and wake == 15.0
    d, wake = p.step(15.0, healthy, **flags)
    assert routes(d) == {A: "withdrawn", B: "withdrawn"} and wake is None
    assert d[A].reason == f"director {leaving}, graceful shutdown over"
    d, wake = p.step(20.0, healthy, **flags)  # stays withdrawn, no new graceful shutdown
    assert routes(d) == {A: "withdrawn", B: "withdrawn"} and wake is None


def test_not_announced_vip_is_not_announced_for_a_drain() -> None:
    p = AnnouncePolicy(config())
    p.step(0.0, {A: (svc(4),)}, drained=False, stopping=False)
    d, wake = p.step(1.0, {A: (svc(4),), B: (svc(4),)}, drained=True, stopping=False)
    assert routes(d) == {A: "graceful_shutdown", B: "withdrawn"} and wake == 6.0


def test_undrain_announces_at_once_and_a_new_drain_waits_again() -> None:
    p = AnnouncePolicy(config(wait=5.0))
    h = {A: (svc(4),), B: (svc(4),)}
    p.step(0.0, h, drained=False, stopping=False)
    p.step(1.0, h, drained=True, stopping=False)
    d, wake = p.step(2.0, h, drained=False, stopping=False)
    assert routes(d) == {A: "announced", B: "announced"} and wake is None
    d, wake = p.step(3.0, h, drained=True, stopping=False)
    assert wake == 8.0  # the wait starts again, not from 1.0


def test_health_lost_during_graceful_shutdown_withdraws_at_once() -> None:
    p = AnnouncePolicy(config(wait=5.0))
    p.step(0.0, {A: (svc(4),)}, drained=False, stopping=False)
    p.step(1.0, {A: (svc(4),)}, drained=False, stopping=True)
    d, wake = p.step(2.0, {A: (svc(0),)}, drained=False, stopping=True)
    assert d[A].route == "withdrawn" and wake is None


def test_zero_wait_withdraws_at_once() -> None:
    p = AnnouncePolicy(config(wait=0.0))
    p.step(0.0, {A: (svc(4),)}, drained=False, stopping=False)
    d, wake = p.step(1.0, {A: (svc(4),)}, drained=True, stopping=False)
    assert d[A].route == "withdrawn" and wake is None
