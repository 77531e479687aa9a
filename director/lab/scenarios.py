"""The drills of `directord lab drill`: scenarios, their expectations, and the drill's timeline.

Everything here is pure (no sockets, no processes, no clock): the drill
runner (`director.lab.drill`) records what happened and hands it over as a
`DrillRecord`; this module turns the record into the figures and the timeline,
and `director.lab.verdict` judges them against the scenario's `Expect`. Times are seconds
since the drill's ``t0`` (the moment the steady client started), as floats.

The scenarios and what each must show are declared once, in `SCENARIOS`
(the runner reads the fault steps, the end condition and the client timeout
from there; the checks in `director.lab.verdict.evaluate` read the expectations).

The lab runs ``directord run --log-format json``: one JSON object per log line
(`director.events.JSONFormatter`), an event's with its ``kind`` and fields. The timeline is
built from the events' kinds and fields (`classify_event`), never from their text: a peer
declared dead (``ha.peer``), HA decisions (``ha.acquiring``, ``ha.releasing``), the VIP added or
removed (``ha.address_added``, ``ha.address_removed``), IPVS operations (``ipvs.applied``) and
health transitions (``check.health``). Rewording a log message changes no verdict.

The gratuitous ARPs the client captured become ``announce`` events (`announce_events`),
decoded with scapy after the drill: the decoder imports it when first called, so importing
this module (as `directord`'s command line does for every subcommand) does not load it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ha.model import DEFAULT_DEADTIME, DEFAULT_INITDEAD, DEFAULT_KEEPALIVE

#: HA timers of the lab pair (seconds): directord's shipped defaults (0.2, 0.8, 3).
KEEPALIVE, DEADTIME, INITDEAD = DEFAULT_KEEPALIVE, DEFAULT_DEADTIME, DEFAULT_INITDEAD
#: Health checks of the lab's virtual service (seconds, counts).
CHECK_INTERVAL, CHECK_TIMEOUT, CHECK_RISE, CHECK_FALL = 1.0, 1.0, 2, 2
#: Allowance on top of protocol timers for the slow emulated VM (seconds):
#: announcement, neighbour update, a process scheduled late.
MARGIN = 4.0
#: Grace after a detection event before failures count against it (seconds):
#: requests already in flight when the table changed.
GRACE = 0.6
#: Slack around a VIP move for a request caught in it (seconds): the daemons' log stamps
#: against the client's clock, and a lost segment's first retransmission (TCP's 200 ms
#: minimum RTO) that reaches the new holder.
MOVE_SLACK = 0.5

DIRECTORS = ("dir1", "dir2")


def service_yaml(
    vip: str,
    port: int,
    rips: Sequence[str],
    *,
    scheduler: str = "rr",
    scheduler_flags: Sequence[str] = (),
    forwarding: str = "dr",
    on_failure: str | None = None,
) -> str:
    """The ``virtual_services:`` section of a lab director's configuration (YAML text, pure).

    One virtual service ``web`` on ``vip:port`` (tcp) with ``scheduler`` (and its
    ``scheduler_flags``), the ``forwarding`` method, an HTTP check of ``/healthz`` every
    `CHECK_INTERVAL` seconds (timeout `CHECK_TIMEOUT` seconds, rise `CHECK_RISE`, fall
    `CHECK_FALL`), ``on_failure`` when given, and one real server per address of ``rips``
    on ``port``. The values are the lab's own (addresses, names of the schema): no quoting.
    """
    rs = "\n".join(f"      - {{address: {rip}, port: {port}}}" for rip in rips)
    check = (
        f"{{type: http, path: /healthz, interval: {CHECK_INTERVAL:g}, timeout: {CHECK_TIMEOUT:g}, "
        f"rise: {CHECK_RISE}, fall: {CHECK_FALL}}}"
    )
    extra = ""
    if scheduler_flags:
        extra += f"    scheduler_flags: [{', '.join(scheduler_flags)}]\n"
    if on_failure:
        extra += f"    on_failure: {on_failure}\n"
    return f"""\
