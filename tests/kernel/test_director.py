"""`directord run` against real IPVS in a namespace lab (run inside the stock-kernel VM).

The independent witnesses are `ipvsadm -Ln` (the kernel table), HTTP
requests from the client namespace through the VIP (what users see) and an
nlmon capture of the director's netlink traffic (what the daemon changed).
One lab and one daemon serve the module; each test gives the daemon the
configuration it needs with SIGHUP, as an operator would.
"""

from __future__ import annotations

import signal
import socket
import struct
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from director import control
from director.lab.drive import DirectordProcess as Director
from director.lab.drive import ipvsadm_table
from director.lab.netns import add_address, socket_in_netns, wait_until

pytestmark = pytest.mark.kernel

# Generous bounds: Python in the TCG guest is 10-25x slower than on a host.
STARTUP_S = 120.0
#: The director's metrics listener (``global.http``), on its namespace's loopback.
METRICS = "127.0.0.1:9199"
MARGIN_S = 8.0
INTERVAL, TIMEOUT, RISE, FALL = 1.0, 1.0, 2, 2


# --- reading the kernel table with ipvsadm ----------------------------------------


def programmed(lab) -> dict[str, tuple[str, dict[str, tuple[str, int]]]]:
    """The table without its connection counters: service line -> {dest: (forwarding, weight)}."""
    return {k: (v["line"], {d: e[:2] for d, e in v["dests"].items()}) for k, v in ipvsadm_table(lab).items()}


def dests(lab, port=80) -> dict[str, tuple[str, int, int, int]]:
    return ipvsadm_table(lab).get(f"TCP {lab.vip}:{port}", {}).get("dests", {})


def weight_of(lab, rip: str, port=80) -> int | None:
    d = dests(lab, port).get(f"{rip}:{port}")
    return None if d is None else d[1]


def service_yaml(
    lab,
    *,
    scheduler="rr",
    weights=(1, 1, 1),
    rs=("rs1", "rs2", "rs3"),
    extra="",
    check="",
    on_failure="quiescent",
    reconcile=2,
    fallback=None,
) -> str:
    rs_lines = "\n".join(f"      - {{address: {lab.rip(r)}, port: 80, weight: {w}}}" for r, w in zip(rs, weights))
    check = check or (
        f"{{type: http, path: /healthz, expect_body: ok, interval: {INTERVAL}, timeout: {TIMEOUT}, "
        f"rise: {RISE}, fall: {FALL}}}"
    )
    fb = f"    fallback: {{address: {lab.rip(fallback)}, port: 80}}\n" if fallback else ""
    return (
        f'global: {{reconcile_interval: {reconcile}, drain_timeout: 120, http: {{listen: "{METRICS}"}}}}\n'
        f"virtual_services:\n"
        f"  - name: web\n"
        f"    address: {lab.vip}\n"
        f"    port: 80\n"
        f"    scheduler: {scheduler}\n"
        f"    on_failure: {on_failure}\n"
        f"    check: {check}\n"
        f"{fb}{extra}"
        f"    real_servers:\n{rs_lines}\n"
    )


def scrape(lab) -> dict[str, list[tuple[dict[str, str], float]]]:
    """The director's ``/metrics`` (``global.http`` on its loopback), read with curl in its
    namespace and parsed with prometheus-client's parser: samples by name."""
    text = lab.exec(lab.director, ["curl", "-sS", "--max-time", "30", f"http://{METRICS}/metrics"], timeout=60).stdout
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return found


def metric(found, name: str, **labels: str) -> float | None:
    """The value of the one sample of ``name`` whose labels include ``labels``, or None."""
    values = [v for have, v in found.get(name, []) if all(have.get(k) == w for k, w in labels.items())]
    assert len(values) <= 1, (name, labels, values)
    return values[0] if values else None


def kernel_conns(lab) -> dict[str, int]:
    """Connections scheduled per real server ``ADDRESS:PORT`` of the lab's service, as
    ``ipvsadm -Ln --stats --exact`` (an independent reader of the kernel's counters) shows them."""
    out = lab.exec(lab.director, ["ipvsadm", "-Ln", "--stats", "--exact", "-t", f"{lab.vip}:80"]).stdout
    rows = (line.split() for line in out.splitlines())
    # the header's "  -> RemoteAddress:Port" has no counts
    return {f[1]: int(f[2]) for f in rows if len(f) > 2 and f[0] == "->" and f[2].isdigit()}


