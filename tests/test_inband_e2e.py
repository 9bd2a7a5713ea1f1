"""A caller whose phone offers no telephone-event presses # as a tone in the audio."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import pytest

from . import sipp
from .audio import test_signal, write_rtp_pcap
from .dbbackends import Backend
from .server import RunningServer, start_server, write_config
from .test_deposit_e2e import assert_recording_is, deposit_scenario, rows

pytestmark = pytest.mark.timeout(120)


def tone(low: float, high: float, seconds: float, level: float = 8000.0) -> bytes:
    samples = int(seconds * 8000)
    return b"".join(
        struct.pack(
            "<h",
            int(
                level
                * (math.sin(2 * math.pi * low * n / 8000) + math.sin(2 * math.pi * high * n / 8000))
                / 2
            ),
        )
        for n in range(samples)
    )


@pytest.fixture
def server(backend: Backend, tmp_path: Path):  # noqa: ANN201
    running = start_server(write_config(tmp_path / "etc", backend))
    yield running
    assert running.stop() == 0, running.log()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_inband_pound_tone_ends_the_recording(
    server: RunningServer, backend: Backend, tmp_path: Path
) -> None:
    speech = test_signal(3.0)
    pound = tone(941, 1477, 0.2)  # '#': 941 Hz row, 1477 Hz column
    pcap = tmp_path / "speech_then_pound.pcap"
    write_rtp_pcap(pcap, speech + pound + b"\x00\x00" * 1600, 0)
    xml = deposit_scenario(
        "1000", pcap, [0], [sipp.pause(3500), sipp.recv_request("BYE"), sipp.answer_request()]
    )
    sipp.run_sipp(tmp_path / "sipp", xml, server.target, timeout=60).check()
    stored = rows(backend)
    assert len(stored) == 1, server.log()
    server.wait_for_log("stopped by digit")
    # The detector needs about 40 ms of the tone before it reports the key.
    assert_recording_is(stored[0], pcap, 3.0, tolerance=0.1)
