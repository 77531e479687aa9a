"""`directord lab drill NAME --topology ecmp`: the drills of the routed lab (the I/O).

The runner drives a `director.lab.ecmp_site.EcmpLab`: it settles the lab (links up, the
daemons the drill wants running, the router's ECMP route over them, every real server
answering), opens the long-lived connections (`LongLivedClient`: HTTP/1.1, a request every
100 ms each), starts the steady client (`director.lab.drill.SteadyClient`: a new connection
per request) and a sampler of the router's next hops (``ip route`` in the router's
namespace, about every 0.1 s), reads each director's IPVS connection table (``ipvsadm
-Lnc``: which director each long-lived connection goes through), carries out the scenario's
steps, waits for its end condition, lets the clients run two more seconds and reads the
connection tables again. The record goes to `director.lab.ecmp_scenarios` for the verdict.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ha.bgp.service import DRAIN_FILE

from .. import control
from . import vm as vmrun
from .drill import SteadyClient
from .drive import ipvsadm_table
from .ecmp_scenarios import (
    ECMP_SCENARIOS,
    EcmpRecord,
    LongLived,
    director_log_events,
    evaluate,
    parse_ipvsadm_connections,
    render,
    summary,
)
from .ecmp_site import EcmpLab, EcmpOptions, parse_next_hops
from .netns import enter_netns, parse_http_response, wait_until
from .pair import ipvs_problem
from .scenarios import Event

#: Client traffic before the fault and after the end condition (seconds).
LEAD_S, TAIL_S = 2.0, 2.0
#: How long settling or the end condition may take (seconds; the VM is slow).
WAIT_S = 120.0
#: Long-lived connections by default, and the most accepted.
LONG_LIVED, MAX_LONG_LIVED = 12, 200
#: Seconds between two requests of a long-lived connection, and the longest wait for an answer.
LL_PERIOD_S, LL_TIMEOUT_S = 0.1, 5.0
DEFAULT_PREFIX = "ddrill"
MAX_ANSWER = 65536


class LongLivedClient(threading.Thread):
    """One persistent HTTP/1.1 connection from the client to the VIP: a request every
    `LL_PERIOD_S` seconds, each answer read (``LL_TIMEOUT_S`` seconds at most), until ``halt``
    is set or the connection is lost. Fills ``rec`` (a `LongLived`); ``ready`` is set after
    the first answer (or the loss)."""

    def __init__(self, lab: EcmpLab, t0: float, rec: LongLived) -> None:
        super().__init__(daemon=True, name=f"drill-long-{rec.index}")
        self.lab, self.t0, self.rec = lab, t0, rec
        self.halt, self.ready = threading.Event(), threading.Event()

    def _lose(self, why: str) -> None:
        if self.rec.lost is None and not self.halt.is_set():
            self.rec.lost, self.rec.lost_t = why, round(time.monotonic() - self.t0, 3)
            if self.rec.last_ok is not None:
                self.rec.max_gap_s = round(max(self.rec.max_gap_s, self.rec.lost_t - self.rec.last_ok), 3)

    def run(self) -> None:
        enter_netns(self.lab.lab.client)
        vip, port, rec = self.lab.vip, self.lab.options.port, self.rec
        request = f"GET / HTTP/1.1\r\nHost: {vip}\r\n\r\n".encode()
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.settimeout(LL_TIMEOUT_S)
                try:
                    sock.connect((vip, port))
                except OSError as e:
                    self._lose(f"connect ({type(e).__name__})")
                    return
                rec.port = sock.getsockname()[1]
                buf = b""
                while not self.halt.is_set():
                    try:
                        sock.sendall(request)
                        answer, buf = _read_answer(sock, buf)
                    except ConnectionResetError:
                        self._lose("reset")
                        return
                    except TimeoutError:
                        self._lose("timeout")
                        return
                    except (OSError, ValueError) as e:
                        self._lose("closed" if isinstance(e, EOFError) else f"error: {type(e).__name__}")
                        return
                    now = round(time.monotonic() - self.t0, 3)
                    if rec.real_server is None:
                        rec.real_server = answer
                    elif answer != rec.real_server:
                        self._lose(f"wrong real server ({answer})")
                        return
                    if rec.last_ok is not None:
                        rec.max_gap_s = round(max(rec.max_gap_s, now - rec.last_ok), 3)
                    rec.last_ok = now
                    rec.answers += 1
                    self.ready.set()
                    self.halt.wait(LL_PERIOD_S)
        finally:
            self.ready.set()


def _size(path: Path) -> int:
    """``path``'s size in bytes; 0 when it does not exist (yet)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


