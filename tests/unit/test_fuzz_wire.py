"""Property-based fuzzing of ha.wire (the heartbeat 3.0.6 codec).

Properties:

* round trip: ``decode_packet(encode_packet(m))`` gives back ``m`` (plus the
  inner ``auth`` field heartbeat adds) for generated messages of every field
  type, nested up to ``MAX_DEPTH``, in netstring and in text framing;
* the decoder raises only `WireError` subclasses, for arbitrary bytes and
  for valid packets mutated by bit flips, truncation, insertion, deletion;
* a mutated signed netstring packet is never accepted (the outer MAC covers
  every byte before it, and the MAC itself must match exactly); a mutated
  text packet is accepted only when it still carries the very same message
  (the inner MAC covers the fields, not the blank lines between them).

Example counts come from fuzzprofile (``DIRECTORD_FUZZ=long`` for the long run).
"""

from __future__ import annotations

import pytest
from fuzzprofile import FUZZ, fuzz_settings
from hypothesis import assume, given
from hypothesis import strategies as st

from ha.auth import parse_authkeys
from ha.wire import (
    FT_BINARY,
    FT_COMPRESS,
    FT_LIST,
    FT_STRING,
    FT_STRUCT,
    FT_UNCOMPRESS,
    MAX_DEPTH,
    MAX_PACKET_SIZE,
    BadAuth,
    Field,
    MalformedPacket,
    Message,
    UnknownAuthIndex,
    WireError,
    decode_packet,
    encode_packet,
    encode_text_packet,
    needs_netstring,
    parse_packet,
    with_inner_auth,
)

SHA1 = parse_authkeys(b"auth 1\n1 sha1 fuzzkey\n", "authkeys.sha1")
MD5 = parse_authkeys(b"auth 2\n2 md5 otherkey\n", "authkeys.md5")
CRC = parse_authkeys(b"auth 3\n3 crc\n", "authkeys.crc")
ALL_KEYS = st.sampled_from([SHA1, MD5, CRC])

# --- generated messages -------------------------------------------------------------------------

#: Field names heartbeat's messages use (ha_msg.h F_*), plus generated ones.
KNOWN_NAMES = (
    "t",
    "st",
    "src",
    "srcuuid",
    "dest",
    "destuuid",
    "seq",
    "hg",
    "ts",
    "ld",
    "ttl",
    "dt",
    "protocol",
    "firstseq",
    "lastseq",
    "ackseq",
    "rsc_hold",
    "rtype",
    "info",
    "nodelist",
)
# a name: non-empty, no '=', newline or NUL (heartbeat's rule); 'auth' is the inner MAC's own field
_NAME_CHARS = st.characters(exclude_categories=("Cs",), exclude_characters="=\n\0")
NAMES = st.one_of(st.sampled_from(KNOWN_NAMES), st.text(_NAME_CHARS, min_size=1, max_size=12)).filter(
    lambda n: n != "auth"
)
# a string value: any text without NUL, or raw bytes kept through surrogate escapes
_VALUE_CHARS = st.characters(exclude_categories=("Cs",), exclude_characters="\0")
STRINGS = st.one_of(
    st.text(_VALUE_CHARS, max_size=40),
    st.binary(max_size=40).filter(lambda b: b"\0" not in b).map(lambda b: b.decode("utf-8", "surrogateescape")),
)
LISTS = st.lists(st.text(_VALUE_CHARS, min_size=1, max_size=10), min_size=1, max_size=5).map(tuple)


def _fields(children: st.SearchStrategy[Message]) -> st.SearchStrategy[Field]:
    return st.one_of(
        st.builds(Field, NAMES, st.just(FT_STRING), STRINGS),
        st.builds(Field, NAMES, st.sampled_from([FT_BINARY, FT_COMPRESS]), st.binary(max_size=40)),
        st.builds(Field, NAMES, st.just(FT_LIST), LISTS),
        st.builds(Field, NAMES, st.sampled_from([FT_STRUCT, FT_UNCOMPRESS]), children),
    )


