"""The ``radius`` check: its codec byte for byte (RFC 2865, RFC 3579) and the check
against FreeRADIUS on loopback, a stopped server, a silent one and hostile ones."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from checkhelpers import free_udp_port, stop_process, udp_server

from checks.base import CheckTarget, run_check
from checks.protocols.radius import (
    MAX_PACKET,
    attribute,
    decode_reply,
    encode_access_request,
    hide_password,
)
from checks.spec import CheckSpec

try:
    from pyrad.dictionary import Dictionary
    from pyrad.packet import AccessReject, AuthPacket
except ImportError:  # pragma: no cover - pyrad is a test-only cross-check
    AuthPacket = None

needs_pyrad = pytest.mark.skipif(AuthPacket is None, reason="pyrad (test-only) is not installed")
needs_freeradius = pytest.mark.skipif(
    shutil.which("freeradius") is None, reason="FreeRADIUS is not installed (Debian package freeradius)"
)

# --- RFC 2865 section 7.1: the example Access-Request and Access-Accept -------------------

# fmt: off
RFC_SECRET = b"xyzzy5461"
RFC_AUTHENTICATOR = bytes.fromhex("0f403f9473978057bd83d5cb98f4227a")
RFC_REQUEST = bytes.fromhex(
    "01 00 00 38 0f 40 3f 94 73 97 80 57 bd 83 d5 cb"
    "98 f4 22 7a 01 06 6e 65 6d 6f 02 12 0d be 70 8d"
    "93 d4 13 ce 31 96 e4 3f 78 2a 0a ee 04 06 c0 a8"
    "01 10 05 06 00 00 00 03"
)
RFC_ACCEPT = bytes.fromhex(
    "02 00 00 26 86 fe 22 0e 76 24 ba 2a 10 05 f6 bf"
    "9b 55 e0 b2 06 06 00 00 00 01 0f 06 00 00 00 00"
    "0e 06 c0 a8 01 03"
)

#: The same request as encode_access_request builds it: Message-Authenticator first
#: (RFC 3579 section 3.2: HMAC-MD5 keyed with the secret over the packet with a zero value),
#: then User-Name, User-Password, NAS-IP-Address (no NAS-Port).  Derived from the RFC's
#: bytes; test_the_request_is_what_pyrad_reads cross-checks it with pyrad.
OUR_RFC_REQUEST = bytes.fromhex(
    "01 00 00 44 0f 40 3f 94 73 97 80 57 bd 83 d5 cb 98 f4 22 7a"  # header, Length 68
    "50 12 14 c2 18 0b a9 8b d6 52 aa 1a ff cc d8 a0 e0 bf"  # Message-Authenticator
    "01 06 6e 65 6d 6f"  # User-Name "nemo"
    "02 12 0d be 70 8d 93 d4 13 ce 31 96 e4 3f 78 2a 0a ee"  # User-Password "arctangent", hidden
    "04 06 c0 a8 01 10"  # NAS-IP-Address 192.168.1.16
)
# fmt: on

PYRAD_DICTIONARY = """\
ATTRIBUTE User-Name 1 string
ATTRIBUTE User-Password 2 string encrypt=1
ATTRIBUTE NAS-IP-Address 4 ipaddr
ATTRIBUTE Reply-Message 18 string
ATTRIBUTE Message-Authenticator 80 octets
ATTRIBUTE NAS-IPv6-Address 95 ipv6addr
"""


def pyrad_dictionary() -> Dictionary:
    return Dictionary(io.StringIO(PYRAD_DICTIONARY))


def test_rfc2865_example_request_byte_for_byte():
    """attribute and hide_password rebuild RFC 2865 section 7.1's Access-Request exactly."""
    attributes = (
        attribute(1, b"nemo")
        + attribute(2, hide_password(b"arctangent", RFC_SECRET, RFC_AUTHENTICATOR))
        + attribute(4, bytes((192, 168, 1, 16)))
        + attribute(5, (3).to_bytes(4))
    )
    packet = struct.pack("!BBH", 1, 0, 20 + len(attributes)) + RFC_AUTHENTICATOR + attributes
    assert packet == RFC_REQUEST


