"""`voicemail db check` on real databases: what an operator would be told."""

from __future__ import annotations

from pathlib import Path

from .dbbackends import Backend, fresh_database
from .server import run_cli, write_config


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
