"""The one interface every health check goes through.

`CheckTarget` names what to check (a real server of a virtual service, with its
`CheckSpec`), `CheckResult` says how it went, and `run_check` runs one check of
any type.  `run_check` never raises for a failed or broken check: every error,
including the time limit ``spec.timeout``, becomes a failed `CheckResult` with a
short human-readable reason.  Only the cancellation of the calling task itself
propagates (as `asyncio.CancelledError`).
"""

from __future__ import annotations

import asyncio
import errno as _errno
import importlib
import os
import re
import ssl
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from checks.protocols.agent import agent_weight, parse_agent_reply, query_agent
from checks.protocols.external import check_external
from checks.protocols.http import check_http
from checks.protocols.httpclient import ResponseError
from checks.protocols.tcp import check_tcp
from checks.spec import CheckSpec
from checks.timers import Deadlines, deadlines_for

__all__ = ["CheckTarget", "CheckResult", "run_check", "describe_error", "format_seconds"]

#: Longest reason text kept in a result (characters); longer texts are cut.
MAX_REASON = 200


@dataclass(frozen=True)
class CheckTarget:
    """One thing to check: a real server as seen through one virtual service.

    Attributes:
        key: an opaque, hashable identity chosen by the caller (for example
            ``(ServiceKey, DestKey)``); the engine keys its state by it.
        name: text for logs, e.g. ``"rs 10.0.0.2:80 of web"``.
        vip: the virtual service's address (VIP), ``None`` for a fwmark
            service; only the ``external`` check uses it.
        vport: the virtual port (0 for a fwmark service); only ``external``
            uses it.
        rip: the real server's address (RIP), IPv4 or IPv6 text.
        rport: the port to check, already resolved by the caller
            (``spec.port`` or else the real server's port).
        spec: the check settings.
        weight: the real server's configured weight: what an agent's percentage is a share of
            (`checks.protocols.agent.agent_weight`).
    """

    key: Hashable
    name: str
    vip: str | None
    vport: int
    rip: str
    rport: int
    spec: CheckSpec
    weight: int = 1


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check.

    Attributes:
        ok: ``True`` when the real server passed the check.
        reason: short human text: ``"HTTP 200"``, ``"HTTP 503"``,
            ``"connection refused"``, ``"timeout after 1 s"``, ``"exit 1"``...
        duration: seconds the check took (monotonic clock).
        at: monotonic time in seconds (`time.monotonic`) at which the check
            finished.
        timed_out: ``True`` when the check failed because it reached its own time
            limit ``spec.timeout`` (`run_check`; reason ``"timeout after <timeout> s"``);
            ``False`` for every other result, among them a socket's own ``ETIMEDOUT``
            ("connection timed out"), which is an error the real server's network
            reported, not the check's limit.  Never ``True`` with ``ok``.
        weight: the IPVS weight the check asks for while the real server is up (an agent's
            percentage of `CheckTarget.weight`, ``drain`` as 0, an ``external`` check's
            ``dynamic_weight``); ``None``: the configured weight.
    """

    ok: bool
    reason: str
    duration: float
    at: float
    timed_out: bool = False
    weight: int | None = None


def format_seconds(seconds: float) -> str:
    """``1.0`` -> ``"1"``, ``0.25`` -> ``"0.25"``: a duration for reason texts."""
    return f"{seconds:g}"


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."


def describe_error(exc: BaseException) -> str:
    """A short reason text for an exception raised while checking.

    TLS errors are named as such (``"TLS certificate verify failed: self-signed
    certificate"``, ``"TLS error: wrong version number"``); socket errors are named by their
    errno (``"connection refused"``, ``"no route to host"``), a bad HTTP reply by what went
    wrong (`checks.protocols.httpclient.ResponseError`: ``"server closed the connection"``, ``"bad HTTP
    response: ..."``); anything else by its type and message.
    """
    if isinstance(exc, ssl.SSLCertVerificationError):
        return _clip(f"TLS certificate verify failed: {exc.verify_message or exc}")
    if isinstance(exc, ssl.SSLError):
        detail = exc.reason.lower().replace("_", " ") if exc.reason else str(exc)
        return _clip(f"TLS error: {detail}")
    if isinstance(exc, ResponseError):
        return _clip(str(exc))
    if isinstance(exc, OSError):
        code = exc.errno
        if code == _errno.ECONNREFUSED:
            return "connection refused"
        if code == _errno.ECONNRESET:
            return "connection reset"
        if code is not None and code in _errno.errorcode:
            return os.strerror(code).lower()
        if isinstance(exc, ConnectionRefusedError):
            return "connection refused"
        if isinstance(exc, ConnectionResetError):
            return "connection reset"
        return _clip(str(exc) or type(exc).__name__)
    if isinstance(exc, re.error):
        return _clip(f"bad expect_body regex: {exc}")
    message = str(exc)
    return _clip(f"{type(exc).__name__}: {message}" if message else type(exc).__name__)


async def _check_none(target: CheckTarget) -> tuple[bool, str]:
    return True, "no check"


async def _check_protocol(target: CheckTarget) -> tuple[bool, str]:
    """The checks of one module each, imported at their first use (`PROTOCOL_CHECKS`)."""
    spec = target.spec
    if spec.type == "tcp" and not spec.dialogue and not spec.tls:
        return await check_tcp(target.rip, target.rport)
    module_name, function_name = PROTOCOL_CHECKS[spec.type]
    check = getattr(importlib.import_module(module_name), function_name)
    result: tuple[bool, str] = await check(target)
    return result


#: Check type -> (module, function): ``async def function(target: CheckTarget) -> (ok, reason)``,
#: raising ``OSError``/``ssl.SSLError``/``ValueError`` for a failed check as `checks.protocols.tcp.check_tcp`
#: does.  ``tcp`` goes there only with a ``dialogue`` or ``tls``.
PROTOCOL_CHECKS: dict[str, tuple[str, str]] = {
    "tcp": ("checks.protocols.dialogue", "check_dialogue"),
    "dns": ("checks.protocols.dns", "check_dns"),
    "udp": ("checks.protocols.udp", "check_udp"),
    "ping": ("checks.protocols.ping", "check_ping"),
    "radius": ("checks.protocols.radius", "check_radius"),
    "sip": ("checks.protocols.sip", "check_sip"),
    "mysql": ("checks.protocols.sql", "check_mysql"),
    "pgsql": ("checks.protocols.sql", "check_pgsql"),
    "oracle": ("checks.protocols.sql", "check_oracle"),
    "ldap": ("checks.protocols.ldap", "check_ldap"),
    "ftp": ("checks.protocols.ftp", "check_ftp"),
}

_DISPATCH = {
    "none": _check_none,
    "tcp": _check_protocol,
    "dns": _check_protocol,
    "udp": _check_protocol,
    "ping": _check_protocol,
    "radius": _check_protocol,
    "sip": _check_protocol,
    "mysql": _check_protocol,
    "pgsql": _check_protocol,
    "oracle": _check_protocol,
    "ldap": _check_protocol,
    "ftp": _check_protocol,
    "http": check_http,
    "https": check_http,
    "external": check_external,
}


async def run_check(
    target: CheckTarget,
    session: object = None,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> CheckResult:
    """Run one check of ``target`` and return its result; never raises.

    The type comes from ``target.spec.type``: ``none`` (up at once), ``tcp``
    (`checks.protocols.tcp`, or `PROTOCOL_CHECKS`), ``http``/``https`` (`checks.protocols.http`), ``external``
    (`checks.protocols.external`), and the other types of `PROTOCOL_CHECKS`.
    The whole check -- connect, request, response body or command run -- is
    bounded by ``spec.timeout`` seconds (`checks.timers.Deadlines`: as ``asyncio.timeout``, up to
    `checks.timers.DEADLINE_TICK` s later); past it the check fails with reason
    ``"timeout after <timeout> s"`` and `CheckResult.timed_out` set.

    Args:
        target: what to check.
        session: unused; accepted so that callers passing a second argument (the engine's
            ``runner(target, None)``) keep working.
        clock: monotonic clock in seconds for ``duration`` and ``at``.

    Raises:
        asyncio.CancelledError: only when the calling task is cancelled.
    """
    spec = target.spec
    start = clock()
    if spec.type == "none" and spec.agent_port is None:
        return CheckResult(True, "no check", 0.0, start)
    check = _DISPATCH.get(spec.type)
    timed_out = False
    weight: int | None = None
    try:
        if check is None:
            ok, reason = False, f"unknown check type {spec.type!r}"
        else:
            task = asyncio.current_task()
            assert task is not None, "run_check runs in a task"
            tasks = deadlines_for(task.get_loop()).add(task, spec.timeout)
            try:
                outcome = await check(target)
            except (asyncio.CancelledError, Exception):
                # the limit cancelled the check, which may have turned the cancellation into an
                # error of its own (asyncpg raises TimeoutError); else an outside cancellation or
                # the check's own error, described below
                if not Deadlines.end(tasks, task):
                    raise
                outcome = (False, f"timeout after {format_seconds(spec.timeout)} s")
                timed_out = True
            finally:
                Deadlines.end(tasks, task)
            ok, reason = outcome[0], outcome[1]
            weight = outcome[2] if len(outcome) > 2 else None
            if ok and spec.agent_port is not None:
                ok, reason, weight = await ask_agent(target, reason, weight)
    except Exception as exc:  # noqa: BLE001 - a check never raises: errors are results
        ok, reason = False, describe_error(exc)
    end = clock()
    return CheckResult(ok, _clip(reason), end - start, end, timed_out, weight if ok else None)


async def ask_agent(target: CheckTarget, reason: str, weight: int | None) -> tuple[bool, str, int | None]:
    """Ask the real server's agent (``spec.agent_port``, `checks.protocols.agent`) after a passing check.

    The agent has a time limit of its own, ``spec.timeout`` seconds, after the check's.  An agent
    that cannot be reached (refused, silent past the limit, reset) leaves the check passed at
    ``weight`` (HAProxy: an unreachable agent does not change a server's state), its error added
    to the reason.

    Returns:
        ``(ok, reason, weight)``: ``(False, "HTTP 200; agent: maint", None)`` for a ``down``
        reply; ``(True, "HTTP 200; agent: 50%", 5)`` for 50% of weight 10; ``(True, "HTTP 200;
        agent: drain", 0)``.
    """
    spec = target.spec
    send = (spec.agent_send or "").encode("latin-1", errors="replace")
    limit = asyncio.timeout(spec.timeout)
    try:
        async with limit:
            data = await query_agent(target.rip, spec.agent_port or 0, send)
    except TimeoutError as exc:
        detail = f"no reply in {format_seconds(spec.timeout)} s" if limit.expired() else describe_error(exc)
        return True, f"{reason}; agent: {detail}", weight
    except (OSError, ValueError) as exc:
        return True, f"{reason}; agent: {describe_error(exc)}", weight
    reply = parse_agent_reply(data)
    if reply.state == "down":
        return False, f"{reason}; agent: {reply.word}", None
    said = " ".join(part for part in (reply.word, None if reply.percent is None else f"{reply.percent}%") if part)
    asked = agent_weight(reply, target.weight)
    return True, f"{reason}; agent: {said or 'up'}", weight if asked is None else asked
