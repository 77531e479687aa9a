"""ICMP / ICMPv6 echo codec (`checks.protocols.icmp`), byte for byte."""

from __future__ import annotations

import struct

import pytest

from checks.protocols.icmp import decode_echo_message, decode_echo_reply, encode_echo_request, internet_checksum


def test_internet_checksum_rfc1071_example():
    # RFC 1071 section 3: the sum of 0001 f203 f4f5 f6f7 is ddf2 (one's complement), checksum 220d
    assert internet_checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D
    assert internet_checksum(bytes.fromhex("0001f203f4f5f6")) == internet_checksum(bytes.fromhex("0001f203f4f5f600"))
    # the end-around carry: 0800 + ffff + ffff = 2:07fe, folded 0800, complemented f7ff
    assert internet_checksum(bytes.fromhex("0800ffffffff")) == 0xF7FF


def test_echo_request_bytes():
    # RFC 792 "Echo or Echo Reply Message": type 8, code 0, checksum, identifier, sequence, data;
    # checksum: ~(0800 + 1234 + 0007 + 6162 + 6300) = ~de9d = 2162
    packet = encode_echo_request(0x1234, 7, b"abc")
    assert packet == bytes.fromhex("08 00 2162 1234 0007 616263")
    # a correct checksum makes the whole message sum to zero
    assert internet_checksum(packet) == 0
    assert encode_echo_request(0xFFFF, 0xFFFF, b"") == bytes.fromhex("08 00 f7ff ffff ffff")
    # RFC 4443 section 4.1: type 128, code 0, checksum left to the kernel (RFC 3542 section 3.1)
    assert encode_echo_request(1, 2, b"", ipv6=True) == bytes.fromhex("80 00 0000 0001 0002")
    assert encode_echo_request(1, 2, b"z", ipv6=True) == bytes.fromhex("80 00 0000 0001 0002 7a")
    for ident, seq in ((0x10000, 1), (1, 0x10000), (-1, 0)):
        with pytest.raises(ValueError):
            encode_echo_request(ident, seq, b"")


def test_echo_reply_decoding():
    icmp = struct.pack("!BBHHH", 0, 0, 0, 0x1234, 7) + b"payload"
    ip = bytes([0x45]) + bytes(19)  # a 20-byte IPv4 header
    assert decode_echo_reply(ip + icmp) == (0x1234, 7, b"payload")
    options = bytes([0x46]) + bytes(23)  # IHL 6: 24 bytes of header
    assert decode_echo_reply(options + icmp) == (0x1234, 7, b"payload")
    assert decode_echo_reply(ip + b"\x08" + icmp[1:]) is None  # a request, not a reply
    assert decode_echo_reply(ip + icmp[:5]) is None
    assert decode_echo_reply(b"\x60" + bytes(40)) is None  # not IPv4
    v6 = struct.pack("!BBHHH", 129, 0, 0, 9, 10) + b"x"
    assert decode_echo_reply(v6, ipv6=True) == (9, 10, b"x")
    assert decode_echo_reply(v6, ipv6=False) is None
    assert decode_echo_reply(b"\x81\x00", ipv6=True) is None


def test_echo_message_decoding():
    """What a SOCK_DGRAM ICMP socket returns: the ICMP message without the IP header."""
    # RFC 792 echo reply: type 0, code 0, checksum 3f5d (not checked), identifier 0x0102, seq 3
    assert decode_echo_message(bytes.fromhex("00 00 3f5d 0102 0003 6869")) == (0x0102, 3, b"hi")
    assert decode_echo_message(bytes.fromhex("00 00 0000 0102 0003")) == (0x0102, 3, b"")
    # RFC 4443 section 4.2: ICMPv6 echo reply is type 129 (0x81)
    assert decode_echo_message(bytes.fromhex("81 00 0000 ffff 0000 00"), ipv6=True) == (0xFFFF, 0, b"\x00")
    assert decode_echo_message(bytes.fromhex("81 00 0000 ffff 0000"), ipv6=False) is None
    assert decode_echo_message(bytes.fromhex("00 00 0000 0102 0003"), ipv6=True) is None
    assert decode_echo_message(bytes.fromhex("00 01 0000 0102 0003")) is None  # code 1
    assert decode_echo_message(bytes.fromhex("03 03 0000 0000 0000")) is None  # port unreachable
    assert decode_echo_message(bytes.fromhex("00 00 0000 0102 00")) is None  # 7 bytes
    assert decode_echo_message(b"") is None
