"""The ``tcp`` check's conversation: send/expect steps, implicit TLS and STARTTLS.

`check_dialogue` connects to the real server (``RIP:port``, a non-blocking socket, no DNS), starts
TLS at once when ``spec.tls`` is set (smtps, pop3s, imaps), then runs ``spec.dialogue`` in order:

- ``("send", text)``: ``text`` is sent as Latin-1 bytes (one byte per character);
- ``("expect", regex)``: bytes are read until the regex matches what arrived since the previous
  ``send`` (or ``starttls``; from the connection's start for the first steps), decoded as
  Latin-1.  The regex is searched, not anchored (``^`` is the start of that text; write ``(?m)``
  to make it the start of any line), with RE2 (google-re2: linear time whatever the pattern;
  compiled once, `checks.protocols.http.compile_body_pattern`).  The step fails when the server closes the
  connection first, or when more than `checks.spec.MAX_EXPECT_READ` (64 KiB) bytes arrived
  without a match.  Two ``expect`` steps in a row search the same text;
- ``("fail", regex)``, right after an ``expect`` (or another ``fail``): while that ``expect``
  waits, the check fails at once when ``regex`` matches what arrived and the ``expect``'s own
  regex does not (a server that answers ``-ERR`` or ``535`` and keeps the connection open);
- ``("starttls", "")``: TLS from here on (RFC 3207 for SMTP, RFC 2595 for POP3 and IMAP).  The
  rest of the line in which the last ``expect``'s match ended is awaited and dropped (the
  server's go-ahead, ``220 Ready to start TLS``); bytes received past that line are refused (the
  step fails): they were sent in clear before the handshake and would otherwise be read as if
  they came over TLS (the STARTTLS command-injection flaw, CVE-2011-0411 and kin).

Then the connection is closed at once (no TLS close_notify, no lingering): the check holds no
socket past its end, whatever the server does.  TLS uses the check's shared client context
(`checks.protocols.tls.context_for`: ``verify_tls`` none, chain or full, ``ca_file``) and sends
`checks.protocols.tls.server_name` as SNI; with ``full`` and no name, the RIP is checked against the
certificate's IP addresses.

A reply that matches neither the ``expect`` nor one of its ``fail`` patterns, from a server that
keeps the connection open, makes the check wait for its time limit (``spec.timeout``, applied by
`checks.base.run_check`): a dialogue has no notion of a "complete" reply, so a wrong answer fails
fast only when a ``fail`` pattern names it, or when the server then closes or floods.

Reasons: ``"dialogue ok"``, ``"dialogue step 3: reply does not match '(?m)^250 ' (connection
closed): \\"554 no service\\""``, ``"dialogue step 2: connection closed before '^220' matched"``,
``"dialogue step 4: connection closed"`` (a ``send`` after the server closed), ``"dialogue step
6: reply matches fail '^-ERR': \\"-ERR [AUTH] Authentication failed.\\""``,
``"dialogue step 5: TLS certificate verify failed: self-signed certificate"``,
``"dialogue step 5: data received before TLS started"``; errors of the connection itself (refused,
implicit TLS failing) are raised and named by `checks.base.describe_error`.

ldirectord's negotiate checks as dialogues (`ldirectord_dialogue`, `LDIRECTORD_DIALOGUES`; the one
source of them: ``directord convert`` writes these steps; read from ``/usr/sbin/ldirectord`` 4.x
and the Perl clients it calls on Debian 12: Net::SMTP and Net::FTP with Net::Cmd, Mail::POP3Client
2.x, Net::IMAP::Simple 1.2x).  A reply of Net::Cmd (SMTP, FTP) is read up to its last line, ``CODE
SP text`` or ``CODE`` alone (a ``CODE-`` line continues it; RFC 5321 section 4.2.1, RFC 959
section 4.2): the pattern of a status class ``2\\d\\d`` is ``(?m)^2\\d\\d(?: |\\r?\\n)``, which a
continuation line or a reply cut after its code does not match.

- ``smtp``, ``submission`` (``sub check_smtp``, Net::SMTP ``new``): up when the greeting is any
  2xx reply and ``EHLO localhost.localdomain`` (Net::SMTP's ``hello`` default) is answered 2xx;
  then ``QUIT``.  Dialogue: expect a final 2xx line, send ``EHLO localhost.localdomain``, expect a
  final 2xx line, send ``QUIT``.  directord does not fall back to ``HELO`` when EHLO gets a 5xx
  (Net::SMTP does; every SMTP server of this century answers ``EHLO``).  `SMTP_STARTTLS` adds
  ``STARTTLS`` (RFC 3207: 220, handshake, a new ``EHLO``) for a server that must offer TLS.
- ``ftp`` (``sub check_ftp``, Net::FTP): ``login`` defaults to ``anonymous`` and ``passwd`` to
  ``ldirectord@HOSTNAME`` (ldirectord's parser); a 2xx greeting, ``USER`` answered 3xx, ``PASS``
  answered 2xx, then the file ``request`` is fetched over a passive data connection and the
  server is up when its content matches ``receive`` (a failed login is not itself a failure
  there).  Dialogue: expect a final 2xx line, send ``USER login``, expect a final 3xx line (331:
  password needed), send ``PASS passwd``, expect a final 2xx line (230 logged in), send ``QUIT``
  (RFC 959 sections 4.1.1 and 5.4); an empty ``passwd`` becomes ``directord@localhost`` (this
  host's name means nothing to the real server).  The file fetch is not reproduced (it needs a
  second, data connection): ``request``/``receive`` are not used; an ``external`` check (``curl
  ftp://...``) can fetch a file.  A server logging in on ``USER`` alone (230 at once) fails.
- ``pop``, ``pops`` (``sub check_pop``, Mail::POP3Client; ``pops`` with TLS from the start):
  without ``login`` ldirectord counts the server up whatever happens (Mail::POP3Client->new returns
  an object even when it cannot connect); with it, the banner must match ``/^\\+OK/i`` and the login
  must succeed: ``USER`` answered ``/^\\+/``, ``PASS`` answered ``/^\\+OK/`` (after APOP or CRAM-MD5
  when the server offers them), then ``STAT``.  Dialogue: expect ``(?i)^\\+OK`` (RFC 1939 section
  4), then with ``login``: send ``USER login``, expect ``^\\+``, send ``PASS passwd``, expect
  ``^\\+OK``; then send ``QUIT``.  directord always requires the banner, logs in with USER/PASS
  only and sends no ``STAT``.
- ``imap``, ``imaps`` (``sub check_imap``/``check_imaps``, Net::IMAP::Simple): the greeting's
  first line must match ``/^\\*\\s+(?:OK|PREAUTH)/i``; with ``login``, ``LOGIN`` must get a tagged
  ``/^TAG\\s+OK/i``; then ``EXPUNGE`` and ``LOGOUT``.  Dialogue: expect ``(?i)^\\*\\s+(?:OK|PREAUTH)``
  (RFC 3501 section 7.1), then with ``login``: send ``1 LOGIN login "passwd"``, expect
  ``(?im)^1\\s+OK``; then send ``2 LOGOUT``.  The password is a quoted string with ``\\`` and
  ``"`` escaped (Net::IMAP::Simple's ``_escape``, RFC 3501 section 4.3); the user name is sent as
  it is when it is an IMAP atom, as Net::IMAP::Simple sends it, and quoted the same way
  otherwise (sent bare, a name with a space or a quote is a syntax error the server answers
  ``BAD``).  directord sends no ``EXPUNGE`` (it changes nothing before a mailbox is selected).
- ``nntp`` (``sub check_nntp``): the first read (64 bytes at most) must start with ``2``; then
  the connection is closed without a word.  Dialogue: expect ``^2`` (200/201, RFC 3977 section 5.1).
- ``simpletcp`` (``sub check_simpletcp``): sends ``request`` without its leading ``/`` and with
  ``\\n`` (backslash, n) turned into a line feed, shuts its sending side down, then reads lines
  until one matches ``receive`` (a Perl regex).  Dialogue: send the same text (when not empty),
  expect ``(?m)`` + ``receive`` (a line start or end is ``^``/``$`` as in ldirectord's per-line
  match; an empty ``receive`` waits for any byte).  directord does not shut its sending side down:
  a server that answers only at end of input never answers.  ``receive`` must be RE2 syntax.
- ``sip`` over a stream socket (``sub check_sip`` on a TCP virtual service; a UDP one has the
  ``sip`` check type, `checks.protocols.sip`): the OPTIONS request of `checks.protocols.sip.encode_options` for
  ``sip:login`` (``login`` defaults to ``directord@localhost``; ldirectord's is
  ``ldirectord@HOSTNAME``) with ldirectord's constant branch, tag and CSeq, a Via of transport
  ``TCP`` naming no address (over TCP the answer comes back on the connection, RFC 3261 section
  18.2.2), then expect ``^SIP/2\\.0 200 OK`` (ldirectord's test of the status line).
- ``ldap``, ``ldaps`` (``sub check_ldap``, Net::LDAP): a bind (anonymous, or ``login`` and
  ``passwd``), then a base-scope search of ``request`` whose one entry's DN must match
  ``receive``.  That is BER (RFC 4511), not text: no dialogue reproduces it, and
  `ldirectord_dialogue` returns ``None``.  directord offers a connect check for ``ldap`` and a TLS
  handshake (``tls: true``, no dialogue) for ``ldaps``, or an ``external`` check running
  ``ldapsearch``.

Each ``expect`` of these dialogues is followed by ``fail`` steps for the answers on which the
Perl client returns a failure at once: a final 4xx/5xx reply for SMTP and FTP (for FTP's ``USER``
also a final 2xx: a login without password), ``-ERR`` for POP3, a ``BYE`` greeting or a tagged
``NO``/``BAD`` for IMAP, a 4xx/5xx greeting for NNTP, a final 3xx-6xx answer for SIP.  So a server
that refuses and keeps the connection open fails the check on its answer, as under ldirectord,
not at the time limit.

A setting that cannot go into a dialogue raises `SettingError` (a ``ValueError`` naming
ldirectord's key): a ``login``/``passwd`` holding CR, LF or NUL (it would end the command line
early and send a command of its own; `line_problem`), text that is not Latin-1, a ``receive``
RE2 cannot compile, a ``sip`` login `checks.protocols.sip.login_problem` refuses.

`LDIRECTORD_IMPLICIT_TLS` names the services whose dialogue runs over TLS from the first byte.
"""

