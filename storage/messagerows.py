"""What the message table holds: folder names, message rows as dataclasses, and the rules for
reading Asterisk's rows (NULLs, varchar numbers) and for pinning a message to its msg_id."""

from __future__ import annotations

import secrets
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

FOLDERS = (
    "INBOX",
    "Old",
    "Work",
    "Family",
    "Friends",
    "Cust1",
    "Cust2",
    "Cust3",
    "Cust4",
    "Cust5",
    "Deleted",
    "Urgent",
)

# Greetings are rows with msgnum -1 whose `dir` is the greeting's base path (fact sheet 1.5).
GREETINGS = ("unavail", "busy", "greet", "temp")

DEFAULT_SPOOL_PREFIX = "/var/spool/asterisk/voicemail/"

# Columns written on store, in Asterisk's INSERT order; absent ones are left out.
INSERT_COLUMNS = (
    "dir",
    "msgnum",
    "recording",
    "context",
    "macrocontext",
    "callerid",
    "origtime",
    "duration",
    "mailboxuser",
    "mailboxcontext",
    "flag",
    "msg_id",
    "category",
)

# Columns a copy takes from the source row; dir, msgnum and the owner come from the destination.
# Unlike Asterisk's COPY, category is kept.
COPIED_COLUMNS = (
    "context",
    "macrocontext",
    "callerid",
    "origtime",
    "duration",
    "recording",
    "flag",
    "category",
    "msg_id",
)

# Everything list_messages() reports: every known column but the audio.
INFO_COLUMNS = (
    "msgnum",
    "context",
    "macrocontext",
    "callerid",
    "origtime",
    "duration",
    "flag",
    "category",
    "mailboxuser",
    "mailboxcontext",
    "msg_id",
)

# (msgnum, msg_id or None) of one row of a folder.
Row = tuple[int, str | None]


class MailboxFull(Exception):
    """The folder already holds `maxmsg` messages (Asterisk plays vm-mailboxfull)."""

    def __init__(self, folder_dir: str, maxmsg: int) -> None:
        super().__init__(f"{folder_dir} is full: it already has maxmsg={maxmsg} messages")
        self.dir = folder_dir
        self.maxmsg = maxmsg


class MessageNotFound(LookupError):
    """The message to copy or move is not there (any more)."""


def new_msg_id() -> str:
    """A message id shaped like Asterisk's `<unixtime>-<hex>`, unique across servers.

    Asterisk uses a per-process counter (`%ld-%08x`), unique only on one host; 64 random bits
    make ids from several servers sharing a database collide with negligible probability.
    """
    return f"{int(time.time())}-{secrets.token_hex(8)}"


@dataclass
class StoredMessage:
    """One message row as app_voicemail stores it."""

    dir: str
    msgnum: int
    context: str
    macrocontext: str
    callerid: str
    origtime: int
    duration: int
    recording: bytes
    flag: str
    category: str | None
    mailboxuser: str
    mailboxcontext: str
    msg_id: str


@dataclass
class MessageInfo:
    """A message row without its audio: what a folder listing needs."""

    dir: str
    msgnum: int
    context: str
    macrocontext: str
    callerid: str
    origtime: int
    duration: int
    flag: str
    category: str | None
    mailboxuser: str
    mailboxcontext: str
    msg_id: str


@dataclass(frozen=True)
class Pin:
    """A message chosen by msgnum, with its msg_id when that identifies it within the folder."""

    msgnum: int
    msg_id: str | None


def pin_messages(rows: Sequence[Row], msgnums: Iterable[int]) -> list[Pin]:
    """Pin the existing ones of `msgnums`; a msg_id counts only if it is unique in the folder."""
    uses = Counter(msg_id for _, msg_id in rows if msg_id)
    present = dict(rows)
    pins = []
    for msgnum in msgnums:
        if msgnum in present:
            msg_id = present[msgnum]
            pins.append(Pin(msgnum, msg_id if msg_id and uses[msg_id] == 1 else None))
    return pins


def locate(rows: Sequence[Row], pin: Pin) -> int | None:
    """Where a pinned message is now, or None if it is gone.

    Compaction only moves messages down and keeps their order, and copies are appended, so the
    pinned message is the lowest row with its msg_id. Without a msg_id, trust the msgnum.
    """
    if pin.msg_id is None:
        return pin.msgnum if any(msgnum == pin.msgnum for msgnum, _ in rows) else None
    found = [msgnum for msgnum, msg_id in rows if msg_id == pin.msg_id]
    return min(found) if found else None


def without(rows: Sequence[Row], msgnum: int, msg_id: str | None) -> list[Row]:
    """The rows left once a message is deleted: the one row with its msg_id when it has one
    (a legacy table may hold other rows at its msgnum), else every row at its msgnum."""
    if msg_id is None:
        return [row for row in rows if row[0] != msgnum]
    return [row for row in rows if row != (msgnum, msg_id)]


def as_int(value: Any) -> int:
    """Legacy tables keep origtime/duration as varchar; Asterisk reads them with atoi."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip() or 0)
    except ValueError:
        return 0


def as_text(value: Any) -> str:
    return "" if value is None else str(value)


def row_fields(data: dict[str, Any], folder_dir: str, msgnum: int) -> dict[str, Any]:
    """The StoredMessage/MessageInfo fields of a row, with Asterisk's reading of NULLs."""
    return {
        "dir": folder_dir,
        "msgnum": int(data.get("msgnum", msgnum)),
        "context": as_text(data.get("context")),
        "macrocontext": as_text(data.get("macrocontext")),
        "callerid": as_text(data.get("callerid")),
        "origtime": as_int(data.get("origtime")),
        "duration": as_int(data.get("duration")),
        "flag": as_text(data.get("flag")),
        "category": None if data.get("category") is None else str(data["category"]),
        "mailboxuser": as_text(data.get("mailboxuser")),
        "mailboxcontext": as_text(data.get("mailboxcontext")),
        "msg_id": as_text(data.get("msg_id")),
    }
