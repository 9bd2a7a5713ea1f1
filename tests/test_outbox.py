"""The durable outbox on SQLite, PostgreSQL and MariaDB: rows written with the message (or with
its spool file), claimed exactly once by concurrent servers, retried with backoff, failed for
good on a 5xx."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from storage.messages import MessageStore
from storage.odbc import ConnectionClass, OdbcPool
from storage.outbox import Backoff, Outbox, OutboxItem
from storage.schema import create_tables, storage_tables
from storage.spool import SpoolFlusher
from storage.spool_files import PendingMessage, Spool
from tests.dbbackends import Backend, tcp_proxy
from tests.helpers import SPOOL, message_fields, run
from tests.server import run_cli, write_config

pytestmark = pytest.mark.timeout(180)

PENDING_FIELDS = (
    "msg_id",
    "context",
    "mailbox",
    "recording",
    "callerid",
    "origtime",
    "duration",
    "caller_context",
)
ITEMS = (
    OutboxItem("email", "alice@example.com", '{"template": "deposit"}'),
    OutboxItem("webhook", "http://127.0.0.1:9/hook", '{"event": "deposit"}'),
)


class Clock:
    """Unix time the test moves by hand (leases and backoff without sleeping)."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def started_pool(backend: Backend, max_connections: int = 2) -> AsyncIterator[OdbcPool]:
    pool = OdbcPool(backend.connection_class(max_connections=max_connections), retry_timeout=10)
    await pool.start()
    try:
        yield pool
    finally:
        await pool.close()


async def init_tables(backend: Backend) -> None:
    async with started_pool(backend) as pool:
        await create_tables(pool, storage_tables())


def outbox_rows(backend: Backend) -> list[dict[str, object]]:
    return backend.sql(
        "SELECT kind, context, mailbox, msg_id, recipient, payload, state, attempts "
        "FROM outbox ORDER BY kind"
    )


def message_count(backend: Backend) -> int:
    return int(backend.sql("SELECT COUNT(*) AS n FROM voicemessages")[0]["n"])


# --- the table ----------------------------------------------------------------------------------


def test_db_init_creates_the_outbox_and_the_change_log(backend: Backend, tmp_path: Path) -> None:
    config = write_config(tmp_path / "etc", backend)
    init = run_cli("db", "init", "-C", str(config))
    assert init.returncode == 0, init.stdout + init.stderr
    for table, columns in (
        (
            "outbox",
            "id kind context mailbox msg_id recipient payload state attempts next_attempt "
            "claimed_by claimed_until last_error created sent_at",
        ),
        ("mailbox_changes", "id context mailbox changed_at"),
    ):
        assert backend.sql(f"SELECT {', '.join(columns.split())} FROM {table}") == []
    check = run_cli("db", "check", "-C", str(config))
    assert check.returncode == 0, check.stdout + check.stderr


# --- enqueueing ---------------------------------------------------------------------------------


def test_outbox_rows_commit_and_roll_back_with_their_message(backend: Backend) -> None:
    async def scenario() -> None:
        await init_tables(backend)
        async with started_pool(backend) as pool:
            outbox = Outbox(pool)
            store = MessageStore(pool, "voicemessages", SPOOL, outbox=outbox)
            fields = message_fields(b"audio" * 100)
            await store.store(**fields, outbox=ITEMS)
            rows = outbox_rows(backend)
            assert [(r["kind"], r["recipient"], r["state"]) for r in rows] == [
                ("email", "alice@example.com", "pending"),
                ("webhook", "http://127.0.0.1:9/hook", "pending"),
            ]
            assert {(r["context"], r["mailbox"], r["msg_id"]) for r in rows} == {
                ("default", "1234", fields["msg_id"])
            }
            assert rows[0]["payload"] == '{"template": "deposit"}'

            def fail_after_the_inserts(cursor: object, mailboxes: object) -> None:
                raise RuntimeError("the transaction fails after message and outbox inserts")

            failing = MessageStore(
                pool, "voicemessages", SPOOL, outbox=outbox, on_change=fail_after_the_inserts
            )
            with pytest.raises(RuntimeError):
                await failing.store(**message_fields(b"other" * 100), outbox=ITEMS)
            assert message_count(backend) == 1
            assert len(outbox_rows(backend)) == 2

    run(scenario)


