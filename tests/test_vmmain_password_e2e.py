"""End to end: sipp changes a PIN through VoiceMailMain on the real server (0 5), and the
new-user setup records the name and greetings then sets the PIN. Checked as a user would: the
realtime row or the voicemail.conf line holds the new PIN (its argon2id hash with the default
pinhash=yes; the PIN itself with pinhash=no, byte for byte as Asterisk writes it), a second
call logs in with it and not with the old one (no restart), and the greetings are rows at
msgnum -1.

Keys go by SIP INFO (see test_vmmain_e2e.py). Most keys are typed ahead: a queued key cuts the
next interruptible prompt short. Only a recording needs the caller to wait for its beep, since
Record drops the keys pressed before it starts.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from voicemail.pins import verify_pin

from . import sipp
from .dbbackends import Backend
from .server import RunningServer, prompt_seconds, start_server, write_config
from .test_deposit_e2e import DATA
from .test_vmmain_e2e import EXTENSIONS, Keys, call

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True),
]

OLD = "7412963"
NEW = "3692147"
SPOOL = "/var/spool/asterisk/voicemail/"
STATIC = (
    "[default]\n"
    "; Alice's box -- the comment stays\n"
    "1000 => 7412963,Alice Example,alice@example.com ; main\n"
    "1001 => 5555,Bob\n"
    "\n"
    "[other]\n"
    "1000 => 7412963,Other Alice\n"
)


def ms(seconds: float) -> int:
    return int(seconds * 1000)


def change_pin(keys: Keys, mailbox: str) -> list[str]:
    """Log in with OLD, then 0 5 NEW# NEW#, and wait for vm-passchanged."""
    return [
        *keys.press(f"{mailbox}#{OLD}#05{NEW}#{NEW}#"),
        sipp.pause(ms(prompt_seconds("vm-passchanged")) + 1500),
    ]


def old_then_new(keys: Keys, mailbox: str) -> list[str]:
    return [*keys.press(f"{mailbox}#{OLD}#{mailbox}#{NEW}#"), sipp.pause(1500)]


def run(server: RunningServer, workdir: Path, keys: Keys, steps: list[str]) -> None:
    sipp.run_sipp(workdir, call(keys, *steps), server.target, timeout=120).check()


@pytest.fixture
def realtime_server(backend: Backend, tmp_path: Path) -> Iterator[RunningServer]:
    config = write_config(tmp_path / "etc", backend, mailboxes="", extensions=EXTENSIONS)
    running = start_server(config)
    yield running
    assert running.stop() == 0, running.log()


def test_realtime_pin_change_updates_the_row_and_the_next_call_uses_it(
    realtime_server: RunningServer, backend: Backend, tmp_path: Path
) -> None:
    for context in ("default", "other"):
        backend.sql(
            "INSERT INTO voicemail (context, mailbox, password, fullname) "
            "VALUES (?, '2000', ?, 'Realtime Box')",
            context,
            OLD,
        )
    keys = Keys()
    run(realtime_server, tmp_path / "a", keys, change_pin(keys, "2000"))
    rows = backend.sql("SELECT context, password FROM voicemail ORDER BY context")
    assert [row["context"] for row in rows] == ["default", "other"], realtime_server.log()
    assert rows[0]["password"].startswith("$argon2id$") and verify_pin(rows[0]["password"], NEW)
    assert rows[1]["password"] == OLD  # the other context's box: not touched
    log = realtime_server.wait_for_log("PIN changed (realtime)")
    assert "mailbox 2000@default: PIN changed (realtime)" in log
    assert "login failed" not in log
    keys = Keys()
    run(realtime_server, tmp_path / "b", keys, old_then_new(keys, "2000"))
    log = realtime_server.log()
    assert "login failed for mailbox 2000@default (attempt 1 of 3)" in log
    assert log.count("2000@default logged in") == 2
    assert OLD not in log and NEW not in log


