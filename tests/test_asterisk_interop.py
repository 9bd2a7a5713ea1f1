"""One message table shared with Asterisk's app_voicemail_odbc, from both sides.

The Asterisk side is app_voicemail_odbc's own SQL (fact sheet 1.7, AV@20 and 22), issued the
way it issues it: every parameter bound as a character string (SQL_CHAR, msgnum and origtime
included), the recording as SQL_LONGVARBINARY, one autocommitted statement at a time, and
every value read back as text. Rows are written by hand with that SQL, exactly as Asterisk
leaves them (STORE's column order, greetings as msgnum -1 rows keyed by their base path,
category only when set, wav49 audio, a NULL msg_id from before Asterisk had one), and then
used through MessageStore; rows MessageStore writes are then read with Asterisk's SELECTs.

Table layouts, on SQLite, PostgreSQL and MariaDB:
- `voicemail_messages` as Asterisk's alembic creates it: Asterisk 20 (with `macrocontext`)
  and 22 (without; its INSERT no longer names the column).
- `voicemessages` as doc/odbcstorage.txt describes it: `origtime`/`duration` varchar, a
  `uniqueid` key and no (dir, msgnum) key, plus the flag/category/msg_id columns Asterisk 20's
  INSERT needs; with and without `macrocontext`.
"""

from __future__ import annotations

import array
import math
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import cache
from itertools import count
from typing import Any

import pyodbc
import pytest

from storage.audioformats import decode, detect_format, encode
from storage.messages import MessageStore, StoredMessage, new_msg_id
from storage.odbc import OdbcPool
from tests.dbbackends import Backend
from tests.helpers import BLOB_TYPE, ORIGTIME, SERIAL_KEY, SPOOL, TABLE_OPTIONS, run
from voicemail.app_voicemail import caller_id_string

pytestmark = pytest.mark.timeout(120)


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


@pytest.fixture(params=sorted(LAYOUTS))
def layout(request: pytest.FixtureRequest) -> Layout:
    return LAYOUTS[request.param]


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


def fields(message: StoredMessage | None) -> tuple[Any, ...]:
    assert message is not None
    return (
        message.callerid,
        message.origtime,
        message.duration,
        message.flag,
        message.category,
        message.msg_id,
        message.mailboxuser,
        message.mailboxcontext,
    )


# --- a database Asterisk wrote -------------------------------------------------------------------