virtual_services:
  - name: web
    address: {vip}
    port: {port}
    protocol: tcp
    scheduler: {scheduler}
{extra}    forwarding: {forwarding}
    check: {check}
    real_servers:
{rs}
"""


# --- what the runner records ------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One client request: ``start``/``end`` in seconds since t0, ``ok`` (HTTP 200),
    ``result`` (the answering real server's name, ``"HTTP 503"``, or the exception name)."""

    start: float
    end: float
    ok: bool
    result: str


@dataclass(frozen=True)
class HolderSample:
    """Who held the VIP at ``t`` (seconds since t0), seen from each director's namespace.

    A director counts when the VIP is configured on its service interface
    *and* that interface is up (a failed node's leftover address does not
    reach the network).
    """

    t: float
    held: tuple[str, ...]

    @property
    def holder(self) -> str:
        """``"dir1"``, ``"dir2"``, ``"dir1+dir2"`` (split brain / stale address) or ``"-"``."""
        return "+".join(self.held) or "-"


@dataclass(frozen=True)
class Event:
    """One timeline entry: ``t`` seconds since t0, ``source`` (``drill``, ``client``,
    ``dir1``, ``dir2``), ``kind`` (see `EVENT_KINDS`), free ``text``."""

    t: float
    source: str
    kind: str
    text: str


#: Event kinds: fault/step (drill actions), detect (a peer declared dead),
#: acquire/release (HA decisions), vip-added/vip-removed (addresses),
#: announce (a gratuitous ARP for the VIP seen by the client), holder (the
#: sampled holder changed), rs-down/rs-up (health check transitions), ipvs
#: (a kernel table change), failed (a run of failed client requests),
#: first-success (first successful request after the fault), note.
EVENT_KINDS = (
    "fault",
    "step",
    "detect",
    "acquire",
    "release",
    "vip-added",
    "vip-removed",
    "announce",
    "holder",
    "rs-down",
    "rs-up",
    "ipvs",
    "failed",
    "first-success",
    "note",
)


@dataclass
class DrillRecord:
    """Everything one drill observed (filled by the runner, read by `evaluate`).

    ``fault_t``: when the fault was injected; ``fault_end_t``: when its
    immediate actions (those before the first wait or sleep) were all done,
    e.g. the links of a killed node down as well (None: same as ``fault_t``);
    ``samples``: client requests;
    ``holders``: holder samples (both directors); ``events``: timeline
    entries from the drill, the daemons' logs and the client's ARP capture;
    ``tables_before``/``tables_after``: each director's IPVS table reduced to
    ``{service: {dest: (forward, weight)}}`` (see `table_shape`);
    ``victim``/``victim_addr``: the real server a real-server scenario broke
    (``"rs2"``) and its RIP;
    ``settled``: the scenario's end condition was reached in time;
    ``problems``: runner-side errors (a daemon that did not start...).
    """

    scenario: str
    fault_t: float = 0.0
    fault_end_t: float | None = None
    samples: list[Sample] = field(default_factory=list)
    holders: list[HolderSample] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    tables_before: dict[str, dict] = field(default_factory=dict)
    tables_after: dict[str, dict] = field(default_factory=dict)
    victim: str | None = None
    victim_addr: str | None = None
    settled: bool = False
    problems: list[str] = field(default_factory=list)


