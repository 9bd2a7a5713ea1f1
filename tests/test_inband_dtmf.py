"""In-band DTMF: keypad tones in the audio are reported once per press; speech and tones are not."""

from __future__ import annotations

import math
import random
import struct
import time
import warnings
import wave
from pathlib import Path

import pytest

from channels.inband_dtmf import COLUMN_FREQUENCIES, KEYPAD, ROW_FREQUENCIES, InbandDtmfDetector

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

RATE = 8000
FRAME_BYTES = 320  # 20 ms
ALL_KEYS = "".join(KEYPAD)
ASTERISK_SOUNDS = Path("/usr/share/asterisk/sounds/en")


def pack(samples: list[float]) -> bytes:
    return struct.pack(f"<{len(samples)}h", *(max(-32768, min(32767, round(s))) for s in samples))


def key_tone(
    key: str, ms: float, dbfs: float = -10.0, *, high_db: float = 0.0, deviation: float = 0.0
) -> bytes:
    """Both tones of a key, each at `dbfs` (peak, relative to a full-scale sine)."""
    row = next(i for i, keys in enumerate(KEYPAD) if key in keys)
    low = ROW_FREQUENCIES[row] * (1 + deviation)
    high = COLUMN_FREQUENCIES[KEYPAD[row].index(key)] * (1 + deviation)
    amplitude = 32767 * 10 ** (dbfs / 20)
    high_amplitude = amplitude * 10 ** (high_db / 20)
    count = round(ms * RATE / 1000)
    return pack(
        [
            amplitude * math.sin(2 * math.pi * low * n / RATE)
            + high_amplitude * math.sin(2 * math.pi * high * n / RATE + 1.0)
            for n in range(count)
        ]
    )


def silence(ms: float) -> bytes:
    return b"\x00\x00" * round(ms * RATE / 1000)


def ulaw_round_trip(pcm: bytes) -> bytes:
    return audioop.ulaw2lin(audioop.lin2ulaw(pcm, 2), 2)


def alaw_round_trip(pcm: bytes) -> bytes:
    return audioop.alaw2lin(audioop.lin2alaw(pcm, 2), 2)


def detect(pcm: bytes, chunk: int = FRAME_BYTES) -> str:
    detector = InbandDtmfDetector()
    keys: list[str] = []
    for start in range(0, len(pcm), chunk):
        keys.extend(detector.feed(pcm[start : start + chunk]))
    return "".join(keys)


def white_noise(ms: float, rms: float, seed: int = 7) -> bytes:
    rng = random.Random(seed)
    return pack([rng.gauss(0, rms) for _ in range(round(ms * RATE / 1000))])


@pytest.mark.parametrize("dbfs", [-10.0, -25.0])
@pytest.mark.parametrize("codec", ["slin", "ulaw", "alaw"])
def test_all_sixteen_keys_are_detected(dbfs: float, codec: str) -> None:
    pcm = silence(100) + b"".join(key_tone(k, 80, dbfs) + silence(80) for k in ALL_KEYS)
    if codec == "ulaw":
        pcm = ulaw_round_trip(pcm)
    elif codec == "alaw":
        pcm = alaw_round_trip(pcm)
    assert detect(pcm) == ALL_KEYS


def test_key_held_200_ms_is_reported_once() -> None:
    assert detect(silence(40) + key_tone("5", 200) + silence(100)) == "5"


def test_key_held_two_seconds_is_reported_once() -> None:
    assert detect(ulaw_round_trip(key_tone("#", 2000, -20) + silence(100))) == "#"


def test_same_key_twice_with_60_ms_silence_is_reported_twice() -> None:
    pcm = key_tone("7", 100) + silence(60) + key_tone("7", 100) + silence(60)
    assert detect(ulaw_round_trip(pcm)) == "77"


def test_a_20_ms_dropout_does_not_split_a_press() -> None:
    pcm = key_tone("3", 100) + silence(20) + key_tone("3", 100) + silence(60)
    assert detect(pcm) == "3"


def test_different_keys_back_to_back_are_both_reported() -> None:
    assert detect(key_tone("1", 80) + key_tone("2", 80) + silence(40)) == "12"


@pytest.mark.parametrize("offset_samples", range(0, 160, 23))
def test_30_ms_blip_is_ignored_and_40_ms_tone_is_reported(offset_samples: int) -> None:
    lead = silence(100) + b"\x00\x00" * offset_samples
    assert detect(lead + key_tone("9", 30) + silence(200)) == ""
    assert detect(lead + key_tone("9", 40) + silence(200)) == "9"


