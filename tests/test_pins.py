"""PINs without a call: the stored form (argon2id, '-' kept, fits Asterisk's String(80) and a
voicemail.conf line), verification of both forms, the rules of a new PIN, the prompts that say
why, and MailboxAccess.check_pin (guard, unknown mailbox, rehash on login) on real files."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from channels.channel import CallerInfo
from storage.realtime import Realtime
from storage.schema import voicemail_table
from voicemail.config import load_voicemail_conf
from voicemail.login_guard import LoginAttempt, LoginGuard, LoginOutcome
from voicemail.mailboxes import MailboxDirectory
from voicemail.pins import (
    HASH_PREFIX,
    hash_pin,
    is_empty,
    is_hashed,
    is_locked,
    needs_rehash,
    pin_problem,
    stored_form,
    verify_pin,
    verify_pin_evenly,
    verify_unknown,
)
from voicemail.vmmain.access import MailboxAccess
from voicemail.vmmain.password import REASON_PROMPTS

from .dbbackends import Backend
from .test_realtime import realtime_on, sql

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parent.parent
CALLER = CallerInfo("8500", "default", caller_id_num="555", source_address="127.0.0.1:5062")


# --- the stored form --------------------------------------------------------------------------


def test_hash_is_not_the_clear_text_and_is_salted() -> None:
    one, two = hash_pin("4827"), hash_pin("4827")
    assert one.startswith(HASH_PREFIX) and "4827" not in one
    assert one != two  # a fresh salt each time
    assert is_hashed(one) and not is_hashed("4827")


def test_stored_form_fits_string_80_and_a_conf_line() -> None:
    for pin in ("0000", "4827", "9" * 20, "1" * 80):
        for locked in (False, True):
            stored = stored_form(pin, pinhash=True, locked=locked)
            assert len(stored) <= 80, stored
            assert "," not in stored and ";" not in stored  # voicemail.conf field separators
            assert is_locked(stored) is locked and is_hashed(stored)
            assert verify_pin(stored, pin)
    assert stored_form("4827", pinhash=False) == "4827"
    assert stored_form("4827", pinhash=False, locked=True) == "-4827"


def test_verify_both_forms() -> None:
    for stored in ("4827", "-4827", stored_form("4827", pinhash=True, locked=False)):
        assert verify_pin(stored, "4827"), stored
        assert not verify_pin(stored, "4828")
        assert not verify_pin(stored, "")
        assert not verify_pin(stored, "-4827")
    locked = stored_form("4827", pinhash=True, locked=True)
    assert verify_pin(locked, "4827") and not verify_pin(locked, "48270")


def test_a_phc_string_with_commas_from_another_tool_is_accepted() -> None:
    from argon2 import PasswordHasher

    assert verify_pin(PasswordHasher().hash("4827"), "4827")


def test_empty_never_matches_and_garbage_hash_is_no_match() -> None:
    for stored in ("", "-"):
        assert is_empty(stored)
        assert not verify_pin(stored, "") and not verify_pin(stored, "1234")
    assert not verify_pin("$argon2id$broken", "1234")
    assert not verify_unknown("1234") and not verify_unknown("")


def test_verify_evenly_gives_verify_pins_answer() -> None:
    hashed = stored_form("4827", pinhash=True)
    for stored in ("4827", "-4827", hashed, "", "-"):
        for entered in ("4827", "4828", ""):
            assert verify_pin_evenly(stored, entered) == verify_pin(stored, entered)


def test_needs_rehash() -> None:
    assert needs_rehash("4827", pinhash=True) and needs_rehash("-4827", pinhash=True)
    assert not needs_rehash("4827", pinhash=False)
    assert not needs_rehash(hash_pin("4827"), pinhash=True)
    assert not needs_rehash("", pinhash=True) and not needs_rehash("-", pinhash=True)


# --- new PIN rules ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pin", "reason"),
    [
        ("", "short"),
        ("123", "short"),
        ("12a4", "digits"),
        ("*482", "digits"),
        ("４８２７", "digits"),  # full-width digits are isdigit() but not keypad digits
        ("1111", "same"),
        ("000000", "same"),
        ("1234", "run"),
        ("4321", "run"),
        ("7890", "run"),
        ("3456789", "run"),
        ("8500", "mailbox"),
        ("2580", "common"),
        ("1212", "common"),
        ("4827", None),
        ("90210", None),
    ],
)
def test_pin_problem(pin: str, reason: str | None) -> None:
    assert pin_problem(pin, mailbox="8500") == reason


def test_minpassword() -> None:
    assert pin_problem("48271", mailbox="1", minpassword=6) == "short"
    assert pin_problem("482719", mailbox="1", minpassword=6) is None
    assert pin_problem("48", mailbox="1", minpassword=0) is None
    assert pin_problem("", mailbox="1", minpassword=0) == "short"  # never an empty PIN


def test_every_reason_has_a_prompt_with_its_file() -> None:
    manifest = (REPO / "prompts" / "manifest-en.tsv").read_text(encoding="utf-8")
    names = {line.split("\t", 1)[0] for line in manifest.splitlines() if line.strip()}
    assert set(REASON_PROMPTS) == {"short", "digits", "same", "run", "mailbox", "common"}
    for prompt in REASON_PROMPTS.values():
        assert prompt in names, prompt
        assert (REPO / "prompts" / "en" / f"{prompt}.wav").stat().st_size > 1000, prompt


# --- MailboxAccess.check_pin -------------------------------------------------------------------


class RecordingGuard(LoginGuard):
    """The stub guard's behaviour, plus what it was asked (or LOCKED without checking)."""

    def __init__(self, locked: bool = False) -> None:
        super().__init__()
        self.locked = locked
        self.calls: list[tuple[LoginAttempt, int, float]] = []

    async def attempt(
        self,
        who: LoginAttempt,
        verify: Callable[[], Awaitable[bool]],
        *,
        maxfailedlogins: int = 5,
        lockoutsecs: float = 60.0,
    ) -> LoginOutcome:
        self.calls.append((who, maxfailedlogins, lockoutsecs))
        if self.locked:
            return LoginOutcome.LOCKED
        return await super().attempt(
            who, verify, maxfailedlogins=maxfailedlogins, lockoutsecs=lockoutsecs
        )


