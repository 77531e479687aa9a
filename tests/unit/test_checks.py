"""Health checks against real servers on loopback (tcp, http, https, external)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from checkhelpers import free_port, needs_ipv6, self_signed

from checks.base import CheckResult, CheckTarget, describe_error, run_check
from checks.protocols.http import build_url
from checks.spec import CheckSpec

# --- helpers ----------------------------------------------------------------


def target(spec: CheckSpec, port: int, rip: str = "127.0.0.1", vip: str | None = "192.168.10.100") -> CheckTarget:
    return CheckTarget(
        key=("svc", rip, port), name=f"rs {rip}:{port} of test", vip=vip, vport=80, rip=rip, rport=port, spec=spec
    )


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class HttpServer:
    """A tiny HTTP/1.1 server on loopback whose behaviour a test controls.

    mode: ``respond`` (status + body), ``hang`` (accept, read nothing, say
    nothing), ``stall_body`` (send headers and part of the body, then stall).
    """

    mode: str = "respond"
    keepalive: bool = False
    connections: int = 0
    status: int = 200
    body: bytes = b"all ok\n"
    requests: list[Request] = field(default_factory=list)
    port: int = 0
    _writers: list[asyncio.StreamWriter] = field(default_factory=list)
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        self.connections += 1
        try:
            if self.mode == "hang":
                await self._release.wait()
                return
            while await self._one_request(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def _one_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; True when the connection stays open for another."""
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, path, _version = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        self.requests.append(Request(method, path, headers))
        if self.mode == "stall_body":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\nConnection: close\r\n\r\nstart")
            await writer.drain()
            await self._release.wait()
            return False
        connection = "keep-alive" if self.keepalive else "close"
        writer.write(
            f"HTTP/1.1 {self.status} X\r\nContent-Length: {len(self.body)}\r\nConnection: {connection}\r\n\r\n".encode()
            + (b"" if method == "HEAD" else self.body)
        )
        await writer.drain()
        return self.keepalive

    def release(self) -> None:
        self._release.set()
        for w in self._writers:
            w.close()


@contextlib.asynccontextmanager
async def serve(server: HttpServer, host: str = "127.0.0.1", ssl_context: ssl.SSLContext | None = None):
    srv = await asyncio.start_server(server.handle, host, 0, ssl=ssl_context)
    server.port = srv.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        server.release()
        srv.close()
        await srv.wait_closed()


@pytest.fixture
def session():
    """What the engine passes as run_check's second argument: nothing (HTTP checks need no
    shared session)."""
    return None


# --- self-signed certificate ---------------------------------------------------


@pytest.fixture
def server_tls(tmp_path: Path) -> ssl.SSLContext:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    try:
        self_signed(cert, key, "localhost")
    except ImportError:
        if shutil.which("openssl") is None:
            pytest.skip("neither the cryptography package nor openssl is available")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-days", "1", "-subj", "/CN=localhost",
             "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
             "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True,
        )  # fmt: skip
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


# --- none / dispatch ------------------------------------------------------------


async def test_none_is_up_at_once():
    result = await run_check(target(CheckSpec(type="none"), 1), None)
    assert result == CheckResult(True, "no check", 0.0, result.at)


async def test_http_needs_no_session():
    async with serve(HttpServer()) as srv:
        result = await run_check(target(CheckSpec(type="http"), srv.port))
    assert result.ok and result.reason == "HTTP 200"


# --- tcp ----------------------------------------------------------------------


async def test_tcp_up():
    accepted = asyncio.Event()

    async def handle(reader, writer):
        accepted.set()
        writer.close()

    srv = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    async with srv:
        result = await run_check(target(CheckSpec(type="tcp"), port), None)
        await asyncio.wait_for(accepted.wait(), 2)
    assert result.ok, result
    assert result.reason == "connected"
    assert 0 <= result.duration < 1.0
    assert not result.timed_out


