"""Tests of `directord realserver prep|undo|status` (director.realserver, director.realserver.sysctl).

The first part drives the pure planner, the apply/rollback logic (through an
in-memory backend) and the persistence texts without any I/O. The second part
runs the real command (``ip netns exec <ns> python -m director.cli realserver
...``) inside network namespaces made here, and checks the result with
independent readers: pyroute2 for addresses, ``/proc/sys`` for sysctls.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from test_durable import record_syncs

from director import realserver as R
from director.lab import netns as N
from director.realserver import sysctl as S
from ha.vip import ADDR_PROTO, IFA_F_NODAD

REPO = Path(__file__).resolve().parents[2]
V4, V4B, V6 = "10.214.0.100", "10.214.0.101", "fd00:214::100"


def req(*vips, mode="dr", interfaces=(), director=None) -> R.Request:
    return R.Request(
        tuple(ipaddress.ip_address(v) for v in vips),
        mode,
        tuple(interfaces),
        None if director is None else ipaddress.ip_address(director),
    )


LINKS = (
    R.Link("lo", 1, loopback=True, noarp=True),
    R.Link("eth0", 2),
    R.Link("eth1", 3),
    R.Link("sit0", 4, up=False, noarp=True),
)


def conf(**values: str) -> dict[str, str]:
    """All managed sysctls of lo, all, eth0, eth1 at the kernel defaults (0, rp_filter 1), overridden
    by ``dev__name=value`` keywords."""
    out = {}
    for dev in ("all", "default", "lo", "eth0", "eth1"):
        for name in S.names():
            out[S.conf_key(dev, name)] = "1" if name == "rp_filter" else "0"
    for k, v in values.items():
        dev, name = k.split("__")
        out[S.conf_key(dev, name)] = v
    return out


def host(sysctls=None, addresses=(), links=LINKS, gateways=None, ipip="absent") -> R.HostState:
    return R.HostState(
        links, tuple(addresses), sysctls if sysctls is not None else conf(), gateways or {4: None, 6: None}, ipip
    )


def keys_of(changes, kind="sysctl"):
    return [c.target for c in changes if c.kind == kind]


# --- the table -------------------------------------------------------------------------------


def test_table_rows_per_mode():
    dr = [k for k, _ in S.wanted("dr", ["eth0", "eth1"])]
    assert dr == [
        "net/ipv4/conf/all/arp_ignore",
        "net/ipv4/conf/lo/arp_ignore",
        "net/ipv4/conf/eth0/arp_ignore",
        "net/ipv4/conf/eth1/arp_ignore",
        "net/ipv4/conf/all/arp_announce",
        "net/ipv4/conf/lo/arp_announce",
        "net/ipv4/conf/eth0/arp_announce",
        "net/ipv4/conf/eth1/arp_announce",
    ]
    tun = [k for k, _ in S.wanted("tun", ["eth0"])]
    assert tun[-2:] == ["net/ipv4/conf/all/rp_filter", "net/ipv4/conf/tunl0/rp_filter"]
    assert S.wanted("nat", ["eth0"]) == []
    assert S.names() == ("arp_ignore", "arp_announce", "rp_filter")


def test_display_form_of_keys_with_dotted_interfaces():
    key = S.conf_key("eth0.100", "arp_ignore")
    assert key == "net/ipv4/conf/eth0.100/arp_ignore"
    assert S.display_key(key) == "net.ipv4.conf.eth0/100.arp_ignore"
    assert S.path_key(S.display_key(key)) == key
    assert S.path_key(key) == key
    with pytest.raises(ValueError):
        S.conf_key("../x", "arp_ignore")


# --- input ------------------------------------------------------------------------------------


def test_parse_vip():
    assert R.parse_vip("10.0.0.1") == ipaddress.ip_address("10.0.0.1")
    assert R.parse_vip("10.0.0.1/32") == ipaddress.ip_address("10.0.0.1")
    assert R.parse_vip("fd00::1/128") == ipaddress.ip_address("fd00::1")
    for bad in ("foo", "", "10.0.0.0/24", "300.1.1.1", "fd00::/64"):
        with pytest.raises(ValueError):
            R.parse_vip(bad)


def parse(argv):
    from director.cli import build_parser

    return build_parser().parse_args(["realserver", *argv])


def parse_command_line(argv):
    """Parse a full ``directord ...`` command line (the program name first)."""
    from director.cli import build_parser

    assert os.path.basename(argv[0]) == "directord"
    return build_parser().parse_args(argv[1:])


def test_cli_collects_repeated_and_listed_vips():
    a = parse(["prep", "--vip", V4, V4B, "--vip", V6, "--interface", "eth0", "--interface", "eth1"])
    assert R.request_from_args(a) == req(V4, V4B, V6, interfaces=("eth0", "eth1"))
    assert a.func is R.cmd_prep and not a.dry_run and not a.persist


def test_cli_rejects_a_non_ip_vip(capsys):
    with pytest.raises(SystemExit) as e:
        parse(["prep", "--vip", "www.example.org"])
    assert e.value.code == 2
    assert "not an IP address: 'www.example.org'" in capsys.readouterr().err


# --- planning -----------------------------------------------------------------------------------


def test_dr_plan_sets_arp_sysctls_before_adding_the_vips():
    p = R.plan(req(V4, V6), host())
    assert not p.errors and not p.ready
    kinds = [c.kind for c in p.changes]
    assert kinds == ["sysctl"] * 8 + ["address", "address"]
    assert [c.target for c in p.changes[-2:]] == ["lo", "lo"]
    assert [(c.value, c.label) for c in p.changes[-2:]] == [(f"{V4}/32", "lo:dd"), (f"{V6}/128", None)]
    assert {c.target: c.value for c in p.changes if c.kind == "sysctl"} == {
        **{f"net/ipv4/conf/{d}/arp_ignore": "1" for d in ("all", "lo", "eth0", "eth1")},
        **{f"net/ipv4/conf/{d}/arp_announce": "2" for d in ("all", "lo", "eth0", "eth1")},
    }
    assert all(c.old == "0" for c in p.changes if c.kind == "sysctl")


def test_prepared_host_needs_nothing():
    done = conf(
        **{f"{d}__arp_ignore": "1" for d in ("all", "lo", "eth0", "eth1")},
        **{f"{d}__arp_announce": "2" for d in ("all", "lo", "eth0", "eth1")},
    )
    addrs = [R.Address("lo", V4, 32, "lo:dd", ADDR_PROTO), R.Address("lo", V6, 128, None, ADDR_PROTO)]
    p = R.plan(req(V4, V6), host(done, addrs))
    assert p.ready and p.changes == []
    assert all(i.present for i in p.items) and len(p.items) == 10


def test_accepted_values_are_left_alone():
    # arp_ignore 2 is stricter than 1 and accepted; arp_announce 1 is not enough
    p = R.plan(req(V4), host(conf(all__arp_ignore="2", all__arp_announce="1")))
    changed = keys_of(p.changes)
    assert "net/ipv4/conf/all/arp_ignore" not in changed
    assert "net/ipv4/conf/all/arp_announce" in changed
    item = next(i for i in p.items if i.what == "net.ipv4.conf.all.arp_announce")
    assert not item.present and "= 1, want 2" in item.detail


def test_ipv6_only_request_sets_no_arp_sysctl():
    p = R.plan(req(V6), host())
    assert [c.kind for c in p.changes] == ["address"]


def test_interface_option_narrows_the_arp_interfaces():
    p = R.plan(req(V4, interfaces=("eth1",)), host())
    devs = {k.split("/")[3] for k in keys_of(p.changes)}
    assert devs == {"all", "lo", "eth1"}
    p = R.plan(req(V4, interfaces=("eth9",)), host())
    assert p.errors == ("no such interface: eth9",)


def test_noarp_and_loopback_links_are_not_arp_interfaces():
    assert R.arp_interfaces(req(V4), host()) == ["eth0", "eth1"]


def test_vip_on_an_arp_interface_is_refused():
    p = R.plan(req(V4), host(addresses=[R.Address("eth0", V4, 24, "eth0")]))
    assert len(p.errors) == 1 and "configured on eth0" in p.errors[0] and "ARP" in p.errors[0]
    p = R.plan(req(V6), host(addresses=[R.Address("eth1", V6, 64)]))
    assert "neighbour solicitations" in p.errors[0]


def test_foreign_vip_on_lo_counts_as_present_but_not_ours():
    p = R.plan(req(V4), host(addresses=[R.Address("lo", V4, 32, "lo", 0)]))
    item = p.items[-1]
    assert item.present and item.change is None and "someone else" in item.detail
    # the same address with another prefix length is not the VIP /32
    p = R.plan(req(V4), host(addresses=[R.Address("lo", V4, 8, "lo", 0)]))
    assert p.changes[-1].kind == "address"


def test_ours_follows_the_ha_vip_marks():
    assert R.is_ours(R.Address("lo", V4, 32, "lo:dd"))
    assert not R.is_ours(R.Address("lo", V4, 32, "lo"))
    assert R.is_ours(R.Address("lo", V6, 128, None, ADDR_PROTO))
    assert not R.is_ours(R.Address("lo", V6, 128, None, 0))
    assert R.is_ours(R.Address("lo", V6, 128, None, 0), ifa_proto=False)


def test_dr_and_tun_need_a_vip():
    assert R.plan(req(), host()).errors == ("dr: give at least one --vip",)
    assert "tun: give at least one --vip" in R.plan(req(mode="tun"), host(ipip="module")).errors


def test_tun_without_ipip_is_refused_clearly():
    p = R.plan(req(V4, mode="tun"), host(ipip="absent"))
    assert R.KERNEL_LACKS_IPIP in p.errors
    assert "no ipip module" in R.KERNEL_LACKS_IPIP


def test_tun_with_loadable_ipip_loads_it_then_prepares_tunl0():
    p = R.plan(req(V4, mode="tun"), host(ipip="module"))
    assert not p.errors
    first = [(c.kind, c.target) for c in p.changes[:3]]
    assert first == [("module", "ipip"), ("tunnel", "tunl0"), ("link_up", "tunl0")]
    assert p.changes[-1] == R.Change("address", "tunl0", f"{V4}/32", None, "tunl0:dd")
    rp = {c.target: (c.value, c.old) for c in p.changes if c.target.endswith("rp_filter")}
    assert rp == {"net/ipv4/conf/all/rp_filter": ("0", "1"), "net/ipv4/conf/tunl0/rp_filter": ("0", None)}
    # tunl0 is IFF_NOARP: not an ARP interface
    assert "net/ipv4/conf/tunl0/arp_ignore" not in keys_of(p.changes)


def test_tun_with_tunl0_down_and_loose_rp_filter():
    links = LINKS + (R.Link("tunl0", 5, up=False, noarp=True),)
    sysctls = conf(all__rp_filter="2")
    sysctls[S.conf_key("tunl0", "rp_filter")] = "1"
    p = R.plan(req(V4, mode="tun"), host(sysctls, links=links, ipip="tunnel"))
    assert p.changes[0] == R.Change("link_up", "tunl0")
    assert [k for k in keys_of(p.changes) if "rp_filter" in k] == ["net/ipv4/conf/tunl0/rp_filter"]


def test_tun_refuses_ipv6_vips():
    p = R.plan(req(V6, mode="tun"), host(ipip="module"))
    assert any("ip6tnl" in e for e in p.errors)


def test_nat_checks_the_default_route():
    ok = R.plan(req(mode="nat", director="10.214.1.1"), host(gateways={4: "10.214.1.1", 6: None}))
    assert ok.ready and ok.changes == [] and len(ok.items) == 1
    bad = R.plan(req(mode="nat", director="10.214.1.1"), host(gateways={4: "10.214.1.9", 6: None}))
    assert not bad.ready and "via 10.214.1.9" in bad.items[0].detail and bad.items[0].change is None
    none = R.plan(req(mode="nat", director="fd00:214:1::1"), host(gateways={4: "10.214.1.1", 6: None}))
    assert not none.ready and "no default route" in none.items[0].detail
    bare = R.plan(req(mode="nat"), host())
    assert bare.ready and bare.items == () and any("--director" in n for n in bare.notes)


# --- applying, rollback, undo (in memory) -----------------------------------------------------


class FakeBackend:
    """An in-memory host: sysctls, links (name -> up), addresses {(ifname, cidr): label}, files."""

    def __init__(self, sysctls=None, fail_on=None):
        self.sysctls = dict(sysctls if sysctls is not None else conf())
        self.links = {"lo": True, "eth0": True, "eth1": True}
        self.addresses: dict[tuple[str, str], str | None] = {}
        self.files: dict[str, str] = {}
        self.symlinks: dict[str, str] = {}
        self.modules: list[str] = []
        self.fail_on = fail_on  # (method, argument) that raises PermissionError
        self.calls: list[tuple] = []

    def _maybe_fail(self, method, arg):
        self.calls.append((method, arg))
        if self.fail_on == (method, arg):
            raise PermissionError(1, "Operation not permitted")

    def read_sysctl(self, key):
        return self.sysctls.get(key)

    def write_sysctl(self, key, value):
        self._maybe_fail("write_sysctl", key)
        self.sysctls[key] = value

    def load_module(self, name):
        self.modules.append(name)
        if name == "ipip" and "tunl0" not in self.links:
            self.links["tunl0"] = False
            self.sysctls[S.conf_key("tunl0", "rp_filter")] = "1"

    def link_exists(self, name):
        return name in self.links

    def create_tunnel(self, name):
        self.links[name] = False

    def delete_link(self, name):
        del self.links[name]

    def link_is_up(self, name):
        return self.links[name]

    def set_link(self, name, up):
        self._maybe_fail("set_link", name)
        self.links[name] = up

    def add_address(self, ifname, cidr, label):
        self._maybe_fail("add_address", cidr)
        if (ifname, cidr) in self.addresses:
            return False
        self.addresses[(ifname, cidr)] = label
        return True

    def remove_address(self, ifname, cidr, label):
        self._maybe_fail("remove_address", cidr)
        return self.addresses.pop((ifname, cidr), None) is not None

    def read_file(self, path):
        return self.files.get(path)

    def write_file(self, path, text):
        if text is None:
            self.files.pop(path, None)
        else:
            self.files[path] = text

    def read_link(self, path):
        return self.symlinks.get(path)

    def write_link(self, path, target):
        if target is None:
            self.symlinks.pop(path, None)
        else:
            self.symlinks[path] = target

    def snapshot(self):
        return (dict(self.sysctls), dict(self.links), dict(self.addresses), dict(self.files), dict(self.symlinks))


def test_apply_records_old_values_and_undo_restores_them():
    b = FakeBackend(conf(eth0__arp_ignore="1", all__arp_announce="1"))
    before = b.snapshot()
    changes = R.plan(req(V4, V6), host(b.sysctls)).changes
    journal = []
    recs = R.apply(changes, b, on_record=journal.append)
    assert len(recs) == 9 and len(journal) == 9 and journal[-1] == recs
    assert {r["key"]: r["old"] for r in recs if r["kind"] == "sysctl"}["net/ipv4/conf/all/arp_announce"] == "1"
    assert b.addresses == {("lo", f"{V4}/32"): "lo:dd", ("lo", f"{V6}/128"): None}
    assert b.snapshot() != before
    for r in reversed(recs):
        assert R.revert(r, b) is None
    assert b.snapshot() == before


def test_failure_rolls_back_every_change_of_the_run():
    b = FakeBackend(fail_on=("add_address", f"{V6}/128"))
    before = b.snapshot()
    journal = []
    with pytest.raises(R.ApplyError) as e:
        R.apply(R.plan(req(V4, V6), host()).changes, b, on_record=journal.append)
    assert "permission denied" in str(e.value) and f"{V6}/128" in str(e.value)
    assert len(e.value.undone) == 9 and e.value.left == [] and e.value.rollback_errors == []
    assert b.snapshot() == before
    assert journal[-1] == []  # the journal ends with nothing left applied


def test_a_failing_rollback_is_reported_and_kept():
    changes = R.plan(req(V4), host()).changes

    class Flaky(FakeBackend):
        """Fails the second sysctl write, and then fails restoring the first one."""

        def write_sysctl(self, key, value):
            if key == "net/ipv4/conf/all/arp_ignore" and value == "0":
                raise OSError(5, "Input/output error")
            super().write_sysctl(key, value)

    f = Flaky(fail_on=("write_sysctl", "net/ipv4/conf/lo/arp_ignore"))
    journal = []
    with pytest.raises(R.ApplyError) as e:
        R.apply(changes, f, on_record=journal.append)
    assert e.value.undone == [] and [r["key"] for r in e.value.left] == ["net/ipv4/conf/all/arp_ignore"]
    assert any("Input/output error" in m for m in e.value.rollback_errors)
    assert journal[-1] == e.value.left  # what stays applied stays recorded for undo


def test_revert_leaves_values_someone_else_changed():
    b = FakeBackend()
    rec = R.apply([R.Change("sysctl", "net/ipv4/conf/all/arp_ignore", "1", "0")], b)[0]
    b.sysctls["net/ipv4/conf/all/arp_ignore"] = "2"
    warn = R.revert(rec, b)
    assert "left alone" in warn and b.sysctls["net/ipv4/conf/all/arp_ignore"] == "2"


def test_apply_skips_what_is_already_done():
    b = FakeBackend()
    b.addresses[("lo", f"{V4}/32")] = "lo:dd"
    b.sysctls["net/ipv4/conf/all/arp_ignore"] = "1"
    recs = R.apply(
        [
            R.Change("sysctl", "net/ipv4/conf/all/arp_ignore", "1", "0"),
            R.Change("address", "lo", f"{V4}/32", None, "lo:dd"),
        ],
        b,
    )
    assert recs == []


def test_tun_apply_on_the_fake_kernel_and_back():
    b = FakeBackend()
    before = b.snapshot()
    recs = R.apply(R.plan(req(V4, mode="tun"), host(ipip="module")).changes, b)
    assert b.links["tunl0"] is True and b.addresses == {("tunl0", f"{V4}/32"): "tunl0:dd"}
    assert b.sysctls["net/ipv4/conf/tunl0/rp_filter"] == "0"
    # the module created tunl0, so no "tunnel" record: undo must not delete the module's device
    assert [r["kind"] for r in recs][:2] == ["module", "link_up"]
    for r in reversed(recs):
        R.revert(r, b)
    after = b.snapshot()
    assert after[2] == before[2] and after[1]["tunl0"] is False


def test_merge_keeps_the_first_old_value():
    first = [
        {"kind": "sysctl", "key": "k", "value": "1", "old": "0"},
        {"kind": "address", "ifname": "lo", "cidr": f"{V4}/32", "label": "lo:dd"},
    ]
    second = [
        {"kind": "sysctl", "key": "k", "value": "2", "old": "1"},
        {"kind": "address", "ifname": "lo", "cidr": f"{V4}/32", "label": "lo:dd"},
        {"kind": "address", "ifname": "lo", "cidr": f"{V4B}/32", "label": "lo:dd"},
    ]
    merged = R.merge_records(first, second)
    assert merged[0] == {"kind": "sysctl", "key": "k", "value": "2", "old": "0"}
    assert [r.get("cidr") for r in merged[1:]] == [f"{V4}/32", f"{V4B}/32"]


def test_prep_dry_run_and_idempotence_on_the_fake_kernel(tmp_path):
    state = str(tmp_path / "rs.json")
    b = FakeBackend()
    lines: list[str] = []
    assert R.prep(req(V4), state_file=state, dry_run=True, backend=b, host=host(b.sysctls), out=lines.append) == 0
    assert len(lines) == 10 and lines[-1] == "dry run: 9 change(s) planned, nothing done"
    assert "would set net.ipv4.conf.all.arp_ignore = 1 (now 0)" in lines
    assert f"would add {V4}/32 to lo label lo:dd" in lines
    assert b.snapshot() == FakeBackend().snapshot() and not os.path.exists(state)
    lines.clear()
    assert R.prep(req(V4), state_file=state, backend=b, host=host(b.sysctls), out=lines.append) == 0
    assert lines[0] == "set net.ipv4.conf.all.arp_ignore = 1 (was 0)"
    assert len(R.load_state(state)["applied"]) == 9
    lines.clear()
    addrs = [R.Address("lo", V4, 32, "lo:dd")]
    assert R.prep(req(V4), state_file=state, backend=b, host=host(b.sysctls, addrs), out=lines.append) == 0
    assert lines == ["nothing to change: the host is ready as a dr real server"]
    lines.clear()
    assert R.undo(state_file=state, backend=b, out=lines.append) == 0
    assert b.snapshot() == FakeBackend().snapshot() and not os.path.exists(state)
    assert R.undo(state_file=state, backend=b, out=lines.append) == 0
    assert lines[-1].startswith("nothing to undo")


def test_prep_rolls_back_and_removes_its_fresh_state_file(tmp_path, capsys):
    state = str(tmp_path / "rs.json")
    b = FakeBackend(fail_on=("add_address", f"{V4B}/32"))
    assert R.prep(req(V4, V4B), state_file=state, backend=b, host=host(b.sysctls), out=lambda s: None) == 1
    err = capsys.readouterr().err
    assert "permission denied" in err and "rolled back 9 change(s)" in err
    assert b.snapshot() == FakeBackend().snapshot()
    assert not os.path.exists(state)


def _assert_durable_replace(events: list[tuple[str, str]], path: Path) -> None:
    """The data was fsync'ed under a temporary name next to ``path``, renamed to ``path``, then the folder synced."""
    i = events.index(("replace", str(path)))
    data_syncs = [e for e in events[:i] if e[0] == "fsync" and Path(e[1]).parent == path.parent and e[1] != str(path)]
    assert data_syncs, events
    assert ("fsync", str(path.parent)) in events[i + 1 :], events


