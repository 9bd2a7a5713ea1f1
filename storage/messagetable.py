"""The message table underneath MessageStore: SQL compiled per backend, retries after
conflicts, folder locking and renumbering. MessageStore (messages.py) and MessageOperations
(messageops.py) build on it; nothing here is public API.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import pyodbc
from sqlalchemy import (
    bindparam,
    case,
    delete,
    false,
    func,
    literal_column,
    select,
    update,
)
from sqlalchemy.sql import ClauseElement, ColumnElement

from storage.folderlock import DEFAULT_LOCK_TIMEOUT, FolderLocks
from storage.identifiers import check_box_name
from storage.messagerows import (
    DEFAULT_SPOOL_PREFIX,
    FOLDERS,
    GREETINGS,
    INSERT_COLUMNS,
    Row,
)
from storage.odbc import DatabaseError, DatabaseUnavailable, OdbcPool
from storage.schema import CompiledSql, compile_sql, messages_table, table_columns

if TYPE_CHECKING:
    from storage.outbox import Outbox

T = TypeVar("T")

# Called inside every folder write's transaction with the (context, mailbox) pairs written:
# the mailbox change log hooks in here (storage/changelog.py).
ChangeHook = Callable[[pyodbc.Cursor, Sequence[tuple[str, str]]], None]

_ATTEMPTS = 25
# SQLSTATEs that mean another writer got in first (or the database chose us as the deadlock
# victim): roll back and try again.
_CONFLICT_STATES = ("40001", "40P01")


def _is_conflict(exc: DatabaseError) -> bool:
    return exc.sqlstate.startswith("23") or exc.sqlstate in _CONFLICT_STATES


class MessageTable:
    """Messages of all mailboxes in one table, reached through one res_odbc connection class."""

    def __init__(
        self,
        pool: OdbcPool,
        table: str = "voicemessages",
        spool_prefix: str = DEFAULT_SPOOL_PREFIX,
        *,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        outbox: Outbox | None = None,
        on_change: ChangeHook | None = None,
    ) -> None:
        """`lock_timeout`: seconds a write waits for a folder lock before DatabaseUnavailable
        (on SQLite the driver's busy timeout, `Timeout=` in the connection string, bounds it).
        `outbox`: where store(outbox=...) queues notifications (same database); `on_change`:
        run in every folder write's transaction (ChangeHook)."""
        self.pool = pool
        self.outbox = outbox
        self.on_change = on_change
        self.table_name = table
        self.spool_prefix = spool_prefix if spool_prefix.endswith("/") else spool_prefix + "/"
        self._table = messages_table(table)
        self._columns: frozenset[str] | None = None
        # Messages (not greetings) read with their audio, and those bytes: /metrics shows
        # whether a caller's replays are served from memory or fetched again.
        self.messages_read = 0
        self.message_bytes_read = 0
        self._compiled: dict[object, CompiledSql] = {}
        self._locks = FolderLocks(
            pool, table, lambda cursor: self._execute(cursor, "write_lock"), lock_timeout
        )

    def folder_dir(self, context: str, mailbox: str, folder: str = "INBOX") -> str:
        """The `dir` key of a folder: the spool path Asterisk's make_dir() gives."""
        return f"{self.spool_prefix}{context}/{mailbox}/{folder}"

    @property
    def lock_timeout(self) -> float:
        """Seconds a write waits for a folder lock before it fails with DatabaseUnavailable."""
        return self._locks.timeout

    def folder_lock_key(self, folder_dir: str) -> int | str:
        """The folder's lock key (PostgreSQL advisory lock) or name (MariaDB GET_LOCK)."""
        return self._locks.key(folder_dir)

    # --- helpers ------------------------------------------------------------------------------

    def _message_dir(self, context: str, mailbox: str, folder: str) -> str:
        if folder not in FOLDERS:
            raise ValueError(f"unknown folder {folder!r}; expected one of {', '.join(FOLDERS)}")
        check_box_name(context, "context")  # network and row input: never a `..` in a dir
        check_box_name(mailbox, "mailbox")
        return self.folder_dir(context, mailbox, folder)

    def _greeting_dir(self, context: str, mailbox: str, kind: str) -> str:
        if kind not in GREETINGS:
            raise ValueError(f"unknown greeting {kind!r}; expected one of {', '.join(GREETINGS)}")
        self._message_dir(context, mailbox, "INBOX")  # validates context and mailbox
        return self.folder_dir(context, mailbox, kind)

    async def _run_retrying(
        self,
        work: Callable[[pyodbc.Connection], T],
        rolled_back: Callable[[], None] | None = None,
    ) -> T:
        """Run a unit of work, again after a conflict, deadlock or serialization failure.

        `rolled_back` is told whenever the pool reports a statement error: that run surely did
        not commit (unlike a run the pool repeated itself after a lost connection).
        """
        for attempt in range(_ATTEMPTS):
            try:
                return await self.pool.run(work)
            except DatabaseUnavailable:
                raise
            except DatabaseError as exc:
                if rolled_back is not None:
                    rolled_back()
                if not _is_conflict(exc) or attempt == _ATTEMPTS - 1:
                    raise
            await asyncio.sleep(random.uniform(0.001, min(0.2, 0.005 * 2**attempt)))
        raise AssertionError("unreachable")

    def _folder_work(
        self, dirs: Iterable[str], body: Callable[[pyodbc.Cursor], T]
    ) -> Callable[[pyodbc.Connection], T]:
        """A unit of work running `body` as the holder of the write locks of folders `dirs`,
        then on_change in the same transaction, for message folders only: a greeting changes
        no lamp, so greeting-only writes record no change."""
        folder_dirs = list(dirs)
        message_dirs = [d for d in folder_dirs if d.rsplit("/", 1)[-1] not in GREETINGS]
        if self.on_change is None or not message_dirs:
            return self._locks.work(folder_dirs, body)
        hook = self.on_change

        def body_then_hook(cursor: pyodbc.Cursor) -> T:
            result = body(cursor)
            hook(cursor, self._mailboxes_of(message_dirs))
            return result

        return self._locks.work(folder_dirs, body_then_hook)

    def _mailboxes_of(self, dirs: Iterable[str]) -> list[tuple[str, str]]:
        """The distinct (context, mailbox) pairs of folder dirs, in first-seen order."""
        pairs: dict[tuple[str, str], None] = {}
        for folder_dir in dirs:
            context, mailbox, _ = folder_dir[len(self.spool_prefix) :].split("/", 2)
            pairs[(context, mailbox)] = None
        return list(pairs)

    def _folder_rows(self, cursor: pyodbc.Cursor, folder_dir: str) -> list[Row]:
        """(msgnum, msg_id) of every row of a folder in msgnum order; '' msg_id reads None."""
        has_id = "msg_id" in self._table_columns(cursor)
        t = self._table
        query = self._sql(
            ("folder_rows", has_id),
            lambda: (
                select(t.c.msgnum, *([t.c.msg_id] if has_id else []))
                .where(t.c.dir == bindparam("dir"))
                .order_by(t.c.msgnum)
            ),
        )
        rows = cursor.execute(query.sql, query.parameters({"dir": folder_dir})).fetchall()
        return [(int(row[0]), (row[1] or None) if has_id else None) for row in rows]

    def _compact(
        self, cursor: pyodbc.Cursor, folder_dir: str, keep: Iterable[int]
    ) -> dict[int, int]:
        """Renumber the rows `keep` (one msgnum per row) to 0..N-1 in order.

        Returns old -> new msgnum of every msgnum that only one row has. One UPDATE per moved
        row, lowest first: each row moves down into a number that is free by then, so the
        (dir, msgnum) key never clashes mid-way. A legacy table without that key can hold
        several rows with one msgnum (two Asterisk servers racing): those are renumbered
        apart, row by row, so none is lost or merged.
        """
        ordered = sorted(keep)
        uses = Counter(ordered)
        if any(n > 1 for n in uses.values()):
            self._renumber_apart(cursor, folder_dir, ordered, uses)
        else:
            self._executemany(
                cursor,
                "renumber",
                [
                    {"dir": folder_dir, "msgnum": old, "new_msgnum": new}
                    for new, old in enumerate(ordered)
                    if old != new
                ],
            )
        return {old: new for new, old in enumerate(ordered) if uses[old] == 1}

    def _delete_row(
        self, cursor: pyodbc.Cursor, folder_dir: str, msgnum: int, msg_id: str | None
    ) -> None:
        """Delete one message: by its msg_id when it has one (see messagerows.without)."""
        if msg_id is None:
            self._execute(cursor, "delete", dir=folder_dir, msgnum=msgnum)
        else:
            self._execute(cursor, "delete_msg_id", dir=folder_dir, msgnum=msgnum, msg_id=msg_id)

    def _renumber_apart(
        self, cursor: pyodbc.Cursor, folder_dir: str, ordered: list[int], uses: Counter[int]
    ) -> None:
        """Renumber a folder where some msgnums are shared by several rows.

        (dir, msgnum) does not name one row here, so each moving row is first parked alone at a
        number of its own below -1 (greetings use -1; folders never go below 0), picking one
        row of its msgnum at a time (see _park_one_statement), and then every parked row gets
        its final number. All of it in the folder's transaction, under the folder's lock.
        """
        moving = [(old, new) for new, old in enumerate(ordered) if uses[old] > 1 or old != new]
        for old, new in moving:
            parked = self._execute(
                cursor, "park_one", dir=folder_dir, msgnum=old, new_msgnum=_parked(new)
            )
            if parked.rowcount != 1:
                raise DatabaseError(
                    f"[{self.pool.name}] renumbering {folder_dir}: no row left at msgnum {old}"
                )
        self._executemany(
            cursor,
            "renumber",
            [{"dir": folder_dir, "msgnum": _parked(new), "new_msgnum": new} for _, new in moving],
        )

    async def _count_dirs(self, dirs: Sequence[str]) -> list[int]:
        """Rows per `dir` in one query (comparisons done by the database, as COUNT does)."""
        unique = sorted(set(dirs))
        t = self._table
        query = self._sql(
            ("count_dirs", len(dirs), len(unique)),
            lambda: select(
                *(
                    func.count(case((t.c.dir == bindparam(f"dir{i}"), literal_column("1"))))
                    for i in range(len(dirs))
                )
            ).where(t.c.dir.in_([bindparam(f"any{i}") for i in range(len(unique))])),
        )
        values = {f"dir{i}": d for i, d in enumerate(dirs)}
        values.update({f"any{i}": d for i, d in enumerate(unique)})

        def work(connection: pyodbc.Connection) -> list[int]:
            row = connection.cursor().execute(query.sql, query.parameters(values)).fetchone()
            return [int(n) for n in row]

        return await self._run_retrying(work)

    async def _count_each_dir(self, dirs: Sequence[str]) -> dict[str, int]:
        """Rows per `dir` for many dirs (the MWI poll): `GROUP BY dir` over `dir IN (...)`,
        about 30 times less database CPU than `_count_dirs`' one result column per dir
        (bench/RESULTS.md, issue 12's MWI at 10 000 phones).

        The groups come back keyed by the stored `dir`. Where the database compares without
        regard to case or accents (MariaDB's usual collations) a stored value may differ from
        the one asked for, or two dirs asked for may fall in one group. So the groups are
        taken only when every group is a dir asked for and the dirs asked for are ASCII and
        distinct without regard to case; otherwise they are counted by `_count_dirs`, whose
        comparisons the database makes, as Asterisk's `COUNT(*) ... WHERE dir = ?` does.
        """
        unique = sorted(set(dirs))
        if not all(d.isascii() for d in unique) or len({d.lower() for d in unique}) < len(unique):
            return dict(zip(unique, await self._count_dirs(unique), strict=True))
        query = self._sql(
            ("count_each_dir", len(unique)),
            lambda: (
                select(self._table.c.dir, func.count())
                .where(self._table.c.dir.in_([bindparam(f"any{i}") for i in range(len(unique))]))
                .group_by(self._table.c.dir)
            ),
        )
        values = {f"any{i}": d for i, d in enumerate(unique)}

        def work(connection: pyodbc.Connection) -> list[tuple[str, int]]:
            rows = connection.cursor().execute(query.sql, query.parameters(values)).fetchall()
            return [(str(row[0]), int(row[1])) for row in rows]

        grouped = dict(await self._run_retrying(work))
        if not set(grouped) <= set(unique):
            return dict(zip(unique, await self._count_dirs(unique), strict=True))
        return {d: grouped.get(d, 0) for d in unique}

    def _insert(self, cursor: pyodbc.Cursor, values: dict[str, Any], skip_category: bool) -> None:
        """Asterisk's INSERT of a row: the columns the table has, category only when given."""
        columns = self._table_columns(cursor)
        names = tuple(
            name
            for name in INSERT_COLUMNS
            if name in columns and name in values and not (name == "category" and skip_category)
        )
        insert = self._sql(
            ("insert", names),
            lambda: self._table.insert().values({n: bindparam(f"{n}_value") for n in names}),
        )
        cursor.execute(insert.sql, insert.parameters({f"{n}_value": values[n] for n in names}))

    def _table_columns(self, cursor: pyodbc.Cursor) -> frozenset[str]:
        """The table's real columns, read once: Asterisk 22 dropped macrocontext, for one."""
        if self._columns is None:
            columns = frozenset(table_columns(cursor, self.table_name))
            missing = {"dir", "msgnum", "recording"} - columns
            if missing:
                raise DatabaseError(
                    f"[{self.pool.name}] table {self.table_name} lacks column(s) "
                    f"{', '.join(sorted(missing))}"
                )
            self._columns = columns
        return self._columns

    def _sql(self, key: object, build: Callable[[], ClauseElement]) -> CompiledSql:
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = compile_sql(build(), self.pool.backend)
            self._compiled[key] = compiled
        return compiled

    def _execute(self, cursor: pyodbc.Cursor, name: str, **values: Any) -> pyodbc.Cursor:
        compiled = self._sql(name, lambda: self._named_statement(name))
        return cursor.execute(compiled.sql, compiled.parameters(values))

    def _executemany(self, cursor: pyodbc.Cursor, name: str, rows: list[dict[str, Any]]) -> None:
        """Run a named statement once per row, in the order given."""
        if rows:
            compiled = self._sql(name, lambda: self._named_statement(name))
            cursor.executemany(compiled.sql, [compiled.parameters(row) for row in rows])

    def _named_statement(self, name: str) -> ClauseElement:
        t = self._table
        at_dir = t.c.dir == bindparam("dir")
        at_msgnum = t.c.msgnum == bindparam("msgnum")
        statements: dict[str, Callable[[], ClauseElement]] = {
            "count_max": lambda: select(func.count(), func.max(t.c.msgnum)).where(at_dir),
            "find_msg_id": lambda: select(t.c.msgnum).where(
                at_dir, t.c.msg_id == bindparam("msg_id")
            ),
            "set_msg_id": lambda: (
                update(t)
                .where(at_dir, at_msgnum, t.c.msg_id.is_(None))
                .values(msg_id=bindparam("new_msg_id"))
            ),
            "renumber": lambda: (
                update(t).where(at_dir, at_msgnum).values(msgnum=bindparam("new_msgnum"))
            ),
            "delete": lambda: delete(t).where(at_dir, at_msgnum),
            "delete_msg_id": lambda: delete(t).where(
                at_dir, at_msgnum, t.c.msg_id == bindparam("msg_id")
            ),
            "park_one": lambda: self._park_one_statement(at_dir, at_msgnum),
            "write_lock": lambda: update(t).where(false()).values(msgnum=t.c.msgnum),
        }
        return statements[name]()

    def _park_one_statement(
        self, at_dir: ColumnElement[bool], at_msgnum: ColumnElement[bool]
    ) -> ClauseElement:
        """UPDATE of exactly one of the rows at (dir, msgnum): by ctid (PostgreSQL) or rowid
        (SQLite), lowest msg_id first; MariaDB's UPDATE ... LIMIT 1 takes whichever row its
        scan meets first (they share the msgnum, so either order is a correct renumbering)."""
        t = self._table
        to_msgnum = {"msgnum": bindparam("new_msgnum")}
        if self.pool.backend == "mysql":
            return (
                update(t)
                .where(at_dir, at_msgnum)
                .values(to_msgnum)
                .with_dialect_options(mysql_limit=1)
            )
        row_id = literal_column("ctid" if self.pool.backend == "postgresql" else "rowid")
        order = [t.c.msg_id] if self._columns is not None and "msg_id" in self._columns else []
        one = select(row_id).where(at_dir, at_msgnum).order_by(*order).limit(1)
        return update(t).where(row_id == one.scalar_subquery()).values(to_msgnum)


def _parked(msgnum: int) -> int:
    """Where _renumber_apart parks the row bound for `msgnum`: below greetings' -1."""
    return -2 - msgnum
