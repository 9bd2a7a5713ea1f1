"""The subset of extensions.conf we run.

Contexts of `exten => pattern,priority,App(args)` lines (with `same =>`, `n` priorities and
`n(label)`), Asterisk's `_` patterns (X, Z, N, [sets], `.` and `!`), `include => context`,
`switch => Realtime/...`, `[globals]` and `${EXTEN}`-style variables. Applications are
looked up by name in a table the server supplies, so that this module knows nothing of
voicemail. A line we parse but do not run (`ignorepat`, other switches, time-restricted
includes, caller ID matching) is refused with `file:line`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field

from storage.conffile import ConfigError, ConfigFile, Section, Variable

from .dialplan_expr import closing, substitute

__all__ = ["substitute"]  # re-exported: callers substitute through this module

log = logging.getLogger(__name__)

# extensions.conf [general] options (pbx_config.c). These change nothing for us: `static`
# and `writeprotect` govern `dialplan save`, and the pattern matcher's choice does not
# change which extension matches here.
_GENERAL_NO_EFFECT = frozenset({"static", "writeprotect", "extenpatternmatchnew"})
_GENERAL_KNOWN = _GENERAL_NO_EFFECT | {"autofallthrough", "clearglobalvars", "userscontext"}
_TRUE = frozenset({"yes", "true", "y", "t", "1", "on"})
_FALSE = frozenset({"no", "false", "n", "f", "0", "off"})


@dataclass(frozen=True)
class Step:
    priority: int
    app: str
    args: str
    filename: str
    line: int
    label: str = ""  # `n(label)` / `1(label)`: a Goto target


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
    """Contexts of extensions, with their includes and realtime switches, and [globals]."""

    def __init__(
        self,
        contexts: dict[str, dict[str, Extension]],
        switches: dict[str, list[RealtimeSwitch]] | None = None,
        includes: dict[str, list[str]] | None = None,
        globals: dict[str, str] | None = None,
        warnings: list[str] | None = None,
    ) -> None:
        self.contexts = contexts
        self.switches = switches or {}
        self.includes = includes or {}
        # [globals]: variables every call starts with (the call's own override them).
        self.globals = globals or {}
        self.warnings = warnings or []
        self._regex: dict[str, re.Pattern[str]] = {}
        for extensions in contexts.values():
            for ext in extensions.values():
                if ext.is_pattern:
                    self._regex[ext.pattern] = pattern_regex(ext.pattern)

    @classmethod
    def from_config(cls, conf: ConfigFile) -> Dialplan:
        builder = _Builder()
        for section in conf.sections:
            name = section.name.lower()
            if name == "general":
                builder.general(section)
            elif name == "globals":
                builder.globals_section(section)
            else:
                builder.context(section)
        builder.check_includes()
        return cls(
            builder.contexts, builder.switches, builder.includes, builder.globals, builder.warnings
        )

    def search_order(self, context: str) -> list[str]:
        """The context, then what it includes, depth first in file order, each context once.

        This is the order Asterisk's pbx_find_extension tries them in; a context already on
        the way is skipped, so include loops end. (Asterisk tries a context's switches after
        its own extensions and before its includes: a caller that also wants realtime
        switches walks this list and tries `match_local` then `switches[ctx]` for each.)
        """
        order: list[str] = []
        seen: set[str] = set()

        def visit(name: str) -> None:
            if name in seen or name not in self.contexts:
                return
            seen.add(name)
            order.append(name)
            for included in self.includes.get(name, []):
                visit(included)

        visit(context)
        return order

    def match_local(self, context: str, exten: str) -> Extension | None:
        """An extension of this context alone: exact first, then the most specific pattern."""
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

    def match(self, context: str, exten: str) -> Extension | None:
        """The extension a call to `exten` in `context` runs, looking through includes."""
        for name in self.search_order(context):
            found = self.match_local(name, exten)
            if found is not None:
                return found
        return None

    def applications(self) -> Iterator[tuple[str, str, int]]:
        """(application, filename, line) of every step, so the server can name the ones it
        does not implement when it loads or reloads the dial plan."""
        for extensions in self.contexts.values():
            for ext in extensions.values():
                for step in ext.steps:
                    yield step.app, step.filename, step.line


class _Builder:
    """Reads extensions.conf sections into contexts, includes, switches and globals."""

    def __init__(self) -> None:
        self.contexts: dict[str, dict[str, Extension]] = {}
        self.switches: dict[str, list[RealtimeSwitch]] = {}
        self.includes: dict[str, list[str]] = {}
        self.include_lines: list[tuple[str, Variable]] = []
        self.globals: dict[str, str] = {}
        self.warnings: list[str] = []

    def warn(self, var: Variable | Section, message: str) -> None:
        text = f"{var.filename}:{var.line}: {message}"
        log.warning("%s", text)
        self.warnings.append(text)

    def general(self, section: Section) -> None:
        for var in section.variables:
            name, word = var.name.lower(), var.value.strip().lower()
            if name in ("autofallthrough", "clearglobalvars") and word not in _TRUE | _FALSE:
                raise ConfigError(
                    var.filename, var.line, f'"{var.name}" must be yes or no, got "{var.value}"'
                )
            if name == "autofallthrough" and word in _FALSE:
                raise ConfigError(
                    var.filename,
                    var.line,
                    "autofallthrough=no is not supported: a call hangs up when its steps end",
                )
            if name == "clearglobalvars" and word in _FALSE:
                self.warn(var, "clearglobalvars=no: not implemented yet (reload clears them)")
            elif name not in _GENERAL_KNOWN:
                self.warn(var, f'"{var.name}": unknown option')
            elif name not in _GENERAL_NO_EFFECT | {"autofallthrough", "clearglobalvars"}:
                self.warn(var, f'"{var.name}": not implemented yet')

    def globals_section(self, section: Section) -> None:
        """`NAME=value`: values may use globals defined above them, as in pbx_config."""
        for var in section.variables:
            self.globals[var.name] = substitute(var.value, self.globals)

    def context(self, section: Section) -> None:
        extensions = self.contexts.setdefault(section.name, {})
        last: Extension | None = None
        last_priority = 0
        for variable in section.variables:
            name = variable.name.lower()
            where = (variable.filename, variable.line)
            if name == "switch":
                switch = RealtimeSwitch.parse(variable.value, section.name)
                if switch is None:
                    raise ConfigError(
                        *where, f"only Realtime switches are supported, got {variable.value!r}"
                    )
                self.switches.setdefault(section.name, []).append(switch)
                continue
            if name == "include":
                self.include(section.name, variable)
                continue
            if name in ("ignorepat", "lswitch", "eswitch"):
                raise ConfigError(*where, f"'{variable.name} =>' is not supported")
            if name not in ("exten", "same"):
                raise ConfigError(*where, f"unknown line '{variable.name} =>' in a context")
            if name == "exten":
                pattern, _, rest = variable.value.partition(",")
                pattern = pattern.strip()
                if not pattern or not rest:
                    raise ConfigError(*where, f"bad extension line {variable.value!r}")
                if "/" in pattern:
                    raise ConfigError(*where, f"caller ID matching is not supported: {pattern!r}")
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
                self.warn(variable, f"hint for {last.pattern}: not implemented yet")
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
            last.steps.append(Step(priority, app, args, *where, label=match.group(2) or ""))
            last.steps.sort(key=lambda s: s.priority)
            last_priority = priority

    def include(self, context: str, var: Variable) -> None:
        """`include => other`; the time-restricted form (`other,09:00-17:00,...`) is refused."""
        target = var.value.strip()
        if "," in target or "|" in target:
            raise ConfigError(
                var.filename, var.line, f"time-restricted includes are not supported: {target!r}"
            )
        if not target:
            raise ConfigError(var.filename, var.line, "include => needs a context name")
        self.includes.setdefault(context, []).append(target)
        self.include_lines.append((context, var))

    def check_includes(self) -> None:
        for context, var in self.include_lines:
            if var.value.strip() not in self.contexts:
                raise ConfigError(
                    var.filename,
                    var.line,
                    f"[{context}] includes context {var.value.strip()!r}, which is not defined",
                )


def split_arguments(text: str) -> list[str]:
    """An application's argument string split as Asterisk's ast_app_separate_args does.

    Commas separate arguments only outside parentheses, square brackets and double quotes;
    the quotes themselves are removed, and a backslash makes the next character literal (and
    is removed). An empty string is no argument; a trailing comma adds an empty one.

    Where this differs from Asterisk: Asterisk substitutes `${...}` into the whole string
    first and splits afterwards, so a comma inside a variable's value (a caller can choose
    ${EXTEN}: `1001@secret,@default`) becomes a new argument. We split first and substitute
    into each argument afterwards (`expand_arguments`), so a value always stays inside the
    argument it was written in. A variable can therefore not supply several arguments at
    once, and quotes or backslashes inside a value are kept as they are. An expression
    `$[...]` is kept whole, quotes and backslashes included, and evaluated when the argument
    is substituted (Asterisk has evaluated it before the split, so the result is the same).
    """
    arguments: list[str] = []
    if not text:
        return arguments
    current: list[str] = []
    parens = brackets = 0
    quoted = False
    index = 0
    while index < len(text):
        char = text[index]
        index += 1
        if char == "$" and text.startswith("[", index):
            # An expression is kept as written, quotes and all: it is evaluated after the
            # split (Asterisk evaluates it before, so its quotes never reach the split).
            end = closing(text, index)
            if end > 0:
                current.append(text[index - 1 : end + 1])
                index = end + 1
                continue
        if char == "\\":
            current.append(text[index : index + 1])
            index += 1
            continue
        if char == '"':
            quoted = not quoted
            continue
        if char == "(":
            parens += 1
        elif char == ")" and parens:
            parens -= 1
        elif char == "[":
            brackets += 1
        elif char == "]" and brackets:
            brackets -= 1
        elif char == "," and not (parens or brackets or quoted):
            arguments.append("".join(current))
            current = []
            continue
        current.append(char)
    arguments.append("".join(current))
    return arguments


def expand_arguments(text: str, variables: Mapping[str, str]) -> list[str]:
    """Split a step's arguments, then substitute variables into each one (see above)."""
    return [substitute(argument, variables) for argument in split_arguments(text)]


App = Callable[[object, str, dict[str, str]], Awaitable[bool]]
