"""Heartbeat 3.0.6 wire codec: messages, netstring and text framing, both MACs.

Pure code: bytes in, bytes out; no sockets, no clock. Every time, sequence
number or load value is an argument.

Sources (facts only): cluster-glue 1.0.12 ``lib/clplumbing/cl_msg.c``,
``cl_msg_types.c``, ``cl_netstring.c``, ``base64.c``, ``include/ha_msg.h``;
heartbeat 3.0.6 ``heartbeat/ha_msg_internal.c`` (``add_control_msg_fields``,
``add_msg_auth``, ``isauthentic``) and ``heartbeat/heartbeat.c``. Checked
byte for byte against captures of two real heartbeat 3.0.6 daemons.

A message is an ordered list of fields; names may repeat. Field types
(``enum cl_netstring_type``): 0 string, 1 binary, 2 struct (a nested message),
3 list (of strings), 4 compressed (opaque bytes here), 5 uncompressed struct.

Netstring framing, what heartbeat sends on UDP::

    ###\\n
    <len>:(<type>)<name>=<value>,      one netstring per field,
    ...                                len = 3 + len(name) + 1 + len(value)
    %%%\\n
    <len>:<idx> <hex>,                 outer MAC over "###\\n" .. "%%%\\n"

A struct value is the nested message's own ``###\\n .. %%%\\n`` (no MAC); a
list value is ``<len>:<elem>,`` per element. Nothing follows the outer MAC.

Text framing, also accepted by heartbeat (and sent NUL-terminated)::

    >>>\\n
    name=value\\n                     string field: newline in value -> 0x13
    (1)name=<base64, padded>\\n      other types carry a "(type)" prefix
    <<<\\n

Inner MAC: the string field ``auth=<idx> <hex>`` is computed over every other
field written as ``[(type)]name=value\\n`` (text form, no ``>>>``/``<<<``).
Heartbeat adds it unless the message holds a struct or compressed field.
A real peer checks only the outer MAC of a netstring packet, and only the
inner one of a text packet.

Why this module is over 800 lines: the two framings share one message model, one table of
field types with their size and count bounds, and the MAC rules (what the outer MAC covers, how
heartbeat's text framing escapes); each framing is tested against the other and against real
captures through the same `decode_packet` / `encode_packet`. Split, those shared rules would
be imported back and forth between the parts.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Union, cast

from ha.auth import MAX_AUTH_INDEX, AuthKeys

__all__ = [
    "FT_STRING",
    "FT_BINARY",
    "FT_STRUCT",
    "FT_LIST",
    "FT_COMPRESS",
    "FT_UNCOMPRESS",
    "MAX_DEPTH",
    "MAX_ELEMENTS",
    "MAX_FIELDS",
    "MAX_PACKET_SIZE",
    "FRAMING_NETSTRING",
    "FRAMING_TEXT",
    "NOSEQ_PREFIX",
    "WireError",
    "MalformedPacket",
    "BadAuth",
    "UnknownAuthIndex",
    "Field",
    "Message",
    "Packet",
    "to_netstring",
    "to_text",
    "auth_text",
    "compute_inner_auth",
    "with_inner_auth",
    "needs_netstring",
    "verify_inner_auth",
    "encode_packet",
    "encode_text_packet",
    "parse_packet",
    "decode_packet",
    "is_noseq_type",
    "add_standard_fields",
]

FT_STRING = 0
FT_BINARY = 1
FT_STRUCT = 2
FT_LIST = 3
FT_COMPRESS = 4
FT_UNCOMPRESS = 5
_KNOWN_TYPES = frozenset(range(6))

#: Deepest struct nesting accepted (heartbeat ``MAXDEPTH``).
MAX_DEPTH = 16
#: Largest datagram accepted by the decoder (bytes); nothing larger fits in UDP.
MAX_PACKET_SIZE = 65535
#: Most fields in one message, and most elements in one list field. Heartbeat's
#: own messages carry fewer than 40 (``cl_msg.c`` grows its field array without a
#: bound); the cap keeps the cost of parsing an authentic packet bounded.
MAX_FIELDS = 256
#: Most fields and list elements in a whole datagram, nested structs' included:
#: `MAX_FIELDS` alone bounds each level, and 256 structs of 256 fields fit in 64 KB
#: (a 63 KB packet of 200 structs took 140 ms to parse). Authentic heartbeat
#: messages of the v1 protocol carry a few dozen.
MAX_ELEMENTS = 512
#: Message types with this prefix carry no ``seq`` and no ``ld`` (``NOSEQ_PREFIX``).
NOSEQ_PREFIX = "NS_"

FRAMING_NETSTRING = "netstring"
FRAMING_TEXT = "text"

_NS_START = b"###\n"
_NS_END = b"%%%\n"
_TXT_START = b">>>\n"
_TXT_END = b"<<<\n"
#: Newline stand-in inside a string value in text form (``SPECIAL_SYM``).
_NL_SYM = b"\x13"
#: Newline stand-in for a struct rendered at each depth (``SPECIAL_SYMS``).
_STRUCT_SYMS = (20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 15, 16, 17, 18)
_AUTH = "auth"
_MAX_LEN_DIGITS = 6
#: A MAC token: printable ASCII, no blank (checked by regex: a generator over the bytes
#: was a fifth of the cost of rejecting a forged datagram).
_MAC_TOKEN = re.compile(rb"[\x21-\x7e]+")
_ENC = "utf-8"
_ERRS = "surrogateescape"


# --- errors -------------------------------------------------------------------------


class WireError(Exception):
    """A received packet is unusable. Base of every error the decoder raises."""


class MalformedPacket(WireError):
    """The bytes are not a heartbeat message (framing, lengths, field syntax)."""


class BadAuth(WireError):
    """The packet is well formed but its MAC is wrong or missing (forged or corrupted)."""


class UnknownAuthIndex(WireError):
    """The packet is signed with an authkeys index we have no method for.

    `index` is the index found in the packet.
    """

    def __init__(self, index: int, message: str) -> None:
        self.index = index
        super().__init__(message)


# --- fields and messages ------------------------------------------------------------

#: A field's value. Its Python type follows the field's `type` (``Field`` checks that), which
#: the type checker cannot see: code that dispatches on `type` states the value's type with
#: ``typing.cast`` (no run-time effect).
Value = Union[str, bytes, "Message", tuple[str, ...]]


def _name_problem(name: bytes) -> str | None:
    if not name:
        return "empty field name"
    if b"=" in name or b"\n" in name or b"\0" in name:
        return f"field name {name!r} contains '=', newline or NUL"
    return None


def _string_problem(value: bytes, what: str) -> str | None:
    if b"\0" in value:
        return f"{what} contains a NUL byte"
    return None


def _encode_str(value: str, what: str) -> bytes:
    try:
        return value.encode(_ENC, _ERRS)
    except UnicodeEncodeError as exc:
        raise ValueError(f"{what} is not encodable: {exc}") from None


def _decode_str(value: bytes) -> str:
    return value.decode(_ENC, _ERRS)


@dataclass(frozen=True)
class Field:
    """One field: `name`, `type` (0..5, see ``FT_*``) and `value`.

    Value by type: string -> ``str`` (bytes on the wire are UTF-8, other bytes
    kept via surrogate escapes, so decoding then encoding is lossless); binary
    and compressed -> ``bytes``; struct and uncompressed struct -> `Message`;
    list -> ``tuple[str, ...]`` with at least one non-empty element.

    Raises ``ValueError`` for a name that is empty or contains ``=``, newline
    or NUL, a string or list element containing NUL, an empty list or list
    element, or a value of the wrong Python type.
    """

    name: str
    type: int
    value: Value

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise ValueError(f"field name must be str, not {type(self.name).__name__}")
        problem = _name_problem(_encode_str(self.name, "field name"))
        if problem:
            raise ValueError(problem)
        t = self.type
        if t == FT_STRING:
            if not isinstance(self.value, str):
                raise ValueError(f"string field {self.name!r} needs a str value")
            problem = _string_problem(_encode_str(self.value, f"field {self.name!r}"), f"field {self.name!r}")
            if problem:
                raise ValueError(problem)
        elif t in (FT_BINARY, FT_COMPRESS):
            if isinstance(self.value, (bytearray, memoryview)):
                object.__setattr__(self, "value", bytes(self.value))
            if not isinstance(self.value, bytes):
                raise ValueError(f"binary field {self.name!r} needs a bytes value")
        elif t in (FT_STRUCT, FT_UNCOMPRESS):
            if not isinstance(self.value, Message):
                raise ValueError(f"struct field {self.name!r} needs a Message value")
        elif t == FT_LIST:
            if isinstance(self.value, (str, bytes)) or not isinstance(self.value, (list, tuple)):
                raise ValueError(f"list field {self.name!r} needs a list or tuple of str")
            items = tuple(self.value)
            if not items:
                raise ValueError(f"list field {self.name!r} is empty")
            for item in items:
                if not isinstance(item, str) or not item:
                    raise ValueError(f"list field {self.name!r} needs non-empty str elements")
                problem = _string_problem(_encode_str(item, "list element"), f"list field {self.name!r}")
                if problem:
                    raise ValueError(problem)
            object.__setattr__(self, "value", items)
        else:
            raise ValueError(f"unknown field type {t!r}")


def _infer_type(value: object) -> int:
    if isinstance(value, str):
        return FT_STRING
    if isinstance(value, (bytes, bytearray, memoryview)):
        return FT_BINARY
    if isinstance(value, Message):
        return FT_STRUCT
    if isinstance(value, (list, tuple)):
        return FT_LIST
    raise ValueError(f"cannot infer a field type for {type(value).__name__}")


class Message:
    """An ordered list of `Field` objects (names may repeat), like ``struct ha_msg``.

    Build with ``Message([Field(...), ...])``, ``Message.from_pairs([("t",
    "status"), ...])`` or chained `add` calls. Lookups return the *first* field
    of that name, as heartbeat's ``cl_get_value`` does.
    """

    __slots__ = ("fields",)

    def __init__(self, fields: Iterable[Field] = ()) -> None:
        self.fields: list[Field] = []
        for f in fields:
            if not isinstance(f, Field):
                raise ValueError(f"Message fields must be Field, not {type(f).__name__}")
            self.fields.append(f)

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, Value]]) -> Message:
        """Message from ``(name, value)`` pairs; each type inferred as in `add`."""
        msg = cls()
        for name, value in pairs:
            msg.add(name, value)
        return msg

    # -- mutation --

    def add(self, name: str, value: Value, type: int | None = None) -> Message:
        """Append a field; returns self. `type` defaults from the value:
        str -> string, bytes -> binary, Message -> struct, list/tuple -> list."""
        self.fields.append(Field(name, _infer_type(value) if type is None else type, value))
        return self

    def set(self, name: str, value: Value, type: int | None = None) -> Message:
        """Replace the first field called `name` in place, or append it
        (heartbeat ``cl_msg_mod``); returns self. ``ValueError`` if the existing
        field has another type."""
        t = _infer_type(value) if type is None else type
        for i, f in enumerate(self.fields):
            if f.name == name:
                if f.type != t:
                    raise ValueError(f"field {name!r} has type {f.type}, not {t}")
                self.fields[i] = Field(name, t, value)
                return self
        self.fields.append(Field(name, t, value))
        return self

    def remove(self, name: str) -> int:
        """Remove every field called `name`; returns how many were removed."""
        before = len(self.fields)
        self.fields = [f for f in self.fields if f.name != name]
        return before - len(self.fields)

    def copy(self) -> Message:
        """Shallow copy (fields are immutable; nested messages are shared)."""
        return Message(self.fields)

    # -- lookup --

    def field(self, name: str) -> Field | None:
        """First field called `name`, or None."""
        for f in self.fields:
            if f.name == name:
                return f
        return None

    def get(self, name: str, default: str | None = None) -> str | None:
        """Value of the first field called `name` if it is a string, else `default`."""
        f = self.field(name)
        if f is None or f.type != FT_STRING:
            return default
        return cast(str, f.value)

    def get_binary(self, name: str) -> bytes | None:
        """Value of the first field called `name` if it is binary, else None."""
        f = self.field(name)
        return cast(bytes, f.value) if f is not None and f.type == FT_BINARY else None

    def get_struct(self, name: str) -> Message | None:
        """Value of the first field called `name` if it is a struct, else None."""
        f = self.field(name)
        return cast(Message, f.value) if f is not None and f.type in (FT_STRUCT, FT_UNCOMPRESS) else None

    def get_list(self, name: str) -> tuple[str, ...] | None:
        """Value of the first field called `name` if it is a list, else None."""
        f = self.field(name)
        return cast("tuple[str, ...]", f.value) if f is not None and f.type == FT_LIST else None

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    @property
    def msg_type(self) -> str | None:
        """The ``t`` field (message type), or None."""
        return self.get("t")

    @property
    def names(self) -> list[str]:
        """Field names in order."""
        return [f.name for f in self.fields]

    def __contains__(self, name: object) -> bool:
        return any(f.name == name for f in self.fields)

    def __iter__(self) -> Iterator[Field]:
        return iter(self.fields)

    def __len__(self) -> int:
        return len(self.fields)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return self.fields == other.fields

    # mutable and compared by value: unhashable (object's __hash__ is a method, hence the ignore)
    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        parts = []
        for f in self.fields:
            prefix = "" if f.type == FT_STRING else f"({f.type})"
            parts.append(f"{prefix}{f.name}={f.value!r}")
        return f"Message({', '.join(parts)})"


# --- encoding -----------------------------------------------------------------------


def _pack_list(items: tuple[str, ...]) -> bytes:
    out = []
    for item in items:
        raw = item.encode(_ENC, _ERRS)
        out.append(b"%d:%s," % (len(raw), raw))
    return b"".join(out)


def _netstring(body: bytes) -> bytes:
    return b"%d:%s," % (len(body), body)


def to_netstring(msg: Message) -> bytes:
    """``###\\n`` + one netstring per field + ``%%%\\n``: the bytes the outer MAC
    covers (``msg2netstring_buf``). Fields are written as they are; no MAC is
    added. Source: cluster-glue ``cl_netstring.c``, ``cl_msg_types.c``."""
    parts = [_NS_START]
    for f in msg.fields:
        if f.type == FT_STRING:
            value = cast(str, f.value).encode(_ENC, _ERRS)
        elif f.type in (FT_BINARY, FT_COMPRESS):
            value = cast(bytes, f.value)
        elif f.type in (FT_STRUCT, FT_UNCOMPRESS):
            value = to_netstring(cast(Message, f.value))
        else:
            value = _pack_list(cast("tuple[str, ...]", f.value))
        parts.append(_netstring(b"(%d)%s=%s" % (f.type, f.name.encode(_ENC, _ERRS), value)))
    parts.append(_NS_END)
    return b"".join(parts)


def _render_text(msg: Message, depth: int, head: bool) -> bytes:
    """``msg2string_buf``: text form at `depth`; without head, ``auth`` is skipped."""
    parts = [_TXT_START] if head else []
    for f in msg.fields:
        if not head and f.name == _AUTH:
            continue
        name = f.name.encode(_ENC, _ERRS)
        prefix = b"" if f.type == FT_STRING else b"(%d)" % f.type
        if f.type == FT_STRING:
            value = cast(str, f.value).encode(_ENC, _ERRS).replace(b"\n", _NL_SYM)
        elif f.type in (FT_BINARY, FT_COMPRESS):
            value = base64.b64encode(cast(bytes, f.value))
        elif f.type == FT_STRUCT:
            if depth >= MAX_DEPTH:
                raise ValueError(f"struct field {f.name!r} nested deeper than {MAX_DEPTH}")
            sym = bytes([_STRUCT_SYMS[depth]])
            child = _render_text(cast(Message, f.value), depth + 1, True)
            if sym in child:
                raise ValueError(f"struct field {f.name!r} contains byte {sym!r}, reserved at depth {depth}")
            value = child.replace(b"\n", sym)
        elif f.type == FT_LIST:
            value = _pack_list(cast("tuple[str, ...]", f.value))
        else:
            raise ValueError(f"field {f.name!r} of type {f.type} has no text form")
        parts.append(b"%s%s=%s\n" % (prefix, name, value))
    if head:
        parts.append(_TXT_END)
    return b"".join(parts)


def to_text(msg: Message) -> bytes:
    """Text framing ``>>>\\n name=value\\n ... <<<\\n`` (``msg2string``), all
    fields included, no trailing NUL. ``ValueError`` for a type 5 field (it
    has no text form) or a struct whose newline stand-in byte collides."""
    return _render_text(msg, 0, True)


def auth_text(msg: Message) -> bytes:
    """The bytes the inner ``auth`` field covers: every field except ``auth``
    as ``[(type)]name=value\\n`` (``msg2string_buf(..., NOHEAD)``): string
    newlines as 0x13, binary as padded base64, no start/end markers."""
    return _render_text(msg, 0, False)


def needs_netstring(msg: Message) -> bool:
    """True if heartbeat would force netstring framing and omit the inner MAC
    (a struct or compressed field: ``must_use_netstring``)."""
    return any(f.type in (FT_STRUCT, FT_COMPRESS, FT_UNCOMPRESS) for f in msg.fields)


def compute_inner_auth(msg: Message, keys: AuthKeys) -> str:
    """The inner auth value ``"<idx> <hex>"`` for `msg` signed with the send key."""
    index, mac = keys.sign(auth_text(msg))
    return f"{index} {mac}"


def with_inner_auth(msg: Message, keys: AuthKeys) -> Message:
    """Copy of `msg` with its ``auth`` field set (replaced in place if present,
    else appended), as ``add_msg_auth`` does."""
    return msg.copy().set(_AUTH, compute_inner_auth(msg, keys), FT_STRING)


def encode_packet(msg: Message, keys: AuthKeys, *, inner_auth: bool | None = None) -> bytes:
    """Netstring datagram for `msg`, byte for byte as heartbeat 3.0.6 sends it.

    `inner_auth`: True computes the ``auth`` field (in place if present, else
    appended); False writes the fields as given; None (default) does what
    heartbeat does: True unless `needs_netstring`. The outer MAC ``<len>:<idx>
    <hex>,`` always follows, signed with ``keys.send_index``.

    `msg` must already hold the standard trailing fields (see
    `add_standard_fields`). ``ValueError`` only if the inner MAC cannot be
    rendered (see `to_text`).
    """
    if inner_auth is None:
        inner_auth = not needs_netstring(msg)
    if inner_auth:
        msg = with_inner_auth(msg, keys)
    body = to_netstring(msg)
    index, mac = keys.sign(body)
    return body + _netstring(b"%d %s" % (index, mac.encode("ascii")))


def encode_text_packet(msg: Message, keys: AuthKeys) -> bytes:
    """Text-framed datagram: ``>>>\\n ... <<<\\n`` with the inner ``auth`` field
    computed, then a NUL byte (heartbeat sends ``strlen + 1`` bytes). Real
    heartbeat sends netstring framing; this exists to exercise receivers.

    ``ValueError`` if a text receiver could not read the result back (an empty
    string or binary value, a type 5 field, a reserved byte in a struct)."""
    raw = to_text(with_inner_auth(msg, keys)) + b"\0"
    try:
        parse_packet(raw)
    except MalformedPacket as exc:
        raise ValueError(f"message has no text form: {exc}") from None
    return raw


# --- standard trailing fields --------------------------------------------------------


def is_noseq_type(msg_type: str | None) -> bool:
    """True for ``NS_*`` control messages (no ``seq``, no ``ld``, no retransmission)."""
    return msg_type is not None and msg_type.startswith(NOSEQ_PREFIX)


def add_standard_fields(
    msg: Message,
    *,
    src: str,
    srcuuid: bytes,
    hg: int,
    ts: int,
    ttl: int,
    seq: int | None = None,
    ld: str | None = None,
    destuuid: bytes | None = None,
) -> Message:
    """Copy of `msg` with heartbeat's trailing fields (``add_control_msg_fields``).

    Order: ``destuuid`` (binary, 16 bytes, only if given; `msg` must then have
    ``dest``), ``src``, ``srcuuid`` (binary, 16 bytes), ``seq`` (hex), ``hg``
    (generation, hex), ``ts`` (seconds since the epoch, hex), ``ld`` (the
    ``/proc/loadavg`` line, cut at its newline), ``ttl`` (decimal: hopfudge +
    node count). A field already present is replaced in place.

    For ``NS_*`` types `seq` and `ld` must be None (they take no sequence
    number) and string fields already present are kept; for other types both
    are required. ``ValueError`` on a missing ``t``, a wrong uuid length, a
    negative number or a violated rule above.
    """
    msg_type = msg.get("t")
    if msg_type is None:
        raise ValueError("message has no 't' (type) field")
    noseq = is_noseq_type(msg_type)
    if noseq and (seq is not None or ld is not None):
        raise ValueError(f"{msg_type} messages carry no seq and no ld")
    if not noseq and (seq is None or ld is None):
        raise ValueError(f"{msg_type} messages need seq and ld")
    for label, number in (("hg", hg), ("ts", ts), ("ttl", ttl), ("seq", seq)):
        if number is not None and (not isinstance(number, int) or number < 0):
            raise ValueError(f"{label} must be a non-negative int, not {number!r}")
    if not isinstance(srcuuid, (bytes, bytearray)) or len(srcuuid) != 16:
        raise ValueError("srcuuid must be 16 bytes")
    out = msg.copy()
    if destuuid is not None:
        if not isinstance(destuuid, (bytes, bytearray)) or len(destuuid) != 16:
            raise ValueError("destuuid must be 16 bytes")
        if msg.get("dest") is None:
            raise ValueError("destuuid given but the message has no 'dest'")
        out.set("destuuid", bytes(destuuid), FT_BINARY)
    defaults: list[tuple[str, Value | None, int, bool]] = [
        ("src", src, FT_STRING, False),
        ("srcuuid", bytes(srcuuid), FT_BINARY, False),
        ("seq", None if seq is None else format(seq, "x"), FT_STRING, True),
        ("hg", format(hg, "x"), FT_STRING, False),
        ("ts", format(ts, "x"), FT_STRING, False),
        ("ld", None if ld is None else ld.split("\n", 1)[0], FT_STRING, True),
        ("ttl", str(ttl), FT_STRING, False),
    ]
    for name, value, ftype, seq_field in defaults:
        if noseq and seq_field:
            continue
        if noseq and out.get(name) is not None:
            continue
        # value is None only for seq and ld: left out just above for NS_* types, required (not None) otherwise
        out.set(name, cast(Value, value), ftype)
    return out


# --- decoding -----------------------------------------------------------------------


@dataclass(frozen=True)
class Packet:
    """A parsed, not yet authenticated datagram.

    `framing` is ``"netstring"`` or ``"text"``. For netstring, `signed` is
    the bytes the outer MAC covers and `auth_index` / `auth_mac` the outer MAC
    (both None when the packet has none); for text they are ``b""`` / None.
    """

    message: Message
    framing: str
    signed: bytes
    auth_index: int | None
    auth_mac: str | None


class _Bad(Exception):
    """Internal: parse failure, turned into MalformedPacket at the boundary."""


class _Budget:
    """What is left of `MAX_ELEMENTS` while one datagram is parsed."""

    __slots__ = ("left",)

    def __init__(self) -> None:
        self.left = MAX_ELEMENTS

    def take(self) -> None:
        self.left -= 1
        if self.left < 0:
            raise _Bad(f"more than {MAX_ELEMENTS} fields and list elements in all (nested structs included)")


def _parse_len(data: bytes, pos: int, end: int, what: str) -> tuple[int, int]:
    """Decimal length then ':' at `pos`; returns (length, position after ':')."""
    i = pos
    while i < end and i - pos <= _MAX_LEN_DIGITS and 0x30 <= data[i] <= 0x39:
        i += 1
    if i == pos:
        raise _Bad(f"{what}: expected a decimal length at offset {pos}")
    if i - pos > _MAX_LEN_DIGITS:
        raise _Bad(f"{what}: length at offset {pos} has too many digits")
    if i >= end or data[i] != 0x3A:
        raise _Bad(f"{what}: expected ':' after the length at offset {i}")
    if data[pos] == 0x30 and i - pos > 1:
        raise _Bad(f"{what}: length with leading zero at offset {pos}")
    return int(data[pos:i]), i + 1


def _peel(data: bytes, pos: int, end: int, what: str) -> tuple[int, int, int]:
    """One netstring ``<len>:<bytes>,`` at `pos`: (start, stop, next position)."""
    length, start = _parse_len(data, pos, end, what)
    stop = start + length
    if stop >= end:
        raise _Bad(f"{what}: netstring at offset {pos} runs past the end ({length} bytes announced)")
    if data[stop] != 0x2C:
        raise _Bad(f"{what}: netstring at offset {pos} not closed by ',' at offset {stop}")
    return start, stop, stop + 1


def _unpack_list(value: bytes, name: str, budget: _Budget) -> tuple[str, ...]:
    items: list[str] = []
    pos, end = 0, len(value)
    while pos < end:
        if len(items) >= MAX_FIELDS:
            raise _Bad(f"list field {name!r} has more than {MAX_FIELDS} elements")
        budget.take()
        start, stop, pos = _peel(value, pos, end, f"list field {name!r}")
        if stop == start:
            raise _Bad(f"list field {name!r} has an empty element")
        item = value[start:stop]
        if b"\0" in item:
            raise _Bad(f"list field {name!r} element contains a NUL byte")
        items.append(_decode_str(item))
    if not items:
        raise _Bad(f"list field {name!r} is empty")
    return tuple(items)


def _check_name(raw: bytes) -> str:
    problem = _name_problem(raw)
    if problem:
        raise _Bad(problem)
    return _decode_str(raw)


def _string_value(raw: bytes, name: str) -> str:
    if b"\0" in raw:
        raise _Bad(f"string field {name!r} contains a NUL byte")
    return _decode_str(raw)


def _parse_ns_message(data: bytes, pos: int, end: int, depth: int, budget: _Budget) -> tuple[Message, int]:
    """``###\\n`` fields ``%%%\\n`` starting at `pos`; returns (message, position after)."""
    if depth > MAX_DEPTH:
        raise _Bad(f"structs nested deeper than {MAX_DEPTH}")
    if data[pos : pos + 4] != _NS_START or pos + 4 > end:
        raise _Bad(f"expected '###\\n' at offset {pos}")
    pos += 4
    fields: list[Field] = []
    while True:
        if pos + 4 <= end and data[pos : pos + 4] == _NS_END:
            return Message(fields), pos + 4
        if pos >= end:
            raise _Bad("message ends without '%%%\\n'")
        if len(fields) >= MAX_FIELDS:
            raise _Bad(f"message has more than {MAX_FIELDS} fields")
        budget.take()
        start, stop, pos = _peel(data, pos, end, f"field #{len(fields) + 1}")
        fields.append(_parse_ns_field(data, start, stop, depth, budget))


