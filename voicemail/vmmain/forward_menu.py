"""Forward, key 8 of the message menu (AV@20 forward_message and vm_forwardoptions), and the
recipient entry it shares with compose (advanced option 5). A generator like menu.py: pure,
one action at a time.

Recipients: `vm-extension`, then digits up to `#`, several mailboxes separated by `*`, each
looked up in the context of the logged-in mailbox. An unknown one (or, when forwarding, your
own mailbox) is `pbx-invalid` and the entry starts again, as in Asterisk; each one found is
confirmed by its recorded name, else its digits. Five prompts without a usable entry give up.
`usedirectory=yes` (choose by the Directory) is refused when voicemail.conf is loaded.

Then `vm-forwardoptions` `vm-starmain`: 1 records an introduction (beep; any key ends it and
sends; a recording ended by its time limit or by silence is dropped with `vm-pls-try-again`
and the `vm-prepend-timeout` prompt, and the options come again), 2 sends as is, * cancels,
four silent rounds cancel. The copies go to each recipient's INBOX (Urgent for an urgent
message with forward_urgent_auto=yes): `vm-mailboxfull` if one was full (the others still get
theirs), `vm-msgforwarded` if any got it.
"""

from __future__ import annotations

from collections.abc import Generator

from .events import (
    INBOX,
    Action,
    Collect,
    Digit,
    Digits,
    Event,
    FindMailbox,
    Forwarded,
    ForwardMessage,
    MailboxFound,
    MailboxInfo,
    MessageSummary,
    Play,
    PlayName,
    PrefixRecorded,
    RecordPrefix,
    StoreFailed,
    WaitDigit,
)
from .options import MenuSettings

Step = Generator[Action, Event, object]

EXTENSION_PROMPTS = 5  # Asterisk: gives up when prompt_played > 4
EXTENSION_FIRST = 10.0  # ast_readstring(..., 2000, 10000, "#")
EXTENSION_BETWEEN = 2.0
OPTIONS_WAIT = 6.0
OPTIONS_ROUNDS = 4  # Asterisk: 'retries > 3'


class MenuStoreFailed(Exception):
    """The database failed in a sub-menu: the session ends."""


def _key(event: Event) -> str | None:
    return event.key if isinstance(event, Digit) else None


def ask_recipients(own: MailboxInfo, allow_self: bool) -> Step:
    """The mailboxes typed, found and confirmed, in order without repeats; () on giving up."""
    for _ in range(EXTENSION_PROMPTS):
        event = yield Collect(("vm-extension",), first=EXTENSION_FIRST, between=EXTENSION_BETWEEN)
        text = event.text if isinstance(event, Digits) else ""
        wanted = [part for part in text.split("*") if part]
        if not wanted:
            continue
        found: list[MailboxInfo] = []
        for number in wanted:
            info = None
            if allow_self or number != own.mailbox:
                event = yield FindMailbox(number, own.context)
                if isinstance(event, StoreFailed):
                    raise MenuStoreFailed(event.reason)
                info = event.info if isinstance(event, MailboxFound) else None
            if info is None:
                yield Play(("pbx-invalid",), interrupt="")
                break
            yield PlayName(info.mailbox, info.context)
            if all((f.mailbox, f.context) != (info.mailbox, info.context) for f in found):
                found.append(info)
        else:
            return tuple(found)
    return ()


class ForwardMenu:
    """One forward of `message` (in `folder`) from the mailbox `own`."""

    def __init__(
        self,
        settings: MenuSettings,
        own: MailboxInfo,
        folder: int,
        message: MessageSummary,
        to_folder: int = INBOX,
    ) -> None:
        self.settings = settings
        self.own = own
        self.folder = folder
        self.message = message
        self.to_folder = to_folder
        self.state = "FORWARD_EXTENSION"

    def run(self) -> Step:
        """Returns the key that interrupted the last prompt (None: back to the menu)."""
        self.state = "FORWARD_EXTENSION"
        recipients = yield from ask_recipients(self.own, allow_self=False)
        if not recipients:
            return None
        prepend = yield from self._options()
        if prepend is None:
            return None
        event = yield ForwardMessage(
            self.folder, self.message.msgnum, recipients, prepend, self.to_folder
        )
        if isinstance(event, StoreFailed) or not isinstance(event, Forwarded):
            raise MenuStoreFailed(getattr(event, "reason", "forward failed"))
        items = (["vm-mailboxfull"] if event.full else []) + (
            ["vm-msgforwarded"] if event.delivered else []
        )
        return _key((yield Play(tuple(items))))

    def _options(self) -> Step:
        """vm_forwardoptions: True with an introduction, False as is, None cancelled."""
        key: str | None = None
        rounds = 0
        while True:
            self.state = "FORWARD_OPTIONS"
            if key == "1":
                self.state = "FORWARD_PREPEND"
                yield Play(("beep",), interrupt="")
                event = yield RecordPrefix(self.settings.maxsilence, self.settings.silencethreshold)
                if isinstance(event, PrefixRecorded) and event.by_key:
                    return True
                yield Play(("vm-pls-try-again", "vm-prepend-timeout"), interrupt="")
                key = None
                continue
            if key == "2":
                return False
            if key == "*":
                return None
            key = _key((yield Play(("vm-forwardoptions", "vm-starmain"))))
            if key is None:
                key = _key((yield WaitDigit(OPTIONS_WAIT)))
            if key is None:
                rounds += 1
                if rounds >= OPTIONS_ROUNDS:
                    return None
            else:
                rounds = 0
                if key not in ("1", "2", "*"):
                    key = None  # Asterisk plays the options again for any other key
