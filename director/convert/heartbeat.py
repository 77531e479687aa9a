"""heartbeat's ha.cf and haresources as directord's ``ha:`` section (pure: texts in, a mapping out).

heartbeat facts (heartbeat 3.0.6, ``heartbeat/config.c``: ``parse_config``,
``Directives[]``, ``init_config``; ``lib/plugins/HBcomm/*.c``; the
``haresources`` format of the v1 resource manager):

* ha.cf: one directive per line, its name then its value, ``#`` starts a
  comment anywhere; an unknown directive stops heartbeat ("Illegal
  directive"), so it is an error here too;
* times are seconds, or ``ms``/``us`` suffixed; defaults keepalive 1 s,
  deadtime 30 s, warntime deadtime / 2, initdead from deadtime, auto_failback
  ``legacy``; ``nice_failback on`` is the old spelling of ``auto_failback off``;
* ``node`` takes one or more names; media lines (``bcast``, ``mcast``,
  ``ucast``) are written into ``media`` as they are (the ``ha:`` parser reads
  heartbeat's syntax); ``ping`` lists ping nodes (acted upon by heartbeat's
  ipfail client, which directord's node replaces);
* haresources: ``NODE RESOURCE...`` per line, ``\\`` continues a line; a
  resource is ``IPaddr::IP/PREFIX/IF[/BROADCAST]``, ``IPaddr2::...``,
  ``IPv6addr::IP/PREFIX/IF`` or a bare ``IP[/PREFIX[/IF]]`` (IPaddr);
  other resources (``httpd``, ``Filesystem::/dev/sda1::/data``...) are
  scripts heartbeat's ResourceManager runs with ``start`` when it acquires
  the group (in line order) and ``stop`` when it releases it (in reverse
  order); they are returned as `ScriptResource` and become notify hooks
  (`director.convert.notify`); ``ldirectord`` itself is replaced by directord.

The converted section uses ``compat: heartbeat``, so that heartbeat's
defaults and rules apply and a directord node can pair with a heartbeat node
during the migration.  The authkeys file is referenced, not copied.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from director.config import quote
from director.convert.issues import Issues
from ha.config import FALSE_WORDS as _FALSE
from ha.config import TRUE_WORDS as _TRUE
from ha.config import heartbeat_time_msec

__all__ = ["ScriptResource", "convert_ha"]


#: Directives heartbeat accepts that the ha section has no counterpart for, with what they do.
_UNSUPPORTED = {
    "hopfudge": "hop count fudge for serial rings",
    "watchdog": "the kernel watchdog device",
    "baud": "serial links",
    "serial": "serial links (directord talks UDP only)",
    "mcast6": "IPv6 multicast media",
    "hbaping": "HBA ping media",
    "ping_group": "ping node groups",
    "deadping": "the ping node dead time (directord counts missed probes: ping_fall)",
    "stonith": "STONITH devices",
    "stonith_host": "STONITH devices",
    "rtprio": "real-time priority",
    "realtime": "real-time scheduling",
    "hbgenmethod": "generation number method (directord keeps its own counter in state_dir)",
    "msgfmt": "message format (directord speaks the classic format)",
    "compression": "message compression",
    "compression_threshold": "message compression",
    "traditional_compression": "message compression",
    "autojoin": "dynamic cluster membership",
    "uuidfrom": "node uuid source (directord keeps its uuid in state_dir)",
    "max_rexmit_delay": "retransmission delay",
    "memreserve": "memory reservation",
    "quorum_server": "quorum server",
    "cluster": "cluster name",
    "env": "environment of resource scripts",
    "normalpoll": "poll(2) choice",
    "use_apphbd": "apphbd registration",
    "record_config_changes": "CRM settings",
    "record_pengine_inputs": "CRM settings",
    "enable_config_writes": "CRM settings",
}
#: Directives about heartbeat's own logging and process management: directord logs to stderr/journal.
_LOGGING = (
    "logfile",
    "debugfile",
    "logfacility",
    "use_logd",
    "conn_logd_time",
    "debug",
    "log_badpack",
    "coredumps",
    "coreroot",
    "apiauth",
)


def _seconds(text: str) -> float | int | None:
    """heartbeat's time syntax in seconds (``cl_get_msec``, `heartbeat_time_msec`), rounded to the
    millisecond; ``None`` if invalid."""
    try:
        msec = heartbeat_time_msec(text)
    except ValueError:
        return None
    return msec // 1000 if msec % 1000 == 0 else msec / 1000


def _clean(text: str) -> list[tuple[int, str]]:
    """Non-blank lines of ``text`` with comments removed, as ``(line number, text)``."""
    out = []
    for number, raw in enumerate(text.splitlines(), 1):
        body = raw.split("#", 1)[0].strip()
        if body:
            out.append((number, body))
    return out


def _parse_ha_cf(text: str, issues: Issues) -> dict[str, Any]:
    ha: dict[str, Any] = {}
    nodes: list[str] = []
    media: list[str] = []
    pings: list[str] = []
    timers: dict[str, float] = {}
    for line, body in _clean(text):
        directive, _, value = body.partition(" ")
        if "\t" in directive:
            directive, _, rest = directive.partition("\t")
            value = rest + " " + value
        value = value.strip()
        if directive == "udp":  # heartbeat's old alias
            directive = "bcast"
        if directive == "node":
            for name in value.split():
                if name.lower() not in nodes:
                    nodes.append(name.lower())
        elif directive in ("bcast", "mcast", "ucast"):
            if not value:
                issues.error(line, directive, "no interface given")
                continue
            media.append(f"{directive} {' '.join(value.split())}")
        elif directive in ("keepalive", "warntime", "deadtime", "initdead"):
            seconds = _seconds(value)
            if seconds is None:
                issues.error(line, directive, f"not a time: {quote(value)} (seconds, or a number with ms or us)")
                continue
            timers[directive] = seconds
        elif directive == "udpport":
            if not value.isdigit() or not 1 <= int(value) <= 65535:
                issues.error(line, directive, f"not a port number: {quote(value)}")
                continue
            ha["udpport"] = int(value)
        elif directive == "auto_failback":
            word = value.lower()
            if word == "legacy":
                ha["auto_failback"] = "legacy"
            elif word in _TRUE:
                ha["auto_failback"] = True
            elif word in _FALSE:
                ha["auto_failback"] = False
            else:
                issues.error(line, directive, f"expected on, off or legacy, got {quote(value)}")
        elif directive == "nice_failback":
            word = value.lower()
            if word not in _TRUE + _FALSE:
                issues.error(line, directive, f"expected on or off, got {quote(value)}")
            elif "auto_failback" not in ha:
                ha["auto_failback"] = False if word in _TRUE else "legacy"
                issues.note(
                    line,
                    directive,
                    f"the old spelling of auto_failback {'off' if word in _TRUE else 'legacy'}; converted so",
                )
        elif directive == "ping":
            for address in value.split():
                try:
                    pings.append(str(ipaddress.ip_address(address)))
                except ValueError:
                    issues.error(
                        line,
                        directive,
                        f"ping node {quote(address)} is not an IP address "
                        "(directord takes addresses, so that loading does no DNS lookup)",
                    )
        elif directive == "respawn":
            if value.split()[-1:] and value.split()[-1].endswith("/ipfail"):
                issues.note(line, directive, "ipfail: directord's node acts on the ping nodes itself, as ipfail does")
            else:
                issues.warn(line, directive, f"directord does not start other programs ({quote(value)}); not converted")
        elif directive in ("crm", "pacemaker"):
            if value.lower() in _TRUE + ("respawn",):
                issues.warn(
                    line,
                    directive,
                    "resources managed by a CRM (pacemaker) are not converted: directord "
                    "implements heartbeat's v1 resource manager (haresources)",
                )
            else:
                issues.note(line, directive, "v1 resource management (haresources), as directord does")
        elif directive in _LOGGING:
            issues.note(line, directive, "directord logs to stderr (the journal under systemd); not converted")
        elif directive in _UNSUPPORTED:
            issues.warn(line, directive, f"not supported by directord: {_UNSUPPORTED[directive]}; not converted")
        else:
            issues.error(line, directive, 'unknown directive (heartbeat refuses it: "Illegal directive")')
    if not nodes:
        issues.error(0, "node", "no node directive: the ha section needs every node of the cluster")
    if not media:
        issues.error(0, "media", "no bcast, mcast or ucast directive: the ha section needs a medium")
    ha["nodes"] = nodes
    ha["media"] = media
    for key in ("keepalive", "warntime", "deadtime", "initdead"):
        if key in timers:
            ha[key] = timers[key]
    if pings:
        ha["ping_nodes"] = pings
    return ha


@dataclass(frozen=True)
class ScriptResource:
    """A haresources resource that is not an address: a script heartbeat runs.

    Attributes:
        line: its logical line in haresources (the first physical line).
        group: 1-based index of its group among the converted ``ha.resources`` groups.
        owner: the group's preferred node (lower case, as heartbeat's ResourceManager).
        addresses: the group's addresses (``ADDRESS/PREFIX/IF``), for comments.
        text: the resource as written (``NAME::arg1::arg2``).
        name: the script's name (``NAME``).
        args: its arguments (``arg1``, ``arg2``): the text after ``NAME::`` split
            at ``::``, empty ones left out (ResourceManager's ``resource2arg``
            and the shell's word splitting).
    """

    line: int
    group: int
    owner: str
    addresses: tuple[str, ...]
    text: str
    name: str
    args: tuple[str, ...]


#: heartbeat's ``isip`` test (ResourceManager): a resource spelled like ``[0-9]*.[0-9]*.[0-9]*.[0-9]*``
#: (shell glob) is an IPaddr resource.
_ISIP = re.compile(r"[0-9].*\..*\..*\..*", re.DOTALL)
#: Longest script name (a file name) and argument taken from haresources.
_NAME_MAX = 255


def _script_problem(name: str) -> str | None:
    """Why ``name`` cannot be a resource script's file name here, or ``None``."""
    if not name or name in (".", "..") or "/" in name or ":" in name:
        return "not a script file name (no '/' or ':'; not '.' or '..')"
    if len(name.encode()) > _NAME_MAX or not name.isprintable():
        return f"not a script file name (printable, at most {_NAME_MAX} bytes)"
    return None


def _parse_haresources(text: str, issues: Issues) -> tuple[list[dict[str, Any]], list[ScriptResource]]:
    """The groups of haresources (``{"owner", "addresses"}``, in file order) and the script
    resources of the groups kept (those with an address), in file order."""
    # Join continuation lines first, keeping the number of the first physical line.
    logical: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        body = raw.split("#", 1)[0].rstrip()
        if pending is not None:
            start, acc = pending
            body = acc + " " + body.strip()
            number = start
        if body.endswith("\\"):
            pending = (number, body[:-1])
            continue
        pending = None
        if body.strip():
            logical.append((number, body.strip()))
    if pending is not None and pending[1].strip():
        logical.append(pending)
    groups: list[dict[str, Any]] = []
    scripts: list[ScriptResource] = []
    for line, body in logical:
        owner, *resources = body.split()
        addresses: list[str] = []
        found: list[tuple[str, str, tuple[str, ...]]] = []
        for resource in resources:
            agent, sep, args = resource.partition("::")
            try:
                ipaddress.ip_address(resource.split("/")[0])
                agent, sep, args = "IPaddr", "", resource  # a bare address is an IPaddr resource
            except ValueError:
                if not sep:
                    if _ISIP.fullmatch(resource):
                        agent, args = "IPaddr", resource
                    else:
                        agent = resource
            if agent not in ("IPaddr", "IPaddr2", "IPv6addr"):
                if agent == "ldirectord":
                    issues.note(
                        line,
                        "haresources",
                        f"{resource}: directord itself replaces ldirectord "
                        "(its virtual services are the ones converted above)",
                    )
                elif agent == "LVSSyncDaemonSwap":
                    issues.warn(
                        line,
                        "haresources",
                        f"{resource}: the IPVS connection sync daemon is not managed by directord; not converted",
                    )
                else:
                    problem = _script_problem(agent)
                    if problem is not None:
                        issues.warn(line, "haresources", f"{resource}: {problem}; not converted")
                    else:
                        found.append((resource, agent, tuple(a for a in args.split("::") if a) if sep else ()))
                continue
            parts = args.split("::")[0].split("/") if agent != "IPv6addr" else args.split("/")
            try:
                address = str(ipaddress.ip_address(parts[0]))
            except ValueError:
                if not sep:
                    issues.warn(
                        line,
                        "haresources",
                        f"{resource}: heartbeat takes it for an address resource, but it holds no IP "
                        "address; not converted",
                    )
                else:
                    issues.error(line, "haresources", f"{resource}: {quote(parts[0])} is not an IP address")
                continue
            if len(parts) < 3 or not parts[1] or not parts[2]:
                issues.error(
                    line,
                    "haresources",
                    f"{resource}: no prefix length and interface: heartbeat guesses them from the routing "
                    f"table, directord needs them written, e.g. {address}/24/eth0",
                )
                continue
            if not parts[1].isdigit():
                issues.error(line, "haresources", f"{resource}: prefix length {quote(parts[1])} is not a number")
                continue
            interface, colon, label = parts[2].partition(":")
            dropped = []
            if colon:
                dropped.append(f"the interface label {quote(label)} (the address is added to {interface} unlabelled)")
            if len(parts) > 3:
                dropped.append(
                    f"the broadcast address {quote('/'.join(parts[3:]))} (the kernel's default broadcast is used)"
                )
            extra = args.split("::")[1:] if agent != "IPv6addr" else []
            if extra:
                dropped.append(f"the further arguments {quote('::'.join(extra))}")
            if dropped:
                issues.warn(
                    line,
                    "haresources",
                    f"{resource}: the address {address}/{parts[1]}/{interface} is converted (directord adds it "
                    f"itself, heartbeat's {agent} script does not run); not carried over: " + "; ".join(dropped),
                )
            addresses.append(f"{address}/{parts[1]}/{interface}")
        if addresses:
            groups.append({"owner": owner.lower(), "addresses": addresses})
            for resource, name, script_args in found:
                scripts.append(
                    ScriptResource(line, len(groups), owner.lower(), tuple(addresses), resource, name, script_args)
                )
        elif found:
            issues.warn(
                line,
                "haresources",
                f"no address in the group of {owner}: directord has no group to acquire, so "
                f"{', '.join(r for r, _, _ in found)} {'is' if len(found) == 1 else 'are'} not converted",
            )
        else:
            issues.warn(line, "haresources", f"no address in the group of {owner}: nothing to convert")
    return groups, scripts


def convert_ha(
    ha_cf: str,
    ha_cf_issues: Issues,
    *,
    haresources: str | None = None,
    haresources_issues: Issues | None = None,
    authkeys: str,
    node: str | None = None,
) -> tuple[dict[str, Any], list[ScriptResource]]:
    """The ``ha:`` mapping for heartbeat's ha.cf (and haresources), and haresources' script
    resources (`ScriptResource`: what is not an address, for `director.convert.notify`).

    Args:
        ha_cf: ha.cf's text; its problems go to ``ha_cf_issues``.
        haresources: haresources' text, or ``None`` (no resources); its
            problems go to ``haresources_issues``.
        authkeys: path of heartbeat's authkeys file, written as given.
        node: our node name; ``None`` leaves it out (the host name is used).

    Returns:
        the mapping, in the key order of ``etc/directord-ha.yaml``; times in
        seconds; ``compat: heartbeat``; and the script resources of the groups
        converted, in file order (empty without haresources).
    """
    parsed = _parse_ha_cf(ha_cf, ha_cf_issues)
    ha: dict[str, Any] = {}
    if node is not None:
        ha["node"] = node.lower()
    ha["nodes"] = parsed.pop("nodes")
    ha["media"] = parsed.pop("media")
    if "udpport" in parsed:
        ha["udpport"] = parsed.pop("udpport")
    ha["authkeys"] = authkeys
    for key in ("keepalive", "warntime", "deadtime", "initdead", "auto_failback", "ping_nodes"):
        if key in parsed:
            ha[key] = parsed.pop(key)
    scripts: list[ScriptResource] = []
    if haresources is not None:
        groups, scripts = _parse_haresources(haresources, haresources_issues or ha_cf_issues)
        if groups:
            ha["resources"] = groups
    ha["compat"] = "heartbeat"
    return ha, scripts
