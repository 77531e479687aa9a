"""The metrics listener of a real daemon (`director.web.server`): scraped over HTTP on loopback
and read with prometheus-client's parser; its token, its methods, shared scrapes, a reload
that changes the token, and a listen address in use."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_daemon import wait_status, write_config

from director.daemon import Daemon
from director.model import HTTPSettings
from director.web.server import HTTPServer

TOKEN, OTHER = "a" * 32, "b" * 32

CONFIG = """\
global:
  reconcile_interval: 1
  control_socket: {socket}
  http: {{listen: "127.0.0.1:{port}"{token}}}
virtual_services:
  - name: web
    address: 127.0.0.100
    port: 80
    forwarding: nat
    check: {{type: tcp, interval: 0.2, timeout: 1, rise: 1, fall: 1}}
    real_servers:
      - {{address: 127.0.0.1, port: {backend}}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def get(url: str, token: str | None = None, method: str = "GET") -> tuple[int, dict[str, str], str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session:
        async with session.request(method, url, headers=headers, timeout=aiohttp.ClientTimeout(total=20)) as r:
            return r.status, dict(r.headers), await r.text()


def parse(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


@pytest.fixture
async def backend():
    """A TCP server on loopback for the daemon's check: its port."""
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def start_daemon(tmp_path, backend: int, token: str | None = None, port: int | None = None):
    port = port or free_port()
    token_line = ""
    if token is not None:
        path = tmp_path / "token"
        path.write_text(token + "\n")
        path.chmod(0o600)
        token_line = f", token_file: {path}"
    cfg = tmp_path / "directord.yaml"
    sock = str(tmp_path / "ctl.sock")
    write_config(cfg, CONFIG.format(socket=sock, port=port, token=token_line, backend=backend))
    daemon = Daemon(str(cfg))
    task = asyncio.create_task(daemon.run())
    await wait_status(sock, lambda d: True, timeout=30)
    return daemon, task, f"http://127.0.0.1:{port}/metrics", cfg


async def stop_daemon(daemon, task):
    daemon.stop()
    assert await asyncio.wait_for(task, 20) == 0


async def test_a_scrape_shows_the_daemon_its_real_server_and_the_kernel_view(tmp_path, backend):
    daemon, task, url, _ = await start_daemon(tmp_path, backend)
    try:
        deadline = asyncio.get_running_loop().time() + 20
        while True:
            status, headers, body = await get(url)
            assert status == 200
            m = parse(body)
            health = {ls["state"]: v for ls, v in m.get("directord_real_server_health", [])}
            if health.get("up") == 1 or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.2)
        assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert health == {"unknown": 0, "up": 1, "down": 0}
        ((labels, _),) = m["directord_real_server_health"][:1]
        assert labels["service"] == "web" and labels["remote_port"] == str(backend) and labels["proto"] == "TCP"
        assert m["directord_build_info"][0][0]["version"]
        assert m["directord_checker_running"][0][1] == 1
        ok = [v for ls, v in m["directord_check_results_total"] if ls["outcome"] == "ok"]
        assert ok and ok[0] >= 1
        readable = m["directord_ipvs_table_readable"][0][1]
        assert readable == (1 if os.path.exists("/proc/net/ip_vs") else 0)
        assert m["directord_events_total"]  # at least the health change
        status, headers, text = await get(url.replace("/metrics", "/"))
        assert status == 200 and "<title>directord</title>" in text and 'href="metrics"' in text
        assert (
            "script-src 'self'" in headers["Content-Security-Policy"] and headers["X-Content-Type-Options"] == "nosniff"
        )
        status, headers, text = await get(url.replace("/metrics", "/page.js"))
        assert status == 200 and headers["Content-Type"].startswith("text/javascript") and "api/status" in text
        status, headers, text = await get(url.replace("/metrics", "/api/status"))
        assert status == 200 and headers["Content-Type"] == "application/json"
        doc = json.loads(text)
        assert doc["services"][0]["name"] == "web" and isinstance(doc["recent_events"], list)
        status, _, _ = await get(url, method="POST")
        assert status == 405
        assert (await get(url.replace("/metrics", "/nothing")))[0] == 404
    finally:
        await stop_daemon(daemon, task)
    with pytest.raises(aiohttp.ClientConnectionError):
        await get(url)  # the listener is closed at stop


async def test_token_is_required_and_a_reload_swaps_it(tmp_path, backend):
    daemon, task, url, cfg = await start_daemon(tmp_path, backend, token=TOKEN)
    try:
        status, headers, _ = await get(url)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
        assert (await get(url, OTHER))[0] == 401
        assert (await get(url, TOKEN))[0] == 200
        assert (await get(url.replace("/metrics", "/")))[0] == 200  # the page's files hold no data
        assert (await get(url.replace("/metrics", "/api/status")))[0] == 401
        assert (await get(url.replace("/metrics", "/api/status"), TOKEN))[0] == 200
        (tmp_path / "token").write_text(OTHER + "\n")
        report = await daemon.reload_report()
        assert report["ok"] and report["warnings"] == [], report
        assert (await get(url, TOKEN))[0] == 401
        assert (await get(url, OTHER))[0] == 200
        assert daemon.http is not None and daemon.http.refused == 4
    finally:
        await stop_daemon(daemon, task)


async def test_a_listen_address_in_use_is_logged_and_the_daemon_runs_on(tmp_path, backend, caplog):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        with caplog.at_level(logging.ERROR, logger="directord"):
            daemon, task, _, _ = await start_daemon(tmp_path, backend, port=port)
        try:
            assert daemon.http is None
            assert any(f"cannot listen for metrics on 127.0.0.1:{port}" in r.getMessage() for r in caplog.records)
        finally:
            await stop_daemon(daemon, task)
    finally:
        taken.close()


async def test_concurrent_scrapes_share_one_collection():
    calls = 0

    async def slow_scrape():
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.3)
        from test_metrics import scrape

        return scrape()

    port = free_port()
    server = HTTPServer(HTTPSettings("127.0.0.1", port), slow_scrape)
    await server.start()
    try:
        results = await asyncio.gather(*(get(f"http://127.0.0.1:{port}/metrics") for _ in range(8)))
        assert [r[0] for r in results] == [200] * 8
        assert calls == 1 and server.scrapes == 8
        assert len({r[2] for r in results}) == 1
        await get(f"http://127.0.0.1:{port}/metrics")
        assert calls == 2  # a later scrape collects again
    finally:
        await server.stop()


async def raw(port: int, data: bytes, source: str = "127.0.0.1") -> bytes:
    """Send ``data`` on a new connection from ``source``; what the server answers before closing."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    writer.write(data)
    try:
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


async def test_idle_connections_are_capped_per_client_and_in_all_and_the_listener_recovers():
    from test_metrics import scrape

    from director.web.server import MAX_CONNECTIONS, MAX_PER_CLIENT

    async def fast_scrape():
        return scrape()

    port = free_port()
    server = HTTPServer(HTTPSettings("127.0.0.1", port), fast_scrape)
    await server.start()
    idle = []
    try:
        # one client opening connections that never send a request takes only its own share
        for _ in range(MAX_PER_CLIENT):
            idle.append(await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.1", 0)))
        await asyncio.sleep(0.2)
        assert await raw(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") == b""  # closed at once
        assert server.turned_away == 1
        assert (await raw(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "127.0.0.2"))[
            :15
        ] == b"HTTP/1.1 200 OK"
        # many clients together are held to MAX_CONNECTIONS
        source = 3
        while len(idle) < MAX_CONNECTIONS:
            for _ in range(min(MAX_PER_CLIENT, MAX_CONNECTIONS - len(idle))):
                idle.append(await asyncio.open_connection("127.0.0.1", port, local_addr=(f"127.0.0.{source}", 0)))
            source += 1
        await asyncio.sleep(0.2)
        assert await raw(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", f"127.0.0.{source}") == b""
        assert server.turned_away == 2
        for _, w in idle:
            w.close()
        idle.clear()
        await asyncio.sleep(0.3)
        assert (await get(f"http://127.0.0.1:{port}/metrics"))[0] == 200
    finally:
        for _, w in idle:
            w.close()
        await server.stop()


async def test_a_token_that_is_not_utf8_and_malformed_requests_are_refused_without_a_logged_traceback(caplog):
    from test_metrics import scrape

    async def fast_scrape():
        return scrape()

    port = free_port()
    server = HTTPServer(HTTPSettings("127.0.0.1", port, token="secret"), fast_scrape)
    await server.start()
    caplog.set_level(logging.DEBUG)
    try:
        answer = await raw(
            port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer \xff\xfe\r\n\r\n"
        )
        assert answer.startswith(b"HTTP/1.1 401 "), answer[:40]
        for _ in range(20):
            answer = await raw(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 20000 + b"\r\n\r\n")
            assert answer.startswith(b"HTTP/1.0 400 ") or answer.startswith(b"HTTP/1.1 400 "), answer[:40]
        assert server.refused == 1 and server.bad_requests == 20
        errors = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
        assert errors == [], [r.getMessage() for r in errors]
    finally:
        await server.stop()


async def test_concurrent_status_polls_share_one_document():
    from test_metrics import scrape

    calls = 0

    async def fast_scrape():
        return scrape()

    async def slow_status(events: int) -> dict:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.3)
        return {"services": [], "recent_events": [], "events_asked": events}

    port = free_port()
    server = HTTPServer(HTTPSettings("127.0.0.1", port), fast_scrape, slow_status)
    await server.start()
    try:
        results = await asyncio.gather(*(get(f"http://127.0.0.1:{port}/api/status") for _ in range(6)))
        assert [r[0] for r in results] == [200] * 6 and calls == 1
        assert json.loads(results[0][2])["events_asked"] == 30
    finally:
        await server.stop()
