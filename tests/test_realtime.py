"""Realtime (ARA) families on SQLite, PostgreSQL and MariaDB, and from static .conf files."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pyodbc
import pytest
from sqlalchemy import Table

from storage.conffile import ConfigError, ConfigFile, parse_config_text
from storage.odbc import ConnectionClass, DatabaseError, DatabaseUnavailable, OdbcPool
from storage.realtime import (
    CachePolicy,
    Realtime,
    RealtimeMapping,
    Row,
    decode_value,
    encode_value,
)
from storage.realtime_tables import extensions_table, sippeers_table
from storage.schema import create_tables, voicemail_table
from storage.staticconfig import ast_config_table, load_static_config
from tests.dbbackends import Backend

pytestmark = pytest.mark.timeout(60)

AWKWARD = 'O\'Brien "Bob" 100% ^caret; Zoë 日本語 ✓'
FAMILIES = ("voicemail", "sippeers", "extensions")


@asynccontextmanager
async def started_pool(backend: Backend) -> AsyncIterator[OdbcPool]:
    pool = OdbcPool(backend.connection_class("asterisk"), retry_timeout=5)
    await pool.start()
    try:
        yield pool
    finally:
        await pool.close()


@asynccontextmanager
async def realtime_on(
    backend: Backend, tables: Sequence[Table], **options: Any
) -> AsyncIterator[tuple[Realtime, OdbcPool]]:
    """A Realtime with voicemail, sippeers and extensions mapped to class [asterisk]."""
    async with started_pool(backend) as pool:
        await create_tables(pool, list(tables))
        mappings = [RealtimeMapping(f, "odbc", "asterisk", f) for f in FAMILIES]
        yield Realtime(mappings, {"asterisk": pool}, **options), pool


async def sql(pool: OdbcPool, statement: str, *params: object) -> list[tuple[Any, ...]]:
    """Run SQL behind Realtime's back, as an administrator would."""

    def work(connection: pyodbc.Connection) -> list[tuple[Any, ...]]:
        cursor = connection.cursor()
        cursor.execute(statement, list(params))
        return [tuple(row) for row in cursor.fetchall()] if cursor.description else []

    return await pool.run(work)


# --- every operation on the voicemail family -----------------------------------------------


