"""maxsilence: the pure detector and trimming, and Channel.record stopping on silence."""

from __future__ import annotations

import asyncio
import struct
import warnings

import pytest

from channels.channel import StopReason
from channels.silence import SilenceDetector, frame_energy, trim_trailing_silence

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

from .media_peer import Peer
from .test_media_recording import record_with

pytestmark = pytest.mark.timeout(60)

LOUD = struct.pack("<160h", *([3000, -3000] * 80))  # 20 ms, mean |x| = 3000
QUIET = struct.pack("<160h", *([100, -100] * 80))  # 20 ms, mean |x| = 100 (< 128)
EDGE = struct.pack("<160h", *([128, -128] * 80))  # exactly the threshold: not silent


def test_frame_energy_is_the_mean_absolute_sample() -> None:
    assert frame_energy(LOUD) == 3000
    assert frame_energy(QUIET) == 100
    assert frame_energy(b"") == 0


def test_silent_frames_accumulate_and_sound_resets_the_run() -> None:
    detector = SilenceDetector(128)
    detector.feed(QUIET * 10)
    assert detector.silent_ms == 200
    detector.feed(EDGE)
    assert detector.silent_ms == 0  # at the threshold is not below it
    detector.feed(QUIET * 3 + LOUD + QUIET)
    assert detector.silent_ms == 20


def test_pieces_of_any_size_make_whole_frames() -> None:
    detector = SilenceDetector(128)
    data = QUIET * 5
    for start in range(0, len(data), 37):
        detector.feed(data[start : start + 37])
    assert detector.silent_ms == 100


def test_trailing_silence_keeps_200_ms() -> None:
    pcm = LOUD * 10 + QUIET * 50  # 200 ms of speech, 1 s of silence
    trimmed = trim_trailing_silence(pcm, 50 * 160)
    assert trimmed == LOUD * 10 + QUIET * 10
    assert trim_trailing_silence(pcm, 5 * 160) == pcm  # less than 200 ms: nothing cut


async def talk_then_quiet(peer: Peer, session: object) -> None:
    for index in range(150):  # 1 s of tone then 2 s of near silence, in real time
        peer.send_audio(session, LOUD if index < 50 else QUIET)  # type: ignore[arg-type]
        await asyncio.sleep(0.02)


def test_record_stops_after_max_silence_and_trims_it() -> None:
    recording, _ = asyncio.run(record_with(talk_then_quiet, 10, max_silence=1))
    assert recording.reason is StopReason.SILENCE
    # 1 s of tone, then the silence trimmed to 200 ms.
    frames = [recording.pcm[i : i + 320] for i in range(0, len(recording.pcm), 320)]
    assert [frame_energy(f) > 1000 for f in frames] == [True] * 50 + [False] * 10
    assert abs(recording.seconds - 1.2) <= 0.021, recording.seconds


def test_record_without_max_silence_is_unchanged() -> None:
    recording, _ = asyncio.run(record_with(talk_then_quiet, 1.5))
    assert recording.reason is StopReason.MAX_DURATION


def test_a_high_threshold_hears_the_tone_as_silence() -> None:
    recording, _ = asyncio.run(
        record_with(talk_then_quiet, 10, max_silence=0.5, silence_threshold=5000)
    )
    assert recording.reason is StopReason.SILENCE
    assert recording.seconds <= 0.3


def test_gain_is_applied_and_clipped() -> None:
    async def one_second(peer: Peer, session: object) -> None:
        for _ in range(10):
            peer.send_audio(session, LOUD)  # type: ignore[arg-type]
            await asyncio.sleep(0.02)

    recording, _ = asyncio.run(record_with(one_second, 0.5, gain_db=30))
    # 3000 (about 3004 after G.711) times 31.6 clips at the 16-bit limit.
    peak = audioop.max(recording.pcm[: 10 * 320], 2)
    assert peak in (32767, 32768)  # max() of |x|: -32768 counts as 32768
    quiet, _ = asyncio.run(record_with(one_second, 0.5, gain_db=-6))
    assert 1300 < audioop.max(quiet.pcm[: 10 * 320], 2) < 1600