def _parse_ns_field(data: bytes, start: int, stop: int, depth: int, budget: _Budget) -> Field:
    body = data[start:stop]
    if len(body) < 4 or body[0] != 0x28 or body[2] != 0x29 or not 0x30 <= body[1] <= 0x39:
        raise _Bad(f"field at offset {start} does not start with '(<type>)'")
    ftype = body[1] - 0x30
    eq = body.find(b"=", 3)
    if eq < 0:
        raise _Bad(f"field at offset {start} has no '='")
    name = _check_name(body[3:eq])
    value = body[eq + 1 :]
    if ftype == FT_STRING:
        return Field(name, ftype, _string_value(value, name))
    if ftype in (FT_BINARY, FT_COMPRESS):
        return Field(name, ftype, value)
    if ftype in (FT_STRUCT, FT_UNCOMPRESS):
        vstart = start + eq + 1
        child, after = _parse_ns_message(data, vstart, stop, depth + 1, budget)
        if after != stop:
            raise _Bad(f"struct field {name!r} has {stop - after} bytes after its end marker")
        return Field(name, ftype, child)
    if ftype == FT_LIST:
        return Field(name, ftype, _unpack_list(value, name, budget))
    raise _Bad(f"field {name!r} has unknown type {ftype}")


def _parse_text_message(data: bytes, depth: int, budget: _Budget) -> tuple[Message, int]:
    """``>>>\\n`` lines ``<<<\\n`` at the start of `data`; returns (message, length used)."""
    if depth > MAX_DEPTH:
        raise _Bad(f"structs nested deeper than {MAX_DEPTH}")
    end = len(data)
    if data[:4] != _TXT_START:
        raise _Bad("expected '>>>\\n'")
    pos = 4
    fields: list[Field] = []
    while True:
        while pos < end and data[pos] == 0x0A:
            pos += 1
        if data[pos : pos + 4] == _TXT_END:
            return Message(fields), pos + 4
        if pos >= end:
            raise _Bad("text message ends without '<<<\\n'")
        if len(fields) >= MAX_FIELDS:
            raise _Bad(f"message has more than {MAX_FIELDS} fields")
        budget.take()
        nl = data.find(b"\n", pos)
        if nl < 0:
            raise _Bad(f"line at offset {pos} has no newline")
        fields.append(_parse_text_field(data[pos:nl], pos, depth, budget))
        pos = nl + 1


