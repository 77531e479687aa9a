"""Notify hooks: which hooks an event runs and with what environment (pure), the runner process
(real programs: exit status, output, timeouts, daemons left behind), the dispatcher's lanes and
bounds, and `directord run` itself: a hook's daemon outlives the hook and the director's orphan
sweep, and service and reload events reach their hooks."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from test_checks_faults import alive, script

from director.events import (
    Envelope,
    HealthChanged,
    HookFinished,
    HooksDropped,
    ReloadAccepted,
    ServiceDown,
)
from director.hooks import dispatcher as dispatcher_module
from director.hooks.dispatcher import RUNNER, HookDispatcher
from director.hooks.plan import HOOK_PATH, MAX_VALUE, hook_environment, lane, matching
from director.model import Hook, NotifySettings
from ha.events import GroupAcquired, GroupReleased

REPO = Path(__file__).resolve().parents[2]


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[1])


async def wait_for(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met in {timeout} s")
        await asyncio.sleep(0.02)


def envelope(event, seq: int = 7, at: float = 1700000000.25) -> Envelope:
    return Envelope(seq, at, event)


# --- which hooks, in which lane, with which environment (pure) ------------------------------

HEALTH = HealthChanged("rs 10.0.1.1:80 of web", "web", "10.0.1.1:80", "up", "down", "connect refused")


def test_an_event_runs_its_hooks_in_file_order_and_only_those_of_its_service():
    a = Hook(frozenset({"check.health"}), ("/bin/a",), name="a")
    b = Hook(frozenset({"check.health", "service.down"}), ("/bin/b",), name="b", service="web")
    c = Hook(frozenset({"check.health"}), ("/bin/c",), name="c", service="mail")
    d = Hook(frozenset({"ha.acquired"}), ("/bin/d",), name="d")
    e = Hook(frozenset({"check.health"}), ("/bin/e",), name="e")
    notify = NotifySettings(hooks=(a, b, c, d, e))
    run = matching(notify, envelope(HEALTH))
    assert run is not None
    assert [hook.name for hook, _ in run.steps] == ["a", "b", "e"]
    assert (run.lane, run.kind, run.seq) == ("general", "check.health", 7)
    assert matching(notify, envelope(ReloadAccepted("/etc/x.yaml", 3))) is None
    ha = matching(notify, envelope(GroupAcquired("dir1: 10.0.0.100/24/eth0")))
    assert ha is not None and ha.lane == "ha" and [h.name for h, _ in ha.steps] == ["d"]
    assert lane("ha.released") == "ha" and lane("service.down") == "general"


def test_the_environment_is_the_event_and_nothing_of_the_daemons():
    hook = Hook(frozenset({"check.health"}), ("/bin/a",), name="notify-a")
    run = matching(NotifySettings(hooks=(hook,)), envelope(HEALTH))
    assert run is not None
    assert dict(run.steps[0][1]) == {
        "PATH": HOOK_PATH,
        "DIRECTORD_EVENT": "check.health",
        "DIRECTORD_SEQ": "7",
        "DIRECTORD_TIME": "1700000000.250000",
        "DIRECTORD_MESSAGE": "rs 10.0.1.1:80 of web down: connect refused",
        "DIRECTORD_HOOK": "notify-a",
        "DIRECTORD_NAME": "rs 10.0.1.1:80 of web",
        "DIRECTORD_SERVICE": "web",
        "DIRECTORD_REAL_SERVER": "10.0.1.1:80",
        "DIRECTORD_OLD": "up",
        "DIRECTORD_NEW": "down",
        "DIRECTORD_REASON": "connect refused",
    }


def test_role_events_carry_keepalived_style_roles_and_values_are_bounded():
    hook = Hook(frozenset({"ha.acquired", "ha.released"}), ("/bin/a",), name="a")
    acquired = matching(NotifySettings(hooks=(hook,)), envelope(GroupAcquired("dir1: 10.0.0.100/24/eth0")))
    released = matching(NotifySettings(hooks=(hook,)), envelope(GroupReleased("dir1: 10.0.0.100/24/eth0")))
    assert acquired is not None and released is not None
    assert acquired.steps[0][1]["DIRECTORD_ROLE"] == "active"
    assert acquired.steps[0][1]["DIRECTORD_GROUP"] == "dir1: 10.0.0.100/24/eth0"
    assert released.steps[0][1]["DIRECTORD_ROLE"] == "standby"
    env = hook_environment(hook, {"kind": "x", "seq": 1, "at": 1.0, "message": "m", "reason": "a\0b" + "c" * 9000})
    assert env["DIRECTORD_REASON"] == ("ab" + "c" * 9000)[:MAX_VALUE]
    assert all("\0" not in v for v in env.values())


# --- the runner process ---------------------------------------------------------------------


class RunnerClient:
    """A runner started directly (not through setsid) on a socket pair, for its own tests."""

    def __init__(self) -> None:
        self.sock, theirs = socket.socketpair()
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", RUNNER, str(theirs.fileno())], pass_fds=[theirs.fileno()]
        )
        theirs.close()
        self.file = self.sock.makefile("rb")

    def send(self, **request) -> None:
        request.setdefault("env", {"PATH": HOOK_PATH})
        self.sock.sendall(json.dumps(request).encode() + b"\n")

    def answers(self, count: int) -> dict:
        return {a["id"]: a for a in (json.loads(self.file.readline()) for _ in range(count))}

    def close(self) -> int:
        self.file.close()
        self.sock.close()
        return self.proc.wait(20)


def test_the_runner_reports_status_output_and_timeouts(tmp_path):
    client = RunnerClient()
    try:
        started = time.monotonic()
        client.send(id=1, argv=["/bin/sh", "-c", 'echo "out $X"; echo err >&2; exit 3'], env={"X": "x1"}, timeout=5)
        client.send(id=2, argv=["/bin/sh", "-c", "sleep 30"], timeout=0.3)
        client.send(id=3, argv=["/bin/sh", "-c", "trap '' TERM; sleep 30"], timeout=0.3)
        client.send(id=4, argv=[str(tmp_path / "missing")], timeout=5)
        client.send(id=5, argv=["/bin/sh", "-c", "kill -USR1 $$"], timeout=5)
        client.send(id=6, argv=["/bin/sh", "-c", "head -c 100000 /dev/zero | tr '\\0' a; echo END"], timeout=5)
        client.sock.sendall(b"not json\n")
        got = client.answers(7)
        elapsed = time.monotonic() - started
    finally:
        assert client.close() == 0
    assert got[1]["result"] == "exit 3" and got[1]["output"] == "out x1\nerr\n" and got[1]["pid"] > 0
    assert got[2]["result"] == "timeout" and 0.3 <= got[2]["seconds"] < 2
    # SIGTERM ignored: SIGKILL follows after the grace
    assert got[3]["result"] == "timeout" and got[3]["seconds"] >= 2.0
    assert got[4]["result"] == "not run" and "No such file" in got[4]["error"]
    assert got[5]["result"] == "signal 10"
    assert got[6]["result"] == "exit 0" and len(got[6]["output"]) == 2048 and got[6]["output"].endswith("aaaEND\n")
    assert got[None]["result"] == "not run" and got[None]["error"].startswith("bad request")
    assert elapsed < 10


def test_a_daemon_a_hook_starts_keeps_its_pipe_and_lives_on(tmp_path):
    pidfile = tmp_path / "daemon.pid"
    client = RunnerClient()
    try:
        # the daemon keeps the hook's stdout: the answer must not wait for it
        client.send(id=1, argv=["/bin/sh", "-c", f"sleep 60 & echo $! > {pidfile}; echo started"], timeout=5)
        (answer,) = client.answers(1).values()
        assert answer["result"] == "exit 0" and answer["output"] == "started\n" and answer["seconds"] < 2
        daemon = int(pidfile.read_text())
        assert alive(daemon)
    finally:
        assert client.close() == 0  # end of file: the runner exits, the daemon is not its to kill
    try:
        time.sleep(0.2)
        assert alive(daemon)
    finally:
        os.kill(daemon, signal.SIGKILL)


def test_the_runner_lets_running_hooks_finish_after_the_director_is_gone(tmp_path):
    done = tmp_path / "done"
    client = RunnerClient()
    client.send(id=1, argv=["/bin/sh", "-c", f"sleep 0.5; touch {done}"], timeout=5)
    time.sleep(0.1)
    assert client.close() == 0
    assert done.exists()


# --- the dispatcher (real runner) -----------------------------------------------------------


class Published(list):
    def __call__(self, event) -> None:
        self.append(event)

    def finished(self) -> list[HookFinished]:
        return [e for e in self if isinstance(e, HookFinished)]


async def test_ha_hooks_run_one_at_a_time_in_event_order_and_others_up_to_the_limit(tmp_path):
    log = tmp_path / "log"
    slow = script(tmp_path / "slow", f'echo "start $DIRECTORD_EVENT $DIRECTORD_SEQ" >> {log}; sleep 0.4\n'
                  f'echo "end $DIRECTORD_EVENT $DIRECTORD_SEQ" >> {log}\n')  # fmt: skip
    hooks = (
        Hook(frozenset({"ha.acquired", "ha.released"}), (str(slow),), name="role"),
        Hook(frozenset({"check.health"}), (str(slow),), name="health"),
    )
    published = Published()
    dispatcher = HookDispatcher(NotifySettings(hooks=hooks, max_running=2), published)
    try:
        dispatcher.offer(envelope(GroupAcquired("g"), seq=1))
        dispatcher.offer(envelope(GroupReleased("g"), seq=2))
        for seq in range(3, 7):
            dispatcher.offer(envelope(HEALTH, seq=seq))
        assert dispatcher.queued + dispatcher.running == 6
        await wait_for(lambda: len(published.finished()) == 6, timeout=20, what="six hooks")
    finally:
        await dispatcher.close()
    lines = log.read_text().split("\n")[:-1]
    # the released hook starts only after the acquired one ended
    assert lines.index("start ha.released 2") > lines.index("end ha.acquired 1")
    running = peak = 0
    for line in lines:
        if "check.health" in line:
            running += 1 if line.startswith("start") else -1
            peak = max(peak, running)
    assert peak == 2
    assert {e.result for e in published.finished()} == {"exit 0"}
    assert dispatcher.results == {"exit 0": 6}


async def test_the_runner_starts_with_the_hooks_not_at_the_first_event(tmp_path):
    hook = Hook(frozenset({"ha.acquired"}), (str(script(tmp_path / "h", "exit 0\n")),), name="h")
    dispatcher = HookDispatcher(NotifySettings(), Published())
    try:
        dispatcher.update(NotifySettings())
        await asyncio.sleep(0.2)
        assert not dispatcher.runner_running  # no hooks: no runner
        dispatcher.update(NotifySettings(hooks=(hook,)))
        await wait_for(lambda: dispatcher.runner_running, timeout=20, what="the runner")
    finally:
        await dispatcher.close()


async def test_a_full_queue_drops_and_reports_and_an_untrusted_program_is_not_run(tmp_path, monkeypatch):
    monkeypatch.setattr(dispatcher_module, "MAX_QUEUED", 2)
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    untrusted = script(open_dir / "hook", "exit 0\n")
    slow = script(tmp_path / "slow", "sleep 0.3\n")
    hooks = (
        Hook(frozenset({"check.health"}), (str(slow),), name="slow"),
        Hook(frozenset({"service.down"}), (str(untrusted),), name="untrusted"),
    )
    published = Published()
    dispatcher = HookDispatcher(NotifySettings(hooks=hooks, max_running=1), published)
    try:
        for seq in range(1, 6):  # one runs, two wait, two are dropped
            dispatcher.offer(envelope(HEALTH, seq=seq))
        dropped = [e for e in published if isinstance(e, HooksDropped)]
        assert [(e.dropped, e.queued) for e in dropped] == [(1, 2)]
        await wait_for(lambda: len(published.finished()) == 3, timeout=20, what="three hooks")
        dispatcher.offer(envelope(ServiceDown("web", 2), seq=9))
        await wait_for(lambda: len(published.finished()) == 4, timeout=20, what="four hooks")
    finally:
        await dispatcher.close()
    (refused,) = [e for e in published.finished() if e.hook == "untrusted"]
    assert refused.result == "not run" and "writable" in (refused.error or "")
    assert str(refused).startswith("hook untrusted (service.down): not run")


# --- `directord run` ------------------------------------------------------------------------

DAEMON_CONFIG = """\
global:
  state_dir: {state}