def test_a_mailbox_asterisk_filled_is_counted_listed_and_played(
    backend: Backend, layout: Layout
) -> None:
    async def scenario() -> None:
        async with shared_table(backend, layout) as (store, asterisk):
            # 45 s of wav49 is 73 KB: more than a plain 64 KB BLOB would hold.
            long_id = asterisk.leave_voicemail(
                "default",
                "1234",
                "INBOX",
                wav49(45.0, 440),
                callerid='"Alice" <5551000>',
                duration=45,
                category="sales",
                caller_context="macro-stdexten",  # left from inside a Macro()
                macrocontext="from-internal",
            )[1]
            ids = [long_id]
            for i, callerid in enumerate(("5551001", "Bob", "Unknown"), start=1):
                msgnum, msg_id = asterisk.leave_voicemail(
                    "default",
                    "1234",
                    "INBOX",
                    wav49(2.0, 300 + 100 * i),
                    callerid=callerid,
                    duration=2,
                    origtime=ORIGTIME + i,
                )
                assert msgnum == i
                ids.append(msg_id)
            for _ in range(2):
                asterisk.leave_voicemail(
                    "default", "1234", "Old", wav49(1.0, 500), callerid="5551002", duration=1
                )
            asterisk.leave_voicemail(
                "default",
                "1234",
                "Urgent",
                wav49(1.0, 600),
                callerid="5551003",
                duration=1,
                flag="Urgent",
            )
            asterisk.leave_voicemail(
                "default", "1235", "INBOX", wav49(1.0, 700), callerid="5551004", duration=1
            )
            for i, kind in enumerate(("unavail", "busy", "greet", "temp")):
                asterisk.record_greeting("default", "1234", kind, wav49(1.2, 350 + 50 * i))

            # MWI: greetings and the neighbour's message are not counted.
            assert await store.counts("default", "1234") == (4, 2, 1)
            assert await store.mwi_counts([("default", "1234")]) == (5, 2)
            assert await store.mwi_counts([("default", "1234"), ("default", "1235")]) == (6, 2)
            assert await store.count("default", "1234", "Work") == 0
            assert await store.last_index("default", "1234", "INBOX") == 3

            listed = await store.list_messages("default", "1234", "INBOX")
            assert [(m.msgnum, m.msg_id) for m in listed] == list(enumerate(ids))
            assert [(m.callerid, m.origtime, m.duration) for m in listed] == [
                ('"Alice" <5551000>', ORIGTIME, 45),
                ("5551001", ORIGTIME + 1, 2),
                ("Bob", ORIGTIME + 2, 2),
                ("Unknown", ORIGTIME + 3, 2),
            ]
            assert [m.category for m in listed] == ["sales", None, None, None]
            assert {
                (m.flag, m.context, m.macrocontext, m.mailboxuser, m.mailboxcontext)
                for m in listed[1:]
            } == {("", "from-internal", "", "1234", "default")}
            macro = "from-internal" if layout.macrocontext else ""
            assert (listed[0].context, listed[0].macrocontext) == ("macro-stdexten", macro)

            first = await store.retrieve("default", "1234", "INBOX", 0)
            assert fields(first) == (
                '"Alice" <5551000>',
                ORIGTIME,
                45,
                "",
                "sales",
                ids[0],
                "1234",
                "default",
            )
            assert first is not None and first.recording == wav49(45.0, 440)
            assert_plays_as(first.recording, 45.0, 440)
            for i in (1, 2, 3):
                message = await store.retrieve("default", "1234", "INBOX", i)
                assert message is not None and message.msg_id == ids[i]
                assert_plays_as(message.recording, 2.0, 300 + 100 * i)
            urgent = await store.retrieve("default", "1234", "Urgent", 0)
            assert urgent is not None and (urgent.flag, urgent.duration) == ("Urgent", 1)
            assert_plays_as(urgent.recording, 1.0, 600)
            assert await store.retrieve("default", "1234", "INBOX", 4) is None

            for i, kind in enumerate(("unavail", "busy", "greet", "temp")):
                greeting = await store.retrieve_greeting("default", "1234", kind)
                assert greeting is not None
                assert (greeting.dir, greeting.msgnum) == (f"{SPOOL}default/1234/{kind}", -1)
                assert (greeting.callerid, greeting.origtime, greeting.duration) == ("", 0, 0)
                assert (greeting.msg_id, greeting.category) == ("", None)
                assert_plays_as(greeting.recording, 1.2, 350 + 50 * i)
            assert await store.retrieve_greeting("default", "1235", "unavail") is None

    run(scenario)