async def test_tcp_refused():
    result = await run_check(target(CheckSpec(type="tcp"), free_port()), None)
    assert not result.ok
    assert result.reason == "connection refused"
    assert not result.timed_out  # a failure, not the time limit


async def test_a_sockets_own_etimedout_is_a_failure_not_the_time_limit(monkeypatch):
    """``timed_out`` marks the check's own time limit: a connect that the kernel gave up on
    (``ETIMEDOUT``, after its SYN retries) is an error of the real server's network."""

    async def syn_retries_exhausted(address: str, port: int) -> tuple[bool, str]:
        raise TimeoutError(errno.ETIMEDOUT, os.strerror(errno.ETIMEDOUT))

    monkeypatch.setattr("checks.base.check_tcp", syn_retries_exhausted)
    result = await run_check(target(CheckSpec(type="tcp", timeout=5), 80), None)
    assert not result.ok and not result.timed_out
    assert result.reason == "connection timed out"


@needs_ipv6
async def test_tcp_ipv6():
    srv = await asyncio.start_server(lambda r, w: w.close(), "::1", 0)
    port = srv.sockets[0].getsockname()[1]
    async with srv:
        up = await run_check(target(CheckSpec(type="tcp"), port, rip="::1"), None)
    down = await run_check(target(CheckSpec(type="tcp"), free_port("::1"), rip="::1"), None)
    assert up.ok, up
    assert not down.ok and down.reason == "connection refused"


async def test_tcp_bad_address_is_a_failed_result():
    result = await run_check(target(CheckSpec(type="tcp"), 80, rip="not-an-ip"), None)
    assert not result.ok
    assert "not an IP address" in result.reason


async def test_tcp_timeout_on_blackhole_listener():
    # A listening socket whose accept queue is full stops answering SYNs:
    # fill a backlog-0 listener so that connects hang, as to a dropped SYN.
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(8):
            s = socket.socket()
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(("127.0.0.1", port))
            fillers.append(s)
        await asyncio.sleep(0.05)
        t0 = time.monotonic()
        result = await run_check(target(CheckSpec(type="tcp", timeout=0.3), port), None)
        elapsed = time.monotonic() - t0
    finally:
        for s in fillers:
            s.close()
        listener.close()
    assert not result.ok
    assert result.reason == "timeout after 0.3 s"
    assert result.timed_out
    assert 0.25 <= elapsed < 2.0


# --- http ---------------------------------------------------------------------


async def test_http_status_match(session):
    async with serve(HttpServer(status=204, body=b"")) as srv:
        spec = CheckSpec(type="http", path="/healthz", expect_status=frozenset({200, 204}))
        result = await run_check(target(spec, srv.port), session)
    assert result.ok, result
    assert result.reason == "HTTP 204"
    assert [r.path for r in srv.requests] == ["/healthz"]


async def test_http_status_mismatch(session):
    async with serve(HttpServer(status=503)) as srv:
        result = await run_check(target(CheckSpec(type="http"), srv.port), session)
    assert not result.ok
    assert result.reason == "HTTP 503"


async def test_http_redirect_not_followed(session):
    async with serve(HttpServer(status=301)) as srv:
        result = await run_check(target(CheckSpec(type="http"), srv.port), session)
    assert not result.ok and result.reason == "HTTP 301"
    assert len(srv.requests) == 1


async def test_http_body_regex_match(session):
    async with serve(HttpServer(body=b'{"status": "ok", "db": "up"}')) as srv:
        spec = CheckSpec(type="http", expect_body=r'"db":\s*"up"')
        result = await run_check(target(spec, srv.port), session)
    assert result.ok, result
    assert result.reason == "HTTP 200"


async def test_http_body_regex_mismatch(session):
    async with serve(HttpServer(body=b"status: degraded")) as srv:
        result = await run_check(target(CheckSpec(type="http", expect_body="ok"), srv.port), session)
    assert not result.ok
    assert result.reason == "body does not match 'ok'"


