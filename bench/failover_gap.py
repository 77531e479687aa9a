"""Failover gap: how long a client through the VIP goes without a successful response when
the active director fails, for directord, keepalived (VRRP) and heartbeat + IPaddr.

Run inside the stock-kernel VM (root, ip_vs), one guest boot for every system:

    directord lab vm -- python bench/failover_gap.py [--repeat 5] [--systems NAME ...] [--faults node graceful]

Lab (director.lab.site.Lab): a client, directors ``dir1``/``dir2`` and two real servers on
one bridge (DR forwarding, lab HTTP servers), plus a heartbeat bridge joining the
directors' ``eth1``. dir1 is the preferred holder of the VIP in every system.

Faults, each repeated ``--repeat`` times:

* ``node``: node failure of dir1: all its links down, then every process of its daemon
  SIGKILLed (links first, so no goodbye packet leaves it);
* ``graceful``: SIGTERM to dir1's daemon (it releases the VIP and tells its peer).

Between repetitions dir1 is brought back as after a reboot: its stale VIP removed, links
up, daemon started, and the bench waits until dir1 holds the VIP again (fail-back) and
the client is served. A steady client (``--rate`` requests/s, fresh TCP connection each,
``--client-timeout`` seconds per request) runs from the client namespace throughout; the
gap is the longest interval between the ends of two successful responses around the fault.
The client is open-loop (a request starts every 1/rate s whatever the earlier ones are
doing), so the gap is resolved to one period (10 ms), not to one client timeout. Each fault
comes after a random delay of up to 1 s (a random phase against the heartbeat or VRRP
advertisement schedule); ``fault_at`` in the JSON is its wall-clock time, to read beside
the daemons' logs.

Systems (``--systems``): ``directord`` (shipped defaults: keepalive 0.2 s, deadtime 0.8 s;
HTTP checks at defaults), ``directord-hooks`` (the same, plus role hooks on both directors:
on ``ha.acquired`` and ``ha.released`` one that sleeps 10 s and one that exits 3; compare its
gap with ``directord``'s of the same boot), ``directord-eq1`` (keepalive 1 s, deadtime 3.61 s = keepalived's
master-down interval at advert_int 1 and backup priority 100), ``directord-eq02``
(keepalive 0.2 s, deadtime 0.72 s = the same at advert_int 0.2), ``keepalived-1``
(advert_int 1), ``keepalived-0.2`` (advert_int 0.2, VRRPv3), ``heartbeat`` (heartbeat
3.0.6 + IPaddr at its defaults: keepalive 1 s, deadtime 30 s), ``heartbeat-0.2``
(keepalive 0.2 s, deadtime 1 s, initdead 12 s). keepalived runs its VRRP instance and the
virtual_server with HTTP_GET checks; heartbeat moves only the VIP (IPaddr), so for the
heartbeat rows both directors' IPVS tables are loaded once with ``ipvsadm`` beforehand.

Output: a markdown table on stdout, ``out/bench/failover_gap.json`` (every repetition's
gap, first success after the fault, failed requests) and each system's generated
configuration under ``out/bench/failover_gap/<system>/``. Exit status 2, before any lab is
built, when a chosen system's incumbent is not installed (`incumbents.missing_incumbents`:
keepalived for ``keepalived-*``, heartbeat for ``heartbeat*``; the message names the
program and the Debian package).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "unit"))

import incumbents as inc  # noqa: E402

from director import control  # noqa: E402
from director.lab.netns import del_address, exec_in_netns, list_addresses  # noqa: E402
from director.lab.site import Lab
from ha.model import DEFAULT_DEADTIME, DEFAULT_INITDEAD, DEFAULT_KEEPALIVE  # noqa: E402

OUT = inc.REPO / "out" / "bench"
BACKUP_PRIORITY, MASTER_PRIORITY = 100, 150
VRID = 51
#: Seconds after dir1 holds the VIP (its HA node surely running) before it is failed (see run_system).
DT_BUMP_S = 6.0

SYSTEMS = (
    "directord",
    "directord-hooks",
    "directord-eq1",
    "directord-eq02",
    "keepalived-1",
    "keepalived-0.2",
    "heartbeat",
    "heartbeat-0.2",
)

#: Timers per system (seconds). Directord rows: ha section; keepalived: advert_int;
#: heartbeat: ha.cf (None: heartbeat's default).
DIRECTORD_TIMERS = {
    "directord": {},
    "directord-hooks": {},
    "directord-eq1": {
        "keepalive": 1.0,
        "warntime": 2.0,
        "deadtime": round(inc.master_down_interval(1.0, BACKUP_PRIORITY), 2),
    },
    "directord-eq02": {
        "keepalive": 0.2,
        "warntime": 0.5,
        "deadtime": round(inc.master_down_interval(0.2, BACKUP_PRIORITY), 2),
    },
}
KEEPALIVED_ADVERT = {"keepalived-1": 1.0, "keepalived-0.2": 0.2}
HEARTBEAT_TIMERS = {"heartbeat": {}, "heartbeat-0.2": {"keepalive": 0.2, "deadtime": 1.0, "initdead": 12.0}}


def initdead(system: str) -> float:
    """Seconds after start during which the HA node still waits for its peer with the longer
    ``initdead`` timer instead of deadtime (ha.config.resolve_timers; heartbeat/config.c for heartbeat);
    0 for keepalived. The first fault comes only after it has passed on the survivor."""
    if system in DIRECTORD_TIMERS:
        return max(DEFAULT_INITDEAD, DIRECTORD_TIMERS[system].get("deadtime", DEFAULT_DEADTIME))
    if system in HEARTBEAT_TIMERS:
        t = HEARTBEAT_TIMERS[system]
        if "initdead" in t:
            return t["initdead"]
        dead = t.get("deadtime", 30.0)
        return dead if dead > 10 else (12.0 if dead < 6 else 2 * dead)
    return 0.0


def log(msg: str) -> None:
    print(f"[failover {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def detection_time(system: str) -> str:
    """The configured failure-detection time of ``system`` in words (for the table)."""
    if system in DIRECTORD_TIMERS:
        t = DIRECTORD_TIMERS[system]
        return (
            f"keepalive {t.get('keepalive', DEFAULT_KEEPALIVE):g} s, deadtime {t.get('deadtime', DEFAULT_DEADTIME):g} s"
        )
    if system in KEEPALIVED_ADVERT:
        a = KEEPALIVED_ADVERT[system]
        return f"advert_int {a:g} s, master down {inc.master_down_interval(a, BACKUP_PRIORITY):.2f} s"
    t = HEARTBEAT_TIMERS[system]
    return f"keepalive {t.get('keepalive', 1.0):g} s, deadtime {t.get('deadtime', 30.0):g} s"


class Bench:
    """One lab, one system at a time."""

    def __init__(self, prefix: str, rate: float, client_timeout: float) -> None:
        self.lab = Lab(
            prefix, real_servers=2, directors=2, mode="dr", ha_link=True, vip_on_director=False, ready_timeout=180.0
        )
        self.rate, self.client_timeout = rate, client_timeout
        self.t0 = time.monotonic()
        self.client: inc.SteadyClient | None = None
        #: without IPVS (a kernel lacking ip_vs): each director serves HTTP itself on the VIP,
        #: keepalived gets no virtual_server and heartbeat no table; checks the HA mechanics only
        self.no_ipvs = False

    @property
    def vip(self) -> str:
        return self.lab.vip

    def service(self) -> inc.Service:
        return inc.Service(self.lab.vip, 80, tuple(self.lab.rips), "dr")

    def now(self) -> float:
        return time.monotonic() - self.t0

    def holds(self, node: str) -> bool:
        try:
            return any(a.split("/")[0] == self.vip for a in list_addresses(self.lab.ns(node), "eth0"))
        except OSError:
            return False

    def served(self, since: float, span: float = 1.0) -> bool:
        """Every request of the last ``span`` seconds succeeded, and some did, after ``since``."""
        assert self.client is not None
        now = self.now()
        recent = [s for s in self.client.since(max(since, now - span))]
        return len(recent) >= 3 and all(s.ok for s in recent) and now - since >= span

    def settle(self, timeout: float) -> float:
        start = self.now()
        inc.wait_until(
            lambda: self.holds("dir1") and not self.holds("dir2") and self.served(start),
            timeout,
            0.2,
            "dir1 holding the VIP alone and serving",
        )
        return self.now() - start

    def node_links(self, node: str, up: bool) -> None:
        """All of ``node``'s links (service eth0, heartbeat eth1) up or down in one system call."""
        inc.links_at_once(self.lab.ns(node), ("eth0", "eth1"), up=up)


