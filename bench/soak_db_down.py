"""Database down for 60 s under 200 concurrent deposits: nothing lost, nothing stored twice.

Run from the repository root:
``PYTHONPATH=$PWD .venv/bin/python -m bench.soak_db_down --backend postgresql``.

A fresh database (PostgreSQL or MariaDB) and a fresh server whose res_odbc connection string
goes through a TCP proxy (tests.dbbackends.TcpProxy). sipp keeps ``--calls`` deposits up at
once (``-l``), starting new calls as old ones end, for ``--total`` calls; each caller dials its
own realtime mailbox, talks through the greeting, leaves a 10 s message and hangs up (the
workload of bench/calls.py). ``--cut-at`` seconds after sipp starts, the proxy is stopped
(every database connection dropped, new ones refused) for ``--down`` seconds, then restored.
Calls therefore arrive, look their mailbox up, record and store at every point of the outage,
including the cut and the return. Afterwards, once the spool is empty and the rows stop
changing, the database is counted: each call sipp completed must have exactly one row in its
mailbox (0 lost, 0 duplicated), and every INVITE must have been answered. The results of record
are in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyodbc

from bench.calls import (
    analyse_recording,
    free_udp_port,
    problems_in_log,
    sipp_command,
    sipp_counters,
    sipp_errors,
    summary_ms,
)
from bench.procstats import Sampler, cpu_percent, proc_status_kb
from bench.report import machine, percent
from bench.rows import add_realtime_mailboxes
from bench.workload import BYE_AFTER_MS, FRAME_SECONDS, MESSAGE_SECONDS, Workload
from bench.workload import make_workload as calls_workload
from bench.workload import scenario_xml as calls_scenario
from tests.audio import wav_pcm
from tests.dbbackends import Backend, TcpProxy, fresh_database
from tests.server import RunningServer, start_server, write_config

# The greeting may start up to CALL_PATH_DB_WAIT (1.5 s) late while the database is away (the
# mailbox lookup waits that long once): the caller talks 2 s past the longest greeting.
MARGIN_FRAMES = 100
UPSTREAM_PORT = {"postgresql": 5432, "mysql": 3306}


def make_workload(directory: Path, calls: int) -> Workload:
    """bench.calls' workload with a 2 s margin: filler (seed 2), then test_signal(10.0)."""
    return calls_workload(directory, calls, "PCMU", margin_frames=MARGIN_FRAMES)


def scenario_xml(workload: Workload) -> str:
    """bench.calls' call, plus a log line naming the mailbox once the BYE was answered."""
    return calls_scenario(
        workload, '<nop><action><log message="completed [field0]"/></action></nop>\n'
    )


# -- during the run -------------------------------------------------------------------------


class SpoolWatch(threading.Thread):
    """Once a second: how many messages wait in the server's local spool."""

    def __init__(self, spool: Path) -> None:
        super().__init__(daemon=True)
        self.spool = spool
        self.counts: list[tuple[float, int]] = []
        self.stopping = threading.Event()

    def count(self) -> int:
        try:
            return sum(1 for _ in self.spool.glob("*.vmsg"))
        except OSError:
            return 0

    def run(self) -> None:
        while not self.stopping.is_set():
            self.counts.append((time.monotonic(), self.count()))
            self.stopping.wait(1.0)


def row_count(backend: Backend) -> int:
    return int(backend.sql("SELECT COUNT(*) AS n FROM voicemessages")[0]["n"])


def wait_for_flush(backend: Backend, watch: SpoolWatch, limit: float) -> float:
    """Seconds until the spool is empty and the row count has not changed for 5 s."""
    started = time.monotonic()
    last, stable_since = -1, time.monotonic()
    while time.monotonic() - started < limit:
        count = row_count(backend)
        if count != last:
            last, stable_since = count, time.monotonic()
        elif watch.count() == 0 and time.monotonic() - stable_since >= 5:
            break
        time.sleep(1.0)
    return time.monotonic() - started


# -- what was stored ------------------------------------------------------------------------


@dataclass
class Accounting:
    completed: int = 0  # calls whose BYE sipp saw answered
    rows: int = 0
    lost: list[str] = field(default_factory=list)  # completed, no row
    duplicated: dict[str, int] = field(default_factory=dict)  # mailbox -> rows (> 1)
    duplicate_msg_ids: int = 0
    duplicate_msgnums: int = 0
    uncompleted_with_row: int = 0  # calls sipp failed whose message was stored anyway
    message_seconds: float = 0.0  # of the 10 s messages, stored sample-exact
    damaged_frames: int = 0
    unaligned: int = 0
    short_messages: int = 0  # recordings holding less than the whole 10 s message
    start_lag_ms: dict[str, float] = field(default_factory=dict)  # recording start vs ideal


