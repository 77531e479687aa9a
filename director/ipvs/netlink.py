"""Netlink and generic-netlink framing, the attribute codec, the one reader of answer streams,
and the generic-netlink controller's family lookup (CTRL_CMD_GETFAMILY). Pure: no sockets.

Wire format (all integers in host order unless marked be):

* ``struct nlmsghdr`` (``include/uapi/linux/netlink.h``): u32 length, u16
  type, u16 flags, u32 sequence, u32 port id; messages are 4-byte aligned
  (``NLMSG_ALIGN``); ``NLMSG_ERROR`` carries ``struct nlmsgerr``, whose first
  field is an s32 -errno (0 = an acknowledgement); ``NLMSG_DONE`` ends a
  multipart dump and carries an s32 that is -errno when the dump failed;
* ``struct genlmsghdr`` (``include/uapi/linux/genetlink.h``): u8 cmd, u8
  version, u16 reserved;
* ``struct nlattr``: u16 length (header included), u16 type whose top bits are
  ``NLA_F_NESTED`` / ``NLA_F_NET_BYTEORDER`` (masked off when read, never set
  when written: the kernel's IPVS policy takes nested attributes without
  the bit); payloads are padded to 4 bytes (``NLA_ALIGN``).

The family lookup: a ``CTRL_CMD_GETFAMILY`` request to ``GENL_ID_CTRL``
carrying ``CTRL_ATTR_FAMILY_NAME``; the controller answers one
``CTRL_CMD_NEWFAMILY`` message whose ``CTRL_ATTR_FAMILY_ID`` (u16) is the
``nlmsg_type`` of the family's messages, or ``NLMSG_ERROR`` -ENOENT when no
such family is registered (``ctrl_getfamily`` in ``net/netlink/genetlink.c``).

Every decoding failure raises `IPVSError`, never another exception.
"""

from __future__ import annotations

import errno as errno_names
import os
import struct
from collections.abc import Iterator

from .errors import IPVSError
from .uapi import (
    CTRL_ATTR_FAMILY_ID,
    CTRL_ATTR_FAMILY_NAME,
    CTRL_CMD_GETFAMILY,
    CTRL_REQUEST_VERSION,
    GENL_ID_CTRL,
    NLA_TYPE_MASK,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
)

#: ``struct nlmsghdr``: length, type, flags, sequence, port id.
NLMSGHDR = struct.Struct("=IHHII")
#: ``struct genlmsghdr``: cmd, version, reserved.
GENLMSGHDR = struct.Struct("=BBH")
#: ``struct nlattr``: length (header included), type.
NLATTR = struct.Struct("=HH")
U16 = struct.Struct("=H")
BE16 = struct.Struct(">H")
U32 = struct.Struct("=I")
U64 = struct.Struct("=Q")
S32 = struct.Struct("=i")
NLMSG_HDRLEN = NLMSGHDR.size  # 16
GENL_HDRLEN = GENLMSGHDR.size  # 4
#: Bytes before the attributes of a generic-netlink message (both headers): 20.
GENLMSG_ATTRS_OFFSET = NLMSG_HDRLEN + GENL_HDRLEN
NLA_HDRLEN = NLATTR.size  # 4


def align(n: int) -> int:
    """``n`` rounded up to a multiple of 4 bytes (``NLMSG_ALIGN``, ``NLA_ALIGN``)."""
    return (n + 3) & ~3


# --- writing ------------------------------------------------------------------------------------


def nla_put(kind: int, payload: bytes) -> bytes:
    """One ``struct nlattr`` of type ``kind`` carrying ``payload``, padded to 4 bytes.

    A nested attribute is ``nla_put(kind, b"".join(inner attributes))``
    (without ``NLA_F_NESTED``, as the IPVS requests of ipvsadm and pyroute2).
    """
    length = NLA_HDRLEN + len(payload)
    return NLATTR.pack(length, kind) + payload + b"\0" * (align(length) - length)


def nla_put_u16(kind: int, value: int) -> bytes:
    """An attribute holding a u16 in host order (padded to 8 bytes)."""
    return nla_put(kind, U16.pack(value))


def nla_put_be16(kind: int, value: int) -> bytes:
    """An attribute holding a be16 (a port number; padded to 8 bytes)."""
    return nla_put(kind, BE16.pack(value))


def nla_put_u32(kind: int, value: int) -> bytes:
    """An attribute holding a u32 in host order."""
    return nla_put(kind, U32.pack(value))


