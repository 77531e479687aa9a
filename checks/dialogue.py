"""The ``tcp`` check's conversation: send/expect steps, implicit TLS and STARTTLS.

`check_dialogue` connects to the real server (``RIP:port``, a non-blocking socket, no DNS), starts
TLS at once when ``spec.tls`` is set (smtps, pop3s, imaps), then runs ``spec.dialogue`` in order:

- ``("send", text)``: ``text`` is sent as Latin-1 bytes (one byte per character);
- ``("expect", regex)``: bytes are read until the regex matches what arrived since the previous
  ``send`` (or ``starttls``; from the connection's start for the first steps), decoded as
  Latin-1.  The regex is searched, not anchored (``^`` is the start of that text; write ``(?m)``
  to make it the start of any line), with RE2 (google-re2: linear time whatever the pattern;
  compiled once, `checks.http.compile_body_pattern`).  The step fails when the server closes the
  connection first, or when more than `checks.spec.MAX_EXPECT_READ` (64 KiB) bytes arrived
  without a match.  Two ``expect`` steps in a row search the same text;
- ``("starttls", "")``: TLS from here on (RFC 3207 for SMTP, RFC 2595 for POP3 and IMAP).  The
  rest of the line in which the last ``expect``'s match ended is awaited and dropped (the
  server's go-ahead, ``220 Ready to start TLS``); bytes received past that line are refused (the
  step fails): they were sent in clear before the handshake and would otherwise be read as if
  they came over TLS (the STARTTLS command-injection flaw, CVE-2011-0411 and kin).

Then the connection is closed at once (no TLS close_notify, no lingering): the check holds no
socket past its end, whatever the server does.  TLS uses the check's shared client context
(`checks.tls.context_for`: ``verify_tls`` none, chain or full, ``ca_file``) and sends
`checks.tls.server_name` as SNI; with ``full`` and no name, the RIP is checked against the
certificate's IP addresses.

A reply that does not match and a server that keeps the connection open make the check wait for
its time limit (``spec.timeout``, applied by `checks.base.run_check`): a dialogue has no notion of
a "complete" reply, so a wrong answer fails fast only when the server then closes or floods.

Reasons: ``"dialogue ok"``, ``"dialogue step 3: reply does not match '(?m)^250 ' (connection
closed): \\"554 no service\\""``, ``"dialogue step 2: connection closed before '^220' matched"``,
``"dialogue step 4: connection closed"`` (a ``send`` after the server closed),
``"dialogue step 5: TLS certificate verify failed: self-signed certificate"``,
``"dialogue step 5: data received before TLS started"``; errors of the connection itself (refused,
implicit TLS failing) are raised and named by `checks.base.describe_error`.

ldirectord's negotiate checks as dialogues (`ldirectord_dialogue`, `LDIRECTORD_DIALOGUES`; read
from ``/usr/sbin/ldirectord`` 4.x and the Perl modules it calls on Debian 12):

- ``smtp``, ``submission`` (``sub check_smtp``, Net::SMTP): Net::SMTP reads the greeting (any 2xx
  reply, RFC 5321 section 4.2), sends ``EHLO localhost.localdomain`` and needs a 2xx reply
  (falling back to ``HELO`` on a 5xx), then ``QUIT``.  Dialogue: expect ``(?m)^220[ \\r\\n]``
  (the last line of the greeting), send ``EHLO localhost.localdomain``, expect
  ``(?m)^250[ \\r\\n]`` (the last line of the EHLO reply), send ``QUIT``.  directord does not
  fall back to ``HELO`` (every SMTP server of this century answers ``EHLO``).  `SMTP_STARTTLS`
  adds ``STARTTLS`` (RFC 3207: 220, handshake, a new ``EHLO``) for a server that must offer TLS.
- ``ftp`` (``sub check_ftp``, Net::FTP): logs in (``login``, default ``anonymous``; ``passwd``,
  default ``ldirectord@HOST``), then fetches the file ``request`` over a passive data connection
  and is up when its content matches ``receive``; a failed login is not itself a failure there.
  Dialogue: expect ``(?m)^220[ \\r\\n]``, send ``USER login``, expect ``(?m)^3\\d\\d[ \\r\\n]``
  (331: password needed), send ``PASS passwd``, expect ``(?m)^2\\d\\d[ \\r\\n]`` (230 logged in),
  send ``QUIT`` (RFC 959 sections 4.1.1 and 5.4).  The file fetch is not reproduced (it needs a
  second, data connection): ``request``/``receive`` are ignored; an ``external`` check (``curl
  ftp://...``) can fetch a file.  A server logging in on ``USER`` alone (230 at once) fails.
- ``pop``, ``pops`` (``sub check_pop``, Mail::POP3Client; ``pops`` with TLS from the start):
  without ``login`` ldirectord counts the server up whatever happens (Mail::POP3Client->new returns
  an object even when it cannot connect); with it, the banner must be ``+OK`` and the login
  (USER/PASS, after APOP or CRAM-MD5 when the server offers them) must succeed.  Dialogue: expect
  ``^\\+OK`` (RFC 1939 section 4), then with ``login``: send ``USER login``, expect
  ``(?m)^\\+OK``, send ``PASS passwd``, expect ``(?m)^\\+OK``; then send ``QUIT``.  directord
  always requires the banner, and logs in with USER/PASS only.
- ``imap``, ``imaps`` (``sub check_imap``/``check_imaps``, Net::IMAP::Simple): the greeting's
  first line must be ``* OK`` or ``* PREAUTH``; with ``login``, ``LOGIN`` must get a tagged
  ``OK``; then ``LOGOUT``.  Dialogue: expect ``(?i)^\\* (?:OK|PREAUTH)`` (RFC 3501 section 7.1),
  then with ``login``: send ``a1 LOGIN "login" "passwd"`` (both quoted strings, RFC 3501 section
  9; Net::IMAP::Simple leaves the user name unquoted), expect ``(?m)^a1 (?i:OK)``; then send ``a2
  LOGOUT``.
- ``nntp`` (``sub check_nntp``): the first read (64 bytes at most) must start with ``2``.
  Dialogue: expect ``^2`` (200/201, RFC 3977 section 5.1).
- ``simpletcp`` (``sub check_simpletcp``): sends ``request`` without its leading ``/`` and with
  ``\\n`` (backslash, n) turned into a line feed, shuts its sending side down, then reads lines
  until one matches ``receive`` (a Perl regex).  Dialogue: send the same text (when not empty),
  expect ``(?m)`` + ``receive`` (a line start or end is ``^``/``$`` as in ldirectord's per-line
  match; an empty ``receive`` waits for any byte).  directord does not shut its sending side down:
  a server that answers only at end of input never answers.  ``receive`` must be RE2 syntax.
- ``ldap``, ``ldaps`` (``sub check_ldap``, Net::LDAP): a bind (anonymous, or ``login`` and
  ``passwd``), then a base-scope search of ``request`` whose one entry's DN must match
  ``receive``.  That is BER (RFC 4511), not text: no dialogue reproduces it, and
  `ldirectord_dialogue` returns ``None``.  directord offers a connect check for ``ldap`` and a TLS
  handshake (``tls: true``, no dialogue) for ``ldaps``, or an ``external`` check running
  ``ldapsearch``.

`LDIRECTORD_IMPLICIT_TLS` names the services whose dialogue runs over TLS from the first byte.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import ssl
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import re2

from checks.http import INLINE_SEARCH, compile_body_pattern
from checks.spec import MAX_EXPECT_READ, CheckSpec, DialogueKind
from checks.tcp import socket_address
from checks.tls import context_for, server_name

if TYPE_CHECKING:  # pragma: no cover
    from checks.base import CheckTarget

__all__ = [
    "check_dialogue",
    "ldirectord_dialogue",
    "LDIRECTORD_DIALOGUES",
    "LDIRECTORD_IMPLICIT_TLS",
    "SMTP_STARTTLS",
]

#: One step of a dialogue, as in `checks.spec.CheckSpec.dialogue`.
Step = tuple[DialogueKind, str]

#: Characters of a reply quoted in a reason, and of a regex.
QUOTE_CHARS = 60

_EHLO = "EHLO localhost.localdomain\r\n"

#: SMTP with STARTTLS (RFC 3207 section 4): the greeting, EHLO, STARTTLS and its 220, the
#: handshake, EHLO again over TLS (section 4.2: the server forgets what it said before), QUIT.
SMTP_STARTTLS: tuple[Step, ...] = (
    ("expect", r"(?m)^220[ \r\n]"),
    ("send", _EHLO),
    ("expect", r"(?m)^250[ \r\n]"),
    ("send", "STARTTLS\r\n"),
    ("expect", r"(?m)^220[ \r\n]"),
    ("starttls", ""),
    ("send", _EHLO),
    ("expect", r"(?m)^250[ \r\n]"),
    ("send", "QUIT\r\n"),
)

#: ldirectord services whose check runs over TLS from the first byte (``tls: true``).
LDIRECTORD_IMPLICIT_TLS = frozenset({"pops", "imaps"})


def ldirectord_dialogue(service: str, login: str, passwd: str, request: str, receive: str) -> tuple[Step, ...] | None:
    """The dialogue reproducing ldirectord's negotiate check of ``service``, or ``None``.

    The module's docstring says, service by service, what ldirectord sends and accepts and where
    the dialogue differs.  Run a service of `LDIRECTORD_IMPLICIT_TLS` with ``tls: true``.

    Args:
        service: ldirectord's ``service`` (``smtp``, ``submission``, ``ftp``, ``pop``, ``pops``,
            ``imap``, ``imaps``, ``nntp``, ``simpletcp``; any other gives ``None``).
        login: ldirectord's ``login`` (``""`` when unset); used by ftp (``anonymous`` when
            empty), pop/pops and imap/imaps (no login step when empty).
        passwd: ldirectord's ``passwd`` (``""`` when unset); ftp uses ``directord@localhost``
            when it is empty and ``login`` is empty or ``anonymous``.
        request: ldirectord's ``request``, with or without the leading ``/`` ldirectord adds;
            used by simpletcp only.
        receive: ldirectord's ``receive``; used by simpletcp only (RE2 syntax required).

    Returns:
        The steps for `checks.spec.CheckSpec.dialogue`, or ``None`` when no dialogue reproduces
        the check (``ldap``, ``ldaps``: binary BER; ``http``, ``dns``...: other check types).

    Raises:
        ValueError: a setting cannot be put into the dialogue: ``login``/``passwd`` with a line
            break or NUL (it would end the command early and inject another), text that is not
            Latin-1, a ``receive`` RE2 cannot compile.  The message names the setting.
    """
    if service in ("smtp", "submission"):
        return (
            ("expect", r"(?m)^220[ \r\n]"),
            ("send", _EHLO),
            ("expect", r"(?m)^250[ \r\n]"),
            ("send", "QUIT\r\n"),
        )
    if service == "nntp":
        return (("expect", "^2"),)
    if service == "ftp":
        user = _command_argument("login", login) or "anonymous"
        password = _command_argument("passwd", passwd)
        if not password and user == "anonymous":
            password = "directord@localhost"
        return (
            ("expect", r"(?m)^220[ \r\n]"),
            ("send", f"USER {user}\r\n"),
            ("expect", r"(?m)^3\d\d[ \r\n]"),
            ("send", f"PASS {password}\r\n"),
            ("expect", r"(?m)^2\d\d[ \r\n]"),
            ("send", "QUIT\r\n"),
        )
    if service in ("pop", "pops"):
        steps: tuple[Step, ...] = (("expect", r"^\+OK"),)
        if login:
            user, password = _command_argument("login", login), _command_argument("passwd", passwd)
            steps += (
                ("send", f"USER {user}\r\n"),
                ("expect", r"(?m)^\+OK"),
                ("send", f"PASS {password}\r\n"),
                ("expect", r"(?m)^\+OK"),
            )
        return steps + (("send", "QUIT\r\n"),)
    if service in ("imap", "imaps"):
        steps = (("expect", r"(?i)^\* (?:OK|PREAUTH)"),)
        if login:
            user, password = _imap_quoted("login", login), _imap_quoted("passwd", passwd)
            steps += (("send", f"a1 LOGIN {user} {password}\r\n"), ("expect", r"(?m)^a1 (?i:OK)"))
        return steps + (("send", "a2 LOGOUT\r\n"),)
    if service == "simpletcp":
        text = request[1:] if request.startswith("/") else request
        text = text.replace("\\n", "\n")
        _latin1("request", text)
        _latin1("receive", receive)
        pattern = f"(?m){receive}" if receive else "(?s)."
        compiled = compile_body_pattern(pattern)
        if isinstance(compiled, str):
            raise ValueError(f"receive is not a regular expression RE2 can match: {compiled}")
        return ((("send", text),) if text else ()) + (("expect", pattern),)
    return None


def _latin1(name: str, text: str) -> None:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"{name} must be Latin-1 text (it is sent one byte per character)") from None


def _command_argument(name: str, text: str) -> str:
    """``text`` checked for use inside one command line (no CR, LF or NUL; Latin-1)."""
    if any(c in text for c in "\r\n\0"):
        raise ValueError(f"{name} must not hold a line break or NUL (it is sent inside one command line)")
    _latin1(name, text)
    return text


def _imap_quoted(name: str, text: str) -> str:
    """An IMAP quoted string (RFC 3501 section 4.3 and the ``quoted`` rule of section 9)."""
    text = _command_argument(name, text)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


#: ldirectord service -> dialogue of its negotiate check with ldirectord's defaults (no ``login``,
#: ``request`` ``/``, ``receive`` empty); `ldirectord_dialogue` builds one from other settings.
LDIRECTORD_DIALOGUES: dict[str, tuple[Step, ...]] = {
    service: steps
    for service in ("smtp", "submission", "ftp", "pop", "pops", "imap", "imaps", "nntp", "simpletcp")
    if (steps := ldirectord_dialogue(service, "", "", "/", "")) is not None
}


# --- the check -----------------------------------------------------------------------------------

_SEND, _EXPECT, _STARTTLS = 0, 1, 2
_KINDS = {"send": _SEND, "expect": _EXPECT, "starttls": _STARTTLS}

#: A planned step: (kind, data, text): data is the bytes sent, the compiled regex, or ``None``.
_Planned = tuple[int, "bytes | re2._Regexp | None", str]


@functools.lru_cache(maxsize=1024)
def _plan(dialogue: tuple[Step, ...]) -> tuple[_Planned, ...] | str:
    """The steps with their bytes encoded and regexes compiled, or the reason of a step that
    cannot run (the loader refuses them already; this keeps the check honest without it)."""
    planned: list[_Planned] = []
    for number, (kind, text) in enumerate(dialogue, 1):
        code = _KINDS.get(kind)
        if code == _SEND:
            try:
                planned.append((_SEND, text.encode("latin-1"), text))
            except UnicodeEncodeError:
                return f"dialogue step {number}: send is not Latin-1 text"
        elif code == _EXPECT:
            compiled = compile_body_pattern(text)
            if isinstance(compiled, str):
                return _clip(f"dialogue step {number}: bad expect regex: {compiled}")
            planned.append((_EXPECT, compiled, text))
        elif code == _STARTTLS:
            planned.append((_STARTTLS, None, text))
        else:
            return _clip(f"dialogue step {number}: unknown step {kind!r}")
    return tuple(planned)


_matcher: ThreadPoolExecutor | None = None


def _match_end(pattern: re2._Regexp, text: str) -> int:
    found = pattern.search(text)
    return -1 if found is None else found.end()


async def _search(pattern: re2._Regexp, text: str) -> int:
    """End of ``pattern``'s first match in ``text``, or -1.  A search that may take more than about
    a millisecond runs on a thread of its own (RE2 releases the GIL), as `checks.http.body_matches`."""
    if len(text) * pattern.programsize <= INLINE_SEARCH:
        return _match_end(pattern, text)
    global _matcher
    if _matcher is None:
        _matcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dialogue_expect")
    return await asyncio.get_running_loop().run_in_executor(_matcher, _match_end, pattern, text)


class _Conversation(asyncio.Protocol):
    """Collects what the server sends and wakes the dialogue when something happens."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.received = bytearray()
        self.closed = False
        self.error: BaseException | None = None
        self.paused = False
        self.waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received += data
        if len(self.received) > MAX_EXPECT_READ and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool | None:
        self.closed = True
        self._wake()
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if exc is not None and self.error is None:
            self.error = exc
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def news(self) -> None:
        """Wait for data, the end of the connection, or an error."""
        waiter = self.waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            self.waiter = None

    def forget(self) -> None:
        """Drop what was received (a ``send`` starts a new reply) and read again if paused."""
        self.received.clear()
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()


