"""DNS check: one query to the real server, the reply judged by its rcode and answer section.

The query (RFC 1035 section 4.1) asks for ``spec.query_name`` / ``spec.query_type`` in class
IN, with recursion desired (RD) and no EDNS, as ldirectord's ``check_dns`` does through
Net::DNS's resolver (Net::DNS 1.36: RD set, a UDP size of 512, so no OPT record).  It goes to
RIP:port over ``spec.transport``, by default the virtual service's protocol as in ldirectord:
UDP from a connected socket, or TCP with the 2-byte length prefix of RFC 1035 section 4.2.2.

- passes: a reply to this query (same ID, QR set, same question; RFC 1035 section 7.3) whose
  rcode is ``spec.expect_rcode`` (RFC 1035 section 4.1.1; default ``NOERROR``) and, when
  ``spec.expect`` is set, whose answer section rendered as zone-file text, one record per line
  (``ok.test. 0 IN A 192.0.2.7``), matches that RE2 regex (reason ``"DNS NOERROR, 1 answer"``).
  Without ``expect`` only the header and the question are read (`judge_reply`);
- fails: another rcode (``"DNS rcode NXDOMAIN"``); the answer does not match (``"answer does not
  match '192\\.0\\.2\\.7'"``); a truncated UDP reply (``"reply truncated (TC); use transport:
  tcp"``); a malformed answer section (with ``expect``); an ICMP port unreachable (``"ICMP port
  unreachable"``, at once) or another ICMP error (``"no route to host"``..., at once too:
  `checks.protocols.udp.report_icmp_errors`); a refused TCP connection; no reply within ``spec.timeout``
  (`checks.base.run_check`'s ``timed_out``).

Over UDP a datagram that is not a reply to this query (another ID or question: a stray or a
spoofed one) is ignored and the check goes on waiting, up to `MAX_STRAYS` of them.  Over TCP
the one reply read must answer the query.

ldirectord (``sub check_dns``) differs: it asks with ``Net::DNS::Resolver->search`` for the
``request=`` name (type A, the resolver's search list appended to a name without dots) and
passes only when an A or PTR record of the answer has an address or name matching
``receive=`` (a Perl regex, which must be non-empty); any other rcode, or no answer, fails.
Here the type, the rcode that passes and the pattern are settings, the pattern applies to
every record of the answer (any type, in text), it is optional, and the name is asked as it is
written (no search list: a name is absolute).
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
from typing import TYPE_CHECKING

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from checks.protocols.http import body_matches, compile_body_pattern
from checks.protocols.tcp import socket_address
from checks.protocols.udp import report_icmp_errors

if TYPE_CHECKING:  # pragma: no cover
    from checks.base import CheckTarget

__all__ = ["check_dns", "query_wire", "answers_query", "judge_reply", "MAX_STRAYS", "TRUNCATED"]

#: Datagrams that do not answer the query (another ID or question) ignored by one UDP check
#: before it fails: a flood of them would otherwise keep the check reading without ever
#: yielding to the event loop.
MAX_STRAYS = 64

#: The reason of a truncated reply over UDP.
TRUNCATED = "reply truncated (TC); use transport: tcp"

#: Largest DNS message read: what a UDP datagram and a TCP length prefix can carry.
MAX_MESSAGE = 65535

_HEADER = 12  # RFC 1035 section 4.1.1
_QR = 0x80  # in the third header byte
_TC = 0x02  # in the third header byte
_OPCODE = 0x78  # in the third header byte


@functools.lru_cache(maxsize=4096)
def query_wire(name: str, rdtype: str) -> bytes:
    """The wire form of the query for ``name``/``rdtype`` (class IN, RD set, no EDNS), with
    ID 0; cached.  A check copies it with its own ID in the first two bytes.

    Args:
        name: a DNS name; relative names are taken as absolute (``ok.test`` = ``ok.test.``).
        rdtype: a record type name (``A``, ``AAAA``, ``MX``...), any case.

    Raises:
        dns.exception.DNSException: not a DNS name, or an unknown type (the loader refuses both).
    """
    query = dns.message.make_query(name, dns.rdatatype.from_text(rdtype.upper()), dns.rdataclass.IN)
    query.id = 0
    query.flags = dns.flags.RD
    return query.to_wire()


@functools.lru_cache(maxsize=16)
def _rcode(text: str) -> int:
    return int(dns.rcode.from_text(text.upper()))


#: The names of the 16 rcodes of the header (RFC 1035 section 4.1.1, RFC 6895 section 2.3);
#: unassigned ones by number.
_RCODE_TEXT = tuple(dns.rcode.to_text(dns.rcode.Rcode.make(value)) for value in range(16))


def answers_query(reply: bytes, query: bytes) -> bool:
    """Whether ``reply`` is a response to ``query`` (both wire forms, ``query`` holding one
    question): the same ID, QR set, the same opcode, and the same question (the name compared
    without case, RFC 1035 section 2.3.3; type and class byte for byte) or, for an error rcode
    other than NXDOMAIN, no question at all (RFC 1035 section 7.3; many servers send FORMERR,
    SERVFAIL, NOTIMP, REFUSED without it).  Reads only the header and the question; never
    raises.
    """
    if len(reply) < _HEADER or reply[:2] != query[:2] or not reply[2] & _QR:
        return False
    if (reply[2] ^ query[2]) & _OPCODE:
        return False
    if reply[4:6] == b"\x00\x00":
        return reply[3] & 0x0F not in (0, 3)  # NOERROR, NXDOMAIN come with their question
    if reply[4:6] != b"\x00\x01":
        return False
    question = query[_HEADER:]
    end = _HEADER + len(question)
    if len(reply) < end:
        return False
    # the question's name is the message's first: no compression pointer can stand in for it
    return reply[end - 4 : end] == question[-4:] and reply[_HEADER : end - 4].lower() == question[:-4].lower()


async def judge_reply(
    reply: bytes,
    expect_rcode: str,
    pattern_text: str | None,
    *,
    udp: bool,
) -> tuple[bool, str]:
    """Judge a reply that `answers_query`: truncation, rcode, then the answer section.

    The rcode is the header's 4 bits (RFC 1035 section 4.1.1): the query has no EDNS, so the
    reply may not carry the upper bits (RFC 6891 section 7).  The records are decoded (with
    dnspython, about 80 us for a one-record reply, the most costly part of a check) only when
    there is a pattern to match; without one, the header and question alone decide.

    Args:
        reply: the reply's wire form, at least its header.
        expect_rcode: the rcode that passes (``NOERROR``, ``NXDOMAIN``...).
        pattern_text: RE2 regex searched for in the answer section as zone-file text (one
            record per line), or ``None`` to accept any answer.
        udp: the reply came over UDP (a truncated reply then names TCP as the remedy).

    Returns:
        ``(ok, reason)``: ``(True, "DNS NOERROR, 2 answers")`` (the header's answer count),
        ``(False, "DNS rcode SERVFAIL")``, ``(False, TRUNCATED)``, ``(False, "answer does not
        match 'x'")``, ``(False, "malformed DNS reply: ...")``, ``(False, "bad expect regex: ...")``.
    """
    if reply[2] & _TC:
        return False, TRUNCATED if udp else "reply truncated (TC)"
    rcode = reply[3] & 0x0F
    if rcode != _rcode(expect_rcode):
        return False, f"DNS rcode {_RCODE_TEXT[rcode]}"
    count = int.from_bytes(reply[6:8], "big")
    if pattern_text is not None:
        pattern = compile_body_pattern(pattern_text)
        if isinstance(pattern, str):
            return False, f"bad expect regex: {pattern}"
        try:
            message = dns.message.from_wire(reply, ignore_trailing=True)
        except (dns.exception.DNSException, ValueError, IndexError) as exc:
            return False, f"malformed DNS reply: {str(exc) or type(exc).__name__}"
        text = "\n".join(rrset.to_text() for rrset in message.answer)
        if not await body_matches(pattern, text):
            return False, f"answer does not match {pattern_text!r}"
    return True, f"DNS {_RCODE_TEXT[rcode]}, {count} answer{'' if count == 1 else 's'}"


async def check_dns(target: CheckTarget) -> tuple[bool, str]:
    """Ask ``target.rip``:``target.rport`` one DNS query and judge the reply (see the module).

    Returns:
        ``(ok, reason)`` as `judge_reply`, or ``(False, "ICMP port unreachable")``, ``(False,
        "server closed the connection")`` (TCP), ``(False, "64 datagrams that do not answer
        the query")`` (UDP, `MAX_STRAYS`).

    Raises:
        OSError: connecting, sending or receiving failed (TCP ``ECONNREFUSED``, an ICMP host
            unreachable...).
        ValueError: ``spec.query_name`` is unset, or ``target.rip`` is not an IP address.
        dns.exception.DNSException: ``query_name`` or ``query_type`` is not valid (the loader
            refuses both).
    """
    spec = target.spec
    if not spec.query_name:
        raise ValueError("a dns check needs query_name")
    cached = query_wire(spec.query_name, spec.query_type)
    query = os.urandom(2) + cached[2:]
    family, sockaddr = socket_address(target.rip, target.rport)
    loop = asyncio.get_running_loop()
    if spec.transport == "tcp":
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, sockaddr)
            await loop.sock_sendall(sock, len(query).to_bytes(2, "big") + query)
            prefix = await _read_exactly(loop, sock, 2)
            reply = None if prefix is None else await _read_exactly(loop, sock, int.from_bytes(prefix, "big"))
        finally:
            sock.close()
        if reply is None:
            return False, "server closed the connection"
        if not answers_query(reply, query):
            return False, "reply does not answer the query (another ID or question)"
        return await judge_reply(reply, spec.expect_rcode, spec.expect, udp=False)
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        report_icmp_errors(sock, family)
        sock.connect(sockaddr)  # UDP: no packet, never blocks; from now on only its datagrams arrive
        await loop.sock_sendall(sock, query)
        for _ in range(MAX_STRAYS + 1):
            reply = await loop.sock_recv(sock, MAX_MESSAGE)
            if answers_query(reply, query):
                break
        else:
            return False, f"{MAX_STRAYS + 1} datagrams that do not answer the query"
    except ConnectionRefusedError:
        return False, "ICMP port unreachable"
    finally:
        sock.close()
    return await judge_reply(reply, spec.expect_rcode, spec.expect, udp=True)


async def _read_exactly(loop: asyncio.AbstractEventLoop, sock: socket.socket, size: int) -> bytes | None:
    """``size`` bytes (at most `MAX_MESSAGE`) from a stream socket, or None at end of stream."""
    chunks: list[bytes] = []
    missing = size
    while missing > 0:
        chunk = await loop.sock_recv(sock, missing)
        if not chunk:
            return None
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks) if len(chunks) != 1 else chunks[0]
