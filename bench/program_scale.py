"""Programming scale: directord's planner + netlink against `ipvsadm -R`, on the same kernel.

Run inside the stock-kernel VM (root, ip_vs):

    directord lab vm -- python bench/program_scale.py [--services 1000] [--dests 20]

Everything happens in a network namespace the benchmark creates (a dummy
interface routes the RIPs, so the kernel accepts the destinations) and
deletes.  Prints one table; times are wall-clock seconds, CPU is user+sys
seconds of this process (directord rows) or of the ipvsadm child. The
keepalived row (Debian's keepalived, checker only, no health checks) is the
time from its start until ``ipvsadm -Ln`` lists every real server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import incumbents as inc  # noqa: E402

from director.ipvs import KernelIPVS  # noqa: E402
from director.lab.netns import call_in_netns, create_netns, delete_netns, exec_in_netns, run_in_netns  # noqa: E402
from director.model import (  # noqa: E402
    DesiredService,
    DestAttrs,
    DestKey,
    RealServer,
    ServiceAttrs,
    ServiceKey,
    VirtualService,
)
from director.planner import desired_service, plan, plan_service, record_op  # noqa: E402

NS = "dbench"


def vip(i: int) -> str:
    return f"10.200.{i // 250}.{i % 250 + 1}"


def rip(j: int) -> str:
    return f"10.1.{j // 250}.{j % 250 + 1}"


def desired_table(services: int, dests: int) -> dict:
    attrs = ServiceAttrs(scheduler="wrr")
    return {
        ServiceKey(socket.AF_INET, socket.IPPROTO_TCP, vip(i), 80): DesiredService(
            attrs, {DestKey(rip(j), 80): DestAttrs(fwd_method=3, weight=1) for j in range(dests)}
        )
        for i in range(services)
    }


def configured_service(key: ServiceKey, dests: int) -> VirtualService:
    """The configured virtual service behind ``key`` in `desired_table` (wrr, DR, weight 1, quiescent)."""
    reals = tuple(RealServer(rip(j), 80) for j in range(dests))
    return VirtualService(name=f"{key.address}:80", key=key, scheduler="wrr", real_servers=reals)


def ipvsadm_rules(services: int, dests: int) -> str:
    lines = []
    for i in range(services):
        lines.append(f"-A -t {vip(i)}:80 -s wrr")
        lines.extend(f"-a -t {vip(i)}:80 -r {rip(j)}:80 -g -w 1" for j in range(dests))
    return "\n".join(lines) + "\n"


def keepalived_conf(services: int, dests: int) -> str:
    """keepalived.conf with the same table and no health checks (real servers without a checker count as up)."""
    out = ["global_defs {\n  router_id bench\n}\n"]
    for i in range(services):
        out.append(f"virtual_server {vip(i)} 80 {{\n  lb_algo wrr\n  lb_kind DR\n  protocol TCP\n")
        out.extend(f"  real_server {rip(j)} 80 {{\n    weight 1\n  }}\n" for j in range(dests))
        out.append("}\n")
    return "".join(out)


def count_dests() -> int:
    """Real servers in the namespace's IPVS table, read with ipvsadm -Ln (an independent reader)."""
    out = exec_in_netns(NS, ["ipvsadm", "-Ln"], timeout=600).stdout
    return sum(1 for line in out.splitlines() if line.lstrip().startswith("->") and "RemoteAddress" not in line)


