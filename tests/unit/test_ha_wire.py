"""Tests for ha.wire against real heartbeat 3.0.6 captures.

The captures (tests/data/heartbeat) are read and their frames decoded with
scapy (Ethernet / IPv4 / UDP, `hbpcap.udp_payloads`). MACs of what we encode
are checked with an independent netstring walker and hmac / hashlib / a
bitwise CRC in this file, not with ha.auth or ha.wire.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import random
from functools import cache

import pytest
from hbpcap import DATA, Captured, udp_payloads
from hbpcap import inner_text as ref_inner_text
from hbpcap import split_packet as ref_split
from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.utils import rdpcap, wrpcap

from ha.auth import parse_authkeys
from ha.wire import (
    FT_BINARY,
    FT_COMPRESS,
    FT_LIST,
    FT_STRING,
    FT_STRUCT,
    FT_UNCOMPRESS,
    MAX_DEPTH,
    MAX_ELEMENTS,
    MAX_FIELDS,
    BadAuth,
    Field,
    MalformedPacket,
    Message,
    UnknownAuthIndex,
    WireError,
    add_standard_fields,
    auth_text,
    decode_packet,
    encode_packet,
    encode_text_packet,
    is_noseq_type,
    needs_netstring,
    parse_packet,
    to_netstring,
    to_text,
    verify_inner_auth,
    with_inner_auth,
)

CAPTURES = ["pair-sha1-failover.pcap", "pair-sha1-loss-rexmit.pcap", "start-md5.pcap", "start-crc.pcap"]


@cache
def packets(name: str) -> tuple[Captured, ...]:
    return tuple(udp_payloads(DATA / name))


@cache
def keys(name: str):
    return parse_authkeys((DATA / f"authkeys.{name}").read_bytes(), f"authkeys.{name}")


# --- independent reference: netstring walker and MACs ------------------------------------------------

REF_KEYS = {1: ("sha1", b"testkey123"), 2: ("md5", b"md5secret"), 3: ("crc", None)}


def ref_crc(data: bytes) -> str:
    reg = 0
    for byte in data:
        for bit in range(7, -1, -1):
            top = (reg >> 31) ^ ((byte >> bit) & 1)
            reg = (reg << 1) & 0xFFFFFFFF
            if top:
                reg ^= 0x04C11DB7
    return "%x" % (reg ^ 0xFFFFFFFF)


def ref_mac(index: int, data: bytes) -> str:
    method, key = REF_KEYS[index]
    if method == "crc":
        return ref_crc(data)
    return hmac.new(key, data, getattr(hashlib, method)).hexdigest()


def ref_check(packet: bytes) -> list:
    """Independently verify both MACs of a netstring packet; returns the fields."""
    signed, fields, idx, mac = ref_split(packet)
    assert ref_mac(idx, signed) == mac, "outer MAC"
    auths = [v for t, n, v in fields if n == b"auth"]
    assert len(auths) == 1 and fields[-1][1] == b"auth"
    inner_idx, inner_mac = auths[0].decode().split(" ")
    assert ref_mac(int(inner_idx), ref_inner_text(fields)) == inner_mac, "inner MAC"
    return fields


# --- the captures ------------------------------------------------------------------------------------


def test_capture_inventory():
    counts = {name: collections.Counter() for name in CAPTURES}
    for name in CAPTURES:
        for p in packets(name):
            counts[name][parse_packet(p.payload).message.msg_type] += 1
    assert sum(counts["pair-sha1-failover.pcap"].values()) == 318
    assert sum(counts["pair-sha1-loss-rexmit.pcap"].values()) == 256
    assert sum(counts["start-md5.pcap"].values()) == 14
    assert sum(counts["start-crc.pcap"].values()) == 28
    assert counts["pair-sha1-failover.pcap"] == {
        "status": 228,
        "NS_ackmsg": 47,
        "resource": 24,
        "ask_resources": 5,
        "starting": 3,
        "reqnodes": 3,
        "repnodes": 3,
        "shutdone": 2,
        "stonith": 2,
        "ip-request-resp": 1,
    }
    assert counts["pair-sha1-loss-rexmit.pcap"]["NS_rexmit"] == 45


@pytest.mark.parametrize("name", CAPTURES)
def test_capture_frames_are_heartbeat_over_udp_694(name):
    """Every frame of the captures, decoded with scapy: Ethernet / IPv4 / UDP broadcast to port
    694 (heartbeat's ``udpport``; IANA's ha-cluster) from a node's address, not fragmented,
    carrying a netstring packet that the project's decoder reads, and `udp_payloads` yields the
    same payloads; or, in the failover capture, the gratuitous ARPs of the VIP's takeover."""
    frames = rdpcap(str(DATA / name))
    udp_frames = [pkt for pkt in frames if IP in pkt]
    others = [pkt for pkt in frames if IP not in pkt]
    assert all(ARP in pkt and pkt[ARP].psrc == pkt[ARP].pdst == "10.250.0.100" for pkt in others)
    assert len(others) == (40 if name == "pair-sha1-failover.pcap" else 0)
    assert len(udp_frames) == len(packets(name))
    for pkt, captured in zip(udp_frames, packets(name)):
        assert isinstance(pkt, Ether) and isinstance(pkt.payload, IP), pkt.summary()
        ip, udp = pkt[IP], pkt[IP].payload
        assert isinstance(udp, UDP) and udp.dport == 694, pkt.summary()
        assert (pkt.dst, ip.dst) == ("ff:ff:ff:ff:ff:ff", "10.250.0.255")
        assert ip.frag == 0 and not ip.flags.MF and ip.src in ("10.250.0.1", "10.250.0.2")
        payload = bytes(udp.payload)[: udp.len - 8]
        assert payload.startswith(b"###\n") and payload.endswith(b",")
        assert (captured.src, captured.payload, captured.time) == (ip.src, payload, float(pkt.time))
        assert parse_packet(payload).framing == "netstring"