def expect(pred, what: str, timeout: float, director: Director | None = None) -> float:
    """Poll ``pred`` until true; return the seconds it took.  Fails naming ``what``."""
    start = time.monotonic()
    try:
        wait_until(pred, timeout=timeout, interval=0.2, what=what)
    except Exception as exc:
        extra = f"\n--- directord log ---\n{director.tail()}" if director else ""
        raise AssertionError(f"{what}: not within {timeout} s ({exc}){extra}") from None
    return time.monotonic() - start


def all_weights(lab, expected: dict[str, int]):
    return lambda: (
        all(weight_of(lab, lab.rip(r)) == w for r, w in expected.items()) and len(dests(lab)) == len(expected)
    )


def fetch(lab, n: int, timeout=3.0) -> Counter:
    seen: Counter = Counter()
    for _ in range(n):
        try:
            status, body = lab.get("/", timeout=timeout)
            seen[body.strip() if status == 200 else f"HTTP {status}"] += 1
        except OSError as exc:
            seen[f"error {type(exc).__name__}"] += 1
    return seen


@pytest.fixture(scope="module")
def director(lab, tmp_path_factory):
    lab.exec(lab.director, ["ipvsadm", "-C"])
    # With direct routing the director never sees the real server's FIN, so a finished
    # connection sits in FIN_WAIT (2 min) and, with the default conn_reuse_mode 1, a new
    # connection that reuses its client port is sent to the old (maybe quiesced) real
    # server instead of being scheduled. Bit 2 reschedules those too (ip_vs sysctl doc).
    lab.sysctl("dir1", "net.ipv4.vs.conn_reuse_mode", 3)
    d = Director(lab, tmp_path_factory.mktemp("directord"))
    d.write(service_yaml(lab))
    d.start()
    try:
        expect(all_weights(lab, {"rs1": 1, "rs2": 1, "rs3": 1}), "daemon programs the table", STARTUP_S, d)
        yield d
    finally:
        d.stop()
        lab.exec(lab.director, ["ipvsadm", "-C"])


@pytest.fixture
def fresh(lab, director):
    """Every real server serving and in the table at weight 1, rr."""
    lab.reset_real_servers()
    director.reload(service_yaml(lab))
    expect(all_weights(lab, {"rs1": 1, "rs2": 1, "rs3": 1}), "all real servers up", 60, director)
    assert "rr" in ipvsadm_table(lab)[f"TCP {lab.vip}:80"]["line"]
    return director


# --- scheduling -------------------------------------------------------------------


def test_rr_spreads_requests_evenly(lab, fresh):
    assert fetch(lab, 30) == Counter({"rs1": 10, "rs2": 10, "rs3": 10})
    assert all(d[0] == "Route" for d in dests(lab).values())


def test_wrr_follows_weights(lab, fresh):
    fresh.reload(service_yaml(lab, scheduler="wrr", weights=(1, 3), rs=("rs1", "rs2")))
    expect(all_weights(lab, {"rs1": 1, "rs2": 3}), "wrr 1:3 programmed", 60, fresh)
    seen = fetch(lab, 400)
    assert seen["rs1"] + seen["rs2"] == 400, seen
    assert 90 <= seen["rs1"] <= 110 and 290 <= seen["rs2"] <= 310, seen


def test_sh_keeps_each_source_on_one_server(lab, fresh):
    fresh.reload(service_yaml(lab, scheduler="sh"))
    expect(lambda: " sh" in ipvsadm_table(lab)[f"TCP {lab.vip}:80"]["line"], "sh programmed", 60, fresh)
    sources = [f"10.77.0.{150 + i}" for i in range(8)]
    for src in sources:
        add_address(lab.client, "eth0", f"{src}/24", exist_ok=True)
    chosen: dict[str, set[str]] = {}
    for src in sources:
        for _ in range(4):
            s = socket_in_netns(lab.client)
            try:
                s.settimeout(3)
                s.bind((src, 0))
                s.connect((lab.vip, 80))
                s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
            finally:
                s.close()
            chosen.setdefault(src, set()).add(data.split(b"\r\n\r\n", 1)[1].strip().decode())
    assert all(len(v) == 1 for v in chosen.values()), chosen
    assert len(set().union(*chosen.values())) >= 2, chosen


