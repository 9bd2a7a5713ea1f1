"""One res_odbc.conf section (`ConnectionClass`): its options, validated, and the connection
string its driver gets.

Options besides dsn/username/password/max_connections/pre-connect: `connect_timeout` (login
timeout, s), `dbtimeout` (ours: the wall-clock limit on one unit of work, s, default 3; 0 = none),
`negative_connection_cache` (after a failed connect, fail at once for that many seconds; default
5 where Asterisk's is 300, so an unreachable server does not cost every call a connect attempt
while a restart is still ridden out within seconds), `sanitysql` and `isolation`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import pyodbc

__all__ = ["ISOLATION_LEVELS", "ConnectionClass", "driver_connection_string", "driver_name"]

DEFAULT_DBTIMEOUT = 3.0
DEFAULT_NEGATIVE_CONNECTION_CACHE = 5.0

_TRUE_WORDS = ("yes", "true", "y", "t", "1", "on")
_FALSE_WORDS = ("no", "false", "n", "f", "0", "off")


def _parse_bool(name: str, key: str, value: str) -> bool:
    word = value.strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise ValueError(f"res_odbc class [{name}]: {key} must be yes or no, not {value!r}")


def _parse_int(name: str, key: str, value: str, minimum: int) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise ValueError(
            f"res_odbc class [{name}]: {key} must be a number, not {value!r}"
        ) from None
    if number < minimum:
        raise ValueError(f"res_odbc class [{name}]: {key} must be at least {minimum}, not {number}")
    return number


def _parse_seconds(name: str, key: str, value: str) -> float:
    try:
        number = float(value.strip())
    except ValueError:
        raise ValueError(
            f"res_odbc class [{name}]: {key} must be a number of seconds, not {value!r}"
        ) from None
    if not 0 <= number < float("inf"):  # also refuses nan
        raise ValueError(
            f"res_odbc class [{name}]: {key} must be a finite number, not negative: {value!r}"
        )
    return number


def _parse_isolation(name: str, value: str) -> str:
    word = re.sub(r"[\s-]+", "_", value.strip().lower())
    if word not in ISOLATION_LEVELS:
        raise ValueError(
            f"res_odbc class [{name}]: isolation must be one of {', '.join(ISOLATION_LEVELS)}, "
            f"not {value!r}"
        )
    return word


def _odbc_value(value: str) -> str:
    """Brace a connection-string value that would otherwise break the key=value;... syntax."""
    if any(ch in value for ch in ";{}=") or value != value.strip():
        return "{" + value.replace("}", "}}") + "}"
    return value


# res_odbc.conf `isolation` words and the ODBC attribute values they set.
ISOLATION_LEVELS: dict[str, int] = {
    "read_committed": pyodbc.SQL_TXN_READ_COMMITTED,
    "read_uncommitted": pyodbc.SQL_TXN_READ_UNCOMMITTED,
    "repeatable_read": pyodbc.SQL_TXN_REPEATABLE_READ,
    "serializable": pyodbc.SQL_TXN_SERIALIZABLE,
}


@dataclass
class ConnectionClass:
    """One res_odbc.conf section: how to connect and how many connections to keep.

    `sanity_idle` is ours, not Asterisk's: how long a pooled connection may sit unused before
    `sanitysql` checks it (Asterisk asks the driver whether the connection is dead instead).
    `dbtimeout` is ours too: how long one unit of work (reconnects included) may take before
    the caller gets DatabaseTimeout; 0 means no limit.
    """

    name: str
    connection_string: str
    max_connections: int = 1
    pre_connect: bool = False
    connect_timeout: int = 10
    enabled: bool = True
    negative_connection_cache: float = DEFAULT_NEGATIVE_CONNECTION_CACHE
    sanitysql: str = "select 1"
    sanity_idle: float = 5.0
    isolation: str = "read_committed"
    dbtimeout: float = DEFAULT_DBTIMEOUT

    @classmethod
    def from_options(cls, name: str, options: Mapping[str, str]) -> ConnectionClass:
        """Build a class from a parsed res_odbc.conf section (keys as Asterisk spells them)."""
        opts = {key.strip().lower(): value.strip() for key, value in options.items()}
        dsn = opts.get("dsn", "")
        connection_string = opts.get("connection_string", "")
        if dsn and connection_string:
            raise ValueError(f"res_odbc class [{name}]: give dsn or connection_string, not both")
        if not dsn and not connection_string:
            raise ValueError(f"res_odbc class [{name}]: dsn (or connection_string) is required")
        parts = (
            [connection_string.rstrip(";")] if connection_string else [f"DSN={_odbc_value(dsn)}"]
        )
        if opts.get("username"):
            parts.append(f"UID={_odbc_value(opts['username'])}")
        if opts.get("password"):
            parts.append(f"PWD={_odbc_value(opts['password'])}")
        return cls(
            name=name,
            connection_string=";".join(parts) + ";",
            max_connections=_parse_int(
                name, "max_connections", opts.get("max_connections", "1"), 1
            ),
            pre_connect=_parse_bool(name, "pre-connect", opts.get("pre-connect", "no")),
            connect_timeout=_parse_int(
                name, "connect_timeout", opts.get("connect_timeout", "10"), 1
            ),
            enabled=_parse_bool(name, "enabled", opts.get("enabled", "yes")),
            negative_connection_cache=_parse_seconds(
                name,
                "negative_connection_cache",
                opts.get("negative_connection_cache", str(DEFAULT_NEGATIVE_CONNECTION_CACHE)),
            ),
            sanitysql=opts.get("sanitysql") or "select 1",
            isolation=_parse_isolation(name, opts.get("isolation", "read_committed")),
            dbtimeout=_parse_seconds(
                name, "dbtimeout", opts.get("dbtimeout", str(DEFAULT_DBTIMEOUT))
            ),
        )


def driver_name(connection_string: str) -> str:
    """The ODBC driver a connection string names, directly or through its DSN ("" if unknown)."""
    pairs = {}
    for part in connection_string.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            pairs[key.strip().lower()] = value.strip().strip("{}")
    if "driver" in pairs:
        return pairs["driver"]
    if "dsn" in pairs:
        try:
            return pyodbc.dataSources().get(pairs["dsn"], "")
        except pyodbc.Error:
            return ""
    return ""


def driver_connection_string(connection_string: str, connect_timeout: int) -> str:
    """The connection string with what MariaDB Connector/ODBC needs to behave like the others.

    CONN_TIMEOUT: it ignores the ODBC login timeout while waiting for the server's greeting,
    so a server that accepts the TCP connection but never answers would block a worker for
    good. OPTION=2 (found rows): UPDATE counts matched rows, as PostgreSQL and SQLite do,
    rather than changed ones (a realtime update to the same value would report 0 rows).
    Either is left alone when the connection string sets it.
    """
    driver = driver_name(connection_string).lower()
    if "mariadb" not in driver and "mysql" not in driver:
        return connection_string
    given = connection_string.lower()
    extra = []
    if "conn_timeout" not in given:
        extra.append(f"CONN_TIMEOUT={connect_timeout}")
    if not re.search(r"(^|;)\s*option\s*=", given):
        extra.append("OPTION=2")
    if not extra:
        return connection_string
    return connection_string.rstrip(";") + ";" + ";".join(extra) + ";"
