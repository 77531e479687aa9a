"""`directord lab drill SCENARIO`: a failover drill on real IPVS in the HA pair lab.

The runner (this module, the I/O) drives a `director.lab.pair.PairLab`: it
waits until the pair is settled (dir1 holds the VIP, both tables complete),
starts a steady client (``rate`` requests per second through the VIP, a
fresh connection each, the scenario's timeout; start, end, result and
answering real server recorded), a sampler of the VIP holder (read in both
directors' namespaces) and an ARP capture in the client's namespace
(gratuitous ARPs for the VIP: the announcements as the network saw them).
After two seconds of traffic it carries out the scenario's steps (the first
is the fault), waits for the scenario's end condition, lets the client run
two more seconds, and collects the daemons' log lines (detection, takeover,
addresses, health transitions, IPVS changes). The record goes to
`director.lab.scenarios` for the figures, the timeline and the verdict.

Scenarios, their steps and expectations are declared in
`director.lab.scenarios.SCENARIOS`; the step actions are `ACTIONS` and the
wait conditions `CONDITIONS` here.
"""

from __future__ import annotations

import json
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import vm as vmrun
from .netns import enter_netns, link_mac, parse_http_response, socket_in_netns
from .pair import HolderProbe, PairLab, PairOptions, ipvs_problem
from .scenarios import (
    DIRECTORS,
    ETH_P_ARP,
    DrillRecord,
    Event,
    HolderSample,
    Sample,
    Scenario,
    announce_events,
    log_events,
    scenario,
    scenario_names,
)
from .verdict import evaluate, render, summary

#: Client traffic before the fault and after the end condition (seconds).
LEAD_S, TAIL_S = 2.0, 2.0
#: How long a ``wait`` step or the end condition may take (seconds; the VM is slow).
WAIT_S = 90.0
DEFAULT_PREFIX = "ddrill"


class SteadyClient(threading.Thread):
    """Requests through the VIP at ``rate`` per second until ``halt`` is set; one `Sample` each.

    Requests are sequential: one that waits (a SYN retransmission) delays the next ones.
    """

    def __init__(self, pair: PairLab, t0: float, rate: float = 50.0, timeout: float = 0.5) -> None:
        super().__init__(daemon=True, name="drill-client")
        self.pair, self.t0, self.period, self.timeout = pair, t0, 1.0 / rate, timeout
        self.samples: list[Sample] = []
        self.halt = threading.Event()

    def run(self) -> None:
        # This thread lives in the client's namespace until it ends: sockets are made here
        # directly (no helper thread per request, which the emulated VM cannot afford at 50/s).
        enter_netns(self.pair.lab.client)
        vip, port = self.pair.vip, self.pair.options.port
        next_at = time.monotonic()
        while not self.halt.is_set():
            start = time.monotonic()
            try:
                status, body = _get(vip, port, self.timeout)
                ok, result = status == 200, body.strip() if status == 200 else f"HTTP {status}"
            except (OSError, ValueError) as exc:
                ok, result = False, type(exc).__name__
            self.samples.append(Sample(round(start - self.t0, 4), round(time.monotonic() - self.t0, 4), ok, result))
            next_at += self.period
            delay = next_at - time.monotonic()
            if delay > 0:
                self.halt.wait(delay)
            else:
                next_at = time.monotonic()