def test_store_load_update_and_destroy_a_voicemail_user(backend: Backend) -> None:
    async def scenario() -> None:
        async with realtime_on(backend, [voicemail_table()]) as (realtime, pool):
            user = {"context": "default", "mailbox": "1234", "password": "4242"}
            assert await realtime.store("voicemail", {**user, "fullname": AWKWARD}) == 1

            # Stored as Asterisk stores it: ';' and '^' encoded, everything else verbatim.
            assert await sql(pool, "SELECT fullname FROM voicemail") == [
                ('O\'Brien "Bob" 100% ^5Ecaret^3B Zoë 日本語 ✓',)
            ]
            row = await realtime.load("voicemail", mailbox="1234", context="default")
            assert isinstance(row, Row)
            assert row["fullname"] == AWKWARD and row.getall("fullname") == [AWKWARD]
            assert row["password"] == "4242" and row["uniqueid"] == "1"
            assert "email" not in row and "maxmsg" not in row  # NULL columns are left out
            assert await realtime.load("voicemail", fullname=AWKWARD) == row
            assert await realtime.load("voicemail", mailbox="12%") is None  # '=' is not LIKE
            assert await realtime.load("voicemail", mailbox="1' OR '1'='1") is None

            # update2: Asterisk's password change; unknown update columns are skipped.
            changed = await realtime.update2(
                "voicemail",
                {"context": "default", "mailbox": "1234"},
                {"password": "1111", "no_such_column": "x"},
            )
            assert changed == 1
            assert (await realtime.load("voicemail", mailbox="1234"))["password"] == "1111"
            same = await realtime.update2("voicemail", {"mailbox": "1234"}, {"password": "1111"})
            assert same == 1  # rows matched, also on MariaDB where nothing changed
            with pytest.raises(DatabaseError, match="no_such_column"):
                await realtime.update2("voicemail", {"no_such_column": "1"}, {"password": "2"})

            # update: empty text stays '', empty number becomes NULL, unknown column skipped.
            await realtime.update("voicemail", "mailbox", "1234", {"maxmsg": "50"})
            assert (await realtime.load("voicemail", mailbox="1234"))["maxmsg"] == "50"
            changed = await realtime.update(
                "voicemail",
                "mailbox",
                "1234",
                {"email": "", "maxmsg": "", "pager": "p;1^2", "no_such_column": "x"},
            )
            assert changed == 1
            assert await sql(pool, "SELECT email, maxmsg, pager FROM voicemail") == [
                ("", None, "p^3B1^5E2")
            ]
            row = await realtime.load("voicemail", mailbox="1234")
            assert row is not None and "email" not in row and "maxmsg" not in row
            assert row["pager"] == "p;1^2"
            assert await realtime.update("voicemail", "mailbox", "1234", {"nothing": "1"}) == 0
            assert await realtime.update("voicemail", "mailbox", "9999", {"tz": "eu"}) == 0

            # destroy: extra fields narrow the match.
            await realtime.store("voicemail", {**user, "context": "other"})
            assert await realtime.destroy("voicemail", "mailbox", "1234", {"context": "x"}) == 0
            deleted = await realtime.destroy("voicemail", "mailbox", "1234", {"context": "other"})
            assert deleted == 1
            assert await realtime.load("voicemail", mailbox="1234", context="other") is None
            assert await realtime.load("voicemail", mailbox="1234", context="default") is not None

            with pytest.raises(ValueError):
                await realtime.load("voicemail", **{"mailbox; DROP TABLE voicemail": "1"})
            with pytest.raises(ValueError):
                await realtime.update("voicemail", "mailbox", "1", {"tz = 'x', password": "1"})
            with pytest.raises(ValueError):
                await realtime.destroy("voicemail", "mailbox", "1", {"context LIKE": "%"})

    asyncio.run(scenario())


# --- operators, multi-values, ordering: sippeers and the realtime switch -------------------


