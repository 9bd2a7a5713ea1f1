"""The dial plan and voicemail.conf served from the database (ARA), end to end with sipp."""

from __future__ import annotations

from pathlib import Path

import pytest

from . import sipp
from .dbbackends import Backend
from .server import run_cli, start_server, unavailable_greeting_seconds, write_config
from .test_deposit_e2e import DATA, assert_recording_is, deposit_scenario, rows

pytestmark = pytest.mark.timeout(180)

EXTENSIONS = "[default]\nswitch => Realtime/default@extensions\n"


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_realtime_switch_and_voicemail_conf_from_ast_config_route_a_deposit(
    backend: Backend, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "etc",
        backend,
        mailboxes="",
        extensions=EXTENSIONS,
        realtime=("extensions", "voicemail.conf=ast_config"),
    )
    init = run_cli("db", "init", "-C", str(config))
    assert init.returncode == 0, init.stdout + init.stderr
    assert "extensions on [asterisk]" in init.stdout
    assert "ast_config on [asterisk]" in init.stdout
    # A pattern row, as pbx_realtime reads them: _8XXXX -> VoiceMail(${EXTEN:1}@default,u).
    for priority, app, data in ((1, "VoiceMail", "${EXTEN:1}@default,u"), (2, "Hangup", "")):
        backend.sql(
            "INSERT INTO extensions (context, exten, priority, app, appdata) "
            "VALUES (?, ?, ?, ?, ?)",
            "default",
            "_8XXXX",
            priority,
            app,
            data,
        )
    # voicemail.conf in ast_config: [general] and mailbox 3000 exist only in the database.
    conf_rows = [
        (0, 0, "general", "format", "wav"),
        (0, 1, "general", "odbcstorage", "asterisk"),
        (0, 2, "general", "localspool", str(tmp_path / "spool")),
        (1, 0, "default", "3000", "4242,Carol Database,carol@example.com"),
    ]
    for cat_metric, var_metric, category, name, value in conf_rows:
        backend.sql(
            "INSERT INTO ast_config (cat_metric, var_metric, commented, filename, category, "
            "var_name, var_val) VALUES (?, ?, 0, 'voicemail.conf', ?, ?, ?)",
            cat_metric,
            var_metric,
            category,
            name,
            value,
        )
    server = start_server(config)
    try:
        pcap = DATA / "signal3s_pcmu.pcap"
        xml = deposit_scenario(
            "83000",
            pcap,
            [0, 101],
            [sipp.pause(3200), sipp.bye("83000"), sipp.recv(200)],
            # The greeting names the mailbox (3000), not the dialled 83000.
            wait_seconds=unavailable_greeting_seconds("3000"),
        )
        sipp.run_sipp(tmp_path / "sipp", xml, server.target, timeout=60).check()
        stored = rows(backend)
        assert [r["dir"] for r in stored] == ["/var/spool/asterisk/voicemail/default/3000/INBOX"]
        assert_recording_is(stored[0], pcap, 3.0)
    finally:
        assert server.stop() == 0, server.log()
