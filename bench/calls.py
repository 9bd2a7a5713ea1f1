"""Capacity: N concurrent voicemail deposits by sipp against `voicemail serve` on PostgreSQL.

Run from the repository root: ``.venv/bin/python -m bench.calls --calls 100 200 400``.

Per N, on a fresh PostgreSQL database and a fresh server (default test config, realtime
mailboxes), sipp places N calls at ``--rate`` calls per second with at most N at once. Each
caller answers the unavailable greeting with RTP from its ACK on: a filler stream as long as
the greeting plus a margin (full duplex: the server is playing while the caller talks), then
the 10 s message, then BYE. The server records from the end of its beep until the BYE, so the
stored recording should hold the margin's tail and the whole message. What is measured is in
bench/README.md; the numbers of record are in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyodbc

from bench.procstats import (
    GreetingCapture,
    Sampler,
    cpu_percent,
    proc_status_kb,
    server_metrics,
)
from bench.report import machine, markdown
from bench.rows import add_realtime_mailboxes, add_realtime_rows, create_sippeers
from bench.workload import (
    BYE_AFTER_MS,
    CODECS,
    FRAME_BYTES,
    FRAME_SECONDS,
    MESSAGE_SECONDS,
    Workload,
    greeting_frames,
    make_workload,
    scenario_xml,
)
from tests.audio import wav_pcm
from tests.dbbackends import Backend, fresh_database
from tests.mail_server import free_port as free_tcp_port
from tests.server import RunningServer, start_server, write_config
from tests.test_metrics_e2e import enable_http

# -- sipp -----------------------------------------------------------------------------------


def free_udp_port(base: int | None = None, span: int = 1) -> int:
    """A UDP port on 127.0.0.1 (with `span` free neighbours from an even `base` range)."""
    if base is None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            return probe.getsockname()[1]
    for port in range(base, base + 4000, 4):
        sockets = []
        try:
            for offset in range(span):
                probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sockets.append(probe)
                probe.bind(("127.0.0.1", port + offset))
            return port
        except OSError:
            continue
        finally:
            for probe in sockets:
                probe.close()
    raise OSError("no free UDP port range")


def sipp_command(
    workdir: Path, target: str, calls: int, rate: int, timeout: int, media_port: int
) -> list[str]:
    return [
        "sipp",
        target,
        "-sf",
        str(workdir / "calls.xml"),
        "-inf",
        str(workdir / "callers.csv"),
        "-i",
        "127.0.0.1",
        "-p",
        str(free_udp_port()),
        "-mi",
        "127.0.0.1",
        "-mp",
        str(media_port),
        "-r",
        str(rate),
        "-l",
        str(calls),
        "-m",
        str(calls),
        "-timeout",
        f"{timeout}s",
        "-timeout_error",
        "-trace_err",
        "-trace_stat",
        "-stf",
        str(workdir / "stat.csv"),
        "-fd",
        "1",
        "-trace_rtt",
        "-rtt_freq",
        "1",
        "-trace_screen",
        "-nostdin",
        "-cp",
        str(free_udp_port()),
        "-max_recv_loops",
        "1000",
    ]


def sipp_counters(stat_csv: Path) -> dict[str, int]:
    """The cumulative (C) counters of the last line of sipp's -trace_stat file."""
    lines = [line for line in stat_csv.read_text().splitlines() if line.strip()]
    names = lines[0].rstrip(";").split(";")
    values = lines[-1].rstrip(";").split(";")
    counters = {}
    for name, value in zip(names, values, strict=False):
        if name == "TotalCallCreated" or name.endswith("(C)"):
            try:
                counters[name.removesuffix("(C)")] = int(value)
            except ValueError:
                pass
    return counters


def response_times(workdir: Path) -> dict[int, list[float]]:
    """Milliseconds per call of each rtd from sipp's -trace_rtt file: 1 INVITE->200, 2 BYE->200."""
    times: dict[int, list[float]] = {}
    for path in workdir.glob("calls_*_rtt.csv"):
        for line in path.read_text().splitlines()[1:]:
            parts = line.strip().rstrip(";").split(";")
            if len(parts) >= 3:
                try:
                    times.setdefault(int(parts[2]), []).append(float(parts[1]))
                except ValueError:
                    pass
    return times


def summary_ms(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "avg": statistics.fmean(ordered),
        "p50": ordered[len(ordered) // 2],
        "p95": ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))],
        "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        "max": ordered[-1],
    }


# -- what was stored ------------------------------------------------------------------------


