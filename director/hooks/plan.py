"""Which notify hooks an event runs, in which lane, with which environment (pure).

An event (an `director.events.Envelope` from the daemon's bus) runs the hooks of the
``notify:`` section (`director.model.NotifySettings`) whose ``events`` hold its kind and,
for a hook with ``service:``, whose event names that virtual service: `matching`.  They run
as one *run*: one after another, in file order.  Runs of ``ha.*`` events go to the HA lane,
one at a time, in event order, so a hook started on ``ha.released`` never overtakes the one
started on the ``ha.acquired`` before it (heartbeat runs its resource scripts the same way);
the other runs share the general lane, at most ``max_running`` at once (`lane`).

The hook sees the event in its environment (`hook_environment`), built from the event's JSON
form (`director.events.to_json`): ``DIRECTORD_EVENT`` (the kind), ``DIRECTORD_SEQ``,
``DIRECTORD_TIME`` (Unix time, seconds), ``DIRECTORD_MESSAGE`` (the log line),
``DIRECTORD_HOOK`` (the hook's name), then each field of the event as ``DIRECTORD_<FIELD>``
(``DIRECTORD_SERVICE``, ``DIRECTORD_REAL_SERVER``, ``DIRECTORD_OLD``, ``DIRECTORD_NEW``,
``DIRECTORD_REASON``, ``DIRECTORD_GROUP`` ...), and ``DIRECTORD_ROLE`` (``active`` on
``ha.acquired``, ``standby`` on ``ha.released``: keepalived's MASTER and BACKUP).  Values are
cut to `MAX_VALUE` characters, NUL characters dropped; ``PATH`` is `HOOK_PATH`; nothing of the
daemon's own environment is passed on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from director.events import Envelope, to_json
from director.model import SERVICE_EVENTS, Hook, NotifySettings

__all__ = ["HOOK_PATH", "MAX_VALUE", "HookRun", "Lane", "hook_environment", "lane", "matching"]

#: ``PATH`` of a hook (its program is an absolute path; this is for what it runs).
HOOK_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Characters of one environment value at most (a longer one is cut).
MAX_VALUE = 4096

Lane = Literal["ha", "general"]

_ROLES = {"ha.acquired": "active", "ha.released": "standby"}


@dataclass(frozen=True)
class HookRun:
    """The hooks one event runs, in order, each with its environment: ``steps`` is a tuple of
    ``(hook, environment)``; ``kind`` and ``seq`` are the event's."""

    lane: Lane
    kind: str
    seq: int
    steps: tuple[tuple[Hook, Mapping[str, str]], ...]


def lane(kind: str) -> Lane:
    """``ha`` for the HA events (one hook at a time, in event order), ``general`` for the rest."""
    return "ha" if kind.startswith("ha.") else "general"


def matching(notify: NotifySettings, envelope: Envelope) -> HookRun | None:
    """The run of the hooks ``envelope``'s event asks for, or ``None`` when no hook wants it."""
    event = envelope.event
    kind = event.kind
    hooks = [
        hook
        for hook in notify.hooks
        if kind in hook.events
        and (hook.service is None or (kind in SERVICE_EVENTS and getattr(event, "service", None) == hook.service))
    ]
    if not hooks:
        return None
    fields = to_json(envelope)
    return HookRun(
        lane=lane(kind),
        kind=kind,
        seq=envelope.seq,
        steps=tuple((hook, hook_environment(hook, fields)) for hook in hooks),
    )


def _value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, list | tuple):
        text = " ".join(str(v) for v in value)
    else:
        text = str(value)
    return text.replace("\0", "")[:MAX_VALUE]


def hook_environment(hook: Hook, fields: Mapping[str, Any]) -> dict[str, str]:
    """The environment of ``hook`` for an event whose JSON form (`director.events.to_json`) is
    ``fields``: see the module's docstring for the variables."""
    env = {
        "PATH": HOOK_PATH,
        "DIRECTORD_EVENT": _value(fields["kind"]),
        "DIRECTORD_SEQ": _value(fields["seq"]),
        "DIRECTORD_TIME": f"{fields['at']:.6f}",
        "DIRECTORD_MESSAGE": _value(fields["message"]),
        "DIRECTORD_HOOK": hook.name,
    }
    for name, value in fields.items():
        if name in ("kind", "seq", "at", "message", "level"):
            continue
        key = "DIRECTORD_" + "".join(c if c.isalnum() else "_" for c in name).upper()
        env.setdefault(key, _value(value))
    role = _ROLES.get(fields["kind"])
    if role is not None:
        env["DIRECTORD_ROLE"] = role
    return env
