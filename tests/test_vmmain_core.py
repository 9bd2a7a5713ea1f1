"""VoiceMailMain's core without SIP or a database: events in, actions out (login, intro,
the start folder, type-ahead, hang-up in each state). The menus are in test_vmmain_menu.py."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from voicemail.login_guard import LoginOutcome
from voicemail.pins import verify_pin
from voicemail.vmmain.core import VoiceMailMain
from voicemail.vmmain.events import (
    Action,
    Authenticated,
    CheckPin,
    Close,
    Collect,
    CopyMessage,
    DeleteGreeting,
    Digit,
    Digits,
    Event,
    FindMailbox,
    Finish,
    FolderEdits,
    FolderName,
    FolderOpened,
    HungUp,
    Intro,
    MailboxFound,
    MailboxInfo,
    MailboxOpened,
    MessageSummary,
    OpenFolder,
    PinChecked,
    Play,
    PlayMessage,
    PlayRecording,
    PromptDone,
    Record,
    RecordingDone,
    SaveGreeting,
    Stored,
    StoreFailed,
    Timeout,
    WaitDigit,
)
from voicemail.vmmain.newuser import needs_setup
from voicemail.vmmain.options import MainArgs, MenuSettings

INFO = MailboxInfo("1000", "default", "1234")


def messages(*msgnums: int, **fields: object) -> tuple[MessageSummary, ...]:
    return tuple(MessageSummary(m, origtime=1_700_000_000 + m, **fields) for m in msgnums)  # type: ignore[arg-type]


@dataclass
class Sim:
    """Plays the driver: answers every action, delivering typed keys and login entries."""

    folders: dict[int, tuple[MessageSummary, ...]] = field(default_factory=dict)
    keys: str = ""
    entries: list[str] = field(default_factory=lambda: ["1000", "1234"])
    info: MailboxInfo | None = INFO
    args: MainArgs = field(default_factory=MainArgs)
    settings: MenuSettings = field(default_factory=MenuSettings)
    caller: str = ""
    hang_up_when: Callable[[Action, VoiceMailMain], bool] | None = None
    full: bool = False
    locked: bool = False  # the login guard answers LOCKED
    temp_greeting: bool = False
    # True: keys only when the server waits for one; False: typed ahead, at the first prompt.
    patient: bool = True
    log: list[Action] = field(default_factory=list)

    def respond(self, action: Action) -> Event:
        if isinstance(action, Play):
            if not self.patient and self.keys and self.keys[0] in action.interrupt:
                return self._key()
            return PromptDone()
        if isinstance(action, WaitDigit):
            return self._key() if self.keys else Timeout()
        if isinstance(action, PlayMessage):
            return self._key() if self.keys and not self.patient else PromptDone()
        if isinstance(action, Collect):
            return Digits(self.entries.pop(0) if self.entries else "")
        if isinstance(action, FindMailbox):
            return MailboxFound(
                self.info if self.info and action.mailbox == self.info.mailbox else None
            )
        if isinstance(action, CheckPin):
            if self.locked:
                return PinChecked(LoginOutcome.LOCKED)
            right = action.info is not None and verify_pin(action.info.password, action.entered)
            return PinChecked(LoginOutcome.OK if right else LoginOutcome.WRONG)
        if isinstance(action, Authenticated):
            count = {n: len(self.folders.get(n, ())) for n in (0, 1, 11)}
            new_user = needs_setup(action.info, action.info.settings or self.settings)
            return MailboxOpened(
                count[0], count[1], count[11], self.temp_greeting, new_user=new_user
            )
        if isinstance(action, OpenFolder):
            return FolderOpened(action.folder, self.folders.get(action.folder, ()))
        if isinstance(action, CopyMessage | Close | SaveGreeting | DeleteGreeting):
            return Stored(full=self.full and isinstance(action, CopyMessage))
        if isinstance(action, Record):
            return RecordingDone(2.0)
        if isinstance(action, PlayRecording):
            return self._key() if self.keys and not self.patient else PromptDone()
        raise AssertionError(action)

    def _key(self) -> Digit:
        key, self.keys = self.keys[0], self.keys[1:]
        return Digit(key)

    def run(self, limit: int = 400) -> list[Action]:
        self.session = VoiceMailMain(self.args, self.settings, self.caller)
        actions = self.session.start()
        while actions:
            assert len(self.log) < limit, self.log[-20:]
            action = actions.pop(0)
            self.log.append(action)
            if isinstance(action, Finish):
                assert not actions
                break
            if self.hang_up_when is not None and self.hang_up_when(action, self.session):
                event: Event = HungUp()
            else:
                event = self.respond(action)
            if not self.session.finished:
                actions = self.session.handle(event)
        assert isinstance(self.log[-1], Finish), self.log[-5:]
        assert self.session.handle(PromptDone()) == []  # nothing after the end
        return self.log

    def plays(self) -> list[tuple[object, ...]]:
        return [a.items for a in self.log if isinstance(a, Play)]

    def closes(self) -> list[FolderEdits]:
        return [a.edits for a in self.log if isinstance(a, Close)]


def first(log: list[Action], kind: type) -> Action:
    return next(a for a in log if isinstance(a, kind))


# --- login -------------------------------------------------------------------------------


def test_login_asks_mailbox_then_password_with_asterisk_timeouts() -> None:
    sim = Sim(keys="#")
    log = sim.run()
    assert log[0] == Collect(("vm-login",), first=10.0, between=2.0, terminator="#")
    assert log[1] == FindMailbox("1000", "default")
    assert log[2] == Collect(("vm-password",), first=10.0, between=2.0, terminator="#")
    assert log[3] == CheckPin(INFO, "1234")
    assert isinstance(log[4], Authenticated) and log[4].info == INFO
    assert log[-2] == Play(("vm-goodbye",), interrupt="")
    assert log[-1] == Finish(True)


def test_wrong_pin_then_right_pin() -> None:
    sim = Sim(entries=["1000", "9999", "1000", "1234"], keys="#")
    log = sim.run()
    collects = [a.prompts for a in log if isinstance(a, Collect)]
    assert collects == [
        ("vm-login",),
        ("vm-password",),
        ("vm-incorrect-mailbox",),
        ("vm-password",),
    ]
    assert any(isinstance(a, Authenticated) for a in log)


def test_three_failures_say_incorrect_and_goodbye_and_hang_up() -> None:
    sim = Sim(entries=["1000", "1", "1000", "2", "1000", "3"])
    log = sim.run()
    collects = [a.prompts[0] for a in log if isinstance(a, Collect)]
    assert collects == ["vm-login", "vm-password", "vm-incorrect-mailbox", "vm-password"] * 1 + [
        "vm-incorrect-mailbox",
        "vm-password",
    ]
    assert sim.plays() == [("vm-incorrect",), ("vm-goodbye",)]
    assert not any(isinstance(a, Authenticated) for a in log)
    assert log[-1] == Finish(False)


def test_maxlogins_is_configurable() -> None:
    sim = Sim(entries=["1000", "1"], settings=MenuSettings(maxlogins=1))
    log = sim.run()
    assert sim.plays() == [("vm-incorrect",), ("vm-goodbye",)]
    assert log[-1] == Finish(False)


def test_given_mailbox_asks_only_the_pin_and_says_login_incorrect() -> None:
    sim = Sim(args=MainArgs(mailbox="1000"), entries=["1", "1234"], keys="#")
    log = sim.run()
    assert log[0] == FindMailbox("1000", "default")
    assert [a.prompts for a in log if isinstance(a, Collect)] == [("vm-password",)] * 2
    assert sim.plays()[0] == ("vm-incorrect",)
    assert any(isinstance(a, Authenticated) for a in log)


def test_given_unknown_mailbox_asks_for_one() -> None:
    sim = Sim(args=MainArgs(mailbox="4711"), keys="#")
    log = sim.run()
    assert log[0] == FindMailbox("4711", "default")
    assert log[1].prompts == ("vm-login",)  # type: ignore[union-attr]


def test_option_s_skips_the_password() -> None:
    sim = Sim(args=MainArgs(mailbox="1000", skip_password=True), keys="#")
    log = sim.run()
    assert not any(isinstance(a, Collect) for a in log)
    assert isinstance(log[1], Authenticated)


def test_empty_mailbox_entry_uses_the_caller_id_number() -> None:
    sim = Sim(entries=["", "1234"], caller="1000", keys="#")
    log = sim.run()
    assert log[1] == FindMailbox("1000", "default")
    assert any(isinstance(a, Authenticated) for a in log)


def test_empty_mailbox_entry_without_caller_id_ends_the_call() -> None:
    sim = Sim(entries=[""])
    assert sim.run()[-1] == Finish(False)


def test_prefix_is_put_before_the_entered_digits() -> None:
    sim = Sim(args=MainArgs(mailbox="10", prefix=True), entries=["00", "1234"], keys="#")
    log = sim.run()
    assert log[0].prompts == ("vm-login",)  # type: ignore[union-attr]
    assert log[1] == FindMailbox("1000", "default")


def test_unknown_mailbox_is_still_asked_a_pin() -> None:
    sim = Sim(entries=["4711", "1234", "1000", "1234"], keys="#")
    log = sim.run()
    assert [a.prompts[0] for a in log if isinstance(a, Collect)][:3] == [
        "vm-login",
        "vm-password",
        "vm-incorrect-mailbox",
    ]


@pytest.mark.parametrize("password", ["", "-"])
def test_empty_password_is_not_asked_with_emptypin(password: str) -> None:
    settings = MenuSettings(emptypin=True)
    info = MailboxInfo("1000", "default", password, settings=settings)
    sim = Sim(info=info, entries=["1000"], keys="#")
    log = sim.run()
    assert [a.prompts for a in log if isinstance(a, Collect)] == [("vm-login",)]
    assert any(isinstance(a, Authenticated) for a in log)
    assert not any(isinstance(a, CheckPin) for a in log)


@pytest.mark.parametrize("password", ["", "-"])
def test_empty_password_without_emptypin_is_refused_like_a_wrong_pin(
    password: str, caplog: pytest.LogCaptureFixture
) -> None:
    sim = Sim(info=MailboxInfo("1000", "default", password), entries=["1000", ""] * 3)
    with caplog.at_level(logging.WARNING):
        log = sim.run()
    collects = [a.prompts for a in log if isinstance(a, Collect)]
    assert collects[:3] == [("vm-login",), ("vm-password",), ("vm-incorrect-mailbox",)]
    assert not any(isinstance(a, Authenticated) for a in log)
    assert log[-3:] == [
        Play(("vm-incorrect",), interrupt=""),
        Play(("vm-goodbye",), interrupt=""),
        Finish(False),
    ]
    assert "has an empty PIN: login refused" in caplog.text and "emptypin=yes" in caplog.text


def test_empty_password_with_the_s_option_needs_no_pin() -> None:
    args = MainArgs(mailbox="1000", skip_password=True)
    sim = Sim(info=MailboxInfo("1000", "default", ""), args=args, entries=[], keys="#")
    log = sim.run()
    assert not any(isinstance(a, Collect | CheckPin) for a in log[:2])
    assert any(isinstance(a, Authenticated) for a in log)


def test_locked_out_mailbox_hears_what_a_last_wrong_pin_hears() -> None:
    sim = Sim(entries=["1000", "1234"], locked=True)
    log = sim.run()
    assert not any(isinstance(a, Authenticated) for a in log)
    assert [a.prompts for a in log if isinstance(a, Collect)] == [("vm-login",), ("vm-password",)]
    assert log[-3:] == [
        Play(("vm-incorrect",), interrupt=""),
        Play(("vm-goodbye",), interrupt=""),
        Finish(False),
    ]


def test_unknown_mailbox_is_asked_for_a_pin_and_checked() -> None:
    sim = Sim(entries=["2000", "1234", "2000", "1234", "2000", "1234"])
    log = sim.run()
    checks = [a for a in log if isinstance(a, CheckPin)]
    assert len(checks) == 3 and all(c.info is None for c in checks)
    assert log[-1] == Finish(False)


def test_leading_dash_is_not_part_of_the_pin() -> None:
    sim = Sim(info=MailboxInfo("1000", "default", "-1234"))
    log = sim.run()
    assert any(isinstance(a, Authenticated) for a in log)
    assert [a for a in log if isinstance(a, CheckPin)][0].entered == "1234"


def test_star_at_login_continues_at_extension_a() -> None:
    sim = Sim(entries=["*"])
    log = sim.run()
    assert sim.session.goto_a
    assert log[-1] == Finish(True)


def test_the_pin_is_never_logged_nor_in_an_action(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    sim = Sim(
        info=MailboxInfo("1000", "default", "8642"),
        entries=["1000", "97531", "1000", "8642"],
        keys="#",
    )
    log = sim.run()
    assert any(isinstance(a, Authenticated) for a in log)
    assert "97531" not in caplog.text and "8642" not in caplog.text
    assert "8642" not in repr(log) and "97531" not in repr(log)


# --- after login -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("folders", "start"),
    [
        ({11: messages(0), 0: messages(0, 1)}, 11),
        ({0: messages(0), 1: messages(0)}, 0),
        ({1: messages(0)}, 1),
        ({}, 11),
    ],
)
def test_start_folder(folders: dict[int, tuple[MessageSummary, ...]], start: int) -> None:
    sim = Sim(folders=folders, keys="#")
    assert first(sim.run(), OpenFolder) == OpenFolder(start)


def test_intro_then_main_menu_instructions() -> None:
    sim = Sim(folders={0: messages(0, 1), 1: messages(0)}, keys="")
    sim.run()
    plays = sim.plays()
    assert plays[0] == (Intro(new=2, old=1, urgent=0),)
    assert plays[1] == ("vm-onefor", FolderName(0), "vm-opts", "vm-helpexit")


def test_no_messages_instructions_skip_press_one() -> None:
    sim = Sim()
    sim.run()
    assert sim.plays()[0] == (Intro(0, 0, 0),)
    assert sim.plays()[1] == ("vm-opts", "vm-helpexit")


def test_temporary_greeting_warning() -> None:
    sim = Sim(settings=MenuSettings(tempgreetwarn=True), temp_greeting=True)
    sim.run()
    assert sim.plays()[0] == ("vm-tempgreetactive", Intro(0, 0, 0))


def test_three_silent_rounds_then_goodbye() -> None:
    sim = Sim(folders={0: messages(0)})
    log = sim.run()
    waits = [a for a in log if isinstance(a, WaitDigit)]
    assert waits == [WaitDigit(6.0)] * 3
    assert sim.plays()[-1] == ("vm-goodbye",)
    assert log[-1] == Finish(True)


def test_a_key_resets_the_silent_rounds() -> None:
    # two silent rounds, a key (* = the instructions again in the main menu), three more
    sim = Sim(folders={0: messages(0)})
    responses = iter([Timeout(), Timeout(), Digit("*")])

    def respond(action: Action, _orig=sim.respond) -> Event:
        if isinstance(action, WaitDigit):
            return next(responses, Timeout())
        return _orig(action)

    sim.respond = respond  # type: ignore[method-assign]
    log = sim.run()
    assert sum(isinstance(a, WaitDigit) for a in log) == 6


def test_type_ahead_during_the_intro_plays_and_deletes() -> None:
    sim = Sim(folders={0: messages(0, 1)}, keys="17#", patient=False)
    log = sim.run()
    assert PlayMessage(0, 0, 3000) not in log  # '7' arrived during the message header
    assert sim.closes() == [FolderEdits("INBOX", delete=(0,))]


def test_database_failure_ends_the_session() -> None:
    sim = Sim(folders={0: messages(0)})
    orig = sim.respond
    sim.respond = lambda a: StoreFailed("gone") if isinstance(a, OpenFolder) else orig(a)  # type: ignore[method-assign]
    assert sim.run()[-1] == Finish(False)


def test_an_event_that_answers_nothing_ends_the_session() -> None:
    session = VoiceMailMain(MainArgs(), MenuSettings())
    session.start()
    assert session.handle(Stored()) == [Finish(False)]
    assert session.handle(Digits("1000")) == []


# --- hang-up in every state ----------------------------------------------------------------


def _hang_up_in(state: str, nth: int = 1) -> Callable[[Action, VoiceMailMain], bool]:
    seen = {"n": 0}

    def when(action: Action, session: VoiceMailMain) -> bool:
        if session.state == state and not isinstance(action, Close):
            seen["n"] += 1
            return seen["n"] == nth
        return False

    return when


@pytest.mark.parametrize(
    "state", ["LOGIN_MAILBOX", "LOGIN_PIN", "OPENING", "MAIN", "PLAYING", "MESSAGE", "FOLDER_MENU"]
)
def test_hang_up_in_each_state_ends_with_the_close(state: str) -> None:
    # listen to 0, delete it, listen to 1, then 9 (folder menu), and never get further
    sim = Sim(folders={0: messages(0, 1, 2)}, keys="17" + "6" + "9" + "2", hang_up_when=None)
    # in MESSAGE: the 4th action there is the menu after "vm-deleted"
    sim.hang_up_when = _hang_up_in(state, nth=4 if state == "MESSAGE" else 1)
    log = sim.run()
    assert log[-1] == Finish(False)
    assert Play(("vm-goodbye",), interrupt="") not in log
    if state in ("MESSAGE", "FOLDER_MENU"):
        edits = sim.closes()[-1]
        assert edits.delete == (0,)
        assert edits.to_old == ((1,) if state == "FOLDER_MENU" else ())


def test_hang_up_during_goodbye_still_closes() -> None:
    sim = Sim(folders={0: messages(0, 1)}, keys="17#")
    sim.hang_up_when = lambda a, s: s.state == "GOODBYE"
    log = sim.run()
    assert log[-2] == Close(FolderEdits("INBOX", delete=(0,)))
    assert log[-1] == Finish(False)
