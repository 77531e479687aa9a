"""Whether others could replace a file: sshd's ``StrictModes`` judgement, one walk for every caller.

`replaceable` judges one file or directory; `unsafe_directory` walks the directories above a
path, as written and after symbolic links are resolved, up to ``/``.  Used for the programs of
external checks and notify hooks (`checks.protocols.external.command_problem`) and for the files holding
secrets (``ha.readfile.secret_path_problem``); each caller words its own messages.  A few
``stat`` calls, no other I/O.
"""

from __future__ import annotations

import os
import stat

__all__ = ["replaceable", "unsafe_directory"]


def replaceable(path: str, info: os.stat_result, euid: int) -> str | None:
    """Why others could replace what ``path`` (``info``: its `os.stat`) holds, or ``None``: it is
    owned by a user other than root or ``euid``, or writable by group or others (a directory
    with the sticky bit, as ``/tmp``, excepted)."""
    if info.st_uid not in (0, euid):
        owners = "root" if euid == 0 else f"root or uid {euid}"
        return f"{path} is owned by uid {info.st_uid}, not {owners}"
    mode = stat.S_IMODE(info.st_mode)
    sticky_dir = stat.S_ISDIR(info.st_mode) and mode & stat.S_ISVTX
    if mode & 0o022 and not sticky_dir:
        return f"{path} is writable by group or others (mode {mode:04o})"
    return None


def unsafe_directory(path: str, euid: int | None = None) -> tuple[str, os.stat_result, str] | None:
    """The first directory above ``path`` that others could change, as ``(directory, its stat,
    why)`` (`replaceable`), or ``None`` when every one is safe.

    The directories are those above ``path`` as written (made absolute), then those above the
    file its symbolic links lead to: whoever can write ``/a`` can repoint ``/a/link`` even when
    ``link`` leads to a safe directory.  ``euid`` defaults to this process's effective user.

    Raises:
        OSError: a directory on the way cannot be examined (``filename`` names it).
    """
    euid = os.geteuid() if euid is None else euid
    name = os.path.normpath(os.path.abspath(path))
    seen: set[str] = set()
    for start in (name, os.path.realpath(name)):
        directory = os.path.dirname(start)
        while directory not in seen:
            seen.add(directory)
            info = os.stat(directory)
            why = replaceable(directory, info, euid)
            if why is not None:
                return directory, info, why
            parent = os.path.dirname(directory)
            if parent == directory:
                break
            directory = parent
    return None
