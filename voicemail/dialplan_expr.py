"""Variables `${NAME}`, `${NAME:offset:length}` and expressions `$[...]` in dial plan text.

Asterisk substitutes variables into the text first and then parses the expression, so a
value with an operator or a quote in it changes the expression (a caller ID name of
`x" | "1` turns a comparison true). Here an expression is cut into tokens BEFORE anything is
substituted: a `${...}` inside it becomes part of one operand and its value is never read
as operators or quotes. Where that differs from Asterisk:

- an empty variable is still an operand (`$[${EMPTY} = ]` compares with the empty string;
  Asterisk reports a syntax error);
- a variable cannot supply operators (`${OP}` holding `=` is the string "=");
- strings compare by code point, not by the locale's collation; numbers are floating point
  and print without a fraction when whole (`$[7/2]` is 3.5, `$[4/2]` is 2);
- the operators are `|`, `&`, `=` (`==`), `!=`, `<`, `>`, `<=`, `>=`, `+`, `-`, `*`, `/`,
  `%`, unary `-` and `!`, and parentheses; the regex (`:`, `=~`) and conditional (`? ::`)
  operators and functions are refused (a logged error, the expression becomes empty).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass

log = logging.getLogger(__name__)

_REFERENCE = re.compile(r"([A-Za-z0-9_]+(?:\([A-Za-z0-9_-]*\))?)(?::(-?\d+)(?::(-?\d+))?)?\Z")
_NUMBER = re.compile(r"\s*[-+]?(\d+(\.\d*)?|\.\d+)\s*\Z")
# Other spellings of the caller ID a dial plan may read (Asterisk's CALLERID() accepts both).
_ALIASES = {"CALLERID(number)": "CALLERID(num)"}


class ExpressionError(ValueError):
    """A `$[...]` that cannot be evaluated (logged; the expression becomes empty)."""


def closing(text: str, start: int) -> int:
    """Index of the bracket closing the one at `start` (`{` or `[`), or -1."""
    opener = text[start]
    closer = "}" if opener == "{" else "]"
    depth = 0
    for index in range(start, len(text)):
        if text[index] == opener:
            depth += 1
        elif text[index] == closer:
            depth -= 1
            if depth == 0:
                return index
    return -1


def lookup(name: str, variables: Mapping[str, str]) -> str:
    """A variable's value; unknown names are empty, as in Asterisk."""
    return variables.get(_ALIASES.get(name, name), "")


def _reference(inner: str, variables: Mapping[str, str]) -> str | None:
    """The value of `${inner}` (`NAME`, `NAME:offset`, `NAME:offset:length`), or None."""
    match = _REFERENCE.match(inner)
    if match is None:
        return None
    value = lookup(match.group(1), variables)
    if match.group(2) is not None:
        offset = int(match.group(2))
        if offset < 0:
            offset = max(len(value) + offset, 0)
        value = value[offset:]
        if match.group(3) is not None:
            length = int(match.group(3))
            # A negative length leaves that many characters off the end (Asterisk).
            value = value[:length] if length >= 0 else value[: max(len(value) + length, 0)]
    return value


def substitute(text: str, variables: Mapping[str, str], *, log_errors: bool = True) -> str:
    """Expand `${NAME}`, `${NAME:offset:length}` and `$[expression]` in `text`.

    Unknown names become empty; text we do not understand (`${CUT(...)}`, an unclosed
    bracket) is kept as written. `log_errors=False` for text shown in a log line, whose
    expressions are evaluated (and their errors logged) again when they are used.
    """
    out: list[str] = []
    index = 0
    while index < len(text):
        if text.startswith("${", index) or text.startswith("$[", index):
            end = closing(text, index + 1)
            if end > 0:
                inner = text[index + 2 : end]
                if text[index + 1] == "[":
                    if log_errors:
                        out.append(evaluate_logged(inner, variables))
                    else:
                        try:
                            out.append(evaluate(inner, variables))
                        except ExpressionError:
                            pass
                    index = end + 1
                    continue
                value = _reference(inner, variables)
                if value is not None:
                    out.append(value)
                    index = end + 1
                    continue
        out.append(text[index])
        index += 1
    return "".join(out)


# -- expressions ----------------------------------------------------------------------------

_OPERATORS = ("!=", "<=", ">=", "==", "=~", "::", "|", "&", "=", "<", ">", "+", "-", "*",
              "/", "%", "(", ")", "!", "?", ":")  # fmt: skip
_REFUSED = {"=~", "::", "?", ":"}


@dataclass(frozen=True)
class _Token:
    kind: str  # "op" or "value"
    text: str


