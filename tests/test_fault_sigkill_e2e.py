"""SIGKILL one of two servers on one PostgreSQL database in the middle of 20 deposits.

Twenty callers (softphones, each with audio of its own) leave messages at once, ten through
each server, to mailboxes 1000-1009 (one message per mailbox from each server). On the
server that is killed, five callers say 2 s and hang up before the kill (their 200 to the
BYE comes once the row is committed), five are still talking when SIGKILL arrives.

The rule for a message cut by the kill (storage/recording_journal.py): its journal
`<spool>/recording/<msg_id>.rec` holds the audio fsynced before the kill (about once a
second), and the next start stores exactly that PCM, category `recovered-after-crash`, once,
under the journal's msg_id; a journal whose msg_id is already stored (finished but not yet
deleted when the kill came) adds no row. The test reads the journals the kill left, before
the restart, and checks the database against them to the byte.
"""

from __future__ import annotations

import hashlib
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from storage.recording_journal import RECOVERED_CATEGORY, read_journal

from .audio import test_signal, wav_pcm
from .dbbackends import Backend
from .heard import find_audio
from .server import RunningServer, start_server, write_config
from .softphone import Softphone, SoftphoneError
from .test_harness_deposit_e2e import CANDIDATES
from .test_hostile_e2e import assert_options_answered

pytestmark = pytest.mark.timeout(300)

BOXES = [f"100{i}" for i in range(10)]
MAILBOXES = "[default]\n" + "".join(f"{box} => 1234,Box {box}\n" for box in BOXES)
SURVIVOR_SECONDS = 4.0
SHORT_SECONDS = 2.0  # the killed server's callers who finish before the kill
LONG_SECONDS = 14.0  # those still talking when it comes
SPOKEN_BEFORE_KILL = 3.5  # seconds the long callers have said when the kill comes (at least)


def greeting_of(box: str) -> list[str]:
    return ["vm-theperson", *(f"digits/{d}" for d in box), "vm-isunavail", "vm-intro", "beep"]


@dataclass
class Caller:
    """One caller: the mailbox, the server, what it says, and what happened."""

    box: str
    server: RunningServer
    audio: bytes
    hang_up_after: bool  # hang up once the audio is sent (False: stay on until the kill)
    talking: threading.Event = field(default_factory=threading.Event)
    talking_since: float | None = None
    bye_status: int | None = None
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def run(self, killed: threading.Event) -> None:
        try:
            with Softphone(self.server, user=f"55{self.box}") as phone:
                call = phone.call(self.box, timeout=30)
                call.wait_prompts(greeting_of(self.box), candidates=CANDIDATES, timeout=90)
                self.talking_since = time.monotonic()
                self.talking.set()
                call.send_pcm(self.audio, wait=self.hang_up_after)
                if self.hang_up_after:
                    self.bye_status = call.hangup(timeout=30)
                else:
                    killed.wait(120)
                    call.close_media()
        except (SoftphoneError, OSError) as exc:
            self.error = str(exc)
        finally:
            self.done.set()


def start_node(tmp_path: Path, backend: Backend, name: str) -> RunningServer:
    return start_server(write_config(tmp_path / name, backend, mailboxes=MAILBOXES))


def messages(backend: Backend) -> list[dict]:
    return backend.sql(
        "SELECT mailboxuser, msg_id, category, duration, recording FROM voicemessages "
        "ORDER BY mailboxuser, msgnum"
    )


def pcm_of(row: dict) -> bytes:
    rate, width, channels, frames = wav_pcm(bytes(row["recording"]))
    assert (rate, width, channels) == (8000, 2, 1)
    return frames


def assert_is_the_callers(row: dict, audio: bytes, seconds: float) -> None:
    frames = pcm_of(row)
    stored = len(frames) / 2 / 8000
    assert abs(stored - seconds) <= 0.3, (row["mailboxuser"], stored, seconds)
    assert holds(frames, audio), row["mailboxuser"]


