"""The verdict of a drill (pure): a `director.lab.scenarios.DrillRecord` checked against its
scenario's `director.lab.scenarios.Expect` (`evaluate`), the report (`summary`) and its text
(`render`). Times are seconds since the drill's ``t0``, as in `director.lab.scenarios`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .scenarios import (
    GRACE,
    MOVE_SLACK,
    DrillRecord,
    Event,
    Expect,
    Sample,
    Scenario,
    build_timeline,
    fault_complete,
    first_event,
    first_success,
    longest_gap,
)


@dataclass(frozen=True)
class Check:
    """One expectation's verdict: ``name``, ``ok``, and a human ``detail``."""

    name: str
    ok: bool
    detail: str


def vip_moves(timeline: Sequence[Event]) -> list[tuple[float, float]]:
    """The VIP's moves in a timeline, as ``(removed, added)`` times (seconds since t0): a
    director's ``vip-removed`` and the next ``vip-added`` by the other director."""
    moves = []
    for i, ev in enumerate(timeline):
        if ev.kind != "vip-removed":
            continue
        added = next((e for e in timeline[i + 1 :] if e.kind == "vip-added" and e.source != ev.source), None)
        if added is not None:
            moves.append((ev.t, added.t))
    return moves


def failures_outside_moves(samples: Sequence[Sample], moves: Sequence[tuple[float, float]]) -> list[Sample]:
    """The failed requests that a VIP move does not explain: all but connection resets in
    flight during a move (started before its ``added + MOVE_SLACK``, ended after its
    ``removed - MOVE_SLACK``), at most one per move (the client sends one request at a time)."""
    unexplained, used = [], set()
    for s in samples:
        if s.ok:
            continue
        hit = next(
            (
                i
                for i, (removed, added) in enumerate(moves)
                if i not in used and s.start <= added + MOVE_SLACK and s.end >= removed - MOVE_SLACK
            ),
            None,
        )
        if s.result == "ConnectionResetError" and hit is not None:
            used.add(hit)
        else:
            unexplained.append(s)
    return unexplained


def _after(samples: Sequence[Sample], t: float) -> list[Sample]:
    return [s for s in samples if s.start >= t]


def _rs_events(timeline: Sequence[Event], kind: str, record: DrillRecord, source: str, after: float) -> list[Event]:
    """Health transitions of ``kind`` seen by ``source`` after ``after`` (of the victim when known)."""
    return [
        e
        for e in timeline
        if e.kind == kind
        and e.source == source
        and e.t >= after
        and (record.victim_addr is None or f"{record.victim_addr}:" in e.text)
    ]


