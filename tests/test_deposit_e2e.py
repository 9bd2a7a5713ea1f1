"""End to end: sipp calls the real server, and we check what lands in the database.

Each test starts `voicemail serve` on a fresh database and asserts what an operator would
check: the row's columns, the WAV in `recording`, its length against the audio sent, and
that its samples are the caller's.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyodbc
import pytest

from . import sipp
from .audio import best_correlation, pcap_pcm, wav_pcm
from .dbbackends import Backend, fresh_database
from .server import (
    RunningServer,
    prompt_seconds,
    start_server,
    unavailable_greeting_seconds,
    write_config,
)

DATA = Path(__file__).resolve().parent / "data"
POUND = Path("/usr/share/sip-tester/dtmf_2833_pound.pcap")
MARGIN_MS = 700

pytestmark = pytest.mark.timeout(180)


def rows(backend: Backend, where: str = "", params: tuple = ()) -> list[dict]:
    return backend.sql(
        "SELECT dir, msgnum, context, callerid, origtime, duration, recording, flag, "
        f"mailboxuser, mailboxcontext, msg_id FROM voicemessages {where} ORDER BY dir, msgnum",
        *params,
    )


@pytest.fixture
def server(backend: Backend, tmp_path: Path) -> Iterator[RunningServer]:
    running = start_server(write_config(tmp_path / "etc", backend))
    yield running
    assert running.stop() == 0, running.log()


def deposit_scenario(
    user: str,
    pcap: Path,
    formats: list[int],
    then: list[str],
    extra_headers: tuple[str, ...] = (),
    wait_seconds: float | None = None,
) -> str:
    if wait_seconds is None:
        wait_seconds = unavailable_greeting_seconds(user)
    wait_ms = wait_seconds * 1000 + MARGIN_MS
    return sipp.scenario(
        "deposit",
        sipp.invite(user, formats, extra_headers),
        sipp.recv(100, optional=True),
        sipp.recv(180, optional=True),
        sipp.recv(200),
        sipp.ack(user),
        sipp.pause(wait_ms),
        sipp.play_pcap(pcap),
        *then,
    )


def assert_recording_is(row: dict, pcap: Path, seconds: float, tolerance: float = 0.040) -> None:
    rate, width, channels, frames = wav_pcm(bytes(row["recording"]))
    assert (rate, width, channels) == (8000, 2, 1)
    recorded = len(frames) / 2 / rate
    assert abs(recorded - seconds) <= tolerance, f"recorded {recorded:.3f} s, sent {seconds:.3f} s"
    _pt, sent = pcap_pcm(pcap)
    coefficient, lag = best_correlation(sent[: len(frames)], frames)
    assert coefficient > 0.95, (coefficient, lag)
    assert abs(lag) <= 160


def test_caller_hangs_up_after_5s_and_the_message_is_in_the_database(
    server: RunningServer, backend: Backend, tmp_path: Path
) -> None:
    pcap = DATA / "signal5s_pcmu.pcap"
    before = int(time.time())
    xml = deposit_scenario(
        "1000", pcap, [0, 8, 101], [sipp.pause(5200), sipp.bye("1000"), sipp.recv(200)]
    )
    sipp.run_sipp(tmp_path / "sipp", xml, server.target, timeout=60).check()
    # sipp has its 200 to the BYE: the row must already be committed.
    stored = rows(backend)
    assert len(stored) == 1, server.log()
    row = stored[0]
    assert row["dir"] == "/var/spool/asterisk/voicemail/default/1000/INBOX"
    assert int(row["msgnum"]) == 0
    assert row["context"] == "default"
    assert row["callerid"] == '"Test Caller" <5551234>'
    assert before <= int(row["origtime"]) <= int(time.time())
    assert int(row["duration"]) == 5
    assert (row["flag"] or "") == ""
    assert (row["mailboxuser"], row["mailboxcontext"]) == ("1000", "default")
    assert re.fullmatch(r"\d{10}-[0-9a-f]{16}", row["msg_id"]), row["msg_id"]
    assert_recording_is(row, pcap, 5.0)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_pound_ends_the_recording_and_the_server_hangs_up(
    server: RunningServer, backend: Backend, tmp_path: Path
) -> None:
    pcap = DATA / "signal3s_pcmu.pcap"
    xml = deposit_scenario(
        "1000",
        pcap,
        [0, 101],
        [
            sipp.pause(3100),
            sipp.play_pcap(POUND),
            sipp.recv_request("BYE"),
            sipp.answer_request(),
        ],
    )
    sipp.run_sipp(tmp_path / "sipp", xml, server.target, timeout=60).check()
    stored = rows(backend)
    assert len(stored) == 1, server.log()
    assert int(stored[0]["duration"]) == 3
    assert_recording_is(stored[0], pcap, 3.0)
    server.wait_for_log("stopped by digit")


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_pcma_caller_is_recorded(server: RunningServer, backend: Backend, tmp_path: Path) -> None:
    pcap = DATA / "signal5s_pcma.pcap"
    xml = deposit_scenario(
        "1000", pcap, [8, 101], [sipp.pause(5200), sipp.bye("1000"), sipp.recv(200)]
    )
    sipp.run_sipp(tmp_path / "sipp", xml, server.target, timeout=60).check()
    stored = rows(backend)
    assert len(stored) == 1, server.log()
    assert_recording_is(stored[0], pcap, 5.0)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_cancel_while_ringing_gets_487_and_stores_nothing(
    server: RunningServer, backend: Backend, tmp_path: Path
) -> None:
    xml = sipp.scenario(
        "cancel",
        sipp.invite("71000", [0, 101]),
        sipp.recv(100, optional=True),
        sipp.recv(180),
        sipp.cancel("71000"),
        sipp.recv(200),
        sipp.recv(487),
        sipp.ack_non2xx("71000"),
        sipp.pause(500),
    )
    sipp.run_sipp(tmp_path / "sipp", xml, server.target, timeout=30).check()
    time.sleep(4.5)  # past the dial plan's Wait(4): nothing may be answered or stored
    assert rows(backend) == []
    assert "Traceback" not in server.log()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_retransmitted_invite_before_the_200_is_one_call(
    server: RunningServer, backend: Backend, tmp_path: Path
) -> None:
    pcap = DATA / "signal3s_pcmu.pcap"
    invite = sipp.invite("1000", [0, 101])
    wait_ms = unavailable_greeting_seconds("1000") * 1000 + MARGIN_MS
    xml = sipp.scenario(
        "retransmit",
        invite,
        sipp.recv(100),
        invite,  # the same INVITE again (same branch): a retransmission
        sipp.recv(100, optional=True),
        sipp.recv(200),
        sipp.ack("1000"),
        sipp.pause(wait_ms),
        sipp.play_pcap(pcap),
        sipp.pause(3200),
        sipp.bye("1000"),
        sipp.recv(200),
    )
    sipp.run_sipp(tmp_path / "sipp", xml, server.target, timeout=60).check()
    stored = rows(backend)
    assert len(stored) == 1, server.log()
    assert_recording_is(stored[0], pcap, 3.0)
    assert len(re.findall(r"INFO channels\.sip\.endpoint: call ", server.log())) == 1


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_number_without_dialplan_entry_gets_404(
    server: RunningServer, backend: Backend, tmp_path: Path
) -> None:
    xml = sipp.scenario(
        "nomatch",
        sipp.invite("nobody", [0]),
        sipp.recv(100, optional=True),
        sipp.recv(404),
        sipp.ack_non2xx("nobody"),
    )
    sipp.run_sipp(tmp_path / "sipp", xml, server.target, timeout=20).check()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_offer_without_common_codec_gets_488(
    server: RunningServer, backend: Backend, tmp_path: Path
) -> None:
    xml = sipp.scenario(
        "nocodec",
        sipp.invite("1000", [3, 18]),
        sipp.recv(100, optional=True),
        sipp.recv(488),
        sipp.ack_non2xx("1000"),
    )
    sipp.run_sipp(tmp_path / "sipp", xml, server.target, timeout=20).check()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_unknown_mailbox_ends_the_call_with_a_logged_reason(
    server: RunningServer, backend: Backend, tmp_path: Path
) -> None:
    xml = sipp.scenario(
        "nomailbox",
        sipp.invite("1999", [0]),
        sipp.recv(100, optional=True),
        sipp.recv(480),
        sipp.ack_non2xx("1999"),
    )
    sipp.run_sipp(tmp_path / "sipp", xml, server.target, timeout=20).check()
    server.wait_for_log("No entry in voicemail config file for '1999@default'")
    assert rows(backend) == []


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_mailbox_row_added_to_realtime_table_works_without_restart(
    server: RunningServer, backend: Backend, tmp_path: Path
) -> None:
    connection = pyodbc.connect(backend.connection_string, autocommit=True)
    try:
        connection.execute(
            "INSERT INTO voicemail (context, mailbox, password, fullname, email) "
            "VALUES (?, ?, ?, ?, ?)",
            "default",
            "2000",
            "4321",
            "Bob Realtime",
            "bob@example.com",
        )
    finally:
        connection.close()
    pcap = DATA / "signal3s_pcmu.pcap"
    xml = deposit_scenario(
        "2000", pcap, [0, 101], [sipp.pause(3200), sipp.bye("2000"), sipp.recv(200)]
    )
    sipp.run_sipp(tmp_path / "sipp", xml, server.target, timeout=60).check()
    stored = rows(backend)
    assert [r["dir"] for r in stored] == ["/var/spool/asterisk/voicemail/default/2000/INBOX"]
    assert_recording_is(stored[0], pcap, 3.0)


def test_unreachable_database_stops_startup_with_the_class_and_driver_message(
    tmp_path: Path,
) -> None:
    with fresh_database("postgresql", tmp_path) as good:
        dead = Backend(
            name=good.name,
            connection_string=good.unreachable_connection_string,
            database="x",
            user="x",
            unreachable_connection_string=good.unreachable_connection_string,
        )
        config = write_config(tmp_path / "etc", dead)
    from .server import run_cli

    result = run_cli("serve", "-C", str(config), timeout=60)
    assert result.returncode == 1
    assert "[asterisk]" in result.stderr
    assert "Traceback" not in result.stderr
    assert "connect" in result.stderr.lower()


def test_broken_config_line_is_reported_with_file_and_line(tmp_path: Path) -> None:
    with fresh_database("sqlite", tmp_path) as db:
        config = write_config(tmp_path / "etc", db, general="maxsecs\n")
    from .server import run_cli

    result = run_cli("serve", "-C", str(config), timeout=30)
    assert result.returncode == 1
    assert re.search(r"voicemail\.conf:\d+: ", result.stderr), result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_invite_retransmitted_after_the_200_gets_the_same_200_again(
    server: RunningServer, backend: Backend
) -> None:
    """sipp cannot express this (it takes the repeated 200 as its own retransmission)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    port = sock.getsockname()[1]
    sdp = (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        "m=audio 40000 RTP/AVP 0\r\n"
    )
    invite = (
        f"INVITE sip:1000@{server.target} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-raw-1;rport\r\n"
        f"From: <sip:5551234@127.0.0.1:{port}>;tag=raw1\r\n"
        f"To: <sip:1000@{server.target}>\r\n"
        "Call-ID: raw-retransmit-1\r\nCSeq: 1 INVITE\r\n"
        f"Contact: <sip:5551234@127.0.0.1:{port}>\r\nMax-Forwards: 70\r\n"
        f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}"
    ).encode()
    try:
        sock.sendto(invite, (server.host, server.port))
        first_200 = b""
        while not first_200.startswith(b"SIP/2.0 200"):
            first_200 = sock.recv(65535)
        sock.sendto(invite, (server.host, server.port))
        again = sock.recv(65535)
        while not again.startswith(b"SIP/2.0 200"):
            again = sock.recv(65535)
        assert again == first_200
        to_header = re.search(rb"^To: (.*)\r$", first_200, re.M)
        assert to_header is not None
        common = (
            f"From: <sip:5551234@127.0.0.1:{port}>;tag=raw1\r\n".encode()
            + b"To: "
            + to_header.group(1)
            + b"\r\n"
            + b"Call-ID: raw-retransmit-1\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n"
        )
        ack = (
            f"ACK sip:1000@{server.target} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-raw-2;rport\r\n".encode()
            + b"CSeq: 1 ACK\r\n"
            + common
            + b"\r\n"
        )
        sock.sendto(ack, (server.host, server.port))
        bye = (
            f"BYE sip:1000@{server.target} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-raw-3;rport\r\n".encode()
            + b"CSeq: 2 BYE\r\n"
            + common
            + b"\r\n"
        )
        sock.sendto(bye, (server.host, server.port))
        answer = sock.recv(65535)
        while b"CSeq: 2 BYE" not in answer:
            answer = sock.recv(65535)
        assert answer.startswith(b"SIP/2.0 200")
    finally:
        sock.close()
    assert len(re.findall(r"INFO channels\.sip\.endpoint: call ", server.log())) == 1