# --- the scenarios ------------------------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    """What a drill must show (None/False: not checked).

    final_holder: the one director holding the VIP at the end (always
        checked: exactly one holder).
    vip_moves_to: a director that must hold the VIP at some point after the fault.
    max_gap_s: bound on the longest gap between successful responses after
        the fault (seconds).
    max_failed: failed requests allowed over the whole drill.
    resets_only_at_moves: a failed request must be a connection reset of a
        request in flight while the VIP moved (see `vip_moves`), at most one
        per move. Without IPVS connection synchronisation the new holder has
        no entry for a connection set up through the old one: a segment of
        it that reaches the new holder is answered with a TCP reset. Any
        other failure fails the check.
    no_failure_after: an event kind (``"first-success"``, ``"rs-down"``,
        ``"rs-up"``): no request that starts `GRACE` seconds after the first
        such event (after the fault) may fail.
    split_brain_ok: samples with both directors holding the VIP are
        tolerated (during the fault); otherwise none may show both.
    holder_constant: the holder never changes (real-server faults).
    ipvs_unchanged: every director's table (services, destinations, forwarding
        method, weights) is the same before and after, and no daemon logged
        an IPVS change after the fault.
    victim_out: the broken real server leaves rotation (an ``rs-down``
        event), and answers no request that starts `GRACE` seconds after it.
    victim_back: the broken real server is back in rotation (``rs-up``) and
        answers a request after that.
    """

    final_holder: str = "dir1"
    vip_moves_to: str | None = None
    max_gap_s: float | None = None
    max_failed: int | None = None
    resets_only_at_moves: bool = False
    no_failure_after: str | None = None
    split_brain_ok: bool = False
    holder_constant: bool = False
    ipvs_unchanged: bool = False
    victim_out: bool = False
    victim_back: bool = False


@dataclass(frozen=True)
class Scenario:
    """One drill.

    ``steps``: the fault, as runner actions in order (each ``(action,
    argument)``; ``("wait", cond)`` waits for a condition, ``("sleep", s)``
    sleeps ``s`` seconds); see `director.lab.drill.ACTIONS` and
    `director.lab.drill.CONDITIONS`. The first step is the fault instant.
    ``until``: the end condition after the steps (a condition name).
    ``client_timeout_s``: each request's timeout (seconds).
    ``victim``: the real server a real-server scenario breaks.
    """

    name: str
    summary: str
    steps: tuple[tuple[str, Any], ...]
    until: str
    expect: Expect
    aliases: tuple[str, ...] = ()
    client_timeout_s: float = 0.5
    victim: str | None = None


_TAKEOVER = DEADTIME + MARGIN

#: The drills, in the order `directord lab drill --list` shows them.
SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "fail-active",
            "node failure of the active director: its daemon SIGKILLed and all its links down; dir2 takes over",
            steps=(("kill-daemon", ("dir1", "KILL")), ("links-down", "dir1")),
            until="dir2-serves",
            expect=Expect(
                final_holder="dir2", vip_moves_to="dir2", max_gap_s=_TAKEOVER, no_failure_after="first-success"
            ),
            aliases=("kill-active",),
        ),
        Scenario(
            "crash-daemon",
            "SIGKILL of the active daemon only (links stay up, the VIP stays configured); dir2 takes over; "
            "then the daemon restarts, drops its stale VIP and takes the VIP back (auto_failback)",
            steps=(("kill-daemon", ("dir1", "KILL")), ("wait", "dir2-holds"), ("sleep", 1.0), ("start-daemon", "dir1")),
            until="dir1-serves",
            expect=Expect(final_holder="dir1", vip_moves_to="dir2", max_gap_s=_TAKEOVER, split_brain_ok=True),
        ),
        Scenario(
            "stop-active",
            "graceful stop (SIGTERM) of the active daemon: it releases the VIP and tells its peer; dir2 takes over "
            "without waiting for the deadtime",
            steps=(("kill-daemon", ("dir1", "TERM")),),
            until="dir2-serves",
            expect=Expect(final_holder="dir2", vip_moves_to="dir2", max_gap_s=MARGIN),
        ),
        Scenario(
            "cut-heartbeat",
            "the heartbeat bridge's ports go down while the service LAN stays up (split brain: both directors "
            "hold the VIP), then come back: the preferred owner dir1 keeps the VIP, dir2 lets go",
            steps=(("heartbeat", "down"), ("wait", "split-brain"), ("sleep", 1.0), ("heartbeat", "up")),
            until="dir1-serves",
            expect=Expect(final_holder="dir1", vip_moves_to="dir2", max_gap_s=_TAKEOVER, split_brain_ok=True),
            aliases=("cut-heartbeat-heal",),
        ),
        Scenario(
            "kill-realserver",
            "a real server's HTTP server is SIGKILLed: the health check takes it out of rotation (quiescent)",
            steps=(("kill-httpd", "rs2"),),
            until="victim-out",
            expect=Expect(
                final_holder="dir1",
                holder_constant=True,
                victim_out=True,
                no_failure_after="rs-down",
                max_gap_s=CHECK_INTERVAL * CHECK_FALL + CHECK_TIMEOUT + MARGIN,
            ),
            victim="rs2",
        ),
        Scenario(
            "flap-realserver",
            "a real server's switch port goes down and up twice (3.5 s each, longer than the checks need to "
            "notice): it leaves rotation and comes back",
            steps=(
                ("port", ("rs2", "down")),
                ("sleep", 3.5),
                ("port", ("rs2", "up")),
                ("sleep", 3.5),
                ("port", ("rs2", "down")),
                ("sleep", 3.5),
                ("port", ("rs2", "up")),
            ),
            until="victim-back",
            expect=Expect(final_holder="dir1", holder_constant=True, victim_back=True),
            victim="rs2",
        ),
        Scenario(
            "restart-director",
            "restart of the active daemon (SIGTERM, then start): the IPVS tables stay as they are and no client "
            "request fails, but for one in flight at each of the two VIP moves, which may be reset (requests "
            "may wait for a TCP SYN retransmission: 3 s client timeout)",
            steps=(("kill-daemon", ("dir1", "TERM")), ("wait", "dir1-exited"), ("start-daemon", "dir1")),
            until="dir1-serves",
            expect=Expect(final_holder="dir1", resets_only_at_moves=True, ipvs_unchanged=True),
            client_timeout_s=3.0,
        ),
    )
}


def scenario(name: str) -> Scenario:
    """The scenario called ``name`` or by one of its aliases.

    Raises:
        KeyError: unknown name (the message lists the known ones).
    """
    if name in SCENARIOS:
        return SCENARIOS[name]
    for s in SCENARIOS.values():
        if name in s.aliases:
            return s
    raise KeyError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")


def scenario_names(with_aliases: bool = True) -> list[str]:
    """Names accepted on the command line (aliases after the names)."""
    names = list(SCENARIOS)
    if with_aliases:
        names += [a for s in SCENARIOS.values() for a in s.aliases]
    return names


# --- daemon log lines (JSON, one event or record each) ---------------------------------------

#: Longest log line read, in characters (a longer one is not an event of ours).
MAX_LOG_LINE = 64 * 1024


def parse_log_line(line: str) -> dict[str, Any] | None:
    """The JSON object of a ``directord run --log-format json`` line (``at`` in Unix seconds,
    ``level``, ``logger``, ``message``, and for an event ``kind`` and its fields); ``None`` for
    anything else (a traceback line, the checker child's text lines, a cut line)."""
    if len(line) > MAX_LOG_LINE or not line.startswith("{"):
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("at"), (int, float)):
        return None
    return record