@dataclass
class Stored:
    rows: int = 0
    recorded_seconds: float = 0.0  # sum of the stored WAVs' lengths
    message_seconds: float = 0.0  # of those, the caller's 10 s message, sample-exact
    damaged_frames: int = 0  # recorded packets that are not the caller's audio (gaps, silence)
    unaligned: int = 0  # recordings in which no packet of the caller could be found
    start_lag_ms: dict[str, float] = field(default_factory=dict)  # recording start vs ideal


def analyse_recording(workload: Workload, mailbox: str, frames: bytes) -> tuple[int, int, float]:
    """(message packets stored intact, damaged packets, lag of the recording's start in s).

    The server stores whole RTP packets, decoded G.711, so every packet of the recording must be
    a 20 ms slice of what the caller sent, at one alignment; the silence it writes for a lost
    packet does not match. The lag is how much later than an ideal server (beep ending exactly
    when the greeting's packets are due) the recording began.
    """
    sent = workload.sent_pcm
    count = len(frames) // FRAME_BYTES
    base = None
    for index in range(min(count, 100)):
        position = sent.find(frames[index * FRAME_BYTES : (index + 1) * FRAME_BYTES])
        if position >= 0 and position % 2 == 0:
            base = position - index * FRAME_BYTES
            break
    if base is None:
        return 0, count, math.nan
    message_frames = damaged = 0
    for index in range(count):
        offset = base + index * FRAME_BYTES
        got = frames[index * FRAME_BYTES : (index + 1) * FRAME_BYTES]
        if 0 <= offset and sent[offset : offset + FRAME_BYTES] == got:
            if offset >= workload.message_offset:
                message_frames += 1
        else:
            damaged += 1
    lead_in = (workload.message_offset - base) / 2 / 8000
    return message_frames, damaged, workload.expected_lead_in(mailbox) - lead_in


def stored_messages(backend: Backend, workload: Workload) -> Stored:
    connection = pyodbc.connect(backend.connection_string, autocommit=True)
    try:
        cursor = connection.execute(
            "SELECT mailboxuser, recording FROM voicemessages WHERE dir LIKE '%/INBOX'"
        )
        result = Stored()
        lags = []
        while row := cursor.fetchone():
            mailbox, recording = row
            _rate, _width, _channels, frames = wav_pcm(bytes(recording))
            result.rows += 1
            result.recorded_seconds += len(frames) / 2 / 8000
            message, damaged, lag = analyse_recording(workload, mailbox, frames)
            result.message_seconds += message * FRAME_SECONDS
            result.damaged_frames += damaged
            if math.isnan(lag):
                result.unaligned += 1
            else:
                lags.append(lag * 1000)
        result.start_lag_ms = summary_ms(lags)
        return result
    finally:
        connection.close()


def row_count(backend: Backend) -> int:
    connection = pyodbc.connect(backend.connection_string, autocommit=True)
    try:
        return int(connection.execute("SELECT COUNT(*) FROM voicemessages").fetchone()[0])
    finally:
        connection.close()


# -- one run --------------------------------------------------------------------------------


@dataclass
class RunResult:
    calls: int
    rate: int
    generator: str  # sipp, or bench.loadgen ("raw")
    realtime_rows: int | None  # filler rows in voicemail and sippeers (None: no sippeers)
    odbc_connections: int  # res_odbc max_connections
    server_metrics: dict[str, float]  # from its /metrics after the run (bench.procstats)
    codec: str
    sipp_exit: int
    counters: dict[str, int]
    stored: Stored
    sent_message_seconds: float
    wall_seconds: float
    cpu: dict[str, float | None]
    peak_rss_mb: float
    invite_ms: dict[str, float]
    bye_ms: dict[str, float]
    server_exit: int
    server_problems: list[str]
    sipp_errors: list[str]
    greeting_packets: dict[str, int]  # with --capture: server->caller RTP seen vs expected


def wait_for_rows(backend: Backend, settle: float = 2.0, limit: float = 30.0) -> None:
    """Until the row count stops changing (messages of calls sipp gave up on may still land)."""
    deadline = time.monotonic() + limit
    last = -1
    while time.monotonic() < deadline:
        count = row_count(backend)
        if count == last:
            return
        last = count
        time.sleep(settle)


