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
import datetime
import itertools
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyodbc

from tests import sipp
from tests.audio import (
    PAYLOAD_PCMU,
    g711_decode,
    g711_encode,
    test_signal,
    wav_pcm,
    write_rtp_pcap,
)
from tests.dbbackends import PG_ADMIN, Backend, fresh_database
from tests.server import SOUNDS, RunningServer, start_server, write_config

FRAME_BYTES = 320  # 20 ms of 8 kHz 16-bit PCM: one RTP packet of the caller and of the server
FRAME_SECONDS = 0.020
MESSAGE_SECONDS = 10.0
MARGIN_FRAMES = 25  # the caller talks 0.5 s past the longest greeting before its message starts
BYE_AFTER_MS = 200  # silence between the last RTP packet and the BYE
CLK_TCK = os.sysconf("SC_CLK_TCK")
REFERENCE_MAILBOX = "1000"


# -- the workload ---------------------------------------------------------------------------


def prompt_frames(name: str) -> int:
    """20 ms packets the server sends for one prompt (it pads the last one)."""
    return math.ceil(len(SOUNDS.load_pcm(name)) / FRAME_BYTES)


def greeting_frames(mailbox: str) -> int:
    """Packets from the answer to the end of the beep, for VoiceMail(mailbox,u) with no greeting
    recorded: vm-theperson, the digits, vm-isunavail, vm-intro, beep."""
    names = ["vm-theperson", *(f"digits/{d}" for d in mailbox), "vm-isunavail", "vm-intro"]
    return sum(prompt_frames(name) for name in [*names, "beep"])


def mailboxes_like_reference(count: int) -> list[str]:
    """`count` four-digit mailboxes whose greetings are as long as 1000's, or nearly.

    One mailbox per caller (maxmsg is 100 per mailbox), with greetings that differ by a few
    packets at most, so one pcap serves every caller.
    """
    digit = {d: prompt_frames(f"digits/{d}") for d in "0123456789"}
    target = sum(digit[d] for d in REFERENCE_MAILBOX)
    candidates = (
        "".join(p)
        for p in itertools.product("0123456789", repeat=4)
        if "".join(p) != REFERENCE_MAILBOX
    )
    ranked = sorted(candidates, key=lambda m: (abs(sum(digit[d] for d in m) - target), m))
    if count > len(ranked):
        raise ValueError(f"at most {len(ranked)} mailboxes")
    return ranked[:count]


@dataclass
class Workload:
    mailboxes: list[str]
    filler_frames: int  # caller's RTP before its message: the longest greeting + margin
    pcap: Path  # filler then message, one continuous RTP stream (PCMU)
    sent_pcm: bytes  # what the server decodes from that stream, sample for sample

    @property
    def message_offset(self) -> int:
        return self.filler_frames * FRAME_BYTES

    @property
    def caller_rtp_seconds(self) -> float:
        return self.filler_frames * FRAME_SECONDS + MESSAGE_SECONDS

    def expected_lead_in(self, mailbox: str) -> float:
        """Seconds of filler an ideal server records before the message (its beep ends then)."""
        return (self.filler_frames - greeting_frames(mailbox)) * FRAME_SECONDS


def make_workload(directory: Path, calls: int, margin_frames: int = MARGIN_FRAMES) -> Workload:
    """The mailboxes and the caller's pcap: filler (seed 2) then test_signal(10.0) (seed 1);
    the caller talks `margin_frames` past the longest greeting before its message starts."""
    mailboxes = mailboxes_like_reference(calls)
    filler_frames = max(greeting_frames(m) for m in mailboxes) + margin_frames
    filler = test_signal(filler_frames * FRAME_SECONDS, seed=2)
    message = test_signal(MESSAGE_SECONDS)
    pcm = filler + message
    pcap = directory / "caller.pcap"
    write_rtp_pcap(pcap, pcm, PAYLOAD_PCMU)
    sent = g711_decode(g711_encode(pcm, PAYLOAD_PCMU), PAYLOAD_PCMU)
    return Workload(mailboxes, filler_frames, pcap, sent)


