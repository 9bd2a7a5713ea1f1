"""End to end: VoiceMail() options, `&` copies, no-argument mode and VMSTATUS, with sipp.

The server runs a dial plan whose extensions call VoiceMail with different options; every
check is on what an operator sees: the rows in the database and the server's log (prompts
played, VMSTATUS through a NoOp step).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import sipp
from .audio import pcap_pcm, test_signal, wav_pcm, write_rtp_pcap
from .dbbackends import Backend
from .server import RunningServer, prompt_seconds, start_server, write_config
from .test_deposit_review_e2e import call_log

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

DATA = Path(__file__).resolve().parent / "data"
SIGNAL = DATA / "signal3s_pcmu.pcap"
DTMF = Path("/usr/share/sip-tester")
MARGIN_MS = 700

pytestmark = pytest.mark.timeout(240)

EXTENSIONS = """[default]
exten => 2001,1,VoiceMail(1000@default,sU)
same => n,NoOp(VMSTATUS=${VMSTATUS})
same => n,Hangup()
exten => 2002,1,VoiceMail(1000@default,sP)
same => n,NoOp(VMSTATUS=${VMSTATUS})
same => n,Hangup()
exten => 2003,1,VoiceMail(1000@default,st()g(6))
same => n,NoOp(VMSTATUS=${VMSTATUS})
same => n,Hangup()
exten => 2004,1,VoiceMail(1000&1001@default,s)
same => n,NoOp(VMSTATUS=${VMSTATUS})
same => n,Hangup()
exten => 2005,1,VoiceMail()
same => n,NoOp(VMSTATUS=${VMSTATUS})
same => n,Hangup()
exten => 2006,1,VoiceMail(1000,sx)
same => n,NoOp(VMSTATUS=${VMSTATUS})
same => n,Hangup()
exten => 2007,1,VoiceMail(1000,e)
same => n,NoOp(VMSTATUS=${VMSTATUS})
same => n,Hangup()
exten => 2008,1,VoiceMail(1000,u)
same => n,NoOp(VMSTATUS=${VMSTATUS})
same => n,Hangup()
exten => 2009,1,VoiceMail(1000,S)
same => n,NoOp(VMSTATUS=${VMSTATUS})
same => n,Hangup()
exten => 2011,1,VoiceMail(1003,sU)
same => n,NoOp(VMSTATUS=${VMSTATUS})
same => n,Hangup()
exten => 2012,1,VoiceMail(1003,s)
same => n,NoOp(VMSTATUS=${VMSTATUS})
same => n,Hangup()
exten => 2010,1,VoiceMail(1002,u)
same => n,NoOp(VMSTATUS=${VMSTATUS})
same => n,Hangup()
"""

MAILBOXES = """[default]
1000 => 1234,Alice Example,alice@example.com
1001 => 1234,Bob Example,bob@example.com
1002 => 1234,Greetings Only,,,maxmsg=0
1230 => 1234,Carol Example
1003 => 1234,Full Example,,,maxmsg=1
"""


def rows(backend: Backend) -> list[dict]:
    return backend.sql(
        "SELECT dir, msgnum, duration, recording, flag, mailboxuser, msg_id "
        "FROM voicemessages ORDER BY dir, msgnum"
    )


@pytest.fixture
def server(backend: Backend, tmp_path: Path) -> Iterator[RunningServer]:
    config = write_config(tmp_path / "etc", backend, mailboxes=MAILBOXES, extensions=EXTENSIONS)
    running = start_server(config)
    yield running
    assert running.stop() == 0, running.log()


def call(server: RunningServer, workdir: Path, user: str, wait_seconds: float, *then: str) -> None:
    xml = sipp.scenario(
        "options",
        sipp.invite(user, [0, 101]),
        sipp.recv(100, optional=True),
        sipp.recv(180, optional=True),
        sipp.recv(200),
        sipp.ack(user),
        sipp.pause(wait_seconds * 1000 + MARGIN_MS),
        *then,
    )
    result = sipp.run_sipp(workdir, xml, server.target, timeout=60)
    assert result.returncode == 0, result.errors + "\n" + server.log()[-6000:]


def refused(server: RunningServer, workdir: Path, user: str) -> None:
    """A call VoiceMail fails before answering: the Hangup() after it gives 480."""
    xml = sipp.scenario(
        "refused",
        sipp.invite(user, [0, 101]),
        sipp.recv(100, optional=True),
        sipp.recv(480),
        sipp.ack_non2xx(user),
    )
    sipp.run_sipp(workdir, xml, server.target, timeout=60).check()


def leave_3s(server: RunningServer, workdir: Path, user: str, wait_seconds: float) -> None:
    """Wait out the prompts, say 3 s, press # and take the server's BYE."""
    call(
        server,
        workdir,
        user,
        wait_seconds,
        sipp.play_pcap(SIGNAL),
        sipp.pause(3100),
        sipp.play_pcap(DTMF / "dtmf_2833_pound.pcap"),
        sipp.recv_request("BYE"),
        sipp.answer_request(),
    )


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_options_s_u_p_t_g_and_vmstatus(
    server: RunningServer, backend: Backend, tmp_path: Path
) -> None:
    beep = prompt_seconds("beep")
    # s + U: no intro, no greeting (no b/u), Urgent folder and flag.
    leave_3s(server, tmp_path / "a", "2001", beep)
    log = call_log(server, "2001")
    assert "playing vm-intro" not in log and "playing beep" in log
    assert "NoOp(VMSTATUS=SUCCESS)" in log
    urgent = rows(backend)
    assert [(r["dir"].rsplit("/", 1)[1], r["flag"]) for r in urgent] == [("Urgent", "Urgent")]
    # s + P: INBOX, flag PRIORITY.
    leave_3s(server, tmp_path / "b", "2002", beep)
    inbox = [r for r in rows(backend) if r["dir"].endswith("/INBOX")]
    assert [r["flag"] for r in inbox] == ["PRIORITY"]
    # t() = no beep; g(6) doubles the caller's level.
    leave_3s(server, tmp_path / "c", "2003", 0)
    log = call_log(server, "2003")
    assert "playing beep" not in log and "NoOp(VMSTATUS=SUCCESS)" in log
    gained = [r for r in rows(backend) if r["dir"].endswith("/INBOX")][1]
    _rate, _w, _c, frames = wav_pcm(bytes(gained["recording"]))
    _pt, sent = pcap_pcm(SIGNAL)
    ratio = audioop.rms(frames, 2) / audioop.rms(sent, 2)
    assert 1.8 < ratio < 2.1, ratio  # +6 dB, diluted a little by the silence around it
    # An option VoiceMail does not have: FAILED with the file and line, nothing recorded.
    refused(server, tmp_path / "d", "2006")
    log = call_log(server, "2006")
    assert "VoiceMail has no option 'x'" in log and "NoOp(VMSTATUS=FAILED)" in log
    assert re.search(r"voicemail/app_voicemail\.py:\d+", log)
    # e (early media) is refused the same way, not ignored.
    refused(server, tmp_path / "e", "2007")
    log = call_log(server, "2007")
    assert "option e (greeting as early media) is not implemented" in log
    assert "NoOp(VMSTATUS=FAILED)" in log
    assert len(rows(backend)) == 3


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_pound_skips_greeting_and_intro_and_s_capital_keeps_intro_without_greeting(
    server: RunningServer, backend: Backend, tmp_path: Path
) -> None:
    # u: the invented greeting; # during it skips the rest and vm-intro, straight to the beep.
    call(
        server,
        tmp_path / "a",
        "2008",
        0.5,
        sipp.play_pcap(DTMF / "dtmf_2833_pound.pcap"),
        sipp.pause(prompt_seconds("beep") * 1000 + 500),
        sipp.play_pcap(SIGNAL),
        sipp.pause(3100),
        sipp.bye("2008"),
        sipp.recv(200),
    )
    log = call_log(server, "2008")
    assert "playing vm-theperson" in log and "playing vm-intro" not in log
    assert "playing vm-isunavail" not in log
    assert len(rows(backend)) == 1
    # S with no recorded greeting: the intro is played (only a recorded greeting skips it).
    leave_3s(server, tmp_path / "b", "2009", prompt_seconds("vm-intro", "beep"))
    assert "playing vm-intro" in call_log(server, "2009")
    assert len(rows(backend)) == 2


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_greetings_only_mailbox_plays_the_greeting_and_records_nothing(
    server: RunningServer, backend: Backend, tmp_path: Path
) -> None:
    xml = sipp.scenario(
        "greetings-only",
        sipp.invite("2010", [0, 101]),
        sipp.recv(100, optional=True),
        sipp.recv(200),
        sipp.ack("2010"),
        sipp.recv_request("BYE"),
        sipp.answer_request(),
    )
    sipp.run_sipp(tmp_path / "a", xml, server.target, timeout=60).check()
    log = call_log(server, "2010")
    assert "playing vm-isunavail" in log
    assert "playing vm-intro" not in log and "playing beep" not in log
    assert "NoOp(VMSTATUS=SUCCESS)" in log
    assert rows(backend) == []


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_ampersand_copies_the_message_with_a_msg_id_each(
    server: RunningServer, backend: Backend, tmp_path: Path
) -> None:
    leave_3s(server, tmp_path / "a", "2004", prompt_seconds("beep"))
    stored = rows(backend)
    assert [r["mailboxuser"] for r in stored] == ["1000", "1001"], server.log()
    assert stored[0]["msg_id"] != stored[1]["msg_id"]
    assert bytes(stored[0]["recording"]) == bytes(stored[1]["recording"])
    assert int(stored[0]["duration"]) == int(stored[1]["duration"]) == 3
    assert "NoOp(VMSTATUS=SUCCESS)" in call_log(server, "2004")


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_no_argument_asks_which_mailbox(
    server: RunningServer, backend: Backend, tmp_path: Path
) -> None:
    digits = []
    # Distinct digits: sipp's pcaps of one digit all carry the same RTP timestamp, so a
    # repeated digit would be taken for the same event (RFC 4733).
    for name in ("1", "2", "3", "0", "pound"):
        digits += [sipp.play_pcap(DTMF / f"dtmf_2833_{name}.pcap"), sipp.pause(400)]
    call(
        server,
        tmp_path / "a",
        "2005",
        prompt_seconds("vm-whichbox"),
        *digits,
        sipp.pause(prompt_seconds("vm-intro", "beep") * 1000 + 300),
        sipp.play_pcap(SIGNAL),
        sipp.pause(3100),
        sipp.bye("2005"),
        sipp.recv(200),
    )
    log = call_log(server, "2005")
    assert "playing vm-whichbox" in log and "mailbox entered: '1230'" in log
    stored = rows(backend)
    assert [r["mailboxuser"] for r in stored] == ["1230"], log


