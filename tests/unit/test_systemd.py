"""systemd integration: sd_notify(3) messages, the watchdog, and the unit files.

The daemon's notifications are received on a test ``NOTIFY_SOCKET`` (a unix
datagram socket, by path and by abstract name) from a real `Daemon` on the
host (without ip_vs its first reconcile pass fails, is logged, and still
counts as done).
"""

import asyncio
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest

from director import control, systemd
from director.daemon import Daemon

ROOT = Path(__file__).resolve().parents[2]


# --- messages and environment --------------------------------------------------


def test_socket_address_path_and_abstract():
    assert systemd.socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert systemd.socket_address("@sd-notify/1") == b"\0sd-notify/1"
    for bad in ("", "@", "relative/path", "vsock:2:1234"):
        with pytest.raises(ValueError):
            systemd.socket_address(bad)


def test_messages():
    assert systemd.ready_message() == b"READY=1"
    assert systemd.ready_message("2 virtual services") == b"READY=1\nSTATUS=2 virtual services"
    assert systemd.stopping_message() == b"STOPPING=1\nSTATUS=stopping"
    assert systemd.reloading_message(1234567) == (
        b"RELOADING=1\nMONOTONIC_USEC=1234567\nSTATUS=reloading the configuration"
    )
    # a newline would end the assignment: it becomes a space, and a long line is cut
    assert systemd.status_message("a\nb\r\nc") == b"STATUS=a b c"
    long = systemd.status_message("x" * 1000)
    assert len(long) == len("STATUS=") + systemd.STATUS_MAX and long.endswith(b"...")
    assert systemd.message({"READY": 1, "X_Y2": "é"}) == "READY=1\nX_Y2=é".encode()
    with pytest.raises(ValueError):
        systemd.message({"ready": 1})
    with pytest.raises(ValueError):
        systemd.message({"A=B": 1})


def test_monotonic_usec_is_clock_monotonic_in_microseconds():
    before = time.clock_gettime(time.CLOCK_MONOTONIC)
    usec = systemd.monotonic_usec()
    after = time.clock_gettime(time.CLOCK_MONOTONIC)
    assert before * 1e6 - 1 <= usec <= after * 1e6 + 1


def test_status_line():
    assert systemd.status_line(3, 12, 14, "active") == "3 virtual services, 12/14 real servers up, HA active"
    assert systemd.status_line(1, 0, 1) == "1 virtual service, 0/1 real server up"
    assert systemd.status_line(0, 0, 0) == "0 virtual services, 0/0 real servers up"


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "10000000"}, 5.0),
        ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "4242"}, 5.0),
        ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "4243"}, None),  # another process's watchdog
        ({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "x"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "10s"}, None),
        ({"WATCHDOG_USEC": ""}, None),
    ],
)
def test_watchdog_interval(environ, expected):
    assert systemd.watchdog_interval(environ, 4242) == expected


