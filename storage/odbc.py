"""ODBC connection classes and their worker pools, in the manner of Asterisk's res_odbc.

A connection class (one section of res_odbc.conf, see storage.odbc_class) becomes an `OdbcPool`:
worker threads (storage.odbc_workers), each owning one pyodbc connection. A caller hands the pool
one whole unit of work (a function taking a connection); it runs in one transaction, is committed
on success and rolled back on error. When the connection itself fails (server restart, network
loss), the connection is dropped, a new one is made with capped backoff, and the whole unit of
work is run again, so work must be safe to repeat (the message store makes it so with msg_id).

Every unit of work has a deadline (`dbtimeout`, or the caller's `timeout=`) covering the whole
call, queueing and reconnects included. It is enforced twice: as the driver's query timeout
where the driver has one (psqlODBC: SQL_ATTR_QUERY_TIMEOUT; MariaDB Connector/ODBC ignores that
attribute, so the session's max_statement_time), and by the caller, who stops waiting, gets
DatabaseTimeout and abandons the worker thread: a fresh thread takes its place, and the
abandoned one, if its driver call ever returns, rolls back, closes its connection and ends.
A COMMIT already sent when the deadline passes may or may not have taken effect.

A connection and its cursors are used, freed and closed only on the worker thread that owns
it, and SQLite connections are opened and closed one at a time process-wide: the SQLite driver
does no locking of its own (see storage.odbc_handles).

MariaDB connection strings get CONN_TIMEOUT and OPTION=2 (see driver_connection_string).
Start-up checks: PostgreSQL bytea round trip, MariaDB max_allowed_packet; `check_blob_column()`
checks a MariaDB recording column.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import pyodbc

from storage.odbc_checks import (
    MIN_MAX_ALLOWED_PACKET,
    check_blob_column,
    max_allowed_packet_problem,
)
from storage.odbc_class import (
    ISOLATION_LEVELS,
    ConnectionClass,
    driver_connection_string,
    driver_name,
)
from storage.odbc_errors import (
    DatabaseError,
    DatabaseTimeout,
    DatabaseUnavailable,
    driver_message,
    is_statement_error,
    is_timeout,
    sqlstate_of,
)
from storage.odbc_guarded import GuardedConnection
from storage.odbc_handles import CursorTracker, execute_once, handle_lock, serializes_handles
from storage.odbc_workers import Job, PoolExhausted, Workers, current_job

__all__ = [
    "BACKENDS",
    "ISOLATION_LEVELS",
    "MIN_MAX_ALLOWED_PACKET",
    "ConnectionClass",
    "DatabaseError",
    "DatabaseTimeout",
    "DatabaseUnavailable",
    "OdbcPool",
    "check_blob_column",
    "driver_connection_string",
    "driver_message",
    "is_statement_error",
    "max_allowed_packet_problem",
    "sqlstate_of",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

# A dropped connection must really go away; unixODBC's own pooling would hand it back.
pyodbc.pooling = False

BACKENDS = ("sqlite", "postgresql", "mysql")

# The ODBC statement attribute, set on a connection as the default of all its statements.
SQL_ATTR_QUERY_TIMEOUT = 0

# How much longer than the driver's own query timeout the caller waits before abandoning the
# worker: a driver that enforces its timeout frees the thread itself, with no replacement.
TIMEOUT_GRACE = 0.5


def _detect_backend(dbms_name: str) -> str | None:
    dbms = dbms_name.lower()
    if "postgres" in dbms:
        return "postgresql"
    if "mariadb" in dbms or "mysql" in dbms:
        return "mysql"
    if "sqlite" in dbms:
        return "sqlite"
    return None


class _ConnectSuppressed(Exception):
    """A connect was not tried because the last one failed (negative_connection_cache)."""

    def __init__(self, until: float, message: str) -> None:
        super().__init__(message)
        self.until = until


class OdbcPool:
    """A res_odbc connection class at run time: worker threads with one connection each.

    `max_abandoned` bounds the threads left stuck in a driver call (default: max_connections,
    at least 2); past it no replacement is started and, with no worker left, calls fail at once.
    """

    def __init__(
        self,
        connection_class: ConnectionClass,
        *,
        retry_timeout: float = 30.0,
        max_abandoned: int | None = None,
    ) -> None:
        self.connection_class = connection_class
        self.retry_timeout = retry_timeout
        size = connection_class.max_connections
        self._workers = Workers(
            connection_class.name,
            size,
            max_abandoned=max(2, size) if max_abandoned is None else max_abandoned,
            on_exit=self._drop_connection,
        )
        self._local = threading.local()
        self._lock = threading.Lock()
        self._backend: str | None = None
        self._closing = threading.Event()
        self._connect_string: str | None = None
        # Connect and close under the process-wide lock (SQLite, see storage.odbc_handles);
        # None until the first connect looks at the driver.
        self._serialize_handles: bool | None = None
        # negative_connection_cache: no connect attempt before this time.monotonic() value.
        self._suppress_until = 0.0
        self._suppressed_because = ""
        self._query_timeout_supported = True
        self.max_allowed_packet: int | None = None  # MariaDB only, read at start()
        # Told (seconds, ok) after every run(): ok is False when it raised DatabaseError.
        self.on_query: Callable[[float, bool], None] | None = None

    @property
    def name(self) -> str:
        return self.connection_class.name

    @property
    def backend(self) -> str:
        """Which database this is ("sqlite", "postgresql" or "mysql"), known once connected."""
        if self._backend is None:
            raise RuntimeError(f"[{self.name}] backend unknown: not connected yet (call start())")
        return self._backend

    @property
    def abandoned_workers(self) -> int:
        """Worker threads given up on that are still inside a driver call."""
        return self._workers.stuck

    async def start(self) -> None:
        """Connect now, to learn the backend and to fail fast on a wrong configuration."""
        cls = self.connection_class
        # A login has its own limit (connect_timeout); the start-up checks get a dbtimeout.
        limit = cls.connect_timeout + (cls.dbtimeout or 30.0)
        await self._submit(self._start_sync, limit)
        count = cls.max_connections
        if cls.pre_connect and count > 1:
            barrier = threading.Barrier(count, timeout=cls.connect_timeout + 5)
            await asyncio.gather(
                *(self._submit(self._preconnect_sync, limit + 5, barrier) for _ in range(count))
            )

    async def run(
        self,
        work: Callable[[pyodbc.Connection], T],
        *,
        retry_for: float | None = None,
        timeout: float | None = None,
    ) -> T:
        """Run one unit of work in one transaction on a worker thread.

        Statement errors raise DatabaseError (with .sqlstate; .permanent for a missing table or
        bad SQL) at once. Connection failures are retried with a fresh connection for up to
        `retry_for` seconds (default retry_timeout; 0 means one immediate reconnect only), then
        raise DatabaseUnavailable. While negative_connection_cache holds back connects, the
        work fails at once unless the cache expires within `retry_for`. The whole call, retries
        included, must finish within `timeout` seconds (default the class's dbtimeout; 0 = no
        limit, for long maintenance work), or it raises DatabaseTimeout; reconnecting stops at
        that deadline too.
        """
        limit = self.retry_timeout if retry_for is None else retry_for
        seconds = self.connection_class.dbtimeout if timeout is None else timeout
        if seconds < 0:
            raise ValueError(f"timeout must not be negative, not {seconds}")
        started = time.monotonic()
        deadline = started + seconds if seconds > 0 else None
        try:
            result = await self._submit(self._run_sync, seconds, work, limit, deadline, seconds)
        except DatabaseError:
            if self.on_query is not None:
                self.on_query(time.monotonic() - started, False)
            raise
        if self.on_query is not None:
            self.on_query(time.monotonic() - started, True)
        return result

    async def close(self) -> None:
        """Stop the workers, finishing work already handed over; each closes its connection.

        Threads stuck in a driver call are not waited for beyond a bound: they end, closing
        their connection, when the driver returns.
        """
        self._closing.set()
        cls = self.connection_class
        bound = cls.connect_timeout + (cls.dbtimeout or 30.0) + 1
        left = await asyncio.to_thread(self._workers.shutdown, bound)
        if left:
            log.warning(
                "[%s] %d worker thread(s) still in a database call at close", self.name, len(left)
            )

    async def _submit(self, fn: Callable[..., T], timeout: float, *args: object) -> T:
        """Run fn(*args) on a worker; after `timeout` s (0: never) abandon it, DatabaseTimeout."""
        if self._closing.is_set():
            raise DatabaseUnavailable(f"[{self.name}] connection pool is closed")
        try:
            job = self._workers.submit(fn, *args)
        except PoolExhausted as exc:
            raise DatabaseTimeout(f"[{self.name}] {exc}") from None
        future = asyncio.wrap_future(job.future)
        future.add_done_callback(_consume)  # a late error of an abandoned job is nobody's
        if not timeout:
            return await future
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + timeout + TIMEOUT_GRACE
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout + TIMEOUT_GRACE)
        except asyncio.CancelledError:
            # The caller went away (a hangup), the work goes on; its deadline still holds, or
            # a hung server would keep this worker for good.
            loop.call_at(give_up_at, self._abandon_unless_done, job)
            raise
        except TimeoutError:
            committing = self._workers.abandon(job)
            outcome = "; a COMMIT was in flight, its outcome is unknown" if committing else ""
            raise DatabaseTimeout(
                f"[{self.name}] no answer from the database within {timeout:g} s "
                f"(dbtimeout){outcome}",
                sqlstate="HYT00",
            ) from None

    def _abandon_unless_done(self, job: Job) -> None:
        if not job.future.done():
            self._workers.abandon(job)

    def _timeout(self, limit: float, detail: str, sqlstate: str = "HYT00") -> DatabaseTimeout:
        return DatabaseTimeout(
            f"[{self.name}] no answer from the database within {limit:g} s (dbtimeout): {detail}",
            sqlstate=sqlstate,
        )

    # --- worker-thread side -------------------------------------------------------------------

    def _start_sync(self) -> None:
        try:
            self._connection(None)
        except pyodbc.Error as exc:
            raise DatabaseUnavailable(
                f"[{self.name}] {driver_message(exc)}", sqlstate=sqlstate_of(exc)
            ) from exc
        except _ConnectSuppressed as exc:
            raise DatabaseUnavailable(str(exc)) from None
        if (
            self._backend == "sqlite"
            and "timeout=" not in self.connection_class.connection_string.lower()
        ):
            log.warning(
                "[%s] SQLite without Timeout= in the connection string: no busy wait", self.name
            )
        if self._backend == "sqlite" and self.connection_class.isolation != "serializable":
            log.debug("[%s] SQLite transactions are always serializable", self.name)
        if self._backend == "postgresql":
            self._run_sync(self._check_bytea, 0, None, 0)
        if self._backend == "mysql":
            self._run_sync(self._check_max_allowed_packet, 0, None, 0)

    def _check_bytea(self, connection: pyodbc.Connection) -> None:
        """psqlODBC without ByteaAsLongVarBinary=1 silently turns large bytea into OID text."""
        sample = bytes(range(256)) * 4
        value = connection.cursor().execute("SELECT CAST(? AS bytea)", sample).fetchone()[0]
        connection.rollback()  # drop any large object the driver may have created
        if bytes(value) != sample:
            raise DatabaseError(
                f"[{self.name}] bytea values do not survive a round trip through psqlODBC: "
                "add ByteaAsLongVarBinary=1 to the connection string or DSN"
            )

    def _check_max_allowed_packet(self, connection: pyodbc.Connection) -> None:
        """One message is one packet: warn when the server would refuse ordinary recordings."""
        value = int(connection.cursor().execute("SELECT @@max_allowed_packet").fetchone()[0])
        self.max_allowed_packet = value
        problem = max_allowed_packet_problem(self.name, value)
        if problem:
            log.warning("%s", problem)

    def _preconnect_sync(self, barrier: threading.Barrier) -> None:
        barrier.wait()  # every task on its own worker thread, so every worker gets a connection
        try:
            self._connection(None)
        except pyodbc.Error as exc:
            raise DatabaseUnavailable(f"[{self.name}] {driver_message(exc)}") from exc
        except _ConnectSuppressed as exc:
            raise DatabaseUnavailable(str(exc)) from None

    def _connection(self, deadline: float | None) -> pyodbc.Connection:
        """This worker's connection, checked with sanitysql when idle, or a new one; its
        statements limited to the time left before `deadline`."""
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            self._limit_statements(connection, deadline)
            if not self._still_alive(connection):
                self._drop_connection()
                connection = None
        if connection is None:
            connection = self._connect()
            self._local.connection = connection
            self._limit_statements(connection, deadline)
        self._local.last_used = time.monotonic()
        return connection

    def _limit_statements(self, connection: pyodbc.Connection, deadline: float | None) -> None:
        """Set the driver's query timeout to the whole seconds left (0: none), if it changed.

        psqlODBC takes SQL_ATTR_QUERY_TIMEOUT as every statement's default; MariaDB
        Connector/ODBC accepts and ignores it, so MariaDB gets max_statement_time instead.
        SQLite has no server to wait for: only the caller's deadline applies.
        """
        if not self._query_timeout_supported or self._backend == "sqlite":
            return
        seconds = 0 if deadline is None else max(1, math.ceil(deadline - time.monotonic()))
        if getattr(self._local, "query_timeout", None) == seconds:
            return
        try:
            if self._backend == "mysql":
                execute_once(connection, f"SET SESSION max_statement_time = {seconds:d}")
            else:
                connection.set_attr(SQL_ATTR_QUERY_TIMEOUT, seconds)
        except pyodbc.Error as exc:
            # set_attr is local to the driver; MySQL proper has no max_statement_time.
            unsupported = self._backend != "mysql" or "unknown system variable" in (
                driver_message(exc).lower()
            )
            if not unsupported:
                raise  # the connection failed: handled as any connection failure
            self._query_timeout_supported = False
            log.warning(
                "[%s] the driver has no query timeout (%s): only the caller's deadline applies",
                self.name,
                driver_message(exc),
            )
            return
        self._local.query_timeout = seconds

    def _still_alive(self, connection: pyodbc.Connection) -> bool:
        """Run sanitysql on a connection idle for more than sanity_idle seconds."""
        idle = time.monotonic() - getattr(self._local, "last_used", 0.0)
        if idle <= self.connection_class.sanity_idle:
            return True
        try:
            row = execute_once(connection, self.connection_class.sanitysql, fetch=True)
            connection.rollback()
        except pyodbc.Error as exc:
            log.info("[%s] sanity check failed (%s): reconnecting", self.name, driver_message(exc))
            return False
        if row is None or not row[0] or str(row[0]).strip() in ("", "0"):
            log.info("[%s] sanitysql returned no true value: reconnecting", self.name)
            return False
        return True

    def _connect(self) -> pyodbc.Connection:
        """A new connection with the class's isolation level, honouring the negative cache."""
        cls = self.connection_class
        with self._lock:
            until, because = self._suppress_until, self._suppressed_because
        now = time.monotonic()
        if now < until:
            raise _ConnectSuppressed(
                until,
                f"[{self.name}] not connecting for another {until - now:.1f} s after a failed "
                f"connect (negative_connection_cache): {because}",
            )
        if self._connect_string is None:
            self._connect_string = driver_connection_string(
                cls.connection_string, cls.connect_timeout
            )
        if self._serialize_handles is None:
            driver = driver_name(cls.connection_string)
            # A driver we cannot name is serialized until the backend is known.
            self._serialize_handles = not driver or serializes_handles(driver)
        try:
            with handle_lock(self._serialize_handles):
                connection = pyodbc.connect(
                    self._connect_string, autocommit=False, timeout=cls.connect_timeout
                )
        except pyodbc.Error as exc:
            if cls.negative_connection_cache > 0:
                with self._lock:
                    self._suppress_until = time.monotonic() + cls.negative_connection_cache
                    self._suppressed_because = driver_message(exc)
            raise
        try:
            self._set_up(connection)
        except BaseException:
            # Closed here, not wherever the traceback holding it happens to be freed.
            self._close_quietly(connection)
            raise
        return connection

    def _set_up(self, connection: pyodbc.Connection) -> None:
        """Learn the backend from the first connection; set the class's isolation level."""
        cls = self.connection_class
        if self._backend is None:
            dbms_name = str(connection.getinfo(pyodbc.SQL_DBMS_NAME))
            self._backend = _detect_backend(dbms_name)
            if self._backend is None:
                raise DatabaseError(
                    f"[{self.name}] unsupported database {dbms_name!r} "
                    "(PostgreSQL, MariaDB/MySQL and SQLite are)"
                )
            self._serialize_handles = serializes_handles("", self._backend)
        if self._backend != "sqlite":  # SQLite is serializable whatever one asks for
            try:
                connection.set_attr(pyodbc.SQL_ATTR_TXN_ISOLATION, ISOLATION_LEVELS[cls.isolation])
            except pyodbc.Error as exc:
                log.warning(
                    "[%s] cannot set isolation %s: %s",
                    self.name,
                    cls.isolation,
                    driver_message(exc),
                )
        if self._backend == "mysql":
            # MariaDB Connector/ODBC 3.1 fails on (or silently cuts) UTF-16 text parameters
            # longer than 127 characters; UTF-8 parameters it takes whole.
            connection.setencoding(encoding="utf-8")

    def _drop_connection(self) -> None:
        connection = getattr(self._local, "connection", None)
        self._local.connection = None
        self._local.query_timeout = None
        if connection is not None:
            self._close_quietly(connection)

    def _rollback(self, connection: pyodbc.Connection) -> None:
        try:
            connection.rollback()
        except pyodbc.Error:
            self._drop_connection()

    def _close_quietly(self, connection: pyodbc.Connection) -> None:
        try:
            with handle_lock(self._serialize_handles is not False):
                connection.close()
        except pyodbc.Error:
            pass

    def _run_sync(
        self,
        work: Callable[[pyodbc.Connection], T],
        retry_for: float,
        deadline: float | None,
        limit: float,
    ) -> T:
        """Run `work` in a transaction, reconnecting after connection failures (see run())."""
        job = current_job()
        give_up = time.monotonic() + retry_for
        if deadline is not None:
            give_up = min(give_up, deadline)
        failures = 0
        while True:
            if job is not None and job.abandoned:
                raise self._timeout(limit, "given up before it could run")
            try:
                connection = self._connection(deadline)
            except pyodbc.Error as exc:
                if is_timeout(exc, self._backend):
                    self._drop_connection()
                    raise self._timeout(limit, driver_message(exc), sqlstate_of(exc)) from exc
                error = exc
            except _ConnectSuppressed as exc:
                # Fail fast, unless the caller is willing to wait until the cache expires.
                if self._closing.is_set() or exc.until > give_up:
                    raise DatabaseUnavailable(str(exc)) from None
                if self._closing.wait(max(0.0, exc.until - time.monotonic())):
                    raise DatabaseUnavailable(f"[{self.name}] connection pool is closing") from None
                continue
            else:
                try:
                    return self._attempt(connection, work, job, limit)
                except pyodbc.Error as exc:
                    error = exc
            self._drop_connection()
            failures += 1
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise self._timeout(limit, driver_message(error), sqlstate_of(error)) from error
            if self._closing.is_set() or (failures > 1 and now >= give_up):
                raise DatabaseUnavailable(
                    f"[{self.name}] {driver_message(error)}", sqlstate=sqlstate_of(error)
                ) from error
            # The first failure is usually a connection gone stale: reconnect at once.
            delay = 0.0 if failures == 1 else min(2.0, 0.1 * 2 ** (failures - 2), give_up - now)
            log.warning(
                "[%s] database connection failed (%s), reconnecting in %.1f s",
                self.name,
                driver_message(error),
                delay,
            )
            if delay > 0 and self._closing.wait(delay):
                raise DatabaseUnavailable(f"[{self.name}] connection pool is closing") from error

    def _attempt(
        self,
        connection: pyodbc.Connection,
        work: Callable[[pyodbc.Connection], T],
        job: Job | None,
        limit: float,
    ) -> T:
        """One run of `work` and its COMMIT; a connection failure is raised as pyodbc.Error.

        A job whose caller gave up meanwhile is rolled back, never committed (not even by a
        commit() of the work's own): its caller was told it failed and may well run it again.
        The cursors the work opened are closed here, on this thread, as soon as it returns or
        raises: one left in its traceback or result must not be freed by another thread.
        """
        cursors = CursorTracker()
        guarded = GuardedConnection(
            connection, job, lambda: self._timeout(limit, "rolled back"), cursors
        )
        try:
            try:
                result = work(guarded)  # type: ignore[arg-type]
            finally:
                cursors.close_all()
            guarded.commit()
        except pyodbc.Error as exc:
            self._rollback(connection)
            if is_timeout(exc, self._backend):
                raise self._timeout(limit, driver_message(exc), sqlstate_of(exc)) from exc
            if is_statement_error(exc, self._backend):
                raise DatabaseError(
                    f"[{self.name}] {driver_message(exc)}",
                    sqlstate=sqlstate_of(exc, self._backend),
                ) from exc
            raise
        except BaseException:
            self._rollback(connection)
            raise
        self._local.last_used = time.monotonic()
        return result


def _consume(future: asyncio.Future[object]) -> None:
    if not future.cancelled():
        future.exception()