def test_key_is_reported_40_ms_after_the_tone_starts() -> None:
    detector = InbandDtmfDetector()
    audio = key_tone("0", 200)
    frames_until_report = next(
        i for i in range(10) if detector.feed(audio[i * FRAME_BYTES : (i + 1) * FRAME_BYTES])
    )
    assert frames_until_report == 1  # 40 ms: the end of the second 20 ms frame


def test_any_chunk_size_gives_the_same_keys() -> None:
    pcm = b"".join(key_tone(k, 60, -18) + silence(60) for k in "159D")
    assert detect(pcm, chunk=7) == detect(pcm, chunk=4096) == "159D"


def test_keys_survive_noise_at_15_db_snr() -> None:
    pcm = b"".join(key_tone(k, 80, -20) + silence(80) for k in ALL_KEYS)
    tone_power = 2 * (32767 * 10 ** (-20 / 20)) ** 2 / 2
    noise = white_noise(len(pcm) / 2 / RATE * 1000, math.sqrt(tone_power / 10**1.5))
    assert detect(audioop.add(pcm, noise, 2)) == ALL_KEYS


def test_twist_within_limits_is_accepted() -> None:
    assert detect(key_tone("6", 80, -15, high_db=3) + silence(60)) == "6"
    assert detect(key_tone("6", 80, -15, high_db=-6) + silence(60)) == "6"
    assert detect(key_tone("6", 80, -15, high_db=-12) + silence(60)) == ""


def test_off_frequency_tones_accepted_at_1_5_percent_rejected_at_3_5() -> None:
    for deviation in (-0.015, 0.015):
        assert detect(key_tone("D", 80, -15, deviation=deviation) + silence(60)) == "D"
    for deviation in (-0.035, 0.035):
        assert detect(key_tone("D", 80, -15, deviation=deviation) + silence(60)) == ""


def test_1000_hz_tone_reports_nothing() -> None:
    tone = pack([16000 * math.sin(2 * math.pi * 1000 * n / RATE) for n in range(RATE)])
    assert detect(tone) == ""


def test_single_dtmf_frequency_reports_nothing() -> None:
    for frequency in ROW_FREQUENCIES + COLUMN_FREQUENCIES:
        tone = pack([12000 * math.sin(2 * math.pi * frequency * n / RATE) for n in range(1600)])
        assert detect(tone) == "", frequency


def test_white_noise_reports_nothing() -> None:
    assert detect(white_noise(2000, 6000)) == ""


def test_chirp_across_the_voice_band_reports_nothing() -> None:
    samples, phase = [], 0.0
    for n in range(2 * RATE):
        phase += 2 * math.pi * (300 + 3100 * n / (2 * RATE)) / RATE
        samples.append(12000 * math.sin(phase))
    assert detect(pack(samples)) == ""


@pytest.mark.skipif(not ASTERISK_SOUNDS.is_dir(), reason="asterisk-core-sounds-en not installed")
def test_asterisk_voice_prompts_report_nothing() -> None:
    """Talk-off: over twenty minutes of recorded speech (and tt-monkeys) without a false key."""
    checked_seconds = 0.0
    false_keys: dict[str, str] = {}
    for path in sorted(ASTERISK_SOUNDS.rglob("*.wav")):
        with wave.open(str(path)) as wav:
            if (wav.getframerate(), wav.getsampwidth(), wav.getnchannels()) != (RATE, 2, 1):
                continue
            pcm = wav.readframes(wav.getnframes())
        checked_seconds += len(pcm) / 2 / RATE
        keys = detect(pcm, chunk=len(pcm) or 1)
        if keys:
            false_keys[path.name] = keys
    assert checked_seconds > 600
    assert false_keys == {}


def test_a_20_ms_frame_takes_well_under_a_millisecond() -> None:
    pcm = ulaw_round_trip(
        b"".join(key_tone(k, 100, -20) + white_noise(100, 3000) for k in ALL_KEYS)
    )
    frames = [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]
    detector = InbandDtmfDetector()
    started = time.process_time()
    for frame in frames:
        detector.feed(frame)
    per_frame = (time.process_time() - started) / len(frames)
    assert per_frame < 0.0005
