"""The new-user setup right after login (AV@20 vm_execmain "Check to see if this is a new
user", vm_newuser_setup). A generator like menu.py: pure, one action at a time.

A mailbox is new while its PIN is its own number and `forcename` or `forcegreetings` is set:
`vm-newuser`, then the name (forcename) and the unavailable and busy greetings
(forcegreetings) that do not exist yet, each with the owner's record/review loop, then the PIN
(three tries). The PIN comes last, so a caller who hangs up half-way is new again next time.
"""

from __future__ import annotations

from collections.abc import Generator
from enum import Enum

from ..pins import is_hashed, verify_pin
from .events import Action, Event, MailboxInfo, Play
from .options import MenuSettings
from .options_menu import OptionsMenu
from .password import Outcome, PinChange

Step = Generator[Action, Event, object]

# (kind, prompt, the setting that asks for it), in Asterisk's order.
SETUP_GREETINGS = (
    ("greet", "vm-rec-name", "forcename"),
    ("unavail", "vm-rec-unv", "forcegreetings"),
    ("busy", "vm-rec-busy", "forcegreetings"),
)


class SetupEnd(Enum):
    DONE = "done"  # on to the intro and the main menu
    LEFT = "left"  # a review timed out or '#' at a PIN prompt: goodbye, the dial plan goes on
    FAILED = "failed"  # three bad PINs: hang up (Asterisk returns -1)


def needs_setup(info: MailboxInfo, settings: MenuSettings) -> bool:
    """Asterisk's test: the PIN is the mailbox number (strcasecmp) and forcename or
    forcegreetings. The stored PIN may be a hash, so this can cost an argon2 verification:
    the driver runs it in a thread and tells the core (MailboxOpened.new_user)."""
    if not (settings.forcename or settings.forcegreetings):
        return False
    stored = info.password  # a '-' prefix is part of it here, as in Asterisk
    if is_hashed(stored) and not stored.startswith("-"):
        return verify_pin(stored, info.mailbox)
    return stored.lower() == info.mailbox.lower()


def missing_greetings(settings: MenuSettings, existing: frozenset[str]) -> list[tuple[str, str]]:
    """(kind, prompt) of the recordings the setup will ask for."""
    return [
        (kind, prompt)
        for kind, prompt, setting in SETUP_GREETINGS
        if getattr(settings, setting) and kind not in existing
    ]


class NewUserSetup:
    def __init__(self, settings: MenuSettings, existing: frozenset[str]) -> None:
        self.settings = settings
        self.existing = existing
        self.state = "NEWUSER"

    def run(self) -> Step:
        """Returns a SetupEnd. OptionsFailed (a greeting not stored) goes to the caller."""
        self.state = "NEWUSER"
        yield Play(("vm-newuser",))  # a key only cuts it short (Asterisk ignores it)
        recorder = OptionsMenu(self.settings, temp_greeting=False)
        for kind, prompt in missing_greetings(self.settings, self.existing):
            self.state = f"NEWUSER_{kind.upper()}"
            if not (yield from recorder.record_greeting(kind, prompt)):
                return SetupEnd.LEFT
        self.state = "NEWUSER_PIN"
        change = PinChange(self.settings, new_user=True)
        outcome = yield from change.run()
        if outcome is Outcome.LEFT or change.key == "#":
            return SetupEnd.LEFT
        if outcome is Outcome.REFUSED:
            return SetupEnd.FAILED
        return SetupEnd.DONE
