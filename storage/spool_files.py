"""The spool directory: one fsynced file per message not yet (known to be) in the database.

See storage/spool.py for how deposits and the flusher use it. This module holds the file
format (PendingMessage and its serialisation) and the directory itself (Spool), including the
count of bytes it holds, which `spoolmaxmb` compares against: spooled message files plus the
recording journals in `recording/` (storage/recording_journal.py); files moved to `bad/` are
left to the operator and not counted.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from storage.identifiers import check_box_name
from storage.messages import FOLDERS
from storage.outbox import OutboxItem

log = logging.getLogger("storage.spool")  # one logger for the whole spool

_MAGIC = b"ARA-VM-SPOOL 1\n"  # then one line of JSON metadata, then the audio
_SUFFIX = ".vmsg"
_TMP_SUFFIX = ".tmp"
_NAME = re.compile(r"^(\d{20})-[A-Za-z0-9_.-]*\.vmsg$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
BAD_DIR = "bad"
RECORDING_DIR = "recording"  # recording journals (storage/recording_journal.py)
JOURNAL_SUFFIX = ".rec"

FolderKey = tuple[str, str, str]  # (context, mailbox, folder)


@dataclass
class PendingMessage:
    """A recorded message with everything MessageStore.store needs, as kept in the spool.

    `maxmsg` is the mailbox's limit, checked where the message number is allocated; a positive
    number, or None for no limit (anything else is passed on as None). `outbox`: the
    notifications to queue in the transaction that stores the message (storage/outbox.py).
    """

    msg_id: str
    context: str
    mailbox: str
    folder: str
    recording: bytes
    callerid: str
    origtime: int
    duration: int
    caller_context: str
    flag: str = ""
    category: str | None = None
    maxmsg: int | None = None
    outbox: tuple[OutboxItem, ...] = ()

    @property
    def folder_key(self) -> FolderKey:
        return (self.context, self.mailbox, self.folder)

    def store_arguments(self) -> dict[str, Any]:
        """Keyword arguments for MessageStore.store."""
        arguments = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
        if not (isinstance(self.maxmsg, int) and self.maxmsg > 0):
            arguments["maxmsg"] = None
        return arguments


_TEXT_FIELDS = ("msg_id", "context", "mailbox", "folder", "callerid", "caller_context", "flag")
_INT_FIELDS = ("origtime", "duration")


class CorruptSpoolFile(ValueError):
    """A spool file that cannot be read back as the message that was written."""


def validate_message(message: PendingMessage) -> None:
    """Refuse at write time what MessageStore.store would refuse later, so no poison is spooled."""
    if not message.msg_id or len(message.msg_id) > 40:
        raise ValueError(f"msg_id must be 1 to 40 characters: {message.msg_id!r}")
    if message.folder not in FOLDERS:
        raise ValueError(f"unknown folder {message.folder!r}; expected one of {', '.join(FOLDERS)}")
    for what in ("context", "mailbox"):
        check_box_name(getattr(message, what), what)
    if not isinstance(message.recording, bytes | bytearray | memoryview):
        raise ValueError("recording must be bytes")
    if message.maxmsg is not None and (
        not isinstance(message.maxmsg, int) or isinstance(message.maxmsg, bool)
    ):
        raise ValueError(f"maxmsg must be a number or None: {message.maxmsg!r}")
    if not all(isinstance(item, OutboxItem) for item in message.outbox):
        raise ValueError("outbox must hold OutboxItem values")


def _serialise(message: PendingMessage) -> bytes:
    recording = bytes(message.recording)
    metadata = {name: getattr(message, name) for name in (*_TEXT_FIELDS, *_INT_FIELDS)}
    metadata["category"] = message.category
    metadata["maxmsg"] = message.maxmsg
    if message.outbox:
        metadata["outbox"] = [item.to_json() for item in message.outbox]
    metadata["recording_length"] = len(recording)
    metadata["recording_sha256"] = hashlib.sha256(recording).hexdigest()
    line = json.dumps(metadata, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    return _MAGIC + line + b"\n" + recording


def _parse(data: bytes) -> PendingMessage:
    if not data.startswith(_MAGIC):
        raise CorruptSpoolFile("not a spool file (bad magic)")
    end = data.find(b"\n", len(_MAGIC))
    if end < 0:
        raise CorruptSpoolFile("metadata line is incomplete")
    try:
        metadata = json.loads(data[len(_MAGIC) : end])
    except ValueError as exc:
        raise CorruptSpoolFile(f"metadata is not JSON: {exc}") from None
    if not isinstance(metadata, dict):
        raise CorruptSpoolFile("metadata is not a JSON object")
    recording = data[end + 1 :]
    if len(recording) != metadata.get("recording_length"):
        raise CorruptSpoolFile(
            f"audio is {len(recording)} bytes, metadata says {metadata.get('recording_length')}"
        )
    if hashlib.sha256(recording).hexdigest() != metadata.get("recording_sha256"):
        raise CorruptSpoolFile("audio checksum does not match")
    fields: dict[str, Any] = {}
    for name in _TEXT_FIELDS:
        if not isinstance(metadata.get(name), str):
            raise CorruptSpoolFile(f"metadata field {name} is missing or not text")
        fields[name] = metadata[name]
    for name in _INT_FIELDS:
        value = metadata.get(name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise CorruptSpoolFile(f"metadata field {name} is missing or not a number")
        fields[name] = value
    category = metadata.get("category")
    if category is not None and not isinstance(category, str):
        raise CorruptSpoolFile("metadata field category is not text")
    maxmsg = metadata.get("maxmsg")  # absent in files written before maxmsg was kept
    if maxmsg is not None and (not isinstance(maxmsg, int) or isinstance(maxmsg, bool)):
        raise CorruptSpoolFile("metadata field maxmsg is not a number")
    try:  # absent in files written before the outbox existed
        outbox = tuple(OutboxItem.from_json(item) for item in metadata.get("outbox", []))
    except (ValueError, TypeError) as exc:
        raise CorruptSpoolFile(f"metadata field outbox: {exc}") from None
    return PendingMessage(
        recording=recording, category=category, maxmsg=maxmsg, outbox=outbox, **fields
    )


def fsync_directory(directory: Path) -> None:
    """Make a directory's entries (a created, renamed or removed file) survive a crash."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """A directory of messages not yet (known to be) committed, one file per message.

    File names start with a 20-digit arrival stamp, so sorting names sorts by arrival. The
    methods block on disk I/O; async code calls them through asyncio.to_thread. `bytes_used`
    is counted at start and kept up to date by every write and removal, so reading it is cheap.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.directory, 0o700)  # mkdir's mode is cut by the umask
            fsync_directory(self.directory.parent)  # so the new directory survives a crash
        self._lock = threading.Lock()
        self._last_stamp = 0
        self._sizes: dict[str, int] = {}  # path -> bytes, for every file bytes_used counts
        self._bytes = 0
        self._recover_unfinished_writes()
        for path in self._paths():
            self._last_stamp = max(self._last_stamp, _stamp_of(path))
        self._recount()

    def write(self, message: PendingMessage) -> Path:
        """Store a message durably (temporary file, fsync, rename, fsync the directory).

        Never refused for size: a finished recording is kept even past `spoolmaxmb`.
        """
        validate_message(message)
        path = self._allocate(message)
        self._write_at(path, message)
        return path

    def rewrite(self, message: PendingMessage) -> bool:
        """Replace the file holding this message (same msg_id and folder) by `message`, in one
        rename; False if no file holds it."""
        validate_message(message)
        path = self._find(message)
        if path is None:
            return False
        self._write_at(path, message)
        return True

    def remove(self, message_or_path: PendingMessage | Path) -> None:
        """Forget a message once the database holds it; removing a missing one is no error."""
        if isinstance(message_or_path, PendingMessage):
            path = self._find(message_or_path)
            if path is None:
                return
        else:
            path = Path(message_or_path)
        path.unlink(missing_ok=True)
        self._untrack(path)

    def pending(self) -> list[PendingMessage]:
        """The spooled messages, oldest first; unreadable files are moved aside to bad/."""
        messages = []
        for path in self._paths():
            message = self._load(path)
            if message is not None:
                messages.append(message)
        return messages

    def contains(self, message: PendingMessage) -> bool:
        """Whether a file holds this message already (same msg_id and folder)."""
        return self._find(message) is not None

    @property
    def bytes_used(self) -> int:
        """Bytes in spooled messages and recording journals (not bad/)."""
        return self._bytes

    def over_limit(self, limit_bytes: int | None) -> bool:
        """True while the spool holds more than `limit_bytes`; None or 0 means no limit.

        The server refuses new calls while this is true; recordings already under way are
        still written.
        """
        if limit_bytes is None or limit_bytes <= 0:
            return False
        return self._bytes > limit_bytes

    # --- used by SpoolFlusher and the recording journals ---------------------------------------

    def _allocate(self, message: PendingMessage) -> Path:
        """The next file name: a stamp that never goes backwards, then the msg_id for people."""
        with self._lock:
            self._last_stamp = max(time.time_ns(), self._last_stamp + 1)
            stamp = self._last_stamp
        return self.directory / f"{stamp:020d}-{name_part(message.msg_id)}{_SUFFIX}"

    def _write_at(self, path: Path, message: PendingMessage) -> None:
        data = _serialise(message)
        tmp = path.with_name(path.name + _TMP_SUFFIX)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.rename(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._track(path, len(data))
        fsync_directory(self.directory)

    def _track(self, path: Path, size: int) -> None:
        """Count a file at its current size (written anew, or a journal that grew)."""
        with self._lock:
            key = str(path)
            self._bytes += size - self._sizes.get(key, 0)
            self._sizes[key] = size

    def _untrack(self, path: Path) -> None:
        with self._lock:
            self._bytes -= self._sizes.pop(str(path), 0)

    def _recount(self) -> None:
        """Count what is on disk (at start: files left by a previous process)."""
        journals = self.directory / RECORDING_DIR
        paths = self._paths()
        if journals.is_dir():
            paths += sorted(journals.glob(f"*{JOURNAL_SUFFIX}"))
        for path in paths:
            try:
                self._track(path, path.stat().st_size)
            except FileNotFoundError:
                pass

    def _paths(self) -> list[Path]:
        """Spool files in arrival order (temporary files excluded)."""
        return sorted(
            entry for entry in self.directory.iterdir() if _NAME.match(entry.name) is not None
        )

    def _load(self, path: Path) -> PendingMessage | None:
        """One spooled message; None when it is gone or was unreadable (then moved to bad/)."""
        try:
            return _parse(path.read_bytes())
        except FileNotFoundError:
            self._untrack(path)
            return None
        except (OSError, CorruptSpoolFile) as exc:
            self._quarantine(path, str(exc))
            return None

    def _quarantine(self, path: Path, reason: str) -> None:
        """Move a file that cannot be stored to bad/, where an operator can look at it."""
        bad = self.directory / BAD_DIR
        try:
            bad.mkdir(mode=0o700, exist_ok=True)
            target = bad / path.name
            counter = 0
            while target.exists():
                counter += 1
                target = bad / f"{path.name}.{counter}"
            os.rename(path, target)
        except FileNotFoundError:
            self._untrack(path)
            return
        except OSError as exc:
            log.error("spool file %s is unusable (%s) and cannot be moved: %s", path, reason, exc)
            return
        self._untrack(path)
        log.error("spool file %s is unusable (%s); moved to %s", path.name, reason, target)

    def _find(self, message: PendingMessage) -> Path | None:
        """The file holding this message (same msg_id and folder), reading metadata only."""
        wanted = _message_key(message)
        for path in self._paths():
            try:
                with path.open("rb") as file:
                    if file.read(len(_MAGIC)) != _MAGIC:
                        continue
                    metadata = json.loads(file.readline(1 << 20))
            except (OSError, ValueError):
                continue
            if isinstance(metadata, dict) and wanted == tuple(
                metadata.get(name) for name in ("msg_id", "context", "mailbox", "folder")
            ):
                return path
        return None

    def _recover_unfinished_writes(self) -> None:
        """Temporary files left by a crash: complete ones were fsynced, so keep them."""
        for tmp in sorted(self.directory.glob(f"*{_SUFFIX}{_TMP_SUFFIX}")):
            final = tmp.with_name(tmp.name[: -len(_TMP_SUFFIX)])
            try:
                _parse(tmp.read_bytes())
            except (OSError, CorruptSpoolFile) as exc:
                self._quarantine(tmp, f"unfinished write: {exc}")
                continue
            if _NAME.match(final.name) is None or final.exists():
                self._quarantine(tmp, "unfinished write with an unexpected name")
                continue
            os.rename(tmp, final)
            log.warning("spool: recovered %s, written completely before a crash", final.name)
        fsync_directory(self.directory)


def name_part(msg_id: str) -> str:
    """A msg_id as it appears in file names: safe characters only, at most 40."""
    return _UNSAFE.sub("_", msg_id)[:40]


def _stamp_of(path: Path) -> int:
    match = _NAME.match(path.name)
    return int(match.group(1)) if match else 0


def _message_key(message: PendingMessage) -> tuple[str, str, str, str]:
    return (message.msg_id, message.context, message.mailbox, message.folder)
