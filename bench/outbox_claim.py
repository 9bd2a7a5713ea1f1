"""Outbox claim throughput: N claimers on one database taking rows until none is left.

Run from the repository root: ``.venv/bin/python -m bench.outbox_claim --rows 2000``.

Per backend (SQLite, PostgreSQL, MariaDB, each a fresh database from
tests.dbbackends.fresh_database) and per claimer count: `--rows` pending rows are enqueued,
then the claimers (one OdbcPool with one connection each, as separate servers would have)
start together and claim `--limit` rows per call with a long lease, then mark each claimed
row sent (not with --claim-only), until a claim returns nothing. Printed: the wall-clock
seconds from the start signal to the last claimer's end, rows per second, and the busiest
claimer's share of the rows; it exits with an error unless every row was claimed exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from storage.odbc import OdbcPool
from storage.outbox import Outbox, OutboxItem
from storage.schema import create_tables, storage_tables
from tests.dbbackends import BACKEND_NAMES, Backend, fresh_database


async def _claimer(
    outbox: Outbox, name: str, limit: int, start: asyncio.Event, mark: bool
) -> list[int]:
    await start.wait()
    taken: list[int] = []
    while rows := await outbox.claim(name, limit=limit, lease_seconds=3600):
        for row in rows if mark else ():
            await outbox.mark_sent(row.id, name)
        taken += [row.id for row in rows]
    return taken


async def measure(
    backend: Backend, rows: int, claimers: int, limit: int, mark: bool
) -> dict[str, float]:
    pools = [
        OdbcPool(backend.connection_class(name=f"c{i}", max_connections=1), retry_timeout=10)
        for i in range(claimers)
    ]
    try:
        for pool in pools:
            await pool.start()
        await create_tables(pools[0], storage_tables())
        filler = Outbox(pools[0])
        items = [OutboxItem("email", f"user{i}@example.com") for i in range(rows)]
        for first in range(0, rows, 100):
            await filler.enqueue(
                context="bench", mailbox="1", msg_id=f"m{first}", items=items[first:][:100]
            )
        start = asyncio.Event()
        tasks = [
            asyncio.create_task(_claimer(Outbox(pool), f"server-{i}", limit, start, mark))
            for i, pool in enumerate(pools)
        ]
        began = time.perf_counter()
        start.set()
        results = await asyncio.gather(*tasks)
        seconds = time.perf_counter() - began
    finally:
        for pool in pools:
            await pool.close()
    every = [row_id for taken in results for row_id in taken]
    if len(every) != rows or len(set(every)) != rows:
        raise SystemExit(f"{backend.name}: {len(every)} claims of {len(set(every))} rows")
    return {
        "seconds": seconds,
        "rows_per_s": rows / seconds,
        "busiest_share": max(len(t) for t in results) / rows,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--claimers", type=int, nargs="+", default=[1, 2, 8])
    parser.add_argument("--limit", type=int, default=10, help="rows per claim")
    parser.add_argument("--backends", nargs="+", default=list(BACKEND_NAMES))
    parser.add_argument("--claim-only", action="store_true", help="no mark_sent")
    args = parser.parse_args()
    what = "claim only" if args.claim_only else "claim + mark_sent per row"
    print(f"{args.rows} rows, {args.limit} per claim, {what}")
    print(f"{'backend':<11} {'claimers':>8} {'seconds':>8} {'rows/s':>8} {'busiest':>8}")
    for name in args.backends:
        for claimers in args.claimers:
            with tempfile.TemporaryDirectory() as tmp:
                with fresh_database(name, Path(tmp)) as backend:
                    result = await measure(
                        backend, args.rows, claimers, args.limit, not args.claim_only
                    )
            print(
                f"{name:<11} {claimers:>8} {result['seconds']:>8.2f} "
                f"{result['rows_per_s']:>8.0f} {result['busiest_share']:>8.0%}"
            )


if __name__ == "__main__":
    asyncio.run(main())
