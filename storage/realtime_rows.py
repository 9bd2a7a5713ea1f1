"""Realtime rows and lookups, shared by the ODBC and static drivers: res_config_odbc's value
encoding, the Row type, and the checked `field [operator]` conditions of a lookup."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "Condition",
    "Row",
    "check_column",
    "decode_value",
    "encode_value",
    "parse_conditions",
    "row_key",
    "row_kind",
    "row_problem",
]

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


# --- rows we refuse ----------------------------------------------------------------------------
#
# A realtime table is edited by hand, by web panels and by other servers, so a row can hold
# anything. A row that cannot be right is refused where it is read (logged with its table and
# key, and left out of the answer, so a lookup of it finds nothing) rather than reaching a
# path, a mail header or a socket address. The rules are per kind of row; a family that is
# none of these kinds is passed through unchecked.

# A context, mailbox, peer or extension name: what may become a directory or file name.
_NAME = re.compile(r"^[A-Za-z0-9_+*#%!~-][A-Za-z0-9_.+*#%!~-]{0,79}$")
_APP = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,79}$")
_HOST = re.compile(r"^(?:dynamic|[A-Za-z0-9_.-]{1,253}|\[?[0-9A-Fa-f:.]{2,45}\]?)$")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # tab is allowed; CR, LF, NUL are not
# Whole-number voicemail options and the ranges Asterisk could ever mean (MAXMSGLIMIT 9999).
_VOICEMAIL_NUMBERS = {
    "maxmsg": (0, 9999),
    "maxsecs": (0, 86400),
    "maxmessage": (0, 86400),
    "minsecs": (0, 86400),
    "maxsilence": (0, 86400),
    "silencethreshold": (0, 32767),
}
_PEER_FAMILIES = frozenset({"sippeers", "sipusers", "sipfriends"})
MAX_VALUE = 4096  # no realtime column Asterisk reads is longer than this


def row_kind(family: str, columns: set[str]) -> str | None:
    """Which rules apply to rows of `family` looked up by `columns`: voicemail, peer,
    extension, or None (unchecked)."""
    if family == "voicemail":
        return "voicemail"
    if family in _PEER_FAMILIES:
        return "peer"
    if family == "extensions" or "exten" in columns:
        return "extension"
    return None


def row_key(kind: str, row: Mapping[str, str]) -> str:
    """What names the row in a log line (its key columns, or its uniqueid/id)."""
    names = {
        "voicemail": ("uniqueid", "context", "mailbox"),
        "peer": ("id", "name"),
        "extension": ("id", "context", "exten", "priority"),
    }[kind]
    shown = [f"{name}={row[name][:40]!r}" for name in names if name in row]
    return " ".join(shown) or "(no key columns)"


def row_problem(kind: str, row: Mapping[str, str]) -> str | None:
    """Why a row of this kind cannot be used, or None when it can."""
    for name, value in row.items():
        if len(value) > MAX_VALUE:
            return f"column {name} is {len(value)} characters long"
        if _CONTROL.search(value):
            return f"column {name} holds control characters"
    required = {"voicemail": ("context", "mailbox"), "peer": ("name",), "extension": ()}[kind]
    for name in required:
        if not row.get(name):
            return f"column {name} is NULL or empty"
    if kind == "voicemail":
        return _voicemail_problem(row)
    if kind == "peer":
        return _peer_problem(row)
    return _extension_problem(row)


def _bad_name(row: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        value = row.get(name)
        if value is not None and (not _NAME.match(value) or ".." in value):
            return f"column {name} {value[:40]!r} is not a valid name"
    return None


def _number_problem(row: Mapping[str, str], name: str, low: int, high: int) -> str | None:
    value = row.get(name)
    if value is None:
        return None
    try:
        number = int(value.strip())
    except ValueError:
        return f"column {name} {value[:40]!r} is not a whole number"
    if not low <= number <= high:
        return f"column {name} {number} is outside {low}..{high}"
    return None


def _voicemail_problem(row: Mapping[str, str]) -> str | None:
    problem = _bad_name(row, "context", "mailbox")
    for name, (low, high) in _VOICEMAIL_NUMBERS.items():
        problem = problem or _number_problem(row, name, low, high)
    return problem


def _peer_problem(row: Mapping[str, str]) -> str | None:
    problem = _bad_name(row, "name", "context")
    host = row.get("host")
    if problem is None and host is not None and not _HOST.match(host):
        problem = f"column host {host[:40]!r} is not a host name or address"
    return problem or _number_problem(row, "port", 1, 65535)


def _extension_problem(row: Mapping[str, str]) -> str | None:
    if not row.get("context") or not row.get("exten"):
        return "column context or exten is NULL or empty"
    problem = _bad_name(row, "context")
    exten = row["exten"]
    if problem is None and ("/" in exten or " " in exten):
        problem = f"column exten {exten[:40]!r} is not a valid extension"
    if problem is None and "priority" not in row:
        problem = "column priority is NULL or empty"
    problem = problem or _number_problem(row, "priority", 1, 100000)
    app = row.get("app")
    if problem is None and (app is None or not _APP.match(app)):
        problem = f"column app {(app or '')[:40]!r} is not an application name"
    return problem