async def check_dialogue(target: CheckTarget) -> tuple[bool, str]:
    """Connect to ``target`` and run its ``spec.dialogue``, with TLS as ``spec.tls`` and the
    dialogue's ``starttls`` steps say (see the module's docstring).

    Returns:
        ``(True, "dialogue ok")`` (``"TLS handshake ok"`` for ``tls`` without steps), or
        ``(False, reason)`` for a step that failed: ``"dialogue step 3: reply does not match
        '^250 ' (connection closed): \\"554 no\\""``.

    Raises:
        OSError: the connection failed (refused, unreachable, reset before the steps).
        ssl.SSLError: the TLS handshake of ``spec.tls`` failed (``ssl.SSLCertVerificationError``
            for a certificate refused by ``verify_tls``).
        ValueError: ``target.rip`` is not an IP address.
    """
    spec = target.spec
    plan = _plan(spec.dialogue)
    if isinstance(plan, str):
        return False, plan
    family, sockaddr = socket_address(target.rip, target.rport)
    loop = asyncio.get_running_loop()
    sock = socket.socket(family, socket.SOCK_STREAM)
    raw: asyncio.BaseTransport | None = None
    conversation = _Conversation()
    try:
        sock.setblocking(False)
        await loop.sock_connect(sock, sockaddr)
        raw, _ = await loop.create_connection(lambda: conversation, sock=sock)
        if spec.tls:
            if conversation.received:
                return False, "data received before TLS started"
            await _start_tls(loop, conversation, spec, target.rip)
        return await _converse(loop, conversation, plan, spec, target.rip)
    finally:
        if raw is None:
            sock.close()
        else:
            if conversation.transport is not None:
                conversation.transport.abort()
            raw.abort()  # type: ignore[attr-defined]


