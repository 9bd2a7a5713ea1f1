"""The local spool: no message is lost when the database is away, and none is stored twice."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import socket
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest

from storage.messages import MessageStore, new_msg_id
from storage.odbc import ConnectionClass, OdbcPool
from storage.schema import create_tables, messages_table
from storage.spool import PendingMessage, Spool, SpoolFlusher
from tests.dbbackends import Backend, TcpProxy

pytestmark = pytest.mark.timeout(60)

SPOOL_PREFIX = "/var/spool/asterisk/voicemail/"
MAILBOXES = ("1000", "1001", "1002", "1003")


def message(number: int = 0, mailbox: str = "1234", **overrides: object) -> PendingMessage:
    rng = random.Random(number)
    fields: dict[str, object] = {
        "msg_id": new_msg_id(),
        "context": "default",
        "mailbox": mailbox,
        "folder": "INBOX",
        "recording": b"RIFF" + rng.randbytes(rng.randrange(2_000, 16_000)),
        "callerid": f'"Caller {number}" <555{number:04d}>',
        "origtime": 1_700_000_000 + number,
        "duration": 1 + number % 60,
        "caller_context": "from-internal",
    }
    fields.update(overrides)
    return PendingMessage(**fields)  # type: ignore[arg-type]


def spool_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.is_file())


async def eventually(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        await asyncio.sleep(0.05)


@asynccontextmanager
async def message_store(
    backend: Backend, connection_string: str | None = None
) -> AsyncIterator[MessageStore]:
    connection_class = ConnectionClass(
        "asterisk", connection_string or backend.connection_string, max_connections=2
    )
    pool = OdbcPool(connection_class, retry_timeout=5)
    await pool.start()
    try:
        await create_tables(pool, [messages_table()])
        yield MessageStore(pool, "voicemessages", SPOOL_PREFIX)
    finally:
        await pool.close()


async def stored_rows(store: MessageStore) -> list[tuple[str, int, str, bytes]]:
    """Every message row as (dir, msgnum, msg_id, recording), in folder order."""

    def work(connection: object) -> list[tuple[str, int, str, bytes]]:
        cursor = connection.cursor()  # type: ignore[attr-defined]
        cursor.execute("SELECT dir, msgnum, msg_id, recording FROM voicemessages")
        rows = [(d, int(n), m, bytes(r)) for d, n, m, r in cursor.fetchall()]
        return sorted(rows, key=lambda row: (row[0], row[1]))

    return await store.pool.run(work)


class NoDelayProxy(TcpProxy):
    """TcpProxy with Nagle's algorithm off: through the plain one a MariaDB insert waits for
    delayed ACKs (about 0.15 s instead of 3 ms), which made flushing 80 messages take 11 s."""

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        for sock in (source, target):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass  # already shut down by stop()
        TcpProxy._pump(source, target)


@contextmanager
def no_delay_proxy(upstream_port: int) -> Iterator[TcpProxy]:
    proxy = NoDelayProxy(upstream_port)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


def recorder() -> tuple[list[tuple[str, int]], Callable[[PendingMessage, int], Awaitable[None]]]:
    calls: list[tuple[str, int]] = []

    async def on_stored(stored: PendingMessage, msgnum: int) -> None:
        calls.append((stored.msg_id, msgnum))

    return calls, on_stored


# --- the spool directory ---------------------------------------------------------------------


def test_a_spooled_message_reads_back_whole_and_private(tmp_path: Path) -> None:
    directory = tmp_path / "var" / "spool"
    spool = Spool(directory)
    original = message(1, flag="Urgent", category="sales", callerid='"Zoë ✓" <100>')
    path = spool.write(original)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert spool.pending() == [original]
    assert Spool(directory).pending() == [original]  # as a restarted process sees it
    assert spool_files(directory) == [path.name]


def test_pending_is_in_arrival_order_even_within_one_clock_tick(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    written = [message(n) for n in range(40)]
    paths = [spool.write(m) for m in written]
    assert paths == sorted(paths)
    assert [m.msg_id for m in spool.pending()] == [m.msg_id for m in written]
    # A restarted process keeps adding after what is there, even if its clock went back.
    future = paths[-1].with_name("9" * 19 + "0-" + paths[-1].name.split("-", 1)[1])
    paths[-1].rename(future)
    later = message(99)
    Spool(tmp_path).write(later)
    assert spool.pending()[-1] == later


def test_remove_by_message_or_by_path(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    first, second, third = message(1), message(2), message(3)
    spool.write(first)
    second_path = spool.write(second)
    spool.write(third)
    spool.remove(second_path)
    assert spool.pending() == [first, third]
    Spool(tmp_path).remove(first)  # found by msg_id and folder, without an in-memory index
    assert spool.pending() == [third]
    spool.remove(first)  # already gone: no error
    spool.remove(second_path)
    assert spool.pending() == [third]


def test_corrupt_and_partial_files_are_moved_to_bad_with_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(tmp_path)
    good = [message(n) for n in range(3)]
    paths = [spool.write(m) for m in good]
    truncated = paths[1].read_bytes()
    paths[1].write_bytes(truncated[: len(truncated) // 2])  # cut short
    garbage = tmp_path / ("1" * 20 + "-garbage.vmsg")
    garbage.write_bytes(b"\x00\x01 not a spool file")
    flipped = bytearray(paths[2].read_bytes())
    flipped[-1] ^= 0xFF  # one bit of audio changed
    paths[2].write_bytes(bytes(flipped))
    with caplog.at_level(logging.ERROR, logger="storage.spool"):
        assert spool.pending() == [good[0]]
    assert sorted(p.name for p in (tmp_path / "bad").iterdir()) == sorted(
        [paths[1].name, paths[2].name, garbage.name]
    )
    assert spool_files(tmp_path) == [paths[0].name]
    assert "audio is" in caplog.text and "checksum does not match" in caplog.text
    assert "bad magic" in caplog.text


def test_a_write_interrupted_by_a_crash_is_kept_if_complete(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    complete, partial = message(1), message(2)
    complete_path = spool.write(complete)
    partial_path = spool.write(partial)
    # As if the process died after writing the temporary file but before renaming it.
    complete_path.rename(complete_path.with_name(complete_path.name + ".tmp"))
    data = partial_path.read_bytes()
    partial_path.unlink()
    partial_path.with_name(partial_path.name + ".tmp").write_bytes(data[:100])
    restarted = Spool(tmp_path)
    assert restarted.pending() == [complete]
    assert [p.name for p in (tmp_path / "bad").iterdir()] == [partial_path.name + ".tmp"]


def test_a_message_the_store_would_refuse_is_not_spooled(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    for bad in (
        message(folder="Bogus"),
        message(msg_id=""),
        message(msg_id="x" * 41),
        message(mailbox="12/34"),
    ):
        with pytest.raises(ValueError):
            spool.write(bad)
    assert spool_files(tmp_path) == []


# --- deposits and the flusher on real databases ----------------------------------------------


def test_a_deposit_is_stored_at_once_and_leaves_the_spool_empty(
    backend: Backend, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with message_store(backend) as store:
            calls, on_stored = recorder()
            spool = Spool(tmp_path / "spool")
            flusher = SpoolFlusher(spool, store, on_stored=on_stored)
            first, second = message(1), message(2, flag="Urgent", folder="Urgent")
            assert await flusher.deposit(first) == 0
            assert await flusher.deposit(second) == 0
            assert await flusher.deposit(message(3)) == 1
            assert spool.pending() == []
            assert spool_files(tmp_path / "spool") == []
            assert calls[:2] == [(first.msg_id, 0), (second.msg_id, 0)]
            stored = await store.retrieve("default", "1234", "Urgent", 0)
            assert stored is not None
            assert (stored.recording, stored.flag, stored.msg_id, stored.callerid) == (
                second.recording,
                "Urgent",
                second.msg_id,
                second.callerid,
            )

    asyncio.run(scenario())


def test_what_a_previous_process_left_is_flushed_in_order_at_start_up(
    backend: Backend, tmp_path: Path
) -> None:
    async def scenario() -> None:
        left = [message(n) for n in range(5)]
        previous = Spool(tmp_path / "spool")
        for m in left:
            previous.write(m)
        async with message_store(backend) as store:
            calls, on_stored = recorder()
            flusher = SpoolFlusher(
                Spool(tmp_path / "spool"), store, interval=0.1, on_stored=on_stored
            )
            assert flusher.backlog == 5
            # A new deposit queues behind them instead of overtaking them.
            runner = asyncio.create_task(flusher.run())
            newest = message(9)
            assert await flusher.deposit(newest) in (5, None)
            await eventually(lambda: flusher.backlog == 0, 10, "spool flushed")
            flusher.stop()
            await asyncio.wait_for(runner, 5)
            rows = await stored_rows(store)
            assert [row[2] for row in rows] == [m.msg_id for m in [*left, newest]]
            assert [row[1] for row in rows] == list(range(6))
            assert sorted(calls) == sorted((row[2], row[1]) for row in rows)
            assert spool_files(tmp_path / "spool") == []

    asyncio.run(scenario())


def test_a_crash_between_commit_and_spool_removal_stores_nothing_twice(
    backend: Backend, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with message_store(backend) as store:
            spool = Spool(tmp_path / "spool")
            first, crashed = message(1), message(2)
            assert await SpoolFlusher(spool, store).deposit(first) == 0
            spool.write(crashed)
            assert await store.store(**crashed.store_arguments()) == 1
            # The process dies here, before removing the spool file. The next one starts:
            calls, on_stored = recorder()
            restarted = SpoolFlusher(Spool(tmp_path / "spool"), store, on_stored=on_stored)
            assert restarted.backlog == 1
            assert await restarted.flush_once() == 1
            assert calls == [(crashed.msg_id, 1)]
            rows = await stored_rows(store)
            assert [(row[1], row[2]) for row in rows] == [(0, first.msg_id), (1, crashed.msg_id)]
            assert spool_files(tmp_path / "spool") == []
            assert await restarted.deposit(message(3)) == 2

    asyncio.run(scenario())


def test_a_spool_file_the_store_refuses_goes_to_bad_and_does_not_block_the_rest(
    backend: Backend, tmp_path: Path
) -> None:
    async def scenario() -> None:
        spool = Spool(tmp_path / "spool")
        poison, good = message(1, folder="NoSuchFolder"), message(2)
        spool._write_at(spool._allocate(poison), poison)  # e.g. written by another version
        spool.write(good)
        async with message_store(backend) as store:
            flusher = SpoolFlusher(spool, store)
            assert await flusher.flush_once() == 1
            assert [row[2] for row in await stored_rows(store)] == [good.msg_id]
            assert len(list((tmp_path / "spool" / "bad").iterdir())) == 1
            assert flusher.backlog == 0

    asyncio.run(scenario())


def test_no_message_is_lost_or_stored_twice_across_a_restart_and_a_10_s_outage(
    server_backend: Backend, tmp_path: Path
) -> None:
    """100 deposits to 4 mailboxes: before, during a restart (every connection dropped), during
    10 s of refused connections, and after. Every message arrives once, in order, byte-exact."""
    upstream = 5432 if server_backend.name == "postgresql" else 3306
    wait = 2.0

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        with no_delay_proxy(upstream) as proxy:
            via_proxy = server_backend.connection_string_via(proxy.port)
            async with message_store(server_backend, via_proxy) as store:
                calls, on_stored = recorder()
                spool = Spool(tmp_path / "spool")
                flusher = SpoolFlusher(
                    spool, store, interval=0.2, max_backoff=1.0, on_stored=on_stored
                )
                runner = asyncio.create_task(flusher.run())
                messages = [message(n, MAILBOXES[n % 4]) for n in range(100)]
                returned: dict[str, int | None] = {}
                took: list[float] = []

                async def caller(m: PendingMessage) -> None:
                    started = loop.time()
                    returned[m.msg_id] = await flusher.deposit(m, wait=wait)
                    took.append(loop.time() - started)

                callers = []

                async def deposit_range(first: int, last: int, spacing: float) -> None:
                    for m in messages[first:last]:
                        callers.append(asyncio.create_task(caller(m)))
                        await asyncio.sleep(spacing)

                await deposit_range(0, 10, 0.05)  # database up
                proxy.stop()  # restart: every connection dropped
                proxy.start()
                await deposit_range(10, 20, 0.05)
                proxy.stop()  # stopped: connections refused for 10 s
                stopped_at = loop.time()
                await deposit_range(20, 90, 9.5 / 70)
                await asyncio.sleep(stopped_at + 10 - loop.time())
                proxy.start()
                await deposit_range(90, 100, 0.02)  # back
                await asyncio.gather(*callers)
                await eventually(lambda: flusher.backlog == 0, 20, "spool flushed")
                flusher.stop()
                await asyncio.wait_for(runner, 5)

                rows = await stored_rows(store)
                assert len(rows) == 100
                assert len({row[2] for row in rows}) == 100  # each msg_id exactly once
                by_id = {row[2]: row for row in rows}
                for m in messages:
                    assert hashlib.sha256(by_id[m.msg_id][3]).digest() == (
                        hashlib.sha256(m.recording).digest()
                    )
                for mailbox in MAILBOXES:
                    folder = f"{SPOOL_PREFIX}default/{mailbox}/INBOX"
                    in_folder = [row for row in rows if row[0] == folder]
                    assert [row[1] for row in in_folder] == list(range(25))
                    assert [row[2] for row in in_folder] == [
                        m.msg_id for m in messages if m.mailbox == mailbox
                    ]
                # Callers were answered promptly, stored or spooled; every msgnum returned is
                # the row's, and the app was told of each message once.
                assert max(took) < 2 * wait + 1
                assert all(returned[m.msg_id] is not None for m in messages[:10])
                assert sum(returned[m.msg_id] is None for m in messages[20:90]) == 70
                for msg_id, msgnum in returned.items():
                    assert msgnum is None or msgnum == by_id[msg_id][1]
                assert sorted(calls) == sorted((row[2], row[1]) for row in rows)
                assert spool.pending() == []
                assert spool_files(tmp_path / "spool") == []
                assert not (tmp_path / "spool" / "bad").exists()

    asyncio.run(scenario())
