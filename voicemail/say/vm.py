"""app_voicemail's spoken sentences: the message counts, folder names, the message prelude and
the duration, with the per-language word order of Asterisk 20's vm_intro_en/_es/_fr,
vm_play_folder_name, play_message and play_message_duration.
"""

from __future__ import annotations

from . import es, fr
from .language import say_number, syntax


def say_counted(count: int, singular: str, plural: str, language: str) -> list[str]:
    """The number then `singular` for exactly one, else `plural`:
    say_counted(2, "vm-message", "vm-messages", "en") -> digits/2 vm-messages."""
    return [*say_number(count, language), singular if count == 1 else plural]


def vm_intro(
    new: int, old: int, urgent: int, language: str, temp_greeting_warning: bool = False
) -> list[str]:
    """What VoiceMailMain says after login: "you have two new messages and one old message".

    `new` is the INBOX count, `old` the Old count, `urgent` the Urgent count.
    `temp_greeting_warning`: tempgreetwarn is on and a temporary greeting exists
    (vm-tempgreetactive first). Spanish and French, like Asterisk, do not mention urgent
    messages.
    """
    out = ["vm-tempgreetactive"] if temp_greeting_warning else []
    rules = syntax(language)
    if rules == "es":
        return out + es.intro(new, old, urgent)
    if rules == "fr":
        return out + fr.intro(new, old, urgent)
    return out + _intro_en(new, old, urgent, language)


def _message_word(count: int) -> str:
    return "vm-message" if count == 1 else "vm-messages"


def _intro_en(new: int, old: int, urgent: int, language: str) -> list[str]:
    out = ["vm-youhave"]
    if urgent:
        out += [*say_number(urgent, language), "vm-Urgent"]
        out.append("vm-and" if old or new else _message_word(urgent))
    if new:
        out += [*say_number(new, language), "vm-INBOX"]
        out.append("vm-and" if old else _message_word(new))
    if old:
        out += [*say_number(old, language), "vm-Old", _message_word(old)]
    if not (urgent or new or old):
        out += ["vm-no", "vm-messages"]
    return out


def folder_name(box: str, language: str) -> list[str]:
    """vm_play_folder_name: `box` is the folder prompt (`vm-INBOX`, `vm-Old`, `vm-Family`...);
    "new messages" in English and French, "mensajes nuevos" (messages first) in Spanish,
    Italian and Portuguese."""
    if language[:2].lower() in ("es", "it", "pt"):
        return ["vm-messages", box]
    return [box, "vm-messages"]


def empty_folder(box: str, language: str) -> list[str]:
    """vm_browse_messages with no message in the folder (key 1 on an empty folder): "you have
    no new messages"; Spanish "vm-youhaveno vm-messages vm-INBOX"."""
    if syntax(language) == "es":
        return es.empty_folder(box)
    return ["vm-youhave", "vm-no", box, "vm-messages"]


def message_intro(index: int, last: int, urgent: bool, language: str) -> list[str]:
    """play_message's words before the envelope: vm-first (index 0) or vm-last (index ==
    last), vm-Urgent for an Urgent message, then vm-message and, between first and last, the
    message number (index + 1)."""
    out = []
    if index == 0:
        out.append("vm-first")
    elif index == last:
        out.append("vm-last")
    if urgent:
        out.append("vm-Urgent")
    out.append("vm-message")
    if index and index != last:
        out += say_number(index + 1, language)
    return out


def say_duration(seconds: int, language: str, min_minutes: int = 2) -> list[str]:
    """play_message_duration (sayduration=yes): whole minutes, said only when there are at
    least `min_minutes` (voicemail.conf saydurationm, default 2): vm-duration N vm-minutes.
    Asterisk says whole minutes only, and "minutes" even for one."""
    minutes = int(seconds / 60)  # C division truncates toward zero
    if minutes < min_minutes:
        return []
    return ["vm-duration", *say_number(minutes, language), "vm-minutes"]
