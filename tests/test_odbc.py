"""res_odbc connection features on real databases: negative_connection_cache, isolation,
connect_timeout, sanitysql, and the MariaDB start-up checks."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pyodbc
import pytest

from storage.odbc import (
    ISOLATION_LEVELS,
    MIN_MAX_ALLOWED_PACKET,
    ConnectionClass,
    DatabaseError,
    DatabaseUnavailable,
    OdbcPool,
    check_blob_column,
    driver_connection_string,
    max_allowed_packet_problem,
)
from storage.schema import create_tables, messages_table
from tests.dbbackends import Backend, TcpProxy

pytestmark = pytest.mark.timeout(60)


def select_one(connection: pyodbc.Connection) -> int:
    return int(connection.cursor().execute("SELECT 1").fetchone()[0])


# --- negative_connection_cache ---------------------------------------------------------------


@contextmanager
def broken_then_fixable(
    backend: Backend, tmp_path: Path
) -> Iterator[tuple[str, Callable[[], object]]]:
    """A connection string that fails now, and a function that makes it work."""
    if backend.name == "sqlite":
        directory = tmp_path / "not-yet"
        connection_string = f"Driver=SQLite3;Database={directory}/vm.db;Timeout=1000;"
        yield connection_string, lambda: directory.mkdir()
        return
    proxy = TcpProxy(5432 if backend.name == "postgresql" else 3306)
    proxy.start()
    proxy.stop()  # the port now refuses connections, as a database being restarted does
    try:
        yield backend.connection_string_via(proxy.port), proxy.start
    finally:
        proxy.stop()


def test_negative_connection_cache_fails_fast_until_it_expires(
    backend: Backend, tmp_path: Path
) -> None:
    async def scenario(connection_string: str, fix: Callable[[], object]) -> None:
        pool = OdbcPool(
            ConnectionClass(
                "flaky", connection_string, connect_timeout=2, negative_connection_cache=1.5
            )
        )
        try:
            with pytest.raises(DatabaseUnavailable, match=r"^\[flaky\] "):
                await pool.start()  # a real attempt, which fails
            fix()
            # The database works again, but for 1.5 s nobody tries: fail at once.
            started = time.monotonic()
            with pytest.raises(DatabaseUnavailable, match="negative_connection_cache"):
                await pool.run(select_one, retry_for=0)
            assert time.monotonic() - started < 0.5
            # A caller willing to wait past the expiry gets through, after it.
            assert await pool.run(select_one, retry_for=5) == 1
            assert 0.5 < time.monotonic() - started < 4
        finally:
            await pool.close()

    with broken_then_fixable(backend, tmp_path) as (connection_string, fix):
        asyncio.run(scenario(connection_string, fix))


def test_without_negative_connection_cache_every_request_tries_again(
    backend: Backend, tmp_path: Path
) -> None:
    async def scenario(connection_string: str, fix: Callable[[], object]) -> None:
        pool = OdbcPool(
            ConnectionClass(
                "flaky", connection_string, connect_timeout=2, negative_connection_cache=0
            )
        )
        try:
            with pytest.raises(DatabaseUnavailable):
                await pool.start()
            fix()
            assert await pool.run(select_one, retry_for=0) == 1
        finally:
            await pool.close()

    with broken_then_fixable(backend, tmp_path) as (connection_string, fix):
        asyncio.run(scenario(connection_string, fix))


# --- isolation -------------------------------------------------------------------------------


def isolation_in_effect(connection: pyodbc.Connection, backend: str) -> str:
    """The session's isolation level as res_odbc.conf spells it, asked of the server."""
    cursor = connection.cursor()
    if backend == "postgresql":
        value = cursor.execute("SELECT current_setting('transaction_isolation')").fetchone()[0]
        return str(value).replace(" ", "_")
    if backend == "mysql":
        value = cursor.execute("SELECT @@tx_isolation").fetchone()[0]
        return str(value).lower().replace("-", "_")
    # SQLite has one level; PRAGMA read_uncommitted only matters with a shared cache.
    assert cursor.execute("PRAGMA read_uncommitted").fetchone()[0] == 0
    return "serializable"


