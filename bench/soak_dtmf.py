"""Soak: random DTMF through VoiceMailMain (core + driver + a real SQLite store) for many
sessions, as tests/test_vmmain_dtmf_fuzz.py does for 200.

Run from the repository root: ``.venv/bin/python -m bench.soak_dtmf --sessions 10000``.

One store for the whole run (the mailbox's state carries over from session to session, as a
real mailbox's does); each session is seeded (seed = --seed + i), so a failure names the seed
that replays it. Reports sessions/s, the process's peak RSS (sampled along the run, to show it
stays flat), and every failure (a session that broke a rule; the run goes on after one).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import resource
import sys
import tempfile
import time
from pathlib import Path

from tests.dbbackends import fresh_database
from tests.helpers import started_store
from tests.test_vmmain_dtmf_fuzz import FuzzFailure, FuzzStats, TableReader, one_session


class _Tracebacks(logging.Handler):
    """Log records with a traceback (log.exception): what nobody designed."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.messages.append(record.getMessage())


def rss_mb() -> float:
    """Peak RSS of this process so far (ru_maxrss is in KB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def soak(sessions: int, seed: int, every: int) -> int:
    handler = _Tracebacks()
    root = logging.getLogger()
    root.setLevel(logging.ERROR)  # the run's own log lines are not the point: not printed
    root.addHandler(handler)
    stats = FuzzStats()
    failures: list[str] = []
    rss_marks: list[tuple[int, float]] = []
    with fresh_database("sqlite", Path(tempfile.mkdtemp(prefix="soak-dtmf-"))) as backend:
        async with started_store(backend) as store:
            reader = TableReader(backend)
            started = time.monotonic()
            for i in range(sessions):
                try:
                    await one_session(store, reader, seed + i, stats)
                except FuzzFailure as exc:
                    failures.append(str(exc))
                    print(f"FAILURE {exc}", flush=True)
                if (i + 1) % every == 0:
                    rss_marks.append((i + 1, rss_mb()))
                    rate = (i + 1) / (time.monotonic() - started)
                    print(f"{i + 1} sessions, {rate:.1f}/s, peak RSS {rss_mb():.1f} MB", flush=True)
            elapsed = time.monotonic() - started
            reader.close()
    print()
    print(
        "| sessions | failures | tracebacks logged | logged in | channel calls | "
        "ended by hang-up | sessions/s | peak RSS MB (first mark / end) | wall |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    first = rss_marks[0][1] if rss_marks else rss_mb()
    print(
        f"| {sessions} | {len(failures)} | {len(handler.messages)} | {stats.logged_in} | "
        f"{stats.channel_calls} | {stats.ended_by_caller} | {sessions / elapsed:.1f} | "
        f"{first:.1f} / {rss_mb():.1f} | {elapsed:.0f} s |"
    )
    for message in (failures + handler.messages)[:20]:
        print(f"- {message}")
    return 1 if failures or handler.messages else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak_dtmf", description=__doc__)
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0, help="the first session's seed")
    parser.add_argument("--every", type=int, default=1000, help="progress line interval")
    args = parser.parse_args(argv)
    return asyncio.run(soak(args.sessions, args.seed, args.every))


if __name__ == "__main__":
    sys.exit(main())
