"""Message operations of the ODBC store on SQLite, PostgreSQL and MariaDB.

Messages are identified by msg_id and by a checksum of their audio, so a test can tell not just
how many messages a folder has but which ones, at which msgnum, with intact audio.
"""

from __future__ import annotations

import asyncio
import os
import random
from typing import Any

import pyodbc
import pytest

from storage.messages import (
    MailboxFull,
    MessageInfo,
    MessageNotFound,
    MessageStore,
    new_msg_id,
)
from storage.odbc import ConnectionClass, DatabaseError, OdbcPool
from tests.dbbackends import Backend
from tests.helpers import (
    BLOB_TYPE,
    READ_COLUMN,
    SERIAL_KEY,
    SPOOL,
    TABLE_OPTIONS,
    contents,
    digest,
    message_fields,
    report,
    run,
    run_processes,
    started_store,
)

pytestmark = pytest.mark.timeout(120)


async def deposit(
    store: MessageStore, audio: bytes | None = None, **overrides: Any
) -> tuple[int, str, bytes]:
    """Leave a message; returns (msgnum, msg_id, audio)."""
    audio = os.urandom(random.randint(1_000, 6_000)) if audio is None else audio
    fields = message_fields(audio, **overrides)
    return await store.store(**fields), fields["msg_id"], audio


# --- counting and listing ------------------------------------------------------------------------


def test_counts_give_new_old_urgent_and_mwi_sums_inbox_and_urgent(backend: Backend) -> None:
    async def scenario() -> None:
        async with started_store(backend) as store:
            for folder, times in (("INBOX", 3), ("Old", 2), ("Urgent", 1), ("Work", 4)):
                for _ in range(times):
                    await deposit(store, folder=folder)
            await deposit(store, mailbox="1235")
            await deposit(store, mailbox="1235", folder="Old")
            await deposit(store, mailbox="1234", context="other")
            await store.save_greeting("default", "1234", "unavail", b"hello")

            assert await store.counts("default", "1234") == (3, 2, 1)
            assert await store.counts("default", "1235") == (1, 1, 0)
            assert await store.counts("default", "9999") == (0, 0, 0)
            both = [("default", "1234"), ("default", "1235")]
            assert await store.mwi_counts(both) == (3 + 1 + 1, 2 + 1)
            assert await store.mwi_counts([("default", "1234")]) == (4, 2)
            assert await store.mwi_counts([]) == (0, 0)

    run(scenario)


def test_list_messages_reports_every_column_but_the_audio_in_msgnum_order(
    backend: Backend,
) -> None:
    async def scenario() -> None:
        async with started_store(backend) as store:
            assert await store.list_messages("default", "1234", "INBOX") == []
            _, first, _ = await deposit(store, category="sales", flag="PRIORITY")
            _, second, _ = await deposit(store, callerid="Unknown", origtime=1_700_000_100)
            listed = await store.list_messages("default", "1234", "INBOX")
            assert listed == [
                MessageInfo(
                    dir=f"{SPOOL}default/1234/INBOX",
                    msgnum=0,
                    context="from-internal",
                    macrocontext="",
                    callerid='"Alice" <5551000>',
                    origtime=1_700_000_000,
                    duration=7,
                    flag="PRIORITY",
                    category="sales",
                    mailboxuser="1234",
                    mailboxcontext="default",
                    msg_id=first,
                ),
                MessageInfo(
                    dir=f"{SPOOL}default/1234/INBOX",
                    msgnum=1,
                    context="from-internal",
                    macrocontext="",
                    callerid="Unknown",
                    origtime=1_700_000_100,
                    duration=7,
                    flag="",
                    category=None,
                    mailboxuser="1234",
                    mailboxcontext="default",
                    msg_id=second,
                ),
            ]

    run(scenario)


# --- delete with compaction, resequence ---------------------------------------------------------


