"""A client of BIRD 2's control socket, and parsers of its replies.

BIRD listens on a unix stream socket (``bird -s PATH``; ``birdc`` is its own client).  The
protocol, from BIRD's ``nest/cli.c`` and ``doc/reply_codes`` (checked against BIRD 2.0.12):

* on connect BIRD sends a greeting, ``0001 BIRD 2.0.12 ready.``;
* a request is one line of text ending in ``\\n``; BIRD 2.0.12 reads it into a 1024-byte
  socket buffer and closes the connection on a line of 1024 bytes or more with its newline
  (measured; `MAX_COMMAND_BYTES`);
* a reply is a sequence of lines.  A line starts with a 4-digit code followed by ``-`` (more
  lines follow) or by a space (the last line of the reply).  A line starting with a space
  continues the previous code (BIRD writes it so when a ``-`` line has the same code as the line
  before).  A line starting with ``+`` is a spontaneous printout (log echo, only after an
  ``echo`` command; skipped here);
* codes ``0xxx`` mean done, ``1xxx`` a table entry, ``2xxx`` a table heading, ``8xxx`` a runtime
  error, ``9xxx`` a parse error.

`bird_command` sends one command on a connection of its own and returns the whole reply as a
`BirdReply`; the parsers (`parse_protocols`, `parse_bgp_details`, `parse_bgp_detail`,
`parse_bfd_sessions`) turn replies into dataclasses and are pure.  Every read is bounded in
time and size; whatever goes wrong (no socket, no BIRD, an error reply, a reply that is not
BIRD's) is a `BirdError`.
"""

from __future__ import annotations

import asyncio
import os
import re
import stat
from dataclasses import dataclass

__all__ = [
    "CONFIGURE_OK_CODES",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_TIMEOUT",
    "MAX_COMMAND_BYTES",
    "MAX_LINE_BYTES",
    "BfdSession",
    "BgpChannel",
    "BgpDetail",
    "BirdError",
    "BirdReply",
    "ConfigureResult",
    "ProtocolState",
    "ReplyLine",
    "bird_command",
    "bird_configure",
    "parse_bfd_sessions",
    "parse_bgp_detail",
    "parse_bgp_details",
    "parse_protocols",
    "parse_reply",
]

#: Seconds a whole exchange (connect, greeting, command, reply) may take by default.
DEFAULT_TIMEOUT = 2.0
#: Bytes a whole exchange may read by default (greeting included).
DEFAULT_MAX_BYTES = 1 << 20
#: Longest command, in bytes of UTF-8 without the newline: BIRD 2.0.12 answers a 1022-byte command
#: and drops the connection of a longer one (its CLI socket's 1024-byte read buffer).
MAX_COMMAND_BYTES = 1022
#: Longest reply line, in bytes.  BIRD formats each line into a 512-byte buffer
#: (``CLI_LINE_SIZE``); spontaneous printouts are log lines of up to about 1 KiB.
MAX_LINE_BYTES = 4096
#: Codes of BIRD's final reply to ``configure`` that mean the new file was taken
#: (``doc/reply_codes``: 3 reconfigured, 4 in progress, 5 queued, 19 nothing to do).
CONFIGURE_OK_CODES = frozenset({3, 4, 5, 19})

_GREETING_CODE = 1
_CODE_LINE = re.compile(rb"([0-9]{4})([ -])")
_READ_CHUNK = 65536


class BirdError(Exception):
    """A command could not be carried out over BIRD's control socket.

    Attributes:
        path: the control socket's path ("" for a parse of a reply already read).
        code: BIRD's reply code when BIRD answered with an error (8xxx runtime, 9xxx parse),
            else None (no socket, refused, timeout, reply too big or malformed).
        message: what went wrong, e.g. BIRD's own error text.
    """

    def __init__(self, path: str, message: str, code: int | None = None) -> None:
        self.path = path
        self.code = code
        self.message = message
        where = f"BIRD control socket {path}: " if path else "BIRD reply: "
        super().__init__(where + (f"{code:04d} {message}" if code is not None else message))