def test_udp_payloads_keeps_unfragmented_ipv4_udp_on_the_port_only(tmp_path):
    body = b"###\n11:(0)t=status,%%%\n"
    mac = "02:00:00:00:00:01"
    frames = [
        Ether(src=mac) / IP(src="10.0.0.1", dst="10.0.0.255") / UDP(sport=694, dport=694) / body,
        Ether(src=mac) / Dot1Q(vlan=7) / IP(src="10.0.0.2") / UDP(sport=40000, dport=694) / body,  # tagged
        Ether(src=mac) / IP(src="10.0.0.3") / UDP(sport=694, dport=9) / b"x",  # from the port
        Ether(src=mac) / IP(src="10.0.0.4") / UDP(sport=9, dport=9) / body,  # another port
        Ether(src=mac) / IP(src="10.0.0.5", frag=3) / UDP(sport=694, dport=694) / body,  # a later fragment
        Ether(src=mac) / IPv6(src="fd00::1") / UDP(sport=694, dport=694) / body,  # IPv4 only
        Ether(src=mac) / IP(src="10.0.0.6") / UDP(sport=694, dport=694) / b"ab",  # padded to 60 bytes
    ]
    padded = []
    for i, f in enumerate(frames):
        pkt = Ether(bytes(f) + bytes(max(0, 60 - len(f))))  # the 60-byte minimum on the wire
        pkt.time = 1000 + i / 4
        padded.append(pkt)
    path = tmp_path / "mixed.pcap"
    wrpcap(str(path), padded)
    assert udp_payloads(path) == [
        Captured(1000.0, "10.0.0.1", body),
        Captured(1000.25, "10.0.0.2", body),
        Captured(1000.5, "10.0.0.3", b"x"),
        Captured(1001.5, "10.0.0.6", b"ab"),
    ]
    assert [(c.src, c.payload) for c in udp_payloads(path, port=9)] == [("10.0.0.3", b"x"), ("10.0.0.4", body)]


@pytest.mark.parametrize(
    "capture, keyname",
    [
        ("pair-sha1-failover.pcap", "sha1"),
        ("pair-sha1-loss-rexmit.pcap", "sha1"),
        ("start-md5.pcap", "md5"),
    ],
)
def test_captured_packets_decode_and_verify(capture, keyname):
    for p in packets(capture):
        msg = decode_packet(p.payload, keys(keyname), check_inner_auth=True)
        fields = ref_check(p.payload)
        # the decoded message is exactly what the reference walker sees
        assert [(f.type, f.name.encode()) for f in msg] == [(t, n) for t, n, _ in fields]
        for f, (t, _, raw) in zip(msg, fields):
            assert (f.value.encode() if t == FT_STRING else f.value) == raw
        assert len(msg.get_binary("srcuuid")) == 16
        assert msg.get("src") == {"10.250.0.1": "nodea", "10.250.0.2": "nodeb"}[p.src]
        assert verify_inner_auth(msg, keys(keyname)) == keys(keyname).send_index


def test_crc_capture_each_receiver_accepts_only_its_own_index():
    pk = packets("start-crc.pcap")
    crc_ok = md5_ok = 0
    for p in pk:
        try:
            msg = decode_packet(p.payload, keys("crc"), check_inner_auth=True)
        except UnknownAuthIndex as exc:
            assert exc.index == 2
            msg = decode_packet(p.payload, keys("md5"), check_inner_auth=True)
            md5_ok += 1
            assert msg.get("auth").startswith("2 ")
        else:
            crc_ok += 1
            assert msg.get("auth").startswith("3 ")
            with pytest.raises(UnknownAuthIndex) as info:
                decode_packet(p.payload, keys("md5"))
            assert info.value.index == 3
        ref_check(p.payload)
    assert (crc_ok, md5_ok) == (15, 13)


def test_unconfigured_index_is_rejected_as_unknown():
    p = packets("pair-sha1-failover.pcap")[0].payload
    for other in ("md5", "crc"):
        with pytest.raises(UnknownAuthIndex, match="index 1"):
            decode_packet(p, keys(other))


def test_same_index_wrong_key_is_bad_auth():
    wrong = parse_authkeys("auth 1\n1 sha1 testkey124\n", "wrong")
    for p in packets("pair-sha1-failover.pcap")[:20]:
        with pytest.raises(BadAuth):
            decode_packet(p.payload, wrong)


@pytest.mark.parametrize("capture", CAPTURES)
def test_reencoding_captured_messages_is_byte_exact(capture):
    for p in packets(capture):
        idx = parse_packet(p.payload).auth_index
        k = {1: keys("sha1"), 2: keys("md5"), 3: keys("crc")}[idx]
        msg = decode_packet(p.payload, k)
        assert encode_packet(msg, k) == p.payload
        # and without recomputing the inner MAC: the same bytes again
        assert encode_packet(msg, k, inner_auth=False) == p.payload


def test_inner_auth_of_captured_packets():
    for name in CAPTURES:
        for p in packets(name):
            _, fields, _, _ = ref_split(p.payload)
            msg = parse_packet(p.payload).message
            assert auth_text(msg) == ref_inner_text(fields)
            idx, mac = msg.get("auth").split(" ")
            assert ref_mac(int(idx), ref_inner_text(fields)) == mac


