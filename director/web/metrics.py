"""The Prometheus metrics of one scrape, built from the daemon's state (`Scrape`). Pure.

Names follow Prometheus' conventions (``directord_<what>_<unit>``, counters ending in
``_total``, times in ``_seconds``). The IPVS metrics reuse node_exporter's IPVS collector's
label names (``local_address``, ``local_port``, ``remote_address``, ``remote_port``,
``proto``, ``local_mark``), so its dashboards' queries carry over with the metric prefix
changed; every per-service and per-real-server series also carries ``service``, the virtual
service's name in the configuration. ``proto`` is ``TCP``, ``UDP`` or ``SCTP``, or ``FWM``
for a firewall-mark service (then ``local_address`` is empty, ``local_port`` ``0`` and
``local_mark`` the mark in decimal; otherwise ``local_mark`` is empty), as node_exporter
reads them from ``/proc/net/ip_vs``.

The kernel's counters (``IPVSStats``: ``struct ip_vs_kstats``) are counters since the entry was
created in the kernel: a service or destination deleted and added again starts from 0, which
Prometheus' ``rate()`` treats as a counter reset. The rates (``*_per_second``) are the kernel
estimator's own (2-second smoothing), exported as gauges.

`families` returns prometheus-client metric families (``prometheus_client.core``), which
`prometheus_client.exposition.generate_latest` writes in the text format; the list of every
metric, with its type and labels, is in the README (a test checks the table against `families`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from director.model import (
    PROTOCOL_NAMES,
    Config,
    DestKey,
    IPVSStats,
    KernelService,
    ServiceKey,
    host_port,
)
from director.planner import ADMIN_STATES
from director.status import printable
from director.web.tally import EventTally

__all__ = ["CHECK_OUTCOMES", "HA_REJECT_REASONS", "IPVS_OPERATIONS", "DaemonFacts", "Scrape", "families"]

#: Label names of a virtual service's series (node_exporter's, then ours).
SERVICE_LABELS = ("local_address", "local_port", "proto", "local_mark", "service")
#: Label names of a real server's series.
BACKEND_LABELS = ("local_address", "local_port", "remote_address", "remote_port", "proto", "local_mark", "service")

#: The outcomes of a check (``directord_check_results_total{outcome}``).
CHECK_OUTCOMES = ("ok", "failed", "timeout")
#: Heartbeat node counters (`ha.node.COUNTERS`) that count datagrams dropped before they
#: reached a peer's state: ``directord_ha_packets_rejected_total{reason}``.
HA_REJECT_REASONS = (
    "malformed",
    "bad_auth",
    "unknown_auth_index",
    "unknown_node",
    "own",
    "name_conflict",
    "replay",
    "duplicate",
    "old",
    "not_for_us",
    "from_dead",
    "ignored",
)
#: Other heartbeat node counters, each its own ``directord_ha_<name>_total``.
HA_COUNTERS = (
    "lost_packets",
    "retransmitted",
    "rexmit_requests_sent",
    "rexmit_requests_received",
    "late_heartbeats",
    "stalls",
    "partitions_healed",
)
#: The IPVS operations (`director.planner.Op` kinds): the ``op`` label of the reconciler's counters.
IPVS_OPERATIONS = ("add_service", "set_service", "del_service", "add_dest", "set_dest", "del_dest")
#: The states a real server's health can be in (`checks.engine.HealthStatus.state`).
HEALTH_STATES = ("unknown", "up", "down")
#: The roles a real server row can have (`director.status.build_status`).
ROLES = ("real", "fallback", "draining", "unmanaged")

# (metric suffix, IPVSStats field, help) of the kernel's counters and rates
_IPVS_COUNTERS = (
    ("connections", "conns", "connections scheduled"),
    ("incoming_packets", "inpkts", "packets from clients"),
    ("outgoing_packets", "outpkts", "packets to clients (NAT; 0 with DR and TUN, where replies bypass the director)"),
    ("incoming_bytes", "inbytes", "bytes from clients"),
    ("outgoing_bytes", "outbytes", "bytes to clients (NAT; 0 with DR and TUN)"),
)
_IPVS_RATES = (
    ("connections", "cps"),
    ("incoming_packets", "inpps"),
    ("outgoing_packets", "outpps"),
    ("incoming_bytes", "inbps"),
    ("outgoing_bytes", "outbps"),
)


@dataclass(frozen=True)
class DaemonFacts:
    """The daemon's own numbers at scrape time.

    Attributes:
        version: directord's version.
        started_at: Unix time (seconds) the daemon started.
        ops_applied: IPVS operations the kernel accepted since start.
        kernel_errors: IPVS commands and dumps the kernel refused since start.
        table_readable: whether the scrape's dump of the IPVS table worked.
        checker_restarts: times the checker process was restarted.
        checker_running: whether a checker process is running.
    """

    version: str
    started_at: float
    ops_applied: int = 0
    kernel_errors: int = 0
    table_readable: bool = True
    checker_restarts: int = 0
    checker_running: bool = False


@dataclass(frozen=True)
class Scrape:
    """Everything one scrape reads.

    Attributes:
        config: the running configuration (None: kernel view only).
        table: the kernel's IPVS table, dumped with its traffic counters (``stats``).
        health: `checks.engine.HealthStatus` per (service key, real server key).
        draining: real servers being drained, per service key.
        ha: the HA part of the status document (`ha.service.HAService.snapshot`), or None.
        bgp: the BGP part of the status document (`ha.bgp.service.BgpService.status`), or None.
        tally: counts of the events published since start.
        daemon: the daemon's own numbers.
        check_buckets: upper bounds (seconds) of the check duration histogram's buckets
            (`checks.engine.CHECK_DURATION_BUCKETS`).
        admin: the operator's drained or disabled real servers, by (service name,
            ``ADDRESS:PORT``) (`director.admin.AdminEntry`).
    """

    config: Config | None
    table: Mapping[ServiceKey, KernelService]
    health: Mapping[tuple[ServiceKey, DestKey], Any]
    draining: Mapping[ServiceKey, set[DestKey]]
    ha: Mapping[str, Any] | None
    tally: EventTally
    daemon: DaemonFacts
    check_buckets: tuple[float, ...] = field(default=())
    admin: Mapping[tuple[str, str], Any] = field(default_factory=dict)
    bgp: Mapping[str, Any] | None = None


def _service_labels(key: ServiceKey, name: str) -> list[str]:
    # the name escaped (`printable`): a label value is shown raw by curl in a terminal and by
    # tools that read the text, so an ESC, a NUL or a bidi override in it must not reach them
    if key.fwmark:
        return ["", "0", "FWM", str(key.fwmark), printable(name)]
    proto = PROTOCOL_NAMES.get(key.protocol, str(key.protocol)).upper()
    return [key.address, str(key.port), proto, "", printable(name)]


def _backend_labels(service: list[str], dest: DestKey) -> list[str]:
    local_address, local_port, proto, mark, name = service
    return [local_address, local_port, dest.address, str(dest.port), proto, mark, name]


_F = TypeVar("_F", GaugeMetricFamily, CounterMetricFamily, HistogramMetricFamily)


class _Families:
    """The metric families of one scrape, created on first use, in order of creation."""

    def __init__(self) -> None:
        self._by_name: dict[str, Metric] = {}

    def _family(self, kind: type[_F], name: str, doc: str, labels: Iterable[str]) -> _F:
        family = self._by_name.get(name)
        if family is None:
            family = self._by_name[name] = kind(name, doc, labels=list(labels))
        assert isinstance(family, kind)
        return family

    def gauge(self, name: str, doc: str, labels: Iterable[str] = ()) -> GaugeMetricFamily:
        return self._family(GaugeMetricFamily, name, doc, labels)

    def counter(self, name: str, doc: str, labels: Iterable[str] = ()) -> CounterMetricFamily:
        """``name`` without ``_total`` (prometheus-client adds it)."""
        return self._family(CounterMetricFamily, name, doc, labels)

    def histogram(self, name: str, doc: str, labels: Iterable[str] = ()) -> HistogramMetricFamily:
        return self._family(HistogramMetricFamily, name, doc, labels)

    def all(self) -> list[Metric]:
        return list(self._by_name.values())


def families(scrape: Scrape) -> list[Metric]:
    """The metric families of ``scrape`` (listed in the README).

    A family without samples is still listed (``# HELP``/``# TYPE`` only), so a dashboard
    sees every name from the first scrape.
    """
    out = _Families()
    _daemon(out, scrape)
    _services(out, scrape)
    _reconciler(out, scrape)
    _checker(out, scrape)
    _ha(out, scrape)
    _bgp(out, scrape)
    return out.all()


def _daemon(out: _Families, s: Scrape) -> None:
    d, t = s.daemon, s.tally
    out.gauge("directord_build_info", "directord's version (the value is 1)", ["version"]).add_metric([d.version], 1)
    out.gauge("directord_start_time_seconds", "Unix time the daemon started").add_metric([], d.started_at)
    reloads = out.counter("directord_config_reloads", "configuration loads after start, by result", ["result"])
    for result in ("adopted", "refused"):
        reloads.add_metric([result], t.reloads[result])
    ok = out.gauge("directord_config_last_reload_successful", "1 when the last reload was adopted, 0 when refused")
    when = out.gauge("directord_config_last_reload_timestamp_seconds", "Unix time of the last reload")
    if t.last_reload_ok is not None and t.last_reload_at is not None:
        ok.add_metric([], 1 if t.last_reload_ok else 0)
        when.add_metric([], t.last_reload_at)
    hooks = out.counter(
        "directord_hook_runs", "notify hook runs, by hook and result (ok, failed, timeout, not_run)", ["hook", "result"]
    )
    for (hook, result), n in sorted(t.hook_runs.items()):
        hooks.add_metric([hook, result], n)
    events = out.counter("directord_events", "events published on the daemon's event stream, by kind", ["kind"])
    for kind, n in sorted(t.events.items()):
        events.add_metric([kind], n)


def _services(out: _Families, s: Scrape) -> None:
    in_kernel = out.gauge(
        "directord_virtual_service_in_kernel",
        "1 when the configured virtual service is in the kernel's IPVS table",
        SERVICE_LABELS,
    )
    counts = out.gauge(
        "directord_virtual_service_real_servers",
        "configured real servers of the virtual service, by health",
        [*SERVICE_LABELS, "health"],
    )
    done: set[ServiceKey] = set()
    for svc in s.config.services if s.config is not None else ():
        labels = _service_labels(svc.key, svc.name)
        kernel = s.table.get(svc.key)
        done.add(svc.key)
        in_kernel.add_metric(labels, 1 if kernel is not None else 0)
        by_state = dict.fromkeys(HEALTH_STATES, 0)
        listed: set[DestKey] = set()
        for rs in svc.real_servers:
            listed.add(rs.key)
            status = s.health.get((svc.key, rs.key))
            state = getattr(status, "state", "unknown")
            by_state[state if state in by_state else "unknown"] += 1
            _real_server(out, s, svc.name, labels, rs.key, kernel, "real", rs.weight, status)
        for state, n in by_state.items():
            counts.add_metric([*labels, state], n)
        if svc.fallback is not None and svc.fallback.key not in listed:
            listed.add(svc.fallback.key)
            _real_server(out, s, svc.name, labels, svc.fallback.key, kernel, "fallback", svc.fallback.weight, None)
        for dkey in sorted(kernel.dests if kernel is not None else ()):
            if dkey not in listed:
                role = "draining" if dkey in s.draining.get(svc.key, set()) else "unmanaged"
                _real_server(out, s, svc.name, labels, dkey, kernel, role, None, None)
        _service_stats(out, labels, kernel)
    for key in sorted(s.table.keys() - done):
        kernel = s.table[key]
        labels = _service_labels(key, "")
        for dkey in sorted(kernel.dests):
            _real_server(out, s, "", labels, dkey, kernel, "unmanaged", None, None)
        _service_stats(out, labels, kernel)


def _service_stats(out: _Families, labels: list[str], kernel: KernelService | None) -> None:
    stats = kernel.stats if kernel is not None else None
    for suffix, attr, doc in _IPVS_COUNTERS:
        family = out.counter(f"directord_ipvs_{suffix}", f"IPVS: {doc} by the virtual service", SERVICE_LABELS)
        if stats is not None:
            family.add_metric(labels, getattr(stats, attr))
    for suffix, attr in _IPVS_RATES:
        rate = out.gauge(
            f"directord_ipvs_{suffix}_per_second",
            f"IPVS: the kernel's current estimate of {suffix.replace('_', ' ')} per second of the virtual service",
            SERVICE_LABELS,
        )
        if stats is not None:
            rate.add_metric(labels, getattr(stats, attr))


def _real_server(
    out: _Families,
    s: Scrape,
    name: str,
    service_labels: list[str],
    dkey: DestKey,
    kernel: KernelService | None,
    role: str,
    configured_weight: int | None,
    status: Any,
) -> None:
    labels = _backend_labels(service_labels, dkey)
    kd = kernel.dests.get(dkey) if kernel is not None else None
    roles = out.gauge(
        "directord_real_server_role", "the real server's role (the value is 1)", [*BACKEND_LABELS, "role"]
    )
    roles.add_metric([*labels, role], 1)
    weight = out.gauge(
        "directord_real_server_configured_weight", "the weight the configuration gives the real server", BACKEND_LABELS
    )
    if configured_weight is not None:
        weight.add_metric(labels, configured_weight)
    active = out.gauge("directord_ipvs_backend_connections_active", "IPVS: active connections", BACKEND_LABELS)
    inactive = out.gauge("directord_ipvs_backend_connections_inactive", "IPVS: inactive connections", BACKEND_LABELS)
    current = out.gauge("directord_ipvs_backend_weight", "IPVS: the weight in the kernel", BACKEND_LABELS)
    if kd is not None:
        active.add_metric(labels, kd.active_conns)
        inactive.add_metric(labels, kd.inactive_conns)
        current.add_metric(labels, kd.attrs.weight)
    stats: IPVSStats | None = kd.stats if kd is not None else None
    for suffix, attr, doc in _IPVS_COUNTERS:
        family = out.counter(f"directord_ipvs_backend_{suffix}", f"IPVS: {doc} to the real server", BACKEND_LABELS)
        if stats is not None:
            family.add_metric(labels, getattr(stats, attr))
    if role != "real":
        return
    health = out.gauge(
        "directord_real_server_health",
        "the real server's health (1 for its state, 0 for the others)",
        [*BACKEND_LABELS, "state"],
    )
    state = getattr(status, "state", "unknown")
    for candidate in HEALTH_STATES:
        health.add_metric([*labels, candidate], 1 if candidate == state else 0)
    admin = out.gauge(
        "directord_real_server_admin_state",
        "the operator's state of the real server (directord rs; 1 for its state, 0 for the others)",
        [*BACKEND_LABELS, "state"],
    )
    entry = s.admin.get((name, host_port(dkey.address, dkey.port)))
    operator = entry.state if entry is not None else "enabled"
    for candidate in ADMIN_STATES:
        admin.add_metric([*labels, candidate], 1 if candidate == operator else 0)
    transitions = out.counter(
        "directord_real_server_transitions",
        "health changes of the real server since the daemon started, by the state entered",
        [*BACKEND_LABELS, "state"],
    )
    rs_text = host_port(dkey.address, dkey.port)
    for candidate in ("up", "down"):
        transitions.add_metric([*labels, candidate], s.tally.transitions[(name, rs_text, candidate)])
    results = out.counter(
        "directord_check_results",
        "health checks of the real server completed since it was added, by outcome",
        [*BACKEND_LABELS, "outcome"],
    )
    durations = out.histogram(
        "directord_check_duration_seconds", "how long the real server's health checks took", BACKEND_LABELS
    )
    if status is None or (status.checks == 0 and getattr(status, "last_result", None) is not None):
        # no status, or the director's fallback built from transitions while the checker does
        # not answer: its counters are zeros, which Prometheus would read as a reset
        return
    passed = getattr(status, "passed_checks", None)
    if passed is not None:
        results.add_metric([*labels, "ok"], passed)
        results.add_metric([*labels, "failed"], status.failed_checks)
        results.add_metric([*labels, "timeout"], status.timed_out_checks)
    buckets = getattr(status, "duration_buckets", ())
    if buckets and len(buckets) == len(s.check_buckets):
        pairs = [(_bound(b), n) for b, n in zip(s.check_buckets, buckets)]
        pairs.append(("+Inf", status.checks))
        durations.add_metric(labels, pairs, sum_value=status.duration_sum)


def _bound(value: float) -> str:
    """A bucket's ``le`` label as prometheus-client writes it (``0.005``, ``1.0``)."""
    return repr(float(value))


def _reconciler(out: _Families, s: Scrape) -> None:
    d, t = s.daemon, s.tally
    ops = out.counter("directord_ipvs_operations", "IPVS operations the kernel accepted, by operation", ["op"])
    failed = out.counter(
        "directord_ipvs_operation_failures", "IPVS operations the kernel refused, by operation", ["op"]
    )
    for op in IPVS_OPERATIONS:
        ops.add_metric([op], t.ipvs_ops[op])
        failed.add_metric([op], t.ipvs_failures[op])
    drift = out.counter(
        "directord_ipvs_drift_repairs",
        "IPVS operations that put back the virtual service's kernel entry after a change made outside "
        "directord (ipvsadm, another tool), by operation",
        [*SERVICE_LABELS, "op"],
    )
    # every configured service has its series from the start, at 0: a series that appears at its
    # first repair would be missed by increase() (one sample), and by an alert on it
    for svc in s.config.services if s.config is not None else ():
        labels, name = _service_labels(svc.key, svc.name), printable(svc.name)
        for op in IPVS_OPERATIONS:
            drift.add_metric([*labels, op], t.ipvs_drift_repairs[(name, op)])
    out.counter("directord_ipvs_kernel_errors", "IPVS commands and dumps the kernel refused").add_metric(
        [], d.kernel_errors
    )
    out.gauge("directord_ipvs_table_readable", "1 when the IPVS table could be read at this scrape").add_metric(
        [], 1 if d.table_readable else 0
    )


def _checker(out: _Families, s: Scrape) -> None:
    d, t = s.daemon, s.tally
    out.counter("directord_checker_restarts", "times the checker process was restarted").add_metric(
        [], d.checker_restarts
    )
    out.gauge("directord_checker_running", "1 when the checker process runs").add_metric(
        [], 1 if d.checker_running else 0
    )
    out.gauge(
        "directord_checker_behind", "1 while the checker holds checks back because its event loop runs late"
    ).add_metric([], 1 if t.checker_behind else 0)
    limit = out.gauge("directord_checker_in_flight_limit", "the cap on checks in flight while the checker is behind")
    if t.checker_limit is not None:
        limit.add_metric([], t.checker_limit)
    out.gauge(
        "directord_checker_loop_late_seconds", "how late the checker's event loop woke at its last load report"
    ).add_metric([], t.checker_late)


def _ha(out: _Families, s: Scrape) -> None:
    ha, t = s.ha, s.tally
    if ha is None:
        return
    node = str(ha.get("node", ""))
    state = str(ha.get("state", "unknown"))
    out.gauge("directord_ha_state", "the HA node's state (1 for the current one)", ["node", "state"]).add_metric(
        [node, state], 1
    )
    held = out.gauge(
        "directord_ha_group_held", "1 when this director holds the resource group (its VIPs)", ["group", "owner"]
    )
    for group in ha.get("groups", ()):
        held.add_metric(
            [" ".join(group.get("resources", ())), str(group.get("owner", ""))], 1 if group.get("held") else 0
        )
    up = out.gauge("directord_ha_peer_up", "1 while the peer is alive (heard within the deadtime)", ["peer"])
    heard = out.gauge("directord_ha_peer_last_heard_seconds", "seconds since the peer was last heard", ["peer"])
    for peer in ha.get("peers", ()):
        node = printable(peer.get("node"))
        up.add_metric([node], 0 if peer.get("status") == "dead" else 1)
        if peer.get("last_heard_s") is not None:
            heard.add_metric([node], peer["last_heard_s"])
    out.counter("directord_ha_takeovers", "resource groups this director acquired").add_metric(
        [], t.events["ha.acquired"]
    )
    out.counter("directord_ha_releases", "resource groups this director released").add_metric(
        [], t.events["ha.released"]
    )
    out.counter("directord_ha_acquire_failures", "resource groups this director failed to acquire").add_metric(
        [], t.events["ha.acquire_failed"]
    )
    announced = out.counter(
        "directord_ha_announcements", "gratuitous ARP / unsolicited NA rounds sent, by round", ["round"]
    )
    for round_, n in sorted(t.announcements.items()):
        announced.add_metric([round_], n)
    out.counter("directord_ha_announcement_failures", "announcement rounds that failed").add_metric(
        [], t.events["ha.announce_failed"]
    )
    counters: Mapping[str, int] = ha.get("counters", {})
    out.counter("directord_ha_address_repairs", "VIPs put back or removed because the kernel disagreed").add_metric(
        [], counters.get("address_repairs", 0)
    )
    out.counter("directord_ha_packets_received", "heartbeat datagrams received").add_metric(
        [], counters.get("received", 0)
    )
    out.counter(
        "directord_ha_packets_accepted", "heartbeat datagrams authenticated and accepted from a peer"
    ).add_metric([], counters.get("accepted", 0))
    rejected = out.counter(
        "directord_ha_packets_rejected",
        "heartbeat datagrams dropped before reaching a peer's state, by reason",
        ["reason"],
    )
    for reason in HA_REJECT_REASONS:
        rejected.add_metric([reason], counters.get(reason, 0))
    for name in HA_COUNTERS:
        out.counter(f"directord_ha_{name}", f"heartbeat node counter {name}").add_metric([], counters.get(name, 0))
    sent = out.counter("directord_ha_medium_sent", "heartbeat datagrams sent, by medium", ["medium"])
    received = out.counter("directord_ha_medium_received", "heartbeat datagrams received, by medium", ["medium"])
    errors = out.counter("directord_ha_medium_send_errors", "heartbeat sends that failed, by medium", ["medium"])
    for medium in ha.get("media", ()):
        name = str(medium.get("medium", ""))
        sent.add_metric([name], medium.get("sent", 0))
        received.add_metric([name], medium.get("received", 0))
        errors.add_metric([name], medium.get("send_errors", 0))
    out.counter("directord_ha_timers_late", "times the HA node's timers ran late (this process stalled)").add_metric(
        [], t.events["ha.timers_late"]
    )
    out.gauge(
        "directord_ha_timers_last_late_seconds", "how late the HA node's timers ran the last time they did"
    ).add_metric([], t.ha_timers_late)


def _bgp(out: _Families, s: Scrape) -> None:
    """The BGP families, with a bgp section only (`ha.bgp.service.BgpService.status`)."""
    bgp, t = s.bgp, s.tally
    if bgp is None:
        return
    out.gauge("directord_bgp_speaker_up", "1 while the BIRD directord runs is running").add_metric(
        [], 1 if bgp.get("speaker") == "running" else 0
    )
    out.gauge("directord_bgp_drained", "1 while the operator has drained this director").add_metric(
        [], 1 if bgp.get("drained") else 0
    )
    sessions = out.gauge(
        "directord_bgp_session_up", "1 while the BGP session with the neighbour is established", ["neighbor", "address"]
    )
    for session in bgp.get("sessions", ()):
        sessions.add_metric(
            [printable(str(session.get("neighbor", ""))), str(session.get("address", ""))],
            1 if session.get("state") == "Established" else 0,
        )
    announced = out.gauge(
        "directord_bgp_vip_announced",
        "1 while the VIP is announced (2 with the GRACEFUL_SHUTDOWN community), 0 when withdrawn",
        ["vip"],
    )
    for vip in bgp.get("vips", ()):
        level = 0
        if vip.get("announced"):
            level = 2 if vip.get("route") == "graceful_shutdown" else 1
        announced.add_metric([str(vip.get("vip", ""))], level)
    out.counter("directord_bgp_route_changes_total", "changes of a VIP's announcement").add_metric(
        [], t.events["bgp.route"]
    )
    out.counter("directord_bgp_speaker_events_total", "BIRD started, exited, restarted or stopped").add_metric(
        [], t.events["bgp.speaker"]
    )
