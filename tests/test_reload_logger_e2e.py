"""A reload re-reads logger.conf too: a new level applies at once, a broken line is refused
with its file and line and the levels in force stay."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from .dbbackends import Backend
from .server import RunningServer, start_server, write_config
from .test_console_e2e import ok, rx


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_reload_applies_logger_conf_and_refuses_a_broken_line(
    backend: Backend, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "etc", backend)
    (config / "logger.conf").write_text("[general]\nlevel = info\n")
    server = start_server(config)
    try:
        ok(config, "core show uptime")
        assert _logged(server, "console: core show uptime")
        quiet = "[general]\nlevel = info\n\n[levels]\nvoicemail.console = warning\n"
        (config / "logger.conf").write_text(quiet)
        ok(config, "reload")
        ok(config, "core show version")  # an info line of voicemail.console: now hidden
        (config / "logger.conf").write_text("[general]\nformat = xml\n")
        refused = rx(config, "reload")
        assert refused.returncode == 1
        assert "logger.conf:2" in refused.stderr, refused.stderr
        ok(config, "voicemail show users")  # still serving, and still quiet
    finally:
        assert server.stop() == 0, server.log()
    log = server.log()
    assert "console: core show version" not in log and "console: voicemail show" not in log
    assert "Traceback" not in log


def _logged(server: RunningServer, text: str) -> bool:
    deadline = time.monotonic() + 10  # the log reader thread may be a moment behind
    while text not in server.log():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True