def conf_access(tmp_path: Path, general: str = "", line: str = "8500 => 4827,Ann") -> MailboxAccess:
    path = tmp_path / "voicemail.conf"
    path.write_text(f"[general]\n{general}\n[default]\n{line}\n")
    boxes = MailboxDirectory(load_voicemail_conf(path), Realtime([], {}), conf_path=path)
    return MailboxAccess(None, boxes, boxes.settings.general)  # type: ignore[arg-type]


def test_check_pin_goes_through_the_guard_and_rehashes_a_clear_pin(tmp_path: Path) -> None:
    access = conf_access(tmp_path, "maxfailedlogins=3\nlockoutsecs=90")
    guard = access.guard = RecordingGuard()

    async def work() -> None:
        info = await access.find("8500", "default")
        assert await access.check_pin(info, "4828", CALLER) is LoginOutcome.WRONG
        assert "4827,Ann" in (tmp_path / "voicemail.conf").read_text()  # no rehash on failure
        assert await access.check_pin(info, "4827", CALLER) is LoginOutcome.OK
        again = await access.find("8500", "default")
        assert again is not None and is_hashed(again.password)
        assert await access.check_pin(again, "4827", CALLER) is LoginOutcome.OK

    asyncio.run(work())
    who, maxfailed, lockout = guard.calls[0]
    assert who == LoginAttempt("8500", "default", "555", "127.0.0.1:5062")
    assert (maxfailed, lockout) == (3, 90.0)
    text = (tmp_path / "voicemail.conf").read_text()
    assert "4827" not in text and "8500 => $argon2id$" in text and text.endswith(",Ann\n")


