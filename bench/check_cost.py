"""Health-check cost: directord's check engine alone, N real servers checked over HTTP.

Runs on any Linux host with network namespaces (no IPVS needed), as root:

    python bench/check_cost.py [--real-servers 2000] [--interval 1] [--seconds 60] [--type http]
                               [--where process|engine] [--loop asyncio|uvloop]

Two namespaces are created (and deleted afterwards): ``<prefix>-srv`` has
every real-server address (10.220.0.0/16, one ``local`` route) and runs a
small HTTP server on 0.0.0.0:80 in a child process; ``<prefix>-chk`` routes
10.220.0.0/16 to it over one veth and runs directord's checks there, one HTTP
check per real server every ``--interval`` seconds (timeout 1 s, a fresh
connection per check, as the daemon does), in one of two ways:

* ``--where process`` (default, as ``directord run`` does): a
  `checks.process.CheckerProcess`, the engine in a checker child process (on
  uvloop when installed); this process plays the director;
* ``--where engine``: `checks.engine.HealthEngine` on this process's own loop
  (``--loop`` picks asyncio or uvloop), as the director ran checks before the
  checker process.

After a warm-up of two intervals, the CPU time (user + sys) of this process and
of the checker child is measured over ``--seconds`` seconds, with the number of
checks completed in that window, and the RSS of both. Throughout, a timer on the
director's loop sleeps 0.2 s (the heartbeat keepalive) over and over; its lateness
(median, 99th percentile, max, milliseconds) is how much the checks delay the
director's own work.

Prints a markdown table and writes JSON (``--json PATH``, default
``out/bench/check_cost.json``). Units: seconds, microseconds of CPU per check,
MiB of RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from checks.base import CheckTarget  # noqa: E402
from checks.engine import HealthEngine  # noqa: E402
from checks.process import CheckerProcess  # noqa: E402
from checks.spec import CheckSpec  # noqa: E402
from director.lab import netns as N  # noqa: E402

NET = ipaddress.ip_network("10.220.0.0/16")
CHECKER, GATEWAY = "10.221.0.2", "10.221.0.1"


def server_script(host: str, port: int) -> str:
    """Python source of a small HTTP server on ``host``:``port`` (0: any free port) that answers
    every request with a short ``200`` and closes; it prints its port once listening.  A bare
    protocol on uvloop when installed (the server is not what is measured: on its own core it
    must keep up with 10,000 checks per second)."""
    return rf"""
import asyncio
RESPONSE = b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
class Handler(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport, self.head = transport, b""
    def data_received(self, data):
        self.head += data
        if b"\r\n\r\n" in self.head:
            self.transport.write(RESPONSE)
            self.transport.close()
        elif len(self.head) > 65536:
            self.transport.abort()
async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Handler, {host!r}, {port:d}, backlog=4096, reuse_address=True)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()
try:
    import uvloop
except ImportError:
    asyncio.run(main())
else:
    uvloop.run(main())
"""


def real_server_addresses(n: int) -> list[str]:
    """The first ``n`` addresses of 10.220.0.0/16 with a last octet of 1..254; n <= 64516."""
    out = []
    for host in NET.hosts():
        if len(out) == n:
            break
        if 0 < host.packed[3] < 255:
            out.append(str(host))
    return out


def build(prefix: str) -> subprocess.Popen:
    srv, chk = f"{prefix}-srv", f"{prefix}-chk"
    N.cleanup_netns(prefix)
    N.create_netns(srv)
    N.create_netns(chk)
    N.add_veth(chk, "eth0", srv, "eth0")
    N.add_address(chk, "eth0", f"{CHECKER}/30")
    N.add_address(srv, "eth0", f"{GATEWAY}/30")
    # every real-server address is local to the server namespace (one "local" route,
    # no 2,000 neighbour entries); the checker routes them through the server's side
    subprocess.run(["ip", "-n", srv, "route", "add", "local", str(NET), "dev", "lo"], check=True, timeout=10)
    N.add_route(chk, str(NET), gateway=GATEWAY)
    N.set_sysctls(srv, {"net.core.somaxconn": "4096"})
    proc = N.run_in_netns(srv, [sys.executable, "-c", server_script("0.0.0.0", 80)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "80":
        raise RuntimeError("the HTTP server did not start")
    return proc


CLK_TCK = os.sysconf("SC_CLK_TCK")
KEEPALIVE = 0.2  # seconds: the lag probe's timer, the shipped heartbeat keepalive


def cpu_times(pid: int | None = None) -> tuple[float, float]:
    """``(user, sys)`` CPU seconds of this process, or of process ``pid`` (``/proc/PID/stat``)."""
    if pid is None:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime, r.ru_stime
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def rss_mib(pid: int | str = "self") -> tuple[float, float]:
    """(current, peak) RSS of this process (or of ``pid``) in MiB."""
    cur = peak = 0.0
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                cur = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    return cur, peak


async def lag_probe(lags: list[float]) -> None:
    """Sleep `KEEPALIVE` seconds over and over; append each wake-up's lateness (seconds) to ``lags``."""
    loop = asyncio.get_running_loop()
    while True:
        t = loop.time()
        await asyncio.sleep(KEEPALIVE)
        lags.append(loop.time() - t - KEEPALIVE)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))] if ordered else float("nan")