#: Where ``directord-hooks`` keeps its hook programs: a root-owned directory (a hook's program
#: must be one only root can replace; the repository may be mounted with other owners in the VM).
HOOKS_DIR = Path("/run/directord-bench-hooks")
#: Seconds the slow role hook of ``directord-hooks`` sleeps.
SLOW_HOOK = 10


def role_hooks() -> str:
    """The ``notify:`` section of ``directord-hooks`` (shipped timers plus role hooks): on
    ``ha.acquired`` and ``ha.released``, a hook that sleeps `SLOW_HOOK` seconds and one that
    fails (exit 3); the programs are written to `HOOKS_DIR`."""
    HOOKS_DIR.mkdir(mode=0o755, exist_ok=True)
    os.chmod(HOOKS_DIR, 0o755)
    slow, fail = HOOKS_DIR / "slow", HOOKS_DIR / "fail"
    slow.write_text(f"#!/bin/sh\nsleep {SLOW_HOOK}\n")
    fail.write_text("#!/bin/sh\necho failing on purpose; exit 3\n")
    for path in (slow, fail):
        path.chmod(0o755)
    return (
        "notify:\n  hooks:\n"
        f"    - {{name: slow, events: [ha.acquired, ha.released], command: [{slow}], timeout: {SLOW_HOOK + 5}}}\n"
        f"    - {{name: fail, events: [ha.acquired, ha.released], command: [{fail}]}}\n"
    )