def scenario_xml(workload: Workload, after_bye: str = "") -> str:
    """INVITE (rtd 1 until the 200), ACK, RTP for greeting + margin + 10 s, BYE (rtd 2), then
    `after_bye` (sipp XML)."""
    user = "[field0]"
    plain = '<send retrans="500">'
    invite = sipp.invite(user, [0, 101]).replace(plain, '<send retrans="500" start_rtd="1">', 1)
    bye = sipp.bye(user).replace(plain, '<send retrans="500" start_rtd="2">', 1)
    return sipp.scenario(
        "calls",
        invite,
        sipp.recv(100, optional=True),
        sipp.recv(180, optional=True),
        sipp.recv(200, extra=' rtd="1"'),
        sipp.ack(user),
        sipp.play_pcap(workload.pcap),
        sipp.pause(workload.caller_rtp_seconds * 1000 + BYE_AFTER_MS),
        bye,
        sipp.recv(200, extra=' rtd="2"'),
        *([after_bye] if after_bye else []),
    )


# -- sampling the processes -----------------------------------------------------------------


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
            admin = pyodbc.connect(PG_ADMIN, autocommit=True, timeout=5)
            try:
                rows = admin.execute(
                    "SELECT pid FROM pg_stat_activity WHERE usename = ?", self.db_user
                ).fetchall()
            finally:
                admin.close()
            self._pg_pids = [int(r[0]) for r in rows]
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


def add_realtime_mailboxes(backend: Backend, mailboxes: list[str]) -> None:
    connection = pyodbc.connect(backend.connection_string, autocommit=False)
    try:
        connection.cursor().executemany(
            "INSERT INTO voicemail (context, mailbox, password, fullname) VALUES (?, ?, ?, ?)",
            [("default", m, "1234", f"Bench {m}") for m in mailboxes],
        )
        connection.commit()
    finally:
        connection.close()


# -- one run --------------------------------------------------------------------------------


@dataclass
class RunResult:
    calls: int
    rate: int
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


