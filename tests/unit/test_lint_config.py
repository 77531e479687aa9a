"""The ruff configuration of pyproject.toml ([tool.ruff]), which tests/run checks the tree with
(``python -m ruff check .``) before the host tests: a file breaking a rule of each selected set
fails ``ruff check`` under it, so that step cannot pass by checking nothing, and the settings
that differ from ruff's defaults (120 columns, B905 left out) are the ones in force."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import ruff  # noqa: F401 - a test dependency (pyproject.toml [test]): missing, the module fails

ROOT = Path(__file__).resolve().parents[2]


def ruff_check(root: Path) -> subprocess.CompletedProcess[str]:
    """``ruff check .`` in ``root`` with ``root``'s pyproject.toml, through this interpreter as tests/run runs it."""
    return subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )


def project(tmp_path: Path, source: str) -> Path:
    """``tmp_path`` with the project's pyproject.toml and ``source`` as ``director/probe.py``."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "director").mkdir()
    (tmp_path / "director" / "probe.py").write_text(source)
    return tmp_path


def line(width: int) -> str:
    """An assignment of a string, ``width`` columns long."""
    return "x = " + repr("a" * (width - 6)) + "\n"


@pytest.mark.parametrize(
    "source,code",
    [
        (line(121), "E501"),  # one column over the 120 of [tool.ruff]
        ("x = 1 \n", "W291"),
        ("import os\n", "F401"),
        ("import sys\nimport os\n\nprint(os, sys)\n", "I001"),
        ("class A(object):\n    pass\n", "UP004"),
        ("def f(x=[]):\n    return x\n", "B006"),
    ],
)
def test_a_finding_fails_ruff_check(tmp_path, source, code):
    out = ruff_check(project(tmp_path, source))
    assert out.returncode == 1, out.stdout + out.stderr
    assert any(f.startswith("director/probe.py:") and f" {code} " in f for f in out.stdout.splitlines()), out.stdout


def test_the_project_settings_are_in_force(tmp_path):
    # 120 columns (ruff's default is 88) and zip() without strict= (B905, left out)
    source = line(120) + "pairs = list(zip([1], [2]))\n"
    out = ruff_check(project(tmp_path, source))
    assert out.returncode == 0, out.stdout + out.stderr


def ruff_format_check(root: Path) -> subprocess.CompletedProcess[str]:
    """``ruff format --check .`` in ``root``, as tests/run runs it after ``ruff check``."""
    return subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "--no-cache", "."],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_an_unformatted_file_fails_the_format_check(tmp_path):
    out = ruff_format_check(project(tmp_path, "x = {'a':1}\n"))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "director/probe.py" in out.stdout


def test_a_formatted_file_and_a_fmt_off_table_pass_the_format_check(tmp_path):
    # the byte tables of the codec tests keep their layout, one field per column, between fmt: off/on
    source = (
        'x = {"a": 1}\n'
        "# fmt: off\n"
        'frame = bytes.fromhex(\n    "1400" "0000"  # length, type\n    "01" "02"\n)\n'
        "# fmt: on\n"
    )
    out = ruff_format_check(project(tmp_path, source))
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_tree_is_formatted():
    out = ruff_format_check(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
