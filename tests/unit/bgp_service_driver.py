"""Runs `ha.bgp.service.BgpService` in the calling network namespace for
``test_bgp_service.py`` and ``test_bgp_neighbours.py`` (started with ``ip netns exec`` and
spoken to by ``bgp_driver_client.py``).

Usage: ``python3 bgp_service_driver.py CONFIG_JSON STATE_DIR``, CONFIG_JSON the `BgpConfig`
as the test writes it.  Reads one command per line on standard input and answers each with
one JSON line on standard output:

* ``{"health": {VIP: [in_service, total, programmed], ...}}``: `BgpService.update`;
* ``{"do": "drain" | "undrain" | "status" | "kill_bird" | "stop"}``;
* ``{"wait": SECONDS}``: let the service run.

Every event the service emits is written as ``{"event": KIND, ...fields}`` when it happens.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from ha.bgp.model import (  # noqa: E402
    BfdSettings,
    BgpConfig,
    MinHealthy,
    Neighbor,
    SpeakerSettings,
    VipAnnouncement,
)
from ha.bgp.policy import ServiceHealth  # noqa: E402
from ha.bgp.service import BgpService  # noqa: E402


def load(doc: dict) -> BgpConfig:
    """The `BgpConfig` of the test's JSON."""
    return BgpConfig(
        local_as=doc["local_as"],
        router_id=doc.get("router_id"),
        neighbors=tuple(Neighbor(**n) for n in doc["neighbors"]),
        vips=tuple(
            VipAnnouncement(
                v["address"],
                communities=tuple(tuple(c) for c in v.get("communities", ())),
                med=v.get("med"),
                min_healthy=MinHealthy(v.get("min_healthy", 1)),
            )
            for v in doc["vips"]
        ),
        bfd=BfdSettings(),
        graceful_shutdown_wait=doc["graceful_shutdown_wait"],
        speaker=SpeakerSettings(run_dir=doc["run_dir"]),
    )


def out(doc: dict) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


def on_event(event: object) -> None:
    fields = dataclasses.asdict(event) if dataclasses.is_dataclass(event) else {}
    out({"event": type(event).kind, **fields})  # type: ignore[attr-defined]


async def main() -> None:
    config = load(json.loads(sys.argv[1]))
    service = BgpService(config, source="test", state_dir=sys.argv[2], on_event=on_event)
    await service.start()
    out({"started": True})
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        cmd = json.loads(line)
        if "health" in cmd:
            service.update(
                {vip: (ServiceHealth("web", bool(p), up, total),) for vip, (up, total, p) in cmd["health"].items()}
            )
            await asyncio.sleep(0.05)
            out({"ok": "health"})
        elif "wait" in cmd:
            await asyncio.sleep(cmd["wait"])
            out({"ok": "wait"})
        elif cmd["do"] == "drain":
            await service.drain()
            out({"ok": "drain"})
        elif cmd["do"] == "undrain":
            await service.undrain()
            out({"ok": "undrain"})
        elif cmd["do"] == "status":
            out({"status": service.status()})
        elif cmd["do"] == "kill_bird":
            assert service.speaker is not None and service.speaker.pid is not None
            os.kill(service.speaker.pid, signal.SIGKILL)
            out({"ok": "kill_bird"})
        elif cmd["do"] == "stop":
            await service.stop()
            out({"ok": "stop"})
            return


if __name__ == "__main__":
    asyncio.run(main())
