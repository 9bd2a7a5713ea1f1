"""The driver's side of forward with a real message store (SQLite and PostgreSQL) and a Channel
double: copies as is and with an introduction, a full recipient, the lamp hook per recipient,
the recipient's name, and the introduction's recording."""

from __future__ import annotations

import asyncio
import math
import struct
from collections.abc import Iterator

import pytest

from channels.channel import Recording, StopReason
from storage.audioformats import decode, encode
from voicemail.vmmain.access import MailboxAccess
from voicemail.vmmain.driver import MenuDriver
from voicemail.vmmain.events import (
    ALL_KEYS,
    Forwarded,
    ForwardMessage,
    HungUp,
    LeaveMessage,
    MailboxInfo,
    MessageLeft,
    PlayName,
    PrefixRecorded,
    PromptDone,
    RecordPrefix,
)
from voicemail.vmmain.options import MenuSettings

from .dbbackends import Backend
from .helpers import deposit, started_store
from .server import SOUNDS
from .test_vmmain_driver import FakeChannel, directory

pytestmark = pytest.mark.timeout(60)

SECOND = 16000  # bytes of 8 kHz 16-bit PCM
OWN = MailboxInfo("1234", "default", "4321", settings=MenuSettings())


def box(mailbox: str, maxmsg: int = 100) -> MailboxInfo:
    return MailboxInfo(mailbox, "default", "0000", settings=MenuSettings(maxmsg=maxmsg))


def tone(seconds: float, hz: int) -> bytes:
    return b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * hz * i / 8000)))
        for i in range(int(8000 * seconds))
    )