def _parse_text_field(line: bytes, offset: int, depth: int, budget: _Budget) -> Field:
    eq = line.find(b"=")
    if eq <= 0:
        raise _Bad(f"line at offset {offset} is not 'name=value'")
    raw_name, value = line[:eq], line[eq + 1 :]
    ftype = FT_STRING
    if raw_name[:1] == b"(":
        if len(raw_name) < 4 or raw_name[2] != 0x29 or not 0x30 <= raw_name[1] <= 0x39:
            raise _Bad(f"line at offset {offset}: bad '(<type>)' prefix")
        ftype = raw_name[1] - 0x30
        if ftype == FT_STRING:
            raise _Bad(f"line at offset {offset}: string fields take no '(0)' prefix")
        raw_name = raw_name[3:]
    name = _check_name(raw_name)
    if not value:
        raise _Bad(f"field {name!r} has an empty value (not allowed in text form)")
    if ftype == FT_STRING:
        return Field(name, ftype, _string_value(value.replace(_NL_SYM, b"\n"), name))
    if ftype in (FT_BINARY, FT_COMPRESS):
        if len(value) % 4:
            raise _Bad(f"binary field {name!r}: base64 length {len(value)} is not a multiple of 4")
        try:
            return Field(name, ftype, binascii.a2b_base64(value, strict_mode=True))
        except binascii.Error as exc:
            raise _Bad(f"binary field {name!r}: bad base64 ({exc})") from None
    if ftype == FT_STRUCT:
        if depth >= MAX_DEPTH:
            raise _Bad(f"structs nested deeper than {MAX_DEPTH}")
        child_bytes = value.replace(bytes([_STRUCT_SYMS[depth]]), b"\n")
        child, used = _parse_text_message(child_bytes, depth + 1, budget)
        if used != len(child_bytes):
            raise _Bad(f"struct field {name!r} has bytes after its end marker")
        return Field(name, ftype, child)
    if ftype == FT_LIST:
        return Field(name, ftype, _unpack_list(value, name, budget))
    raise _Bad(f"field {name!r} has type {ftype}, which has no text form")