# --- health checks ------------------------------------------------------------------


def test_killed_real_server_is_quiesced_then_returns(lab, fresh):
    rip = lab.rip("rs2")
    lab.stop_httpd("rs2", kill=True)
    took = expect(lambda: weight_of(lab, rip) == 0, "rs2 quiesced", INTERVAL * FALL + TIMEOUT + MARGIN_S, fresh)
    assert took <= INTERVAL * FALL + TIMEOUT + MARGIN_S
    # the daemon's event stream tells the same story, in order: the health transition, then the
    # set_dest to weight 0 that ipvsadm shows (read as `directord events --json --recent` reads it)
    events = [e for e in control.stream(fresh.socket, timeout=30, recent=1000, follow=False) if "kind" in e]
    down = [
        e["seq"]
        for e in events
        if e["kind"] == "check.health"
        and e["real_server"] == f"{rip}:80"
        and e["new"] == "down"
        and e["service"] == "web"
    ]
    quiesced = [
        e["seq"]
        for e in events
        if e["kind"] == "ipvs.applied"
        and e["op"] == "set_dest"
        and e["real_server"] == f"{rip}:80"
        and e["weight"] == 0
    ]
    assert down and quiesced and down[-1] < quiesced[-1], events[-10:]
    # `directord status` shows the latest of them
    recent = control.request(fresh.socket, "status", timeout=30)["status"]["recent_events"]
    assert quiesced[-1] in [e["seq"] for e in recent], recent
    seen = fetch(lab, 12)
    assert seen == Counter({"rs1": 6, "rs3": 6}), seen
    # /metrics tells it too: rs2 down with its transition counted, and the connections the
    # kernel scheduled to each real server equal to what ipvsadm reads from the kernel
    m = scrape(lab)
    assert metric(m, "directord_real_server_health", remote_address=rip, state="down", service="web") == 1
    assert (metric(m, "directord_real_server_transitions_total", remote_address=rip, state="down") or 0) >= 1
    # the kernel (6.1) sums its per-CPU connection counters into what a dump reports every 2 s
    # (the IPVS estimator's timer): a scrape and an ipvsadm read agree once both fall in one
    # such period, which the next few reads do
    seen_reads: list = []

    def conns_agree() -> bool:
        found, kernel = scrape(lab), kernel_conns(lab)
        conns = {
            r: metric(found, "directord_ipvs_backend_connections_total", remote_address=lab.rip(r), service="web")
            for r in ("rs1", "rs2", "rs3")
        }
        seen_reads.append((conns, kernel))
        return all(conns[r] == kernel[f"{lab.rip(r)}:80"] for r in conns)

    try:
        expect(conns_agree, "/metrics and ipvsadm agree on the connections", 30, fresh)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nlast reads (metrics, ipvsadm): {seen_reads[-3:]}") from None
    assert seen_reads[-1][1][f"{lab.rip('rs1')}:80"] >= 6
    lab.start_httpd("rs2")
    expect(lambda: weight_of(lab, rip) == 1, "rs2 back after rise", INTERVAL * RISE + TIMEOUT + MARGIN_S, fresh)


def test_remove_on_failure_deletes_the_destination(lab, fresh):
    fresh.reload(service_yaml(lab, on_failure="remove"))
    time.sleep(1)
    lab.stop_httpd("rs3", kill=True)
    expect(lambda: f"{lab.rip('rs3')}:80" not in dests(lab), "rs3 removed", INTERVAL * FALL + TIMEOUT + MARGIN_S, fresh)