def test_delete_messages_compacts_the_folder_to_0_to_n_minus_1(backend: Backend) -> None:
    async def scenario() -> None:
        async with started_store(backend) as store:
            left = [await deposit(store) for _ in range(8)]
            await deposit(store, folder="Old")
            expected = [(msg_id, digest(audio)) for _, msg_id, audio in left]

            assert await store.delete_messages("default", "1234", "INBOX", [1, 4, 7, 99]) == 3
            survivors = [expected[i] for i in (0, 2, 3, 5, 6)]
            assert await contents(store, "default", "1234", "INBOX") == [
                (n, msg_id, check) for n, (msg_id, check) in enumerate(survivors)
            ]
            assert await store.last_index("default", "1234", "INBOX") == 4

            assert await store.delete_messages("default", "1234", "INBOX", [0]) == 1
            assert await store.delete_messages("default", "1234", "INBOX", [4, 5]) == 0
            assert await store.delete_messages("default", "1234", "INBOX", []) == 0
            survivors = survivors[1:]
            assert await contents(store, "default", "1234", "INBOX") == [
                (n, msg_id, check) for n, (msg_id, check) in enumerate(survivors)
            ]
            assert await store.count("default", "1234", "Old") == 1  # other folders untouched

            # A deposit after compaction goes to the end of the compacted folder.
            msgnum, _, _ = await deposit(store)
            assert msgnum == 4

    run(scenario)


def test_resequence_closes_gaps_left_by_plain_deletes(backend: Backend) -> None:
    async def scenario() -> None:
        async with started_store(backend) as store:
            left = [await deposit(store) for _ in range(6)]
            await store.delete("default", "1234", "INBOX", 0)
            await store.delete("default", "1234", "INBOX", 3)
            assert await store.resequence("default", "1234", "INBOX") == 4
            assert await store.resequence("default", "1234", "INBOX") == 0
            assert await store.resequence("default", "1234", "Work") == 0
            assert await contents(store, "default", "1234", "INBOX") == [
                (n, left[i][1], digest(left[i][2])) for n, i in enumerate((1, 2, 4, 5))
            ]

    run(scenario)


# --- copy and move --------------------------------------------------------------------------------


def test_copy_keeps_msg_id_category_and_flag_and_belongs_to_the_destination(
    backend: Backend,
) -> None:
    async def scenario() -> None:
        async with started_store(backend) as store:
            await deposit(store)
            _, msg_id, audio = await deposit(
                store, category="sales", flag="Urgent", callerid="Bob <200>", duration=42
            )
            await deposit(store, mailbox="300", context="sales")
            await deposit(store, mailbox="300", context="sales")

            copied = await store.copy(
                src_context="default",
                src_mailbox="1234",
                src_folder="INBOX",
                msgnum=1,
                dst_context="sales",
                dst_mailbox="300",
                dst_folder="INBOX",
            )
            assert copied == 2
            source = await store.retrieve("default", "1234", "INBOX", 1)
            copy = await store.retrieve("sales", "300", "INBOX", 2)
            assert source is not None and copy is not None
            assert (copy.msg_id, copy.category, copy.flag, copy.recording) == (
                msg_id,
                "sales",
                "Urgent",
                audio,
            )
            assert (copy.callerid, copy.duration, copy.origtime, copy.context) == (
                "Bob <200>",
                42,
                1_700_000_000,
                "from-internal",
            )
            assert (copy.dir, copy.mailboxuser, copy.mailboxcontext) == (
                f"{SPOOL}sales/300/INBOX",
                "300",
                "sales",
            )
            assert source.recording == audio and source.mailboxuser == "1234"
            assert await store.counts("default", "1234") == (2, 0, 0)

            # A copy into the same folder lands at its end, with the same msg_id.
            again = await store.copy(
                src_context="default",
                src_mailbox="1234",
                src_folder="INBOX",
                msgnum=1,
                dst_context="default",
                dst_mailbox="1234",
                dst_folder="INBOX",
            )
            assert again == 2
            assert [m for _, m, _ in await contents(store, "default", "1234", "INBOX")][1:] == [
                msg_id,
                msg_id,
            ]

    run(scenario)


