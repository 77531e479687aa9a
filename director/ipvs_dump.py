"""Fast IPVS table dumps: generic-netlink requests and answers, encoded and parsed with `struct`.

Dumping a large table through pyroute2's generic message classes costs tens of
seconds of CPU on a slow machine; this module builds the two dump requests by
hand and decodes only the attributes the model needs, skipping the statistics.

Wire format (all integers in host order unless marked be):

* ``struct nlmsghdr`` (``include/uapi/linux/netlink.h``): u32 length, u16
  type, u16 flags, u32 sequence, u32 port id; messages are 4-byte aligned;
  ``NLMSG_ERROR`` (2) carries an s32 -errno (0 = ack), ``NLMSG_DONE`` (3)
  ends a multipart dump and carries an s32 that is -errno when the dump failed;
* ``struct genlmsghdr`` (``include/uapi/linux/genetlink.h``): u8 cmd, u8
  version, u16 reserved;
* ``struct nlattr``: u16 length (header included), u16 type whose top bits are
  ``NLA_F_NESTED`` / ``NLA_F_NET_BYTEORDER`` (masked off here); payloads are
  padded to 4 bytes.

IPVS numbers from ``include/uapi/linux/ip_vs.h``; the kernel side is
``ip_vs_genl_dump_services`` / ``ip_vs_genl_dump_dests`` in
``net/netfilter/ipvs/ip_vs_ctl.c``.  IPVS_SVC_ATTR_ADDR and
IPVS_DEST_ATTR_ADDR are ``union nf_inet_addr`` (16 bytes, IPv4 in the first
4); IPVS_SVC_ATTR_NETMASK is a be32 dotted mask for IPv4 and, for IPv6, the
prefix length stored in host order.

The parsed shapes are exactly those of `director.ipvs.parse_service` and
`director.ipvs.parse_dest` (canonical address text, IPv6 netmask as an int
prefix, ``fwd_method & 7``, the service flags word unmasked).

Every decoding failure raises `director.ipvs.IPVSError`, never another
exception.  A netlink socket runs one dump at a time (the kernel answers a
second dump request with EBUSY while one is in progress), so `DumpSocket`
issues its dumps one after the other; each costs one send and a few receives.
"""

from __future__ import annotations

import asyncio
import errno as _errno
import ipaddress
import socket
import struct
from functools import lru_cache
from typing import Callable

from .model import DestAttrs, DestKey, KernelDest, ServiceAttrs, ServiceKey

# --- constants ------------------------------------------------------------------------------

NETLINK_GENERIC = 16
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_DUMP = 0x300  # NLM_F_ROOT | NLM_F_MATCH
NLA_TYPE_MASK = 0x3FFF  # ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER)

GENL_VERSION = 1  # IPVS_GENL_VERSION
IPVS_CMD_GET_SERVICE = 4
IPVS_CMD_GET_DEST = 8
IPVS_CMD_ATTR_SERVICE = 1
IPVS_CMD_ATTR_DEST = 2

IPVS_SVC_ATTR_AF = 1
IPVS_SVC_ATTR_PROTOCOL = 2
IPVS_SVC_ATTR_ADDR = 3
IPVS_SVC_ATTR_PORT = 4
IPVS_SVC_ATTR_FWMARK = 5
IPVS_SVC_ATTR_SCHED_NAME = 6
IPVS_SVC_ATTR_FLAGS = 7
IPVS_SVC_ATTR_TIMEOUT = 8
IPVS_SVC_ATTR_NETMASK = 9
IPVS_SVC_ATTR_STATS = 10
IPVS_SVC_ATTR_PE_NAME = 11
IPVS_SVC_ATTR_STATS64 = 12

IPVS_DEST_ATTR_ADDR = 1
IPVS_DEST_ATTR_PORT = 2
IPVS_DEST_ATTR_FWD_METHOD = 3
IPVS_DEST_ATTR_WEIGHT = 4
IPVS_DEST_ATTR_U_THRESH = 5
IPVS_DEST_ATTR_L_THRESH = 6
IPVS_DEST_ATTR_ACTIVE_CONNS = 7
IPVS_DEST_ATTR_INACT_CONNS = 8
IPVS_DEST_ATTR_PERSIST_CONNS = 9
IPVS_DEST_ATTR_STATS = 10
IPVS_DEST_ATTR_ADDR_FAMILY = 11
IPVS_DEST_ATTR_STATS64 = 12
IPVS_DEST_ATTR_TUN_TYPE = 13
IPVS_DEST_ATTR_TUN_PORT = 14
IPVS_DEST_ATTR_TUN_FLAGS = 15