class RecordingChannel(FakeChannel):
    """FakeChannel whose record() takes the silence options and returns `take`."""

    take: Recording = Recording(tone(1.0, 900), StopReason.DIGIT, "5")

    async def record(
        self, max_seconds: float | None = None, stop_digits: str = "#", **options: object
    ) -> Recording:
        self.calls.append(("record", int(max_seconds or 0), stop_digits))
        self._next()
        return self.take


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def driver_for(store: object, channel: FakeChannel, changed: list) -> MenuDriver:
    driver = MenuDriver(
        channel,  # type: ignore[arg-type]
        MailboxAccess(store, directory(), {}),  # type: ignore[arg-type]
        SOUNDS,
        mailbox_changed=lambda m, c: changed.append((m, c)),
    )
    driver.mailbox = OWN
    return driver


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_forward_as_is_copies_the_row_to_each_inbox_and_lights_each_lamp(
    backend: Backend, loop: asyncio.AbstractEventLoop
) -> None:
    async def scenario() -> None:
        async with started_store(backend) as store:
            audio = encode(tone(2.0, 500), "wav")
            _, msg_id, _ = await deposit(store, audio, flag="PRIORITY", duration=2)
            changed: list[tuple[str, str]] = []
            driver = driver_for(store, FakeChannel([]), changed)
            event = await driver.perform(ForwardMessage(0, 0, (box("2000"), box("3000"))))
            assert event == Forwarded(("2000", "3000"), ())
            for mailbox in ("2000", "3000"):
                copy = await store.retrieve("default", mailbox, "INBOX", 0)
                assert copy is not None
                assert copy.recording == audio
                assert (copy.msg_id, copy.flag, copy.duration) == (msg_id, "PRIORITY", 2)
                assert (copy.mailboxuser, copy.mailboxcontext) == (mailbox, "default")
                assert copy.callerid == '"Alice" <5551000>'
            assert changed == [("2000", "default"), ("3000", "default")]
            assert await store.count("default", "1234", "INBOX") == 1  # the original stays

    loop.run_until_complete(scenario())


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_forward_with_an_introduction_puts_it_in_front_and_grows_the_duration(
    backend: Backend, loop: asyncio.AbstractEventLoop
) -> None:
    async def scenario() -> None:
        async with started_store(backend) as store:
            message_pcm = tone(2.0, 500)
            await deposit(store, encode(message_pcm, "wav"), duration=2)
            channel = RecordingChannel([None])
            changed: list[tuple[str, str]] = []
            driver = driver_for(store, channel, changed)
            event = await driver.perform(RecordPrefix(0, 128))
            assert event == PrefixRecorded(1.0, True)
            assert channel.calls[-1] == ("record", 600, ALL_KEYS)
            forward = ForwardMessage(0, 0, (box("2000"),), prepend=True)
            assert await driver.perform(forward) == Forwarded(("2000",), ())
            copy = await store.retrieve("default", "2000", "INBOX", 0)
            assert copy is not None
            pcm = decode(copy.recording, "wav")
            assert pcm == RecordingChannel.take.pcm + message_pcm
            assert copy.duration == 3
            original = await store.retrieve("default", "1234", "INBOX", 0)
            assert original is not None and decode(original.recording, "wav") == message_pcm
            assert changed == [("2000", "default")]

    loop.run_until_complete(scenario())


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_full_recipient_is_skipped_the_others_get_it(
    backend: Backend, loop: asyncio.AbstractEventLoop
) -> None:
    async def scenario() -> None:
        async with started_store(backend) as store:
            await deposit(store)
            await deposit(store, mailbox="2000")
            changed: list[tuple[str, str]] = []
            driver = driver_for(store, FakeChannel([]), changed)
            recipients = (box("2000", maxmsg=1), box("3000"), box("4000", maxmsg=0))
            event = await driver.perform(ForwardMessage(0, 0, recipients))
            assert event == Forwarded(("3000",), ("2000", "4000"))
            assert await store.count("default", "2000", "INBOX") == 1
            assert await store.count("default", "3000", "INBOX") == 1
            assert await store.count("default", "4000", "INBOX") == 0
            assert changed == [("3000", "default")]

    loop.run_until_complete(scenario())


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_an_introduction_ended_by_time_is_dropped_and_a_hang_up_is_hung_up(
    backend: Backend, loop: asyncio.AbstractEventLoop
) -> None:
    async def scenario() -> None:
        async with started_store(backend) as store:
            channel = RecordingChannel([None])
            channel.take = Recording(tone(1.0, 900), StopReason.SILENCE)
            driver = driver_for(store, channel, [])
            assert await driver.perform(RecordPrefix(3, 128)) == PrefixRecorded(1.0, False)
            assert driver.prefix == b""
            channel = RecordingChannel([None])
            channel.take = Recording(b"", StopReason.HANGUP)
            driver = driver_for(store, channel, [])
            assert await driver.perform(RecordPrefix()) == HungUp()

    loop.run_until_complete(scenario())


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_the_recipient_is_confirmed_by_name_else_by_digits(
    backend: Backend, loop: asyncio.AbstractEventLoop
) -> None:
    async def scenario() -> None:
        async with started_store(backend) as store:
            name = tone(0.75, 700)
            await store.save_greeting("default", "2000", "greet", encode(name, "wav"))
            channel = FakeChannel([None, None])
            driver = driver_for(store, channel, [])
            assert await driver.perform(PlayName("2000", "default")) == PromptDone()
            assert channel.calls[-1] == ("play", len(name), "")
            assert await driver.perform(PlayName("3001", "default")) == PromptDone()
            digits = sum(len(SOUNDS.load_pcm(f"digits/{d}")) for d in "3001")
            assert channel.calls[-1] == ("play", digits, "")

    loop.run_until_complete(scenario())


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_leave_message_calls_the_voicemail_hook(
    backend: Backend, loop: asyncio.AbstractEventLoop
) -> None:
    async def scenario() -> None:
        async with started_store(backend) as store:
            asked: list[tuple[object, list]] = []

            async def leave(channel: object, recipients: object) -> str:
                asked.append((channel, list(recipients)))  # type: ignore[call-overload]
                return "SUCCESS"

            channel = FakeChannel([])
            driver = driver_for(store, channel, [])
            driver.leave_message = leave
            event = await driver.perform(LeaveMessage((("2000", "default"),)))
            assert event == MessageLeft("SUCCESS")
            assert asked == [(channel, [("2000", "default")])]
            channel.hung_up = True
            assert await driver.perform(LeaveMessage((("2000", "default"),))) == HungUp()
            driver.leave_message = None
            channel.hung_up = False
            assert await driver.perform(LeaveMessage((("2000", "default"),))) == MessageLeft(
                "FAILED"
            )

    loop.run_until_complete(scenario())
