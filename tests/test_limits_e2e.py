"""Limits that protect the server from callers: the longest recording, how many calls, how full
the local spool may get."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from . import sipp
from .dbbackends import Backend
from .server import start_server, write_config
from .test_deposit_e2e import DATA, deposit_scenario, rows
from .test_reload_e2e import wait_for

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
        # The limit is wall-clock time from the beep, as Asterisk's maxsecs: the caller's
        # audio starts a little after it, so 1-2 s of a 5 s message are kept.
        assert int(stored[0]["duration"]) in (1, 2)
        assert "recording for 1000@default (at most 2 s)" in server.log()
        assert "stopped by maxsecs" in server.log()
    finally:
        assert server.stop() == 0, server.log()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_maxcalls_refuses_a_call_past_the_limit_with_503(backend: Backend, tmp_path: Path) -> None:
    config = write_config(tmp_path / "etc", backend)
    with (config / "sip.conf").open("a") as sip_conf:
        sip_conf.write("maxcalls=1\n")
    server = start_server(config)
    first = deposit_scenario(
        "1000",
        DATA / "signal3s_pcmu.pcap",
        [0, 101],
        [sipp.pause(3200), sipp.bye("1000"), sipp.recv(200)],
    )
    refused = sipp.scenario(
        "second",
        sipp.invite("1000", [0, 101]),
        sipp.recv(100, optional=True),
        sipp.recv(503),
        sipp.ack_non2xx("1000"),
    )
    try:
        results: list[sipp.SippResult] = []
        call = threading.Thread(
            target=lambda: results.append(
                sipp.run_sipp(tmp_path / "a", first, server.target, timeout=60)
            )
        )
        call.start()
        wait_for(server, "greeting")
        sipp.run_sipp(tmp_path / "b", refused, server.target, timeout=30).check()
        call.join(60)
        results[0].check()  # the call in progress was not disturbed
        assert len(rows(backend)) == 1
    finally:
        assert server.stop() == 0, server.log()