MESSAGES = st.recursive(
    st.lists(st.builds(Field, NAMES, st.just(FT_STRING), STRINGS), max_size=4).map(Message),
    lambda children: st.lists(_fields(children), max_size=6).map(Message),
    max_leaves=12,
)

# text framing has narrower rules: no empty value, no type 5, no control bytes (0x13 stands
# for a newline, 15..31 for the newlines of nested structs), no name starting with '('
_TEXT_CHARS = st.characters(exclude_categories=("Cs", "Cc"))
TEXT_NAMES = st.one_of(st.sampled_from(KNOWN_NAMES), st.text(_TEXT_CHARS, min_size=1, max_size=12)).filter(
    lambda n: n != "auth" and "=" not in n and not n.startswith("(")
)
TEXT_STRINGS = st.text(st.one_of(_TEXT_CHARS, st.just("\n")), min_size=1, max_size=40)
TEXT_LISTS = st.lists(st.text(_TEXT_CHARS, min_size=1, max_size=10), min_size=1, max_size=5).map(tuple)


def _text_fields(children: st.SearchStrategy[Message]) -> st.SearchStrategy[Field]:
    return st.one_of(
        st.builds(Field, TEXT_NAMES, st.just(FT_STRING), TEXT_STRINGS),
        st.builds(Field, TEXT_NAMES, st.sampled_from([FT_BINARY, FT_COMPRESS]), st.binary(min_size=1, max_size=40)),
        st.builds(Field, TEXT_NAMES, st.just(FT_LIST), TEXT_LISTS),
        st.builds(Field, TEXT_NAMES, st.just(FT_STRUCT), children.filter(len)),
    )


TEXT_MESSAGES = st.recursive(
    st.lists(st.builds(Field, TEXT_NAMES, st.just(FT_STRING), TEXT_STRINGS), min_size=1, max_size=4).map(Message),
    lambda children: st.lists(_text_fields(children), min_size=1, max_size=6).map(Message),
    max_leaves=12,
)


def nested(depth: int, leaf: Message) -> Message:
    """`leaf` wrapped in `depth` struct fields (depth 0: `leaf` itself)."""
    msg = leaf
    for level in range(depth):
        msg = Message([Field("t", FT_STRING, f"level{level}"), Field("child", FT_STRUCT, msg)])
    return msg


def expected(msg: Message) -> Message:
    """What a receiver gets: heartbeat's inner ``auth`` field added unless the message needs netstring."""
    return msg if needs_netstring(msg) else with_inner_auth(msg, SHA1)


# --- round trips --------------------------------------------------------------------------------


@FUZZ
@given(MESSAGES, ALL_KEYS)
def test_fuzz_netstring_round_trip(msg, keys):
    raw = encode_packet(msg, keys, inner_auth=False)
    assert decode_packet(raw, keys) == msg
    packet = parse_packet(raw)
    assert packet.message == msg and packet.auth_index == keys.send_index


@FUZZ
@given(MESSAGES)
def test_fuzz_netstring_round_trip_with_inner_auth(msg):
    raw = encode_packet(msg, SHA1)
    want = expected(msg)
    assert decode_packet(raw, SHA1, check_inner_auth=not needs_netstring(msg)) == want


@FUZZ
@given(TEXT_MESSAGES)
def test_fuzz_text_round_trip(msg):
    raw = encode_text_packet(msg, SHA1)
    assert raw.endswith(b"<<<\n\0")
    assert decode_packet(raw, SHA1) == with_inner_auth(msg, SHA1)


#: Messages without structs, to be nested by `nested`.
FLAT = st.lists(_fields(st.nothing()), max_size=6).map(Message)
TEXT_FLAT = st.lists(_text_fields(st.nothing()), min_size=1, max_size=6).map(Message)


@FUZZ
@given(st.integers(0, MAX_DEPTH), FLAT)
def test_fuzz_nesting_up_to_max_depth(depth, leaf):
    msg = nested(depth, leaf)
    assert decode_packet(encode_packet(msg, SHA1), SHA1) == expected(msg)
    deeper = nested(MAX_DEPTH + 1, leaf)
    with pytest.raises(MalformedPacket, match="nested deeper"):
        parse_packet(encode_packet(deeper, SHA1))


