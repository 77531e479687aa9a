"""The routed lab of active-active directors (`directord lab up --topology ecmp`).

Pure parts: the plan (`plan_ecmp`), the router's BIRD configuration (checked by BIRD's own
parser, ``bird -p``), the directors' configurations, the parsers of ``birdc`` and ``ip route``
output, the command line. The host test builds the lab in namespaces named ``te<pid>-*``
(root, veth and bridges, no IPVS), runs the router's real BIRD, starts a small hand-written
BIRD in two directors that announces the VIP, and watches the router's kernel route become
multipath; ``lab status`` and ``lab down`` run as commands.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from netnsprobe import netns_problem, netns_skip

from director.config import parse_config
from director.config.schema import RootSchema
from director.lab import netns as N
from director.lab.ecmp import MAX_DIRECTORS, MIN_DIRECTORS, director_config, plan_ecmp, router_bird_conf
from director.lab.ecmp_site import BIRD, EcmpLab, EcmpOptions, parse_next_hops, parse_protocols
from director.lab.pair import state_file
from director.lab.topology import plan_lab

PREFIX = f"te{os.getpid()}"
REPO = Path(__file__).resolve().parents[2]
needs_bird = pytest.mark.skipif(not os.path.exists(BIRD), reason="BIRD 2 (Debian package bird2) is not installed")


# --- the plan -------------------------------------------------------------------------------


def test_plan_routes_a_client_network_to_the_directors_and_real_servers():
    plan = plan_ecmp("p", directors=3)
    lab = plan.lab
    assert plan.vip == lab.vip == "10.77.100.1"
    assert lab.bridges == ("cl0", "br0")
    assert [n.role for n in lab.nodes] == ["client", "router", "dir1", "dir2", "dir3", "rs1", "rs2", "rs3"]
    assert plan.router_ns == "p-router" and plan.router_addr == "10.77.0.1"
    client, router = lab.node("client"), lab.node("router")
    assert client.links == (("eth0", "cl0"),)
    assert client.addresses == (("eth0", "10.77.3.2/24"),) and client.routes == (("default", "10.77.3.1"),)
    assert router.links == (("eth0", "cl0"), ("eth1", "br0"))
    assert router.addresses == (("eth0", "10.77.3.1/24"), ("eth1", "10.77.0.1/24"))
    assert dict(router.sysctls) == {"net.ipv4.ip_forward": "1", "net.ipv4.fib_multipath_hash_policy": "1"}
    for i, d in enumerate(plan.directors):
        node = lab.node(d)
        assert node.links == (("eth0", "br0"),)
        assert node.addresses == (("eth0", f"10.77.0.{10 + i}/24"),)  # no VIP: directord adds it
        assert node.routes == (("default", "10.77.0.1"),) and node.sysctls == ()
        assert plan.director_as[d] == 65001 + i
    for i, rs in enumerate(lab.real_servers):
        node = lab.node(rs)
        assert ("eth0", f"10.77.0.{21 + i}/24") in node.addresses
        assert ("lo", "10.77.100.1/32") in node.addresses  # DR real server, replies straight to the client
        assert node.routes == (("default", "10.77.0.1"),)
        assert dict(node.sysctls)["net.ipv4.conf.all.arp_ignore"] == "1"
    # with `directord realserver prep` doing it, the plan leaves the VIP and sysctls out
    bare = plan_ecmp("p", prepare_real_servers=False).lab.node("rs1")
    assert bare.sysctls == () and ("lo", "10.77.100.1/32") not in bare.addresses


@pytest.mark.parametrize(
    "kwargs",
    [
        {"directors": MIN_DIRECTORS - 1},
        {"directors": MAX_DIRECTORS + 1},
        {"real_servers": 0},
        {"client_subnet": "10.77.0.0/25"},  # overlaps the service network
        {"vip": "10.77.0.100"},  # inside the service network: ARP would reach a withdrawn director
        {"vip": "10.77.3.9"},
        {"client_subnet": "fd00::/64"},
    ],
)
def test_plan_rejects_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        plan_ecmp("p", **kwargs)


def test_plan_lab_takes_a_vip_outside_its_subnets():
    assert plan_lab("p", vip="10.9.9.9").vip == "10.9.9.9"
    assert ("lo", "10.9.9.9/32") in plan_lab("p", vip="10.9.9.9").node("rs1").addresses
    with pytest.raises(ValueError):
        plan_lab("p", vip="fd00::1")


@needs_bird
@pytest.mark.parametrize("directors", [MIN_DIRECTORS, 3, MAX_DIRECTORS])
def test_router_bird_conf_is_valid_bird_with_one_bgp_protocol_per_director(tmp_path, directors):
    plan = plan_ecmp("p", directors=directors)
    text = router_bird_conf(plan, log_path=str(tmp_path / "bird.log"))
    conf = tmp_path / "bird.conf"
    conf.write_text(text)
    r = subprocess.run([BIRD, "-p", "-c", str(conf)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert text.count("protocol bgp ") == directors
    for d in plan.directors:
        assert f"neighbor {plan.lab.addr[d]} as {plan.director_as[d]};" in text
    assert "merge paths on limit 16;" in text and "passive on;" in text and "bfd on;" in text
    assert "interval 100 ms;" in text and "multiplier 3;" in text
    with pytest.raises(ValueError):
        router_bird_conf(plan, log_path='/tmp/x"; protocol')


def test_director_config_has_the_service_and_the_bgp_section(tmp_path):
    plan = plan_ecmp("p", directors=4)
    text = director_config(plan, "dir3", state_dir=str(tmp_path / "state"), bgp_run_dir="/w/dir3/bgp")
    doc = yaml.safe_load(text)
    assert doc["bgp"] == {
        "local_as": 65003,
        "router_id": "10.77.0.12",
        "neighbors": [{"address": "10.77.0.1", "as": 65000, "name": "router", "hold_time": 3, "bfd": True}],
        "bfd": {"interval": "100ms", "multiplier": 3},
        "graceful_shutdown_wait": "2s",
        "speaker": {"run_dir": "/w/dir3/bgp"},
        "vips": ["10.77.100.1"],
    }
    # directord takes it (without the bgp section where the loader does not know it yet):
    # mh with mh-port and mh-fallback, DR, quiescent, and no warning
    if "bgp" not in getattr(RootSchema, "model_fields", {}):
        del doc["bgp"]
    config = parse_config(yaml.safe_dump(doc), "dir3.yaml")
    assert list(getattr(config, "warnings", ())) == []
    (svc,) = config.services
    assert (svc.scheduler, svc.scheduler_flags, svc.forwarding, svc.on_failure) == (
        "mh",
        frozenset({"mh-port", "mh-fallback"}),
        "dr",
        "quiescent",
    )
    assert svc.key.address == "10.77.100.1" and svc.key.port == 80
    assert [(r.address, r.port) for r in svc.real_servers] == [(f"10.77.0.{21 + i}", 80) for i in range(3)]
    assert svc.check.type == "http" and svc.check.path == "/healthz"
    with pytest.raises(ValueError):
        director_config(plan, "rs1", state_dir="/s", bgp_run_dir="/b")


# --- parsers of birdc and ip output -------------------------------------------------------------

PROTOCOLS = """\
BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
device1    Device     ---        up     17:30:01.123
kernel1    Kernel     master4    up     17:30:01.123
bfd1       BFD        ---        up     17:30:01.123
dir1       BGP        ---        up     17:30:02.456  Established
dir2       BGP        ---        start  17:30:01.123  Passive
"""


def test_parse_protocols():
    rows = {r["name"]: r for r in parse_protocols(PROTOCOLS)}
    assert set(rows) == {"device1", "kernel1", "bfd1", "dir1", "dir2"}
    assert rows["dir1"] == {
        "name": "dir1",
        "proto": "BGP",
        "table": "---",
        "state": "up",
        "since": "17:30:02.456",
        "info": "Established",
    }
    assert rows["dir2"]["state"] == "start" and rows["dir2"]["info"] == "Passive"
    assert rows["device1"]["info"] == ""
    assert parse_protocols("garbage\n\n1 2\n") == []


def test_parse_next_hops():
    multi = (
        "10.77.100.1 proto bird metric 32 \n"
        "\tnexthop via 10.77.0.10 dev eth1 weight 1 \n"
        "\tnexthop via 10.77.0.11 dev eth1 weight 1 \n"
    )
    assert parse_next_hops(multi) == ["10.77.0.10", "10.77.0.11"]
    assert parse_next_hops("10.77.100.1 via 10.77.0.12 dev eth1 proto bird metric 32 \n") == ["10.77.0.12"]
    assert parse_next_hops("10.77.0.0/24 dev eth1 proto kernel scope link src 10.77.0.1\n") == []
    assert parse_next_hops("") == []


# --- command line ------------------------------------------------------------------------------


def test_lab_up_options_belong_to_their_topology(capsys):
    from director.cli import main

    assert main(["lab", "up", "--directors", "3"]) == 2  # pair: two directors
    assert "--topology ecmp" in capsys.readouterr().err
    assert main(["lab", "up", "--topology", "ecmp", "--mode", "nat"]) == 2
    assert "pair topology" in capsys.readouterr().err


# --- the lab in namespaces (root, no IPVS) --------------------------------------------------------

_problem = netns_problem(PREFIX)
needs_netns = netns_skip(_problem)


def _director_bird(lab: EcmpLab, node: str, workdir: Path) -> subprocess.Popen:
    """A minimal speaker in ``node``: BIRD announcing the VIP (a static blackhole route) to the
    router over eBGP with BFD, as directord's own BIRD will."""
    me = lab.plan.addr[node]
    conf = workdir / f"{node}.conf"
    conf.write_text(
        f"router id {me};\n"
        "protocol device { }\n"
        f"protocol static {{ ipv4; route {lab.vip}/32 blackhole; }}\n"
        'protocol bfd { interface "eth0" { interval 100 ms; multiplier 3; }; }\n'
        "protocol bgp rtr {\n"
        f"  local {me} as {lab.ecmp.director_as[node]};\n"
        f"  neighbor {lab.ecmp.router_addr} as {lab.ecmp.router_as};\n"
        "  hold time 3; connect delay time 0; connect retry time 1; bfd on;\n"
        "  ipv4 { import none; export where source = RTS_STATIC; };\n"
        "}\n"
    )
    return lab.lab.popen(
        node,
        [BIRD, "-f", "-c", str(conf), "-s", str(workdir / f"{node}.ctl")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )


def _lab_command(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "director.cli", "lab", *args], capture_output=True, text=True, timeout=60, env=env
    )