def completed_mailboxes(workdir: Path) -> list[str]:
    names = []
    for path in workdir.glob("calls_*_logs.log"):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("completed "):
                names.append(line.split()[1])
    return names


def account(backend: Backend, workload: Workload, completed: list[str]) -> Accounting:
    result = Accounting(completed=len(completed))
    connection = pyodbc.connect(backend.connection_string, autocommit=True)
    per_box: Counter[str] = Counter()
    msg_ids: Counter[str] = Counter()
    slots: Counter[tuple[str, int]] = Counter()
    lags: list[float] = []
    try:
        cursor = connection.execute(
            "SELECT mailboxuser, dir, msgnum, msg_id, recording FROM voicemessages"
        )
        while row := cursor.fetchone():
            mailbox, directory, msgnum, msg_id, recording = row
            result.rows += 1
            per_box[str(mailbox)] += 1
            msg_ids[str(msg_id)] += 1
            slots[(str(directory), int(msgnum))] += 1
            _rate, _width, _channels, frames = wav_pcm(bytes(recording))
            message, damaged, lag = analyse_recording(workload, str(mailbox), frames)
            result.message_seconds += message * FRAME_SECONDS
            result.damaged_frames += damaged
            result.unaligned += int(math.isnan(lag))
            result.short_messages += int(message < MESSAGE_SECONDS / FRAME_SECONDS)
            if not math.isnan(lag):
                lags.append(lag * 1000)
    finally:
        connection.close()
    result.start_lag_ms = summary_ms(lags)
    done = set(completed)
    result.lost = sorted(m for m in done if per_box[m] == 0)
    result.duplicated = {m: n for m, n in per_box.items() if n > 1}
    result.duplicate_msg_ids = sum(n - 1 for n in msg_ids.values() if n > 1)
    result.duplicate_msgnums = sum(n - 1 for n in slots.values() if n > 1)
    result.uncompleted_with_row = sum(1 for m in per_box if m not in done)
    return result


def rtd_by_phase(workdir: Path, which: int, sipp_epoch: float, cut: float, back: float) -> dict:
    """INVITE->200 (rtd 1) or BYE->200 (rtd 2) by when the 200 came: before the cut, during
    the outage, after."""
    phases: dict[str, list[float]] = {"before": [], "during": [], "after": []}
    for path in workdir.glob("calls_*_rtt.csv"):
        for line in path.read_text().splitlines()[1:]:
            parts = line.strip().rstrip(";").split(";")
            try:
                date_ms, rtt, rtd = float(parts[0]), float(parts[1]), int(parts[2])
            except (IndexError, ValueError):
                continue
            if rtd != which:
                continue
            # sipp writes the wall clock in ms (epoch); older versions, ms since its start.
            at = date_ms / 1000 if date_ms > 1e11 else sipp_epoch + date_ms / 1000
            phase = "before" if at < cut else "during" if at < back else "after"
            phases[phase].append(rtt)
    return {name: summary_ms(values) for name, values in phases.items()}


# -- one run --------------------------------------------------------------------------------


@dataclass
class RunResult:
    backend: str
    calls: int
    total: int
    rate: int
    cut_at: float
    down: float
    sipp_exit: int
    counters: dict[str, int]
    accounting: Accounting
    invite_ms: dict[str, dict[str, float]]
    bye_ms: dict[str, dict[str, float]]
    spooled_peak: int
    spooled_log: int  # "in the local spool (database away)" lines
    flushed_log: int  # "spool: stored" lines
    flush_seconds: float  # from sipp's end until the spool was empty and rows stable
    restored_to_empty: float | None  # from the restore until the spool was first empty
    wall_seconds: float
    cpu: dict[str, float | None]
    peak_rss_mb: float
    server_exit: int
    server_problems: list[str]
    sipp_errors: list[str]


