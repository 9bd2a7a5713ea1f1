"""Audio fixtures for the sipp end-to-end tests: test signal, RTP pcaps, WAV and correlation.

sipp's ``<exec play_pcap_audio="..."/>`` replays the UDP payloads of a pcap as they are, so the
end-to-end tests must know exactly which samples went out. This module makes that signal, writes it
as G.711 RTP into a classic libpcap file, reads such files back, parses the WAV a recording is
stored as, and finds how well (and at which delay) a stored recording matches what was sent.

Regenerate the committed pcaps in ``tests/data/`` with ``python -m tests.audio --regenerate``.
"""

from __future__ import annotations

import argparse
import math
import random
import struct
import sys
import warnings
from array import array
from collections.abc import Iterable
from operator import mul
from pathlib import Path

with warnings.catch_warnings():
    # audioop is stdlib on 3.11/3.12 (deprecated); audioop-lts provides it from 3.13 on.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

SAMPLE_RATE = 8000
SAMPLE_WIDTH = 2
PAYLOAD_PCMU = 0
PAYLOAD_PCMA = 8

DATA_DIR = Path(__file__).resolve().parent / "data"

_PCAP_MAGIC_USEC = 0xA1B2C3D4
_PCAP_MAGIC_NSEC = 0xA1B23C4D
_LINKTYPE_ETHERNET = 1
_ETHERTYPE_IPV4 = 0x0800
_IPPROTO_UDP = 17
_RTP_HEADER = struct.Struct("!BBHII")
# Packet timestamps of generated pcaps start here (a fixed instant, so files are reproducible).
_PCAP_EPOCH = 1_700_000_000


def test_signal(seconds: float, seed: int = 1) -> bytes:
    """Make a deterministic 8 kHz 16-bit mono test signal that correlates sharply with itself.

    A linear chirp (200 Hz to 3400 Hz over the whole length, so every stretch is unique) plus
    seeded Gaussian noise at about -17 dBFS RMS with no silence: a stored copy can be aligned to
    the sample and any loss, gap or reordering lowers the correlation clearly. The noise comes from
    a private ``random.Random(seed)``, never from global state.
    """
    nframes = round(seconds * SAMPLE_RATE)
    if nframes <= 0:
        raise ValueError(f"seconds must be positive, got {seconds!r}")
    rng = random.Random(seed)
    duration = nframes / SAMPLE_RATE
    f0, f1 = 200.0, 3400.0
    sweep = (f1 - f0) / (2.0 * duration)
    samples = array("h")
    for i in range(nframes):
        t = i / SAMPLE_RATE
        chirp = 5000.0 * math.sin(2.0 * math.pi * (f0 * t + sweep * t * t))
        noise = rng.gauss(0.0, 2500.0)
        samples.append(max(-32000, min(32000, round(chirp + noise))))
    return _to_le_bytes(samples)


test_signal.__test__ = False  # a fixture maker, not a pytest test, even when imported into one


def g711_encode(pcm: bytes, payload_type: int) -> bytes:
    """Encode 16-bit linear PCM as the G.711 law of the static RTP payload type (0 PCMU, 8 PCMA)."""
    if payload_type == PAYLOAD_PCMU:
        return audioop.lin2ulaw(pcm, SAMPLE_WIDTH)
    if payload_type == PAYLOAD_PCMA:
        return audioop.lin2alaw(pcm, SAMPLE_WIDTH)
    raise ValueError(f"payload type {payload_type} is not G.711 (0 PCMU or 8 PCMA)")


def g711_decode(payload: bytes, payload_type: int) -> bytes:
    """Decode a G.711 payload of the given static RTP payload type to 16-bit linear PCM."""
    if payload_type == PAYLOAD_PCMU:
        return audioop.ulaw2lin(payload, SAMPLE_WIDTH)
    if payload_type == PAYLOAD_PCMA:
        return audioop.alaw2lin(payload, SAMPLE_WIDTH)
    raise ValueError(f"payload type {payload_type} is not G.711 (0 PCMU or 8 PCMA)")


