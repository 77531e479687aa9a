"""Heartbeat media: the UDP sockets a node's packets travel on (bcast, mcast, ucast).

One socket per `ha.model.Medium`, created in the network namespace of the
calling thread (the daemon's), each used both to send and to receive:

* ``bcast`` (heartbeat ``lib/plugins/HBcomm/bcast.c``): bound to
  ``('', port)`` with ``SO_BINDTODEVICE`` to the interface, ``SO_BROADCAST``
  and ``SO_DONTROUTE``; sends to the interface's IPv4 broadcast address
  (``IFA_BROADCAST``, read over rtnetlink with pyroute2 when the medium
  opens). An interface without a broadcast address is refused: heartbeat
  would send to 0.0.0.0 and the nodes would never hear each other.
* ``mcast`` (``mcast.c``): bound to ``(group, port)`` and to the interface,
  joined to the group on it (``IP_ADD_MEMBERSHIP`` with an ``ip_mreqn`` naming
  the ifindex), ``IP_MULTICAST_IF`` / ``IP_MULTICAST_TTL`` /
  ``IP_MULTICAST_LOOP`` as configured; sends to ``(group, port)``.
* ``ucast`` (``ucast.c``): bound to ``('', port)`` and to the interface; sends
  to ``(peer, port)``.

Every socket has ``SO_REUSEADDR`` so that several media may share a port
(bcast and ucast on one interface, as heartbeat allows). Received datagrams
of every medium go to one callback, ``on_packet(payload, source)`` with
``source`` as ``"ADDRESS:PORT"``; our own broadcasts come back too, and the
node recognises and drops them (``ha.node`` counts them as ``own``). Sending
never raises: a refusal (link down, no route, buffer full) is logged, at most
once per medium and errno every 10 seconds, and counted.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import ipaddress
import logging
import socket
import struct
import time
from collections.abc import Callable, Sequence

from ha.model import Medium
from ha.rtnl import async_iproute

log = logging.getLogger("directord.ha")

__all__ = ["MediumError", "MediumSocket", "Media", "broadcast_address", "open_medium"]

#: Largest datagram read (heartbeat's MAXMSG is 40000 bytes; a UDP datagram can be 65507).
MAX_DATAGRAM = 65535
#: Most datagrams handled per wake-up of a medium's reader.
RECEIVE_BATCH = 64
#: Time budget of one wake-up of a medium's reader (seconds): past it the reader
#: returns to the event loop, so timers (keepalives, deadtime) and sends run on
#: time under a flood; what is left in the socket is read at the next wake-up.
RECEIVE_BUDGET = 0.005
#: Receive buffer asked of the kernel per socket (bytes; SO_RCVBUFFORCE as root,
#: else SO_RCVBUF within net.core.rmem_max): a burst of forged datagrams is
#: absorbed instead of pushing the peer's keepalives out of a full queue.
RECEIVE_BUFFER = 1 << 20
#: Most peer sources (address and port) given a receive socket of their own, per medium.
MAX_PEER_SOURCES = 8
#: Datagrams from learned peers remembered per medium to deliver each broadcast once.
RECENT_PEER_DATAGRAMS = 512
_LOG_INTERVAL = 10.0


class MediumError(OSError):
    """A medium cannot be opened: no such interface, no broadcast address, bind refused.

    ``str(err)`` names the medium (``"bcast eth1: ..."``); ``medium`` holds it.
    """

    def __init__(self, medium: Medium, reason: str, err: int = errno.EINVAL) -> None:
        super().__init__(err, f"{describe(medium)}: {reason}")
        self.medium = medium


def describe(medium: Medium) -> str:
    """The medium as an ha.cf-style line: ``bcast eth1``, ``mcast eth1 239.0.0.1 694``, ``ucast eth0 10.0.0.2``."""
    if medium.kind == "bcast":
        return f"bcast {medium.interface}"
    if medium.kind == "mcast":
        return f"mcast {medium.interface} {medium.group} {medium.port}"
    return f"ucast {medium.interface} {medium.peer}"


async def broadcast_address(ifname: str) -> str | None:
    """The first IPv4 broadcast address (``IFA_BROADCAST``) configured on ``ifname``, or None.

    Read with pyroute2's ``AsyncIPRoute`` (`ha.rtnl`) in the current network namespace.

    Raises:
        OSError: (``ENODEV``) no such interface here.
    """
    async with async_iproute() as ipr:
        idx = await ipr.link_lookup(ifname=ifname)
        if not idx:
            raise OSError(errno.ENODEV, f"no such network interface {ifname!r}")
        for msg in [m async for m in await ipr.get_addr(family=socket.AF_INET, index=idx[0])]:
            brd = msg.get_attr("IFA_BROADCAST")
            if brd and brd != "0.0.0.0":
                return brd
    return None


class MediumSocket:
    """One open medium: its socket and where it sends.

    Attributes:
        medium: the configuration.
        sock: the non-blocking UDP socket (send and receive).
        destination: ``(address, port)`` datagrams go to.
        sent / send_errors / received: counters.
        budget_exhausted: wake-ups that stopped reading at `RECEIVE_BUDGET`
            with datagrams possibly left in the socket (a flood).
        copies_dropped: datagrams from a learned peer's address not delivered
            because the same bytes were delivered lately (`seen_before`): about one
            per broadcast of the peer's; far more means the same datagram came
            over and over (a replay flood under the peer's address).
    """

    def __init__(self, medium: Medium, sock: socket.socket, destination: tuple[str, int]) -> None:
        self.medium = medium
        self.sock = sock
        self.destination = destination
        self.sent = 0
        self.send_errors = 0
        self.received = 0
        self.budget_exhausted = 0
        self.copies_dropped = 0
        #: (address, port) of an authenticated peer -> the socket connected to it
        self.peer_socks: dict[tuple[str, int], socket.socket] = {}
        self._recent: collections.deque[int] = collections.deque()
        self._recent_set: set[int] = set()
        self._logged: dict[int, float] = {}

    def send(self, payload: bytes) -> bool:
        """Send one datagram; False (logged, rate-limited) if the kernel refused it. Never raises."""
        try:
            self.sock.sendto(payload, self.destination)
        except OSError as exc:
            self.send_errors += 1
            code = exc.errno or 0
            now = time.monotonic()
            if now - self._logged.get(code, -_LOG_INTERVAL) >= _LOG_INTERVAL:
                self._logged[code] = now
                log.warning(
                    "heartbeat medium %s: sending to %s:%d failed: %s",
                    describe(self.medium),
                    *self.destination,
                    exc.strerror or exc,
                )
            return False
        self.sent += 1
        return True

    def seen_before(self, data: bytes) -> bool:
        """True if the same datagram from a learned peer was delivered lately (one of the last
        `RECENT_PEER_DATAGRAMS`), else remember it and return False.

        A peer's broadcast reaches both the medium's shared socket and the peer's own one;
        whichever is read first delivers it. Comparing contents, not the socket, also
        delivers the datagrams that were already queued on the shared socket when the
        peer's own socket was opened (none lost at that moment). Identical copies a peer
        sends on purpose (heartbeat's repeated statuses) are duplicates to the node anyway.
        """
        digest = hash(data)
        if digest in self._recent_set:
            return True
        self._recent.append(digest)
        self._recent_set.add(digest)
        if len(self._recent) > RECENT_PEER_DATAGRAMS:
            self._recent_set.discard(self._recent.popleft())
        return False

    def close(self) -> None:
        """Close the socket and the peer sockets (idempotent)."""
        self.sock.close()
        for ps in self.peer_socks.values():
            ps.close()
        self.peer_socks.clear()


def _ifindex(medium: Medium) -> int:
    try:
        return socket.if_nametoindex(medium.interface)
    except OSError as exc:
        raise MediumError(medium, f"no such network interface {medium.interface!r}", errno.ENODEV) from exc


def _grow_receive_buffer(sock: socket.socket) -> None:
    """Ask for `RECEIVE_BUFFER` bytes of receive buffer; a refusal keeps the default."""
    force = getattr(socket, "SO_RCVBUFFORCE", 33)  # asm-generic/socket.h
    try:
        sock.setsockopt(socket.SOL_SOCKET, force, RECEIVE_BUFFER)
    except OSError:  # not CAP_NET_ADMIN: capped by net.core.rmem_max
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        except OSError:
            pass


async def open_medium(medium: Medium) -> MediumSocket:
    """Open the socket of one medium (see the module notes for the options).

    Raises:
        MediumError: no such interface, a bcast interface without a broadcast
            address, an unknown kind, or a socket option / bind refused.
    """
    ifindex = _ifindex(medium)
    if medium.kind == "bcast":
        try:
            brd = await broadcast_address(medium.interface)
        except OSError as exc:
            raise MediumError(medium, str(exc), exc.errno or errno.ENODEV) from exc
        if brd is None:
            raise MediumError(
                medium,
                f"interface {medium.interface!r} has no IPv4 address with a broadcast address "
                f"(add one with 'ip addr add ADDRESS/PREFIX brd + dev {medium.interface}')",
                errno.EADDRNOTAVAIL,
            )
        destination = (brd, medium.port)
    elif medium.kind == "mcast":
        if medium.group is None:
            raise MediumError(medium, "no multicast group")
        destination = (medium.group, medium.port)
    elif medium.kind == "ucast":
        if medium.peer is None:
            raise MediumError(medium, "no peer address")
        destination = (medium.peer, medium.port)
    else:
        raise MediumError(medium, f"unknown medium kind {medium.kind!r}")

    sock = _bound_socket(medium, ifindex, destination[0])
    return MediumSocket(medium, sock, destination)


def _bound_socket(medium: Medium, ifindex: int, broadcast: str, peer: tuple[str, int] | None = None) -> socket.socket:
    """The medium's UDP socket, bound and set up; with `peer`, connected to it.

    A bcast socket connected to a peer is bound to the `broadcast` address, not
    the wildcard: ``connect`` would otherwise bind it to the route's source
    address, and the kernel delivers a broadcast only to sockets whose local
    address is the wildcard or the broadcast address (``__udp_is_mcast_sock``).

    Raises:
        MediumError: a socket option, bind or connect refused.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        _grow_receive_buffer(sock)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, medium.interface.encode())
        if medium.kind == "bcast":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_DONTROUTE, 1)
            sock.bind(("" if peer is None else broadcast, medium.port))
        elif medium.kind == "mcast":
            group = ipaddress.IPv4Address(medium.group).packed
            # struct ip_mreqn (include/uapi/linux/in.h): group, local address, ifindex
            mreqn = group + bytes(4) + struct.pack("@i", ifindex)
            sock.bind((medium.group, medium.port))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, int(medium.ttl))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1 if medium.loop else 0)
        else:
            sock.bind(("", medium.port))
        if peer is not None:
            sock.connect(peer)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        reason = f"cannot set up the socket: {exc.strerror or exc}"
        raise MediumError(medium, reason, exc.errno or errno.EINVAL) from exc
    return sock


