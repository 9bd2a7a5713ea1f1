"""logger.conf: what it accepts, what it refuses (with file:line), the JSON line format, and
`set_level` as the console's `logger set level` uses it."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from storage.conffile import ConfigError
from voicemail.logconfig import (
    JsonFormatter,
    apply_logger_conf,
    current_call,
    load_logger_settings,
    set_level,
)


@dataclass
class Call:
    call_id: str
    mailbox: str = ""


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """A root handler of our own; levels touched by a test are put back afterwards."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    names = ("channels.sip", "storage", "voicemail.test")
    levels = {name: logging.getLogger(name).level for name in names}
    root.handlers = [handler]
    yield stream
    root.handlers, root.level = saved
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_missing_logger_conf_is_no_settings(tmp_path: Path) -> None:
    assert load_logger_settings(tmp_path / "logger.conf") is None


def test_format_level_and_facilities_are_read(tmp_path: Path) -> None:
    path = tmp_path / "logger.conf"
    path.write_text("[general]\nformat=JSON\nlevel=warning\n[levels]\nchannels.sip=debug\n")
    settings = load_logger_settings(path)
    assert settings is not None
    assert (settings.format, settings.level) == ("json", logging.WARNING)
    assert settings.levels == {"channels.sip": logging.DEBUG}


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("[general]\nformat=xml\n", ":2:"),
        ("[general]\nlevel=loud\n", ":2:"),
        ("[general]\n\ndateformat=%F\n", ":3:"),
        ("[logfiles]\nconsole => notice,warning\n", ":1:"),
        ("[levels]\nstorage=verbose\nchannels=chatty\n", ":3:"),
    ],
)
def test_a_bad_line_is_refused_with_its_line(tmp_path: Path, text: str, where: str) -> None:
    path = tmp_path / "logger.conf"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_logger_settings(path)
    assert str(caught.value).startswith(f"{path}{where}"), str(caught.value)


def test_json_lines_carry_the_current_call(tmp_path: Path, captured: io.StringIO) -> None:
    (tmp_path / "logger.conf").write_text("[general]\nformat=json\nlevel=info\n")
    # pytest's own capture handlers sit on the root too, for the whole session: put their
    # formatters back, or every later test's caplog.text would be JSON.
    formatters = [(handler, handler.formatter) for handler in logging.getLogger().handlers]
    apply_logger_conf(tmp_path)
    log = logging.getLogger("voicemail.test")
    log.info("before the call")
    call = Call("abc@host")
    token = current_call.set(call)
    try:
        log.info("greeting %s", "played")
        call.mailbox = "1000@default"  # VoiceMail() chose its mailbox
        log.warning("recording")
    finally:
        current_call.reset(token)
        for handler, formatter in formatters:
            handler.setFormatter(formatter)
    lines = [json.loads(line) for line in captured.getvalue().splitlines()]
    assert [line["message"] for line in lines] == ["before the call", "greeting played",
                                                    "recording"]  # fmt: skip
    assert "call_id" not in lines[0]
    assert lines[1]["call_id"] == "abc@host" and "mailbox" not in lines[1]
    assert (lines[2]["call_id"], lines[2]["mailbox"], lines[2]["level"]) == (
        "abc@host",
        "1000@default",
        "warning",
    )
    assert lines[2]["logger"] == "voicemail.test" and lines[2]["time"].endswith("Z")


def test_exception_is_one_json_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), None)
        record.exc_info = sys.exc_info()
    text = JsonFormatter().format(record)
    assert "\n" not in text
    assert "ValueError: boom" in json.loads(text)["exception"]


def test_set_level_changes_one_facility_or_all(captured: io.StringIO) -> None:
    assert "channels.sip" in set_level("debug", "channels.sip")
    assert logging.getLogger("channels.sip").level == logging.DEBUG
    set_level("ERROR")
    assert logging.getLogger().level == logging.ERROR
    logging.getLogger("voicemail.test").warning("hidden")
    logging.getLogger("channels.sip").debug("shown")
    assert captured.getvalue().splitlines() == ["shown"]
    with pytest.raises(ValueError, match="unknown level"):
        set_level("chatty")
