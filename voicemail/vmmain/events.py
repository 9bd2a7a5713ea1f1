"""The vocabulary between the VoiceMailMain core and its driver: events in, actions out.

Everything here is a frozen dataclass without behaviour, so tests can build and compare them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from storage.messagerows import FOLDERS

from ..login_guard import LoginOutcome
from .options import MenuSettings

# Every key interrupts a prompt; the key becomes the next command (Asterisk's play_and_wait).
ALL_KEYS = "0123456789*#"

# Folder numbers as app_voicemail numbers them (0 INBOX ... 9 Cust5, 10 Deleted, 11 Urgent).
INBOX, OLD, URGENT = 0, 1, 11


def folder_name(number: int) -> str:
    return FOLDERS[number]


# --- things to say, expanded into prompt names by a Sayer ------------------------------------


@dataclass(frozen=True)
class SayNumber:
    number: int


@dataclass(frozen=True)
class Intro:
    """'You have N urgent and M new and K old messages' (vm_intro)."""

    new: int
    old: int
    urgent: int


@dataclass(frozen=True)
class Envelope:
    """'Received <date> at <time>' for a message's origtime (unix seconds)."""

    origtime: int


@dataclass(frozen=True)
class CallerId:
    """Who left the message (saycid): the stored callerid string."""

    callerid: str


@dataclass(frozen=True)
class Duration:
    """'This message lasts N minutes' (sayduration)."""

    minutes: int


@dataclass(frozen=True)
class FolderName:
    """A folder's name as the menus say it (vm_play_folder_name): "new messages", or
    "mensajes nuevos" in Spanish; `folder` is a folder number (INBOX, OLD, ...)."""

    folder: int


@dataclass(frozen=True)
class EmptyFolder:
    """Saying that a folder is empty (vm_browse_messages): "you have no new messages"."""

    folder: int


SayItem = str | SayNumber | Intro | Envelope | CallerId | Duration | FolderName | EmptyFolder


# --- the data the core is given ---------------------------------------------------------------


@dataclass(frozen=True)
class MessageSummary:
    msgnum: int
    origtime: int = 0
    callerid: str = ""
    duration: int = 0
    flag: str = ""
    category: str = ""


@dataclass(frozen=True)
class MailboxInfo:
    """What login needs of a mailbox. `password` is compared, never logged."""

    mailbox: str
    context: str
    password: str = field(repr=False)
    language: str = ""
    # The mailbox's own menu settings over [general]'s (None: the session's).
    settings: MenuSettings | None = field(default=None, compare=False, repr=False)
    # The mailbox's `tz`: a [zonemessages] zone name for the envelope ("" the server's zone).
    tz: str = ""


@dataclass(frozen=True)
class FolderEdits:
    """What closing a folder does (Asterisk's close_mailbox): msgnums as listed on opening."""

    folder: str
    delete: tuple[int, ...] = ()
    to_old: tuple[int, ...] = ()


# --- events -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptDone:
    """A Play ran to its end."""


@dataclass(frozen=True)
class Digit:
    """A key interrupted a Play or ended a WaitDigit."""

    key: str


@dataclass(frozen=True)
class Timeout:
    """A WaitDigit ended without a key."""


@dataclass(frozen=True)
class Digits:
    """What a Collect read (terminator not included; may be empty). Not in its repr: it may
    be a PIN, and the core logs an event that answers the wrong action."""

    text: str = field(repr=False)


@dataclass(frozen=True)
class MailboxFound:
    info: MailboxInfo | None


@dataclass(frozen=True)
class MailboxOpened:
    """Counts when logging in, and whether a temporary greeting exists."""

    new: int
    old: int
    urgent: int
    temp_greeting: bool = False
    # Greeting kinds that exist (greet, unavail, busy), looked up only for a new user's setup.
    greetings: frozenset[str] = frozenset()
    # The PIN is the mailbox number and forcename/forcegreetings is set (newuser.needs_setup,
    # worked out by the driver: with a hashed PIN it is an argon2 verification).
    new_user: bool = False


