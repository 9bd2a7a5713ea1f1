"""VoiceMailMain's arguments and the voicemail.conf settings its menus use."""

from __future__ import annotations

from dataclasses import dataclass

from storage.messagerows import FOLDERS

# [general] / per-mailbox settings with Asterisk's defaults (fact sheet 7).
SETTING_DEFAULTS = {
    "maxlogins": "3",
    "skipms": "3000",
    "messagewrap": "no",
    "nextaftercmd": "no",
    "moveheard": "yes",
    "envelope": "yes",
    "saycid": "no",
    "sayduration": "yes",
    "saydurationm": "2",
    "tempgreetwarn": "no",
    "maxmsg": "100",
    "maxgreet": "0",
    "forward_urgent_auto": "no",
    "sendvoicemail": "no",
    "maxsilence": "0",
    "silencethreshold": "128",
    "minpassword": "4",
    "forcename": "no",
    "forcegreetings": "no",
    "externpass": "",
    "externpassnotify": "",
    "externpasscheck": "",
    "pinhash": "yes",
    "emptypin": "no",
    "maxfailedlogins": "5",
    "lockoutsecs": "60",
}

# Read from [general] only, as Asterisk does: a mailbox line or a realtime column must not name
# a command to run (externpass*) or lower the PIN rules or the lockout of its own mailbox.
# (`emptypin` is per mailbox on purpose: the mailbox says that it needs no PIN.)
GENERAL_ONLY = frozenset(
    {
        "minpassword",
        "externpass",
        "externpassnotify",
        "externpasscheck",
        "pinhash",
        "maxfailedlogins",
        "lockoutsecs",
    }
)


class BadArguments(ValueError):
    """VoiceMailMain() arguments we cannot honour."""


@dataclass(frozen=True)
class MainArgs:
    mailbox: str = ""
    context: str = "default"
    skip_password: bool = False  # s
    prefix: bool = False  # p
    read_only: bool = False  # r
    autoplay: int | None = None  # a(folder)


def _folder_number(value: str) -> int:
    value = value.strip()
    if value.isdigit() and int(value) <= 9:
        return int(value)
    for number, name in enumerate(FOLDERS):
        if name.lower() == value.lower() and name != "Deleted":
            return number
    raise BadArguments(f"a({value}): not a folder (0-9 or a folder name)")


def parse_main_args(args: list[str]) -> MainArgs:
    """[`1000@default`, `s`] -> MainArgs. Old style `s1234` / `p` prefixes are understood.

    `g(#)` (gain) is refused: we do not implement it. Unknown letters are refused too.
    """
    first = args[0].strip() if args else ""
    mailbox, _, context = first.partition("@")
    skip = prefix = False
    while mailbox[:1] in ("s", "p"):
        skip = skip or mailbox[0] == "s"
        prefix = prefix or mailbox[0] == "p"
        mailbox = mailbox[1:]
    options = ",".join(args[1:]).replace(" ", "")
    read_only = False
    autoplay: int | None = None
    i = 0
    while i < len(options):
        letter = options[i]
        argument = None
        if i + 1 < len(options) and options[i + 1] == "(":
            end = options.find(")", i + 2)
            if end < 0:
                raise BadArguments(f"option {letter}: missing ')'")
            argument = options[i + 2 : end]
            i = end + 1
        else:
            i += 1
        if letter == ",":
            continue
        if letter == "s":
            skip = True
        elif letter == "p":
            prefix = True
        elif letter == "r":
            read_only = True
        elif letter == "a":
            if argument is None:
                raise BadArguments("option a needs a folder: a(folder)")
            autoplay = _folder_number(argument)
        elif letter == "g":
            raise BadArguments("option g (gain) is not implemented")
        else:
            raise BadArguments(f"unknown option {letter!r}")
    return MainArgs(
        mailbox=mailbox.strip(),
        context=context.strip() or "default",
        skip_password=skip,
        prefix=prefix,
        read_only=read_only,
        autoplay=autoplay,
    )


