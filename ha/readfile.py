"""Reading a configuration or key file that may be hostile: regular files only, with a size cap.

`read_regular_file` opens without blocking (``O_NONBLOCK``: a FIFO given as a
configuration file is refused instead of waiting for a writer forever), checks
with ``fstat`` on the opened descriptor (no race with a rename) that it is a
regular file, and reads at most ``max_bytes`` (``/dev/zero`` or a huge file is
refused instead of exhausting memory).  Symbolic links are followed: the file
they lead to must be regular.

Used by the YAML loader (`director.config`), the authkeys loader (`ha.auth`)
and ``directord convert`` for ldirectord's and heartbeat's files.  No import
from ``director/``; from ``checks/`` only `checks.trust` (the StrictModes walk shared with the
programs of external checks and notify hooks).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable

from checks.trust import unsafe_directory

__all__ = [
    "ReadFileError",
    "file_kind",
    "read_regular_file",
    "read_regular_file_if_exists",
    "secret_file_problem",
    "secret_path_problem",
]

#: Bytes asked of the kernel per ``read`` call.
_CHUNK = 1 << 16


class ReadFileError(ValueError):
    """A file cannot be used: it cannot be opened or read, is not a regular file, or is too large.

    Attributes:
        path: the path as given.
        reason: what is wrong, in plain words (without the path).

    ``str(err)`` is ``"<path>: <reason>"``.
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def file_kind(mode: int) -> str:
    """Plain name of the file type in an ``st_mode``: ``regular file``, ``FIFO``, ``directory``..."""
    for test, name in (
        (stat.S_ISREG, "regular file"),
        (stat.S_ISDIR, "directory"),
        (stat.S_ISFIFO, "FIFO (named pipe)"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISLNK, "symbolic link"),
    ):
        if test(mode):
            return name
    return "special file"


def _size(count: int) -> str:
    if count >= 1 << 20 and count % (1 << 20) == 0:
        return f"{count >> 20} MiB"
    if count >= 1 << 10 and count % (1 << 10) == 0:
        return f"{count >> 10} KiB"
    return f"{count} bytes"


def read_regular_file(
    path: str | os.PathLike[str],
    max_bytes: int,
    check: Callable[[os.stat_result], str | None] | None = None,
) -> bytes:
    """The whole content of the regular file at ``path``, at most ``max_bytes`` bytes.

    Args:
        path: the file; a symbolic link is followed.
        max_bytes: largest accepted size in bytes; a larger file is refused
            (its size from ``fstat`` first, then by what ``read`` returns, in
            case the file grows while being read).
        check: called with the ``fstat`` result of the opened file before
            anything is read; a non-``None`` return value is a reason to
            refuse the file (e.g. its permissions).

    Raises:
        ReadFileError: the file cannot be opened or read (the ``strerror``
            is in the reason, the ``OSError`` is its ``__cause__``), is not a regular file (its type is named),
            is larger than ``max_bytes``, or ``check`` refused it.
    """
    name = os.fspath(path)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as err:
        raise ReadFileError(name, f"cannot read: {err.strerror or err}") from err
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ReadFileError(name, f"not a regular file but a {file_kind(info.st_mode)}")
        if info.st_size > max_bytes:
            raise ReadFileError(name, f"too large: {info.st_size} bytes, the limit is {_size(max_bytes)}")
        if check is not None:
            reason = check(info)
            if reason is not None:
                raise ReadFileError(name, reason)
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = os.read(fd, min(_CHUNK, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise ReadFileError(name, f"too large: more than {_size(max_bytes)}")
        return b"".join(chunks)
    except OSError as err:
        raise ReadFileError(name, f"cannot read: {err.strerror or err}") from err
    finally:
        os.close(fd)


def secret_file_problem(info: os.stat_result) -> str | None:
    """Why a file holding a secret (a key, a token) with this ``fstat`` result must not be
    trusted, or ``None``: for `read_regular_file`'s ``check``.

    Refused: any permission for group or others (heartbeat's ``heartbeat/auth.c`` refuses an
    authkeys file readable by them; like sshd's ``StrictModes`` this also refuses one
    writable or executable by them, since whoever can write it can replace the secret), and
    an owner other than root or this process's effective user.
    """
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        access = [
            word for bits, word in ((0o044, "readable"), (0o022, "writable"), (0o011, "executable")) if mode & bits
        ]
        why = " (whoever can write it can replace the key)" if mode & 0o022 else ""
        return f"bad permissions {mode:03o}: {' and '.join(access)} by group or others{why}; mode 600 recommended"
    euid = os.geteuid()
    if info.st_uid not in (0, euid):
        owners = "root" if euid == 0 else f"root or uid {euid} (this process)"
        return f"bad owner: uid {info.st_uid}; it must be owned by {owners}"
    return None


def secret_path_problem(path: str | os.PathLike[str]) -> str | None:
    """Why the directories leading to a file holding a secret must not be trusted, or ``None``:
    the checks of sshd's ``StrictModes`` on the directories above the file.

    Every directory above ``path`` as written, and above the file its symbolic links lead to,
    up to ``/`` (`checks.trust.unsafe_directory`), must be owned by root or this process's
    effective user and must not be writable by group or others unless its sticky bit is set
    (``/tmp``): whoever can write such a directory can rename the file away and put their own
    in its place (or repoint a symbolic link on the way). A directory that cannot be examined
    is left to the reading of the file itself to report.
    """
    try:
        found = unsafe_directory(os.fspath(path))
    except OSError:
        return None
    if found is None:
        return None
    directory, info, _ = found
    mode = stat.S_IMODE(info.st_mode)
    if info.st_uid not in (0, os.geteuid()):
        return f"directory {directory} is owned by uid {info.st_uid}, not root: its owner can replace the file"
    return (
        f"directory {directory} has mode {mode:03o}: writable by group or others, who can "
        "replace the file; make it 755 or stricter"
    )


def read_regular_file_if_exists(
    path: str | os.PathLike[str],
    max_bytes: int,
    check: Callable[[os.stat_result], str | None] | None = None,
) -> bytes | None:
    """`read_regular_file`, or None when nothing is at ``path`` (a state file not written yet).

    Raises:
        ReadFileError: as `read_regular_file`, for any other reason than a missing file.
    """
    try:
        return read_regular_file(path, max_bytes, check)
    except ReadFileError as exc:
        if isinstance(exc.__cause__, FileNotFoundError):
            return None
        raise
