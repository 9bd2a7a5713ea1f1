"""The audio tooling the sipp end-to-end tests rely on sends and measures what we think it does."""

from __future__ import annotations

import io
import struct
import wave
from pathlib import Path

import pytest

from tests.audio import (
    DATA_DIR,
    PAYLOAD_PCMA,
    PAYLOAD_PCMU,
    best_correlation,
    g711_decode,
    g711_encode,
    pcap_pcm,
    read_rtp_pcap,
    regenerate,
    test_signal,
    wav_pcm,
    write_rtp_pcap,
)

FRAME_BYTES = 320  # 20 ms of 8 kHz 16-bit mono


def _samples(pcm: bytes) -> list[int]:
    return list(struct.unpack(f"<{len(pcm) // 2}h", pcm))


def _wav(tag: int, channels: int, rate: int, bits: int, frames: bytes, extra: bytes = b"") -> bytes:
    """Build a WAV by hand so formats the wave module cannot write (GSM, A-law) can be tried."""
    align = channels * bits // 8
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * align, align, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + extra
    body += b"data" + struct.pack("<I", len(frames)) + frames
    return b"RIFF" + struct.pack("<I", len(body)) + body


def test_signal_is_deterministic_and_never_silent() -> None:
    pcm = test_signal(5.0)
    assert len(pcm) == 5 * 8000 * 2
    assert pcm == test_signal(5.0, seed=1)
    assert pcm != test_signal(5.0, seed=2)
    samples = _samples(pcm)
    rms = (sum(s * s for s in samples) / len(samples)) ** 0.5
    assert 2000 < rms < 8000, "moderate level: far from both silence and clipping"
    assert max(abs(s) for s in samples) < 32000
    for start in range(0, len(samples), 160):  # every 20 ms frame carries sound
        assert max(abs(s) for s in samples[start : start + 160]) > 1000


@pytest.mark.parametrize("payload_type", [PAYLOAD_PCMU, PAYLOAD_PCMA])
def test_pcap_round_trip_gives_back_payloads_and_timing(tmp_path: Path, payload_type: int) -> None:
    pcm = test_signal(1.0)
    path = tmp_path / "signal.pcap"
    assert write_rtp_pcap(path, pcm, payload_type, ssrc=0xCAFE0001, seq0=65530, ts0=7) == 50

    packets = read_rtp_pcap(path)
    assert len(packets) == 50
    stamps = [stamp for stamp, _payload in packets]
    assert all(abs(stamp - stamps[0] - 0.020 * i) < 1e-6 for i, stamp in enumerate(stamps))
    encoded = g711_encode(pcm, payload_type)
    for index, (_stamp, payload) in enumerate(packets):
        first, second, seq, timestamp, ssrc = struct.unpack("!BBHII", payload[:12])
        assert first == 0x80  # RTP version 2, no padding, extension or CSRC
        assert second >> 7 == (1 if index == 0 else 0), "marker bit on the first packet only"
        assert second & 0x7F == payload_type
        assert seq == (65530 + index) & 0xFFFF  # wraps like a real stream
        assert timestamp == 7 + 160 * index
        assert ssrc == 0xCAFE0001
        assert payload[12:] == encoded[index * 160 : (index + 1) * 160]
    assert pcap_pcm(path) == (payload_type, g711_decode(encoded, payload_type))


def test_pcap_file_has_valid_libpcap_ethernet_ipv4_udp_framing(tmp_path: Path) -> None:
    path = tmp_path / "signal.pcap"
    write_rtp_pcap(path, test_signal(0.1), PAYLOAD_PCMU, src_port=6000, dst_port=6002)
    data = path.read_bytes()
    magic, major, minor, _zone, _sigfigs, _snaplen, linktype = struct.unpack("<IHHiIII", data[:24])
    assert (magic, major, minor, linktype) == (0xA1B2C3D4, 2, 4, 1)
    _sec, _usec, caplen, origlen = struct.unpack("<IIII", data[24:40])
    frame = data[40 : 40 + caplen]
    assert caplen == origlen == len(frame) == 14 + 20 + 8 + 12 + 160
    assert frame[12:14] == b"\x08\x00"
    ip = frame[14:34]
    assert ip[0] == 0x45 and ip[9] == 17
    assert struct.unpack("!H", ip[2:4])[0] == 20 + 8 + 172
    words = sum(struct.unpack("!10H", ip))
    assert (words & 0xFFFF) + (words >> 16) == 0xFFFF, "IPv4 header checksum verifies"
    src_port, dst_port, udp_length, checksum = struct.unpack("!HHHH", frame[34:42])
    assert (src_port, dst_port, udp_length, checksum) == (6000, 6002, 8 + 172, 0)


