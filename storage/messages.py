"""The voicemail message store: Asterisk's ODBC_STORAGE table, rows keyed by (dir, msgnum).

`dir` is the spool folder path Asterisk would use (`<spool>/<context>/<mailbox>/<folder>`), so a
table can be shared with app_voicemail. Messages of a folder are numbered 0..N-1.

Asterisk keeps that numbering right with a lock file in the folder, which only works on one host.
Here every write to a folder (deposit, copy, move, delete with compaction, renumbering, greeting)
runs in one transaction that first takes the folder's lock in the database itself, so any number
of server processes and hosts sharing the database are serialised per folder:

- PostgreSQL: an advisory lock (`pg_advisory_lock`) on a 64-bit hash of the table name and
  `dir`; MariaDB/MySQL: a named user lock (`GET_LOCK`) on the same hash. Both belong to the
  session: the lock is taken and committed, so that the work's snapshot starts after it even at
  REPEATABLE READ or SERIALIZABLE (res_odbc `isolation`), then the work runs and commits, then
  the lock is released. A lost connection releases its locks with the session.
- SQLite: the database's write lock, taken by the transaction's first statement.

Several folders are locked in a fixed (sorted) order, so two transactions cannot deadlock on
them. The (dir, msgnum) primary key stays the last line of defence (for Asterisk writing the same
table): a conflict, deadlock or serialization failure rolls the transaction back and it is tried
again.

The pool reruns a unit of work after a lost connection, which may follow a commit whose
acknowledgement was lost. Deposits are therefore matched by msg_id, and the operations that pick
messages by msgnum (delete_messages, copy, move) pin them to their msg_id on the first attempt and
find them by it on a rerun.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pyodbc
from sqlalchemy import (
    Integer,
    String,
    bindparam,
    case,
    cast,
    delete,
    false,
    func,
    literal_column,
    select,
    update,
)
from sqlalchemy.sql import ClauseElement, ColumnElement

from storage.odbc import (
    DatabaseError,
    DatabaseUnavailable,
    OdbcPool,
    driver_message,
    sqlstate_of,
)
from storage.schema import CompiledSql, compile_sql, messages_table, table_columns

T = TypeVar("T")

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

# Columns a copy takes from the source row; dir, msgnum and the owner come from the destination.
# Unlike Asterisk's COPY, category is kept.
_COPIED_COLUMNS = (
    "context",
    "macrocontext",
    "callerid",
    "origtime",
    "duration",
    "recording",
    "flag",
    "category",
    "msg_id",
)

# Everything list_messages() reports: every known column but the audio.
_INFO_COLUMNS = (
    "msgnum",
    "context",
    "macrocontext",
    "callerid",
    "origtime",
    "duration",
    "flag",
    "category",
    "mailboxuser",
    "mailboxcontext",
    "msg_id",
)

_ATTEMPTS = 25
# SQLSTATEs that mean another writer got in first (or the database chose us as the deadlock
# victim): roll back and try again.
_CONFLICT_STATES = ("40001", "40P01")

_PG_LOCK_SQL = "SELECT pg_advisory_lock(CAST(? AS BIGINT))"
_PG_UNLOCK_SQL = "SELECT pg_advisory_unlock(CAST(? AS BIGINT))"
# lock_timeout for the rest of the locking transaction only (set_config's is_local).
_PG_LOCK_TIMEOUT_SQL = "SELECT set_config('lock_timeout', ?, true)"
_PG_LOCK_NOT_AVAILABLE = "55P03"
_MYSQL_LOCK_SQL = "SELECT GET_LOCK(?, ?)"
_MYSQL_UNLOCK_SQL = "SELECT RELEASE_LOCK(?)"
# How long a folder lock is waited for by default (Asterisk gives up on its lock file after 5 s;
# a folder lock here is held for one short transaction).
DEFAULT_LOCK_TIMEOUT = 5.0

# (msgnum, msg_id or None) of one row of a folder.
_Row = tuple[int, str | None]


class MailboxFull(Exception):
    """The folder already holds `maxmsg` messages (Asterisk plays vm-mailboxfull)."""

    def __init__(self, folder_dir: str, maxmsg: int) -> None:
        super().__init__(f"{folder_dir} is full: it already has maxmsg={maxmsg} messages")
        self.dir = folder_dir
        self.maxmsg = maxmsg


class MessageNotFound(LookupError):
    """The message to copy or move is not there (any more)."""


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


@dataclass
class MessageInfo:
    """A message row without its audio: what a folder listing needs."""

    dir: str
    msgnum: int
    context: str
    macrocontext: str
    callerid: str
    origtime: int
    duration: int
    flag: str
    category: str | None
    mailboxuser: str
    mailboxcontext: str
    msg_id: str


@dataclass(frozen=True)
class _Pin:
    """A message chosen by msgnum, with its msg_id when that identifies it within the folder."""

    msgnum: int
    msg_id: str | None


def _pin(rows: Sequence[_Row], msgnums: Iterable[int]) -> list[_Pin]:
    """Pin the existing ones of `msgnums`; a msg_id counts only if it is unique in the folder."""
    uses = Counter(msg_id for _, msg_id in rows if msg_id)
    present = dict(rows)
    pins = []
    for msgnum in msgnums:
        if msgnum in present:
            msg_id = present[msgnum]
            pins.append(_Pin(msgnum, msg_id if msg_id and uses[msg_id] == 1 else None))
    return pins


def _locate(rows: Sequence[_Row], pin: _Pin) -> int | None:
    """Where a pinned message is now, or None if it is gone.

    Compaction only moves messages down and keeps their order, and copies are appended, so the
    pinned message is the lowest row with its msg_id. Without a msg_id, trust the msgnum.
    """
    if pin.msg_id is None:
        return pin.msgnum if any(msgnum == pin.msgnum for msgnum, _ in rows) else None
    found = [msgnum for msgnum, msg_id in rows if msg_id == pin.msg_id]
    return min(found) if found else None


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


def _row_fields(data: dict[str, Any], folder_dir: str, msgnum: int) -> dict[str, Any]:
    """The StoredMessage/MessageInfo fields of a row, with Asterisk's reading of NULLs."""
    return {
        "dir": folder_dir,
        "msgnum": int(data.get("msgnum", msgnum)),
        "context": _as_text(data.get("context")),
        "macrocontext": _as_text(data.get("macrocontext")),
        "callerid": _as_text(data.get("callerid")),
        "origtime": _as_int(data.get("origtime")),
        "duration": _as_int(data.get("duration")),
        "flag": _as_text(data.get("flag")),
        "category": None if data.get("category") is None else str(data["category"]),
        "mailboxuser": _as_text(data.get("mailboxuser")),
        "mailboxcontext": _as_text(data.get("mailboxcontext")),
        "msg_id": _as_text(data.get("msg_id")),
    }


