"""Atomic, durable file writes.

Every file the project writes (the HA identity files, the real-server state
file, the ``/etc`` files ``directord realserver --persist`` installs, the lab's
configuration and state files) goes through `write_file_atomic`, so that a
reader, or the next boot after a power cut, sees either the old file or the
whole new one, never an empty or truncated file:

1. a temporary file is created next to the target (same directory, so same
   file system) with ``O_CREAT | O_EXCL | O_NOFOLLOW`` and the final mode;
2. the data is written and the file is ``fsync(2)``'ed (its data reaches the
   disk before its name does);
3. it is ``rename(2)``'d over the target (atomic within a file system);
4. the directory is ``fsync(2)``'ed, which makes the rename itself durable
   (``fsync(2)``: "Calling fsync() does not necessarily ensure that the entry
   in the directory containing the file has also reached disk. For that an
   explicit fsync() on a file descriptor for the directory is also needed.").

`make_directories`, `remove_file` and `replace_symlink` make the creation of
directories, the removal of a file and the (re)placing of a symbolic link
durable the same way (the changed directory is ``fsync(2)``'ed).

The target must be a regular file or absent: a symbolic link, a directory,
a FIFO, a device or a socket at the target is refused (`NotRegularFileError`)
rather than silently replaced.

This module imports nothing from the rest of the project.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat

__all__ = [
    "NotRegularFileError",
    "fsync_directory",
    "make_directories",
    "move_file_into_place",
    "remove_file",
    "replace_symlink",
    "write_file_atomic",
]

#: How many temporary names are tried before giving up (each is random, so a
#: clash means someone is creating files of our naming pattern on purpose).
_TEMP_ATTEMPTS = 16

_KINDS = {
    stat.S_IFREG: "a regular file",
    stat.S_IFLNK: "a symbolic link",
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


class NotRegularFileError(OSError):
    """The path exists and is not a regular file (a symlink, a directory, a FIFO, ...).

    An `OSError` (``errno`` EEXIST), so callers that report ``OSError`` report it too; ``filename`` is the
    path and ``strerror`` says what was found, e.g. ``"is a FIFO, not a
    regular file; refusing to replace it"``.
    """


def _kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "an unknown kind of file")


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """``fsync(2)`` the directory `directory` (makes renames and creations in it durable).

    Raises:
        OSError: the directory cannot be opened or synced.
    """
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_target(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(st.st_mode):
        raise NotRegularFileError(
            errno.EEXIST, f"is {_kind(st.st_mode)}, not a regular file; refusing to replace it", path
        )


def _create_temp(directory: str, base: str, mode: int) -> tuple[int, str]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(_TEMP_ATTEMPTS):
        tmp = os.path.join(directory, f".{base}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, flags, mode), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, f"no free temporary name after {_TEMP_ATTEMPTS} attempts", directory)


def _discard(tmp: str) -> None:
    """Remove a temporary file left by a failed write (already gone is fine)."""
    try:
        os.unlink(tmp)
    except OSError:
        pass


def _rename_into_place(tmp: str, path: str, directory: str) -> None:
    """Rename `tmp` over `path` (removing `tmp` if that fails), then ``fsync`` `directory`."""
    try:
        os.replace(tmp, path)
    except BaseException:
        _discard(tmp)
        raise
    fsync_directory(directory)


def write_file_atomic(path: str | os.PathLike[str], data: bytes, mode: int = 0o644) -> None:
    """Replace (or create) the regular file `path` with `data`, atomically and durably.

    Args:
        path: the target; its directory must exist.
        data: the whole new content (bytes; encode text first).
        mode: the permission bits of the new file (exactly these: the umask
            does not apply; the temporary file never has more than these).

    The steps and their sources are in the module docstring. On any error
    the temporary file is removed and `path` is left as it was (unless the
    error is the final directory ``fsync``: the rename has then happened).

    Raises:
        NotRegularFileError: `path` is a symlink, directory, FIFO, device or socket.
        OSError: anything else (missing directory, permissions, disk full, ...);
            ``filename`` names the file concerned.
    """
    path = os.fspath(path)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, not {type(data).__name__}")
    directory, base = os.path.split(path)
    directory = directory or "."
    if not base:
        raise IsADirectoryError(errno.EISDIR, "a file path is needed, not a directory", path)
    _check_target(path)
    fd, tmp = _create_temp(directory, base, mode & 0o7777)
    try:
        try:
            os.fchmod(fd, mode & 0o7777)
            view = memoryview(data).cast("B")
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        _check_target(path)
    except BaseException:
        _discard(tmp)
        raise
    _rename_into_place(tmp, path, directory)


def move_file_into_place(source: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Rename the regular file ``source`` over ``path`` (a regular file, or absent) in the same
    directory, then ``fsync`` the directory: a file written and checked under another name
    takes the place of the old one atomically and durably.  On failure ``source`` is removed.

    Raises:
        NotRegularFileError: ``source`` or ``path`` is something else than a regular file.
        OSError: the rename or the directory ``fsync`` failed.
    """
    src, dst = os.fspath(source), os.fspath(path)
    st = os.lstat(src)
    if not stat.S_ISREG(st.st_mode):
        raise NotRegularFileError(errno.EINVAL, f"is {_kind(st.st_mode)}, not a regular file", src)
    _check_target(dst)
    _rename_into_place(src, dst, os.path.dirname(os.path.abspath(dst)))


def make_directories(path: str | os.PathLike[str], mode: int = 0o755) -> None:
    """Create the directory `path` and its missing parents (``mkdir -p``), durably.

    Each created directory gets `mode` (less the umask, as ``mkdir(2)``) and
    its parent is ``fsync(2)``'ed, so a file written into it next survives a
    power cut with its path. An existing directory is left alone.

    Raises:
        OSError: a component exists and is not a directory (``NotADirectoryError``
            / ``FileExistsError``), or a directory cannot be created or synced.
    """
    path = os.path.abspath(os.fspath(path))
    missing: list[str] = []
    while not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, mode)
        except FileExistsError:
            if not os.path.isdir(directory):
                raise
            continue
        fsync_directory(os.path.dirname(directory))


def remove_file(path: str | os.PathLike[str]) -> bool:
    """Remove the file (or symbolic link) `path` if present and ``fsync(2)`` its directory.

    Returns True when something was removed, False when `path` did not exist.

    Raises:
        OSError: `path` is a directory (``IsADirectoryError``) or cannot be removed.
    """
    path = os.fspath(path)
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    fsync_directory(os.path.dirname(path) or ".")
    return True


def replace_symlink(path: str | os.PathLike[str], target: str) -> None:
    """Make `path` a symbolic link to `target`, atomically and durably.

    The link is created under a temporary name in the same directory and
    renamed over `path` (so `path` is never missing, as with ``ln -sfT``),
    then the directory is ``fsync(2)``'ed. Only a symbolic link or nothing
    is replaced.

    Raises:
        FileExistsError: `path` is a regular file, directory, FIFO, ... (not a link).
        OSError: the directory is missing or not writable.
    """
    path = os.fspath(path)
    directory = os.path.dirname(path) or "."
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISLNK(st.st_mode):
            raise FileExistsError(
                errno.EEXIST, f"is {_kind(st.st_mode)}, not a symbolic link; refusing to replace it", path
            )
    for _ in range(_TEMP_ATTEMPTS):
        tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
        try:
            os.symlink(target, tmp)
            break
        except FileExistsError:
            continue
    else:
        raise FileExistsError(errno.EEXIST, f"no free temporary name after {_TEMP_ATTEMPTS} attempts", directory)
    _rename_into_place(tmp, path, directory)
