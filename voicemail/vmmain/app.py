"""VoiceMailMain([mailbox][@context][,options]): the dial plan application."""

from __future__ import annotations

import logging

from channels.channel import Channel

from ..goto import Goto
from ..login_guard import LoginGuard
from ..mailboxes import MailboxDirectory
from ..sounds import SoundLibrary
from .access import MailboxAccess
from .core import VoiceMailMain
from .driver import LeaveMessageHook, MailboxChanged, MenuDriver
from .engine_sayer import EngineSayer
from .options import BadArguments, MenuSettings, parse_main_args
from .sayer import Sayer

log = logging.getLogger(__name__)


class VoiceMailMainApp:
    def __init__(
        self,
        store: object,
        mailboxes: MailboxDirectory,
        sounds: SoundLibrary,
        *,
        general: dict[str, str] | None = None,
        zonemessages: dict[str, str] | None = None,
        audio_format: str = "wav",
        sayer: Sayer | None = None,
        mailbox_changed: MailboxChanged | None = None,
        max_record_seconds: float = 600,
        leave_message: LeaveMessageHook | None = None,
        guard: LoginGuard | None = None,
    ) -> None:
        self.max_record_seconds = max_record_seconds
        self.leave_message = leave_message  # reply and compose: VoiceMail() leaves the message
        # `guard`: the lockout and audit of PIN attempts (None: every attempt checked, no memory).
        self.access = MailboxAccess(store, mailboxes, general or {}, guard)  # type: ignore[arg-type]
        self.sounds = sounds
        self.audio_format = audio_format
        self.custom_sayer = sayer
        self.sayer: Sayer = sayer or EngineSayer(general, zonemessages)
        self.mailbox_changed = mailbox_changed

    def configure(self, general: dict[str, str], zonemessages: dict[str, str]) -> None:
        """A reload: [general] and [zonemessages] for the calls that start from now on."""
        self.access.general = general
        if self.custom_sayer is None:
            self.sayer = EngineSayer(general, zonemessages)

    async def run(
        self, channel: Channel, args: list[str], variables: dict[str, str]
    ) -> bool | Goto:
        """False when the dial plan should stop (hang-up, failed login); Goto('a') for '*'."""
        try:
            parsed = parse_main_args(args)
        except BadArguments as exc:
            log.error("VoiceMailMain(%s): %s", ",".join(args), exc)
            return True
        await channel.answer()
        settings = MenuSettings.from_options(self.access.general)
        session = VoiceMailMain(parsed, settings, channel.info.caller_id_num)
        driver = MenuDriver(
            channel,
            self.access,
            self.sounds,
            sayer=self.sayer,
            audio_format=self.audio_format,
            mailbox_changed=self.mailbox_changed,
            max_record_seconds=self.max_record_seconds,
            leave_message=self.leave_message,
        )
        finish = await driver.run(session)
        if session.goto_a:
            return Goto("a")
        if not finish.keep_going and not channel.hung_up:
            channel.hangup()
        return finish.keep_going and not channel.hung_up
