"""The pure parts of bench/active_active.py (the affected share of a drill's client samples,
the table) and of bench/ecmp_drills.py (its table)."""

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


def test_every_flow_failing_is_a_share_of_one():
    assert aa.affected_share(_samples("....xxxxxx...."), 10.2) == 1.0


def test_one_flow_in_three_failing():
    # the fault at 10.2 s: from then to the last failure, 3 of 9 requests failed
    assert aa.affected_share(_samples("....x..x..x...."), 10.2) == round(3 / 7, 3)


def test_failures_before_the_fault_do_not_count_and_none_failed_is_none():
    assert aa.affected_share(_samples("x......"), 10.1) is None


def _report(gap: float, failed: int, requests: int, fault_t: float, lost: int | None = None) -> dict:
    f = {"longest_gap_s": gap, "failed": failed, "requests": requests}
    if lost is not None:
        f |= {"long_lived_lost": lost, "long_lived": 12}
    return {"figures": f, "fault_t": fault_t, "ok": True}


def test_table_rows():
    pair = [aa.repetition(_report(1.2, 20, 200, 10.2), _samples("....xxxxxx...."))]
    ecmp = [
        aa.repetition(_report(0.5, 3, 200, 10.2, 0), _samples("....x..x..x...")),
        aa.repetition(_report(0.7, 2, 210, 10.2, 1), _samples("....x..x......")),
    ]
    table = aa.render({"pair": pair, "ecmp-mh": ecmp})
    lines = table.splitlines()
    assert lines[0] == (
        "| system | n | gap median (s) | gap max (s) | failed requests | affected share | long-lived lost |"
    )
    assert lines[2] == "| pair | 1 | 1.20 | 1.20 | 20 of 200 | 1.00 | - |"
    assert lines[3] == "| ecmp-mh | 2 | 0.60 | 0.70 | 5 of 410 | 0.46 | 1 of 24 |"


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
