"""The import contracts of pyproject.toml ([tool.importlinter]), checked with import-linter:
dependencies point one way (checks <- ha <- director), the heartbeat node and the planner are
pure, so are the metrics, the daemon imports none of the tools, only ha.rtnl imports pyroute2, and the IPVS layer, the
configuration loader and the tools import downwards only. docs/architecture.md explains the rules."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import importlinter  # noqa: F401 - a test dependency (pyproject.toml [test]): missing, the module fails
import pytest
from freshpython import ROOT, fresh_modules, python_in

PACKAGES = ("director", "ha", "checks")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """import-linter on the packages under ``root`` with ``root``'s pyproject.toml."""
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True))"
    return python_in(root, code, timeout=300)


def test_the_import_contracts_are_kept():
    out = lint_imports(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "15 kept, 0 broken" in out.stdout, out.stdout


@pytest.mark.parametrize(
    "module,line,contract",
    [
        ("ha/wire.py", "import director.config", "ha does not import director"),
        ("checks/spec.py", "import ha.auth", "checks imports neither ha nor director"),
        ("ha/node/core.py", "import ha.vip", "the heartbeat node is pure"),
        ("director/ipvs/codec.py", "import director.ipvs.kernel", "the IPVS layer imports downwards only"),
        ("director/config/issues.py", "import director.config.ha", "the configuration loader imports downwards only"),
        ("director/reconciler.py", "import director.lab.pair", "the daemon imports none of the tools"),
        ("director/realserver/model.py", "import director.realserver.kernel", "realserver imports downwards only"),
        ("director/convert/issues.py", "import director.convert.driver", "directord convert imports downwards only"),
        ("ha/media.py", "def _links(): from pyroute2 import IPRoute", "only ha.rtnl imports pyroute2"),
        ("director/lab/pair.py", "import pyroute2.netns", "only ha.rtnl imports pyroute2"),
        ("ha/node/core.py", "import ha.rtnl", "the heartbeat node is pure"),
        ("director/web/metrics.py", "import aiohttp.web", "the metrics are pure"),
        ("director/web/tally.py", "import director.daemon", "the metrics are pure"),
    ],
)
def test_a_reverse_import_breaks_a_contract(tmp_path, module, line, contract):
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{line}  # a deliberate reverse import\n")
    out = lint_imports(tmp_path)
    assert out.returncode != 0
    assert f"{contract}" in out.stdout and "BROKEN" in out.stdout, out.stdout


# --- scapy stays out of the daemon ------------------------------------------------------------


def modules_loaded_by(code: str) -> set[str]:
    """Top-level package names in ``sys.modules`` after running ``code`` in a fresh interpreter
    (this checkout first on the path)."""
    _, modules = fresh_modules(code)
    return {m.split(".")[0] for m in modules}


@pytest.mark.parametrize(
    "code",
    [
        "import director.daemon, ha.service",
        # `directord run`: the console script builds the whole parser (the lab's subcommands too)
        "from director.cli import build_parser\nbuild_parser().parse_args(['run', '-c', 'x.yaml'])",
    ],
)
def test_the_daemon_does_not_load_scapy(code):
    loaded = modules_loaded_by(code)
    assert "director" in loaded  # the parser alone needs nothing of ha (tests/unit/test_cli_startup.py)
    assert "scapy" not in loaded


def test_the_lab_loads_scapy_only_to_decode_a_frame():
    # the probe sees scapy once it is loaded: the lab's decoder imports it on its first call
    assert "scapy" not in modules_loaded_by("import director.lab.scenarios, director.lab.drill")
    assert "scapy" in modules_loaded_by("from director.lab.scenarios import parse_arp\nparse_arp(bytes(60))")
