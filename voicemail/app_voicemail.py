"""VoiceMail(mailbox[@context][&mailbox2...][,options]): leave a message.

Follows app_voicemail's leave_voicemail (fact sheet 5.1): greeting (temp, then busy or
unavailable, else "the person at extension N is unavailable"), vm-intro, the full-mailbox
check, beep, record until #, hang-up or maxsecs, then store. The message is stored before
this coroutine returns, which is what lets the SIP side answer the caller's BYE only
after the row is committed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from channels.channel import Channel, ChannelHungUp, StopReason
from storage.audioformats import TranscodeError, decode, detect_format, encode, stored_format
from storage.messages import MessageStore, StoredMessage, new_msg_id
from storage.odbc import DatabaseError
from storage.recording_journal import RecordingJournals, RecordingMetadata
from storage.spool import PendingMessage, SpoolFlusher, bounded_store

from .callpath import CALL_PATH_DB_WAIT, is_permanent
from .mailboxes import Mailbox, MailboxDirectory
from .sounds import SoundLibrary, SoundNotFound

log = logging.getLogger(__name__)


@dataclass
class VoiceMailArgs:
    recipients: list[tuple[str, str]]  # (mailbox, context)
    options: str


def parse_args(args: list[str]) -> VoiceMailArgs:
    """[`1000@default&1001`, `us`] -> recipients and option letters (arguments in parens
    dropped). The arguments arrive split and then substituted, so nothing a caller chose
    (the extension) can add an option or a recipient list of its own."""
    boxes = args[0] if args else ""
    options = ",".join(args[1:])
    recipients = []
    for item in boxes.split("&"):
        item = item.strip()
        if not item:
            continue
        mailbox, _, context = item.partition("@")
        recipients.append((mailbox.strip(), context.strip() or "default"))
    flat = ""
    depth = 0
    for c in options:
        if c == "(":
            depth += 1
        elif c == ")":
            depth = max(0, depth - 1)
        elif depth == 0 and not c.isspace() and c != ",":
            flat += c
    return VoiceMailArgs(recipients, flat)


def caller_id_string(name: str, number: str) -> str:
    """Asterisk's ast_callerid_merge: `"Name" <num>`, name, num or Unknown."""
    if name and number:
        escaped = name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}" <{number}>'
    return name or number or "Unknown"


# voicemail.conf maxrecordsecs: the longest recording when a mailbox's maxsecs is 0 (Asterisk:
# unlimited), so that a caller who never hangs up cannot fill the disk.
DEFAULT_MAX_RECORD_SECONDS = 600


async def stored_audio_pcm(data: bytes, configured_format: str) -> bytes:
    """Linear PCM of stored audio in whatever format it was written (wav, wav49, gsm...);
    headerless G.711 cannot be recognised, so it is taken to be the configured format."""
    fmt = detect_format(data) or configured_format
    return await asyncio.to_thread(decode, data, fmt)


