"""What a caller heard: a timeline of received audio, and two ways to check it.

`Timeline` places each decoded RTP packet at its moment of the call (by RTP timestamp,
anchored at the arrival of the stream's first packet), so gaps where the server sent nothing
are silence and a test can ask for any stretch of seconds.

`prompts_heard` matches the audio against the server's own prompt files by normalised
cross-correlation (deterministic, exact to the sample, no speech recognition), and
`transcribe` / `assert_heard` run pocketsphinx on it with a language model made of the
prompts' words, so a check does not depend on the server naming what it played.
"""

from __future__ import annotations

import functools
import gzip
import re
import threading
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

from .server import SOUNDS

RATE = 8000
SILENCE_RMS = 200  # 16-bit RMS under which a 20 ms frame counts as silence (about -44 dBFS)
REPO = Path(__file__).resolve().parent.parent
MANIFEST = REPO / "prompts" / "manifest-en.tsv"
ASTERISK_TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
NUMBERS = "zero one two three four five six seven eight nine".split()


class Timeline:
    """Decoded 8 kHz PCM by call time; thread-safe (the softphone's RTP thread adds)."""

    def __init__(self) -> None:
        self._pcm = bytearray()
        self._lock = threading.Lock()
        self._anchor: tuple[int, int, int] | None = None  # ssrc, timestamp, sample position
        self.packets = 0
        self.last_arrival: float | None = None
        self.last_loud: float | None = None  # call time (s) of the end of the last loud frame

    def add(self, arrival: float, ssrc: int, timestamp: int, pcm: bytes) -> None:
        """Place a packet; a new SSRC or a jump of over 10 s re-anchors at its arrival."""
        with self._lock:
            position = None
            if self._anchor is not None and self._anchor[0] == ssrc:
                delta = (timestamp - self._anchor[1] + 2**31) % 2**32 - 2**31
                position = self._anchor[2] + delta
                if abs(position - arrival * RATE) > 10 * RATE:
                    position = None
            if position is None:
                position = max(0, round(arrival * RATE))
                self._anchor = (ssrc, timestamp, position)
            start = 2 * position
            end = start + len(pcm)
            if len(self._pcm) < end:
                self._pcm.extend(bytes(end - len(self._pcm)))
            self._pcm[start:end] = pcm
            self.packets += 1
            self.last_arrival = arrival
            if rms(pcm) >= SILENCE_RMS:
                self.last_loud = end / 2 / RATE

    def pcm(self, start: float | None = None, end: float | None = None) -> bytes:
        """The PCM heard from call time `start` to `end` (seconds; None: the beginning/end)."""
        with self._lock:
            first = 0 if start is None else 2 * max(0, round(start * RATE))
            last = len(self._pcm) if end is None else 2 * max(0, round(end * RATE))
            return bytes(self._pcm[first:last])

    @property
    def seconds(self) -> float:
        return len(self._pcm) / 2 / RATE


def rms(pcm: bytes) -> int:
    return audioop.rms(pcm, 2) if pcm else 0