def test_move_appends_to_the_destination_and_compacts_the_source(backend: Backend) -> None:
    async def scenario() -> None:
        async with started_store(backend) as store:
            a, b, c = [await deposit(store) for _ in range(3)]
            old = await deposit(store, folder="Old")

            moved = await store.move(
                src_context="default",
                src_mailbox="1234",
                src_folder="INBOX",
                msgnum=0,
                dst_context="default",
                dst_mailbox="1234",
                dst_folder="Old",
            )
            assert moved == 1
            assert await contents(store, "default", "1234", "INBOX") == [
                (0, b[1], digest(b[2])),
                (1, c[1], digest(c[2])),
            ]
            assert await contents(store, "default", "1234", "Old") == [
                (0, old[1], digest(old[2])),
                (1, a[1], digest(a[2])),
            ]

            # Within one folder a move sends the message to the end.
            moved = await store.move(
                src_context="default",
                src_mailbox="1234",
                src_folder="INBOX",
                msgnum=0,
                dst_context="default",
                dst_mailbox="1234",
                dst_folder="INBOX",
            )
            assert moved == 1
            assert [m for _, m, _ in await contents(store, "default", "1234", "INBOX")] == [
                c[1],
                b[1],
            ]

            with pytest.raises(MessageNotFound):
                await store.move(
                    src_context="default",
                    src_mailbox="1234",
                    src_folder="INBOX",
                    msgnum=5,
                    dst_context="default",
                    dst_mailbox="1234",
                    dst_folder="Old",
                )
            with pytest.raises(MessageNotFound):
                await store.copy(
                    src_context="default",
                    src_mailbox="1234",
                    src_folder="Work",
                    msgnum=0,
                    dst_context="default",
                    dst_mailbox="1234",
                    dst_folder="Old",
                )

    run(scenario)


_REFUSE_RENUMBERING = {
    "postgresql": [
        "CREATE FUNCTION refuse_renumbering() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "RAISE EXCEPTION 'renumbering refused' USING ERRCODE = '42501'; END $$",
        "CREATE TRIGGER poisoned BEFORE UPDATE ON voicemessages FOR EACH ROW "
        "WHEN (OLD.msg_id = 'poisoned') EXECUTE FUNCTION refuse_renumbering()",
    ],
    "mysql": [
        "CREATE TRIGGER poisoned BEFORE UPDATE ON voicemessages FOR EACH ROW BEGIN "
        "IF OLD.msg_id = 'poisoned' THEN "
        "SIGNAL SQLSTATE '42000' SET MESSAGE_TEXT = 'renumbering refused'; END IF; END",
    ],
    "sqlite": [
        "CREATE TRIGGER poisoned BEFORE UPDATE ON voicemessages "
        "WHEN OLD.msg_id = 'poisoned' BEGIN SELECT RAISE(ABORT, 'renumbering refused'); END",
    ],
}


def test_a_move_that_fails_at_its_last_step_leaves_both_folders_as_they_were(
    backend: Backend,
) -> None:
    """A trigger refuses the source's renumbering, after the copy and the delete ran."""

    async def scenario() -> None:
        async with started_store(backend) as store:
            first = await deposit(store)
            poisoned = await deposit(store, msg_id="poisoned")
            work = await deposit(store, folder="Work")

            def add_trigger(connection: pyodbc.Connection) -> None:
                for sql in _REFUSE_RENUMBERING[backend.name]:
                    connection.execute(sql)

            await store.pool.run(add_trigger)
            with pytest.raises(DatabaseError, match="renumbering refused"):
                await store.move(
                    src_context="default",
                    src_mailbox="1234",
                    src_folder="INBOX",
                    msgnum=0,
                    dst_context="default",
                    dst_mailbox="1234",
                    dst_folder="Work",
                )
            assert await contents(store, "default", "1234", "INBOX") == [
                (0, first[1], digest(first[2])),
                (1, "poisoned", digest(poisoned[2])),
            ]
            assert await contents(store, "default", "1234", "Work") == [
                (0, work[1], digest(work[2]))
            ]

    run(scenario)


# --- maxmsg --------------------------------------------------------------------------------------