def _is_conflict(exc: DatabaseError) -> bool:
    return exc.sqlstate.startswith("23") or exc.sqlstate in _CONFLICT_STATES


class MessageStore:
    """Messages of all mailboxes in one table, reached through one res_odbc connection class."""

    def __init__(
        self,
        pool: OdbcPool,
        table: str = "voicemessages",
        spool_prefix: str = DEFAULT_SPOOL_PREFIX,
        *,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    ) -> None:
        """`lock_timeout`: seconds a write waits for a folder lock before DatabaseUnavailable
        (on SQLite the driver's busy timeout, `Timeout=` in the connection string, bounds it)."""
        if not lock_timeout > 0:
            raise ValueError(f"lock_timeout must be a positive number of seconds: {lock_timeout!r}")
        self.pool = pool
        self.lock_timeout = float(lock_timeout)
        self.table_name = table
        self.spool_prefix = spool_prefix if spool_prefix.endswith("/") else spool_prefix + "/"
        self._table = messages_table(table)
        self._columns: frozenset[str] | None = None
        self._compiled: dict[object, CompiledSql] = {}

    def folder_dir(self, context: str, mailbox: str, folder: str = "INBOX") -> str:
        """The `dir` key of a folder: the spool path Asterisk's make_dir() gives."""
        return f"{self.spool_prefix}{context}/{mailbox}/{folder}"

    # --- deposits and greetings -------------------------------------------------------------

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
        maxmsg: int | None = None,
    ) -> int:
        """Store a new message at the end of a folder and return its msgnum.

        Storing the same msg_id in the same folder again returns the existing msgnum, so a
        deposit retried after a lost connection (or a lost commit acknowledgement) is stored once.
        Raises MailboxFull when the folder already has `maxmsg` messages; the count is taken
        under the folder lock, so concurrent deposits cannot overfill it.
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

        def body(cursor: pyodbc.Cursor) -> int:
            columns = self._table_columns(cursor)
            if "msg_id" in columns:
                found = self._execute(cursor, "find_msg_id", dir=folder_dir, msg_id=msg_id)
                row = found.fetchone()
                if row is not None:
                    return int(row[0])
            count, last = self._execute(cursor, "count_max", dir=folder_dir).fetchone()
            if maxmsg is not None and int(count) >= maxmsg:
                raise MailboxFull(folder_dir, maxmsg)
            msgnum = 0 if last is None else int(last) + 1
            self._insert(cursor, {**values, "msgnum": msgnum}, skip_category=not category)
            return msgnum

        return await self._run_retrying(self._folder_work([folder_dir], body))

    async def save_greeting(self, context: str, mailbox: str, kind: str, recording: bytes) -> None:
        """Record (or replace) a greeting: Asterisk's STORE with msgnum -1 and no .txt values."""
        greeting_dir = self._greeting_dir(context, mailbox, kind)
        values = {
            "dir": greeting_dir,
            "msgnum": -1,
            "recording": bytes(recording),
            "context": "",
            "macrocontext": "",
            "callerid": "",
            "origtime": 0,
            "duration": 0,
            "mailboxuser": mailbox,
            "mailboxcontext": context,
            "flag": "",
            "msg_id": "",
        }

        def body(cursor: pyodbc.Cursor) -> None:
            self._execute(cursor, "delete", dir=greeting_dir, msgnum=-1)
            self._insert(cursor, values, skip_category=True)

        await self._run_retrying(self._folder_work([greeting_dir], body))

    async def delete_greeting(self, context: str, mailbox: str, kind: str) -> bool:
        """Remove a greeting (e.g. the temporary one); False if there was none."""
        greeting_dir = self._greeting_dir(context, mailbox, kind)

        def body(cursor: pyodbc.Cursor) -> bool:
            return self._execute(cursor, "delete", dir=greeting_dir, msgnum=-1).rowcount > 0

        return await self._run_retrying(self._folder_work([greeting_dir], body))

    # --- counting and listing ---------------------------------------------------------------

    async def count(self, context: str, mailbox: str, folder: str) -> int:
        """Number of messages in a folder (Asterisk's COUNT)."""
        folder_dir = self._message_dir(context, mailbox, folder)

        def work(connection: pyodbc.Connection) -> int:
            row = self._execute(connection.cursor(), "count_max", dir=folder_dir).fetchone()
            return int(row[0])

        return await self._run_retrying(work)

    async def counts(self, context: str, mailbox: str) -> tuple[int, int, int]:
        """(INBOX, Old, Urgent) message counts in one query, as Asterisk's inboxcount2.

        For MWI, "new" is INBOX + Urgent (see mwi_counts).
        """
        inbox, old, urgent = await self._count_dirs(
            [self._message_dir(context, mailbox, f) for f in ("INBOX", "Old", "Urgent")]
        )
        return inbox, old, urgent

    async def mwi_counts(self, mailboxes: Sequence[tuple[str, str]]) -> tuple[int, int]:
        """(new, old) summed over (context, mailbox) pairs, new being INBOX + Urgent.

        This is what Asterisk reports for `mailbox=a@c,b@c`; one query for all of them. A
        mailbox listed twice counts twice, as in Asterisk.
        """
        dirs = [
            self._message_dir(context, mailbox, folder)
            for context, mailbox in mailboxes
            for folder in ("INBOX", "Urgent", "Old")
        ]
        if not dirs:
            return 0, 0
        counted = await self._count_dirs(dirs)
        new = sum(counted[i] + counted[i + 1] for i in range(0, len(counted), 3))
        old = sum(counted[i + 2] for i in range(0, len(counted), 3))
        return new, old

    async def last_index(self, context: str, mailbox: str, folder: str) -> int:
        """Highest msgnum in a folder, -1 when it is empty (Asterisk's LAST_MSG_INDEX)."""
        folder_dir = self._message_dir(context, mailbox, folder)

        def work(connection: pyodbc.Connection) -> int:
            row = self._execute(connection.cursor(), "count_max", dir=folder_dir).fetchone()
            return -1 if row[1] is None else int(row[1])

        return await self._run_retrying(work)

    async def list_messages(self, context: str, mailbox: str, folder: str) -> list[MessageInfo]:
        """The messages of a folder in msgnum order, without their audio."""
        folder_dir = self._message_dir(context, mailbox, folder)

        def work(connection: pyodbc.Connection) -> list[MessageInfo]:
            cursor = connection.cursor()
            columns = self._table_columns(cursor)
            names = tuple(name for name in _INFO_COLUMNS if name in columns)
            query = self._sql(
                ("list", names),
                lambda: (
                    select(*(self._table.c[n] for n in names))
                    .where(self._table.c.dir == bindparam("dir"))
                    .order_by(self._table.c.msgnum)
                ),
            )
            rows = cursor.execute(query.sql, query.parameters({"dir": folder_dir})).fetchall()
            return [
                MessageInfo(**_row_fields(dict(zip(names, row, strict=True)), folder_dir, -1))
                for row in rows
            ]

        return await self._run_retrying(work)

    # --- reading ----------------------------------------------------------------------------

    async def retrieve(
        self, context: str, mailbox: str, folder: str, msgnum: int
    ) -> StoredMessage | None:
        """One message with its audio, or None. A row without msg_id gets one, as in Asterisk."""
        return await self._retrieve(self._message_dir(context, mailbox, folder), msgnum)

    async def retrieve_greeting(
        self, context: str, mailbox: str, kind: str
    ) -> StoredMessage | None:
        """A recorded greeting (unavail, busy, greet = name, temp), or None."""
        return await self._retrieve(self._greeting_dir(context, mailbox, kind), -1)

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
                recording=b"" if recording is None else bytes(recording),
                **_row_fields(data, folder_dir, msgnum),
            )

        return await self._run_retrying(work)

    # --- removing and renumbering -----------------------------------------------------------

    async def delete(self, context: str, mailbox: str, folder: str, msgnum: int) -> None:
        """Remove one message row (no renumbering of the ones after it; Asterisk's DELETE)."""
        folder_dir = self._message_dir(context, mailbox, folder)

        def work(connection: pyodbc.Connection) -> None:
            self._execute(connection.cursor(), "delete", dir=folder_dir, msgnum=msgnum)

        await self._run_retrying(work)

    async def delete_messages(
        self, context: str, mailbox: str, folder: str, msgnums: Sequence[int]
    ) -> int:
        """Remove messages and renumber the rest 0..N-1, as Asterisk's close_mailbox does.

        One transaction under the folder lock, so deposits into the folder from other processes
        wait for it instead of taking a number in the middle. msgnums that do not exist are
        ignored; returns how many of the given messages existed and were removed.
        """
        folder_dir = self._message_dir(context, mailbox, folder)
        wanted = sorted({int(msgnum) for msgnum in msgnums})
        if not wanted:
            return 0
        pins: list[_Pin] | None = None

        def body(cursor: pyodbc.Cursor) -> int:
            nonlocal pins
            rows = self._folder_rows(cursor, folder_dir)
            if pins is None:
                pins = _pin(rows, wanted)
            doomed = {where for pin in pins if (where := _locate(rows, pin)) is not None}
            self._executemany(
                cursor, "delete", [{"dir": folder_dir, "msgnum": m} for m in sorted(doomed)]
            )
            self._compact(cursor, folder_dir, [m for m, _ in rows if m not in doomed])
            return len(pins)

        return await self._run_retrying(self._folder_work([folder_dir], body))

    async def resequence(self, context: str, mailbox: str, folder: str) -> int:
        """Close gaps in a folder's numbering (Asterisk does this when it opens a folder).

        Returns how many messages got a new msgnum.
        """
        folder_dir = self._message_dir(context, mailbox, folder)

        def body(cursor: pyodbc.Cursor) -> int:
            msgnums = [m for m, _ in self._folder_rows(cursor, folder_dir)]
            self._compact(cursor, folder_dir, msgnums)
            return sum(1 for new, old in enumerate(msgnums) if old != new)

        return await self._run_retrying(self._folder_work([folder_dir], body))

    # --- copying and moving -----------------------------------------------------------------

    async def copy(
        self,
        *,
        src_context: str,
        src_mailbox: str,
        src_folder: str,
        msgnum: int,
        dst_context: str,
        dst_mailbox: str,
        dst_folder: str,
        maxmsg: int | None = None,
    ) -> int:
        """Copy a message to the end of another folder (forward, save) and return its msgnum.

        Keeps msg_id, flag and (unlike Asterisk) category; the copy belongs to the destination
        mailbox. Raises MailboxFull if the destination has `maxmsg` messages, MessageNotFound
        if there is no such source message.
        """
        return await self._transfer(
            src_dir=self._message_dir(src_context, src_mailbox, src_folder),
            msgnum=msgnum,
            dst_dir=self._message_dir(dst_context, dst_mailbox, dst_folder),
            dst_context=dst_context,
            dst_mailbox=dst_mailbox,
            maxmsg=maxmsg,
            remove_source=False,
        )

    async def move(
        self,
        *,
        src_context: str,
        src_mailbox: str,
        src_folder: str,
        msgnum: int,
        dst_context: str,
        dst_mailbox: str,
        dst_folder: str,
        maxmsg: int | None = None,
    ) -> int:
        """Move a message to the end of another folder and compact the source, atomically.

        Either both happen or neither does. Returns the message's msgnum in the destination.
        """
        return await self._transfer(
            src_dir=self._message_dir(src_context, src_mailbox, src_folder),
            msgnum=msgnum,
            dst_dir=self._message_dir(dst_context, dst_mailbox, dst_folder),
            dst_context=dst_context,
            dst_mailbox=dst_mailbox,
            maxmsg=maxmsg,
            remove_source=True,
        )

    async def _transfer(
        self,
        *,
        src_dir: str,
        msgnum: int,
        dst_dir: str,
        dst_context: str,
        dst_mailbox: str,
        maxmsg: int | None,
        remove_source: bool,
    ) -> int:
        same_folder = src_dir == dst_dir
        grows = not (remove_source and same_folder)
        pin: _Pin | None = None
        # Copies of the message in the destination before a run that may have committed (the
        # pool reran it after a lost connection); None once that run is known rolled back.
        copies_before: int | None = None

        def rolled_back() -> None:
            nonlocal copies_before
            copies_before = None

        def body(cursor: pyodbc.Cursor) -> int:
            nonlocal pin, copies_before
            src_rows = self._folder_rows(cursor, src_dir)
            if pin is None:
                pins = _pin(src_rows, [msgnum])
                if not pins:
                    raise MessageNotFound(f"no message {msgnum} in {src_dir}")
                pin = pins[0]
            dst_rows = src_rows if same_folder else self._folder_rows(cursor, dst_dir)
            if pin.msg_id is not None:
                copies = [m for m, msg_id in dst_rows if msg_id == pin.msg_id]
                if copies_before is not None and len(copies) > copies_before:
                    return max(copies)  # the earlier run committed; its reply was lost
                copies_before = len(copies)
            source = _locate(src_rows, pin)
            if source is None:
                raise MessageNotFound(f"message {msgnum} of {src_dir} is gone")
            if grows and maxmsg is not None and len(dst_rows) >= maxmsg:
                raise MailboxFull(dst_dir, maxmsg)
            new = dst_rows[-1][0] + 1 if dst_rows else 0
            self._insert_copy(cursor, source, src_dir, new, dst_dir, dst_context, dst_mailbox)
            if not remove_source:
                return new
            self._execute(cursor, "delete", dir=src_dir, msgnum=source)
            keep = [m for m, _ in src_rows if m != source] + ([new] if same_folder else [])
            mapping = self._compact(cursor, src_dir, keep)
            return mapping[new] if same_folder else new

        work = self._folder_work([src_dir, dst_dir], body)
        return await self._run_retrying(work, rolled_back=rolled_back)

    def _insert_copy(
        self,
        cursor: pyodbc.Cursor,
        msgnum: int,
        src_dir: str,
        new_msgnum: int,
        dst_dir: str,
        dst_context: str,
        dst_mailbox: str,
    ) -> None:
        """INSERT ... SELECT of one row, as Asterisk's COPY, with the destination's owner."""
        columns = self._table_columns(cursor)
        copied = tuple(name for name in _COPIED_COLUMNS if name in columns)
        owner = tuple(name for name in ("mailboxuser", "mailboxcontext") if name in columns)
        t = self._table

        def build() -> ClauseElement:
            given = {
                "dir": cast(bindparam("dst_dir"), String),
                "msgnum": cast(bindparam("dst_msgnum"), Integer),
                "mailboxuser": cast(bindparam("dst_mailbox"), String),
                "mailboxcontext": cast(bindparam("dst_context"), String),
            }
            names = ("dir", "msgnum", *owner)
            source = select(*(given[n] for n in names), *(t.c[n] for n in copied)).where(
                t.c.dir == bindparam("src_dir"), t.c.msgnum == bindparam("src_msgnum")
            )
            return t.insert().from_select([*names, *copied], source)

        statement = self._sql(("copy", copied, owner), build)
        values = {
            "dst_dir": dst_dir,
            "dst_msgnum": new_msgnum,
            "dst_mailbox": dst_mailbox,
            "dst_context": dst_context,
            "src_dir": src_dir,
            "src_msgnum": msgnum,
        }
        cursor.execute(statement.sql, statement.parameters(values))

    # --- helpers ------------------------------------------------------------------------------

    def _message_dir(self, context: str, mailbox: str, folder: str) -> str:
        if folder not in FOLDERS:
            raise ValueError(f"unknown folder {folder!r}; expected one of {', '.join(FOLDERS)}")
        for what, value in (("context", context), ("mailbox", mailbox)):
            if not value or "/" in value:
                raise ValueError(f"invalid {what} {value!r}")
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
        """A unit of work running `body` as the holder of the write locks of folders `dirs`."""
        folder_dirs = sorted(set(dirs))

        def work(connection: pyodbc.Connection) -> T:
            cursor = connection.cursor()
            if self.pool.backend == "sqlite":
                # Take the database write lock before reading anything (a transaction that reads
                # and then writes deadlocks with another writer until the busy timeout).
                try:
                    self._execute(cursor, "write_lock")
                except pyodbc.Error as exc:
                    if "locked" in driver_message(exc) or "busy" in driver_message(exc):
                        raise DatabaseUnavailable(
                            f"[{self.pool.name}] no write lock for {', '.join(folder_dirs)}: "
                            "the database stayed locked by another writer for the busy "
                            "timeout (Timeout= of the connection string)",
                            sqlstate="HYT00",
                        ) from exc
                    raise
                return body(cursor)
            return self._run_under_session_locks(connection, cursor, folder_dirs, body)

        return work

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
                timeout = f"{max(1, round(self.lock_timeout * 1000))}ms"
                cursor.execute(_PG_LOCK_TIMEOUT_SQL, timeout).fetchall()
            for lock, folder_dir in sorted((self.folder_lock_key(d), d) for d in folder_dirs):
                self._take_lock(cursor, lock, folder_dir)
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

    def _take_lock(self, cursor: pyodbc.Cursor, lock: Any, folder_dir: str) -> None:
        """Wait at most lock_timeout for one folder's lock, then raise DatabaseUnavailable.

        A pyodbc error must not leave here for a lock timeout: the pool would take it for a
        broken connection and run the whole unit of work again.
        """
        if self.pool.backend == "postgresql":
            try:
                cursor.execute(_PG_LOCK_SQL, lock).fetchall()
            except pyodbc.Error as exc:
                if sqlstate_of(exc) == _PG_LOCK_NOT_AVAILABLE:
                    raise self._lock_timed_out(folder_dir) from exc
                raise
            return
        row = cursor.execute(_MYSQL_LOCK_SQL, lock, self.lock_timeout).fetchone()
        if row is None or row[0] != 1:
            raise self._lock_timed_out(folder_dir)

    def _lock_timed_out(self, folder_dir: str) -> DatabaseUnavailable:
        return DatabaseUnavailable(
            f"[{self.pool.name}] no lock on folder {folder_dir} within {self.lock_timeout:g} s: "
            "another server holds it",
            sqlstate="HYT00",
        )

    def folder_lock_key(self, folder_dir: str) -> int | str:
        """The folder's lock: a bigint key on PostgreSQL, a lock name (<= 64 chars) on MariaDB."""
        digest = hashlib.sha256(f"{self.table_name}\0{folder_dir}".encode()).digest()
        if self.pool.backend == "postgresql":
            return int.from_bytes(digest[:8], "big", signed=True)
        return "aravm-" + digest[:16].hex()

    def _folder_rows(self, cursor: pyodbc.Cursor, folder_dir: str) -> list[_Row]:
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

    def _renumber_apart(
        self, cursor: pyodbc.Cursor, folder_dir: str, ordered: list[int], uses: Counter[int]
    ) -> None:
        """Renumber a folder where some msgnums are shared by several rows.

        (dir, msgnum) does not name one row here, so each moving row is first parked alone at a
        number of its own below -1 (greetings use -1; folders never go below 0), picking one
        row of its msgnum at a time (by msg_id order where the table has one; PostgreSQL's
        ctid, SQLite's rowid or MariaDB's UPDATE ... LIMIT 1 to pick exactly one), and then
        every parked row gets its final number. All of it in the folder's transaction.
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

    def _insert(self, cursor: pyodbc.Cursor, values: dict[str, Any], skip_category: bool) -> None:
        """Asterisk's INSERT of a row: the columns the table has, category only when given."""
        columns = self._table_columns(cursor)
        names = tuple(
            name
            for name in _INSERT_COLUMNS
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
            "park_one": lambda: self._park_one_statement(at_dir, at_msgnum),
            "write_lock": lambda: update(t).where(false()).values(msgnum=t.c.msgnum),
        }
        return statements[name]()

    def _park_one_statement(
        self, at_dir: ColumnElement[bool], at_msgnum: ColumnElement[bool]
    ) -> ClauseElement:
        """UPDATE of exactly one of the rows at (dir, msgnum), lowest msg_id first."""
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