def test_operators_multi_values_and_order_on_sippeers_and_extensions(backend: Backend) -> None:
    async def scenario() -> None:
        tables = [sippeers_table(), extensions_table()]
        async with realtime_on(backend, tables) as (realtime, pool):
            # Rows as an administrator writes them: ';' separates values of one option.
            insert = (
                "INSERT INTO sippeers (name, host, regseconds, allow, setvar, context)"
                " VALUES (?, ?, ?, ?, ?, ?)"
            )
            await sql(pool, insert, "carol", "dynamic", 200, "ulaw", None, "default")
            await sql(pool, insert, "alice", "dynamic", 100, "ulaw;alaw; ;gsm", "A=1^3BB", "x")
            await sql(pool, insert, "bob", "10.0.0.2", 300, "", "", "default")
            await sql(pool, insert, "a_b", "h", 0, None, None, None)
            await sql(pool, insert, "axb", "h", 0, None, None, None)
            await sql(pool, insert, "50%", "h", 0, None, None, None)

            alice = await realtime.load("sippeers", name="alice", host="dynamic")
            assert alice is not None
            assert alice.getall("allow") == ["ulaw", "alaw", "gsm"]
            assert alice["allow"] == "ulaw;alaw; ;gsm"  # the column's whole text
            assert alice.getall("setvar") == ["A=1;B"] and alice["regseconds"] == "100"
            bob = await realtime.load("sippeers", name="bob")
            assert bob is not None and "allow" not in bob and "setvar" not in bob

            def names(rows: list[Row]) -> list[str]:
                return [row["name"] for row in rows]

            # ORDER BY the first field (without its operator).
            assert names(await realtime.load_multi("sippeers", {"regseconds >": "150"})) == [
                "carol",
                "bob",
            ]
            everyone = await realtime.load_multi("sippeers", {"name LIKE": "%"})
            assert len(everyone) == 6  # collations differ on punctuation, not on letters
            assert [n for n in names(everyone) if n.isalpha()] == ["alice", "axb", "bob", "carol"]
            assert names(await realtime.load_multi("sippeers", {"name LIKE": "a\\_b"})) == ["a_b"]
            assert names(await realtime.load_multi("sippeers", {"name LIKE": "50\\%"})) == ["50%"]
            found = await realtime.load_multi(
                "sippeers", {"host": "dynamic", "regseconds <=": 200, "name !=": "carol"}
            )
            assert names(found) == ["alice"]
            assert names(await realtime.load_multi("sippeers", {"name NOT LIKE": "%a%"})) == [
                "50%",
                "bob",
            ]
            assert await realtime.load_multi("sippeers", {"name": "nobody"}) == []

            # Registration write-back, including dashed column names.
            changed = await realtime.update(
                "sippeers",
                "name",
                "alice",
                {
                    "ipaddr": "192.0.2.1",
                    "port": "5060",
                    "regseconds": "1700000000",
                    "useragent": "Zoë phone; v1",
                    "call-limit": "2",
                    "session-timers": "accept",
                    "lastms": "",
                },
            )
            assert changed == 1
            alice = await realtime.load("sippeers", name="alice")
            assert alice is not None
            assert alice["useragent"] == "Zoë phone; v1"
            assert alice.getall("useragent") == ["Zoë phone; v1"]
            assert (alice["port"], alice["call-limit"], alice["session-timers"]) == (
                "5060",
                "2",
                "accept",
            )
            assert "lastms" not in alice
            await realtime.store("sippeers", {"name": "dave", "call-limit": "4"})
            assert (await realtime.load("sippeers", **{"call-limit": "4"}))["name"] == "dave"

            # The realtime switch: exact, can-match and pattern queries.
            dialplan = [
                ("default", "100", 1, "Answer", ""),
                ("default", "100", 2, "VoiceMail", "100@default,u"),
                ("default", "_1XX", 1, "Dial", "SIP/${EXTEN},20"),
                ("default", "_X.", 1, "Playback", "invalid"),
                ("other", "_2XX", 1, "Hangup", ""),
            ]
            for context, exten, priority, app, appdata in dialplan:
                stored = await realtime.store(
                    "extensions",
                    {
                        "context": context,
                        "exten": exten,
                        "priority": priority,
                        "app": app,
                        "appdata": appdata,
                    },
                )
                assert stored == 1
            step = await realtime.load("extensions", exten="100", context="default", priority="2")
            assert step is not None
            assert (step["app"], step["appdata"]) == ("VoiceMail", "100@default,u")
            assert step.getall("appdata") == ["100@default,u"]
            patterns = await realtime.load_multi(
                "extensions", {"exten LIKE": "\\_%", "context": "default", "priority": "1"}
            )
            assert [row["exten"] for row in patterns] == ["_1XX", "_X."]
            assert patterns[0]["appdata"] == "SIP/${EXTEN},20"
            assert await realtime.load_where("extensions", {"exten LIKE": "10%"}) is not None
            assert await realtime.load_where("extensions", {"exten LIKE": "100_%"}) is None

    asyncio.run(scenario())


# --- failover --------------------------------------------------------------------------------