def test_a_full_folder_refuses_deposits_copies_and_moves(backend: Backend) -> None:
    async def scenario() -> None:
        async with started_store(backend) as store:
            await deposit(store, maxmsg=2)
            await deposit(store, maxmsg=2)
            with pytest.raises(MailboxFull) as full:
                await deposit(store, maxmsg=2)
            assert (full.value.maxmsg, full.value.dir) == (2, f"{SPOOL}default/1234/INBOX")
            with pytest.raises(MailboxFull):
                await deposit(store, mailbox="1235", maxmsg=0)  # maxmsg=0: greetings only
            assert await store.count("default", "1234", "INBOX") == 2
            assert await store.count("default", "1235", "INBOX") == 0

            await deposit(store, folder="Old")
            before = await contents(store, "default", "1234", "Old")
            into_full = {
                "src_context": "default",
                "src_mailbox": "1234",
                "src_folder": "Old",
                "msgnum": 0,
                "dst_context": "default",
                "dst_mailbox": "1234",
                "dst_folder": "INBOX",
                "maxmsg": 2,
            }
            with pytest.raises(MailboxFull):
                await store.copy(**into_full)
            with pytest.raises(MailboxFull):
                await store.move(**into_full)
            assert await store.count("default", "1234", "INBOX") == 2
            assert await contents(store, "default", "1234", "Old") == before
            assert await store.move(**{**into_full, "maxmsg": 3}) == 2

    run(scenario)


def test_concurrent_deposits_never_overfill_a_folder(backend: Backend) -> None:
    async def scenario() -> None:
        async with started_store(backend, max_connections=4) as store:
            outcomes = await asyncio.gather(
                *(deposit(store, maxmsg=5) for _ in range(12)), return_exceptions=True
            )
            stored = [o for o in outcomes if isinstance(o, tuple)]
            refused = [o for o in outcomes if isinstance(o, MailboxFull)]
            assert (len(stored), len(refused)) == (5, 7), outcomes
            assert sorted(msgnum for msgnum, _, _ in stored) == [0, 1, 2, 3, 4]

    run(scenario)


# --- greetings -----------------------------------------------------------------------------------


def test_greetings_are_rows_with_msgnum_minus_1_as_asterisk_leaves_them(backend: Backend) -> None:
    async def scenario() -> None:
        async with started_store(backend) as store:
            assert await store.retrieve_greeting("default", "1234", "unavail") is None
            unavail = os.urandom(50_000)
            await store.save_greeting("default", "1234", "unavail", unavail)
            greeting = await store.retrieve_greeting("default", "1234", "unavail")
            assert greeting is not None
            assert greeting.recording == unavail
            assert (greeting.dir, greeting.msgnum) == (f"{SPOOL}default/1234/unavail", -1)
            assert (greeting.context, greeting.macrocontext, greeting.callerid) == ("", "", "")
            assert (greeting.origtime, greeting.duration, greeting.flag) == (0, 0, "")
            assert (greeting.msg_id, greeting.category) == ("", None)
            assert (greeting.mailboxuser, greeting.mailboxcontext) == ("1234", "default")

            def raw(connection: pyodbc.Connection) -> list[Any]:
                return connection.execute(
                    "SELECT msg_id, category, msgnum FROM voicemessages WHERE dir = ?",
                    f"{SPOOL}default/1234/unavail",
                ).fetchall()

            assert [tuple(row) for row in await store.pool.run(raw)] == [("", None, -1)]

            replacement = os.urandom(20_000)
            await store.save_greeting("default", "1234", "unavail", replacement)
            greeting = await store.retrieve_greeting("default", "1234", "unavail")
            assert greeting is not None and greeting.recording == replacement
            assert len(await store.pool.run(raw)) == 1

            await store.save_greeting("default", "1234", "temp", b"back on monday")
            assert await store.counts("default", "1234") == (0, 0, 0)
            assert await store.delete_greeting("default", "1234", "temp") is True
            assert await store.delete_greeting("default", "1234", "temp") is False
            assert await store.retrieve_greeting("default", "1234", "temp") is None
            assert await store.retrieve_greeting("default", "1234", "unavail") is not None
            with pytest.raises(ValueError):
                await store.save_greeting("default", "1234", "INBOX", b"x")

    run(scenario)


# --- awkward values -------------------------------------------------------------------------------

AWKWARD_CONTEXT = 'O\'Brien "x" 1%;_ Zoë'
AWKWARD_MAILBOX = "12_4%'; 日本"
LOOKALIKE_MAILBOX = "12a4%'; 日本"  # what `12_4%...` would match as a LIKE pattern
AWKWARD_CALLERID = '"O\'Brien; 100%" <_5_> ✓'


