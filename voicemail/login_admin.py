"""The operator's login tools: `voicemail unlock`, `voicemail show logins` and `voicemail passwd`,
the same words on the command line (cli.py, against the database) and on the running server's
console (register_console_commands).

Each names a mailbox as MAILBOX@CONTEXT and refuses one that no configuration or realtime
row knows. `passwd` applies the rules of a new PIN (pins.pin_problem) and stores it as the
menu does (hashed unless `pinhash=no`, keeping a leading '-'); the PIN is never printed or
logged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from storage.logins import LoginStore
from storage.odbc import DatabaseError

from . import pins
from .config_checks import parse_bool
from .console.commands import CommandError, Commands, Handler
from .mailboxes import Mailbox, MailboxDirectory
from .operator_messages import OperatorError, parse_mailbox

if TYPE_CHECKING:
    from .server import VoicemailServer

UNLOCK_USAGE = "voicemail unlock <mailbox>@<context>"
SHOW_LOGINS_USAGE = "voicemail show logins <mailbox>@<context>"
PASSWD_USAGE = "voicemail passwd <mailbox>@<context> <newpin>"
SHOW_LOGINS_LIMIT = 20

# pins.pin_problem's reasons, as the operator reads them.
PIN_PROBLEMS = {
    "short": "shorter than minpassword",
    "digits": "not only digits",
    "same": "one digit repeated",
    "run": "a run of digits (such as 1234 or 4321)",
    "mailbox": "the mailbox number",
    "common": "one of the commonest PINs",
}


async def known_mailbox(directory: MailboxDirectory, text: str) -> Mailbox:
    """The mailbox `text` (MAILBOX@CONTEXT) names; OperatorError when it is malformed or
    unknown."""
    mailbox, context = parse_mailbox(text)
    box = await directory.find(mailbox, context)
    if box is None:
        raise OperatorError(f"no mailbox {mailbox}@{context}")
    return box


async def unlock(logins: LoginStore, directory: MailboxDirectory, text: str) -> str:
    box = await known_mailbox(directory, text)
    if await logins.unlock(box.mailbox, box.context):
        return f"mailbox {box.mailbox}@{box.context}: unlocked, failed logins cleared"
    return f"mailbox {box.mailbox}@{box.context}: was not locked (no failed logins)"


async def show_logins(logins: LoginStore, directory: MailboxDirectory, text: str) -> str:
    box = await known_mailbox(directory, text)
    name = f"{box.mailbox}@{box.context}"
    state = await logins.state(box.mailbox, box.context)
    events = await logins.recent(box.mailbox, box.context, SHOW_LOGINS_LIMIT)
    lines = []
    now = time.time()
    if state is not None and state[1] > now:
        until = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(state[1]))
        lines.append(f"{name}: LOCKED until {until} (lockout {state[2]} in a row)")
    elif state is not None:
        lines.append(f"{name}: not locked, {state[0]} failed login(s) since the last success")
    else:
        lines.append(f"{name}: not locked")
    if not events:
        lines.append("no logins recorded")
        return "\n".join(lines)
    row = "{:<19} {:<8} {:<30} {}"
    lines.append(row.format("Time", "Outcome", "Caller-ID", "Source"))
    for event in events:
        at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event.at))
        lines.append(row.format(at, event.outcome, event.caller_id or "-", event.source or "-"))
    lines.append(f"{len(events)} login event(s), newest first")
    return "\n".join(lines)


def _setting(directory: MailboxDirectory, box: Mailbox, name: str, default: str) -> str:
    return box.options.get(name) or directory.settings.general.get(name) or default


async def set_password(directory: MailboxDirectory, text: str, new_pin: str) -> str:
    """Refuse a trivial PIN with the reason; else store it where the mailbox lives."""
    box = await known_mailbox(directory, text)
    name = f"{box.mailbox}@{box.context}"
    try:
        minpassword = int(_setting(directory, box, "minpassword", "4"))
    except ValueError:
        minpassword = 4
    problem = pins.pin_problem(new_pin, mailbox=box.mailbox, minpassword=minpassword)
    if problem is not None:
        reason = PIN_PROBLEMS.get(problem, problem)
        if problem == "short":
            reason = f"shorter than minpassword ({minpassword} digits)"
        raise OperatorError(f"new PIN for {name} refused: {reason}")
    hashed = parse_bool(_setting(directory, box, "pinhash", "yes"))
    stored = await asyncio.to_thread(
        pins.stored_form, new_pin, pinhash=hashed is not False, locked=pins.is_locked(box.password)
    )
    # `stored` is already what goes in the column (hashed or not, '-' kept): written as is.
    if not await directory.change_password(box.mailbox, box.context, stored, pinhash=False):
        raise OperatorError(f"new PIN for {name} not stored (the log says why)")
    kind = "hashed" if hashed is not False else "clear text (pinhash=no)"
    return f"mailbox {name}: new PIN stored ({kind})"


def register_console_commands(commands: Commands, server: VoicemailServer) -> None:
    """The three commands on the running server's console."""

    def tools() -> tuple[LoginStore, MailboxDirectory]:
        logins = getattr(server, "logins", None)
        if logins is None or server.mailboxes is None:
            raise CommandError("the server is not started yet")
        return logins, server.mailboxes

    def handler(usage: str, run: Callable[[list[str]], Awaitable[str]]) -> Handler:
        """A console handler: `run` gets the arguments when there are as many as the
        `<...>` words of `usage`; an operator or database error becomes the command's error."""
        wanted = sum(word.startswith("<") for word in usage.split())

        async def handle(args: list[str]) -> str:
            if len(args) != wanted:
                raise CommandError(f"Usage: {usage}")
            try:
                return await run(args)
            except (OperatorError, DatabaseError) as exc:
                raise CommandError(str(exc)) from exc

        return handle

    unlocking = handler(UNLOCK_USAGE, lambda args: unlock(*tools(), args[0]))
    showing = handler(SHOW_LOGINS_USAGE, lambda args: show_logins(*tools(), args[0]))
    passwd = handler(PASSWD_USAGE, lambda args: set_password(tools()[1], args[0], args[1]))

    commands.register(UNLOCK_USAGE, unlocking, "Clear a mailbox's login lockout")
    commands.register(SHOW_LOGINS_USAGE, showing, "List a mailbox's last logins")
    commands.register(PASSWD_USAGE, passwd, "Set a mailbox's PIN", secret_args=(1,))
