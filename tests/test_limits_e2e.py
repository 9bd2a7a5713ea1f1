"""Limits that protect the server from callers: the longest recording, how many calls, how full
the local spool may get."""

from __future__ import annotations

from pathlib import Path

import pytest

from . import sipp
from .dbbackends import Backend
from .server import start_server, write_config
from .test_deposit_e2e import DATA, deposit_scenario, rows

pytestmark = pytest.mark.timeout(180)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_maxrecordsecs_caps_a_recording_when_maxsecs_is_unlimited(
    backend: Backend, tmp_path: Path
) -> None:
    """Asterisk's maxsecs=0 means no limit; ours stops at maxrecordsecs all the same."""
    config = write_config(tmp_path / "etc", backend, general="maxsecs=0\nmaxrecordsecs=2\n")
    server = start_server(config)
    try:
        xml = deposit_scenario(
            "1000",
            DATA / "signal5s_pcmu.pcap",
            [0, 101],
            [sipp.pause(5200), sipp.bye("1000"), sipp.recv(200, optional=True)],
        )
        sipp.run_sipp(tmp_path / "sipp", xml, server.target, timeout=60)
        stored = rows(backend)
        assert len(stored) == 1, server.log()
        assert int(stored[0]["duration"]) == 2
        assert "recording for 1000@default (at most 2 s)" in server.log()
        assert "stopped by maxsecs" in server.log()
    finally:
        assert server.stop() == 0, server.log()