def test_quotes_percent_semicolon_underscore_and_unicode_are_stored_and_found_exactly(
    backend: Backend,
) -> None:
    async def scenario() -> None:
        async with started_store(backend) as store:
            here = {"context": AWKWARD_CONTEXT, "mailbox": AWKWARD_MAILBOX}
            _, first, audio = await deposit(store, callerid=AWKWARD_CALLERID, **here)
            await deposit(store, **here)
            await deposit(store, context=AWKWARD_CONTEXT, mailbox=LOOKALIKE_MAILBOX)
            await store.save_greeting(AWKWARD_CONTEXT, AWKWARD_MAILBOX, "greet", b"name")

            assert await store.counts(AWKWARD_CONTEXT, AWKWARD_MAILBOX) == (2, 0, 0)
            assert await store.mwi_counts([(AWKWARD_CONTEXT, AWKWARD_MAILBOX)]) == (2, 0)
            listed = await store.list_messages(AWKWARD_CONTEXT, AWKWARD_MAILBOX, "INBOX")
            assert listed[0].dir == f"{SPOOL}{AWKWARD_CONTEXT}/{AWKWARD_MAILBOX}/INBOX"
            assert (listed[0].callerid, listed[0].mailboxuser, listed[0].mailboxcontext) == (
                AWKWARD_CALLERID,
                AWKWARD_MAILBOX,
                AWKWARD_CONTEXT,
            )

            def stored_dirs(connection: pyodbc.Connection) -> list[str]:
                rows = connection.execute(
                    "SELECT DISTINCT dir FROM voicemessages WHERE mailboxuser = ?",
                    AWKWARD_MAILBOX,
                ).fetchall()
                return sorted(row[0] for row in rows)

            assert await store.pool.run(stored_dirs) == [
                f"{SPOOL}{AWKWARD_CONTEXT}/{AWKWARD_MAILBOX}/INBOX",
                f"{SPOOL}{AWKWARD_CONTEXT}/{AWKWARD_MAILBOX}/greet",
            ]

            copied = await store.copy(
                src_context=AWKWARD_CONTEXT,
                src_mailbox=AWKWARD_MAILBOX,
                src_folder="INBOX",
                msgnum=0,
                dst_context=AWKWARD_CONTEXT,
                dst_mailbox=LOOKALIKE_MAILBOX,
                dst_folder="Old",
            )
            assert copied == 0
            copy = await store.retrieve(AWKWARD_CONTEXT, LOOKALIKE_MAILBOX, "Old", 0)
            assert copy is not None
            assert (copy.msg_id, copy.recording, copy.mailboxuser) == (
                first,
                audio,
                LOOKALIKE_MAILBOX,
            )

            assert await store.delete_messages(AWKWARD_CONTEXT, AWKWARD_MAILBOX, "INBOX", [0]) == 1
            assert await store.counts(AWKWARD_CONTEXT, AWKWARD_MAILBOX) == (1, 0, 0)
            assert await store.counts(AWKWARD_CONTEXT, LOOKALIKE_MAILBOX) == (1, 1, 0)
            greeting = await store.retrieve_greeting(AWKWARD_CONTEXT, AWKWARD_MAILBOX, "greet")
            assert greeting is not None and greeting.recording == b"name"

    run(scenario)


# --- tables made by hand: Asterisk 22, extra columns, the old PostgreSQL how-to -------------------

HAND_MADE_TABLES = {
    # Asterisk 22/master alembic: macrocontext dropped.
    "asterisk22": (
        "voicemail_messages",
        "CREATE TABLE voicemail_messages (dir VARCHAR(255) NOT NULL, msgnum INTEGER NOT NULL, "
        "context VARCHAR(80), callerid VARCHAR(80), origtime INTEGER, duration INTEGER, "
        "recording {blob}, flag VARCHAR(30), category VARCHAR(30), mailboxuser VARCHAR(30), "
        "mailboxcontext VARCHAR(30), msg_id VARCHAR(40), "
        "CONSTRAINT voicemail_messages_dir_msgnum PRIMARY KEY (dir, msgnum)){options}",
    ),
    # Asterisk 20 alembic plus columns of a site's own (label, read).
    "extra_columns": (
        "voicemail_messages",
        "CREATE TABLE voicemail_messages (dir VARCHAR(255) NOT NULL, msgnum INTEGER NOT NULL, "
        "context VARCHAR(80), macrocontext VARCHAR(80), callerid VARCHAR(80), "
        "origtime INTEGER, duration INTEGER, recording {blob}, flag VARCHAR(30), "
        "category VARCHAR(30), mailboxuser VARCHAR(30), mailboxcontext VARCHAR(30), "
        "msg_id VARCHAR(40), label VARCHAR(30), {read}, PRIMARY KEY (dir, msgnum)){options}",
    ),
    # doc/voicemail_odbc_postgresql.txt (1.2/1.4): a serial key, varchar origtime/duration, no
    # flag/category/msg_id, and no (dir, msgnum) key at all (bytea instead of the `lo` type).
    "legacy": (
        "voicemessages",
        "CREATE TABLE voicemessages ({serial}, msgnum INTEGER, dir VARCHAR(80), "
        "context VARCHAR(80), macrocontext VARCHAR(80), callerid VARCHAR(40), "
        "origtime VARCHAR(40), duration VARCHAR(20), mailboxuser VARCHAR(80), "
        "mailboxcontext VARCHAR(80), recording {blob}, label VARCHAR(30), {read}){options}",
    ),
}


