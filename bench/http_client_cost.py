"""What one HTTP health check costs in CPU, layer by layer: directord's HTTP check
(`checks.protocols.httpclient`) against the floor a bare asyncio protocol sets on the same event loop and
kernel, and a bare TCP connect check.

Runs anywhere (loopback only, no root):

    python bench/http_client_cost.py [--requests 3000] [--concurrency 20] [--runs 3]

A server process on 127.0.0.1 answers every request with a short ``200`` and closes. In
this process, for each client and each event loop (asyncio, and uvloop when installed):
``--requests`` requests, ``--concurrency`` at a time, a fresh connection each, after a
warm-up of 200; the CPU time (user + sys) of this process per request, median of
``--runs`` runs. Clients:

* ``directord check_http``: `checks.protocols.http.check_http` through `checks.base.run_check` as the
  engine calls it;
* ``bare protocol``: an `asyncio.Protocol` that connects, writes one fixed request, reads
  up to the end of the headers and closes; no HTTP library. It is the floor, not a
  candidate: it handles no chunking, redirects, TLS or body limits;
* ``tcp connect``: `checks.protocols.tcp.check_tcp` through `checks.base.run_check`: connect and close,
  no request (the socket's own cost).

The difference between the first two rows is the HTTP client's share of a check. Prints
a markdown table; ``--json PATH`` writes the rows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from check_cost import server_script  # noqa: E402

from checks.base import CheckTarget, run_check  # noqa: E402
from checks.spec import CheckSpec  # noqa: E402

WARMUP = 200


class _Bare(asyncio.Protocol):
    """Connect, send one request, resolve with the status code at the end of the headers."""

    def __init__(self, request: bytes, done: asyncio.Future) -> None:
        self.request, self.done, self.buf = request, done, b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if b"\r\n\r\n" in self.buf and not self.done.done():
            self.done.set_result(int(self.buf[9:12]))
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(exc or ConnectionError("closed before the headers ended"))


async def _run(client: str, port: int, requests: int, concurrency: int) -> float:
    """CPU microseconds per request over ``requests`` requests (after the warm-up)."""
    loop = asyncio.get_running_loop()
    target = CheckTarget("k", "bench", "127.0.0.1", port, "127.0.0.1", port, CheckSpec(type="http", timeout=2.0))
    tcp_target = CheckTarget("k", "bench", "127.0.0.1", port, "127.0.0.1", port, CheckSpec(type="tcp", timeout=2.0))
    request = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: bench\r\nConnection: close\r\n\r\n".encode()

    async def one() -> None:
        if client in ("check_http", "tcp"):
            result = await run_check(target if client == "check_http" else tcp_target, None)
            if not result.ok:
                raise RuntimeError(f"check failed: {result.reason}")
        else:
            done = loop.create_future()
            await loop.create_connection(lambda: _Bare(request, done), "127.0.0.1", port)
            if await asyncio.wait_for(done, 2.0) != 200:
                raise RuntimeError("bad status")

    sem = asyncio.Semaphore(concurrency)

    async def limited() -> None:
        async with sem:
            await one()

    await asyncio.gather(*(limited() for _ in range(WARMUP)))
    cpu0 = time.process_time()
    await asyncio.gather(*(limited() for _ in range(requests)))
    return (time.process_time() - cpu0) / requests * 1e6


def measure(client: str, loop_kind: str, port: int, requests: int, concurrency: int) -> float:
    """One run on a fresh event loop of ``loop_kind``; CPU µs per request."""
    coro = _run(client, port, requests, concurrency)
    if loop_kind == "uvloop":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    loops = ["asyncio"]
    try:
        import uvloop  # noqa: F401

        loops.append("uvloop")
    except ImportError:
        print("(uvloop not installed: asyncio rows only)", file=sys.stderr)
    server = subprocess.Popen([sys.executable, "-c", server_script("127.0.0.1", 0)], stdout=subprocess.PIPE, text=True)
    rows = []
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        for loop_kind in loops:
            for client in ("check_http", "bare", "tcp"):
                runs = [measure(client, loop_kind, port, a.requests, a.concurrency) for _ in range(a.runs)]
                rows.append(
                    {
                        "client": client,
                        "loop": loop_kind,
                        "cpu_us_per_request": round(statistics.median(runs)),
                        "runs": [round(r) for r in runs],
                    }
                )
    finally:
        server.terminate()
        server.wait(10)
    names = {
        "check_http": "directord check_http",
        "bare": "bare asyncio protocol (floor)",
        "tcp": "directord tcp check (connect, close)",
    }
    print(
        f"HTTP check CPU per request, loopback, {a.requests} requests, {a.concurrency} at a time, "
        f"median of {a.runs} runs\n"
    )
    print("| client | event loop | CPU µs/request | runs |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {names[r['client']]} | {r['loop']} | {r['cpu_us_per_request']} | {', '.join(map(str, r['runs']))} |")
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(
            json.dumps(
                {"benchmark": "http_client_cost", "requests": a.requests, "concurrency": a.concurrency, "rows": rows},
                indent=2,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