def test_encode_access_request_byte_for_byte():
    request = encode_access_request(0, RFC_AUTHENTICATOR, b"nemo", b"arctangent", RFC_SECRET, bytes((192, 168, 1, 16)))
    assert request == OUR_RFC_REQUEST
    # the Message-Authenticator, recomputed by hand (RFC 3579 section 3.2)
    zeroed = request[:22] + bytes(16) + request[38:]
    assert request[22:38] == hmac.digest(RFC_SECRET, zeroed, "md5")


def test_encode_access_request_over_ipv6_sends_nas_ipv6_address():
    request = encode_access_request(
        7, RFC_AUTHENTICATOR, b"nemo", b"", RFC_SECRET, socket.inet_pton(socket.AF_INET6, "::1")
    )
    assert request[:4] == bytes.fromhex("01 07 00 50")  # 20 + 18 + 6 + 18 + 18 = 80
    assert request[-18:] == bytes((95, 18)) + bytes(15) + b"\x01"  # RFC 3162 section 2.1


def test_hide_password_pads_an_empty_password_to_one_block():
    # 16 NUL bytes XOR MD5(secret + RA) is MD5(secret + RA) itself (RFC 2865 section 5.2)
    assert hide_password(b"", RFC_SECRET, RFC_AUTHENTICATOR) == hashlib.md5(RFC_SECRET + RFC_AUTHENTICATOR).digest()


def test_hide_password_chains_blocks():
    password = b"a-password-longer-than-16"
    hidden = hide_password(password, RFC_SECRET, RFC_AUTHENTICATOR)
    assert hidden == bytes.fromhex("0de1639881c903c42d86c95317446d8b556b52523cc0431b2684567f9e0ef732")
    # block 2 is keyed with the first hidden block, not with the authenticator
    second = bytes(a ^ b for a, b in zip(password[16:] + bytes(7), hashlib.md5(RFC_SECRET + hidden[:16]).digest()))
    assert hidden[16:] == second


def test_bounds_of_values():
    with pytest.raises(ValueError, match="at most 128"):
        hide_password(b"x" * 129, RFC_SECRET, RFC_AUTHENTICATOR)
    assert len(hide_password(b"x" * 128, RFC_SECRET, RFC_AUTHENTICATOR)) == 128
    with pytest.raises(ValueError, match="1 to 253"):
        attribute(1, b"u" * 254)
    with pytest.raises(ValueError, match="1 to 253"):
        attribute(1, b"")


@needs_pyrad
def test_the_request_is_what_pyrad_reads():
    """An independent implementation reads our request: Message-Authenticator, password."""
    request = encode_access_request(0, RFC_AUTHENTICATOR, b"nemo", b"arctangent", RFC_SECRET, bytes((192, 168, 1, 16)))
    packet = AuthPacket(packet=request, secret=RFC_SECRET, dict=pyrad_dictionary())
    assert list(packet.keys()) == ["Message-Authenticator", "User-Name", "User-Password", "NAS-IP-Address"]
    assert packet.verify_message_authenticator()
    assert packet.PwDecrypt(packet["User-Password"][0]) == "arctangent"
    assert packet["User-Name"] == ["nemo"]
    long_password = "p" * 40
    assert hide_password(long_password.encode(), RFC_SECRET, RFC_AUTHENTICATOR) == packet.PwCrypt(long_password)


def test_decode_reply_takes_the_rfc_access_accept():
    assert decode_reply(RFC_ACCEPT, 0, RFC_AUTHENTICATOR, RFC_SECRET) == 2
    # bytes past the Length field are padding (RFC 2865 section 3)
    assert decode_reply(RFC_ACCEPT + b"\x00junk", 0, RFC_AUTHENTICATOR, RFC_SECRET) == 2


