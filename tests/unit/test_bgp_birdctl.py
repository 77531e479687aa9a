"""`ha.bgp.birdctl`: the parsers on replies captured from a real BIRD 2.0.12 (tests/data/bird,
see its README), the client against hostile fake servers on a unix socket, and the client
against a real BIRD in a network namespace (root; skipped without /usr/sbin/bird)."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

from director.lab import netns as N
from ha.bgp.birdctl import (
    MAX_COMMAND_BYTES,
    BfdSession,
    BgpChannel,
    BirdError,
    ConfigureResult,
    ProtocolState,
    ReplyLine,
    bird_command,
    bird_configure,
    parse_bfd_sessions,
    parse_bgp_detail,
    parse_bgp_details,
    parse_protocols,
    parse_reply,
)

DATA = Path(__file__).resolve().parent.parent / "data" / "bird"
BIRD = "/usr/sbin/bird"
PREFIX = f"bct{os.getpid()}"


def sample(name: str) -> bytes:
    return (DATA / f"{name}.txt").read_bytes()


def reply(name: str):
    return parse_reply(sample(name))


# --- the reply format --------------------------------------------------------------------------


def test_greeting_and_codes():
    greeting = reply("greeting")
    assert greeting.lines == (ReplyLine(1, "BIRD 2.0.12 ready."),)
    status = reply("status")
    assert status.code == 13 and status.message == "Daemon is up and running"
    # the continuation lines (" Hostname is ...") carry the code of the line they continue
    assert status.lines[0] == ReplyLine(1000, "BIRD 2.0.12")
    assert [line.code for line in status.lines[1:-1]] == [1011] * 5
    assert status.lines[2].text.startswith("Hostname is ")
    assert reply("configure_ok").lines == (
        ReplyLine(2, "Reading configuration from d.conf"),
        ReplyLine(3, "Reconfigured"),
    )
    error = reply("configure_error")
    assert error.code == 8002
    assert error.message == "d.conf:7:57 syntax error, unexpected ';', expecting NUM or CF_SYM_KNOWN or '('"
    assert reply("syntax_error").code == 9001
    assert reply("disabled").lines == (ReplyLine(9, "r2: disabled"), ReplyLine(0, ""))


@pytest.mark.parametrize(
    "data, why",
    [
        (b"0001 BIRD ready.", "newline"),
        (b"1002-a\n", "no final line"),
        (b" continued\n0000 \n", "continuation line without a code"),
        (b"hello\n", "malformed"),
        (b"12 short\n", "malformed"),
        (b"0000 \n0000 \n", "after the final line"),
        (b"0000x\n", "malformed"),
    ],
)
def test_malformed_replies(data, why):
    with pytest.raises(BirdError, match=why):
        parse_reply(data)


def test_spontaneous_printout_is_skipped():
    assert parse_reply(b"+log line\n1002-a b c d e\n+another\n 0000 x\n0000 \n").lines == (
        ReplyLine(1002, "a b c d e"),
        ReplyLine(1002, "0000 x"),
        ReplyLine(0, ""),
    )


# --- show protocols -------------------------------------------------------------------------------


def test_parse_protocols_established():
    assert parse_protocols(reply("protocols_established")) == [
        ProtocolState("device1", "Device", "---", "up", "17:22:55.725", ""),
        ProtocolState("k221", "Kernel", "vips", "up", "17:22:55.725", ""),
        ProtocolState("bfd1", "BFD", "---", "up", "17:22:55.725", ""),
        ProtocolState("r1", "BGP", "---", "up", "17:23:00.055", "Established"),
    ]
    r1 = parse_protocols(reply("protocols_established"))[3]
    assert r1.established and r1.bgp_state == "Established" and r1.last_error == ""
    kernel = parse_protocols(reply("protocols_established"))[1]
    assert kernel.bgp_state == "" and not kernel.established


def test_parse_protocols_down_and_errors():
    rows = parse_protocols(reply("protocols_disabled"))
    r1, r2 = rows[3], rows[4]
    assert r1 == ProtocolState("r1", "BGP", "---", "start", "17:23:14.999", "Active        Socket: Connection refused")
    assert (r1.bgp_state, r1.last_error, r1.established) == ("Active", "Socket: Connection refused", False)
    assert r2 == ProtocolState("r2", "BGP", "---", "down", "17:23:29.725", "")
    assert (r2.bgp_state, r2.last_error) == ("Down", "")
    shut = parse_protocols(reply("protocols_router_down"))[3]
    assert (shut.bgp_state, shut.last_error) == ("Active", "Received: Administrative shutdown")
    assert [p.bgp_state for p in parse_protocols(reply("protocols_two")) if p.proto == "BGP"] == ["Active", "Active"]


def test_parse_protocols_other_time_formats_and_long_names():
    lines = (
        b"2002-Name       Proto      Table      State  Since         Info\n"
        b"1002-a_very_long_protocol_name BGP        ---        start  2026-12-07 17:22:37  Connect       \n"
        b" r2         BGP        ---        up     2026-12-06    Established   \n"
        b"0000 \n"
    )
    assert parse_protocols(parse_reply(lines)) == [
        ProtocolState("a_very_long_protocol_name", "BGP", "---", "start", "2026-12-07 17:22:37", "Connect"),
        ProtocolState("r2", "BGP", "---", "up", "2026-12-06", "Established"),
    ]
    with pytest.raises(BirdError, match="fewer than 5 fields"):
        parse_protocols(parse_reply(b"1002-r1 BGP --- up\n0000 \n"))


# --- show protocols all NAME ------------------------------------------------------------------


def test_parse_bgp_detail_established():
    detail = parse_bgp_detail(reply("r1_established"))
    assert detail.protocol == ProtocolState("r1", "BGP", "---", "up", "17:23:00.055", "Established")
    assert detail.established and detail.bgp_state == "Established"
    assert (detail.neighbor_address, detail.neighbor_as, detail.local_as) == ("10.77.0.2", 65000, 65001)
    assert (detail.neighbor_id, detail.source_address, detail.hold_time) == ("10.77.0.2", "10.77.0.1", 3)
    assert detail.last_error == ""
    assert detail.channels == (BgpChannel("ipv4", "UP", "vips", imported=0, exported=1, preferred=0),)
    router = parse_bgp_detail(reply("router_dir1_established"))
    assert router.channels == (BgpChannel("ipv4", "UP", "master4", imported=1, exported=0, preferred=1),)
    assert (router.neighbor_address, router.neighbor_as, router.local_as) == ("10.77.0.1", 65001, 65000)


@pytest.mark.parametrize(
    "name, state, error",
    [
        ("r1_refused", "Active", "Socket: Connection refused"),
        ("r1_router_down", "Active", "Received: Administrative shutdown"),
        ("router_dir1_director_gone", "Active", "Received: Administrative shutdown"),
        ("router_dir1_bfd_down", "Active", "Socket: Connection closed"),
        ("r2_down", "Down", ""),
    ],
)
def test_parse_bgp_detail_not_established(name, state, error):
    detail = parse_bgp_detail(reply(name))
    assert (detail.bgp_state, detail.last_error, detail.established) == (state, error, False)
    assert detail.neighbor_id == "" and detail.hold_time is None
    assert len(detail.channels) == 1 and detail.channels[0].state == "DOWN"
    assert detail.channels[0].imported is None


def test_parse_bgp_details_skips_other_protocols():
    assert parse_bgp_details(reply("k221")) == []
    with pytest.raises(BirdError, match="found 0"):
        parse_bgp_detail(reply("k221"))
    both = sample("r1_established")[: -len(b"0000 \n")] + sample("r2_down")
    # two protocols in one reply (as `show protocols all` gives): each keeps its own lines
    assert [d.protocol.name for d in parse_bgp_details(parse_reply(both))] == ["r1", "r2"]
    assert [d.neighbor_address for d in parse_bgp_details(parse_reply(both))] == ["10.77.0.2", "10.77.0.3"]


def test_parse_bfd_sessions():
    assert parse_bfd_sessions(reply("bfd_sessions")) == [
        BfdSession("bfd1", "10.77.0.2", "va", "Up", "17:22:56.479", 0.1, 0.5)
    ]
    assert parse_bfd_sessions(reply("router_bfd_down")) == [
        BfdSession("bfd1", "10.77.0.1", "vb", "Down", "17:23:49.272", 1.0, 0.0)
    ]
    with pytest.raises(BirdError, match="6 fields"):
        parse_bfd_sessions(parse_reply(b"1020-bfd1:\n 10.0.0.1 eth0 Up\n0000 \n"))


# --- the client against fake servers -----------------------------------------------------------


class FakeServer:
    """A unix socket server that answers each connection with ``handler(reader, writer)``."""

    def __init__(self, path: str, handler):
        self.path = path
        self.handler = handler
        self.server: asyncio.base_events.Server | None = None
        self.commands: list[bytes] = []

    async def __aenter__(self):
        self.server = await asyncio.start_unix_server(self._serve, self.path)
        return self

    async def _serve(self, reader, writer):
        try:
            await self.handler(self, reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def __aexit__(self, *exc):
        self.server.close()
        await self.server.wait_closed()


async def greet_and_read(server, reader, writer) -> None:
    writer.write(b"0001 BIRD 2.0.12 ready.\n")
    await writer.drain()
    server.commands.append(await reader.readline())


async def good(server, reader, writer):
    await greet_and_read(server, reader, writer)
    writer.write(sample("protocols_established"))
    await writer.drain()


async def garbage(server, reader, writer):
    await greet_and_read(server, reader, writer)
    writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    await writer.drain()


async def bad_greeting(server, reader, writer):
    writer.write(b"220 smtp.example ESMTP\n")
    await writer.drain()
    await asyncio.sleep(5)


async def endless(server, reader, writer):
    await greet_and_read(server, reader, writer)
    writer.write(b"1002-")
    while True:
        writer.write(b" r1 BGP --- up 17:00:00.000 Established\n" * 100)
        await writer.drain()


async def long_line(server, reader, writer):
    await greet_and_read(server, reader, writer)
    while True:
        writer.write(b"x" * 65536)
        await writer.drain()


async def silent(server, reader, writer):
    await greet_and_read(server, reader, writer)
    writer.write(b"1002-r1 BGP --- up 17:00:00.000 Established\n")  # and never the final line
    await writer.drain()
    await asyncio.sleep(30)


async def trickle(server, reader, writer):
    await greet_and_read(server, reader, writer)
    while True:
        writer.write(b" ")
        await writer.drain()
        await asyncio.sleep(0.05)


async def closes(server, reader, writer):
    await greet_and_read(server, reader, writer)
    writer.write(b"1002-r1 BGP --- up\n")


async def error_reply(server, reader, writer):
    await greet_and_read(server, reader, writer)
    writer.write(b"8003 No protocols match\n")


async def test_client_reads_one_reply(tmp_path):
    path = str(tmp_path / "s.ctl")
    async with FakeServer(path, good) as server:
        answer = await bird_command(path, "show protocols")
    assert server.commands == [b"show protocols\n"]
    assert answer == parse_reply(sample("protocols_established"))


@pytest.mark.parametrize(
    "handler, why",
    [
        (garbage, "malformed reply line: HTTP/1.1 400 Bad Request"),
        (bad_greeting, "malformed reply line: 220 smtp.example ESMTP"),
        (endless, "larger than the limit"),
        (long_line, "longer than 4096 bytes"),
        (silent, "no complete reply to 'show protocols' within 0.5 s"),
        (trickle, "no complete reply to 'show protocols' within 0.5 s"),
        (closes, "connection closed"),
    ],
)
async def test_client_refuses_hostile_servers(tmp_path, handler, why):
    path = str(tmp_path / "s.ctl")
    async with FakeServer(path, handler):
        started = time.monotonic()
        with pytest.raises(BirdError, match=re.escape(why)) as caught:
            await bird_command(path, "show protocols", timeout=0.5, max_bytes=100_000)
        assert time.monotonic() - started < 1.5
    assert caught.value.code is None and caught.value.path == path


async def test_client_error_reply_has_its_code(tmp_path):
    path = str(tmp_path / "s.ctl")
    async with FakeServer(path, error_reply):
        with pytest.raises(BirdError, match="8003 No protocols match") as caught:
            await bird_command(path, "show protocols all nope")
    assert (caught.value.code, caught.value.message) == (8003, "No protocols match")


async def test_client_refuses_what_is_not_a_listening_socket(tmp_path):
    with pytest.raises(BirdError, match="no such file"):
        await bird_command(str(tmp_path / "missing.ctl"), "show status")
    plain = tmp_path / "plain"
    plain.write_text("0001 BIRD ready.\n")
    with pytest.raises(BirdError, match="is not a unix socket"):
        await bird_command(str(plain), "show status")
    stale = str(tmp_path / "stale.ctl")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(stale)  # bound, never listening: connect(2) is refused
    try:
        with pytest.raises(BirdError, match="connection refused"):
            await bird_command(stale, "show status")
    finally:
        sock.close()


@pytest.mark.parametrize(
    "command, why",
    [
        ("", "empty command"),
        ("   ", "empty command"),
        ("show status\nshutdown", "control character '\\\\n'"),
        ("show\x00status", "control character"),
        ("show\x1bstatus", "control character"),
        ("show\x85status", "control character"),
        ("x" * (MAX_COMMAND_BYTES + 1), "more than 1022"),
    ],
)
async def test_client_validates_the_command(tmp_path, command, why):
    path = str(tmp_path / "s.ctl")
    async with FakeServer(path, good) as server:
        with pytest.raises(BirdError, match=why):
            await bird_command(path, command)
    assert server.commands == []


# --- the client against a real BIRD ---------------------------------------------------------------


@pytest.fixture
def real_bird(tmp_path):
    """A BIRD in a namespace of its own (only `protocol device`); yields (config file, socket)."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if not os.path.exists(BIRD):
        pytest.skip("BIRD 2 (/usr/sbin/bird, package bird2) is not installed")
    ns = f"{PREFIX}-a"
    N.cleanup_netns(PREFIX)
    N.create_netns(ns)
    conf = tmp_path / "bird.conf"
    conf.write_text("router id 10.232.0.1;\nprotocol device {}\n")
    ctl = str(tmp_path / "bird.ctl")
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, BIRD, "-f", "-c", str(conf), "-s", ctl, "-P", str(tmp_path / "bird.pid")],
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 5
        while not os.path.exists(ctl) and time.monotonic() < deadline:
            time.sleep(0.02)
        yield conf, ctl
    finally:
        proc.terminate()
        proc.wait(5)
        N.cleanup_netns(PREFIX)


