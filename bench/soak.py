"""Soak: an HA pair under steady abuse for a long time; memory, descriptors, false takeovers and
real-server detection times over the whole run.

Run inside the stock-kernel VM (root, ip_vs); results must go under ``lab vm --out`` (the
guest's other folders are thrown away):

    directord lab vm --timeout 4500 --out DIR -- python bench/soak.py --minutes 60 --out-dir DIR

The pair is the lab of ``directord lab up`` (`director.lab.pair.PairLab`: client, directors
dir1/dir2, ``--real-servers`` real servers serving HTTP, DR forwarding, heartbeat on its own
bridge ``hb0``, dir1 owning the VIP). Each daemon's configuration is the lab's (virtual
service ``web``, HTTP check of ``/healthz``: interval 1 s, timeout 1 s, rise 2, fall 2,
retry_interval 0.5 s) plus ``--services`` more virtual services on other addresses over the
same real servers (HTTP checks every ``--check-interval`` s), so the health checker makes
``(1 + services) x real servers / interval`` checks per second.

Throughout the run, all bounded in time:

* flaps: every ``--flap-every`` seconds one real server (in turn) is hung (its HTTP server
  stops answering: SIGUSR1 to `director.lab.httpd`) until dir1's kernel table, read from
  ``/proc/net/ip_vs`` (what ``ipvsadm -Ln`` prints) every 0.1 s by a thread in dir1's
  namespace, shows it out of ``web`` (weight 0 or gone), then released (SIGUSR2) until the
  table shows it back with its weight. Each time is checked against a bound from the check
  settings (`detection_bounds`);
* reloads: every ``--reload-every`` seconds both configurations are rewritten atomically
  (alternately: ``web``'s last real server at weight 2 and a virtual service
  ``reload-extra`` added; back to the original) and both daemons get SIGHUP; a reload counts
  as ok when the daemon logs a ``config.reloaded`` event within 60 s (its JSON log,
  ``--log-format json``), as failed on a ``config.refused`` event;
* flood: a namespace ``<prefix>-flood`` on the heartbeat bridge sends forged and malformed
  datagrams to the heartbeat broadcast address, UDP 694, at ``--flood-rate`` per second
  (`forged_datagrams`: statuses signed with a wrong key, garbage, truncated and 60 KB
  packets);
* samples every ``--sample-every`` seconds: RSS (``VmRSS`` of ``/proc/PID/status``), open
  descriptors (``/proc/PID/fd``) and CPU time of each daemon and its checker child, and
  counters of ``directord status`` (read over the control socket, the request ``directord
  status --json`` makes); the VIP holders are read every second (false takeover: dir2 holds
  the VIP, alone or with dir1).

Output: a markdown table on stdout (also ``soak.md``), ``soak.json`` (settings, summary,
flaps, reloads, samples) and ``soak-samples.csv`` (one row per process per sample) in
``--out-dir`` (default ``out/bench/soak-<time>``). Exit status 0 when no flap exceeded its
bound, no reload failed, no false takeover happened and no daemon died; 1 otherwise.
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import json
import math
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

#: Heartbeat's UDP port (heartbeat 3.0.6 ``ha.cf`` ``udpport`` default).
HB_PORT = 694
#: Bounds on every option that sizes the run.
MAX_MINUTES = 24 * 60
MAX_SERVICES = 200
MAX_FLOOD_RATE = 20000
#: Niceness of the flooder: an attacker on another machine does not take the directors' CPU, but
#: in the VM the flooder shares the guest's CPUs with both directors; at 19 it sends what they leave.
FLOOD_NICE = 19
#: Heartbeat timers of the soak's pair (seconds; ``--keepalive``/``--deadtime``): the lab's 0.2 / 0.8 s
#: hold on real hardware (`tests/unit/test_ha_flood.py`), but Python in the emulated VM runs about
#: 20x slower and one guest carries both directors, both checkers, the real servers and the flood.
SOAK_KEEPALIVE = 0.5
SOAK_DEADTIME = 4.0
#: Seconds a reload may take until the daemon logs its verdict.
RELOAD_WAIT_S = 60.0
#: Seconds between two writes of the results so far (soak.json, soak.md) during the run.
PARTIAL_EVERY_S = 300.0
#: Seconds between two reads of dir1's IPVS table (a read costs about 0.03 s of the guest's CPU).
TABLE_POLL_S = 0.25
#: How many status counters are kept per sample (the rest is cut off).
MAX_COUNTERS = 300
#: Status counters shown in the table (deltas over the run), by name fragment.
COUNTER_HINTS = (
    "malformed",
    "bad_auth",
    "rejected",
    "budget",
    "dropped",
    "late",
    "stalls",
    "restarts",
    "kernel_errors",
)


def log(msg: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- pure parts ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckTiming:
    """Health-check settings (seconds; counts) the detection bounds come from."""

    interval: float = 1.0
    retry_interval: float = 0.5
    timeout: float = 1.0
    rise: int = 2
    fall: int = 2


def detection_bounds(c: CheckTiming, margin: float) -> tuple[float, float]:
    """``(out, back)``: the most seconds a flap may take to show in the kernel table (pure).

    Out (the real server stops answering, its checks time out): the first failing check starts
    at most ``interval`` after the hang, each of the ``fall`` failing checks lasts ``timeout``,
    and the next starts ``max(min(retry_interval, interval), timeout)`` after the previous
    one (`checks.spec`: a check is at most ``timeout`` long, failing ones are retried every
    ``min(retry_interval, interval)``), so
    ``interval + (fall - 1) * max(min(retry_interval, interval), timeout) + timeout + margin``.

    Back (it answers again): a check still hung when it is released may need up to
    ``timeout`` to fail, the next starts at most ``interval`` later, then ``rise`` successes
    ``min(retry_interval, interval)`` apart:
    ``timeout + interval + (rise - 1) * min(retry_interval, interval) + margin``.

    ``margin`` (seconds) covers the reconciler's write to the kernel, the table reader's poll
    period and a loaded machine.

    Raises:
        ValueError: a non-positive time or count, or a negative margin.
    """
    if min(c.interval, c.retry_interval, c.timeout) <= 0 or min(c.rise, c.fall) < 1 or margin < 0:
        raise ValueError(f"bad check timing {c} or margin {margin}")
    retry = min(c.retry_interval, c.interval)
    out = c.interval + (c.fall - 1) * max(retry, c.timeout) + c.timeout + margin
    back = c.timeout + c.interval + (c.rise - 1) * retry + margin
    return round(out, 3), round(back, 3)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) by nearest rank; None for no values (pure)."""
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} outside 0..100")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def slope_per_hour(points: Iterable[tuple[float, float]]) -> float | None:
    """Least-squares slope of ``(seconds, value)`` points, in value units per hour (pure).

    None with fewer than two points or when every point has the same time.
    """
    pts = list(points)
    if len(pts) < 2:
        return None
    n = len(pts)
    mx = sum(t for t, _ in pts) / n
    my = sum(v for _, v in pts) / n
    sxx = sum((t - mx) ** 2 for t, _ in pts)
    if sxx == 0:
        return None
    sxy = sum((t - mx) * (v - my) for t, v in pts)
    return sxy / sxx * 3600.0


