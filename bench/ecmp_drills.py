"""The routed lab's drills in a row on one lab: three directors announcing the VIP over BGP to
an ECMP router, in one boot of the stock-kernel VM.

    directord lab vm --timeout 3000 --out DIR -- python bench/ecmp_drills.py \\
        [--drills drain-director drain-director add-director realserver-down-everywhere fail-director] \\
        [--scheduler mh|wlc] [--rate 20] [--out-dir DIR]

One `director.lab.ecmp_site.EcmpLab` is built (client, router running BIRD, three directors
running ``directord run`` with a ``bgp:`` section, three DR real servers) and each drill of
``--drills`` runs on it in turn (`director.lab.ecmp_drill.run_ecmp_scenario`: the lab is
settled again before each, so drills also meet what earlier ones left behind: IPVS entries
of earlier connections, a director restarted). Each drill holds 12 long-lived HTTP/1.1
connections while a client opens ``--rate`` new connections per second.

Output: a markdown table on stdout (one row per drill: the router's change after the fault,
new connections and how many failed, the longest gap, long-lived connections lost, the
verdict) and, in ``--out-dir``, each drill's report as JSON and as text
(``NN-DRILL.json``, ``NN-DRILL.txt``, `director.lab.ecmp_scenarios.render`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import incumbents as inc  # noqa: E402

from director.lab.ecmp_drill import run_ecmp_scenario, settle  # noqa: E402
from director.lab.ecmp_scenarios import ECMP_SCENARIOS, render  # noqa: E402
from director.lab.ecmp_site import EcmpLab, EcmpOptions  # noqa: E402

DEFAULT_DRILLS = ("drain-director", "drain-director", "add-director", "realserver-down-everywhere", "fail-director")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def row(report: Mapping[str, Any]) -> list[object]:
    """One table row of a drill report (`director.lab.ecmp_scenarios.summary`; pure)."""
    f = report["figures"]
    before = f" (+{f['failed_before_fault']} before the fault)" if f.get("failed_before_fault") else ""
    lost = f"{f['long_lived_lost']} of {f['long_lived']}"
    if f["long_lived_lost"]:
        lost += " (" + ", ".join(f"{k} {v}" for k, v in sorted(f["lost_reasons"].items())) + ")"
    return [
        report["scenario"],
        inc.fmt_s(f["change_s"]),
        f"{f['failed']} of {f['requests']}{before}",
        inc.fmt_s(f["longest_gap_s"]),
        lost,
        f["long_lived_via_victim"],
        "ok" if report["ok"] else "FAILED",
    ]


def render_table(reports: Sequence[Mapping[str, Any]]) -> str:
    """The markdown table of the drills' reports (pure)."""
    headers = [
        "drill",
        "router change (s)",
        "new connections failed",
        "longest gap (s)",
        "long-lived lost",
        "long-lived via the victim",
        "verdict",
    ]
    return inc.markdown_table(headers, [row(r) for r in reports])


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--drills", nargs="+", default=list(DEFAULT_DRILLS), choices=list(ECMP_SCENARIOS))
    ap.add_argument("--scheduler", default="mh", choices=["mh", "wlc"])
    ap.add_argument("--rate", type=float, default=20.0, help="new connections per second")
    ap.add_argument("--out-dir", default=str(inc.REPO / "out" / "bench" / "ecmp_drills"))
    ap.add_argument("--verbose", action="store_true", help="print the drills' progress")
    a = ap.parse_args(argv)
    if not inc.ip_vs_here():
        log("cannot run: no ip_vs here; run it in the stock-kernel VM (`directord lab vm -- ...`)")
        return 2
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    say = (lambda t: log(t)) if a.verbose else (lambda _t: None)
    options = EcmpOptions(prefix=f"bed{os.getpid() % 10000}", directors=3, scheduler=a.scheduler)
    lab = EcmpLab(options, Path(tempfile.mkdtemp(prefix="bench-ecmp-")))
    reports = []
    try:
        lab.up()
        settle(lab, lab.directors, say)
        for i, name in enumerate(a.drills):
            log(f"drill {i}: {name}")
            report = run_ecmp_scenario(lab, name, rate=a.rate, say=say)
            reports.append(report)
            (out / f"{i:02d}-{name}.json").write_text(json.dumps(report, indent=2) + "\n")
            (out / f"{i:02d}-{name}.txt").write_text(render(report) + "\n")
    finally:
        lab.down()
    print(render_table(reports))
    return 0 if all(r["ok"] for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
