"""MWI propagation across servers: deposit committed on A -> NOTIFY received from B.

Run from the repository root: ``.venv/bin/python -m bench.mwi_propagation --deposits 50``.

Per backend (PostgreSQL: LISTEN/NOTIFY; MariaDB: the change log read by id every
`changelogpollms`, default 200 ms): a fresh database (tests.dbbackends.fresh_database), server
B (`voicemail serve` with the default test configuration and whatever `--general` adds; by
default nothing, so pollmailboxes=yes, pollfreq=5, changelogpollms=200) and a phone, sipp,
subscribed on B to mailbox 1000@default. Server A is this process: a MessageStore whose
on_change is ChangeLog.hook, which is exactly what `voicemail serve` does in every folder
write's transaction. Per deposit two times are taken: when the hook has run, in the worker
thread, just before the pool sends COMMIT ("commit"; the latency from it includes the COMMIT
itself, a millisecond or so), and when store() returns on the event loop ("acknowledged";
that can come after the NOTIFY on a busy machine, the loop being slow to wake). The phone's
NOTIFY n+1 (`Voice-Message: n/0`, checked) is waited for; its time is sipp's own log time of
its arrival (same clock, same host). Deposits are spaced by a random 0.1-0.4 s, so they
fall anywhere in the follower's polling period.

Printed: per backend, median / p95 / max / min in ms over `--deposits`, from the commit, and
the median from the acknowledgement.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path

from storage.changelog import ChangeLog
from storage.messages import MessageStore, new_msg_id
from storage.odbc import OdbcPool
from tests import sipp
from tests.dbbackends import Backend, fresh_database
from tests.server import start_server, write_config
from tests.test_mwi_e2e import PEERS, authenticated_subscribe, references

SPOOL = "/var/spool/asterisk/voicemail/"
WAIT = 10.0  # a NOTIFY later than this is a failure, not a sample


def phone_scenario(deposits: int) -> str:
    """Subscribe, then take (and answer) deposits + 1 NOTIFYs; their bodies are checked here
    (sipp cannot load a scenario with hundreds of checks)."""
    steps = [sipp.recv_request("NOTIFY"), sipp.answer_request()] * (deposits + 1)
    return sipp.scenario("phone", *authenticated_subscribe("6001"), *steps, references("granted"))


def notifies(phone: sipp.BackgroundSipp) -> list[tuple[float, str]]:
    return [(when, text) for when, text in phone.received() if text.startswith("NOTIFY ")]


async def measure(backend: Backend, workdir: Path, deposits: int, general: str) -> list[float]:
    config = write_config(workdir / "b", backend, general=general)
    with (config / "sip.conf").open("a") as sip_conf:
        sip_conf.write(PEERS)
    server = start_server(config)
    pool = OdbcPool(backend.connection_class(name="a"), retry_timeout=10)
    await pool.start()
    latencies: list[tuple[float, float]] = []
    store, hooked = committing_store(pool)
    try:
        phone = sipp.start_sipp(
            workdir / "phone",
            phone_scenario(deposits),
            server.target,
            name="phone",
            timeout=int(deposits * (WAIT + 1) + 30),
        )
        try:
            try:
                await wait_notifies(phone, 1)
            except RuntimeError:
                result = phone.wait(1)
                raise RuntimeError(f"{result.stdout[-2000:]}{result.stderr[-2000:]}") from None
            for n in range(1, deposits + 1):
                await asyncio.sleep(random.uniform(0.1, 0.4))
                await bench_deposit(store, "1000")
                acknowledged, committed = time.time(), hooked[-1]
                arrived, text = (await wait_notifies(phone, n + 1))[n]
                if f"\r\nVoice-Message: {n}/0 (0/0)\r\n" not in text:
                    raise RuntimeError(f"NOTIFY {n + 1} has the wrong counts:\n{text}")
                latencies.append((arrived - committed, arrived - acknowledged))
            result = phone.wait(15)
            result.check()
        finally:
            phone.stop()
    finally:
        await pool.close()
        server.stop()
    return latencies


def committing_store(pool: OdbcPool) -> tuple[MessageStore, list[float]]:
    """A MessageStore that writes the change log as `voicemail serve` does, and the times
    (time.time()) its change hook ran: just before the pool commits each unit of work."""
    changelog = ChangeLog(pool)
    hooked: list[float] = []

    def hook(cursor: object, mailboxes: object) -> None:
        changelog.hook(cursor, mailboxes)  # type: ignore[arg-type]
        hooked.append(time.time())

    return MessageStore(pool, "voicemessages", SPOOL, on_change=hook), hooked


async def bench_deposit(store: MessageStore, mailbox: str) -> None:
    """A one-second message into mailbox@default's INBOX, as a deposit stores it."""
    await store.store(
        context="default",
        mailbox=mailbox,
        folder="INBOX",
        recording=b"RIFF" + bytes(4000),
        callerid='"Bench" <5550000>',
        origtime=int(time.time()),
        duration=1,
        caller_context="default",
        msg_id=new_msg_id(),
    )


async def wait_notifies(phone: sipp.BackgroundSipp, count: int) -> list[tuple[float, str]]:
    deadline = time.monotonic() + WAIT
    while len(times := notifies(phone)) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"NOTIFY {count} did not come within {WAIT} s")
        await asyncio.sleep(0.01)
    return times


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--deposits", type=int, default=50)
    parser.add_argument("--backends", nargs="+", default=["postgresql", "mysql"])
    parser.add_argument("--general", default="", help="lines added to voicemail.conf [general]")
    args = parser.parse_args()
    general = args.general.replace("\\n", "\n")
    rows = []
    for name in args.backends:
        with tempfile.TemporaryDirectory(prefix="bench-mwi-") as tmp:
            with fresh_database(name, Path(tmp)) as backend:
                latencies = asyncio.run(measure(backend, Path(tmp), args.deposits, general))
        ms = [1000 * commit for commit, _ in latencies]
        acked = statistics.median(1000 * ack for _, ack in latencies)
        rows.append(
            f"| {name} | {len(ms)} | {statistics.median(ms):.1f} | {percentile(ms, 0.95):.1f} "
            f"| {max(ms):.1f} | {min(ms):.1f} | {acked:.1f} |"
        )
        print(rows[-1], flush=True)
    print("\n| backend | deposits | median ms | p95 ms | max ms | min ms | median from ack |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
