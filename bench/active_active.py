"""Node failure of one director: the active/standby pair against active-active directors over
BGP, in one boot of the stock-kernel VM.

    directord lab vm --timeout 3600 --out DIR -- python bench/active_active.py [--repeat 3] [--out-dir DIR]

Two labs are built one after the other, each with the same client (``--rate`` new TCP
connections per second, one HTTP request each, 0.5 s per request at most) and three DR
real servers:

* ``pair``: `director.lab.pair.PairLab` at the shipped timers (keepalive 0.2 s, deadtime
  0.8 s); the drill ``fail-active`` (the active director's daemon SIGKILLed and all its
  links down; the standby takes the VIP over and announces it by gratuitous ARP). Every
  new connection goes through the one active director, so every flow is affected.
* ``ecmp-mh`` and ``ecmp-wlc``: `director.lab.ecmp_site.EcmpLab` with three directors
  announcing the VIP to a router (BIRD, ECMP with L4 hashing, BFD 100 ms x 3); the drill
  ``fail-director`` (one director's links down, its daemon SIGKILLed) with 12 long-lived
  HTTP/1.1 connections besides the new ones. Scheduler mh (flags mh-port, mh-fallback) or wlc.

Per repetition: the change after the fault (the standby holds the VIP; the router dropped
the dead director), the longest time an affected flow went unserved (the pair: the client's
longest gap between two answers, since every flow goes through the active director; the
routed lab: the longest gap of the long-lived connections through the dead director, the
others never stop), the flows affected (the pair: all; the routed lab: the long-lived
connections that went through the dead director, about 1/N), the new connections that
failed, and for the routed lab the long-lived connections lost. Output: a markdown table on
stdout (medians and max over the repetitions), ``DIR/active_active.json`` with every
repetition's figures and each drill's whole report.

Times in the VM (QEMU TCG) are 10-25x slower than on hardware for Python; compare rows of one
run, never against fixed numbers.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import incumbents as inc  # noqa: E402

from director.lab import drill as pair_drill  # noqa: E402
from director.lab.ecmp_drill import EcmpDrill, settle  # noqa: E402
from director.lab.ecmp_scenarios import evaluate as ecmp_evaluate  # noqa: E402
from director.lab.ecmp_scenarios import summary as ecmp_summary  # noqa: E402
from director.lab.ecmp_site import EcmpLab, EcmpOptions  # noqa: E402
from director.lab.pair import PairLab, PairOptions  # noqa: E402
from director.lab.scenarios import scenario  # noqa: E402
from director.lab.verdict import evaluate as pair_evaluate  # noqa: E402
from director.lab.verdict import summary as pair_summary  # noqa: E402

SYSTEMS = ("pair", "ecmp-mh", "ecmp-wlc")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def repetition(report: Mapping[str, Any], *, pair: bool) -> dict[str, Any]:
    """One repetition's figures from a drill report (pure): the pair's
    (`director.lab.verdict.summary`) or the routed lab's (`director.lab.ecmp_scenarios.summary`).

    ``change_s``: seconds from the fault until the VIP moved (pair: the standby holds it) or
    the router dropped the dead director. ``gap_s``: the longest time an affected flow went
    unserved (seconds): for the pair the client's longest gap between two answers (every flow
    goes through the one active director), for the routed lab the longest gap of the
    long-lived connections through the dead director (the other flows never stop).
    ``affected``/``flows``: the flows that went through the failed director, of those
    watched (pair: None, every flow). ``failed``/``requests``: new connections that failed
    (ended at or after the fault). ``long_lived_lost``/``long_lived`` (routed lab only)."""
    f = report["figures"]
    if pair:
        return {
            "change_s": f["vip_moved_s"],
            "gap_s": f["longest_gap_s"],
            "affected": None,
            "flows": None,
            "failed": f["failed"],
            "requests": f["requests"],
            "long_lived_lost": None,
            "long_lived": None,
            "ok": report["ok"],
        }
    return {
        "change_s": f["change_s"],
        "gap_s": f["long_lived_via_victim_max_gap_s"] if f["long_lived_via_victim"] else None,
        "affected": f["long_lived_via_victim"],
        "flows": f["long_lived"],
        "failed": f["failed"],
        "requests": f["requests"],
        "long_lived_lost": f["long_lived_lost"],
        "long_lived": f["long_lived"],
        "ok": report["ok"],
    }


def render(results: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    """Markdown table, one row per system (pure): repetitions, the change after the fault
    (median, s), the longest gap of an affected flow (median and max, s), the flows affected,
    new connections failed, long-lived connections lost."""
    headers = [
        "system",
        "n",
        "change (s)",
        "gap of affected flows median (s)",
        "max (s)",
        "flows affected",
        "new connections failed",
        "long-lived lost",
    ]
    rows = []
    for system, reps in results.items():
        changes = inc.stats([r["change_s"] for r in reps])
        gaps = inc.stats([r["gap_s"] for r in reps])
        watched = [r for r in reps if r.get("flows")]
        affected = f"{sum(r['affected'] for r in watched)} of {sum(r['flows'] for r in watched)}" if watched else "all"
        held = [r for r in reps if r.get("long_lived")]
        lost = f"{sum(r['long_lived_lost'] for r in held)} of {sum(r['long_lived'] for r in held)}" if held else "-"
        rows.append(
            [
                system,
                len(reps),
                inc.fmt_s(changes["median"]),
                inc.fmt_s(gaps["median"]),
                inc.fmt_s(gaps["max"]),
                affected,
                f"{sum(r['failed'] for r in reps)} of {sum(r['requests'] for r in reps)}",
                lost,
            ]
        )
    return inc.markdown_table(headers, rows)


def run_pair(repeat: int, rate: float, say: Callable[[str], None], reports: list[dict]) -> list[dict[str, Any]]:
    """``repeat`` fail-active drills on one pair lab (restored between them); each drill's
    whole report is appended to ``reports``."""
    scn = scenario("fail-active")
    pair = PairLab(PairOptions(prefix=f"aap{os.getpid() % 10000}"), Path(tempfile.mkdtemp(prefix="aa-pair-")))
    out = []
    try:
        pair.up()
        for i in range(repeat):
            if i:
                pair.restore()
            record = pair_drill.Drill(pair, scn, rate, say).run()
            report = pair_summary(record, pair_evaluate(scn.expect, record, pair.vip), scn)
            out.append(repetition(report, pair=True))
            reports.append(report)
            log(f"pair #{i + 1}: {out[-1]}")
    finally:
        pair.down()
    return out


def run_ecmp(
    scheduler: str, repeat: int, rate: float, say: Callable[[str], None], reports: list[dict]
) -> list[dict[str, Any]]:
    """``repeat`` fail-director drills on one routed lab of three directors (settled again
    before each); each drill's whole report is appended to ``reports``."""
    options = EcmpOptions(prefix=f"aae{os.getpid() % 10000}", directors=3, scheduler=scheduler)
    lab = EcmpLab(options, Path(tempfile.mkdtemp(prefix="aa-ecmp-")))
    out = []
    try:
        lab.up()
        settle(lab, lab.directors, say)
        for i in range(repeat):
            record = EcmpDrill(lab, "fail-director", rate=rate, say=say).run()
            report = ecmp_summary(record, ecmp_evaluate(record))
            out.append(repetition(report, pair=False))
            reports.append(report)
            log(f"ecmp-{scheduler} #{i + 1}: {out[-1]}")
    finally:
        lab.down()
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rate", type=float, default=20.0, help="new connections per second")
    ap.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    ap.add_argument("--out-dir", default=str(inc.REPO / "out" / "bench"))
    ap.add_argument("--verbose", action="store_true", help="print the drills' progress")
    a = ap.parse_args(argv)
    if not inc.ip_vs_here():
        log("cannot run: no ip_vs here; run it in the stock-kernel VM (`directord lab vm -- ...`)")
        return 2
    say = (lambda t: log(t)) if a.verbose else (lambda _t: None)
    results: dict[str, list[dict[str, Any]]] = {}
    reports: dict[str, list[dict[str, Any]]] = {}
    for system in a.systems:
        log(f"system {system}")
        try:
            if system == "pair":
                results[system] = run_pair(a.repeat, a.rate, say, reports.setdefault(system, []))
            else:
                results[system] = run_ecmp(
                    system.split("-", 1)[1], a.repeat, a.rate, say, reports.setdefault(system, [])
                )
        except Exception as e:  # keep the other systems' numbers
            log(f"{system} failed: {type(e).__name__}: {e}")
            results.setdefault(system, [])
    doc = {"kernel": os.uname().release, "rate": a.rate, "repeat": a.repeat, "results": results, "reports": reports}
    inc.write_json(Path(a.out_dir) / "active_active.json", doc)
    print(render({k: v for k, v in results.items() if v}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
