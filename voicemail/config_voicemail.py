"""voicemail.conf: [general], [zonemessages] and the mailbox lines, checked when loaded.

Every value is checked against the option's type (`maxsecs=18O`, `format=mp3`, `maxmsg=-3`
and `attach=maybe` are `ConfigError`s at their line). An option name we do not act on is a
warning, not an error, because Asterisk ignores unknown options and files copied from an
Asterisk box must keep loading: "not implemented yet" for an option Asterisk 20 reads (table
in config_names), "unknown option" for anything else. `IMPLEMENTED_*` below name the options
the server honours; add a name there when the code that honours it lands.

The mail options are checked once the file is read, with the mail package's own rules
(voicemail/mail/settings.py MailSettings.from_general), for [general] and for every mailbox:
a mail setting that could not be used when a message arrives is a ConfigError at its line now.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from storage.audioformats import FORMATS
from storage.conffile import ConfigError, ConfigFile, Variable

from .config_checks import (
    Checker,
    Warnings,
    boolean,
    digits_keys,
    either,
    fail,
    integer,
    near_miss,
    number,
    one_of,
    parse_bool,
    text_value,
)
from .config_names import VOICEMAIL_GENERAL, VOICEMAIL_MAILBOX
from .mail.settings import GENERAL_OPTIONS as MAIL_GENERAL
from .mail.settings import MAILBOX_OPTIONS as MAIL_MAILBOX
from .mail.settings import SMTP_OPTIONS, MailSettings
from .say.dates import parse_zone
from .say.overrides import PROMPT_OPTIONS, prompt_name_problem
from .vmmain.options import GENERAL_ONLY
from .vmmain.options import SETTING_DEFAULTS as MENU_SETTINGS

DEFAULT_MAXRECORDSECS = 600  # the recording cap when maxsecs is 0 or unset
DEFAULT_SPOOLMAXMB = 1024  # local spool size past which new calls get 503
DEFAULT_POLLFREQ = 5  # seconds; Asterisk's default is 30 (README explains)
DEFAULT_OUTBOXRETRY = 30  # seconds before the first retry of a notification (then doubling)
DEFAULT_OUTBOXRETRYMAX = 3600  # the longest wait between two retries

# Options of ours (not Asterisk's), in [general]: the spool, SMTP, the webhook, the outbox and
# the MWI change feed.
NOTIFY_OPTIONS = frozenset({"webhookurl", "webhooksecret", "outboxretry", "outboxretrymax"})
# PINs and the login lockout (issue 11); `emptypin` is also a mailbox option.
PIN_OPTIONS = frozenset({"pinhash", "emptypin", "maxfailedlogins", "lockoutsecs"})
OWN_GENERAL = (
    frozenset({"localspool", "maxrecordsecs", "spoolmaxmb", "changelogpollms"})
    | PIN_OPTIONS
    | SMTP_OPTIONS
    | NOTIFY_OPTIONS
)

IMPLEMENTED_GENERAL = frozenset(
    {
        "format",
        "odbcstorage",
        "odbctable",
        "maxsecs",
        "maxmessage",
        "minsecs",
        "minmessage",
        "maxmsg",
        "pollmailboxes",
        "pollfreq",
        "maxsilence",
        "silencethreshold",
        "review",
        "operator",
        "leaveurgent",
        "exitcontext",
        "tz",
        "sendvoicemail",
        "forward_urgent_auto",
        "usedirectory",
        "callback",
        "dialout",
        "minpassword",
        "forcename",
        "forcegreetings",
        "externpass",
        "externpassnotify",
        "externpasscheck",
        "externnotify",
    }
    | set(PROMPT_OPTIONS)
    | set(MENU_SETTINGS)
    | MAIL_GENERAL
    | OWN_GENERAL
)
IMPLEMENTED_MAILBOX = frozenset(
    {
        "maxsecs", "maxmessage", "minsecs", "maxmsg", "review", "operator", "leaveurgent",
        "exitcontext", "maxsilence", "silencethreshold", "tz", "language", "sendvoicemail",
        "callback", "dialout",
        "forcename", "forcegreetings", "delete", "deletevoicemail", "emptypin",
    }
    | ((set(MENU_SETTINGS) - GENERAL_ONLY) & VOICEMAIL_MAILBOX)
    | MAIL_MAILBOX
)  # fmt: skip

# Old names Asterisk still reads, with a deprecation warning.
DEPRECATED = {"maxmessage": "maxsecs", "minmessage": "minsecs"}


def check_formats(text: str) -> str | None:
    """`format=wav49|gsm|wav`: every format must be one storage/audioformats.py writes."""
    names = [part.strip() for part in text.split("|") if part.strip()]
    if not names:
        return "must name at least one format"
    for name in names:
        if name != "WAV" and name not in FORMATS:
            return f"has {name!r}, which is not a supported format ({', '.join(FORMATS)})"
    return None


def _refused_unless_no(text: str) -> str | None:
    """usedirectory: forwarding by the Directory application is not built."""
    value = parse_bool(text)
    if value is None:
        return "must be yes or no"
    return "(forward by the Directory) is not implemented; set it to no" if value else None


def _refused_context(text: str) -> str | None:
    """callback / dialout: VoiceMailMain's calls into the dial plan are not built."""
    return "(VoiceMailMain dialling out) is not implemented; remove it" if text.strip() else None