def test_hung_backend_does_not_delay_another_backends_detection(lab, fresh):
    """A real server that accepts and never answers holds its own check for the whole
    timeout (10 s); a killed one is out long before that, so a checker that ran its
    checks one after another behind the hung one would fail here."""
    hung_timeout = 10.0
    reloads = fresh.log.read_text(errors="replace").count("reloaded:")
    fresh.reload(
        service_yaml(
            lab,
            check=(
                f"{{type: http, path: /healthz, expect_body: ok, interval: {INTERVAL}, timeout: {hung_timeout}, "
                f"rise: {RISE}, fall: 1}}"
            ),
        )
    )
    expect(lambda: fresh.log.read_text(errors="replace").count("reloaded:") > reloads, "the reload", 60, fresh)
    time.sleep(3 * INTERVAL)  # the new checks run
    t0 = time.monotonic()
    lab.set_hang("rs1", True)
    lab.stop_httpd("rs3", kill=True)
    expect(lambda: weight_of(lab, lab.rip("rs3")) == 0, "killed rs3 out", hung_timeout, fresh)
    t_dead = time.monotonic() - t0
    assert weight_of(lab, lab.rip("rs1")) == 1, "the hung rs1 is out before its check's timeout"
    assert t_dead < hung_timeout - 2 * INTERVAL, t_dead
    expect(lambda: weight_of(lab, lab.rip("rs1")) == 0, "hung rs1 out", hung_timeout + 2 * INTERVAL + MARGIN_S, fresh)
    t_hung = time.monotonic() - t0
    assert t_hung >= hung_timeout - INTERVAL, t_hung  # only its own timeout took it out
    assert fetch(lab, 6) == Counter({"rs2": 6})


def test_fallback_server_serves_when_every_real_server_is_down(lab, fresh):
    fresh.reload(service_yaml(lab, rs=("rs1", "rs2"), weights=(1, 1), fallback="rs3"))
    expect(all_weights(lab, {"rs1": 1, "rs2": 1}), "two real servers", 60, fresh)
    lab.stop_httpd("rs1", kill=True)
    lab.stop_httpd("rs2", kill=True)
    expect(lambda: weight_of(lab, lab.rip("rs3")) == 1, "fallback added", INTERVAL * FALL + TIMEOUT + MARGIN_S, fresh)
    assert fetch(lab, 4) == Counter({"rs3": 4})
    lab.start_httpd("rs1")
    expect(
        lambda: weight_of(lab, lab.rip("rs3")) is None, "fallback removed", INTERVAL * RISE + TIMEOUT + MARGIN_S, fresh
    )
    assert fetch(lab, 4) == Counter({"rs1": 4})


# --- reconciliation -------------------------------------------------------------------


def test_manual_delete_is_repaired_on_the_next_pass(lab, fresh):
    # ipvsadm exits non-zero unless the destination was there and is now deleted (exec checks it);
    # reading the table back here would race with the 2 s drift-repair pass.
    lab.exec(lab.director, ["ipvsadm", "-d", "-t", f"{lab.vip}:80", "-r", f"{lab.rip('rs1')}:80"])
    expect(lambda: weight_of(lab, lab.rip("rs1")) == 1, "rs1 restored by the drift-repair pass", 2 + MARGIN_S, fresh)
    # counted as a drift repair of that service in the metrics
    repairs = metric(scrape(lab), "directord_ipvs_drift_repairs_total", service="web", op="add_dest")
    assert repairs is not None and repairs >= 1, repairs


def test_foreign_service_is_left_alone(lab, fresh):
    lab.exec(lab.director, ["ipvsadm", "-A", "-t", "10.77.0.200:8080", "-s", "lc"])
    try:
        time.sleep(5)  # more than two drift-repair passes
        assert "TCP 10.77.0.200:8080" in ipvsadm_table(lab)
    finally:
        lab.exec(lab.director, ["ipvsadm", "-D", "-t", "10.77.0.200:8080"])


def test_invalid_reload_keeps_table_and_valid_reload_applies(lab, fresh):
    before = programmed(lab)
    fresh.reload("virtual_services:\n  - address: not-an-ip\n    port: 80\n")
    expect(lambda: "reload refused" in fresh.tail(), "invalid reload refused", 60, fresh)
    time.sleep(3)
    assert fresh.alive()
    assert programmed(lab) == before
    fresh.reload(service_yaml(lab, scheduler="wlc"))
    expect(lambda: " wlc" in ipvsadm_table(lab)[f"TCP {lab.vip}:80"]["line"], "valid reload applied", 60, fresh)


