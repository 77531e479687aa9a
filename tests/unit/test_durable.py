"""Tests of ha.durable: real files, modes, refusals, no temporary file left, and the fsync order."""

from __future__ import annotations

import ast
import errno
import json
import os
import socket
import stat
from pathlib import Path

import pytest

from ha.durable import (
    NotRegularFileError,
    make_directories,
    remove_file,
    replace_symlink,
    write_file_atomic,
)


def record_syncs(monkeypatch) -> list[tuple[str, str]]:
    """Record ``("fsync", <path of the fd>)`` and ``("replace", <target>)`` in call order."""
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst) -> None:
        events.append(("replace", os.fspath(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


def test_file_then_rename_then_directory_are_synced(tmp_path: Path, monkeypatch):
    target = tmp_path / "state.json"
    target.write_text("old\n")
    events = record_syncs(monkeypatch)
    write_file_atomic(target, b"new\n")
    assert [e[0] for e in events] == ["fsync", "replace", "fsync"], events
    synced_file = Path(events[0][1])
    # the data is synced in a temporary file next to the target, before the rename
    assert synced_file.parent == tmp_path and synced_file != target
    assert events[1] == ("replace", str(target))
    # the directory is synced after the rename (the rename itself becomes durable)
    assert events[2] == ("fsync", str(tmp_path))
    assert target.read_bytes() == b"new\n"


def test_content_and_exact_mode_whatever_the_umask(tmp_path: Path):
    old = os.umask(0o077)
    try:
        write_file_atomic(tmp_path / "a", b"\x00\x01data", 0o644)
        write_file_atomic(tmp_path / "secret", b"key", mode=0o600)
    finally:
        os.umask(old)
    assert (tmp_path / "a").read_bytes() == b"\x00\x01data"
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "secret").stat().st_mode) == 0o600
    # replacing keeps nothing of the old file (content or mode)
    (tmp_path / "a").chmod(0o666)
    write_file_atomic(str(tmp_path / "a"), b"", 0o640)
    assert (tmp_path / "a").read_bytes() == b""
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o640
    assert sorted(os.listdir(tmp_path)) == ["a", "secret"]


def test_large_content_is_written_whole(tmp_path: Path):
    data = os.urandom(3 << 20)
    write_file_atomic(tmp_path / "big", data)
    assert (tmp_path / "big").read_bytes() == data


def test_an_error_leaves_the_old_file_and_no_temporary_file(tmp_path: Path, monkeypatch):
    target = tmp_path / "state"
    target.write_bytes(b"old")
    real_fsync = os.fsync

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="Input/output"):
        write_file_atomic(target, b"new")
    monkeypatch.setattr(os, "fsync", real_fsync)

    def failing_replace(a, b) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space left"):
        write_file_atomic(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["state"]


def test_an_interrupted_write_leaves_no_temporary_file(tmp_path: Path, monkeypatch):
    def interrupted_write(fd: int, data) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "write", interrupted_write)
    with pytest.raises(KeyboardInterrupt):
        write_file_atomic(tmp_path / "f", b"data")
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []


def test_a_missing_directory_is_an_error_naming_it(tmp_path: Path):
    with pytest.raises(FileNotFoundError) as info:
        write_file_atomic(tmp_path / "missing" / "f", b"x")
    assert str(tmp_path / "missing") in str(info.value)
    with pytest.raises(TypeError):
        write_file_atomic(tmp_path / "f", "text")  # type: ignore[arg-type]


def _targets(tmp_path: Path) -> dict[str, Path]:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    directory = tmp_path / "dir"
    directory.mkdir()
    real = tmp_path / "real"
    real.write_bytes(b"real")
    link = tmp_path / "link"
    link.symlink_to(real)
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    sock_path = tmp_path / "sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(sock_path))
    sock.close()
    return {"FIFO": fifo, "directory": directory, "symbolic link": link, "dangling": dangling, "socket": sock_path}


def test_refuses_to_replace_what_is_not_a_regular_file(tmp_path: Path):
    targets = _targets(tmp_path)
    before = sorted(os.listdir(tmp_path))
    for kind, path in targets.items():
        with pytest.raises(NotRegularFileError) as info:
            write_file_atomic(path, b"data")
        assert info.value.filename == str(path)
        assert "refusing to replace it" in str(info.value)
        if kind != "dangling":
            assert kind in str(info.value), (kind, str(info.value))
        assert isinstance(info.value, OSError)
    # nothing replaced, nothing written through the link, no temporary file
    assert sorted(os.listdir(tmp_path)) == before
    assert (tmp_path / "real").read_bytes() == b"real"
    assert (tmp_path / "link").is_symlink() and (tmp_path / "fifo").is_fifo()
    assert not (tmp_path / "nowhere").exists()


