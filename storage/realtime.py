"""Realtime (ARA) lookups and writes by family name, with res_config_odbc's SQL and value rules.

extconfig.conf maps a family (e.g. `voicemail`) to a driver, a database and a table, with
priorities for failover. Callers ask by family; only this module builds the SQL.

Drivers:
- `odbc`: `family => odbc,<res_odbc class>[,<table>[,<priority>]]`, as res_config_odbc.
- `static`: `family => static,<file.conf>[,,<priority>]`, ours (Asterisk has no such driver):
  the family is served read-only from an Asterisk .conf file, so a small site (or a test) can
  use the same code path without a table. What a row is, per family:
    voicemail   voicemail.conf layout: each `[context]` section (except [general] and
                [zonemessages]) holds `mailbox => password,fullname,email,pager,options`
                lines; a line is a row with context, mailbox, password, fullname, email,
                pager plus one column per `name=value` of the `|`-separated options.
    extensions  extensions.conf layout: each `[context]` holds `exten => exten,priority,
                App(data)` lines (`same =>`, priority `n` and `n(label)` work; `hint`s are
                skipped); a line is a row with context, exten, priority, app, appdata.
    any other   (sippeers, iaxpeers, ...) sip.conf layout: each section except [general] is
                a row whose `name` is the section name and whose columns are its lines.
  Writes skip static mappings, as Asterisk skips a driver without that operation.

Values (res_config_odbc): lookups and written values have `^` and `;` encoded as `^5E` and
`^3B`; read values are decoded. A column whose text contains a literal `;` holds several
values: `Row.getall(name)` returns them (blank ones dropped), while `row[name]` is the whole
column text, decoded and stripped. NULL and blank columns are left out of a row, except
sorcery-style `@name` columns, which are kept (as "").

Failover: the next priority is tried only when a backend cannot be reached
(`DatabaseUnavailable`: connection failure, unknown res_odbc class, unreadable static file),
never when it answers "not found". Any other `DatabaseError` (a missing table or column, a
syntax error: SQLSTATE class 42) is the mapping's own fault, not an outage: it is raised to the
caller at once, for reads, writes and configuration files alike.

An optional per-family cache (`CachePolicy`) keeps answers for a while; Asterisk has none, so
it is off unless configured.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pyodbc

from storage.conffile import ConfigError, ConfigFile, load_config
from storage.identifiers import split_table_name
from storage.odbc import DatabaseError, DatabaseUnavailable, OdbcPool
from storage.realtime_rows import (
    Condition,
    Row,
    check_column,
    decode_value,
    encode_value,
    parse_conditions,
    row_key,
    row_kind,
    row_problem,
)
from storage.realtime_static import static_rows, static_select
from storage.staticconfig import load_static_config

log = logging.getLogger(__name__)

__all__ = [
    "CachePolicy",
    "Realtime",
    "RealtimeMapping",
    "Row",
    "decode_value",
    "encode_value",
    "static_rows",
]

DRIVERS = ("odbc", "static")

_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# ODBC SQL types that hold text (Asterisk's is_text()).
_TEXT_TYPES = frozenset({1, 12, -1, -8, -9, -10})

_CACHE_LIMIT = 10_000  # entries before expired ones are swept


@dataclass
class RealtimeMapping:
    """One extconfig.conf line: `family => driver,database,table,priority`."""

    family: str
    driver: str
    database: str
    table: str
    priority: int = 1


@dataclass(frozen=True)
class CachePolicy:
    """How long answers for one family are kept: `ttl` for rows, `negative_ttl` for "none"."""

    ttl: float
    negative_ttl: float = 0.0


@dataclass(frozen=True)
class _Column:
    name: str
    is_text: bool
    nullable: bool


def _quote(column: str, backend: str) -> str:
    """A column name as SQL: plain names bare (as Asterisk writes them), others quoted."""
    if _PLAIN.match(column):
        return column
    return f"`{column}`" if backend == "mysql" else f'"{column}"'


def _where_sql(conditions: list[Condition], backend: str) -> tuple[str, list[str]]:
    """`f1 = ? AND f2 LIKE ?` and the encoded values. SQLite's LIKE has no escape character
    unless told, so `\\_` (the realtime switch's pattern query) needs ESCAPE there."""
    parts = []
    for condition in conditions:
        sql = f"{_quote(condition.column, backend)} {condition.operator} ?"
        if "LIKE" in condition.operator and backend == "sqlite":
            sql += " ESCAPE '\\'"
        parts.append(sql)
    return " AND ".join(parts), [encode_value(c.value) for c in conditions]


def _as_text(value: object) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


def _make_row(pairs: list[tuple[str, object]]) -> Row:
    """A row from (column, value) pairs as res_config_odbc turns a result row into variables."""
    values: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for name, value in pairs:
        if name.startswith("@"):  # sorcery extended field: kept even when empty
            values[name] = "" if value is None else _as_text(value).strip()
            continue
        if value is None:
            continue
        text = _as_text(value)
        parts = [decode_value(chunk.strip()) for chunk in text.split(";") if chunk.strip()]
        if not parts:
            continue
        values[name] = decode_value(text.strip())
        if len(parts) > 1:
            multi[name] = parts
    return Row(values, multi)


def _usable_rows(
    family: str, table: str, conditions: list[Condition], rows: list[Row]
) -> list[Row]:
    """The rows that can be used; each one refused is logged with its table and key (a
    single-row lookup whose row is refused finds nothing, as for no row)."""
    kind = row_kind(family, {condition.column for condition in conditions})
    if kind is None:
        return rows
    usable = []
    for row in rows:
        problem = row_problem(kind, row)
        if problem is None:
            usable.append(row)
        else:
            log.error(
                "realtime %s: row of table %s (%s) refused: %s",
                family,
                table,
                row_key(kind, row),
                problem,
            )
    return usable


def _fetch_rows(cursor: pyodbc.Cursor, limit: int | None) -> list[Row]:
    names = [str(description[0]).lower() for description in cursor.description]
    rows = cursor.fetchmany(limit) if limit else cursor.fetchall()
    cursor.close()  # a single-row lookup uses the first row only, as res_config_odbc does
    return [_make_row(list(zip(names, row, strict=True))) for row in rows]


def _table_columns(cursor: pyodbc.Cursor, table: str) -> dict[str, _Column]:
    """Columns a table has, whether they hold text and whether they take NULL (Asterisk's
    odbc_cache_columns): names from an empty SELECT, types and nullability from the catalog."""
    cursor.execute(f"SELECT * FROM {table} WHERE 1 = 0")
    described = {str(d[0]).lower(): d for d in cursor.description}
    cursor.fetchall()
    schema, _, name = table.rpartition(".")
    catalog = {
        str(row.column_name).lower(): row
        for row in cursor.columns(table=name, schema=schema or None)
        if str(row.table_name).lower() == name.lower()
    }
    columns = {}
    for column, description in described.items():
        entry = catalog.get(column)
        if entry is not None:
            is_text = entry.data_type in _TEXT_TYPES
            nullable = entry.nullable != 0
        else:
            is_text = description[1] is str
            nullable = bool(description[6])
        columns[column] = _Column(column, is_text, nullable)
    return columns


# --- the families ---------------------------------------------------------------------------


class Realtime:
    """Realtime families served by res_odbc connection classes or static .conf files."""

    def __init__(
        self,
        mappings: list[RealtimeMapping],
        pools: dict[str, OdbcPool],
        *,
        retry_for: float = 0.0,
        cache: dict[str, CachePolicy] | None = None,
        clock: Callable[[], float] = time.monotonic,
        config_dir: Path | None = None,
    ) -> None:
        """`pools` by res_odbc class name; `config_dir` resolves relative static file names;
        `cache` per family (off by default); `clock` is injectable for tests."""
        self._pools = pools
        self._retry_for = retry_for
        self._policies = dict(cache or {})
        self._clock = clock
        self._config_dir = config_dir
        self._families: dict[str, list[RealtimeMapping]] = {}
        self._cache: dict[tuple[object, ...], tuple[float, list[Row]]] = {}
        self._columns: dict[tuple[str, str], dict[str, _Column]] = {}
        self._static: dict[tuple[str, Path], list[Row]] = {}
        # Lookups answered from the cache, and those that went to their mappings.
        self.cache_hits = 0
        self.cache_misses = 0
        for mapping in mappings:
            driver = mapping.driver.strip().lower()
            if driver not in DRIVERS:
                log.warning(
                    "realtime family %s: driver %r is not supported (only %s); mapping ignored",
                    mapping.family,
                    mapping.driver,
                    " and ".join(DRIVERS),
                )
                continue
            if driver == "odbc":
                split_table_name(mapping.table, "realtime table name")
            self._families.setdefault(mapping.family, []).append(mapping)
        for family_mappings in self._families.values():
            family_mappings.sort(key=lambda mapping: mapping.priority)

    def has_family(self, family: str) -> bool:
        """True when extconfig.conf maps this family (to an ODBC table or a static file)."""
        return family in self._families

    def invalidate(self, family: str | None = None) -> None:
        """Forget cached answers, table columns and static files (of one family, or all):
        what a reload does."""
        tables = {
            (m.database.strip('"'), m.table)
            for name, ms in self._families.items()
            if family is None or name == family
            for m in ms
        }
        self._cache = {
            key: entry
            for key, entry in self._cache.items()
            if family is not None and key[0] != family
        }
        self._columns = {key: c for key, c in self._columns.items() if key not in tables}
        self._static = {
            key: rows
            for key, rows in self._static.items()
            if family is not None and key[0] != family
        }

    # --- reading --------------------------------------------------------------------------

    async def load(self, family: str, **where: str) -> Row | None:
        """First row matching `field = value` for all fields (ast_load_realtime)."""
        return await self.load_where(family, where)

    async def load_where(self, family: str, where: Mapping[str, object]) -> Row | None:
        """As load(), for field names carrying an operator, e.g. {"exten LIKE": "1%"}.

        Returns None when nothing matches (or the family is not mapped). When a mapping's
        database cannot be reached, the next priority is tried; if none can, the last
        DatabaseUnavailable is raised. Any other DatabaseError (a missing table, say) is
        raised at once.
        """
        rows = await self._read(family, where, single=True)
        return rows[0] if rows else None

    async def load_multi(self, family: str, where: Mapping[str, object]) -> list[Row]:
        """Every matching row, ordered by the first field (ast_load_realtime_multientry)."""
        return await self._read(family, where, single=False)

    async def _read(self, family: str, where: Mapping[str, object], single: bool) -> list[Row]:
        mappings = self._families.get(family)
        if not mappings:
            return []
        conditions = parse_conditions(where, operators=True)
        if not conditions:
            raise ValueError("a realtime lookup needs at least one field")
        key = (family, single, tuple((c.column, c.operator, c.value) for c in conditions))
        cached = self._cache_get(key)
        if cached is not None:
            self.cache_hits += 1
            return cached
        self.cache_misses += 1
        error: DatabaseUnavailable | None = None
        for mapping in mappings:
            try:
                if mapping.driver.strip().lower() == "static":
                    rows = self._static_select(mapping, conditions, single)
                else:
                    rows = await self._odbc_select(mapping, conditions, single)
            except DatabaseUnavailable as exc:
                log.warning("realtime family %s on %s failed: %s", family, mapping.table, exc)
                error = exc
                continue
            rows = _usable_rows(family, mapping.table, conditions, rows)
            self._cache_put(key, rows)
            return [row.copy() for row in rows]
        assert error is not None
        raise error

    async def _odbc_select(
        self, mapping: RealtimeMapping, conditions: list[Condition], single: bool
    ) -> list[Row]:
        pool = self._pool(mapping)

        def work(connection: pyodbc.Connection) -> list[Row]:
            clause, values = _where_sql(conditions, pool.backend)
            sql = f"SELECT * FROM {mapping.table} WHERE {clause}"
            if not single:
                sql += f" ORDER BY {_quote(conditions[0].column, pool.backend)}"
            cursor = connection.cursor()
            cursor.execute(sql, values)
            return _fetch_rows(cursor, 1 if single else None)

        return await pool.run(work, retry_for=self._retry_for)

    def _static_select(
        self, mapping: RealtimeMapping, conditions: list[Condition], single: bool
    ) -> list[Row]:
        return static_select(self._static_rows(mapping), conditions, single)

    def _static_rows(self, mapping: RealtimeMapping) -> list[Row]:
        path = Path(mapping.database.strip().strip('"'))
        if not path.is_absolute():
            path = (self._config_dir or Path.cwd()) / path
        key = (mapping.family, path)
        if key not in self._static:
            try:
                self._static[key] = static_rows(mapping.family, load_config(path))
            except ConfigError as exc:
                raise DatabaseUnavailable(f"[static {path}] {exc}") from exc
        return self._static[key]

    def _pool(self, mapping: RealtimeMapping) -> OdbcPool:
        pool = self._pools.get(mapping.database.strip('"'))
        if pool is None:
            raise DatabaseUnavailable(f"[{mapping.database}] no such res_odbc class")
        return pool

    # --- writing --------------------------------------------------------------------------

    async def update(
        self, family: str, keyfield: str, lookup: str, fields: Mapping[str, object]
    ) -> int:
        """`UPDATE t SET f1 = ?, ... WHERE keyfield = ?` (ast_update_realtime); rows changed.

        Fields the table does not have are skipped (table columns are cached until
        invalidate()); an empty value for a nullable non-text column, or None, writes NULL.
        """
        key_column = check_column(keyfield)
        updates = {check_column(name): value for name, value in fields.items()}

        def build(pool: OdbcPool, mapping: RealtimeMapping) -> Callable[[pyodbc.Connection], int]:
            def work(connection: pyodbc.Connection) -> int:
                cursor = connection.cursor()
                columns = self._table_columns(pool, mapping.table, cursor)
                sets, values = self._set_clause(columns, updates, pool.backend, mapping.table)
                if not sets:
                    return 0
                values.append(encode_value(str(lookup)))
                sql = (
                    f"UPDATE {mapping.table} SET {sets}"
                    f" WHERE {_quote(key_column, pool.backend)} = ?"
                )
                return cursor.execute(sql, values).rowcount

            return work

        return await self._write(family, "update", build)

    async def update2(
        self, family: str, lookup: Mapping[str, object], fields: Mapping[str, object]
    ) -> int:
        """`UPDATE t SET u1 = ? ... WHERE l1 = ? AND ...` (ast_update2_realtime); rows changed.

        A lookup column the table does not have fails the update; update fields it does not
        have are skipped; values follow update()'s NULL rule.
        """
        conditions = parse_conditions(lookup, operators=False)
        if not conditions:
            raise ValueError("update2 needs at least one lookup field")
        updates = {check_column(name): value for name, value in fields.items()}

        def build(pool: OdbcPool, mapping: RealtimeMapping) -> Callable[[pyodbc.Connection], int]:
            def work(connection: pyodbc.Connection) -> int:
                cursor = connection.cursor()
                columns = self._table_columns(pool, mapping.table, cursor)
                missing = [c.column for c in conditions if c.column not in columns]
                if missing:
                    raise DatabaseError(
                        f"[{pool.name}] table {mapping.table} has no column "
                        f"{', '.join(missing)} to look rows up by",
                        sqlstate="42S22",
                    )
                sets, values = self._set_clause(columns, updates, pool.backend, mapping.table)
                if not sets:
                    return 0
                clause, where_values = _where_sql(conditions, pool.backend)
                sql = f"UPDATE {mapping.table} SET {sets} WHERE {clause}"
                return cursor.execute(sql, values + where_values).rowcount

            return work

        return await self._write(family, "update2", build)

    async def store(self, family: str, fields: Mapping[str, object]) -> int:
        """`INSERT INTO t (f1, ...) VALUES (?, ...)` (ast_store_realtime); rows inserted.

        All fields are written (an unknown column is a database error); None writes NULL.
        """
        names = [check_column(name) for name in fields]
        if not names:
            raise ValueError("store needs at least one field")
        values = [None if v is None else encode_value(str(v)) for v in fields.values()]

        def build(pool: OdbcPool, mapping: RealtimeMapping) -> Callable[[pyodbc.Connection], int]:
            def work(connection: pyodbc.Connection) -> int:
                columns = ", ".join(_quote(name, pool.backend) for name in names)
                marks = ", ".join("?" for _ in names)
                sql = f"INSERT INTO {mapping.table} ({columns}) VALUES ({marks})"
                return connection.cursor().execute(sql, values).rowcount

            return work

        return await self._write(family, "store", build)

    async def destroy(
        self,
        family: str,
        keyfield: str,
        lookup: str,
        where: Mapping[str, object] | None = None,
    ) -> int:
        """`DELETE FROM t WHERE f1 = ? AND ... AND keyfield = ?` (ast_destroy_realtime)."""
        conditions = parse_conditions(where or {}, operators=False)
        conditions.append(Condition(check_column(keyfield), "=", str(lookup)))

        def build(pool: OdbcPool, mapping: RealtimeMapping) -> Callable[[pyodbc.Connection], int]:
            def work(connection: pyodbc.Connection) -> int:
                clause, values = _where_sql(conditions, pool.backend)
                sql = f"DELETE FROM {mapping.table} WHERE {clause}"
                return connection.cursor().execute(sql, values).rowcount

            return work

        return await self._write(family, "destroy", build)

    async def _write(
        self,
        family: str,
        what: str,
        build: Callable[[OdbcPool, RealtimeMapping], Callable[[pyodbc.Connection], int]],
    ) -> int:
        """Run a write on the first mapping that takes it; static mappings are read-only."""
        error: DatabaseUnavailable | None = None
        for mapping in self._families.get(family, []):
            if mapping.driver.strip().lower() != "odbc":
                continue
            try:
                pool = self._pool(mapping)
                count = await pool.run(build(pool, mapping), retry_for=self._retry_for)
            except DatabaseUnavailable as exc:
                log.warning("realtime %s of %s on %s failed: %s", what, family, mapping.table, exc)
                error = exc
                continue
            self._forget_answers(family)
            return max(count, 0)
        if error is not None:
            raise error
        raise DatabaseError(f"realtime family {family} has no writable (odbc) mapping for {what}")

    def _table_columns(
        self, pool: OdbcPool, table: str, cursor: pyodbc.Cursor
    ) -> dict[str, _Column]:
        key = (pool.name, table)
        columns = self._columns.get(key)
        if columns is None:
            columns = _table_columns(cursor, table)
            self._columns[key] = columns
        return columns

    @staticmethod
    def _set_clause(
        columns: dict[str, _Column], updates: dict[str, object], backend: str, table: str
    ) -> tuple[str, list[str]]:
        sets: list[str] = []
        values: list[str] = []
        for name, value in updates.items():
            column = columns.get(name)
            if column is None:
                log.debug("realtime update: table %s has no column %s, skipped", table, name)
                continue
            text = None if value is None else str(value)
            if text is None or (text == "" and column.nullable and not column.is_text):
                sets.append(f"{_quote(name, backend)} = NULL")
            else:
                sets.append(f"{_quote(name, backend)} = ?")
                values.append(encode_value(text))
        return ", ".join(sets), values

    # --- static configuration files ---------------------------------------------------------

    async def load_config_file(self, filename: str) -> ConfigFile | None:
        """A configuration file mapped in extconfig.conf (`voicemail.conf => odbc,class,
        ast_config`), from its table (or static file), with failover; None when not mapped."""
        mappings = self._families.get(filename)
        if not mappings:
            return None
        error: DatabaseUnavailable | None = None
        for mapping in mappings:
            try:
                if mapping.driver.strip().lower() == "static":
                    path = Path(mapping.database.strip().strip('"'))
                    if not path.is_absolute():
                        path = (self._config_dir or Path.cwd()) / path
                    try:
                        return load_config(path)
                    except ConfigError as exc:
                        raise DatabaseUnavailable(f"[static {path}] {exc}") from exc
                return await load_static_config(self._pool(mapping), mapping.table, filename)
            except DatabaseUnavailable as exc:
                log.warning("configuration %s from %s failed: %s", filename, mapping.table, exc)
                error = exc
        assert error is not None
        raise error

    # --- cache ------------------------------------------------------------------------------

    def _cache_get(self, key: tuple[object, ...]) -> list[Row] | None:
        entry = self._cache.get(key)
        if entry is None:
            return None
        expires, rows = entry
        if self._clock() >= expires:
            del self._cache[key]
            return None
        return [row.copy() for row in rows]

    def _cache_put(self, key: tuple[object, ...], rows: list[Row]) -> None:
        policy = self._policies.get(str(key[0]))
        if policy is None:
            return
        ttl = policy.ttl if rows else policy.negative_ttl
        if ttl <= 0:
            return
        now = self._clock()
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache = {k: e for k, e in self._cache.items() if e[0] > now}
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
        self._cache[key] = (now + ttl, [row.copy() for row in rows])

    def _forget_answers(self, family: str) -> None:
        """Our own write must be visible to our next read."""
        self._cache = {key: entry for key, entry in self._cache.items() if key[0] != family}
