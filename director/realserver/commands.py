"""The commands ``directord realserver prep|undo|status``: what they do with their parsed arguments.

Each command reads the host (:func:`~director.realserver.kernel.gather`),
plans (:func:`~director.realserver.planner.plan`, with
:func:`~director.realserver.persist.plan_persist` for ``--persist``),
applies through a :class:`~director.realserver.changes.Backend` and journals
in the state file (:mod:`director.realserver.statefile`); it reports on
stdout, errors on stderr, and returns the exit status. Their arguments are
registered by :mod:`director.realserver.cli`, which imports this module only
when a command runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable

from . import sysctl as rsysctl
from .changes import ApplyError, Backend, apply, describe_record, merge_records, revert
from .kernel import KernelBackend, gather
from .model import Change, HostState, Item, RealServerError, Request, explain_error
from .persist import PersistPaths, plan_persist
from .planner import plan
from .statefile import current_netns_name, default_state_file, load_state, save_state


def _out(line: str) -> None:
    print(line, flush=True)


def _err(line: str) -> None:
    print(f"directord realserver: {line}", file=sys.stderr, flush=True)


def request_from_args(args: argparse.Namespace) -> Request:
    """The :class:`~director.realserver.model.Request` of parsed ``prep``/``status`` arguments.

    Repeated VIPs and interfaces are kept once, in the order first given;
    ``--mode`` defaults to dr.
    """
    return Request(
        vips=tuple(dict.fromkeys(args.vip or ())),
        mode=args.mode or "dr",
        interfaces=tuple(dict.fromkeys(args.interface or ())),
        director=args.director,
    )


def _status_lines(items: Iterable[Item]) -> list[str]:
    return [f"{'present' if i.present else 'missing'}  {i.what}" + (f" {i.detail}" if i.detail else "") for i in items]


def prep(
    request: Request,
    *,
    state_file: str,
    dry_run: bool = False,
    persist_root: str | None = None,
    backend: Backend | None = None,
    host: HostState | None = None,
    out: Callable[[str], None] = _out,
) -> int:
    """``directord realserver prep``: plan, print, apply, journal. Returns the exit status.

    ``persist_root``: also write the persistence files below that root (``"/"``
    on a real host). ``backend``/``host`` replace the kernel (tests).
    0: the host is ready (changed or already so); 1: refused or failed
    (message on stderr, nothing left half-applied).
    """
    backend = backend or KernelBackend()
    try:
        host = host or gather(request)
        p = plan(request, host)
    except RealServerError as exc:
        _err(str(exc))
        return 1
    for note in p.notes:
        out(f"note: {note}")
    if p.errors:
        for e in p.errors:
            _err(e)
        _err("nothing changed")
        return 1
    checks_failed = [i for i in p.items if not i.present and i.change is None]
    items = list(p.items)
    if persist_root is not None:
        paths = PersistPaths.under(persist_root)
        try:
            existing = {
                paths.sysctl_conf: backend.read_file(paths.sysctl_conf),
                paths.env_file: backend.read_file(paths.env_file),
                paths.unit_file: backend.read_file(paths.unit_file),
                paths.unit_link: backend.read_link(paths.unit_link),
            }
        except RealServerError as exc:
            _err(f"{exc}; nothing changed")
            return 1
        sf = None if state_file == default_state_file() else state_file
        try:
            items += plan_persist(p, paths, existing, sf)
        except ValueError as exc:
            _err(f"--persist: {exc}; nothing changed")
            return 1
    changes = [i.change for i in items if i.change is not None]
    if dry_run:
        for c in changes:
            out(f"would {c.describe() if c.kind != 'sysctl' else 'set ' + c.describe()}")
            if c.kind == "file":
                for line in (c.value or "").splitlines():
                    out(f"    | {line}")
        for i in checks_failed:
            out(f"check failed: {i.what}: {i.detail}")
        out(f"dry run: {len(changes)} change(s) planned, nothing done")
        return 0 if not checks_failed else 1
    if not changes:
        for i in checks_failed:
            _err(f"{i.what}: {i.detail}")
        if checks_failed:
            return 1
        out(f"nothing to change: the host is ready as a {request.mode} real server")
        return 0

    try:
        previous = load_state(state_file)
    except RealServerError as exc:
        _err(str(exc))
        return 1
    base = previous["applied"] if previous else []

    def journal(records: list[dict]) -> None:
        if not records and previous is None:
            save_state(state_file, None)
            return
        save_state(
            state_file,
            {
                "version": 1,
                "netns": current_netns_name(),
                "request": request.to_json(),
                "persist_root": persist_root,
                "applied": merge_records(base, records),
            },
        )

    def report(change: Change, rec: dict | None) -> None:
        if rec is None:
            out(f"already: {change.describe()}")
        elif change.kind == "sysctl":
            out(f"set {rsysctl.display_key(change.target)} = {change.value} (was {rec['old']})")
        else:
            out(change.describe())

    try:
        journal([])  # the state file must be writable before anything changes
    except OSError as exc:
        _err(f"state file {state_file}: {explain_error(exc)}; nothing changed")
        return 1
    try:
        apply(changes, backend, on_record=journal, report=report)
    except ApplyError as exc:
        _err(f"failed: {exc}")
        if exc.undone:
            _err(f"rolled back {len(exc.undone)} change(s) made in this run")
        for e in exc.rollback_errors:
            _err(f"rollback: {e}")
        if exc.left:
            _err(f"{len(exc.left)} change(s) could not be rolled back; they stay recorded in {state_file}")
        return 1
    if persist_root == "/" and os.path.isdir("/run/systemd/system") and shutil.which("systemctl"):
        subprocess.run(["systemctl", "daemon-reload"], capture_output=True)
    for i in checks_failed:
        _err(f"{i.what}: {i.detail}")
    out(f"done: {len(changes)} change(s); undo with: directord realserver undo --state-file {state_file}")
    return 1 if checks_failed else 0


def undo(
    *, state_file: str, dry_run: bool = False, backend: Backend | None = None, out: Callable[[str], None] = _out
) -> int:
    """``directord realserver undo``: revert the recorded changes, newest first. Returns the exit status.

    0: everything reverted (or nothing recorded); 1: some records could not
    be reverted (they stay in the state file).
    """
    backend = backend or KernelBackend()
    try:
        doc = load_state(state_file)
    except RealServerError as exc:
        _err(str(exc))
        return 1
    if doc is None or not doc["applied"]:
        out(f"nothing to undo (no changes recorded in {state_file})")
        if doc is not None and not dry_run:
            save_state(state_file, None)
        return 0
    records = doc["applied"]
    if dry_run:
        for rec in reversed(records):
            out(f"would {describe_record(rec)}")
        out(f"dry run: {len(records)} record(s), nothing done")
        return 0
    left = []
    for rec in reversed(records):
        try:
            warn = revert(rec, backend)
        except Exception as exc:
            _err(f"{describe_record(rec)}: {explain_error(exc)}")
            left.insert(0, rec)
            continue
        out(f"warning: {warn}" if warn else describe_record(rec))
    if left:
        save_state(state_file, {**doc, "applied": left})
        _err(f"{len(left)} change(s) not undone; they stay recorded in {state_file}")
        return 1
    if doc.get("persist_root") == "/" and os.path.isdir("/run/systemd/system") and shutil.which("systemctl"):
        subprocess.run(["systemctl", "daemon-reload"], capture_output=True)
    save_state(state_file, None)
    out(f"undone: {len(records)} change(s)")
    return 0


def status(
    request: Request, *, as_json: bool = False, host: HostState | None = None, out: Callable[[str], None] = _out
) -> int:
    """``directord realserver status``: each item present or missing. 0 only when ready."""
    try:
        p = plan(request, host or gather(request))
    except RealServerError as exc:
        _err(str(exc))
        return 1
    if as_json:
        out(
            json.dumps(
                {
                    "ready": p.ready,
                    "request": request.to_json(),
                    "items": [{"what": i.what, "present": i.present, "detail": i.detail} for i in p.items],
                    "errors": list(p.errors),
                    "notes": list(p.notes),
                },
                indent=2,
            )
        )
    else:
        for line in _status_lines(p.items):
            out(line)
        for e in p.errors:
            out(f"error    {e}")
        for n in p.notes:
            out(f"note     {n}")
        out(f"{'ready' if p.ready else 'not ready'}: {request.mode} real server")
    return 0 if p.ready else 1


def cmd_prep(args: argparse.Namespace) -> int:
    """``directord realserver prep`` (see :func:`prep`)."""
    request = request_from_args(args)
    root = (args.persist_root or "/") if args.persist else None
    return prep(request, state_file=args.state_file or default_state_file(), dry_run=args.dry_run, persist_root=root)


def cmd_undo(args: argparse.Namespace) -> int:
    """``directord realserver undo`` (see :func:`undo`)."""
    return undo(state_file=args.state_file or default_state_file(), dry_run=args.dry_run)


def cmd_status(args: argparse.Namespace) -> int:
    """``directord realserver status``: the request given, else the one recorded by prep (see :func:`status`)."""
    request = request_from_args(args)
    if not args.vip and not args.director:
        try:
            doc = load_state(args.state_file or default_state_file())
        except RealServerError as exc:
            _err(str(exc))
            return 1
        if doc is None or "request" not in doc:
            _err("give --vip (and --mode), or run prep first")
            return 1
        recorded = Request.from_json(doc["request"])
        request = Request(
            recorded.vips, args.mode or recorded.mode, request.interfaces or recorded.interfaces, recorded.director
        )
    return status(request, as_json=args.json)
