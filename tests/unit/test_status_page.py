"""The live status page in a real headless Chromium (Debian's ``chromium``): two `directord run`
daemons as a heartbeat pair in namespaces, dir1 with a virtual service checked against a TCP
server in its namespace and its page on 127.0.0.1:9199 there. The browser, started in dir1's
namespace, loads the page once; without reloading it, the page shows the real server going
down when its server stops, and dir1 giving the VIP away (``directord standby``). Screenshots
are kept under ``out/status-page/``."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest
from browser import Browser, chromium_problem
from hapair import REPO, Director, PairNet, netns_problem, wait_for, write_authkeys
from test_ha_admin_pair import cli

from director.lab import netns as N

_problem = netns_problem() or chromium_problem()
pytestmark = pytest.mark.skipif(_problem is not None, reason=_problem or "")

SHOTS = REPO / "out" / "status-page"
PORT, BACKEND = 9199, 8080

SERVICE = """\
global:
  http: {{listen: "127.0.0.1:{port}"}}
virtual_services:
  - name: web
    address: {vip}
    port: 80
    forwarding: dr
    check: {{type: tcp, port: {backend}, interval: 0.2, retry_interval: 0.2, timeout: 0.5, rise: 1, fall: 1}}
    real_servers:
      - {{address: 127.0.0.1, port: 80}}
"""


class Backend:
    """A TCP server on 127.0.0.1:``port`` in namespace ``ns`` that accepts and closes."""

    def __init__(self, ns: str, port: int) -> None:
        self.sock = N.socket_in_netns(ns, socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            conn.close()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.sock.close()


CELL = "document.querySelector('tr[data-real-server=\"127.0.0.1:80\"] td[data-health]')?.dataset.health"
HELD = "document.querySelector('#ha-groups tbody tr')?.dataset.held"


def test_the_page_follows_a_real_server_down_and_an_ha_role_change(tmp_path: Path):
    SHOTS.mkdir(parents=True, exist_ok=True)
    with PairNet("hpage", hb_link=True, subnet="10.218.0", hb_subnet="10.218.1") as lab:
        keys = write_authkeys(tmp_path / "authkeys")
        conf = dict(media=["bcast eth1"], resources=[f"dir1 {lab.vip}/32/eth0"])
        d1 = Director(lab, "dir1", tmp_path, keys, **conf)
        d2 = Director(lab, "dir2", tmp_path, keys, **conf)
        dirs = (d1, d2)
        d1.config.write_text(SERVICE.format(port=PORT, vip=lab.vip, backend=BACKEND) + d1.config.read_text())
        backend = Backend(lab.ns("dir1"), BACKEND)
        try:
            d1.start()
            d2.start()
            wait_for(lambda: lab.holds("dir1"), 30, "dir1 to take the VIP", dirs)
            with Browser(netns=lab.ns("dir1")) as browser:
                page = browser.open(f"http://127.0.0.1:{PORT}/")
                assert page.wait_for(CELL + " === 'up'", 30)
                assert page.wait_for(HELD + " === 'yes'", 10)
                assert "1/1 real servers up" in page.evaluate("document.getElementById('summary').textContent")
                page.screenshot(SHOTS / "1-up.png")
                updates = page.evaluate("Number(document.body.dataset.updates)")

                backend.stop()
                assert page.wait_for(CELL + " === 'down'", 10)  # the same page, not reloaded
                assert page.evaluate("document.getElementById('summary').textContent").startswith(
                    "1 virtual service, 0/1"
                )
                assert page.evaluate(
                    "[...document.querySelectorAll('#events li')].some(li => li.dataset.kind === 'check.health')"
                )
                page.screenshot(SHOTS / "2-real-server-down.png")

                out = cli(d1, "standby")
                assert out.returncode == 0, out.stderr
                wait_for(lambda: lab.holders() == frozenset({"dir2"}), 10, "dir2 to hold the VIP", dirs)
                assert page.wait_for(HELD + " === 'no'", 10)
                holder = page.evaluate("document.querySelector('#ha-groups tbody tr td:nth-child(3)').textContent")
                assert holder == "dir2"
                page.screenshot(SHOTS / "3-standby.png")
                assert page.evaluate("Number(document.body.dataset.updates)") > updates
                assert not page.evaluate("document.getElementById('error').hidden === false")
        finally:
            backend.stop() if not backend.stopped.is_set() else None
            for d in dirs:
                d.kill()
