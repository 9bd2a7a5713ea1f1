"""The two checks of what a caller heard, on the server's own prompt files (no server run).

The audio goes through G.711 as on the wire; the correlation check must name exactly the
prompts in it, and the speech check must recognise Asterisk's recorded prompts.
"""

from __future__ import annotations

import warnings

import pytest

from .audio import test_signal
from .heard import (
    assert_heard,
    common_words_ratio,
    find_prompts,
    prompts_heard,
    transcribe,
    uses_recorded_prompts,
)
from .server import SOUNDS

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

pytestmark = pytest.mark.timeout(120)

DIGITS = [f"digits/{d}" for d in range(10)]
recorded_only = pytest.mark.skipif(
    not uses_recorded_prompts(), reason="speech checks need asterisk-core-sounds-en-wav"
)


def on_the_wire(*parts: str | float, law: str = "ulaw") -> bytes:
    """Prompts (names) and silences (seconds) in a row, through G.711 and back."""
    pcm = b"".join(
        bytes(2 * round(p * 8000)) if isinstance(p, float) else SOUNDS.load_pcm(p) for p in parts
    )
    if law == "ulaw":
        return audioop.ulaw2lin(audioop.lin2ulaw(pcm, 2), 2)
    return audioop.alaw2lin(audioop.lin2alaw(pcm, 2), 2)


@pytest.mark.parametrize("law", ["ulaw", "alaw"])
def test_prompts_heard_names_the_sequence_with_repeats_and_gaps(law: str) -> None:
    heard = on_the_wire(0.3, "vm-youhave", "digits/2", 0.2, "vm-INBOX", "vm-messages", 1.0,
                        "digits/0", "digits/0", "vm-goodbye", law=law)  # fmt: skip
    candidates = ["vm-youhave", "vm-INBOX", "vm-Old", "vm-messages", "vm-goodbye", *DIGITS]
    assert prompts_heard(heard, candidates) == [
        "vm-youhave", "digits/2", "vm-INBOX", "vm-messages", "digits/0", "digits/0", "vm-goodbye"
    ]  # fmt: skip
    first = find_prompts(heard, ["vm-youhave"])[0]
    assert first.start == pytest.approx(0.3, abs=0.001) and first.score > 0.99


def test_prompts_heard_finds_nothing_in_other_audio() -> None:
    noise = test_signal(4.0)
    assert prompts_heard(noise, ["vm-intro", "vm-login", "beep", *DIGITS]) == []
    assert prompts_heard(bytes(16000), ["vm-login"]) == []  # silence
    truncated = on_the_wire("vm-login")[: len(SOUNDS.load_pcm("vm-login")) // 4 * 2]
    assert prompts_heard(truncated, ["vm-login"]) == []  # half a prompt is not the prompt


def test_a_different_prompt_is_not_taken_for_the_expected_one() -> None:
    heard = on_the_wire(0.2, "vm-password", 0.2)
    assert prompts_heard(heard, ["vm-login", "vm-passchanged", "vm-password"]) == ["vm-password"]


@recorded_only
def test_transcribe_you_have_two_new_messages() -> None:
    heard = on_the_wire(0.3, "vm-youhave", "digits/2", "vm-INBOX", "vm-messages", 0.3)
    transcript = assert_heard(heard, "you have two new messages", min_ratio=0.6)
    assert transcript.startswith("you have")


@recorded_only
def test_transcribe_tells_prompts_apart() -> None:
    login = transcribe(on_the_wire(0.3, "vm-login", 0.3))
    goodbye = transcribe(on_the_wire(0.3, "vm-goodbye", 0.3))
    assert "mailbox" in login and "goodbye" not in login, login
    assert "goodbye" in goodbye and "mailbox" not in goodbye, goodbye
    with pytest.raises(AssertionError, match="recognised"):
        assert_heard(on_the_wire("vm-goodbye"), "please enter your mailbox")


def test_silence_and_noise_transcribe_to_no_prompt_words() -> None:
    assert transcribe(bytes(16000)) == ""
    assert common_words_ratio("you have two new messages", transcribe(test_signal(2.0))) < 0.6
