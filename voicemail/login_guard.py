"""Mailbox login attempts: lockout shared by every server, and the audit trail.

With a LoginStore (storage/logins.py) the failures are counted in the database, so a brute
force spread over calls and servers is stopped after `maxfailedlogins` wrong PINs: the mailbox
is then locked for `lockoutsecs`, doubling on each further lockout up to a day. While locked,
an attempt is refused without checking the PIN (the right PIN does not get in either, so a
guesser learns nothing) and without extending the lock. A good login resets it all.

The database decides: when it cannot be read or written, the attempt is refused as LOCKED
(fail closed) with a log line, because letting a caller in without counting would let a
guesser go on forever during an outage. No PIN is ever logged.

`LoginGuard()` without a store checks every attempt and remembers nothing (tests, tools).
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from storage.logins import LoginStore
from storage.odbc import DatabaseError

log = logging.getLogger(__name__)


class LoginOutcome(enum.Enum):
    OK = "ok"  # the PIN matched; the failure count is reset
    WRONG = "wrong"  # the PIN did not match; counted
    LOCKED = "locked"  # locked out: the PIN was not even checked


@dataclass(frozen=True)
class LoginAttempt:
    """Who tried: for the audit row. No PIN is ever part of it."""

    mailbox: str
    context: str
    caller_id: str = ""
    source: str = ""  # the caller's network address, "ip:port" (or "" when unknown)


class LoginGuard:
    """Every VoiceMailMain login of one server goes through attempt()."""

    def __init__(
        self, logins: LoginStore | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.logins = logins
        self.clock = clock

    async def attempt(
        self,
        who: LoginAttempt,
        verify: Callable[[], Awaitable[bool]],
        *,
        maxfailedlogins: int = 5,
        lockoutsecs: float = 60.0,
    ) -> LoginOutcome:
        """Refuse without calling `verify` while the mailbox is locked; else verify, record
        the outcome (and a lockout after `maxfailedlogins` failures), and return it."""
        store = self.logins
        if store is None:
            return LoginOutcome.OK if await verify() else LoginOutcome.WRONG
        box = f"{who.mailbox}@{who.context}"
        extra = {"caller_id": who.caller_id, "source": who.source}
        try:
            locked_until = await store.check(who.mailbox, who.context, self.clock())
            if locked_until is not None:
                await store.record_locked(who.mailbox, who.context, self.clock(), **extra)
                log.warning(
                    "mailbox %s: login refused, locked for %.0f s more (caller %s from %s)",
                    box,
                    max(0.0, locked_until - self.clock()),
                    who.caller_id or "unknown",
                    who.source or "unknown",
                )
                return LoginOutcome.LOCKED
        except DatabaseError as exc:
            return self._fail_closed(box, "before checking the PIN", exc)
        if await verify():
            try:
                await store.record_success(who.mailbox, who.context, self.clock(), **extra)
            except DatabaseError as exc:
                return self._fail_closed(box, "after a good PIN (not audited)", exc)
            return LoginOutcome.OK
        try:
            result = await store.record_failure(
                who.mailbox,
                who.context,
                self.clock(),
                maxfailedlogins=maxfailedlogins,
                lockoutsecs=lockoutsecs,
                **extra,
            )
        except DatabaseError as exc:
            return self._fail_closed(box, "after a wrong PIN (not counted)", exc)
        if result.locked_until is not None:
            log.warning(
                "mailbox %s: locked out for %.0f s after %d wrong PINs (lockout %d; last "
                "caller %s from %s)",
                box,
                result.locked_until - self.clock(),
                maxfailedlogins,
                result.lockouts,
                who.caller_id or "unknown",
                who.source or "unknown",
            )
        else:
            log.info("mailbox %s: wrong PIN (%d in a row)", box, result.failures)
        return LoginOutcome.WRONG

    @staticmethod
    def _fail_closed(box: str, when: str, exc: DatabaseError) -> LoginOutcome:
        log.error(
            "mailbox %s: login refused: the login database cannot be used %s (%s); "
            "logins fail closed until it is back",
            box,
            when,
            exc,
        )
        return LoginOutcome.LOCKED
