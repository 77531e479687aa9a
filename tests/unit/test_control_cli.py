"""`directord status` (and standby/takeover) run by a user the control socket refuses.

The socket is root's (mode 0600 in a 0700 directory): a non-root user gets
EACCES, which must be reported as such, not as "no daemon answering".  The
client runs in a forked child that drops to uid/gid 65534 (nobody).
"""

import os
import socket
import sys

import pytest

import director.ipvs  # noqa: F401  (imported before dropping privileges, as cmd_status may need it)
import director.status  # noqa: F401
from director import cli

NOBODY = 65534

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")


def run_as_nobody(argv):
    """Run ``directord argv`` in a forked child as uid/gid 65534; return (exit status, stderr text)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        rc = 99
        try:
            os.dup2(write_end, 2)
            sys.stderr = open(2, "w", closefd=False)  # pytest's capture is not fd 2
            args = cli.build_parser().parse_args(argv)  # imports the subcommands while still root
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            rc = args.func(args)
        except BaseException as exc:  # reported through the exit status
            os.write(2, f"child failed: {exc!r}\n".encode())
        finally:
            sys.stderr.flush()
            os._exit(rc if isinstance(rc, int) else 98)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode(errors="replace")


@pytest.mark.parametrize("argv", [["status"], ["standby"]])
def test_a_refused_user_is_told_permission_denied(tmp_path, argv):
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    path = str(run / "directord.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(path)
        os.chmod(path, 0o600)
        listener.listen(1)
        rc, err = run_as_nobody(argv + ["--control-socket", path])
    finally:
        listener.close()
    assert rc == 1, err
    assert f"permission denied on {path}" in err and "as root" in err
    assert "no daemon" not in err and "no directord" not in err


@pytest.mark.parametrize(
    "reply, stream",
    [
        ({"ok": True, "message": "standby: groups handed to dir2\x1b[2J\nforged line"}, "out"),
        ({"ok": False, "error": "standby refused: peer dir2\x00\x1b]0;x\x07 is dead"}, "err"),
    ],
)
def test_standby_answer_is_printed_escaped(tmp_path, capsys, reply, stream):
    """A node name with control characters in the daemon's answer does not reach the terminal raw."""
    import json
    import threading

    path = str(tmp_path / "directord.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    listener.settimeout(10)

    def serve():
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(json.dumps(reply).encode() + b"\n")

    server = threading.Thread(target=serve)
    server.start()
    try:
        rc = cli.main(["standby", "--control-socket", path])
    finally:
        server.join(10)
        listener.close()
    out, err = capsys.readouterr()
    text = out if stream == "out" else err
    assert rc == (0 if reply["ok"] else 1)
    assert text.count("\n") == 1 and text.endswith("\n")
    assert {ch for ch in text[:-1] if not ch.isprintable()} == set()
    assert "\\x1b" in text