@pytest.mark.parametrize("layout", sorted(HAND_MADE_TABLES))
def test_every_operation_works_on_tables_made_by_hand(backend: Backend, layout: str) -> None:
    table, template = HAND_MADE_TABLES[layout]
    ddl = template.format(
        blob=BLOB_TYPE[backend.name],
        options=TABLE_OPTIONS[backend.name],
        read=READ_COLUMN[backend.name],
        serial=SERIAL_KEY[backend.name],
    )

    async def audio_of(store: MessageStore, mailbox: str, folder: str) -> list[str]:
        listed = await store.list_messages("default", mailbox, folder)
        assert [info.msgnum for info in listed] == list(range(len(listed)))
        checks = []
        for info in listed:
            message = await store.retrieve("default", mailbox, folder, info.msgnum)
            assert message is not None
            checks.append(digest(message.recording))
        return checks

    async def scenario() -> None:
        async with started_store(backend, ddl, table) as store:
            audio = [os.urandom(3_000 + i) for i in range(5)]
            for i, clip in enumerate(audio):
                assert (await deposit(store, clip, duration=i + 1))[0] == i
            await deposit(store, b"urgent", folder="Urgent")
            a, b, c, d, e = (digest(clip) for clip in audio)
            assert await store.counts("default", "1234") == (5, 0, 1)
            assert await store.mwi_counts([("default", "1234")]) == (6, 0)

            listed = await store.list_messages("default", "1234", "INBOX")
            assert [(i.origtime, i.duration, i.callerid) for i in listed] == [
                (1_700_000_000, n, '"Alice" <5551000>') for n in range(1, 6)
            ]
            message = await store.retrieve("default", "1234", "INBOX", 2)
            assert message is not None and message.recording == audio[2]
            assert (message.origtime, message.duration, message.mailboxuser) == (
                1_700_000_000,
                3,
                "1234",
            )

            copied = await store.copy(
                src_context="default",
                src_mailbox="1234",
                src_folder="INBOX",
                msgnum=1,
                dst_context="default",
                dst_mailbox="1235",
                dst_folder="INBOX",
            )
            assert copied == 0
            copy = await store.retrieve("default", "1235", "INBOX", 0)
            assert copy is not None and copy.recording == audio[1]
            assert (copy.mailboxuser, copy.duration) == ("1235", 2)

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
            assert await audio_of(store, "1234", "INBOX") == [b, c, d, e]
            assert await audio_of(store, "1234", "Old") == [a]

            assert await store.delete_messages("default", "1234", "INBOX", [1]) == 1
            assert await audio_of(store, "1234", "INBOX") == [b, d, e]
            await store.delete("default", "1234", "INBOX", 0)
            assert await store.resequence("default", "1234", "INBOX") == 2
            assert await audio_of(store, "1234", "INBOX") == [d, e]
            assert (await deposit(store, audio[0]))[0] == 2
            assert await audio_of(store, "1234", "INBOX") == [d, e, a]

            await store.save_greeting("default", "1234", "busy", b"busy greeting")
            await store.save_greeting("default", "1234", "busy", b"new busy greeting")
            greeting = await store.retrieve_greeting("default", "1234", "busy")
            assert greeting is not None and greeting.recording == b"new busy greeting"
            assert await store.delete_greeting("default", "1234", "busy") is True
            assert await store.retrieve_greeting("default", "1234", "busy") is None
            assert await store.counts("default", "1234") == (3, 1, 1)

    run(scenario)


