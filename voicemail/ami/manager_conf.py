"""manager.conf: whether AMI listens, where, and who may log in with which classes.

Options we do not implement are refused at their file and line, so an operator who
relies on one (webenabled, eventfilter, ...) learns it at start-up, not in production.
A missing manager.conf means AMI is off, as in Asterisk without `enabled = yes`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from channels.sip.peers import Acl
from storage.conffile import ConfigError, Section, Variable, load_config

# The classes Asterisk 20 knows (manager.c's perms table); "all" means every one.
CLASSES = frozenset(
    """system call log verbose command agent user config dtmf reporting cdr dialplan
    originate agi cc aoc test security message""".split()
)
GENERAL_OPTIONS = frozenset({"enabled", "port", "bindaddr"})
USER_OPTIONS = frozenset({"secret", "deny", "permit", "read", "write"})
DEFAULT_PORT = 5038


@dataclass(frozen=True)
class AmiUser:
    """One `[name]` section: its secret, where it may connect from, what it may do."""

    name: str
    secret: str
    read: frozenset[str] = frozenset()
    write: frozenset[str] = frozenset()
    acl: Acl = field(default_factory=Acl)

    def may_read(self, classes: frozenset[str]) -> bool:
        """Events of `classes` reach this user when it reads one of them (or all)."""
        return "all" in self.read or bool(self.read & classes)

    def may_write(self, classes: frozenset[str]) -> bool:
        """An action needing one of `classes` is allowed; an empty set needs nothing."""
        return not classes or "all" in self.write or bool(self.write & classes)


@dataclass(frozen=True)
class ManagerSettings:
    enabled: bool = False
    port: int = DEFAULT_PORT
    bindaddr: str = "127.0.0.1"
    users: dict[str, AmiUser] = field(default_factory=dict)

    def user(self, name: str) -> AmiUser | None:
        """Usernames match case-insensitively, as Asterisk's get_manager_by_name_locked."""
        return self.users.get(name.lower())


def _classes(variable: Variable | None) -> frozenset[str]:
    if variable is None:
        return frozenset()
    words = {word.strip().lower() for word in variable.value.split(",") if word.strip()}
    words.discard("none")
    unknown = sorted(words - CLASSES - {"all"})
    if unknown:
        raise ConfigError(
            variable.filename,
            variable.line,
            f'{variable.name}: unknown class "{unknown[0]}" (known: all, '
            + ", ".join(sorted(CLASSES))
            + ")",
        )
    return frozenset(words)


def _refuse_unknown(section: Section, known: frozenset[str]) -> None:
    for variable in section.variables:
        if variable.name.lower() not in known:
            raise ConfigError(
                variable.filename,
                variable.line,
                f'[{section.name}] option "{variable.name}" is not implemented',
            )


def _general(section: Section) -> tuple[bool, int, str]:
    _refuse_unknown(section, GENERAL_OPTIONS)
    enabled = section.getbool("enabled", False)
    port = section.getint("port", DEFAULT_PORT)
    if not 0 <= port <= 65535:
        variable = section.variable("port")
        assert variable is not None
        raise ConfigError(variable.filename, variable.line, f"port {port} is out of range")
    bindaddr = (section.get("bindaddr") or "127.0.0.1").strip()
    return enabled, port, bindaddr


def _user(section: Section) -> AmiUser:
    _refuse_unknown(section, USER_OPTIONS)
    secret = section.get("secret")
    if not secret:
        raise ConfigError(section.filename, section.line, f"[{section.name}] has no secret")
    rules = [
        variable for variable in section.variables if variable.name.lower() in ("permit", "deny")
    ]
    try:
        acl = Acl.parse((variable.name, variable.value) for variable in rules)
    except ValueError as exc:
        bad = next((v for v in rules if _bad_rule(v)), rules[0] if rules else None)
        line = (bad.filename, bad.line) if bad else (section.filename, section.line)
        raise ConfigError(*line, str(exc)) from exc
    return AmiUser(
        name=section.name,
        secret=secret,
        read=_classes(section.variable("read")),
        write=_classes(section.variable("write")),
        acl=acl,
    )


def _bad_rule(variable: Variable) -> bool:
    try:
        Acl.parse([(variable.name, variable.value)])
    except ValueError:
        return True
    return False


def load_manager_conf(directory: Path) -> ManagerSettings:
    """manager.conf in the configuration directory; missing means AMI off."""
    conf = load_config(directory / "manager.conf", required=False)
    enabled, port, bindaddr = False, DEFAULT_PORT, "127.0.0.1"
    users: dict[str, AmiUser] = {}
    for section in conf.sections:
        if section.name.lower() == "general":
            enabled, port, bindaddr = _general(section)
        else:
            users[section.name.lower()] = _user(section)
    return ManagerSettings(enabled, port, bindaddr, users)
