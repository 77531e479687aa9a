"""FTP check (RFC 959): log in, and optionally download the start of a file over passive mode.

What ldirectord does (``sub check_ftp`` in ``/usr/sbin/ldirectord``, with Net::FTP): connect, log
in with ``login`` (default ``anonymous``) and ``passwd`` (default ``ldirectord@<its host name>``,
whatever the login; Net::FTP's own default, ``-anonymous@`` for an anonymous login without a
password, never applies since ldirectord always gives one), ``CWD /``, ``TYPE I``, ``PASV``, ``RETR
request`` into a temporary file, ``QUIT``; the server is up when the downloaded bytes match
``receive`` (a Perl regex).  Every failure on the way (no greeting, a refused login, a missing
file) only leaves the file empty, so with an empty ``receive`` any server that accepts the
connection -- or none at all -- is up.

What `check_ftp` does, over a control connection to ``RIP:port`` (replies read whole: a
multi-line reply ``123-...`` runs to its line starting ``123 ``, RFC 959 section 4.2; at most
`MAX_REPLY` bytes each):

1. the greeting must be a 2xx reply (220), else ``"FTP greeting: 421 Too many users"``;
2. ``USER login`` (``spec.login``, default ``anonymous``): a 2xx reply (230, no password needed)
   logs in at once; a 3xx (331) asks for ``PASS password`` (``spec.password``, default
   `DEFAULT_PASSWORD` whatever the login, as ldirectord), whose reply must be 2xx (230); any
   other reply fails the check with it: ``"FTP 530 Login incorrect."``;
3. without ``spec.query``: done (``"FTP login ok"``).  With it: ``TYPE I`` (2xx), then ``EPSV``
   (RFC 2428 section 3: ``229 ... (|||port|)``), or ``PASV`` when the server refuses EPSV with a
   5xx (``227 ... (h1,h2,h3,h4,p1,p2)``, RFC 959 section 4.1.2).  The data connection goes to the
   RIP and the port of the reply, never to the address a PASV reply names (the FTP bounce attack,
   RFC 2577 section 3: a hostile server could make the checker connect anywhere); then ``RETR
   query``, whose preliminary reply must be 1xx (125/150; else ``"FTP RETR: 550 No such
   file"``).  At most `MAX_DOWNLOAD` bytes (64 KiB) are read from the data connection: when the
   file ended within them its final reply must be 2xx (226; else ``"FTP RETR: 426 ..."``); when
   it did not, the data connection is closed there and the rest never read.  With
   ``spec.expect`` the bytes read (UTF-8, undecodable bytes replaced) must match that RE2 regex
   (searched, not anchored): else ``"download does not match 'ok'"``; passing: ``"FTP download
   ok"``;
4. ``QUIT`` is sent and both connections are closed at once, whatever happened (also when the
   check is cancelled): the reply to QUIT is not awaited.

Differences from ldirectord: a failed greeting, login or download fails the check (ldirectord
only looks at what was downloaded); without ``query`` the check is a login check; ``CWD /`` is not
sent (``query`` is the path, relative to the login directory as ``RETR`` takes it); ``EPSV``
comes first, which works over IPv6 too; only the first 64 KiB of the file are read; ``expect`` is
RE2 syntax.  ldirectord's ``request`` begins with ``/``, which ``RETR`` takes as an absolute path.

Login, password and query are sent in UTF-8 (RFC 2640 section 2.2); one holding a line break or
NUL fails the check without connecting (it would end the command and inject another).  The time
limit is applied by the caller (`checks.base.run_check`).
"""

from __future__ import annotations

import asyncio
import functools
import re
import socket
from typing import TYPE_CHECKING, Any, NamedTuple

from checks.protocols.http import body_matches, compile_body_pattern
from checks.protocols.tcp import socket_address
from checks.spec import MAX_EXPECT_READ

if TYPE_CHECKING:  # pragma: no cover
    import re2

    from checks.base import CheckTarget

__all__ = [
    "check_ftp",
    "read_reply",
    "parse_epsv",
    "parse_pasv",
    "FtpError",
    "FtpReply",
    "DEFAULT_LOGIN",
    "DEFAULT_PASSWORD",
    "MAX_REPLY",
    "MAX_DOWNLOAD",
]

#: User name sent when ``spec.login`` is unset.
DEFAULT_LOGIN = "anonymous"
#: Password sent when ``spec.password`` is unset (ldirectord sends ``ldirectord@<host name>``).
DEFAULT_PASSWORD = "directord@localhost"
#: Longest control reply, all its lines together, bytes (64 KiB).
MAX_REPLY = MAX_EXPECT_READ
#: Most bytes of the file read from the data connection (64 KiB).
MAX_DOWNLOAD = MAX_EXPECT_READ
#: Characters of a reply's text quoted in a reason.
QUOTE_CHARS = 80