def classify_event(record: dict[str, Any], vip: str) -> str | None:
    """The timeline kind of a daemon log record, by its event ``kind`` and fields; ``None`` when
    it is not a timeline event (a plain log line, another event kind, another address)."""
    kind = record.get("kind")
    if kind == "ha.peer":
        return "detect" if record.get("status") == "dead" else None
    if kind == "ha.acquiring":
        return "acquire"
    if kind == "ha.releasing":
        return "release"
    if kind in ("ha.address_added", "ha.address_removed"):
        address = record.get("address")
        if not isinstance(address, str) or not address.startswith(f"{vip}/"):
            return None
        if kind == "ha.address_added":
            return "vip-added"
        return "vip-removed" if record.get("error") is None else None
    if kind == "ipvs.applied":
        return "ipvs"
    if kind == "check.health" and record.get("new") in ("up", "down"):
        return "rs-" + record["new"]
    return None


def log_events(
    lines: Iterable[str], source: str, *, vip: str, t0_epoch: float, since: float | None = None
) -> list[Event]:
    """Timeline events of one daemon's JSON log ``lines``; ``t0_epoch`` is the drill's t0 as a
    Unix time (seconds), events before ``since`` (seconds since t0) are left out. An event's
    text is its log message."""
    out = []
    for line in lines:
        record = parse_log_line(line)
        if record is None:
            continue
        kind = classify_event(record, vip)
        t = record["at"] - t0_epoch
        if kind is None or (since is not None and t < since):
            continue
        out.append(Event(round(t, 3), source, kind, str(record.get("message", ""))))
    return out


