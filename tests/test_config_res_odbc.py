"""res_odbc.conf: options we do not act on are named with file:line, never silently kept."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from voicemail.config import load_connection_classes


def test_unknown_and_unimplemented_res_odbc_options_are_warnings_at_their_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "res_odbc.conf"
    path.write_text(
        "[asterisk]\ndsn => asterisk\nforcecommit => yes\nmax_conections => 8\ndbtimeout => 2\n"
    )
    with caplog.at_level(logging.WARNING):
        classes = load_connection_classes(path)
    assert classes["asterisk"].dbtimeout == 2
    assert classes["asterisk"].max_connections == 1  # the misspelt option did not count
    assert f'{path}:3: "forcecommit": not implemented, no effect' in caplog.text
    assert f'{path}:4: "max_conections": unknown option' in caplog.text
    assert ":2:" not in caplog.text and ":5:" not in caplog.text
