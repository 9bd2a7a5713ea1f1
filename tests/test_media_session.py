"""RtpSession: send errors never stall a prompt, dtmfmode, and the shared clock's robustness."""

from __future__ import annotations

import asyncio
import logging
import math
import struct
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from channels.channel import StopReason
from channels.media import MediaClock, RtpSession
from channels.rtp import G711, RtpPacket

from .media_peer import Peer, channel_for, negotiated, open_session, until

pytestmark = pytest.mark.timeout(60)

PROMPT = b"\x00\x04" * 160 * 10  # 200 ms


def run(loop_kind: str, scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    if loop_kind == "uvloop":
        loop = uvloop.new_event_loop()
        try:
            loop.run_until_complete(scenario())
        finally:
            loop.close()
    else:
        asyncio.run(scenario())


def media_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "channels.media"]


# -- send errors -----------------------------------------------------------------------


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_prompt_to_an_address_of_the_wrong_family_finishes_and_logs_one_line(
    loop_kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        clock = MediaClock()
        session = await open_session(clock)
        session.configure(negotiated(5004, "::1"))  # an IPv4 socket cannot send there
        session.start()
        try:
            await asyncio.wait_for(session.play(PROMPT), 10)
            assert session.send_errors >= 10
            assert session.tick_failures == 0
            await asyncio.wait_for(session.play(PROMPT), 10)  # and the next prompt too
            assert session in clock
        finally:
            session.close()

    with caplog.at_level(logging.DEBUG, logger="channels.media"):
        run(loop_kind, scenario)
    assert len(media_lines(caplog)) == 1, media_lines(caplog)
    assert "socket error" in media_lines(caplog)[0]


def test_recording_goes_on_while_every_send_fails(caplog: pytest.LogCaptureFixture) -> None:
    """uvloop refuses an IPv4-mapped address on an IPv4 socket, though it is the caller's."""

    async def scenario() -> None:
        caller = Peer()
        session = await open_session(MediaClock())
        session.configure(negotiated(caller.port, "::ffff:127.0.0.1"))
        session.start()
        channel = channel_for(session)
        try:
            recording = asyncio.ensure_future(channel.record(600, "#"))
            prompt = session.play(PROMPT)
            for _ in range(10):
                caller.send_audio(session)
                await asyncio.sleep(0.02)
            await asyncio.wait_for(prompt, 10)
            await until(lambda: session.packets_received == 10)
            caller.send_event(session, 11, 4242)  # '#'
            result = await asyncio.wait_for(recording, 10)
            assert result.reason is StopReason.DIGIT
            assert len(result.pcm) >= 7 * 320  # the jitter buffer may still hold the last 3
            assert session.send_errors >= 5
        finally:
            session.close()
            caller.close()

    with caplog.at_level(logging.INFO, logger="channels.media"):
        run("uvloop", scenario)
    assert len(media_lines(caplog)) == 1, media_lines(caplog)


# -- dtmfmode --------------------------------------------------------------------------


def key_tone(low: float, high: float, seconds: float) -> bytes:
    count = int(seconds * 8000)
    return struct.pack(
        f"<{count}h",
        *(
            int(
                6000
                * (math.sin(2 * math.pi * low * n / 8000) + math.sin(2 * math.pi * high * n / 8000))
            )
            for n in range(count)
        ),
    )


def digits_seen(dtmfmode: str, telephone_event: int | None) -> list[str]:
    """A caller sends an RFC 4733 '5', then '#' as a tone in the audio."""
    digits: list[str] = []

    async def scenario() -> None:
        caller = Peer()
        session = await open_session(MediaClock(), dtmfmode=dtmfmode)
        session.configure(negotiated(caller.port, telephone_event=telephone_event))
        session.on_dtmf = digits.append
        audio = b"\x00\x00" * 800 + key_tone(941, 1477, 0.12) + b"\x00\x00" * 1600
        try:
            caller.send_event(session, 5, 1234)
            for offset in range(0, len(audio), 320):
                caller.send_audio(session, audio[offset : offset + 320])
            frames = len(audio) // 320
            await until(lambda: session.packets_received == frames + 1)
            session.flush_received()
        finally:
            session.close()
            caller.close()

    asyncio.run(scenario())
    return digits


@pytest.mark.parametrize(
    ("dtmfmode", "telephone_event", "expected"),
    [
        ("auto", 101, ["5"]),
        ("auto", None, ["#"]),
        ("rfc2833", 101, ["5"]),
        ("rfc2833", None, []),
        ("inband", 101, ["#"]),
        ("inband", None, ["#"]),
        ("info", 101, []),
        ("info", None, []),
        ("shortinfo", 101, []),
    ],
)
def test_dtmfmode_decides_where_keys_come_from(
    dtmfmode: str, telephone_event: int | None, expected: list[str]
) -> None:
    assert digits_seen(dtmfmode, telephone_event) == expected


def test_unknown_dtmfmode_is_refused() -> None:
    with pytest.raises(ValueError, match="dtmfmode"):
        RtpSession(MediaClock(), dtmfmode="rfc4733")


# -- the shared clock ------------------------------------------------------------------


class Broken(RtpSession):
    def __init__(self, clock: MediaClock, error: BaseException) -> None:
        super().__init__(clock)
        self.error = error

    def tick(self) -> None:
        raise self.error


@pytest.mark.parametrize("error", [RuntimeError("bug"), asyncio.CancelledError()])
def test_one_broken_session_does_not_stop_the_clock_and_is_logged_once(
    error: BaseException, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        clock = MediaClock()
        broken = Broken(clock, error)
        broken.start()
        good = await open_session(clock)
        good.configure(negotiated(5004, "0.0.0.0"))  # on hold: nothing is sent
        good.start()
        try:
            await asyncio.wait_for(good.play(PROMPT), 10)
            await asyncio.wait_for(good.play(PROMPT), 10)
            assert broken.tick_failures >= 10
        finally:
            good.close()
            broken.close()

    with caplog.at_level(logging.INFO, logger="channels.media"):
        asyncio.run(scenario())
    assert [line for line in media_lines(caplog) if "tick failed" in line] == [
        "media tick failed (RTP port 0)"
    ]


def test_a_closed_session_leaves_the_clock() -> None:
    async def scenario() -> None:
        clock = MediaClock()
        session = await open_session(clock)
        session.configure(negotiated(5004, "0.0.0.0"))
        other = await open_session(clock)
        other.configure(negotiated(5004, "0.0.0.0"))
        other.start()
        try:
            session.close()
            session.start()  # too late: a closed session never joins
            assert session not in clock
            clock.add(session)  # even when added behind its back
            await asyncio.wait_for(other.play(PROMPT[:640]), 10)
            assert session not in clock
            other.close()
            assert other not in clock
        finally:
            other.close()

    asyncio.run(scenario())


def test_the_clock_reports_how_late_each_tick_ran() -> None:
    """The media clock lag the metrics show: a loop blocked for 80 ms makes one tick that late."""

    async def scenario() -> list[float]:
        clock = MediaClock()
        lags: list[float] = []
        clock.on_lag = lags.append
        session = await open_session(clock)
        session.configure(negotiated(5004, "0.0.0.0"))
        session.start()
        try:
            await asyncio.sleep(0.2)
            time.sleep(0.08)  # the event loop is held: the next tick runs late
            await asyncio.sleep(0.2)
        finally:
            session.close()
        return lags

    lags = asyncio.run(scenario())
    assert 15 <= len(lags) <= 25  # one a 20 ms tick over about 0.48 s
    assert all(lag >= 0 for lag in lags)
    assert 0.06 <= max(lags) <= 0.2
    assert sorted(lags)[len(lags) // 2] < 0.01  # the other ticks ran on time


# -- what is sent ----------------------------------------------------------------------


def packets_heard(pcm: bytes, ptime: int) -> list[bytes]:
    """The decoded payloads a caller with `ptime` receives for one prompt."""

    async def scenario() -> list[bytes]:
        caller = Peer()
        session = await open_session(MediaClock())
        session.configure(negotiated(caller.port, ptime=ptime))
        session.start()
        try:
            await asyncio.wait_for(session.play(pcm), 10)
            await asyncio.sleep(0.05)
            payloads = []
            while True:
                try:
                    data, _ = caller.sock.recvfrom(2048)
                except BlockingIOError:
                    return payloads
                payloads.append(G711("PCMU").decode(RtpPacket.parse(data).payload))
        finally:
            session.close()
            caller.close()

    return asyncio.run(scenario())


@pytest.mark.parametrize(("ptime", "frames_per_packet"), [(20, [1] * 8), (60, [3, 3, 2])])
def test_a_prompt_is_sent_whole_in_packets_of_the_ptime_its_end_padded_with_silence(
    ptime: int, frames_per_packet: list[int]
) -> None:
    samples = [(i * 37) % 2000 - 1000 for i in range(160 * 7 + 80)]  # 7.5 frames
    pcm = struct.pack(f"<{len(samples)}h", *samples)
    heard = packets_heard(pcm, ptime)
    assert [len(p) // 320 for p in heard] == frames_per_packet
    pcmu = G711("PCMU")
    assert b"".join(heard) == pcmu.decode(pcmu.encode(pcm)) + b"\x00\x00" * 80
