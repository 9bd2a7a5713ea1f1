"""The say engine: numbers, digits, dates and voicemail sentences as lists of prompt names.

Pure functions, no I/O: each returns the names of the core-sound files Asterisk 20 would play
(`digits/2`, `vm-INBOX`, ...) for the channel language, following main/say.c and
app_voicemail.c for English (en, with en_GB numbers), Spanish (es) and French (fr); any other
language gets the English rules, as in Asterisk. The player resolves each name with
`voicemail.sounds.SoundLibrary` in the same language.
"""

from __future__ import annotations

from .common import say_alpha
from .common import say_digits as _say_digits
from .dates import (
    ENVELOPE_FORMAT,
    Zone,
    check_date_format,
    envelope_datetime,
    parse_zone,
    say_datetime,
)
from .language import say_enumeration, say_number, syntax
from .overrides import PROMPT_OPTIONS, prompt_overrides
from .vm import empty_folder, folder_name, message_intro, say_counted, say_duration, vm_intro


def say_digits(text: str, language: str = "en") -> list[str]:
    """SayDigits: `digits/N` per digit, `digits/star`, `digits/pound`, `digits/minus`; other
    characters are skipped. The same in every language (the files differ, not the names)."""
    return _say_digits(text)


__all__ = [
    "ENVELOPE_FORMAT",
    "PROMPT_OPTIONS",
    "Zone",
    "check_date_format",
    "empty_folder",
    "envelope_datetime",
    "folder_name",
    "message_intro",
    "parse_zone",
    "prompt_overrides",
    "say_alpha",
    "say_counted",
    "say_datetime",
    "say_digits",
    "say_duration",
    "say_enumeration",
    "say_number",
    "syntax",
    "vm_intro",
]
