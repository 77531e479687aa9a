"""LDAP check (RFC 4511): a simple bind, then a base-scope search that must find one entry.

What ldirectord does (``sub check_ldap`` in ``/usr/sbin/ldirectord``, with Net::LDAP): connect
(``ldaps`` with TLS from the first byte), bind -- with ``login`` as DN and ``passwd`` when BOTH
are set, else anonymously -- and require the bind to succeed; then search ``request`` (without its
leading ``/``) with scope ``base`` and filter ``(objectClass=*)``; the server is up when the search
returns exactly one entry and, when ``receive`` is set, that entry's DN matches it.

What `check_ldap` sends, over one TCP connection to ``RIP:port`` (TLS from the first byte when
``spec.tls``, with the check's shared context `checks.protocols.tls.context_for` and SNI
`checks.protocols.tls.server_name`; with ``verify_tls: full`` and no name, the RIP is checked against the
certificate's IP addresses):

1. a BindRequest (RFC 4511 section 4.2), message ID 1: version 3, name ``spec.login`` and simple
   authentication ``spec.password`` when both are set, else the anonymous bind (empty name and
   password, section 5.1.1 of RFC 4513).  The BindResponse's resultCode must be ``success`` (0):
   else ``"LDAP bind failed: invalidCredentials (49)"``;
2. a SearchRequest (section 4.5.1), message ID 2: baseObject ``spec.query`` (``""``, the root DSE,
   when unset), scope ``baseObject``, derefAliases ``neverDerefAliases``, sizeLimit 2, timeLimit
   the check's timeout rounded up to whole seconds, typesOnly TRUE, filter ``(objectClass=*)``
   (``present``), attributes ``1.1`` (no attribute at all, section 4.5.1.8: only the entry's DN
   comes back).  SearchResultEntry messages are counted, SearchResultReference messages skipped,
   until the SearchResultDone, whose resultCode must be ``success`` (else ``"LDAP search failed:
   noSuchObject (32)"``); exactly one entry must have come (else ``"LDAP search found no
   entry"``, ``"LDAP search found more than one entry"``) and, when ``spec.expect`` is set, its
   DN (UTF-8) must match that RE2 regex (searched, not anchored; else ``"LDAP entry
   'dc=example,dc=test' does not match '^ou='"``);
3. an UnbindRequest (section 4.3), message ID 3, and the connection is closed at once.

Differences from ldirectord: the search's own resultCode must be ``success`` too (Net::LDAP's
``count`` counts the entries whatever the result; a base-scope search that finds its entry
succeeds on every server seen); sizeLimit 2 and attributes ``1.1`` keep the reply small (ldirectord
asks for all attributes and no limit, which only costs more bytes); an unsolicited Notice of
Disconnection (section 4.4.1) fails the check with its resultCode (``"LDAP notice of
disconnection: unavailable (52)"``).  ``expect`` is RE2 syntax, not Perl's.

The BER codec (X.690 section 8, the subset RFC 4511 section 5.1 allows) is written here for
exactly these messages: `encode_bind_request`, `encode_search_request`, `encode_unbind_request`
build them (definite lengths, minimal encodings); `message_size` frames the replies and
`decode_message`, `decode_result`, `decode_entry_name` read them.  Replies are hostile input:
every message is at most `MAX_MESSAGE` bytes (a larger length prefix fails the check before any
of it is read), only definite lengths and one-byte tags are accepted, every length is checked
against its enclosing element, and the decoder reads fixed structures only (at most three levels
deep: message, operation, field; nothing recursive), so its depth is bounded by construction.
Errors of a reply raise `LdapError` and fail the check with its text (``"bad LDAP reply: ..."``).
At most `MAX_REPLIES` messages are read for the search.  The time limit is applied by the caller
(`checks.base.run_check`).
"""

from __future__ import annotations

import asyncio
import functools
import math
import socket
from typing import TYPE_CHECKING, NamedTuple

from checks.protocols.http import body_matches, compile_body_pattern
from checks.protocols.tcp import socket_address
from checks.protocols.tls import context_for, server_name

