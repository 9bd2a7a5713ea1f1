"""The connection a unit of work is handed (storage.odbc.OdbcPool.run): commits are checked
against the caller's deadline and cursors are tracked so that none outlives the work."""

from __future__ import annotations

from collections.abc import Callable

import pyodbc

from storage.odbc_handles import CursorTracker
from storage.odbc_workers import Job


class GuardedConnection:
    """The connection as a unit of work sees it: commit() refuses once the caller gave up,
    and every cursor it hands out is tracked, to be closed when the work ends.

    Work may commit part way (the message store commits after taking its folder locks); each
    such commit is checked too. Everything else is the pyodbc connection's own.
    """

    def __init__(
        self,
        connection: pyodbc.Connection,
        job: Job | None,
        refusal: Callable[[], Exception],
        cursors: CursorTracker,
    ) -> None:
        self._connection = connection
        self._job = job
        self._refusal = refusal
        self._cursors = cursors

    def cursor(self) -> pyodbc.Cursor:
        return self._cursors.track(self._connection.cursor())

    def execute(self, sql: str, *params: object) -> pyodbc.Cursor:
        return self.cursor().execute(sql, *params)

    def commit(self) -> None:
        if self._job is None:
            self._connection.commit()
            return
        if not self._job.claim_commit():
            raise self._refusal()
        try:
            self._connection.commit()
        finally:
            self._job.commit_done()

    def __getattr__(self, name: str) -> object:
        return getattr(self._connection, name)
