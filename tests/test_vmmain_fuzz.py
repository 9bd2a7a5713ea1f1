"""Random event sequences into VoiceMailMain's core: it never raises, asks for nothing after
Finish, always ends in Close (when there is anything to apply) then Finish, and never applies
the same edits twice."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from voicemail.login_guard import LoginOutcome
from voicemail.vmmain.core import VoiceMailMain
from voicemail.vmmain.events import (
    ALL_KEYS,
    EXPECTS,
    Close,
    Digit,
    Digits,
    Finish,
    FolderOpened,
    HungUp,
    MailboxFound,
    MailboxInfo,
    MailboxOpened,
    MessageSummary,
    PinChecked,
    PromptDone,
    RecordingDone,
    Stored,
    StoreFailed,
    Timeout,
)
from voicemail.vmmain.options import MainArgs, MenuSettings

INFO = MailboxInfo("1000", "default", "1234")
ALL_EVENTS = (PromptDone, Digit, Timeout, Digits, MailboxFound, MailboxOpened, FolderOpened, Stored)


def answer(kind: type, choice: int, messages: int) -> object:
    if kind is Digit:
        return Digit(ALL_KEYS[choice % len(ALL_KEYS)])
    if kind is Digits:
        return Digits(["1000", "1234", "", "*", "99"][choice % 5])
    if kind is MailboxFound:
        return MailboxFound(INFO if choice % 4 else None)
    if kind is PinChecked:
        return PinChecked(list(LoginOutcome)[choice % 3])
    if kind is MailboxOpened:
        return MailboxOpened(messages, choice % 3, choice % 2)
    if kind is FolderOpened:
        return FolderOpened(0, tuple(MessageSummary(m) for m in range(messages)))
    if kind is Stored:
        return Stored(full=choice % 5 == 0)
    if kind is RecordingDone:
        return RecordingDone(choice % 10)
    if kind is StoreFailed:
        return StoreFailed("x")
    return kind()


@settings(max_examples=300, deadline=None)
@given(
    choices=st.lists(st.integers(0, 1000), max_size=300),
    messages=st.integers(0, 4),
    hang_up_at=st.integers(0, 400),
    wrap=st.booleans(),
    next_after=st.booleans(),
    given_box=st.booleans(),
)
def test_random_sequences(
    choices: list[int],
    messages: int,
    hang_up_at: int,
    wrap: bool,
    next_after: bool,
    given_box: bool,
) -> None:
    session = VoiceMailMain(
        MainArgs(mailbox="1000" if given_box else ""),
        MenuSettings(messagewrap=wrap, nextaftercmd=next_after),
        "1000",
    )
    actions = session.start()
    closes: list[Close] = []
    steps = 0
    feed = iter(choices)
    while True:
        assert actions, "the core stopped without Finish"
        for action in actions[:-1]:
            assert not isinstance(action, Finish)
        if isinstance(actions[-1], Finish):
            closes += [a for a in actions if isinstance(a, Close)]
            break
        (action,) = actions
        if isinstance(action, Close):
            closes.append(action)
        steps += 1
        choice = next(feed, None)
        if steps >= hang_up_at or choice is None:
            event: object = HungUp()
        else:
            kinds = EXPECTS[type(action)]
            if choice % 53 == 0:  # now and then an event that answers something else
                kinds = ALL_EVENTS
            event = answer(kinds[choice % len(kinds)], choice // 7, messages)
        actions = session.handle(event)  # type: ignore[arg-type]
    assert session.finished
    assert session.handle(HungUp()) == []
    assert session.handle(PromptDone()) == []
    for close in closes:
        edits = close.edits
        assert set(edits.delete).isdisjoint(edits.to_old)
        assert all(0 <= m < messages for m in edits.delete + edits.to_old)
