"""The voicemail message store: Asterisk's ODBC_STORAGE table, rows keyed by (dir, msgnum).

`dir` is the spool folder path Asterisk would use (`<spool>/<context>/<mailbox>/<folder>`), so a
table can be shared with app_voicemail. Unlike Asterisk, which serialises message numbering with a
lock file on one host, numbering here relies on the (dir, msgnum) primary key: read the highest
msgnum, insert the next, and on a conflict roll back and try again. That works across processes
and servers sharing one database.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyodbc
from sqlalchemy import bindparam, delete, false, func, select, update
from sqlalchemy.sql import ClauseElement

from storage.odbc import DatabaseError, DatabaseUnavailable, OdbcPool
from storage.schema import CompiledSql, compile_sql, messages_table, table_columns

FOLDERS = (
    "INBOX",
    "Old",
    "Work",
    "Family",
    "Friends",
    "Cust1",
    "Cust2",
    "Cust3",
    "Cust4",
    "Cust5",
    "Deleted",
    "Urgent",
)

# Greetings are rows with msgnum -1 whose `dir` is the greeting's base path (fact sheet 1.5).
GREETINGS = ("unavail", "busy", "greet", "temp")

DEFAULT_SPOOL_PREFIX = "/var/spool/asterisk/voicemail/"

# Columns written on store, in Asterisk's INSERT order; absent ones are left out.
_INSERT_COLUMNS = (
    "dir",
    "msgnum",
    "recording",
    "context",
    "macrocontext",
    "callerid",
    "origtime",
    "duration",
    "mailboxuser",
    "mailboxcontext",
    "flag",
    "msg_id",
    "category",
)

_STORE_ATTEMPTS = 25
# SQLSTATEs that mean another writer took the msgnum first (or the database chose us as the
# deadlock victim): try again with a fresh max(msgnum).
_CONFLICT_STATES = ("40001", "40P01")


def new_msg_id() -> str:
    """A message id shaped like Asterisk's `<unixtime>-<hex>`, unique across servers.

    Asterisk uses a per-process counter (`%ld-%08x`), unique only on one host; 64 random bits
    make ids from several servers sharing a database collide with negligible probability.
    """
    return f"{int(time.time())}-{secrets.token_hex(8)}"


@dataclass
class StoredMessage:
    """One message row as app_voicemail stores it."""

    dir: str
    msgnum: int
    context: str
    macrocontext: str
    callerid: str
    origtime: int
    duration: int
    recording: bytes
    flag: str
    category: str | None
    mailboxuser: str
    mailboxcontext: str
    msg_id: str


def _as_int(value: Any) -> int:
    """Legacy tables keep origtime/duration as varchar; Asterisk reads them with atoi."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip() or 0)
    except ValueError:
        return 0


def _as_text(value: Any) -> str:
    return "" if value is None else str(value)


def _is_conflict(exc: DatabaseError) -> bool:
    return exc.sqlstate.startswith("23") or exc.sqlstate in _CONFLICT_STATES


