"""The daemon's wiring on the host: config -> health checks -> status over the control socket, reloads.

The host kernel may lack ip_vs; the daemon must then keep running, report the
kernel error, and still serve status and reloads.  The IPVS side is tested
on a real kernel in tests/kernel.
"""

import asyncio
import gc
import logging
import os
import signal
import socket
import stat
import textwrap

from director import control
from director.daemon import Daemon


def write_config(path, body):
    path.write_text(textwrap.dedent(body))


CONFIG = """\
global:
  reconcile_interval: 1
virtual_services:
  - name: web
    address: 127.0.0.100
    port: 80
    scheduler: {scheduler}
    forwarding: nat
    check: {{type: tcp, interval: 0.1, timeout: 0.5, rise: 1, fall: 1}}
    real_servers:
      - {{address: 127.0.0.1, port: {up_port}}}
      - {{address: 127.0.0.1, port: {down_port}}}
"""


async def wait_status(path, predicate, timeout=10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    last = None
    while asyncio.get_running_loop().time() < deadline:
        try:
            reply = await asyncio.to_thread(control.request, path, "status", 2.0)
            last = reply["status"]
            if predicate(last):
                return last
        except OSError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"status never matched; last: {last}")


def health_of(doc):
    return {rs["port"]: rs["health"] for rs in doc["services"][0]["real_servers"]}


