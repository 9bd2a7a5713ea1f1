"""Where a new PIN goes: the realtime `voicemail` row (SQLite, PostgreSQL, MariaDB), the
voicemail.conf line (real files, #include, comments), and the externpass* scripts (real
processes). The in-memory side is checked through MailboxDirectory.find, as a call sees it."""

from __future__ import annotations

import asyncio
import logging
import stat
from pathlib import Path

import pytest

from storage.realtime import Realtime
from storage.schema import voicemail_table
from voicemail.config import load_voicemail_conf
from voicemail.mailboxes import MailboxDirectory
from voicemail.password_writer import (
    PasswordWriteError,
    run_externpass,
    run_externpasscheck,
    write_conf_password,
)
from voicemail.pins import is_hashed, verify_pin
from voicemail.vmmain.access import MailboxAccess
from voicemail.vmmain.events import MailboxInfo
from voicemail.vmmain.options import MenuSettings

from .dbbackends import Backend
from .test_realtime import realtime_on, sql

pytestmark = pytest.mark.timeout(60)

CONF = (
    b"; site voicemail.conf -- keep this comment\r\n"
    b"[general]\r\n"
    b"format=wav   ; trailing comment\r\n"
    b"\r\n"
    b"[default]\r\n"
    b"1000 => 1234,Alice Example,alice@example.com,,attach=no|tz=eu ; Alice\r\n"
    b"1001=>5555\r\n"
    b'#include "more.conf"\r\n'
    b"\r\n"
    b"[other]\r\n"
    b"1000 => 1234,Other Alice\r\n"
)
MORE = b"; included\n2000 => 4242 , Bob\n"


def script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


@pytest.fixture
def conf_dir(tmp_path: Path) -> Path:
    (tmp_path / "voicemail.conf").write_bytes(CONF)
    (tmp_path / "more.conf").write_bytes(MORE)
    (tmp_path / "voicemail.conf").chmod(0o640)
    return tmp_path


def directory(conf_dir: Path) -> MailboxDirectory:
    settings = load_voicemail_conf(conf_dir / "voicemail.conf")
    return MailboxDirectory(settings, Realtime([], {}), conf_path=conf_dir / "voicemail.conf")


# --- voicemail.conf ---------------------------------------------------------------------------


def test_conf_line_rewritten_other_bytes_kept_atomically(conf_dir: Path) -> None:
    path = conf_dir / "voicemail.conf"
    inode = path.stat().st_ino
    written = write_conf_password(path, "default", "1000", "1234", "98765")
    assert written == path.resolve()
    expected = CONF.replace(b"1000 => 1234,Alice", b"1000 => 98765,Alice")
    assert path.read_bytes() == expected
    assert path.stat().st_ino != inode  # a new file renamed over the old one
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [p.name for p in conf_dir.iterdir() if p.name.startswith(".")] == []
    # [other] 1000 untouched; the file still parses to the same mailboxes
    settings = load_voicemail_conf(path)
    assert settings.mailboxes[("default", "1000")].password == "98765"
    assert settings.mailboxes[("other", "1000")].password == "1234"
    assert settings.mailboxes[("default", "1000")].options == {"attach": "no", "tz": "eu"}


def test_conf_line_in_an_included_file(conf_dir: Path) -> None:
    write_conf_password(conf_dir / "voicemail.conf", "default", "2000", "4242", "1111")
    assert (conf_dir / "more.conf").read_bytes() == b"; included\n2000 => 1111 , Bob\n"
    assert (conf_dir / "voicemail.conf").read_bytes() == CONF


def test_conf_refuses_what_it_cannot_rewrite_safely(conf_dir: Path) -> None:
    path = conf_dir / "voicemail.conf"
    for context, mailbox, old in (
        ("default", "3000", "1"),  # no such mailbox
        ("default", "1000", "4321"),  # the file was edited since it was loaded
    ):
        with pytest.raises(PasswordWriteError) as caught:
            write_conf_password(path, context, mailbox, old, "98765")
        assert "98765" not in str(caught.value)
    templated = conf_dir / "tmpl.conf"
    templated.write_text("[base](!)\n1000 => 1234\n[default](base)\n1001 => 2\n")
    with pytest.raises(PasswordWriteError, match="template"):
        write_conf_password(templated, "default", "1000", "1234", "98765")
    assert path.read_bytes() == CONF


def test_static_mailbox_new_pin_works_without_reload(conf_dir: Path) -> None:
    async def work() -> None:
        boxes = directory(conf_dir)
        assert await boxes.change_password("1000", "default", "98765", pinhash=False)
        found = await boxes.find("1000", "default")
        assert found is not None and found.password == "98765"
        other = await boxes.find("1000", "other")
        assert other is not None and other.password == "1234"

    asyncio.run(work())
    assert b"1000 => 98765,Alice" in (conf_dir / "voicemail.conf").read_bytes()


def test_static_mailbox_new_pin_is_hashed_and_the_file_still_reads(conf_dir: Path) -> None:
    async def work() -> str:
        boxes = directory(conf_dir)  # [general] has no pinhash: yes
        assert await boxes.change_password("1000", "default", "98765")
        found = await boxes.find("1000", "default")
        assert found is not None and is_hashed(found.password)
        return found.password

    stored = asyncio.run(work())
    text = (conf_dir / "voicemail.conf").read_bytes()
    assert b"98765" not in text
    assert f"1000 => {stored},Alice Example,alice@example.com,,attach=no".encode() in text
    reread = load_voicemail_conf(conf_dir / "voicemail.conf").mailboxes[("default", "1000")]
    assert reread.password == stored and reread.fullname == "Alice Example"
    assert reread.options == {"attach": "no", "tz": "eu"}
    assert verify_pin(reread.password, "98765") and not verify_pin(reread.password, "98766")


