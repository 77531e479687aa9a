"""Applying a plan's changes and undoing them: the records ``undo`` replays, and the rollback.

:func:`apply` makes the changes in order through a :class:`Backend`
(:class:`director.realserver.kernel.KernelBackend` on a host, an in-memory
one in the tests), recording each one's previous state; when one fails it
reverts what that run did, newest first, and raises :class:`ApplyError`.
:func:`revert` undoes one record, leaving alone what someone changed since;
:func:`merge_records` joins the records of successive runs for one undo.
No I/O of its own: everything goes through the backend.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from director.sysctl import PROC_SYS

from . import sysctl as rsysctl
from .model import Change, RealServerError, explain_error


class Backend(Protocol):
    """The I/O :func:`apply` and :func:`revert` need (:class:`~director.realserver.kernel.KernelBackend` on a host).

    Sysctl keys are ``/proc/sys``-relative paths, values text without the
    newline; ``read_*`` return None for what does not exist; ``add_address``
    / ``remove_address`` return False when there was nothing to do. Any
    method may raise OSError / ``pyroute2.NetlinkError`` / RealServerError.
    """

    def read_sysctl(self, key: str) -> str | None:
        """The value of ``key``, None if it does not exist."""

    def write_sysctl(self, key: str, value: str) -> None:
        """Write ``value`` to ``key``."""

    def load_module(self, name: str) -> None:
        """Load kernel module ``name`` (no-op when loaded)."""

    def link_exists(self, name: str) -> bool:
        """True if link ``name`` exists."""

    def create_tunnel(self, name: str) -> None:
        """Create IP-in-IP device ``name``."""

    def delete_link(self, name: str) -> None:
        """Delete link ``name``."""

    def link_is_up(self, name: str) -> bool:
        """True if link ``name`` is administratively up."""

    def set_link(self, name: str, up: bool) -> None:
        """Set link ``name`` up or down."""

    def add_address(self, ifname: str, cidr: str, label: str | None) -> bool:
        """Add ``cidr`` to ``ifname`` with directord's mark; False if present already."""

    def remove_address(self, ifname: str, cidr: str, label: str | None) -> bool:
        """Remove our ``cidr`` from ``ifname``; False if absent or not ours."""

    def read_file(self, path: str) -> str | None:
        """Content of ``path``, None if absent.

        Raises:
            RealServerError: not a regular file, too large, not UTF-8 (message names the path).
        """

    def write_file(self, path: str, text: str | None) -> None:
        """Replace ``path`` with ``text`` (None: remove it)."""

    def read_link(self, path: str) -> str | None:
        """Target of symbolic link ``path``, None if absent."""

    def write_link(self, path: str, target: str | None) -> None:
        """Make ``path`` a symbolic link to ``target`` (None: remove it)."""


class ApplyError(RealServerError):
    """A change failed; the changes of the run were rolled back.

    ``change``: the failing :class:`Change`; ``undone``: records rolled back;
    ``left``: records whose rollback failed (still applied), with messages in
    ``rollback_errors``.
    """

    def __init__(self, message: str, change: Change, undone: list[dict], left: list[dict], rollback_errors: list[str]):
        super().__init__(message)
        self.change = change
        self.undone = undone
        self.left = left
        self.rollback_errors = rollback_errors


def apply_one(change: Change, backend: Backend) -> dict | None:
    """Make ``change``; return its record for undo (None when nothing had to be done).

    Records: ``{"kind": "sysctl", "key", "value", "old"}`` (``old`` read just
    before writing), ``{"kind": "address", "ifname", "cidr", "label"}``,
    ``{"kind": "link_up", "ifname"}``, ``{"kind": "tunnel", "ifname"}`` (only
    if created), ``{"kind": "module", "name"}``, ``{"kind": "file" |
    "symlink", "path", "value", "old"}``.

    Raises:
        whatever the backend raises.
    """
    k = change.kind
    if k == "module":
        backend.load_module(change.target)
        return {"kind": "module", "name": change.target}
    if k == "tunnel":
        if backend.link_exists(change.target):
            return None
        backend.create_tunnel(change.target)
        return {"kind": "tunnel", "ifname": change.target}
    if k == "link_up":
        if backend.link_is_up(change.target):
            return None
        backend.set_link(change.target, True)
        return {"kind": "link_up", "ifname": change.target}
    if k == "sysctl":
        old = backend.read_sysctl(change.target)
        if old is None:
            raise FileNotFoundError(errno.ENOENT, "no such sysctl", f"{PROC_SYS}/{change.target}")
        if old == change.value:
            return None
        backend.write_sysctl(change.target, change.value or "")
        return {"kind": "sysctl", "key": change.target, "value": change.value, "old": old}
    if k == "address":
        if not backend.add_address(change.target, change.value or "", change.label):
            return None
        return {"kind": "address", "ifname": change.target, "cidr": change.value, "label": change.label}
    if k == "file":
        old = backend.read_file(change.target)
        backend.write_file(change.target, change.value)
        return {"kind": "file", "path": change.target, "value": change.value, "old": old}
    if k == "symlink":
        old = backend.read_link(change.target)
        backend.write_link(change.target, change.value)
        return {"kind": "symlink", "path": change.target, "value": change.value, "old": old}
    raise ValueError(f"unknown change kind {k!r}")


