"""Application arguments: split as Asterisk does, then substitute (no comma injection)."""

from __future__ import annotations

import pytest

from voicemail.dialplan import expand_arguments, split_arguments, substitute


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        ("1000@default", ["1000@default"]),
        ("1000@default,u", ["1000@default", "u"]),
        ("a,,b", ["a", "", "b"]),
        ("a,", ["a", ""]),
        (",", ["", ""]),
        ("${CUT(x,-,1)},u", ["${CUT(x,-,1)}", "u"]),  # commas inside parentheses
        ("$[1,2],x", ["$[1,2]", "x"]),  # and inside square brackets
        ('"a,b",c', ["a,b", "c"]),  # double quotes group and are removed
        ("a\\,b,c", ["a,b", "c"]),  # backslash makes the comma literal and is removed
        ("a\\\\b", ["a\\b"]),
        ("(unclosed,x", ["(unclosed,x"]),
        ("a),b", ["a)", "b"]),  # a stray ')' does not go below depth 0
    ],
)
def test_split_like_ast_app_separate_args(text: str, expected: list[str]) -> None:
    assert split_arguments(text) == expected


def test_a_comma_in_exten_cannot_create_a_new_argument() -> None:
    """The injection: EXTEN chosen by the caller must not pick the mailbox's context."""
    variables = {"EXTEN": "1001@secret,@default"}
    args = "${EXTEN}@default,u"
    # Asterisk's order (substitute, then split) hands the caller context "secret":
    assert split_arguments(substitute(args, variables)) == ["1001@secret", "@default@default", "u"]
    # Ours keeps the whole value in the first argument:
    assert expand_arguments(args, variables) == ["1001@secret,@default@default", "u"]


def test_expand_substitutes_in_each_argument() -> None:
    variables = {"EXTEN": "71000", "CALLERID(num)": "555"}
    assert expand_arguments("${EXTEN:1}@default,u", variables) == ["1000@default", "u"]
    assert expand_arguments("${CALLERID(num)}", variables) == ["555"]
