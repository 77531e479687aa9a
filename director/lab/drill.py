"""`directord lab drill fail-active`: a failover drill on real IPVS in a namespace lab.

Topology: a client, two directors (dir1, dir2) and three real servers (direct
routing) on one bridge.  Both directors run `directord run` with the same
virtual service and an ``ha:`` section (dir1 preferred owner of the VIP,
bcast heartbeats on eth0, directord's fast timers).  A steady client sends
requests through the VIP (a fresh connection each, short timeouts; start,
end, result and answering real server recorded); then the active director
fails as a node does (its daemon SIGKILLed and its link taken down).  The
drill prints a timeline (fault, VIP seen on dir2, first success after the
fault), which director held the VIP at each sample, the longest gap between
successful responses, and the failed requests.  Exit status 0 when the gap
stays within deadtime + a margin for the slow VM.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .drive import DirectordProcess, ipvsadm_table
from pyroute2 import IPRoute

from .netns import Lab, call_in_netns, list_addresses

IFF_UP = 0x1

KEEPALIVE, DEADTIME = 0.2, 1.0
#: Allowed client-visible gap on top of the deadtime (seconds): announcement,
#: neighbour update and the slow emulated VM.
GAP_MARGIN = 4.0


@dataclass
class Sample:
    """One client request: start/end (seconds since the drill began), result, answering server."""

    start: float
    end: float
    ok: bool
    result: str


def drill_config(lab: Lab, node: str, work: Path) -> str:
    """The configuration of one director (virtual service + ha section)."""
    rs = "\n".join(f"      - {{address: {lab.rip(r)}, port: 80}}" for r in lab.real_servers)
    return f"""\
global:
  reconcile_interval: 5
virtual_services:
  - name: web
    address: {lab.vip}
    port: 80
    scheduler: rr
    forwarding: dr
    check: {{type: http, path: /healthz, interval: 1, timeout: 1}}
    real_servers:
{rs}
ha:
  node: {node}
  nodes: [dir1, dir2]
  media: [bcast eth0]
  authkeys: {work / 'authkeys'}
  keepalive: {KEEPALIVE}
  deadtime: {DEADTIME}
  auto_failback: true
  state_dir: {work / node / 'state'}
  resources:
    - owner: dir1
      addresses: [{lab.vip}/32/eth0]
