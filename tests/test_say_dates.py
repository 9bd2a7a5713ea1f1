"""The envelope date: Asterisk 20's ast_say_date_with_format (en, es, fr) and the zones of
voicemail.conf [zonemessages], in more than one time zone."""

from __future__ import annotations

import time
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from voicemail.say import (
    ENVELOPE_FORMAT,
    Zone,
    check_date_format,
    envelope_datetime,
    parse_zone,
    say_datetime,
)

ZONES = ["America/New_York", "Asia/Tokyo"]


def at(tz: str, *fields: int) -> int:
    """Epoch seconds of a wall-clock time in zone tz."""
    return int(datetime(*fields, tzinfo=ZoneInfo(tz)).timestamp())


def d(*names: object) -> list[str]:
    return [f"digits/{name}" for name in names]


# "now" is Friday 15 March 2024, 14:30 local time in whichever zone the test uses.
NOW = (2024, 3, 15, 14, 30)

ENGLISH_ENVELOPES = [
    ("today", (2024, 3, 15, 10, 5), d("today", "at", 10, "oh", 5, "a-m")),
    ("yesterday", (2024, 3, 14, 23, 59), d("yesterday", "at", 11, 50, 9, "p-m")),
    ("3 days ago", (2024, 3, 12, 0, 0), d("day-2", "at", 12, "oclock", "a-m")),
    ("10 days ago", (2024, 3, 5, 12, 30), d("day-2", "mon-2", "h-5", "at", 12, 30, "p-m")),
    ("3 months ago", (2023, 12, 1, 13, 15), d("mon-11", "h-1", "at", 1, 15, "p-m")),
    (
        "last year",
        (2023, 6, 21, 8, 7),
        d("mon-5", 20, "h-1", 2, "thousand", 20, 3, "at", 8, "oh", 7, "a-m"),
    ),
    ("tomorrow", (2024, 3, 16, 9, 0), d("tomorrow", "at", 9, "oclock", "a-m")),
]


@pytest.mark.parametrize("tz", ZONES)
@pytest.mark.parametrize(("case", "when", "expected"), ENGLISH_ENVELOPES)
def test_english_envelope_in_two_zones(
    tz: str, case: str, when: tuple[int, ...], expected: list[str]
) -> None:
    result = say_datetime(at(tz, *when), ENVELOPE_FORMAT, tz, "en", at(tz, *NOW))
    assert result == ["vm-received", *expected], case


def test_same_message_is_today_in_tokyo_and_yesterday_in_new_york() -> None:
    now = at("UTC", 2024, 3, 15, 5, 30)  # 14:30 in Tokyo, 01:30 in New York
    message = at("UTC", 2024, 3, 15, 0, 30)  # 09:30 in Tokyo, 20:30 the day before in New York
    tokyo = say_datetime(message, ENVELOPE_FORMAT, "Asia/Tokyo", "en", now)
    new_york = say_datetime(message, ENVELOPE_FORMAT, "America/New_York", "en", now)
    assert tokyo == ["vm-received", *d("today", "at", 9, 30, "a-m")]
    assert new_york == ["vm-received", *d("yesterday", "at", 8, 30, "p-m")]


def test_midnight_exactly_is_yesterday_as_in_asterisk() -> None:
    tz = "Europe/Copenhagen"
    result = say_datetime(at(tz, 2024, 3, 15, 0, 0), "q", tz, "en", at(tz, *NOW))
    assert result == d("yesterday")  # say.c compares beg_today < t


def test_years_of_the_last_century() -> None:
    tz = "UTC"
    now = at(tz, *NOW)
    assert say_datetime(at(tz, 1999, 1, 2), "Y", tz, "en", now) == d(19, 90, 9)
    assert say_datetime(at(tz, 1905, 1, 2), "Y", tz, "en", now) == d(19, "oh", 5)
    assert say_datetime(at(tz, 2000, 1, 2), "Y", tz, "en", now) == d(2, "thousand")


