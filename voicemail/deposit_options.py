"""VoiceMail()'s arguments: the recipients and the option letters of Asterisk 20's vm_exec.

`VoiceMail(mailbox[@context][&mailbox2[@context]...][,options])` with options `b`, `d([c])`,
`e`, `g(#)`, `s`, `S`, `t([x])`, `u`, `U`, `P` (fact sheet 5.1). Options are parsed as
ast_app_parse_options does: a letter, optionally followed by `(argument)`. A letter VoiceMail
does not have is an error, not silently dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

LETTERS = "bdegsStuUP"


@dataclass
class DepositOptions:
    busy: bool = False  # b
    unavail: bool = False  # u
    silent: bool = False  # s: no vm-intro
    silent_if_greeting: bool = False  # S: no vm-intro when a greeting was played
    urgent: bool = False  # U
    priority: bool = False  # P
    early_media: bool = False  # e
    beep: str | None = "beep"  # t(x): x; t alone: None (no beep)
    gain_db: int = 0  # g(#)
    dtmf_exit: bool = False  # d
    exit_context: str = ""  # d(c): c ("" = the current context)
    letters: str = ""  # as given, for the log

    @property
    def flag(self) -> str:
        return "Urgent" if self.urgent else "PRIORITY" if self.priority else ""


@dataclass
class VoiceMailArgs:
    recipients: list[tuple[str, str]]  # (mailbox, context), first one's greeting is played
    options: DepositOptions = field(default_factory=DepositOptions)


def split_options(text: str) -> list[tuple[str, str | None]]:
    """`us` -> [(u, None), (s, None)]; `d(sales)t()` -> [(d, sales), (t, "")]."""
    result: list[tuple[str, str | None]] = []
    index = 0
    while index < len(text):
        letter = text[index]
        index += 1
        if letter.isspace():
            continue
        argument: str | None = None
        if index < len(text) and text[index] == "(":
            end = text.find(")", index)
            if end < 0:
                raise ValueError(f"option {letter}: unclosed '(' in {text!r}")
            argument = text[index + 1 : end]
            index = end + 1
        result.append((letter, argument))
    return result


def parse_options(text: str) -> DepositOptions:
    """Raises ValueError naming the option for an unknown letter or a bad argument."""
    options = DepositOptions(letters=text)
    for letter, argument in split_options(text):
        if letter not in LETTERS:
            raise ValueError(f"VoiceMail has no option {letter!r}")
        if letter == "b":
            options.busy = True
        elif letter == "u":
            options.unavail = True
        elif letter == "s":
            options.silent = True
        elif letter == "S":
            options.silent_if_greeting = True
        elif letter == "U":
            options.urgent = True
        elif letter == "P":
            options.priority = True
        elif letter == "e":
            options.early_media = True
        elif letter == "t":
            options.beep = (argument or "").strip() or None  # t alone: no beep
        elif letter == "g":
            try:
                options.gain_db = int((argument or "").strip())
            except ValueError:
                raise ValueError(f"invalid record gain g({argument or ''})") from None
        elif letter == "d":
            options.dtmf_exit = True
            options.exit_context = (argument or "").strip()
    return options


def parse_args(args: list[str]) -> VoiceMailArgs:
    """[`1000@default&1001`, `us`] -> recipients and options. The arguments arrive split and
    then substituted, so nothing a caller chose (the extension) can add an option or a
    recipient list of its own. Raises ValueError for options VoiceMail does not have."""
    boxes = args[0] if args else ""
    options = parse_options(",".join(args[1:]).replace(",", ""))
    recipients = []
    for item in boxes.split("&"):
        item = item.strip()
        if not item:
            continue
        mailbox, _, context = item.partition("@")
        recipients.append((mailbox.strip(), context.strip() or "default"))
    return VoiceMailArgs(recipients, options)
