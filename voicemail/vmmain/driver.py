"""The asyncio side of VoiceMailMain: the core's actions as Channel and database calls.

The core decides; this only performs. A hang-up during any channel call becomes the `HungUp`
event, after which the core's last actions (the pending `Close`, then `Finish`) are still
performed: the database work of the close does not need the caller.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from channels.channel import Channel, ChannelHungUp, StopReason
from storage.audioformats import TranscodeError, encode

from ..app_voicemail import stored_audio_pcm
from ..login_guard import LoginOutcome
from ..sounds import SoundLibrary, SoundNotFound
from .access import STORE_ERRORS, MailboxAccess
from .core import VoiceMailMain
from .engine_sayer import EngineSayer
from .events import (
    ALL_KEYS,
    Action,
    Authenticated,
    ChangePassword,
    CheckPassword,
    CheckPin,
    Close,
    Collect,
    CopyMessage,
    DeleteGreeting,
    Digit,
    Digits,
    Event,
    FindMailbox,
    Finish,
    FolderOpened,
    Forwarded,
    ForwardMessage,
    HungUp,
    LeaveMessage,
    MailboxFound,
    MailboxInfo,
    MailboxOpened,
    MessageLeft,
    OpenFolder,
    PasswordChanged,
    PasswordChecked,
    PinChecked,
    Play,
    PlayMessage,
    PlayName,
    PlayRecording,
    PrefixRecorded,
    PromptDone,
    Record,
    RecordingDone,
    RecordPrefix,
    SaveGreeting,
    SayItem,
    Stored,
    StoreFailed,
    Timeout,
    WaitDigit,
    folder_name,
)
from .sayer import Listener, Sayer

log = logging.getLogger(__name__)

# Listen controls while a message plays (Asterisk's listen-control-*-key defaults).
FORWARD_KEY, REVERSE_KEY, PAUSE_KEY, RESTART_KEY = "#", "*", "0", "2"
STOP_KEYS = "13456789"
PAUSE_LIMIT = 300.0  # a paused message resumes by itself after this long
BYTES_PER_SECOND = 16000  # 8 kHz 16-bit mono

MailboxChanged = Callable[[str, str], object]
# Leave a message in these (mailbox, context)s with VoiceMail(); returns its VMSTATUS.
LeaveMessageHook = Callable[[Channel, Sequence[tuple[str, str]]], Awaitable[str]]


class MenuDriver:
    def __init__(
        self,
        channel: Channel,
        access: MailboxAccess,
        sounds: SoundLibrary,
        *,
        sayer: Sayer | None = None,
        audio_format: str = "wav",
        mailbox_changed: MailboxChanged | None = None,
        max_record_seconds: float = 600,
        clock: Callable[[], float] = time.time,
        leave_message: LeaveMessageHook | None = None,
    ) -> None:
        self.channel = channel
        self.clock = clock  # "now" for the envelope's today / yesterday
        self.leave_message = leave_message
        self.prefix = b""  # the last RecordPrefix, for ForwardMessage
        self.max_record_seconds = max_record_seconds
        self.recording = b""  # the last Record, for PlayRecording and SaveGreeting
        self.access = access
        self.sounds = sounds
        self.sayer = sayer or EngineSayer()
        self.audio_format = audio_format
        self.mailbox_changed = mailbox_changed
        self.language = channel.info.language
        self.mailbox: MailboxInfo | None = None
        self.changed = False
        # The message last played, decoded: (folder, msgnum, PCM). Replaying it (5 after it
        # ends) plays it from memory instead of reading its BLOB again. Forgotten whenever a
        # folder is opened or closed, since a close renumbers the folder.
        self._held: tuple[int, int, bytes] | None = None
        # The PIN the caller logged in with, then the one they changed it to: what
        # externpasscheck is told is the old PIN (the stored one may be a hash). Never logged.
        self._pin: str | None = None

    async def run(self, session: VoiceMailMain) -> Finish:
        """Drive the session to its Finish; never raises ChannelHungUp."""
        actions = session.start()
        finish = Finish(False)
        try:
            while actions:
                action = actions.pop(0)
                if isinstance(action, Finish):
                    finish = action
                    break
                try:
                    event = await self._perform_guarded(action)
                except asyncio.CancelledError:
                    # The call is being torn down (shutdown): still apply the pending edits.
                    if not session.finished:
                        actions = session.handle(HungUp())
                    for last in actions:
                        if isinstance(last, Close):
                            await asyncio.shield(self._database(last))
                    raise
                if not session.finished:
                    actions = session.handle(event)
        finally:
            if self.changed and self.mailbox is not None:
                self._lamp(self.mailbox.mailbox, self.mailbox.context)
        return finish

    async def _perform_guarded(self, action: Action) -> Event:
        try:
            return await self.perform(action)
        except ChannelHungUp:
            return HungUp()

    async def perform(self, action: Action) -> Event:
        if isinstance(action, Play):
            return await self._play(action.items, action.interrupt)
        if isinstance(action, WaitDigit):
            key = await self.channel.wait(action.seconds, ALL_KEYS)
            return Timeout() if key is None else Digit(key)
        if isinstance(action, Collect):
            return await self._collect(action)
        if isinstance(action, PlayMessage):
            return await self._play_message(action)
        if isinstance(action, Record):
            return await self._record(action)
        if isinstance(action, PlayRecording):
            key = await self.channel.play(self.recording, ALL_KEYS) if self.recording else None
            return PromptDone() if key is None else Digit(key)
        if isinstance(action, PlayName):
            return await self._play_name(action)
        if isinstance(action, RecordPrefix):
            return await self._record_prefix(action)
        if isinstance(action, LeaveMessage):
            return await self._leave_message(action)
        if isinstance(action, Close):
            # A close that has begun finishes even if the call is torn down meanwhile.
            return await asyncio.shield(self._database(action))
        return await self._database(action)

    # --- the channel -----------------------------------------------------------------------

    def _pcm(self, items: tuple[SayItem, ...]) -> bytes:
        listener = Listener(
            self.language or self.sounds.default_language,  # "": asterisk.conf's default
            self.mailbox.tz if self.mailbox else "",
            int(self.clock()),
        )
        names: list[str] = []
        for item in items:
            names += self.sayer.expand(item, listener)
        pcm = b""
        for name in names:
            try:
                pcm += self.sounds.load_pcm(name, self.language or None)
            except (SoundNotFound, ValueError) as exc:
                log.warning("prompt %s not played: %s", name, exc)
        return pcm

    async def _play(self, items: tuple[SayItem, ...], interrupt: str) -> Event:
        pcm = self._pcm(items)
        key = await self.channel.play(pcm, interrupt) if pcm else None
        return PromptDone() if key is None else Digit(key)

    async def _collect(self, action: Collect) -> Event:
        """The first key may interrupt the prompt; it is the entry's first digit."""
        pcm = self._pcm(action.prompts)
        first = await self.channel.play(pcm, ALL_KEYS) if pcm else None
        if first is not None and first in action.terminator:
            return Digits("")
        if first is None:
            text = await self.channel.read_digits(
                action.max_digits, action.first, action.between, action.terminator
            )
        else:
            text = first + await self.channel.read_digits(
                action.max_digits - 1, action.between, action.between, action.terminator
            )
        return Digits(text)

    async def _record(self, action: Record) -> Event:
        """A greeting: a hang-up discards it (HungUp), as Asterisk does for the owner."""
        limit = action.max_seconds or self.max_record_seconds
        limit = min(limit, self.max_record_seconds)
        recording = await self.channel.record(limit, action.end_keys)
        if recording.reason == StopReason.HANGUP:
            return HungUp()
        self.recording = recording.pcm
        return RecordingDone(recording.seconds)

    async def _play_name(self, action: PlayName) -> Event:
        """A forward recipient: its recorded name, else its digits said (not interruptible:
        a key here is not a menu command)."""
        pcm = b""
        try:
            store = self.access.store
            name = await store.retrieve_greeting(action.context, action.mailbox, "greet")
            if name is not None:
                pcm = await stored_audio_pcm(name.recording, self.audio_format)
        except (*STORE_ERRORS, TranscodeError) as exc:
            log.warning("name of %s@%s not played: %s", action.mailbox, action.context, exc)
        if not pcm:
            pcm = self._pcm(tuple(f"digits/{d}" for d in action.mailbox if d.isdigit()))
        if pcm:
            await self.channel.play(pcm, "")
        return PromptDone()

    async def _record_prefix(self, action: RecordPrefix) -> Event:
        """A forward's introduction: any key ends it; the time limit or silence drops it."""
        recording = await self.channel.record(
            self.max_record_seconds,
            ALL_KEYS,
            max_silence=action.max_silence,
            silence_threshold=action.silence_threshold,
        )
        if recording.reason == StopReason.HANGUP:
            return HungUp()
        by_key = recording.reason == StopReason.DIGIT
        self.prefix = recording.pcm if by_key else b""
        return PrefixRecorded(len(recording.pcm) / BYTES_PER_SECOND, by_key)

    async def _leave_message(self, action: LeaveMessage) -> Event:
        """Reply and compose: the VoiceMail application records and stores the message."""
        if self.leave_message is None:
            log.error("VoiceMailMain: no VoiceMail application to leave a message with")
            return MessageLeft("FAILED")
        status = await self.leave_message(self.channel, action.recipients)
        if self.channel.hung_up:
            return HungUp()
        return MessageLeft(status)

    async def _message_pcm(self, folder: int, msgnum: int) -> bytes:
        """The held audio if it is this message's; else read, decoded, and held instead."""
        assert self.mailbox is not None
        if self._held is not None and self._held[:2] == (folder, msgnum):
            return self._held[2]
        self._held = None  # the message before is let go before the next is read
        stored = await self.access.audio(self.mailbox, folder, msgnum)
        if stored is None:
            return b""
        pcm = await stored_audio_pcm(stored, self.audio_format)
        self._held = (folder, msgnum, pcm)
        return pcm

    async def _play_message(self, action: PlayMessage) -> Event:
        """ast_control_streamfile: # forward, * back by skipms, 0 pause, 2 restart, the
        other keys stop (and are the next command)."""
        assert self.mailbox is not None
        try:
            pcm = await self._message_pcm(action.folder, action.msgnum)
        except (*STORE_ERRORS, TranscodeError) as exc:
            log.error(
                "message %d of %s: cannot play: %s", action.msgnum, folder_name(action.folder), exc
            )
            return PromptDone()
        log.info(
            "VoiceMailMain: %s@%s playing message %d of %s (%.1f s)",
            self.mailbox.mailbox,
            self.mailbox.context,
            action.msgnum,
            folder_name(action.folder),
            len(pcm) / BYTES_PER_SECOND,
        )
        skip = (action.skipms * BYTES_PER_SECOND // 1000) & ~1
        keys = FORWARD_KEY + REVERSE_KEY + PAUSE_KEY + RESTART_KEY + STOP_KEYS
        loop = asyncio.get_running_loop()
        position = 0
        while position < len(pcm):
            started = loop.time()
            key = await self.channel.play(pcm[position:], keys)
            if key is None:
                return PromptDone()
            here = min(len(pcm), position + (int((loop.time() - started) * BYTES_PER_SECOND) & ~1))
            if key == FORWARD_KEY:
                position = here + skip
            elif key == REVERSE_KEY:
                position = max(0, here - skip)
            elif key == RESTART_KEY:
                position = 0
            elif key == PAUSE_KEY:
                resume = await self.channel.wait(PAUSE_LIMIT, PAUSE_KEY + STOP_KEYS)
                if resume is not None and resume in STOP_KEYS:
                    return Digit(resume)
                position = here
            else:
                return Digit(key)
        return PromptDone()

    # --- the database ----------------------------------------------------------------------

    async def _database(self, action: Action) -> Event:
        try:
            return await self._store_action(action)
        except STORE_ERRORS as exc:
            log.error("VoiceMailMain: %s failed: %s", type(action).__name__, exc)
            return StoreFailed(str(exc))

    async def _store_action(self, action: Action) -> Event:
        if isinstance(action, FindMailbox):
            return MailboxFound(await self.access.find(action.mailbox, action.context))
        if isinstance(action, CheckPin):
            outcome = await self.access.check_pin(action.info, action.entered, self.channel.info)
            if outcome is LoginOutcome.OK:
                self._pin = action.entered
            return PinChecked(outcome)
        if isinstance(action, Authenticated):
            info = action.info
            self.mailbox = info
            if info.language:
                self.language = info.language
            log.info("VoiceMailMain: %s@%s logged in", info.mailbox, info.context)
            new, old, urgent = await self.access.counts(info)
            temp = await self.access.has_temp_greeting(info)
            new_user = await self.access.is_new_user(info)
            greetings = await self.access.setup_greetings(info) if new_user else frozenset()
            return MailboxOpened(new, old, urgent, temp, greetings, new_user)
        assert self.mailbox is not None, f"{action!r} before login"
        info = self.mailbox
        maxmsg = info.settings.maxmsg if info.settings else None
        if isinstance(action, OpenFolder | Close):
            self._held = None
        if isinstance(action, OpenFolder):
            return FolderOpened(action.folder, await self.access.open_folder(info, action.folder))
        if isinstance(action, CopyMessage):
            saved = await self.access.copy(
                info, action.folder, action.msgnum, action.to_folder, action.maxmsg
            )
            self.changed = self.changed or saved
            return Stored(full=not saved)
        if isinstance(action, Close):
            self.changed = True
            await self.access.close(info, action.edits, maxmsg)
            return Stored()
        if isinstance(action, ForwardMessage):
            return await self._forward(info, action)
        if isinstance(action, SaveGreeting):
            audio = await asyncio.to_thread(encode, self.recording, self.audio_format)
            await self.access.store.save_greeting(info.context, info.mailbox, action.kind, audio)
            log.info(
                "VoiceMailMain: %s@%s recorded its %s greeting (%.1f s)",
                info.mailbox,
                info.context,
                action.kind,
                len(self.recording) / BYTES_PER_SECOND,
            )
            return Stored()
        if isinstance(action, DeleteGreeting):
            await self.access.store.delete_greeting(info.context, info.mailbox, action.kind)
            log.info(
                "VoiceMailMain: %s@%s removed its %s greeting",
                info.mailbox,
                info.context,
                action.kind,
            )
            return Stored()
        if isinstance(action, CheckPassword):
            valid = await self.access.check_password(info, action.new, self._pin)
            return PasswordChecked(valid)
        if isinstance(action, ChangePassword):
            ok = await self.access.change_password(info, action.new)
            if ok:  # what externpasscheck is told is the old PIN from now on
                self._pin = action.new
            return PasswordChanged(ok)
        raise TypeError(f"unknown action {action!r}")

    async def _forward(self, info: MailboxInfo, action: ForwardMessage) -> Event:
        prefix = self.prefix if action.prepend else b""
        try:
            delivered, full = await self.access.forward(
                info,
                action.folder,
                action.msgnum,
                action.recipients,
                action.to_folder,
                prefix,
                self.audio_format,
            )
        except TranscodeError as exc:
            log.error("message %d: cannot prepend the introduction: %s", action.msgnum, exc)
            return StoreFailed(str(exc))
        self.prefix = b""
        for box in delivered:
            self._lamp(box.mailbox, box.context)
        return Forwarded(
            tuple(box.mailbox for box in delivered), tuple(box.mailbox for box in full)
        )

    def _lamp(self, mailbox: str, context: str) -> None:
        """The mailbox's MWI changed; a failing hook must not break the call."""
        if self.mailbox_changed is None:
            return
        try:
            self.mailbox_changed(mailbox, context)
        except Exception:
            log.exception("mailbox_changed hook failed")
