"""The VoiceMailMain session: login (AV@20 vm_authenticate), then the menus (menu.py).

`VoiceMailMain.start()` and `.handle(event)` return the actions to perform; the session is
pure (no I/O, no clock). Whatever happens -- exit, failed login, database error, hang-up in
any state, an event that makes no sense -- it ends with the open folder's pending edits in a
`Close` (if any) and then `Finish`, and asks for nothing after that.

Login departs from Asterisk in two ways (issue 11): the PIN is checked by the driver through
the login guard (CheckPin -> PinChecked: lockout across calls, audit), and a mailbox whose
stored PIN is empty is entered without one only with `emptypin=yes` or the `s` option; else
it is asked for a PIN like any mailbox and none matches.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from dataclasses import replace

from ..login_guard import LoginOutcome
from ..pins import is_empty
from .events import (
    EXPECTS,
    Action,
    Authenticated,
    CheckPin,
    Close,
    Collect,
    Digits,
    Event,
    FindMailbox,
    Finish,
    HungUp,
    MailboxFound,
    MailboxInfo,
    MailboxOpened,
    PinChecked,
    Play,
)
from .menu import MainMenu, SessionFailed
from .newuser import NewUserSetup, SetupEnd
from .options import MainArgs, MenuSettings
from .options_menu import OptionsFailed

log = logging.getLogger(__name__)

Step = Generator[Action, Event, object]

LOGIN_FIRST = 10.0  # seconds for the first digit of a mailbox or PIN
LOGIN_BETWEEN = 2.0  # seconds between digits


def _empty_pin_allowed(info: MailboxInfo, session: MenuSettings) -> bool:
    """An empty stored PIN lets the caller in without a PIN only with `emptypin=yes`."""
    return (info.settings or session).emptypin


class GotoA(Exception):
    """The caller entered '*' at login: continue at extension `a` (Asterisk)."""


class VoiceMailMain:
    """One call's VoiceMailMain. `state` names where it is (for logs and tests)."""

    def __init__(self, args: MainArgs, settings: MenuSettings, caller_id_num: str = "") -> None:
        self.args = args
        self.settings = settings
        self.caller_id_num = caller_id_num
        self.state = "START"
        self.finished = False
        self.mailbox: MailboxInfo | None = None
        self.menu: MainMenu | None = None
        self.goto_a = False
        self._gen = self._session()
        self._pending: Action | None = None
        self._started = False

    # --- the public side -------------------------------------------------------------------

    def start(self) -> list[Action]:
        if self._started:
            return []
        self._started = True
        return self._advance(None)

    def handle(self, event: Event) -> list[Action]:
        if self.finished or not self._started:
            return []
        if isinstance(event, HungUp):
            self._gen.close()
            return self._end(keep_going=False)
        expected = EXPECTS.get(type(self._pending), ())
        if not isinstance(event, expected):
            log.error("VoiceMailMain: %r does not answer %r; ending", event, self._pending)
            self._gen.close()
            return self._end(keep_going=False)
        return self._advance(event)

    # --- stepping the generator --------------------------------------------------------------

    def _advance(self, event: Event | None) -> list[Action]:
        try:
            action = next(self._gen) if event is None else self._gen.send(event)
        except StopIteration as stop:
            return self._end(keep_going=bool(stop.value))
        except SessionFailed as exc:
            log.error("VoiceMailMain: database failure: %s", exc)
            return self._end(keep_going=False)
        except GotoA:
            self.goto_a = True
            return self._end(keep_going=True)
        self._pending = action
        return [action]

    def _end(self, keep_going: bool) -> list[Action]:
        self.finished = True
        self.state = "CLOSED"
        self._pending = None
        actions: list[Action] = []
        if self.menu is not None:
            edits = self.menu.take_edits()
            if edits is not None:
                actions.append(Close(edits))
        actions.append(Finish(keep_going))
        return actions

    # --- the session -----------------------------------------------------------------------

    def _session(self) -> Step:
        info = yield from self._login()
        if info is None:
            return False
        self.mailbox = info
        self.state = "OPENING"
        settings = replace(
            info.settings or self.settings,
            pin_locked=info.password.startswith("-"),
            mailbox=info.mailbox,
        )
        event = yield Authenticated(info)
        if not isinstance(event, MailboxOpened):
            raise SessionFailed(getattr(event, "reason", "cannot open mailbox"))
        if event.new_user:
            end = yield from self._new_user(settings, event.greetings)
            if end is SetupEnd.LEFT:
                self.state = "GOODBYE"
                yield Play(("vm-goodbye",), interrupt="")
                return True
            if end is SetupEnd.FAILED:
                return False
        self.menu = MainMenu(self.args, settings, info)
        runner = self.menu.run(event)
        # Delegate, but keep `state` in step with the menu's.
        answer: Event | None = None
        while True:
            try:
                action = next(runner) if answer is None else runner.send(answer)
            except StopIteration as stop:
                return stop.value
            self.state = self.menu.state
            answer = yield action

    def _new_user(self, settings: MenuSettings, greetings: frozenset[str]) -> Step:
        """The new-user setup (newuser.py), keeping `state` in step with it."""
        setup = NewUserSetup(settings, greetings)
        runner = setup.run()
        answer: Event | None = None
        try:
            while True:
                try:
                    action = next(runner) if answer is None else runner.send(answer)
                except StopIteration as stop:
                    return stop.value
                self.state = setup.state
                answer = yield action
        except OptionsFailed as exc:
            raise SessionFailed(str(exc)) from exc

    def _collect(self, prompt: str) -> Step:
        event = yield Collect((prompt,), first=LOGIN_FIRST, between=LOGIN_BETWEEN)
        assert isinstance(event, Digits)
        return event.text

    def _find(self, mailbox: str) -> Step:
        event = yield FindMailbox(mailbox, self.args.context)
        if not isinstance(event, MailboxFound):
            raise SessionFailed(getattr(event, "reason", "mailbox lookup failed"))
        return event.info

    def _login(self) -> Step:
        """The mailbox's info, or None after maxlogins failures (vm-goodbye played)."""
        args = self.args
        known: MailboxInfo | None = None
        if args.mailbox and not args.prefix:
            known = yield from self._find(args.mailbox)
            if known is not None and args.skip_password:
                return known
        skipuser = known is not None
        prompt = "vm-login"
        attempts = 0
        while attempts < self.settings.maxlogins:
            info = known
            if not skipuser:
                self.state = "LOGIN_MAILBOX"
                entered = yield from self._collect(prompt)
                if entered.startswith("*"):
                    raise GotoA()
                if not entered:
                    entered = self.caller_id_num
                    if not entered:
                        log.info("VoiceMailMain: no mailbox entered and no caller id")
                        return None
                if args.prefix:
                    entered = args.mailbox + entered
                info = yield from self._find(entered)
            if info is not None and is_empty(info.password):
                if args.skip_password or _empty_pin_allowed(info, self.settings):
                    return info  # Asterisk: no PIN asked
                log.warning(
                    "VoiceMailMain: mailbox %s@%s has an empty PIN: login refused (it needs "
                    "emptypin=yes, or VoiceMailMain's s option in the dial plan)",
                    info.mailbox,
                    info.context,
                )
            # An empty-PIN mailbox that may not be entered is asked for a PIN like any other
            # (and never matches), so the caller cannot tell it apart from a wrong PIN.
            self.state = "LOGIN_PIN"
            pin = yield from self._collect("vm-password")
            if pin.startswith("*"):
                raise GotoA()
            self.state = "LOGIN_CHECK"
            checked = yield CheckPin(info, pin)
            if not isinstance(checked, PinChecked):
                raise SessionFailed(getattr(checked, "reason", "PIN check failed"))
            if checked.outcome is LoginOutcome.OK and info is not None:
                return info
            if checked.outcome is LoginOutcome.LOCKED:
                # What a caller hears after the last wrong PIN: no word of a lockout.
                log.info(
                    "VoiceMailMain: mailbox %s@%s is locked out; login refused",
                    info.mailbox if info else "(unknown)",
                    args.context,
                )
                yield Play(("vm-incorrect",), interrupt="")
                break
            attempts += 1
            log.info(
                "VoiceMailMain: login failed for mailbox %s@%s (attempt %d of %d)",
                info.mailbox if info else "(unknown)",
                args.context,
                attempts,
                self.settings.maxlogins,
            )
            if skipuser or attempts >= self.settings.maxlogins:
                yield Play(("vm-incorrect",), interrupt="")
            else:
                prompt = "vm-incorrect-mailbox"
        self.state = "GOODBYE"
        yield Play(("vm-goodbye",), interrupt="")
        return None
