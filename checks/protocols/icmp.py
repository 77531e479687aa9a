"""ICMP and ICMPv6 echo messages, as pure functions (byte-tested).

Used by the ``ping`` check (`checks.protocols.ping`) and by the HA layer's ping nodes (`ha.probe`);
`internet_checksum` also by `ha.announce`.

Sources: RFC 792 (ICMP echo: type 8 request, type 0 reply), RFC 1071 (the Internet
checksum), RFC 4443 section 4.1 and 4.2 (ICMPv6 echo: type 128 request, type 129 reply; the
kernel fills in the ICMPv6 checksum, RFC 3542 section 3.1, and the ICMP checksum of an
unprivileged ``SOCK_DGRAM`` ICMP socket).
"""

from __future__ import annotations

import struct

__all__ = [
    "ICMP_ECHO_REQUEST",
    "ICMP_ECHO_REPLY",
    "ICMPV6_ECHO_REQUEST",
    "ICMPV6_ECHO_REPLY",
    "internet_checksum",
    "encode_echo_request",
    "decode_echo_reply",
    "decode_echo_message",
]

ICMP_ECHO_REQUEST = 8  # RFC 792
ICMP_ECHO_REPLY = 0
ICMPV6_ECHO_REQUEST = 128  # RFC 4443 section 4.1
ICMPV6_ECHO_REPLY = 129  # RFC 4443 section 4.2

_HEADER = struct.Struct("!BBHHH")  # type, code, checksum, identifier, sequence number


def internet_checksum(data: bytes) -> int:
    """The 16-bit one's complement of the one's complement sum of ``data`` (RFC 1071).

    An odd length is padded with one zero byte.  Returns 0..65535.
    """
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def encode_echo_request(ident: int, seq: int, payload: bytes, *, ipv6: bool = False) -> bytes:
    """An ICMP (RFC 792) or ICMPv6 (RFC 4443 section 4.1) echo request: 8 header bytes, then
    ``payload``.

    Args:
        ident: identifier, 0..65535 (an unprivileged ``SOCK_DGRAM`` ICMP socket replaces it
            with its own: see `checks.protocols.ping`).
        seq: sequence number, 0..65535.
        payload: data echoed back by the target.
        ipv6: ICMPv6 (type 128, checksum left 0: the kernel computes it) instead of ICMP
            (type 8, checksum filled in).

    Raises:
        ValueError: ident or seq out of range.
    """
    if not (0 <= ident <= 0xFFFF and 0 <= seq <= 0xFFFF):
        raise ValueError("ident and seq are 16-bit values")
    kind = ICMPV6_ECHO_REQUEST if ipv6 else ICMP_ECHO_REQUEST
    header = _HEADER.pack(kind, 0, 0, ident, seq)
    if ipv6:
        return header + payload
    checksum = internet_checksum(header + payload)
    return _HEADER.pack(kind, 0, checksum, ident, seq) + payload


def decode_echo_message(message: bytes, *, ipv6: bool = False) -> tuple[int, int, bytes] | None:
    """``(ident, seq, payload)`` of an ICMP message that is an echo reply, or None for anything
    else (another type, a code other than 0, fewer than 8 bytes).

    ``message`` starts at the ICMP header: what an ICMPv6 socket or an IPv4 ``SOCK_DGRAM``
    ICMP socket returns.  The checksum is not verified (the kernel did).  Never raises.
    """
    if len(message) < 8:
        return None
    kind, code, _checksum, ident, seq = _HEADER.unpack_from(message)
    if kind != (ICMPV6_ECHO_REPLY if ipv6 else ICMP_ECHO_REPLY) or code != 0:
        return None
    return ident, seq, message[8:]


def decode_echo_reply(packet: bytes, *, ipv6: bool = False) -> tuple[int, int, bytes] | None:
    """``(ident, seq, payload)`` of an echo reply read from a raw socket, or None for anything
    else.

    Args:
        packet: what a raw socket returned: for IPv4 the IP header comes first (its length
            from the IHL field), for IPv6 the ICMPv6 message alone.
        ipv6: decode ICMPv6 (type 129) instead of ICMP (type 0).

    Never raises: short or foreign packets give None.
    """
    if not ipv6:
        if len(packet) < 20 or packet[0] >> 4 != 4:
            return None
        packet = packet[(packet[0] & 0x0F) * 4 :]
    return decode_echo_message(packet, ipv6=ipv6)
