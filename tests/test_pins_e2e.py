"""End to end: PINs over SIP on the real server and real databases (issue 11).

A softphone (tests/softphone.py) logs in to VoiceMailMain and presses keys once it has heard
the prompt asking for them. Checked as an operator would: the `password` column (a hash that
is not the PIN, or clear text with pinhash=no), a second login with the PIN, what the caller
heard (tests/heard.py) and the server's log, which never holds a PIN.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from voicemail.pins import stored_form, verify_pin

from .dbbackends import Backend
from .server import RunningServer, serving, write_config
from .softphone import Call, Softphone
from .test_vmmain_heard_e2e import CANDIDATES, HEADS

pytestmark = pytest.mark.timeout(300)
all_backends = pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mysql"], indirect=True)
two_backends = pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)

# Seven digits: such a string does not turn up by chance in a log line's times or ports.
OLD = "7412963"
NEW = "3692147"
WRONG = "5820417"
EXTENSIONS = "[default]\nexten => 8500,1,VoiceMailMain(@default)\nsame => n,Hangup()\n"
STATIC = "[default]\n3000 => ,Empty Box\n3001 => ,Open Box,,,emptypin=yes\n"
PIN_PROMPTS = [
    "vm-newpassword", "vm-reenterpassword", "vm-passchanged", "vm-invalid-password",
    "vm-pls-try-again", "vm-mismatch", "pin-too-short", "pin-digits-only", "pin-one-digit",
    "pin-run", "pin-is-mailbox", "pin-too-common",
]  # fmt: skip
HEARD = [*CANDIDATES, *PIN_PROMPTS]


@contextmanager
def serve(backend: Backend, tmp_path: Path, general: str = "") -> Iterator[RunningServer]:
    config = write_config(
        tmp_path / "etc", backend, mailboxes=STATIC, extensions=EXTENSIONS, general=general
    )
    with serving(config, secrets=(OLD, NEW, WRONG)) as running:
        yield running


class Caller:
    """One call and a cursor in what it heard."""

    def __init__(self, call: Call) -> None:
        self.call = call
        self.at = 0.0

    def hears(self, *expected: str, timeout: float = 60.0) -> None:
        matches = self.call.wait_prompts(
            list(expected), candidates=HEARD, after=self.at, timeout=timeout, heads=HEADS
        )
        self.at = matches[-1].end

    def press(self, keys: str) -> None:
        self.call.dtmf(keys)


def insert(backend: Backend, mailbox: str, password: str) -> None:
    backend.sql(
        "INSERT INTO voicemail (context, mailbox, password, fullname) VALUES ('default', ?, ?, ?)",
        mailbox,
        password,
        f"Box {mailbox}",
    )


def column(backend: Backend, mailbox: str) -> str:
    rows = backend.sql("SELECT password FROM voicemail WHERE mailbox = ?", mailbox)
    assert len(rows) == 1, rows
    return str(rows[0]["password"])


def log_in(phone: Softphone, mailbox: str, pin: str) -> Caller:
    """8500: the mailbox, the PIN, then the intro of an empty mailbox."""
    caller = Caller(phone.call("8500"))
    caller.hears("vm-login")
    caller.press(mailbox + "#")
    caller.hears("vm-password")
    caller.press(pin + "#")
    caller.hears("vm-youhave", "vm-no", "vm-messages")
    caller.hears("vm-opts")
    return caller


def change_pin(caller: Caller, new: str) -> None:
    """0 (options), 5, the new PIN twice."""
    caller.press("0")
    caller.hears("vm-options")
    caller.press("5")
    caller.hears("vm-newpassword")
    caller.press(new + "#")
    caller.hears("vm-reenterpassword")
    caller.press(new + "#")
    caller.hears("vm-passchanged")


@all_backends
def test_pin_changed_in_the_menu_is_stored_hashed_and_logs_in(
    backend: Backend, tmp_path: Path
) -> None:
    with serve(backend, tmp_path) as server:
        insert(backend, "2000", stored_form(OLD, pinhash=True))
        with Softphone(server) as phone:
            change_pin(log_in(phone, "2000", OLD), NEW)
        stored = column(backend, "2000")
        assert stored.startswith("$argon2id$") and NEW not in stored, stored
        assert verify_pin(stored, NEW) and not verify_pin(stored, OLD)
        with Softphone(server) as phone:
            log_in(phone, "2000", NEW)
        server.wait_for_log("mailbox 2000@default: PIN changed (realtime)")
        assert server.log().count("2000@default logged in") == 2


@all_backends
def test_clear_text_pin_logs_in_and_is_then_hashed(backend: Backend, tmp_path: Path) -> None:
    with serve(backend, tmp_path) as server:
        insert(backend, "2000", OLD)
        insert(backend, "2001", "-" + OLD)  # '-': the owner may not change it; kept
        with Softphone(server) as phone:
            caller = Caller(phone.call("8500"))
            caller.hears("vm-login")
            caller.press("2000#")
            caller.hears("vm-password")
            caller.press(WRONG + "#")
            caller.hears("vm-incorrect-mailbox")
            assert column(backend, "2000") == OLD  # a wrong PIN rewrites nothing
            caller.press("2000#")
            caller.hears("vm-password")
            caller.press(OLD + "#")
            caller.hears("vm-youhave", "vm-no", "vm-messages")
        with Softphone(server) as phone:
            log_in(phone, "2001", OLD)
        for mailbox, prefix in (("2000", "$argon2id$"), ("2001", "-$argon2id$")):
            stored = column(backend, mailbox)
            assert stored.startswith(prefix) and OLD not in stored, stored
            assert verify_pin(stored, OLD)
        with Softphone(server) as phone:  # the hash logs in too
            log_in(phone, "2000", OLD)
        log = server.wait_for_log("login failed for mailbox 2000@default (attempt 1 of 3)")
        assert log.count("2000@default: clear-text PIN replaced by its hash") == 1
        assert log.count("2000@default logged in") == 2


@two_backends
def test_pinhash_no_keeps_clear_text(backend: Backend, tmp_path: Path) -> None:
    with serve(backend, tmp_path, general="pinhash=no\n") as server:
        insert(backend, "2000", OLD)
        with Softphone(server) as phone:
            caller = log_in(phone, "2000", OLD)
            assert column(backend, "2000") == OLD  # not rehashed at login
            change_pin(caller, NEW)
        assert column(backend, "2000") == NEW
        assert "replaced by its hash" not in server.log()


@two_backends
def test_empty_pin_refused_without_emptypin_let_in_with_it(
    backend: Backend, tmp_path: Path
) -> None:
    with serve(backend, tmp_path) as server:
        with Softphone(server) as phone:
            caller = Caller(phone.call("8500"))
            caller.hears("vm-login")
            caller.press("3000#")
            caller.hears("vm-password")  # asked like any mailbox, and no PIN is right
            caller.press("#")
            caller.hears("vm-incorrect-mailbox")
            caller.press("3001#")
            caller.hears("vm-youhave", "vm-no", "vm-messages")  # emptypin=yes: no PIN asked
        log = server.wait_for_log("3001@default logged in")
        assert "mailbox 3000@default has an empty PIN: login refused" in log
        assert "3000@default logged in" not in log
        assert "login failed for mailbox 3000@default (attempt 1 of 3)" in log


@two_backends
def test_trivial_new_pins_are_refused_saying_why(backend: Backend, tmp_path: Path) -> None:
    before = stored_form(OLD, pinhash=True)
    with serve(backend, tmp_path) as server:
        insert(backend, "2000", before)
        with Softphone(server) as phone:
            caller = log_in(phone, "2000", OLD)
            caller.press("0")
            trivial = (("1234", "pin-run"), ("1111", "pin-one-digit"), ("2000", "pin-is-mailbox"))
            for pin, reason in trivial:
                caller.hears("vm-options")
                caller.press("5")
                caller.hears("vm-newpassword")
                caller.press(pin + "#")
                caller.hears(reason, "vm-invalid-password", "vm-pls-try-again")
        assert column(backend, "2000") == before
        log = server.wait_for_log("new PIN refused (mailbox)")
        for reason in ("run", "same", "mailbox"):
            assert f"new PIN refused ({reason})" in log
        assert "PIN changed" not in log