def _parse_outer_auth(content: bytes) -> tuple[int, str]:
    idx, sep, mac = content.partition(b" ")
    if not sep or not idx.isdigit() or len(idx) > 3:
        raise _Bad(f"outer MAC {content[:40]!r} is not '<index> <hex>'")
    if _MAC_TOKEN.fullmatch(mac) is None:
        raise _Bad(f"outer MAC {content[:40]!r} has no printable MAC token")
    return int(idx), mac.decode("ascii")


def _parse(data: bytes) -> Packet:
    if len(data) > MAX_PACKET_SIZE:
        raise _Bad(f"{len(data)} bytes is larger than any UDP datagram")
    if data[:4] == _NS_START:
        msg, pos = _parse_ns_message(data, 0, len(data), 0, _Budget())
        signed = data[:pos]
        if pos == len(data):
            return Packet(msg, FRAMING_NETSTRING, signed, None, None)
        start, stop, after = _peel(data, pos, len(data), "outer MAC")
        if after != len(data):
            raise _Bad(f"{len(data) - after} bytes after the outer MAC")
        index, mac = _parse_outer_auth(data[start:stop])
        return Packet(msg, FRAMING_NETSTRING, signed, index, mac)
    if data[:4] == _TXT_START:
        msg, used = _parse_text_message(data, 0, _Budget())
        if data[used:] not in (b"", b"\0"):
            raise _Bad(f"{len(data) - used} bytes after '<<<\\n'")
        return Packet(msg, FRAMING_TEXT, b"", None, None)
    raise _Bad(f"neither '###\\n' nor '>>>\\n' at the start: {data[:8]!r}")


