"""The ``sip`` check: its codec byte for byte (RFC 3261) and the check against SIPp
answering OPTIONS on loopback, a stopped server, a silent one and hostile ones."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from checkhelpers import free_port, free_udp_port, stop_process, udp_server, wait_listening

from checks.base import CheckTarget, run_check
from checks.protocols.dialogue import ldirectord_dialogue
from checks.protocols.sip import (
    MAX_HEADERS,
    MAX_PROVISIONAL,
    SipResponse,
    decode_reply,
    default_login,
    encode_options,
    parse_response,
)
from checks.spec import MAX_EXPECT_READ, CheckSpec

needs_sipp = pytest.mark.skipif(
    shutil.which("sipp") is None, reason="SIPp is not installed (Debian package sip-tester)"
)

# --- codec -------------------------------------------------------------------------------------

#: ldirectord's check_sip request, with our random parts in place of its constants
#: (RFC 3261 section 8.1.1: Request-URI, To, From with tag, Call-ID, CSeq, Max-Forwards, Via).
EXPECTED_REQUEST = (
    b"OPTIONS sip:alice@10.0.0.2 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.1:40000;branch=z9hG4bKabc123\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: <sip:alice@10.0.0.2>\r\n"
    b"From: <sip:alice@10.0.0.2>;tag=77aa\r\n"
    b"Call-ID: c4ll1d\r\n"
    b"CSeq: 1 OPTIONS\r\n"
    b"Contact: <sip:alice@10.0.0.2>\r\n"
    b"Accept: application/sdp\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def test_encode_options_byte_for_byte():
    assert encode_options("alice@10.0.0.2", "10.0.0.1", 40000, "z9hG4bKabc123", "77aa", "c4ll1d") == EXPECTED_REQUEST


def test_encode_options_puts_an_ipv6_via_in_brackets():
    request = encode_options("directord@[2001:db8::2]", "2001:db8::1", 5062, "z9hG4bKx", "t", "c", cseq=7)
    assert request.startswith(
        b"OPTIONS sip:directord@[2001:db8::2] SIP/2.0\r\nVia: SIP/2.0/UDP [2001:db8::1]:5062;branch=z9hG4bKx\r\n"
    )
    assert b"\r\nCSeq: 7 OPTIONS\r\n" in request


@pytest.mark.parametrize("login", ["", "a b@host", "alice@host\r\nX-Injected: 1", "a\tb", "<alice@host>", "a\x00b"])
def test_encode_options_refuses_a_login_that_breaks_the_request(login: str):
    with pytest.raises(ValueError, match="sip login must be user@host"):
        encode_options(login, "10.0.0.1", 1, "z9hG4bKx", "t", "c")


def test_default_login():
    assert default_login("10.0.0.2") == "directord@10.0.0.2"
    assert default_login("2001:db8::2") == "directord@[2001:db8::2]"
    assert default_login("fe80::2%eth0") == "directord@[fe80::2]"


REPLY_200 = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.1:40000;branch=z9hG4bKabc123;received=10.0.0.1, SIP/2.0/UDP 10.9.9.9;branch=z9hG4bKo\r\n"
    b"From: <sip:alice@10.0.0.2>;tag=77aa\r\n"
    b"To: <sip:alice@10.0.0.2>;tag=server\r\n"
    b"Call-ID: c4ll1d\r\n"
    b"CSeq: 1 OPTIONS\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def test_parse_response():
    assert parse_response(REPLY_200) == SipResponse("SIP/2.0 200 OK", 200, "c4ll1d", "1 OPTIONS", "z9hG4bKabc123")


def test_parse_response_compact_forms_folding_bare_lf_and_body():
    reply = (
        b"SIP/2.0 404 Not Found\n"
        b"v: SIP/2.0/UDP 10.0.0.1:40000\n"
        b" ;BRANCH = z9hG4bKabc123\n"
        b"i: c4ll1d\n"
        b"CSeq:  1\n"
        b"\t OPTIONS\n"
        b"Call-ID: a-later-one\n"
        b"\n"
        b"Call-ID: in-the-body\n"
    )
    assert parse_response(reply) == SipResponse("SIP/2.0 404 Not Found", 404, "c4ll1d", "1 OPTIONS", "z9hG4bKabc123")


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (b"", "not a SIP response: ''"),
        (b"HTTP/1.1 200 OK\r\n\r\n", "not a SIP response: 'HTTP/1.1 200 OK'"),
        (b"SIP/2.0 20 OK\r\n\r\n", "not a SIP response: 'SIP/2.0 20 OK'"),
        (b"SIP/2.0 200OK\r\n\r\n", "not a SIP response: 'SIP/2.0 200OK'"),
        (b"SIP/2.0 099 Odd\r\n\r\n", "SIP status code 99 out of 100-699"),
        (b"SIP/2.0 200 OK\r\nno colon here\r\n\r\n", "SIP reply line 2 is not a header"),
        (
            b"SIP/2.0 200 OK\r\n" + b"X: y\r\n" * (MAX_HEADERS + 1),
            f"SIP reply with more than {MAX_HEADERS} header lines",
        ),
    ],
)
def test_parse_response_refuses(reply: bytes, reason: str):
    with pytest.raises(ValueError) as caught:
        parse_response(reply)
    assert str(caught.value) == reason


def test_parse_response_takes_max_headers():
    reply = b"SIP/2.0 200 OK\r\n" + b"X: y\r\n" * MAX_HEADERS + b"\r\n"
    assert parse_response(reply).code == 200


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ((b"Call-ID: c4ll1d", b"Call-ID: C4LL1D"), "SIP reply Call-ID does not match"),
        ((b"Call-ID: c4ll1d", b"X-Call-ID: c4ll1d"), "SIP reply Call-ID does not match"),
        ((b"CSeq: 1 OPTIONS", b"CSeq: 2 OPTIONS"), "SIP reply CSeq does not match"),
        ((b"CSeq: 1 OPTIONS", b"CSeq: 1 INVITE"), "SIP reply CSeq does not match"),
        ((b"CSeq: 1 OPTIONS", b"CSeq: 1"), "SIP reply CSeq does not match"),
        ((b"branch=z9hG4bKabc123;", b"branch=z9hG4bKabc124;"), "SIP reply Via branch does not match"),
        ((b"Via:", b"Route:"), "SIP reply Via branch does not match"),
    ],
)
def test_decode_reply_refuses_another_transaction(change: tuple[bytes, bytes], reason: str):
    assert decode_reply(REPLY_200, "c4ll1d", 1, "z9hG4bKabc123").code == 200
    with pytest.raises(ValueError) as caught:
        decode_reply(REPLY_200.replace(*change), "c4ll1d", 1, "z9hG4bKabc123")
    assert str(caught.value) == reason


def test_decode_reply_bounds_the_size():
    with pytest.raises(ValueError, match=f"longer than {MAX_EXPECT_READ} bytes"):
        decode_reply(REPLY_200 + bytes(MAX_EXPECT_READ), "c4ll1d", 1, "z9hG4bKabc123")


# --- the check on loopback ---------------------------------------------------------------------


def target(port: int, rip: str = "127.0.0.1", timeout: float = 1.0, **settings: str) -> CheckTarget:
    spec = CheckSpec(type="sip", timeout=timeout, **settings)  # type: ignore[arg-type]
    return CheckTarget(
        key=("svc", rip, port), name=f"rs {rip}:{port}", vip=None, vport=0, rip=rip, rport=port, spec=spec
    )


#: A SIPp UAS scenario: every OPTIONS is answered, optionally first with 100 Trying.
SCENARIO = """\
<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="answer OPTIONS with {status}">
  <recv request="OPTIONS" />
  {provisional}
  <send>
    <![CDATA[

      SIP/2.0 {status}
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Allow: OPTIONS
      Content-Length: 0

    ]]>
  </send>
