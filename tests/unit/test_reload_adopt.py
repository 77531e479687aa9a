"""Adopting a reloaded configuration in the reconciler yields to the event loop and commits at once.

`Reconciler.adopt_config` compares the new configuration with the running one
in parts (`ADOPT_CHUNK` real servers) so that a file of 100,000 real servers
does not hold the loop that sends the heartbeats; no pass may see a
half-adopted state, and the result must equal `set_config`'s.
"""

import asyncio
import socket

from director import reconciler as R
from director.ipvs import KernelIPVS
from director.model import Config, DestKey, RealServer, ServiceKey, Settings, VirtualService


def services(n_services, per_service, skip=()):
    out = []
    for s in range(n_services):
        key = ServiceKey(socket.AF_INET, socket.IPPROTO_TCP, f"10.1.0.{s + 1}", 80)
        rs = tuple(RealServer(f"10.2.{s}.{r + 1}", 8080) for r in range(per_service) if (s, r) not in skip)
        out.append(VirtualService(name=f"svc{s}", key=key, real_servers=rs))
    return out


def state(r):
    return ({k: set(v) for k, v in r.draining().items()}, set(r._retired), r._services, r.config)


async def test_adopt_config_yields_between_parts_and_matches_set_config(monkeypatch):
    monkeypatch.setattr(R, "ADOPT_CHUNK", 50)
    old = Config(path="a.yaml", settings=Settings(drain_timeout=30), services=tuple(services(8, 100)))
    # the new file drops two real servers of svc1 and the whole of svc7
    new = Config(
        path="a.yaml", settings=Settings(drain_timeout=30), services=tuple(services(7, 100, skip={(1, 3), (1, 4)}))
    )

    expected = R.Reconciler(KernelIPVS(), lambda s, d: "up", clock=lambda: 5.0)
    expected.set_config(old)
    expected.set_config(new)

    r = R.Reconciler(KernelIPVS(), lambda s, d: "up", clock=lambda: 5.0)
    r.set_config(old)
    before = state(r)
    seen = []  # the reconciler's state as another task on the loop saw it during the adoption

    async def observer():
        while True:
            seen.append(state(r))
            await asyncio.sleep(0)

    watcher = asyncio.create_task(observer())
    await asyncio.sleep(0)
    await r.adopt_config(new)
    watcher.cancel()
    after = state(r)

    assert after == state(expected)
    assert after[0] == {new.services[1].key: {DestKey("10.2.1.4", 8080), DestKey("10.2.1.5", 8080)}}
    assert after[1] == {old.services[7].key}
    assert len(seen) >= 8, "the loop never ran another task during the adoption"
    assert all(s in (before, after) for s in seen), "another task saw a half-adopted configuration"
