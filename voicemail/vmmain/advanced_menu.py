"""Advanced options, key 3 of the main and message menus (AV@20 vm_execmain case '3' and
advanced_options). A generator like menu.py: pure, one action at a time.

Prompts: `vm-toreply` and `vm-tohearenv` when a message is current (one has been played),
`vm-leavemsg` with sendvoicemail=yes, `vm-starmain`; 6 s, four silent rounds go back.
1 reply: the message's caller id number, if it is a mailbox in the logged-in mailbox's
context, gets a message left by the VoiceMail application (its greeting rules, vm-intro, beep);
no number -> `vm-nonumber`, no such mailbox -> `vm-nobox`. 3 envelope: the date and the caller
id (Asterisk 20 does not replay the message after it). 5 compose (sendvoicemail=yes): the
recipients as for forward (your own mailbox allowed), then a new message for all of them.
2 call back and 4 dial out need `callback=` / `dialout=` contexts, which are refused when
voicemail.conf is loaded (not built), so here they are `vm-sorry` as in Asterisk without them.
* goes back, # leaves VoiceMailMain (as in Asterisk). After any option: back to the menu.
"""

from __future__ import annotations

from collections.abc import Generator

from .events import (
    Action,
    CallerId,
    Digit,
    Envelope,
    Event,
    FindMailbox,
    LeaveMessage,
    MailboxFound,
    MailboxInfo,
    MessageSummary,
    Play,
    StoreFailed,
    WaitDigit,
)
from .forward_menu import MenuStoreFailed, ask_recipients
from .options import MenuSettings

Step = Generator[Action, Event, object]

ADVANCED_WAIT = 6.0
ADVANCED_ROUNDS = 4  # Asterisk: 'vms.repeats > 3'


def _key(event: Event) -> str | None:
    return event.key if isinstance(event, Digit) else None


def caller_number(callerid: str) -> str:
    """The number of a stored callerid as ast_callerid_parse finds it: inside `<...>`, or the
    whole string when it is a phone number; "" for a name only or `Unknown`."""
    text = callerid.strip()
    if "<" in text and text.endswith(">"):
        return text[text.rindex("<") + 1 : -1].strip()
    return text if text and all(c.isdigit() or c in "+-() ." for c in text) else ""


class AdvancedMenu:
    """The options for `message` (None when no message is current) of the mailbox `own`."""

    def __init__(
        self, settings: MenuSettings, own: MailboxInfo, message: MessageSummary | None
    ) -> None:
        self.settings = settings
        self.own = own
        self.message = message
        self.state = "ADVANCED"

    def run(self) -> Step:
        """Returns '#' when the caller pressed it (leave VoiceMailMain), else None."""
        rounds = 0
        while True:
            self.state = "ADVANCED"
            key = _key((yield Play(tuple(self._prompts()))))
            if key is None:
                key = _key((yield WaitDigit(ADVANCED_WAIT)))
            if key is None:
                rounds += 1
                if rounds >= ADVANCED_ROUNDS:
                    return None
                continue
            rounds = 0
            if key == "1" and self.message is not None:
                yield from self._reply(self.message)
                return None
            if key == "3" and self.message is not None:
                yield Play((Envelope(self.message.origtime), CallerId(self.message.callerid)))
                return None
            if key == "5" and self.settings.sendvoicemail:
                yield from self._compose()
                return None
            if key in ("1", "2", "3", "4", "5"):
                yield Play(("vm-sorry",))
                return None
            if key == "*":
                return None
            if key == "#":
                return key
            # any other key: the options again

    def _prompts(self) -> list[str]:
        items = []
        if self.message is not None:
            items += ["vm-toreply", "vm-tohearenv"]
        if self.settings.sendvoicemail:
            items.append("vm-leavemsg")
        items.append("vm-starmain")
        return items

    def _reply(self, message: MessageSummary) -> Step:
        number = caller_number(message.callerid)
        if not number:
            yield Play(("vm-nonumber",))
            return None
        event = yield FindMailbox(number, self.own.context)
        if isinstance(event, StoreFailed):
            raise MenuStoreFailed(event.reason)
        info = event.info if isinstance(event, MailboxFound) else None
        if info is None:
            yield Play(("vm-nobox",))
            return None
        self.state = "LEAVE_MESSAGE"
        yield LeaveMessage(((info.mailbox, info.context),))
        return None

    def _compose(self) -> Step:
        self.state = "COMPOSE_EXTENSION"
        recipients = yield from ask_recipients(self.own, allow_self=True)
        if recipients:
            self.state = "LEAVE_MESSAGE"
            yield LeaveMessage(tuple((r.mailbox, r.context) for r in recipients))
        return None
