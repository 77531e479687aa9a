"""Pure parts of bench/incumbents.py: configuration generators for the incumbents and
directord, the /proc/net/ip_vs parser and the result aggregation."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import incumbents as inc  # noqa: E402

from director.lab.scenarios import Sample  # noqa: E402

SVC = inc.Service("10.78.0.100", 80, ("10.78.1.11", "10.78.1.12"), "nat")


def test_master_down_interval_rfc5798():
    # 3 x advert_int + (256 - priority) / 256 x advert_int
    assert inc.master_down_interval(1.0, 100) == pytest.approx(3.609375)
    assert inc.master_down_interval(0.2, 100) == pytest.approx(0.721875)
    assert inc.master_down_interval(1.0, 254) == pytest.approx(3 + 2 / 256)
    with pytest.raises(ValueError):
        inc.master_down_interval(1.0, 255)
    with pytest.raises(ValueError):
        inc.master_down_interval(0, 100)


def test_keepalived_conf_vrrp_version_follows_advert_int():
    vrrp = {
        "state": "BACKUP",
        "interface": "eth0",
        "vrid": 51,
        "priority": 100,
        "advert_int": 0.2,
        "vip": "10.77.0.100",
    }
    text = inc.keepalived_conf(router_id="dir2", vrrp=vrrp)
    assert "advert_int 0.2\n" in text and "version 3\n" in text
    assert "10.77.0.100/32 dev eth0" in text and "virtual_server" not in text
    text1 = inc.keepalived_conf(router_id="dir2", vrrp={**vrrp, "advert_int": 1})
    assert "version 2\n" in text1 and "advert_int 1\n" in text1
    assert text.count("{") == text.count("}")


def test_keepalived_conf_checker_defaults_omitted_and_tuned_written():
    default = inc.keepalived_conf(router_id="d", service=SVC)
    assert "lb_kind NAT" in default and default.count("HTTP_GET") == 2
    for key in ("delay_loop", "connect_timeout", "retry", "delay_before_retry"):
        assert key not in default
    tuned = inc.keepalived_conf(
        router_id="d", service=SVC, delay_loop=1, connect_timeout=1, retry=1, delay_before_retry=0.5
    )
    assert "delay_loop 1\n" in tuned and tuned.count("delay_before_retry 0.5") == 2
    assert "real_server 10.78.1.12 80 {" in tuned
    assert tuned.count("{") == tuned.count("}")


def test_ldirectord_cf():
    default = inc.ldirectord_cf(SVC)
    assert "checkinterval" not in default and "checktimeout" not in default
    assert "\treal=10.78.1.11:80 masq\n" in default and "virtual=10.78.0.100:80\n" in default
    assert 'request="healthz"' in default and "quiescent=no" in default
    tuned = inc.ldirectord_cf(inc.Service("10.77.0.100", 80, ("10.77.0.21",), "dr"), checkinterval=1, checktimeout=1)
    assert tuned.startswith("checkinterval=1\nchecktimeout=1\n")
    assert "real=10.77.0.21:80 gate" in tuned


def test_heartbeat_files():
    cf = inc.heartbeat_ha_cf(["dir1", "dir2"], "eth1", keepalive=0.2, deadtime=1, initdead=12)
    assert cf.splitlines()[:3] == ["keepalive 200ms", "deadtime 1", "initdead 12"]
    assert "bcast eth1" in cf and "node dir1" in cf and "node dir2" in cf and "auto_failback on" in cf
    defaults = inc.heartbeat_ha_cf(["a", "b"], "eth1")
    assert "keepalive" not in defaults and "deadtime" not in defaults
    assert inc.heartbeat_haresources("dir1", "10.77.0.100", 32, "eth0") == "dir1 IPaddr::10.77.0.100/32/eth0\n"


def test_directord_conf_loads(tmp_path):
    from director.config import load_config  # the project's loader

    keys = tmp_path / "authkeys"
    keys.write_text("auth 1\n1 sha1 abc\n")
    keys.chmod(0o600)
    single = tmp_path / "single.yaml"
    single.write_text(inc.directord_conf(SVC, check={"interval": 2}))
    cfg = load_config(str(single))
    assert cfg is not None
    ha = tmp_path / "ha.yaml"
    text = inc.directord_conf(
        SVC,
        ha={
            "node": "dir1",
            "nodes": ["dir1", "dir2"],
            "media": ["bcast eth1"],
            "authkeys": str(keys),
            "state_dir": str(tmp_path / "st"),
            "owner": "dir1",
            "address": "10.78.0.100/32/eth0",
            "keepalive": 1,
            "deadtime": 3.61,
        },
    )
    assert "deadtime: 3.61\n" in text and "keepalive: 1\n" in text and "warntime" not in text
    ha.write_text(text)
    assert load_config(str(ha)) is not None


PROC_IP_VS = """\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port Forward Weight ActiveConn InActConn
TCP  0A4E0064:0050 rr
  -> 0A4E010B:0050      Masq    1      0          3
  -> 0A4E010C:0050      Masq    0      0          0
