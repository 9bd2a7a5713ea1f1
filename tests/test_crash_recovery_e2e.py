"""SIGKILL during a recording: the next start stores what the caller had said, exactly once,
marked as recovered (Asterisk leaves such files orphaned)."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest

from . import sipp
from .dbbackends import Backend
from .server import start_server, write_config
from .test_deposit_e2e import DATA, deposit_scenario
from .test_reload_e2e import wait_for

pytestmark = pytest.mark.timeout(180)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_recording_cut_by_sigkill_is_stored_at_the_next_start(
    backend: Backend, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "etc", backend)
    server = start_server(config)
    xml = deposit_scenario(
        "1000",
        DATA / "signal5s_pcmu.pcap",
        [0, 101],
        [sipp.pause(5200), sipp.bye("1000"), sipp.recv(200)],
    )
    call = threading.Thread(
        target=lambda: sipp.run_sipp(tmp_path / "sipp", xml, server.target, timeout=60),
        daemon=True,
    )
    try:
        call.start()
        wait_for(server, "recording for 1000@default", timeout=30)
        time.sleep(3.5)  # the caller has spoken for about 3.5 s, 2-3 s of it fsynced
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(10)
    finally:
        server.stop()
    assert backend.sql("SELECT msgnum FROM voicemessages") == []
    call.join(70)
    again = start_server(config)
    try:
        wait_for(again, "from a recording interrupted by a crash", timeout=20)
        deadline = time.monotonic() + 30
        stored: list[dict] = []
        while not stored and time.monotonic() < deadline:
            stored = backend.sql("SELECT msgnum, duration, category, recording FROM voicemessages")
            time.sleep(0.3)
        time.sleep(1.0)
        stored = backend.sql("SELECT msgnum, duration, category, recording FROM voicemessages")
        assert len(stored) == 1, again.log()
        assert stored[0]["category"] == "recovered-after-crash"
        assert 1 <= int(stored[0]["duration"]) <= 4, stored[0]["duration"]
    finally:
        assert again.stop() == 0, again.log()
    # A third start finds nothing left to recover.
    third = start_server(config)
    try:
        time.sleep(1.0)
        assert "interrupted by a crash" not in third.log()
        assert len(backend.sql("SELECT msgnum FROM voicemessages")) == 1
    finally:
        assert third.stop() == 0, third.log()
