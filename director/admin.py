"""The operator's state of real servers (``directord rs enable|drain|disable``), kept across restarts.

A real server is named as the operator names it: its virtual service's name and its
``ADDRESS:PORT`` (``[ADDRESS]:PORT`` for IPv6). Only real servers an operator drained or
disabled are kept; ``enable`` forgets one. The state lives in ``STATE_DIR/admin.json``
(`ADMIN_FILE`; ``global.state_dir``, ``/var/lib/directord`` by default, systemd's
``StateDirectory=``), written atomically and durably (`ha.durable.write_file_atomic`, mode
0600) before a change is applied, so a change the operator was told about survives a crash.

File format (JSON)::

    {"version": 1, "real_servers": [{"service": "web", "real_server": "10.0.0.11:80",
      "state": "drain", "reason": "kernel upgrade", "since": 1796600000.0}]}

The file is read as hostile input: a regular file of at most `MAX_FILE` bytes, at most
`MAX_ENTRIES` entries, reasons of at most `MAX_REASON` printable characters; anything else is
an `AdminStateError` naming the file and the entry. Pure apart from `AdminStore.load` and
`AdminStore.save`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ha.durable import write_file_atomic
from ha.readfile import ReadFileError, read_regular_file_if_exists

from .planner import ADMIN_STATES, AdminState

__all__ = [
    "ADMIN_FILE",
    "MAX_ENTRIES",
    "MAX_FILE",
    "MAX_REASON",
    "AdminEntry",
    "AdminStateError",
    "AdminStore",
]

#: Name of the state file inside ``global.state_dir``.
ADMIN_FILE = "admin.json"
#: Largest state file read, bytes.
MAX_FILE = 8 << 20
#: Most real servers kept drained or disabled.
MAX_ENTRIES = 100_000
#: Longest reason kept, characters.
MAX_REASON = 200
_VERSION = 1


class AdminStateError(ValueError):
    """The state file cannot be used, or a change asked for is invalid: ``str(err)`` says why
    (the file's path and the entry's number for a bad file)."""


@dataclass(frozen=True)
class AdminEntry:
    """A real server an operator drained or disabled: ``state``, ``reason`` (may be empty) and
    ``since`` (Unix time, seconds)."""

    state: AdminState
    reason: str
    since: float


def clean_reason(text: str) -> str:
    """``text`` as a kept reason: control characters dropped, whitespace runs made one space.

    Raises:
        AdminStateError: longer than `MAX_REASON` characters.
    """
    text = " ".join("".join(ch for ch in text if ch.isprintable() or ch.isspace()).split())
    if len(text) > MAX_REASON:
        raise AdminStateError(f"a reason is at most {MAX_REASON} characters, got {len(text)}")
    return text


class AdminStore:
    """The operator's states, by (service name, real server ``ADDRESS:PORT``).

    Args:
        path: the state file (`ADMIN_FILE` in the state directory); None keeps nothing on disk.
    """

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._entries: dict[tuple[str, str], AdminEntry] = {}
        self._by_service: dict[str, dict[str, AdminState]] | None = None

    def get(self, service: str, real_server: str) -> AdminEntry | None:
        """The entry of that real server, None when it is enabled."""
        return self._entries.get((service, real_server))

    def state(self, service: str, real_server: str) -> AdminState:
        """``enabled``, ``drain`` or ``disabled``."""
        entry = self._entries.get((service, real_server))
        return entry.state if entry is not None else "enabled"

    def for_service(self, service: str) -> dict[str, AdminState]:
        """``{real server ADDRESS:PORT: state}`` of the drained or disabled real servers of ``service``."""
        if not self._entries:
            return {}
        by_service = self._by_service
        if by_service is None:
            by_service = {}
            for (name, rs), entry in self._entries.items():
                by_service.setdefault(name, {})[rs] = entry.state
            self._by_service = by_service
        return by_service.get(service, {})

    def entries(self) -> Mapping[tuple[str, str], AdminEntry]:
        """Every drained or disabled real server (read-only view)."""
        return dict(self._entries)

    def changed(self, service: str, real_server: str, state: str, reason: str, now: float) -> AdminStore:
        """A new store with that real server in ``state`` (``enabled`` forgets it); this one is
        unchanged. An unchanged state keeps its ``since``, with the new reason.

        Raises:
            AdminStateError: an unknown state, a reason too long, or too many entries.
        """
        if state not in ADMIN_STATES:
            raise AdminStateError(f"unknown state {state!r}: one of {', '.join(ADMIN_STATES)}")
        reason = clean_reason(reason)
        new = AdminStore(self.path)
        new._entries = dict(self._entries)
        key = (service, real_server)
        if state == "enabled":
            new._entries.pop(key, None)
        else:
            old = self._entries.get(key)
            since = old.since if old is not None and old.state == state else now
            new._entries[key] = AdminEntry(state, reason, since)  # type: ignore[arg-type]
            if len(new._entries) > MAX_ENTRIES:
                raise AdminStateError(f"at most {MAX_ENTRIES} real servers can be drained or disabled")
        return new

    # --- the file -----------------------------------------------------------------------

    def encode(self) -> bytes:
        """The state file's content (sorted, one entry per line)."""
        rows = [
            json.dumps(
                {"service": s, "real_server": r, "state": e.state, "reason": e.reason, "since": e.since},
                sort_keys=True,
            )
            for (s, r), e in sorted(self._entries.items())
        ]
        body = ",\n  ".join(rows)
        return (
            f'{{"version": {_VERSION}, "real_servers": [\n  {body}\n]}}\n'
            if rows
            else f'{{"version": {_VERSION}, "real_servers": []}}\n'
        ).encode()

    def load(self) -> None:
        """Read the state file; a missing file is an empty state.

        Raises:
            AdminStateError: the file cannot be read or is not a valid state file.
        """
        if self.path is None:
            return
        try:
            data = read_regular_file_if_exists(self.path, MAX_FILE)
        except ReadFileError as exc:
            raise AdminStateError(str(exc)) from None
        if data is None:
            self._entries = {}
            return
        self._entries = decode(data, self.path)
        self._by_service = None

    def save(self) -> None:
        """Write the state file atomically and durably (mode 0600), creating its directory
        (mode 0700) when missing.

        Raises:
            OSError: it cannot be written.
        """
        if self.path is None:
            return
        os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
        write_file_atomic(self.path, self.encode(), mode=0o600)