def check_webhook_url(text: str) -> str | None:
    """webhookurl=http(s)://host[:port]/path: where new/read/deleted events are POSTed."""
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL"
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return "has a bad port"
    return None


_UINT = integer(0)
_MAXMSG = integer(0, 9999)  # MAXMSGLIMIT; 0 = greetings only
_BACKUPDELETED = either(integer(0, 9999), boolean)

# Value types of the options that are not plain text.
CHECKS: dict[str, Checker] = {
    "format": check_formats,
    "maxsecs": _UINT,
    "maxmessage": _UINT,
    "minsecs": _UINT,
    "minmessage": _UINT,
    "maxmsg": _MAXMSG,
    "maxgreet": _UINT,
    "maxsilence": _UINT,
    "silencethreshold": integer(0, 32767),
    "skipms": _UINT,
    "maxlogins": integer(1),
    "minpassword": _UINT,
    "maxfailedlogins": integer(1),
    "lockoutsecs": integer(1),
    "saydurationm": _UINT,
    "backupdeleted": _BACKUPDELETED,
    "pollfreq": integer(1),
    "volgain": number,
    "passwordlocation": one_of("voicemail.conf", "spooldir"),
    "adsiver": _UINT,
    "imapport": integer(1, 65535),
    "imapopentimeout": _UINT,
    "imapclosetimeout": _UINT,
    "imapreadtimeout": _UINT,
    "imapwritetimeout": _UINT,
    "tps_queue_high": integer(1),
    "tps_queue_low": integer(-1),
    "maxrecordsecs": integer(1),
    "spoolmaxmb": integer(1),
    "changelogpollms": integer(10, 60000),
    "webhookurl": check_webhook_url,
    "outboxretry": integer(1),
    "outboxretrymax": integer(1),
    **dict.fromkeys(PROMPT_OPTIONS, prompt_name_problem),  # vm-login=custom/welcome ...
    "usedirectory": _refused_unless_no,
    "callback": _refused_context,
    "dialout": _refused_context,
    **{
        f"listen-control-{what}-key": digits_keys
        for what in ("forward", "reverse", "pause", "restart", "stop")
    },
    **{
        name: boolean
        for name in (
            "attach attachextrecs delete deletevoicemail envelope expungeonhangup forcename "
            "forcegreetings forward_urgent_auto imapgreetings imap_poll_logout leaveurgent "
            "messagewrap moveheard nextaftercmd odbc_audio_on_disk operator pbxskip "
            "pollmailboxes review saycid sayduration searchcontexts sendvoicemail "
            "smdienable tempgreetwarn pinhash emptypin"
        ).split()
    },
}


def check_value(name: str, value: str) -> str | None:
    """The problem with `name=value` (lower-case name), or None; also for realtime rows."""
    return CHECKS.get(name, text_value)(value)


@dataclass
class StaticMailbox:
    """One `mailbox => password,fullname,email,pager,options` line of voicemail.conf."""

    context: str
    mailbox: str
    password: str
    fullname: str = ""
    email: str = ""
    pager: str = ""
    options: dict[str, str] = field(default_factory=dict)


