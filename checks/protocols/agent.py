"""The agent check: a real server says how much traffic it wants (HAProxy's ``agent-check``).

A small TCP agent on the real server answers each connection with one ASCII line and closes it
(HAProxy configuration manual, section 5.2, ``agent-check``).  The line is a list of words
separated by commas, spaces or tabs; directord reads the words HAProxy documents:

- a percentage such as ``75%``: the real server's weight becomes that share of its configured
  weight (rounded to the nearest, at least 1 when the share is above 0%, at most 65535, the
  IPVS maximum; ``0%`` is weight 0, as ``drain``);
- ``up`` or ``ready``: in service (at the weight the percentage gives, else the configured one);
- ``drain``: in service at weight 0: no new connections, those open go on (IPVS quiescence);
- ``down``, ``fail``, ``stopped``, ``maint``: out of service (the check fails; ``maint`` is the
  agent's way of asking for maintenance, which directord treats as a failed check: the operator's
  own maintenance is ``directord rs disable``);
- anything else (``maxconn:N``, a word HAProxy added later, a ``#`` comment) is ignored.

Later words win over earlier ones of the same kind (``down 50%`` is down; ``50% up`` is up at
half weight).  HAProxy also lets an agent's ``down`` take a server out only together with its
health check; with directord the agent is queried after the check passed (``agent_port`` beside
any check type, `checks.base.run_check`), so its ``down`` fails that check, and an agent that
cannot be reached leaves the check's verdict and the configured weight (HAProxy: an unreachable
agent does not change the server's state).

`parse_agent_reply` is pure; `query_agent` does the I/O (one TCP connection, at most
`MAX_AGENT_REPLY` bytes read, the line ending at the first newline or at end of stream).
"""

from __future__ import annotations

import asyncio
import re
import socket
from dataclasses import dataclass
from typing import Literal

from checks.protocols.tcp import socket_address

__all__ = ["AgentReply", "MAX_AGENT_REPLY", "agent_weight", "parse_agent_reply", "query_agent"]

#: Most bytes read from an agent: HAProxy reads one buffer; a line of words is short.
MAX_AGENT_REPLY = 1024

#: The largest IPVS destination weight (``IPVS_DEST_ATTR_WEIGHT`` is a u32, but ipvsadm and
#: keepalived cap it at 65535).
MAX_WEIGHT = 65535

_WORD_SPLIT = re.compile(r"[,\s]+")
_PERCENT = re.compile(r"(\d{1,6})%")

AgentState = Literal["up", "drain", "down"]


@dataclass(frozen=True)
class AgentReply:
    """What an agent's line asks for.

    Attributes:
        state: ``"up"`` (no state word, or ``up``/``ready``), ``"drain"`` or ``"down"``
            (``down``/``fail``/``stopped``/``maint``).
        percent: the last percentage in the line (0-999999), ``None`` without one.
        word: the state word that decided ``state`` (``"maint"``...), ``None`` without one.
    """

    state: AgentState = "up"
    percent: int | None = None
    word: str | None = None


_STATES: dict[str, AgentState] = {
    "up": "up",
    "ready": "up",
    "drain": "drain",
    "down": "down",
    "fail": "down",
    "stopped": "down",
    "maint": "down",
}


def parse_agent_reply(data: bytes) -> AgentReply:
    """Parse an agent's reply (bytes as received; only the first line counts).

    Words are matched without regard to case; bytes that are not ASCII end no word but match
    none.  Pure function.

    Returns:
        The `AgentReply`; an empty or unintelligible line is ``AgentReply()`` (up, no percent).
    """
    line = data.split(b"\n", 1)[0].decode("ascii", errors="replace")
    line = line.split("#", 1)[0]
    reply = AgentReply()
    for word in _WORD_SPLIT.split(line.strip().lower()):
        if not word:
            continue
        state = _STATES.get(word)
        if state is not None:
            reply = AgentReply(state, reply.percent, word)
            continue
        match = _PERCENT.fullmatch(word)
        if match is not None:
            reply = AgentReply(reply.state, int(match.group(1)), reply.word)
    return reply


def agent_weight(reply: AgentReply, configured: int) -> int | None:
    """The IPVS weight ``reply`` gives a real server of ``configured`` weight.

    Returns:
        ``None`` when the reply asks for no weight (no percentage, state up: the configured
        weight stays), ``0`` for ``drain`` or ``0%``, else ``configured`` times the percentage,
        rounded half up, at least 1 and at most `MAX_WEIGHT`.  For a ``down`` reply the weight
        does not matter (the real server is out); this returns what the percentage gives.
    """
    if reply.state == "drain":
        return 0
    if reply.percent is None:
        return None
    if reply.percent == 0:
        return 0
    return max(1, min(MAX_WEIGHT, (configured * reply.percent + 50) // 100))


async def query_agent(address: str, port: int, send: bytes = b"") -> bytes:
    """Connect to the agent at ``address``:``port``, send ``send`` (HAProxy's ``agent-send``;
    may be empty) and read its reply until a newline, end of stream or `MAX_AGENT_REPLY` bytes.

    Returns:
        The bytes read (possibly empty: an agent that closes at once says nothing).

    Raises:
        OSError: the connection failed or was reset.
        ValueError: ``address`` is not an IP address.
    """
    family, sockaddr = socket_address(address, port)
    loop = asyncio.get_running_loop()
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        await loop.sock_connect(sock, sockaddr)
        if send:
            await loop.sock_sendall(sock, send)
        data = b""
        while len(data) < MAX_AGENT_REPLY and b"\n" not in data:
            chunk = await loop.sock_recv(sock, MAX_AGENT_REPLY - len(data))
            if not chunk:
                break
            data += chunk
        return data
    finally:
        sock.close()