def parse_packet(data: bytes) -> Packet:
    """Parse a datagram (netstring or text framing) without checking any MAC.

    Strict: exact lengths, canonical decimal lengths, known field types, nothing
    after the outer MAC (a text packet may end with one NUL), at most
    `MAX_DEPTH` nested structs, `MAX_FIELDS` fields per message and list, and
    `MAX_ELEMENTS` fields and list elements in all. Raises `MalformedPacket` with the reason; never
    another exception for any bytes (``TypeError`` if `data` is not bytes-like).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, not {type(data).__name__}")
    data = bytes(data)
    try:
        return _parse(data)
    except _Bad as exc:
        raise MalformedPacket(str(exc)) from None
    except (ValueError, IndexError, RecursionError) as exc:  # defensive: should not happen
        raise MalformedPacket(f"unparsable packet ({type(exc).__name__}: {exc})") from exc


def _parse_inner_auth(msg: Message) -> tuple[int, str]:
    auths = [f for f in msg.fields if f.name == _AUTH]
    if not auths:
        raise BadAuth("message has no inner 'auth' field")
    if len(auths) > 1:
        # heartbeat checks the last one and leaves every 'auth' field out of the
        # signed text, so extra ones could be added unnoticed: refuse them
        raise BadAuth(f"message has {len(auths)} 'auth' fields")
    auth = auths[0]
    if auth.type != FT_STRING:
        raise BadAuth("inner 'auth' field is not a string")
    idx, sep, mac = cast(str, auth.value).partition(" ")
    if not sep or not idx.isascii() or not idx.isdigit() or len(idx) > 3 or not mac or " " in mac:
        raise BadAuth(f"inner 'auth' field {cast(str, auth.value)[:40]!r} is not '<index> <hex>'")
    return int(idx), mac


def verify_inner_auth(msg: Message, keys: AuthKeys) -> int:
    """Check the inner ``auth`` field of `msg` (``isauthentic``); returns its index.

    Raises `BadAuth` (missing, unparsable or wrong MAC), `UnknownAuthIndex`,
    or `MalformedPacket` if the message has no text form.
    """
    index, mac = _parse_inner_auth(msg)
    if index > MAX_AUTH_INDEX or not keys.knows(index):
        raise UnknownAuthIndex(index, f"inner auth uses index {index}, not configured in {keys.path}")
    try:
        text = auth_text(msg)
    except ValueError as exc:
        raise MalformedPacket(f"cannot render the message for its inner MAC: {exc}") from None
    if not keys.verify(index, text, mac):
        raise BadAuth(f"inner MAC (index {index}) does not match")
    return index


def _outer_mac(data: bytes) -> tuple[int, int, str]:
    """Locate the outer MAC of a netstring datagram without parsing its fields.

    The MAC is the last netstring of the datagram and follows the top-level
    ``%%%\\n``; its token is printable ASCII without newline, so the last
    ``%%%\\n`` in the datagram is the end of what it covers. Returns (length
    of the signed bytes, index, MAC). Raises `MalformedPacket` (no end marker,
    a trailer that is not ``<len>:<idx> <mac>,``) or `BadAuth` (no trailer).
    """
    cut = data.rfind(_NS_END)
    if cut < 0:
        raise MalformedPacket("netstring packet without its '%%%\\n' end marker")
    signed = cut + len(_NS_END)
    if signed == len(data):
        raise BadAuth("netstring packet has no outer MAC")
    try:
        start, stop, after = _peel(data, signed, len(data), "outer MAC")
        if after != len(data):
            raise _Bad(f"{len(data) - after} bytes after the outer MAC")
        index, mac = _parse_outer_auth(data[start:stop])
    except _Bad as exc:
        raise MalformedPacket(str(exc)) from None
    return signed, index, mac


def _text_signed(data: bytes) -> tuple[bytes, int, str]:
    """The bytes the inner MAC of a text datagram covers, read from its raw lines.

    A text datagram is ``>>>\\n``, one line per field, ``<<<\\n`` and an
    optional NUL; the inner MAC covers every line but the ``auth`` one, in the
    text form heartbeat renders (``msg2string_buf``), which is what a
    heartbeat sender put on the wire. Returns (signed bytes, index, MAC).
    Raises `MalformedPacket` (framing) or `BadAuth` (no, several or an
    unparsable ``auth`` line).
    """
    cut = data.rfind(_TXT_END)
    if cut < len(_TXT_START):
        raise MalformedPacket("text message ends without '<<<\\n'")
    if data[cut + 4 :] not in (b"", b"\0"):
        raise MalformedPacket(f"{len(data) - cut - 4} bytes after '<<<\\n'")
    body = data[4:cut]
    if body.count(b"\n") > MAX_FIELDS:
        raise MalformedPacket(f"message has more than {MAX_FIELDS} fields")
    lines = body.split(b"\n")
    if lines[-1] != b"":
        raise MalformedPacket("text packet: last line before '<<<\\n' has no newline")
    auths = [i for i, line in enumerate(lines) if line.startswith(b"auth=")]
    if not auths:
        raise BadAuth("message has no inner 'auth' field")
    if len(auths) > 1:
        raise BadAuth(f"message has {len(auths)} 'auth' fields")
    value = lines.pop(auths[0])[5:]
    idx, sep, mac = value.partition(b" ")
    if not sep or not idx.isdigit() or len(idx) > 3 or _MAC_TOKEN.fullmatch(mac) is None:
        raise BadAuth(f"inner 'auth' field {value[:40]!r} is not '<index> <hex>'")
    return b"\n".join(lines), int(idx), mac.decode("ascii")


def _check_mac(keys: AuthKeys, index: int, signed: bytes, mac: str, what: str) -> None:
    if index > MAX_AUTH_INDEX or not keys.knows(index):
        raise UnknownAuthIndex(index, f"{what} uses index {index}, not configured in {keys.path}")
    if not keys.verify(index, signed, mac):
        raise BadAuth(f"{what} (index {index}) does not match: forged or corrupted packet")


def decode_packet(data: bytes, keys: AuthKeys, *, check_inner_auth: bool = False) -> Message:
    """Authenticate, then parse one datagram, as a heartbeat 3.0.6 receiver does.

    The MAC is checked over the raw bytes *before* any field is parsed, so a
    forged or garbled datagram costs one scan and one MAC, never a parse
    (heartbeat checks before it trusts: ``heartbeat.c`` ``isauthentic``).

    Netstring framing: the outer MAC (the last netstring, after the top-level
    ``%%%\\n``) is required and checked with the method of its index
    (``is_auth_netstring``); then the whole datagram is parsed strictly; with
    `check_inner_auth` the inner ``auth`` field is checked too (real
    heartbeat does not). Text framing: the inner ``auth`` line is required and
    checked over the other raw lines (what heartbeat's ``msg2string`` sent),
    then the datagram is parsed and checked again as ``isauthentic`` does.

    Returns the `Message` (its ``auth`` field included). Raises
    `MalformedPacket`, `UnknownAuthIndex` (index not in `keys`) or `BadAuth`
    (missing or wrong MAC): only `WireError` subclasses for any bytes
    (``TypeError`` if `data` is not bytes-like).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, not {type(data).__name__}")
    data = bytes(data)
    if len(data) > MAX_PACKET_SIZE:
        raise MalformedPacket(f"{len(data)} bytes is larger than any UDP datagram")
    if data[:4] == _NS_START:
        signed, index, mac = _outer_mac(data)
        _check_mac(keys, index, data[:signed], mac, "outer MAC")
        packet = parse_packet(data)
        if check_inner_auth:
            verify_inner_auth(packet.message, keys)
        return packet.message
    if data[:4] == _TXT_START:
        text, index, mac = _text_signed(data)
        _check_mac(keys, index, text, mac, "inner MAC")
        packet = parse_packet(data)
        verify_inner_auth(packet.message, keys)
        return packet.message
    raise MalformedPacket(f"neither '###\\n' nor '>>>\\n' at the start: {data[:8]!r}")
