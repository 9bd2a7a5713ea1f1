"""Mistakes an operator makes are refused at start-up with the file and line, or the fixing
SQL, instead of surfacing at call time."""

from __future__ import annotations

from pathlib import Path

import pytest

from . import sipp
from .dbbackends import Backend
from .server import DEFAULT_EXTENSIONS, run_cli, start_server, write_config
from .test_reload_e2e import wait_for

pytestmark = pytest.mark.timeout(90)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_bad_peer_option_stops_start_up_at_its_line(backend: Backend, tmp_path: Path) -> None:
    config = write_config(tmp_path / "etc", backend)
    with (config / "sip.conf").open("a") as sip_conf:
        sip_conf.write("[phone]\ntype=friend\nhost=dynamic\nsecret=x\ndtmfmode=bogus\n")
    assert run_cli("db", "init", "-C", str(config)).returncode == 0
    result = run_cli("serve", "-C", str(config), timeout=60)
    assert result.returncode == 1
    assert f"{config / 'sip.conf'}:9: peer [phone]: dtmfmode" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mysql"], indirect=True)
def test_a_realtime_table_that_does_not_exist_stops_start_up_with_the_fix(
    backend: Backend, tmp_path: Path
) -> None:
    """`voicemail => odbc,asterisk,vmusers` with no such table used to start silently and take
    every mistyped number as a mailbox during what it took for an outage."""
    config = write_config(tmp_path / "etc", backend)
    assert run_cli("db", "init", "-C", str(config)).returncode == 0
    (config / "extconfig.conf").write_text("[settings]\nvoicemail => odbc,asterisk,vmusers\n")
    result = run_cli("serve", "-C", str(config), timeout=60)
    assert result.returncode == 1, result.stdout
    assert "vmusers" in result.stderr, result.stderr
    assert "CREATE TABLE vmusers" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert "listening on" not in result.stdout


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_table_dropped_while_running_refuses_calls_instead_of_inventing_mailboxes(
    backend: Backend, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "etc", backend, mailboxes="")
    server = start_server(config)
    refused = sipp.scenario(
        "refused",
        sipp.invite("2000", [0, 101]),
        sipp.recv(100, optional=True),
        sipp.recv(500),
        sipp.ack_non2xx("2000"),
    )
    try:
        backend.sql("ALTER TABLE voicemail RENAME TO voicemail_gone")
        sipp.run_sipp(tmp_path / "sipp", refused, server.target, timeout=30).check()
        server.wait_for_log("cannot look up mailbox 2000@default")
        assert "taking the message anyway" not in server.log()
        assert list((config / "spool").glob("*.vmsg")) == []
    finally:
        assert server.stop() == 0, server.log()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_applications_we_do_not_implement_are_named_at_start_and_reload(
    backend: Backend, tmp_path: Path
) -> None:
    extensions = DEFAULT_EXTENSIONS + "exten => 8000,1,MeetMe(1000)\n"
    config = write_config(tmp_path / "etc", backend, extensions=extensions)
    server = start_server(config)
    try:
        line = len(extensions.splitlines())
        wait_for(server, f"extensions.conf:{line}: application MeetMe is not implemented")
        with (config / "extensions.conf").open("a") as conf:
            conf.write("exten => 8001,1,Directory(default)\n")
        assert run_cli("reload", "-C", str(config)).returncode == 0
        wait_for(server, f"reload: {config / 'extensions.conf'}:{line + 1}: application Directory")
    finally:
        assert server.stop() == 0, server.log()
