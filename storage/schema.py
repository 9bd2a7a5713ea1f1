"""The Asterisk-compatible tables, defined once in SQLAlchemy Core, and SQL text made from them.

SQLAlchemy is used only to describe tables and to render SQL for the backend in use; statements
run on raw pyodbc cursors. Each statement is compiled once with the backend's base dialect
(positional `?` parameters) and kept with its parameter order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pyodbc
from sqlalchemy import (
    Column,
    DateTime,
    Double,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.mysql import LONGBLOB, MEDIUMTEXT
from sqlalchemy.dialects.mysql.base import MySQLDialect
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.dialects.sqlite.base import SQLiteDialect
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.ddl import CreateIndex, CreateTable

from storage.identifiers import split_table_name
from storage.odbc import DatabaseError, OdbcPool

# The base dialect classes: SQLAlchemy 2.1's default PostgreSQL dialect is psycopg's, whose
# `?::VARCHAR` casts do not suit psqlODBC.
_DIALECTS: dict[str, type[Dialect]] = {
    "postgresql": PGDialect,
    "mysql": MySQLDialect,
    "sqlite": SQLiteDialect,
}
_dialect_cache: dict[str, Dialect] = {}

# Recordings: BYTEA on PostgreSQL, BLOB on SQLite, LONGBLOB on MariaDB/MySQL (plain BLOB is 64 KB).
Recording = LargeBinary().with_variant(LONGBLOB(), "mysql", "mariadb")

# Asterisk's alembic uses an ENUM('yes','no'); a short string reads the same through ODBC and
# needs no CREATE TYPE on PostgreSQL.
YesNo = String(3)

_MYSQL_OPTIONS = {"mysql_engine": "InnoDB", "mysql_default_charset": "utf8mb4"}


def messages_table(name: str = "voicemessages", metadata: MetaData | None = None) -> Table:
    """app_voicemail's ODBC message table (Asterisk alembic `voicemail_messages` columns)."""
    schema, table = split_table_name(name)
    return Table(
        table,
        metadata if metadata is not None else MetaData(),
        Column("dir", String(255), primary_key=True, nullable=False),
        Column("msgnum", Integer, primary_key=True, nullable=False, autoincrement=False),
        Column("context", String(80)),
        Column("macrocontext", String(80)),
        Column("callerid", String(80)),
        Column("origtime", Integer),
        Column("duration", Integer),
        Column("recording", Recording),
        Column("flag", String(30)),
        Column("category", String(30)),
        Column("mailboxuser", String(30)),
        Column("mailboxcontext", String(30)),
        Column("msg_id", String(40)),
        schema=schema,
        quote=False,  # Asterisk's SQL names the table unquoted
        **_MYSQL_OPTIONS,
    )


def voicemail_table(metadata: MetaData | None = None, name: str = "voicemail") -> Table:
    """The realtime `voicemail` family table (mailbox users), as Asterisk's alembic creates it."""
    schema, table_name = split_table_name(name)
    table = Table(
        table_name,
        metadata if metadata is not None else MetaData(),
        Column("uniqueid", Integer, primary_key=True, autoincrement=True),
        Column("context", String(80), nullable=False, server_default="default"),
        Column("mailbox", String(80), nullable=False),
        Column("password", String(80), nullable=False),
        Column("fullname", String(80)),
        Column("alias", String(80)),
        Column("email", String(80)),
        Column("pager", String(80)),
        Column("attach", YesNo),
        Column("attachfmt", String(10)),
        Column("serveremail", String(80)),
        Column("language", String(20)),
        Column("tz", String(30)),
        Column("deletevoicemail", YesNo),
        Column("saycid", YesNo),
        Column("sendvoicemail", YesNo),
        Column("review", YesNo),
        Column("tempgreetwarn", YesNo),
        Column("operator", YesNo),
        Column("envelope", YesNo),
        Column("sayduration", Integer),
        Column("forcename", YesNo),
        Column("forcegreetings", YesNo),
        Column("callback", String(80)),
        Column("dialout", String(80)),
        Column("exitcontext", String(80)),
        Column("maxmsg", Integer),
        Column("volgain", Numeric(5, 2)),
        Column("imapuser", String(80)),
        Column("imappassword", String(80)),
        Column("imapserver", String(80)),
        Column("imapport", String(8)),
        Column("imapflags", String(80)),
        Column("stamp", DateTime),
        schema=schema,
        quote=False,
        **_MYSQL_OPTIONS,
    )
    Index(f"{table_name}_mailbox", table.c.mailbox)
    Index(f"{table_name}_context", table.c.context)
    Index(f"{table_name}_mailbox_context", table.c.mailbox, table.c.context)
    Index(f"{table_name}_imapuser", table.c.imapuser)
    return table


