"""`voicemail -r`: an interactive console on the running server, like `asterisk -r`.

Lines are read with readline (history kept in ~/.voicemail_history, Tab completes command
words from the server's own table, so completion always matches what the server runs).
`quit` or `exit` or end of input leaves; the server keeps running.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from .control import ControlClient, NoServer, connect

PROMPT = "voicemail*CLI> "
HISTORY = Path("~/.voicemail_history")
HISTORY_LENGTH = 1000

try:
    import readline
except ImportError:  # pragma: no cover - readline is part of CPython on Linux
    readline = None  # type: ignore[assignment]


def _completer(client: ControlClient):  # type: ignore[no-untyped-def]
    """readline's completer: the server's next words for the line typed so far."""
    matches: list[str] = []

    def complete(text: str, state: int) -> str | None:
        if state == 0:
            assert readline is not None
            line = readline.get_line_buffer()[: readline.get_endidx()]
            try:
                matches[:] = [word + " " for word in client.completions(line)]
            except NoServer:
                matches[:] = []
        return matches[state] if state < len(matches) else None

    return complete


def console(config_dir: Path) -> int:
    """Run commands typed by the operator until quit/EOF; 2 when no server answers."""
    try:
        client = connect(config_dir)
    except NoServer as exc:
        print(f"voicemail: {exc}", file=sys.stderr)
        return 2
    history = HISTORY.expanduser()
    if readline is not None:
        with contextlib.suppress(OSError):
            readline.read_history_file(history)
        readline.set_history_length(HISTORY_LENGTH)
        readline.set_completer(_completer(client))
        readline.set_completer_delims(" \t")
        readline.parse_and_bind("tab: complete")
    print(f"Connected to the voicemail server on {client.path}; 'help' lists commands.")
    try:
        while True:
            try:
                line = input(PROMPT).strip()
            except EOFError:
                print()
                break
            except KeyboardInterrupt:
                print()
                continue
            if line in ("quit", "exit"):
                break
            if not line:
                continue
            if readline is not None and " ".join(line.lower().split()[:2]) == "voicemail passwd":
                with contextlib.suppress(ValueError):  # a PIN stays out of the history file
                    readline.remove_history_item(readline.get_current_history_length() - 1)
            try:
                ok, output = client.run(line)
            except NoServer as exc:
                print(f"voicemail: {exc}", file=sys.stderr)
                return 2
            if output:
                print(output, flush=True)
    finally:
        client.close()
        if readline is not None:
            with contextlib.suppress(OSError):
                readline.write_history_file(history)
    return 0
