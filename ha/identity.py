"""A node's persistent identity: its uuid and its generation counter.

Heartbeat 3.0.6 gives every node a 16-byte uuid, created once and kept in
``/var/lib/heartbeat/hb_uuid``, and a *generation* number kept in
``/var/lib/heartbeat/hb_generation`` that it increments and writes back,
synchronously, on every start (``heartbeat/heartbeat.c``: ``IncrGeneration``,
``GetUUID``). Every packet carries both (``srcuuid``, ``hg``). A peer drops
packets whose generation is lower than the one it knows ("attempted replay
attack"), and treats a node that went silent past its deadtime and then
speaks again with the *same* generation as a partition that healed (real
heartbeat then restarts itself). So the generation must grow on every start
of the process, and must survive crashes: it is written to a temporary file,
fsync'ed and renamed over the old one, then the directory is fsync'ed.

Files, in ``state_dir`` (created if missing, mode 0755):

* ``<node>.hb_uuid``: the 16 raw bytes of the uuid (as heartbeat's
  ``hb_uuid`` file), never rewritten once created;
* ``<node>.hb_generation``: the last generation handed out, as decimal text
  and a newline.

* ``<node>.lock``: held with ``flock(2)`` (exclusive) for the whole life of
  the HA service, by `lock_node`, and holding the holder's pid as decimal
  text. Two processes on one configuration would share a uuid: each would
  take the other's packets for its own, both would go active and the peer
  would see the generation jump back and forth ("attempted replay attack").
  The second one is refused instead (`NodeLockedError`). The file is never
  removed (removing a lock file races with a process about to lock it); a
  lock dies with its process, so a crash never leaves a stale lock.

The node name is part of the file names so that two instances sharing one
state directory (a lab host running both nodes) never share a uuid.

Every write is `ha.durable.write_file_atomic` (temporary file, fsync,
rename, fsync of the directory); every read is `ha.readfile.read_regular_file`
(regular files only, at most 4096 bytes).

The first generation of a new state directory is the wall-clock time in
seconds plus one, as heartbeat does when it finds no previous generation: a
node whose state directory was wiped still comes back with a generation
higher than the one its peer remembers (as long as the clock is sane).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import time
import uuid as uuidlib
from collections.abc import Callable
from typing import Self

from ha.durable import make_directories, write_file_atomic
from ha.model import MAX_GENERATION, NodeIdentity
from ha.readfile import ReadFileError, read_regular_file_if_exists

__all__ = [
    "IdentityError",
    "NodeIdentity",
    "NodeLock",
    "NodeLockedError",
    "generation_path",
    "load_identity",
    "lock_file",
    "lock_node",
    "lock_path",
    "uuid_path",
]

UUID_SUFFIX = ".hb_uuid"
GENERATION_SUFFIX = ".hb_generation"
LOCK_SUFFIX = ".lock"
#: Bound of every identity file read, bytes (they hold 16 bytes or a number).
_MAX_FILE = 4096


class IdentityError(Exception):
    """The identity files cannot be read, parsed or written.

    ``str(err)`` is ``"<path>: <reason>"``; `path` and `reason` are attributes.
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def _check_node(node: str) -> None:
    if not isinstance(node, str) or not node or node in (".", "..") or "/" in node or "\0" in node:
        raise ValueError(f"node name {node!r} cannot be used in a file name")


def uuid_path(state_dir: str | os.PathLike[str], node: str) -> str:
    """Path of `node`'s uuid file in `state_dir`."""
    _check_node(node)
    return os.path.join(os.fspath(state_dir), node + UUID_SUFFIX)


def generation_path(state_dir: str | os.PathLike[str], node: str) -> str:
    """Path of `node`'s generation file in `state_dir`."""
    _check_node(node)
    return os.path.join(os.fspath(state_dir), node + GENERATION_SUFFIX)


def lock_path(state_dir: str | os.PathLike[str], node: str) -> str:
    """Path of `node`'s lock file in `state_dir` (see `lock_node`)."""
    _check_node(node)
    return os.path.join(os.fspath(state_dir), node + LOCK_SUFFIX)


def _write_atomic(path: str, data: bytes, mode: int) -> None:
    """Write `data` to `path` durably (`ha.durable.write_file_atomic`); IdentityError on failure."""
    try:
        write_file_atomic(path, data, mode)
    except OSError as exc:
        raise IdentityError(path, f"cannot write: {exc.strerror or exc}") from exc


def _read(path: str) -> bytes | None:
    """The regular file `path` (at most `_MAX_FILE` bytes; a FIFO does not block), None if absent."""
    try:
        return read_regular_file_if_exists(path, _MAX_FILE)
    except ReadFileError as exc:
        raise IdentityError(path, exc.reason) from exc


def _load_uuid(path: str, new_uuid: Callable[[], bytes]) -> bytes:
    data = _read(path)
    if data is None:
        value = new_uuid()
        if len(value) != 16 or not any(value):
            raise IdentityError(path, "uuid generator returned an unusable value")
        _write_atomic(path, value, 0o644)
        return value
    if len(data) != 16:
        raise IdentityError(path, f"holds {len(data)} bytes, a uuid file holds exactly 16")
    if not any(data):
        raise IdentityError(path, "holds an all-zero uuid")
    return data