@dataclass
class VoicemailSettings:
    """voicemail.conf [general] and the per-mailbox defaults it sets."""

    general: dict[str, str]
    mailboxes: dict[tuple[str, str], StaticMailbox]
    zonemessages: dict[str, str]
    warnings: list[str] = field(default_factory=list)

    @property
    def odbcstorage(self) -> str:
        return self.general.get("odbcstorage", "asterisk")

    @property
    def odbctable(self) -> str:
        return self.general.get("odbctable", "voicemessages")

    @property
    def formats(self) -> list[str]:
        return [f for f in self.general.get("format", "wav").split("|") if f] or ["wav"]

    @property
    def maxrecordsecs(self) -> int:
        """Ours: the longest recording when maxsecs is 0 or unset (Asterisk: unlimited)."""
        return int(self.general.get("maxrecordsecs", DEFAULT_MAXRECORDSECS))

    @property
    def spoolmaxmb(self) -> int:
        """Ours: megabytes in the local spool past which new calls are refused with 503."""
        return int(self.general.get("spoolmaxmb", DEFAULT_SPOOLMAXMB))

    @property
    def pollmailboxes(self) -> bool:
        """Recount watched mailboxes every pollfreq seconds (our default: yes)."""
        value = parse_bool(self.general.get("pollmailboxes", "yes"))
        return True if value is None else value

    @property
    def pollfreq(self) -> int:
        return int(self.general.get("pollfreq", DEFAULT_POLLFREQ))

    @property
    def webhookurl(self) -> str:
        """Ours: where new, read and deleted message events are POSTed ("" = none)."""
        return self.general.get("webhookurl", "").strip()

    @property
    def webhooksecret(self) -> str:
        """Ours: the HMAC-SHA256 key signing each webhook body."""
        return self.general.get("webhooksecret", "")

    @property
    def outbox_retry(self) -> tuple[float, float]:
        """Ours: (first, longest) wait in seconds between attempts of a notification."""
        first = int(self.general.get("outboxretry", DEFAULT_OUTBOXRETRY))
        longest = int(self.general.get("outboxretrymax", DEFAULT_OUTBOXRETRYMAX))
        return float(first), float(max(first, longest))

    def mail_settings(self, mailbox_options: Mapping[str, str]) -> MailSettings:
        """The mail settings of a mailbox with these options; ValueError naming the option."""
        return mail_settings(self.general, mailbox_options, self.zonemessages)


def mail_settings(
    general: Mapping[str, str],
    mailbox_options: Mapping[str, str],
    zonemessages: Mapping[str, str],
) -> MailSettings:
    """MailSettings.from_general, with a `tz` naming no [zonemessages] zone left out: that is
    a warning at load time (Asterisk then writes the date in the server's zone), not an error."""

    def known_tz(options: Mapping[str, str]) -> dict[str, str]:
        kept = dict(options)
        if kept.get("tz", "").strip() and kept["tz"].strip() not in zonemessages:
            del kept["tz"]
        return kept

    return MailSettings.from_general(
        known_tz(general), known_tz(mailbox_options), dict(zonemessages)
    )


def _check_option(
    var: Variable, name: str, known: frozenset[str], implemented: frozenset[str], warnings: Warnings
) -> None:
    """Raise on a bad value; warn on a name we do not act on."""
    error = check_value(name, var.value)
    if error is not None:
        raise fail(var, error)
    if name in DEPRECATED:
        warnings.add(var.filename, var.line, f'"{name}" is deprecated, use "{DEPRECATED[name]}"')
    if name in implemented:
        return
    if name in known:
        warnings.add(var.filename, var.line, f'"{name}": not implemented yet')
    else:
        warnings.add(var.filename, var.line, f'"{name}": unknown option')


def parse_mailbox_line(
    context: str,
    mailbox: str,
    value: str,
    var: Variable | None = None,
    warnings: Warnings | None = None,
) -> StaticMailbox:
    """`1234 => 4242,Example Mailbox,root@localhost,pager@example.com,attach=no|tz=central`.

    With `var` (the line it came from) every option is checked like a [general] one.
    """
    parts = [p.strip() for p in value.split(",", 4)]
    parts += [""] * (5 - len(parts))
    options: dict[str, str] = {}
    for item in parts[4].split("|"):
        if not item.strip():
            continue
        name, eq, option_value = item.partition("=")
        name, option_value = name.strip().lower(), option_value.strip()
        if var is not None:
            if not eq:
                raise ConfigError(
                    var.filename, var.line, f'mailbox option "{item.strip()}" has no "=value"'
                )
            option = Variable(name, option_value, False, var.filename, var.line)
            _check_option(
                option,
                name,
                VOICEMAIL_MAILBOX,
                IMPLEMENTED_MAILBOX,
                warnings if warnings is not None else Warnings(),
            )
        if eq:
            options[name] = option_value
    return StaticMailbox(context, mailbox, parts[0], parts[1], parts[2], parts[3], options)


