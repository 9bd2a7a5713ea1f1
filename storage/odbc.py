"""ODBC connection classes and their worker pools, in the manner of Asterisk's res_odbc.

A connection class (one section of res_odbc.conf) becomes an `OdbcPool`: a fixed set of worker
threads, each owning one pyodbc connection. A caller hands the pool one whole unit of work (a
function taking a connection); it runs in one transaction, is committed on success and rolled back
on error. When the connection itself fails (server restart, network loss), the connection is
dropped, a new one is made with capped backoff, and the whole unit of work is run again, so work
must be safe to repeat (the message store makes it so with msg_id).

res_odbc.conf options honoured besides dsn/username/password/max_connections/pre-connect:
`connect_timeout` (login timeout), `negative_connection_cache` (after a failed connect, fail at
once until it expires; default 0 = off, where Asterisk's is 300 s, because our units of work
ride out short outages by reconnecting), `sanitysql` (run on a pooled connection idle for more
than `sanity_idle` seconds before reusing it) and `isolation` (set on every new connection;
SQLite is always serializable). MariaDB connection strings get CONN_TIMEOUT and OPTION=2 (see
driver_connection_string). Start-up checks: PostgreSQL bytea round trip, MariaDB
max_allowed_packet; `check_blob_column()` checks a MariaDB recording column.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import pyodbc

from storage.identifiers import check_identifier, split_table_name

log = logging.getLogger(__name__)

T = TypeVar("T")

# A dropped connection must really go away; unixODBC's own pooling would hand it back.
pyodbc.pooling = False

BACKENDS = ("sqlite", "postgresql", "mysql")

# SQLSTATE classes that mean "this statement was wrong or lost a race", not "the link is broken":
# 22 data exception, 23 integrity constraint, 42 syntax/access, 40 transaction rollback
# (serialization failure, deadlock). The connection stays usable after a rollback.
_STATEMENT_CLASSES = ("22", "23", "40", "42")

# The SQLite ODBC driver reports everything as HY000 and puts SQLite's result code in parentheses.
_SQLITE_CODE = re.compile(r"\((\d+)\)\s*\(SQL\w*\)\s*$")
_SQLITE_STATES = {1: "42000", 18: "22001", 19: "23000", 20: "22000", 25: "22003"}

_TRUE_WORDS = ("yes", "true", "y", "t", "1", "on")
_FALSE_WORDS = ("no", "false", "n", "f", "0", "off")


class DatabaseError(Exception):
    """A database operation failed; str() names the connection class and the driver's message."""

    def __init__(self, message: str, *, sqlstate: str = "") -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class DatabaseUnavailable(DatabaseError):
    """The database cannot be reached, or the connection was lost and retries ran out."""


def _parse_bool(name: str, key: str, value: str) -> bool:
    word = value.strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise ValueError(f"res_odbc class [{name}]: {key} must be yes or no, not {value!r}")


def _parse_int(name: str, key: str, value: str, minimum: int) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise ValueError(
            f"res_odbc class [{name}]: {key} must be a number, not {value!r}"
        ) from None
    if number < minimum:
        raise ValueError(f"res_odbc class [{name}]: {key} must be at least {minimum}, not {number}")
    return number


def _parse_seconds(name: str, key: str, value: str) -> float:
    try:
        number = float(value.strip())
    except ValueError:
        raise ValueError(
            f"res_odbc class [{name}]: {key} must be a number of seconds, not {value!r}"
        ) from None
    if not number >= 0:  # also refuses nan
        raise ValueError(f"res_odbc class [{name}]: {key} must not be negative, not {value!r}")
    return number


def _parse_isolation(name: str, value: str) -> str:
    word = re.sub(r"[\s-]+", "_", value.strip().lower())
    if word not in ISOLATION_LEVELS:
        raise ValueError(
            f"res_odbc class [{name}]: isolation must be one of {', '.join(ISOLATION_LEVELS)}, "
            f"not {value!r}"
        )
    return word