from __future__ import annotations

import asyncio
import functools
import re
import socket
import ssl
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import re2

from checks.protocols.http import INLINE_SEARCH, compile_body_pattern
from checks.protocols.sip import DEFAULT_USER as SIP_DEFAULT_USER
from checks.protocols.sip import encode_options
from checks.protocols.tcp import socket_address
from checks.protocols.tls import context_for, server_name
from checks.spec import MAX_EXPECT_READ, CheckSpec, DialogueKind

if TYPE_CHECKING:  # pragma: no cover
    from checks.base import CheckTarget

__all__ = [
    "check_dialogue",
    "ldirectord_dialogue",
    "line_problem",
    "LINE_BREAKS",
    "SettingError",
    "LDIRECTORD_DIALOGUES",
    "LDIRECTORD_IMPLICIT_TLS",
    "SMTP_STARTTLS",
]

#: One step of a dialogue, as in `checks.spec.CheckSpec.dialogue`.
Step = tuple[DialogueKind, str]

#: Characters of a reply quoted in a reason, and of a regex.
QUOTE_CHARS = 60

#: Characters a text sent inside one command line must not hold: the line's end (CR, LF; a bare
#: LF ends a line for many servers) and NUL (C servers stop reading a string there).
LINE_BREAKS = "\r\n\0"