def test_the_isolation_level_is_set_on_every_connection(backend: Backend) -> None:
    async def in_effect(connection_class: ConnectionClass) -> str:
        pool = OdbcPool(connection_class)
        try:
            await pool.start()
            return await pool.run(lambda c: isolation_in_effect(c, pool.backend))
        finally:
            await pool.close()

    async def scenario() -> None:
        for level in ISOLATION_LEVELS:
            connection_class = backend.connection_class(max_connections=1)
            connection_class.isolation = level
            expected = "serializable" if backend.name == "sqlite" else level
            assert await in_effect(connection_class) == expected
        # The default is Asterisk's read_committed (MariaDB's own default is repeatable read).
        options = {"connection_string": backend.connection_string}
        default = ConnectionClass.from_options("asterisk", options)
        expected = "serializable" if backend.name == "sqlite" else "read_committed"
        assert await in_effect(default) == expected

    asyncio.run(scenario())


# --- connect_timeout -------------------------------------------------------------------------


@pytest.mark.parametrize("driver", ["PostgreSQL Unicode", "MariaDB Unicode"])
def test_connect_timeout_bounds_a_server_that_never_answers(driver: str) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel completes the handshake; nobody ever speaks
    port = silent.getsockname()[1]
    connection_string = f"Driver={driver};Server=127.0.0.1;Port={port};Database=x;UID=x;PWD=x;"

    async def scenario() -> None:
        pool = OdbcPool(ConnectionClass("silent", connection_string, connect_timeout=1))
        started = time.monotonic()
        try:
            with pytest.raises(DatabaseUnavailable, match=r"^\[silent\] "):
                await pool.start()
        finally:
            await pool.close()
        assert time.monotonic() - started < 5

    try:
        asyncio.run(scenario())
    finally:
        silent.close()


def test_mariadb_connection_strings_get_a_timeout_and_found_rows() -> None:
    maria = "Driver=MariaDB Unicode;Server=h;"
    assert driver_connection_string(maria, 7) == maria + "CONN_TIMEOUT=7;OPTION=2;"
    given = "Driver={MariaDB Unicode};Server=h;CONN_TIMEOUT=3;Option=0"
    assert driver_connection_string(given, 7) == given
    postgres = "Driver=PostgreSQL Unicode;Server=h;"
    assert driver_connection_string(postgres, 7) == postgres


# --- sanitysql -------------------------------------------------------------------------------

SESSION_ID = {"postgresql": "SELECT pg_backend_pid()", "mysql": "SELECT CONNECTION_ID()"}


def test_sanitysql_replaces_a_dead_idle_connection_before_reuse(server_backend: Backend) -> None:
    query = SESSION_ID[server_backend.name]

    def session(connection: pyodbc.Connection) -> int:
        return int(connection.cursor().execute(query).fetchone()[0])

    async def scenario() -> None:
        checked = server_backend.connection_class(name="checked", max_connections=1)
        checked.sanity_idle = 0.2
        unchecked = server_backend.connection_class(name="unchecked", max_connections=1)
        unchecked.sanity_idle = 3600
        always = server_backend.connection_class(name="always", max_connections=1)
        always.sanitysql = "SELECT 0"  # never a true value: an idle connection is replaced
        always.sanity_idle = 0.2
        pools = [OdbcPool(c) for c in (checked, unchecked, always)]
        try:
            for pool in pools:
                await pool.start()
            first = [await pool.run(session) for pool in pools]
            assert await pools[2].run(session) == first[2]  # not idle yet: kept
            await asyncio.to_thread(server_backend.terminate_connections)
            await asyncio.sleep(0.4)

            attempts = {pool.name: 0 for pool in pools}

            def counted(pool: OdbcPool) -> Callable[[pyodbc.Connection], int]:
                def work(connection: pyodbc.Connection) -> int:
                    attempts[pool.name] += 1
                    return session(connection)

                return work

            again = [await pool.run(counted(pool), retry_for=0) for pool in pools]
            # Checked before reuse: the work ran once, on a new session.
            assert attempts["checked"] == 1 and again[0] != first[0]
            # Not checked: the work failed on the dead session and was run again.
            assert attempts["unchecked"] == 2 and again[1] != first[1]
            assert attempts["always"] == 1
            await asyncio.sleep(0.4)
            assert await pools[2].run(session) != again[2]  # "SELECT 0" failed the check
        finally:
            for pool in pools:
                await pool.close()

    asyncio.run(scenario())


