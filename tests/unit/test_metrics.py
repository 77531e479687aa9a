"""The metric families of a scrape (`director.web.metrics`), written in the text format and read
back with prometheus-client's own parser; the README's metric table against them."""

from __future__ import annotations

import re
import socket
from collections import Counter
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client.parser import text_string_to_metric_families

from director.events import (
    Envelope,
    HealthChanged,
    HookFinished,
    IPVSApplied,
    IPVSDriftRepaired,
    IPVSFailed,
    ReloadAccepted,
    ReloadRefused,
)
from director.model import (
    Config,
    DestAttrs,
    DestKey,
    FallbackServer,
    IPVSStats,
    KernelDest,
    KernelService,
    RealServer,
    ServiceAttrs,
    ServiceKey,
    VirtualService,
)
from director.web.metrics import IPVS_OPERATIONS, DaemonFacts, Scrape
from director.web.server import render_metrics
from director.web.tally import EventTally
from ha.bgp.events import BgpRouteChanged, BgpSpeakerChanged
from ha.events import AnnouncementSent, GroupAcquired, TimersLate

README = Path(__file__).resolve().parents[2] / "README.md"
WEB = ServiceKey(socket.AF_INET, socket.IPPROTO_TCP, "10.0.0.100", 80)
MARK = ServiceKey(socket.AF_INET, 0, "", 0, fwmark=10)
RS1, RS2, FB, OLD = (
    DestKey("10.0.0.11", 80),
    DestKey("10.0.0.12", 80),
    DestKey("127.0.0.1", 80),
    DestKey("10.0.0.9", 80),
)
BUCKETS = (0.01, 0.1, 1.0)


def status(state, checks=0, passed=0, failed=0, timed_out=0, buckets=(), total=0.0, last_result=None):
    return SimpleNamespace(
        state=state,
        last_result=last_result,
        checks=checks,
        passed_checks=passed,
        failed_checks=failed,
        timed_out_checks=timed_out,
        duration_buckets=buckets,
        duration_sum=total,
    )


def tally_of(*events) -> EventTally:
    tally = EventTally()
    for i, event in enumerate(events):
        tally.add(Envelope(i + 1, 1000.0 + i, event))
    return tally