def keepalived_row(services: int, dests: int, workdir: Path) -> tuple[str, float, float, str]:
    """Start keepalived's checker on an empty table; wall time until ipvsadm -Ln shows every real server."""
    conf = workdir / "keepalived.conf"
    conf.write_text(keepalived_conf(services, dests))
    argv = [
        inc.KEEPALIVED,
        "--dont-fork",
        "--log-console",
        "--check",
        "-f",
        str(conf),
        "-p",
        str(workdir / "k.pid"),
        "-c",
        str(workdir / "c.pid"),
        "-r",
        str(workdir / "v.pid"),
    ]
    want = services * dests
    t0 = time.monotonic()
    proc = run_in_netns(NS, argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        seen = 0
        while time.monotonic() - t0 < 900:
            seen = count_dests()
            if seen >= want:
                break
            time.sleep(0.5)
        wall = time.monotonic() - t0
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return (
        "keepalived: empty -> converged",
        wall,
        float("nan"),
        f"{seen}/{want} real servers seen (polled every 0.5 s incl. ipvsadm -Ln)",
    )


def child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def own_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def own_split() -> tuple[float, float]:
    """(user, sys) CPU seconds of this process; IPVS commands run in the kernel in our context (sys)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


async def directord_rows(services: int, dests: int) -> list[tuple[str, float, float, str]]:
    rows = []
    desired = desired_table(services, dests)
    async with KernelIPVS() as k:
        t0, c0, (u0, s0) = time.monotonic(), own_cpu(), own_split()
        ops = plan(desired, await k.dump())
        result = await k.apply_all(ops)
        u1, s1 = own_split()
        rows.append(
            (
                "directord: empty -> converged",
                time.monotonic() - t0,
                own_cpu() - c0,
                f"{len(result.done)} commands, {len(result.failed)} failed; user {u1 - u0:.2f} s, sys {s1 - s0:.2f} s",
            )
        )
        t0, c0 = time.monotonic(), own_cpu()
        table = await k.dump()
        idle = plan(desired, table)
        rows.append(
            ("directord: idle pass (dump + plan)", time.monotonic() - t0, own_cpu() - c0, f"{len(idle)} commands")
        )
        # One health change, as the daemon handles it (director.reconciler.Reconciler.service_pass):
        # the changed service alone is planned from its configuration and health against the cached
        # table (desired_service + plan_service), and its operations are sent; no dump.
        first = sorted(desired)[0]
        svc = configured_service(first, dests)
        health = {rs.key: "up" for rs in svc.real_servers}
        health[DestKey(rip(0), 80)] = "down"  # quiescent: weight 0
        t0, c0 = time.monotonic(), own_cpu()
        ops = plan_service(first, desired_service(svc, health, table.get(first)), table.get(first))
        sent = k.commands_sent
        result = await k.apply_all(ops)
        for op in result.done:
            record_op(table, op)
        rows.append(
            (
                "directord: one health change",
                time.monotonic() - t0,
                own_cpu() - c0,
                f"{len(ops)} planned ({', '.join(op.kind for op in ops)}), "
                f"{k.commands_sent - sent} netlink message(s) sent; the one service planned, as the daemon does",
            )
        )
    return rows


def flush() -> None:
    exec_in_netns(NS, ["ipvsadm", "-C"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--dests", type=int, default=20)
    args = ap.parse_args()
    if not os.path.exists("/proc/net/ip_vs"):
        print("needs a kernel with ip_vs (run it with: directord lab vm -- python bench/program_scale.py)")
        return 2
    delete_netns(NS)
    create_netns(NS)
    try:
        exec_in_netns(NS, ["ip", "link", "add", "d0", "type", "dummy"])
        exec_in_netns(NS, ["ip", "addr", "add", "10.0.0.1/8", "dev", "d0"])
        exec_in_netns(NS, ["ip", "link", "set", "d0", "up"])
        rows = call_in_netns(NS, lambda: asyncio.run(directord_rows(args.services, args.dests)))
        flush()
        rules = ipvsadm_rules(args.services, args.dests)
        t0, c0 = time.monotonic(), child_cpu()
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        exec_in_netns(NS, ["ipvsadm", "-R"], input=rules, timeout=600)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        rows.append(
            (
                "ipvsadm -R: empty -> converged",
                time.monotonic() - t0,
                child_cpu() - c0,
                f"{args.services * (args.dests + 1)} rules; user {r1.ru_utime - r0.ru_utime:.2f} s, "
                f"sys {r1.ru_stime - r0.ru_stime:.2f} s",
            )
        )
        t0, c0 = time.monotonic(), child_cpu()
        exec_in_netns(NS, ["ipvsadm", "-e", "-t", f"{vip(0)}:80", "-r", f"{rip(0)}:80", "-g", "-w", "5"])
        rows.append(("ipvsadm -e: one weight change", time.monotonic() - t0, child_cpu() - c0, "1 process"))
        missing = inc.missing_incumbents(["keepalived"])
        if not missing:
            flush()
            with tempfile.TemporaryDirectory() as tmp:
                rows.append(keepalived_row(args.services, args.dests, Path(tmp)))
        else:
            rows.append(("keepalived: not installed", float("nan"), float("nan"), "; ".join(missing)))
    finally:
        delete_netns(NS)
    print(
        f"\nIPVS programming, {args.services} virtual services x {args.dests} real servers, kernel {os.uname().release}"
    )
    print(f"{'what':<38} {'wall s':>9} {'cpu s':>9}  notes")
    for what, wall, cpu, note in rows:
        print(f"{what:<38} {wall:>9.3f} {cpu:>9.3f}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