</scenario>
"""

TRYING = """<send>
    <![CDATA[

      SIP/2.0 100 Trying
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>"""


@contextlib.asynccontextmanager
async def sipp(directory: Path, status: str = "200 OK", *, trying: bool = False) -> AsyncIterator[int]:
    """SIPp as a UAS on 127.0.0.1 answering every OPTIONS with ``status``; yields its port."""
    directory.mkdir(parents=True, exist_ok=True)
    scenario = directory / "uas.xml"
    scenario.write_text(SCENARIO.format(status=status, provisional=TRYING if trying else ""))
    port = free_udp_port()
    server = subprocess.Popen(
        ["sipp", "-sf", str(scenario), "-i", "127.0.0.1", "-p", str(port), "-t", "u1", "-nostdin", "-trace_msg"],
        cwd=directory,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while (await run_check(target(port, timeout=0.2), None)).reason == "ICMP port unreachable":
            if server.poll() is not None or time.monotonic() > deadline:
                assert server.stderr is not None
                pytest.fail(f"SIPp did not start: {server.stderr.read().decode(errors='replace')[-2000:]}")
            await asyncio.sleep(0.05)
        yield port
    finally:
        stop_process(server)


@needs_sipp
async def test_sipp_answering_200_passes(tmp_path: Path):
    async with sipp(tmp_path) as port:
        result = await run_check(target(port), None)
        assert (result.ok, result.reason) == (True, "SIP/2.0 200 OK")
        result = await run_check(target(port, login="alice@127.0.0.1", expect=r"^SIP/2\.0 200 "), None)
        assert (result.ok, result.reason) == (True, "SIP/2.0 200 OK")
        result = await run_check(target(port, expect=r" 404 "), None)
        assert (result.ok, result.reason) == (False, "SIP/2.0 200 OK does not match ' 404 '")
    start = time.monotonic()
    result = await run_check(target(port, timeout=2.0), None)
    assert (result.ok, result.reason, result.timed_out) == (False, "ICMP port unreachable", False)
    assert time.monotonic() - start < 0.5


@needs_sipp
@pytest.mark.parametrize("status", ["404 Not Found", "503 Service Unavailable"])
async def test_sipp_answering_an_error_fails_unless_expect_allows_it(tmp_path: Path, status: str):
    async with sipp(tmp_path, status) as port:
        result = await run_check(target(port), None)
        assert (result.ok, result.reason) == (False, f"SIP/2.0 {status}")
        result = await run_check(target(port, expect=r"^SIP/2\.0 (200|404|503) "), None)
        assert (result.ok, result.reason) == (True, f"SIP/2.0 {status}")


@needs_sipp
async def test_a_provisional_response_is_skipped(tmp_path: Path):
    async with sipp(tmp_path, trying=True) as port:
        result = await run_check(target(port), None)
    assert (result.ok, result.reason) == (True, "SIP/2.0 200 OK")
    (log,) = tmp_path.glob("uas_*_messages.log")
    assert log.read_text().count("SIP/2.0 100 Trying") >= 1  # SIPp did send one before the 200


def answer(status: str, *, count: int = 1, call_id: str | None = None) -> Callable[[bytes], list[bytes]]:
    """Answer an OPTIONS ``count`` times with ``status``, echoing Via, Call-ID and CSeq."""

    def respond(data: bytes) -> list[bytes]:
        headers = dict(line.split(": ", 1) for line in data.decode().split("\r\n")[1:] if ": " in line)
        reply = (
            f"SIP/2.0 {status}\r\nVia: {headers['Via']}\r\nCall-ID: {call_id or headers['Call-ID']}\r\n"
            f"CSeq: {headers['CSeq']}\r\nContent-Length: 0\r\n\r\n"
        )
        return [reply.encode()] * count

    return respond


async def test_a_silent_server_times_out():
    async with udp_server(lambda data: []) as (port, server):
        start = time.monotonic()
        result = await run_check(target(port, timeout=0.3), None)
        elapsed = time.monotonic() - start
    assert (result.ok, result.reason, result.timed_out) == (False, "timeout after 0.3 s", True)
    assert 0.3 <= elapsed < 0.3 + 0.3
    assert len(server.received) == 1 and server.received[0].startswith(b"OPTIONS sip:directord@127.0.0.1 SIP/2.0\r\n")


async def test_each_check_has_its_own_branch_tag_and_call_id():
    async with udp_server(lambda data: []) as (port, server):
        for _ in range(3):
            await run_check(target(port, timeout=0.05), None)
    assert len(server.received) == 3
    for field in (b"Via:", b"From:", b"Call-ID:"):
        values = {next(line for line in r.split(b"\r\n") if line.startswith(field)) for r in server.received}
        assert len(values) == 3, field
    assert all(b";branch=z9hG4bK" in r for r in server.received)


async def test_a_reply_to_another_call_fails():
    async with udp_server(answer("200 OK", call_id="someone-else")) as (port, _server):
        result = await run_check(target(port), None)
    assert (result.ok, result.reason) == (False, "SIP reply Call-ID does not match")


async def test_too_many_provisional_responses_fail():
    async with udp_server(answer("180 Ringing", count=MAX_PROVISIONAL + 1)) as (port, _server):
        result = await run_check(target(port), None)
    assert (result.ok, result.reason) == (False, f"more than {MAX_PROVISIONAL} provisional SIP responses")


async def test_garbage_fails():
    async with udp_server(lambda data: [b"\x00\xff garbage"]) as (port, _server):
        result = await run_check(target(port), None)
    assert (result.ok, result.timed_out) == (False, False)
    assert result.reason.startswith("not a SIP response: ")


async def test_a_reason_phrase_other_than_ok_passes():
    async with udp_server(answer("200 Fine")) as (port, _server):
        result = await run_check(target(port), None)
    assert (result.ok, result.reason) == (True, "SIP/2.0 200 Fine")


async def test_ipv6():
    try:
        server = udp_server(answer("200 OK"), "::1")
        port, protocol = await server.__aenter__()
    except OSError:
        pytest.skip("no IPv6 on loopback")
    try:
        result = await run_check(target(port, rip="::1"), None)
    finally:
        await server.__aexit__(None, None, None)
    assert (result.ok, result.reason) == (True, "SIP/2.0 200 OK")
    assert protocol.received[0].startswith(b"OPTIONS sip:directord@[::1] SIP/2.0\r\nVia: SIP/2.0/UDP [::1]:")


async def test_a_bad_login_or_expect_fails_without_sending():
    async with udp_server(lambda data: []) as (port, server):
        result = await run_check(target(port, login="a b"), None)
        assert not result.ok and "sip login must be user@host" in result.reason
        result = await run_check(target(port, expect="(a"), None)
        assert not result.ok and result.reason.startswith("ValueError: bad expect regex: ")
    assert server.received == []


@contextlib.contextmanager
def sipp_tcp(directory: Path, status: str = "200 OK"):
    """SIPp as a UAS over TCP on 127.0.0.1 answering every OPTIONS with ``status``; yields its port."""
    directory.mkdir(parents=True, exist_ok=True)
    scenario = directory / "uas.xml"
    scenario.write_text(SCENARIO.format(status=status, provisional=""))
    port = free_port()
    server = subprocess.Popen(
        ["sipp", "-sf", str(scenario), "-i", "127.0.0.1", "-p", str(port), "-t", "t1", "-nostdin"],
        cwd=directory,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_listening(port, server, name="SIPp")
        yield port
    finally:
        stop_process(server)


@needs_sipp
@pytest.mark.parametrize(("status", "ok"), [("200 OK", True), ("404 Not Found", False)])
async def test_ldirectord_sip_over_tcp_dialogue_against_sipp(tmp_path: Path, status: str, ok: bool):
    # convert's check of ldirectord's sip negotiate check on a TCP service: OPTIONS over TCP
    steps = ldirectord_dialogue("sip", "", "", "", "")
    spec = CheckSpec(type="tcp", dialogue=steps, timeout=2.0)
    with sipp_tcp(tmp_path, status) as port:
        result = await run_check(
            CheckTarget(key="rs", name="rs", vip=None, vport=0, rip="127.0.0.1", rport=port, spec=spec), None
        )
    assert result.ok is ok, result.reason
    # SIPp keeps the connection open after its answer: the dialogue's fail step ends the check
    assert not result.timed_out, result.reason
    if not ok:
        assert "reply matches fail" in result.reason and '"SIP/2.0 404 Not Found' in result.reason, result.reason
