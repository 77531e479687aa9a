"""The main job: `directord lab drill fail-active` on real IPVS (two directors, HA, a steady client)."""

from __future__ import annotations

import json

import pytest

from director.lab.drill import DEADTIME, GAP_MARGIN, run_fail_active

pytestmark = pytest.mark.kernel


def test_fail_active_drill_moves_the_vip_and_bounds_the_gap(capsys):
    status = run_fail_active(as_json=True)
    report = json.loads(capsys.readouterr().out)
    assert status == 0, report
    assert report["takeover_s"] is not None and report["takeover_s"] > 0
    assert report["longest_gap_s"] <= DEADTIME + GAP_MARGIN
    assert report["requests"] > 50
    holders = [h["holder"] for h in report["holders"]]
    assert holders[-1] == "dir2"  # dir1 is down: the VIP must be on dir2 alone