def test_state_file_is_written_durably(tmp_path, monkeypatch):
    state = tmp_path / "var" / "rs.json"
    doc = {"version": 1, "applied": [{"kind": "sysctl", "key": "k", "value": "1", "old": "0"}]}
    events = record_syncs(monkeypatch)
    R.save_state(str(state), doc)
    _assert_durable_replace(events, state)
    # the folder made for it is synced into its parent too
    assert ("fsync", str(tmp_path)) in events
    assert R.load_state(str(state)) == doc
    assert (state.stat().st_mode & 0o777) == 0o644
    events.clear()
    R.save_state(str(state), None)
    assert not state.exists() and events == [("fsync", str(state.parent))]
    assert os.listdir(state.parent) == []


def test_persist_files_and_link_are_written_durably(tmp_path, monkeypatch):
    b = R.KernelBackend()
    conf_file = tmp_path / "etc" / "sysctl.d" / "60-x.conf"
    link = tmp_path / "etc" / "wants" / "x.service"
    events = record_syncs(monkeypatch)
    b.write_file(str(conf_file), "net.ipv4.conf.all.arp_ignore = 1\n")
    _assert_durable_replace(events, conf_file)
    assert b.read_file(str(conf_file)) == "net.ipv4.conf.all.arp_ignore = 1\n"
    assert (conf_file.stat().st_mode & 0o777) == 0o644
    events.clear()
    b.write_link(str(link), "../x.service")
    assert ("fsync", str(link.parent)) in events and b.read_link(str(link)) == "../x.service"
    b.write_link(str(link), "../y.service")  # replaced in one rename: never missing
    assert b.read_link(str(link)) == "../y.service"
    events.clear()
    b.write_file(str(conf_file), None)
    b.write_link(str(link), None)
    assert not conf_file.exists() and not os.path.lexists(link)
    assert events == [("fsync", str(conf_file.parent)), ("fsync", str(link.parent))]
    assert os.listdir(conf_file.parent) == [] and os.listdir(link.parent) == []