def test_a_second_enqueue_of_the_same_notification_adds_nothing(backend: Backend) -> None:
    async def scenario() -> None:
        await init_tables(backend)
        async with started_pool(backend) as pool:
            outbox = Outbox(pool)
            store = MessageStore(pool, "voicemessages", SPOOL, outbox=outbox)
            fields = message_fields(b"audio" * 100)
            await store.store(**fields, outbox=ITEMS)
            await store.store(**fields, outbox=ITEMS)  # a retried deposit: the same message
            identity = {"context": "default", "mailbox": "1234", "msg_id": fields["msg_id"]}
            await outbox.enqueue(**identity, items=ITEMS)
            await outbox.enqueue(**identity, items=[ITEMS[0], OutboxItem("pager", "p@x.org")])
            assert message_count(backend) == 1
            assert [r["kind"] for r in outbox_rows(backend)] == ["email", "pager", "webhook"]
            assert await outbox.pending_count() == 3

    run(scenario)


def test_an_outbox_item_is_checked() -> None:
    with pytest.raises(ValueError, match="kind"):
        OutboxItem("fax", "x")
    with pytest.raises(ValueError, match="recipient"):
        OutboxItem("email", "")
    with pytest.raises(ValueError, match="not an outbox item"):
        OutboxItem.from_json({"kind": "email"})


# --- claiming -----------------------------------------------------------------------------------


async def fill(outbox: Outbox, count: int) -> None:
    items = [OutboxItem("email", f"user{i}@example.com") for i in range(count)]
    for start in range(0, count, 50):
        await outbox.enqueue(
            context="default", mailbox="1234", msg_id=f"msg-{start}", items=items[start:][:50]
        )


@pytest.mark.parametrize("claimers", [2, 8])
def test_concurrent_claimers_take_every_row_exactly_once(backend: Backend, claimers: int) -> None:
    async def claimer(outbox: Outbox, server_id: str, start: asyncio.Event) -> list[int]:
        await start.wait()
        taken: list[int] = []
        while rows := await outbox.claim(server_id, limit=5, lease_seconds=600):
            taken += [row.id for row in rows]
            assert all(row.claimed_by == server_id and row.attempts == 1 for row in rows)
        return taken

    async def scenario() -> None:
        await init_tables(backend)
        pools = [
            OdbcPool(backend.connection_class(name=f"s{i}", max_connections=1), retry_timeout=10)
            for i in range(claimers)
        ]
        try:
            for pool in pools:
                await pool.start()
            await fill(Outbox(pools[0]), 200)
            start = asyncio.Event()
            tasks = [
                asyncio.create_task(claimer(Outbox(pool), f"server-{i}", start))
                for i, pool in enumerate(pools)
            ]
            start.set()
            results = await asyncio.gather(*tasks)
        finally:
            for pool in pools:
                await pool.close()
        every = [row_id for taken in results for row_id in taken]
        assert len(every) == 200 and len(set(every)) == 200
        rows = backend.sql("SELECT id, claimed_by, attempts FROM outbox")
        owner = {row_id: f"server-{i}" for i, taken in enumerate(results) for row_id in taken}
        assert {(int(r["id"]), r["claimed_by"], int(r["attempts"])) for r in rows} == {
            (row_id, server, 1) for row_id, server in owner.items()
        }

    run(scenario)


def test_an_expired_lease_makes_the_row_claimable_again(backend: Backend) -> None:
    async def scenario() -> None:
        await init_tables(backend)
        clock = Clock()
        async with started_pool(backend) as pool:
            outbox = Outbox(pool, clock=clock)
            await fill(outbox, 1)
            [first] = await outbox.claim("server-a", lease_seconds=60)
            assert await outbox.claim("server-b", lease_seconds=60) == []
            clock.now += 61  # server-a was SIGKILLed after claiming
            [again] = await outbox.claim("server-b", lease_seconds=60)
            assert again.id == first.id and again.attempts == 2
            assert await outbox.mark_retry(first.id, "server-a", "late") is None  # not a's
            assert await outbox.mark_sent(again.id, "server-b") is True
            clock.now += 3600
            assert await outbox.claim("server-a") == []
            row = await outbox.get(first.id)
            assert row is not None and row.state == "sent" and row.claimed_by == "server-b"
            assert row.sent_at == clock.now - 3600
            assert await outbox.pending_count() == 0

    run(scenario)


