"""Saying a time with an Asterisk date format, and the message envelope's date.

A format is read like ast_say_date_with_format: `'name'` plays the prompt `name`, a letter says
part of the time (A a B b h m d e Y I l H k M N P p Q q R S T, language-dependent), blanks are
skipped. Asterisk logs and skips a letter it does not know; `check_date_format` finds those so
that the configuration can be refused at load time instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

from . import en, es, fr
from .common import Moment, moment, zone
from .language import say_number, syntax

_MODULES: dict[str, ModuleType] = {"en": en, "en_GB": en, "es": es, "fr": fr}

# play_message_datetime's format when the mailbox has no zone (the English one is also used
# for Spanish and French, which have no entry of their own in Asterisk 20).
ENVELOPE_FORMAT = "'vm-received' q 'digits/at' IMp"


@dataclass(frozen=True)
class Zone:
    """One [zonemessages] entry: `eastern=America/New_York|'vm-received' Q 'digits/at' IMp`."""

    name: str
    timezone: str
    msg_format: str


def parse_zone(name: str, value: str, language: str = "en") -> Zone:
    """Read a [zonemessages] value; ValueError for what Asterisk would skip or misread.

    Asterisk splits at the first `|` or `,` and warns "Invalid timezone definition" when there
    is none; an unknown zone or format letter would be said wrongly at every envelope.
    """
    cut = min((i for i in (value.find("|"), value.find(",")) if i >= 0), default=-1)
    if cut < 0:
        raise ValueError(f"zone {name!r}: expected timezone|format, got {value!r}")
    timezone, msg_format = value[:cut].strip(), value[cut + 1 :]
    zone(timezone)
    check_date_format(msg_format, language)
    return Zone(name, timezone, msg_format)


def check_date_format(fmt: str, language: str = "en") -> None:
    """Raise ValueError naming the first letter `language`'s rules would skip, or an
    unterminated quote."""
    letters = _MODULES[syntax(language)].LETTERS
    for position, token in _tokens(fmt):
        if token.startswith("'"):
            if not token.endswith("'") or len(token) < 2:
                raise ValueError(f"date format {fmt!r}: quote at {position} is not closed")
        elif token not in letters:
            raise ValueError(
                f"date format {fmt!r}: {token!r} at {position} is not a date letter"
                f" (known: {''.join(sorted(letters))} and 'prompt')"
            )


def say_datetime(epoch: int, fmt: str | None, tz: str, language: str, now: int) -> list[str]:
    """The prompts Asterisk's ast_say_date_with_format plays for `epoch` in zone `tz`.

    `fmt` None is the language's default format. `tz` is a zoneinfo name; "" is the server's
    own zone (Asterisk's NULL zone). `now` (epoch seconds) decides today / yesterday for Q, q.
    """
    module = _MODULES[syntax(language)]
    when = moment(epoch, tz, now)

    def number(num: int) -> list[str]:
        return say_number(num, language)  # ast_say_number: the language's number rules

    return _render(module.DEFAULT_FORMAT if fmt is None else fmt, when, module, number)


def envelope_datetime(epoch: int, language: str, now: int, zone_: Zone | None = None) -> list[str]:
    """play_message_datetime: the zone's format in its time zone, else the default envelope
    format (`'vm-received' q 'digits/at' IMp`) in the server's zone."""
    if zone_ is not None:
        return say_datetime(epoch, zone_.msg_format, zone_.timezone, language, now)
    return say_datetime(epoch, ENVELOPE_FORMAT, "", language, now)


def _render(
    fmt: str, when: Moment, module: ModuleType, say_number: Callable[[int], list[str]]
) -> list[str]:
    out: list[str] = []
    for _, token in _tokens(fmt):
        if token.startswith("'"):
            name = token.strip("'")
            if name:
                out.append(name)
        elif token in module.LETTERS:
            out += module.item(
                token, when, say_number, lambda part: _render(part, when, module, say_number)
            )
        # else: Asterisk warns "Unknown character in datetime format" and goes on
    return out


def _tokens(fmt: str) -> list[tuple[int, str]]:
    """(position, token) for each quoted name (quotes kept) and each non-blank character."""
    tokens: list[tuple[int, str]] = []
    i = 0
    while i < len(fmt):
        char = fmt[i]
        if char == "'":
            end = fmt.find("'", i + 1)
            stop = len(fmt) if end < 0 else end + 1
            tokens.append((i, fmt[i:stop]))
            i = stop
            continue
        if char not in " \t":
            tokens.append((i, char))
        i += 1
    return tokens
