"""The realtime rows a benchmark provisions: the callers' mailboxes and peers, and filler.

Issue 12 asks that 10 000 `voicemail` and 10 000 `sippeers` rows leave INVITE->200 as it is
with 10: `--realtime-rows N` of bench.calls adds N rows to each table beside the ones the
calls use, so the runs with 10 and with 10 000 do the same lookups per call on tables of a
different size.
"""

from __future__ import annotations

import pyodbc

from tests.dbbackends import Backend
from tests.test_register_e2e import create_sippeers

__all__ = ["add_realtime_mailboxes", "add_realtime_peers", "add_realtime_rows", "create_sippeers"]


def _insert(backend: Backend, sql: str, rows: list[tuple[str, ...]]) -> None:
    connection = pyodbc.connect(backend.connection_string, autocommit=False)
    try:
        cursor = connection.cursor()
        cursor.fast_executemany = backend.name != "sqlite"
        for start in range(0, len(rows), 1000):
            cursor.executemany(sql, rows[start : start + 1000])
        connection.commit()
    finally:
        connection.close()


def filler_names(prefix: str, count: int) -> list[str]:
    """Names no call uses: the calls' mailboxes have four digits and their peers are callerN."""
    return [f"{prefix}{n:05d}" for n in range(count)]


def add_realtime_mailboxes(backend: Backend, mailboxes: list[str]) -> None:
    _insert(
        backend,
        "INSERT INTO voicemail (context, mailbox, password, fullname) VALUES (?, ?, ?, ?)",
        [("default", m, "1234", f"Bench {m}") for m in mailboxes],
    )


def add_realtime_peers(backend: Backend, names: list[str]) -> None:
    """Phones without a secret calling from anywhere (chan_sip does not challenge them)."""
    _insert(
        backend,
        "INSERT INTO sippeers (name, type, host, context) VALUES (?, ?, ?, ?)",
        [(name, "friend", "dynamic", "default") for name in names],
    )


def add_realtime_rows(backend: Backend, mailboxes: list[str], calls: int, filler: int) -> None:
    """The calls' mailboxes, `calls` peers callerN, and `filler` rows in each table."""
    add_realtime_mailboxes(backend, mailboxes + filler_names("9", filler))
    add_realtime_peers(
        backend, [f"caller{n}" for n in range(calls)] + filler_names("filler", filler)
    )
