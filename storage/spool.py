"""Zero message loss: every recording goes to a local spool before the database sees it.

A deposit is written to one spool file (metadata and audio, fsynced and renamed into place) and
removed only after the database commit returned. If the database cannot be reached the caller is
still told "saved": the file stays, and a background flusher stores the spooled messages in
arrival order when the database is back. `MessageStore.store` is idempotent by msg_id within a
folder, so a crash between the commit and the removal of the file stores nothing twice.

Order per folder is kept the way Asterisk keeps it with its folder lock: deposits to one
mailbox folder are serialised, and once anything waits in the spool every new deposit queues
behind it instead of overtaking it. One spool directory belongs to one server process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import inspect
import json
import logging
import os
import re
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pyodbc

from storage.messages import FOLDERS, MessageStore
from storage.odbc import DatabaseError, DatabaseUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

_MAGIC = b"ARA-VM-SPOOL 1\n"  # then one line of JSON metadata, then the audio
_SUFFIX = ".vmsg"
_TMP_SUFFIX = ".tmp"
_NAME = re.compile(r"^(\d{20})-[A-Za-z0-9_.-]*\.vmsg$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
BAD_DIR = "bad"

FolderKey = tuple[str, str, str]  # (context, mailbox, folder)
OnStored = Callable[["PendingMessage", int], Awaitable[None] | None]


@dataclass
class PendingMessage:
    """A recorded message with everything MessageStore.store needs, as kept in the spool."""

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

    @property
    def folder_key(self) -> FolderKey:
        return (self.context, self.mailbox, self.folder)

    def store_arguments(self) -> dict[str, Any]:
        """Keyword arguments for MessageStore.store."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}


_TEXT_FIELDS = ("msg_id", "context", "mailbox", "folder", "callerid", "caller_context", "flag")
_INT_FIELDS = ("origtime", "duration")


class CorruptSpoolFile(ValueError):
    """A spool file that cannot be read back as the message that was written."""


def _validate(message: PendingMessage) -> None:
    """Refuse at write time what MessageStore.store would refuse later, so no poison is spooled."""
    if not message.msg_id or len(message.msg_id) > 40:
        raise ValueError(f"msg_id must be 1 to 40 characters: {message.msg_id!r}")
    if message.folder not in FOLDERS:
        raise ValueError(f"unknown folder {message.folder!r}; expected one of {', '.join(FOLDERS)}")
    for what in ("context", "mailbox"):
        value = getattr(message, what)
        if not value or "/" in value:
            raise ValueError(f"invalid {what} {value!r}")
    if not isinstance(message.recording, bytes | bytearray | memoryview):
        raise ValueError("recording must be bytes")


