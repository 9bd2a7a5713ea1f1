"""Several SQLite ODBC pools in one process must never crash it (SIGSEGV).

The SQLite driver does no locking of its own (storage.odbc_handles): connecting and closing
SQLite connections on several threads at once, or a cursor freed on another thread than its
connection's worker, corrupted the driver's lists and killed the process now and then. The
stress runs in a child process, so a crash fails this test instead of the whole pytest run;
it also fails on an "Exception ignored" report (a cursor freed after its connection closed
in another thread), the race's milder outcome. Run by hand:
`python -X faulthandler -m tests.test_odbc_close_stress handles|cursors DIRECTORY`.
"""

from __future__ import annotations

import asyncio
import gc
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyodbc
import pytest

from storage.odbc import ConnectionClass, DatabaseError, OdbcPool

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parent.parent
# Bounds on each stress (whichever comes first); not a timing assertion.
ROUNDS = {"handles": 20000, "cursors": 150}
SECONDS = 7.0


def sqlite(directory: str, name: str) -> str:
    return f"Driver=SQLite3;Database={directory}/{name}.db;Timeout=10000;"


def select_one(connection: pyodbc.Connection) -> int:
    return int(connection.cursor().execute("SELECT 1").fetchone()[0])


async def handles(directory: str, stop: float) -> int:
    """SQLite connects and closes on many threads at once: pools whose sanity check always
    fails (so every unit of work closes its connection and opens a new one), all busy."""
    classes = [
        ConnectionClass(
            f"p{i}",
            sqlite(directory, f"h{i % 2}"),
            max_connections=2,
            pre_connect=True,
            sanitysql="SELECT 0",
            sanity_idle=0,
        )
        for i in range(4)
    ]
    pools = [OdbcPool(connection_class) for connection_class in classes]
    # Idle connections make the driver's list of connections, walked by every connect and
    # close, long: the race's window grows with it.
    idle = ConnectionClass("idle", sqlite(directory, "idle"), max_connections=120, pre_connect=True)
    pools.append(OdbcPool(idle))
    rounds = 0

    async def reconnect_often(pool: OdbcPool) -> None:
        nonlocal rounds
        while rounds < ROUNDS["handles"] and time.monotonic() < stop:
            assert await pool.run(select_one) == 1
            rounds += 1

    try:
        await asyncio.gather(*(pool.start() for pool in pools))
        await asyncio.gather(*(reconnect_often(pool) for pool in pools[:-1] for _ in range(2)))
    finally:
        await asyncio.gather(*(pool.close() for pool in pools))
    return rounds


def read_then_fail(connection: pyodbc.Connection) -> None:
    cursor = connection.cursor()
    cursor.execute("SELECT 1 UNION ALL SELECT 2").fetchone()  # its result set still open
    raise LookupError("work failed with its cursor in the traceback")


async def cursors(directory: str, stop: float) -> int:
    """Failed work leaves its cursor in the traceback the caller gets; the caller drops it as
    cyclic garbage, which the garbage collector frees on another thread while the worker goes
    on using, then closes, that connection."""
    rounds = 0
    busy = threading.Event()

    def keep_busy(connection: pyodbc.Connection) -> None:
        busy.set()
        for _ in range(200):
            connection.cursor().execute("SELECT 1 UNION ALL SELECT 2").fetchone()

    def collect(kept: list[object]) -> None:
        busy.wait(10)
        kept.clear()
        gc.collect()

    while rounds < ROUNDS["cursors"] and time.monotonic() < stop:
        pool = OdbcPool(ConnectionClass("c", sqlite(directory, "c"), max_connections=1))
        await pool.start()
        kept: list[object] = []
        try:
            for _ in range(100):
                try:
                    await pool.run(read_then_fail)
                except LookupError as exc:
                    kept.append([exc, kept])  # a cycle: only the collector frees it
            busy.clear()
            collector = threading.Thread(target=collect, args=(kept,))
            collector.start()
            await pool.run(keep_busy)
        finally:
            await pool.close()
        collector.join()
        rounds += 1
    return rounds


def main(scenario: str, directory: str) -> int:
    """Run one stress; exit 0 when nothing went wrong, 1 on an ignored exception."""
    ignored: list[str] = []

    def unraisable(report: sys.UnraisableHookArgs) -> None:
        ignored.append(f"{report.exc_type.__name__}: {report.exc_value} ({report.object!r})")

    sys.unraisablehook = unraisable
    stress = {"handles": handles, "cursors": cursors}[scenario]
    rounds = asyncio.run(stress(directory, time.monotonic() + SECONDS))
    print(f"{scenario}: {rounds} rounds, {len(ignored)} ignored exception(s)")
    for line in ignored[:5]:
        print("ignored:", line)
    return 1 if ignored else 0


def run_child(scenario: str, directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-X", "faulthandler", "-m", "tests.test_odbc_close_stress"]
        + [scenario, str(directory)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=45,
    )


@pytest.mark.parametrize("scenario", ["handles", "cursors"])
def test_sqlite_pools_survive_concurrent_connect_close_and_foreign_cursor_frees(
    scenario: str, tmp_path: Path
) -> None:
    child = run_child(scenario, tmp_path)
    output = child.stdout + child.stderr
    if child.returncode < 0:
        name = signal.Signals(-child.returncode).name
        pytest.fail(f"the stress process died of {name}:\n{output[-4000:]}", pytrace=False)
    assert child.returncode == 0, output[-4000:]
    assert f"{scenario}: " in child.stdout


def test_a_cursor_left_in_a_failed_works_traceback_is_already_closed(tmp_path: Path) -> None:
    """What the caller's thread gets back holds no live statement handle to free."""

    async def scenario() -> None:
        pool = OdbcPool(ConnectionClass("c", sqlite(str(tmp_path), "t"), max_connections=1))
        await pool.start()
        try:
            with pytest.raises(LookupError) as failure:
                await pool.run(read_then_fail)
            tb = failure.value.__traceback__
            while tb.tb_next is not None:
                tb = tb.tb_next
            cursor = tb.tb_frame.f_locals["cursor"]
            with pytest.raises(pyodbc.ProgrammingError, match="closed cursor"):
                cursor.fetchone()

            def missing_table(connection: pyodbc.Connection) -> None:
                connection.execute("SELECT * FROM no_such_table")

            with pytest.raises(DatabaseError):
                await pool.run(missing_table)
            returned = await pool.run(lambda connection: connection.cursor().execute("SELECT 1"))
            with pytest.raises(pyodbc.ProgrammingError, match="closed cursor"):
                returned.fetchone()
            assert await pool.run(select_one) == 1  # the connection itself is still fine
        finally:
            await pool.close()

    asyncio.run(scenario())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
