"""Fault and abuse suite of the checker (host part): external check commands that leave
background processes, daemonise, ignore signals and write without end, run by a real
checker child; and the death of the checker child itself.

Every process a command starts records its pid in a file, so the test can tell whether any
of them survived.
"""

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

import pytest

from checks.base import CheckTarget
from checks.process import LOOP_ENV, CheckerProcess
from checks.spec import CheckSpec


def script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def alive(pid: int) -> bool:
    """The process runs (exists and is not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def recorded(pids: Path) -> set[int]:
    try:
        return {int(p) for p in pids.read_text().split()}
    except FileNotFoundError:
        return set()


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def abusive_targets(tmp_path: Path) -> tuple[dict, Path]:
    """Targets whose external check commands misbehave; every process they start appends its
    pid to the returned file."""
    pids = tmp_path / "pids"
    record = f"echo $$ >> {pids}"
    commands = {
        # exits at once, leaving a background child that holds its stderr (and, before, the
        # checker's socket to the director)
        "background": script(tmp_path / "bg.sh", f"{record}\nsleep 30 &\necho $! >> {pids}\nexit 0\n"),
        # a daemon: a session of its own, out of the command's process group
        "daemon": script(
            tmp_path / "daemon.sh",
            f"{record}\nsetsid sh -c 'echo $$ >> {pids}; exec sleep 30' &\nsleep 0.05\nexit 0\n",
        ),
        # ignores the polite signals, with a child doing the same, and outlives the time limit
        "stubborn": script(
            tmp_path / "stubborn.sh",
            f"trap '' TERM INT HUP\n{record}\n(trap '' TERM INT HUP; exec sleep 30) &\necho $! >> {pids}\nsleep 30\n",
        ),
        # writes to stderr without end
        "flood": script(tmp_path / "flood.sh", f"{record}\nexec yes 'flooding stderr' >&2\n"),
    }
    targets = {
        name: CheckTarget(
            name,
            f"rs {name}",
            "10.0.0.1",
            80,
            "10.0.0.2",
            80,
            CheckSpec(
                type="external", interval=0.3, retry_interval=0.3, timeout=0.5, rise=1, fall=1, command=(str(cmd),)
            ),
        )  # fmt: skip
        for name, cmd in commands.items()
    }
    return targets, pids


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
async def test_abusive_commands_leave_no_process_and_no_descriptor(tmp_path, monkeypatch, loop):
    monkeypatch.setenv(LOOP_ENV, loop)
    targets, pids = abusive_targets(tmp_path)
    seen = []
    checker = CheckerProcess(seen.append)
    checker.update(targets)
    await checker.start()
    try:
        await wait_for(lambda: {t.key for t in seen} == set(targets))
        assert {t.key: t.new for t in seen} == {"background": "up", "daemon": "up", "stubborn": "down",
                                                 "flood": "down"}  # fmt: skip
        pid = checker.pid
        assert pid is not None
        early = []
        for _ in range(10):  # about 1 s: three rounds of checks
            early.append(fd_count(pid))
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
        late = []
        for _ in range(10):
            late.append(fd_count(pid))
            await asyncio.sleep(0.1)
        # a running check holds 2 descriptors (its stderr pipe and a pidfd); 4 run at most
        assert max(late) <= min(early) + 8, (early, late)
        # what finished checks left behind is gone: at most the processes of the running checks
        # (2 each) and a daemon not swept yet live
        live = {p for p in recorded(pids) if alive(p)}
        assert len(recorded(pids)) > 8 and len(live) <= 10, (len(recorded(pids)), live)
        assert checker.restarts == 0
    finally:
        await checker.stop()
    await wait_for(lambda: not any(alive(p) for p in recorded(pids)), timeout=5)


async def test_killed_checker_is_noticed_and_replaced_although_its_socket_stays_open(tmp_path, caplog):
    # the checker child's socket to the director is inherited by a process the child leaves
    # behind (here its interpreter's wrapper starts it, in a subshell that exits: the holder is
    # not the child's own, which the child would kill, but in its session): end of file never
    # comes; the death of the child must still be seen, logged and answered with a new child
    holder = tmp_path / "holder"
    wrapper = script(tmp_path / "python", f'(sleep 60 & echo $! >> {holder})\nexec {sys.executable} "$@"\n')
    targets, pids = abusive_targets(tmp_path)
    caplog.set_level(logging.INFO, logger="directord.checks")
    seen = []
    checker = CheckerProcess(seen.append, python=str(wrapper), restart_delay=0.1)
    checker.update({name: targets[name] for name in ("background", "stubborn")})
    await checker.start()
    try:
        await wait_for(lambda: len(seen) == 2)
        first = checker.pid
        assert first is not None
        await wait_for(lambda: any(alive(p) for p in recorded(pids)))  # a stubborn check runs
        os.kill(first, signal.SIGKILL)
        left = recorded(pids) | recorded(holder)
        await wait_for(lambda: checker.restarts == 1 and checker.pid not in (None, first))
        assert f"checker process {first} exited (status -9); starting another" in caplog.text
        # the new child checks again: its first results are reported again
        await wait_for(lambda: len(seen) == 4)
        assert {t.key: t.new for t in seen[2:]} == {"background": "up", "stubborn": "down"}
        # what the dead child's session held (the socket holder, its running commands) is killed
        await wait_for(lambda: not any(alive(p) for p in left), timeout=5)
    finally:
        await checker.stop()
    await wait_for(lambda: not any(alive(p) for p in recorded(pids) | recorded(holder)), timeout=5)


DAEMON_CONFIG = """\
global:
  reconcile_interval: 5