def evaluate(expect: Expect, record: DrillRecord, vip: str = "") -> list[Check]:
    """Check ``record`` against ``expect``; one `Check` per expectation that applies.

    Always checked: the runner's problems, the end condition reached, exactly
    one holder at the end and which, and (unless ``split_brain_ok``) no sample
    with two holders.
    """
    checks: list[Check] = []
    fault = record.fault_t
    timeline = build_timeline(record)
    checks.append(Check("runner", not record.problems, "; ".join(record.problems) or "no problems"))
    checks.append(
        Check(
            "settled",
            record.settled,
            "end condition reached" if record.settled else "end condition not reached in time",
        )
    )
    final = record.holders[-1].holder if record.holders else "-"
    checks.append(
        Check("final holder", final == expect.final_holder, f"{final} (expected {expect.final_holder} alone)")
    )
    both = [h for h in record.holders if len(h.held) > 1]
    if not expect.split_brain_ok:
        checks.append(
            Check("one holder", not both, f"two holders at {both[0].t:.2f} s" if both else "never two holders")
        )
    after_fault = [h for h in record.holders if h.t >= fault]
    if expect.vip_moves_to:
        seen = [h for h in after_fault if expect.vip_moves_to in h.held]
        checks.append(
            Check(
                "VIP moved",
                bool(seen),
                f"on {expect.vip_moves_to} {seen[0].t - fault:.2f} s after the fault"
                if seen
                else f"never seen on {expect.vip_moves_to}",
            )
        )
    if expect.holder_constant:
        kinds = sorted({h.holder for h in record.holders})
        checks.append(Check("holder constant", kinds == [expect.final_holder], "holders seen: " + ", ".join(kinds)))
    gap, gap_at = longest_gap(record.samples, fault)
    if expect.max_gap_s is not None:
        checks.append(
            Check(
                "longest gap",
                gap <= expect.max_gap_s,
                f"{gap:.2f} s from {gap_at:.2f} s (bound {expect.max_gap_s:.1f} s)",
            )
        )
    failed = [s for s in record.samples if not s.ok]
    if expect.max_failed is not None:
        checks.append(
            Check(
                "failed requests",
                len(failed) <= expect.max_failed,
                f"{len(failed)} failed (allowed {expect.max_failed})",
            )
        )
    if expect.resets_only_at_moves:
        moves = vip_moves(timeline)
        odd = failures_outside_moves(record.samples, moves)
        checks.append(
            Check(
                "failed requests",
                not odd,
                f"{len(failed)} failed over {len(moves)} VIP move(s)"
                + (
                    f"; {len(odd)} not a reset at a move, first at {odd[0].start:.2f} s: {odd[0].result}"
                    if odd
                    else (", each a reset of a request in flight at a move" if failed else "")
                ),
            )
        )
    if expect.no_failure_after:
        if expect.no_failure_after == "first-success":
            fs = first_success(record.samples, fault_complete(record))
            mark = fs.end if fs else None
        else:
            evs = _rs_events(timeline, expect.no_failure_after, record, expect.final_holder, fault)
            mark = evs[0].t + GRACE if evs else None
        if mark is None:
            checks.append(
                Check(
                    f"no failure after {expect.no_failure_after}",
                    False,
                    f"no {expect.no_failure_after} after the fault",
                )
            )
        else:
            late = [s for s in _after(record.samples, mark) if not s.ok]
            checks.append(
                Check(
                    f"no failure after {expect.no_failure_after}",
                    not late,
                    f"{len(late)} failed after {mark:.2f} s"
                    + (f" (first at {late[0].start:.2f} s: {late[0].result})" if late else ""),
                )
            )
    if expect.ipvs_unchanged:
        same = bool(record.tables_before) and record.tables_before == record.tables_after
        ops = [e for e in timeline if e.kind == "ipvs" and e.t >= fault]
        checks.append(
            Check(
                "IPVS unchanged",
                same and not ops,
                (
                    "tables identical"
                    if same
                    else f"tables differ: before {record.tables_before}, after {record.tables_after}"
                )
                + (
                    f"; {len(ops)} IPVS change(s) logged, first: {ops[0].source} {ops[0].text}"
                    if ops
                    else "; no IPVS change logged"
                ),
            )
        )
    victim = record.victim
    if expect.victim_out:
        downs = _rs_events(timeline, "rs-down", record, expect.final_holder, fault)
        ev = downs[0] if downs else None
        if ev is None:
            checks.append(Check("victim out", False, f"{victim} never left rotation"))
        else:
            answered = [s for s in _after(record.samples, ev.t + GRACE) if s.ok and s.result == victim]
            checks.append(
                Check(
                    "victim out",
                    not answered,
                    f"out of rotation {ev.t - fault:.2f} s after the fault; "
                    f"{len(answered)} answers from {victim} afterwards",
                )
            )
    if expect.victim_back:
        ups = _rs_events(timeline, "rs-up", record, expect.final_holder, fault)
        last_up = max(ups, key=lambda e: e.t) if ups else None
        answered = [s for s in _after(record.samples, last_up.t) if s.ok and s.result == victim] if last_up else []
        checks.append(
            Check(
                "victim back",
                bool(answered),
                f"back in rotation at {last_up.t:.2f} s; {len(answered)} answers from {victim} afterwards"
                if last_up
                else f"{victim} never came back",
            )
        )
    return checks