def test_backoff_doubles_up_to_its_cap_with_seeded_jitter() -> None:
    plain = Backoff(base=1.0, cap=10.0, jitter=0.0)
    rng = random.Random(0)
    assert [plain.delay(n, rng) for n in range(1, 8)] == [1, 2, 4, 8, 10, 10, 10]
    jittered = Backoff(base=1.0, cap=10.0, jitter=0.5)
    first = [jittered.delay(n, random.Random(7)) for n in range(1, 8)]
    assert first == [jittered.delay(n, random.Random(7)) for n in range(1, 8)]
    for n, delay in enumerate(first, start=1):
        raw = min(10.0, 2.0 ** (n - 1))
        assert raw * 0.5 <= delay <= raw
    with pytest.raises(ValueError):
        Backoff(base=0)


def test_a_retried_row_waits_for_its_backoff(backend: Backend) -> None:
    async def scenario() -> None:
        await init_tables(backend)
        clock = Clock()
        async with started_pool(backend) as pool:
            outbox = Outbox(pool, clock=clock, backoff=Backoff(base=30, cap=100, jitter=0))
            await fill(outbox, 1)
            waits = []
            for _ in range(4):
                [row] = await outbox.claim("server-a")
                due = await outbox.mark_retry(row.id, "server-a", "421 4.3.2 try again later")
                assert due is not None
                waits.append(due - clock.now)
                clock.now = due - 1
                assert await outbox.claim("server-a") == []  # not due yet
                clock.now = due
            assert waits == [30, 60, 100, 100]
            row = await outbox.get(row.id)
            assert row is not None and row.last_error == "421 4.3.2 try again later"
            assert row.state == "pending" and row.claimed_by is None

    run(scenario)


def test_a_permanent_failure_is_recorded_and_never_claimed_again(backend: Backend) -> None:
    async def scenario() -> None:
        await init_tables(backend)
        clock = Clock()
        async with started_pool(backend) as pool:
            outbox = Outbox(pool, clock=clock, give_up_after=86400)
            await fill(outbox, 2)
            first, second = await outbox.claim("server-a", limit=2)
            answer = "550 5.1.1 <user0@example.com>: Recipient address rejected"
            assert await outbox.mark_failed(first.id, answer) is True
            # A 4xx for a day: given up on as well.
            assert await outbox.mark_retry(second.id, "server-a", "450 busy") is not None
            clock.now += 86400
            [second] = await outbox.claim("server-a")
            assert await outbox.mark_retry(second.id, "server-a", "450 still busy") is None
            clock.now += 10 * 86400
            assert await outbox.claim("server-b", limit=10) == []
            assert await outbox.pending_count() == 0
            rows = {r.id: r for r in [await outbox.get(first.id), await outbox.get(second.id)]}
            assert rows[first.id].state == "failed" and rows[first.id].last_error == answer
            assert rows[second.id].state == "failed"
            assert rows[second.id].last_error == "gave up: 450 still busy"

    run(scenario)


# --- the spool ----------------------------------------------------------------------------------


def test_a_spooled_message_brings_its_outbox_rows_once(backend: Backend, tmp_path: Path) -> None:
    """The database was away: the message and its outbox items wait in the spool file; the
    flush stores both in one transaction, and a flush repeated after a crash adds nothing."""

    async def scenario() -> None:
        await init_tables(backend)
        spool = Spool(tmp_path / "spool")
        fields = message_fields(b"spooled" * 200)
        message = PendingMessage(
            **{k: fields[k] for k in PENDING_FIELDS}, folder="INBOX", outbox=ITEMS
        )
        spool.write(message)
        assert Spool(tmp_path / "spool").pending()[0].outbox == ITEMS  # read back from disk
        async with started_pool(backend) as pool:
            store = MessageStore(pool, "voicemessages", SPOOL, outbox=Outbox(pool))
            flusher = SpoolFlusher(spool, store)
            assert await flusher.flush_once() == 1
            assert message_count(backend) == 1
            assert [r["kind"] for r in outbox_rows(backend)] == ["email", "webhook"]
            spool.write(message)  # a crash between the commit and the file's removal
            assert await SpoolFlusher(spool, store).flush_once() == 1
            assert message_count(backend) == 1
            assert len(outbox_rows(backend)) == 2
            assert spool.pending() == []

    run(scenario)