def _final_reply(code: str) -> str:
    """RE2 pattern of the last line of a Net::Cmd reply with status ``code`` (a pattern such as
    ``2\\d\\d``): ``CODE SP text`` or ``CODE`` alone at a line start (RFC 5321 section 4.2.1,
    RFC 959 section 4.2; a ``CODE-`` line continues the reply)."""
    return rf"(?m)^{code}(?: |\r?\n)"


_REPLY_2XX = _final_reply(r"2\d\d")
_REPLY_45X = _final_reply(r"[45]\d\d")  # a refusal: transient or permanent negative completion
_POP_ERR = r"(?i)^-ERR"  # RFC 1939 section 3: a negative response
_EHLO = "EHLO localhost.localdomain\r\n"  # Net::SMTP's hello() default domain
_QUIT = "QUIT\r\n"

#: SMTP with STARTTLS (RFC 3207 section 4): the greeting, EHLO, STARTTLS and its 220, the
#: handshake, EHLO again over TLS (section 4.2: the server forgets what it said before), QUIT.
SMTP_STARTTLS: tuple[Step, ...] = (
    ("expect", _REPLY_2XX),
    ("send", _EHLO),
    ("expect", _REPLY_2XX),
    ("send", "STARTTLS\r\n"),
    ("expect", _final_reply("220")),
    ("starttls", ""),
    ("send", _EHLO),
    ("expect", _REPLY_2XX),
    ("send", _QUIT),
)

