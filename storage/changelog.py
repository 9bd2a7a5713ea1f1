"""Mailbox change events across servers, so a deposit on one lights the lamps of phones on another.

Every write to a mailbox's folders records one row (context, mailbox, changed_at) in the
`mailbox_changes` table inside the writing transaction (`ChangeLog.record_change`, hooked into
MessageStore as its `on_change`), so a change is seen exactly when it commits and never when it
rolls back. On PostgreSQL the same transaction also sends `pg_notify(channel, payload)`:
PostgreSQL delivers it at COMMIT and drops it on ROLLBACK, and `PgChangeListener` (a psycopg
connection, as pyodbc cannot wait for notifications) turns it into an event within
milliseconds. On MariaDB and SQLite the other servers poll the table by id (`ChangeFollower`),
which reads only the rows after the last one seen: an index range scan, no mailbox scanned.

Ids and commit order: on PostgreSQL and MariaDB an id is taken at INSERT, so a transaction
with a lower id can commit after one with a higher id, and a rolled-back one leaves a hole
for good. `changes_since` therefore never moves its watermark past a hole younger than
`gap_grace` seconds (a transaction lasts at most its dbtimeout); rows above a hole are
returned at once and again on the next polls, and `ChangeFollower` hands each out once.
SQLite has one writer at a time: ids commit in order there.

Old rows are removed by `prune`; the newest row always stays, so ids keep growing even on a
database whose auto-increment counter restarts from the largest id.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import pyodbc
from sqlalchemy import bindparam, delete, func, select
from sqlalchemy.sql import ClauseElement

from storage.odbc import OdbcPool
from storage.schema import CompiledSql, compile_sql, mailbox_changes_table

log = logging.getLogger(__name__)

DEFAULT_CHANNEL = "aravm_mailbox_changes"
# After a reconnect of the listener: notifications may have been missed, recount every
# mailbox watched.
RESYNC = ("", "")


@dataclass(frozen=True)
class MailboxChange:
    """One row of the change log."""

    id: int
    context: str
    mailbox: str
    changed_at: float


def notify_payload(context: str, mailbox: str) -> str:
    """The NOTIFY payload of one change: JSON [context, mailbox]."""
    return json.dumps([context, mailbox], separators=(",", ":"))


def parse_payload(payload: str) -> tuple[str, str] | None:
    """(context, mailbox) from a NOTIFY payload; None for one that is not ours."""
    try:
        value = json.loads(payload)
    except ValueError:
        return None
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value):
        return value[0], value[1]
    return None


class ChangeLog:
    """The change log table (and, on PostgreSQL, the NOTIFY channel) of one database."""

    def __init__(
        self,
        pool: OdbcPool,
        table: str = "mailbox_changes",
        *,
        channel: str = DEFAULT_CHANNEL,
        gap_grace: float = 120.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.pool = pool
        self.table_name = table
        self.channel = channel
        self.gap_grace = gap_grace
        self.clock = clock
        self._table = mailbox_changes_table(table)
        self._compiled: dict[object, CompiledSql] = {}

    def record_change(self, cursor: pyodbc.Cursor, context: str, mailbox: str) -> None:
        """Record that a mailbox changed, inside the changing transaction; on PostgreSQL also
        NOTIFY the channel (sent at COMMIT, dropped on ROLLBACK)."""
        insert = self._sql(
            "insert",
            lambda: (
                self._table.insert()
                .inline()
                .values(
                    context=bindparam("context"),
                    mailbox=bindparam("mailbox"),
                    changed_at=bindparam("now"),
                )
            ),
        )
        values = {"context": context, "mailbox": mailbox, "now": self.clock()}
        cursor.execute(insert.sql, insert.parameters(values))
        if self.pool.backend == "postgresql":
            cursor.execute(
                "SELECT pg_notify(?, ?)", self.channel, notify_payload(context, mailbox)
            ).fetchall()

    def hook(self, cursor: pyodbc.Cursor, mailboxes: Sequence[tuple[str, str]]) -> None:
        """MessageStore's on_change: one record_change per mailbox written."""
        for context, mailbox in mailboxes:
            self.record_change(cursor, context, mailbox)

    async def last_id(self) -> int:
        """The newest id (0 for an empty log): where a new follower starts."""
        query = self._sql("max", lambda: select(func.max(self._table.c.id)))

        def work(connection: pyodbc.Connection) -> int:
            row = connection.cursor().execute(query.sql, query.parameters()).fetchone()
            return 0 if row[0] is None else int(row[0])

        return await self.pool.run(work)

    async def changes_since(
        self, last_id: int, *, limit: int = 1000
    ) -> tuple[list[MailboxChange], int]:
        """Rows with an id above `last_id` (at most `limit`, by id) and the new watermark: the
        highest id below which no row can still appear (see the module docstring on holes).
        Pass the watermark back next time; rows above it may be returned again."""
        t = self._table
        query = self._sql(
            ("since", limit),
            lambda: (
                select(t.c.id, t.c.context, t.c.mailbox, t.c.changed_at)
                .where(t.c.id > bindparam("last_id"))
                .order_by(t.c.id)
                .limit(limit)
            ),
        )

        def work(connection: pyodbc.Connection) -> list[MailboxChange]:
            cursor = connection.cursor()
            rows = cursor.execute(query.sql, query.parameters({"last_id": last_id})).fetchall()
            return [MailboxChange(int(r[0]), str(r[1]), str(r[2]), float(r[3])) for r in rows]

        rows = await self.pool.run(work)
        return rows, self._watermark(last_id, rows)

    def _watermark(self, last_id: int, rows: Sequence[MailboxChange]) -> int:
        """The last id of the run of rows without a hole, or past a hole old enough to be a
        rollback (the row after it was written more than gap_grace seconds ago)."""
        watermark = last_id
        old = self.clock() - self.gap_grace
        for row in rows:
            if row.id != watermark + 1 and row.changed_at > old:
                break
            watermark = row.id
        return watermark

    async def prune(self, older_than: float) -> int:
        """Delete rows written more than `older_than` seconds ago, but never the newest row;
        returns how many."""
        t = self._table
        newest = select(func.max(t.c.id)).scalar_subquery()
        if self.pool.backend == "mysql":  # MariaDB cannot read the table it deletes from
            newest = select(func.max(t.c.id)).subquery().select().scalar_subquery()
        statement = self._sql(
            "prune",
            lambda: delete(t).where(t.c.changed_at < bindparam("cut"), t.c.id < newest),
        )

        def work(connection: pyodbc.Connection) -> int:
            values = {"cut": self.clock() - older_than}
            return connection.cursor().execute(statement.sql, statement.parameters(values)).rowcount

        return await self.pool.run(work)

    def _sql(self, key: object, build: Callable[[], ClauseElement]) -> CompiledSql:
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self._compiled[key] = compile_sql(build(), self.pool.backend)
        return compiled