def _get(addr: str, port: int, timeout: float) -> tuple[int, str]:
    """One HTTP/1.0 GET / over a fresh TCP connection from the calling thread's namespace;
    ``timeout`` (seconds) bounds the whole exchange. Raises OSError/TimeoutError/ValueError."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect((addr, port))
        sock.sendall(f"GET / HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no complete answer in time")
            sock.settimeout(left)
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
    return parse_http_response(b"".join(chunks))


class HolderSampler(threading.Thread):
    """Samples `PairLab.holders` every ``interval`` seconds (as fast as the machine allows)."""

    def __init__(self, pair: PairLab, t0: float, interval: float = 0.1) -> None:
        super().__init__(daemon=True, name="drill-holders")
        self.pair, self.t0, self.interval = pair, t0, interval
        self.samples: list[HolderSample] = []
        self.halt = threading.Event()
        self.probe = HolderProbe(pair)

    def run(self) -> None:
        try:
            while not self.halt.is_set():
                try:
                    held = self.probe.holders()
                except OSError:  # an interface being changed under us: sample again
                    held = None
                if held is not None:
                    self.samples.append(HolderSample(round(time.monotonic() - self.t0, 3), held))
                self.halt.wait(self.interval)
        finally:
            self.probe.close()

    def latest(self) -> HolderSample | None:
        """The newest sample, or None."""
        return self.samples[-1] if self.samples else None


class ArpWatch(threading.Thread):
    """Captures the ARP frames received in the client's namespace; `events` turns the gratuitous
    ARPs for the VIP among them into ``announce`` events.

    A packet socket (``AF_PACKET``, ``ETH_P_ARP``) created in the client's namespace; it sees
    every copy the flat service LAN delivers (with bonded directors: the one sent on the bond
    and one per slave). The thread only stamps and keeps the frames (``frames``: ``(seconds
    since t0, frame bytes)``); they are decoded (`director.lab.scenarios.announce_events`,
    scapy) once the drill is over, so decoding takes no time from the client and the sampler
    while the drill runs.
    """

    def __init__(self, pair: PairLab, t0: float) -> None:
        super().__init__(daemon=True, name="drill-arp")
        self.pair, self.t0 = pair, t0
        self.frames: list[tuple[float, bytes]] = []
        self.halt = threading.Event()
        self.macs = {link_mac(pair.lab.ns(d), pair.plan.service_if): d for d in DIRECTORS}
        self.sock = socket_in_netns(pair.lab.client, socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
        self.sock.settimeout(0.2)

    def run(self) -> None:
        try:
            while not self.halt.is_set():
                try:
                    frame = self.sock.recv(2048)
                except TimeoutError:
                    continue
                except OSError:
                    return
                self.frames.append((time.monotonic() - self.t0, frame))
        finally:
            self.sock.close()

    def events(self) -> list[Event]:
        """The ``announce`` events of the frames captured so far (in capture order)."""
        return announce_events(list(self.frames), self.pair.vip, self.macs)


class Drill:
    """One run of a scenario on a settled pair. Call `run`; it returns the `DrillRecord`.

    Args:
        pair: the lab (settled or about to be: `run` waits).
        scn: the scenario.
        rate: client requests per second.
        say: progress printer (a line each), or None for silence.
    """

    def __init__(
        self, pair: PairLab, scn: Scenario, rate: float = 50.0, say: Callable[[str], None] | None = None
    ) -> None:
        self.pair, self.scn, self.rate = pair, scn, rate
        self.say = say or (lambda _text: None)
        self.record = DrillRecord(
            scn.name, victim=scn.victim, victim_addr=pair.lab.rip(scn.victim) if scn.victim else None
        )
        self.t0 = 0.0
        self.step_t = 0.0
        self.log_offsets: dict[str, int] = {}

    # -- helpers used by actions and conditions --------------------------------------------

    def now(self) -> float:
        """Seconds since t0."""
        return time.monotonic() - self.t0

    def mark(self, kind: str, text: str, t: float | None = None) -> None:
        """Add a drill event (at ``t`` seconds since t0, default now) and say it."""
        t = round(self.now() if t is None else t, 3)
        self.record.events.append(Event(t, "drill", kind, text))
        self.say(f"  {t:8.3f} s  {text}")

    def new_log_events(self, node: str) -> list[Event]:
        """Timeline events in ``node``'s daemon log since the drill started."""
        try:
            with open(self.pair.log_path(node), "rb") as f:
                f.seek(self.log_offsets.get(node, 0))
                text = f.read().decode(errors="replace")
        except OSError:
            return []
        return log_events(text.splitlines(), node, vip=self.pair.vip, t0_epoch=self.t0_epoch)

    def holder_since(self, since: float) -> tuple[str, ...] | None:
        """The holder in the newest sample taken after ``since`` (seconds since t0), else None."""
        h = self.sampler.latest()
        return h.held if h is not None and h.t > since else None

    def served_since(self, since: float) -> bool:
        """A request that started after ``since`` succeeded."""
        return any(s.ok and s.start > since for s in self.client.samples[-200:])

    # -- the run -----------------------------------------------------------------------------

    def run(self) -> DrillRecord:
        """Settle, run the client, inject the fault, wait for the end, collect. Never raises
        for drill-level problems (they go into ``record.problems``); re-raises interruptions."""
        pair, scn, rec = self.pair, self.scn, self.record
        waited = pair.wait_settled()
        self.say(f"pair settled ({waited:.1f} s): dir1 holds {pair.vip}, both IPVS tables complete")
        rec.tables_before = pair.tables()
        for node in DIRECTORS:
            try:
                self.log_offsets[node] = pair.log_path(node).stat().st_size
            except OSError:
                self.log_offsets[node] = 0
        self.t0 = time.monotonic()
        self.t0_epoch = time.time()
        self.client = SteadyClient(pair, self.t0, self.rate, scn.client_timeout_s)
        self.sampler = HolderSampler(pair, self.t0)
        self.arp = ArpWatch(pair, self.t0)
        threads = (self.client, self.sampler, self.arp)
        for t in threads:
            t.start()
        self.mark("step", f"client started: {self.rate:g} requests/s, {scn.client_timeout_s:g} s timeout")
        try:
            time.sleep(LEAD_S)
            rec.fault_t = round(self.now(), 3)
            ok = True
            immediate = True  # still in the fault's first actions (before any wait or sleep)
            for i, (action, arg) in enumerate(scn.steps):
                if action == "wait":
                    if not self.wait_for(arg):
                        rec.problems.append(f"step {i + 1}: {arg} not reached in {WAIT_S:.0f} s")
                        ok = False
                        break
                elif action == "sleep":
                    time.sleep(float(arg))
                else:
                    began = rec.fault_t if i == 0 else self.now()  # stamped when the action starts
                    text = ACTIONS[action](self, arg)
                    self.mark("fault" if i == 0 else "step", ("FAULT: " if i == 0 else "") + text, began)
                    if immediate:
                        rec.fault_end_t = round(self.now(), 3)
                if action in ("wait", "sleep"):
                    immediate = False
            if ok:
                rec.settled = self.wait_for(scn.until)
                if rec.settled:
                    self.mark("note", f"end condition reached: {CONDITION_TEXT[scn.until]}")
                else:
                    rec.problems.append(f"end condition {scn.until} not reached in {WAIT_S:.0f} s")
            time.sleep(TAIL_S)
        finally:
            for t in threads:
                t.halt.set()
            for t in threads:
                t.join(10)
        rec.samples = list(self.client.samples)
        rec.holders = list(self.sampler.samples)
        rec.events += self.arp.events()
        for node in DIRECTORS:
            rec.events += self.new_log_events(node)
        rec.tables_after = pair.tables()
        return rec

    def wait_for(self, cond: str) -> bool:
        """Poll condition ``cond`` (a `CONDITIONS` name) until true or `WAIT_S` seconds pass."""
        since = self.now()
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            if CONDITIONS[cond](self, since):
                return True
            time.sleep(0.2)
        return False


