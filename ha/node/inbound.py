"""Admission of received datagrams, before any peer state is touched: signature
(authkeys), the fields every heartbeat message needs (``t``, ``src``, ``ts``,
``seq`` unless an ``NS_*`` type, ``hg``), our own packets coming back, unknown
senders; and the account of rejected datagrams per source address.

Pure: no I/O, no clock reads (times are monotonic seconds passed in).

Protocol sources (facts only): heartbeat 3.0.6 ``heartbeat/heartbeat.c``
(``process_clustermsg``: the checks of ``t``/``src``/``seq``/``hg``; ``ts``
and ``seq`` are hexadecimal, ``firstseq``/``lastseq`` of ``NS_rexmit``
decimal), ``lib/clplumbing/cl_msg.c`` (``destuuid`` / ``dest`` addressing).
"""

from __future__ import annotations

import logging
from collections.abc import Container
from dataclasses import dataclass

from ha.auth import AuthKeys
from ha.node.api import MAX_REJECT_SOURCES
from ha.wire import (
    BadAuth,
    MalformedPacket,
    Message,
    UnknownAuthIndex,
    WireError,
    decode_packet,
    is_noseq_type,
)

__all__ = ["Dropped", "Inbound", "RejectLedger", "addressed_to", "admit", "parse_dec", "parse_hex"]

_HEXDIGITS = frozenset("0123456789abcdefABCDEF")


def parse_hex(text: str | None) -> int | None:
    """A hexadecimal field (at most 16 digits) as an int; None if absent or malformed."""
    if text is None or not text or len(text) > 16 or not _HEXDIGITS.issuperset(text):
        return None
    return int(text, 16)


def parse_dec(text: str | None) -> int | None:
    """A decimal field (ASCII digits, at most 19) as an int; None if absent or malformed."""
    if text is None or not text.isascii() or not text.isdigit() or len(text) > 19:
        return None
    return int(text)


@dataclass(frozen=True)
class Inbound:
    """An admitted message from a known peer: its type, sender (`peer_key` is the
    lower-case name), `seq` (0 for ``NS_*`` types, `noseq`), generation `gen`,
    ``ts`` and ``srcuuid`` (None if absent)."""

    msg: Message
    mtype: str
    src: str
    peer_key: str
    seq: int
    gen: int
    ts: int
    noseq: bool
    srcuuid: bytes | None


@dataclass(frozen=True)
class Dropped:
    """A datagram not admitted: count it as `counter` (a key of
    `ha.node.api.COUNTERS`; also per source address when `per_source`), and
    log `message` at `level` at most once per 10 s per `log_key` (None: no log)."""

    counter: str
    per_source: bool = False
    log_key: str | None = None
    level: int = logging.WARNING
    message: str = ""


def admit(
    data: bytes, source: str, keys: AuthKeys, *, me: str, uuid: bytes, peers: Container[str]
) -> Inbound | Dropped:
    """Check a datagram received from `source` (an address, for logs).

    Args:
        keys: the authkeys the signature is checked with.
        me: our node name, lower case; uuid: our uuid (16 bytes).
        peers: the lower-case names of the other nodes.

    Returns an `Inbound` for a well-formed, authentic message from a known
    peer, else a `Dropped` saying why. Exceptions other than the codec's
    (`ha.wire` errors, ``TypeError``) propagate.
    """
    try:
        msg = decode_packet(data, keys)
    except UnknownAuthIndex as exc:
        return Dropped(
            "unknown_auth_index", True, "auth-index", logging.WARNING, f"packet from {source} dropped: {exc}"
        )
    except BadAuth as exc:
        return Dropped(
            "bad_auth", True, "bad-auth", logging.WARNING, f"packet from {source} failed authentication: {exc}"
        )
    except (MalformedPacket, WireError, TypeError) as exc:
        return Dropped("malformed", True, "malformed", logging.WARNING, f"malformed packet from {source}: {exc}")
    mtype = msg.get("t")
    src = msg.get("src")
    ts_text = msg.get("ts")
    if not mtype or not src or ts_text is None:
        return Dropped("malformed", True, "fields", logging.WARNING, f"packet from {source} lacks t, src or ts")
    ts = parse_hex(ts_text)
    if not ts:
        return Dropped(
            "malformed", False, "fields", logging.WARNING, f"packet from {source} has a bad ts {ts_text[:20]!r}"
        )
    noseq = is_noseq_type(mtype)
    seq = 0
    if not noseq:
        seq = parse_hex(msg.get("seq")) or 0
        if seq <= 0:
            return Dropped("malformed", False, "fields", logging.WARNING, f"{mtype} from {src} has no valid seq")
    srcuuid = msg.get_binary("srcuuid")
    key = src.lower()
    if key == me:
        if srcuuid is not None and srcuuid != uuid:
            return Dropped(
                "name_conflict",
                True,
                "name-conflict",
                logging.ERROR,
                f"another node ({source}) sends as {src}, our node name",
            )
        return Dropped("own")
    if key not in peers:
        return Dropped(
            "unknown_node", True, "unknown-node", logging.WARNING, f"packet from unknown node {src!r} ({source})"
        )
    gen_text = msg.get("hg")
    gen = 0 if gen_text is None else parse_hex(gen_text)
    if gen is None:
        return Dropped("malformed", False, "fields", logging.WARNING, f"{mtype} from {src} has a bad generation")
    return Inbound(msg, mtype, src, key, seq, gen, ts, noseq, srcuuid)


def addressed_to(msg: Message, me: str, uuid: bytes) -> bool:
    """Whether `msg` is for us (`me` lower case, our `uuid`): a non-zero 16-byte
    ``destuuid`` decides, else ``dest`` (absent: a broadcast)."""
    destuuid = msg.get_binary("destuuid")
    if destuuid is not None and len(destuuid) == 16 and any(destuuid):
        return destuuid == uuid
    dest = msg.get("dest")
    return dest is None or dest.lower() == me


class RejectLedger:
    """Datagrams dropped before reaching a peer, per source address: at most
    `limit` addresses (the quietest goes when a new one comes)."""

    def __init__(self, limit: int = MAX_REJECT_SOURCES) -> None:
        self.limit = limit
        #: address -> {"packets", per-reason counts, "last" (monotonic seconds)}
        self.entries: dict[str, dict[str, float]] = {}

    def add(self, source: str, reason: str, now: float) -> None:
        """Count one datagram from `source` (``address:port`` or an address) dropped for `reason`."""
        address = source.rpartition(":")[0] or source
        entry = self.entries.get(address)
        if entry is None:
            if len(self.entries) >= self.limit:
                # keep the busiest sources: the quietest one makes room
                quietest = min(self.entries, key=lambda a: self.entries[a]["packets"])
                del self.entries[quietest]
            entry = self.entries[address] = {"packets": 0, "last": 0.0}
        entry["packets"] += 1
        entry[reason] = entry.get(reason, 0) + 1
        entry["last"] = now

    def rows(self, now: float) -> list[dict[str, str | float]]:
        """``[{"address", "packets", "<reason>"..., "last_s"}]``, busiest first
        (``last_s``: seconds since the last one, at monotonic `now`)."""
        rows: list[dict[str, str | float]] = []
        for address, entry in sorted(self.entries.items(), key=lambda item: (-item[1]["packets"], item[0])):
            row: dict[str, str | float] = {"address": address}
            row.update((k, v) for k, v in entry.items() if k != "last")
            row["last_s"] = round(max(0.0, now - float(entry["last"])), 3)
            rows.append(row)
        return rows
