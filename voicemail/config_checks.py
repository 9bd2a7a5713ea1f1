"""Typed checks for configuration values, each failing with `file:line: what is wrong`.

The configuration modules (config_voicemail, config_sip) describe every option they know
with one of these checkers, so a typo such as `maxsecs=18O` stops start-up at its line
instead of silently becoming a default. Warnings (an option Asterisk knows but we do not
implement, an unknown option, a misspelt section name) are collected in a `Warnings` list
that the settings keep, and are logged once.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Callable, Iterable

from storage.conffile import ConfigError, Variable

log = logging.getLogger("voicemail.config")

# ast_true() / ast_false() words (main/utils.c), as storage.conffile accepts them.
TRUE_WORDS = frozenset({"yes", "true", "y", "t", "1", "on"})
FALSE_WORDS = frozenset({"no", "false", "n", "f", "0", "off"})
_INT = re.compile(r"[+-]?[0-9]+")

# A checker turns the text of one option into an error message, or None when it is fine.
Checker = Callable[[str], "str | None"]


class Warnings(list[str]):
    """`file:line: message` texts, logged as they are added."""

    def add(self, filename: str, line: int, message: str) -> None:
        text = f"{filename}:{line}: {message}"
        log.warning("%s", text)
        self.append(text)


def fail(var: Variable, message: str) -> ConfigError:
    """The error for one option line: `file:line: "name" message`."""
    return ConfigError(var.filename, var.line, f'"{var.name}" {message}, got "{var.value}"')


def parse_bool(text: str) -> bool | None:
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    return None


def boolean(text: str) -> str | None:
    return None if parse_bool(text) is not None else "must be yes or no"


def integer(minimum: int | None = None, maximum: int | None = None) -> Checker:
    """A decimal integer within [minimum, maximum] (either bound optional)."""

    def check(text: str) -> str | None:
        if not _INT.fullmatch(text.strip()):
            return "must be an integer"
        value = int(text)
        if minimum is not None and value < minimum:
            return f"must be at least {minimum}"
        if maximum is not None and value > maximum:
            return f"must be at most {maximum}"
        return None

    return check


def number(text: str) -> str | None:
    """A decimal number such as volgain=-3.5."""
    try:
        float(text.strip())
    except ValueError:
        return "must be a number"
    return None


def one_of(*words: str) -> Checker:
    allowed = {w.lower() for w in words}

    def check(text: str) -> str | None:
        if text.strip().lower() in allowed:
            return None
        return "must be one of " + ", ".join(words)

    return check


def either(*checkers: Checker) -> Checker:
    """Fine when any checker accepts; otherwise the first checker's message."""

    def check(text: str) -> str | None:
        errors = [c(text) for c in checkers]
        return None if any(e is None for e in errors) else errors[0]

    return check


def text_value(text: str) -> str | None:
    """Any text: names, addresses, templates."""
    return None


def digits_keys(text: str) -> str | None:
    """DTMF keys such as listen-control-stop-key=13456789."""
    if text.strip() and all(c in "0123456789*#" for c in text.strip()):
        return None
    return "must be DTMF keys (0-9, * and #)"


def checked_int(var: Variable, minimum: int | None = None, maximum: int | None = None) -> int:
    """The value of `var` as an int within bounds, or a ConfigError at its line."""
    error = integer(minimum, maximum)(var.value)
    if error is not None:
        raise fail(var, error)
    return int(var.value)


def checked_bool(var: Variable) -> bool:
    value = parse_bool(var.value)
    if value is None:
        raise fail(var, "must be yes or no")
    return value


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance, to spot `[genral]` for `[general]`."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def near_miss(name: str, wanted: Iterable[str], limit: int = 2) -> str | None:
    """The special section name `name` is probably a misspelling of, if any."""
    lowered = name.lower()
    for candidate in wanted:
        if lowered != candidate and edit_distance(lowered, candidate) <= limit:
            return candidate
    return None


def parse_host_port(text: str) -> tuple[str, int | None]:
    """`host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address such as `::`.

    As Asterisk's ast_sockaddr_split_hostport: an address with more than one colon and no
    brackets is all host. The host must be a numeric address (chan_sip binds with
    AI_NUMERICHOST). Raises ValueError with a message for the operator.
    """
    text = text.strip()
    port_text: str | None = None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError("has a '[' without ']'")
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError("has text after ']' that is not ':port'")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host = text
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError("is not a numeric IPv4 or IPv6 address") from None
    if port_text is None:
        return host, None
    if not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError("has a port that is not a number from 0 to 65535")
    return host, int(port_text)