def test_retransmissions_are_identical_bytes():
    # heartbeat answers NS_rexmit (firstseq/lastseq in decimal) from its history,
    # resending the very same bytes (same ts, same MACs)
    pk = packets("pair-sha1-loss-rexmit.pcap")
    seen = collections.Counter(p.payload for p in pk)
    requested = set()
    for p in pk:
        msg = decode_packet(p.payload, keys("sha1"))
        if msg.msg_type == "NS_rexmit":
            requested.update(range(int(msg["firstseq"]), int(msg["lastseq"]) + 1))
    resent = [decode_packet(raw, keys("sha1")) for raw, n in seen.items() if n > 1]
    sequenced = [m for m in resent if m.get("seq") is not None]
    assert len(sequenced) >= 10
    for msg in sequenced:
        assert int(msg["seq"], 16) in requested


# --- building heartbeat's packets from scratch ---------------------------------------------------------

STANDARD = ("destuuid", "src", "srcuuid", "seq", "hg", "ts", "ld", "ttl", "auth")


def rebuild(msg: Message) -> Message:
    """Rebuild a captured message from its own fields plus the standard values."""
    own = Message(f for f in msg if f.name not in STANDARD)
    seq = msg.get("seq")
    return add_standard_fields(
        own,
        src=msg["src"],
        srcuuid=msg.get_binary("srcuuid"),
        seq=None if seq is None else int(seq, 16),
        hg=int(msg["hg"], 16),
        ts=int(msg["ts"], 16),
        ld=msg.get("ld"),
        ttl=int(msg["ttl"]),
        destuuid=msg.get_binary("destuuid"),
    )


def test_every_message_type_rebuilt_from_scratch_is_byte_exact():
    done = set()
    for name in ("pair-sha1-failover.pcap", "pair-sha1-loss-rexmit.pcap"):
        for p in packets(name):
            msg = decode_packet(p.payload, keys("sha1"))
            assert encode_packet(rebuild(msg), keys("sha1")) == p.payload
            done.add(msg.msg_type)
    assert done >= {"status", "NS_ackmsg", "NS_rexmit", "repnodes", "reqnodes", "resource", "ip-request-resp"}


def test_status_built_by_hand_matches_capture():
    first = packets("pair-sha1-failover.pcap")[0]
    uuid = decode_packet(first.payload, keys("sha1")).get_binary("srcuuid")
    msg = Message.from_pairs([("t", "status"), ("st", "init"), ("dt", "1f40"), ("protocol", "1")])
    full = add_standard_fields(
        msg, src="nodeb", srcuuid=uuid, seq=1, hg=0x6B02453C, ts=0x6B024540, ld="0.00 0.40 0.55 1/88 16\n", ttl=3
    )
    wanted = decode_packet(first.payload, keys("sha1"))
    assert [f.name for f in full] + ["auth"] == wanted.names
    # the capture's own hg/ts/ld values give the capture's bytes
    same = add_standard_fields(
        msg,
        src="nodeb",
        srcuuid=uuid,
        seq=1,
        hg=int(wanted["hg"], 16),
        ts=int(wanted["ts"], 16),
        ld=wanted["ld"],
        ttl=3,
    )
    assert encode_packet(same, keys("sha1")) == first.payload


def test_our_packets_verify_with_an_independent_implementation():
    uuid_a = bytes(range(16))
    uuid_b = bytes(range(100, 116))
    messages = [
        Message.from_pairs([("t", "status"), ("st", "active"), ("dt", "1770"), ("protocol", "1")]),
        Message.from_pairs([("t", "NS_ackmsg"), ("dest", "nodeb"), ("ackseq", "1f")]),
        Message.from_pairs([("t", "NS_rexmit"), ("dest", "nodeb"), ("firstseq", "10"), ("lastseq", "12")]),
        Message.from_pairs([("dest", "nodeb"), ("t", "repnodes"), ("nodelist", "nodea nodeb "), ("delnodelist", " ")]),
        Message.from_pairs([("t", "resource"), ("rsc_hold", "all"), ("info", "line one\nline two")]),
        Message.from_pairs([("t", "blob"), ("b0", b""), ("b1", b"\x00"), ("b2", b"\xff\n"), ("b4", b"\n\n\n\n")]),
        Message.from_pairs([("t", "utf8"), ("who", "nœud-α"), ("comma", "a,b:c=d")]),
    ]
    for keyname in ("sha1", "md5", "crc"):
        k = keys(keyname)
        for seq, msg in enumerate(messages, start=1):
            noseq = is_noseq_type(msg.msg_type)
            full = add_standard_fields(
                msg,
                src="nodea",
                srcuuid=uuid_a,
                seq=None if noseq else seq,
                hg=0x6B0245D3,
                ts=0x6B024852 + seq,
                ld=None if noseq else "0.00 0.31 0.50 1/87 28",
                ttl=3,
                destuuid=uuid_b if msg.get("dest") else None,
            )
            raw = encode_packet(full, k)
            fields = ref_check(raw)
            names = [n for _, n, _ in fields]
            assert names[-1] == b"auth"
            assert (b"seq" in names) == (not noseq) and (b"ld" in names) == (not noseq)
            assert decode_packet(raw, k, check_inner_auth=True) == with_inner_auth(full, k)


def test_binary_fields_in_inner_auth_use_padded_base64():
    msg = Message().add("t", "x").add("one", b"a").add("two", b"ab").add("three", b"abc")
    assert auth_text(msg) == b"t=x\n(1)one=YQ==\n(1)two=YWI=\n(1)three=YWJj\n"


def test_newline_in_string_becomes_0x13_in_inner_auth_only():
    msg = Message().add("t", "x").add("info", "a\nb")
    assert auth_text(msg) == b"t=x\ninfo=a\x13b\n"
    assert b"11:(0)info=a\nb," in to_netstring(msg)


# --- tampering -----------------------------------------------------------------------------------------