def summary(record: DrillRecord, checks: Sequence[Check], scenario_obj: Scenario) -> dict[str, Any]:
    """The drill's report as a JSON-ready dict (what ``--json`` prints).

    Keys: scenario, summary, ok, fault_t, fault_end_t, figures (requests, failed,
    failed_results, longest_gap_s, gap_starts_s, detection_s, vip_moved_s (first
    sample showing another non-empty holder than before the fault),
    announcements, first_success_s: delays in seconds after the fault, None
    when it did not happen), timeline, holders, checks, problems.
    """
    fault = record.fault_t
    timeline = build_timeline(record)
    gap, gap_at = longest_gap(record.samples, fault)
    failed = [s for s in record.samples if not s.ok]

    def delay(ev: Event | None) -> float | None:
        return round(ev.t - fault, 3) if ev else None

    before = [h for h in record.holders if h.t < fault]
    was = before[-1].held if before else None
    changed = [h for h in record.holders if h.t >= fault and was is not None and h.held and h.held != was]
    moved = round(changed[0].t - fault, 3) if changed else None
    announces = [e for e in timeline if e.kind == "announce" and e.t >= fault]
    fs = first_success(record.samples, fault_complete(record))
    return {
        "scenario": scenario_obj.name,
        "summary": scenario_obj.summary,
        "ok": all(c.ok for c in checks),
        "fault_t": round(fault, 3),
        "fault_end_t": round(fault_complete(record), 3),
        "figures": {
            "requests": len(record.samples),
            "failed": len(failed),
            "failed_results": sorted({s.result for s in failed}),
            "longest_gap_s": round(gap, 3),
            "gap_starts_s": round(gap_at, 3),
            "detection_s": delay(first_event(timeline, "detect", fault)),
            "vip_moved_s": moved,
            "announcements": len(announces),
            "first_announcement_s": delay(announces[0] if announces else None),
            "first_success_s": round(fs.end - fault, 3) if fs else None,
            "client_timeout_s": scenario_obj.client_timeout_s,
        },
        "timeline": [asdict(e) for e in timeline],
        "holders": [{"t": h.t, "holder": h.holder} for h in record.holders],
        "checks": [asdict(c) for c in checks],
        "problems": list(record.problems),
    }


def render(report: Mapping[str, Any], *, max_holder_lines: int = 40) -> str:
    """Human-readable text of a `summary` report: timeline, holder samples (changes and a
    thinned list), figures and the checks."""
    f = report["figures"]
    fault = report["fault_t"]
    lines = [f"drill {report['scenario']}: {report['summary']}", "", "timeline (seconds since the client started):"]
    announces = 0
    for e in report["timeline"]:
        if e["kind"] == "announce":
            announces += 1
            if announces > 6:
                continue
        rel = f"(+{e['t'] - fault:.2f})" if e["t"] >= fault else ""
        lines.append(f"  {e['t']:8.3f} {rel:>9}  {e['source']:<6} {e['kind']:<13} {e['text']}")
    if announces > 6:
        lines.append(f"  ... {announces - 6} more announcement frames")
    holders = report["holders"]
    if holders:
        step = max(1, len(holders) // max_holder_lines)
        shown = [h for i, h in enumerate(holders) if i % step == 0 or i == len(holders) - 1]
        lines += ["", "VIP holder samples (t: holder): " + ", ".join(f"{h['t']:.1f}: {h['holder']}" for h in shown)]

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f} s"

    lines += [
        "",
        f"client: {f['requests']} requests ({f['client_timeout_s']} s timeout), {f['failed']} failed"
        f" ({', '.join(f['failed_results']) or '-'})",
        f"longest gap between successful responses: {f['longest_gap_s']:.2f} s (from {f['gap_starts_s']:.2f} s)",
        f"after the fault: detection {fmt(f['detection_s'])}, VIP moved {fmt(f['vip_moved_s'])}, "
        f"first announcement {fmt(f['first_announcement_s'])} ({f['announcements']} frames), "
        f"first success {fmt(f['first_success_s'])}",
        "",
        "expectations:",
    ]
    for c in report["checks"]:
        lines.append(f"  [{'ok' if c['ok'] else 'FAIL'}] {c['name']}: {c['detail']}")
    lines.append("drill OK" if report["ok"] else "DRILL FAILED")
    return "\n".join(lines)