def scrape(**over) -> Scrape:
    web = VirtualService(
        name="web",
        key=WEB,
        real_servers=(RealServer("10.0.0.11", 80, weight=3), RealServer("10.0.0.12", 80, weight=2)),
        fallback=FallbackServer("127.0.0.1", 80),
    )
    table = {
        WEB: KernelService(
            ServiceAttrs("wlc"),
            {
                RS1: KernelDest(DestAttrs(3, 3), 4, 9, stats=IPVSStats(conns=120, inpkts=900, inbytes=1 << 40)),
                RS2: KernelDest(DestAttrs(3, 0), stats=IPVSStats(conns=7)),
                OLD: KernelDest(DestAttrs(3, 0), 1, 0, stats=IPVSStats()),
            },
            stats=IPVSStats(127, 950, 0, 1 << 40, 0, 12, 90, 0, 40000, 0),
        ),
        MARK: KernelService(ServiceAttrs("rr"), {}, stats=IPVSStats(conns=5)),
    }
    args = dict(
        config=Config("d.yaml", services=(web,)),
        table=table,
        health={
            (WEB, RS1): status("up", 10, 8, 1, 1, (3, 8, 9), 2.5),
            (WEB, RS2): status("down", 2, 0, 2, 0, (2, 2, 2), 0.004),
        },
        draining={WEB: {OLD}},
        ha={
            "node": "dir1",
            "state": "active",
            "groups": [{"owner": "dir1", "resources": ["10.0.0.100/32/eth0"], "held": True}],
            "peers": [{"node": "dir2", "status": "active", "last_heard_s": 0.15}],
            "media": [{"medium": "bcast eth1", "sent": 50, "received": 48, "send_errors": 1}],
            "counters": {"received": 60, "accepted": 48, "bad_auth": 12, "address_repairs": 2, "stalls": 1},
        },
        bgp={
            "speaker": "running",
            "drained": False,
            "sessions": [
                {"neighbor": "r1", "address": "10.0.9.1", "state": "Established"},
                {"neighbor": "r2", "address": "10.0.9.2", "state": "Active"},
            ],
            "vips": [
                {"vip": "192.0.2.10", "route": "announced", "announced": True},
                {"vip": "192.0.2.11", "route": "graceful_shutdown", "announced": True},
                {"vip": "192.0.2.12", "route": "announced", "announced": False},  # its BIRD is down
                {"vip": "192.0.2.13", "route": "withdrawn", "announced": False},
            ],
        },
        tally=tally_of(
            HealthChanged("rs 10.0.0.12:80 of web", "web", "10.0.0.12:80", "up", "down", "timeout"),
            HealthChanged("rs 10.0.0.12:80 of web", "web", "10.0.0.12:80", "unknown", "up", "HTTP 200"),
            IPVSApplied("set_dest", "web", str(WEB), "10.0.0.12:80", 0, "dr"),
            IPVSFailed("add_service", "web", "No such file or directory"),
            IPVSDriftRepaired("web", str(WEB), (("add_dest", 1),), ("add_dest 10.0.0.12:80",)),
            ReloadAccepted("d.yaml", 1),
            ReloadRefused("d.yaml", "bad port"),
            GroupAcquired("dir1 10.0.0.100/32/eth0"),
            AnnouncementSent("10.0.0.100/32/eth0", "first"),
            AnnouncementSent("10.0.0.100/32/eth0", "repeats"),
            TimersLate(0.35),
            BgpRouteChanged("192.0.2.10", "announced", "web: 2/2 in service"),
            BgpRouteChanged("192.0.2.11", "graceful_shutdown", "director drained"),
            BgpSpeakerChanged("running", "pid 7"),
        ),
        daemon=DaemonFacts("1.2.3", 1700000000.0, 5, 1, True, 2, True),
        check_buckets=BUCKETS,
    )
    args.update(over)
    return Scrape(**args)


def samples(s: Scrape) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(render_metrics(s).decode()):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


def value(found, name: str, **labels) -> float:
    matches = [v for ls, v in found[name] if all(ls.get(k) == w for k, w in labels.items())]
    assert len(matches) == 1, (name, labels, found.get(name))
    return matches[0]


WEB_LABELS = {"local_address": "10.0.0.100", "local_port": "80", "proto": "TCP", "local_mark": "", "service": "web"}


def test_ipvs_counters_and_rates_per_service_and_backend():
    m = samples(scrape())
    assert value(m, "directord_ipvs_connections_total", **WEB_LABELS) == 127
    assert value(m, "directord_ipvs_incoming_bytes_total", **WEB_LABELS) == float(1 << 40)
    assert value(m, "directord_ipvs_connections_per_second", **WEB_LABELS) == 12
    assert value(m, "directord_ipvs_incoming_bytes_per_second", **WEB_LABELS) == 40000
    rs1 = dict(WEB_LABELS, remote_address="10.0.0.11", remote_port="80")
    assert value(m, "directord_ipvs_backend_connections_total", **rs1) == 120
    assert value(m, "directord_ipvs_backend_incoming_packets_total", **rs1) == 900
    assert value(m, "directord_ipvs_backend_connections_active", **rs1) == 4
    assert value(m, "directord_ipvs_backend_connections_inactive", **rs1) == 9
    assert value(m, "directord_ipvs_backend_weight", **rs1) == 3
    # a firewall-mark service, not in the configuration: node_exporter's FWM labels
    mark = {"local_address": "", "local_port": "0", "proto": "FWM", "local_mark": "10", "service": ""}
    assert value(m, "directord_ipvs_connections_total", **mark) == 5


