"""RADIUS check (RFC 2865): one Access-Request, answered and authenticated.

The check sends one Access-Request (code 1) over UDP with a random identifier
and a random 16-byte Request Authenticator (`os.urandom`), carrying, in order:

* Message-Authenticator (RFC 3579 section 3.2, HMAC-MD5 of the packet keyed
  with the secret), first, as the "BlastRADIUS" advice (CVE-2024-3596) has it.
  ldirectord does not send it, but servers hardened against that attack
  (FreeRADIUS ``require_message_authenticator = yes`` on the client, the
  default for new clients of later FreeRADIUS releases) silently drop an
  Access-Request without it; it costs one HMAC.
* User-Name: ``spec.login``, or ``"directord"`` when unset (ldirectord sends
  an empty User-Name then, which RFC 2865 section 5.1 does not allow).
* User-Password: ``spec.password`` (empty when unset), hidden with the secret
  and the Request Authenticator as RFC 2865 section 5.2 says (MD5 chain over
  16-byte blocks, NUL-padded; at most 128 bytes).
* NAS-IP-Address (RFC 2865 section 5.4): the check's own local address, as
  ldirectord's Authen::Radius ``check_pwd`` sends it; NAS-IPv6-Address
  (RFC 3162 section 2.1) when checking over IPv6.

The first datagram back decides.  It must be a reply to that request: the same
identifier, a sane Length (20 to 4096 bytes, RFC 2865 section 3), a Response
Authenticator equal to MD5(Code + Identifier + Length + Request Authenticator
+ Attributes + Secret) (RFC 2865 section 3), well-formed attributes, and a
correct Message-Authenticator when it carries one (RFC 3579 section 3.2).  A
reply with a wrong Response Authenticator (a wrong secret, or a forged reply)
fails the check with ``"reply authenticator does not match: wrong secret?"``;
most servers (FreeRADIUS among them) do not answer a request signed with a
wrong secret at all, and the check then reaches its time limit.  An ICMP port
unreachable fails the check at once (``"ICMP port unreachable"``).

What counts as alive, compared with ldirectord (``sub check_radius`` in
``/usr/sbin/ldirectord``, which calls Authen::Radius ``check_pwd`` and counts
only an Access-Accept):

* with ``login`` set, the same: only Access-Accept passes; Access-Reject and
  Access-Challenge fail (``"Access-Reject"``): the configured user must log in,
  so a server that rejects everyone (its user store is down) leaves rotation;
* without ``login``, any authenticated Access-Accept, Access-Reject or
  Access-Challenge passes: the server received the request, knew the secret
  and answered it, which is what a liveness probe can ask of a server for
  which no test user was configured.

Requests are not retransmitted: a lost datagram fails one check, which
``fall`` absorbs.  The time limit is applied by the caller
(`checks.base.run_check`).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import socket
import struct
from typing import TYPE_CHECKING

from checks.protocols.datagram import PORT_UNREACHABLE, connected_udp_socket, exchange

if TYPE_CHECKING:  # pragma: no cover
    from checks.base import CheckTarget

__all__ = [
    "check_radius",
    "encode_access_request",
    "decode_reply",
    "hide_password",
    "attribute",
    "CODE_NAMES",
    "DEFAULT_LOGIN",
    "MAX_PACKET",
]

#: Packet codes (RFC 2865 section 3).
ACCESS_REQUEST = 1
ACCESS_ACCEPT = 2
ACCESS_REJECT = 3
ACCESS_CHALLENGE = 11
#: Names of the reply codes that answer an Access-Request (RFC 2865 section 4).
CODE_NAMES = {ACCESS_ACCEPT: "Access-Accept", ACCESS_REJECT: "Access-Reject", ACCESS_CHALLENGE: "Access-Challenge"}

#: Attribute types (RFC 2865 section 5, RFC 3579 section 3.2, RFC 3162 section 2.1).
USER_NAME = 1
USER_PASSWORD = 2
NAS_IP_ADDRESS = 4
MESSAGE_AUTHENTICATOR = 80
NAS_IPV6_ADDRESS = 95

#: Longest RADIUS packet, bytes (RFC 2865 section 3); the header is 20 bytes.
MAX_PACKET = 4096
HEADER = 20
#: Longest attribute value (the length octet counts the 2-byte type and length too).
MAX_VALUE = 253
#: Longest User-Password before hiding, bytes (RFC 2865 section 5.2).
MAX_PASSWORD = 128

#: User-Name sent when ``spec.login`` is unset.
DEFAULT_LOGIN = "directord"

_MESSAGE_AUTHENTICATOR_ZERO = bytes((MESSAGE_AUTHENTICATOR, 18)) + bytes(16)


def attribute(kind: int, value: bytes) -> bytes:
    """One attribute: type octet, length octet (value length + 2), value (RFC 2865 section 5).

    Raises:
        ValueError: ``value`` is empty or longer than 253 bytes.
    """
    if not 1 <= len(value) <= MAX_VALUE:
        raise ValueError(f"RADIUS attribute {kind} value of {len(value)} bytes; 1 to {MAX_VALUE}")
    return bytes((kind, len(value) + 2)) + value


def hide_password(password: bytes, secret: bytes, authenticator: bytes) -> bytes:
    """The User-Password value: ``password`` hidden per RFC 2865 section 5.2.

    The password is NUL-padded to a multiple of 16 bytes (an empty one to 16),
    then each 16-byte block p_i is XORed with b_i = MD5(secret + c_(i-1)), where
    c_0 is the 16-byte Request ``authenticator`` and c_i the previous hidden block.

    Returns:
        16 to 128 bytes.

    Raises:
        ValueError: ``password`` is longer than 128 bytes.
    """
    if len(password) > MAX_PASSWORD:
        raise ValueError(f"RADIUS password of {len(password)} bytes; at most {MAX_PASSWORD}")
    padded = password + bytes(-len(password) % 16) if password else bytes(16)
    hidden = bytearray()
    previous = authenticator
    for start in range(0, len(padded), 16):
        pad = hashlib.md5(secret + previous).digest()
        block = (int.from_bytes(padded[start : start + 16]) ^ int.from_bytes(pad)).to_bytes(16)
        hidden += block
        previous = block
    return bytes(hidden)


def encode_access_request(
    identifier: int, authenticator: bytes, user: bytes, password: bytes, secret: bytes, nas_address: bytes
) -> bytes:
    """An Access-Request (RFC 2865 section 4.1) signed with a Message-Authenticator.

    Args:
        identifier: the Identifier octet, 0 to 255.
        authenticator: the 16-byte Request Authenticator (random per request).
        user: the User-Name, 1 to 253 bytes (UTF-8 text).
        password: the User-Password in clear, at most 128 bytes (hidden here).
        secret: the shared secret.
        nas_address: the NAS's packed address: 4 bytes (sent as NAS-IP-Address)
            or 16 (NAS-IPv6-Address).

    Returns:
        The packet: header, then Message-Authenticator (HMAC-MD5 keyed with
        ``secret`` over the whole packet with this attribute's value zeroed,
        RFC 3579 section 3.2), User-Name, User-Password, NAS address.

    Raises:
        ValueError: a value out of bounds (see `attribute`, `hide_password`).
    """
    if len(authenticator) != 16:
        raise ValueError(f"RADIUS Request Authenticator of {len(authenticator)} bytes; 16")
    nas_kind = NAS_IP_ADDRESS if len(nas_address) == 4 else NAS_IPV6_ADDRESS
    attributes = (
        attribute(USER_NAME, user)
        + attribute(USER_PASSWORD, hide_password(password, secret, authenticator))
        + attribute(nas_kind, nas_address)
    )
    head = struct.pack("!BBH", ACCESS_REQUEST, identifier, HEADER + 18 + len(attributes)) + authenticator
    signature = hmac.digest(secret, head + _MESSAGE_AUTHENTICATOR_ZERO + attributes, "md5")
    return head + _MESSAGE_AUTHENTICATOR_ZERO[:2] + signature + attributes


def decode_reply(data: bytes, identifier: int, authenticator: bytes, secret: bytes) -> int:
    """Validate ``data`` as the reply to the Access-Request and return its code.

    Args:
        data: the received datagram.
        identifier: the request's Identifier.
        authenticator: the request's 16-byte Request Authenticator.
        secret: the shared secret.

    Returns:
        ``2`` (Access-Accept), ``3`` (Access-Reject) or ``11`` (Access-Challenge).

    Raises:
        ValueError: with a short reason: shorter than 20 or longer than 4096
            bytes, another identifier, a Length field out of 20..len(data),
            a wrong Response Authenticator (RFC 2865 section 3: ``"reply
            authenticator does not match: wrong secret?"``), a malformed
            attribute, a wrong Message-Authenticator (RFC 3579 section 3.2),
            another code.  Bytes past Length are padding (RFC 2865 section 3).
    """
    size = len(data)
    if size < HEADER:
        raise ValueError(f"RADIUS reply of {size} bytes; at least {HEADER}")
    if size > MAX_PACKET:
        raise ValueError(f"RADIUS reply longer than {MAX_PACKET} bytes")
    code, reply_identifier, length = data[0], data[1], int.from_bytes(data[2:4])
    if reply_identifier != identifier:
        raise ValueError(f"RADIUS reply identifier {reply_identifier}, sent {identifier}")
    if not HEADER <= length <= size:
        raise ValueError(f"RADIUS reply length field {length} in a datagram of {size} bytes")
    packet = data[:length]
    expected = hashlib.md5(packet[:4] + authenticator + packet[HEADER:] + secret).digest()
    if not hmac.compare_digest(expected, packet[4:HEADER]):
        raise ValueError("reply authenticator does not match: wrong secret?")
    signature_at = -1
    offset = HEADER
    while offset < length:
        if offset + 2 > length or packet[offset + 1] < 2 or offset + packet[offset + 1] > length:
            raise ValueError(f"malformed RADIUS reply attribute at byte {offset}")
        if packet[offset] == MESSAGE_AUTHENTICATOR:
            if packet[offset + 1] != 18:
                raise ValueError(f"malformed RADIUS reply Message-Authenticator at byte {offset}")
            signature_at = offset
        offset += packet[offset + 1]
    if signature_at >= 0:
        value = signature_at + 2
        zeroed = packet[:4] + authenticator + packet[HEADER:value] + bytes(16) + packet[value + 16 :]
        if not hmac.compare_digest(hmac.digest(secret, zeroed, "md5"), packet[value : value + 16]):
            raise ValueError("reply Message-Authenticator does not match")
    if code not in CODE_NAMES:
        raise ValueError(f"unexpected RADIUS reply code {code}")
    return code


@functools.lru_cache(maxsize=4096)
def _credentials(login: str, password: str, secret: str) -> tuple[bytes, bytes, bytes]:
    """UTF-8 User-Name, password and secret (RFC 2865 section 5: text is UTF-8), checked once."""
    user, clear, key = login.encode(), password.encode(), secret.encode()
    if len(user) > MAX_VALUE:
        raise ValueError(f"radius login of {len(user)} bytes; at most {MAX_VALUE}")
    if len(clear) > MAX_PASSWORD:
        raise ValueError(f"radius password of {len(clear)} bytes; at most {MAX_PASSWORD}")
    return user, clear, key


def _local_address(sock: socket.socket) -> bytes:
    """The packed local address of a connected socket (4 or 16 bytes)."""
    host = sock.getsockname()[0].partition("%")[0]
    return socket.inet_pton(sock.family, host)


async def check_radius(target: CheckTarget) -> tuple[bool, str]:
    """Send one Access-Request to ``target.rip``:``target.rport`` and judge the reply.

    See the module's text for the request, the validation of the reply and
    what passes (ldirectord's ``sub check_radius``, and where directord differs).

    Returns:
        ``(True, "Access-Accept")`` (or ``"Access-Reject"``/``"Access-Challenge"``
        without ``login``); ``(False, "Access-Reject")``/``(False,
        "Access-Challenge")`` with ``login``; ``(False, "ICMP port unreachable")``;
        ``(False, reason)`` for a reply that is not a valid answer (`decode_reply`'s
        reason, e.g. ``"reply authenticator does not match: wrong secret?"``).

    Raises:
        ValueError: no ``secret``, a login or password too long.
        OSError: a socket error (``EHOSTUNREACH``...).
    """
    spec = target.spec
    if not spec.secret:
        raise ValueError("a radius check needs secret: the shared secret")
    user, password, secret = _credentials(spec.login or DEFAULT_LOGIN, spec.password or "", spec.secret)
    sock = connected_udp_socket(target.rip, target.rport)
    try:
        nonce = os.urandom(17)
        identifier, authenticator = nonce[0], nonce[1:]
        request = encode_access_request(identifier, authenticator, user, password, secret, _local_address(sock))
        try:
            code = await exchange(
                sock, request, MAX_PACKET + 1, lambda data: decode_reply(data, identifier, authenticator, secret)
            )
        except ValueError as exc:  # the reply is not a valid answer: its reason as it is
            return False, str(exc)
    except ConnectionRefusedError:
        return False, PORT_UNREACHABLE
    finally:
        sock.close()
    return code == ACCESS_ACCEPT or not spec.login, CODE_NAMES[code]
