"""Turning what the core wants said into prompt file names.

The `Sayer` protocol is the seam for the project's say engine (say_number, vm_intro,
say_datetime): `EnglishSayer` is a small stand-in with Asterisk's English rules.
"""

from __future__ import annotations

import time
from typing import Protocol

from .events import CallerId, Duration, Envelope, Intro, SayItem, SayNumber


class Sayer(Protocol):
    def expand(self, item: SayItem, language: str) -> list[str]:
        """Prompt names for one item (a plain string is already a prompt name)."""
        ...


def english_number(n: int) -> list[str]:
    """digits/N for 0..20, tens, hundred, thousand, million (ast_say_number_full_en)."""
    if n < 0:
        return ["digits/minus", *english_number(-n)]
    if n <= 20:
        return [f"digits/{n}"]
    if n < 100:
        tens, rest = divmod(n, 10)
        return [f"digits/{tens * 10}"] + ([f"digits/{rest}"] if rest else [])
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return [f"digits/{hundreds}", "digits/hundred"] + (english_number(rest) if rest else [])
    if n < 1_000_000:
        thousands, rest = divmod(n, 1000)
        return (
            english_number(thousands) + ["digits/thousand"] + (english_number(rest) if rest else [])
        )
    millions, rest = divmod(n, 1_000_000)
    return english_number(millions) + ["digits/million"] + (english_number(rest) if rest else [])


def _plural(n: int) -> str:
    return "vm-message" if n == 1 else "vm-messages"


def english_intro(new: int, old: int, urgent: int) -> list[str]:
    """vm_intro_en."""
    out = ["vm-youhave"]
    if urgent:
        out += english_number(urgent) + ["vm-Urgent"]
        out.append("vm-and" if old or new else _plural(urgent))
    if new:
        out += english_number(new) + ["vm-INBOX"]
        out.append("vm-and" if old else _plural(new))
    if old:
        out += english_number(old) + ["vm-Old", _plural(old)]
    if not (urgent or new or old):
        out += ["vm-no", "vm-messages"]
    return out


def english_received(origtime: int, now: float | None = None) -> list[str]:
    """'vm-received' q 'digits/at' IMp in the server's local time."""
    when = time.localtime(origtime)
    today = time.localtime(now if now is not None else time.time())
    out = ["vm-received"]
    days = (
        time.mktime((today.tm_year, today.tm_mon, today.tm_mday, 0, 0, 0, 0, 0, -1))
        - time.mktime((when.tm_year, when.tm_mon, when.tm_mday, 0, 0, 0, 0, 0, -1))
    ) / 86400
    if round(days) == 0:
        out.append("digits/today")
    elif round(days) == 1:
        out.append("digits/yesterday")
    elif 1 < days < 7:
        out.append(f"digits/day-{(when.tm_wday + 1) % 7}")
    else:
        out += [
            f"digits/day-{(when.tm_wday + 1) % 7}",
            f"digits/mon-{when.tm_mon - 1}",
            f"digits/h-{when.tm_mday}",
        ]
    out.append("digits/at")
    hour = when.tm_hour % 12 or 12
    out += english_number(hour)
    if when.tm_min:
        if when.tm_min < 10:
            out.append("digits/oh")
        out += english_number(when.tm_min)
    out.append("digits/p-m" if when.tm_hour >= 12 else "digits/a-m")
    return out


def _caller_number(callerid: str) -> str:
    if "<" in callerid and callerid.endswith(">"):
        return callerid[callerid.rindex("<") + 1 : -1]
    return callerid if callerid.replace("+", "").isdigit() else ""


class EnglishSayer:
    """The default: English only, whatever the language (the say engine replaces it)."""

    def expand(self, item: SayItem, language: str) -> list[str]:
        if isinstance(item, str):
            return [item]
        if isinstance(item, SayNumber):
            return english_number(item.number)
        if isinstance(item, Intro):
            return english_intro(item.new, item.old, item.urgent)
        if isinstance(item, Envelope):
            return english_received(item.origtime)
        if isinstance(item, CallerId):
            number = _caller_number(item.callerid)
            if not number:
                return ["vm-unknown-caller"]
            return ["vm-from-phonenumber", *(f"digits/{d}" for d in number if d.isdigit())]
        if isinstance(item, Duration):
            return ["vm-duration", *english_number(item.minutes), "vm-minutes"]
        raise TypeError(f"nothing to say for {item!r}")
