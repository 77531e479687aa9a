"""Test helpers for heartbeat traffic: the UDP payloads of a capture and an independent MAC check.

Nothing here uses ha.wire or ha.auth: captures are read and their frames
decoded with scapy (Ethernet / IPv4 / UDP), the netstring walker, the
inner-auth text and the MACs are computed from scratch (hmac / hashlib), so
tests can check what the project's codec produces against a second
implementation.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether  # also registers the Ethernet link type for the pcap reader
from scapy.utils import PcapReader

DATA = Path(__file__).resolve().parent.parent / "data" / "heartbeat"


@dataclass(frozen=True)
class Captured:
    """One UDP payload: capture `time` (seconds since the epoch), IPv4 `src`."""

    time: float
    src: str
    payload: bytes


def udp_payloads(path: Path, port: int = 694) -> list[Captured]:
    """Payloads of the UDP datagrams to or from `port` in a pcap or pcapng file (Ethernet link
    type; IPv4, 802.1Q tags passed over; fragments ignored), decoded with scapy, in file order.
    The payload is the UDP length's worth (Ethernet padding dropped)."""
    out = []
    with PcapReader(str(path)) as reader:
        for pkt in reader:
            assert isinstance(pkt, Ether), f"{path}: Ethernet captures only"
            if IP not in pkt:
                continue
            ip = pkt[IP]
            udp = ip.payload
            if ip.frag or not isinstance(udp, UDP) or port not in (udp.sport, udp.dport):
                continue
            out.append(Captured(float(pkt.time), ip.src, bytes(udp.payload)[: udp.len - 8]))
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