def loud_spans(pcm: bytes, min_silence: float = 0.3) -> list[tuple[float, float]]:
    """(start, end) seconds of the stretches that are not silence, split at `min_silence`."""
    frame = 2 * RATE // 50
    spans: list[tuple[float, float]] = []
    quiet = 0
    for index in range(0, len(pcm) // frame):
        loud = rms(pcm[index * frame : (index + 1) * frame]) >= SILENCE_RMS
        t = index / 50
        if loud:
            if spans and quiet * 0.02 < min_silence and spans[-1][1] >= t - min_silence:
                spans[-1] = (spans[-1][0], t + 0.02)
            else:
                spans.append((t, t + 0.02))
            quiet = 0
        else:
            quiet += 1
    return spans


# -- prompts by cross-correlation -----------------------------------------------------------


@dataclass(frozen=True)
class PromptMatch:
    name: str
    start: float  # seconds into the audio searched
    end: float
    score: float  # normalised cross-correlation, 1.0 for the very samples


def _samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2").astype(np.float64)


def _normalised_correlation(heard: np.ndarray, prompt: np.ndarray) -> np.ndarray:
    """corr[lag] of prompt against heard[lag:lag+n], scaled to [-1, 1] (zero where silent)."""
    n = len(prompt)
    prompt = prompt - prompt.mean()
    size = 1 << int(np.ceil(np.log2(len(heard) + n)))
    raw = np.fft.irfft(np.fft.rfft(heard, size) * np.conj(np.fft.rfft(prompt, size)), size)
    raw = raw[: len(heard) - n + 1]
    sums = np.concatenate(([0.0], np.cumsum(heard)))
    squares = np.concatenate(([0.0], np.cumsum(heard * heard)))
    window_sum = sums[n:] - sums[:-n]
    energy = (squares[n:] - squares[:-n]) - window_sum * window_sum / n
    norm = np.sqrt(np.maximum(energy, 0.0)) * np.sqrt(float(np.dot(prompt, prompt)))
    floor = max(1.0, 1e-6 * float(norm.max(initial=0.0)))
    return np.where(norm > floor, raw / np.maximum(norm, floor), 0.0)


def find_prompts(
    pcm: bytes,
    candidates: Iterable[str],
    *,
    threshold: float = 0.8,
    language: str | None = None,
    heads: Mapping[str, float] | None = None,
) -> list[PromptMatch]:
    """Every occurrence of each candidate prompt in `pcm`, in order of time, not overlapping.

    The server plays `SoundLibrary.load_pcm(name)` as G.711, so what arrives correlates with
    the file at about 0.99; speech that merely sounds alike stays far below `threshold`.
    Where two matches overlap by more than half of the shorter one, the better one wins.
    `heads` maps a name to the seconds of its beginning that count as hearing it, for a long
    prompt the caller interrupts (its match then ends there).
    """
    references = {}
    for name in dict.fromkeys(candidates):
        pcm_of = SOUNDS.load_pcm(name, language)
        if heads and name in heads:
            pcm_of = pcm_of[: 2 * round(heads[name] * RATE)]
        references[name] = pcm_of
    return _find(pcm, references, threshold)


def find_audio(pcm: bytes, reference: bytes, *, threshold: float = 0.8) -> list[PromptMatch]:
    """Where `reference` (any 8 kHz 16-bit PCM: a deposited message, a greeting the caller
    recorded) was heard in `pcm`, by the same correlation as the prompts."""
    return _find(pcm, {"audio": reference}, threshold)


def _find(pcm: bytes, references: Mapping[str, bytes], threshold: float) -> list[PromptMatch]:
    heard = _samples(pcm)
    found: list[PromptMatch] = []
    for name, reference in references.items():
        prompt = _samples(reference)
        if len(prompt) < 2 or len(prompt) > len(heard):
            continue
        scores = _normalised_correlation(heard, prompt)
        while True:
            lag = int(np.argmax(scores))
            score = float(scores[lag])
            if score < threshold:
                break
            found.append(PromptMatch(name, lag / RATE, (lag + len(prompt)) / RATE, score))
            scores[max(0, lag - len(prompt) // 2) : lag + len(prompt) // 2 + 1] = 0.0
    kept: list[PromptMatch] = []
    for match in sorted(found, key=lambda m: -m.score):
        if all(_overlap(match, other) <= 0.5 for other in kept):
            kept.append(match)
    return sorted(kept, key=lambda m: m.start)


def _overlap(a: PromptMatch, b: PromptMatch) -> float:
    shared = min(a.end, b.end) - max(a.start, b.start)
    return max(0.0, shared) / min(a.end - a.start, b.end - b.start)


def prompts_heard(
    pcm: bytes,
    candidates: Iterable[str],
    *,
    threshold: float = 0.8,
    language: str | None = None,
    heads: Mapping[str, float] | None = None,
) -> list[str]:
    """The names of the candidate prompts heard in `pcm`, in the order they were heard."""
    found = find_prompts(pcm, candidates, threshold=threshold, language=language, heads=heads)
    return [m.name for m in found]


# -- speech recognition ---------------------------------------------------------------------


def words_of(text: str) -> list[str]:
    """Lower-case words, digits spelled out, punctuation dropped: how transcripts compare."""
    text = re.sub(r"\d", lambda m: f" {NUMBERS[int(m.group())]} ", text.lower())
    return re.sub(r"[^a-z' ]+", " ", text).split()


def prompt_sentences() -> list[str]:
    """The texts of the prompts (our manifest, Asterisk's transcripts) and common sequences."""
    texts = []
    for line in MANIFEST.read_text().splitlines():
        words = line.partition("\t")[2]
        if words and not words.startswith("!"):
            texts.append(words)
    if ASTERISK_TRANSCRIPTS.is_file():
        for line in gzip.decompress(ASTERISK_TRANSCRIPTS.read_bytes()).decode().splitlines():
            name, colon, words = line.partition(":")
            if colon and re.fullmatch(r"(vm|auth|digits|pbx|beep|invalid)[\w/-]*", name.strip()):
                texts.append(re.sub(r"\(.*?\)|\[.*?\]", " ", words))
    for number in NUMBERS[1:]:
        for kind in ("new", "old", "urgent"):
            texts += [f"you have {number} {kind} messages", f"you have {number} {kind} message"]
    texts += ["you have no messages", "you have no new messages", " ".join(NUMBERS)]
    texts.append("the person at extension one two three four five six seven eight nine zero")
    return texts


@functools.lru_cache(maxsize=4)
def _decoder(extra: tuple[str, ...]):  # noqa: ANN202 - pocketsphinx.Decoder, imported lazily
    """A decoder on the shipped en-us model with an n-gram model of the prompts' words."""
    import tempfile

    from pocketsphinx import Decoder, get_model_path
    from pocketsphinx.lm import ArpaBoLM

    dictionary = Path(get_model_path("en-us/cmudict-en-us.dict"))
    known = {line.split(" ", 1)[0] for line in dictionary.read_text().splitlines()}
    sentences = []
    for text in [*prompt_sentences(), *extra]:
        words = [w for w in words_of(text) if w in known]
        if words:
            sentences.append(" ".join(words))
    model = ArpaBoLM(add_start=True, text="\n".join(sentences))
    model.compute()
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "prompts.arpa"
        model.write_file(str(path))
        return Decoder(samprate=16000, lm=str(path), loglevel="FATAL")


_decoder_lock = threading.Lock()


def transcribe(pcm_8k: bytes, extra_sentences: Iterable[str] = ()) -> str:
    """What pocketsphinx hears in 8 kHz 16-bit mono PCM, as lower-case words.

    The en-us model wants 16 kHz, so the audio is resampled (its upper band stays empty,
    which the model tolerates). The language model holds only the prompts' sentences (plus
    `extra_sentences`): recognition is then reliable for Asterisk's recorded prompts and
    much weaker for the espeak fallback set, where `prompts_heard` is the check to use.
    """
    if not loud_spans(pcm_8k):
        return ""  # the decoder invents a word or two in pure silence
    wide, _ = audioop.ratecv(pcm_8k, 2, 1, RATE, 16000, None)
    with _decoder_lock:
        decoder = _decoder(tuple(extra_sentences))
        decoder.start_utt()
        decoder.process_raw(wide, full_utt=True)
        decoder.end_utt()
        hypothesis = decoder.hyp()
    return " ".join(words_of(hypothesis.hypstr)) if hypothesis is not None else ""


def common_words_ratio(expected: str, transcript: str) -> float:
    """Share of the expected words found in the transcript in the same order (LCS)."""
    want, got = words_of(expected), words_of(transcript)
    if not want:
        return 1.0
    row = [0] * (len(got) + 1)
    for word in want:
        previous = 0
        for j, other in enumerate(got, 1):
            current = row[j]
            row[j] = previous + 1 if word == other else max(row[j], row[j - 1])
            previous = current
    return row[-1] / len(want)


def assert_heard(pcm: bytes, expected: str, min_ratio: float = 0.6) -> str:
    """Fail unless at least `min_ratio` of `expected`'s words were recognised, in order."""
    transcript = transcribe(pcm)
    ratio = common_words_ratio(expected, transcript)
    assert ratio >= min_ratio, (
        f"expected to hear {expected!r} (at least {min_ratio:.0%} of its words), "
        f"recognised {transcript!r} ({ratio:.0%})"
    )
    return transcript


def uses_recorded_prompts(name: str = "vm-intro") -> bool:
    """True when the server plays Asterisk's recordings, not the espeak fallback."""
    return not SOUNDS.find(name).is_relative_to(REPO / "prompts")
