"""Ping check: one ICMP echo request (IPv4, RFC 792) or ICMPv6 echo request (RFC 4443 section
4.1) to the RIP; the real server is up when its echo reply comes back.

- passes: an echo reply with our identifier, sequence number and payload arrives from the RIP
  (reason ``"echo reply"``);
- fails: an ICMP error about the request comes back (``"no route to host"`` for a host
  unreachable, ``"network is unreachable"``...: at once, `checks.protocols.udp.report_icmp_errors`);
  sending fails (no route); or no reply within ``spec.timeout`` (`checks.base.run_check`'s
  ``timed_out``).  Other ICMP messages are ignored, up to `MAX_STRAYS` of them.

Sockets: an unprivileged ICMP datagram socket (``socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)``,
and ``AF_INET6``/``IPPROTO_ICMPV6``) when the kernel allows it: the group of the process must
be in ``net.ipv4.ping_group_range`` (for IPv6 too), whose default, also in every new network
namespace, is ``1 0``: nobody, root included.  The kernel then picks the echo identifier itself
(it overwrites the one sent with the socket's own "port", which ``getsockname`` gives), fills
in the checksum, and hands the socket only the replies carrying that identifier.  When such a
socket is refused (``EACCES``), the check uses a raw socket (``CAP_NET_RAW``, as root) from then
on for that address family, connected to the RIP (the kernel delivers it only packets from the
RIP), filtered to echo replies (``ICMP_FILTER``, ``ICMP6_FILTER`` of RFC 3542 section 3.2) and
to its own identifier and sequence number (a classic BPF program, `filter_echo_reply`): the
identifier is then this process's (`IDENT`) and the sequence number tells the checks apart.
Without that filter every raw socket would get a copy of every echo reply from its RIP: the
checks of the services sharing a real server would read each other's replies.
`ha.probe` pings the HA layer's ping nodes from raw sockets with the same codec
(`checks.protocols.icmp`), another identifier and another payload.

ldirectord (``sub check_ping``) sends with ``Net::Ping->new("icmp", 1, 64)`` up to
``checkcount`` echo requests, each waiting ``checktimeout`` seconds, and passes at the first
reply.  Here one request is sent per check, bounded by ``spec.timeout``; the engine's
``fall``/``retry_interval`` play the part of ``checkcount``.  What counts as alive is the same:
an echo reply from the RIP.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import os
import socket
import struct
from typing import TYPE_CHECKING

from checks.protocols.icmp import (
    ICMP_ECHO_REPLY,
    ICMPV6_ECHO_REPLY,
    decode_echo_message,
    decode_echo_reply,
    encode_echo_request,
)
from checks.protocols.tcp import socket_address
from checks.protocols.udp import report_icmp_errors

if TYPE_CHECKING:  # pragma: no cover
    from checks.base import CheckTarget

__all__ = [
    "check_ping",
    "open_icmp_socket",
    "echo_reply_filter",
    "filter_echo_reply",
    "IDENT",
    "PAYLOAD",
    "MAX_STRAYS",
]

#: The echo payload of the check (16 bytes), compared in the reply.
PAYLOAD = b"directord-check\x00"

#: The echo identifier of this process's raw-socket checks (datagram sockets have the kernel's).
IDENT = int.from_bytes(os.urandom(2), "big")

#: ICMP messages that are not our reply ignored by one check before it fails (a flood of them
#: would otherwise keep the check reading without yielding to the event loop).
MAX_STRAYS = 64

#: Bytes read of one ICMP message: our reply is 20 (IPv4 header) + 8 + 16; longer ones are not ours.
_READ = 512

_SOL_RAW = 255  # <linux/socket.h>
_ICMP_FILTER = 1  # <linux/icmp.h>: a 32-bit mask of the ICMP types NOT delivered
_ICMP6_FILTER = 1  # <linux/icmpv6.h>: 256 bits, a bit set blocks that ICMPv6 type
_V4_FILTER = struct.pack("=I", 0xFFFFFFFF & ~(1 << ICMP_ECHO_REPLY))


def _v6_filter() -> bytes:
    words = [0xFFFFFFFF] * 8
    words[ICMPV6_ECHO_REPLY >> 5] &= ~(1 << (ICMPV6_ECHO_REPLY & 31))
    return struct.pack("=8I", *words)


_V6_FILTER = _v6_filter()

#: Errors of ``socket(..., SOCK_DGRAM, IPPROTO_ICMP)`` after which raw sockets are used.
_DGRAM_REFUSED = (errno.EACCES, errno.EPERM, errno.EPROTONOSUPPORT, errno.ESOCKTNOSUPPORT)

#: Address families whose datagram ICMP sockets were refused: raw sockets from then on.
_raw_families: set[int] = set()

_seq = 0


def open_icmp_socket(family: int) -> tuple[socket.socket, bool]:
    """A new ICMP (``AF_INET``) or ICMPv6 (``AF_INET6``) socket: ``(socket, raw)``.

    A datagram socket when the kernel allows it (``net.ipv4.ping_group_range``), else, and for
    that family from then on, a raw socket filtered to echo replies (``raw`` true).  Blocking;
    the caller sets it non-blocking and closes it.

    Raises:
        OSError: neither can be opened (``PermissionError`` for a raw socket without
            ``CAP_NET_RAW``), or a file-descriptor limit.
    """
    proto = socket.IPPROTO_ICMP if family == socket.AF_INET else socket.IPPROTO_ICMPV6
    if family not in _raw_families:
        try:
            return socket.socket(family, socket.SOCK_DGRAM, proto), False
        except OSError as exc:
            if exc.errno not in _DGRAM_REFUSED:
                raise
            _raw_families.add(family)
    sock = socket.socket(family, socket.SOCK_RAW, proto)
    try:
        if family == socket.AF_INET:
            sock.setsockopt(_SOL_RAW, _ICMP_FILTER, _V4_FILTER)
        else:
            sock.setsockopt(socket.IPPROTO_ICMPV6, _ICMP6_FILTER, _V6_FILTER)
    except BaseException:
        sock.close()
        raise
    return sock, True


# classic BPF, <linux/filter.h>
_BPF_LD, _BPF_LDX, _BPF_JMP, _BPF_RET = 0x00, 0x01, 0x05, 0x06
_BPF_H, _BPF_B = 0x08, 0x10
_BPF_ABS, _BPF_IND, _BPF_MSH = 0x20, 0x40, 0xA0
_BPF_JEQ, _BPF_K = 0x10, 0x00
_SO_ATTACH_FILTER = 26  # <asm-generic/socket.h>
_INSN = struct.Struct("=HBBI")  # struct sock_filter: code, jt, jf, k


def echo_reply_filter(ident: int, seq: int, *, ipv6: bool) -> bytes:
    """A classic BPF program (an array of ``struct sock_filter``) for a raw ICMP socket that
    accepts only the messages with identifier ``ident`` and sequence number ``seq`` (bytes 4-7
    of the ICMP header, RFC 792 / RFC 4443 section 4.2) and drops every other.

    An IPv4 raw socket's filter sees the IP header first (its length from the IHL field: the
    ``BPF_MSH`` load); an ICMPv6 raw socket's sees the ICMPv6 message.  The message type is
    left to ``ICMP_FILTER``/``ICMP6_FILTER`` (`open_icmp_socket`).

    Raises:
        ValueError: ident or seq out of 0..65535.
    """
    if not (0 <= ident <= 0xFFFF and 0 <= seq <= 0xFFFF):
        raise ValueError("ident and seq are 16-bit values")
    if ipv6:
        mode, start = _BPF_ABS, []
    else:
        mode, start = _BPF_IND, [(_BPF_LDX | _BPF_B | _BPF_MSH, 0, 0, 0)]  # X = 4 * (IP[0] & 0x0f)
    program = [
        *start,
        (_BPF_LD | _BPF_H | mode, 0, 0, 4),  # A = identifier
        (_BPF_JMP | _BPF_JEQ | _BPF_K, 0, 3, ident),
        (_BPF_LD | _BPF_H | mode, 0, 0, 6),  # A = sequence number
        (_BPF_JMP | _BPF_JEQ | _BPF_K, 0, 1, seq),
        (_BPF_RET | _BPF_K, 0, 0, 0xFFFF),  # accept (up to 65535 bytes)
        (_BPF_RET | _BPF_K, 0, 0, 0),  # drop
    ]
    return b"".join(_INSN.pack(*insn) for insn in program)


def filter_echo_reply(sock: socket.socket, ident: int, seq: int) -> None:
    """Attach `echo_reply_filter` to the raw ICMP or ICMPv6 socket ``sock`` (``SO_ATTACH_FILTER``,
    socket(7)); the kernel copies the program.

    Raises:
        OSError: the kernel refuses the filter.
        ValueError: ident or seq out of range.
    """
    program = echo_reply_filter(ident, seq, ipv6=sock.family == socket.AF_INET6)
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = struct.pack("@HP", len(program) // _INSN.size, ctypes.addressof(buffer))  # struct sock_fprog
    sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)


async def check_ping(target: CheckTarget) -> tuple[bool, str]:
    """Send one echo request to ``target.rip`` and wait for its reply (``target.rport`` is unused).

    Returns:
        ``(True, "echo reply")``, or ``(False, "65 ICMP messages that are not our echo reply")``
        (`MAX_STRAYS`).

    Raises:
        OSError: the socket cannot be opened, or sending or receiving failed (an ICMP host
            unreachable: ``EHOSTUNREACH``; no route: ``ENETUNREACH``...).
        ValueError: ``target.rip`` is not an IP address.
    """
    global _seq
    family, sockaddr = socket_address(target.rip, 0)
    ipv6 = family == socket.AF_INET6
    _seq = seq = (_seq + 1) & 0xFFFF
    loop = asyncio.get_running_loop()
    sock, raw = open_icmp_socket(family)
    try:
        sock.setblocking(False)
        report_icmp_errors(sock, family)
        ident = IDENT
        if raw:
            filter_echo_reply(sock, ident, seq)
        sock.connect(sockaddr)  # no packet; the kernel delivers this socket only the RIP's packets
        if not raw:
            ident = sock.getsockname()[1]  # the kernel's (see the module's docstring)
        await loop.sock_sendall(sock, encode_echo_request(ident, seq, PAYLOAD, ipv6=ipv6))
        for _ in range(MAX_STRAYS + 1):
            data = await loop.sock_recv(sock, _READ)
            if raw and not ipv6:
                reply = decode_echo_reply(data)
            else:
                reply = decode_echo_message(data, ipv6=ipv6)
            if reply == (ident, seq, PAYLOAD):
                return True, "echo reply"
    finally:
        sock.close()
    return False, f"{MAX_STRAYS + 1} ICMP messages that are not our echo reply"