if TYPE_CHECKING:  # pragma: no cover
    import re2

    from checks.base import CheckTarget

__all__ = [
    "check_ldap",
    "encode_bind_request",
    "encode_search_request",
    "encode_unbind_request",
    "message_size",
    "decode_message",
    "decode_result",
    "decode_entry_name",
    "result_name",
    "LdapError",
    "LdapMessage",
    "LdapResult",
    "MAX_MESSAGE",
]

#: Longest LDAP message read, bytes (64 KiB), framing included.
MAX_MESSAGE = 64 * 1024
#: Most messages read in answer to the search (entries, references, the done message).
MAX_REPLIES = 16
#: LDAP protocol version of the bind (RFC 4511 section 4.2).
VERSION = 3
#: The search's sizeLimit (section 4.5.1.4): one entry is wanted, two tell "more than one".
SIZE_LIMIT = 2

#: Message IDs of the three requests of a check (section 4.1.1.1: any nonzero, unique on the
#: connection).
BIND_ID, SEARCH_ID, UNBIND_ID = 1, 2, 3

#: BER tags (X.690 section 8.1.2; RFC 4511 section 4 and appendix B).
SEQUENCE = 0x30
INTEGER = 0x02
OCTET_STRING = 0x04
ENUMERATED = 0x0A
BOOLEAN = 0x01
BIND_REQUEST = 0x60  # [APPLICATION 0] constructed
BIND_RESPONSE = 0x61  # [APPLICATION 1] constructed
UNBIND_REQUEST = 0x42  # [APPLICATION 2] primitive (NULL)
SEARCH_REQUEST = 0x63  # [APPLICATION 3] constructed
SEARCH_RESULT_ENTRY = 0x64  # [APPLICATION 4] constructed
SEARCH_RESULT_DONE = 0x65  # [APPLICATION 5] constructed
SEARCH_RESULT_REFERENCE = 0x73  # [APPLICATION 19] constructed
EXTENDED_RESPONSE = 0x78  # [APPLICATION 24] constructed
SIMPLE_AUTH = 0x80  # AuthenticationChoice simple [0] primitive
FILTER_PRESENT = 0x87  # Filter present [7] primitive

#: resultCode names (RFC 4511 section 4.1.9 and appendix A).
RESULT_NAMES = {
    0: "success", 1: "operationsError", 2: "protocolError", 3: "timeLimitExceeded", 4: "sizeLimitExceeded",
    5: "compareFalse", 6: "compareTrue", 7: "authMethodNotSupported", 8: "strongerAuthRequired", 10: "referral",
    11: "adminLimitExceeded", 12: "unavailableCriticalExtension", 13: "confidentialityRequired",
    14: "saslBindInProgress", 16: "noSuchAttribute", 17: "undefinedAttributeType", 18: "inappropriateMatching",
    19: "constraintViolation", 20: "attributeOrValueExists", 21: "invalidAttributeSyntax", 32: "noSuchObject",
    33: "aliasProblem", 34: "invalidDNSyntax", 36: "aliasDereferencingProblem", 48: "inappropriateAuthentication",
    49: "invalidCredentials", 50: "insufficientAccessRights", 51: "busy", 52: "unavailable",
    53: "unwillingToPerform", 54: "loopDetect", 64: "namingViolation", 65: "objectClassViolation",
    66: "notAllowedOnNonLeaf", 67: "notAllowedOnRDN", 68: "entryAlreadyExists", 69: "objectClassModsProhibited",
    71: "affectsMultipleDSAs", 80: "other",
}  # fmt: skip


class LdapError(ValueError):
    """A reply that is not the LDAP the check expects; its text is the check's reason."""


class LdapMessage(NamedTuple):
    """One decoded LDAPMessage envelope (RFC 4511 section 4.1.1).

    Attributes:
        message_id: the messageID, 0 to 2**31 - 1 (0: an unsolicited notification).
        op: the protocolOp's tag byte (``0x61`` BindResponse, ``0x64`` SearchResultEntry...).
        body: the protocolOp's contents (its value bytes, without tag and length).
    """

    message_id: int
    op: int
    body: bytes


