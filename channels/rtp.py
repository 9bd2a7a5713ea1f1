"""RTP packets, G.711 and RFC 4733 DTMF: the pure parts of the media path.

Audio inside the server is always 8 kHz, 16-bit signed little-endian mono PCM ("slin"),
20 ms (160 samples, 320 bytes) a frame. Codecs only exist at the edge.
"""

from __future__ import annotations

import struct
import warnings
from collections import deque
from dataclasses import dataclass

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

SAMPLE_RATE = 8000
FRAME_SAMPLES = 160
FRAME_BYTES = FRAME_SAMPLES * 2
SILENCE_FRAME = b"\x00" * FRAME_BYTES

DTMF_EVENTS = "0123456789*#ABCD"


class RtpError(ValueError):
    """Not an RTP packet we can use."""


@dataclass
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        if len(data) < 12:
            raise RtpError("short packet")
        first, second, sequence, timestamp, ssrc = struct.unpack_from("!BBHII", data)
        if first >> 6 != 2:
            raise RtpError("not RTP version 2")
        offset = 12 + 4 * (first & 0x0F)
        if first & 0x10:  # header extension
            if len(data) < offset + 4:
                raise RtpError("truncated extension")
            (length,) = struct.unpack_from("!H", data, offset + 2)
            offset += 4 + 4 * length
        end = len(data)
        if first & 0x20:  # padding; the count includes itself, so 0 is malformed
            if data[-1] == 0:
                raise RtpError("bad padding count")
            end -= data[-1]
        if offset > end:
            raise RtpError("truncated packet")
        return cls(
            payload_type=second & 0x7F,
            sequence=sequence,
            timestamp=timestamp,
            ssrc=ssrc,
            payload=data[offset:end],
            marker=bool(second & 0x80),
        )

    def __bytes__(self) -> bytes:
        return rtp_header(self.payload_type, self.sequence, self.timestamp, self.ssrc,
                          self.marker) + self.payload  # fmt: skip


_HEADER = struct.Struct("!BBHII")  # version 2, marker and payload type, seq, timestamp, SSRC


def rtp_header(payload_type: int, sequence: int, timestamp: int, ssrc: int, marker: bool) -> bytes:
    """The 12-byte header of an RTP packet without CSRCs or extension (sent per packet: one
    struct call, no packet object)."""
    second = (0x80 if marker else 0) | (payload_type & 0x7F)
    return _HEADER.pack(0x80, second, sequence & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc)


def is_rtcp(data: bytes) -> bool:
    """RTCP multiplexed on the RTP port (RFC 5761): payload types 192-223 in the 2nd byte."""
    return len(data) >= 2 and data[0] >> 6 == 2 and 192 <= data[1] <= 223


class G711:
    """One G.711 law; encode/decode whole buffers at C speed with audioop."""

    def __init__(self, codec: str) -> None:
        if codec == "PCMU":
            self._encode, self._decode = audioop.lin2ulaw, audioop.ulaw2lin
        elif codec == "PCMA":
            self._encode, self._decode = audioop.lin2alaw, audioop.alaw2lin
        else:
            raise ValueError(f"unsupported codec {codec}")
        self.codec = codec

    def encode(self, pcm: bytes) -> bytes:
        return self._encode(pcm, 2)

    def decode(self, payload: bytes) -> bytes:
        return self._decode(payload, 2)


class DtmfReceiver:
    """RFC 4733 telephone-event receive with de-duplication.

    One key press arrives as several packets sharing an RTP timestamp (updates and three
    end packets). A digit is reported once, at its first packet, so that a prompt stops as
    soon as the caller presses; later packets with the same timestamp are ignored. A few
    recent events are remembered, so an end packet that arrives after the next key's first
    packet (reordering) is not taken for a new press.
    """

    REMEMBERED_EVENTS = 8

    def __init__(self) -> None:
        self._recent: deque[tuple[int, int]] = deque(maxlen=self.REMEMBERED_EVENTS)

    def receive(self, packet: RtpPacket) -> str | None:
        if len(packet.payload) < 4:
            return None
        event = packet.payload[0]
        if event >= len(DTMF_EVENTS):
            return None  # tones other than DTMF (flash, fax) are ignored
        key = (packet.ssrc, packet.timestamp)
        if key in self._recent:
            return None
        self._recent.append(key)
        return DTMF_EVENTS[event]


