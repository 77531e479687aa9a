"""SIP check (RFC 3261): one OPTIONS request over UDP, and its final response.

The request is ldirectord's (``sub check_sip`` in ``/usr/sbin/ldirectord``),
header for header::

    OPTIONS sip:<login> SIP/2.0
    Via: SIP/2.0/UDP <our address>:<our port>;branch=z9hG4bK<random>
    Max-Forwards: 70
    To: <sip:<login>>
    From: <sip:<login>>;tag=<random>
    Call-ID: <random>
    CSeq: 1 OPTIONS
    Contact: <sip:<login>>
    Accept: application/sdp
    Content-Length: 0

``login`` is ``spec.login``, the URI's ``user@host``; unset, it is
``directord@<RIP>`` (ldirectord uses ``ldirectord@<its own hostname>``: a
name the real server need not know, where the RIP is its own address).
ldirectord's branch and tag are constants; here the branch (with RFC 3261's
magic cookie ``z9hG4bK``, section 8.1.1.7), the tag and the Call-ID are random
for each check, so that a late answer to an earlier check cannot pass for the
answer to this one.

The reply must be a SIP response (``SIP/2.0 <code> <reason>``, RFC 3261
section 7.2) to that request: the same Call-ID, the same CSeq (number and
method), and the top Via's branch ours (section 17.1.3); at most
`MAX_HEADERS` header lines, at most `checks.spec.MAX_EXPECT_READ` bytes.  The
compact header names ``i`` (Call-ID) and ``v`` (Via) are understood (section
7.3.3).  Provisional responses (1xx) are skipped, at most `MAX_PROVISIONAL`
of them; the first final response decides:

* without ``spec.expect``: status code 200 passes, any other fails with the
  status as reason (``"SIP/2.0 404 Not Found"``).  ldirectord requires the
  status line to start with ``SIP/2.0 200 OK``; here the reason phrase is not
  looked at (RFC 3261 section 21: it is for humans), so ``SIP/2.0 200 Fine``
  passes too;
* with ``spec.expect``: the status line must match that RE2 regex (searched,
  as every ``expect``), whatever its code.

An ICMP port unreachable fails the check at once (``"ICMP port unreachable"``).
ldirectord sends the request over the virtual service's protocol; directord
offers ``sip`` to UDP services only, so it is always UDP.  The time limit is
applied by the caller (`checks.base.run_check`).
"""

from __future__ import annotations

import functools
import os
import socket
from typing import TYPE_CHECKING, NamedTuple

from checks.protocols.datagram import PORT_UNREACHABLE, connected_udp_socket, exchange
from checks.protocols.http import body_matches, compile_body_pattern
from checks.spec import MAX_EXPECT_READ

if TYPE_CHECKING:  # pragma: no cover
    from checks.base import CheckTarget

__all__ = [
    "check_sip",
    "encode_options",
    "parse_response",
    "decode_reply",
    "default_login",
    "login_problem",
    "SipResponse",
]

#: User part of the URI when ``spec.login`` is unset: ``directord@<RIP>``.
DEFAULT_USER = "directord"
#: The request's CSeq number (RFC 3261 section 8.1.1.5: any number below 2**31).
CSEQ = 1
#: Most header lines (continuation lines included) read in a response.
MAX_HEADERS = 64
#: Most provisional (1xx) responses skipped before a final one.
MAX_PROVISIONAL = 8
#: The RFC 3261 branch prefix (section 8.1.1.7).
MAGIC_COOKIE = "z9hG4bK"

#: Compact header names (RFC 3261 section 7.3.3) of the headers read.
_COMPACT = {"i": "call-id", "v": "via"}
_WANTED = frozenset(("call-id", "cseq", "via"))


class SipResponse(NamedTuple):
    """What a check reads of a SIP response.

    Attributes:
        status_line: the first line, e.g. ``"SIP/2.0 200 OK"`` (UTF-8, invalid bytes replaced).
        code: the status code, 100 to 699.
        call_id: the Call-ID header's value, ``None`` when absent.
        cseq: the CSeq header's value, ``None`` when absent.
        branch: the ``branch`` parameter of the top Via, ``None`` when absent.
    """

    status_line: str
    code: int
    call_id: str | None
    cseq: str | None
    branch: str | None