def test_reads_and_writes_fail_over_to_the_next_priority(backend: Backend, tmp_path: Path) -> None:
    async def scenario() -> None:
        dead = OdbcPool(
            ConnectionClass("dead", backend.unreachable_connection_string, connect_timeout=2)
        )
        (tmp_path / "voicemail-static.conf").write_text("[default]\n9000 => 9,Static User\n")
        async with started_pool(backend) as good:
            await create_tables(good, [voicemail_table()])
            realtime = Realtime(
                [
                    RealtimeMapping("voicemail", "odbc", "good", "voicemail", priority=3),
                    RealtimeMapping("voicemail", "odbc", "dead", "voicemail", priority=1),
                    RealtimeMapping("voicemail", "odbc", "missing", "voicemail", priority=2),
                ],
                {"good": good, "dead": dead},
            )
            user = {"context": "default", "mailbox": "1", "password": "1"}
            assert await realtime.store("voicemail", user) == 1
            assert await realtime.update("voicemail", "mailbox", "1", {"password": "2"}) == 1
            assert await realtime.update2("voicemail", {"mailbox": "1"}, {"tz": "eu"}) == 1
            assert names_of(await realtime.load_multi("voicemail", {"mailbox": "1"})) == ["1"]
            assert (await realtime.load("voicemail", mailbox="1"))["password"] == "2"
            assert await realtime.destroy("voicemail", "mailbox", "1") == 1

            # A static file first: reads come from it, writes skip it (it is read-only).
            mixed = Realtime(
                [
                    RealtimeMapping("voicemail", "static", "voicemail-static.conf", "voicemail"),
                    RealtimeMapping("voicemail", "odbc", "good", "voicemail", priority=2),
                ],
                {"good": good},
                config_dir=tmp_path,
            )
            assert (await mixed.load("voicemail", mailbox="9000"))["fullname"] == "Static User"
            assert await mixed.load("voicemail", mailbox="1") is None  # found nothing: no failover
            assert await mixed.store("voicemail", user) == 1
            assert len(await sql(good, "SELECT mailbox FROM voicemail")) == 1

            only_dead = Realtime(
                [RealtimeMapping("voicemail", "odbc", "dead", "voicemail")], {"dead": dead}
            )
            with pytest.raises(DatabaseUnavailable, match=r"\[dead\]"):
                await only_dead.store("voicemail", user)
            with pytest.raises(DatabaseUnavailable, match=r"\[dead\]"):
                await only_dead.load_multi("voicemail", {"mailbox": "1"})
        await dead.close()

    asyncio.run(scenario())


def names_of(rows: list[Row]) -> list[str]:
    return [row["mailbox"] for row in rows]


# --- the static driver (more in test_store_realtime_static.py) ------------------------------


def test_a_static_file_and_a_table_give_the_same_voicemail_row(
    backend: Backend, tmp_path: Path
) -> None:
    (tmp_path / "voicemail.conf").write_text(
        "[default]\n1234 => 4242,Example Mailbox,root@localhost,,attach=no|tz=eastern\n"
    )

    async def scenario() -> None:
        async with realtime_on(backend, [voicemail_table()]) as (from_table, _):
            await from_table.store(
                "voicemail",
                {
                    "context": "default",
                    "mailbox": "1234",
                    "password": "4242",
                    "fullname": "Example Mailbox",
                    "email": "root@localhost",
                    "pager": "",
                    "attach": "no",
                    "tz": "eastern",
                },
            )
            from_file = Realtime(
                [RealtimeMapping("voicemail", "static", "voicemail.conf", "voicemail")],
                {},
                config_dir=tmp_path,
            )
            table_row = await from_table.load("voicemail", mailbox="1234", context="default")
            file_row = await from_file.load("voicemail", mailbox="1234", context="default")
            assert table_row is not None and file_row is not None
            assert table_row.pop("uniqueid") == "1"
            assert table_row == file_row

    asyncio.run(scenario())


# --- static configuration from the database (ast_config) -------------------------------------

