"""dbtimeout on real servers: a database behind a firewall that drops packets (TcpProxy's
blackhole) costs each call its deadline and no more, cannot drain the worker pool, and work
given up on is never committed. Also: permanent (configuration) errors are not outages."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable

import pyodbc
import pytest

from storage.odbc import (
    ConnectionClass,
    DatabaseError,
    DatabaseTimeout,
    DatabaseUnavailable,
    OdbcPool,
)
from tests.dbbackends import Backend, TcpProxy

pytestmark = pytest.mark.timeout(90)

UPSTREAM = {"postgresql": 5432, "mysql": 3306}
SLEEP = {"postgresql": "SELECT pg_sleep(5)", "mysql": "SELECT SLEEP(5)"}


def select_one(connection: pyodbc.Connection) -> int:
    return int(connection.cursor().execute("SELECT 1").fetchone()[0])


async def timed(call: Awaitable[object]) -> tuple[float, BaseException | None]:
    """How long `call` took, and what it raised."""
    started = time.monotonic()
    try:
        await call
    except Exception as exc:
        return time.monotonic() - started, exc
    return time.monotonic() - started, None


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        await asyncio.sleep(0.1)


def proxied_class(backend: Backend, proxy: TcpProxy, **options: object) -> ConnectionClass:
    connection_class = ConnectionClass(
        "asterisk", backend.connection_string_via(proxy.port), max_connections=2
    )
    connection_class.dbtimeout = 1.0
    connection_class.connect_timeout = 2
    for key, value in options.items():
        setattr(connection_class, key, value)
    return connection_class


async def works_again(pool: OdbcPool) -> bool:
    try:
        return await pool.run(select_one) == 1
    except DatabaseUnavailable:
        return False


def test_a_blackholed_server_costs_each_call_its_deadline_and_drains_nothing(
    server_backend: Backend,
) -> None:
    proxy = TcpProxy(UPSTREAM[server_backend.name])
    proxy.start()

    async def scenario() -> None:
        pool = OdbcPool(proxied_class(server_backend, proxy))
        try:
            await pool.start()
            assert await pool.run(select_one) == 1
            proxy.blackhole()
            elapsed, error = await timed(pool.run(select_one))
            assert isinstance(error, DatabaseTimeout), error
            assert str(error).startswith("[asterisk] no answer from the database within 1 s")
            for _ in range(3 * pool.connection_class.max_connections):
                # Each call answers in about its deadline, not a TCP timeout: DatabaseTimeout,
                # or at once when a login timed out (negative_connection_cache) or every
                # thread is stuck.
                elapsed, error = await timed(pool.run(select_one))
                assert isinstance(error, DatabaseUnavailable), error
                assert str(error).startswith("[asterisk] ")
                assert elapsed < 4, elapsed
            # Stuck threads are bounded: the pool stopped replacing them, it did not grow.
            assert 0 < pool.abandoned_workers <= 2 + 2
            proxy.forward()
            # The held replies arrive: the stuck threads end, and calls work again.
            await eventually(lambda: works_again(pool), 20, "work succeeds after forward()")
            await eventually(
                lambda: asyncio.sleep(0, pool.abandoned_workers == 0), 20, "stuck threads end"
            )
        finally:
            await pool.close()

    try:
        asyncio.run(scenario())
    finally:
        proxy.stop()


def test_after_a_blackhole_the_proxy_replaced_by_a_working_path_serves_again(
    server_backend: Backend,
) -> None:
    proxy = TcpProxy(UPSTREAM[server_backend.name])
    proxy.start()

    async def scenario() -> None:
        pool = OdbcPool(proxied_class(server_backend, proxy))
        try:
            await pool.start()
            proxy.blackhole()
            _, error = await timed(pool.run(select_one))
            assert isinstance(error, DatabaseTimeout)
            proxy.stop()  # the stuck connection is cut; start() forwards on the same port
            proxy.start()
            await eventually(lambda: works_again(pool), 20, "work succeeds on the new path")
        finally:
            await pool.close()

    try:
        asyncio.run(scenario())
    finally:
        proxy.stop()


@pytest.mark.parametrize("commits_itself", [False, True], ids=["pool-commits", "work-commits"])
def test_an_abandoned_insert_that_comes_back_is_not_committed(
    server_backend: Backend, commits_itself: bool
) -> None:
    """Also when the work commits on its own, as the message store does after its locks."""
    server_backend.sql("CREATE TABLE notes (id INTEGER PRIMARY KEY, body VARCHAR(20))")
    proxy = TcpProxy(UPSTREAM[server_backend.name])
    proxy.start()

    def insert(key: int) -> Callable[[pyodbc.Connection], None]:
        def work(connection: pyodbc.Connection) -> None:
            connection.cursor().execute("INSERT INTO notes VALUES (?, 'x')", key)
            if commits_itself:
                connection.commit()

        return work

    async def scenario() -> None:
        pool = OdbcPool(proxied_class(server_backend, proxy, max_connections=1))
        try:
            await pool.start()
            await pool.run(insert(1))  # committed; the connection is warm and checked
            proxy.blackhole()  # the next INSERT is sent, and held
            _, error = await timed(pool.run(insert(2)))
            assert isinstance(error, DatabaseTimeout)
            assert pool.abandoned_workers == 1
            proxy.forward()  # the INSERT reaches the server, its reply reaches the thread
            await eventually(
                lambda: asyncio.sleep(0, pool.abandoned_workers == 0), 20, "the thread ends"
            )
            await eventually(lambda: works_again(pool), 20, "work succeeds after forward()")
        finally:
            await pool.close()

    try:
        asyncio.run(scenario())
    finally:
        proxy.stop()
    assert [row["id"] for row in server_backend.sql("SELECT id FROM notes ORDER BY id")] == [1]


def test_the_deadline_covers_reconnects_not_one_attempt(server_backend: Backend) -> None:
    proxy = TcpProxy(UPSTREAM[server_backend.name])
    proxy.start()

    async def scenario() -> None:
        pool = OdbcPool(proxied_class(server_backend, proxy, negative_connection_cache=0))
        try:
            await pool.start()
            proxy.stop()  # refused: the pool would reconnect for retry_for = 30 s
            elapsed, error = await timed(pool.run(select_one, retry_for=30))
            assert isinstance(error, DatabaseTimeout), error
            assert "within 1 s" in str(error)
            assert elapsed < 4, elapsed
            # timeout= overrides dbtimeout for one call.
            elapsed, error = await timed(pool.run(select_one, retry_for=30, timeout=2))
            assert isinstance(error, DatabaseTimeout) and "within 2 s" in str(error)
            assert 1.5 < elapsed < 5, elapsed
        finally:
            await pool.close()

    try:
        asyncio.run(scenario())
    finally:
        proxy.stop()


def test_the_driver_query_timeout_ends_a_slow_statement_without_abandoning(
    server_backend: Backend,
) -> None:
    async def scenario() -> None:
        connection_class = server_backend.connection_class(max_connections=1)
        connection_class.dbtimeout = 1.0
        pool = OdbcPool(connection_class)
        query = SLEEP[server_backend.name]
        try:
            await pool.start()
            elapsed, error = await timed(pool.run(lambda c: c.cursor().execute(query).fetchall()))
            assert isinstance(error, DatabaseTimeout), error
            assert elapsed < 4, elapsed
            # The server stopped the statement: the worker came back by itself.
            assert pool.abandoned_workers == 0
            assert await pool.run(select_one) == 1
            # No limit for long maintenance work.
            await pool.run(
                lambda c: c.cursor().execute(query.replace("5", "2")).fetchall(), timeout=0
            )
        finally:
            await pool.close()

    asyncio.run(scenario())


def test_a_login_to_a_blackholed_server_gives_up_within_connect_timeout(
    server_backend: Backend,
) -> None:
    proxy = TcpProxy(UPSTREAM[server_backend.name])
    proxy.start()
    proxy.blackhole()  # the TCP connection opens; the login never gets an answer

    async def scenario() -> None:
        # dbtimeout 0: only the driver's login timeout can end the wait.
        pool = OdbcPool(proxied_class(server_backend, proxy, dbtimeout=0.0, connect_timeout=1))
        try:
            elapsed, error = await timed(pool.start())
            assert isinstance(error, DatabaseUnavailable), error
            assert not isinstance(error, DatabaseTimeout)
            assert elapsed < 5, elapsed
        finally:
            await pool.close()

    try:
        asyncio.run(scenario())
    finally:
        proxy.stop()


# --- permanent errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT * FROM no_such_table",
        "SELECT no_such_column FROM present",
        "SELEC 1",
        "INSERT INTO present (no_such_column) VALUES (1)",
    ],
)
def test_a_missing_table_or_bad_sql_is_permanent_not_an_outage(
    backend: Backend, statement: str
) -> None:
    backend.sql("CREATE TABLE present (id INTEGER)")
    attempts = []

    def work(connection: pyodbc.Connection) -> None:
        attempts.append(1)
        connection.cursor().execute(statement)

    async def scenario() -> None:
        pool = OdbcPool(backend.connection_class(max_connections=1), retry_timeout=5)
        try:
            await pool.start()
            with pytest.raises(DatabaseError) as caught:
                await pool.run(work)
            assert not isinstance(caught.value, DatabaseUnavailable)
            assert caught.value.permanent, caught.value.sqlstate
            assert caught.value.sqlstate.startswith("42")
            assert len(attempts) == 1  # not run again as after a lost connection
            assert await pool.run(select_one) == 1  # and the connection was kept
        finally:
            await pool.close()

    asyncio.run(scenario())


def test_a_duplicate_key_is_not_permanent(backend: Backend) -> None:
    backend.sql("CREATE TABLE present (id INTEGER PRIMARY KEY)")

    async def scenario() -> None:
        pool = OdbcPool(backend.connection_class(max_connections=1))
        try:
            await pool.start()
            await pool.run(lambda c: c.cursor().execute("INSERT INTO present VALUES (1)"))
            with pytest.raises(DatabaseError) as caught:
                await pool.run(lambda c: c.cursor().execute("INSERT INTO present VALUES (1)"))
            assert caught.value.sqlstate.startswith("23")
            assert not caught.value.permanent
        finally:
            await pool.close()

    asyncio.run(scenario())


def test_an_outage_is_never_permanent() -> None:
    assert DatabaseError("x", sqlstate="42S02").permanent
    assert not DatabaseError("x", sqlstate="40001").permanent
    assert not DatabaseUnavailable("x", sqlstate="42000").permanent
    assert not DatabaseTimeout("x", sqlstate="42000").permanent
    assert isinstance(DatabaseTimeout("x"), DatabaseUnavailable)


# --- a stuck worker, on every backend ---------------------------------------------------------


def test_a_worker_whose_caller_went_away_is_still_abandoned_at_its_deadline(
    backend: Backend,
) -> None:
    """A hangup cancels the caller; the stuck worker must not keep its slot for good."""
    backend.sql("CREATE TABLE notes (id INTEGER PRIMARY KEY)")
    release = threading.Event()

    def stuck_insert(connection: pyodbc.Connection) -> None:
        connection.cursor().execute("INSERT INTO notes VALUES (1)")
        release.wait(20)  # stands in for a driver call that does not return

    async def scenario() -> None:
        connection_class = backend.connection_class(max_connections=1)
        connection_class.dbtimeout = 0.5
        pool = OdbcPool(connection_class)
        try:
            await pool.start()
            caller = asyncio.ensure_future(pool.run(stuck_insert))
            await asyncio.sleep(0.2)
            caller.cancel()
            with pytest.raises(asyncio.CancelledError):
                await caller
            await eventually(
                lambda: asyncio.sleep(0, pool.abandoned_workers == 1), 10, "worker abandoned"
            )
            # The one slot is free again: a new thread serves (SQLite: once the stuck
            # transaction lets go of its write lock, so only a read here).
            assert await pool.run(select_one) == 1
            release.set()
            await eventually(
                lambda: asyncio.sleep(0, pool.abandoned_workers == 0), 10, "the thread ends"
            )
        finally:
            release.set()
            await pool.close()

    asyncio.run(scenario())
    assert backend.sql("SELECT id FROM notes") == []  # it came back, and rolled back