def parse_vmrss_kib(status_text: str) -> int | None:
    """``VmRSS`` of a ``/proc/PID/status`` text in KiB (kernel threads and zombies have none:
    None) (pure). Raises ValueError on a ``VmRSS`` line that is not ``<n> kB``."""
    for line in status_text.splitlines():
        if line.startswith("VmRSS:"):
            parts = line.split()
            if len(parts) != 3 or parts[2] != "kB" or not parts[1].isdigit():
                raise ValueError(f"unexpected VmRSS line {line!r}")
            return int(parts[1])
    return None


def parse_ppid(status_text: str) -> int | None:
    """``PPid`` of a ``/proc/PID/status`` text (pure)."""
    for line in status_text.splitlines():
        if line.startswith("PPid:"):
            value = line.split(":", 1)[1].strip()
            return int(value) if value.isdigit() else None
    return None


def parse_cpu_ticks(stat_text: str) -> int:
    """utime + stime (clock ticks) of a ``/proc/PID/stat`` line (pure; the command name in
    parentheses may hold spaces and parentheses, so fields are counted after the last ``)``;
    ``proc(5)``: utime and stime are fields 14 and 15). Raises ValueError on a short line."""
    rest = stat_text.rsplit(")", 1)[-1].split()
    if len(rest) < 13:
        raise ValueError("short /proc/PID/stat line")
    return int(rest[11]) + int(rest[12])


def flatten_counters(doc: Any, prefix: str = "", limit: int = MAX_COUNTERS) -> dict[str, float]:
    """Numeric leaves of a status document as ``{"ha.media.0.received": 12}`` (pure).

    Lists are indexed; booleans are left out; at most ``limit`` leaves, depth at most 8 (a
    status document is the daemon's, but it may name things a peer sent: nothing here is
    unbounded).
    """
    out: dict[str, float] = {}

    def walk(node: Any, path: str, depth: int) -> None:
        if len(out) >= limit or depth > 8:
            return
        if isinstance(node, bool) or node is None:
            return
        if isinstance(node, (int, float)):
            out[path] = node
        elif isinstance(node, Mapping):
            for k, v in node.items():
                walk(v, f"{path}.{k}" if path else str(k), depth + 1)
        elif isinstance(node, (list, tuple)):
            for i, v in enumerate(node[:50]):
                walk(v, f"{path}.{i}" if path else str(i), depth + 1)

    walk(doc, prefix, 0)
    return out


def takeover_episodes(samples: Sequence[tuple[float, Sequence[str]]]) -> tuple[int, float]:
    """``(count, seconds)`` of false takeovers in holder samples ``(t seconds, holders)``
    sorted by time (pure): an episode is a run of samples where dir2 holds the VIP (alone or
    with dir1); its length runs from its first sample to the first sample after it (or the
    last sample)."""
    count, total = 0, 0.0
    start: float | None = None
    for t, holders in samples:
        bad = "dir2" in holders
        if bad and start is None:
            start, count = t, count + 1
        elif not bad and start is not None:
            total += t - start
            start = None
    if start is not None and samples:
        total += samples[-1][0] - start
    return count, round(total, 3)


def parse_proc_ip_vs(text: str) -> dict[str, dict[str, int]]:
    """``/proc/net/ip_vs`` text as ``{"VIP:PORT": {"RIP:PORT": weight}}`` (IPv4 TCP and UDP
    services; fwmark and IPv6 services are left out) (pure). The kernel prints addresses and
    ports in hex (net/netfilter/ipvs/ip_vs_ctl.c, ``ip_vs_info_seq_show``):
    ``TCP  0A4D0064:0050 rr`` then ``  -> 0A4D0015:0050      Route   1      0          0``."""
    out: dict[str, dict[str, int]] = {}
    current: dict[str, int] | None = None

    def addr(token: str) -> str | None:
        host, _, port = token.partition(":")
        if len(host) != 8 or not port:
            return None
        try:
            return f"{socket.inet_ntoa(bytes.fromhex(host))}:{int(port, 16)}"
        except ValueError:
            return None

    for line in text.splitlines()[:100000]:
        f = line.split()
        if len(f) >= 2 and f[0] in ("TCP", "UDP"):
            key = addr(f[1])
            current = out.setdefault(key, {}) if key else None
        elif len(f) >= 4 and f[0] == "->" and current is not None:
            dest = addr(f[1])
            if dest and f[3].isdigit():
                current[dest] = int(f[3])
        elif f and f[0] in ("FWM", "TCP", "UDP", "SCTP"):
            current = None
    return out


def table_state(table: Mapping[str, Mapping[str, int]], service: str, dest: str) -> int | None:
    """Weight of ``dest`` (``"RIP:PORT"``) in ``service`` (``"VIP:PORT"``) of a `parse_proc_ip_vs`
    table, None when absent (pure)."""
    return table.get(service, {}).get(dest)