def holder_events(holders: Sequence[HolderSample]) -> list[Event]:
    """A ``holder`` event at every change of the sampled holder (the first sample included)."""
    out, last = [], None
    for h in holders:
        if h.holder != last:
            out.append(Event(h.t, "drill", "holder", f"VIP held by {h.holder}"))
            last = h.holder
    return out


# --- ARP frames seen by the client -----------------------------------------------------------

ETH_P_ARP = 0x0806  # include/uapi/linux/if_ether.h


def parse_arp(frame: bytes) -> tuple[int, str, str, str, str] | None:
    """``(op, sender MAC, sender IP, target MAC, target IP)`` of an Ethernet/ARP frame for
    IPv4 over Ethernet (RFC 826: hardware type 1, protocol 0x0800, lengths 6 and 4), None for
    any other or a truncated frame. MACs as ``aa:bb:cc:dd:ee:ff``.

    Decoded with scapy, imported here on the first call: the lab's tools decode captures
    after the fact, and nothing the daemon imports loads scapy.
    """
    from scapy.layers.l2 import ARP, Ether

    if len(frame) < 14:  # no whole Ethernet header: scapy would raise
        return None
    pkt = Ether(frame)
    if ARP not in pkt:  # another EtherType, or an ARP header cut short (scapy leaves it raw)
        return None
    arp = pkt[ARP]
    if (arp.hwtype, arp.ptype, arp.hwlen, arp.plen) != (1, 0x0800, 6, 4):
        return None
    return arp.op, arp.hwsrc, arp.psrc, arp.hwdst, arp.pdst


def announce_event(t: float, frame: bytes, vip: str, macs: Mapping[str, str]) -> Event | None:
    """An ``announce`` event for a gratuitous ARP (sender IP = target IP = ``vip``, RFC 5227
    section 3), naming the director whose MAC sent it (``macs``: MAC -> director); None for any
    other frame."""
    arp = parse_arp(frame)
    if arp is None:
        return None
    op, sha, spa, _tha, tpa = arp
    if spa != vip or tpa != vip:
        return None
    who = macs.get(sha, sha)
    return Event(
        round(t, 3),
        "client",
        "announce",
        f"gratuitous ARP {'request' if op == 1 else 'reply'} {vip} is-at {sha} ({who})",
    )


def announce_events(frames: Iterable[tuple[float, bytes]], vip: str, macs: Mapping[str, str]) -> list[Event]:
    """The `announce_event` of each ``(t, frame)`` captured (``t`` seconds since t0), in the
    capture's order, frames that are no gratuitous ARP for ``vip`` left out."""
    out = []
    for t, frame in frames:
        ev = announce_event(t, frame, vip, macs)
        if ev is not None:
            out.append(ev)
    return out


# --- figures --------------------------------------------------------------------------------


