"""The operator's real-server states (`director.admin`): the store, its file read as hostile input,
and `directord rs` against a real daemon: applied, shown in status, refused when wrong, written
before it is applied and kept across a restart of the daemon."""

from __future__ import annotations

import asyncio
import json
import os
import stat

import pytest
from test_daemon import wait_status, write_config
from test_reload_cli import directord

from director import admin as admin_module
from director import control
from director.admin import ADMIN_FILE, AdminEntry, AdminStateError, AdminStore, decode
from director.daemon import Daemon

NOW = 1796600000.0


def test_changed_keeps_the_store_and_enable_forgets():
    empty = AdminStore(None)
    drained = empty.changed("web", "10.0.0.11:80", "drain", "kernel\x1b upgrade \n now", NOW)
    assert empty.entries() == {}
    assert drained.get("web", "10.0.0.11:80") == AdminEntry("drain", "kernel upgrade now", NOW)
    assert drained.state("web", "10.0.0.12:80") == "enabled"
    again = drained.changed("web", "10.0.0.11:80", "drain", "still", NOW + 60)
    assert again.get("web", "10.0.0.11:80") == AdminEntry("drain", "still", NOW)  # since kept
    disabled = again.changed("web", "10.0.0.11:80", "disabled", "", NOW + 90)
    assert disabled.get("web", "10.0.0.11:80").since == NOW + 90
    assert disabled.for_service("web") == {"10.0.0.11:80": "disabled"} and disabled.for_service("dns") == {}
    assert disabled.changed("web", "10.0.0.11:80", "enabled", "", NOW).entries() == {}
    with pytest.raises(AdminStateError, match="unknown state"):
        empty.changed("web", "10.0.0.11:80", "maint", "", NOW)
    with pytest.raises(AdminStateError, match="at most 200"):
        empty.changed("web", "10.0.0.11:80", "drain", "x" * 201, NOW)


def test_file_round_trip_mode_0600_and_a_missing_file_is_empty(tmp_path):
    path = tmp_path / "state" / ADMIN_FILE
    store = AdminStore(str(path))
    store.load()
    assert store.entries() == {}
    store = store.changed("web", "[2001:db8::1]:80", "disabled", "disk", NOW).changed(
        "dns", "10.0.0.1:53", "drain", "", NOW
    )
    store.save()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    back = AdminStore(str(path))
    back.load()
    assert back.entries() == store.entries()
    assert json.loads(path.read_text())["version"] == 1


@pytest.mark.parametrize(
    "text, words",
    [
        ("{", "not a JSON document"),
        ('{"version": 2, "real_servers": []}', "not a directord admin state file"),
        ('{"version": 1, "real_servers": [7]}', "entry 1: not an object"),
        (
            '{"version": 1, "real_servers": [{"service": "w", "real_server": "r", "state": "up", "since": 1}]}',
            "state must",
        ),
        (
            '{"version": 1, "real_servers": [{"service": "w", "real_server": "r", "state": "drain", "since": true}]}',
            "Unix time",
        ),
        (
            '{"version": 1, "real_servers": [{"service": "", "real_server": "r", "state": "drain", "since": 1}]}',
            "service",
        ),
        ("[" * 100000 + "]" * 100000, "not a JSON document"),
    ],
)
def test_a_bad_file_is_refused_naming_it(text, words):
    with pytest.raises(AdminStateError, match=words) as info:
        decode(text.encode(), "/var/lib/directord/admin.json")
    assert "/var/lib/directord/admin.json" in str(info.value)


def test_too_many_entries_and_not_a_regular_file(tmp_path, monkeypatch):
    monkeypatch.setattr(admin_module, "MAX_ENTRIES", 2)
    rows = [{"service": "w", "real_server": f"r{i}", "state": "drain", "since": 1} for i in range(3)]
    with pytest.raises(AdminStateError, match="more than 2"):
        decode(json.dumps({"version": 1, "real_servers": rows}).encode(), "f")
    os.mkfifo(tmp_path / ADMIN_FILE)
    with pytest.raises(AdminStateError, match="not a regular file"):
        AdminStore(str(tmp_path / ADMIN_FILE)).load()


# --- against a real daemon -----------------------------------------------------------------

CONFIG = """\
global:
  reconcile_interval: 1
  control_socket: {socket}
  state_dir: {state}
virtual_services:
  - name: web
    address: 127.0.0.100
    port: 80
    forwarding: nat
    check: {{type: none}}
    real_servers:
      - {{address: 127.0.0.1, port: 8001}}
      - {{address: 127.0.0.1, port: 8002}}
"""