def test_real_server_health_weights_roles_and_transitions():
    m = samples(scrape())
    rs2 = dict(WEB_LABELS, remote_address="10.0.0.12", remote_port="80")
    assert value(m, "directord_real_server_health", state="down", **rs2) == 1
    assert value(m, "directord_real_server_health", state="up", **rs2) == 0
    assert value(m, "directord_real_server_configured_weight", **rs2) == 2
    assert value(m, "directord_ipvs_backend_weight", **rs2) == 0  # quiesced
    assert value(m, "directord_real_server_transitions_total", state="down", **rs2) == 1
    assert value(m, "directord_real_server_transitions_total", state="up", **rs2) == 1
    assert value(m, "directord_real_server_role", role="fallback", remote_address="127.0.0.1") == 1
    assert value(m, "directord_real_server_role", role="draining", remote_address="10.0.0.9") == 1
    assert value(m, "directord_virtual_service_real_servers", health="up", **WEB_LABELS) == 1
    assert value(m, "directord_virtual_service_real_servers", health="down", **WEB_LABELS) == 1
    assert value(m, "directord_virtual_service_in_kernel", **WEB_LABELS) == 1


def test_check_results_and_duration_histogram():
    m = samples(scrape())
    rs1 = dict(WEB_LABELS, remote_address="10.0.0.11", remote_port="80")
    assert value(m, "directord_check_results_total", outcome="ok", **rs1) == 8
    assert value(m, "directord_check_results_total", outcome="failed", **rs1) == 1
    assert value(m, "directord_check_results_total", outcome="timeout", **rs1) == 1
    assert value(m, "directord_check_duration_seconds_bucket", le="0.01", **rs1) == 3
    assert value(m, "directord_check_duration_seconds_bucket", le="1.0", **rs1) == 9
    assert value(m, "directord_check_duration_seconds_bucket", le="+Inf", **rs1) == 10
    assert value(m, "directord_check_duration_seconds_count", **rs1) == 10
    assert value(m, "directord_check_duration_seconds_sum", **rs1) == 2.5


def test_ha_role_peer_and_counters():
    m = samples(scrape())
    assert value(m, "directord_ha_state", node="dir1", state="active") == 1
    assert value(m, "directord_ha_group_held", group="10.0.0.100/32/eth0", owner="dir1") == 1
    assert value(m, "directord_ha_peer_up", peer="dir2") == 1
    assert value(m, "directord_ha_peer_last_heard_seconds", peer="dir2") == 0.15
    assert value(m, "directord_ha_takeovers_total") == 1
    assert value(m, "directord_ha_announcements_total", round="first") == 1
    assert value(m, "directord_ha_packets_rejected_total", reason="bad_auth") == 12
    assert value(m, "directord_ha_packets_accepted_total") == 48
    assert value(m, "directord_ha_address_repairs_total") == 2
    assert value(m, "directord_ha_medium_send_errors_total", medium="bcast eth1") == 1
    assert value(m, "directord_ha_timers_late_total") == 1
    assert value(m, "directord_ha_timers_last_late_seconds") == 0.35


def test_daemon_reconciler_and_checker():
    m = samples(scrape())
    assert value(m, "directord_build_info", version="1.2.3") == 1
    assert value(m, "directord_start_time_seconds") == 1700000000.0
    assert value(m, "directord_config_reloads_total", result="adopted") == 1
    assert value(m, "directord_config_reloads_total", result="refused") == 1
    assert value(m, "directord_config_last_reload_successful") == 0  # the refusal came last
    assert value(m, "directord_ipvs_operations_total", op="set_dest") == 1
    assert value(m, "directord_ipvs_operation_failures_total", op="add_service") == 1
    assert value(m, "directord_ipvs_kernel_errors_total") == 1
    assert value(m, "directord_checker_restarts_total") == 2
    assert value(m, "directord_events_total", kind="check.health") == 2


