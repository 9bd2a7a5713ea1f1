"""French: ast_say_number_full_fr and ast_say_date_with_format_fr of Asterisk 20's say.c.

Seventy is "soixante dix" (`digits/60` `digits/10`), eighty "quatre-vingts" (`digits/80`),
`digits/et` joins a final one to 21..71, `digits/1F` is "une" (gender "f"). The hour is
followed by `digits/oclock` ("heure"). Files come from asterisk-core-sounds-fr-*.
"""

from __future__ import annotations

from .common import Moment
from .en import Number, Render

DEFAULT_FORMAT = "AdBY 'digits/at' IMp"
LETTERS = frozenset("AaBbhmdeYIlHkMPpQqRST")


def number(num: int, gender: str = "") -> list[str]:
    """`gender` "f" gives `digits/1F` for a one said on its own."""
    if num == 0:
        return ["digits/0"]
    out: list[str] = []
    if num < 0:
        out.append("digits/minus")
        num = -num
    if num >= 1_000_000_000:
        raise ValueError(f"number {num} is too big for Asterisk's French rules")
    feminine = gender[:1].lower() == "f"
    play_hundred = play_et = False
    while num or play_hundred or play_et:
        if play_hundred:
            out.append("digits/hundred")
            play_hundred = False
        elif play_et:
            out.append("digits/et")
            play_et = False
        elif num == 1:
            out.append("digits/1F" if feminine else "digits/1")
            num = 0
        elif num < 21:
            out.append(f"digits/{num}")
            num = 0
        elif num < 70:
            out.append(f"digits/{num // 10 * 10}")
            play_et = num % 10 == 1
            num %= 10
        elif num < 80:
            out.append("digits/60")
            play_et = num % 10 == 1
            num -= 60
        elif num < 100:
            out.append("digits/80")
            num -= 80
        elif num < 200:
            out.append("digits/hundred")
            num -= 100
        elif num < 1000:
            out.append(f"digits/{num // 100}")
            play_hundred = True
            num %= 100
        elif num < 2000:
            out.append("digits/thousand")
            num -= 1000
        elif num < 1_000_000:
            out += [*number(num // 1000, gender), "digits/thousand"]
            num %= 1000
        else:
            out += [*number(num // 1_000_000, gender), "digits/million"]
            num %= 1_000_000
    return out


def intro(new: int, old: int, urgent: int) -> list[str]:
    """vm_intro_fr: like English without the urgent messages."""
    out = ["vm-youhave"]
    if new:
        out += [*number(new), "vm-INBOX"]
        out.append("vm-and" if old else ("vm-message" if new == 1 else "vm-messages"))
    if old:
        out += [*number(old), "vm-Old", "vm-message" if old == 1 else "vm-messages"]
    if not (new or old or urgent):
        out += ["vm-no", "vm-messages"]
    return out


def _relative_day(m: Moment, render: Render, weekday: bool) -> list[str]:
    """Q: aujourd'hui / hier / the date; q: nothing for today / hier / a weekday / the date."""
    if m.beg_today < m.epoch:
        return [] if weekday else ["digits/today"]
    if m.beg_today - 86400 < m.epoch:
        return ["digits/yesterday"]
    if weekday and m.beg_today - 86400 * 6 < m.epoch:
        return render("A")
    return render("AdBY")


def item(letter: str, m: Moment, say_number: Number, render: Render) -> list[str]:
    """The prompts for one format letter (one of LETTERS)."""
    if letter in "Aa":
        return [f"digits/day-{m.wday}"]
    if letter in "Bbh":
        return [f"digits/mon-{m.mon}"]
    if letter == "m":
        return [f"digits/h-{m.mon + 1}"]
    if letter in "de":
        return ["digits/h-1"] if m.mday == 1 else say_number(m.mday)  # le premier
    if letter == "Y":
        if m.year >= 2000:
            rest = say_number(m.year - 2000) if m.year > 2000 else []
            return ["digits/2", "digits/thousand", *rest]
        if m.year <= 1900:
            return []
        return ["digits/thousand", "digits/9", "digits/hundred", *say_number(m.year - 1900)]
    if letter in "Il":
        hour = 12 if m.hour == 0 else m.hour - 12 if m.hour > 12 else m.hour
        return [f"digits/{hour}", "digits/oclock"]
    if letter in "Hk":
        return [*say_number(m.hour), "digits/oclock"]
    if letter == "M":
        return say_number(m.minute) if m.minute else []
    if letter in "Pp":
        return ["digits/p-m" if m.hour > 11 else "digits/a-m"]
    if letter in "Qq":
        return _relative_day(m, render, weekday=letter == "q")
    if letter == "R":
        return render("HM")
    if letter == "S":
        return [*say_number(m.second), "second"]
    if letter == "T":
        return render("HMS")
    raise AssertionError(f"not a French date letter: {letter!r}")