@dataclass
class ProcSeries:
    """Samples of one process role (``dir1``, ``dir1-checker``...): ``(t seconds, rss KiB, fds,
    cpu seconds, pid)``."""

    role: str
    points: list[tuple[float, int, int, float, int]] = field(default_factory=list)


def summarise_series(s: ProcSeries, warmup_s: float) -> dict[str, Any]:
    """RSS (KiB) and fds at start (first sample at or after ``warmup_s``), end and max, RSS and
    fd slope per hour after the warm-up, CPU share of one core over the run, pids seen (pure)."""
    after = [p for p in s.points if p[0] >= warmup_s] or s.points[-1:]
    if not after:
        return {"role": s.role, "samples": 0}
    cpu = None
    if len(s.points) >= 2 and s.points[-1][4] == s.points[0][4] and s.points[-1][0] > s.points[0][0]:
        cpu = (s.points[-1][3] - s.points[0][3]) / (s.points[-1][0] - s.points[0][0])
    return {
        "role": s.role,
        "samples": len(s.points),
        "pids": sorted({p[4] for p in s.points}),
        "rss_start_kib": after[0][1],
        "rss_end_kib": after[-1][1],
        "rss_max_kib": max(p[1] for p in after),
        "fds_start": after[0][2],
        "fds_end": after[-1][2],
        "fds_max": max(p[2] for p in after),
        "rss_slope_kib_per_h": _round(slope_per_hour((p[0], p[1]) for p in after)),
        "fds_slope_per_h": _round(slope_per_hour((p[0], p[2]) for p in after)),
        "cpu_share": None if cpu is None else round(cpu, 3),
    }


def _round(v: float | None, nd: int = 1) -> float | None:
    return None if v is None else round(v, nd)


def flap_summary(flaps: Sequence[Mapping[str, Any]], bounds: tuple[float, float]) -> dict[str, Any]:
    """Per direction (``out``, ``back``): count, p50/p95/max seconds and how many exceeded the
    bound (a flap never seen in the table counts as exceeded) (pure)."""
    res: dict[str, Any] = {"flaps": len(flaps)}
    for key, bound in zip(("out", "back"), bounds):
        seen = [f[key] for f in flaps if f.get(key) is not None]
        res[key] = {
            "n": len(seen),
            "bound": bound,
            "p50": percentile(seen, 50),
            "p95": percentile(seen, 95),
            "max": max(seen) if seen else None,
            "exceeded": sum(1 for f in flaps if f.get(key) is None or f[key] > bound),
        }
    return res


def log_records(log_text: str) -> list[dict[str, Any]]:
    """The JSON records of a daemon's log (``directord run --log-format json``, one object per
    line; `director.lab.scenarios.parse_log_line`), in order; other lines are skipped (pure)."""
    from director.lab.scenarios import parse_log_line

    return [r for r in map(parse_log_line, log_text.splitlines()) if r is not None]


def reload_verdict(log_text: str) -> str | None:
    """A reload's outcome from the daemon's log since its SIGHUP (pure): ``"ok"`` at a
    ``config.reloaded`` event, ``"failed: MESSAGE"`` at a ``config.refused`` event (the first of
    either), ``None`` while there is neither."""
    for record in log_records(log_text):
        if record.get("kind") == "config.reloaded":
            return "ok"
        if record.get("kind") == "config.refused":
            return "failed: " + str(record.get("message", ""))[-300:]
    return None


