"""Pieces every language shares: the C int range, digit strings, letters, the broken-down time.

Asterisk's say functions work on a C `int` and on `struct ast_tm`; `Moment` is that struct for
one message time in one zone, plus the start of "today" computed the way say.c does it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

INT_MAX = 2**31 - 1

# ast_get_digit_str: anything else in the string is skipped.
_DIGIT_SYMBOLS = {"*": "digits/star", "#": "digits/pound", "-": "digits/minus"}

# ast_get_character_str (SayAlpha) symbols; digits and letters are handled in say_alpha.
_ALPHA_SYMBOLS = {
    "*": "digits/star",
    "#": "digits/pound",
    "!": "letters/exclaimation-point",  # sic, the core sounds' spelling
    "@": "letters/at",
    "$": "letters/dollar",
    "-": "letters/dash",
    ".": "letters/dot",
    "=": "letters/equals",
    "+": "letters/plus",
    "/": "letters/slash",
    " ": "letters/space",
}


def check_int(num: int) -> None:
    """Asterisk says C ints; INT_MIN and beyond have no sensible reading, so refuse them."""
    if not -INT_MAX <= num <= INT_MAX:
        raise ValueError(f"number {num} is outside the range Asterisk can say")


def say_digits(text: str) -> list[str]:
    """SayDigits: one prompt per digit, `*`, `#` and `-`; other characters are skipped."""
    names: list[str] = []
    for char in text:
        if "0" <= char <= "9":
            names.append(f"digits/{char}")
        elif char in _DIGIT_SYMBOLS:
            names.append(_DIGIT_SYMBOLS[char])
    return names


def say_alpha(text: str) -> list[str]:
    """SayAlpha without case announcements: letters, digits and the named symbols.

    Asterisk also tries `letters/<char>` and `letters/ascii<code>` for other characters when
    such a file exists; a pure function cannot look, so those characters are skipped.
    """
    names: list[str] = []
    for char in text:
        if "0" <= char <= "9":
            names.append(f"digits/{char}")
        elif char in _ALPHA_SYMBOLS:
            names.append(_ALPHA_SYMBOLS[char])
        elif char.isascii() and char.isalpha():
            names.append(f"letters/{char.lower()}")
    return names


@dataclass(frozen=True)
class Moment:
    """`struct ast_tm` of a message time in the zone it is said in (months and weekdays 0-based,
    weekday 0 = Sunday), with `beg_today`: the epoch second at which "today" began there."""

    epoch: int
    year: int
    mon: int
    mday: int
    hour: int
    minute: int
    second: int
    wday: int
    beg_today: int


def _broken_down(epoch: int, tz: str) -> time.struct_time:
    """Local time of `epoch` in zone `tz`; an empty zone is the server's own, as in Asterisk."""
    if not tz:
        return time.localtime(epoch)
    return datetime.fromtimestamp(epoch, zone(tz)).timetuple()


def zone(tz: str) -> ZoneInfo:
    """The zoneinfo zone named `tz`, or ValueError naming it."""
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {tz!r}") from exc


def moment(epoch: int, tz: str, now: int) -> Moment:
    """Break `epoch` down in `tz`; `now` gives the start of today as say.c computes it
    (now minus the hours, minutes and seconds of now's local time, so a DST change day is
    off by the shift, exactly like Asterisk)."""
    tm = _broken_down(epoch, tz)
    tm_now = _broken_down(now, tz)
    beg_today = now - (tm_now.tm_hour * 3600 + tm_now.tm_min * 60 + tm_now.tm_sec)
    return Moment(
        epoch=epoch,
        year=tm.tm_year,
        mon=tm.tm_mon - 1,
        mday=tm.tm_mday,
        hour=tm.tm_hour,
        minute=tm.tm_min,
        second=min(tm.tm_sec, 59),
        wday=(tm.tm_wday + 1) % 7,
        beg_today=beg_today,
    )
