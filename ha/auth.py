"""Heartbeat 3.0.6 authentication: the ``authkeys`` file and its three MAC methods.

Pure code: bytes in, strings out. The only I/O is `load_authkeys`, which reads
one file.

File format (heartbeat ``heartbeat/auth.c``, ``parse_authfile``), one directive
per line, blank lines and lines whose first non-blank character is ``#``
ignored::

    auth 1              # the index used to sign what we send
    1 sha1 SECRET       # HMAC-SHA1 (lib/plugins/HBauth/sha1.c)
    2 md5 SECRET        # HMAC-MD5  (lib/plugins/HBauth/md5.c)
    3 crc               # CRC-32, no key (lib/plugins/HBauth/crc.c)

Indexes are 0..15 (heartbeat's ``MAXAUTH``). A key is one whitespace-free
token, used as raw bytes. Every index listed can be used to *verify*; only the
``auth`` index is used to *sign*.

MAC strings are lowercase hexadecimal:

* ``sha1``: HMAC-SHA1 (RFC 2104), 40 hex digits;
* ``md5``: HMAC-MD5 (RFC 2104), 32 hex digits;
* ``crc``: CRC-32 with polynomial 0x04C11DB7, initial value 0, input and output
  not reflected, final XOR 0xFFFFFFFF (the catalogue's "CRC-32/POSIX" without
  the length suffix that ``cksum`` appends), printed with ``%lx``: lowercase,
  *not* zero-padded (``dbb182d`` is a valid 7-digit CRC). It is a checksum,
  not an authenticator: anybody can forge it.

Stricter than heartbeat, on purpose: a duplicate index, a second ``auth``
line, a key given to ``crc`` (heartbeat refuses this too) and any text after
the key are errors, not silently ignored. The ``auth`` line may come after
the key lines (heartbeat 3.0.6 wants it first).

Interoperability note (heartbeat ``heartbeat.c``, ``hb_compute_authentication``):
when heartbeat 3.0.6 checks the outer netstring MAC of a received packet it
uses the *algorithm* of the packet's index but the *key of its own* ``auth``
index. Peers that share one authkeys file never notice; during a key rotation
where the sender signs with an index whose key differs from the receiver's
``auth`` key, a real heartbeat rejects the packet. `AuthKeys.verify` here uses
the key of the packet's index, as the file intends.
"""

from __future__ import annotations

import hmac
import os
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from ha.readfile import ReadFileError, read_regular_file, secret_file_problem

__all__ = [
    "MAX_AUTHKEYS_BYTES",
    "MAX_AUTH_INDEX",
    "METHODS",
    "AuthKeys",
    "AuthKeysError",
    "AuthMethod",
    "crc32_posix",
    "load_authkeys",
    "parse_authkeys",
]

#: Highest valid index (heartbeat ``MAXAUTH`` is 16).
MAX_AUTH_INDEX = 15

#: Largest authkeys file accepted, in bytes: 16 lines of a long key fit many times over.
MAX_AUTHKEYS_BYTES = 64 * 1024

#: Method name -> whether it needs a key.
METHODS: Mapping[str, bool] = {"sha1": True, "md5": True, "crc": False}


class AuthKeysError(ValueError):
    """An authkeys file is unusable.

    ``str(err)`` is ``"<path>:<line>: <reason>"`` (or ``"<path>: <reason>"`` when
    the problem is not on one line); `path`, `line` and `reason` are also
    available as attributes.
    """

    def __init__(self, path: str, line: int | None, reason: str) -> None:
        self.path = path
        self.line = line
        self.reason = reason
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {reason}")


# --- CRC-32 as heartbeat's crc plugin computes it ------------------------------

#: Each byte with its bits in reverse order.
_REVERSED_BITS = bytes(int(f"{b:08b}"[::-1], 2) for b in range(256))


def crc32_posix(data: bytes) -> int:
    """CRC-32, polynomial 0x04C11DB7, init 0, not reflected, final XOR 0xFFFFFFFF.

    Returns the 32-bit value as an int (``crc32_posix(b"123456789") ==
    0x765E7680``). Source: heartbeat ``lib/plugins/HBauth/crc.c``.

    Computed with zlib's (reflected) CRC-32, which runs in C: the same
    polynomial over the bytes with their bits reversed, started from a zero
    register (zlib's start value 0xFFFFFFFF is XORed with its own), gives this
    CRC with its 32 bits reversed. A forged 64 KB datagram costs microseconds,
    not the 15 ms of a byte loop in Python.
    """
    reflected = zlib.crc32(bytes(data).translate(_REVERSED_BITS), 0xFFFFFFFF)
    return int(f"{reflected:032b}"[::-1], 2)


