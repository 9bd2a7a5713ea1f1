"""logger.conf: the log format (text or one JSON object per line) and a level per facility.

    [general]
    format = json          ; text (the default) or json
    level = info           ; the root level: debug, verbose, info, notice, warning, error

    [levels]
    channels.sip = debug   ; a facility is a logger name: channels.sip, storage.odbc, voicemail
    storage = warning

Asterisk's own logger.conf has `[logfiles]` channels; ours logs to standard error (journald
picks it up), so only these options exist and anything else is refused at its line. A JSON
line has `time` (UTC, ISO 8601), `level`, `logger`, `message`, and `call_id` and `mailbox`
while a call is being handled (the dial plan runner sets `current_call` for its task), plus
`exception` with the traceback when there is one. `set_level` is what the console's
`logger set level` calls.
"""

from __future__ import annotations

import contextvars
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from storage.conffile import ConfigError, load_config

__all__ = [
    "LEVELS",
    "CallContext",
    "JsonFormatter",
    "LoggerSettings",
    "apply_logger_conf",
    "current_call",
    "load_logger_settings",
    "set_level",
]

# Asterisk's level words and ours; verbose and notice are what Python calls INFO.
LEVELS = {
    "debug": logging.DEBUG,
    "verbose": logging.INFO,
    "info": logging.INFO,
    "notice": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
FORMATS = ("text", "json")


class CallContext(Protocol):
    """What a log line says about the call it belongs to (an ActiveCall)."""

    call_id: str
    mailbox: str


# The call the current task handles; its mailbox is read when a line is logged, so a
# mailbox chosen mid-call (VoiceMail's argument) shows from then on.
current_call: contextvars.ContextVar[CallContext | None] = contextvars.ContextVar(
    "current_call", default=None
)


class LoggerSettings:
    def __init__(self, fmt: str = "text", level: int = logging.INFO) -> None:
        self.format = fmt
        self.level = level
        self.levels: dict[str, int] = {}


def _level_of(word: str, filename: str, line: int, what: str) -> int:
    level = LEVELS.get(word.strip().lower())
    if level is None:
        raise ConfigError(
            filename, line, f'{what} must be one of {", ".join(LEVELS)}, got "{word.strip()}"'
        )
    return level


def load_logger_settings(path: Path) -> LoggerSettings | None:
    """logger.conf parsed and checked; None when the file does not exist."""
    if not path.is_file():
        return None
    conf = load_config(path)
    settings = LoggerSettings()
    for section in conf.sections:
        name = section.name.lower()
        if name not in ("general", "levels"):
            raise ConfigError(
                section.filename,
                section.line,
                f"section [{section.name}] is not supported (only [general] and [levels])",
            )
        for var in section.variables:
            key = var.name.lower()
            if name == "levels":
                settings.levels[var.name] = _level_of(var.value, var.filename, var.line, var.name)
            elif key == "format":
                if var.value.strip().lower() not in FORMATS:
                    raise ConfigError(
                        var.filename, var.line, f'"format" must be text or json, got "{var.value}"'
                    )
                settings.format = var.value.strip().lower()
            elif key == "level":
                settings.level = _level_of(var.value, var.filename, var.line, "level")
            else:
                raise ConfigError(
                    var.filename, var.line, f'"{var.name}": unknown option in [general]'
                )
    return settings


class CallFilter(logging.Filter):
    """Adds `call_id` and `mailbox` (empty outside a call) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        call = current_call.get()
        if not hasattr(record, "call_id"):
            record.call_id = call.call_id if call is not None else ""
        if not hasattr(record, "mailbox"):
            record.mailbox = call.mailbox if call is not None else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC)
        entry: dict[str, object] = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("call_id", "mailbox"):
            value = getattr(record, key, "")
            if value:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def apply_logger_conf(directory: Path) -> LoggerSettings | None:
    """Read DIR/logger.conf (if any) and apply it to the root handlers; ConfigError if bad."""
    settings = load_logger_settings(directory / "logger.conf")
    root = logging.getLogger()
    for handler in root.handlers:
        if not any(isinstance(f, CallFilter) for f in handler.filters):
            handler.addFilter(CallFilter())
    if settings is None:
        return None
    if settings.format == "json":
        for handler in root.handlers:
            handler.setFormatter(JsonFormatter())
    root.setLevel(settings.level)
    for facility, level in settings.levels.items():
        logging.getLogger(facility).setLevel(level)
    return settings


def set_level(level: str, facility: str | None = None) -> str:
    """`logger set level`: change the level of one facility (a logger name) or of the root.

    Returns a line for the console; raises ValueError for an unknown level word."""
    number = LEVELS.get(level.strip().lower())
    if number is None:
        raise ValueError(f"unknown level {level!r} (one of {', '.join(LEVELS)})")
    logging.getLogger(facility or None).setLevel(number)
    return f"log level of {facility or 'all facilities'} set to {level.strip().lower()}"
