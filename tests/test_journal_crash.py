"""A server killed with SIGKILL during a recording: the audio it had fsynced is recovered at
the next start and stored exactly once into a real database."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from storage.audioformats import decode
from storage.recording_journal import RECOVERED_CATEGORY, RecordingJournals
from storage.spool import Spool, SpoolFlusher
from tests.dbbackends import Backend
from tests.test_spool import message_store, stored_rows

pytestmark = pytest.mark.timeout(120)

ONE_SECOND = 16_000  # bytes of 8 kHz 16-bit PCM
MSG_ID = "1700000000-0123456789abcdef"

# A "server" recording a caller in real time (20 ms packets), printing how much it appended.
CHILD = r"""
import random, sys, time
from pathlib import Path
from storage.spool import Spool
from storage.recording_journal import RecordingJournals, RecordingMetadata

journals = RecordingJournals(Spool(Path(sys.argv[1])))
journal = journals.begin(sys.argv[2], RecordingMetadata(
    context="default", mailbox="1000", folder="INBOX", callerid='"Caller" <555>',
    origtime=1700000000, caller_context="from-internal", audio_format="wav",
    flag="Urgent", maxmsg=100,
))
audio = random.Random(7).randbytes(60 * 16000)
started = time.monotonic()
sent = 0
while True:
    due = int((time.monotonic() - started) / 0.02)
    while sent < due:
        journal.append(audio[sent * 320 : (sent + 1) * 320])
        sent += 1
    print(sent * 320, flush=True)
    time.sleep(0.02)
"""


def expected_audio() -> bytes:
    return random.Random(7).randbytes(60 * ONE_SECOND)


def record_and_kill(spool_dir: Path, seconds: float) -> tuple[int, list[int]]:
    """Run the child until it has appended `seconds` of audio, SIGKILL it; return how many
    bytes it had appended and the journal sizes seen on disk meanwhile."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(spool_dir), MSG_ID],
        stdout=subprocess.PIPE,
        text=True,
    )
    journal = spool_dir / "recording" / f"{MSG_ID}.rec"
    sizes: list[int] = []
    appended = 0
    try:
        assert child.stdout is not None
        deadline = time.monotonic() + 60
        while appended < seconds * ONE_SECOND:
            line = child.stdout.readline()
            assert line, f"the child ended early with {child.poll()}"
            appended = int(line)
            if journal.exists() and (not sizes or sizes[-1] != journal.stat().st_size):
                sizes.append(journal.stat().st_size)
            assert time.monotonic() < deadline, "the child did not record in time"
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(10) == -signal.SIGKILL
        for line in child.stdout:  # what it printed just before the kill
            appended = int(line)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        if child.stdout is not None:
            child.stdout.close()
    return appended, sizes


def test_a_recording_killed_by_sigkill_is_recovered_and_stored_exactly_once(
    backend: Backend, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "spool"
    appended, sizes = record_and_kill(spool_dir, 3.5)
    assert len(sizes) >= 2, f"the journal did not grow while recording: {sizes}"
    (journal,) = (spool_dir / "recording").iterdir()
    saved = tmp_path / "journal-copy"
    shutil.copy(journal, saved)

    async def scenario() -> None:
        async with message_store(backend) as store:

            async def start_up() -> int:
                """What the server does at start: recover journals, then flush the spool."""
                spool = Spool(spool_dir)
                journals = RecordingJournals(spool)
                try:
                    await asyncio.to_thread(journals.recover)
                finally:
                    journals.close()
                return await SpoolFlusher(spool, store).flush_once()

            assert await start_up() == 1
            assert await start_up() == 0  # recovery run twice stores once
            # A crash after spooling but before deleting the journal, even after the flusher
            # stored the spooled copy: the same msg_id again, one row.
            shutil.copy(saved, journal)
            assert await start_up() == 1
            rows = await stored_rows(store)
            assert [(row[1], row[2]) for row in rows] == [(0, MSG_ID)]
            stored = await store.retrieve("default", "1000", "INBOX", 0)
            assert stored is not None
            pcm = decode(stored.recording, "wav")
            # The audio it had fsynced: a prefix of what it was given, within about a second
            # (the journal is written once a second) of all it had appended.
            assert pcm == expected_audio()[: len(pcm)]
            assert 0 <= appended - len(pcm) <= 1.5 * ONE_SECOND, (appended, len(pcm))
            assert stored.category == RECOVERED_CATEGORY
            assert (stored.flag, stored.callerid) == ("Urgent", '"Caller" <555>')
            assert stored.duration == round(len(pcm) / ONE_SECOND)
            assert not list((spool_dir / "recording").iterdir())
            assert not list(spool_dir.glob("*.vmsg"))

    asyncio.run(scenario())
