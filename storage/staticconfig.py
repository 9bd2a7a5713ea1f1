"""Static configuration files kept in a database table (`file.conf => odbc,class,ast_config`).

Asterisk's res_config_odbc reads a whole .conf file from a table laid out as `ast_config`:
one row per `var_name = var_val` line, `category` naming its `[section]`, `cat_metric` and
`var_metric` giving the order, `commented = 1` switching a line off, and `var_name = '#include'`
pulling in another file. This module reads such a file into the same `ConfigFile` that
storage.conffile gives for a file on disk, so one loader serves both.

Order and grouping are res_config_odbc's (config_odbc): rows `ORDER BY cat_metric DESC,
var_metric ASC, category, var_name`, and a new section starts whenever `category` or
`cat_metric` changes from the previous row (so one category split by another gives two
sections of the same name, as in a file). For error messages, a section's `line` is its
cat_metric and a variable's `line` its var_metric; `filename` reads "<file> (table <t>)".
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pyodbc
from sqlalchemy import Column, Index, Integer, MetaData, String, Table

from storage.conffile import ConfigError, ConfigFile, Section, Variable
from storage.identifiers import split_table_name
from storage.odbc import OdbcPool

__all__ = ["ast_config_table", "load_static_config"]

_MYSQL_OPTIONS = {"mysql_engine": "InnoDB", "mysql_default_charset": "utf8mb4"}

IncludeLoader = Callable[[str], Awaitable[ConfigFile]]


def ast_config_table(metadata: MetaData | None = None, name: str = "ast_config") -> Table:
    """The conventional `ast_config` table (Asterisk's realtime documentation)."""
    schema, table_name = split_table_name(name)
    table = Table(
        table_name,
        metadata if metadata is not None else MetaData(),
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("cat_metric", Integer, nullable=False, server_default="0"),
        Column("var_metric", Integer, nullable=False, server_default="0"),
        Column("commented", Integer, nullable=False, server_default="0"),
        Column("filename", String(128), nullable=False, server_default=""),
        Column("category", String(128), nullable=False, server_default="default"),
        Column("var_name", String(128), nullable=False, server_default=""),
        Column("var_val", String(255), nullable=False, server_default=""),
        schema=schema or None,
        quote=False,
        **_MYSQL_OPTIONS,
    )
    Index(f"{table_name}_filename_commented", table.c.filename, table.c.commented)
    return table


def _rows(table: str, filename: str) -> Callable[[pyodbc.Connection], list[tuple]]:
    def work(connection: pyodbc.Connection) -> list[tuple]:
        cursor = connection.cursor()
        cursor.execute(
            f"SELECT cat_metric, category, var_name, var_val, var_metric FROM {table}"
            " WHERE filename = ? AND commented = 0"
            " ORDER BY cat_metric DESC, var_metric ASC, category, var_name",
            [filename],
        )
        return [tuple(row) for row in cursor.fetchall()]

    return work


async def load_static_config(
    pool: OdbcPool,
    table: str,
    filename: str,
    *,
    include: IncludeLoader | None = None,
) -> ConfigFile:
    """Read `filename` from an ast_config-style table; no rows gives an empty ConfigFile.

    `#include other.conf` rows are read, by default, from the same table (a file without rows
    there is a ConfigError, as an #include of a missing file is); pass `include` to resolve
    them otherwise (e.g. from disk with storage.conffile.load_config).
    """
    split_table_name(table)
    return await _load(pool, table, filename, include, opening=[], required=False)


async def _load(
    pool: OdbcPool,
    table: str,
    filename: str,
    include: IncludeLoader | None,
    opening: list[str],
    required: bool,
) -> ConfigFile:
    """Read one file; `opening` lists the files whose #include led here (loop detection)."""
    label = f"{filename} (table {table})"
    rows = await pool.run(_rows(table, filename))
    if not rows and required:
        raise ConfigError(
            f"{opening[-1]} (table {table})", 0, f'#include file "{filename}" has no rows'
        )
    opening = [*opening, filename]
    sections: list[Section] = []
    current: Section | None = None
    last: tuple[str, int] | None = None
    for cat_metric, category, var_name, var_val, var_metric in rows:
        category = "" if category is None else str(category).strip()
        var_name = "" if var_name is None else str(var_name).strip()
        value = "" if var_val is None else str(var_val).strip()
        if var_name == "#include":
            included = value.strip('"<>').strip()
            if included in opening:
                chain = " -> ".join([*opening, included])
                raise ConfigError(label, int(var_metric or 0), f"#include loop: {chain}")
            if include is not None:
                loaded = await include(included)
            else:
                loaded = await _load(pool, table, included, None, opening, required=True)
            sections.extend(loaded.sections)
            continue
        metric = int(cat_metric or 0)
        if current is None or last != (category, metric):
            current = Section(name=category, variables=[], filename=label, line=metric)
            sections.append(current)
            last = (category, metric)
        current.variables.append(
            Variable(var_name, value, False, filename=label, line=int(var_metric or 0))
        )
    return ConfigFile(label, sections)
