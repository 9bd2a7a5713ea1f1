"""Parser for Asterisk `.conf` files (voicemail.conf, sip.conf, extconfig.conf, res_odbc.conf, ...).

Operators copy these files from a working Asterisk box, so the syntax follows Asterisk's
main/config.c: `[section]` headers (repeatable), `name = value` and `name => value` lines,
`;` comments with `\\;` escapes and `;-- ... --;` block comments, templates `[name](!)`,
inheritance `[name](a,b)`, appending `[name](+)`, `name += more`, and `#include` /
`#tryinclude` with glob patterns. Where Asterisk only logs a warning and carries on with a
half-read file (a line without `=`, an unknown directive), this parser raises `ConfigError`
naming file and line, because a silently ignored voicemail setting is worse than a refusal
to start.
"""

from __future__ import annotations

import codecs
import glob
import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path

__all__ = ["ConfigError", "ConfigFile", "Section", "Variable", "load_config", "parse_config_text"]

log = logging.getLogger(__name__)

# ast_true() / ast_false() words in Asterisk's main/utils.c.
_TRUE_WORDS = frozenset({"yes", "true", "y", "t", "1", "on"})
_FALSE_WORDS = frozenset({"no", "false", "n", "f", "0", "off"})
_INT = re.compile(r"[+-]?[0-9]+")
# "[name]" optionally followed by "(options)"; Asterisk takes the name up to the first "]".
_HEADER = re.compile(r"\[([^\]]*)\]\s*(?:\(([^)]*)\))?")
_DIRECTIVE = re.compile(r"#(\S*)\s*(.*)")


def _latin1_fallback(err: UnicodeError) -> tuple[str, int]:
    """Decode bytes that are not UTF-8 as latin-1, as old Asterisk files often are."""
    assert isinstance(err, UnicodeDecodeError)
    return err.object[err.start : err.end].decode("latin-1"), err.end


codecs.register_error("conffile-latin1", _latin1_fallback)


class ConfigError(Exception):
    """A configuration problem, located at `filename:line` so an operator can fix it."""

    def __init__(self, filename: str, line: int, message: str) -> None:
        super().__init__(filename, line, message)
        self.filename = filename
        self.line = line
        self.message = message

    def __str__(self) -> str:
        return f"{self.filename}:{self.line}: {self.message}"


@dataclass(frozen=True)
class Variable:
    """One `name = value` (or `name => value` when `is_object`) line, with where it came from."""

    name: str
    value: str
    is_object: bool
    filename: str
    line: int


@dataclass
class Section:
    """A `[name]` category: its variables in file order, inherited ones first."""

    name: str
    variables: list[Variable]
    filename: str
    line: int
    is_template: bool = False

    def variable(self, name: str) -> Variable | None:
        """Last variable called `name` (case-insensitive), so a later line overrides a template."""
        wanted = name.lower()
        for var in reversed(self.variables):
            if var.name.lower() == wanted:
                return var
        return None

    def get(self, name: str, default: str | None = None) -> str | None:
        """Last value of `name`, or `default` when the section does not set it."""
        var = self.variable(name)
        return default if var is None else var.value

    def getall(self, name: str) -> list[str]:
        """Every value of `name` in file order (e.g. several `exten =>` or `allow =` lines)."""
        wanted = name.lower()
        return [var.value for var in self.variables if var.name.lower() == wanted]

    def items(self) -> list[tuple[str, str]]:
        """All (name, value) pairs in file order, duplicates included."""
        return [(var.name, var.value) for var in self.variables]

    def getbool(self, name: str, default: bool) -> bool:
        """`name` read with Asterisk's ast_true/ast_false words; anything else is an error."""
        var = self.variable(name)
        if var is None:
            return default
        word = var.value.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
        raise ConfigError(
            var.filename, var.line, f'"{var.name}" must be yes or no, got "{var.value}"'
        )

    def getint(self, name: str, default: int) -> int:
        """`name` as a decimal integer; a value that is not one is an error at its line."""
        var = self.variable(name)
        if var is None:
            return default
        if not _INT.fullmatch(var.value.strip()):
            raise ConfigError(
                var.filename, var.line, f'"{var.name}" must be an integer, got "{var.value}"'
            )
        return int(var.value)


@dataclass
class ConfigFile:
    """A parsed file: its non-template sections in file order (includes expanded in place)."""

    filename: str
    sections: list[Section]

    def section(self, name: str) -> Section | None:
        """First section called `name` (case-insensitive, like ast_category_get)."""
        found = self.sections_named(name)
        return found[0] if found else None

    def sections_named(self, name: str) -> list[Section]:
        """Every section called `name`, in file order (extensions.conf repeats contexts)."""
        wanted = name.lower()
        return [s for s in self.sections if s.name.lower() == wanted]

    def names(self) -> list[str]:
        """Section names in file order, each name once."""
        seen: dict[str, None] = {}
        for s in self.sections:
            seen.setdefault(s.name, None)
        return list(seen)


