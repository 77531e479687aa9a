"""IPVS commands in batches: generic-netlink requests encoded with `struct`, many per send.

pyroute2 sends one request and waits for its answer before the next; loading
a table of 1,000 services x 20 real servers that way costs minutes of CPU on a
slow machine. Here every planner operation (`director.planner.Op`) becomes one
netlink message built by hand (`encode_op`, pure, tested byte for byte), and
`CommandSocket` sends up to `BATCH` of them in one ``sendmsg`` before reading
their acknowledgements. The kernel processes the messages of one datagram in
order and answers each (``netlink_rcv_skb`` in ``net/netlink/af_netlink.c``:
an ``NLMSG_ERROR`` with 0 or -errno per message carrying ``NLM_F_ACK``), so a
failure affects only its own operation.

Wire format: ``include/uapi/linux/netlink.h`` (``struct nlmsghdr``,
``NLM_F_REQUEST`` 0x1, ``NLM_F_ACK`` 0x4), ``include/uapi/linux/genetlink.h``
(``struct genlmsghdr``), ``include/uapi/linux/ip_vs.h`` (commands and
attributes); the kernel parses them in ``ip_vs_genl_parse_service`` and
``ip_vs_genl_parse_dest`` (``net/netfilter/ipvs/ip_vs_ctl.c``):

* IPVS_CMD_NEW_SERVICE 1, SET_SERVICE 2, DEL_SERVICE 3, NEW_DEST 5,
  SET_DEST 6, DEL_DEST 7;
* a service is named by IPVS_SVC_ATTR_AF (u16) and either FWMARK (u32) or
  PROTOCOL (u16), ADDR (16 bytes, ``union nf_inet_addr``) and PORT (be16);
  add/set also carry SCHED_NAME (NUL-terminated), FLAGS (``struct
  ip_vs_flags``: u32 flags, u32 mask; we send mask 0xffffffff so cleared bits
  are cleared), TIMEOUT (u32 seconds), NETMASK (be32: a dotted mask for IPv4;
  for IPv6 the prefix length, which the kernel reads in host order) and, when
  set, PE_NAME;
* a destination is IPVS_DEST_ATTR_ADDR (16 bytes) and PORT (be16); add/set
  carry FWD_METHOD, WEIGHT, U_THRESH, L_THRESH (u32 each): SET_DEST replaces
  every field, so the planner always sends the complete entry.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Sequence

from .ipvs_dump import (
    _NLMSGHDR,
    _U32,
    IPVS_CMD_ATTR_DEST,
    IPVS_CMD_ATTR_SERVICE,
    IPVS_DEST_ATTR_ADDR,
    IPVS_DEST_ATTR_FWD_METHOD,
    IPVS_DEST_ATTR_L_THRESH,
    IPVS_DEST_ATTR_PORT,
    IPVS_DEST_ATTR_U_THRESH,
    IPVS_DEST_ATTR_WEIGHT,
    IPVS_SVC_ATTR_FLAGS,
    IPVS_SVC_ATTR_NETMASK,
    IPVS_SVC_ATTR_PE_NAME,
    IPVS_SVC_ATTR_SCHED_NAME,
    IPVS_SVC_ATTR_TIMEOUT,
    NLM_F_REQUEST,
    NLMSG_ERROR,
    _attr,
    _request,
    open_generic_netlink,
    service_key_attrs,
)
from .model import DestAttrs, DestKey, ServiceAttrs, ServiceKey
from .planner import Op

__all__ = ["COMMANDS", "BATCH", "encode_op", "CommandSocket", "parse_acks"]

NLM_F_ACK = 0x4
#: IPVS generic-netlink command of each planner operation kind.
COMMANDS = {
    "add_service": 1,  # IPVS_CMD_NEW_SERVICE
    "set_service": 2,  # IPVS_CMD_SET_SERVICE
    "del_service": 3,  # IPVS_CMD_DEL_SERVICE
    "add_dest": 5,  # IPVS_CMD_NEW_DEST
    "set_dest": 6,  # IPVS_CMD_SET_DEST
    "del_dest": 7,  # IPVS_CMD_DEL_DEST
}
#: Messages sent in one datagram before their acknowledgements are read.
BATCH = 128
#: Seconds to wait for the acknowledgements of one batch.
ACK_TIMEOUT = 30.0
_SOL_NETLINK = 270
_NETLINK_CAP_ACK = 10  # error acks without the echoed request (linux/netlink.h)
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
_BE16 = struct.Struct(">H")
_FLAGS = struct.Struct("=II")
_ERRHDR = struct.Struct("=i")


def _service_attrs(key: ServiceKey, attrs: ServiceAttrs | None) -> bytes:
    named = service_key_attrs(key)  # the nested IPVS_CMD_ATTR_SERVICE with the key alone
    if attrs is None:
        return named
    if key.family == socket.AF_INET6:
        netmask = _U32.pack(int(attrs.netmask))
    else:
        netmask = socket.inet_aton(str(attrs.netmask))
    extra = (
        _attr(IPVS_SVC_ATTR_SCHED_NAME, attrs.scheduler.encode() + b"\0")
        + _attr(IPVS_SVC_ATTR_FLAGS, _FLAGS.pack(attrs.flags, 0xFFFFFFFF))
        + _attr(IPVS_SVC_ATTR_TIMEOUT, _U32.pack(attrs.timeout))
        + _attr(IPVS_SVC_ATTR_NETMASK, netmask)
    )
    if attrs.pe_name:
        extra += _attr(IPVS_SVC_ATTR_PE_NAME, attrs.pe_name.encode() + b"\0")
    inner = named[4:] + extra
    return _attr(IPVS_CMD_ATTR_SERVICE, inner)


def _dest_attrs(family: int, key: DestKey, attrs: DestAttrs | None) -> bytes:
    inner = _attr(IPVS_DEST_ATTR_ADDR, socket.inet_pton(family, key.address).ljust(16, b"\0")) + _attr(
        IPVS_DEST_ATTR_PORT, _BE16.pack(key.port)
    )
    if attrs is not None:
        inner += (
            _attr(IPVS_DEST_ATTR_FWD_METHOD, _U32.pack(attrs.fwd_method))
            + _attr(IPVS_DEST_ATTR_WEIGHT, _U32.pack(attrs.weight))
            + _attr(IPVS_DEST_ATTR_U_THRESH, _U32.pack(attrs.u_thresh))
            + _attr(IPVS_DEST_ATTR_L_THRESH, _U32.pack(attrs.l_thresh))
        )
    return _attr(IPVS_CMD_ATTR_DEST, inner)


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
    return _request(family_id, seq, cmd, attrs, flags=NLM_F_REQUEST | NLM_F_ACK)


def parse_acks(data: bytes) -> dict[int, int]:
    """``{seq: errno}`` of the ``NLMSG_ERROR`` messages in one received datagram (0 = success).

    Other message types are skipped; a truncated message ends the parse.
    """
    out: dict[int, int] = {}
    off = 0
    while off + _NLMSGHDR.size <= len(data):
        length, kind, _flags, seq, _pid = _NLMSGHDR.unpack_from(data, off)
        if length < _NLMSGHDR.size or off + length > len(data):
            break
        if kind == NLMSG_ERROR and length >= _NLMSGHDR.size + 4:
            out[seq] = -_ERRHDR.unpack_from(data, off + _NLMSGHDR.size)[0]
        off += (length + 3) & ~3
    return out


def _command_socket_options(sock: socket.socket) -> None:
    """Room for every acknowledgement of a batch (root may exceed rmem_max), and
    NETLINK_CAP_ACK so that error acks do not echo the whole request."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, 1 << 21)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
    try:
        sock.setsockopt(_SOL_NETLINK, _NETLINK_CAP_ACK, 1)
    except OSError:
        pass  # older kernels echo the request in error acks: only bigger


