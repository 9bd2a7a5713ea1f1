"""Dates in mail: the mailbox's time zone and an strftime in the mailbox's `locale=`.

Asterisk's ast_strftime_locale switches the thread's locale for one call. Python only has the
process-wide setlocale, so the switch happens under a lock and is undone at once; LC_CTYPE is
switched with LC_TIME so that month names in, say, ISO-8859-1 locales decode correctly.
"""

from __future__ import annotations

import locale as _locale
import threading
from datetime import datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_LOCK = threading.Lock()


def zone(name: str) -> tzinfo | None:
    """An Olson zone by name; None for "" (the server's local time). ValueError if unknown."""
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not a known time zone (like Europe/Paris)") from None


def localtime(timestamp: float, tz: tzinfo | None) -> datetime:
    """The aware datetime of a Unix time in `tz` (None: the server's local zone)."""
    moment = datetime.fromtimestamp(timestamp, tz)
    return moment if tz is not None else moment.astimezone()


def check_locale(name: str) -> str | None:
    """The problem with `locale=name` on this system, or None ("" = the server's locale)."""
    if not name:
        return None
    with _LOCK:
        saved = _locale.setlocale(_locale.LC_TIME)
        try:
            _locale.setlocale(_locale.LC_TIME, name)
        except _locale.Error:
            return f"{name!r} is not installed on this system (see `locale -a`)"
        finally:
            _locale.setlocale(_locale.LC_TIME, saved)
    return None


def strftime(fmt: str, moment: datetime, locale_name: str = "") -> str:
    """`moment.strftime(fmt)` with day and month names from `locale_name` ("" = as is)."""
    if not locale_name:
        return moment.strftime(fmt)
    with _LOCK:
        saved_time = _locale.setlocale(_locale.LC_TIME)
        saved_ctype = _locale.setlocale(_locale.LC_CTYPE)
        try:
            try:
                _locale.setlocale(_locale.LC_TIME, locale_name)
            except _locale.Error:  # removed since the configuration was loaded
                return moment.strftime(fmt)
            try:
                _locale.setlocale(_locale.LC_CTYPE, locale_name)
            except _locale.Error:
                pass
            return moment.strftime(fmt)
        finally:
            _locale.setlocale(_locale.LC_CTYPE, saved_ctype)
            _locale.setlocale(_locale.LC_TIME, saved_time)
