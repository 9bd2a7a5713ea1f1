"""End to end: the outbox through outages, restarts, SIGKILL, a 5xx answer and delete=yes.

The real server, sipp deposits, a real aiosmtpd server that a test starts late or never;
the outbox and message tables are what we check, with what the SMTP server received.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from . import mail_server, sipp
from .dbbackends import Backend
from .mail_server import Handler
from .server import RunningServer, start_server, write_config
from .test_deposit_e2e import DATA, deposit_scenario, rows
from .test_notify_mail_e2e import all_done, outbox, parsed, wait_for

pytestmark = pytest.mark.timeout(300)

smtp_server = pytest.fixture(mail_server.smtp_servers)

PCAP = DATA / "signal3s_pcmu.pcap"
FAST_RETRY = "outboxretry=1\noutboxretrymax=2\n"
ALICE = "[default]\n1000 => 1234,Alice Example,alice@example.com,,attach=no\n"


def deposits(tmp_path: Path, server: RunningServer, count: int, name: str) -> None:
    """`count` 3 s messages for 1000 from sipp, up to 5 calls at once."""
    xml = deposit_scenario(
        "1000", PCAP, [0, 101], [sipp.pause(3200), sipp.bye("1000"), sipp.recv(200)]
    )
    result = sipp.run_sipp(
        tmp_path / f"sipp-{name}",
        xml,
        server.target,
        calls=count,
        rate=5,
        concurrency=5,
        timeout=90,
    )
    result.check()


class CountingHandler(Handler):
    """Counts the mails offered (DATA commands), whatever it answers."""

    def __init__(self, data_answer: str = "") -> None:
        super().__init__(data_answer=data_answer)
        self.offered = 0

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        self.offered += 1
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
def servers() -> Iterator[list[RunningServer]]:
    started: list[RunningServer] = []
    yield started
    for server in started:
        server.stop()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mysql"], indirect=True)
def test_mail_queued_through_an_smtp_outage_restart_and_sigkill_arrives_exactly_once(
    backend: Backend, tmp_path: Path, servers: list[RunningServer]
) -> None:
    port = mail_server.free_port()  # nothing listens there yet: the SMTP server is down
    config = write_config(
        tmp_path / "etc", backend, mailboxes=ALICE, general=FAST_RETRY, smtp_port=port
    )
    first = start_server(config)
    servers.append(first)
    deposits(tmp_path, first, 4, "a")
    wait_for(lambda: "not sent (attempt 1)" in first.log(), "failed attempt", first.log)
    first.process.send_signal(signal.SIGKILL)  # mid-outage, possibly holding claimed rows
    first.process.wait(10)

    second = start_server(config)
    servers.append(second)
    deposits(tmp_path, second, 3, "b")
    assert second.stop() == 0, second.log()  # a clean restart, too

    third = start_server(config)
    servers.append(third)
    deposits(tmp_path, third, 3, "c")
    # A deposit that found the database busy waits in the local spool for the flusher.
    wait_for(lambda: len(rows(backend)) == 10, "10 stored messages", third.log)
    assert {r["state"] for r in outbox(backend)} == {"pending"}
    assert len(outbox(backend)) == 10

    handler = Handler()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()  # the SMTP server is back
    try:
        wait_for(lambda: all_done(backend, 10), "10 sent rows", third.log)
        queued = outbox(backend)
        assert {r["state"] for r in queued} == {"sent"}, queued
        assert len(handler.received) == 10, third.log()  # no duplicate, none lost
        subjects = sorted(mail["Subject"] for mail in parsed(handler.received))
        numbers = sorted(int(re.search(r"message (\d+)", s).group(1)) for s in subjects)
        assert numbers == list(range(1, 11))
    finally:
        controller.stop()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_a_550_answer_is_recorded_and_not_retried(
    backend: Backend,
    tmp_path: Path,
    smtp_server: Callable[..., int],
    servers: list[RunningServer],
) -> None:
    handler = CountingHandler(data_answer="550 5.7.1 Mailbox unavailable for policy reasons")
    port = smtp_server(handler)
    config = write_config(
        tmp_path / "etc", backend, mailboxes=ALICE, general=FAST_RETRY, smtp_port=port
    )
    server = start_server(config)
    servers.append(server)
    deposits(tmp_path, server, 1, "a")
    wait_for(lambda: all_done(backend, 1), "a finished outbox row", server.log)
    [row] = outbox(backend)
    assert row["state"] == "failed"
    assert int(row["attempts"]) == 1
    assert (
        "550" in row["last_error"]
        and "Mailbox unavailable for policy reasons" in (row["last_error"])
    )
    assert handler.offered == 1
    time.sleep(4)  # several retry intervals (outboxretry=1): a retry would show now
    assert handler.offered == 1  # the SMTP server saw one attempt
    [again] = outbox(backend)
    assert (again["state"], int(again["attempts"])) == ("failed", 1)
    server.wait_for_log("failed for good")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_delete_yes_removes_the_message_only_after_it_was_mailed(
    backend: Backend, tmp_path: Path, servers: list[RunningServer]
) -> None:
    port = mail_server.free_port()  # SMTP down first
    mailboxes = "[default]\n1000 => 1234,Alice Example,alice@example.com,,delete=yes\n"
    config = write_config(
        tmp_path / "etc", backend, mailboxes=mailboxes, general=FAST_RETRY, smtp_port=port
    )
    server = start_server(config)
    servers.append(server)
    deposits(tmp_path, server, 1, "a")
    wait_for(lambda: server.log().count("not sent (attempt") >= 3, "3 failed attempts", server.log)
    assert len(rows(backend)) == 1  # not mailed yet: kept
    assert outbox(backend)[0]["state"] == "pending"

    handler = Handler()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        wait_for(lambda: not rows(backend), "the message deleted", server.log)
        assert outbox(backend)[0]["state"] == "sent"
        assert len(handler.received) == 1
        [mail] = parsed(handler.received)
        assert len(list(mail.iter_attachments())) == 1  # the audio went out before the delete
        server.wait_for_log("deleted after it was mailed (delete=yes)")
    finally:
        controller.stop()


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_recording_cut_by_sigkill_is_mailed_after_the_next_start(
    backend: Backend, tmp_path: Path, smtp_server: Callable[..., int]
) -> None:
    handler = Handler()
    port = smtp_server(handler)
    config = write_config(tmp_path / "etc", backend, mailboxes=ALICE, smtp_port=port)
    server = start_server(config)
    xml = deposit_scenario(
        "1000", DATA / "signal5s_pcmu.pcap", [0, 101], [sipp.pause(5200), sipp.bye("1000")]
    )
    call = threading.Thread(
        target=lambda: sipp.run_sipp(tmp_path / "sipp", xml, server.target, timeout=60),
        daemon=True,
    )
    try:
        call.start()
        wait_for(lambda: "recording for 1000@default" in server.log(), "recording", server.log)
        time.sleep(3.5)  # some audio journalled
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(10)
    finally:
        server.stop()
    call.join(70)
    assert rows(backend) == [] and outbox(backend) == []
    again = start_server(config)
    try:
        wait_for(lambda: all_done(backend, 1), "the recovered message's mail", again.log)
        [row] = outbox(backend)
        assert (row["kind"], row["recipient"], row["state"]) == (
            "email",
            "alice@example.com",
            "sent",
        )
        assert row["msg_id"] == rows(backend)[0]["msg_id"]
        assert len(handler.received) == 1
    finally:
        assert again.stop() == 0, again.log()