def _odbc_value(value: str) -> str:
    """Brace a connection-string value that would otherwise break the key=value;... syntax."""
    if any(ch in value for ch in ";{}=") or value != value.strip():
        return "{" + value.replace("}", "}}") + "}"
    return value


# res_odbc.conf `isolation` words and the ODBC attribute values they set.
ISOLATION_LEVELS: dict[str, int] = {
    "read_committed": pyodbc.SQL_TXN_READ_COMMITTED,
    "read_uncommitted": pyodbc.SQL_TXN_READ_UNCOMMITTED,
    "repeatable_read": pyodbc.SQL_TXN_REPEATABLE_READ,
    "serializable": pyodbc.SQL_TXN_SERIALIZABLE,
}


@dataclass
class ConnectionClass:
    """One res_odbc.conf section: how to connect and how many connections to keep.

    `sanity_idle` is ours, not Asterisk's: how long a pooled connection may sit unused before
    `sanitysql` checks it (Asterisk asks the driver whether the connection is dead instead).
    """

    name: str
    connection_string: str
    max_connections: int = 1
    pre_connect: bool = False
    connect_timeout: int = 10
    enabled: bool = True
    negative_connection_cache: float = 0.0
    sanitysql: str = "select 1"
    sanity_idle: float = 5.0
    isolation: str = "read_committed"

    @classmethod
    def from_options(cls, name: str, options: Mapping[str, str]) -> ConnectionClass:
        """Build a class from a parsed res_odbc.conf section (keys as Asterisk spells them)."""
        opts = {key.strip().lower(): value.strip() for key, value in options.items()}
        dsn = opts.get("dsn", "")
        connection_string = opts.get("connection_string", "")
        if dsn and connection_string:
            raise ValueError(f"res_odbc class [{name}]: give dsn or connection_string, not both")
        if not dsn and not connection_string:
            raise ValueError(f"res_odbc class [{name}]: dsn (or connection_string) is required")
        parts = (
            [connection_string.rstrip(";")] if connection_string else [f"DSN={_odbc_value(dsn)}"]
        )
        if opts.get("username"):
            parts.append(f"UID={_odbc_value(opts['username'])}")
        if opts.get("password"):
            parts.append(f"PWD={_odbc_value(opts['password'])}")
        return cls(
            name=name,
            connection_string=";".join(parts) + ";",
            max_connections=_parse_int(
                name, "max_connections", opts.get("max_connections", "1"), 1
            ),
            pre_connect=_parse_bool(name, "pre-connect", opts.get("pre-connect", "no")),
            connect_timeout=_parse_int(
                name, "connect_timeout", opts.get("connect_timeout", "10"), 1
            ),
            enabled=_parse_bool(name, "enabled", opts.get("enabled", "yes")),
            negative_connection_cache=_parse_seconds(
                name, "negative_connection_cache", opts.get("negative_connection_cache", "0")
            ),
            sanitysql=opts.get("sanitysql") or "select 1",
            isolation=_parse_isolation(name, opts.get("isolation", "read_committed")),
        )


def sqlstate_of(exc: pyodbc.Error, backend: str | None = None) -> str:
    """The SQLSTATE of a driver error, with SQLite's result codes turned into standard ones."""
    state = exc.args[0] if exc.args and isinstance(exc.args[0], str) else ""
    if backend == "sqlite" and state == "HY000":
        match = _SQLITE_CODE.search(driver_message(exc))
        if match:
            return _SQLITE_STATES.get(int(match.group(1)), state)
    return state


def driver_message(exc: BaseException) -> str:
    """The driver's own text for an error (pyodbc puts it second in args)."""
    if len(exc.args) >= 2 and isinstance(exc.args[1], str):
        return exc.args[1]
    return str(exc)


