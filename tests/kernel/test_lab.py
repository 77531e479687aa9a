"""Smoke tests of the namespace lab with real IPVS (run inside the stock-kernel VM).

They prove the VM runner and the lab together: a virtual service programmed
with ``ipvsadm`` in the director's namespace spreads client connections over
the real servers, with the forwarding method each lab mode prepares.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

pytestmark = pytest.mark.kernel


def program_rr(lab, method_flag: str, weight: int = 1) -> None:
    """One rr virtual service on VIP:80 with every real server (``-g``/``-m``/``-i``)."""
    vs = f"{lab.vip}:{lab.http_port}"
    rules = [f"-A -t {vs} -s rr"]
    rules += [f"-a -t {vs} -r {rip}:{lab.http_port} {method_flag} -w {weight}" for rip in lab.rips]
    lab.exec(lab.director, ["ipvsadm", "-R"], input="\n".join(rules) + "\n")


def stats(lab) -> dict[str, tuple[int, int, int]]:
    """``ipvsadm -Ln --stats --exact``: address:port -> (conns, in_pkts, out_pkts)."""
    out = lab.exec(lab.director, ["ipvsadm", "-Ln", "--stats", "--exact"]).stdout
    result = {}
    for line in out.splitlines():
        f = line.split()
        if len(f) >= 6 and f[0] in ("TCP", "UDP", "->") and f[2].isdigit():
            result[f[1]] = (int(f[2]), int(f[3]), int(f[4]))
    return result


def stats_when(lab, key: str, conns: int, timeout: float = 20.0) -> tuple[int, int, int]:
    """Poll the stats of ``key`` until its connection count is ``conns``.

    The 6.1 kernel copies its per-CPU counters into the figures ipvsadm reads
    only from the rate estimator's timer (every 2 s), so they lag.
    """
    deadline = time.monotonic() + timeout
    while True:
        st = stats(lab).get(key)
        if (st and st[0] == conns) or time.monotonic() > deadline:
            return st
        time.sleep(0.5)


def fetch_counts(lab, n: int) -> Counter:
    bodies = Counter()
    for _ in range(n):
        status, body = lab.get("/", timeout=5.0)
        assert status == 200
        bodies[body.strip()] += 1
    return bodies


def test_dr_round_robin_spreads_over_real_servers(lab):
    try:
        program_rr(lab, "-g")
        listing = lab.exec(lab.director, ["ipvsadm", "-Ln"]).stdout
        for rip in lab.rips:
            assert any(rip in line and "Route" in line for line in listing.splitlines()), listing

        counts = fetch_counts(lab, 30)

        # rr hands out new connections in turn: 30 connections, 3 real servers.
        assert counts == Counter({"rs1": 10, "rs2": 10, "rs3": 10})
        service = stats_when(lab, f"{lab.vip}:{lab.http_port}", 30)
        assert service[0] == 30
        # Direct routing: replies go from the real servers straight to the
        # client, the director never sees an outgoing packet.
        assert service[1] > 0 and service[2] == 0
        st = stats(lab)
        for rip in lab.rips:
            assert st[f"{rip}:{lab.http_port}"][0] == 10
    finally:
        lab.exec(lab.director, ["ipvsadm", "-C"])


def test_nat_lab_replies_through_director(lab_factory):
    lab = lab_factory(mode="nat", real_servers=2)
    # The client has no route to the inside subnet: only the VIP reaches the real servers.
    with pytest.raises(OSError):
        lab.get("/", addr=lab.rip("rs1"), timeout=1.0)
    program_rr(lab, "-m")
    counts = fetch_counts(lab, 6)
    assert counts == Counter({"rs1": 3, "rs2": 3})
    conns, in_pkts, out_pkts = stats_when(lab, f"{lab.vip}:{lab.http_port}", 6)
    assert conns == 6 and in_pkts > 0 and out_pkts > 0  # masquerading: replies pass the director


def test_tun_lab_decapsulates_on_real_servers(lab_factory):
    lab = lab_factory(mode="tun", real_servers=2)
    program_rr(lab, "-i")
    counts = fetch_counts(lab, 6)
    assert counts == Counter({"rs1": 3, "rs2": 3})
    conns, in_pkts, out_pkts = stats_when(lab, f"{lab.vip}:{lab.http_port}", 6)
    assert conns == 6 and in_pkts > 0 and out_pkts == 0
    listing = lab.exec(lab.director, ["ipvsadm", "-Ln"]).stdout
    assert listing.count("Tunnel") == 2, listing


def test_lab_up_status_drill_down_with_bonded_uplinks(tmp_path, capsys):
    """`directord lab up --bond` persists (state file, processes found again by a later command),
    `lab status` shows the holder and both IPVS tables, `lab drill` runs on that lab and leaves it
    up, `lab down` removes everything. The bonded takeover is announced on the bond and on
    each slave: the client sees every frame of a round three times."""
    import json
    import os
    import subprocess
    import sys

    from director.lab.drill import run_drill
    from director.lab.netns import list_netns
    from director.lab.pair import PairLab, PairOptions, state_file

    prefix = f"kb{os.getpid()}"
    cli = [sys.executable, "-m", "director.cli", "lab"]
    try:
        up = subprocess.run(
            cli + ["up", "--bond", "--real-servers", "2", "--prefix", prefix],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert up.returncode == 0, up.stdout + up.stderr
        assert "media: [bcast eth1]" in up.stdout and "10.77.0.100/32/bond0" in up.stdout
        assert state_file(prefix).exists()
        st = subprocess.run(cli + ["status", "--json", "--prefix", prefix], capture_output=True, text=True, timeout=300)
        assert st.returncode == 0, st.stdout + st.stderr
        doc = json.loads(st.stdout)
        assert doc["holders"] == ["dir1"]
        assert all(doc["daemons"][n] for n in ("dir1", "dir2"))
        for node in ("dir1", "dir2"):
            assert "10.77.0.100:80" in doc["ipvs"][node] and doc["ipvs"][node].count("Route") == 2
        assert f"{prefix}-rs2" in doc["namespaces"]

        status = run_drill(
            "fail-active", options=PairOptions(prefix=prefix, real_servers=2, bond=True), rate=30, as_json=True
        )
        report = json.loads(capsys.readouterr().out)
        from director.lab.verdict import render

        print(render(report))
        verdicts = {c["name"]: c for c in report["checks"]}
        # The takeover itself must hold on bonded uplinks. Whether requests still fail after the
        # first post-takeover success depends on MAC learning across the two independent leaf
        # switches (balance-xor without switch support); it is reported, not asserted here.
        for name in ("runner", "settled", "final holder", "one holder", "VIP moved", "longest gap"):
            assert verdicts[name]["ok"], (verdicts[name], render(report))
        assert status in (0, 1)
        fault = report["fault_t"]
        garps = [e for e in report["timeline"] if e["kind"] == "announce" and "(dir2)" in e["text"] and e["t"] >= fault]
        assert garps, report["timeline"]
        first_round = [e for e in garps if e["t"] - garps[0]["t"] < 0.5]
        # one gratuitous ARP pair on the bond and one on each slave: at least 3 pairs in the first round
        # (without the slaves a round is one burst on the bond: fewer than 6 frames)
        assert len(first_round) >= 6, first_round
        assert PairLab.exists(prefix)  # the drill used the lab and left it up, restored
        pair = PairLab.attach(prefix)
        assert pair.holders() == ("dir1",)
    finally:
        down = subprocess.run(cli + ["down", "--prefix", prefix], capture_output=True, text=True, timeout=300)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not state_file(prefix).exists()
    assert not [n for n in list_netns() if n.startswith(prefix + "-")]