@functools.lru_cache(maxsize=4096)
def default_login(rip: str) -> str:
    """``directord@<rip>``: IPv6 in brackets (RFC 3261 section 25.1), without a zone."""
    address = rip.partition("%")[0]
    return f"{DEFAULT_USER}@[{address}]" if ":" in address else f"{DEFAULT_USER}@{address}"


def login_problem(login: str) -> str | None:
    """Why ``login`` cannot be the OPTIONS request's ``user@host``, or ``None`` when it can.

    Refused: an empty login, white space, control characters (CR, LF, NUL and the other C0
    codes, DEL), ``<`` and ``>``: each would end a header line early or the ``<sip:...>`` of
    To, From and Contact, and let the login write headers of its own; a lone surrogate (the
    request is UTF-8).  The configuration
    loader refuses such a login with this text (which quotes at most 60 characters of it).
    """
    if not login or any(ch.isspace() or ord(ch) < 0x20 or ch in "<>\x7f" for ch in login):
        shown = login if len(login) <= 60 else login[:60] + "..."
        return f"sip login must be user@host without spaces, control characters or <>, got {shown!r}"
    try:
        login.encode()
    except UnicodeEncodeError:
        return "sip login must be text UTF-8 can encode (it holds a lone surrogate)"
    return None


@functools.lru_cache(maxsize=4096)
def _checked_login(login: str) -> str:
    problem = login_problem(login)
    if problem is not None:
        raise ValueError(problem)
    return login


