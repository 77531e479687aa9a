"""The ``mysql``, ``pgsql`` and ``oracle`` checks: log in to the database server, optionally run a query.

As ldirectord's ``check_mysql``, ``check_pgsql`` and ``check_oracle`` (all its ``sub
check_sql``, through Perl DBI): connect to the real server's address and port as ``spec.login`` with
``spec.password`` to ``spec.database``; with ``spec.query`` set, run it and count the
server up only when it returns at least one row (ldirectord: ``$sth->rows`` > 0); with
``spec.expect`` set too, that first row must match the RE2 regex ``spec.expect``.

The drivers are optional extras, imported at the first check of their type:
PostgreSQL through asyncpg (``pip install 'directord[pgsql]'``), MySQL and MariaDB
through aiomysql (``pip install 'directord[mysql]'``), Oracle Database through
python-oracledb in its thin mode (``pip install 'directord[oracle]'``; no Oracle Client
libraries).  Without its driver a check fails with a reason that names the extra.

The row matched by ``expect``: its values as text, joined by one tab, NULL as the empty
string (psql's unaligned output, Perl DBI's ``undef`` as text), cut to
`checks.spec.MAX_EXPECT_READ` characters.  MySQL values are the server's own text (the
text protocol, not decoded into Python types), binary strings (``BLOB``, ``x'..'``) as
Latin-1, one character per byte.  PostgreSQL values are decoded by asyncpg and written
back as text: numbers, strings, dates as PostgreSQL writes them, booleans as ``t``/``f``
(psql's), ``bytea`` as ``\\x`` and hex (PostgreSQL's ``bytea_output = hex``); arrays,
JSON, time stamps with a time zone and a few others may differ from psql in spelling:
cast to text in the query (``SELECT now()::text``) to match the server's own text.
Oracle values are decoded by python-oracledb and written back as text: ``NUMBER`` as a
Python ``int`` or ``float`` (``42``, ``0.5``), ``DATE`` and ``TIMESTAMP`` as
``2026-12-07 13:59:53``, ``RAW`` and ``BLOB`` in upper-case hex (``RAWTOHEX``),
``BOOLEAN`` as ``TRUE``/``FALSE``, ``CLOB`` and ``BLOB`` their first
`checks.spec.MAX_EXPECT_READ` characters or bytes; use ``TO_CHAR`` in the query to
match the server's own text.

The ``oracle`` check and its ``database``: ``database`` is the instance's SID, as
ldirectord's ``dbi:Oracle:sid=DATABASE`` (``SELECT 1 FROM DUAL`` is the usual query);
``service:NAME`` names a service instead (Oracle's ``SERVICE_NAME``, the only way to
reach a pluggable database: ``service:FREEPDB1``).  SID and service name are letters,
digits and ``_ . $ # -`` (`oracle_database_problem`).  python-oracledb gets the host,
port and SID or service name as parameters, never a connect string: it reads no
``tnsnames.ora`` (``$TNS_ADMIN``, ``$ORACLE_HOME/network/admin``; the thin mode reads
that file only to look up a connect alias), no ``sqlnet.ora`` (the thin mode never
does), no wallet (the check speaks TCP, not TCPS), and makes no connection of its own
to the real server: it connects to `checks.protocols.tns.TnsGuard`, which relays to
the real server after checking the TNS framing (python-oracledb 26.1 spins without end
on a packet of length 0 from the server), bounds what is read to
`checks.protocols.tns.MAX_ORACLE_READ` bytes and refuses a listener's ``REDIRECT``
(shared-server dispatchers, RAC SCAN listeners: point the check at the instance's own
listener port instead).  The environment variable ``PYO_DEBUG_PACKETS`` (read by
python-oracledb when it is imported) makes it print every packet, the password's
exchange included, on standard output: do not set it for directord.  The passing path
of the ``oracle`` check has not been tested against an Oracle Database (none can be
installed where directord is tested): its tests cover refused, silent, garbage and
oversized servers and the configuration.

Where directord differs from ldirectord, and why:

* ``query`` is optional: without it, logging in is the check (ldirectord refuses a
  check without ``request``).
* Oracle: ldirectord's DBD::Oracle needs the Oracle Client libraries (Debian does not
  package it, so Debian's ldirectord cannot run ``service=oracle`` at all);
  directord's thin driver needs none.  ldirectord fetches the first row
  (``fetchrow_hashref``) and counts ``rows``, as directord does.
* Only a result set counts: a statement that returns no rows (``UPDATE``, ``SET``) fails,
  where ldirectord's DBI counted the rows an ``UPDATE`` changed; a health check does not
  write.  ldirectord strips one leading ``/`` from ``request`` (its parser adds one to
  every request); ``query`` is run as written, so a converted ``request`` loses that
  ``/``.
* PostgreSQL without TLS: ldirectord's DBD::Pg uses libpq's default ``sslmode=prefer``
  (TLS whenever the server offers it, the certificate unchecked); directord connects in
  clear (asyncpg ``ssl=False``), as DBD::mysql does for MySQL.  A TLS handshake per
  check costs the real server and the checker CPU at thousands of checks per second
  and checks nothing, and ``prefer`` makes asyncpg read the client certificate files
  of ``~/.postgresql`` at every connect.  A server whose ``pg_hba.conf`` accepts only
  ``hostssl`` fails with its own reason (``no pg_hba.conf entry ... no encryption``).
* No environment: ``PGPASSWORD``, ``~/.pgpass``, ``PGSSLMODE``, ``PGDATABASE`` and the
  like are not read (libpq reads them for ldirectord); a missing password is the empty
  password, a missing database is ``login`` (libpq's default), as for MySQL none.

Closing: on every path the connection is closed; MySQL is sent ``COM_QUIT`` first when
the check ends normally, so that the server does not log an aborted connection for
each check (MariaDB's ``log_warnings = 2`` default); a cancelled check (its time limit)
closes the socket at once.  PostgreSQL is closed at once (asyncpg ``terminate``): a
backend logs a client's end of file outside a transaction at ``DEBUG1`` only.

What is read: PostgreSQL's query runs with a row limit of one (an extended-protocol
``Execute`` of at most one row, asyncpg ``fetchrow``), so the server computes and sends
at most one row.  MySQL's text protocol sends every row of a result; the check reads
them unbuffered, one packet at a time, stops reading at `MAX_MYSQL_READ` bytes from the
server in all (the first row then decides; the rest is not read, the socket is closed),
and reads the remaining rows, within that budget, only to close cleanly.  The rest of
the risk: asyncpg buffers any one message the server announces (a 'D' row up to
PostgreSQL's 1 GiB) until it is complete, and the first MySQL row is read whole when it
fits in `MAX_MYSQL_READ`; both are bounded in time by ``spec.timeout`` (`run_check`), so
a hostile server can make the checker hold at most what it sends in that time.  Keep
the query's result small (``SELECT 1``).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import re
from collections.abc import Iterable
from types import ModuleType
from typing import TYPE_CHECKING, Any

from checks.protocols.tcp import socket_address
from checks.protocols.tns import TnsGuard
from checks.spec import MAX_EXPECT_READ

if TYPE_CHECKING:
    from checks.base import CheckTarget

__all__ = [
    "check_mysql",
    "check_pgsql",
    "check_oracle",
    "missing_driver",
    "oracle_database_problem",
    "row_text",
    "DRIVERS",
    "MAX_MYSQL_READ",
    "MISSING_ASYNCPG",
    "MISSING_AIOMYSQL",
    "MISSING_ORACLEDB",
]

#: Bytes read from a MySQL server in one check, handshake included (1 MiB): past it the
#: check stops reading (a failure while logging in or before the first row).
MAX_MYSQL_READ = 1024 * 1024

#: Reason of a ``pgsql`` check when asyncpg cannot be imported.
MISSING_ASYNCPG = "the pgsql check needs asyncpg: pip install 'directord[pgsql]'"

#: Reason of a ``mysql`` check when aiomysql cannot be imported.
MISSING_AIOMYSQL = "the mysql check needs aiomysql: pip install 'directord[mysql]'"

#: Reason of an ``oracle`` check when python-oracledb cannot be imported.
MISSING_ORACLEDB = "the oracle check needs oracledb: pip install 'directord[oracle]'"

#: The driver module of each check type; the extra of the same name as the type installs it.
DRIVERS: dict[str, str] = {"pgsql": "asyncpg", "mysql": "aiomysql", "oracle": "oracledb"}

#: Characters of the first row shown in a failure's reason.
_ROW_SHOWN = 40

#: Characters of a server's error message kept in a reason.
_MESSAGE = 160

#: Sent to the server as the client's name (PostgreSQL ``application_name``, MySQL's
#: ``program_name`` connection attribute): the checks' sessions are told apart in
#: ``pg_stat_activity`` and ``SHOW PROCESSLIST``.
_CLIENT_NAME = "directord"

#: Seconds the drivers' own connect timeouts run past ``spec.timeout``: the check's time limit
#: (`checks.base.run_check`) ends the check first and reports it as timed out; theirs is a backstop.
DRIVER_TIMEOUT_MARGIN = 1.0


_TOO_MUCH = f"server sent more than {MAX_MYSQL_READ // (1024 * 1024)} MiB"


class ReadLimitError(ValueError):
    """A MySQL server sent more than `MAX_MYSQL_READ` bytes in one check."""


def missing_driver(check_type: str) -> str | None:
    """Why a ``check_type`` check cannot run here, or ``None`` when it can (or needs no driver).

    For the configuration loader (``directord check``): ``"the pgsql check needs asyncpg:
    pip install 'directord[pgsql]'"`` when asyncpg cannot be found.  Looks the module up
    (`importlib.util.find_spec`) without importing it.
    """
    module = DRIVERS.get(check_type)
    if module is None:
        return None
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a module set to None in sys.modules, a broken package
        found = False
    return None if found else f"the {check_type} check needs {module}: pip install 'directord[{check_type}]'"


def row_text(values: Iterable[object]) -> str:
    """One row as the text ``expect`` is matched against.

    Values joined by a tab; ``None`` (SQL NULL) is the empty string, ``bool`` ``t``/``f``,
    ``bytes`` PostgreSQL's hex text (``\\x00ff``) for asyncpg's ``bytea``; anything else
    ``str(value)``.  MySQL's values arrive as ``str`` (the server's text) or, for binary
    strings, ``bytes`` decoded as Latin-1 by the MySQL check before this is called.  Cut
    to `checks.spec.MAX_EXPECT_READ` characters.
    """
    parts: list[str] = []
    size = 0
    for value in values:
        if value is None:
            text = ""
        elif isinstance(value, str):
            text = value
        elif isinstance(value, bool):
            text = "t" if value else "f"
        elif isinstance(value, bytes):
            text = "\\x" + value[:MAX_EXPECT_READ].hex()
        else:
            text = str(value)
        parts.append(text)
        size += len(text) + 1
        if size > MAX_EXPECT_READ:
            break
    return "\t".join(parts)[:MAX_EXPECT_READ]


def _shown(text: str) -> str:
    text = text if len(text) <= _ROW_SHOWN else text[: _ROW_SHOWN - 3] + "..."
    return repr(text)


async def _judge_row(values: Iterable[object] | None, expect: str | None) -> tuple[bool, str]:
    """``(ok, reason)`` of a query's first row (``None``: the query returned no rows)."""
    if values is None:
        return False, "query returned no rows"
    if expect is None:
        return True, "query returned a row"
    # here, not at the top: `missing_driver` is for the configuration loader, which need not load aiohttp
    from checks.protocols.http import body_matches, compile_body_pattern

    pattern = compile_body_pattern(expect)
    if isinstance(pattern, str):
        return False, f"bad expect regex: {pattern}"
    text = row_text(values)
    if await body_matches(pattern, text):
        return True, f"row matches {expect!r}"
    return False, f"row {_shown(text)} does not match {expect!r}"


