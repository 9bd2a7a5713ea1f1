"""End to end: the phone menus over SIP, checked on both sides of the call.

A Python softphone (tests/softphone.py) calls the real server, presses keys by RFC 4733 when
it has heard the prompt that asks for them, and sends audio. Each test then checks what
changed in the database (rows, msgnums, folders, flags, greetings) and what the caller heard:
the server's RTP decoded and matched against the prompt files and against the audio that was
deposited or recorded (cross-correlation, tests/heard.py), and the intro transcribed by
pocketsphinx, which the server's own log cannot fake.

No test asserts on timing: keys go when a prompt was heard, database checks wait (bounded)
for the rows a hang-up's close writes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from storage.audioformats import encode
from storage.messages import MessageStore, new_msg_id
from storage.odbc import OdbcPool

from .audio import test_signal, wav_pcm
from .dbbackends import Backend
from .heard import PromptMatch, assert_heard, find_audio, prompts_heard, uses_recorded_prompts
from .server import RunningServer, serving, write_config
from .softphone import Call, Softphone

pytestmark = pytest.mark.timeout(300)
both = pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
sqlite_only = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)

SPOOL = "/var/spool/asterisk/voicemail/"
BOX = SPOOL + "default/1000/"
PIN = "8642"
WRONG = "9753"
MAILBOXES = f"""[default]
1000 => {PIN},Alice Example
1001 => 1234,Short Example,,,minsecs=3
1002 => 1234,Review Example,,,review=yes
"""
EXTENSIONS = """[default]
exten => 8500,1,VoiceMailMain(@default)
same => n,Hangup()
exten => 8501,1,VoiceMailMain(1000@default)
same => n,Hangup()
exten => 1000,1,VoiceMail(1000@default,u)
same => n,Hangup()
exten => 2000,1,VoiceMail(1000@default,s)
same => n,Hangup()
exten => 2001,1,VoiceMail(1001@default,s)
same => n,Hangup()
exten => 2002,1,VoiceMail(1002@default,s)
same => n,Hangup()
"""

DIGITS = [f"digits/{d}" for d in range(10)]
FOLDERS = [f"vm-{name}" for name in ("INBOX", "Old", "Work", "Family", "Friends", "Urgent")]
CANDIDATES = [
    *DIGITS,
    *FOLDERS,
    "vm-login", "vm-password", "vm-incorrect", "vm-incorrect-mailbox", "vm-goodbye",
    "vm-youhave", "vm-no", "vm-and", "vm-message", "vm-messages",
    "vm-onefor", "vm-opts", "vm-helpexit",
    "vm-first", "vm-last", "vm-received",
    "vm-prev", "vm-advopts", "vm-repeat", "vm-next", "vm-delete", "vm-undelete",
    "vm-toforward", "vm-savemessage", "vm-deleted", "vm-undeleted",
    "vm-savefolder", "vm-press", "vm-for", "vm-tocancel", "vm-savedto", "vm-mailboxfull",
    "vm-options", "vm-tmpexists", "vm-rec-temp", "vm-tempgreeting2", "vm-tempremoved",
    "beep", "auth-thankyou", "vm-review", "vm-review-urgent", "vm-review-nonurgent",
    "vm-marked-urgent", "vm-marked-nonurgent", "vm-msgsaved", "vm-sorry",
    "vm-theperson", "vm-isunavail", "vm-isonphone", "vm-intro",
]  # fmt: skip
# Long prompts the caller cuts short: their first 1.5 s count as heard.
HEADS = {name: 1.5 for name in ("vm-opts", "vm-options", "vm-helpexit", "vm-review")}
GREETING = ["vm-theperson", "digits/1", "digits/0", "digits/0", "digits/0", "vm-isunavail"]


# -- the server and the database ------------------------------------------------------------


@contextmanager
def serve(backend: Backend, tmp_path: Path, general: str = "") -> Iterator[RunningServer]:
    config = write_config(
        tmp_path / "etc", backend, mailboxes=MAILBOXES, extensions=EXTENSIONS, general=general
    )
    with serving(config) as running:
        yield running


@pytest.fixture
def server(backend: Backend, tmp_path: Path) -> Iterator[RunningServer]:
    with serve(backend, tmp_path) as running:
        yield running


def message_audio(count: int) -> list[bytes]:
    """Distinct 2 s chirps with noise: each correlates only with itself."""
    return [test_signal(2.0, seed=11 + i) for i in range(count)]


def deposit(backend: Backend, pcms: Sequence[bytes]) -> list[str]:
    """One message per PCM in 1000@default INBOX, in order; returns their msg_ids."""

    async def work() -> list[str]:
        pool = OdbcPool(backend.connection_class(), retry_timeout=10)
        await pool.start()
        try:
            store = MessageStore(pool, "voicemessages", SPOOL)
            ids = []
            for i, pcm in enumerate(pcms):
                msg_id = new_msg_id()
                await store.store(
                    context="default",
                    mailbox="1000",
                    folder="INBOX",
                    recording=encode(pcm, "wav"),
                    callerid=f'"Caller {i}" <555000{i}>',
                    origtime=int(time.time()) - 600 + i,
                    duration=round(len(pcm) / 16000),
                    caller_context="default",
                    msg_id=msg_id,
                )
                ids.append(msg_id)
            return ids
        finally:
            await pool.close()

    return asyncio.run(work())


def rows(backend: Backend) -> list[dict]:
    return backend.sql(
        "SELECT dir, msgnum, msg_id, flag, duration, recording FROM voicemessages "
        "ORDER BY dir, msgnum"
    )


def folders(backend: Backend) -> dict[str, list[tuple[int, str]]]:
    """Messages (msgnum >= 0) by folder name: [(msgnum, msg_id)]."""
    found: dict[str, list[tuple[int, str]]] = {}
    for row in rows(backend):
        if int(row["msgnum"]) >= 0:
            name = str(row["dir"]).rsplit("/", 1)[-1]
            found.setdefault(name, []).append((int(row["msgnum"]), str(row["msg_id"])))
    return found


def greetings(backend: Backend) -> dict[str, bytes]:
    """Greeting rows (msgnum -1) by kind: their audio."""
    return {
        str(row["dir"]).rsplit("/", 1)[-1]: bytes(row["recording"])
        for row in rows(backend)
        if int(row["msgnum"]) == -1
    }


def eventually(check, timeout: float = 15.0):  # noqa: ANN001, ANN201 - any value
    """`check()` once it is truthy; a hang-up's close may still be writing (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def stored_pcm(recording: bytes) -> bytes:
    rate, width, channels, frames = wav_pcm(recording)
    assert (rate, width, channels) == (8000, 2, 1)
    return frames


