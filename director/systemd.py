"""systemd integration: readiness, status, reload and stop notifications, and the watchdog.

The notification protocol (sd_notify(3)) is one datagram on the ``AF_UNIX``
socket named by ``$NOTIFY_SOCKET``: newline-separated ``VARIABLE=VALUE``
assignments (``READY=1``, ``STATUS=...``, ``RELOADING=1``, ``STOPPING=1``,
``WATCHDOG=1``, ``MONOTONIC_USEC=...``).  A name starting with ``@`` is in the
abstract namespace (the ``@`` stands for a leading NUL byte).  The service
manager reads the sender's PID from the socket credentials; with
``NotifyAccess=main`` (systemd.service(5)) only the main process is listened
to, so the daemon sends from its own process and removes the variables from
its environment (sd_notify(3)'s ``unset_environment``), so that neither the
checker child nor an external check inherits them.  Without ``$NOTIFY_SOCKET``
nothing is sent, and nothing fails.

The watchdog (sd_watchdog_enabled(3); ``WatchdogSec=`` in systemd.service(5)):
``$WATCHDOG_USEC`` is the timeout in microseconds; ``$WATCHDOG_PID``, when
set, names the one process that must send ``WATCHDOG=1`` (another process's
watchdog is not ours to feed).  sd_watchdog_enabled(3) recommends sending at
half the timeout; the feeding here is a timer of the daemon's event loop, so a
loop that is stuck (a blocking call, an endless loop, a deadlock) stops
feeding and the service manager restarts the daemon.

Sending never blocks the event loop (a non-blocking datagram socket) and never
raises: an error is logged once per kind (errno) and the daemon goes on.

``RELOADING=1`` carries ``MONOTONIC_USEC`` (``CLOCK_MONOTONIC`` in
microseconds), which systemd 253 and later require to accept it
(``Type=notify-reload``); older managers (Debian 12 ships 252) ignore the extra
field.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import re
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import TypeVar

log = logging.getLogger("directord.systemd")

#: The environment variables read (and then removed) by `Notifier.from_environ`.
NOTIFY_SOCKET = "NOTIFY_SOCKET"
WATCHDOG_USEC = "WATCHDOG_USEC"
WATCHDOG_PID = "WATCHDOG_PID"

#: Seconds between two looks at whether the status line changed (so at most one STATUS= a second).
STATUS_INTERVAL = 1.0
#: Seconds after which the status line is worked out again even when no event was published.
STATUS_REFRESH = 30.0
#: Longest STATUS= text sent (characters); a longer one is cut with "...".
STATUS_MAX = 200

_VARIABLE = re.compile(r"[A-Z][A-Z0-9_]*\Z")

T = TypeVar("T")


def socket_address(value: str) -> str | bytes:
    """The address to send to for a ``$NOTIFY_SOCKET`` value (sd_notify(3)).

    ``@name`` is the abstract socket ``name`` (returned as bytes with a leading
    NUL); an absolute path is returned unchanged.

    Raises:
        ValueError: empty, relative, or another scheme (``vsock:``, which
            systemd 254 added for virtual machines, is not supported here).
    """
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    raise ValueError(f"unsupported {NOTIFY_SOCKET} {value!r} (neither an absolute path nor @abstract)")


def message(fields: Mapping[str, str | int]) -> bytes:
    """The datagram for ``fields`` in order: ``VARIABLE=VALUE`` lines, UTF-8 (sd_notify(3)).

    A value's newlines become spaces (a newline ends an assignment).

    Raises:
        ValueError: a variable name that is not upper case letters, digits and ``_``.
    """
    lines = []
    for name, value in fields.items():
        if not _VARIABLE.match(name):
            raise ValueError(f"not a notification variable: {name!r}")
        text = str(value).replace("\r", " ").replace("\n", " ")
        lines.append(f"{name}={text}")
    return "\n".join(lines).encode("utf-8", "replace")


def _status(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= STATUS_MAX else text[: STATUS_MAX - 3] + "..."


def ready_message(status: str | None = None) -> bytes:
    """``READY=1``, with ``STATUS=`` when ``status`` is given: start-up or a reload is done."""
    fields: dict[str, str | int] = {"READY": 1}
    if status is not None:
        fields["STATUS"] = _status(status)
    return message(fields)


def reloading_message(monotonic_usec: int, status: str = "reloading the configuration") -> bytes:
    """``RELOADING=1`` with ``MONOTONIC_USEC`` (microseconds of ``CLOCK_MONOTONIC``, see
    `monotonic_usec`, taken when the reload starts) and ``STATUS=``."""
    return message({"RELOADING": 1, "MONOTONIC_USEC": monotonic_usec, "STATUS": _status(status)})


def stopping_message(status: str = "stopping") -> bytes:
    """``STOPPING=1`` and ``STATUS=``: the daemon has begun to stop."""
    return message({"STOPPING": 1, "STATUS": _status(status)})


def status_message(status: str) -> bytes:
    """``STATUS=`` alone: a short human-readable state, shown by ``systemctl status``."""
    return message({"STATUS": _status(status)})


#: The watchdog keep-alive (sd_notify(3)).
WATCHDOG_MESSAGE = b"WATCHDOG=1"


def monotonic_usec() -> int:
    """``CLOCK_MONOTONIC`` in microseconds, the clock of ``MONOTONIC_USEC`` (sd_notify(3))."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between two ``WATCHDOG=1``: half of ``$WATCHDOG_USEC`` (sd_watchdog_enabled(3)).

    None when there is no watchdog for process ``pid``: ``$WATCHDOG_USEC``
    unset, not a positive integer (microseconds), or ``$WATCHDOG_PID`` set to
    another process (or to something that is not a PID).  Never raises.
    """
    usec = environ.get(WATCHDOG_USEC)
    if not usec:
        return None
    try:
        timeout = int(usec)
    except ValueError:
        return None
    if timeout <= 0:
        return None
    owner = environ.get(WATCHDOG_PID)
    if owner:
        try:
            if int(owner) != pid:
                return None
        except ValueError:
            return None
    return timeout / 2 / 1_000_000


def status_line(services: int, up: int, total: int, ha: str | None = None) -> str:
    """The daemon's one-line ``STATUS=``, e.g. ``3 virtual services, 12/14 real servers up, HA active``.

    ``services``: configured virtual services; ``up``/``total``: real servers
    healthy / configured; ``ha``: the HA part (without the ``HA`` prefix), None
    without an ``ha`` section.
    """
    parts = [
        f"{services} virtual service{'' if services == 1 else 's'}",
        f"{up}/{total} real server{'' if total == 1 else 's'} up",
    ]
    if ha is not None:
        parts.append(f"HA {ha}")
    return ", ".join(parts)


class Notifier:
    """Sends notifications to the service manager, feeds its watchdog and keeps ``STATUS=`` current.

    Args:
        address: where to send (`socket_address`), None: nowhere (every method is then a no-op).
        watchdog: seconds between two ``WATCHDOG=1`` (`watchdog_interval`), None: no watchdog.

    For the event loop's thread (its timers run there); `send` alone may be called from any thread.
    """

    def __init__(self, address: str | bytes | None, watchdog: float | None = None) -> None:
        self.address = address
        self.watchdog = watchdog if address is not None else None
        self._sock: socket.socket | None = None
        self._failed: set[int] = set()  # errnos already logged
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._last_status: str | None = None
        self._status_source: Callable[[], str] | None = None
        self._changes: Callable[[], object] | None = None
        self._seen: object = None
        self._refreshed = 0.0
        self._reloads = 0
        self._stopping = False
        self.sent = 0  # datagrams sent
        self.watchdog_sent = 0  # of which WATCHDOG=1

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str] | None = None, *, pid: int | None = None) -> Notifier:
        """A notifier for this process as the service manager started it.

        Reads ``$NOTIFY_SOCKET``, ``$WATCHDOG_USEC`` and ``$WATCHDOG_PID`` from
        ``environ`` (`os.environ` by default) and removes them, so that child
        processes do not inherit them (sd_notify(3)).  ``pid``: this process
        (`os.getpid` by default), compared with ``$WATCHDOG_PID``.  An
        unsupported ``$NOTIFY_SOCKET`` is logged and ignored; never raises.
        """
        environ = os.environ if environ is None else environ
        pid = os.getpid() if pid is None else pid
        value = environ.pop(NOTIFY_SOCKET, None)
        interval = watchdog_interval(environ, pid)
        environ.pop(WATCHDOG_USEC, None)
        environ.pop(WATCHDOG_PID, None)
        if not value:
            return cls(None)
        try:
            address = socket_address(value)
        except ValueError as exc:
            log.warning("%s; not notifying the service manager", exc)
            return cls(None)
        return cls(address, interval)

    @property
    def enabled(self) -> bool:
        """True when notifications go somewhere (``$NOTIFY_SOCKET`` was set)."""
        return self.address is not None

    # --- sending -------------------------------------------------------------------

    def send(self, payload: bytes) -> bool:
        """Send one datagram without blocking; True when it was sent.

        An error (no listener, a full socket buffer: ``EAGAIN``) drops the
        datagram and is logged once per errno; nothing is raised.
        """
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(payload, self.address)
        except OSError as exc:
            code = exc.errno or 0
            if code not in self._failed:
                self._failed.add(code)
                log.warning(
                    "cannot notify the service manager (%s): %s",
                    errno.errorcode.get(code, code),
                    exc.strerror or exc,
                )
            return False
        self.sent += 1
        return True

    def ready(self, status: str | None = None) -> None:
        """``READY=1`` (with ``STATUS=``): start-up is complete, or the last reload in flight ended.
        Not sent once `stopping` was (a reload that ends while the daemon stops)."""
        if self._stopping:
            return
        if status is not None:
            self._last_status = _status(status)
        self.send(ready_message(status))

    def stopping(self, status: str = "stopping") -> None:
        """``STOPPING=1``; status updates stop (the watchdog goes on until `close`)."""
        self._stopping = True
        self._cancel("status")
        self.send(stopping_message(status))

    def status(self, status: str) -> None:
        """``STATUS=`` now, unless it equals the last one sent."""
        status = _status(status)
        if status != self._last_status:
            self._last_status = status
            self.send(status_message(status))

    async def reloading(self, reload: Callable[[], Awaitable[T]]) -> T:
        """Run the coroutine function ``reload`` between ``RELOADING=1`` and ``READY=1``.

        Reloads in flight at once send one ``RELOADING=1`` and one ``READY=1``
        (after the last); READY comes whatever the outcome, with the current
        status line when `start_status` was called.  Returns what ``reload``
        returns; raises what it raises.
        """
        self._reloads += 1
        if self._reloads == 1:
            self.send(reloading_message(monotonic_usec()))
        try:
            return await reload()
        finally:
            self._reloads -= 1
            if self._reloads == 0:
                self.ready(self._status_source() if self._status_source is not None else None)

    # --- timers ----------------------------------------------------------------------

    def start_watchdog(self) -> None:
        """Feed the watchdog from the running event loop: ``WATCHDOG=1`` now and every
        `watchdog` seconds, from a loop timer (so a stuck loop stops feeding it).
        No-op without a watchdog."""
        if self.watchdog is None or "watchdog" in self._timers:
            return
        self._feed()

    def _feed(self) -> None:
        if self.send(WATCHDOG_MESSAGE):
            self.watchdog_sent += 1
        assert self.watchdog is not None
        self._timers["watchdog"] = asyncio.get_running_loop().call_later(self.watchdog, self._feed)

    def start_status(
        self, source: Callable[[], str], changes: Callable[[], object], interval: float = STATUS_INTERVAL
    ) -> None:
        """Keep ``STATUS=`` current, from the running event loop.

        Every ``interval`` seconds, when ``changes()`` returned something else
        than last time (the event bus's count of published events) or
        `STATUS_REFRESH` seconds passed, ``source()`` is asked for the status
        line, which is sent when it differs from the last one sent: at most one
        ``STATUS=`` per ``interval``, and ``source`` is not run while nothing happens.
        No-op without ``$NOTIFY_SOCKET``.
        """
        self._status_source, self._changes = source, changes
        if self.address is None or "status" in self._timers:
            return
        self._seen = changes()
        self._refreshed = time.monotonic()
        self._timers["status"] = asyncio.get_running_loop().call_later(interval, self._update, interval)

    def _update(self, interval: float) -> None:
        assert self._status_source is not None and self._changes is not None
        seen = self._changes()
        now = time.monotonic()
        if seen != self._seen or now - self._refreshed >= STATUS_REFRESH:
            self._seen, self._refreshed = seen, now
            try:
                self.status(self._status_source())
            except Exception:  # a status line is not worth stopping the updates for
                log.exception("cannot work out the status line")
        self._timers["status"] = asyncio.get_running_loop().call_later(interval, self._update, interval)

    def _cancel(self, name: str) -> None:
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()

    def close(self) -> None:
        """Stop the timers and close the socket (idempotent)."""
        for name in list(self._timers):
            self._cancel(name)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
