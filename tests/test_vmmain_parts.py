"""VoiceMailMain's argument parsing and settings (the sayer: tests/test_vmmain_sayer.py)."""

from __future__ import annotations

import pytest

from voicemail.vmmain.options import BadArguments, MainArgs, MenuSettings, parse_main_args


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