def test_deleting_from_a_folder_asterisk_wrote_renumbers_it_as_asterisk_would(
    backend: Backend, layout: Layout
) -> None:
    async def scenario() -> None:
        async with shared_table(backend, layout) as (store, asterisk):
            inbox = asterisk.dir("default", "1234", "INBOX")
            ids = [
                asterisk.leave_voicemail(
                    "default",
                    "1234",
                    "INBOX",
                    wav49(0.4, 300 + 100 * i),
                    callerid=f"55510{i}",
                    duration=i,
                )[1]
                for i in range(5)
            ]

            assert await store.delete_messages("default", "1234", "INBOX", [1, 3]) == 2
            listed = await store.list_messages("default", "1234", "INBOX")
            assert [(m.msgnum, m.msg_id, m.duration) for m in listed] == [
                (0, ids[0], 0),
                (1, ids[2], 2),
                (2, ids[4], 4),
            ]
            # What Asterisk sees when it next opens the folder: contiguous, no resequencing.
            assert asterisk.count(inbox) == 3 and asterisk.last_msg_index(inbox) == 2
            assert not asterisk.exists(inbox, 3) and not asterisk.exists(inbox, 4)
            seen = asterisk.retrieve(inbox, 1)
            assert seen is not None
            assert (seen[0]["msg_id"], seen[0]["callerid"]) == (ids[2], "555102")
            assert seen[1] == wav49(0.4, 500)

            # Both keep numbering the folder: Asterisk at LAST_MSG_INDEX + 1, we after it.
            assert (
                asterisk.leave_voicemail(
                    "default", "1234", "INBOX", wav49(0.4, 800), callerid="5559", duration=9
                )[0]
                == 3
            )
            ours = new_msg_id()
            stored = await store.store(
                context="default",
                mailbox="1234",
                folder="INBOX",
                recording=wav49(0.4, 900),
                callerid="5558",
                origtime=ORIGTIME,
                duration=8,
                caller_context="from-sip",
                msg_id=ours,
            )
            assert stored == 4

            # Asterisk's own close_mailbox over our row and its rows: RENAME finds them all.
            asterisk.close_mailbox(inbox, {0}, ("1234", "default"))
            listed = await store.list_messages("default", "1234", "INBOX")
            assert [m.msgnum for m in listed] == [0, 1, 2, 3]
            assert [m.msg_id for m in listed][-1] == ours
            last = await store.retrieve("default", "1234", "INBOX", 3)
            assert last is not None
            assert_plays_as(last.recording, 0.4, 900)

    run(scenario)


def test_copies_and_moves_of_messages_asterisk_wrote_keep_category_and_change_owner(
    backend: Backend, layout: Layout
) -> None:
    async def scenario() -> None:
        async with shared_table(backend, layout) as (store, asterisk):
            _, tagged = asterisk.leave_voicemail(
                "default",
                "1234",
                "INBOX",
                wav49(0.8, 440),
                callerid='"Carol" <5552000>',
                duration=1,
                flag="PRIORITY",
                category="support",
            )
            _, plain = asterisk.leave_voicemail(
                "default", "1234", "INBOX", wav49(0.8, 660), callerid="5552001", duration=1
            )

            copied = await store.copy(
                src_context="default",
                src_mailbox="1234",
                src_folder="INBOX",
                msgnum=0,
                dst_context="sales",
                dst_mailbox="2000",
                dst_folder="INBOX",
            )
            assert copied == 0
            copy = await store.retrieve("sales", "2000", "INBOX", 0)
            assert fields(copy) == (
                '"Carol" <5552000>',
                ORIGTIME,
                1,
                "PRIORITY",
                "support",
                tagged,
                "2000",
                "sales",
            )
            assert copy is not None
            assert_plays_as(copy.recording, 0.8, 440)
            plain_copy = await store.copy(
                src_context="default",
                src_mailbox="1234",
                src_folder="INBOX",
                msgnum=1,
                dst_context="sales",
                dst_mailbox="2000",
                dst_folder="INBOX",
            )
            copy = await store.retrieve("sales", "2000", "INBOX", plain_copy)
            assert copy is not None and (copy.category, copy.msg_id) == (None, plain)

            # The copies belong to the recipient, so Asterisk's RENAME (owner in its WHERE)
            # finds them; Asterisk sees the category we kept.
            recipient = asterisk.dir("sales", "2000", "INBOX")
            seen = asterisk.retrieve(recipient, 0)
            assert seen is not None and seen[0]["category"] == "support"
            assert "category" not in asterisk.retrieve(recipient, 1)[0]  # NULL, skipped
            assert asterisk.rename(recipient, 1, "2000", "sales", recipient, 7) == 1
            assert await store.resequence("sales", "2000", "INBOX") == 1

            moved = await store.move(
                src_context="default",
                src_mailbox="1234",
                src_folder="INBOX",
                msgnum=0,
                dst_context="default",
                dst_mailbox="1234",
                dst_folder="Old",
            )
            assert moved == 0
            old = await store.retrieve("default", "1234", "Old", 0)
            assert fields(old) == (
                '"Carol" <5552000>',
                ORIGTIME,
                1,
                "PRIORITY",
                "support",
                tagged,
                "1234",
                "default",
            )
            assert await store.counts("default", "1234") == (1, 1, 0)
            inbox = asterisk.dir("default", "1234", "INBOX")
            seen = asterisk.retrieve(inbox, 0)
            assert seen is not None and seen[0]["msg_id"] == plain
            assert asterisk.inboxcount2("default", "1234") == (1, 1, 0)

    run(scenario)