async def test_daemon_serves_health_and_reloads(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    up_port = listener.getsockname()[1]
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    down_port = probe.getsockname()[1]
    probe.close()  # nothing listens there: connection refused

    cfg = tmp_path / "directord.yaml"
    sock_path = str(tmp_path / "run" / "directord.sock")
    write_config(cfg, CONFIG.format(scheduler="rr", up_port=up_port, down_port=down_port))
    daemon = Daemon(str(cfg), control_socket=sock_path)
    task = asyncio.create_task(daemon.run())
    try:
        doc = await wait_status(sock_path, lambda d: set(health_of(d).values()) == {"up", "down"})
        assert health_of(doc) == {up_port: "up", down_port: "down"}
        assert doc["daemon"] is True and doc["pid"] == os.getpid()
        assert stat.S_IMODE(os.stat(sock_path).st_mode) == 0o600

        # an invalid file is refused and the running configuration stays
        cfg.write_text("virtual_services: [ {address: nope} ]\n")
        assert (await asyncio.to_thread(control.request, sock_path, "reload"))["ok"] is False
        assert daemon.config.services[0].scheduler == "rr"

        # a valid one is adopted; the unchanged real servers keep their state
        write_config(cfg, CONFIG.format(scheduler="wlc", up_port=up_port, down_port=down_port))
        os.kill(os.getpid(), signal.SIGHUP)
        await wait_status(sock_path, lambda d: daemon.config.services[0].scheduler == "wlc")
        assert health_of(await wait_status(sock_path, lambda d: True)) == {up_port: "up", down_port: "down"}
    finally:
        daemon.stop()
        assert await asyncio.wait_for(task, 10) == 0
        listener.close()
    assert not os.path.exists(sock_path)


async def test_daemon_refuses_to_start_on_an_invalid_file(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("virtual_services:\n  - address: 10.0.0.1\n    port: 0\n")
    assert await Daemon(str(cfg), control_socket=str(tmp_path / "s")).run() == 1


async def test_a_second_daemon_on_the_same_configuration_is_refused(tmp_path, caplog):
    """Only the control socket differs: the second would program the same IPVS table and keep its
    own copy of admin.json. It is refused, naming the lock and the first one's pid; once the first
    stopped, a daemon starts again."""
    cfg = tmp_path / "directord.yaml"
    state = tmp_path / "state"
    text = CONFIG.format(scheduler="rr", up_port=1, down_port=2)
    write_config(cfg, text.replace("global:\n", f"global:\n  state_dir: {state}\n", 1))
    first = Daemon(str(cfg), control_socket=str(tmp_path / "a.sock"))
    task = asyncio.create_task(first.run())
    try:
        await wait_status(str(tmp_path / "a.sock"), lambda d: True)
        caplog.set_level(logging.ERROR)
        assert await Daemon(str(cfg), control_socket=str(tmp_path / "b.sock")).run() == 1
        (lock,) = state.glob("directord.net*.lock")
        assert (
            f"{lock}: another directord runs on this state directory in this network namespace: "
            f"process {os.getpid()} holds this lock" in caplog.text
        )
        assert not (tmp_path / "b.sock").exists()
        await wait_status(str(tmp_path / "a.sock"), lambda d: True)  # the first runs on
    finally:
        first.stop()
        assert await asyncio.wait_for(task, 10) == 0
    again = Daemon(str(cfg), control_socket=str(tmp_path / "b.sock"))
    task = asyncio.create_task(again.run())
    await wait_status(str(tmp_path / "b.sock"), lambda d: True)
    again.stop()
    assert await asyncio.wait_for(task, 10) == 0


async def test_a_reload_that_raises_anything_is_one_logged_error(tmp_path, monkeypatch, caplog):
    """RecursionError or MemoryError from loading (a hostile file) ends as one logged error on
    SIGHUP and on the control socket: the running configuration stays, the daemon keeps serving."""
    from director import daemon as daemon_module

    cfg = tmp_path / "directord.yaml"
    sock_path = str(tmp_path / "run" / "directord.sock")
    write_config(cfg, CONFIG.format(scheduler="rr", up_port=1, down_port=2).replace("type: tcp", "type: none"))
    daemon = Daemon(str(cfg), control_socket=sock_path)
    task = asyncio.create_task(daemon.run())
    try:
        await wait_status(sock_path, lambda d: True)
        running = daemon.config
        real_load = daemon_module.load_config
        for exc in (RecursionError("maximum recursion depth exceeded"), MemoryError()):

            def hostile(path, exc=exc):
                real_load(path)
                raise exc

            monkeypatch.setattr(daemon_module, "load_config", hostile)
            caplog.clear()
            with caplog.at_level(logging.INFO):
                os.kill(os.getpid(), signal.SIGHUP)
                for _ in range(200):
                    await asyncio.sleep(0.02)
                    if any("reload refused" in r.getMessage() for r in caplog.records):
                        break
                assert (await asyncio.to_thread(control.request, sock_path, "reload"))["ok"] is False
                gc.collect()  # an unretrieved task exception is reported when the task is collected
                await asyncio.sleep(0.05)
            errors = [r for r in caplog.records if r.levelno >= logging.ERROR and not r.name.startswith("directord.")]
            errors += [r for r in caplog.records if r.name == "directord.control"]  # a request that failed
            assert len(errors) == 2, [r.getMessage() for r in errors]  # one per reload asked for
            for record in errors:
                assert record.name == "directord" and type(exc).__name__ in record.getMessage()
                assert "keeping the running configuration" in record.getMessage()
            assert daemon.config is running
        (await wait_status(sock_path, lambda d: d["daemon"]))
    finally:
        daemon.stop()
        assert await asyncio.wait_for(task, 10) == 0


async def test_a_checker_falling_behind_and_catching_up_are_events_in_status(tmp_path):
    """The checker child stopped for 0.5 s (SIGSTOP) while HTTP checks wait on a server that
    never answers: the daemon publishes check.behind, then check.caught_up, and status shows them."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    port = silent.getsockname()[1]
    cfg = tmp_path / "directord.yaml"
    sock_path = str(tmp_path / "run" / "directord.sock")
    body = CONFIG.format(scheduler="rr", up_port=port, down_port=port).replace(
        "check: {type: tcp, interval: 0.1, timeout: 0.5, rise: 1, fall: 1}",
        "check: {type: http, interval: 0.2, timeout: 2, rise: 1, fall: 1}",
    )
    body = body.replace(f"      - {{address: 127.0.0.1, port: {port}}}\n", "", 1)  # one real server
    write_config(cfg, body)
    daemon = Daemon(str(cfg), control_socket=sock_path)
    task = asyncio.create_task(daemon.run())
    try:
        await wait_status(sock_path, lambda d: d.get("checker_pid"))
        await asyncio.sleep(1.5)  # checks in flight; the checker's cap has grown to none
        os.kill(daemon.engine.pid, signal.SIGSTOP)
        await asyncio.sleep(0.5)
        os.kill(daemon.engine.pid, signal.SIGCONT)
        doc = await wait_status(
            sock_path, lambda d: "check.caught_up" in [e["kind"] for e in d["recent_events"]], timeout=20
        )
        kinds = [e["kind"] for e in doc["recent_events"]]
        assert kinds.index("check.behind") < kinds.index("check.caught_up"), kinds
        (behind,) = [e for e in doc["recent_events"] if e["kind"] == "check.behind"]
        assert behind["late"] > 0.3 and behind["in_flight"] >= 1 and behind["limit"] >= 1
        assert behind["message"].startswith("checks are falling behind (event loop")
    finally:
        daemon.stop()
        await asyncio.wait_for(task, 20)
        silent.close()