class DirectordSys:
    def __init__(self, b: Bench, name: str, workdir: Path) -> None:
        self.b, self.name, self.dir = b, name, workdir
        keys = workdir / "authkeys"
        keys.write_text("auth 1\n1 sha1 " + os.urandom(12).hex() + "\n")
        keys.chmod(0o600)
        self.d: dict[str, inc.Daemon] = {}
        for node in ("dir1", "dir2"):
            (workdir / node).mkdir(parents=True, exist_ok=True)
            conf = workdir / node / "directord.yaml"
            ha = {
                "node": node,
                "nodes": ["dir1", "dir2"],
                "media": ["bcast eth1"],
                "authkeys": str(keys),
                "state_dir": str(workdir / node / "state"),
                "owner": "dir1",
                "address": f"{b.vip}/32/eth0",
                **DIRECTORD_TIMERS[name],
            }
            hooks = role_hooks() if name == "directord-hooks" else ""
            conf.write_text(inc.directord_conf(b.service(), ha=ha) + hooks)
            self.d[node] = inc.Daemon(
                b.lab.ns(node),
                inc.directord_argv(conf, workdir / node / "ctl.sock"),
                workdir / node / "directord.log",
                str(conf),
                env=inc.repo_env(),
            )

    def start(self, node: str) -> None:
        self.d[node].start()

    def checked(self, node: str) -> bool:
        """The daemon's health checks run: its status shows a check result for every real server.
        Its checker child needs seconds to start in the emulated VM; a fault before then would
        meet a director busy importing, which keepalived's checker (C, forked) never is."""
        try:
            doc = control.request(str(self.dir / node / "ctl.sock"), "status", timeout=5.0)["status"]
        except (OSError, ValueError, KeyError):
            return False
        rows = [r for svc in doc.get("services", []) for r in svc.get("real_servers", []) if r.get("role") == "real"]
        return all(r.get("last_check") is not None for r in rows)

    def kill(self, node: str) -> None:
        self.d[node].signal(signal.SIGKILL)

    def graceful(self, node: str) -> None:
        self.d[node].signal(signal.SIGTERM, all_processes=False)

    def wait_stopped(self, node: str) -> None:
        inc.wait_until(lambda: not self.d[node].running(), 60, 0.2, f"{node} daemon exit")
        self.d[node].stop(1)

    def close(self) -> None:
        for d in self.d.values():
            d.stop(10)


