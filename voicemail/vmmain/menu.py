"""The main and message menus of VoiceMailMain after login (AV@20 vm_execmain's loop).

Written as a generator that yields one action at a time and is sent the event answering it,
so the code reads in the order of app_voicemail's loop: intro, then one command at a time,
each command's prompts interruptible by any key, the interrupting key being the next command.
The generator is pure: it never awaits, never touches a clock, a channel or a database.

Deleted and heard messages are pending edits of the open folder, applied by one `Close`
when the folder is left (change of folder, Urgent -> INBOX) or the session ends.

Sub-menus are generators of their own, run by `_delegate`: key 0 options_menu.py, key 3
advanced_menu.py, key 8 forward_menu.py.
"""

from __future__ import annotations

from collections.abc import Generator

from .advanced_menu import AdvancedMenu
from .events import (
    INBOX,
    OLD,
    URGENT,
    Action,
    CallerId,
    Close,
    CopyMessage,
    Digit,
    Duration,
    EmptyFolder,
    Envelope,
    Event,
    FolderEdits,
    FolderName,
    FolderOpened,
    Intro,
    MailboxInfo,
    MailboxOpened,
    MessageSummary,
    OpenFolder,
    Play,
    PlayMessage,
    SayItem,
    SayNumber,
    Stored,
    StoreFailed,
    WaitDigit,
    folder_name,
)
from .forward_menu import ForwardMenu, MenuStoreFailed
from .options import MainArgs, MenuSettings
from .options_menu import OptionsFailed, OptionsMenu

Step = Generator[Action, Event, object]

MENU_WAIT = 6.0  # seconds of silence after the instructions
MENU_REPEATS = 3  # silent rounds before goodbye
FOLDER_PAUSE = 0.5
FOLDER_WAIT = 4.0
FOLDER_ROUNDS = 4
EXIT = "t"  # the timeout command, as Asterisk's 't'


class SessionFailed(Exception):
    """The database failed during the session: end it (pending edits still go to Close)."""


def _key(event: Event) -> str | None:
    return event.key if isinstance(event, Digit) else None


def folder_prompts(folder: int) -> tuple[SayItem, ...]:
    """vm_play_folder_name, in the word order of the listener's language (the sayer's)."""
    return (FolderName(folder),)


