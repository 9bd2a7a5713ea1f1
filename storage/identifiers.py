"""SQL identifiers we interpolate into statements: table, schema and column names.

Names come from configuration files and database rows, so they are checked before they form
SQL text. Every module that builds SQL from a configured name uses these two functions.
"""

from __future__ import annotations

import re

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_identifier(name: str, what: str = "name") -> str:
    """Return `name` if it is a plain SQL identifier (it is interpolated into SQL), else raise."""
    if not _IDENTIFIER.match(name):
        raise ValueError(f"invalid {what} {name!r}: only letters, digits and _ are allowed")
    return name


def split_table_name(name: str, what: str = "table name") -> tuple[str | None, str]:
    """`schema.table` or `table` -> (schema or None, table), both checked."""
    schema, _, table = name.rpartition(".")
    if schema:
        check_identifier(schema, what.replace("table", "schema"))
    return schema or None, check_identifier(table, what)
