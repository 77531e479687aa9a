"""`directord lab demo`: the director on real IPVS in a namespace lab, as a user would see it.

A client, one director and three real servers (direct routing) on one bridge.
`directord run` programs the virtual service; the client sends requests
through the VIP and the demo prints who answered; then one real server's HTTP
process is killed while a steady client runs, and the demo prints how long it
took to leave rotation and what the client saw, then brings it back.

Needs root and a kernel with ip_vs; ``--vm`` boots the stock-kernel VM
(installing what it needs) and runs the demo there.  Exit status 0 when every
expectation held.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from .. import control
from ..status import render_status
from . import vm as vmrun
from .drive import DirectordProcess, ipvsadm_table
from .site import Lab

INTERVAL, TIMEOUT, RISE, FALL = 1.0, 1.0, 2, 2


def demo_config(lab: Lab) -> str:
    """The demo's directord configuration (wrr 1:2:3, HTTP checks on /healthz)."""
    rs = "\n".join(
        f"      - {{address: {lab.rip(r)}, port: 80, weight: {w}}}" for r, w in zip(lab.real_servers, (1, 2, 3))
    )
    check = (
        f"{{type: http, path: /healthz, expect_body: ok, interval: {INTERVAL}, timeout: {TIMEOUT}, "
        f"rise: {RISE}, fall: {FALL}}}"
    )
    return f"""\
global:
  reconcile_interval: 5
virtual_services:
  - name: web
    address: {lab.vip}
    port: 80
    scheduler: wrr
    forwarding: dr
    check: {check}
    real_servers:
{rs}
"""


def _say(text: str = "") -> None:
    print(text, flush=True)


def _wait(pred, timeout: float, step: float = 0.1) -> float | None:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if pred():
            return time.monotonic() - start
        time.sleep(step)
    return None


def _weights(lab: Lab) -> dict[str, int]:
    svc = ipvsadm_table(lab).get(f"TCP {lab.vip}:80", {"dests": {}})
    return {addr.rsplit(":", 1)[0]: d[1] for addr, d in svc["dests"].items()}


def run_demo(requests: int = 60) -> int:
    """Run the demo here (root, ip_vs available); returns 0 when every expectation held."""
    failures: list[str] = []
    with Lab("ddemo", real_servers=3, mode="dr") as lab:
        work = Path(tempfile.mkdtemp(prefix="directord-demo-"))
        d = DirectordProcess(lab, work)
        d.write(demo_config(lab))
        _say(
            f"lab: client {lab.addr('client')}, director {lab.dip} holding VIP {lab.vip}, "
            f"real servers {', '.join(lab.rips)} (direct routing)"
        )
        _say("configuration:\n" + demo_config(lab))
        d.start()
        want = {lab.rip(r): w for r, w in zip(lab.real_servers, (1, 2, 3))}
        took = _wait(lambda: _weights(lab) == want, 180)
        if took is None:
            _say("directord did not program the table:\n" + d.tail())
            return 1
        _say(f"directord programmed the table ({took:.1f} s after start); ipvsadm -Ln:")
        _say(lab.exec("dir1", ["ipvsadm", "-Ln"]).stdout)

        seen: Counter = Counter()
        for _ in range(requests):
            status, body = lab.get("/", timeout=3.0)
            seen[body.strip() if status == 200 else f"HTTP {status}"] += 1
        _say(
            f"{requests} requests from the client through {lab.vip}:80 (wrr 1:2:3): "
            + ", ".join(f"{k} {v}" for k, v in sorted(seen.items()))
        )
        expected = {r: requests * w // 6 for r, w in zip(lab.real_servers, (1, 2, 3))}
        if dict(seen) != expected:
            failures.append(f"wrr split {dict(seen)} != {expected}")

        _say("\nkilling rs2's HTTP server (SIGKILL) with a steady client running ...")
        rip2 = lab.rip("rs2")
        lab.stop_httpd("rs2", kill=True)
        t0 = time.monotonic()
        out_at = None
        results: list[tuple[float, str]] = []
        while time.monotonic() - t0 < INTERVAL * FALL + TIMEOUT + 10:
            t = time.monotonic() - t0
            try:
                status, body = lab.get("/", timeout=1.0)
                results.append((t, body.strip() if status == 200 else f"HTTP {status}"))
            except OSError as exc:
                results.append((t, f"failed ({type(exc).__name__})"))
            if out_at is None and _weights(lab).get(rip2) == 0:
                out_at = time.monotonic() - t0
            elif out_at is not None and t > out_at + 1:
                break
            time.sleep(0.05)
        failed = [t for t, r in results if r.startswith("failed") or r.startswith("HTTP")]
        if out_at is None:
            failures.append("rs2 never left rotation")
            _say("rs2 never left rotation")
        else:
            bound = INTERVAL * FALL + TIMEOUT
            _say(
                f"rs2 quiesced (weight 0) {out_at:.2f} s after the kill "
                f"(bound interval x fall + timeout = {bound:.0f} s)"
            )
            _say(
                f"client: {len(results)} requests, {len(failed)} failed"
                + (f", last failure at {max(failed):.2f} s" if failed else "")
            )
            late = [t for t in failed if t > out_at + 0.5]
            if late:
                failures.append(f"requests still failing after rs2 left rotation: {late}")
        lab.start_httpd("rs2")
        back = _wait(lambda: _weights(lab).get(rip2) == 2, 60)
        _say(f"rs2 restarted: back at weight 2 after {back:.2f} s" if back is not None else "rs2 did not come back")
        if back is None:
            failures.append("rs2 did not come back")

        try:
            _say("\ndirectord status:\n" + render_status(control.request(d.socket, "status")["status"]))
        except (OSError, ValueError, KeyError) as exc:
            failures.append(f"status over the control socket failed: {exc}")
        d.stop()
    if failures:
        _say("\nDEMO FAILED:\n  " + "\n  ".join(failures))
        return 1
    _say("\ndemo OK")
    return 0


def main(vm: bool = False, requests: int = 60) -> int:
    """Entry point of `directord lab demo`; with ``vm`` run it inside the stock-kernel VM."""
    if vm:
        vmrun.ensure_vm_prerequisites()
        out = tempfile.mkdtemp(prefix="directord-demo-vm-")
        return vmrun.run_in_vm(
            [sys.executable, "-m", "director.cli", "lab", "demo", "--requests", str(requests)],
            out_dir=out,
            timeout_s=1200,
        )
    if os.geteuid() != 0:
        print("directord lab demo needs root (namespaces, IPVS)", file=sys.stderr)
        return 2
    if not os.path.exists("/proc/net/ip_vs"):
        subprocess.run(["modprobe", "-q", "ip_vs"], check=False)
        if not os.path.exists("/proc/net/ip_vs"):
            print("this kernel has no ip_vs: use directord lab demo --vm", file=sys.stderr)
            return 2
    return run_demo(requests)