class _Closed(EOFError, OSError):
    """The server closed the connection."""


def _read_answer(sock: socket.socket, buf: bytes) -> tuple[str, bytes]:
    """One HTTP answer from ``sock`` (``buf``: bytes already read); ``(body stripped, the rest)``.

    Raises:
        _Closed: the peer closed; TimeoutError; OSError; ValueError: not HTTP, not 200, too long.
    """
    while b"\r\n\r\n" not in buf:
        if len(buf) > MAX_ANSWER:
            raise ValueError("answer head too long")
        chunk = sock.recv(4096)
        if not chunk:
            raise _Closed("closed by the server")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = min(int(value.strip()), MAX_ANSWER)
    while len(rest) < length:
        chunk = sock.recv(4096)
        if not chunk:
            raise _Closed("closed by the server")
        rest += chunk
    status, body = parse_http_response(head + b"\r\n\r\n" + rest[:length])
    if status != 200:
        raise ValueError(f"HTTP {status}")
    return body.strip(), rest[length:]


class NextHopSampler(threading.Thread):
    """The router's next hops for the VIP as its kernel changes them: read once
    (`EcmpLab.vip_next_hops`), then followed with ``ip -o monitor route`` in the router's
    namespace (one line per route message, RTM_NEWROUTE / RTM_DELROUTE; a deleted route
    leaves no next hop). ``changes`` holds ``(seconds since t0, directors sorted)`` at each
    change, stamped when the monitor's line arrived (reading ``ip route`` again in the slow VM
    would take a good part of a second)."""

    def __init__(self, lab: EcmpLab, t0: float) -> None:
        super().__init__(daemon=True, name="drill-next-hops")
        self.lab, self.t0 = lab, t0
        self.changes: list[tuple[float, tuple[str, ...]]] = []
        self.halt = threading.Event()
        self.by_addr = {lab.plan.addr[d]: d for d in lab.directors}

    def _add(self, t: float, hops: tuple[str, ...]) -> None:
        if (not self.changes or self.changes[-1][1] != hops) and len(self.changes) < 100_000:
            self.changes.append((round(t, 3), hops))

    def hops_of(self, line: str) -> tuple[str, ...] | None:
        """The next hops a monitor line gives the VIP's route, None when it is about another route."""
        words = line.split()
        deleted = bool(words) and words[0] == "Deleted"
        dest = words[1 if deleted else 0] if len(words) > int(deleted) else ""
        if dest not in (self.lab.vip, f"{self.lab.vip}/32"):
            return None
        if deleted:
            return ()
        return tuple(sorted(self.by_addr.get(a, a) for a in parse_next_hops(line)))

    def run(self) -> None:
        mon = self.lab.lab.popen(
            self.lab.router,
            ["ip", "-o", "monitor", "route"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        threading.Thread(target=self._stop_on_halt, args=(mon,), daemon=True, name="drill-ip-monitor-stop").start()
        try:
            time.sleep(0.2)  # let the monitor subscribe before the first read
            self._add(time.monotonic() - self.t0, tuple(sorted(self.lab.vip_next_hops())))
            assert mon.stdout is not None
            for line in mon.stdout:
                hops = self.hops_of(line[:MAX_ANSWER])
                if hops is not None:
                    self._add(time.monotonic() - self.t0, hops)
        finally:
            mon.kill()
            mon.wait(5)

    def _stop_on_halt(self, mon: subprocess.Popen) -> None:
        self.halt.wait()
        mon.terminate()

    def now(self) -> tuple[str, ...] | None:
        """The latest next hops, or None before the first read."""
        return self.changes[-1][1] if self.changes else None


def connection_directors(lab: EcmpLab, nodes: tuple[str, ...]) -> dict[int, tuple[str, str]]:
    """``{client source port: (director, real server)}`` from each running director's
    ``ipvsadm -Lnc`` (established entries from the client to the VIP; the real server by its
    lab name, or its address when not one of the lab's). A port listed by two directors (after
    a move both hold an entry until the old one expires) goes to the one whose entry expires
    last: each packet renews the entry of the director that forwards it."""
    client = lab.plan.addr["client"]
    names = {f"{lab.lab.rip(rs)}:{lab.options.port}": rs for rs in lab.plan.real_servers}
    best: dict[int, tuple[int, str, str]] = {}
    for node in nodes:
        r = lab.lab.exec(node, ["ipvsadm", "-Lnc"], check=False)
        for state, expire, source, virtual, dest in parse_ipvsadm_connections(r.stdout if r.returncode == 0 else ""):
            addr, _, port = source.rpartition(":")
            if addr == client and virtual.startswith(f"{lab.vip}:") and state == "ESTABLISHED" and port.isdigit():
                if int(port) not in best or expire > best[int(port)][0]:
                    best[int(port)] = (expire, node, names.get(dest, dest))
    return {port: (node, dest) for port, (_e, node, dest) in best.items()}


def service_dests(lab: EcmpLab, node: str) -> dict[str, tuple]:
    """``{real server addr:port: (forwarding, weight, ...)}`` of the lab's virtual service in
    director ``node``'s IPVS table (``ipvsadm -Ln``, `director.lab.drive.ipvsadm_table`), in
    the kernel's list order; empty when the service is absent."""
    service = ipvsadm_table(lab.lab, node).get(f"TCP {lab.vip}:{lab.options.port}") or {"dests": {}}
    return service["dests"]


def dest_orders(lab: EcmpLab, nodes: tuple[str, ...]) -> dict[str, list[str]]:
    """``{director: real server addresses (addr:port) of the lab's service in the order
    ipvsadm -Ln lists them}`` (the kernel's list order)."""
    return {n: list(service_dests(lab, n)) for n in nodes}


def victim_weights(lab: EcmpLab, rs: str) -> dict[str, int | None]:
    """``{director: weight of real server rs in its IPVS table (ipvsadm -Ln), None if absent}``."""
    dest = f"{lab.lab.rip(rs)}:{lab.options.port}"
    out: dict[str, int | None] = {}
    for node in lab.directors:
        found = service_dests(lab, node).get(dest)
        out[node] = None if found is None else found[1]
    return out


def out_of_service(lab: EcmpLab, nodes: tuple[str, ...]) -> list[str]:
    """``["dirN: rsK"]`` for each real server not at a weight above 0 in the IPVS table of
    each director of ``nodes`` (``ipvsadm -Ln``); empty when all are in service everywhere."""
    out = []
    for node in nodes:
        dests = service_dests(lab, node)
        for rs in lab.plan.real_servers:
            found = dests.get(f"{lab.lab.rip(rs)}:{lab.options.port}")
            if found is None or found[1] <= 0:
                out.append(f"{node}: {rs}")
    return out


def _wait(pred: Callable[[], bool], timeout: float = WAIT_S) -> bool:
    """`wait_until` (every 0.2 s) as a bool: False when ``pred`` stayed false for ``timeout`` s."""
    try:
        wait_until(pred, timeout, 0.2)
    except TimeoutError:
        return False
    return True


def settle(lab: EcmpLab, running: tuple[str, ...], say: Callable[[str], None]) -> float:
    """Bring the lab to the drill's start: every node's links up, the HTTP servers running,
    the daemons of ``running`` started (the others stopped with SIGTERM) and undrained (``bgp
    undrain`` over the control socket while one is not among the next hops: a drain outlives
    a restart; the others' drain files removed once they stopped), the router's next hops
    exactly ``running``, every real server at a weight above 0 in every running director's
    table, and a request through the VIP answered. Returns seconds waited.

    Raises:
        TimeoutError: not reached within `WAIT_S` seconds.
    """
    t = time.monotonic()
    for node in lab.directors:
        lab.node_links(node, up=True)
    for rs in lab.plan.real_servers:
        lab.node_links(rs, up=True)
    lab.lab.reset_real_servers()
    for node in lab.directors:
        pid = lab.daemon_pid(node)
        if node in running and pid is None:
            lab.start_daemon(node)
        elif node not in running and pid is not None:
            lab.signal_daemon(node, signal.SIGTERM)
    want = tuple(sorted(running))

    def ready() -> bool:
        hops = tuple(sorted(lab.vip_next_hops()))
        for node in set(want) - set(hops):
            # a drain is kept across restarts: undrain the director (once its daemon answers)
            try:
                control.request(str(lab.socket_path(node)), "bgp", timeout=5.0, action="undrain")
            except (OSError, ValueError):
                pass
        if hops != want:
            return False
        if any(lab.daemon_pid(n) is not None for n in lab.directors if n not in running):
            return False
        for node in set(lab.directors) - set(running):
            # a director the drill starts later (add-director) starts undrained
            (lab.state_dir(node) / DRAIN_FILE).unlink(missing_ok=True)
        if out_of_service(lab, want):
            # every real server up on every director: a flow placed while its real server was
            # at weight 0 (mh-fallback) goes to that real server on the next director it meets
            return False
        try:
            return lab.client_get(timeout=1.0)[0] == 200
        except (OSError, ValueError):
            return False

    if not _wait(ready):
        raise TimeoutError(
            f"the router's next hops did not become {', '.join(want)} in {WAIT_S:.0f} s "
            f"(now: {', '.join(lab.vip_next_hops()) or 'none'})"
        )
    waited = time.monotonic() - t
    say(f"lab settled ({waited:.1f} s): the router spreads {lab.vip} over {', '.join(want)}")
    return waited


class EcmpDrill:
    """One run of drill ``name`` on ``lab``; `run` returns the `EcmpRecord`.

    Args:
        lab: the routed lab (built).
        name: an `ECMP_SCENARIOS` name.
        rate: new connections per second; long_lived: long-lived connections (1..200).
        say: progress printer, or None.
    """

    def __init__(
        self,
        lab: EcmpLab,
        name: str,
        *,
        rate: float = 50.0,
        long_lived: int = LONG_LIVED,
        say: Callable[[str], None] | None = None,
    ) -> None:
        if not 1 <= long_lived <= MAX_LONG_LIVED:
            raise ValueError(f"long-lived connections: 1..{MAX_LONG_LIVED}, not {long_lived}")
        self.lab, self.scn, self.rate, self.n_long = lab, ECMP_SCENARIOS[name], rate, long_lived
        self.say = say or (lambda _t: None)
        dirs = lab.directors
        victim = {"first": dirs[0], "last": dirs[-1]}.get(self.scn.victim, self.scn.victim)
        self.record = EcmpRecord(name, lab.options.scheduler, dirs, victim)
        self.t0 = 0.0

    def now(self) -> float:
        """Seconds since t0."""
        return time.monotonic() - self.t0

    def mark(self, kind: str, text: str, t: float | None = None) -> None:
        """A drill event (at ``t``, default now), said too."""
        t = round(self.now() if t is None else t, 3)
        self.record.events.append(Event(t, "drill", kind, text))
        self.say(f"  {t:8.3f} s  {text}")

    def run(self) -> EcmpRecord:
        """Settle, start the clients, carry out the steps, wait for the end, collect. Runner
        problems go into ``record.problems``; interruptions are re-raised."""
        lab, rec = self.lab, self.record
        dirs = lab.directors
        running = tuple(d for d in dirs if not (rec.scenario == "add-director" and d == rec.victim))
        settle(lab, running, self.say)
        # every director's log from here on: the victim's BGP steps, and a health change on any
        # director (one that quiesces a real server alone breaks flows moved to it)
        offsets = {d: _size(lab.log_path(d)) for d in dirs}
        self.t0 = time.monotonic()
        t0_epoch = time.time()
        self.lls = [LongLivedClient(lab, self.t0, LongLived(i + 1)) for i in range(self.n_long)]
        for c in self.lls:
            c.start()
        for c in self.lls:
            c.ready.wait(LL_TIMEOUT_S * 2)
        rec.long_lived = [c.rec for c in self.lls]
        self.client = SteadyClient(lab, self.t0, self.rate, 0.5)  # type: ignore[arg-type]
        self.hops = NextHopSampler(lab, self.t0)
        threads: list[threading.Thread] = [self.client, self.hops]
        for t in threads:
            t.start()
        self.mark("step", f"{self.n_long} long-lived connections open; client started: {self.rate:g} new/s")
        try:
            time.sleep(LEAD_S)
            self._all_hops_before_the_fault(running)
            rec.orders["before"] = dest_orders(lab, running)
            before = connection_directors(lab, running)
            for c in rec.long_lived:
                c.director_before = before[c.port][0] if c.port in before else None
            rec.fault_t = round(self.now(), 3)
            rec.settled = self.steps()
            if not rec.settled:
                rec.problems.append(f"end condition of {rec.scenario} not reached in {WAIT_S:.0f} s")
            time.sleep(TAIL_S)
            alive = tuple(d for d in dirs if lab.daemon_pid(d) is not None)
            after = connection_directors(lab, alive)
            rec.orders["after"] = dest_orders(lab, alive)
            for c in rec.long_lived:
                c.director_after, c.entry_after = after.get(c.port, (None, None))
        finally:
            for t in [*threads, *self.lls]:
                t.halt.set()  # type: ignore[attr-defined]
            for t in [*threads, *self.lls]:
                t.join(10)
        rec.samples = list(self.client.samples)
        rec.next_hops = list(self.hops.changes)
        for d, offset in offsets.items():
            try:
                with open(lab.log_path(d), "rb") as f:
                    f.seek(offset)
                    text = f.read(4 << 20).decode(errors="replace")
            except OSError:
                continue
            rec.events += director_log_events(text.splitlines(), d, t0_epoch)
        return rec

    def _all_hops_before_the_fault(self, running: tuple[str, ...]) -> None:
        """Wait (at most `WAIT_S`) until the router forwards to every running director again,
        so that the fault meets the lab it is about: a BFD session with 100 ms timers can flap
        in the emulated VM under load, and the router then drops a director for a few seconds.
        The wait is in the timeline; not getting there is a runner problem."""
        want = sorted(running)
        if sorted(self.lab.vip_next_hops()) == want:
            return
        started = time.monotonic()
        self.mark("step", f"before the fault the router forwards to {self.lab.vip_next_hops()}, not {want}: waiting")
        if _wait(lambda: sorted(self.lab.vip_next_hops()) == want):
            self.mark("step", f"the router forwards to {', '.join(want)} again ({time.monotonic() - started:.1f} s)")
        else:
            self.record.problems.append(f"the router did not forward to all of {want} before the fault")

    def steps(self) -> bool:
        """The scenario's steps from the fault to its end condition; True when it was reached."""
        lab, rec, v = self.lab, self.record, self.record.victim
        scn = rec.scenario
        if scn == "fail-director":
            # Links first: the router must find out by BFD (a killed daemon's BIRD may close its
            # session with a notification while the links are still up, which no dead node does).
            lab.node_links(v, up=False)
            pid = lab.signal_daemon(v, signal.SIGKILL)
            rec.fault_end_t = round(self.now(), 3)
            self.mark("fault", f"FAULT: {v}'s links down, SIGKILL to its daemon (pid {pid})", rec.fault_t)
            self.mark("step", f"{v}'s daemon killed and its links down (the fault is complete)", rec.fault_end_t)
            return _wait(lambda: self._hops_without(v) and self._served_since(rec.fault_t))
        if scn == "drain-director":
            # The request `directord bgp drain --control-socket` sends, sent from here: the
            # command itself did not finish within 30 s under the drill's load in the emulated VM.
            try:
                reply = control.request(str(lab.socket_path(v)), "bgp", timeout=30.0, action="drain")
            except (OSError, ValueError) as e:
                reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            took = self.now() - rec.fault_t
            text = str(reply.get("message") or reply.get("error") or reply)[:300]
            self.mark("fault", f"bgp drain on {v} ({took:.2f} s): {text}", rec.fault_t)
            if not reply.get("ok"):
                rec.problems.append(f"bgp drain on {v} refused: {text}")
                return False
            if not _wait(lambda: self._hops_without(v)):
                return False
            self.mark("step", f"the router dropped {v}; SIGTERM to its daemon")
            lab.signal_daemon(v, signal.SIGTERM)
            ok = _wait(lambda: lab.daemon_pid(v) is None)
            if ok:
                self.mark("step", f"{v}'s daemon exited")
            return ok
        if scn == "add-director":
            pid = lab.start_daemon(v)
            self.mark("fault", f"{v}'s daemon started (pid {pid})", rec.fault_t)
            return _wait(lambda: v in (self.hops.now() or ()))
        # realserver-down-everywhere
        pid = lab.kill_httpd(v)
        self.mark("fault", f"SIGKILL to {v}'s HTTP server (pid {pid})", rec.fault_t)

        def quiesced() -> bool:
            rec.weights = victim_weights(lab, v)
            return all(w == 0 for w in rec.weights.values())

        ok = _wait(quiesced)
        if ok:
            rec.quiesced_t = round(self.now(), 3)
            self.mark("step", f"{v} at weight 0 in every director's table (ipvsadm -Ln)")
            time.sleep(2.0)  # new requests after the change, for the verdict
        return ok

    def _hops_without(self, v: str) -> bool:
        hops = self.hops.now()
        return bool(hops) and v not in (hops or ())

    def _served_since(self, t: float) -> bool:
        return any(s.ok and s.start > t for s in self.client.samples[-200:])


def run_ecmp_scenario(
    lab: EcmpLab,
    name: str,
    *,
    rate: float = 50.0,
    long_lived: int = LONG_LIVED,
    say: Callable[[str], None] | None = None,
) -> dict:
    """Run drill ``name`` on the built ``lab``; returns the `director.lab.ecmp_scenarios.summary`
    report (``report["ok"]``: every expectation held). The lab is left as the drill leaves it
    (the next run settles it again).

    Raises:
        KeyError: unknown drill; TimeoutError: the lab did not settle before the drill.
    """
    record = EcmpDrill(lab, name, rate=rate, long_lived=long_lived, say=say).run()
    return summary(record, evaluate(record))


def run_drill(name: str, *, options: EcmpOptions, rate: float, long_lived: int, as_json: bool) -> int:
    """Build a lab for the drill (refused when one of the prefix exists), run it, remove the lab
    (also on interruption), print the report; 0 when every expectation held."""
    say = (lambda _t: None) if as_json else (lambda t: print(t, flush=True))
    if EcmpLab.exists(options.prefix):
        print(
            f"directord lab drill: the lab {options.prefix} exists; `directord lab down --prefix {options.prefix}` "
            "first (an ecmp drill builds its own lab)",
            file=sys.stderr,
        )
        return 2
    lab = EcmpLab(options, Path(tempfile.mkdtemp(prefix=f"directord-drill-{options.prefix}-")))
    try:
        say(
            f"building the lab {options.prefix}: client, router (BIRD), {', '.join(lab.directors)} "
            f"(scheduler {options.scheduler}), {options.real_servers} real servers (dr)"
        )
        lab.up(start_daemons=False)
        report = run_ecmp_scenario(lab, name, rate=rate, long_lived=long_lived, say=say)
    finally:
        lab.down()
    print(json.dumps(report, indent=2) if as_json else "\n" + render(report), flush=True)
    return 0 if report["ok"] else 1


def main(
    name: str,
    *,
    options: EcmpOptions,
    vm: bool = False,
    as_json: bool = False,
    rate: float = 50.0,
    long_lived: int = LONG_LIVED,
) -> int:
    """Entry point of ``directord lab drill NAME --topology ecmp``; with ``vm`` in the stock-kernel
    VM (one boot). Exit status: 0 all expectations held, 1 some failed, 2 cannot run here."""
    if name not in ECMP_SCENARIOS:
        print(f"unknown ecmp drill {name!r}: {', '.join(ECMP_SCENARIOS)}", file=sys.stderr)
        return 2
    if vm:
        vmrun.ensure_vm_prerequisites()
        argv = [sys.executable, "-m", "director.cli", "lab", "drill", name, "--topology", "ecmp"]
        argv += ["--directors", str(options.directors), "--scheduler", options.scheduler, "--rate", f"{rate:g}"]
        argv += ["--long-lived", str(long_lived), "--real-servers", str(options.real_servers)]
        argv += ["--prefix", options.prefix] + (["--json"] if as_json else [])
        return vmrun.run_in_vm(argv, out_dir=tempfile.mkdtemp(prefix="directord-drill-vm-"), timeout_s=1800)
    problem = ipvs_problem()
    if problem:
        print(f"directord lab drill: {problem}; run it in the stock-kernel VM with --vm", file=sys.stderr)
        return 2
    return run_drill(name, options=options, rate=rate, long_lived=long_lived, as_json=as_json)


__all__ = ["EcmpDrill", "LongLivedClient", "NextHopSampler", "run_ecmp_scenario", "run_drill", "main", "settle"]
