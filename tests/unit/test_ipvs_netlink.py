"""director.ipvs.netlink (framing, attribute codec, the one stream reader, the family lookup
messages) byte for byte, the family lookup against this host's generic-netlink controller, and
how KernelIPVS.open reports a failed lookup."""

from __future__ import annotations

import errno
import struct

import pytest

from director.ipvs import IPVSError, IPVSUnavailable, KernelIPVS, kernel, netlink, transport, uapi


def nla(kind: int, payload: bytes) -> bytes:
    """struct nlattr: u16 length (header included), u16 type, payload padded to 4 bytes."""
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def nlmsg(mtype: int, payload: bytes, seq: int, flags: int = 0) -> bytes:
    length = 16 + len(payload)
    return struct.pack("=IHHII", length, mtype, flags, seq, 777) + payload + b"\0" * (-length % 4)


def ack(seq: int, code: int) -> bytes:
    """NLMSG_ERROR: s32 -errno, then the request's header (NETLINK_CAP_ACK off)."""
    return nlmsg(2, struct.pack("=i", -code) + struct.pack("=IHHII", 20, 30, 5, seq, 0), seq, 0x100)


# --- writing ------------------------------------------------------------------------------------


def test_attributes_are_padded_to_four_bytes_and_strings_end_in_nul():
    # fmt: off
    assert netlink.nla_put(7, b"") == bytes.fromhex("0400" "0700")
    # fmt: on
    # fmt: off
    assert netlink.nla_put(7, b"\x01") == bytes.fromhex("0500" "0700" "01000000")
    # fmt: on
    # fmt: off
    assert netlink.nla_put_u16(1, 10) == bytes.fromhex("0600" "0100" "0a00" "0000")
    # fmt: on
    # fmt: off
    assert netlink.nla_put_be16(4, 80) == bytes.fromhex("0600" "0400" "0050" "0000")
    # fmt: on
    # fmt: off
    assert netlink.nla_put_u32(8, 300) == bytes.fromhex("0800" "0800" "2c010000")
    # fmt: on
    # fmt: off
    assert netlink.nla_put_string(6, "wrr") == bytes.fromhex("0800" "0600" "77727200")
    # fmt: on


def test_generic_netlink_message_and_sequence_replacement():
    msg = netlink.genlmsg(0x1E, 7, 4, 1, netlink.nla_put_u32(5, 42), flags=0x301)
    # fmt: off
    assert msg == bytes.fromhex("1c000000" "1e00" "0103" "07000000" "00000000" "04010000" "0800" "0500" "2a000000")
    # fmt: on
    assert netlink.with_seq(msg, 0x01020304) == msg[:8] + bytes.fromhex("04030201") + msg[12:]


def test_getfamily_request_bytes():
    # fmt: off
    assert netlink.getfamily_request("IPVS", 1) == bytes.fromhex(
        "20000000" "1000" "0100" "01000000" "00000000"  # nlmsghdr: len 32, GENL_ID_CTRL, NLM_F_REQUEST, seq 1
        "03" "01" "0000"  # genlmsghdr: CTRL_CMD_GETFAMILY, version 1
        "0900" "0200" "4950565300" "000000"  # CTRL_ATTR_FAMILY_NAME "IPVS\0", padded
    )
    # fmt: on


# --- reading attributes ---------------------------------------------------------------------------


def test_attribute_types_lose_the_nested_and_byte_order_bits_and_the_last_one_wins():
    data = nla(1 | 0x8000, nla(1, b"ab\0")) + nla(2 | 0x4000, b"\0\x50") + nla(2, b"\0\x51")
    spans = netlink.nla_parse(data, 0, len(data))
    assert sorted(spans) == [1, 2]
    assert netlink.nla_get_int(data, spans, 2, netlink.BE16) == 0x51
    inner = netlink.nla_parse_nested(data, 1)
    assert netlink.nla_get_string(data, inner, 1) == "ab"
    assert netlink.nla_get_string(data, inner, 9) == "" and netlink.nla_get_int(data, inner, 9, netlink.U32, 5) == 5


