"""The notification mail and the pager mail, as Asterisk 20 writes them (make_email_file,
sendpage; fact sheet 5.3), built with the standard email package.

Same as Asterisk: the subjects, bodies, From/To display names, the Message-ID shape, the
X-Asterisk-CallerID(Name) headers, the multipart preamble and the attachment headers. Better
than Asterisk, because the email package does the encoding: every header is RFC 2047 encoded
when it needs to be (Asterisk's own encoder), display names are quoted by
email.headerregistry (a caller name with `"`, `,` or a newline cannot add a header; control
characters are removed from caller IDs as Asterisk's strip_control_and_high does, but
non-ASCII letters are kept, encoded), file names use RFC 2231, and the pager mail gets a
Message-ID and a MIME text part (Asterisk's has neither). Greeting notices (msgnum -1) are
not built: this server never sends them.
"""

from __future__ import annotations

import os
import random
import re
import socket
import time
from dataclasses import dataclass
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from aiosmtplib.email import extract_recipients, extract_sender

from . import dates
from .settings import MailSettings
from .variables import Original, duration_text, email_variables, substitute

DEFAULT_FROM_NAME = "Asterisk PBX"
PREAMBLE = "This is a multi-part message in MIME format.\n"
ATTACHMENT_DESCRIPTION = "Voicemail sound attachment."

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MSGID_SAFE = re.compile(r"[^A-Za-z0-9._+-]")


@dataclass(frozen=True)
class Recipient:
    """The mailbox being notified: its number, context and voicemail.conf/realtime fields."""

    mailbox: str
    context: str
    fullname: str
    email: str = ""  # one address, or several separated by |
    pager: str = ""


@dataclass(frozen=True)
class MessageInfo:
    """The message just stored in the recipient's folder.

    `msgnum` is the 0-based number in the folder (the subject says msgnum + 1). `original`
    holds the stored row's callerid and origtime (ORIG_VM_*); `forwarded` asks for the
    forwarded body, which Asterisk writes when the message came from another mailbox and its
    stored data is readable (so it needs `original`).
    """

    msgnum: int
    duration: int
    cidnum: str = ""
    cidname: str = ""
    flag: str = ""
    category: str | None = None
    original: Original | None = None
    forwarded: bool = False


@dataclass(frozen=True)
class Attachment:
    """The audio file to attach (see attach.py)."""

    data: bytes
    filename: str  # msgNNNN.<ext>
    mime_type: str  # audio/x-wav, application/ogg, ...


def build_email(
    settings: MailSettings,
    recipient: Recipient,
    message: MessageInfo,
    attachment: Attachment | None = None,
    *,
    now: float | None = None,
    hostname: str | None = None,
) -> EmailMessage:
    """The mail to `recipient.email` (all its |-separated addresses); with the attachment
    when one is given (the caller decides from settings.attach)."""
    host = hostname or socket.gethostname()
    mail, date, origdate, variables = _headed(
        settings, recipient, message, settings.emaildateformat, settings.fromstring,
        recipient.email, now, host,
    )  # fmt: skip
    duration = duration_text(message.duration)
    if settings.emailsubject:
        subject = substitute(settings.emailsubject, variables)
    else:
        subject = _default_subject(settings, message, recipient.mailbox)
    mail["Subject"] = _header_text(subject)
    mail["Message-ID"] = _message_id(message.msgnum, recipient.mailbox, host)
    if message.cidnum:
        mail["X-Asterisk-CallerID"] = strip_control(message.cidnum)
    if message.cidname:
        mail["X-Asterisk-CallerIDName"] = strip_control(message.cidname)

    if settings.emailbody is not None:
        body = substitute(settings.emailbody, variables) + "\n"
    elif message.forwarded and message.original is not None:
        body = (
            f"Dear {recipient.fullname}:\n\n\tJust wanted to let you know you were just "
            f"forwarded a {duration} long message (number {message.msgnum + 1})\n"
            f"in mailbox {recipient.mailbox} from {_who(message, UNKNOWN)}, on {date}\n"
            f"(originally sent by {message.original.callerid} on {origdate})\n"
            "so you might want to check it when you get a chance.  Thanks!\n\n"
            "\t\t\t\t--Asterisk\n\n"
        )
    else:
        body = (
            f"Dear {recipient.fullname}:\n\n\tJust wanted to let you know you were just left a "
            f"{duration} long message (number {message.msgnum + 1})\n"
            f"in mailbox {recipient.mailbox} from {_who(message, UNKNOWN)}, on {date} "
            "so you might\nwant to check it when you get a chance.  Thanks!\n\n"
            "\t\t\t\t--Asterisk\n\n"
        )
    _set_text(mail, body, settings.charset)
    if attachment is not None:
        maintype, _, subtype = attachment.mime_type.partition("/")
        mail.add_attachment(
            attachment.data,
            maintype=maintype,
            subtype=subtype,
            filename=attachment.filename,
            cte="base64",
        )
        part = mail.get_payload()[-1]
        del part["MIME-Version"]  # the email package adds it to the part; once is enough
        part.set_param("name", attachment.filename)
        part["Content-Description"] = ATTACHMENT_DESCRIPTION
        mail.preamble = PREAMBLE
        # Asterisk's boundary shape: ----voicemail_<n><mailbox><pid><random>.
        box = _MSGID_SAFE.sub("_", recipient.mailbox)
        mail.set_boundary(
            f"----voicemail_{message.msgnum + 1}{box}{os.getpid()}{random.getrandbits(31)}"
        )
    return mail