virtual_services:
  - name: chain
    address: 127.0.0.100
    port: 80
    forwarding: nat
    check: {{type: external, command: [{command}, "6"], interval: 60, timeout: 5, rise: 1, fall: 1}}
    real_servers:
      - {{address: 127.0.0.1, port: 8001}}
"""


def children(pid: int) -> set[int]:
    found: set[int] = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/children") as fh:
            found.update(int(p) for p in fh.read().split())
    return found


async def test_daemons_of_a_killed_checker_are_killed_by_the_director(tmp_path):
    # an external check that daemonises a chain of processes, each in a session of its own (out
    # of the checker's session, which the director kills when the checker dies), and exits 3 s
    # later: the checker would adopt and kill the chain then; SIGKILLed before, the chain is
    # re-parented when the command is killed, to init unless the director of `directord run`
    # adopts it
    pids = tmp_path / "pids"
    chain = script(
        tmp_path / "chain.sh",
        f"echo $$ >> {pids}\n"
        f'if [ "$1" -gt 0 ]; then setsid {tmp_path}/chain.sh $(($1 - 1)) </dev/null >/dev/null 2>&1 & fi\n'
        'if [ "$1" = 6 ]; then sleep 3; exit 0; fi\nexec sleep 60\n',
    )
    cfg = tmp_path / "directord.yaml"
    cfg.write_text(DAEMON_CONFIG.format(command=chain))
    log = tmp_path / "daemon.log"
    source = str(Path(__file__).resolve().parents[2])
    with open(log, "wb") as out:
        daemon = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "director.cli", "run", "-c", str(cfg), "--control-socket", str(tmp_path / "sock"),
            env={**os.environ, "PYTHONPATH": source}, stdout=out, stderr=out,
        )  # fmt: skip
    try:
        await wait_for(lambda: len(recorded(pids)) == 7, timeout=30)  # the whole chain runs
        (checker,) = children(daemon.pid)
        before = recorded(pids)
        os.kill(checker, signal.SIGKILL)
        await wait_for(lambda: "exited (status -9)" in log.read_text(), timeout=10)
        # what the dead checker left is gone long before the chain's 60 s, without a zombie left
        # in the director
        await wait_for(lambda: not any(alive(p) for p in before), timeout=5)
        await wait_for(lambda: len(recorded(pids)) == 14, timeout=10)  # the new checker checks again
        assert children(daemon.pid) - before == children(daemon.pid) and len(children(daemon.pid)) == 1
        assert "left behind by external checks outside the checker's session" in log.read_text()
    finally:
        daemon.terminate()
        await asyncio.wait_for(daemon.wait(), 15)
        for pid in recorded(pids):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert not any(alive(p) for p in recorded(pids)), "left running after the daemon stopped"


async def test_a_daemonising_fork_bomb_is_cut_down_before_it_grows(tmp_path):
    # a binary tree of daemons, each in a session of its own, each starting its two children
    # 50 ms after it starts: 511 processes if nothing stops it; the checker kills each adopted
    # generation as it appears, long before the tree is grown
    pids = tmp_path / "pids"
    tree = script(
        tmp_path / "tree.sh",
        f"echo $$ >> {pids}\n"
        'if [ "$1" -gt 0 ]; then\n'
        "  sleep 0.05\n"
        f"  setsid {tmp_path}/tree.sh $(($1 - 1)) x </dev/null >/dev/null 2>&1 &\n"
        f"  setsid {tmp_path}/tree.sh $(($1 - 1)) x </dev/null >/dev/null 2>&1 &\n"
        "fi\n"
        'if [ "$2" = top ]; then sleep 0.06; exit 0; fi\n'
        "exec sleep 30\n",
    )
    spec = CheckSpec(type="external", interval=60, timeout=5, rise=1, fall=1, command=(str(tree), "8", "top"))
    seen = []
    checker = CheckerProcess(seen.append)
    checker.update({"bomb": CheckTarget("bomb", "rs bomb", "10.0.0.1", 80, "10.0.0.2", 80, spec)})
    await checker.start()
    try:
        await wait_for(lambda: len(seen) == 1)
        await asyncio.sleep(1.5)  # the tree would be whole after 0.5 s
        started = recorded(pids)
        assert len(started) < 100, len(started)
        await wait_for(lambda: not any(alive(p) for p in recorded(pids)), timeout=5)
    finally:
        await checker.stop()
        for pid in recorded(pids):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


async def test_a_hung_checker_is_killed_and_replaced(tmp_path, caplog):
    # a checker child that is alive but answers nothing (stopped here; deadlocked alike) used to
    # freeze every real server's health for good, silently
    targets, _ = abusive_targets(tmp_path)
    caplog.set_level(logging.INFO, logger="directord.checks")
    seen = []
    checker = CheckerProcess(seen.append, restart_delay=0.1, hang_limit=1.5)
    checker.update({"background": targets["background"]})
    await checker.start()
    try:
        await wait_for(lambda: len(seen) == 1 and checker._ready)
        await asyncio.sleep(1.0)  # pinged and answering: left alone
        first = checker.pid
        assert first is not None and checker.restarts == 0
        os.kill(first, signal.SIGSTOP)
        await wait_for(lambda: checker.restarts == 1 and checker.pid not in (None, first), timeout=10)
        assert f"checker process {first} has not answered for " in caplog.text
        assert f"checker process {first} exited (status -9); starting another" in caplog.text
        await wait_for(lambda: len(seen) == 2)  # the new child checks again
        assert not alive(first)
    finally:
        await checker.stop()


async def test_a_checker_that_hangs_before_it_is_ready_is_killed_and_replaced(tmp_path, caplog):
    # stopped before it could say "ready" (here by its own interpreter's wrapper): the pings only
    # begin after "ready", so only the start limit catches it
    targets, _ = abusive_targets(tmp_path)
    caplog.set_level(logging.INFO, logger="directord.checks")
    python = script(tmp_path / "python", f'kill -STOP $$\nexec {sys.executable} "$@"\n')
    checker = CheckerProcess(lambda t: None, python=str(python), restart_delay=0.1, start_limit=1.0)
    checker.update({"background": targets["background"]})
    await checker.start()
    try:
        first = checker.pid
        assert first is not None
        await wait_for(lambda: checker.restarts >= 1 and checker.pid not in (None, first), timeout=10)
        assert f"checker process {first} has not started its checks within 1 s (stopped or hung)" in caplog.text
        assert not alive(first)
    finally:
        await checker.stop()