def problems_in_log(log: str, limit: int = 8) -> list[str]:
    """The server's WARNING/ERROR lines and tracebacks, counted by message shape."""
    shapes: dict[str, int] = {}
    for line in log.splitlines():
        if " WARNING " in line or " ERROR " in line or line.startswith("Traceback"):
            text = line.split(" ", 2)[-1]
            shape = re.sub(r"\d+", "N", text)[:160]
            shapes[shape] = shapes.get(shape, 0) + 1
    ranked = sorted(shapes.items(), key=lambda item: -item[1])
    return [f"{count} x {shape}" for shape, count in ranked[:limit]]


def loadgen_command(
    workdir: Path, workload: Workload, target: str, calls: int, rate: int, media_port: int
) -> list[str]:
    """bench.loadgen placing the calls sipp would, with the same RTP and hang-up time."""
    (workdir / "mailboxes.txt").write_text("\n".join(workload.mailboxes) + "\n")
    return [
        sys.executable,
        "-m",
        "bench.loadgen",
        "--target",
        target.removeprefix("sip:"),
        "--mailboxes",
        str(workdir / "mailboxes.txt"),
        "--audio",
        str(workload.g711),
        "--payload-type",
        str(workload.payload_type),
        "--media-port",
        str(media_port),
        "--calls",
        str(calls),
        "--rate",
        str(rate),
        "--hangup-after",
        str(workload.caller_rtp_seconds + BYE_AFTER_MS / 1000),
        "--report",
        str(workdir / "loadgen.json"),
    ]


def loadgen_results(workdir: Path) -> tuple[dict[str, int], dict[int, list[float]], list[str]]:
    """bench.loadgen's report as sipp's counters, response times and errors."""
    path = workdir / "loadgen.json"
    if not path.exists():
        return {}, {}, ["bench.loadgen wrote no report"]
    report = json.loads(path.read_text())
    counters = {
        "TotalCallCreated": report["created"],
        "SuccessfulCall": report["successful"],
        "Retransmissions": report["retransmissions"],
        "FailedCall": report["created"] - report["successful"],
        "OutOfCallMsgs": sum(report["unexpected"].values()),
        "LateTicks": report["late_ticks"],
    }
    errors = [f"failed: {reason} x {n}" for reason, n in report["failed"].items()]
    errors += [f"unexpected: {what} x {n}" for what, n in report["unexpected"].items()]
    errors.append(
        f"{report['rtp_packets']} RTP packets sent, worst tick "
        f"{report['worst_tick_lag_ms']:.1f} ms late, {report['late_ticks']} ticks > 5 ms late"
    )
    return counters, {1: report["invite_ms"], 2: report["bye_ms"]}, errors


