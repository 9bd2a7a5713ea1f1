"""The database side of VoiceMailMain: mailboxes, folder listings, copies and the close step."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace

from channels.channel import CallerInfo
from storage.audioformats import detect_format, encode
from storage.messages import (
    MailboxFull,
    MessageNotFound,
    MessageStore,
    StoredMessage,
    new_msg_id,
)
from storage.odbc import DatabaseError
from storage.outbox import Outbox

from ..app_voicemail import stored_audio_pcm
from ..login_guard import LoginAttempt, LoginGuard, LoginOutcome
from ..mailboxes import MailboxDirectory
from ..notifications import message_items, queue_close_events
from ..password_writer import run_externpasscheck
from ..pins import is_hashed, needs_rehash, verify_pin_evenly, verify_unknown
from .events import OLD, FolderEdits, MailboxInfo, MessageSummary, folder_name
from .newuser import SETUP_GREETINGS, needs_setup
from .options import MenuSettings

log = logging.getLogger(__name__)

# What the database can raise that ends the session (the caller hears goodbye or nothing).
STORE_ERRORS = (DatabaseError, MessageNotFound, OSError, ValueError)


class MailboxAccess:
    """MessageStore and MailboxDirectory calls in the shapes the core asks for."""

    def __init__(
        self,
        store: MessageStore,
        mailboxes: MailboxDirectory,
        general: dict[str, str],
        guard: LoginGuard | None = None,
    ) -> None:
        self.store = store
        self.mailboxes = mailboxes
        self.general = general
        self.outbox: Outbox | None = None  # where the read/deleted webhook events go
        # Lockout and audit of PIN attempts (the default checks each one, remembers nothing).
        self.guard = guard or LoginGuard()

    async def find(self, mailbox: str, context: str) -> MailboxInfo | None:
        box = await self.mailboxes.find(mailbox, context)
        if box is None:
            return None
        settings = MenuSettings.from_options(self.general, box.options)
        return MailboxInfo(
            box.mailbox,
            box.context,
            box.password,
            box.option("language"),
            settings,
            tz=box.option("tz"),
        )

    async def check_pin(
        self, info: MailboxInfo | None, entered: str, caller: CallerInfo
    ) -> LoginOutcome:
        """An entered PIN through the login guard. The hash is checked in a thread (argon2
        is slow on purpose); an unknown mailbox costs the same work and is WRONG, so timing
        does not tell which mailboxes exist. After a good login a clear-text PIN is stored
        hashed (pinhash=yes); a failure to do so is logged and does not fail the login."""
        if info is None:
            await asyncio.to_thread(verify_unknown, entered)
            return LoginOutcome.WRONG
        settings = self._settings(info)
        stored = info.password

        async def verify() -> bool:
            return await asyncio.to_thread(verify_pin_evenly, stored, entered)

        who = LoginAttempt(info.mailbox, info.context, caller.caller_id_num, caller.source_address)
        outcome = await self.guard.attempt(
            who,
            verify,
            maxfailedlogins=settings.maxfailedlogins,
            lockoutsecs=settings.lockoutsecs,
        )
        if outcome is LoginOutcome.OK and needs_rehash(stored, pinhash=settings.pinhash):
            if settings.externpass:
                log.info(
                    "mailbox %s@%s: clear-text PIN kept (externpass stores PINs)",
                    info.mailbox,
                    info.context,
                )
            else:
                await self.mailboxes.rehash_password(info.mailbox, info.context, stored, entered)
        return outcome

    async def counts(self, info: MailboxInfo) -> tuple[int, int, int]:
        """(new, old, urgent)."""
        inbox, old, urgent = await self.store.counts(info.context, info.mailbox)
        return inbox, old, urgent

    async def has_temp_greeting(self, info: MailboxInfo) -> bool:
        return await self.store.retrieve_greeting(info.context, info.mailbox, "temp") is not None

    async def open_folder(self, info: MailboxInfo, folder: int) -> tuple[MessageSummary, ...]:
        """Renumber gaps (as open_mailbox does), then list."""
        name = folder_name(folder)
        await self.store.resequence(info.context, info.mailbox, name)
        listed = await self.store.list_messages(info.context, info.mailbox, name)
        return tuple(
            MessageSummary(
                msgnum=m.msgnum,
                origtime=int(m.origtime or 0),
                callerid=m.callerid or "",
                duration=int(m.duration or 0),
                flag=m.flag or "",
                category=m.category or "",
            )
            for m in listed
        )

    async def audio(self, info: MailboxInfo, folder: int, msgnum: int) -> bytes | None:
        message = await self.store.retrieve(info.context, info.mailbox, folder_name(folder), msgnum)
        return None if message is None else message.recording

    async def copy(
        self, info: MailboxInfo, folder: int, msgnum: int, to_folder: int, maxmsg: int | None
    ) -> bool:
        """Copy to the end of another folder of the same mailbox; False if it is full."""
        try:
            await self.store.copy(
                src_context=info.context,
                src_mailbox=info.mailbox,
                src_folder=folder_name(folder),
                msgnum=msgnum,
                dst_context=info.context,
                dst_mailbox=info.mailbox,
                dst_folder=folder_name(to_folder),
                maxmsg=maxmsg if maxmsg and maxmsg > 0 else None,
            )
        except MailboxFull:
            return False
        return True

    async def close(self, info: MailboxInfo, edits: FolderEdits, maxmsg: int | None) -> None:
        """close_mailbox: heard messages copied to Old, then deleted ones and those removed,
        the rest renumbered 0..N-1, in one delete_messages. A message that Old cannot take
        (full) stays where it is."""
        gone = set(edits.delete)
        listed = []  # the folder before the close, for the webhook's read/deleted events
        if self.outbox is not None and self.general.get("webhookurl", "").strip():
            listed = await self.store.list_messages(info.context, info.mailbox, edits.folder)
        for msgnum in edits.to_old:
            try:
                await self.store.copy(
                    src_context=info.context,
                    src_mailbox=info.mailbox,
                    src_folder=edits.folder,
                    msgnum=msgnum,
                    dst_context=info.context,
                    dst_mailbox=info.mailbox,
                    dst_folder=folder_name(OLD),
                    maxmsg=maxmsg if maxmsg and maxmsg > 0 else None,
                )
            except MailboxFull:
                log.warning(
                    "mailbox %s@%s: Old is full; message %d stays in %s",
                    info.mailbox,
                    info.context,
                    msgnum,
                    edits.folder,
                )
                continue
            except MessageNotFound:
                continue
            gone.add(msgnum)
        if gone:
            await self.store.delete_messages(info.context, info.mailbox, edits.folder, sorted(gone))
            await queue_close_events(
                self.store,
                self.outbox,
                self.general,
                context=info.context,
                mailbox=info.mailbox,
                folder=edits.folder,
                listed=listed,
                read=sorted(gone - set(edits.delete)),
                deleted=sorted(set(edits.delete)),
            )
        log.info(
            "mailbox %s@%s: closed %s (%d deleted, %d moved to Old)",
            info.mailbox,
            info.context,
            edits.folder,
            len(edits.delete),
            len(gone) - len(set(edits.delete)),
        )

    async def forward(
        self,
        info: MailboxInfo,
        folder: int,
        msgnum: int,
        recipients: Sequence[MailboxInfo],
        to_folder: int,
        prefix_pcm: bytes = b"",
        audio_format: str = "wav",
    ) -> tuple[list[MailboxInfo], list[MailboxInfo]]:
        """A message into other mailboxes (forward_message): (delivered, full).

        As is, it is Asterisk's COPY (same audio bytes, msg_id and flag). With an introduction
        (PCM), each copy is a new message with a msg_id of its own: the introduction then the
        message, in the message's stored format, its duration grown by the introduction's.
        A recipient with maxmsg messages (0: greetings only) is full and skipped.
        """
        source: StoredMessage | None = None
        original: StoredMessage | None = None  # for the recipients' mail
        if prefix_pcm or self.outbox is not None:
            name = folder_name(folder)
            original = await self.store.retrieve(info.context, info.mailbox, name, msgnum)
            if original is None:
                raise MessageNotFound(f"no message {msgnum} in {name}")
        if prefix_pcm:
            assert original is not None
            source = original
            fmt = detect_format(source.recording) or audio_format
            pcm = await stored_audio_pcm(source.recording, audio_format)
            audio = await asyncio.to_thread(encode, prefix_pcm + pcm, fmt)
            source = replace(
                source, recording=audio, duration=source.duration + round(len(prefix_pcm) / 16000)
            )
        delivered: list[MailboxInfo] = []
        full: list[MailboxInfo] = []
        for box in recipients:
            msg_id = await self._forward_one(info, folder, msgnum, box, to_folder, source)
            if msg_id is not None:
                delivered.append(box)
                if original is not None:
                    await self._queue_forward_mail(
                        box, to_folder, msg_id or original.msg_id, source or original
                    )
                log.info(
                    "forwarded message %d of %s@%s %s to %s@%s %s%s",
                    msgnum,
                    info.mailbox,
                    info.context,
                    folder_name(folder),
                    box.mailbox,
                    box.context,
                    folder_name(to_folder),
                    f" behind a {len(prefix_pcm) / 16000:.1f} s introduction" if source else "",
                )
            else:
                log.warning(
                    "Recipient mailbox %s@%s is full: message %d of %s@%s not forwarded there",
                    box.mailbox,
                    box.context,
                    msgnum,
                    info.mailbox,
                    info.context,
                )
                full.append(box)
        return delivered, full

    async def _forward_one(
        self,
        info: MailboxInfo,
        folder: int,
        msgnum: int,
        box: MailboxInfo,
        to_folder: int,
        prepended: StoredMessage | None,
    ) -> str | None:
        """One copy: the new message's msg_id ("" for a copy, which keeps its source's), or
        None when the recipient is full."""
        maxmsg = box.settings.maxmsg if box.settings else None
        if maxmsg == 0:
            return None
        limit = maxmsg if maxmsg and maxmsg > 0 else None
        try:
            if prepended is None:
                await self.store.copy(
                    src_context=info.context,
                    src_mailbox=info.mailbox,
                    src_folder=folder_name(folder),
                    msgnum=msgnum,
                    dst_context=box.context,
                    dst_mailbox=box.mailbox,
                    dst_folder=folder_name(to_folder),
                    maxmsg=limit,
                )
                msg_id = ""  # a copy keeps its source's msg_id
            else:
                await self.store.store(
                    context=box.context,
                    mailbox=box.mailbox,
                    folder=folder_name(to_folder),
                    recording=prepended.recording,
                    callerid=prepended.callerid,
                    origtime=prepended.origtime,
                    duration=prepended.duration,
                    caller_context=prepended.context,
                    flag=prepended.flag,
                    category=prepended.category,
                    msg_id=(msg_id := new_msg_id()),
                    maxmsg=limit,
                )
        except MailboxFull:
            return None
        return msg_id

    async def _queue_forward_mail(
        self, box: MailboxInfo, folder: int, msg_id: str, message: StoredMessage
    ) -> None:
        """The recipient's mail (forwarded variant) and `new` webhook event. A copy's rows
        are queued just after it, in a transaction of their own: a crash between the two
        loses that mail, never the message."""
        if self.outbox is None or not msg_id:
            return
        recipient = await self.mailboxes.find(box.mailbox, box.context)
        if recipient is None:
            return
        items = message_items(
            recipient,
            self.general.get("webhookurl", "").strip(),
            audio_format=detect_format(message.recording) or "wav",
            folder=folder_name(folder),
            msg_id=msg_id,
            callerid=message.callerid,
            duration=message.duration,
            origtime=int(message.origtime or 0),
            forwarded=True,
        )
        if items:
            await self.outbox.enqueue(
                context=box.context, mailbox=box.mailbox, msg_id=msg_id, items=items
            )

    def _settings(self, info: MailboxInfo) -> MenuSettings:
        return info.settings or MenuSettings.from_options(self.general)

    async def is_new_user(self, info: MailboxInfo) -> bool:
        """newuser.needs_setup, in a thread (a hashed PIN costs an argon2 verification)."""
        settings = replace(self._settings(info), pin_locked=info.password.startswith("-"))
        if not (settings.forcename or settings.forcegreetings):
            return False
        return await asyncio.to_thread(needs_setup, info, settings)

    async def setup_greetings(self, info: MailboxInfo) -> frozenset[str]:
        """The greetings a new user already has (asked only when the setup will run)."""
        found = set()
        for kind, _, _ in SETUP_GREETINGS:
            if await self.store.retrieve_greeting(info.context, info.mailbox, kind) is not None:
                found.add(kind)
        return frozenset(found)

    async def check_password(self, info: MailboxInfo, new: str, old: str | None = None) -> bool:
        """externpasscheck's verdict on a new PIN. `old` is the current PIN as the caller
        entered it (None: the stored one, or "" when that is a hash: it is not the PIN)."""
        command = self._settings(info).externpasscheck
        if not command:
            return True
        if old is None:
            old = "" if is_hashed(info.password) else info.password
        return await run_externpasscheck(command, info.mailbox, info.context, old, new)

    async def change_password(self, info: MailboxInfo, new: str) -> bool:
        """Store a new PIN where the mailbox lives; False (logged) when it could not be."""
        settings = self._settings(info)
        return await self.mailboxes.change_password(
            info.mailbox,
            info.context,
            new,
            externpass=settings.externpass,
            externpassnotify=settings.externpassnotify,
            pinhash=settings.pinhash,
        )
