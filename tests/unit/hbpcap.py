"""Test helpers for heartbeat traffic: a tiny pcap reader and an independent MAC check.

Nothing here uses ha.wire or ha.auth: the netstring walker, the inner-auth
text and the MACs are computed from scratch (hmac / hashlib), so tests can
check what the project's codec produces against a second implementation.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "data" / "heartbeat"


@dataclass(frozen=True)
class Captured:
    """One UDP payload: capture `time` (seconds since the epoch), IPv4 `src`."""

    time: float
    src: str
    payload: bytes


def udp_payloads(path: Path, port: int = 694) -> list[Captured]:
    """Payloads of the UDP datagrams to or from `port` in a classic pcap file
    (Ethernet link type; IPv4; 802.1Q tags skipped; fragments ignored)."""
    data = path.read_bytes()
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        end = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        end = ">"
    else:
        raise AssertionError(f"{path}: not a pcap file")
    frac = 1e9 if magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d") else 1e6
    (linktype,) = struct.unpack(end + "I", data[20:24])
    assert linktype == 1, "Ethernet captures only"
    out = []
    off = 24
    while off + 16 <= len(data):
        sec, sub, incl, _orig = struct.unpack(end + "IIII", data[off : off + 16])
        off += 16
        frame = data[off : off + incl]
        off += incl
        (ethertype,) = struct.unpack("!H", frame[12:14])
        l3 = 14
        if ethertype == 0x8100:
            (ethertype,) = struct.unpack("!H", frame[16:18])
            l3 = 18
        if ethertype != 0x0800:
            continue
        ihl = (frame[l3] & 0x0F) * 4
        proto = frame[l3 + 9]
        (frag,) = struct.unpack("!H", frame[l3 + 6 : l3 + 8])
        if proto != 17 or frag & 0x1FFF:
            continue
        src = ".".join(str(b) for b in frame[l3 + 12 : l3 + 16])
        l4 = l3 + ihl
        sport, dport, ulen = struct.unpack("!HHH", frame[l4 : l4 + 6])
        if port not in (sport, dport):
            continue
        out.append(Captured(sec + sub / frac, src, frame[l4 + 8 : l4 + ulen]))
    return out


def split_packet(packet: bytes) -> tuple[bytes, list[tuple[int, bytes, bytes]], int, str]:
    """Walk a netstring packet: (signed bytes, [(type, name, raw value)], outer index, outer MAC)."""
    assert packet.startswith(b"###\n"), packet[:10]
    pos, fields = 4, []
    while packet[pos : pos + 4] != b"%%%\n":
        colon = packet.index(b":", pos)
        n = int(packet[pos:colon])
        body = packet[colon + 1 : colon + 1 + n]
        assert packet[colon + 1 + n : colon + 2 + n] == b","
        pos = colon + 2 + n
        assert body[:1] == b"(" and body[2:3] == b")"
        name, _, value = body[3:].partition(b"=")
        fields.append((int(body[1:2]), name, value))
    signed, rest = packet[: pos + 4], packet[pos + 4 :]
    colon = rest.index(b":")
    n = int(rest[:colon])
    assert rest[colon + 1 + n :] == b",", "bytes after the outer MAC"
    idx, mac = rest[colon + 1 : colon + 1 + n].split(b" ")
    return signed, fields, int(idx), mac.decode()


def inner_text(fields: list[tuple[int, bytes, bytes]]) -> bytes:
    """The text the inner ``auth`` field covers (string and binary fields only)."""
    out = b""
    for ftype, name, value in fields:
        if name == b"auth":
            continue
        if ftype == 0:
            out += name + b"=" + value.replace(b"\n", b"\x13") + b"\n"
        elif ftype == 1:
            out += b"(1)" + name + b"=" + base64.b64encode(value) + b"\n"
        else:
            raise NotImplementedError(ftype)
    return out


def check_macs(packet: bytes, key: bytes, index: int = 1, digest: str = "sha1") -> dict[str, bytes]:
    """Verify both MACs of `packet` (HMAC with `key`); return ``{name: raw value}``
    of the first field of each name. AssertionError if anything is off."""
    signed, fields, idx, mac = split_packet(packet)
    assert idx == index, f"outer MAC index {idx}"
    assert hmac.new(key, signed, getattr(hashlib, digest)).hexdigest() == mac, "outer MAC"
    auths = [v for t, n, v in fields if n == b"auth"]
    assert len(auths) == 1 and fields[-1][1] == b"auth", "exactly one inner auth, last"
    inner_idx, inner_mac = auths[0].decode().split(" ")
    assert int(inner_idx) == index
    assert hmac.new(key, inner_text(fields), getattr(hashlib, digest)).hexdigest() == inner_mac, "inner MAC"
    out: dict[str, bytes] = {}
    for _t, name, value in fields:
        out.setdefault(name.decode(), value)
    return out
