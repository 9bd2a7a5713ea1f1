"""VoiceMail(mailbox[@context][&mailbox2...][,options]): leave a message.

Follows app_voicemail's vm_exec and leave_voicemail (fact sheet 5.1): greeting (temp, then
busy or unavailable, else "the person at extension N is unavailable"), vm-intro, the
full-mailbox check, beep, record until #, hang-up, maxsecs or maxsilence, the review menu
(review=yes, in deposit_review), then store, in every `&` mailbox. `#` skips the greeting,
`*` leaves for extension `a`, `0` (operator=yes) for `o`, and with `d(c)` a digit for that
extension of context c: the application then returns a `Goto`. The message is stored before
this coroutine returns, which is what lets the SIP side answer the caller's BYE only after
the row is committed.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass

from channels.channel import Channel, ChannelHungUp
from storage.audioformats import TranscodeError, decode, detect_format, stored_format
from storage.messages import MessageStore, StoredMessage
from storage.odbc import DatabaseError
from storage.recording_journal import RecordingJournals
from storage.spool import SpoolFlusher, bounded_store

from .callpath import CALL_PATH_DB_WAIT, is_permanent
from .config_checks import parse_bool
from .deposit_options import DepositOptions, VoiceMailArgs, parse_args
from .deposit_record import caller_id_string, record_and_store
from .goto import Goto
from .mailboxes import DEFAULTS, Mailbox, MailboxDirectory
from .sounds import SoundLibrary, SoundNotFound

log = logging.getLogger(__name__)

__all__ = ["CALL_PATH_DB_WAIT", "VoiceMailApp", "caller_id_string", "parse_args"]


# voicemail.conf maxrecordsecs: the longest recording when a mailbox's maxsecs is 0 (Asterisk:
# unlimited), so that a caller who never hangs up cannot fill the disk.
DEFAULT_MAX_RECORD_SECONDS = 600


async def stored_audio_pcm(data: bytes, configured_format: str) -> bytes:
    """Linear PCM of stored audio in whatever format it was written (wav, wav49, gsm...);
    headerless G.711 cannot be recognised, so it is taken to be the configured format."""
    fmt = detect_format(data) or configured_format
    return await asyncio.to_thread(decode, data, fmt)


# Asterisk's ast_app_getdata without a timeout: the pbx's response and digit timeouts.
WHICHBOX_FIRST_TIMEOUT = 10.0
WHICHBOX_DIGIT_TIMEOUT = 5.0

ExtensionExists = Callable[[str, str], bool]  # (context, exten) -> is there such extension


def _no_extensions(_context: str, _exten: str) -> bool:
    return False


def _here() -> str:
    """`app_voicemail.py:LINE` of the caller, for refusals an operator can find."""
    frame = inspect.currentframe()
    caller = frame.f_back if frame is not None else None
    return f"voicemail/app_voicemail.py:{caller.f_lineno if caller else 0}"


@dataclass
class Greeting:
    parts: list[bytes | str]  # stored audio, or prompt names
    recorded: bool  # a recorded temp/busy/unavail greeting (not the invented one)


class VoiceMailApp:
    def __init__(
        self,
        store: MessageStore,
        flusher: SpoolFlusher,
        mailboxes: MailboxDirectory,
        sounds: SoundLibrary,
        formats: list[str],
        journals: RecordingJournals,
        extension_exists: ExtensionExists | None = None,
    ) -> None:
        # Reads on the caller's time give up quickly instead of waiting out an outage.
        self.quick_store = bounded_store(store, CALL_PATH_DB_WAIT)
        self.db = mailboxes.call_path
        self.flusher = flusher
        self.journals = journals
        self.mailboxes = mailboxes
        self.sounds = sounds
        # Whether the dial plan has an extension (for `a`, `o` and the d option's digits).
        self.extension_exists = extension_exists or _no_extensions
        # Deposits being recorded per (context, mailbox), counted against maxmsg. Calls in
        # progress own these counts: a reload must never replace or clear them.
        self._in_process: dict[tuple[str, str], int] = {}
        self.max_record_seconds = DEFAULT_MAX_RECORD_SECONDS
        self.set_formats(formats)

    def set_formats(self, formats: list[str]) -> None:
        """The storage format for deposits that start from now on (reload)."""
        # Asterisk records every format but ODBC storage keeps only the first.
        self.format = stored_format("|".join(formats))

    def _setting(self, box: Mailbox, name: str, default: str) -> str:
        """A mailbox option, else voicemail.conf [general]'s, else Asterisk's default."""
        value = box.options.get(name, "")
        if value == "":
            value = self.mailboxes.settings.general.get(name, "") or default
        return value

    def _int_setting(self, box: Mailbox, name: str, default: int) -> int:
        value = self._setting(box, name, str(default))
        try:
            return int(value)
        except ValueError:
            log.warning("mailbox %s@%s: bad %s=%r", box.mailbox, box.context, name, value)
            return default

    def _flag(self, box: Mailbox, name: str) -> bool:
        return bool(parse_bool(self._setting(box, name, DEFAULTS.get(name, "no"))))

    async def _play_prompts(self, channel: Channel, names: list[str], escape: str) -> str | None:
        for name in names:
            try:
                pcm = self.sounds.load_pcm(name, channel.info.language or None)
            except SoundNotFound:
                log.warning("prompt %s not found", name)
                continue
            log.info("call %s: playing %s", channel.info.call_id, name)
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

    async def _greeting(self, channel: Channel, box: Mailbox, options: DepositOptions) -> Greeting:
        """What to play before the intro: stored greeting audio or prompt names."""
        wanted = "busy" if options.busy else "unavail" if options.unavail else None
        reason = channel.info.redirect_reason
        if reason:
            # A PBX forwarded the call and said why: that picks the greeting.
            wanted = "busy" if reason == "user-busy" else "unavail"
        for kind in ["temp", wanted] if wanted else ["temp"]:
            message = await self._retrieve_greeting(box, kind)
            if message is not None:
                try:
                    return Greeting([await stored_audio_pcm(message.recording, self.format)], True)
                except (ValueError, TranscodeError) as exc:
                    log.warning("mailbox %s: %s greeting unusable: %s", box.mailbox, kind, exc)
        if wanted is None:
            return Greeting([], False)
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
        return Greeting(parts, False)

    async def run(
        self, channel: Channel, args: list[str], variables: dict[str, str]
    ) -> bool | Goto:
        """False when the dial plan should stop (the caller hung up); a Goto when the caller
        left for another extension (`*`, `0`, a d-option digit); True to go on."""
        try:
            parsed = parse_args(args)
        except ValueError as exc:
            log.error("VoiceMail(%s): %s (%s)", ",".join(args), exc, _here())
            variables["VMSTATUS"] = "FAILED"
            return True
        if parsed.options.early_media:
            # Needs a 183 with SDP from the SIP channel, which it does not send yet.
            log.error(
                "VoiceMail option e (greeting as early media) is not implemented (%s); "
                "no message taken",
                _here(),
            )
            variables["VMSTATUS"] = "FAILED"
            return True
        try:
            if not parsed.recipients:
                mailbox = await self._ask_mailbox(channel)
                if not mailbox:
                    variables["VMSTATUS"] = "FAILED"
                    return not channel.hung_up
                parsed.recipients = [(mailbox, "default")]
            boxes = await self._find_boxes(channel, parsed)
            if not boxes:
                variables["VMSTATUS"] = "FAILED"
                return not channel.hung_up
            status, goto = await self._leave_message(channel, boxes, parsed.options, variables)
        except ChannelHungUp:
            status, goto = "FAILED", None
        variables["VMSTATUS"] = status
        log.info("call %s: VoiceMail ends with VMSTATUS=%s", channel.info.call_id, status)
        if channel.hung_up:
            return False
        return goto if goto is not None else True

    async def _ask_mailbox(self, channel: Channel) -> str:
        """No argument: vm-whichbox, then the digits up to # or a pause (ast_app_getdata)."""
        await channel.answer()
        channel.flush_digits()
        first = await self._play_prompts(channel, ["vm-whichbox"], "0123456789*")
        if first is not None:
            channel.digit_received(first)  # the first digit interrupted the prompt
        digits = await channel.read_digits(255, WHICHBOX_FIRST_TIMEOUT, WHICHBOX_DIGIT_TIMEOUT, "#")
        log.info("call %s: mailbox entered: %r", channel.info.call_id, digits)
        return digits

    async def _find(self, channel: Channel, mailbox: str, context: str) -> Mailbox | None:
        try:
            box = await self.mailboxes.find(mailbox, context)
        except DatabaseError as exc:
            if is_permanent(exc):
                # A wrong table or column is a configuration error, not an outage: taking
                # messages for mailboxes nobody can check would invent mailboxes.
                log.error("cannot look up mailbox %s@%s: %s", mailbox, context, exc)
                channel.hangup(500, "voicemail configuration error")
                raise ChannelHungUp("voicemail configuration error") from exc
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
        return box

    async def _find_boxes(self, channel: Channel, parsed: VoiceMailArgs) -> list[Mailbox]:
        """The first recipient (whose greeting plays) and the others that exist; [] when
        the first does not exist (Asterisk fails the whole call then)."""
        first = await self._find(channel, *parsed.recipients[0])
        if first is None:
            return []
        boxes = [first]
        for mailbox, context in parsed.recipients[1:]:
            other = await self._find(channel, mailbox, context)
            if other is not None and (other.context, other.mailbox) not in {
                (b.context, b.mailbox) for b in boxes
            }:
                boxes.append(other)
        return boxes

    async def _count(self, box: Mailbox, folder: str) -> int:
        """Messages in the folder; 0 when the database is away (the message will be spooled)."""
        try:
            return await self.db.read(self.quick_store.count(box.context, box.mailbox, folder))
        except DatabaseError as exc:
            log.warning(
                "cannot count %s@%s (%s); accepting the message", box.mailbox, box.context, exc
            )
            return 0

    def _exit_codes(self, box: Mailbox, options: DepositOptions, current: str) -> str:
        """The keys that end the greeting (leave_voicemail's ecodes)."""
        where = self._setting(box, "exitcontext", "") or current
        codes = "#"
        if self.extension_exists(where, "a"):
            codes += "*"
        if self._flag(box, "operator") and self.extension_exists(where, "o"):
            codes += "0"
        if options.dtmf_exit:
            digit_context = options.exit_context or current
            for digit in "0123456789*":
                if digit not in codes and self.extension_exists(digit_context, digit):
                    codes += digit
        return codes

    async def _leave_message(
        self,
        channel: Channel,
        boxes: list[Mailbox],
        options: DepositOptions,
        variables: dict[str, str],
    ) -> tuple[str, Goto | None]:
        box = boxes[0]
        await channel.answer()
        # Count while the greeting plays, so a slow database never delays the beep. Asterisk
        # counts INBOX whatever the folder the message goes to.
        counting = asyncio.ensure_future(self._count(box, "INBOX"))
        try:
            return await self._greet(channel, boxes, options, counting, variables)
        finally:
            counting.cancel()

    async def _greet(
        self,
        channel: Channel,
        boxes: list[Mailbox],
        options: DepositOptions,
        counting: asyncio.Future[int],
        variables: dict[str, str],
    ) -> tuple[str, Goto | None]:
        box = boxes[0]
        greeting = await self._greeting(channel, box, options)
        log.info(
            "call %s for %s@%s: greeting %s",
            channel.info.call_id,
            box.mailbox,
            box.context,
            " ".join(
                p if isinstance(p, str) else f"<recorded {len(p)} bytes>" for p in greeting.parts
            )
            or "none",
        )
        current = variables.get("CONTEXT") or channel.info.context
        codes = self._exit_codes(box, options, current)
        maxmsg = box.int_option("maxmsg")
        # maxmsg=0 is a greetings-only mailbox: the greeting plays without the intro.
        silent = options.silent or maxmsg == 0
        if options.silent_if_greeting and greeting.recorded:
            silent = True
        digit = None
        for part in greeting.parts:
            if isinstance(part, bytes):
                digit = await channel.play(part, codes)
            else:
                digit = await self._play_prompts(channel, [part], codes)
            if digit is not None:
                break
        if digit == "#":
            silent, digit = True, None
        if digit is None and not silent:
            digit = await self._play_prompts(channel, ["vm-intro"], codes)
            if digit == "#":
                digit = None
        if digit is not None:
            return await self._leave_for(channel, box, options, digit)
        if maxmsg == 0:
            log.info("mailbox %s@%s is greetings only (maxmsg=0)", box.mailbox, box.context)
            return "SUCCESS", None
        key = (box.context, box.mailbox)
        count = await counting
        if maxmsg > 0 and count >= maxmsg - self._in_process.get(key, 0):
            log.info("mailbox %s@%s is full (%d messages)", box.mailbox, box.context, count)
            await self._play_prompts(channel, ["vm-mailboxfull"], "")
            return "FAILED", None
        self._in_process[key] = self._in_process.get(key, 0) + 1
        try:
            return await self._record_and_store(channel, boxes, options, variables)
        finally:
            self._in_process[key] -= 1
            if not self._in_process[key]:
                del self._in_process[key]

    async def _leave_for(
        self, channel: Channel, box: Mailbox, options: DepositOptions, digit: str
    ) -> tuple[str, Goto]:
        """The caller pressed an exit key during the greeting: USEREXIT and a dial plan jump."""
        exitcontext = self._setting(box, "exitcontext", "") or None
        if digit == "*":
            target = Goto("a", exitcontext)
        elif digit == "0":
            await self._play_prompts(channel, ["transfer"], "")
            target = Goto("o", exitcontext)
        else:
            target = Goto(digit, options.exit_context or None)
        log.info(
            "call %s: caller pressed %s, leaving for %s@%s",
            channel.info.call_id,
            digit,
            target.exten,
            target.context or "(current context)",
        )
        return "USEREXIT", target

    async def _record_and_store(
        self,
        channel: Channel,
        boxes: list[Mailbox],
        options: DepositOptions,
        variables: dict[str, str],
    ) -> tuple[str, Goto | None]:
        return await record_and_store(self, channel, boxes, options, variables)