def _serialise(message: PendingMessage) -> bytes:
    recording = bytes(message.recording)
    metadata = {name: getattr(message, name) for name in (*_TEXT_FIELDS, *_INT_FIELDS)}
    metadata["category"] = message.category
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
    return PendingMessage(recording=recording, category=category, **fields)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """A directory of messages not yet (known to be) committed, one file per message.

    File names start with a 20-digit arrival stamp, so sorting names sorts by arrival. The
    methods block on disk I/O; async code calls them through asyncio.to_thread.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self.directory, 0o700)  # mkdir's mode is cut by the umask
            _fsync_directory(self.directory.parent)  # so the new directory survives a crash
        self._lock = threading.Lock()
        self._last_stamp = 0
        self._recover_unfinished_writes()
        for path in self._paths():
            self._last_stamp = max(self._last_stamp, _stamp_of(path))

    def write(self, message: PendingMessage) -> Path:
        """Store a message durably (temporary file, fsync, rename, fsync the directory)."""
        _validate(message)
        path = self._allocate(message)
        self._write_at(path, message)
        return path

    def remove(self, message_or_path: PendingMessage | Path) -> None:
        """Forget a message once the database holds it; removing a missing one is no error."""
        if isinstance(message_or_path, PendingMessage):
            path = self._find(message_or_path)
            if path is None:
                return
        else:
            path = Path(message_or_path)
        path.unlink(missing_ok=True)

    def pending(self) -> list[PendingMessage]:
        """The spooled messages, oldest first; unreadable files are moved aside to bad/."""
        messages = []
        for path in self._paths():
            message = self._load(path)
            if message is not None:
                messages.append(message)
        return messages

    # --- used by SpoolFlusher -----------------------------------------------------------------

    def _allocate(self, message: PendingMessage) -> Path:
        """The next file name: a stamp that never goes backwards, then the msg_id for people."""
        with self._lock:
            self._last_stamp = max(time.time_ns(), self._last_stamp + 1)
            stamp = self._last_stamp
        return self.directory / f"{stamp:020d}-{_UNSAFE.sub('_', message.msg_id)[:40]}{_SUFFIX}"

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
        _fsync_directory(self.directory)

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
            return
        except OSError as exc:
            log.error("spool file %s is unusable (%s) and cannot be moved: %s", path, reason, exc)
            return
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
        _fsync_directory(self.directory)


def _stamp_of(path: Path) -> int:
    match = _NAME.match(path.name)
    return int(match.group(1)) if match else 0


def _message_key(message: PendingMessage) -> tuple[str, str, str, str]:
    return (message.msg_id, message.context, message.mailbox, message.folder)


class _RetryBoundPool:
    """A view of an OdbcPool whose units of work give up reconnecting after `retry_for` s.

    MessageStore.store takes no retry_for, and a store abandoned by asyncio.wait_for would go on
    reconnecting on its worker thread for the pool's whole retry_timeout, starving the pool
    during an outage. Everything else is the pool's own.
    """

    def __init__(self, pool: Any, retry_for: float) -> None:
        self._pool = pool
        self._retry_for = retry_for

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)

    async def run(
        self, work: Callable[[pyodbc.Connection], T], *, retry_for: float | None = None
    ) -> T:
        limit = self._retry_for if retry_for is None else min(retry_for, self._retry_for)
        return await self._pool.run(work, retry_for=limit)


def bounded_store(store: MessageStore, retry_for: float) -> MessageStore:
    """The same table through the same pool, with reconnecting bounded to `retry_for` seconds."""
    return MessageStore(
        _RetryBoundPool(store.pool, retry_for),  # type: ignore[arg-type]
        store.table_name,
        store.spool_prefix,
    )


class SpoolFlusher:
    """Deposits through the spool, and the background task that stores what stayed there.

    on_stored(message, msgnum) is called once for every message this object stores, by
    deposit() or later by the flusher, after the commit and the removal of the spool file: the
    place to notify (MWI, email). It is awaited if it returns an awaitable, so keep it short
    (start a task for slow work). After a crash between commit and removal it may be called
    again for the same message when the next process flushes it.
    """

    def __init__(
        self,
        spool: Spool,
        store: MessageStore,
        *,
        interval: float = 2.0,
        max_backoff: float = 15.0,
        on_stored: OnStored | None = None,
    ) -> None:
        self.spool = spool
        self.store = store
        self.interval = interval
        self.max_backoff = max(max_backoff, interval)
        self.on_stored = on_stored
        # The flusher tries once (one immediate reconnect) and backs off itself.
        self._flush_store = bounded_store(store, 0.0)
        self._direct_stores: dict[float, MessageStore] = {}
        self._folder_locks: dict[FolderKey, asyncio.Lock] = {}
        # Files a deposit() is still handling; the flusher leaves them alone.
        self._in_flight: set[Path] = set()
        # Files the flusher must store: left by a previous process, or handed over by deposit().
        self._waiting: set[Path] = set(spool._paths())
        self._results: dict[Path, asyncio.Future[int | None]] = {}
        self._wake = asyncio.Event()
        self._flushing = asyncio.Lock()
        self._stopped = False
        self._database_down = False
        self._round_failed = False

    @property
    def backlog(self) -> int:
        """How many spooled messages wait for the database."""
        return len(self._waiting)

    @property
    def database_down(self) -> bool:
        """True after the flusher failed to reach the database, until it stores something."""
        return self._database_down

    async def deposit(self, message: PendingMessage, *, wait: float = 3.0) -> int | None:
        """Spool a message, then store it within `wait` seconds if the database allows.

        Returns the msgnum once committed, or None when the message stays spooled for the
        flusher (the caller is told "saved" all the same). Raises ValueError for a message the
        store can never take and OSError when the spool itself cannot be written: only then is
        the message not saved.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        _validate(message)
        msgnum: int | None = None
        result: asyncio.Future[int | None] | None = None
        async with self._folder_lock(message.folder_key):
            path = self.spool._allocate(message)
            self._in_flight.add(path)
            try:
                await asyncio.to_thread(self.spool._write_at, path, message)
                queued_behind = bool(self._waiting)
                if not queued_behind:  # nothing older waits: store at once
                    msgnum = await self._store_directly(message, wait, deadline - loop.time())
                    if msgnum is not None:
                        await self._remove_file(path)
                if msgnum is None:
                    self._waiting.add(path)  # the flusher's now
                    if queued_behind and not self._database_down:
                        result = self._results[path] = loop.create_future()
            finally:
                self._in_flight.discard(path)
        if msgnum is not None:
            await self._notify(message, msgnum)
            return msgnum
        self._wake.set()
        if result is None:
            return None
        # Queued behind older spooled messages while the database is up: the flusher is about
        # to store this one too, so wait for it within what is left of `wait`.
        try:
            return await asyncio.wait_for(asyncio.shield(result), deadline - loop.time())
        except TimeoutError:
            return None
        finally:
            self._results.pop(path, None)

    async def run(self) -> None:
        """Flush in the background until stop(): at once (what a previous process left), then
        every `interval`, when a deposit hands a message over, and after a failure with a
        backoff doubling from `interval` up to `max_backoff`."""
        failures = 0
        while not self._stopped:
            self._wake.clear()
            try:
                await self.flush_once()
                failed = self._round_failed
            except Exception:
                log.exception("spool: flush failed")
                failed = True
            if self._stopped:
                break
            if failed:
                failures += 1
                delay = min(self.max_backoff, self.interval * 2 ** (failures - 1))
                await self._pause(delay, wake_early=False)
            else:
                failures = 0
                if not self._waiting:
                    await self._pause(self.interval, wake_early=True)

    async def flush_once(self) -> int:
        """Store spooled messages in arrival order; return how many were stored.

        Stops at the first database outage. A message the database refuses with a statement
        error stays spooled (its folder is skipped until the next round, to keep the order);
        one that can never be stored is moved to bad/.
        """
        async with self._flushing:
            self._round_failed = False
            listed = await asyncio.to_thread(self.spool._paths)
            self._waiting.update(path for path in listed if path not in self._in_flight)
            stored = 0
            blocked: set[FolderKey] = set()
            for path in sorted(self._waiting):
                if self._stopped:
                    break
                message = await asyncio.to_thread(self.spool._load, path)
                if message is None:  # gone, or moved to bad/
                    self._forget(path, None)
                    continue
                key = message.folder_key
                if key in blocked:
                    continue
                async with self._folder_lock(key):
                    try:
                        msgnum = await self._flush_store.store(**message.store_arguments())
                    except DatabaseUnavailable as exc:
                        self._database_down = self._round_failed = True
                        self._release_waiting_deposits()
                        log.warning(
                            "spool: database unavailable, %d message(s) stay spooled: %s",
                            len(self._waiting),
                            exc,
                        )
                        return stored
                    except DatabaseError as exc:
                        self._round_failed = True
                        blocked.add(key)
                        log.error("spool: %s for %s not stored: %s", path.name, key, exc)
                        continue
                    except ValueError as exc:
                        await asyncio.to_thread(self.spool._quarantine, path, str(exc))
                        self._forget(path, None)
                        continue
                    await self._remove_file(path)
                    self._forget(path, msgnum)
                self._database_down = False
                stored += 1
                log.info(
                    "spool: stored %s in %s@%s %s as msgnum %d",
                    message.msg_id,
                    message.mailbox,
                    message.context,
                    message.folder,
                    msgnum,
                )
                await self._notify(message, msgnum)
            return stored

    def stop(self) -> None:
        """Make run() return after the message it is storing now."""
        self._stopped = True
        self._wake.set()

    # --- helpers ------------------------------------------------------------------------------

    def _folder_lock(self, key: FolderKey) -> asyncio.Lock:
        """One lock per mailbox folder, like Asterisk's vm_lock_path: keeps arrival order."""
        lock = self._folder_locks.get(key)
        if lock is None:
            lock = self._folder_locks[key] = asyncio.Lock()
        return lock

    async def _store_directly(
        self, message: PendingMessage, wait: float, budget: float
    ) -> int | None:
        if budget <= 0:
            return None
        store = self._direct_stores.get(wait)
        if store is None:
            store = self._direct_stores[wait] = bounded_store(self.store, wait)
        try:
            return await asyncio.wait_for(store.store(**message.store_arguments()), budget)
        except (DatabaseError, TimeoutError) as exc:
            if not isinstance(exc, DatabaseError) or isinstance(exc, DatabaseUnavailable):
                self._database_down = True  # later deposits need not wait for the flusher
            log.warning(
                "spool: message %s for %s@%s kept in the spool, database not reached: %s",
                message.msg_id,
                message.mailbox,
                message.context,
                str(exc) or "timed out",
            )
            return None

    async def _remove_file(self, path: Path) -> None:
        """Remove a stored message's file; if that fails it is stored again later (same row)."""
        try:
            await asyncio.to_thread(self.spool.remove, path)
        except OSError as exc:
            log.error("spool: %s is stored but its spool file stays: %s", path.name, exc)

    def _release_waiting_deposits(self) -> None:
        """The database is down: deposits waiting for the flusher should not wait longer."""
        for future in self._results.values():
            if not future.done():
                future.set_result(None)

    def _forget(self, path: Path, msgnum: int | None) -> None:
        self._waiting.discard(path)
        future = self._results.pop(path, None)
        if future is not None and not future.done():
            future.set_result(msgnum)

    async def _notify(self, message: PendingMessage, msgnum: int) -> None:
        if self.on_stored is None:
            return
        try:
            result = self.on_stored(message, msgnum)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("spool: on_stored failed for message %s", message.msg_id)

    async def _pause(self, seconds: float, *, wake_early: bool) -> None:
        """Sleep, ending early on stop() and, if wake_early, when a deposit hands one over."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not self._stopped:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except TimeoutError:
                return
            if wake_early:
                return
            self._wake.clear()