def _strip_comments(line: str, depth: int) -> tuple[str, int]:
    """Remove `;` comments and `;-- --;` block comments from one line.

    `depth` is how many block comments are open when the line starts (they nest, as in
    Asterisk). Returns the text outside comments, with `\\;` turned into `;`, and the new depth.
    """
    out: list[str] = []
    i = 0
    marker_end = 0  # a "--;" must follow the last ";--" or "--;" seen, as in config.c
    while i < len(line):
        ch = line[i]
        if ch != ";":
            if depth == 0:
                out.append(ch)
            i += 1
        elif i > 0 and line[i - 1] == "\\":
            if depth == 0:
                out[-1] = ";"
            i += 1
        elif line.startswith(";--", i) and not line.startswith(";---", i):
            depth += 1
            i += 3
            marker_end = i
        elif depth > 0 and i - 2 >= marker_end and line[i - 2 : i] == "--":
            depth -= 1
            i += 1
            marker_end = i
        elif depth == 0:
            break  # a plain ";" comment runs to the end of the line
        else:
            i += 1
    return "".join(out), depth


def _decode(data: bytes) -> str:
    """UTF-8 text, with undecodable bytes read as latin-1 and a leading BOM dropped."""
    return data.decode("utf-8", errors="conffile-latin1").removeprefix("\ufeff")