#: ldirectord services whose check runs over TLS from the first byte (``tls: true``).
LDIRECTORD_IMPLICIT_TLS = frozenset({"pops", "imaps"})

#: The SIP OPTIONS over a stream socket: ldirectord's constant branch, tag and CSeq
#: (``sub check_sip``); its Call-ID is random, this one fixed (one request per connection).
_SIP_BRANCH, _SIP_TAG, _SIP_CALL_ID, _SIP_CSEQ = "z9hG4bKhjhs8ass877", "1928301774", "directord-check", 63104
#: Host of the SIP Via over TCP (RFC 6761 section 6.4: a name that resolves nowhere).
_SIP_VIA_HOST = "directord.invalid"


class SettingError(ValueError):
    """An ldirectord setting that cannot be put into a dialogue.

    Attributes:
        setting: ldirectord's key (``login``, ``passwd``, ``request``, ``receive``); the
            message starts with it.
    """

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(message)
        self.setting = setting


def ldirectord_dialogue(service: str, login: str, passwd: str, request: str, receive: str) -> tuple[Step, ...] | None:
    """The dialogue reproducing ldirectord's negotiate check of ``service``, or ``None``.

    The module's docstring says, service by service, what ldirectord sends and accepts and where
    the dialogue differs.  Run a service of `LDIRECTORD_IMPLICIT_TLS` with ``tls: true``.

    Args:
        service: ldirectord's ``service`` (``smtp``, ``submission``, ``ftp``, ``pop``, ``pops``,
            ``imap``, ``imaps``, ``nntp``, ``simpletcp``, ``sip`` over a stream socket; any other
            gives ``None``).
        login: ldirectord's ``login`` (``""`` when unset); used by ftp (``anonymous`` when
            empty), pop/pops and imap/imaps (no login step when empty), sip (the URI's
            ``user@host``, ``directord@localhost`` when empty).
        passwd: ldirectord's ``passwd`` (``""`` when unset); ftp sends ``directord@localhost``
            when it is empty.
        request: ldirectord's ``request``, with or without the leading ``/`` ldirectord adds;
            used by simpletcp only.
        receive: ldirectord's ``receive``; used by simpletcp only (RE2 syntax required).

    Returns:
        The steps for `checks.spec.CheckSpec.dialogue`, or ``None`` when no dialogue reproduces
        the check (``ldap``, ``ldaps``: binary BER; ``http``, ``dns``...: other check types).

    Raises:
        SettingError: a setting cannot be put into the dialogue (see the module's docstring);
            its ``setting`` is ldirectord's key, its message starts with that key and does not
            quote a ``passwd``.
    """
    if service in ("smtp", "submission"):
        return (
            ("expect", _REPLY_2XX),
            ("fail", _REPLY_45X),
            ("send", _EHLO),
            ("expect", _REPLY_2XX),
            ("fail", _REPLY_45X),
            ("send", _QUIT),
        )
    if service == "nntp":
        return (("expect", "^2"), ("fail", "^[45]"))
    if service == "ftp":
        user = _command_argument("login", login) or "anonymous"
        password = _command_argument("passwd", passwd) or "directord@localhost"
        return (
            ("expect", _REPLY_2XX),
            ("fail", _REPLY_45X),
            ("send", f"USER {user}\r\n"),
            ("expect", _final_reply(r"3\d\d")),
            ("fail", _final_reply(r"[245]\d\d")),
            ("send", f"PASS {password}\r\n"),
            ("expect", _REPLY_2XX),
            ("fail", _REPLY_45X),
            ("send", _QUIT),
        )
    if service in ("pop", "pops"):
        steps: tuple[Step, ...] = (("expect", r"(?i)^\+OK"), ("fail", _POP_ERR))
        if login:
            user, password = _command_argument("login", login), _command_argument("passwd", passwd)
            steps += (
                ("send", f"USER {user}\r\n"),
                ("expect", r"^\+"),
                ("fail", _POP_ERR),
                ("send", f"PASS {password}\r\n"),
                ("expect", r"^\+OK"),
                ("fail", _POP_ERR),
            )
        return steps + (("send", _QUIT),)
    if service in ("imap", "imaps"):
        steps = (("expect", r"(?i)^\*\s+(?:OK|PREAUTH)"), ("fail", r"(?i)^\*\s+BYE"))
        if login:
            user = _command_argument("login", login)
            user = user if _IMAP_ATOM.fullmatch(user) else _imap_quoted(user)
            password = _imap_quoted(_command_argument("passwd", passwd))
            steps += (
                ("send", f"1 LOGIN {user} {password}\r\n"),
                ("expect", r"(?im)^1\s+OK"),
                ("fail", r"(?im)^1\s+(?:NO|BAD)"),
            )
        return steps + (("send", "2 LOGOUT\r\n"),)
    if service == "simpletcp":
        text = request[1:] if request.startswith("/") else request
        text = text.replace("\\n", "\n")
        _latin1("request", text)
        _latin1("receive", receive)
        pattern = f"(?m){receive}" if receive else "(?s)."
        compiled = compile_body_pattern(pattern)
        if isinstance(compiled, str):
            raise SettingError("receive", f"receive is not a regular expression RE2 can match: {compiled}")
        return ((("send", text),) if text else ()) + (("expect", pattern),)
    if service == "sip":
        try:
            options = encode_options(
                login or f"{SIP_DEFAULT_USER}@localhost",
                _SIP_VIA_HOST,
                None,
                _SIP_BRANCH,
                _SIP_TAG,
                _SIP_CALL_ID,
                _SIP_CSEQ,
                transport="TCP",
            )
        except ValueError as exc:
            raise SettingError("login", str(exc)) from None
        return (
            ("send", options.decode("latin-1")),
            ("expect", r"^SIP/2\.0 200 OK"),
            ("fail", r"(?m)^SIP/2\.0 [3-6]\d\d "),  # a final answer other than 2xx
        )
    return None


