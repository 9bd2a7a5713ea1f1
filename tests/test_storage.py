"""The storage layer on real databases: SQLite, PostgreSQL and MariaDB through ODBC drivers."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pyodbc
import pytest
from sqlalchemy import Column, MetaData, Table, bindparam, select

from storage.messages import FOLDERS, MessageStore, StoredMessage, new_msg_id
from storage.odbc import ConnectionClass, DatabaseError, DatabaseUnavailable, OdbcPool
from storage.realtime import Realtime, RealtimeMapping
from storage.schema import (
    compile_sql,
    create_tables,
    messages_table,
    voicemail_table,
)
from tests.dbbackends import Backend, fresh_database, tcp_proxy
from tests.helpers import SPOOL, message_fields, report, run_processes, started_store

# Fixtures: a fresh database on each backend (all three / PostgreSQL and MariaDB).

pytestmark = pytest.mark.timeout(120)


@asynccontextmanager
async def started_pool(backend: Backend, max_connections: int = 2) -> AsyncIterator[OdbcPool]:
    pool = OdbcPool(backend.connection_class(max_connections=max_connections), retry_timeout=10)
    await pool.start()
    try:
        yield pool
    finally:
        await pool.close()


async def deposit(store: MessageStore, recording: bytes = b"RIFF", **overrides: object) -> int:
    return await store.store(**message_fields(recording, **overrides))


# --- message store -------------------------------------------------------------------------------


def test_recordings_of_160k_1m_and_10m_come_back_byte_exact(backend: Backend) -> None:
    async def scenario() -> None:
        async with started_store(backend) as store:
            sizes = (160 * 1024, 1024 * 1024, 10 * 1024 * 1024)
            recordings = [os.urandom(size) for size in sizes]
            for recording in recordings:
                await deposit(store, recording)
            for msgnum, recording in enumerate(recordings):
                message = await store.retrieve("default", "1234", "INBOX", msgnum)
                assert message is not None
                assert len(message.recording) == len(recording)
                assert message.recording == recording

    asyncio.run(scenario())


def test_new_messages_are_numbered_0_1_2_per_folder(backend: Backend) -> None:
    async def scenario() -> None:
        async with started_store(backend) as store:
            assert [await deposit(store) for _ in range(3)] == [0, 1, 2]
            assert await deposit(store, folder="Urgent", flag="Urgent") == 0
            assert await deposit(store, mailbox="1235") == 0
            assert await store.count("default", "1234", "INBOX") == 3
            assert await store.last_index("default", "1234", "INBOX") == 2

    asyncio.run(scenario())


def test_storing_the_same_msg_id_again_keeps_one_message(backend: Backend) -> None:
    async def scenario() -> None:
        async with started_store(backend) as store:
            await deposit(store)
            msg_id = new_msg_id()
            first = await deposit(store, msg_id=msg_id)
            again = await deposit(store, msg_id=msg_id, recording=b"other audio")
            assert first == again == 1
            assert await store.count("default", "1234", "INBOX") == 2
            message = await store.retrieve("default", "1234", "INBOX", 1)
            assert message is not None and message.recording == b"RIFF"

    asyncio.run(scenario())


def test_count_last_index_retrieve_and_delete(backend: Backend) -> None:
    async def scenario() -> None:
        async with started_store(backend) as store:
            assert await store.count("default", "1234", "INBOX") == 0
            assert await store.last_index("default", "1234", "INBOX") == -1
            assert await store.retrieve("default", "1234", "INBOX", 0) is None

            msg_id = new_msg_id()
            await deposit(store, b"first", category="sales", flag="PRIORITY", msg_id=msg_id)
            await deposit(store, b"second", callerid="Unknown", caller_context="macro-stdexten")
            message = await store.retrieve("default", "1234", "INBOX", 0)
            assert message == StoredMessage(
                dir=f"{SPOOL}default/1234/INBOX",
                msgnum=0,
                context="from-internal",
                macrocontext="",
                callerid='"Alice" <5551000>',
                origtime=1_700_000_000,
                duration=7,
                recording=b"first",
                flag="PRIORITY",
                category="sales",
                mailboxuser="1234",
                mailboxcontext="default",
                msg_id=msg_id,
            )
            second = await store.retrieve("default", "1234", "INBOX", 1)
            assert second is not None
            assert (second.callerid, second.context, second.category) == (
                "Unknown",
                "macro-stdexten",
                None,
            )

            await store.delete("default", "1234", "INBOX", 0)
            assert await store.count("default", "1234", "INBOX") == 1
            assert await store.retrieve("default", "1234", "INBOX", 0) is None
            assert await store.last_index("default", "1234", "INBOX") == 1
            await store.delete("default", "1234", "INBOX", 1)
            assert await store.last_index("default", "1234", "INBOX") == -1

    asyncio.run(scenario())


def test_a_row_without_msg_id_gets_one_on_retrieve(backend: Backend) -> None:
    async def scenario() -> None:
        async with started_store(backend) as store:
            await deposit(store)

            def clear(connection: pyodbc.Connection) -> None:
                connection.execute("UPDATE voicemessages SET msg_id = NULL")

            await store.pool.run(clear)
            first = await store.retrieve("default", "1234", "INBOX", 0)
            second = await store.retrieve("default", "1234", "INBOX", 0)
            assert first is not None and second is not None
            assert re.fullmatch(r"\d{10}-[0-9a-f]+", first.msg_id)
            assert second.msg_id == first.msg_id

    asyncio.run(scenario())


def test_a_table_without_macrocontext_works(backend: Backend) -> None:
    """Asterisk 22's alembic drops macrocontext from voicemail_messages."""
    full = messages_table("voicemail_messages")
    asterisk22 = Table(
        "voicemail_messages",
        MetaData(),
        *(
            Column(c.name, c.type, primary_key=c.primary_key, autoincrement=False)
            for c in full.columns
            if c.name != "macrocontext"
        ),
        mysql_default_charset="utf8mb4",
    )

    async def scenario() -> None:
        async with started_store(backend, table=asterisk22) as store:
            assert [await deposit(store, b"audio") for _ in range(2)] == [0, 1]
            message = await store.retrieve("default", "1234", "INBOX", 1)
            assert message is not None
            assert (message.recording, message.macrocontext) == (b"audio", "")

    asyncio.run(scenario())


