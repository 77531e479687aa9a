"""heartbeat's resource scripts and ldirectord's fallbackcommand as ``notify:`` hooks.

heartbeat 3.0.6's v1 resource manager (``heartbeat/lib/ResourceManager.in``):

* a resource ``NAME::arg1::arg2`` runs ``SCRIPT arg1 arg2 start`` when the
  group is acquired, ``... stop`` when it is released (``doscript``; the
  arguments are the text after ``NAME::`` split at ``::``, word-split by the
  shell, so empty ones vanish);
* ``SCRIPT`` is the first of ``$HA_RESOURCEDIR/NAME`` (``/etc/ha.d/resource.d``)
  and ``$INITDIR/NAME`` (``/etc/init.d``) that is a regular file and executable
  (``scriptpath``: ``[ -f $dir/$script -a -x $dir/$script ]``); there is no
  other place, and no systemd lookup;
* a group's resources start in line order (``acquireresourcegroup``) and stop
  in reverse order (``giveupresourcegroup``, ``reverseargs``).

directord adds and removes the addresses itself; the other resources become
hooks: on ``ha.acquired`` (published once the group's addresses are up and
announced) the scripts with ``start`` in line order, on ``ha.released``
(once the addresses are gone) with ``stop`` in reverse order.  Hooks matching
one event run one after another in file order, all ``ha.*`` hooks in one lane,
so a ``stop`` never overtakes the ``start`` before it.  A resource with no
script but a systemd unit ``NAME.service`` runs ``systemctl start|stop
NAME.service``; one with neither keeps the init.d path (the configuration
check accepts a program deployed later and checks it again before every run).

ldirectord 4.x (``do_fallback_command``, ``fallback_on``, ``fallback_off``):
``fallbackcommand`` (a virtual's own, else the global one) runs through
Perl's ``system()`` with one string, ``TEXT start|stop VIP:PORT PROTOCOL``:
``start`` when a virtual has no real server up, ``stop`` when the first one
comes back (once per change).  Perl runs a string without shell
metacharacters itself (split at blanks, ``execvp``), anything else through
``/bin/sh -c``.  Each virtual gets its own pair of hooks (``service.down``:
start, ``service.up``: stop) filtered on its service, because the arguments
name the virtual: one unfiltered hook could not pass them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from director.config.builder import HOOK_NAME, MAX_HOOK_ARG, MAX_HOOK_ARGS
from director.convert.heartbeat import ScriptResource
from director.convert.issues import Issues
from director.convert.ldirectord import LdConfig, LdVirtual
from director.convert.services import ServiceOut
from director.model import host_port

__all__ = ["HOST_LOOKUP", "HookOut", "ResourceLookup", "fallback_hooks", "resource_hooks", "service_name"]


@dataclass(frozen=True)
class ResourceLookup:
    """Where a haresources script is looked for (heartbeat's ``scriptpath``, then systemd).

    Attributes:
        resource_d: heartbeat's ``$HA_RESOURCEDIR``, looked at first.
        init_d: ``$INITDIR``, looked at second; a script found nowhere is
            written with this directory.
        unit_dirs: directories holding ``NAME.service`` units, in order.
        systemctl: candidate paths of systemctl; the first that exists is
            used (the first one when none does).
    """

    resource_d: str = "/etc/ha.d/resource.d"
    init_d: str = "/etc/init.d"
    unit_dirs: tuple[str, ...] = ("/etc/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system")
    systemctl: tuple[str, ...] = ("/usr/bin/systemctl", "/bin/systemctl")


#: The host's directories (the defaults of `ResourceLookup`).
HOST_LOOKUP = ResourceLookup()


@dataclass
class HookOut:
    """One converted hook: YAML comments to put above it, and its ``notify.hooks`` item."""

    comments: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)


def _executable(path: str) -> bool:
    """heartbeat's ``[ -f PATH -a -x PATH ]``: a regular file (after symbolic links), executable."""
    return os.path.isfile(path) and os.access(path, os.X_OK)


def _hook_name(*parts: str) -> str:
    """``parts`` joined by ``-`` as a hook name: characters outside ``[A-Za-z0-9._-]`` become
    ``_``, at most 64 characters."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", "-".join(parts))[:64]
    assert HOOK_NAME.fullmatch(name), name
    return name


def _args_problem(args: Sequence[str]) -> str | None:
    """Why ``args`` cannot be a hook's argv (the configuration's bounds), or ``None``."""
    if len(args) > MAX_HOOK_ARGS:
        return f"more than {MAX_HOOK_ARGS} arguments"
    if any(len(arg) > MAX_HOOK_ARG or "\0" in arg for arg in args):
        return f"an argument longer than {MAX_HOOK_ARG} characters or holding a NUL character"
    return None


# --- haresources ---------------------------------------------------------------------------------


def _script_command(resource: ScriptResource, lookup: ResourceLookup) -> tuple[list[str], str]:
    """The command before ``start``/``stop`` and how it was found: ``script``, ``systemd`` or
    ``missing``.  Only ``stat``/``access`` calls."""
    for directory in (lookup.resource_d, lookup.init_d):
        path = os.path.join(directory, resource.name)
        if _executable(path):
            return [path, *resource.args], "script"
    for directory in lookup.unit_dirs:
        if os.path.isfile(os.path.join(directory, resource.name + ".service")):
            systemctl = next((p for p in lookup.systemctl if _executable(p)), lookup.systemctl[0])
            return [systemctl], "systemd"
    return [os.path.join(lookup.init_d, resource.name), *resource.args], "missing"


def resource_hooks(
    scripts: Sequence[ScriptResource], path: str, issues: Issues, lookup: ResourceLookup = HOST_LOOKUP
) -> list[HookOut]:
    """The hooks running haresources' script resources, as heartbeat's ResourceManager runs them.

    Args:
        scripts: the script resources of the converted groups, in file order
            (`director.convert.heartbeat.convert_ha`).
        path: haresources' path, for the comments (``FILE:LINE``).
        issues: haresources' issues: a warning per script found nowhere, per
            resource with arguments run through systemctl, per resource that
            cannot be a hook; one when several groups have scripts (directord
            has no group filter: their hooks run on every group's events); a
            note on what differs from heartbeat.
        lookup: where scripts and units are looked for (``stat`` calls only).

    Returns:
        per group, in file order: its ``ha.acquired`` hooks (``start``) in line
        order, then its ``ha.released`` hooks (``stop``) in reverse order.
    """
    out: list[HookOut] = []
    by_group: dict[int, list[tuple[ScriptResource, list[str], str]]] = {}
    for resource in scripts:
        command, how = _script_command(resource, lookup)
        problem = _args_problem([*command, "start"])
        if problem is not None:
            issues.warn(resource.line, "haresources", f"{resource.text}: {problem}; not converted")
            continue
        where = f"{lookup.resource_d} or {lookup.init_d}"
        if how == "missing":
            issues.warn(
                resource.line,
                "haresources",
                f"{resource.text}: no executable script {resource.name} in {where}, nor a systemd unit "
                f"{resource.name}.service: the hooks run {command[0]} (directord checks the program again "
                "before every run); install it there or edit the hooks",
            )
        elif how == "systemd" and resource.args:
            issues.warn(
                resource.line,
                "haresources",
                f"{resource.text}: no script in {where}; the systemd unit {resource.name}.service is "
                f"started and stopped instead, without the arguments {' '.join(resource.args)}",
            )
        by_group.setdefault(resource.group, []).append((resource, command, how))
    if not by_group:
        return out
    if len(by_group) > 1:
        second = sorted(by_group)[1]
        issues.warn(
            by_group[second][0][0].line,
            "haresources",
            "several resource groups have scripts: directord's hooks have no group filter, so each "
            "group's start hooks run whenever any group is acquired (ha.acquired) and its stop hooks "
            "whenever any group is released (ha.released); split the hooks by hand if that matters",
        )
    first = scripts[0]
    issues.note(
        first.line,
        "haresources",
        "resource scripts become notify hooks: start on ha.acquired (after the group's addresses are "
        "up and announced, where heartbeat ran them in line order with the addresses), stop on "
        "ha.released (after the addresses are gone); heartbeat's status check before start, its stop "
        "retries and its reboot on a failed stop are not carried over; a hook is killed after "
        "notify.timeout (30 s unless set), heartbeat waited without a limit",
    )
    for group, items in by_group.items():
        owner = items[0][0].owner
        addresses = " ".join(items[0][0].addresses)
        for step, event, ordered in (
            ("start", "ha.acquired", items),
            ("stop", "ha.released", list(reversed(items))),
        ):
            for resource, command, how in ordered:
                hook = HookOut()
                hook.comments.append(
                    f"{path}:{resource.line}: {resource.text} in group {group} ({owner}: {addresses}): "
                    f"{step} when a group is acquired"
                    if step == "start"
                    else f"{path}:{resource.line}: {resource.text} in group {group} ({owner}: {addresses}): "
                    f"{step} when a group is released (reverse order)"
                )
                if how == "systemd":
                    hook.comments.append(f"no resource script; the systemd unit {resource.name}.service")
                    argv = [*command, step, resource.name + ".service"]
                elif how == "missing":
                    hook.comments.append("warning: the script was not found when converting")
                    argv = [*command, step]
                else:
                    argv = [*command, step]
                hook.data = {"name": _hook_name(f"g{group}", resource.name), "events": [event], "command": argv}
                out.append(hook)
    return out


# --- fallbackcommand -------------------------------------------------------------------------------

#: A word Perl's ``system()`` passes through without a shell (and a shell would not change),
#: a conservative subset of what has no shell metacharacter.
_PLAIN_WORD = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")


def service_name(out: ServiceOut) -> str:
    """The name directord gives the converted service: its ``name``, else ``PROTO ADDRESS:PORT``
    or ``fwmark N (FAMILY)`` (`director.model.ServiceKey`)."""
    data = out.data
    if "name" in data:
        return str(data["name"])
    if "fwmark" in data:
        return f"fwmark {data['fwmark']} ({data['family']})"
    return f"{data['protocol']} {host_port(data['address'], data['port'])}"


def _ld_target(v: LdVirtual) -> tuple[str, str]:
    """ldirectord's ``$v->{server}:$v->{port}`` and ``$v->{protocol}`` for ``v``."""
    if v.fwmark is not None:
        return ":0", "fwm"  # no server; port "0"
    address = v.address if ":" not in v.address else f"[{v.address}]"
    return f"{address}:{v.port}", v.protocol


def fallback_hooks(cfg: LdConfig, services: Sequence[ServiceOut], path: str, issues: Issues) -> list[HookOut]:
    """The hooks running ldirectord's ``fallbackcommand`` for each virtual service.

    Args:
        cfg: the parsed ldirectord.cf; ``services`` its converted virtuals, in
            the same order (`director.convert.services.translate_services`).
        path: ldirectord.cf's path, for the comments.
        issues: a note per fallbackcommand (how it was carried over), a
            warning when it cannot be a hook.

    Returns:
        per virtual with a fallbackcommand (its own, else the global one), in
        file order: a hook on ``service.down`` (``start``) and one on
        ``service.up`` (``stop``), with ``service`` set to the service's name.
    """
    out: list[HookOut] = []
    global_text = cfg.opt("fallbackcommand")
    global_line = cfg.opt_line("fallbackcommand") if global_text is not None else 0
    used_global = 0
    for v, converted in zip(cfg.virtuals, services, strict=True):
        own = v.opt("fallbackcommand")
        if own is not None:
            text, line, scope = own, v.opt_line("fallbackcommand"), f"the virtual of line {v.line}"
        elif global_text is not None:
            text, line, scope = global_text, global_line, f"global, for the virtual of line {v.line}"
            used_global += 1
        else:
            continue
        name = service_name(converted)
        target, protocol = _ld_target(v)
        words = text.split()
        plain = (
            bool(words)
            and all(_PLAIN_WORD.fullmatch(w) for w in words)
            and words[0].startswith("/")
            and "=" not in words[0]
        )
        pieces = []
        for step, event in (("start", "service.down"), ("stop", "service.up")):
            tail = [step, target, protocol]
            argv = [*words, *tail] if plain else ["/bin/sh", "-c", text + ' "$@"', "sh", *tail]
            pieces.append((step, event, argv))
        problem = _args_problem(pieces[0][2])
        if problem is not None:
            issues.warn(line, "fallbackcommand", f"{problem}; not converted for the virtual of line {v.line}")
            continue
        if own is not None or used_global == 1:
            how = (
                "run as its words (no shell, as ldirectord does for text without shell syntax)"
                if plain
                else "run through /bin/sh -c as ldirectord does (shell syntax, or a program found through "
                "PATH: the hook's PATH is minimal, write the program's absolute path)"
            )
            issues.note(
                line,
                "fallbackcommand",
                f"converted to notify hooks: service.down runs it with start, service.up with stop, with "
                f"ldirectord's arguments (VIP:PORT PROTOCOL); {how}. ldirectord also ran start when it "
                "started, before the first check, and stop on the first real server found up; directord "
                "runs them on changes only (service.up follows a service.down)",
            )
        for step, event, argv in pieces:
            hook = HookOut()
            hook.comments.append(
                f"{path}:{line}: fallbackcommand ({scope}): {step} when {name} "
                + ("has no real server in service" if step == "start" else "has one again")
            )
            if not plain:
                hook.comments.append(
                    'ldirectord runs this text through the shell: so does the hook, its arguments in "$@"'
                )
            hook.data = {
                "name": _hook_name("fallback", step, name),
                "events": [event],
                "command": argv,
                "service": name,
            }
            out.append(hook)
    return out
