"""VoiceMailMain's argument parsing, settings and the default English sayer."""

from __future__ import annotations

import time

import pytest

from voicemail.vmmain.events import CallerId, Duration, Intro, SayNumber
from voicemail.vmmain.options import BadArguments, MainArgs, MenuSettings, parse_main_args
from voicemail.vmmain.sayer import EnglishSayer, english_number, english_received


def test_arguments() -> None:
    assert parse_main_args([]) == MainArgs()
    assert parse_main_args(["1000@work"]) == MainArgs(mailbox="1000", context="work")
    assert parse_main_args(["@default"]) == MainArgs()
    assert parse_main_args(["1000", "s"]).skip_password
    assert parse_main_args(["s1000"]) == MainArgs(mailbox="1000", skip_password=True)
    assert parse_main_args(["10", "p"]) == MainArgs(mailbox="10", prefix=True)
    assert parse_main_args(["", "r"]).read_only
    assert parse_main_args(["", "a(Old)"]).autoplay == 1
    assert parse_main_args(["", "a(3)"]).autoplay == 3
    assert parse_main_args(["", "sa(work)r"]) == MainArgs(
        skip_password=True, read_only=True, autoplay=2
    )


@pytest.mark.parametrize("options", ["g(3)", "x", "a", "a(Deleted)", "a(12)", "a(1"])
def test_arguments_we_do_not_honour_are_refused(options: str) -> None:
    with pytest.raises(BadArguments):
        parse_main_args(["1000", options])


def test_settings_layers_and_defaults() -> None:
    assert MenuSettings.from_options() == MenuSettings()
    merged = MenuSettings.from_options(
        {"maxlogins": "5", "skipms": "x", "messagewrap": "yes"}, {"moveheard": "no"}
    )
    assert (merged.maxlogins, merged.skipms, merged.messagewrap, merged.moveheard) == (
        5,
        3000,
        True,
        False,
    )


def test_numbers() -> None:
    assert english_number(7) == ["digits/7"]
    assert english_number(42) == ["digits/40", "digits/2"]
    assert english_number(115) == ["digits/1", "digits/hundred", "digits/15"]
    assert english_number(2001) == ["digits/2", "digits/thousand", "digits/1"]


@pytest.mark.parametrize(
    ("intro", "prompts"),
    [
        (Intro(0, 0, 0), "vm-youhave vm-no vm-messages"),
        (Intro(1, 0, 0), "vm-youhave digits/1 vm-INBOX vm-message"),
        (Intro(2, 1, 0), "vm-youhave digits/2 vm-INBOX vm-and digits/1 vm-Old vm-message"),
        (Intro(0, 3, 0), "vm-youhave digits/3 vm-Old vm-messages"),
        (
            Intro(1, 0, 2),
            "vm-youhave digits/2 vm-Urgent vm-and digits/1 vm-INBOX vm-message",
        ),
        (Intro(0, 0, 1), "vm-youhave digits/1 vm-Urgent vm-message"),
    ],
)
def test_intro(intro: Intro, prompts: str) -> None:
    assert EnglishSayer().expand(intro, "en") == prompts.split()


def test_envelope_today_and_other_items() -> None:
    now = time.mktime((2026, 12, 3, 22, 16, 0, 0, 0, -1))
    assert english_received(int(now), now) == [
        "vm-received",
        "digits/today",
        "digits/at",
        "digits/10",
        "digits/16",
        "digits/p-m",
    ]
    yesterday = english_received(int(now - 86400 + 3600 * -12 + 60 * 5), now)
    assert yesterday[:2] == ["vm-received", "digits/yesterday"]
    sayer = EnglishSayer()
    assert sayer.expand(SayNumber(3), "en") == ["digits/3"]
    assert sayer.expand(CallerId('"Bob" <5551>'), "en") == [
        "vm-from-phonenumber",
        "digits/5",
        "digits/5",
        "digits/5",
        "digits/1",
    ]
    assert sayer.expand(CallerId("Unknown"), "en") == ["vm-unknown-caller"]
    assert sayer.expand(Duration(3), "en") == ["vm-duration", "digits/3", "vm-minutes"]
