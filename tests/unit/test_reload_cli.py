"""`directord reload` against a real daemon (its control socket in tmp_path), `directord --version`.

The command runs as a subprocess (``python -m director.cli``), as systemd's ``ExecReload=`` runs it;
the daemon runs on the test's event loop.
"""

import asyncio
import importlib.metadata
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import pytest
from test_daemon import wait_status, write_config

import director
from director import cli
from director import daemon as daemon_module
from director.config import ConfigError, ConfigIssue
from director.daemon import MAX_REFUSAL_TEXT, Daemon, refusal_text

SOURCE_TREE = str(Path(director.__file__).resolve().parent.parent)

CONFIG = """\
global:
  reconcile_interval: 1
  control_socket: {socket}
virtual_services:
  - name: {name}
    address: 127.0.0.100
    port: 80
    forwarding: nat
    check: {{type: none}}
    real_servers:
      - {{address: 127.0.0.1, port: 8001}}
      - {{address: 127.0.0.1, port: 8002}}
"""
#: An invalid file: line 5 holds the bad port at column 11.
INVALID = """\
global:
  control_socket: {socket}
virtual_services:
  - address: 127.0.0.100
    port: 70000
    real_servers: []
"""


async def directord(*argv: str) -> tuple[int, str, str]:
    """Run ``directord ARGV`` from this source tree in a child process: (exit status, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "director.cli",
        *argv,
        env={**os.environ, "PYTHONPATH": SOURCE_TREE},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def running(tmp_path):
    """A daemon for ``directord.yaml`` (one service, ``web``, its control socket named in the file):
    yields (config path, socket path, daemon)."""
    cfg = tmp_path / "directord.yaml"
    sock = str(tmp_path / "run" / "directord.sock")
    write_config(cfg, CONFIG.format(socket=sock, name="web"))
    daemon = Daemon(str(cfg))
    task = asyncio.create_task(daemon.run())
    try:
        await wait_status(sock, lambda d: True)
        yield cfg, sock, daemon
    finally:
        daemon.stop()
        assert await asyncio.wait_for(task, 10) == 0


async def test_a_valid_file_is_adopted_and_the_command_exits_0(running):
    cfg, sock, daemon = running
    write_config(cfg, CONFIG.format(socket=sock, name="web-new"))
    rc, out, err = await directord("reload", "--control-socket", sock)
    assert rc == 0, err
    assert f"reloaded {cfg}: 1 virtual services, 2 real servers" in out
    doc = await wait_status(sock, lambda d: True)
    assert doc["services"][0]["name"] == "web-new"
    assert doc["last_reload"]["ok"] is True and doc["last_reload"]["services"] == 1
    rc, out, err = await directord("status", "--control-socket", sock)
    assert rc == 0 and "adopted, 1 virtual services" in out, err


async def test_an_invalid_file_is_refused_with_its_located_errors_and_exit_1(running):
    cfg, sock, daemon = running
    cfg.write_text(INVALID.format(socket=sock))
    # -c names the file: its socket is found although the file does not validate
    rc, out, err = await directord("reload", "-c", str(cfg))
    assert rc == 1, (out, err)
    assert f"{cfg}:5:11: virtual_services[0].port:" in err
    assert f"{cfg}: 1 error" in err
    assert "the daemon keeps its running configuration" in err
    assert out == ""
    doc = await wait_status(sock, lambda d: True)
    assert doc["services"][0]["name"] == "web"  # the running configuration is still served
    assert doc["last_reload"]["ok"] is False and doc["last_reload"]["errors"] == 1
    rc, out, err = await directord("status", "--control-socket", sock)
    assert rc == 0, err
    assert "REFUSED (1 problem), the running configuration is kept" in out


async def test_no_daemon_is_exit_2(tmp_path):
    rc, _, err = await directord("reload", "--control-socket", str(tmp_path / "none.sock"))
    assert rc == 2 and "no directord answering" in err and "nothing was reloaded" in err
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "stale.sock"))  # a socket file nobody listens on: connection refused
    stale.close()
    rc, _, err = await directord("reload", "--control-socket", str(tmp_path / "stale.sock"))
    assert rc == 2 and "no directord answering" in err


def test_a_file_whose_yaml_is_broken_says_the_default_socket_was_asked(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "DEFAULT_SOCKET", str(tmp_path / "default.sock"))  # never the host's daemon
    broken = tmp_path / "broken.yaml"
    broken.write_text("global: [\n")  # not YAML: its control_socket cannot be read
    assert cli.main(["reload", "-c", str(broken)]) == 2
    err = capsys.readouterr().err
    assert f"no directord answering on {tmp_path / 'default.sock'}" in err
    assert "could not be read as YAML, so the socket is the default one" in err


def silent_server(path: str, hang: bool) -> threading.Thread:
    """Accept one connection on ``path``, read the request, then hang up (``hang`` false) or
    keep the connection open 5 s without answering."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    def serve():
        with listener:
            conn, _ = listener.accept()
            with conn:
                conn.recv(1024)
                if hang:
                    time.sleep(5)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("hang", [False, True])