"""


def _link_up(ns: str, ifname: str) -> bool:
    def work() -> bool:
        with IPRoute() as ipr:
            links = ipr.link_lookup(ifname=ifname)
            return bool(links) and bool(ipr.get_links(links[0])[0]["flags"] & IFF_UP)

    return call_in_netns(ns, work)


def holder(lab: Lab) -> str:
    """Which directors hold the VIP on the network right now ("dir1", "dir2", "dir1+dir2" or "-").

    A director whose eth0 is down does not count even if the address is still
    configured there (a failed node: its killed daemon could not remove it).
    """
    held = [
        d
        for d in ("dir1", "dir2")
        if _link_up(lab.ns(d), "eth0") and any(a.startswith(lab.vip + "/") for a in list_addresses(lab.ns(d), "eth0"))
    ]
    return "+".join(held) or "-"


class SteadyClient(threading.Thread):
    """Requests through the VIP at ``rate`` per second until stopped; records a `Sample` each."""

    def __init__(self, lab: Lab, t0: float, rate: float = 50.0, timeout: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.lab, self.t0, self.period, self.timeout = lab, t0, 1.0 / rate, timeout
        self.samples: list[Sample] = []
        self.halt = threading.Event()

    def run(self) -> None:
        next_at = time.monotonic()
        while not self.halt.is_set():
            start = time.monotonic()
            try:
                status, body = self.lab.get("/", timeout=self.timeout)
                ok, result = status == 200, body.strip() if status == 200 else f"HTTP {status}"
            except OSError as exc:
                ok, result = False, type(exc).__name__
            self.samples.append(Sample(start - self.t0, time.monotonic() - self.t0, ok, result))
            next_at += self.period
            delay = next_at - time.monotonic()
            if delay > 0:
                self.halt.wait(delay)
            else:
                next_at = time.monotonic()


def longest_gap(samples: list[Sample], since: float) -> tuple[float, float]:
    """Longest interval (seconds) between successive successful responses ending after ``since``; and where it starts."""
    ends = [s.end for s in samples if s.ok]
    best, at = 0.0, since
    for a, b in zip(ends, ends[1:]):
        if b > since and b - a > best:
            best, at = b - a, a
    return best, at


def run_fail_active(as_json: bool = False) -> int:
    """The fail-active drill; returns 0 when the client-visible gap stays within bounds."""
    out: dict = {"scenario": "fail-active", "timeline": [], "holders": []}

    def mark(t0: float, what: str) -> None:
        out["timeline"].append({"t": round(time.monotonic() - t0, 3), "event": what})
        if not as_json:
            print(f"  {time.monotonic() - t0:7.3f} s  {what}", flush=True)

    with Lab("ddrill", real_servers=3, directors=2, mode="dr", vip_on_director=False) as lab:
        work = Path(tempfile.mkdtemp(prefix="directord-drill-"))
        keys = work / "authkeys"
        keys.write_text("auth 1\n1 sha1 " + os.urandom(12).hex() + "\n")
        keys.chmod(0o600)
        daemons = {}
        for node in ("dir1", "dir2"):
            (work / node / "state").mkdir(parents=True)
            if os.path.exists("/proc/net/ip_vs"):
                # reschedule DR connections that reuse a client port (see README)
                lab.sysctl(node, "net.ipv4.vs.conn_reuse_mode", 3)
            d = DirectordProcess(lab, work / node, role=node)
            d.write(drill_config(lab, node, work))
            daemons[node] = d
        t0 = time.monotonic()
        if not as_json:
            print(f"lab: client {lab.addr('client')}, dir1 {lab.addr('dir1')}, dir2 {lab.addr('dir2')}, "
                  f"VIP {lab.vip}, real servers {', '.join(lab.rips)}; keepalive {KEEPALIVE} s, deadtime {DEADTIME} s")
        for d in daemons.values():
            d.start()
        mark(t0, "both directors started")
        deadline = time.monotonic() + 240
        while not (holder(lab) == "dir1" and all(
            len(ipvsadm_table(lab, n).get(f"TCP {lab.vip}:80", {}).get("dests", {})) == 3 for n in ("dir1", "dir2")
        )):
            if time.monotonic() > deadline or not all(d.alive() for d in daemons.values()):
                print("the pair did not settle:\n" + "\n".join(d.tail() for d in daemons.values()))
                return 1
            time.sleep(0.2)
        mark(t0, "dir1 holds the VIP; both IPVS tables programmed")
        time.sleep(max(0.0, t0 + 7 - time.monotonic()))  # past the 5 s start-up deadtime bonus

        client = SteadyClient(lab, t0)
        client.start()
        time.sleep(3)
        fault_at = time.monotonic() - t0
        daemons["dir1"].proc.send_signal(signal.SIGKILL)
        lab.link_set("dir1", up=False)
        mark(t0, "FAULT: dir1's daemon SIGKILLed and its link down")
        moved = None
        watch_until = time.monotonic() + DEADTIME + 20
        while time.monotonic() < watch_until:
            h = holder(lab)
            out["holders"].append({"t": round(time.monotonic() - t0, 3), "holder": h})
            if moved is None and "dir2" in h:
                moved = time.monotonic() - t0
                mark(t0, f"VIP on dir2 ({moved - fault_at:.2f} s after the fault)")
            ok_after = [s for s in client.samples if s.ok and s.start > (moved or 1e9)]
            if ok_after:
                mark(t0, f"first success after the fault, answered by {ok_after[0].result} "
                         f"({ok_after[0].end - fault_at:.2f} s after the fault)")
                break
            time.sleep(0.05)
        time.sleep(3)
        client.halt.set()
        client.join(5)
        for d in daemons.values():
            d.stop()
        samples = client.samples
        gap, gap_at = longest_gap(samples, fault_at)
        failed = [s for s in samples if not s.ok]
        out.update(
            requests=len(samples),
            failed=len(failed),
            failed_results=sorted({s.result for s in failed}),
            longest_gap_s=round(gap, 3),
            gap_starts_s=round(gap_at, 3),
            takeover_s=round(moved - fault_at, 3) if moved else None,
            bound_s=DEADTIME + GAP_MARGIN,
        )
    ok = moved is not None and gap <= DEADTIME + GAP_MARGIN
    out["ok"] = ok
    if as_json:
        print(json.dumps(out, indent=2))
    else:
        print(f"\nclient: {out['requests']} requests, {out['failed']} failed ({', '.join(out['failed_results']) or '-'})")
        print(f"longest gap between successful responses: {gap:.2f} s (starting at {gap_at:.2f} s; "
              f"bound deadtime + {GAP_MARGIN:.0f} s = {DEADTIME + GAP_MARGIN:.0f} s)")
        print("drill OK" if ok else "DRILL FAILED")
    return 0 if ok else 1


def main(scenario: str, vm: bool = False, as_json: bool = False) -> int:
    """Entry point of `directord lab drill`; with ``vm`` run inside the stock-kernel VM."""
    if scenario != "fail-active":
        print(f"unknown scenario {scenario!r}; available: fail-active")
        return 2
    if vm:
        import sys

        from . import vm as vmrun

        vmrun.ensure_vm_prerequisites()
        argv = [sys.executable, "-m", "director.cli", "lab", "drill", scenario] + (["--json"] if as_json else [])
        return vmrun.run_in_vm(argv, out_dir=tempfile.mkdtemp(prefix="directord-drill-vm-"), timeout_s=1200)
    if os.geteuid() != 0:
        print("directord lab drill needs root")
        return 2
    return run_fail_active(as_json)