def _next_generation(path: str, clock: Callable[[], float]) -> int:
    data = _read(path)
    if data is None:
        previous = max(int(clock()), 0)
    else:
        text = data.decode("ascii", "replace").strip()
        if not text.isdigit() or len(text) > 19:
            raise IdentityError(path, f"does not hold a generation number: {text[:40]!r}")
        previous = int(text)
    generation = previous + 1
    if generation > MAX_GENERATION:
        raise IdentityError(path, f"generation {previous} cannot be incremented")
    _write_atomic(path, b"%d\n" % generation, 0o644)
    return generation


def load_identity(
    state_dir: str | os.PathLike[str],
    node: str,
    *,
    clock: Callable[[], float] = time.time,
    new_uuid: Callable[[], bytes] = lambda: uuidlib.uuid4().bytes,
) -> NodeIdentity:
    """Load (or create) `node`'s uuid and hand out its next generation.

    Call once per process start: every call increments the generation on
    disk (durably) before returning it. `clock` (seconds since the epoch)
    seeds the first generation of a new state directory; `new_uuid` makes
    the uuid the first time. Both are parameters for tests.

    Returns a `NodeIdentity`. Raises `IdentityError` naming the file when a
    file cannot be read or written or holds garbage (a uuid file that is not
    16 bytes, a generation file that is not a decimal number), and
    ``ValueError`` for a node name that cannot be part of a file name.
    """
    upath = uuid_path(state_dir, node)
    gpath = generation_path(state_dir, node)
    _ensure_state_dir(os.fspath(state_dir))
    node_uuid = _load_uuid(upath, new_uuid)
    generation = _next_generation(gpath, clock)
    return NodeIdentity(uuid=node_uuid, generation=generation)


def _ensure_state_dir(directory: str) -> None:
    try:
        make_directories(directory, 0o755)
    except OSError as exc:
        raise IdentityError(directory, f"cannot create the state directory: {exc.strerror or exc}") from exc
    if not os.path.isdir(directory):
        raise IdentityError(directory, "is not a directory")


class NodeLockedError(IdentityError):
    """Another process holds the node's lock: it runs HA as the same node on this state directory.

    ``str(err)`` is ``"<lock file>: <reason>"`` and names the holder's pid
    when the lock file holds one; `pid` is that pid or None.
    """

    def __init__(self, path: str, node: str, pid: int | None) -> None:
        self.pid = pid
        holder = f"process {pid}" if pid is not None else "another process (pid unknown)"
        super().__init__(
            path,
            f"node {node!r} is already running here: {holder} holds this lock; "
            "two daemons with one node name and state directory would share a uuid",
        )


class NodeLock:
    """An exclusive ``flock(2)`` on a node's lock file, made by `lock_node`.

    `path` is the lock file. `release` (idempotent; also run by ``with``
    and when the object is collected) empties the file and drops the lock.
    """

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        """True until `release`."""
        return self._fd is not None

    def release(self) -> None:
        """Drop the lock (``LOCK_UN``, so also when a forked child shares the descriptor) and close the file."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError:
            pass
        finally:
            os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


def _holder_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and len(text) <= 10 and int(text) > 0 else None


def lock_node(state_dir: str | os.PathLike[str], node: str) -> NodeLock:
    """Take `node`'s lock in `state_dir` (``<node>.lock``), without waiting.

    Creates `state_dir` (0755) and the lock file (0644) when missing, takes
    ``flock(LOCK_EX | LOCK_NB)`` on it and writes our pid into it. The lock
    lasts until `NodeLock.release` or the end of the process; the file
    descriptor is close-on-exec, so programs we start never inherit it.

    Returns a held `NodeLock`. Raises `NodeLockedError` (naming the lock
    file and the holder's pid) when another process holds the lock,
    `IdentityError` when the lock file cannot be opened or locked (a
    symlink, a directory, no permission, ...), ``ValueError`` for a node
    name that cannot be part of a file name.
    """
    path = lock_path(state_dir, node)
    _ensure_state_dir(os.fspath(state_dir))
    return lock_file(path, lambda pid: NodeLockedError(path, node, pid))


def lock_file(path: str, busy: Callable[[int | None], IdentityError]) -> NodeLock:
    """Take an exclusive ``flock(2)`` on the lock file `path` (created 0644 in an existing
    directory), without waiting, and write our pid into it.

    Returns a held `NodeLock`. Raises ``busy(pid of the holder or None)`` when another process
    holds it; `IdentityError` when it cannot be opened or locked (a symbolic link, a directory,
    no permission, ...).
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY, 0o644)
    except OSError as exc:
        reason = "is a symbolic link; refusing to use it" if exc.errno == errno.ELOOP else exc.strerror or str(exc)
        raise IdentityError(path, f"cannot open the lock file: {reason}") from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise IdentityError(path, "the lock file is not a regular file")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise busy(_holder_pid(fd)) from None
        except OSError as exc:
            raise IdentityError(path, f"cannot lock: {exc.strerror or exc}") from exc
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, b"%d\n" % os.getpid(), 0)
        except OSError as exc:
            raise IdentityError(path, f"cannot write the pid: {exc.strerror or exc}") from exc
    except BaseException:
        os.close(fd)
        raise
    return NodeLock(path, fd)
