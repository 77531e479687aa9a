"""The pure parts of bench/soak.py: bounds, statistics, /proc parsing, configuration, datagrams, report."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import soak

from director.config import load_config
from director.lab.pair import pair_config
from director.lab.topology import plan_lab
from ha.auth import parse_authkeys
from ha.wire import (
    BadAuth,
    MalformedPacket,
    UnknownAuthIndex,
    parse_packet,
    verify_inner_auth,
)


def test_detection_bounds_follow_the_check_settings():
    # defaults (interval 1, retry 0.5, timeout 1, rise 2, fall 2): out 1 + 1*max(0.5, 1) + 1, back 1 + 1 + 0.5
    assert soak.detection_bounds(soak.CheckTiming(), 0.0) == (3.0, 2.5)
    assert soak.detection_bounds(soak.CheckTiming(), 5.0) == (8.0, 7.5)
    # retry_interval above interval: the engine uses the interval
    t = soak.CheckTiming(interval=2.0, retry_interval=5.0, timeout=0.5, rise=3, fall=4)
    assert soak.detection_bounds(t, 1.0) == (2.0 + 3 * 2.0 + 0.5 + 1.0, 0.5 + 2.0 + 2 * 2.0 + 1.0)
    with pytest.raises(ValueError):
        soak.detection_bounds(soak.CheckTiming(timeout=0), 1.0)
    with pytest.raises(ValueError):
        soak.detection_bounds(soak.CheckTiming(fall=0), 1.0)
    with pytest.raises(ValueError):
        soak.detection_bounds(soak.CheckTiming(), -1.0)


def test_percentile_is_nearest_rank():
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert soak.percentile(values, 50) == 3.0
    assert soak.percentile(values, 95) == 5.0
    assert soak.percentile(values, 0) == 1.0
    assert soak.percentile(list(range(1, 101)), 95) == 95
    assert soak.percentile([], 50) is None
    with pytest.raises(ValueError):
        soak.percentile(values, 101)


def test_slope_per_hour_is_least_squares():
    # 2 KiB per minute, with symmetric noise that least squares averages out
    pts = [(60.0 * i, 1000 + 2 * i + (0.5 if i % 2 else -0.5)) for i in range(10)]
    slope = soak.slope_per_hour(pts)
    assert slope is not None and abs(slope - 120.0) < 3.0
    assert soak.slope_per_hour([(0, 5), (3600, 5)]) == 0.0
    assert soak.slope_per_hour([(0, 1), (7200, 3)]) == 1.0
    assert soak.slope_per_hour([(0, 1)]) is None
    assert soak.slope_per_hour([(5, 1), (5, 9)]) is None


def test_proc_status_and_stat_parsing():
    status = "Name:\tpython3\nState:\tS (sleeping)\nPPid:\t412\nVmPeak:\t  99999 kB\nVmRSS:\t   48212 kB\n"
    assert soak.parse_vmrss_kib(status) == 48212
    assert soak.parse_ppid(status) == 412
    assert soak.parse_vmrss_kib("Name:\tkworker/0:1\nPPid:\t2\n") is None
    with pytest.raises(ValueError):
        soak.parse_vmrss_kib("VmRSS:\t12 MB\n")
    # a command name with spaces and parentheses: fields are counted after the last ')'
    stat = "1234 (py (x) y) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 37 0 0 20 0 3 0 100 1000 200"
    assert soak.parse_cpu_ticks(stat) == 287
    with pytest.raises(ValueError):
        soak.parse_cpu_ticks("1 (x) S 1 2")


def test_live_process_sample_reads_this_process():
    import os

    s = soak.proc_sample(os.getpid())
    assert s is not None
    rss, fds, cpu = s
    assert rss > 1000 and fds >= 3 and cpu > 0
    assert os.getpid() in soak.children(os.getppid())


def test_flatten_counters_keeps_numbers_and_is_bounded():
    doc = {"pid": 7, "ha": {"state": "active", "media": [{"received": 3, "bad_auth": 2}], "up": True}, "none": None}
    assert soak.flatten_counters(doc) == {"pid": 7, "ha.media.0.received": 3, "ha.media.0.bad_auth": 2}
    big = {f"k{i}": i for i in range(1000)}
    assert len(soak.flatten_counters(big)) == soak.MAX_COUNTERS
    deep: dict = {"n": 1}
    for _ in range(50):
        deep = {"d": deep}
    assert soak.flatten_counters(deep) == {}


def test_counter_deltas_keep_the_moving_hinted_counters():
    first = {"dir1": {"ha.bad_auth": 10, "ha.received": 5, "ha.malformed": 1}, "dir2": {"ha.bad_auth": 0}}
    last = {"dir1": {"ha.bad_auth": 110, "ha.received": 500, "ha.malformed": 1}, "dir2": {"ha.bad_auth": 40}}
    assert soak.counter_deltas(first, last) == {"ha.bad_auth": {"dir1": 100, "dir2": 40}}


def test_takeover_episodes_count_runs_where_dir2_holds_the_vip():
    samples = [
        (0.0, ("dir1",)),
        (1.0, ("dir1", "dir2")),
        (2.0, ("dir2",)),
        (3.0, ("dir1",)),
        (4.0, ()),
        (5.0, ("dir2",)),
        (6.5, ("dir2",)),
    ]
    assert soak.takeover_episodes(samples) == (2, 3.5)
    assert soak.takeover_episodes([(0.0, ("dir1",)), (9.0, ("dir1",))]) == (0, 0.0)
    assert soak.takeover_episodes([]) == (0, 0.0)


PROC_IP_VS = """IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port Forward Weight ActiveConn InActConn
TCP  0A4D0064:0050 rr
  -> 0A4D0015:0050      Route   1      0          3
  -> 0A4D0016:0050      Route   0      0          0
