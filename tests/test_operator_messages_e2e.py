"""`voicemail messages list|export|delete` as an operator runs them, on real databases.

The messages are put in through the store (the test is about the command line, not deposits);
what the commands print and what they leave in the table is what is checked.
"""

from __future__ import annotations

import asyncio
import io
import math
import struct
from pathlib import Path

import pytest
from pydub import AudioSegment

from storage import audioformats
from storage.messages import MessageStore, new_msg_id
from storage.odbc import OdbcPool
from voicemail.config import load_server_config
from voicemail.mailboxes import MailboxDirectory
from voicemail.operator_messages import register_console_commands
from voicemail.server import VoicemailServer

from .dbbackends import Backend
from .helpers import SPOOL
from .server import run_cli, write_config

pytestmark = pytest.mark.timeout(180)

MAILBOXES = """[zonemessages]
eastern=America/New_York|'vm-received' Q 'digits/at' IMp

[default]
1000 => 1234,Alice Example,,,tz=eastern
1001 => 4321,Bob Example
"""
# 2023-11-14 22:13:20 UTC, 17:13:20 in New York.
ORIGTIME = 1_700_000_000
# (folder, seconds of audio, caller id, flag) of the three messages of 1000@default.
MESSAGES = (
    ("INBOX", 1, '"Carol" <2001>', ""),
    ("INBOX", 2, '"Dave" <2002>', "Urgent"),
    ("INBOX", 3, '"Erin" <2003>', ""),
    ("Old", 2, '"Frank" <2004>', ""),
)


def tone(seconds: int) -> bytes:
    """A 440 Hz tone as the server stores it (format=wav)."""
    samples = (int(8000 * math.sin(2 * math.pi * 440 * n / 8000)) for n in range(8000 * seconds))
    return audioformats.encode(b"".join(struct.pack("<h", s) for s in samples), "wav")


def configured(backend: Backend, tmp_path: Path, general: str = "") -> Path:
    """A configuration on `backend` whose tables exist, with the MESSAGES in mailbox 1000."""
    config = write_config(tmp_path / "etc", backend, mailboxes=MAILBOXES, general=general)
    init = run_cli("db", "init", "-C", str(config))
    assert init.returncode == 0, init.stderr

    async def fill() -> None:
        pool = OdbcPool(backend.connection_class())
        await pool.start()
        try:
            store = MessageStore(pool, "voicemessages", SPOOL)
            for i, (folder, seconds, callerid, flag) in enumerate(MESSAGES):
                await store.store(
                    context="default",
                    mailbox="1000",
                    folder=folder,
                    recording=tone(seconds),
                    callerid=callerid,
                    origtime=ORIGTIME + 60 * i,
                    duration=seconds,
                    caller_context="default",
                    flag=flag,
                    msg_id=new_msg_id(),
                )
        finally:
            await pool.close()

    asyncio.run(fill())
    return config


def inbox(backend: Backend) -> list[dict]:
    return backend.sql(
        "SELECT msgnum, callerid, msg_id, recording FROM voicemessages WHERE dir = ? "
        "ORDER BY msgnum",
        SPOOL + "default/1000/INBOX",
    )


def test_list_shows_every_folder_with_dates_in_the_mailbox_zone(
    backend: Backend, tmp_path: Path
) -> None:
    config = configured(backend, tmp_path)
    every = run_cli("messages", "list", "-C", str(config), "1000@default")
    assert every.returncode == 0, every.stderr
    lines = every.stdout.splitlines()
    assert lines[0].split() == ["Folder", "Msg", "Date", "Caller", "ID", "Duration", "Flag"]
    assert " ".join(lines[1].split()) == 'INBOX 0 2023-11-14 17:13:20 EST "Carol" <2001> 0:01'
    assert " ".join(lines[2].split()) == (
        'INBOX 1 2023-11-14 17:14:20 EST "Dave" <2002> 0:02 Urgent'
    )
    assert lines[3].split()[:2] == ["INBOX", "2"] and "<2003>" in lines[3]
    assert lines[4].split()[:2] == ["Old", "0"] and "<2004>" in lines[4]
    assert lines[5] == "4 messages in 1000@default"

    old = run_cli("messages", "list", "-C", str(config), "1000@default", "Old")
    assert old.returncode == 0, old.stderr
    rows = old.stdout.splitlines()
    assert len(rows) == 3 and rows[2] == "1 message in 1000@default Old"
    assert rows[1].split()[:2] == ["Old", "0"] and "<2004>" in rows[1]
    by_number = run_cli("messages", "list", "-C", str(config), "1000@default", "1")
    assert by_number.stdout == old.stdout  # folder 1 is Old, as in Asterisk

    empty = run_cli("messages", "list", "-C", str(config), "1001@default")
    assert (empty.returncode, empty.stdout.strip()) == (0, "no messages in 1001@default")