def test_two_servers_on_one_postgresql_database_number_40_deposits_without_collision(
    tmp_path: Path,
) -> None:
    with fresh_database("postgresql", tmp_path) as db:
        servers = [start_server(write_config(tmp_path / f"etc{i}", db)) for i in range(2)]
        try:
            pcap = DATA / "signal3s_pcmu.pcap"
            xml = deposit_scenario(
                "1000", pcap, [0, 101], [sipp.pause(3200), sipp.bye("1000"), sipp.recv(200)]
            )
            with ThreadPoolExecutor(2) as pool:
                results = list(
                    pool.map(
                        lambda s: sipp.run_sipp(
                            tmp_path / f"sipp-{s.port}",
                            xml,
                            s.target,
                            calls=20,
                            rate=40,
                            concurrency=20,
                            timeout=90,
                        ),
                        servers,
                    )
                )
            for result in results:
                result.check()
            stored = rows(db)
            assert [int(r["msgnum"]) for r in stored] == list(range(40))
            assert {r["dir"] for r in stored} == {
                "/var/spool/asterisk/voicemail/default/1000/INBOX"
            }
            assert len({r["msg_id"] for r in stored}) == 40
            for row in stored:
                assert_recording_is(row, pcap, 3.0)
        finally:
            for server in servers:
                assert server.stop() == 0, server.log()
        for server in servers:
            assert "Failed to store" not in server.log()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_call_forwarded_on_busy_with_diversion_gets_the_busy_greeting_of_that_mailbox(
    server: RunningServer, backend: Backend, tmp_path: Path
) -> None:
    pcap = DATA / "signal3s_pcmu.pcap"
    names = ["vm-theperson", "digits/1", "digits/0", "digits/0", "digits/0", "vm-isonphone"]
    xml = deposit_scenario(
        "vm",
        pcap,
        [0, 101],
        [sipp.pause(3200), sipp.bye("vm"), sipp.recv(200)],
        extra_headers=("Diversion: <sip:1000@pbx.example.com>;reason=user-busy;counter=1",),
        wait_seconds=prompt_seconds(*names, "vm-intro", "beep"),
    )
    sipp.run_sipp(tmp_path / "sipp", xml, server.target, timeout=60).check()
    stored = rows(backend)
    assert [r["dir"] for r in stored] == ["/var/spool/asterisk/voicemail/default/1000/INBOX"]
    assert_recording_is(stored[0], pcap, 3.0)
    assert "for 1000@default: greeting " + " ".join(names) in server.log()
