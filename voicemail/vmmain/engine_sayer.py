"""VoiceMailMain's say items spoken by the say engine (voicemail/say), in the listener's
language: numbers, the intro, folder names, the envelope in the mailbox's [zonemessages]
zone, the caller id and the duration (AV@20 vm_intro, vm_play_folder_name, play_message_*).

A plain string is a prompt name, unless it is one of the roles voicemail.conf may give
another prompt (`vm-login=custom/welcome`, voicemail/say/overrides.py): then the operator's
prompt is played.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from .. import say
from .events import (
    CallerId,
    Duration,
    EmptyFolder,
    Envelope,
    FolderName,
    Intro,
    SayItem,
    SayNumber,
    folder_name,
)
from .sayer import Listener

log = logging.getLogger(__name__)


class EngineSayer:
    """A Sayer for one configuration: [general] (the prompt overrides) and [zonemessages]."""

    def __init__(
        self,
        general: Mapping[str, str] | None = None,
        zonemessages: Mapping[str, str] | None = None,
    ) -> None:
        """ValueError (naming the option or zone) for a value the loader should have refused."""
        self.prompts = say.prompt_overrides(general or {})
        self.zones = {
            name: say.parse_zone(name, value) for name, value in (zonemessages or {}).items()
        }

    def expand(self, item: SayItem, listener: Listener) -> list[str]:
        language = listener.language or "en"
        if isinstance(item, str):
            return [self.prompts.get(item, item)]
        if isinstance(item, SayNumber):
            return say.say_number(item.number, language)
        if isinstance(item, Intro):
            return say.vm_intro(item.new, item.old, item.urgent, language)
        if isinstance(item, FolderName):
            return say.folder_name(_box(item.folder), language)
        if isinstance(item, EmptyFolder):
            return say.empty_folder(_box(item.folder), language)
        if isinstance(item, Envelope):
            return say.envelope_datetime(
                item.origtime, language, listener.now, self._zone(listener.tz)
            )
        if isinstance(item, CallerId):
            number = caller_number(item.callerid)
            if not number:
                return ["vm-unknown-caller"]
            return ["vm-from-phonenumber", *say.say_digits(number, language)]
        if isinstance(item, Duration):
            return say.say_duration(item.minutes * 60, language, min_minutes=0)
        raise TypeError(f"nothing to say for {item!r}")

    def _zone(self, tz: str) -> say.Zone | None:
        """The mailbox's zone; Asterisk uses the server's zone when the name is unknown."""
        if not tz:
            return None
        zone = self.zones.get(tz)  # names are matched exactly, as Asterisk's strcmp
        if zone is None:
            log.warning("tz=%s names no [zonemessages] zone; the server's time zone is used", tz)
        return zone


def _box(folder: int) -> str:
    return f"vm-{folder_name(folder)}"


def caller_number(callerid: str) -> str:
    """The number of a stored callerid (`"Name" <5551>`, `5551`); "" for a name only, none,
    or Asterisk's `Unknown` (then the caller is "unknown", as play_message_callerid says)."""
    if "<" in callerid and callerid.endswith(">"):
        number = callerid[callerid.rindex("<") + 1 : -1].strip()
    else:
        number = callerid.strip() if callerid.strip().replace("+", "").isdigit() else ""
    return number if any(char.isdigit() for char in number) else ""