def is_statement_error(exc: pyodbc.Error, backend: str | None = None) -> bool:
    """True when the statement failed but the connection is still good."""
    if isinstance(exc, pyodbc.IntegrityError | pyodbc.ProgrammingError | pyodbc.DataError):
        return True
    return sqlstate_of(exc, backend)[:2] in _STATEMENT_CLASSES


def _detect_backend(dbms_name: str) -> str | None:
    dbms = dbms_name.lower()
    if "postgres" in dbms:
        return "postgresql"
    if "mariadb" in dbms or "mysql" in dbms:
        return "mysql"
    if "sqlite" in dbms:
        return "sqlite"
    return None


def _driver_name(connection_string: str) -> str:
    """The ODBC driver a connection string names, directly or through its DSN ("" if unknown)."""
    pairs = {}
    for part in connection_string.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            pairs[key.strip().lower()] = value.strip().strip("{}")
    if "driver" in pairs:
        return pairs["driver"]
    if "dsn" in pairs:
        try:
            return pyodbc.dataSources().get(pairs["dsn"], "")
        except pyodbc.Error:
            return ""
    return ""


def driver_connection_string(connection_string: str, connect_timeout: int) -> str:
    """The connection string with what MariaDB Connector/ODBC needs to behave like the others.

    CONN_TIMEOUT: it ignores the ODBC login timeout while waiting for the server's greeting,
    so a server that accepts the TCP connection but never answers would block a worker for
    good. OPTION=2 (found rows): UPDATE counts matched rows, as PostgreSQL and SQLite do,
    rather than changed ones (a realtime update to the same value would report 0 rows).
    Either is left alone when the connection string sets it.
    """
    driver = _driver_name(connection_string).lower()
    if "mariadb" not in driver and "mysql" not in driver:
        return connection_string
    given = connection_string.lower()
    extra = []
    if "conn_timeout" not in given:
        extra.append(f"CONN_TIMEOUT={connect_timeout}")
    if not re.search(r"(^|;)\s*option\s*=", given):
        extra.append("OPTION=2")
    if not extra:
        return connection_string
    return connection_string.rstrip(";") + ";" + ";".join(extra) + ";"


# MariaDB's default, and what a 10 MB recording (a few minutes of WAV) needs with headroom.
MIN_MAX_ALLOWED_PACKET = 16 * 1024 * 1024


def max_allowed_packet_problem(name: str, value: int) -> str | None:
    """A warning naming the fix when MariaDB's max_allowed_packet is below 16 MB, else None."""
    if value >= MIN_MAX_ALLOWED_PACKET:
        return None
    return (
        f"[{name}] MariaDB max_allowed_packet is {value} bytes: a recording larger than that "
        "cannot be stored or read. Fix: SET GLOBAL max_allowed_packet = 67108864; and "
        "max_allowed_packet = 64M in the [mysqld] section of the server's my.cnf"
    )


async def check_blob_column(pool: OdbcPool, table: str, column: str) -> None:
    """Raise DatabaseError when a MariaDB/MySQL BLOB column is smaller than LONGBLOB.

    A plain BLOB holds 64 KB (about 4 s of 8 kHz WAV) and MEDIUMBLOB 16 MB; Asterisk's tables
    use LONGBLOB. The message names the ALTER TABLE that fixes it. Other backends: no check.
    """
    schema, name = split_table_name(table)
    check_identifier(column, "column name")
    if pool.backend != "mysql":
        return

    def data_type(connection: pyodbc.Connection) -> str | None:
        row = (
            connection.cursor()
            .execute(
                "SELECT data_type FROM information_schema.columns"
                " WHERE table_schema = COALESCE(?, DATABASE()) AND table_name = ?"
                " AND column_name = ?",
                [schema or None, name, column],
            )
            .fetchone()
        )
        return None if row is None else str(row[0]).lower()

    found = await pool.run(data_type)
    if found is None:
        raise DatabaseError(f"[{pool.name}] table {table} has no column {column}")
    if found != "longblob":
        raise DatabaseError(
            f"[{pool.name}] column {table}.{column} is {found.upper()}, which holds "
            f"{_BLOB_LIMITS.get(found, 'too little')}; recordings need LONGBLOB. Fix: "
            f"ALTER TABLE {table} MODIFY {column} LONGBLOB; (repeat NOT NULL if the column "
            "has it)"
        )


