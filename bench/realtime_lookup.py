"""The two realtime lookups of every call, timed through ODBC on tables of N filler rows.

Run from the repository root: ``.venv/bin/python -m bench.realtime_lookup --rows 10 10000``.

Per N, on a fresh PostgreSQL database provisioned by a fresh server: 200 callers' mailboxes
and peers plus N filler rows in `voicemail` and `sippeers` (bench/rows.py, as bench.calls
`--realtime-rows`), then the statements storage/realtime.py sends for an INVITE (the peer by
its name, the mailbox by mailbox and context): PostgreSQL's plan for each, and the wall time
of one query and fetch through pyodbc, averaged over `--queries`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pyodbc

from bench.rows import add_realtime_rows, create_sippeers
from tests.dbbackends import fresh_database
from tests.server import start_server, write_config

LOOKUPS = (
    ("sippeers by name", "SELECT * FROM sippeers WHERE name = ?", ("caller7",)),
    (
        "voicemail by mailbox, context",
        "SELECT * FROM voicemail WHERE mailbox = ? AND context = ?",
        ("1007", "default"),
    ),
)


def measure(rows: int, queries: int, work: Path) -> list[tuple[str, str, float]]:
    """(lookup, PostgreSQL's plan, microseconds a query) for tables of `rows` filler rows."""
    results = []
    with fresh_database("postgresql", work) as backend:
        create_sippeers(backend)
        server = start_server(write_config(work / "etc", backend, realtime=("sippeers",)))
        try:
            add_realtime_rows(backend, [str(n) for n in range(1000, 1200)], 200, rows)
            connection = pyodbc.connect(backend.connection_string, autocommit=True)
            try:
                connection.execute("ANALYZE")  # as autovacuum would soon after the inserts
                for name, sql, values in LOOKUPS:
                    literal = sql.replace("?", "'{}'").format(*values)
                    plan = connection.execute("EXPLAIN " + literal).fetchone()[0]
                    started = time.perf_counter()
                    for _ in range(queries):
                        connection.execute(sql, values).fetchall()
                    micros = (time.perf_counter() - started) / queries * 1e6
                    results.append((name, plan, micros))
            finally:
                connection.close()
        finally:
            server.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.realtime_lookup", description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=[10, 10000])
    parser.add_argument("--queries", type=int, default=1000)
    args = parser.parse_args(argv)
    print("| filler rows | lookup | PostgreSQL plan | us a query through pyodbc |")
    print("|---|---|---|---|")
    for rows in args.rows:
        with tempfile.TemporaryDirectory(prefix="bench-lookup-") as work:
            for name, plan, micros in measure(rows, args.queries, Path(work)):
                print(f"| {rows} | {name} | `{plan.split('  (')[0]}` | {micros:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
