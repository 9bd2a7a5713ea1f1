"""The VoiceMailMain driver with a real SQLite message store and a Channel double: listen
controls, login entry, the close on hang-up (also when the call task is cancelled), MWI."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from channels.channel import CallerInfo, ChannelHungUp, Recording, StopReason
from storage.audioformats import encode
from storage.realtime import Realtime
from voicemail.config_voicemail import StaticMailbox, VoicemailSettings
from voicemail.mailboxes import MailboxDirectory
from voicemail.vmmain.access import MailboxAccess
from voicemail.vmmain.core import VoiceMailMain
from voicemail.vmmain.driver import MenuDriver
from voicemail.vmmain.events import (
    Collect,
    Digit,
    Digits,
    MailboxInfo,
    PlayMessage,
    PlayRecording,
    PromptDone,
    Record,
    RecordingDone,
    SaveGreeting,
    Stored,
)
from voicemail.vmmain.options import MainArgs, MenuSettings

from .dbbackends import Backend
from .helpers import contents, deposit, started_store
from .server import SOUNDS

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.parametrize("backend", ["sqlite"], indirect=True),
]

HANG_UP = "hang up"
SECOND = 16000  # bytes of PCM


@dataclass
class FakeChannel:
    """Answers play/wait/read_digits from a script; records what was asked."""

    script: list[str | None]
    info: CallerInfo = field(default_factory=lambda: CallerInfo("8500", "default"))
    calls: list[tuple[str, int, str]] = field(default_factory=list)
    hung_up: bool = False
    answered: bool = False

    def _next(self) -> str | None:
        if self.hung_up:
            raise ChannelHungUp("gone")
        value = self.script.pop(0) if self.script else HANG_UP
        if value == HANG_UP:
            self.hung_up = True
            raise ChannelHungUp("gone")
        return value

    async def answer(self) -> None:
        self.answered = True

    async def play(self, pcm: bytes, interrupt_digits: str = "") -> str | None:
        self.calls.append(("play", len(pcm), interrupt_digits))
        return self._next()

    async def wait(self, seconds: float, interrupt_digits: str = "") -> str | None:
        self.calls.append(("wait", int(seconds), interrupt_digits))
        return self._next()

    async def read_digits(
        self, max_digits: int, first_timeout: float, timeout: float, terminators: str = "#"
    ) -> str:
        self.calls.append(("read", max_digits, terminators))
        return self._next() or ""

    async def record(self, max_seconds: float | None = None, stop_digits: str = "#") -> Recording:
        self.calls.append(("record", int(max_seconds or 0), stop_digits))
        value = self._next()
        return Recording(b"\x05\x00" * 8000, StopReason.DIGIT, value)

    def hangup(self, code: int | None = None, reason: str = "") -> None:
        self.hung_up = True


def directory() -> MailboxDirectory:
    settings = VoicemailSettings(
        general={},
        mailboxes={("default", "1234"): StaticMailbox("default", "1234", "4321")},
        zonemessages={},
    )
    return MailboxDirectory(settings, Realtime([], {}))


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


INFO = MailboxInfo("1234", "default", "4321", settings=MenuSettings())


def test_listen_controls(backend: Backend, loop: asyncio.AbstractEventLoop) -> None:
    async def scenario() -> None:
        async with started_store(backend) as store:
            await deposit(store, encode(b"\x01\x00" * 8000 * 10, "wav"))
            channel = FakeChannel(["#", "*", "0", "0", "2", "0", "7"])
            driver = MenuDriver(channel, MailboxAccess(store, directory(), {}), SOUNDS)  # type: ignore[arg-type]
            driver.mailbox = INFO
            event = await driver.perform(PlayMessage(0, 0, 3000))
            assert event == Digit("7")
            plays = [(kind, n) for kind, n, _ in channel.calls]
            assert plays == [
                ("play", 10 * SECOND),
                ("play", 7 * SECOND),  # '#': 3 s forward
                ("play", 10 * SECOND),  # '*': back to the start
                ("wait", 300),  # '0' pauses ...
                ("play", 10 * SECOND),  # ... '0' resumes
                ("play", 10 * SECOND),  # '2' restarts
                ("wait", 300),  # paused; '7' stops and is the next command
            ]
            assert channel.calls[0][2] == "#*0213456789"
            channel = FakeChannel([None])
            driver = MenuDriver(channel, MailboxAccess(store, directory(), {}), SOUNDS)  # type: ignore[arg-type]
            driver.mailbox = INFO
            assert await driver.perform(PlayMessage(0, 0, 3000)) == PromptDone()

    loop.run_until_complete(scenario())


def test_collect_first_key_interrupts_the_prompt(
    backend: Backend, loop: asyncio.AbstractEventLoop
) -> None:
    async def scenario() -> None:
        async with started_store(backend) as store:
            access = MailboxAccess(store, directory(), {})
            channel = FakeChannel(["1", "234"])
            driver = MenuDriver(channel, access, SOUNDS)  # type: ignore[arg-type]
            assert await driver.perform(Collect(("vm-login",))) == Digits("1234")
            assert channel.calls[1] == ("read", 79, "#")
            channel = FakeChannel(["#"])
            driver = MenuDriver(channel, access, SOUNDS)  # type: ignore[arg-type]
            assert await driver.perform(Collect(("vm-login",))) == Digits("")

    loop.run_until_complete(scenario())


def _session() -> VoiceMailMain:
    return VoiceMailMain(MainArgs(), MenuSettings(), "")


# login 1234/4321, intro, instructions interrupted by 1, header interrupted by 1 (skip to
# the audio), audio played out, message menu interrupted by 7 (delete), 'vm-deleted' ...
LOGIN_AND_DELETE: list[str | None] = [None, "1234", None, "4321", None, "1", "1", None, "7"]


def test_hang_up_applies_the_close_and_calls_the_mwi_hook(
    backend: Backend, loop: asyncio.AbstractEventLoop
) -> None:
    async def scenario() -> None:
        async with started_store(backend) as store:
            first = await deposit(store)
            second = await deposit(store)
            changed: list[tuple[str, str]] = []
            channel = FakeChannel([*LOGIN_AND_DELETE, HANG_UP])
            driver = MenuDriver(
                channel,  # type: ignore[arg-type]
                MailboxAccess(store, directory(), {}),
                SOUNDS,
                mailbox_changed=lambda m, c: changed.append((m, c)),
            )
            finish = await driver.run(_session())
            assert not finish.keep_going
            inbox = await contents(store, "default", "1234", "INBOX")
            assert [(m, i) for m, i, _ in inbox] == [(0, second[1])]
            assert first[1] not in str(await contents(store, "default", "1234", "Old"))
            assert changed == [("1234", "default")]

    loop.run_until_complete(scenario())


def test_a_cancelled_call_still_applies_the_close(
    backend: Backend, loop: asyncio.AbstractEventLoop
) -> None:
    async def scenario() -> None:
        async with started_store(backend) as store:
            await deposit(store)
            second = await deposit(store)
            blocked = asyncio.Event()

            class Blocking(FakeChannel):
                async def play(self, pcm: bytes, interrupt_digits: str = "") -> str | None:
                    if not self.script:
                        blocked.set()
                        await asyncio.sleep(60)
                    return await super().play(pcm, interrupt_digits)

            channel = Blocking(list(LOGIN_AND_DELETE))
            driver = MenuDriver(channel, MailboxAccess(store, directory(), {}), SOUNDS)  # type: ignore[arg-type]
            task = asyncio.ensure_future(driver.run(_session()))
            await asyncio.wait_for(blocked.wait(), 10)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            inbox = await contents(store, "default", "1234", "INBOX")
            assert [(m, i) for m, i, _ in inbox] == [(0, second[1])]

    loop.run_until_complete(scenario())


def test_greeting_is_recorded_reviewed_and_stored(
    backend: Backend, loop: asyncio.AbstractEventLoop
) -> None:
    async def scenario() -> None:
        async with started_store(backend) as store:
            channel = FakeChannel(["#", None])
            driver = MenuDriver(
                channel,  # type: ignore[arg-type]
                MailboxAccess(store, directory(), {}),
                SOUNDS,
                max_record_seconds=120,
            )
            driver.mailbox = INFO
            assert await driver.perform(Record(0, "#")) == RecordingDone(1.0)
            assert await driver.perform(Record(300, "#")) == RecordingDone(1.0)
            assert [c for c in channel.calls if c[0] == "record"] == [
                ("record", 120, "#"),
                ("record", 120, "#"),  # maxgreet above the server's limit
            ]
            channel.script = [None]
            assert await driver.perform(PlayRecording()) == PromptDone()
            assert channel.calls[-1] == ("play", 16000, "0123456789*#")
            assert await driver.perform(SaveGreeting("unavail")) == Stored()
            greeting = await store.retrieve_greeting("default", "1234", "unavail")
            assert greeting is not None and greeting.recording[:4] == b"RIFF"

    loop.run_until_complete(scenario())


def test_a_replayed_message_is_played_from_memory_and_not_read_again(
    backend: Backend, loop: asyncio.AbstractEventLoop
) -> None:
    """Issue 12: no message's BLOB read more than once per listen. 5 (repeat) plays the held
    audio; moving to another message lets it go, so 4 back to the first reads it again."""

    async def scenario() -> None:
        async with started_store(backend) as store:
            first = encode(b"\x01\x00" * 8000 * 10, "wav")
            second = encode(b"\x02\x00" * 8000 * 6, "wav")
            await deposit(store, first)
            await deposit(store, second)
            # login, 1 reads, each header skipped by 1, each message played out (None),
            # then at the message menu: 5 (repeat), 6 (next), 5, 4 (previous)
            listen = ["1", None]
            script = [None, "1234", None, "4321", None, "1", *listen, "5", *listen, "6"]
            script += [*listen, "5", *listen, "4", *listen, HANG_UP]
            channel = FakeChannel(script)
            driver = MenuDriver(channel, MailboxAccess(store, directory(), {}), SOUNDS)  # type: ignore[arg-type]
            await driver.run(_session())
            heard = [
                n // SECOND for kind, n, _ in channel.calls
                if kind == "play" and n in (10 * SECOND, 6 * SECOND)
            ]  # fmt: skip
            assert heard == [10, 10, 6, 6, 10]
            assert store.messages_read == 3  # first, second, first again after 4
            assert store.message_bytes_read == 2 * len(first) + len(second)

    loop.run_until_complete(scenario())