class KeepalivedSys(DirectordSys):
    def __init__(self, b: Bench, name: str, workdir: Path) -> None:  # noqa: D107 (no super: other files)
        self.b, self.name, self.dir = b, name, workdir
        self.d = {}
        adv = KEEPALIVED_ADVERT[name]
        for node, state, prio in (("dir1", "MASTER", MASTER_PRIORITY), ("dir2", "BACKUP", BACKUP_PRIORITY)):
            (workdir / node).mkdir(parents=True, exist_ok=True)
            conf = workdir / node / "keepalived.conf"
            conf.write_text(
                inc.keepalived_conf(
                    router_id=node,
                    vrrp={
                        "state": state,
                        "interface": "eth0",
                        "vrid": VRID,
                        "priority": prio,
                        "advert_int": adv,
                        "vip": b.vip,
                    },
                    service=None if b.no_ipvs else b.service(),
                )
            )
            self.d[node] = inc.Daemon(
                b.lab.ns(node),
                inc.keepalived_argv(conf, workdir / node, "ka"),
                workdir / node / "keepalived.log",
                str(conf),
            )

    def checked(self, node: str) -> bool:
        return True  # its checker is forked C, running as soon as the VRRP instance is

    def start(self, node: str) -> None:
        # a killed instance's pid files may name zombies not yet reaped (keepalived then refuses
        # to start: "daemon is already running"); a rebooted node would not have them either
        for f in (self.dir / node).glob("ka*.pid"):
            f.unlink(missing_ok=True)
        self.d[node].start()


class HeartbeatSys(DirectordSys):
    def __init__(self, b: Bench, name: str, workdir: Path) -> None:  # noqa: D107
        from heartbeat_harness import RealHeartbeat

        self.b, self.name, self.dir = b, name, workdir
        keys = "auth 1\n1 sha1 " + os.urandom(12).hex() + "\n"
        ha_cf = inc.heartbeat_ha_cf(["dir1", "dir2"], "eth1", **HEARTBEAT_TIMERS[name])
        hares = inc.heartbeat_haresources("dir1", b.vip, 32, "eth0")
        self.hb = {
            node: RealHeartbeat(b.lab.ns(node), node, workdir / node, ha_cf, hares, keys) for node in ("dir1", "dir2")
        }
        # the same virtual service on both directors, loaded once (heartbeat moves only the VIP)
        rules = f"-A -t {b.vip}:80 -s rr\n" + "".join(f"-a -t {b.vip}:80 -r {r}:80 -g -w 1\n" for r in b.lab.rips)
        (workdir / "ipvsadm.rules").write_text(rules)
        for node in ("dir1", "dir2"):
            if not b.no_ipvs:  # an earlier system's table may still be there (directord leaves it)
                exec_in_netns(b.lab.ns(node), ["ipvsadm", "-C"])
                exec_in_netns(b.lab.ns(node), ["ipvsadm", "-R"], input=rules)

    def start(self, node: str) -> None:
        self.hb[node].start()

    def checked(self, node: str) -> bool:
        return True  # no health checks: heartbeat moves only the VIP

    def kill(self, node: str) -> None:
        self.hb[node].stop(graceful=False)

    def graceful(self, node: str) -> None:
        threading.Thread(target=self.hb[node].stop, kwargs={"graceful": True, "timeout": 120}, daemon=True).start()

    def wait_stopped(self, node: str) -> None:
        inc.wait_until(lambda: not self.hb[node].running, 150, 0.2, f"{node} heartbeat exit")

    def close(self) -> None:
        for h in self.hb.values():
            h.stop(graceful=False)
            h.cleanup()
        for node in ("dir1", "dir2"):
            exec_in_netns(self.b.lab.ns(node), ["ipvsadm", "-C"], check=False)


def make_system(b: Bench, name: str, workdir: Path):
    workdir.mkdir(parents=True, exist_ok=True)
    if name in DIRECTORD_TIMERS:
        return DirectordSys(b, name, workdir)
    if name in KEEPALIVED_ADVERT:
        return KeepalivedSys(b, name, workdir)
    return HeartbeatSys(b, name, workdir)


def run_system(
    b: Bench, name: str, faults: list[str], repeat: int, settle_timeout: float, recover_timeout: float
) -> dict:
    keep = OUT / "failover_gap" / name
    if keep.exists():
        subprocess.run(["rm", "-rf", str(keep)], check=False)
    workdir = inc.local_dir(name)  # sockets and heartbeat's bind mounts need a local file system
    try:
        return _run_system(b, name, faults, repeat, settle_timeout, recover_timeout, workdir)
    finally:
        ha_d = [str(p) for p in workdir.glob("*/etc_ha.d")]
        for d in ha_d:  # keep only the three files heartbeat was given, not the copy of /etc/ha.d
            for f in ("ha.cf", "haresources"):
                src = Path(d) / f
                if src.exists():
                    (Path(d).parent / f).write_text(src.read_text())
        subprocess.run(["rm", "-rf", *ha_d, *(str(p) for p in workdir.glob("*/varlib"))], check=False)
        inc.copy_files(workdir, keep)
        subprocess.run(["rm", "-rf", str(workdir)], check=False)


