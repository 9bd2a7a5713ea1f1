"""The seam between what the core wants said and the prompt files that say it.

The core yields say items (events.SayItem); a `Sayer` turns each into prompt names for one
listener. The default is `engine_sayer.EngineSayer`, on the project's say engine
(voicemail/say): Asterisk's rules for en, es and fr, the [zonemessages] envelope and the
voicemail.conf `vm-*=` prompt overrides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .events import SayItem


@dataclass(frozen=True)
class Listener:
    """Who hears it: the channel's (or, once logged in, the mailbox's) `language`, the
    mailbox's `tz` (a [zonemessages] zone name, "" for the server's zone) and `now` (epoch
    seconds, read by the driver) that decides "today" and "yesterday" in the envelope."""

    language: str = ""
    tz: str = ""
    now: int = 0


class Sayer(Protocol):
    def expand(self, item: SayItem, listener: Listener) -> list[str]:
        """Prompt names for one item (a plain string is a prompt name or a role)."""
        ...