def sign(code: int, identifier: int, attributes: bytes, secret: bytes = RFC_SECRET) -> bytes:
    """A reply with a correct Response Authenticator (RFC 2865 section 3)."""
    head = struct.pack("!BBH", code, identifier, 20 + len(attributes))
    return head + hashlib.md5(head + RFC_AUTHENTICATOR + attributes + secret).digest() + attributes


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (RFC_ACCEPT[:19], "RADIUS reply of 19 bytes; at least 20"),
        (RFC_ACCEPT + bytes(MAX_PACKET), "RADIUS reply longer than 4096 bytes"),
        (RFC_ACCEPT[:1] + b"\x09" + RFC_ACCEPT[2:], "RADIUS reply identifier 9, sent 0"),
        (RFC_ACCEPT[:2] + b"\x00\x13" + RFC_ACCEPT[4:], "RADIUS reply length field 19 in a datagram of 38 bytes"),
        (RFC_ACCEPT[:2] + b"\x00\x27" + RFC_ACCEPT[4:], "RADIUS reply length field 39 in a datagram of 38 bytes"),
        (RFC_ACCEPT[:-1] + b"\x04", "reply authenticator does not match: wrong secret?"),
        (sign(2, 0, b"", b"wrong"), "reply authenticator does not match: wrong secret?"),
        (sign(2, 0, b"\x12\x01x"), "malformed RADIUS reply attribute at byte 20"),
        (sign(2, 0, b"\x12\x05ab"), "malformed RADIUS reply attribute at byte 20"),
        (sign(2, 0, b"\x12\x03a\x12"), "malformed RADIUS reply attribute at byte 23"),
        (sign(2, 0, b"\x50\x06abcd"), "malformed RADIUS reply Message-Authenticator at byte 20"),
        (sign(2, 0, b"\x50\x12" + bytes(16)), "reply Message-Authenticator does not match"),
        (sign(4, 0, b""), "unexpected RADIUS reply code 4"),
        (sign(1, 0, b""), "unexpected RADIUS reply code 1"),
    ],
)
def test_decode_reply_refuses(reply: bytes, reason: str):
    with pytest.raises(ValueError) as caught:
        decode_reply(reply, 0, RFC_AUTHENTICATOR, RFC_SECRET)
    assert str(caught.value) == reason


def test_decode_reply_checks_a_message_authenticator_by_hand():
    attributes = b"\x12\x04hi" + b"\x50\x12" + bytes(16)
    head = struct.pack("!BBH", 11, 0, 20 + len(attributes))
    signature = hmac.digest(RFC_SECRET, head + RFC_AUTHENTICATOR + attributes, "md5")
    attributes = attributes[:6] + signature
    reply = head + hashlib.md5(head + RFC_AUTHENTICATOR + attributes + RFC_SECRET).digest() + attributes
    assert decode_reply(reply, 0, RFC_AUTHENTICATOR, RFC_SECRET) == 11


@needs_pyrad
def test_decode_reply_takes_pyrad_replies_with_message_authenticator():
    request = AuthPacket(packet=OUR_RFC_REQUEST, secret=RFC_SECRET, dict=pyrad_dictionary())
    for code in (2, 3, 11):
        reply = request.CreateReply(Reply_Message="hello")
        reply.code = code
        raw = reply.ReplyPacket()
        assert raw[20] == 80  # pyrad signs replies with a Message-Authenticator, first
        assert decode_reply(raw, 0, RFC_AUTHENTICATOR, RFC_SECRET) == code


# --- the check on loopback -------------------------------------------------------------------


def target(port: int, rip: str = "127.0.0.1", timeout: float = 1.0, **settings: str) -> CheckTarget:
    spec = CheckSpec(type="radius", timeout=timeout, **settings)  # type: ignore[arg-type]
    return CheckTarget(
        key=("svc", rip, port), name=f"rs {rip}:{port}", vip=None, vport=0, rip=rip, rport=port, spec=spec
    )