async def test_a_daemon_that_does_not_answer_is_exit_3(tmp_path, hang):
    path = str(tmp_path / "silent.sock")
    silent_server(path, hang)
    rc, _, err = await directord("reload", "--control-socket", path, "--timeout", "0.5")
    assert rc == 3, err
    assert "gave no answer" in err and ("within 0.5 s" in err) == hang


async def test_sighup_and_requests_at_once_never_overlap_and_share_the_next_load(running, monkeypatch):
    """While one load runs, a SIGHUP and three `directord reload` wait for it, then share one more load."""
    cfg, sock, daemon = running
    real_load, real_queue = daemon_module.load_prepared, daemon._queue_reload
    state = {"running": 0, "most": 0, "loads": 0, "asked": 0}
    lock = threading.Lock()
    gate = threading.Event()  # holds the first load until every request has been made

    def slow_load(*args, **kwargs):
        with lock:
            state["running"] += 1
            state["loads"] += 1
            state["most"] = max(state["most"], state["running"])
        try:
            gate.wait(30)
            time.sleep(0.05)
            return real_load(*args, **kwargs)
        finally:
            with lock:
                state["running"] -= 1

    def counted_queue():
        state["asked"] += 1
        return real_queue()

    monkeypatch.setattr(daemon_module, "load_prepared", slow_load)
    monkeypatch.setattr(daemon, "_queue_reload", counted_queue)
    first = asyncio.create_task(daemon.reload_report())
    others = [asyncio.create_task(directord("reload", "--control-socket", sock)) for _ in range(3)]
    while state["loads"] == 0:
        await asyncio.sleep(0.01)
    os.kill(os.getpid(), signal.SIGHUP)
    try:
        for _ in range(3000):
            if state["asked"] == 5:
                break
            await asyncio.sleep(0.01)
        assert state["asked"] == 5, state
    finally:
        gate.set()
    results = await asyncio.gather(first, *others)
    assert results[0]["ok"] is True
    assert [rc for rc, _, _ in results[1:]] == [0, 0, 0], results
    assert state["most"] == 1
    assert state["loads"] == 2


def test_the_refusal_text_is_bounded_and_counts_what_it_leaves_out():
    many = ConfigError([ConfigIssue("d.yaml", n, 1, f"f{n}", "bad") for n in range(1, 501)])
    lines = refusal_text("d.yaml", many).splitlines()
    assert lines[0] == "d.yaml:1:1: f1: bad" and len(lines) == 52
    assert lines[-2] == "... and 450 more problems (directord check lists them all)"
    assert lines[-1] == "d.yaml: 500 errors"
    long = ConfigError([ConfigIssue("d.yaml", n, 1, "f" * 300, "x" * 2000) for n in range(1, 41)])
    text = refusal_text("d.yaml", long)
    assert len(text) <= MAX_REFUSAL_TEXT + 200
    assert text.splitlines()[-1] == "d.yaml: 40 errors" and "more problems" in text
    assert refusal_text("d.yaml", MemoryError()) == "d.yaml: cannot load the file: MemoryError: "


async def test_version_is_the_distribution_s():
    rc, out, _ = await directord("--version")
    assert rc == 0 and out == f"directord {importlib.metadata.version('directord')}\n"


def test_version_without_metadata_comes_from_the_source_tree(monkeypatch, capsys):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    import tomllib

    expected = tomllib.loads(Path(SOURCE_TREE, "pyproject.toml").read_text())["project"]["version"]
    assert capsys.readouterr().out == f"directord {expected} (source tree)\n"
