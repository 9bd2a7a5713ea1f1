"""The durable outbox: notifications written with the message, sent from the database later.

A deposit that should send an email (or a pager mail, or a webhook POST) writes one outbox row
per recipient in the same transaction as the message row (`MessageStore.store(outbox=...)`,
which calls `Outbox.enqueue_in`); with the database away the rows travel in the spool file
with the message and are written when the flusher stores it. So a message is never stored
without its notifications, nor a notification queued for a message that was rolled back.
(msg_id, kind, recipient) is unique: an enqueue run twice adds nothing.

Senders on any number of servers sharing the database take rows with `claim`: a row is
claimable while state is 'pending', its next_attempt has come and nobody holds a live lease
on it (claimed_until in the past or NULL). On PostgreSQL and MariaDB the candidates are read
with SELECT ... FOR UPDATE SKIP LOCKED, so concurrent claimers take disjoint rows without
waiting for each other; on SQLite the claim takes the database's write lock first (SQLite
has one writer at a time anyway). On every backend each row is then taken by an UPDATE that
repeats the claimable condition and is counted by its rowcount, so a row is ours only if
that UPDATE changed it, whatever the isolation level. A claim adds one to `attempts`.

A claim is a lease of `lease_seconds`: a server SIGKILLed after claiming leaves the row
claimable again once the lease runs out. The lease must outlast the send (SMTP timeout
included), and the servers' clocks must agree to well within it (times are the caller's
unix time). The one window left for a duplicate: a server that crashes after the SMTP server
accepted the mail and before `mark_sent` committed; the row is sent again after its lease.
No outbox can close that window without the receiving side's help (SMTP has no idempotency
key); it is as short as one COMMIT.

`mark_retry` (server down, 4xx) sets next_attempt by exponential backoff with jitter and
releases the lease; after `give_up_after` seconds since the row was created it marks the row
failed instead. `mark_failed` (5xx) records the server's answer; failed rows are never
claimed again.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pyodbc
from sqlalchemy import (
    Table,
    bindparam,
    delete,
    false,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.sql import ClauseElement

from storage.odbc import DatabaseError, DatabaseUnavailable, OdbcPool
from storage.schema import CompiledSql, compile_sql, outbox_table

T = TypeVar("T")

KINDS = ("email", "pager", "webhook")
PENDING, SENT, FAILED = "pending", "sent", "failed"

_MAX_ERROR = 2000  # characters of a server's answer kept in last_error
_CONFLICT_ATTEMPTS = 10
_CONFLICT_STATES = ("40001", "40P01")


@dataclass(frozen=True)
class OutboxItem:
    """One notification to queue with a message: what to send and to whom.

    `payload` is text the sender needs (JSON by convention); the message's identity (context,
    mailbox, msg_id) comes from the message it is stored with.
    """

    kind: str
    recipient: str
    payload: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"outbox kind must be one of {', '.join(KINDS)}: {self.kind!r}")
        if not self.recipient or len(self.recipient) > 255:
            raise ValueError(f"outbox recipient must be 1 to 255 characters: {self.recipient!r}")
        if not isinstance(self.payload, str):
            raise ValueError("outbox payload must be text")

    def to_json(self) -> dict[str, str]:
        """The item as the spool file keeps it."""
        return {"kind": self.kind, "recipient": self.recipient, "payload": self.payload}

    @classmethod
    def from_json(cls, data: object) -> OutboxItem:
        """An item read back from a spool file; ValueError when it is not one."""
        if not isinstance(data, dict) or not all(
            isinstance(data.get(name), str) for name in ("kind", "recipient", "payload")
        ):
            raise ValueError(f"not an outbox item: {json.dumps(data)[:200]}")
        return cls(data["kind"], data["recipient"], data["payload"])


@dataclass(frozen=True)
class OutboxRow:
    """One outbox row as read back (claim, get)."""

    id: int
    kind: str
    context: str
    mailbox: str
    msg_id: str
    recipient: str
    payload: str
    state: str
    attempts: int
    next_attempt: float
    claimed_by: str | None
    claimed_until: float | None
    last_error: str | None
    created: float
    sent_at: float | None


_ROW_COLUMNS = tuple(OutboxRow.__dataclass_fields__)


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff: `base` seconds after the first attempt, doubling, at most `cap`;
    each delay shortened by a random part of up to `jitter` (0..1) so that servers retrying
    the same dead SMTP server spread out."""

    base: float = 30.0
    cap: float = 3600.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if not (0 < self.base <= self.cap) or not (0 <= self.jitter <= 1):
            raise ValueError(f"backoff needs 0 < base <= cap and 0 <= jitter <= 1: {self}")

    def delay(self, attempts: int, rng: random.Random) -> float:
        """Seconds to wait after `attempts` failed attempts (1 for the first)."""
        exponent = min(max(attempts, 1) - 1, 60)
        raw = min(self.cap, self.base * 2.0**exponent)
        return raw * (1.0 - self.jitter * rng.random())


