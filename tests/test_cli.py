"""The `voicemail` command line as an operator meets it."""

from __future__ import annotations

import pytest

from .server import run_cli

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(
    "command", [["serve"], ["reload"], ["db"], ["db", "init"], ["db", "check"]]
)
def test_every_subcommand_documents_the_configuration_directory(command: list[str]) -> None:
    result = run_cli(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "-C DIR, --config-dir DIR" in result.stdout
    assert "voicemail.conf, sip.conf" in result.stdout
