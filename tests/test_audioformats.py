"""Stored audio formats: what Asterisk would write for each `format=`, and back to PCM."""

from __future__ import annotations

import io
import math
import struct
import subprocess
import warnings
import wave
from pathlib import Path

import pytest

from storage.audioformats import (
    FORMATS,
    decode,
    detect_format,
    encode,
    extension,
    stored_format,
)
from tests.audio import best_correlation, test_signal

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

pytestmark = pytest.mark.timeout(60)

SPEECH = Path("/usr/share/asterisk/sounds/en/vm-intro.wav")  # asterisk-core-sounds-en-wav


def tones(samples: int) -> bytes:
    """440 Hz + 1250 Hz, a voice-band signal a speech codec reproduces well."""
    return b"".join(
        struct.pack(
            "<h",
            round(
                6000 * math.sin(2 * math.pi * 440 * i / 8000)
                + 3000 * math.sin(2 * math.pi * 1250 * i / 8000)
            ),
        )
        for i in range(samples)
    )


def wav_file(pcm: bytes, *, width: int = 2, rate: int = 8000, channels: int = 1) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(width)
        writer.setframerate(rate)
        writer.writeframes(pcm)
    return buffer.getvalue()


def sox_convert(data: bytes, *output: str) -> bytes:
    done = subprocess.run(
        ["sox", "-D", "-t", "wav", "-", *output, "-t", "wav", "-"],
        input=data,
        capture_output=True,
        timeout=20,
        check=True,
    )
    return done.stdout


def energy_ratio(a: bytes, b: bytes) -> float:
    return audioop.rms(b, 2) / audioop.rms(a, 2)


# --- names -----------------------------------------------------------------------------------


def test_file_extensions_are_asterisks() -> None:
    assert [extension(f) for f in FORMATS] == ["wav", "WAV", "gsm", "ulaw", "alaw"]
    with pytest.raises(ValueError, match="unknown audio format 'mp3'"):
        extension("mp3")


def test_the_first_format_of_the_format_option_is_the_stored_one() -> None:
    assert stored_format("wav49|gsm|wav") == "wav49"
    assert stored_format("gsm|wav") == "gsm"
    assert stored_format("wav") == "wav"
    with pytest.raises(ValueError, match="unknown audio format"):
        stored_format("g729|wav")


# --- what is stored --------------------------------------------------------------------------


def test_wav_is_a_44_byte_header_8khz_16bit_mono_pcm_wav() -> None:
    pcm = test_signal(0.5)
    data = encode(pcm, "wav")
    assert len(data) == 44 + len(pcm)
    assert struct.unpack("<4sI4s4sIHHIIHH4sI", data[:44]) == (
        b"RIFF",
        36 + len(pcm),
        b"WAVE",
        b"fmt ",
        16,
        1,  # PCM
        1,  # mono
        8000,
        16000,
        2,
        16,
        b"data",
        len(pcm),
    )
    assert data[44:] == pcm


def test_wav49_header_is_the_one_asterisk_writes() -> None:
    pcm = tones(8000 - 100)  # 24.7 blocks of 320 samples: 25 blocks, an odd number
    data = encode(pcm, "wav49")
    blocks = 25
    datalen = blocks * 65 + 1  # padded to an even length, as format_wav_gsm does
    assert len(data) == 60 + datalen
    assert struct.unpack("<4sI4s4sIHHIIHHHH4sII4sI", data[:60]) == (
        b"RIFF",
        52 + datalen,
        b"WAVE",
        b"fmt ",
        20,
        0x31,  # WAVE_FORMAT_GSM610
        1,
        8000,
        1625,  # bytes per second
        65,  # block align
        0,  # bits per sample
        2,  # extra format bytes
        320,  # samples per block
        b"fact",
        4,
        blocks * 320,
        b"data",
        datalen,
    )
    assert data[-1:] == b"\0"


def test_gsm_is_raw_33_byte_frames_with_the_gsm_signature() -> None:
    data = encode(tones(8000), "gsm")
    assert len(data) == 50 * 33
    assert all(byte >> 4 == 0xD for byte in data[::33])


def test_g711_is_one_byte_per_sample_without_header() -> None:
    pcm = tones(800)
    assert encode(pcm, "ulaw") == audioop.lin2ulaw(pcm, 2)
    assert encode(pcm, "alaw") == audioop.lin2alaw(pcm, 2)
    assert len(encode(pcm, "ulaw")) == len(encode(pcm, "alaw")) == 800


def test_encoding_is_repeatable() -> None:
    pcm = test_signal(0.3)
    for fmt in FORMATS:
        assert encode(pcm, fmt) == encode(pcm, fmt), fmt


# --- round trips -----------------------------------------------------------------------------


def test_wav_round_trip_is_exact() -> None:
    pcm = test_signal(1.3)
    assert decode(encode(pcm, "wav"), "wav") == pcm
    assert decode(encode(b"", "wav"), "wav") == b""