def _store_twenty(connection_string: str, label: str, barrier: Any, results: Any) -> None:
    """Runs in a separate OS process: its own pool, 20 deposits into mailbox 1234."""

    async def deposits() -> list[int]:
        pool = OdbcPool(ConnectionClass(label, connection_string, max_connections=2))
        await pool.start()
        try:
            store = MessageStore(pool, "voicemessages", SPOOL)
            await asyncio.to_thread(barrier.wait, 30)  # both connected: go together
            return list(
                await asyncio.gather(
                    *(deposit(store, os.urandom(32 * 1024), callerid=label) for _ in range(20))
                )
            )
        finally:
            await pool.close()

    report(results, label, deposits)


def test_two_processes_depositing_at_once_get_40_distinct_msgnums(backend: Backend) -> None:
    """Two servers sharing one database; on SQLite, two processes on one file."""

    async def create() -> None:
        async with started_store(backend):
            pass

    asyncio.run(create())
    outcome = run_processes(
        _store_twenty,
        [(backend.connection_string, label) for label in ("server-a", "server-b")],
        timeout=60,
    )
    results = list(outcome.values())
    assert all(isinstance(result, list) for result in results), outcome

    assert sorted(results[0] + results[1]) == list(range(40))

    async def check() -> None:
        async with started_store(backend) as store:
            assert await store.count("default", "1234", "INBOX") == 40
            assert await store.last_index("default", "1234", "INBOX") == 39

            def msg_ids(connection: pyodbc.Connection) -> list[str]:
                rows = connection.execute("SELECT msg_id FROM voicemessages").fetchall()
                return [row[0] for row in rows]

            assert len(set(await store.pool.run(msg_ids))) == 40

    asyncio.run(check())


def test_a_deposit_survives_the_server_dropping_the_connection(server_backend: Backend) -> None:
    async def scenario() -> None:
        async with started_store(server_backend, max_connections=1) as store:
            assert await deposit(store) == 0
            assert await asyncio.to_thread(server_backend.terminate_connections) >= 1
            assert await deposit(store) == 1
            assert await store.count("default", "1234", "INBOX") == 2

    asyncio.run(scenario())


def test_a_deposit_during_a_short_outage_is_stored_when_the_server_returns(
    server_backend: Backend,
) -> None:
    upstream = 5432 if server_backend.name == "postgresql" else 3306

    async def scenario() -> None:
        with tcp_proxy(upstream) as proxy:
            via_proxy = server_backend.connection_string_via(proxy.port)
            pool = OdbcPool(
                ConnectionClass("asterisk", via_proxy, negative_connection_cache=0, dbtimeout=10),
                retry_timeout=10,
            )
            await pool.start()
            try:
                await create_tables(pool, [messages_table()])
                store = MessageStore(pool)
                assert await deposit(store) == 0
                proxy.stop()
                asyncio.get_running_loop().call_later(1.5, proxy.start)
                started = time.monotonic()
                assert await deposit(store) == 1
                assert 1.0 < time.monotonic() - started < 8
                assert await store.count("default", "1234", "INBOX") == 2

                proxy.stop()
                pool.retry_timeout = 1.0
                started = time.monotonic()
                with pytest.raises(DatabaseUnavailable, match=r"^\[asterisk\] "):
                    await deposit(store)
                assert time.monotonic() - started < 5
            finally:
                await pool.close()

    asyncio.run(scenario())


