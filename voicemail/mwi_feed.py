"""The server's mailbox change feed: changes committed by any server reach our lamps at once.

Every folder write records its mailboxes in the change log inside its transaction
(storage/changelog.py). This feed turns that into `changed(mailbox, context)` calls:

* PostgreSQL: LISTEN through psycopg (pyodbc cannot wait for notifications); the NOTIFY is
  delivered at COMMIT, so a change arrives within milliseconds. After the listener
  reconnects, notifications sent meanwhile are lost, so `resync()` is called (recount every
  watched mailbox). If no libpq conninfo can be built from the ODBC connection string (a
  DSN) or psycopg cannot be loaded, the feed says so once and follows the table instead.
* MariaDB and SQLite: the change log is read by id every `changelogpollms` milliseconds
  (voicemail.conf [general], ours, default 200): one indexed range query, however many
  mailboxes there are.

A server sees its own changes through the feed too; MwiService's recount then finds the
counts its phones already have and sends nothing. Old change rows are pruned every
`prune_interval` seconds (rows older than `keep` seconds; every server does it, it is one
cheap DELETE).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from storage.changelog import RESYNC, ChangeFollower, ChangeLog, PgChangeListener, libpq_conninfo
from storage.odbc import DatabaseError

log = logging.getLogger(__name__)

DEFAULT_CHANGELOG_POLL_MS = 200
PRUNE_INTERVAL = 60.0
KEEP_SECONDS = 600.0  # well past ChangeLog.gap_grace: a follower never needs older rows
LISTEN_WAIT = 5.0  # start() waits this long for LISTEN to be in force

Changed = Callable[[str, str], None]  # (mailbox, context), as MwiService.mailbox_changed


def listener_conninfo(backend: str, odbc_connection_string: str) -> str | None:
    """The libpq conninfo the PostgreSQL listener uses, or None (logged) to follow the
    change-log table instead: not PostgreSQL, a DSN, or psycopg missing."""
    if backend != "postgresql":
        return None
    try:
        conninfo = libpq_conninfo(odbc_connection_string)
    except ValueError as exc:
        log.warning("MWI feed: cannot LISTEN (%s); reading the change log table instead", exc)
        return None
    try:
        import psycopg  # noqa: F401 - only checking that it loads
    except ImportError as exc:
        log.warning("MWI feed: cannot LISTEN (%s); reading the change log table instead", exc)
        return None
    return conninfo


def follow_interval(general: dict[str, str]) -> float:
    """Seconds between reads of the change log: voicemail.conf [general] changelogpollms."""
    return int(general.get("changelogpollms", DEFAULT_CHANGELOG_POLL_MS)) / 1000


class MwiFeed:
    """Delivers mailbox changes from the change log (LISTEN or polling by id)."""

    def __init__(
        self,
        changelog: ChangeLog,
        changed: Changed,
        resync: Callable[[], None],
        *,
        conninfo: str | None,
        follow_interval: float = DEFAULT_CHANGELOG_POLL_MS / 1000,
        prune_interval: float = PRUNE_INTERVAL,
        keep: float = KEEP_SECONDS,
    ) -> None:
        self.changelog = changelog
        self.changed = changed
        self.resync = resync
        self.conninfo = conninfo
        self.follow_interval = follow_interval
        self.prune_interval = prune_interval
        self.keep = keep
        self.listener: PgChangeListener | None = None
        self.follower: ChangeFollower | None = None
        self._tasks: list[asyncio.Task[None]] = []
        # Python 3.11's wait_for may swallow a cancel that meets a finishing query (the
        # pool's), so the loops also look at this flag.
        self._stopping = False

    @property
    def mode(self) -> str:
        return "listen" if self.conninfo is not None else "follow"

    async def start(self) -> None:
        """Begin at the end of the log (a starting server counts what its phones watch when
        they register or subscribe)."""
        if self.conninfo is not None:
            self.listener = PgChangeListener(self.conninfo, self.changelog.channel)
            self._tasks.append(asyncio.ensure_future(self._listen(self.listener)))
            try:
                await asyncio.wait_for(self.listener.listening.wait(), LISTEN_WAIT)
                log.info("MWI feed: LISTEN on PostgreSQL channel %s", self.changelog.channel)
            except TimeoutError:
                log.warning("MWI feed: LISTEN not in force yet; lamps catch up once it is")
                self._tasks.append(asyncio.ensure_future(self._resync_when_listening()))
        else:
            self.follower = ChangeFollower(self.changelog)
            await self.follower.start_at_end()
            self._tasks.append(asyncio.ensure_future(self._follow(self.follower)))
            log.info(
                "MWI feed: reading the change log every %d ms",
                round(self.follow_interval * 1000),
            )
        self._tasks.append(asyncio.ensure_future(self._prune()))

    async def stop(self) -> None:
        self._stopping = True
        if self.listener is not None:
            self.listener.close()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _listen(self, listener: PgChangeListener) -> None:
        while not self._stopping:
            try:
                async for context, mailbox in listener:
                    if (context, mailbox) == RESYNC:
                        log.info("MWI feed: listener reconnected, recounting watched mailboxes")
                        self.resync()
                    else:
                        self.changed(mailbox, context)
                return  # closed
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the listener must outlive a surprise
                log.exception("MWI feed: listener failed; starting it again")
            await asyncio.sleep(1.0)
            self.resync()

    async def _resync_when_listening(self) -> None:
        assert self.listener is not None
        await self.listener.listening.wait()
        log.info("MWI feed: LISTEN on PostgreSQL channel %s", self.changelog.channel)
        self.resync()

    async def _follow(self, follower: ChangeFollower) -> None:
        failing = False
        while not self._stopping:
            try:
                for context, mailbox in await follower.poll():
                    self.changed(mailbox, context)
                if failing:
                    log.info("MWI feed: reading the change log again")
                failing = False
            except DatabaseError as exc:
                if not failing:
                    log.warning("MWI feed: cannot read the change log: %s", exc)
                failing = True
            except Exception:  # noqa: BLE001 - the feed must outlive a surprise
                log.exception("MWI feed: handling a change failed")
            await asyncio.sleep(self.follow_interval)

    async def _prune(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.prune_interval)
            try:
                removed = await self.changelog.prune(self.keep)
            except DatabaseError as exc:
                log.warning("MWI feed: cannot prune the change log: %s", exc)
                continue
            if removed:
                log.debug("MWI feed: pruned %d change row(s)", removed)
