"""Mail settings for one mailbox: voicemail.conf [general] with the mailbox's own options.

Defaults are Asterisk 20's (actual_load_config, populate_defaults, apply_option), except:
- mail goes by SMTP (`smtp*` options, ours) unless `mailcmd` is set; Asterisk always pipes to
  mailcmd (default `/usr/sbin/sendmail -t`);
- `charset` (default ISO-8859-1, as Asterisk) labels the text part; a body that does not fit
  it is sent as UTF-8 instead (Asterisk writes the bytes it has and mislabels them);
- a `tz` naming no [zonemessages] entry, a `locale` not installed, a `${...}` we cannot expand
  and an unknown `\\x` escape are errors (Asterisk falls back or drops them quietly).

Each problem is a ValueError whose message starts with the option name; the configuration
loader adds file:line.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import tzinfo
from email.errors import HeaderParseError
from email.headerregistry import Address

from ..config_checks import parse_bool
from . import dates
from .variables import check_template

DEFAULT_DATEFORMAT = "%A, %B %d, %Y at %r"
DEFAULT_SERVEREMAIL = "asterisk"
DEFAULT_CHARSET = "ISO-8859-1"
DEFAULT_SMTPTIMEOUT = 30.0
SMTPTLS_MODES = ("no", "starttls", "tls")
ATTACH_FORMATS = ("wav", "wav49", "gsm", "mp3", "ogg", "opus")

# Options of ours in [general] (not Asterisk's).
SMTP_OPTIONS = frozenset(
    {"smtphost", "smtpport", "smtptls", "smtpuser", "smtppassword", "smtptimeout"}
)
# Asterisk's [general] options this package honours.
GENERAL_OPTIONS = frozenset(
    {
        "attach", "charset", "emailbody", "emaildateformat", "emailsubject", "fromstring",
        "locale", "mailcmd", "pagerbody", "pagerdateformat", "pagerfromstring", "pagersubject",
        "pbxskip", "serveremail", "tz", "volgain",
    }
)  # fmt: skip
# Mailbox options (voicemail.conf mailbox line or realtime column) this package honours.
MAILBOX_OPTIONS = frozenset(
    {
        "attach", "attachfmt", "emailbody", "emailsubject", "fromstring", "locale",
        "serveremail", "tz", "volgain",
    }
)  # fmt: skip
# Mail options Asterisk has that we do not implement: refused when switched on.
UNIMPLEMENTED = frozenset({"attachextrecs"})

_ESCAPES = {"\\": "\\", "r": "\r", "n": "\n", "t": "\t"}
_ADDR_SPEC_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+\Z")


@dataclass(frozen=True)
class MailSettings:
    """Everything needed to build and send the mails of one mailbox."""

    # Transport.
    smtphost: str = "localhost"
    smtpport: int = 25
    smtptls: str = "no"
    smtpuser: str = ""
    smtppassword: str = ""
    smtptimeout: float = DEFAULT_SMTPTIMEOUT
    mailcmd: str = ""
    # The mail (None = Asterisk's built-in text; "" for a body = an empty body).
    serveremail: str = DEFAULT_SERVEREMAIL
    fromstring: str = ""
    emailsubject: str = ""
    emailbody: str | None = None
    pagerfromstring: str = ""
    pagersubject: str = ""
    pagerbody: str | None = None
    emaildateformat: str = DEFAULT_DATEFORMAT
    pagerdateformat: str = DEFAULT_DATEFORMAT
    charset: str = DEFAULT_CHARSET
    pbxskip: bool = False
    attach: bool = True
    attachfmt: str = ""  # "" = the stored format
    volgain: float = 0.0  # Asterisk's `sox -v` factor; 0 = unchanged
    tz: str = ""  # the [zonemessages] name
    zone: tzinfo | None = None  # its Olson zone; None = the server's local time
    locale: str = ""

    @classmethod
    def from_general(
        cls,
        general: Mapping[str, str],
        mailbox_options: Mapping[str, str],
        zonemessages: Mapping[str, str] | None = None,
    ) -> MailSettings:
        """[general] overridden by the mailbox's options; `zonemessages` resolves `tz`."""
        general = {k.strip().lower(): v for k, v in general.items()}
        box = {k.strip().lower(): v for k, v in mailbox_options.items()}
        for name in general:
            if name.startswith("smtp") and name not in SMTP_OPTIONS:
                raise ValueError(
                    f"{name}: unknown mail option; the SMTP options are "
                    f"{', '.join(sorted(SMTP_OPTIONS))}"
                )
        for source in (general, box):
            for name in UNIMPLEMENTED & source.keys():
                if parse_bool(source[name]) is not False:
                    raise ValueError(f"{name}={source[name]}: not implemented (only no)")

        def pick(name: str) -> str | None:
            if name in box and name in MAILBOX_OPTIONS:
                return box[name]
            return general.get(name)

        values: dict[str, object] = {}
        tls = (general.get("smtptls") or "no").strip().lower()
        if tls not in SMTPTLS_MODES:
            raise ValueError(f"smtptls={tls}: must be one of {', '.join(SMTPTLS_MODES)}")
        values["smtptls"] = tls
        values["smtphost"] = (general.get("smtphost") or "localhost").strip()
        port = general.get("smtpport")
        values["smtpport"] = (
            _integer("smtpport", port, 1, 65535) if port else (465 if tls == "tls" else 25)
        )
        values["smtpuser"] = general.get("smtpuser", "")
        values["smtppassword"] = general.get("smtppassword", "")
        if values["smtppassword"] and not values["smtpuser"]:
            raise ValueError("smtppassword: set without smtpuser")
        timeout = general.get("smtptimeout")
        if timeout:
            values["smtptimeout"] = _positive("smtptimeout", timeout)
        values["mailcmd"] = (general.get("mailcmd") or "").strip()

        serveremail = (pick("serveremail") or DEFAULT_SERVEREMAIL).strip()
        _check_serveremail(serveremail)
        values["serveremail"] = serveremail
        for name in ("fromstring", "pagerfromstring"):
            text = pick(name) or ""
            _check_template(name, text)
            values[name] = text
        for name in ("emailsubject", "pagersubject"):
            text = _escapes(name, pick(name) or "")
            _check_template(name, text)
            values[name] = text
        for name in ("emailbody", "pagerbody"):
            raw = pick(name)
            if raw is not None:
                text = _escapes(name, raw)
                _check_template(name, text)
                values[name] = text
        for name in ("emaildateformat", "pagerdateformat"):
            values[name] = pick(name) or DEFAULT_DATEFORMAT
        charset = (pick("charset") or DEFAULT_CHARSET).strip()
        try:
            codecs.lookup(charset)
        except LookupError:
            raise ValueError(f"charset={charset}: not a character set Python knows") from None
        values["charset"] = charset
        for name in ("pbxskip", "attach"):
            raw = pick(name)
            if raw is not None and raw.strip():
                flag = parse_bool(raw)
                if flag is None:
                    raise ValueError(f"{name}={raw}: must be yes or no")
                values[name] = flag
        attachfmt = (box.get("attachfmt") or "").strip()
        if attachfmt == "WAV":
            attachfmt = "wav49"
        if attachfmt and attachfmt.lower() not in ATTACH_FORMATS:
            raise ValueError(f"attachfmt={attachfmt}: must be one of {', '.join(ATTACH_FORMATS)}")
        values["attachfmt"] = attachfmt.lower()
        volgain = pick("volgain")
        if volgain is not None and volgain.strip():
            try:
                values["volgain"] = float(volgain)
            except ValueError:
                raise ValueError(f"volgain={volgain}: must be a number") from None
        tz = (pick("tz") or "").strip()
        values["tz"] = tz
        if tz:
            values["zone"] = _zone(tz, zonemessages or {})
        locale = (pick("locale") or "").strip()
        problem = dates.check_locale(locale)
        if problem:
            raise ValueError(f"locale={locale}: {problem}")
        values["locale"] = locale
        return cls(**values)  # type: ignore[arg-type]


