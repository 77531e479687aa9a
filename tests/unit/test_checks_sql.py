"""The ``mysql`` and ``pgsql`` checks against real servers on loopback.

PostgreSQL: a throwaway cluster (``initdb`` of the Debian ``postgresql`` package, run as
the ``postgres`` user when the tests run as root) on 127.0.0.1 and a free port.
MariaDB: a throwaway ``mariadbd`` (Debian ``mariadb-server``) with its data in a
temporary directory.  Each group skips, saying why, when its server or its driver
(asyncpg, aiomysql) is missing.  The hostile cases (a server that accepts and never
answers, one that announces a huge packet) use small listeners of the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from checkhelpers import free_port

from checks.base import CheckTarget, run_check
from checks.protocols import sql
from checks.spec import MAX_EXPECT_READ, CheckSpec
from director.config import ConfigError, parse_config

try:
    import asyncpg
except ImportError:
    asyncpg = None

try:
    import aiomysql
except ImportError:
    aiomysql = None

LOGIN, PASSWORD, DATABASE = "checker", "s3cret pass", "checkdb"

# --- helpers ----------------------------------------------------------------


def target(port: int, rip: str = "127.0.0.1", **spec: object) -> CheckTarget:
    return CheckTarget(
        key=("svc", rip, port),
        name=f"rs {rip}:{port} of test",
        vip="192.168.10.100",
        vport=port,
        rip=rip,
        rport=port,
        spec=CheckSpec(**spec),  # type: ignore[arg-type]
    )


def wait_listening(port: int, deadline: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")
        time.sleep(0.05)


@dataclass
class Silent:
    """A listener on 127.0.0.1 that accepts, reads, never answers, and notes when a client closes."""

    server: asyncio.Server
    port: int
    accepted: int = 0
    closed: int = 0

    @classmethod
    async def start(cls) -> Silent:
        def handler_for(owner: list[Silent]):
            async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                owner[0].accepted += 1
                while await reader.read(65536):
                    pass
                owner[0].closed += 1
                writer.close()

            return handle

        owner: list[Silent] = []
        server = await asyncio.start_server(handler_for(owner), "127.0.0.1", 0)
        self = cls(server, server.sockets[0].getsockname()[1])
        owner.append(self)
        return self

    async def stop(self) -> None:
        self.server.close()


async def other_tasks() -> set[asyncio.Task[object]]:
    """The event loop's tasks besides the test's own, once those that are ending have ended."""
    for _ in range(3):
        await asyncio.sleep(0)
    return asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]


async def assert_times_out(check_type: str, spec: dict[str, object]) -> None:
    """run_check against a listener that never answers: timed out, in time, socket closed."""
    silent = await Silent.start()
    try:
        timeout = 0.4
        start = time.monotonic()
        result = await run_check(target(silent.port, type=check_type, timeout=timeout, **spec), None)
        elapsed = time.monotonic() - start
        assert not result.ok
        assert result.timed_out, result.reason
        assert result.reason == "timeout after 0.4 s"
        assert timeout <= elapsed < timeout + 0.5
        assert silent.accepted == 1
        for _ in range(100):  # the check closed its socket: the listener reads the end of file
            if silent.closed:
                break
            await asyncio.sleep(0.01)
        assert silent.closed == 1
        assert await other_tasks() == set()  # nothing left running
    finally:
        await silent.stop()


# --- the row's text and the missing drivers (no server) ----------------------


def test_row_text_joins_values_by_tabs_null_empty_booleans_as_psql():
    assert sql.row_text(["a", None, True, False, 2, 1.5, b"\x00\xff", ""]) == "a\t\tt\tf\t2\t1.5\t\\x00ff\t"
    assert sql.row_text([]) == ""
    assert sql.row_text([None]) == ""


def test_row_text_is_cut_at_the_expect_read_limit():
    text = sql.row_text(["x" * MAX_EXPECT_READ, "never seen"])
    assert text == "x" * MAX_EXPECT_READ
    assert len(sql.row_text(["y" * 10] * 100_000)) == MAX_EXPECT_READ


@pytest.mark.parametrize(
    ("check_type", "module", "loader", "reason"),
    [
        ("pgsql", "asyncpg", "_driver", sql.MISSING_ASYNCPG),
        ("mysql", "aiomysql", "_aiomysql", sql.MISSING_AIOMYSQL),
    ],
)
async def test_a_missing_driver_fails_the_check_naming_the_extra(monkeypatch, check_type, module, loader, reason):
    cached = getattr(sql, loader)
    cached.cache_clear()
    monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    try:
        result = await run_check(target(free_port(), type=check_type, login=LOGIN), None)
    finally:
        cached.cache_clear()
    assert not result.ok
    assert result.reason == reason
    assert f"directord[{check_type}]" in reason
    assert sql.missing_driver(check_type) == reason
    # and the configuration loader refuses such a check, naming the extra at the check's type
    text = (
        "virtual_services:\n  - {address: 10.0.0.1, port: 5432, real_servers: [{address: 10.0.0.2}],\n"
        f"     check: {{type: {check_type}, login: {LOGIN}}}}}\n"
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text, "t.yaml")
    assert [(i.line, i.field, i.message) for i in info.value.issues] == [(3, "virtual_services[0].check.type", reason)]


@pytest.mark.parametrize(("check_type", "module"), [("pgsql", asyncpg), ("mysql", aiomysql), ("tcp", "no driver")])
def test_missing_driver_is_none_when_the_driver_is_installed(check_type, module):
    if module is None:
        pytest.skip(f"the {check_type} driver is not installed")
    assert sql.missing_driver(check_type) is None


# --- PostgreSQL ---------------------------------------------------------------


def _pg_bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name))
    return Path(found[-1]).parent if found else None


@dataclass
class PgCluster:
    bindir: Path
    root: Path
    port: int
    as_user: list[str]

    @property
    def data(self) -> Path:
        return self.root / "data"

    def pg_ctl(self, *args: str) -> None:
        subprocess.run(
            [*self.as_user, str(self.bindir / "pg_ctl"), "-D", str(self.data), *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=30,
        )

    def start(self) -> None:
        # client_connection_check_interval: a backend ends soon after its client closes, even in a query
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off "
            "-c client_connection_check_interval=100ms"
        )
        self.pg_ctl("-w", "-t", "20", "-l", str(self.root / "log"), "-o", options, "start")

    def stop(self) -> None:
        self.pg_ctl("-w", "-m", "immediate", "stop")


@pytest.fixture(scope="module")
def pg() -> Iterator[PgCluster]:
    """A PostgreSQL cluster on 127.0.0.1 with role `LOGIN` (password `PASSWORD`) owning `DATABASE`."""
    if asyncpg is None:
        pytest.skip("asyncpg is not installed (pip install 'directord[pgsql]')")
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL's server is not installed (Debian package postgresql)")
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root
        if shutil.which("runuser") is None:
            pytest.skip("running as root, and runuser is missing to run PostgreSQL as postgres")
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root, and there is no postgres user to run PostgreSQL as")
        as_user = ["runuser", "-u", "postgres", "--"]
    # not under pytest's own temporary directory: that one is root's alone (mode 0700)
    root = Path(tempfile.mkdtemp(prefix="directord-pg-"))
    try:
        if as_user:
            os.chown(root, owner.pw_uid, owner.pw_gid)
        started = time.monotonic()
        subprocess.run(
            [*as_user, str(bindir / "initdb"), "-D", str(root / "data"), "-U", "postgres", "--no-sync",
             "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60,
        )  # fmt: skip
        cluster = PgCluster(bindir, root, free_port(), as_user)
        cluster.start()

        async def setup() -> None:
            conn = await asyncpg.connect(host=str(root), port=cluster.port, user="postgres", database="postgres")
            try:
                await conn.execute(f"CREATE ROLE {LOGIN} LOGIN PASSWORD '{PASSWORD}'")
                await conn.execute(f"CREATE DATABASE {DATABASE} OWNER {LOGIN}")
            finally:
                await conn.close()

        asyncio.run(setup())
        print(f"PostgreSQL cluster ready in {time.monotonic() - started:.2f} s", file=sys.stderr)
        try:
            yield cluster
        finally:
            with contextlib.suppress(subprocess.SubprocessError):
                cluster.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def pg_target(pg: PgCluster, **spec: object) -> CheckTarget:
    fields: dict[str, object] = {"type": "pgsql", "login": LOGIN, "password": PASSWORD, "database": DATABASE}
    return target(pg.port, **(fields | spec))


async def test_pgsql_logs_in_without_a_query(pg):
    result = await run_check(pg_target(pg), None)
    assert (result.ok, result.reason) == (True, "logged in")


async def test_pgsql_query_that_returns_a_row_passes(pg):
    result = await run_check(pg_target(pg, query="SELECT current_user, current_database()"), None)
    assert (result.ok, result.reason) == (True, "query returned a row")


async def test_pgsql_row_matches_expect_as_tab_separated_text(pg):
    query = "SELECT 'up'::text, NULL::int, true, 42, current_database()"
    result = await run_check(pg_target(pg, query=query, expect=r"^up\t\tt\t42\tcheckdb$"), None)
    assert (result.ok, result.reason) == (True, r"row matches '^up\\t\\tt\\t42\\tcheckdb$'")


async def test_pgsql_only_the_first_row_is_matched(pg):
    query = "SELECT x FROM generate_series(1, 1000000) AS x"  # one row computed and sent
    spec = {"query": query, "timeout": 2.0}
    assert (await run_check(pg_target(pg, expect="^1$", **spec), None)).ok
    result = await run_check(pg_target(pg, expect="^2$", **spec), None)
    assert (result.ok, result.reason) == (False, "row '1' does not match '^2$'")


async def test_pgsql_row_that_does_not_match_expect_fails(pg):
    result = await run_check(pg_target(pg, query="SELECT 'standby'", expect="^primary$"), None)
    assert (result.ok, result.reason) == (False, "row 'standby' does not match '^primary$'")
    assert not result.timed_out


async def test_pgsql_query_without_rows_fails(pg):
    result = await run_check(pg_target(pg, query="SELECT 1 WHERE false"), None)
    assert (result.ok, result.reason) == (False, "query returned no rows")


async def test_pgsql_query_error_fails_with_the_servers_message(pg):
    result = await run_check(pg_target(pg, query="SELEC 1"), None)
    assert (result.ok, result.reason) == (False, 'query failed: syntax error at or near "SELEC"')


async def test_pgsql_wrong_password_fails(pg):
    result = await run_check(pg_target(pg, password="wrong"), None)
    assert (result.ok, result.reason) == (False, f'password authentication failed for user "{LOGIN}"')


async def test_pgsql_unknown_database_fails(pg):
    result = await run_check(pg_target(pg, database="nosuchdb"), None)
    assert (result.ok, result.reason) == (False, 'database "nosuchdb" does not exist')


async def test_pgsql_stopped_server_fails_refused(pg):
    pg.stop()
    try:
        result = await run_check(pg_target(pg), None)
    finally:
        pg.start()
    assert (result.ok, result.reason) == (False, "connection refused")
    assert (await run_check(pg_target(pg), None)).ok  # and up again once restarted


async def check_sessions(pg: PgCluster) -> int:
    """How many sessions the checks have open on the server (their application_name)."""
    conn = await asyncpg.connect(host=str(pg.root), port=pg.port, user="postgres", database="postgres")
    try:
        query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'directord'"
        return int(await conn.fetchval(query))
    finally:
        await conn.close()


async def test_pgsql_query_past_the_timeout_times_out_and_its_session_ends(pg):
    start = time.monotonic()
    result = await run_check(pg_target(pg, query="SELECT pg_sleep(5)", timeout=0.5), None)
    assert result.timed_out and result.reason == "timeout after 0.5 s"
    assert time.monotonic() - start < 1.0
    assert await other_tasks() == set()  # asyncpg's CancelRequest task is cancelled with the connection
    # the check closed its connection: the backend, still in pg_sleep, notices and ends
    for _ in range(40):
        if await check_sessions(pg) == 0:
            break
        await asyncio.sleep(0.05)
    assert await check_sessions(pg) == 0


async def test_pgsql_server_that_never_answers_times_out_and_the_socket_is_closed():
    if asyncpg is None:
        pytest.skip("asyncpg is not installed (pip install 'directord[pgsql]')")
    await assert_times_out("pgsql", {"login": LOGIN, "password": PASSWORD})


# --- MariaDB (MySQL) ----------------------------------------------------------


@dataclass
class MariaDB:
    root: Path
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def error_log(self) -> Path:
        return self.root / "error.log"


@pytest.fixture(scope="module")
def mariadb() -> Iterator[MariaDB]:
    """A MariaDB server on 127.0.0.1 with user `LOGIN`@127.0.0.1 (password `PASSWORD`), database `DATABASE`."""
    if aiomysql is None:
        pytest.skip("aiomysql is not installed (pip install 'directord[mysql]')")
    server = shutil.which("mariadbd", path="/usr/sbin:/usr/bin:/sbin:/bin")
    install_db = shutil.which("mariadb-install-db", path="/usr/bin:/usr/sbin:/bin:/sbin")
    if server is None or install_db is None:
        pytest.skip("MariaDB's server is not installed (Debian package mariadb-server)")
    root = Path(tempfile.mkdtemp(prefix="directord-mariadb-"))
    small = ["--innodb-log-file-size=4M", "--innodb-buffer-pool-size=8M"]
    user = ["--user=root"] if os.geteuid() == 0 else []  # mariadbd refuses root without it
    proc = None
    try:
        started = time.monotonic()
        subprocess.run(
            [install_db, "--no-defaults", f"--datadir={root / 'data'}", "--auth-root-authentication-method=normal",
             "--skip-test-db", *user, *small],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60,
        )  # fmt: skip
        port = free_port()
        proc = subprocess.Popen(
            [server, "--no-defaults", *user, f"--datadir={root / 'data'}", f"--socket={root / 'sock'}",
             f"--pid-file={root / 'pid'}", f"--log-error={root / 'error.log'}", f"--port={port}",
             "--bind-address=127.0.0.1", "--skip-name-resolve", "--skip-log-bin", *small],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_listening(port, time.monotonic() + 30, proc)

        async def setup() -> None:
            conn = await aiomysql.connect(unix_socket=str(root / "sock"), user="root", password="", autocommit=True)
            try:
                async with conn.cursor() as cursor:
                    await cursor.execute(f"CREATE USER '{LOGIN}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'")
                    await cursor.execute(f"CREATE DATABASE {DATABASE}")
                    await cursor.execute(f"GRANT SELECT ON {DATABASE}.* TO '{LOGIN}'@'127.0.0.1'")
            finally:
                conn.close()

        asyncio.run(setup())
        print(f"MariaDB ready in {time.monotonic() - started:.2f} s", file=sys.stderr)
        yield MariaDB(root, port, proc)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(root, ignore_errors=True)


def my_target(db: MariaDB, **spec: object) -> CheckTarget:
    fields: dict[str, object] = {"type": "mysql", "login": LOGIN, "password": PASSWORD, "database": DATABASE}
    return target(db.port, **(fields | spec))


def aborted_connections(db: MariaDB) -> list[str]:
    """The error log's "Aborted connection" warnings about the check's user."""
    lines = db.error_log.read_text(errors="replace").splitlines()
    return [line for line in lines if "Aborted connection" in line and f"user: '{LOGIN}'" in line]


async def test_mysql_logs_in_without_a_query(mariadb):
    result = await run_check(my_target(mariadb), None)
    assert (result.ok, result.reason) == (True, "logged in")


async def test_mysql_query_passes_and_the_connection_ends_with_quit(mariadb):
    before = aborted_connections(mariadb)
    result = await run_check(my_target(mariadb, query="SELECT CURRENT_USER()"), None)
    assert (result.ok, result.reason) == (True, "query returned a row")
    await asyncio.sleep(0.2)  # the server writes its log after the connection ends
    assert aborted_connections(mariadb) == before  # COM_QUIT: no "Aborted connection" warning


async def test_mysql_row_matches_expect_as_the_servers_text(mariadb):
    query = "SELECT 'up', NULL, 1.50, 42, DATABASE(), x'41ff'"
    result = await run_check(my_target(mariadb, query=query, expect="^up\t\t1.50\t42\tcheckdb\tA\u00ff$"), None)
    assert result.ok, result.reason


async def test_mysql_first_row_of_a_result_past_the_read_limit_still_decides(mariadb):
    # about 700 MB of rows: the first row decides; the rest is read only up to the read limit
    # (1 MiB), so the check ends long before the server could have sent it all
    query = "SELECT seq, REPEAT('x', 60) FROM seq_1_to_10000000"
    result = await run_check(my_target(mariadb, query=query, expect="^1\t", timeout=3.0), None)
    assert (result.ok, result.reason) == (True, "row matches '^1\\t'")
    assert result.duration < 1.0
    result = await run_check(my_target(mariadb, query=query, expect="^2\t", timeout=3.0), None)
    assert not result.ok and result.reason.startswith("row '1\\txxxxx")
    assert result.duration < 1.0


async def test_mysql_row_that_does_not_match_expect_fails(mariadb):
    result = await run_check(my_target(mariadb, query="SELECT 'standby'", expect="^primary$"), None)
    assert (result.ok, result.reason) == (False, "row 'standby' does not match '^primary$'")


async def test_mysql_query_without_rows_fails(mariadb):
    for query in ("SELECT 1 FROM DUAL WHERE 1 = 0", "DO 1"):
        result = await run_check(my_target(mariadb, query=query), None)
        assert (result.ok, result.reason) == (False, "query returned no rows")


async def test_mysql_query_error_fails_with_the_servers_message(mariadb):
    result = await run_check(my_target(mariadb, query="SELEC 1"), None)
    assert not result.ok
    assert result.reason.startswith("query failed: MySQL error 1064: You have an error in your SQL syntax")


async def test_mysql_wrong_password_fails(mariadb):
    result = await run_check(my_target(mariadb, password="wrong"), None)
    assert (result.ok, result.reason) == (
        False,
        f"MySQL error 1045: Access denied for user '{LOGIN}'@'127.0.0.1' (using password: YES)",
    )


async def test_mysql_database_without_grant_fails(mariadb):
    result = await run_check(my_target(mariadb, database="mysql"), None)
    assert (result.ok, result.reason) == (
        False,
        f"MySQL error 1044: Access denied for user '{LOGIN}'@'127.0.0.1' to database 'mysql'",
    )


async def test_mysql_stopped_server_fails_refused():
    if aiomysql is None:
        pytest.skip("aiomysql is not installed (pip install 'directord[mysql]')")
    result = await run_check(target(free_port(), type="mysql", login=LOGIN, password=PASSWORD), None)
    assert (result.ok, result.reason) == (False, "connection refused")


async def test_mysql_query_past_the_timeout_times_out(mariadb):
    start = time.monotonic()
    result = await run_check(my_target(mariadb, query="SELECT SLEEP(5)", timeout=0.5), None)
    assert result.timed_out and result.reason == "timeout after 0.5 s"
    assert time.monotonic() - start < 1.0


async def test_mysql_server_that_never_answers_times_out_and_the_socket_is_closed():
    if aiomysql is None:
        pytest.skip("aiomysql is not installed (pip install 'directord[mysql]')")
    await assert_times_out("mysql", {"login": LOGIN, "password": PASSWORD})


async def test_mysql_server_announcing_a_huge_packet_is_not_read():
    """A greeting packet announced as 16 MiB - 1 long: refused before it is read."""
    if aiomysql is None:
        pytest.skip("aiomysql is not installed (pip install 'directord[mysql]')")
    sent = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"\xff\xff\xff\x00" + b"\x0a" * 65536)  # length 0xffffff, sequence 0, then bytes
        await writer.drain()
        sent.set()
        await reader.read()  # until the client closes
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        result = await run_check(target(port, type="mysql", login=LOGIN, timeout=2.0), None)
    finally:
        server.close()
    assert sent.is_set()
    assert (result.ok, result.reason, result.timed_out) == (False, "server sent more than 1 MiB", False)