def test_a_failed_state_write_keeps_the_old_state_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    state = tmp_path / "rs.json"
    old = {"version": 1, "applied": []}
    R.save_state(str(state), old)

    def disk_full(src, dst) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError, match="No space left"):
        R.save_state(str(state), {"version": 1, "applied": [{"kind": "sysctl"}]})
    monkeypatch.undo()
    assert R.load_state(str(state)) == old
    assert os.listdir(tmp_path) == ["rs.json"]


def test_state_file_that_is_not_a_regular_file_is_refused(tmp_path, capsys):
    real = tmp_path / "elsewhere.json"
    real.write_text("precious\n")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    for path in (link, fifo):
        with pytest.raises(OSError, match="not a regular file"):
            R.save_state(str(path), {"version": 1, "applied": []})
    assert link.is_symlink() and fifo.is_fifo() and real.read_text() == "precious\n"
    with pytest.raises(OSError, match="not a regular file"):
        R.KernelBackend().write_file(str(link), "x\n")
    assert real.read_text() == "precious\n"
    assert sorted(os.listdir(tmp_path)) == ["elsewhere.json", "fifo.json", "link.json"]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "director.cli", "realserver", *args],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=cwd,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        check=False,
    )


def test_a_fifo_or_huge_or_deep_state_file_is_an_error_not_a_hang(tmp_path):
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    for command in ("status", "undo"):
        r = _cli(command, "--state-file", str(fifo), cwd=tmp_path)  # blocked in open() before
        assert r.returncode == 1 and f"state file {fifo}: not a regular file but a FIFO" in r.stderr, r
        assert "Traceback" not in r.stderr
    huge = tmp_path / "huge.json"
    with open(huge, "wb") as f:
        f.truncate(R.MAX_STATE_BYTES + 1)
    with pytest.raises(R.RealServerError, match="too large"):
        R.load_state(str(huge))
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(R.RealServerError, match=f"state file {deep}: not JSON"):
        R.load_state(str(deep))  # a RecursionError escaped before