def substitute_escapes(value: str) -> str:
    """Asterisk 20's substitute_escapes: `\\n`, `\\r`, `\\t` and `\\\\`; ValueError otherwise."""
    out: list[str] = []
    index = 0
    while index < len(value):
        char = value[index]
        if char == "\\":
            index += 1
            if index == len(value):
                raise ValueError("incomplete escape at the end of the value")
            escape = value[index]
            if escape not in _ESCAPES:
                raise ValueError(
                    f"\\{escape} is not an escape Asterisk knows (\\n, \\r, \\t and \\\\ are)"
                )
            out.append(_ESCAPES[escape])
        else:
            out.append(char)
        index += 1
    return "".join(out)


def _escapes(name: str, value: str) -> str:
    try:
        return substitute_escapes(value)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


def _check_template(name: str, text: str) -> None:
    problem = check_template(text)
    if problem:
        raise ValueError(f"{name}: {problem}")


def _check_serveremail(value: str) -> None:
    """A bare local part (`asterisk`, @hostname is added) or one addr-spec `user@domain`."""
    if "@" not in value:
        if not _ADDR_SPEC_LOCAL.fullmatch(value):
            raise ValueError(f"serveremail={value}: not an address like asterisk@example.com")
        return
    try:
        address = Address(addr_spec=value)
    except (HeaderParseError, ValueError, IndexError):
        address = None
    if address is None or address.addr_spec != value or not address.domain:
        raise ValueError(f"serveremail={value}: not an address like asterisk@example.com")


def _zone(tz: str, zonemessages: Mapping[str, str]) -> tzinfo | None:
    entry = zonemessages.get(tz)
    if entry is None:
        raise ValueError(f"tz={tz}: no entry of that name in [zonemessages]")
    name = entry.split("|", 1)[0].strip()
    try:
        return dates.zone(name)
    except ValueError as exc:
        raise ValueError(f"tz={tz}: [zonemessages] {exc}") from None


def _integer(name: str, text: str, low: int, high: int) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"{name}={text}: must be an integer") from None
    if not low <= value <= high:
        raise ValueError(f"{name}={text}: must be from {low} to {high}")
    return value


def _positive(name: str, text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError(f"{name}={text}: must be a number of seconds") from None
    if not value > 0:
        raise ValueError(f"{name}={text}: must be more than 0 seconds")
    return value