async def test_http_body_searched_only_in_first_64k(session):
    async with serve(HttpServer(body=b"x" * (70 * 1024) + b"ok")) as srv:
        result = await run_check(target(CheckSpec(type="http", expect_body="ok"), srv.port), session)
    assert not result.ok
    assert result.reason == "body does not match 'ok'"


async def test_http_bad_regex_is_a_failed_result(session):
    result = await run_check(target(CheckSpec(type="http", expect_body="("), free_port()), session)
    assert not result.ok
    assert result.reason.startswith("bad expect_body regex")


async def test_http_host_header_default_is_rip_and_port(session):
    async with serve(HttpServer()) as srv:
        result = await run_check(target(CheckSpec(type="http"), srv.port), session)
    assert result.ok, result
    assert srv.requests[0].headers["host"] == f"127.0.0.1:{srv.port}"


async def test_http_host_header_configured(session):
    async with serve(HttpServer()) as srv:
        spec = CheckSpec(type="http", host="www.example.com")
        result = await run_check(target(spec, srv.port), session)
    assert result.ok, result
    assert srv.requests[0].headers["host"] == "www.example.com"
    assert srv.requests[0].headers["user-agent"] == "directord-healthcheck"


@needs_ipv6
async def test_http_ipv6_host_in_brackets(session):
    async with serve(HttpServer(), host="::1") as srv:
        result = await run_check(target(CheckSpec(type="http"), srv.port, rip="::1"), session)
    assert result.ok, result
    assert srv.requests[0].headers["host"] == f"[::1]:{srv.port}"


@pytest.mark.parametrize("method", ["HEAD", "POST", "GET"])
async def test_http_method(session, method):
    async with serve(HttpServer()) as srv:
        result = await run_check(target(CheckSpec(type="http", method=method), srv.port), session)
    assert result.ok, result
    assert srv.requests[0].method == method


async def test_http_refused(session):
    result = await run_check(target(CheckSpec(type="http"), free_port()), session)
    assert not result.ok
    assert result.reason == "connection refused"
    assert not result.timed_out


async def test_http_no_keepalive_between_checks(session):
    async with serve(HttpServer(keepalive=True)) as srv:
        spec = CheckSpec(type="http")
        for _ in range(3):
            assert (await run_check(target(spec, srv.port), session)).ok
    assert len(srv.requests) == 3
    assert srv.connections == 3


async def test_http_hung_server_times_out(session):
    async with serve(HttpServer(mode="hang")) as srv:
        t0 = time.monotonic()
        result = await run_check(target(CheckSpec(type="http", timeout=0.3), srv.port), session)
        elapsed = time.monotonic() - t0
    assert not result.ok
    assert result.reason == "timeout after 0.3 s"
    assert result.timed_out
    assert 0.25 <= elapsed < 1.5
    assert 0.25 <= result.duration < 1.5


async def test_http_stalled_body_times_out(session):
    async with serve(HttpServer(mode="stall_body")) as srv:
        spec = CheckSpec(type="http", timeout=0.3, expect_body="never")
        t0 = time.monotonic()
        result = await run_check(target(spec, srv.port), session)
        elapsed = time.monotonic() - t0
    assert not result.ok
    assert result.reason == "timeout after 0.3 s"
    assert result.timed_out
    assert 0.25 <= elapsed < 1.5


