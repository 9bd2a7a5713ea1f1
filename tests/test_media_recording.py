"""Recordings: wall-clock limits, bounded silence for lost packets, the on_chunk hook."""

from __future__ import annotations

import asyncio

import pytest

import channels.channel as channel_module
from channels.channel import Recording, StopReason
from channels.media import MediaClock
from channels.recording import RecordingBuffer

from .media_peer import Peer, channel_for, negotiated, open_session, until

pytestmark = pytest.mark.timeout(60)

FRAME = b"\x10\x00" * 160  # 20 ms of quiet sound, not silence


# -- the pure buffer -------------------------------------------------------------------


def test_gap_becomes_silence_when_the_clock_allows_it() -> None:
    buffer = RecordingBuffer(10, started=100.0)
    buffer.add(FRAME, 0, 100.02)
    buffer.add(FRAME, 320, 100.08)  # two packets lost; 80 ms have passed
    assert buffer.pcm == FRAME + b"\x00" * 640 + FRAME
    assert buffer.silence_samples == 320


def test_silence_never_makes_the_recording_longer_than_the_call() -> None:
    buffer = RecordingBuffer(600, started=0.0)
    now = 0.0
    for _ in range(250):  # 5 s of packets, each claiming 1.9 s were lost before it
        now += 0.02
        buffer.add(FRAME, 15200, now)
        assert buffer.samples <= round(now * 8000) + 160
    assert buffer.samples <= 5.0 * 8000 + 160
    assert buffer.samples >= 250 * 160  # the audio itself is all there


def test_total_silence_is_bounded_by_the_limit_and_the_recording_is_cut_at_it() -> None:
    chunks: list[bytes] = []
    buffer = RecordingBuffer(0.1, started=0.0, on_chunk=chunks.append)
    buffer.add(FRAME, 0, 0.02)
    buffer.add(FRAME, 16000, 10.0)  # plenty of wall clock, but the limit is 100 ms
    assert buffer.full
    assert buffer.samples == 800
    buffer.add(FRAME, 0, 10.02)  # nothing after the limit
    assert buffer.samples == 800
    assert b"".join(chunks) == buffer.pcm
    # The packet after the gap lies past the limit: silence up to it, the audio cut off.
    assert buffer.pcm == FRAME + b"\x00" * (1600 - len(FRAME))


def test_on_chunk_sees_every_piece_in_order_including_silence() -> None:
    chunks: list[bytes] = []
    buffer = RecordingBuffer(1, started=0.0, on_chunk=chunks.append)
    tone = b"\x20\x00" * 160
    buffer.add(FRAME, 0, 0.02)
    buffer.add(tone, 160, 0.06)
    assert chunks == [FRAME, b"\x00" * 320, tone]
    assert b"".join(chunks) == buffer.pcm


def test_a_failing_hook_does_not_lose_the_recording() -> None:
    def broken(_pcm: bytes) -> None:
        raise OSError("disk full")

    buffer = RecordingBuffer(1, started=0.0, on_chunk=broken)
    buffer.add(FRAME, 0, 0.02)
    buffer.add(FRAME, 0, 0.04)
    assert buffer.pcm == FRAME * 2


# -- Channel.record over a real socket -------------------------------------------------


async def record_with(peer_sends, max_seconds, **options) -> tuple[Recording, float]:  # noqa: ANN001
    """Record on a real RTP session while `peer_sends(peer, session)` runs."""
    peer = Peer()
    session = await open_session(MediaClock())
    session.configure(negotiated(peer.port))
    session.start()
    channel = channel_for(session)
    loop = asyncio.get_running_loop()
    try:
        started = loop.time()
        recording_task = asyncio.ensure_future(channel.record(max_seconds, "#", **options))
        await peer_sends(peer, session)
        recording = await asyncio.wait_for(recording_task, 30)
        return recording, loop.time() - started
    finally:
        session.close()
        peer.close()


async def nothing(_peer: Peer, _session: object) -> None:
    return None


def test_recording_without_rtp_stops_at_the_limit() -> None:
    recording, elapsed = asyncio.run(record_with(nothing, 0.3))
    assert recording.reason is StopReason.MAX_DURATION
    assert recording.pcm == b""
    assert elapsed >= 0.3


def test_no_limit_means_the_hard_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(channel_module, "HARD_RECORD_LIMIT", 0.2)
    recording, _elapsed = asyncio.run(record_with(nothing, None))
    assert recording.reason is StopReason.MAX_DURATION