def encode_options(
    login: str,
    host: str,
    port: int | None,
    branch: str,
    tag: str,
    call_id: str,
    cseq: int = CSEQ,
    transport: str = "UDP",
) -> bytes:
    """The OPTIONS request (RFC 3261 section 11.1) as ldirectord's ``check_sip`` sends it.

    Args:
        login: the Request-URI's ``user@host`` (also To, From and Contact).
        host: our local address (or a name), in the Via (IPv6 is put in brackets here).
        port: our local port, in the Via; ``None`` writes the Via's sent-by without a port
            (RFC 3261 section 20.42: the port is optional).
        branch: the Via branch, starting with ``z9hG4bK``.
        tag: the From tag.
        call_id: the Call-ID.
        cseq: the CSeq number.
        transport: the Via's transport, ``UDP`` or ``TCP`` (section 18: over TCP the response
            comes back on the request's connection, whatever the Via names).

    Returns:
        The request, UTF-8, CRLF line ends, no body.

    Raises:
        ValueError: ``login`` is empty or holds spaces, control characters, ``<`` or ``>``
            (it would break the request's lines).
    """
    login = _checked_login(login)
    via_host = f"[{host}]" if ":" in host else host
    sent_by = via_host if port is None else f"{via_host}:{port}"
    return (
        f"OPTIONS sip:{login} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {sent_by};branch={branch}\r\n"
        "Max-Forwards: 70\r\n"
        f"To: <sip:{login}>\r\n"
        f"From: <sip:{login}>;tag={tag}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} OPTIONS\r\n"
        f"Contact: <sip:{login}>\r\n"
        "Accept: application/sdp\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def parse_response(data: bytes) -> SipResponse:
    """Read the status line, Call-ID, CSeq and top Via branch of a SIP response.

    Lines end with CRLF (a bare LF is taken too); the header section ends at
    the first empty line, and the body is not read.  Folded header lines
    (starting with a space or tab) continue the previous header.  The first
    Call-ID and CSeq headers count; the top Via is the first value of the
    first Via header.

    Raises:
        ValueError: not a ``SIP/2.0`` status line with a 3-digit code 100-699,
            more than `MAX_HEADERS` header lines, a header line without a colon.
    """
    head = data.split(b"\r\n\r\n", 1)[0]
    lines = head.split(b"\n", MAX_HEADERS + 1)
    if len(lines) > MAX_HEADERS + 1:
        raise ValueError(f"SIP reply with more than {MAX_HEADERS} header lines")
    status_line = lines[0].rstrip(b"\r").decode("utf-8", errors="replace")
    version, _, rest = status_line.partition(" ")
    digits = rest[:3]
    if version != "SIP/2.0" or not (digits.isascii() and digits.isdigit()) or rest[3:4] not in ("", " "):
        raise ValueError(f"not a SIP response: {status_line[:60]!r}")
    code = int(digits)
    if not 100 <= code <= 699:
        raise ValueError(f"SIP status code {code} out of 100-699")
    headers: dict[str, str] = {}
    name = ""
    for number, raw in enumerate(lines[1:], start=2):
        line = raw.rstrip(b"\r").decode("utf-8", errors="replace")
        if not line:
            break  # end of the header section (bare LF line ends)
        if line[0] in " \t":
            if name in _WANTED and name in headers:
                headers[name] += " " + line.strip()
            continue
        field, colon, value = line.partition(":")
        if not colon:
            raise ValueError(f"SIP reply line {number} is not a header")
        name = field.strip().lower()
        name = _COMPACT.get(name, name)
        if name in _WANTED and name not in headers:
            headers[name] = value.strip()
        elif name in _WANTED:
            name = ""  # a later Call-ID/CSeq/Via: its continuation lines do not count either
    branch = None
    via = headers.get("via")
    if via is not None:
        for parameter in via.split(",", 1)[0].split(";")[1:]:
            key, _, value = parameter.partition("=")
            if key.strip().lower() == "branch":
                branch = value.strip()
                break
    return SipResponse(status_line, code, headers.get("call-id"), headers.get("cseq"), branch)


def decode_reply(data: bytes, call_id: str, cseq: int, branch: str) -> SipResponse:
    """Parse ``data`` (`parse_response`) and check it answers our OPTIONS.

    Raises:
        ValueError: longer than `checks.spec.MAX_EXPECT_READ` bytes, not a SIP
            response, or another Call-ID, CSeq (number and method, RFC 3261
            section 8.1.3.3) or top Via branch (section 17.1.3), with a short reason.
    """
    if len(data) > MAX_EXPECT_READ:
        raise ValueError(f"SIP reply longer than {MAX_EXPECT_READ} bytes")
    response = parse_response(data)
    if response.call_id != call_id:
        raise ValueError("SIP reply Call-ID does not match")
    if response.cseq is None or response.cseq.split() != [str(cseq), "OPTIONS"]:
        raise ValueError("SIP reply CSeq does not match")
    if response.branch != branch:
        raise ValueError("SIP reply Via branch does not match")
    return response


def _local_host_port(sock: socket.socket) -> tuple[str, int]:
    name = sock.getsockname()
    return name[0].partition("%")[0], name[1]


async def check_sip(target: CheckTarget) -> tuple[bool, str]:
    """Send one OPTIONS to ``target.rip``:``target.rport`` and judge the final response.

    See the module's text for the request, the validation and what passes
    (ldirectord's ``sub check_sip``, and where directord differs).

    Returns:
        ``(ok, reason)``: the reason is the status line (``"SIP/2.0 200 OK"``),
        with ``"does not match ..."`` when ``expect`` refused it, or
        ``"ICMP port unreachable"``, or the reason a reply is not a valid answer
        (`decode_reply`'s, e.g. ``"SIP reply Call-ID does not match"``, or more
        than `MAX_PROVISIONAL` provisional responses).

    Raises:
        ValueError: an ``expect`` RE2 cannot compile, a bad ``login``.
        OSError: a socket error (``EHOSTUNREACH``...).
    """
    spec = target.spec
    pattern = None
    if spec.expect is not None:
        compiled = compile_body_pattern(spec.expect)
        if isinstance(compiled, str):
            raise ValueError(f"bad expect regex: {compiled}")
        pattern = compiled
    login = spec.login or default_login(target.rip)
    sock = connected_udp_socket(target.rip, target.rport)
    provisional = 0

    def accept(data: bytes) -> SipResponse | None:
        nonlocal provisional
        response = decode_reply(data, call_id, CSEQ, branch)
        if response.code >= 200:
            return response
        provisional += 1
        if provisional > MAX_PROVISIONAL:
            raise ValueError(f"more than {MAX_PROVISIONAL} provisional SIP responses")
        return None

    try:
        nonce = os.urandom(24).hex()
        branch, tag, call_id = MAGIC_COOKIE + nonce[:16], nonce[16:24], nonce[24:]
        host, port = _local_host_port(sock)
        request = encode_options(login, host, port, branch, tag, call_id)
        try:
            response = await exchange(sock, request, MAX_EXPECT_READ + 1, accept)
        except ValueError as exc:  # the reply is not a valid answer: its reason as it is
            return False, str(exc)
    except ConnectionRefusedError:
        return False, PORT_UNREACHABLE
    finally:
        sock.close()
    status = response.status_line
    if pattern is not None:
        if await body_matches(pattern, status):
            return True, status
        return False, f"{status} does not match {spec.expect!r}"
    return response.code == 200, status
