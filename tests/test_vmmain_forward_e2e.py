"""End to end: the softphone calls VoiceMailMain on the real server and forwards (key 8) or
replies (key 3, 1); we check what the caller heard, the rows and audio in the database, and the
NOTIFY a phone subscribed to the recipient's mailbox gets.

The softphone waits for each prompt to be heard (matched against the prompt files) before it
presses the next keys, by SIP INFO, so nothing depends on how long the server takes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.audioformats import decode, encode
from storage.messages import MessageStore, new_msg_id
from storage.odbc import OdbcPool

from . import sipp
from .audio import best_correlation, test_signal
from .dbbackends import Backend
from .helpers import run
from .server import RunningServer, start_server, write_config
from .softphone import Call, Softphone
from .test_mwi_e2e import (
    ACTIVE,
    authenticated_subscribe,
    notify_variables,
    recv_notify,
    references,
    summary_regexp,
    wait_for,
)

pytestmark = pytest.mark.timeout(240)

SPOOL = "/var/spool/asterisk/voicemail/"
PIN = "8642"
MAILBOXES = f"[default]\n1000 => {PIN},Alice\n1001 => 1111,Bob\n1002 => 2222,Carol\n"
EXTENSIONS = "[default]\nexten => 8500,1,VoiceMailMain(@default)\nsame => n,Hangup()\n"
# A phone with the lamp of 1001 (the poll is off: only the forward can light it).
PEER = "\n[6101]\ntype=friend\nhost=dynamic\nsecret=pw\nmailbox=1001@default\ncontext=default\n"
CANDIDATES = [
    "vm-login",
    "vm-password",
    "vm-helpexit",
    "vm-extension",
    "pbx-invalid",
    "vm-forwardoptions",
    "vm-starmain",
    "beep",
    "vm-msgforwarded",
    "vm-mailboxfull",
    "vm-toreply",
    "vm-tohearenv",
    "vm-intro",
    "auth-thankyou",
    "vm-goodbye",
]
MESSAGE = test_signal(1.5, seed=7)


@pytest.fixture
def server(backend: Backend, tmp_path: Path) -> Iterator[RunningServer]:
    config = write_config(
        tmp_path / "etc",
        backend,
        mailboxes=MAILBOXES,
        extensions=EXTENSIONS,
        general="pollmailboxes=no\n",
    )
    with (config / "sip.conf").open("a") as sip_conf:
        sip_conf.write(PEER)
    running = start_server(config)
    yield running
    assert running.stop() == 0, running.log()
    assert "Traceback" not in running.log(), running.log()


def deposit(backend: Backend, callerid: str = '"Dave" <5550199>') -> bytes:
    """One 1.5 s message in 1000@default INBOX; returns its stored audio."""
    audio = encode(MESSAGE, "wav")

    async def work() -> None:
        pool = OdbcPool(backend.connection_class(), retry_timeout=10)
        await pool.start()
        try:
            await MessageStore(pool, "voicemessages", SPOOL).store(
                context="default",
                mailbox="1000",
                folder="INBOX",
                recording=audio,
                callerid=callerid,
                origtime=1_700_000_000,
                duration=2,
                caller_context="default",
                msg_id=new_msg_id(),
            )
        finally:
            await pool.close()

    run(work)
    return audio


def inbox(backend: Backend, mailbox: str) -> list[dict]:
    return backend.sql(
        "SELECT msgnum, callerid, duration, recording, msg_id FROM voicemessages "
        "WHERE dir = ? ORDER BY msgnum",
        f"{SPOOL}default/{mailbox}/INBOX",
    )


class Caller:
    """Hear a prompt sequence, then press keys: the call's position moves on each time."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.mark = 0.0

    def hear(self, *names: str, timeout: float = 60) -> None:
        matches = self.call.wait_prompts(
            list(names), candidates=CANDIDATES, after=self.mark, timeout=timeout
        )
        self.mark = matches[-1].end

    def press(self, keys: str) -> None:
        self.call.dtmf(keys, mode="info", gap=0.15)

    def log_in(self) -> None:
        self.hear("vm-login")
        self.press("1000#")
        self.hear("vm-password")
        self.press(f"{PIN}#")
        self.hear("vm-helpexit")


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_forward_to_an_unknown_extension_then_to_two_mailboxes_as_is(
    server: RunningServer, backend: Backend
) -> None:
    original = deposit(backend)
    with Softphone(server) as phone:
        caller = Caller(phone.call("8500"))
        caller.log_in()
        caller.press("8")
        caller.hear("vm-extension")
        caller.press("4711#")
        caller.hear("pbx-invalid", "vm-extension")
        caller.press("1001*1002#")
        caller.hear("vm-forwardoptions", "vm-starmain")
        caller.press("2")
        caller.hear("vm-msgforwarded")
        caller.press("#")
        caller.hear("vm-goodbye")
    for mailbox in ("1001", "1002"):
        rows = inbox(backend, mailbox)
        assert len(rows) == 1, server.log()
        assert bytes(rows[0]["recording"]) == original
        assert rows[0]["callerid"] == '"Dave" <5550199>'
    assert len(inbox(backend, "1000")) == 1  # not heard: it stays new
    log = server.wait_for_log("to 1002@default INBOX")
    assert "to 1001@default INBOX" in log and "to 1002@default INBOX" in log


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_forward_with_a_recorded_introduction(server: RunningServer, backend: Backend) -> None:
    deposit(backend)
    introduction = test_signal(1.2, seed=3)
    with Softphone(server) as phone:
        call = phone.call("8500")
        caller = Caller(call)
        caller.log_in()
        caller.press("8")
        caller.hear("vm-extension")
        caller.press("1002#")
        caller.hear("vm-forwardoptions", "vm-starmain")
        caller.press("1")
        caller.hear("beep")
        call.send_pcm(introduction)
        caller.press("5")  # any key ends the introduction
        caller.hear("vm-msgforwarded")
    (row,) = inbox(backend, "1002")
    pcm = decode(bytes(row["recording"]), "wav")
    seconds = len(pcm) / 16000
    # The introduction (about 1.2 s, plus what came before the key) then the 1.5 s message.
    assert 2.6 <= seconds <= 3.6, (seconds, server.log())
    assert pcm.endswith(MESSAGE)
    head = pcm[: len(pcm) - len(MESSAGE)]
    coefficient, lag = best_correlation(introduction, head)
    assert coefficient > 0.9 and lag >= 0, (coefficient, lag)
    assert int(row["duration"]) == 2 + round(len(head) / 16000)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_reply_leaves_a_message_in_the_senders_mailbox(
    server: RunningServer, backend: Backend
) -> None:
    deposit(backend, callerid='"Bob" <1001>')
    reply = test_signal(2.0, seed=11)
    with Softphone(server) as phone:
        call = phone.call("8500")
        caller = Caller(call)
        caller.log_in()
        caller.press("1")  # play the message; then the message menu
        caller.hear("vm-helpexit")
        caller.press("3")
        caller.hear("vm-toreply", "vm-tohearenv", "vm-starmain")
        caller.press("1")
        caller.hear("vm-intro", "beep")
        call.send_pcm(reply)
        caller.press("#")
        caller.hear("auth-thankyou")
        caller.hear("vm-helpexit")  # back in the message menu
    wait_for(lambda: len(inbox(backend, "1001")) == 1, 15, "the reply in 1001")
    (row,) = inbox(backend, "1001")
    assert row["callerid"] == '"Test Caller" <5551234>'
    pcm = decode(bytes(row["recording"]), "wav")
    coefficient, _lag = best_correlation(reply, pcm)
    assert coefficient > 0.9, coefficient


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_the_recipients_lamp_lights_when_a_message_is_forwarded(
    server: RunningServer, backend: Backend, tmp_path: Path
) -> None:
    deposit(backend)
    lamp = sipp.start_sipp(
        tmp_path / "lamp",
        sipp.scenario(
            "lamp",
            *authenticated_subscribe("6101"),
            *recv_notify("n1", summary_regexp(server, "no", "0/0"), ACTIVE),
            *recv_notify("n2", summary_regexp(server, "yes", "1/0"), ACTIVE),
            references("granted", *notify_variables("n1", "n2")),
        ),
        server.target,
        name="lamp",
        timeout=90,
    )
    try:
        wait_for(lambda: len(lamp.received()) >= 3, 15, "the first NOTIFY")
        with Softphone(server) as phone:
            caller = Caller(phone.call("8500"))
            caller.log_in()
            caller.press("8")
            caller.hear("vm-extension")
            caller.press("1001#")
            caller.hear("vm-forwardoptions", "vm-starmain")
            caller.press("2")
            caller.hear("vm-msgforwarded")
            # The NOTIFY comes while the caller is still in the menu: the forward lit it.
            lamp.wait(20).check()
    finally:
        lamp.stop()
    assert len(inbox(backend, "1001")) == 1