def test_removed_real_server_drains_while_a_connection_is_open(lab, fresh):
    fresh.reload(service_yaml(lab, scheduler="rr", rs=("rs1",), weights=(1,)))
    expect(all_weights(lab, {"rs1": 1}), "only rs1", 60, fresh)
    fresh.reload(service_yaml(lab, scheduler="rr", rs=("rs1", "rs2"), weights=(0, 1)))
    expect(all_weights(lab, {"rs1": 0, "rs2": 1}), "only rs2 takes new connections", 60, fresh)
    held = socket_in_netns(lab.client)
    try:
        held.settimeout(5)
        held.connect((lab.vip, 80))  # lands on rs2, the only weighted server
        expect(lambda: dests(lab)[f"{lab.rip('rs2')}:80"][2] == 1, "ActiveConn 1 on rs2", 30, fresh)
        fresh.reload(service_yaml(lab, scheduler="rr", rs=("rs1",), weights=(1,)))
        expect(lambda: weight_of(lab, lab.rip("rs2")) == 0, "rs2 draining at weight 0", 60, fresh)
        time.sleep(4)  # several drain polls: still there while the connection lives
        assert weight_of(lab, lab.rip("rs2")) == 0
    finally:
        held.close()
    expect(lambda: weight_of(lab, lab.rip("rs2")) is None, "rs2 deleted once drained", 30, fresh)


# --- restart without change --------------------------------------------------------------

IPVS_CHANGE_CMDS = {1, 2, 3, 5, 6, 7}  # NEW/SET/DEL_SERVICE, NEW/SET/DEL_DEST (include/uapi/linux/ip_vs.h)
IPVS_CMD_GET_SERVICE = 4
NLM_F_REQUEST = 0x1


def ipvs_family_id() -> int:
    from pyroute2.netlink.generic import GenericNetlinkSocket
    from pyroute2.netlink.generic.ipvs import ipvsmsg

    s = GenericNetlinkSocket()
    try:
        s.bind("IPVS", ipvsmsg)
        return s.prid
    finally:
        s.close()


def netlink_requests(pcap: Path, family: int) -> list[int]:
    """Generic-netlink command numbers of the requests sent to ``family`` in an nlmon capture.

    The records are read with scapy's pcap reader (tcpdump may still be writing: a record cut
    short at the end is read as far as it goes); the netlink header (``struct nlmsghdr``, host
    order) is taken apart here, scapy having no generic-netlink layer.
    """
    from scapy.utils import RawPcapReader

    with RawPcapReader(str(pcap)) as reader:
        records = [data for data, _meta in reader]
    cmds = []
    for pkt in records:
        # DLT_NETLINK frames carry the netlink message itself; Linux cooked frames put 16 bytes first.
        for start in (0, 16):
            if len(pkt) >= start + 20:
                length, mtype, flags = struct.unpack_from("<IHH", pkt, start)
                if mtype == family and flags & NLM_F_REQUEST and length >= 20:
                    cmds.append(pkt[start + 16])
                    break
    return cmds


def settled(d: Director) -> bool:
    """The running daemon answers on its control socket and every real server is up."""
    from director import control

    try:
        doc = control.request(d.socket, "status", timeout=5)["status"]
    except (OSError, ValueError, KeyError):
        return False
    rows = [rs for svc in doc["services"] for rs in svc["real_servers"] if rs["role"] == "real"]
    return doc["pid"] == d.proc.pid and len(rows) == 3 and all(rs["health"] == "up" for rs in rows)