class CommandSocket:
    """A NETLINK_GENERIC socket that runs IPVS commands in batches on the asyncio loop.

    Create it in the network namespace whose table it should change.

    Args:
        family_id: the IPVS generic-netlink family id.
        batch: messages per datagram (default `BATCH`).

    Raises:
        OSError: the socket cannot be created.
    """

    def __init__(self, family_id: int, batch: int = BATCH) -> None:
        self.family_id = family_id
        self.batch = max(1, batch)
        self._sock = open_generic_netlink(_command_socket_options)
        self._seq = 0
        self._lock = asyncio.Lock()
        #: netlink messages sent so far (for tests and benchmarks).
        self.sent = 0

    def close(self) -> None:
        """Close the socket (idempotent)."""
        self._sock.close()

    async def run(self, messages: Sequence[bytes]) -> list[int]:
        """Send encoded messages (their seq fields are replaced) and return one errno each (0 = done).

        Messages go out `batch` at a time, in order; the next batch is sent
        once every message of the previous one is acknowledged.

        Raises:
            OSError: the socket failed, or acknowledgements did not come
                within `ACK_TIMEOUT` seconds (the state of the unacknowledged
                messages is unknown; a dump tells).
        """
        async with self._lock:
            loop = asyncio.get_running_loop()
            results: list[int] = []
            for start in range(0, len(messages), self.batch):
                chunk = messages[start:start + self.batch]
                seqs = []
                parts = []
                for msg in chunk:
                    self._seq = (self._seq % 0x7FFFFFFF) + 1
                    seqs.append(self._seq)
                    parts.append(msg[:8] + _U32.pack(self._seq) + msg[12:])
                await loop.sock_sendall(self._sock, b"".join(parts))
                self.sent += len(parts)
                pending = set(seqs)
                answers: dict[int, int] = {}
                while pending:
                    try:
                        data = await asyncio.wait_for(loop.sock_recv(self._sock, 1 << 20), ACK_TIMEOUT)
                    except asyncio.TimeoutError:
                        raise OSError(f"no acknowledgement for {len(pending)} IPVS command(s) in {ACK_TIMEOUT:g} s")
                    while True:  # each ack is its own datagram: drain what is queued without the loop
                        if not data:
                            raise OSError("IPVS netlink socket closed")
                        for seq, code in parse_acks(data).items():
                            if seq in pending:
                                pending.discard(seq)
                                answers[seq] = code
                        if not pending:
                            break
                        try:
                            data = self._sock.recv(1 << 20)
                        except (BlockingIOError, InterruptedError):
                            break
                results.extend(answers[s] for s in seqs)
            return results
