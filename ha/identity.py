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

The node name is part of the file names so that two instances sharing one
state directory (a lab host running both nodes) never share a uuid.

The first generation of a new state directory is the wall-clock time in
seconds plus one, as heartbeat does when it finds no previous generation: a
node whose state directory was wiped still comes back with a generation
higher than the one its peer remembers (as long as the clock is sane).
"""

from __future__ import annotations

import os
import time
import uuid as uuidlib
from dataclasses import dataclass
from typing import Callable

__all__ = ["IdentityError", "NodeIdentity", "load_identity", "uuid_path", "generation_path"]

UUID_SUFFIX = ".hb_uuid"
GENERATION_SUFFIX = ".hb_generation"
_MAX_GENERATION = 2**63 - 1


class IdentityError(Exception):
    """The identity files cannot be read, parsed or written.

    ``str(err)`` is ``"<path>: <reason>"``; `path` and `reason` are attributes.
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True)
class NodeIdentity:
    """Who this process is on the wire.

    Attributes:
        uuid: 16 raw bytes (the ``srcuuid`` field), never all zero.
        generation: positive int (the ``hg`` field, sent in hex), larger on
            every start of the process.

    Raises ``ValueError`` on a uuid that is not 16 bytes or is all zero, or a
    generation that is not a positive int.
    """

    uuid: bytes
    generation: int

    def __post_init__(self) -> None:
        if not isinstance(self.uuid, (bytes, bytearray)) or len(self.uuid) != 16:
            raise ValueError("uuid must be 16 bytes")
        if not any(self.uuid):
            raise ValueError("uuid must not be all zero (heartbeat treats it as no uuid)")
        object.__setattr__(self, "uuid", bytes(self.uuid))
        if isinstance(self.generation, bool) or not isinstance(self.generation, int):
            raise ValueError("generation must be an int")
        if not 0 < self.generation <= _MAX_GENERATION:
            raise ValueError(f"generation {self.generation} out of range 1..{_MAX_GENERATION}")


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


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: str, data: bytes, mode: int) -> None:
    """Write `data` to `path` durably: temp file, fsync, rename, fsync dir."""
    directory = os.path.dirname(path) or "."
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp.{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(directory)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise IdentityError(path, f"cannot write: {exc.strerror or exc}") from exc


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read(4096)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise IdentityError(path, f"cannot read: {exc.strerror or exc}") from exc


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
    if generation > _MAX_GENERATION:
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
    directory = os.fspath(state_dir)
    try:
        os.makedirs(directory, mode=0o755, exist_ok=True)
    except OSError as exc:
        raise IdentityError(directory, f"cannot create the state directory: {exc.strerror or exc}") from exc
    if not os.path.isdir(directory):
        raise IdentityError(directory, "is not a directory")
    node_uuid = _load_uuid(upath, new_uuid)
    generation = _next_generation(gpath, clock)
    return NodeIdentity(uuid=node_uuid, generation=generation)
