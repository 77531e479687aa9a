"""`directord completion` and `directord manpage`, generated from the command's own parser: bash
completes the subcommands and their choices, zsh loads the script, and the manual page is valid
troff that names every command (rendered by groff when it is installed, linted by mandoc when
it is)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from director.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


def directord(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "director.cli", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )


def subcommands() -> list[str]:
    action = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    return sorted(action.choices)


def bash_complete(script: str, words: list[str]) -> list[str]:
    """What bash's completion offers for ``words`` (the last one being completed)."""
    program = (
        f"{script}\n"
        f"COMP_WORDS=({' '.join(words)}); COMP_CWORD={len(words) - 1}; "
        f'COMP_LINE="{" ".join(words)}"; COMP_POINT=${{#COMP_LINE}}\n'
        "_shtab_directord\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    out = subprocess.run(["bash", "-c", program], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return sorted(set(out.stdout.split()))


def test_bash_completion_offers_the_subcommands_and_their_choices():
    result = directord("completion", "bash")
    assert result.returncode == 0, result.stderr
    script = result.stdout
    assert subprocess.run(["bash", "-n"], input=script, text=True, timeout=60).returncode == 0
    assert bash_complete(script, ["directord", "r"]) == [c for c in subcommands() if c.startswith("r")]
    assert bash_complete(script, ["directord", "rs", "d"]) == ["disable", "drain"]
    assert "--log-format" in bash_complete(script, ["directord", "run", "--"])


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed")
def test_zsh_completion_loads():
    result = directord("completion", "zsh")
    assert result.returncode == 0 and "#compdef directord" in result.stdout
    out = subprocess.run(["zsh", "-n"], input=result.stdout, text=True, timeout=60)
    assert out.returncode == 0


def test_the_manual_page_names_every_command():
    result = directord("manpage")
    assert result.returncode == 0, result.stderr
    page = result.stdout
    assert page.startswith(".TH DIRECTORD")
    plain = page
    for markup in ("\\fB", "\\fR", "\\fI\\,", "\\/"):
        plain = plain.replace(markup, "")
    plain = plain.replace("\\-", "-")
    for command in subcommands():
        assert f"directord {command}" in plain, command
    if shutil.which("groff"):
        out = subprocess.run(
            ["groff", "-man", "-Tutf8", "-ww", "-z"], input=page, capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0 and not out.stderr.strip(), out.stderr
    if shutil.which("mandoc"):
        out = subprocess.run(
            ["mandoc", "-T", "lint", "-W", "error"], input=page, capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stdout + out.stderr
