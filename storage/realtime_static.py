"""The `static` realtime driver: a family served read-only from an Asterisk .conf file.

Ours (Asterisk has no such driver), so a small site (or a test) can use the realtime code path
without a table. What a row is, per family: see storage/realtime.py. Lookups compare like SQL:
a missing column is NULL and matches nothing, numbers compare as numbers, LIKE takes % and _.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from storage.conffile import ConfigError, ConfigFile
from storage.realtime_rows import Condition, Row

__all__ = ["static_rows", "static_select"]

_VOICEMAIL_SKIP = frozenset({"general", "zonemessages"})
_EXTENSIONS_SKIP = frozenset({"general", "globals"})


def _voicemail_rows(conf: ConfigFile) -> list[Row]:
    rows = []
    for section in conf.sections:
        if section.name.lower() in _VOICEMAIL_SKIP:
            continue
        for variable in section.variables:
            parts = [part.strip() for part in variable.value.split(",", 4)]
            parts += [""] * (5 - len(parts))
            pairs: list[tuple[str, object]] = [
                ("context", section.name),
                ("mailbox", variable.name),
                ("password", parts[0]),
                ("fullname", parts[1]),
                ("email", parts[2]),
                ("pager", parts[3]),
            ]
            for option in parts[4].split("|"):
                name, sep, value = option.partition("=")
                if sep and name.strip():
                    pairs.append((name.strip().lower(), value.strip()))
            rows.append(_static_row(pairs))
    return rows


def _extension_rows(conf: ConfigFile) -> list[Row]:
    rows = []
    for section in conf.sections:
        if section.name.lower() in _EXTENSIONS_SKIP:
            continue
        exten, priority = "", 0
        for variable in section.variables:
            kind = variable.name.lower()
            if kind not in ("exten", "same"):
                continue
            if kind == "exten":
                exten, _, rest = variable.value.partition(",")
                exten = exten.strip()
            else:
                rest = variable.value
            number, _, action = rest.partition(",")
            number = number.strip().split("(", 1)[0].strip()  # drop a (label)
            if number.lower() == "hint":
                continue
            if number.lower() == "n":
                priority += 1
            elif number.startswith("n+") and number[2:].isdigit():
                priority += int(number[2:])
            elif number.isdigit():
                priority = int(number)
            else:
                raise ConfigError(
                    variable.filename, variable.line, f"unsupported priority {number!r}"
                )
            app, data = _split_application(action.strip())
            rows.append(
                _static_row(
                    [
                        ("context", section.name),
                        ("exten", exten),
                        ("priority", str(priority)),
                        ("app", app),
                        ("appdata", data),
                    ]
                )
            )
    return rows


def _split_application(action: str) -> tuple[str, str]:
    """`Dial(SIP/100,20)` or the old `Dial,SIP/100` -> ("Dial", "SIP/100,20")."""
    paren, comma = action.find("("), action.find(",")
    if paren >= 0 and (comma < 0 or paren < comma):
        data = action[paren + 1 :]
        return action[:paren].strip(), data[:-1] if data.endswith(")") else data
    app, _, data = action.partition(",")
    return app.strip(), data


def _peer_rows(conf: ConfigFile) -> list[Row]:
    rows = []
    for section in conf.sections:
        if section.name.lower() == "general":
            continue
        pairs: list[tuple[str, object]] = [("name", section.name)]
        pairs += [(variable.name.lower(), variable.value) for variable in section.variables]
        rows.append(_static_row(pairs))
    return rows


def _static_row(pairs: list[tuple[str, object]]) -> Row:
    """A row from file lines: repeated names are multi-values, the last one is row[name]."""
    values: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for name, value in pairs:
        text = str(value).strip()
        if not text:
            continue
        values[name] = text
        multi.setdefault(name, []).append(text)
    return Row(values, {name: items for name, items in multi.items() if len(items) > 1})


def static_rows(family: str, conf: ConfigFile) -> list[Row]:
    """The rows the `static` driver serves for `family` from a parsed .conf file."""
    if family == "voicemail":
        return _voicemail_rows(conf)
    if family == "extensions":
        return _extension_rows(conf)
    return _peer_rows(conf)


_NUMBER = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")


def _number(text: str) -> float | None:
    """A static value that reads as a decimal number (not "inf" or "1e3"), else None."""
    return float(text) if _NUMBER.fullmatch(text.strip()) else None


def _like(pattern: str) -> re.Pattern[str]:
    out, escaped = [], False
    for ch in pattern:
        if escaped:
            out.append(re.escape(ch))
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "%":
            out.append(".*")
        elif ch == "_":
            out.append(".")
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out), re.DOTALL)


def _static_match(row: Row, condition: Condition) -> bool:
    """SQL-like comparison on a static row: a missing column is NULL and matches nothing;
    numbers compare as numbers, everything else as case-sensitive text."""
    have = row.get(condition.column)
    if have is None:
        return False
    want = condition.value
    operator = condition.operator
    if operator in ("LIKE", "NOT LIKE"):
        return (_like(want).fullmatch(have) is not None) == (operator == "LIKE")
    left: Any = have
    right: Any = want
    have_number, want_number = _number(have), _number(want)
    if have_number is not None and want_number is not None:
        left, right = have_number, want_number
    if operator == "=":
        return left == right
    if operator in ("!=", "<>"):
        return left != right
    if operator == "<":
        return left < right
    if operator == "<=":
        return left <= right
    if operator == ">":
        return left > right
    return left >= right


def _sort_key(column: str) -> Callable[[Row], tuple[int, float, str]]:
    def key(row: Row) -> tuple[int, float, str]:
        value = row.get(column, "")
        number = _number(value)
        return (0, number, "") if number is not None else (1, 0.0, value)

    return key


def static_select(rows: list[Row], conditions: list[Condition], single: bool) -> list[Row]:
    """The rows matching every condition: the first one, or all ordered by the first field."""
    matching = [row for row in rows if all(_static_match(row, c) for c in conditions)]
    if single:
        return matching[:1]
    return sorted(matching, key=_sort_key(conditions[0].column))