def test_24_hour_letters_and_seconds() -> None:
    tz = "UTC"
    now = at(tz, *NOW)
    evening = at(tz, 2024, 3, 15, 23, 4, 9)
    assert say_datetime(evening, "H", tz, "en", now) == d(20, 3)
    assert say_datetime(evening, "k N S", tz, "en", now) == d(20, 3, "oh", 4, "oh", 9)
    early = at(tz, 2024, 3, 15, 0, 0, 0)
    assert say_datetime(early, "H", tz, "en", now) == d("oh")
    assert say_datetime(early, "kNS", tz, "en", now) == d("oh", "hundred", 0)
    assert say_datetime(at(tz, 2024, 3, 15, 7, 45), "HM", tz, "en", now) == d("oh", 7, 40, 5)
    assert say_datetime(at(tz, 2024, 3, 15, 7, 45), "R", tz, "en", now) == d("oh", 7, 40, 5)
    assert say_datetime(at(tz, 2024, 3, 15, 7, 45), "m e", tz, "en", now) == d("h-3", "h-15")


SAMPLE_ZONES = {
    "eastern": "America/New_York|'vm-received' Q 'digits/at' IMp",
    "central24": "America/Chicago|'vm-received' q 'digits/at' H N 'hours'",
    "military": "Zulu|'vm-received' q 'digits/at' H N 'hours' 'phonetic/z_p'",
    "european": "Europe/Copenhagen|'vm-received' a d b 'digits/at' HM",
}


def test_sample_zonemessages_parse_and_speak() -> None:
    zones = {name: parse_zone(name, value) for name, value in SAMPLE_ZONES.items()}
    assert zones["central24"] == Zone(
        "central24", "America/Chicago", "'vm-received' q 'digits/at' H N 'hours'"
    )
    now = at("UTC", 2024, 3, 15, 18, 0)

    chicago_8am = at("America/Chicago", 2024, 3, 15, 8, 0)
    assert envelope_datetime(chicago_8am, "en", now, zones["central24"]) == [
        "vm-received",
        *d("today", "at", "oh", 8, "hundred"),
        "hours",
    ]
    zulu = at("UTC", 2024, 3, 15, 13, 20)
    assert envelope_datetime(zulu, "en", now, zones["military"]) == [
        "vm-received",
        *d("today", "at", 13, 20),
        "hours",
        "phonetic/z_p",
    ]
    copenhagen = at("Europe/Copenhagen", 2024, 3, 12, 9, 5)
    assert envelope_datetime(copenhagen, "en", now, zones["european"]) == [
        "vm-received",
        *d("day-2", "h-12", "mon-2", "at", "oh", 9, "oh", 5),
    ]
    new_york = at("America/New_York", 2024, 3, 14, 19, 0)
    assert envelope_datetime(new_york, "en", now, zones["eastern"]) == [
        "vm-received",
        *d("yesterday", "at", 7, "oclock", "p-m"),
    ]


def test_envelope_without_zone_uses_the_server_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    try:
        tz = "Asia/Tokyo"
        result = envelope_datetime(at(tz, 2024, 3, 15, 10, 5), "en", at(tz, *NOW))
    finally:
        monkeypatch.undo()
        time.tzset()
    assert result == ["vm-received", *d("today", "at", 10, "oh", 5, "a-m")]


SPANISH_ENVELOPES = [
    ("today", (2024, 3, 15, 13, 5), d("today", "at", "1F", 5, "afternoon")),
    ("yesterday", (2024, 3, 14, 9, 0), d("yesterday", "at", 9, 0, "a-m")),
    ("3 days ago", (2024, 3, 12, 20, 30), d("day-2", "at", 8, 30, "p-m")),
    (
        "last year",
        (2023, 6, 1, 0, 21),
        d("es-el", "day-4", 1, "es-de", "mon-5", "es-de", 2, "thousand", 23, "at", 12, 21),
    ),
]


