"""Goto, GotoIf and Set: the dial plan's own applications, as pure functions of their text.

They take the step's argument text as written, not split and substituted beforehand as
other applications' arguments are: GotoIf's `?` and `:` and Set's `=` are found in what the
dial plan's author wrote, so a value a caller chose (`${EXTEN}`, `${CALLERID(name)}`) can
never add a branch, a context or an assignment. (Asterisk substitutes first and then looks
for `?`, `:` and `,`, so there a `?` in a caller ID name moves the branch.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .dialplan import split_arguments
from .dialplan_expr import check_condition, closing, substitute
from .goto import Goto


class FlowError(ValueError):
    """Arguments Goto/GotoIf/Set cannot use; the call ends, as Asterisk's app returns -1."""


def _priority(text: str) -> int | str:
    text = text.strip()
    if not text:
        raise FlowError("an empty priority")
    if text.isdigit():
        if int(text) < 1:
            raise FlowError(f"priority {text} must be a number > 0 or a label")
        return int(text)
    return text


def parse_target(text: str, variables: Mapping[str, str], exten: str) -> Goto:
    """Asterisk's `[[context,]exten,]priority`, each part substituted on its own.

    `exten` is the extension the call is in, the target of a bare priority or label.
    """
    parts = [substitute(part, variables).strip() for part in split_arguments(text)]
    if len(parts) == 1:
        return Goto(exten, None, _priority(parts[0]))
    if len(parts) == 2:
        return Goto(parts[0] or exten, None, _priority(parts[1]))
    if len(parts) == 3:
        return Goto(parts[1] or exten, parts[0] or None, _priority(parts[2]))
    raise FlowError(f"{text!r}: a target is [[context,]exten,]priority")


def _top_level(text: str, wanted: str) -> int:
    """Index of the first `wanted` outside `${...}`, `$[...]` and double quotes, or -1."""
    index = 0
    quoted = False
    while index < len(text):
        char = text[index]
        if char == '"':
            quoted = not quoted
        elif char == "$" and text.startswith(("{", "["), index + 1) and not quoted:
            end = closing(text, index + 1)
            if end > 0:
                index = end + 1
                continue
        elif char == wanted and not quoted:
            return index
        index += 1
    return -1


def split_gotoif(text: str) -> tuple[str, str, str]:
    """`condition?[iftrue][:iffalse]` into its three parts, as written."""
    question = _top_level(text, "?")
    if question < 0:
        raise FlowError(f"{text!r}: GotoIf needs condition?[labeliftrue][:labeliffalse]")
    branches = text[question + 1 :]
    colon = _top_level(branches, ":")
    if colon < 0:
        return text[:question], branches, ""
    return text[:question], branches[:colon], branches[colon + 1 :]


def goto(text: str, variables: Mapping[str, str], exten: str) -> Goto:
    """Goto([[context,]exten,]priority)."""
    if not text.strip():
        raise FlowError("Goto needs a target")
    return parse_target(text, variables, exten)


def gotoif(text: str, variables: Mapping[str, str], exten: str) -> Goto | None:
    """GotoIf(condition?[iftrue][:iffalse]): the branch's target, or None to go on."""
    condition, if_true, if_false = split_gotoif(text)
    branch = if_true if check_condition(substitute(condition, variables)) else if_false
    if not branch.strip():
        return None  # no branch for this outcome: the next priority, as Asterisk does
    return parse_target(branch, variables, exten)


@dataclass(frozen=True)
class Assignment:
    name: str
    value: str


def set_variable(text: str, variables: Mapping[str, str]) -> Assignment:
    """Set(NAME=value): the name as written, the value substituted as one whole.

    Asterisk's Set keeps commas and quotes in the value; so do we.
    """
    name, equals, value = text.partition("=")
    name = name.strip()
    if not equals or not name:
        raise FlowError(f"{text!r}: Set needs NAME=value")
    if "$" in name:
        raise FlowError(f"{text!r}: a variable's name cannot come from a variable here")
    # `_NAME` and `__NAME` ask Asterisk to pass the variable on to channels this one
    # creates; we create none, and the name read back is without the underscores.
    name = name[2:] if name.startswith("__") else name[1:] if name.startswith("_") else name
    return Assignment(name, substitute(value, variables))