def nla_put_string(kind: int, text: str) -> bytes:
    """An attribute holding ``text`` (UTF-8) and a terminating NUL (``NLA_NUL_STRING``)."""
    return nla_put(kind, text.encode() + b"\0")


def genlmsg(family_id: int, seq: int, cmd: int, version: int, attrs: bytes = b"", *, flags: int) -> bytes:
    """One generic-netlink message: nlmsghdr (type ``family_id``, ``flags``, ``seq``, port
    id 0: the kernel fills in the sender's), genlmsghdr (``cmd``, ``version``), then
    ``attrs`` (already encoded, e.g. by `nla_put`)."""
    return (
        NLMSGHDR.pack(GENLMSG_ATTRS_OFFSET + len(attrs), family_id, flags, seq, 0)
        + GENLMSGHDR.pack(cmd, version, 0)
        + attrs
    )


def with_seq(message: bytes, seq: int) -> bytes:
    """``message`` (one encoded netlink message) with its sequence number replaced by ``seq``."""
    return message[:8] + U32.pack(seq) + message[12:]


# --- reading attributes ---------------------------------------------------------------------------


def nla_parse(data: memoryview | bytes, off: int, end: int) -> dict[int, tuple[int, int]]:
    """The attributes in ``data[off:end]`` as ``{type: (payload start, payload end)}``
    (type with the NLA_F_* bits masked off; of a repeated type, the last one).

    Raises:
        IPVSError: an attribute header is truncated or its length runs past ``end``.
    """
    found: dict[int, tuple[int, int]] = {}
    unpack = NLATTR.unpack_from
    while off < end:
        if end - off < NLA_HDRLEN:
            raise IPVSError("truncated netlink attribute")
        length, kind = unpack(data, off)
        if length < NLA_HDRLEN or off + length > end:
            raise IPVSError(f"bad netlink attribute length {length}")
        found[kind & NLA_TYPE_MASK] = (off + NLA_HDRLEN, off + length)
        off += (length + 3) & ~3
    return found


def nla_parse_nested(body: memoryview | bytes, kind: int) -> dict[int, tuple[int, int]]:
    """The attributes inside the top-level attribute ``kind`` of ``body`` (a message's
    attribute area), as `nla_parse` maps them (offsets into ``body``).

    Raises:
        IPVSError: ``body`` has no attribute ``kind``, or is malformed.
    """
    span = nla_parse(body, 0, len(body)).get(kind)
    if span is None:
        raise IPVSError(f"IPVS message without attribute {kind}")
    return nla_parse(body, span[0], span[1])


def nla_get_int(
    data: memoryview | bytes, spans: dict[int, tuple[int, int]], kind: int, fmt: struct.Struct, default: int = 0
) -> int:
    """The integer of attribute ``kind`` read with ``fmt`` (e.g. `U32`), ``default`` when absent.

    Raises:
        IPVSError: the payload is shorter than ``fmt``.
    """
    span = spans.get(kind)
    if span is None:
        return default
    if span[1] - span[0] < fmt.size:
        raise IPVSError(f"IPVS attribute {kind} too short")
    value: int = fmt.unpack_from(data, span[0])[0]  # fmt is one integer field (U16, U32, ...)
    return value


def nla_get_string(data: memoryview | bytes, spans: dict[int, tuple[int, int]], kind: int) -> str:
    """The ASCII text of attribute ``kind`` up to its first NUL, ``""`` when absent.

    Raises:
        IPVSError: the text is not ASCII.
    """
    span = spans.get(kind)
    if span is None:
        return ""
    raw = bytes(data[span[0] : span[1]])
    try:
        return raw.split(b"\0", 1)[0].decode("ascii")
    except UnicodeDecodeError:
        raise IPVSError(f"IPVS attribute {kind} is not ASCII text") from None


# --- reading message streams --------------------------------------------------------------------


def messages(data: bytes) -> Iterator[tuple[int, int, int, int, int]]:
    """Walk the netlink messages of one received datagram: the one framing reader.

    Yields:
        ``(offset, length, type, flags, seq)`` of each message, ``length`` as in
        its header (the next message starts at ``offset + align(length)``).

    Raises:
        IPVSError: (when the walk reaches it) a header that is truncated or a
            length below the header size or past the end of ``data``.
    """
    total = len(data)
    off = 0
    unpack = NLMSGHDR.unpack_from
    while off < total:
        if total - off < NLMSG_HDRLEN:
            raise IPVSError(f"truncated netlink header at offset {off}")
        length, mtype, flags, seq, _pid = unpack(data, off)
        if length < NLMSG_HDRLEN or off + length > total:
            raise IPVSError(f"bad netlink message length {length} at offset {off}")
        yield off, length, mtype, flags, seq
        off += (length + 3) & ~3