def test_voicemail_conf_pin_change_rewrites_one_line_and_works_without_restart(
    backend: Backend, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "etc",
        backend,
        mailboxes=STATIC,
        extensions=EXTENSIONS,
        general="pinhash=no\n",  # clear text, as Asterisk writes it
        realtime_voicemail=False,
    )
    conf = config / "voicemail.conf"
    before = conf.read_bytes()
    server = start_server(config)
    try:
        keys = Keys()
        run(server, tmp_path / "a", keys, change_pin(keys, "1000"))
        expected = before.replace(
            b"1000 => 7412963,Alice Example", b"1000 => 3692147,Alice Example"
        )
        assert expected != before and conf.read_bytes() == expected, server.log()
        server.wait_for_log("mailbox 1000@default: PIN changed (voicemail.conf)")
        keys = Keys()
        run(server, tmp_path / "b", keys, old_then_new(keys, "1000"))
        log = server.log()
        assert "login failed for mailbox 1000@default (attempt 1 of 3)" in log
        assert log.count("1000@default logged in") == 2
        assert OLD not in log and NEW not in log
    finally:
        assert server.stop() == 0, server.log()


def record_greeting(keys: Keys, before: float) -> list[str]:
    """Wait `before` seconds (the prompts up to the beep), speak 3 s, '#', then '1' accepts."""
    return [
        sipp.pause(ms(before) + 1500),
        sipp.play_pcap(DATA / "signal3s_pcmu.pcap"),
        sipp.pause(3200),
        *keys.press("#1"),
    ]


def test_new_user_records_name_and_greetings_then_sets_the_pin(
    backend: Backend, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "etc",
        backend,
        mailboxes="[default]\n1000 => 1000,New User\n",
        extensions=EXTENSIONS,
        general="forcename=yes\nforcegreetings=yes\n",
        realtime_voicemail=False,
    )
    server = start_server(config)
    try:
        keys = Keys()
        after_review = prompt_seconds("auth-thankyou", "vm-msgsaved")
        steps = [
            *keys.press("1000#1000#"),
            *record_greeting(keys, prompt_seconds("vm-newuser", "vm-rec-name", "beep")),
            *record_greeting(keys, after_review + prompt_seconds("vm-rec-unv", "beep")),
            *record_greeting(keys, after_review + prompt_seconds("vm-rec-busy", "beep")),
            *keys.press(f"{NEW}#{NEW}#"),  # typed during vm-msgsaved
            sipp.pause(ms(after_review + prompt_seconds("vm-passchanged")) + 1500),
        ]
        run(server, tmp_path / "a", keys, steps)
        rows = backend.sql("SELECT dir, msgnum, mailboxuser FROM voicemessages ORDER BY dir")
        assert rows == [
            {"dir": f"{SPOOL}default/1000/{kind}", "msgnum": -1, "mailboxuser": "1000"}
            for kind in ("busy", "greet", "unavail")
        ], server.log()
        sizes = backend.sql("SELECT dir, recording FROM voicemessages")
        assert all(len(bytes(row["recording"])) > 16000 for row in sizes)  # > 0.5 s of audio
        conf = (config / "voicemail.conf").read_text()
        line = next(x for x in conf.splitlines() if x.startswith("1000 => "))
        stored = line.removeprefix("1000 => ").removesuffix(",New User")
        assert stored.startswith("$argon2id$") and verify_pin(stored, NEW), line
        log = server.wait_for_log("PIN changed (voicemail.conf)")
        assert "mailbox 1000@default: PIN changed (voicemail.conf)" in log
        # The next call is an ordinary login: the setup does not come back.
        keys = Keys()
        run(server, tmp_path / "b", keys, [*keys.press(f"1000#{NEW}#"), sipp.pause(1500)])
        log = server.log()
        assert log.count("1000@default logged in") == 2
        assert log.count("recorded its") == 3
        assert NEW not in log
    finally:
        assert server.stop() == 0, server.log()