virtual_services:
  - name: web
    address: 127.0.0.100
    port: 80
    protocol: tcp
    forwarding: nat
    check: {{type: tcp, interval: 0.1, timeout: 0.5, rise: 1, fall: 1}}
    real_servers:
      - {{address: 127.0.0.1, port: {port}}}
notify:
  hooks:
    - name: env
      events: [service.down, service.up, config.reloaded]
      command: [{record}]
    - name: starts-a-daemon
      events: [service.down]
      service: web
      command: [{starter}]
"""


async def test_directord_run_hooks_see_their_events_and_their_daemons_outlive_the_sweep(tmp_path):
    # `directord run` kills every process it adopts (what external checks leave behind): a
    # daemon a hook starts must not be one of them
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]  # not listening yet: the real server is down
    events = tmp_path / "events"
    record = script(tmp_path / "record", f'echo "$DIRECTORD_EVENT $DIRECTORD_SERVICE $DIRECTORD_UP" >> {events}\n')
    pidfile = tmp_path / "daemon.pid"
    starter = script(tmp_path / "starter", f"sleep 300 </dev/null >/dev/null 2>&1 &\necho $! > {pidfile}\n")
    cfg = tmp_path / "directord.yaml"
    cfg.write_text(DAEMON_CONFIG.format(state=tmp_path / "state", port=port, record=record, starter=starter))
    log = tmp_path / "daemon.log"
    with open(log, "wb") as out:
        director = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "director.cli", "run", "-c", str(cfg), "--control-socket", str(tmp_path / "sock"),
            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=out, stderr=out,
        )  # fmt: skip
    daemon = None
    try:
        await wait_for(pidfile.exists, timeout=30, what="the service.down hook")
        await wait_for(lambda: pidfile.read_text().strip() != "", timeout=5)
        daemon = int(pidfile.read_text())
        await asyncio.sleep(1.0)  # ten orphan sweeps of the director
        assert alive(daemon), log.read_text()[-3000:]
        assert parent_of(daemon) != director.pid
        listener.listen(8)  # the real server comes up: service.up
        await wait_for(lambda: "service.up" in events.read_text(), timeout=15, what="service.up")
        director.send_signal(signal.SIGHUP)
        await wait_for(lambda: "config.reloaded" in events.read_text(), timeout=15, what="config.reloaded")
        assert events.read_text().split("\n")[:3] == ["service.down web ", "service.up web 1", "config.reloaded  "]
        text = log.read_text()
        assert "hook starts-a-daemon (service.down): exit 0" in text
        assert "hook env (config.reloaded): exit 0" in text
        assert alive(daemon)
    finally:
        director.terminate()
        await asyncio.wait_for(director.wait(), 20)
        listener.close()
        if daemon is not None and alive(daemon):
            os.kill(daemon, signal.SIGKILL)
    assert director.returncode == 0


def test_a_hook_config_reaches_the_daemon_model(tmp_path):
    from director.config import parse_config

    hook = script(tmp_path / "hook", "exit 0\n")
    text = textwrap.dedent(f"""\
        notify:
          timeout: 12
          max_running: 3
          hooks:
            - events: [ha.acquired, ha.released]
              command: [{hook}, start]
            - name: one
              events: [config.refused]
              command: [{hook}]
              timeout: 2.5
        """)
    cfg = tmp_path / "d.yaml"
    cfg.write_text(text)
    notify = parse_config(text, str(cfg)).notify
    assert notify == NotifySettings(
        hooks=(
            Hook(frozenset({"ha.acquired", "ha.released"}), (str(hook), "start"), 12.0, None, "hook", 5),
            Hook(frozenset({"config.refused"}), (str(hook),), 2.5, None, "one", 7),
        ),
        max_running=3,
    )


@pytest.mark.parametrize(
    ("hooks", "message"),
    [
        ("- {events: [ha.aquired], command: [/bin/true]}", "unknown event 'ha.aquired'; did you mean 'ha.acquired'?"),
        ("- {events: [], command: [/bin/true]}", "must name at least one event"),
        ("- {events: [ha.acquired], command: [bin/true]}", "command must be an absolute path"),
        ("- {events: [ha.acquired], command: []}", "must be a non-empty list"),
        ("- {events: [ha.acquired], command: [/bin/true], timeout: 0}", "must be 0.1..3600 seconds"),
        ("- {events: [ha.acquired], command: [/bin/true], service: web}", "no virtual service is named 'web'"),
        ("- {events: [ha.acquired], command: [/bin/true], name: 'a b'}", "must be 1-64 letters"),
        ("- {events: [ha.acquired], command: [/bin/true], when: x}", "unknown key 'when'"),
    ],
)
def test_bad_hooks_are_located_errors(tmp_path, hooks, message):
    from director.config import ConfigError, parse_config

    text = "notify:\n  hooks:\n    " + hooks + "\n"
    with pytest.raises(ConfigError) as err:
        parse_config(text, "/etc/directord/d.yaml")
    (issue,) = err.value.issues
    assert issue.line == 3 and message in issue.message, issue