# --- actions: (drill, argument) -> what was done (timeline text) ---------------------------------


def _kill_daemon(d: Drill, arg: tuple[str, str]) -> str:
    node, sig = arg
    pid = d.pair.signal_daemon(node, getattr(signal, f"SIG{sig}"))
    if pid is None:
        d.record.problems.append(f"{node}'s daemon was not running")
    return f"SIG{sig} to {node}'s daemon (pid {pid})"


def _start_daemon(d: Drill, node: str) -> str:
    return f"{node}'s daemon started (pid {d.pair.start_daemon(node)})"


def _links_down(d: Drill, node: str) -> str:
    d.pair.node_links(node, up=False)
    return f"{node}'s links down ({', '.join(i for i, _ in d.pair.plan.node(node).links)})"


def _heartbeat(d: Drill, state: str) -> str:
    d.pair.heartbeat_ports(up=state == "up")
    return f"heartbeat bridge ports {state} (service LAN untouched)"


def _kill_httpd(d: Drill, rs: str) -> str:
    pid = d.pair.kill_httpd(rs)
    if pid is None:
        d.record.problems.append(f"{rs}'s HTTP server was not running")
    return f"SIGKILL to {rs}'s HTTP server (pid {pid})"


def _port(d: Drill, arg: tuple[str, str]) -> str:
    role, state = arg
    d.pair.lab.port_set(role, up=state == "up")
    return f"{role}'s switch port {state}"