# --- reruns after a lost commit acknowledgement -------------------------------------------------


class LostReplyPool(OdbcPool):
    """Every unit of work commits, then runs again: what the pool does when the connection
    breaks after the server committed but before the client heard so."""

    async def run(self, work: Any, *, retry_for: float | None = None) -> Any:
        await super().run(work, retry_for=retry_for)
        return await super().run(work, retry_for=retry_for)


def test_an_operation_run_again_after_its_commit_does_its_work_once(backend: Backend) -> None:
    async def scenario() -> None:
        async with started_store(backend, pool_class=LostReplyPool) as store:
            left = [await deposit(store) for _ in range(4)]
            assert [msgnum for msgnum, _, _ in left] == [0, 1, 2, 3]
            ids = [msg_id for _, msg_id, _ in left]

            assert await store.delete_messages("default", "1234", "INBOX", [1]) == 1
            assert [m for _, m, _ in await contents(store, "default", "1234", "INBOX")] == [
                ids[0],
                ids[2],
                ids[3],
            ]
            copied = await store.copy(
                src_context="default",
                src_mailbox="1234",
                src_folder="INBOX",
                msgnum=0,
                dst_context="default",
                dst_mailbox="1234",
                dst_folder="Work",
            )
            assert copied == 0
            assert await store.count("default", "1234", "Work") == 1
            moved = await store.move(
                src_context="default",
                src_mailbox="1234",
                src_folder="INBOX",
                msgnum=1,
                dst_context="default",
                dst_mailbox="1234",
                dst_folder="Old",
            )
            assert moved == 0
            assert [m for _, m, _ in await contents(store, "default", "1234", "INBOX")] == [
                ids[0],
                ids[3],
            ]
            assert [m for _, m, _ in await contents(store, "default", "1234", "Old")] == [ids[2]]

    run(scenario)


# --- concurrency ----------------------------------------------------------------------------------


def test_two_servers_copying_into_one_folder_at_once_never_collide(backend: Backend) -> None:
    """Two pools (two servers) forward messages into mailbox 2000 at the same moment."""

    async def scenario() -> None:
        async with (
            started_store(backend, max_connections=3) as server_a,
            started_store(backend, max_connections=3) as server_b,
        ):
            sources = {
                (server, mailbox): [await deposit(server, mailbox=mailbox) for _ in range(2)]
                for server, mailbox in ((server_a, "1234"), (server_b, "1235"))
            }
            await deposit(server_a, mailbox="2000")

            async def forward(server: MessageStore, mailbox: str, msgnum: int) -> tuple[int, str]:
                new = await server.copy(
                    src_context="default",
                    src_mailbox=mailbox,
                    src_folder="INBOX",
                    msgnum=msgnum,
                    dst_context="default",
                    dst_mailbox="2000",
                    dst_folder="INBOX",
                )
                return new, sources[(server, mailbox)][msgnum][1]

            results = await asyncio.gather(
                *(forward(server_a, "1234", i % 2) for i in range(10)),
                *(forward(server_b, "1235", i % 2) for i in range(10)),
            )
            assert sorted(new for new, _ in results) == list(range(1, 21))
            in_folder = await contents(server_a, "default", "2000", "INBOX")
            assert [msgnum for msgnum, _, _ in in_folder] == list(range(21))
            by_msgnum = {msgnum: (msg_id, check) for msgnum, msg_id, check in in_folder}
            audio_of = {
                msg_id: digest(audio) for left in sources.values() for _, msg_id, audio in left
            }
            for new, msg_id in results:
                assert by_msgnum[new] == (msg_id, audio_of[msg_id])

    run(scenario)


PROCESSES = 4
DEPOSITS_PER_PROCESS = 50
DELETES = 50


