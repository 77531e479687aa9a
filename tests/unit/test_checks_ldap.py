"""The ``ldap`` check (checks.protocols.ldap): its BER codec byte for byte, and the check against OpenLDAP.

The real server is Debian's slapd (packages ``slapd``, ``ldap-utils``), started in a temporary
directory on loopback with an mdb database (suffix ``dc=example,dc=test``), in clear and over
ldaps with a self-signed certificate.  The codec is also checked against ldap3's (pyasn1) encoder.
The hostile cases (silence, garbage, a huge length prefix) are small fake servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from checkhelpers import (
    fake_server,
    free_port,
    open_fds,
    self_signed,
    silent,
    stop_process,
    target,
    timed_against,
    wait_listening,
)

from checks.base import CheckResult, run_check
from checks.protocols import ldap
from checks.spec import CheckSpec

SUFFIX = "dc=example,dc=test"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PASSWORD = "r00tpw"
USER_DN = f"cn=checker,ou=people,{SUFFIX}"
USER_PASSWORD = "s3cret"


async def check(port: int, **fields) -> CheckResult:
    spec = CheckSpec(type="ldap", timeout=fields.pop("timeout", 2.0), **fields)
    return await run_check(target(spec, port), None)


# --- the codec, byte for byte --------------------------------------------------------------------
# Expected bytes written out from RFC 4511 (section 4.1.1 LDAPMessage, 4.2 BindRequest, 4.3
# UnbindRequest, 4.5.1 SearchRequest, 4.5.2 SearchResultEntry, 4.1.9 LDAPResult) and X.690 (BER:
# tag, definite length, contents; section 8.1.3 lengths, 8.3 INTEGER, 8.2 BOOLEAN).


def test_anonymous_bind_request_bytes():
    expected = bytes.fromhex(
        "30 0c"  # LDAPMessage SEQUENCE, 12 bytes
        " 02 01 01"  # messageID INTEGER 1
        " 60 07"  # [APPLICATION 0] BindRequest, 7 bytes
        " 02 01 03"  # version INTEGER 3
        " 04 00"  # name OCTET STRING ""
        " 80 00"  # authentication: simple [0] ""
    )
    assert ldap.encode_bind_request(1, b"", b"") == expected


def test_named_bind_request_bytes():
    expected = bytes.fromhex("30 1a 02 01 01 60 15 02 01 03 04 08") + b"cn=admin" + bytes.fromhex("80 06") + b"secret"
    assert ldap.encode_bind_request(1, b"cn=admin", b"secret") == expected


def test_long_form_lengths():
    # a 300-byte name: OCTET STRING length in the long form 82 01 2c (X.690 section 8.1.3.5)
    name = b"x" * 300
    encoded = ldap.encode_bind_request(1, name, b"")
    op_size = 3 + 4 + 300 + 2  # version, name header + name, simple ""
    message_size = 3 + 4 + op_size  # messageID, op header (60 82 01 35) + op
    assert encoded[:4] == bytes((0x30, 0x82)) + message_size.to_bytes(2, "big")
    assert encoded[4:7] == bytes.fromhex("02 01 01")
    assert encoded[7:11] == bytes((0x60, 0x82)) + op_size.to_bytes(2, "big")
    assert encoded[11:18] == bytes.fromhex("02 01 03 04 82 01 2c")
    assert encoded[18:318] == name and encoded[318:] == bytes.fromhex("80 00")
    # 128 needs two INTEGER octets (00 80: the top bit is the sign), 127 one
    assert ldap.encode_unbind_request(128) == bytes.fromhex("30 06 02 02 00 80 42 00")
    assert ldap.encode_unbind_request(127) == bytes.fromhex("30 05 02 01 7f 42 00")


def test_search_request_bytes():
    expected = (
        bytes.fromhex(
            "30 2a"  # LDAPMessage, 42 bytes
            " 02 01 02"  # messageID 2
            " 63 25"  # [APPLICATION 3] SearchRequest, 37 bytes
            " 04 00"  # baseObject "" (the root DSE)
            " 0a 01 00"  # scope ENUMERATED baseObject (0)
            " 0a 01 00"  # derefAliases ENUMERATED neverDerefAliases (0)
            " 02 01 02"  # sizeLimit 2
            " 02 01 01"  # timeLimit 1 s
            " 01 01 ff"  # typesOnly TRUE
            " 87 0b"  # filter: present [7], 11 bytes
        )
        + b"objectClass"
        + bytes.fromhex("30 05 04 03")  # attributes SEQUENCE OF one LDAPString, 3 bytes
        + b"1.1"  # no attributes (section 4.5.1.8)
    )
    assert ldap.encode_search_request(2, b"", 1) == expected


def test_unbind_request_bytes():
    assert ldap.encode_unbind_request(3) == bytes.fromhex("30 05 02 01 03 42 00")  # [APPLICATION 2] NULL


def test_encoder_refuses_out_of_range_numbers():
    with pytest.raises(ValueError):
        ldap.encode_unbind_request(0)
    with pytest.raises(ValueError):
        ldap.encode_unbind_request(2**31)
    with pytest.raises(ValueError):
        ldap.encode_search_request(2, b"", -1)


def test_decoding_responses_byte_for_byte():
    bind_response = bytes.fromhex("30 0f 02 01 01 61 0a 0a 01 31 04 00 04 03") + b"bad"
    message = ldap.decode_message(bind_response)
    assert message == ldap.LdapMessage(1, ldap.BIND_RESPONSE, bytes.fromhex("0a 01 31 04 00 04 03") + b"bad")
    assert ldap.decode_result(message.body) == ldap.LdapResult(49, "", "bad")
    entry = bytes.fromhex("30 1b 02 01 02 64 16 04 12") + SUFFIX.encode() + bytes.fromhex("30 00")
    assert ldap.message_size(entry) == len(entry)
    message = ldap.decode_message(entry)
    assert message.op == ldap.SEARCH_RESULT_ENTRY and ldap.decode_entry_name(message.body) == SUFFIX
    done = bytes.fromhex("30 0c 02 01 02 65 07 0a 01 20 04 00 04 00")  # noSuchObject
    assert ldap.decode_result(ldap.decode_message(done).body).code == 32
    # controls after the protocolOp ([0], section 4.1.11) are allowed and ignored
    with_controls = bytes.fromhex("30 10 02 01 02 65 07 0a 01 00 04 00 04 00 a0 02 30 00")
    assert ldap.decode_result(ldap.decode_message(with_controls).body).code == 0
    assert ldap.result_name(49) == "invalidCredentials (49)" and ldap.result_name(99) == "result 99"


def test_framing():
    assert ldap.message_size(b"") is None and ldap.message_size(b"\x30") is None
    assert ldap.message_size(b"\x30\x05") == 7
    assert ldap.message_size(b"\x30\x82\x01") is None  # length octets not all there yet
    assert ldap.message_size(b"\x30\x82\x01\x00") == 4 + 256
    with pytest.raises(ldap.LdapError, match="LDAP message of 2147483653 bytes; at most 65536"):
        ldap.message_size(b"\x30\x84\x7f\xff\xff\xff")
    with pytest.raises(ldap.LdapError, match="indefinite length"):
        ldap.message_size(b"\x30\x80")
    with pytest.raises(ldap.LdapError, match="length of 5 octets"):
        ldap.message_size(b"\x30\x85\x00\x00\x00\x00\x01")
    with pytest.raises(ldap.LdapError, match="not a SEQUENCE"):
        ldap.message_size(b"HTTP/1.0 400")


@pytest.mark.parametrize(
    "data",
    [
        "30 03 02 01 01",  # no protocolOp
        "30 05 02 01 01 61 05",  # protocolOp longer than the message
        "30 06 02 01 01 61 81 05",  # long-form length past the end
        "30 05 04 01 01 61 00",  # messageID not an INTEGER
        "30 08 02 05 00 00 00 00 01 61",  # messageID of 5 bytes
        "30 05 02 01 ff 61 00",  # negative messageID
        "30 07 02 01 01 61 00 04 00",  # bytes after the op that are not controls
        "30 04 02 01 01 7f",  # multi-byte tag
        "30 05 02 01 01 61 80",  # indefinite length inside
        "30 05 02 01 01 61 00 00",  # message shorter than its buffer
    ],
)
def test_hostile_envelopes_are_refused(data):
    with pytest.raises(ldap.LdapError):
        ldap.decode_message(bytes.fromhex(data))


@pytest.mark.parametrize(
    "body",
    [
        "",  # nothing
        "02 01 00 04 00 04 00",  # resultCode not ENUMERATED
        "0a 00 04 00 04 00",  # empty resultCode
        "0a 01 00 04 00",  # no diagnosticMessage
        "0a 01 00 04 05 41 04 00",  # matchedDN past the end
        "0a 85 00 00 00 00 01 00",  # 5 length octets
    ],
)
def test_hostile_results_are_refused(body):
    with pytest.raises(ldap.LdapError):
        ldap.decode_result(bytes.fromhex(body))


@pytest.mark.parametrize("body", ["", "04 02 41", "02 01 00 30 00", "04 00", "04 00 30 00 00", "04 00 31 00"])
def test_hostile_entries_are_refused(body):
    with pytest.raises(ldap.LdapError):
        ldap.decode_entry_name(bytes.fromhex(body))


def test_codec_agrees_with_ldap3():
    pytest.importorskip("ldap3", reason="ldap3 (test-only) is not installed")
    from ldap3 import ANONYMOUS, BASE, DEREF_NEVER, SIMPLE
    from ldap3.operation.bind import bind_operation
    from ldap3.operation.search import search_operation
    from ldap3.operation.unbind import unbind_operation
    from ldap3.protocol.rfc4511 import (
        LDAPDN,
        BindResponse,
        LDAPMessage,
        LDAPString,
        MessageID,
        PartialAttributeList,
        ProtocolOp,
        ResultCode,
        SearchResultDone,
        SearchResultEntry,
    )
    from ldap3.utils.asn1 import encode

    def message(message_id: int, name: str, op) -> bytes:
        envelope = LDAPMessage()
        envelope["messageID"] = MessageID(message_id)
        choice = ProtocolOp()
        choice.setComponentByName(name, op)
        envelope["protocolOp"] = choice
        return bytes(encode(envelope))

    assert message(1, "bindRequest", bind_operation(3, ANONYMOUS, "", "")) == ldap.encode_bind_request(1, b"", b"")
    long_password = "p" * 200
    assert message(1, "bindRequest", bind_operation(3, SIMPLE, USER_DN, long_password)) == ldap.encode_bind_request(
        1, USER_DN.encode(), long_password.encode()
    )
    for base, limit in (("", 1), (SUFFIX, 30), ("ou=" + "é" * 200 + "," + SUFFIX, 300)):
        search = search_operation(base, "(objectClass=*)", BASE, DEREF_NEVER, ["1.1"], 2, limit, True, None, True)
        assert message(2, "searchRequest", search) == ldap.encode_search_request(2, base.encode(), limit)
    assert message(3, "unbindRequest", unbind_operation()) == ldap.encode_unbind_request(3)

    response = BindResponse()
    response["resultCode"] = ResultCode(49)
    response["matchedDN"] = LDAPDN("")
    response["diagnosticMessage"] = LDAPString("x" * 300)
    decoded = ldap.decode_message(message(1, "bindResponse", response))
    assert decoded.message_id == 1 and decoded.op == ldap.BIND_RESPONSE
    assert ldap.decode_result(decoded.body) == ldap.LdapResult(49, "", "x" * 300)
    entry = SearchResultEntry()
    entry["object"] = LDAPDN("cn=é," + SUFFIX)
    entry["attributes"] = PartialAttributeList()
    decoded = ldap.decode_message(message(2, "searchResEntry", entry))
    assert decoded.op == ldap.SEARCH_RESULT_ENTRY and ldap.decode_entry_name(decoded.body) == "cn=é," + SUFFIX
    done = SearchResultDone()
    done["resultCode"] = ResultCode(32)
    done["matchedDN"] = LDAPDN(SUFFIX)
    done["diagnosticMessage"] = LDAPString("")
    decoded = ldap.decode_message(message(2, "searchResDone", done))
    assert ldap.decode_result(decoded.body) == ldap.LdapResult(32, SUFFIX, "")


# --- slapd -----------------------------------------------------------------------------------


@dataclass
class Slapd:
    port: int  # ldap://
    tls_port: int  # ldaps://, a self-signed certificate for ldap.test and 127.0.0.1
    process: subprocess.Popen


SLAPD_CONF = """\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
pidfile {tmp}/slapd.pid
modulepath /usr/lib/ldap
moduleload back_mdb
TLSCertificateFile {tmp}/cert.pem
TLSCertificateKeyFile {tmp}/key.pem
database mdb
maxsize 10485760
suffix "{suffix}"
rootdn "{root}"
rootpw {password}
directory {tmp}/db
access to attrs=userPassword by anonymous auth by * none
access to * by * read
"""

ENTRIES = f"""\
dn: {SUFFIX}
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: ou=people,{SUFFIX}
objectClass: organizationalUnit
ou: people