def loop_lateness(log_text: str) -> dict[str, float]:
    """How late each event loop of a daemon ran, from its log (pure): ``ha_stalls`` (the
    ``ha.timers_late`` events, `ha.events.TimersLate`), ``ha_stall_max_s`` (their largest
    ``late``), ``checker_behind`` (the ``check.behind`` events, `director.events.CheckerBehind`)
    and ``checker_late_max_s`` (their largest ``late``)."""
    records = log_records(log_text)
    ha = [float(r["late"]) for r in records if r.get("kind") == "ha.timers_late"]
    ck = [float(r["late"]) for r in records if r.get("kind") == "check.behind"]
    return {
        "ha_stalls": len(ha),
        "ha_stall_max_s": max(ha, default=0.0),
        "checker_behind": len(ck),
        "checker_late_max_s": max(ck, default=0.0),
    }


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub markdown table (pure); cells are str()-ed, ``|`` escaped."""

    def cell(x: object) -> str:
        return "-" if x is None else str(x).replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _s(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def render(summary: Mapping[str, Any]) -> str:
    """The report of a run (pure): run figures, flap detection and processes, as markdown tables."""
    f = summary["flaps"]
    run_rows = [
        ("duration", f"{summary['duration_s'] / 60:.1f} min (warm-up {summary['warmup_s']:.0f} s)"),
        (
            "checks per second per director",
            (
                f"{summary['checks_per_s']:g} ({summary['services']} virtual services x "
                f"{summary['real_servers']} real servers)"
            ),
        ),
        ("flaps", f"{f['flaps']}"),
        ("reloads ok / failed", f"{summary['reloads_ok']} / {summary['reloads_failed']}"),
        (
            "flood datagrams sent",
            (
                f"{summary['flood_sent']} (asked {summary['flood_rate']:g}/s, "
                f"achieved {summary['flood_achieved_rate']:.0f}/s)"
            ),
        ),
        ("false takeovers", f"{summary['false_takeovers']} ({summary['false_takeover_s']:.1f} s in all)"),
        ("VIP on nobody", f"{summary['vip_nobody_s']:.1f} s"),
        ("daemon restarts / checker restarts", f"{summary['daemon_restarts']} / {summary['checker_restarts']}"),
        (
            "table read (/proc/net/ip_vs in dir1) every",
            f"{TABLE_POLL_S:g} s, read time median {_s(summary['poll_p50_s'])} s",
        ),
    ]
    for node, late in sorted(summary.get("lateness", {}).items()):
        run_rows.append(
            (
                f"{node}: HA timers late / checker behind",
                (
                    f"{late['ha_stalls']} times (max {late['ha_stall_max_s']:.2f} s) / "
                    f"{late['checker_behind']} times (max {late['checker_late_max_s']:.2f} s)"
                ),
            )
        )
    parts = [markdown_table(["soak", "value"], run_rows)]
    rows = []
    for key, what in (("out", "out of the table"), ("back", "back in the table")):
        d = f[key]
        rows.append([what, d["n"], _s(d["p50"]), _s(d["p95"]), _s(d["max"]), _s(d["bound"]), d["exceeded"]])
    parts.append(markdown_table(["flap (s)", "n", "p50", "p95", "max", "bound", "exceeded"], rows))
    prow = []
    for p in summary["processes"]:
        if not p.get("samples"):
            prow.append([p["role"]] + ["-"] * 9)
            continue
        prow.append(
            [
                p["role"],
                p["rss_start_kib"],
                p["rss_end_kib"],
                p["rss_max_kib"],
                p["rss_slope_kib_per_h"],
                p["fds_start"],
                p["fds_end"],
                p["fds_max"],
                "-" if p["cpu_share"] is None else f"{p['cpu_share'] * 100:.0f}%",
                len(p["pids"]),
            ]
        )
    parts.append(
        markdown_table(
            [
                "process",
                "RSS start KiB",
                "RSS end",
                "RSS max",
                "RSS slope KiB/h",
                "fds start",
                "fds end",
                "fds max",
                "CPU (one core)",
                "pids",
            ],
            prow,
        )
    )
    if summary.get("counters"):
        parts.append(
            markdown_table(
                ["status counter (delta over the run)", "dir1", "dir2"],
                [[k, v.get("dir1"), v.get("dir2")] for k, v in summary["counters"].items()],
            )
        )
    return "\n\n".join(parts)


def counter_deltas(
    first: Mapping[str, Mapping[str, float]],
    last: Mapping[str, Mapping[str, float]],
    hints: Sequence[str] = COUNTER_HINTS,
    limit: int = 40,
) -> dict[str, dict[str, float]]:
    """``{counter: {node: last - first}}`` for counters whose name holds one of ``hints`` and
    that moved on some node (pure); at most ``limit`` counters, sorted by name."""
    out: dict[str, dict[str, float]] = {}
    names = sorted({k for d in last.values() for k in d if any(h in k for h in hints)})
    for name in names:
        row = {node: last[node].get(name, 0) - first.get(node, {}).get(name, 0) for node in last}
        if any(v for v in row.values()):
            out[name] = {k: round(v, 3) for k, v in row.items()}
        if len(out) >= limit:
            break
    return out


def forged_datagrams(seed: int = 7, count: int = 64) -> list[bytes]:
    """Hostile heartbeat datagrams (pure given ``seed``): status packets in heartbeat 3.0.6's
    netstring framing signed with a key the pair does not have (as if from dir1 and dir2),
    text-framed statuses with a wrong MAC, truncated copies, random garbage, and a 60 KB
    datagram of a thousand fields. Each is at most 65,000 bytes (one UDP datagram)."""
    from ha.auth import parse_authkeys
    from ha.wire import Message, add_standard_fields, encode_packet, to_text

    rng = random.Random(seed)
    wrong = parse_authkeys("auth 1\n1 sha1 " + f"{rng.getrandbits(96):024x}" + "\n")
    out: list[bytes] = []
    for i in range(count):
        kind = i % 6
        src = ("dir1", "dir2")[i % 2]
        msg = Message.from_pairs(
            [("t", "status"), ("st", "active"), ("dt", "7d0"), ("protocol", "1"), ("info", "forged")]
        )
        msg = add_standard_fields(
            msg,
            src=src,
            srcuuid=rng.randbytes(16),
            hg=rng.randrange(1, 1 << 30),
            ts=1_800_000_000 + i,
            ttl=3,
            seq=rng.randrange(1, 1 << 20),
            ld="0.00 0.00 0.00 1/1 1",
        )
        if kind == 0:
            d = encode_packet(msg, wrong)
        elif kind == 1:
            d = b">>>\n" + to_text(msg) + b"auth=1 " + b"%040x" % rng.getrandbits(160) + b"\n<<<\n\0"
        elif kind == 2:
            full = encode_packet(msg, wrong)
            d = full[: rng.randrange(1, len(full))]
        elif kind == 3:
            d = rng.randbytes(rng.randrange(1, 1400))
        elif kind == 4:  # netstring framing whose field lengths run past the end
            d = b"###\n" + b"".join(b"%d:(0)f%d=x," % (rng.randrange(100, 100000), j) for j in range(40)) + b"%%%\n"
        else:
            body = b"".join(b"f%d=%s\n" % (j, b"y" * 50) for j in range(1000))
            d = (b">>>\nt=status\n" + body + b"<<<\n")[:60000]
        out.append(d[:65000])
    return out


def bounded_option(value: float, lo: float, hi: float, name: str) -> float:
    """``value`` if ``lo <= value <= hi`` else ValueError naming the option (pure)."""
    if not lo <= value <= hi:
        raise ValueError(f"--{name} must be within {lo:g}..{hi:g}, not {value:g}")
    return value


def soak_config(
    base: str,
    *,
    vip: str,
    vip_prefix: str,
    rips: Sequence[str],
    port: int,
    services: int,
    check_interval: float,
    variant: int,
    ha_timers: Mapping[str, float] | None = None,
) -> str:
    """A director's configuration (pure; YAML text): the ``global:`` and ``ha:`` parts of the
    lab's `director.lab.pair.pair_config` text ``base``, and virtual services: ``web`` on
    ``vip`` (the lab's check), ``load-1``.. on ``<vip_prefix>.<120 + i>`` (HTTP checks every
    ``check_interval`` s), all over ``rips`` on ``port``, DR. An odd ``variant`` puts ``web``'s
    last real server at weight 2 and adds ``reload-extra`` on ``<vip_prefix>.119``.
    ``ha_timers`` (``{"keepalive": seconds, ...}``) replace the lab's values of those keys in ``ha:``.

    Raises:
        ValueError: ``base`` has no ``virtual_services:`` then ``ha:`` section, or its ``ha:``
            section has no line of a key of ``ha_timers`` to replace.
    """
    head, sep, rest = base.partition("virtual_services:\n")
    _, sep2, ha = rest.partition("\nha:\n")
    if not sep or not sep2:
        raise ValueError("the base configuration has no virtual_services: / ha: sections")
    for key, value in (ha_timers or {}).items():
        ha, n = re.subn(rf"(?m)^(  {re.escape(key)}:) .*$", rf"\g<1> {value:g}", ha)
        if n != 1:
            raise ValueError(f"the base configuration's ha: section has no single '{key}:' line")
    from director.lab.scenarios import (
        CHECK_FALL,
        CHECK_INTERVAL,
        CHECK_RISE,
        CHECK_TIMEOUT,
    )

    def svc(name: str, addr: str, interval: float, weights: Mapping[str, int]) -> str:
        rs = "\n".join(f"      - {{address: {r}, port: {port}, weight: {weights.get(r, 1)}}}" for r in rips)
        return (
            f"  - name: {name}\n    address: {addr}\n    port: {port}\n    scheduler: rr\n    forwarding: dr\n"
            f"    check: {{type: http, path: /healthz, interval: {interval:g}, timeout: {CHECK_TIMEOUT:g}, "
            f"rise: {CHECK_RISE}, fall: {CHECK_FALL}}}\n    real_servers:\n{rs}\n"
        )

    odd = variant % 2 == 1
    text = svc("web", vip, CHECK_INTERVAL, {rips[-1]: 2} if odd else {})
    for i in range(1, services + 1):
        text += svc(f"load-{i}", f"{vip_prefix}.{120 + i}", check_interval, {})
    if odd:
        text += svc("reload-extra", f"{vip_prefix}.119", check_interval, {})
    return head + "virtual_services:\n" + text + "ha:\n" + ha


def last_sent(text: str) -> int:
    """The count of the last ``sent <n>`` line of the flooder's output; 0 when none (pure)."""
    n = 0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "sent" and parts[1].isdigit():
            n = int(parts[1])
    return n