def line_problem(name: str, text: str) -> str | None:
    """Why ``text`` cannot be sent inside one command line, or ``None``: it holds CR, LF or NUL
    (`LINE_BREAKS`), which would end the command early and let the rest be a command of its
    own.  The message starts with ``name`` and does not quote ``text`` (it may be a password)."""
    if any(c in text for c in LINE_BREAKS):
        return f"{name} must not hold a line break (CR, LF) or NUL: it is sent inside one command line"
    return None


def _latin1(name: str, text: str) -> None:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        raise SettingError(name, f"{name} must be Latin-1 text (it is sent one byte per character)") from None


def _command_argument(name: str, text: str) -> str:
    """``text`` checked for use inside one command line (no CR, LF or NUL; Latin-1)."""
    problem = line_problem(name, text)
    if problem is not None:
        raise SettingError(name, problem)
    _latin1(name, text)
    return text


#: An IMAP atom (RFC 3501 section 9: ``ATOM-CHAR``, with the ``]`` of ``ASTRING-CHAR``): printable
#: ASCII but ``( ) { SP % * " \``.
_IMAP_ATOM = re.compile(r"[!#$&\'+,\-./0-9:;<=>?@A-Z\[\]^_`a-z|}~]+")


def _imap_quoted(text: str) -> str:
    """Net::IMAP::Simple's ``_escape``: ``"text"`` with ``\\`` and ``"`` backslash-escaped (an
    IMAP quoted string, RFC 3501 section 4.3)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


#: ldirectord service -> dialogue of its negotiate check with ldirectord's defaults (no ``login``,
#: ``request`` ``/``, ``receive`` empty); `ldirectord_dialogue` builds one from other settings.
LDIRECTORD_DIALOGUES: dict[str, tuple[Step, ...]] = {
    service: steps
    for service in ("smtp", "submission", "ftp", "pop", "pops", "imap", "imaps", "nntp", "simpletcp", "sip")
    if (steps := ldirectord_dialogue(service, "", "", "/", "")) is not None
}


# --- the check -----------------------------------------------------------------------------------

_SEND, _EXPECT, _STARTTLS, _FAIL = 0, 1, 2, 3
_KINDS = {"send": _SEND, "expect": _EXPECT, "starttls": _STARTTLS, "fail": _FAIL}

#: A planned step: (kind, data, text, fails): data is the bytes sent, the compiled regex, or
#: ``None``; fails are the compiled ``fail`` regexes of an expect (the ``fail`` steps after it,
#: which are planned as steps that do nothing).
_Planned = tuple[int, "bytes | re2._Regexp | None", str, "tuple[re2._Regexp, ...]"]


@functools.lru_cache(maxsize=1024)
def _plan(dialogue: tuple[Step, ...]) -> tuple[_Planned, ...] | str:
    """The steps with their bytes encoded and regexes compiled, or the reason of a step that
    cannot run (the loader refuses them already; this keeps the check honest without it)."""
    planned: list[_Planned] = []
    expect = -1  # index in planned of the expect the next fail steps belong to; -1: none
    for number, (kind, text) in enumerate(dialogue, 1):
        code = _KINDS.get(kind)
        if code == _SEND:
            try:
                planned.append((_SEND, text.encode("latin-1"), text, ()))
            except UnicodeEncodeError:
                return f"dialogue step {number}: send is not Latin-1 text"
            expect = -1
        elif code == _EXPECT or code == _FAIL:
            compiled = compile_body_pattern(text)
            if isinstance(compiled, str):
                return _clip(f"dialogue step {number}: bad {kind} regex: {compiled}")
            if code == _EXPECT:
                expect = len(planned)
                planned.append((_EXPECT, compiled, text, ()))
            elif expect < 0:
                return f"dialogue step {number}: fail must follow an expect step"
            else:
                step = planned[expect]
                planned[expect] = (step[0], step[1], step[2], step[3] + (compiled,))
                planned.append((_FAIL, None, text, ()))
        elif code == _STARTTLS:
            planned.append((_STARTTLS, None, text, ()))
            expect = -1
        else:
            return _clip(f"dialogue step {number}: unknown step {kind!r}")
    return tuple(planned)


_matcher: ThreadPoolExecutor | None = None


def _match_end(pattern: re2._Regexp, text: str) -> int:
    found = pattern.search(text)
    return -1 if found is None else found.end()


async def _search(pattern: re2._Regexp, text: str) -> int:
    """End of ``pattern``'s first match in ``text``, or -1.  A search that may take more than about
    a millisecond runs on a thread of its own (RE2 releases the GIL), as `checks.protocols.http.body_matches`."""
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
    for number, (kind, data, text, fails) in enumerate(plan, 1):
        if kind == _FAIL:
            continue  # its regex is its expect's (`_plan`)
        if kind == _SEND:
            if conversation.closed:
                return False, _closed(number, conversation)
            conversation.forget()
            consumed = -1
            assert conversation.transport is not None and isinstance(data, bytes)
            conversation.transport.write(data)
        elif kind == _EXPECT:
            assert not isinstance(data, bytes) and data is not None
            end = await _expect(conversation, data, fails)
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


async def _expect(conversation: _Conversation, pattern: re2._Regexp, fails: tuple[re2._Regexp, ...] = ()) -> int | str:
    """Read until ``pattern`` matches; the end of its match, ``""`` when the connection ended
    first, or the reason of a failure (one of ``fails`` matched first, or no match in time)."""
    received = conversation.received
    searched = -1
    while True:
        size = min(len(received), MAX_EXPECT_READ + 1)
        if size != searched:
            searched = size
            text = received[:MAX_EXPECT_READ].decode("latin-1")
            end = await _search(pattern, text)
            if end >= 0:
                return end
            for fail in fails:
                if await _search(fail, text) >= 0:
                    return _clip(f"reply matches fail {_quote_regex(fail.pattern)}: {_quote(received)}")
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
