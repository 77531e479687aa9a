"""Health-check cost of whole daemons: CPU per check and RSS of directord, keepalived's
checker and ldirectord, each checking the same real servers over HTTP (or HTTPS) every second.

Run inside the stock-kernel VM (root, ip_vs), one guest boot for every system:

    directord lab vm --timeout 1800 -- python bench/check_cpu.py [--real-servers 200] [--seconds 60] [--scheme https]

Topology: the one of ``bench/detection.py`` (``client`` -- ``dir`` -- ``farm``; NAT
forwarding), with ``--real-servers`` backends served by one process in ``farm`` that counts
the HTTP requests it receives. Each system in turn runs in ``dir`` with one virtual
service holding every backend and an HTTP check of each every second:

* ``directord``: ``directord run`` and its checker child process (check interval 1 s,
  timeout 1 s; a fresh connection per check);
* ``keepalived``: ``keepalived --check`` (the checker process and its parent), HTTP_GET with
  delay_loop 1, connect_timeout 1;
* ``ldirectord``: ``ldirectord`` with checkinterval 1, checktimeout 1 (negotiate check of the
  same URL), as far as it keeps up.

``--scheme https``: the farm serves TLS on the same port with a self-signed certificate
(ECDSA P-256, made once per run with ``openssl req`` into ``<out-dir>/check_cpu/``) and
every system checks over HTTPS: directord ``type: https, verify_tls: none``, keepalived
``SSL_GET`` (no ``SSL`` block: no verification), ldirectord ``service=https``, whose LWP
skips the name but always verifies the chain, so it is given the farm's certificate as its
CA (``PERL_LWP_SSL_CA_FILE``; one signature check per handshake more than the others).
Each check is a fresh connection, so a full TLS handshake. Everything else is the same.

Once every backend is in the table, after a warm-up of ``--warmup`` seconds, the bench
reads over ``--seconds`` seconds: the CPU time (user + sys, including reaped children,
from ``/proc/PID/stat``) of the system's processes, and the requests the farm received
(the checks actually made). It reports checks per second against the expected rate, CPU
per check (microseconds), CPU as a share of one core, and the summed RSS of the system's
processes (``VmRSS``) at the end of the window.

Output: a markdown table on stdout, ``<out-dir>/check_cpu.json`` (with the scheme) and each system's
configuration and log under ``<out-dir>/check_cpu/<system>/``. Exit status 2, before any
namespace is made, when a chosen system's program (keepalived, ldirectord) is not installed
(`incumbents.missing_incumbents`: the message names the ``apt-get install`` command).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import detection as det  # noqa: E402
import incumbents as inc  # noqa: E402

from director.lab.netns import exec_in_netns  # noqa: E402

#: System name here -> the configuration detection.make_daemon writes for it.
SYSTEMS = {"directord": "directord", "keepalived": "keepalived-tuned", "ldirectord": "ldirectord-tuned"}
#: Scheme -> system -> its check settings in words (the table's settings column).
SETTINGS = {
    "http": {
        "directord": "HTTP check, interval 1 s, timeout 1 s",
        "keepalived": "HTTP_GET, delay_loop 1, connect_timeout 1 (checker process + parent)",
        "ldirectord": "negotiate http, checkinterval 1, checktimeout 1",
    },
    "https": {
        "directord": "HTTPS check (verify_tls none), interval 1 s, timeout 1 s",
        "keepalived": "SSL_GET, delay_loop 1, connect_timeout 1 (checker process + parent)",
        "ldirectord": "negotiate https (farm certificate as CA), checkinterval 1, checktimeout 1",
    },
}
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(f"[check_cpu {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def proc_cpu_seconds(stat_text: str) -> float:
    """utime + stime + cutime + cstime of a ``/proc/PID/stat`` line, in seconds (fields 14-17,
    proc(5); the command name in parentheses may contain spaces, so fields are counted after
    its closing parenthesis)."""
    fields = stat_text.rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): utime is field 14 -> index 11
    return sum(int(x) for x in fields[11:15]) / CLK_TCK


def rss_mib(pid: int) -> float:
    """VmRSS of ``pid`` in MiB (0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def cpu_of(pids: list[int]) -> dict[int, float]:
    """CPU seconds per pid (pids that vanished are left out)."""
    out = {}
    for p in pids:
        try:
            out[p] = proc_cpu_seconds(Path(f"/proc/{p}/stat").read_text())
        except (OSError, IndexError, ValueError):
            pass
    return out


def command_of(pid: int) -> str:
    """The first 60 characters of process ``pid``'s command line (``?`` once it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()[:60]
    except OSError:
        return "?"


def measure(
    t: det.Topo, system: str, n: int, seconds: float, warmup: float, timeout: float, out: Path, scheme: str = "http"
) -> dict:
    """Run ``system`` against ``n`` backends, checking over ``scheme`` (``t``'s farm must serve it);
    returns its row (see the module notes)."""
    res: dict = {
        "system": system,
        "scheme": scheme,
        "settings": SETTINGS[scheme][system],
        "real_servers": n,
        "problems": [],
    }
    workdir = inc.local_dir(f"cpu-{system}")
    service = inc.Service(det.VIP, det.PORT, tuple(det.rip(i) for i in range(n)), "nat")
    t.start_farm(workdir, [])
    exec_in_netns(t.dir, ["ipvsadm", "-C"], check=False)
    d = det.make_daemon(t, SYSTEMS[system], service, workdir, scheme)
    watch = inc.TableWatch(t.dir, t0=time.monotonic(), interval=0.5)
    watch.start()
    try:
        d.start()
        svc = f"{det.VIP}:{det.PORT}"
        want = [f"{det.rip(i)}:{det.PORT}" for i in range(n)]
        waited = inc.wait_until(
            lambda: all(watch.latest.get(svc, {}).get(h, 0) > 0 for h in want),
            timeout,
            0.5,
            f"{system}: every backend in the table",
        )
        log(f"{system}: {n} backends in the table after {waited:.1f} s")
        watch.stop()  # nothing of the bench's own polling during the window
        time.sleep(warmup)
        pids = d.pids()
        cpu0, req0, t0 = cpu_of(pids), inc.farm_requests(t.farm), time.monotonic()
        time.sleep(seconds)
        cpu1, req1, t1 = cpu_of(pids), inc.farm_requests(t.farm), time.monotonic()
        rss = sum(rss_mib(p) for p in d.pids())
        lost = [p for p in cpu0 if p not in cpu1]
        if lost:
            res["problems"].append(f"processes gone during the window: {lost}")
        cpu = sum(cpu1[p] - cpu0[p] for p in cpu0 if p in cpu1)
        checks = req1 - req0
        window = t1 - t0
        res.update(
            {
                "processes": len(pids),
                "window_s": round(window, 2),
                "checks": checks,
                "checks_per_s": round(checks / window, 1),
                "expected_checks_per_s": float(n),
                "cpu_s": round(cpu, 2),
                "cpu_percent_of_one_core": round(cpu / window * 100, 1),
                "cpu_per_check_us": round(cpu / checks * 1e6) if checks else None,
                "rss_mib": round(rss, 1),
                # each process's share: which of the system's processes spends the CPU
                "cpu_per_check_us_by_process": {
                    f"{p} {command_of(p)}": round((cpu1[p] - cpu0[p]) / checks * 1e6) if checks else None
                    for p in cpu0
                    if p in cpu1
                },
            }
        )
        log(f"{system}: {res['checks_per_s']} checks/s, {res['cpu_per_check_us']} µs/check, {res['rss_mib']} MiB")
    except Exception as e:
        res["problems"].append(f"{type(e).__name__}: {e}")
        log(f"{system} failed: {type(e).__name__}: {e}")
    finally:
        watch.stop()
        d.stop(10)
        t.stop_farm()
        exec_in_netns(t.dir, ["ipvsadm", "-C"], check=False)
        inc.copy_files(workdir, out / "check_cpu" / system)
        subprocess.run(["rm", "-rf", str(workdir)], check=False)
    return res


def render(rows: list[dict]) -> str:
    """Markdown table of the rows."""
    headers = [
        "system",
        "check settings",
        "real servers",
        "checks/s (expected)",
        "CPU % of a core",
        "CPU µs/check",
        "RSS MiB",
        "problems",
    ]
    body = [
        [
            r["system"],
            r["settings"],
            r["real_servers"],
            f"{r.get('checks_per_s', '-')} ({r.get('expected_checks_per_s', '-')})",
            r.get("cpu_percent_of_one_core", "-"),
            r.get("cpu_per_check_us", "-"),
            r.get("rss_mib", "-"),
            "; ".join(r["problems"]) or "-",
        ]
        for r in rows
    ]
    return inc.markdown_table(headers, body)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--real-servers", type=int, default=200, help="backends (at most 240)")
    ap.add_argument("--seconds", type=float, default=60.0, help="measurement window, seconds")
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds after the table is complete")
    ap.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for a complete table")
    ap.add_argument("--scheme", default="http", choices=("http", "https"), help="the checks' protocol")
    ap.add_argument("--out-dir", default=str(inc.REPO / "out" / "bench"))
    args = ap.parse_args(argv)
    missing = inc.missing_incumbents(args.systems)
    if missing:  # refused before the namespaces are built, not found out by a table timeout
        for line in missing:
            print(f"check_cpu: cannot run: {line}", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("check_cpu: needs root (network namespaces, ip_vs)", file=sys.stderr)
        return 2
    if not 0 < args.real_servers <= 240:
        print("check_cpu: --real-servers must be 1..240", file=sys.stderr)
        return 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    out = Path(args.out_dir)
    tls = None
    if args.scheme == "https":  # one certificate for the whole run
        tls = (out / "check_cpu" / "farm-cert.pem", out / "check_cpu" / "farm-key.pem")
        try:
            inc.self_signed_cert(*tls)
        except (OSError, subprocess.CalledProcessError) as e:
            print(f"check_cpu: cannot make the farm's certificate with openssl: {e}", file=sys.stderr)
            return 2
    t = det.Topo(f"bcp{os.getpid() % 10000}", args.real_servers, tls)
    rows = []
    try:
        t.build()
        for system in args.systems:
            log(f"system {system}")
            rows.append(
                measure(t, system, args.real_servers, args.seconds, args.warmup, args.timeout, out, args.scheme)
            )
    finally:
        t.close()
    doc = {
        "date": time.strftime("%Y-%m-%d"),
        "kernel": platform.release(),
        "command": "python bench/check_cpu.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "scheme": args.scheme,
        "results": rows,
    }
    inc.write_json(out / "check_cpu.json", doc)
    print(render(rows))
    print(f"\nJSON: {out / 'check_cpu.json'}")
    return 0 if all(not r["problems"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
