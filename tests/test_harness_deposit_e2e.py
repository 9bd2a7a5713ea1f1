"""The softphone harness against VoiceMail deposit: what the caller heard, checked two ways.

The caller's RTP is decoded and matched against the server's prompt files (cross-
correlation) and transcribed by pocketsphinx, so these tests fail if the server plays the
wrong prompt, the wrong digits, garbled audio or nothing, whatever its log says.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .audio import best_correlation, test_signal, wav_pcm
from .dbbackends import Backend
from .heard import find_prompts, prompts_heard, transcribe, uses_recorded_prompts
from .server import RunningServer, start_server, write_config
from .softphone import Softphone
from .test_deposit_e2e import rows

pytestmark = pytest.mark.timeout(180)

GREETING = [
    "vm-theperson",
    "digits/1",
    "digits/0",
    "digits/0",
    "digits/0",
    "vm-isunavail",
    "vm-intro",
    "beep",
]
CANDIDATES = [
    *GREETING,
    *(f"digits/{d}" for d in range(10)),
    "vm-isonphone",
    "vm-login",
    "vm-password",
    "vm-goodbye",
    "auth-thankyou",
]


@pytest.fixture
def server(backend: Backend, tmp_path: Path) -> Iterator[RunningServer]:
    running = start_server(write_config(tmp_path / "etc", backend))
    yield running
    assert running.stop() == 0, running.log()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
@pytest.mark.parametrize("mode", ["rfc4733", "info"])
def test_caller_hears_the_greeting_records_3s_ends_with_pound_and_hears_thank_you(
    server: RunningServer, backend: Backend, mode: str
) -> None:
    signal = test_signal(3.0)
    with Softphone(server) as phone:
        call = phone.call("1000")
        greeting = call.wait_prompts(GREETING, candidates=CANDIDATES, timeout=60)
        beep_end = greeting[-1].end
        # Nothing else before or among them, and the sequence is complete and in order.
        assert prompts_heard(call.heard(0, beep_end + 0.1), CANDIDATES) == GREETING
        call.send_pcm(signal)
        call.dtmf("#", mode=mode)
        after = call.wait_prompts(["auth-thankyou"], candidates=CANDIDATES, after=beep_end)
        call.wait_hangup(timeout=30)
    assert [m.name for m in after] == ["auth-thankyou"], server.log()
    assert call.ended_by == "server"
    # The speech check: the first seconds say who is unavailable.
    first = transcribe(call.heard(0, greeting[5].end + 0.2))
    if uses_recorded_prompts():
        assert "unavailable" in first or "extension" in first, first
    # The message in the database is the 3 s the caller said, not the greeting or the key.
    stored = rows(backend)
    assert len(stored) == 1, server.log()
    rate, width, channels, frames = wav_pcm(bytes(stored[0]["recording"]))
    assert (rate, width, channels) == (8000, 2, 1)
    seconds = len(frames) / 2 / rate
    assert 2.9 <= seconds <= 3.3, f"recorded {seconds:.3f} s of a 3 s message"
    coefficient, lag = best_correlation(signal, frames)
    assert coefficient > 0.95 and 0 <= lag <= 0.6 * rate, (coefficient, lag)
    server.wait_for_log("stopped by digit")
    assert not find_prompts(frames, ["beep", "vm-intro"]), "the prompts were recorded"


PEER = "[5551234]\ntype=friend\nhost=dynamic\nsecret=s3cret\ncontext=default\n"


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_peer_authenticates_with_digest_and_hears_the_greeting_in_pcma(
    backend: Backend, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "etc", backend)
    with (config / "sip.conf").open("a") as sip_conf:
        sip_conf.write(PEER)
    server = start_server(config)
    try:
        with Softphone(server, password="wrong") as phone:
            refused = phone.call("1000", expect=403)
            assert refused.ended.is_set() and not refused.established
            assert refused.challenges == [401]
        with Softphone(server, password="s3cret") as phone:
            call = phone.call("1000", codecs=("PCMA",))
            assert call.challenges == [401]
            assert call.answer is not None and call.answer.payload_type == 8
            call.wait_prompts(GREETING[:5], candidates=CANDIDATES, timeout=60)
            assert call.hangup() == 200
        assert rows(backend) == []  # hung up during the greeting: no message
    finally:
        assert server.stop() == 0, server.log()
    assert "Traceback" not in server.log()
