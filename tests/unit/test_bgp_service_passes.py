"""`BgpService.update` coalesces passes, and a change that arrives while a pass waits on the
kernel gets a pass of its own (the route setter is replaced by a slow fake: this is the
scheduling logic alone; `test_bgp_service.py` has the real kernel and BIRD)."""

from __future__ import annotations

import asyncio

import pytest

import ha.bgp.service as service_module
from ha.bgp.model import BgpConfig, Neighbor, VipAnnouncement
from ha.bgp.policy import ServiceHealth
from ha.bgp.service import BgpService

VIP = "192.0.2.10"


def test_a_change_during_a_pass_gets_another_pass(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    calls: list[str] = []

    async def slow_set_route(address: str, route: str, *, table: int, oif: int) -> None:
        calls.append(route)
        await asyncio.sleep(0.05)

    monkeypatch.setattr(service_module, "set_route", slow_set_route)
    config = BgpConfig(65001, (Neighbor("10.0.0.1", 65000, "r1"),), (VipAnnouncement(VIP),))
    svc = BgpService(config, source="t", state_dir=str(tmp_path))
    svc.routes = {VIP: "withdrawn"}
    up = {VIP: (ServiceHealth("web", True, 1, 1),)}
    down = {VIP: (ServiceHealth("web", True, 0, 1),)}

    async def main() -> None:
        svc.update(up)
        await asyncio.sleep(0.01)  # the pass now waits in set_route
        svc.update(down)
        svc.update(down)  # coalesced with the one before
        await asyncio.sleep(0.3)

    asyncio.run(main())
    assert calls == ["announced", "withdrawn"]
    assert svc.routes == {VIP: "withdrawn"}
