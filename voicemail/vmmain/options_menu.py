"""Mailbox options, key 0 of the main menu (AV@20 vm_options, play_record_review for the
owner's greetings). A generator like menu.py: pure, one action at a time.

1 unavailable, 2 busy, 3 name, 4 temporary greeting (record, or 1 record / 2 erase when one
exists), 5 change the PIN (password.py; `vm-no` when the stored PIN starts with '-'), * back.
"""

from __future__ import annotations

from collections.abc import Generator

from .events import (
    Action,
    DeleteGreeting,
    Digit,
    Event,
    Play,
    PlayRecording,
    Record,
    SaveGreeting,
    StoreFailed,
    WaitDigit,
)
from .options import MenuSettings
from .password import PinChange

Step = Generator[Action, Event, object]

OPTIONS_WAIT = 6.0
OPTIONS_ROUNDS = 4  # Asterisk: 'retries > 3'
REVIEW_ROUNDS = 3
GREETINGS = {
    "1": ("unavail", "vm-rec-unv"),
    "2": ("busy", "vm-rec-busy"),
    "3": ("greet", "vm-rec-name"),
}


class OptionsFailed(Exception):
    """A greeting could not be stored or removed."""


def _key(event: Event) -> str | None:
    return event.key if isinstance(event, Digit) else None


class OptionsMenu:
    def __init__(self, settings: MenuSettings, temp_greeting: bool) -> None:
        self.settings = settings
        self.temp_greeting = temp_greeting
        self.state = "OPTIONS"
        self.saved = False  # whether the last record/review kept its recording

    def _play(self, *items: str) -> Step:
        return _key((yield Play(tuple(items))))

    def run(self) -> Step:
        """Returns the key that ended the menu's last prompt (None: back to the main menu)."""
        cmd: str | None = None
        rounds = 0
        while True:
            self.state = "OPTIONS"
            if cmd is not None:
                rounds = 0
            if cmd in GREETINGS:
                kind, prompt = GREETINGS[cmd]
                cmd = yield from self._record_review(kind, prompt)
            elif cmd == "4":
                cmd = yield from self._temporary()
            elif cmd == "5":
                cmd = yield from self._change_pin()
            elif cmd == "*":
                return None
            else:
                items = (["vm-tmpexists"] if self.temp_greeting else []) + ["vm-options"]
                cmd = yield from self._play(*items)
                if cmd is None:
                    cmd = _key((yield WaitDigit(OPTIONS_WAIT)))
                if cmd is None:
                    rounds += 1
                    if rounds >= OPTIONS_ROUNDS:
                        return None

    def _change_pin(self) -> Step:
        """vm_options case '5': one try, then back here with the key that cut a prompt."""
        if self.settings.pin_locked:
            return (yield from self._play("vm-no"))
        self.state = "PASSWORD"
        change = PinChange(self.settings)
        yield from change.run()
        return change.key

    def record_greeting(self, kind: str, prompt: str) -> Step:
        """The record/review loop on its own (new-user setup): True if the greeting was kept."""
        yield from self._record_review(kind, prompt)
        return self.saved

    def _temporary(self) -> Step:
        if not self.temp_greeting:
            return (yield from self._record_review("temp", "vm-rec-temp"))
        rounds = 0
        while True:
            self.state = "OPTIONS_TEMP"
            key = yield from self._play("vm-tempgreeting2")
            if key is None:
                key = _key((yield WaitDigit(OPTIONS_WAIT)))
            if key == "1":
                return (yield from self._record_review("temp", "vm-rec-temp"))
            if key == "2":
                if isinstance((yield DeleteGreeting("temp")), StoreFailed):
                    raise OptionsFailed("temp greeting not removed")
                self.temp_greeting = False
                yield from self._play("vm-tempremoved")
                return None
            if key == "*":
                return None
            if key is None:
                rounds += 1
                if rounds >= OPTIONS_ROUNDS:
                    return None

    def _record_review(self, kind: str, prompt: str) -> Step:
        """Prompt, beep, record to #, thank you; then 1 accept, 2 listen, 3 re-record.
        Three silent rounds (or a hang-up) discard the recording."""
        cmd: str | None = "3"
        recorded = False
        rounds = 0
        self.saved = False
        while True:
            if cmd == "3":
                self.state = "RECORDING"
                yield Play((prompt, "beep"), interrupt="")
                yield Record(self.settings.maxgreet, "#")
                yield Play(("auth-thankyou",), interrupt="")
                recorded, cmd, rounds = True, None, 0
                continue
            self.state = "REVIEW"
            if cmd == "1" and recorded:
                if isinstance((yield SaveGreeting(kind)), StoreFailed):
                    raise OptionsFailed(f"{kind} greeting not stored")
                if kind == "temp":
                    self.temp_greeting = True
                self.saved = True
                yield Play(("vm-msgsaved",), interrupt="")
                return None
            if cmd == "2":
                cmd = _key((yield PlayRecording()))
                continue
            if cmd is not None:
                cmd = yield from self._play("vm-sorry")
                continue
            cmd = yield from self._play("vm-review")
            if cmd is None:
                cmd = _key((yield WaitDigit(OPTIONS_WAIT)))
            if cmd is None:
                rounds += 1
                if rounds >= REVIEW_ROUNDS:
                    return None
