"""The extensions.conf subset: patterns, priorities, variables."""

from __future__ import annotations

import pytest

from storage.conffile import ConfigError, parse_config_text
from voicemail.dialplan import Dialplan, pattern_regex, substitute


def dialplan(text: str) -> Dialplan:
    return Dialplan.from_config(parse_config_text(text, "extensions.conf"))


@pytest.mark.parametrize(
    ("pattern", "matches", "misses"),
    [
        ("_X.", ["10", "1000", "99999"], ["", "1", "a1"]),
        ("_NXX", ["200", "999"], ["100", "20", "2000"]),
        ("_Z!", ["1", "10"], ["0", ""]),
        ("_[1-3]00", ["100", "300"], ["400", "1000"]),
        ("_7XX-XX", ["71000"], ["7100"]),
        ("1000", ["1000"], ["10000", "100"]),
    ],
)
def test_asterisk_patterns_match_like_asterisk(
    pattern: str, matches: list[str], misses: list[str]
) -> None:
    regex = pattern_regex(pattern)
    for number in matches:
        assert regex.match(number), number
    for number in misses:
        assert not regex.match(number), number


def test_exact_extension_wins_over_pattern_and_specific_pattern_over_general() -> None:
    plan = dialplan(
        "[default]\n"
        "exten => _X.,1,VoiceMail(${EXTEN}@default,u)\n"
        "exten => _7XXXX,1,Ringing()\n"
        "exten => 500,1,VoiceMailMain()\n"
    )
    assert plan.match("default", "500").steps[0].app == "VoiceMailMain"
    assert plan.match("default", "71000").steps[0].app == "Ringing"
    assert plan.match("default", "1000").steps[0].app == "VoiceMail"
    assert plan.match("default", "abc") is None
    assert plan.match("other", "1000") is None


def test_same_and_n_priorities_build_the_steps_in_order() -> None:
    plan = dialplan(
        "[default]\n"
        "exten => 1000,1,Answer()\n"
        "same => n(greet),Wait(1)\n"
        "same => n,VoiceMail(1000@default,s)\n"
        "exten => 1000,10,Hangup()\n"
    )
    steps = plan.match("default", "1000").steps
    assert [(s.priority, s.app, s.args) for s in steps] == [
        (1, "Answer", ""),
        (2, "Wait", "1"),
        (3, "VoiceMail", "1000@default,s"),
        (10, "Hangup", ""),
    ]


def test_bad_lines_are_reported_with_file_and_line() -> None:
    with pytest.raises(ConfigError, match=r"extensions\.conf:2: .*priority"):
        dialplan("[default]\nexten => 1000,x,Answer()\n")
    with pytest.raises(ConfigError, match=r"extensions\.conf:2: 'same =>'"):
        dialplan("[default]\nsame => n,Answer()\n")
    with pytest.raises(ConfigError, match=r"extensions\.conf:2: "):
        dialplan("[default]\nexten => _[12,1,Answer()\n")


def test_variables_and_substrings_are_substituted() -> None:
    variables = {"EXTEN": "71000", "CALLERID(num)": "555"}
    assert substitute("${EXTEN:1}@default", variables) == "1000@default"
    assert substitute("${EXTEN:0:2}-${CALLERID(num)}", variables) == "71-555"
    assert substitute("${UNKNOWN}x", variables) == "x"