def test_a_message_asterisk_stored_without_msg_id_gets_one_that_stays(
    backend: Backend, layout: Layout
) -> None:
    """Rows from before Asterisk 11 have no msg_id; the first retrieve gives them one."""

    async def scenario() -> None:
        async with shared_table(backend, layout) as (store, asterisk):
            inbox = asterisk.dir("default", "1234", "INBOX")
            macro = ("macrocontext", "") if layout.macrocontext else None
            columns = [
                ("dir", inbox),
                ("msgnum", "0"),
                ("recording", wav49(0.8, 440)),
                ("context", "from-internal"),
                *([macro] if macro else []),
                ("callerid", "5553000"),
                ("origtime", str(ORIGTIME)),
                ("duration", "1"),
                ("mailboxuser", "1234"),
                ("mailboxcontext", "default"),
                ("flag", ""),
            ]
            names = ",".join(name for name, _ in columns)
            marks = ",".join("?" for _ in columns)
            asterisk.execute(
                f"INSERT INTO {layout.table} ({names}) VALUES ({marks})", *(v for _, v in columns)
            )
            asterisk.leave_voicemail(
                "default", "1234", "INBOX", wav49(0.8, 660), callerid="5553001", duration=1
            )
            seen = asterisk.retrieve(inbox, 0)
            assert seen is not None and seen[0]["msg_id"] == ""  # NULL, read as text

            first = await store.retrieve("default", "1234", "INBOX", 0)
            assert first is not None
            assert re.fullmatch(r"\d+-[0-9a-f]+", first.msg_id) and len(first.msg_id) <= 40
            assert_plays_as(first.recording, 0.8, 440)
            again = await store.retrieve("default", "1234", "INBOX", 0)
            assert again is not None and again.msg_id == first.msg_id
            seen = asterisk.retrieve(inbox, 0)
            assert seen is not None and seen[0]["msg_id"] == first.msg_id

            # Now that it has an id, renumbering follows it.
            assert await store.delete_messages("default", "1234", "INBOX", [1]) == 1
            listed = await store.list_messages("default", "1234", "INBOX")
            assert [(m.msgnum, m.msg_id) for m in listed] == [(0, first.msg_id)]

    run(scenario)


# --- what Asterisk reads of our rows -------------------------------------------------------------