def test_pcap_writer_refuses_partial_frames_and_non_g711(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="multiple of 320"):
        write_rtp_pcap(tmp_path / "x.pcap", test_signal(1.0) + b"\0\0", PAYLOAD_PCMU)
    with pytest.raises(ValueError, match="not G.711"):
        write_rtp_pcap(tmp_path / "x.pcap", b"\0" * FRAME_BYTES, 18)
    assert not (tmp_path / "x.pcap").exists()


def test_committed_pcaps_are_what_regenerate_writes(tmp_path: Path) -> None:
    made = regenerate(tmp_path)
    assert [path.name for path in made] == [
        "signal5s_pcmu.pcap",
        "signal5s_pcma.pcap",
        "signal3s_pcmu.pcap",
    ]
    for path in made:
        assert path.read_bytes() == (DATA_DIR / path.name).read_bytes(), path.name


@pytest.mark.parametrize(
    ("name", "payload_type", "seconds"),
    [
        ("signal5s_pcmu.pcap", PAYLOAD_PCMU, 5.0),
        ("signal5s_pcma.pcap", PAYLOAD_PCMA, 5.0),
        ("signal3s_pcmu.pcap", PAYLOAD_PCMU, 3.0),
    ],
)
def test_committed_pcap_carries_the_test_signal(
    name: str, payload_type: int, seconds: float
) -> None:
    packets = read_rtp_pcap(DATA_DIR / name)
    assert len(packets) == round(seconds * 50)
    found_type, pcm = pcap_pcm(DATA_DIR / name)
    assert found_type == payload_type
    assert len(pcm) == round(seconds * 8000) * 2
    coefficient, lag = best_correlation(test_signal(seconds), pcm)
    assert coefficient > 0.95 and lag == 0


@pytest.mark.parametrize("payload_type", [PAYLOAD_PCMU, PAYLOAD_PCMA])
def test_correlation_finds_a_known_delay_through_g711(payload_type: int) -> None:
    sent = test_signal(5.0)
    through_g711 = g711_decode(g711_encode(sent, payload_type), payload_type)
    coefficient, lag = best_correlation(sent, through_g711)
    assert coefficient > 0.95 and lag == 0

    late = b"\0\0" * 1234 + through_g711  # recording started 1234 samples early
    coefficient, lag = best_correlation(sent, late)
    assert coefficient > 0.95 and lag == 1234

    clipped = through_g711[2 * 777 :]  # recording missed the first 777 samples
    coefficient, lag = best_correlation(sent, clipped)
    assert coefficient > 0.95 and lag == -777


def test_correlation_of_unrelated_audio_is_low() -> None:
    sent = test_signal(2.0)
    samples = _samples(sent)
    reversed_pcm = struct.pack(f"<{len(samples)}h", *reversed(samples))
    coefficient, _lag = best_correlation(sent, reversed_pcm, max_lag_samples=4000)
    assert coefficient < 0.3


def test_wav_pcm_reads_what_wave_writes() -> None:
    frames = test_signal(0.5)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(frames)
    assert wav_pcm(buffer.getvalue()) == (8000, 2, 1, frames)


def test_wav_pcm_skips_other_chunks() -> None:
    extra = b"LIST" + struct.pack("<I", 5) + b"INFOx" + b"\0"  # odd size, padded
    assert wav_pcm(_wav(1, 1, 16000, 16, b"\1\0\2\0", extra)) == (16000, 2, 1, b"\1\0\2\0")


@pytest.mark.parametrize(
    ("tag", "bits"),
    [(49, 0), (6, 8), (7, 8), (3, 32), (0xFFFE, 16)],
    ids=["gsm-wav49", "alaw", "ulaw", "float", "extensible"],
)
def test_wav_pcm_rejects_anything_but_pcm(tag: int, bits: int) -> None:
    with pytest.raises(ValueError, match="not PCM"):
        wav_pcm(_wav(tag, 1, 8000, bits, b"\0" * 64))


def test_wav_pcm_rejects_broken_files() -> None:
    good = _wav(1, 1, 8000, 16, b"\0" * 64)
    with pytest.raises(ValueError, match="RIFF/WAVE"):
        wav_pcm(b"OggS" + good[4:])
    with pytest.raises(ValueError, match="truncated"):
        wav_pcm(good[:-10])
    with pytest.raises(ValueError, match="no data chunk"):
        wav_pcm(good[: good.index(b"data")])