def test_drift_repairs_per_configured_service_and_operation():
    """Every configured service has a series per operation from the first scrape (at 0); the
    repairs of ``ipvs.drift`` events add up per service and operation; other events, and a
    service no longer configured, do not count."""
    m = samples(scrape(tally=EventTally()))
    assert len(m["directord_ipvs_drift_repairs_total"]) == 6
    assert {v for _, v in m["directord_ipvs_drift_repairs_total"]} == {0}
    tally = tally_of(
        IPVSApplied("add_dest", "web", str(WEB), "10.0.0.12:80", 1, "dr"),
        IPVSDriftRepaired("web", str(WEB), (("add_dest", 1),), ("add_dest 10.0.0.12:80",)),
        IPVSDriftRepaired("web", str(WEB), (("set_service", 1), ("add_dest", 2)), ("set_service",)),
        IPVSDriftRepaired("gone", "TCP 10.0.0.200:80", (("add_dest", 4),)),
    )
    m = samples(scrape(tally=tally))
    assert value(m, "directord_ipvs_drift_repairs_total", op="add_dest", **WEB_LABELS) == 3
    assert value(m, "directord_ipvs_drift_repairs_total", op="set_service", **WEB_LABELS) == 1
    assert value(m, "directord_ipvs_drift_repairs_total", op="set_dest", **WEB_LABELS) == 0
    assert {ls["service"] for ls, _ in m["directord_ipvs_drift_repairs_total"]} == {"web"}
    assert value(m, "directord_ipvs_operations_total", op="add_dest") == 1
    assert value(m, "directord_events_total", kind="ipvs.drift") == 3
    assert "directord_ipvs_drift_repairs_total" not in samples(scrape(config=None))


async def test_a_drift_repaired_by_the_reconciler_reaches_the_metrics():
    """Kernel, reconciler, event bus, tally and scrape together: a real server deleted by hand
    behind the reconciler's back is one ``add_dest`` repair of its service in the metrics; the
    reload that came before it, none."""
    from test_reconciler import MemoryKernel, tamper

    from director.events import EventBus
    from director.reconciler import Reconciler

    tally = EventTally()
    bus = EventBus(log=tally.add)
    kernel = MemoryKernel()
    web = scrape().config.services[0]
    r = Reconciler(kernel, lambda s, d: "up", on_event=bus.publish)
    r.set_config(Config("d.yaml", services=(web,)))
    await r.full_pass()
    r.set_config(Config("d.yaml", services=(replace(web, real_servers=web.real_servers[:1]),)))
    await r.full_pass()
    assert samples(scrape(tally=tally))["directord_ipvs_drift_repairs_total"] == [
        ({**WEB_LABELS, "op": op}, 0.0) for op in IPVS_OPERATIONS
    ]
    tamper(kernel, WEB, {})
    await r.full_pass()
    m = samples(scrape(tally=tally, table=kernel.table))
    # RS1 put back; the draining RS2 deleted by hand stays deleted (it was on its way out)
    assert value(m, "directord_ipvs_drift_repairs_total", op="add_dest", **WEB_LABELS) == 1
    assert sum(v for _, v in m["directord_ipvs_drift_repairs_total"]) == 1
    assert set(kernel.table[WEB].dests) == {RS1}


def test_hook_runs_by_hook_and_result():
    def finished(hook, result):
        return HookFinished(hook=hook, event="ha.acquired", event_seq=1, result=result, seconds=0.1)

    tally = tally_of(
        finished("httpd", "exit 0"),
        finished("httpd", "exit 0"),
        finished("httpd", "exit 3"),
        finished("httpd", "signal 9"),
        finished("page", "timeout"),
        finished("page", "not run"),
    )
    m = samples(scrape(tally=tally))
    assert value(m, "directord_hook_runs_total", hook="httpd", result="ok") == 2
    assert value(m, "directord_hook_runs_total", hook="httpd", result="failed") == 2
    assert value(m, "directord_hook_runs_total", hook="page", result="timeout") == 1
    assert value(m, "directord_hook_runs_total", hook="page", result="not_run") == 1