class _Parser:
    """Builds the section list for one top-level file and everything it includes."""

    def __init__(self, top_dir: Path | None) -> None:
        self.top_dir = top_dir
        self.sections: list[Section] = []  # templates included, in definition order
        self.open_files: list[Path] = []  # resolved paths being parsed, for loop detection

    def parse(
        self, text: str, filename: str, directory: Path | None, current: Section | None
    ) -> None:
        """Parse `text`; lines before its first header go to `current` (the includer's section)."""
        depth = 0
        comment_line = 0
        for lineno, raw in enumerate(text.split("\n"), start=1):
            line, new_depth = _strip_comments(raw, depth)
            if depth == 0 and new_depth > 0:
                comment_line = lineno
            depth = new_depth
            line = line.strip()
            if not line:
                continue
            if line.startswith("["):
                current = self._header(line, filename, lineno)
            elif line.startswith("#"):
                self._directive(line, filename, lineno, directory, current)
            else:
                self._variable(line, filename, lineno, current)
        if depth:
            # Asterisk only warns here too; the rest of the file has been ignored.
            log.warning("%s:%d: block comment ';--' is never closed", filename, comment_line)

    def _find(self, name: str, templates: bool) -> Section | None:
        """First section of that name defined so far; `templates` allows template sections."""
        wanted = name.lower()
        for s in self.sections:
            if s.name.lower() == wanted and (templates or not s.is_template):
                return s
        return None

    def _header(self, line: str, filename: str, lineno: int) -> Section:
        """Handle `[name]`, `[name](!)`, `[name](tmpl,...)` and `[name](+)`."""
        match = _HEADER.fullmatch(line)
        if not match:
            raise ConfigError(
                filename, lineno, f'malformed section header "{line}", expected "[name]"'
            )
        name = match[1].strip()
        if not name:
            raise ConfigError(filename, lineno, "section name is empty")
        section = Section(name=name, variables=[], filename=filename, line=lineno)
        target: Section | None = None
        options = [] if match[2] is None else [o.strip() for o in match[2].split(",")]
        for option in options:
            if option == "!":
                section.is_template = True
            elif option == "+":
                target = self._find(name, templates=False)
                if target is None:
                    raise ConfigError(
                        filename, lineno, f'"[{name}](+)" adds to a section not defined before'
                    )
            elif option.startswith("+"):
                raise ConfigError(filename, lineno, f'section filter "{option}" is not supported')
            else:
                base = self._find(option, templates=True)
                if base is None:
                    raise ConfigError(filename, lineno, f'unknown template "{option}"')
                section.variables.extend(base.variables)
        if target is not None:
            target.variables.extend(section.variables)
            target.is_template = target.is_template or section.is_template
            return target
        self.sections.append(section)
        return section

    def _directive(
        self,
        line: str,
        filename: str,
        lineno: int,
        directory: Path | None,
        current: Section | None,
    ) -> None:
        """Handle `#include`, `#tryinclude`; refuse `#exec` and unknown directives."""
        match = _DIRECTIVE.fullmatch(line)
        assert match is not None  # "#" followed by anything matches
        word, arg = match[1].lower(), match[2].strip()
        if word == "exec":
            raise ConfigError(
                filename, lineno, "#exec is not supported; #include a file with its output"
            )
        if word not in ("include", "tryinclude"):
            raise ConfigError(filename, lineno, f'unknown directive "#{match[1]}"')
        if len(arg) >= 2 and (arg[0], arg[-1]) in (('"', '"'), ("<", ">")):
            arg = arg[1:-1].strip()
        if not arg:
            raise ConfigError(filename, lineno, f"#{word} needs a file name")
        pattern = Path(arg)
        if not pattern.is_absolute():
            if directory is None:
                raise ConfigError(
                    filename, lineno, f'relative #{word} "{arg}" needs a base directory'
                )
            pattern = directory / pattern
        if glob.has_magic(str(pattern)):
            paths = [Path(p) for p in sorted(glob.glob(str(pattern)))]
        else:
            paths = [pattern]
        paths = [p for p in paths if p.is_file()]
        if not paths and word == "include":
            raise ConfigError(filename, lineno, f'#include file "{arg}" not found')
        for path in paths:
            self._include(path, filename, lineno, current)

    def _include(self, path: Path, filename: str, lineno: int, current: Section | None) -> None:
        """Parse one included file in place, refusing a file that is already being parsed."""
        resolved = path.resolve()
        if resolved in self.open_files:
            chain = " -> ".join(self._display(p) for p in [*self.open_files, resolved])
            raise ConfigError(filename, lineno, f"#include loop: {chain}")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(filename, lineno, f'cannot read "{path}": {exc.strerror}') from exc
        self.open_files.append(resolved)
        self.parse(_decode(data), self._display(path), path.parent, current)
        self.open_files.pop()

    def _display(self, path: Path) -> str:
        """Name an included file relative to the top file's directory when it lies below it."""
        if self.top_dir is not None:
            for candidate, top in ((path, self.top_dir), (path.resolve(), self.top_dir.resolve())):
                try:
                    return str(candidate.relative_to(top))
                except ValueError:
                    pass
        return str(path)

    def _variable(self, line: str, filename: str, lineno: int, current: Section | None) -> None:
        """Handle `name = value`, `name => value` and `name += more`."""
        if current is None:
            raise ConfigError(filename, lineno, f'"{line}" comes before the first [section]')
        # A leading backslash lets a name start with "[" or "#" (config.c's is_escaped).
        start = 1 if line.startswith("\\") else 0
        if start and (len(line) < 2 or line[1].isspace()):
            raise ConfigError(filename, lineno, f'invalid escape in "{line}"')
        eq = line.find("=", 2 * start)
        if eq < 0:
            raise ConfigError(
                filename, lineno, f'expected "name = value" or "name => value", got "{line}"'
            )
        if eq > start and line[eq - 1] == "+":
            name = line[start : eq - 1].strip()
            for index in range(len(current.variables) - 1, -1, -1):
                old = current.variables[index]
                if old.name == name:
                    value = (old.value + line[eq + 1 :]).strip()
                    current.variables[index] = replace(
                        old, value=value, filename=filename, line=lineno
                    )
                    return
            is_object, value = False, line[eq + 1 :].strip()
        else:
            name = line[start:eq].strip()
            is_object = line.startswith("=>", eq)
            value = line[eq + (2 if is_object else 1) :].strip()
        if not name:
            raise ConfigError(filename, lineno, f'missing name before "=" in "{line}"')
        current.variables.append(Variable(name, value, is_object, filename, lineno))


def parse_config_text(
    text: str, filename: str = "<string>", base_dir: Path | None = None
) -> ConfigFile:
    """Parse configuration text; relative `#include`s resolve against `base_dir`."""
    parser = _Parser(base_dir)
    parser.parse(text.removeprefix("\ufeff"), filename, base_dir, None)
    return ConfigFile(filename, [s for s in parser.sections if not s.is_template])


def load_config(path: Path, required: bool = True) -> ConfigFile:
    """Read and parse `path`; a missing optional file gives an empty ConfigFile."""
    filename = str(path)
    if not path.is_file():
        if required:
            raise ConfigError(filename, 0, "file not found")
        return ConfigFile(filename, [])
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(filename, 0, f"cannot read: {exc.strerror}") from exc
    parser = _Parser(path.parent)
    parser.open_files.append(path.resolve())
    parser.parse(_decode(data), filename, path.parent, None)
    return ConfigFile(filename, [s for s in parser.sections if not s.is_template])