def test_from_environ_reads_and_removes_the_variables():
    environ = {"NOTIFY_SOCKET": "@n", "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "7", "PATH": "/bin"}
    notifier = systemd.Notifier.from_environ(environ, pid=7)
    assert notifier.enabled and notifier.address == b"\0n" and notifier.watchdog == 1.0
    assert environ == {"PATH": "/bin"}  # children (the checker, external checks) do not inherit them

    environ = {"NOTIFY_SOCKET": "/run/n", "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "8"}
    notifier = systemd.Notifier.from_environ(environ, pid=7)
    assert notifier.enabled and notifier.watchdog is None and environ == {}


def test_from_environ_without_notify_socket_sends_nothing():
    environ = {"WATCHDOG_USEC": "2000000"}
    notifier = systemd.Notifier.from_environ(environ, pid=1)
    assert not notifier.enabled and notifier.watchdog is None and environ == {}
    assert notifier.send(b"READY=1") is False and notifier.sent == 0


def test_unsupported_notify_socket_is_logged_and_ignored(caplog):
    with caplog.at_level(logging.WARNING, "directord.systemd"):
        notifier = systemd.Notifier.from_environ({"NOTIFY_SOCKET": "vsock:2:99"}, pid=1)
    assert not notifier.enabled
    assert "vsock:2:99" in caplog.text


def test_send_errors_are_logged_once_and_never_raised(tmp_path, caplog):
    notifier = systemd.Notifier(str(tmp_path / "nobody-listens"))
    with caplog.at_level(logging.WARNING, "directord.systemd"):
        assert notifier.send(b"READY=1") is False
        assert notifier.send(b"STATUS=x") is False
    assert [r.getMessage() for r in caplog.records].count(caplog.records[0].getMessage()) == 1
    assert "ENOENT" in caplog.text
    notifier.close()


def test_send_never_blocks_on_a_full_socket(tmp_path, caplog):
    """A receiver that reads nothing: the datagrams beyond its buffer are dropped (EAGAIN, logged
    once), the sender goes on at once."""
    path = str(tmp_path / "n")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as receiver:
        receiver.bind(path)
        notifier = systemd.Notifier(path)
        start = time.monotonic()
        with caplog.at_level(logging.WARNING, "directord.systemd"):
            results = [notifier.send(b"STATUS=" + b"x" * 1000) for _ in range(2000)]
        assert time.monotonic() - start < 2.0
        assert results[0] is True and results[-1] is False
        assert caplog.text.count("EAGAIN") == 1
        notifier.close()


# --- the daemon ----------------------------------------------------------------------


class Receiver:
    """A NOTIFY_SOCKET: a unix datagram socket read by a thread, each message kept with the
    monotonic time it arrived (a thread, so that arrival times stay right while the event loop
    under test is blocked)."""

    def __init__(self, address):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, dict[str, str]]] = []
        self._running = True
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        while self._running:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().split("\n") if line)
            self.messages.append((time.monotonic(), fields))

    def with_field(self, name):
        return [(t, m) for t, m in list(self.messages) if name in m]

    async def wait_for(self, name, value=None, count=1, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [(t, m) for t, m in self.with_field(name) if value is None or m[name] == value]
            if len(found) >= count:
                return found[count - 1]
            await asyncio.sleep(0.01)
        raise AssertionError(f"no {name}={value} (x{count}) in {self.messages}")

    def close(self):
        self._running = False
        self._thread.join()
        self.sock.close()


@pytest.fixture
def notify_dir():
    # short: a unix socket path is at most 107 bytes, tmp_path can be longer
    path = tempfile.mkdtemp(prefix="sdn-", dir="/tmp")
    yield Path(path)
    shutil.rmtree(path, ignore_errors=True)


CONFIG = """\
global:
  reconcile_interval: 1
virtual_services:
  - name: web
    address: 127.0.0.100
    port: 80
    scheduler: rr
    forwarding: nat
    check: {{type: tcp, interval: 0.1, timeout: 0.5, rise: 1, fall: 1}}
    real_servers:
      - {{address: 127.0.0.1, port: {up_port}}}
      - {{address: 127.0.0.1, port: {down_port}}}
"""


def free_port():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


async def test_ready_status_reload_and_stopping(tmp_path, notify_dir, monkeypatch):
    """READY=1 comes only once the control socket answers and the first reconcile pass ran;
    STATUS= follows the health of the real servers; RELOADING=1 then READY=1 around a reload;
    STOPPING=1 at stop."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    up_port, down_port = listener.getsockname()[1], free_port()
    cfg = tmp_path / "directord.yaml"
    cfg.write_text(textwrap.dedent(CONFIG.format(up_port=up_port, down_port=down_port)))
    sock_path = str(tmp_path / "run" / "directord.sock")
    receiver = Receiver(str(notify_dir / "notify"))
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify_dir / "notify"))
    daemon = Daemon(str(cfg), control_socket=sock_path)

    # the first reconcile pass is made slow, and when it ends no READY has been sent yet
    real_full_pass = daemon.reconciler.full_pass
    passes = []

    async def slow_full_pass():
        await asyncio.sleep(0.5)
        result = await real_full_pass()
        passes.append((time.monotonic(), len(receiver.with_field("READY"))))
        return result

    monkeypatch.setattr(daemon.reconciler, "full_pass", slow_full_pass)
    task = asyncio.create_task(daemon.run())
    try:
        ready_at, ready = await receiver.wait_for("READY", "1")
        assert passes and passes[0][0] <= ready_at and passes[0][1] == 0  # the first pass ended before READY
        # the control socket answers at once, on the first try
        reply = await asyncio.to_thread(control.request, sock_path, "status", 2.0)
        assert reply["ok"] is True
        assert ready["STATUS"].startswith("1 virtual service, ") and ready["STATUS"].endswith("/2 real servers up")
        assert "NOTIFY_SOCKET" not in os.environ  # not passed on to the checker or external checks
        assert daemon.engine.pid is not None

        # the checks' results show in STATUS= (sent on change only, at most once a second)
        await receiver.wait_for("STATUS", "1 virtual service, 1/2 real servers up")
        statuses = [m["STATUS"] for _, m in receiver.with_field("STATUS")]
        assert all(a != b for a, b in zip(statuses, statuses[1:]))

        # a reload: RELOADING=1 (with MONOTONIC_USEC) then READY=1, also for a refused file
        before = systemd.monotonic_usec()
        assert (await asyncio.to_thread(control.request, sock_path, "reload"))["ok"] is True
        _, reloading = await receiver.wait_for("RELOADING", "1")
        assert before <= int(reloading["MONOTONIC_USEC"]) <= systemd.monotonic_usec()
        _, ready_again = await receiver.wait_for("READY", "1", count=2)
        assert ready_again["STATUS"] == "1 virtual service, 1/2 real servers up"
        cfg.write_text("virtual_services: [ {address: nope} ]\n")
        assert (await asyncio.to_thread(control.request, sock_path, "reload"))["ok"] is False
        await receiver.wait_for("RELOADING", "1", count=2)
        await receiver.wait_for("READY", "1", count=3)
        assert "STOPPING" not in str(receiver.messages)
    finally:
        daemon.stop()
        assert await asyncio.wait_for(task, 10) == 0
        listener.close()
    stopping_at, _ = await receiver.wait_for("STOPPING", "1")
    assert stopping_at > ready_at
    assert not receiver.with_field("WATCHDOG")  # no WATCHDOG_USEC: no watchdog
    receiver.close()


async def test_watchdog_fed_from_the_loop_and_starved_by_a_blocked_loop(tmp_path, notify_dir, monkeypatch):
    """WATCHDOG=1 every WATCHDOG_USEC/2 from the start; none while the event loop is blocked; an
    abstract NOTIFY_SOCKET name works."""
    name = f"directord-test-{os.getpid()}-{notify_dir.name}"
    receiver = Receiver(b"\0" + name.encode())
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # 0.4 s: fed every 0.2 s
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    cfg = tmp_path / "directord.yaml"
    cfg.write_text(textwrap.dedent(CONFIG.format(up_port=1, down_port=2).replace("type: tcp", "type: none")))
    daemon = Daemon(str(cfg), control_socket=str(tmp_path / "run" / "directord.sock"))
    task = asyncio.create_task(daemon.run())
    try:
        await receiver.wait_for("READY", "1")
        await receiver.wait_for("WATCHDOG", "1", count=6)
        times = [t for t, _ in receiver.with_field("WATCHDOG")]
        gaps = [b - a for a, b in zip(times, times[1:])]
        # every WATCHDOG_USEC/2 (a loop timer may be late on a busy machine; the arrival times
        # also carry the receiving thread's own delays, which shorten the gap after a late one:
        # so no lower bound per gap, the period is judged on the median and the mean)
        mean = (times[-1] - times[0]) / (len(times) - 1)
        assert max(gaps) < 1.0 and 0.18 < statistics.median(gaps) < 0.3 and 0.15 < mean < 0.35, gaps

        # the loop blocked for 1.5 s (a blocking call on it): nothing is fed meanwhile
        fed = len(receiver.with_field("WATCHDOG"))
        blocked_from = time.monotonic()
        time.sleep(1.5)
        blocked_until = time.monotonic()
        await receiver.wait_for("WATCHDOG", "1", count=fed + 3)  # fed again once the loop runs
        times = [t for t, _ in receiver.with_field("WATCHDOG")]
        assert not [t for t in times if blocked_from + 0.05 < t < blocked_until]
        assert max(b - a for a, b in zip(times, times[1:])) >= 1.5
    finally:
        daemon.stop()
        assert await asyncio.wait_for(task, 10) == 0
    await receiver.wait_for("STOPPING", "1")
    after_stop = len(receiver.with_field("WATCHDOG"))
    await asyncio.sleep(0.5)
    assert len(receiver.with_field("WATCHDOG")) == after_stop  # the timer ended with the daemon
    receiver.close()


async def test_another_process_watchdog_is_not_fed(tmp_path, notify_dir, monkeypatch):
    receiver = Receiver(str(notify_dir / "notify"))
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify_dir / "notify"))
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    cfg = tmp_path / "directord.yaml"
    cfg.write_text(textwrap.dedent(CONFIG.format(up_port=1, down_port=2).replace("type: tcp", "type: none")))
    daemon = Daemon(str(cfg), control_socket=str(tmp_path / "run" / "directord.sock"))
    task = asyncio.create_task(daemon.run())
    try:
        await receiver.wait_for("READY", "1")
        await asyncio.sleep(0.5)
        assert not receiver.with_field("WATCHDOG")
    finally:
        daemon.stop()
        assert await asyncio.wait_for(task, 10) == 0
    receiver.close()


async def test_nothing_is_sent_without_notify_socket(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    cfg = tmp_path / "directord.yaml"
    cfg.write_text(textwrap.dedent(CONFIG.format(up_port=1, down_port=2).replace("type: tcp", "type: none")))
    sock_path = str(tmp_path / "run" / "directord.sock")
    daemon = Daemon(str(cfg), control_socket=sock_path)
    task = asyncio.create_task(daemon.run())
    try:
        with caplog.at_level(logging.DEBUG, "directord.systemd"):
            deadline = time.monotonic() + 10
            while True:
                try:
                    if (await asyncio.to_thread(control.request, sock_path, "status", 2.0))["ok"]:
                        break
                except OSError:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.05)
            assert (await asyncio.to_thread(control.request, sock_path, "reload"))["ok"] is True
            await asyncio.sleep(0.3)
    finally:
        daemon.stop()
        assert await asyncio.wait_for(task, 10) == 0
    assert not daemon.systemd.enabled and daemon.systemd.sent == 0 and daemon.systemd._sock is None
    assert not [r for r in caplog.records if r.name == "directord.systemd"]
    assert "WATCHDOG_USEC" not in os.environ


# --- the unit files ----------------------------------------------------------------


def read_unit(name):
    """The unit file's directives: {section: {key: [values in order]}} (systemd.syntax(7): keys may
    repeat and are case-sensitive, so not configparser)."""
    sections: dict[str, dict[str, list[str]]] = {}
    section = None
    for line in (ROOT / "etc" / name).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        assert section is not None and key and _ == "=", line
        section.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_directord_unit():
    service = read_unit("directord.service")["Service"]
    one = {key: values[-1] for key, values in service.items()}
    assert one["Type"] == "notify" and one["NotifyAccess"] == "main"
    assert one["WatchdogSec"] == "10s"
    assert one["ExecReload"] == "/usr/local/bin/directord reload -c /etc/directord/directord.yaml"
    assert one["ExecStart"] == "/usr/local/bin/directord run -c /etc/directord/directord.yaml"
    assert one["RuntimeDirectory"] == "directord"  # the default control socket, /run/directord/directord.sock
    assert one["StateDirectory"] == "directord"  # the default ha.state_dir, /var/lib/directord
    assert set(one["CapabilityBoundingSet"].split()) == {"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_NET_BIND_SERVICE"}
    assert set(one["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK", "AF_PACKET"}
    for key in (
        "NoNewPrivileges",
        "ProtectHome",
        "PrivateTmp",
        "ProtectKernelModules",
        "ProtectKernelTunables",
        "ProtectControlGroups",
        "RestrictNamespaces",
        "LockPersonality",
        "MemoryDenyWriteExecute",
    ):
        assert one[key] == "yes", key
    assert one["ProtectSystem"] == "strict" and one["SystemCallArchitectures"] == "native"


def test_directord_defaults_match_the_unit():
    from director.model import Settings
    from ha.model import HAConfig

    assert Settings().control_socket.startswith("/run/directord/")
    assert HAConfig.__dataclass_fields__["state_dir"].default == "/var/lib/directord"


def test_realserver_unit():
    service = read_unit("directord-realserver.service")["Service"]
    one = {key: values[-1] for key, values in service.items()}
    assert one["Type"] == "oneshot"
    assert "ProtectKernelTunables" not in one  # it writes sysctls
    assert "ProtectKernelModules" not in one  # --mode tun may modprobe ipip
    assert set(one["CapabilityBoundingSet"].split()) == {"CAP_NET_ADMIN", "CAP_SYS_MODULE"}
    assert one["StateDirectory"] == "directord" and one["ProtectSystem"] == "strict"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
@pytest.mark.parametrize("name", ["directord.service", "directord-realserver.service"])
def test_systemd_analyze_verify(tmp_path, name):
    """systemd-analyze verify accepts every directive (it needs no running systemd; the
    executables must exist, so the installed path is replaced by /bin/true)."""
    unit = tmp_path / name
    unit.write_text((ROOT / "etc" / name).read_text().replace("/usr/local/bin/directord", "/bin/true"))
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60)
    ours = [line for line in (r.stdout + r.stderr).splitlines() if str(unit) in line]
    assert r.returncode == 0 and not ours, r.stdout + r.stderr


MDWE_RUN = """\
import asyncio, ctypes, os, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN (linux/prctl.h)
    sys.exit(77)