# --- the run (I/O) ------------------------------------------------------------------------------


def _read(path: str, limit: int = 1 << 16) -> str:
    with open(path, "rb") as f:
        return f.read(limit).decode(errors="replace")


def proc_sample(pid: int) -> tuple[int, int, float] | None:
    """``(rss KiB, open fds, cpu seconds)`` of ``pid``; None when it is gone."""
    try:
        rss = parse_vmrss_kib(_read(f"/proc/{pid}/status"))
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        cpu = parse_cpu_ticks(_read(f"/proc/{pid}/stat")) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None
    return (rss or 0), fds, cpu


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (scanning ``/proc``)."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if parse_ppid(_read(f"/proc/{name}/status", 4096)) == pid:
                out.append(int(name))
        except OSError:
            continue
    return sorted(out)


class Soak:
    """One soak run (see the module doc); `run` returns the summary."""

    def __init__(self, a: argparse.Namespace) -> None:
        from director.lab.pair import PairLab, PairOptions

        self.a = a
        self.pair = PairLab(PairOptions(prefix=a.prefix, real_servers=a.real_servers, mode="dr"))
        self.t0 = time.monotonic()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.holders: list[tuple[float, tuple[str, ...]]] = []
        self.series: dict[str, ProcSeries] = {}
        self.counters: list[dict[str, Any]] = []
        self.flaps: list[dict[str, Any]] = []
        self.reloads: list[dict[str, Any]] = []
        self.polls: list[float] = []
        self.table: tuple[float, dict[str, dict[str, int]]] = (0.0, {})
        self.table_stop = threading.Event()
        self.daemon_pids: dict[str, set[int]] = {"dir1": set(), "dir2": set()}
        self.variant = 0
        self.bounds = (0.0, 0.0)
        self.flooder: subprocess.Popen | None = None
        self.flood_log = Path(a.out_dir) / "flood.log"
        self.vip_prefix = ".".join(self.pair.vip.split(".")[:3])

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 3)

    # -- configuration ---------------------------------------------------------------------------

    def config_text(self, node: str) -> str:
        p = self.pair
        return soak_config(
            p.config_text(node),
            vip=p.vip,
            vip_prefix=self.vip_prefix,
            rips=[p.plan.addr[r] for r in p.plan.real_servers],
            port=p.options.port,
            services=self.a.services,
            check_interval=self.a.check_interval,
            variant=self.variant,
            ha_timers=self.ha_timers(),
        )

    def ha_timers(self) -> dict[str, float]:
        """The pair's heartbeat timers (seconds): the options', initdead twice the deadtime."""
        return {"keepalive": self.a.keepalive, "deadtime": self.a.deadtime, "initdead": 2 * self.a.deadtime}

    def write_configs(self) -> None:
        from ha.durable import write_file_atomic

        for node in ("dir1", "dir2"):
            write_file_atomic(self.pair.config_path(node), self.config_text(node).encode(), 0o644)

    # -- set-up ----------------------------------------------------------------------------------

    def up(self) -> None:
        from director.lab.pair import DIRECTORS

        p = self.pair
        # the lab's own configuration first (PairLab.up writes it), then ours and a restart of the
        # daemons: the heartbeat timers are read at start only (a reload keeps the ha: section)
        p.up(wait=True, timeout=self.a.settle_timeout)
        self.write_configs()
        for node in DIRECTORS:
            p.signal_daemon(node, signal.SIGTERM)
        deadline = time.monotonic() + self.a.settle_timeout
        while any(p.daemon_pid(n) is not None for n in DIRECTORS):
            if time.monotonic() > deadline:
                raise TimeoutError("the lab's daemons did not stop after SIGTERM")
            time.sleep(0.5)
        p.restore(timeout=self.a.settle_timeout)
        self._wait_services(self.a.settle_timeout)

    def _wait_services(self, timeout: float) -> None:
        want = 1 + self.a.services
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            tab = self.pair.ipvs_table("dir1")
            ready = len(tab) >= want and all(
                all(d[1] > 0 for d in svc["dests"].values()) and len(svc["dests"]) == self.a.real_servers
                for svc in tab.values()
            )
            if ready and self.pair.holders() == ("dir1",):
                return
            time.sleep(1.0)
        raise TimeoutError(
            f"dir1's table did not list {want} virtual services with every real server up "
            f"in {timeout:.0f} s:\n{self.pair.log_tail('dir1')}"
        )

    def start_flood(self, seconds: float) -> None:
        from director.lab.netns import (
            add_address,
            add_veth,
            create_netns,
            link_set,
            set_master,
        )

        p = self.pair
        ns, sw = f"{p.prefix}-flood", p.plan.switch_ns
        create_netns(ns)
        add_veth(ns, "eth0", sw, "flood-hb")
        set_master(sw, "flood-hb", "hb0")
        link_set(sw, "flood-hb", up=True)
        add_address(ns, "eth0", f"{self.hb_net()}.200/24")
        from director.lab import flood

        pk = Path(self.a.out_dir) / "flood-packets.json"
        flood.write_packets(pk, forged_datagrams())
        argv = [
            sys.executable,
            "-I",
            flood.__file__,
            "--packets",
            str(pk),
            "--dest",
            f"{self.hb_net()}.255",
            "--port",
            str(HB_PORT),
            "--rate",
            str(self.a.flood_rate),
            "--seconds",
            str(seconds),
            "--nice",
            str(FLOOD_NICE),
        ]
        from director.lab.netns import run_in_netns

        with open(self.flood_log, "ab") as f:
            self.flooder = run_in_netns(ns, argv, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT)

    def hb_net(self) -> str:
        return ".".join(self.pair.plan.hb_addr["dir1"].split(".")[:3])

    # -- threads ---------------------------------------------------------------------------------

    def table_loop(self) -> None:
        """Reads dir1's IPVS table (``/proc/net/ip_vs``, the table ``ipvsadm -Ln`` prints) every
        `TABLE_POLL_S` seconds from one thread that lives in dir1's namespace (no process per read:
        process start is about 100x slower in the emulated VM); keeps ``(read start, table)``."""
        from director.lab.netns import enter_netns

        enter_netns(self.pair.lab.ns("dir1"))
        while not self.table_stop.is_set():
            q = time.monotonic()
            try:
                text = _read("/proc/thread-self/net/ip_vs", 4 << 20)
            except OSError:
                text = ""
            tab = parse_proc_ip_vs(text)
            with self.lock:
                self.table = (q, tab)
                self.polls.append(time.monotonic() - q)
                del self.polls[:-10000]
            self.table_stop.wait(TABLE_POLL_S)

    def holder_loop(self) -> None:
        from director.lab.pair import HolderProbe

        probe = HolderProbe(self.pair)
        try:
            while not self.stop.wait(1.0):
                try:
                    h = probe.holders()
                except OSError:
                    continue
                with self.lock:
                    self.holders.append((self.now(), h))
        finally:
            probe.close()

    def sample_loop(self) -> None:
        next_partial = PARTIAL_EVERY_S
        while True:
            self.sample_once()
            if self.now() >= next_partial:  # results so far, in case the run is cut short
                next_partial += PARTIAL_EVERY_S
                try:
                    summary = self.summary(self.now(), self.bounds, CheckTiming())
                    self.write(summary, render(summary))
                except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError) as exc:  # the run goes on
                    log(f"partial results not written: {type(exc).__name__}: {exc}")
            if self.stop.wait(self.a.sample_every):
                return

    def sample_once(self) -> None:
        from director.control import request

        t = self.now()
        row: dict[str, Any] = {"t": t}
        for node in ("dir1", "dir2"):
            pid = self.pair.daemon_pid(node)
            if pid is None:
                continue
            self.daemon_pids[node].add(pid)
            roles = [(node, pid)] + [(f"{node}-checker", c) for c in children(pid)[:1]]
            for role, cpid in roles:
                s = proc_sample(cpid)
                if s is not None:
                    with self.lock:
                        self.series.setdefault(role, ProcSeries(role)).points.append((t, s[0], s[1], s[2], cpid))
            try:
                doc = request(str(self.pair.socket_path(node)), "status", timeout=10.0).get("status") or {}
                row[node] = flatten_counters({k: v for k, v in doc.items() if k != "services"})
                ha = doc.get("ha") if isinstance(doc.get("ha"), dict) else {}
                row[f"{node}_ha_state"] = str(ha.get("state"))[:40]
            except (OSError, ValueError) as exc:
                row[node] = {"error": 1}
                log(f"status of {node}: {exc}")
        with self.lock:
            self.counters.append(row)

    def reload_loop(self) -> None:
        while not self.stop.wait(self.a.reload_every):
            self.reload_once()

    def reload_once(self) -> None:
        from director.lab.pair import DIRECTORS

        offsets = {n: self._log_size(n) for n in DIRECTORS}
        self.variant += 1
        t = self.now()
        try:
            self.write_configs()
        except OSError as exc:
            self.reloads.append({"t": t, "variant": self.variant, "ok": False, "error": str(exc)})
            return
        for node in DIRECTORS:
            self.pair.signal_daemon(node, signal.SIGHUP)
        verdict: dict[str, str] = {}
        deadline = time.monotonic() + RELOAD_WAIT_S
        while len(verdict) < len(DIRECTORS) and time.monotonic() < deadline and not self.stop.is_set():
            for node in DIRECTORS:
                if node in verdict:
                    continue
                outcome = reload_verdict(self._log_since(node, offsets[node]))
                if outcome is not None:
                    verdict[node] = outcome
            time.sleep(0.5)
        ok = all(verdict.get(n) == "ok" for n in DIRECTORS)
        rec = {"t": t, "variant": self.variant, "ok": ok, "verdict": verdict, "s": round(self.now() - t, 2)}
        self.reloads.append(rec)
        if not ok:
            log(f"reload {self.variant} not ok: {verdict or 'no verdict in the logs within 60 s'}")

    def _log_size(self, node: str) -> int:
        try:
            return self.pair.log_path(node).stat().st_size
        except OSError:
            return 0

    def _log_since(self, node: str, offset: int, limit: int = 1 << 20) -> str:
        try:
            with open(self.pair.log_path(node), "rb") as f:
                f.seek(offset)
                return f.read(limit).decode(errors="replace")
        except OSError:
            return ""

    # -- flaps (main thread) ---------------------------------------------------------------------

    def wait_table(self, service: str, dest: str, want_out: bool, timeout: float) -> float | None:
        """Seconds until dir1's table shows ``dest`` out of (or back in) ``service``; None if not
        within ``timeout`` seconds."""
        start = time.monotonic()
        while time.monotonic() - start < timeout and not self.stop.is_set():
            with self.lock:
                q, tab = self.table
            if q >= start:
                w = table_state(tab, service, dest)
                if (w is None or w == 0) if want_out else (w is not None and w > 0):
                    # the read started at q: count that, so never an overstatement
                    return round(q - start, 3)
            time.sleep(0.05)
        return None

    def flap(self, i: int, bounds: tuple[float, float]) -> None:
        p = self.pair
        rs = p.plan.real_servers[i % len(p.plan.real_servers)]
        dest = f"{p.plan.addr[rs]}:{p.options.port}"
        service = f"{p.vip}:{p.options.port}"
        rec: dict[str, Any] = {"t": self.now(), "rs": rs}
        p.lab.set_hang(rs, True)
        try:
            rec["out"] = self.wait_table(service, dest, True, 3 * bounds[0])
        finally:
            p.lab.set_hang(rs, False)
        rec["back"] = self.wait_table(service, dest, False, 3 * bounds[1])
        if rec["back"] is None:  # never came back: wait longer so the next flap starts clean
            self.wait_table(service, dest, False, 60.0)
        self.flaps.append(rec)
        for key, bound in zip(("out", "back"), bounds):
            if rec[key] is None or rec[key] > bound:
                log(f"flap {i} of {rs}: {key} {rec[key]} s, bound {bound} s")

    # -- the run ---------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        a = self.a
        timing = CheckTiming()
        bounds = self.bounds = detection_bounds(timing, a.margin)
        duration = a.minutes * 60.0
        log(f"bringing up the pair ({a.real_servers} real servers, {1 + a.services} virtual services)")
        self.up()
        log(
            f"pair settled; flood {a.flood_rate}/s, flaps every {a.flap_every} s, reloads every {a.reload_every} s, "
            f"bounds out {bounds[0]} s / back {bounds[1]} s, {a.minutes} min"
        )
        self.t0 = time.monotonic()
        self.start_flood(duration + 30)
        threads = [
            threading.Thread(target=fn, name=fn.__name__, daemon=True)
            for fn in (self.table_loop, self.holder_loop, self.sample_loop, self.reload_loop)
        ]
        for th in threads:
            th.start()
        i = 0
        next_report = 60.0
        while self.now() < duration:
            slot = time.monotonic()
            self.flap(i, bounds)
            i += 1
            if self.now() >= next_report:
                log(
                    f"{self.now() / 60:.1f} min: {len(self.flaps)} flaps, {len(self.reloads)} reloads, "
                    f"holders {self.holders[-1][1] if self.holders else '?'}"
                )
                next_report += 60.0
            left = duration - self.now()
            pause = min(a.flap_every - (time.monotonic() - slot), left)
            if pause > 0:
                time.sleep(pause)
        end = self.now()
        self.sample_once()
        self.stop.set()
        self.table_stop.set()
        for th in threads:
            th.join(timeout=RELOAD_WAIT_S + 10)
        return self.summary(end, bounds, timing)

    def close(self) -> None:
        self.stop.set()
        self.table_stop.set()
        for node in ("dir1", "dir2"):  # the daemons' logs vanish with the lab: keep their last 4 MiB
            try:
                with open(self.pair.log_path(node), "rb") as f:
                    f.seek(max(0, f.seek(0, os.SEEK_END) - (4 << 20)))
                    (Path(self.a.out_dir) / f"{node}-directord.log").write_bytes(f.read())
            except OSError as exc:
                log(f"log of {node} not kept: {exc}")
        if self.flooder is not None and self.flooder.poll() is None:
            self.flooder.terminate()
            try:
                self.flooder.wait(10)
            except subprocess.TimeoutExpired:
                self.flooder.kill()
                self.flooder.wait()
        self.pair.down()

    def summary(self, end: float, bounds: tuple[float, float], timing: CheckTiming) -> dict[str, Any]:
        a = self.a
        warmup = min(a.warmup, end / 2)
        try:
            flood_text = self.flood_log.read_text(errors="replace")
        except OSError:
            flood_text = ""
        sent = last_sent(flood_text)
        with self.lock:
            holders = list(self.holders)
            counters = list(self.counters)
            series = [self.series[k] for k in sorted(self.series)]
        nobody = 0.0
        for (t1, h), (t2, _) in itertools.pairwise(holders):
            if not h:
                nobody += t2 - t1
        ft_count, ft_s = takeover_episodes(holders)
        first = counters[0] if counters else {"t": 0}  # counters: over the whole run
        nodes = ("dir1", "dir2")
        deltas = (
            counter_deltas({n: first.get(n, {}) for n in nodes}, {n: counters[-1].get(n, {}) for n in nodes})
            if counters
            else {}
        )
        checker_restarts = sum(max(0, len({p[4] for p in s.points}) - 1) for s in series if s.role.endswith("-checker"))
        return {
            "settings": {k: v for k, v in vars(a).items() if k != "command"},
            "check_timing": asdict(timing),
            "duration_s": end,
            "warmup_s": warmup,
            "services": 1 + a.services,
            "real_servers": a.real_servers,
            "checks_per_s": round((1 / timing.interval + a.services / a.check_interval) * a.real_servers, 1),
            "flaps": flap_summary(self.flaps, bounds),
            "reloads_ok": sum(1 for r in self.reloads if r["ok"]),
            "reloads_failed": sum(1 for r in self.reloads if not r["ok"]),
            "flood_sent": sent,
            "flood_rate": a.flood_rate,
            "flood_achieved_rate": sent / end if end > 0 else 0.0,
            "false_takeovers": ft_count,
            "false_takeover_s": ft_s,
            "vip_nobody_s": round(nobody, 1),
            "daemon_restarts": sum(max(0, len(p) - 1) for p in self.daemon_pids.values()),
            "checker_restarts": checker_restarts,
            "poll_p50_s": percentile(self.polls, 50),
            "processes": [summarise_series(s, warmup) for s in series],
            "counters": deltas,
            "lateness": {n: loop_lateness(self._log_since(n, 0, 64 << 20)) for n in nodes},
        }

    def write(self, summary: dict[str, Any], table: str) -> None:
        """Write ``soak.json``, ``soak-samples.csv`` and ``soak.md`` (each atomically, fsynced)."""
        from ha.durable import write_file_atomic

        out = Path(self.a.out_dir)
        with self.lock:
            series = [ProcSeries(s.role, list(s.points)) for s in self.series.values()]
            doc = {
                "summary": summary,
                "flaps": list(self.flaps),
                "reloads": list(self.reloads),
                "holders": list(self.holders),
                "samples": {s.role: s.points for s in series},
                "counters": list(self.counters),
            }
        write_file_atomic(out / "soak.json", (json.dumps(doc, indent=1) + "\n").encode())
        write_file_atomic(out / "soak-samples.csv", samples_csv(series).encode())
        write_file_atomic(out / "soak.md", (table + "\n").encode())


