"""External check: run a command; exit status 0 means the real server is up.

The command is ``spec.command`` followed by four arguments, VIP, virtual port,
RIP and checked port (ldirectord's ``checktype = external`` convention; an
empty string stands for the VIP of a fwmark service).  It runs without a shell,
in a session of its own (so it leads its own process group), with stdin and
stdout on ``/dev/null``; the last line of its stderr goes into the reason.

When the check is cancelled -- by the time limit of `checks.base.run_check` or
by the engine stopping -- the whole process group gets ``SIGKILL`` and the
command is reaped before the cancellation goes on.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from checks.base import CheckTarget

__all__ = ["check_external", "STDERR_TAIL"]

#: Bytes of the command's stderr kept (the end of it) to find the last line.
STDERR_TAIL = 4096


def _last_line(data: bytes) -> str:
    for line in reversed(data.decode("utf-8", errors="replace").splitlines()):
        line = line.strip()
        if line:
            return line[:160]
    return ""


def _kill_group(process: asyncio.subprocess.Process) -> None:
    """SIGKILL the command's process group (it is the group leader)."""
    if process.returncode is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:
            process.kill()
        except ProcessLookupError:
            pass


async def check_external(target: CheckTarget) -> tuple[bool, str]:
    """Run ``spec.command VIP VPORT RIP RPORT`` and judge its exit status.

    Returns:
        ``(True, "exit 0")``, ``(False, "exit 1: <last stderr line>")``,
        ``(False, "killed by SIGSEGV")``, ``(False, "command not found: <path>")``,
        ``(False, "no command configured")``.

    Raises:
        OSError: the command could not be started for another reason; the
            caller turns it into a failed result.
    """
    command = target.spec.command
    if not command:
        return False, "no command configured"
    argv = (*command, target.vip or "", str(target.vport), target.rip, str(target.rport))
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            close_fds=True,
        )
    except FileNotFoundError:
        return False, f"command not found: {command[0]}"
    except PermissionError:
        return False, f"command not executable: {command[0]}"
    try:
        tail = b""
        assert process.stderr is not None
        while chunk := await process.stderr.read(STDERR_TAIL):
            tail = (tail + chunk)[-STDERR_TAIL:]
        code = await process.wait()
    except BaseException:
        _kill_group(process)
        await _reap(process)
        raise
    if code == 0:
        return True, "exit 0"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        reason = f"killed by {name}"
    else:
        reason = f"exit {code}"
    last = _last_line(tail)
    return False, f"{reason}: {last}" if last else reason


async def _reap(process: asyncio.subprocess.Process) -> None:
    """Wait for a killed command, even if our task is cancelled meanwhile."""
    waiter = asyncio.ensure_future(process.wait())
    try:
        await asyncio.shield(waiter)
    except asyncio.CancelledError:
        # Cancelled again while reaping: the process has SIGKILL already, so
        # the wait ends soon; let it finish on its own and go on cancelling.
        pass
