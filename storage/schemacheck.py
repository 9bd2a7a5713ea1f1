"""`voicemail db check`: compare the database with the tables we expect, and say how to fix it.

An operator pointing us at an existing Asterisk database wants to know before the first call
that a table or column is missing or that MariaDB's `recording` is a 64 KB BLOB that cuts
messages after four seconds. Each finding carries the SQL that fixes it. Every mapped family
has its table definition here (`expected_table`), so start-up can check them all.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyodbc
from sqlalchemy import Table
from sqlalchemy.schema import CreateIndex, CreateTable

from storage.odbc import DatabaseError, OdbcPool, sqlstate_of
from storage.realtime_tables import extensions_table, sippeers_table
from storage.schema import (
    dialect_for,
    login_audit_table,
    login_state_table,
    mailbox_changes_table,
    messages_table,
    outbox_table,
    table_columns,
    voicemail_table,
)
from storage.staticconfig import ast_config_table

# Columns the code cannot do without; the others are optional (Asterisk 22 dropped
# macrocontext, older tables lack category or msg_id; realtime writes skip columns a table
# lacks) and only reported as notes.
REQUIRED_COLUMNS = {
    "voicemessages": {"dir", "msgnum", "recording"},
    "voicemail": {"context", "mailbox", "password"},
    "sippeers": {"name"},
    "extensions": {"context", "exten", "priority", "app", "appdata"},
    "ast_config": {
        "filename",
        "commented",
        "category",
        "cat_metric",
        "var_name",
        "var_val",
        "var_metric",
    },
    "outbox": {c.name for c in outbox_table().columns},
    "mailbox_changes": {c.name for c in mailbox_changes_table().columns},
    "vm_login_state": {c.name for c in login_state_table().columns},
    "vm_login_audit": {c.name for c in login_audit_table().columns},
}

_DEFINITIONS = {
    "voicemessages": messages_table,
    "voicemail": voicemail_table,
    "sippeers": sippeers_table,
    "extensions": extensions_table,
    "ast_config": ast_config_table,
    "outbox": outbox_table,
    "mailbox_changes": mailbox_changes_table,
}


def expected_table(family: str, table_name: str) -> tuple[Table, str] | None:
    """The table definition and check role for a mapped family (extconfig.conf), or for
    "voicemessages" (the odbcstorage table); `file.conf` families use the ast_config layout.
    None for a family without a definition of ours."""
    role = "ast_config" if family.endswith(".conf") else family
    define = _DEFINITIONS.get(role)
    if define is None:
        return None
    return define(name=table_name), role  # type: ignore[operator]


MYSQL_SMALL_BLOBS = ("tinyblob", "blob", "mediumblob", "varbinary", "binary")


@dataclass(frozen=True)
class Finding:
    severity: str  # "error": calls will fail or lose audio; "note": works, but differs
    table: str
    message: str
    fix: str = ""
    statements: tuple[str, ...] = ()  # the fix as SQL to run, when it is SQL

    def __str__(self) -> str:
        text = f"{self.severity}: {self.table}: {self.message}"
        return f"{text}\n    fix: {self.fix}" if self.fix else text


def _column_type_sql(table: Table, column: str, backend: str) -> str:
    dialect = dialect_for(backend)
    return table.c[column].type.compile(dialect=dialect)


def _mysql_column_type(
    cursor: pyodbc.Cursor, schema: str | None, table: str, column: str
) -> str | None:
    row = cursor.execute(
        "SELECT DATA_TYPE FROM information_schema.COLUMNS "
        "WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? AND COLUMN_NAME = ?",
        schema,
        table,
        column,
    ).fetchone()
    return str(row[0]).lower() if row else None


def _postgres_column_type(
    cursor: pyodbc.Cursor, schema: str | None, table: str, column: str
) -> str | None:
    row = cursor.execute(
        "SELECT data_type, udt_name FROM information_schema.columns "
        "WHERE table_schema = COALESCE(?, current_schema()) AND table_name = ? "
        "AND column_name = ?",
        schema,
        table,
        column,
    ).fetchone()
    return str(row[1]).lower() if row else None


def create_statements(table: Table, backend: str) -> tuple[str, ...]:
    """CREATE TABLE and CREATE INDEX for `table` on `backend`, each on one line."""
    dialect = dialect_for(backend)
    ddl = [CreateTable(table).compile(dialect=dialect)]
    ddl += [CreateIndex(index).compile(dialect=dialect) for index in table.indexes]
    return tuple(" ".join(str(statement).split()) for statement in ddl)


async def check_table(pool: OdbcPool, table: Table, role: str) -> list[Finding]:
    """Findings for one expected table; `role` is a key of REQUIRED_COLUMNS (see
    expected_table). A missing table is an error whose fix is its CREATE TABLE."""
    backend = pool.backend
    name = f"{table.schema}.{table.name}" if table.schema else table.name

    def inspect(connection: pyodbc.Connection) -> tuple[list[str] | None, dict[str, str]]:
        cursor = connection.cursor()
        try:
            columns = table_columns(cursor, name)
        except pyodbc.Error as exc:
            if sqlstate_of(exc, backend)[:2] != "42":
                raise  # not "no such table": the pool's error handling applies
            connection.rollback()
            return None, {}
        types: dict[str, str] = {}
        if "recording" in columns:
            if backend == "mysql":
                found = _mysql_column_type(cursor, table.schema, table.name, "recording")
            elif backend == "postgresql":
                found = _postgres_column_type(cursor, table.schema, table.name, "recording")
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
        statements = create_statements(table, backend)
        return [
            Finding(
                "error",
                name,
                f"table does not exist on [{pool.name}] (voicemail db init -C <dir> creates it)",
                "; ".join(statements),
                statements,
            )
        ]
    findings: list[Finding] = []
    required = REQUIRED_COLUMNS.get(role, set())
    quote = dialect_for(backend).identifier_preparer.quote
    for column in table.columns:
        if column.name in columns:
            continue
        fix = (
            f"ALTER TABLE {name} ADD COLUMN {quote(column.name)} "
            f"{_column_type_sql(table, column.name, backend)}"
        )
        severity = "error" if column.name in required else "note"
        findings.append(Finding(severity, name, f"column {column.name} is missing", fix, (fix,)))
    recording_type = types.get("recording")
    if backend == "mysql" and recording_type in MYSQL_SMALL_BLOBS:
        findings.append(
            Finding(
                "error",
                name,
                f"recording is {recording_type.upper()}, too small for voicemail audio "
                "(a BLOB holds 64 KB, about 4 s of WAV)",
                f"ALTER TABLE {name} MODIFY recording LONGBLOB",
                (f"ALTER TABLE {name} MODIFY recording LONGBLOB",),
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