def samples_csv(series: Iterable[ProcSeries]) -> str:
    """CSV text ``t_s,process,pid,rss_kib,fds,cpu_s``, one row per sample (pure)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["t_s", "process", "pid", "rss_kib", "fds", "cpu_s"])
    rows = sorted((p[0], s.role, p[4], p[1], p[2], round(p[3], 2)) for s in series for p in s.points)
    w.writerows(rows)
    return buf.getvalue()


def verdict_ok(summary: Mapping[str, Any]) -> bool:
    """True when no flap exceeded its bound, no reload failed, no false takeover happened and no
    daemon was restarted (pure)."""
    f = summary["flaps"]
    return (
        f["out"]["exceeded"] == 0
        and f["back"]["exceeded"] == 0
        and summary["reloads_failed"] == 0
        and summary["false_takeovers"] == 0
        and summary["daemon_restarts"] == 0
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The options (see ``--help``); ValueError-free: argparse exits 2 on a bad one."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=60.0, help="length of the run after set-up (default 60)")
    ap.add_argument(
        "--warmup",
        type=float,
        default=180.0,
        help="seconds before the 'start' figures and slopes (at most half the run; default 180)",
    )
    ap.add_argument("--real-servers", type=int, default=4)
    ap.add_argument(
        "--services",
        type=int,
        default=8,
        help="extra virtual services over the same real servers (load on the checker; default 8)",
    )
    ap.add_argument("--check-interval", type=float, default=1.0, help="seconds between checks of the extra services")
    ap.add_argument("--flap-every", type=float, default=5.0, help="seconds between the starts of two flaps")
    ap.add_argument("--reload-every", type=float, default=60.0, help="seconds between two reloads")
    ap.add_argument("--flood-rate", type=float, default=2000.0, help="forged datagrams per second on hb0")
    ap.add_argument(
        "--keepalive",
        type=float,
        default=SOAK_KEEPALIVE,
        help=f"heartbeat keepalive of the pair, seconds (default {SOAK_KEEPALIVE:g})",
    )
    ap.add_argument(
        "--deadtime",
        type=float,
        default=SOAK_DEADTIME,
        help=f"heartbeat deadtime of the pair, seconds (default {SOAK_DEADTIME:g})",
    )
    ap.add_argument("--sample-every", type=float, default=10.0, help="seconds between RSS/fd/status samples")
    ap.add_argument(
        "--margin",
        type=float,
        default=5.0,
        help="seconds added to each detection bound (kernel write, poll period, slow machine)",
    )
    ap.add_argument("--settle-timeout", type=float, default=600.0)
    ap.add_argument("--prefix", default="soak")
    ap.add_argument(
        "--out-dir",
        default=None,
        help="results folder (default out/bench/soak-<time>); in the VM give one under `lab vm --out`",
    )
    a = ap.parse_args(argv)
    try:
        bounded_option(a.minutes, 0.5, MAX_MINUTES, "minutes")
        bounded_option(a.warmup, 0, 3600, "warmup")
        bounded_option(a.real_servers, 2, 20, "real-servers")
        bounded_option(a.services, 0, MAX_SERVICES, "services")
        bounded_option(a.check_interval, 0.1, 60, "check-interval")
        bounded_option(a.flap_every, 1, 600, "flap-every")
        bounded_option(a.reload_every, 5, 3600, "reload-every")
        bounded_option(a.flood_rate, 1, MAX_FLOOD_RATE, "flood-rate")
        bounded_option(a.sample_every, 1, 600, "sample-every")
        bounded_option(a.keepalive, 0.01, 60, "keepalive")
        bounded_option(a.deadtime, 2 * a.keepalive, 3600, "deadtime")
        bounded_option(a.margin, 0, 120, "margin")
        bounded_option(a.settle_timeout, 10, 3600, "settle-timeout")
    except ValueError as exc:
        ap.error(str(exc))
    if a.out_dir is None:
        a.out_dir = str(REPO / "out" / "bench" / time.strftime("soak-%Y%m%d-%H%M%S", time.gmtime()))
    return a


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = parse_args(argv)
    from director.lab.pair import ipvs_problem

    problem = ipvs_problem()
    if problem:
        log(f"cannot run: {problem} (run it in the VM: directord lab vm -- python bench/soak.py)")
        return 2
    Path(a.out_dir).mkdir(parents=True, exist_ok=True)
    if os.environ.get("DIRECTORD_IN_VM") == "1" and "--out-dir" not in argv:
        log("warning: results under the checkout vanish with the guest; pass --out-dir inside `lab vm --out`")
    soak = Soak(a)
    try:
        summary = soak.run()
        table = render(summary)
        soak.write(summary, table)
    finally:
        soak.close()
    print(table)
    log(f"results in {a.out_dir}")
    return 0 if verdict_ok(summary) else 1


if __name__ == "__main__":
    sys.exit(main())
