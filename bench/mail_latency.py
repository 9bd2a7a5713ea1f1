"""Deposit -> mail delivered latency: sipp leaves messages, aiosmtpd receives the mails.

Run from the repository root: ``.venv/bin/python -m bench.mail_latency --backend postgresql
--messages 10``.

On a fresh database and a fresh server (one static mailbox with one email address, the
attachment in the stored wav format), sipp leaves `--messages` 3 s messages one after the
other. sipp gets the 200 to its BYE once the message is committed (with its outbox row), so
the time from that moment to the SMTP server's DATA is the latency of the outbox path: the
wake-up, the claim, reading the message, composing with the attachment, SMTP, mark_sent.
Printed: each latency, the median and the largest, in milliseconds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from aiosmtpd.controller import Controller

from tests import sipp
from tests.dbbackends import fresh_database
from tests.mail_server import free_port
from tests.server import start_server, write_config
from tests.test_deposit_e2e import DATA, deposit_scenario


class Timed:
    """An aiosmtpd handler noting when each mail's DATA arrived."""

    def __init__(self) -> None:
        self.arrivals: list[float] = []
        self.event = threading.Event()

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        self.arrivals.append(time.monotonic())
        self.event.set()
        return "250 OK"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backend", default="postgresql", choices=("sqlite", "postgresql", "mysql")
    )
    parser.add_argument("--messages", type=int, default=10)
    args = parser.parse_args(argv)
    handler = Timed()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    latencies = []
    with tempfile.TemporaryDirectory() as folder, fresh_database(args.backend, Path(folder)) as db:
        config = write_config(
            Path(folder) / "etc",
            db,
            mailboxes="[default]\n1000 => 1234,Alice Example,alice@example.com\n",
            smtp_port=port,
        )
        server = start_server(config)
        try:
            xml = deposit_scenario(
                "1000",
                DATA / "signal3s_pcmu.pcap",
                [0, 101],
                [sipp.pause(3200), sipp.bye("1000"), sipp.recv(200)],
            )
            for n in range(args.messages):
                handler.event.clear()
                sipp.run_sipp(Path(folder) / f"sipp{n}", xml, server.target, timeout=60).check()
                committed = time.monotonic()
                if not handler.event.wait(30):
                    print(f"message {n}: no mail within 30 s", file=sys.stderr)
                    return 1
                latencies.append((handler.arrivals[-1] - committed) * 1000)
                print(f"message {n + 1}: {latencies[-1]:.0f} ms")
        finally:
            server.stop()
            controller.stop()
    print(
        f"{args.backend}: {len(latencies)} mails, median {statistics.median(latencies):.0f} ms, "
        f"max {max(latencies):.0f} ms (sipp's BYE answered -> SMTP DATA received)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
