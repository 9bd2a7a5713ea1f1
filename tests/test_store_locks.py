"""Folder locks wait a bounded time: a lock another server holds fails the write clearly.

The lock is held from a second, raw connection, the way another server (or a stuck session)
would hold it: pg_advisory_lock on PostgreSQL, GET_LOCK on MariaDB, BEGIN IMMEDIATE on SQLite.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pyodbc
import pytest

from storage.messages import MessageStore
from storage.odbc import ConnectionClass, DatabaseUnavailable, OdbcPool
from storage.schema import create_tables, messages_table
from tests.dbbackends import Backend
from tests.helpers import SPOOL, message_fields

pytestmark = pytest.mark.timeout(120)

LOCK_TIMEOUT = 1.0
# Generous: the point is that the wait ends (before, MariaDB waited 30 s, PostgreSQL forever).
BOUND = 15.0


def connection_string(backend: Backend) -> str:
    """SQLite's wait is the driver's busy timeout (Timeout= ms): one second here."""
    return backend.connection_string.replace("Timeout=10000;", "Timeout=1000;")


@asynccontextmanager
async def store_on(backend: Backend) -> AsyncIterator[MessageStore]:
    pool = OdbcPool(ConnectionClass("asterisk", connection_string(backend), max_connections=2))
    await pool.start()
    try:
        await create_tables(pool, [messages_table()])
        yield MessageStore(pool, "voicemessages", SPOOL, lock_timeout=LOCK_TIMEOUT)
    finally:
        await pool.close()


class LockHolder:
    """A second session that takes and releases folder locks as another server would."""

    def __init__(self, backend: Backend, store: MessageStore) -> None:
        self.backend = backend.name
        self.store = store
        self.connection = pyodbc.connect(connection_string(backend), autocommit=True, timeout=5)

    def hold(self, folder_dir: str) -> None:
        key = self.store.folder_lock_key(folder_dir)
        if self.backend == "postgresql":
            self.connection.execute("SELECT pg_advisory_lock(CAST(? AS BIGINT))", key).fetchall()
        elif self.backend == "mysql":
            assert self.connection.execute("SELECT GET_LOCK(?, 0)", key).fetchone()[0] == 1
        else:
            self.connection.execute("BEGIN IMMEDIATE")

    def release(self, folder_dir: str) -> None:
        key = self.store.folder_lock_key(folder_dir)
        if self.backend == "postgresql":
            sql = "SELECT pg_advisory_unlock(CAST(? AS BIGINT))"
            assert self.connection.execute(sql, key).fetchone()[0]
        elif self.backend == "mysql":
            assert self.connection.execute("SELECT RELEASE_LOCK(?)", key).fetchone()[0] == 1
        else:
            self.connection.execute("COMMIT")

    def is_free(self, folder_dir: str) -> bool:
        """Whether nobody holds the lock (taking it and giving it back at once)."""
        key = self.store.folder_lock_key(folder_dir)
        if self.backend == "postgresql":
            sql = "SELECT pg_try_advisory_lock(CAST(? AS BIGINT))"
            if not self.connection.execute(sql, key).fetchone()[0]:
                return False
        elif self.backend == "mysql":
            if self.connection.execute("SELECT GET_LOCK(?, 0)", key).fetchone()[0] != 1:
                return False
        else:
            return True
        self.release(folder_dir)
        return True

    def close(self) -> None:
        self.connection.close()


async def deposit(store: MessageStore, folder: str = "INBOX") -> int:
    return await store.store(**message_fields(b"RIFF audio", folder=folder))


async def fails_within_the_bound(operation: object) -> None:
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable, match=r"^\[asterisk\] no (write )?lock"):
        await operation  # type: ignore[misc]
    assert time.monotonic() - started < BOUND


def test_a_deposit_into_a_folder_locked_elsewhere_fails_then_succeeds_once_released(
    backend: Backend,
) -> None:
    async def scenario() -> None:
        async with store_on(backend) as store:
            inbox = store.folder_dir("default", "1234", "INBOX")
            holder = LockHolder(backend, store)
            try:
                holder.hold(inbox)
                await fails_within_the_bound(deposit(store))
                if backend.name != "sqlite":  # other folders are not held up
                    assert await deposit(store, "Old") == 0
                holder.release(inbox)
                assert await deposit(store) == 0
                assert await store.count("default", "1234", "INBOX") == 1
            finally:
                holder.close()

    asyncio.run(scenario())


def test_a_copy_into_a_locked_folder_fails_and_gives_back_the_lock_it_took(
    backend: Backend,
) -> None:
    async def scenario() -> None:
        async with store_on(backend) as store:
            assert await deposit(store) == 0
            inbox = store.folder_dir("default", "1234", "INBOX")
            work = store.folder_dir("default", "1234", "Work")
            holder = LockHolder(backend, store)
            try:
                holder.hold(work)
                copy = store.copy(
                    src_context="default",
                    src_mailbox="1234",
                    src_folder="INBOX",
                    msgnum=0,
                    dst_context="default",
                    dst_mailbox="1234",
                    dst_folder="Work",
                )
                await fails_within_the_bound(copy)
                assert holder.is_free(inbox)
                holder.release(work)
                assert await store.count("default", "1234", "Work") == 0
                if backend.name == "postgresql":
                    # lock_timeout was local to the locking transaction.
                    def setting(connection: pyodbc.Connection) -> str:
                        return str(connection.execute("SHOW lock_timeout").fetchone()[0])

                    assert {await store.pool.run(setting) for _ in range(4)} == {"0"}
                moved = await store.move(
                    src_context="default",
                    src_mailbox="1234",
                    src_folder="INBOX",
                    msgnum=0,
                    dst_context="default",
                    dst_mailbox="1234",
                    dst_folder="Work",
                )
                assert moved == 0
                assert await store.counts("default", "1234") == (0, 0, 0)
                assert await store.count("default", "1234", "Work") == 1
            finally:
                holder.close()

    asyncio.run(scenario())


def test_lock_timeout_must_be_positive() -> None:
    pool = OdbcPool(ConnectionClass("asterisk", "DSN=unused;"))
    with pytest.raises(ValueError, match="lock_timeout"):
        MessageStore(pool, lock_timeout=0)
