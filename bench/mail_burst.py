"""Email under load: 100 deposits in one second, each mailed with an mp3 attachment, while
other calls are in media; how late the media clock runs while the converter works.

Run from the repository root: ``.venv/bin/python -m bench.mail_burst`` (PostgreSQL).

On a fresh database and a fresh server, bench.loadgen places `--steady` calls of bench.calls'
workload (the ~13 s greeting, a 10 s message) at 50 a second. Once they are all up, a second
bench.loadgen places `--burst` calls at `--burst` a second to other mailboxes, whose dial plan
skips the greeting (VoiceMail's `s` option): each leaves a 3 s message and hangs up, so the
burst's deposits all land within about one second while the steady calls are still playing
their greetings. Only the burst's mailboxes have an email address, and their rows say
`attachfmt=mp3`, so every burst deposit becomes one mail whose wav is converted to mp3.

The server's own histogram `voicemail_media_clock_lag_seconds` (how late each 20 ms tick of
the clock that sends every call's RTP ran) is scraped every 0.25 s; the window "while the
converter runs" is from the burst's first BYE to the last mail's arrival at the SMTP server
(aiosmtpd, here). Each mail is parsed and its attachment checked to be an mp3 of about 3 s.
"""

from __future__ import annotations

import argparse
import email
import http.client
import itertools
import json
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyodbc
from aiosmtpd.controller import Controller
from prometheus_client.parser import text_string_to_metric_families

from bench.calls import free_udp_port, loadgen_command, stored_messages, summary_ms
from bench.procstats import Sampler, cpu_percent
from bench.rows import add_realtime_mailboxes
from bench.workload import make_workload
from tests.audio import g711_encode, test_signal
from tests.dbbackends import Backend, fresh_database
from tests.mail_server import free_port as free_tcp_port
from tests.server import start_server, write_config
from tests.test_metrics_e2e import enable_http

BURST_MESSAGE_SECONDS = 3.0
BURST_LEAD_SECONDS = 0.6  # the caller's audio before its message: the beep plays meanwhile
EXTENSIONS = """[default]
exten => _X.,1,VoiceMail(${EXTEN}@default,u)
same => n,Hangup()
exten => _6XXXX,1,VoiceMail(${EXTEN}@default,s)
same => n,Hangup()
"""
LAG_METRIC = "voicemail_media_clock_lag_seconds"


class Mails:
    """An aiosmtpd handler: when each mail arrived, and its attachment's type and size."""

    def __init__(self) -> None:
        self.arrivals: list[float] = []
        self.attachments: list[tuple[str, int]] = []  # (content type, bytes)
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        arrived = time.monotonic()
        message = email.message_from_bytes(envelope.content)
        found = ("none", 0)
        for part in message.walk():
            if part.get_content_maintype() == "audio":
                found = (part.get_content_type(), len(part.get_payload(decode=True) or b""))
        with self.lock:
            self.arrivals.append(arrived)
            self.attachments.append(found)
        return "250 OK"


@dataclass
class LagScrape:
    at: float  # time.monotonic()
    buckets: dict[str, float]  # le -> cumulative ticks


