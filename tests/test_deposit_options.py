"""VoiceMail()'s argument parsing (pure): recipients and Asterisk 20's option letters."""

from __future__ import annotations

import pytest

from voicemail.deposit_options import parse_args, parse_options, split_options


def test_letters_and_arguments_are_split_as_ast_app_parse_options() -> None:
    assert split_options("ud(sales)t()g(-3)") == [
        ("u", None),
        ("d", "sales"),
        ("t", ""),
        ("g", "-3"),
    ]


def test_every_option_of_asterisk_20() -> None:
    options = parse_options("bsSUPd(sales)g(6)t(custom-beep)")
    assert options.busy and options.silent and options.silent_if_greeting
    assert options.urgent and options.priority and options.flag == "Urgent"
    assert options.dtmf_exit and options.exit_context == "sales"
    assert options.gain_db == 6 and options.beep == "custom-beep"
    assert parse_options("u").beep == "beep" and parse_options("u").unavail
    assert parse_options("t").beep is None and parse_options("t()").beep is None
    assert parse_options("P").flag == "PRIORITY"
    assert parse_options("d").exit_context == ""
    assert parse_options("e").early_media


@pytest.mark.parametrize("text", ["x", "g(loud)", "d(sales", "uq"])
def test_bad_options_are_errors(text: str) -> None:
    with pytest.raises(ValueError):
        parse_options(text)


def test_recipients_with_contexts_and_default() -> None:
    parsed = parse_args(["1000@sales&1001& 1002@default ", "u"])
    assert parsed.recipients == [("1000", "sales"), ("1001", "default"), ("1002", "default")]
    assert parsed.options.unavail
    assert parse_args([]).recipients == []
