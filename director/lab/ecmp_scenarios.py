"""The drills of the routed lab (active-active directors behind an ECMP router), as pure data
and functions: the scenarios (`ECMP_SCENARIOS`), what a run records (`EcmpRecord`), the
verdict (`evaluate`), the report (`summary`) and its text (`render`).

`director.lab.ecmp_drill` runs them. Times are seconds since the drill's ``t0`` (when the
clients started). Two kinds of client traffic go through the VIP during a drill:

* the steady client: a new connection for each request (`director.lab.scenarios.Sample`);
* long-lived connections (`LongLived`): HTTP/1.1 persistent connections, each sending a
  request every 100 ms and reading the answer. The router spreads them over the directors
  by their source port (layer-4 ECMP hash). One is *lost* when it is reset, closed, times
  out or is answered by another real server than the one that answered first.

With the ``mh`` scheduler (with ``mh-port``) every director picks the same real server for
a flow, and sloppy TCP lets a director take over a flow in the middle: a flow that the router
moves to another director keeps its real server. With ``wlc`` each director picks for itself,
so moved flows land on another real server, which resets them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .scenarios import Event, Sample, first_success, longest_gap, parse_log_line

#: Words that make a victim director's log line a timeline event (BGP and health), and the most kept.
LOG_WORDS, MAX_LOG_EVENTS = ("bgp", "bird", "announc", "withdr", "session", "drain", "real server"), 40
#: Event kinds of a director's log that go into the timeline whatever their text: a health
#: change on any director (a real server quiesced on one director and not on the others sends
#: a flow moved between them to another real server).
LOG_KINDS = frozenset({"check.health"})

#: Seconds after the router's next hops changed (or the real server left every table)
#: within which a new connection may still fail: it started before the change reached it.
GRACE = 1.0
#: Longest gap between successful new connections a director failure may cause (seconds):
#: BFD detection (300 ms), the route change, and a connection timeout (0.5 s) of the client.
FAIL_MAX_GAP_S = 3.0
#: Schedulers the drills know.
SCHEDULERS = ("mh", "wlc")


@dataclass(frozen=True)
class EcmpScenario:
    """One drill: ``name``, one-line ``summary``; ``victim`` is ``"last"`` (the highest
    director, dirN) or ``"first"`` (dir1) for the director drills, a real server's role for
    ``realserver-down-everywhere``."""

    name: str
    summary: str
    victim: str


ECMP_SCENARIOS: dict[str, EcmpScenario] = {
    s.name: s
    for s in (
        EcmpScenario(
            "fail-director",
            "node failure of dir1 (all its links down, its daemon SIGKILLed) under new and long-lived connections: "
            "the router drops it from its next hops (BFD); with mh no long-lived connection is lost",
            "first",
        ),
        EcmpScenario(
            "drain-director",
            "`directord bgp drain` on the last director, wait until the router drops it from its next hops, "
            "then SIGTERM: no request fails and no long-lived connection is lost",
            "last",
        ),
        EcmpScenario(
            "add-director",
            "the last director starts under load: the router's next hops grow to N, no request fails and no "
            "long-lived connection is lost",
            "last",
        ),
        EcmpScenario(
            "realserver-down-everywhere",
            "rs1's HTTP server is SIGKILLed: every director sets it to weight 0 (quiescent), new requests "
            "succeed (mh-fallback), long-lived connections on the other real servers are kept",
            "rs1",
        ),
    )
}


def ecmp_scenario_names() -> list[str]:
    """The drill names of the routed lab."""
    return list(ECMP_SCENARIOS)


@dataclass
class LongLived:
    """One long-lived connection's record: ``index``, client source ``port`` (0 until
    connected), ``answers`` (requests answered), ``real_server`` (the first answer's),
    ``lost`` (None: kept; else ``reset``, ``timeout``, ``closed``, ``connect``, ``wrong real
    server (rsK)``, ``error: ...``), ``lost_t`` (seconds since t0), ``last_ok`` (end of the last
    answer), ``max_gap_s`` (longest time between two answers, or from the last answer to the
    loss), ``director_before`` / ``director_after`` (whose IPVS connection table listed it
    before the fault and at the end; None: in none), ``entry_after`` (the real server the
    entry of ``director_after`` forwards to; another one than ``real_server`` means that
    director sent the flow elsewhere: an older entry of the same addresses and ports, or its
    own weights at the time it created the entry)."""

    index: int
    port: int = 0
    answers: int = 0
    real_server: str | None = None
    lost: str | None = None
    lost_t: float | None = None
    last_ok: float | None = None
    max_gap_s: float = 0.0
    director_before: str | None = None
    director_after: str | None = None
    entry_after: str | None = None


@dataclass
class EcmpRecord:
    """What one run recorded.

    ``scenario``, ``scheduler``, ``directors`` (all of the lab), ``victim`` (a director or a
    real server), ``fault_t`` (when the fault or first step began), ``samples`` (steady
    client), ``long_lived``, ``next_hops`` (``(t, directors)`` at each change seen by polling
    the router's ``ip route``), ``events`` (drill steps), ``settled`` (the end condition was
    reached), ``quiesced_t`` (realserver drill: when every director showed the real server at
    weight 0), ``weights`` (realserver drill: ``{director: weight or None}`` at the end),
    ``problems`` (what went wrong in the runner), ``fault_end_t`` (when the fault's actions
    had all been carried out: a node failure's links are down then; None: as ``fault_t``),
    ``orders`` (``{"before"|"after": {director: real server addresses in the order of its
    ipvsadm -Ln}}``: the kernel fills an mh table by walking the real servers in that order,
    so directors that list them in different orders may pick different real servers for a flow).
    """

    scenario: str
    scheduler: str
    directors: tuple[str, ...]
    victim: str
    fault_t: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    long_lived: list[LongLived] = field(default_factory=list)
    next_hops: list[tuple[float, tuple[str, ...]]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    settled: bool = False
    quiesced_t: float | None = None
    weights: dict[str, int | None] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    fault_end_t: float | None = None
    orders: dict[str, dict[str, list[str]]] = field(default_factory=dict)


@dataclass(frozen=True)
class Check:
    """One expectation's verdict: ``name``, ``ok``, a human ``detail``; ``info`` checks are
    printed but do not fail the drill."""

    name: str
    ok: bool
    detail: str
    info: bool = False


def parse_ipvsadm_connections(text: str) -> list[tuple[str, int, str, str, str]]:
    """The entries of ``ipvsadm -Lnc`` output as ``(state, expire in seconds, source, virtual,
    destination)`` (``addr:port`` strings; ipvsadm prints the expiry as ``mm:ss``, -1 when it
    cannot be read); header lines and malformed lines are skipped (at most 100,000 lines read)."""
    rows = []
    for line in text.splitlines()[:100_000]:
        f = line.split()
        if len(f) >= 6 and f[0] in ("TCP", "UDP", "SCTP") and ":" in f[3]:
            mm, _, ss = f[1].partition(":")
            expire = int(mm) * 60 + int(ss) if mm.isdigit() and ss.isdigit() else -1
            rows.append((f[2], expire, f[3], f[4], f[5]))
    return rows


def next_hop_change(record: EcmpRecord, pred: Any) -> float | None:
    """The first time at or after the fault when the router's next hops satisfied ``pred``
    (a function of the tuple of directors), or None."""
    for t, hops in record.next_hops:
        if t >= record.fault_t and pred(hops):
            return t
    return None


def _via(record: EcmpRecord) -> list[LongLived]:
    """The long-lived connections the fault touches: through the victim director (before the
    fault) or, for the real server drill, answered by the victim real server."""
    if record.scenario == "realserver-down-everywhere":
        return [c for c in record.long_lived if c.real_server == record.victim]
    return [c for c in record.long_lived if c.director_before == record.victim]


def _affected_window(record: EcmpRecord) -> float | None:
    """When the drill's change was complete (new connections may fail until `GRACE` after it)."""
    if record.scenario == "realserver-down-everywhere":
        return record.quiesced_t
    if record.scenario == "add-director":
        return next_hop_change(record, lambda h: record.victim in h)
    return next_hop_change(record, lambda h: h and record.victim not in h)


def evaluate(record: EcmpRecord) -> list[Check]:
    """Check ``record`` against its scenario's expectations (one `Check` each).

    Always: no runner problem, the end condition reached. fail-director: the router drops the
    victim, no new connection fails later than `GRACE` after that, the longest gap of new
    connections at most `FAIL_MAX_GAP_S`, no long-lived connection lost (``info`` only with
    ``wlc``). drain-director and add-director: the next hops change, no request failed, no
    long-lived connection lost (``info`` with ``wlc``). realserver-down-everywhere: every
    director has the real server at weight 0, no new connection fails later than `GRACE` after
    that, no long-lived connection on another real server lost.
    """
    checks = [
        Check("runner", not record.problems, "; ".join(record.problems) or "no problems"),
        *order_checks(record),
        entry_check(record),
        Check("settled", record.settled, "end condition reached" if record.settled else "end condition not reached"),
    ]
    scn, fault = record.scenario, record.fault_t
    failed, early = failed_requests(record)
    if early:
        checks.append(
            Check(
                "failed before the fault",
                False,
                f"{len(early)} ended before the fault (first at {early[0].start:.2f} s: {early[0].result}): "
                "the lab's, not the drill's (the timeline shows why)",
                info=True,
            )
        )
    victim_ll = _via(record)
    others = [c for c in record.long_lived if c not in victim_ll]
    lost = [c for c in record.long_lived if c.lost]
    mh = record.scheduler == "mh"
    if scn != "realserver-down-everywhere":
        via = [c for c in record.long_lived if c.director_before == record.victim]
        if scn != "add-director":
            checks.append(
                Check(
                    "long-lived via the victim",
                    bool(via),
                    f"{len(via)} of {len(record.long_lived)} went through {record.victim} before the fault",
                    info=True,
                )
            )
        changed = _affected_window(record)
        want = "joined" if scn == "add-director" else "left"
        checks.append(
            Check(
                f"{record.victim} {want} the next hops",
                changed is not None,
                f"{changed - fault:.2f} s after the fault" if changed is not None else "never seen",
            )
        )
        detail = f"{len(lost)} of {len(record.long_lived)} lost" + (
            ": " + ", ".join(f"#{c.index} {c.lost}" for c in lost[:12]) if lost else ""
        )
        checks.append(Check("long-lived connections", not lost, detail, info=not mh))
        if scn == "fail-director":
            late = [s for s in failed if changed is None or s.start > changed + GRACE]
            checks.append(
                Check(
                    "new connections fail only until the router moved",
                    not late,
                    f"{len(failed)} failed, {len(late)} of them started later than {GRACE:g} s after the change"
                    + (f" (first at {late[0].start:.2f} s: {late[0].result})" if late else ""),
                )
            )
            gap, at = longest_gap(record.samples, fault)
            checks.append(
                Check(
                    "longest gap",
                    gap <= FAIL_MAX_GAP_S,
                    f"{gap:.2f} s from {at:.2f} s (bound {FAIL_MAX_GAP_S:g} s)",
                )
            )
        else:
            checks.append(
                Check(
                    "failed requests",
                    not failed,
                    f"{len(failed)} of {len(record.samples)} failed"
                    + (f" (first at {failed[0].start:.2f} s: {failed[0].result})" if failed else ""),
                )
            )
    else:
        zero = {d: w for d, w in record.weights.items() if w != 0}
        checks.append(
            Check(
                "weight 0 everywhere",
                bool(record.weights) and not zero and record.quiesced_t is not None,
                (f"{record.quiesced_t - fault:.2f} s after the fault; " if record.quiesced_t is not None else "")
                + ", ".join(f"{d}: {w}" for d, w in sorted(record.weights.items())),
            )
        )
        q = record.quiesced_t
        late = [s for s in failed if q is None or s.start > q + GRACE]
        checks.append(
            Check(
                "new requests succeed once quiescent",
                not late and first_success(record.samples, (q or fault) + GRACE) is not None,
                f"{len(failed)} failed, {len(late)} started later than {GRACE:g} s after weight 0 everywhere"
                + (f" (first at {late[0].start:.2f} s: {late[0].result})" if late else ""),
            )
        )
        lost_o = [c for c in others if c.lost]
        checks.append(
            Check(
                "long-lived on the other real servers",
                not lost_o,
                f"{len(lost_o)} of {len(others)} lost; {len(victim_ll)} on {record.victim} "
                f"({sum(1 for c in victim_ll if c.lost)} of them ended with it)",
            )
        )
    return checks


def director_log_events(lines: Sequence[str], node: str, t0_epoch: float) -> list[Event]:
    """``log`` events of a director's JSON log lines (``directord run --log-format json``)
    whose message mentions one of `LOG_WORDS` or whose event kind is in `LOG_KINDS`; times in
    seconds since the drill's t0 (given as a Unix time, seconds); at most `MAX_LOG_EVENTS`,
    the first ones."""
    out = []
    for line in lines:
        record = parse_log_line(line)
        if record is None:
            continue
        message = str(record.get("message", ""))
        if record.get("kind") in LOG_KINDS or any(w in message.lower() for w in LOG_WORDS):
            out.append(Event(round(record["at"] - t0_epoch, 3), node, "log", message[:300]))
            if len(out) >= MAX_LOG_EVENTS:
                break
    return out


def failed_requests(record: EcmpRecord) -> tuple[list[Sample], list[Sample]]:
    """The failed new connections as ``(ended at or after the fault, ended before it)``: a
    failure before the fault is the lab's (a BFD session with 100 ms timers can flap in the
    emulated VM as the clients start), not the drill's; the drill waits for every next hop
    before its fault."""
    failed = [s for s in record.samples if not s.ok]
    return [s for s in failed if s.end >= record.fault_t], [s for s in failed if s.end < record.fault_t]


def entry_check(record: EcmpRecord) -> Check:
    """``info``: at the end, the IPVS entry of each long-lived connection forwards it to the
    real server that answered it (`LongLived.entry_after`); the detail names each that does
    not, the cause of a loss on a director the flow moved to."""
    wrong = [c for c in record.long_lived if c.entry_after and c.real_server and c.entry_after != c.real_server]
    detail = "; ".join(
        f"#{c.index} (port {c.port}): answered by {c.real_server}, the entry on {c.director_after} "
        f"forwards to {c.entry_after}"
        for c in wrong
    )
    return Check(
        "long-lived entries at the end",
        not wrong,
        detail or "each forwards to the real server that answered",
        info=True,
    )


def order_checks(record: EcmpRecord) -> list[Check]:
    """``info`` checks: every director listed the real servers in the same order (before the
    fault, at the end). With mh a different order makes a different lookup table (the kernel's
    ip_vs_mh.c fills it by taking the real servers in turn in their list order)."""
    out = []
    for when, orders in sorted(record.orders.items()):
        distinct = {tuple(v) for v in orders.values()}
        out.append(
            Check(
                f"real server order {when}",
                len(distinct) <= 1,
                "; ".join(f"{d}: {' '.join(v) or '-'}" for d, v in sorted(orders.items())),
                info=True,
            )
        )
    return out


def summary(record: EcmpRecord, checks: Sequence[Check]) -> dict[str, Any]:
    """The report as a JSON-ready dict (``--json``): scenario, summary, scheduler, ok, fault_t,
    figures (requests, failed (ended at or after the fault), failed_before_fault,
    failed_results, longest_gap_s, fault_end_s, first_success_s (of a request started after
    the fault's end),
    next_hops_changed_s, long_lived, long_lived_lost, lost_reasons, long_lived_via_victim,
    long_lived_via_victim_max_gap_s: seconds; None when it did not happen), next_hops,
    long_lived (one dict each), timeline, checks, problems."""
    fault = record.fault_t
    failed, early = failed_requests(record)
    gap, gap_at = longest_gap(record.samples, fault)
    fault_end = max(fault, record.fault_end_t or fault)
    fs = first_success(record.samples, fault_end)
    changed = _affected_window(record)
    via = _via(record)
    lost = [c for c in record.long_lived if c.lost]
    reasons: dict[str, int] = {}
    for c in lost:
        key = (c.lost or "").split(" (")[0]
        reasons[key] = reasons.get(key, 0) + 1
    timeline = list(record.events)
    timeline += [Event(t, "router", "next-hops", "next hops: " + (", ".join(h) or "none")) for t, h in record.next_hops]
    if fs is not None:
        timeline.append(
            Event(fs.end, "client", "first-success", f"first success after the fault ({fs.end - fault:.2f} s after)")
        )
    timeline += [
        Event(c.lost_t, "client", "lost", f"long-lived #{c.index} (port {c.port}, via {c.director_before}): {c.lost}")
        for c in lost
        if c.lost_t is not None
    ]
    timeline.sort(key=lambda e: e.t)
    return {
        "scenario": record.scenario,
        "summary": ECMP_SCENARIOS[record.scenario].summary,
        "scheduler": record.scheduler,
        "directors": list(record.directors),
        "victim": record.victim,
        "ok": all(c.ok or c.info for c in checks),
        "fault_t": round(fault, 3),
        "figures": {
            "requests": len(record.samples),
            "failed": len(failed),
            "failed_before_fault": len(early),
            "failed_results": sorted({s.result for s in failed}),
            "longest_gap_s": round(gap, 3),
            "gap_starts_s": round(gap_at, 3),
            "fault_end_s": round(fault_end - fault, 3),
            "first_success_s": round(fs.end - fault, 3) if fs else None,
            "change_s": round(changed - fault, 3) if changed is not None else None,
            "long_lived": len(record.long_lived),
            "long_lived_lost": len(lost),
            "lost_reasons": reasons,
            "long_lived_via_victim": len(via),
            "long_lived_via_victim_max_gap_s": round(max((c.max_gap_s for c in via), default=0.0), 3),
        },
        "next_hops": [{"t": t, "hops": list(h)} for t, h in record.next_hops],
        "long_lived": [asdict(c) for c in record.long_lived],
        "weights": dict(record.weights),
        "orders": {k: dict(v) for k, v in record.orders.items()},
        "timeline": [asdict(e) for e in timeline],
        "checks": [asdict(c) for c in checks],
        "problems": list(record.problems),
    }


def render(report: Mapping[str, Any]) -> str:
    """Human text of a `summary` report: timeline, long-lived connections table, figures, checks."""
    f, fault = report["figures"], report["fault_t"]
    lines = [
        f"drill {report['scenario']} (scheduler {report['scheduler']}, {len(report['directors'])} directors): "
        f"{report['summary']}",
        "",
        "timeline (seconds since the clients started):",
    ]
    for e in report["timeline"]:
        rel = f"(+{e['t'] - fault:.2f})" if e["t"] >= fault else ""
        lines.append(f"  {e['t']:8.3f} {rel:>9}  {e['source']:<6} {e['kind']:<13} {e['text']}")
    lines += [
        "",
        "long-lived connections:",
        "  #   port   before  after   real server  entry after  answers  max gap  result",
    ]
    for c in report["long_lived"]:
        lines.append(
            f"  {c['index']:<3} {c['port']:<6} {c['director_before'] or '-':<7} {c['director_after'] or '-':<7} "
            f"{c['real_server'] or '-':<12} {c.get('entry_after') or '-':<12} {c['answers']:<8} "
            f"{c['max_gap_s']:6.2f} s  {c['lost'] or 'kept'}"
        )

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f} s"

    lines += [
        "",
        f"new connections: {f['requests']} requests, {f['failed']} failed ({', '.join(f['failed_results']) or '-'})"
        + (f" and {f['failed_before_fault']} before the fault" if f.get("failed_before_fault") else "")
        + "; "
        f"longest gap {f['longest_gap_s']:.2f} s (from {f['gap_starts_s']:.2f} s); fault in place after "
        f"{fmt(f['fault_end_s'])}; change {fmt(f['change_s'])} after the fault; "
        f"first success {fmt(f['first_success_s'])}",
        f"long-lived: {f['long_lived']} held, {f['long_lived'] - f['long_lived_lost']} kept, "
        f"{f['long_lived_lost']} lost {f['lost_reasons'] or ''}; {f['long_lived_via_victim']} through the victim "
        f"(longest gap {f['long_lived_via_victim_max_gap_s']:.2f} s)",
        "",
        "expectations:",
    ]
    for c in report["checks"]:
        tag = "ok" if c["ok"] else ("note" if c["info"] else "FAIL")
        lines.append(f"  [{tag}] {c['name']}: {c['detail']}")
    lines.append("drill OK" if report["ok"] else "DRILL FAILED")
    return "\n".join(lines)