class MainMenu:
    """One logged-in session's menu state; `run` is the generator."""

    def __init__(
        self, args: MainArgs, settings: MenuSettings, mailbox: MailboxInfo | None = None
    ) -> None:
        self.args = args
        self.settings = settings
        # The logged-in mailbox: forward and reply look recipients up in its context.
        self.mailbox = mailbox or MailboxInfo(args.mailbox, args.context, "")
        self.state = "MAIN"
        self.folder = INBOX
        self.messages: tuple[MessageSummary, ...] = ()
        self.curmsg = 0
        self.deleted: set[int] = set()
        self.heard: set[int] = set()
        self.starting = True
        self.repeats = 0
        self.in_urgent = False
        self.new = self.old = self.urgent = 0
        self.temp_greeting = False

    # --- pending edits ---------------------------------------------------------------------

    def take_edits(self) -> FolderEdits | None:
        """The open folder's edits, handed over once (a second call returns None)."""
        delete = tuple(self.messages[i].msgnum for i in sorted(self.deleted))
        to_old: tuple[int, ...] = ()
        if self.settings.moveheard and self.folder in (INBOX, URGENT):
            to_old = tuple(
                self.messages[i].msgnum for i in sorted(self.heard) if i not in self.deleted
            )
        self.deleted, self.heard = set(), set()
        if not delete and not to_old:
            return None
        return FolderEdits(folder_name(self.folder), delete, to_old)

    # --- steps -----------------------------------------------------------------------------

    def _play(self, *items: SayItem) -> Step:
        event = yield Play(tuple(items))
        return _key(event)

    def _close(self) -> Step:
        edits = self.take_edits()
        if edits is None:
            return None
        event = yield Close(edits)
        if isinstance(event, StoreFailed):
            raise SessionFailed(event.reason)
        gone = len(set(edits.delete) | set(edits.to_old))
        if self.folder == URGENT:
            self.urgent = max(0, self.urgent - gone)
        elif self.folder == INBOX:
            self.new = max(0, self.new - gone)
        return None

    def _open(self, folder: int) -> Step:
        event = yield OpenFolder(folder)
        if not isinstance(event, FolderOpened):
            raise SessionFailed(getattr(event, "reason", "cannot open folder"))
        self.folder = folder
        self.messages = tuple(event.messages)
        self.curmsg = 0
        self.deleted, self.heard = set(), set()
        if folder == URGENT:
            self.urgent = len(self.messages)
        elif folder == INBOX:
            self.new = len(self.messages)
        return None

    def _switch(self, folder: int) -> Step:
        yield from self._close()
        yield from self._open(folder)
        return None

    @property
    def last(self) -> int:
        return len(self.messages) - 1

    # --- the loop --------------------------------------------------------------------------

    def run(self, opened: MailboxOpened) -> Step:
        """Returns True when the dial plan should go on (exit by # or timeout)."""
        self.new, self.old, self.urgent = opened.new, opened.old, opened.urgent
        self.temp_greeting = opened.temp_greeting
        if self.args.autoplay is not None:
            self.in_urgent = self.urgent > 0
            yield from self._open(URGENT if self.in_urgent else self.args.autoplay)
            if not self.messages:
                self.in_urgent = False
                yield from self._play(EmptyFolder(self.folder))
                yield from self._goodbye()
                return True
            cmd: str | None = "1"
        else:
            if self.urgent:
                self.in_urgent, start = True, URGENT
            elif self.new:
                start = INBOX
            elif self.old:
                start = OLD
            else:
                start = URGENT
            yield from self._open(start)
            intro: list[SayItem] = []
            if self.settings.tempgreetwarn and opened.temp_greeting:
                intro.append("vm-tempgreetactive")
            intro.append(Intro(new=self.new, old=self.old, urgent=self.urgent))
            cmd = yield from self._play(*intro)
        self.starting = True
        while cmd not in ("#", EXIT):
            if cmd is not None:
                self.repeats = 0
            cmd = yield from self._command(cmd)
        yield from self._goodbye()
        return True

    def _goodbye(self) -> Step:
        self.state = "GOODBYE"
        yield Play(("vm-goodbye",), interrupt="")
        return None

    def _command(self, cmd: str | None) -> Step:
        self.state = "MAIN" if self.starting else "MESSAGE"
        if cmd == "1":
            self.curmsg = 0
            return (yield from self._browse())
        if cmd == "5":
            return (yield from self._browse())
        if cmd == "2":
            return (yield from self._change_folder())
        if cmd == "4":
            return (yield from self._previous())
        if cmd == "6":
            return (yield from self._next())
        if cmd == "7":
            return (yield from self._toggle_delete())
        if cmd == "9":
            return (yield from self._save())
        if cmd == "*":
            return (yield from self._help())
        if cmd == "0":
            return (yield from self._options())
        if cmd == "3":
            return (yield from self._advanced())
        if cmd == "8":
            return (yield from self._forward())
        return (yield from self._instructions())

    def _delegate(self, menu: OptionsMenu | ForwardMenu | AdvancedMenu) -> Step:
        """Run a sub-menu's generator, keeping `state` in step with it; returns its result."""
        runner = menu.run()
        answer: Event | None = None
        try:
            while True:
                try:
                    action = next(runner) if answer is None else runner.send(answer)
                except StopIteration as stop:
                    return stop.value
                self.state = menu.state
                answer = yield action
        except (OptionsFailed, MenuStoreFailed) as exc:
            raise SessionFailed(str(exc)) from exc

    def _forward(self) -> Step:
        """Key 8: the current message to other mailboxes; 'no more messages' in an empty folder."""
        if not self.messages:
            return (yield from self._play("vm-nomore"))
        message = self.messages[self.curmsg]
        urgent = self.folder == URGENT or message.flag.lower() == "urgent"
        to_folder = URGENT if urgent and self.settings.forward_urgent_auto else INBOX
        menu = ForwardMenu(self.settings, self.mailbox, self.folder, message, to_folder)
        key = yield from self._delegate(menu)
        self.state = "MAIN" if self.starting else "MESSAGE"
        return key

    def _advanced(self) -> Step:
        """Key 3: reply, envelope, compose; the options for the current message only once one
        has been played (Asterisk's !vms.starting)."""
        current = None if self.starting or not self.messages else self.messages[self.curmsg]
        key = yield from self._delegate(AdvancedMenu(self.settings, self.mailbox, current))
        self.state = "MAIN" if self.starting else "MESSAGE"
        return key

    def _options(self) -> Step:
        """Mailbox options; back in the main menu of the same folder afterwards."""
        options = OptionsMenu(self.settings, self.temp_greeting)
        key = yield from self._delegate(options)
        self.temp_greeting = options.temp_greeting
        self.starting = True
        self.curmsg = 0
        self.state = "MAIN"
        return key

    def _instructions(self) -> Step:
        self.state = "MAIN" if self.starting else "MESSAGE"
        key = yield from self._play(*self._instruction_items())
        if key is None:
            event = yield WaitDigit(MENU_WAIT)
            key = _key(event)
        if key is None:
            self.repeats += 1
            if self.repeats >= MENU_REPEATS:
                return EXIT
        return key

    def _instruction_items(self, help_: bool = False) -> list[SayItem]:
        items: list[SayItem] = []
        if self.starting:
            if self.messages:
                items += ["vm-onefor", *folder_prompts(self.folder)]
            items.append("vm-opts")
        else:
            if self.curmsg:
                items.append("vm-prev")
            if not help_:
                items.append("vm-advopts")
            items.append("vm-repeat")
            if self.curmsg != self.last:
                items.append("vm-next")
            if not self.args.read_only:
                items.append("vm-undelete" if self.curmsg in self.deleted else "vm-delete")
            items += ["vm-toforward", "vm-savemessage"]
        items.append("vm-helpexit")
        return items

    def _help(self) -> Step:
        if self.starting:
            return None  # Asterisk: the instructions again
        items: list[SayItem] = ["vm-onefor", *folder_prompts(self.folder), "vm-opts"]
        key = yield from self._play(*items, *self._instruction_items(help_=True))
        if key is None:
            key = _key((yield WaitDigit(MENU_WAIT)))
        return key

    def _browse(self) -> Step:
        if not self.messages:
            return (yield from self._play(EmptyFolder(self.folder)))
        return (yield from self._play_message())

    def _play_message(self) -> Step:
        self.state = "PLAYING"
        self.starting = False
        index = self.curmsg
        message = self.messages[index]
        self.heard.add(index)
        items: list[SayItem] = []
        if index == 0:
            items.append("vm-first")
        elif index == self.last:
            items.append("vm-last")
        if message.flag.lower() == "urgent":
            items.append("vm-Urgent")
        items.append("vm-message")
        if index and index != self.last:
            items.append(SayNumber(index + 1))
        if message.category:
            items.append(message.category)
        if self.settings.envelope:
            items.append(Envelope(message.origtime))
        if self.settings.saycid:
            items.append(CallerId(message.callerid))
        minutes = message.duration // 60
        if self.settings.sayduration and minutes >= self.settings.saydurationm:
            items.append(Duration(minutes))
        key = yield from self._play(*items)
        if key is not None and key != "1":
            return key
        event = yield PlayMessage(self.folder, message.msgnum, self.settings.skipms)
        self.state = "MESSAGE"
        return _key(event)

    def _previous(self) -> Step:
        if self.messages and self.curmsg > 0:
            self.curmsg -= 1
            return (yield from self._play_message())
        if self.folder == INBOX and not self.in_urgent and self.urgent > 0:
            self.in_urgent = True
            yield from self._switch(URGENT)
            if self.messages:
                self.curmsg = self.last
                return (yield from self._play_message())
            return (yield from self._play("vm-nomore"))
        if self.settings.messagewrap and self.last > 0:
            self.curmsg = self.last
            return (yield from self._play_message())
        return (yield from self._play("vm-nomore"))

    def _next(self) -> Step:
        if self.curmsg < self.last:
            self.curmsg += 1
            return (yield from self._play_message())
        if self.in_urgent and self.folder == URGENT and self.new > 0:
            self.in_urgent = False
            yield from self._switch(INBOX)
            if self.messages:
                return (yield from self._play_message())
            return (yield from self._play("vm-nomore"))
        if self.settings.messagewrap and self.last > 0:
            self.curmsg = 0
            return (yield from self._play_message())
        return (yield from self._play("vm-nomore"))

    def _toggle_delete(self) -> Step:
        if self.args.read_only or not self.messages:
            return None
        self.deleted ^= {self.curmsg}
        self.state = "MESSAGE"
        key = yield from self._play("vm-deleted" if self.curmsg in self.deleted else "vm-undeleted")
        if key is None and self.settings.nextaftercmd:
            return (yield from self._next())
        return key

    def _save(self) -> Step:
        if not self.messages:
            return None
        self.state = "FOLDER_MENU"
        key = yield from self._choose_folder("vm-savefolder", 1)
        self.state = "MESSAGE"
        if key == "#":
            return None
        target = int(key)
        message = self.messages[self.curmsg]
        event = yield CopyMessage(self.folder, message.msgnum, target, self.settings.maxmsg)
        if isinstance(event, StoreFailed):
            raise SessionFailed(event.reason)
        assert isinstance(event, Stored)
        if event.full:
            key = yield from self._play("vm-mailboxfull")
        else:
            if not self.args.read_only:
                self.deleted.add(self.curmsg)
            key = yield from self._play(
                "vm-message", SayNumber(self.curmsg + 1), "vm-savedto", *folder_prompts(target)
            )
        if key is None and self.settings.nextaftercmd:
            return (yield from self._next())
        return key

    def _change_folder(self) -> Step:
        self.state = "FOLDER_MENU"
        key = yield from self._choose_folder("vm-changeto", 0)
        if key != "#":
            target = int(key)
            self.in_urgent = target == URGENT
            yield from self._switch(target)
        self.state = "MAIN"
        self.starting = True
        self.curmsg = 0
        return (yield from self._play(*folder_prompts(self.folder)))

    def _choose_folder(self, prompt: str, start: int) -> Step:
        """get_folder2: a digit 0-9, or '#' for cancel (also after four silent rounds)."""
        key = yield from self._play(prompt)
        rounds = 0
        while not (key is not None and (key.isdigit() or key == "#")):
            if rounds == FOLDER_ROUNDS:
                return "#"
            key = yield from self._folder_round(start)
            rounds += 1
        return key

    def _folder_round(self, start: int) -> Step:
        key = yield from self._play("vm-press")
        for number in range(start, 5):
            if key is None:
                key = yield from self._play(SayNumber(number), "vm-for", *folder_prompts(number))
            if key is None:
                key = _key((yield WaitDigit(FOLDER_PAUSE)))
        if key is None:
            key = yield from self._play("vm-tocancel")
        if key is None:
            key = _key((yield WaitDigit(FOLDER_WAIT)))
        return key