# Outbox payloads and errors: TEXT is 64 KB on MariaDB, MEDIUMTEXT 16 MB.
LongText = Text().with_variant(MEDIUMTEXT(), "mysql", "mariadb")


def outbox_table(name: str = "outbox", metadata: MetaData | None = None) -> Table:
    """Mail, pager and webhook notifications waiting to be sent (storage/outbox.py).

    (msg_id, kind, recipient) is unique, so an enqueue run twice (a retried deposit, a spool
    flushed again after a crash) cannot make a second mail. Times are unix seconds.
    """
    schema, table_name = split_table_name(name)
    table = Table(
        table_name,
        metadata if metadata is not None else MetaData(),
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("kind", String(16), nullable=False),
        Column("context", String(80), nullable=False),
        Column("mailbox", String(80), nullable=False),
        Column("msg_id", String(40), nullable=False),
        Column("recipient", String(255), nullable=False),
        Column("payload", LongText),
        Column("state", String(8), nullable=False),
        Column("attempts", Integer, nullable=False),
        Column("next_attempt", Double, nullable=False),
        Column("claimed_by", String(80)),
        Column("claimed_until", Double),
        Column("last_error", LongText),
        Column("created", Double, nullable=False),
        Column("sent_at", Double),
        UniqueConstraint("msg_id", "kind", "recipient", name=f"{table_name}_once"),
        schema=schema,
        quote=False,
        **_MYSQL_OPTIONS,
    )
    Index(f"{table_name}_due", table.c.state, table.c.next_attempt)
    return table


def mailbox_changes_table(name: str = "mailbox_changes", metadata: MetaData | None = None) -> Table:
    """One row per mailbox change, read by id by the other servers (storage/changelog.py).

    AUTOINCREMENT on SQLite: ids are never reused after pruning, so a reader's last id stays
    meaningful.
    """
    schema, table_name = split_table_name(name)
    return Table(
        table_name,
        metadata if metadata is not None else MetaData(),
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("context", String(80), nullable=False),
        Column("mailbox", String(80), nullable=False),
        Column("changed_at", Double, nullable=False),
        schema=schema,
        quote=False,
        sqlite_autoincrement=True,
        **_MYSQL_OPTIONS,
    )


def login_state_table(name: str = "vm_login_state", metadata: MetaData | None = None) -> Table:
    """Failed logins and lockouts per mailbox, shared by every server (storage/logins.py).

    Times are unix seconds; locked_until is 0 when the mailbox is not locked.
    """
    schema, table_name = split_table_name(name)
    return Table(
        table_name,
        metadata if metadata is not None else MetaData(),
        Column("context", String(80), primary_key=True, nullable=False),
        Column("mailbox", String(80), primary_key=True, nullable=False),
        Column("failures", Integer, nullable=False),
        Column("locked_until", Double, nullable=False),
        Column("lockouts", Integer, nullable=False),
        schema=schema,
        quote=False,
        **_MYSQL_OPTIONS,
    )


def login_audit_table(name: str = "vm_login_audit", metadata: MetaData | None = None) -> Table:
    """One row per mailbox login attempt and lockout (storage/logins.py); never a PIN."""
    schema, table_name = split_table_name(name)
    table = Table(
        table_name,
        metadata if metadata is not None else MetaData(),
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("at", Double, nullable=False),
        Column("mailbox", String(80), nullable=False),
        Column("context", String(80), nullable=False),
        Column("outcome", String(8), nullable=False),
        Column("caller_id", String(255), nullable=False),
        Column("source", String(80), nullable=False),
        schema=schema,
        quote=False,
        sqlite_autoincrement=True,
        **_MYSQL_OPTIONS,
    )
    Index(f"{table_name}_mailbox", table.c.context, table.c.mailbox, table.c.id)
    return table