def run_once(
    calls: int,
    rate: int,
    root: Path,
    with_capture: bool = False,
    generator: str = "raw",
    codec: str = "PCMA",
    realtime_rows: int | None = None,
    odbc_connections: int = 4,
) -> RunResult:
    workdir = root / f"n{calls}"
    workdir.mkdir(parents=True)
    workload = make_workload(workdir, calls, codec)
    (workdir / "calls.xml").write_text(scenario_xml(workload))
    (workdir / "callers.csv").write_text(
        "SEQUENTIAL\n" + "".join(f"{m};\n" for m in workload.mailboxes)
    )
    call_seconds = workload.caller_rtp_seconds + BYE_AFTER_MS / 1000
    timeout = int(calls / rate + call_seconds + 90)
    with fresh_database("postgresql", workdir) as backend:
        families: tuple[str, ...] = ()
        if realtime_rows is not None:  # every caller a realtime peer, and filler rows
            create_sippeers(backend)
            families = ("sippeers",)
        config = write_config(workdir / "etc", backend, realtime=families)
        (config / "res_odbc.conf").write_text(
            backend.res_odbc_section(max_connections=odbc_connections)
        )
        metrics_port = free_tcp_port()
        enable_http(config, metrics_port)
        server: RunningServer = start_server(config)
        try:
            if realtime_rows is None:
                add_realtime_mailboxes(backend, workload.mailboxes)
            else:
                add_realtime_rows(backend, workload.mailboxes, calls, realtime_rows)
            media_port = free_udp_port(30000, span=4)
            if generator == "sipp":
                command = sipp_command(workdir, server.target, calls, rate, timeout, media_port)
            else:
                command = loadgen_command(workdir, workload, server.target, calls, rate, media_port)
            (workdir / "command.txt").write_text(" ".join(command) + "\n")
            capture = GreetingCapture(media_port) if with_capture else None
            started = time.monotonic()
            process = subprocess.Popen(
                command,
                cwd=workdir if generator == "sipp" else Path(__file__).resolve().parent.parent,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            sampler = Sampler(server.process.pid, process.pid, backend.user)
            sampler.start()
            try:
                stdout, stderr = process.communicate(timeout=timeout + 60)
            except subprocess.TimeoutExpired:
                process.kill()
                stdout, stderr = process.communicate()
            wall = time.monotonic() - started
            greeting_packets = {}
            if capture is not None:
                greeting_packets = capture.stop()
                greeting_packets["expected"] = sum(greeting_frames(m) for m in workload.mailboxes)
            sampler.stopping.set()
            sampler.join()
            (workdir / "sipp.stdout").write_text(stdout + stderr)
            wait_for_rows(backend)
            peak_rss_kb = proc_status_kb(server.process.pid, "VmHWM") or 0
            metrics = server_metrics(metrics_port)
            stored = stored_messages(backend, workload)
        finally:
            server_exit = server.stop()
            (workdir / "server.log").write_text(server.log())
    samples = sampler.samples
    # All N calls are up from the end of the ramp until the first call hangs up.
    plateau = (started + calls / rate + 1.0, started + call_seconds - 1.0)
    cpu = {
        f"{who}_{span}": cpu_percent(samples, who, *window)
        for who in ("server", "sipp", "postgres", "system", "loop_wait")
        for span, window in (("run", (started, started + wall + 1)), ("plateau", plateau))
    }
    if generator == "sipp":
        times = response_times(workdir)
        stat = workdir / "stat.csv"
        counters = sipp_counters(stat) if stat.exists() else {}
        errors = sipp_errors(workdir, process.returncode, stdout + stderr)
    else:
        counters, times, errors = loadgen_results(workdir)
        if process.returncode not in (0, 1):
            errors.append(f"bench.loadgen exit {process.returncode}: {(stdout + stderr)[-600:]}")
    return RunResult(
        calls=calls,
        rate=rate,
        generator=generator,
        realtime_rows=realtime_rows,
        odbc_connections=odbc_connections,
        server_metrics=metrics,
        codec=codec,
        sipp_exit=process.returncode,
        counters=counters,
        stored=stored,
        sent_message_seconds=calls * MESSAGE_SECONDS,
        wall_seconds=wall,
        cpu=cpu,
        peak_rss_mb=peak_rss_kb / 1024,
        invite_ms=summary_ms(times.get(1, [])),
        bye_ms=summary_ms(times.get(2, [])),
        server_exit=server_exit,
        server_problems=problems_in_log(server.log()),
        sipp_errors=errors,
        greeting_packets=greeting_packets,
    )


def sipp_errors(workdir: Path, exit_code: int, output: str) -> list[str]:
    """The first lines of sipp's error logs, and its output when it failed to run."""
    logged = "".join(
        p.read_text(errors="replace") for p in workdir.glob("calls_*_errors.log")
    ).splitlines()
    errors = [line for line in logged if line.strip()][:6]
    if exit_code not in (0, 1):  # 1: some calls failed, which the counters tell
        errors.append(f"sipp exit {exit_code}: {output[-600:]}")
    return errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.calls", description=__doc__)
    parser.add_argument("--calls", type=int, nargs="+", default=[100, 200, 400])
    parser.add_argument("--rate", type=int, default=50, help="new calls per second (sipp -r)")
    parser.add_argument(
        "--generator",
        choices=["raw", "sipp"],
        default="raw",
        help="who places the calls: bench.loadgen (one thread, default) or sipp with pcap play",
    )
    parser.add_argument("--codec", choices=sorted(CODECS), default="PCMA")
    parser.add_argument(
        "--realtime-rows",
        type=int,
        help="every caller a sippeers peer (loadgen's callerN), and this many more rows in "
        "voicemail and in sippeers that no call uses",
    )
    parser.add_argument(
        "--odbc-connections", type=int, default=4, help="res_odbc.conf max_connections"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument(
        "--capture",
        action="store_true",
        help="count the server's greeting packets with tcpdump (costs CPU: not for numbers)",
    )
    args = parser.parse_args(argv)
    print(f"# bench.calls {' '.join(sys.argv[1:])}\n{machine()}\n", flush=True)
    results = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-calls-"))
    try:
        for calls in args.calls:
            result = run_once(
                calls,
                args.rate,
                tmp,
                args.capture,
                args.generator,
                args.codec,
                args.realtime_rows,
                args.odbc_connections,
            )
            results.append(result)
            print(markdown([result]), flush=True)
    finally:
        if args.keep:
            print(f"work directory kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(markdown(results))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2, default=str))
    failed = any(r.counters.get("SuccessfulCall") != r.calls for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