def rows(doc) -> dict[str, dict]:
    return {f"{r['address']}:{r['port']}": r for r in doc["services"][0]["real_servers"]}


async def test_rs_drain_disable_enable_through_a_real_daemon_and_kept_across_a_restart(tmp_path):
    cfg, sock, state = tmp_path / "d.yaml", str(tmp_path / "d.sock"), tmp_path / "state"
    write_config(cfg, CONFIG.format(socket=sock, state=state))
    daemon = Daemon(str(cfg))
    task = asyncio.create_task(daemon.run())
    try:
        await wait_status(sock, lambda d: True, timeout=30)
        rc, out, err = await directord(
            "rs", "drain", "web", "127.0.0.1:8001", "--reason", "new kernel", "--control-socket", sock
        )
        assert rc == 0 and "rs 127.0.0.1:8001 of web: drain" in out, err
        doc = await wait_status(sock, lambda d: rows(d)["127.0.0.1:8001"]["admin"] == "drain")
        assert rows(doc)["127.0.0.1:8001"]["admin_reason"] == "new kernel"
        assert rows(doc)["127.0.0.1:8002"]["admin"] == "enabled"
        assert any(e["kind"] == "rs.admin" and e["state"] == "drain" for e in doc["recent_events"])
        # what the reconciler plans: weight 0 for the drained one
        desired = daemon.reconciler._desired(daemon.config.services[0])
        assert {str(k): a.weight for k, a in desired.dests.items()}["127.0.0.1:8001"] == 0
        rc, _, err = await directord("rs", "disable", "web", "127.0.0.1:8002", "--control-socket", sock)
        assert rc == 0, err
        desired = daemon.reconciler._desired(daemon.config.services[0])
        assert {str(k): a.weight for k, a in desired.dests.items()} == {"127.0.0.1:8001": 0}
        on_disk = json.loads((state / ADMIN_FILE).read_text())["real_servers"]
        assert [(r["real_server"], r["state"]) for r in on_disk] == [
            ("127.0.0.1:8001", "drain"),
            ("127.0.0.1:8002", "disabled"),
        ]
        # refusals: exit 1, nothing changed
        for argv, words in (
            (("rs", "drain", "nope", "127.0.0.1:8001"), "no virtual service named 'nope'"),
            (("rs", "drain", "web", "127.0.0.1:9999"), "is not a real server of web"),
            (("rs", "drain", "web", "127.0.0.1:8001", "--reason", "y" * 300), "at most 200"),
        ):
            rc, _, err = await directord(*argv, "--control-socket", sock)
            assert rc == 1 and words in err, err
        rc, _, err = await directord("rs", "drain", "web", "127.0.0.1:8001", "--control-socket", str(tmp_path / "none"))
        assert rc == 2 and "no directord answering" in err
    finally:
        daemon.stop()
        assert await asyncio.wait_for(task, 20) == 0
    # a new daemon on the same state: both states kept
    daemon = Daemon(str(cfg))
    task = asyncio.create_task(daemon.run())
    try:
        doc = await wait_status(sock, lambda d: True, timeout=30)
        assert {k: r["admin"] for k, r in rows(doc).items()} == {
            "127.0.0.1:8001": "drain",
            "127.0.0.1:8002": "disabled",
        }
        rc, _, err = await directord("rs", "enable", "web", "127.0.0.1:8002", "--control-socket", sock)
        assert rc == 0, err
        doc = await wait_status(sock, lambda d: rows(d)["127.0.0.1:8002"]["admin"] == "enabled")
        assert "admin_reason" not in rows(doc)["127.0.0.1:8002"]
    finally:
        daemon.stop()
        assert await asyncio.wait_for(task, 20) == 0


async def test_states_of_a_renamed_service_are_reported_and_can_be_removed(tmp_path, caplog):
    cfg, sock, state = tmp_path / "d.yaml", str(tmp_path / "d.sock"), tmp_path / "state"
    write_config(cfg, CONFIG.format(socket=sock, state=state))
    store = AdminStore(str(state / ADMIN_FILE)).changed("web", "127.0.0.1:8001", "drain", "kernel", 1.0)
    state.mkdir()
    store.save()
    write_config(cfg, CONFIG.format(socket=sock, state=state).replace("name: web", "name: www"))
    daemon = Daemon(str(cfg))
    task = asyncio.create_task(daemon.run())
    try:
        doc = await wait_status(sock, lambda d: True, timeout=30)
        assert rows(doc)["127.0.0.1:8001"]["admin"] == "enabled"  # not applied to the renamed service
        assert "1 operator state(s) in " + str(state / ADMIN_FILE) + " name no configured real server" in caplog.text
        assert "127.0.0.1:8001 of web (drain)" in caplog.text
        rc, out, err = await directord("rs", "enable", "web", "127.0.0.1:8001", "--control-socket", sock)
        assert rc == 0 and "removed the state of 127.0.0.1:8001 of web (not configured)" in out, err
        assert json.loads((state / ADMIN_FILE).read_text())["real_servers"] == []
        rc, _, err = await directord("rs", "enable", "web", "127.0.0.1:8001", "--control-socket", sock)
        assert rc == 1 and "no virtual service named 'web'" in err  # nothing left to remove
    finally:
        daemon.stop()
        assert await asyncio.wait_for(task, 20) == 0