class ChangeFollower:
    """Reads the change log by id for one server, handing each change out once.

    MariaDB and SQLite (and PostgreSQL as a catch-up after a listener reconnect): call poll()
    every fraction of a second; it returns the mailboxes that changed since the last poll.
    """

    def __init__(self, changelog: ChangeLog, last_id: int = 0) -> None:
        self.changelog = changelog
        self.last_id = last_id
        self._seen: set[int] = set()  # ids above last_id already handed out

    async def start_at_end(self) -> None:
        """Skip what happened before now (a starting server counts every mailbox anyway)."""
        self.last_id = await self.changelog.last_id()
        self._seen.clear()

    async def poll(self) -> list[tuple[str, str]]:
        """The (context, mailbox) pairs changed since the last poll, each once, in id order."""
        rows, watermark = await self.changelog.changes_since(self.last_id)
        fresh = [row for row in rows if row.id not in self._seen]
        self._seen = {row.id for row in rows if row.id > watermark}
        self.last_id = watermark
        pairs: dict[tuple[str, str], None] = {}
        for row in fresh:
            pairs[(row.context, row.mailbox)] = None
        return list(pairs)


# --- PostgreSQL LISTEN -----------------------------------------------------------------------

_LIBPQ_KEYS = {
    "server": "host",
    "servername": "host",
    "host": "host",
    "port": "port",
    "database": "dbname",
    "db": "dbname",
    "dbname": "dbname",
    "uid": "user",
    "user": "user",
    "username": "user",
    "pwd": "password",
    "password": "password",
    "sslmode": "sslmode",
}