@needs_netns
@needs_bird
def test_ecmp_lab_router_installs_a_multipath_route_over_the_announcing_directors(tmp_path):
    start = time.monotonic()
    lab = EcmpLab(EcmpOptions(prefix=PREFIX, directors=3), tmp_path / "work")
    try:
        lab.up(start_daemons=False)
        assert state_file(PREFIX).exists()
        router = lab.ecmp.router_ns
        assert lab.lab.sysctl("router", "net.ipv4.fib_multipath_hash_policy") == "1"
        assert lab.lab.sysctl("router", "net.ipv4.ip_forward") == "1"
        # the router's BIRD runs with one BGP protocol per director, none established yet
        sessions = lab.bgp_sessions()
        assert set(sessions) == {"dir1", "dir2", "dir3"}
        assert all(s["info"] != "Established" for s in sessions.values())
        assert lab.vip_next_hops() == []
        for d in lab.directors:
            assert f"bgp:\n  local_as: {lab.ecmp.director_as[d]}" in lab.config_path(d).read_text()
        # the real servers are prepared and serve
        for rs in lab.plan.real_servers:
            assert lab.lab.get("/", addr=lab.lab.rip(rs)) == (200, f"{rs}\n")

        _director_bird(lab, "dir1", tmp_path)
        N.wait_until(lambda: lab.vip_next_hops() == ["dir1"], 10, 0.05, what="the route via dir1")
        assert lab.bgp_sessions()["dir1"]["info"] == "Established"
        # client -> router -> dir1: with the VIP on its lo and nothing listening, dir1 refuses
        N.add_address(lab.lab.ns("dir1"), "lo", f"{lab.vip}/32")
        with pytest.raises(ConnectionRefusedError):
            lab.client_get()

        _director_bird(lab, "dir2", tmp_path)
        N.wait_until(lambda: sorted(lab.vip_next_hops()) == ["dir1", "dir2"], 10, 0.05, what="two next hops")
        route = subprocess.run(["ip", "-n", router, "route", "show", lab.vip], capture_output=True, text=True).stdout
        assert f"nexthop via {lab.plan.addr['dir1']} " in route and f"nexthop via {lab.plan.addr['dir2']} " in route

        status = _lab_command("status", "--prefix", PREFIX)
        assert status.returncode == 0, status.stdout + status.stderr
        out = status.stdout
        assert "dir1: up" in out and "Established" in out and "dir3: start" in out
        assert "ECMP next hops: dir1, dir2" in out or "ECMP next hops: dir2, dir1" in out
        assert f"nexthop via {lab.plan.addr['dir1']}" in out and f"nexthop via {lab.plan.addr['dir2']}" in out

        # a node failure: dir1's cable pulled; BFD (300 ms) drops it well before the 3 s hold time
        t0 = time.monotonic()
        lab.node_links("dir1", up=False)
        N.wait_until(lambda: lab.vip_next_hops() == ["dir2"], 2.5, 0.02, what="dir1 dropped by BFD")
        assert time.monotonic() - t0 < 2.5
    finally:
        down = _lab_command("down", "--prefix", PREFIX)
    assert down.returncode == 0, down.stderr
    assert not [n for n in N.list_netns() if n.startswith(PREFIX + "-")]
    assert not state_file(PREFIX).exists() and not (tmp_path / "work").exists()
    assert time.monotonic() - start < 30


def test_bird_binaries_are_where_the_lab_looks():
    if shutil.which("bird") is None:
        pytest.skip("bird2 not installed")
    assert os.path.realpath(shutil.which("bird")) == os.path.realpath(BIRD)