# --- methods and key sets --------------------------------------------------------


@dataclass(frozen=True)
class AuthMethod:
    """One ``N method [KEY]`` line of an authkeys file.

    `index` is 0..15, `method` one of ``sha1``, ``md5``, ``crc``; `key` is the
    raw key bytes (``None`` for ``crc``). The key is kept out of ``repr``.
    """

    index: int
    method: str
    key: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.index <= MAX_AUTH_INDEX:
            raise ValueError(f"auth index {self.index} not in 0..{MAX_AUTH_INDEX}")
        if self.method not in METHODS:
            raise ValueError(f"unknown auth method {self.method!r}")
        if METHODS[self.method] and not self.key:
            raise ValueError(f"auth method {self.method} needs a key")
        if not METHODS[self.method] and self.key is not None:
            raise ValueError(f"auth method {self.method} takes no key")

    def sign(self, data: bytes) -> str:
        """MAC of `data` as heartbeat prints it: lowercase hex (crc unpadded)."""
        if self.method == "sha1":
            return hmac.digest(self.key or b"", data, "sha1").hex()  # one-shot: the receive path's hot spot
        if self.method == "md5":
            return hmac.digest(self.key or b"", data, "md5").hex()
        return format(crc32_posix(data), "x")

    def verify(self, data: bytes, mac: str | bytes) -> bool:
        """True if `mac` is exactly what `sign` gives for `data` (constant time)."""
        if isinstance(mac, str):
            try:
                mac = mac.encode("ascii")
            except UnicodeEncodeError:
                return False
        return hmac.compare_digest(self.sign(data).encode("ascii"), mac)


@dataclass(frozen=True)
class AuthKeys:
    """A parsed authkeys file.

    `send_index` is the ``auth N`` index used to sign outgoing packets;
    `methods` maps every configured index (0..15) to its `AuthMethod`;
    `path` names the source, for messages.
    """

    send_index: int
    methods: Mapping[int, AuthMethod]
    path: str = "<authkeys>"

    def __post_init__(self) -> None:
        if self.send_index not in self.methods:
            raise ValueError(f"send index {self.send_index} has no method")

    @property
    def send_method(self) -> AuthMethod:
        """The method that signs outgoing packets."""
        return self.methods[self.send_index]

    def sign(self, data: bytes) -> tuple[int, str]:
        """Sign `data` with the send method: returns ``(index, hex MAC)``."""
        return self.send_index, self.send_method.sign(data)

    def knows(self, index: int) -> bool:
        """True if `index` is configured (a packet signed with it can be checked)."""
        return index in self.methods

    def verify(self, index: int, data: bytes, mac: str | bytes) -> bool:
        """Check `mac` over `data` with the method at `index`.

        Constant-time comparison; False for an unknown index or a wrong MAC.
        """
        method = self.methods.get(index)
        if method is None:
            return False
        return method.verify(data, mac)


# --- parsing ---------------------------------------------------------------------


def _quoted(text: str) -> str:
    """``repr`` of ``text`` cut to 60 characters (``...`` after): a message quotes, it does not echo a file."""
    return repr(text[:60]) + "..." if len(text) > 60 else repr(text)


def _parse_index(token: bytes) -> int | None:
    if not token.isdigit() or len(token) > 3:
        return None
    return int(token)