def test_messages_we_store_are_what_asterisk_reads(backend: Backend, layout: Layout) -> None:
    async def scenario() -> None:
        async with shared_table(backend, layout) as (store, asterisk):
            deposits = [
                ("INBOX", caller_id_string("Alice", "5551000"), "", "sales"),
                ("INBOX", caller_id_string("", "5551001"), "PRIORITY", None),
                ("INBOX", caller_id_string("Bob", ""), "", None),
                ("Urgent", caller_id_string("", ""), "Urgent", None),
            ]
            ids = []
            for i, (folder, callerid, flag, category) in enumerate(deposits):
                msg_id = new_msg_id()
                ids.append(msg_id)
                await store.store(
                    context="default",
                    mailbox="1234",
                    folder=folder,
                    recording=wav49(0.8, 400 + 100 * i),
                    callerid=callerid,
                    origtime=ORIGTIME + i,
                    duration=7 + i,
                    caller_context="from-sip",
                    flag=flag,
                    category=category,
                    msg_id=msg_id,
                )
            await store.save_greeting("default", "1234", "unavail", wav49(1.2, 350))

            inbox = asterisk.dir("default", "1234", "INBOX")
            expected_callerids = ['"Alice" <5551000>', "5551001", "Bob"]
            for msgnum in range(3):
                seen = asterisk.retrieve(inbox, msgnum)
                assert seen is not None
                txt, recording = seen
                expected = {
                    "context": "from-sip",
                    "callerid": expected_callerids[msgnum],
                    "origtime": str(ORIGTIME + msgnum),
                    "duration": str(7 + msgnum),
                    "flag": deposits[msgnum][2],
                    "mailboxuser": "1234",
                    "mailboxcontext": "default",
                    "msg_id": ids[msgnum],
                }
                if layout.macrocontext:
                    expected["macrocontext"] = ""
                if deposits[msgnum][3]:
                    expected["category"] = deposits[msgnum][3]
                if layout.legacy:
                    assert txt.pop("uniqueid").isdigit()
                assert txt == expected
                assert recording == wav49(0.8, 400 + 100 * msgnum)
                assert_plays_as(recording, 0.8, 400 + 100 * msgnum)
            urgent = asterisk.retrieve(asterisk.dir("default", "1234", "Urgent"), 0)
            assert urgent is not None
            assert (urgent[0]["callerid"], urgent[0]["flag"]) == ("Unknown", "Urgent")

            # MWI and folder counts with Asterisk's literal SQL.
            assert asterisk.inboxcount2("default", "1234") == (3, 0, 1)
            assert asterisk.messagecount_inbox("default", "1234") == 4
            assert asterisk.last_msg_index(inbox) == 2
            assert asterisk.exists(inbox, 2) and not asterisk.exists(inbox, 3)

            greeting = asterisk.retrieve(asterisk.dir("default", "1234", "unavail"), -1)
            assert greeting is not None
            txt, recording = greeting
            txt.pop("uniqueid", None)
            assert {k: v for k, v in txt.items() if k not in ("mailboxuser", "mailboxcontext")} == {
                "context": "",
                **({"macrocontext": ""} if layout.macrocontext else {}),
                "callerid": "",
                "origtime": "0",
                "duration": "0",
                "flag": "",
                "msg_id": "",
            }
            assert (txt["mailboxuser"], txt["mailboxcontext"]) == ("1234", "default")
            assert_plays_as(recording, 1.2, 350)

            # Asterisk deposits after us, renumbers our rows (the owner is in RENAME's WHERE)
            # and copies one to another mailbox.
            assert (
                asterisk.leave_voicemail(
                    "default", "1234", "INBOX", wav49(0.4, 900), callerid="5559", duration=1
                )[0]
                == 3
            )
            asterisk.close_mailbox(inbox, {1}, ("1234", "default"))
            listed = await store.list_messages("default", "1234", "INBOX")
            assert [m.msg_id for m in listed][:2] == [ids[0], ids[2]]
            assert [m.msgnum for m in listed] == [0, 1, 2]
            other = asterisk.dir("default", "1235", "INBOX")
            asterisk.copy(inbox, 0, other, 0, "1235", "default")
            copy = await store.retrieve("default", "1235", "INBOX", 0)
            assert fields(copy) == (
                '"Alice" <5551000>',
                ORIGTIME,
                7,
                "",
                None,
                ids[0],
                "1235",
                "default",
            )

    run(scenario)