EDGE = 0.1  # seconds at either end of what was said that a recording may miss


def said_in(recording: bytes, said: bytes) -> PromptMatch:
    """Where what the caller said is in a stored recording (WAV bytes). A packet at either
    edge may be missing (arriving while recording starts or the # stops it), so the middle
    is matched and the length checked; the match spans the whole of `said`."""
    frames = stored_pcm(recording)
    edge = 2 * round(EDGE * 8000)
    found = find_audio(frames, said[edge:-edge])
    assert found, "what was said is not in the stored recording"
    assert len(frames) >= len(said) - edge, f"{len(frames) / 16000:.2f} s stored"
    return PromptMatch("said", found[0].start - EDGE, found[0].end + EDGE, found[0].score)


# -- the caller -----------------------------------------------------------------------------


class Caller:
    """One call and a cursor in its timeline: each wait looks only after what was heard."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.at = 0.0
        self.heard: list[PromptMatch] = []

    def hears(self, *expected: str, timeout: float = 60.0) -> list[PromptMatch]:
        """Wait for the prompts `expected` in a row (after the cursor); move past them."""
        matches = self.call.wait_prompts(
            list(expected), candidates=CANDIDATES, after=self.at, timeout=timeout, heads=HEADS
        )
        self.heard += matches
        self.at = matches[-1].end
        return matches[-len(expected) :]

    def hears_audio(self, pcm: bytes, timeout: float = 60.0) -> PromptMatch:
        match = self.call.wait_audio(pcm, after=self.at, timeout=timeout)
        self.heard.append(match)
        self.at = match.end
        return match

    def press(self, keys: str) -> None:
        self.call.dtmf(keys)

    def sequence(self) -> list[str]:
        return [m.name for m in self.heard]


def login(call: Call, pin: str = PIN) -> Caller:
    """At 8501 (the mailbox is given): vm-password, the PIN and #."""
    caller = Caller(call)
    caller.hears("vm-password")
    caller.press(pin + "#")
    return caller