def _run_system(
    b: Bench, name: str, faults: list[str], repeat: int, settle_timeout: float, recover_timeout: float, workdir: Path
) -> dict:
    sysobj = make_system(b, name, workdir)
    result: dict = {"system": name, "detection": detection_time(name), "faults": {}, "problems": []}
    b.client = inc.SteadyClient(b.lab.ns("client"), b.vip, 80, t0=b.t0, rate=b.rate, timeout=b.client_timeout)
    b.client.start()
    try:
        for node in ("dir1", "dir2"):
            sysobj.start(node)
            if node == "dir1":
                time.sleep(0.5)
        started = time.monotonic()
        waited = b.settle(settle_timeout)
        inc.wait_until(
            lambda: sysobj.checked("dir1") and sysobj.checked("dir2"),
            settle_timeout,
            0.5,
            "health checks running on both directors",
        )
        dir1_started = time.monotonic()  # its HA node runs by now (process start-up is slow in the VM)
        log(f"{name}: settled in {waited:.1f} s")
        time.sleep(max(0.0, initdead(name) + 1.0 - (time.monotonic() - started)))
        for fault in faults:
            reps: list[dict] = []
            result["faults"][fault] = {"repetitions": reps, "gap": inc.stats([])}
            for i in range(repeat):
                # a (re)started heartbeat-protocol node advertises deadtime + 2 s for its first 5 s
                # (heartbeat.c; ha/node/core.py): fault it only once that is over, as in steady service
                time.sleep(max(0.0, DT_BUMP_S - (time.monotonic() - dir1_started)))
                # a random phase against the heartbeat/advertisement schedule (up to 1 s, the
                # longest interval here), so the repetitions do not all fault at one point of it
                time.sleep(random.uniform(0.0, 1.0))
                t_fault, fault_wall = b.now(), time.time()
                if fault == "node":
                    b.node_links("dir1", False)
                    sysobj.kill("dir1")
                else:
                    sysobj.graceful("dir1")
                try:
                    inc.wait_until(
                        lambda t_fault=t_fault: b.served(t_fault + 0.01, 0.5) and b.holds("dir2"),
                        recover_timeout,
                        0.1,
                        "dir2 serving",
                    )
                    time.sleep(1.5)
                    ok = True
                except TimeoutError as e:
                    ok = False
                    result["problems"].append(f"{fault} #{i + 1}: {e}")
                samples = [s for s in b.client.since(t_fault - 3.0) if s.start <= b.now()]
                gap, _at = inc.longest_gap(samples, t_fault)
                first = next((s for s in samples if s.ok and s.start >= t_fault), None)
                failed = sum(1 for s in samples if not s.ok and s.start >= t_fault)
                rep = {
                    "fault_at": (
                        time.strftime("%H:%M:%S", time.localtime(fault_wall)) + f".{int(fault_wall % 1 * 1000):03d}"
                    ),
                    "gap_s": round(gap, 3) if ok else None,
                    "first_success_s": round(first.end - t_fault, 3) if first else None,
                    "failed_requests": failed,
                    "requests": sum(1 for s in samples if s.start >= t_fault),
                }
                reps.append(rep)
                result["faults"][fault]["gap"] = inc.stats([r["gap_s"] for r in reps])
                log(f"{name} {fault} #{i + 1}: gap {inc.fmt_s(rep['gap_s'])} s, {failed} failed")
                # bring dir1 back as after a reboot
                if fault == "node":
                    del_address(b.lab.ns("dir1"), "eth0", f"{b.vip}/32")
                    b.node_links("dir1", True)
                else:
                    sysobj.wait_stopped("dir1")
                sysobj.start("dir1")
                try:
                    b.settle(settle_timeout)
                    inc.wait_until(lambda: sysobj.checked("dir1"), settle_timeout, 0.5, "dir1's health checks running")
                except TimeoutError as e:
                    raise TimeoutError(f"fail-back after {fault} #{i + 1}: {e}") from e
                dir1_started = time.monotonic()
    except Exception as e:  # keep the repetitions done so far
        result["problems"].append(f"{type(e).__name__}: {e}")
        log(f"{name} failed: {type(e).__name__}: {e}")
    finally:
        b.client.stop()
        result["client_rate"] = (
            round(len(b.client.samples) / max(b.client.samples[-1].end - b.client.samples[0].start, 1e-9), 1)
            if b.client.samples
            else 0
        )
        sysobj.close()
        for node in ("dir1", "dir2"):
            del_address(b.lab.ns(node), "eth0", f"{b.vip}/32")
    return result


