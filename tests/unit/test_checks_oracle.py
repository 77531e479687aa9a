"""The ``oracle`` check (python-oracledb's thin mode) against what can run here.

No Oracle Database can be installed on the test hosts (neither Debian nor PyPI ship
one), so the passing path -- a login and a query that returns a row -- is not tested
here.  What is tested against real sockets on 127.0.0.1: a refused port, a server that
accepts and never answers (the time limit, no socket or task left behind), servers that
speak something else (an HTTP reply, random bytes), a huge reply, the framing errors the
relay of `checks.protocols.tns` stops (a packet of length 0 would stop the event loop
inside python-oracledb), a listener's REDIRECT; the relay's framing byte for byte; that
the check reads no tnsnames.ora and resolves no name; the missing driver; and the
configuration loader's errors, located.
"""

from __future__ import annotations

import asyncio
import faulthandler
import gc
import os
import socket
import sys
import time
from pathlib import Path

import pytest
from checkhelpers import free_port, ipv6_loopback, open_fds

from checks.base import CheckTarget, run_check
from checks.protocols import sql, tns
from checks.spec import CheckSpec
from director.config import ConfigError, parse_config

oracledb = pytest.importorskip("oracledb")

LOGIN, PASSWORD, SID = "checker", "s3cret", "ORCL"


def target(port: int, rip: str = "127.0.0.1", **spec: object) -> CheckTarget:
    fields: dict[str, object] = {"type": "oracle", "login": LOGIN, "password": PASSWORD, "database": SID}
    fields.update(spec)
    return CheckTarget(
        key=("svc", rip, port),
        name=f"rs {rip}:{port} of test",
        vip="192.168.10.100",
        vport=port,
        rip=rip,
        rport=port,
        spec=CheckSpec(**fields),  # type: ignore[arg-type]
    )


async def other_tasks() -> set[asyncio.Task[object]]:
    """The event loop's tasks besides the test's own, once those that are ending have ended."""
    for _ in range(5):
        await asyncio.sleep(0)
    return asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]


class Listener:
    """A server on 127.0.0.1 that reads the client's first bytes, then answers ``reply`` (or
    nothing), then closes or waits for the client to close; it notes connections and closes."""

    def __init__(self, reply: bytes | None, *, close: bool = False, repeat: int = 1) -> None:
        self.reply, self.close, self.repeat = reply, close, repeat
        self.accepted = self.client_closed = 0
        self.first: bytes = b""
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Listener:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            self.first = await reader.read(65536)
            if self.reply is not None:
                for _ in range(self.repeat):
                    writer.write(self.reply)
                    await writer.drain()
            if not self.close:
                while await reader.read(65536):
                    pass
                self.client_closed += 1
        except ConnectionError:
            self.client_closed += 1
        finally:
            writer.close()

    async def wait_client_closed(self) -> None:
        for _ in range(200):
            if self.client_closed:
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the check did not close its connection")


async def check_against(listener: Listener, timeout: float = 2.0) -> tuple[object, float]:
    start = time.monotonic()
    result = await run_check(target(listener.port, timeout=timeout, query="SELECT 1 FROM DUAL"), None)
    return result, time.monotonic() - start


# --- real sockets ----------------------------------------------------------------------


async def test_refused_port_fails_at_once():
    start = time.monotonic()
    result = await run_check(target(free_port(), timeout=2.0), None)
    assert (result.ok, result.reason, result.timed_out) == (False, "connection refused", False)
    assert time.monotonic() - start < 0.5


async def test_refused_port_over_ipv6():
    if not ipv6_loopback():
        pytest.skip("no IPv6 loopback here")
    result = await run_check(target(free_port("::1"), rip="::1", timeout=2.0), None)
    assert (result.ok, result.reason) == (False, "connection refused")


