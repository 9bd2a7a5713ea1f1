"""Realtime rows and lookups, shared by the ODBC and static drivers: res_config_odbc's value
encoding, the Row type, and the checked `field [operator]` conditions of a lookup."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Condition", "Row", "check_column", "decode_value", "encode_value", "parse_conditions"]

# Operators a field name may carry after a space ("exten LIKE", "regseconds >"). Asterisk pastes
# whatever follows the space into the SQL; only these are accepted here.
_OPERATORS = frozenset({"=", "!=", "<>", "<", "<=", ">", ">=", "LIKE", "NOT LIKE"})

# Column names: identifiers, plus the dashes some Asterisk columns have ("call-limit").
_COLUMN = re.compile(r"^@?[A-Za-z_][A-Za-z0-9_]*(?:-[A-Za-z0-9_]+)*$")

# Asterisk writes ^XX (two upper-case hex digits) for ';' and '^'; decode_chunk takes any XX.
_ENCODED = re.compile(r"\^([0-7][0-9A-F])")


def encode_value(value: str) -> str:
    """`^` and `;` as res_config_odbc stores them (`^5E`, `^3B`)."""
    return value.replace("^", "^5E").replace(";", "^3B")


def decode_value(value: str) -> str:
    """The inverse of encode_value (any `^XX` of an ASCII character, as Asterisk decodes)."""
    return _ENCODED.sub(lambda match: chr(int(match.group(1), 16)), value)


class Row(dict[str, str]):
    """One realtime row: lower-case column name -> whole value; getall() for multi-values."""

    def __init__(
        self, values: Mapping[str, str] | None = None, multi: Mapping[str, list[str]] | None = None
    ) -> None:
        super().__init__(values or {})
        self._multi = {name: list(items) for name, items in (multi or {}).items()}

    def getall(self, name: str) -> list[str]:
        """Every value of a column, in order: its `;`-separated parts (or repeated lines)."""
        key = name.lower()
        if key in self._multi:
            return list(self._multi[key])
        return [self[key]] if key in self else []

    def copy(self) -> Row:
        return Row(self, self._multi)


@dataclass(frozen=True)
class Condition:
    column: str  # lower-case
    operator: str  # one of _OPERATORS
    value: str  # as given, not yet encoded


def check_column(name: str) -> str:
    if not _COLUMN.match(name):
        raise ValueError(
            f"invalid realtime column name {name!r}: only letters, digits, _ and - are allowed"
        )
    return name.lower()


def parse_conditions(where: Mapping[str, object], operators: bool) -> list[Condition]:
    """Parse `{"exten LIKE": "1%", "context": "x"}`; names are checked here, before any SQL."""
    conditions = []
    for field, value in where.items():
        name, _, operator = field.strip().partition(" ")
        operator = " ".join(operator.split()).upper() or "="
        if operator not in _OPERATORS or (operator != "=" and not operators):
            raise ValueError(f"unsupported operator in realtime field {field!r}")
        conditions.append(Condition(check_column(name), operator, str(value)))
    return conditions
