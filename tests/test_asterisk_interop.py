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

The Asterisk side is in tests/store_asterisk.py; the duplicate msgnums two racing Asterisk
servers leave in the legacy layout are tested in tests/test_store_legacy_duplicates.py.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from storage.messages import StoredMessage, new_msg_id
from tests.dbbackends import Backend
from tests.helpers import ORIGTIME, SPOOL, run
from tests.store_asterisk import (
    LAYOUTS,
    Asterisk,
    Layout,
    assert_plays_as,
    shared_table,
    wav49,
)
from voicemail.app_voicemail import caller_id_string

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=sorted(LAYOUTS))
def layout(request: pytest.FixtureRequest) -> Layout:
    return LAYOUTS[request.param]


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
