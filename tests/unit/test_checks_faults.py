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
    # behind (here its interpreter's wrapper starts it): end of file never comes; the death of
    # the child must still be seen, logged and answered with a new child
    holder = tmp_path / "holder"
    wrapper = script(tmp_path / "python", f'sleep 60 &\necho $! >> {holder}\nexec {sys.executable} "$@"\n')
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