def test_restart_issues_no_ipvs_change(lab, fresh, tmp_path):
    family = ipvs_family_id()
    lab.exec(lab.director, ["ip", "link", "add", "nlmon0", "type", "nlmon"], check=False)
    lab.exec(lab.director, ["ip", "link", "set", "nlmon0", "up"])
    pcap = tmp_path / "nlmon.pcap"
    dump = lab.popen(
        "dir1", ["tcpdump", "-i", "nlmon0", "-U", "-w", str(pcap)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        expect(lambda: pcap.exists() and pcap.stat().st_size >= 24, "tcpdump started", 60)
        time.sleep(2)
        before = programmed(lab)
        fresh.stop()
        dumps_before = netlink_requests(pcap, family).count(IPVS_CMD_GET_SERVICE)
        assert dumps_before > 0  # the capture sees the daemon's requests
        fresh.start()
        # the new daemon has read the table (its dumps are in the capture) and its checks settled
        expect(
            lambda: netlink_requests(pcap, family).count(IPVS_CMD_GET_SERVICE) > dumps_before,
            "restarted daemon dumped the table",
            STARTUP_S,
            fresh,
        )
        expect(lambda: settled(fresh), "checks of the restarted daemon settled", STARTUP_S, fresh)
        time.sleep(3)
        assert programmed(lab) == before
    finally:
        dump.send_signal(signal.SIGINT)
        dump.wait(timeout=30)
        lab.exec(lab.director, ["ip", "link", "del", "nlmon0"], check=False)
    cmds = netlink_requests(pcap, family)
    assert IPVS_CMD_GET_SERVICE in cmds
    assert not [c for c in cmds if c in IPVS_CHANGE_CMDS], cmds


def test_operator_drain_and_disable_reach_the_kernel_and_outlive_a_restart(lab, fresh):
    """``directord rs`` (its control request): drain puts rs2 at weight 0, disable takes it out
    of the table, a restarted daemon keeps it out, enable brings it back (ipvsadm reads it)."""
    rip = f"{lab.rip('rs2')}:80"

    def rs(action: str) -> None:
        reply = control.request(fresh.socket, "rs", action=action, service="web", real_server=rip, reason="test")
        assert reply["ok"], reply

    try:
        rs("drain")
        expect(all_weights(lab, {"rs1": 1, "rs2": 0, "rs3": 1}), "rs2 drained to weight 0", 30, fresh)
        rs("disable")
        expect(lambda: set(dests(lab)) == {f"{lab.rip(r)}:80" for r in ("rs1", "rs3")}, "rs2 out", 30, fresh)
        fresh.stop()
        fresh.start()
        expect(lambda: settled(fresh), "checks of the restarted daemon settled", STARTUP_S, fresh)
        time.sleep(3)  # a reconcile pass (2 s) and more: rs2 stays out, the others in
        assert set(dests(lab)) == {f"{lab.rip(r)}:80" for r in ("rs1", "rs3")}, dests(lab)
        status = control.request(fresh.socket, "status")["status"]
        row = next(r for r in status["services"][0]["real_servers"] if r["address"] == lab.rip("rs2"))
        assert (row["admin"], row["admin_reason"]) == ("disabled", "test")
    finally:
        rs("enable")
    expect(all_weights(lab, {"rs1": 1, "rs2": 1, "rs3": 1}), "rs2 back in", 30, fresh)


# --- weights that follow load: agent, slow start ------------------------------------------

AGENT_PORT = 9777


class Agents:
    """HAProxy-style agents on the real servers: a listening socket in each real server's
    namespace (made from this process, `socket_in_netns`), answering each connection with the
    line set in ``answers[rs]`` and closing it, as an agent does."""

    def __init__(self, lab, names):
        import threading

        self.answers = {name: "up\n" for name in names}
        self.asked = Counter()
        self._socks = []
        self._stop = threading.Event()
        self._threads = []
        for name in names:
            sock = socket_in_netns(lab.ns(name))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((lab.rip(name), AGENT_PORT))
            sock.listen(64)
            sock.settimeout(0.2)
            self._socks.append(sock)
            thread = threading.Thread(target=self._serve, args=(name, sock), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, name, sock):
        while not self._stop.is_set():
            try:
                conn, _ = sock.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                self.asked[name] += 1
                conn.sendall(self.answers[name].encode())

    def close(self):
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)
        for sock in self._socks:
            sock.close()


def health_of(d: Director, rip: str) -> str | None:
    """The health `directord status` shows for the real server at ``rip`` of the lab's service."""
    doc = control.request(d.socket, "status", timeout=30)["status"]
    rows = [rs for svc in doc["services"] for rs in svc["real_servers"] if rs["address"] == rip]
    return rows[0]["health"] if rows else None


def test_agent_weights_and_slow_start_reach_the_kernel(lab, fresh):
    """The agents' answers set the IPVS weights (ipvsadm reads them) and the clients' share of
    requests follows them; a real server that comes back up ramps from weight 1 to its weight in
    steps (``slow_start``) instead of taking its full share at once."""
    agents = Agents(lab, ("rs1", "rs2"))
    slow = 6.0
    try:
        agents.answers.update(rs1="50%\n", rs2="100%\n")
        check = (
            f"{{type: http, path: /healthz, expect_body: ok, interval: {INTERVAL}, timeout: {TIMEOUT}, "
            f"rise: {RISE}, fall: {FALL}, agent_port: {AGENT_PORT}, slow_start: {slow}}}"
        )
        fresh.reload(service_yaml(lab, scheduler="wrr", weights=(10, 10), rs=("rs1", "rs2"), check=check))
        expect(all_weights(lab, {"rs1": 5, "rs2": 10}), "agent: rs1 at 50% of 10", 60, fresh)
        seen = fetch(lab, 150)
        assert seen["rs1"] + seen["rs2"] == 150, seen
        assert 40 <= seen["rs1"] <= 60 and 90 <= seen["rs2"] <= 110, seen  # 1:2 as the weights
        agents.answers["rs1"] = "drain\n"
        expect(all_weights(lab, {"rs1": 0, "rs2": 10}), "agent: rs1 drains", 30, fresh)
        agents.answers["rs1"] = "maint\n"
        expect(lambda: health_of(fresh, lab.rip("rs1")) == "down", "agent: rs1 maint fails its check", 30, fresh)
        assert weight_of(lab, lab.rip("rs1")) == 0  # quiesced
        agents.answers["rs1"] = "ready 100%\n"
        # rs1 comes back up after rise: a slow start from 1 to 10 over `slow` seconds
        weights = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            w = weight_of(lab, lab.rip("rs1"))
            if not weights or weights[-1] != w:
                weights.append(w)
            if w == 10:
                break
            time.sleep(0.1)
        steps = [w for w in weights if w not in (0, None)]
        assert steps and steps[-1] == 10, weights
        assert steps == sorted(steps), weights  # only up
        assert len([w for w in steps if 1 <= w < 10]) >= 2, weights  # ramped through steps, not at once
        events = [e for e in control.stream(fresh.socket, timeout=30, recent=1000, follow=False) if "kind" in e]
        rs1 = f"{lab.rip('rs1')}:80"
        ramp = [e["reason"] for e in events if e["kind"] == "check.weight" and e["real_server"] == rs1]
        assert any(r.startswith("slow start 0/") for r in ramp) and any(r == "slow start 10/10" for r in ramp), ramp
        assert agents.asked["rs1"] >= 4 and agents.asked["rs2"] >= 4, agents.asked
    finally:
        agents.close()


# --- forwarding methods ------------------------------------------------------------------

FORWARD_WORD = {"dr": "Route", "nat": "Masq", "tun": "Tunnel"}


@pytest.mark.parametrize("method", ["nat", "tun"])
def test_forwarding_method_carries_client_traffic(lab_factory, tmp_path, method):
    lab = lab_factory(mode=method, real_servers=2)
    d = Director(lab, tmp_path)
    d.write(
        service_yaml(lab, rs=("rs1", "rs2"), weights=(1, 1), reconcile=5).replace(
            "    on_failure:", f"    forwarding: {method}\n    on_failure:"
        )
    )
    d.start()
    try:
        expect(all_weights(lab, {"rs1": 1, "rs2": 1}), f"{method} service programmed", STARTUP_S, d)
        assert {v[0] for v in dests(lab).values()} == {FORWARD_WORD[method]}
        assert fetch(lab, 6) == Counter({"rs1": 3, "rs2": 3})
    finally:
        d.stop()