_FIRST_LINE = re.compile(rb"([1-5]\d\d)([ -]|\r?\n)")
_PASV = re.compile(r"(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3})")
_EPSV = re.compile(r"\(([!-~])\1\1(\d{1,5})\1\)")


class FtpError(ValueError):
    """A control reply that is not FTP, too long, or cut short; its text is the check's reason."""


class FtpReply(NamedTuple):
    """One control reply: its ``code`` (100 to 599) and the text of its first line after the code
    (stripped, unprintable characters as ``.``); ``str()`` gives ``"530 Login incorrect."``, the
    text cut to `QUOTE_CHARS` characters."""

    code: int
    text: str

    def __str__(self) -> str:
        return f"{self.code} {_clip(self.text)}" if self.text else str(self.code)


def _printable(data: bytes) -> str:
    text = data.decode("utf-8", errors="replace").strip()
    return "".join(c if c.isprintable() else "." for c in text)


def _clip(text: str) -> str:
    return text if len(text) <= QUOTE_CHARS else text[: QUOTE_CHARS - 3] + "..."


async def _line(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        raise FtpError("FTP server closed the connection" + (" mid-reply" if exc.partial else "")) from None
    except asyncio.LimitOverrunError:
        raise FtpError(f"FTP reply line longer than {MAX_REPLY // 1024} KiB") from None


async def read_reply(reader: asyncio.StreamReader) -> FtpReply:
    """Read one whole control reply (RFC 959 section 4.2), multi-line replies included.

    ``reader`` must have been made with a limit of `MAX_REPLY` (its longest line).

    Raises:
        FtpError: the first line is not ``DDD`` followed by a space, ``-`` or the line's end, with
            D a digit and the first one 1 to 5 (``"bad FTP reply: \\"HTTP/1.0 400\\""``); the
            reply is longer than `MAX_REPLY` bytes; the server closed the connection first.
    """
    first = await _line(reader)
    found = _FIRST_LINE.match(first)
    if found is None:
        raise FtpError(f'bad FTP reply: "{_clip(_printable(first))}"')
    code = found.group(1)
    if found.group(2) == b"-":
        end = code + b" "
        size = len(first)
        while True:
            line = await _line(reader)
            size += len(line)
            if size > MAX_REPLY:
                raise FtpError(f"FTP reply longer than {MAX_REPLY // 1024} KiB")
            if line.startswith(end) or line.rstrip(b"\r\n") == code:
                break
    return FtpReply(int(code), _printable(first[4:]))


def parse_epsv(text: str) -> int:
    """The port of a 229 reply's text: ``Entering Extended Passive Mode (|||6446|)`` -> 6446
    (RFC 2428 section 3: any printable delimiter, the same four times).

    Raises:
        FtpError: no such group, or a port outside 1..65535.
    """
    found = _EPSV.search(text)
    if found is None:
        raise FtpError(f'FTP EPSV: no port in "{_clip(text)}"')
    return _port(int(found.group(2)), text)


def parse_pasv(text: str) -> int:
    """The port of a 227 reply's text: ``Entering Passive Mode (10,0,0,2,195,80)`` -> 195 x 256 +
    80 = 50000 (RFC 959 section 4.1.2).  The address is ignored: the data connection goes to the
    RIP (the bounce defence of RFC 2577 section 3).

    Raises:
        FtpError: no six numbers, a number above 255, or port 0.
    """
    found = _PASV.search(text)
    if found is None or any(int(number) > 255 for number in found.groups()):
        raise FtpError(f'FTP PASV: no address in "{_clip(text)}"')
    return _port(int(found.group(5)) * 256 + int(found.group(6)), text)


def _port(port: int, text: str) -> int:
    if not 1 <= port <= 65535:
        raise FtpError(f'FTP passive port {port} in "{_clip(text)}"')
    return port


class _Commands(NamedTuple):
    user: bytes
    password: bytes
    retr: bytes | None


@functools.lru_cache(maxsize=1024)
def _commands(login: str | None, password: str | None, query: str | None) -> _Commands | str:
    """The check's USER, PASS and RETR lines, or the reason why one cannot be sent."""
    lines: list[bytes] = []
    settings = (("login", "USER", login or DEFAULT_LOGIN), ("password", "PASS", password or DEFAULT_PASSWORD),
                ("query", "RETR", query))  # fmt: skip
    for name, verb, value in settings:
        if value is None:
            lines.append(b"")
            continue
        if any(c in value for c in "\r\n\0"):
            return f"FTP {name} must not hold a line break or NUL"
        lines.append(f"{verb} {value}\r\n".encode("utf-8", errors="surrogateescape"))
    return _Commands(lines[0], lines[1], lines[2] or None)


async def check_ftp(target: CheckTarget) -> tuple[bool, str]:
    """Log in to ``target`` and fetch the start of ``spec.query`` when set (see the module's
    docstring; ldirectord's ``sub check_ftp``).

    Returns:
        ``(True, "FTP login ok")`` (no query), ``(True, "FTP download ok")``, or ``(False,
        reason)``: ``"FTP 530 Login incorrect."``, ``"FTP RETR: 550 No such file"``, ``"download
        does not match 'ok'"``, ``"FTP data connection: connection refused"``, ``"bad FTP reply:
        ..."``, ``"bad expect regex: ..."`` (nothing sent).

    Raises:
        OSError: the control connection failed (refused, unreachable, reset).
        ValueError: ``target.rip`` is not an IP address.
    """
    spec = target.spec
    pattern: re2._Regexp | str | None = None
    if spec.expect is not None:
        pattern = compile_body_pattern(spec.expect)
        if isinstance(pattern, str):
            return False, f"bad expect regex: {pattern}"
    commands = _commands(spec.login, spec.password, spec.query)
    if isinstance(commands, str):
        return False, commands
    family, sockaddr = socket_address(target.rip, target.rport)
    loop = asyncio.get_running_loop()
    sock = socket.socket(family, socket.SOCK_STREAM)
    writer: asyncio.StreamWriter | None = None
    data: socket.socket | None = None
    try:
        sock.setblocking(False)
        await loop.sock_connect(sock, sockaddr)
        reader, writer = await asyncio.open_connection(sock=sock, limit=MAX_REPLY)
        try:
            reply = await read_reply(reader)
            if reply.code // 100 != 2:
                return False, f"FTP greeting: {reply}"
            writer.write(commands.user)
            reply = await read_reply(reader)
            if reply.code // 100 == 3:
                writer.write(commands.password)
                reply = await read_reply(reader)
            if reply.code // 100 != 2:
                return False, f"FTP {reply}"
            if commands.retr is None:
                return True, "FTP login ok"
            writer.write(b"TYPE I\r\n")
            reply = await read_reply(reader)
            if reply.code // 100 != 2:
                return False, f"FTP TYPE I: {reply}"
            port = await _passive_port(reader, writer)
            if isinstance(port, str):
                return False, port
            data = socket.socket(family, socket.SOCK_STREAM)
            data.setblocking(False)
            try:
                await loop.sock_connect(data, _with_port(sockaddr, port))
            except OSError as exc:
                from checks.base import describe_error

                return False, f"FTP data connection: {describe_error(exc)}"
            writer.write(commands.retr)
            reply = await read_reply(reader)
            if reply.code // 100 != 1:
                return False, f"FTP RETR: {reply}"
            content, whole = await _download(loop, data)
            data.close()
            data = None
            if whole:
                reply = await read_reply(reader)
                if reply.code // 100 != 2:
                    return False, f"FTP RETR: {reply}"
            if pattern is None:
                return True, "FTP download ok"
            if not await body_matches(pattern, content.decode("utf-8", errors="replace")):
                return False, f"download does not match {spec.expect!r}"
            return True, "FTP download ok"
        except FtpError as exc:
            return False, str(exc)
    finally:
        if data is not None:
            data.close()
        if writer is None:
            sock.close()
        else:
            transport = writer.transport
            if not transport.is_closing():
                transport.write(b"QUIT\r\n")
            transport.abort()


async def _passive_port(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int | str:
    """The data port from EPSV, else (EPSV refused with a 5xx) from PASV; or a reason."""
    writer.write(b"EPSV\r\n")
    reply = await read_reply(reader)
    if reply.code == 229:
        return parse_epsv(reply.text)
    if reply.code // 100 != 5:
        return f"FTP EPSV: {reply}"
    writer.write(b"PASV\r\n")
    reply = await read_reply(reader)
    if reply.code != 227:
        return f"FTP PASV: {reply}"
    return parse_pasv(reply.text)


def _with_port(sockaddr: tuple[Any, ...], port: int) -> tuple[Any, ...]:
    """``sockaddr`` (IPv4 ``(host, port)`` or IPv6 ``(host, port, flowinfo, scope_id)``) with
    another port."""
    return (sockaddr[0], port, *sockaddr[2:])


async def _download(loop: asyncio.AbstractEventLoop, data: socket.socket) -> tuple[bytes, bool]:
    """At most `MAX_DOWNLOAD` bytes from the data connection, and whether the file ended within
    them (the server closed its side)."""
    buffer = bytearray(MAX_DOWNLOAD)
    view = memoryview(buffer)
    size = 0
    try:
        while size < MAX_DOWNLOAD:
            count = await loop.sock_recv_into(data, view[size:])
            if count == 0:
                return bytes(view[:size]), True
            size += count
        return bytes(view[:size]), False
    finally:
        view.release()
