"""maxmsg where the message number is allocated: a finished recording is never dropped.

A folder found full at store time (another server filled it during the recording, or a message
spooled during an outage finds it full) takes the message anyway, past maxmsg, with a warning.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from pathlib import Path

import pytest

from storage.spool import DepositResult, PendingMessage, Spool, SpoolFlusher
from tests.dbbackends import Backend
from tests.test_spool import message, message_store, spool_files, stored_rows

pytestmark = pytest.mark.timeout(60)


def test_maxmsg_is_kept_in_the_spool_file_and_passed_to_the_store(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    limited = message(1, maxmsg=3)
    spool.write(limited)
    (loaded,) = Spool(tmp_path).pending()
    assert loaded == limited and loaded.maxmsg == 3
    assert loaded.store_arguments()["maxmsg"] == 3
    # No limit, or one Asterisk reads as none, reaches the store as None.
    assert message(2).store_arguments()["maxmsg"] is None
    assert message(3, maxmsg=0).store_arguments()["maxmsg"] is None
    assert message(4, maxmsg=-1).store_arguments()["maxmsg"] is None


def test_a_spool_file_written_before_maxmsg_was_kept_still_loads(tmp_path: Path) -> None:
    audio = b"RIFF old audio"
    metadata = {
        "msg_id": "1700000000-00000000000000aa",
        "context": "default",
        "mailbox": "1234",
        "folder": "INBOX",
        "callerid": "<100>",
        "caller_context": "from-internal",
        "flag": "",
        "origtime": 1_700_000_000,
        "duration": 3,
        "category": None,
        "recording_length": len(audio),
        "recording_sha256": hashlib.sha256(audio).hexdigest(),
    }
    line = json.dumps(metadata, separators=(",", ":")).encode()
    name = f"{1_700_000_000_000_000_000:020d}-{metadata['msg_id']}.vmsg"
    (tmp_path / name).write_bytes(b"ARA-VM-SPOOL 1\n" + line + b"\n" + audio)
    (loaded,) = Spool(tmp_path).pending()
    assert loaded.maxmsg is None and loaded.recording == audio
    assert loaded.msg_id == metadata["msg_id"]


def test_a_maxmsg_that_is_not_a_number_is_refused_before_spooling(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    for bad in ("10", True, 2.5):
        with pytest.raises(ValueError, match="maxmsg"):
            spool.write(message(1, maxmsg=bad))
    assert spool_files(tmp_path) == []


def past_limit_warnings(caplog: pytest.LogCaptureFixture, m: PendingMessage) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.levelno == logging.WARNING and "past the limit" in record.getMessage()
        if m.msg_id in record.getMessage()
    ]


async def fill(flusher: SpoolFlusher, mailbox: str, count: int) -> None:
    for n in range(count):
        assert await flusher.deposit(message(100 + n, mailbox)) is not None


def test_a_spooled_message_flushed_into_a_full_mailbox_is_stored_once_past_maxmsg(
    backend: Backend, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        spool = Spool(tmp_path / "spool")
        # Spooled during an outage, when the mailbox had room.
        late = message(1, "1000", maxmsg=2)
        spool.write(late)
        async with message_store(backend) as store:
            # Meanwhile another server filled the folder to its maxmsg.
            other = SpoolFlusher(Spool(tmp_path / "other-server"), store)
            await fill(other, "1000", 2)
            flusher = SpoolFlusher(spool, store)
            with caplog.at_level(logging.WARNING, logger="storage.spool"):
                assert await flusher.flush_once() == 1
                assert await flusher.flush_once() == 0
            rows = await stored_rows(store)
            assert [row[2] for row in rows][-1] == late.msg_id
            assert [row[1] for row in rows] == [0, 1, 2]
            assert [row[2] for row in rows].count(late.msg_id) == 1
            assert by_msg_id(rows, late.msg_id) == late.recording
            assert spool_files(tmp_path / "spool") == []
            (warning,) = past_limit_warnings(caplog, late)
            for part in ("1000@default", "INBOX", late.msg_id, "maxmsg=2"):
                assert part in warning

    asyncio.run(scenario())


def test_a_direct_deposit_into_a_mailbox_full_at_store_time_is_stored_past_maxmsg(
    backend: Backend, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        async with message_store(backend) as store:
            calls: list[tuple[str, int]] = []
            flusher = SpoolFlusher(
                Spool(tmp_path / "spool"),
                store,
                on_stored=lambda m, n: calls.append((m.msg_id, n)),  # type: ignore[func-returns-value]
            )
            roomy = message(1, "1001", maxmsg=2)
            assert await flusher.deposit_result(roomy) == DepositResult(0)
            # The folder filled up by another deposit while this caller was recording.
            await fill(SpoolFlusher(Spool(tmp_path / "other-server"), store), "1001", 1)
            late = message(2, "1001", maxmsg=2)
            with caplog.at_level(logging.WARNING, logger="storage.spool"):
                result = await flusher.deposit_result(late)
            assert result == DepositResult(2, past_maxmsg=2)
            assert not result.spooled
            rows = await stored_rows(store)
            assert [row[1] for row in rows] == [0, 1, 2]
            assert [row[2] for row in rows].count(late.msg_id) == 1
            assert by_msg_id(rows, late.msg_id) == late.recording
            assert calls == [(roomy.msg_id, 0), (late.msg_id, 2)]
            assert spool_files(tmp_path / "spool") == []
            (warning,) = past_limit_warnings(caplog, late)
            for part in ("1001@default", "INBOX", late.msg_id, "maxmsg=2"):
                assert part in warning

    asyncio.run(scenario())


def by_msg_id(rows: list[tuple[str, int, str, bytes]], msg_id: str) -> bytes:
    (recording,) = [row[3] for row in rows if row[2] == msg_id]
    return recording
