"""In-band DTMF detection on 8 kHz 16-bit mono PCM ("slin"), the `dtmfmode=inband` path.

Phones that neither send RFC 4733 events nor SIP INFO leave the keypad tones in the audio.
`InbandDtmfDetector` finds them there and reports each key press once.

How it decides (Asterisk's dsp.c checks, on a finer time grid):

* The audio is cut into 5 ms blocks; every block ends a 15 ms analysis window (3 blocks).
  For each window the power at the 8 DTMF frequencies is measured with a single-bin DFT, the
  quantity a Goertzel filter computes. The DFT is done as two correlations per frequency with
  precomputed cosine and sine tables through `audioop.findfactor`, so the inner loops run in C
  and a 20 ms frame costs a few tens of microseconds in plain Python.
* A window "hits" a key when the strongest row and column tones are both loud enough, their
  levels differ by no more than the allowed twist, each is well above the other tones of its
  group, together they hold most of the window's energy (speech, noise and single tones fail
  here) and the three blocks carry similar energy (the window lies inside one steady tone).
* A key is reported after `HITS_TO_REPORT` consecutive hits, 40 ms after the tone began: a
  window hits when the tone covers all but about 4 ms of it, so a tone of duration D yields
  (D - 7.5 ms) / 5 ms hits, give or take one with its alignment. Tones of 33 ms or less are
  always rejected and tones of 40 ms or more always accepted (ITU-T Q.24 asks for 40 ms).
* The same key is reported again only after `MISSES_TO_RELEASE` windows without it: a silence
  of 30 ms or more always separates two presses, one of 20 ms or less (a lost packet) never
  does. A different key needs no gap.
"""

from __future__ import annotations

import math
import struct
import warnings

with warnings.catch_warnings():
    # audioop is stdlib on 3.11/3.12 (deprecated); audioop-lts provides it from 3.13 on.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

SAMPLE_RATE = 8000
SAMPLE_WIDTH = 2

ROW_FREQUENCIES = (697.0, 770.0, 852.0, 941.0)
COLUMN_FREQUENCIES = (1209.0, 1336.0, 1477.0, 1633.0)
KEYPAD = ("123A", "456B", "789C", "*0#D")

BLOCK_SAMPLES = 40  # 5 ms: the step between two analyses
BLOCKS_PER_WINDOW = 3
WINDOW_SAMPLES = BLOCK_SAMPLES * BLOCKS_PER_WINDOW  # 15 ms: bins 67 Hz apart

HITS_TO_REPORT = 6  # consecutive windows; see the module docstring for the 40 ms arithmetic
MISSES_TO_RELEASE = 7  # windows without the key before the same key may be reported again

MIN_TONE_LEVEL_DBFS = -42.0  # each tone's peak level, relative to a full-scale sine
MAX_NORMAL_TWIST_DB = 8.0  # row (low group) louder than column: line loss favours it
MAX_REVERSE_TWIST_DB = 4.0  # column (high group) louder than row
RELATIVE_PEAK_DB = 8.0  # the chosen tone against the others of its group
MIN_TONE_FRACTION = 0.7  # share of the window's energy in the two tones
MIN_BLOCK_RATIO = 0.25  # weakest block's energy against the strongest one's

_REFERENCE_AMPLITUDE = 32767


def _db_to_power_ratio(db: float) -> float:
    return 10.0 ** (db / 10.0)


class _Bin:
    """The cosine and sine tables of one frequency, for the correlation trick."""

    def __init__(self, frequency: float) -> None:
        omega = 2.0 * math.pi * frequency / SAMPLE_RATE
        cosine = [round(_REFERENCE_AMPLITUDE * math.cos(omega * n)) for n in range(WINDOW_SAMPLES)]
        sine = [round(_REFERENCE_AMPLITUDE * math.sin(omega * n)) for n in range(WINDOW_SAMPLES)]
        self.cosine = struct.pack(f"<{WINDOW_SAMPLES}h", *cosine)
        self.sine = struct.pack(f"<{WINDOW_SAMPLES}h", *sine)
        # findfactor(x, ref) is <x, ref> / <ref, ref>; these turn it back into <x, cos> and
        # <x, sin>, the real and imaginary parts of the DFT at this frequency.
        self.cosine_scale = sum(v * v for v in cosine) / _REFERENCE_AMPLITUDE
        self.sine_scale = sum(v * v for v in sine) / _REFERENCE_AMPLITUDE

    def power(self, window: bytes) -> float:
        """|X(f)|^2 of the window: (A * N / 2)^2 for a sine of amplitude A at f."""
        real = audioop.findfactor(window, self.cosine) * self.cosine_scale
        imaginary = audioop.findfactor(window, self.sine) * self.sine_scale
        return real * real + imaginary * imaginary


_ROW_BINS = tuple(_Bin(f) for f in ROW_FREQUENCIES)
_COLUMN_BINS = tuple(_Bin(f) for f in COLUMN_FREQUENCIES)