def test_recording_with_rtp_is_cut_at_the_limit_and_the_hook_sees_it_all() -> None:
    chunks: list[bytes] = []

    async def burst(peer: Peer, session: object) -> None:
        await asyncio.sleep(0.05)
        for _ in range(50):  # a second of audio, sent at once
            peer.send_audio(session)  # type: ignore[arg-type]

    recording, _ = asyncio.run(record_with(burst, 0.5, on_chunk=chunks.append))
    assert recording.reason is StopReason.MAX_DURATION
    assert len(recording.pcm) == 0.5 * 8000 * 2
    assert b"".join(chunks) == recording.pcm


def test_forged_timestamp_jumps_do_not_stretch_the_recording() -> None:
    chunks: list[bytes] = []
    sent: list[int] = []

    async def hostile(peer: Peer, session: object) -> None:
        for _ in range(25):  # 0.5 s of calling, each packet claiming 1.9 s lost before it
            peer.send_audio(session, skip_samples=15200)  # type: ignore[arg-type]
            await asyncio.sleep(0.02)
        sent.append(1)
        peer.send_event(session, 11, 999)  # type: ignore[arg-type]  # '#': stop

    recording, elapsed = asyncio.run(record_with(hostile, 600, on_chunk=chunks.append))
    assert recording.reason is StopReason.DIGIT
    assert recording.seconds <= elapsed + 0.02
    assert recording.seconds < 2  # 47 s without the wall-clock bound
    assert b"".join(chunks) == recording.pcm


def test_lost_packets_are_still_silence_in_a_real_recording() -> None:
    async def lossy(peer: Peer, session: object) -> None:
        for index in range(10):
            if index in (4, 5):
                peer.timestamp += 160  # lost on the way
                peer.sequence += 1
            else:
                peer.send_audio(session)  # type: ignore[arg-type]
            await asyncio.sleep(0.02)
        await until(lambda: session.packets_received == 8)  # type: ignore[attr-defined]
        peer.send_event(session, 11, 999)  # type: ignore[arg-type]

    recording, _ = asyncio.run(record_with(lossy, 600))
    assert recording.reason is StopReason.DIGIT
    # The jitter buffer gives up on the two after three later packets; they become silence.
    frame = len(FRAME)
    assert recording.pcm[4 * frame : 6 * frame] == b"\x00" * 2 * frame
    assert len(recording.pcm) == 10 * frame


def test_audio_just_before_the_stop_key_is_kept() -> None:
    """A frame the jitter buffer still holds when '#' arrives was said before it: here the
    last one, waiting behind a lost frame, must still be in the recording."""

    async def quick_key(peer: Peer, session: object) -> None:
        for index in range(10):
            if index == 8:
                peer.timestamp += 160  # lost on the way: the buffer waits for it
                peer.sequence += 1
            else:
                peer.send_audio(session)  # type: ignore[arg-type]
            await asyncio.sleep(0.02)
        await until(lambda: session.packets_received == 9)  # type: ignore[attr-defined]
        peer.send_event(session, 11, 999)  # type: ignore[arg-type]  # '#' right after

    recording, _ = asyncio.run(record_with(quick_key, 600))
    assert recording.reason is StopReason.DIGIT
    assert len(recording.pcm) == 10 * len(FRAME)


def test_audio_flooded_faster_than_real_time_is_not_recorded() -> None:
    buffer = RecordingBuffer(600, started=0.0)
    for _ in range(500):  # 10 s of audio within the first 100 ms
        buffer.add(FRAME, 0, 0.1)
    assert buffer.samples <= (0.1 + 2.0) * 8000
    assert buffer.dropped_samples == 500 * 160 - buffer.samples
    buffer.add(FRAME, 0, 5.0)  # in real time again: recorded
    assert buffer.pcm.endswith(FRAME) and buffer.dropped_samples < 500 * 160 - 2 * 8000


def test_a_flooding_sender_does_not_make_a_long_recording() -> None:
    async def flood(peer: Peer, session: object) -> None:
        for _burst in range(5):  # 60 s of consecutive audio within about half a second
            for _ in range(150):
                peer.send_audio(session)  # type: ignore[arg-type]
            await asyncio.sleep(0.1)
        peer.send_event(session, 11, 999)  # type: ignore[arg-type]

    recording, elapsed = asyncio.run(record_with(flood, 600))
    assert recording.reason is StopReason.DIGIT
    assert recording.seconds <= elapsed + 2.0