#: Step actions of `Scenario.steps`.
ACTIONS: dict[str, Callable[[Drill, Any], str]] = {
    "kill-daemon": _kill_daemon,
    "start-daemon": _start_daemon,
    "links-down": _links_down,
    "heartbeat": _heartbeat,
    "kill-httpd": _kill_httpd,
    "port": _port,
}


# --- conditions: (drill, since) -> bool --------------------------------------------------------


def _serves(node: str) -> Callable[[Drill, float], bool]:
    def cond(d: Drill, since: float) -> bool:
        h = d.sampler.latest()
        if h is None or h.t <= since or h.held != (node,):
            return False
        return d.served_since(h.t)

    return cond


def _victim_event(kind: str) -> Callable[[Drill, float], bool]:
    def cond(d: Drill, since: float) -> bool:
        addr = d.record.victim_addr
        return any(e.kind == kind and e.t >= since and f"{addr}:" in e.text for e in d.new_log_events("dir1"))

    return cond


def _victim_back(d: Drill, since: float) -> bool:
    """The victim answered a request that started a second after ``since`` and its latest
    health transition on dir1 (if any since the fault) is not ``down``."""
    victim, addr = d.record.victim, d.record.victim_addr
    if not any(s.ok and s.result == victim and s.start > since + 1.0 for s in d.client.samples[-200:]):
        return False
    moves = [
        e
        for e in d.new_log_events("dir1")
        if e.kind in ("rs-down", "rs-up") and f"{addr}:" in e.text and e.t >= d.record.fault_t
    ]
    return not moves or moves[-1].kind == "rs-up"


#: Wait conditions of `Scenario.steps` and `Scenario.until`.
CONDITIONS: dict[str, Callable[[Drill, float], bool]] = {
    "dir2-holds": lambda d, since: "dir2" in (d.holder_since(since) or ()),
    "split-brain": lambda d, since: d.holder_since(since) == ("dir1", "dir2"),
    "dir1-exited": lambda d, since: d.pair.daemon_pid("dir1") is None,
    "dir1-serves": _serves("dir1"),
    "dir2-serves": _serves("dir2"),
    "victim-out": _victim_event("rs-down"),
    "victim-back": _victim_back,
}
CONDITION_TEXT = {
    "dir2-holds": "dir2 holds the VIP",
    "split-brain": "both directors hold the VIP",
    "dir1-exited": "dir1's daemon exited",
    "dir1-serves": "dir1 alone holds the VIP and a request succeeded since",
    "dir2-serves": "dir2 alone holds the VIP and a request succeeded since",
    "victim-out": "the real server is out of rotation on dir1",
    "victim-back": "the real server answers again and is not out of rotation on dir1",
}


# --- entry points ----------------------------------------------------------------------------------


def run_scenario(pair: PairLab, name: str, *, rate: float = 50.0, say: Callable[[str], None] | None = None) -> dict:
    """Run scenario ``name`` (or an alias) on ``pair``; returns the report of
    `director.lab.verdict.summary` (``report["ok"]``: every expectation held).

    The pair is left as the scenario leaves it (call `PairLab.restore` for the next one).

    Raises:
        KeyError: unknown scenario; TimeoutError: the pair did not settle before the drill.
    """
    scn = scenario(name)
    record = Drill(pair, scn, rate, say).run()
    return summary(record, evaluate(scn.expect, record, pair.vip), scn)