def _deposit_and_delete(
    connection_string: str, isolation: str, label: str, deletes: int, barrier: Any, results: Any
) -> None:
    """One server process: its own pool, 50 deposits and some deletes into mailbox 1234.

    Meanwhile it keeps listing the folder: every committed state must be numbered 0..N-1 (a
    later compaction would hide a gap that a racing deposit left, so the end state is not enough).
    Reports {msg_id: audio checksum} written, how many deletes removed a message, how many
    listings it took and the gapped ones it saw.
    """

    async def work() -> tuple[dict[str, str], int, int, list[list[int]]]:
        connection_class = ConnectionClass(
            label, connection_string, max_connections=4, isolation=isolation
        )
        pool = OdbcPool(connection_class)
        await pool.start()
        try:
            store = MessageStore(pool, "voicemessages", SPOOL)
            written: dict[str, str] = {}
            removed = 0

            async def one_deposit() -> None:
                await asyncio.sleep(random.uniform(0, 2.0))
                audio = os.urandom(random.randint(2_000, 24_000))
                msg_id = new_msg_id()
                written[msg_id] = digest(audio)
                await deposit(store, audio, msg_id=msg_id, callerid=label)

            async def one_delete() -> None:
                nonlocal removed
                await asyncio.sleep(random.uniform(0.2, 2.5))
                while (count := await store.count("default", "1234", "INBOX")) == 0:
                    await asyncio.sleep(0.05)
                chosen = random.randrange(count)
                gone = await store.delete_messages("default", "1234", "INBOX", [chosen])
                removed += gone  # not `removed += await ...`: that reads removed before awaiting

            listings = 0
            gapped: list[list[int]] = []
            done = asyncio.Event()

            async def watch() -> None:
                nonlocal listings
                while not done.is_set():
                    listed = await store.list_messages("default", "1234", "INBOX")
                    msgnums = [info.msgnum for info in listed]
                    listings += 1
                    if msgnums != list(range(len(msgnums))):
                        gapped.append(msgnums)
                    await asyncio.sleep(0.01)

            async def deposits_and_deletes() -> None:
                await asyncio.gather(
                    *(one_deposit() for _ in range(DEPOSITS_PER_PROCESS)),
                    *(one_delete() for _ in range(deletes)),
                )
                done.set()

            await asyncio.to_thread(barrier.wait, 60)  # every process connected: go together
            await asyncio.gather(deposits_and_deletes(), watch())
            return written, removed, listings, gapped
        finally:
            await pool.close()

    report(results, label, work)


@pytest.mark.parametrize("isolation", ["read_committed", "repeatable_read", "serializable"])
def test_four_processes_depositing_and_deleting_keep_one_folder_contiguous_and_intact(
    backend: Backend, isolation: str
) -> None:
    """200 deposits and 50 deletes with compaction from 4 server processes on one mailbox.

    On PostgreSQL and MariaDB these are four servers sharing a database; on SQLite, four
    processes on one database file. Each res_odbc isolation level is tried: the folder lock
    must work whatever snapshot rules the transactions follow.
    """
    if backend.name == "sqlite" and isolation != "read_committed":
        pytest.skip("SQLite is serializable whatever res_odbc asks for")

    async def create() -> None:
        async with started_store(backend):
            pass

    asyncio.run(create())
    shares = [DELETES // PROCESSES + (i < DELETES % PROCESSES) for i in range(PROCESSES)]
    outcome = run_processes(
        _deposit_and_delete,
        [
            (backend.connection_string, isolation, f"server-{i}", shares[i])
            for i in range(PROCESSES)
        ],
        timeout=90,
    )
    assert all(isinstance(result, tuple) for result in outcome.values()), outcome
    written: dict[str, str] = {}
    removed = listings = 0
    gapped: list[list[int]] = []
    for process_written, process_removed, process_listings, process_gapped in outcome.values():
        written.update(process_written)
        removed += process_removed
        listings += process_listings
        gapped += process_gapped
    assert len(written) == PROCESSES * DEPOSITS_PER_PROCESS
    assert removed > DELETES // 2  # most deletes found their message
    assert listings > 50 and gapped == []

    async def check() -> None:
        async with started_store(backend) as store:
            in_folder = await contents(store, "default", "1234", "INBOX")
            assert [msgnum for msgnum, _, _ in in_folder] == list(range(len(in_folder)))
            assert len(in_folder) == PROCESSES * DEPOSITS_PER_PROCESS - removed
            msg_ids = [msg_id for _, msg_id, _ in in_folder]
            assert len(set(msg_ids)) == len(msg_ids)
            for _, msg_id, check in in_folder:
                assert written[msg_id] == check

    asyncio.run(check())
