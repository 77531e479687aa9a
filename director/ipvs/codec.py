"""The IPVS virtual service and destination payloads: dump requests and answers, and the
commands that carry out planner operations. Pure, encoded and decoded with `struct`.

Dumping a large table through pyroute2's generic message classes costs tens
of seconds of CPU on a slow machine, and sending its commands one request at
a time costs minutes; here the two dump requests and every command are built
by hand (tested byte for byte) and the answers decoded with only the
attributes the model needs, skipping the statistics.

IPVS numbers from ``include/uapi/linux/ip_vs.h`` (`director.ipvs.uapi`); the
kernel side is ``ip_vs_genl_dump_services`` / ``ip_vs_genl_dump_dests`` (and
``ip_vs_genl_fill_service`` / ``_fill_dest``) for the answers and
``ip_vs_genl_parse_service`` / ``ip_vs_genl_parse_dest`` for the requests, in
``net/netfilter/ipvs/ip_vs_ctl.c``:

* a service is named by IPVS_SVC_ATTR_AF (u16) and either FWMARK (u32) or
  PROTOCOL (u16), ADDR (16 bytes, ``union nf_inet_addr``, IPv4 in the first
  4) and PORT (be16); add/set also carry SCHED_NAME (NUL-terminated), FLAGS
  (``struct ip_vs_flags``: u32 flags, u32 mask; we send mask 0xffffffff so
  cleared bits are cleared), TIMEOUT (u32 seconds), NETMASK (be32: a dotted
  mask for IPv4; for IPv6 the prefix length, which the kernel reads and
  writes in host order) and, when set, PE_NAME;
* a destination is IPVS_DEST_ATTR_ADDR (16 bytes) and PORT (be16); add/set
  carry FWD_METHOD, WEIGHT, U_THRESH, L_THRESH (u32 each): SET_DEST replaces
  every field, so the planner always sends the complete entry.

The decoded shapes: canonical address text, IPv6 netmask as an int prefix,
``fwd_method`` masked with ``IP_VS_CONN_F_FWD_MASK``, the service flags word
unmasked. Every decoding failure raises `IPVSError`, never another exception.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from functools import lru_cache

from director.model import DestAttrs, DestKey, IPVSStats, KernelDest, ServiceAttrs, ServiceKey
from director.planner import Op

from .errors import IPVSError
from .netlink import (
    BE16,
    NLATTR,
    U16,
    U32,
    U64,
    genlmsg,
    nla_get_int,
    nla_get_string,
    nla_parse,
    nla_parse_nested,
    nla_put,
    nla_put_be16,
    nla_put_string,
    nla_put_u16,
    nla_put_u32,
)
from .uapi import (
    IP_VS_CONN_F_FWD_MASK,
    IPVS_CMD_ATTR_DEST,
    IPVS_CMD_ATTR_SERVICE,
    IPVS_CMD_DEL_DEST,
    IPVS_CMD_DEL_SERVICE,
    IPVS_CMD_GET_DEST,
    IPVS_CMD_GET_SERVICE,
    IPVS_CMD_NEW_DEST,
    IPVS_CMD_NEW_SERVICE,
    IPVS_CMD_SET_DEST,
    IPVS_CMD_SET_SERVICE,
    IPVS_DEST_ATTR_ACTIVE_CONNS,
    IPVS_DEST_ATTR_ADDR,
    IPVS_DEST_ATTR_ADDR_FAMILY,
    IPVS_DEST_ATTR_FWD_METHOD,
    IPVS_DEST_ATTR_INACT_CONNS,
    IPVS_DEST_ATTR_L_THRESH,
    IPVS_DEST_ATTR_PERSIST_CONNS,
    IPVS_DEST_ATTR_PORT,
    IPVS_DEST_ATTR_STATS,
    IPVS_DEST_ATTR_STATS64,
    IPVS_DEST_ATTR_TUN_FLAGS,
    IPVS_DEST_ATTR_TUN_PORT,
    IPVS_DEST_ATTR_TUN_TYPE,
    IPVS_DEST_ATTR_U_THRESH,
    IPVS_DEST_ATTR_WEIGHT,
    IPVS_GENL_VERSION,
    IPVS_STATS_ATTR_CONNS,
    IPVS_STATS_ATTR_OUTBPS,
    IPVS_SVC_ATTR_ADDR,
    IPVS_SVC_ATTR_AF,
    IPVS_SVC_ATTR_FLAGS,
    IPVS_SVC_ATTR_FWMARK,
    IPVS_SVC_ATTR_NETMASK,
    IPVS_SVC_ATTR_PE_NAME,
    IPVS_SVC_ATTR_PORT,
    IPVS_SVC_ATTR_PROTOCOL,
    IPVS_SVC_ATTR_SCHED_NAME,
    IPVS_SVC_ATTR_STATS,
    IPVS_SVC_ATTR_STATS64,
    IPVS_SVC_ATTR_TIMEOUT,
    NLA_TYPE_MASK,
    NLM_F_ACK,
    NLM_F_DUMP,
    NLM_F_REQUEST,
)

#: ``struct ip_vs_flags`` (IPVS_SVC_ATTR_FLAGS): u32 flags, u32 mask.
IP_VS_FLAGS = struct.Struct("=II")

#: IPVS generic-netlink command of each planner operation kind.
COMMANDS = {
    "add_service": IPVS_CMD_NEW_SERVICE,
    "set_service": IPVS_CMD_SET_SERVICE,
    "del_service": IPVS_CMD_DEL_SERVICE,
    "add_dest": IPVS_CMD_NEW_DEST,
    "set_dest": IPVS_CMD_SET_DEST,
    "del_dest": IPVS_CMD_DEL_DEST,
}


def _ipvs_request(
    family_id: int, seq: int, cmd: int, attrs: bytes = b"", flags: int = NLM_F_REQUEST | NLM_F_DUMP
) -> bytes:
    """One IPVS generic-netlink message: command ``cmd``, version ``IPVS_GENL_VERSION``,
    ``attrs`` (encoded attributes), ``flags`` (a dump request by default)."""
    return genlmsg(family_id, seq, cmd, IPVS_GENL_VERSION, attrs, flags=flags)


# --- requests -------------------------------------------------------------------------------


def service_key_attrs(key: ServiceKey) -> bytes:
    """The nested IPVS_CMD_ATTR_SERVICE attribute that names ``key`` (no NLA_F_NESTED bit).

    Holds IPVS_SVC_ATTR_AF and either IPVS_SVC_ATTR_FWMARK or
    IPVS_SVC_ATTR_PROTOCOL, IPVS_SVC_ATTR_ADDR (16 bytes, ``union
    nf_inet_addr``) and IPVS_SVC_ATTR_PORT (be16), as
    ``ip_vs_genl_parse_service`` reads them.

    Raises:
        OSError: the key's address is not an address of its family (``socket.inet_pton``).
    """
    return nla_put(IPVS_CMD_ATTR_SERVICE, _service_key_inner(key))


def _service_key_inner(key: ServiceKey) -> bytes:
    inner = nla_put_u16(IPVS_SVC_ATTR_AF, key.family)
    if key.fwmark:
        return inner + nla_put_u32(IPVS_SVC_ATTR_FWMARK, key.fwmark)
    addr = socket.inet_pton(key.family, key.address).ljust(16, b"\0")
    return (
        inner
        + nla_put_u16(IPVS_SVC_ATTR_PROTOCOL, key.protocol)
        + nla_put(IPVS_SVC_ATTR_ADDR, addr)
        + nla_put_be16(IPVS_SVC_ATTR_PORT, key.port)
    )


def service_dump_request(family_id: int, seq: int) -> bytes:
    """Netlink message asking for every virtual service (IPVS_CMD_GET_SERVICE, NLM_F_DUMP).

    Args:
        family_id: the IPVS generic-netlink family id (nlmsg_type).
        seq: sequence number the answers will carry.
    """
    return _ipvs_request(family_id, seq, IPVS_CMD_GET_SERVICE)


def dest_dump_request(family_id: int, seq: int, key: ServiceKey) -> bytes:
    """Netlink message asking for the destinations of one service (IPVS_CMD_GET_DEST, NLM_F_DUMP).

    Raises:
        OSError: the key's address is not an address of its family (``socket.inet_pton``).
    """
    return _ipvs_request(family_id, seq, IPVS_CMD_GET_DEST, service_key_attrs(key))


def _service_attrs(key: ServiceKey, attrs: ServiceAttrs | None) -> bytes:
    inner = _service_key_inner(key)
    if attrs is not None:
        if key.family == socket.AF_INET6:
            netmask = U32.pack(int(attrs.netmask))
        else:
            netmask = socket.inet_aton(str(attrs.netmask))
        inner += (
            nla_put_string(IPVS_SVC_ATTR_SCHED_NAME, attrs.scheduler)
            + nla_put(IPVS_SVC_ATTR_FLAGS, IP_VS_FLAGS.pack(attrs.flags, 0xFFFFFFFF))
            + nla_put_u32(IPVS_SVC_ATTR_TIMEOUT, attrs.timeout)
            + nla_put(IPVS_SVC_ATTR_NETMASK, netmask)
        )
        if attrs.pe_name:
            inner += nla_put_string(IPVS_SVC_ATTR_PE_NAME, attrs.pe_name)
    return nla_put(IPVS_CMD_ATTR_SERVICE, inner)


def _dest_attrs(family: int, key: DestKey, attrs: DestAttrs | None) -> bytes:
    inner = nla_put(IPVS_DEST_ATTR_ADDR, socket.inet_pton(family, key.address).ljust(16, b"\0")) + nla_put_be16(
        IPVS_DEST_ATTR_PORT, key.port
    )
    if attrs is not None:
        inner += (
            nla_put_u32(IPVS_DEST_ATTR_FWD_METHOD, attrs.fwd_method)
            + nla_put_u32(IPVS_DEST_ATTR_WEIGHT, attrs.weight)
            + nla_put_u32(IPVS_DEST_ATTR_U_THRESH, attrs.u_thresh)
            + nla_put_u32(IPVS_DEST_ATTR_L_THRESH, attrs.l_thresh)
        )
    return nla_put(IPVS_CMD_ATTR_DEST, inner)


def encode_op(family_id: int, seq: int, op: Op) -> bytes:
    """The netlink message (``NLM_F_REQUEST | NLM_F_ACK``) that carries out ``op``.

    Args:
        family_id: the IPVS generic-netlink family id (``nlmsg_type``).
        seq: sequence number; its acknowledgement carries it back.
        op: a planner operation; add/set carry complete attributes, deletes
            name the entry only.

    Raises:
        ValueError: an address is not an address of the service's family,
            or ``op.kind`` is unknown.
    """
    cmd = COMMANDS.get(op.kind)
    if cmd is None:
        raise ValueError(f"unknown operation kind {op.kind!r}")
    try:
        if op.kind.endswith("_service"):
            attrs = _service_attrs(op.service, op.service_attrs if op.kind != "del_service" else None)
        else:
            if op.dest is None:
                raise ValueError(f"{op.kind} without a destination")
            attrs = _service_attrs(op.service, None) + _dest_attrs(
                op.service.family, op.dest, op.dest_attrs if op.kind != "del_dest" else None
            )
    except OSError as exc:  # inet_pton / inet_aton
        raise ValueError(f"{op}: {exc}") from None
    return _ipvs_request(family_id, seq, cmd, attrs, flags=NLM_F_REQUEST | NLM_F_ACK)


# --- answers --------------------------------------------------------------------------------


@lru_cache(maxsize=65536)
def _address_text(family: int, raw: bytes) -> str:
    if family == socket.AF_INET6:
        return str(ipaddress.IPv6Address(raw[:16]))
    return str(ipaddress.IPv4Address(raw[:4]))


def _address(data: memoryview | bytes, spans: dict[int, tuple[int, int]], kind: int, family: int) -> str:
    span = spans.get(kind)
    if span is None:
        raise IPVSError(f"IPVS message without address attribute {kind}")
    need = 16 if family == socket.AF_INET6 else 4
    if family not in (socket.AF_INET, socket.AF_INET6) or span[1] - span[0] < need:
        raise IPVSError(f"IPVS address attribute {kind} does not fit family {family}")
    return _address_text(family, bytes(data[span[0] : span[0] + need]))


def parse_service_body(body: memoryview | bytes) -> tuple[ServiceKey, ServiceAttrs]:
    """Decode one IPVS_CMD_GET_SERVICE answer (attributes after the genl header).

    Returns:
        (ServiceKey, ServiceAttrs): missing attributes are 0 or empty (AF:
        AF_INET; NETMASK: all ones); IPVS_SVC_ATTR_NETMASK is a dotted mask
        for IPv4 and the prefix length (int) for IPv6.

    Raises:
        IPVSError: the message is malformed.
    """
    data = body
    svc = nla_parse_nested(body, IPVS_CMD_ATTR_SERVICE)
    family = nla_get_int(data, svc, IPVS_SVC_ATTR_AF, U16, socket.AF_INET)
    fwmark = nla_get_int(data, svc, IPVS_SVC_ATTR_FWMARK, U32)
    if fwmark:
        key = ServiceKey(family, 0, "", 0, fwmark)
    else:
        key = ServiceKey(
            family,
            nla_get_int(data, svc, IPVS_SVC_ATTR_PROTOCOL, U16),
            _address(data, svc, IPVS_SVC_ATTR_ADDR, family),
            nla_get_int(data, svc, IPVS_SVC_ATTR_PORT, BE16),
        )
    span = svc.get(IPVS_SVC_ATTR_NETMASK)
    if span is not None and span[1] - span[0] < 4:
        raise IPVSError("IPVS netmask attribute too short")
    raw_mask = bytes(data[span[0] : span[0] + 4]) if span is not None else b"\xff\xff\xff\xff"
    netmask: str | int
    if family == socket.AF_INET6:
        netmask = U32.unpack(raw_mask)[0]
    else:
        netmask = socket.inet_ntoa(raw_mask)
    flags = 0
    span = svc.get(IPVS_SVC_ATTR_FLAGS)
    if span is not None:
        if span[1] - span[0] < IP_VS_FLAGS.size:
            raise IPVSError("IPVS flags attribute too short")
        flags = IP_VS_FLAGS.unpack_from(data, span[0])[0]
    attrs = ServiceAttrs(
        scheduler=nla_get_string(data, svc, IPVS_SVC_ATTR_SCHED_NAME),
        flags=flags,
        timeout=nla_get_int(data, svc, IPVS_SVC_ATTR_TIMEOUT, U32),
        netmask=netmask,
        pe_name=nla_get_string(data, svc, IPVS_SVC_ATTR_PE_NAME),
    )
    return key, attrs


# The attribute sequence ip_vs_genl_fill_dest emits since Linux 5.2 (tunnel
# attributes added): (type, struct format of the payload + padding, nla_len).
_DEST_LAYOUT = (
    (IPVS_DEST_ATTR_ADDR, "16s", 20),
    (IPVS_DEST_ATTR_PORT, "H2x", 6),
    (IPVS_DEST_ATTR_FWD_METHOD, "I", 8),
    (IPVS_DEST_ATTR_WEIGHT, "I", 8),
    (IPVS_DEST_ATTR_TUN_TYPE, "B3x", 5),
    (IPVS_DEST_ATTR_TUN_PORT, "H2x", 6),
    (IPVS_DEST_ATTR_TUN_FLAGS, "H2x", 6),
    (IPVS_DEST_ATTR_U_THRESH, "I", 8),
    (IPVS_DEST_ATTR_L_THRESH, "I", 8),
    (IPVS_DEST_ATTR_ACTIVE_CONNS, "I", 8),
    (IPVS_DEST_ATTR_INACT_CONNS, "I", 8),
    (IPVS_DEST_ATTR_PERSIST_CONNS, "I", 8),
    (IPVS_DEST_ATTR_ADDR_FAMILY, "H2x", 6),
)
_DEST_FIXED = struct.Struct("=" + "".join("HH" + fmt for _, fmt, _ in _DEST_LAYOUT))
_DEST_LENGTHS = tuple(length for _, _, length in _DEST_LAYOUT)
_DEST_KINDS = tuple(kind for kind, _, _ in _DEST_LAYOUT)


def parse_dest_fixed_layout(data: memoryview | bytes, off: int, end: int) -> tuple[DestKey, KernelDest] | None:
    """Decode the attributes in ``data[off:end]`` (inside IPVS_CMD_ATTR_DEST) with one
    unpack when they start in the order and sizes ``ip_vs_genl_fill_dest`` emits since
    Linux 5.2; None otherwise (then `parse_dest_body` walks them one by one).

    The attributes after the fixed part (the statistics) are walked for
    well-formedness; if any of them is one the model reads, None (the general
    walk then decides, where the last occurrence wins). Never raises.
    """
    if end - off < _DEST_FIXED.size:
        return None
    v = _DEST_FIXED.unpack_from(data, off)
    if v[0::3] != _DEST_LENGTHS or v[1::3] != _DEST_KINDS:
        return None
    family = v[38]
    if family == socket.AF_INET:
        address = _address_text(family, v[2][:4])
    elif family == socket.AF_INET6:
        address = _address_text(family, v[2])
    else:
        return None
    off += _DEST_FIXED.size
    unpack = NLATTR.unpack_from
    while off < end:
        if end - off < 4:
            return None
        length, kind = unpack(data, off)
        if length < 4 or off + length > end or (kind & NLA_TYPE_MASK) in _DEST_KINDS:
            return None
        off += (length + 3) & ~3
    return DestKey(address, socket.ntohs(v[5])), KernelDest(
        attrs=DestAttrs(fwd_method=v[8] & IP_VS_CONN_F_FWD_MASK, weight=v[11], u_thresh=v[23], l_thresh=v[26]),
        active_conns=v[29],
        inactive_conns=v[32],
        persist_conns=v[35],
    )


def parse_dest_body(body: memoryview | bytes, family: int) -> tuple[DestKey, KernelDest]:
    """Decode one IPVS_CMD_GET_DEST answer (attributes after the genl header).

    Args:
        family: the service's address family, used when the kernel sends no
            IPVS_DEST_ATTR_ADDR_FAMILY (older kernels).

    Returns:
        (DestKey, KernelDest): ``fwd_method`` masked with
        ``IP_VS_CONN_F_FWD_MASK``, counters from the *_CONNS attributes,
        missing attributes 0.

    Raises:
        IPVSError: the message is malformed.
    """
    # The hot loop of a large dump (one call per real server): the attributes
    # are decoded in one walk instead of through the generic `nla_parse` map.
    span = nla_parse(body, 0, len(body)).get(IPVS_CMD_ATTR_DEST)
    if span is None:
        raise IPVSError(f"IPVS message without attribute {IPVS_CMD_ATTR_DEST}")
    off, end = span
    data = body
    fast = parse_dest_fixed_layout(data, off, end)
    if fast is not None:
        return fast
    unpack = NLATTR.unpack_from
    u32 = U32.unpack_from
    values = [0] * 16  # u32 attributes by type: FWD_METHOD .. PERSIST_CONNS
    port = 0
    addr_span = None
    while off < end:
        if end - off < 4:
            raise IPVSError("truncated netlink attribute")
        length, kind = unpack(data, off)
        if length < 4 or off + length > end:
            raise IPVSError(f"bad netlink attribute length {length}")
        kind &= NLA_TYPE_MASK
        if IPVS_DEST_ATTR_FWD_METHOD <= kind <= IPVS_DEST_ATTR_PERSIST_CONNS:
            if length < 8:
                raise IPVSError(f"IPVS attribute {kind} too short")
            values[kind] = u32(data, off + 4)[0]
        elif kind == IPVS_DEST_ATTR_ADDR:
            addr_span = {kind: (off + 4, off + length)}
        elif kind == IPVS_DEST_ATTR_PORT:
            if length < 6:
                raise IPVSError(f"IPVS attribute {kind} too short")
            port = BE16.unpack_from(data, off + 4)[0]
        elif kind == IPVS_DEST_ATTR_ADDR_FAMILY:
            if length < 6:
                raise IPVSError(f"IPVS attribute {kind} too short")
            family = U16.unpack_from(data, off + 4)[0]
        off += (length + 3) & ~3
    key = DestKey(_address(data, addr_span or {}, IPVS_DEST_ATTR_ADDR, family), port)
    attrs = DestAttrs(
        fwd_method=values[IPVS_DEST_ATTR_FWD_METHOD] & IP_VS_CONN_F_FWD_MASK,
        weight=values[IPVS_DEST_ATTR_WEIGHT],
        u_thresh=values[IPVS_DEST_ATTR_U_THRESH],
        l_thresh=values[IPVS_DEST_ATTR_L_THRESH],
    )
    return key, KernelDest(
        attrs=attrs,
        active_conns=values[IPVS_DEST_ATTR_ACTIVE_CONNS],
        inactive_conns=values[IPVS_DEST_ATTR_INACT_CONNS],
        persist_conns=values[IPVS_DEST_ATTR_PERSIST_CONNS],
    )


# --- traffic counters -----------------------------------------------------------------------

#: `IPVSStats` field of each IPVS_STATS_ATTR_* number, CONNS (1) .. OUTBPS (10).
_STATS_FIELDS = ("conns", "inpkts", "outpkts", "inbytes", "outbytes", "cps", "inpps", "outpps", "inbps", "outbps")
assert len(_STATS_FIELDS) == IPVS_STATS_ATTR_OUTBPS - IPVS_STATS_ATTR_CONNS + 1


def _stats(data: memoryview | bytes, top: int, stats64: int, stats32: int) -> IPVSStats:
    """The counters nested in attribute ``stats64`` (every value a u64) or, when absent,
    ``stats32`` (values u32 or u64 by their length) of the top-level attribute ``top``;
    all 0 when the message has neither. Unknown and PAD attributes are skipped."""
    outer = nla_parse_nested(data, top)
    span = outer.get(stats64) or outer.get(stats32)
    if span is None:
        return IPVSStats()
    values: dict[str, int] = {}
    for kind, (start, end) in nla_parse(data, span[0], span[1]).items():
        if not IPVS_STATS_ATTR_CONNS <= kind <= IPVS_STATS_ATTR_OUTBPS:
            continue
        size = end - start
        if size >= 8:
            values[_STATS_FIELDS[kind - 1]] = U64.unpack_from(data, start)[0]
        elif size >= 4:
            values[_STATS_FIELDS[kind - 1]] = U32.unpack_from(data, start)[0]
        else:
            raise IPVSError(f"IPVS statistics attribute {kind} too short")
    return IPVSStats(**values)


def parse_service_stats(body: memoryview | bytes) -> IPVSStats:
    """The traffic counters of one IPVS_CMD_GET_SERVICE answer (attributes after the genl
    header): IPVS_SVC_ATTR_STATS64 (``ip_vs_genl_fill_stats64``, every value a u64), else
    the older IPVS_SVC_ATTR_STATS; all 0 when neither is there.

    Raises:
        IPVSError: the message is malformed.
    """
    return _stats(body, IPVS_CMD_ATTR_SERVICE, IPVS_SVC_ATTR_STATS64, IPVS_SVC_ATTR_STATS)


def parse_dest_stats(body: memoryview | bytes) -> IPVSStats:
    """The traffic counters of one IPVS_CMD_GET_DEST answer: IPVS_DEST_ATTR_STATS64, else
    IPVS_DEST_ATTR_STATS, as `parse_service_stats` reads them.

    Raises:
        IPVSError: the message is malformed.
    """
    return _stats(body, IPVS_CMD_ATTR_DEST, IPVS_DEST_ATTR_STATS64, IPVS_DEST_ATTR_STATS)
