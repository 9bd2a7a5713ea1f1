"""Mailbox change events: the change log table read by id (all backends) and PostgreSQL
LISTEN/NOTIFY through psycopg, fed by NOTIFYs sent through ODBC in the changing transaction."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pyodbc
import pytest

from storage.changelog import (
    RESYNC,
    ChangeFollower,
    ChangeLog,
    MailboxChange,
    PgChangeListener,
    libpq_conninfo,
)
from storage.messages import MessageStore
from storage.schema import create_tables, storage_tables
from tests.dbbackends import Backend, fresh_database
from tests.helpers import SPOOL, deposit, run
from tests.test_outbox import Clock, started_pool

pytestmark = pytest.mark.timeout(120)

EVENT_WAIT = 10.0  # bound on waiting for one notification (not a timing assertion)


def test_changes_since_returns_the_mailboxes_changed_after_an_id(backend: Backend) -> None:
    async def scenario() -> None:
        async with started_pool(backend) as pool:
            await create_tables(pool, storage_tables())
            changelog = ChangeLog(pool)
            store = MessageStore(pool, "voicemessages", SPOOL, on_change=changelog.hook)
            follower = ChangeFollower(changelog)
            await follower.start_at_end()
            assert await follower.poll() == []
            await deposit(store, mailbox="1234")
            await deposit(store, mailbox="5678")
            rows, watermark = await changelog.changes_since(0)
            assert [(r.context, r.mailbox) for r in rows] == [
                ("default", "1234"),
                ("default", "5678"),
            ]
            assert watermark == rows[-1].id
            assert await changelog.changes_since(watermark) == ([], watermark)
            await store.copy(
                src_context="default",
                src_mailbox="1234",
                src_folder="INBOX",
                msgnum=0,
                dst_context="other",
                dst_mailbox="9000",
                dst_folder="INBOX",
            )
            # The copy's transaction names both mailboxes; each pair is handed out once.
            assert await follower.poll() == [
                ("default", "1234"),
                ("default", "5678"),
                ("other", "9000"),
            ]
            assert await follower.poll() == []

    run(scenario)


def test_a_follower_hands_out_rows_behind_an_uncommitted_id_when_they_commit(
    server_backend: Backend,
) -> None:
    """Ids are taken at INSERT: a transaction holding a lower id may commit after a higher
    one. The follower reports the higher one at once and the lower one when it commits."""

    async def scenario() -> None:
        async with started_pool(server_backend) as pool:
            await create_tables(pool, storage_tables())
            changelog = ChangeLog(pool)
            follower = ChangeFollower(changelog)
            slow = pyodbc.connect(server_backend.connection_string, autocommit=False)
            try:
                changelog.record_change(slow.cursor(), "default", "slow")  # id 1, open
                await pool.run(lambda c: changelog.record_change(c.cursor(), "default", "fast"))
                assert await follower.poll() == [("default", "fast")]
                assert follower.last_id == 0  # a younger hole below id 2
                assert await follower.poll() == []
                slow.commit()
            finally:
                slow.close()
            assert await follower.poll() == [("default", "slow")]
            assert follower.last_id == 2

    run(scenario)


def test_a_hole_older_than_the_grace_is_passed() -> None:
    clock = Clock(1000.0)
    changelog = ChangeLog(None, gap_grace=60, clock=clock)  # type: ignore[arg-type]
    rows = [MailboxChange(1, "c", "a", 990.0), MailboxChange(3, "c", "b", 995.0)]
    assert changelog._watermark(0, rows) == 1
    clock.now = 1056.0
    assert changelog._watermark(0, rows) == 3


def test_pruning_keeps_the_newest_row(backend: Backend) -> None:
    async def scenario() -> None:
        async with started_pool(backend) as pool:
            await create_tables(pool, storage_tables())
            clock = Clock()
            changelog = ChangeLog(pool, clock=clock)
            for mailbox in ("1", "2", "3"):
                await pool.run(lambda c, m=mailbox: changelog.record_change(c.cursor(), "d", m))
            clock.now += 3600
            assert await changelog.prune(older_than=60) == 2
            rows, _ = await changelog.changes_since(0)
            assert [r.mailbox for r in rows] == ["3"]
            await pool.run(lambda c: changelog.record_change(c.cursor(), "d", "4"))
            rows, _ = await changelog.changes_since(0)
            assert [r.id for r in rows] == [3, 4]  # ids keep growing after the prune

    run(scenario)


def test_libpq_conninfo_from_an_odbc_connection_string() -> None:
    odbc = "Driver=PostgreSQL Unicode;Server=127.0.0.1;Port=5432;Database=vm;UID=ast;PWD={a;b c};"
    assert libpq_conninfo(odbc) == "host=127.0.0.1 port=5432 dbname=vm user=ast password='a;b c'"
    with pytest.raises(ValueError, match="DSN"):
        libpq_conninfo("DSN=asterisk;UID=x")


# --- PostgreSQL LISTEN/NOTIFY --------------------------------------------------------------------


async def next_event(events: asyncio.Queue[tuple[str, str]]) -> tuple[str, str]:
    return await asyncio.wait_for(events.get(), EVENT_WAIT)


def test_postgresql_listener_hears_commits_on_another_connection_not_rollbacks(
    tmp_path: Path,
) -> None:
    async def scenario(backend: Backend) -> None:
        async with started_pool(backend) as pool:
            await create_tables(pool, storage_tables())
            changelog = ChangeLog(pool)
            store = MessageStore(pool, "voicemessages", SPOOL, on_change=changelog.hook)

            def record_then_fail(cursor: object, mailboxes: object) -> None:
                changelog.hook(cursor, mailboxes)  # type: ignore[arg-type]
                raise RuntimeError("rolled back after the NOTIFY")

            failing = MessageStore(pool, "voicemessages", SPOOL, on_change=record_then_fail)
            listener = PgChangeListener(
                libpq_conninfo(backend.connection_string), ping_interval=0.5
            )
            events: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

            async def consume() -> None:
                async for event in listener:
                    await events.put(event)

            task = asyncio.create_task(consume())
            try:
                await asyncio.wait_for(listener.listening.wait(), EVENT_WAIT)
                await deposit(store, mailbox="1234")
                assert await next_event(events) == ("default", "1234")
                with pytest.raises(RuntimeError):
                    await deposit(failing, mailbox="6666")
                await deposit(store, mailbox="5678")
                assert await next_event(events) == ("default", "5678")  # nothing for 6666

                # The listener's connection dies: it reconnects and says RESYNC first.
                assert backend.terminate_connections() >= 1
                assert await next_event(events) == RESYNC
                await asyncio.wait_for(listener.listening.wait(), EVENT_WAIT)
                await deposit(store, mailbox="7777")
                assert await next_event(events) == ("default", "7777")
                assert listener.reconnects == 1
            finally:
                listener.close()
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    with fresh_database("postgresql", tmp_path) as backend:
        run(lambda: scenario(backend))