# -- 1. login -------------------------------------------------------------------------------


@both
def test_wrong_pin_then_right_pin_and_the_intro_says_two_new_messages(
    server: RunningServer, backend: Backend
) -> None:
    ids = deposit(backend, message_audio(2))
    with Softphone(server) as phone:
        caller = Caller(phone.call("8500"))
        caller.hears("vm-login")
        caller.press("1000#")
        caller.hears("vm-password")
        caller.press(WRONG + "#")
        caller.hears("vm-incorrect-mailbox")
        caller.press("1000#")
        caller.hears("vm-password")
        caller.press(PIN + "#")
        intro = caller.hears("vm-youhave", "digits/2", "vm-INBOX", "vm-messages")
        caller.hears("vm-onefor", "vm-INBOX", "vm-messages", "vm-opts")
        caller.press("#")
        caller.hears("vm-goodbye")
        caller.call.wait_hangup(timeout=30)
    assert caller.sequence() == [
        "vm-login", "vm-password", "vm-incorrect-mailbox", "vm-password",
        "vm-youhave", "digits/2", "vm-INBOX", "vm-messages",
        "vm-onefor", "vm-INBOX", "vm-messages", "vm-opts", "vm-goodbye",
    ], server.log()  # fmt: skip
    # Nothing else before the intro (no vm-incorrect, no second vm-login).
    before = caller.call.heard(0, intro[0].start)
    assert prompts_heard(before, CANDIDATES) == caller.sequence()[:4]
    if uses_recorded_prompts():
        transcript = assert_heard(
            caller.call.heard(intro[0].start - 0.2, intro[-1].end + 0.2),
            "you have two new messages",
            min_ratio=0.8,
        )
        assert "two" in transcript.split(), transcript
    # Nothing was played, so nothing moved.
    assert folders(backend) == {"INBOX": [(0, ids[0]), (1, ids[1])]}


# -- 2, 3. listening, delete, save to a folder, hang-up -------------------------------------


def open_inbox(call: Call, count: int) -> Caller:
    """Log in at 8501 and hear the intro and the main menu of `count` new messages."""
    caller = login(call)
    caller.hears("vm-youhave", f"digits/{count}", "vm-INBOX", "vm-messages")
    caller.hears("vm-onefor", "vm-INBOX", "vm-messages", "vm-opts")
    return caller


@both
def test_listen_delete_one_save_one_to_work_and_hang_up(
    server: RunningServer, backend: Backend
) -> None:
    audio = message_audio(3)
    ids = deposit(backend, audio)
    with Softphone(server) as phone:
        caller = open_inbox(phone.call("8501"), 3)
        caller.press("1")
        caller.hears("vm-first", "vm-message", "vm-received")
        first = caller.hears_audio(audio[0])
        caller.hears("vm-advopts", "vm-repeat", "vm-next", "vm-delete")
        caller.press("7")
        caller.hears("vm-deleted")
        # The menu now offers to undelete it: the flag is on the message.
        caller.hears("vm-advopts", "vm-repeat", "vm-next", "vm-undelete")
        caller.press("6")
        caller.hears("vm-message", "digits/2", "vm-received")
        second = caller.hears_audio(audio[1])
        caller.hears("vm-prev", "vm-advopts", "vm-repeat", "vm-next", "vm-delete")
        caller.hears("vm-toforward", "vm-savemessage")
        caller.press("9")
        caller.hears("vm-savefolder", "vm-press", "digits/1", "vm-for", "vm-Old", "vm-messages")
        caller.press("2")
        caller.hears("vm-message", "digits/2", "vm-savedto", "vm-Work", "vm-messages")
        assert caller.call.hangup() == 200
    # The close at the hang-up: the deleted first is gone, the saved second is in Work at 0
    # (and gone from INBOX), the unheard third is renumbered from 2 to 0.
    expected = {"INBOX": [(0, ids[2])], "Work": [(0, ids[1])]}
    assert eventually(lambda: folders(backend) == expected), (folders(backend), server.log())
    stored = {str(r["dir"]).rsplit("/", 1)[-1]: bytes(r["recording"]) for r in rows(backend)}
    assert stored["Work"] == encode(audio[1], "wav")  # the very message, copied
    # What the caller heard: each message's own audio once, in its place, the third never.
    everything = caller.call.heard()
    for pcm, match in ((audio[0], first), (audio[1], second)):
        starts = [m.start for m in find_audio(everything, pcm)]
        assert len(starts) == 1 and starts[0] == pytest.approx(match.start, abs=0.01), starts
    assert not find_audio(everything, audio[2])