async def test_server_that_never_answers_times_out_and_leaves_nothing_behind():
    fds = open_fds()
    async with Listener(None) as silent:
        timeout = 0.4
        start = time.monotonic()
        result = await run_check(target(silent.port, timeout=timeout), None)
        elapsed = time.monotonic() - start
        assert (result.ok, result.timed_out, result.reason) == (False, True, "timeout after 0.4 s")
        assert timeout <= elapsed < timeout + 0.3
        assert silent.accepted == 1
        assert silent.first[4] == 1  # the driver's CONNECT packet arrived through the relay (type 1)
        assert b"(SID=ORCL)" in silent.first and b"(PROGRAM=directord)" in silent.first
        await silent.wait_client_closed()
    assert await other_tasks() == set()
    assert open_fds() == fds


async def test_http_server_fails_with_a_short_reason():
    reply = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 11\r\nConnection: close\r\n\r\nbad request"
    async with Listener(reply, close=True) as http:
        result, elapsed = await check_against(http)
    assert (result.ok, result.timed_out) == (False, False)
    assert result.reason == "cannot connect: DPY-4011: the database or network closed the connection"
    assert elapsed < 1.0


async def test_random_bytes_fail_with_a_short_reason():
    fds = open_fds()
    async with Listener(os.urandom(4096), close=True) as noise:
        result, elapsed = await check_against(noise)
    assert (result.ok, result.timed_out) == (False, False)
    assert len(result.reason) < 120, result.reason
    assert elapsed < 1.0
    assert await other_tasks() == set()
    assert open_fds() == fds


async def test_a_packet_of_length_zero_is_stopped_before_the_driver_sees_it():
    """python-oracledb 26.1 spins without end on it, holding the GIL: without the relay's
    check this test would never end, so a watchdog of faulthandler ends the test run."""
    faulthandler.dump_traceback_later(30, exit=True)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    running = asyncio.create_task(ticker())
    try:
        async with Listener(b"\x00\x00\x00\x00\x02\x00\x00\x00" * 4) as zero:
            result, elapsed = await check_against(zero)
            await zero.wait_client_closed()
    finally:
        running.cancel()
        faulthandler.cancel_dump_traceback_later()
    assert (result.ok, result.reason, result.timed_out) == (False, "bad TNS packet: length 0", False)
    assert elapsed < 0.5
    assert ticks >= 1


async def test_a_redirect_is_not_followed():
    redirect = b"(ADDRESS=(PROTOCOL=TCP)(HOST=db.example)(PORT=1521))"
    body = len(redirect).to_bytes(2, "big") + redirect
    packet = (8 + len(body)).to_bytes(2, "big") + b"\x00\x00\x05\x00\x00\x00" + body
    async with Listener(packet) as listener:
        result, _ = await check_against(listener)
    assert (result.ok, result.reason) == (False, "listener redirected the connection (not followed)")


async def test_a_huge_reply_is_cut_at_one_mebibyte():
    # packets of 64 KiB - 1 of an unknown type, without end: the driver would keep them
    packet = b"\xff\xff\x00\x00\x0f\x00\x00\x00" + b"\x00" * (0xFFFF - 8)
    fds = open_fds()
    async with Listener(packet, repeat=1000) as flood:
        result, elapsed = await check_against(flood)
        await flood.wait_client_closed()
    assert (result.ok, result.reason, result.timed_out) == (False, "server sent more than 1 MiB", False)
    assert elapsed < 1.0
    assert await other_tasks() == set()
    assert open_fds() == fds


