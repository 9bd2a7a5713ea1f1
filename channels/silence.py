"""Silence detection for recordings (voicemail.conf `maxsilence`, `silencethreshold`).

Pure logic, as Asterisk's dsp silence detection does it: the audio is cut into 20 ms frames,
a frame whose mean absolute sample value is below the threshold is silent, and the detector
keeps the length of the current run of silent frames. Any frame at or above the threshold
ends the run. Recordings that stop on silence keep only the first 200 ms of that run.
"""

from __future__ import annotations

import array
import sys

from .rtp import FRAME_SAMPLES, SAMPLE_RATE

DEFAULT_SILENCE_THRESHOLD = 128  # app_voicemail's default silencethreshold
KEEP_TRAILING_MS = 200  # what Asterisk leaves of the silence that ended a recording


def frame_energy(pcm: bytes) -> float:
    """Mean absolute value of 16-bit signed little-endian samples (0 for no samples)."""
    samples = array.array("h")
    samples.frombytes(pcm[: len(pcm) - len(pcm) % 2])
    if sys.byteorder == "big":
        samples.byteswap()
    if not samples:
        return 0.0
    return sum(abs(s) for s in samples) / len(samples)


class SilenceDetector:
    """Feed it PCM in pieces of any size; `silent_ms` is the trailing run of silent frames."""

    def __init__(self, threshold: int = DEFAULT_SILENCE_THRESHOLD) -> None:
        self.threshold = threshold
        self.silent_samples = 0
        self._pending = b""

    @property
    def silent_ms(self) -> int:
        return self.silent_samples * 1000 // SAMPLE_RATE

    def feed(self, pcm: bytes) -> None:
        data = self._pending + pcm
        frame_bytes = FRAME_SAMPLES * 2
        whole = len(data) - len(data) % frame_bytes
        for start in range(0, whole, frame_bytes):
            if frame_energy(data[start : start + frame_bytes]) < self.threshold:
                self.silent_samples += FRAME_SAMPLES
            else:
                self.silent_samples = 0
        self._pending = data[whole:]


def trim_trailing_silence(
    pcm: bytes, silent_samples: int, keep_ms: int = KEEP_TRAILING_MS
) -> bytes:
    """Drop the end of a recording's trailing silence, keeping its first `keep_ms`."""
    keep = keep_ms * SAMPLE_RATE // 1000
    cut = max(silent_samples - keep, 0)
    cut = min(cut, len(pcm) // 2)
    return pcm[: len(pcm) - cut * 2] if cut else pcm
