"""`voicemail db check`: compare the database with the tables we expect, and say how to fix it.

An operator pointing us at an existing Asterisk database wants to know before the first call
that a column is missing or that MariaDB's `recording` is a 64 KB BLOB that cuts messages
after four seconds. Each finding carries the SQL that fixes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyodbc
from sqlalchemy import Table
from sqlalchemy.schema import CreateTable

from storage.odbc import DatabaseError, OdbcPool
from storage.schema import dialect_for, table_columns

# Columns the code cannot do without; the others are optional (Asterisk 22 dropped
# macrocontext, older tables lack category or msg_id) and only reported as notes.
REQUIRED_COLUMNS = {
    "voicemessages": {"dir", "msgnum", "recording"},
    "voicemail": {"context", "mailbox", "password"},
}

MYSQL_SMALL_BLOBS = ("tinyblob", "blob", "mediumblob", "varbinary", "binary")


@dataclass(frozen=True)
class Finding:
    severity: str  # "error": calls will fail or lose audio; "note": works, but differs
    table: str
    message: str
    fix: str = ""

    def __str__(self) -> str:
        text = f"{self.severity}: {self.table}: {self.message}"
        return f"{text}\n    fix: {self.fix}" if self.fix else text


def _column_type_sql(table: Table, column: str, backend: str) -> str:
    dialect = dialect_for(backend)
    return table.c[column].type.compile(dialect=dialect)


def _mysql_column_type(cursor: pyodbc.Cursor, table: str, column: str) -> str | None:
    row = cursor.execute(
        "SELECT DATA_TYPE FROM information_schema.COLUMNS "
        "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND COLUMN_NAME = ?",
        table,
        column,
    ).fetchone()
    return str(row[0]).lower() if row else None


def _postgres_column_type(cursor: pyodbc.Cursor, table: str, column: str) -> str | None:
    row = cursor.execute(
        "SELECT data_type, udt_name FROM information_schema.columns "
        "WHERE table_name = ? AND column_name = ?",
        table,
        column,
    ).fetchone()
    return str(row[1]).lower() if row else None


async def check_table(pool: OdbcPool, table: Table, role: str) -> list[Finding]:
    """Findings for one expected table; `role` is "voicemessages" or "voicemail"."""
    backend = pool.backend
    name = table.name

    def inspect(connection: pyodbc.Connection) -> tuple[list[str] | None, dict[str, str]]:
        cursor = connection.cursor()
        try:
            columns = table_columns(cursor, name)
        except pyodbc.Error:
            connection.rollback()
            return None, {}
        types: dict[str, str] = {}
        if "recording" in columns:
            if backend == "mysql":
                found = _mysql_column_type(cursor, name, "recording")
            elif backend == "postgresql":
                found = _postgres_column_type(cursor, name, "recording")
            else:
                found = None
            if found:
                types["recording"] = found
        return columns, types

    try:
        columns, types = await pool.run(inspect)
    except DatabaseError as exc:
        return [Finding("error", name, f"cannot inspect: {exc}")]
    if columns is None:
        ddl = str(CreateTable(table).compile(dialect=dialect_for(backend))).strip()
        return [
            Finding(
                "error",
                name,
                "table does not exist",
                f"voicemail db init -C <dir>   (or: {' '.join(ddl.split())})",
            )
        ]
    findings: list[Finding] = []
    required = REQUIRED_COLUMNS.get(role, set())
    for column in table.columns:
        if column.name in columns:
            continue
        fix = (
            f"ALTER TABLE {name} ADD COLUMN {column.name} "
            f"{_column_type_sql(table, column.name, backend)}"
        )
        severity = "error" if column.name in required else "note"
        findings.append(Finding(severity, name, f"column {column.name} is missing", fix))
    recording_type = types.get("recording")
    if backend == "mysql" and recording_type in MYSQL_SMALL_BLOBS:
        findings.append(
            Finding(
                "error",
                name,
                f"recording is {recording_type.upper()}, too small for voicemail audio "
                "(a BLOB holds 64 KB, about 4 s of WAV)",
                f"ALTER TABLE {name} MODIFY recording LONGBLOB",
            )
        )
    if backend == "postgresql" and recording_type in ("oid", "lo"):
        findings.append(
            Finding(
                "note",
                name,
                f"recording is {recording_type} (large objects, Asterisk's old how-to); "
                "we read and write bytea",
                f"migrate the audio into a bytea column: ALTER TABLE {name} ADD COLUMN "
                "recording_bytea BYTEA, then copy with lo_get(recording)",
            )
        )
    return findings
