"""The growing PCM of one recording: its limit and how much lost audio may become silence.

Pure logic, no I/O: `Channel.record` feeds it received audio with the loop's clock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .rtp import FRAME_SAMPLES, SAMPLE_RATE

log = logging.getLogger(__name__)

# How far received audio may run ahead of the wall clock (network bursts after a stall);
# more than that is a sender flooding faster than real time, and is not recorded.
MAX_AHEAD_SECONDS = 2.0


class RecordingBuffer:
    """Collects a recording, never longer than `max_seconds`.

    A gap before a packet (lost packets, by RTP timestamp) becomes silence, but only as much
    as the wall clock allows: the recording may be at most as long as the time since it
    started plus one packet. A sender that jumps its timestamps therefore cannot turn a
    5 s call into minutes of silence; one that sends audio faster than real time gets no
    more than `MAX_AHEAD_SECONDS` beyond the wall clock recorded. Each piece that becomes
    part of the recording is also handed to `on_chunk`, in order, so that the caller can
    keep it on disk as it grows.
    """

    def __init__(
        self,
        max_seconds: float,
        started: float,
        on_chunk: Callable[[bytes], None] | None = None,
    ) -> None:
        self.limit_samples = max(int(max_seconds * SAMPLE_RATE), 0)
        self.started = started
        self.samples = 0  # in the recording so far
        self.silence_samples = 0  # of those, filled in for lost packets
        self.dropped_samples = 0  # audio that ran too far ahead of the wall clock
        self.full = self.limit_samples == 0
        self._chunks: list[bytes] = []
        self._on_chunk = on_chunk

    @property
    def pcm(self) -> bytes:
        return b"".join(self._chunks)

    def add(self, pcm: bytes, gap_samples: int, now: float) -> None:
        """Append a received packet's audio, preceded by up to `gap_samples` of silence."""
        if self.full:
            return
        packet_samples = len(pcm) // 2
        elapsed = max(now - self.started, 0.0)
        if self.samples + packet_samples > int((elapsed + MAX_AHEAD_SECONDS) * SAMPLE_RATE):
            if not self.dropped_samples:
                log.warning("caller sends audio faster than real time; the excess is dropped")
            self.dropped_samples += packet_samples
            return
        if gap_samples > 0:
            allowed = int(elapsed * SAMPLE_RATE) + max(packet_samples, FRAME_SAMPLES)
            fill = min(
                gap_samples,
                allowed - self.samples - packet_samples,
                self.limit_samples - self.silence_samples,
            )
            if fill > 0:
                self.silence_samples += fill
                self._append(b"\x00\x00" * fill)
        self._append(pcm[: packet_samples * 2])

    def _append(self, pcm: bytes) -> None:
        if self.full or not pcm:
            return
        room = self.limit_samples - self.samples
        if len(pcm) // 2 >= room:
            pcm = pcm[: room * 2]
            self.full = True
        self._chunks.append(pcm)
        self.samples += len(pcm) // 2
        if self._on_chunk is not None:
            try:
                self._on_chunk(pcm)
            except Exception:  # noqa: BLE001 - the recording goes on in memory
                log.exception("recording hook failed; the rest is kept in memory only")
                self._on_chunk = None