class Outbox:
    """The outbox table of one database, reached through one connection pool.

    `clock` gives unix time (tests move it); `rng` draws the jitter (seed it for repeatable
    delays).
    """

    def __init__(
        self,
        pool: OdbcPool,
        table: str = "outbox",
        *,
        backoff: Backoff | None = None,
        give_up_after: float = 5 * 86400.0,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.pool = pool
        self.table_name = table
        self.backoff = backoff or Backoff()
        self.give_up_after = give_up_after
        self.clock = clock
        self.rng = rng or random.Random()
        self._table = outbox_table(table)
        self._compiled: dict[object, CompiledSql] = {}

    # --- enqueueing ---------------------------------------------------------------------------

    def enqueue_in(
        self,
        cursor: pyodbc.Cursor,
        *,
        context: str,
        mailbox: str,
        msg_id: str,
        items: Sequence[OutboxItem],
    ) -> None:
        """Queue `items` for one message inside the caller's transaction (the one storing the
        message): they commit or roll back with it. Items already queued are left alone."""
        if not items:
            return
        now = self.clock()
        statement = self._sql("insert", self._insert_once)
        rows = [
            statement.parameters(
                {
                    "kind": item.kind,
                    "context": context,
                    "mailbox": mailbox,
                    "msg_id": msg_id,
                    "recipient": item.recipient,
                    "payload": item.payload,
                    "state": PENDING,
                    "attempts": 0,
                    "next_attempt": now,
                    "created": now,
                }
            )
            for item in items
        ]
        for parameters in rows:
            cursor.execute(statement.sql, parameters)

    async def enqueue(
        self, *, context: str, mailbox: str, msg_id: str, items: Sequence[OutboxItem]
    ) -> None:
        """Queue items in a transaction of their own (a notification not tied to a deposit)."""

        def work(connection: pyodbc.Connection) -> None:
            self.enqueue_in(
                connection.cursor(), context=context, mailbox=mailbox, msg_id=msg_id, items=items
            )

        await self._run(work)

    # --- sending ------------------------------------------------------------------------------

    async def claim(
        self, server_id: str, limit: int = 10, lease_seconds: float = 120.0
    ) -> list[OutboxRow]:
        """Take up to `limit` due rows for `server_id` for `lease_seconds`, oldest due first.

        Safe with any number of claimers on one database: a row is returned to one of them
        only (see the module docstring). Returns the rows as claimed (attempts counted).
        """
        if limit < 1 or lease_seconds <= 0:
            raise ValueError("claim needs limit >= 1 and lease_seconds > 0")
        if not server_id or len(server_id) > 80:
            raise ValueError(f"server_id must be 1 to 80 characters: {server_id!r}")
        candidates = self._sql(("candidates", limit), lambda: self._candidates(limit))
        take = self._sql("take", self._take)
        sqlite_lock = self._sql("write_lock", self._write_lock)

        def work(connection: pyodbc.Connection) -> list[OutboxRow]:
            now = self.clock()
            until = now + lease_seconds
            cursor = connection.cursor()
            if self.pool.backend == "sqlite":
                cursor.execute(sqlite_lock.sql, sqlite_lock.parameters())
            found = cursor.execute(
                candidates.sql, candidates.parameters({"state": PENDING, "now": now})
            ).fetchall()
            claimed = []
            for row in found:
                values = {
                    "id": row[0],
                    "state": PENDING,
                    "now": now,
                    "server_id": server_id,
                    "until": until,
                }
                if cursor.execute(take.sql, take.parameters(values)).rowcount == 1:
                    fields = dict(zip(_ROW_COLUMNS, row, strict=True))
                    fields.update(
                        claimed_by=server_id, claimed_until=until, attempts=fields["attempts"] + 1
                    )
                    claimed.append(_row(fields))
            return claimed

        return await self._run(work)

    async def mark_sent(self, row_id: int, server_id: str) -> bool:
        """The mail went out: the row is done. False if it was not pending any more (another
        server whose lease outlived ours marked it first)."""
        statement = self._sql("sent", self._mark_sent)

        def work(connection: pyodbc.Connection) -> bool:
            values = {
                "id": row_id,
                "state": PENDING,
                "sent": SENT,
                "now": self.clock(),
                "server_id": server_id,
            }
            cursor = connection.cursor()
            return cursor.execute(statement.sql, statement.parameters(values)).rowcount == 1

        return await self._run(work)

    async def mark_retry(self, row_id: int, server_id: str, error: str) -> float | None:
        """A temporary failure (server away, 4xx): release the lease, try again after the
        backoff. Returns the next attempt's unix time; None when the row was not ours any more
        or has been pending for give_up_after seconds (then it is marked failed)."""
        read = self._sql("read_claimed", self._read_claimed)
        retry = self._sql("retry", self._retry)
        fail = self._sql("fail_claimed", lambda: self._fail(claimed=True))
        sqlite_lock = self._sql("write_lock", self._write_lock)

        def work(connection: pyodbc.Connection) -> float | None:
            now = self.clock()
            cursor = connection.cursor()
            if self.pool.backend == "sqlite":
                # The write lock before the read: two readers both upgrading to writers
                # would wait for each other until the busy timeout.
                cursor.execute(sqlite_lock.sql, sqlite_lock.parameters())
            mine = {"id": row_id, "state": PENDING, "server_id": server_id}
            found = cursor.execute(read.sql, read.parameters(mine)).fetchone()
            if found is None:
                return None
            attempts, created = int(found[0]), float(found[1])
            text = _error_text(error)
            if now - created >= self.give_up_after:
                values = {**mine, "failed": FAILED, "error": f"gave up: {text}"}
                cursor.execute(fail.sql, fail.parameters(values))
                return None
            due = now + self.backoff.delay(attempts, self.rng)
            values = {**mine, "due": due, "error": text}
            if cursor.execute(retry.sql, retry.parameters(values)).rowcount != 1:
                return None
            return due

        return await self._run(work)

    async def mark_failed(self, row_id: int, error: str, server_id: str | None = None) -> bool:
        """A permanent failure (5xx): record the server's answer; never claimed again.
        With `server_id`, only while that server holds the row."""
        claimed = server_id is not None
        statement = self._sql(("fail", claimed), lambda: self._fail(claimed=claimed))

        def work(connection: pyodbc.Connection) -> bool:
            values: dict[str, Any] = {
                "id": row_id,
                "state": PENDING,
                "failed": FAILED,
                "error": _error_text(error),
            }
            if claimed:
                values["server_id"] = server_id
            cursor = connection.cursor()
            return cursor.execute(statement.sql, statement.parameters(values)).rowcount == 1

        return await self._run(work)

    async def release(self, server_id: str, row_id: int | None = None) -> int:
        """Give back the pending rows `server_id` holds (or just `row_id`), unsent, claimable
        again at once; returns how many. For a server starting under the id of a process that
        died holding leases, and for rows claimed but not tried before a stop. Only while no
        live process uses `server_id` for other rows."""
        t = self._table
        one = row_id is not None
        statement = self._sql(
            ("release", one),
            lambda: (
                update(t)
                .where(
                    t.c.state == bindparam("state"),
                    t.c.claimed_by == bindparam("server_id"),
                    *([t.c.id == bindparam("id")] if one else []),
                )
                .values(claimed_by=None, claimed_until=None)
            ),
        )

        def work(connection: pyodbc.Connection) -> int:
            values: dict[str, Any] = {"state": PENDING, "server_id": server_id}
            if one:
                values["id"] = row_id
            return connection.cursor().execute(statement.sql, statement.parameters(values)).rowcount

        return await self._run(work)

    # --- looking ------------------------------------------------------------------------------

    async def states(self, context: str, mailbox: str, msg_id: str) -> list[tuple[str, str]]:
        """(kind, state) of every row queued for one message of one mailbox."""
        t = self._table
        statement = self._sql(
            "states",
            lambda: select(t.c.kind, t.c.state).where(
                t.c.msg_id == bindparam("msg_id"),
                t.c.context == bindparam("context"),
                t.c.mailbox == bindparam("mailbox"),
            ),
        )

        def work(connection: pyodbc.Connection) -> list[tuple[str, str]]:
            values = {"msg_id": msg_id, "context": context, "mailbox": mailbox}
            rows = connection.cursor().execute(statement.sql, statement.parameters(values))
            return [(str(kind), str(state)) for kind, state in rows.fetchall()]

        return await self._run(work)

    async def pending_count(self) -> int:
        """How many rows wait to be sent (due or not, claimed or not)."""
        statement = self._sql(
            "pending_count",
            lambda: select(func.count()).where(self._table.c.state == bindparam("state")),
        )

        def work(connection: pyodbc.Connection) -> int:
            cursor = connection.cursor()
            return int(
                cursor.execute(statement.sql, statement.parameters({"state": PENDING})).fetchone()[
                    0
                ]
            )

        return await self._run(work)

    async def get(self, row_id: int) -> OutboxRow | None:
        """One row by id, or None."""
        t = self._table
        statement = self._sql(
            "get", lambda: select(*(t.c[n] for n in _ROW_COLUMNS)).where(t.c.id == bindparam("id"))
        )

        def work(connection: pyodbc.Connection) -> OutboxRow | None:
            cursor = connection.cursor()
            row = cursor.execute(statement.sql, statement.parameters({"id": row_id})).fetchone()
            return None if row is None else _row(dict(zip(_ROW_COLUMNS, row, strict=True)))

        return await self._run(work)

    async def prune(self, older_than: float) -> int:
        """Delete sent rows created more than `older_than` seconds ago; returns how many.

        Failed rows stay for the operator. A pruned row's message cannot make a second mail:
        rows are only created with the message's INSERT, never for a message already stored.
        """
        t = self._table
        statement = self._sql(
            "prune",
            lambda: delete(t).where(t.c.state == bindparam("sent"), t.c.created < bindparam("cut")),
        )

        def work(connection: pyodbc.Connection) -> int:
            values = {"sent": SENT, "cut": self.clock() - older_than}
            return connection.cursor().execute(statement.sql, statement.parameters(values)).rowcount

        return await self._run(work)

    # --- SQL ----------------------------------------------------------------------------------

    def _insert_once(self) -> ClauseElement:
        """INSERT that does nothing when (msg_id, kind, recipient) is there already, without
        an error (which would abort the message's transaction on PostgreSQL)."""
        t = self._table
        names = (
            "kind",
            "context",
            "mailbox",
            "msg_id",
            "recipient",
            "payload",
            "state",
            "attempts",
            "next_attempt",
            "created",
        )
        values = {name: bindparam(name) for name in names}
        # inline(): a plain INSERT, the id left to the database (no RETURNING, no nextval).
        backend = self.pool.backend
        if backend == "mysql":
            return (
                mysql.insert(t).inline().values(values).on_duplicate_key_update(msg_id=t.c.msg_id)
            )
        dialect_insert = postgresql.insert if backend == "postgresql" else sqlite.insert
        return dialect_insert(t).inline().values(values).on_conflict_do_nothing()

    def _claimable(self) -> list[Any]:
        t = self._table
        return [
            t.c.state == bindparam("state"),
            t.c.next_attempt <= bindparam("now"),
            or_(t.c.claimed_until.is_(None), t.c.claimed_until < bindparam("now")),
        ]

    def _candidates(self, limit: int) -> ClauseElement:
        t = self._table
        query = (
            select(*(t.c[n] for n in _ROW_COLUMNS))
            .where(*self._claimable())
            .order_by(t.c.next_attempt, t.c.id)
            .limit(limit)
        )
        if self.pool.backend != "sqlite":
            query = query.with_for_update(skip_locked=True)
        return query

    def _take(self) -> ClauseElement:
        t = self._table
        return (
            update(t)
            .where(t.c.id == bindparam("id"), *self._claimable())
            .values(
                claimed_by=bindparam("server_id"),
                claimed_until=bindparam("until"),
                attempts=t.c.attempts + 1,
            )
        )

    def _write_lock(self) -> ClauseElement:
        t = self._table
        return update(t).where(false()).values(attempts=t.c.attempts)

    def _mine(self) -> list[Any]:
        t = self._table
        return [
            t.c.id == bindparam("id"),
            t.c.state == bindparam("state"),
            t.c.claimed_by == bindparam("server_id"),
        ]

    def _mark_sent(self) -> ClauseElement:
        t = self._table
        return (
            update(t)
            .where(t.c.id == bindparam("id"), t.c.state == bindparam("state"))
            .values(
                state=bindparam("sent"),
                sent_at=bindparam("now"),
                claimed_by=bindparam("server_id"),  # who sent it, for the record
                claimed_until=None,
            )
        )

    def _read_claimed(self) -> ClauseElement:
        t = self._table
        return select(t.c.attempts, t.c.created).where(*self._mine())

    def _retry(self) -> ClauseElement:
        t = self._table
        return (
            update(t)
            .where(*self._mine())
            .values(
                next_attempt=bindparam("due"),
                last_error=bindparam("error"),
                claimed_by=None,
                claimed_until=None,
            )
        )

    def _fail(self, *, claimed: bool) -> ClauseElement:
        t = self._table
        where = (
            self._mine()
            if claimed
            else [t.c.id == bindparam("id"), t.c.state == bindparam("state")]
        )
        return (
            update(t)
            .where(*where)
            .values(state=bindparam("failed"), last_error=bindparam("error"), claimed_until=None)
        )

    def _sql(self, key: object, build: Callable[[], ClauseElement]) -> CompiledSql:
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self._compiled[key] = compile_sql(build(), self.pool.backend)
        return compiled

    async def _run(self, work: Callable[[pyodbc.Connection], T]) -> T:
        """A unit of work, run again after a serialization failure or deadlock (repeatable
        read or serializable isolation: two claimers met on one row)."""
        for attempt in range(_CONFLICT_ATTEMPTS):
            try:
                return await self.pool.run(work)
            except DatabaseUnavailable:
                raise
            except DatabaseError as exc:
                if exc.sqlstate not in _CONFLICT_STATES or attempt == _CONFLICT_ATTEMPTS - 1:
                    raise
            await asyncio.sleep(random.uniform(0.001, 0.005 * 2**attempt))
        raise AssertionError("unreachable")

    @property
    def table(self) -> Table:
        return self._table


def _error_text(error: str) -> str:
    text = str(error)
    return text if len(text) <= _MAX_ERROR else text[: _MAX_ERROR - 3] + "..."


def _row(fields: dict[str, Any]) -> OutboxRow:
    """Row values as read through ODBC (Decimal, str ids...) into plain Python types."""
    for name in ("id", "attempts"):
        fields[name] = int(fields[name])
    for name in ("next_attempt", "created"):
        fields[name] = float(fields[name])
    for name in ("claimed_until", "sent_at"):
        if fields[name] is not None:
            fields[name] = float(fields[name])
    if fields["payload"] is None:
        fields["payload"] = ""
    return OutboxRow(**fields)
