"""IPVS command encoding (byte for byte, and decoded back by pyroute2's own parser) and ack parsing."""

from __future__ import annotations

import socket
import struct

import pytest
from pyroute2.ipvs import ipvs as pyroute2_ipvs

from director.ipvs.codec import COMMANDS, encode_op
from director.ipvs.netlink import parse_acks
from director.model import DestAttrs, DestKey, ServiceAttrs, ServiceKey
from director.planner import Op

V4, V6 = socket.AF_INET, socket.AF_INET6
TCP = socket.IPPROTO_TCP
KEY = ServiceKey(V4, TCP, "10.0.0.1", 80)
ATTRS = ServiceAttrs(scheduler="wrr", flags=1, timeout=300, netmask="255.255.255.0")

# IPVS_CMD_NEW_SERVICE for 10.0.0.1:80/tcp wrr persistent 300 s netmask /24, family id 30, seq 7:
# fmt: off
ADD_SERVICE = (
    "68000000" "1e00" "0500" "07000000" "00000000"  # nlmsghdr: len 104, type 30, REQUEST|ACK, seq 7, pid 0
    "01" "01" "0000"  # genlmsghdr: IPVS_CMD_NEW_SERVICE, version 1
    "5400" "0100"  # IPVS_CMD_ATTR_SERVICE, 84 bytes
    "0600" "0100" "0200" "0000"  # AF = AF_INET (u16, padded)
    "0600" "0200" "0600" "0000"  # PROTOCOL = 6
    "1400" "0300" "0a000001" + "00" * 12 +  # ADDR, union nf_inet_addr
    "0600" "0400" "0050" "0000"  # PORT = 80, be16
    "0800" "0600" "77727200"  # SCHED_NAME "wrr\0"
    "0c00" "0700" "01000000" "ffffffff"  # FLAGS: flags 1 (persistent), mask all
    "0800" "0800" "2c010000"  # TIMEOUT 300
    "0800" "0900" "ffffff00"  # NETMASK 255.255.255.0 (be32)
)
# fmt: on
# IPVS_CMD_DEL_DEST 10.1.0.2:80 of that service, seq 9: the key of each, nothing else
# fmt: off
DEL_DEST = (
    "64000000" "1e00" "0500" "09000000" "00000000"
    "07" "01" "0000"
    "3000" "0100" "0600" "0100" "0200" "0000" "0600" "0200" "0600" "0000"
    "1400" "0300" "0a000001" + "00" * 12 + "0600" "0400" "0050" "0000"
    "2000" "0200" "1400" "0100" "0a010002" + "00" * 12 + "0600" "0200" "0050" "0000"
)
# fmt: on


def test_add_service_bytes():
    assert encode_op(30, 7, Op("add_service", KEY, ATTRS)).hex() == ADD_SERVICE


def test_del_dest_bytes():
    assert encode_op(30, 9, Op("del_dest", KEY, dest=DestKey("10.1.0.2", 80))).hex() == DEL_DEST


def decoded(raw: bytes):
    """Our message parsed by pyroute2's IPVS message class (an independent decoder)."""
    msg = pyroute2_ipvs.ipvsmsg(raw)
    msg.decode()
    return msg


def nla(msg, name):
    return {k: v for k, v in msg.get(name)["attrs"]}


