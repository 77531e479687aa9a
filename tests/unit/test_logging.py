"""Logs: one logger tree (``directord.*``), and journald's priorities without a second timestamp
when stderr is the journal (``$JOURNAL_STREAM``)."""

from __future__ import annotations

import ast
import dataclasses
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from checks.logs import LOG_FORMAT, JournalFormatter, journal_stream

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("director", "ha", "checks")


def test_every_logger_of_the_project_is_under_directord():
    """Every ``logging.getLogger("...")`` with a literal name, and every event's ``logger``, in
    the three packages names ``directord`` or a logger below it."""
    names = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Call)
                    and getattr(node.func, "attr", None) == "getLogger"
                    and node.args
                    and not (isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str))
                ):
                    # only the bus's own `event.logger` and the root logger's effective level
                    assert ast.unparse(node.args[0]) in ("event.logger",), f"{path}: {ast.unparse(node)}"
                elif isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "getLogger" and node.args:
                    names.append((path.name, node.args[0].value))
    import director.events as de
    import ha.events as he

    for module in (de, he):
        for obj in vars(module).values():
            if dataclasses.is_dataclass(obj) and isinstance(getattr(obj, "logger", None), str):
                names.append((module.__name__, obj.logger))
    foreign = [(where, n) for where, n in names if n != "directord" and not n.startswith("directord.")]
    assert foreign == [("cli.py", "pyroute2")], foreign  # pyroute2's own logger, quietened


@pytest.mark.parametrize(
    "level, prefix",
    [
        (logging.DEBUG, "<7>"),
        (logging.INFO, "<6>"),
        (logging.WARNING, "<4>"),
        (logging.ERROR, "<3>"),
        (logging.CRITICAL, "<2>"),
        (25, "<6>"),
    ],
)
def test_journal_lines_carry_the_syslog_priority(level, prefix):
    record = logging.LogRecord("directord.ha", level, __file__, 1, "peer %s is dead", ("dir2",), None)
    line = JournalFormatter(logging.Formatter("%(name)s: %(message)s")).format(record)
    assert line == f"{prefix}directord.ha: peer dir2 is dead"


def test_journal_stream_matches_only_the_stream_it_names(tmp_path):
    with open(tmp_path / "err", "w") as f:
        info = os.fstat(f.fileno())
        assert journal_stream(f, {"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"})
        assert not journal_stream(f, {"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino + 1}"})
        assert not journal_stream(f, {"JOURNAL_STREAM": "nonsense"})
        assert not journal_stream(f, {})


def run_invalid(tmp_path: Path, journal: bool) -> str:
    bad = tmp_path / "bad.yaml"
    bad.write_text("virtual_services: 7\n")
    err = tmp_path / "stderr"
    with open(err, "w") as f:
        info = os.fstat(f.fileno())
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        env.pop("JOURNAL_STREAM", None)
        if journal:
            env["JOURNAL_STREAM"] = f"{info.st_dev}:{info.st_ino}"
        result = subprocess.run(
            [sys.executable, "-m", "director.cli", "run", "-c", str(bad), "--control-socket", str(tmp_path / "s")],
            stderr=f,
            env=env,
            timeout=60,
        )
    assert result.returncode == 1
    return err.read_text()


def test_under_journald_a_daemon_error_has_priority_3_and_no_timestamp(tmp_path):
    line = run_invalid(tmp_path, journal=True).splitlines()[0]
    assert line.startswith("<3>ERROR directord: invalid configuration "), line
    plain = run_invalid(tmp_path, journal=False).splitlines()[0]
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ERROR directord: invalid configuration ", plain), plain
    assert LOG_FORMAT.startswith("%(asctime)s")
