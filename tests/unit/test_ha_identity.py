"""Tests of the node lock (ha.identity.lock_node) and its use by ha.service: one process per node.

Two daemons on one configuration would share the node's uuid; the lock
refuses the second one. The lock tests use real processes (a second Python
interpreter holds the lock); the service test runs HAService in a network
namespace made here, with a unicast medium on that namespace's loopback.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from director.lab import netns as N
from ha.identity import (
    IdentityError,
    NodeLockedError,
    generation_path,
    load_identity,
    lock_node,
    lock_path,
    uuid_path,
)
from ha.model import HAConfig, Medium, Timers
from ha.service import HAService, HAStartError

HOLDER = """
import sys
from ha.identity import lock_node
lock = lock_node(sys.argv[1], sys.argv[2])
print("locked", flush=True)
sys.stdin.read()
"""


def _holder(state: Path, node: str, cwd: Path) -> subprocess.Popen:
    """A second process holding ``node``'s lock until its stdin closes (or it is killed)."""
    proc = subprocess.Popen(
        [sys.executable, "-I", "-c", HOLDER, str(state), node],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line != "locked\n":
        proc.kill()
        proc.wait(10)
        raise AssertionError(f"the holder did not take the lock: {line!r}")
    return proc


def test_a_second_process_is_refused_naming_the_lock_file_and_the_holder(tmp_path: Path):
    state = tmp_path / "state"
    proc = _holder(state, "dir1", tmp_path)
    try:
        with pytest.raises(NodeLockedError) as info:
            lock_node(state, "dir1")
        err = info.value
        assert err.pid == proc.pid and err.path == lock_path(state, "dir1") == str(state / "dir1.lock")
        assert str(err).startswith(f"{state / 'dir1.lock'}: ") and f"process {proc.pid}" in str(err)
        assert isinstance(err, IdentityError)
        # the other node of a lab host shares the state directory, not the lock
        with lock_node(state, "dir2") as other:
            assert other.held
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(10) == 0
    # the holder is gone: its lock went with it
    lock = lock_node(state, "dir1")
    assert (state / "dir1.lock").read_text() == f"{os.getpid()}\n"
    lock.release()
    lock.release()  # idempotent
    assert not lock.held and (state / "dir1.lock").read_text() == ""


def test_a_killed_holder_leaves_no_stale_lock(tmp_path: Path):
    state = tmp_path / "state"
    proc = _holder(state, "dir1", tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert (state / "dir1.lock").read_text() == f"{proc.pid}\n"  # the pid stays, the lock does not
    with lock_node(state, "dir1") as lock:
        assert lock.held


def test_programs_started_while_locked_do_not_inherit_the_lock(tmp_path: Path):
    state = tmp_path / "state"
    lock = lock_node(state, "dir1")
    child = subprocess.Popen([sys.executable, "-I", "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        lock.release()
        proc = _holder(state, "dir1", tmp_path)  # would block on the child's inherited descriptor
        assert proc.stdin is not None
        proc.stdin.close()
        assert proc.wait(10) == 0
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(10)


def test_a_lock_file_that_is_not_a_regular_file_is_refused(tmp_path: Path):
    state = tmp_path / "state"
    state.mkdir()
    target = tmp_path / "elsewhere"
    (state / "dir1.lock").symlink_to(target)
    with pytest.raises(IdentityError, match="symbolic link") as info:
        lock_node(state, "dir1")
    assert info.value.path == str(state / "dir1.lock") and not target.exists()
    (state / "dir2.lock").mkdir()
    with pytest.raises(IdentityError) as info:
        lock_node(state, "dir2")
    assert info.value.path == str(state / "dir2.lock")
    os.mkfifo(state / "dir3.lock")
    with pytest.raises(IdentityError, match="not a regular file"):
        lock_node(state, "dir3")
    with pytest.raises(ValueError):
        lock_node(state, "../dir1")


# --- the service -------------------------------------------------------------------------------

PREFIX = f"hid{os.getpid()}"


@pytest.fixture
def netns():
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    ns = f"{PREFIX}-a"
    N.cleanup_netns(PREFIX)
    try:
        N.create_netns(ns)
    except OSError as err:
        N.cleanup_netns(PREFIX)
        pytest.skip(f"cannot create network namespaces: {err}")
    try:
        yield ns
    finally:
        N.cleanup_netns(PREFIX)


def _config(tmp_path: Path) -> HAConfig:
    keys = tmp_path / "authkeys"
    keys.write_text("auth 1\n1 sha1 identity-test-key\n")
    keys.chmod(0o600)
    return HAConfig(
        node="dir1",
        nodes=("dir1", "dir2"),
        media=(Medium("ucast", "lo", peer="127.0.0.2"),),
        authkeys=str(keys),
        timers=Timers(keepalive=0.1, warntime=0.3, deadtime=0.5, initdead=0.5),
        groups=(),
        state_dir=str(tmp_path / "state"),
        announce_repeats=0,
        line=3,
    )


def test_a_second_service_on_one_node_is_refused_and_stop_releases_the_lock(netns: str, tmp_path: Path):
    cfg = _config(tmp_path)
    seen: dict = {}

    async def go() -> None:
        first = HAService(cfg, config_file="/etc/d.yaml", check_environment=False)
        await first.start()
        try:
            seen["generation"] = Path(generation_path(cfg.state_dir, "dir1")).read_text()
            second = HAService(cfg, config_file="/etc/d.yaml", check_environment=False)
            with pytest.raises(HAStartError) as info:
                await second.start()
            seen["error"] = str(info.value)
            await second.stop()
            # the refused one touched nothing: the running one's generation stands
            seen["generation_after"] = Path(generation_path(cfg.state_dir, "dir1")).read_text()
            seen["state"] = first.snapshot()["state"]
        finally:
            await first.stop()
        third = HAService(cfg, config_file="/etc/d.yaml", check_environment=False)
        await third.start()
        await third.stop()
        seen["released"] = Path(lock_path(cfg.state_dir, "dir1")).read_text()

    N.call_in_netns(netns, lambda: asyncio.run(go()))
    lock_file = lock_path(cfg.state_dir, "dir1")
    assert seen["error"].startswith("/etc/d.yaml: ha.state_dir: " + lock_file + ": "), seen["error"]
    assert f"process {os.getpid()}" in seen["error"] and "already running" in seen["error"]
    assert seen["generation_after"] == seen["generation"]
    assert seen["state"] != "stopped"
    assert seen["released"] == ""
    # started twice in all: the generation grew once per started service, not for the refused one
    assert load_identity(cfg.state_dir, "dir1").generation == int(seen["generation"]) + 2


# --- reading the identity files ----------------------------------------------------------------


def test_identity_files_that_are_not_regular_are_errors_not_hangs(tmp_path: Path):
    state = tmp_path / "state"
    load_identity(state, "dir1")
    uuid_file = Path(uuid_path(state, "dir1"))
    uuid_file.unlink()
    os.mkfifo(uuid_file)
    box: list = []

    def load() -> None:
        try:
            box.append(load_identity(state, "dir1"))
        except Exception as exc:  # noqa: BLE001  # the test inspects it
            box.append(exc)

    t = threading.Thread(target=load, daemon=True)
    t.start()
    t.join(10)
    if t.is_alive():  # blocked in open(): unblock it, then fail
        os.close(os.open(uuid_file, os.O_WRONLY | os.O_NONBLOCK))
        t.join(10)
        pytest.fail("load_identity blocked on a FIFO uuid file")
    err = box[0]
    assert isinstance(err, IdentityError) and err.path == str(uuid_file) and "FIFO" in str(err)
    uuid_file.unlink()
    uuid_file.write_bytes(b"u" * 16)
    gen_file = Path(generation_path(state, "dir1"))
    gen_file.write_text("1" * 5000)
    with pytest.raises(IdentityError, match="too large") as info:
        load_identity(state, "dir1")
    assert info.value.path == str(gen_file)


def test_a_second_daemon_on_the_same_configuration_exits_naming_the_lock(netns: str, tmp_path: Path):
    """Two ``directord run`` with one configuration, only the control socket differs (defect scenario)."""
    from hapair import Director, write_authkeys

    keys = write_authkeys(tmp_path / "authkeys")
    kw = {
        "media": ["ucast lo 127.0.0.2"],
        "resources": [],
        "keepalive": 0.1,
        "warntime": 0.3,
        "deadtime": 0.5,
        "initdead": 0.5,
    }
    first = Director(None, "dir1", tmp_path, keys, netns=netns, **kw)
    second = Director(None, "dir1", tmp_path, keys, netns=netns, **kw)
    second.socket = str(tmp_path / "second.sock")
    lock_file = tmp_path / "dir1" / "state" / "dir1.lock"
    try:
        first.start()
        deadline = 20.0
        while (first.try_status() or {}).get("state") in (None, "starting"):
            assert first.running() and deadline > 0, first.tail()
            time.sleep(0.1)
            deadline -= 0.1
        generation = Path(generation_path(tmp_path / "dir1" / "state", "dir1")).read_text()
        assert first.proc is not None
        second.start()
        assert second.wait(20) == 1, second.tail()
        log = first.tail(20000)
        # refused by the daemon's own lock (global.state_dir, this network namespace) before the
        # HA node's lock (lock_node, tested above) is reached
        assert (
            "another directord runs on this state directory in this network namespace: "
            f"process {first.proc.pid} holds this lock" in log
        )
        assert first.running() and first.try_status() is not None
        assert Path(generation_path(tmp_path / "dir1" / "state", "dir1")).read_text() == generation
        first.signal(signal.SIGTERM)
        assert first.wait(20) == 0, first.tail()
        assert lock_file.read_text() == ""
    finally:
        first.kill()
        second.kill()