def build_pager(
    settings: MailSettings,
    recipient: Recipient,
    message: MessageInfo,
    *,
    now: float | None = None,
    hostname: str | None = None,
) -> EmailMessage:
    """The short mail to `recipient.pager`: no attachment, pager* strings, pagerdateformat."""
    host = hostname or socket.gethostname()
    mail, date, _, variables = _headed(
        settings, recipient, message, settings.pagerdateformat, settings.pagerfromstring,
        recipient.pager, now, host,
    )  # fmt: skip
    if settings.pagersubject:
        subject = substitute(settings.pagersubject, variables)
    elif message.flag:
        subject = f"New {message.flag} VM"
    else:
        subject = "New VM"
    mail["Subject"] = _header_text(subject)
    mail["Message-ID"] = _message_id(message.msgnum, recipient.mailbox, host)
    if settings.pagerbody is not None:
        body = substitute(settings.pagerbody, variables) + "\n"
    else:
        body = (
            f"New {duration_text(message.duration)} long {message.flag} msg in box "
            f"{recipient.mailbox}\nfrom {_who(message, 'unknown')}, on {date}"
        )
    _set_text(mail, body, settings.charset)
    return mail


def _headed(
    settings: MailSettings,
    recipient: Recipient,
    message: MessageInfo,
    date_format: str,
    fromstring: str,
    addresses: str,
    now: float | None,
    host: str,
) -> tuple[EmailMessage, str, str, dict[str, str]]:
    """What mail and pager mail share: Date, From (`fromstring` or the default name) and To,
    with the date text, the original's date text and the ${VM_*} variables."""
    moment = dates.localtime(time.time() if now is None else now, settings.zone)
    date = dates.strftime(date_format, moment, settings.locale)
    origdate = _origdate(settings, message.original)
    variables = _variables(settings, recipient, message, date, origdate, clean=False)
    mail = EmailMessage(policy=policy.SMTP)
    mail["Date"] = format_datetime(moment)
    if fromstring:
        clean = _variables(settings, recipient, message, date, origdate, clean=True)
        from_name = substitute(fromstring, clean)
    else:
        from_name = DEFAULT_FROM_NAME
    mail["From"] = Address(_header_text(from_name), *_sender(settings.serveremail, host))
    mail["To"] = _addresses(recipient.fullname, addresses)
    return mail, date, origdate, variables


def message_bytes(mail: EmailMessage) -> bytes:
    """The mail as sent: CRLF line ends (what Asterisk gives mailcmd, and SMTP wants)."""
    return mail.as_bytes(policy=policy.SMTP)


@dataclass(frozen=True)
class ComposedMail:
    """A mail as it goes on the wire, with its SMTP envelope: what send() takes."""

    data: bytes  # message_bytes: 7-bit (text 7bit or QP, headers RFC 2047, the audio base64)
    sender: str
    recipients: list[str]


