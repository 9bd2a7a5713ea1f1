"""CPU, memory and run-queue readings of the server, the load generator and PostgreSQL.

From /proc, once a second, by a thread of the benchmark: the processes measured are not
touched. Shared by bench.calls and bench.soak_db_down.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pyodbc
from prometheus_client.parser import text_string_to_metric_families

from tests.dbbackends import PG_ADMIN

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid: int) -> int | None:
    """utime + stime of a process (all its threads), in clock ticks; None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])


def runqueue_wait_ns(pid: int) -> int | None:
    """Nanoseconds the process's main thread (its event loop) has waited, runnable, for a CPU."""
    try:
        return int(Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None


def proc_status_kb(pid: int, key: str) -> int | None:
    """A `kB` line of /proc/<pid>/status (VmHWM: peak RSS, VmRSS: RSS now)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def idle_seconds() -> float:
    """Idle time of all cores together (/proc/uptime), measured on idle entry and exit.

    Not /proc/stat's busy ticks: those are sampled at the timer tick, and processes that wake
    every 20 ms, as the server and sipp do, can run between ticks and go uncounted.
    """
    return float(Path("/proc/uptime").read_text().split()[1])


def postgres_backend_pids(user: str) -> list[int]:
    """The PostgreSQL backend processes of a database user's connections."""
    admin = pyodbc.connect(PG_ADMIN, autocommit=True, timeout=5)
    try:
        rows = admin.execute("SELECT pid FROM pg_stat_activity WHERE usename = ?", user).fetchall()
    finally:
        admin.close()
    return [int(row[0]) for row in rows]


@dataclass
class Sample:
    t: float
    server: int
    sipp: int
    postgres: int
    idle: float
    rss_kb: int
    loop_wait: int  # runqueue wait of the server's main thread, in clock ticks


class Sampler(threading.Thread):
    """Once a second: CPU ticks of the server, sipp, this database's PostgreSQL backends, and
    the whole machine."""

    def __init__(self, server_pid: int, sipp_pid: int, db_user: str) -> None:
        super().__init__(daemon=True)
        self.server_pid, self.sipp_pid, self.db_user = server_pid, sipp_pid, db_user
        self.samples: list[Sample] = []
        self.stopping = threading.Event()
        self._pg_first: dict[int, int] = {}
        self._pg_last: dict[int, int] = {}
        self._pg_pids: list[int] = []

    def _refresh_backends(self) -> None:
        try:
            self._pg_pids = postgres_backend_pids(self.db_user)
        except pyodbc.Error:
            pass

    def _postgres_ticks(self) -> int:
        for pid in self._pg_pids:
            ticks = cpu_ticks(pid)
            if ticks is not None:
                self._pg_first.setdefault(pid, ticks)
                self._pg_last[pid] = ticks
        return sum(self._pg_last[p] - self._pg_first[p] for p in self._pg_last)

    def sample(self) -> None:
        previous = self.samples[-1] if self.samples else None
        server, sipp_ticks = cpu_ticks(self.server_pid), cpu_ticks(self.sipp_pid)
        self.samples.append(
            Sample(
                t=time.monotonic(),
                # A process that has exited keeps the ticks it had at the last sample.
                server=server if server is not None else previous.server if previous else 0,
                sipp=sipp_ticks if sipp_ticks is not None else previous.sipp if previous else 0,
                postgres=self._postgres_ticks(),
                idle=idle_seconds(),
                rss_kb=proc_status_kb(self.server_pid, "VmRSS") or 0,
                loop_wait=(runqueue_wait_ns(self.server_pid) or 0) * CLK_TCK // 1_000_000_000,
            )
        )

    def run(self) -> None:
        count = 0
        while True:
            if count % 5 == 0:
                self._refresh_backends()
            self.sample()
            count += 1
            if self.stopping.wait(1.0):
                self.sample()
                return


def cpu_percent(samples: list[Sample], attr: str, start: float, end: float) -> float | None:
    """Average CPU of `attr` between the samples nearest to `start` and `end` (100 = one core)."""
    window = [s for s in samples if start <= s.t <= end]
    if len(window) < 2:
        return None
    first, last = window[0], window[-1]
    elapsed = last.t - first.t
    if attr == "system":
        cores = os.cpu_count() or 1
        return 100 * (cores * elapsed - (last.idle - first.idle)) / elapsed
    ticks = getattr(last, attr) - getattr(first, attr)
    return 100 * ticks / CLK_TCK / elapsed


class GreetingCapture:
    """tcpdump counting the RTP the server sends to sipp's media port (sipp never reads it)."""

    def __init__(self, media_port: int) -> None:
        self.process = subprocess.Popen(
            ["tcpdump", "-i", "lo", "-n", "-q", "-B", "16384", "-w", "/dev/null"]
            + ["udp", "and", "dst", "port", str(media_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.0)  # tcpdump needs a moment before it sees packets

    def stop(self) -> dict[str, int]:
        self.process.send_signal(signal.SIGINT)
        _, stderr = self.process.communicate(timeout=10)
        counts = {}
        for key in ("captured", "received by filter", "dropped by kernel"):
            match = re.search(rf"(\d+) packets? {key}", stderr)
            counts[key] = int(match.group(1)) if match else -1
        return counts


def server_metrics(port: int) -> dict[str, float]:
    """From the server's /metrics: its ODBC work (count, mean ms) and its loop lag samples.

    The histograms' sums and counts since start: the server is fresh for every run.
    """
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
    finally:
        connection.close()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "voicemail_db_query_seconds_sum":
                values["db_seconds"] = values.get("db_seconds", 0.0) + sample.value
            elif sample.name == "voicemail_db_query_seconds_count":
                values["db_units"] = values.get("db_units", 0.0) + sample.value
            elif sample.name == "voicemail_loop_lag_seconds_count":
                values["lag_samples"] = sample.value
            elif (
                sample.name == "voicemail_loop_lag_seconds_bucket"
                and sample.labels["le"] == "0.005"
            ):
                values["lag_within_5ms"] = sample.value
    if values.get("db_units"):
        values["db_unit_avg_ms"] = 1000 * values["db_seconds"] / values["db_units"]
    return values