_NLMSGHDR = struct.Struct("=IHHII")
_GENLHDR = struct.Struct("=BBH")
_NLATTR = struct.Struct("=HH")
_U16 = struct.Struct("=H")
_BE16 = struct.Struct(">H")
_U32 = struct.Struct("=I")
_S32 = struct.Struct("=i")
_FLAGS = struct.Struct("=II")
_HDRLEN = _NLMSGHDR.size + _GENLHDR.size  # 20


def _error(message: str, code: int = 0) -> Exception:
    from .ipvs import IPVSError  # late: director.ipvs imports this module

    return IPVSError(message, code=code)


def _align(n: int) -> int:
    return (n + 3) & ~3


# --- requests -------------------------------------------------------------------------------


def _attr(kind: int, payload: bytes) -> bytes:
    length = _NLATTR.size + len(payload)
    return _NLATTR.pack(length, kind) + payload + b"\0" * (_align(length) - length)


def _request(family_id: int, seq: int, cmd: int, attrs: bytes = b"", flags: int = NLM_F_REQUEST | NLM_F_DUMP) -> bytes:
    """One IPVS generic-netlink message: nlmsghdr (``flags``, a dump request by default),
    genlmsghdr (``cmd``, version `GENL_VERSION`), then ``attrs``."""
    length = _HDRLEN + len(attrs)
    return (
        _NLMSGHDR.pack(length, family_id, flags, seq, 0)
        + _GENLHDR.pack(cmd, GENL_VERSION, 0)
        + attrs
    )


def service_key_attrs(key: ServiceKey) -> bytes:
    """The nested IPVS_CMD_ATTR_SERVICE attribute that names ``key`` (no NLA_F_NESTED bit).

    Holds IPVS_SVC_ATTR_AF and either IPVS_SVC_ATTR_FWMARK or
    IPVS_SVC_ATTR_PROTOCOL, IPVS_SVC_ATTR_ADDR (16 bytes, ``union
    nf_inet_addr``) and IPVS_SVC_ATTR_PORT (be16), as
    ``ip_vs_genl_parse_service`` reads them.

    Raises:
        ValueError: the key's address is not an address of its family.
    """
    inner = _attr(IPVS_SVC_ATTR_AF, _U16.pack(key.family))
    if key.fwmark:
        inner += _attr(IPVS_SVC_ATTR_FWMARK, _U32.pack(key.fwmark))
    else:
        addr = socket.inet_pton(key.family, key.address).ljust(16, b"\0")
        inner += (
            _attr(IPVS_SVC_ATTR_PROTOCOL, _U16.pack(key.protocol))
            + _attr(IPVS_SVC_ATTR_ADDR, addr)
            + _attr(IPVS_SVC_ATTR_PORT, _BE16.pack(key.port))
        )
    return _attr(IPVS_CMD_ATTR_SERVICE, inner)


def service_dump_request(family_id: int, seq: int) -> bytes:
    """Netlink message asking for every virtual service (IPVS_CMD_GET_SERVICE, NLM_F_DUMP).

    Args:
        family_id: the IPVS generic-netlink family id (nlmsg_type).
        seq: sequence number the answers will carry.
    """
    return _request(family_id, seq, IPVS_CMD_GET_SERVICE)


def dest_dump_request(family_id: int, seq: int, key: ServiceKey) -> bytes:
    """Netlink message asking for the destinations of one service (IPVS_CMD_GET_DEST, NLM_F_DUMP).

    Raises:
        ValueError: the key's address is not an address of its family.
    """
    return _request(family_id, seq, IPVS_CMD_GET_DEST, service_key_attrs(key))


# --- answers --------------------------------------------------------------------------------


