"""The voicemail message store: Asterisk's ODBC_STORAGE table, rows keyed by (dir, msgnum).

`dir` is the spool folder path Asterisk would use (`<spool>/<context>/<mailbox>/<folder>`), so a
table can be shared with app_voicemail. Messages of a folder are numbered 0..N-1.

Asterisk keeps that numbering right with a lock file in the folder, which only works on one host.
Here every write to a folder (deposit, copy, move, delete with compaction, renumbering, greeting)
runs in one transaction that first takes the folder's lock in the database itself
(storage/folderlock.py), so any number of server processes and hosts sharing the database are
serialised per folder. The (dir, msgnum) primary key stays the last line of defence (for Asterisk
writing the same table): a conflict, deadlock or serialization failure rolls the transaction back
and it is tried again.

The pool reruns a unit of work after a lost connection, which may follow a commit whose
acknowledgement was lost. Deposits are therefore matched by msg_id, and the operations that pick
messages by msgnum (storage/messageops.py) pin them to their msg_id.

Modules: messagerows (rows, folder names, errors), folderlock, messagetable (SQL, retries,
renumbering), messageops (delete, compact, copy, move) and this one (deposits, greetings,
counts, listings, reads). The public names are re-exported here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pyodbc
from sqlalchemy import bindparam, select

from storage.folderlock import DEFAULT_LOCK_TIMEOUT
from storage.messageops import MessageOperations
from storage.messagerows import (
    DEFAULT_SPOOL_PREFIX,
    FOLDERS,
    GREETINGS,
    INFO_COLUMNS,
    MailboxFull,
    MessageInfo,
    MessageNotFound,
    StoredMessage,
    new_msg_id,
    row_fields,
)

if TYPE_CHECKING:
    from storage.outbox import OutboxItem

# Mailboxes per MWI poll query: three `dir` parameters each (and, where the database's
# collation makes the poll fall back to _count_dirs, three result columns each: PostgreSQL
# allows 1664).
MWI_CHUNK = 250

__all__ = [
    "DEFAULT_LOCK_TIMEOUT",
    "DEFAULT_SPOOL_PREFIX",
    "FOLDERS",
    "GREETINGS",
    "MailboxFull",
    "MessageInfo",
    "MessageNotFound",
    "MessageStore",
    "StoredMessage",
    "new_msg_id",
]


class MessageStore(MessageOperations):
    """Messages of all mailboxes in one table, reached through one res_odbc connection class.

    Deposits, greetings, counts, listings and reads are here; delete, compaction, copy and move
    in MessageOperations (storage/messageops.py); SQL, retries and locking in MessageTable.
    """

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
        outbox: Sequence[OutboxItem] = (),
    ) -> int:
        """Store a new message at the end of a folder and return its msgnum.

        Storing the same msg_id in the same folder again returns the existing msgnum, so a
        deposit retried after a lost connection (or a lost commit acknowledgement) is stored once.
        Raises MailboxFull when the folder already has `maxmsg` messages; the count is taken
        under the folder lock, so concurrent deposits cannot overfill it. `outbox` items are
        queued (storage/outbox.py) in the transaction that inserts the message, and only then.
        """
        folder_dir = self._message_dir(context, mailbox, folder)
        if not msg_id or len(msg_id) > 40:
            raise ValueError(f"msg_id must be 1 to 40 characters (see new_msg_id()): {msg_id!r}")
        if outbox and self.outbox is None:
            raise ValueError("store(outbox=...) needs a MessageStore made with outbox=Outbox(...)")
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
            if outbox and self.outbox is not None:
                self.outbox.enqueue_in(
                    cursor, context=context, mailbox=mailbox, msg_id=msg_id, items=outbox
                )
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

    async def mwi_counts_each(
        self, mailboxes: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[int, int]]:
        """(new, old) of each distinct (context, mailbox), for the MWI poll: one grouped query
        per MWI_CHUNK mailboxes, not one per phone."""
        distinct = list(dict.fromkeys(mailboxes))
        counts: dict[tuple[str, str], tuple[int, int]] = {}
        for start in range(0, len(distinct), MWI_CHUNK):
            chunk = distinct[start : start + MWI_CHUNK]
            dirs = [
                [self._message_dir(context, mailbox, f) for f in ("INBOX", "Urgent", "Old")]
                for context, mailbox in chunk
            ]
            each = await self._count_each_dir([d for three in dirs for d in three])
            for key, (inbox, urgent, old) in zip(chunk, dirs, strict=True):
                counts[key] = (each[inbox] + each[urgent], each[old])
        return counts

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
            names = tuple(name for name in INFO_COLUMNS if name in columns)
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
                MessageInfo(**row_fields(dict(zip(names, row, strict=True)), folder_dir, -1))
                for row in rows
            ]

        return await self._run_retrying(work)

    # --- reading ----------------------------------------------------------------------------

    async def retrieve(
        self, context: str, mailbox: str, folder: str, msgnum: int
    ) -> StoredMessage | None:
        """One message with its audio, or None. A row without msg_id gets one, as in Asterisk."""
        message = await self._retrieve(self._message_dir(context, mailbox, folder), msgnum)
        if message is not None:
            self.messages_read += 1
            self.message_bytes_read += len(message.recording)
        return message

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
                **row_fields(data, folder_dir, msgnum),
            )

        return await self._run_retrying(work)
