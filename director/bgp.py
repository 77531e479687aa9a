"""What the daemon tells the BGP service (`ha.bgp.service.BgpService`): each VIP's virtual
services and their health (`vip_health`, pure), and the kernel switches an active-active
director needs (`BGP_SYSCTLS`, `prepare_sysctls`).

Kernel switches (Documentation/networking/ipvs-sysctl.rst and ip-sysctl.rst):

* ``net.ipv4.conf.all.arp_ignore=1`` and ``arp_announce=2``: the VIP is on ``lo`` of every
  director, and no director may answer ARP for it on the shared segment (the routers' routes,
  not ARP, pick the director), as on a DR real server;
* ``net.ipv4.vs.sloppy_tcp=1`` and ``sloppy_sctp=1``: IPVS creates a connection entry for a
  packet in the middle of a flow, not only for a SYN (INIT), so a connection a router rehashes
  to another director goes on there (with ``mh``, to the same real server);
* ``net.ipv4.vs.conn_reuse_mode=3`` and ``expire_nodest_conn=1``: a new connection (a SYN)
  that meets an old entry of the same addresses and ports is scheduled afresh, not sent where
  the old entry says: the default mode 1 does that only from TIME_WAIT, while a director in DR
  mode, seeing one direction only, holds finished connections in FIN_WAIT (bit 2 covers
  them) and the entries of connections a real server reset in any state until they expire
  (``expire_nodest_conn`` covers an entry whose real server is at weight 0, ip_vs_core.c
  ``ip_vs_in``); without them a client port reused within minutes goes to a quiesced real
  server.

The ``vs`` keys exist once ``ip_vs`` is loaded.  A switch that cannot be written (``/proc/sys``
is read-only under systemd's ``ProtectKernelTunables=``) is reported, with the line to put in
``/etc/sysctl.d/``.

They are undone at a graceful stop: before a switch is changed for the first time, its previous
value is recorded in ``STATE_DIR/bgp-sysctls.json`` (`SYSCTL_FILE`, written atomically and
durably through `ha.durable`); `restore_sysctls` writes the recorded values back once the BGP
service has stopped, and removes the file.  After a crash the file is still there: the next
start keeps the values it holds (the switches then have directord's values, not the
originals) and records only what it changes for the first time.  A switch that someone else
set to a third value since is left as it is.  The decisions are pure (`originals_to_record`,
`plan_restore`, `render_sysctl_record`, `parse_sysctl_record`); `prepare_sysctls` and
`restore_sysctls` do the I/O.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

from ha.bgp.model import BgpConfig
from ha.bgp.policy import ServiceHealth
from ha.durable import remove_file, write_file_atomic
from ha.readfile import ReadFileError, read_regular_file_if_exists

from .model import Config, DestKey, ServiceKey, VirtualService
from .planner import AdminState, HealthState
from .sysctl import read_sysctl, write_sysctl

__all__ = [
    "BGP_SYSCTLS",
    "SYSCTL_FILE",
    "SysctlRecordError",
    "SysctlRestore",
    "load_sysctl_record",
    "originals_to_record",
    "parse_sysctl_record",
    "plan_restore",
    "prepare_sysctls",
    "render_sysctl_record",
    "restore_sysctls",
    "vip_health",
]

log = logging.getLogger("directord.bgp")

#: (key in /proc/sys path form, wanted value) for a director with a bgp section.
BGP_SYSCTLS: tuple[tuple[str, str], ...] = (
    ("net/ipv4/conf/all/arp_ignore", "1"),
    ("net/ipv4/conf/all/arp_announce", "2"),
    ("net/ipv4/vs/sloppy_tcp", "1"),
    ("net/ipv4/vs/sloppy_sctp", "1"),
    ("net/ipv4/vs/conn_reuse_mode", "3"),
    ("net/ipv4/vs/expire_nodest_conn", "1"),
)

#: The switches' values before directord changed them, in the state directory:
#: ``{"sysctls": {KEY: VALUE, ...}}`` (keys in path form, of `BGP_SYSCTLS`); absent = nothing to undo.
SYSCTL_FILE = "bgp-sysctls.json"
#: Bytes; the file holds at most six short entries.
_MAX_SYSCTL_FILE = 4096
#: A recorded value: an integer, as the kernel shows these switches.
_VALUE = re.compile(r"-?[0-9]{1,20}")


def vip_health(
    config: Config,
    bgp: BgpConfig,
    health: Callable[[ServiceKey, DestKey], HealthState],
    admin: Callable[[VirtualService], Mapping[DestKey, AdminState]],
    programmed: Callable[[ServiceKey], bool],
) -> dict[str, tuple[ServiceHealth, ...]]:
    """Each bgp VIP's virtual services (VIP address -> their `ServiceHealth`).

    A real server is in service when its checks say ``up`` and the operator has it
    ``enabled``; unknown when its checks have no result yet and the operator has not disabled
    it; ``programmed`` says whether a service is in the kernel's IPVS table.
    """
    wanted = {v.address for v in bgp.vips}
    found: dict[str, list[ServiceHealth]] = {a: [] for a in wanted}
    for svc in config.services:
        address = svc.key.address
        if address not in wanted:
            continue
        states = admin(svc)
        up = unknown = 0
        for rs in svc.real_servers:
            state, operator = health(svc.key, rs.key), states.get(rs.key, "enabled")
            if state == "up" and operator == "enabled":
                up += 1
            elif state == "unknown" and operator != "disabled":
                unknown += 1
        found[address].append(ServiceHealth(svc.name, programmed(svc.key), up, len(svc.real_servers), unknown))
    return {a: tuple(s) for a, s in found.items()}


def _dotted(key: str) -> str:
    return key.replace("/", ".")


class SysctlRecordError(ValueError):
    """The record of the switches' previous values (`SYSCTL_FILE`) cannot be used: it cannot be
    read, is not a regular file of at most 4 KiB, or is not what directord writes.
    ``str(err)`` names the file."""


def render_sysctl_record(originals: Mapping[str, str]) -> bytes:
    """The content of `SYSCTL_FILE` for ``originals`` (path-form key -> previous value): one JSON
    object ``{"sysctls": {...}}`` with the keys in the order given, two-space indent, a final
    newline.  Pure."""
    return (json.dumps({"sysctls": dict(originals)}, indent=2) + "\n").encode()


def parse_sysctl_record(data: bytes, wanted: Sequence[tuple[str, str]] = BGP_SYSCTLS) -> dict[str, str]:
    """The recorded previous values in ``data`` (the content of `SYSCTL_FILE`), path-form key ->
    value, in the order of ``wanted``.  Pure.

    Only keys of ``wanted`` are accepted (a file cannot make directord write any other sysctl),
    each with an integer value as text.

    Raises:
        ValueError: not UTF-8 JSON, nested too deep, or not ``{"sysctls": {KEY: "INTEGER", ...}}``
            with known keys (the message says what is wrong).
    """
    try:
        doc = json.loads(data.decode())
    except RecursionError:
        raise ValueError("not JSON: nested too deep") from None
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(doc, dict) or set(doc) != {"sysctls"} or not isinstance(doc["sysctls"], dict):
        raise ValueError('expected {"sysctls": {KEY: VALUE, ...}}')
    known = [key for key, _ in wanted]
    recorded = doc["sysctls"]
    for key, value in recorded.items():
        if key not in known:
            raise ValueError(f"unknown key {key!r} (known: {', '.join(known)})")
        if not isinstance(value, str) or not _VALUE.fullmatch(value):
            raise ValueError(f"the value of {key} is not an integer as text: {value!r}")
    return {key: recorded[key] for key in known if key in recorded}


def originals_to_record(
    recorded: Mapping[str, str],
    current: Mapping[str, str | None],
    wanted: Sequence[tuple[str, str]] = BGP_SYSCTLS,
) -> dict[str, str]:
    """What `SYSCTL_FILE` must hold before the switches are set: the values ``recorded`` already
    (a crash left them: kept, never replaced by what the switches hold now, which is
    directord's), and the current value of each switch of ``wanted`` that is about to change
    for the first time (known, not recorded, not the wanted value).  Pure.

    Args:
        recorded: path-form key -> value, from `SYSCTL_FILE` (empty when there is none).
        current: path-form key -> the switch's value now, None when it does not exist; a key
            that could not be read is left out.
        wanted: (path-form key, value) pairs, in order.

    Returns:
        path-form key -> previous value: ``recorded``'s entries, then the new ones in
        ``wanted``'s order.
    """
    originals = dict(recorded)
    for key, value in wanted:
        now = current.get(key)
        if key not in originals and now is not None and now != value:
            originals[key] = now
    return originals


class SysctlRestore(NamedTuple):
    """What `plan_restore` decided.

    Attributes:
        writes: (path-form key, value) to write back, in order.
        notes: one text per recorded switch left as it is (gone, or changed by someone else
            since directord set it).
    """

    writes: tuple[tuple[str, str], ...]
    notes: tuple[str, ...]


def plan_restore(
    originals: Mapping[str, str],
    current: Mapping[str, str | None],
    wanted: Sequence[tuple[str, str]] = BGP_SYSCTLS,
) -> SysctlRestore:
    """The writes that undo directord's switches, in ``wanted``'s order.  Pure.

    A recorded switch is written back when it still has directord's value; one that already
    has its previous value needs nothing; one that does not exist any more (``ip_vs``
    unloaded), or that someone set to a third value since, is left as it is, with a note.

    Args:
        originals: path-form key -> previous value (`SYSCTL_FILE`).
        current: path-form key -> the switch's value now, None when it does not exist; a key
            of ``originals`` left out is skipped without a note (the caller reports it).
        wanted: (path-form key, directord's value) pairs.
    """
    writes: list[tuple[str, str]] = []
    notes: list[str] = []
    for key, value in wanted:
        if key not in originals or key not in current:
            continue
        before, now = originals[key], current[key]
        if now is None:
            notes.append(f"{_dotted(key)} does not exist any more: not restored to {before}")
        elif now == value:
            writes.append((key, before))
        elif now != before:
            notes.append(f"{_dotted(key)} is {now}, not the {value} directord set: left as it is (it was {before})")
    return SysctlRestore(tuple(writes), tuple(notes))


def load_sysctl_record(state_dir: str) -> dict[str, str] | None:
    """The previous values recorded in ``STATE_DIR/`` `SYSCTL_FILE` (`parse_sysctl_record`), or
    None when there is no such file.  Blocking (one small file).

    Raises:
        SysctlRecordError: the file cannot be read, is not a regular file of at most 4 KiB, or
            is not what directord writes (the message names the file and says why).
    """
    path = os.path.join(state_dir, SYSCTL_FILE)
    try:
        data = read_regular_file_if_exists(path, _MAX_SYSCTL_FILE)
    except ReadFileError as exc:
        raise SysctlRecordError(str(exc)) from exc
    if data is None:
        return None
    try:
        return parse_sysctl_record(data)
    except ValueError as exc:
        raise SysctlRecordError(f"{path}: {exc}") from exc


def prepare_sysctls(
    state_dir: str,
    read: Callable[[str], str] = read_sysctl,
    write: Callable[[str, object], None] = write_sysctl,
) -> list[str]:
    """Set `BGP_SYSCTLS` where they differ, having recorded the previous values of those that
    change for the first time in ``STATE_DIR/`` `SYSCTL_FILE` (`originals_to_record`; through
    `ha.durable`, mode 0600); returns one problem text per switch left unset, and one for a
    record file that cannot be read or written.

    A record file that is not what directord writes is left alone and ignored (nothing is
    added to it; `restore_sysctls` restores nothing); when the record cannot be written, the
    switches are set all the same (they will not be undone at stop).  A switch that does not
    exist (``ip_vs`` not loaded) is skipped; one that cannot be set is taken out of the record
    again (it was not changed).  Runs in the calling thread's network namespace;
    blocking (small ``/proc`` files, a durable write or two).
    """
    problems: dict[str, str] = {}
    current: dict[str, str | None] = {}
    for key, _ in BGP_SYSCTLS:
        try:
            current[key] = read(key)
        except FileNotFoundError:
            current[key] = None
            problems[key] = f"{_dotted(key)} does not exist (is ip_vs loaded?)"
        except OSError as exc:
            problems[key] = f"cannot read {_dotted(key)}: {exc.strerror or exc}"
    changes = [(key, value) for key, value in BGP_SYSCTLS if current.get(key) not in (None, value)]
    path = os.path.join(state_dir, SYSCTL_FILE)
    record_problem: str | None = None
    recorded: dict[str, str] = {}
    originals: dict[str, str] = {}
    try:
        recorded = load_sysctl_record(state_dir) or {}
    except SysctlRecordError as exc:
        record_problem = f"{exc}: ignored (fix or remove it); the switches set now will not be undone at stop"
    else:
        originals = originals_to_record(recorded, current)
        if originals != recorded:
            try:
                write_file_atomic(path, render_sysctl_record(originals), 0o600)
            except OSError as exc:
                originals = recorded
                record_problem = (
                    f"cannot record the switches' previous values in {path}: {exc.strerror or exc}; "
                    "they will not be undone at stop"
                )
    failed: set[str] = set()
    for key, value in changes:
        try:
            write(key, value)
        except OSError as exc:
            failed.add(key)
            dotted = _dotted(key)
            problems[key] = (
                f"cannot set {dotted}={value}: {exc.strerror or exc}; "
                f"add '{dotted} = {value}' to /etc/sysctl.d/directord-bgp.conf"
            )
    if failed & (originals.keys() - recorded.keys()):  # recorded for nothing: not changed after all
        kept = {key: value for key, value in originals.items() if key in recorded or key not in failed}
        try:
            if kept:
                write_file_atomic(path, render_sysctl_record(kept), 0o600)
            else:
                remove_file(path)
        except OSError as exc:
            log.warning("bgp: cannot update %s: %s", path, exc.strerror or exc)
    found = [problems[key] for key, _ in BGP_SYSCTLS if key in problems]
    return found if record_problem is None else [record_problem, *found]


def restore_sysctls(
    state_dir: str,
    read: Callable[[str], str] = read_sysctl,
    write: Callable[[str, object], None] = write_sysctl,
) -> None:
    """Undo `prepare_sysctls`: write back the values recorded in ``STATE_DIR/`` `SYSCTL_FILE`
    (`plan_restore`), then remove the file (through `ha.durable`).  Never raises; logs each
    switch restored or left, and each failure with the switch's name.

    A switch that cannot be written back stays in the file (the next start keeps its previous
    value, the next stop tries again); the file is removed when none is left.  A record file
    that is not what directord writes is logged and left alone: nothing is restored.  Runs in
    the calling thread's network namespace; blocking.
    """
    path = os.path.join(state_dir, SYSCTL_FILE)
    try:
        originals = load_sysctl_record(state_dir)
    except SysctlRecordError as exc:
        log.error("bgp: %s: ignored (fix or remove it); no kernel switch is restored", exc)
        return
    if originals is None:
        return
    left: dict[str, str] = {}
    current: dict[str, str | None] = {}
    for key, before in originals.items():
        try:
            current[key] = read(key)
        except FileNotFoundError:
            current[key] = None
        except OSError as exc:
            log.error("bgp: cannot read %s: %s; not restored to %s", _dotted(key), exc.strerror or exc, before)
            left[key] = before
    plan = plan_restore(originals, current)
    for note in plan.notes:
        log.warning("bgp: %s", note)
    for key, before in plan.writes:
        try:
            write(key, before)
        except FileNotFoundError:
            log.warning("bgp: %s does not exist any more: not restored to %s", _dotted(key), before)
        except OSError as exc:
            log.error("bgp: cannot restore %s=%s: %s", _dotted(key), before, exc.strerror or exc)
            left[key] = before
        else:
            log.info("bgp: restored %s=%s", _dotted(key), before)
    try:
        if left:
            write_file_atomic(path, render_sysctl_record({k: v for k, v in originals.items() if k in left}), 0o600)
        else:
            remove_file(path)
    except OSError as exc:
        log.error("bgp: cannot update %s: %s", path, exc.strerror or exc)
