"""Code run in a fresh interpreter with this checkout first on the path, for the tests of what
is imported when (``test_cli_startup.py``, ``test_import_layers.py``): `python_in` runs it,
`fresh_modules` also returns what it left in ``sys.modules``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

#: This checkout.
ROOT = Path(__file__).resolve().parents[2]


def python_in(root: Path, code: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run ``python -c CODE`` in directory ``root`` with ``root`` the whole PYTHONPATH (and HOME,
    PATH /usr/bin:/bin, nothing else in the environment); its output is captured as text.
    Raises TimeoutExpired after ``timeout`` seconds."""
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root), "HOME": str(root)},
    )


def fresh_modules(code: str) -> tuple[Any, list[str]]:
    """Run ``code`` in a fresh interpreter in this checkout (`python_in`); returns what ``code``
    left in its global ``result`` (None without one; JSON values only) and the names of every
    module in ``sys.modules`` then, sorted. Raises AssertionError with the interpreter's
    standard error when the code fails."""
    probe = (
        code
        + "\nimport json as _json, sys as _sys\n"
        + "print(_json.dumps({'result': globals().get('result'), 'modules': sorted(_sys.modules)}))\n"
    )
    out = python_in(ROOT, probe)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout.splitlines()[-1])
    return doc["result"], doc["modules"]
