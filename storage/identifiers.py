"""Names we build text from: SQL identifiers, and mailbox and context names.

SQL identifiers (table, schema, column names) come from configuration files and database
rows, so they are checked before they form SQL text; every module that builds SQL from a
configured name uses `check_identifier` and `split_table_name`. Values always travel as
query parameters.

Mailbox and context names come from SIP (the Request-URI through the dial plan), DTMF, the
dial plan and database rows, and become the components of a message's `dir` key, which is
the spool path Asterisk's make_dir() gives (`/var/spool/asterisk/voicemail/<context>/
<mailbox>/INBOX`) and which an Asterisk sharing the tables creates on disk. `check_box_name`
refuses what would climb out of that directory or confuse a file name: `/`, `\\`, `.` and
`..`, control characters (NUL, CR, LF...), the empty name and names longer than Asterisk's
columns (80). Anything else (digits, letters in any script, spaces, quotes, `%`) is a name.
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


MAX_BOX_NAME = 80  # Asterisk's voicemail table: mailbox and context are varchar(80)
_NOT_IN_BOX_NAME = re.compile(r"[/\\\x00-\x1f\x7f-\x9f]")  # separators, C0 and C1 controls


def box_name_problem(name: object) -> str | None:
    """Why `name` cannot be a mailbox or context name (a `dir` component), or None."""
    if not isinstance(name, str) or not name:
        return "it is empty"
    if len(name) > MAX_BOX_NAME:
        return f"it is longer than {MAX_BOX_NAME} characters"
    if name in (".", ".."):
        return "it is a relative path"
    bad = _NOT_IN_BOX_NAME.search(name)  # one C scan: the MWI poll checks 30 000 a poll
    if bad is None:
        return None
    char = bad.group()
    if char in "/\\":
        return f"it contains {char!r}"
    return f"it contains the control character {char!r}"


def check_box_name(name: str, what: str = "mailbox") -> str:
    """Return `name` if it may be a mailbox or context name, else raise ValueError."""
    problem = box_name_problem(name)
    if problem is not None:
        raise ValueError(f"invalid {what} {str(name)[:100]!r}: {problem}")
    return name