def write_rtp_pcap(
    path: Path,
    pcm: bytes,
    payload_type: int,
    *,
    ssrc: int = 0x1234ABCD,
    seq0: int = 1000,
    ts0: int = 160000,
    ptime_ms: int = 20,
    src_port: int = 6000,
    dst_port: int = 6002,
) -> int:
    """Write ``pcm`` as a G.711 RTP stream into a classic libpcap file that sipp can replay.

    The pcm must hold whole packets (``ptime_ms`` of 8 kHz samples each): padding would change
    the length the tests expect the recording to have. Packets are Ethernet/IPv4/UDP from
    127.0.0.1 to 127.0.0.1 (sipp ignores the addresses and sends to the SDP answer), captured
    ``ptime_ms`` apart; the first carries the RTP marker bit. Returns the number of packets.
    """
    samples_per_packet = SAMPLE_RATE * ptime_ms // 1000
    bytes_per_packet = samples_per_packet * SAMPLE_WIDTH
    if ptime_ms <= 0 or samples_per_packet * 1000 != SAMPLE_RATE * ptime_ms:
        raise ValueError(f"ptime_ms {ptime_ms} is not a whole number of 8 kHz samples")
    if not pcm or len(pcm) % bytes_per_packet:
        raise ValueError(
            f"pcm is {len(pcm)} bytes, not a positive multiple of {bytes_per_packet} "
            f"({ptime_ms} ms frames)"
        )
    encoded = g711_encode(pcm, payload_type)
    count = len(encoded) // samples_per_packet
    out = bytearray(struct.pack("<IHHiIII", _PCAP_MAGIC_USEC, 2, 4, 0, 0, 65535, 1))
    for index in range(count):
        payload = encoded[index * samples_per_packet : (index + 1) * samples_per_packet]
        rtp = _RTP_HEADER.pack(
            0x80,  # version 2, no padding, no extension, no CSRC
            (0x80 if index == 0 else 0) | payload_type,
            (seq0 + index) & 0xFFFF,
            (ts0 + index * samples_per_packet) & 0xFFFFFFFF,
            ssrc,
        )
        frame = _ethernet_ipv4_udp(rtp + payload, src_port, dst_port, ident=index)
        usec = index * ptime_ms * 1000
        out += struct.pack(
            "<IIII", _PCAP_EPOCH + usec // 1_000_000, usec % 1_000_000, len(frame), len(frame)
        )
        out += frame
    Path(path).write_bytes(bytes(out))
    return count


def read_rtp_pcap(path: Path) -> list[tuple[float, bytes]]:
    """Read the UDP payloads of a classic libpcap file as ``(capture time in seconds, payload)``.

    Understands Ethernet captures of IPv4/UDP (both byte orders, micro- or nanosecond stamps),
    which covers our generated files and the ones sipp ships; other packets are skipped.
    """
    data = Path(path).read_bytes()
    if len(data) < 24:
        raise ValueError(f"{path}: too short for a pcap header")
    for order in "<>":
        (magic,) = struct.unpack(order + "I", data[:4])
        if magic in (_PCAP_MAGIC_USEC, _PCAP_MAGIC_NSEC):
            break
    else:
        raise ValueError(f"{path}: not a classic libpcap file (magic {data[:4].hex()})")
    divisor = 1e9 if magic == _PCAP_MAGIC_NSEC else 1e6
    (linktype,) = struct.unpack(order + "I", data[20:24])
    if linktype != _LINKTYPE_ETHERNET:
        raise ValueError(f"{path}: link type {linktype} is not Ethernet")
    record = struct.Struct(order + "IIII")
    packets: list[tuple[float, bytes]] = []
    offset = 24
    while offset < len(data):
        if offset + record.size > len(data):
            raise ValueError(f"{path}: truncated record header at byte {offset}")
        sec, frac, caplen, _origlen = record.unpack_from(data, offset)
        offset += record.size
        frame = data[offset : offset + caplen]
        if len(frame) != caplen:
            raise ValueError(f"{path}: truncated packet at byte {offset}")
        offset += caplen
        payload = _udp_payload(frame)
        if payload is not None:
            packets.append((sec + frac / divisor, payload))
    return packets


def pcap_pcm(path: Path) -> tuple[int, bytes]:
    """Return the payload type and the decoded linear PCM of a G.711 RTP pcap: what sipp sends."""
    payload_types = set()
    pcm = bytearray()
    for _stamp, payload in read_rtp_pcap(path):
        payload_type = payload[1] & 0x7F
        payload_types.add(payload_type)
        pcm += g711_decode(payload[_RTP_HEADER.size :], payload_type)
    if len(payload_types) != 1:
        raise ValueError(f"{path}: expected one G.711 payload type, found {sorted(payload_types)}")
    return payload_types.pop(), bytes(pcm)


