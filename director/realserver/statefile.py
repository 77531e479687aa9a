"""The state file of `directord realserver`: what ``prep`` changed, for ``undo``.

A JSON document (``{"version": 1, "netns", "request", "persist_root",
"applied": [records]}``, the records of :mod:`director.realserver.changes`)
at ``/var/lib/directord/realserver.json``, or ``realserver-<netns>.json``
in a network namespace other than the initial one. Written atomically and
durably after every change; read back with a size limit and without
blocking on a FIFO.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from ha.durable import make_directories, remove_file, write_file_atomic
from ha.readfile import ReadFileError, read_regular_file_if_exists

from .model import RealServerError, explain_error

STATE_DIR = "/var/lib/directord"
#: Largest state file read, bytes (a record is ~100 bytes; prep writes a few dozen).
MAX_STATE_BYTES = 16 << 20


def current_netns_name() -> str | None:
    """Name of the calling process's network namespace: the ``/run/netns`` name of a
    named one, None for the initial one (PID 1's, or when that cannot be read),
    else ``netns-<inode>``."""
    try:
        me = os.stat("/proc/self/ns/net")
    except OSError:
        return None
    try:
        for name in sorted(os.listdir("/run/netns")):
            try:
                st = os.stat(os.path.join("/run/netns", name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == (me.st_dev, me.st_ino):
                return name
    except OSError:
        pass
    try:
        init = os.stat("/proc/1/ns/net")
    except OSError:
        return None
    return None if (init.st_dev, init.st_ino) == (me.st_dev, me.st_ino) else f"netns-{me.st_ino}"


def default_state_file() -> str:
    """``/var/lib/directord/realserver.json``; in a network namespace other than the
    initial one ``realserver-<netns name>.json`` (namespaces share the file system)."""
    name = current_netns_name()
    return os.path.join(STATE_DIR, f"realserver-{name}.json" if name else "realserver.json")


def read_text_file(path: str, limit: int) -> str | None:
    """The UTF-8 text of the regular file ``path`` (at most ``limit`` bytes), None if it does not exist.

    Used for the state file (:func:`load_state`) and for the ``--persist`` files
    (:meth:`director.realserver.kernel.KernelBackend.read_file`).

    Raises:
        ReadFileError: not a regular file (a FIFO does not block), too large, unreadable.
        UnicodeDecodeError: not UTF-8.
    """
    data = read_regular_file_if_exists(path, limit)
    return None if data is None else data.decode("utf-8")


def load_state(path: str) -> dict | None:
    """The state document at ``path``, None if there is none.

    The file must be a regular file of at most :data:`MAX_STATE_BYTES` bytes
    (a FIFO or a device there is an error, not a hang).

    Raises:
        RealServerError: unreadable or not a state document.
    """
    try:
        text = read_text_file(path, MAX_STATE_BYTES)
        if text is None:
            return None
        doc = json.loads(text)
    except ReadFileError as exc:
        raise RealServerError(f"state file {path}: {exc.reason}") from None
    except (ValueError, RecursionError) as exc:  # RecursionError: JSON nested too deep
        raise RealServerError(f"state file {path}: not JSON: {explain_error(exc)}") from None
    if not isinstance(doc, dict) or doc.get("version") != 1 or not isinstance(doc.get("applied"), list):
        raise RealServerError(f"state file {path}: not a directord realserver state (version 1)")
    return doc


def save_state(path: str, doc: Mapping | None) -> None:
    """Write ``doc`` to ``path`` (mode 0644, creating the folder); None removes the file.

    Atomic and durable (`ha.durable.write_file_atomic`: the file and its
    folder are fsync'ed), so that ``undo`` finds the whole state after a
    power cut, and a removal is durable too.

    Raises:
        OSError: the file cannot be written (or is not a regular file:
            `ha.durable.NotRegularFileError`).
    """
    if doc is None:
        remove_file(path)
        return
    text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    make_directories(os.path.dirname(os.path.abspath(path)))
    write_file_atomic(path, text.encode(), 0o644)
