"""Realtime (ARA) lookups by family name, with res_config_odbc's SQL and value rules.

extconfig.conf maps a family (e.g. `voicemail`) to a res_odbc connection class and a table, with
priorities for failover. Callers ask by family; only this module builds the SQL.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial

import pyodbc

from storage.odbc import DatabaseError, DatabaseUnavailable, OdbcPool
from storage.schema import check_identifier

log = logging.getLogger(__name__)

# Operators a field name may carry after a space ("exten LIKE", "regseconds >"). Asterisk pastes
# whatever follows the space into the SQL; only these are accepted here.
_OPERATORS = frozenset({"=", "!=", "<>", "<", "<=", ">", ">=", "LIKE", "NOT LIKE"})

# Asterisk encodes ';' and '^' in stored values as ^3B and ^5E.
_ENCODED = re.compile(r"\^(3B|5E)")
_DECODED = {"3B": ";", "5E": "^"}


@dataclass
class RealtimeMapping:
    """One extconfig.conf line: `family => driver,database,table,priority`."""

    family: str
    driver: str
    database: str
    table: str
    priority: int = 1


def _where_clause(where: Mapping[str, str]) -> tuple[str, list[str]]:
    """`f1 = ? AND f2 LIKE ?` and the values, bound as strings."""
    if not where:
        raise ValueError("a realtime lookup needs at least one field")
    conditions = []
    values = []
    for field, value in where.items():
        name, _, operator = field.strip().partition(" ")
        check_identifier(name, "realtime column name")
        operator = " ".join(operator.split()).upper() or "="
        if operator not in _OPERATORS:
            raise ValueError(f"unsupported operator in realtime field {field!r}")
        conditions.append(f"{name} {operator} ?")
        values.append(str(value))
    return " AND ".join(conditions), values


def _decode(value: str) -> str:
    return _ENCODED.sub(lambda match: _DECODED[match.group(1)], value)


def _as_text(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


def _first_row(sql: str, values: list[str], connection: pyodbc.Connection) -> dict[str, str] | None:
    cursor = connection.cursor()
    cursor.execute(sql, values)
    row = cursor.fetchone()
    names = [str(description[0]).lower() for description in cursor.description]
    cursor.close()  # only the first row counts, as in res_config_odbc
    if row is None:
        return None
    result: dict[str, str] = {}
    for name, value in zip(names, row, strict=True):
        if value is None:
            continue
        text = _as_text(value).strip()
        if text:
            result[name] = _decode(text)
    return result


class Realtime:
    """Realtime families backed by res_odbc connection classes (driver `odbc` only)."""

    def __init__(
        self,
        mappings: list[RealtimeMapping],
        pools: dict[str, OdbcPool],
        *,
        retry_for: float = 0.0,
    ) -> None:
        self._pools = pools
        self._retry_for = retry_for
        self._families: dict[str, list[RealtimeMapping]] = {}
        for mapping in mappings:
            if mapping.driver.strip().lower() != "odbc":
                log.warning(
                    "realtime family %s: driver %r is not supported, only odbc; mapping ignored",
                    mapping.family,
                    mapping.driver,
                )
                continue
            check_identifier(mapping.table.rpartition(".")[2], "realtime table name")
            if "." in mapping.table:
                check_identifier(mapping.table.rpartition(".")[0], "realtime schema name")
            self._families.setdefault(mapping.family, []).append(mapping)
        for family_mappings in self._families.values():
            family_mappings.sort(key=lambda mapping: mapping.priority)

    def has_family(self, family: str) -> bool:
        """True when extconfig.conf maps this family to an ODBC table."""
        return family in self._families

    async def load(self, family: str, **where: str) -> dict[str, str] | None:
        """First row matching `field = value` for all fields (ast_load_realtime)."""
        return await self.load_where(family, where)

    async def load_where(self, family: str, where: Mapping[str, str]) -> dict[str, str] | None:
        """As load(), for field names carrying an operator, e.g. {"exten LIKE": "1%"}.

        Returns None when nothing matches (or the family is not mapped). When a mapping's
        database fails, the next priority is tried; if all fail, the last error is raised.
        """
        mappings = self._families.get(family)
        if not mappings:
            return None
        clause, values = _where_clause(where)
        error: DatabaseError | None = None
        for mapping in mappings:
            pool = self._pools.get(mapping.database.strip('"'))
            if pool is None:
                error = DatabaseUnavailable(f"[{mapping.database}] no such res_odbc class")
                log.warning("realtime family %s: %s", family, error)
                continue
            sql = f"SELECT * FROM {mapping.table} WHERE {clause}"
            try:
                return await pool.run(partial(_first_row, sql, values), retry_for=self._retry_for)
            except DatabaseError as exc:
                log.warning("realtime family %s on %s failed: %s", family, mapping.table, exc)
                error = exc
        assert error is not None
        raise error
