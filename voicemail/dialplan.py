"""The subset of extensions.conf we run.

Contexts of `exten => pattern,priority,App(args)` lines (with `same =>`, `n` priorities and
`n(label)`), Asterisk's `_` patterns (X, Z, N, [sets], `.` and `!`), and `${EXTEN}`-style
variables. Applications are looked up by name in a table the server supplies, so that this
module knows nothing of voicemail.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from storage.conffile import ConfigError, ConfigFile


@dataclass(frozen=True)
class Step:
    priority: int
    app: str
    args: str
    filename: str
    line: int


@dataclass
class Extension:
    pattern: str
    steps: list[Step] = field(default_factory=list)

    @property
    def is_pattern(self) -> bool:
        return self.pattern.startswith("_")


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """Translate an Asterisk extension pattern (`_NXX.`) into an anchored regex."""
    if not pattern.startswith("_"):
        return re.compile(re.escape(pattern) + r"\Z")
    out = []
    chars = pattern[1:]
    i = 0
    while i < len(chars):
        c = chars[i]
        upper = c.upper()
        if upper == "X":
            out.append("[0-9]")
        elif upper == "Z":
            out.append("[1-9]")
        elif upper == "N":
            out.append("[2-9]")
        elif c == ".":
            out.append(".+")
        elif c == "!":
            out.append(".*")
        elif c == "[":
            end = chars.find("]", i)
            if end < 0:
                raise ValueError(f"unclosed [ in pattern {pattern!r}")
            body = chars[i + 1 : end]
            out.append("[" + "".join(re.escape(ch) if ch != "-" else "-" for ch in body) + "]")
            i = end
        elif c in "-":
            pass  # Asterisk ignores dashes in patterns
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


def _specificity(pattern: str) -> tuple[int, int, str]:
    """Asterisk tries more specific patterns first: fewer wildcards, smaller sets."""
    wild = pattern.count(".") + pattern.count("!")
    width = 0
    for c in pattern[1:]:
        width += {"X": 10, "Z": 9, "N": 8}.get(c.upper(), 1)
    return (wild, width, pattern)


_APP_LINE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?\s*$", re.S)
_PRIORITY = re.compile(r"^(\d+|n|hint)(?:\(([^)]*)\))?$")


@dataclass(frozen=True)
class RealtimeSwitch:
    """`switch => Realtime/[[db_context@]family][/options]` (pbx_realtime): look the
    extension up in a realtime family; option `p` turns off pattern queries."""

    db_context: str
    family: str
    patterns: bool = True

    @classmethod
    def parse(cls, value: str, context: str) -> RealtimeSwitch | None:
        kind, _, rest = value.strip().partition("/")
        if kind.strip().lower() != "realtime":
            return None
        target, _, options = rest.partition("/")
        db_context, at, family = target.partition("@")
        if not at:
            db_context, family = "", target
        return cls(
            db_context.strip() or context, family.strip() or "extensions", "p" not in options
        )


def steps_from_rows(rows: list[dict[str, str]]) -> list[Step]:
    """Dial plan steps from realtime `extensions` rows (context, exten, priority, app, appdata)."""
    steps = []
    for row in rows:
        try:
            priority = int(row.get("priority", ""))
        except ValueError:
            continue
        steps.append(Step(priority, row.get("app", ""), row.get("appdata", ""), "realtime", 0))
    return sorted(steps, key=lambda step: step.priority)


class Dialplan:
    def __init__(
        self,
        contexts: dict[str, dict[str, Extension]],
        switches: dict[str, list[RealtimeSwitch]] | None = None,
    ) -> None:
        self.contexts = contexts
        self.switches = switches or {}
        self._regex: dict[str, re.Pattern[str]] = {}
        for extensions in contexts.values():
            for ext in extensions.values():
                if ext.is_pattern:
                    self._regex[ext.pattern] = pattern_regex(ext.pattern)

    @classmethod
    def from_config(cls, conf: ConfigFile) -> Dialplan:
        contexts: dict[str, dict[str, Extension]] = {}
        switches: dict[str, list[RealtimeSwitch]] = {}
        for section in conf.sections:
            if section.name.lower() in ("general", "globals"):
                continue
            extensions = contexts.setdefault(section.name, {})
            for variable in section.variables:
                if variable.name.lower() == "switch":
                    switch = RealtimeSwitch.parse(variable.value, section.name)
                    if switch is None:
                        raise ConfigError(
                            variable.filename,
                            variable.line,
                            f"only Realtime switches are supported, got {variable.value!r}",
                        )
                    switches.setdefault(section.name, []).append(switch)
            last: Extension | None = None
            last_priority = 0
            for variable in section.variables:
                name = variable.name.lower()
                if name not in ("exten", "same"):
                    continue  # include =>, switch => ... are not supported yet
                where = (variable.filename, variable.line)
                if name == "exten":
                    pattern, _, rest = variable.value.partition(",")
                    pattern = pattern.strip()
                    if not pattern or not rest:
                        raise ConfigError(*where, f"bad extension line {variable.value!r}")
                    if pattern.startswith("_"):
                        try:
                            pattern_regex(pattern)
                        except ValueError as exc:
                            raise ConfigError(*where, str(exc)) from exc
                    last = extensions.setdefault(pattern, Extension(pattern))
                else:
                    if last is None:
                        raise ConfigError(*where, "'same =>' before any 'exten =>'")
                    rest = variable.value
                priority_text, _, app_text = rest.partition(",")
                match = _PRIORITY.match(priority_text.strip())
                if match is None:
                    raise ConfigError(*where, f"bad priority {priority_text.strip()!r}")
                if match.group(1) == "hint":
                    continue
                if match.group(1) == "n":
                    if not last.steps and name == "exten" and last_priority == 0:
                        raise ConfigError(*where, "priority 'n' needs a previous priority")
                    priority = (last.steps[-1].priority if last.steps else last_priority) + 1
                else:
                    priority = int(match.group(1))
                app_match = _APP_LINE.match(app_text)
                if app_match is None:
                    raise ConfigError(*where, f"bad application {app_text.strip()!r}")
                app, args = app_match.group(1), app_match.group(2) or ""
                last.steps.append(Step(priority, app, args, *where))
                last.steps.sort(key=lambda s: s.priority)
                last_priority = priority
        return cls(contexts, switches)

    def match(self, context: str, exten: str) -> Extension | None:
        extensions = self.contexts.get(context)
        if not extensions:
            return None
        exact = extensions.get(exten)
        if exact is not None:
            return exact
        candidates = [e for e in extensions.values() if e.is_pattern]
        for ext in sorted(candidates, key=lambda e: _specificity(e.pattern)):
            if self._regex[ext.pattern].match(exten):
                return ext
        return None


_VARIABLE = re.compile(r"\$\{([A-Za-z0-9_()]+)(?::(-?\d+)(?::(\d+))?)?\}")


def substitute(text: str, variables: Mapping[str, str]) -> str:
    """Expand `${NAME}` and `${NAME:offset:length}` (unknown names become empty)."""

    def replace(match: re.Match[str]) -> str:
        value = variables.get(match.group(1), "")
        if match.group(2) is not None:
            offset = int(match.group(2))
            value = value[offset:]
            if match.group(3) is not None:
                value = value[: int(match.group(3))]
        return value

    return _VARIABLE.sub(replace, text)


App = Callable[[object, str, dict[str, str]], Awaitable[bool]]
