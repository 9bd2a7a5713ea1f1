"""Helpers shared by the message store tests: stores on fresh tables, Asterisk's table layouts
by hand, deposits, audio checksums and several server processes on one database."""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
import os
import random
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import Table

from storage.messages import MessageStore, new_msg_id
from storage.odbc import OdbcPool
from storage.schema import create_tables, messages_table
from tests.dbbackends import Backend

SPOOL = "/var/spool/asterisk/voicemail/"  # VM_SPOOL_DIR with the default astspooldir
ORIGTIME = 1_700_000_000

# --- Asterisk's tables, made by hand ------------------------------------------------------------

# What Asterisk's alembic and how-tos use for the recording, per backend.
BLOB_TYPE = {"postgresql": "BYTEA", "mysql": "LONGBLOB", "sqlite": "BLOB"}
TABLE_OPTIONS = {"postgresql": "", "mysql": " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4", "sqlite": ""}
# The `uniqueid` serial key of the old voicemessages layout (no (dir, msgnum) key).
SERIAL_KEY = {
    "postgresql": "uniqueid SERIAL PRIMARY KEY",
    "mysql": "uniqueid INTEGER AUTO_INCREMENT PRIMARY KEY",
    "sqlite": "uniqueid INTEGER PRIMARY KEY AUTOINCREMENT",
}
# A site's own `read` column (a reserved word on PostgreSQL and MariaDB).
READ_COLUMN = {
    "postgresql": '"read" BOOLEAN DEFAULT false',
    "mysql": "`read` BOOLEAN DEFAULT 0",
    "sqlite": '"read" BOOLEAN DEFAULT 0',
}


# --- stores and deposits ------------------------------------------------------------------------


@asynccontextmanager
async def started_store(
    backend: Backend,
    ddl: str | None = None,
    table: str | Table = "voicemessages",
    max_connections: int = 2,
    pool_class: type[OdbcPool] = OdbcPool,
) -> AsyncIterator[MessageStore]:
    """A store on a fresh table: ours (create_tables; `table` a name or a Table) or one made
    by hand with `ddl`."""
    pool = pool_class(backend.connection_class(max_connections=max_connections), retry_timeout=10)
    await pool.start()
    try:
        name = table.name if isinstance(table, Table) else table
        if ddl is not None:
            await pool.run(lambda connection: connection.execute(ddl))
        else:
            await create_tables(pool, [table if isinstance(table, Table) else messages_table(name)])
        yield MessageStore(pool, name, SPOOL)
    finally:
        await pool.close()


def message_fields(recording: bytes, **overrides: Any) -> dict[str, Any]:
    """MessageStore.store() arguments for a message into default/1234/INBOX, a new msg_id."""
    fields: dict[str, Any] = {
        "context": "default",
        "mailbox": "1234",
        "folder": "INBOX",
        "recording": recording,
        "callerid": '"Alice" <5551000>',
        "origtime": ORIGTIME,
        "duration": 7,
        "caller_context": "from-internal",
        "msg_id": new_msg_id(),
    }
    fields.update(overrides)
    return fields


async def deposit(
    store: MessageStore, audio: bytes | None = None, **overrides: Any
) -> tuple[int, str, bytes]:
    """Leave a message; returns (msgnum, msg_id, audio)."""
    audio = os.urandom(random.randint(1_000, 6_000)) if audio is None else audio
    fields = message_fields(audio, **overrides)
    return await store.store(**fields), fields["msg_id"], audio


def digest(audio: bytes) -> str:
    """A checksum of a recording: which message it is, and that its audio is intact."""
    return hashlib.sha256(audio).hexdigest()


async def contents(
    store: MessageStore, context: str, mailbox: str, folder: str
) -> list[tuple[int, str, str]]:
    """(msgnum, msg_id, audio checksum) of every message of a folder, in msgnum order."""
    result = []
    for info in await store.list_messages(context, mailbox, folder):
        message = await store.retrieve(context, mailbox, folder, info.msgnum)
        assert message is not None and message.msg_id == info.msg_id
        result.append((info.msgnum, info.msg_id, digest(message.recording)))
    return result


def run(scenario: Callable[[], Coroutine[Any, Any, Any]]) -> None:
    asyncio.run(scenario())


# --- several server processes -------------------------------------------------------------------


def report(results: Any, label: str, work: Callable[[], Coroutine[Any, Any, Any]]) -> None:
    """In a server process: put (label, what `work` returned) on the queue, or (label, the
    error as text), so the test sees every process's outcome."""
    try:
        results.put((label, asyncio.run(work())))
    except BaseException as exc:
        results.put((label, f"{type(exc).__name__}: {exc}"))


def run_processes(
    target: Callable[..., None], args: Sequence[tuple[Any, ...]], timeout: float
) -> dict[str, Any]:
    """Run `target(*args[i], barrier, results)` in one spawned process per args tuple.

    The processes share a barrier (for starting together) and a results queue, on which each
    puts one (label, result) (see report()). Returns {label: result}; every process is
    joined, and killed if it does not end.
    """
    spawn = multiprocessing.get_context("spawn")
    barrier = spawn.Barrier(len(args))
    queue = spawn.Queue()
    processes = [spawn.Process(target=target, args=(*a, barrier, queue)) for a in args]
    for process in processes:
        process.start()
    try:
        return dict(queue.get(timeout=timeout) for _ in processes)
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join()