@dataclass(frozen=True)
class ReplyLine:
    """One line of a reply: its code (0-9999) and its text (without code, separator and newline).

    A continuation line (starting with a space) carries the code of the line it continues."""

    code: int
    text: str


@dataclass(frozen=True)
class BirdReply:
    """A whole reply: its lines in order; the last one is the final line (its code is `code`)."""

    lines: tuple[ReplyLine, ...]

    @property
    def code(self) -> int:
        """The code of the final line (e.g. 0 for done, 3 for "Reconfigured")."""
        return self.lines[-1].code

    @property
    def message(self) -> str:
        """The text of the final line."""
        return self.lines[-1].text

    def texts(self, code: int) -> list[str]:
        """The texts of the lines with code ``code``, in order."""
        return [line.text for line in self.lines if line.code == code]


@dataclass(frozen=True)
class ConfigureResult:
    """BIRD's answer to ``configure``: ``ok`` when the new file was taken (`CONFIGURE_OK_CODES`);
    ``code`` and ``message`` are those of the final line, e.g. ``(3, "Reconfigured")`` or
    ``(8002, "/run/directord/bgp/bird.conf:7:57 syntax error, ...")``."""

    ok: bool
    code: int
    message: str


class _Parser:
    """Splits the bytes of one reply into `ReplyLine` values (see the module docstring)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lines: list[ReplyLine] = []
        self.last_code: int | None = None  # code of the previous "-" line; None at reply start
        self.done = False

    def line(self, raw: bytes) -> None:
        if self.done:
            raise BirdError(self.path, "data after the final line of a reply")
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if raw.startswith(b"+"):
            return  # spontaneous printout (log echo)
        if raw.startswith(b" "):
            if self.last_code is None:
                raise BirdError(self.path, f"continuation line without a code before it: {_show(raw)}")
            self.lines.append(ReplyLine(self.last_code, _text(raw[1:])))
            return
        m = _CODE_LINE.match(raw)
        if m is None:
            raise BirdError(self.path, f"malformed reply line: {_show(raw)}")
        code = int(m.group(1))
        self.lines.append(ReplyLine(code, _text(raw[5:])))
        if m.group(2) == b" ":
            self.done = True
        else:
            self.last_code = code

    def reply(self) -> BirdReply:
        return BirdReply(tuple(self.lines))


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def _show(raw: bytes, limit: int = 80) -> str:
    """A line for an error message: bounded, control characters escaped."""
    shown = repr(raw[:limit])[2:-1]
    return shown + ("..." if len(raw) > limit else "")


def parse_reply(data: bytes) -> BirdReply:
    """Parse the bytes of exactly one complete reply (e.g. a captured one).  Pure.

    Raises:
        BirdError: a malformed line, no final line, or bytes after it.
    """
    parser = _Parser("")
    body = data[:-1] if data.endswith(b"\n") else data
    if not data.endswith(b"\n"):
        raise BirdError("", "reply does not end with a newline")
    for raw in body.split(b"\n"):
        parser.line(raw)
    if not parser.done:
        raise BirdError("", "reply has no final line")
    return parser.reply()


def _check_command(path: str, command: str) -> bytes:
    if not isinstance(command, str):
        raise TypeError(f"command must be str, not {type(command).__name__}")
    if not command.strip():
        raise BirdError(path, "empty command")
    bad = next((ch for ch in command if ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F), None)
    if bad is not None:
        raise BirdError(path, f"command contains the control character {bad!r}")
    data = command.encode("utf-8", errors="strict")
    if len(data) > MAX_COMMAND_BYTES:
        raise BirdError(path, f"command is {len(data)} bytes long, more than {MAX_COMMAND_BYTES}")
    return data + b"\n"


def _check_socket(path: str) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise BirdError(path, "no such file (is BIRD running?)") from None
    except OSError as err:
        raise BirdError(path, f"cannot stat: {err.strerror}") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise BirdError(path, "is not a unix socket")


class _Reader:
    """Reads lines from a stream, counting every byte against one budget."""

    def __init__(self, path: str, reader: asyncio.StreamReader, max_bytes: int) -> None:
        self.path = path
        self.reader = reader
        self.left = max_bytes
        self.buf = b""

    async def reply(self) -> BirdReply:
        parser = _Parser(self.path)
        while not parser.done:
            parser.line(await self._line())
        return parser.reply()

    async def _line(self) -> bytes:
        while True:
            end = self.buf.find(b"\n")
            if end >= 0:
                raw, self.buf = self.buf[:end], self.buf[end + 1 :]
                if len(raw) > MAX_LINE_BYTES:
                    raise BirdError(self.path, f"reply line longer than {MAX_LINE_BYTES} bytes")
                return raw
            if len(self.buf) > MAX_LINE_BYTES:
                raise BirdError(self.path, f"reply line longer than {MAX_LINE_BYTES} bytes")
            if self.left <= 0:
                raise BirdError(self.path, "reply larger than the limit of the read")
            chunk = await self.reader.read(min(_READ_CHUNK, self.left))
            if not chunk:
                raise BirdError(self.path, "connection closed in the middle of a reply")
            self.left -= len(chunk)
            self.buf += chunk


async def _exchange(path: str, data: bytes, max_bytes: int) -> BirdReply:
    try:
        stream, writer = await asyncio.open_unix_connection(path, limit=MAX_LINE_BYTES * 2)
    except ConnectionRefusedError:
        raise BirdError(path, "connection refused (BIRD is not listening)") from None
    except OSError as err:
        raise BirdError(path, f"cannot connect: {err.strerror or err}") from None
    try:
        reader = _Reader(path, stream, max_bytes)
        greeting = await reader.reply()
        if greeting.code != _GREETING_CODE or not greeting.message.startswith("BIRD "):
            raise BirdError(path, f"unexpected greeting {greeting.code:04d} {greeting.message[:80]!r}")
        writer.write(data)
        await writer.drain()
        reply = await reader.reply()
        if reader.buf:
            raise BirdError(path, "data after the final line of a reply")
        return reply
    except OSError as err:
        raise BirdError(path, f"connection failed: {err.strerror or err}") from None
    finally:
        writer.close()


async def bird_command(
    path: str, command: str, *, timeout: float = DEFAULT_TIMEOUT, max_bytes: int = DEFAULT_MAX_BYTES
) -> BirdReply:
    """Send one command to the BIRD listening on the control socket ``path``; return its reply.

    A connection of its own is opened, the greeting (code 0001) read, the command sent and the
    reply read up to its final line; the connection is then closed.

    Args:
        path: BIRD's control socket (``bird -s PATH``).
        command: one line, e.g. ``"show protocols"``; no control characters, at most
            `MAX_COMMAND_BYTES` bytes of UTF-8.
        timeout: seconds for the whole exchange.
        max_bytes: bytes that may be read in all (greeting included).

    Raises:
        BirdError: the command is not valid; ``path`` is missing or not a socket; the connection
            is refused or fails; the exchange took longer than ``timeout`` or read more than
            ``max_bytes``; a line is malformed or longer than `MAX_LINE_BYTES`; the greeting is
            not BIRD's; or BIRD answered with an error (``code`` 8000-9999 set).
    """
    data = _check_command(path, command)
    _check_socket(path)
    try:
        async with asyncio.timeout(timeout):
            reply = await _exchange(path, data, max_bytes)
    except TimeoutError:
        raise BirdError(path, f"no complete reply to {command!r} within {timeout:g} s") from None
    if reply.code >= 8000:
        raise BirdError(path, reply.message, reply.code)
    return reply


async def bird_configure(path: str, *, timeout: float = DEFAULT_TIMEOUT) -> ConfigureResult:
    """Ask BIRD to reload the configuration file it was started with (``configure``).

    BIRD reads and checks the file first; a file it refuses leaves the running configuration as
    it was.  A BGP session whose settings did not change is not restarted.

    Returns:
        ``ok`` True with e.g. ``(3, "Reconfigured")``; ``ok`` False with BIRD's error line, e.g.
        ``(8002, "FILE:LINE:COLUMN syntax error, ...")``, or with a final code that is not in
        `CONFIGURE_OK_CODES` (e.g. 6, "Reconfiguration ignored, shutting down").

    Raises:
        BirdError: BIRD could not be asked (see `bird_command`; no error ``code``).
    """
    try:
        reply = await bird_command(path, "configure", timeout=timeout)
    except BirdError as err:
        if err.code is None:
            raise
        return ConfigureResult(False, err.code, err.message)
    return ConfigureResult(reply.code in CONFIGURE_OK_CODES, reply.code, reply.message)


# --- parsers of replies -----------------------------------------------------------------------

#: ``show protocols`` rows (code 1002), written by BIRD's ``proto_cmd_show`` as
#: ``"%-10s %-10s %-10s %-6s %-12s  %s"``: name, protocol, table, state, since, info.
_CODE_PROTOCOL = 1002
_CODE_DETAIL = 1006
_CODE_BFD = 1020
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
_TIME = re.compile(r"[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?\Z")
#: Names BIRD's ``bgp_state_dsc`` gives the state of a BGP protocol (proto/bgp/bgp.c).
BGP_STATES = frozenset(
    {"Idle", "Connect", "Active", "OpenSent", "OpenConfirm", "Established", "Close", "Passive", "Down"}
)


@dataclass(frozen=True)
class ProtocolState:
    """One row of ``show protocols``.

    Attributes:
        name: the protocol's name (e.g. ``"r1"``).
        proto: its type (``"BGP"``, ``"Kernel"``, ``"BFD"``, ``"Device"``, ...).
        table: its main table, ``"---"`` for none.
        state: BIRD's protocol state: ``"up"``, ``"down"``, ``"start"``, ``"stop"``.
        since: when it entered that state, as BIRD prints it (``"17:22:37.158"``; the format
            follows ``timeformat protocol``).
        info: the protocol's status text; for BGP the session state (``"Established"``,
            ``"Active"``, ...) then the last error (``"Socket: Connection refused"``), or only
            the last error when the protocol is down.
    """

    name: str
    proto: str
    table: str
    state: str
    since: str
    info: str

    @property
    def bgp_state(self) -> str:
        """For a BGP protocol, the session state (RFC 4271 section 8.2.2 names, as BIRD's
        ``bgp_state_dsc``: Idle, Connect, Active, OpenSent, OpenConfirm, Established, plus
        Close, Passive and Down); "" for another protocol."""
        if self.proto != "BGP":
            return ""
        if self.state == "down":
            return "Down"
        first = self.info.split(maxsplit=1)
        return first[0] if first and first[0] in BGP_STATES else ""

    @property
    def last_error(self) -> str:
        """For a BGP protocol, the last error BIRD reports in ``info`` (e.g. ``"BGP Error: Hold
        timer expired"``), "" when none; for another protocol, "" ."""
        if self.proto != "BGP":
            return ""
        if self.state == "down":
            return self.info
        state = self.bgp_state
        return self.info[len(state) :].strip() if state else self.info

    @property
    def established(self) -> bool:
        """True for a BGP protocol whose session is Established."""
        return self.bgp_state == "Established"


def _protocol_row(text: str) -> ProtocolState:
    fields = text.split(maxsplit=4)
    if len(fields) < 5:
        raise BirdError("", f"protocol row has fewer than 5 fields: {text[:120]!r}")
    name, proto, table, state, rest = fields
    words = rest.split(maxsplit=2)
    since, after = words[0], rest[len(words[0]) :]
    if _DATE.match(since) and len(words) > 1 and _TIME.match(words[1]):
        since = f"{since} {words[1]}"
        after = after.lstrip()[len(words[1]) :]
    info = after.strip()  # keeps its inner spacing ("Active        Socket: Connection refused")
    return ProtocolState(name, proto, table, state, since, info)


def parse_protocols(reply: BirdReply) -> list[ProtocolState]:
    """The rows of a ``show protocols`` (or ``show protocols all``) reply, in BIRD's order.  Pure.

    Raises:
        BirdError: a row (code 1002) with fewer than the 5 fixed fields.
    """
    return [_protocol_row(text) for text in reply.texts(_CODE_PROTOCOL)]


@dataclass(frozen=True)
class BgpChannel:
    """One channel (address family) of a BGP protocol in ``show protocols all``.

    Attributes:
        name: ``"ipv4"`` or ``"ipv6"``.
        state: ``"UP"``, ``"DOWN"``, ``"START"``, ``"FLUSHING"``.
        table: the BIRD table it is connected to.
        imported, exported, preferred: BIRD's route counts (``Routes:`` line), None when BIRD
            prints none (the channel is down).
        filtered: routes filtered on import, None when BIRD prints no count (it prints it only
            when some were).
    """

    name: str
    state: str = ""
    table: str = ""
    imported: int | None = None
    exported: int | None = None
    preferred: int | None = None
    filtered: int | None = None


@dataclass(frozen=True)
class BgpDetail:
    """A BGP protocol as ``show protocols all NAME`` shows it (BIRD's ``bgp_show_proto_info``).

    Attributes:
        protocol: its ``show protocols`` row.
        bgp_state: ``"Established"``, ``"Active"``, ... (``BGP state:`` line).
        neighbor_address: ``Neighbor address:`` (may carry ``%interface``), "" when absent.
        neighbor_as: ``Neighbor AS:``, None when absent.
        local_as: ``Local AS:``, None when absent.
        neighbor_id: the neighbour's BGP identifier, "" unless Established.
        source_address: the session's local address, "" unless Established.
        hold_time: the negotiated hold time in seconds (``Hold timer: remaining/hold``), None
            unless Established.
        last_error: ``Last error:`` (e.g. ``"Socket: Connection refused"``,
            ``"BGP Error: Hold timer expired"``, ``"Error: BFD session down"``), "" when none.
        channels: the channels, in order.
    """

    protocol: ProtocolState
    bgp_state: str
    neighbor_address: str = ""
    neighbor_as: int | None = None
    local_as: int | None = None
    neighbor_id: str = ""
    source_address: str = ""
    hold_time: int | None = None
    last_error: str = ""
    channels: tuple[BgpChannel, ...] = ()

    @property
    def established(self) -> bool:
        """True when the session is Established."""
        return self.bgp_state == "Established"


def _int(value: str) -> int | None:
    return int(value) if value.isdigit() and len(value) <= 20 else None


def _route_counts(value: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for part in value.split(","):
        words = part.split()
        if len(words) == 2 and words[0].isdigit() and len(words[0]) <= 20:
            counts[words[1]] = int(words[0])
    return counts


def _bgp_detail(row: ProtocolState, details: list[str]) -> BgpDetail:
    top: dict[str, str] = {}
    channels: list[BgpChannel] = []
    channel: dict[str, str] | None = None
    channel_name = ""

    def close_channel() -> None:
        if channel is not None:
            counts = _route_counts(channel.get("Routes", ""))
            channels.append(
                BgpChannel(
                    channel_name,
                    channel.get("State", ""),
                    channel.get("Table", ""),
                    counts.get("imported"),
                    counts.get("exported"),
                    counts.get("preferred"),
                    counts.get("filtered"),
                )
            )

    for text in details:
        indent = len(text) - len(text.lstrip(" "))
        body = text.strip()
        if indent == 2 and body.startswith("Channel "):
            close_channel()
            channel, channel_name = {}, body[len("Channel ") :].strip()
            continue
        key, sep, value = body.partition(":")
        if not sep:
            continue
        if channel is not None and indent == 4:
            channel.setdefault(key, value.strip())
        elif channel is None and indent in (2, 4):
            top.setdefault(key, value.strip())
    close_channel()
    hold = top.get("Hold timer", "")
    return BgpDetail(
        protocol=row,
        bgp_state=top.get("BGP state", row.bgp_state),
        neighbor_address=top.get("Neighbor address", "").split(" ")[0],
        neighbor_as=_int(top.get("Neighbor AS", "")),
        local_as=_int(top.get("Local AS", "")),
        neighbor_id=top.get("Neighbor ID", ""),
        source_address=top.get("Source address", ""),
        hold_time=_int(hold.rpartition("/")[2]) if "/" in hold else None,
        last_error=top.get("Last error", ""),
        channels=tuple(channels),
    )


def parse_bgp_details(reply: BirdReply) -> list[BgpDetail]:
    """The BGP protocols of a ``show protocols all [NAME]`` reply, in BIRD's order.  Pure.

    Each protocol is its row (code 1002) and the detail lines (code 1006) that follow it; the
    protocols of other types are left out.  Unknown detail lines are ignored.

    Raises:
        BirdError: a malformed protocol row (see `parse_protocols`).
    """
    out: list[BgpDetail] = []
    row: ProtocolState | None = None
    details: list[str] = []
    for line in reply.lines:
        if line.code == _CODE_PROTOCOL:
            if row is not None and row.proto == "BGP":
                out.append(_bgp_detail(row, details))
            row, details = _protocol_row(line.text), []
        elif line.code == _CODE_DETAIL and row is not None:
            details.append(line.text)
    if row is not None and row.proto == "BGP":
        out.append(_bgp_detail(row, details))
    return out


def parse_bgp_detail(reply: BirdReply) -> BgpDetail:
    """The one BGP protocol of a ``show protocols all NAME`` reply.  Pure.

    Raises:
        BirdError: the reply shows no BGP protocol, or more than one.
    """
    found = parse_bgp_details(reply)
    if len(found) != 1:
        raise BirdError("", f"expected one BGP protocol in the reply, found {len(found)}")
    return found[0]


@dataclass(frozen=True)
class BfdSession:
    """One row of ``show bfd sessions`` (BIRD's ``bfd_show_sessions``, code 1020).

    Attributes:
        protocol: the BFD protocol's name (``"bfd1"``).
        address: the neighbour's address.
        interface: the interface, ``"---"`` for a multihop session.
        state: ``"Up"``, ``"Down"``, ``"Init"``, ``"AdminDown"`` (RFC 5880 section 4.1).
        since: when it entered that state, as BIRD prints it.
        interval: the transmit interval in seconds.
        timeout: the detection time in seconds.
    """

    protocol: str
    address: str
    interface: str
    state: str
    since: str
    interval: float
    timeout: float


def _seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise BirdError("", f"not a number of seconds: {value[:40]!r}") from None
    if not 0.0 <= number < 1e9:
        raise BirdError("", f"number of seconds out of range: {value[:40]!r}")
    return number


def parse_bfd_sessions(reply: BirdReply) -> list[BfdSession]:
    """The sessions of a ``show bfd sessions`` reply, in BIRD's order.  Pure.

    Raises:
        BirdError: a session row that does not have its 6 fields (7 with a two-word time).
    """
    out: list[BfdSession] = []
    protocol = ""
    for text in reply.texts(_CODE_BFD):
        body = text.strip()
        if not body or body.startswith("IP address"):
            continue
        if body.endswith(":") and " " not in body:
            protocol = body[:-1]
            continue
        fields = body.split()
        if len(fields) == 7 and _DATE.match(fields[3]):
            fields[3:5] = [f"{fields[3]} {fields[4]}"]
        if len(fields) != 6:
            raise BirdError("", f"BFD session row without its 6 fields: {body[:120]!r}")
        address, interface, state, since, interval, timeout = fields
        out.append(BfdSession(protocol, address, interface, state, since, _seconds(interval), _seconds(timeout)))
    return out