# --- MariaDB start-up checks -----------------------------------------------------------------


def test_a_mariadb_blob_column_smaller_than_longblob_is_reported(backend: Backend) -> None:
    async def scenario() -> None:
        pool = OdbcPool(backend.connection_class())
        try:
            await pool.start()
            await create_tables(pool, [messages_table()])
            await check_blob_column(pool, "voicemessages", "recording")  # LONGBLOB: fine
            with pytest.raises(ValueError):
                await check_blob_column(pool, "voicemessages; DROP", "recording")
            if backend.name != "mysql":
                assert pool.max_allowed_packet is None
                return
            assert pool.max_allowed_packet is not None
            assert pool.max_allowed_packet >= MIN_MAX_ALLOWED_PACKET  # the server's default

            def create(connection: pyodbc.Connection) -> None:
                connection.execute("CREATE TABLE small (recording BLOB NOT NULL)")
                connection.execute("CREATE TABLE medium (recording MEDIUMBLOB)")

            await pool.run(create)
            with pytest.raises(
                DatabaseError, match=r"BLOB.*64 KB.*ALTER TABLE small MODIFY recording LONGBLOB"
            ):
                await check_blob_column(pool, "small", "recording")
            with pytest.raises(DatabaseError, match="MEDIUMBLOB.*16 MB"):
                await check_blob_column(pool, "medium", "recording")
            with pytest.raises(DatabaseError, match="no column"):
                await check_blob_column(pool, "voicemessages", "no_such_column")
        finally:
            await pool.close()

    asyncio.run(scenario())


def test_a_small_max_allowed_packet_is_reported_with_the_fix() -> None:
    assert max_allowed_packet_problem("asterisk", MIN_MAX_ALLOWED_PACKET) is None
    problem = max_allowed_packet_problem("asterisk", 1024 * 1024)
    assert problem is not None
    assert problem.startswith("[asterisk] ") and "1048576" in problem
    assert "SET GLOBAL max_allowed_packet" in problem and "my.cnf" in problem


# --- res_odbc.conf options -------------------------------------------------------------------


def test_res_odbc_connection_options_are_read() -> None:
    cls = ConnectionClass.from_options(
        "asterisk",
        {
            "dsn": "asterisk",
            "negative_connection_cache": "300",
            "sanitysql": "select count(*) from systables",
            "isolation": "Repeatable Read",
            "connect_timeout": "3",
            "dbtimeout": "1.5",
        },
    )
    assert cls.negative_connection_cache == 300
    assert cls.dbtimeout == 1.5
    assert cls.sanitysql == "select count(*) from systables"
    assert (cls.isolation, cls.connect_timeout) == ("repeatable_read", 3)
    plain = ConnectionClass.from_options("x", {"dsn": "x"})
    # Not Asterisk's 300 s: a few seconds spare calls a connect attempt each while a restart
    # is still ridden out quickly.
    assert (plain.negative_connection_cache, plain.sanitysql, plain.isolation) == (
        5,
        "select 1",
        "read_committed",
    )
    assert plain.dbtimeout == 3
    assert ConnectionClass.from_options("x", {"dsn": "x", "dbtimeout": "0"}).dbtimeout == 0


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        ({"isolation": "snapshot"}, "isolation"),
        ({"negative_connection_cache": "-1"}, "negative_connection_cache"),
        ({"negative_connection_cache": "soon"}, "negative_connection_cache"),
        ({"dbtimeout": "-1"}, "dbtimeout"),
        ({"dbtimeout": "forever"}, "dbtimeout"),
        ({"dbtimeout": "inf"}, "dbtimeout"),
        ({"dbtimeout": "nan"}, "dbtimeout"),
    ],
)
def test_bad_connection_options_are_refused(options: dict[str, str], complaint: str) -> None:
    with pytest.raises(ValueError, match=rf"\[broken\].*{complaint}"):
        ConnectionClass.from_options("broken", {"dsn": "x", **options})
