"""Probing I/O for the HA layer: ICMP echo to ping nodes, carrier of interfaces.

* `Pinger` sends one ICMP (RFC 792) / ICMPv6 (RFC 4443) echo request to each
  ping node every ``interval`` seconds from raw sockets (root, as heartbeat's
  ``ping`` medium does) and counts an answer within ``timeout`` seconds as
  success, through `ha.connectivity.PingTracker` (rise/fall); the echo codec
  is `checks.protocols.icmp`'s.
* `LinkMonitor` polls the carrier state of named interfaces over rtnetlink
  every `LINK_POLL_INTERVAL` seconds (``IFLA_CARRIER`` and ``IFF_UP``, via
  pyroute2, `ha.rtnl`), as bonding's ``miimon`` does.

Both run on the daemon's event loop in the daemon's network namespace and call
``on_change()`` (no arguments) after a state changed. Neither raises after
``start``; errors are logged on ``directord.ha``.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable

from checks.protocols.icmp import decode_echo_reply, encode_echo_request
from ha.connectivity import PingTracker
from ha.rtnl import NLM_F_REQUEST, RTM_GETLINK, async_iproute, netlink_error

log = logging.getLogger("directord.ha")

__all__ = ["ProbeError", "Pinger", "LinkMonitor", "LINK_POLL_INTERVAL"]

#: Seconds between two polls of the monitored links (bonding's usual miimon=100).
LINK_POLL_INTERVAL = 0.1
_MAGIC = b"directord-ping"
_IFF_UP = 0x1
#: send errors that only mean "not reachable now" (no route, no carrier, neighbour queue full)
_QUIET_SEND_ERRORS = (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EADDRNOTAVAIL, errno.ENOBUFS)


class ProbeError(RuntimeError):
    """A probe socket cannot be opened (the message names the socket and the reason)."""


class Pinger:
    """ICMP echo probing of ping nodes with rise/fall counting.

    Args:
        targets: IPv4 / IPv6 addresses (text).
        interval: seconds between two probes of one target.
        timeout: seconds an echo reply may take (<= interval).
        rise / fall: see `PingTracker`.
        on_change: called after a target became reachable or unreachable.

    Attributes:
        trackers: address -> `PingTracker` (``reachable``, ``sent``, ``answered``).
    """

    def __init__(
        self,
        targets: Iterable[str],
        *,
        interval: float,
        timeout: float,
        rise: int,
        fall: int,
        on_change: Callable[[], None],
    ) -> None:
        self.targets = [str(ipaddress.ip_address(t)) for t in targets]
        self.interval = interval
        self.timeout = timeout
        self.trackers = {t: PingTracker(rise, fall) for t in self.targets}
        self._on_change = on_change
        self._ident = (os.getpid() ^ int.from_bytes(os.urandom(2), "big")) & 0xFFFF
        self._seq = 0
        self._pending: dict[tuple[str, int], asyncio.TimerHandle] = {}
        self._socks: dict[int, socket.socket] = {}
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def reachable(self) -> int:
        """Number of targets currently reachable."""
        return sum(1 for t in self.trackers.values() if t.reachable)

    async def start(self) -> None:
        """Open the raw sockets and start probing.

        Raises:
            ProbeError: a raw ICMP / ICMPv6 socket cannot be opened (needs
                CAP_NET_RAW).
        """
        self._loop = asyncio.get_running_loop()
        families = {ipaddress.ip_address(t).version for t in self.targets}
        try:
            if 4 in families:
                s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
                self._socks[4] = s
            if 6 in families:
                s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
                self._socks[6] = s
        except OSError as exc:
            self.close()
            raise ProbeError(f"cannot open a raw ICMP socket for the ping nodes: {exc.strerror or exc}") from exc
        for version, s in self._socks.items():
            s.setblocking(False)
            self._loop.add_reader(s.fileno(), self._readable, version)
        self._task = self._loop.create_task(self._run(), name="ha-ping")

    def close(self) -> None:
        """Stop probing and close the sockets (idempotent)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        for handle in self._pending.values():
            handle.cancel()
        self._pending.clear()
        for s in self._socks.values():
            if self._loop is not None:
                try:
                    self._loop.remove_reader(s.fileno())
                except (ValueError, OSError):
                    pass
            s.close()
        self._socks.clear()

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            for target in self.targets:
                self._probe(target)
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    def _probe(self, target: str) -> None:
        assert self._loop is not None
        self._seq = (self._seq + 1) & 0xFFFF
        seq = self._seq
        version = ipaddress.ip_address(target).version
        packet = encode_echo_request(self._ident, seq, _MAGIC, ipv6=version == 6)
        try:
            self._socks[version].sendto(packet, (target, 0))
        except OSError as exc:
            # no route or no carrier: a missed probe, at once
            if exc.errno not in _QUIET_SEND_ERRORS:
                log.warning("ping node %s: sending a probe failed: %s", target, exc.strerror or exc)
            self._result(target, False)
            return
        self._pending[(target, seq)] = self._loop.call_later(self.timeout, self._expired, target, seq)

    def _expired(self, target: str, seq: int) -> None:
        if self._pending.pop((target, seq), None) is not None:
            self._result(target, False)

    def _readable(self, version: int) -> None:
        s = self._socks.get(version)
        if s is None:
            return
        for _ in range(64):
            try:
                data, addr = s.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("ping socket: %s", exc)
                return
            reply = decode_echo_reply(data, ipv6=version == 6)
            if reply is None:
                continue
            ident, seq, payload = reply
            if ident != self._ident or payload != _MAGIC:
                continue
            try:
                source = str(ipaddress.ip_address(addr[0].split("%", 1)[0]))
            except ValueError:
                continue
            handle = self._pending.pop((source, seq), None)
            if handle is not None:
                handle.cancel()
                self._result(source, True)

    def _result(self, target: str, answered: bool) -> None:
        tracker = self.trackers[target]
        if tracker.record(answered):
            if tracker.reachable:
                log.info("ping node %s is reachable again (%d answered in a row)", target, tracker.rise)
            else:
                log.warning("ping node %s is unreachable (%d probes unanswered in a row)", target, tracker.fall)
            try:
                self._on_change()
            except Exception:
                log.exception("ping state callback failed")

    def stats(self) -> list[dict]:
        """``[{"address", "reachable", "sent", "answered"}]`` for the status document."""
        return [
            {"address": t, "reachable": tr.reachable, "sent": tr.sent, "answered": tr.answered}
            for t, tr in self.trackers.items()
        ]