class VoiceMailApp:
    def __init__(
        self,
        store: MessageStore,
        flusher: SpoolFlusher,
        mailboxes: MailboxDirectory,
        sounds: SoundLibrary,
        formats: list[str],
        journals: RecordingJournals,
    ) -> None:
        # Reads on the caller's time give up quickly instead of waiting out an outage.
        self.quick_store = bounded_store(store, CALL_PATH_DB_WAIT)
        self.db = mailboxes.call_path
        self.flusher = flusher
        self.journals = journals
        self.mailboxes = mailboxes
        self.sounds = sounds
        # Deposits being recorded per (context, mailbox), counted against maxmsg. Calls in
        # progress own these counts: a reload must never replace or clear them.
        self._in_process: dict[tuple[str, str], int] = {}
        self.max_record_seconds = DEFAULT_MAX_RECORD_SECONDS
        self.set_formats(formats)

    def set_formats(self, formats: list[str]) -> None:
        """The storage format for deposits that start from now on (reload)."""
        # Asterisk records every format but ODBC storage keeps only the first.
        self.format = stored_format("|".join(formats))

    async def _play_prompts(self, channel: Channel, names: list[str], escape: str) -> str | None:
        for name in names:
            try:
                pcm = self.sounds.load_pcm(name, channel.info.language or None)
            except SoundNotFound:
                log.warning("prompt %s not found", name)
                continue
            digit = await channel.play(pcm, escape)
            if digit is not None:
                return digit
        return None

    async def _retrieve_greeting(self, box: Mailbox, kind: str) -> StoredMessage | None:
        if self.db.recently_failed():
            return None
        try:
            return await self.db.read(
                self.quick_store.retrieve_greeting(box.context, box.mailbox, kind)
            )
        except DatabaseError as exc:
            log.warning(
                "mailbox %s@%s: %s greeting unavailable: %s", box.mailbox, box.context, kind, exc
            )
            return None

    async def _greeting(self, channel: Channel, box: Mailbox, options: str) -> list[bytes | str]:
        """What to play before the intro: stored greeting audio or prompt names."""
        wanted = "busy" if "b" in options else "unavail" if "u" in options else None
        reason = channel.info.redirect_reason
        if reason:
            # A PBX forwarded the call and said why: that picks the greeting.
            wanted = "busy" if reason == "user-busy" else "unavail"
        for kind in ["temp", wanted] if wanted else ["temp"]:
            message = await self._retrieve_greeting(box, kind)
            if message is not None:
                try:
                    return [await stored_audio_pcm(message.recording, self.format)]
                except (ValueError, TranscodeError) as exc:
                    log.warning("mailbox %s: %s greeting unusable: %s", box.mailbox, kind, exc)
        if wanted is None:
            return []
        name_greeting = await self._retrieve_greeting(box, "greet")
        parts: list[bytes | str] = []
        if name_greeting is not None:
            try:
                parts.append(await stored_audio_pcm(name_greeting.recording, self.format))
            except (ValueError, TranscodeError):
                name_greeting = None
        if name_greeting is None:
            parts.append("vm-theperson")
            parts.extend(f"digits/{d}" for d in box.mailbox if d.isdigit())
        parts.append("vm-isonphone" if wanted == "busy" else "vm-isunavail")
        return parts

    async def run(self, channel: Channel, args: list[str], variables: dict[str, str]) -> bool:
        """Returns False when the dial plan should stop (the caller hung up)."""
        parsed = parse_args(args)
        if not parsed.recipients:
            log.warning("VoiceMail() needs a mailbox")
            variables["VMSTATUS"] = "FAILED"
            return True
        mailbox, context = parsed.recipients[0]
        try:
            box = await self.mailboxes.find(mailbox, context)
        except DatabaseError as exc:
            if is_permanent(exc):
                # A wrong table or column is a configuration error, not an outage: taking
                # messages for mailboxes nobody can check would invent mailboxes.
                log.error("cannot look up mailbox %s@%s: %s", mailbox, context, exc)
                variables["VMSTATUS"] = "FAILED"
                channel.hangup(500, "voicemail configuration error")
                return False
            # The realtime table is away. Losing the caller's message is worse than keeping
            # one for a mailbox we cannot check: take it, with default options, into the spool.
            log.warning(
                "cannot look up mailbox %s@%s (%s); taking the message anyway",
                mailbox,
                context,
                exc,
            )
            box = self.mailboxes.unverified(mailbox, context)
        if box is None:
            log.warning("No entry in voicemail config file for '%s@%s'", mailbox, context)
            variables["VMSTATUS"] = "FAILED"
            return True
        try:
            status = await self._leave_message(channel, box, parsed, variables)
        except ChannelHungUp:
            status = "FAILED"
        variables["VMSTATUS"] = status
        return not channel.hung_up

    async def _leave_message(
        self, channel: Channel, box: Mailbox, parsed: VoiceMailArgs, variables: dict[str, str]
    ) -> str:
        options = parsed.options
        await channel.answer()
        folder = "Urgent" if "U" in options else "INBOX"
        # Count while the greeting plays, so a slow database never delays the beep.
        counting = asyncio.ensure_future(self._count(box, folder))
        try:
            return await self._greet_and_record(channel, box, options, folder, counting, variables)
        finally:
            counting.cancel()

    async def _count(self, box: Mailbox, folder: str) -> int:
        """Messages in the folder; 0 when the database is away (the message will be spooled)."""
        try:
            return await self.db.read(self.quick_store.count(box.context, box.mailbox, folder))
        except DatabaseError as exc:
            log.warning(
                "cannot count %s@%s (%s); accepting the message", box.mailbox, box.context, exc
            )
            return 0

    async def _greet_and_record(
        self,
        channel: Channel,
        box: Mailbox,
        options: str,
        folder: str,
        counting: asyncio.Future[int],
        variables: dict[str, str],
    ) -> str:
        greeting = await self._greeting(channel, box, options)
        log.info(
            "call %s for %s@%s: greeting %s",
            channel.info.call_id,
            box.mailbox,
            box.context,
            " ".join(p if isinstance(p, str) else f"<recorded {len(p)} bytes>" for p in greeting)
            or "none",
        )
        skipped = False
        for part in greeting:
            if isinstance(part, bytes):
                digit = await channel.play(part, "#")
            else:
                digit = await self._play_prompts(channel, [part], "#")
            if digit == "#":
                skipped = True
                break
        if not skipped and "s" not in options and not ("S" in options and greeting):
            await self._play_prompts(channel, ["vm-intro"], "#")
        key = (box.context, box.mailbox)
        maxmsg = box.int_option("maxmsg")
        count = await counting
        if maxmsg > 0 and count >= maxmsg - self._in_process.get(key, 0):
            log.info("mailbox %s@%s is full (%d messages)", box.mailbox, box.context, count)
            await self._play_prompts(channel, ["vm-mailboxfull"], "")
            return "FAILED"
        if maxmsg == 0:
            return "SUCCESS"  # greetings only
        self._in_process[key] = self._in_process.get(key, 0) + 1
        try:
            return await self._record_and_store(channel, box, folder, options, variables)
        finally:
            self._in_process[key] -= 1
            if not self._in_process[key]:
                del self._in_process[key]

    async def _record_and_store(
        self,
        channel: Channel,
        box: Mailbox,
        folder: str,
        options: str,
        variables: dict[str, str],
    ) -> str:
        await self._play_prompts(channel, ["beep"], "")
        origtime = int(time.time())
        maxsecs = box.int_option("maxsecs")
        maxmsg = box.int_option("maxmsg")
        limit = min(maxsecs, self.max_record_seconds) if maxsecs > 0 else self.max_record_seconds
        flag = "Urgent" if "U" in options else "PRIORITY" if "P" in options else ""
        msg_id = new_msg_id()
        callerid = caller_id_string(channel.info.caller_id_name, channel.info.caller_id_num)
        category = variables.get("VM_CATEGORY") or None
        # The audio goes to disk as it is recorded, so a crash (even SIGKILL) mid-message
        # leaves a journal that the next start stores, instead of losing what was said.
        journal = self.journals.begin(
            msg_id,
            RecordingMetadata(
                context=box.context,
                mailbox=box.mailbox,
                folder=folder,
                callerid=callerid,
                origtime=origtime,
                caller_context=channel.info.context,
                audio_format=self.format,
                flag=flag,
                category=category,
                maxmsg=maxmsg if maxmsg > 0 else None,
                min_seconds=box.int_option("minsecs"),
            ),
        )
        try:
            log.info(
                "call %s: recording for %s@%s (at most %d s)",
                channel.info.call_id,
                box.mailbox,
                box.context,
                limit,
            )
            recording = await channel.record(limit, "#", on_chunk=journal.append)
            seconds = recording.seconds
            if seconds < max(box.int_option("minsecs"), 0.02):
                log.info(
                    "recording for %s@%s was %.2f s, shorter than minsecs; discarded",
                    box.mailbox,
                    box.context,
                    seconds,
                )
                journal.discard()
                return "FAILED"
            try:
                audio = await asyncio.to_thread(encode, recording.pcm, self.format)
                result = await self.flusher.deposit_result(
                    PendingMessage(
                        msg_id=msg_id,
                        context=box.context,
                        mailbox=box.mailbox,
                        folder=folder,
                        recording=audio,
                        callerid=callerid,
                        origtime=origtime,
                        duration=int(round(seconds)),
                        caller_context=channel.info.context,
                        flag=flag,
                        category=category,
                        maxmsg=maxmsg if maxmsg > 0 else None,
                    )
                )
            except ValueError as exc:
                journal.discard()  # a message the store can never take
                log.error(
                    "Failed to store voicemail for %s@%s (msg_id %s): %s",
                    box.mailbox,
                    box.context,
                    msg_id,
                    exc,
                )
                return "FAILED"
            except (OSError, TranscodeError) as exc:
                # The journal stays: the next start stores the message from it.
                log.error(
                    "Failed to store voicemail for %s@%s (msg_id %s): %s; kept in the "
                    "recording journal for the next start",
                    box.mailbox,
                    box.context,
                    msg_id,
                    exc,
                )
                return "FAILED"
            journal.finish()
        finally:
            journal.leave()  # a cancelled call (shutdown) leaves its audio for recovery
        msgnum = result.msgnum
        where = (
            f"as msgnum {msgnum}" if msgnum is not None else "in the local spool (database away)"
        )
        log.info(
            "message %s stored in %s@%s %s %s (%.2f s, stopped by %s)",
            msg_id,
            box.mailbox,
            box.context,
            folder,
            where,
            seconds,
            recording.reason.value,
        )
        if recording.reason != StopReason.HANGUP and not channel.hung_up:
            await self._play_prompts(channel, ["auth-thankyou"], "")
        return "SUCCESS"