def longest_gap(samples: Sequence[Sample], since: float) -> tuple[float, float]:
    """Longest interval (seconds) between successive successful responses (their ends), among
    those ending after ``since``; returns ``(gap, where it starts)``. ``(0.0, since)`` with fewer
    than two successes."""
    ends = sorted(s.end for s in samples if s.ok)
    best, at = 0.0, since
    for a, b in zip(ends, ends[1:]):
        if b > since and b - a > best:
            best, at = b - a, a
    return best, at


def fault_complete(record: DrillRecord) -> float:
    """When the fault was fully in place (seconds on the drill's clock): ``fault_end_t``, or
    ``fault_t`` when the runner did not record it. A request that starts before then may
    still be served the old way (a killed daemon's node keeps forwarding until its links go
    down), so it says nothing about the recovery."""
    return record.fault_t if record.fault_end_t is None else max(record.fault_t, record.fault_end_t)


def first_success(samples: Sequence[Sample], after: float) -> Sample | None:
    """The first successful request that started at or after ``after`` (seconds), or None."""
    ok = [s for s in samples if s.ok and s.start >= after]
    return min(ok, key=lambda s: s.start) if ok else None


def first_event(events: Sequence[Event], kind: str, after: float, source: str | None = None) -> Event | None:
    """The earliest event of ``kind`` at or after ``after`` (optionally from ``source``)."""
    hits = [e for e in events if e.kind == kind and e.t >= after and (source is None or e.source == source)]
    return min(hits, key=lambda e: e.t) if hits else None


def table_shape(table: Mapping[str, Mapping]) -> dict[str, dict[str, tuple[str, int]]]:
    """``ipvsadm -Ln`` as parsed by `director.lab.drive.parse_ipvsadm_list`, reduced to what a
    restart must not change: ``{service line: {dest: (forward, weight)}}`` (counters dropped)."""
    return {svc["line"]: {dest: (d[0], d[1]) for dest, d in svc["dests"].items()} for svc in table.values()}


def failure_events(samples: Sequence[Sample]) -> list[Event]:
    """One ``failed`` event per run of consecutive failed requests (in the client's order), at
    the first one's start: how many, the span of their starts and ends (seconds since t0), and
    their results with counts, e.g. ``"1 request failed (started 46.702, ended 46.710):
    ConnectionResetError"``."""
    runs: list[list[Sample]] = []
    prev_ok = True
    for s in samples:
        if not s.ok:
            if prev_ok:
                runs.append([])
            runs[-1].append(s)
        prev_ok = s.ok
    events = []
    for run in runs:
        counts: dict[str, int] = {}
        for s in run:
            counts[s.result] = counts.get(s.result, 0) + 1
        results = ", ".join(r if n == 1 else f"{r} x{n}" for r, n in counts.items())
        if len(run) == 1:
            text = f"1 request failed (started {run[0].start:.3f}, ended {run[0].end:.3f}): {results}"
        else:
            text = (
                f"{len(run)} requests failed (started {run[0].start:.3f} to {run[-1].start:.3f}, "
                f"last ended {run[-1].end:.3f}): {results}"
            )
        events.append(Event(run[0].start, "client", "failed", text))
    return events


def build_timeline(record: DrillRecord) -> list[Event]:
    """The drill's timeline: its events, holder changes, runs of failed requests
    (`failure_events`) and the first success after the fault, sorted by time (stable:
    drill actions before what they caused)."""
    events = list(record.events) + holder_events(record.holders) + failure_events(record.samples)
    fs = first_success(record.samples, fault_complete(record))
    if fs is not None:
        events.append(
            Event(
                fs.end,
                "client",
                "first-success",
                f"first success after the fault, answered by {fs.result} "
                f"({fs.end - record.fault_t:.2f} s after the fault)",
            )
        )
    order = {"drill": 0, "dir1": 1, "dir2": 1, "client": 2}
    return sorted(events, key=lambda e: (e.t, order.get(e.source, 3)))