class MessageStore:
    """Messages of all mailboxes in one table, reached through one res_odbc connection class."""

    def __init__(
        self,
        pool: OdbcPool,
        table: str = "voicemessages",
        spool_prefix: str = DEFAULT_SPOOL_PREFIX,
    ) -> None:
        self.pool = pool
        self.table_name = table
        self.spool_prefix = spool_prefix if spool_prefix.endswith("/") else spool_prefix + "/"
        self._table = messages_table(table)
        self._columns: frozenset[str] | None = None
        self._compiled: dict[object, CompiledSql] = {}

    def folder_dir(self, context: str, mailbox: str, folder: str = "INBOX") -> str:
        """The `dir` key of a folder: the spool path Asterisk's make_dir() gives."""
        return f"{self.spool_prefix}{context}/{mailbox}/{folder}"

    async def store(
        self,
        *,
        context: str,
        mailbox: str,
        folder: str,
        recording: bytes,
        callerid: str,
        origtime: int,
        duration: int,
        caller_context: str,
        flag: str = "",
        category: str | None = None,
        msg_id: str,
    ) -> int:
        """Store a new message at the end of a folder and return its msgnum.

        Storing the same msg_id in the same folder again returns the existing msgnum, so a
        deposit retried after a lost connection (or a lost commit acknowledgement) is stored once.
        """
        folder_dir = self._message_dir(context, mailbox, folder)
        if not msg_id or len(msg_id) > 40:
            raise ValueError(f"msg_id must be 1 to 40 characters (see new_msg_id()): {msg_id!r}")
        values = {
            "dir": folder_dir,
            "recording": bytes(recording),
            "context": caller_context,
            "macrocontext": "",
            "callerid": callerid,
            "origtime": int(origtime),
            "duration": int(duration),
            "mailboxuser": mailbox,
            "mailboxcontext": context,
            "flag": flag,
            "msg_id": msg_id,
            "category": category,
        }

        def work(connection: pyodbc.Connection) -> int:
            cursor = connection.cursor()
            if self.pool.backend == "sqlite":
                # Take SQLite's write lock before reading anything: a transaction that reads and
                # then writes deadlocks with another writer until the busy timeout.
                self._execute(cursor, "write_lock")
            columns = self._table_columns(cursor)
            if "msg_id" in columns:
                found = self._execute(cursor, "find_msg_id", dir=folder_dir, msg_id=msg_id)
                row = found.fetchone()
                if row is not None:
                    return int(row[0])
            row = self._execute(cursor, "max_msgnum", dir=folder_dir).fetchone()
            msgnum = 0 if row is None or row[0] is None else int(row[0]) + 1
            names = tuple(
                name
                for name in _INSERT_COLUMNS
                if name in columns and (name != "category" or category)
            )
            insert = self._sql(
                ("insert", names),
                lambda: self._table.insert().values({n: bindparam(f"{n}_value") for n in names}),
            )
            row_values = {f"{n}_value": values[n] for n in names if n != "msgnum"}
            row_values["msgnum_value"] = msgnum
            cursor.execute(insert.sql, insert.parameters(row_values))
            return msgnum

        for attempt in range(_STORE_ATTEMPTS):
            try:
                return await self.pool.run(work)
            except DatabaseUnavailable:
                raise
            except DatabaseError as exc:
                if not _is_conflict(exc) or attempt == _STORE_ATTEMPTS - 1:
                    raise
            await asyncio.sleep(random.uniform(0.001, min(0.2, 0.005 * 2**attempt)))
        raise AssertionError("unreachable")

    async def count(self, context: str, mailbox: str, folder: str) -> int:
        """Number of messages in a folder (Asterisk's COUNT)."""
        folder_dir = self._message_dir(context, mailbox, folder)

        def work(connection: pyodbc.Connection) -> int:
            row = self._execute(connection.cursor(), "count", dir=folder_dir).fetchone()
            return int(row[0])

        return await self.pool.run(work)

    async def last_index(self, context: str, mailbox: str, folder: str) -> int:
        """Highest msgnum in a folder, -1 when it is empty (Asterisk's LAST_MSG_INDEX)."""
        folder_dir = self._message_dir(context, mailbox, folder)

        def work(connection: pyodbc.Connection) -> int:
            row = self._execute(connection.cursor(), "max_msgnum", dir=folder_dir).fetchone()
            return -1 if row is None or row[0] is None else int(row[0])

        return await self.pool.run(work)

    async def retrieve(
        self, context: str, mailbox: str, folder: str, msgnum: int
    ) -> StoredMessage | None:
        """One message with its audio, or None. A row without msg_id gets one, as in Asterisk."""
        return await self._retrieve(self._message_dir(context, mailbox, folder), msgnum)

    async def retrieve_greeting(
        self, context: str, mailbox: str, kind: str
    ) -> StoredMessage | None:
        """A recorded greeting (unavail, busy, greet = name, temp), or None."""
        if kind not in GREETINGS:
            raise ValueError(f"unknown greeting {kind!r}; expected one of {', '.join(GREETINGS)}")
        self._message_dir(context, mailbox, "INBOX")  # validates context and mailbox
        return await self._retrieve(self.folder_dir(context, mailbox, kind), -1)

    async def _retrieve(self, folder_dir: str, msgnum: int) -> StoredMessage | None:
        def work(connection: pyodbc.Connection) -> StoredMessage | None:
            cursor = connection.cursor()
            columns = self._table_columns(cursor)
            names = tuple(c.name for c in self._table.columns if c.name in columns)
            query = self._sql(
                ("retrieve", names),
                lambda: select(*(self._table.c[n] for n in names)).where(
                    self._table.c.dir == bindparam("dir"),
                    self._table.c.msgnum == bindparam("msgnum"),
                ),
            )
            cursor.execute(query.sql, query.parameters({"dir": folder_dir, "msgnum": msgnum}))
            row = cursor.fetchone()
            if row is None:
                return None
            cursor.fetchall()
            data = dict(zip(names, row, strict=True))
            if "msg_id" in columns and data["msg_id"] is None:
                data["msg_id"] = new_msg_id()
                self._execute(
                    cursor, "set_msg_id", dir=folder_dir, msgnum=msgnum, new_msg_id=data["msg_id"]
                )
            recording = data.get("recording")
            return StoredMessage(
                dir=folder_dir,
                msgnum=int(data.get("msgnum", msgnum)),
                context=_as_text(data.get("context")),
                macrocontext=_as_text(data.get("macrocontext")),
                callerid=_as_text(data.get("callerid")),
                origtime=_as_int(data.get("origtime")),
                duration=_as_int(data.get("duration")),
                recording=b"" if recording is None else bytes(recording),
                flag=_as_text(data.get("flag")),
                category=None if data.get("category") is None else str(data["category"]),
                mailboxuser=_as_text(data.get("mailboxuser")),
                mailboxcontext=_as_text(data.get("mailboxcontext")),
                msg_id=_as_text(data.get("msg_id")),
            )

        return await self.pool.run(work)

    async def delete(self, context: str, mailbox: str, folder: str, msgnum: int) -> None:
        """Remove one message row (no renumbering of the ones after it)."""
        folder_dir = self._message_dir(context, mailbox, folder)

        def work(connection: pyodbc.Connection) -> None:
            self._execute(connection.cursor(), "delete", dir=folder_dir, msgnum=msgnum)

        await self.pool.run(work)

    # --- helpers ------------------------------------------------------------------------------

    def _message_dir(self, context: str, mailbox: str, folder: str) -> str:
        if folder not in FOLDERS:
            raise ValueError(f"unknown folder {folder!r}; expected one of {', '.join(FOLDERS)}")
        for what, value in (("context", context), ("mailbox", mailbox)):
            if not value or "/" in value:
                raise ValueError(f"invalid {what} {value!r}")
        return self.folder_dir(context, mailbox, folder)

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

    def _named_statement(self, name: str) -> ClauseElement:
        t = self._table
        at_dir = t.c.dir == bindparam("dir")
        at_msgnum = t.c.msgnum == bindparam("msgnum")
        statements: dict[str, Callable[[], ClauseElement]] = {
            "max_msgnum": lambda: select(func.max(t.c.msgnum)).where(at_dir),
            "count": lambda: select(func.count()).select_from(t).where(at_dir),
            "find_msg_id": lambda: select(t.c.msgnum).where(
                at_dir, t.c.msg_id == bindparam("msg_id")
            ),
            "set_msg_id": lambda: (
                update(t).where(at_dir, at_msgnum).values(msg_id=bindparam("new_msg_id"))
            ),
            "delete": lambda: delete(t).where(at_dir, at_msgnum),
            "write_lock": lambda: update(t).where(false()).values(msgnum=t.c.msgnum),
        }
        return statements[name]()