def run_drill(name: str, *, options: PairOptions, rate: float = 50.0, as_json: bool = False) -> int:
    """``directord lab drill`` here: on the lab ``lab up`` built with the same prefix (restored
    afterwards, left up), else on a lab built for the drill and removed afterwards (also on
    interruption). Prints the report (text or JSON); returns 0 when every expectation held."""
    scn = scenario(name)
    say = (lambda _t: None) if as_json else (lambda t: print(t, flush=True))
    existing = PairLab.exists(options.prefix)
    if existing:
        pair = PairLab.attach(options.prefix)
        say(f"using the lab {options.prefix} (built by `directord lab up`)")
        pair.restore()
    else:
        pair = PairLab(options, Path(tempfile.mkdtemp(prefix=f"directord-drill-{options.prefix}-")))
    try:
        if not existing:
            say(
                f"building the lab {options.prefix}: client, dir1, dir2, {options.real_servers} real servers "
                f"({options.mode}{', bonded uplinks' if options.bond else ''}), heartbeat on eth1"
            )
            pair.up()
        p = pair.plan
        say(
            f"client {p.addr['client']}, dir1 {p.addr['dir1']}, dir2 {p.addr['dir2']}, VIP {p.vip} on "
            f"{p.service_if}, real servers {', '.join(pair.lab.rips)}; heartbeat {p.heartbeat_if} "
            f"({p.hb_addr['dir1']}, {p.hb_addr['dir2']})"
        )
        say(f"scenario {scn.name}: {scn.summary}")
        report = run_scenario(pair, name, rate=rate, say=say)
        if existing:
            try:
                pair.restore()
            except TimeoutError as e:
                report["problems"].append(f"restoring the lab afterwards: {e}")
    finally:
        if not existing:
            pair.down()
    print(json.dumps(report, indent=2) if as_json else "\n" + render(report), flush=True)
    return 0 if report["ok"] else 1


def vm_argv(name: str, options: PairOptions, rate: float, as_json: bool) -> list[str]:
    """The command the guest runs for ``lab drill ... --vm`` (the same drill, without ``--vm``)."""
    argv = [
        sys.executable,
        "-m",
        "director.cli",
        "lab",
        "drill",
        name,
        "--rate",
        f"{rate:g}",
        "--real-servers",
        str(options.real_servers),
        "--mode",
        options.mode,
        "--prefix",
        options.prefix,
    ]
    if options.bond:
        argv.append("--bond")
    if as_json:
        argv.append("--json")
    return argv


def main(
    name: str, *, vm: bool = False, as_json: bool = False, rate: float = 50.0, options: PairOptions | None = None
) -> int:
    """Entry point of ``directord lab drill``; with ``vm`` the drill runs inside the stock-kernel
    VM (one boot: build, drill, tear down). Exit status: 0 all expectations held, 1 some
    failed, 2 cannot run here."""
    options = options or PairOptions(prefix=DEFAULT_PREFIX)
    try:
        scenario(name)
    except KeyError as e:
        print(e.args[0], file=sys.stderr)
        return 2
    if vm:
        vmrun.ensure_vm_prerequisites()
        return vmrun.run_in_vm(
            vm_argv(name, options, rate, as_json),
            out_dir=tempfile.mkdtemp(prefix="directord-drill-vm-"),
            timeout_s=1800,
        )
    missing = vmrun.missing_python_packages()
    if missing:
        print(
            f"directord lab drill: it decodes its captures with {', '.join(missing)}: pip install 'directord[lab]'",
            file=sys.stderr,
        )
        return 2
    problem = ipvs_problem()
    if problem:
        print(
            f"directord lab drill: {problem}; run it in the stock-kernel VM with: directord lab drill {name} --vm",
            file=sys.stderr,
        )
        return 2
    return run_drill(name, options=options, rate=rate, as_json=as_json)


__all__ = ["ACTIONS", "CONDITIONS", "Drill", "run_scenario", "run_drill", "main", "scenario_names", "vm_argv"]