def test_make_directories_syncs_each_parent_it_changes(tmp_path: Path, monkeypatch):
    (tmp_path / "a").mkdir()
    events = record_syncs(monkeypatch)
    make_directories(tmp_path / "a" / "b" / "c")
    assert (tmp_path / "a" / "b" / "c").is_dir()
    assert events == [("fsync", str(tmp_path / "a")), ("fsync", str(tmp_path / "a" / "b"))]
    events.clear()
    make_directories(tmp_path / "a" / "b")  # already there: nothing to do
    assert events == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError):
        make_directories(tmp_path / "file" / "sub")


def test_remove_file_syncs_the_directory(tmp_path: Path, monkeypatch):
    (tmp_path / "f").write_text("x")
    events = record_syncs(monkeypatch)
    assert remove_file(tmp_path / "f") is True
    assert events == [("fsync", str(tmp_path))] and os.listdir(tmp_path) == []
    assert remove_file(tmp_path / "f") is False
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError):
        remove_file(tmp_path / "d")


def test_replace_symlink_renames_a_new_link_over_the_old(tmp_path: Path, monkeypatch):
    link = tmp_path / "wants" / "x.service"
    link.parent.mkdir()
    events = record_syncs(monkeypatch)
    replace_symlink(link, "../x.service")
    assert os.readlink(link) == "../x.service"
    assert events == [("replace", str(link)), ("fsync", str(link.parent))]
    replace_symlink(str(link), "../y.service")
    assert os.readlink(link) == "../y.service" and os.listdir(link.parent) == ["x.service"]
    regular = tmp_path / "wants" / "regular"
    regular.write_text("keep")
    with pytest.raises(FileExistsError, match="regular file, not a symbolic link"):
        replace_symlink(regular, "../x.service")
    assert regular.read_text() == "keep" and sorted(os.listdir(link.parent)) == ["regular", "x.service"]


# --- the lab's files ----------------------------------------------------------------------------


def test_lab_configuration_and_state_files_are_written_durably(tmp_path: Path, monkeypatch):
    from director.lab import pair
    from director.lab.drive import DirectordProcess

    proc = DirectordProcess(None, tmp_path / "work")  # type: ignore[arg-type]  # write() needs no lab
    events = record_syncs(monkeypatch)
    proc.write("""
        global:
          checktimeout: 5
    """)
    assert proc.config.read_text() == "\nglobal:\n  checktimeout: 5\n"
    assert stat.S_IMODE(proc.config.stat().st_mode) == 0o644
    assert [e[0] for e in events] == ["fsync", "replace", "fsync"] and events[2] == ("fsync", str(proc.config.parent))
    assert sorted(os.listdir(proc.config.parent)) == ["directord.yaml"]

    monkeypatch.setattr(pair, "STATE_ROOT", tmp_path / "run")
    lab = pair.PairLab(pair.PairOptions(prefix="dur"), workdir=tmp_path / "pair")
    events.clear()
    lab.save_state()
    state = tmp_path / "run" / "dur.json"
    assert json.loads(state.read_text())["workdir"] == str(tmp_path / "pair")
    assert [e[0] for e in events] == ["fsync", "replace", "fsync"] and events[2] == ("fsync", str(state.parent))
    assert os.listdir(state.parent) == ["dur.json"]


def _calls_outside(owner: str, names: set[str]) -> list[str]:
    """``path:line: os.<name>`` of every call of ``os.<name>`` in director/, ha/ and checks/ but ``owner``."""
    root = Path(__file__).resolve().parents[2]
    found = []
    for package in ("director", "ha", "checks"):
        for path in sorted((root / package).rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if rel == owner:
                continue
            for node in ast.walk(ast.parse(path.read_text(), rel)):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == "os"
                    and node.func.attr in names
                ):
                    found.append(f"{rel}:{node.lineno}: os.{node.func.attr}")
    return found


def test_ha_durable_is_the_only_module_that_syncs_or_renames_files():
    assert _calls_outside("ha/durable.py", {"fsync", "fdatasync", "replace", "rename", "renames"}) == []


def test_move_file_into_place_replaces_a_regular_file_only(tmp_path):
    from ha.durable import NotRegularFileError, move_file_into_place

    new, old = tmp_path / "bird.conf.new", tmp_path / "bird.conf"
    new.write_text("new")
    old.write_text("old")
    move_file_into_place(new, old)
    assert old.read_text() == "new" and not new.exists()
    new.write_text("newer")
    (tmp_path / "dir").mkdir()
    with pytest.raises(NotRegularFileError):
        move_file_into_place(new, tmp_path / "dir")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(NotRegularFileError):
        move_file_into_place(tmp_path / "fifo", old)
    assert old.read_text() == "new"
