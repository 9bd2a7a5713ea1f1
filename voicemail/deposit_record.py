"""The recording half of VoiceMail(): beep, record, review, store in every `&` mailbox.

Split from app_voicemail.py (which greets and decides); `record_and_store` is its method
`_record_and_store`. The recording is journalled to disk as it is recorded, so a crash loses
nothing; it is stored in the first mailbox under its own msg_id, and copied, each copy with a
msg_id of its own, to the other mailboxes (a full one is skipped, as Asterisk's copy_message
does).

Each stored copy carries its notifications (voicemail/notifications.py: a mail per address,
a pager mail, the `new` webhook event) into the transaction that stores it, or into the
spool file with it; voicemail/outbox_sender.py sends them from the outbox.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from channels.channel import Channel, ChannelHungUp, Recording, StopReason
from channels.rtp import SAMPLE_RATE
from channels.silence import DEFAULT_SILENCE_THRESHOLD
from storage.audioformats import TranscodeError, encode
from storage.messages import new_msg_id
from storage.recording_journal import RecordingJournal, RecordingMetadata
from storage.spool import PendingMessage

from .deposit_options import DepositOptions
from .deposit_review import Outcome, ReviewSettings, operator_choice, review
from .goto import Goto
from .mailboxes import Mailbox
from .notifications import deposit_items

if TYPE_CHECKING:
    from .app_voicemail import VoiceMailApp

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Envelope:
    """What every copy of the message shares besides the audio."""

    origtime: int
    callerid: str
    category: str | None


def caller_id_string(name: str, number: str) -> str:
    """Asterisk's ast_callerid_merge: `"Name" <num>`, name, num or Unknown."""
    if name and number:
        escaped = name.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}" <{number}>'
    return name or number or "Unknown"


async def record_and_store(
    app: VoiceMailApp,
    channel: Channel,
    boxes: list[Mailbox],
    options: DepositOptions,
    variables: dict[str, str],
) -> tuple[str, Goto | None]:
    box = boxes[0]
    if options.beep:
        await app._play_prompts(channel, [options.beep], "")
    origtime = int(time.time())
    maxsecs = box.int_option("maxsecs")
    maxmsg = box.int_option("maxmsg")
    limit = min(maxsecs, app.max_record_seconds) if maxsecs > 0 else app.max_record_seconds
    operator = app._flag(box, "operator")
    settings = ReviewSettings(
        review=app._flag(box, "review"),
        operator=operator,
        leave_urgent=app._flag(box, "leaveurgent"),
    )
    max_silence = app._int_setting(box, "maxsilence", 0)
    threshold = app._int_setting(box, "silencethreshold", DEFAULT_SILENCE_THRESHOLD)
    flag = options.flag
    msg_id = new_msg_id()
    callerid = caller_id_string(channel.info.caller_id_name, channel.info.caller_id_num)
    category = variables.get("VM_CATEGORY") or None
    # The audio goes to disk as it is recorded, so a crash (even SIGKILL) mid-message
    # leaves a journal that the next start stores, instead of losing what was said.
    journal = app.journals.begin(
        msg_id,
        RecordingMetadata(
            context=box.context,
            mailbox=box.mailbox,
            folder="Urgent" if flag == "Urgent" else "INBOX",
            callerid=callerid,
            origtime=origtime,
            caller_context=channel.info.context,
            audio_format=app.format,
            flag=flag,
            category=category,
            maxmsg=maxmsg if maxmsg > 0 else None,
            min_seconds=box.int_option("minsecs"),
        ),
    )

    async def record(journalled: bool) -> Recording:
        # `#` accepts; `0` is the cancel key when operator=yes; other keys are ignored.
        recording = await channel.record(
            limit,
            "#0" if operator else "#",
            on_chunk=journal.append if journalled else None,
            max_silence=max_silence,
            silence_threshold=threshold,
            gain_db=options.gain_db,
        )
        channel.flush_digits()
        return recording

    async def play(names: list[str], escape: str) -> str | None:
        return await app._play_prompts(channel, names, escape)

    envelope = Envelope(origtime, callerid, category)
    try:
        log.info(
            "call %s: recording for %s@%s (at most %d s)%s",
            channel.info.call_id,
            box.mailbox,
            box.context,
            limit,
            f", stopping after {max_silence} s of silence" if max_silence > 0 else "",
        )
        recording = await record(True)
        outcome = Outcome(recording.pcm, keep=True, flag=flag, stop=recording.reason)
        try:
            if recording.reason is StopReason.HANGUP:
                pass
            elif recording.digit == "0" and operator:
                outcome = await operator_choice(play, channel, outcome)
            elif settings.review:
                await play(["auth-thankyou"], "")
                # A re-recording is not journalled (the journal holds the first take).
                outcome = await review(play, channel, lambda: record(False), settings, outcome)
        except ChannelHungUp:
            pass  # the caller hung up after recording: the message is kept
        status, lost = await _store(app, channel, boxes, outcome, journal, msg_id, envelope)
    finally:
        journal.leave()  # a cancelled call (shutdown) leaves its audio for recovery
    if outcome.operator:
        where = app._setting(box, "exitcontext", "") or None
        current = variables.get("CONTEXT") or channel.info.context
        if app.extension_exists(where or current, "o"):
            await play(["transfer"], "")
            return "USEREXIT", Goto("o", where)
        return status, None
    if lost:
        # Neither the spool nor the database took the message: say so rather than thank.
        if not channel.hung_up:
            await play(["vm-sorry"], "")
        return status, None
    # Asterisk's recorder thanks the caller on every normal stop, also when the message then
    # turns out shorter than minsecs and is not kept.
    if not settings.review and outcome.stop is not StopReason.HANGUP and not channel.hung_up:
        await play(["auth-thankyou"], "")
    return status, None


