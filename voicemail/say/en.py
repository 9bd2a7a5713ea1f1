"""English (and British English numbers): the rules of Asterisk 20's main/say.c.

Numbers: get_number_str_en ("one hundred one", no "and"), ast_say_number_full_en_GB ("one
hundred and one", with `vm-and`), ordinals ast_say_enumeration_full_en (used for days of the
month), and the date letters of ast_say_date_with_format_en. Other languages whose rules we do
not implement use these, as Asterisk does.
"""

from __future__ import annotations

from collections.abc import Callable

from .common import INT_MAX, Moment

Number = Callable[[int], list[str]]
Render = Callable[[str], list[str]]

DEFAULT_FORMAT = "ABdY 'digits/at' IMp"
LETTERS = frozenset("AaBbhmdeYIlHkMNPpQqRST")


def number(num: int) -> list[str]:
    """US English: 2024 -> 2 thousand 20 4, 115 -> 1 hundred 15."""
    if num == 0:
        return ["digits/0"]
    if num < 0:
        _check(-num, INT_MAX)
        return ["digits/minus", *_positive(-num)]
    _check(num, INT_MAX)
    return _positive(num)


def _check(num: int, limit: int) -> None:
    if num >= limit:
        raise ValueError(f"number {num} is too big for Asterisk's rules (limit {limit - 1})")


def _positive(num: int) -> list[str]:
    out: list[str] = []
    while num:
        if num < 20:
            out.append(f"digits/{num}")
            num = 0
        elif num < 100:
            out.append(f"digits/{num // 10 * 10}")
            num %= 10
        elif num < 1000:
            out += [f"digits/{num // 100}", "digits/hundred"]
            num %= 100
        elif num < 1_000_000:
            out += [*_positive(num // 1000), "digits/thousand"]
            num %= 1000
        elif num < 1_000_000_000:
            out += [*_positive(num // 1_000_000), "digits/million"]
            num %= 1_000_000
        else:
            out += [*_positive(num // 1_000_000_000), "digits/billion"]
            num %= 1_000_000_000
    return out


def number_gb(num: int) -> list[str]:
    """British English: like US English plus `vm-and` after hundreds and before a last part
    under one hundred (101 -> 1 hundred and 1, 1001 -> 1 thousand and 1)."""
    if num == 0:
        return ["digits/0"]
    prefix = []
    if num < 0:
        prefix, num = ["digits/minus"], -num
    _check(num, 1_000_000_000)
    return prefix + _positive_gb(num)


def _positive_gb(num: int) -> list[str]:
    out: list[str] = []
    while num:
        if num < 20:
            out.append(f"digits/{num}")
            num = 0
        elif num < 100:
            out.append(f"digits/{num // 10 * 10}")
            num %= 10
        elif num < 1000:
            out += [f"digits/{num // 100}", "digits/hundred"]
            num %= 100
            if num:
                out.append("vm-and")
        else:
            big, name = (1000, "thousand") if num < 1_000_000 else (1_000_000, "million")
            out += [*_positive_gb(num // big), f"digits/{name}"]
            num %= big
            if num and num < 100:
                out.append("vm-and")
    return out


def enumeration(num: int) -> list[str]:
    """English ordinals: 1 -> h-1, 21 -> 20 h-1, 30 -> h-30, 100 -> h-hundred."""
    out: list[str] = []
    if num < 0:
        out.append("digits/minus")
        num = -num
    said_thousands = False  # say.c's `t`: "one" is said before hundreds after a thousand
    while num:
        if num < 20:
            out.append(f"digits/h-{num}")
            num = 0
        elif num < 100:
            tens = num // 10 * 10
            num %= 10
            out.append(f"digits/{tens}" if num else f"digits/h-{tens}")
        elif num < 1000:
            hundreds, num = divmod(num, 100)
            if hundreds > 1 or said_thousands:
                out += number(hundreds)
            out.append("digits/hundred" if num else "digits/h-hundred")
        elif num < 1_000_000:
            thousands, num = divmod(num, 1000)
            if thousands > 1 or said_thousands:
                out += number(thousands)
            out.append("digits/thousand" if num else "digits/h-thousand")
            said_thousands = True
        elif num < 1_000_000_000:
            millions, num = divmod(num, 1_000_000)
            said_thousands = True
            out += [*number(millions), "digits/million" if num else "digits/h-million"]
        elif num < INT_MAX:
            billions, num = divmod(num, 1_000_000_000)
            said_thousands = True
            out += [*number(billions), "digits/billion" if num else "digits/h-billion"]
        else:
            out.append("digits/h-last")
            num = 0
    return out


def relative_day(m: Moment, render: Render) -> list[str]:
    """Q and q in English (identical in Asterisk 20): today, yesterday, tomorrow, a weekday
    within six days, else more of the date the further away it is."""
    t, beg = m.epoch, m.beg_today
    if beg + 15768000 < t:
        return render("BdY")
    if beg + 2628000 < t:
        return render("Bd")
    if beg + 86400 * 6 < t:
        return render("ABd")
    if beg + 172800 < t:
        return render("A")
    if beg + 86400 < t:
        return ["digits/tomorrow"]
    if beg < t:
        return ["digits/today"]
    if beg - 86400 < t:
        return ["digits/yesterday"]
    if beg - 86400 * 6 < t:
        return render("A")
    if beg - 2628000 < t:
        return render("ABd")
    if beg - 15768000 < t:
        return render("Bd")
    return render("BdY")


def item(letter: str, m: Moment, say_number: Number, render: Render) -> list[str]:
    """The prompts for one format letter (one of LETTERS)."""
    if letter in "Aa":
        return [f"digits/day-{m.wday}"]
    if letter in "Bbh":
        return [f"digits/mon-{m.mon}"]
    if letter == "m":
        return enumeration(m.mon + 1)
    if letter in "de":
        return enumeration(m.mday)
    if letter == "Y":
        if m.year >= 2000:
            return say_number(m.year)
        if m.year <= 1900:
            return []  # Asterisk is silent on years up to 1900
        short = m.year - 1900
        return ["digits/19", *(["digits/oh"] if short <= 9 else []), *say_number(short)]
    if letter in "Il":
        hour = 12 if m.hour == 0 else m.hour - 12 if m.hour > 12 else m.hour
        return [f"digits/{hour}"]
    if letter in "Hk":
        out = []
        if (letter == "H" and m.hour < 10) or (letter == "k" and m.hour == 0):
            out.append("digits/oh")
        if m.hour:
            remaining = m.hour
            if remaining > 20:
                out.append("digits/20")
                remaining -= 20
            out.append(f"digits/{remaining}")
        return out
    if letter in "MN":
        if m.minute == 0:
            return ["digits/oclock" if letter == "M" else "digits/hundred"]
        if m.minute < 10:
            return ["digits/oh", f"digits/{m.minute}"]
        return say_number(m.minute)
    if letter in "Pp":
        return ["digits/p-m" if m.hour > 11 else "digits/a-m"]
    if letter in "Qq":
        return relative_day(m, render)
    if letter == "R":
        return render("HM")
    if letter == "S":
        if m.second == 0:
            return ["digits/0"]
        if m.second < 10:
            return ["digits/oh", f"digits/{m.second}"]
        return say_number(m.second)
    if letter == "T":
        return render("HMS")
    raise AssertionError(f"not an English date letter: {letter!r}")