def run_once(args: argparse.Namespace, root: Path) -> RunResult:
    workdir = root / args.backend
    workdir.mkdir(parents=True)
    workload = make_workload(workdir, args.total)
    (workdir / "calls.xml").write_text(scenario_xml(workload))
    (workdir / "callers.csv").write_text(
        "SEQUENTIAL\n" + "".join(f"{m};\n" for m in workload.mailboxes)
    )
    call_seconds = workload.caller_rtp_seconds + BYE_AFTER_MS / 1000
    timeout = int(args.total / args.calls * call_seconds + args.down + 180)
    proxy = TcpProxy(UPSTREAM_PORT[args.backend])
    proxy.start()
    try:
        with fresh_database(args.backend, workdir) as backend:
            config = write_config(workdir / "etc", backend.via(proxy.port))
            server: RunningServer = start_server(config)
            watch = SpoolWatch(config / "spool")
            try:
                add_realtime_mailboxes(backend, workload.mailboxes)
                media_port = free_udp_port(30000, span=4)
                command = sipp_command(
                    workdir, server.target, args.calls, args.rate, timeout, media_port
                )
                command[command.index("-m") + 1] = str(args.total)
                command += ["-trace_logs"]
                (workdir / "command.txt").write_text(" ".join(command) + "\n")
                watch.start()
                sipp_epoch, started = time.time(), time.monotonic()
                process = subprocess.Popen(
                    command, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
                )
                sampler = Sampler(server.process.pid, process.pid, backend.user)
                sampler.start()
                outputs: list[tuple[str, str]] = []
                reader = threading.Thread(target=lambda: outputs.append(process.communicate()))
                reader.start()
                time.sleep(max(0.0, started + args.cut_at - time.monotonic()))
                cut_epoch = time.time()
                proxy.stop()
                print(f"database cut at {time.monotonic() - started:.1f} s", flush=True)
                time.sleep(args.down)
                proxy.start()
                back_epoch, back = time.time(), time.monotonic()
                print(f"database back at {back - started:.1f} s", flush=True)
                reader.join(timeout + 60)
                if reader.is_alive():
                    process.kill()
                    reader.join()
                wall = time.monotonic() - started
                stdout, stderr = outputs[0]
                (workdir / "sipp.stdout").write_text(stdout + stderr)
                print(f"sipp ended after {wall:.0f} s (exit {process.returncode})", flush=True)
                flush = wait_for_flush(backend, watch, limit=600)
                sampler.stopping.set()
                sampler.join()
                watch.stopping.set()
                watch.join()
                peak_rss_kb = proc_status_kb(server.process.pid, "VmHWM") or 0
                accounting = account(backend, workload, completed_mailboxes(workdir))
            finally:
                server_exit = server.stop()
                log = server.log()
                (workdir / "server.log").write_text(log)
    finally:
        proxy.stop()
    empty_after = [t for t, n in watch.counts if t >= back and n == 0]
    samples = sampler.samples
    cut_mono = started + args.cut_at
    ramp = min(args.calls / args.rate, args.cut_at - 2)  # until all calls are up
    cpu = {
        "server_before": cpu_percent(samples, "server", started + ramp, cut_mono),
        "server_during": cpu_percent(samples, "server", cut_mono, back),
        "server_after": cpu_percent(samples, "server", back, started + wall),
        "system_during": cpu_percent(samples, "system", cut_mono, back),
    }
    return RunResult(
        backend=args.backend,
        calls=args.calls,
        total=args.total,
        rate=args.rate,
        cut_at=args.cut_at,
        down=args.down,
        sipp_exit=process.returncode,
        counters=sipp_counters(workdir / "stat.csv") if (workdir / "stat.csv").exists() else {},
        accounting=accounting,
        invite_ms=rtd_by_phase(workdir, 1, sipp_epoch, cut_epoch, back_epoch),
        bye_ms=rtd_by_phase(workdir, 2, sipp_epoch, cut_epoch, back_epoch),
        spooled_peak=max((n for _, n in watch.counts), default=0),
        spooled_log=log.count("in the local spool (database away)"),
        flushed_log=log.count("spool: stored "),
        flush_seconds=flush,
        restored_to_empty=(empty_after[0] - back) if empty_after else None,
        wall_seconds=wall,
        cpu=cpu,
        peak_rss_mb=peak_rss_kb / 1024,
        server_exit=server_exit,
        server_problems=problems_in_log(log),
        sipp_errors=sipp_errors(workdir, process.returncode, stdout + stderr),
    )


# -- report ---------------------------------------------------------------------------------