async def _store(
    app: VoiceMailApp,
    channel: Channel,
    boxes: list[Mailbox],
    outcome: Outcome,
    journal: RecordingJournal,
    msg_id: str,
    envelope: Envelope,
) -> tuple[str, bool]:
    """Store the outcome in the first mailbox, then copy it to the others; the status, and
    whether a message meant to be kept could not be saved (the caller hears vm-sorry)."""
    box = boxes[0]
    seconds = len(outcome.pcm) / 2 / SAMPLE_RATE
    if not outcome.keep:
        log.info("message for %s@%s deleted by the caller", box.mailbox, box.context)
        journal.discard()
        return "FAILED", False
    if seconds < max(box.int_option("minsecs"), 0.02):
        log.info(
            "recording for %s@%s was %.2f s, shorter than minsecs; discarded",
            box.mailbox,
            box.context,
            seconds,
        )
        journal.discard()
        return "FAILED", False
    folder = "Urgent" if outcome.flag == "Urgent" else "INBOX"
    try:
        audio = await asyncio.to_thread(encode, outcome.pcm, app.format)
        await _deposit(app, channel, box, folder, msg_id, audio, envelope, outcome)
    except ValueError as exc:
        journal.discard()  # a message the store can never take
        log.error(
            "Failed to store voicemail for %s@%s (msg_id %s): %s",
            box.mailbox,
            box.context,
            msg_id,
            exc,
        )
        return "FAILED", True
    except (OSError, TranscodeError) as exc:
        # The journal stays: the next start stores the message from it.
        log.error(
            "Failed to store voicemail for %s@%s (msg_id %s): %s; what the recording "
            "journal holds is stored at the next start",
            box.mailbox,
            box.context,
            msg_id,
            exc,
        )
        return "FAILED", True
    journal.finish()
    for other in boxes[1:]:
        await _copy(app, channel, other, folder, audio, envelope, outcome)
    return "SUCCESS", False


async def _copy(
    app: VoiceMailApp,
    channel: Channel,
    box: Mailbox,
    folder: str,
    audio: bytes,
    envelope: Envelope,
    outcome: Outcome,
) -> None:
    """The recording for another `&` mailbox: its own msg_id; skipped when it is full."""
    maxmsg = box.int_option("maxmsg")
    if maxmsg == 0:
        log.info("not copied to %s@%s: greetings only (maxmsg=0)", box.mailbox, box.context)
        return
    if maxmsg > 0 and await app._count(box, folder) >= maxmsg:
        log.warning("not copied to %s@%s: mailbox full", box.mailbox, box.context)
        return
    msg_id = new_msg_id()
    try:
        await _deposit(app, channel, box, folder, msg_id, audio, envelope, outcome)
    except (ValueError, OSError) as exc:
        log.error(
            "Failed to copy voicemail to %s@%s (msg_id %s): %s",
            box.mailbox,
            box.context,
            msg_id,
            exc,
        )


async def _deposit(
    app: VoiceMailApp,
    channel: Channel,
    box: Mailbox,
    folder: str,
    msg_id: str,
    audio: bytes,
    envelope: Envelope,
    outcome: Outcome,
) -> None:
    maxmsg = box.int_option("maxmsg")
    seconds = len(outcome.pcm) / 2 / SAMPLE_RATE
    outbox = ()
    if app.flusher.store.outbox is not None:  # a store without an outbox sends nothing
        outbox = deposit_items(
            box,
            app.mailboxes.settings,
            audio_format=app.format,
            folder=folder,
            msg_id=msg_id,
            callerid=envelope.callerid,
            duration=int(round(seconds)),
            origtime=envelope.origtime,
        )
    result = await app.flusher.deposit_result(
        PendingMessage(
            msg_id=msg_id,
            context=box.context,
            mailbox=box.mailbox,
            folder=folder,
            recording=audio,
            callerid=envelope.callerid,
            origtime=envelope.origtime,
            duration=int(round(seconds)),
            caller_context=channel.info.context,
            flag=outcome.flag,
            category=envelope.category,
            maxmsg=maxmsg if maxmsg > 0 else None,
            outbox=outbox,
        )
    )
    where = (
        f"as msgnum {result.msgnum}"
        if result.msgnum is not None
        else "in the local spool (database away)"
    )
    log.info(
        "message %s stored in %s@%s %s %s (%.2f s, stopped by %s)",
        msg_id,
        box.mailbox,
        box.context,
        folder,
        where,
        seconds,
        outcome.stop.value if outcome.stop else "?",
    )
