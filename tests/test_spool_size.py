"""spoolmaxmb: the spool knows its size cheaply, and a finished recording is written past it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from storage.spool import Spool, SpoolFlusher
from tests.dbbackends import Backend
from tests.test_spool import message, message_store

pytestmark = pytest.mark.timeout(60)


def on_disk(directory: Path) -> int:
    """What bytes_used should be: the spool files, not bad/ (walked the slow way)."""
    return sum(p.stat().st_size for p in directory.glob("*.vmsg")) + sum(
        p.stat().st_size for p in directory.glob("recording/*.rec")
    )


def test_bytes_used_follows_writes_and_removals_and_is_recounted_at_start(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path)
    assert spool.bytes_used == 0
    paths = [spool.write(message(n)) for n in range(5)]
    assert spool.bytes_used == on_disk(tmp_path) > 5 * 2_000
    spool.remove(paths[1])
    spool.remove(message(99))  # not there: nothing changes
    spool.remove(paths[1])  # removed twice: counted once
    assert spool.bytes_used == on_disk(tmp_path)
    restarted = Spool(tmp_path)  # a new process counts what it finds
    assert restarted.bytes_used == spool.bytes_used
    for path in paths:
        restarted.remove(path)
    assert restarted.bytes_used == 0 == on_disk(tmp_path)


def test_a_file_moved_to_bad_is_no_longer_counted(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    good, broken = spool.write(message(1)), spool.write(message(2))
    broken.write_bytes(broken.read_bytes()[:100])  # e.g. a disk error
    assert len(spool.pending()) == 1
    assert (tmp_path / "bad" / broken.name).exists()
    assert spool.bytes_used == good.stat().st_size == on_disk(tmp_path)


def test_over_limit_and_a_finished_recording_is_written_past_it(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    one, two = message(1), message(2)
    first = spool.write(one)
    size = first.stat().st_size
    assert not spool.over_limit(None) and not spool.over_limit(0)  # no limit
    assert not spool.over_limit(size)  # at the limit is not over it
    assert spool.over_limit(size - 1)
    # Over the limit, a recording that is already finished is still spooled.
    second = spool.write(two)
    assert spool.over_limit(size)
    assert Spool(tmp_path).pending() == [one, two]
    spool.remove(second)
    spool.remove(first)
    assert not spool.over_limit(1)


def test_the_flusher_storing_spooled_messages_brings_the_spool_back_under_the_limit(
    backend: Backend, tmp_path: Path
) -> None:
    async def scenario() -> None:
        spool = Spool(tmp_path / "spool")
        for n in range(4):
            spool.write(message(n))
        limit = spool.bytes_used // 2
        assert spool.over_limit(limit)
        async with message_store(backend) as store:
            flusher = SpoolFlusher(spool, store)
            assert await flusher.flush_once() == 4
            assert spool.bytes_used == 0 and not spool.over_limit(limit)
            assert await flusher.deposit(message(9)) == 4  # stored at once, file removed
            assert spool.bytes_used == 0

    asyncio.run(scenario())