def _outcome_within(fn, fifo: Path, seconds: float = 10.0):
    """``fn()``'s result or exception; fails if it is still blocked after ``seconds`` (then unblocks it
    by opening ``fifo`` for writing, so no thread is left behind)."""
    box: list = []

    def run() -> None:
        try:
            box.append(fn())
        except Exception as exc:  # noqa: BLE001  # the test inspects it
            box.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        t.join(seconds)
        pytest.fail(f"still blocked after {seconds} s on the FIFO {fifo}")
    return box[0]


def test_persist_files_that_are_not_regular_are_refused_by_name(tmp_path):
    fifo = tmp_path / "60-directord-realserver.conf"
    os.mkfifo(fifo)
    err = _outcome_within(lambda: R.KernelBackend().read_file(str(fifo)), fifo)  # blocked in open() before
    assert isinstance(err, R.RealServerError) and "not a regular file but a FIFO" in str(err)
    assert str(fifo) in str(err)
    assert R.KernelBackend().read_file(str(tmp_path / "missing")) is None
    (tmp_path / "latin1").write_bytes(b"caf\xe9\n")
    with pytest.raises(R.RealServerError, match="not UTF-8"):
        R.KernelBackend().read_file(str(tmp_path / "latin1"))


def test_status_exit_codes(capsys):
    assert R.status(req(V4), host=host(), out=print) == 1
    out = capsys.readouterr().out
    assert "missing  net.ipv4.conf.all.arp_ignore = 0, want 1" in out
    assert out.rstrip().endswith("not ready: dr real server")
    done = conf(
        **{f"{d}__arp_ignore": "1" for d in ("all", "lo", "eth0", "eth1")},
        **{f"{d}__arp_announce": "2" for d in ("all", "lo", "eth0", "eth1")},
    )
    assert R.status(req(V4), host=host(done, [R.Address("lo", V4, 32, "lo:dd")]), out=print) == 0
    assert R.status(req(V4), as_json=True, host=host(), out=print) == 1
    import json

    doc = json.loads(capsys.readouterr().out.split("ready: dr real server\n", 1)[1])
    assert doc["ready"] is False and len(doc["items"]) == 9