FWM  00000001 wlc
  -> 0A4E010D:0050      Route   1      0          0
TCP  [fd00:0077:0000:0000:0000:0000:0000:0064]:0050 rr
  -> [fd00:0077:0000:0000:0000:0000:0000:0015]:0050      Route   1      0          0
"""


def test_parse_proc_ip_vs_and_dest_out():
    t = inc.parse_proc_ip_vs(PROC_IP_VS)
    assert t == {"10.78.0.100:80": {"10.78.1.11:80": 1, "10.78.1.12:80": 0}}
    assert not inc.dest_out(t, "10.78.0.100:80", "10.78.1.11:80")
    assert inc.dest_out(t, "10.78.0.100:80", "10.78.1.12:80")  # weight 0
    assert inc.dest_out(t, "10.78.0.100:80", "10.78.1.13:80")  # removed
    assert inc.dest_out({}, "10.78.0.100:80", "10.78.1.11:80")
    assert inc.parse_proc_ip_vs("") == {}


def test_last_error_end_and_gap():
    samples = [
        Sample(0.0, 0.01, True, "200"),
        Sample(1.0, 1.25, False, "TimeoutError"),
        Sample(1.3, 1.31, False, "ConnectionRefusedError"),
        Sample(2.0, 2.01, True, "200"),
        Sample(0.5, 0.6, False, "x"),
    ]
    assert inc.last_error_end(samples, 0.9) == pytest.approx(1.31)
    assert inc.last_error_end(samples, 1.5) is None
    gap, at = inc.longest_gap(samples, 0.9)
    assert gap == pytest.approx(2.0) and at == pytest.approx(0.01)


def test_stats_and_table():
    st = inc.stats([1.0, 3.0, None, 2.0])
    assert st == {"n": 3, "median": 2.0, "max": 3.0, "min": 1.0, "missing": 1}
    assert inc.stats([None])["median"] is None
    md = inc.markdown_table(["a", "b|c"], [[1, inc.fmt_s(None)], ["x", inc.fmt_s(1.234)]])
    assert md.splitlines() == ["| a | b\\|c |", "|---|---|", "| 1 | - |", "| x | 1.23 |"]


def test_copy_files_keeps_layout_and_skips_sockets(tmp_path):
    import socket as _socket

    src = inc.local_dir("test")
    try:
        (src / "dir1").mkdir()
        (src / "dir1" / "keepalived.conf").write_text("global_defs {}\n")
        s = _socket.socket(_socket.AF_UNIX)
        s.bind(str(src / "dir1" / "ctl.sock"))
        inc.copy_files(src, tmp_path / "keep")
        s.close()
        assert (tmp_path / "keep" / "dir1" / "keepalived.conf").read_text() == "global_defs {}\n"
        assert not (tmp_path / "keep" / "dir1" / "ctl.sock").exists()
    finally:
        import shutil

        shutil.rmtree(src)


def test_proc_stat_cpu_counts_user_sys_and_reaped_children():
    import check_cpu

    # proc(5): pid (comm) state ppid ... utime(14) stime(15) cutime(16) cstime(17); a comm with
    # spaces and a parenthesis must not shift the fields
    fields = ["S"] + ["0"] * 10 + ["300", "100", "50", "50"] + ["20", "0"]
    line = "1234 (python3 (x) y) " + " ".join(fields) + "\n"
    assert check_cpu.proc_cpu_seconds(line) == pytest.approx(500 / check_cpu.CLK_TCK)
    me = check_cpu.cpu_of([os.getpid(), 999999999])
    assert list(me) == [os.getpid()] and me[os.getpid()] > 0


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespace)")
def test_farm_counts_the_requests_it_receives():
    import socket
    import subprocess
    import time

    from director.lab import netns as N

    pre = f"bfarm{os.getpid()}"
    ns = f"{pre}-farm"
    N.cleanup_netns(pre)
    N.create_netns(ns)
    proc = None
    try:
        N.exec_in_netns(ns, ["ip", "link", "set", "lo", "up"])
        N.add_address(ns, "lo", "10.79.0.1/32")
        proc = N.run_in_netns(
            ns,
            [sys.executable, inc.__file__, "farm", "--port", "8080", "10.79.0.1"],
            stdout=subprocess.PIPE,
            text=True,
            env=inc.repo_env(),
        )
        assert proc.stdout.readline().startswith("listening")
        assert inc.farm_requests(ns) == 0

        def get() -> bytes:
            s = N.socket_in_netns(ns, socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.settimeout(5)
                s.connect(("10.79.0.1", 8080))
                s.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
                return s.recv(1024)
            finally:
                s.close()

        for _ in range(3):
            assert get().startswith(b"HTTP/1.0 200")
        s = N.socket_in_netns(ns, socket.AF_INET, socket.SOCK_STREAM)  # a connection without a request
        s.connect(("10.79.0.1", 8080))
        s.close()
        time.sleep(0.2)
        assert inc.farm_requests(ns) == 3
    finally:
        if proc is not None:
            proc.kill()
            proc.wait(5)
        N.cleanup_netns(pre)  # <pre>-*: the namespace itself


def test_setlink_batch_bytes():
    msg = inc.setlink_batch([7, 9], up=False, seq=5)
    # nlmsghdr: len 32, RTM_NEWLINK (16), NLM_F_REQUEST|NLM_F_ACK, seq, pid 0;
    # ifinfomsg: AF_UNSPEC, pad, type 0, index, flags 0 (down), change IFF_UP
    # fmt: off
    one = (bytes.fromhex("20000000" "1000" "0500" "05000000" "00000000")
           + bytes.fromhex("00" "00" "0000" "07000000" "00000000" "01000000"))
    # fmt: on
    # fmt: off
    two = (bytes.fromhex("20000000" "1000" "0500" "06000000" "00000000")
           + bytes.fromhex("00" "00" "0000" "09000000" "00000000" "01000000"))
    # fmt: on
    assert msg == one + two
    up = inc.setlink_batch([3], up=True)
    assert up[16 + 8 : 16 + 12] == bytes.fromhex("01000000")  # ifi_flags IFF_UP
    # pyroute2's own parser reads the same message
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

    m = ifinfmsg(one)
    m.decode()
    assert m["header"]["type"] == 16 and m["index"] == 7 and m["change"] == 1 and m["flags"] == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespace)")
def test_links_at_once_takes_both_links_down_and_up():
    import subprocess

    from director.lab import netns as N

    pre = f"blink{os.getpid()}"
    a, b = f"{pre}-a", f"{pre}-b"
    N.cleanup_netns(pre)
    try:
        N.create_netns(a)
        N.create_netns(b)
        N.add_veth(a, "eth0", b, "eth0")
        N.add_veth(a, "eth1", b, "eth1")
        for n in ("eth0", "eth1"):
            N.link_set(a, n, up=True)

        def up(name: str) -> bool:  # administratively up: IFF_UP among the link's flags
            out = subprocess.run(
                ["ip", "-n", a, "-o", "link", "show", name], capture_output=True, text=True, check=True
            ).stdout
            return "UP" in out.split("<", 1)[1].split(">", 1)[0].split(",")

        assert up("eth0") and up("eth1")
        inc.links_at_once(a, ("eth0", "eth1"), up=False)
        assert not up("eth0") and not up("eth1")
        inc.links_at_once(a, ("eth0", "eth1"), up=True)
        assert up("eth0") and up("eth1")
        with pytest.raises(OSError):
            inc.links_at_once(a, ("nope0",), up=False)
    finally:
        N.cleanup_netns(pre)


def test_process_roots_finds_the_parent_after_pid_wraparound():
    # directord 32710 forked its checker after the pid counter wrapped: the child has pid 535
    parents = {32710: 1, 535: 32710, 1227: 32710}
    assert inc.process_roots(sorted(parents), parents.get) == [32710]
    # keepalived: parent, VRRP and checker children; two unrelated daemons are both roots
    assert inc.process_roots([100, 101, 102], {100: 1, 101: 100, 102: 100}.get) == [100]
    assert inc.process_roots([7, 9], {7: 1, 9: 1}.get) == [7, 9]
    assert inc.process_roots([5], lambda _pid: None) == [5]  # gone meanwhile: still signalled


def test_missing_incumbents_names_each_missing_program_and_its_package(tmp_path):
    ka = tmp_path / "keepalived"  # absent
    hb = tmp_path / "heartbeat"
    hb.write_text("#!/bin/sh\n")
    hb.chmod(0o755)
    ipaddr = tmp_path / "IPaddr"
    ipaddr.write_text("#!/bin/sh\n")
    ipaddr.chmod(0o644)  # there, but not executable (not even for root)
    (tmp_path / "ldirectord").mkdir()  # a folder is no program
    needs = {
        "keepalived": ((str(ka), "keepalived"),),
        "heartbeat": ((str(hb), "heartbeat"), (str(ipaddr), "heartbeat")),
        "ldirectord": ((str(tmp_path / "ldirectord"), "ldirectord"),),
    }
    assert inc.missing_incumbents(["directord", "directord-eq1"], needs=needs) == []
    assert inc.missing_incumbents(["keepalived-1", "directord", "keepalived-0.2", "heartbeat"], needs=needs) == [
        f"{ka} is not installed (needed by keepalived-1, keepalived-0.2): apt-get install keepalived",
        f"{ipaddr} is not installed (needed by heartbeat): apt-get install heartbeat",
    ]
    assert inc.missing_incumbents(["ldirectord-tuned"], needs=needs) == [
        f"{tmp_path / 'ldirectord'} is not installed (needed by ldirectord-tuned): apt-get install ldirectord"
    ]
    ipaddr.chmod(0o755)
    assert inc.missing_incumbents(["heartbeat-0.2", "heartbeat"], needs=needs) == []


def test_every_incumbent_system_of_the_benchmarks_needs_its_program(tmp_path):
    import detection
    import failover_gap

    nowhere = {name: ((str(tmp_path / name), name),) for name in inc.INCUMBENTS}
    for system in (*failover_gap.SYSTEMS, *detection.SYSTEMS):
        missing = inc.missing_incumbents([system], needs=nowhere)
        if system.startswith("directord"):
            assert missing == []
        else:
            (line,) = missing
            assert line.endswith(f"apt-get install {system.split('-')[0]}")
    assert [p for p, _ in inc.INCUMBENTS["heartbeat"]] == [inc.HEARTBEAT, inc.HEARTBEAT_IPADDR]


@pytest.mark.parametrize("script, builder", [("failover_gap", "Bench"), ("detection", "Topo")])
def test_a_benchmark_refuses_a_missing_incumbent_before_building_anything(
    script, builder, tmp_path, monkeypatch, capsys
):
    import importlib

    mod = importlib.import_module(script)
    system = "keepalived-1" if script == "failover_gap" else "keepalived-tuned"

    def build(*args, **kwargs):
        raise AssertionError("the lab was built although keepalived is missing")

    monkeypatch.setattr(mod, builder, build)
    monkeypatch.setattr(mod, "OUT", mod.OUT)  # restored after the test
    monkeypatch.setitem(inc.INCUMBENTS, "keepalived", ((str(tmp_path / "keepalived"), "keepalived"),))
    assert mod.main(["--systems", "directord", system, "--out-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'keepalived'} is not installed (needed by {system}): apt-get install keepalived" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("system, package", [("keepalived", "keepalived"), ("ldirectord", "ldirectord")])
def test_check_cpu_refuses_a_missing_incumbent_at_once(system, package, tmp_path, monkeypatch, capsys):
    import check_cpu

    def build(*args, **kwargs):
        raise AssertionError(f"the lab was built although {system} is missing")

    monkeypatch.setattr(check_cpu.det, "Topo", build)
    monkeypatch.setitem(inc.INCUMBENTS, system, ((str(tmp_path / system), package),))
    assert check_cpu.main(["--systems", "directord", system, "--out-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / system} is not installed (needed by {system}): apt-get install {package}" in err
    assert not (tmp_path / "out").exists()
