"""Asterisk's app_voicemail_odbc on a message table, for the interop tests: the table layouts
it uses, its SQL issued the way it issues it, and audio it would record.

Every parameter is bound as a character string (SQL_CHAR, msgnum and origtime included), the
recording as SQL_LONGVARBINARY, one autocommitted statement at a time, and every value is read
back as text (fact sheet 1.7, AV@20 and 22).
"""

from __future__ import annotations

import array
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import cache
from itertools import count

import pyodbc
import pytest

from storage.audioformats import decode, detect_format, encode
from storage.messages import MessageStore
from storage.odbc import OdbcPool
from tests.dbbackends import Backend
from tests.helpers import BLOB_TYPE, ORIGTIME, SERIAL_KEY, SPOOL, TABLE_OPTIONS


@dataclass(frozen=True)
class Layout:
    """A message table Asterisk writes to, and which Asterisk version's INSERT it gets."""

    table: str
    macrocontext: bool  # Asterisk 20 writes the column; 22 dropped it
    legacy: bool  # doc/odbcstorage.txt's varchar origtime/duration, no (dir, msgnum) key

    def ddl(self, backend: str) -> str:
        macro = "macrocontext VARCHAR(80), " if self.macrocontext else ""
        if self.legacy:
            return (
                f"CREATE TABLE {self.table} ({SERIAL_KEY[backend]}, msgnum INTEGER, "
                f"dir VARCHAR(80), context VARCHAR(80), {macro}callerid VARCHAR(40), "
                "origtime VARCHAR(40), duration VARCHAR(20), flag VARCHAR(8), "
                "category VARCHAR(30), mailboxuser VARCHAR(80), mailboxcontext VARCHAR(80), "
                f"msg_id VARCHAR(40), recording {BLOB_TYPE[backend]}){TABLE_OPTIONS[backend]}"
            )
        return (
            f"CREATE TABLE {self.table} (dir VARCHAR(255) NOT NULL, msgnum INTEGER NOT NULL, "
            f"context VARCHAR(80), {macro}callerid VARCHAR(80), origtime INTEGER, "
            f"duration INTEGER, recording {BLOB_TYPE[backend]}, flag VARCHAR(30), "
            "category VARCHAR(30), mailboxuser VARCHAR(30), mailboxcontext VARCHAR(30), "
            f"msg_id VARCHAR(40), CONSTRAINT {self.table}_dir_msgnum PRIMARY KEY (dir, msgnum))"
            f"{TABLE_OPTIONS[backend]}"
        )


LAYOUTS = {
    "voicemail_messages-asterisk20": Layout("voicemail_messages", True, False),
    "voicemail_messages-asterisk22": Layout("voicemail_messages", False, False),
    "voicemessages-varchar": Layout("voicemessages", True, True),
    "voicemessages-varchar-no-macrocontext": Layout("voicemessages", False, True),
}


# --- audio ---------------------------------------------------------------------------------------


@cache
def tone(seconds: float, frequency: float) -> bytes:
    """8 kHz 16-bit mono PCM of a sine; whole 40 ms wav49 blocks, so lengths survive GSM."""
    samples = round(seconds * 8000)
    assert samples % 320 == 0, "use multiples of 40 ms"
    wave = (round(8000 * math.sin(2 * math.pi * frequency * i / 8000)) for i in range(samples))
    return array.array("h", wave).tobytes()


@cache
def wav49(seconds: float, frequency: float) -> bytes:
    """What Asterisk stores for format=wav49: the msgXXXX.WAV file (GSM 6.10 in WAV)."""
    return encode(tone(seconds, frequency), "wav49")


def pitch(pcm: bytes) -> float:
    """The frequency of a tone, from its zero crossings: what a listener would recognise."""
    samples = array.array("h")
    samples.frombytes(pcm)
    crossings = sum(1 for a, b in zip(samples, samples[1:], strict=False) if (a < 0) != (b < 0))
    return crossings / 2 / (len(samples) / 8000)


def assert_plays_as(recording: bytes, seconds: float, frequency: float) -> None:
    """The stored audio is wav49 and decodes to the recorded tone, sample for sample long."""
    assert detect_format(recording) == "wav49"
    pcm = decode(recording, "wav49")
    assert len(pcm) == len(tone(seconds, frequency))
    assert pitch(pcm) == pytest.approx(frequency, rel=0.02)


# --- Asterisk's side -----------------------------------------------------------------------------