def test_export_writes_the_stored_bytes_or_a_converted_file(
    backend: Backend, tmp_path: Path
) -> None:
    config = configured(backend, tmp_path)
    stored = bytes(inbox(backend)[1]["recording"])
    out = tmp_path / "msg1.wav"
    result = run_cli(
        "messages", "export", "-C", str(config), "1000@default", "INBOX", "1", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == stored
    assert f"{out}: {len(stored)} bytes, wav, 2 s" in result.stdout

    mp3 = tmp_path / "msg1.mp3"
    result = run_cli(
        "messages", "export", "-C", str(config), "1000@default", "INBOX", "1", str(mp3),
        "--format", "mp3",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "mp3 (converted from wav)" in result.stdout
    decoded = AudioSegment.from_file(io.BytesIO(mp3.read_bytes()), format="mp3")
    assert decoded.duration_seconds == pytest.approx(2.0, abs=0.15)

    ulaw = tmp_path / "msg2.ulaw"
    result = run_cli(
        "messages", "export", "-C", str(config), "1000@default", "0", "2", str(ulaw),
        "--format", "ulaw",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len(ulaw.read_bytes()) == 3 * 8000  # one byte per sample, 3 s at 8 kHz

    # The older spelling keeps working.
    legacy = tmp_path / "legacy.wav"
    result = run_cli("message", "export", "-C", str(config), "1000@default", "1", "-o", str(legacy))
    assert result.returncode == 0, result.stderr
    assert legacy.read_bytes() == stored


def test_delete_removes_one_message_and_renumbers_the_later_ones(
    backend: Backend, tmp_path: Path
) -> None:
    config = configured(
        backend, tmp_path, general="webhookurl=http://127.0.0.1:9/hook\nwebhooksecret=s3cret\n"
    )
    before = inbox(backend)
    result = run_cli("messages", "delete", "-C", str(config), "1000@default", "INBOX", "0")
    assert result.returncode == 0, result.stderr
    assert "deleted message 0 of 1000@default INBOX; messages 1-2 are now 0-1" in result.stdout
    after = inbox(backend)
    assert [(r["msgnum"], r["msg_id"]) for r in after] == [
        (0, before[1]["msg_id"]),
        (1, before[2]["msg_id"]),
    ]
    assert bytes(after[1]["recording"]) == bytes(before[2]["recording"])
    old = backend.sql("SELECT msgnum FROM voicemessages WHERE dir = ?", SPOOL + "default/1000/Old")
    assert old == [{"msgnum": 0}]  # another folder is left alone
    # The webhook hears of it as of a delete in VoiceMailMain.
    events = backend.sql("SELECT kind, msg_id, payload FROM outbox")
    assert [(e["kind"], e["msg_id"]) for e in events] == [("webhook", before[0]["msg_id"])]
    assert '"event": "deleted"' in str(events[0]["payload"])
    listing = run_cli("messages", "list", "-C", str(config), "1000@default", "INBOX")
    assert "<2001>" not in listing.stdout
    assert listing.stdout.splitlines()[-1] == "2 messages in 1000@default INBOX"


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_wrong_mailbox_folder_or_message_is_one_line_and_exit_1(
    backend: Backend, tmp_path: Path
) -> None:
    config = str(configured(backend, tmp_path))
    out = str(tmp_path / "out.wav")
    cases = [
        (["list", "9999@default"], "no mailbox 9999@default"),
        (["list", "1000@default", "Inbox2"], "unknown folder 'Inbox2'"),
        (["list", "1000@default", "12"], "unknown folder '12'"),
        (["export", "1000@default", "INBOX", "7", out], "no message 7 in 1000@default INBOX"),
        (["export", "1000@default", "INBOX", "0", out, "--format", "flac"], "unknown format"),
        (["delete", "1000@default", "Work", "0"], "no message 0 in 1000@default Work"),
        (["delete", "1000@default", "INBOX", "-1"], "message number must be 0 or more"),
        (["delete", "9999@default", "INBOX", "0"], "no mailbox 9999@default"),
    ]
    for args, message in cases:
        result = run_cli("messages", args[0], "-C", config, *args[1:])
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert len(inbox(backend)) == 3  # nothing was deleted
    assert not Path(out).exists()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_the_console_commands_list_and_delete_the_same_way(
    backend: Backend, tmp_path: Path
) -> None:
    config = configured(backend, tmp_path)

    async def scenario() -> None:
        server = VoicemailServer(load_server_config(config))
        await server.open_storage()
        server.mailboxes = MailboxDirectory(server.config.voicemail, server.realtime)
        try:
            register_console_commands(server.commands, server)
            listing = await server.commands.run("voicemail messages list 1000@default INBOX")
            assert listing.ok and listing.output.splitlines()[-1] == (
                "3 messages in 1000@default INBOX"
            )
            deleted = await server.commands.run("voicemail messages delete 1000@default INBOX 2")
            assert deleted.ok, deleted.output
            assert deleted.output.endswith("2 messages left")
            wrong = await server.commands.run("voicemail messages delete 1000@default Old 5")
            assert (wrong.ok, wrong.output) == (False, "no message 5 in 1000@default Old")
            usage = await server.commands.run("voicemail messages list")
            assert not usage.ok and usage.output.startswith("Usage: voicemail messages list")
        finally:
            for pool in server.pools.values():
                await pool.close()

    asyncio.run(scenario())
    assert [row["msgnum"] for row in inbox(backend)] == [0, 1]


@pytest.mark.parametrize(
    "command",
    [["messages"], ["messages", "list"], ["messages", "export"], ["messages", "delete"],
     ["check-config"]],
)  # fmt: skip
def test_the_new_commands_document_the_configuration_directory(command: list[str]) -> None:
    result = run_cli(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "-C DIR, --config-dir DIR" in result.stdout
