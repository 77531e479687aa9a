"""Weights that follow load: agent replies (HAProxy's agent-check), keepalived's dynamic external
weights, slow start, and how they reach the planner (pure) and the engine's transitions."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest

from checks.base import CheckResult, CheckTarget, run_check
from checks.engine import HealthEngine, Transition
from checks.protocols.agent import AgentReply, agent_weight, parse_agent_reply
from checks.spec import CheckSpec
from director.model import DestKey, RealServer, ServiceKey, VirtualService
from director.planner import desired_service
from director.weights import WeightBook, ramp_steps, slow_start_weight

# --- agent replies (pure) -----------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"75%\n", AgentReply("up", 75, None)),
        (b"up\n", AgentReply("up", None, "up")),
        (b"ready 50%\r\n", AgentReply("up", 50, "ready")),
        (b"drain\n", AgentReply("drain", None, "drain")),
        (b"MAINT\n", AgentReply("down", None, "maint")),
        (b"down 50%\n", AgentReply("down", 50, "down")),
        (b"50%,up\n", AgentReply("up", 50, "up")),
        (b"stopped\tmaxconn:30\n", AgentReply("down", None, "stopped")),
        (b"fail # disk full\n", AgentReply("down", None, "fail")),
        (b"# down\n", AgentReply()),
        (b"", AgentReply()),
        (b"\xff\xfe garbage 12.5% up\n", AgentReply("up", None, "up")),
        (b"up\ndown\n", AgentReply("up", None, "up")),  # only the first line counts
        (b"1234567%\n", AgentReply()),  # more than 6 digits: not a percentage
    ],
)
def test_agent_reply_words(line, reply):
    assert parse_agent_reply(line) == reply


@pytest.mark.parametrize(
    ("reply", "configured", "weight"),
    [
        (AgentReply("up", 50, None), 10, 5),
        (AgentReply("up", 25, None), 10, 3),  # 2.5 rounds half up
        (AgentReply("up", 1, None), 10, 1),  # above 0%: at least 1
        (AgentReply("up", 0, None), 10, 0),
        (AgentReply("up", 200, None), 10, 20),
        (AgentReply("up", 999999, None), 100, 65535),  # IPVS's maximum
        (AgentReply("drain", 80, "drain"), 10, 0),
        (AgentReply("up", None, "up"), 10, None),  # the configured weight
    ],
)
def test_agent_weight_is_a_share_of_the_configured_weight(reply, configured, weight):
    assert agent_weight(reply, configured) == weight


# --- slow start (pure) ---------------------------------------------------------------


def test_slow_start_ramps_from_1_in_at_most_ten_steps():
    seen = [slow_start_weight(100, t / 10, 10.0) for t in range(0, 101)]
    assert seen[0] == 1
    assert seen[-1] is None  # over: the configured weight
    ramp = [w for w in seen if w is not None]
    assert ramp == sorted(ramp)
    assert sorted(set(ramp)) == [1, 10, 20, 30, 40, 50, 60, 70, 80, 90]


def test_slow_start_of_small_weights_and_without_duration():
    assert ramp_steps(3) == 3
    assert [slow_start_weight(3, t, 3.0) for t in (0.0, 1.0, 2.0, 3.0)] == [1, 1, 2, None]
    assert slow_start_weight(1, 0.0, 10.0) is None  # nothing to ramp
    assert slow_start_weight(0, 0.0, 10.0) is None
    assert slow_start_weight(50, 0.0, 0.0) is None


S = ServiceKey(2, 6, "192.168.10.100", 80, 0)
D1, D2 = DestKey("10.0.0.1", 80), DestKey("10.0.0.2", 80)


def test_weight_book_overrides_only_what_differs():
    book = WeightBook()
    configured = {(S, D1): 10, (S, D2): 10}.get
    assert book.overrides(S, configured, 0.0) is None
    assert book.ask((S, D1), 5) and not book.ask((S, D1), 5)
    assert book.overrides(S, configured, 0.0) == {D1: 5}
    book.ask((S, D2), 10)  # asks for its configured weight: nothing to override
    assert book.overrides(S, configured, 0.0) == {D1: 5}
    book.start_ramp((S, D2), 100.0, 10.0)
    assert book.overrides(S, configured, 100.0) == {D1: 5, D2: 1}
    assert book.overrides(S, configured, 105.0) == {D1: 5, D2: 5}
    assert book.step_times((S, D2), 10)[-1] == 110.0 and len(book.step_times((S, D2), 10)) == 10
    assert book.overrides(S, configured, 110.0) == {D1: 5}
    # the ramp scales what the checks ask for
    book.start_ramp((S, D1), 200.0, 10.0)
    assert book.weight((S, D1), 10, 205.0) == 2  # half-way to 5
    book.stop_ramp((S, D1))
    book.ask((S, D1), None)
    book.forget([(S, D2)])
    assert book.overrides(S, configured, 300.0) is None


def test_planner_puts_up_real_servers_at_their_weights():
    servers = (RealServer("10.0.0.1", 80, weight=10), RealServer("10.0.0.2", 80, weight=10))
    svc = VirtualService(name="web", key=S, real_servers=servers)
    desired = desired_service(svc, {D1: "up", D2: "up"}, None, weights={D1: 0, D2: 3})
    assert (desired.dests[D1].weight, desired.dests[D2].weight) == (0, 3)
    desired = desired_service(svc, {D1: "up", D2: "down"}, None, weights={D2: 3})
    assert desired.dests[D1].weight == 10 and D2 in desired.dests and desired.dests[D2].weight == 0


# --- the engine reports weight changes ----------------------------------------------


class Weighted:
    """A fake runner of pure-logic tests: plays (ok, weight) results, then parks."""

    def __init__(self, outcomes):
        self.outcomes = list(outcomes)

    async def __call__(self, t, session):
        if not self.outcomes:
            await asyncio.Event().wait()
        ok, weight = self.outcomes.pop(0)
        return CheckResult(ok, f"w={weight}", 0.0, time.monotonic(), weight=weight)


async def test_engine_reports_a_weight_change_of_an_up_target():
    seen: list[Transition] = []
    runner = Weighted([(True, None), (True, 5), (True, 5), (False, None), (True, 0), (True, 0), (True, None)])
    engine = HealthEngine(seen.append, runner=runner)
    spec = CheckSpec(interval=0.01, rise=2, fall=1)
    engine.update({"a": CheckTarget("a", "rs a", None, 0, "127.0.0.1", 1, spec, weight=10)})
    await engine.start()
    try:
        deadline = time.monotonic() + 5
        while runner.outcomes and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
    finally:
        await engine.stop()
    assert [(t.old, t.new, t.weight) for t in seen] == [
        ("unknown", "up", None),
        ("up", "up", 5),  # weight only
        ("up", "down", 5),  # a failed check keeps the weight
        ("down", "up", 0),  # back up after rise, at the weight the checks ask for now
        ("up", "up", None),
    ]
    assert seen[1].reason == "weight 5: w=5" and seen[4].reason == "weight configured: w=None"


# --- run_check: an agent on loopback, dynamic external weights ----------------------


async def serve_agent(answer: bytes | None):
    """A loopback agent answering each connection with ``answer`` (``None``: never answers)."""
    hold: list[asyncio.StreamWriter] = []

    async def handle(reader, writer):
        if answer is None:
            hold.append(writer)
            return
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def check_with_agent(spec_kw: dict, answer: bytes | None, weight: int = 10) -> CheckResult:
    server, port = await serve_agent(answer)
    try:
        spec = CheckSpec(agent_port=port, **spec_kw)
        return await run_check(CheckTarget("k", "rs", None, 0, "127.0.0.1", port, spec, weight=weight), None)
    finally:
        server.close()


@pytest.mark.parametrize(
    ("answer", "ok", "weight", "reason"),
    [
        (b"50%\n", True, 5, "connected; agent: 50%"),
        (b"drain\n", True, 0, "connected; agent: drain"),
        (b"up\n", True, None, "connected; agent: up"),
        (b"maint\n", False, None, "connected; agent: maint"),
        (b"", True, None, "connected; agent: up"),
    ],
)
async def test_agent_answers_set_weight_or_state(answer, ok, weight, reason):
    result = await check_with_agent({"type": "tcp", "timeout": 1.0}, answer)
    assert (result.ok, result.weight, result.reason) == (ok, weight, reason)


async def test_agent_beside_check_none_and_a_silent_agent():
    result = await check_with_agent({"type": "none"}, b"25%\n", weight=4)
    assert (result.ok, result.weight) == (True, 1)
    start = time.monotonic()
    result = await check_with_agent({"type": "tcp", "timeout": 0.3}, None)
    assert result.ok and result.weight is None and result.reason == "connected; agent: no reply in 0.3 s"
    assert time.monotonic() - start < 2


async def test_unreachable_agent_leaves_the_check_passed():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    server, port = await serve_agent(b"50%\n")
    try:
        spec = CheckSpec(type="tcp", agent_port=closed)
        result = await run_check(CheckTarget("k", "rs", None, 0, "127.0.0.1", port, spec, weight=10), None)
    finally:
        server.close()
    assert (result.ok, result.weight, result.reason) == (True, None, "connected; agent: connection refused")


def script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


@pytest.mark.parametrize(
    ("code", "dynamic", "ok", "weight"),
    [(0, True, True, None), (1, True, False, None), (7, True, True, 5), (2, True, True, 0), (7, False, False, None)],
)
async def test_external_dynamic_weight_is_keepalived_misc_dynamic(tmp_path, code, dynamic, ok, weight):
    cmd = script(tmp_path / "check", f"exit {code}\n")
    spec = CheckSpec(type="external", command=(str(cmd),), dynamic_weight=dynamic)
    result = await run_check(CheckTarget("k", "rs", "10.0.0.1", 80, "127.0.0.1", 80, spec, weight=10), None)
    assert (result.ok, result.weight) == (ok, weight), result
