"""Loading the server's configuration directory (Asterisk's files)."""

from __future__ import annotations

import shutil
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


def test_copied_demo_keeps_its_data_below_the_copy(tmp_path: Path) -> None:
    """Relative paths resolve against the configuration directory, and the demo's stay in it,
    so a copy never writes to the system's /var (the database, the spool, the pid file)."""
    demo = Path(__file__).resolve().parent.parent / "voicemail" / "demo"
    copy = tmp_path / "somewhere" / "etc"
    shutil.copytree(demo, copy)
    config = load_server_config(copy)
    database = copy.resolve() / "var" / "voicemail.sqlite3"
    assert f"Database={database}" in config.connection_classes["asterisk"].connection_string
    assert config.local_spool == copy.resolve() / "var" / "spool"
    assert config.pidfile.parent == config.local_spool
    assert (copy / "var").is_dir()  # the database's directory comes with the copy
    assert config.warnings == []


def test_two_configurations_sharing_a_spool_get_their_own_pid_files(tmp_path: Path) -> None:
    spool = tmp_path / "shared-spool"
    pidfiles = []
    for name in ("one", "two"):
        directory = tmp_path / name
        directory.mkdir()
        (directory / "voicemail.conf").write_text(f"[general]\nlocalspool={spool}\n")
        pidfiles.append(load_server_config(directory).pidfile)
    assert pidfiles[0] != pidfiles[1]
    assert all(p.parent == spool and p.name.endswith(".pid") for p in pidfiles)
    assert load_server_config(tmp_path / "one").pidfile == pidfiles[0]  # reload finds it


def test_astrundir_holds_the_pid_file(tmp_path: Path) -> None:
    (tmp_path / "asterisk.conf").write_text("[directories]\nastrundir => run\n")
    assert load_server_config(tmp_path).pidfile == tmp_path.resolve() / "run" / "voicemail.pid"


def test_extconfig_unknown_driver_is_an_error_at_load(tmp_path: Path) -> None:
    (tmp_path / "extconfig.conf").write_text(
        "[settings]\nsippeers => odbc,asterisk\nvoicemail => pgsql,asterisk\n"
    )
    with pytest.raises(ConfigError, match=r"extconfig\.conf:3: driver 'pgsql' is not supported"):
        load_server_config(tmp_path)
    (tmp_path / "extconfig.conf").write_text("[settings]\nvoicemail => odbc,asterisk,bad name\n")
    with pytest.raises(ConfigError, match=r"extconfig\.conf:2: "):
        load_server_config(tmp_path)


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
