"""Goto, GotoIf and Set read from the text as written: targets, labels, branches."""

from __future__ import annotations

import pytest

from storage.conffile import parse_config_text
from voicemail.dialplan import Dialplan, expand_arguments, split_arguments
from voicemail.dialplan_flow import FlowError, goto, gotoif, parse_target, set_variable
from voicemail.goto import Goto

VARIABLES = {"VMSTATUS": "SUCCESS", "EXTEN": "1000", "N": "5", "CTX": "other"}


@pytest.mark.parametrize(
    ("text", "target"),
    [
        ("3", Goto("1000", None, 3)),  # priority: the call's extension
        ("ok", Goto("1000", None, "ok")),  # a label
        ("a,1", Goto("a", None, 1)),  # exten,priority: the call's context
        ("s,start", Goto("s", None, "start")),
        ("default,i,1", Goto("i", "default", 1)),  # context,exten,priority
        ("${CTX},${N},2", Goto("5", "other", 2)),
        (" default , 500 , 1 ", Goto("500", "default", 1)),
    ],
)
def test_targets_in_asterisk_form(text: str, target: Goto) -> None:
    assert parse_target(text, VARIABLES, "1000") == target


@pytest.mark.parametrize("text", ["", "a,b,c,d", "0", "x,"])
def test_bad_targets_are_errors(text: str) -> None:
    with pytest.raises(FlowError):
        goto(text, VARIABLES, "1000")


def test_a_target_from_a_variable_cannot_name_a_context() -> None:
    """A comma in ${EXTEN} stays in the extension's name."""
    assert goto("${EXTEN},1", {"EXTEN": "secret,s"}, "x") == Goto("secret,s", None, 1)


@pytest.mark.parametrize(
    ("text", "target"),
    [
        ('$["${VMSTATUS}" = "SUCCESS"]?ok:failed', Goto("1000", None, "ok")),
        ('$["${VMSTATUS}" = "FAILED"]?ok:failed', Goto("1000", None, "failed")),
        ('$["${VMSTATUS}" = "FAILED"]?ok', None),  # no branch: the next priority
        ('$["${VMSTATUS}" = "SUCCESS"]?:failed', None),
        ("1?default,a,1:other,o,2", Goto("a", "default", 1)),
        ("0?default,a,1:other,o,2", Goto("o", "other", 2)),
        ("${N}?500,1", Goto("500", None, 1)),
        ("${EMPTY}?yes:no", Goto("1000", None, "no")),
        ("$[${EXTEN:0:1} = 1]?${EXTEN:1},1", Goto("000", None, 1)),  # colons inside ${}
        ('$["a:b?" = "a:b?"]?yes:no', Goto("1000", None, "yes")),  # and inside $[] quotes
    ],
)
def test_gotoif_branches(text: str, target: Goto | None) -> None:
    assert gotoif(text, VARIABLES, "1000") == target


def test_a_question_mark_from_a_variable_does_not_move_the_branch() -> None:
    """Asterisk substitutes, then looks for `?`: a caller ID name `1?evil` would pick it."""
    variables = {"CALLERID(name)": "1?evil,s,1:"}
    assert gotoif("${CALLERID(name)}?yes:no", variables, "1000") == Goto("1000", None, "yes")
    with pytest.raises(FlowError, match="condition"):
        gotoif("${CALLERID(name)}", variables, "1000")


def test_set_takes_the_value_whole() -> None:
    assert set_variable("GREETING=u", VARIABLES).value == "u"
    assigned = set_variable('X=a,b "c" ${EXTEN:1}', VARIABLES)
    assert (assigned.name, assigned.value) == ("X", 'a,b "c" 000')
    assert set_variable("__INHERITED=1", VARIABLES).name == "INHERITED"
    assert set_variable("CALLERID(num)=${N}", VARIABLES).name == "CALLERID(num)"
    assert set_variable("EMPTY=", VARIABLES).value == ""
    for bad in ("NOEQUALS", "=x", "${N}=1"):
        with pytest.raises(FlowError):
            set_variable(bad, VARIABLES)


def test_labels_are_kept_on_steps() -> None:
    plan = Dialplan.from_config(
        parse_config_text(
            "[default]\n"
            "exten => 1000,1(start),Answer()\n"
            "same => n,GotoIf($[1]?ok)\n"
            "same => n(ok),NoOp(stored)\n"
            "same => n,NoOp(plain)\n",
            "extensions.conf",
        )
    )
    steps = plan.match("default", "1000").steps
    assert [(s.priority, s.label) for s in steps] == [(1, "start"), (2, ""), (3, "ok"), (4, "")]


def test_expressions_keep_their_quotes_through_the_split() -> None:
    """Asterisk evaluates $[...] before splitting; we split first and must not lose quotes."""
    assert split_arguments('$["a,b" = "a,b"],x') == ['$["a,b" = "a,b"]', "x"]
    assert expand_arguments('$["${VMSTATUS}" = "SUCCESS"],"q"', VARIABLES) == ["1", "q"]
