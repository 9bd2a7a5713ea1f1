"""End to end: sipp calls VoiceMailMain on the real server; we check the rows and the log.

Keys go by SIP INFO (application/dtmf): sipp's RFC 4733 pcaps replay fixed RTP timestamps, so
a key pressed twice (the 0s of 1000) would be one press to the receiver's de-duplication.
"""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.audioformats import encode
from storage.messages import MessageStore, new_msg_id
from storage.odbc import OdbcPool

from . import sipp
from .dbbackends import Backend
from .server import RunningServer, start_server, write_config

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True),
]

SPOOL = "/var/spool/asterisk/voicemail/"
PIN = "8642"
WRONG = "9753"
MAILBOXES = f"[default]\n1000 => {PIN},Alice Example\n"
EXTENSIONS = "[default]\nexten => 8500,1,VoiceMailMain(@default)\nsame => n,Hangup()\n"


@pytest.fixture
def server(backend: Backend, tmp_path: Path) -> Iterator[RunningServer]:
    """The server with VoiceMailMain at extension 8500 (voicemail/server.py must list it)."""
    config = write_config(tmp_path / "etc", backend, mailboxes=MAILBOXES, extensions=EXTENSIONS)
    running = start_server(config)
    yield running
    assert running.stop() == 0, running.log()


def tone(seconds: float, hz: int) -> bytes:
    n = int(8000 * seconds)
    return b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * hz * i / 8000))) for i in range(n)
    )


def deposit(backend: Backend, count: int) -> list[str]:
    """`count` messages in 1000@default INBOX (1.5 s tones); returns their msg_ids."""

    async def work() -> list[str]:
        pool = OdbcPool(backend.connection_class(), retry_timeout=10)
        await pool.start()
        try:
            store = MessageStore(pool, "voicemessages", SPOOL)
            ids = []
            for i in range(count):
                msg_id = new_msg_id()
                await store.store(
                    context="default",
                    mailbox="1000",
                    folder="INBOX",
                    recording=encode(tone(1.5, 400 + 100 * i), "wav"),
                    callerid=f'"Caller {i}" <555000{i}>',
                    origtime=1_700_000_000 + i,
                    duration=2,
                    caller_context="default",
                    msg_id=msg_id,
                )
                ids.append(msg_id)
            return ids
        finally:
            await pool.close()

    return asyncio.run(work())


def folders(backend: Backend) -> dict[str, list[tuple[int, str]]]:
    found: dict[str, list[tuple[int, str]]] = {}
    for row in backend.sql("SELECT dir, msgnum, msg_id FROM voicemessages ORDER BY dir, msgnum"):
        name = str(row["dir"]).rsplit("/", 1)[-1]
        found.setdefault(name, []).append((int(row["msgnum"]), str(row["msg_id"])))
    return found


class Keys:
    """In-dialog INFOs, one key each, with rising CSeqs."""

    def __init__(self) -> None:
        self.cseq = 1

    def press(self, keys: str, gap_ms: int = 250) -> list[str]:
        steps = []
        for key in keys:
            self.cseq += 1
            text = "INFO sip:8500@[remote_ip]:[remote_port] SIP/2.0\n"
            text += sipp.HEADERS.format(
                branch="[branch]", user="8500", cseq=f"{self.cseq} INFO", to_tag="[peer_tag_param]"
            )
            text += f"Content-Type: application/dtmf\nContent-Length: [len]\n\n{key}"
            steps += [sipp.send(text), sipp.recv(200), sipp.pause(gap_ms)]
        return steps

    def bye(self) -> list[str]:
        self.cseq += 1
        text = sipp._message(
            "BYE sip:8500@[remote_ip]:[remote_port] SIP/2.0",
            "8500",
            f"{self.cseq} BYE",
            "[branch]",
            to_tag=True,
        )
        return [sipp.send(text), sipp.recv(200)]


def call(keys: Keys, *steps: str) -> str:
    return sipp.scenario(
        "vmmain",
        sipp.invite("8500", [0, 101]),
        sipp.recv(100, optional=True),
        sipp.recv(180, optional=True),
        sipp.recv(200),
        sipp.ack("8500"),
        sipp.pause(500),
        *steps,
        *keys.bye(),
    )


def test_wrong_pin_then_listen_delete_save_and_hang_up(
    server: RunningServer, backend: Backend, tmp_path: Path
) -> None:
    ids = deposit(backend, 4)
    keys = Keys()
    xml = call(
        keys,
        *keys.press(f"1000#{WRONG}#"),
        sipp.pause(2500),  # vm-incorrect-mailbox
        *keys.press(f"1000#{PIN}#"),
        sipp.pause(1500),
        # the first message; 1 again during its envelope skips to the audio (1.5 s)
        *keys.press("11", 2500),
        *keys.press("7", 1500),  # delete it
        *keys.press("61", 2500),  # the second
        *keys.press("9", 1000),  # save it ...
        *keys.press("2", 3000),  # ... to Work
        *keys.press("61", 2500),  # the third: heard, so it goes to Old
        sipp.pause(500),
    )
    sipp.run_sipp(tmp_path / "sipp", xml, server.target, timeout=90).check()
    # The 200 to the BYE came after the close: the rows are final.
    assert folders(backend) == {
        "INBOX": [(0, ids[3])],  # the unheard fourth, renumbered from 3
        "Work": [(0, ids[1])],
        "Old": [(0, ids[2])],
    }, server.log()
    log = server.wait_for_log("1000@default logged in")
    assert "login failed for mailbox 1000@default (attempt 1 of 3)" in log
    assert "1000@default logged in" in log
    for msgnum in (0, 1, 2):
        assert f"playing message {msgnum} of INBOX (1.5 s)" in log
    assert "closed INBOX (2 deleted, 1 moved to Old)" in log
    assert PIN not in log and WRONG not in log


def test_hang_up_in_the_menu_still_applies_the_delete(
    server: RunningServer, backend: Backend, tmp_path: Path
) -> None:
    ids = deposit(backend, 2)
    keys = Keys()
    xml = call(
        keys,
        *keys.press(f"1000#{PIN}#"),
        sipp.pause(1500),
        *keys.press("11", 1000),
        *keys.press("7", 1500),  # deleted; the caller hangs up during the message menu
    )
    sipp.run_sipp(tmp_path / "sipp", xml, server.target, timeout=60).check()
    assert folders(backend) == {"INBOX": [(0, ids[1])]}, server.log()
    server.wait_for_log("closed INBOX (1 deleted, 0 moved to Old)")


def test_three_wrong_pins_hang_up(server: RunningServer, backend: Backend, tmp_path: Path) -> None:
    deposit(backend, 1)
    keys = Keys()
    xml = sipp.scenario(
        "vmmain-fail",
        sipp.invite("8500", [0, 101]),
        sipp.recv(100, optional=True),
        sipp.recv(180, optional=True),
        sipp.recv(200),
        sipp.ack("8500"),
        sipp.pause(500),
        *keys.press(f"1000#{WRONG}#1000#{WRONG}#1000#{WRONG}#"),
        sipp.recv_request("BYE"),
        sipp.answer_request(),
    )
    sipp.run_sipp(tmp_path / "sipp", xml, server.target, timeout=60).check()
    log = server.wait_for_log("(attempt 3 of 3)")
    assert "(attempt 3 of 3)" in log and "logged in" not in log
    assert len(folders(backend)["INBOX"]) == 1