async def test_http_closed_without_response(session):
    async def slam(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    srv = await asyncio.start_server(slam, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    async with srv:
        result = await run_check(target(CheckSpec(type="http"), port), session)
    assert not result.ok
    assert result.reason == "server closed the connection"


async def test_https_verify_off_succeeds(session, server_tls):
    async with serve(HttpServer(), ssl_context=server_tls) as srv:
        spec = CheckSpec(type="https", verify_tls="none", expect_body="ok")
        result = await run_check(target(spec, srv.port), session)
    assert result.ok, result
    assert result.reason == "HTTP 200"
    assert len(srv.requests) == 1


async def test_https_verify_on_fails_for_self_signed(session, server_tls):
    async with serve(HttpServer(), ssl_context=server_tls) as srv:
        spec = CheckSpec(type="https", verify_tls="full")
        result = await run_check(target(spec, srv.port), session)
    assert not result.ok
    assert result.reason == "TLS certificate verify failed: self-signed certificate", result.reason
    assert srv.requests == []


async def test_https_against_plain_http_fails(session):
    async def plain(reader, writer):
        await reader.read(1)  # the TLS ClientHello
        writer.write(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(plain, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    async with srv:
        result = await run_check(target(CheckSpec(type="https", timeout=2.0), port), session)
    assert not result.ok
    assert result.reason == "TLS error: wrong version number", result.reason


def test_build_url():
    assert build_url("http", "10.0.0.2", 80, "/healthz") == "http://10.0.0.2:80/healthz"
    assert build_url("https", "2001:db8::2", 443, "ready") == "https://[2001:db8::2]:443/ready"


def test_describe_error():
    assert describe_error(ConnectionRefusedError(111, "x")) == "connection refused"
    assert describe_error(OSError(113, "x")) == "no route to host"
    assert describe_error(RuntimeError("boom")) == "RuntimeError: boom"
    assert len(describe_error(RuntimeError("y" * 1000))) == 200


# --- external -------------------------------------------------------------------


def script(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


async def test_external_exit_0_is_up(tmp_path):
    cmd = script(tmp_path, "ok.sh", "exit 0\n")
    result = await run_check(target(CheckSpec(type="external", command=(str(cmd),)), 8080), None)
    assert result.ok, result
    assert result.reason == "exit 0"


async def test_external_exit_1_is_down_with_stderr(tmp_path):
    cmd = script(tmp_path, "fail.sh", "echo first >&2\necho 'backend said no' >&2\nexit 1\n")
    result = await run_check(target(CheckSpec(type="external", command=(str(cmd),)), 8080), None)
    assert not result.ok
    assert result.reason == "exit 1: backend said no"
    assert not result.timed_out


async def test_external_receives_arguments(tmp_path):
    out = tmp_path / "args"
    cmd = script(tmp_path, "args.sh", f'for a in "$@"; do echo "$a"; done > {out}\n')
    spec = CheckSpec(type="external", command=(str(cmd), "--flag", "two words"))
    result = await run_check(target(spec, 8080, rip="10.0.0.2"), None)
    assert result.ok, result
    assert out.read_text().splitlines() == ["--flag", "two words", "192.168.10.100", "80", "10.0.0.2", "8080"]


async def test_external_fwmark_vip_is_empty_argument(tmp_path):
    out = tmp_path / "args"
    cmd = script(tmp_path, "args.sh", f'echo "$#:[$1]" > {out}\n')
    await run_check(target(CheckSpec(type="external", command=(str(cmd),)), 443, vip=None), None)
    assert out.read_text().strip() == "4:[]"


def _gone(pid: int) -> bool:
    """The process no longer runs (absent, or a zombie waiting for its reaper)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def test_external_timeout_kills_process_group(tmp_path):
    pidfile, childfile = tmp_path / "pid", tmp_path / "child"
    cmd = script(tmp_path, "hang.sh", f"echo $$ > {pidfile}\nsleep 30 &\necho $! > {childfile}\nwait\n")
    t0 = time.monotonic()
    result = await run_check(target(CheckSpec(type="external", command=(str(cmd),), timeout=0.5), 80), None)
    elapsed = time.monotonic() - t0
    assert not result.ok
    assert result.reason == "timeout after 0.5 s"
    assert result.timed_out
    assert elapsed < 2.5
    pid, child = int(pidfile.read_text()), int(childfile.read_text())
    with pytest.raises(ProcessLookupError):  # killed and reaped
        os.kill(pid, 0)
    deadline = time.monotonic() + 3
    while not _gone(child) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert _gone(child), "the command's own child survived"


async def test_external_cancel_kills_process(tmp_path):
    pidfile = tmp_path / "pid"
    cmd = script(tmp_path, "hang.sh", f"echo $$ > {pidfile}\nexec sleep 30\n")
    task = asyncio.create_task(run_check(target(CheckSpec(type="external", command=(str(cmd),), timeout=30), 80), None))
    deadline = time.monotonic() + 5
    while not (pidfile.exists() and pidfile.read_text().strip()) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    pid = int(pidfile.read_text())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_external_missing_command(tmp_path):
    missing = str(tmp_path / "no-such-check")
    result = await run_check(target(CheckSpec(type="external", command=(missing,)), 80), None)
    assert not result.ok
    assert result.reason == f"command not found: {missing}"


async def test_external_not_executable(tmp_path):
    path = tmp_path / "plain"
    path.write_text("exit 0\n")
    result = await run_check(target(CheckSpec(type="external", command=(str(path),)), 80), None)
    assert not result.ok
    assert result.reason == f"command not executable: {path}"


async def test_external_program_others_could_replace_is_not_run(tmp_path):
    # the checker runs as root: a script in a directory writable by all, or writable itself, could
    # be anyone's code; a relative name or a directory is no program either
    marker = tmp_path / "ran"
    shared = tmp_path / "shared"
    shared.mkdir()
    cmd = script(shared, "check.sh", f"touch {marker}\nexit 0\n")
    assert (await run_check(target(CheckSpec(type="external", command=(str(cmd),)), 80), None)).ok
    marker.unlink()
    shared.chmod(0o777)
    result = await run_check(target(CheckSpec(type="external", command=(str(cmd),)), 80), None)
    assert (result.ok, result.reason) == (
        False,
        f"command not trusted: {shared} is writable by group or others (mode 0777)",
    )
    shared.chmod(0o1777)  # sticky, as /tmp: others cannot replace a file they do not own
    assert (await run_check(target(CheckSpec(type="external", command=(str(cmd),)), 80), None)).ok
    marker.unlink()
    cmd.chmod(0o777)
    result = await run_check(target(CheckSpec(type="external", command=(str(cmd),)), 80), None)
    assert result.reason == f"command not trusted: {cmd} is writable by group or others (mode 0777)"
    link = tmp_path / "link"
    link.symlink_to(cmd)  # a safe name for it does not help
    result = await run_check(target(CheckSpec(type="external", command=(str(link),)), 80), None)
    assert result.reason == f"command not trusted: {cmd} is writable by group or others (mode 0777)"
    for command, reason in (
        ("true", "command must be an absolute path, got 'true'"),
        (str(shared), f"command not executable: {shared} is a directory"),
    ):
        result = await run_check(target(CheckSpec(type="external", command=(command,)), 80), None)
        assert (result.ok, result.reason) == (False, reason)
    assert not marker.exists()


async def test_external_killed_by_signal(tmp_path):
    cmd = script(tmp_path, "segv.sh", "kill -SEGV $$\n")
    result = await run_check(target(CheckSpec(type="external", command=(str(cmd),)), 80), None)
    assert not result.ok
    assert result.reason == "killed by SIGSEGV"


async def test_external_without_command():
    result = await run_check(target(CheckSpec(type="external"), 80), None)
    assert not result.ok and result.reason == "no command configured"


# --- external: file descriptors, background processes, output (asyncio and uvloop) -------


def run_on(loop: str, coro):
    """Run ``coro`` to completion on a fresh event loop of kind ``loop`` (``asyncio`` or ``uvloop``)."""
    if loop == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        return uvloop.run(coro)
    return asyncio.run(coro)


LOOPS = pytest.mark.parametrize("loop", ["asyncio", "uvloop"])


async def _wait_gone(pid: int, limit: float = 5.0) -> bool:
    deadline = time.monotonic() + limit
    while not _gone(pid) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return _gone(pid)


@LOOPS
def test_external_command_gets_no_fd_but_stdin_stdout_stderr(tmp_path, loop):
    # an inheritable descriptor of the checker (its socket to the director is one) must not reach
    # the command: a background process of the command would keep it open
    out = tmp_path / "fds"
    cmd = script(tmp_path, "fds.sh", f"ls -l /proc/$$/fd/ > {out}\nreadlink /proc/$$/fd/0 >> {out}\nexit 0\n")
    r, w = os.pipe()
    os.set_inheritable(w, True)
    try:
        inode = os.fstat(w).st_ino
        result = run_on(loop, run_check(target(CheckSpec(type="external", command=(str(cmd),), timeout=5), 80), None))
    finally:
        os.close(r)
        os.close(w)
    assert result.ok, result
    listing = out.read_text()
    assert f"pipe:[{inode}]" not in listing, listing
    assert listing.splitlines()[-1] == "/dev/null"  # stdin


@LOOPS
def test_external_verdict_is_the_commands_exit_not_its_background_child(tmp_path, loop):
    # the background child keeps the command's stderr open: its exit must decide, not end of file
    childfile = tmp_path / "child"
    cmd = script(tmp_path, "bg.sh", f"sleep 30 &\necho $! > {childfile}\necho 'left a child' >&2\nexit 3\n")

    async def main():
        result = await run_check(target(CheckSpec(type="external", command=(str(cmd),), timeout=5), 80), None)
        return result, await _wait_gone(int(childfile.read_text()))

    result, gone = run_on(loop, main())
    assert not result.ok and result.reason == "exit 3: left a child"
    assert gone, "the background child of an exited command survived its check"


@LOOPS
def test_external_exit_0_with_a_background_child_is_up(tmp_path, loop):
    childfile = tmp_path / "child"
    cmd = script(tmp_path, "bg.sh", f"sleep 30 &\necho $! > {childfile}\nexit 0\n")

    async def main():
        result = await run_check(target(CheckSpec(type="external", command=(str(cmd),), timeout=5), 80), None)
        return result, await _wait_gone(int(childfile.read_text()))

    result, gone = run_on(loop, main())
    assert result.ok and result.reason == "exit 0", result
    assert gone


@LOOPS
def test_external_stderr_read_is_bounded(tmp_path, loop):
    # past MAX_OUTPUT (1 MiB) the pipe is no longer read: a command writing without end is not
    # followed (memory, CPU) and ends at the time limit with its whole group
    pidfile = tmp_path / "pid"
    cmd = script(tmp_path, "flood.sh", f"echo $$ > {pidfile}\nhead -c 4194304 /dev/zero >&2\nexit 0\n")

    async def main():
        result = await run_check(target(CheckSpec(type="external", command=(str(cmd),), timeout=2), 80), None)
        return result, await _wait_gone(int(pidfile.read_text()))

    result, gone = run_on(loop, main())
    assert not result.ok and result.reason == "timeout after 2 s", result
    assert gone


def test_external_stderr_keeps_only_its_tail():
    """Of what a command writes to stderr only the last STDERR_TAIL bytes are kept (its
    last line goes into the reason), however much it writes up to MAX_OUTPUT."""
    from checks.protocols.external import STDERR_TAIL, _Stderr

    async def main() -> bytes:
        r, w = os.pipe()
        reader = _Stderr(asyncio.get_running_loop(), r)
        try:
            os.write(w, b"x" * 60000 + b"\nlast words\n")  # within the pipe's 64 KiB
            reader.read()
            return reader.tail
        finally:
            reader.close()
            os.close(w)

    tail = asyncio.run(main())
    assert len(tail) == STDERR_TAIL and tail.endswith(b"\nlast words\n")


@LOOPS
def test_external_endless_stderr_ends_at_the_time_limit(tmp_path, loop):
    pidfile = tmp_path / "pid"
    cmd = script(tmp_path, "yes.sh", f"echo $$ > {pidfile}\ntrap '' TERM INT HUP\nyes 'no backend' >&2\n")

    async def main():
        result = await run_check(target(CheckSpec(type="external", command=(str(cmd),), timeout=0.5), 80), None)
        return result, await _wait_gone(int(pidfile.read_text()))

    result, gone = run_on(loop, main())
    assert not result.ok and result.reason == "timeout after 0.5 s", result
    assert gone


# --- http: expect_body with RE2 ---------------------------------------------------------

_BACKTRACK_CHECK = """
import asyncio, sys
from checks.base import CheckTarget, run_check
from checks.spec import CheckSpec

async def main():
    spec = CheckSpec(type="http", expect_body="(a+)+$", timeout=5)
    target = CheckTarget("k", "rs", None, 80, "127.0.0.1", int(sys.argv[1]), spec)
    result = await run_check(target, None)
    print(result.ok, result.reason)

asyncio.run(main())
"""


async def test_http_backtracking_body_regex_returns_promptly(session):
    # with Python's re, (a+)+$ against a 64 KiB run of "a" ending in "b" backtracks for ever,
    # holding the loop (and every other check) past every timeout; RE2 is linear in the body
    async with serve(HttpServer(body=b"a" * (64 * 1024 - 1) + b"b")) as srv:
        # in a child of its own, so that the old behaviour cannot hang the test run
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _BACKTRACK_CHECK, str(srv.port), stdout=subprocess.PIPE
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            pytest.fail("the check did not return in 30 s")
    assert out.decode().strip() == "False body does not match '(a+)+$'"


#: An expect_body pattern of 934 RE2 instructions (under the limit of 1000) whose search of
#: 64 KiB of random "a" and "b" takes RE2 half a second of CPU here (its DFA gives up).
_SLOW_PATTERN = "(" + "|".join(f"[ab]{{{i}}}a[ab]{{{i}}}c" for i in range(1, 30)) + ")"


async def test_http_slow_body_search_keeps_the_time_limit_and_the_loop(session):
    # RE2 is linear in the body, but its slowest path grows with the pattern: searched on the
    # event loop, such a search held every other check and outlasted the check's time limit
    random = __import__("random").Random(1)
    body = bytes(random.choice(b"ab") for _ in range(64 * 1024))
    gaps = []

    async def ticker() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.005)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    async with serve(HttpServer(body=body)) as srv:
        ticks = asyncio.create_task(ticker())
        try:
            spec = CheckSpec(type="http", expect_body=_SLOW_PATTERN, timeout=0.15)
            started = time.monotonic()
            result = await run_check(target(spec, srv.port), session)
            elapsed = time.monotonic() - started
        finally:
            ticks.cancel()
    assert (result.ok, result.reason, result.timed_out) == (False, "timeout after 0.15 s", True)
    assert elapsed < 0.3, elapsed
    assert max(gaps) < 0.1, max(gaps)


async def test_http_body_pattern_of_too_many_instructions_is_refused_without_request(session):
    async with serve(HttpServer(body=b"ok")) as srv:
        result = await run_check(target(CheckSpec(type="http", expect_body="x" * 1200), srv.port), session)
        assert srv.connections == 0
    assert (result.ok, result.reason) == (False, "bad expect_body regex: 1204 RE2 instructions; at most 1000")


async def test_http_body_regex_re2_cannot_compile_is_a_failed_result_without_request(session):
    # RE2 has no lookaround nor backreferences: such a pattern fails the check, clearly
    async with serve(HttpServer(body=b"ok")) as srv:
        result = await run_check(target(CheckSpec(type="http", expect_body="(?=ok)"), srv.port), session)
        backref = await run_check(target(CheckSpec(type="http", expect_body=r"(o)\1"), srv.port), session)
    assert not result.ok
    assert result.reason == "bad expect_body regex: invalid perl operator: (?="
    assert not backref.ok and backref.reason.startswith("bad expect_body regex: invalid escape sequence")
    assert srv.requests == []
