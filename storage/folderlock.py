"""Folder locks in the database itself, so every server sharing it is serialised per folder.

- PostgreSQL: an advisory lock (`pg_advisory_lock`) on a 64-bit hash of the table name and
  `dir`; MariaDB/MySQL: a named user lock (`GET_LOCK`) on the same hash. Both belong to the
  session: the lock is taken and committed, so that the work's snapshot starts after it even at
  REPEATABLE READ or SERIALIZABLE (res_odbc `isolation`), then the work runs and commits, then
  the lock is released. A lost connection releases its locks with the session.
- SQLite: the database's write lock, taken by the transaction's first statement.

Several folders are locked in a fixed (sorted) order, so two transactions cannot deadlock on
them. A lock is waited for at most `timeout` seconds (on SQLite: the driver's busy timeout,
`Timeout=` of the connection string, which cannot be changed per statement); then the unit of
work raises DatabaseUnavailable, which the pool passes on instead of running the work again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import pyodbc

from storage.odbc import (
    DatabaseTimeout,
    OdbcPool,
    driver_message,
    sqlstate_of,
)

T = TypeVar("T")

# How long a folder lock is waited for by default (Asterisk gives up on its lock file after 5 s;
# a folder lock here is held for one short transaction).
DEFAULT_LOCK_TIMEOUT = 5.0

_PG_LOCK_SQL = "SELECT pg_advisory_lock(CAST(? AS BIGINT))"
_PG_UNLOCK_SQL = "SELECT pg_advisory_unlock(CAST(? AS BIGINT))"
# lock_timeout for the rest of the locking transaction only (set_config's is_local).
_PG_LOCK_TIMEOUT_SQL = "SELECT set_config('lock_timeout', ?, true)"
_PG_LOCK_NOT_AVAILABLE = "55P03"
_MYSQL_LOCK_SQL = "SELECT GET_LOCK(?, ?)"
_MYSQL_UNLOCK_SQL = "SELECT RELEASE_LOCK(?)"


class FolderLocks:
    """The folder locks of one message table, taken around units of work."""

    def __init__(
        self,
        pool: OdbcPool,
        table_name: str,
        sqlite_write_lock: Callable[[pyodbc.Cursor], object],
        timeout: float = DEFAULT_LOCK_TIMEOUT,
    ) -> None:
        """`sqlite_write_lock` runs a statement that takes SQLite's write lock (a no-op UPDATE
        of the table); `timeout` is in seconds."""
        if not timeout > 0:
            raise ValueError(f"lock_timeout must be a positive number of seconds: {timeout!r}")
        self.pool = pool
        self.table_name = table_name
        self.timeout = float(timeout)
        self._sqlite_write_lock = sqlite_write_lock

    def key(self, folder_dir: str) -> int | str:
        """The folder's lock: a bigint key on PostgreSQL, a lock name (<= 64 chars) on MariaDB."""
        digest = hashlib.sha256(f"{self.table_name}\0{folder_dir}".encode()).digest()
        if self.pool.backend == "postgresql":
            return int.from_bytes(digest[:8], "big", signed=True)
        return "aravm-" + digest[:16].hex()

    def work(
        self, dirs: Iterable[str], body: Callable[[pyodbc.Cursor], T]
    ) -> Callable[[pyodbc.Connection], T]:
        """A unit of work running `body` as the holder of the write locks of folders `dirs`."""
        folder_dirs = sorted(set(dirs))

        def work(connection: pyodbc.Connection) -> T:
            cursor = connection.cursor()
            if self.pool.backend == "sqlite":
                self._take_sqlite_lock(cursor, folder_dirs)
                return body(cursor)
            return self._run_under_session_locks(connection, cursor, folder_dirs, body)

        return work

    def _take_sqlite_lock(self, cursor: pyodbc.Cursor, folder_dirs: Sequence[str]) -> None:
        """Take the database write lock before reading anything (a transaction that reads and
        then writes deadlocks with another writer until the busy timeout)."""
        try:
            self._sqlite_write_lock(cursor)
        except pyodbc.Error as exc:
            text = driver_message(exc)
            if "locked" in text or "busy" in text:
                raise DatabaseTimeout(
                    f"[{self.pool.name}] no write lock for {', '.join(folder_dirs)}: the "
                    "database stayed locked by another writer for the busy timeout "
                    "(Timeout= of the connection string)",
                    sqlstate="HYT00",
                ) from exc
            raise

    def _run_under_session_locks(
        self,
        connection: pyodbc.Connection,
        cursor: pyodbc.Cursor,
        folder_dirs: Sequence[str],
        body: Callable[[pyodbc.Cursor], T],
    ) -> T:
        """Lock and commit, work and commit, release: the locks outlive transactions."""
        held: list[Any] = []
        try:
            if self.pool.backend == "postgresql":
                timeout = f"{max(1, round(self.timeout * 1000))}ms"
                cursor.execute(_PG_LOCK_TIMEOUT_SQL, timeout).fetchall()
            for lock, folder_dir in sorted((self.key(d), d) for d in folder_dirs):
                self._take(cursor, lock, folder_dir)
                held.append(lock)
            connection.commit()  # the work's snapshot must not predate the lock
            result = body(cursor)
            connection.commit()
            return result
        except BaseException:
            try:
                connection.rollback()
            except pyodbc.Error:
                pass  # the connection is gone; the pool reconnects
            raise
        finally:
            unlock = _PG_UNLOCK_SQL if self.pool.backend == "postgresql" else _MYSQL_UNLOCK_SQL
            for lock in held:
                try:
                    cursor.execute(unlock, lock).fetchall()
                except pyodbc.Error:
                    break  # a lost session takes its locks with it

    def _take(self, cursor: pyodbc.Cursor, lock: Any, folder_dir: str) -> None:
        """Wait at most `timeout` for one folder's lock, then raise DatabaseUnavailable.

        A pyodbc error must not leave here for a lock timeout: the pool would take it for a
        broken connection and run the whole unit of work again.
        """
        if self.pool.backend == "postgresql":
            try:
                cursor.execute(_PG_LOCK_SQL, lock).fetchall()
            except pyodbc.Error as exc:
                if sqlstate_of(exc) == _PG_LOCK_NOT_AVAILABLE:
                    raise self._timed_out(folder_dir) from exc
                raise
            return
        row = cursor.execute(_MYSQL_LOCK_SQL, lock, self.timeout).fetchone()
        if row is None or row[0] != 1:
            raise self._timed_out(folder_dir)

    def _timed_out(self, folder_dir: str) -> DatabaseTimeout:
        # GET_LOCK also gives NULL when MariaDB's max_statement_time (dbtimeout) ends the wait.
        return DatabaseTimeout(
            f"[{self.pool.name}] no lock on folder {folder_dir} within {self.timeout:g} s "
            "(or the class's dbtimeout): another server holds it",
            sqlstate="HYT00",
        )
