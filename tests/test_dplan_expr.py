"""`$[...]` expressions and `${...}` substitution, as a voicemail dial plan uses them."""

from __future__ import annotations

import pytest

from voicemail.dialplan_expr import ExpressionError, check_condition, evaluate, substitute

VARIABLES = {"VMSTATUS": "SUCCESS", "N": "5", "EMPTY": "", "EXTEN": "71000", "ZERO": "0"}


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ('"${VMSTATUS}" = "SUCCESS"', "1"),
        ('"${VMSTATUS}" = "FAILED"', "0"),
        ("${VMSTATUS} != FAILED", "1"),
        ("${VMSTATUS}=SUCCESS", "1"),  # operators need no spaces
        ("${VMSTATUS} == SUCCESS", "1"),
        ("${N} > 3", "1"),
        ("${N} < 3", "0"),
        ("${N} >= 5", "1"),
        ("${N} <= 4", "0"),
        ("10 > 9", "1"),  # numbers compare as numbers...
        ("abc < abd", "1"),  # ...other text as strings
        ("10 > 9x", "0"),  # "10" < "9x" as strings
        ("${N} > 3 & ${N} < 10", "1"),
        ("${N} > 3 & ${N} > 10", "0"),
        ("${N} > 30 | ${N} = 5", "1"),
        ("${EMPTY} | fallback", "fallback"),  # |: the left value unless empty or zero
        ("${ZERO} | fallback", "fallback"),
        ("first | fallback", "first"),
        ("x & y", "x"),  # &: the left value when both are true, else 0
        ("x & ${EMPTY}", "0"),
        ("${N} + 2 * 3", "11"),  # * before +
        ("(${N} + 2) * 3", "21"),
        ("7 / 2", "3.5"),
        ("4 / 2", "2"),
        ("7 % 4", "3"),
        ("-${N} + 1", "-4"),
        ("!${EMPTY}", "1"),
        ("!${N}", "0"),
        ("${EXTEN:1} = 1000", "1"),
        ('"${EXTEN:0:2}" = "71"', "1"),
        ("", ""),
        ("plain", "plain"),
    ],
)
def test_expressions_evaluate_as_asterisk_does(expression: str, value: str) -> None:
    assert evaluate(expression, VARIABLES) == value


def test_a_value_in_an_expression_is_one_operand_never_operators() -> None:
    """Asterisk pastes the value into the text: `x" | "1` would make the comparison true."""
    hostile = {"NAME": 'x" | "1', "OP": "=", "SPACES": "a = a"}
    assert evaluate('"${NAME}" = "bob"', hostile) == "0"
    assert evaluate("${NAME} = bob", hostile) == "0"
    assert evaluate("${OP}", hostile) == "="  # a value, not an operator
    assert evaluate("${SPACES}", hostile) == "a = a"
    assert evaluate("${EMPTY} = ${EMPTY}", VARIABLES) == "1"  # empty is still an operand


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("1 +", "missing operand"),
        ("(1", r"missing '\)'"),
        ("1 2", "syntax error"),
        ('"open', "unterminated"),
        ("1 ? 2 :: 3", "not supported"),
        ("abc : a", "not supported"),
        ("abc =~ a", "not supported"),
        ("1 / 0", "division by zero"),
    ],
)
def test_bad_or_unsupported_expressions_are_errors(expression: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=message):
        evaluate(expression, VARIABLES)


def test_a_bad_expression_in_text_becomes_empty_and_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert substitute("x$[1 +]y", VARIABLES) == "xy"
    assert "$[1 +]: syntax error" in caplog.text


def test_substitution_of_variables_substrings_and_expressions() -> None:
    assert substitute('status $["${VMSTATUS}" = "SUCCESS"]!', VARIABLES) == "status 1!"
    assert substitute("${EXTEN:1}@default", VARIABLES) == "1000@default"
    assert substitute("${EXTEN:-3}", VARIABLES) == "000"  # negative offset: from the end
    assert substitute("${EXTEN:0:-2}", VARIABLES) == "710"  # negative length: off the end
    assert substitute("${EXTEN:9}", VARIABLES) == ""
    assert substitute("${CALLERID(number)}", {"CALLERID(num)": "555"}) == "555"
    assert substitute("${CUT(x,-,1)}", VARIABLES) == "${CUT(x,-,1)}"  # not ours: kept
    assert substitute("$[unclosed", VARIABLES) == "$[unclosed"
    assert substitute("$[${N} + $[2 * 2]]", VARIABLES) == "9"  # nested expression


@pytest.mark.parametrize(
    ("value", "truth"),
    [("", False), ("  ", False), ("0", False), ("1", True), ("-3", True), ("00", False),
     ("0.5", False), ("12abc", True), ("abc", True), ("SUCCESS", True)],
)  # fmt: skip
def test_conditions_read_as_pbx_checkcondition(value: str, truth: bool) -> None:
    assert check_condition(value) is truth