# (cat_metric, var_metric, commented, filename, category, var_name, var_val), deliberately
# not in order: the query orders them.
AST_CONFIG_ROWS = [
    (1, 2, 0, "voicemail.conf", "default", "1235", "5555,Second"),
    (2, 1, 0, "voicemail.conf", "general", "maxmsg", "100"),
    (2, 0, 0, "voicemail.conf", "general", "format", "wav49|gsm|wav"),
    (2, 3, 1, "voicemail.conf", "general", "attach", "yes"),
    (2, 2, 0, "voicemail.conf", "general", "emailsubject", AWKWARD),
    (1, 0, 0, "voicemail.conf", "default", "1234", "4242,Example Mailbox,root@localhost"),
    (1, 1, 0, "voicemail.conf", "default", "#include", "vm-sales.conf"),
    (0, 0, 0, "voicemail.conf", "zonemessages", "eastern", "America/New_York|'vm-received' Q"),
    (0, 0, 0, "vm-sales.conf", "sales", "200", "1,Sales"),
    (0, 1, 0, "vm-sales.conf", "sales", "201", "2,More Sales"),
    # The same category under another cat_metric is another section, as in a file.
    (5, 0, 0, "sip.conf", "general", "context", "public"),
    (4, 0, 0, "sip.conf", "general", "bindport", "5060"),
    (0, 0, 0, "loop-a.conf", "a", "#include", "loop-b.conf"),
    (0, 0, 0, "loop-b.conf", "b", "#include", "loop-a.conf"),
    (0, 0, 0, "broken.conf", "x", "#include", "not-there.conf"),
]

# What the rows above read as: the variable after the #include stays in [default].
EXPECTED_VOICEMAIL_CONF = f"""\
[general]
format = wav49|gsm|wav
maxmsg = 100
emailsubject = {AWKWARD.replace(";", chr(92) + ";")}
[default]
1234 = 4242,Example Mailbox,root@localhost
1235 = 5555,Second
[sales]
200 = 1,Sales
201 = 2,More Sales
[zonemessages]
eastern = America/New_York|'vm-received' Q
"""


def sections_of(conf: ConfigFile) -> list[tuple[str, list[tuple[str, str]]]]:
    return [(section.name, section.items()) for section in conf.sections]


def test_static_configuration_files_load_from_an_ast_config_table(backend: Backend) -> None:
    async def scenario() -> None:
        async with started_pool(backend) as pool:
            table = ast_config_table()
            await create_tables(pool, [table])
            for values in AST_CONFIG_ROWS:
                await sql(
                    pool,
                    "INSERT INTO ast_config (cat_metric, var_metric, commented, filename,"
                    " category, var_name, var_val) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    *values,
                )
            conf = await load_static_config(pool, "ast_config", "voicemail.conf")
            expected = parse_config_text(EXPECTED_VOICEMAIL_CONF)
            assert sections_of(conf) == sections_of(expected)
            maxmsg = conf.section("general").variable("maxmsg")
            assert maxmsg is not None and maxmsg.filename == "voicemail.conf (table ast_config)"

            sip = await load_static_config(pool, "ast_config", "sip.conf")
            assert [s.name for s in sip.sections_named("general")] == ["general", "general"]
            assert (await load_static_config(pool, "ast_config", "nothing.conf")).sections == []

            with pytest.raises(ConfigError, match="#include loop: loop-a.conf -> loop-b.conf"):
                await load_static_config(pool, "ast_config", "loop-a.conf")
            with pytest.raises(ConfigError, match="not-there.conf"):
                await load_static_config(pool, "ast_config", "broken.conf")

            async def from_elsewhere(name: str) -> ConfigFile:
                return parse_config_text(f"[{name}]\nfrom = elsewhere\n")

            other = await load_static_config(
                pool, "ast_config", "broken.conf", include=from_elsewhere
            )
            assert sections_of(other) == [("not-there.conf", [("from", "elsewhere")])]

            # Through extconfig.conf: `voicemail.conf => odbc,asterisk,ast_config`.
            realtime = Realtime(
                [RealtimeMapping("voicemail.conf", "odbc", "asterisk", "ast_config")],
                {"asterisk": pool},
            )
            mapped = await realtime.load_config_file("voicemail.conf")
            assert mapped is not None and sections_of(mapped) == sections_of(expected)
            assert await realtime.load_config_file("sip.conf") is None  # not mapped
            with pytest.raises(ValueError):
                await load_static_config(pool, "ast_config; DROP TABLE x", "voicemail.conf")

    asyncio.run(scenario())


