"""End to end: a brute force on a mailbox's PIN over SIP is stopped by the lockout, and the
lockout holds on a second server sharing the database, until `voicemail unlock` clears it.

Two servers (own configuration, spool and SIP port) on one PostgreSQL or MariaDB database;
a softphone (tests/softphone.py) dials VoiceMailMain and types PINs when it hears the prompts
asking for them. Checked as an operator and a caller would: what the caller heard (the
mailbox's intro only after a good login), the servers' logs (never a PIN), the CLI's answers
and the rows of vm_login_state and vm_login_audit.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .dbbackends import Backend
from .server import RunningServer, run_cli, start_server, write_config
from .softphone import Softphone
from .test_vmmain_heard_e2e import Caller

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.parametrize("backend", ["postgresql", "mysql"], indirect=True),
]

PIN = "8642"
WRONG = "9753"
MAILBOXES = f"[default]\n1000 => {PIN},Alice Example\n"
EXTENSIONS = "[default]\nexten => 8500,1,VoiceMailMain(@default)\nsame => n,Hangup()\n"
# Long enough that the lock outlasts the test however slow the machine; 5 wrong PINs lock.
GENERAL = "lockoutsecs=3600\nmaxfailedlogins=5\n"


def node(tmp_path: Path, backend: Backend, name: str) -> tuple[Path, RunningServer]:
    config = write_config(
        tmp_path / name, backend, mailboxes=MAILBOXES, extensions=EXTENSIONS, general=GENERAL
    )
    return config, start_server(config)


@pytest.fixture
def pair(backend: Backend, tmp_path: Path) -> Iterator[tuple[Path, RunningServer, RunningServer]]:
    config_a, a = node(tmp_path, backend, "a")
    try:
        _, b = node(tmp_path, backend, "b")
    except BaseException:
        a.stop()
        raise
    try:
        yield config_a, a, b
    finally:
        assert a.stop() == 0, a.log()
        assert b.stop() == 0, b.log()
    for server in (a, b):
        assert "Traceback" not in server.log(), server.log()
        assert PIN not in server.log() and WRONG not in server.log()


def attempt(caller: Caller, pin: str, *, first: bool) -> None:
    """Mailbox 1000 and `pin`, from vm-login (or the vm-incorrect-mailbox that re-asks)."""
    if first:
        caller.hears("vm-login")
    caller.press("1000#")
    caller.hears("vm-password")
    caller.press(pin + "#")


def wrong_pins(server: RunningServer, count: int) -> None:
    """One call with `count` wrong PINs (at most maxlogins, 3), then hang up."""
    with Softphone(server) as phone:
        call = phone.call("8500")
        caller = Caller(call)
        for n in range(count):
            attempt(caller, WRONG, first=n == 0)
            if n < 2:
                caller.hears("vm-incorrect-mailbox")
        if count >= 3:  # maxlogins: the server says goodbye and hangs up
            call.wait_hangup()


def right_pin_refused(server: RunningServer, wrong_first: int = 0) -> None:
    """A call typing `wrong_first` wrong PINs then the right one, refused: the caller hears
    vm-incorrect and is hung up on, never the mailbox's intro."""
    with Softphone(server) as phone:
        call = phone.call("8500")
        caller = Caller(call)
        for n in range(wrong_first):
            attempt(caller, WRONG, first=n == 0)
            caller.hears("vm-incorrect-mailbox")
        attempt(caller, PIN, first=wrong_first == 0)
        caller.hears("vm-incorrect")
        call.wait_hangup()
        assert "vm-youhave" not in caller.sequence()


def right_pin_logs_in(server: RunningServer) -> None:
    with Softphone(server) as phone:
        call = phone.call("8500")
        caller = Caller(call)
        attempt(caller, PIN, first=True)
        caller.hears("vm-youhave")
        assert call.hangup() == 200


def audit(backend: Backend) -> list[tuple[str, str, str]]:
    rows = backend.sql(
        "SELECT outcome, caller_id, source FROM vm_login_audit "
        "WHERE context = 'default' AND mailbox = '1000' ORDER BY id"
    )
    return [(str(r["outcome"]), str(r["caller_id"]), str(r["source"])) for r in rows]


def test_brute_force_is_locked_out_on_both_servers_until_unlocked(
    pair: tuple[Path, RunningServer, RunningServer], backend: Backend
) -> None:
    config_a, a, b = pair
    wrong_pins(a, 3)
    state = backend.sql("SELECT failures, lockouts FROM vm_login_state")
    assert state == [{"failures": 3, "lockouts": 0}]
    # Two more wrong PINs lock the mailbox; the right PIN typed next in the same call is
    # refused without being checked.
    right_pin_refused(a, wrong_first=2)
    a.wait_for_log("mailbox 1000@default: locked out for 3600 s after 5 wrong PINs")
    assert "1000@default logged in" not in a.log()
    state = backend.sql("SELECT failures, lockouts, locked_until FROM vm_login_state")
    assert [(r["failures"], r["lockouts"]) for r in state] == [(0, 1)]
    locked_until = float(state[0]["locked_until"])
    # The second server sees the same lock: the right PIN is refused there too, and the
    # refusal does not extend the lock.
    right_pin_refused(b)
    b.wait_for_log("mailbox 1000@default: login refused, locked for")
    assert "1000@default logged in" not in b.log()
    assert float(backend.sql("SELECT locked_until FROM vm_login_state")[0]["locked_until"]) == (
        locked_until
    )
    shown = run_cli("show", "logins", "1000@default", "-C", str(config_a))
    assert shown.returncode == 0 and "1000@default: LOCKED until" in shown.stdout, shown.stderr
    unlocked = run_cli("unlock", "1000@default", "-C", str(config_a))
    assert unlocked.returncode == 0, unlocked.stderr
    assert "unlocked, failed logins cleared" in unlocked.stdout
    assert backend.sql("SELECT * FROM vm_login_state") == []
    right_pin_logs_in(b)
    b.wait_for_log("1000@default logged in")
    rows = audit(backend)
    assert [outcome for outcome, _, _ in rows] == [
        *["wrong"] * 5,
        "lockout",
        "locked",  # server A, the right PIN after the 5th wrong one
        "locked",  # server B
        "ok",  # server B after the unlock
    ]
    for _, caller_id, source in rows:
        assert caller_id == "5551234"  # the softphone's user
        assert source.startswith("127.0.0.1:") and source != "127.0.0.1:"