def test_changed_value_is_bad_auth():
    raw = packets("pair-sha1-failover.pcap")[0].payload
    assert b"(0)st=init," in raw
    forged = raw.replace(b"(0)st=init,", b"(0)st=dead,")
    with pytest.raises(BadAuth, match="outer MAC"):
        decode_packet(forged, keys("sha1"))


def test_every_single_byte_change_is_rejected():
    raw = packets("pair-sha1-failover.pcap")[5].payload
    k = keys("sha1")
    kinds = collections.Counter()
    for pos in range(len(raw)):
        for flip in (0x01, 0x20):
            forged = raw[:pos] + bytes([raw[pos] ^ flip]) + raw[pos + 1 :]
            with pytest.raises(WireError) as info:
                decode_packet(forged, k)
            kinds[type(info.value)] += 1
    assert kinds[BadAuth] > len(raw)  # most changes keep the framing and break the MAC
    assert kinds[MalformedPacket] > 0


def test_resigned_with_another_key_is_bad_auth():
    raw = packets("start-md5.pcap")[0].payload
    msg = decode_packet(raw, keys("md5"))
    msg.set("st", "active")
    attacker = parse_authkeys("auth 2\n2 md5 guessed\n", "attacker")
    forged = encode_packet(msg, attacker)
    with pytest.raises(BadAuth):
        decode_packet(forged, keys("md5"))


def test_inner_auth_tampering_detected_when_checked():
    raw = packets("start-md5.pcap")[0].payload
    msg = decode_packet(raw, keys("md5"))
    msg.set("st", "active")
    # outer MAC recomputed with the right key, inner auth left stale
    forged = encode_packet(msg, keys("md5"), inner_auth=False)
    assert decode_packet(forged, keys("md5")).get("st") == "active"  # what real heartbeat checks
    with pytest.raises(BadAuth, match="inner MAC"):
        decode_packet(forged, keys("md5"), check_inner_auth=True)


def test_outer_mac_problems():
    raw = packets("pair-sha1-failover.pcap")[0].payload
    signed, _, idx, mac = ref_split(raw)
    k = keys("sha1")
    with pytest.raises(BadAuth, match="no outer MAC"):
        decode_packet(signed, k)
    upper = signed + b"%d:%d %s," % (len(mac) + 2, idx, mac.upper().encode())
    with pytest.raises(BadAuth):
        decode_packet(upper, k)
    with pytest.raises(MalformedPacket, match="after the outer MAC"):
        decode_packet(raw + b"\0", k)
    with pytest.raises(MalformedPacket):
        decode_packet(signed + b"41:1 " + mac.encode() + b",", k)  # wrong netstring length
    with pytest.raises(MalformedPacket):
        decode_packet(signed + b"%d:%s," % (len(mac) + 1, b"1" + mac.encode()), k)  # no space
    with pytest.raises(UnknownAuthIndex) as info:
        decode_packet(signed + b"%d:%d %s," % (len(mac) + 3, 16, mac.encode()), k)
    assert info.value.index == 16


# --- text framing ------------------------------------------------------------------------------------------


def test_text_framing_hand_written_packet():
    uuid = bytes(range(16))
    body = (
        b"t=status\nst=up\ndt=1f40\nprotocol=1\nsrc=nodea\n(1)srcuuid="
        + base64.b64encode(uuid)
        + b"\nseq=2\nhg=6b0245d4\nts=6b024853\nld=0.00 0.31 0.50 1/92 27\nttl=3\ninfo=two\x13lines\n"
    )
    mac = hmac.new(b"testkey123", body, hashlib.sha1).hexdigest()
    raw = b">>>\n" + body + b"auth=1 " + mac.encode() + b"\n<<<\n\0"
    msg = decode_packet(raw, keys("sha1"))
    assert msg.get("st") == "up" and msg.get_binary("srcuuid") == uuid
    assert msg.get("info") == "two\nlines"
    assert decode_packet(raw[:-1], keys("sha1")) == msg  # NUL terminator optional
    assert parse_packet(raw).framing == "text"
    assert to_text(msg) + b"\0" == raw
    # heartbeat's text receiver checks the inner MAC
    with pytest.raises(BadAuth):
        decode_packet(raw.replace(b"st=up", b"st=uq"), keys("sha1"))
    with pytest.raises(BadAuth, match="no inner 'auth'"):
        decode_packet(b">>>\n" + body + b"<<<\n", keys("sha1"))
    with pytest.raises(UnknownAuthIndex):
        decode_packet(raw, keys("md5"))
    with pytest.raises(MalformedPacket, match="after"):
        decode_packet(raw + b"x", keys("sha1"))
    # the signed text leaves out every 'auth' field: a second one is refused
    with pytest.raises(BadAuth, match="2 'auth' fields"):
        decode_packet(raw.replace(b"st=up\n", b"st=up\nauth=1 00\n"), keys("sha1"))


def test_text_packets_round_trip_for_all_keys():
    msg = Message.from_pairs([("t", "x"), ("info", "a\nb"), ("bin", b"\x00\x01\x02"), ("l", ("a", "bc"))])
    for keyname in ("sha1", "md5", "crc"):
        raw = encode_text_packet(msg, keys(keyname))
        assert raw.endswith(b"<<<\n\0")
        assert b"info=a\x13b\n" in raw and b"(3)l=1:a,2:bc,\n" in raw
        assert decode_packet(raw, keys(keyname)) == with_inner_auth(msg, keys(keyname))