async def _start_tls(loop: asyncio.AbstractEventLoop, conversation: _Conversation, spec: CheckSpec, rip: str) -> None:
    context = context_for(spec)
    name = server_name(spec)
    if name is None and context.check_hostname:
        name = rip.split("%", 1)[0]  # "full" without a name: the RIP against the certificate's IPs
    transport = conversation.transport
    assert transport is not None
    tls = await loop.start_tls(transport, conversation, context, server_hostname=name)
    if tls is None:  # pragma: no cover - the transport closed during the handshake
        raise ConnectionResetError("connection closed during the TLS handshake")
    conversation.transport = tls


async def _converse(
    loop: asyncio.AbstractEventLoop, conversation: _Conversation, plan: tuple[_Planned, ...], spec: CheckSpec, rip: str
) -> tuple[bool, str]:
    consumed = -1  # end of the furthest expect match in conversation.received; -1: none since the send
    for number, (kind, data, text) in enumerate(plan, 1):
        if kind == _SEND:
            if conversation.closed:
                return False, _closed(number, conversation)
            conversation.forget()
            consumed = -1
            assert conversation.transport is not None and isinstance(data, bytes)
            conversation.transport.write(data)
        elif kind == _EXPECT:
            assert not isinstance(data, bytes) and data is not None
            end = await _expect(conversation, data)
            if isinstance(end, str):
                return False, f"dialogue step {number}: {end}" if end else _closed(number, conversation, text)
            consumed = max(consumed, end)
        else:
            line_end = await _line_end(conversation, consumed)
            if line_end < 0:
                return False, _closed(number, conversation)
            if len(conversation.received) > line_end:
                return False, f"dialogue step {number}: data received before TLS started"
            if conversation.closed:
                return False, _closed(number, conversation)
            try:
                await _start_tls(loop, conversation, spec, rip)
            except (OSError, ssl.SSLError) as exc:
                from checks.base import describe_error

                return False, _clip(f"dialogue step {number}: {describe_error(exc)}")
            conversation.forget()
            consumed = -1
    if not plan:
        return True, "TLS handshake ok" if spec.tls else "connected"
    return True, "dialogue ok"