class LagScraper(threading.Thread):
    """The media clock lag histogram from /metrics every `interval` seconds."""

    def __init__(self, port: int, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.port, self.interval = port, interval
        self.scrapes: list[LagScrape] = []
        self.stopping = threading.Event()

    def scrape(self) -> LagScrape:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            connection.request("GET", "/metrics")
            text = connection.getresponse().read().decode()
        finally:
            connection.close()
        buckets: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == LAG_METRIC + "_bucket":
                    buckets[sample.labels["le"]] = sample.value
        return LagScrape(time.monotonic(), buckets)

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            try:
                self.scrapes.append(self.scrape())
            except OSError:
                pass


def lag_between(scrapes: list[LagScrape], start: float, end: float) -> dict[str, float]:
    """Ticks in (start, end] by lateness: the differences of the scrapes around the window."""
    before = [s for s in scrapes if s.at <= start]
    after = [s for s in scrapes if s.at >= end]
    if not before or not after:
        return {}
    first, last = before[-1], after[0]
    ticks = last.buckets.get("+Inf", 0) - first.buckets.get("+Inf", 0)
    result: dict[str, float] = {"ticks": ticks, "seconds": last.at - first.at}
    if ticks:
        for le in ("0.002", "0.005", "0.01", "0.02", "0.05", "0.1"):
            within = last.buckets.get(le, 0) - first.buckets.get(le, 0)
            result[f"over_{float(le) * 1000:g}ms_pct"] = 100 * (ticks - within) / ticks
        bounds = sorted((float(le), le) for le in last.buckets if le != "+Inf")
        worst = "+Inf"
        for value, le in reversed(bounds):
            if last.buckets[le] - first.buckets[le] < ticks:
                break
            worst = f"<= {value * 1000:g} ms"
        result["worst"] = worst  # type: ignore[assignment]
    return result


def lag_timeline(scrapes: list[LagScrape], start: float, end: float) -> list[list[float]]:
    """[second after `start`, ticks, ticks over 5 ms, over 20 ms] for each second up to `end`:
    the ticks counted between two scrapes go to the second the later scrape fell in."""
    rows: dict[int, list[float]] = {}
    for earlier, later in itertools.pairwise(scrapes):
        if not start < later.at <= end:
            continue
        second = int(later.at - start)
        row = rows.setdefault(second, [float(second), 0.0, 0.0, 0.0])
        for column, le in ((1, "+Inf"), (2, "0.005"), (3, "0.02")):
            delta = later.buckets.get(le, 0) - earlier.buckets.get(le, 0)
            if column == 1:
                row[1] += delta
            else:
                all_ticks = later.buckets.get("+Inf", 0) - earlier.buckets.get("+Inf", 0)
                row[column] += all_ticks - delta
    return [rows[second] for second in sorted(rows)]


def add_mailed_boxes(backend: Backend, mailboxes: list[str], attachfmt: str) -> None:
    """The burst's mailboxes; attachfmt "none": no email address (the deposits alone)."""
    none = attachfmt == "none"
    connection = pyodbc.connect(backend.connection_string, autocommit=False)
    try:
        connection.cursor().executemany(
            "INSERT INTO voicemail (context, mailbox, password, fullname, email, attachfmt) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [
                (
                    "default",
                    m,
                    "1234",
                    f"Burst {m}",
                    None if none else f"box{m}@example.com",
                    None if none else attachfmt,
                )
                for m in mailboxes
            ],
        )
        connection.commit()
    finally:
        connection.close()


@dataclass
class BurstResult:
    steady: int
    burst: int
    mails: int
    attachment_types: dict[str, int]
    attachment_bytes: dict[str, float]
    first_bye_to_mail_ms: dict[str, float]  # the burst's first BYE -> each mail's arrival
    lag_while_converting: dict[str, float]
    lag_after_hangups: dict[str, float]  # from 2 s after the first BYE: the mails alone
    lag_before_burst: dict[str, float]  # the second before the burst
    lag_each_second: list[list[float]]  # from the first BYE on: see lag_timeline
    server_cpu_window: float | None
    machine_cpu_window: float | None
    steady_audio_pct: float
    generator_errors: list[str] = field(default_factory=list)