@pytest.mark.parametrize(
    ("general", "line", "after"),
    [
        ("", "8500 => -4827,Ann", "8500 => -$argon2id$"),  # the '-' (not changeable) kept
        ("pinhash=no", "8500 => 4827,Ann", "8500 => 4827,Ann\n"),  # clear text stays
    ],
)
def test_rehash_keeps_the_dash_and_honours_pinhash_no(
    tmp_path: Path, general: str, line: str, after: str
) -> None:
    access = conf_access(tmp_path, general, line)

    async def work() -> LoginOutcome:
        return await access.check_pin(await access.find("8500", "default"), "4827", CALLER)

    assert asyncio.run(work()) is LoginOutcome.OK
    assert after in (tmp_path / "voicemail.conf").read_text()


def test_locked_is_not_checked_and_not_rehashed(tmp_path: Path) -> None:
    access = conf_access(tmp_path)
    access.guard = RecordingGuard(locked=True)

    async def work() -> LoginOutcome:
        return await access.check_pin(await access.find("8500", "default"), "4827", CALLER)

    assert asyncio.run(work()) is LoginOutcome.LOCKED
    assert "8500 => 4827,Ann" in (tmp_path / "voicemail.conf").read_text()


def test_unknown_mailbox_is_wrong_without_the_guard(tmp_path: Path) -> None:
    access = conf_access(tmp_path)
    guard = access.guard = RecordingGuard()
    assert asyncio.run(access.check_pin(None, "4827", CALLER)) is LoginOutcome.WRONG
    assert guard.calls == []


def test_a_failed_rehash_does_not_fail_the_login_nor_log_the_pin(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    access = conf_access(tmp_path)
    access.mailboxes.conf_path = None  # voicemail.conf "from the database": not writable

    async def work() -> LoginOutcome:
        return await access.check_pin(await access.find("8500", "default"), "4827", CALLER)

    with caplog.at_level(logging.DEBUG):
        assert asyncio.run(work()) is LoginOutcome.OK
    assert "clear-text PIN not replaced by its hash" in caplog.text
    assert "4827" not in caplog.text


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mysql"], indirect=True)
def test_emptypin_and_rehash_on_a_realtime_row(backend: Backend) -> None:
    """`emptypin` is a column like any per-mailbox option (an operator adds it); a clear PIN
    in the row is replaced by its hash at a good login, the other context's row untouched."""

    async def work() -> None:
        async with realtime_on(backend, [voicemail_table()]) as (realtime, pool):
            await sql(pool, "ALTER TABLE voicemail ADD emptypin VARCHAR(3)")
            for context, mailbox, password, emptypin in (
                ("default", "3000", "", "yes"),
                ("default", "3001", "", None),
                ("default", "2000", "4827", None),
                ("other", "2000", "4827", None),
            ):
                await sql(
                    pool,
                    "INSERT INTO voicemail (context, mailbox, password, emptypin) "
                    "VALUES (?, ?, ?, ?)",
                    context,
                    mailbox,
                    password,
                    emptypin,
                )
            boxes = MailboxDirectory(load_voicemail_conf(Path("/nonexistent")), realtime)
            access = MailboxAccess(None, boxes, {})  # type: ignore[arg-type]
            open_box, closed = (
                await access.find("3000", "default"),
                await access.find("3001", "default"),
            )
            assert open_box is not None and open_box.settings is not None
            assert open_box.settings.emptypin
            assert closed is not None and closed.settings is not None
            assert not closed.settings.emptypin
            info = await access.find("2000", "default")
            assert await access.check_pin(info, "4827", CALLER) is LoginOutcome.OK
            rows = await sql(
                pool,
                "SELECT context, password FROM voicemail WHERE mailbox = '2000' ORDER BY context",
            )
            (default, hashed), other = rows
            assert default == "default" and is_hashed(hashed) and verify_pin(hashed, "4827")
            assert tuple(other) == ("other", "4827")

    asyncio.run(work())
