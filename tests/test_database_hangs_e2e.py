"""A database that stops answering (a firewall dropping packets, not a refused connection):
the caller still hears the greeting at once, the message waits in the local spool, and it is
stored exactly once when the database answers again."""

from __future__ import annotations

import re
import time
from datetime import datetime
from pathlib import Path

import pytest

from voicemail.callpath import CALL_PATH_DB_WAIT

from . import sipp
from .dbbackends import Backend, tcp_proxy
from .server import RunningServer, start_server, unavailable_greeting_seconds, write_config
from .test_deposit_e2e import DATA, assert_recording_is, deposit_scenario, rows

pytestmark = pytest.mark.timeout(240)

UPSTREAM = {"postgresql": 5432, "mysql": 3306}
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def logged_at(server: RunningServer, text: str) -> datetime:
    """When the server logged the first line containing `text`."""
    for line in server.log().splitlines():
        if text in line:
            match = _STAMP.match(line)
            assert match, line
            return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
    raise AssertionError(f"{text!r} not in log:\n{server.log()}")


@pytest.mark.parametrize("backend", ["postgresql", "mysql"], indirect=True)
def test_a_hung_database_does_not_keep_the_caller_waiting_or_lose_the_message(
    backend: Backend, tmp_path: Path
) -> None:
    with tcp_proxy(UPSTREAM[backend.name]) as proxy:
        via_proxy = backend.via(proxy.port)
        config = write_config(tmp_path / "etc", via_proxy)
        with (config / "res_odbc.conf").open("a") as res_odbc:
            res_odbc.write("dbtimeout => 1\n")
        server = start_server(config)
        try:
            proxy.blackhole()  # connections stay open; nothing comes back
            pcap = DATA / "signal3s_pcmu.pcap"
            xml = deposit_scenario(
                "1000",
                pcap,
                [0, 101],
                [sipp.pause(3200), sipp.bye("1000"), sipp.recv(200)],
                wait_seconds=unavailable_greeting_seconds("1000") + CALL_PATH_DB_WAIT + 0.5,
            )
            sipp.run_sipp(tmp_path / "sipp", xml, server.target, timeout=90).check()
            invited = logged_at(server, "call 1-")
            greeted = logged_at(server, "for 1000@default: greeting")
            assert (greeted - invited).total_seconds() < 2.0, server.log()
            server.wait_for_log("in the local spool (database away)")
            assert len(list((config / "spool").glob("*.vmsg"))) == 1
            assert rows(backend) == []
            proxy.forward()  # the database answers again, held bytes included
            deadline = time.monotonic() + 60
            while not rows(backend) and time.monotonic() < deadline:
                time.sleep(0.5)
            while list((config / "spool").glob("*.vmsg")) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not list((config / "spool").glob("*.vmsg")), server.log()
            time.sleep(2)  # an abandoned INSERT coming back late must not add a second row
            stored = rows(backend)
            assert len(stored) == 1, server.log()
            assert_recording_is(stored[0], pcap, 3.0)
        finally:
            assert server.stop() == 0, server.log()
