"""The NETLINK_GENERIC sockets of the IPVS layer, on the asyncio loop: the family lookup,
dumps (`DumpSocket`) and commands sent in batches (`CommandSocket`).

Every socket is created in the calling thread's network namespace and stays
bound to it. A netlink socket runs one dump at a time (the kernel answers a
second dump request with EBUSY while one is in progress), so `DumpSocket`
issues its dumps one after the other; each costs one send and a few
receives.

pyroute2 sends one command and waits for its answer before the next;
loading a table of 1,000 services x 20 real servers that way costs minutes
of CPU on a slow machine. `CommandSocket` sends up to `BATCH` encoded
commands in one ``sendmsg`` before reading their acknowledgements. The
kernel processes the messages of one datagram in order and answers each
(``netlink_rcv_skb`` in ``net/netlink/af_netlink.c``: an ``NLMSG_ERROR``
with 0 or -errno per message carrying ``NLM_F_ACK``), so a failure affects
only its own operation.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable, Sequence
from dataclasses import replace

from director.model import DestKey, IPVSStats, KernelDest, ServiceAttrs, ServiceKey

from .codec import (
    dest_dump_request,
    parse_dest_body,
    parse_dest_stats,
    parse_service_body,
    parse_service_stats,
    service_dump_request,
)
from .errors import IPVSError
from .netlink import getfamily_request, parse_acks, parse_family_id, split_answer, with_seq
from .uapi import GENL_ID_CTRL, NETLINK_CAP_ACK, NETLINK_GENERIC, SOL_NETLINK

#: Messages sent in one datagram before their acknowledgements are read.
BATCH = 128
#: Seconds to wait for the acknowledgements of one batch.
ACK_TIMEOUT = 30.0
#: Seconds to wait for the generic-netlink controller's answer to a family lookup.
LOOKUP_TIMEOUT = 5.0
#: ``SO_RCVBUFFORCE`` (``include/uapi/asm-generic/socket.h``) where Python's socket module lacks it.
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


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


async def resolve_family(name: str, timeout: float = LOOKUP_TIMEOUT) -> int:
    """The id (``nlmsg_type``) of the generic-netlink family ``name`` (e.g. ``"IPVS"``) in
    the calling thread's network namespace, asked of the controller on a socket of its own
    (CTRL_CMD_GETFAMILY, see `director.ipvs.netlink`).

    Args:
        timeout: seconds to wait for the answer.

    Raises:
        IPVSError: the kernel has no such family (``errno`` ENOENT), refused
            the request, did not answer within ``timeout`` seconds, answered
            something malformed, or the socket failed.
    """
    seq = 1
    try:
        sock = open_generic_netlink()
    except OSError as exc:
        raise IPVSError(f"cannot open a generic netlink socket: {exc}", code=exc.errno or 0) from None
    try:
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(sock, getfamily_request(name, seq))
        while True:
            data = await asyncio.wait_for(loop.sock_recv(sock, 65536), timeout)
            if not data:
                raise IPVSError("generic netlink socket closed during a family lookup")
            bodies, done = split_answer(data, GENL_ID_CTRL, seq)
            if bodies:
                return parse_family_id(bodies[0], name)
            if done:
                raise IPVSError(f"generic netlink controller acknowledged the lookup of {name!r} without an answer")
    except TimeoutError:
        raise IPVSError(f"no answer to the lookup of generic netlink family {name!r} in {timeout:g} s") from None
    except OSError as exc:
        raise IPVSError(f"generic netlink family lookup failed: {exc}", code=exc.errno or 0) from None
    finally:
        sock.close()


class DumpSocket:
    """A plain non-blocking NETLINK_GENERIC socket that runs IPVS dumps on the asyncio loop.

    Create it in the network namespace whose table it should read (the socket
    stays bound to that namespace).  Dumps run one at a time (an internal
    lock serialises concurrent callers), since a netlink socket has at most
    one dump in progress.

    Args:
        family_id: the IPVS generic-netlink family id (`resolve_family`).
        rcvbuf: requested SO_RCVBUF in bytes.

    Raises:
        OSError: the socket cannot be created.
    """

    RECV_SIZE = 65536  # bytes per recv; the kernel fills dump skbs up to 32 KiB

    def __init__(self, family_id: int, rcvbuf: int = 1 << 20) -> None:
        self.family_id = family_id
        self._sock = open_generic_netlink(lambda sock: sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf))
        self._seq = 0
        self._lock = asyncio.Lock()

    def close(self) -> None:
        """Close the socket (idempotent)."""
        self._sock.close()

    async def bodies(self, request_for_seq: Callable[[int], bytes]) -> list[memoryview]:
        """The answer messages (attributes after the genl header) of the dump that
        ``request_for_seq(seq)`` asks for; the caller decodes them.

        Raises:
            IPVSError: the kernel refused the dump, its answer is malformed, or
                the socket failed.
        """
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
                        raise IPVSError("IPVS netlink socket closed during a dump")
                    more, done = split_answer(data, self.family_id, seq)
                    bodies.extend(more)
            except OSError as exc:
                raise IPVSError(f"IPVS dump I/O failed: {exc}", code=exc.errno or 0) from None
            return bodies

    async def services(self) -> list[tuple[ServiceKey, ServiceAttrs]]:
        """Every virtual service of the namespace, as `parse_service_body` decodes them.

        Raises:
            IPVSError: the kernel refused the dump, or its answer is malformed.
        """
        bodies = await self.bodies(lambda seq: service_dump_request(self.family_id, seq))
        return [parse_service_body(b) for b in bodies]

    async def services_with_stats(self) -> list[tuple[ServiceKey, ServiceAttrs, IPVSStats]]:
        """Every virtual service with its traffic counters (`parse_service_stats`).

        Raises:
            IPVSError: the kernel refused the dump, or its answer is malformed.
        """
        bodies = await self.bodies(lambda seq: service_dump_request(self.family_id, seq))
        return [(*parse_service_body(b), parse_service_stats(b)) for b in bodies]

    async def dests(self, key: ServiceKey, *, stats: bool = False) -> dict[DestKey, KernelDest]:
        """The destinations of one service, as `parse_dest_body` decodes them; with ``stats``,
        each with its traffic counters (`parse_dest_stats`).

        Raises:
            IPVSError: the kernel refused (errno ESRCH when the service is
                gone), or its answer is malformed; errno EINVAL when ``key``
                cannot be encoded.
        """
        try:
            request = dest_dump_request(self.family_id, 0, key)
        except (ValueError, OSError) as exc:
            raise IPVSError(f"cannot name service {key}: {exc}", code=errno.EINVAL) from None
        bodies = await self.bodies(lambda seq: with_seq(request, seq))
        if not stats:
            return dict(parse_dest_body(b, key.family) for b in bodies)
        dests: dict[DestKey, KernelDest] = {}
        for b in bodies:
            dkey, dest = parse_dest_body(b, key.family)
            dests[dkey] = replace(dest, stats=parse_dest_stats(b))
        return dests


def _command_socket_options(sock: socket.socket) -> None:
    """Room for every acknowledgement of a batch (root may exceed rmem_max), and
    NETLINK_CAP_ACK so that error acks do not echo the whole request."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 1 << 21)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
    try:
        sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
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
                chunk = messages[start : start + self.batch]
                seqs = []
                parts = []
                for msg in chunk:
                    self._seq = (self._seq % 0x7FFFFFFF) + 1
                    seqs.append(self._seq)
                    parts.append(with_seq(msg, self._seq))
                await loop.sock_sendall(self._sock, b"".join(parts))
                self.sent += len(parts)
                pending = set(seqs)
                answers: dict[int, int] = {}
                while pending:
                    try:
                        data = await asyncio.wait_for(loop.sock_recv(self._sock, 1 << 20), ACK_TIMEOUT)
                    except TimeoutError:
                        raise OSError(
                            f"no acknowledgement for {len(pending)} IPVS command(s) in {ACK_TIMEOUT:g} s"
                        ) from None
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
