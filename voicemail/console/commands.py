"""The command registry: words in, text out.

Asterisk's CLI matches a command by its leading words ("sip show peer 1000" runs
"sip show peer" with the argument "1000"); the longest registered prefix wins. Handlers
return the text the operator sees; a CommandError is a failed command (exit status 1 for
`-rx`, `Response: Error` for AMI) with its message.
"""

from __future__ import annotations

import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

Handler = Callable[[list[str]], Awaitable[str]]


class CommandError(Exception):
    """The command ran and failed; the message is for the operator."""


@dataclass(frozen=True)
class CommandResult:
    ok: bool
    output: str


@dataclass(frozen=True)
class Command:
    words: tuple[str, ...]
    handler: Handler
    usage: str
    summary: str
    secret_args: tuple[int, ...] = ()  # arguments never logged (a PIN)


class Commands:
    """Every console command of one server."""

    def __init__(self) -> None:
        self._table: dict[tuple[str, ...], Command] = {}

    def register(
        self, usage: str, handler: Handler, summary: str, *, secret_args: tuple[int, ...] = ()
    ) -> None:
        """`usage` is the command words then argument placeholders: "sip show peer <name>".
        `secret_args`: the positions of arguments that loggable() masks (a PIN)."""
        words = tuple(word for word in usage.split() if not word.startswith(("<", "[")))
        self._table[words] = Command(words, handler, usage, summary, secret_args)

    def loggable(self, line: str) -> str:
        """The command line as it may be logged: secret arguments replaced by `****`."""
        try:
            words = shlex.split(line)
        except ValueError:
            words = line.split()
        found = self.find(words)
        if found is None or not found[0].secret_args:
            return line
        command, arguments = found
        shown = [
            "****" if index in command.secret_args else word for index, word in enumerate(arguments)
        ]
        return " ".join([*command.words, *shown])

    def find(self, words: list[str]) -> tuple[Command, list[str]] | None:
        lowered = [word.lower() for word in words]
        for length in range(len(lowered), 0, -1):
            command = self._table.get(tuple(lowered[:length]))
            if command is not None:
                return command, words[length:]
        return None

    async def run(self, line: str) -> CommandResult:
        try:
            words = shlex.split(line)
        except ValueError as exc:
            return CommandResult(False, f"cannot parse the command: {exc}")
        if not words:
            return CommandResult(True, "")
        found = self.find(words)
        if found is None:
            return CommandResult(False, f"No such command '{line.strip()}' (type 'help' for help)")
        command, arguments = found
        try:
            return CommandResult(True, await command.handler(arguments))
        except CommandError as exc:
            return CommandResult(False, str(exc))

    def completions(self, line: str) -> list[str]:
        """The next words that can follow what is typed (for the interactive console)."""
        typed = line.split()
        partial = "" if line.endswith(" ") or not line else typed.pop()
        choices = {
            command.words[len(typed)]
            for command in self._table.values()
            if len(command.words) > len(typed)
            and list(command.words[: len(typed)]) == [w.lower() for w in typed]
            and command.words[len(typed)].startswith(partial.lower())
        }
        return sorted(choices)

    def help_text(self) -> str:
        width = max((len(command.usage) for command in self._table.values()), default=0)
        return "\n".join(
            f"{command.usage.ljust(width)}  {command.summary}"
            for command in sorted(self._table.values(), key=lambda c: c.words)
        )
