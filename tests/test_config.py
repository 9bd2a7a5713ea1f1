"""Loading the server's configuration directory (Asterisk's files)."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.conffile import ConfigError
from voicemail.config import load_server_config, parse_mailbox_line, resolve_sqlite_database


def test_mailbox_line_fields_and_options() -> None:
    box = parse_mailbox_line(
        "default", "1000", "1234,Alice Example,alice@example.com,,attach=no|tz=eastern"
    )
    assert (box.password, box.fullname, box.email, box.pager) == (
        "1234",
        "Alice Example",
        "alice@example.com",
        "",
    )
    assert box.options == {"attach": "no", "tz": "eastern"}
    assert parse_mailbox_line("default", "1001", "4321").fullname == ""


def test_sqlite_database_path_is_relative_to_the_config_directory(tmp_path: Path) -> None:
    resolved = resolve_sqlite_database("Driver=SQLite3;Database=db/vm.sqlite3;Timeout=5", tmp_path)
    assert resolved == f"Driver=SQLite3;Database={tmp_path / 'db' / 'vm.sqlite3'};Timeout=5"
    absolute = "Driver=SQLite3;Database=/x/vm.sqlite3"
    assert resolve_sqlite_database(absolute, tmp_path) == absolute
    postgres = "Driver=PostgreSQL Unicode;Database=vm"
    assert resolve_sqlite_database(postgres, tmp_path) == postgres


def test_demo_configuration_loads() -> None:
    demo = Path(__file__).resolve().parent.parent / "voicemail" / "demo"
    config = load_server_config(demo)
    assert config.spool_prefix == "/var/spool/asterisk/voicemail/"
    assert ("default", "1000") in config.voicemail.mailboxes
    assert config.voicemail.mailboxes[("default", "1000")].password == "1234"
    assert config.sip.bindaddr == "127.0.0.1" and config.sip.bindport == 5060
    assert "Database=" in config.connection_classes["asterisk"].connection_string
    assert [(m.family, m.driver, m.database, m.table) for m in config.realtime] == [
        ("voicemail", "odbc", "asterisk", "voicemail")
    ]


def test_extconfig_line_without_database_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "extconfig.conf").write_text("[settings]\nvoicemail => odbc\n")
    with pytest.raises(ConfigError, match=r"extconfig\.conf:2: "):
        load_server_config(tmp_path)


def test_res_odbc_class_without_dsn_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "res_odbc.conf").write_text("[asterisk]\nenabled => yes\nusername => x\n")
    with pytest.raises(ConfigError, match=r"res_odbc\.conf:1: "):
        load_server_config(tmp_path)


def test_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_server_config(tmp_path / "nope")
