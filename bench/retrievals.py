"""Retrievals: `--sessions` callers in VoiceMailMain at once, each hearing two 1 MB messages.

Run from the repository root: ``.venv/bin/python -m bench.retrievals`` (PostgreSQL).

One `voicemail serve` on a fresh PostgreSQL database, VoiceMailMain at 8500. Every session
has its own realtime mailbox (PIN 1234) holding two new messages of `--message-bytes` each
(WAV, 16-bit 8 kHz: 1 MB is 62.5 s), tones that bench.listener recognises packet by packet.
The callers (bench.listener, in this process, one thread) start at `--rate` a second, log in
by RFC 4733 keys, press 1 and hear message 1 to its end, 6 and hear message 2 to its end,
5 and hear message 2 again for a second, and hang up.

Reported: for each of the keys 1, 6 and 5, the time from the key to the message's first
RTP packet and the part of it the server added (the wait less the prompts it played in
between); whether each message arrived whole and the longest gap between two of its packets;
the server's CPU and RSS (before the calls, with every session in, after them, and its peak)
and the generator's CPU; and from the server's /metrics the messages read from the database
per session, which the target wants at one per message: the replay (5) must not fetch again.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.calls import free_tcp_port
from bench.listener import Listeners, SessionResult, message_payloads
from bench.mwi_propagation import SPOOL, percentile
from bench.mwi_scale import rss_mb
from bench.procstats import Sampler, cpu_percent, proc_status_kb
from bench.rows import add_realtime_mailboxes
from storage.audioformats import encode
from storage.messages import MessageStore, new_msg_id
from storage.odbc import OdbcPool
from tests.dbbackends import Backend, fresh_database
from tests.server import start_server, write_config
from tests.test_metrics_e2e import enable_http, scrape, value

FIRST_MAILBOX = 30000
PIN = "1234"  # bench.rows.add_realtime_mailboxes
AMPLITUDES = (6000, 12000)  # message 1 and message 2
EXTENSIONS = "[default]\nexten => 8500,1,VoiceMailMain(@default)\nsame => n,Hangup()\n"
FRAME_BYTES = 320


@dataclass
class KeyStats:
    key: str
    listens: int
    answer_ms: dict[str, float]  # key -> the server's first packet after it (its reaction)
    wait_ms: dict[str, float]  # key -> the message's first packet
    added_ms: dict[str, float]  # that wait less the prompts played in between
    whole: int  # listens whose message arrived with every packet (keys 1 and 6)
    max_gap_ms: dict[str, float]  # per listen, the longest gap between two message packets


@dataclass
class Result:
    sessions: int
    rate: float
    message_bytes: int
    completed: int
    failures: dict[str, int]
    keys: list[KeyStats]
    messages_read: float
    message_bytes_read: float
    server_cpu_percent: float | None
    generator_cpu_percent: float | None
    postgres_cpu_percent: float | None
    rss_before_mb: float
    rss_all_in_mb: float  # the most it had while every session was in
    rss_after_mb: float  # when the last session had ended
    rss_peak_mb: float
    wall_seconds: float
    general: str = ""
    extra: dict[str, float] = field(default_factory=dict)


def message_wav(amplitude: int, size: int) -> bytes:
    frame, _ = message_payloads(amplitude)
    return encode(frame * (size // FRAME_BYTES), "wav")


async def provision(backend: Backend, mailboxes: list[str], size: int) -> None:
    """Two new messages in each mailbox's INBOX, stored as a deposit stores them."""
    pool = OdbcPool(backend.connection_class(name="bench", max_connections=4), retry_timeout=30)
    await pool.start()
    store = MessageStore(pool, "voicemessages", SPOOL)
    wavs = [message_wav(amplitude, size) for amplitude in AMPLITUDES]
    seconds = (size // FRAME_BYTES) * 0.02
    limit = asyncio.Semaphore(4)

    async def fill(mailbox: str) -> None:
        async with limit:
            for n, wav in enumerate(wavs):
                await store.store(
                    context="default",
                    mailbox=mailbox,
                    folder="INBOX",
                    recording=wav,
                    callerid=f'"Bench {n}" <555000{n}>',
                    origtime=int(time.time()) - 3600 + n,
                    duration=int(seconds),
                    caller_context="default",
                    msg_id=new_msg_id(),
                )

    try:
        await asyncio.gather(*(fill(m) for m in mailboxes))
    finally:
        await pool.close()


def key_stats(results: list[SessionResult], key: str, frames: int) -> KeyStats:
    listens = [
        listen for r in results for listen in r.listens if listen.key == key and listen.packets
    ]

    def summary(values: list[float]) -> dict[str, float]:
        if not values:
            return {}
        return {
            "p50": round(statistics.median(values), 1),
            "p95": round(percentile(values, 0.95), 1),
            "p99": round(percentile(values, 0.99), 1),
            "max": round(max(values), 1),
        }

    return KeyStats(
        key=key,
        listens=len(listens),
        answer_ms=summary([listen.answer_ms() for listen in listens]),
        wait_ms=summary([listen.wait_ms() for listen in listens]),
        added_ms=summary([listen.added_ms() for listen in listens]),
        whole=sum(1 for listen in listens if listen.packets >= frames),
        max_gap_ms=summary([listen.max_gap * 1000 for listen in listens]),
    )


def run(args: argparse.Namespace, workdir: Path) -> Result:
    mailboxes = [str(FIRST_MAILBOX + n) for n in range(args.sessions)]
    general = args.general.replace("\\n", "\n")
    with fresh_database("postgresql", workdir) as backend:
        config = write_config(workdir / "etc", backend, general=general, extensions=EXTENSIONS,
                              mailboxes="")  # fmt: skip
        (config / "res_odbc.conf").write_text(
            backend.res_odbc_section(max_connections=args.odbc_connections)
        )
        metrics_port = free_tcp_port()
        enable_http(config, metrics_port)
        server = start_server(config, timeout=60)
        try:
            add_realtime_mailboxes(backend, mailboxes)
            asyncio.run(provision(backend, mailboxes, args.message_bytes))
            rss_before = rss_mb(server.process.pid)
            payloads = {message_payloads(a)[1]: n + 1 for n, a in enumerate(AMPLITUDES)}
            listeners = Listeners((server.host, server.port), mailboxes, PIN, payloads, args.rate)
            sampler = Sampler(server.process.pid, os.getpid(), backend.user)
            sampler.start()
            started = time.monotonic()
            results = listeners.run(args.sessions)
            ended = time.monotonic()
            sampler.stopping.set()
            sampler.join()
            # The window with every session in: from the last start to the first end.
            window = (started + args.sessions / args.rate, ended - 10)
            failures: dict[str, int] = {}
            for r in results:
                if r.failure:
                    failures[r.failure] = failures.get(r.failure, 0) + 1
            frames = args.message_bytes // FRAME_BYTES
            metrics = scrape(metrics_port)
            return Result(
                sessions=args.sessions,
                rate=args.rate,
                message_bytes=args.message_bytes,
                completed=sum(1 for r in results if not r.failure),
                failures=failures,
                keys=[key_stats(results, key, frames) for key in "165"],
                messages_read=value(metrics, "voicemail_messages_read_total"),
                message_bytes_read=value(metrics, "voicemail_message_audio_read_bytes_total"),
                server_cpu_percent=_rounded(cpu_percent(sampler.samples, "server", *window)),
                generator_cpu_percent=_rounded(cpu_percent(sampler.samples, "sipp", *window)),
                postgres_cpu_percent=_rounded(cpu_percent(sampler.samples, "postgres", *window)),
                rss_before_mb=round(rss_before, 1),
                rss_all_in_mb=round(
                    max(
                        (x.rss_kb for x in sampler.samples if window[0] <= x.t <= window[1]),
                        default=0,
                    )
                    / 1024,
                    1,
                ),  # fmt: skip
                rss_after_mb=round(rss_mb(server.process.pid), 1),
                rss_peak_mb=round((proc_status_kb(server.process.pid, "VmHWM") or 0) / 1024, 1),
                wall_seconds=round(ended - started, 1),
                general=args.general,
                extra={"retransmissions": listeners.retransmissions},
            )
        finally:
            server.stop()


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def markdown(result: Result) -> str:
    lines = [
        f"{result.sessions} sessions at {result.rate}/s, messages of {result.message_bytes} "
        f"bytes; {result.completed} completed, failures {result.failures or 'none'}",
        "",
        "| key | listens | key -> first packet ms p50 / p99 / max | key -> message ms "
        "p50 / p99 / max | added by the server ms p50 / p95 / p99 / max | whole "
        "| longest gap ms p50 / p99 / max |",
        "|---|---|---|---|---|---|---|",
    ]
    for k in result.keys:
        r, w, a, g = k.answer_ms, k.wait_ms, k.added_ms, k.max_gap_ms
        whole = f"{k.whole}/{k.listens}" if k.key != "5" else "-"
        lines.append(
            f"| {k.key} | {k.listens} | {r.get('p50')} / {r.get('p99')} / {r.get('max')} "
            f"| {w.get('p50')} / {w.get('p99')} / {w.get('max')} "
            f"| {a.get('p50')} / {a.get('p95')} / {a.get('p99')} / {a.get('max')} | {whole} "
            f"| {g.get('p50')} / {g.get('p99')} / {g.get('max')} |"
        )
    per = result.messages_read / max(1, result.sessions)
    lines += [
        "",
        f"Messages read from the database: {result.messages_read:.0f} ({per:.2f} per session, "
        f"{result.message_bytes_read / 1e6:.0f} MB). Server CPU {result.server_cpu_percent} % "
        f"of a core, PostgreSQL {result.postgres_cpu_percent} %, generator "
        f"{result.generator_cpu_percent} %, all sessions in. Server RSS {result.rss_before_mb} MB "
        f"before the calls, at most {result.rss_all_in_mb} MB with all sessions in, "
        f"{result.rss_after_mb} MB after them, peak {result.rss_peak_mb} MB. "
        f"Wall {result.wall_seconds} s.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.retrievals", description=__doc__)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--rate", type=float, default=10.0, help="sessions started a second")
    parser.add_argument("--message-bytes", type=int, default=1_000_000)
    parser.add_argument("--odbc-connections", type=int, default=4)
    parser.add_argument("--general", default="", help="more voicemail.conf [general] lines")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-retrievals-") as tmp:
        result = run(args, Path(tmp))
    print(markdown(result))
    if args.json:
        Path(args.json).write_text(json.dumps(asdict(result), indent=1))
    return 0 if result.completed == result.sessions else 1


if __name__ == "__main__":
    sys.exit(main())