def test_greetings_replaced_by_either_side_stay_one_row(backend: Backend, layout: Layout) -> None:
    """STORE deletes before it inserts, and so do we: a legacy table has no key to help."""

    def rows(asterisk: Asterisk, kind: str) -> int:
        return asterisk.count(asterisk.dir("default", "1234", kind))

    async def scenario() -> None:
        async with shared_table(backend, layout) as (store, asterisk):
            asterisk.record_greeting("default", "1234", "busy", wav49(0.4, 300))
            await store.save_greeting("default", "1234", "busy", wav49(0.4, 400))
            assert rows(asterisk, "busy") == 1
            seen = asterisk.retrieve(asterisk.dir("default", "1234", "busy"), -1)
            assert seen is not None and seen[1] == wav49(0.4, 400)
            asterisk.record_greeting("default", "1234", "busy", wav49(0.4, 500))
            assert rows(asterisk, "busy") == 1
            greeting = await store.retrieve_greeting("default", "1234", "busy")
            assert greeting is not None
            assert_plays_as(greeting.recording, 0.4, 500)

            # The temporary greeting: Asterisk erases it with a DELETE, we with delete_greeting.
            asterisk.record_greeting("default", "1234", "temp", wav49(0.4, 600))
            assert await store.delete_greeting("default", "1234", "temp") is True
            assert asterisk.retrieve(asterisk.dir("default", "1234", "temp"), -1) is None
            await store.save_greeting("default", "1234", "temp", wav49(0.4, 700))
            asterisk.execute(
                f"DELETE FROM {asterisk.table} WHERE dir=? AND msgnum=?",
                asterisk.dir("default", "1234", "temp"),
                "-1",
            )
            assert await store.retrieve_greeting("default", "1234", "temp") is None
            assert await store.counts("default", "1234") == (0, 0, 0)

    run(scenario)


LEGACY_LAYOUTS = ["voicemessages-varchar", "voicemessages-varchar-no-macrocontext"]


def race_two_asterisk_servers(
    asterisk: Asterisk, layout: Layout, other_first_msg_id: int = 0x9000
) -> None:
    """Append 5 INBOX messages numbered n, n+1, n+1, n+2, n+3: two Asterisk servers racing on
    a table without a (dir, msgnum) key both STORE n+1 (README: Asterisk's lock file is per
    host)."""
    other_server = Asterisk(asterisk.connection, layout, first_msg_id=other_first_msg_id)
    inbox = asterisk.dir("default", "1234", "INBOX")
    asterisk.leave_voicemail("default", "1234", "INBOX", wav49(0.4, 300), callerid="1", duration=1)
    # Both servers take LAST_MSG_INDEX + 1; each DELETEs the slot, then INSERTs.
    taken = asterisk.last_msg_index(inbox) + 1
    racing = []
    for server in (asterisk, other_server):
        assert server.last_msg_index(inbox) + 1 == taken
        server.delete(inbox, taken)
        racing.append((server, server.msg_id(ORIGTIME)))
    for (server, msg_id), frequency in zip(racing, (400, 500), strict=True):
        server.insert(
            inbox,
            taken,
            wav49(0.4, frequency),
            mailboxuser="1234",
            mailboxcontext="default",
            callerid="2",
            origtime=str(ORIGTIME),
            duration="1",
            msg_id=msg_id,
        )
    for frequency in (600, 700):
        asterisk.leave_voicemail(
            "default", "1234", "INBOX", wav49(0.4, frequency), callerid="1", duration=1
        )


async def audio_by_msgnum(store: MessageStore) -> list[tuple[int, str, bytes]]:
    listed = await store.list_messages("default", "1234", "INBOX")
    found = []
    for info in listed:
        message = await store.retrieve("default", "1234", "INBOX", info.msgnum)
        assert message is not None
        found.append((info.msgnum, info.msg_id, message.recording))
    return found


@pytest.mark.parametrize("layout_name", LEGACY_LAYOUTS)
def test_duplicate_msgnums_left_by_two_asterisk_servers_are_renumbered_apart(
    backend: Backend, layout_name: str
) -> None:
    """Renumbering must give every message its own number again, not pile them onto one."""
    layout = LAYOUTS[layout_name]

    async def scenario() -> None:
        async with shared_table(backend, layout) as (store, asterisk):
            race_two_asterisk_servers(asterisk, layout)
            listed = await store.list_messages("default", "1234", "INBOX")
            assert [m.msgnum for m in listed] == [0, 1, 1, 2, 3]
            ids_before = sorted(m.msg_id for m in listed)

            assert await store.resequence("default", "1234", "INBOX") == 3
            listed = await store.list_messages("default", "1234", "INBOX")
            assert [m.msgnum for m in listed] == [0, 1, 2, 3, 4]
            assert sorted(m.msg_id for m in listed) == ids_before
            assert await store.delete_messages("default", "1234", "INBOX", [0]) == 1
            listed = await store.list_messages("default", "1234", "INBOX")
            assert [m.msgnum for m in listed] == [0, 1, 2, 3]

    run(scenario)