def wav_pcm(data: bytes) -> tuple[int, int, int, bytes]:
    """Parse WAV bytes into ``(rate, sampwidth, channels, frames)``; raise ValueError unless PCM.

    A stored recording must be plain linear PCM (format tag 1, as Asterisk's ``wav`` writes): a
    GSM ``WAV49``, a float or a truncated file is a failure the tests must see.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE file")
    fmt: tuple[int, int, int, int] | None = None
    offset = 12
    while offset + 8 <= len(data):
        chunk_id = data[offset : offset + 4]
        (size,) = struct.unpack_from("<I", data, offset + 4)
        body = data[offset + 8 : offset + 8 + size]
        if len(body) != size:
            raise ValueError(f"WAV chunk {chunk_id!r} is truncated ({len(body)} of {size} bytes)")
        if chunk_id == b"fmt ":
            if size < 16:
                raise ValueError(f"WAV fmt chunk too short ({size} bytes)")
            tag, channels, rate, _byte_rate, _align, bits = struct.unpack_from("<HHIIHH", body)
            fmt = (tag, channels, rate, bits)
        elif chunk_id == b"data":
            if fmt is None:
                raise ValueError("WAV data chunk before fmt chunk")
            tag, channels, rate, bits = fmt
            if tag != 1:
                raise ValueError(f"WAV format tag {tag:#06x} is not PCM (1)")
            if bits not in (8, 16, 24, 32) or channels < 1 or rate < 1:
                raise ValueError(f"unusable PCM WAV: {bits} bits, {channels} channels, {rate} Hz")
            sampwidth = bits // 8
            if size % (sampwidth * channels):
                raise ValueError(f"WAV data of {size} bytes is not whole frames")
            return rate, sampwidth, channels, body
        offset += 8 + size + (size & 1)
    raise ValueError("WAV file has no data chunk")


def best_correlation(
    sent: bytes, received: bytes, max_lag_samples: int = 8000
) -> tuple[float, int]:
    """Find the Pearson correlation of two 16-bit PCM signals at the lag that maximises it.

    Returns ``(coefficient, lag)`` where ``received[i + lag]`` lines up with ``sent[i]`` (a
    positive lag means the recording starts later than what was sent). Only lags whose overlap is
    at least half the shorter signal count, so a few stray samples cannot score high.
    The search is coarse-to-fine (blocks of 8 samples, then every sample around the best coarse
    candidates), which is exact for signals that really match, like ``test_signal`` and its G.711
    copies, and takes well under a second for 5 s of audio in plain Python.
    """
    x = _from_le_bytes(sent)
    y = _from_le_bytes(received)
    min_overlap = max(2, min(len(x), len(y)) // 2)
    block = 8
    if max_lag_samples <= 4 * block or min(len(x), len(y)) < 64 * block:
        return _best_of(
            _Correlator(x, y, min_overlap), range(-max_lag_samples, max_lag_samples + 1)
        )
    coarse = _Correlator(_block_sums(x, block), _block_sums(y, block), min_overlap // block)
    coarse_lags = range(-(max_lag_samples // block) - 1, max_lag_samples // block + 2)
    scores = [(coarse.pearson(lag), lag) for lag in coarse_lags]
    ranked = sorted(((score, lag) for score, lag in scores if score is not None), reverse=True)
    candidates: set[int] = set()
    for _score, lag in ranked[:3]:
        centre = lag * block
        candidates.update(range(centre - 2 * block, centre + 2 * block + 1))
    lags = sorted(lag for lag in candidates if -max_lag_samples <= lag <= max_lag_samples)
    return _best_of(_Correlator(x, y, min_overlap), lags)


def regenerate(data_dir: Path = DATA_DIR) -> list[Path]:
    """Write the committed sipp pcaps of ``tests/data/`` from ``test_signal``; return the paths."""
    data_dir.mkdir(parents=True, exist_ok=True)
    made = []
    for name, seconds, payload_type in (
        ("signal5s_pcmu.pcap", 5.0, PAYLOAD_PCMU),
        ("signal5s_pcma.pcap", 5.0, PAYLOAD_PCMA),
        ("signal3s_pcmu.pcap", 3.0, PAYLOAD_PCMU),
    ):
        path = data_dir / name
        write_rtp_pcap(path, test_signal(seconds), payload_type)
        made.append(path)
    return made


class _Correlator:
    """Pearson correlation of two integer sequences at any lag, with prefix sums for the moments."""

    def __init__(self, x: list[int], y: list[int], min_overlap: int) -> None:
        self.x, self.y, self.min_overlap = x, y, max(2, min_overlap)
        self.sx, self.sxx = _prefix_sums(x)
        self.sy, self.syy = _prefix_sums(y)

    def pearson(self, lag: int) -> float | None:
        """Correlation of x[i] with y[i + lag] over their overlap; None if too short or flat."""
        start = max(0, -lag)
        stop = min(len(self.x), len(self.y) - lag)
        n = stop - start
        if n < self.min_overlap:
            return None
        sum_xy = sum(map(mul, self.x[start:stop], self.y[start + lag : stop + lag]))
        sum_x = self.sx[stop] - self.sx[start]
        sum_y = self.sy[stop + lag] - self.sy[start + lag]
        var_x = n * (self.sxx[stop] - self.sxx[start]) - sum_x * sum_x
        var_y = n * (self.syy[stop + lag] - self.syy[start + lag]) - sum_y * sum_y
        if var_x <= 0 or var_y <= 0:
            return None
        return (n * sum_xy - sum_x * sum_y) / math.sqrt(var_x * var_y)


def _best_of(correlator: _Correlator, lags: Iterable[int]) -> tuple[float, int]:
    best: tuple[float, int] | None = None
    for lag in lags:
        coefficient = correlator.pearson(lag)
        if coefficient is not None and (best is None or coefficient > best[0]):
            best = (coefficient, lag)
    if best is None:
        raise ValueError("no lag gives enough overlap of non-constant signals")
    return best


def _prefix_sums(values: list[int]) -> tuple[list[int], list[int]]:
    sums, squares = [0], [0]
    total = total_sq = 0
    for value in values:
        total += value
        total_sq += value * value
        sums.append(total)
        squares.append(total_sq)
    return sums, squares


def _block_sums(values: list[int], block: int) -> list[int]:
    return [sum(values[i : i + block]) for i in range(0, len(values) - block + 1, block)]


def _from_le_bytes(pcm: bytes) -> list[int]:
    if len(pcm) % SAMPLE_WIDTH:
        raise ValueError("16-bit PCM must have an even number of bytes")
    samples = array("h")
    samples.frombytes(pcm)
    if sys.byteorder == "big":
        samples.byteswap()
    return samples.tolist()


def _to_le_bytes(samples: array) -> bytes:
    if sys.byteorder == "big":
        samples = array("h", samples)
        samples.byteswap()
    return samples.tobytes()


def _ethernet_ipv4_udp(payload: bytes, src_port: int, dst_port: int, ident: int) -> bytes:
    loopback = bytes((127, 0, 0, 1))
    udp = struct.pack("!HHHH", src_port, dst_port, 8 + len(payload), 0) + payload
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(udp),
        ident & 0xFFFF,
        0x4000,
        64,
        _IPPROTO_UDP,
        0,
        loopback,
        loopback,
    )
    header = header[:10] + struct.pack("!H", _ip_checksum(header)) + header[12:]
    ethernet = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01"
    return ethernet + struct.pack("!H", _ETHERTYPE_IPV4) + header + udp


def _ip_checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _udp_payload(frame: bytes) -> bytes | None:
    if len(frame) < 14 + 20:
        return None
    (ethertype,) = struct.unpack_from("!H", frame, 12)
    if ethertype != _ETHERTYPE_IPV4 or frame[14] >> 4 != 4 or frame[14 + 9] != _IPPROTO_UDP:
        return None
    ihl = (frame[14] & 0x0F) * 4
    (total_length,) = struct.unpack_from("!H", frame, 16)
    udp = frame[14 + ihl : 14 + total_length]
    (udp_length,) = struct.unpack_from("!H", udp, 4)
    if udp_length < 8 or udp_length > len(udp):
        raise ValueError(f"bad UDP length {udp_length} in a {len(udp)} byte datagram")
    return udp[8:udp_length]


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m tests.audio --regenerate`` rewrites the pcaps in tests/data/."""
    parser = argparse.ArgumentParser(prog="python -m tests.audio", description=__doc__)
    parser.add_argument("--regenerate", action="store_true", help="rewrite tests/data/*.pcap")
    args = parser.parse_args(argv)
    if not args.regenerate:
        parser.print_help()
        return 2
    for path in regenerate():
        print(f"wrote {path} ({len(read_rtp_pcap(path))} packets)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