async def test_no_tnsnames_file_is_read_and_no_name_resolved(monkeypatch, tmp_path: Path):
    (tmp_path / "tnsnames.ora").write_text("ORCL = (DESCRIPTION=(ADDRESS=(PROTOCOL=TCP)(HOST=db.example)(PORT=1)))\n")
    monkeypatch.setattr(oracledb.defaults, "config_dir", str(tmp_path))
    opened: list[str] = []
    watching = True

    def hook(event: str, args: tuple[object, ...]) -> None:
        if watching and event == "open" and isinstance(args[0], str | bytes | os.PathLike):
            opened.append(os.fsdecode(args[0]))

    sys.addaudithook(hook)  # cannot be removed: it stops recording at the end of the test
    looked_up: list[object] = []
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
        looked_up.append(host)
        return real_getaddrinfo(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    try:
        async with Listener(os.urandom(64), close=True) as noise:
            result = await run_check(target(noise.port, timeout=1.0), None)
    finally:
        watching = False
    assert not result.ok
    assert not [path for path in opened if str(tmp_path) in path or path.endswith(".ora")]
    for host in looked_up:  # the numeric addresses only: getaddrinfo then asks no resolver
        assert isinstance(host, str)
        socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    name = await run_check(target(1521, rip="db.example", timeout=1.0), None)
    assert (name.ok, name.reason) == (False, "ValueError: not an IP address: 'db.example'")


# --- the relay's framing, byte for byte ------------------------------------------------


def test_frame_problem_reads_headers_split_across_reads():
    guard = tns.TnsGuard()
    # RESEND (type 11), 8 bytes, in two reads; then a REFUSE (type 4) of 12 bytes in three
    assert guard.frame_problem(b"\x00\x08\x00") is None
    assert guard.frame_problem(b"\x00\x0b\x00\x00\x00") is None
    assert guard.frame_problem(b"\x00\x0c\x00\x00\x04\x00") is None
    assert guard.frame_problem(b"\x00\x00\x00\x00") is None
    assert guard.frame_problem(b"\x00\x00") is None
    assert guard.frame_problem(b"\x00\x03\x00\x00\x06\x00\x00\x00") == "bad TNS packet: length 3"


def test_frame_problem_uses_four_byte_lengths_after_accept_and_waits_for_the_client():
    guard = tns.TnsGuard()
    accept = b"\x00\x20\x00\x00\x02\x00\x00\x00" + b"\x01" * 24  # ACCEPT, 32 bytes, 2-byte length
    assert guard.frame_problem(accept) is None
    # a packet right behind the ACCEPT, before the driver answered: the driver would frame it
    # with 2-byte lengths still (length 0 here), the guard with 4
    data = b"\x00\x00\x00\x0a\x06\x00\x00\x00\x00\x00"
    assert guard.frame_problem(data) == "server sent data before the client answered its ACCEPT"
    guard = tns.TnsGuard()
    assert guard.frame_problem(accept) is None
    guard.from_driver(b"\x00\x00\x00\x10\x06\x00\x00\x00" + b"\x00" * 8)  # no server connection: only noted
    assert guard.frame_problem(data) is None  # DATA (type 6), 10 bytes, 4-byte length
    assert guard.frame_problem(b"\x00\x00\x00\x00\x06\x00\x00\x00") == "bad TNS packet: length 0"


def test_frame_problem_counts_every_byte_read():
    guard = tns.TnsGuard()
    packet = b"\xff\xff\x00\x00\x06\x00\x00\x00" + b"\x00" * (0xFFFF - 8)
    for _ in range(tns.MAX_ORACLE_READ // len(packet)):
        assert guard.frame_problem(packet) is None
    assert guard.frame_problem(packet) == "server sent more than 1 MiB"


# --- the driver and the configuration --------------------------------------------------


async def test_a_missing_driver_fails_the_check_naming_the_extra(monkeypatch):
    sql._driver.cache_clear()
    monkeypatch.setitem(sys.modules, "oracledb", None)  # import raises ImportError
    try:
        result = await run_check(target(free_port()), None)
        assert (result.ok, result.reason) == (False, sql.MISSING_ORACLEDB)
        assert "directord[oracle]" in result.reason
        assert sql.missing_driver("oracle") == sql.MISSING_ORACLEDB
        text = (
            "virtual_services:\n  - {address: 10.0.0.1, port: 1521, real_servers: [{address: 10.0.0.2}],\n"
            f"     check: {{type: oracle, login: {LOGIN}, database: {SID}}}}}\n"
        )
        with pytest.raises(ConfigError) as info:
            parse_config(text, "t.yaml")
        assert [(i.line, i.field, i.message) for i in info.value.issues] == [
            (3, "virtual_services[0].check.type", sql.MISSING_ORACLEDB)
        ]
    finally:
        sql._driver.cache_clear()


def test_missing_driver_is_none_when_the_driver_is_installed():
    assert sql.missing_driver("oracle") is None


def config(check: str) -> str:
    head = "virtual_services:\n  - address: 10.0.0.1\n    port: 1521\n    real_servers: [{address: 10.0.0.2}]\n"
    return head + check


@pytest.mark.parametrize(
    ("check", "field", "message"),
    [
        ("    check: {type: oracle, database: ORCL}\n", "login", "an oracle check needs login: the user it connects"),
        (
            "    check: {type: oracle, login: u}\n",
            "database",
            "an oracle check needs database: the instance's SID, or service:NAME for a service",
        ),
        (
            "    check:\n      type: oracle\n      login: u\n      database: 'ORCL)(SERVER=x'\n",
            "database",
            "an oracle SID is 1 to 128 letters, digits and _ . $ # -, got 'ORCL)(SERVER=x'",
        ),
        (
            "    check: {type: oracle, login: u, database: 'service:'}\n",
            "database",
            "an oracle service name is 1 to 128 letters, digits and _ . $ # -, got ''",
        ),
    ],
)
def test_configuration_errors_are_located(check, field, message):
    with pytest.raises(ConfigError) as info:
        parse_config(config(check), "t.yaml")
    [issue] = info.value.issues
    assert issue.field == f"virtual_services[0].check.{field}" and issue.message.startswith(message)
    assert issue.line >= 5


def test_a_service_name_and_a_sid_are_accepted_and_udp_refuses_oracle():
    for database in ("ORCL", "service:FREEPDB1", "service:sales.example.com"):
        parse_config(config(f"    check: {{type: oracle, login: u, database: '{database}'}}\n"), "t.yaml")
    text = config("    protocol: udp\n    check: {type: oracle, login: u, database: ORCL}\n")
    with pytest.raises(ConfigError) as info:
        parse_config(text, "t.yaml")
    assert any(i.field == "virtual_services[0].check.type" for i in info.value.issues)


async def test_a_service_name_goes_into_the_connect_descriptor():
    async with Listener(None) as silent:
        result = await run_check(target(silent.port, database="service:FREEPDB1", timeout=0.3), None)
        assert result.timed_out
    assert b"(SERVICE_NAME=FREEPDB1)" in silent.first and b"(SID=" not in silent.first


def test_the_relay_on_uvloop():
    """The checker child runs its checks on uvloop, whose transports are no asyncio.Transport."""
    uvloop = pytest.importorskip("uvloop")
    flood = b"\xff\xff\x00\x00\x0f\x00\x00\x00" + b"\x00" * (0xFFFF - 8)
    cases = [
        (Listener(b"\x00\x00\x00\x00\x02\x00\x00\x00"), "bad TNS packet: length 0"),
        (Listener(flood, repeat=1000), "server sent more than 1 MiB"),
        (
            Listener(b"HTTP/1.1 400 Bad Request\r\n\r\n", close=True),
            "cannot connect: DPY-4011: the database or network closed the connection",
        ),
        (Listener(None), "timeout after 0.3 s"),
    ]

    async def run() -> list[str]:
        reasons = []
        for listener, _ in cases:
            async with listener:
                result = await run_check(target(listener.port, timeout=0.3, query="SELECT 1 FROM DUAL"), None)
                if listener.reply is None or not listener.close:
                    await listener.wait_client_closed()
            reasons.append(result.reason)
        assert await other_tasks() == set()
        return reasons

    uvloop.run(other_tasks())  # uvloop's own descriptors of a first loop, before counting
    gc.collect()
    fds = open_fds()
    assert uvloop.run(run()) == [reason for _, reason in cases]
    gc.collect()
    assert open_fds() == fds
