"""The control socket's file: only a stale socket is replaced, only our own socket is removed."""

import asyncio
import json
import os
import socket
import threading

import pytest

from director import control
from director.control import ControlServer


async def answer(request):
    return {"ok": True, "echo": request.get("command")}


def make_stale_socket(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()  # bound, never listening: a daemon that died left it


@pytest.mark.parametrize("kind", ["file", "directory", "symlink", "dangling symlink", "fifo"])
async def test_start_refuses_to_replace_what_is_not_a_socket(tmp_path, kind):
    path = tmp_path / "directord.sock"
    target = tmp_path / "precious"
    target.write_text("keep me\n")
    if kind == "file":
        path.write_text("keep me\n")
    elif kind == "directory":
        path.mkdir()
        (path / "inside").write_text("keep me\n")
    elif kind == "symlink":
        path.symlink_to(target)
    elif kind == "dangling symlink":
        path.symlink_to(tmp_path / "nowhere")
    else:
        os.mkfifo(path)
    before = os.lstat(path)
    server = ControlServer(str(path), answer)
    with pytest.raises(RuntimeError, match=r"not a socket: refusing to replace it") as err:
        await server.start()
    assert str(path) in str(err.value)
    after = os.lstat(path)
    assert (after.st_ino, after.st_mode, after.st_mtime_ns) == (before.st_ino, before.st_mode, before.st_mtime_ns)
    assert target.read_text() == "keep me\n"
    if kind == "file":
        assert path.read_text() == "keep me\n"
    if kind == "directory":
        assert (path / "inside").read_text() == "keep me\n"
    await server.stop()  # never started: removes nothing
    assert os.path.lexists(path)


async def test_a_stale_socket_is_replaced_and_removed_at_stop(tmp_path):
    path = tmp_path / "directord.sock"
    make_stale_socket(path)
    server = ControlServer(str(path), answer)
    await server.start()
    try:
        reply = await asyncio.to_thread(control.request, str(path), "status", 5.0)
        assert reply == {"ok": True, "echo": "status"}
    finally:
        await server.stop()
    assert not os.path.lexists(path)


async def test_stop_leaves_what_replaced_our_socket(tmp_path):
    path = tmp_path / "directord.sock"
    server = ControlServer(str(path), answer)
    await server.start()
    os.unlink(path)
    path.write_text("an operator's file\n")
    await server.stop()
    assert path.read_text() == "an operator's file\n"

    # another daemon's socket bound at the same path after ours was removed
    path.unlink()
    first = ControlServer(str(path), answer)
    await first.start()
    os.unlink(path)
    second = ControlServer(str(path), answer)
    await second.start()
    try:
        await first.stop()
        reply = await asyncio.to_thread(control.request, str(path), "status", 5.0)
        assert reply["ok"] is True  # the second one still answers
    finally:
        await second.stop()
    assert not os.path.lexists(path)


async def test_a_live_daemon_is_not_replaced(tmp_path):
    path = tmp_path / "directord.sock"
    first = ControlServer(str(path), answer)
    await first.start()
    try:
        with pytest.raises(RuntimeError, match="already serving"):
            await ControlServer(str(path), answer).start()
        assert (await asyncio.to_thread(control.request, str(path), "status", 5.0))["ok"] is True
    finally:
        await first.stop()


# --- abusive clients -------------------------------------------------------------------------


def _connect(path, timeout: float) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(str(path))
    return s


def _hung_up(s: socket.socket) -> bool:
    """True when the server closed the connection without answering (EOF within the timeout)."""
    try:
        return s.recv(1) == b""
    except TimeoutError:
        return False
    finally:
        s.close()


async def test_a_silent_client_is_hung_up_on_and_others_are_served(tmp_path, monkeypatch):
    monkeypatch.setattr(control, "REQUEST_TIMEOUT", 0.3)
    path = tmp_path / "directord.sock"
    server = ControlServer(str(path), answer)
    await server.start()
    try:
        silent = await asyncio.to_thread(_connect, path, 3.0)
        silent.sendall(b'{"command": "sta')  # half a request, then nothing
        reply = await asyncio.to_thread(control.request, str(path), "status", 5.0)
        assert reply == {"ok": True, "echo": "status"}
        assert await asyncio.to_thread(_hung_up, silent)
    finally:
        await server.stop()


def _answer_then_eof(s: socket.socket) -> bytes | None:
    """The server's answer when it then closed the connection (EOF within the timeout), else None."""
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
        return data
    except TimeoutError:
        return None
    finally:
        s.close()


async def test_an_oversized_request_is_answered_and_hung_up_on_at_once(tmp_path):
    path = tmp_path / "directord.sock"
    server = ControlServer(str(path), answer)
    await server.start()
    try:
        big = await asyncio.to_thread(_connect, path, 2.0)  # well below REQUEST_TIMEOUT
        await asyncio.to_thread(big.sendall, b'{"command": "status", "x": "' + b"a" * control.MAX_REQUEST)
        answer_text = await asyncio.to_thread(_answer_then_eof, big)
        assert answer_text is not None and json.loads(answer_text) == {
            "ok": False,
            "error": f"request longer than {control.MAX_REQUEST} bytes",
        }
        reply = await asyncio.to_thread(control.request, str(path), "status", 5.0)
        assert reply == {"ok": True, "echo": "status"}
    finally:
        await server.stop()


def test_the_stream_client_refuses_a_line_longer_than_its_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(control, "MAX_STREAM_LINE", 1024)
    path = tmp_path / "fake.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(b'{"ok": true}\n{"kind": "x", "pad": "' + b"a" * 4096 + b'"}\n')

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        lines = control.stream(str(path), timeout=5)
        assert next(lines) == {"ok": True}
        with pytest.raises(ValueError, match="longer than 1024 bytes"):
            next(lines)
    finally:
        thread.join(5)
        listener.close()
