"""The ``ftp`` check (checks.protocols.ftp) against pyftpdlib's FTP server on loopback.

The hostile cases (silence, garbage, a PASV reply naming another address, a server that logs in
on USER alone) are small fake servers.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from checkhelpers import fake_server, free_port, ftp_server, open_fds, silent, target, timed_against

from checks.base import CheckResult, run_check
from checks.protocols import ftp
from checks.spec import CheckSpec

pytest.importorskip("pyftpdlib", reason="pyftpdlib (test-only) is not installed")

HELLO = b"hello from the real server\r\n"
#: A 1 MiB file: EARLY inside its first 64 KiB, LATE past them.
EARLY, LATE = b"EARLY-MARK", b"LATE-MARK"


async def check(port: int, rip: str = "127.0.0.1", **fields) -> CheckResult:
    spec = CheckSpec(type="ftp", timeout=fields.pop("timeout", 2.0), **fields)
    return await run_check(target(spec, port, rip), None)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ftproot")
    (root / "hello.txt").write_bytes(HELLO)
    big = bytearray(b"." * (1024 * 1024))
    big[60000 : 60000 + len(EARLY)] = EARLY
    big[70000 : 70000 + len(LATE)] = LATE
    (root / "big.bin").write_bytes(bytes(big))
    return root


@pytest.fixture(scope="module")
def server(files) -> Iterator[int]:
    with ftp_server(files, anonymous=True) as port:
        yield port


# --- against pyftpdlib ---------------------------------------------------------------------------


async def test_login_and_download_pass(server):
    result = await check(server, login="alice", password="s3cret", query="hello.txt", expect="^hello from")
    assert result.ok, result.reason
    assert result.reason == "FTP download ok"


async def test_anonymous_login_with_the_default_password_passes(server):
    result = await check(server)
    assert result.ok, result.reason
    assert result.reason == "FTP login ok"
    assert ftp.DEFAULT_LOGIN == "anonymous" and ftp.DEFAULT_PASSWORD == "directord@localhost"
    assert (await check(server, query="/hello.txt", expect="real server")).ok  # ldirectord's leading "/"


async def test_wrong_password_fails(server):
    result = await check(server, login="alice", password="wrong")
    assert not result.ok and not result.timed_out
    assert result.reason == "FTP 530 Authentication failed."


async def test_missing_file_fails(server):
    result = await check(server, login="alice", password="s3cret", query="missing.txt")
    assert not result.ok
    assert result.reason.startswith("FTP RETR: 550 ")


async def test_content_mismatch_fails(server):
    result = await check(server, query="hello.txt", expect="^goodbye")
    assert not result.ok
    assert result.reason == "download does not match '^goodbye'"


async def test_only_the_first_64_kib_of_a_large_file_are_read(server):
    start = time.monotonic()
    early = await check(server, query="big.bin", expect=EARLY.decode())
    late = await check(server, query="big.bin", expect=LATE.decode())
    assert early.ok, early.reason
    assert not late.ok and late.reason == f"download does not match {LATE.decode()!r}"
    assert time.monotonic() - start < 1.5


async def test_multi_line_greeting_is_read_whole(files):
    # pyftpdlib sends a banner of more than 75 characters as "220-<banner>" and a last line "220 "
    banner = "Welcome to the real server\r\n 220 indented: not the end\r\n221 another code: not the end\r\n" + "=" * 80
    with ftp_server(files, anonymous=True, banner=banner) as port:
        result = await check(port, query="hello.txt", expect="hello")
    assert result.ok, result.reason


async def test_stopped_server_fails(files):
    with ftp_server(files, anonymous=True) as port:
        assert (await check(port)).ok
    result = await check(port)
    assert not result.ok and result.reason == "connection refused"


async def test_ipv6_loopback(files):
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    with ftp_server(files, anonymous=True, host="::1") as port:
        result = await check(port, rip="::1", query="hello.txt", expect="hello")
    assert result.ok, result.reason


async def test_line_breaks_in_settings_fail_without_connecting():
    result = await check(free_port(), login="alice\r\nDELE x")
    assert result.reason == "FTP login must not hold a line break or NUL"
    result = await check(free_port(), query="a\nb")
    assert result.reason == "FTP query must not hold a line break or NUL"
    result = await check(free_port(), expect="(")
    assert result.reason.startswith("bad expect regex: ")


# --- replies, unit -------------------------------------------------------------------------------


async def _reply(data: bytes) -> ftp.FtpReply:
    reader = asyncio.StreamReader(limit=ftp.MAX_REPLY)
    reader.feed_data(data)
    reader.feed_eof()
    return await ftp.read_reply(reader)


async def test_read_reply_single_and_multi_line():
    assert await _reply(b"220 ready\r\n") == ftp.FtpReply(220, "ready")
    assert await _reply(b"220\r\n") == ftp.FtpReply(220, "")
    # RFC 959 section 4.2: the reply ends with the line starting with the same code and a space;
    # lines in between may start with anything, even another code followed by a space
    multi = b"230-Welcome\r\n 230 not the end (leading space)\r\n231 not the end\r\n230 done\r\nNEXT"
    assert await _reply(multi) == ftp.FtpReply(230, "Welcome")
    assert str(ftp.FtpReply(530, "x" * 100)) == "530 " + "x" * 77 + "..."


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"HTTP/1.0 400 Bad\r\n", 'bad FTP reply: "HTTP/1.0 400 Bad"'),
        (b"999 nine\r\n", 'bad FTP reply: "999 nine"'),
        (b"22", "FTP server closed the connection mid-reply"),
        (b"", "FTP server closed the connection"),
        (b"220-start\r\n220-more\r\n", "FTP server closed the connection"),
        (b"2" * (ftp.MAX_REPLY + 10), "FTP reply line longer than 64 KiB"),
        (b"220-start\r\n" + b"x\r\n" * 40000, "FTP reply longer than 64 KiB"),
    ],
)
async def test_hostile_replies(data, reason):
    with pytest.raises(ftp.FtpError) as raised:
        await _reply(data)
    assert str(raised.value) == reason


def test_passive_replies():
    assert ftp.parse_epsv("Entering Extended Passive Mode (|||6446|)") == 6446
    assert ftp.parse_epsv("ok (!!!21!)") == 21
    assert ftp.parse_pasv("Entering Passive Mode (10,0,0,2,195,80).") == 50000
    assert ftp.parse_pasv("=10,0,0,2,0,21") == 21
    for bad in ("Entering Extended Passive Mode (|||0|)", "(|||70000|)", "(||6446|)", "(|!|1|)", "no port"):
        with pytest.raises(ftp.FtpError):
            ftp.parse_epsv(bad)
    for bad in ("(10,0,0,2,256,1)", "(10,0,0,2,0,0)", "(10,0,0,2,1)", "nothing"):
        with pytest.raises(ftp.FtpError):
            ftp.parse_pasv(bad)


# --- hostile servers -----------------------------------------------------------------------------


def _scripted(replies: dict[str, bytes], greeting: bytes = b"220 fake\r\n"):
    """A control connection answering each command's verb from ``replies`` (``500`` otherwise);
    records the commands in ``handle.commands``."""
    commands: list[str] = []

    async def handle(reader, writer):
        writer.write(greeting)
        while line := await reader.readline():
            command = line.decode().strip()
            commands.append(command)
            verb = command.split(" ", 1)[0]
            writer.write(replies.get(verb, b"500 unknown\r\n"))
            if verb == "QUIT":
                return

    handle.commands = commands  # type: ignore[attr-defined]
    return handle


async def test_silent_server_times_out_within_the_limit():
    result, elapsed = await timed_against(silent, lambda port: check(port, timeout=0.3))
    assert not result.ok and result.timed_out
    assert result.reason == "timeout after 0.3 s"
    assert elapsed < 0.3 + 0.25


async def test_a_refused_data_connection_is_named():
    handle = _scripted({"USER": b"331 pw\r\n", "PASS": b"230 in\r\n", "TYPE": b"200 ok\r\n",
                        "EPSV": b"229 (|||1|)\r\n"})  # fmt: skip
    # the data connection to port 1 is refused: that is said, not the control connection's error
    async with fake_server(handle) as port:
        result = await check(port, query="x")
    assert result.reason == "FTP data connection: connection refused"


async def test_garbage_greeting_fails_cleanly():
    async def garbage(reader, writer):
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n")
        await silent(reader, writer)

    async with fake_server(garbage) as port:
        result = await check(port)
    assert not result.ok and not result.timed_out
    assert result.reason == 'bad FTP reply: "SSH-2.0-OpenSSH_9.2"'


async def test_refusing_greeting_and_login_on_user_alone():
    busy = _scripted({}, greeting=b"421-Too many users\r\n421 try later\r\n")
    open_door = _scripted({"USER": b"230 no password needed\r\n", "QUIT": b"221 bye\r\n"})
    async with fake_server(busy) as a, fake_server(open_door) as b:
        refused = await check(a)
        passed = await check(b)
        await asyncio.sleep(0.05)
    assert refused.reason == "FTP greeting: 421 Too many users"
    assert passed.ok, passed.reason
    assert open_door.commands == ["USER anonymous", "QUIT"]  # type: ignore[attr-defined]


async def test_pasv_reply_naming_another_address_still_connects_to_the_rip():
    """EPSV is refused, PASV names 127.0.0.2: the data connection goes to the RIP, 127.0.0.1."""
    connected: dict[str, int] = {"rip": 0, "other": 0}

    async def serve_file(reader, writer):
        connected["rip"] += 1
        writer.write(HELLO)
        await writer.drain()

    async def decoy(reader, writer):
        connected["other"] += 1

    async with fake_server(serve_file) as data_port:
        try:
            decoy_server = fake_server(decoy, "127.0.0.2", data_port)
            await decoy_server.__aenter__()
        except OSError:
            pytest.skip("127.0.0.2 cannot be bound here")
        try:
            p1, p2 = divmod(data_port, 256)
            control = _scripted({
                "USER": b"331 pw\r\n", "PASS": b"230 in\r\n", "TYPE": b"200 binary\r\n", "EPSV": b"502 no EPSV\r\n",
                "PASV": f"227 Entering Passive Mode (127,0,0,2,{p1},{p2})\r\n".encode(),
                "RETR": b"150 here it comes\r\n226 done\r\n", "QUIT": b"221 bye\r\n",
            })  # fmt: skip
            async with fake_server(control) as port:
                result = await check(port, query="hello.txt", expect="^hello")
                await asyncio.sleep(0.05)
        finally:
            await decoy_server.__aexit__(None, None, None)
    assert result.ok, result.reason
    assert connected == {"rip": 1, "other": 0}
    assert control.commands == ["USER anonymous", "PASS directord@localhost", "TYPE I", "EPSV", "PASV",  # type: ignore[attr-defined]
                                "RETR hello.txt", "QUIT"]  # fmt: skip


async def test_a_whole_file_needs_the_final_reply():
    async def serve_file(reader, writer):
        writer.write(b"short file")
        await writer.drain()

    async with fake_server(serve_file) as data_port:
        control = _scripted({"USER": b"230 in\r\n", "TYPE": b"200 ok\r\n",
                             "EPSV": f"229 Extended (|||{data_port}|)\r\n".encode(),
                             "RETR": b"150 go\r\n426 aborted\r\n"})  # fmt: skip
        async with fake_server(control) as port:
            result = await check(port, query="f")
    assert result.reason == "FTP RETR: 426 aborted"


# --- no leak -------------------------------------------------------------------------------------


async def test_no_socket_leaks_over_hundreds_of_checks(server):
    async with fake_server(silent) as quiet:
        refused = free_port()
        await check(server, query="hello.txt")  # warm up: caches, the loop's own sockets
        before = open_fds()
        results = []
        for _ in range(25):
            batch = [check(server, query="hello.txt", expect="hello") for _ in range(2)]
            batch += [check(server, query="big.bin", expect="EARLY"), check(server, login="alice", password="no")]
            batch += [check(server, query="missing.txt"), check(server)]
            batch += [check(quiet, timeout=0.05), check(refused)]
            results += await asyncio.gather(*batch)
        await asyncio.sleep(0.3)  # transports close on the next loop iterations
        after = open_fds()
    assert len(results) == 200
    assert sum(r.ok for r in results) == 100
    assert after <= before, (before, after)
