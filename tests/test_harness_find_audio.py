"""`heard.find_audio` (any reference audio) and prompt `heads` (a prompt cut short), on
audio made here and passed through G.711 as on the wire (no server run)."""

from __future__ import annotations

import warnings

import pytest

from .audio import test_signal
from .heard import find_audio, prompts_heard
from .server import SOUNDS

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

pytestmark = pytest.mark.timeout(60)


def wire(pcm: bytes) -> bytes:
    return audioop.ulaw2lin(audioop.lin2ulaw(pcm, 2), 2)


def silence(seconds: float) -> bytes:
    return bytes(2 * round(seconds * 8000))


def test_find_audio_places_each_message_and_tells_them_apart() -> None:
    first, second, other = (test_signal(2.0, seed=s) for s in (1, 2, 3))
    heard = wire(silence(0.5) + first + silence(1.0) + second + silence(0.25))
    [match] = find_audio(heard, first)
    assert match.start == pytest.approx(0.5, abs=0.001) and match.score > 0.95
    assert find_audio(heard, second)[0].start == pytest.approx(3.5, abs=0.001)
    assert find_audio(heard, other) == []
    assert find_audio(heard, first[: len(first) // 2])  # a part is found in the whole
    assert find_audio(wire(first[: len(first) // 2]), first) == []  # not the whole in a part


def test_a_prompt_cut_short_counts_only_with_a_head() -> None:
    cut = SOUNDS.load_pcm("vm-options")[: 2 * 8000 * 2]  # its first 2 s, then a key
    heard = wire(silence(0.3) + cut + silence(0.5) + SOUNDS.load_pcm("vm-goodbye"))
    names = ["vm-options", "vm-goodbye"]
    assert prompts_heard(heard, names) == ["vm-goodbye"]
    assert prompts_heard(heard, names, heads={"vm-options": 1.5}) == names
