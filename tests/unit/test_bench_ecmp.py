"""The pure parts of bench/active_active.py (a repetition's figures, the table) and of
bench/ecmp_drills.py (its table)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import active_active as aa  # noqa: E402
import ecmp_drills  # noqa: E402

from director.lab.scenarios import Sample  # noqa: E402


def _samples(spec: str, start: float = 10.0, period: float = 0.05) -> list[Sample]:
    """One sample per character: ``.`` answered, ``x`` failed, ``period`` s apart from ``start``."""
    return [
        Sample(start + i * period, start + i * period + 0.01, c == ".", "rs1" if c == "." else "timeout")
        for i, c in enumerate(spec)
    ]


def _pair_report(change: float, gap: float, failed: int, requests: int) -> dict:
    f = {"vip_moved_s": change, "longest_gap_s": gap, "failed": failed, "requests": requests}
    return {"figures": f, "ok": True}


def _ecmp_report(change: float, gap: float, via: int, failed: int, requests: int, lost: int) -> dict:
    f = {
        "change_s": change,
        "long_lived_via_victim_max_gap_s": gap,
        "long_lived_via_victim": via,
        "long_lived": 12,
        "long_lived_lost": lost,
        "failed": failed,
        "requests": requests,
    }
    return {"figures": f, "ok": lost == 0}


def test_active_active_table_rows():
    pair = [aa.repetition(_pair_report(1.0, 1.05, 2, 90), pair=True) for _ in range(2)]
    ecmp = [
        aa.repetition(_ecmp_report(0.33, 0.52, 4, 1, 200, 0), pair=False),
        aa.repetition(_ecmp_report(0.65, 0.62, 5, 0, 210, 1), pair=False),
        # no long-lived connection went through the dead director: no gap to tell
        aa.repetition(_ecmp_report(0.40, 0.0, 0, 0, 190, 0), pair=False),
    ]
    lines = aa.render({"pair": pair, "ecmp-mh": ecmp}).splitlines()
    assert lines[0] == (
        "| system | n | change (s) | gap of affected flows median (s) | max (s) | flows affected "
        "| new connections failed | long-lived lost |"
    )
    assert lines[2] == "| pair | 2 | 1.00 | 1.05 | 1.05 | all | 4 of 180 | - |"
    assert lines[3] == "| ecmp-mh | 3 | 0.40 | 0.57 | 0.62 | 9 of 36 | 1 of 600 | 1 of 36 |"


def test_drills_table():
    from director.lab.ecmp_scenarios import EcmpRecord, LongLived, evaluate, summary

    rec = EcmpRecord("fail-director", "mh", ("dir1", "dir2", "dir3"), "dir1", fault_t=2.0, settled=True)
    rec.next_hops = [(0.0, ("dir1", "dir2", "dir3")), (2.4, ("dir2", "dir3"))]
    rec.samples = _samples("." * 10 + "x" + "." * 30, start=1.0, period=0.1)
    rec.samples[2] = Sample(1.2, 1.3, False, "TimeoutError")  # before the fault
    rec.long_lived = [
        LongLived(i, port=40000 + i, answers=9, real_server="rs1", director_before="dir1") for i in (1, 2)
    ]
    rec.long_lived[1].lost = "reset"
    table = ecmp_drills.render_table([summary(rec, evaluate(rec))])
    assert table.splitlines()[2] == (
        "| fail-director | 0.40 | 1 of 41 (+1 before the fault) | 0.20 | 1 of 2 (reset 1) | 2 | FAILED |"
    )
