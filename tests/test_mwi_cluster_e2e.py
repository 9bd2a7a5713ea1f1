"""End to end, two servers on one database: a phone subscribed on B sees what happens on A.

Server A takes the calls (deposits by sipp, VoiceMailMain with keys by SIP INFO); the phone
(a background sipp) is subscribed on server B only. With `pollmailboxes=no` nothing but the
change feed (LISTEN/NOTIFY on PostgreSQL, the change log read by id on MariaDB and SQLite)
can have told B. Each NOTIFY body is checked by sipp (`ereg check_it`) and again here; waits
are bounded (FEED_WAIT), never timed assertions (bench/mwi_propagation.py measures).

The poll, the safety net for rows changed behind our back, is shown with SQL that bypasses
the change log, and on PostgreSQL by the table's scan counter: one count query per poll for
all watched mailboxes, not one per phone.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pyodbc
import pytest

from . import sipp
from .dbbackends import Backend
from .server import DEFAULT_EXTENSIONS, RunningServer, start_server, write_config
from .test_deposit_e2e import DATA, deposit_scenario
from .test_mwi_e2e import (
    ACTIVE,
    INBOX,
    PEERS,
    authenticated_subscribe,
    insert_message,
    notify_variables,
    recv_notify,
    references,
    summary_regexp,
    wait_for,
)
from .test_vmmain_e2e import PIN, Keys, call

pytestmark = pytest.mark.timeout(240)

FEED_WAIT = 5.0  # bound on waiting for a NOTIFY after the change committed
MAILBOXES = f"[default]\n1000 => {PIN},Alice Example\n"
EXTENSIONS = DEFAULT_EXTENSIONS.replace(
    "[default]\n", "[default]\nexten => 8500,1,VoiceMailMain(@default)\nsame => n,Hangup()\n", 1
)
# Three more phones, each watching a mailbox of its own (the poll's query count).
WATCHERS = "".join(
    f"\n[700{i}]\ntype=friend\nhost=dynamic\nsecret=pw\nmailbox=200{i}@default\ncontext=default\n"
    for i in (1, 2, 3)
)


def start_node(tmp_path: Path, backend: Backend, name: str, general: str) -> RunningServer:
    """One server of the pair: its own configuration directory, spool and SIP port."""
    config = write_config(
        tmp_path / name, backend, mailboxes=MAILBOXES, extensions=EXTENSIONS, general=general
    )
    with (config / "sip.conf").open("a") as sip_conf:
        sip_conf.write(PEERS + WATCHERS)
    return start_server(config)


@pytest.fixture
def pair(backend: Backend, tmp_path: Path) -> Iterator[tuple[RunningServer, RunningServer]]:
    """Servers A and B on one database, polling off: only the feed carries changes."""
    a = start_node(tmp_path, backend, "a", "pollmailboxes=no\n")
    try:
        b = start_node(tmp_path, backend, "b", "pollmailboxes=no\n")
    except BaseException:
        a.stop()
        raise
    try:
        yield a, b
    finally:
        for server in (b, a):
            assert server.stop() == 0, server.log()
            assert "Traceback" not in server.log(), server.log()


def notifies(phone: sipp.BackgroundSipp) -> list[str]:
    return [text for _, text in phone.received() if text.startswith("NOTIFY ")]


def wait_for_notify(phone: sipp.BackgroundSipp, count: int, server: RunningServer) -> str:
    wait_for(lambda: len(notifies(phone)) >= count, FEED_WAIT, f"NOTIFY {count}")
    found = notifies(phone)
    assert len(found) == count, found
    return found[-1]


def body_of(notify: str) -> str:
    return notify.split("\r\n\r\n", 1)[1]


def expected_body(server: RunningServer, new: int, old: int) -> str:
    return (
        f"Messages-Waiting: {'yes' if new else 'no'}\r\n"
        f"Message-Account: sip:asterisk@{server.target}\r\n"
        f"Voice-Message: {new}/{old} (0/0)\r\n"
    )


def deposit_on(server: RunningServer, workdir: Path) -> None:
    """A caller leaves a 3 s message for 1000 through `server`; the 200 to its BYE comes once
    the message is committed."""
    xml = deposit_scenario(
        "1000",
        DATA / "signal3s_pcmu.pcap",
        [0, 101],
        [sipp.pause(3200), sipp.bye("1000"), sipp.recv(200)],
    )
    sipp.run_sipp(workdir, xml, server.target, timeout=60).check()


def phone_on(server: RunningServer, workdir: Path, counts: list[str]) -> sipp.BackgroundSipp:
    """6001 subscribes on `server` and expects one NOTIFY per entry of `counts`."""
    steps = []
    for i, value in enumerate(counts):
        waiting = "no" if value.startswith("0/") else "yes"
        steps += recv_notify(f"n{i}", summary_regexp(server, waiting, value), ACTIVE)
    return sipp.start_sipp(
        workdir,
        sipp.scenario(
            "phone",
            *authenticated_subscribe("6001"),
            *steps,
            references("granted", *notify_variables(*(f"n{i}" for i in range(len(counts))))),
        ),
        server.target,
        name="phone",
        timeout=180,
    )


@pytest.mark.parametrize("backend", ["postgresql", "mysql", "sqlite"], indirect=True)
def test_phone_on_b_sees_deposits_and_a_menu_delete_on_a(
    pair: tuple[RunningServer, RunningServer], backend: Backend, tmp_path: Path
) -> None:
    a, b = pair
    feed_line = (
        "MWI feed: LISTEN on PostgreSQL channel"
        if backend.name == "postgresql"
        else "MWI feed: reading the change log every 200 ms"
    )
    assert feed_line in b.log() and feed_line in a.log()
    phone = phone_on(b, tmp_path / "phone", ["0/0", "1/0", "2/0", "1/0"])
    try:
        wait_for_notify(phone, 1, b)
        deposit_on(a, tmp_path / "deposit1")
        assert body_of(wait_for_notify(phone, 2, b)) == expected_body(b, 1, 0)
        deposit_on(a, tmp_path / "deposit2")
        assert body_of(wait_for_notify(phone, 3, b)) == expected_body(b, 2, 0)

        # VoiceMailMain on A: log in, play the first message, delete it (7), hang up.
        keys = Keys()
        xml = call(
            keys,
            *keys.press(f"1000#{PIN}#"),
            sipp.pause(1500),
            *keys.press("11", 1000),
            *keys.press("7", 1500),
        )
        sipp.run_sipp(tmp_path / "vmmain", xml, a.target, timeout=60).check()
        a.wait_for_log("closed INBOX (1 deleted, 0 moved to Old)")
        assert body_of(wait_for_notify(phone, 4, b)) == expected_body(b, 1, 0)
        phone.wait(15).check()
    finally:
        phone.stop()
    assert len(backend.sql(f"SELECT msgnum FROM voicemessages WHERE dir = '{INBOX}'")) == 1
    assert "peer 6001 subscribed to MWI" in b.log() and "peer 6001" not in a.log()


def move_to_old_by_sql(backend: Backend) -> None:
    """An admin's UPDATE: the message is now heard, and no change row says so."""
    connection = pyodbc.connect(backend.connection_string, autocommit=True)
    try:
        connection.execute(
            "UPDATE voicemessages SET dir = ? WHERE dir = ?", INBOX.replace("INBOX", "Old"), INBOX
        )
    finally:
        connection.close()