class LdapResult(NamedTuple):
    """The LDAPResult of a response (section 4.1.9): ``code`` and the two texts (UTF-8 decoded,
    undecodable bytes replaced)."""

    code: int
    matched_dn: str
    diagnostic: str


def result_name(code: int) -> str:
    """``49`` -> ``"invalidCredentials (49)"``; an unknown code -> ``"result 99"``."""
    name = RESULT_NAMES.get(code)
    return f"result {code}" if name is None else f"{name} ({code})"


# --- encoding ------------------------------------------------------------------------------------


def _length(size: int) -> bytes:
    """A definite length (X.690 section 8.1.3): short form below 128, else the long form with
    the fewest octets."""
    if size < 0x80:
        return bytes((size,))
    octets = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(octets),)) + octets


def _tlv(tag: int, value: bytes) -> bytes:
    return bytes((tag,)) + _length(len(value)) + value


def _integer(tag: int, value: int) -> bytes:
    """An INTEGER or ENUMERATED in the fewest two's-complement octets (X.690 section 8.3.2)."""
    return _tlv(tag, value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True))


def _message(message_id: int, op: bytes) -> bytes:
    if not 1 <= message_id <= 0x7FFFFFFF:
        raise ValueError(f"LDAP message ID {message_id}; 1 to 2147483647")
    return _tlv(SEQUENCE, _integer(INTEGER, message_id) + op)


def encode_bind_request(message_id: int, name: bytes, password: bytes) -> bytes:
    """A simple BindRequest (RFC 4511 section 4.2) in its LDAPMessage (section 4.1.1).

    ``SEQUENCE { messageID, [APPLICATION 0] SEQUENCE { version 3, name OCTET STRING,
    simple [0] password } }``; empty ``name`` and ``password``: the anonymous bind.

    Args:
        message_id: 1 to 2**31 - 1.
        name: the bind DN (UTF-8 bytes).
        password: the password (bytes).

    Raises:
        ValueError: ``message_id`` out of range.
    """
    op = _tlv(BIND_REQUEST, _integer(INTEGER, VERSION) + _tlv(OCTET_STRING, name) + _tlv(SIMPLE_AUTH, password))
    return _message(message_id, op)


def encode_search_request(message_id: int, base: bytes, time_limit: int) -> bytes:
    """The check's SearchRequest (RFC 4511 section 4.5.1) in its LDAPMessage.

    baseObject ``base``, scope baseObject (0), derefAliases neverDerefAliases (0), sizeLimit 2,
    timeLimit ``time_limit``, typesOnly TRUE, filter ``present objectClass`` (``(objectClass=*)``),
    attributes ``1.1`` (none, section 4.5.1.8).

    Args:
        message_id: 1 to 2**31 - 1.
        base: the base DN (UTF-8 bytes; empty: the root DSE).
        time_limit: seconds the server may spend (0: no limit), 0 to 2**31 - 1.

    Raises:
        ValueError: ``message_id`` or ``time_limit`` out of range.
    """
    if not 0 <= time_limit <= 0x7FFFFFFF:
        raise ValueError(f"LDAP timeLimit {time_limit}; 0 to 2147483647")
    op = _tlv(
        SEARCH_REQUEST,
        _tlv(OCTET_STRING, base)
        + _integer(ENUMERATED, 0)  # scope baseObject
        + _integer(ENUMERATED, 0)  # derefAliases neverDerefAliases
        + _integer(INTEGER, SIZE_LIMIT)
        + _integer(INTEGER, time_limit)
        + _tlv(BOOLEAN, b"\xff")  # typesOnly TRUE (DER's TRUE, X.690 section 11.1)
        + _tlv(FILTER_PRESENT, b"objectClass")
        + _tlv(SEQUENCE, _tlv(OCTET_STRING, b"1.1")),
    )
    return _message(message_id, op)


