"""The server's mailbox change feed (voicemail/mwi_feed.py) on real databases: what another
server commits arrives as changed(mailbox, context); greetings arrive as nothing; the poll's
counts of all watched mailboxes take one query."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from storage.changelog import ChangeLog
from storage.conffile import ConfigError
from storage.messages import MWI_CHUNK, MessageStore
from storage.odbc import OdbcPool
from storage.schema import create_tables, storage_tables
from tests.dbbackends import Backend, fresh_database
from tests.helpers import SPOOL, deposit, run
from tests.test_config_voicemail import settings as load
from tests.test_outbox import started_pool
from voicemail.mwi_feed import MwiFeed, follow_interval, listener_conninfo

pytestmark = pytest.mark.timeout(120)

EVENT_WAIT = 10.0  # bound on waiting for one change (not a timing assertion)


class Server:
    """What one server has for the feed: its own pool, store with the change hook, feed."""

    def __init__(self, pool: OdbcPool, *, follow_ms: int = 50, keep: float = 600.0) -> None:
        self.pool = pool
        self.changelog = ChangeLog(pool)
        self.store = MessageStore(pool, "voicemessages", SPOOL, on_change=self.changelog.hook)
        self.changes: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self.resyncs = 0
        self.feed = MwiFeed(
            self.changelog,
            lambda mailbox, context: self.changes.put_nowait((mailbox, context)),
            self._resync,
            conninfo=listener_conninfo(pool.backend, pool.connection_class.connection_string),
            follow_interval=follow_ms / 1000,
            prune_interval=0.2,
            keep=keep,
        )

    def _resync(self) -> None:
        self.resyncs += 1

    async def next_change(self) -> tuple[str, str]:
        return await asyncio.wait_for(self.changes.get(), EVENT_WAIT)

    async def quiet(self, seconds: float = 0.5) -> list[tuple[str, str]]:
        """What arrives within `seconds` (to show that nothing does)."""
        await asyncio.sleep(seconds)
        found = []
        while not self.changes.empty():
            found.append(self.changes.get_nowait())
        return found


@asynccontextmanager
async def two_servers(backend: Backend, **options: object) -> AsyncIterator[tuple[Server, Server]]:
    pools = [OdbcPool(backend.connection_class(name=n), retry_timeout=10) for n in "ab"]
    for pool in pools:
        await pool.start()
    try:
        await create_tables(pools[0], storage_tables())
        a, b = (Server(pool, **options) for pool in pools)  # type: ignore[arg-type]
        await a.feed.start()
        await b.feed.start()
        try:
            yield a, b
        finally:
            await a.feed.stop()
            await b.feed.stop()
    finally:
        for pool in pools:
            await pool.close()


def test_a_deposit_move_and_delete_on_a_reach_b_and_greetings_do_not(backend: Backend) -> None:
    async def scenario() -> None:
        async with two_servers(backend) as (a, b):
            assert b.feed.mode == ("listen" if backend.name == "postgresql" else "follow")
            await deposit(a.store, mailbox="1000")
            assert await b.next_change() == ("1000", "default")
            await a.store.move(
                src_context="default",
                src_mailbox="1000",
                src_folder="INBOX",
                msgnum=0,
                dst_context="default",
                dst_mailbox="1000",
                dst_folder="Old",
            )
            assert await b.next_change() == ("1000", "default")
            await a.store.delete_messages("default", "1000", "Old", [0])
            assert await b.next_change() == ("1000", "default")
            # Greetings change no lamp: no change row, no event.
            before = len(backend.sql("SELECT id FROM mailbox_changes"))
            for kind in ("unavail", "busy", "greet", "temp"):
                await a.store.save_greeting("default", "1000", kind, b"RIFF greeting")
            assert await a.store.delete_greeting("default", "1000", "temp")
            assert len(backend.sql("SELECT id FROM mailbox_changes")) == before
            assert await b.quiet() == []
            # A sees its own changes too (its recount then finds nothing new to send).
            assert set(await a.quiet(0)) == {("1000", "default")}
            await deposit(b.store, mailbox="2000", context="other")
            assert await a.next_change() == ("2000", "other")

    run(scenario)


def test_a_copy_into_two_mailboxes_names_both(backend: Backend) -> None:
    async def scenario() -> None:
        async with two_servers(backend) as (a, b):
            await deposit(a.store, mailbox="1000")
            assert await b.next_change() == ("1000", "default")
            await a.store.copy(
                src_context="default",
                src_mailbox="1000",
                src_folder="INBOX",
                msgnum=0,
                dst_context="default",
                dst_mailbox="1001",
                dst_folder="INBOX",
            )
            assert {await b.next_change(), await b.next_change()} == {
                ("1000", "default"),
                ("1001", "default"),
            }

    run(scenario)


def test_old_change_rows_are_pruned_and_the_feed_goes_on(backend: Backend) -> None:
    async def scenario() -> None:
        async with two_servers(backend, keep=0.0) as (a, b):
            for mailbox in ("1", "2", "3"):
                await deposit(a.store, mailbox=mailbox)
                assert await b.next_change() == (mailbox, "default")
            for _ in range(100):  # the prune runs every 0.2 s
                if len(backend.sql("SELECT id FROM mailbox_changes")) == 1:
                    break
                await asyncio.sleep(0.1)
            assert len(backend.sql("SELECT id FROM mailbox_changes")) == 1  # the newest stays
            await deposit(a.store, mailbox="4")
            assert await b.next_change() == ("4", "default")

    run(scenario)


def test_postgresql_reconnect_asks_for_a_recount(tmp_path: Path) -> None:
    async def scenario(backend: Backend) -> None:
        async with two_servers(backend) as (a, b):
            assert b.feed.mode == "listen"
            assert b.feed.listener is not None
            assert backend.terminate_connections() >= 1  # the pools reconnect by themselves
            for _ in range(100):
                if b.resyncs:
                    break
                await asyncio.sleep(0.1)
            assert b.resyncs == 1
            await asyncio.wait_for(b.feed.listener.listening.wait(), EVENT_WAIT)
            await deposit(a.store, mailbox="1000")
            assert await b.next_change() == ("1000", "default")

    with fresh_database("postgresql", tmp_path) as backend:
        run(lambda: scenario(backend))


def test_postgresql_through_a_dsn_follows_the_table_and_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="voicemail.mwi_feed"):
        assert listener_conninfo("postgresql", "DSN=asterisk;UID=ast") is None
    assert "MWI feed: cannot LISTEN" in caplog.text
    assert "reading the change log table instead" in caplog.text
    assert listener_conninfo("mysql", "Driver=MariaDB;Database=x") is None
    assert listener_conninfo("postgresql", "Driver=x;Server=h;Database=vm;UID=u") == (
        "host=h dbname=vm user=u"
    )


def test_changelogpollms_is_ours_checked_and_defaults_to_200_ms() -> None:
    assert follow_interval({}) == 0.2
    settings = load("[general]\nchangelogpollms=250\nexternnotify=/bin/true\nsmdienable=yes\n")
    assert follow_interval(settings.general) == 0.25
    assert not [w for w in settings.warnings if "changelogpollms" in w or "externnotify" in w]
    assert [w for w in settings.warnings if '"smdienable": not implemented' in w]
    with pytest.raises(ConfigError, match="changelogpollms"):
        load("[general]\nchangelogpollms=0\n")


def test_counts_of_all_watched_mailboxes_take_one_query_per_chunk(backend: Backend) -> None:
    async def scenario() -> None:
        async with started_pool(backend) as pool:
            await create_tables(pool, storage_tables())
            a = Server(pool)  # its feed is not started: only the counts use the pool
            await deposit(a.store, mailbox="1000")
            await deposit(a.store, mailbox="1000", folder="Urgent")
            await deposit(a.store, mailbox="1000", folder="Old")
            await deposit(a.store, mailbox="1001", folder="Old")
            await deposit(a.store, mailbox="1001", folder="Work")  # not counted
            runs = 0
            real_run = a.pool.run

            async def counting_run(work: object) -> object:
                nonlocal runs
                runs += 1
                return await real_run(work)  # type: ignore[arg-type]

            a.pool.run = counting_run  # type: ignore[method-assign]
            few = [("default", "1000"), ("default", "1001"), ("default", "1002")]
            assert await a.store.mwi_counts_each([*few, ("default", "1000")]) == {
                ("default", "1000"): (2, 1),
                ("default", "1001"): (0, 1),
                ("default", "1002"): (0, 0),
            }
            assert runs == 1
            runs = 0
            many = [("default", f"{2000 + i}") for i in range(MWI_CHUNK + 10)] + few
            each = await a.store.mwi_counts_each(many)
            assert runs == 2  # MWI_CHUNK mailboxes a query
            assert len(each) == len(many)
            assert each[("default", "1000")] == (2, 1)
            assert sum(new + old for new, old in each.values()) == 4

    run(scenario)


def test_the_poll_counts_each_mailbox_as_the_database_compares_its_dir(backend: Backend) -> None:
    """The poll's grouped counts must agree with the one-mailbox count of a REGISTER or a
    change event, or a lamp would flip at every poll: also where MariaDB's collation takes
    `Abc` for `abc` and `café` for `cafe`."""

    async def scenario() -> None:
        async with started_pool(backend) as pool:
            await create_tables(pool, storage_tables())
            a = Server(pool)
            await deposit(a.store, mailbox="Abc")
            await deposit(a.store, mailbox="Abc", folder="Old")
            await deposit(a.store, mailbox="café")
            await deposit(a.store, mailbox="1000", folder="Urgent")
            watched_sets = [
                [("default", "1000"), ("default", "abc")],  # stored in another case
                [("default", "Abc"), ("default", "ABC"), ("default", "1000")],  # asked in two
                [("default", "cafe"), ("default", "café"), ("default", "1000")],  # not ASCII
                [("default", "Abc"), ("default", "1000"), ("default", "1001")],  # grouped
            ]
            for watched in watched_sets:
                each = await a.store.mwi_counts_each(watched)
                for key in watched:
                    assert each[key] == await a.store.mwi_counts([key]), (watched, key)
            grouped = await a.store.mwi_counts_each(watched_sets[-1])
            assert grouped == {
                ("default", "Abc"): (1, 1),
                ("default", "1000"): (1, 0),
                ("default", "1001"): (0, 0),
            }

    run(scenario)


def test_a_feed_stops_cleanly(backend: Backend) -> None:
    async def scenario() -> None:
        async with two_servers(backend) as (a, b):
            tasks = list(b.feed._tasks)
        assert tasks and all(task.done() for task in tasks)
        assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

    run(scenario)