def describe_record(rec: Mapping[str, Any]) -> str:
    """What undoing ``rec`` does, in one line."""
    k = rec["kind"]
    if k == "sysctl":
        return f"{rsysctl.display_key(rec['key'])} = {rec['old']} (back from {rec['value']})"
    if k == "address":
        return f"remove {rec['cidr']} from {rec['ifname']}"
    if k == "link_up":
        return f"set link {rec['ifname']} down"
    if k == "tunnel":
        return f"delete {rec['ifname']}"
    if k == "module":
        return f"leave module {rec['name']} loaded (other tunnels may use it)"
    if k in ("file", "symlink"):
        return f"{'remove' if rec['old'] is None else 'restore'} {rec['path']}"
    return f"unknown record {rec!r}"


def revert(rec: Mapping[str, Any], backend: Backend) -> str | None:
    """Undo one record of :func:`apply_one`.

    Returns None when done, or a warning when the item was left alone
    because someone changed it since (a sysctl no longer at our value, a
    file no longer our content).

    Raises:
        whatever the backend raises.
    """
    k = rec["kind"]
    if k == "sysctl":
        now = backend.read_sysctl(rec["key"])
        if now is None:
            return f"{rsysctl.display_key(rec['key'])} is gone (interface removed?); nothing to restore"
        if now != rec["value"]:
            return f"{rsysctl.display_key(rec['key'])} is {now}, not {rec['value']} as set by prep: left alone"
        backend.write_sysctl(rec["key"], rec["old"])
    elif k == "address":
        backend.remove_address(rec["ifname"], rec["cidr"], rec.get("label"))
    elif k == "link_up":
        if backend.link_exists(rec["ifname"]):
            backend.set_link(rec["ifname"], False)
    elif k == "tunnel":
        if backend.link_exists(rec["ifname"]):
            backend.delete_link(rec["ifname"])
    elif k == "module":
        return None
    elif k == "file":
        if backend.read_file(rec["path"]) != rec["value"]:
            return f"{rec['path']} was changed since prep wrote it: left alone"
        backend.write_file(rec["path"], rec["old"])
    elif k == "symlink":
        if backend.read_link(rec["path"]) != rec["value"]:
            return f"{rec['path']} was changed since prep made it: left alone"
        backend.write_link(rec["path"], rec["old"])
    else:
        raise ValueError(f"unknown record kind {k!r}")
    return None


def apply(
    changes: Sequence[Change],
    backend: Backend,
    *,
    on_record: Callable[[list[dict]], None] | None = None,
    report: Callable[[Change, dict | None], None] | None = None,
) -> list[dict]:
    """Apply ``changes`` in order; return the records of what was done.

    ``on_record(records)`` is called after each change that did something
    (the caller journals them); ``report(change, record)`` after each change.
    If a change (or ``on_record``) fails, every change of this run is
    reverted in reverse order and :class:`ApplyError` is raised.

    Raises:
        ApplyError: a change failed (message says which and why).
    """
    done: list[dict] = []
    for change in changes:
        try:
            rec = apply_one(change, backend)
            if rec is not None:
                done.append(rec)
                if on_record is not None:
                    on_record(list(done))
        except Exception as exc:
            undone, left, errs = [], [], []
            for r in reversed(done):
                try:
                    warn = revert(r, backend)
                    if warn:
                        errs.append(warn)
                    undone.append(r)
                except Exception as rexc:  # keep rolling back the others
                    left.append(r)
                    errs.append(f"{describe_record(r)}: {explain_error(rexc)}")
            if on_record is not None:
                try:
                    on_record(left)
                except Exception as jexc:
                    errs.append(f"state file: {explain_error(jexc)}")
            raise ApplyError(f"{change.describe()}: {explain_error(exc)}", change, undone, left, errs) from exc
        if report is not None:
            report(change, rec)
    return done


def merge_records(old: Sequence[Mapping], new: Sequence[Mapping]) -> list[dict]:
    """The records of an earlier run followed by this run's, for one undo.

    A sysctl or file already recorded keeps its first ``old`` value (what the
    host had before directord touched it) and takes the new ``value``; an
    address, link or tunnel already recorded is not repeated.
    """

    def ident(r: Mapping) -> tuple:
        k = r["kind"]
        if k == "sysctl":
            return (k, r["key"])
        if k in ("file", "symlink"):
            return (k, r["path"])
        if k == "address":
            return (k, r["ifname"], r["cidr"])
        return (k, r.get("ifname") or r.get("name"))

    out = [dict(r) for r in old]
    index = {ident(r): i for i, r in enumerate(out)}
    for r in new:
        i = index.get(ident(r))
        if i is None:
            index[ident(r)] = len(out)
            out.append(dict(r))
        elif "value" in r:
            out[i]["value"] = r["value"]
    return out
