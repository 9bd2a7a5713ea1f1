"""Mistakes an operator makes are refused at start-up with the file and line, or the fixing
SQL, instead of surfacing at call time."""

from __future__ import annotations

from pathlib import Path

import pytest

from .dbbackends import Backend
from .server import run_cli, write_config

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
