"""What the daemon gives the BGP service (`director.bgp`): each VIP's services and their real
servers in service, and the kernel switches of the bgp mode, set at start with their previous
values recorded in the state directory, and put back at stop (pure decisions tested byte for
byte; the I/O with fakes of /proc/sys, and through the real /proc/sys of a fresh network
namespace)."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Collection

import pytest
from netnsprobe import netns_problem, netns_skip

from director.bgp import (
    BGP_SYSCTLS,
    SYSCTL_FILE,
    SysctlRecordError,
    SysctlRestore,
    load_sysctl_record,
    originals_to_record,
    parse_sysctl_record,
    plan_restore,
    prepare_sysctls,
    render_sysctl_record,
    restore_sysctls,
    vip_health,
)
from director.model import Config, DestKey, RealServer, ServiceKey, VirtualService
from ha.bgp.model import BgpConfig, Neighbor, VipAnnouncement
from ha.bgp.policy import ServiceHealth

VIP, OTHER = "192.0.2.10", "192.0.2.20"


def service(name: str, address: str, port: int, rips: list[str]) -> VirtualService:
    key = ServiceKey(socket.AF_INET, socket.IPPROTO_TCP, address, port)
    return VirtualService(name, key, scheduler="mh", real_servers=tuple(RealServer(r, port) for r in rips))


def test_vip_health_counts_up_and_enabled_real_servers_per_service() -> None:
    web = service("web", VIP, 80, ["10.0.0.1", "10.0.0.2", "10.0.0.3"])
    tls = service("tls", VIP, 443, ["10.0.0.1", "10.0.0.2"])
    other = service("other", OTHER, 80, ["10.0.0.9"])
    config = Config(path="x.yaml", services=(web, tls, other))
    bgp = BgpConfig(65001, (Neighbor("10.0.1.1", 65000, "r1"),), (VipAnnouncement(VIP), VipAnnouncement("192.0.2.99")))
    up = {(web.key, web.real_servers[0].key), (web.key, web.real_servers[1].key), (tls.key, tls.real_servers[1].key)}

    unknown = {(web.key, web.real_servers[2].key), (other.key, other.real_servers[0].key)}

    def health(s: ServiceKey, d: DestKey) -> str:
        return "up" if (s, d) in up else "unknown" if (s, d) in unknown else "down"

    def admin(svc: VirtualService) -> dict[DestKey, str]:
        return {svc.real_servers[1].key: "drain"} if svc.name == "web" else {}

    got = vip_health(config, bgp, health, admin, lambda key: key.port == 80)  # type: ignore[arg-type]
    assert got == {
        VIP: (ServiceHealth("web", True, 1, 3, unknown=1), ServiceHealth("tls", False, 1, 2)),
        "192.0.2.99": (),
    }


ARP_IGNORE, ARP_ANNOUNCE = "net/ipv4/conf/all/arp_ignore", "net/ipv4/conf/all/arp_announce"
SLOPPY_TCP, SLOPPY_SCTP = "net/ipv4/vs/sloppy_tcp", "net/ipv4/vs/sloppy_sctp"
REUSE, EXPIRE = "net/ipv4/vs/conn_reuse_mode", "net/ipv4/vs/expire_nodest_conn"


def proc_keys() -> list[str]:
    return [key for key, _ in BGP_SYSCTLS]


class FakeProcSys:
    """/proc/sys for `prepare_sysctls` and `restore_sysctls`: a key absent from ``values`` does
    not exist, except conn_reuse_mode and expire_nodest_conn, already at the bgp mode's values
    unless ``values`` says otherwise; a key in ``refuse`` cannot be written (read-only
    /proc/sys)."""

    def __init__(self, values: dict[str, str], refuse: Collection[str] = ()) -> None:
        self.values = {REUSE: "3", EXPIRE: "1"} | dict(values)
        self.refuse = set(refuse)
        self.written: list[tuple[str, object]] = []

    def read(self, key: str) -> str:
        if key not in self.values:
            raise FileNotFoundError(2, "No such file or directory", key)
        return self.values[key]

    def write(self, key: str, value: object) -> None:
        if key not in self.values:
            raise FileNotFoundError(2, "No such file or directory", key)
        if key in self.refuse:
            raise OSError(30, "Read-only file system")
        self.written.append((key, value))
        self.values[key] = str(value)


def test_the_switches_are_the_six_of_the_bgp_mode() -> None:
    assert BGP_SYSCTLS == (
        (ARP_IGNORE, "1"),
        (ARP_ANNOUNCE, "2"),
        (SLOPPY_TCP, "1"),
        (SLOPPY_SCTP, "1"),
        (REUSE, "3"),
        (EXPIRE, "1"),
    )


def test_a_reused_client_port_is_scheduled_afresh(tmp_path) -> None:
    # the kernel's defaults (conn_reuse_mode 1, expire_nodest_conn 0) are changed and recorded
    proc = FakeProcSys(dict(BGP_SYSCTLS) | {REUSE: "1", EXPIRE: "0"})
    assert prepare_sysctls(str(tmp_path), proc.read, proc.write) == []
    assert proc.written == [(REUSE, "3"), (EXPIRE, "1")]
    assert load_sysctl_record(str(tmp_path)) == {REUSE: "1", EXPIRE: "0"}


def test_prepare_sysctls_sets_what_differs_and_reports_what_it_cannot(tmp_path) -> None:
    proc = FakeProcSys({ARP_IGNORE: "0", ARP_ANNOUNCE: "2", SLOPPY_TCP: "0"}, refuse={SLOPPY_TCP})
    problems = prepare_sysctls(str(tmp_path), proc.read, proc.write)
    assert proc.written == [(ARP_IGNORE, "1")]
    assert problems == [
        "cannot set net.ipv4.vs.sloppy_tcp=1: Read-only file system; "
        "add 'net.ipv4.vs.sloppy_tcp = 1' to /etc/sysctl.d/directord-bgp.conf",
        "net.ipv4.vs.sloppy_sctp does not exist (is ip_vs loaded?)",
    ]
    # recorded: what was changed, with its previous value; not sloppy_tcp, which stayed as it was
    record = tmp_path / SYSCTL_FILE
    assert record.read_bytes() == b'{\n  "sysctls": {\n    "net/ipv4/conf/all/arp_ignore": "0"\n  }\n}\n'
    assert record.stat().st_mode & 0o777 == 0o600


def test_prepare_sysctls_records_before_it_writes(tmp_path) -> None:
    seen: list[object] = []
    proc = FakeProcSys({ARP_IGNORE: "0", ARP_ANNOUNCE: "0", SLOPPY_TCP: "1", SLOPPY_SCTP: "0"})

    def write(key: str, value: object) -> None:
        seen.append(load_sysctl_record(str(tmp_path)))
        proc.write(key, value)

    assert prepare_sysctls(str(tmp_path), proc.read, write) == []
    originals = {ARP_IGNORE: "0", ARP_ANNOUNCE: "0", SLOPPY_SCTP: "0"}
    assert seen == [originals] * 3
    assert proc.written == [(ARP_IGNORE, "1"), (ARP_ANNOUNCE, "2"), (SLOPPY_SCTP, "1")]
    assert load_sysctl_record(str(tmp_path)) == originals


def test_prepare_sysctls_writes_no_file_when_nothing_changes(tmp_path) -> None:
    proc = FakeProcSys(dict(BGP_SYSCTLS))
    assert prepare_sysctls(str(tmp_path), proc.read, proc.write) == []
    assert proc.written == [] and os.listdir(tmp_path) == []


def test_after_a_crash_prepare_keeps_the_recorded_originals_and_adds_what_is_missing(tmp_path) -> None:
    # the last run set arp_ignore and arp_announce and died; an operator has reset arp_announce since
    (tmp_path / SYSCTL_FILE).write_bytes(render_sysctl_record({ARP_IGNORE: "0", ARP_ANNOUNCE: "1"}))
    proc = FakeProcSys({ARP_IGNORE: "1", ARP_ANNOUNCE: "1", SLOPPY_TCP: "0", SLOPPY_SCTP: "1"})
    assert prepare_sysctls(str(tmp_path), proc.read, proc.write) == []
    assert proc.written == [(ARP_ANNOUNCE, "2"), (SLOPPY_TCP, "1")]
    assert load_sysctl_record(str(tmp_path)) == {ARP_IGNORE: "0", ARP_ANNOUNCE: "1", SLOPPY_TCP: "0"}


def test_prepare_sysctls_ignores_a_bad_record_and_leaves_it_alone(tmp_path) -> None:
    record = tmp_path / SYSCTL_FILE
    record.write_bytes(b'{"sysctls": {"kernel/core_pattern": "|/tmp/x"}}')
    proc = FakeProcSys({ARP_IGNORE: "0", ARP_ANNOUNCE: "2", SLOPPY_TCP: "1", SLOPPY_SCTP: "1"})
    problems = prepare_sysctls(str(tmp_path), proc.read, proc.write)
    assert problems == [
        f"{record}: unknown key 'kernel/core_pattern' (known: {', '.join(k for k, _ in BGP_SYSCTLS)}): "
        "ignored (fix or remove it); the switches set now will not be undone at stop"
    ]
    assert proc.written == [(ARP_IGNORE, "1")]  # the director still gets its switches
    assert record.read_bytes() == b'{"sysctls": {"kernel/core_pattern": "|/tmp/x"}}'


def test_prepare_sysctls_sets_the_switches_when_the_record_cannot_be_written(tmp_path) -> None:
    missing = tmp_path / "missing"
    proc = FakeProcSys({ARP_IGNORE: "0", ARP_ANNOUNCE: "2", SLOPPY_TCP: "1", SLOPPY_SCTP: "1"})
    problems = prepare_sysctls(str(missing), proc.read, proc.write)
    assert problems == [
        f"cannot record the switches' previous values in {missing / SYSCTL_FILE}: No such file or directory; "
        "they will not be undone at stop"
    ]
    assert proc.written == [(ARP_IGNORE, "1")]


def test_prepare_sysctls_takes_out_of_the_record_what_it_could_not_set(tmp_path) -> None:
    proc = FakeProcSys(dict.fromkeys((ARP_IGNORE, ARP_ANNOUNCE, SLOPPY_TCP, SLOPPY_SCTP), "0"), refuse=proc_keys())
    problems = prepare_sysctls(str(tmp_path), proc.read, proc.write)
    assert len(problems) == 4 and all(p.startswith("cannot set ") for p in problems)
    assert os.listdir(tmp_path) == []
    # what a crash left stays recorded even when it cannot be set now
    (tmp_path / SYSCTL_FILE).write_bytes(render_sysctl_record({ARP_IGNORE: "2"}))
    prepare_sysctls(str(tmp_path), proc.read, proc.write)
    assert load_sysctl_record(str(tmp_path)) == {ARP_IGNORE: "2"}


def test_render_sysctl_record_byte_for_byte() -> None:
    assert render_sysctl_record({ARP_ANNOUNCE: "0", SLOPPY_TCP: "-1"}) == (
        b'{\n  "sysctls": {\n    "net/ipv4/conf/all/arp_announce": "0",\n    "net/ipv4/vs/sloppy_tcp": "-1"\n  }\n}\n'
    )
    assert render_sysctl_record({}) == b'{\n  "sysctls": {}\n}\n'


def test_parse_sysctl_record_gives_the_values_in_the_switches_order() -> None:
    data = b'{"sysctls": {"net/ipv4/vs/sloppy_sctp": "0", "net/ipv4/conf/all/arp_ignore": "2"}}'
    got = parse_sysctl_record(data)
    assert list(got.items()) == [(ARP_IGNORE, "2"), (SLOPPY_SCTP, "0")]
    assert parse_sysctl_record(render_sysctl_record(got)) == got
    assert parse_sysctl_record(b'{"sysctls": {}}') == {}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not JSON: Expecting value: line 1 column 1 (char 0)"),
        (b"\xff", "not JSON: 'utf-8' codec can't decode byte 0xff in position 0: invalid start byte"),
        (b"[" * 4000 + b"]" * 4000, "not JSON: nested too deep"),
        (b"[]", 'expected {"sysctls": {KEY: VALUE, ...}}'),
        (b'{"sysctls": []}', 'expected {"sysctls": {KEY: VALUE, ...}}'),
        (b'{"sysctls": {}, "more": 1}', 'expected {"sysctls": {KEY: VALUE, ...}}'),
        (
            b'{"sysctls": {"net/ipv4/conf/../../../kernel/x": "1"}}',
            "unknown key 'net/ipv4/conf/../../../kernel/x' (known: net/ipv4/conf/all/arp_ignore, "
            "net/ipv4/conf/all/arp_announce, net/ipv4/vs/sloppy_tcp, net/ipv4/vs/sloppy_sctp, "
            "net/ipv4/vs/conn_reuse_mode, net/ipv4/vs/expire_nodest_conn)",
        ),
        (
            b'{"sysctls": {"net/ipv4/vs/sloppy_tcp": 0}}',
            "the value of net/ipv4/vs/sloppy_tcp is not an integer as text: 0",
        ),
        (
            b'{"sysctls": {"net/ipv4/vs/sloppy_tcp": "0\\n1"}}',
            "the value of net/ipv4/vs/sloppy_tcp is not an integer as text: '0\\n1'",
        ),
        (
            b'{"sysctls": {"net/ipv4/vs/sloppy_tcp": "' + b"1" * 21 + b'"}}',
            f"the value of net/ipv4/vs/sloppy_tcp is not an integer as text: '{'1' * 21}'",
        ),
    ],
)
def test_parse_sysctl_record_refuses_what_directord_does_not_write(data: bytes, reason: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_sysctl_record(data)
    assert str(err.value) == reason


def test_originals_to_record_adds_only_switches_about_to_change_for_the_first_time() -> None:
    current = {ARP_IGNORE: "1", ARP_ANNOUNCE: "0", SLOPPY_TCP: None}  # sloppy_sctp unreadable: left out
    assert originals_to_record({}, current) == {ARP_ANNOUNCE: "0"}
    # recorded values are kept even where the switch now has directord's value (a crash)
    assert originals_to_record({ARP_IGNORE: "0", SLOPPY_TCP: "0"}, current) == {
        ARP_IGNORE: "0",
        SLOPPY_TCP: "0",
        ARP_ANNOUNCE: "0",
    }
    assert originals_to_record({ARP_ANNOUNCE: "1"}, current) == {ARP_ANNOUNCE: "1"}


def test_plan_restore_writes_back_where_the_switch_still_has_directords_value() -> None:
    originals = {ARP_IGNORE: "0", ARP_ANNOUNCE: "1", SLOPPY_TCP: "0", SLOPPY_SCTP: "0"}
    current = {ARP_IGNORE: "1", ARP_ANNOUNCE: "2", SLOPPY_TCP: "1", SLOPPY_SCTP: "1"}
    assert plan_restore(originals, current) == SysctlRestore(
        ((ARP_IGNORE, "0"), (ARP_ANNOUNCE, "1"), (SLOPPY_TCP, "0"), (SLOPPY_SCTP, "0")), ()
    )


def test_plan_restore_leaves_what_is_gone_back_already_or_changed_by_someone_else() -> None:
    originals = {SLOPPY_SCTP: "0", ARP_IGNORE: "0", ARP_ANNOUNCE: "1", SLOPPY_TCP: "0"}
    current = {ARP_IGNORE: "2", ARP_ANNOUNCE: "1", SLOPPY_TCP: None}  # sloppy_sctp unreadable: left out
    assert plan_restore(originals, current) == SysctlRestore(
        (),
        (
            "net.ipv4.conf.all.arp_ignore is 2, not the 1 directord set: left as it is (it was 0)",
            "net.ipv4.vs.sloppy_tcp does not exist any more: not restored to 0",
        ),
    )
    assert plan_restore({}, current) == SysctlRestore((), ())


def test_load_sysctl_record_absent_is_none_and_a_bad_file_names_itself(tmp_path) -> None:
    assert load_sysctl_record(str(tmp_path)) is None
    record = tmp_path / SYSCTL_FILE
    record.write_bytes(b"{" + b" " * 5000 + b"}")
    with pytest.raises(SysctlRecordError) as err:
        load_sysctl_record(str(tmp_path))
    assert str(err.value) == f"{record}: too large: 5002 bytes, the limit is 4 KiB"
    record.unlink()
    os.mkfifo(record)
    with pytest.raises(SysctlRecordError) as err:
        load_sysctl_record(str(tmp_path))
    assert str(err.value) == f"{record}: not a regular file but a FIFO (named pipe)"
    record.unlink()
    record.write_bytes(b'{"drained": true}')
    with pytest.raises(SysctlRecordError) as err:
        load_sysctl_record(str(tmp_path))
    assert str(err.value) == f'{record}: expected {{"sysctls": {{KEY: VALUE, ...}}}}'


def test_restore_sysctls_writes_back_logs_and_removes_the_record(tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, "directord.bgp")
    proc = FakeProcSys({ARP_IGNORE: "0", ARP_ANNOUNCE: "1", SLOPPY_TCP: "0"})
    prepare_sysctls(str(tmp_path), proc.read, proc.write)
    assert proc.values == {ARP_IGNORE: "1", ARP_ANNOUNCE: "2", SLOPPY_TCP: "1", REUSE: "3", EXPIRE: "1"}
    proc.written.clear()
    restore_sysctls(str(tmp_path), proc.read, proc.write)
    assert proc.written == [(ARP_IGNORE, "0"), (ARP_ANNOUNCE, "1"), (SLOPPY_TCP, "0")]
    assert proc.values == {ARP_IGNORE: "0", ARP_ANNOUNCE: "1", SLOPPY_TCP: "0", REUSE: "3", EXPIRE: "1"}
    assert os.listdir(tmp_path) == []
    assert [r.getMessage() for r in caplog.records] == [
        "bgp: restored net.ipv4.conf.all.arp_ignore=0",
        "bgp: restored net.ipv4.conf.all.arp_announce=1",
        "bgp: restored net.ipv4.vs.sloppy_tcp=0",
    ]
    proc.written.clear()
    restore_sysctls(str(tmp_path), proc.read, proc.write)  # no record: nothing to do
    assert proc.written == []


def test_a_switch_that_cannot_be_restored_is_logged_by_name_and_the_others_go_on(tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, "directord.bgp")
    originals = {ARP_IGNORE: "0", ARP_ANNOUNCE: "1", SLOPPY_TCP: "0", SLOPPY_SCTP: "0"}
    (tmp_path / SYSCTL_FILE).write_bytes(render_sysctl_record(originals))
    proc = FakeProcSys({ARP_IGNORE: "1", ARP_ANNOUNCE: "2", SLOPPY_TCP: "1"}, refuse={ARP_IGNORE})
    restore_sysctls(str(tmp_path), proc.read, proc.write)
    assert proc.written == [(ARP_ANNOUNCE, "1"), (SLOPPY_TCP, "0")]
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "bgp: net.ipv4.vs.sloppy_sctp does not exist any more: not restored to 0"),
        ("ERROR", "bgp: cannot restore net.ipv4.conf.all.arp_ignore=0: Read-only file system"),
        ("INFO", "bgp: restored net.ipv4.conf.all.arp_announce=1"),
        ("INFO", "bgp: restored net.ipv4.vs.sloppy_tcp=0"),
    ]
    # kept for the next stop (and the next start keeps it as the original)
    assert load_sysctl_record(str(tmp_path)) == {ARP_IGNORE: "0"}


def test_restore_sysctls_ignores_a_bad_record_with_a_line_naming_it(tmp_path, caplog) -> None:
    record = tmp_path / SYSCTL_FILE
    record.write_bytes(b"not json")
    proc = FakeProcSys({ARP_IGNORE: "1"})
    restore_sysctls(str(tmp_path), proc.read, proc.write)
    assert proc.written == [] and record.read_bytes() == b"not json"
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "ERROR",
            f"bgp: {record}: not JSON: Expecting value: line 1 column 1 (char 0): ignored (fix or remove it); "
            "no kernel switch is restored",
        )
    ]


PREFIX = f"tbs{os.getpid()}"


@netns_skip(netns_problem(PREFIX))
def test_the_switches_round_trip_through_proc_sys_in_a_fresh_namespace(tmp_path) -> None:
    from director.lab.netns import call_in_netns, create_netns, delete_netns
    from director.sysctl import read_sysctl, write_sysctl

    ns = f"{PREFIX}-sw"
    host = read_sysctl(ARP_IGNORE), read_sysctl(ARP_ANNOUNCE)
    create_netns(ns)
    try:

        def values() -> dict[str, str | None]:
            found: dict[str, str | None] = {}
            for key, _ in BGP_SYSCTLS:
                try:
                    found[key] = read_sysctl(key)
                except FileNotFoundError:
                    found[key] = None  # net/ipv4/vs/* without ip_vs
            return found

        def setup() -> None:  # values other than directord's and than the kernel's defaults
            write_sysctl(ARP_IGNORE, 2)
            write_sysctl(ARP_ANNOUNCE, 1)
            for key in (SLOPPY_TCP, SLOPPY_SCTP):
                if os.path.exists(f"/proc/sys/{key}"):
                    write_sysctl(key, 0)

        call_in_netns(ns, setup)
        before = call_in_netns(ns, values)
        present = {key for key, value in before.items() if value is not None}
        assert before[ARP_IGNORE] == "2" and before[ARP_ANNOUNCE] == "1"
        problems = call_in_netns(ns, prepare_sysctls, str(tmp_path))
        assert problems == [
            f"{key.replace('/', '.')} does not exist (is ip_vs loaded?)" for key in proc_keys() if key not in present
        ]
        assert call_in_netns(ns, values) == {k: (v if k in present else None) for k, v in BGP_SYSCTLS}
        assert (read_sysctl(ARP_IGNORE), read_sysctl(ARP_ANNOUNCE)) == host  # the host's are untouched
        recorded = {key: before[key] for key in proc_keys() if key in present}
        assert load_sysctl_record(str(tmp_path)) == recorded

        # a crash and a start again: the record keeps the originals, not directord's values
        assert call_in_netns(ns, prepare_sysctls, str(tmp_path)) == problems
        assert load_sysctl_record(str(tmp_path)) == recorded

        call_in_netns(ns, restore_sysctls, str(tmp_path))
        assert call_in_netns(ns, values) == before
        assert not (tmp_path / SYSCTL_FILE).exists()
    finally:
        delete_netns(ns)
