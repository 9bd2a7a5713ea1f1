"""Mailbox tools for the operator: list, export and delete messages without sqlite3.

`voicemail messages list|export|delete` (voicemail/cli.py) call these, and the console can
register the same functions: each takes the message store, does one thing and returns the text
to show. A wrong mailbox, folder or message number raises OperatorError with a message for the
operator (the CLI prints it and exits 1); a database that does not answer raises DatabaseError.

Deletes renumber the folder's later messages down (Asterisk's compaction, as VoiceMailMain's
deletes do), in one transaction under the folder's lock, so a deposit arriving meanwhile in
another server never takes a number in the middle.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from storage import audioformats
from storage.messages import FOLDERS, MessageInfo, MessageStore
from storage.odbc import DatabaseError

from .console.commands import CommandError, Commands
from .mailboxes import Mailbox, MailboxDirectory
from .notifications import queue_close_events

if TYPE_CHECKING:
    from .server import VoicemailServer

# Formats `export --format` writes: the stored ones (storage/audioformats.py) and, through
# pydub on ffmpeg, the attachment formats (voicemail/mail/attach.py).
EXPORT_FORMATS = (*audioformats.FORMATS, "mp3", "ogg", "opus")

DATE_FORMAT = "%Y-%m-%d %H:%M:%S %Z"


class OperatorError(Exception):
    """A mailbox, folder or message that is not there; the message says which."""


def parse_mailbox(text: str) -> tuple[str, str]:
    """`1000@default` (or `1000`: context default) as (mailbox, context)."""
    mailbox, _, context = text.strip().partition("@")
    context = context or "default"
    for what, value in (("mailbox", mailbox), ("context", context)):
        if not value or "/" in value or "@" in value:
            raise OperatorError(f"invalid {what} in {text!r}; expected MAILBOX@CONTEXT")
    return mailbox, context


def parse_folder(text: str) -> str:
    """A folder as Asterisk names it (INBOX, Old, Work, ... Urgent, any case) or by its number
    in Asterisk's list (0 INBOX, 1 Old, ... 10 Deleted, 11 Urgent)."""
    word = text.strip()
    if word.isdigit():
        index = int(word)
        if index < len(FOLDERS):
            return FOLDERS[index]
    else:
        for name in FOLDERS:
            if name.lower() == word.lower():
                return name
    raise OperatorError(
        f"unknown folder {text!r}; expected one of {', '.join(FOLDERS)} "
        f"or a number 0-{len(FOLDERS) - 1}"
    )


def _parse_msgnum(msgnum: int | str) -> int:
    try:
        number = int(msgnum)
    except ValueError:
        raise OperatorError(f"message number must be a number, not {msgnum!r}") from None
    if number < 0:
        raise OperatorError(f"message number must be 0 or more, not {number}")
    return number


async def _find_mailbox(
    directory: MailboxDirectory | None, mailbox: str, context: str
) -> Mailbox | None:
    """The configured mailbox, or None when there is no directory to ask or it is unknown."""
    if directory is None:
        return None
    return await directory.find(mailbox, context)


def _mailbox_zone(found: Mailbox | None, directory: MailboxDirectory | None) -> tzinfo | None:
    """The zone of the mailbox's `tz=` [zonemessages] entry; None (local time) otherwise."""
    if found is None or directory is None:
        return None
    value = directory.settings.zonemessages.get(found.option("tz").strip())
    if not value:
        return None
    cut = min((i for i in (value.find("|"), value.find(",")) if i >= 0), default=len(value))
    try:
        return ZoneInfo(value[:cut].strip())
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _date(origtime: int, zone: tzinfo | None) -> str:
    moment = datetime.fromtimestamp(origtime, zone)
    return (moment if zone is not None else moment.astimezone()).strftime(DATE_FORMAT)


def _duration(seconds: int) -> str:
    return f"{seconds // 60}:{seconds % 60:02d}"


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


async def _unknown_mailbox(
    store: MessageStore, directory: MailboxDirectory | None, mailbox: str, context: str
) -> str | None:
    """Why `mailbox@context` is wrong, or None. A mailbox no longer configured but with
    messages left in the table is accepted, so that those can still be read and removed."""
    if directory is None or await _find_mailbox(directory, mailbox, context) is not None:
        return None
    for folder in FOLDERS:
        if await store.count(context, mailbox, folder):
            return None
    return f"no mailbox {mailbox}@{context} (not in voicemail.conf nor in the realtime table)"


async def list_messages(
    store: MessageStore,
    mailbox: str,
    context: str,
    folder: str | None,
    *,
    directory: MailboxDirectory | None = None,
) -> str:
    """A table of the messages of one folder, or of every folder when `folder` is None:
    folder, message number, date (in the mailbox's `tz=` zone, else local), caller id,
    duration and flag. `directory` (when given) refuses a mailbox nobody configured."""
    folders = list(FOLDERS) if folder is None else [parse_folder(folder)]
    problem = await _unknown_mailbox(store, directory, mailbox, context)
    if problem is not None:
        raise OperatorError(problem)
    zone = _mailbox_zone(await _find_mailbox(directory, mailbox, context), directory)
    found: list[MessageInfo] = []
    for name in folders:
        found.extend(await store.list_messages(context, mailbox, name))
    where = f"{mailbox}@{context}" + ("" if folder is None else f" {folders[0]}")
    if not found:
        return f"no messages in {where}"
    rows = [("Folder", "Msg", "Date", "Caller ID", "Duration", "Flag")]
    for info in found:
        rows.append(
            (
                info.dir.rsplit("/", 1)[-1],
                str(info.msgnum),
                _date(info.origtime, zone),
                info.callerid or "Unknown",
                _duration(info.duration),
                info.flag,
            )
        )
    count = len(found)
    return _table(rows) + f"\n{count} message{'s' if count != 1 else ''} in {where}"