# --- cache -----------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_cached_answers_expire_after_their_ttl(backend: Backend) -> None:
    clock = FakeClock()

    async def scenario() -> None:
        cache = {"voicemail": CachePolicy(ttl=60, negative_ttl=5)}
        tables = [voicemail_table(), sippeers_table()]
        async with realtime_on(backend, tables, cache=cache, clock=clock) as (realtime, pool):

            async def password(mailbox: str = "1") -> str | None:
                row = await realtime.load("voicemail", mailbox=mailbox)
                return None if row is None else row["password"]

            await realtime.store(
                "voicemail", {"context": "default", "mailbox": "1", "password": "a"}
            )
            assert await password() == "a"
            await sql(pool, "UPDATE voicemail SET password = 'b'")  # behind our back
            assert await password() == "a"
            row = await realtime.load("voicemail", mailbox="1")
            assert row is not None
            row["password"] = "mutated by a caller"
            clock.now += 59
            assert await password() == "a"
            clock.now += 2
            assert await password() == "b"

            # Not found is kept for negative_ttl.
            assert await password("2") is None
            await sql(
                pool, "INSERT INTO voicemail (context, mailbox, password) VALUES ('d', '2', 'c')"
            )
            assert await password("2") is None
            multi = await realtime.load_multi("voicemail", {"mailbox LIKE": "%"})
            assert len(multi) == 2
            clock.now += 5.1
            assert await password("2") == "c"

            # Our own writes are seen at once; invalidate() is what a reload calls.
            await realtime.update2("voicemail", {"mailbox": "1"}, {"password": "d"})
            assert await password() == "d"
            await sql(pool, "UPDATE voicemail SET password = 'e' WHERE mailbox = '1'")
            assert await password() == "d"
            realtime.invalidate()
            assert await password() == "e"

            # A family without a policy is not cached at all (as in Asterisk).
            await realtime.store("sippeers", {"name": "alice", "host": "dynamic"})
            assert (await realtime.load("sippeers", name="alice"))["host"] == "dynamic"
            await sql(pool, "UPDATE sippeers SET host = 'static'")
            assert (await realtime.load("sippeers", name="alice"))["host"] == "static"

    asyncio.run(scenario())


# --- pure helpers ------------------------------------------------------------------------------


def test_values_are_encoded_and_decoded_as_res_config_odbc_does() -> None:
    assert encode_value("a;b^c") == "a^3Bb^5Ec"
    assert decode_value("a^3Bb^5Ec") == "a;b^c"
    assert decode_value(encode_value(AWKWARD)) == AWKWARD
    assert decode_value("^41^zz^") == "A^zz^"  # any ^XX of an ASCII character, as Asterisk


def test_a_row_is_a_dict_with_getall() -> None:
    row = Row({"allow": "ulaw;alaw", "name": "x"}, {"allow": ["ulaw", "alaw"]})
    assert row == {"allow": "ulaw;alaw", "name": "x"}
    assert row.getall("allow") == ["ulaw", "alaw"] and row.getall("ALLOW") == ["ulaw", "alaw"]
    assert row.getall("name") == ["x"] and row.getall("missing") == []
    copy = row.copy()
    assert isinstance(copy, Row) and copy.getall("allow") == ["ulaw", "alaw"]


def test_unsupported_drivers_and_operators_are_refused() -> None:
    realtime = Realtime([RealtimeMapping("voicemail", "ldap", "x", "voicemail")], {})
    assert not realtime.has_family("voicemail")
    with pytest.raises(ValueError):
        Realtime([RealtimeMapping("voicemail", "odbc", "x", "voice mail")], {})
    odbc = Realtime([RealtimeMapping("voicemail", "odbc", "x", "voicemail")], {})
    with pytest.raises(ValueError, match="operator"):
        asyncio.run(odbc.load_where("voicemail", {"mailbox ; DELETE": "1"}))
    with pytest.raises(ValueError, match="at least one"):
        asyncio.run(odbc.load_multi("voicemail", {}))