dn: {USER_DN}
objectClass: person
cn: checker
sn: Checker
userPassword: {USER_PASSWORD}
"""


def _self_signed(tmp: Path) -> None:
    """``cert.pem`` and ``key.pem`` in ``tmp``: a self-signed certificate for ldap.test (and
    127.0.0.1) with an RSA key."""
    pytest.importorskip("cryptography")
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    self_signed(tmp / "cert.pem", tmp / "key.pem", "ldap.test", key)


@contextlib.contextmanager
def run_slapd(tmp: Path) -> Iterator[Slapd]:
    """slapd on loopback (ldap:// and ldaps://), its mdb database loaded with `ENTRIES`."""
    for program in ("slapd", "slapadd"):
        if shutil.which(program) is None and not Path(f"/usr/sbin/{program}").exists():
            pytest.skip(f"{program} is not installed (Debian packages slapd and ldap-utils, test-only)")
    if not Path("/usr/lib/ldap/back_mdb.so").exists():
        pytest.skip("slapd's mdb backend (/usr/lib/ldap/back_mdb.so) is not installed")
    _self_signed(tmp)
    (tmp / "db").mkdir()
    conf = tmp / "slapd.conf"
    conf.write_text(SLAPD_CONF.format(tmp=tmp, suffix=SUFFIX, root=ROOT_DN, password=ROOT_PASSWORD))
    (tmp / "entries.ldif").write_text(ENTRIES)
    slapd = shutil.which("slapd") or "/usr/sbin/slapd"
    slapadd = shutil.which("slapadd") or "/usr/sbin/slapadd"
    subprocess.run([slapadd, "-f", str(conf), "-l", str(tmp / "entries.ldif")], check=True, capture_output=True)
    port, tls_port = free_port(), free_port()
    urls = f"ldap://127.0.0.1:{port}/ ldaps://127.0.0.1:{tls_port}/"
    # -d 0: stay in the foreground (a child of this test), logging nothing
    process = subprocess.Popen([slapd, "-d", "0", "-h", urls, "-f", str(conf)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_listening(port, process, name="slapd")
        wait_listening(tls_port, process, name="slapd")
        yield Slapd(port, tls_port, process)
    finally:
        stop_process(process, 10)


@pytest.fixture(scope="module")
def slapd(tmp_path_factory) -> Iterator[Slapd]:
    with run_slapd(tmp_path_factory.mktemp("slapd")) as server:
        yield server


async def test_anonymous_bind_and_root_dse_search_pass(slapd):
    result = await check(slapd.port)
    assert result.ok, result.reason
    assert result.reason == "LDAP search ok"


async def test_anonymous_search_of_the_suffix_with_expect_passes(slapd):
    result = await check(slapd.port, query=SUFFIX, expect="^dc=example,")
    assert result.ok, result.reason


async def test_bind_with_login_passes(slapd):
    result = await check(slapd.port, query=USER_DN, login=USER_DN, password=USER_PASSWORD, expect="^cn=checker,")
    assert result.ok, result.reason
    result = await check(slapd.port, query=SUFFIX, login=ROOT_DN, password=ROOT_PASSWORD)
    assert result.ok, result.reason


async def test_wrong_password_fails(slapd):
    result = await check(slapd.port, query=SUFFIX, login=USER_DN, password="wrong")
    assert not result.ok and not result.timed_out
    assert result.reason == "LDAP bind failed: invalidCredentials (49)"


async def test_a_login_without_password_binds_anonymously_as_ldirectord(slapd):
    # ldirectord binds with login and passwd only when both are set: a bogus DN alone still
    # binds anonymously (which slapd allows), while with any password it is refused
    assert (await check(slapd.port, query=SUFFIX, login="cn=nobody,dc=nowhere")).ok
    refused = await check(slapd.port, query=SUFFIX, login="cn=nobody,dc=nowhere", password="x")
    assert refused.reason == "LDAP bind failed: invalidCredentials (49)"


async def test_missing_base_dn_fails(slapd):
    result = await check(slapd.port, query=f"ou=nowhere,{SUFFIX}")
    assert not result.ok
    assert result.reason == "LDAP search failed: noSuchObject (32)"


async def test_invalid_base_dn_syntax_fails(slapd):
    result = await check(slapd.port, query="not a dn")
    assert not result.ok
    assert result.reason == "LDAP search failed: invalidDNSyntax (34)"


async def test_expect_mismatch_fails(slapd):
    result = await check(slapd.port, query=SUFFIX, expect="^ou=")
    assert not result.ok
    assert result.reason == "LDAP entry 'dc=example,dc=test' does not match '^ou='"


async def test_bad_expect_regex_fails_without_connecting():
    result = await check(free_port(), expect="(")
    assert not result.ok and result.reason.startswith("bad expect regex: ")


async def test_ldaps_with_tls_passes_and_verification_is_applied(slapd):
    result = await check(slapd.tls_port, tls=True, query=SUFFIX, login=USER_DN, password=USER_PASSWORD)
    assert result.ok, result.reason
    refused = await check(slapd.tls_port, tls=True, verify_tls="chain")  # the system's CAs
    assert not refused.ok
    assert refused.reason.startswith("TLS certificate verify failed: self")


async def test_clear_text_against_ldaps_and_tls_against_clear_text_fail(slapd):
    against_tls = await check(slapd.tls_port, timeout=1.0)
    assert not against_tls.ok
    against_clear = await check(slapd.port, tls=True, timeout=1.0)
    assert not against_clear.ok and not against_clear.timed_out
    assert against_clear.reason.startswith(("TLS error", "connection reset", "LDAP server closed"))


async def test_stopped_server_fails(tmp_path):
    with run_slapd(tmp_path) as server:
        assert (await check(server.port)).ok
    result = await check(server.port)
    assert not result.ok and result.reason == "connection refused"


# --- hostile servers -----------------------------------------------------------------------------


async def test_silent_server_times_out_within_the_limit():
    result, elapsed = await timed_against(silent, lambda port: check(port, timeout=0.3))
    assert not result.ok and result.timed_out
    assert result.reason == "timeout after 0.3 s"
    assert elapsed < 0.3 + 0.25


async def test_garbage_reply_fails_cleanly():
    async def garbage(reader, writer):
        await reader.read(1024)
        writer.write(b"HTTP/1.0 400 Bad Request\r\n\r\n")
        await silent(reader, writer)

    async with fake_server(garbage) as port:
        result = await check(port)
    assert not result.ok and not result.timed_out
    assert result.reason == "bad LDAP reply: starts with 0x48, not a SEQUENCE"


async def test_huge_length_prefix_fails_without_reading_it():
    sent = []

    async def huge(reader, writer):
        await reader.read(1024)
        writer.write(b"\x30\x84\x7f\xff\xff\xff" + b"\x00" * 100)
        sent.append(True)
        await silent(reader, writer)  # keeps the connection open: the check must not wait

    result, elapsed = await timed_against(huge, lambda port: check(port, timeout=2.0))
    assert sent and not result.ok and not result.timed_out
    assert result.reason == "LDAP message of 2147483653 bytes; at most 65536"
    assert elapsed < 1.0


async def test_server_closing_mid_message_and_wrong_ids_fail():
    async def cut(reader, writer):
        await reader.read(1024)
        writer.write(bytes.fromhex("30 0c 02 01 01 61 07 0a"))  # a BindResponse cut short

    async def other_id(reader, writer):
        await reader.read(1024)
        writer.write(bytes.fromhex("30 0c 02 01 07 61 07 0a 01 00 04 00 04 00"))
        await silent(reader, writer)

    async def notice(reader, writer):  # Notice of Disconnection (section 4.4.1): unavailable
        await reader.read(1024)
        writer.write(bytes.fromhex("30 0c 02 01 00 78 07 0a 01 34 04 00 04 00"))

    async with fake_server(cut) as a, fake_server(other_id) as b, fake_server(notice) as c:
        results = [await check(port) for port in (a, b, c)]
    assert [r.reason for r in results] == [
        "LDAP server closed the connection mid-message",
        "bad LDAP reply: message ID 7, operation 0x61",
        "LDAP notice of disconnection: unavailable (52)",
    ]


async def test_many_entries_or_a_search_without_end_fail():
    bind_ok = bytes.fromhex("30 0c 02 01 01 61 07 0a 01 00 04 00 04 00")
    entry = bytes.fromhex("30 0b 02 01 02 64 06 04 02 64 63 30 00")  # DN "dc"
    reference = bytes.fromhex("30 0b 02 01 02 73 06 04 04 6c 64 61 70")  # one URI "ldap"

    async def two_entries(reader, writer):
        await reader.read(1024)
        writer.write(bind_ok)
        await reader.read(1024)
        writer.write(entry * 2)
        await silent(reader, writer)

    async def endless_references(reader, writer):
        await reader.read(1024)
        writer.write(bind_ok)
        await reader.read(1024)
        writer.write(reference * 100)
        await silent(reader, writer)

    async with fake_server(two_entries) as a, fake_server(endless_references) as b:
        results = [await check(port) for port in (a, b)]
    assert [r.reason for r in results] == [
        "LDAP search found more than one entry",
        "LDAP search: no SearchResultDone in 16 messages",
    ]


async def test_search_without_entry_fails():
    async def empty(reader, writer):
        await reader.read(1024)
        writer.write(bytes.fromhex("30 0c 02 01 01 61 07 0a 01 00 04 00 04 00"))
        await reader.read(1024)
        writer.write(bytes.fromhex("30 0c 02 01 02 65 07 0a 01 00 04 00 04 00"))
        await silent(reader, writer)

    async with fake_server(empty) as port:
        result = await check(port)
    assert result.reason == "LDAP search found no entry"


# --- no leak -------------------------------------------------------------------------------------


async def test_no_socket_leaks_over_hundreds_of_checks(slapd):
    async with fake_server(silent) as quiet:
        refused = free_port()
        await check(slapd.tls_port, tls=True)  # warm up: contexts, caches, the loop's own sockets
        before = open_fds()
        results = []
        for _ in range(25):
            batch = [check(slapd.port, query=SUFFIX) for _ in range(2)]
            batch += [check(slapd.tls_port, tls=True, query=SUFFIX, login=USER_DN, password=USER_PASSWORD)]
            batch += [check(slapd.port, login=USER_DN, password="wrong")]
            batch += [check(slapd.port, query="ou=none," + SUFFIX)]
            batch += [check(quiet, timeout=0.05), check(refused), check(slapd.port, tls=True, timeout=0.2)]
            results += await asyncio.gather(*batch)
        await asyncio.sleep(0.2)  # transports close on the next loop iterations
        after = open_fds()
    assert len(results) == 200
    assert sum(r.ok for r in results) == 75
    assert after <= before, (before, after)