@dataclass(frozen=True)
class FolderOpened:
    folder: int
    messages: tuple[MessageSummary, ...]


@dataclass(frozen=True)
class Stored:
    """A Close or CopyMessage went through; `full` when the destination was full."""

    full: bool = False


@dataclass(frozen=True)
class StoreFailed:
    """The database did not answer or refused: the session ends."""

    reason: str = ""


@dataclass(frozen=True)
class RecordingDone:
    """A Record ended by its end key or its time limit (a hang-up is HungUp)."""

    seconds: float


@dataclass(frozen=True)
class HungUp:
    """The caller is gone; may arrive in place of any other event."""


@dataclass(frozen=True)
class PrefixRecorded:
    """A RecordPrefix ended: by a key (the introduction is kept) or by its time limit or
    silence (Asterisk's prepend timeout: dropped)."""

    seconds: float = 0.0
    by_key: bool = True


@dataclass(frozen=True)
class Forwarded:
    """A ForwardMessage went through: the mailboxes that got a copy and those that were full."""

    delivered: tuple[str, ...] = ()
    full: tuple[str, ...] = ()


@dataclass(frozen=True)
class MessageLeft:
    """A LeaveMessage ended; `status` is the VoiceMail application's VMSTATUS."""

    status: str = ""


@dataclass(frozen=True)
class PasswordChecked:
    """The externpasscheck script's verdict on a new PIN."""

    valid: bool


@dataclass(frozen=True)
class PasswordChanged:
    """The new PIN was stored where the mailbox lives (`ok`), or could not be."""

    ok: bool


@dataclass(frozen=True)
class PinChecked:
    """The login guard's verdict on an entered PIN: OK, WRONG or LOCKED (not checked)."""

    outcome: LoginOutcome


Event = (
    PromptDone
    | Digit
    | Timeout
    | Digits
    | MailboxFound
    | MailboxOpened
    | FolderOpened
    | Stored
    | StoreFailed
    | RecordingDone
    | HungUp
    | PrefixRecorded
    | Forwarded
    | MessageLeft
    | PasswordChecked
    | PasswordChanged
    | PinChecked
)


# --- actions ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Play:
    """Play these items; any of `interrupt` stops it -> Digit, else PromptDone."""

    items: tuple[SayItem, ...]
    interrupt: str = ALL_KEYS


@dataclass(frozen=True)
class WaitDigit:
    """Wait for one key -> Digit or Timeout."""

    seconds: float


@dataclass(frozen=True)
class Collect:
    """Play the prompts (a key starts the entry), then read up to a terminator or a pause.

    -> Digits. Asterisk's ast_readstring: `first` seconds for the first key, `between` after.
    """

    prompts: tuple[SayItem, ...]
    max_digits: int = 80
    first: float = 10.0
    between: float = 2.0
    terminator: str = "#"


@dataclass(frozen=True)
class FindMailbox:
    """-> MailboxFound (info None when there is no such mailbox) or StoreFailed."""

    mailbox: str
    context: str


@dataclass(frozen=True)
class Authenticated:
    """Login succeeded: the driver takes the mailbox's language and opens it -> MailboxOpened."""

    info: MailboxInfo


@dataclass(frozen=True)
class OpenFolder:
    """List a folder (renumbering gaps, as open_mailbox does) -> FolderOpened or StoreFailed."""

    folder: int


@dataclass(frozen=True)
class PlayMessage:
    """Play a message's audio with the listen controls -> PromptDone or Digit (a stop key)."""

    folder: int
    msgnum: int
    skipms: int = 3000


@dataclass(frozen=True)
class CopyMessage:
    """Copy a message to the end of another folder now (save, key 9) -> Stored or StoreFailed."""

    folder: int
    msgnum: int
    to_folder: int
    maxmsg: int | None = None


@dataclass(frozen=True)
class Close:
    """Apply a folder's pending edits -> Stored or StoreFailed. Also the last step on hang-up."""

    edits: FolderEdits


