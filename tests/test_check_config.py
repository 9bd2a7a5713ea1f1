"""`voicemail check-config` and `voicemail --version` as an operator runs them."""

from __future__ import annotations

import shutil
from importlib import metadata
from pathlib import Path

import pytest

from .dbbackends import Backend, TcpProxy
from .server import REPO, run_cli, write_config

pytestmark = pytest.mark.timeout(120)

DEMO = REPO / "voicemail" / "demo"


def demo_copy(tmp_path: Path) -> Path:
    """The demo configuration, without its database (tests must not touch the repository's)."""
    target = tmp_path / "demo"
    shutil.copytree(DEMO, target, ignore=shutil.ignore_patterns("*.sqlite3", "spool"))
    return target


def line_of(path: Path, text: str) -> int:
    """The 1-based number of the first line of `path` that starts with `text`."""
    lines = path.read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if line.startswith(text))


def check(config: Path) -> tuple[int, list[str], str]:
    result = run_cli("check-config", "-C", str(config))
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, result.stdout.splitlines(), result.stderr


def test_the_demo_configuration_passes_once_its_database_exists(tmp_path: Path) -> None:
    config = demo_copy(tmp_path)
    database = config / "var" / "voicemail.sqlite3"
    code, lines, _ = check(config)
    line = line_of(config / "res_odbc.conf", "[asterisk]")
    assert code == 1
    assert lines == [
        f"{config}/res_odbc.conf:{line}: [asterisk] SQLite database {database} does not exist "
        "(`voicemail db init -C DIR` creates it)",
        "1 problem found",
    ]
    assert not database.exists()  # the check did not create an empty one

    assert run_cli("db", "init", "-C", str(config)).returncode == 0
    code, lines, _ = check(config)
    assert (code, lines) == (0, ["configuration OK"])


def test_each_broken_file_is_reported_with_its_line(tmp_path: Path) -> None:
    config = demo_copy(tmp_path)
    assert run_cli("db", "init", "-C", str(config)).returncode == 0
    voicemail_conf = config / "voicemail.conf"
    voicemail_conf.write_text(voicemail_conf.read_text().replace("maxsecs = 180", "maxsecs = 18O"))
    extensions = config / "extensions.conf"
    extensions.write_text(extensions.read_text() + "exten => 4444,one,Hangup()\n")
    maxsecs = line_of(voicemail_conf, "maxsecs")
    bad_priority = line_of(extensions, "exten => 4444")
    code, lines, _ = check(config)
    assert code == 1
    assert lines == [
        f'{voicemail_conf}:{maxsecs}: "maxsecs" must be an integer, got "18O"',
        f"{extensions}:{bad_priority}: bad priority 'one'",
        "2 problems found",
    ]


def test_warnings_are_listed_without_failing_the_check(tmp_path: Path) -> None:
    config = demo_copy(tmp_path)
    assert run_cli("db", "init", "-C", str(config)).returncode == 0
    extensions = config / "extensions.conf"
    extensions.write_text(extensions.read_text() + "exten => 4445,1,Dial(SIP/x)\n")
    code, lines, _ = check(config)
    assert code == 0
    assert lines == [
        f"warning: {extensions}:{line_of(extensions, 'exten => 4445')}: "
        "application Dial is not implemented",
        "configuration OK",
    ]


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_dead_database_class_is_reported_with_its_name(backend: Backend, tmp_path: Path) -> None:
    config = write_config(tmp_path / "etc", backend)
    assert run_cli("db", "init", "-C", str(config)).returncode == 0
    res_odbc = config / "res_odbc.conf"
    dead = backend.unreachable_connection_string.replace(";", "\\;")
    res_odbc.write_text(
        res_odbc.read_text() + f"\n[archive]\nenabled => yes\nconnection_string => {dead}\n"
    )
    code, lines, _ = check(config)
    assert code == 1
    assert len(lines) == 2 and lines[1] == "1 problem found"
    assert lines[0].startswith(f"{res_odbc}:{line_of(res_odbc, '[archive]')}: [archive] cannot")
    assert "Connection refused" in lines[0]

    # The class holding the messages dead too: both named, the tables not checked.
    res_odbc.write_text(backend.res_odbc_section().replace(
        backend.connection_string.replace(";", "\\;"), dead
    ) + f"\n[archive]\nenabled => yes\nconnection_string => {dead}\n")  # fmt: skip
    code, lines, _ = check(config)
    assert code == 1
    assert [line.split(": ", 1)[1].split(" cannot")[0] for line in lines[:2]] == [
        "[asterisk]",
        "[archive]",
    ]
    assert lines[2] == "2 problems found"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_database_that_never_answers_is_reported_within_the_short_timeout(
    backend: Backend, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "etc", backend)
    assert run_cli("db", "init", "-C", str(config)).returncode == 0
    proxy = TcpProxy(5432)
    proxy.start()
    proxy.blackhole()  # connections are accepted, nothing ever comes back
    try:
        res_odbc = config / "res_odbc.conf"
        hung = backend.connection_string_via(proxy.port).replace(";", "\\;")
        res_odbc.write_text(
            res_odbc.read_text() + f"\n[hung]\nconnection_string => {hung}\nconnect_timeout => 60\n"
        )
        code, lines, _ = check(config)  # connect_timeout 60 is cut to the check's own
    finally:
        proxy.stop()
    assert code == 1
    assert lines[0].startswith(f"{res_odbc}:{line_of(res_odbc, '[hung]')}: [hung] cannot connect")
    assert lines[1:] == ["1 problem found"]


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_missing_tables_and_unknown_classes_are_problems(backend: Backend, tmp_path: Path) -> None:
    config = write_config(tmp_path / "etc", backend)
    extconfig = config / "extconfig.conf"
    mapped = extconfig.read_text()
    extconfig.write_text(mapped + "sippeers => odbc,nosuch,sippeers\n")
    code, lines, _ = check(config)  # no `db init`: the tables are not there
    assert code == 1
    text = "\n".join(lines)
    assert (
        f"{extconfig}:{line_of(extconfig, 'sippeers')}: sippeers names res_odbc class [nosuch], "
        "which res_odbc.conf does not define (or disables)"
    ) in lines
    assert f"{config}/voicemail.conf:{line_of(config / 'voicemail.conf', 'odbcstorage')}: " in text
    assert "[asterisk] error: voicemessages: table does not exist" in text
    assert f"{extconfig}:{line_of(extconfig, 'voicemail')}: [asterisk] error: voicemail:" in text

    extconfig.write_text(mapped)
    assert run_cli("db", "init", "-C", str(config)).returncode == 0
    extconfig.write_text(mapped + "sippeers => odbc,nosuch,sippeers\n")
    code, lines, _ = check(config)
    assert code == 1
    assert lines[-1] == "1 problem found" and "[nosuch]" in lines[0]


def test_version_prints_the_installed_package_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"ara-voicemail {metadata.version('ara-voicemail')}\n"
    assert metadata.version("ara-voicemail") in (REPO / "pyproject.toml").read_text()
