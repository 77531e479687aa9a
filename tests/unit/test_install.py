"""The documented install on a director (README.md, "Install"): this tree's wheel, built and
installed with its dependencies from the package index into a fresh venv of the system's own
Python (``/usr/bin/python3``, as on stock Debian 12), and the installed command used as a user
would: ``--version``, ``check`` of the shipped example and of a broken file, ``install-units``,
and the status page served from the files the wheel carries.

Skipped only when the package index pip is configured with cannot be reached (a 2 s connect);
everything else that goes wrong (no ``venv`` module, a build or install error, a missing file
in the wheel) fails. Everything it writes, pip's cache included, is under pytest's tmp dir.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import tomllib
import urllib.parse
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"
DEFAULT_INDEX = "https://pypi.org/simple"
#: seconds: pip's socket timeout, and the bound on one pip run (a build, an install)
PIP_SOCKET_TIMEOUT = 30
PIP_RUN_TIMEOUT = 240
#: seconds: the bound on one run of the installed command
COMMAND_TIMEOUT = 60

pytestmark = pytest.mark.slow

#: Run by the venv's python: serve the status page with the installed package on a loopback
#: port and print, for every path of ``STATIC``, [HTTP status, Content-Type, sha256 of the body].
SERVE_STATIC = """
import asyncio, hashlib, json, socket
import aiohttp
from director.model import HTTPSettings
from director.web.server import STATIC, HTTPServer

async def scrape():
    raise AssertionError("the page's files need no scrape")

async def main():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = HTTPServer(HTTPSettings("127.0.0.1", port), scrape)
    await server.start()
    got = {}
    try:
        async with aiohttp.ClientSession() as session:
            for path in STATIC:
                async with session.get(f"http://127.0.0.1:{port}{path}") as response:
                    body = await response.read()
                    got[path] = [response.status, response.headers.get("Content-Type"),
                                 hashlib.sha256(body).hexdigest()]
    finally:
        await server.stop()
    print(json.dumps({"files": {path: name for path, (name, _) in STATIC.items()}, "served": got}))

asyncio.run(main())
"""


def project_version() -> str:
    """The version ``pyproject.toml`` declares (what the installed ``--version`` must print)."""
    with open(ROOT / "pyproject.toml", "rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without what would put the source tree on the venv's path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(extra)
    return env


def run(
    argv: list[str], cwd: Path, timeout: float, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``argv`` run in ``cwd`` (never the source tree) with output captured."""
    return subprocess.run(
        argv, cwd=cwd, env=env or clean_env(), capture_output=True, text=True, timeout=timeout, check=False
    )


def configured_index(pip: list[str], cwd: Path) -> str:
    """The index URL this pip uses: ``PIP_INDEX_URL``, else the last ``index-url`` of
    ``pip config list`` (files read later override earlier ones), else PyPI's."""
    if os.environ.get("PIP_INDEX_URL"):
        return os.environ["PIP_INDEX_URL"].split()[0]
    listed = run([*pip, "config", "list"], cwd, 30)
    found = DEFAULT_INDEX
    for line in listed.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.rsplit(".", 1)[-1] == "index-url":
            found = value.strip().strip("'\"").split()[0]
    return found


def index_problem(index: str) -> str | None:
    """Why ``index`` (or the HTTPS proxy in the environment) cannot be reached, or None: a
    ``file:`` index must be a directory, a network one must accept a TCP connection within 2 s."""
    url = urllib.parse.urlsplit(index)
    if url.scheme == "file":
        return None if os.path.isdir(urllib.parse.unquote(url.path)) else f"package index {index} is not a directory"
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    target = urllib.parse.urlsplit(proxy) if proxy and url.scheme == "https" else url
    host = target.hostname or ""
    port = target.port or (443 if target.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=2):
            return None
    except OSError as exc:
        return f"package index {index} unreachable ({host}:{port}: {exc})"