@FUZZ
@given(st.integers(0, MAX_DEPTH), TEXT_FLAT)
def test_fuzz_text_nesting_up_to_max_depth(depth, leaf):
    msg = nested(depth, leaf)
    assert decode_packet(encode_text_packet(msg, SHA1), SHA1) == with_inner_auth(msg, SHA1)


# --- hostile bytes ------------------------------------------------------------------------------


def decode_outcome(data: bytes, keys=SHA1) -> Message | WireError:
    """The decoded message, or the WireError raised; any other exception fails the test."""
    try:
        parse_packet(data)
    except WireError:
        pass
    try:
        return decode_packet(data, keys, check_inner_auth=True)
    except WireError as exc:
        return exc


HEADS = st.sampled_from([b"", b"###\n", b">>>\n", b"###\n10:(0)t=abcd,", b">>>\nt=x\n(2)s=>>>\x14"])


@FUZZ
@given(HEADS, st.binary(max_size=300))
def test_fuzz_arbitrary_bytes_raise_only_wire_errors(head, tail):
    decode_outcome(head + tail)


@fuzz_settings(0.25)
@given(HEADS, st.binary(max_size=16), st.integers(1, 8))
def test_fuzz_oversized_datagram_is_malformed(head, tail, extra):
    data = head + tail
    data += b"x" * (MAX_PACKET_SIZE + extra - len(data))
    with pytest.raises(MalformedPacket, match="larger than any UDP datagram"):
        parse_packet(data)


@st.composite
def mutations(draw, raw: bytes) -> bytes:
    """`raw` changed by 1..4 edits: bit flip, byte set, truncation, insertion, deletion, duplication."""
    data = bytearray(raw)
    # positions from a seeded generator: uniform over the packet (integers() favours the
    # start, and the 4-byte start marker would take most of the edits)
    rng = draw(st.randoms(use_true_random=True))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete", "duplicate"]))
        if not data and kind != "insert":
            kind = "insert"
        pos = rng.randrange(max(len(data), 1))
        if kind == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            data[pos] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del data[pos:]
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 8))]
        else:
            end = pos + draw(st.integers(1, 16))
            data[pos:pos] = data[pos:end]
    return bytes(data)


@st.composite
def mutated_netstring(draw):
    msg = draw(MESSAGES)
    keys = draw(ALL_KEYS)
    raw = encode_packet(msg, keys)
    return keys, raw, draw(mutations(raw))


@st.composite
def mutated_text(draw):
    msg = draw(TEXT_MESSAGES)
    raw = encode_text_packet(msg, SHA1)
    return msg, raw, draw(mutations(raw))


@fuzz_settings(2)
@given(mutated_netstring())
def test_fuzz_mutated_signed_netstring_is_never_accepted(case):
    keys, raw, data = case
    assume(data != raw)
    outcome = decode_outcome(data, keys)
    assert isinstance(outcome, (BadAuth, MalformedPacket, UnknownAuthIndex)), (data, outcome)


@fuzz_settings(2)
@given(mutated_text())
def test_fuzz_mutated_text_packet_is_rejected_or_unchanged(case):
    msg, _raw, data = case
    outcome = decode_outcome(data)
    if isinstance(outcome, Message):
        # only framing changed (a blank line, the trailing NUL): the signed fields are the same
        assert outcome == with_inner_auth(msg, SHA1), (data, outcome)
    else:
        assert isinstance(outcome, (BadAuth, MalformedPacket, UnknownAuthIndex)), (data, outcome)


@FUZZ
@given(MESSAGES, st.sampled_from([MD5, CRC]))
def test_fuzz_packet_signed_with_other_keys_is_refused(msg, keys):
    outcome = decode_outcome(encode_packet(msg, keys))
    assert isinstance(outcome, UnknownAuthIndex) and outcome.index == keys.send_index