def voicemail_settings(conf: ConfigFile) -> VoicemailSettings:
    """voicemail.conf's content, from the file or from the database (ast_config)."""
    general: dict[str, str] = {}
    mailboxes: dict[tuple[str, str], StaticMailbox] = {}
    zones: dict[str, str] = {}
    zone_uses: list[tuple[str, Variable]] = []  # tz= options, checked once zones are read
    general_lines: dict[str, Variable] = {}  # where each [general] option was set (last)
    mailbox_lines: dict[tuple[str, str], Variable] = {}
    warnings = Warnings()
    for section in conf.sections_named("general"):
        for var in section.variables:
            key = var.name.lower()
            _check_option(var, key, VOICEMAIL_GENERAL, IMPLEMENTED_GENERAL, warnings)
            general[key] = var.value
            general_lines[key] = var
            if key == "tz" and var.value.strip():
                zone_uses.append((var.value.strip(), var))
    # Asterisk's load_users skips the aliases context too (aliasescontext is warned about).
    aliases = general.get("aliasescontext", "").lower()
    for section in conf.sections:
        name = section.name.lower()
        if name == "general" or (aliases and name == aliases):
            continue
        if name == "zonemessages":
            for var in section.variables:
                try:
                    parse_zone(var.name, var.value)
                except ValueError as exc:
                    raise ConfigError(var.filename, var.line, str(exc)) from None
                zones[var.name] = var.value
        else:
            guess = near_miss(section.name, ("general", "zonemessages"))
            if guess is not None:
                warnings.add(
                    section.filename,
                    section.line,
                    f"section [{section.name}] is read as a mailbox context; did you mean "
                    f"[{guess}]?",
                )
            for variable in section.variables:
                if not variable.value:
                    raise ConfigError(
                        variable.filename, variable.line, "mailbox without a password"
                    )
                key = (section.name, variable.name)
                mailboxes[key] = parse_mailbox_line(
                    section.name, variable.name, variable.value, variable, warnings
                )
                mailbox_lines[key] = variable
                if mailboxes[key].options.get("tz"):
                    zone_uses.append((mailboxes[key].options["tz"], variable))
    for tz, var in zone_uses:
        if tz not in zones:  # Asterisk then says the envelope in the server's zone
            warnings.add(var.filename, var.line, f'"tz={tz}" names no [zonemessages] zone')
    for old, new in DEPRECATED.items():
        if old in general and new not in general:
            general[new] = general[old]
    _check_notifications(conf, general, general_lines, mailboxes, mailbox_lines, zones)
    return VoicemailSettings(general, mailboxes, zones, warnings)


_OPTION_NAME = re.compile(r"[A-Za-z0-9_-]+")


def _check_notifications(
    conf: ConfigFile,
    general: dict[str, str],
    general_lines: dict[str, Variable],
    mailboxes: dict[tuple[str, str], StaticMailbox],
    mailbox_lines: dict[tuple[str, str], Variable],
    zones: dict[str, str],
) -> None:
    """The mail settings of [general] and of every mailbox, and the webhook pair; a problem
    is a ConfigError at the line that set the option it names."""
    first = conf.sections_named("general")
    where = (first[0].filename, first[0].line) if first else (conf.filename, 0)

    def located(exc: ValueError, box: tuple[str, str] | None) -> ConfigError:
        text = str(exc)
        match = _OPTION_NAME.match(text)
        name = match.group(0).lower() if match else ""
        if box is not None and name in mailboxes[box].options:
            line = mailbox_lines[box]
            return ConfigError(line.filename, line.line, f"mailbox {box[1]}@{box[0]}: {text}")
        var = general_lines.get(name)
        if var is not None:
            return ConfigError(var.filename, var.line, text)
        return ConfigError(*where, text)

    try:
        mail_settings(general, {}, zones)
    except ValueError as exc:
        raise located(exc, None) from None
    for key, box in mailboxes.items():
        try:
            mail_settings(general, box.options, zones)
        except ValueError as exc:
            raise located(exc, key) from None
    if general.get("webhookurl", "").strip() and not general.get("webhooksecret"):
        var = general_lines["webhookurl"]
        raise ConfigError(
            var.filename, var.line, '"webhookurl" needs "webhooksecret" (the body is signed)'
        )
    if general.get("webhooksecret") and not general.get("webhookurl", "").strip():
        var = general_lines["webhooksecret"]
        raise ConfigError(var.filename, var.line, '"webhooksecret" is set without "webhookurl"')
