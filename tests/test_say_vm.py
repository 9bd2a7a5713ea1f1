"""VoiceMailMain's sentences (vm_intro_en/_es/_fr, folder names, message prelude, duration) and
the voicemail.conf custom prompt names, as Asterisk 20's app_voicemail.c says them."""

from __future__ import annotations

import pytest

from voicemail.say import (
    PROMPT_OPTIONS,
    empty_folder,
    folder_name,
    message_intro,
    prompt_overrides,
    say_counted,
    say_duration,
    vm_intro,
)

INTRO_EN = [
    ((0, 0, 0), ["vm-youhave", "vm-no", "vm-messages"]),
    ((1, 0, 0), ["vm-youhave", "digits/1", "vm-INBOX", "vm-message"]),
    ((2, 0, 0), ["vm-youhave", "digits/2", "vm-INBOX", "vm-messages"]),
    (
        (2, 1, 0),
        ["vm-youhave", "digits/2", "vm-INBOX", "vm-and", "digits/1", "vm-Old", "vm-message"],
    ),
    ((0, 3, 0), ["vm-youhave", "digits/3", "vm-Old", "vm-messages"]),
    ((0, 0, 1), ["vm-youhave", "digits/1", "vm-Urgent", "vm-message"]),
    (
        (1, 0, 2),
        ["vm-youhave", "digits/2", "vm-Urgent", "vm-and", "digits/1", "vm-INBOX", "vm-message"],
    ),
    (
        (1, 21, 1),
        [
            "vm-youhave",
            "digits/1",
            "vm-Urgent",
            "vm-and",
            "digits/1",
            "vm-INBOX",
            "vm-and",
            "digits/20",
            "digits/1",
            "vm-Old",
            "vm-messages",
        ],
    ),
]


@pytest.mark.parametrize(("counts", "expected"), INTRO_EN)
def test_english_intro(counts: tuple[int, int, int], expected: list[str]) -> None:
    new, old, urgent = counts
    assert vm_intro(new, old, urgent, "en") == expected
    assert vm_intro(new, old, urgent, "de") == expected  # no German rules: English


def test_intro_with_active_temporary_greeting_warning() -> None:
    assert vm_intro(0, 0, 0, "en", temp_greeting_warning=True) == [
        "vm-tempgreetactive",
        "vm-youhave",
        "vm-no",
        "vm-messages",
    ]


def test_british_intro_says_and_inside_numbers() -> None:
    assert vm_intro(101, 0, 0, "en_GB") == [
        "vm-youhave",
        "digits/1",
        "digits/hundred",
        "vm-and",
        "digits/1",
        "vm-INBOX",
        "vm-messages",
    ]


INTRO_ES = [
    ((0, 0, 0), ["vm-youhaveno", "vm-messages"]),
    ((1, 0, 0), ["vm-youhave", "digits/1M", "vm-message", "vm-INBOXs"]),
    ((2, 0, 0), ["vm-youhave", "digits/2", "vm-messages", "vm-INBOX"]),
    (
        (1, 1, 0),
        ["vm-youhave", "digits/1M", "vm-message", "vm-INBOXs", "vm-and"]
        + ["digits/1M", "vm-message", "vm-Olds"],
    ),
    (
        (31, 2, 0),
        ["vm-youhave", "digits/30", "digits/and", "digits/1", "vm-messages", "vm-INBOX", "vm-and"]
        + ["digits/2", "vm-messages", "vm-Old"],
    ),
    ((0, 0, 4), ["vm-youhave"]),  # Asterisk's Spanish intro does not count urgent messages
]


@pytest.mark.parametrize(("counts", "expected"), INTRO_ES)
def test_spanish_intro(counts: tuple[int, int, int], expected: list[str]) -> None:
    assert vm_intro(*counts, "es") == expected
    assert vm_intro(*counts, "es_MX") == expected