def strerror(code: int) -> str:
    """``"ENOENT (No such file or directory)"`` for an errno value."""
    return f"{errno_names.errorcode.get(code, code)} ({os.strerror(code)})"


def split_answer(data: bytes, family_id: int, seq: int) -> tuple[list[memoryview], bool]:
    """Read one received datagram of the answer to request ``seq`` (a dump, or a request
    answered by one message).

    Args:
        data: the bytes of one ``recv``.
        family_id: the generic-netlink family id; data messages of another type are skipped.
        seq: the sequence number of our request; other messages are skipped
            (a late answer to an abandoned request).

    Returns:
        (attribute areas of the data messages, after their genl header; True
        once NLMSG_DONE or an acknowledgement ended the answer).

    Raises:
        IPVSError: an NLMSG_ERROR answer (``errno`` set from its code), a
            failed dump reported in NLMSG_DONE, or bytes that are not a
            well-formed netlink message sequence.
    """
    view = memoryview(data)
    bodies: list[memoryview] = []
    for off, length, mtype, _flags, mseq in messages(data):
        if mseq != seq:
            continue
        if mtype == NLMSG_ERROR or mtype == NLMSG_DONE:
            code = 0
            if length >= NLMSG_HDRLEN + S32.size:
                code = -S32.unpack_from(data, off + NLMSG_HDRLEN)[0]
            elif mtype == NLMSG_ERROR:
                raise IPVSError("truncated netlink error message")
            if code:
                raise IPVSError(f"kernel error {strerror(code)}", code=code)
            return bodies, True
        if mtype == family_id:
            if length < GENLMSG_ATTRS_OFFSET:
                raise IPVSError("truncated generic netlink header")
            bodies.append(view[off + GENLMSG_ATTRS_OFFSET : off + length])
    return bodies, False


def parse_acks(data: bytes) -> dict[int, int]:
    """``{seq: errno}`` of the ``NLMSG_ERROR`` messages in one received datagram (0 = success).

    Any netlink protocol's acknowledgements (``NLM_F_ACK``): other message
    types are skipped; a truncated message ends the parse (what came before
    it is kept), never an exception.
    """
    out: dict[int, int] = {}
    try:
        for off, length, mtype, _flags, seq in messages(data):
            if mtype == NLMSG_ERROR and length >= NLMSG_HDRLEN + S32.size:
                out[seq] = -S32.unpack_from(data, off + NLMSG_HDRLEN)[0]
    except IPVSError:
        pass
    return out


# --- the controller: family lookup --------------------------------------------------------------


def getfamily_request(name: str, seq: int) -> bytes:
    """The ``CTRL_CMD_GETFAMILY`` request (``NLM_F_REQUEST``) for the family ``name``, e.g. ``"IPVS"``."""
    return genlmsg(
        GENL_ID_CTRL,
        seq,
        CTRL_CMD_GETFAMILY,
        CTRL_REQUEST_VERSION,
        nla_put_string(CTRL_ATTR_FAMILY_NAME, name),
        flags=NLM_F_REQUEST,
    )


def parse_family_id(body: memoryview | bytes, name: str) -> int:
    """The family id in the controller's answer (its attributes, after the genl header; a
    ``CTRL_CMD_NEWFAMILY`` message) to the lookup of ``name``.

    Raises:
        IPVSError: no ``CTRL_ATTR_FAMILY_ID``, or the answer names another family.
    """
    spans = nla_parse(body, 0, len(body))
    if CTRL_ATTR_FAMILY_ID not in spans:
        raise IPVSError("generic netlink controller answer without a family id")
    answered = nla_get_string(body, spans, CTRL_ATTR_FAMILY_NAME)
    if CTRL_ATTR_FAMILY_NAME in spans and answered != name:
        raise IPVSError(f"generic netlink controller answered for family {answered!r}, not {name!r}")
    return nla_get_int(body, spans, CTRL_ATTR_FAMILY_ID, U16)