def test_without_ha_stats_or_health_the_families_stay_and_samples_go():
    s = scrape(ha=None, health={}, tally=EventTally(), table={WEB: KernelService(ServiceAttrs("wlc"), {})})
    text = render_metrics(s).decode()
    m = samples(s)
    assert "directord_ha_state" not in m
    assert "# TYPE directord_ipvs_backend_connections_total counter" in text  # declared, no sample
    assert value(m, "directord_real_server_health", state="unknown", remote_address="10.0.0.11") == 1
    assert value(m, "directord_virtual_service_real_servers", health="unknown", **WEB_LABELS) == 2


def test_a_tally_never_raises_into_the_publisher():
    tally = EventTally()
    tally.add(SimpleNamespace(event=object(), at=0.0))
    tally.add(Envelope(1, 0.0, ReloadAccepted("d.yaml", 1)))
    assert tally.errors == 1 and tally.reloads == Counter(adopted=1)


def test_bgp_families():
    m = samples(scrape())
    assert value(m, "directord_bgp_speaker_up") == 1 and value(m, "directord_bgp_drained") == 0
    assert value(m, "directord_bgp_session_up", neighbor="r1", address="10.0.9.1") == 1
    assert value(m, "directord_bgp_session_up", neighbor="r2") == 0
    assert [value(m, "directord_bgp_vip_announced", vip=f"192.0.2.1{i}") for i in range(4)] == [1, 2, 0, 0]
    assert value(m, "directord_bgp_route_changes_total") == 2
    assert value(m, "directord_bgp_speaker_events_total") == 1
    assert not any(name.startswith("directord_bgp_") for name in samples(scrape(bgp=None)))


def test_readme_lists_every_metric():
    """The README's metric table names every family a full scrape writes, and nothing else."""
    text = render_metrics(scrape()).decode()
    written = set(re.findall(r"^# TYPE (directord_\w+) ", text, re.M))  # counters with _total
    documented = set(re.findall(r"^\| `(directord_\w+)`", README.read_text(), re.M))
    assert written == documented, (sorted(written - documented), sorted(documented - written))


@pytest.mark.parametrize("name", ["directord_ipvs_connections", "directord_check_results"])
def test_counters_are_written_with_total(name):
    assert f"\n{name}_total{{" in render_metrics(scrape()).decode()


def test_a_fallback_status_gives_no_check_counter_samples():
    """While the checker does not answer, the director's statuses come from transitions with
    zero counters (``checks`` 0 and a last result): no sample, rather than a counter reset."""
    fallback = status("up", last_result=SimpleNamespace(ok=True, reason="HTTP 200"))
    m = samples(scrape(health={(WEB, RS1): fallback}))
    rs1 = dict(WEB_LABELS, remote_address="10.0.0.11", remote_port="80")
    assert not [ls for ls, _ in m.get("directord_check_results_total", []) if ls["remote_address"] == "10.0.0.11"]
    assert "directord_check_duration_seconds_count" not in m
    assert value(m, "directord_real_server_health", state="up", **rs1) == 1


def test_names_with_control_and_bidi_characters_are_escaped_in_labels():
    hostile = "we\x1b[31mb\u202e\x00\n<b>"
    web = VirtualService(name=hostile, key=WEB, real_servers=(RealServer("10.0.0.11", 80, weight=3),))
    ha = scrape().ha
    s = scrape(
        config=Config("d.yaml", services=(web,)), ha={**ha, "peers": [{"node": "dir\x1b]2\u202e", "status": "up"}]}
    )
    text = render_metrics(s).decode()
    assert not [ch for ch in text if ch != "\n" and not ch.isprintable()], "a raw control or format character"
    found = samples(s)
    assert value(found, "directord_virtual_service_in_kernel", service="we\\x1b[31mb\\u202e\\x00\\n<b>") == 1
    assert value(found, "directord_ha_peer_up", peer="dir\\x1b]2\\u202e") == 1