async def measure(addresses: list[str], kind: str, interval: float, seconds: float, where: str) -> dict:
    transitions = []
    checker = CheckerProcess(transitions.append) if where == "process" else HealthEngine(transitions.append)
    spec = CheckSpec(type=kind, interval=interval, timeout=1.0, rise=2, fall=2)
    checker.update({a: CheckTarget(a, f"rs {a}:80", None, 80, a, 80, spec) for a in addresses})
    rss_before = rss_mib()[0]
    await checker.start()
    child = checker.pid if where == "process" else None
    lags: list[float] = []
    probe = asyncio.get_running_loop().create_task(lag_probe(lags))
    try:
        await asyncio.sleep(2 * interval)
        checks0 = sum(s.checks for s in (await checker.snapshot()).values())
        del lags[:]
        cpu0, child0, t0 = cpu_times(), cpu_times(child) if child else (0.0, 0.0), time.monotonic()
        await asyncio.sleep(seconds)
        cpu1, child1, t1 = cpu_times(), cpu_times(child) if child else (0.0, 0.0), time.monotonic()
        window_lags = list(lags)
        status = await checker.snapshot()
        checks1 = sum(s.checks for s in status.values())
        up = sum(1 for s in status.values() if s.state == "up")
        failed = sum(1 for s in status.values() if s.last_result is not None and not s.last_result.ok)
        rss, peak = rss_mib()
        child_rss = child_peak = None
        if child:
            child_rss, child_peak = rss_mib(child)
            rss, peak = rss + child_rss, peak + child_peak
    finally:
        probe.cancel()
        await checker.stop()
    checks = checks1 - checks0
    user = (cpu1[0] - cpu0[0]) + (child1[0] - child0[0])
    system = (cpu1[1] - cpu0[1]) + (child1[1] - child0[1])
    cpu = user + system
    child_cpu = sum(child1) - sum(child0)
    return {
        "where": where,
        "real_servers": len(addresses),
        "type": kind,
        "interval_s": interval,
        "window_s": round(t1 - t0, 3),
        "checks": checks,
        "checks_per_s": round(checks / (t1 - t0), 1),
        "expected_checks_per_s": round(len(addresses) / interval, 1),
        "cpu_s": round(cpu, 3),
        "cpu_per_check_us": round(cpu / checks * 1e6, 1) if checks else None,
        "user_per_check_us": round(user / checks * 1e6, 1) if checks else None,
        "sys_per_check_us": round(system / checks * 1e6, 1) if checks else None,
        "cpu_percent_of_one_core": round(cpu / (t1 - t0) * 100, 1),
        "checker_cpu_percent_of_one_core": round(child_cpu / (t1 - t0) * 100, 1) if child else None,
        "director_loop_lag_ms": {
            "median": round(percentile(window_lags, 0.5) * 1e3, 1),
            "p99": round(percentile(window_lags, 0.99) * 1e3, 1),
            "max": round(max(window_lags, default=float("nan")) * 1e3, 1),
            "samples": len(window_lags),
        },
        "rss_mib_before_start": round(rss_before, 1),
        "rss_mib": round(rss, 1),
        "rss_peak_mib": round(peak, 1),
        "checker_rss_mib": round(child_rss, 1) if child_rss is not None else None,
        "checker_rss_peak_mib": round(child_peak, 1) if child_peak is not None else None,
        "up": up,
        "failing_at_end": failed,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--real-servers", type=int, default=2000)
    p.add_argument("--interval", type=float, default=1.0, help="seconds between two checks of a real server")
    p.add_argument("--seconds", type=float, default=60.0, help="measurement window, seconds")
    p.add_argument("--type", choices=["http", "tcp"], default="http")
    p.add_argument(
        "--where",
        choices=["process", "engine"],
        default="process",
        help="checker child process (as directord run) or the engine on this process's loop",
    )
    p.add_argument(
        "--loop",
        choices=["asyncio", "uvloop"],
        default="asyncio",
        help="this process's event loop (the checker child runs uvloop when installed)",
    )
    p.add_argument("--json", default="out/bench/check_cost.json")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("check_cost: needs root (network namespaces)", file=sys.stderr)
        return 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    prefix = f"bcc{os.getpid()}"
    addresses = real_server_addresses(args.real_servers)
    server = build(prefix)
    try:

        def run() -> dict:
            coro = measure(addresses, args.type, args.interval, args.seconds, args.where)
            if args.loop == "uvloop":
                import uvloop

                return uvloop.run(coro)
            return asyncio.run(coro)

        row = N.call_in_netns(f"{prefix}-chk", run)
        row["loop"] = args.loop
    finally:
        server.kill()
        server.wait(10)
        N.cleanup_netns(prefix)
    row.update(
        date=time.strftime("%Y-%m-%d"),
        kernel=platform.release(),
        python=platform.python_version(),
        command="python bench/check_cost.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    )
    lag = row["director_loop_lag_ms"]
    system = (
        "directord checker process"
        if args.where == "process"
        else f"directord check engine on the director's loop ({args.loop})"
    )
    print(
        "| system | real servers | check | interval s | checks/s (expected) | CPU % of a core "
        "| CPU µs/check (user + sys) | RSS MiB (peak) | up at end | director loop lag ms (median / p99 / max) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {system} | {row['real_servers']} | {row['type']} | {row['interval_s']:g} | "
        f"{row['checks_per_s']} ({row['expected_checks_per_s']}) | {row['cpu_percent_of_one_core']} | "
        f"{row['cpu_per_check_us']} ({row['user_per_check_us']} + {row['sys_per_check_us']}) | "
        f"{row['rss_mib']} ({row['rss_peak_mib']}) | {row['up']} | "
        f"{lag['median']} / {lag['p99']} / {lag['max']} |"
    )
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(row, indent=2) + "\n")
    print(f"\nJSON: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
