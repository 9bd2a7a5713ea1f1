"""What a new, read or deleted message queues in the outbox (storage/outbox.py), and how the
sender reads it back.

One outbox row per notification: an `email` row per `|`-separated address of the mailbox's
email, a `pager` row per pager address, and a `webhook` row per event when `webhookurl` is
set. The rows are written in the transaction that stores the message (or with it in the
local spool), so the payload carries what the sender needs later and cannot look up then:
the mailbox's full name and mail options as they were at the deposit (the mailbox may be a
realtime row that changes), the stored audio format, whether it is a forwarded copy. The
message itself (number, caller ID, audio) is read from the database when the mail is sent,
so a message renumbered meanwhile gets its current number.

A webhook row's recipient is `<event>:<mailbox>@<context>`, so the new, read and deleted
events of one message (and of its copies, which share its msg_id) are separate rows; its
payload holds the URL and the JSON body as of the event. The signing key is read from
the configuration when it is sent, never stored in the database.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyodbc
from sqlalchemy import bindparam, select

from storage.messages import FOLDERS, MessageStore
from storage.messages import MessageInfo as StoredInfo
from storage.odbc import DatabaseError
from storage.outbox import Outbox, OutboxItem
from storage.schema import compile_sql, messages_table
from storage.spool import PendingMessage, Spool

from .mail.settings import MAILBOX_OPTIONS

if TYPE_CHECKING:
    from .config_voicemail import VoicemailSettings
    from .mailboxes import Mailbox, MailboxDirectory

log = logging.getLogger(__name__)

EVENTS = ("new", "read", "deleted")
# Mailbox options the sender needs: the mail ones, and delete=yes (delete once mailed).
CARRIED_OPTIONS = MAILBOX_OPTIONS | {"delete", "deletevoicemail"}
_MAX_RECIPIENT = 255


@dataclass(frozen=True)
class MailPayload:
    """An email or pager row's payload."""

    fullname: str
    options: dict[str, str]
    audio_format: str
    forwarded: bool = False

    def to_json(self) -> str:
        return json.dumps(
            {
                "fullname": self.fullname,
                "options": self.options,
                "format": self.audio_format,
                "forwarded": self.forwarded,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> MailPayload:
        """ValueError when the payload is not one of ours."""
        data = _object(text)
        options = data.get("options", {})
        if not isinstance(options, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in options.items()
        ):
            raise ValueError("mail payload: options must map names to text")
        return cls(
            fullname=str(data.get("fullname", "")),
            options=options,
            audio_format=str(data.get("format", "")),
            forwarded=bool(data.get("forwarded", False)),
        )

    @property
    def delete_after(self) -> bool:
        """delete=yes (or Asterisk's older deletevoicemail=yes) on the mailbox."""
        for name in ("delete", "deletevoicemail"):
            if self.options.get(name, "").strip().lower() in ("yes", "true", "y", "t", "1", "on"):
                return True
        return False


@dataclass(frozen=True)
class WebhookPayload:
    """A webhook row's payload: where to POST and the JSON body to sign and send."""

    url: str
    body: dict[str, Any]

    def to_json(self) -> str:
        return json.dumps({"url": self.url, "body": self.body}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> WebhookPayload:
        data = _object(text)
        url, body = data.get("url"), data.get("body")
        if not isinstance(url, str) or not isinstance(body, dict):
            raise ValueError("webhook payload needs url and body")
        return cls(url, body)


def addresses(field: str) -> list[str]:
    """`a@x|b@y` as a list, blanks dropped, each address once."""
    seen: dict[str, None] = {}
    for item in field.split("|"):
        if item.strip():
            seen.setdefault(item.strip(), None)
    return list(seen)


def mail_items(
    *,
    fullname: str,
    email: str,
    pager: str,
    options: Mapping[str, str],
    audio_format: str,
    forwarded: bool = False,
) -> list[OutboxItem]:
    """One email row per address of `email`, one pager row per address of `pager`."""
    payload = MailPayload(
        fullname=fullname,
        options={k: v for k, v in options.items() if k in CARRIED_OPTIONS},
        audio_format=audio_format,
        forwarded=forwarded,
    ).to_json()
    items = []
    for kind, field in (("email", email), ("pager", pager)):
        for address in addresses(field):
            if len(address) > _MAX_RECIPIENT:
                log.error("%s address longer than %d characters not queued: %.60s...",
                          kind, _MAX_RECIPIENT, address)  # fmt: skip
                continue
            items.append(OutboxItem(kind, address, payload))
    return items


def webhook_item(
    url: str,
    event: str,
    *,
    context: str,
    mailbox: str,
    msg_id: str,
    folder: str,
    callerid: str,
    duration: int,
    origtime: int,
) -> OutboxItem:
    """The webhook row of one event; its body is what the receiver gets."""
    if event not in EVENTS:
        raise ValueError(f"webhook event must be one of {', '.join(EVENTS)}: {event!r}")
    body = {
        "event": event,
        "context": context,
        "mailbox": mailbox,
        "msg_id": msg_id,
        "folder": folder,
        "callerid": callerid,
        "duration": int(duration),
        "origtime": int(origtime),
    }
    recipient = f"{event}:{mailbox}@{context}"[:_MAX_RECIPIENT]
    return OutboxItem("webhook", recipient, WebhookPayload(url, body).to_json())


def _object(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text or "{}")
    except ValueError as exc:
        raise ValueError(f"payload is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("payload is not a JSON object")
    return data


def deposit_items(
    box: Mailbox,
    settings: VoicemailSettings,
    *,
    audio_format: str,
    folder: str,
    msg_id: str,
    callerid: str,
    duration: int,
    origtime: int,
    forwarded: bool = False,
) -> tuple[OutboxItem, ...]:
    """Everything a message new in `box` queues: its mails and the `new` webhook event."""
    return message_items(
        box,
        settings.webhookurl,
        audio_format=audio_format,
        folder=folder,
        msg_id=msg_id,
        callerid=callerid,
        duration=duration,
        origtime=origtime,
        forwarded=forwarded,
    )


def message_items(
    box: Mailbox,
    webhookurl: str,
    *,
    audio_format: str,
    folder: str,
    msg_id: str,
    callerid: str,
    duration: int,
    origtime: int,
    forwarded: bool,
) -> tuple[OutboxItem, ...]:
    """A message's mails (the forwarded-message variant for a copy forwarded with
    VoiceMailMain key 8) and its `new` webhook event when `webhookurl` is set."""
    items = mail_items(
        fullname=box.fullname,
        email=box.email,
        pager=box.pager,
        options=box.options,
        audio_format=audio_format,
        forwarded=forwarded,
    )
    if webhookurl:
        items.append(
            webhook_item(
                webhookurl,
                "new",
                context=box.context,
                mailbox=box.mailbox,
                msg_id=msg_id,
                folder=folder,
                callerid=callerid,
                duration=duration,
                origtime=origtime,
            )
        )
    return tuple(items)


async def notify_recovered(
    spool: Spool,
    messages: Sequence[PendingMessage],
    mailboxes: MailboxDirectory,
    audio_format: str,
) -> int:
    """Give messages recovered from recording journals (spooled without notifications) the
    items of their mailbox as configured now, rewriting their spool files before the flusher
    stores them. Returns how many got items; a mailbox that cannot be looked up is logged."""
    done = 0
    for message in messages:
        try:
            box = await mailboxes.find(message.mailbox, message.context)
        except DatabaseError as exc:
            log.error(
                "recovered message %s for %s@%s: mailbox not found (%s); it is stored "
                "without notifications",
                message.msg_id, message.mailbox, message.context, exc,
            )  # fmt: skip
            continue
        if box is None:
            continue
        items = deposit_items(
            box,
            mailboxes.settings,
            audio_format=audio_format,
            folder=message.folder,
            msg_id=message.msg_id,
            callerid=message.callerid,
            duration=message.duration,
            origtime=message.origtime,
        )
        if not items:
            continue
        updated = dataclasses.replace(message, outbox=items)
        if await asyncio.to_thread(spool.rewrite, updated):
            done += 1
    return done


async def message_places(
    store: MessageStore, context: str, mailbox: str, msg_id: str
) -> list[tuple[str, int]]:
    """(folder, msgnum) of the rows with this msg_id in the mailbox's folders, in order."""
    t = messages_table(store.table_name)
    statement = compile_sql(
        select(t.c.dir, t.c.msgnum).where(t.c.msg_id == bindparam("msg_id")), store.pool.backend
    )
    dirs = {store.folder_dir(context, mailbox, folder): folder for folder in FOLDERS}

    def work(connection: pyodbc.Connection) -> list[tuple[str, int]]:
        cursor = connection.cursor()
        rows = cursor.execute(statement.sql, statement.parameters({"msg_id": msg_id}))
        return [(str(d), int(m)) for d, m in rows.fetchall()]

    found = await store.pool.run(work)
    return sorted((dirs[d], m) for d, m in found if d in dirs)


async def queue_close_events(
    store: MessageStore,
    outbox: Outbox | None,
    general: Mapping[str, str],
    *,
    context: str,
    mailbox: str,
    folder: str,
    listed: Sequence[StoredInfo],
    read: Sequence[int],
    deleted: Sequence[int],
) -> None:
    """VoiceMailMain's close: a `read` event per message moved from `folder` to Old and a
    `deleted` event per message deleted, for the webhook (nothing when it is not set).
    `listed` is the folder as it was before the close (msgnums as the caller saw them). A
    message of `deleted` still in another folder of the mailbox was saved there (key 9),
    not deleted: no event."""
    url = general.get("webhookurl", "").strip()
    if outbox is None or not url or not (read or deleted):
        return
    by_number = {info.msgnum: info for info in listed}
    for event, msgnums in (("read", read), ("deleted", deleted)):
        items = []
        for msgnum in msgnums:
            info = by_number.get(msgnum)
            if info is None or not info.msg_id:
                continue
            if event == "deleted" and await message_places(store, context, mailbox, info.msg_id):
                continue
            item = webhook_item(
                url,
                event,
                context=context,
                mailbox=mailbox,
                msg_id=info.msg_id,
                folder=folder,
                callerid=info.callerid,
                duration=info.duration,
                origtime=info.origtime,
            )
            try:
                await outbox.enqueue(
                    context=context, mailbox=mailbox, msg_id=info.msg_id, items=[item]
                )
            except DatabaseError as exc:  # the close itself is done: log, do not undo it
                log.error("webhook %s event for msg %s not queued: %s", event, info.msg_id, exc)
                continue
            items.append(item)
        if items:
            log.info("mailbox %s@%s: %d %s event(s) queued", mailbox, context, len(items), event)