FREERADIUS_CONF = """\
prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = {dir}
sbindir = /usr/sbin
logdir = {dir}
raddbdir = {dir}
radacctdir = {dir}
name = freeradius
confdir = {dir}
run_dir = {dir}
db_dir = {dir}
libdir = /usr/lib/freeradius
dictdir = /usr/share/freeradius
pidfile = {dir}/radiusd.pid
max_request_time = 5
cleanup_delay = 0
max_requests = 256
hostname_lookups = no
log {{
	destination = stderr
}}
security {{
	allow_core_dumps = no
	max_attributes = 200
	reject_delay = 0
	status_server = no
}}
thread pool {{
	start_servers = 1
	max_servers = 2
	min_spare_servers = 1
	max_spare_servers = 2
}}
client loopback {{
	ipaddr = 127.0.0.1
	secret = s3cret
	require_message_authenticator = yes
}}
modules {{
	files {{
		filename = {dir}/users
	}}
	pap {{
	}}
}}
server default {{
	listen {{
		type = auth
		ipaddr = 127.0.0.1
		port = {port}
	}}
	authorize {{
		files
		pap
	}}
	authenticate {{
		pap
	}}
}}
"""


@contextlib.contextmanager
def freeradius(directory: Path) -> Iterator[int]:
    """FreeRADIUS in the foreground on 127.0.0.1, client 127.0.0.1 with secret ``s3cret``,
    and one user ``alice`` with the password ``wonderland``; yields its port."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_udp_port()
    (directory / "radiusd.conf").write_text(FREERADIUS_CONF.format(dir=directory, port=port))
    (directory / "users").write_text('alice\tCleartext-Password := "wonderland"\n')
    (directory / "dictionary").write_text("")
    log = directory / "radiusd.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            ["freeradius", "-X", "-f", "-d", str(directory)], stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 15
        while b"Ready to process requests" not in log.read_bytes():
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"FreeRADIUS did not start:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.05)
        yield port
    finally:
        stop_process(server)


@pytest.fixture(scope="module")
def radius_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    with freeradius(tmp_path_factory.mktemp("freeradius")) as port:
        yield port


@needs_freeradius
async def test_freeradius_accepts_the_user(radius_port: int):
    result = await run_check(target(radius_port, login="alice", password="wonderland", secret="s3cret"), None)
    assert (result.ok, result.reason) == (True, "Access-Accept")


@needs_freeradius
async def test_freeradius_rejects_a_wrong_password_and_the_check_fails_with_login(radius_port: int):
    result = await run_check(target(radius_port, login="alice", password="not-it", secret="s3cret"), None)
    assert (result.ok, result.reason, result.timed_out) == (False, "Access-Reject", False)


@needs_freeradius
async def test_without_login_an_authenticated_reject_passes(radius_port: int):
    """User-Name "directord" is unknown: FreeRADIUS rejects it, which proves it alive."""
    result = await run_check(target(radius_port, secret="s3cret"), None)
    assert (result.ok, result.reason) == (True, "Access-Reject")


@needs_freeradius
async def test_freeradius_drops_a_request_with_a_wrong_secret(radius_port: int):
    """The Message-Authenticator does not verify: FreeRADIUS drops the request, no reply."""
    start = time.monotonic()
    result = await run_check(
        target(radius_port, timeout=0.5, login="alice", password="wonderland", secret="nope"), None
    )
    assert (result.ok, result.reason, result.timed_out) == (False, "timeout after 0.5 s", True)
    assert time.monotonic() - start < 0.5 + 0.3


@needs_freeradius
async def test_a_stopped_freeradius_fails_at_once(tmp_path: Path):
    with freeradius(tmp_path / "radius") as port:
        assert (await run_check(target(port, login="alice", password="wonderland", secret="s3cret"), None)).ok
    start = time.monotonic()
    result = await run_check(target(port, timeout=2.0, login="alice", password="wonderland", secret="s3cret"), None)
    assert (result.ok, result.reason, result.timed_out) == (False, "ICMP port unreachable", False)
    assert time.monotonic() - start < 0.5


async def test_a_silent_server_times_out():
    async with udp_server(lambda data: []) as (port, server):
        start = time.monotonic()
        result = await run_check(target(port, timeout=0.3, secret="s3cret"), None)
        elapsed = time.monotonic() - start
    assert (result.ok, result.reason, result.timed_out) == (False, "timeout after 0.3 s", True)
    assert 0.3 <= elapsed < 0.3 + 0.3
    assert len(server.received) == 1 and server.received[0][0] == 1  # the Access-Request arrived


def forged(data: bytes) -> list[bytes]:
    """An Access-Accept to ``data`` whose authenticator is not keyed with the secret."""
    return [bytes((2, data[1], 0, 20)) + bytes(16)]


async def test_a_reply_with_a_wrong_authenticator_fails():
    async with udp_server(forged) as (port, _server):
        result = await run_check(target(port, secret="s3cret"), None)
    assert (result.ok, result.reason) == (False, "reply authenticator does not match: wrong secret?")


async def test_garbage_fails():
    async with udp_server(lambda data: [b"HTTP/1.1 400 Bad Request\r\n\r\n"]) as (port, _server):
        result = await run_check(target(port, secret="s3cret"), None)
    assert not result.ok and not result.timed_out
    assert result.reason.startswith("RADIUS reply identifier ") or "length field" in result.reason


async def test_a_huge_reply_fails():
    async with udp_server(lambda data: [bytes((2, data[1])) + b"\x10\x00" + bytes(8000)]) as (port, _server):
        result = await run_check(target(port, secret="s3cret"), None)
    assert (result.ok, result.reason) == (False, "RADIUS reply longer than 4096 bytes")


def pyrad_answer(
    code: int, expected_user: str, expected_password: str, secret: bytes = b"s3cret"
) -> Callable[[bytes], list[bytes]]:
    """A pyrad server's answer: checks the request fully, then replies ``code``."""

    def respond(data: bytes) -> list[bytes]:
        request = AuthPacket(packet=data, secret=secret, dict=pyrad_dictionary())
        assert request.verify_message_authenticator()
        assert request["User-Name"] == [expected_user]
        assert request.PwDecrypt(request["User-Password"][0]) == expected_password
        respond.requests.append(request)  # type: ignore[attr-defined]
        reply = request.CreateReply()
        reply.code = code
        return [reply.ReplyPacket()]

    respond.requests = []  # type: ignore[attr-defined]
    return respond