def composed(mail: EmailMessage) -> ComposedMail:
    """A built mail flattened, with the envelope aiosmtplib would take from its headers
    (From; To, Cc)."""
    sender = extract_sender(mail)
    if sender is None:
        raise ValueError("the mail has no From address")
    recipients = extract_recipients(mail)
    if not recipients:
        raise ValueError("the mail has no To address")
    return ComposedMail(message_bytes(mail), sender, recipients)


def strip_control(text: str) -> str:
    """Asterisk's strip_control_and_high, keeping non-ASCII letters: drop control bytes."""
    return _CONTROL.sub("", text)


# --- helpers ---------------------------------------------------------------------------------

UNKNOWN = "an unknown caller"


def _variables(
    settings: MailSettings,
    recipient: Recipient,
    message: MessageInfo,
    date: str,
    origdate: str,
    *,
    clean: bool,
) -> dict[str, str]:
    """prep_email_sub_vars; the From strings get caller IDs without control characters."""
    fix = strip_control if clean else (lambda text: text)
    return email_variables(
        fullname=recipient.fullname,
        msgnum=message.msgnum,
        context=recipient.context,
        mailbox=recipient.mailbox,
        cidnum=fix(message.cidnum),
        cidname=fix(message.cidname),
        duration=message.duration,
        date=date,
        category=message.category,
        flag=message.flag,
        original=message.original,
        origdate=origdate,
    )


def _origdate(settings: MailSettings, original: Original | None) -> str:
    """ORIG_VM_DATE: emaildateformat in the server's local time zone, as Asterisk does."""
    if original is None or original.origtime is None:
        return ""
    moment = dates.localtime(original.origtime, None)
    return dates.strftime(settings.emaildateformat, moment, settings.locale)


def _default_subject(settings: MailSettings, message: MessageInfo, mailbox: str) -> str:
    """`[PBX]: New message N in mailbox M` (pbxskip drops `[PBX]: `; a flag is named)."""
    prefix = "" if settings.pbxskip else "[PBX]: "
    kind = f"New {message.flag} message" if message.flag else "New message"
    return f"{prefix}{kind} {message.msgnum + 1} in mailbox {mailbox}"


def _who(message: MessageInfo, unknown: str) -> str:
    return message.cidname or message.cidnum or unknown


def _header_text(text: str) -> str:
    """A header value from configuration or caller data: control characters become spaces."""
    return _CONTROL.sub(" ", text)


def _sender(serveremail: str, host: str) -> tuple[str, str]:
    """(username, domain) of serveremail, `@<hostname>` added to a bare name as Asterisk does."""
    local, at, domain = serveremail.rpartition("@")
    if not at:
        return serveremail, host
    return local, domain


def _addresses(fullname: str, addresses: str) -> list[Address]:
    """`a@x|b@y` as To addresses, each with the mailbox's full name; ValueError if bad."""
    name = _header_text(fullname)
    result = []
    for item in addresses.split("|"):
        item = item.strip()
        if not item:
            continue
        local, at, domain = item.rpartition("@")
        if not at or not local or not domain or _CONTROL.search(item) or " " in item:
            raise ValueError(f"{item!r} is not an email address")
        result.append(Address(name, local, domain))
    if not result:
        raise ValueError("no email address to send to")
    return result


def _message_id(msgnum: int, mailbox: str, host: str) -> str:
    """Asterisk's shape: <Asterisk-<n>-<random>-<mailbox>-<pid>@<host>>."""
    box = _MSGID_SAFE.sub("_", mailbox) or "mailbox"
    domain = _MSGID_SAFE.sub("_", host) or "localhost"
    return f"<Asterisk-{msgnum + 1}-{random.getrandbits(31)}-{box}-{os.getpid()}@{domain}>"


def _set_text(mail: EmailMessage, text: str, charset: str) -> None:
    """The text part in `charset` when it fits, else UTF-8; 7bit when it can be, else QP."""
    try:
        text.encode(charset)
    except UnicodeEncodeError:
        charset = "utf-8"
    plain = text.isascii() and all(len(line) <= 998 for line in text.splitlines())
    mail.set_content(text, charset=charset, cte="7bit" if plain else "quoted-printable")