def test_static_write_failure_is_logged_not_raised(
    conf_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def work() -> None:
        boxes = directory(conf_dir)
        (conf_dir / "voicemail.conf").write_bytes(CONF.replace(b"=> 1234,Alice", b"=> 7,Alice"))
        assert not await boxes.change_password("1000", "default", "98765")
        found = await boxes.find("1000", "default")
        assert found is not None and found.password == "1234"  # nothing claimed
        no_file = MailboxDirectory(boxes.settings, Realtime([], {}), conf_path=None)
        assert not await no_file.change_password("1000", "default", "98765")

    with caplog.at_level(logging.INFO):
        asyncio.run(work())
    assert "new PIN not stored" in caplog.text
    assert "98765" not in caplog.text


# --- scripts ----------------------------------------------------------------------------------


def test_externpasscheck_arguments_and_verdicts(tmp_path: Path) -> None:
    args = tmp_path / "args"
    cases = {
        "echo VALID": True,
        "echo 'valid, thanks'": True,
        "echo INVALID": False,
        "true": False,  # prints nothing
        "echo 'FAILURE: could not run'": True,  # Asterisk lets it pass
    }
    for body, expected in cases.items():
        check = script(tmp_path / "check", f'echo "$@" > {args}\n{body}\n')
        verdict = asyncio.run(run_externpasscheck(str(check), "1000", "default", "1234", "5678"))
        assert verdict is expected, body
        assert args.read_text() == "1000 default 1234 5678\n"
    missing = asyncio.run(run_externpasscheck(str(tmp_path / "nope"), "1", "d", "1", "2"))
    assert missing is True  # Asterisk's child prints FAILURE when execv fails


def test_externpass_replaces_the_write_and_externpassnotify_follows_it(conf_dir: Path) -> None:
    args = conf_dir / "args"
    ok = script(conf_dir / "store", f'echo "$@" >> {args}\n')
    fail = script(conf_dir / "fail", "exit 3\n")
    assert asyncio.run(run_externpass(str(ok), "default", "1000", "5678"))
    assert args.read_text() == "default 1000 5678\n"
    assert not asyncio.run(run_externpass(str(fail), "default", "1000", "5678"))

    async def work() -> None:
        boxes = directory(conf_dir)
        # externpass: the script only; voicemail.conf untouched, the running server knows it
        assert await boxes.change_password("1000", "default", "1111", externpass=str(ok))
        assert (conf_dir / "voicemail.conf").read_bytes() == CONF
        found = await boxes.find("1000", "default")
        assert found is not None and found.password == "1111"
        assert not await boxes.change_password("1001", "default", "2222", externpass=str(fail))
        # externpassnotify: our write (hashed), then the script (told the PIN, as Asterisk)
        assert await boxes.change_password("2000", "default", "3333", externpassnotify=str(ok))
        more = (conf_dir / "more.conf").read_bytes()
        assert more.startswith(b"; included\n2000 => $argon2id$") and b"3333" not in more

    args.unlink()
    asyncio.run(work())
    assert args.read_text() == "default 1000 1111\ndefault 2000 3333\n"


# --- realtime ---------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mysql"], indirect=True)
def test_realtime_row_updated_and_last_known_row_forgotten(backend: Backend) -> None:
    async def work() -> None:
        async with realtime_on(backend, [voicemail_table()]) as (realtime, pool):
            for context in ("default", "other"):
                await sql(
                    pool,
                    "INSERT INTO voicemail (context, mailbox, password, fullname, forcename) "
                    "VALUES (?, '2000', '2000', 'Realtime Box', 'yes')",
                    context,
                )
            boxes = MailboxDirectory(load_voicemail_conf(Path("/nonexistent")), realtime)
            access = MailboxAccess(None, boxes, {})  # type: ignore[arg-type]
            info = await access.find("2000", "default")
            assert info is not None and info.settings is not None and info.settings.forcename
            assert await access.change_password(info, "8642")
            rows = await sql(pool, "SELECT context, password FROM voicemail ORDER BY context")
            (default, hashed), other = (tuple(r) for r in rows)
            assert default == "default" and other == ("other", "2000")
            assert hashed.startswith("$argon2id$") and verify_pin(hashed, "8642")
            assert ("default", "2000") not in boxes._last_known
            again = await boxes.find("2000", "default")
            assert again is not None and again.password == hashed
            # pinhash=no: clear text, and an unchanged PIN is no UPDATE (Asterisk)
            access.general = {"pinhash": "no"}
            info = await access.find("2000", "default")
            assert info is not None
            assert await access.change_password(info, "8642")
            rows = await sql(pool, "SELECT password FROM voicemail WHERE context = 'default'")
            assert [tuple(r) for r in rows] == [("8642",)]
            assert await boxes.change_password("2000", "default", "8642", pinhash=False)
            await sql(pool, "DELETE FROM voicemail WHERE context = 'default'")
            assert not await boxes.change_password("2000", "default", "1111")

    asyncio.run(work())


def test_access_check_uses_the_current_pin(tmp_path: Path) -> None:
    args = tmp_path / "args"
    check = script(tmp_path / "check", f'echo "$@" > {args}\necho VALID\n')
    boxes = MailboxDirectory(load_voicemail_conf(Path("/nonexistent")), Realtime([], {}))
    access = MailboxAccess(None, boxes, {"externpasscheck": str(check)})  # type: ignore[arg-type]
    info = MailboxInfo(
        "1000", "default", "1234", settings=MenuSettings.from_options(access.general)
    )
    assert asyncio.run(access.check_password(info, "5678"))
    assert args.read_text() == "1000 default 1234 5678\n"