async def test_an_unwritable_state_changes_nothing_and_a_bad_state_file_stops_the_start(tmp_path):
    cfg, sock, state = tmp_path / "d.yaml", str(tmp_path / "d.sock"), tmp_path / "state"
    state.mkdir()
    (state / ADMIN_FILE).mkdir()  # a directory where the file goes: neither readable nor replaceable
    write_config(cfg, CONFIG.format(socket=sock, state=state))
    assert await Daemon(str(cfg)).run() == 1  # refused: the operator's states cannot be known
    (state / ADMIN_FILE).rmdir()
    daemon = Daemon(str(cfg))
    task = asyncio.create_task(daemon.run())
    try:
        await wait_status(sock, lambda d: True, timeout=30)
        (state / ADMIN_FILE).mkdir()
        reply = await daemon._rs_admin({"action": "drain", "service": "web", "real_server": "127.0.0.1:8001"})
        assert not reply["ok"] and "nothing changed" in reply["error"]
        assert daemon.admin.state("web", "127.0.0.1:8001") == "enabled"
    finally:
        daemon.stop()
        assert await asyncio.wait_for(task, 20) == 0


async def test_concurrent_changes_are_applied_one_after_the_other(tmp_path, monkeypatch):
    """Two rs requests at once, each saving slowly: both changes are kept (the second builds on
    the first), in memory and in the file."""
    cfg, sock, state = tmp_path / "d.yaml", str(tmp_path / "d.sock"), tmp_path / "state"
    write_config(cfg, CONFIG.format(socket=sock, state=state))
    real_save = AdminStore.save

    def slow_save(self):
        import time

        time.sleep(0.3)
        real_save(self)

    monkeypatch.setattr(AdminStore, "save", slow_save)
    daemon = Daemon(str(cfg))
    task = asyncio.create_task(daemon.run())
    try:
        await wait_status(sock, lambda d: True, timeout=30)
        replies = await asyncio.gather(
            daemon._rs_admin({"action": "drain", "service": "web", "real_server": "127.0.0.1:8001"}),
            daemon._rs_admin({"action": "disable", "service": "web", "real_server": "127.0.0.1:8002"}),
        )
        assert all(r["ok"] for r in replies), replies
        assert daemon.admin.for_service("web") == {"127.0.0.1:8001": "drain", "127.0.0.1:8002": "disabled"}
        back = AdminStore(str(state / ADMIN_FILE))
        back.load()
        assert back.for_service("web") == {"127.0.0.1:8001": "drain", "127.0.0.1:8002": "disabled"}
    finally:
        daemon.stop()
        assert await asyncio.wait_for(task, 20) == 0


async def test_hostile_values_in_an_rs_request_are_cut_and_escaped_in_its_error(tmp_path):
    cfg, sock, state = tmp_path / "d.yaml", str(tmp_path / "d.sock"), tmp_path / "state"
    write_config(cfg, CONFIG.format(socket=sock, state=state))
    daemon = Daemon(str(cfg))
    task = asyncio.create_task(daemon.run())
    try:
        await wait_status(sock, lambda d: True, timeout=30)
        hostile = "x\x1b[2J\u202e" * 2000  # 32 KB of JSON: under the request limit (64 KiB)
        for fields in (
            {"service": hostile, "real_server": "127.0.0.1:8001"},
            {"service": "web", "real_server": hostile},
        ):
            reply = await asyncio.to_thread(control.request, sock, "rs", 5.0, action="drain", **fields)
            assert reply["ok"] is False and len(reply["error"]) < 1500, len(reply["error"])
            assert "\x1b" not in reply["error"] and "\u202e" not in reply["error"] and "x\\x1b[2J" in reply["error"]
        reply = await asyncio.to_thread(control.request, sock, hostile, 5.0)
        assert reply["ok"] is False and len(reply["error"]) < 1500 and "\x1b" not in reply["error"]
    finally:
        daemon.stop()
        assert await asyncio.wait_for(task, 20) == 0
