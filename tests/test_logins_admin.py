"""The operator's login tools: `voicemail unlock`, `voicemail show logins` and `voicemail passwd`
on the command line (against the database) and on the running server's console."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from storage.logins import LoginStore
from storage.odbc import OdbcPool
from voicemail import pins
from voicemail.config import load_server_config
from voicemail.console.commands import Commands

from .dbbackends import Backend
from .server import VOICEMAIL_BIN, run_cli, start_server, write_config
from .test_outbox import Clock

pytestmark = pytest.mark.timeout(120)

MAILBOXES = "[default]\n1000 => 1234,Alice Example\n2000 => -4321,Bob Fixed\n"


def configure(directory: Path, backend: Backend) -> Path:
    return write_config(directory, backend, mailboxes=MAILBOXES, realtime_voicemail=False)


def lock_mailbox(backend: Backend, mailbox: str = "1000") -> None:
    """Five wrong PINs from one caller, as a running server would record them."""

    async def scenario() -> None:
        pool = OdbcPool(backend.connection_class())
        await pool.start()
        try:
            store, clock = LoginStore(pool), Clock(now=4_000_000_000.0)  # locked until then
            for _ in range(5):
                await store.record_failure(
                    mailbox, "default", clock(), caller_id="666", source="192.0.2.7:5060"
                )
        finally:
            await pool.close()

    asyncio.run(scenario())


def cli(config: Path, *args: str) -> tuple[int, str, str]:
    result = run_cli(*args, "-C", str(config))
    return result.returncode, result.stdout, result.stderr


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mysql"], indirect=True)
def test_the_cli_shows_and_clears_a_lockout(backend: Backend, tmp_path: Path) -> None:
    config = configure(tmp_path / "etc", backend)
    assert run_cli("db", "init", "-C", str(config)).returncode == 0
    lock_mailbox(backend)
    code, out, err = cli(config, "show", "logins", "1000@default")
    assert code == 0, err
    assert "1000@default: LOCKED until" in out
    assert out.count("wrong") == 5 and "lockout" in out
    assert "666" in out and "192.0.2.7:5060" in out
    code, out, err = cli(config, "unlock", "1000@default")
    assert (code, out.strip()) == (0, "mailbox 1000@default: unlocked, failed logins cleared"), err
    assert backend.sql("SELECT * FROM vm_login_state") == []
    code, out, _ = cli(config, "unlock", "1000@default")
    assert "was not locked" in out
    code, out, _ = cli(config, "show", "logins", "1000@default")
    assert "1000@default: not locked" in out
    # Bad arguments and unknown mailboxes are one clear line and exit 1.
    assert cli(config, "unlock", "9999@default")[::2] == (1, "voicemail: no mailbox 9999@default\n")
    code, _, err = cli(config, "show", "logins", "@default")
    assert code == 1 and "invalid mailbox in '@default'; expected MAILBOX@CONTEXT" in err


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # the PIN goes to voicemail.conf
def test_the_cli_sets_a_hashed_pin_and_refuses_a_trivial_one(
    backend: Backend, tmp_path: Path
) -> None:
    config = configure(tmp_path / "etc", backend)
    before = (config / "voicemail.conf").read_text()
    for pin, reason in (
        ("1111", "one digit repeated"),
        ("1234", "a run of digits"),
        ("12", "shorter than minpassword (4 digits)"),
        ("1000", "the mailbox number"),
        ("12a4", "not only digits"),
    ):
        code, _, err = cli(config, "passwd", "1000@default", pin)
        assert code == 1 and f"new PIN for 1000@default refused: {reason}" in err, err
    assert (config / "voicemail.conf").read_text() == before
    code, out, err = cli(config, "passwd", "1000@default", "4827")
    assert code == 0, err
    assert "new PIN stored (hashed)" in out
    assert "4827" not in out + err
    stored = load_server_config(config).voicemail.mailboxes[("default", "1000")].password
    assert stored.startswith(pins.HASH_PREFIX) and pins.verify_pin(stored, "4827")
    # Bob's PIN may not be changed by Bob ('-'); the operator's change keeps that mark.
    assert cli(config, "passwd", "2000@default", "5937")[0] == 0
    stored = load_server_config(config).voicemail.mailboxes[("default", "2000")].password
    assert stored.startswith("-" + pins.HASH_PREFIX) and pins.verify_pin(stored, "5937")
    # `-` reads the PIN from standard input, out of ps and the shell's history.
    piped = subprocess.run(
        [str(VOICEMAIL_BIN), "passwd", "1000@default", "-", "-C", str(config)],
        input="6183\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert piped.returncode == 0, piped.stderr
    stored = load_server_config(config).voicemail.mailboxes[("default", "1000")].password
    assert pins.verify_pin(stored, "6183")
    code, _, err = cli(config, "passwd", "9999@default", "4827")
    assert code == 1 and "no mailbox 9999@default" in err


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # the PIN goes to voicemail.conf
def test_pinhash_no_keeps_the_new_pin_in_clear_text(backend: Backend, tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "etc",
        backend,
        mailboxes=MAILBOXES,
        general="pinhash=no",
        realtime_voicemail=False,
    )
    code, out, err = cli(config, "passwd", "1000@default", "4827")
    assert code == 0 and "clear text (pinhash=no)" in out, err
    assert load_server_config(config).voicemail.mailboxes[("default", "1000")].password == "4827"


def test_a_pin_on_the_console_is_masked_when_logged() -> None:
    commands = Commands()

    async def handler(args: list[str]) -> str:
        return ""

    commands.register(
        "voicemail passwd <mailbox>@<context> <newpin>", handler, "", secret_args=(1,)
    )
    assert commands.loggable("voicemail passwd 1000@default 4827") == (
        "voicemail passwd 1000@default ****"
    )
    assert commands.loggable("VOICEMAIL passwd 1000@default '4827'") == (
        "voicemail passwd 1000@default ****"
    )
    assert commands.loggable("core show uptime") == "core show uptime"


@pytest.mark.timeout(180)
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_the_console_commands_of_a_running_server(backend: Backend, tmp_path: Path) -> None:
    config = configure(tmp_path / "etc", backend)
    server = start_server(config)
    try:
        lock_mailbox(backend)

        def rx(command: str) -> tuple[int, str]:
            result = run_cli("-C", str(config), "-rx", command, timeout=60)
            return result.returncode, result.stdout + result.stderr

        code, out = rx("voicemail show logins 1000@default")
        assert code == 0 and "LOCKED until" in out and out.count("wrong") == 5, out
        assert rx("voicemail unlock 1000@default") == (
            0,
            "mailbox 1000@default: unlocked, failed logins cleared\n",
        )
        assert backend.sql("SELECT * FROM vm_login_state") == []
        code, out = rx("voicemail unlock 9999@default")
        assert code == 1 and "no mailbox 9999@default" in out
        code, out = rx("voicemail unlock")
        assert code == 1 and "Usage: voicemail unlock <mailbox>@<context>" in out
        code, out = rx("voicemail passwd 1000@default 1111")
        assert code == 1 and "refused: one digit repeated" in out
        code, out = rx("voicemail passwd 1000@default 4827")
        assert code == 0 and "new PIN stored (hashed)" in out, out
        server.wait_for_log("voicemail passwd 1000@default ****")
    finally:
        assert server.stop() == 0, server.log()
    assert "4827" not in server.log()
    stored = load_server_config(config).voicemail.mailboxes[("default", "1000")].password
    assert pins.verify_pin(stored, "4827")