def _message(exc: BaseException) -> str:
    """The server's or driver's own text of an error, on one line, at most `_MESSAGE` characters."""
    args = exc.args
    if len(args) == 2 and isinstance(args[0], int) and isinstance(args[1], str):
        text = f"MySQL error {args[0]}: {args[1]}"  # pymysql: (errno, message)
    else:
        message = getattr(exc, "message", None)  # asyncpg: the server's message, without DETAIL and HINT
        text = message if isinstance(message, str) and message else str(exc)
    text = " ".join(text.split()) or type(exc).__name__
    return text if len(text) <= _MESSAGE else text[: _MESSAGE - 3] + "..."


# -- PostgreSQL ------------------------------------------------------------------------


@functools.cache
def _driver(module: str) -> ModuleType | None:
    """The driver module ``module`` (``"asyncpg"``, ``"oracledb"``), or ``None`` when it is not
    installed (looked for once per process)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


async def check_pgsql(target: CheckTarget) -> tuple[bool, str]:
    """Log in to the PostgreSQL server ``target.rip``:``target.rport`` and run ``spec.query``.

    ldirectord's ``check_pgsql`` (``sub check_sql``); the module's docstring says what
    is matched and where directord differs.  The connection is made in clear (no TLS),
    as ``spec.login`` with ``spec.password`` (empty when unset) to ``spec.database``
    (``login`` when unset), asyncpg's own connect timeout a second past ``spec.timeout``
    (`DRIVER_TIMEOUT_MARGIN`: `run_check`'s limit comes first); the query's first row only is
    fetched (asyncpg ``fetchrow``).

    Returns:
        ``(True, "logged in")`` without a query; ``(True, "query returned a row")``,
        ``(True, "row matches 'RE'")``; ``(False, reason)`` for an error the server
        reported (``password authentication failed for user "x"``, ``query failed:
        syntax error at or near "SELEC"``), a query without rows, a row that does not
        match, or a missing asyncpg (`MISSING_ASYNCPG`).

    Raises:
        OSError: the connection failed or broke (refused, reset, unreachable).
        ValueError: ``target.rip`` is not an IP address.
        asyncio.CancelledError: the check was cancelled (its time limit); the
            connection is closed first.
    """
    asyncpg = _driver("asyncpg")
    if asyncpg is None:
        return False, MISSING_ASYNCPG
    socket_address(target.rip, target.rport)  # an IP address: asyncpg would resolve a name
    spec = target.spec
    login = spec.login or ""
    try:
        conn = await asyncpg.connect(
            host=target.rip,
            port=target.rport,
            user=login,
            password=spec.password or "",
            database=spec.database or login,
            ssl=False,
            direct_tls=False,
            target_session_attrs="any",
            timeout=spec.timeout + DRIVER_TIMEOUT_MARGIN,
            statement_cache_size=0,
            server_settings={"application_name": _CLIENT_NAME},
        )
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return False, _message(exc)
    try:
        if spec.query is None:
            return True, "logged in"
        try:
            row = await conn.fetchrow(spec.query)
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            return False, f"query failed: {_message(exc)}"
        return await _judge_row(None if row is None else row.values(), spec.expect)
    finally:
        conn.terminate()


# -- MySQL and MariaDB -----------------------------------------------------------------


@functools.cache
def _aiomysql() -> tuple[ModuleType, type] | None:
    """aiomysql and the connection class of the check, or ``None`` when it is not installed."""
    try:
        aiomysql = importlib.import_module("aiomysql")
    except ImportError:
        return None

    base: Any = aiomysql.Connection

    class BoundedConnection(base):  # type: ignore[misc]
        """An aiomysql connection that reads at most `MAX_MYSQL_READ` bytes from its server.

        Every read of aiomysql goes through ``_read_bytes`` with the length the server
        announced, before the bytes are read: a longer packet is refused unread.
        """

        _read_left = MAX_MYSQL_READ

        async def _read_bytes(self, num_bytes: int) -> Any:
            self._read_left -= num_bytes
            if self._read_left < 0:
                self.close()
                raise ReadLimitError(_TOO_MUCH)
            return await super()._read_bytes(num_bytes)

    return aiomysql, BoundedConnection


def _mysql_values(row: tuple[object, ...]) -> list[object]:
    return [value.decode("latin-1") if isinstance(value, bytes) else value for value in row]


async def check_mysql(target: CheckTarget) -> tuple[bool, str]:
    """Log in to the MySQL/MariaDB server ``target.rip``:``target.rport`` and run ``spec.query``.

    ldirectord's ``check_mysql`` (``sub check_sql``); the module's docstring says what
    is matched and where directord differs.  The connection is made in clear (no TLS,
    as DBD::mysql's default), as ``spec.login`` with ``spec.password`` (empty when
    unset) to ``spec.database`` (none when unset), with ``utf8mb4``, the server's own
    autocommit, ``LOAD DATA LOCAL`` refused, aiomysql's TCP connect timeout a second past
    ``spec.timeout`` (`DRIVER_TIMEOUT_MARGIN`).  The query runs unbuffered: its first row is read,
    then the rest of the result within `MAX_MYSQL_READ` bytes, then ``COM_QUIT``.

    Returns:
        ``(True, "logged in")`` without a query; ``(True, "query returned a row")``,
        ``(True, "row matches 'RE'")``; ``(False, reason)`` for an error the server
        reported (``MySQL error 1045: Access denied for user ...``, ``query failed:
        MySQL error 1064: You have an error in your SQL syntax...``), a query without
        rows, a row that does not match, a server that sent too much before the first
        row (``server sent more than 1 MiB``), or a missing aiomysql
        (`MISSING_AIOMYSQL`).

    Raises:
        OSError: the connection failed or broke (refused, reset, unreachable).
        ValueError: ``target.rip`` is not an IP address.
        asyncio.CancelledError: the check was cancelled (its time limit); the
            connection is closed first.
    """
    loaded = _aiomysql()
    if loaded is None:
        return False, MISSING_AIOMYSQL
    aiomysql, connection_class = loaded
    socket_address(target.rip, target.rport)  # an IP address: aiomysql would resolve a name
    spec = target.spec
    conn = connection_class(
        host=target.rip,
        port=target.rport,
        user=spec.login or "",
        password=spec.password or "",
        db=spec.database,
        charset="utf8mb4",
        conv={},  # no decoders: values stay the server's text
        autocommit=None,  # the server's own: no SET autocommit round trip
        local_infile=False,
        connect_timeout=spec.timeout + DRIVER_TIMEOUT_MARGIN,
        program_name=_CLIENT_NAME,
    )
    stage = ""
    try:
        try:
            # aiomysql.connect() is this, but returns the connection only once logged in:
            # holding it from the start lets a cancelled login close its socket here too
            await conn._connect()
            if spec.query is None:
                result = True, "logged in"
            else:
                stage = "query failed: "
                cursor = await conn.cursor(aiomysql.SSCursor)
                await cursor.execute(spec.query)
                row = await cursor.fetchone()
                result = await _judge_row(None if row is None else _mysql_values(row), spec.expect)
                try:
                    await cursor.close()  # reads the rest of the result, within MAX_MYSQL_READ
                except (ReadLimitError, aiomysql.Error):
                    return result
            await conn.ensure_closed()  # COM_QUIT, then close
            return result
        except aiomysql.Error as exc:
            cause = exc.__cause__
            if isinstance(cause, OSError) and not isinstance(cause, TimeoutError):
                raise cause from None
            return False, stage + _message(exc)
        except ReadLimitError as exc:
            return False, stage + str(exc)
    finally:
        conn.close()


# -- Oracle Database -------------------------------------------------------------------

#: Prefix of a ``database`` that names an Oracle service (``SERVICE_NAME``) rather than a SID.
ORACLE_SERVICE_PREFIX = "service:"

#: A SID or service name: letters, digits and ``_ . $ # -``, at most 128 characters (it is
#: written into the connect descriptor, where parentheses and ``=`` would be syntax).
_ORACLE_NAME = re.compile(r"[A-Za-z0-9_.$#-]{1,128}")


def oracle_database_problem(database: str | None) -> str | None:
    """Why ``database`` cannot name an Oracle instance, or ``None`` when it can.

    ``database`` is a SID (``ORCL``) or ``service:NAME`` (``service:FREEPDB1``); the name
    is 1 to 128 letters, digits and ``_ . $ # -``.
    """
    if not database:
        return "an oracle check needs database: the instance's SID, or service:NAME for a service"
    name = database.removeprefix(ORACLE_SERVICE_PREFIX)
    if not _ORACLE_NAME.fullmatch(name):
        kind = "service name" if database.startswith(ORACLE_SERVICE_PREFIX) else "SID"
        return f"an oracle {kind} is 1 to 128 letters, digits and _ . $ # -, got {name[:60]!r}"
    return None


_CONNECTION_ID = re.compile(r"\s*\(CONNECTION_ID=[^)]*\)")


def _oracle_message(exc: BaseException) -> str:
    """python-oracledb's text of an error without its ``Help:`` link and connection id:
    ``ORA-01017: invalid credential...``; a failed connect as ``cannot connect: DPY-4011: ...``."""
    error = exc.args[0] if exc.args else None
    message = getattr(error, "message", None)
    text = message if isinstance(message, str) and message else str(exc)
    lines = [_CONNECTION_ID.sub("", line) for line in text.splitlines() if line and not line.startswith("Help:")]
    if len(lines) > 1 and lines[0].startswith("DPY-6005:"):
        lines[0] = "cannot connect:"
    text = " ".join(" ".join(lines).split()) or type(exc).__name__
    return text if len(text) <= _MESSAGE else text[: _MESSAGE - 3] + "..."


async def _oracle_values(oracledb: Any, row: tuple[object, ...]) -> list[object]:
    """A row's values ready for `row_text`: LOBs read (at most `MAX_EXPECT_READ`), ``RAW`` as
    upper-case hex, ``BOOLEAN`` as ``TRUE``/``FALSE``."""
    values: list[object] = []
    for value in row:
        if isinstance(value, oracledb.AsyncLOB):
            value = await value.read(1, MAX_EXPECT_READ)
        if isinstance(value, bytes):
            value = value[:MAX_EXPECT_READ].hex().upper()
        elif isinstance(value, bool):
            value = "TRUE" if value else "FALSE"
        values.append(value)
    return values


async def check_oracle(target: CheckTarget) -> tuple[bool, str]:
    """Log in to the Oracle Database ``target.rip``:``target.rport`` and run ``spec.query``.

    ldirectord's ``check_oracle`` (``sub check_sql`` with ``dbi:Oracle:sid=``); the
    module's docstring says what is matched, how ``database`` names a SID or a service,
    what python-oracledb reads and where directord differs.  python-oracledb's thin mode
    (no Oracle Client), async API, connects as ``spec.login`` with ``spec.password``
    (empty when unset), through `checks.protocols.tns.TnsGuard`; the query's first row
    only is fetched (``prefetchrows`` and ``arraysize`` 1), then the session is logged
    off.  Not tested against an Oracle Database: see the module's docstring.

    Returns:
        ``(True, "logged in")`` without a query; ``(True, "query returned a row")``,
        ``(True, "row matches 'RE'")``; ``(False, reason)`` for an error the server
        reported (``ORA-01017: invalid credential or not authorized; logon denied``,
        ``query failed: ORA-00942: table or view does not exist``), one of the guard's
        (``bad TNS packet: length 0``, ``server sent more than 1 MiB``), a query without
        rows, a row that does not match, a bad ``database``, or a missing
        python-oracledb (`MISSING_ORACLEDB`).

    Raises:
        OSError: the connection to the real server failed (refused, unreachable).
        ValueError: ``target.rip`` is not an IP address.
        asyncio.CancelledError: the check was cancelled (its time limit); both
            connections are aborted first.
    """
    oracledb = _driver("oracledb")
    if oracledb is None:
        return False, MISSING_ORACLEDB
    family, sockaddr = socket_address(target.rip, target.rport)
    spec = target.spec
    problem = oracle_database_problem(spec.database)
    if problem is not None:
        return False, problem
    database = spec.database or ""
    if database.startswith(ORACLE_SERVICE_PREFIX):
        names = {"service_name": database.removeprefix(ORACLE_SERVICE_PREFIX)}
    else:
        names = {"sid": database}
    guard = TnsGuard()
    try:
        port = await guard.open(family, sockaddr)
        try:
            conn = await oracledb.connect_async(
                user=spec.login or "",
                password=spec.password or "",
                host="127.0.0.1",
                port=port,
                **names,
                program=_CLIENT_NAME,
                disable_oob=True,  # no out-of-band break test at connect: the check never interrupts a call
                retry_count=0,
                expire_time=0,
                stmtcachesize=0,
                tcp_connect_timeout=spec.timeout + DRIVER_TIMEOUT_MARGIN,
            )
        except oracledb.Error as exc:
            return False, guard.failure or _oracle_message(exc)
        if spec.query is None:
            result = True, "logged in"
        else:
            try:
                cursor = conn.cursor()
                cursor.prefetchrows = 1
                cursor.arraysize = 1
                await cursor.execute(spec.query)
                row = await cursor.fetchone()
                values = None if row is None else await _oracle_values(oracledb, row)
            except oracledb.Error as exc:
                result = False, guard.failure or f"query failed: {_oracle_message(exc)}"
            else:
                result = await _judge_row(values, spec.expect)
        try:
            await conn.close()  # rollback and logoff: the server logs no lost connection
        except oracledb.Error:
            pass
        return result
    finally:
        guard.close()