def tokenize(expression: str, variables: Mapping[str, str]) -> list[_Token]:
    """Operators and operands; `${...}` and quoted strings are values, never operators."""
    tokens: list[_Token] = []
    word: list[str] = []
    in_word = False

    def end_word() -> None:
        nonlocal in_word
        if in_word:
            tokens.append(_Token("value", "".join(word)))
            word.clear()
            in_word = False

    index = 0
    while index < len(expression):
        char = expression[index]
        if char.isspace():
            end_word()
            index += 1
        elif char == '"':
            end_word()
            end = expression.find('"', index + 1)
            if end < 0:
                raise ExpressionError("unterminated quoted string")
            tokens.append(_Token("value", substitute(expression[index + 1 : end], variables)))
            index = end + 1
        elif expression.startswith("${", index) or expression.startswith("$[", index):
            end = closing(expression, index + 1)
            if end < 0:
                raise ExpressionError(f"unclosed {expression[index : index + 2]}")
            word.append(substitute(expression[index : end + 1], variables))
            in_word = True
            index = end + 1
        else:
            operator = next((op for op in _OPERATORS if expression.startswith(op, index)), None)
            if operator is None:
                word.append(char)
                in_word = True
                index += 1
                continue
            if operator in _REFUSED:
                raise ExpressionError(f"operator {operator!r} is not supported")
            end_word()
            tokens.append(_Token("op", "=" if operator == "==" else operator))
            index += len(operator)
    end_word()
    return tokens


def _number(value: str) -> float | None:
    return float(value) if _NUMBER.match(value) else None


def _format(number: float) -> str:
    return str(int(number)) if number == int(number) else repr(number)


def is_false(value: str) -> bool:
    """Empty or numerically zero: false for `|`, `&` and `!` (Asterisk's is_zero_or_null)."""
    number = _number(value)
    return value == "" if number is None else number == 0


def _arithmetic(operator: str, left: str, right: str) -> str:
    a, b = _number(left), _number(right)
    if a is None or b is None:
        log.warning("$[...]: non-numeric argument to %r: %r, %r", operator, left, right)
        a, b = a or 0.0, b or 0.0
    if operator in "/%" and b == 0:
        raise ExpressionError("division by zero")
    if operator == "+":
        result = a + b
    elif operator == "-":
        result = a - b
    elif operator == "*":
        result = a * b
    elif operator == "/":
        result = a / b
    else:
        result = a % b
    return _format(result)


def _compare(operator: str, left: str, right: str) -> str:
    a, b = _number(left), _number(right)
    pair: tuple[float, float] | tuple[str, str] = (
        (a, b) if a is not None and b is not None else (left, right)
    )
    x, y = pair
    result = {
        "=": x == y,
        "!=": x != y,
        "<": x < y,  # type: ignore[operator]
        ">": x > y,  # type: ignore[operator]
        "<=": x <= y,  # type: ignore[operator]
        ">=": x >= y,  # type: ignore[operator]
    }[operator]
    return "1" if result else "0"


class _Parser:
    """Precedence, lowest first: `|`, `&`, comparisons, `+ -`, `* / %`, unary `- !`."""

    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.index = 0

    def peek(self) -> _Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take_op(self, *operators: str) -> str | None:
        token = self.peek()
        if token is not None and token.kind == "op" and token.text in operators:
            self.index += 1
            return token.text
        return None

    def parse(self) -> str:
        if not self.tokens:
            return ""
        value = self.or_()
        if self.peek() is not None:
            raise ExpressionError(f"syntax error at {self.peek().text!r}")  # type: ignore[union-attr]
        return value

    def or_(self) -> str:
        left = self.and_()
        while self.take_op("|"):
            right = self.and_()
            left = right if is_false(left) else left
        return left

    def and_(self) -> str:
        left = self.comparison()
        while self.take_op("&"):
            right = self.comparison()
            left = "0" if is_false(left) or is_false(right) else left
        return left

    def comparison(self) -> str:
        left = self.sum()
        while operator := self.take_op("=", "!=", "<", ">", "<=", ">="):
            left = _compare(operator, left, self.sum())
        return left

    def sum(self) -> str:
        left = self.product()
        while operator := self.take_op("+", "-"):
            left = _arithmetic(operator, left, self.product())
        return left

    def product(self) -> str:
        left = self.unary()
        while operator := self.take_op("*", "/", "%"):
            left = _arithmetic(operator, left, self.unary())
        return left

    def unary(self) -> str:
        if self.take_op("!"):
            return "1" if is_false(self.unary()) else "0"
        if self.take_op("-"):
            return _arithmetic("-", "0", self.unary())
        return self.primary()

    def primary(self) -> str:
        token = self.peek()
        if token is None:
            raise ExpressionError("syntax error: missing operand at the end")
        if self.take_op("("):
            value = self.or_()
            if not self.take_op(")"):
                raise ExpressionError("syntax error: missing ')'")
            return value
        if token.kind == "op":
            raise ExpressionError(f"syntax error at {token.text!r}")
        self.index += 1
        return token.text


def evaluate(expression: str, variables: Mapping[str, str]) -> str:
    """The value of the text inside `$[...]`; `ExpressionError` if it has none."""
    return _Parser(tokenize(expression, variables)).parse()


def evaluate_logged(expression: str, variables: Mapping[str, str]) -> str:
    """`evaluate`, but an error is logged and the expression becomes empty (as Asterisk)."""
    try:
        return evaluate(expression, variables)
    except ExpressionError as exc:
        log.error("$[%s]: %s", expression, exc)
        return ""


def check_condition(value: str) -> bool:
    """A GotoIf/ExecIf condition as Asterisk's pbx_checkcondition reads it: empty is false,
    a leading integer is its truth, any other text is true."""
    if not value.strip():
        return False
    match = re.match(r"\s*([-+]?\d+)", value)
    return int(match.group(1)) != 0 if match else True
