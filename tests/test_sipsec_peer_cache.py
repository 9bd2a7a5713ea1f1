"""PeerDirectory remembers names realtime `sippeers` does not have, for a few seconds, on a
real database: a row inserted behind its back stays unseen until the window has passed (so
no query reached the database), and is found after it, or at once after invalidate()."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from channels.sip.registration import NEGATIVE_TTL, PeerDirectory, RealtimeOptions
from storage.odbc import OdbcPool
from storage.realtime import Realtime, RealtimeMapping
from storage.realtime_tables import sippeers_table
from storage.schema import create_tables

from .dbbackends import Backend

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True),
]


class Clock:
    """The directory's steady clock, moved by the test instead of waited for."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def directory_on(backend: Backend, **options: object) -> AsyncIterator[PeerDirectory]:
    pool = OdbcPool(backend.connection_class("asterisk"), retry_timeout=5)
    await pool.start()
    try:
        await create_tables(pool, [sippeers_table()])
        realtime = Realtime(
            [RealtimeMapping("sippeers", "odbc", "asterisk", "sippeers")], {"asterisk": pool}
        )
        yield PeerDirectory({}, realtime, RealtimeOptions(), **options)  # type: ignore[arg-type]
    finally:
        await pool.close()


def insert(backend: Backend, name: str) -> None:
    """What an administrator does while the server runs."""
    backend.sql(
        "INSERT INTO sippeers (name, type, host, secret) VALUES (?, 'friend', 'dynamic', 'x')",
        name,
    )


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())  # type: ignore[arg-type]


def test_unknown_name_costs_one_query_per_window(backend: Backend) -> None:
    async def scenario() -> None:
        clock = Clock()
        async with directory_on(backend, clock=clock) as directory:
            start = clock.now
            assert await directory.find("ghost") is None  # the one query of this window
            insert(backend, "ghost")
            for step in range(50):
                clock.now = start + NEGATIVE_TTL * step / 50
                # A query would find the row now: None means none was made.
                assert await directory.find("ghost") is None
            clock.now = start + NEGATIVE_TTL
            peer = await directory.find("ghost")
            assert peer is not None and peer.name == "ghost" and peer.realtime

    run(scenario)


def test_invalidate_forgets_the_unknown_names(backend: Backend) -> None:
    async def scenario() -> None:
        async with directory_on(backend, clock=Clock()) as directory:
            assert await directory.find("late") is None
            insert(backend, "late")
            assert await directory.find("late") is None
            directory.invalidate()
            assert await directory.find("late") is not None

    run(scenario)


def test_only_negative_max_names_are_remembered_oldest_forgotten_first(backend: Backend) -> None:
    async def scenario() -> None:
        async with directory_on(backend, clock=Clock(), negative_max=3) as directory:
            names = [f"scan{n}" for n in range(5)]
            for name in names:
                assert await directory.find(name) is None
            for name in names:
                insert(backend, name)
            found = [await directory.find(name) is not None for name in names]
            # scan0 and scan1 were forgotten (queried again, found); the last three are not.
            assert found == [True, True, False, False, False]

    run(scenario)


def test_a_known_realtime_peer_is_not_remembered_as_unknown(backend: Backend) -> None:
    async def scenario() -> None:
        async with directory_on(backend, clock=Clock()) as directory:
            insert(backend, "real")
            assert await directory.find("real") is not None
            backend.sql("DELETE FROM sippeers WHERE name = ?", "real")
            assert await directory.find("real") is None  # no positive cache either

    run(scenario)
