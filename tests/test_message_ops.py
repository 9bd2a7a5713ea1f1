"""Message operations of the ODBC store on SQLite, PostgreSQL and MariaDB.

Messages are identified by msg_id and by a checksum of their audio, so a test can tell not just
how many messages a folder has but which ones, at which msgnum, with intact audio.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pyodbc
import pytest

from storage.messages import (
    MailboxFull,
    MessageInfo,
    MessageNotFound,
)
from storage.odbc import DatabaseError
from tests.dbbackends import Backend
from tests.helpers import (
    SPOOL,
    contents,
    deposit,
    digest,
    run,
    started_store,
)

pytestmark = pytest.mark.timeout(120)


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