def run_once(calls: int, rate: int, root: Path, with_capture: bool = False) -> RunResult:
    workdir = root / f"n{calls}"
    workdir.mkdir(parents=True)
    workload = make_workload(workdir, calls)
    (workdir / "calls.xml").write_text(scenario_xml(workload))
    (workdir / "callers.csv").write_text(
        "SEQUENTIAL\n" + "".join(f"{m};\n" for m in workload.mailboxes)
    )
    call_seconds = workload.caller_rtp_seconds + BYE_AFTER_MS / 1000
    timeout = int(calls / rate + call_seconds + 90)
    with fresh_database("postgresql", workdir) as backend:
        server: RunningServer = start_server(write_config(workdir / "etc", backend))
        try:
            add_realtime_mailboxes(backend, workload.mailboxes)
            media_port = free_udp_port(30000, span=4)
            command = sipp_command(workdir, server.target, calls, rate, timeout, media_port)
            (workdir / "command.txt").write_text(" ".join(command) + "\n")
            capture = GreetingCapture(media_port) if with_capture else None
            started = time.monotonic()
            process = subprocess.Popen(
                command, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
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
    times = response_times(workdir)
    return RunResult(
        calls=calls,
        rate=rate,
        sipp_exit=process.returncode,
        counters=sipp_counters(workdir / "stat.csv") if (workdir / "stat.csv").exists() else {},
        stored=stored,
        sent_message_seconds=calls * MESSAGE_SECONDS,
        wall_seconds=wall,
        cpu=cpu,
        peak_rss_mb=peak_rss_kb / 1024,
        invite_ms=summary_ms(times.get(1, [])),
        bye_ms=summary_ms(times.get(2, [])),
        server_exit=server_exit,
        server_problems=problems_in_log(server.log()),
        sipp_errors=sipp_errors(workdir, process.returncode, stdout + stderr),
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


# -- report ---------------------------------------------------------------------------------


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} %"


def _ms(summary: dict[str, float]) -> str:
    if not summary:
        return "n/a"
    return f"{summary['avg']:.1f} / {summary['p95']:.1f} / {summary['max']:.1f}"


def markdown(results: list[RunResult]) -> str:
    head = (
        "| N | attempted | succeeded (strict) | rows | message audio stored / sent "
        "| recorded s | damaged packets | server CPU plateau / run | sipp CPU plateau "
        "| PostgreSQL CPU plateau | machine busy plateau (of 200) | peak RSS "
        "| INVITE->200 ms avg / p95 / max | BYE->200 ms avg / p95 / max "
        "| recording start lag ms avg / max | server loop waiting for a CPU, plateau |\n"
        "|" + "---|" * 16 + "\n"
    )
    rows = []
    for r in results:
        c, s = r.counters, r.stored
        lag = s.start_lag_ms
        rows.append(
            f"| {r.calls} | {c.get('TotalCallCreated', 'n/a')} "
            f"| {c.get('SuccessfulCall', 'n/a')} | {s.rows} "
            f"| {s.message_seconds:.1f} / {r.sent_message_seconds:.0f} s "
            f"({100 * s.message_seconds / r.sent_message_seconds:.2f} %) "
            f"| {s.recorded_seconds:.1f} | {s.damaged_frames} "
            f"| {percent(r.cpu['server_plateau'])} / {percent(r.cpu['server_run'])} "
            f"| {percent(r.cpu['sipp_plateau'])} | {percent(r.cpu['postgres_plateau'])} "
            f"| {percent(r.cpu['system_plateau'])} | {r.peak_rss_mb:.0f} MB "
            f"| {_ms(r.invite_ms)} | {_ms(r.bye_ms)} "
            + (f"| {lag['avg']:.0f} / {lag['max']:.0f} " if lag else "| n/a ")
            + f"| {percent(r.cpu['loop_wait_plateau'])} |"
        )
    details = []
    for r in results:
        failed = {k: v for k, v in r.counters.items() if k.startswith("Failed") and v}
        extra = {
            k: r.counters.get(k, 0)
            for k in ("Retransmissions", "OutOfCallMsgs", "DeadCallMsgs", "Warnings")
        }
        details.append(
            f"- N={r.calls}: sipp exit {r.sipp_exit}, wall {r.wall_seconds:.0f} s, "
            f"server exit {r.server_exit}, failures {failed or 'none'}, {extra}, "
            f"unaligned recordings {r.stored.unaligned}"
            + (f"; server->caller RTP packets {r.greeting_packets}" if r.greeting_packets else "")
        )
        details += [f"  - server log: {line}" for line in r.server_problems]
        details += [f"  - sipp: {line[:300]}" for line in r.sipp_errors]
    return head + "\n".join(rows) + "\n\n" + "\n".join(details) + "\n"


def source_version() -> str:
    """The commit measured, and the files outside bench/ that differ from it."""
    repo = Path(__file__).resolve().parent.parent
    git = ["git", "-C", str(repo)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    status = subprocess.run([*git, "status", "--short"], capture_output=True, text=True)
    changed = [line[3:] for line in status.stdout.splitlines() if not line[3:].startswith("bench/")]
    return f"commit {head.stdout.strip()}" + (f" + changes in {changed}" if changed else "")


def machine() -> str:
    return (
        f"{datetime.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}, {source_version()}, "
        f"nproc {os.cpu_count()}, "
        f"Python {platform.python_version()} ({sys.executable}), {platform.platform()}, "
        f"sipp {subprocess.run(['sipp', '-v'], capture_output=True, text=True).stdout.split()[1]}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.calls", description=__doc__)
    parser.add_argument("--calls", type=int, nargs="+", default=[100, 200, 400])
    parser.add_argument("--rate", type=int, default=50, help="sipp -r, calls per second")
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
            result = run_once(calls, args.rate, tmp, args.capture)
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