@pytest.mark.parametrize("tz", ZONES)
@pytest.mark.parametrize(("case", "when", "expected"), SPANISH_ENVELOPES)
def test_spanish_envelope(tz: str, case: str, when: tuple[int, ...], expected: list[str]) -> None:
    result = envelope_datetime(at(tz, *when), "es", at(tz, *NOW), Zone("z", tz, ENVELOPE_FORMAT))
    assert result == ["vm-received", *expected], case


FRENCH_ENVELOPES = [
    ("today", (2024, 3, 15, 14, 0), d("at", 2, "oclock", "p-m")),  # q says nothing for today
    ("yesterday", (2024, 3, 14, 9, 21), d("yesterday", "at", 9, "oclock", 20, "et", 1, "a-m")),
    ("3 days ago", (2024, 3, 12, 0, 5), d("day-2", "at", 12, "oclock", 5, "a-m")),
    (
        "last year",
        (2023, 6, 1, 0, 0),
        d("day-4", "h-1", "mon-5", 2, "thousand", 20, 3, "at", 12, "oclock", "a-m"),
    ),
    ("a 21st", (2023, 6, 21, 0, 0), d("day-3", 20, "et", 1, "mon-5", 2, "thousand", 20, 3)),
]


@pytest.mark.parametrize("tz", ZONES)
@pytest.mark.parametrize(("case", "when", "expected"), FRENCH_ENVELOPES)
def test_french_envelope(tz: str, case: str, when: tuple[int, ...], expected: list[str]) -> None:
    fmt = "'vm-received' q" if case == "a 21st" else ENVELOPE_FORMAT
    result = say_datetime(at(tz, *when), fmt, tz, "fr", at(tz, *NOW))
    assert result == ["vm-received", *expected], case


def test_french_and_spanish_capital_q_says_today() -> None:
    tz = "Europe/Paris"
    today = at(tz, 2024, 3, 15, 9, 0)
    assert say_datetime(today, "Q", tz, "fr", at(tz, *NOW)) == d("today")
    assert say_datetime(today, "Q", tz, "es", at(tz, *NOW)) == d("today")
    week = at(tz, 2024, 3, 12, 9, 0)
    assert say_datetime(week, "Q", tz, "fr", at(tz, *NOW)) == d(
        "day-2", 12, "mon-2", 2, "thousand", 20, 4
    )


def test_language_default_formats() -> None:
    tz = "UTC"
    when, now = at(tz, 2024, 3, 12, 15, 0), at(tz, *NOW)
    assert say_datetime(when, None, tz, "en", now) == d(
        "day-2", "mon-2", "h-12", 2, "thousand", 20, 4, "at", 3, "oclock", "p-m"
    )
    assert say_datetime(when, None, tz, "fr", now) == d(
        "day-2", 12, "mon-2", 2, "thousand", 20, 4, "at", 3, "oclock", "p-m"
    )
    assert say_datetime(when, "", tz, "en", now) == []


def test_unknown_letters_are_skipped_at_run_time_and_refused_by_the_check() -> None:
    tz = "UTC"
    when = at(tz, 2024, 3, 15, 9, 0)
    assert say_datetime(when, "'vm-received' X N", tz, "es", when) == ["vm-received"]
    with pytest.raises(ValueError, match="'X' at 14"):
        check_date_format("'vm-received' X")
    with pytest.raises(ValueError, match="'N' at 0"):
        check_date_format("N", "es")  # Spanish and French have no N
    with pytest.raises(ValueError, match="not closed"):
        check_date_format("'vm-received")
    check_date_format(ENVELOPE_FORMAT, "fr")


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("America/New_York 'vm-received' Q", "expected timezone|format"),
        ("Mars/Olympus|'vm-received' Q", "unknown time zone"),
        ("UTC|'vm-received' Q 'digits/at' IMpz", "'z' at"),
    ],
)
def test_bad_zone_definitions_are_refused(value: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_zone("bad", value)


def test_zone_separator_may_be_a_comma() -> None:
    assert parse_zone("z", "Europe/Paris,'vm-received' q").timezone == "Europe/Paris"
