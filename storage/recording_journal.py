"""Crash-safe recordings: a journal of the audio while the caller is still talking.

Until a recording is finished it lives only in memory, so a crash (SIGKILL, OOM, power) during
the call would lose it. Each recording in progress therefore has a journal file
`<spool>/recording/<msg_id>.rec`: a header with everything a PendingMessage needs except the
audio, then the PCM in blocks. One writer thread per RecordingJournals writes and fsyncs what
every open journal received, about once a second; append(), finish() and discard() only touch
memory, so the event loop never waits for the disk.

After the finished message is safely in the spool or the database the application calls
finish(), and the journal is deleted. At start-up recover() turns every journal left by a crash
into a spooled message (the flusher stores it): the audio that had been fsynced, encoded to
the format in the header, with category `recovered-after-crash`. The spool file is written
(atomically) before the journal is deleted, and nothing is spooled for a msg_id the spool
already holds; the store is idempotent by msg_id, so a crash anywhere in between, or running
recovery twice, gives one message. The same holds for a crash after the deposit but before
finish() deleted the journal: the recovered copy finds its msg_id in the folder and adds no
row (the on_stored hook may run again, as after any crash between commit and spool removal).

Why the category: it is the one free-text column Asterisk stores per message (VM_CATEGORY,
String(30)) and shows only where a template asks for it (${VM_CATEGORY} in notification mail);
flag must stay "", "Urgent" or "PRIORITY" (it picks the folder), and callerid and duration are
what the caller and the audio say. A dialplan VM_CATEGORY it replaces is logged.

File format: b"ARA-VM-REC 1\\n", one line of JSON (the header), then blocks of
(length, CRC-32 of the PCM) as two little-endian 32-bit numbers followed by the PCM. A block
torn by a crash in the middle of a write (short, or its CRC wrong) ends the audio there.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storage.audioformats import FORMATS, SAMPLE_RATE, TranscodeError, encode
from storage.spool_files import (
    JOURNAL_SUFFIX,
    RECORDING_DIR,
    PendingMessage,
    Spool,
    fsync_directory,
    name_part,
    validate_message,
)

log = logging.getLogger("storage.spool")

JOURNAL_MAGIC = b"ARA-VM-REC 1\n"
_BLOCK = struct.Struct("<II")  # PCM length, CRC-32 of the PCM
_MAX_HEADER = 1 << 16
RECOVERED_CATEGORY = "recovered-after-crash"  # fits Asterisk's category column (30 chars)
MIN_SECONDS = 0.02  # the application's floor for a recording worth keeping


@dataclass(frozen=True)
class RecordingMetadata:
    """What a recording in progress will be stored as, all but the audio.

    audio_format is voicemail.conf's stored format (storage.audioformats.FORMATS);
    min_seconds the mailbox's minsecs: recovery drops shorter audio, as the application does.
    """

    context: str
    mailbox: str
    folder: str
    callerid: str
    origtime: int
    caller_context: str
    audio_format: str
    flag: str = ""
    category: str | None = None
    maxmsg: int | None = None
    min_seconds: float = 0.0


class CorruptJournal(ValueError):
    """A journal whose header cannot be read: it cannot become a message."""


class RecordingJournal:
    """One recording in progress; the methods only touch memory and never block on disk."""

    def __init__(self, owner: RecordingJournals, msg_id: str, header: bytes, path: Path) -> None:
        self.msg_id = msg_id
        self.path = path
        self._owner = owner
        self._header = header
        self._lock = threading.Lock()
        self._buffer: list[bytes] = []
        self._state = "open"  # open, finished (delete), left (keep the file), or failed
        self._fd: int | None = None
        self._created = False  # only a file this object created is ever deleted by it
        self._size = 0

    def append(self, pcm: bytes) -> None:
        """Add received audio (8 kHz 16-bit mono PCM); written within about a second."""
        with self._lock:
            if self._state == "open":
                self._buffer.append(bytes(pcm))

    def finish(self) -> None:
        """The message is safe in the spool or the database: delete the journal."""
        self._end("finished")

    def discard(self) -> None:
        """The recording is not kept (e.g. shorter than minsecs): delete the journal."""
        self._end("finished")

    def leave(self) -> None:
        """Stop journaling but keep the file, for recover() at the next start: the message
        could not be saved now (e.g. the spool could not be written)."""
        self._end("left")

    def _end(self, state: str) -> None:
        with self._lock:
            if self._state in ("open", "failed"):
                self._state = state
                if state == "finished":
                    self._buffer.clear()
        self._owner._wake.set()

    # --- the writer thread ---------------------------------------------------------------------

    def _take(self) -> tuple[bytes, str]:
        with self._lock:
            data = b"".join(self._buffer)
            self._buffer.clear()
            return data, self._state

    def _write(self, data: bytes) -> None:
        """Create the file (header) on the first pass, then append a block; fsync."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            self._created = True
            self._append(self._header)
            os.fsync(self._fd)
            fsync_directory(self.path.parent)
        if data:
            self._append(_BLOCK.pack(len(data), zlib.crc32(data)) + data)
            os.fsync(self._fd)
        self._owner.spool._track(self.path, self._size)

    def _append(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
            self._size += written

    def _close(self, delete: bool) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if delete and self._created:
            self.path.unlink(missing_ok=True)
            self._owner.spool._untrack(self.path)


class RecordingJournals:
    """The recording journals of one spool directory and the thread that writes them.

    Call recover() once at start-up before the first begin(), and close() at shutdown.
    """

    def __init__(self, spool: Spool, *, interval: float = 1.0) -> None:
        self.spool = spool
        self.interval = interval
        self.directory = spool.directory / RECORDING_DIR
        if not self.directory.is_dir():
            self.directory.mkdir(mode=0o700, exist_ok=True)
            fsync_directory(spool.directory)
        self._lock = threading.Lock()
        self._open: dict[str, RecordingJournal] = {}  # by file name
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="recording-journal", daemon=True)
        self._thread.start()

    def begin(self, msg_id: str, metadata: RecordingMetadata) -> RecordingJournal:
        """Start the journal of a recording that will be deposited as `msg_id`.

        Raises ValueError for metadata the spool would refuse (checked now, not at the end).
        """
        if self._stop.is_set():
            raise RuntimeError("recording journals are closed")
        _check(msg_id, metadata)
        header = _header_bytes(msg_id, metadata)
        name = name_part(msg_id) + JOURNAL_SUFFIX
        journal = RecordingJournal(self, msg_id, header, self.directory / name)
        with self._lock:
            if name in self._open:
                raise ValueError(f"a recording with msg_id {msg_id!r} is already journaled")
            self._open[name] = journal
        return journal

    def close(self) -> None:
        """Write what is buffered, delete finished journals and stop the thread. Journals still
        open stay on disk: recover() makes messages of them at the next start."""
        self._stop.set()
        self._wake.set()
        self._thread.join()

    def recover(self) -> list[PendingMessage]:
        """Spool every journal a previous process left; returns the messages spooled.

        Blocks (disk, and sox for GSM): call it at start-up, before the flusher's first round,
        through asyncio.to_thread in async code. A journal that cannot be read is moved to
        bad/; one that cannot be encoded or spooled now stays for the next start.
        """
        with self._lock:
            busy = set(self._open)
        spooled = []
        for path in sorted(self.directory.glob(f"*{JOURNAL_SUFFIX}")):
            if path.name in busy:
                continue
            message = self._recover_one(path)
            if message is not None:
                spooled.append(message)
        return spooled

    # --- the writer thread ---------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            self._write_pass()
        self._write_pass()  # what arrived before close()
        with self._lock:
            journals = list(self._open.values())
        for journal in journals:
            self._attempt(journal, journal._close, False)

    def _write_pass(self) -> None:
        with self._lock:
            journals = list(self._open.items())
        for name, journal in journals:
            data, state = journal._take()
            if state == "finished":
                self._attempt(journal, journal._close, True)
            elif state in ("open", "left"):
                self._attempt(journal, journal._write, data)
            if state == "left":
                self._attempt(journal, journal._close, False)
            if state in ("finished", "left"):
                with self._lock:
                    self._open.pop(name, None)

    @staticmethod
    def _attempt(journal: RecordingJournal, step: Any, argument: Any) -> None:
        """One disk step for one journal; a failure ends that journal's journaling (the
        recording itself goes on in memory), never the thread."""
        try:
            step(argument)
        except Exception as exc:
            log.error(
                "recording journal %s: %s failed, the recording continues without it: %s",
                journal.path,
                step.__name__.strip("_"),
                exc,
            )
            with journal._lock:
                if journal._state == "open":
                    journal._state = "failed"
                    journal._buffer.clear()

    # --- recovery ------------------------------------------------------------------------------

    def _recover_one(self, path: Path) -> PendingMessage | None:
        try:
            msg_id, metadata, pcm, torn = read_journal(path.read_bytes())
            _check(msg_id, metadata)
        except (CorruptJournal, ValueError) as exc:
            self.spool._quarantine(path, f"recording journal: {exc}")
            return None
        except OSError as exc:
            log.error("recording journal %s cannot be read, left for later: %s", path, exc)
            return None
        seconds = len(pcm) / 2 / SAMPLE_RATE
        if torn:
            log.warning("recording journal %s: last block torn by the crash, cut there", path.name)
        if seconds < max(metadata.min_seconds, MIN_SECONDS):
            log.warning(
                "recording journal %s for %s@%s held %.2f s of audio, shorter than minsecs; "
                "discarded",
                path.name,
                metadata.mailbox,
                metadata.context,
                seconds,
            )
            self._delete(path)
            return None
        try:
            audio = encode(pcm, metadata.audio_format)
        except (TranscodeError, ValueError) as exc:
            log.error("recording journal %s cannot be encoded, left for later: %s", path, exc)
            return None
        message = dataclasses.replace(
            _message(msg_id, metadata, audio),
            duration=int(round(seconds)),
            category=RECOVERED_CATEGORY,
        )
        try:
            if self.spool.contains(message):
                log.warning("recording journal %s was spooled before the crash", path.name)
            else:
                self.spool.write(message)
            self._delete(path)
        except OSError as exc:
            log.error("recording journal %s cannot be spooled, left for later: %s", path, exc)
            return None
        log.warning(
            "recovered message %s for %s@%s %s after a crash: %.2f s of audio (category %s, "
            "was %s)",
            msg_id,
            metadata.mailbox,
            metadata.context,
            metadata.folder,
            seconds,
            RECOVERED_CATEGORY,
            metadata.category or "none",
        )
        return message

    def _delete(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        self.spool._untrack(path)
        fsync_directory(self.directory)


def _check(msg_id: str, metadata: RecordingMetadata) -> None:
    """Refuse at begin() what could never be spooled at the end."""
    if not isinstance(metadata.min_seconds, int | float):
        raise ValueError(f"min_seconds must be a number: {metadata.min_seconds!r}")
    if metadata.audio_format not in FORMATS:
        raise ValueError(
            f"unknown audio format {metadata.audio_format!r}; expected one of {', '.join(FORMATS)}"
        )
    validate_message(_message(msg_id, metadata, b""))


def _message(msg_id: str, metadata: RecordingMetadata, recording: bytes) -> PendingMessage:
    """The message a journal becomes (duration and category are recovery's to set)."""
    return PendingMessage(
        msg_id=msg_id,
        context=metadata.context,
        mailbox=metadata.mailbox,
        folder=metadata.folder,
        recording=recording,
        callerid=metadata.callerid,
        origtime=metadata.origtime,
        duration=0,
        caller_context=metadata.caller_context,
        flag=metadata.flag,
        category=metadata.category,
        maxmsg=metadata.maxmsg,
    )


def _header_bytes(msg_id: str, metadata: RecordingMetadata) -> bytes:
    fields = {"msg_id": msg_id, **dataclasses.asdict(metadata)}
    line = json.dumps(fields, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    return JOURNAL_MAGIC + line + b"\n"


_HEADER_TYPES: dict[str, tuple[type, ...]] = {
    "context": (str,),
    "mailbox": (str,),
    "folder": (str,),
    "callerid": (str,),
    "origtime": (int,),
    "caller_context": (str,),
    "audio_format": (str,),
    "flag": (str,),
    "category": (str, type(None)),
    "maxmsg": (int, type(None)),
    "min_seconds": (int, float),
}


def read_journal(data: bytes) -> tuple[str, RecordingMetadata, bytes, bool]:
    """(msg_id, metadata, PCM, torn) from a journal's bytes; the PCM ends at the last whole
    block, and `torn` says whether anything after it was cut."""
    if not data.startswith(JOURNAL_MAGIC):
        raise CorruptJournal("not a recording journal (bad magic)")
    end = data.find(b"\n", len(JOURNAL_MAGIC), len(JOURNAL_MAGIC) + _MAX_HEADER)
    if end < 0:
        raise CorruptJournal("header is incomplete")
    try:
        fields: Any = json.loads(data[len(JOURNAL_MAGIC) : end])
    except ValueError as exc:
        raise CorruptJournal(f"header is not JSON: {exc}") from None
    if not isinstance(fields, dict) or not isinstance(fields.get("msg_id"), str):
        raise CorruptJournal("header has no msg_id")
    for name, types in _HEADER_TYPES.items():
        value = fields.get(name)
        if not isinstance(value, types) or isinstance(value, bool):
            raise CorruptJournal(f"header field {name} is missing or of the wrong type")
    metadata = RecordingMetadata(**{name: fields[name] for name in _HEADER_TYPES})
    blocks = []
    offset = end + 1
    while offset + _BLOCK.size <= len(data):
        length, crc = _BLOCK.unpack_from(data, offset)
        block = data[offset + _BLOCK.size : offset + _BLOCK.size + length]
        if len(block) < length or zlib.crc32(block) != crc:
            break
        blocks.append(block)
        offset += _BLOCK.size + length
    pcm = b"".join(blocks)
    pcm = pcm[: len(pcm) - len(pcm) % 2]
    return fields["msg_id"], metadata, pcm, offset != len(data)
