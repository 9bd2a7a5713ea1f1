"""MailComposer: the outbox's mails are made in a spawned worker process at a lower priority
(attachment conversion, MIME, flattening), arrive over SMTP as the email package would build
them, log their problems in the server's log, survive a killed worker, start no worker
until a mail is made, and end with a killed server."""

from __future__ import annotations

import asyncio
import email
import logging
import os
import signal
import subprocess
import sys
import time
from email import policy
from pathlib import Path

import pytest

from storage import audioformats
from voicemail.mail.compose import MessageInfo, Recipient, build_email, message_bytes
from voicemail.mail.composer import MailComposer
from voicemail.mail.send import SENT, send
from voicemail.mail.settings import MailSettings

from . import mail_server
from .mail_server import Handler
from .test_mail_attach import decode, peak_frequency, tone_pcm

pytestmark = pytest.mark.timeout(120)

smtp_server = pytest.fixture(mail_server.smtp_servers)

MP3 = MailSettings.from_general({}, {"attachfmt": "mp3"})
BOX = Recipient("1234", "default", "Zoë", "zoe@example.com|zed@example.com")
INFO = MessageInfo(msgnum=4, duration=2, cidnum="5551234", cidname="Alice")


def worker_pids(composer: MailComposer) -> list[int]:
    pool = composer._pool  # noqa: SLF001 - the processes ps would show
    return [] if pool is None else list(pool._processes)  # noqa: SLF001


def niceness(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return int(fields[16])  # field 19 of proc_pid_stat(5): nice


def test_the_mp3_mail_is_made_in_a_lower_priority_worker_and_sent_as_built(smtp_server) -> None:
    handler = Handler()
    port = smtp_server(handler)
    general = {"smtphost": "127.0.0.1", "smtpport": str(port), "smtptimeout": "10"}
    settings = MailSettings.from_general(general, {"attachfmt": "mp3"})
    stored = audioformats.encode(tone_pcm(2.0), "wav")
    composer = MailComposer()

    async def scenario() -> tuple[str, list[int]]:
        mail = await composer.email(settings, BOX, INFO, stored, "wav")
        assert mail.sender.startswith("asterisk@")  # serveremail's default, as Asterisk
        assert mail.recipients == ["zoe@example.com", "zed@example.com"]
        return (await send(mail, settings)).status, worker_pids(composer)

    try:
        status, pids = asyncio.run(scenario())
        assert len(pids) == 1 and pids[0] != os.getpid()
        assert niceness(pids[0]) >= min(19, os.nice(0) + 10)
    finally:
        composer.close()
    assert status == SENT
    (_sender, recipients, data) = handler.received[0]
    assert recipients == ["zoe@example.com", "zed@example.com"]
    received = email.message_from_bytes(data, policy=policy.default)
    (part,) = list(received.iter_attachments())
    assert part.get_filename() == "msg0004.mp3" and part.get_content_type() == "audio/x-mp3"
    samples = decode(part.get_content(), "mp3")
    assert abs(len(samples) / 8000 - 2.0) < 0.1
    assert abs(peak_frequency(samples) - 440) < 10
    assert "Zo" in str(received["To"]) and received["Subject"]


def test_a_stored_format_mail_is_the_email_package_s_bytes() -> None:
    """Made in the worker or here, the same mail (but for its Date and Message-ID)."""
    settings = MailSettings.from_general({}, {})
    stored = audioformats.encode(tone_pcm(0.5), "wav")
    composer = MailComposer()
    try:
        mail = asyncio.run(composer.email(settings, BOX, INFO, stored, "wav"))
    finally:
        composer.close()
    here = email.message_from_bytes(
        message_bytes(build_email(settings, BOX, INFO, None)), policy=policy.default
    )
    there = email.message_from_bytes(mail.data, policy=policy.default)
    (part,) = list(there.iter_attachments())
    assert part.get_content() == stored and part.get_filename() == "msg0004.wav"
    assert there["Subject"] == here["Subject"] and there["From"] == here["From"]
    assert there.get_body().get_content() == here.get_body().get_content()
    assert max(mail.data) < 128  # 7-bit: no server needs 8BITMIME for it


def test_a_failed_conversion_is_logged_by_the_server_and_mails_the_stored_audio(caplog) -> None:
    broken = b"RIFF\x00\x00\x00\x00WAVEjunk"
    composer = MailComposer()
    try:
        with caplog.at_level(logging.WARNING, logger="voicemail.mail.composer"):
            mail = asyncio.run(composer.email(MP3, BOX, INFO, broken, "wav"))
    finally:
        composer.close()
    (part,) = list(email.message_from_bytes(mail.data, policy=policy.default).iter_attachments())
    assert part.get_content() == broken and part.get_filename() == "msg0004.wav"
    messages = [r.getMessage() for r in caplog.records]
    assert any("converting wav to mp3 failed" in m and "no data chunk" in m for m in messages)


def test_a_killed_worker_is_replaced_and_the_mail_still_made(caplog) -> None:
    stored = audioformats.encode(tone_pcm(1.0), "wav")
    composer = MailComposer()

    async def scenario() -> tuple[bytes, list[int], list[int]]:
        await composer.email(MP3, BOX, INFO, stored, "wav")
        before = worker_pids(composer)
        os.kill(before[0], signal.SIGKILL)
        await asyncio.sleep(0.5)
        mail = await composer.email(MP3, BOX, INFO, stored, "wav")
        return mail.data, before, worker_pids(composer)

    try:
        with caplog.at_level(logging.WARNING, logger="voicemail.mail.composer"):
            data, before, after = asyncio.run(scenario())
    finally:
        composer.close()
    (part,) = list(email.message_from_bytes(data, policy=policy.default).iter_attachments())
    assert part.get_content_type() == "audio/x-mp3"
    assert after and after[0] != before[0]
    assert any("mail worker died" in r.getMessage() for r in caplog.records)


def test_no_worker_is_started_before_a_mail_is_made() -> None:
    assert MailComposer()._pool is None  # noqa: SLF001


KILLED_SERVER = """
import asyncio, os, signal, sys
from storage import audioformats
from tests.test_mail_composer import BOX, INFO, MP3, worker_pids
from tests.test_mail_attach import tone_pcm
from voicemail.mail.composer import MailComposer

async def main():
    composer = MailComposer()
    await composer.email(MP3, BOX, INFO, audioformats.encode(tone_pcm(0.5), "wav"), "wav")
    with open(sys.argv[1], "w") as pid_file:
        pid_file.write(str(worker_pids(composer)[0]))
    os.kill(os.getpid(), signal.SIGKILL)

if __name__ == "__main__":
    asyncio.run(main())
"""


def test_the_worker_ends_when_its_server_is_killed(tmp_path) -> None:
    """SIGKILL leaves the pool no chance to stop its workers: they must notice on their own."""
    script = tmp_path / "killed_server.py"
    script.write_text(KILLED_SERVER)
    root = Path(__file__).resolve().parent.parent
    pid_file = tmp_path / "worker.pid"
    with open(tmp_path / "stderr", "w+") as stderr:  # not a pipe: a live worker would hold it
        code = subprocess.run(
            [sys.executable, str(script), str(pid_file)],
            cwd=root,
            env={**os.environ, "PYTHONPATH": str(root)},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            timeout=60,
        ).returncode
        stderr.seek(0)
        assert code == -signal.SIGKILL, stderr.read()
    worker = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while Path(f"/proc/{worker}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    outlived = Path(f"/proc/{worker}").exists()
    if outlived:
        os.kill(worker, signal.SIGKILL)
    assert not outlived, f"worker {worker} outlived its server"