def test_g711_round_trips_keep_every_code_and_the_length() -> None:
    codes = bytes(range(256))
    assert encode(decode(codes, "alaw"), "alaw") == codes
    # u-law has two zeros (0x7F is -0, 0xFF is +0); encoding zero gives 0xFF.
    assert encode(decode(codes, "ulaw"), "ulaw") == codes.replace(b"\x7f", b"\xff")
    pcm = test_signal(1.0)
    for fmt in ("ulaw", "alaw"):
        back = decode(encode(pcm, fmt), fmt)
        assert len(back) == len(pcm)
        assert best_correlation(pcm, back, 10) == (pytest.approx(1.0, abs=0.001), 0)


@pytest.mark.parametrize("fmt", ["gsm", "wav49"])
def test_gsm_round_trip_keeps_length_to_the_frame_and_sounds_like_the_original(fmt: str) -> None:
    frame = 160 if fmt == "gsm" else 320
    for samples in (8000, 8000 + 1, 4000 + 100):
        pcm = tones(samples)
        back = decode(encode(pcm, fmt), fmt)
        assert len(back) // 2 == math.ceil(samples / frame) * frame
        correlation, lag = best_correlation(pcm, back[: len(pcm)], 200)
        assert lag == 0
        assert correlation > 0.95
        assert 0.7 < energy_ratio(pcm, back[: len(pcm)]) < 1.3


@pytest.mark.skipif(not SPEECH.exists(), reason="asterisk-core-sounds-en-wav not installed")
def test_recorded_speech_survives_gsm_and_wav49() -> None:
    pcm = decode(SPEECH.read_bytes(), "wav")
    for fmt in ("gsm", "wav49"):
        back = decode(encode(pcm, fmt), fmt)[: len(pcm)]
        correlation, lag = best_correlation(pcm, back, 200)
        assert (lag, correlation > 0.95) == (0, True), fmt
        assert 0.7 < energy_ratio(pcm, back) < 1.3


def test_wav49_carries_the_same_gsm_frames_as_gsm() -> None:
    pcm = tones(3200)
    assert decode(encode(pcm, "wav49"), "wav49") == decode(encode(pcm, "gsm"), "gsm")


def test_a_trailing_partial_gsm_frame_or_block_is_ignored() -> None:
    gsm = encode(tones(1600), "gsm")
    assert decode(gsm + gsm[:10], "gsm") == decode(gsm, "gsm")
    wav49 = encode(tones(1600), "wav49")  # 5 blocks, padded to 326 bytes of data
    assert len(decode(wav49, "wav49")) == 5 * 320 * 2
    streamed = wav49[:56] + b"\xff\xff\xff\xff" + wav49[60:]  # data length never filled in
    assert decode(streamed, "wav49") == decode(wav49, "wav49")


# --- reading other WAVs ----------------------------------------------------------------------


def test_8khz_wavs_of_other_widths_and_stereo_are_read() -> None:
    pcm = test_signal(0.5)
    as_24_bit = sox_convert(wav_file(pcm), "-b", "24")  # WAVE_FORMAT_EXTENSIBLE
    as_32_bit = sox_convert(wav_file(pcm), "-b", "32")
    assert decode(as_24_bit, "wav") == pcm
    assert decode(as_32_bit, "wav") == pcm
    as_8_bit = wav_file(audioop.bias(audioop.lin2lin(pcm, 2, 1), 1, 128), width=1)
    assert decode(as_8_bit, "wav") == audioop.lin2lin(audioop.lin2lin(pcm, 2, 1), 1, 2)
    stereo = wav_file(audioop.tostereo(pcm, 2, 1, 1), channels=2)
    assert decode(stereo, "wav") == pcm


def test_wavs_at_other_rates_or_not_pcm_are_refused_clearly() -> None:
    pcm = test_signal(0.2)
    with pytest.raises(ValueError, match="WAV is 16000 Hz; voicemail audio must be 8000 Hz"):
        decode(wav_file(pcm, rate=16000), "wav")
    with pytest.raises(ValueError, match=r"0x0031 \(that is wav49"):
        decode(encode(pcm, "wav49"), "wav")
    with pytest.raises(ValueError, match="not a wav49"):
        decode(encode(pcm, "wav"), "wav49")
    with pytest.raises(ValueError, match="not a WAV file"):
        decode(b"hello", "wav")
    with pytest.raises(ValueError, match="16-bit samples"):
        encode(b"\x00\x01\x02", "wav")


# --- detection -------------------------------------------------------------------------------


def test_detect_format_tells_wav_wav49_and_gsm_apart() -> None:
    pcm = tones(1600)
    assert detect_format(encode(pcm, "wav")) == "wav"
    assert detect_format(sox_convert(wav_file(pcm), "-b", "24")) == "wav"
    assert detect_format(encode(pcm, "wav49")) == "wav49"
    assert detect_format(encode(pcm, "gsm")) == "gsm"
    assert detect_format(encode(pcm, "ulaw")) is None
    assert detect_format(encode(pcm, "alaw")) is None
    assert detect_format(b"") is None
    assert detect_format(b"RIFF\x00\x00\x00\x00WAVE") is None
    assert detect_format(b"\xd0" + b"\x00" * 32 + b"\x10" + b"\x00" * 32) is None