class Media:
    """Every medium of a node: one receive path, one send call.

    Args:
        media: the configured media (at least one).
        on_packet: called as ``on_packet(payload: bytes, source: str)`` for
            every datagram received on any medium, from the event loop;
            ``source`` is ``"ADDRESS:PORT"``. Exceptions it raises are logged.

    Use ``await start()`` (opens all sockets, or none: `MediumError` on the
    first that fails), ``send(payload)``, ``close()``.
    """

    def __init__(self, media: Sequence[Medium], on_packet: Callable[[bytes, str], None]) -> None:
        self.media = tuple(media)
        self._on_packet = on_packet
        self.sockets: list[MediumSocket] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        """Open every medium and start receiving.

        Raises:
            MediumError: a medium cannot be opened (those already open are closed).
            RuntimeError: already started.
        """
        if self.sockets:
            raise RuntimeError("media already started")
        loop = asyncio.get_running_loop()
        opened: list[MediumSocket] = []
        try:
            for medium in self.media:
                opened.append(await open_medium(medium))
        except BaseException:
            for ms in opened:
                ms.close()
            raise
        self._loop = loop
        self.sockets = opened
        for ms in opened:
            loop.add_reader(ms.sock.fileno(), self._readable, ms, ms.sock, True)
            log.info("heartbeat medium %s open, sending to %s:%d", describe(ms.medium), *ms.destination)

    def learn_peer(self, source: str) -> None:
        """Give the authenticated peer at `source` (``"ADDRESS:PORT"``) a receive queue of its own.

        On every medium, a second socket with the same options and binding is
        connected to the peer's address and port: the kernel delivers the
        peer's datagrams to it (a connected UDP socket is the better match for
        unicast, and one more receiver of a broadcast or multicast), so a flood
        from any other source fills the medium's socket, not this one, and the
        peer's keepalives are never dropped behind it. Each of the peer's
        broadcasts reaches both sockets and is delivered once (`MediumSocket.seen_before`). At most
        `MAX_PEER_SOURCES` per medium (a restarted heartbeat peer sends from a
        new port); a socket that cannot be opened is logged and skipped.
        """
        address, _, port_text = source.rpartition(":")
        try:
            peer = (str(ipaddress.IPv4Address(address)), int(port_text))
        except ValueError:
            return
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        for ms in self.sockets:
            if peer in ms.peer_socks or len(ms.peer_socks) >= MAX_PEER_SOURCES:
                continue
            try:
                sock = _bound_socket(ms.medium, _ifindex(ms.medium), ms.destination[0], peer)
            except MediumError as exc:
                log.warning(
                    "heartbeat medium %s: no receive socket of its own for peer %s:%d: %s",
                    describe(ms.medium),
                    *peer,
                    exc,
                )
                continue
            ms.peer_socks[peer] = sock
            loop.add_reader(sock.fileno(), self._readable, ms, sock, False)
            log.info("heartbeat medium %s: peer %s:%d has a receive socket of its own", describe(ms.medium), *peer)

    def _readable(self, ms: MediumSocket, sock: socket.socket, shared: bool) -> None:
        # bounded in count and time: under a flood the loop still runs timers
        deadline = time.monotonic() + RECEIVE_BUDGET
        for _ in range(RECEIVE_BATCH):
            if time.monotonic() >= deadline:
                ms.budget_exhausted += 1
                return
            try:
                data, addr = sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. ICMP errors reported on the socket
                log.debug("heartbeat medium %s: receive error: %s", describe(ms.medium), exc)
                return
            if addr in ms.peer_socks and ms.seen_before(data):
                ms.copies_dropped += (
                    1  # the other copy of a broadcast, which the peer's own socket or the shared one had
                )
                continue
            ms.received += 1
            try:
                self._on_packet(data, f"{addr[0]}:{addr[1]}")
            except Exception:
                log.exception("heartbeat packet handler failed")

    def send(self, payload: bytes) -> int:
        """Send ``payload`` on every medium; returns on how many it went out. Never raises."""
        return sum(1 for ms in self.sockets if ms.send(payload))

    def close(self) -> None:
        """Stop receiving and close every socket (idempotent)."""
        for ms in self.sockets:
            if self._loop is not None and not self._loop.is_closed():
                for sock in (ms.sock, *ms.peer_socks.values()):
                    try:
                        self._loop.remove_reader(sock.fileno())
                    except (ValueError, OSError):
                        pass
            ms.close()
        self.sockets = []

    def stats(self) -> list[dict]:
        """Per medium: ``{"medium", "destination", "sent", "send_errors", "received", "budget_exhausted",
        "copies_dropped", "peer_sources"}`` (counts since start; `MediumSocket` says what each counts)."""
        return [
            {
                "medium": describe(ms.medium),
                "destination": f"{ms.destination[0]}:{ms.destination[1]}",
                "sent": ms.sent,
                "send_errors": ms.send_errors,
                "received": ms.received,
                "budget_exhausted": ms.budget_exhausted,
                "copies_dropped": ms.copies_dropped,
                "peer_sources": [f"{a}:{p}" for a, p in ms.peer_socks],
            }
            for ms in self.sockets
        ]
