"""The issue's "done": a phone that is a row of the realtime sippeers table subscribes and
gets correct NOTIFYs when its mailbox changes, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from . import sipp, test_register_e2e
from .dbbackends import Backend
from .test_deposit_e2e import DATA, deposit_scenario, rows
from .test_mwi_e2e import (
    ACTIVE,
    INBOX,
    PASSWORD,
    authenticated_subscribe,
    notify_variables,
    recv_notify,
    references,
    summary_regexp,
    wait_for,
)
from .test_register_e2e import Starter, add_peer

start = test_register_e2e.start  # the fixture that starts a server with a sippeers table

pytestmark = pytest.mark.timeout(90)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_realtime_peer_subscribes_and_is_notified_of_a_new_message(
    start: Starter,
    backend: Backend,
    tmp_path: Path,
) -> None:
    server = start(general="rtcachefriends=yes\n")
    add_peer(backend, "7001", secret=PASSWORD, mailbox="1000@default")  # added at run time
    phone = sipp.start_sipp(
        tmp_path / "phone",
        sipp.scenario(
            "phone",
            *authenticated_subscribe("7001"),
            *recv_notify("n1", summary_regexp(server, "no", "0/0"), ACTIVE),
            *recv_notify("n2", summary_regexp(server, "yes", "1/0"), ACTIVE),
            references("granted", *notify_variables("n1", "n2")),
        ),
        server.target,
        name="phone",
        timeout=60,
    )
    try:
        wait_for(lambda: len(phone.received()) >= 3, 10, "the first NOTIFY")
        deposit = deposit_scenario(
            "1000",
            DATA / "signal3s_pcmu.pcap",
            [0, 101],
            [sipp.pause(3200), sipp.bye("1000"), sipp.recv(200)],
        )
        sipp.run_sipp(tmp_path / "caller", deposit, server.target, timeout=40).check()
        assert [r["dir"] for r in rows(backend)] == [INBOX]
        phone.wait(15).check()
    finally:
        phone.stop()
