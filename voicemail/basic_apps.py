"""The small dial plan applications: Answer, Ringing, Wait, Playback, Hangup, NoOp.

Each takes the step's arguments already split (and substituted one by one), as Asterisk's
applications take theirs.
"""

from __future__ import annotations

import logging

from channels.channel import Channel

from .sounds import SoundLibrary, SoundNotFound

log = logging.getLogger(__name__)

# Hangup(cause): Q.850 causes to SIP responses for a call not yet answered (RFC 3398).
_HANGUP_CAUSES = {"1": 404, "17": 486, "21": 403}


def _arg(args: list[str], index: int) -> str:
    return args[index].strip() if len(args) > index else ""


class BasicApplications:
    def __init__(self, sounds: SoundLibrary) -> None:
        self.sounds = sounds

    def table(self) -> dict[str, object]:
        return {
            "answer": self.answer,
            "ringing": self.ringing,
            "wait": self.wait,
            "playback": self.playback,
            "hangup": self.hangup,
            "noop": self.noop,
        }

    async def answer(self, channel: Channel, args: list[str], variables: dict[str, str]) -> bool:
        await channel.answer()
        return True

    async def ringing(self, channel: Channel, args: list[str], variables: dict[str, str]) -> bool:
        await channel.ring()
        return True

    async def wait(self, channel: Channel, args: list[str], variables: dict[str, str]) -> bool:
        try:
            seconds = float(_arg(args, 0) or "0")
        except ValueError:
            log.warning("Wait(%s): not a number", _arg(args, 0))
            return True
        await channel.wait(seconds)
        return True

    async def playback(self, channel: Channel, args: list[str], variables: dict[str, str]) -> bool:
        if "noanswer" not in _arg(args, 1):
            await channel.answer()
        for name in _arg(args, 0).split("&"):
            try:
                await channel.play(
                    self.sounds.load_pcm(name.strip(), channel.info.language or None)
                )
            except SoundNotFound:
                log.warning("Playback: %s not found", name)
        return True

    async def hangup(self, channel: Channel, args: list[str], variables: dict[str, str]) -> bool:
        cause = _arg(args, 0)
        channel.hangup(_HANGUP_CAUSES.get(cause), f"Hangup({cause})")
        return False

    async def noop(self, channel: Channel, args: list[str], variables: dict[str, str]) -> bool:
        return True