def split_answer(data: bytes, family_id: int, seq: int) -> tuple[list[memoryview], bool]:
    """Walk the netlink messages of one received datagram of a dump answer.

    Args:
        data: the bytes of one ``recv``.
        family_id: the IPVS family id; data messages of another type are skipped.
        seq: the sequence number of our request; other messages are skipped
            (a late answer to an abandoned request).

    Returns:
        (attribute areas of the data messages, after their genl header; True
        once NLMSG_DONE was seen).

    Raises:
        IPVSError: an NLMSG_ERROR answer (``errno`` set from its code), a
            failed dump reported in NLMSG_DONE, or bytes that are not a
            well-formed netlink message sequence.
    """
    view = memoryview(data)
    total = len(data)
    off = 0
    bodies: list[memoryview] = []
    done = False
    while off < total:
        if total - off < _NLMSGHDR.size:
            raise _error(f"truncated netlink header at offset {off}")
        length, mtype, _flags, mseq, _pid = _NLMSGHDR.unpack_from(data, off)
        if length < _NLMSGHDR.size or off + length > total:
            raise _error(f"bad netlink message length {length} at offset {off}")
        if mseq == seq:
            if mtype == NLMSG_ERROR or mtype == NLMSG_DONE:
                code = 0
                if length >= _NLMSGHDR.size + 4:
                    code = -_S32.unpack_from(data, off + _NLMSGHDR.size)[0]
                elif mtype == NLMSG_ERROR:
                    raise _error("truncated netlink error message")
                if code:
                    raise _error(f"kernel error {_strerror(code)}", code=code)
                done = True
                off += _align(length)
                break
            if mtype == family_id:
                if length < _HDRLEN:
                    raise _error("truncated generic netlink header")
                bodies.append(view[off + _HDRLEN : off + length])
        off += _align(length)
    return bodies, done


def _strerror(code: int) -> str:
    try:
        return f"{_errno.errorcode.get(code, code)} ({socket.os.strerror(code)})"
    except ValueError:  # pragma: no cover - strerror accepts every int on Linux
        return str(code)


def _attrs(data: memoryview | bytes, off: int, end: int) -> dict[int, tuple[int, int]]:
    """Map attribute type -> (payload start, payload end) for the attributes in data[off:end]."""
    found: dict[int, tuple[int, int]] = {}
    unpack = _NLATTR.unpack_from
    while off < end:
        if end - off < 4:
            raise _error("truncated netlink attribute")
        length, kind = unpack(data, off)
        if length < 4 or off + length > end:
            raise _error(f"bad netlink attribute length {length}")
        found[kind & NLA_TYPE_MASK] = (off + 4, off + length)
        off += (length + 3) & ~3
    return found


def _nested(body: memoryview | bytes, kind: int) -> tuple[memoryview | bytes, dict[int, tuple[int, int]]]:
    top = _attrs(body, 0, len(body))
    span = top.get(kind)
    if span is None:
        raise _error(f"IPVS message without attribute {kind}")
    return body, _attrs(body, span[0], span[1])


def _int(data, attrs, kind: int, fmt: struct.Struct, default: int = 0) -> int:
    span = attrs.get(kind)
    if span is None:
        return default
    if span[1] - span[0] < fmt.size:
        raise _error(f"IPVS attribute {kind} too short")
    return fmt.unpack_from(data, span[0])[0]


def _text(data, attrs, kind: int) -> str:
    span = attrs.get(kind)
    if span is None:
        return ""
    raw = bytes(data[span[0] : span[1]])
    try:
        return raw.split(b"\0", 1)[0].decode("ascii")
    except UnicodeDecodeError:
        raise _error(f"IPVS attribute {kind} is not ASCII text") from None


@lru_cache(maxsize=65536)
def _address_text(family: int, raw: bytes) -> str:
    if family == socket.AF_INET6:
        return str(ipaddress.IPv6Address(raw[:16]))
    return str(ipaddress.IPv4Address(raw[:4]))


def _address(data, attrs, kind: int, family: int) -> str:
    span = attrs.get(kind)
    if span is None:
        raise _error(f"IPVS message without address attribute {kind}")
    need = 16 if family == socket.AF_INET6 else 4
    if family not in (socket.AF_INET, socket.AF_INET6) or span[1] - span[0] < need:
        raise _error(f"IPVS address attribute {kind} does not fit family {family}")
    return _address_text(family, bytes(data[span[0] : span[0] + need]))


