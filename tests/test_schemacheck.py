"""`voicemail db check` on real databases: what an operator would be told."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from storage.odbc import OdbcPool
from storage.schemacheck import check_table, expected_table

from .dbbackends import Backend, fresh_database
from .server import run_cli, write_config

pytestmark = pytest.mark.timeout(120)


def test_freshly_initialised_database_has_no_findings(backend: Backend, tmp_path: Path) -> None:
    config = write_config(tmp_path / "etc", backend)
    assert run_cli("db", "init", "-C", str(config)).returncode == 0
    result = run_cli("db", "check", "-C", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 error(s), 0 note(s)" in result.stdout


def test_missing_table_is_an_error_with_the_fix(backend: Backend, tmp_path: Path) -> None:
    config = write_config(tmp_path / "etc", backend, realtime_voicemail=False)
    result = run_cli("db", "check", "-C", str(config))
    assert result.returncode == 1
    assert "error: voicemessages: table does not exist" in result.stdout
    assert "voicemail db init" in result.stdout


def test_asterisk_22_table_without_macrocontext_is_only_a_note(tmp_path: Path) -> None:
    with fresh_database("postgresql", tmp_path) as db:
        db.sql(
            "CREATE TABLE voicemessages (dir VARCHAR(255) NOT NULL, msgnum INTEGER NOT NULL, "
            "context VARCHAR(80), callerid VARCHAR(80), origtime INTEGER, duration INTEGER, "
            "recording BYTEA, flag VARCHAR(30), category VARCHAR(30), mailboxuser VARCHAR(30), "
            "mailboxcontext VARCHAR(30), msg_id VARCHAR(40), PRIMARY KEY (dir, msgnum))",
        )
        config = write_config(tmp_path / "etc", db, realtime_voicemail=False)
        assert run_cli("db", "init", "-C", str(config)).returncode == 0  # our outbox table
        result = run_cli("db", "check", "-C", str(config))
    assert result.returncode == 0, result.stdout
    assert "note: voicemessages: column macrocontext is missing" in result.stdout
    assert "ALTER TABLE voicemessages ADD COLUMN macrocontext VARCHAR(80)" in result.stdout


def test_mariadb_blob_recording_column_is_an_error_with_alter_table(tmp_path: Path) -> None:
    with fresh_database("mysql", tmp_path) as db:
        db.sql(
            "CREATE TABLE voicemessages (dir VARCHAR(255) NOT NULL, msgnum INTEGER NOT NULL, "
            "context VARCHAR(80), macrocontext VARCHAR(80), callerid VARCHAR(80), "
            "origtime INTEGER, duration INTEGER, recording BLOB, flag VARCHAR(30), "
            "category VARCHAR(30), mailboxuser VARCHAR(30), mailboxcontext VARCHAR(30), "
            "msg_id VARCHAR(40), PRIMARY KEY (dir, msgnum))",
        )
        config = write_config(tmp_path / "etc", db, realtime_voicemail=False)
        result = run_cli("db", "check", "-C", str(config))
    assert result.returncode == 1
    assert "recording is BLOB, too small" in result.stdout
    assert "ALTER TABLE voicemessages MODIFY recording LONGBLOB" in result.stdout


# --- check_table for every mapped family --------------------------------------------------------

FAMILIES = (
    ("voicemessages", "voicemessages"),
    ("voicemail", "voicemail"),
    ("sippeers", "sippeers"),
    ("extensions", "extensions"),
    ("voicemail.conf", "ast_config"),
)


def test_every_family_s_missing_table_is_reported_with_the_create_table_that_fixes_it(
    backend: Backend,
) -> None:
    async def scenario() -> None:
        pool = OdbcPool(backend.connection_class(max_connections=1))
        try:
            await pool.start()
            for family, table_name in FAMILIES:
                expected = expected_table(family, table_name)
                assert expected is not None, family
                table, role = expected
                findings = await check_table(pool, table, role)
                assert [(f.severity, f.table) for f in findings] == [("error", table_name)]
                assert findings[0].message.startswith("table does not exist")
                assert findings[0].fix.startswith(f"CREATE TABLE {table_name} (")
                # The fix is what it says: run it, and nothing is left to report.
                await pool.run(lambda c, s=findings[0].statements: [c.execute(x) for x in s])
                assert await check_table(pool, table, role) == [], family
        finally:
            await pool.close()

    asyncio.run(scenario())


def test_a_missing_column_with_a_dash_gets_a_quoted_alter_table(backend: Backend) -> None:
    async def scenario() -> None:
        pool = OdbcPool(backend.connection_class(max_connections=1))
        try:
            await pool.start()
            await pool.run(lambda c: c.execute("CREATE TABLE sippeers (name VARCHAR(40))"))
            table, role = expected_table("sippeers", "sippeers") or (None, "")
            assert table is not None
            findings = await check_table(pool, table, role)
            assert findings and all(f.severity == "note" for f in findings)
            dashed = next(f for f in findings if "call-limit" in f.message)
            assert dashed.fix.startswith("ALTER TABLE sippeers ADD COLUMN ")
            for finding in findings:
                await pool.run(lambda c, s=finding.statements: [c.execute(x) for x in s])
            assert await check_table(pool, table, role) == []
            # Without its key column the family cannot work: an error.
            await pool.run(lambda c: c.execute("CREATE TABLE extensions (context VARCHAR(40))"))
            table, role = expected_table("extensions", "extensions") or (None, "")
            assert table is not None
            errors = {f.message for f in await check_table(pool, table, role)}
            assert "column exten is missing" in errors
        finally:
            await pool.close()

    asyncio.run(scenario())


def test_no_definition_for_an_unknown_family() -> None:
    assert expected_table("queues", "queue_table") is None
    table, role = expected_table("sip.conf", "ast_config") or (None, "")
    assert role == "ast_config" and table is not None and "var_val" in table.c
