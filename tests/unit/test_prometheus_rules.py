"""Prometheus' own tool on what directord ships: ``promtool check metrics`` lints a full scrape
(names, units, ``_total``, help texts), ``promtool check rules`` and ``promtool test rules`` run
the alerting rules of ``etc/prometheus/directord-alerts.yaml`` against series as two directors
expose them (split brain, every real server down, a director down, an IPVS table changed outside
directord, a BGP VIP announced by no director, a BGP session down)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from test_metrics import scrape

from director.web.server import render_metrics

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "etc" / "prometheus" / "directord-alerts.yaml"
RULE_TESTS = ROOT / "tests" / "data" / "prometheus" / "alerts-test.yaml"

PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian package prometheus) is not installed")


def promtool(*args: str, stdin: bytes | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], input=stdin, capture_output=True, timeout=120, cwd=cwd)


def test_a_full_scrape_passes_promtool_check_metrics():
    result = promtool("check", "metrics", stdin=render_metrics(scrape()))
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), (
        result.stdout.decode() + result.stderr.decode()
    )


def test_the_alerting_rules_are_valid():
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert b"SUCCESS: 14 rules found" in result.stdout, result.stdout.decode()


def test_the_alerting_rules_fire_on_a_split_brain_a_dead_service_a_dead_director_and_drift():
    result = promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    assert b"SUCCESS" in result.stdout


def test_a_wrong_expectation_fails(tmp_path):
    """The rule test can fail: the same file expecting no split-brain alert does."""
    text = RULE_TESTS.read_text().replace("../../../etc", str(ROOT / "etc"))
    broken = text.replace(
        "      - eval_time: 10s\n        alertname: VIPHeldByTwoDirectors",
        "      - eval_time: 40s\n        alertname: VIPHeldByTwoDirectors",
        1,
    )
    assert broken != text
    (tmp_path / "t.yaml").write_text(broken)
    result = promtool("test", "rules", "t.yaml", cwd=tmp_path)
    assert result.returncode != 0


@pytest.mark.parametrize("when", ["2m", "25m"])
def test_the_drift_alert_expectation_can_fail(tmp_path, when):
    """The drift alert's test can fail: expecting it to fire before the repair (2m) or once the
    repair left its 15-minute window (25m) fails."""
    text = RULE_TESTS.read_text().replace("../../../etc", str(ROOT / "etc"))
    firing = "      - eval_time: 5m\n        alertname: IPVSTableChangedOutsideDirectord\n"
    broken = text.replace(firing, firing.replace("5m", when), 1)
    assert broken != text
    (tmp_path / "t.yaml").write_text(broken)
    result = promtool("test", "rules", "t.yaml", cwd=tmp_path)
    assert result.returncode != 0


DASHBOARD = ROOT / "etc" / "grafana" / "directord-dashboard.json"


def dashboard_exprs() -> list[str]:
    import json

    doc = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in doc["panels"] for t in p["targets"]]


def test_dashboard_queries_are_promql_of_documented_metrics(tmp_path):
    """Every query of the Grafana dashboard parses as PromQL (promtool checks it as a recording
    rule, Grafana's variables replaced) and names only metrics the README documents."""
    import re

    from test_metrics import README

    documented = set(re.findall(r"^\| `(directord_\w+)`", README.read_text(), re.M))
    exprs = dashboard_exprs()
    assert len(exprs) >= 10
    for expr in exprs:
        names = {n.removesuffix("_bucket") for n in re.findall(r"\b(directord_\w+)", expr)}
        assert names and names <= documented, (expr, names - documented)
    plain = [e.replace("$__rate_interval", "5m").replace("$job", "directord") for e in exprs]
    rules = "groups:\n  - name: dashboard\n    rules:\n" + "".join(
        f"      - record: dashboard:q{i}\n        expr: {json_quote(e)}\n" for i, e in enumerate(plain)
    )
    (tmp_path / "dashboard-rules.yaml").write_text(rules)
    result = promtool("check", "rules", str(tmp_path / "dashboard-rules.yaml"))
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def json_quote(text: str) -> str:
    import json

    return json.dumps(text)