def _yes(value: str) -> bool:
    return value.strip().lower() in ("yes", "true", "y", "t", "1", "on")


@dataclass(frozen=True)
class MenuSettings:
    maxlogins: int = 3
    skipms: int = 3000
    messagewrap: bool = False
    nextaftercmd: bool = False
    moveheard: bool = True
    envelope: bool = True
    saycid: bool = False
    sayduration: bool = True
    saydurationm: int = 2
    tempgreetwarn: bool = False
    maxmsg: int = 100
    maxgreet: int = 0  # seconds, 0 = the server's recording limit
    forward_urgent_auto: bool = False  # a forwarded urgent message stays urgent
    sendvoicemail: bool = False  # advanced option 5: compose a message
    maxsilence: int = 0  # seconds of silence that end a forward's introduction (0: off)
    silencethreshold: int = 128
    minpassword: int = 4  # shortest new PIN (Asterisk: 0)
    forcename: bool = False  # a new user (PIN = mailbox number) must record a name
    forcegreetings: bool = False  # ... and the unavailable and busy greetings
    externpass: str = ""  # command that stores a new PIN instead of us
    externpassnotify: str = ""  # command told of a new PIN after we stored it
    externpasscheck: str = ""  # command that must print VALID for a new PIN
    pin_locked: bool = False  # the stored PIN starts with '-': not changeable (set at login)
    mailbox: str = ""  # the logged-in mailbox's number (set at login): a new PIN may not be it
    pinhash: bool = True  # new PINs (and clear ones at login) are stored as argon2id hashes
    emptypin: bool = False  # an empty stored PIN lets the caller in without one (Asterisk: yes)
    maxfailedlogins: int = 5  # wrong PINs, across calls, before the mailbox is locked
    lockoutsecs: float = 60.0  # the first lockout's length (the login guard doubles it)

    @classmethod
    def from_options(cls, *layers: dict[str, str]) -> MenuSettings:
        """Later layers win (general, then the mailbox's own options); bad numbers -> defaults."""
        merged = dict(SETTING_DEFAULTS)
        for index, layer in enumerate(layers):
            merged.update(
                {
                    k: v
                    for k, v in layer.items()
                    if k in SETTING_DEFAULTS and (index == 0 or k not in GENERAL_ONLY)
                }
            )

        def number(name: str) -> int:
            try:
                return int(merged[name])
            except ValueError:
                return int(SETTING_DEFAULTS[name])

        return cls(
            maxlogins=max(1, number("maxlogins")),
            skipms=number("skipms"),
            messagewrap=_yes(merged["messagewrap"]),
            nextaftercmd=_yes(merged["nextaftercmd"]),
            moveheard=_yes(merged["moveheard"]),
            envelope=_yes(merged["envelope"]),
            saycid=_yes(merged["saycid"]),
            sayduration=_yes(merged["sayduration"]),
            saydurationm=number("saydurationm"),
            tempgreetwarn=_yes(merged["tempgreetwarn"]),
            maxmsg=number("maxmsg"),
            maxgreet=max(0, number("maxgreet")),
            forward_urgent_auto=_yes(merged["forward_urgent_auto"]),
            sendvoicemail=_yes(merged["sendvoicemail"]),
            maxsilence=max(0, number("maxsilence")),
            silencethreshold=number("silencethreshold"),
            minpassword=max(0, number("minpassword")),
            forcename=_yes(merged["forcename"]),
            forcegreetings=_yes(merged["forcegreetings"]),
            externpass=merged["externpass"].strip(),
            externpassnotify=merged["externpassnotify"].strip(),
            externpasscheck=merged["externpasscheck"].strip(),
            pinhash=_yes(merged["pinhash"]),
            emptypin=_yes(merged["emptypin"]),
            maxfailedlogins=max(1, number("maxfailedlogins")),
            lockoutsecs=float(max(1, number("lockoutsecs"))),
        )