class ReceiveBuffer:
    """Turns received audio packets into a gap-free PCM stream.

    Packets are placed by RTP timestamp: a late duplicate or one older than what was
    already delivered is dropped, and a gap (lost packets) is filled with silence, so the
    recording has the length of the audio that was sent. A new SSRC, or a jump back further
    than any late packet could be (a sender that restarted its clock), restarts the timeline.
    """

    MAX_GAP_SAMPLES = SAMPLE_RATE * 2  # a larger jump is a new talk spurt, not loss

    def __init__(self) -> None:
        self._ssrc: int | None = None
        self._next_timestamp: int | None = None

    def place(self, packet: RtpPacket, samples: int) -> int:
        """How many silence samples to insert before this packet; -1 to drop it."""
        if packet.ssrc != self._ssrc or self._next_timestamp is None:
            self._ssrc = packet.ssrc
            self._next_timestamp = (packet.timestamp + samples) & 0xFFFFFFFF
            return 0
        delta = (packet.timestamp - self._next_timestamp) & 0xFFFFFFFF
        if delta >= 0x80000000:  # behind what we delivered
            if 0x100000000 - delta <= self.MAX_GAP_SAMPLES:
                return -1  # duplicate or too late
            self._next_timestamp = (packet.timestamp + samples) & 0xFFFFFFFF
            return 0
        self._next_timestamp = (packet.timestamp + samples) & 0xFFFFFFFF
        if delta > self.MAX_GAP_SAMPLES:
            return 0
        return delta


@dataclass
class RtpCounts:
    """Packets of every call of an endpoint, for monitoring: read, never reset."""

    received: int = 0
    lost: int = 0  # sequence numbers given up on
    late: int = 0  # arrived after their place was released, or duplicates


class JitterBuffer:
    """Puts reordered packets back in sequence order, holding at most `depth` of them.

    In-order packets pass straight through. A missing sequence number holds later packets
    until it arrives or more than `depth` are waiting; then the buffer gives up on it (the
    `ReceiveBuffer` after it fills the hole with silence). A packet older than what was
    released is late and dropped. Depth 3 is 60 ms at 20 ms ptime.
    """

    def __init__(self, depth: int = 3, counts: RtpCounts | None = None) -> None:
        self.depth = depth
        self.counts = RtpCounts() if counts is None else counts
        self._ssrc: int | None = None
        self._next: int | None = None
        self._held: dict[int, tuple[RtpPacket, bytes]] = {}

    def push(self, packet: RtpPacket, pcm: bytes) -> list[tuple[RtpPacket, bytes]]:
        released: list[tuple[RtpPacket, bytes]] = []
        if packet.ssrc != self._ssrc:
            released = self.flush()
            self._ssrc = packet.ssrc
            self._next = packet.sequence
        assert self._next is not None
        distance = (packet.sequence - self._next) & 0xFFFF
        if distance >= 0x8000:
            if 0x10000 - distance > 100:  # far behind: the sender restarted its numbering
                released += self.flush()
                self._next = packet.sequence
            else:
                self.counts.late += 1
                return released  # late or duplicate
        self._held[packet.sequence] = (packet, pcm)
        released += self._release_in_order()
        if len(self._held) > self.depth:
            # Give up on the gap: continue from the oldest packet we hold.
            oldest = min(self._held, key=lambda seq: (seq - self._next) & 0xFFFF)
            self.counts.lost += (oldest - self._next) & 0xFFFF
            self._next = oldest
            released += self._release_in_order()
        return released

    def _release_in_order(self) -> list[tuple[RtpPacket, bytes]]:
        released = []
        while self._next in self._held:
            released.append(self._held.pop(self._next))
            self._next = (self._next + 1) & 0xFFFF
        return released

    def flush(self) -> list[tuple[RtpPacket, bytes]]:
        """Everything held, in order (the recording ends: nothing more will arrive)."""
        if self._next is None:
            return []
        start = self._next
        ordered = sorted(self._held.items(), key=lambda item: (item[0] - start) & 0xFFFF)
        self._held.clear()
        expected = start
        for seq, _entry in ordered:  # holes left when the recording ends are lost too
            self.counts.lost += (seq - expected) & 0xFFFF
            expected = (seq + 1) & 0xFFFF
        if ordered:
            self._next = (ordered[-1][0] + 1) & 0xFFFF
        return [entry for _seq, entry in ordered]