async def test_real_bird(real_bird):
    conf, ctl = real_bird
    status = await bird_command(ctl, "show status")
    assert status.lines[0] == ReplyLine(1000, "BIRD 2.0.12") and status.code == 13
    assert parse_protocols(await bird_command(ctl, "show protocols")) == [
        ProtocolState(
            "device1", "Device", "---", "up", parse_protocols(await bird_command(ctl, "show protocols"))[0].since, ""
        )
    ]
    with pytest.raises(BirdError) as caught:
        await bird_command(ctl, "show protocols all nope")
    assert caught.value.code == 9001 and "syntax error" in caught.value.message
    # the longest command allowed is read whole and parsed by BIRD; one byte more and BIRD
    # drops the connection (which is why the client refuses it)
    with pytest.raises(BirdError) as caught:
        await bird_command(ctl, "show " + "x" * (MAX_COMMAND_BYTES - 5))
    assert (caught.value.code, caught.value.message) == (9001, "Symbol too long")
    reader, writer = await asyncio.open_unix_connection(ctl)
    await reader.readline()
    writer.write(b"show " + b"x" * (MAX_COMMAND_BYTES - 4) + b"\n")
    try:
        assert await asyncio.wait_for(reader.read(100), 2) == b""
    except ConnectionResetError:
        pass
    writer.close()

    assert await bird_configure(ctl) == ConfigureResult(True, 3, "Reconfigured")
    conf.write_text("router id 10.232.0.1;\nprotocol device {}\nprotocol bgp { neighbor ; }\n")
    result = await bird_configure(ctl)
    assert not result.ok and result.code == 8002
    assert result.message.startswith(f"{conf}:3:") and "Local AS number must be set" in result.message
    # the running configuration is unchanged
    assert [p.name for p in parse_protocols(await bird_command(ctl, "show protocols"))] == ["device1"]