@pytest.mark.parametrize("layout_name", LEGACY_LAYOUTS)
def test_deleting_next_to_duplicate_msgnums_keeps_both_duplicates_with_their_audio(
    backend: Backend, layout_name: str
) -> None:
    """The compaction after a delete renumbers the two rows sharing msgnum 1 apart too."""
    layout = LAYOUTS[layout_name]

    async def scenario() -> None:
        async with shared_table(backend, layout) as (store, asterisk):
            race_two_asterisk_servers(asterisk, layout)
            listed = await store.list_messages("default", "1234", "INBOX")
            kept_ids = sorted(m.msg_id for m in listed[1:])
            assert await store.delete_messages("default", "1234", "INBOX", [0]) == 1
            after = await audio_by_msgnum(store)
            assert [msgnum for msgnum, _, _ in after] == [0, 1, 2, 3]
            assert sorted(msg_id for _, msg_id, _ in after) == kept_ids
            pitches = [pitch(decode(recording, "wav49")) for _, _, recording in after]
            assert sorted(round(p, -2) for p in pitches) == [400, 500, 600, 700]

    run(scenario)


@pytest.mark.parametrize("layout_name", LEGACY_LAYOUTS)
def test_a_message_sharing_its_msgnum_is_deleted_copied_and_moved_alone(
    backend: Backend, layout_name: str
) -> None:
    """Picking msgnum 1 of 0, 1, 1, 2, 3 acts on one of the two rows there, never on both."""
    layout = LAYOUTS[layout_name]

    async def scenario() -> None:
        async with shared_table(backend, layout) as (store, asterisk):
            race_two_asterisk_servers(asterisk, layout)
            ids = [m.msg_id for m in await store.list_messages("default", "1234", "INBOX")]
            owner = {"src_context": "default", "src_mailbox": "1234", "src_folder": "INBOX"}
            to_old = {"dst_context": "default", "dst_mailbox": "1234", "dst_folder": "Old"}

            assert await store.copy(**owner, msgnum=1, **to_old) == 0
            assert await store.count("default", "1234", "INBOX") == 5
            copied = await store.list_messages("default", "1234", "Old")
            assert len(copied) == 1 and copied[0].msg_id in ids[1:3]

            assert await store.move(**owner, msgnum=1, **to_old) == 1
            inbox = await audio_by_msgnum(store)
            assert [msgnum for msgnum, _, _ in inbox] == [0, 1, 2, 3]
            moved = (await store.list_messages("default", "1234", "Old"))[1]
            assert moved.msg_id in ids[1:3]
            assert sorted(msg_id for _, msg_id, _ in inbox) == sorted(
                msg_id for msg_id in ids if msg_id != moved.msg_id
            )
            old = await store.retrieve("default", "1234", "Old", 1)
            assert old is not None and old.msg_id == moved.msg_id

            race_two_asterisk_servers(asterisk, layout, 0xA000)  # 0..3, then 4, 5, 5, 6, 7
            listed = await store.list_messages("default", "1234", "INBOX")
            assert [m.msgnum for m in listed] == [0, 1, 2, 3, 4, 5, 5, 6, 7]
            assert await store.delete_messages("default", "1234", "INBOX", [5]) == 1
            listed = await store.list_messages("default", "1234", "INBOX")
            assert [m.msgnum for m in listed] == list(range(8))
            assert len({m.msg_id for m in listed}) == 8

    run(scenario)
