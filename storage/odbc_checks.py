"""Start-up checks of a MariaDB/MySQL database: recordings must fit in a packet and a column.

Re-exported by storage.odbc, where callers import them from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyodbc

from storage.identifiers import check_identifier, split_table_name
from storage.odbc_errors import DatabaseError

if TYPE_CHECKING:
    from storage.odbc import OdbcPool

__all__ = ["MIN_MAX_ALLOWED_PACKET", "check_blob_column", "max_allowed_packet_problem"]

# MariaDB's default, and what a 10 MB recording (a few minutes of WAV) needs with headroom.
MIN_MAX_ALLOWED_PACKET = 16 * 1024 * 1024


def max_allowed_packet_problem(name: str, value: int) -> str | None:
    """A warning naming the fix when MariaDB's max_allowed_packet is below 16 MB, else None."""
    if value >= MIN_MAX_ALLOWED_PACKET:
        return None
    return (
        f"[{name}] MariaDB max_allowed_packet is {value} bytes: a recording larger than that "
        "cannot be stored or read. Fix: SET GLOBAL max_allowed_packet = 67108864; and "
        "max_allowed_packet = 64M in the [mysqld] section of the server's my.cnf"
    )


async def check_blob_column(pool: OdbcPool, table: str, column: str) -> None:
    """Raise DatabaseError when a MariaDB/MySQL BLOB column is smaller than LONGBLOB.

    A plain BLOB holds 64 KB (about 4 s of 8 kHz WAV) and MEDIUMBLOB 16 MB; Asterisk's tables
    use LONGBLOB. The message names the ALTER TABLE that fixes it. Other backends: no check.
    """
    schema, name = split_table_name(table)
    check_identifier(column, "column name")
    if pool.backend != "mysql":
        return

    def data_type(connection: pyodbc.Connection) -> str | None:
        row = (
            connection.cursor()
            .execute(
                "SELECT data_type FROM information_schema.columns"
                " WHERE table_schema = COALESCE(?, DATABASE()) AND table_name = ?"
                " AND column_name = ?",
                [schema or None, name, column],
            )
            .fetchone()
        )
        return None if row is None else str(row[0]).lower()

    found = await pool.run(data_type)
    if found is None:
        raise DatabaseError(f"[{pool.name}] table {table} has no column {column}")
    if found != "longblob":
        raise DatabaseError(
            f"[{pool.name}] column {table}.{column} is {found.upper()}, which holds "
            f"{_BLOB_LIMITS.get(found, 'too little')}; recordings need LONGBLOB. Fix: "
            f"ALTER TABLE {table} MODIFY {column} LONGBLOB; (repeat NOT NULL if the column "
            "has it)"
        )


_BLOB_LIMITS = {"tinyblob": "255 bytes", "blob": "64 KB", "mediumblob": "16 MB"}
