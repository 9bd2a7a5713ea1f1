"""The PIN change (mailbox options key 5) and the new-user setup, without I/O: digits in,
actions out (fact sheet 5.2; AV@20 vm_options, vm_newuser_setup)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from voicemail.password_writer import PasswordWriteError, passcheck_verdict, rewrite_password_line
from voicemail.vmmain.events import (
    Action,
    Authenticated,
    ChangePassword,
    CheckPassword,
    Collect,
    Event,
    Finish,
    Intro,
    MailboxInfo,
    MailboxOpened,
    PasswordChanged,
    PasswordChecked,
    Record,
    SaveGreeting,
    StoreFailed,
)
from voicemail.vmmain.newuser import needs_setup
from voicemail.vmmain.options import MenuSettings

from .test_vmmain_core import Sim

LOGIN = ["1000", "1234"]
NEW_USER = MailboxInfo("1000", "default", "1000")
FORCE_ALL = MenuSettings(forcename=True, forcegreetings=True)


@dataclass
class PinSim(Sim):
    """Sim that also answers the PIN actions and says which greetings exist."""

    verdicts: list[bool] = field(default_factory=list)
    stored: bool | None = True  # None: the database failed
    greetings: frozenset[str] = frozenset()

    def respond(self, action: Action) -> Event:
        if isinstance(action, CheckPassword):
            return PasswordChecked(self.verdicts.pop(0))
        if isinstance(action, ChangePassword):
            return StoreFailed("down") if self.stored is None else PasswordChanged(self.stored)
        if isinstance(action, Authenticated):
            opened = super().respond(action)
            assert isinstance(opened, MailboxOpened)
            return MailboxOpened(
                opened.new, opened.old, opened.urgent, False, self.greetings, opened.new_user
            )
        return super().respond(action)

    def collects(self) -> list[tuple[object, ...]]:
        return [a.prompts for a in self.log if isinstance(a, Collect)]

    def changes(self) -> list[str]:
        return [a.new for a in self.log if isinstance(a, ChangePassword)]


def after(plays: list[tuple[object, ...]], item: tuple[object, ...]) -> list[tuple[object, ...]]:
    return plays[plays.index(item) + 1 :]


# --- key 5 ------------------------------------------------------------------------------------


def test_key_5_changes_the_pin_and_returns_to_the_options() -> None:
    sim = PinSim(keys="05", entries=[*LOGIN, "4827", "4827"])
    log = sim.run()
    assert sim.collects()[2:] == [("vm-newpassword",), ("vm-reenterpassword",)]
    collect = [a for a in log if isinstance(a, Collect)][2]
    assert (collect.first, collect.between, collect.terminator) == (10.0, 2.0, "#")
    assert sim.changes() == ["4827"]
    assert after(sim.plays(), ("vm-passchanged",))[0] == ("vm-options",)
    assert not any(isinstance(a, CheckPassword) for a in log)  # no externpasscheck set


def test_key_5_too_short_is_invalid_and_one_try_only() -> None:
    sim = PinSim(keys="05", entries=[*LOGIN, "123"], settings=MenuSettings(minpassword=4))
    sim.run()
    plays = sim.plays()
    assert after(plays, ("vm-options",))[:3] == [
        ("pin-too-short", "vm-invalid-password"),
        ("vm-pls-try-again",),
        ("vm-options",),
    ]
    assert sim.changes() == [] and sim.collects()[2:] == [("vm-newpassword",)]


def test_key_5_minpassword_boundary_and_star() -> None:
    sim = PinSim(keys="05", entries=[*LOGIN, "7391", "7391"], settings=MenuSettings(minpassword=4))
    sim.run()
    assert sim.changes() == ["7391"]
    sim = PinSim(keys="05", entries=[*LOGIN, "*739"])
    sim.run()
    assert ("pin-digits-only", "vm-invalid-password") in sim.plays() and sim.changes() == []


def test_key_5_empty_pin_is_refused() -> None:
    sim = PinSim(keys="05", entries=[*LOGIN, ""])
    sim.run()
    assert ("pin-too-short", "vm-invalid-password") in sim.plays() and sim.changes() == []


@pytest.mark.parametrize(
    ("pin", "prompt"),
    [
        ("1111", "pin-one-digit"),
        ("1234", "pin-run"),
        ("9876", "pin-run"),
        ("1000", "pin-is-mailbox"),
        ("2580", "pin-too-common"),
        ("12", "pin-too-short"),
    ],
)
def test_key_5_trivial_pin_is_refused_saying_why(pin: str, prompt: str) -> None:
    sim = PinSim(keys="05", entries=[*LOGIN, pin, pin])
    sim.run()
    assert after(sim.plays(), ("vm-options",))[:2] == [
        (prompt, "vm-invalid-password"),
        ("vm-pls-try-again",),
    ]
    assert sim.changes() == []


def test_key_5_mismatch() -> None:
    sim = PinSim(keys="05", entries=[*LOGIN, "4827", "4828"])
    sim.run()
    assert after(sim.plays(), ("vm-options",))[:3] == [
        ("vm-mismatch",),
        ("vm-pls-try-again",),
        ("vm-options",),
    ]
    assert sim.changes() == []


def test_key_5_externpasscheck_invalid_and_valid() -> None:
    settings = MenuSettings(externpasscheck="/usr/local/bin/check")
    sim = PinSim(keys="05", entries=[*LOGIN, "4827"], settings=settings, verdicts=[False])
    log = sim.run()
    assert CheckPassword("4827") in log
    assert ("vm-invalid-password",) in sim.plays() and sim.changes() == []  # no reason known
    sim = PinSim(keys="05", entries=[*LOGIN, "4827", "4827"], settings=settings, verdicts=[True])
    sim.run()
    assert sim.changes() == ["4827"]
    # too short never reaches the script
    short = MenuSettings(externpasscheck="/x", minpassword=6)
    sim = PinSim(keys="05", entries=[*LOGIN, "4827"], settings=short)
    log = sim.run()
    assert not any(isinstance(a, CheckPassword) for a in log)


def test_key_5_dash_pin_is_not_changeable() -> None:
    info = MailboxInfo("1000", "default", "-1234")
    sim = PinSim(keys="05", info=info, entries=list(LOGIN))
    sim.run()
    assert after(sim.plays(), ("vm-options",))[0] == ("vm-no",)
    assert sim.collects() == [("vm-login",), ("vm-password",)]


def test_key_5_three_presses_three_failures_then_main_menu() -> None:
    sim = PinSim(
        keys="0555*", entries=[*LOGIN, "1", "22", "333"], settings=MenuSettings(minpassword=4)
    )
    log = sim.run()
    assert sim.plays().count(("pin-too-short", "vm-invalid-password")) == 3
    assert sim.changes() == []
    assert isinstance(log[-1], Finish) and log[-1].keep_going


def test_key_5_a_key_during_the_refusal_is_the_next_command() -> None:
    sim = PinSim(
        keys="05*", entries=[*LOGIN, "1"], settings=MenuSettings(minpassword=4), patient=False
    )
    sim.run()
    plays = sim.plays()
    refusal = plays.index(("pin-too-short", "vm-invalid-password"))
    assert ("vm-pls-try-again",) not in plays
    assert plays[refusal + 1] != ("vm-options",)  # '*' cut it short: back to the main menu


def test_key_5_write_failure_is_said_and_the_call_goes_on() -> None:
    for stored in (False, None):
        sim = PinSim(keys="05", entries=[*LOGIN, "4827", "4827"], stored=stored)
        log = sim.run()
        plays = sim.plays()
        assert ("vm-passchanged",) not in plays
        assert after(plays, ("vm-sorry",))[0] == ("vm-options",)
        assert isinstance(log[-1], Finish) and log[-1].keep_going


# --- new user ---------------------------------------------------------------------------------


def test_new_user_records_name_and_greetings_then_sets_the_pin() -> None:
    sim = PinSim(
        keys="111",
        info=NEW_USER,
        entries=["1000", "1000", "5829", "5829"],
        settings=FORCE_ALL,
    )
    log = sim.run()
    plays = sim.plays()
    assert plays[0] == ("vm-newuser",)
    assert [a.kind for a in log if isinstance(a, SaveGreeting)] == ["greet", "unavail", "busy"]
    prompts = [p for p in plays if len(p) == 2 and p[1] == "beep"]
    assert prompts == [("vm-rec-name", "beep"), ("vm-rec-unv", "beep"), ("vm-rec-busy", "beep")]
    assert sim.changes() == ["5829"]
    assert after(plays, ("vm-passchanged",))[0] == (Intro(0, 0, 0),)
    last_save = max(i for i, a in enumerate(log) if isinstance(a, SaveGreeting))
    first_change = next(i for i, a in enumerate(log) if isinstance(a, ChangePassword))
    assert last_save < first_change  # the PIN comes last


def test_new_user_with_existing_greetings_records_only_what_is_missing() -> None:
    sim = PinSim(
        keys="1",
        info=NEW_USER,
        entries=["1000", "1000", "5829", "5829"],
        settings=FORCE_ALL,
        greetings=frozenset({"greet", "unavail"}),
    )
    log = sim.run()
    assert [a.kind for a in log if isinstance(a, SaveGreeting)] == ["busy"]
    assert sim.changes() == ["5829"]
    # forcename only, the name exists: straight to the PIN
    sim = PinSim(
        info=NEW_USER,
        entries=["1000", "1000", "5829", "5829"],
        settings=MenuSettings(forcename=True),
        greetings=frozenset({"greet"}),
    )
    log = sim.run()
    assert not any(isinstance(a, Record) for a in log)
    assert sim.plays()[0] == ("vm-newuser",) and sim.changes() == ["5829"]


def test_new_user_three_bad_pins_hang_up() -> None:
    sim = PinSim(
        info=NEW_USER,
        entries=["1000", "1000", "1", "*22", "4829", "4820"],
        settings=MenuSettings(forcename=True, minpassword=2),
        greetings=frozenset({"greet"}),
    )
    log = sim.run()
    plays = sim.plays()
    assert plays.count(("pin-too-short", "vm-invalid-password")) == 1
    assert plays.count(("pin-digits-only", "vm-invalid-password")) == 1
    assert plays.count(("vm-mismatch",)) == 1
    assert ("vm-pls-try-again",) not in plays  # played only when a key cuts a refusal short
    assert sim.changes() == []
    assert ("vm-goodbye",) not in plays and Intro(0, 0, 0) not in [p[0] for p in plays]
    assert log[-1] == Finish(False)


def test_new_user_pound_or_nothing_at_the_pin_prompt_says_goodbye() -> None:
    sim = PinSim(
        info=NEW_USER,
        entries=["1000", "1000", ""],
        settings=MenuSettings(forcename=True),
        greetings=frozenset({"greet"}),
    )
    log = sim.run()
    assert sim.plays()[-1] == ("vm-goodbye",) and log[-1] == Finish(True)
    assert sim.changes() == []


def test_new_user_review_timeout_says_goodbye_and_keeps_it_a_new_user() -> None:
    sim = PinSim(info=NEW_USER, entries=["1000", "1000"], settings=FORCE_ALL)
    log = sim.run()
    assert not any(isinstance(a, SaveGreeting | ChangePassword) for a in log)
    assert sim.plays()[-1] == ("vm-goodbye",) and log[-1] == Finish(True)


def test_new_user_write_failure_still_reaches_the_menu() -> None:
    sim = PinSim(
        info=NEW_USER,
        entries=["1000", "1000", "5829", "5829"],
        settings=MenuSettings(forcename=True),
        greetings=frozenset({"greet"}),
        stored=False,
    )
    sim.run()
    assert after(sim.plays(), ("vm-sorry",))[0] == (Intro(0, 0, 0),)


def test_who_is_a_new_user() -> None:
    assert needs_setup(NEW_USER, FORCE_ALL)
    assert needs_setup(NEW_USER, MenuSettings(forcegreetings=True))
    assert not needs_setup(NEW_USER, MenuSettings())
    assert not needs_setup(MailboxInfo("1000", "default", "1234"), FORCE_ALL)
    sim = PinSim(info=NEW_USER, entries=["1000", "1000"])  # no force option: plain login
    sim.run()
    assert sim.plays()[0] == (Intro(0, 0, 0),)


# --- settings and pure rules ------------------------------------------------------------------


def test_settings_general_only_names_are_not_taken_from_a_mailbox() -> None:
    general = {"minpassword": "4", "externpasscheck": "/bin/check", "forcename": "yes"}
    mailbox = {
        "minpassword": "0",
        "externpass": "/tmp/evil",
        "externpasscheck": "",
        "forcename": "no",
        "forcegreetings": "yes",
    }
    settings = MenuSettings.from_options(general, mailbox)
    assert settings.minpassword == 4 and settings.externpasscheck == "/bin/check"
    assert settings.externpass == ""
    assert (settings.forcename, settings.forcegreetings) == (False, True)
    assert MenuSettings.from_options({}).minpassword == 4  # ours (Asterisk: 0)


def test_pin_settings_defaults_and_where_they_may_come_from() -> None:
    default = MenuSettings.from_options({})
    assert (default.pinhash, default.emptypin) == (True, False)
    assert (default.maxfailedlogins, default.lockoutsecs) == (5, 60.0)
    general = {"pinhash": "no", "maxfailedlogins": "3", "lockoutsecs": "120"}
    mailbox = {"pinhash": "yes", "maxfailedlogins": "99", "lockoutsecs": "1", "emptypin": "yes"}
    settings = MenuSettings.from_options(general, mailbox)
    assert settings.pinhash is False  # [general] only
    assert (settings.maxfailedlogins, settings.lockoutsecs) == (3, 120.0)  # [general] only
    assert settings.emptypin is True  # a mailbox may say it needs no PIN


def test_new_user_pin_may_not_be_the_mailbox_number() -> None:
    sim = PinSim(
        info=NEW_USER,
        entries=["1000", "1000", "1000", "1000", "1000"],
        settings=MenuSettings(forcename=True),
        greetings=frozenset({"greet"}),
    )
    log = sim.run()
    assert sim.plays().count(("pin-is-mailbox", "vm-invalid-password")) == 3
    assert sim.changes() == [] and log[-1] == Finish(False)


def test_pin_rules() -> None:
    assert passcheck_verdict("VALID\n") is True
    assert passcheck_verdict("valid: fine") is True
    assert passcheck_verdict("INVALID") is False
    assert passcheck_verdict("") is False
    assert passcheck_verdict("FAILURE: No such file") is None


def test_rewrite_password_line_keeps_every_other_byte() -> None:
    cases = [
        (b"1000 => 1234,Alice,a@x ; note", b"1000 => 9876,Alice,a@x ; note"),
        (b"  1000=>1234\r", b"  1000=>9876\r"),
        (b"1000 = 1234 ; only a PIN", b"1000 = 9876 ; only a PIN"),
        (b"1000\t=>\t1234 ,Bob", b"1000\t=>\t9876 ,Bob"),
        (b"1000 => 1234,Name \xe9,,,attach=no|tz=eu", b"1000 => 9876,Name \xe9,,,attach=no|tz=eu"),
    ]
    for line, expected in cases:
        assert rewrite_password_line(line, "1000", "1234", "9876") == expected
    for bad in (b"1001 => 1234", b"1000 += 1234", b"1000 => 4321,x", b"; 1000 => 1234"):
        try:
            rewrite_password_line(bad, "1000", "1234", "9876")
        except PasswordWriteError as exc:
            assert "1234" not in str(exc) and "9876" not in str(exc)
        else:
            raise AssertionError(bad)