def decode(data: bytes, where: str) -> dict[tuple[str, str], AdminEntry]:
    """The entries of a state file's content; ``where`` names it in errors.

    Raises:
        AdminStateError: not JSON, another version, or a bad entry (its number is given).
    """
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise AdminStateError(f"{where}: not a JSON document: {exc}") from None
    if not isinstance(doc, dict) or doc.get("version") != _VERSION or not isinstance(doc.get("real_servers"), list):
        raise AdminStateError(f"{where}: not a directord admin state file (version {_VERSION})")
    rows: list[Any] = doc["real_servers"]
    if len(rows) > MAX_ENTRIES:
        raise AdminStateError(f"{where}: more than {MAX_ENTRIES} entries")
    entries: dict[tuple[str, str], AdminEntry] = {}
    for n, row in enumerate(rows, 1):
        problem = _row_problem(row)
        if problem is not None:
            raise AdminStateError(f"{where}: entry {n}: {problem}")
        try:
            reason = clean_reason(row.get("reason", ""))
        except AdminStateError as exc:
            raise AdminStateError(f"{where}: entry {n}: {exc}") from None
        entries[(row["service"], row["real_server"])] = AdminEntry(row["state"], reason, float(row["since"]))
    return entries


def _row_problem(row: Any) -> str | None:
    if not isinstance(row, dict):
        return "not an object"
    for key in ("service", "real_server", "state"):
        if not isinstance(row.get(key), str) or not row[key] or len(row[key]) > 1024:
            return f"{key} must be a non-empty string"
    if row["state"] not in ("drain", "disabled"):
        return f"state must be drain or disabled, got {row['state']!r}"
    if not isinstance(row.get("reason", ""), str):
        return "reason must be a string"
    since = row.get("since")
    if isinstance(since, bool) or not isinstance(since, int | float) or not 0 <= since < 1e11:
        return "since must be a Unix time"
    return None