from director import control
from director.daemon import Daemon

async def main(cfg, sock):
    daemon = Daemon(cfg, control_socket=sock)
    task = asyncio.create_task(daemon.run())
    health = None
    for _ in range(200):
        try:
            doc = (await asyncio.to_thread(control.request, sock, "status", 2.0))["status"]
            health = sorted(rs["health"] for svc in doc["services"] for rs in svc["real_servers"])
            if health == ["up", "up"]:
                break
        except OSError:
            pass
        await asyncio.sleep(0.05)
    daemon.stop()
    print(health, await task)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def test_the_daemon_runs_with_memory_deny_write_execute(tmp_path):
    """MemoryDenyWriteExecute=yes holds: the daemon, its checker child (uvloop) and an external
    check run with the kernel's equivalent, PR_SET_MDWE (Linux 6.3+; no writable and executable
    memory, no mapping made executable later), inherited by the children."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    cfg = tmp_path / "directord.yaml"
    cfg.write_text(
        textwrap.dedent(CONFIG.format(up_port=listener.getsockname()[1], down_port=1))
        .replace("      - {address: 127.0.0.1, port: 1}\n", "")
        .replace("virtual_services:\n", "virtual_services:\n" + EXTERNAL_SERVICE)
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("NOTIFY_SOCKET", None)
    r = subprocess.run(
        [sys.executable, "-c", MDWE_RUN, str(cfg), str(tmp_path / "s.sock")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    listener.close()
    if r.returncode == 77:
        pytest.skip("this kernel has no PR_SET_MDWE")
    assert r.returncode == 0 and r.stdout.strip() == "['up', 'up'] 0", r.stdout + r.stderr


EXTERNAL_SERVICE = """\
  - name: ext
    address: 127.0.0.101
    port: 80
    scheduler: rr
    forwarding: nat
    check: {type: external, command: ["/bin/sh", "-c", "exit 0"], interval: 0.2, timeout: 1}
    real_servers:
      - {address: 127.0.0.1, port: 81}