@both
def test_hang_up_in_the_middle_of_the_menu_still_applies_the_delete_and_the_move(
    server: RunningServer, backend: Backend
) -> None:
    audio = message_audio(3)
    ids = deposit(backend, audio)
    with Softphone(server) as phone:
        caller = open_inbox(phone.call("8501"), 3)
        caller.press("1")
        caller.hears_audio(audio[0])
        caller.hears("vm-advopts", "vm-repeat", "vm-next", "vm-delete")
        caller.press("7")
        caller.hears("vm-deleted")
        caller.press("6")
        caller.hears("vm-message", "digits/2")
        caller.hears_audio(audio[1])
        caller.hears("vm-prev", "vm-advopts")
        assert caller.call.hangup() == 200  # while the message menu plays
    # The first deleted, the second heard (moved to Old), the third renumbered.
    expected = {"INBOX": [(0, ids[2])], "Old": [(0, ids[1])]}
    assert eventually(lambda: folders(backend) == expected), (folders(backend), server.log())
    assert "vm-goodbye" not in caller.sequence()


# -- 4. the temporary greeting --------------------------------------------------------------


@both
def test_temporary_greeting_recorded_heard_by_a_caller_then_erased(
    server: RunningServer, backend: Backend
) -> None:
    greeting = test_signal(3.0, seed=41)
    # The owner records it: 0 (options), 4 (temporary), speak, #, 2 (listen), 1 (accept).
    with Softphone(server) as phone:
        owner = login(phone.call("8501"))
        owner.hears("vm-youhave", "vm-no", "vm-messages")
        owner.hears("vm-opts")
        owner.press("0")
        owner.hears("vm-options")
        owner.press("4")
        owner.hears("vm-rec-temp", "beep")
        owner.call.send_pcm(greeting)
        owner.press("#")
        owner.hears("auth-thankyou", "vm-review")
        owner.press("2")
        owner.hears_audio(greeting)  # the review plays back what was recorded
        owner.hears("vm-review")
        owner.press("1")
        owner.hears("vm-msgsaved")
        owner.hears("vm-tmpexists", "vm-options")
        owner.press("*")
        owner.hears("vm-opts")
        owner.press("#")
        owner.hears("vm-goodbye")
        owner.call.wait_hangup(timeout=30)
    stored = eventually(lambda: greetings(backend))
    assert list(stored) == ["temp"], (rows(backend), server.log())
    row = [r for r in rows(backend) if int(r["msgnum"]) == -1][0]
    assert row["dir"] == BOX + "temp"
    said_in(stored["temp"], greeting)
    # A caller to VoiceMail(1000,u) hears it instead of the unavailable greeting.
    with Softphone(server) as phone:
        caller = Caller(phone.call("1000"))
        played = caller.hears_audio(greeting)
        caller.hears("vm-intro")
        assert prompts_heard(caller.call.heard(0, played.start), CANDIDATES) == []
        assert caller.call.hangup() == 200
    # The owner erases it: 0, 4, 2.
    with Softphone(server) as phone:
        owner = login(phone.call("8501"))
        owner.hears("vm-opts")
        owner.press("0")
        owner.hears("vm-tmpexists", "vm-options")
        owner.press("4")
        owner.hears("vm-tempgreeting2")
        owner.press("2")
        owner.hears("vm-tempremoved")
        after = owner.hears("vm-options")
        assert owner.sequence()[-2:] == ["vm-tempremoved", "vm-options"]  # no vm-tmpexists
        assert after
        assert owner.call.hangup() == 200
    assert eventually(lambda: "temp" not in greetings(backend)), rows(backend)
    # The next caller hears the standard (invented) unavailable greeting, not the temporary.
    with Softphone(server) as phone:
        caller = Caller(phone.call("1000"))
        caller.hears(*GREETING, "vm-intro")
        assert caller.sequence()[: len(GREETING)] == GREETING
        assert not find_audio(caller.call.heard(), greeting)
        assert caller.call.hangup() == 200