def storage_tables(messages_name: str = "voicemessages") -> list[Table]:
    """The tables `voicemail db init` (and start-up) creates in the odbcstorage class:
    messages, outbox, mailbox change log, login state and login audit."""
    return [
        messages_table(messages_name),
        outbox_table(),
        mailbox_changes_table(),
        login_state_table(),
        login_audit_table(),
    ]


def dialect_for(backend: str) -> Dialect:
    """The SQLAlchemy base dialect for a pool's backend, with qmark parameters."""
    if backend not in _dialect_cache:
        try:
            dialect_class = _DIALECTS[backend]
        except KeyError:
            raise ValueError(f"unknown backend {backend!r}") from None
        _dialect_cache[backend] = dialect_class(paramstyle="qmark")
    return _dialect_cache[backend]


@dataclass(frozen=True)
class CompiledSql:
    """SQL text for one backend with the names of its `?` parameters in order."""

    sql: str
    param_order: tuple[str, ...]
    defaults: Mapping[str, Any] = field(default_factory=dict)

    def parameters(self, values: Mapping[str, Any] | None = None) -> list[Any]:
        """Positional parameters from named values (literal values of the statement as defaults)."""
        given = values or {}
        try:
            return [
                given[name] if name in given else self.defaults[name] for name in self.param_order
            ]
        except KeyError as exc:
            raise KeyError(f"no value for SQL parameter {exc.args[0]!r} in: {self.sql}") from None


def compile_sql(statement: ClauseElement, backend: str) -> CompiledSql:
    """Compile a Core statement once for `backend`.

    Name values with `bindparam("name")`; IN lists are rendered as one `?` per element, so a
    statement with an IN list is compiled for that list's length.
    """
    compiled = statement.compile(dialect=dialect_for(backend))
    required = {name for name, bind in compiled.binds.items() if bind.required}
    if "__[POSTCOMPILE_" in compiled.string:
        placeholders = {name: None for name in required}
        expanded = compiled.construct_expanded_state(placeholders)
        return CompiledSql(
            sql=expanded.statement,
            param_order=tuple(expanded.positiontup or ()),
            defaults={k: v for k, v in expanded.parameters.items() if k not in required},
        )
    return CompiledSql(
        sql=compiled.string,
        param_order=tuple(compiled.positiontup or ()),
        defaults={k: v for k, v in compiled.params.items() if k not in required},
    )


def table_columns(cursor: pyodbc.Cursor, table: str) -> list[str]:
    """The lower-cased column names a table really has, in order (from an empty SELECT *)."""
    schema, name = split_table_name(table)
    qualified = f"{schema}.{name}" if schema else name
    cursor.execute(f"SELECT * FROM {qualified} WHERE 1 = 0")
    columns = [str(description[0]).lower() for description in cursor.description]
    cursor.fetchall()
    return columns


async def create_tables(pool: OdbcPool, tables: list[Table]) -> None:
    """Create those of `tables` (with their indexes) that the database does not have yet."""
    dialect = dialect_for(pool.backend)
    for table in tables:
        qualified = f"{table.schema}.{table.name}" if table.schema else table.name
        try:
            await pool.run(lambda connection, t=qualified: table_columns(connection.cursor(), t))
            continue
        except DatabaseError as exc:
            if exc.sqlstate[:2] != "42":
                raise
        statements = [str(CreateTable(table, if_not_exists=True).compile(dialect=dialect))]
        statements += [str(CreateIndex(index).compile(dialect=dialect)) for index in table.indexes]

        def create(connection: pyodbc.Connection, statements: list[str] = statements) -> None:
            cursor = connection.cursor()
            for sql in statements:
                cursor.execute(sql)

        await pool.run(create)