"""


HA_SECTION = """\
ha:
  node: dir1
  nodes: [dir1, dir2]
  media: [bcast lo]
  authkeys: {authkeys}
  resources:
    - owner: dir1
      addresses: [127.0.0.100/32/lo]
"""


class FakeHAService:
    """Stands in for ha.service.HAService (the real one needs a network namespace): its start
    takes a while, and its node reports a fixed state."""

    started_at: float | None = None

    def __init__(self, config, *, config_file=None, on_event=None):
        self.node = None

    async def start(self):
        await asyncio.sleep(0.5)
        peer = type("Peer", (), {"name": "dir2", "status": "dead"})
        snapshot = type("Snapshot", (), {"status": "active", "holds": "all", "peers": (peer,)})
        self.node = type("Node", (), {"snapshot": staticmethod(lambda: snapshot)})
        FakeHAService.started_at = time.monotonic()

    async def stop(self):
        pass

    def snapshot(self):
        return {"node": "dir1", "state": "active", "peers": [], "groups": []}


async def test_ready_waits_for_the_ha_service(tmp_path, notify_dir, monkeypatch):
    import ha.service

    monkeypatch.setattr(ha.service, "HAService", FakeHAService)
    keys = tmp_path / "authkeys"
    keys.write_text("auth 1\n1 sha1 test-key\n")
    keys.chmod(0o600)
    cfg = tmp_path / "directord.yaml"
    body = CONFIG.format(up_port=1, down_port=2).replace("type: tcp", "type: none")
    cfg.write_text(textwrap.dedent(body) + HA_SECTION.format(authkeys=keys))
    receiver = Receiver(str(notify_dir / "notify"))
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify_dir / "notify"))
    daemon = Daemon(str(cfg), control_socket=str(tmp_path / "run" / "directord.sock"))
    task = asyncio.create_task(daemon.run())
    try:
        ready_at, ready = await receiver.wait_for("READY", "1")
        assert FakeHAService.started_at is not None and FakeHAService.started_at <= ready_at
        assert ready["STATUS"].endswith(", HA active, holding all, peer dir2 dead"), ready
    finally:
        daemon.stop()
        assert await asyncio.wait_for(task, 10) == 0
    receiver.close()


def test_status_line_of_an_ha_service_not_started_yet(tmp_path):
    daemon = Daemon(str(tmp_path / "unused.yaml"))
    daemon.ha = FakeHAService(None)
    assert daemon._status_line() == "0 virtual services, 0/0 real servers up, HA starting"


async def test_a_reload_ending_after_stopping_sends_no_ready(notify_dir):
    receiver = Receiver(str(notify_dir / "notify"))
    notifier = systemd.Notifier(str(notify_dir / "notify"))

    async def reload():
        notifier.stopping()
        return True

    assert await notifier.reloading(reload) is True
    await receiver.wait_for("STOPPING", "1")
    await asyncio.sleep(0.1)
    assert [m for _, m in receiver.messages] == [
        {
            "RELOADING": "1",
            "MONOTONIC_USEC": receiver.messages[0][1]["MONOTONIC_USEC"],
            "STATUS": "reloading the configuration",
        },
        {"STOPPING": "1", "STATUS": "stopping"},
    ]
    notifier.close()
    receiver.close()
