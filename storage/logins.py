"""Failed mailbox logins counted in the database, so a lockout holds on every server sharing it.

`vm_login_state` has one row per mailbox that ever failed a login: failures since the last
lockout or success, the time the current lockout ends (0: none) and how many lockouts in a row
there were (the next one lasts lockoutsecs * 2**lockouts, at most a day). `vm_login_audit`
gets one row per attempt (ok, wrong, locked) and one per lockout, with the caller-id and the
caller's address; never the PIN.

Counting across servers: record_failure first makes sure the mailbox's row exists and holds
its write lock in one statement (an UPSERT that changes nothing: PostgreSQL and SQLite ON
CONFLICT DO UPDATE, MariaDB ON DUPLICATE KEY UPDATE; on SQLite it takes the database's write
lock), then reads it FOR UPDATE (the latest committed version, even at REPEATABLE READ) and
writes the new count, all in one unit of work. A second server's failure waits for the row
lock and counts on top, so none is lost. Times are unix seconds from the caller's clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import pyodbc
from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.sql import ClauseElement

from storage.odbc import OdbcPool
from storage.schema import CompiledSql, compile_sql, login_audit_table, login_state_table

MAX_LOCKOUT_SECS = 86400  # a lockout never lasts longer than a day
OUTCOMES = ("ok", "wrong", "locked", "lockout")

# A login must not wait out the pool's whole reconnect window while the caller listens to
# silence: a database that does not answer within this fails the attempt (closed).
DEFAULT_RETRY_FOR = 2.0


@dataclass(frozen=True)
class LoginEvent:
    """One audit row."""

    at: float
    outcome: str  # one of OUTCOMES
    caller_id: str
    source: str


@dataclass(frozen=True)
class FailureResult:
    """What record_failure did: the failures counted now and the lock it set, if any."""

    failures: int
    locked_until: float | None  # set by this failure (a new lockout), else None
    lockouts: int


def lockout_seconds(lockoutsecs: float, lockouts: int) -> float:
    """How long the lockout after `lockouts` earlier ones lasts: doubling, at most a day."""
    if lockouts >= 32:  # 2**32 minutes is past any cap; avoid huge floats
        return float(MAX_LOCKOUT_SECS)
    return float(min(lockoutsecs * 2**lockouts, MAX_LOCKOUT_SECS))


class LoginStore:
    """The login state and audit tables of one database (the odbcstorage class)."""

    def __init__(
        self,
        pool: OdbcPool,
        *,
        state_table: str = "vm_login_state",
        audit_table: str = "vm_login_audit",
        retry_for: float = DEFAULT_RETRY_FOR,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.pool = pool
        self.retry_for = retry_for
        self.clock = clock
        self._state = login_state_table(state_table)
        self._audit = login_audit_table(audit_table)
        self._compiled: dict[object, CompiledSql] = {}

    # -- the guard's calls -------------------------------------------------------------------

    async def check(self, mailbox: str, context: str, now: float) -> float | None:
        """When the mailbox's lockout ends, or None when it is not locked at `now`."""
        query = self._select_state(for_update=False)

        def work(connection: pyodbc.Connection) -> float | None:
            row = connection.cursor().execute(query.sql, self._key(mailbox, context)).fetchone()
            if row is None or float(row[1]) <= now:
                return None
            return float(row[1])

        return await self.pool.run(work, retry_for=self.retry_for)

    async def record_locked(
        self, mailbox: str, context: str, now: float, *, caller_id: str = "", source: str = ""
    ) -> None:
        """Audit an attempt refused because the mailbox is locked (the lock is not extended)."""

        def work(connection: pyodbc.Connection) -> None:
            self._audit_row(connection.cursor(), mailbox, context, now, "locked", caller_id, source)

        await self.pool.run(work, retry_for=self.retry_for)

    async def record_failure(
        self,
        mailbox: str,
        context: str,
        now: float,
        *,
        maxfailedlogins: int = 5,
        lockoutsecs: float = 60.0,
        caller_id: str = "",
        source: str = "",
    ) -> FailureResult:
        """Count one wrong PIN, atomically across servers; at `maxfailedlogins` failures lock
        the mailbox for lockout_seconds(lockoutsecs, lockouts), reset the count and add one
        lockout. Audits "wrong", and "lockout" when it locks."""
        limit = max(1, int(maxfailedlogins))
        upsert = self._upsert_state()
        select_row = self._select_state(for_update=True)
        write = self._update_state()

        def work(connection: pyodbc.Connection) -> FailureResult:
            cursor = connection.cursor()
            key = self._key(mailbox, context)
            cursor.execute(upsert.sql, upsert.parameters({"context": context, "mailbox": mailbox}))
            failures, _, lockouts = cursor.execute(select_row.sql, key).fetchone()
            failures, lockouts = int(failures) + 1, int(lockouts)
            locked_until: float | None = None
            self._audit_row(cursor, mailbox, context, now, "wrong", caller_id, source)
            if failures >= limit:
                locked_until = now + lockout_seconds(lockoutsecs, lockouts)
                failures, lockouts = 0, lockouts + 1
                self._audit_row(cursor, mailbox, context, now, "lockout", caller_id, source)
            self._write_state(cursor, write, mailbox, context, failures, locked_until, lockouts)
            return FailureResult(failures, locked_until, lockouts)

        return await self.pool.run(work, retry_for=self.retry_for)

    async def record_success(
        self, mailbox: str, context: str, now: float, *, caller_id: str = "", source: str = ""
    ) -> None:
        """A good login: forget failures and earlier lockouts, and audit "ok"."""
        forget = self._delete_state()

        def work(connection: pyodbc.Connection) -> None:
            cursor = connection.cursor()
            cursor.execute(forget.sql, self._key(mailbox, context))
            self._audit_row(cursor, mailbox, context, now, "ok", caller_id, source)

        await self.pool.run(work, retry_for=self.retry_for)

    # -- the operator's calls ----------------------------------------------------------------

    async def unlock(self, mailbox: str, context: str) -> bool:
        """Clear the mailbox's lockout, failures and lockout count; True when there was any."""
        forget = self._delete_state()

        def work(connection: pyodbc.Connection) -> bool:
            return connection.cursor().execute(forget.sql, self._key(mailbox, context)).rowcount > 0

        return await self.pool.run(work)

    async def state(self, mailbox: str, context: str) -> tuple[int, float, int] | None:
        """(failures, locked_until, lockouts) as stored, or None for a mailbox with no row."""
        query = self._select_state(for_update=False)

        def work(connection: pyodbc.Connection) -> tuple[int, float, int] | None:
            row = connection.cursor().execute(query.sql, self._key(mailbox, context)).fetchone()
            return None if row is None else (int(row[0]), float(row[1]), int(row[2]))

        return await self.pool.run(work)

    async def recent(self, mailbox: str, context: str, limit: int = 20) -> list[LoginEvent]:
        """The mailbox's last `limit` audit rows, newest first."""
        a = self._audit
        query = self._sql(
            ("recent", limit),
            lambda: (
                select(a.c.at, a.c.outcome, a.c.caller_id, a.c.source)
                .where(a.c.context == bindparam("context"), a.c.mailbox == bindparam("mailbox"))
                .order_by(a.c.id.desc())
                .limit(limit)
            ),
        )

        def work(connection: pyodbc.Connection) -> list[LoginEvent]:
            values = {"context": context, "mailbox": mailbox}
            rows = connection.cursor().execute(query.sql, query.parameters(values)).fetchall()
            return [LoginEvent(float(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in rows]

        return await self.pool.run(work)

    # -- SQL -----------------------------------------------------------------------------------

    def _key(self, mailbox: str, context: str) -> list[object]:
        return [context, mailbox]  # the order of _select_state's and _delete_state's `?`

    def _select_state(self, *, for_update: bool) -> CompiledSql:
        s = self._state

        def build() -> ClauseElement:
            query = select(s.c.failures, s.c.locked_until, s.c.lockouts).where(
                s.c.context == bindparam("context"), s.c.mailbox == bindparam("mailbox")
            )
            # SQLite has no FOR UPDATE: the UPSERT before it holds the database's write lock.
            return (
                query.with_for_update() if for_update and self.pool.backend != "sqlite" else query
            )

        compiled = self._sql(("select", for_update), build)
        assert compiled.param_order == ("context", "mailbox"), compiled.param_order
        return compiled

    def _delete_state(self) -> CompiledSql:
        s = self._state
        compiled = self._sql(
            "delete",
            lambda: delete(s).where(
                s.c.context == bindparam("context"), s.c.mailbox == bindparam("mailbox")
            ),
        )
        assert compiled.param_order == ("context", "mailbox"), compiled.param_order
        return compiled

    def _upsert_state(self) -> CompiledSql:
        """Insert the mailbox's zero row, or lock the existing one by a no-op update."""
        s = self._state
        values = {
            "context": bindparam("context"),
            "mailbox": bindparam("mailbox"),
            "failures": 0,
            "locked_until": 0.0,
            "lockouts": 0,
        }

        def build() -> ClauseElement:
            if self.pool.backend == "mysql":
                statement = mysql_insert(s).values(**values)
                return statement.on_duplicate_key_update(failures=s.c.failures)
            dialect_insert = pg_insert if self.pool.backend == "postgresql" else sqlite_insert
            statement = dialect_insert(s).values(**values)
            return statement.on_conflict_do_update(
                index_elements=[s.c.context, s.c.mailbox], set_={"failures": s.c.failures}
            )

        return self._sql("upsert", build)

    def _update_state(self) -> CompiledSql:
        s = self._state
        return self._sql(
            "update",
            lambda: (
                update(s)
                .where(s.c.context == bindparam("k_context"), s.c.mailbox == bindparam("k_mailbox"))
                .values(
                    failures=bindparam("failures"),
                    lockouts=bindparam("lockouts"),
                    locked_until=bindparam("locked_until"),
                )
            ),
        )

    def _write_state(
        self,
        cursor: pyodbc.Cursor,
        write: CompiledSql,
        mailbox: str,
        context: str,
        failures: int,
        locked_until: float | None,
        lockouts: int,
    ) -> None:
        if locked_until is None:  # keep the lock there is (it may still run); count only
            s = self._state
            keep = self._sql(
                "count",
                lambda: (
                    update(s)
                    .where(
                        s.c.context == bindparam("k_context"),
                        s.c.mailbox == bindparam("k_mailbox"),
                    )
                    .values(failures=bindparam("failures"))
                ),
            )
            values = {"k_context": context, "k_mailbox": mailbox, "failures": failures}
            cursor.execute(keep.sql, keep.parameters(values))
            return
        values = {
            "k_context": context,
            "k_mailbox": mailbox,
            "failures": failures,
            "lockouts": lockouts,
            "locked_until": locked_until,
        }
        cursor.execute(write.sql, write.parameters(values))

    def _audit_row(
        self,
        cursor: pyodbc.Cursor,
        mailbox: str,
        context: str,
        now: float,
        outcome: str,
        caller_id: str,
        source: str,
    ) -> None:
        a = self._audit
        insert = self._sql(
            "audit",
            lambda: (
                a.insert()
                .inline()
                .values(
                    at=bindparam("at"),
                    mailbox=bindparam("mailbox"),
                    context=bindparam("context"),
                    outcome=bindparam("outcome"),
                    caller_id=bindparam("caller_id"),
                    source=bindparam("source"),
                )
            ),
        )
        values = {
            "at": now,
            "mailbox": mailbox,
            "context": context,
            "outcome": outcome,
            "caller_id": caller_id[:255],
            "source": source[:80],
        }
        cursor.execute(insert.sql, insert.parameters(values))

    def _sql(self, key: object, build: Callable[[], ClauseElement]) -> CompiledSql:
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self._compiled[key] = compile_sql(build(), self.pool.backend)
        return compiled