class Asterisk:
    """app_voicemail_odbc on the same table: its SQL, its string parameters, its spool paths."""

    def __init__(
        self, connection: pyodbc.Connection, layout: Layout, first_msg_id: int = 0x1F00
    ) -> None:
        self.connection = connection
        self.table = layout.table
        self.macrocontext = layout.macrocontext
        self._counter = count(first_msg_id)

    @staticmethod
    def dir(context: str, mailbox: str, folder: str) -> str:
        """make_dir(): VM_SPOOL_DIR + context/mailbox/folder."""
        return f"{SPOOL}{context}/{mailbox}/{folder}"

    def msg_id(self, origtime: int) -> str:
        """generate_msg_id(): `%ld-%08x` with a per-process counter."""
        return f"{origtime}-{next(self._counter):08x}"

    def execute(self, sql: str, *params: str | bytes) -> pyodbc.Cursor:
        """One statement as ast_odbc_prepare_and_execute runs it: SQL_CHAR strings, binary audio."""
        cursor = self.connection.cursor()
        sizes = [
            (pyodbc.SQL_CHAR, max(1, len(p.encode())), 0)
            if isinstance(p, str)
            else (pyodbc.SQL_LONGVARBINARY, max(1, len(p)), 0)
            for p in params
        ]
        if sizes:
            cursor.setinputsizes(sizes)
        return cursor.execute(sql, *params)

    def store(
        self,
        folder_dir: str,
        msgnum: int,
        recording: bytes,
        *,
        mailboxuser: str,
        mailboxcontext: str,
        context: str = "",
        macrocontext: str = "",
        callerid: str = "",
        origtime: str = "0",
        duration: str = "0",
        flag: str = "",
        msg_id: str = "",
        category: str = "",
    ) -> None:
        """odbc_store_message: DELETE the slot, then INSERT in Asterisk's column order."""
        self.delete(folder_dir, msgnum)
        self.insert(
            folder_dir,
            msgnum,
            recording,
            mailboxuser=mailboxuser,
            mailboxcontext=mailboxcontext,
            context=context,
            macrocontext=macrocontext,
            callerid=callerid,
            origtime=origtime,
            duration=duration,
            flag=flag,
            msg_id=msg_id,
            category=category,
        )

    def delete(self, folder_dir: str, msgnum: int) -> None:
        self.execute(f"DELETE FROM {self.table} WHERE dir=? AND msgnum=?", folder_dir, str(msgnum))

    def insert(
        self,
        folder_dir: str,
        msgnum: int,
        recording: bytes,
        *,
        mailboxuser: str,
        mailboxcontext: str,
        context: str = "",
        macrocontext: str = "",
        callerid: str = "",
        origtime: str = "0",
        duration: str = "0",
        flag: str = "",
        msg_id: str = "",
        category: str = "",
    ) -> None:
        """STORE's INSERT: Asterisk's column order, macrocontext per version, category if set."""
        values: list[tuple[str, str | bytes]] = [
            ("dir", folder_dir),
            ("msgnum", str(msgnum)),
            ("recording", recording),
            ("context", context),
        ]
        if self.macrocontext:
            values.append(("macrocontext", macrocontext))
        values += [
            ("callerid", callerid),
            ("origtime", origtime),
            ("duration", duration),
            ("mailboxuser", mailboxuser),
            ("mailboxcontext", mailboxcontext),
            ("flag", flag),
            ("msg_id", msg_id),
        ]
        if category:
            values.append(("category", category))
        names = ",".join(name for name, _ in values)
        marks = ",".join("?" for _ in values)
        self.execute(
            f"INSERT INTO {self.table} ({names}) VALUES ({marks})", *(v for _, v in values)
        )

    def leave_voicemail(
        self,
        context: str,
        mailbox: str,
        folder: str,
        recording: bytes,
        *,
        callerid: str,
        duration: int,
        flag: str = "",
        category: str = "",
        origtime: int = ORIGTIME,
        caller_context: str = "from-internal",
        macrocontext: str = "",
    ) -> tuple[int, str]:
        """A deposit: msgnum = LAST_MSG_INDEX + 1, then STORE with the .txt's values."""
        folder_dir = self.dir(context, mailbox, folder)
        msgnum = self.last_msg_index(folder_dir) + 1
        msg_id = self.msg_id(origtime)
        self.store(
            folder_dir,
            msgnum,
            recording,
            mailboxuser=mailbox,
            mailboxcontext=context,
            context=caller_context,
            macrocontext=macrocontext,
            callerid=callerid,
            origtime=str(origtime),
            duration=str(duration),
            flag=flag,
            msg_id=msg_id,
            category=category,
        )
        return msgnum, msg_id

    def record_greeting(self, context: str, mailbox: str, kind: str, recording: bytes) -> None:
        """play_record_review's STORE(base path, -1): no .txt, so every field is empty."""
        self.store(
            self.dir(context, mailbox, kind),
            -1,
            recording,
            mailboxuser=mailbox,
            mailboxcontext=context,
        )

    def retrieve(self, folder_dir: str, msgnum: int) -> tuple[dict[str, str], bytes] | None:
        """odbc_retrieve_message: the .txt it would write (column=text, NULL category
        skipped) and the recording."""
        cursor = self.execute(
            f"SELECT * FROM {self.table} WHERE dir=? AND msgnum=?", folder_dir, str(msgnum)
        )
        names = [str(d[0]).lower() for d in cursor.description]
        rows = cursor.fetchall()
        if not rows:
            return None
        assert len(rows) == 1, f"{len(rows)} rows for {folder_dir} {msgnum}"
        txt: dict[str, str] = {}
        recording = b""
        for name, value in zip(names, rows[0], strict=True):
            if name == "recording":
                recording = bytes(value)
            elif name in ("dir", "msgnum") or (name == "category" and value is None):
                continue
            else:
                text = "" if value is None else str(value)
                assert len(text.encode()) < 80, f"{name}={text!r} overflows Asterisk's buffer"
                txt[name] = text
        return txt, recording

    def last_msg_index(self, folder_dir: str) -> int:
        row = self.execute(
            f"SELECT msgnum FROM {self.table} WHERE dir=? order by msgnum desc", folder_dir
        ).fetchone()
        return -1 if row is None else int(row[0])

    def count(self, folder_dir: str) -> int:
        return int(
            self.execute(f"SELECT COUNT(*) FROM {self.table} WHERE dir=?", folder_dir).fetchone()[0]
        )

    def exists(self, folder_dir: str, msgnum: int) -> bool:
        sql = f"SELECT COUNT(*) FROM {self.table} WHERE dir=? AND msgnum=?"
        return int(self.execute(sql, folder_dir, str(msgnum)).fetchone()[0]) > 0

    def inboxcount2(self, context: str, mailbox: str) -> tuple[int, int, int]:
        """(new, old, urgent): three literal queries, as the MWI code sends them."""
        counts = []
        for folder in ("INBOX", "Old", "Urgent"):
            folder_dir = self.dir(context, mailbox, folder)
            sql = f"SELECT COUNT(*) FROM {self.table} WHERE dir = '{folder_dir}'"
            counts.append(int(self.connection.execute(sql).fetchone()[0]))
        return counts[0], counts[1], counts[2]

    def messagecount_inbox(self, context: str, mailbox: str) -> int:
        inbox, urgent = self.dir(context, mailbox, "INBOX"), self.dir(context, mailbox, "Urgent")
        sql = f"SELECT COUNT(*) FROM {self.table} WHERE dir = '{inbox}' OR dir = '{urgent}'"
        return int(self.connection.execute(sql).fetchone()[0])

    def rename(
        self,
        src_dir: str,
        src_msgnum: int,
        mailboxuser: str,
        mailboxcontext: str,
        dst_dir: str,
        dst_msgnum: int,
    ) -> int:
        """odbc_rename_message (AV@20): the owner is part of the WHERE. Rows renamed."""
        self.execute(f"DELETE FROM {self.table} WHERE dir=? AND msgnum=?", dst_dir, str(dst_msgnum))
        sql = (
            f"UPDATE {self.table} SET dir=?, msgnum=? WHERE mailboxuser=? AND mailboxcontext=? "
            "AND dir=? AND msgnum=?"
        )
        cursor = self.execute(
            sql, dst_dir, str(dst_msgnum), mailboxuser, mailboxcontext, src_dir, str(src_msgnum)
        )
        return cursor.rowcount

    def copy(
        self,
        src_dir: str,
        src_msgnum: int,
        dst_dir: str,
        dst_msgnum: int,
        mailboxuser: str,
        mailboxcontext: str,
    ) -> None:
        """odbc_copy_message: INSERT ... SELECT, without category."""
        self.execute(f"DELETE FROM {self.table} WHERE dir=? AND msgnum=?", dst_dir, str(dst_msgnum))
        macro = "macrocontext," if self.macrocontext else ""
        sql = (
            f"INSERT INTO {self.table} (dir, msgnum, msg_id, context, {macro}callerid, "
            "origtime, duration, recording, flag, mailboxuser, mailboxcontext) "
            f"SELECT ?,?,msg_id,context,{macro}callerid,origtime,duration,recording,flag,?,? "
            f"FROM {self.table} WHERE dir=? AND msgnum=?"
        )
        self.execute(
            sql, dst_dir, str(dst_msgnum), mailboxuser, mailboxcontext, src_dir, str(src_msgnum)
        )

    def close_mailbox(self, folder_dir: str, deleted: set[int], owner: tuple[str, str]) -> None:
        """close_mailbox: RENAME the kept messages down to 0.., DELETE everything above."""
        last = self.last_msg_index(folder_dir)
        kept = 0
        for msgnum in range(last + 1):
            if msgnum in deleted or not self.exists(folder_dir, msgnum):
                continue
            if msgnum != kept:
                assert self.rename(folder_dir, msgnum, *owner, folder_dir, kept) == 1
            kept += 1
        for msgnum in range(kept, last + 1):
            self.execute(
                f"DELETE FROM {self.table} WHERE dir=? AND msgnum=?", folder_dir, str(msgnum)
            )


@asynccontextmanager
async def shared_table(
    backend: Backend, layout: Layout
) -> AsyncIterator[tuple[MessageStore, Asterisk]]:
    """A table made by hand in a fresh database, used by MessageStore and by 'Asterisk'."""
    connection = pyodbc.connect(backend.connection_string, autocommit=True, timeout=5)
    try:
        connection.execute(layout.ddl(backend.name))
        if layout.legacy:
            connection.execute(f"CREATE INDEX {layout.table}_dir ON {layout.table} (dir)")
        pool = OdbcPool(backend.connection_class(max_connections=2), retry_timeout=10)
        await pool.start()
        try:
            yield MessageStore(pool, layout.table, SPOOL), Asterisk(connection, layout)
        finally:
            await pool.close()
    finally:
        connection.close()