def test_pre_connect_opens_every_connection_at_start(server_backend: Backend) -> None:
    async def scenario() -> None:
        connection_class = server_backend.connection_class(max_connections=3)
        connection_class.pre_connect = True
        pool = OdbcPool(connection_class)
        try:
            await pool.start()
            assert await asyncio.to_thread(server_backend.session_count) == 3
        finally:
            await pool.close()
        assert await asyncio.to_thread(server_backend.session_count) == 0

    asyncio.run(scenario())


def test_a_wrong_statement_fails_at_once_with_its_sqlstate(backend: Backend) -> None:
    async def scenario() -> None:
        async with started_store(backend) as store:
            await deposit(store)

            def duplicate(connection: pyodbc.Connection) -> None:
                connection.execute(
                    "INSERT INTO voicemessages (dir, msgnum) SELECT dir, msgnum FROM voicemessages"
                )

            started = time.monotonic()
            with pytest.raises(DatabaseError) as duplicate_key:
                await store.pool.run(duplicate)
            with pytest.raises(DatabaseError) as no_table:
                await store.pool.run(lambda c: c.execute("SELECT * FROM no_such_table"))
            assert time.monotonic() - started < 2  # no reconnect-and-retry loop
            assert duplicate_key.value.sqlstate.startswith("23")
            assert no_table.value.sqlstate.startswith("42")
            assert not isinstance(no_table.value, DatabaseUnavailable)
            assert str(no_table.value).startswith("[asterisk] ")
            assert await store.count("default", "1234", "INBOX") == 1  # still usable

    asyncio.run(scenario())


# --- realtime ----------------------------------------------------------------------------------

AWKWARD_NAME = 'O\'Brien "Bob" 100% ; Zoë 日本語 ✓'


def test_realtime_load_fails_over_and_binds_awkward_values(backend: Backend) -> None:
    async def scenario() -> None:
        dead = OdbcPool(
            ConnectionClass("dead", backend.unreachable_connection_string, connect_timeout=2)
        )
        async with started_pool(backend) as good:
            await create_tables(good, [voicemail_table()])

            def insert(connection: pyodbc.Connection) -> None:
                connection.execute(
                    "INSERT INTO voicemail (context, mailbox, password, fullname, email, alias,"
                    " pager) VALUES (?, ?, ?, ?, ?, ?, NULL)",
                    ["default", "1234", "50%", AWKWARD_NAME, "a@example.com^3Bb@x^5Ey", "  "],
                )

            await good.run(insert)
            realtime = Realtime(
                [
                    RealtimeMapping("voicemail", "odbc", "good", "voicemail", priority=2),
                    RealtimeMapping("voicemail", "odbc", "dead", "voicemail", priority=1),
                ],
                {"good": good, "dead": dead},
            )
            assert realtime.has_family("voicemail") and not realtime.has_family("sippeers")

            row = await realtime.load("voicemail", mailbox="1234", context="default")
            assert row is not None
            assert row["fullname"] == AWKWARD_NAME
            assert row["password"] == "50%"
            assert row["email"] == "a@example.com;b@x^y"
            assert row["context"] == "default" and row["uniqueid"] == "1"
            assert "pager" not in row and "alias" not in row and "stamp" not in row

            # Lookup values are encoded as res_config_odbc encodes them (';' -> ^3B), so the
            # encoded email matches and the raw ';' written behind Asterisk's back does not.
            assert await realtime.load("voicemail", email="a@example.com;b@x^y") is not None
            assert await realtime.load("voicemail", fullname=AWKWARD_NAME) is None
            assert await realtime.load("voicemail", mailbox="x' OR '1'='1") is None
            assert await realtime.load("voicemail", password="5%") is None
            assert await realtime.load_where("voicemail", {"mailbox LIKE": "12%"}) is not None
            with pytest.raises(ValueError):
                await realtime.load("voicemail", **{"mailbox; DROP TABLE voicemail": "1"})

            # "Not found" on a working database is an answer, not a failure: no failover.
            good_first = Realtime(
                [
                    RealtimeMapping("voicemail", "odbc", "good", "voicemail", priority=1),
                    RealtimeMapping("voicemail", "odbc", "dead", "voicemail", priority=2),
                ],
                {"good": good, "dead": dead},
            )
            assert await good_first.load("voicemail", mailbox="9999") is None

            only_dead = Realtime(
                [RealtimeMapping("voicemail", "odbc", "dead", "voicemail")], {"dead": dead}
            )
            with pytest.raises(DatabaseUnavailable, match=r"\[dead\]"):
                await only_dead.load("voicemail", mailbox="1234")
        await dead.close()

    asyncio.run(scenario())