def holds(frames: bytes, audio: bytes) -> bool:
    """Whether a stored recording is this caller's audio: one second of it, from 0.1 s,
    found in what the caller sent (each caller's test signal is unique)."""
    snippet = frames[1600 : 1600 + 16000]
    return len(snippet) == 16000 and bool(find_audio(audio, snippet, threshold=0.9))


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_sigkill_of_one_of_two_servers_loses_and_duplicates_nothing(
    backend: Backend, tmp_path: Path
) -> None:
    survivor = start_node(tmp_path, backend, "a")
    victim_config = tmp_path / "b"
    victim = start_node(tmp_path, backend, "b")
    again: RunningServer | None = None
    killed = threading.Event()
    callers: list[Caller] = []
    for index, box in enumerate(BOXES):
        callers.append(Caller(box, survivor, test_signal(SURVIVOR_SECONDS, seed=100 + index), True))
        short = index % 2 == 0
        seconds = SHORT_SECONDS if short else LONG_SECONDS
        callers.append(Caller(box, victim, test_signal(seconds, seed=200 + index), short))
    on_survivor = [c for c in callers if c.server is survivor]
    finishing = [c for c in callers if c.server is victim and c.hang_up_after]
    cut = [c for c in callers if c.server is victim and not c.hang_up_after]
    threads = [
        threading.Thread(target=c.run, args=(killed,), daemon=True, name=f"caller-{c.box}")
        for c in callers
    ]
    try:
        for thread in threads:
            thread.start()
        # The kill comes once the short callers on the victim have their 200 to the BYE and
        # the long ones have talked for SPOKEN_BEFORE_KILL seconds (2-3 s of it fsynced).
        for caller in finishing:
            assert caller.done.wait(120), f"caller of {caller.box} did not finish"
            assert caller.bye_status == 200, (caller.box, caller.error, victim.log()[-3000:])
        for caller in cut:
            assert caller.talking.wait(90), (caller.box, caller.error, victim.log()[-3000:])
            assert caller.talking_since is not None
            time.sleep(max(0.0, caller.talking_since + SPOKEN_BEFORE_KILL - time.monotonic()))
        assert all(not c.done.is_set() for c in cut), [c.error for c in cut]
        killed_at = time.monotonic()
        victim.process.send_signal(signal.SIGKILL)
        victim.process.wait(10)
        killed.set()

        # The survivor's calls complete, and it goes on answering.
        for caller in on_survivor:
            assert caller.done.wait(90), f"caller of {caller.box} on the survivor hung"
            assert caller.bye_status == 200, (caller.box, caller.error, survivor.log()[-3000:])
        assert_options_answered(survivor, "after-the-kill")
        extra = test_signal(3.0, seed=300)
        late = Caller("1000", survivor, extra, True)
        late.run(threading.Event())
        assert late.bye_status == 200, (late.error, survivor.log()[-3000:])
        for thread in threads:
            thread.join(30)

        # What the kill left: one journal per call cut, none for the finished ones (or, if
        # the writer had not deleted it yet, one whose msg_id is already stored).
        before = messages(backend)
        stored_ids = {row["msg_id"] for row in before}
        journals = {}
        for path in sorted((victim_config / "spool" / "recording").glob("*.rec")):
            msg_id, metadata, pcm, _torn = read_journal(path.read_bytes())
            assert metadata.mailbox in BOXES
            journals[msg_id] = (metadata.mailbox, pcm)
        recoverable = {m: j for m, j in journals.items() if m not in stored_ids}
        assert len(recoverable) == len(cut), (journals.keys(), victim.log()[-3000:])
        assert sorted(box for box, _ in recoverable.values()) == sorted(c.box for c in cut)
        assert not list((victim_config / "spool").glob("*.vmsg"))  # the database was up

        # Restart the victim on its spool: it replays every journal, once.
        again = start_server(victim_config)
        again.wait_for_log("from a recording interrupted by a crash", timeout=30)
        expected_total = len(before) + len(recoverable)
        deadline = time.monotonic() + 30
        after = messages(backend)
        while len(after) < expected_total and time.monotonic() < deadline:
            time.sleep(0.3)
            after = messages(backend)
        time.sleep(1.0)  # anything stored twice would show now
        after = messages(backend)
    finally:
        killed.set()
        for server in (survivor, victim, again):
            if server is not None:
                server.stop()

    assert len(before) == len(on_survivor) + len(finishing) + 1, before
    assert len(after) == expected_total, [(r["mailboxuser"], r["msg_id"]) for r in after]
    # Exactly once: by msg_id and by audio.
    assert len({row["msg_id"] for row in after}) == len(after)
    assert len({hashlib.sha256(bytes(row["recording"])).hexdigest() for row in after}) == len(after)
    counts = {box: 0 for box in BOXES}
    for row in after:
        counts[row["mailboxuser"]] += 1
    assert counts == {box: 3 if box == "1000" else 2 for box in BOXES}, counts

    by_id = {row["msg_id"]: row for row in after}
    for msg_id, (box, pcm) in recoverable.items():
        row = by_id[msg_id]
        assert row["mailboxuser"] == box
        assert row["category"] == RECOVERED_CATEGORY
        # Exactly the audio the journal kept, up to the kill: nothing more, nothing less.
        assert pcm_of(row) == pcm, (box, len(pcm_of(row)), len(pcm))
        assert int(row["duration"]) == round(len(pcm) / 2 / 8000)
        seconds = len(pcm) / 2 / 8000
        caller = next(c for c in cut if c.box == box)
        assert caller.talking_since is not None
        spoken = killed_at - caller.talking_since  # what the caller had said at the kill
        assert 1.0 <= seconds <= spoken + 0.3, (box, seconds, spoken)
        assert holds(pcm, caller.audio), box
    others = [row for row in after if row["msg_id"] not in recoverable]
    assert all(row["category"] != RECOVERED_CATEGORY for row in others), others
    for caller in [*on_survivor, *finishing]:
        mine = [
            row
            for row in others
            if row["mailboxuser"] == caller.box and holds(pcm_of(row), caller.audio)
        ]
        assert len(mine) == 1, caller.box
        assert_is_the_callers(mine[0], caller.audio, len(caller.audio) / 2 / 8000)
    assert any(holds(pcm_of(row), extra) for row in others if row["mailboxuser"] == "1000")
    assert "Traceback" not in survivor.log(), survivor.log()
    assert again is not None and "Traceback" not in again.log(), again.log()
