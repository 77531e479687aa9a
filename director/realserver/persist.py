"""``directord realserver prep --persist``: the files that make the preparation survive a reboot.

A sysctl.d file with the managed sysctls, an ``EnvironmentFile`` holding the
``prep`` arguments, and the oneshot unit ``directord-realserver.service``
(enabled by a ``multi-user.target.wants`` link) that runs the same ``prep``
early at boot, its ``ExecStart=`` naming the ``directord`` that ran ``prep`` (a venv's
too). :func:`plan_persist` turns them into plan items (pure, apart from
:func:`unit_text` finding that command); the changes are applied and
undone like the others (:mod:`director.realserver.changes`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from director import units

from . import sysctl as rsysctl
from .model import Change, Item, Plan, Request

SYSCTL_CONF = "etc/sysctl.d/60-directord-realserver.conf"
ENV_FILE = "etc/default/directord-realserver"
UNIT_NAME = "directord-realserver.service"
UNIT_FILE = f"etc/systemd/system/{UNIT_NAME}"
UNIT_LINK = f"etc/systemd/system/multi-user.target.wants/{UNIT_NAME}"
#: The variable of :data:`ENV_FILE` the unit's ``ExecStart`` expands.
ENV_VAR = "DIRECTORD_REALSERVER_ARGS"
#: The unit as shipped (`director.units` holds the text).
UNIT_FALLBACK = units.UNITS[UNIT_NAME]


@dataclass(frozen=True)
class PersistPaths:
    """Where ``--persist`` writes: ``sysctl_conf`` (sysctl.d), ``env_file`` (the
    unit's ``EnvironmentFile``), ``unit_file`` and ``unit_link`` (the
    ``multi-user.target.wants`` link ``systemctl enable`` makes)."""

    sysctl_conf: str
    env_file: str
    unit_file: str
    unit_link: str

    @classmethod
    def under(cls, root: str = "/") -> PersistPaths:
        """The standard paths below ``root`` (``"/"`` on a real host)."""
        r = Path(root)
        return cls(str(r / SYSCTL_CONF), str(r / ENV_FILE), str(r / UNIT_FILE), str(r / UNIT_LINK))


def unit_text(command: str | None = None) -> str:
    """The systemd unit shipped as ``etc/directord-realserver.service`` (`director.units`), with
    ``command`` (the ``directord`` this process runs from: `director.units.installed_command`)
    in its ``ExecStart=``.

    Raises:
        ValueError: a command a unit file cannot carry (`director.units.render`).
    """
    return units.render(UNIT_NAME, units.installed_command() if command is None else command)


def sysctl_conf_text(p: Plan) -> str:
    """The sysctl.d file making ``p``'s sysctls permanent: each managed key with
    the value it will have after ``prep`` (the current one if acceptable)."""
    lines = [
        f"# Written by `directord realserver prep --persist` (LVS real server, forwarding method {p.request.mode}).",
        "# Removed by `directord realserver undo`.",
    ]
    for item in p.items:
        if item.sysctl is not None:
            lines.append(f"{rsysctl.display_key(item.sysctl[0])} = {item.sysctl[1]}")
    return "\n".join(lines) + "\n"


def env_file_text(request: Request, state_file: str | None) -> str:
    """The ``EnvironmentFile`` of the unit: :data:`ENV_VAR` holds the ``prep`` arguments.

    Raises:
        ValueError: an argument systemd's ``$VAR`` word splitting cannot carry.
    """
    argv = request.argv() + (["--state-file", state_file] if state_file else [])
    bad = [a for a in argv if not a or any(c.isspace() or c in "\"'\\$%" for c in a)]
    if bad:
        # systemd splits $VAR at whitespace and interprets no quotes in it
        raise ValueError(f"cannot pass {bad[0]!r} through {ENV_VAR} (whitespace, quote, $ or %)")
    return (
        "# Written by `directord realserver prep --persist`; read by directord-realserver.service.\n"
        f'{ENV_VAR}="{" ".join(argv)}"\n'
    )


def plan_persist(
    p: Plan, paths: PersistPaths, existing: Mapping[str, str | None], state_file: str | None = None
) -> list[Item]:
    """Items (with changes) for ``--persist`` (pure).

    ``existing`` maps each path of ``paths`` to its current content (for the
    link: its target), None when absent. ``state_file`` is repeated in the
    unit's arguments when it is not the default.
    """
    wanted = [
        (paths.sysctl_conf, "file", sysctl_conf_text(p)),
        (paths.env_file, "file", env_file_text(p.request, state_file)),
        (paths.unit_file, "file", unit_text()),
        (paths.unit_link, "symlink", os.path.relpath(paths.unit_file, os.path.dirname(paths.unit_link))),
    ]
    items = []
    for path, kind, content in wanted:
        now = existing.get(path)
        if now == content:
            items.append(Item(path, True, "up to date"))
        else:
            items.append(Item(path, False, "missing" if now is None else "differs", Change(kind, path, content, now)))
    return items