_BLOB_LIMITS = {"tinyblob": "255 bytes", "blob": "64 KB", "mediumblob": "16 MB"}


class _ConnectSuppressed(Exception):
    """A connect was not tried because the last one failed (negative_connection_cache)."""

    def __init__(self, until: float, message: str) -> None:
        super().__init__(message)
        self.until = until


class OdbcPool:
    """A res_odbc connection class at run time: worker threads with one connection each."""

    def __init__(self, connection_class: ConnectionClass, *, retry_timeout: float = 30.0) -> None:
        self.connection_class = connection_class
        self.retry_timeout = retry_timeout
        self._executor = ThreadPoolExecutor(
            max_workers=connection_class.max_connections,
            thread_name_prefix=f"odbc-{connection_class.name}",
        )
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: set[pyodbc.Connection] = set()
        self._backend: str | None = None
        self._closing = threading.Event()
        self._connect_string: str | None = None
        # negative_connection_cache: no connect attempt before this time.monotonic() value.
        self._suppress_until = 0.0
        self._suppressed_because = ""
        self.max_allowed_packet: int | None = None  # MariaDB only, read at start()

    @property
    def name(self) -> str:
        return self.connection_class.name

    @property
    def backend(self) -> str:
        """Which database this is ("sqlite", "postgresql" or "mysql"), known once connected."""
        if self._backend is None:
            raise RuntimeError(f"[{self.name}] backend unknown: not connected yet (call start())")
        return self._backend

    async def start(self) -> None:
        """Connect now, to learn the backend and to fail fast on a wrong configuration."""
        await self._submit(self._start_sync)
        count = self.connection_class.max_connections
        if self.connection_class.pre_connect and count > 1:
            barrier = threading.Barrier(count, timeout=self.connection_class.connect_timeout + 5)
            await asyncio.gather(
                *(self._submit(self._preconnect_sync, barrier) for _ in range(count))
            )

    async def run(
        self, work: Callable[[pyodbc.Connection], T], *, retry_for: float | None = None
    ) -> T:
        """Run one unit of work in one transaction on a worker thread.

        Statement errors raise DatabaseError (with .sqlstate) at once. Connection failures are
        retried with a fresh connection for up to `retry_for` seconds (default retry_timeout;
        0 means one immediate reconnect only), then raise DatabaseUnavailable. While
        negative_connection_cache holds back connects, the work fails at once unless the
        cache expires within `retry_for`.
        """
        limit = self.retry_timeout if retry_for is None else retry_for
        return await self._submit(self._run_sync, work, limit)

    async def close(self) -> None:
        """Stop the workers (finishing work already handed over) and close every connection."""
        self._closing.set()
        await asyncio.to_thread(self._executor.shutdown, True)
        with self._lock:
            connections = list(self._connections)
            self._connections.clear()
        for connection in connections:
            self._close_quietly(connection)

    async def _submit(self, fn: Callable[..., T], *args: object) -> T:
        if self._closing.is_set():
            raise DatabaseUnavailable(f"[{self.name}] connection pool is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # --- worker-thread side -------------------------------------------------------------------

    def _start_sync(self) -> None:
        try:
            self._connection()
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
            self._run_sync(self._check_bytea, 0)
        if self._backend == "mysql":
            self._run_sync(self._check_max_allowed_packet, 0)

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
            self._connection()
        except pyodbc.Error as exc:
            raise DatabaseUnavailable(f"[{self.name}] {driver_message(exc)}") from exc
        except _ConnectSuppressed as exc:
            raise DatabaseUnavailable(str(exc)) from None

    def _connection(self) -> pyodbc.Connection:
        """This worker's connection, checked with sanitysql when idle, or a new one."""
        connection = getattr(self._local, "connection", None)
        if connection is not None and not self._still_alive(connection):
            self._drop_connection()
            connection = None
        if connection is None:
            connection = self._connect()
            with self._lock:
                self._connections.add(connection)
            self._local.connection = connection
        self._local.last_used = time.monotonic()
        return connection

    def _still_alive(self, connection: pyodbc.Connection) -> bool:
        """Run sanitysql on a connection idle for more than sanity_idle seconds."""
        idle = time.monotonic() - getattr(self._local, "last_used", 0.0)
        if idle <= self.connection_class.sanity_idle:
            return True
        try:
            row = connection.cursor().execute(self.connection_class.sanitysql).fetchone()
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
        try:
            connection = pyodbc.connect(
                self._connect_string, autocommit=False, timeout=cls.connect_timeout
            )
        except pyodbc.Error as exc:
            if cls.negative_connection_cache > 0:
                with self._lock:
                    self._suppress_until = time.monotonic() + cls.negative_connection_cache
                    self._suppressed_because = driver_message(exc)
            raise
        if self._backend is None:
            dbms_name = str(connection.getinfo(pyodbc.SQL_DBMS_NAME))
            self._backend = _detect_backend(dbms_name)
            if self._backend is None:
                self._close_quietly(connection)
                raise DatabaseError(
                    f"[{self.name}] unsupported database {dbms_name!r} "
                    "(PostgreSQL, MariaDB/MySQL and SQLite are)"
                )
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
        return connection

    def _drop_connection(self) -> None:
        connection = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            with self._lock:
                self._connections.discard(connection)
            self._close_quietly(connection)

    def _rollback(self, connection: pyodbc.Connection) -> None:
        try:
            connection.rollback()
        except pyodbc.Error:
            self._drop_connection()

    @staticmethod
    def _close_quietly(connection: pyodbc.Connection) -> None:
        try:
            connection.close()
        except pyodbc.Error:
            pass

    def _run_sync(self, work: Callable[[pyodbc.Connection], T], retry_for: float) -> T:
        deadline = time.monotonic() + retry_for
        failures = 0
        while True:
            try:
                connection = self._connection()
            except pyodbc.Error as exc:
                error = exc
            except _ConnectSuppressed as exc:
                # Fail fast, unless the caller is willing to wait until the cache expires.
                if self._closing.is_set() or exc.until > deadline:
                    raise DatabaseUnavailable(str(exc)) from None
                if self._closing.wait(max(0.0, exc.until - time.monotonic())):
                    raise DatabaseUnavailable(f"[{self.name}] connection pool is closing") from None
                continue
            else:
                try:
                    result = work(connection)
                    connection.commit()
                    self._local.last_used = time.monotonic()
                    return result
                except pyodbc.Error as exc:
                    self._rollback(connection)
                    if is_statement_error(exc, self._backend):
                        raise DatabaseError(
                            f"[{self.name}] {driver_message(exc)}",
                            sqlstate=sqlstate_of(exc, self._backend),
                        ) from exc
                    error = exc
                except BaseException:
                    self._rollback(connection)
                    raise
            self._drop_connection()
            failures += 1
            now = time.monotonic()
            if self._closing.is_set() or (failures > 1 and now >= deadline):
                raise DatabaseUnavailable(
                    f"[{self.name}] {driver_message(error)}", sqlstate=sqlstate_of(error)
                ) from error
            # The first failure is usually a connection gone stale: reconnect at once.
            delay = 0.0 if failures == 1 else min(2.0, 0.1 * 2 ** (failures - 2), deadline - now)
            log.warning(
                "[%s] database connection failed (%s), reconnecting in %.1f s",
                self.name,
                driver_message(error),
                delay,
            )
            if delay > 0 and self._closing.wait(delay):
                raise DatabaseUnavailable(f"[{self.name}] connection pool is closing") from error