@pytest.mark.parametrize(
    "read",
    [
        lambda: netlink.nla_parse(b"\x08\x00\x01\x00\x00", 0, 5),  # attribute past the end
        lambda: netlink.nla_parse(b"\x02\x00\x01\x00", 0, 4),  # length below the header
        lambda: netlink.nla_parse(b"\x08\x00", 0, 2),  # truncated header
        lambda: netlink.nla_parse_nested(nla(1, b""), 2),  # no such attribute
        lambda: netlink.nla_get_int(nla(1, b"\x01"), {1: (4, 5)}, 1, netlink.U32),  # too short
        lambda: netlink.nla_get_string(nla(1, b"\xff\0"), {1: (4, 6)}, 1),  # not ASCII
    ],
)
def test_malformed_attributes_raise_ipvs_error(read):
    with pytest.raises(IPVSError):
        read()


# --- reading message streams --------------------------------------------------------------------


def test_messages_walks_aligned_messages_then_raises_at_a_bad_one():
    data = nlmsg(30, b"\x01", 1) + nlmsg(3, b"\0" * 4, 2)
    assert list(netlink.messages(data)) == [(0, 17, 30, 0, 1), (20, 20, 3, 0, 2)]
    walked = []
    with pytest.raises(IPVSError, match="bad netlink message length"):
        for item in netlink.messages(data + struct.pack("=IHHII", 64, 2, 0, 3, 0)):
            walked.append(item[4])
    assert walked == [1, 2]


def test_acks_before_a_truncated_message_are_kept():
    assert netlink.parse_acks(ack(1, 0) + ack(2, errno.ENOENT)[:-3]) == {1: 0}
    assert netlink.parse_acks(b"") == {}


def test_lookup_answer_id_error_and_mismatch():
    body = (
        nla(2, b"IPVS\0")
        + nla(1, struct.pack("=H", 0x1E))
        + nla(3, struct.pack("=I", 1))
        + nla(5, struct.pack("=I", 12))
        + nla(6 | 0x8000, nla(1, nla(1, struct.pack("=I", 1))))
    )
    answer = nlmsg(0x10, bytes([1, 2, 0, 0]) + body, 1)  # CTRL_CMD_NEWFAMILY
    bodies, done = netlink.split_answer(answer, uapi.GENL_ID_CTRL, 1)
    assert not done and netlink.parse_family_id(bodies[0], "IPVS") == 0x1E
    with pytest.raises(IPVSError, match="not 'TASKSTATS'"):
        netlink.parse_family_id(bodies[0], "TASKSTATS")
    with pytest.raises(IPVSError, match="without a family id"):
        netlink.parse_family_id(nla(2, b"IPVS\0"), "IPVS")
    with pytest.raises(IPVSError) as info:  # the controller knows no such family
        netlink.split_answer(ack(1, errno.ENOENT), uapi.GENL_ID_CTRL, 1)
    assert info.value.errno == errno.ENOENT


# --- the lookup against this host's kernel (its own netlink socket, no traffic) -------------------


async def test_resolve_family_asks_the_controller():
    assert await transport.resolve_family("nlctrl") == uapi.GENL_ID_CTRL  # the controller's own family
    with pytest.raises(IPVSError) as info:
        await transport.resolve_family("directord-none")
    assert info.value.errno == errno.ENOENT


@pytest.mark.parametrize(
    "code, kind, text",
    [
        (errno.ENOENT, IPVSUnavailable, "ip_vs is not loaded"),
        (errno.EPERM, IPVSError, "cannot open IPVS netlink: permission denied"),
        (0, IPVSError, "cannot open IPVS netlink: no answer"),
    ],
)
async def test_open_reports_a_failed_lookup(monkeypatch, code, kind, text):
    async def refused(name):
        assert name == "IPVS"
        raise IPVSError("no answer" if not code else "refused", code=code)

    monkeypatch.setattr(kernel, "resolve_family", refused)
    ipvs = KernelIPVS()
    with pytest.raises(kind, match=text) as info:
        await ipvs.open()
    assert type(info.value) is kind and info.value.errno == code
    with pytest.raises(IPVSError, match="not open"):
        await ipvs.dump()