def run(steady: int, burst: int, root: Path, attachfmt: str = "mp3") -> BurstResult:
    workdir = root / "run"
    workdir.mkdir(parents=True)
    workload = make_workload(workdir, steady)
    burst_boxes = [f"6{n:04d}" for n in range(burst)]
    burst_dir = workdir / "burst"
    burst_dir.mkdir()
    lead = test_signal(BURST_LEAD_SECONDS, seed=2)
    (burst_dir / "caller.g711").write_bytes(
        g711_encode(lead + test_signal(BURST_MESSAGE_SECONDS), workload.payload_type)
    )
    mails = Mails()
    smtp_port = free_tcp_port()
    controller = Controller(mails, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    try:
        with fresh_database("postgresql", workdir) as backend:
            config = write_config(
                workdir / "etc", backend, extensions=EXTENSIONS,
                smtp_port=smtp_port,
            )  # fmt: skip
            metrics_port = free_tcp_port()
            enable_http(config, metrics_port)
            server = start_server(config)
            try:
                add_realtime_mailboxes(backend, workload.mailboxes)
                add_mailed_boxes(backend, burst_boxes, attachfmt)
                result = _load(
                    workdir,
                    burst_dir,
                    workload,
                    burst_boxes,
                    server,
                    metrics_port,
                    mails,
                    attachfmt,
                )
                result.steady_audio_pct = _steady_audio(backend, workload, steady)
            finally:
                server.stop()
                (root.parent / "mail_burst_server.log").write_text(server.log())
    finally:
        controller.stop()
    return result


def _load(
    workdir, burst_dir, workload, burst_boxes, server, metrics_port, mails, attachfmt
) -> BurstResult:
    repo = Path(__file__).resolve().parent.parent
    steady_command = loadgen_command(
        workdir, workload, server.target, len(workload.mailboxes), 50, free_udp_port(30000, 4)
    )
    burst_workload = type(workload)(burst_boxes, 0, workload.pcap, burst_dir / "caller.g711",
                                    workload.payload_type, b"")  # fmt: skip
    burst_command = loadgen_command(
        burst_dir, burst_workload, server.target, len(burst_boxes), len(burst_boxes),
        free_udp_port(34000, 4),
    )  # fmt: skip
    hangup = BURST_LEAD_SECONDS + BURST_MESSAGE_SECONDS + 0.2
    burst_command[burst_command.index("--hangup-after") + 1] = f"{hangup}"
    scraper = LagScraper(metrics_port)
    scraper.start()
    steady = subprocess.Popen(steady_command, cwd=repo, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)  # fmt: skip
    sampler = Sampler(server.process.pid, steady.pid, "")
    sampler.start()
    time.sleep(len(workload.mailboxes) / 50 + 1.0)  # every steady call up, greetings playing
    burst_started = time.monotonic()
    burst = subprocess.run(burst_command, cwd=repo, capture_output=True, text=True, timeout=120)
    first_bye = burst_started + hangup  # the first burst call's BYE (placed at 0 s)
    deadline = time.monotonic() + 120
    expected = 0 if attachfmt == "none" else len(burst_boxes)
    while len(mails.arrivals) < expected and time.monotonic() < deadline:
        time.sleep(0.1)
    last_mail = max(mails.arrivals, default=first_bye + 3.0)
    time.sleep(0.5)
    steady_out, _ = steady.communicate(timeout=120)
    scraper.stopping.set()
    scraper.join()
    sampler.stopping.set()
    sampler.join()
    errors = [line for line in (burst.stdout + burst.stderr + steady_out).splitlines() if line]
    types = [kind for kind, _ in mails.attachments]
    return BurstResult(
        steady=len(workload.mailboxes),
        burst=len(burst_boxes),
        mails=len(mails.arrivals),
        attachment_types={kind: types.count(kind) for kind in set(types)},
        attachment_bytes=summary_ms([float(n) for _, n in mails.attachments]),
        first_bye_to_mail_ms=summary_ms([(t - first_bye) * 1000 for t in mails.arrivals]),
        lag_while_converting=lag_between(scraper.scrapes, first_bye, last_mail),
        lag_after_hangups=lag_between(scraper.scrapes, first_bye + 2.0, last_mail),
        lag_before_burst=lag_between(scraper.scrapes, burst_started - 1.0, burst_started),
        lag_each_second=lag_timeline(
            scraper.scrapes, first_bye - 2.0, max(last_mail, first_bye + 12)
        ),
        server_cpu_window=cpu_percent(sampler.samples, "server", first_bye, last_mail),
        machine_cpu_window=cpu_percent(sampler.samples, "system", first_bye, last_mail),
        steady_audio_pct=0.0,
        generator_errors=errors[-6:],
    )


def _steady_audio(backend: Backend, workload, steady: int) -> float:
    time.sleep(2)
    stored = stored_messages(backend, workload)  # the burst's rows do not align: counted apart
    return 100 * stored.message_seconds / (steady * 10.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steady", type=int, default=200, help="calls in media meanwhile")
    parser.add_argument("--burst", type=int, default=100, help="deposits in one second")
    parser.add_argument(
        "--attachfmt",
        default="mp3",
        help="the burst mailboxes' attachfmt (wav: no conversion; none: no email address)",
    )
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        result = run(args.steady, args.burst, Path(folder), args.attachfmt)
    text = json.dumps(asdict(result), indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)
    if args.attachfmt == "none":
        return 0 if result.mails == 0 else 1
    return 0 if list(result.attachment_types.values()) == [args.burst] else 1  # one kind each


if __name__ == "__main__":
    sys.exit(main())