@pytest.mark.parametrize(
    "key, attrs, expect",
    [
        (
            KEY,
            ATTRS,
            {
                "IPVS_SVC_ATTR_ADDR": "10.0.0.1",
                "IPVS_SVC_ATTR_PORT": 80,
                "IPVS_SVC_ATTR_PROTOCOL": TCP,
                "IPVS_SVC_ATTR_NETMASK": "255.255.255.0",
            },
        ),
        (
            ServiceKey(V6, socket.IPPROTO_UDP, "2001:db8::1", 53),
            ServiceAttrs("sh", 0, 0, 64),
            {
                "IPVS_SVC_ATTR_ADDR": "2001:db8::1",
                "IPVS_SVC_ATTR_PORT": 53,
                # the prefix length in host order, read by pyroute2 as an IPv4 address
                "IPVS_SVC_ATTR_NETMASK": socket.inet_ntoa(struct.pack("=I", 64)),
            },
        ),
        (
            ServiceKey(V4, 0, "", 0, fwmark=7),
            ServiceAttrs("rr", 0, 0, "255.255.255.255", pe_name="sip"),
            {"IPVS_SVC_ATTR_FWMARK": 7, "IPVS_SVC_ATTR_PE_NAME": "sip"},
        ),
    ],
)
def test_service_commands_decode_with_pyroute2(key, attrs, expect):
    for kind in ("add_service", "set_service"):
        msg = decoded(encode_op(31, 5, Op(kind, key, attrs)))
        assert msg["cmd"] == COMMANDS[kind] and msg["header"]["flags"] == 0x5
        assert msg["header"]["type"] == 31 and msg["header"]["sequence_number"] == 5
        svc = nla(msg, "IPVS_CMD_ATTR_SERVICE")
        assert svc["IPVS_SVC_ATTR_AF"] == key.family
        assert svc["IPVS_SVC_ATTR_SCHED_NAME"] == attrs.scheduler
        assert svc["IPVS_SVC_ATTR_FLAGS"] == {"flags": attrs.flags, "mask": 0xFFFFFFFF}
        assert svc["IPVS_SVC_ATTR_TIMEOUT"] == attrs.timeout
        for name, value in expect.items():
            assert svc[name] == value, name
    gone = nla(decoded(encode_op(31, 6, Op("del_service", key))), "IPVS_CMD_ATTR_SERVICE")
    assert "IPVS_SVC_ATTR_SCHED_NAME" not in gone and gone["IPVS_SVC_ATTR_AF"] == key.family


def test_dest_commands_decode_with_pyroute2():
    key6 = ServiceKey(V6, TCP, "2001:db8::1", 443)
    attrs = DestAttrs(fwd_method=2, weight=7, u_thresh=100, l_thresh=10)
    for kind in ("add_dest", "set_dest"):
        msg = decoded(encode_op(31, 1, Op(kind, key6, dest=DestKey("2001:db8::a", 443), dest_attrs=attrs)))
        assert msg["cmd"] == COMMANDS[kind]
        dest = nla(msg, "IPVS_CMD_ATTR_DEST")
        # without IPVS_DEST_ATTR_ADDR_FAMILY (the kernel then uses the service's) pyroute2
        # leaves the address undecoded: the raw attribute, header included
        raw = dest["IPVS_DEST_ATTR_ADDR"]
        assert socket.inet_ntop(V6, raw[4:20]) == "2001:db8::a" and raw[:4] == b"\x14\x00\x01\x00"
        assert dest["IPVS_DEST_ATTR_PORT"] == 443
        assert (dest["IPVS_DEST_ATTR_FWD_METHOD"], dest["IPVS_DEST_ATTR_WEIGHT"]) == (2, 7)
        assert (dest["IPVS_DEST_ATTR_U_THRESH"], dest["IPVS_DEST_ATTR_L_THRESH"]) == (100, 10)
        assert nla(msg, "IPVS_CMD_ATTR_SERVICE")["IPVS_SVC_ATTR_PORT"] == 443


def test_bad_input_is_a_value_error():
    with pytest.raises(ValueError, match="unknown operation"):
        encode_op(1, 1, Op("flush", KEY))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        encode_op(1, 1, Op("add_dest", KEY, dest=DestKey("2001:db8::1", 80), dest_attrs=DestAttrs()))
    with pytest.raises(ValueError, match="without a destination"):
        encode_op(1, 1, Op("del_dest", KEY))


def ack(seq: int, error: int, pad: bytes = b"") -> bytes:
    body = struct.pack("=i", -error) + struct.pack("=IHHII", 20, 30, 5, seq, 0) + pad
    return struct.pack("=IHHII", 16 + len(body), 2, 0x100, seq, 4242) + body


def test_parse_acks():
    data = ack(1, 0) + ack(2, 3) + ack(3, 17, pad=b"xx") + b"\0\0"
    assert parse_acks(data) == {1: 0, 2: 3, 3: 17}
    assert parse_acks(ack(4, 0)[:-3]) == {}  # truncated
    done = struct.pack("=IHHII", 20, 3, 2, 5, 0) + b"\0\0\0\0"
    assert parse_acks(done + ack(6, 0)) == {6: 0}