FWM  00000001 rr
  -> 0A4D0017:0050      Route   1      0          0
TCP  0A4D0079:1F90 rr
  -> 0A4D0015:1F90      Route   3      0          0
UDP  0A4D00ZZ:0035 rr
  -> 0A4D0015:0035      Route   1      0          0
"""


def test_proc_ip_vs_parsing_and_table_state():
    tab = soak.parse_proc_ip_vs(PROC_IP_VS)
    assert tab == {
        "10.77.0.100:80": {"10.77.0.21:80": 1, "10.77.0.22:80": 0},
        "10.77.0.121:8080": {"10.77.0.21:8080": 3},
    }
    assert soak.table_state(tab, "10.77.0.100:80", "10.77.0.21:80") == 1
    assert soak.table_state(tab, "10.77.0.100:80", "10.77.0.22:80") == 0
    assert soak.table_state(tab, "10.77.0.100:80", "10.77.0.23:80") is None
    assert soak.table_state(tab, "10.77.0.200:80", "10.77.0.21:80") is None
    assert soak.parse_proc_ip_vs("") == {}


def test_flap_summary_counts_unseen_flaps_as_exceeded():
    flaps = [{"out": 2.0, "back": 1.0}, {"out": 9.0, "back": 1.5}, {"out": None, "back": 2.0}, {"out": 3.0}]
    s = soak.flap_summary(flaps, (8.0, 7.5))
    assert s["flaps"] == 4
    assert s["out"] == {"n": 3, "bound": 8.0, "p50": 3.0, "p95": 9.0, "max": 9.0, "exceeded": 2}
    assert s["back"]["n"] == 3 and s["back"]["exceeded"] == 1 and s["back"]["max"] == 2.0


def test_summarise_series_starts_after_the_warm_up():
    s = soak.ProcSeries("dir1", [(0.0, 100, 10, 0.0, 5), (100.0, 200, 12, 1.0, 5), (3700.0, 210, 12, 37.0, 5)])
    r = soak.summarise_series(s, warmup_s=50.0)
    assert (r["rss_start_kib"], r["rss_end_kib"], r["rss_max_kib"]) == (200, 210, 210)
    assert (r["fds_start"], r["fds_end"], r["fds_max"]) == (12, 12, 12)
    assert r["rss_slope_kib_per_h"] == 10.0 and r["fds_slope_per_h"] == 0.0
    assert r["cpu_share"] == 0.01 and r["pids"] == [5]
    # a replaced process: no CPU share across two pids
    s.points.append((3800.0, 90, 9, 0.5, 6))
    assert soak.summarise_series(s, 50.0)["cpu_share"] is None
    assert soak.summarise_series(soak.ProcSeries("x"), 0.0) == {"role": "x", "samples": 0}


def _summary() -> dict:
    return {
        "duration_s": 300.0,
        "warmup_s": 150.0,
        "services": 9,
        "real_servers": 4,
        "checks_per_s": 36.0,
        "flaps": soak.flap_summary([{"out": 2.5, "back": 1.25}, {"out": 9.5, "back": 1.0}], (8.0, 7.5)),
        "reloads_ok": 4,
        "reloads_failed": 1,
        "flood_sent": 12345,
        "flood_rate": 2000.0,
        "flood_achieved_rate": 41.15,
        "false_takeovers": 0,
        "false_takeover_s": 0.0,
        "vip_nobody_s": 0.0,
        "daemon_restarts": 0,
        "checker_restarts": 0,
        "poll_p50_s": 0.2,
        "processes": [
            soak.summarise_series(soak.ProcSeries("dir1", [(0.0, 100, 10, 0.0, 5), (300.0, 110, 10, 3.0, 5)]), 0.0),
            {"role": "dir2-checker", "samples": 0},
        ],
        "counters": {"ha.bad_auth": {"dir1": 100, "dir2": 90}},
    }


def test_render_prints_every_figure():
    text = soak.render(_summary())
    assert "| flaps | 2 |" in text
    assert "| reloads ok / failed | 4 / 1 |" in text
    assert "12345 (asked 2000/s, achieved 41/s)" in text
    assert "| out of the table | 2 | 2.50 | 9.50 | 9.50 | 8.00 | 1 |" in text
    assert "| back in the table | 2 | 1.00 | 1.25 | 1.25 | 7.50 | 0 |" in text
    assert "| dir1 | 100 | 110 | 110 | 120.0 | 10 | 10 | 10 | 1% | 1 |" in text
    assert "| dir2-checker | - |" in text
    assert "| ha.bad_auth | 100 | 90 |" in text
    late = _summary()
    late["lateness"] = {"dir1": soak.loop_lateness(json_line(kind="ha.timers_late", late=0.64, message="-"))}
    assert "| dir1: HA timers late / checker behind | 1 times (max 0.64 s) / 0 times (max 0.00 s) |" in soak.render(
        late
    )
    assert not soak.verdict_ok(_summary())
    ok = _summary()
    ok["flaps"] = soak.flap_summary([{"out": 2.5, "back": 1.25}], (8.0, 7.5))
    ok["reloads_failed"] = 0
    assert soak.verdict_ok(ok)


def test_samples_csv_has_one_row_per_sample():
    csv_text = soak.samples_csv(
        [soak.ProcSeries("dir1", [(10.0, 100, 9, 1.234, 5)]), soak.ProcSeries("dir1-checker", [(0.0, 50, 7, 0.5, 6)])]
    )
    assert csv_text.splitlines() == [
        "t_s,process,pid,rss_kib,fds,cpu_s",
        "0.0,dir1-checker,6,50,7,0.5",
        "10.0,dir1,5,100,9,1.23",
    ]


def test_last_sent_reads_the_flooder_output():
    assert soak.last_sent("sent 10 errors 0\nsent 2500 errors 1\n") == 2500
    assert soak.last_sent("") == 0
    assert soak.last_sent("garbage\nsent x\n") == 0


@pytest.mark.parametrize("variant", [0, 1])
def test_soak_config_loads_and_alternates(tmp_path: Path, variant: int):
    plan = plan_lab("soak", real_servers=3, directors=2, ha_link=True, prepare_real_servers=False)
    keys = tmp_path / "authkeys"
    keys.write_text("auth 1\n1 sha1 0123456789abcdef\n")
    keys.chmod(0o600)
    (tmp_path / "state").mkdir()
    base = pair_config(plan, "dir1", authkeys=str(keys), state_dir=str(tmp_path / "state"))
    rips = [plan.addr[r] for r in plan.real_servers]
    text = soak.soak_config(
        base,
        vip=plan.vip,
        vip_prefix="10.77.0",
        rips=rips,
        port=80,
        services=5,
        check_interval=0.5,
        variant=variant,
        ha_timers={"keepalive": 0.5, "deadtime": 4, "initdead": 8},
    )
    path = tmp_path / "directord.yaml"
    path.write_text(text)
    cfg = load_config(str(path))
    names = [s.name for s in cfg.services]
    assert names[:6] == ["web", "load-1", "load-2", "load-3", "load-4", "load-5"]
    assert ("reload-extra" in names) == (variant == 1)
    web = cfg.services[0]
    assert [rs.weight for rs in web.real_servers] == ([1, 1, 2] if variant else [1, 1, 1])
    assert cfg.services[1].check.interval == 0.5
    assert cfg.ha is not None and cfg.ha.node == "dir1"
    assert (cfg.ha.timers.keepalive, cfg.ha.timers.deadtime, cfg.ha.timers.initdead) == (0.5, 4.0, 8.0)
    with pytest.raises(ValueError):
        soak.soak_config(
            "global: {}\n",
            vip=plan.vip,
            vip_prefix="10.77.0",
            rips=rips,
            port=80,
            services=1,
            check_interval=1,
            variant=0,
        )
    with pytest.raises(ValueError, match="warntime"):
        soak.soak_config(
            base,
            vip=plan.vip,
            vip_prefix="10.77.0",
            rips=rips,
            port=80,
            services=1,
            check_interval=1,
            variant=0,
            ha_timers={"warntime": 1},
        )


def json_line(**record) -> str:
    """One line of ``directord run --log-format json``."""
    return json.dumps({"at": 1_765_000_000.0, "level": "INFO", "logger": "directord", **record}) + "\n"


def test_loop_lateness_reads_the_timers_late_events_and_the_checkers_warnings():
    text = (
        json_line(
            kind="ha.timers_late",
            level="WARNING",
            logger="directord.ha",
            late=0.6444,
            message="timers ran 0.64 s late (was this process stalled?): peers get 0.64 s of grace",
        )
        + json_line(kind="ha.timers_late", late=1.16, message="reworded: the text is not read")
        # the same words outside an event count for nothing
        + json_line(message="timers ran 9.99 s late")
        + json_line(kind="check.behind", late=0.874, in_flight=1, limit=4, message="checks are falling behind")
        + "y WARNING directord.checks: checks are falling behind (event loop 999 ms late, 1 checks in flight)\n"
    )
    assert soak.loop_lateness(text) == {
        "ha_stalls": 2,
        "ha_stall_max_s": 1.16,
        "checker_behind": 1,
        "checker_late_max_s": 0.874,
    }
    assert soak.loop_lateness("") == {
        "ha_stalls": 0,
        "ha_stall_max_s": 0.0,
        "checker_behind": 0,
        "checker_late_max_s": 0.0,
    }


def test_forged_datagrams_are_refused_by_the_pair():
    keys = parse_authkeys("auth 1\n1 sha1 the-pair-secret\n")
    datagrams = soak.forged_datagrams()
    assert datagrams == soak.forged_datagrams()  # the same flood every run
    assert all(0 < len(d) <= 65000 for d in datagrams)
    assert max(len(d) for d in datagrams) > 50000
    parsed = 0
    for d in datagrams:
        try:
            p = parse_packet(d)
        except MalformedPacket:
            continue
        parsed += 1
        if p.auth_mac is not None:
            assert p.auth_index is not None
            assert not keys.verify(p.auth_index, p.signed, p.auth_mac)
        else:
            with pytest.raises((BadAuth, UnknownAuthIndex, MalformedPacket)):
                verify_inner_auth(p.message, keys)
    # well-formed packets that only a MAC check refuses, besides the malformed ones
    assert 0 < parsed < len(datagrams)


def test_options_are_bounded():
    with pytest.raises(SystemExit):
        soak.parse_args(["--flood-rate", "1e9"])
    with pytest.raises(SystemExit):
        soak.parse_args(["--minutes", "0"])
    a = soak.parse_args(["--minutes", "5", "--out-dir", "/tmp/x"])
    assert a.minutes == 5 and a.flap_every == 5.0 and a.reload_every == 60.0 and a.flood_rate == 2000.0
    assert (a.keepalive, a.deadtime) == (soak.SOAK_KEEPALIVE, soak.SOAK_DEADTIME)
    with pytest.raises(SystemExit):
        soak.parse_args(["--keepalive", "1", "--deadtime", "1.5"])


def test_reload_verdict_comes_from_the_reload_events():
    accepted = json_line(kind="config.reloaded", path="/x.yaml", services=3, message="reloaded: 3 virtual services")
    refused = json_line(
        kind="config.refused", level="ERROR", path="/x.yaml", error="x.yaml:3:1: port: ...", message="reload refused"
    )
    assert soak.reload_verdict(json_line(message="reloading /x.yaml") + accepted) == "ok"
    assert soak.reload_verdict(refused + accepted) == "failed: reload refused"
    # no event yet: no verdict, whatever the text says
    assert soak.reload_verdict(json_line(message="reloaded: 3 virtual services") + "reload of /x.yaml failed\n") is None
