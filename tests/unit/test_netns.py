"""Host tests of the namespace helpers, the lab topology and the lab HTTP server.

Pure parts (address plan, sysctl paths, HTTP parsing, responses) run
anywhere; the rest needs root and network namespaces, veth and bridge (no
IPVS), and creates only namespaces named ``tn<pid>-*`` that it deletes again.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys

import pytest
from netnsprobe import netns_problem, netns_skip

from director.lab import netns as N
from director.lab import topology as T
from director.lab.httpd import ServerState, build_response, parse_request_line
from director.lab.site import BOND_OPTIONS, Lab
from director.lab.topology import plan_lab

PREFIX = f"tn{os.getpid()}"


# --- pure ---------------------------------------------------------------------------


def test_plan_dr_addresses_and_real_server_preparation():
    plan = plan_lab("p", real_servers=3)
    assert plan.vip == "10.77.0.100"
    assert plan.addr == {
        "client": "10.77.0.2",
        "dir1": "10.77.0.10",
        "rs1": "10.77.0.21",
        "rs2": "10.77.0.22",
        "rs3": "10.77.0.23",
    }
    assert plan.switch_ns == "p-sw" and plan.bridges == ("br0",)
    assert [n.ns for n in plan.nodes] == ["p-client", "p-dir1", "p-rs1", "p-rs2", "p-rs3"]
    rs2 = plan.node("rs2")
    assert ("lo", "10.77.0.100/32") in rs2.addresses
    assert ("eth0", "10.77.0.22/24") in rs2.addresses
    sysctls = dict(rs2.sysctls)
    for dev in ("all", "lo", "eth0"):
        assert sysctls[f"net.ipv4.conf.{dev}.arp_ignore"] == "1"
        assert sysctls[f"net.ipv4.conf.{dev}.arp_announce"] == "2"
    assert rs2.routes == () and not rs2.tunnel
    # the director gets no VIP from the plan (Lab adds it on request) and no forwarding
    assert plan.node("dir1").sysctls == ()
    assert all("10.77.0.100" not in cidr for _, cidr in plan.node("dir1").addresses)


def test_plan_nat_puts_real_servers_behind_the_director():
    plan = plan_lab("p", real_servers=2, mode="nat")
    assert plan.bridges == ("br0", "br1")
    d = plan.node("dir1")
    assert d.links == (("eth0", "br0"), ("eth1", "br1"))
    assert ("eth1", "10.77.1.1/24") in d.addresses
    assert ("net.ipv4.ip_forward", "1") in d.sysctls
    rs1 = plan.node("rs1")
    assert rs1.links == (("eth0", "br1"),)
    assert plan.addr["rs1"] == "10.77.1.21"
    assert rs1.routes == (("default", "10.77.1.1"),)
    assert all(ifname != "lo" for ifname, _ in rs1.addresses)


def test_plan_tun_uses_tunl0_and_relaxes_rp_filter():
    rs = plan_lab("p", real_servers=1, mode="tun").node("rs1")
    assert rs.tunnel
    assert ("tunl0", "10.77.0.100/32") in rs.addresses
    sysctls = dict(rs.sysctls)
    assert sysctls["net.ipv4.conf.all.rp_filter"] == "0"
    assert sysctls["net.ipv4.conf.tunl0.rp_filter"] == "0"
    assert sysctls["net.ipv4.conf.eth0.arp_ignore"] == "1"


def test_plan_ipv6_and_more_directors():
    plan = plan_lab("p", real_servers=2, directors=2, ipv6=True)
    assert plan.directors == ("dir1", "dir2")
    assert plan.addr["dir2"] == "10.77.0.11"
    assert plan.vip6 == "fd00:77::100" and plan.addr6["rs2"] == "fd00:77::22"
    assert ("lo", "fd00:77::100/128") in plan.node("rs1").addresses
    for node in plan.nodes:
        for _, cidr in node.addresses:
            ipaddress.ip_interface(cidr)  # all well formed


def test_plan_heartbeat_link_gives_directors_eth1_on_their_own_bridge():
    plan = plan_lab("p", real_servers=2, directors=2, ha_link=True)
    assert plan.bridges == ("br0", "hb0")
    assert plan.heartbeat_if == "eth1" and plan.service_if == "eth0"
    assert plan.hb_addr == {"dir1": "10.77.2.10", "dir2": "10.77.2.11"}
    d2 = plan.node("dir2")
    assert d2.links == (("eth0", "br0"), ("eth1", "hb0"))
    assert ("eth1", "10.77.2.11/24") in d2.addresses
    # real servers and the client stay off the heartbeat bridge
    assert all(br != "hb0" for n in plan.nodes if not n.role.startswith("dir") for _, br in n.links)
    assert plan_lab("p").heartbeat_if is None and plan_lab("p").hb_addr == {}


def test_plan_nat_with_heartbeat_link_uses_eth2_inside_and_a_floating_gateway():
    plan = plan_lab("p", real_servers=1, directors=2, mode="nat", ha_link=True)
    assert plan.inside_if == "eth2" and plan.nat_gateway == "10.77.1.254"
    assert plan.node("dir1").links == (("eth0", "br0"), ("eth1", "hb0"), ("eth2", "br1"))
    assert ("eth2", "10.77.1.2/24") in plan.node("dir2").addresses
    assert plan.node("rs1").routes == (("default", "10.77.1.254"),)
    # without the heartbeat link NAT keeps eth1 and dir1's inside address as gateway
    plain = plan_lab("p", real_servers=1, mode="nat")
    assert plain.inside_if == "eth1" and plain.nat_gateway == "10.77.1.1"


def test_plan_bond_makes_two_legs_on_two_leaf_switches():
    plan = plan_lab("p", real_servers=1, directors=2, ha_link=True, bond=True)
    assert plan.service_if == "bond0"
    assert set(plan.bridges) == {"br0", "hb0", "leaf1", "leaf2"}
    assert plan.bridge_links == (("leaf1", "br0"), ("leaf2", "br0"))
    d1 = plan.node("dir1")
    assert d1.bonds == (("bond0", ("eth0a", "eth0b")),)
    assert d1.links == (("eth0a", "leaf1"), ("eth0b", "leaf2"), ("eth1", "hb0"))
    assert ("bond0", "10.77.0.10/24") in d1.addresses
    assert all(ifname != "eth0a" for ifname, _ in d1.addresses)
    # only directors are bonded; the others stay on the service LAN itself
    assert plan.node("client").links == (("eth0", "br0"),) and plan.node("client").bonds == ()
    for node in plan.nodes:
        for ifname, _ in node.links:
            T.port_name(node.role, ifname)  # every switch-side name fits
    assert BOND_OPTIONS["bond_mode"] == 2 and BOND_OPTIONS["bond_xmit_hash_policy"] == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "bgp"},
        {"real_servers": 0},
        {"real_servers": 71},
        {"directors": 0},
        {"subnet": "10.77.0.0/25"},
        {"subnet": "fd00::/64"},
        {"heartbeat_subnet": "10.77.2.0/25"},
    ],
)
def test_plan_rejects_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        plan_lab("p", **kwargs)


def test_port_names_fit_ifnamsiz():
    assert T.port_name("rs1", "eth0") == "rs1"
    assert T.port_name("dir1", "eth1") == "dir1-eth1"
    with pytest.raises(ValueError):
        T.port_name("averyveryverylongrole", "eth0")


def test_sysctl_path():
    assert N.sysctl_path("net.ipv4.conf.eth0.arp_ignore") == "/proc/sys/net/ipv4/conf/eth0/arp_ignore"
    assert N.sysctl_path("net/ipv4/conf/eth0.100/rp_filter") == "/proc/sys/net/ipv4/conf/eth0.100/rp_filter"
    assert N.sysctl_path("/proc/sys/net/ipv4/ip_forward") == "/proc/sys/net/ipv4/ip_forward"
    with pytest.raises(ValueError):
        N.sysctl_path("net/../../etc/passwd")


def test_parse_http_response():
    assert N.parse_http_response(b"HTTP/1.0 503 Service Unavailable\r\nA: b\r\n\r\nrs1\n") == (503, "rs1\n")
    assert N.parse_http_response(b"HTTP/1.1 200 OK\n\nbody") == (200, "body")
    for bad in (b"", b"garbage\r\n\r\n", b"HTTP/1.0 abc\r\n\r\n"):
        with pytest.raises(ValueError):
            N.parse_http_response(bad)


def test_httpd_responses():
    state = ServerState(name="rs7")
    assert build_response(state, "GET", "/").endswith(b"\r\n\r\nrs7\n")
    assert build_response(state, "GET", "/healthz?x=1").endswith(b"\r\n\r\nok\n")
    head = build_response(state, "HEAD", "/")
    assert head.startswith(b"HTTP/1.0 200 OK\r\n") and head.endswith(b"\r\n\r\n") and b"Content-Length: 4" in head
    assert build_response(state, "POST", "/").startswith(b"HTTP/1.0 405 ")
    state.status = 503
    assert N.parse_http_response(build_response(state, "GET", "/healthz")) == (503, "ok\n")
    assert parse_request_line(b"GET /a HTTP/1.0\r\nHost: x\r\n\r\n") == ("GET", "/a")
    assert parse_request_line(b"\r\n") is None


# --- namespaces (root) ------------------------------------------------------------------


_problem = netns_problem(PREFIX)
needs_netns = netns_skip(_problem)


def test_the_probe_makes_and_removes_one_namespace_and_reports_a_refusal():
    """The shared probe (tests/unit/netnsprobe.py) with stand-ins for the layer that makes
    namespaces: a refusal is a skip reason, never an error of the test module."""
    done: list[tuple[str, str]] = []

    def refuse(name: str) -> None:
        done.append(("create", name))
        raise PermissionError(1, "Operation not permitted")

    def remove(name: str) -> None:
        done.append(("remove", name))

    if os.geteuid() != 0:
        assert netns_problem("x", create=refuse, remove=remove) == "needs root" and done == []
        return
    assert netns_problem("x", create=lambda n: done.append(("create", n)), remove=remove) is None
    assert done == [("create", "x-probe"), ("remove", "x-probe")]
    done.clear()
    assert netns_problem("x", create=refuse, remove=remove) == (
        "cannot create network namespaces: [Errno 1] Operation not permitted"
    )
    assert done == [("create", "x-probe")]
    assert netns_skip("why").kwargs["reason"] == "why" and netns_skip(None).args == (False,)


@pytest.fixture
def nsname():
    """Factory of fresh namespace names; everything named ``<PREFIX>-*`` is removed afterwards."""
    counter = iter(range(1, 1000))
    yield lambda tag="ns": f"{PREFIX}-{tag}{next(counter)}"
    N.cleanup_netns(PREFIX)


def _ns_inode(path: str) -> int:
    return os.stat(path).st_ino


@needs_netns
def test_create_delete_and_cleanup_by_prefix(nsname):
    a, b = nsname("a"), nsname("b")
    other = f"{PREFIX}x-keep"  # shares the characters but not the "<prefix>-" form
    N.create_netns(a)
    N.create_netns(b)
    N.create_netns(other)
    try:
        assert {a, b, other} <= set(N.list_netns())
        with pytest.raises(FileExistsError):
            N.create_netns(a)
        N.create_netns(a, exist_ok=True)
        assert N.link_exists(a, "lo")
        assert sorted(N.cleanup_netns(PREFIX)) == sorted([a, b])
        assert not N.netns_exists(a) and not N.netns_exists(b) and N.netns_exists(other)
        assert N.cleanup_netns(PREFIX) == []
        N.delete_netns(a)  # missing_ok
        with pytest.raises(FileNotFoundError):
            N.delete_netns(a, missing_ok=False)
    finally:
        N.delete_netns(other)


@needs_netns
def test_call_in_netns_switches_only_the_worker_thread(nsname):
    a = nsname()
    N.create_netns(a)
    mine = _ns_inode("/proc/thread-self/ns/net")
    seen = N.call_in_netns(a, lambda: _ns_inode("/proc/thread-self/ns/net"))
    assert seen == _ns_inode(N.netns_path(a)) != mine
    assert _ns_inode("/proc/thread-self/ns/net") == mine
    with pytest.raises(ZeroDivisionError):
        N.call_in_netns(a, lambda: 1 / 0)
    with pytest.raises(OSError):
        N.call_in_netns(f"{PREFIX}-missing", lambda: None)


@needs_netns
def test_veth_addresses_routes_sockets_and_sysctls(nsname):
    a, b = nsname("a"), nsname("b")
    N.create_netns(a)
    N.create_netns(b)
    N.add_veth(a, "va", b, "vb")
    N.add_address(a, "va", "10.99.0.1/24")
    N.add_address(b, "vb", "10.99.0.2/24")
    N.add_address(b, "vb", "10.99.0.2/24", exist_ok=True)
    assert "10.99.0.2/24" in N.list_addresses(b, "vb")
    N.add_address(b, "lo", "10.98.0.1/32")
    N.add_route(a, "10.98.0.0/24", gateway="10.99.0.2")

    # a socket made in b lives in b: it can bind b's address, which the caller's namespace lacks
    srv = N.socket_in_netns(b, socket.AF_INET, socket.SOCK_STREAM)
    with srv:
        srv.bind(("10.98.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        with pytest.raises(OSError):
            socket.socket().bind(("10.98.0.1", 0))
        # reachable from a over the veth and the static route
        assert N.tcp_connectable(a, "10.98.0.1", port, timeout=2.0)
        N.link_set(b, "vb", up=False)
        assert not N.tcp_connectable(a, "10.98.0.1", port, timeout=0.5)
        N.link_set(b, "vb", up=True)
        N.wait_until(lambda: N.tcp_connectable(a, "10.98.0.1", port, timeout=0.5), 10, what="link back up")

    N.del_address(b, "lo", "10.98.0.1/32")
    assert "10.98.0.1/32" not in N.list_addresses(b)

    root_value = open("/proc/sys/net/ipv4/conf/all/arp_ignore").read().strip()
    N.set_sysctls(b, {"net.ipv4.conf.all.arp_ignore": 1, "net.ipv4.conf.vb.arp_announce": 2})
    assert N.get_sysctl(b, "net.ipv4.conf.all.arp_ignore") == "1"
    assert N.get_sysctl(b, "net.ipv4.conf.vb.arp_announce") == "2"
    assert N.get_sysctl(a, "net.ipv4.conf.all.arp_ignore") == "0"
    assert open("/proc/sys/net/ipv4/conf/all/arp_ignore").read().strip() == root_value
    with pytest.raises(FileNotFoundError):
        N.set_sysctl(b, "net.ipv4.conf.nosuchif.arp_ignore", 1)


@needs_netns
def test_bridge_in_a_switch_namespace(nsname):
    sw, a, b = nsname("sw"), nsname("a"), nsname("b")
    for n in (sw, a, b):
        N.create_netns(n)
    N.add_bridge(sw, "br0")
    for ns, port in ((a, "pa"), (b, "pb")):
        N.add_veth(sw, port, ns, "eth0")
        N.set_master(sw, port, "br0")
    N.add_address(a, "eth0", "10.99.1.1/24")
    N.add_address(b, "eth0", "10.99.1.2/24")
    srv = N.socket_in_netns(b)
    with srv:
        srv.bind(("10.99.1.2", 0))
        srv.listen()
        assert N.tcp_connectable(a, "10.99.1.2", srv.getsockname()[1], timeout=2.0)
    assert not N.link_exists(None, "pa")  # nothing in the caller's namespace


@needs_netns
def test_run_in_netns_starts_the_process_inside(nsname):
    a = nsname()
    N.create_netns(a)
    p = N.run_in_netns(a, ["sleep", "30"])
    try:
        N.wait_until(lambda: p.pid in N.pids_in_netns(a), 5, what="process visible")
        assert _ns_inode(f"/proc/{p.pid}/ns/net") == _ns_inode(N.netns_path(a))
    finally:
        N.delete_netns(a)  # kills what runs inside
        p.wait(timeout=5)
    assert p.returncode is not None
    r = N.exec_in_netns(nsname(), ["true"], check=False)
    assert r.returncode != 0  # no such namespace


# --- the lab (root, no IPVS) ---------------------------------------------------------------


@pytest.fixture(scope="module")
def dr_lab():
    if _problem:
        pytest.skip(_problem)
    with Lab(f"{PREFIX}-lab", real_servers=3, ipv6=True) as lab:
        yield lab


@needs_netns
def test_lab_dr_topology(dr_lab):
    lab = dr_lab
    assert {lab.ns(r) for r in ("client", "dir1", "rs1", "rs2", "rs3", "sw")} <= set(N.list_netns())
    assert f"{lab.vip}/32" in N.list_addresses(lab.director, "eth0")
    for rs in lab.real_servers:
        assert f"{lab.vip}/32" in N.list_addresses(lab.ns(rs), "lo")
        assert lab.sysctl(rs, "net.ipv4.conf.eth0.arp_ignore") == "1"
        assert lab.sysctl(rs, "net.ipv4.conf.all.arp_announce") == "2"
        # each real server answers with its name, over IPv4 and IPv6
        assert lab.get("/", addr=lab.rip(rs)) == (200, f"{rs}\n")
        assert lab.get("/healthz", addr=lab.plan.addr6[rs]) == (200, "ok\n")
    assert lab.get(f"http://{lab.rip('rs2')}:80/x") == (200, "rs2\n")
    # The real servers hold the VIP on lo and listen on all addresses, but do
    # not answer ARP for it: the client reaches the director, which (without
    # IPVS) refuses the connection, instead of a real server answering.
    with pytest.raises(ConnectionRefusedError):
        lab.get("/", addr=lab.vip, timeout=1.0)
    neigh = lab.exec("client", ["ip", "-4", "neigh", "show", lab.vip]).stdout
    assert f"lladdr {N.link_mac(lab.director, 'eth0')} " in neigh


@needs_netns
def test_lab_httpd_failure_modes(dr_lab):
    lab = dr_lab
    rip = lab.rip("rs1")
    lab.set_hang("rs1", True)
    N.wait_until(lambda: _times_out(lab, rip), 5, what="hang mode")
    lab.set_hang("rs1", False)
    N.wait_until(lambda: _answers(lab, rip), 5, what="normal mode")

    lab.start_httpd("rs1", status=503)
    assert lab.get("/", addr=rip) == (503, "rs1\n")
    lab.stop_httpd("rs1")
    assert lab.httpd("rs1") is None
    with pytest.raises(ConnectionRefusedError):
        lab.get("/", addr=rip)
    proc = lab.start_httpd("rs1", hang=True)
    with pytest.raises(TimeoutError):
        lab.get("/", addr=rip, timeout=0.5)
    lab.stop_httpd("rs1", kill=True)
    assert proc.returncode == -9
    lab.start_httpd("rs1")
    assert lab.get("/", addr=rip) == (200, "rs1\n")

    # reset_real_servers undoes every failure mode
    lab.start_httpd("rs1", status=500)
    lab.set_hang("rs2", True)
    lab.stop_httpd("rs3")
    lab.port_set("rs3", up=False)
    lab.reset_real_servers()
    for rs in lab.real_servers:
        N.wait_until(lambda rs=rs: _answers(lab, lab.rip(rs)), 5, what=f"{rs} normal")
        assert lab.get("/", addr=lab.rip(rs)) == (200, f"{rs}\n")


def _times_out(lab, rip) -> bool:
    try:
        lab.get("/", addr=rip, timeout=0.3)
    except TimeoutError:
        return True
    return False


def _answers(lab, rip) -> bool:
    try:
        return lab.get("/", addr=rip, timeout=0.5)[0] == 200
    except OSError:
        return False


@needs_netns
def test_lab_links_and_vip_moves(dr_lab):
    lab = dr_lab
    lab.port_set("rs3", up=False)
    try:
        assert _times_out(lab, lab.rip("rs3"))
    finally:
        lab.port_set("rs3", up=True)
    N.wait_until(lambda: _answers(lab, lab.rip("rs3")), 10, what="port back up")
    lab.del_vip("dir1")
    assert f"{lab.vip}/32" not in N.list_addresses(lab.director)
    lab.add_vip("dir1")
    lab.add_vip("dir1")  # idempotent
    assert N.list_addresses(lab.director).count(f"{lab.vip}/32") == 1


@needs_netns
def test_lab_close_removes_everything_and_leftovers_are_cleaned():
    prefix = f"{PREFIX}-crash"
    crashed = Lab(prefix, real_servers=1)
    crashed.build()
    pid = crashed.httpd("rs1").pid
    # an interrupted run leaves namespaces and processes; the next lab with the prefix removes them
    with Lab(prefix, real_servers=1) as lab:
        N.wait_until(lambda: crashed.httpd("rs1").poll() is not None, 5, what="old httpd gone")
        assert lab.get("/", addr=lab.rip("rs1")) == (200, "rs1\n")
        new_pid = lab.httpd("rs1").pid
        assert new_pid != pid
    assert not [n for n in N.list_netns() if n.startswith(prefix + "-")]
    assert not N._alive(new_pid)
    crashed.close()  # idempotent even after someone else removed its namespaces


def test_lab_build_failure_cleans_up(monkeypatch):
    if _problem:
        pytest.skip(_problem)
    prefix = f"{PREFIX}-fail"
    lab = Lab(prefix, real_servers=1, python=sys.executable, ready_timeout=3.0)
    monkeypatch.setattr(lab, "python", "/nonexistent/python")
    with pytest.raises(RuntimeError):
        with lab:
            pass
    assert not [n for n in N.list_netns() if n.startswith(prefix + "-")]


@needs_netns
def test_pair_topology_heartbeat_bridge_and_holder_probe():
    """The HA pair's namespaces without IPVS: directors reach each other on the heartbeat
    bridge, the client does not; the holder probe follows the VIP and the link state."""
    from director.lab.pair import HolderProbe, PairLab, PairOptions

    pair = PairLab(PairOptions(prefix=f"{PREFIX}-pr", real_servers=1))
    with pair.lab as lab:
        ping = lab.exec("dir1", ["ping", "-c", "1", "-W", "2", lab.plan.hb_addr["dir2"]], check=False)
        assert ping.returncode == 0, ping.stdout + ping.stderr
        no = lab.exec("client", ["ping", "-c", "1", "-W", "1", lab.plan.hb_addr["dir2"]], check=False)
        assert no.returncode != 0
        probe = HolderProbe(pair)
        try:
            assert probe.holders() == ()
            lab.add_vip("dir2")
            assert probe.holders() == ("dir2",) and pair.holders() == ("dir2",)
            lab.add_vip("dir1")
            assert probe.holders() == ("dir1", "dir2")
            lab.port_set("dir1", up=False)  # switch port down: dir1 keeps the address, loses carrier
            wait_until_true(lambda: probe.holders() == ("dir2",))
            assert pair.holders() == ("dir2",)
            lab.port_set("dir1", up=True)
            wait_until_true(lambda: probe.holders() == ("dir1", "dir2"))
        finally:
            probe.close()


def wait_until_true(pred, timeout: float = 5.0) -> None:
    N.wait_until(pred, timeout, 0.05)