def copy_source(dest: Path) -> None:
    """The worktree as a build sees it, without VCS data, caches, build output or local venvs
    (a build in place would leave ``build/`` and ``*.egg-info`` in the tree)."""
    skip = shutil.ignore_patterns(".*", "__pycache__", "*.egg-info", "build", "dist", "out", "venv", "*.pyc")
    shutil.copytree(ROOT, dest, ignore=skip)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv of ``/usr/bin/python3`` (no system site-packages) with this tree's wheel and its
    dependencies installed from the configured index; its directory."""
    tmp = tmp_path_factory.mktemp("install")
    venv = tmp / "venv"
    made = run([SYSTEM_PYTHON, "-m", "venv", str(venv)], tmp, 120)
    assert made.returncode == 0, (
        f"{SYSTEM_PYTHON} -m venv failed (Debian: apt-get install python3-venv):\n{made.stderr}"
    )
    pip = [str(venv / "bin" / "python"), "-m", "pip"]
    problem = index_problem(configured_index(pip, tmp))
    if problem is not None:
        pytest.skip(problem)
    common = ["--disable-pip-version-check", "--timeout", str(PIP_SOCKET_TIMEOUT), "--cache-dir", str(tmp / "cache")]
    # the build backend's own pip run (build isolation) gets the cache from the environment
    env = clean_env(PIP_CACHE_DIR=str(tmp / "cache"))
    source, wheels = tmp / "src", tmp / "wheels"
    copy_source(source)
    built = run([*pip, "wheel", *common, "--no-deps", "-w", str(wheels), str(source)], tmp, PIP_RUN_TIMEOUT, env)
    assert built.returncode == 0, built.stdout + built.stderr
    [wheel] = wheels.glob("directord-*.whl")
    done = run([*pip, "install", *common, str(wheel)], tmp, PIP_RUN_TIMEOUT, env)
    assert done.returncode == 0, done.stdout + done.stderr
    return venv


def test_the_installed_command_is_the_venvs_and_prints_the_version(installed):
    where = run([str(installed / "bin" / "python"), "-c", "import director; print(director.__file__)"], installed, 60)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(installed), where.stdout  # the wheel's, not the tree's
    out = run([str(installed / "bin" / "directord"), "--version"], installed, COMMAND_TIMEOUT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"directord {project_version()}"


def test_check_passes_the_shipped_example_and_locates_errors(installed, tmp_path):
    directord = str(installed / "bin" / "directord")
    example = ROOT / "etc" / "directord.yaml"
    good = run([directord, "check", "-c", str(example)], tmp_path, COMMAND_TIMEOUT)
    assert good.returncode == 0, good.stdout + good.stderr
    assert re.fullmatch(rf"{re.escape(str(example))}: OK \(\d+ virtual services, \d+ real servers\)\n", good.stdout)
    bad = tmp_path / "broken.yaml"
    bad.write_text("virtual_services:\n  - name: web\n    address: 192.0.2.1\n    port: 80\n    colour: blue\n")
    out = run([directord, "check", "-c", str(bad)], tmp_path, COMMAND_TIMEOUT)
    assert out.returncode == 1, out.stdout + out.stderr
    assert re.search(rf"^{re.escape(str(bad))}:5:\d+: virtual_services\[0\]\.colour: unknown key", out.stderr, re.M), (
        out.stderr
    )


def test_install_units_names_the_venvs_directord(installed, tmp_path):
    directord = installed / "bin" / "directord"
    out = run([str(directord), "install-units", "--dest", str(tmp_path)], tmp_path, COMMAND_TIMEOUT)
    assert out.returncode == 0, out.stdout + out.stderr
    execs = [line for line in (tmp_path / "directord.service").read_text().splitlines() if line.startswith("Exec")]
    assert [line.split("=", 1)[0] for line in execs] == ["ExecStartPre", "ExecStart", "ExecReload"]
    for line in execs:
        assert line.split("=", 1)[1].split()[0] == str(directord), line


def test_the_status_page_is_served_from_the_wheels_files(installed, tmp_path):
    out = run([str(installed / "bin" / "python"), "-c", SERVE_STATIC], tmp_path, COMMAND_TIMEOUT)
    assert out.returncode == 0, out.stdout + out.stderr
    doc = json.loads(out.stdout)
    assert doc["served"].keys() == doc["files"].keys() and "/" in doc["files"]
    for path, name in doc["files"].items():
        status, kind, digest = doc["served"][path]
        shipped = (ROOT / "director" / "web" / "static" / name).read_bytes()
        assert status == 200 and kind.startswith("text/"), (path, status, kind)
        assert digest == hashlib.sha256(shipped).hexdigest(), path
