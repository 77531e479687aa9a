"""`directord realserver prep|undo` on real servers of a namespace lab, with real IPVS (stock-kernel VM).

The lab is built with its real servers left bare (no VIP, no ARP or
rp_filter sysctls, ``tunl0`` untouched): `directord realserver prep` runs in
each real-server namespace instead of the lab's own preparation. Witnesses:
HTTP through the VIP from the client namespace (the director's IPVS table is
programmed by `directord run`), ARP requests for the VIP sent from the client
namespace on a raw socket (which machines answer), and before/after snapshots
of every address, link state and ``net/ipv4|ipv6/conf`` sysctl of the real
servers.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import socket
import struct
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from scapy.layers.l2 import ARP, Ether

from director.lab.drive import DirectordProcess, ipvsadm_table
from director.lab.netns import call_in_netns, link_mac, set_sysctl, wait_until
from director.lab.site import Lab

pytestmark = pytest.mark.kernel

REPO = Path(__file__).resolve().parents[2]
STARTUP_S = 180.0  # the TCG guest is 10-25x slower than a host
_n = itertools.count(1)


def bare_lab(mode: str, real_servers: int = 2) -> Lab:
    """A lab whose real servers carry only their RIP: the lab's own real-server
    preparation (VIP on lo/tunl0, sysctls, tunl0 up) is taken out of its plan."""
    lab = Lab(f"krs{os.getpid()}-{next(_n)}", real_servers=real_servers, mode=mode)
    nodes = []
    for node in lab.plan.nodes:
        if node.role in lab.plan.real_servers:
            node = dataclasses.replace(
                node, addresses=tuple(a for a in node.addresses if a[0] == "eth0"), sysctls=(), tunnel=False
            )
        nodes.append(node)
    lab.plan = dataclasses.replace(lab.plan, nodes=tuple(nodes))
    try:
        return lab.build()
    except BaseException:
        lab.close()
        raise


def realserver(lab: Lab, rs: str, *argv: str, rc: int = 0) -> subprocess.CompletedProcess:
    """Run ``directord realserver ...`` inside real server ``rs``; assert its exit status."""
    r = subprocess.run(
        ["ip", "netns", "exec", lab.ns(rs), sys.executable, "-m", "director.cli", "realserver", *argv],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert r.returncode == rc, f"{argv}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def snapshot(ns: str) -> tuple[list, list, dict]:
    """Addresses (ifname, address, prefixlen, label), links (name, up) and every readable
    net/ipv4/conf and net/ipv6/conf sysctl of ``ns``."""

    def work():
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            links = ipr.get_links()
            names = {m["index"]: m.get_attr("IFLA_IFNAME") for m in links}
            ups = sorted((m.get_attr("IFLA_IFNAME"), bool(m["flags"] & 1)) for m in links)
            addrs = sorted(
                (names[a["index"]], a.get_attr("IFA_ADDRESS"), a["prefixlen"], a.get_attr("IFA_LABEL"))
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
        return addrs, ups, values

    return call_in_netns(ns, work)


def differences(before: tuple, after: tuple) -> dict:
    """What differs between two :func:`snapshot` results (for failure messages; empty when equal)."""
    out: dict = {}
    for name, b, a in zip(("addresses", "links"), before[:2], after[:2]):
        if b != a:
            out[name] = {"gone": sorted(set(b) - set(a)), "new": sorted(set(a) - set(b))}
    sb, sa = before[2], after[2]
    out.update({k: (sb.get(k), sa.get(k)) for k in sorted(set(sb) | set(sa)) if sb.get(k) != sa.get(k)})
    return out


def arp_responders(ns: str, ifname: str, sender_ip: str, target_ip: str, wait_s: float = 3.0) -> set[str]:
    """MAC addresses that answer an ARP request (RFC 826) for ``target_ip`` sent from ``ns``'s ``ifname``.

    Three broadcast requests, 0.5 s apart, on an ``AF_PACKET`` socket bound to
    ``ifname`` (inside the lab namespace); replies are collected for ``wait_s``
    seconds after the first.
    """

    def work():
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
        try:
            s.bind((ifname, 0x0806))
            mac = s.getsockname()[4]
            arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + socket.inet_aton(sender_ip)
            arp += b"\0" * 6 + socket.inet_aton(target_ip)
            frame = b"\xff" * 6 + mac + struct.pack("!H", 0x0806) + arp
            seen: set[str] = set()
            start = time.monotonic()
            sent = 0
            while time.monotonic() - start < wait_s:
                if sent < 3 and time.monotonic() - start >= sent * 0.5:
                    s.send(frame)
                    sent += 1
                s.settimeout(0.1)
                try:
                    data = s.recv(2048)
                except TimeoutError:
                    continue
                reply = Ether(data) if len(data) >= 14 else None  # decoded with scapy
                if reply is not None and ARP in reply and reply[ARP].op == 2 and reply[ARP].psrc == target_ip:
                    seen.add(reply[ARP].hwsrc)
            return seen
        finally:
            s.close()

    return call_in_netns(ns, work)


def service_yaml(lab: Lab, forwarding: str) -> str:
    rs = "\n".join(f"      - {{address: {lab.rip(r)}, port: 80, weight: 1}}" for r in lab.real_servers)
    return (
        "global: {reconcile_interval: 2}\n"
        "virtual_services:\n"
        "  - name: web\n"
        f"    address: {lab.vip}\n"
        "    port: 80\n"
        "    scheduler: rr\n"
        f"    forwarding: {forwarding}\n"
        "    check: {type: http, path: /healthz, expect_body: ok, interval: 1, timeout: 1, rise: 2, fall: 2}\n"
        f"    real_servers:\n{rs}\n"
    )


def serve_through_vip(lab: Lab, workdir: Path, forwarding: str, n: int = 8) -> tuple[Counter, set[str]]:
    """Start `directord run` on dir1 for VIP:80 over every real server, wait until
    it programmed them all, fetch ``n`` pages through the VIP.

    Returns (body -> count, the forwarding words ipvsadm shows for the destinations).
    """
    d = DirectordProcess(lab, workdir)
    d.write(service_yaml(lab, forwarding))
    d.start()
    try:
        want = {f"{lab.rip(r)}:80" for r in lab.real_servers}

        def programmed() -> bool:
            dests = ipvsadm_table(lab).get(f"TCP {lab.vip}:80", {}).get("dests", {})
            return set(dests) == want and all(v[1] == 1 for v in dests.values())

        try:
            wait_until(programmed, timeout=STARTUP_S, interval=0.5, what="directord programs the real servers")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{d.tail()}") from None
        words = {v[0] for v in ipvsadm_table(lab)[f"TCP {lab.vip}:80"]["dests"].values()}
        seen: Counter = Counter()
        for _ in range(n):
            try:
                status, body = lab.get("/", timeout=5.0)
                seen[body.strip() if status == 200 else f"HTTP {status}"] += 1
            except OSError as exc:
                seen[f"error {type(exc).__name__}"] += 1
        return seen, words
    finally:
        d.stop()
        lab.exec(lab.director, ["ipvsadm", "-C"])


@pytest.fixture
def dr_lab():
    lab = bare_lab("dr")
    yield lab
    lab.close()


@pytest.fixture
def tun_lab():
    lab = bare_lab("tun")
    yield lab
    lab.close()


def test_dr_prep_serves_through_the_vip_hides_it_from_arp_and_undo_restores(dr_lab, tmp_path):
    lab = dr_lab
    state = {rs: str(tmp_path / f"{rs}.json") for rs in lab.real_servers}
    before = {rs: snapshot(lab.ns(rs)) for rs in lab.real_servers}

    for rs in lab.real_servers:
        r = realserver(lab, rs, "prep", "--vip", lab.vip, "--mode", "dr", "--state-file", state[rs])
        assert f"add {lab.vip}/32 to lo label lo:dd" in r.stdout
        r = realserver(lab, rs, "prep", "--vip", lab.vip, "--mode", "dr", "--state-file", state[rs])
        assert "nothing to change" in r.stdout
        realserver(lab, rs, "status", "--state-file", state[rs])

    seen, words = serve_through_vip(lab, tmp_path / "directord", "dr")
    assert words == {"Route"}
    assert seen == Counter({rs: 8 // len(lab.real_servers) for rs in lab.real_servers}), seen

    rs_macs = {link_mac(lab.ns(rs), "eth0") for rs in lab.real_servers}
    dir_mac = link_mac(lab.director, "eth0")
    answers = arp_responders(lab.client, "eth0", lab.addr("client"), lab.vip)
    assert dir_mac in answers, answers  # the probe works: the director holds the VIP
    assert not answers & rs_macs, f"a real server answered ARP for the VIP: {answers & rs_macs}"

    # Control: the same probe does see a real server that answers ARP for its lo VIP.
    rs1 = lab.ns("rs1")
    set_sysctl(rs1, "net.ipv4.conf.all.arp_ignore", 0)
    set_sysctl(rs1, "net.ipv4.conf.eth0.arp_ignore", 0)
    try:
        answers = arp_responders(lab.client, "eth0", lab.addr("client"), lab.vip)
        assert link_mac(rs1, "eth0") in answers, answers
    finally:
        set_sysctl(rs1, "net.ipv4.conf.all.arp_ignore", 1)
        set_sysctl(rs1, "net.ipv4.conf.eth0.arp_ignore", 1)

    for rs in lab.real_servers:
        r = realserver(lab, rs, "undo", "--state-file", state[rs])
        assert differences(before[rs], snapshot(lab.ns(rs))) == {}, (rs, r.stdout)
        assert not os.path.exists(state[rs])
        realserver(lab, rs, "status", "--vip", lab.vip, rc=1)


def test_tun_prep_decapsulates_through_tunl0_and_undo_restores(tun_lab, tmp_path):
    lab = tun_lab
    state = {rs: str(tmp_path / f"{rs}.json") for rs in lab.real_servers}
    for rs in lab.real_servers:
        # strict reverse-path filtering, as many distributions ship it: prep must relax it
        for dev in ("all", "tunl0"):
            set_sysctl(lab.ns(rs), f"net.ipv4.conf.{dev}.rp_filter", 1)
    before = {rs: snapshot(lab.ns(rs)) for rs in lab.real_servers}
    for rs in lab.real_servers:
        assert ("tunl0", False) in before[rs][1]  # the ipip module's device, down
        r = realserver(lab, rs, "prep", "--vip", lab.vip, "--mode", "tun", "--state-file", state[rs])
        assert "set link tunl0 up" in r.stdout and f"add {lab.vip}/32 to tunl0 label tunl0:dd" in r.stdout
        assert "set net.ipv4.conf.all.rp_filter = 0 (was 1)" in r.stdout
        assert "set net.ipv4.conf.tunl0.rp_filter = 0 (was 1)" in r.stdout
        realserver(lab, rs, "status", "--vip", lab.vip, "--mode", "tun")

    seen, words = serve_through_vip(lab, tmp_path / "directord", "tun")
    assert words == {"Tunnel"}
    assert seen == Counter({rs: 8 // len(lab.real_servers) for rs in lab.real_servers}), seen

    for rs in lab.real_servers:
        r = realserver(lab, rs, "undo", "--state-file", state[rs])
        diff = differences(before[rs], snapshot(lab.ns(rs)))
        # The kernel gives tunl0 its IPv6 configuration (net/ipv6/conf/tunl0) the first time the
        # link goes up (addrconf's NETDEV_UP), and keeps it when the link goes down; the module's
        # fallback device cannot be deleted. Nothing else may differ.
        kernel_side_effect = {k for k, (b, _a) in diff.items() if k.startswith("ipv6/tunl0/") and b is None}
        assert {k: v for k, v in diff.items() if k not in kernel_side_effect} == {}, (rs, r.stdout)
        realserver(lab, rs, "status", "--vip", lab.vip, "--mode", "tun", rc=1)
