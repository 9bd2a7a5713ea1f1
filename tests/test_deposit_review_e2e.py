"""End to end: maxsilence / minsecs and the review=yes menu, with sipp.

maxsilence comes from [general], minsecs and review from the mailbox lines; what is checked is
the row in the database (its folder, flag and length) and the server's log.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from . import sipp
from .audio import test_signal, wav_pcm, write_rtp_pcap
from .dbbackends import Backend
from .server import RunningServer, prompt_seconds, start_server, write_config

DATA = Path(__file__).resolve().parent / "data"
SIGNAL = DATA / "signal3s_pcmu.pcap"
DTMF = Path("/usr/share/sip-tester")
MARGIN_MS = 700

pytestmark = pytest.mark.timeout(240)

EXTENSIONS = """[default]
exten => _X.,1,VoiceMail(${EXTEN}@default,s)
same => n,NoOp(VMSTATUS=${VMSTATUS})
same => n,Hangup()
"""

MAILBOXES = """[default]
1000 => 1234,Alice Example
1001 => 1234,Bob Example,,,minsecs=3
1002 => 1234,Review Example,,,review=yes
"""


def rows(backend: Backend) -> list[dict]:
    return backend.sql(
        "SELECT dir, duration, recording, flag, mailboxuser FROM voicemessages ORDER BY dir"
    )


@pytest.fixture
def server(backend: Backend, tmp_path: Path) -> Iterator[RunningServer]:
    config = write_config(
        tmp_path / "etc",
        backend,
        mailboxes=MAILBOXES,
        extensions=EXTENSIONS,
        general="maxsilence=2\nsilencethreshold=128\n",
    )
    running = start_server(config)
    yield running
    assert running.stop() == 0, running.log()


def run(server: RunningServer, workdir: Path, user: str, *then: str) -> None:
    xml = sipp.scenario(
        "review",
        sipp.invite(user, [0, 101]),
        sipp.recv(100, optional=True),
        sipp.recv(180, optional=True),
        sipp.recv(200),
        sipp.ack(user),
        sipp.pause(prompt_seconds("beep") * 1000 + MARGIN_MS),
        *then,
    )
    result = sipp.run_sipp(workdir, xml, server.target, timeout=60)
    assert result.returncode == 0, result.errors + "\n" + server.log()[-6000:]


def call_log(server: RunningServer, user: str) -> str:
    """The log of the last call to `user`, once VoiceMail has ended (VMSTATUS logged)."""
    return server.log_from(f"[{user}@default:1] VoiceMail", "VMSTATUS=")


def talk_then_silence(directory: Path) -> Path:
    """2 s of signal then 4 s of digital silence, as RTP (sipp keeps sending through it)."""
    path = directory / "talk2s_silence4s.pcap"
    write_rtp_pcap(path, test_signal(2.0) + b"\x00\x00" * 8000 * 4, 0)
    return path


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_maxsilence_stops_the_recording_and_minsecs_discards_a_short_one(
    server: RunningServer, backend: Backend, tmp_path: Path
) -> None:
    pcap = talk_then_silence(tmp_path)
    run(
        server,
        tmp_path / "a",
        "1000",
        sipp.play_pcap(pcap),
        sipp.recv_request("BYE"),
        sipp.answer_request(),
    )
    log = call_log(server, "1000")
    assert "stopped by maxsilence" in log, log
    stored = rows(backend)
    assert len(stored) == 1
    _rate, _w, _c, frames = wav_pcm(bytes(stored[0]["recording"]))
    # 2 s of speech and 200 ms of the silence (a little silence before the first packet).
    assert 2.15 <= len(frames) / 16000 <= 2.45, len(frames) / 16000
    assert int(stored[0]["duration"]) == 2
    assert "NoOp(VMSTATUS=SUCCESS)" in log
    # minsecs=3: the same call, trimmed to about 2.2 s, is discarded.
    run(
        server,
        tmp_path / "b",
        "1001",
        sipp.play_pcap(pcap),
        sipp.recv_request("BYE"),
        sipp.answer_request(),
    )
    log = call_log(server, "1001")
    assert "shorter than minsecs; discarded" in log and "NoOp(VMSTATUS=FAILED)" in log
    assert len(rows(backend)) == 1


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_review_marks_urgent_then_saves_and_a_hangup_in_review_keeps_the_message(
    server: RunningServer, backend: Backend, tmp_path: Path
) -> None:
    after_pound = [
        sipp.play_pcap(SIGNAL),
        sipp.pause(3100),
        sipp.play_pcap(DTMF / "dtmf_2833_pound.pcap"),
    ]
    run(
        server,
        tmp_path / "a",
        "1002",
        *after_pound,
        sipp.pause(prompt_seconds("auth-thankyou") * 1000 + 1000),
        sipp.play_pcap(DTMF / "dtmf_2833_4.pcap"),
        sipp.pause(prompt_seconds("vm-marked-urgent") * 1000 + 800),
        sipp.play_pcap(DTMF / "dtmf_2833_1.pcap"),
        sipp.recv_request("BYE"),
        sipp.answer_request(),
    )
    log = call_log(server, "1002")
    for prompt in ("auth-thankyou", "vm-review", "vm-marked-urgent", "vm-msgsaved"):
        assert f"playing {prompt}" in log, (prompt, log)
    assert "NoOp(VMSTATUS=SUCCESS)" in log
    stored = rows(backend)
    assert [(r["dir"].rsplit("/", 1)[1], r["flag"]) for r in stored] == [("Urgent", "Urgent")]
    assert int(stored[0]["duration"]) == 3
    # Hanging up while the menu plays keeps the message (in INBOX this time).
    run(
        server,
        tmp_path / "b",
        "1002",
        *after_pound,
        sipp.pause(prompt_seconds("auth-thankyou") * 1000 + 1500),
        sipp.bye("1002"),
        sipp.recv(200),
    )
    assert "playing vm-review" in call_log(server, "1002")
    folders = sorted(r["dir"].rsplit("/", 1)[1] for r in rows(backend))
    assert folders == ["INBOX", "Urgent"], server.log()[-4000:]
