"""Real-server failure detection: how long after a backend's HTTP server stops until the
kernel's IPVS table shows it out (weight 0 or removed), and until a client through the VIP
stops seeing errors; directord against ldirectord and keepalived's checker.

Run inside the stock-kernel VM (root, ip_vs), one guest boot for every system:

    directord lab vm -- python bench/detection.py [--repeat 5] [--systems NAME ...] [--no-hung]

Topology (namespaces made here): ``client`` -- ``dir`` -- ``farm``. The director ``dir``
holds the VIP and forwards by NAT to ``--backends`` real servers, all served by one
process in ``farm`` (one listener per RIP; `incumbents.main` ``farm``), so stopping one
backend is closing one listener (new connections are refused at once) without starting
or stopping a process. A steady client (``--rate`` requests/s, fresh connection each)
runs from ``client``; the IPVS table is read from ``/proc/net/ip_vs`` in ``dir`` every
20 ms (the same table ``ipvsadm -Ln`` prints).

Each repetition stops a different backend (no waiting for a re-add between
repetitions); all come back between systems. Times are seconds from the stop:
``table``: the backend is out of the table; ``client``: end of the last failed client
request.

Hung case (``--hung-backends``, default 50): one extra backend accepts connections and
never answers from the start, among 50 healthy ones; time until another backend's stop
shows in the table (no client).

Systems (``--systems``): ``directord`` (HTTP check at its defaults: interval 1 s,
retry_interval 0.5 s, timeout 1 s, rise 2, fall 2), ``ldirectord`` (defaults: checkinterval 10,
checktimeout 5, failurecount 1, negotiate check), ``ldirectord-tuned`` (checkinterval 1,
checktimeout 1), ``keepalived`` (HTTP_GET at defaults: delay_loop 60, connect_timeout 5,
retry 1, delay_before_retry 1), ``keepalived-tuned`` (delay_loop 1, connect_timeout 1,
retry 1, delay_before_retry 0.5).

Output: a markdown table on stdout, ``out/bench/detection.json`` and each system's
configuration under ``out/bench/detection/<system>/``. Exit status 2, before any namespace
is made, when a chosen system's incumbent (ldirectord, keepalived) is not installed
(`incumbents.missing_incumbents`).
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import incumbents as inc  # noqa: E402

from director.lab.netns import (  # noqa: E402
    add_address,
    add_route,
    add_veth,
    cleanup_netns,
    create_netns,
    exec_in_netns,
    set_sysctls,
)

OUT = inc.REPO / "out" / "bench"
SYSTEMS = ("directord", "ldirectord", "ldirectord-tuned", "keepalived", "keepalived-tuned")
VIP = "10.78.0.100"
PORT = 80


def rip(i: int) -> str:
    """Address of backend ``i`` (0-based) in the farm."""
    return f"10.78.1.{11 + i}"


def settings(system: str) -> str:
    """The check settings of ``system`` in words (for the table)."""
    return {
        "directord": "interval 1, retry_interval 0.5, timeout 1, fall 2 (defaults)",
        "ldirectord": "checkinterval 10, checktimeout 5 (defaults)",
        "ldirectord-tuned": "checkinterval 1, checktimeout 1",
        "keepalived": "delay_loop 60, connect_timeout 5, retry 1, delay_before_retry 1 (defaults)",
        "keepalived-tuned": "delay_loop 1, connect_timeout 1, retry 1, delay_before_retry 0.5",
    }[system]


def log(msg: str) -> None:
    print(f"[detection {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Topo:
    """client -- dir -- farm; ``n`` backend addresses in farm. ``tls``: ``(certificate, key)``
    PEM files with which the farm serves HTTPS on the same port (None: plain HTTP)."""

    def __init__(self, prefix: str, n: int, tls: tuple[Path, Path] | None = None) -> None:
        self.prefix, self.n, self.tls = prefix, n, tls
        self.client, self.dir, self.farm = (f"{prefix}-client", f"{prefix}-dir", f"{prefix}-farm")
        self.farm_proc: inc.Daemon | None = None

    def build(self) -> None:
        cleanup_netns(self.prefix)
        for ns in (self.client, self.dir, self.farm):
            create_netns(ns)
        add_veth(self.client, "eth0", self.dir, "eth0")
        add_veth(self.dir, "eth1", self.farm, "eth0")
        add_address(self.client, "eth0", "10.78.0.2/24")
        add_route(self.client, "0.0.0.0/0", gateway="10.78.0.1")
        add_address(self.dir, "eth0", "10.78.0.1/24")
        add_address(self.dir, "eth0", f"{VIP}/32")
        add_address(self.dir, "eth1", "10.78.1.1/24")
        for i in range(self.n):
            add_address(self.farm, "eth0", f"{rip(i)}/24")
        add_route(self.farm, "0.0.0.0/0", gateway="10.78.1.1")
        set_sysctls(self.dir, {"net.ipv4.ip_forward": 1})
        try:
            set_sysctls(self.dir, {"net.ipv4.vs.conn_reuse_mode": 3, "net.ipv4.vs.expire_nodest_conn": 1})
        except FileNotFoundError:
            log("no ip_vs here: nothing will reach the table")

    def start_farm(self, workdir: Path, hung: list[str]) -> None:
        self.stop_farm()
        argv = [sys.executable, str(Path(__file__).resolve().parent / "incumbents.py"), "farm", "--port", str(PORT)]
        for h in hung:
            argv += ["--hang", h]
        if self.tls is not None:
            argv += ["--tls-cert", str(self.tls[0]), "--tls-key", str(self.tls[1])]
        argv += [rip(i) for i in range(self.n)]
        self.farm_proc = inc.Daemon(self.farm, argv, workdir / "farm.log", "incumbents.py", env=inc.repo_env())
        self.farm_proc.start()
        inc.wait_until(lambda: "listening" in (workdir / "farm.log").read_text(errors="replace"), 180, 0.2, "farm up")

    def stop_farm(self) -> None:
        if self.farm_proc is not None:
            self.farm_proc.stop(5)
            self.farm_proc = None

    def close(self) -> None:
        self.stop_farm()
        cleanup_netns(self.prefix)


def make_daemon(t: Topo, system: str, service: inc.Service, workdir: Path, scheme: str = "http") -> inc.Daemon:
    """Write ``system``'s configuration into ``workdir``; the daemon that runs it in ``dir``.
    ``scheme`` ``"https"``: its checks use HTTPS without verifying the certificate, except
    ldirectord's, which cannot skip the chain: it is given the farm's certificate (``t.tls``) as
    its CA (``PERL_LWP_SSL_CA_FILE``), the name is not checked."""
    workdir.mkdir(parents=True, exist_ok=True)
    if system == "directord":
        conf = workdir / "directord.yaml"
        conf.write_text(inc.directord_conf(service, scheme=scheme))
        return inc.Daemon(
            t.dir,
            inc.directord_argv(conf, workdir / "ctl.sock"),
            workdir / "directord.log",
            str(conf),
            env=inc.repo_env(),
        )
    if system.startswith("ldirectord"):
        conf = workdir / "ldirectord.cf"
        tuned = system.endswith("tuned")
        conf.write_text(
            inc.ldirectord_cf(
                service,
                checkinterval=1 if tuned else None,
                checktimeout=1 if tuned else None,
                logfile=str(workdir / "ldirectord-own.log"),
                scheme=scheme,
            )
        )
        env = dict(os.environ, PERL_LWP_SSL_CA_FILE=str(t.tls[0])) if scheme == "https" and t.tls else None
        return inc.Daemon(
            t.dir, [inc.LDIRECTORD, "-d", str(conf), "start"], workdir / "ldirectord.log", str(conf), env=env
        )
    conf = workdir / "keepalived.conf"
    if system.endswith("tuned"):
        text = inc.keepalived_conf(
            router_id="dir",
            service=service,
            delay_loop=1,
            connect_timeout=1,
            retry=1,
            delay_before_retry=0.5,
            scheme=scheme,
        )
    else:
        text = inc.keepalived_conf(router_id="dir", service=service, scheme=scheme)
    conf.write_text(text)
    return inc.Daemon(
        t.dir, inc.keepalived_argv(conf, workdir, "ka", check_only=True), workdir / "keepalived.log", str(conf)
    )


#: Check interval per system (seconds): the range of the random delay before each stop.
INTERVAL_S = {
    "directord": 1.0,
    "ldirectord": 10.0,
    "ldirectord-tuned": 1.0,
    "keepalived": 60.0,
    "keepalived-tuned": 1.0,
}


def measure(
    t: Topo, system: str, *, backends: int, repeat: int, hung: int, rate: float, client_timeout: float, timeout: float
) -> dict:
    """Run one system: ``repeat`` stops with a client (``backends`` backends), then (``hung`` > 0)
    ``repeat`` stops among ``hung`` healthy backends plus one hung backend. Returns its record."""
    res: dict = {"system": system, "settings": settings(system), "problems": []}
    phase_s = INTERVAL_S[system]
    base = OUT / "detection" / system
    subprocess.run(["rm", "-rf", str(base)], check=False)
    cases = [("plain", backends, [], True)]
    if hung:
        cases.append(("hung", hung + 1, [rip(hung)], False))
    for case, n, hung_addrs, with_client in cases:
        workdir = inc.local_dir(f"{system}-{case}")  # the control socket needs a local file system
        service = inc.Service(VIP, PORT, tuple(rip(i) for i in range(n)), "nat")
        t.start_farm(workdir, hung_addrs)
        exec_in_netns(t.dir, ["ipvsadm", "-C"], check=False)
        d = make_daemon(t, system, service, workdir)
        t0 = time.monotonic()
        watch = inc.TableWatch(t.dir, t0=t0)
        watch.start()
        client = None
        reps = []
        try:
            d.start()
            svc = f"{VIP}:{PORT}"
            healthy = [f"{rip(i)}:{PORT}" for i in range(n) if rip(i) not in hung_addrs]

            def ready(watch=watch, svc=svc, healthy=healthy) -> bool:
                tab = watch.latest.get(svc, {})
                return all(tab.get(h, 0) > 0 for h in healthy)

            waited = inc.wait_until(ready, timeout, 0.1, f"{system}: every healthy backend in the table")
            log(f"{system} {case}: table ready after {waited:.1f} s")
            if with_client:
                client = inc.SteadyClient(t.client, VIP, PORT, t0=t0, rate=rate, timeout=client_timeout)
                client.start()
                time.sleep(2.0)
            for i in range(repeat):
                victim = rip(i)
                watch.arm(svc, f"{victim}:{PORT}")
                # a random phase against the check cycle (otherwise each repetition's fixed length
                # can lock the stop to one point of a long interval)
                time.sleep(0.05 + random.uniform(0.0, phase_s))
                t_stop = time.monotonic() - t0
                inc.farm_command(t.farm, "stop", victim)
                try:
                    inc.wait_until(
                        lambda watch=watch: watch.out_at is not None, timeout, 0.05, f"{victim} out of the table"
                    )
                except TimeoutError as e:
                    res["problems"].append(f"{case} #{i + 1}: {e}")
                    reps.append({"victim": victim, "table_s": None, "client_s": None})
                    continue
                table_s = watch.out_at - t_stop  # type: ignore[operator]
                rep = {"victim": victim, "table_s": round(table_s, 3)}
                if client is not None:
                    time.sleep(2.0)
                    last = inc.last_error_end(client.since(t_stop), t_stop)
                    rep["client_s"] = round(last - t_stop, 3) if last is not None else 0.0
                    rep["failed_requests"] = sum(1 for s in client.since(t_stop) if not s.ok)
                reps.append(rep)
                log(f"{system} {case} #{i + 1}: table {table_s:.2f} s, client {rep.get('client_s')}")
                time.sleep(0.5)
        except Exception as e:
            res["problems"].append(f"{case}: {type(e).__name__}: {e}")
            log(f"{system} {case} failed: {type(e).__name__}: {e}")
        finally:
            if client is not None:
                client.stop()
                res[f"{case}_client_rate"] = (
                    round(len(client.samples) / max(client.samples[-1].end - client.samples[0].start, 1e-9), 1)
                    if client.samples
                    else 0
                )
            watch.stop()
            d.stop(10)
            exec_in_netns(t.dir, ["ipvsadm", "-C"], check=False)
            inc.copy_files(workdir, base / case)
            subprocess.run(["rm", "-rf", str(workdir)], check=False)
        res[case] = {
            "backends": n,
            "hung": hung_addrs,
            "repetitions": reps,
            "table": inc.stats([r["table_s"] for r in reps]),
            "client": inc.stats([r.get("client_s") for r in reps]) if with_client else None,
        }
    return res


def render(results: list[dict]) -> str:
    """Markdown table: table/client times (median / max, seconds) and the hung case."""
    headers = [
        "system",
        "check settings",
        "out of table median (s)",
        "max (s)",
        "client errors end median (s)",
        "max (s)",
        "n",
        "with 1 hung of 51: out of table median (s)",
        "max (s)",
        "n",
    ]
    rows = []
    for r in results:
        p, h = r.get("plain") or {}, r.get("hung") or {}
        pt, pc, ht = p.get("table") or {}, p.get("client") or {}, h.get("table") or {}
        rows.append(
            [
                r["system"],
                r["settings"],
                inc.fmt_s(pt.get("median")),
                inc.fmt_s(pt.get("max")),
                inc.fmt_s(pc.get("median")),
                inc.fmt_s(pc.get("max")),
                pt.get("n", 0),
                inc.fmt_s(ht.get("median")),
                inc.fmt_s(ht.get("max")),
                ht.get("n", 0) if h else "-",
            ]
        )
    return inc.markdown_table(headers, rows)


def set_out(path: Path) -> None:
    """Where results and configurations go (default ``out/bench``)."""
    global OUT
    OUT = path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    ap.add_argument("--backends", type=int, default=8, help="backends in the plain case (> repeat)")
    ap.add_argument("--hung-backends", type=int, default=50, help="healthy backends beside the hung one; 0 skips")
    ap.add_argument(
        "--hung-systems",
        nargs="+",
        default=None,
        choices=SYSTEMS,
        help="systems that also run the hung case (default: all selected)",
    )
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--client-timeout", type=float, default=0.25)
    ap.add_argument("--timeout", type=float, default=150.0, help="seconds to wait for a table change")
    ap.add_argument(
        "--out-dir",
        default=str(inc.REPO / "out" / "bench"),
        help="results folder (JSON and configurations); in the VM give one under `lab vm --out`, "
        "the guest's other folders are thrown away",
    )
    a = ap.parse_args(argv)
    missing = inc.missing_incumbents(a.systems)
    if missing:  # refused before the namespaces are built, not found out by a table timeout
        for line in missing:
            log(f"cannot run: {line}")
        return 2
    set_out(Path(a.out_dir))
    a.json = str(OUT / "detection.json")
    if os.environ.get("DIRECTORD_IN_VM") == "1" and a.out_dir == str(inc.REPO / "out" / "bench"):
        log("warning: results under the checkout vanish with the guest; pass --out-dir inside `lab vm --out`")
    if a.backends <= a.repeat:
        ap.error("--backends must exceed --repeat (each repetition stops a different backend)")
    if not os.path.exists("/proc/net/ip_vs"):
        subprocess.run(["modprobe", "ip_vs"], check=False)
    t = Topo(f"dt{os.getpid() % 100000}", max(a.backends, a.hung_backends + 1))
    kernel = os.uname().release
    results = []
    try:
        t.build()
        for s in a.systems:
            log(f"system {s}")
            hung = a.hung_backends if (a.hung_systems is None or s in a.hung_systems) else 0
            results.append(
                measure(
                    t,
                    s,
                    backends=a.backends,
                    repeat=a.repeat,
                    hung=hung,
                    rate=a.rate,
                    client_timeout=a.client_timeout,
                    timeout=a.timeout,
                )
            )
            inc.write_json(
                Path(a.json),
                {"benchmark": "detection", "kernel": kernel, "repeat": a.repeat, "rate": a.rate, "results": results},
            )
    finally:
        t.close()
    print(
        f"Real-server failure detection (kernel {kernel}, {a.repeat} repetitions, NAT, "
        f"{a.backends} backends, client {a.rate:g} req/s)\n"
    )
    print(render(results))
    for r in results:
        for p in r["problems"]:
            print(f"- {r['system']}: {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
