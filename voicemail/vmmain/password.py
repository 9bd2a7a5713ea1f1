"""Changing the PIN (AV@20 vm_options key 5 and the end of vm_newuser_setup), pure.

The rules of a new PIN are pins.pin_problem (at least `minpassword` digits, default 4, and
digits only; not one repeated digit, a run, the mailbox number or a common PIN), then, when
`externpasscheck` is set, the script's verdict (asked for with a CheckPassword action). Each
refusal says why: a prompt of ours for the reason (REASON_PROMPTS, prompts/manifest-en.tsv),
then Asterisk's vm-invalid-password.

`change_pin` asks for the PIN twice and stores it with a ChangePassword action. Neither the
entered digits nor the stored PIN are ever logged.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from enum import Enum

from ..pins import pin_problem
from .events import (
    Action,
    ChangePassword,
    CheckPassword,
    Collect,
    Digit,
    Digits,
    Event,
    PasswordChanged,
    PasswordChecked,
    Play,
)
from .options import MenuSettings

log = logging.getLogger(__name__)

Step = Generator[Action, Event, object]

# ast_readstring(..., 2000, 10000, "#") in vm_options and vm_newuser_setup.
PIN_FIRST = 10.0
PIN_BETWEEN = 2.0
NEW_USER_TRIES = 3  # vm_newuser_setup: 'if (++tries == 3) return -1'


class Outcome(Enum):
    CHANGED = "changed"  # stored; vm-passchanged played
    NOT_STORED = "not stored"  # entered twice alike, but the write failed (said so)
    REFUSED = "refused"  # invalid or mismatched (the last try, or key 5's only try)
    LEFT = "left"  # new user: '#' or nothing entered (Asterisk's '#': goodbye)


# Why a new PIN was refused (pins.pin_problem's reasons) -> the prompt that says so.
REASON_PROMPTS = {
    "short": "pin-too-short",
    "digits": "pin-digits-only",
    "same": "pin-one-digit",
    "run": "pin-run",
    "mailbox": "pin-is-mailbox",
    "common": "pin-too-common",
}


def _key(event: Event) -> str | None:
    return event.key if isinstance(event, Digit) else None


class PinChange:
    """One run of the PIN dialogue. `key` is the key that interrupted its last prompt (key 5
    hands it back to the options menu as the next command, as Asterisk does)."""

    def __init__(self, settings: MenuSettings, new_user: bool = False) -> None:
        self.settings = settings
        self.new_user = new_user
        self.key: str | None = None
        self.state = "PIN_NEW"

    def _entry(self, prompt: str) -> Step:
        event = yield Collect((prompt,), first=PIN_FIRST, between=PIN_BETWEEN)
        assert isinstance(event, Digits)
        return event.text

    def _play(self, *items: str) -> Step:
        self.key = _key((yield Play(tuple(items))))
        return self.key

    def _problem(self, new: str) -> Step:
        """Why `new` is refused (a pins.pin_problem reason or "externpasscheck"), or None."""
        settings = self.settings
        problem = pin_problem(new, mailbox=settings.mailbox, minpassword=settings.minpassword)
        if problem is None and settings.externpasscheck:
            answer = yield CheckPassword(new)
            if not (isinstance(answer, PasswordChecked) and answer.valid):
                problem = "externpasscheck"
        if problem is not None:
            log.info("VoiceMailMain: new PIN refused (%s)", problem)
        return problem

    def run(self) -> Step:
        """Key 5: one try. New user: up to three. Returns an Outcome."""
        tries = 0
        while True:
            self.key = None
            self.state = "PIN_NEW"
            new = yield from self._entry("vm-newpassword")
            if self.new_user and not new:
                return Outcome.LEFT
            problem = yield from self._problem(new)
            if problem is None:
                self.state = "PIN_AGAIN"
                again = yield from self._entry("vm-reenterpassword")
                if self.new_user and not again:
                    return Outcome.LEFT
                if again == new:
                    return (yield from self._store(new))
                log.info("VoiceMailMain: the two new PINs differ")
                key = yield from self._play("vm-mismatch")
            else:
                reason = REASON_PROMPTS.get(problem)
                key = yield from self._play(*([reason] if reason else []), "vm-invalid-password")
            tries += 1
            if not self.new_user:
                # vm_options: "please try again" unless a key cut in; back to the options.
                if key is None:
                    yield from self._play("vm-pls-try-again")
                return Outcome.REFUSED
            if tries >= NEW_USER_TRIES:
                return Outcome.REFUSED
            # vm_newuser_setup plays it only when a key cut the prompt short (AV@20 as is).
            if key is not None:
                yield from self._play("vm-pls-try-again")

    def _store(self, new: str) -> Step:
        self.state = "PIN_STORE"
        answer = yield ChangePassword(new)
        if isinstance(answer, PasswordChanged) and answer.ok:
            yield from self._play("vm-passchanged")
            return Outcome.CHANGED
        # Asterisk says nothing here and claims success; we do not claim it.
        yield from self._play("vm-sorry")
        return Outcome.NOT_STORED