def encode_unbind_request(message_id: int) -> bytes:
    """An UnbindRequest (RFC 4511 section 4.3: ``[APPLICATION 2] NULL``) in its LDAPMessage.

    Raises:
        ValueError: ``message_id`` out of range.
    """
    return _message(message_id, _tlv(UNBIND_REQUEST, b""))


@functools.lru_cache(maxsize=1024)
def _bind_request(login: str | None, password: str | None) -> bytes:
    if login and password:  # ldirectord: a named bind only with both login and passwd
        return encode_bind_request(BIND_ID, login.encode("utf-8"), password.encode("utf-8"))
    return encode_bind_request(BIND_ID, b"", b"")


@functools.lru_cache(maxsize=1024)
def _search_request(base: str, time_limit: int) -> bytes:
    return encode_search_request(SEARCH_ID, base.encode("utf-8"), time_limit)


_UNBIND = encode_unbind_request(UNBIND_ID)


# --- decoding ------------------------------------------------------------------------------------


def _header(data: bytes | bytearray, offset: int, end: int) -> tuple[int, int, int]:
    """``(tag, value_start, value_end)`` of the element at ``offset``, which must end by ``end``.

    Raises:
        LdapError: a multi-byte tag, an indefinite length, a length of more than 4 octets or
            past ``end``, or the header itself past ``end``.
    """
    if offset + 2 > end:
        raise LdapError("bad LDAP reply: element cut short")
    tag = data[offset]
    if tag & 0x1F == 0x1F:
        raise LdapError(f"bad LDAP reply: multi-byte tag 0x{tag:02x}")
    first = data[offset + 1]
    start = offset + 2
    if first < 0x80:
        size = first
    else:
        count = first & 0x7F
        if count == 0:
            raise LdapError("bad LDAP reply: indefinite length")
        if count > 4:
            raise LdapError(f"bad LDAP reply: length of {count} octets")
        if start + count > end:
            raise LdapError("bad LDAP reply: element cut short")
        size = int.from_bytes(data[start : start + count], "big")
        start += count
    if size > end - start:
        raise LdapError(f"bad LDAP reply: element of {size} bytes past its end")
    return tag, start, start + size


def message_size(buffer: bytes | bytearray) -> int | None:
    """Size in bytes of the LDAPMessage at the start of ``buffer`` (header included), or ``None``
    when ``buffer`` does not yet hold its whole header.

    Raises:
        LdapError: not a SEQUENCE, an indefinite length or a length of more than 4 octets, or a
            message longer than `MAX_MESSAGE` (told by its header alone: nothing more is read).
    """
    if len(buffer) < 2:
        return None
    if buffer[0] != SEQUENCE:
        raise LdapError(f"bad LDAP reply: starts with 0x{buffer[0]:02x}, not a SEQUENCE")
    first = buffer[1]
    if first < 0x80:
        return 2 + first
    count = first & 0x7F
    if count == 0:
        raise LdapError("bad LDAP reply: indefinite length")
    if count > 4:
        raise LdapError(f"bad LDAP reply: length of {count} octets")
    if len(buffer) < 2 + count:
        return None
    size = 2 + count + int.from_bytes(buffer[2 : 2 + count], "big")
    if size > MAX_MESSAGE:
        raise LdapError(f"LDAP message of {size} bytes; at most {MAX_MESSAGE}")
    return size


def _int(data: bytes, start: int, end: int) -> int:
    if not 1 <= end - start <= 4:
        raise LdapError(f"bad LDAP reply: integer of {end - start} bytes")
    return int.from_bytes(data[start:end], "big", signed=True)


