"""Shared pieces of the failover and detection benchmarks: configuration generators for
directord and the incumbents (keepalived, heartbeat + IPaddr, ldirectord), result
aggregation, and the runners that start them inside network namespaces.

Pure part (unit-tested): `master_down_interval`, `keepalived_conf`, `ldirectord_cf`,
`heartbeat_ha_cf`, `heartbeat_haresources`, `directord_conf`, `parse_proc_ip_vs`,
`dest_out`, `last_error_end`, `stats`, `markdown_table`. Times are seconds (floats).
`missing_incumbents` (unit-tested; reads file modes only) says which incumbent programs a
benchmark's systems need that are not installed, before any lab is built.

I/O part: `SteadyClient` (requests through the VIP from the client namespace),
`TableWatch` (polls the kernel's IPVS table of a namespace), `Daemon` (a daemon
started with ``ip netns exec`` and killed by namespace + command line), and the
``farm`` mode of this file (``python bench/incumbents.py farm ...``): many real servers'
HTTP listeners in one namespace, each address switchable at run time between serving,
stopped (connection refused) and hung (accepts, never answers), over HTTPS when given a
certificate (`self_signed_cert`).

Protocol facts used: the VRRP master-down interval is ``3 x advert_int + skew`` with
``skew = (256 - priority) / 256 x advert_int`` (RFC 5798 section 6.1; RFC 3768 has the
same formula with whole seconds); ``/proc/net/ip_vs`` prints addresses and ports in
hexadecimal, one ``-> ADDR:PORT Fwd Weight ActiveConn InActConn`` line per real server
(net/netfilter/ipvs/ip_vs_ctl.c, ``ip_vs_info_seq_show``).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import signal
import socket
import ssl
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from director.lab.scenarios import Sample, longest_gap  # noqa: E402

__all__ = ["Sample", "longest_gap"]

#: Binaries of the incumbents (Debian 12 packages).
KEEPALIVED = "/usr/sbin/keepalived"
LDIRECTORD = "/usr/sbin/ldirectord"
HEARTBEAT = "/usr/libexec/heartbeat/heartbeat"
#: heartbeat's haresources wrapper of the ``IPaddr`` resource agent (package heartbeat).
HEARTBEAT_IPADDR = "/etc/ha.d/resource.d/IPaddr"

#: What each incumbent needs installed: ``(executable path, Debian package)`` pairs, the files
#: the benchmarks run. A benchmark system runs the incumbent its name starts with
#: (``keepalived-1``, ``keepalived-tuned``, ``heartbeat-0.2``, ``ldirectord-tuned``).
INCUMBENTS: dict[str, tuple[tuple[str, str], ...]] = {
    "keepalived": ((KEEPALIVED, "keepalived"),),
    "ldirectord": ((LDIRECTORD, "ldirectord"),),
    "heartbeat": ((HEARTBEAT, "heartbeat"), (HEARTBEAT_IPADDR, "heartbeat")),
}


def missing_incumbents(
    systems: Iterable[str], *, needs: Mapping[str, Sequence[tuple[str, str]]] | None = None
) -> list[str]:
    """Why the benchmark systems ``systems`` cannot run here: one line per missing program (not
    an executable file), naming it, the systems that need it and the Debian package to install;
    ``[]`` when nothing is missing. A system that runs no incumbent (``directord``, ...) needs
    nothing. ``needs``: `INCUMBENTS` (read at call time) unless given. Reads only file modes.
    """
    needs = INCUMBENTS if needs is None else needs
    wanted: dict[tuple[str, str], list[str]] = {}
    for system in systems:
        for incumbent, files in needs.items():
            if system == incumbent or system.startswith(incumbent + "-"):
                for file in files:
                    wanted.setdefault(file, []).append(system)
    return [
        f"{path} is not installed (needed by {', '.join(users)}): apt-get install {package}"
        for (path, package), users in wanted.items()
        if not (os.path.isfile(path) and os.access(path, os.X_OK))
    ]


# --- pure: timers and configurations ---------------------------------------------------------


def master_down_interval(advert_int: float, priority: int) -> float:
    """VRRP backup's master-down interval in seconds: ``3 * advert_int + (256 - priority) / 256 * advert_int``
    (RFC 5798 section 6.1). ``priority`` is the backup's (1..254).

    Raises:
        ValueError: priority outside 1..254 or advert_int <= 0.
    """
    if not 1 <= priority <= 254:
        raise ValueError(f"VRRP backup priority must be 1..254, got {priority}")
    if advert_int <= 0:
        raise ValueError(f"advert_int must be > 0 seconds, got {advert_int}")
    return 3 * advert_int + (256 - priority) / 256 * advert_int


@dataclass(frozen=True)
class Service:
    """The virtual service every system is given: ``vip``:``port`` TCP, round robin,
    ``forwarding`` ``"dr"`` or ``"nat"``, real servers ``rips`` (all on ``port``), health
    check ``GET /healthz`` expecting 200."""

    vip: str
    port: int
    rips: tuple[str, ...]
    forwarding: str = "dr"
    path: str = "/healthz"


_KA_KIND = {"dr": "DR", "nat": "NAT", "tun": "TUN"}
_LD_KIND = {"dr": "gate", "nat": "masq", "tun": "ipip"}


def keepalived_conf(
    *,
    router_id: str,
    vrrp: Mapping[str, object] | None = None,
    service: Service | None = None,
    delay_loop: float | None = None,
    connect_timeout: float | None = None,
    retry: int | None = None,
    delay_before_retry: float | None = None,
    scheme: str = "http",
) -> str:
    """keepalived.conf text (keepalived 2.2 syntax; pure).

    ``vrrp``: None for no VRRP, else a mapping with ``state`` (``MASTER``/``BACKUP``),
    ``interface``, ``vrid``, ``priority``, ``advert_int`` (seconds; below 1 selects VRRP
    version 3, which allows centisecond intervals), ``vip`` and optional ``prefixlen``
    (default 32). ``service``: the virtual_server with one ``HTTP_GET`` checker per real
    server (``status_code 200`` on ``service.path``; ``SSL_GET`` when ``scheme`` is
    ``"https"``, without an ``SSL`` block: the server's certificate is not verified); a checker
    setting left None is omitted (keepalived's default applies: delay_loop 60, connect_timeout
    5, retry 1, delay_before_retry 1).
    """
    out = [f"global_defs {{\n  router_id {router_id}\n  vrrp_garp_master_delay 1\n}}\n"]
    if vrrp is not None:
        adv = float(vrrp["advert_int"])  # type: ignore[arg-type]
        version = 3 if adv < 1 else 2
        out.append(
            f"vrrp_instance VI_{vrrp['vrid']} {{\n"
            f"  state {vrrp['state']}\n"
            f"  interface {vrrp['interface']}\n"
            f"  virtual_router_id {vrrp['vrid']}\n"
            f"  priority {vrrp['priority']}\n"
            f"  advert_int {adv:g}\n"
            f"  version {version}\n"
            f"  virtual_ipaddress {{\n    {vrrp['vip']}/{vrrp.get('prefixlen', 32)} dev {vrrp['interface']}\n  }}\n"
            "}\n"
        )
    if service is not None:
        lines = [f"virtual_server {service.vip} {service.port} {{"]
        if delay_loop is not None:
            lines.append(f"  delay_loop {delay_loop:g}")
        lines += ["  lb_algo rr", f"  lb_kind {_KA_KIND[service.forwarding]}", "  protocol TCP"]
        for rip in service.rips:
            lines += [
                f"  real_server {rip} {service.port} {{",
                "    weight 1",
                f"    {'SSL_GET' if scheme == 'https' else 'HTTP_GET'} {{",
                f"      url {{\n        path {service.path}\n        status_code 200\n      }}",
            ]
            if connect_timeout is not None:
                lines.append(f"      connect_timeout {connect_timeout:g}")
            if retry is not None:
                lines.append(f"      retry {retry}")
            if delay_before_retry is not None:
                lines.append(f"      delay_before_retry {delay_before_retry:g}")
            lines += ["    }", "  }"]
        lines.append("}")
        out.append("\n".join(lines) + "\n")
    return "".join(out)


def ldirectord_cf(
    service: Service,
    *,
    checkinterval: float | None = None,
    checktimeout: float | None = None,
    quiescent: bool = False,
    logfile: str | None = None,
    scheme: str = "http",
) -> str:
    """ldirectord.cf text (ldirectord 4.12 syntax; pure): one virtual service, an HTTP
    ``negotiate`` check of ``service.path`` expecting the text ``ok`` (``service=https`` when
    ``scheme`` is ``"https"``: ldirectord's LWP skips the name but verifies the chain, against
    the CA file of ``PERL_LWP_SSL_CA_FILE`` when set). Timers left None are
    omitted (ldirectord's defaults: checkinterval 10, checktimeout 5, negotiatetimeout 30,
    failurecount 1). ``quiescent`` no: a failed real server is removed from the table. ``logfile``: a
    file path (None: ldirectord's default)."""
    g = []
    if checkinterval is not None:
        g.append(f"checkinterval={checkinterval:g}")
    if checktimeout is not None:
        g.append(f"checktimeout={checktimeout:g}")
    g += [f"quiescent={'yes' if quiescent else 'no'}", "autoreload=no"]
    if logfile:
        g.append(f'logfile="{logfile}"')
    v = [f"virtual={service.vip}:{service.port}"]
    v += [f"\treal={rip}:{service.port} {_LD_KIND[service.forwarding]}" for rip in service.rips]
    v += [
        f"\tservice={scheme}",
        "\tscheduler=rr",
        "\tprotocol=tcp",
        "\tchecktype=negotiate",
        f'\trequest="{service.path.lstrip("/")}"',
        '\treceive="ok"',
    ]
    return "\n".join(g + v) + "\n"


def heartbeat_ha_cf(
    nodes: Sequence[str],
    bcast_if: str,
    *,
    keepalive: float | None = None,
    deadtime: float | None = None,
    warntime: float | None = None,
    initdead: float | None = None,
) -> str:
    """ha.cf text for heartbeat 3.0.6 (pure): ``bcast`` medium on ``bcast_if``, auto_failback
    on, no CRM (haresources mode). Timers in seconds; None omits the line (heartbeat's
    defaults, ``heartbeat/config.c``: keepalive 1 s, deadtime 30 s, warntime deadtime / 2).
    Sub-second values are written in milliseconds (``200ms``)."""

    def t(v: float) -> str:
        return f"{int(round(v * 1000))}ms" if v != int(v) else f"{int(v)}"

    lines = []
    for key, val in (("keepalive", keepalive), ("warntime", warntime), ("deadtime", deadtime), ("initdead", initdead)):
        if val is not None:
            lines.append(f"{key} {t(val)}")
    lines += ["udpport 694", f"bcast {bcast_if}", "auto_failback on", *(f"node {n}" for n in nodes), "crm no"]
    return "\n".join(lines) + "\n"


def heartbeat_haresources(owner: str, vip: str, prefixlen: int, ifname: str) -> str:
    """haresources line giving ``owner`` the VIP through resource-agents' ``IPaddr`` (pure)."""
    return f"{owner} IPaddr::{vip}/{prefixlen}/{ifname}\n"


def directord_conf(
    service: Service,
    *,
    check: Mapping[str, float] | None = None,
    ha: Mapping[str, object] | None = None,
    scheme: str = "http",
) -> str:
    """``directord run`` YAML (the format of etc/directord.yaml; pure).

    ``check``: extra keys of the HTTP check (``interval``, ``timeout``, ``rise``, ``fall``);
    omitted keys take directord's defaults (interval 1 s, timeout 1 s, rise 2, fall 2).
    ``scheme`` ``"https"``: an ``https`` check with ``verify_tls: none``.
    ``ha``: None for a single director, else a mapping with ``node``, ``nodes``,
    ``media`` (list of heartbeat-syntax media lines), ``authkeys`` (path), ``state_dir``,
    ``owner``, ``address`` (``VIP/len/ifname``) and optional timers ``keepalive``,
    ``deadtime``, ``warntime``, ``initdead`` (seconds; omitted ones take directord's
    defaults).
    """
    keys = "".join(f", {k}: {v:g}" for k, v in (check or {}).items())
    tls = ", verify_tls: none" if scheme == "https" else ""
    chk = f"{{type: {scheme}, path: {service.path}{tls}{keys}}}"
    rs = "\n".join(f"      - {{address: {r}, port: {service.port}}}" for r in service.rips)
    text = f"""\
global:
  reconcile_interval: 10
virtual_services:
  - name: web
    address: {service.vip}
    port: {service.port}
    scheduler: rr
    forwarding: {service.forwarding}
    check: {chk}
    real_servers:
{rs}
"""
    if ha is not None:
        timers = "".join(
            f"  {k}: {float(ha[k]):g}\n" for k in ("keepalive", "warntime", "deadtime", "initdead") if k in ha
        )
        text += f"""\
ha:
  node: {ha["node"]}
  nodes: [{", ".join(ha["nodes"])}]
  media: [{", ".join(ha["media"])}]
  authkeys: {ha["authkeys"]}
{timers}  auto_failback: true
  state_dir: {ha["state_dir"]}
  resources:
    - owner: {ha["owner"]}
      addresses: [{ha["address"]}]
"""
    return text


# --- pure: kernel table and results -------------------------------------------------------------


def _hexaddr(h: str) -> str:
    addr, port = h.rsplit(":", 1)
    ip = socket.inet_ntoa(int(addr, 16).to_bytes(4, "big")) if len(addr) == 8 else addr
    return f"{ip}:{int(port, 16)}"


def parse_proc_ip_vs(text: str) -> dict[str, dict[str, int]]:
    """``/proc/net/ip_vs`` -> ``{"VIP:PORT": {"RIP:PORT": weight}}`` (IPv4 TCP/UDP services;
    fwmark and IPv6 services are skipped). Pure.

    Example line pair: ``TCP  0A4E0064:0050 rr`` then ``  -> 0A4E010B:0050      Masq    1      0          0``.
    """
    out: dict[str, dict[str, int]] = {}
    cur: dict[str, int] | None = None
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] in ("TCP", "UDP", "SCTP") and len(parts) >= 2:
            if len(parts[1].rsplit(":", 1)[0]) == 8:
                cur = out.setdefault(_hexaddr(parts[1]), {})
            else:
                cur = None
        elif parts[0] == "FWM":
            cur = None
        elif parts[0] == "->" and cur is not None and len(parts) >= 4 and parts[1] != "RemoteAddress:Port":
            try:
                cur[_hexaddr(parts[1])] = int(parts[3])
            except ValueError:
                continue
    return out


def dest_out(table: Mapping[str, Mapping[str, int]], service: str, dest: str) -> bool:
    """True when ``dest`` (``"RIP:PORT"``) is out of ``service``'s rotation: absent, or weight 0.
    A missing service counts as out too (nothing is sent to it)."""
    w = table.get(service, {}).get(dest)
    return w is None or w == 0


def last_error_end(samples: Sequence[Sample], since: float) -> float | None:
    """End time of the last failed request that started at or after ``since`` (None: none failed)."""
    ends = [s.end for s in samples if not s.ok and s.start >= since]
    return max(ends) if ends else None


def stats(values: Iterable[float | None]) -> dict[str, float | int | None]:
    """``{"n", "median", "max", "min", "missing"}`` of the numeric values (None counts as missing,
    e.g. a repetition that never reached its end condition). Pure."""
    vals = [float(v) for v in values if v is not None]
    missing = sum(1 for v in values if v is None) if isinstance(values, (list, tuple)) else 0
    if not vals:
        return {"n": 0, "median": None, "max": None, "min": None, "missing": missing}
    return {"n": len(vals), "median": statistics.median(vals), "max": max(vals), "min": min(vals), "missing": missing}


def ip_vs_here() -> bool:
    """True when this kernel has IPVS (``/proc/net/ip_vs``), loading ``ip_vs`` first if needed."""
    if not os.path.exists("/proc/net/ip_vs"):
        subprocess.run(["modprobe", "ip_vs"], check=False, capture_output=True)
    return os.path.exists("/proc/net/ip_vs")


def fmt_s(v: float | None) -> str:
    """Seconds with two decimals, ``-`` for None."""
    return "-" if v is None else f"{v:.2f}"


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub markdown table (pure); cells are str()-ed, ``|`` escaped."""

    def cell(x: object) -> str:
        return str(x).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


# --- I/O: client, table watch, daemons ---------------------------------------------------------


def _setns(ns: str) -> None:
    from director.lab.netns import enter_netns

    enter_netns(ns)


async def _get(addr: str, port: int) -> int:
    """One HTTP/1.0 GET / on a fresh connection; returns the status. Raises OSError/ValueError
    (the caller bounds the time)."""
    reader, writer = await asyncio.open_connection(addr, port)
    try:
        writer.write(f"GET / HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n".encode())
        data = await reader.read()  # HTTP/1.0 with Connection: close: the answer ends at EOF
    finally:
        writer.close()
    line = data.split(b"\r\n", 1)[0].split()
    if len(line) < 2 or not line[1].isdigit():
        raise ValueError("not HTTP")
    return int(line[1])


class SteadyClient(threading.Thread):
    """Requests ``GET /`` to ``addr:port`` from namespace ``ns`` at ``rate`` per second (fresh TCP
    connection each, whole-exchange ``timeout`` in seconds), until `stop`. One `Sample` per request,
    times in seconds of ``time.monotonic()`` minus ``t0``, kept in start order.

    Open loop: each request starts on its own schedule (every ``1 / rate`` s) whether or not the
    earlier ones have finished, so a request timing out does not hold the next back and the
    first success after an outage is seen within one period (not one timeout)."""

    def __init__(self, ns: str, addr: str, port: int, *, t0: float, rate: float = 100.0, timeout: float = 0.25) -> None:
        super().__init__(daemon=True, name="bench-client")
        self.ns, self.addr, self.port, self.t0 = ns, addr, port, t0
        self.period, self.timeout = 1.0 / rate, timeout
        self.samples: list[Sample] = []
        self.halt = threading.Event()
        self._lock = threading.Lock()

    def run(self) -> None:
        _setns(self.ns)
        asyncio.run(self._main())

    async def _one(self) -> None:
        start = time.monotonic()
        try:
            status = await asyncio.wait_for(_get(self.addr, self.port), self.timeout)
            ok, res = status == 200, str(status)
        except (TimeoutError, OSError, ValueError) as e:
            ok, res = False, type(e).__name__
        sample = Sample(start - self.t0, time.monotonic() - self.t0, ok, res)
        with self._lock:
            bisect.insort(self.samples, sample, key=lambda s: s.start)

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        tasks: set[asyncio.Task] = set()
        next_at = loop.time()
        while not self.halt.is_set():
            t = loop.create_task(self._one())
            tasks.add(t)
            t.add_done_callback(tasks.discard)
            next_at += self.period
            d = next_at - loop.time()
            if d > 0:
                await asyncio.sleep(d)
            else:
                next_at = loop.time()
                await asyncio.sleep(0)
        if tasks:
            await asyncio.wait(tasks, timeout=self.timeout + 1.0)

    def stop(self) -> list[Sample]:
        """Stop and join; returns the samples."""
        self.halt.set()
        self.join(10)
        return self.samples

    def since(self, t: float) -> list[Sample]:
        """Finished samples that started at or after ``t`` (seconds since t0), in start order."""
        with self._lock:
            i = bisect.bisect_left(self.samples, t, key=lambda s: s.start)
            return self.samples[i:]


def read_table(ns: str) -> dict[str, dict[str, int]]:
    """The IPVS table of namespace ``ns`` (`parse_proc_ip_vs` of ``/proc/net/ip_vs`` read by a thread
    inside it); {} when IPVS is absent."""
    from director.lab.netns import call_in_netns

    def rd() -> str:
        try:
            return Path("/proc/thread-self/net/ip_vs").read_text()
        except OSError:
            return ""

    return parse_proc_ip_vs(call_in_netns(ns, rd))


class TableWatch(threading.Thread):
    """Reads namespace ``ns``'s IPVS table every ``interval`` seconds from one thread living there;
    records the first time (``time.monotonic()`` minus ``t0``) ``dest`` of ``service`` is out
    (`dest_out`) after `arm` was called. Stop with `stop`."""

    def __init__(self, ns: str, *, t0: float, interval: float = 0.02) -> None:
        super().__init__(daemon=True, name="bench-table")
        self.ns, self.t0, self.interval = ns, t0, interval
        self.halt = threading.Event()
        self.latest: dict[str, dict[str, int]] = {}
        self._want: tuple[str, str] | None = None
        self.out_at: float | None = None

    def arm(self, service: str, dest: str) -> None:
        """Start looking for ``dest`` of ``service`` going out."""
        self.out_at = None
        self._want = (service, dest)

    def run(self) -> None:
        _setns(self.ns)
        while not self.halt.is_set():
            try:
                txt = Path("/proc/thread-self/net/ip_vs").read_text()
            except OSError:
                txt = ""
            now = time.monotonic() - self.t0
            self.latest = parse_proc_ip_vs(txt)
            w = self._want
            if w is not None and self.out_at is None and dest_out(self.latest, *w):
                self.out_at = now
            self.halt.wait(self.interval)

    def stop(self) -> None:
        """Stop and join."""
        self.halt.set()
        self.join(5)


def _cmdline(pid: int) -> list[str]:
    try:
        return [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return []


def _ppid(pid: int) -> int | None:
    """Parent pid of ``pid`` (field 4 of ``/proc/PID/stat``, proc(5)); ``None`` when it is gone."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def process_roots(pids: Sequence[int], ppid_of: Callable[[int], int | None]) -> list[int]:
    """The processes of ``pids`` whose parent is not among them (a daemon, not its forked
    children), in the order given. Not "the lowest pid": pids wrap around, and a child can
    get a lower one than its parent."""
    members = set(pids)
    return [p for p in pids if ppid_of(p) not in members]


class Daemon:
    """A long-lived program in namespace ``ns`` (``ip netns exec``), output to ``log``.
    Its processes are found again by namespace and by ``marker`` (a string of their command line,
    e.g. the configuration path), with their descendants, so forked children (keepalived's VRRP
    and checker processes, directord's checker process) are measured and signalled too."""

    def __init__(
        self, ns: str, argv: Sequence[str], log: Path, marker: str, env: Mapping[str, str] | None = None
    ) -> None:
        self.ns, self.argv, self.log, self.marker = ns, list(argv), Path(log), marker
        self.env = dict(env) if env is not None else None
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        """Start it (returns at once)."""
        from director.lab.netns import run_in_netns

        with open(self.log, "ab") as f:
            self.proc = run_in_netns(
                self.ns,
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=f,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self.env,
            )

    def pids(self) -> list[int]:
        """PIDs of its processes (namespace and marker match, and their descendants), sorted."""
        from director.lab.netns import pids_in_netns

        candidates = [p for p in pids_in_netns(self.ns) if p != os.getpid()]
        found = {p for p in candidates if self.marker in " ".join(_cmdline(p))}
        parents = {p: _ppid(p) for p in candidates if p not in found}
        grew = True
        while grew:
            new = {p for p, pp in parents.items() if pp in found and p not in found}
            found |= new
            grew = bool(new)
        return sorted(found)

    def signal(self, sig: int, *, all_processes: bool = True) -> list[int]:
        """Send ``sig`` to every process of it (or only to the parent: `process_roots`); returns the
        pids signalled."""
        pids = self.pids()
        if not all_processes:
            pids = process_roots(pids, _ppid)
        for p in pids:
            try:
                os.kill(p, sig)
            except ProcessLookupError:
                pass
        return pids

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL whatever is left after ``timeout`` seconds; reaps the Popen."""
        self.signal(signal.SIGTERM, all_processes=False)
        deadline = time.monotonic() + timeout
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.1)
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None

    def running(self) -> bool:
        """True when at least one of its processes exists."""
        return bool(self.pids())


def keepalived_argv(
    conf: Path, workdir: Path, name: str, *, vrrp_only: bool = False, check_only: bool = False
) -> list[str]:
    """``keepalived --dont-fork --log-console`` with this instance's own pid files under ``workdir``."""
    argv = [
        KEEPALIVED,
        "--dont-fork",
        "--log-console",
        "--log-detail",
        "-f",
        str(conf),
        "-p",
        str(workdir / f"{name}.pid"),
        "-c",
        str(workdir / f"{name}-checkers.pid"),
        "-r",
        str(workdir / f"{name}-vrrp.pid"),
    ]
    if vrrp_only:
        argv.append("--vrrp")
    if check_only:
        argv.append("--check")
    return argv


def directord_argv(conf: Path, sock: Path) -> list[str]:
    """``python -m director.cli run -c CONF --control-socket SOCK``."""
    return [sys.executable, "-m", "director.cli", "run", "-c", str(conf), "--control-socket", str(sock)]


def repo_env() -> dict[str, str]:
    """The environment with the repository on PYTHONPATH and unbuffered output."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def wait_until(pred, timeout: float, interval: float = 0.1, what: str = "condition") -> float:
    """Poll ``pred()`` until true; returns the seconds waited. Raises TimeoutError after ``timeout`` seconds."""
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"{what} not reached within {timeout:.0f} s")
        time.sleep(interval)
    return time.monotonic() - t0


def local_dir(tag: str) -> Path:
    """A fresh folder on a local file system for sockets, state and pid files (the results folder
    may be a 9p share in the VM, where binding a UNIX socket fails with ENXIO)."""
    import tempfile

    return Path(tempfile.mkdtemp(prefix=f"bench-{tag}-"))  # not /run: heartbeat's start script mounts a tmpfs there


def copy_files(src: Path, dst: Path) -> None:
    """Copy the regular files under ``src`` (configurations, logs) to ``dst``, keeping the layout;
    sockets, device files and unreadable files are skipped."""
    import shutil
    import stat

    for p in sorted(src.rglob("*")):
        try:
            st = p.lstat()
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        t = dst / p.relative_to(src)
        try:
            t.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, t)
        except OSError:
            continue


def write_json(path: Path, doc: object) -> None:
    """Write ``doc`` as indented JSON (parent folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")


# --- a node failure: every link down in one system call -----------------------------------------

RTM_NEWLINK = 16
_NLM_F_REQUEST, _NLM_F_ACK = 0x1, 0x4
_IFF_UP = 0x1


def setlink_batch(indexes: Sequence[int], *, up: bool, seq: int = 1) -> bytes:
    """RTM_NEWLINK messages (rtnetlink(7): nlmsghdr + ifinfomsg with ``ifi_change`` IFF_UP)
    setting each interface index administratively up or down, back to back in one datagram,
    so the kernel applies them in one ``sendmsg`` (pure; sequence numbers from ``seq``)."""
    out = b""
    for i, index in enumerate(indexes):
        body = struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, _IFF_UP if up else 0, _IFF_UP)
        out += struct.pack("=IHHII", 16 + len(body), RTM_NEWLINK, _NLM_F_REQUEST | _NLM_F_ACK, seq + i, 0) + body
    return out


def links_at_once(ns: str, names: Sequence[str], *, up: bool) -> None:
    """Set links ``names`` of namespace ``ns`` up or down in one datagram (see `setlink_batch`):
    a node failure takes its service and heartbeat links at the same instant, not one
    library call apart. Raises OSError (a name unknown, or the kernel's error ack)."""
    from director.ipvs.netlink import parse_acks
    from director.lab.netns import call_in_netns

    def work() -> None:
        indexes = [socket.if_nametoindex(n) for n in names]
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as s:
            s.bind((0, 0))
            s.settimeout(5)
            s.send(setlink_batch(indexes, up=up))
            acks: dict[int, int] = {}
            while len(acks) < len(indexes):
                acks.update(parse_acks(s.recv(65536)))
            for err in acks.values():
                if err:
                    raise OSError(err, f"set link {'up' if up else 'down'}: {os.strerror(err)}")

    call_in_netns(ns, work)


# --- the farm: many real servers' listeners in one namespace ----------------------------------

FARM_CONTROL_PORT = 9999


def self_signed_cert(cert: Path, key: Path) -> None:
    """Write a self-signed certificate (ECDSA P-256, CN ``farm``, valid 2 days) and its
    unencrypted key as PEM to ``cert`` and ``key`` with ``openssl req`` (parent folders made).
    Raises FileNotFoundError without openssl, CalledProcessError when it fails."""
    cert.parent.mkdir(parents=True, exist_ok=True)
    key.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-days", "2", "-subj", "/CN=farm", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip


async def _farm(addrs: Sequence[str], port: int, hung: set[str], tls: ssl.SSLContext | None = None) -> None:
    servers: dict[str, asyncio.base_events.Server] = {}
    mode = {a: ("hang" if a in hung else "serve") for a in addrs}
    held: list[asyncio.StreamWriter] = []
    requests = [0]  # HTTP requests received (headers read), all listeners

    def handler(addr: str):
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            except Exception:
                writer.close()
                return
            requests[0] += 1
            if mode[addr] == "hang":
                held.append(writer)
                return
            body = b"ok\n"
            writer.write(
                b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                b"Connection: close\r\n\r\n%s" % (len(body), body)
            )
            try:
                await writer.drain()
            finally:
                writer.close()

        return handle

    async def listen(a: str) -> None:
        servers[a] = await asyncio.start_server(
            handler(a), a, port, reuse_address=True, backlog=128, ssl=tls, ssl_handshake_timeout=5 if tls else None
        )

    for a in addrs:
        await listen(a)

    loop = asyncio.get_running_loop()

    class Control(asyncio.DatagramProtocol):
        def connection_made(self, transport):  # noqa: D401
            self.t = transport

        def datagram_received(self, data: bytes, peer) -> None:
            words = data.decode(errors="replace").split()
            if words == ["count"]:
                self.t.sendto(str(requests[0]).encode(), peer)
                return
            if len(words) == 2 and words[1] in mode:
                cmd, a = words
                if cmd == "stop" and a in servers:
                    servers.pop(a).close()
                elif cmd == "start" and a not in servers:
                    mode[a] = "serve"
                    loop.create_task(listen(a))
                elif cmd in ("hang", "serve"):
                    mode[a] = cmd
            self.t.sendto(b"done", peer)

    await loop.create_datagram_endpoint(Control, local_addr=("127.0.0.1", FARM_CONTROL_PORT))
    print(f"listening {len(addrs)}", flush=True)
    await asyncio.Event().wait()


def _farm_request(ns: str, text: str, timeout: float) -> bytes:
    from director.lab.netns import socket_in_netns

    s = socket_in_netns(ns, socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(timeout)
        s.sendto(text.encode(), ("127.0.0.1", FARM_CONTROL_PORT))
        return s.recvfrom(64)[0]
    finally:
        s.close()


def farm_command(ns: str, cmd: str, addr: str, timeout: float = 5.0) -> None:
    """Tell the farm in namespace ``ns`` to ``stop``/``start``/``hang``/``serve`` ``addr``; waits for
    its acknowledgement. Raises TimeoutError without one."""
    _farm_request(ns, f"{cmd} {addr}", timeout)


def farm_requests(ns: str, timeout: float = 5.0) -> int:
    """HTTP requests the farm in namespace ``ns`` has received so far (every listener; a health
    check is one). Raises TimeoutError without an answer."""
    return int(_farm_request(ns, "count", timeout))


def main(argv: Sequence[str] | None = None) -> int:
    """``farm --port P [--hang ADDR ...] [--tls-cert PEM --tls-key PEM] ADDR ...``: serve the
    listeners (HTTPS with the certificate, when given) until killed."""
    ap = argparse.ArgumentParser(prog="incumbents.py")
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("farm")
    f.add_argument("--port", type=int, default=80)
    f.add_argument("--hang", action="append", default=[])
    f.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    f.add_argument("--tls-key", help="its private key (PEM)")
    f.add_argument("addrs", nargs="+")
    a = ap.parse_args(argv)
    tls = None
    if a.tls_cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(a.tls_cert, a.tls_key)
    asyncio.run(_farm(a.addrs, a.port, set(a.hang), tls))
    return 0


if __name__ == "__main__":
    sys.exit(main())