# -- 5. deposit: review and urgent, maxsilence, minsecs -------------------------------------

SILENCE_OPTIONS = "maxsilence=2\nsilencethreshold=128\n"


@both
def test_review_listen_mark_urgent_and_save_lands_in_urgent(
    backend: Backend, tmp_path: Path
) -> None:
    said = test_signal(3.0, seed=51)
    with serve(backend, tmp_path, SILENCE_OPTIONS) as server, Softphone(server) as phone:
        caller = Caller(phone.call("2002"))
        caller.hears("beep")
        caller.call.send_pcm(said)
        caller.press("#")
        caller.hears("auth-thankyou", "vm-review", "vm-review-urgent")
        caller.press("2")
        caller.hears_audio(said)
        caller.hears("vm-review", "vm-review-urgent")
        caller.press("4")  # Asterisk 20: 4 toggles urgent
        caller.hears("vm-marked-urgent", "vm-review", "vm-review-nonurgent")
        caller.press("1")
        caller.hears("vm-msgsaved")
        caller.call.wait_hangup(timeout=30)
        assert caller.call.ended_by == "server"
        stored = eventually(lambda: rows(backend))
        log = server.log()
    assert [(str(r["dir"]), r["flag"]) for r in stored] == [
        (SPOOL + "default/1002/Urgent", "Urgent")
    ], log
    assert int(stored[0]["duration"]) == 3
    said_in(bytes(stored[0]["recording"]), said)
    assert "vm-sorry" not in caller.sequence()


def leave_then_silence(caller: Caller, speech: bytes) -> None:
    """After the beep: speech, then silent packets until the server stops listening."""
    caller.hears("beep")
    caller.call.send_pcm(speech)
    caller.call.send_silence(8.0, wait=False)


@both
def test_maxsilence_ends_the_recording_and_trims_the_trailing_silence(
    backend: Backend, tmp_path: Path
) -> None:
    speech = test_signal(2.0, seed=61)
    with serve(backend, tmp_path, SILENCE_OPTIONS) as server, Softphone(server) as phone:
        caller = Caller(phone.call("2000"))
        leave_then_silence(caller, speech)
        caller.hears("auth-thankyou")
        caller.call.wait_hangup(timeout=30)
        assert caller.call.ended_by == "server"  # the silence stopped it, not the caller
        stored = eventually(lambda: rows(backend))
        log = server.log()
    assert caller.sequence() == ["beep", "auth-thankyou"]
    assert [str(r["dir"]) for r in stored] == [BOX + "INBOX"], log
    recording = bytes(stored[0]["recording"])
    trailing = len(stored_pcm(recording)) / 16000 - said_in(recording, speech).end
    # 8 s of silence followed the speech; 200 ms of it are kept.
    assert 0.1 <= trailing <= 0.4, f"{trailing:.2f} s kept after the speech"
    assert int(stored[0]["duration"]) == 2


@both
def test_minsecs_discards_a_message_that_is_too_short(backend: Backend, tmp_path: Path) -> None:
    speech = test_signal(2.0, seed=71)  # minsecs=3 for 1001
    with serve(backend, tmp_path, SILENCE_OPTIONS) as server, Softphone(server) as phone:
        caller = Caller(phone.call("2001"))
        leave_then_silence(caller, speech)
        caller.call.wait_hangup(timeout=30)
        assert caller.call.ended_by == "server"
        log = server.log()
    assert rows(backend) == [], log
    assert prompts_heard(caller.call.heard(), CANDIDATES)[:1] == ["beep"]


@sqlite_only
def test_a_message_too_short_for_minsecs_still_hears_thank_you(
    backend: Backend, tmp_path: Path
) -> None:
    with serve(backend, tmp_path, SILENCE_OPTIONS) as server, Softphone(server) as phone:
        caller = Caller(phone.call("2001"))
        leave_then_silence(caller, test_signal(2.0, seed=71))
        caller.call.wait_hangup(timeout=30)
    assert rows(backend) == []
    assert prompts_heard(caller.call.heard(), CANDIDATES) == ["beep", "auth-thankyou"]
