"""Duplicate msgnums in a legacy message table, as two Asterisk servers racing leave them.

The old `voicemessages` layout has no (dir, msgnum) key, so two Asterisk servers sharing it can
both STORE the same msgnum. Renumbering, delete, copy and move must keep every one of those
messages, each under a number of its own.
"""

from __future__ import annotations

import pytest

from storage.audioformats import decode
from storage.messages import MessageStore
from tests.dbbackends import Backend
from tests.helpers import ORIGTIME, run
from tests.store_asterisk import LAYOUTS, Asterisk, Layout, pitch, shared_table, wav49

pytestmark = pytest.mark.timeout(120)

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