def parse_authkeys(text: str | bytes, path: str = "<authkeys>") -> AuthKeys:
    """Parse the contents of an authkeys file.

    `text` is the file content (``str`` is encoded as UTF-8, keys are the raw
    bytes of their token); `path` is only used in messages.

    Raises `AuthKeysError` naming `path` and the line for: an unknown method,
    an index outside 0..15, a sha1/md5 line without key, a crc line with a key,
    text after the key, a duplicate index, an invalid or repeated ``auth``
    line, a line that is none of these; and naming `path` when there is no
    ``auth`` line or the ``auth`` index has no key line.
    """
    if isinstance(text, str):
        data = text.encode("utf-8", "surrogateescape")
    else:
        data = bytes(text)
    send_index: int | None = None
    send_line = 0
    methods: dict[int, AuthMethod] = {}
    lines_of: dict[int, int] = {}
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        if b"\0" in raw:
            raise AuthKeysError(path, lineno, "NUL byte in line")
        tokens = raw.split()
        if not tokens or tokens[0].startswith(b"#"):
            continue
        shown = raw.strip().decode("utf-8", "replace")
        if tokens[0] == b"auth":
            if len(tokens) != 2:
                raise AuthKeysError(path, lineno, f"expected 'auth N', got {_quoted(shown)}")
            idx = _parse_index(tokens[1])
            if idx is None:
                raise AuthKeysError(path, lineno, f"invalid auth index {_quoted(tokens[1].decode('utf-8', 'replace'))}")
            if idx > MAX_AUTH_INDEX:
                raise AuthKeysError(path, lineno, f"auth index {idx} not in 0..{MAX_AUTH_INDEX}")
            if send_index is not None:
                raise AuthKeysError(path, lineno, f"second 'auth' line (first on line {send_line})")
            send_index, send_line = idx, lineno
            continue
        idx = _parse_index(tokens[0])
        if idx is None:
            # only the first word: the rest of a malformed line may be a key
            first = tokens[0].decode("utf-8", "replace")
            raise AuthKeysError(
                path, lineno, f"invalid line starting {_quoted(first)}: expected 'auth N' or 'N method [key]'"
            )
        if idx > MAX_AUTH_INDEX:
            raise AuthKeysError(path, lineno, f"index {idx} not in 0..{MAX_AUTH_INDEX}")
        if len(tokens) < 2:
            raise AuthKeysError(path, lineno, f"index {idx} has no method")
        method = tokens[1].decode("utf-8", "replace")
        if method not in METHODS:
            raise AuthKeysError(path, lineno, f"unknown auth method {_quoted(method)} (known: sha1, md5, crc)")
        needs_key = METHODS[method]
        if needs_key and len(tokens) < 3:
            raise AuthKeysError(path, lineno, f"auth method {method} needs a key")
        if not needs_key and len(tokens) > 2:
            raise AuthKeysError(path, lineno, f"auth method {method} takes no key")
        if len(tokens) > 3:
            raise AuthKeysError(path, lineno, "text after the key: a key is one token without whitespace")
        if idx in methods:
            raise AuthKeysError(path, lineno, f"duplicate index {idx} (first on line {lines_of[idx]})")
        methods[idx] = AuthMethod(idx, method, tokens[2] if needs_key else None)
        lines_of[idx] = lineno
    if send_index is None:
        raise AuthKeysError(path, None, "no 'auth N' line choosing the index to sign with")
    if send_index not in methods:
        raise AuthKeysError(path, send_line, f"'auth {send_index}' names an index with no key line")
    return AuthKeys(send_index=send_index, methods=dict(sorted(methods.items())), path=path)


def _authkeys_problem(info: os.stat_result) -> str | None:
    """Why an authkeys file with this ``fstat`` result must not be trusted, or ``None``.

    Heartbeat (``heartbeat/auth.c``) refuses a keyfile readable by group or
    others; `ha.readfile.secret_file_problem` also refuses one writable (or
    executable) by them, and one owned by anybody but root or this process's user.
    """
    return secret_file_problem(info)


def load_authkeys(path: str | os.PathLike[str]) -> AuthKeys:
    """Read and parse an authkeys file (see `parse_authkeys`).

    The file must be a regular file of at most `MAX_AUTHKEYS_BYTES` bytes
    (`ha.readfile.read_regular_file`: a FIFO or a device is refused, not
    waited on or read forever), with no permission bit for group or others
    (heartbeat's ``auth.c`` refuses group/other-readable files; writable ones
    are refused too, as sshd's ``StrictModes`` does) and owned by root or the
    effective user.

    Raises:
        AuthKeysError: the file cannot be read, is not a regular file, is too
            large, has bad permissions or owner (mode and owner are named),
            or its content is invalid.
    """
    name = os.fspath(path)
    try:
        data = read_regular_file(name, MAX_AUTHKEYS_BYTES, check=_authkeys_problem)
    except ReadFileError as exc:
        raise AuthKeysError(name, None, exc.reason) from exc.__cause__
    return parse_authkeys(data, name)