def test_silence_pcap_is_made(tmp_path: Path) -> None:
    """The helper the maxsilence tests use: 2 s of signal then 4 s of digital silence."""
    path = silence_pcap(tmp_path)
    _pt, pcm = pcap_pcm(path)
    assert len(pcm) == 6 * 16000


def silence_pcap(directory: Path) -> Path:
    path = directory / "talk2s_silence4s.pcap"
    write_rtp_pcap(path, test_signal(2.0) + b"\x00\x00" * 8000 * 4, 0)
    return path


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_full_mailbox_plays_mailboxfull_and_fails(
    server: RunningServer, backend: Backend, tmp_path: Path
) -> None:
    leave_3s(server, tmp_path / "a", "2012", prompt_seconds("beep"))
    assert len(rows(backend)) == 1
    xml = sipp.scenario(
        "full",
        sipp.invite("2012", [0, 101]),
        sipp.recv(100, optional=True),
        sipp.recv(200),
        sipp.ack("2012"),
        sipp.recv_request("BYE"),
        sipp.answer_request(),
    )
    sipp.run_sipp(tmp_path / "b", xml, server.target, timeout=60).check()
    log = call_log(server, "2012")
    assert "playing vm-mailboxfull" in log and "playing beep" not in log
    assert "NoOp(VMSTATUS=FAILED)" in log
    # U goes to Urgent, but the full check counts INBOX (as Asterisk does): refused too.
    sipp.run_sipp(tmp_path / "c", xml.replace("2012", "2011"), server.target, timeout=60).check()
    log = call_log(server, "2011")
    assert "playing vm-mailboxfull" in log and "NoOp(VMSTATUS=FAILED)" in log
    assert len(rows(backend)) == 1
