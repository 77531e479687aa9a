"""The director's side of the notify hooks: queues, lanes, the runner process, the results.

`HookDispatcher.offer` takes every envelope the daemon's bus publishes (synchronously, on the
event loop: a dictionary look-up per hook, no I/O) and queues the run of the hooks it asks for
(`director.hooks.plan.matching`).  Runs leave the queues as `director.hooks.plan` says: the HA
lane one at a time in event order, the general lane up to ``max_running`` at once.  At most
`MAX_QUEUED` runs wait; an event beyond that runs no hook, and the drops are published as one
`director.events.HooksDropped` at most every `DROP_REPORT` seconds.

Each hook goes to the runner process (`director.hooks.runner`), started at the first hook
through ``setsid --fork`` with the director's child-subreaper flag cleared for that moment, so
that the daemons hooks start live outside the director's tree and its orphan sweep
(`checks.process`).  Before every run the program is judged again as the configuration check
judges it (`checks.protocols.external.command_problem`).  Each result is published as a
`director.events.HookFinished` (its exit status, time, the end of its output).

Nothing here waits on a hook from the code that published the event: the HA service adds and
announces the addresses before it publishes ``ha.acquired``, and a slow hook only delays the
hooks queued behind it in its lane.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from checks.protocols.external import child_subreaper, command_problem, set_child_subreaper
from director.events import Envelope, Event, HookFinished, HooksDropped
from director.hooks.plan import HookRun, matching
from director.model import Hook, NotifySettings

__all__ = ["DROP_REPORT", "MAX_QUEUED", "RUNNER", "STOP_GRACE", "HookDispatcher"]

log = logging.getLogger("directord.hooks")

#: Runs waiting at most (both lanes together); beyond, an event runs no hook (counted).
MAX_QUEUED = 1000
#: Seconds between two `HooksDropped` events at most.
DROP_REPORT = 10.0
#: The runner's program (a file of this package, run by this Python in isolated mode).
RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "runner.py")
#: Seconds a hook's answer may come after its timeout (the runner's SIGKILL grace and more).
ANSWER_GRACE = 10.0
#: Seconds `HookDispatcher.close` waits for the hooks queued and in progress (the daemon's stop).
STOP_GRACE = 5.0
#: Characters of a hook's output kept in its event.
OUTPUT_SHOWN = 1000


class HookDispatcher:
    """Runs the notify hooks of ``notify`` for the events `offer` hands it.

    Args:
        notify: the ``notify:`` section (`update` replaces it on a reload).
        publish: where `HookFinished` and `HooksDropped` go (the daemon's bus).
        hold_sweep: a context manager factory under which the director's orphan sweep kills
            nothing (`checks.process.CheckerProcess.hold_sweep`), held while the runner starts.
    """

    def __init__(
        self,
        notify: NotifySettings,
        publish: Callable[[Event], None],
        hold_sweep: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext,
    ) -> None:
        self.notify = notify
        self._publish = publish
        self._hold_sweep = hold_sweep
        self._queues: dict[str, deque[HookRun]] = {"ha": deque(), "general": deque()}
        self._busy = {"ha": 0, "general": 0}
        self._tasks: set[asyncio.Task[None]] = set()
        self._dropped = 0
        self._drop_timer: asyncio.TimerHandle | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._starting: asyncio.Lock | None = None
        self._prestart: asyncio.Task[None] | None = None
        self._answers: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next_id = 0
        self._closed = False
        #: Hooks run, by result (``exit 0``, ``exit N``, ``signal N``, ``timeout``, ``not run``).
        self.results: dict[str, int] = {}

    @property
    def queued(self) -> int:
        """Runs waiting in both lanes."""
        return sum(len(q) for q in self._queues.values())

    @property
    def running(self) -> int:
        """Runs in progress in both lanes."""
        return sum(self._busy.values())

    def update(self, notify: NotifySettings) -> None:
        """Use ``notify`` from now on (a reload): queued runs keep the hooks they were made with.
        With hooks, the runner is started now if none runs, so that its start (an interpreter:
        seconds in an emulated VM) is not paid during a takeover."""
        self.notify = notify
        if notify.hooks and not self._closed and self._prestart is None and not self.runner_running:
            self._prestart = asyncio.get_running_loop().create_task(self._start_early(), name="hook runner start")
        self._pump()

    @property
    def runner_running(self) -> bool:
        """A runner is connected."""
        return self._writer is not None and not self._writer.is_closing()

    async def _start_early(self) -> None:
        try:
            await self._runner()
        except OSError as exc:
            log.warning("cannot start the hook runner: %s; retried at the first hook", exc)
        finally:
            self._prestart = None

    def offer(self, envelope: Envelope) -> None:
        """Queue the hooks ``envelope``'s event asks for (never raises, never waits)."""
        if self._closed or not self.notify.hooks:
            return
        try:
            run = matching(self.notify, envelope)
        except Exception:  # noqa: BLE001 - an event the hooks cannot describe must not stop the bus
            log.exception("cannot prepare the hooks of event %s", getattr(envelope.event, "kind", "?"))
            return
        if run is None:
            return
        if self.queued >= MAX_QUEUED:
            self._dropped += 1
            if self._drop_timer is None:
                self._report_drops()
            return
        self._queues[run.lane].append(run)
        self._pump()

    def _report_drops(self) -> None:
        if self._dropped:
            self._publish(HooksDropped(self._dropped, self.queued))
            self._dropped = 0
            self._drop_timer = asyncio.get_running_loop().call_later(DROP_REPORT, self._report_drops)
        else:
            self._drop_timer = None

    def _limit(self, lane: str) -> int:
        return 1 if lane == "ha" else self.notify.max_running

    def _pump(self) -> None:
        if self._closed:
            return
        for lane, queue in self._queues.items():
            while queue and self._busy[lane] < self._limit(lane):
                run = queue.popleft()
                self._busy[lane] += 1
                task = asyncio.get_running_loop().create_task(self._run(run), name=f"hooks of {run.kind}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _run(self, run: HookRun) -> None:
        try:
            for hook, env in run.steps:
                await self._run_hook(run, hook, dict(env))
        except Exception:  # noqa: BLE001 - a failure here must not stop the lane
            log.exception("hooks of %s failed", run.kind)
        finally:
            self._busy[run.lane] -= 1
            self._pump()

    async def _run_hook(self, run: HookRun, hook: Hook, env: dict[str, str]) -> None:
        started = time.monotonic()
        problem = await asyncio.to_thread(command_problem, hook.command[0])
        answer: dict[str, Any]
        if problem is not None:
            answer = {"result": "not run", "error": problem}
        else:
            answer = await self._ask(hook, env)
        result = str(answer.get("result", "not run"))
        self.results[result] = self.results.get(result, 0) + 1
        seconds = answer.get("seconds")
        self._publish(
            HookFinished(
                hook=hook.name,
                event=run.kind,
                event_seq=run.seq,
                result=result,
                seconds=float(seconds) if isinstance(seconds, int | float) else time.monotonic() - started,
                pid=answer.get("pid") if isinstance(answer.get("pid"), int) else None,
                output=str(answer.get("output") or "")[-OUTPUT_SHOWN:].strip(),
                error=str(answer["error"])[:OUTPUT_SHOWN] if answer.get("error") else None,
            )
        )

    async def _ask(self, hook: Hook, env: dict[str, str]) -> dict[str, Any]:
        """Have the runner run ``hook``; its answer (``result`` ``not run`` when it cannot)."""
        try:
            writer = await self._runner()
        except OSError as exc:
            return {"result": "not run", "error": f"cannot start the hook runner: {exc}"}
        self._next_id += 1
        request_id = self._next_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._answers[request_id] = future
        request = {"id": request_id, "argv": list(hook.command), "env": env, "timeout": hook.timeout}
        try:
            writer.write(json.dumps(request).encode() + b"\n")
            return await asyncio.wait_for(asyncio.shield(future), hook.timeout + ANSWER_GRACE)
        except (OSError, RuntimeError) as exc:
            return {"result": "not run", "error": f"hook runner unreachable: {exc}"}
        except TimeoutError:
            return {"result": "not run", "error": "the hook runner did not answer"}
        finally:
            self._answers.pop(request_id, None)

    async def _runner(self) -> asyncio.StreamWriter:
        """The connection to a running runner, started when there is none.

        Raises:
            OSError: it could not be started.
        """
        if self._writer is not None and not self._writer.is_closing():
            return self._writer
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._writer is not None and not self._writer.is_closing():
                return self._writer
            self._writer = await self._start_runner()
            return self._writer

    async def _start_runner(self) -> asyncio.StreamWriter:
        setsid = shutil.which("setsid", path="/usr/bin:/bin")
        if setsid is None:
            raise OSError("setsid(1) (util-linux) not found in /usr/bin or /bin")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with self._hold_sweep():
                subreaper = child_subreaper()
                if subreaper:
                    set_child_subreaper(False)
                try:
                    proc = await asyncio.create_subprocess_exec(
                        setsid,
                        "--fork",
                        sys.executable,
                        "-I",
                        "-S",
                        RUNNER,
                        str(theirs.fileno()),
                        pass_fds=(theirs.fileno(),),
                        stdin=asyncio.subprocess.DEVNULL,
                        stdout=asyncio.subprocess.DEVNULL,
                        cwd="/",
                    )
                    status = await proc.wait()  # setsid returns once it has forked
                finally:
                    if subreaper:
                        set_child_subreaper(True)
            if status != 0:
                raise OSError(f"setsid --fork exited {status}")
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours, limit=1 << 20)
        self._reader_task = asyncio.get_running_loop().create_task(self._read_answers(reader), name="hook runner")
        log.debug("hook runner started")
        return writer

    async def _read_answers(self, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                line = await reader.readline()
            except (ValueError, OSError, asyncio.LimitOverrunError):
                line = b""
            if not line:
                break
            try:
                answer = json.loads(line)
                future = self._answers.get(answer["id"])
            except (ValueError, KeyError, TypeError):
                continue
            if future is not None and not future.done():
                future.set_result(answer)
        if not self._closed:
            log.warning("the hook runner went away; a new one starts with the next hook")
        for future in self._answers.values():
            if not future.done():
                future.set_result({"result": "not run", "error": "the hook runner went away"})
        if self._writer is not None:
            self._writer.close()

    async def close(self, grace: float = STOP_GRACE) -> None:
        """Stop taking events; wait up to ``grace`` seconds for the runs queued and in progress
        (those of ``ha.released`` when the daemon stops), then drop the rest.  The runner lets
        the hooks it was given finish (each within its timeout) and then exits."""
        deadline = time.monotonic() + grace
        while (self.queued or self._tasks) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        self._closed = True
        for queue in self._queues.values():
            queue.clear()
        if self._drop_timer is not None:
            self._drop_timer.cancel()
        if self._writer is not None:
            self._writer.close()
        for task in list(self._tasks):
            task.cancel()
        extra = [t for t in (self._reader_task, self._prestart) if t is not None]
        for t in extra:
            t.cancel()
        await asyncio.gather(*self._tasks, *extra, return_exceptions=True)
