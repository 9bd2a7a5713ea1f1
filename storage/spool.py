"""Zero message loss: every recording goes to a local spool before the database sees it.

A deposit is written to one spool file (metadata and audio, fsynced and renamed into place) and
removed only after the database commit returned. If the database cannot be reached the caller is
still told "saved": the file stays, and a background flusher stores the spooled messages in
arrival order when the database is back. `MessageStore.store` is idempotent by msg_id within a
folder, so a crash between the commit and the removal of the file stores nothing twice.

Order per folder is kept the way Asterisk keeps it with its folder lock: deposits to one
mailbox folder are serialised, and once anything waits in the spool every new deposit queues
behind it instead of overtaking it. One spool directory belongs to one server process.

maxmsg: a finished recording is never dropped. `maxmsg` is checked by the application before
the recording (the caller hears vm-mailboxfull) and again by MessageStore.store where the
message number is allocated. When that second check finds the folder full (another server
filled it during the recording, or a message spooled during an outage finds it full when the
database is back), the message is stored anyway, past maxmsg, with a warning in the log naming
the mailbox, folder, msg_id and the limit; `DepositResult.past_maxmsg` tells the application.

spoolmaxmb: `Spool.bytes_used` counts the spool's files (spooled messages and recording
journals) and `Spool.over_limit` compares it with the limit. Nothing already recorded is
refused for size; the server refuses new calls (503) while the spool is over the limit.

The file format and the directory are in storage/spool_files.py, the crash-safe recording
journals in storage/recording_journal.py.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pyodbc

from storage.messages import MailboxFull, MessageStore
from storage.odbc import DatabaseError, DatabaseUnavailable
from storage.spool_files import (
    BAD_DIR,
    CorruptSpoolFile,
    FolderKey,
    PendingMessage,
    Spool,
    validate_message,
)

__all__ = [
    "BAD_DIR",
    "CorruptSpoolFile",
    "DepositResult",
    "PendingMessage",
    "Spool",
    "SpoolFlusher",
    "bounded_store",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

OnStored = Callable[[PendingMessage, int], Awaitable[None] | None]


@dataclass(frozen=True)
class DepositResult:
    """What became of a deposit.

    msgnum: the message number once committed; None while the message waits in the spool for
    the flusher (safe on disk: the caller is told "saved" all the same).
    past_maxmsg: the mailbox's maxmsg when the folder was already full at store time and the
    message was stored anyway past it; None otherwise.
    """

    msgnum: int | None
    past_maxmsg: int | None = None

    @property
    def spooled(self) -> bool:
        return self.msgnum is None


_SPOOLED = DepositResult(None)


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
        self,
        work: Callable[[pyodbc.Connection], T],
        *,
        retry_for: float | None = None,
        timeout: float | None = None,
    ) -> T:
        limit = self._retry_for if retry_for is None else min(retry_for, self._retry_for)
        return await self._pool.run(work, retry_for=limit, timeout=timeout)


def bounded_store(store: MessageStore, retry_for: float) -> MessageStore:
    """The same table through the same pool, with reconnecting bounded to `retry_for` seconds."""
    return MessageStore(
        _RetryBoundPool(store.pool, retry_for),  # type: ignore[arg-type]
        store.table_name,
        store.spool_prefix,
        lock_timeout=store.lock_timeout,
        outbox=store.outbox,
        on_change=store.on_change,
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
        self._results: dict[Path, asyncio.Future[DepositResult]] = {}
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
        """deposit_result(message, wait=wait).msgnum, for callers that need only the number."""
        return (await self.deposit_result(message, wait=wait)).msgnum

    async def deposit_result(self, message: PendingMessage, *, wait: float = 3.0) -> DepositResult:
        """Spool a message, then store it within `wait` seconds if the database allows.

        The result has the msgnum once committed, or None when the message stays spooled for
        the flusher (the caller is told "saved" all the same), and says whether it was stored
        past a full folder's maxmsg. Raises ValueError for a message the store can never take
        and OSError when neither the spool nor the database could take it (a full disk during an
        outage): only then is the message not saved. A spool that cannot be written (ENOSPC,
        EIO) with the database up still stores the message, straight in the database.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        validate_message(message)
        outcome = _SPOOLED
        waiting_for: asyncio.Future[DepositResult] | None = None
        async with self._folder_lock(message.folder_key):
            path = self.spool._allocate(message)
            self._in_flight.add(path)
            try:
                try:
                    await asyncio.to_thread(self.spool._write_at, path, message)
                except OSError as exc:  # stored straight in the database, or raised
                    outcome = await self._deposit_unspooled(message, exc, wait, deadline)
                    written = False
                else:
                    written = True
                queued_behind = written and bool(self._waiting)
                if written and not queued_behind:  # nothing older waits: store at once
                    outcome = await self._store_directly(message, wait, deadline - loop.time())
                    if not outcome.spooled:
                        await self._remove_file(path)
                if written and outcome.spooled:
                    self._waiting.add(path)  # the flusher's now
                    if queued_behind and not self._database_down:
                        waiting_for = self._results[path] = loop.create_future()
            finally:
                self._in_flight.discard(path)
        if outcome.msgnum is not None:
            await self._notify(message, outcome.msgnum)
            return outcome
        self._wake.set()
        if waiting_for is None:
            return outcome
        # Queued behind older spooled messages while the database is up: the flusher is about
        # to store this one too, so wait for it within what is left of `wait`.
        try:
            return await asyncio.wait_for(asyncio.shield(waiting_for), deadline - loop.time())
        except TimeoutError:
            return _SPOOLED
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
                    self._forget(path, _SPOOLED)
                    continue
                key = message.folder_key
                if key in blocked:
                    continue
                async with self._folder_lock(key):
                    try:
                        outcome = await self._store_past_maxmsg(self._flush_store, message)
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
                        self._forget(path, _SPOOLED)
                        continue
                    await self._remove_file(path)
                    self._forget(path, outcome)
                msgnum = outcome.msgnum
                assert msgnum is not None  # a store that returned has a number
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

    async def _deposit_unspooled(
        self, message: PendingMessage, error: OSError, wait: float, deadline: float
    ) -> DepositResult:
        """The spool file could not be written (a full disk, say): store the message straight
        in the database. Raises `error` when the database cannot take it either, so that the
        caller is told the message was not saved."""
        log.error(
            "spool: message %s for %s@%s cannot be written to the spool %s: %s; storing it "
            "straight in the database",
            message.msg_id,
            message.mailbox,
            message.context,
            self.spool.directory,
            error,
        )
        budget = deadline - asyncio.get_running_loop().time()
        outcome = await self._store_directly(message, wait, max(budget, 0.5), spooled=False)
        if outcome.spooled:
            log.error(
                "spool: message %s for %s@%s NOT SAVED: neither the spool (%s) nor the "
                "database could take it",
                message.msg_id,
                message.mailbox,
                message.context,
                error,
            )
            raise error
        return outcome

    async def _store_directly(
        self, message: PendingMessage, wait: float, budget: float, *, spooled: bool = True
    ) -> DepositResult:
        if budget <= 0:
            return _SPOOLED
        store = self._direct_stores.get(wait)
        if store is None:
            store = self._direct_stores[wait] = bounded_store(self.store, wait)
        try:
            return await asyncio.wait_for(self._store_past_maxmsg(store, message), budget)
        except (DatabaseError, TimeoutError) as exc:
            if not isinstance(exc, DatabaseError) or isinstance(exc, DatabaseUnavailable):
                self._database_down = True  # later deposits need not wait for the flusher
            log.warning(
                "spool: message %s for %s@%s %s, database not reached: %s",
                message.msg_id,
                message.mailbox,
                message.context,
                "kept in the spool" if spooled else "not stored",
                str(exc) or "timed out",
            )
            return _SPOOLED

    @staticmethod
    async def _store_past_maxmsg(store: MessageStore, message: PendingMessage) -> DepositResult:
        """Store a finished recording; a folder found full at store time takes it anyway."""
        arguments = message.store_arguments()
        try:
            return DepositResult(await store.store(**arguments))
        except MailboxFull as exc:
            limit = exc.maxmsg
        msgnum = await store.store(**{**arguments, "maxmsg": None})
        log.warning(
            "spool: mailbox %s@%s folder %s already held maxmsg=%d messages; message %s stored "
            "past the limit as msgnum %d (a finished recording is never dropped)",
            message.mailbox,
            message.context,
            message.folder,
            limit,
            message.msg_id,
            msgnum,
        )
        return DepositResult(msgnum, past_maxmsg=limit)

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
                future.set_result(_SPOOLED)

    def _forget(self, path: Path, outcome: DepositResult) -> None:
        self._waiting.discard(path)
        future = self._results.pop(path, None)
        if future is not None and not future.done():
            future.set_result(outcome)

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