# A sine of peak amplitude A gives a bin power of (A * N / 2)^2.
_MIN_TONE_AMPLITUDE = _REFERENCE_AMPLITUDE * 10.0 ** (MIN_TONE_LEVEL_DBFS / 20.0)
_MIN_BIN_POWER = (_MIN_TONE_AMPLITUDE * WINDOW_SAMPLES / 2.0) ** 2
# Two tones at the minimum level carry N * A^2 of energy (sum of squares) in a window.
_MIN_WINDOW_ENERGY = WINDOW_SAMPLES * _MIN_TONE_AMPLITUDE**2
_NORMAL_TWIST = _db_to_power_ratio(MAX_NORMAL_TWIST_DB)
_REVERSE_TWIST = _db_to_power_ratio(MAX_REVERSE_TWIST_DB)
_RELATIVE_PEAK = _db_to_power_ratio(RELATIVE_PEAK_DB)
_BLOCK_BYTES = BLOCK_SAMPLES * SAMPLE_WIDTH


def _strongest(powers: list[float]) -> int:
    best = 0
    for index in range(1, len(powers)):
        if powers[index] > powers[best]:
            best = index
    return best


def _window_key(window: bytes, energy: float) -> str | None:
    """The key whose two tones fill this window, or None."""
    rows = [b.power(window) for b in _ROW_BINS]
    row = _strongest(rows)
    row_power = rows[row]
    if row_power < _MIN_BIN_POWER:
        return None
    columns = [b.power(window) for b in _COLUMN_BINS]
    column = _strongest(columns)
    column_power = columns[column]
    if column_power < _MIN_BIN_POWER:
        return None
    if row_power > column_power * _NORMAL_TWIST or column_power > row_power * _REVERSE_TWIST:
        return None
    for index in range(4):
        if index != row and rows[index] * _RELATIVE_PEAK > row_power:
            return None
        if index != column and columns[index] * _RELATIVE_PEAK > column_power:
            return None
    # A tone of amplitude A has bin power (A N / 2)^2 and energy N A^2 / 2: the share of the
    # window's energy held by the two tones is 2 (P_row + P_col) / (N * energy).
    if 2.0 * (row_power + column_power) < MIN_TONE_FRACTION * WINDOW_SAMPLES * energy:
        return None
    return KEYPAD[row][column]


class InbandDtmfDetector:
    """Key presses in a stream of 8 kHz 16-bit little-endian mono PCM.

    Feed audio in any chunk size (normally 20 ms frames of 320 bytes); `feed` returns the keys
    whose press was recognised in that audio, each press once, as soon as the tone has lasted
    about 40 ms. One detector per call direction; it keeps no time other than the samples.
    """

    def __init__(self) -> None:
        self._pending = bytearray()
        self._blocks: list[bytes] = []
        self._energies: list[float] = []
        self._candidate: str | None = None  # key of the current run of hits
        self._streak = 0  # length of that run, in windows
        self._held: str | None = None  # key reported and not yet released
        self._misses = 0  # windows since the held key was last seen

    def reset(self) -> None:
        """Forget all audio and state, as for a new media stream."""
        self._pending.clear()
        self._blocks.clear()
        self._energies.clear()
        self._candidate = None
        self._streak = 0
        self._held = None
        self._misses = 0

    def feed(self, pcm: bytes) -> list[str]:
        """Analyse more audio; the keys newly pressed in it, in order."""
        self._pending += pcm
        keys: list[str] = []
        offset = 0
        while len(self._pending) - offset >= _BLOCK_BYTES:
            block = bytes(self._pending[offset : offset + _BLOCK_BYTES])
            offset += _BLOCK_BYTES
            key = self._decide(self._analyse(block))
            if key is not None:
                keys.append(key)
        del self._pending[:offset]
        return keys

    def _analyse(self, block: bytes) -> str | None:
        """Slide the window by one block and say which key (if any) it holds."""
        rms = audioop.rms(block, SAMPLE_WIDTH)
        self._blocks.append(block)
        self._energies.append(float(rms * rms * BLOCK_SAMPLES))
        if len(self._blocks) > BLOCKS_PER_WINDOW:
            del self._blocks[0]
            del self._energies[0]
        elif len(self._blocks) < BLOCKS_PER_WINDOW:
            return None
        energy = sum(self._energies)
        if energy < _MIN_WINDOW_ENERGY:
            return None
        if min(self._energies) < MIN_BLOCK_RATIO * max(self._energies):
            return None  # the window straddles a tone's start or end, or is not steady
        return _window_key(b"".join(self._blocks), energy)

    def _decide(self, key: str | None) -> str | None:
        """Turn per-window hits into presses: a long enough run, once per press."""
        if key is not None and key == self._candidate:
            self._streak += 1
        else:
            self._candidate = key
            self._streak = 0 if key is None else 1
        if self._held is not None:
            if key == self._held:
                self._misses = 0
            else:
                self._misses += 1
                if self._misses >= MISSES_TO_RELEASE:
                    self._held = None
        if key is not None and self._streak >= HITS_TO_REPORT and key != self._held:
            self._held = key
            self._misses = 0
            return key
        return None