async def export_message(
    store: MessageStore,
    mailbox: str,
    context: str,
    folder: str,
    msgnum: int | str,
    path: Path,
    fmt: str | None = None,
    *,
    stored: str = "wav",
) -> str:
    """Write one message's audio to `path`: its bytes as stored when `fmt` is None or the
    stored format, else converted to `fmt` (EXPORT_FORMATS). `stored` is the format the
    configuration stores (voicemail.conf `format=`'s first), used when the bytes do not say."""
    name = parse_folder(folder)
    number = _parse_msgnum(msgnum)
    target = None if fmt is None else fmt.strip().lower()
    if target is not None and target not in EXPORT_FORMATS:
        raise OperatorError(f"unknown format {fmt!r}; expected one of {', '.join(EXPORT_FORMATS)}")
    message = await store.retrieve(context, mailbox, name, number)
    if message is None:
        raise OperatorError(f"no message {number} in {mailbox}@{context} {name}")
    have = audioformats.detect_format(message.recording) or stored
    data = message.recording
    if target is not None and target != have:
        data = await asyncio.to_thread(_convert, message.recording, have, target)
    try:
        await asyncio.to_thread(path.write_bytes, data)
    except OSError as exc:
        raise OperatorError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return (
        f"{path}: {len(data)} bytes, {target or have}"
        + ("" if target in (None, have) else f" (converted from {have})")
        + f", {message.duration} s, from {message.callerid or 'Unknown'}"
    )


def _convert(recording: bytes, have: str, target: str) -> bytes:
    """Stored audio to another format (blocking: sox and ffmpeg subprocesses)."""
    from .mail.attach import convert  # pydub is loaded only when a conversion is asked for

    try:
        return convert(audioformats.decode(recording, have), target)
    except Exception as exc:  # noqa: BLE001 - sox, ffmpeg or a damaged recording
        raise OperatorError(f"cannot convert the {have} recording to {target}: {exc}") from exc


async def delete_message(
    store: MessageStore,
    mailbox: str,
    context: str,
    folder: str,
    msgnum: int | str,
    *,
    directory: MailboxDirectory | None = None,
) -> str:
    """Remove one message and renumber the folder's later ones down, as Asterisk does when a
    mailbox is closed after a delete (store.delete_messages: one transaction, folder lock)."""
    name = parse_folder(folder)
    number = _parse_msgnum(msgnum)
    problem = await _unknown_mailbox(store, directory, mailbox, context)
    if problem is not None:
        raise OperatorError(problem)
    general = directory.settings.general if directory is not None else {}
    listed = []  # for the webhook's `deleted` event, as VoiceMailMain's deletes send it
    if store.outbox is not None and general.get("webhookurl", "").strip():
        listed = await store.list_messages(context, mailbox, name)
    removed = await store.delete_messages(context, mailbox, name, [number])
    if not removed:
        raise OperatorError(f"no message {number} in {mailbox}@{context} {name}")
    await queue_close_events(
        store,
        store.outbox,
        general,
        context=context,
        mailbox=mailbox,
        folder=name,
        listed=listed,
        read=[],
        deleted=[number],
    )
    left = await store.count(context, mailbox, name)
    done = f"deleted message {number} of {mailbox}@{context} {name}"
    if not left:
        return f"{done}; the folder is empty"
    if number >= left:
        return f"{done}; {left} message{'s' if left != 1 else ''} left"
    return f"{done}; messages {number + 1}-{left} are now {number}-{left - 1}"


# --- the same as console commands ------------------------------------------------------------

LIST_USAGE = "voicemail messages list <mailbox>@<context> [folder]"
DELETE_USAGE = "voicemail messages delete <mailbox>@<context> <folder> <msgnum>"


def register_console_commands(commands: Commands, server: VoicemailServer) -> None:
    """`voicemail messages list` and `delete` on the running server's console (export writes
    a file, which belongs on the operator's side: the `voicemail messages export` command)."""

    def store() -> MessageStore:
        if server.store is None:
            raise CommandError("the message store is not open yet")
        return server.store

    async def listing(args: list[str]) -> str:
        if len(args) not in (1, 2):
            raise CommandError(f"Usage: {LIST_USAGE}")
        try:
            mailbox, context = parse_mailbox(args[0])
            return await list_messages(
                store(), mailbox, context, args[1] if len(args) > 1 else None,
                directory=server.mailboxes,
            )  # fmt: skip
        except (OperatorError, DatabaseError) as exc:
            raise CommandError(str(exc)) from exc

    async def deleting(args: list[str]) -> str:
        if len(args) != 3:
            raise CommandError(f"Usage: {DELETE_USAGE}")
        try:
            mailbox, context = parse_mailbox(args[0])
            answer = await delete_message(
                store(), mailbox, context, args[1], args[2], directory=server.mailboxes
            )
        except (OperatorError, DatabaseError) as exc:
            raise CommandError(str(exc)) from exc
        if server.mwi is not None:  # the phones' lamps follow at once
            server.mwi.mailbox_changed(mailbox, context)
        return answer

    commands.register(LIST_USAGE, listing, "List a mailbox's messages")
    commands.register(DELETE_USAGE, deleting, "Delete a message; later ones are renumbered")
