"""The `voicemail` command line as an operator meets it."""

from __future__ import annotations

from pathlib import Path

import pytest

from . import sipp
from .dbbackends import Backend
from .server import run_cli, start_server, write_config
from .test_deposit_e2e import DATA, assert_recording_is, deposit_scenario, rows

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(
    "command",
    [["serve"], ["reload"], ["db"], ["db", "init"], ["db", "check"], ["message", "export"]],
)
def test_every_subcommand_documents_the_configuration_directory(command: list[str]) -> None:
    result = run_cli(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "-C DIR, --config-dir DIR" in result.stdout
    assert "voicemail.conf, sip.conf" in result.stdout


@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_message_export_writes_the_stored_audio(backend: Backend, tmp_path: Path) -> None:
    config = write_config(tmp_path / "etc", backend)
    server = start_server(config)
    try:
        xml = deposit_scenario(
            "1000",
            DATA / "signal3s_pcmu.pcap",
            [0, 101],
            [sipp.pause(3200), sipp.bye("1000"), sipp.recv(200)],
        )
        sipp.run_sipp(tmp_path / "sipp", xml, server.target, timeout=60).check()
    finally:
        assert server.stop() == 0, server.log()
    out = tmp_path / "out.wav"
    result = run_cli("message", "export", "-C", str(config), "1000@default", "0", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == bytes(rows(backend)[0]["recording"])
    assert_recording_is({"recording": out.read_bytes()}, DATA / "signal3s_pcmu.pcap", 3.0)
    assert "wav, 3 s" in result.stdout
    missing = run_cli("message", "export", "-C", str(config), "1000", "7", "-o", str(out))
    assert missing.returncode == 1
    assert "no message 7 in 1000@default INBOX" in missing.stderr
