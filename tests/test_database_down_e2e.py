"""A call while the database is away: the caller is recorded, the message waits in the local
spool, and it is stored exactly once when the database returns."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from voicemail.app_voicemail import CALL_PATH_DB_WAIT

from . import sipp
from .dbbackends import Backend, tcp_proxy
from .server import start_server, unavailable_greeting_seconds, write_config
from .test_deposit_e2e import DATA, assert_recording_is, deposit_scenario, rows

pytestmark = pytest.mark.timeout(180)


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_message_left_while_the_database_is_down_arrives_when_it_returns(
    backend: Backend, tmp_path: Path
) -> None:
    with tcp_proxy(5432) as proxy:
        via_proxy = backend.via(proxy.port)
        config = write_config(tmp_path / "etc", via_proxy)
        server = start_server(config)
        try:
            proxy.stop()  # the database goes away before the call
            pcap = DATA / "signal3s_pcmu.pcap"
            xml = deposit_scenario(
                "1000",
                pcap,
                [0, 101],
                [sipp.pause(3200), sipp.bye("1000"), sipp.recv(200)],
                # The first greeting lookup waits CALL_PATH_DB_WAIT before giving up.
                wait_seconds=unavailable_greeting_seconds("1000") + CALL_PATH_DB_WAIT + 0.5,
            )
            started = time.monotonic()
            sipp.run_sipp(tmp_path / "sipp", xml, server.target, timeout=90).check()
            call_seconds = time.monotonic() - started
            server.wait_for_log("in the local spool (database away)")
            assert list((config / "spool").glob("*.vmsg")), "the message is not in the spool"
            proxy.start()  # the database returns
            deadline = time.monotonic() + 30
            while not rows(backend) and time.monotonic() < deadline:
                time.sleep(0.5)
            stored = rows(backend)
            assert len(stored) == 1, server.log()
            assert_recording_is(stored[0], pcap, 3.0)
            # The flusher removes the spool file just after the commit we saw.
            while list((config / "spool").glob("*.vmsg")) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not list((config / "spool").glob("*.vmsg"))
            # The caller was not kept waiting for the outage (greeting + 3 s + margins).
            assert call_seconds < 30, call_seconds
        finally:
            assert server.stop() == 0, server.log()