def _ms(summary: dict[str, float]) -> str:
    if not summary:
        return "none"
    return f"{summary['n']}: {summary['avg']:.0f} / {summary['p95']:.0f} / {summary['max']:.0f}"


def markdown(r: RunResult) -> str:
    c, a = r.counters, r.accounting
    failed = {k: v for k, v in c.items() if k.startswith("Failed") and v}
    head = (
        "| backend | calls (at once) | INVITEs answered 200 / sent | completed (BYE answered) "
        "| rows | lost | duplicated | message audio stored / sent | spooled (peak files) "
        "| INVITE->200 ms n: avg / p95 / max, before / during / after the outage "
        "| server CPU before / during / after | peak RSS |\n" + "|---" * 12 + "|\n"
    )
    invites = sum(s.get("n", 0) for s in r.invite_ms.values())
    sent = r.total * MESSAGE_SECONDS
    row = (
        f"| {r.backend} | {r.total} ({r.calls}) | {invites} / {c.get('TotalCallCreated', 'n/a')} "
        f"| {a.completed} | {a.rows} | {len(a.lost)} | {len(a.duplicated)} "
        f"| {a.message_seconds:.0f} / {sent:.0f} s ({100 * a.message_seconds / sent:.2f} %) "
        f"| {r.spooled_log} ({r.spooled_peak}) "
        f"| {' / '.join(_ms(r.invite_ms[p]) for p in ('before', 'during', 'after'))} "
        f"| {' / '.join(percent(r.cpu[f'server_{p}']) for p in ('before', 'during', 'after'))} "
        f"| {r.peak_rss_mb:.0f} MB |\n"
    )
    extra = {
        k: c.get(k, 0) for k in ("Retransmissions", "OutOfCallMsgs", "DeadCallMsgs", "Warnings")
    }
    empty = "n/a" if r.restored_to_empty is None else f"{r.restored_to_empty:.0f} s"
    details = [
        f"- database cut {r.cut_at:.0f} s after sipp started, for {r.down:.0f} s; sipp exit "
        f"{r.sipp_exit}, wall {r.wall_seconds:.0f} s; failures {failed or 'none'}; {extra}",
        f"- spool: {r.spooled_log} messages spooled, {r.flushed_log} stored by the flusher; "
        f"empty {empty} after the restore; rows stable {r.flush_seconds:.0f} s after sipp ended",
        f"- duplicate msg_ids {a.duplicate_msg_ids}, "
        f"duplicate (dir, msgnum) {a.duplicate_msgnums}, "
        f"rows of calls sipp did not complete {a.uncompleted_with_row}, damaged packets "
        f"{a.damaged_frames}, unaligned recordings {a.unaligned}, recordings missing part of "
        f"the message {a.short_messages}, recording start lag ms {_ms(a.start_lag_ms)}; "
        f"BYE->200 ms {' / '.join(_ms(r.bye_ms[p]) for p in ('before', 'during', 'after'))}; "
        f"server exit {r.server_exit}; "
        f"machine busy during the outage {percent(r.cpu['system_during'])} of 200",
    ]
    if a.lost:
        details.append(f"- LOST (completed, no row): {a.lost[:20]}")
    if a.duplicated:
        details.append(f"- DUPLICATED: {dict(list(a.duplicated.items())[:20])}")
    details += [f"  - server log: {line}" for line in r.server_problems]
    details += [f"  - sipp: {line[:300]}" for line in r.sipp_errors]
    return head + row + "\n" + "\n".join(details) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak_db_down", description=__doc__)
    parser.add_argument("--backend", choices=sorted(UPSTREAM_PORT), default="postgresql")
    parser.add_argument("--calls", type=int, default=200, help="deposits at once (sipp -l)")
    parser.add_argument("--total", type=int, default=900, help="calls in all (sipp -m)")
    parser.add_argument("--rate", type=int, default=10, help="sipp -r, calls per second")
    parser.add_argument("--down", type=float, default=60.0, help="seconds the database is away")
    parser.add_argument("--cut-at", type=float, default=30.0, help="seconds after sipp starts")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args(argv)
    print(f"# bench.soak_db_down {' '.join(sys.argv[1:])}\n{machine()}\n", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-dbdown-"))
    try:
        result = run_once(args, tmp)
    finally:
        if args.keep:
            print(f"work directory kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(asdict(result), indent=2, default=str))
    a = result.accounting
    bad = a.lost or a.duplicated or result.counters.get("SuccessfulCall") != result.total
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
