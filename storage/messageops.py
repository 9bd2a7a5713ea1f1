"""Deleting, renumbering, copying and moving messages: the operations of the retrieval menu.

Each runs as one transaction under the locks of the folders it touches (storage/folderlock.py).
The pool reruns a unit of work after a lost connection, which may follow a commit whose
acknowledgement was lost, so the operations that pick messages by msgnum pin them to their msg_id
on the first attempt and find them by it on a rerun.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyodbc
from sqlalchemy import Integer, String, bindparam, cast, select
from sqlalchemy.sql import ClauseElement

from storage.messagerows import (
    COPIED_COLUMNS,
    MailboxFull,
    MessageNotFound,
    Pin,
    Row,
    locate,
    pin_messages,
    without,
)
from storage.messagetable import MessageTable


class MessageOperations(MessageTable):
    """Delete, delete with compaction, resequence, copy and move."""

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
        pins: list[Pin] | None = None

        def body(cursor: pyodbc.Cursor) -> int:
            nonlocal pins
            rows = self._folder_rows(cursor, folder_dir)
            if pins is None:
                pins = pin_messages(rows, wanted)
            left = list(rows)
            for pin in pins:
                where = locate(rows, pin)
                if where is not None:
                    self._delete_row(cursor, folder_dir, where, pin.msg_id)
                    left = without(left, where, pin.msg_id)
            self._compact(cursor, folder_dir, [m for m, _ in left])
            return len(pins)

        return await self._run_retrying(self._folder_work([folder_dir], body))

    async def delete_msg_id(self, context: str, mailbox: str, folder: str, msg_id: str) -> bool:
        """Remove the message with this msg_id from a folder, under the folder's lock, without
        renumbering (Asterisk's DELETE after mailing with delete=yes); False if not there."""
        folder_dir = self._message_dir(context, mailbox, folder)

        def body(cursor: pyodbc.Cursor) -> bool:
            where = locate(self._folder_rows(cursor, folder_dir), Pin(-1, msg_id))
            if where is not None:
                self._delete_row(cursor, folder_dir, where, msg_id)
            return where is not None

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
        pin: Pin | None = None
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
                pins = pin_messages(src_rows, [msgnum])
                if not pins:
                    raise MessageNotFound(f"no message {msgnum} in {src_dir}")
                pin = pins[0]
            dst_rows = src_rows if same_folder else self._folder_rows(cursor, dst_dir)
            if pin.msg_id is not None:
                copies = [m for m, msg_id in dst_rows if msg_id == pin.msg_id]
                if copies_before is not None and len(copies) > copies_before:
                    return max(copies)  # the earlier run committed; its reply was lost
                copies_before = len(copies)
            source = locate(src_rows, pin)
            if source is None:
                raise MessageNotFound(f"message {msgnum} of {src_dir} is gone")
            if grows and maxmsg is not None and len(dst_rows) >= maxmsg:
                raise MailboxFull(dst_dir, maxmsg)
            new = dst_rows[-1][0] + 1 if dst_rows else 0
            self._insert_copy(
                cursor, (source, pin.msg_id), src_dir, new, dst_dir, dst_context, dst_mailbox
            )
            if not remove_source:
                return new
            self._delete_row(cursor, src_dir, source, pin.msg_id)
            left = without(src_rows, source, pin.msg_id)
            keep = [m for m, _ in left] + ([new] if same_folder else [])
            mapping = self._compact(cursor, src_dir, keep)
            return mapping[new] if same_folder else new

        work = self._folder_work([src_dir, dst_dir], body)
        return await self._run_retrying(work, rolled_back=rolled_back)

    def _insert_copy(
        self,
        cursor: pyodbc.Cursor,
        source: Row,
        src_dir: str,
        new_msgnum: int,
        dst_dir: str,
        dst_context: str,
        dst_mailbox: str,
    ) -> None:
        """INSERT ... SELECT of one row, as Asterisk's COPY, with the destination's owner.

        `source` is (msgnum, msg_id): with a msg_id, only that row is copied, even where a
        legacy table holds other rows at the same msgnum.
        """
        msgnum, msg_id = source
        columns = self._table_columns(cursor)
        copied = tuple(name for name in COPIED_COLUMNS if name in columns)
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
            if msg_id is not None:
                source = source.where(t.c.msg_id == bindparam("src_msg_id"))
            return t.insert().from_select([*names, *copied], source)

        statement = self._sql(("copy", copied, owner, msg_id is not None), build)
        values = {
            "dst_dir": dst_dir,
            "dst_msgnum": new_msgnum,
            "dst_mailbox": dst_mailbox,
            "dst_context": dst_context,
            "src_dir": src_dir,
            "src_msgnum": msgnum,
        }
        if msg_id is not None:
            values["src_msg_id"] = msg_id
        cursor.execute(statement.sql, statement.parameters(values))
