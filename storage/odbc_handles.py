"""Opening and closing ODBC handles without racing other threads in the SQLite driver.

The SQLite ODBC driver (sqliteodbc, Debian's libsqliteodbc) does no locking of its own on
Unix: it relies on the driver manager to serialize calls, and unixODBC does not unless the
driver's odbcinst.ini section says `Threading=` 1 to 3 (the default is 0, no protection).
Two kinds of state are then shared between threads without a lock, and a race on either
corrupts the heap and kills the process with SIGSEGV:

- process-wide, the driver's list of every connection it has: connecting and closing any two
  SQLite connections (two pools, or two workers of one pool) at the same moment in different
  threads. `handle_lock()` serializes those calls for SQLite.
- per connection, its list of statements and its current statement: a pyodbc cursor freed in
  another thread (its last reference dropped there, e.g. by the cyclic garbage collector
  clearing a traceback that held it) while the connection's own thread executes on it or
  closes it. `CursorTracker` closes every cursor of a unit of work on the worker thread
  before the work's result or exception leaves it, so a cursor that escapes holds no handle.

PostgreSQL's and MariaDB's drivers lock for themselves: for them `handle_lock()` is a no-op.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator

import pyodbc

__all__ = ["CursorTracker", "close_cursor", "execute_once", "handle_lock", "serializes_handles"]

# Connect and close of every SQLite ODBC connection in this process, one at a time.
_SQLITE_HANDLES = threading.Lock()


def _new_lock_after_fork() -> None:
    """A child forked while another thread held the lock must not wait for it for good."""
    global _SQLITE_HANDLES
    _SQLITE_HANDLES = threading.Lock()


os.register_at_fork(after_in_child=_new_lock_after_fork)

# Past this many tracked cursors, the ones the work no longer refers to are closed at once.
_PRUNE_AT = 32


def serializes_handles(driver: str, backend: str | None = None) -> bool:
    """Whether connect and close for this driver (name or library) or backend must be serialized."""
    return backend == "sqlite" or "sqlite" in driver.lower()


@contextlib.contextmanager
def handle_lock(serialize: bool) -> Iterator[None]:
    """Hold the process-wide SQLite handle lock around a connect or a close (if `serialize`)."""
    if not serialize:
        yield
        return
    with _SQLITE_HANDLES:
        yield


def close_cursor(cursor: pyodbc.Cursor) -> None:
    """Close a cursor, freeing its statement handle in this thread; errors are ignored (the
    cursor may be closed already, or its connection gone)."""
    try:
        cursor.close()
    except pyodbc.Error:
        pass


def execute_once(connection: pyodbc.Connection, sql: str, fetch: bool = False) -> pyodbc.Row | None:
    """Run one statement on a cursor closed at once, in this thread; its first row if `fetch`."""
    cursor = connection.cursor()
    try:
        cursor.execute(sql)
        return cursor.fetchone() if fetch else None
    finally:
        close_cursor(cursor)


class CursorTracker:
    """The cursors one unit of work opened, closed together by the thread that ran it."""

    def __init__(self) -> None:
        self._cursors: list[pyodbc.Cursor] = []

    def track(self, cursor: pyodbc.Cursor) -> pyodbc.Cursor:
        """Remember `cursor` so that close_all() frees it."""
        if len(self._cursors) >= _PRUNE_AT:
            self._prune()
        self._cursors.append(cursor)
        return cursor

    def close_all(self) -> None:
        """Close every tracked cursor (call on the thread that owns the connection)."""
        cursors, self._cursors = self._cursors, []
        for cursor in cursors:
            close_cursor(cursor)

    def _prune(self) -> None:
        """Close the cursors nothing but this tracker refers to any more, as their refcount
        dropping to zero would have; keeps a loop that opens many cursors bounded."""
        kept = []
        for cursor in self._cursors:
            # References: the list, the loop variable and getrefcount's own argument.
            if sys.getrefcount(cursor) > 3:
                kept.append(cursor)
            else:
                close_cursor(cursor)
        self._cursors = kept