def test_a_deposit_during_an_outage_queues_its_mail_when_the_database_is_back(
    server_backend: Backend, tmp_path: Path
) -> None:
    upstream = 5432 if server_backend.name == "postgresql" else 3306

    async def scenario() -> None:
        await init_tables(server_backend)
        with tcp_proxy(upstream) as proxy:
            via_proxy = server_backend.connection_string_via(proxy.port)
            pool = OdbcPool(
                ConnectionClass(
                    "asterisk", via_proxy, max_connections=2, negative_connection_cache=0
                ),
                retry_timeout=2,
            )
            await pool.start()
            try:
                store = MessageStore(pool, "voicemessages", SPOOL, outbox=Outbox(pool))
                spool = Spool(tmp_path / "spool")
                flusher = SpoolFlusher(spool, store)
                fields = message_fields(b"outage" * 200)
                message = PendingMessage(
                    **{k: fields[k] for k in PENDING_FIELDS}, folder="INBOX", outbox=ITEMS
                )
                proxy.stop()  # the database is away
                assert (await flusher.deposit_result(message, wait=1.0)).spooled
                assert outbox_rows(server_backend) == [] and message_count(server_backend) == 0
                proxy.start()
                assert await flusher.flush_once() == 1
            finally:
                await pool.close()
        assert message_count(server_backend) == 1
        rows = outbox_rows(server_backend)
        assert [(r["kind"], r["msg_id"]) for r in rows] == [
            ("email", fields["msg_id"]),
            ("webhook", fields["msg_id"]),
        ]

    run(scenario)


def _claim_and_hang(connection_string: str, queue: Any) -> None:
    """A server process that claims every row and then hangs, to be SIGKILLed."""

    async def claim() -> list[int]:
        pool = OdbcPool(ConnectionClass("victim", connection_string), retry_timeout=5)
        await pool.start()
        rows = await Outbox(pool).claim("victim", limit=100, lease_seconds=2)
        return [row.id for row in rows]

    queue.put(asyncio.run(claim()))
    time.sleep(600)


def test_rows_of_a_sigkilled_server_are_sent_by_another_after_the_lease(
    backend: Backend,
) -> None:
    async def scenario() -> None:
        await init_tables(backend)
        async with started_pool(backend) as pool:
            outbox = Outbox(pool)
            await fill(outbox, 20)
            spawn = multiprocessing.get_context("spawn")
            queue = spawn.Queue()
            victim = spawn.Process(target=_claim_and_hang, args=(backend.connection_string, queue))
            victim.start()
            try:
                taken = await asyncio.to_thread(queue.get, True, 60)
                assert len(taken) == 20
                assert await outbox.claim("survivor") == []  # leased to the victim
                os.kill(victim.pid, signal.SIGKILL)  # type: ignore[arg-type]
            finally:
                victim.join(10)
                if victim.is_alive():
                    victim.kill()
            reclaimed: list[int] = []
            for _ in range(300):  # bounded: the 2 s lease runs out meanwhile
                reclaimed += [row.id for row in await outbox.claim("survivor", limit=100)]
                if len(reclaimed) == 20:
                    break
                await asyncio.sleep(0.1)
            assert sorted(reclaimed) == sorted(taken)
            for row_id in reclaimed:
                assert await outbox.mark_sent(row_id, "survivor")
        rows = backend.sql("SELECT state, attempts, claimed_by FROM outbox")
        assert {(r["state"], int(r["attempts"]), r["claimed_by"]) for r in rows} == {
            ("sent", 2, "survivor")
        }

    run(scenario)
