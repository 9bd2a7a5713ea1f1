"""End to end: a deposit over SIP reaches its owner by mail through the outbox.

sipp leaves a message on the real server, a real aiosmtpd server receives the mail; we check
what a user would: one mail per address, its headers and body as Asterisk writes them, the
attachment's audio as long as the stored recording, the pager mail without attachment, and
the outbox rows marked sent.
"""

from __future__ import annotations

import email
import io
import re
import socket
import time
import warnings
from collections.abc import Callable, Iterator
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from . import mail_server, sipp
from .audio import wav_pcm
from .dbbackends import Backend
from .mail_server import Handler
from .server import RunningServer, start_server, write_config
from .test_deposit_e2e import DATA, deposit_scenario, rows

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # pydub imports audioop
    from pydub import AudioSegment

pytestmark = pytest.mark.timeout(240)

smtp_server = pytest.fixture(mail_server.smtp_servers)

PCAP = DATA / "signal3s_pcmu.pcap"
WAIT = 60.0  # seconds a test waits for something the server does in the background


def deposit(tmp_path: Path, server: RunningServer, user: str = "1000", name: str = "s") -> None:
    """One 3 s message from sipp to `user`, hung up after the audio."""
    xml = deposit_scenario(user, PCAP, [0, 101], [sipp.pause(3200), sipp.bye(user), sipp.recv(200)])
    sipp.run_sipp(tmp_path / f"sipp-{name}", xml, server.target, timeout=60).check()


def wait_for(condition: Callable[[], object], what: str, log: Callable[[], str]) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {WAIT:.0f} s:\n{log()}")
        time.sleep(0.1)


def outbox(backend: Backend) -> list[dict]:
    return backend.sql(
        "SELECT id, kind, context, mailbox, msg_id, recipient, state, attempts, last_error "
        "FROM outbox ORDER BY id"
    )


def all_done(backend: Backend, count: int) -> bool:
    found = outbox(backend)
    return len(found) == count and all(row["state"] != "pending" for row in found)


def parsed(received: list[tuple[str, list[str], bytes]]) -> list[EmailMessage]:
    return [email.message_from_bytes(data, policy=policy.default) for _, _, data in received]


def audio_seconds(data: bytes, fmt: str) -> float:
    """The attachment's length, decoded by ffmpeg (wav by our own reader)."""
    if fmt == "wav":
        rate, width, _channels, frames = wav_pcm(data)
        return len(frames) / width / rate
    segment = AudioSegment.from_file(io.BytesIO(data), format=fmt)
    return segment.frame_count() / segment.frame_rate


@pytest.fixture
def handler() -> Handler:
    return Handler()


def start(
    tmp_path: Path,
    backend: Backend,
    port: int,
    mailboxes: str,
    general: str = "",
) -> RunningServer:
    config = write_config(
        tmp_path / "etc", backend, mailboxes=mailboxes, general=general, smtp_port=port
    )
    return start_server(config)


@pytest.fixture
def stopper() -> Iterator[list[RunningServer]]:
    """Servers a test started; stopped (and checked to stop cleanly) at the end."""
    servers: list[RunningServer] = []
    yield servers
    for server in servers:
        server.stop()


@pytest.mark.parametrize(
    ("backend", "attachfmt"),
    [("sqlite", "wav"), ("postgresql", "mp3"), ("mysql", "ogg"), ("sqlite", "ogg")],
    indirect=["backend"],
)
def test_a_deposit_mails_each_address_once_with_the_audio_attached(
    backend: Backend,
    attachfmt: str,
    tmp_path: Path,
    smtp_server: Callable[..., int],
    handler: Handler,
    stopper: list[RunningServer],
) -> None:
    port = smtp_server(handler)
    mailboxes = (
        "[default]\n1000 => 1234,Alice Example,alice@example.com|alice@work.example,"
        f"page-alice@example.com,attachfmt={attachfmt}\n"
    )
    server = start(tmp_path, backend, port, mailboxes)
    stopper.append(server)
    before = time.time()
    deposit(tmp_path, server)
    wait_for(lambda: all_done(backend, 3), "3 sent outbox rows", server.log)

    queued = outbox(backend)
    assert [(r["kind"], r["recipient"], r["state"]) for r in queued] == [
        ("email", "alice@example.com", "sent"),
        ("email", "alice@work.example", "sent"),
        ("pager", "page-alice@example.com", "sent"),
    ], server.log()
    stored = rows(backend)
    assert len(stored) == 1
    assert {r["msg_id"] for r in queued} == {stored[0]["msg_id"]}
    assert len(handler.received) == 3, server.log()  # exactly one mail per address

    host = socket.gethostname()
    mails = {
        tuple(envelope[1]): mail
        for envelope, mail in zip(handler.received, parsed(handler.received), strict=True)
    }
    assert set(mails) == {
        ("alice@example.com",),
        ("alice@work.example",),
        ("page-alice@example.com",),
    }
    _rate, _width, _channels, frames = wav_pcm(bytes(stored[0]["recording"]))
    recorded = len(frames) / 2 / 8000
    for address in ("alice@example.com", "alice@work.example"):
        mail = mails[(address,)]
        assert mail["Subject"] == "[PBX]: New message 1 in mailbox 1000"
        assert mail["From"] == f"Asterisk PBX <asterisk@{host}>"
        assert mail["To"] == f"Alice Example <{address}>"
        assert mail["X-Asterisk-CallerID"] == "5551234"
        assert mail["X-Asterisk-CallerIDName"] == "Test Caller"
        assert (
            before - 2
            <= email.utils.parsedate_to_datetime(mail["Date"]).timestamp()
            <= time.time() + 2
        )
        assert re.fullmatch(rf"<Asterisk-1-\d+-1000-\d+@{re.escape(host)}>", mail["Message-ID"])
        body = mail.get_body(("plain",)).get_content().replace("\r\n", "\n")
        assert body.startswith(
            "Dear Alice Example:\n\n\tJust wanted to let you know you were just left a 0:03 long "
            "message (number 1)\nin mailbox 1000 from Test Caller, on "
        ), body
        assert body.endswith(
            " so you might\nwant to check it when you get a chance.  Thanks!\n\n"
            "\t\t\t\t--Asterisk\n\n"
        )
        attachments = list(mail.iter_attachments())
        assert len(attachments) == 1
        part = attachments[0]
        assert part.get_filename() == f"msg0000.{attachfmt}"
        expected_type = "application/ogg" if attachfmt == "ogg" else f"audio/x-{attachfmt}"
        assert part.get_content_type() == expected_type.lower()
        seconds = audio_seconds(part.get_content(), attachfmt)
        assert abs(seconds - recorded) <= 0.15, (seconds, recorded)
        assert abs(recorded - 3.0) <= 0.1
    pager = mails[("page-alice@example.com",)]
    assert pager["Subject"] == "New VM"
    assert pager["To"] == "Alice Example <page-alice@example.com>"
    assert not pager.is_multipart()
    assert (
        pager.get_content()
        .replace("\r\n", "\n")
        .startswith("New 0:03 long  msg in box 1000\nfrom Test Caller, on ")
    )
    server.wait_for_log("outbox: email for 1000@default")