@needs_pyrad
async def test_ipv6_against_pyrad_with_nas_ipv6_address():
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    answer = pyrad_answer(2, "bob", "pa ss")
    try:
        server = udp_server(answer, "::1")
        port, _protocol = await server.__aenter__()
    except OSError:
        pytest.skip("no IPv6 on loopback")
    try:
        result = await run_check(target(port, rip="::1", login="bob", password="pa ss", secret="s3cret"), None)
    finally:
        await server.__aexit__(None, None, None)
    assert (result.ok, result.reason) == (True, "Access-Accept")
    assert answer.requests[0]["NAS-IPv6-Address"] == ["::1"]  # type: ignore[attr-defined]


@needs_pyrad
async def test_challenge_fails_with_login_passes_without():
    async with udp_server(pyrad_answer(11, "carol", "pw")) as (port, _server):
        result = await run_check(target(port, login="carol", password="pw", secret="s3cret"), None)
    assert (result.ok, result.reason) == (False, "Access-Challenge")
    async with udp_server(pyrad_answer(AccessReject, "directord", "")) as (port, _server):
        result = await run_check(target(port, secret="s3cret"), None)
    assert (result.ok, result.reason) == (True, "Access-Reject")


async def test_each_check_uses_a_new_identifier_and_authenticator():
    async with udp_server(lambda data: []) as (port, server):
        for _ in range(3):
            await run_check(target(port, timeout=0.05, secret="s3cret"), None)
    assert len({request[1:20] for request in server.received}) == 3


async def test_too_long_credentials_fail_without_sending():
    async with udp_server(lambda data: []) as (port, server):
        result = await run_check(target(port, secret="s3cret", password="p" * 129), None)
        assert (result.ok, result.reason) == (False, "ValueError: radius password of 129 bytes; at most 128")
        result = await run_check(target(port, secret="s3cret", login="é" * 127), None)
        assert (result.ok, result.reason) == (False, "ValueError: radius login of 254 bytes; at most 253")
    assert server.received == []
