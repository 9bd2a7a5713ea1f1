"""Numbers, ordinals, digits and letters as Asterisk 20's say.c says them (en, en_GB, es, fr)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicemail.say import say_alpha, say_digits, say_enumeration, say_number, syntax


def d(*names: object) -> list[str]:
    """digits/<name> for each name, to keep the expected lists readable."""
    return [f"digits/{name}" for name in names]


EN = {
    0: d(0),
    1: d(1),
    7: d(7),
    13: d(13),
    20: d(20),
    21: d(20, 1),
    99: d(90, 9),
    100: d(1, "hundred"),
    101: d(1, "hundred", 1),
    115: d(1, "hundred", 15),
    999: d(9, "hundred", 90, 9),
    1000: d(1, "thousand"),
    1001: d(1, "thousand", 1),
    2024: d(2, "thousand", 20, 4),
    12345: d(12, "thousand", 3, "hundred", 40, 5),
    1000000: d(1, "million"),
    1234567: d(1, "million", 2, "hundred", 30, 4, "thousand", 5, "hundred", 60, 7),
    2000000000: d(2, "billion"),
    -5: d("minus", 5),
}


@pytest.mark.parametrize(("num", "expected"), EN.items())
def test_english_numbers(num: int, expected: list[str]) -> None:
    assert say_number(num, "en") == expected
    assert say_number(num, "en_US") == expected


GB = {
    0: d(0),
    21: d(20, 1),
    100: d(1, "hundred"),
    101: [*d(1, "hundred"), "vm-and", *d(1)],
    115: [*d(1, "hundred"), "vm-and", *d(15)],
    999: [*d(9, "hundred"), "vm-and", *d(90, 9)],
    1000: d(1, "thousand"),
    1001: [*d(1, "thousand"), "vm-and", *d(1)],
    1100: d(1, "thousand", 1, "hundred"),
    2024: [*d(2, "thousand"), "vm-and", *d(20, 4)],
    1000000: d(1, "million"),
    1000007: [*d(1, "million"), "vm-and", *d(7)],
}


@pytest.mark.parametrize(("num", "expected"), GB.items())
def test_british_numbers_say_and(num: int, expected: list[str]) -> None:
    assert say_number(num, "en_GB") == expected


ES = {
    0: d(0),
    1: d(1),
    7: d(7),
    13: d(13),
    20: d(20),
    21: d(21),
    29: d(29),
    30: d(30),
    31: d(30, "and", 1),
    99: d(90, "and", 9),
    100: d(100),
    101: d("100-and", 1),
    115: d("100-and", 15),
    200: d(200),
    999: d(900, 90, "and", 9),
    1000: d("thousand"),
    1001: d("thousand", 1),
    2024: d(2, "thousand", 24),
    21000: d(21, "thousand"),
    1000000: d("1M", "million"),
    3000000: d(3, "millions"),
    -1: d("minus", 1),
}


@pytest.mark.parametrize(("num", "expected"), ES.items())
def test_spanish_numbers(num: int, expected: list[str]) -> None:
    assert say_number(num, "es") == expected
    assert say_number(num, "es_MX") == expected


def test_spanish_gender_changes_only_a_final_one() -> None:
    assert say_number(1, "es", "f") == d("1F")
    assert say_number(1, "es", "m") == d("1M")
    assert say_number(31, "es", "f") == d(30, "and", "1F")
    assert say_number(21, "es", "f") == d(21)  # veintiuna is not a file of its own


FR = {
    0: d(0),
    1: d(1),
    7: d(7),
    13: d(13),
    20: d(20),
    21: d(20, "et", 1),
    22: d(20, 2),
    61: d(60, "et", 1),
    70: d(60, 10),
    71: d(60, "et", 11),
    79: d(60, 19),
    80: d(80),
    81: d(80, 1),
    99: d(80, 19),
    100: d("hundred"),
    101: d("hundred", 1),
    115: d("hundred", 15),
    200: d(2, "hundred"),
    999: d(9, "hundred", 80, 19),
    1000: d("thousand"),
    1001: d("thousand", 1),
    2024: d(2, "thousand", 20, 4),
    1000000: d(1, "million"),
    2000021: d(2, "million", 20, "et", 1),
}


@pytest.mark.parametrize(("num", "expected"), FR.items())
def test_french_numbers(num: int, expected: list[str]) -> None:
    assert say_number(num, "fr") == expected
    assert say_number(num, "fr_CA") == expected


def test_french_feminine_one() -> None:
    assert say_number(1, "fr", "f") == d("1F")
    assert say_number(21, "fr", "f") == d(20, "et", "1F")


def test_unknown_languages_use_english_rules() -> None:
    assert syntax("de") == syntax("") == syntax("xx_YY") == "en"
    assert say_number(2024, "de") == EN[2024]
    assert syntax("ES_mx") == "es" and syntax("fr_CA_f_June") == "fr"
    assert syntax("en_GB") == syntax("EN_gb") == "en_GB"


@pytest.mark.parametrize("language", ["en", "en_GB", "es", "fr"])
def test_numbers_beyond_the_rules_are_refused(language: str) -> None:
    with pytest.raises(ValueError):
        say_number(2**31, language)
    with pytest.raises(ValueError):
        say_number(-(2**31), language)


def test_french_and_british_stop_below_a_billion_like_asterisk() -> None:
    for language in ("fr", "en_GB"):
        with pytest.raises(ValueError, match="too big"):
            say_number(1_000_000_000, language)
    assert say_number(1_000_000_000, "en") == d(1, "billion")


ORDINALS = {
    1: d("h-1"),
    2: d("h-2"),
    12: d("h-12"),
    19: d("h-19"),
    20: d("h-20"),
    21: d(20, "h-1"),
    30: d("h-30"),
    31: d(30, "h-1"),
    100: d("h-hundred"),
    101: d("hundred", "h-1"),
    200: d(2, "h-hundred"),
    1000: d("h-thousand"),
    1100: d("thousand", 1, "h-hundred"),
    2000000: d(2, "h-million"),
}


@pytest.mark.parametrize(("num", "expected"), ORDINALS.items())
def test_english_ordinals(num: int, expected: list[str]) -> None:
    assert say_enumeration(num, "en") == expected
    assert say_enumeration(num, "fr") == expected  # Asterisk has no French enumeration


def test_digits_and_symbols() -> None:
    assert say_digits("0123456789", "en") == d(*range(10))
    assert say_digits("*2#-x 5", "fr") == d("star", 2, "pound", "minus", 5)
    assert say_digits("", "en") == []


def test_alpha_letters_digits_and_symbols() -> None:
    assert say_alpha("Ab1") == ["letters/a", "letters/b", "digits/1"]
    assert say_alpha("a.b@c-d") == [
        "letters/a",
        "letters/dot",
        "letters/b",
        "letters/at",
        "letters/c",
        "letters/dash",
        "letters/d",
    ]
    assert say_alpha("!$=+/ *#") == [
        "letters/exclaimation-point",
        "letters/dollar",
        "letters/equals",
        "letters/plus",
        "letters/slash",
        "letters/space",
        "digits/star",
        "digits/pound",
    ]
    assert say_alpha("é%") == []


# Every name a number can become, per language family (es/fr files come from their core sounds).
NAME = r"digits/(minus|\d+|1F|1M|100-and|hundred|thousand|million|millions|billion|and|et)|vm-and"


@settings(max_examples=300, deadline=None)
@given(
    num=st.integers(-999_999_999, 999_999_999),
    language=st.sampled_from(["en", "en_GB", "es", "fr", "it"]),
    gender=st.sampled_from(["", "f", "m"]),
)
def test_any_number_gives_known_prompt_names(num: int, language: str, gender: str) -> None:
    names = say_number(num, language, gender)
    assert names and all(re.fullmatch(NAME, name) for name in names)
    assert (names[0] == "digits/minus") == (num < 0)
    assert names.count("digits/minus") == (1 if num < 0 else 0)