# --- persistence texts ---------------------------------------------------------------------------


def test_shipped_unit_is_the_modules_copy_and_runs_prep():
    shipped = (REPO / "etc" / "directord-realserver.service").read_text()
    assert shipped == R.UNIT_FALLBACK == R.unit_text("/usr/local/bin/directord")
    assert "Type=oneshot" in shipped and "RemainAfterExit=yes" in shipped
    assert "EnvironmentFile=/etc/default/directord-realserver" in shipped
    exec_start = next(line for line in shipped.splitlines() if line.startswith("ExecStart="))
    assert exec_start.split("=", 1)[1].split()[1:] == ["realserver", "prep", f"${R.ENV_VAR}"]


def unit_argv(unit: str, env: str) -> list[str]:
    """The argv systemd runs for ``ExecStart`` with the environment file (``$VAR`` split at whitespace)."""
    value = next(line.split("=", 1)[1] for line in env.splitlines() if line.startswith(R.ENV_VAR + "="))
    assert value[0] == value[-1] == '"'
    words = next(line.split("=", 1)[1] for line in unit.splitlines() if line.startswith("ExecStart=")).split()
    out = []
    for w in words:
        out += value[1:-1].split() if w == f"${R.ENV_VAR}" else [w]
    return out


def test_persist_items_and_texts():
    r = req(V4, V6, interfaces=("eth0",))
    p = R.plan(r, host(conf(eth0__arp_ignore="2")))
    paths = R.PersistPaths.under("/tmp/root")
    assert paths.sysctl_conf == "/tmp/root/etc/sysctl.d/60-directord-realserver.conf"
    items = R.plan_persist(p, paths, {}, "/tmp/x/state.json")
    assert [i.change.kind for i in items] == ["file", "file", "file", "symlink"]
    assert items[3].change.value == "../directord-realserver.service"
    sysctl_lines = [line for line in items[0].change.value.splitlines() if not line.startswith("#")]
    assert sysctl_lines == [
        "net.ipv4.conf.all.arp_ignore = 1",
        "net.ipv4.conf.lo.arp_ignore = 1",
        "net.ipv4.conf.eth0.arp_ignore = 2",
        "net.ipv4.conf.all.arp_announce = 2",
        "net.ipv4.conf.lo.arp_announce = 2",
        "net.ipv4.conf.eth0.arp_announce = 2",
    ]
    argv = unit_argv(items[2].change.value, items[1].change.value)
    assert argv[0].endswith("directord")
    a = parse_command_line(argv)
    assert a.func is R.cmd_prep and R.request_from_args(a) == r and a.state_file == "/tmp/x/state.json"
    existing = {i.change.target: i.change.value for i in items}
    again = R.plan_persist(p, paths, existing, "/tmp/x/state.json")
    assert all(i.present and i.change is None for i in again)


