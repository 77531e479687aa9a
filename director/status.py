"""The status view: a JSON-ready document of services, real servers and health, and its table form.

Pure functions.  `build_status` combines the configuration, the kernel table
(with ActiveConn/InActConn counters) and the health snapshot; `render_status`
prints it for people, with every control character in a name or reason
escaped (`printable`).  Times in the document are seconds.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Mapping
from typing import Any

from .model import (
    FWD_NAMES,
    IP_VS_SVC_F_PERSISTENT,
    IP_VS_SVC_F_SCHED1,
    IP_VS_SVC_F_SCHED2,
    PROTOCOL_NAMES,
    Config,
    DestKey,
    KernelService,
    ServiceKey,
)


def printable(text: object) -> str:
    """``str(text)`` with every non-printable character escaped, for terminals and log lines.

    Control characters (ESC, NUL, newline, DEL...), format characters (such as
    the bidirectional overrides) and separators other than the space become
    Python-style escapes (``\\x1b``, ``\\n``, ``\\u202e``), so a name from a
    configuration file or a peer's packet can neither move the cursor, recolour
    the terminal nor forge a line of its own.  Printable text is returned as it is.
    """
    text = str(text)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def _service_head(key: ServiceKey, kernel: KernelService | None) -> dict[str, Any]:
    head: dict[str, Any] = {
        "key": str(key),
        "family": "inet6" if key.family == socket.AF_INET6 else "inet",
        "protocol": PROTOCOL_NAMES.get(key.protocol) if not key.fwmark else None,
        "address": key.address or None,
        "port": key.port if not key.fwmark else None,
        "fwmark": key.fwmark or None,
        "in_kernel": kernel is not None,
    }
    if kernel is not None:
        a = kernel.attrs
        head["scheduler"] = a.scheduler
        flags = []
        if a.flags & IP_VS_SVC_F_SCHED1:
            flags.append(f"{a.scheduler}-fallback")
        if a.flags & IP_VS_SVC_F_SCHED2:
            flags.append(f"{a.scheduler}-port")
        head["scheduler_flags"] = flags
        head["persistence"] = {"timeout": a.timeout, "netmask": a.netmask} if a.flags & IP_VS_SVC_F_PERSISTENT else None
    return head


def _dest_doc(key: DestKey, kernel: KernelService | None) -> dict[str, Any]:
    kd = kernel.dests.get(key) if kernel is not None else None
    return {
        "address": key.address,
        "port": key.port,
        "weight": kd.attrs.weight if kd else None,
        "kernel_forwarding": FWD_NAMES.get(kd.attrs.fwd_method) if kd else None,
        "active_conns": kd.active_conns if kd else None,
        "inactive_conns": kd.inactive_conns if kd else None,
    }


def build_status(
    config: Config | None,
    table: Mapping[ServiceKey, KernelService],
    health: Mapping[tuple[ServiceKey, DestKey], Any] | None = None,
    draining: Mapping[ServiceKey, set[DestKey]] | None = None,
    now: float = 0.0,
    admin: Mapping[tuple[str, str], Any] | None = None,
) -> dict[str, Any]:
    """The status document.

    Args:
        config: the running configuration, or None (kernel-only view).
        table: the kernel table just dumped.
        health: `checks.engine.HealthStatus` per (service, real server).
        draining: destinations being drained, per service.
        now: current monotonic time in seconds (for "how long in this state").
        admin: the operator's drained or disabled real servers, by (service name,
            ``ADDRESS:PORT``): `director.admin.AdminEntry` (``state``, ``reason``, ``since``).

    Returns:
        ``{"daemon": bool, "config": path|None, "services": [...]}``; each
        service has ``name``, ``key``, scheduler, flags, persistence,
        ``forwarding`` and ``real_servers``; each real server has
        ``role`` (``real``, ``fallback``, ``draining``, ``unmanaged``),
        configured and current weight, health state, seconds in that state,
        last check result, the kernel's ActiveConn/InActConn, and the operator's state
        (``admin``: ``enabled``, ``drain``, ``disabled``; ``admin_reason``, ``admin_since``
        Unix time, for the latter two).
    """
    health = health or {}
    draining = draining or {}
    admin = admin or {}
    services: list[dict[str, Any]] = []
    seen: set[ServiceKey] = set()
    for svc in config.services if config else ():
        seen.add(svc.key)
        kernel = table.get(svc.key)
        doc = _service_head(svc.key, kernel)
        doc.update(name=svc.name, forwarding=svc.forwarding, on_failure=svc.on_failure, managed=True)
        rows = []
        listed: set[DestKey] = set()
        for rs in svc.real_servers:
            listed.add(rs.key)
            row = _dest_doc(rs.key, kernel)
            st = health.get((svc.key, rs.key))
            last = getattr(st, "last_result", None)
            row.update(
                role="real",
                configured_weight=rs.weight,
                forwarding=rs.forwarding,
                check=rs.check.type,
                health=getattr(st, "state", "unknown"),
                in_state_s=round(now - st.since, 1) if st is not None else None,
                last_check=last.reason if last is not None else None,
                last_check_ok=last.ok if last is not None else None,
            )
            entry = admin.get((svc.name, str(rs.key)))
            row["admin"] = entry.state if entry is not None else "enabled"
            if entry is not None:
                row.update(admin_reason=entry.reason, admin_since=entry.since)
            rows.append(row)
        if svc.fallback is not None and svc.fallback.key not in listed:
            listed.add(svc.fallback.key)
            row = _dest_doc(svc.fallback.key, kernel)
            row.update(role="fallback", configured_weight=svc.fallback.weight, forwarding=svc.fallback.forwarding)
            rows.append(row)
        for dkey in sorted((kernel.dests.keys() if kernel else set()) - listed):
            row = _dest_doc(dkey, kernel)
            row["role"] = "draining" if dkey in draining.get(svc.key, set()) else "unmanaged"
            rows.append(row)
        doc["real_servers"] = rows
        services.append(doc)
    for key in sorted(table.keys() - seen):
        kernel = table[key]
        doc = _service_head(key, kernel)
        doc.update(name=str(key), managed=False)
        doc["real_servers"] = [dict(_dest_doc(d, kernel), role="unmanaged") for d in sorted(kernel.dests)]
        services.append(doc)
    return {"daemon": config is not None, "config": config.path if config else None, "services": services}


def _fmt(value: Any) -> str:
    return "-" if value is None else str(value)


def render_status(doc: Mapping[str, Any]) -> str:
    """The status document as a human table (one block per virtual service).

    Every line is passed through `printable`: names, node names and check
    reasons with control characters in them are shown escaped.
    """
    lines = []
    if doc.get("daemon"):
        lines.append(f"directord running, configuration {doc.get('config')}")
        reload = doc.get("last_reload")
        if reload:
            at = reload.get("at")
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) if isinstance(at, (int, float)) else "-"
            if reload.get("ok"):
                lines.append(f"last reload {when}: adopted, {_fmt(reload.get('services'))} virtual services")
            else:
                errors = reload.get("errors")
                lines.append(
                    f"last reload {when}: REFUSED ({_fmt(errors)} problem{'' if errors == 1 else 's'}), "
                    "the running configuration is kept (directord check lists them)"
                )
    else:
        lines.append("no directord daemon answering: kernel IPVS table only")
    for svc in doc["services"]:
        persist = svc.get("persistence")
        bits = [svc["key"], f"scheduler {_fmt(svc.get('scheduler'))}"]
        if svc.get("scheduler_flags"):
            bits.append("flags " + ",".join(svc["scheduler_flags"]))
        if svc.get("forwarding"):
            bits.append(f"forwarding {svc['forwarding']}")
        if persist:
            bits.append(f"persistent {persist['timeout']} s mask {persist['netmask']}")
        if not svc.get("in_kernel", True):
            bits.append("NOT IN KERNEL")
        if not svc.get("managed", True):
            bits.append("(not managed by directord)")
        lines.append("")
        lines.append(f"{svc.get('name')}: " + "  ".join(bits))
        lines.append(
            f"  {'real server':<28} {'role':<9} {'fwd':<4} {'cfg':>5} {'weight':>6} {'health':<8} "
            f"{'for':>8} {'active':>6} {'inact':>6}  last check"
        )
        for rs in svc["real_servers"]:
            addr = f"[{rs['address']}]:{rs['port']}" if ":" in rs["address"] else f"{rs['address']}:{rs['port']}"
            since = rs.get("in_state_s")
            health = rs.get("health")
            if rs.get("admin") in ("drain", "disabled"):
                health = f"{_fmt(health)}/{rs['admin']}"
            lines.append(
                f"  {addr:<28} {rs.get('role', ''):<9} {_fmt(rs.get('forwarding') or rs.get('kernel_forwarding')):<4} "
                f"{_fmt(rs.get('configured_weight')):>5} {_fmt(rs.get('weight')):>6} {_fmt(health):<8} "
                f"{(f'{since:.0f}s' if since is not None else '-'):>8} {_fmt(rs.get('active_conns')):>6} "
                f"{_fmt(rs.get('inactive_conns')):>6}  {_fmt(rs.get('last_check'))}"
            )
    if doc.get("sync_daemons") is not None:
        lines.append("")
        lines.append("connection synchronisation: " + (", ".join(doc["sync_daemons"]) or "no sync daemon running"))
    ha = doc.get("ha")
    if ha:
        lines.append("")
        held = any(g.get("held") or g.get("holder") == ha.get("node") for g in ha.get("groups", []))
        role = "active" if held else "standby"
        if ha.get("state") in ("starting", "stopped"):
            role = ha.get("state")
        lines.append(
            f"HA node {ha.get('node')}: {role} (heartbeat status {ha.get('state')}), "
            f"connectivity {_conn_text(ha.get('connectivity'))}"
        )
        for peer in ha.get("peers", []):
            heard = peer.get("last_heard_s")
            lines.append(
                f"  peer {peer.get('node')}: {peer.get('status')}, last heard "
                f"{f'{heard:.1f} s ago' if heard is not None else 'never'}, "
                f"connectivity {_conn_text(ha.get('peer_connectivity'))}"
            )
        for group in ha.get("groups", []):
            lines.append(
                f"  group {' '.join(group.get('resources', []))} (owner {group.get('owner')}): "
                f"held by {_fmt(group.get('holder'))}"
            )
        for medium in ha.get("media", []):
            lines.append(
                f"  medium {medium.get('medium')}: link {medium.get('link', '-')}, sent {medium.get('sent')}, "
                f"received {medium.get('received')}, send errors {medium.get('send_errors')}"
            )
        rejected = ha.get("rejected_sources", [])
        for source in rejected[:5]:  # the busiest; --json has them all
            reasons = ", ".join(f"{k} {v}" for k, v in source.items() if k not in ("address", "packets", "last_s"))
            lines.append(
                f"  rejected from {source.get('address')}: {source.get('packets')} datagrams ({reasons}), "
                f"last {source.get('last_s')} s ago"
            )
        if len(rejected) > 5:
            lines.append(f"  rejected from {len(rejected) - 5} more source(s): see --json")
        for ping in ha.get("ping_nodes", []):
            lines.append(
                f"  ping node {ping.get('address')}: {'reachable' if ping.get('reachable') else 'UNREACHABLE'} "
                f"({ping.get('answered')}/{ping.get('sent')} answered)"
            )
    bgp = doc.get("bgp")
    if bgp:
        lines.append("")
        lines.extend(render_bgp(bgp))
    recent = doc.get("recent_events")
    if recent:
        lines.append("")
        lines.append("recent events (directord events --recent N for more):")
        for event in recent:
            at = event.get("at")
            when = time.strftime("%H:%M:%S", time.localtime(at)) if isinstance(at, (int, float)) else "-"
            lines.append(f"  {when} {_fmt(event.get('kind'))}: {_fmt(event.get('message'))}")
    return "\n".join(printable(line) for line in lines)


def render_bgp(bgp: Mapping[str, Any]) -> list[str]:
    """The ``bgp`` part of the status document (`ha.bgp.service.BgpService.status`) as lines:
    the speaker, each BGP session, each VIP's announcement and why."""
    drained = ", DRAINED (directord bgp undrain)" if bgp.get("drained") else ""
    lines = [f"BGP: speaker (BIRD) {bgp.get('speaker')}{drained}"]
    for problem in bgp.get("problems", []):
        lines.append(f"  problem: {problem}")
    for session in bgp.get("sessions", []):
        info = f" ({session.get('info')})" if session.get("info") else ""
        lines.append(
            f"  neighbor {session.get('neighbor')} {session.get('address')} AS {session.get('as')}: "
            f"{session.get('state')}{info}"
        )
    words = {"announced": "announced", "graceful_shutdown": "announced with GRACEFUL_SHUTDOWN"}
    for vip in bgp.get("vips", []):
        route = vip.get("route")
        state = words.get(route, "withdrawn") if vip.get("announced") or route == "withdrawn" else "NOT announced"
        lines.append(f"  VIP {vip.get('vip')}: {state} ({vip.get('reason')}; min_healthy {vip.get('min_healthy')})")
    return lines


def _conn_text(conn: dict[str, Any] | None) -> str:
    if not conn:
        return "unknown"
    text = f"link {conn.get('link')}"
    if conn.get("ping_total"):
        text += f", ping nodes {conn.get('ping_up')}/{conn.get('ping_total')}"
    return text
