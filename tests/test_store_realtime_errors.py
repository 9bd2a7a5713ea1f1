"""A realtime mapping to a table that does not exist is an error, not an outage.

The wrong mapping comes first, a good one second: a permanent SQL error (SQLSTATE class 42, or
SQLite's "no such table") must reach the caller, not fail over to the next mapping as if the
database were down, and not read as "not found".
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from storage.odbc import ConnectionClass, DatabaseError, DatabaseUnavailable, OdbcPool
from storage.realtime import Realtime, RealtimeMapping
from storage.schema import create_tables, voicemail_table
from storage.staticconfig import ast_config_table
from tests.dbbackends import Backend

pytestmark = pytest.mark.timeout(60)

USER = {"context": "default", "mailbox": "1234", "password": "4321"}


@asynccontextmanager
async def good_pool(backend: Backend) -> AsyncIterator[OdbcPool]:
    pool = OdbcPool(backend.connection_class("good"), retry_timeout=5)
    await pool.start()
    try:
        await create_tables(pool, [voicemail_table(), ast_config_table()])
        yield pool
    finally:
        await pool.close()


def wrong_table_first(pool: OdbcPool, family: str = "voicemail") -> Realtime:
    table = "voicemail" if family == "voicemail" else "ast_config"
    return Realtime(
        [
            RealtimeMapping(family, "odbc", "good", "no_such_table", priority=1),
            RealtimeMapping(family, "odbc", "good", table, priority=2),
        ],
        {"good": pool},
    )


def is_permanent(exc: pytest.ExceptionInfo[DatabaseError]) -> bool:
    """Not an outage, and it names the table that is missing."""
    return not isinstance(exc.value, DatabaseUnavailable) and "no_such_table" in str(exc.value)


def test_a_read_from_a_missing_table_raises_instead_of_failing_over(backend: Backend) -> None:
    async def scenario() -> None:
        async with good_pool(backend) as pool:
            right = Realtime(
                [RealtimeMapping("voicemail", "odbc", "good", "voicemail")], {"good": pool}
            )
            assert await right.store("voicemail", USER) == 1
            realtime = wrong_table_first(pool)
            for read in (
                realtime.load("voicemail", mailbox="1234"),
                realtime.load("voicemail", mailbox="9999"),
                realtime.load_multi("voicemail", {"mailbox LIKE": "1%"}),
            ):
                with pytest.raises(DatabaseError) as raised:
                    await read
                assert is_permanent(raised), raised.value
                if backend.name != "sqlite":
                    assert raised.value.sqlstate.startswith("42"), raised.value.sqlstate

    asyncio.run(scenario())


def test_a_write_to_a_missing_table_raises_and_writes_nothing_elsewhere(backend: Backend) -> None:
    async def scenario() -> None:
        async with good_pool(backend) as pool:
            realtime = wrong_table_first(pool)
            for write in (
                realtime.store("voicemail", USER),
                realtime.update("voicemail", "mailbox", "1234", {"password": "1"}),
                realtime.destroy("voicemail", "mailbox", "1234"),
            ):
                with pytest.raises(DatabaseError) as raised:
                    await write
                assert is_permanent(raised), raised.value
            right = Realtime(
                [RealtimeMapping("voicemail", "odbc", "good", "voicemail")], {"good": pool}
            )
            assert await right.load_multi("voicemail", {"mailbox LIKE": "%"}) == []

    asyncio.run(scenario())


def test_a_configuration_file_from_a_missing_table_raises(backend: Backend) -> None:
    async def scenario() -> None:
        async with good_pool(backend) as pool:
            realtime = wrong_table_first(pool, "voicemail.conf")
            with pytest.raises(DatabaseError) as raised:
                await realtime.load_config_file("voicemail.conf")
            assert is_permanent(raised), raised.value

    asyncio.run(scenario())


def test_an_unreachable_database_still_fails_over(backend: Backend) -> None:
    async def scenario() -> None:
        dead = OdbcPool(
            ConnectionClass("dead", backend.unreachable_connection_string, connect_timeout=2)
        )
        try:
            async with good_pool(backend) as pool:
                realtime = Realtime(
                    [
                        RealtimeMapping("voicemail", "odbc", "dead", "voicemail", priority=1),
                        RealtimeMapping("voicemail", "odbc", "gone", "voicemail", priority=2),
                        RealtimeMapping("voicemail", "odbc", "good", "voicemail", priority=3),
                    ],
                    {"good": pool, "dead": dead},
                )
                assert await realtime.store("voicemail", USER) == 1
                row = await realtime.load("voicemail", mailbox="1234")
                assert row is not None and row["password"] == "4321"
        finally:
            await dead.close()

    asyncio.run(scenario())