def decode_message(data: bytes) -> LdapMessage:
    """The envelope of one whole LDAPMessage (``data`` as framed by `message_size`).

    Controls (``[0]`` after the protocolOp, section 4.1.11) are allowed and ignored.

    Raises:
        LdapError: not one SEQUENCE spanning ``data``, a messageID that is not an INTEGER of 1 to
            4 bytes in 0..2**31 - 1, no protocolOp, a bad length anywhere in the envelope.
    """
    end = len(data)
    if end > MAX_MESSAGE:
        raise LdapError(f"LDAP message of {end} bytes; at most {MAX_MESSAGE}")
    tag, start, stop = _header(data, 0, end)
    if tag != SEQUENCE or stop != end:
        raise LdapError("bad LDAP reply: not one LDAPMessage SEQUENCE")
    tag, id_start, id_end = _header(data, start, stop)
    if tag != INTEGER:
        raise LdapError(f"bad LDAP reply: messageID tag 0x{tag:02x}")
    message_id = _int(data, id_start, id_end)
    if message_id < 0:
        raise LdapError(f"bad LDAP reply: messageID {message_id}")
    op, op_start, op_end = _header(data, id_end, stop)
    if op_end < stop:
        tag, _, control_end = _header(data, op_end, stop)
        if tag != 0xA0 or control_end != stop:
            raise LdapError("bad LDAP reply: bytes after the protocolOp")
    return LdapMessage(message_id, op, bytes(data[op_start:op_end]))


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def decode_result(body: bytes) -> LdapResult:
    """The LDAPResult that starts ``body``, the contents of a BindResponse, SearchResultDone or
    ExtendedResponse (RFC 4511 section 4.1.9): resultCode ENUMERATED, matchedDN and
    diagnosticMessage OCTET STRINGs; the optional fields after them are ignored.

    Raises:
        LdapError: a missing or mistyped field, a bad length.
    """
    end = len(body)
    tag, start, stop = _header(body, 0, end)
    if tag != ENUMERATED:
        raise LdapError(f"bad LDAP reply: resultCode tag 0x{tag:02x}")
    code = _int(body, start, stop)
    tag, dn_start, dn_end = _header(body, stop, end)
    if tag != OCTET_STRING:
        raise LdapError(f"bad LDAP reply: matchedDN tag 0x{tag:02x}")
    tag, text_start, text_end = _header(body, dn_end, end)
    if tag != OCTET_STRING:
        raise LdapError(f"bad LDAP reply: diagnosticMessage tag 0x{tag:02x}")
    return LdapResult(code, _text(body[dn_start:dn_end]), _text(body[text_start:text_end]))


def decode_entry_name(body: bytes) -> str:
    """The objectName (DN, UTF-8; undecodable bytes replaced) of a SearchResultEntry's contents
    (RFC 4511 section 4.5.2); the attributes after it must be one well-formed SEQUENCE, not read.

    Raises:
        LdapError: a missing or mistyped field, a bad length.
    """
    end = len(body)
    tag, start, stop = _header(body, 0, end)
    if tag != OCTET_STRING:
        raise LdapError(f"bad LDAP reply: objectName tag 0x{tag:02x}")
    tag, _, attributes_end = _header(body, stop, end)
    if tag != SEQUENCE or attributes_end != end:
        raise LdapError("bad LDAP reply: SearchResultEntry attributes")
    return _text(body[start:stop])


# --- the check -----------------------------------------------------------------------------------


class _Reader:
    """Frames LDAPMessages out of a stream, one at a time, each at most `MAX_MESSAGE` bytes."""

    __slots__ = ("reader", "buffer")

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.buffer = bytearray()

    async def next(self) -> LdapMessage:
        """The next message; raises `LdapError` on a bad one, ``ConnectionResetError`` when the
        server closes the connection before a whole message."""
        buffer = self.buffer
        while True:
            size = message_size(buffer)
            if size is not None and len(buffer) >= size:
                data = bytes(buffer[:size])
                del buffer[:size]
                return decode_message(data)
            chunk = await self.reader.read(MAX_MESSAGE)
            if not chunk:
                raise LdapError("LDAP server closed the connection" + (" mid-message" if buffer else ""))
            buffer += chunk


def _notice(message: LdapMessage) -> str:
    """Reason of an unsolicited notification (messageID 0, section 4.4) or of a reply to another
    request."""
    if message.message_id == 0 and message.op == EXTENDED_RESPONSE:
        return f"LDAP notice of disconnection: {result_name(decode_result(message.body).code)}"
    return f"bad LDAP reply: message ID {message.message_id}, operation 0x{message.op:02x}"