@pytest.mark.parametrize("backend", ["postgresql", "mysql"], indirect=True)
def test_the_poll_notices_rows_changed_behind_our_back(backend: Backend, tmp_path: Path) -> None:
    server = start_node(tmp_path, backend, "b", "pollmailboxes=yes\npollfreq=1\n")
    try:
        phone = phone_on(server, tmp_path / "phone", ["0/0", "1/0", "0/1"])
        try:
            wait_for_notify(phone, 1, server)
            changes = len(backend.sql("SELECT id FROM mailbox_changes"))
            insert_message(backend, 0)  # as an Asterisk box sharing the table does
            assert body_of(wait_for_notify(phone, 2, server)) == expected_body(server, 1, 0)
            move_to_old_by_sql(backend)
            assert body_of(wait_for_notify(phone, 3, server)) == expected_body(server, 0, 1)
            phone.wait(15).check()
        finally:
            phone.stop()
        # Neither change went through the change log: the poll alone found them.
        assert len(backend.sql("SELECT id FROM mailbox_changes")) == changes
    finally:
        assert server.stop() == 0, server.log()
    assert "Traceback" not in server.log(), server.log()


def table_scans(backend: Backend) -> int:
    """How many times PostgreSQL has scanned voicemessages (sequential and index scans)."""
    row = backend.sql(
        "SELECT COALESCE(seq_scan, 0) + COALESCE(idx_scan, 0) AS scans "
        "FROM pg_stat_user_tables WHERE relname = 'voicemessages'"
    )[0]
    return int(row["scans"])


def watcher(server: RunningServer, user: str, workdir: Path) -> sipp.BackgroundSipp:
    """Phone `user` subscribes, takes its first NOTIFY and stays subscribed for a while."""
    return sipp.start_sipp(
        workdir,
        sipp.scenario(
            "watcher",
            *authenticated_subscribe(user),
            *recv_notify("n0", summary_regexp(server, "no", "0/0"), ACTIVE),
            sipp.pause(30000),
            references("granted", *notify_variables("n0")),
        ),
        server.target,
        name=f"watcher{user}",
        timeout=60,
    )


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_one_count_query_per_poll_for_all_watched_mailboxes(
    backend: Backend, tmp_path: Path
) -> None:
    """Three phones watch three mailboxes; PostgreSQL's scan counter of the message table
    grows by about one per poll (pollfreq=1), not three. The statistics reach the view up to
    a second or two late, hence the margin; one query per phone is three times the polls."""
    server = start_node(tmp_path, backend, "b", "pollmailboxes=yes\npollfreq=1\n")
    phones = [watcher(server, f"700{i}", tmp_path / f"w{i}") for i in (1, 2, 3)]
    try:
        for phone in phones:
            wait_for(lambda p=phone: len(notifies(p)) >= 1, 10, "the first NOTIFY")
        time.sleep(3)  # the subscriptions' own counts reach the statistics
        before, started = table_scans(backend), time.monotonic()
        time.sleep(10)
        scans, seconds = table_scans(backend) - before, time.monotonic() - started
        print(f"{scans} scans of voicemessages in {seconds:.1f} s with 3 watched mailboxes")
        # About one a poll (12 in 10 s when measured); one a phone was 30.
        assert 3 <= scans < 2 * seconds, scans
        assert all(len(notifies(phone)) == 1 for phone in phones)  # counts did not change
    finally:
        for phone in phones:
            phone.stop()
        assert server.stop() == 0, server.log()
    assert "Traceback" not in server.log(), server.log()
    assert re.search(r"peer 7003 subscribed to MWI for \[\('2003', 'default'\)\]", server.log())