@dataclass(frozen=True)
class Record:
    """Record the caller until one of `end_keys` or `max_seconds` (0: the server's limit);
    the driver keeps the audio for PlayRecording / SaveGreeting -> RecordingDone."""

    max_seconds: int = 0
    end_keys: str = "#"


@dataclass(frozen=True)
class PlayRecording:
    """Play back what Record took (review key 2) -> PromptDone or Digit."""


@dataclass(frozen=True)
class SaveGreeting:
    """Store the last recording as a greeting (unavail, busy, greet, temp) -> Stored."""

    kind: str


@dataclass(frozen=True)
class DeleteGreeting:
    """Remove a greeting (the temporary one) -> Stored."""

    kind: str


@dataclass(frozen=True)
class Finish:
    """The session is over: `keep_going` False hangs up (failed login, hang-up)."""

    keep_going: bool


@dataclass(frozen=True)
class PlayName:
    """Confirm a recipient: its recorded name (greet), else its digits -> PromptDone."""

    mailbox: str
    context: str


@dataclass(frozen=True)
class RecordPrefix:
    """Record an introduction for a forward; any key ends it -> PrefixRecorded. The driver
    keeps the audio for the ForwardMessage that follows."""

    max_silence: int = 0  # seconds, 0: off
    silence_threshold: int = 128


@dataclass(frozen=True)
class ForwardMessage:
    """Copy a message into other mailboxes' `to_folder`, behind the last RecordPrefix when
    `prepend` -> Forwarded or StoreFailed. The lamp of each that got it is updated."""

    folder: int
    msgnum: int
    recipients: tuple[MailboxInfo, ...]
    prepend: bool = False
    to_folder: int = INBOX


@dataclass(frozen=True)
class LeaveMessage:
    """Leave a message in these (mailbox, context)s with the VoiceMail application (reply,
    compose) -> MessageLeft."""

    recipients: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class CheckPassword:
    """Ask the externpasscheck script about a new PIN -> PasswordChecked. Never logged."""

    new: str = field(repr=False)


@dataclass(frozen=True)
class ChangePassword:
    """Store a new PIN (realtime UPDATE, voicemail.conf, externpass) -> PasswordChanged or
    StoreFailed. Never logged."""

    new: str = field(repr=False)


@dataclass(frozen=True)
class CheckPin:
    """Check an entered PIN through the login guard (lockout, audit) -> PinChecked or
    StoreFailed. `info` None: no such mailbox (the same work is done, the answer is WRONG).
    The PIN is never logged."""

    info: MailboxInfo | None
    entered: str = field(repr=False)


Action = (
    Play
    | WaitDigit
    | Collect
    | FindMailbox
    | Authenticated
    | OpenFolder
    | PlayMessage
    | CopyMessage
    | Close
    | Record
    | PlayRecording
    | SaveGreeting
    | DeleteGreeting
    | Finish
    | PlayName
    | RecordPrefix
    | ForwardMessage
    | LeaveMessage
    | CheckPassword
    | ChangePassword
    | CheckPin
)

# What each action may be answered with (HungUp is always possible).
EXPECTS: dict[type, tuple[type, ...]] = {
    Play: (PromptDone, Digit),
    WaitDigit: (Digit, Timeout),
    Collect: (Digits,),
    FindMailbox: (MailboxFound, StoreFailed),
    Authenticated: (MailboxOpened, StoreFailed),
    OpenFolder: (FolderOpened, StoreFailed),
    PlayMessage: (PromptDone, Digit),
    CopyMessage: (Stored, StoreFailed),
    Close: (Stored, StoreFailed),
    Record: (RecordingDone,),
    PlayRecording: (PromptDone, Digit),
    SaveGreeting: (Stored, StoreFailed),
    DeleteGreeting: (Stored, StoreFailed),
    PlayName: (PromptDone, Digit),
    RecordPrefix: (PrefixRecorded,),
    ForwardMessage: (Forwarded, StoreFailed),
    LeaveMessage: (MessageLeft,),
    CheckPassword: (PasswordChecked, StoreFailed),
    ChangePassword: (PasswordChanged, StoreFailed),
    CheckPin: (PinChecked, StoreFailed),
}
