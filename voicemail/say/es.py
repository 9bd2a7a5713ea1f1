"""Spanish: ast_say_number_full_es and ast_say_date_with_format_es of Asterisk 20's say.c.

The Spanish core sounds (asterisk-core-sounds-es-*) hold the extra files these rules use:
`digits/1F` / `digits/1M` (una / un), `digits/21`..`29`, `digits/100-and` (ciento),
`digits/200`..`900`, `digits/and` (y), `digits/millions`, `digits/es-el`, `digits/es-de`,
`digits/afternoon`, and the voicemail prompts `vm-youhaveno`, `vm-INBOXs`, `vm-Olds`.
"""

from __future__ import annotations

from .common import Moment
from .en import Number, Render

FULL_DATE = "'digits/es-el' Ad 'digits/es-de' B 'digits/es-de' Y"
DEFAULT_FORMAT = f"{FULL_DATE} 'digits/at' IMp"
LETTERS = frozenset("AaBbhmdeYIlHkMPpQqRST")
_LIMIT = 2147483640


def number(num: int, gender: str = "") -> list[str]:
    """`gender` "f" gives `digits/1F` for a final one, "m" gives `digits/1M`."""
    if num == 0:
        return ["digits/0"]
    out: list[str] = []
    if num < 0:
        out.append("digits/minus")
        num = -num
    if num >= _LIMIT:
        raise ValueError(f"number {num} is too big for Asterisk's Spanish rules")
    mf = gender[:1].lower()
    play_and = False
    while num:
        if play_and:
            out.append("digits/and")
            play_and = False
        elif num == 1:
            out.append({"f": "digits/1F", "m": "digits/1M"}.get(mf, "digits/1"))
            num = 0
        elif num < 31:
            out.append(f"digits/{num}")
            num = 0
        elif num < 100:
            out.append(f"digits/{num // 10 * 10}")
            num %= 10
            play_and = bool(num)
        elif num == 100:
            out.append("digits/100")
            num = 0
        elif num < 200:
            out.append("digits/100-and")
            num -= 100
        elif num < 1000:
            out.append(f"digits/{num // 100 * 100}")
            num %= 100
        elif num < 2000:
            out.append("digits/thousand")
            num %= 1000
        elif num < 1_000_000:
            out += [*number(num // 1000, gender), "digits/thousand"]
            num %= 1000
        else:
            millions = num // 1_000_000
            if millions == 1:
                out += [*number(1, "M"), "digits/million"]
            else:
                out += [*number(millions, gender), "digits/millions"]
            num %= 1_000_000
    return out


def intro(new: int, old: int, urgent: int) -> list[str]:
    """vm_intro_es: urgent messages are not counted; "no messages" is vm-youhaveno."""
    if not (new or old or urgent):
        return ["vm-youhaveno", "vm-messages"]
    out = ["vm-youhave"]
    if new:
        if new == 1:
            out += ["digits/1M", "vm-message", "vm-INBOXs"]
        else:
            out += [*number(new), "vm-messages", "vm-INBOX"]
        if old:
            out.append("vm-and")
    if old:
        if old == 1:
            out += ["digits/1M", "vm-message", "vm-Olds"]
        else:
            out += [*number(old), "vm-messages", "vm-Old"]
    return out


def empty_folder(box: str) -> list[str]:
    """vm_browse_messages_es on an empty folder."""
    return ["vm-youhaveno", "vm-messages", box]


def _relative_day(m: Moment, render: Render, weekday: bool) -> list[str]:
    """Q (weekday=False) and q: today, yesterday, [a weekday within six days,] else the date."""
    if m.beg_today < m.epoch:
        return ["digits/today"]
    if m.beg_today - 86400 < m.epoch:
        return ["digits/yesterday"]
    if weekday and m.beg_today - 86400 * 6 < m.epoch:
        return render("A")
    return render(FULL_DATE)


def item(letter: str, m: Moment, say_number: Number, render: Render) -> list[str]:
    """The prompts for one format letter (one of LETTERS)."""
    if letter in "Aa":
        return [f"digits/day-{m.wday}"]
    if letter in "Bbh":
        return [f"digits/mon-{m.mon}"]
    if letter == "m":
        return [f"digits/h-{m.mon + 1}"]
    if letter in "de":
        return say_number(m.mday)
    if letter == "Y":
        return say_number(m.year)
    if letter in "Il":
        if m.hour == 0:
            return ["digits/12"]
        if m.hour in (1, 13):
            return ["digits/1F"]  # la una
        return [f"digits/{m.hour - 12 if m.hour > 12 else m.hour}"]
    if letter in "Hk":
        return say_number(m.hour)
    if letter == "M":
        return say_number(m.minute)
    if letter in "Pp":
        if m.hour > 18:
            return ["digits/p-m"]
        if m.hour > 12:
            return ["digits/afternoon"]
        return ["digits/a-m"] if m.hour else []
    if letter in "Qq":
        return _relative_day(m, render, weekday=letter == "q")
    if letter == "R":
        return render("H 'digits/y' M")
    if letter == "S":
        sec = m.second
        if sec == 0:
            return ["digits/0"]
        if sec < 10:
            return ["digits/oh", f"digits/{sec}"]
        if sec < 21 or sec % 10 == 0:
            return [f"digits/{sec}"]
        return [f"digits/{sec // 10 * 10}", f"digits/{sec % 10}"]
    if letter == "T":
        return render("HMS")
    raise AssertionError(f"not a Spanish date letter: {letter!r}")
