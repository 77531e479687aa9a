"""The type check of pyproject.toml ([tool.mypy]), which tests/run runs (``python -m mypy``) after
ruff, before the host tests: strict on the pure modules its ``files`` lists. The project passes it;
a type error in one of those modules fails it, so that step cannot pass by checking nothing; so does
what only strict mode catches (a function without annotations, a generic without its parameters);
the modules they import are read for their types but not reported on."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import mypy  # noqa: F401 - a test dependency (pyproject.toml [test]): missing, the module fails
import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]


def mypy_check(root: Path, cache: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m mypy`` in ``root`` with ``root``'s pyproject.toml, through this interpreter as
    tests/run runs it; ``cache``: the cache directory (default: ``root``'s .mypy_cache).

    Without PYTHONPATH, as tests/run: mypy takes a module found through it for an installed
    package and reports none of its errors, whatever ``follow_imports`` says."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, "-m", "mypy", *(["--cache-dir", str(cache)] if cache is not None else [])],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def checked_files(root: Path) -> list[Path]:
    """The Python files the configuration has mypy check in ``root`` (``files``, directories walked)."""
    out: list[Path] = []
    for entry in CONFIG["files"]:
        path = root / entry
        out.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    return out


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One mypy cache for the temporary projects (the standard library is analysed once)."""
    return tmp_path_factory.mktemp("mypy-cache")


def project(tmp_path: Path, modules: dict[str, str]) -> Path:
    """``tmp_path`` with the project's pyproject.toml, every module its ``files`` lists as an empty
    module of its package (a listed directory: an empty package) and ``modules`` (path -> source)."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    paths = [
        tmp_path / entry if entry.endswith(".py") else tmp_path / entry / "__init__.py" for entry in CONFIG["files"]
    ]
    for path in paths + [tmp_path / name for name in modules]:
        path.parent.mkdir(parents=True, exist_ok=True)
        for package in [path.parent, *path.parent.parents]:
            if package == tmp_path:
                break
            (package / "__init__.py").touch()
        path.touch()
    for name, source in modules.items():
        (tmp_path / name).write_text(source)
    return tmp_path


def test_the_project_passes_the_type_check():
    out = mypy_check(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    # every listed module was checked, none skipped
    assert f"no issues found in {len(checked_files(ROOT))} source files" in out.stdout, out.stdout


def test_the_listed_modules_exist():
    for entry in CONFIG["files"]:
        assert (ROOT / entry).exists(), entry


def test_an_annotated_module_passes(tmp_path, cache):
    source = "def double(x: int) -> int:\n    return 2 * x\n"
    out = mypy_check(project(tmp_path, {"ha/wire.py": source}), cache)
    assert out.returncode == 0, out.stdout + out.stderr


# a listed module, a new module in a listed package, a module of a listed package
MODULES = ["ha/wire.py", "director/config/probe.py", "ha/node/core.py"]


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize(
    "source,line,code",
    [
        ('x: int = "one"\n', 1, "assignment"),
        ('def double(x: int) -> int:\n    return "two" * x\n', 2, "return-value"),
    ],
)
def test_a_type_error_fails_the_check(tmp_path, cache, module, source, line, code):
    out = mypy_check(project(tmp_path, {module: source}), cache)
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"{module}:{line}: error:" in out.stdout and f"[{code}]" in out.stdout, out.stdout


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize(
    "source,line,code",
    [
        # accepted without --strict: an unannotated function is not even checked
        ("def double(x):\n    return 2 * x\n", 1, "no-untyped-def"),
        ("def first(items: list) -> object:\n    return items[0]\n", 1, "type-arg"),
        ("from typing import Any\n\n\ndef value(x: Any) -> int:\n    return x\n", 5, "no-any-return"),
    ],
)
def test_what_only_strict_mode_finds_fails_the_check(tmp_path, cache, module, source, line, code):
    out = mypy_check(project(tmp_path, {module: source}), cache)
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"{module}:{line}: error:" in out.stdout and f"[{code}]" in out.stdout, out.stdout


def test_the_errors_of_an_imported_module_are_not_reported(tmp_path, cache):
    # ha.readfile is not listed (it reads files): its types are used, its errors left out
    modules = {
        "ha/readfile.py": 'LIMIT: int = "many"\n\n\ndef size(x):\n    return x\n',
        "ha/auth.py": "from ha.readfile import LIMIT\n\nhalf: int = LIMIT // 2\n",
    }
    (tmp_path / "silent").mkdir()
    out = mypy_check(project(tmp_path / "silent", modules), cache)
    assert out.returncode == 0, out.stdout + out.stderr
    # ... but its types are: a str where it declares an int is an error in the listed module
    modules["ha/auth.py"] = "from ha.readfile import LIMIT\n\nname: str = LIMIT\n"
    (tmp_path / "used").mkdir()
    out = mypy_check(project(tmp_path / "used", modules), cache)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "ha/auth.py:3: error:" in out.stdout and "ha/readfile.py" not in out.stdout, out.stdout