def parse_service_body(body: memoryview | bytes) -> tuple[ServiceKey, ServiceAttrs]:
    """Decode one IPVS_CMD_GET_SERVICE answer (attributes after the genl header).

    Returns:
        the same (ServiceKey, ServiceAttrs) as `director.ipvs.parse_service`:
        missing attributes take its defaults; IPVS_SVC_ATTR_NETMASK is a
        dotted mask for IPv4 and the prefix length (int) for IPv6.

    Raises:
        IPVSError: the message is malformed.
    """
    data, svc = _nested(body, IPVS_CMD_ATTR_SERVICE)
    family = _int(data, svc, IPVS_SVC_ATTR_AF, _U16, socket.AF_INET)
    fwmark = _int(data, svc, IPVS_SVC_ATTR_FWMARK, _U32)
    if fwmark:
        key = ServiceKey(family, 0, "", 0, fwmark)
    else:
        key = ServiceKey(
            family,
            _int(data, svc, IPVS_SVC_ATTR_PROTOCOL, _U16),
            _address(data, svc, IPVS_SVC_ATTR_ADDR, family),
            _int(data, svc, IPVS_SVC_ATTR_PORT, _BE16),
        )
    span = svc.get(IPVS_SVC_ATTR_NETMASK)
    if span is not None and span[1] - span[0] < 4:
        raise _error("IPVS netmask attribute too short")
    raw_mask = bytes(data[span[0] : span[0] + 4]) if span is not None else b"\xff\xff\xff\xff"
    netmask: str | int
    if family == socket.AF_INET6:
        netmask = _U32.unpack(raw_mask)[0]
    else:
        netmask = socket.inet_ntoa(raw_mask)
    flags = 0
    span = svc.get(IPVS_SVC_ATTR_FLAGS)
    if span is not None:
        if span[1] - span[0] < _FLAGS.size:
            raise _error("IPVS flags attribute too short")
        flags = _FLAGS.unpack_from(data, span[0])[0]
    attrs = ServiceAttrs(
        scheduler=_text(data, svc, IPVS_SVC_ATTR_SCHED_NAME),
        flags=flags,
        timeout=_int(data, svc, IPVS_SVC_ATTR_TIMEOUT, _U32),
        netmask=netmask,
        pe_name=_text(data, svc, IPVS_SVC_ATTR_PE_NAME),
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


def _dest_fixed_layout(data, off: int, end: int) -> tuple[DestKey, KernelDest] | None:
    """Decode a destination laid out exactly as `_DEST_LAYOUT`, with one unpack; None otherwise.

    The attributes after the fixed part (the statistics) are walked for
    well-formedness; if any of them is one the model reads, None (the caller
    then decodes with the general walk, where the last occurrence wins).
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
    unpack = _NLATTR.unpack_from
    while off < end:
        if end - off < 4:
            return None
        length, kind = unpack(data, off)
        if length < 4 or off + length > end or (kind & NLA_TYPE_MASK) in _DEST_KINDS:
            return None
        off += (length + 3) & ~3
    return DestKey(address, socket.ntohs(v[5])), KernelDest(
        attrs=DestAttrs(fwd_method=v[8] & 0x7, weight=v[11], u_thresh=v[23], l_thresh=v[26]),
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
        the same (DestKey, KernelDest) as `director.ipvs.parse_dest`
        (``fwd_method`` masked with 7, counters from the *_CONNS attributes).

    Raises:
        IPVSError: the message is malformed.
    """
    # The hot loop of a large dump (one call per real server): the attributes
    # are decoded in one walk instead of through the generic `_attrs` map.
    span = _attrs(body, 0, len(body)).get(IPVS_CMD_ATTR_DEST)
    if span is None:
        raise _error(f"IPVS message without attribute {IPVS_CMD_ATTR_DEST}")
    off, end = span
    data = body
    fast = _dest_fixed_layout(data, off, end)
    if fast is not None:
        return fast
    unpack = _NLATTR.unpack_from
    u32 = _U32.unpack_from
    values = [0] * 16  # u32 attributes by type: FWD_METHOD .. PERSIST_CONNS
    port = 0
    addr_span = None
    while off < end:
        if end - off < 4:
            raise _error("truncated netlink attribute")
        length, kind = unpack(data, off)
        if length < 4 or off + length > end:
            raise _error(f"bad netlink attribute length {length}")
        kind &= NLA_TYPE_MASK
        if IPVS_DEST_ATTR_FWD_METHOD <= kind <= IPVS_DEST_ATTR_PERSIST_CONNS:
            if length < 8:
                raise _error(f"IPVS attribute {kind} too short")
            values[kind] = u32(data, off + 4)[0]
        elif kind == IPVS_DEST_ATTR_ADDR:
            addr_span = {kind: (off + 4, off + length)}
        elif kind == IPVS_DEST_ATTR_PORT:
            if length < 6:
                raise _error(f"IPVS attribute {kind} too short")
            port = _BE16.unpack_from(data, off + 4)[0]
        elif kind == IPVS_DEST_ATTR_ADDR_FAMILY:
            if length < 6:
                raise _error(f"IPVS attribute {kind} too short")
            family = _U16.unpack_from(data, off + 4)[0]
        off += (length + 3) & ~3
    key = DestKey(_address(data, addr_span or {}, IPVS_DEST_ATTR_ADDR, family), port)
    attrs = DestAttrs(
        fwd_method=values[IPVS_DEST_ATTR_FWD_METHOD] & 0x7,
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


# --- I/O --------------------------------------------------------------------------------------


def open_generic_netlink(configure: Callable[[socket.socket], None] | None = None) -> socket.socket:
    """A non-blocking NETLINK_GENERIC socket bound (port id chosen by the kernel) in the
    calling thread's network namespace. ``configure(sock)`` runs before the bind, for
    socket options.

    Raises:
        OSError: the socket cannot be created, configured or bound (it is closed).
    """
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
    try:
        if configure is not None:
            configure(sock)
        sock.bind((0, 0))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class DumpSocket:
    """A plain non-blocking NETLINK_GENERIC socket that runs IPVS dumps on the asyncio loop.

    Create it in the network namespace whose table it should read (the socket
    stays bound to that namespace).  Dumps run one at a time (an internal
    lock serialises concurrent callers), since a netlink socket has at most
    one dump in progress.

    Args:
        family_id: the IPVS generic-netlink family id (resolved by the caller
            through CTRL_CMD_GETFAMILY).
        rcvbuf: requested SO_RCVBUF in bytes.

    Raises:
        OSError: the socket cannot be created.
    """

    RECV_SIZE = 65536  # bytes per recv; the kernel fills dump skbs up to 32 KiB

    def __init__(self, family_id: int, rcvbuf: int = 1 << 20) -> None:
        self.family_id = family_id
        self._sock = open_generic_netlink(
            lambda sock: sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf))
        self._seq = 0
        self._lock = asyncio.Lock()

    def close(self) -> None:
        """Close the socket (idempotent)."""
        self._sock.close()

    async def _dump(self, request_for_seq) -> list[memoryview]:
        async with self._lock:
            loop = asyncio.get_running_loop()
            self._seq = (self._seq % 0xFFFFFFFF) + 1
            seq = self._seq
            try:
                await loop.sock_sendall(self._sock, request_for_seq(seq))
                bodies: list[memoryview] = []
                done = False
                while not done:
                    data = await loop.sock_recv(self._sock, self.RECV_SIZE)
                    if not data:
                        raise _error("IPVS netlink socket closed during a dump")
                    more, done = split_answer(data, self.family_id, seq)
                    bodies.extend(more)
            except OSError as exc:
                raise _error(f"IPVS dump I/O failed: {exc}", code=exc.errno or 0) from None
            return bodies

    async def services(self) -> list[tuple[ServiceKey, ServiceAttrs]]:
        """Every virtual service of the namespace, as `parse_service_body` decodes them.

        Raises:
            IPVSError: the kernel refused the dump, or its answer is malformed.
        """
        bodies = await self._dump(lambda seq: service_dump_request(self.family_id, seq))
        return [parse_service_body(b) for b in bodies]

    async def bodies(self, request_for_seq: Callable[[int], bytes]) -> list[memoryview]:
        """The answer messages (attributes after the genl header) of the dump that
        ``request_for_seq(seq)`` asks for; other modules decode them.

        Raises:
            IPVSError: the kernel refused the dump, or its answer is malformed.
        """
        return await self._dump(request_for_seq)

    async def dests(self, key: ServiceKey) -> dict[DestKey, KernelDest]:
        """The destinations of one service, as `parse_dest_body` decodes them.

        Raises:
            IPVSError: the kernel refused (errno ESRCH when the service is
                gone), or its answer is malformed.
        """
        try:
            request = dest_dump_request(self.family_id, 0, key)
        except (ValueError, OSError) as exc:
            raise _error(f"cannot name service {key}: {exc}", code=_errno.EINVAL) from None
        bodies = await self._dump(lambda seq: request[:8] + _U32.pack(seq) + request[12:])
        return dict(parse_dest_body(b, key.family) for b in bodies)