INTRO_FR = [
    ((0, 0, 0), ["vm-youhave", "vm-no", "vm-messages"]),
    ((1, 0, 0), ["vm-youhave", "digits/1", "vm-INBOX", "vm-message"]),
    (
        (21, 1, 0),
        ["vm-youhave", "digits/20", "digits/et", "digits/1", "vm-INBOX", "vm-and"]
        + ["digits/1", "vm-Old", "vm-message"],
    ),
    ((0, 2, 0), ["vm-youhave", "digits/2", "vm-Old", "vm-messages"]),
    ((0, 0, 2), ["vm-youhave"]),  # nor does the French one
]


@pytest.mark.parametrize(("counts", "expected"), INTRO_FR)
def test_french_intro(counts: tuple[int, int, int], expected: list[str]) -> None:
    assert vm_intro(*counts, "fr") == expected


def test_counted_nouns() -> None:
    assert say_counted(1, "vm-message", "vm-messages", "en") == ["digits/1", "vm-message"]
    assert say_counted(0, "vm-message", "vm-messages", "en") == ["digits/0", "vm-messages"]
    assert say_counted(2, "vm-message", "vm-messages", "fr") == ["digits/2", "vm-messages"]
    assert say_counted(100, "vm-message", "vm-messages", "es") == ["digits/100", "vm-messages"]


def test_folder_names_and_empty_folders() -> None:
    assert folder_name("vm-Old", "en") == ["vm-Old", "vm-messages"]
    assert folder_name("vm-Old", "fr") == ["vm-Old", "vm-messages"]
    assert folder_name("vm-Old", "es") == ["vm-messages", "vm-Old"]
    assert empty_folder("vm-Family", "en") == ["vm-youhave", "vm-no", "vm-Family", "vm-messages"]
    assert empty_folder("vm-INBOX", "es") == ["vm-youhaveno", "vm-messages", "vm-INBOX"]


def test_message_prelude() -> None:
    assert message_intro(0, 0, False, "en") == ["vm-first", "vm-message"]
    assert message_intro(0, 4, True, "en") == ["vm-first", "vm-Urgent", "vm-message"]
    assert message_intro(2, 4, False, "en") == ["vm-message", "digits/3"]
    assert message_intro(4, 4, False, "en") == ["vm-last", "vm-message"]
    assert message_intro(20, 30, False, "fr") == [
        "vm-message",
        "digits/20",
        "digits/et",
        "digits/1",
    ]


def test_duration_in_whole_minutes_from_saydurationm() -> None:
    assert say_duration(119, "en") == []
    assert say_duration(120, "en") == ["vm-duration", "digits/2", "vm-minutes"]
    assert say_duration(179, "en") == ["vm-duration", "digits/2", "vm-minutes"]
    assert say_duration(61, "en", min_minutes=1) == ["vm-duration", "digits/1", "vm-minutes"]
    assert say_duration(5, "en", min_minutes=0) == ["vm-duration", "digits/0", "vm-minutes"]
    assert say_duration(60 * 21, "fr") == [
        "vm-duration",
        "digits/20",
        "digits/et",
        "digits/1",
        "vm-minutes",
    ]


def test_prompt_overrides_default_to_asterisk_names() -> None:
    prompts = prompt_overrides({"format": "wav"})
    assert prompts == PROMPT_OPTIONS
    assert len(prompts) == 10
    assert prompts["vm-login"] == "vm-login"
    assert prompts["vm-prepend-timeout"] == "vm-then-pound"


def test_prompt_overrides_replace_named_roles_only() -> None:
    prompts = prompt_overrides(
        {
            "VM-Login": " custom/welcome ",
            "vm-prepend-timeout": "/var/lib/asterisk/sounds/custom/pound",
            "vm-intro": "not-a-role",  # Asterisk has no such option: no effect here
        }
    )
    assert prompts["vm-login"] == "custom/welcome"
    assert prompts["vm-prepend-timeout"] == "/var/lib/asterisk/sounds/custom/pound"
    assert prompts["vm-password"] == "vm-password"
    assert "vm-intro" not in prompts


@pytest.mark.parametrize(
    ("value", "error"),
    [("", "empty"), ("../../etc/passwd", r"\.\."), ("x" * 80, "longer than 79")],
)
def test_bad_prompt_overrides_are_refused(value: str, error: str) -> None:
    with pytest.raises(ValueError, match=f"vm-newuser: .*{error}"):
        prompt_overrides({"vm-newuser": value})