async def _line_end(conversation: _Conversation, consumed: int) -> int:
    """Where the line of the last match ends (past its ``\\n``), waiting for the rest of that
    line; 0 when nothing matched since the last send, ``consumed`` when the match ended a line;
    -1 when the connection ended or the line grew past `checks.spec.MAX_EXPECT_READ` first."""
    received = conversation.received
    if consumed < 0:
        return 0
    if consumed > 0 and received[consumed - 1] == 0x0A:
        return consumed
    while (newline := received.find(b"\n", consumed)) < 0:
        if conversation.closed or len(received) > MAX_EXPECT_READ:
            return -1
        await conversation.news()
    return newline + 1


async def _expect(conversation: _Conversation, pattern: re2._Regexp) -> int | str:
    """Read until ``pattern`` matches; the end of its match, ``""`` when the connection ended
    first, or the reason of a failure."""
    received = conversation.received
    searched = -1
    while True:
        size = min(len(received), MAX_EXPECT_READ + 1)
        if size != searched:
            searched = size
            end = await _search(pattern, received[:MAX_EXPECT_READ].decode("latin-1"))
            if end >= 0:
                return end
            continue  # more may have come during the search
        if size > MAX_EXPECT_READ:
            return _no_match(pattern, received, f"in {MAX_EXPECT_READ // 1024} KiB")
        if conversation.closed:
            if conversation.error is not None or not received:
                return ""
            return _no_match(pattern, received, "(connection closed)")
        await conversation.news()


