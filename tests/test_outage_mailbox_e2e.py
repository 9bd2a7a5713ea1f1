"""A realtime mailbox through a database outage: the row read on its last call is used, and a
mailbox never seen still takes the message; both arrive once when the database returns."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from voicemail.callpath import CALL_PATH_DB_WAIT

from . import sipp
from .dbbackends import Backend, tcp_proxy
from .server import start_server, unavailable_greeting_seconds, write_config
from .test_deposit_e2e import DATA, assert_recording_is, deposit_scenario, rows

pytestmark = pytest.mark.timeout(240)


def leave_message(server_target: str, mailbox: str, workdir: Path, outage: bool) -> None:
    pcap = DATA / "signal3s_pcmu.pcap"
    wait = unavailable_greeting_seconds(mailbox) + (2 * CALL_PATH_DB_WAIT if outage else 0.5)
    xml = deposit_scenario(
        mailbox,
        pcap,
        [0, 101],
        [sipp.pause(3200), sipp.bye(mailbox), sipp.recv(200)],
        wait_seconds=wait,
    )
    sipp.run_sipp(workdir, xml, server_target, timeout=90).check()


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_realtime_mailbox_is_served_from_its_last_row_while_the_database_is_away(
    backend: Backend, tmp_path: Path
) -> None:
    with tcp_proxy(5432) as proxy:
        via_proxy = backend.via(proxy.port)
        config = write_config(tmp_path / "etc", via_proxy, mailboxes="")
        server = start_server(config)
        try:
            for mailbox in ("2000", "3000"):
                backend.sql(
                    "INSERT INTO voicemail (context, mailbox, password, fullname) "
                    "VALUES ('default', ?, '1234', 'Realtime Box')",
                    mailbox,
                )
            leave_message(server.target, "2000", tmp_path / "a", outage=False)
            assert len(rows(backend)) == 1
            proxy.stop()  # the database goes away
            leave_message(server.target, "2000", tmp_path / "b", outage=True)
            server.wait_for_log("mailbox 2000@default: database away")
            leave_message(server.target, "3000", tmp_path / "c", outage=True)
            server.wait_for_log("cannot look up mailbox 3000@default")
            assert len(list((config / "spool").glob("*.vmsg"))) == 2
            proxy.start()  # the database returns
            deadline = time.monotonic() + 40
            while len(rows(backend)) < 3 and time.monotonic() < deadline:
                time.sleep(0.5)
            stored = rows(backend)
            assert [row["dir"].split("/")[-2] for row in stored] == ["2000", "2000", "3000"]
            for row in stored:
                assert_recording_is(row, DATA / "signal3s_pcmu.pcap", 3.0)
        finally:
            assert server.stop() == 0, server.log()
