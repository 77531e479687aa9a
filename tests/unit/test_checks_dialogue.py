"""The ``tcp`` check's dialogue (checks.protocols.dialogue) against real servers on loopback.

SMTP (with STARTTLS and with TLS from the start) is aiosmtpd's server, FTP pyftpdlib's; the
hostile cases (silence, a flood, an early close, clear text before TLS) are small fake servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import pytest
from checkhelpers import (
    certificate,
    ec_key,
    fake_server,
    free_port,
    ftp_server,
    needs_ipv6,
    open_fds,
    server_context,
    silent,
    target,
    timed_against,
    write_pem,
)

from checks.base import CheckResult, run_check
from checks.protocols.dialogue import (
    LDIRECTORD_DIALOGUES,
    LDIRECTORD_IMPLICIT_TLS,
    SMTP_STARTTLS,
    SettingError,
    ldirectord_dialogue,
)
from checks.spec import MAX_EXPECT_READ, CheckSpec

aiosmtpd_smtp = pytest.importorskip("aiosmtpd.smtp", reason="aiosmtpd (test-only) is not installed")
pytest.importorskip("pyftpdlib", reason="pyftpdlib (test-only) is not installed")

SMTP = LDIRECTORD_DIALOGUES["smtp"]
# Net::Cmd's reply (Net::SMTP, Net::FTP): lines "CODE-text" continue it, "CODE SP text" or "CODE"
# alone ends it (RFC 5321 section 4.2.1, RFC 959 section 4.2).
REPLY_2XX = r"(?m)^2\d\d(?: |\r?\n)"
REPLY_45X = r"(?m)^[45]\d\d(?: |\r?\n)"


def spec(dialogue=(), **fields) -> CheckSpec:
    return CheckSpec(type="tcp", dialogue=tuple(dialogue), timeout=fields.pop("timeout", 2.0), **fields)


async def check(port: int, dialogue=(), **fields) -> CheckResult:
    return await run_check(target(spec(dialogue, **fields), port), None)


# --- certificates ----------------------------------------------------------------------------


@dataclass
class Pki:
    ca_file: str  # PEM of the CA
    signed: ssl.SSLContext  # server context: leaf signed by the CA, names mail.test and 127.0.0.1
    self_signed: ssl.SSLContext  # server context: a self-signed certificate


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    pytest.importorskip("cryptography")
    tmp = tmp_path_factory.mktemp("pki")
    ca_key, leaf_key, own_key = (ec_key() for _ in range(3))
    ca = certificate("Test CA", ca_key, ca=True)
    write_pem(ca, tmp / "ca.pem")
    leaf = certificate("mail.test", leaf_key, "Test CA", ca_key, ca=False, names=("mail.test", "127.0.0.1"))
    own = certificate("mail.test", own_key, ca=False, names=("mail.test", "127.0.0.1"))
    return Pki(
        str(tmp / "ca.pem"), server_context(tmp, "leaf", leaf, leaf_key), server_context(tmp, "own", own, own_key)
    )


# --- servers ---------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def smtp_server(host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None, **smtp) -> AsyncIterator[int]:
    """aiosmtpd's SMTP server on loopback, in this loop; yields its port.  ``smtp``: arguments of
    aiosmtpd.smtp.SMTP (tls_context, require_starttls); ``ssl_context``: TLS from the first byte."""
    from aiosmtpd.handlers import Sink

    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: aiosmtpd_smtp.SMTP(Sink(), hostname="mx.test", **smtp), host, 0, ssl=ssl_context
    )
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.05)  # the sessions' tasks see their connections lost


# --- SMTP ------------------------------------------------------------------------------------


async def test_smtp_dialogue_passes_against_aiosmtpd():
    async with smtp_server() as port:
        result = await check(port, SMTP)
    assert result.ok, result.reason
    assert result.reason == "dialogue ok"


async def test_smtp_fails_when_the_server_is_stopped():
    async with smtp_server() as port:
        pass
    result = await check(port, SMTP)
    assert not result.ok and result.reason == "connection refused"


async def test_smtp_wrong_reply_fails_when_the_server_closes():
    # aiosmtpd answers "502 Command not implemented" to an unknown command, then QUIT closes
    dialogue = (("expect", "^220 "), ("send", "BOGUS\r\nQUIT\r\n"), ("expect", "(?m)^250 "))
    async with smtp_server() as port:
        result = await check(port, dialogue)
    assert not result.ok
    assert result.reason.startswith("dialogue step 3: reply does not match '(?m)^250 ' (connection closed): \"5")
    assert "221" in result.reason  # the quote shows what arrived, line breaks as spaces


async def test_smtp_wrong_reply_on_an_open_connection_fails_at_the_time_limit():
    dialogue = (("expect", "^220 "), ("send", "EHLO x\r\n"), ("expect", "^554 "))
    async with smtp_server() as port:
        start = time.monotonic()
        result = await check(port, dialogue, timeout=0.3)
    assert not result.ok and result.timed_out
    assert time.monotonic() - start < 1.0


async def test_smtp_starttls_verify_none_self_signed(pki):
    async with smtp_server(tls_context=pki.self_signed, require_starttls=True) as port:
        result = await check(port, SMTP_STARTTLS, verify_tls="none")
    assert result.ok, result.reason


async def test_smtp_starttls_verify_chain_refuses_self_signed(pki):
    async with smtp_server(tls_context=pki.self_signed, require_starttls=True) as port:
        result = await check(port, SMTP_STARTTLS, verify_tls="chain", ca_file=pki.ca_file)
    assert not result.ok
    assert result.reason.startswith("dialogue step 6: TLS certificate verify failed: self-signed certificate")


async def test_smtp_starttls_verify_chain_and_full_accept_a_ca_signed_certificate(pki):
    async with smtp_server(tls_context=pki.signed, require_starttls=True) as port:
        chain = await check(port, SMTP_STARTTLS, verify_tls="chain", ca_file=pki.ca_file)
        full = await check(port, SMTP_STARTTLS, verify_tls="full", ca_file=pki.ca_file, sni="mail.test")
        full_rip = await check(port, SMTP_STARTTLS, verify_tls="full", ca_file=pki.ca_file)  # 127.0.0.1 in SAN
        wrong_name = await check(port, SMTP_STARTTLS, verify_tls="full", ca_file=pki.ca_file, sni="other.test")
    assert chain.ok, chain.reason
    assert full.ok, full.reason
    assert full_rip.ok, full_rip.reason
    assert not wrong_name.ok
    assert wrong_name.reason.startswith("dialogue step 6: TLS certificate verify failed: Hostname mismatch")


async def test_smtp_requiring_starttls_refuses_mail_in_clear_but_accepts_it_after_starttls(pki):
    # what TLS changes is seen by the server: MAIL FROM before STARTTLS gets 530
    before = (("expect", "^220 "), ("send", "EHLO x\r\n"), ("expect", "(?m)^250 "),
              ("send", "MAIL FROM:<a@b.test>\r\n"), ("expect", "^250 "))  # fmt: skip
    after = SMTP_STARTTLS[:-1] + (("send", "MAIL FROM:<a@b.test>\r\n"), ("expect", "^250 "))
    async with smtp_server(tls_context=pki.self_signed, require_starttls=True) as port:
        clear = await check(port, before, timeout=0.3)
        tls = await check(port, after)
    assert not clear.ok and clear.timed_out
    assert tls.ok, tls.reason


async def test_implicit_tls_against_aiosmtpd_over_tls(pki):
    async with smtp_server(ssl_context=pki.signed) as port:
        ok = await check(port, SMTP, tls=True, verify_tls="full", ca_file=pki.ca_file, sni="mail.test")
        handshake_only = await check(port, (), tls=True, verify_tls="chain", ca_file=pki.ca_file)
        clear = await check(port, SMTP, timeout=0.3)  # no TLS: the server waits for a ClientHello
        refused = await check(port, SMTP, tls=True, verify_tls="chain")  # the system's CAs
    assert ok.ok, ok.reason
    assert handshake_only.ok and handshake_only.reason == "TLS handshake ok"
    assert not clear.ok and clear.timed_out
    assert not refused.ok
    assert refused.reason.startswith("TLS certificate verify failed: unable to get local issuer certificate")


async def test_implicit_tls_against_a_clear_text_server_fails():
    async def banner(reader, writer):
        writer.write(b"220 clear text\r\n")
        await reader.read(1000)

    async with fake_server(banner) as port:
        result = await check(port, SMTP, tls=True)
    assert not result.ok
    assert result.reason.startswith("TLS error") or result.reason == "data received before TLS started"


@needs_ipv6
async def test_smtp_over_ipv6():
    async with smtp_server(host="::1") as port:
        result = await run_check(target(spec(SMTP), port, rip="::1"), None)
    assert result.ok, result.reason


# --- FTP ---------------------------------------------------------------------------------------


async def test_ftp_login_passes_against_pyftpdlib(tmp_path):
    dialogue = ldirectord_dialogue("ftp", "alice", "s3cret", "/", "")
    with ftp_server(tmp_path) as port:
        result = await check(port, dialogue)
    assert result.ok, result.reason


async def test_ftp_anonymous_login_of_ldirectord_defaults(tmp_path):
    with ftp_server(tmp_path, anonymous=True) as port:
        anonymous = await check(port, LDIRECTORD_DIALOGUES["ftp"])
    with ftp_server(tmp_path) as port:
        refused = await check(port, LDIRECTORD_DIALOGUES["ftp"], timeout=0.5)
    assert anonymous.ok, anonymous.reason
    assert not refused.ok  # 530 to USER anonymous; pyftpdlib keeps the connection open


async def test_ftp_wrong_password_fails(tmp_path):
    dialogue = ldirectord_dialogue("ftp", "alice", "wrong", "/", "")
    with ftp_server(tmp_path) as port:
        start = time.monotonic()
        result = await check(port, dialogue, timeout=2.0)
    assert not result.ok
    # pyftpdlib answers 530 and waits for another try: the fail step ends the check at once
    assert not result.timed_out
    assert result.reason.startswith(f'dialogue step 7: reply matches fail {REPLY_45X!r}: "530 '), result.reason
    assert time.monotonic() - start < 1.5


async def test_ftp_wrong_password_fails_with_the_reply_when_the_server_closes(tmp_path):
    dialogue = ldirectord_dialogue("ftp", "alice", "wrong", "/", "")
    # QUIT before reading PASS's reply; 230 only, as QUIT's 221 is a 2xx too
    dialogue = dialogue[:6] + (("send", "QUIT\r\n"), ("expect", "(?m)^230 "))
    with ftp_server(tmp_path) as port:
        result = await check(port, dialogue)
    assert not result.ok
    assert result.reason.startswith("dialogue step 8: reply does not match '(?m)^230 ' (connection closed): \"530 ")
    assert "221 " in result.reason


async def test_ftp_fails_when_the_server_is_stopped(tmp_path):
    with ftp_server(tmp_path) as port:
        pass
    result = await check(port, LDIRECTORD_DIALOGUES["ftp"])
    assert not result.ok and result.reason == "connection refused"


# --- hostile servers -------------------------------------------------------------------------


async def test_silent_server_times_out_within_the_limit():
    async def silent(reader, writer):
        await reader.read(1 << 20)
        await asyncio.sleep(60)

    result, elapsed = await timed_against(silent, lambda port: check(port, SMTP, timeout=0.3))
    assert not result.ok and result.timed_out and result.reason == "timeout after 0.3 s"
    assert elapsed < 0.3 + 0.3


async def test_flood_without_a_match_fails_after_64_kib_quickly():
    async def flood(reader, writer):
        chunk = b"x" * 65536
        while True:
            writer.write(chunk)
            await writer.drain()

    result, elapsed = await timed_against(flood, lambda port: check(port, SMTP, timeout=5))
    assert not result.ok and not result.timed_out
    quote = '"' + "x" * 57 + '..."'
    regex = repr(REPLY_2XX)
    assert result.reason == f"dialogue step 1: reply does not match {regex} in 64 KiB: {quote}"
    assert elapsed < 0.5


async def test_a_match_just_within_64_kib_passes_and_past_it_fails():
    async def late(reader, writer):
        size = int((await reader.readline()).decode())
        writer.write(b"x" * size + b"\r\n220 ok\r\n")
        await asyncio.sleep(60)

    dialogue = (("send", "{}\r\n"), ("expect", "(?m)^220 ok"))
    async with fake_server(late) as port:
        within = await check(port, ((dialogue[0][0], f"{MAX_EXPECT_READ - 10}\r\n"), dialogue[1]))
        past = await check(port, ((dialogue[0][0], f"{MAX_EXPECT_READ - 5}\r\n"), dialogue[1]))
    assert within.ok, within.reason
    assert not past.ok and "in 64 KiB" in past.reason


async def test_server_closing_mid_dialogue():
    async def hang_up(reader, writer):
        writer.write(b"220 hello\r\n")
        await reader.readline()

    async with fake_server(hang_up) as port:
        after_send = await check(port, SMTP)
        send_after_close = await check(port, (("expect", "^220"), ("send", "A\r\n"), ("expect", "^2"),
                                              ("send", "B\r\n")))  # fmt: skip
    assert not after_send.ok
    assert after_send.reason == f"dialogue step 4: connection closed before {REPLY_2XX!r} matched"
    assert not send_after_close.ok
    assert send_after_close.reason == "dialogue step 3: connection closed before '^2' matched"


async def test_expect_after_the_server_closed_quotes_what_arrived():
    async def bye(reader, writer):
        writer.write(b"220 bye\r\n")

    async with fake_server(bye) as port:
        result = await check(port, (("expect", "^220"), ("expect", "never"), ("send", "EHLO x\r\n")))
    assert result.reason == "dialogue step 2: reply does not match 'never' (connection closed): \"220 bye\""


async def test_server_resetting_mid_dialogue():
    async def reset(reader, writer):
        writer.write(b"220 hello\r\n")
        await reader.readline()
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    async with fake_server(reset) as port:
        result = await check(port, SMTP)
    assert not result.ok and result.reason == "dialogue step 4: connection reset"


async def test_clear_text_after_the_go_ahead_is_refused_before_starttls():
    async def inject(reader, writer):
        writer.write(b"220 ready\r\n")
        await reader.readline()
        writer.write(b"220 go ahead\r\n250 injected\r\n")
        await reader.read(1000)

    dialogue = (("expect", "^220"), ("send", "STARTTLS\r\n"), ("expect", "^220 go ahead\r\n"), ("starttls", ""))
    async with fake_server(inject) as port:
        result = await check(port, dialogue)
    assert not result.ok and result.reason == "dialogue step 4: data received before TLS started"


async def test_starttls_refused_by_a_clear_text_server_fails():
    async def no_tls(reader, writer):
        writer.write(b"220 ready\r\n")
        await reader.readline()
        writer.write(b"220 go ahead\r\n")
        await reader.read(1000)  # a ClientHello
        writer.write(b"500 what?\r\n")

    dialogue = (("expect", "^220"), ("send", "STARTTLS\r\n"), ("expect", "(?m)^220 go ahead\r\n"), ("starttls", ""))
    async with fake_server(no_tls) as port:
        result = await check(port, dialogue)
    assert not result.ok
    assert result.reason.startswith("dialogue step 4: TLS error") or result.reason.startswith(
        "dialogue step 4: connection"
    )


async def test_binary_reply_is_quoted_printably():
    async def garbage(reader, writer):
        writer.write(bytes(range(256)))

    async with fake_server(garbage) as port:
        result = await check(port, (("expect", "^220"),))
    assert not result.ok
    # control bytes become dots, whitespace runs one space, the quote stops at 60 characters
    quoted = ".........", ".............." + "".join(chr(c) for c in range(32, 64))
    expected = '"' + (" ".join(quoted) + "@")[:57] + '..."'
    assert result.reason == f"dialogue step 1: reply does not match '^220' (connection closed): {expected}"


# --- no leak -----------------------------------------------------------------------------------


async def test_no_socket_leaks_over_hundreds_of_checks(pki):
    async def flood(reader, writer):
        while True:
            writer.write(b"y" * 65536)
            await writer.drain()

    async with (
        smtp_server(tls_context=pki.self_signed) as smtp,
        fake_server(silent) as quiet,  # ends its side when the check's side ends
        fake_server(flood) as loud,
    ):
        refused = free_port()
        await check(smtp, SMTP_STARTTLS)  # warm up: contexts, caches, the loop's own sockets
        before = open_fds()
        results = []
        for _ in range(25):
            batch = [check(smtp, SMTP_STARTTLS) for _ in range(4)]
            batch += [check(smtp, SMTP_STARTTLS, verify_tls="chain", ca_file=pki.ca_file) for _ in range(2)]
            batch += [check(quiet, SMTP, timeout=0.05), check(loud, SMTP), check(refused, SMTP)]
            batch += [check(smtp, SMTP, tls=True, timeout=0.2)]  # a TLS client against a clear server
            results += await asyncio.gather(*batch)
        await asyncio.sleep(0.2)  # transports close on the next loop iterations
        after = open_fds()
    assert len(results) == 250
    assert sum(r.ok for r in results) == 100
    assert after <= before, (before, after)


# --- the ldirectord table ----------------------------------------------------------------------


def test_ldirectord_table_covers_the_text_protocols():
    assert set(LDIRECTORD_DIALOGUES) == {"smtp", "submission", "ftp", "pop", "pops", "imap", "imaps", "nntp",
                                         "simpletcp", "sip"}  # fmt: skip
    assert LDIRECTORD_IMPLICIT_TLS == {"pops", "imaps"}
    assert ldirectord_dialogue("ldap", "", "", "/", "") is None
    assert ldirectord_dialogue("http", "", "", "/", "") is None


def test_ldirectord_smtp_is_net_smtp_new_then_quit():
    # Net::SMTP->new: any 2xx greeting, "EHLO localhost.localdomain" (hello()'s default) answered
    # 2xx; check_smtp then calls quit.  A final 4xx/5xx fails at once, as Net::Cmd returns it.
    for service in ("smtp", "submission"):
        assert LDIRECTORD_DIALOGUES[service] == (
            ("expect", REPLY_2XX),
            ("fail", REPLY_45X),
            ("send", "EHLO localhost.localdomain\r\n"),
            ("expect", REPLY_2XX),
            ("fail", REPLY_45X),
            ("send", "QUIT\r\n"),
        )


@pytest.mark.parametrize(
    "reply,final",
    [
        ("220 mx.example.com ESMTP\r\n", True),
        ("220\r\n", True),  # a code alone
        ("220-mx.example.com\r\n", False),  # a continuation line alone
        ("220-mx.example.com\r\n220 ready\r\n", True),
        ("250-mx.example.com\r\n250-PIPELINING\r\n250 HELP\r\n", True),
        ("220", False),  # cut after the code: a "-" may follow
        ("554 no service\r\n", False),
        ("2200 x\r\n", False),
    ],
)
def test_ldirectord_final_reply_line(reply, final):
    import re2

    assert (re2.compile(REPLY_2XX).search(reply) is not None) is final


def test_ldirectord_ftp_is_net_ftp_login_with_ldirectords_defaults():
    # ldirectord's parser: login "anonymous", passwd "ldirectord@HOSTNAME" when unset (here
    # directord@localhost); Net::FTP: 2xx greeting, USER answered 3xx, PASS answered 2xx.
    assert LDIRECTORD_DIALOGUES["ftp"] == (
        ("expect", REPLY_2XX),
        ("fail", REPLY_45X),
        ("send", "USER anonymous\r\n"),
        ("expect", r"(?m)^3\d\d(?: |\r?\n)"),
        ("fail", r"(?m)^[245]\d\d(?: |\r?\n)"),  # 230 at once is no password asked: a failure too
        ("send", "PASS directord@localhost\r\n"),
        ("expect", REPLY_2XX),
        ("fail", REPLY_45X),
        ("send", "QUIT\r\n"),
    )
    assert ldirectord_dialogue("ftp", "bob", "", "/", "")[2:6:3] == (
        ("send", "USER bob\r\n"), ("send", "PASS directord@localhost\r\n"))  # fmt: skip


def test_ldirectord_pop_is_mail_pop3client():
    # Connect: banner /^\+OK/i; Login_Pass: USER answered /^\+/, PASS answered /^\+OK/; Close: QUIT.
    # -ERR (RFC 1939 section 3) fails at once, as Mail::POP3Client returns at it.
    assert LDIRECTORD_DIALOGUES["pop"] == LDIRECTORD_DIALOGUES["pops"] == (
        ("expect", r"(?i)^\+OK"), ("fail", r"(?i)^-ERR"), ("send", "QUIT\r\n"))  # fmt: skip
    assert ldirectord_dialogue("pop", "bob", "pw", "/", "") == (
        ("expect", r"(?i)^\+OK"),
        ("fail", r"(?i)^-ERR"),
        ("send", "USER bob\r\n"),
        ("expect", r"^\+"),
        ("fail", r"(?i)^-ERR"),
        ("send", "PASS pw\r\n"),
        ("expect", r"^\+OK"),
        ("fail", r"(?i)^-ERR"),
        ("send", "QUIT\r\n"),
    )


def test_ldirectord_imap_is_net_imap_simple():
    # new: greeting /^\*\s+(?:OK|PREAUTH)/i; login: "LOGIN user " . _escape(pass), tagged
    # /^TAG\s+OK/i; quit: LOGOUT.
    # A BYE greeting or a tagged NO/BAD (RFC 3501 sections 7.1.5, 6.2.3) fails at once.
    assert LDIRECTORD_DIALOGUES["imap"] == LDIRECTORD_DIALOGUES["imaps"] == (
        ("expect", r"(?i)^\*\s+(?:OK|PREAUTH)"), ("fail", r"(?i)^\*\s+BYE"), ("send", "2 LOGOUT\r\n"))  # fmt: skip
    assert ldirectord_dialogue("imap", "bob", 'p"w\\', "/", "")[2:5] == (
        ("send", '1 LOGIN bob "p\\"w\\\\"\r\n'),  # RFC 3501 section 4.3: \" and \\ in a quoted string
        ("expect", r"(?im)^1\s+OK"),
        ("fail", r"(?im)^1\s+(?:NO|BAD)"),
    )
    # A user name that is not an atom (RFC 3501 section 9) is quoted the same way.
    assert ldirectord_dialogue("imap", 'bob "b" smith', "pw", "/", "")[2] == (
        "send", '1 LOGIN "bob \\"b\\" smith" "pw"\r\n')  # fmt: skip


def test_ldirectord_nntp_reads_the_banner_only():
    assert LDIRECTORD_DIALOGUES["nntp"] == (("expect", "^2"), ("fail", "^[45]"))


def test_ldirectord_sip_over_a_stream_socket_byte_for_byte():
    # check_sip's request (RFC 3261 section 11.1) with its constant branch, tag and CSeq; a TCP
    # Via without address (section 18.2.2: the answer comes back on the connection).
    send, expect, fail = ldirectord_dialogue("sip", "probe@example.com", "", "/", "")
    assert send == (
        "send",
        "OPTIONS sip:probe@example.com SIP/2.0\r\n"
        "Via: SIP/2.0/TCP directord.invalid;branch=z9hG4bKhjhs8ass877\r\n"
        "Max-Forwards: 70\r\n"
        "To: <sip:probe@example.com>\r\n"
        "From: <sip:probe@example.com>;tag=1928301774\r\n"
        "Call-ID: directord-check\r\n"
        "CSeq: 63104 OPTIONS\r\n"
        "Contact: <sip:probe@example.com>\r\n"
        "Accept: application/sdp\r\n"
        "Content-Length: 0\r\n\r\n",
    )
    assert expect == ("expect", r"^SIP/2\.0 200 OK")
    assert fail == ("fail", r"(?m)^SIP/2\.0 [3-6]\d\d ")  # a final answer other than 2xx
    assert LDIRECTORD_DIALOGUES["sip"][0][1].startswith("OPTIONS sip:directord@localhost SIP/2.0\r\n")


@pytest.mark.parametrize(
    "service,login,passwd,setting,message",
    [
        ("pop", "bob\r\nDELE 1", "pw", "login", "login must not hold a line break"),
        ("pop", "bob", "pw\nDELE 1", "passwd", "passwd must not hold a line break"),
        ("imap", "bob", "pw\r", "passwd", "passwd must not hold a line break"),
        ("imap", "bob\0", "pw", "login", "login must not hold a line break"),
        ("ftp", "bob\n", "", "login", "login must not hold a line break"),
        ("ftp", "bob", "\u20ac", "passwd", "passwd must be Latin-1"),
        ("sip", "bob smith@example.com", "", "login", "sip login must be user@host"),
        ("sip", "bob@example.com>\r\nX: y", "", "login", "sip login must be user@host"),
    ],
)
def test_ldirectord_settings_that_would_break_a_command_are_refused(service, login, passwd, setting, message):
    with pytest.raises(SettingError, match=message) as info:
        ldirectord_dialogue(service, login, passwd, "/", "")
    assert isinstance(info.value, ValueError) and info.value.setting == setting
    assert "DELE" not in str(info.value)  # the message does not carry the value (a password)


def test_ldirectord_simpletcp():
    assert ldirectord_dialogue("simpletcp", "", "", "/PING\\n", "^PONG$") == (
        ("send", "PING\n"), ("expect", "(?m)^PONG$"))  # fmt: skip
    assert ldirectord_dialogue("simpletcp", "", "", "/", "") == (("expect", "(?s)."),)
    with pytest.raises(SettingError, match="receive is not a regular expression") as info:
        ldirectord_dialogue("simpletcp", "", "", "/x", "(?<=a)b")
    assert info.value.setting == "receive"
    with pytest.raises(SettingError, match="request must be Latin-1") as info:
        ldirectord_dialogue("simpletcp", "", "", "/\u20ac", "")
    assert info.value.setting == "request"


async def test_ldirectord_simpletcp_against_a_line_server():
    async def pong(reader, writer):
        if await reader.readline() == b"PING\n":
            writer.write(b"hello\nPONG\n")
        await reader.read(100)

    async with fake_server(pong) as port:
        ok = await check(port, ldirectord_dialogue("simpletcp", "", "", "/PING\\n", "^PONG$"))
        wrong = await check(port, ldirectord_dialogue("simpletcp", "", "", "/PING\\n", "^PANG$"), timeout=0.3)
    assert ok.ok, ok.reason
    assert not wrong.ok and wrong.timed_out


def test_checks_without_steps_or_with_a_bad_step_are_described():
    spec_ = replace(spec(), dialogue=(("expect", "(?<=x)"),))
    result = asyncio.run(run_check(target(spec_, free_port()), None))
    assert not result.ok and result.reason.startswith("dialogue step 1: bad expect regex:")


# --- fail steps ------------------------------------------------------------------------------


def says(*lines: bytes):
    """A session that sends ``lines`` one by one and then keeps the connection open."""

    async def session(reader, writer):
        for line in lines:
            writer.write(line)
            await writer.drain()
            await asyncio.sleep(0.02)
        await reader.read()

    return session


async def test_a_fail_step_ends_its_expect_at_once():
    async with fake_server(says(b"-ERR [AUTH] no\r\n")) as port:
        start = time.monotonic()
        result = await check(port, (("expect", r"^\+OK"), ("fail", "^-ERR")), timeout=2.0)
    assert (result.ok, result.timed_out) == (False, False)
    assert result.reason == "dialogue step 1: reply matches fail '^-ERR': \"-ERR [AUTH] no\""
    assert time.monotonic() - start < 1.0


async def test_the_expect_wins_over_its_fail_and_a_later_fail_counts_too():
    async with fake_server(says(b"+OK ready -ERR is not at the start\r\n")) as port:
        both = await check(port, (("expect", r"^\+OK"), ("fail", "ERR")), timeout=2.0)

    async def refuse_ehlo(reader, writer):
        writer.write(b"220 x\r\n")
        await reader.readline()
        writer.write(b"554 go away\r\n")
        await reader.read()

    dialogue = (("expect", "^220 "), ("send", "EHLO x\r\n"), ("expect", "^250 "), ("fail", "^421"), ("fail", "^554"))
    async with fake_server(refuse_ehlo) as port:
        later = await check(port, dialogue, timeout=2.0)
    assert both.ok, both.reason
    assert not later.ok and not later.timed_out
    assert later.reason == "dialogue step 3: reply matches fail '^554': \"554 go away\""


async def test_without_a_fail_step_a_refusal_on_an_open_connection_waits_for_the_time_limit():
    async with fake_server(says(b"-ERR no\r\n")) as port:
        result = await check(port, (("expect", r"^\+OK"),), timeout=0.3)
    assert (result.ok, result.timed_out) == (False, True)


async def test_a_fail_step_not_after_an_expect_is_refused_without_connecting():
    result = await check(free_port(), (("send", "x"), ("fail", "y")))
    assert (result.ok, result.reason) == (False, "dialogue step 2: fail must follow an expect step")