def libpq_conninfo(odbc_connection_string: str) -> str:
    """A libpq conninfo for the PostgreSQL database an ODBC connection string names.

    Server, Port, Database, UID and PWD (and their psqlODBC synonyms) are taken over; a string
    that reaches the database through a DSN has none of them, so it is refused: give the
    listener a conninfo ("host=... dbname=... user=...") of its own then.
    """
    pairs: dict[str, str] = {}
    for part in _split_odbc(odbc_connection_string):
        key, sep, value = part.partition("=")
        if not sep:
            continue
        key = key.strip().lower()
        if key == "dsn":
            raise ValueError(
                "the connection string names a DSN: the PostgreSQL listener needs a libpq "
                "conninfo (host=... dbname=... user=...) of its own"
            )
        if key in _LIBPQ_KEYS:
            pairs[_LIBPQ_KEYS[key]] = value.strip()
    if "dbname" not in pairs:
        raise ValueError(f"no Database= in the connection string: {odbc_connection_string!r}")
    return " ".join(f"{key}={_libpq_value(value)}" for key, value in pairs.items())


def _split_odbc(text: str) -> list[str]:
    """key=value parts of an ODBC connection string; {braced} values may hold ';' and '}}'."""
    parts, current, i = [], "", 0
    while i < len(text):
        ch = text[i]
        if ch == "{":
            end = i + 1
            value = ""
            while end < len(text):
                if text[end] == "}":
                    if text[end + 1 : end + 2] == "}":
                        value += "}"
                        end += 2
                        continue
                    break
                value += text[end]
                end += 1
            current += value
            i = end + 1
            continue
        if ch == ";":
            parts.append(current)
            current = ""
        else:
            current += ch
        i += 1
    if current:
        parts.append(current)
    return parts


def _libpq_value(value: str) -> str:
    if value and not any(ch in value for ch in " '\\"):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class PgChangeListener:
    """LISTEN on the change channel through psycopg; an async iterator of (context, mailbox).

    Reconnects (backoff up to `max_backoff` s) when the connection drops and then yields
    RESYNC first: notifications sent while it was away are lost, so the consumer recounts
    what it watches. Every `ping_interval` seconds without a notification it runs a query, so
    a silently dead connection is found. `listening` is set while LISTEN is in force.
    """

    def __init__(
        self,
        conninfo: str,
        channel: str = DEFAULT_CHANNEL,
        *,
        ping_interval: float = 5.0,
        max_backoff: float = 5.0,
        connect_timeout: int = 5,
    ) -> None:
        self.conninfo = conninfo
        self.channel = channel
        self.ping_interval = ping_interval
        self.max_backoff = max_backoff
        self.connect_timeout = connect_timeout
        self.listening = asyncio.Event()
        self.reconnects = 0
        self._closed = False

    def close(self) -> None:
        """Make the iterator end at its next wake-up (within ping_interval)."""
        self._closed = True

    def __aiter__(self) -> AsyncIterator[tuple[str, str]]:
        return self._events()

    async def _events(self) -> AsyncIterator[tuple[str, str]]:
        import psycopg  # only PostgreSQL deployments need it loaded
        from psycopg import sql

        failures = 0
        connected_before = False
        while not self._closed:
            try:
                connection = await psycopg.AsyncConnection.connect(
                    self.conninfo, autocommit=True, connect_timeout=self.connect_timeout
                )
            except psycopg.Error as exc:
                failures += 1
                delay = min(self.max_backoff, 0.1 * 2 ** (failures - 1))
                log.warning("change listener: cannot connect (%s), again in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                continue
            try:
                await connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                self.listening.set()
                failures = 0
                if connected_before:
                    self.reconnects += 1
                    yield RESYNC
                connected_before = True
                while not self._closed:
                    async for notify in connection.notifies(timeout=self.ping_interval):
                        change = parse_payload(notify.payload)
                        if change is None:
                            log.warning("change listener: payload not ours: %r", notify.payload)
                            continue
                        yield change
                        if self._closed:
                            break
                    if not self._closed:
                        await connection.execute("SELECT 1")
            except psycopg.Error as exc:
                log.warning("change listener: connection lost (%s), reconnecting", exc)
            finally:
                self.listening.clear()
                await connection.close()
