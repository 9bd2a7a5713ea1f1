"""Every message operation on message tables made by hand, as Asterisk's scripts and how-tos
left them: Asterisk 22 (no macrocontext), a site's extra columns, the old PostgreSQL how-to
(serial key, varchar origtime/duration, no flag/category/msg_id, no (dir, msgnum) key).
"""

from __future__ import annotations

import os

import pytest

from storage.messages import MessageStore
from tests.dbbackends import Backend
from tests.helpers import (
    BLOB_TYPE,
    READ_COLUMN,
    SERIAL_KEY,
    TABLE_OPTIONS,
    deposit,
    digest,
    run,
    started_store,
)

pytestmark = pytest.mark.timeout(120)


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