def render(results: list[dict], faults: list[str]) -> str:
    """Markdown table: one row per system; gap median / max per fault (seconds)."""
    headers = ["system", "detection settings"]
    for f in faults:
        headers += [f"{f} failure gap median (s)", f"{f} max (s)", "n"]
    rows = []
    for r in results:
        row = [r["system"], r["detection"]]
        for f in faults:
            st = r["faults"].get(f, {}).get("gap")
            row += [inc.fmt_s(st["median"]), inc.fmt_s(st["max"]), st["n"]] if st else ["-", "-", 0]
        rows.append(row)
    return inc.markdown_table(headers, rows)


def set_out(path: Path) -> None:
    """Where results and configurations go (default ``out/bench``)."""
    global OUT
    OUT = path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    ap.add_argument("--faults", nargs="+", default=["node", "graceful"], choices=["node", "graceful"])
    ap.add_argument("--rate", type=float, default=100.0, help="client requests per second")
    ap.add_argument("--client-timeout", type=float, default=0.25, help="seconds per request")
    ap.add_argument("--settle-timeout", type=float, default=240.0)
    ap.add_argument("--recover-timeout", type=float, default=150.0)
    ap.add_argument(
        "--out-dir",
        default=str(inc.REPO / "out" / "bench"),
        help="results folder (JSON and configurations); in the VM give one under `lab vm --out`, "
        "the guest's other folders are thrown away",
    )
    a = ap.parse_args(argv)
    missing = inc.missing_incumbents(a.systems)
    if missing:  # refused before the lab is built, not found out by a settle timeout per system
        for line in missing:
            log(f"cannot run: {line}")
        return 2
    set_out(Path(a.out_dir))
    a.json = str(OUT / "failover_gap.json")
    if os.environ.get("DIRECTORD_IN_VM") == "1" and a.out_dir == str(inc.REPO / "out" / "bench"):
        log("warning: results under the checkout vanish with the guest; pass --out-dir inside `lab vm --out`")
    if not os.path.exists("/proc/net/ip_vs"):
        subprocess.run(["modprobe", "ip_vs"], check=False)
    b = Bench(f"fg{os.getpid() % 100000}", a.rate, a.client_timeout)
    results = []
    started = time.time()
    kernel = os.uname().release
    try:
        b.lab.build()
        for node in ("dir1", "dir2"):
            try:  # reschedule DR connections that reuse a client port (net/netfilter/ipvs: conn_reuse_mode)
                b.lab.sysctl(node, "net.ipv4.vs.conn_reuse_mode", 3)
            except FileNotFoundError:
                log("no ip_vs here: the directors serve HTTP themselves (HA mechanics only; not a measurement)")
                b.no_ipvs = True
        if b.no_ipvs:
            for node in ("dir1", "dir2"):
                b.lab.popen(
                    node,
                    [sys.executable, "-m", "director.lab.httpd", "--name", node, "--bind", "0.0.0.0"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
        for name in a.systems:
            log(f"system {name}")
            try:
                results.append(run_system(b, name, a.faults, a.repeat, a.settle_timeout, a.recover_timeout))
            except Exception as e:  # keep the other systems' numbers
                log(f"{name} failed: {type(e).__name__}: {e}")
                results.append(
                    {
                        "system": name,
                        "detection": detection_time(name),
                        "faults": {},
                        "problems": [f"{type(e).__name__}: {e}"],
                    }
                )
            inc.write_json(
                Path(a.json),
                {
                    "benchmark": "failover_gap",
                    "kernel": kernel,
                    "started": started,
                    "repeat": a.repeat,
                    "rate": a.rate,
                    "client_timeout_s": a.client_timeout,
                    "results": results,
                },
            )
    finally:
        b.lab.close()
    print(
        f"Failover gap (kernel {kernel}, {a.repeat} repetitions, client {a.rate:g} req/s, "
        f"timeout {a.client_timeout:g} s)\n"
    )
    print(render(results, a.faults))
    for r in results:
        for p in r.get("problems", []):
            print(f"- {r['system']}: {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
