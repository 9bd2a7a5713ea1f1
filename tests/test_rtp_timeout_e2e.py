"""sip.conf rtptimeout: a call whose caller sends no RTP is hung up, its audio kept."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from . import sipp
from .dbbackends import Backend
from .server import start_server, write_config

pytestmark = pytest.mark.timeout(90)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_dead_call_is_hung_up_after_rtptimeout(backend: Backend, tmp_path: Path) -> None:
    config = write_config(tmp_path / "etc", backend)
    with (config / "sip.conf").open("a") as sip_conf:
        sip_conf.write("rtptimeout=3\n")
    server = start_server(config)
    try:
        xml = sipp.scenario(
            "silent",
            sipp.invite("1000", [0, 101]),
            sipp.recv(100, optional=True),
            sipp.recv(200),
            sipp.ack("1000"),
            # No RTP at all: the server must give up by itself, well before sipp's timeout.
            sipp.recv_request("BYE"),
            sipp.answer_request(),
        )
        started = time.monotonic()
        sipp.run_sipp(tmp_path / "sipp", xml, server.target, timeout=40).check()
        elapsed = time.monotonic() - started
        assert 3 <= elapsed < 8, elapsed
        server.wait_for_log("RTP timeout")
    finally:
        assert server.stop() == 0, server.log()