class LinkMonitor:
    """Carrier state of named interfaces, polled over rtnetlink (bonding's miimon way).

    Args:
        interfaces: interface names to watch.
        on_change: called after the state of a watched interface changed.
        interval: seconds between two polls (default `LINK_POLL_INTERVAL`,
            bonding's usual ``miimon=100``).

    Each poll is one ``RTM_GETLINK`` per interface (``IFLA_CARRIER`` and
    ``IFF_UP``), sent without ``NLM_F_ACK`` (see `_poll`: memory stays flat);
    `polls` counts the polls done. `state` maps each name to True (administratively up with
    carrier), False (down, or no carrier) or None (no such interface).
    """

    def __init__(
        self, interfaces: Iterable[str], on_change: Callable[[], None], interval: float = LINK_POLL_INTERVAL
    ) -> None:
        self.interfaces = sorted(set(interfaces))
        self.state: dict[str, bool | None] = {name: None for name in self.interfaces}
        self.interval = interval
        self._on_change = on_change
        self._ipr = None
        self._task: asyncio.Task | None = None
        self.polls = 0

    def up(self, ifname: str) -> bool:
        """True when `ifname` is watched, present, up and has carrier."""
        return bool(self.state.get(ifname))

    async def start(self) -> None:
        """Read the current state and start polling.

        Raises:
            ProbeError: rtnetlink cannot be opened.
        """
        try:
            self._ipr = async_iproute()
            await self._poll(notify=False)
        except Exception as exc:
            self.close()
            raise ProbeError(f"cannot read the links {', '.join(self.interfaces)} over rtnetlink: {exc}") from exc
        self._task = asyncio.get_running_loop().create_task(self._run(), name="ha-links")

    def close(self) -> None:
        """Stop watching (idempotent)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._ipr is not None:
            try:
                self._ipr.close()
            except Exception:
                pass
        self._ipr = None

    def _set(self, name: str, value: bool | None, notify: bool) -> None:
        old = self.state.get(name)
        if old == value:
            return
        self.state[name] = value
        if old is not None or value is not True:
            word = {True: "up", False: "down (no carrier)", None: "gone"}[value]
            log.log(logging.INFO if value else logging.WARNING, "link %s is %s", name, word)
        if notify:
            try:
                self._on_change()
            except Exception:
                log.exception("link state callback failed")

    async def _poll(self, notify: bool = True) -> None:
        assert self._ipr is not None
        for name in self.interfaces:
            try:
                # NLM_F_REQUEST alone, not pyroute2's "get" (which adds NLM_F_ACK): its response
                # ends at the RTM_NEWLINK reply, and the kernel's acknowledgement that follows
                # stays in the socket's catch-all queue for good (pyroute2 0.9: about 1.6 KiB of
                # RSS per poll, 50 MB an hour at 10 polls a second). An error still comes back.
                reply = await self._ipr.link((RTM_GETLINK, NLM_F_REQUEST), ifname=name)
            except netlink_error() as exc:
                if exc.code != errno.ENODEV:
                    raise
                self._set(name, None, notify)
                continue
            msg = reply[0]
            self._set(name, bool(msg["flags"] & _IFF_UP) and msg.get_attr("IFLA_CARRIER") == 1, notify)
        self.polls += 1

    async def _run(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self._poll()
                failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep watching
                if not failing:
                    log.warning("link monitor: %s: %s", type(exc).__name__, exc)
                failing = True