def test_env_file_refuses_what_systemd_cannot_split():
    with pytest.raises(ValueError):
        R.env_file_text(req(V4), "/var/lib/my state.json")


# --- on a kernel, in network namespaces ------------------------------------------------------------

PREFIX = f"rsu{os.getpid()}"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")


def run(ns: str, *argv: str, check_rc: int | None = None, pre: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run(
        ["ip", "netns", "exec", ns, *pre, sys.executable, "-m", "director.cli", "realserver", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    if check_rc is not None:
        assert r.returncode == check_rc, r.stdout + r.stderr
    return r


def snapshot(ns: str) -> tuple[list, dict]:
    """Every address (ifname, address, prefixlen, label, proto) and every readable
    net/ipv4/conf + net/ipv6/conf sysctl of ``ns``, read independently of the code under test."""

    def work():
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            names = {m["index"]: m.get_attr("IFLA_IFNAME") for m in ipr.get_links()}
            addrs = sorted(
                (
                    names[a["index"]],
                    a.get_attr("IFA_ADDRESS"),
                    a["prefixlen"],
                    a.get_attr("IFA_LABEL"),
                    a.get_attr("IFA_PROTO"),
                )
                for a in ipr.get_addr()
            )
        values = {}
        for fam in ("ipv4", "ipv6"):
            base = f"/proc/sys/net/{fam}/conf"
            for dev in os.listdir(base):
                for name in os.listdir(os.path.join(base, dev)):
                    try:
                        with open(os.path.join(base, dev, name)) as f:
                            values[f"{fam}/{dev}/{name}"] = f.read()
                    except OSError:
                        pass
        return addrs, values

    return N.call_in_netns(ns, work)


def addr_flags(ns: str, ifname: str, address: str) -> int:
    def work():
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            idx = ipr.link_lookup(ifname=ifname)[0]
            for a in ipr.get_addr(index=idx):
                if a.get_attr("IFA_ADDRESS") == address:
                    return a.get_attr("IFA_FLAGS") or a["flags"]
        raise AssertionError(f"{address} not on {ifname}")

    return N.call_in_netns(ns, work)


@pytest.fixture
def ns(tmp_path):
    name = f"{PREFIX}-{len(os.listdir(tmp_path.parent))}"
    N.create_netns(name)
    N.add_veth(name, "eth0", name, "eth1")
    N.add_address(name, "eth0", "10.214.1.21/24")
    try:
        yield name
    finally:
        N.delete_netns(name)


@needs_root
def test_dr_prep_idempotence_status_and_exact_undo(ns, tmp_path):
    state = str(tmp_path / "rs.json")
    N.set_sysctl(ns, "net.ipv4.conf.all.arp_announce", 1)  # a non-default value undo must bring back
    N.set_sysctl(ns, "net.ipv4.conf.eth1.arp_ignore", 2)  # accepted as it is
    before = snapshot(ns)
    r = run(ns, "prep", "--vip", V4, V6, "--state-file", state, check_rc=0)
    assert "set net.ipv4.conf.all.arp_announce = 2 (was 1)" in r.stdout
    assert f"add {V4}/32 to lo label lo:dd" in r.stdout and f"add {V6}/128 to lo" in r.stdout
    addrs, values = snapshot(ns)
    assert ("lo", V4, 32, "lo:dd", ADDR_PROTO) in addrs and ("lo", V6, 128, None, ADDR_PROTO) in addrs
    assert addr_flags(ns, "lo", V6) & IFA_F_NODAD
    for dev in ("all", "lo", "eth0", "eth1"):
        assert values[f"ipv4/{dev}/arp_announce"] == "2\n"
        assert values[f"ipv4/{dev}/arp_ignore"] == ("2\n" if dev == "eth1" else "1\n")
    assert values["ipv4/default/arp_ignore"] == "0\n"  # not managed
    r = run(ns, "prep", "--vip", V4, "--vip", V6, "--state-file", state, check_rc=0)
    assert r.stdout.strip() == "nothing to change: the host is ready as a dr real server"
    assert snapshot(ns) == (addrs, values)
    r = run(ns, "status", "--state-file", state, check_rc=0)
    assert r.stdout.count("present  ") == 10 and "missing" not in r.stdout
    r = run(ns, "undo", "--state-file", state, check_rc=0)
    assert "undone: 9 change(s)" in r.stdout
    assert snapshot(ns) == before
    assert not os.path.exists(state)
    r = run(ns, "status", "--vip", V4, check_rc=1)
    assert f"missing  {V4}/32 on lo" in r.stdout and r.stdout.rstrip().endswith("not ready: dr real server")


@needs_root
def test_dry_run_prints_every_change_and_changes_nothing(ns, tmp_path):
    state = str(tmp_path / "rs.json")
    before = snapshot(ns)
    r = run(ns, "prep", "--vip", V4, "--interface", "eth0", "--state-file", state, "--dry-run", check_rc=0)
    lines = r.stdout.strip().splitlines()
    assert lines[:-1] == [
        "would set net.ipv4.conf.all.arp_ignore = 1 (now 0)",
        "would set net.ipv4.conf.lo.arp_ignore = 1 (now 0)",
        "would set net.ipv4.conf.eth0.arp_ignore = 1 (now 0)",
        "would set net.ipv4.conf.all.arp_announce = 2 (now 0)",
        "would set net.ipv4.conf.lo.arp_announce = 2 (now 0)",
        "would set net.ipv4.conf.eth0.arp_announce = 2 (now 0)",
        f"would add {V4}/32 to lo label lo:dd",
    ]
    assert snapshot(ns) == before and not os.path.exists(state)


@needs_root
def test_second_prep_adds_a_vip_and_undo_still_restores_the_first_values(ns, tmp_path):
    state = str(tmp_path / "rs.json")
    before = snapshot(ns)
    run(ns, "prep", "--vip", V4, "--state-file", state, check_rc=0)
    r = run(ns, "prep", "--vip", V4, V4B, "--state-file", state, check_rc=0)
    assert r.stdout.splitlines()[0] == f"add {V4B}/32 to lo label lo:dd"
    run(ns, "undo", "--state-file", state, check_rc=0)
    assert snapshot(ns) == before


@needs_root
def test_failure_mid_run_rolls_back_everything(ns, tmp_path):
    state = str(tmp_path / "rs.json")
    N.set_sysctl(ns, "net.ipv6.conf.lo.disable_ipv6", 1)  # the kernel refuses the IPv6 VIP, after the rest
    before = snapshot(ns)
    r = run(ns, "prep", "--vip", V4, V6, "--state-file", state, check_rc=1)
    assert f"failed: add {V6}/128 to lo" in r.stderr and "rolled back 9 change(s)" in r.stderr
    assert f"add {V4}/32 to lo" in r.stdout  # it did get that far
    assert snapshot(ns) == before and not os.path.exists(state)


@needs_root
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_missing_permission_is_reported_and_rolled_back(ns, tmp_path):
    # Without CAP_NET_ADMIN root may still write its namespace's /proc/sys files, but
    # netlink refuses the address: the sysctls written before must be restored.
    state = str(tmp_path / "rs.json")
    before = snapshot(ns)
    r = run(ns, "prep", "--vip", V4, "--state-file", state, check_rc=1, pre=("setpriv", "--bounding-set=-net_admin"))
    assert "permission denied" in r.stderr and "run as root" in r.stderr
    assert "rolled back 8 change(s)" in r.stderr
    assert snapshot(ns) == before and not os.path.exists(state)


@needs_root
def test_bad_input_changes_nothing(ns, tmp_path):
    state = str(tmp_path / "rs.json")
    before = snapshot(ns)
    r = run(ns, "prep", "--vip", "10.214.0.300", "--state-file", state, check_rc=2)
    assert "not an IP address: '10.214.0.300'" in r.stderr
    r = run(ns, "prep", "--vip", V4, "--interface", "eth7", "--state-file", state, check_rc=1)
    assert "no such interface: eth7" in r.stderr and "nothing changed" in r.stderr
    N.add_address(ns, "eth0", f"{V4}/24")
    r = run(ns, "prep", "--vip", V4, "--state-file", state, check_rc=1)
    assert f"VIP {V4} is configured on eth0" in r.stderr
    N.del_address(ns, "eth0", f"{V4}/24")
    assert snapshot(ns) == before and not os.path.exists(state)


def _ipip_here() -> bool:
    return R.ipip_available()  # /sys/module/ipip, or modprobe (when installed) can load it


@needs_root
@pytest.mark.skipif(_ipip_here(), reason="this kernel has ipip (tests/kernel/test_realserver.py covers tun)")
def test_tun_is_refused_clearly_without_ipip(ns, tmp_path):
    state = str(tmp_path / "rs.json")
    before = snapshot(ns)
    r = run(ns, "prep", "--vip", V4, "--mode", "tun", "--state-file", state, check_rc=1)
    assert R.KERNEL_LACKS_IPIP in r.stderr and "nothing changed" in r.stderr
    r = run(ns, "status", "--vip", V4, "--mode", "tun", check_rc=1)
    assert "missing  tunl0 (ipip) the kernel has no ipip module" in r.stdout
    assert snapshot(ns) == before and not os.path.exists(state)


@needs_root
def test_nat_checks_the_default_route_via_the_director(ns, tmp_path):
    state = str(tmp_path / "rs.json")
    r = run(ns, "prep", "--mode", "nat", "--director", "10.214.1.1", "--state-file", state, check_rc=1)
    assert "no default route (replies would bypass the director)" in r.stderr
    N.add_route(ns, "default", gateway="10.214.1.9")
    r = run(ns, "status", "--mode", "nat", "--director", "10.214.1.1", check_rc=1)
    assert "missing  IPv4 default route via the director 10.214.1.1 default route via 10.214.1.9" in r.stdout
    N.add_route(ns, "default", gateway="10.214.1.1")
    before = snapshot(ns)
    r = run(ns, "prep", "--mode", "nat", "--director", "10.214.1.1", "--state-file", state, check_rc=0)
    assert "nothing to change" in r.stdout
    run(ns, "status", "--mode", "nat", "--director", "10.214.1.1", check_rc=0)
    assert snapshot(ns) == before and not os.path.exists(state)


@needs_root
def test_persist_writes_sysctl_d_env_file_and_enables_the_unit(ns, tmp_path):
    state = str(tmp_path / "rs.json")
    root = tmp_path / "root"
    r = run(
        ns,
        "prep",
        "--vip",
        V4,
        "--state-file",
        state,
        "--persist",
        "--persist-root",
        str(root),
        "--dry-run",
        check_rc=0,
    )
    assert "    | net.ipv4.conf.all.arp_ignore = 1" in r.stdout and "dry run: 13 change(s)" in r.stdout
    assert not root.exists() and not os.path.exists(state)
    r = run(ns, "prep", "--vip", V4, "--state-file", state, "--persist", "--persist-root", str(root), check_rc=0)
    conf_file = root / "etc/sysctl.d/60-directord-realserver.conf"
    env_file = root / "etc/default/directord-realserver"
    unit = root / "etc/systemd/system/directord-realserver.service"
    link = root / "etc/systemd/system/multi-user.target.wants/directord-realserver.service"
    assert f"write {conf_file}" in r.stdout
    settings = dict(
        (k.strip(), v.strip())
        for k, v in (
            line.split("=") for line in conf_file.read_text().splitlines() if line and not line.startswith("#")
        )
    )
    assert settings == {
        **{f"net.ipv4.conf.{d}.arp_ignore": "1" for d in ("all", "lo", "eth1", "eth0")},
        **{f"net.ipv4.conf.{d}.arp_announce": "2" for d in ("all", "lo", "eth1", "eth0")},
    }
    # the values the file holds are the ones the kernel has now
    for key, value in settings.items():
        assert N.get_sysctl(ns, key) == value
    # the shipped unit, naming the directord that ran prep (here: this interpreter's console script)
    from director import units

    command = units.installed_command(argv0="-m")
    assert unit.read_text() == (REPO / "etc/directord-realserver.service").read_text().replace(
        units.SHIPPED_COMMAND, command
    )
    assert f"ExecStart={command} realserver prep" in unit.read_text()
    assert os.readlink(link) == "../directord-realserver.service" and link.resolve() == unit.resolve()
    a = parse_command_line(unit_argv(unit.read_text(), env_file.read_text()))
    assert a.func is R.cmd_prep and R.request_from_args(a) == req(V4) and a.state_file == state
    r = run(ns, "prep", "--vip", V4, "--state-file", state, "--persist", "--persist-root", str(root), check_rc=0)
    assert "nothing to change" in r.stdout
    run(ns, "undo", "--state-file", state, check_rc=0)
    assert not conf_file.exists() and not env_file.exists() and not unit.exists() and not os.path.lexists(link)


@needs_root
def test_default_state_file_names_the_namespace(ns):
    r = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            ns,
            sys.executable,
            "-c",
            "from director.realserver import default_state_file; print(default_state_file())",
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        check=True,
    )
    assert r.stdout.strip() == f"/var/lib/directord/realserver-{ns}.json"