# --- connection classes ----------------------------------------------------------------------


def test_an_unreachable_database_at_start_names_the_class(backend: Backend) -> None:
    async def scenario() -> None:
        pool = OdbcPool(
            ConnectionClass("vm-primary", backend.unreachable_connection_string, connect_timeout=2)
        )
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailable, match=r"^\[vm-primary\] \S") as caught:
            await pool.start()
        assert isinstance(caught.value, DatabaseError)
        assert time.monotonic() - started < 5
        await pool.close()

    asyncio.run(scenario())


def test_postgresql_without_bytea_as_long_varbinary_is_refused(tmp_path: Path) -> None:
    with fresh_database("postgresql", tmp_path) as pg:
        bad = pg.connection_string.replace("ByteaAsLongVarBinary=1", "ByteaAsLongVarBinary=0")

        async def scenario() -> None:
            pool = OdbcPool(ConnectionClass("pg", bad))
            try:
                with pytest.raises(DatabaseError, match="ByteaAsLongVarBinary=1"):
                    await pool.start()
            finally:
                await pool.close()

        asyncio.run(scenario())


def test_res_odbc_options_make_a_connection_class() -> None:
    cls = ConnectionClass.from_options(
        "asterisk",
        {
            "enabled": "yes",
            "dsn": "asterisk-connector",
            "username": "asterisk",
            "password": "se;cret",
            "pre-connect": "yes",
            "max_connections": "5",
        },
    )
    assert cls.connection_string == "DSN=asterisk-connector;UID=asterisk;PWD={se;cret};"
    assert (cls.max_connections, cls.pre_connect, cls.connect_timeout) == (5, True, 10)

    direct = ConnectionClass.from_options("pg", {"connection_string": "Driver=X;Server=h"})
    assert direct.connection_string == "Driver=X;Server=h;"
    assert (direct.max_connections, direct.pre_connect) == (1, False)


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        ({}, "dsn"),
        ({"dsn": "a", "connection_string": "Driver=X"}, "not both"),
        ({"dsn": "a", "max_connections": "many"}, "max_connections"),
        ({"dsn": "a", "max_connections": "0"}, "max_connections"),
        ({"dsn": "a", "pre-connect": "maybe"}, "pre-connect"),
        ({"dsn": "a", "connect_timeout": "-1"}, "connect_timeout"),
    ],
)
def test_bad_res_odbc_options_are_refused_clearly(options: dict[str, str], complaint: str) -> None:
    with pytest.raises(ValueError, match=rf"\[broken\].*{complaint}"):
        ConnectionClass.from_options("broken", options)


# --- pure helpers ----------------------------------------------------------------------------


def test_msg_ids_look_like_asterisks_and_do_not_repeat() -> None:
    ids = {new_msg_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    for msg_id in list(ids)[:50]:
        assert re.fullmatch(r"\d{10}-[0-9a-f]{8,}", msg_id) and len(msg_id) <= 40


def test_folder_dir_is_asterisks_spool_path() -> None:
    store = MessageStore(OdbcPool(ConnectionClass("x", "DSN=x")), spool_prefix="/srv/vm")
    assert store.folder_dir("default", "1234") == "/srv/vm/default/1234/INBOX"
    assert store.folder_dir("sales", "200", "Old") == "/srv/vm/sales/200/Old"
    assert FOLDERS[0] == "INBOX" and FOLDERS[11] == "Urgent"


@pytest.mark.parametrize("backend_name", ["sqlite", "postgresql", "mysql"])
def test_compiled_sql_uses_question_marks_in_parameter_order(backend_name: str) -> None:
    table = messages_table()
    statement = select(table.c.msgnum).where(
        table.c.dir == bindparam("dir"), table.c.msgnum.in_([3, 4, 5])
    )
    compiled = compile_sql(statement, backend_name)
    assert "::" not in compiled.sql and "POSTCOMPILE" not in compiled.sql
    assert compiled.sql.count("?") == 4
    assert compiled.parameters({"dir": "/d"}) == ["/d", 3, 4, 5]