@pytest.mark.parametrize(
    "text, fragment",
    [
        (b">>>\nt=x\n(0)a=b\n<<<\n", "no '(0)' prefix"),
        (b">>>\nt=x\na=\n<<<\n", "empty value"),
        (b">>>\nt=x\nnoequals\n<<<\n", "not 'name=value'"),
        (b">>>\nt=x\n=v\n<<<\n", "not 'name=value'"),
        (b">>>\nt=x\n(1)b=abc\n<<<\n", "multiple of 4"),
        (b">>>\nt=x\n(1)b=ab!=\n<<<\n", "bad base64"),
        (b">>>\nt=x\n(7)b=abcd\n<<<\n", "type 7"),
        (b">>>\nt=x\n(5)b=abcd\n<<<\n", "type 5"),
        (b">>>\nt=x\n", "without '<<<"),
        (b">>>\nt=x", "no newline"),
        (b">>>\nt=a\x00b\n<<<\n", "NUL"),
    ],
)
def test_malformed_text(text, fragment):
    with pytest.raises(MalformedPacket, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        parse_packet(text)


def test_text_blank_lines_between_fields_are_skipped():
    msg = parse_packet(b">>>\n\nt=x\n\n\na=b\n<<<\n").message
    assert msg.names == ["t", "a"]


# --- structs, lists, other types ---------------------------------------------------------------------------


def test_struct_and_list_netstring_layout():
    child = Message().add("k", "v").add("n", ("x", "yz"))
    msg = Message().add("t", "crmd").add("payload", child).add("l", ["abc", "defg"])
    body = to_netstring(msg)
    assert body == (b"###\n9:(0)t=crmd,46:(2)payload=###\n6:(0)k=v,14:(3)n=1:x,2:yz,,%%%\n,18:(3)l=3:abc,4:defg,,%%%\n")
    assert needs_netstring(msg)
    raw = encode_packet(msg, keys("sha1"))
    assert b"(0)auth=" not in raw  # heartbeat adds no inner MAC to messages with structs
    got = decode_packet(raw, keys("sha1"))
    assert got == msg
    assert got.get_struct("payload").get_list("n") == ("x", "yz")
    assert got.get_list("l") == ("abc", "defg")
    signed, _, idx, mac = ref_split(raw)
    assert ref_mac(idx, signed) == mac
    # forcing an inner MAC is possible and covers the struct's text form
    forced = decode_packet(encode_packet(msg, keys("sha1"), inner_auth=True), keys("sha1"), check_inner_auth=True)
    assert forced.get("auth") is not None


def test_struct_text_form_uses_depth_symbols():
    grandchild = Message().add("g", "1")
    child = Message().add("c", "line\nbreak").add("gc", grandchild)
    msg = Message().add("t", "x").add("s", child)
    text = to_text(msg)
    # depth 0 struct: newlines -> 0x14; depth 1 struct inside it: 0x15; string newline: 0x13
    assert text == (b">>>\nt=x\n(2)s=>>>\x14c=line\x13break\x14(2)gc=>>>\x15g=1\x15<<<\x15\x14<<<\x14\n<<<\n")
    assert parse_packet(text).message == msg
    bad_child = Message().add("c", "has \x14 inside")
    with pytest.raises(ValueError):
        to_text(Message().add("t", "x").add("s", bad_child))


def test_compressed_and_uncompressed_types():
    inner = Message().add("a", "b")
    msg = Message(
        [Field("t", FT_STRING, "x"), Field("z", FT_COMPRESS, b"\x78\x9c\x00"), Field("u", FT_UNCOMPRESS, inner)]
    )
    raw = encode_packet(msg, keys("crc"))
    got = decode_packet(raw, keys("crc"))
    assert got.field("z").type == FT_COMPRESS and got.field("z").value == b"\x78\x9c\x00"
    assert got.get_struct("u") == inner
    with pytest.raises(ValueError):
        to_text(msg)  # type 5 has no text form


def ns(body: bytes) -> bytes:
    return b"%d:%s," % (len(body), body)


@pytest.mark.parametrize(
    "body, fragment",
    [
        (ns(b"(6)a=bcd"), "unknown type 6"),
        (ns(b"(x)a=bcd"), "'(<type>)'"),
        (ns(b"t=status"), "'(<type>)'"),
        (ns(b"(0)"), "'(<type>)'"),
        (ns(b"(0)abcd"), "no '='"),
        (ns(b"(0)=bcd"), "empty field name"),
        (b"07:(0)a=bc,", "leading zero"),
        (b"8:(0)a=bc;", "not closed by ','"),
        (b"99:(0)a=bc,", "runs past the end"),
        (b"1234567:(0)a=bc,", "too many digits"),
        (b"x:(0)a=bc,", "decimal length"),
        (b"8 (0)a=bc,", "expected ':'"),
        (ns(b"(3)l=0:,"), "empty element"),
        (ns(b"(3)l=a"), "list field 'l'"),
        (ns(b"(3)l=2:a,"), "list field 'l'"),
        (ns(b"(3)l="), "is empty"),
        (ns(b"(2)s=###\n"), "without '%%%"),
        (ns(b"(2)s=###\n%%%\nx"), "after its end marker"),
        (ns(b"(2)s=%%%\n"), "expected '###"),
        (ns(b"(0)a=\x00b"), "NUL"),
        (ns(b"(3)l=3:a\x00b,"), "NUL"),
    ],
)
def test_malformed_netstring_fields(body, fragment):
    with pytest.raises(MalformedPacket) as info:
        parse_packet(b"###\n" + body + b"%%%\n")
    assert fragment in str(info.value)


def test_empty_values_are_fine_in_netstring_form():
    msg = Message().add("t", "x").add("e", "").add("b", b"")
    assert parse_packet(to_netstring(msg)).message == msg
    with pytest.raises(ValueError, match="no text form"):
        encode_text_packet(msg, keys("sha1"))


def test_nesting_depth_limit():
    def nested(levels: int) -> Message:
        msg = Message().add("leaf", "1")
        for _ in range(levels):
            msg = Message().add("s", msg)
        return msg

    ok = to_netstring(nested(MAX_DEPTH))
    assert parse_packet(ok).message == nested(MAX_DEPTH)
    with pytest.raises(MalformedPacket, match="deeper"):
        parse_packet(to_netstring(nested(MAX_DEPTH + 1)))
    with pytest.raises(MalformedPacket):
        parse_packet(b"###\n" * 100000)


def test_not_a_packet():
    for raw in (b"", b"##", b"hello world", b"%%%\n", b"<<<\n"):
        with pytest.raises(MalformedPacket):
            decode_packet(raw, keys("sha1"))
    with pytest.raises(MalformedPacket, match="larger than any UDP"):
        decode_packet(b"###\n" + b"x" * 70000, keys("sha1"))
    with pytest.raises(TypeError):
        decode_packet("###\n", keys("sha1"))  # type: ignore[arg-type]


# --- standard fields helper ---------------------------------------------------------------------------------


def test_standard_fields_order_and_formats():
    msg = Message.from_pairs([("t", "reqnodes"), ("dest", "nodea")])
    full = add_standard_fields(
        msg,
        src="nodeb",
        srcuuid=b"u" * 16,
        seq=0x2A,
        hg=255,
        ts=1700000000,
        ld="1.0 2.0 3.0 1/2 3\nrest",
        ttl=3,
        destuuid=b"d" * 16,
    )
    assert full.names == ["t", "dest", "destuuid", "src", "srcuuid", "seq", "hg", "ts", "ld", "ttl"]
    assert full["seq"] == "2a" and full["hg"] == "ff" and full["ts"] == "6553f100"
    assert full["ld"] == "1.0 2.0 3.0 1/2 3" and full["ttl"] == "3"
    assert full.field("srcuuid").type == FT_BINARY and full.field("destuuid").type == FT_BINARY
    assert msg.names == ["t", "dest"]  # input untouched


def test_standard_fields_noseq_rules():
    common = dict(src="a", srcuuid=b"u" * 16, hg=1, ts=2, ttl=3)
    ns = Message.from_pairs([("t", "NS_ackmsg"), ("dest", "b"), ("ackseq", "5")])
    full = add_standard_fields(ns, **common)
    assert full.names == ["t", "dest", "ackseq", "src", "srcuuid", "hg", "ts", "ttl"]
    with pytest.raises(ValueError, match="no seq"):
        add_standard_fields(ns, seq=1, **common)
    with pytest.raises(ValueError, match="no seq"):
        add_standard_fields(ns, ld="0.0", **common)
    with pytest.raises(ValueError, match="need seq"):
        add_standard_fields(Message().add("t", "status"), ld="0", **common)
    with pytest.raises(ValueError, match="need seq"):
        add_standard_fields(Message().add("t", "status"), seq=1, **common)
    # NS_ messages keep string fields already present (heartbeat forwards them as-is)
    kept = add_standard_fields(ns.copy().add("src", "origin"), **common)
    assert kept.get("src") == "origin"


def test_standard_fields_replace_in_place_and_validate():
    common = dict(src="a", srcuuid=b"u" * 16, hg=1, ts=2, ttl=3, seq=7, ld="x")
    msg = Message.from_pairs([("t", "status"), ("seq", "old"), ("st", "up")])
    full = add_standard_fields(msg, **common)
    assert full.names == ["t", "seq", "st", "src", "srcuuid", "hg", "ts", "ld", "ttl"]
    assert full["seq"] == "7"
    with pytest.raises(ValueError, match="no 't'"):
        add_standard_fields(Message().add("st", "up"), **common)
    with pytest.raises(ValueError, match="srcuuid"):
        add_standard_fields(msg, **{**common, "srcuuid": b"short"})
    with pytest.raises(ValueError, match="no 'dest'"):
        add_standard_fields(msg, destuuid=b"d" * 16, **common)
    with pytest.raises(ValueError, match="non-negative"):
        add_standard_fields(msg, **{**common, "hg": -1})


# --- Message API -----------------------------------------------------------------------------------------


def test_message_api():
    msg = Message.from_pairs([("t", "status"), ("st", "up"), ("bin", b"\x01"), ("st", "second")])
    assert msg.msg_type == "status" and msg["st"] == "up" and msg.get("nope") is None
    assert msg.get("bin") is None and msg.get_binary("bin") == b"\x01" and msg.get_binary("st") is None
    assert "bin" in msg and "nope" not in msg and len(msg) == 4
    with pytest.raises(KeyError):
        msg["nope"]
    msg.set("st", "active")
    assert msg.names == ["t", "st", "bin", "st"] and msg["st"] == "active"
    with pytest.raises(ValueError, match="has type"):
        msg.set("bin", "text")
    assert msg.remove("st") == 2 and msg.names == ["t", "bin"]
    copy = msg.copy().add("x", "y")
    assert msg.names == ["t", "bin"] and copy.names == ["t", "bin", "x"]
    assert msg != copy and msg == Message(msg.fields)
    assert "bin" in repr(msg)


@pytest.mark.parametrize(
    "name, ftype, value",
    [
        ("", FT_STRING, "v"),
        ("a=b", FT_STRING, "v"),
        ("a\nb", FT_STRING, "v"),
        ("a", FT_STRING, "nul\0"),
        ("a", FT_STRING, b"bytes"),
        ("a", FT_BINARY, "str"),
        ("a", FT_STRUCT, "str"),
        ("a", FT_LIST, ()),
        ("a", FT_LIST, ("",)),
        ("a", FT_LIST, "abc"),
        ("a", 9, "v"),
    ],
)
def test_field_validation(name, ftype, value):
    with pytest.raises(ValueError):
        Field(name, ftype, value)


# --- fuzzing: only WireError, ever ---------------------------------------------------------------------------


def assert_only_wire_errors(raw: bytes, k) -> Message | None:
    try:
        return decode_packet(raw, k, check_inner_auth=True)
    except WireError as exc:
        # raised by an explicit check, not by the decoder's last-resort guard
        assert exc.__cause__ is None, repr(exc)
        return None


def test_fuzz_truncations_of_real_packets():
    samples = list(packets("start-crc.pcap")) + list(packets("start-md5.pcap"))
    by_type = {}
    for p in packets("pair-sha1-failover.pcap") + packets("pair-sha1-loss-rexmit.pcap"):
        by_type.setdefault(parse_packet(p.payload).message.msg_type, p)
    samples += list(by_type.values())
    for p in samples:
        raw = p.payload
        for k in (keys("sha1"), keys("md5"), keys("crc")):
            for cut in range(len(raw)):
                assert assert_only_wire_errors(raw[:cut], k) is None
                assert assert_only_wire_errors(raw[cut + 1 :], k) is None


def test_fuzz_random_bytes():
    rng = random.Random(694)
    k = keys("sha1")
    alphabet = b"0123456789:,()=#%>< \n\x00\x13\x14abcAZ+/"
    for i in range(6000):
        n = rng.randrange(0, 300)
        if i % 3 == 0:
            junk = rng.randbytes(n)
        else:
            junk = bytes(rng.choice(alphabet) for _ in range(n))
        for prefix in (b"", b"###\n", b">>>\n"):
            assert assert_only_wire_errors(prefix + junk, k) is None


def test_fuzz_mutations_of_real_packets():
    rng = random.Random(3)
    pool = [p.payload for name in CAPTURES for p in packets(name)]
    ks = [keys("sha1"), keys("md5"), keys("crc")]
    accepted = 0
    for _ in range(6000):
        raw = bytearray(rng.choice(pool))
        for _ in range(rng.randrange(1, 4)):
            op = rng.randrange(5)
            pos = rng.randrange(len(raw))
            if op == 0:
                raw[pos] = rng.randrange(256)
            elif op == 1:
                del raw[pos : pos + rng.randrange(1, 8)]
            elif op == 2:
                raw[pos:pos] = rng.randbytes(rng.randrange(1, 8))
            elif op == 3:
                raw[pos] = rng.choice(b"0123456789:,(=)")
            else:
                start = rng.randrange(len(raw))
                raw[pos:pos] = raw[start : start + rng.randrange(1, 40)]
        if bytes(raw) in pool:
            continue  # the mutations cancelled out
        for k in ks:
            if assert_only_wire_errors(bytes(raw), k) is not None:
                accepted += 1
    assert accepted == 0  # a mutation never leaves a packet whose MAC still verifies


def random_message(rng: random.Random, depth: int = 0) -> Message:
    msg = Message().add("t", rng.choice(["status", "x", "NS_ackmsg"]))
    for i in range(rng.randrange(0, 6)):
        kind = rng.randrange(5 if depth < 3 else 3)
        name = f"f{i}" + rng.choice(["", "-x", "_y", ".z"])
        if kind == 0:
            msg.add(name, "".join(rng.choice("ab \n,:=()%#é") for _ in range(rng.randrange(0, 12))))
        elif kind == 1:
            msg.add(name, rng.randbytes(rng.randrange(0, 20)))
        elif kind == 2:
            count = rng.randrange(1, 4)
            items = ("".join(rng.choice("xy,:") for _ in range(rng.randrange(1, 5))) for _ in range(count))
            msg.add(name, tuple(items))
        else:
            msg.add(name, random_message(rng, depth + 1))
    return msg


def test_fuzz_random_messages_round_trip_and_mutate():
    rng = random.Random(11)
    for _ in range(800):
        msg = random_message(rng)
        for keyname in ("sha1", "crc"):
            k = keys(keyname)
            raw = encode_packet(msg, k)
            expected = msg if needs_netstring(msg) else with_inner_auth(msg, k)
            assert decode_packet(raw, k) == expected
            assert encode_packet(decode_packet(raw, k), k) == raw
            try:
                text = encode_text_packet(msg, k)
            except ValueError:
                text = None  # a string holding a depth symbol byte; heartbeat refuses it too
            if text is not None:
                assert decode_packet(text, k) == with_inner_auth(msg, k)
            for _ in range(3):
                cut = rng.randrange(len(raw))
                assert assert_only_wire_errors(raw[:cut], k) is None
                mutated = bytearray(raw)
                mutated[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
                assert assert_only_wire_errors(bytes(mutated), k) is None


# --- authenticate before parsing -------------------------------------------------------------------


def _count_parses(monkeypatch) -> list[bytes]:
    """Record every datagram that reaches the field parser (ha.wire._parse)."""
    import ha.wire as wire

    seen: list[bytes] = []
    real = wire._parse

    def spy(data: bytes):
        seen.append(data)
        return real(data)

    monkeypatch.setattr(wire, "_parse", spy)
    return seen


@pytest.mark.parametrize("method", ["sha1", "md5", "crc"])
def test_forged_packets_are_rejected_before_any_field_is_parsed(monkeypatch, method):
    """A datagram whose MAC does not verify never reaches the parser, whatever it holds."""
    k = keys(method)
    good = encode_packet(Message.from_pairs([("t", "status"), ("src", "dir1"), ("st", "up")]), k)
    many = b"###\n" + b"7:(0)a=bc," * 6000 + b"%%%\n"  # 60 KB of fields
    forged_ns = [
        many + good[good.rindex(b"%%%\n") + 4 :],  # a real MAC that covers other bytes
        many + b"42:1 " + b"0" * 40 + b",",  # a made-up MAC
        many,  # no MAC at all
        good.replace(b"st=up", b"st=uq"),  # one byte changed
        b"###\n99999:(0)t=status,%%%\n5:1 00,",  # garbage under a wrong MAC
    ]
    text_fields = b"".join(b"f%d=v\n" % i for i in range(200))
    forged_text = [
        b">>>\n" + text_fields + b"auth=1 " + b"0" * 40 + b"\n<<<\n\0",
        b">>>\n" + b"a=b\n" * 16000 + b"auth=1 " + b"0" * 40 + b"\n<<<\n",  # over MAX_FIELDS
        b">>>\n" + text_fields + b"<<<\n",  # no auth line
    ]
    seen = _count_parses(monkeypatch)
    for raw in forged_ns + forged_text:
        with pytest.raises(WireError):
            decode_packet(raw, k)
    assert seen == []
    assert decode_packet(good, k).get("st") == "up"
    assert seen == [good]


def test_an_oversized_text_datagram_is_refused_by_its_line_count_before_its_mac(monkeypatch):
    """A text datagram of more lines than MAX_FIELDS is malformed whatever its MAC: its
    lines are counted before they are split, searched for ``auth`` or signed."""
    k = keys("sha1")
    macs = []
    real_verify = type(k).verify
    monkeypatch.setattr(type(k), "verify", lambda self, *a: macs.append(a) or real_verify(self, *a))
    flood = b">>>\n" + b"a=b\n" * (MAX_FIELDS + 1) + b"auth=1 " + b"0" * 40 + b"\n<<<\n"
    with pytest.raises(MalformedPacket, match=f"more than {MAX_FIELDS} fields"):
        decode_packet(flood, k)
    assert macs == []


def test_wrong_mac_is_bad_auth_even_when_the_body_is_garbage():
    """The MAC decides first: a garbled body under a wrong MAC is a forgery, not a parse error."""
    with pytest.raises(BadAuth, match="does not match"):
        decode_packet(b"###\n99999:(0)t=status,%%%\n42:1 " + b"0" * 40 + b",", keys("sha1"))
    with pytest.raises(BadAuth, match="no outer MAC"):
        decode_packet(b"###\n9999:(0)t=status,%%%\n", keys("sha1"))
    with pytest.raises(MalformedPacket, match="end marker"):
        decode_packet(b"###\n5:(0)t=x,", keys("sha1"))
    with pytest.raises(MalformedPacket, match="after the outer MAC"):
        decode_packet(b"###\n%%%\n4:1 00,x", keys("sha1"))


def test_field_and_list_counts_are_bounded():
    k = keys("sha1")
    at_cap = Message.from_pairs([(f"f{i}", "v") for i in range(MAX_FIELDS - 1)] + [("t", "x")])
    assert len(decode_packet(encode_packet(at_cap, k, inner_auth=False), k)) == MAX_FIELDS
    over = Message.from_pairs([(f"f{i}", "v") for i in range(MAX_FIELDS)] + [("t", "x")])
    with pytest.raises(MalformedPacket, match=f"more than {MAX_FIELDS} fields"):
        decode_packet(encode_packet(over, k, inner_auth=False), k)
    with pytest.raises(MalformedPacket, match=f"more than {MAX_FIELDS} fields"):
        decode_packet(to_text(with_inner_auth(over, k)) + b"\0", k)
    items = tuple(f"i{i}" for i in range(MAX_FIELDS + 1))
    with pytest.raises(MalformedPacket, match=f"more than {MAX_FIELDS} elements"):
        decode_packet(encode_packet(Message.from_pairs([("t", "x"), ("l", items)]), k), k)
    assert decode_packet(encode_packet(Message.from_pairs([("t", "x"), ("l", items[:-1])]), k), k).get_list("l")


def test_fields_and_list_elements_are_bounded_in_all_across_nested_structs():
    """`MAX_FIELDS` bounds each level; `MAX_ELEMENTS` bounds the whole datagram. A crc MAC
    is no authenticator: anybody can sign 63 KB of 200 structs of 30 fields, or of lists,
    and each cost 50-140 ms to parse before the bound (now refused within the budget)."""
    k = keys("crc")
    per_struct = Message.from_pairs([(f"f{i}", "v") for i in range(30)])
    nested = Message.from_pairs([("t", "x")] + [(f"s{i}", per_struct) for i in range(150)])
    listed = Message.from_pairs([("t", "x")] + [(f"l{i}", tuple(f"{j}" for j in range(250))) for i in range(20)])
    for msg in (nested, listed):
        raw = encode_packet(msg, k, inner_auth=False)
        assert len(raw) > 20_000
        with pytest.raises(MalformedPacket, match=f"more than {MAX_ELEMENTS} fields and list elements in all"):
            decode_packet(raw, k)
    # the same in text framing (structs carried by the depth symbols)
    text_nested = Message.from_pairs([("t", "x")] + [(f"s{i}", per_struct) for i in range(20)])
    with pytest.raises(MalformedPacket, match=f"more than {MAX_ELEMENTS} fields and list elements in all"):
        decode_packet(to_text(with_inner_auth(text_nested, k)) + b"\0", k)
    # at the bound exactly: accepted (16 structs of 30 fields, 15 fields beside them, 1 list element)
    fits = Message.from_pairs(
        [("t", "x"), ("l", ("e",))]
        + [(f"s{i}", per_struct) for i in range(16)]
        + [(f"f{i}", "v") for i in range(MAX_ELEMENTS - 16 * 31 - 3)]
    )
    assert len(decode_packet(encode_packet(fits, k, inner_auth=False), k)) == MAX_ELEMENTS - 16 * 31 - 3 + 18
    assert MAX_ELEMENTS - 16 * 31 - 3 + 18 + 16 * 30 + 1 == MAX_ELEMENTS
