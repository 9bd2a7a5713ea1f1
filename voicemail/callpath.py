"""Database reads made while a caller waits: bounded, and skipped while the database is away.

A caller must hear a greeting within moments of the INVITE whatever the database does. Each
read on the call path gets a wall-clock deadline (`CALL_PATH_DB_WAIT`), on top of the pool's
own `dbtimeout`, and after a transient failure (refused, lost or hung connection) the next
calls skip the database for `DB_DOWN_HOLD` seconds instead of each waiting again. A permanent
error (a missing table or column) is not an outage: it is raised for the caller to refuse the
call, and does not mark the database as away.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TypeVar

from storage.odbc import DatabaseError, DatabaseUnavailable

T = TypeVar("T")

# How long a call waits for one database read before it carries on without it (greetings
# fall back to the spoken prompts, the message goes to the local spool).
CALL_PATH_DB_WAIT = 1.5
# After a failed read, calls skip the database for this long instead of each waiting again.
DB_DOWN_HOLD = 5.0


def is_permanent(exc: DatabaseError) -> bool:
    """A configuration error (missing table, column, bad SQL), not an outage."""
    return bool(getattr(exc, "permanent", False))


class CallPathDatabase:
    def __init__(self, wait: float = CALL_PATH_DB_WAIT, hold: float = DB_DOWN_HOLD) -> None:
        self.wait = wait
        self.hold = hold
        self._failed_at = -hold

    def recently_failed(self) -> bool:
        return time.monotonic() - self._failed_at < self.hold

    def mark_failed(self) -> None:
        self._failed_at = time.monotonic()

    async def read(self, operation: Awaitable[T]) -> T:
        """Await one read within the deadline; raises DatabaseError (DatabaseUnavailable when
        the database is away, was away moments ago, or did not answer in time)."""
        if self.recently_failed():
            if asyncio.iscoroutine(operation):
                operation.close()
            raise DatabaseUnavailable("database unreachable moments ago; not asked again yet")
        try:
            return await asyncio.wait_for(operation, self.wait)
        except TimeoutError:
            self.mark_failed()
            raise DatabaseUnavailable(
                f"no answer from the database within {self.wait:.1f} s"
            ) from None
        except DatabaseError as exc:
            if not is_permanent(exc):
                self.mark_failed()
            raise
