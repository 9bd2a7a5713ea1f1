"""Database errors as the rest of the program sees them, and how driver errors map onto them.

Three kinds matter to callers: a statement that failed on a good connection (`DatabaseError`;
`permanent` when it is a configuration error such as a missing table), a database that cannot
be reached (`DatabaseUnavailable`), and one that did not answer in time (`DatabaseTimeout`).
"""

from __future__ import annotations

import re

import pyodbc

__all__ = [
    "DatabaseError",
    "DatabaseTimeout",
    "DatabaseUnavailable",
    "driver_message",
    "is_statement_error",
    "is_timeout",
    "sqlstate_of",
]

# SQLSTATE classes that mean "this statement was wrong or lost a race", not "the link is broken":
# 22 data exception, 23 integrity constraint, 42 syntax/access, 40 transaction rollback
# (serialization failure, deadlock). The connection stays usable after a rollback.
_STATEMENT_CLASSES = ("22", "23", "40", "42")

# SQLSTATE class 42 (syntax error or access rule violation: missing table or column, bad SQL,
# no privilege) will fail the same way every time: a configuration error, not an outage.
_PERMANENT_CLASSES = ("42",)

# The driver gave up waiting: HYT00 timeout expired (SQL_ATTR_QUERY_TIMEOUT), HYT01 connection
# timeout expired; PostgreSQL's 57014 query_canceled (psqlODBC turns the query timeout into a
# statement_timeout) and 70100 (MySQL's query interrupted).
_TIMEOUT_STATES = ("HYT00", "HYT01", "57014", "70100")

# The SQLite ODBC driver reports everything as HY000 and puts SQLite's result code in parentheses.
_SQLITE_CODE = re.compile(r"\((\d+)\)\s*\(SQL\w*\)\s*$")
_SQLITE_STATES = {1: "42000", 18: "22001", 19: "23000", 20: "22000", 25: "22003"}
# ...and some of its prepare errors carry no code at all.
_SQLITE_SCHEMA_WORDS = re.compile(r"no such (table|column)|syntax error|has no column named")


class DatabaseError(Exception):
    """A database operation failed; str() names the connection class and the driver's message."""

    def __init__(self, message: str, *, sqlstate: str = "") -> None:
        super().__init__(message)
        self.sqlstate = sqlstate

    @property
    def permanent(self) -> bool:
        """True when retrying cannot help: the schema or the SQL is wrong (SQLSTATE class 42)."""
        return self.sqlstate[:2] in _PERMANENT_CLASSES


class DatabaseUnavailable(DatabaseError):
    """The database cannot be reached, or the connection was lost and retries ran out."""

    @property
    def permanent(self) -> bool:
        return False


class DatabaseTimeout(DatabaseUnavailable):
    """The database did not finish a unit of work within its deadline (dbtimeout).

    Whether a commit in flight took effect is unknown; work must be safe to repeat.
    """


def driver_message(exc: BaseException) -> str:
    """The driver's own text for an error (pyodbc puts it second in args)."""
    if len(exc.args) >= 2 and isinstance(exc.args[1], str):
        return exc.args[1]
    return str(exc)


def sqlstate_of(exc: pyodbc.Error, backend: str | None = None) -> str:
    """The SQLSTATE of a driver error, with SQLite's result codes turned into standard ones."""
    state = exc.args[0] if exc.args and isinstance(exc.args[0], str) else ""
    if backend == "sqlite" and state == "HY000":
        message = driver_message(exc)
        match = _SQLITE_CODE.search(message)
        if match:
            return _SQLITE_STATES.get(int(match.group(1)), state)
        if _SQLITE_SCHEMA_WORDS.search(message):
            return "42000"
    return state


def is_statement_error(exc: pyodbc.Error, backend: str | None = None) -> bool:
    """True when the statement failed but the connection is still good."""
    if is_timeout(exc, backend):
        return False
    if isinstance(exc, pyodbc.IntegrityError | pyodbc.ProgrammingError | pyodbc.DataError):
        return True
    return sqlstate_of(exc, backend)[:2] in _STATEMENT_CLASSES


def is_timeout(exc: pyodbc.Error, backend: str | None = None) -> bool:
    """True when the driver or server gave up waiting (query or connection timeout)."""
    if sqlstate_of(exc) in _TIMEOUT_STATES:
        return True
    # Connector/ODBC reports max_statement_time (server error 1969) as HY018 or HY000.
    return backend == "mysql" and "max_statement_time exceeded" in driver_message(exc)