async def check_ldap(target: CheckTarget) -> tuple[bool, str]:
    """Bind to ``target`` and search its ``spec.query`` (see the module's docstring; ldirectord's
    ``sub check_ldap``).

    Returns:
        ``(True, "LDAP search ok")``, or ``(False, reason)``: ``"LDAP bind failed:
        invalidCredentials (49)"``, ``"LDAP search failed: noSuchObject (32)"``, ``"LDAP search
        found no entry"``, ``"LDAP entry 'dc=example,dc=test' does not match 'ou='"``, ``"LDAP
        message of 2147483653 bytes; at most 65536"``, ``"bad LDAP reply: ..."``, ``"bad expect
        regex: ..."`` (nothing sent).

    Raises:
        OSError: the connection failed (refused, unreachable, reset).
        ssl.SSLError: the TLS handshake of ``spec.tls`` failed (``ssl.SSLCertVerificationError``
            for a certificate refused by ``verify_tls``).
        ValueError: ``target.rip`` is not an IP address.
    """
    spec = target.spec
    pattern: re2._Regexp | str | None = None
    if spec.expect is not None:
        pattern = compile_body_pattern(spec.expect)
        if isinstance(pattern, str):
            return False, f"bad expect regex: {pattern}"
    bind = _bind_request(spec.login, spec.password)
    search = _search_request(spec.query or "", max(1, math.ceil(spec.timeout)))
    family, sockaddr = socket_address(target.rip, target.rport)
    loop = asyncio.get_running_loop()
    sock = socket.socket(family, socket.SOCK_STREAM)
    writer: asyncio.StreamWriter | None = None
    try:
        sock.setblocking(False)
        await loop.sock_connect(sock, sockaddr)
        reader, writer = await asyncio.open_connection(sock=sock, limit=MAX_MESSAGE)
        if spec.tls:
            context = context_for(spec)
            name = server_name(spec)
            if name is None and context.check_hostname:
                name = target.rip.split("%", 1)[0]  # "full" without a name: the RIP
            await writer.start_tls(context, server_hostname=name)
        messages = _Reader(reader)
        try:
            ok, reason = await _converse(writer, messages, bind, search, pattern, spec.expect)
        except LdapError as exc:
            return False, str(exc)
        writer.write(_UNBIND)
        return ok, reason
    finally:
        if writer is None:
            sock.close()
        else:
            writer.transport.abort()


async def _converse(
    writer: asyncio.StreamWriter,
    messages: _Reader,
    bind: bytes,
    search: bytes,
    pattern: re2._Regexp | None,
    expect: str | None,
) -> tuple[bool, str]:
    writer.write(bind)
    message = await messages.next()
    if message.message_id != BIND_ID or message.op != BIND_RESPONSE:
        return False, _notice(message)
    code = decode_result(message.body).code
    if code != 0:
        return False, f"LDAP bind failed: {result_name(code)}"
    writer.write(search)
    names: list[str] = []
    for _ in range(MAX_REPLIES):
        message = await messages.next()
        if message.message_id != SEARCH_ID:
            return False, _notice(message)
        if message.op == SEARCH_RESULT_ENTRY:
            names.append(decode_entry_name(message.body))
            if len(names) > 1:
                return False, "LDAP search found more than one entry"
        elif message.op == SEARCH_RESULT_DONE:
            code = decode_result(message.body).code
            if code != 0:
                return False, f"LDAP search failed: {result_name(code)}"
            if not names:
                return False, "LDAP search found no entry"
            if pattern is not None and not await body_matches(pattern, names[0]):
                return False, f"LDAP entry {names[0]!r} does not match {expect!r}"
            return True, "LDAP search ok"
        elif message.op != SEARCH_RESULT_REFERENCE:
            return False, _notice(message)
    return False, f"LDAP search: no SearchResultDone in {MAX_REPLIES} messages"
