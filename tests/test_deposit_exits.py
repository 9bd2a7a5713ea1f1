"""VoiceMailApp in process: `*`, `0` and d(c) digits leave with a Goto, the operator key.

A real VoiceMailApp on a real SQLite store, spool and journals, and a real Channel whose caller
is a UDP socket sending RTP and RFC 4733 events (tests/media_peer.py). The dial plan's
`extension_exists` is a plain function of the test (the server's wiring is the integrator's).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from channels.media import MediaClock
from storage.realtime import Realtime
from storage.recording_journal import RecordingJournals
from storage.spool import Spool, SpoolFlusher
from voicemail.app_voicemail import VoiceMailApp
from voicemail.config_voicemail import StaticMailbox, VoicemailSettings
from voicemail.goto import Goto
from voicemail.mailboxes import MailboxDirectory

from .dbbackends import Backend
from .helpers import started_store
from .media_peer import Peer, channel_for, negotiated, open_session
from .server import SOUNDS, prompt_seconds

pytestmark = pytest.mark.timeout(90)

EXTENSIONS = {("default", "a"), ("default", "o"), ("sales", "5")}
EVENTS = {"*": 10, "#": 11, **{str(d): d for d in range(10)}}


def exists(context: str, exten: str) -> bool:
    return (context, exten) in EXTENSIONS


async def deposit(
    backend: Backend,
    tmp_path: Path,
    args: list[str],
    keys: list[tuple[float, str]],
    mailbox_options: dict[str, str] | None = None,
) -> tuple[bool | Goto, dict[str, str], list[dict]]:
    """Run VoiceMail(args) while the caller presses `keys` (seconds after the start)."""
    settings = VoicemailSettings(
        general={},
        mailboxes={
            ("default", "1000"): StaticMailbox(
                "default", "1000", "1234", "Alice", options=mailbox_options or {}
            )
        },
        zonemessages={},
    )
    async with started_store(backend) as store:
        spool = Spool(tmp_path / "spool")
        app = VoiceMailApp(
            store,
            SpoolFlusher(spool, store),
            MailboxDirectory(settings, Realtime([], {})),
            SOUNDS,
            ["wav"],
            RecordingJournals(spool),
            extension_exists=exists,
        )
        peer = Peer()
        session = await open_session(MediaClock())
        session.configure(negotiated(peer.port))
        session.start()
        channel = channel_for(session)
        variables: dict[str, str] = {"CONTEXT": "default"}

        async def caller() -> None:
            loop = asyncio.get_running_loop()
            started = loop.time()
            for index, (at, key) in enumerate(keys):
                # By the clock, not by counting sleeps: a loaded machine must not delay keys.
                while loop.time() - started < at:
                    peer.send_audio(session)
                    await asyncio.sleep(0.02)
                peer.send_event(session, EVENTS[key], 50000 + 1000 * index)

        try:
            pressing = asyncio.ensure_future(caller())
            result = await asyncio.wait_for(app.run(channel, args, variables), 60)
            await pressing
        finally:
            session.close()
            peer.close()
        stored = backend.sql("SELECT dir, flag FROM voicemessages")
    return result, variables, stored


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_star_in_the_greeting_leaves_for_a(backend: Backend, tmp_path: Path) -> None:
    result, variables, stored = asyncio.run(deposit(backend, tmp_path, ["1000", "u"], [(0.5, "*")]))
    assert result == Goto("a", None)
    assert variables["VMSTATUS"] == "USEREXIT"
    assert stored == []


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_zero_leaves_for_o_only_with_operator(backend: Backend, tmp_path: Path) -> None:
    result, variables, _ = asyncio.run(
        deposit(backend, tmp_path, ["1000", "u"], [(0.5, "0")], {"operator": "yes"})
    )
    assert result == Goto("o", None) and variables["VMSTATUS"] == "USEREXIT"
    # Without operator=yes, 0 is no exit key: the greeting goes on, # skips to the beep.
    result, variables, _ = asyncio.run(
        deposit(backend, tmp_path, ["1000", "u"], [(0.5, "0"), (1.0, "#"), (2.5, "#")])
    )
    assert result is True and variables["VMSTATUS"] == "SUCCESS"


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_d_option_digit_leaves_for_that_extension_of_its_context(
    backend: Backend, tmp_path: Path
) -> None:
    result, variables, _ = asyncio.run(
        deposit(backend, tmp_path, ["1000", "ud(sales)"], [(0.5, "5")])
    )
    assert result == Goto("5", "sales") and variables["VMSTATUS"] == "USEREXIT"


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_operator_key_while_recording_keeps_with_1_then_leaves_for_o(
    backend: Backend, tmp_path: Path
) -> None:
    result, variables, stored = asyncio.run(
        deposit(backend, tmp_path, ["1000", "s"], [(1.5, "0"), (2.0, "1")], {"operator": "yes"})
    )
    assert result == Goto("o", None) and variables["VMSTATUS"] == "USEREXIT"
    assert len(stored) == 1 and stored[0]["dir"].endswith("/INBOX")


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_operator_key_while_recording_without_1_deletes(backend: Backend, tmp_path: Path) -> None:
    result, _variables, stored = asyncio.run(
        deposit(backend, tmp_path, ["1000", "s"], [(1.5, "0"), (2.0, "9")], {"operator": "yes"})
    )
    assert result == Goto("o", None)
    assert stored == []


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_review_3_records_again_and_1_saves_the_new_take(backend: Backend, tmp_path: Path) -> None:
    first_end = prompt_seconds("beep") + 1.0  # a 1 s first take
    menu = first_end + prompt_seconds("auth-thankyou") + 0.5  # while vm-review plays
    again = menu + prompt_seconds("vm-sorry") + 0.5  # 5 got vm-sorry; now 3 in the menu
    second_end = again + prompt_seconds("vm-intro", "beep") + 2.5  # a 2.5 s second take
    keys = [(first_end, "#"), (menu, "5"), (again, "3"), (second_end, "#")]
    keys.append((second_end + 0.3, "1"))
    result, variables, stored = asyncio.run(
        deposit(backend, tmp_path, ["1000", "s"], keys, {"review": "yes"})
    )
    assert result is True and variables["VMSTATUS"] == "SUCCESS"
    durations = backend.sql("SELECT duration FROM voicemessages")
    assert len(stored) == 1 and int(durations[0]["duration"]) in (2, 3), durations