def _no_match(pattern: re2._Regexp, received: bytearray, how: str) -> str:
    return _clip(f"reply does not match {_quote_regex(pattern.pattern)} {how}: {_quote(received)}")


def _closed(number: int, conversation: _Conversation, regex: str | None = None) -> str:
    """Reason of a step meeting a closed connection: its error when it had one."""
    if conversation.error is not None:
        from checks.base import describe_error

        return _clip(f"dialogue step {number}: {describe_error(conversation.error)}")
    if regex is not None:
        return _clip(f"dialogue step {number}: connection closed before {_quote_regex(regex)} matched")
    return f"dialogue step {number}: connection closed"


def _quote_regex(regex: str) -> str:
    return repr(regex if len(regex) <= QUOTE_CHARS else regex[: QUOTE_CHARS - 3] + "...")


def _quote(data: bytearray) -> str:
    """The start of a reply, printable: ``"554 5.7.1 go away"``."""
    text = " ".join(bytes(data[: QUOTE_CHARS * 2]).decode("latin-1").split())
    text = "".join(c if c.isprintable() else "." for c in text)
    return '"' + (text if len(text) <= QUOTE_CHARS else text[: QUOTE_CHARS - 3] + "...") + '"'


#: Longest reason (as `checks.base.MAX_REASON`).
_MAX_REASON = 200


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."
