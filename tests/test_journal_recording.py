"""Recording journals: audio in progress on disk about once a second, recovered after a crash."""

from __future__ import annotations

import random
import shutil
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from storage.audioformats import decode, encode
from storage.messages import new_msg_id
from storage.recording_journal import (
    RECOVERED_CATEGORY,
    RecordingJournals,
    RecordingMetadata,
    read_journal,
)
from storage.spool import Spool

pytestmark = pytest.mark.timeout(60)

ONE_SECOND = 16_000  # bytes of 8 kHz 16-bit PCM


def metadata(**overrides: object) -> RecordingMetadata:
    fields: dict[str, object] = {
        "context": "default",
        "mailbox": "1000",
        "folder": "INBOX",
        "callerid": '"Zoë" <100>',
        "origtime": 1_700_000_000,
        "caller_context": "from-internal",
        "audio_format": "wav",
        "flag": "Urgent",
        "category": "sales",
        "maxmsg": 50,
    }
    fields.update(overrides)
    return RecordingMetadata(**fields)  # type: ignore[arg-type]


def pcm(seconds: float, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(int(seconds * ONE_SECOND) // 2 * 2)


def eventually(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        time.sleep(0.02)


@contextmanager
def journals_of(spool: Spool, interval: float = 0.05) -> Iterator[RecordingJournals]:
    journals = RecordingJournals(spool, interval=interval)
    try:
        yield journals
    finally:
        journals.close()


def journal_pcm(path: Path) -> bytes:
    return read_journal(path.read_bytes())[2]


def test_audio_is_journaled_while_recording_and_finish_deletes_the_journal(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path)
    audio = pcm(1.5)
    with journals_of(spool) as journals:
        journal = journals.begin("1700000000-aa", metadata())
        for offset in range(0, len(audio), 320):  # 20 ms packets
            journal.append(audio[offset : offset + 320])
        eventually(
            lambda: journal.path.exists() and journal_pcm(journal.path) == audio, 10, "journaled"
        )
        msg_id, header, _, torn = read_journal(journal.path.read_bytes())
        assert (msg_id, header, torn) == ("1700000000-aa", metadata(), False)
        assert journal.path.parent == tmp_path / "recording"
        # Counted for spoolmaxmb (just after the write).
        eventually(lambda: spool.bytes_used == journal.path.stat().st_size, 10, "counted")
        journal.finish()
        eventually(lambda: not journal.path.exists(), 10, "journal deleted")
        assert spool.bytes_used == 0
        discarded = journals.begin("1700000000-bb", metadata())
        discarded.append(audio)
        eventually(discarded.path.exists, 10, "second journal written")
        discarded.discard()
        eventually(lambda: not discarded.path.exists(), 10, "discarded journal deleted")
    assert journals.recover() == []
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == []


def test_close_keeps_open_and_left_journals_for_recovery_and_deletes_finished_ones(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path)
    with journals_of(spool, interval=60) as journals:  # only close() writes
        still_recording = journals.begin("1700000000-01", metadata(mailbox="1001"))
        still_recording.append(pcm(0.5, 1))
        failed_deposit = journals.begin("1700000000-02", metadata(mailbox="1002"))
        failed_deposit.append(pcm(0.5, 2))
        failed_deposit.leave()
        failed_deposit.append(b"\x01\x02")  # after leave(): not journaled
        done = journals.begin("1700000000-03", metadata(mailbox="1003"))
        done.append(pcm(0.5, 3))
        done.finish()
    assert journal_pcm(still_recording.path) == pcm(0.5, 1)
    assert journal_pcm(failed_deposit.path) == pcm(0.5, 2)
    assert not done.path.exists()
    with pytest.raises(RuntimeError):
        journals.begin("1700000000-04", metadata())


def test_recovery_spools_the_audio_encoded_and_marked_then_deletes_the_journal(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path)
    audio = pcm(2.6)
    with journals_of(spool, interval=60) as journals:
        left = journals.begin("1700000000-cc", metadata(audio_format="ulaw"))
        left.append(audio)
    restarted = Spool(tmp_path)
    assert restarted.bytes_used == left.path.stat().st_size
    with journals_of(restarted) as journals:
        (recovered,) = journals.recover()
        assert journals.recover() == []  # run twice: once
    assert restarted.pending() == [recovered]
    assert not left.path.exists()
    assert restarted.bytes_used == sum(p.stat().st_size for p in tmp_path.glob("*.vmsg"))
    assert recovered.recording == encode(audio, "ulaw")
    assert decode(recovered.recording, "ulaw") == decode(encode(audio, "ulaw"), "ulaw")
    assert (recovered.msg_id, recovered.duration, recovered.category) == (
        "1700000000-cc",
        3,
        RECOVERED_CATEGORY,
    )
    m = metadata()
    assert (recovered.context, recovered.mailbox, recovered.folder) == (
        m.context,
        m.mailbox,
        m.folder,
    )
    assert (recovered.callerid, recovered.origtime, recovered.caller_context) == (
        m.callerid,
        m.origtime,
        m.caller_context,
    )
    assert (recovered.flag, recovered.maxmsg) == (m.flag, m.maxmsg)


def test_a_crash_between_spooling_and_deleting_the_journal_spools_once(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    with journals_of(spool, interval=60) as journals:
        journals.begin(new_msg_id(), metadata()).append(pcm(1))
    (journal,) = (tmp_path / "recording").iterdir()
    saved = tmp_path / "journal-copy"
    shutil.copy(journal, saved)
    with journals_of(Spool(tmp_path)) as journals:
        (first,) = journals.recover()
    shutil.copy(saved, journal)  # as if the process died before deleting the journal
    with journals_of(Spool(tmp_path)) as journals:
        (again,) = journals.recover()
    assert again == first
    assert Spool(tmp_path).pending() == [first]  # one spool file, not two
    assert not journal.exists()


def test_a_torn_last_block_is_cut_at_the_last_whole_block(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(tmp_path)
    whole = pcm(1.2)
    with journals_of(spool, interval=60) as journals:
        journal = journals.begin("1700000000-dd", metadata())
        journal.append(whole)
    intact = journal.path.read_bytes()
    # A crash in the middle of writing the next block: its length says 3200, 1000 arrived.
    journal.path.write_bytes(intact + struct.pack("<II", 3200, 0) + pcm(0.2, 9)[:1000])
    assert read_journal(journal.path.read_bytes())[2:] == (whole, True)
    # A block whose bytes did not all reach the disk (CRC wrong) ends the audio too.
    damaged = bytearray(intact + struct.pack("<II", 320, 0) + bytes(320))
    assert read_journal(bytes(damaged))[2:] == (whole, True)
    with journals_of(Spool(tmp_path)) as journals:
        (recovered,) = journals.recover()
    assert decode(recovered.recording, "wav") == whole
    assert "torn" in caplog.text


def test_an_unreadable_journal_goes_to_bad_and_a_too_short_one_is_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(tmp_path)
    with journals_of(spool, interval=60) as journals:
        short = journals.begin("1700000000-ee", metadata(min_seconds=2))
        short.append(pcm(1))
        empty = journals.begin("1700000000-ff", metadata())
    (tmp_path / "recording" / "garbage.rec").write_bytes(b"ARA-VM-REC 1\n{not json\n")
    with journals_of(Spool(tmp_path)) as journals:
        assert journals.recover() == []
    assert [p.name for p in (tmp_path / "bad").iterdir()] == ["garbage.rec"]
    assert not short.path.exists() and not empty.path.exists()
    assert Spool(tmp_path).pending() == []
    assert "shorter than minsecs" in caplog.text and "not JSON" in caplog.text


def test_begin_refuses_what_could_never_be_spooled(tmp_path: Path) -> None:
    with journals_of(Spool(tmp_path)) as journals:
        for msg_id, bad in (
            ("1-1", metadata(folder="Bogus")),
            ("1-1", metadata(audio_format="mp3")),
            ("1-1", metadata(mailbox="")),
            ("", metadata()),
            ("1-1", metadata(maxmsg="7")),
        ):
            with pytest.raises(ValueError):
                journals.begin(msg_id, bad)
        journals.begin("1-2", metadata())
        with pytest.raises(ValueError, match="already journaled"):
            journals.begin("1-2", metadata())


def test_a_journal_that_cannot_be_written_is_logged_and_others_go_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(tmp_path)
    with journals_of(spool) as journals:
        # A journal of an earlier crash with the same name, not recovered: never overwritten.
        leftover = tmp_path / "recording" / "1700000000-99.rec"
        leftover.write_bytes(b"from before")
        clash = journals.begin("1700000000-99", metadata())
        clash.append(pcm(0.2))
        eventually(lambda: "failed" in caplog.text, 10, "error logged")
        clash.append(pcm(0.2))  # the recording goes on without a journal
        clash.finish()
        other = journals.begin("1700000000-98", metadata())
        other.append(pcm(0.3))
        eventually(
            lambda: other.path.exists() and journal_pcm(other.path) == pcm(0.3), 10, "journaled"
        )
    assert leftover.read_bytes() == b"from before"
    assert "1700000000-99.rec" in caplog.text and "File exists" in caplog.text
