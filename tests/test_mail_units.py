"""Pure parts of voicemail/mail: settings and their defaults, the ${VM_*} variables, and the
subjects, bodies and headers Asterisk 20 writes."""

from __future__ import annotations

import email
import re
import subprocess
from email import policy

import pytest

from voicemail.mail import dates
from voicemail.mail.compose import (
    Attachment,
    MessageInfo,
    Recipient,
    build_email,
    build_pager,
    message_bytes,
)
from voicemail.mail.settings import DEFAULT_DATEFORMAT, MailSettings, substitute_escapes
from voicemail.mail.variables import (
    Original,
    callerid_merge,
    callerid_split,
    check_template,
    duration_text,
    email_variables,
    substitute,
)

pytestmark = pytest.mark.timeout(30)

NOW = 1_700_000_000  # Tue 14 Nov 2023 22:13:20 UTC
ZONES = {"eastern": "America/New_York|'vm-received' Q 'digits/at' IMp", "eu": "Europe/Paris|x"}
BOX = Recipient("1234", "default", "Example Mailbox", "root@localhost", "pager@localhost")
MSG = MessageInfo(msgnum=4, duration=83, cidnum="5551234", cidname="Alice")


def settings(general: dict[str, str] | None = None, box: dict[str, str] | None = None):
    return MailSettings.from_general(general or {}, box or {}, ZONES)


def built(general=None, box=None, message=MSG, recipient=BOX, **kwargs):
    mail = build_email(
        settings(general, box), recipient, message, now=NOW, hostname="pbx.example", **kwargs
    )
    # Parsed back from the bytes, as a mail client sees it.
    return email.message_from_bytes(message_bytes(mail), policy=policy.default)


def body_of(mail) -> str:
    return mail.get_body(("plain",)).get_content().replace("\r\n", "\n")


# --- settings --------------------------------------------------------------------------------


def test_defaults_are_asterisks():
    s = MailSettings.from_general({}, {})
    assert (s.smtphost, s.smtpport, s.smtptls, s.smtpuser) == ("localhost", 25, "no", "")
    assert s.mailcmd == "" and s.smtptimeout == 30.0
    assert s.serveremail == "asterisk" and s.fromstring == "" and s.emailsubject == ""
    assert s.emailbody is None and s.pagerbody is None
    assert s.emaildateformat == s.pagerdateformat == "%A, %B %d, %Y at %r" == DEFAULT_DATEFORMAT
    assert s.charset == "ISO-8859-1"
    assert s.attach is True and s.pbxskip is False and s.volgain == 0.0 and s.attachfmt == ""
    assert s.zone is None and s.locale == ""


def test_smtp_options():
    s = MailSettings.from_general(
        {"smtphost": "mx.example", "smtptls": "TLS", "smtpuser": "u", "smtppassword": "p",
         "smtptimeout": "2.5"}, {},
    )  # fmt: skip
    assert (s.smtphost, s.smtpport, s.smtptls, s.smtptimeout) == ("mx.example", 465, "tls", 2.5)
    assert MailSettings.from_general({"smtptls": "starttls"}, {}).smtpport == 25
    assert MailSettings.from_general({"smtptls": "tls", "smtpport": "2465"}, {}).smtpport == 2465


@pytest.mark.parametrize(
    ("general", "box", "starts"),
    [
        ({"smtptls": "ssl"}, {}, "smtptls=ssl"),
        ({"smtpport": "0"}, {}, "smtpport=0"),
        ({"smtpport": "25x"}, {}, "smtpport=25x"),
        ({"smtptimeout": "-1"}, {}, "smtptimeout=-1"),
        ({"smtpserver": "mx"}, {}, "smtpserver: unknown mail option"),
        ({"smtppassword": "p"}, {}, "smtppassword"),
        ({"pbxskip": "maybe"}, {}, "pbxskip=maybe"),
        ({}, {"attach": "sometimes"}, "attach=sometimes"),
        ({}, {"attachfmt": "flac"}, "attachfmt=flac"),
        ({"volgain": "loud"}, {}, "volgain=loud"),
        ({"charset": "klingon-8"}, {}, "charset=klingon-8"),
        ({"serveremail": "Voicemail <vm@x.org>"}, {}, "serveremail="),
        ({"serveremail": "vm@"}, {}, "serveremail="),
        ({}, {"tz": "martian"}, "tz=martian: no entry"),
        ({"tz": "bad"}, {}, "tz=bad"),
        ({}, {"locale": "xx_YY.UTF-8"}, "locale=xx_YY.UTF-8"),
        ({"emailbody": "Hi\\q"}, {}, "emailbody: \\q"),
        ({"pagerbody": "trailing\\"}, {}, "pagerbody: incomplete escape"),
        ({"emailsubject": "${IF($[1]?a:b)}"}, {}, "emailsubject: uses a $[...] expression"),
        (
            {},
            {"emailsubject": "${STRFTIME(${EPOCH})}"},
            "emailsubject: uses the dial plan function STRFTIME()",
        ),
        ({"fromstring": "${VM_NAME:0:3}"}, {}, "fromstring: uses the reference"),
        ({"pagersubject": "${FOO}"}, {}, "pagersubject: uses ${FOO}, which is not"),
        ({"emailbody": "${VM_NAME"}, {}, "emailbody: has an unterminated"),
        ({"attachextrecs": "yes"}, {}, "attachextrecs=yes: not implemented"),
        ({}, {"attachextrecs": "1"}, "attachextrecs=1: not implemented"),
    ],
)
def test_bad_values_name_the_option(general, box, starts):
    zones = dict(ZONES, bad="Mars/Olympus_Mons|x")
    with pytest.raises(ValueError) as error:
        MailSettings.from_general(general, box, zones)
    assert str(error.value).startswith(starts), str(error.value)


def test_attachextrecs_no_is_accepted():
    assert MailSettings.from_general({"attachextrecs": "no"}, {"attachextrecs": "0"}).attach


def test_mailbox_options_override_general_and_general_only_options_stay():
    s = settings(
        {"serveremail": "vm@a.example", "emailsubject": "G", "attach": "yes", "tz": "eu",
         "pagersubject": "P", "volgain": "1.5"},
        {"serveremail": "vm@b.example", "emailsubject": "B", "attach": "no", "tz": "eastern",
         "pagersubject": "ignored: general only", "volgain": "3", "attachfmt": "WAV"},
    )  # fmt: skip
    assert (s.serveremail, s.emailsubject, s.attach, s.volgain) == ("vm@b.example", "B", False, 3.0)
    assert s.pagersubject == "P" and s.attachfmt == "wav49"
    assert str(s.zone) == "America/New_York"


def test_escapes_as_asterisk_20():
    assert substitute_escapes(r"a\nb\tc\rd\\e") == "a\nb\tc\rd\\e"
    s = settings({"emailbody": r"L1\nL2\t${VM_NAME}", "pagerbody": r"p\n", "fromstring": r"x\ny"})
    assert s.emailbody == "L1\nL2\t${VM_NAME}" and s.pagerbody == "p\n"
    assert s.fromstring == r"x\ny"  # Asterisk does not unescape fromstring


def test_empty_emailbody_means_an_empty_body_but_empty_subject_the_default():
    s = settings({"emailbody": "", "emailsubject": ""})
    assert s.emailbody == "" and s.emailsubject == ""
    mail = built({"emailbody": "", "emailsubject": ""})
    assert body_of(mail) == "\n"
    assert mail["Subject"] == "[PBX]: New message 5 in mailbox 1234"


# --- variables -------------------------------------------------------------------------------


def test_duration_and_callerid_helpers():
    assert duration_text(0) == "0:00" and duration_text(83) == "1:23"
    assert duration_text(3725) == "62:05"
    assert callerid_merge('Al "Bo"', "55", "u") == '"Al \\"Bo\\"" <55>'
    assert callerid_merge("", "55", "u") == "55" and callerid_merge("Al", "", "u") == "Al"
    assert callerid_merge("", "", "u") == "u"
    assert callerid_split('"Al \\"Bo\\"" <555-1234>') == ('Al "Bo"', "5551234")
    assert callerid_split("Al <55>") == ("Al", "55")
    assert callerid_split("(555) 123") == ("", "555123")
    assert callerid_split("Unknown") == ("Unknown", "")


def test_variables_as_prep_email_sub_vars():
    values = email_variables(
        fullname="Ann", msgnum=0, context="default", mailbox="1234", cidnum="", cidname="",
        duration=5, date="D", category=None, flag="",
    )  # fmt: skip
    assert values == {
        "VM_NAME": "Ann", "VM_DUR": "0:05", "VM_MSGNUM": "1", "VM_CONTEXT": "default",
        "VM_MAILBOX": "1234", "VM_CALLERID": "an unknown caller",
        "VM_CIDNAME": "an unknown caller", "VM_CIDNUM": "an unknown caller", "VM_DATE": "D",
        "VM_CATEGORY": "no category", "VM_FLAG": "",
    }  # fmt: skip
    values = email_variables(
        fullname="Ann", msgnum=2, context="c", mailbox="1", cidnum="55", cidname="Bo",
        duration=61, date="D", category="sales", flag="Urgent",
        original=Original('"Orig" <777>', NOW), origdate="OD",
    )  # fmt: skip
    assert values["VM_CALLERID"] == '"Bo" <55>' and values["VM_MSGNUM"] == "3"
    assert values["VM_CATEGORY"] == "sales" and values["VM_FLAG"] == "Urgent"
    assert values["ORIG_VM_CALLERID"] == '"Orig" <777>'
    assert (values["ORIG_VM_CIDNAME"], values["ORIG_VM_CIDNUM"]) == ("Orig", "777")
    assert values["ORIG_VM_DATE"] == "OD"


def test_substitute_inserts_values_once():
    text = "${VM_NAME} ${VM_CIDNAME} ${ORIG_VM_DATE}."
    assert substitute(text, {"VM_NAME": "A", "VM_CIDNAME": "${VM_NAME}"}) == "A ${VM_NAME} ."
    assert check_template("Dear ${VM_NAME}: ${ORIG_VM_CIDNUM} $5 {x}") is None


# --- the mail --------------------------------------------------------------------------------


def test_default_subject_and_body_exactly_as_asterisk():
    mail = built()
    assert mail["Subject"] == "[PBX]: New message 5 in mailbox 1234"
    assert mail["From"] == "Asterisk PBX <asterisk@pbx.example>"
    assert mail["To"] == "Example Mailbox <root@localhost>"
    assert body_of(mail) == (
        "Dear Example Mailbox:\n\n\tJust wanted to let you know you were just left a 1:23 long "
        "message (number 5)\nin mailbox 1234 from Alice, on "
        f"{dates.localtime(NOW, None).strftime(DEFAULT_DATEFORMAT)} so you might\n"
        "want to check it when you get a chance.  Thanks!\n\n\t\t\t\t--Asterisk\n\n"
    )
    assert mail.get_content_type() == "text/plain"
    assert mail.get_content_charset() == "iso-8859-1"


def test_subject_with_flag_and_pbxskip():
    urgent = MessageInfo(msgnum=0, duration=1, flag="Urgent")
    assert built(message=urgent)["Subject"] == "[PBX]: New Urgent message 1 in mailbox 1234"
    assert built({"pbxskip": "yes"}, message=urgent)["Subject"] == (
        "New Urgent message 1 in mailbox 1234"
    )
    assert built({"pbxskip": "yes"})["Subject"] == "New message 5 in mailbox 1234"


def test_unknown_caller_in_default_body():
    mail = built(message=MessageInfo(msgnum=0, duration=1))
    assert "in mailbox 1234 from an unknown caller, on " in body_of(mail)
    assert "X-Asterisk-CallerID" not in mail and "X-Asterisk-CallerIDName" not in mail
    only_number = built(message=MessageInfo(msgnum=0, duration=1, cidnum="5551234"))
    assert "from 5551234, on " in body_of(only_number)
    assert only_number["X-Asterisk-CallerID"] == "5551234"


def test_custom_subject_body_and_fromstring_with_every_variable():
    general = {
        "emailsubject": "New ${VM_FLAG} msg ${VM_MSGNUM} for ${VM_MAILBOX}@${VM_CONTEXT}",
        "emailbody": r"${VM_NAME}|${VM_DUR}|${VM_CALLERID}|${VM_CIDNAME}|${VM_CIDNUM}|"
        r"${VM_CATEGORY}|${ORIG_VM_CALLERID}|${ORIG_VM_CIDNAME}|${ORIG_VM_CIDNUM}\n${VM_DATE}",
        "fromstring": "Voicemail for ${VM_NAME}",
        "serveremail": "vm@example.org",
        "emaildateformat": "%Y-%m-%d %H:%M",
    }
    message = MessageInfo(
        msgnum=0, duration=125, cidnum="555", cidname="Bob", flag="Urgent", category="sales",
        original=Original('"Carol" <777>', NOW),
    )  # fmt: skip
    mail = built(general, {"tz": "eu"}, message=message)
    assert mail["Subject"] == "New Urgent msg 1 for 1234@default"
    assert mail["From"].addresses[0].display_name == "Voicemail for Example Mailbox"
    assert mail["From"].addresses[0].addr_spec == "vm@example.org"
    assert body_of(mail) == (
        'Example Mailbox|2:05|"Bob" <555>|Bob|555|sales|"Carol" <777>|Carol|777\n2023-11-14 23:13\n'
    )


def test_forwarded_variant_of_the_default_body():
    message = MessageInfo(
        msgnum=1, duration=9, cidnum="200", cidname="Forwarder",
        original=Original('"Carol" <777>', NOW - 3600), forwarded=True,
    )  # fmt: skip
    mail = built({"emaildateformat": "%H:%M"}, {"tz": "eu"}, message=message)
    origdate = dates.localtime(NOW - 3600, None).strftime("%H:%M")  # server time, as Asterisk
    assert body_of(mail) == (
        "Dear Example Mailbox:\n\n\tJust wanted to let you know you were just forwarded a 0:09 "
        "long message (number 2)\nin mailbox 1234 from Forwarder, on 23:13\n"
        f'(originally sent by "Carol" <777> on {origdate})\n'
        "so you might want to check it when you get a chance.  Thanks!\n\n"
        "\t\t\t\t--Asterisk\n\n"
    )
    # Without the stored data Asterisk falls back to the plain text.
    plain = MessageInfo(msgnum=1, duration=9, cidname="F", forwarded=True)
    assert "were just left a 0:09" in body_of(built(message=plain))


def test_date_header_and_date_text_in_the_mailbox_zone():
    mail = built({"emaildateformat": "%a %d %H:%M %Z"}, {"tz": "eastern"})
    assert mail["Date"] == "Tue, 14 Nov 2023 17:13:20 -0500"
    assert "on Tue 14 17:13 EST so you might" in body_of(mail)
    assert built({"tz": "eu"})["Date"] == "Tue, 14 Nov 2023 23:13:20 +0100"


def test_locale_names_days_and_months(tmp_path, monkeypatch):
    """locale=de_DE.UTF-8, compiled here with localedef (Debian's `locales` package)."""
    subprocess.run(
        ["localedef", "-i", "de_DE", "-f", "UTF-8", str(tmp_path / "de_DE.UTF-8")],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    monkeypatch.setenv("LOCPATH", str(tmp_path))
    mail = built({"tz": "eu"}, {"locale": "de_DE.UTF-8"})
    assert "on Dienstag, November 14, 2023 at 11:13:20  so you might" in body_of(mail)
    assert mail["Date"] == "Tue, 14 Nov 2023 23:13:20 +0100"  # RFC 5322 dates stay English
    assert mail.get_content_charset() == "iso-8859-1"


def test_body_that_does_not_fit_the_charset_goes_as_utf8():
    recipient = Recipient("1234", "default", "Иван 🎉", "ivan@example.com")
    mail = built(recipient=recipient)
    assert mail.get_content_charset() == "utf-8"
    assert body_of(mail).startswith("Dear Иван 🎉:")
    assert built({"charset": "UTF-8"}).get_content_charset() == "utf-8"


def test_message_id_shape_and_several_recipients():
    recipient = Recipient("12 34", "default", "Two, People", "a@x.example|b@y.example")
    mail = built(recipient=recipient)
    assert re.fullmatch(r"<Asterisk-5-\d+-12_34-\d+@pbx\.example>", mail["Message-ID"])
    assert [a.addr_spec for a in mail["To"].addresses] == ["a@x.example", "b@y.example"]
    assert {a.display_name for a in mail["To"].addresses} == {"Two, People"}


def test_bad_recipient_address_is_refused():
    for bad in ("not-an-address", "a@b.example\r\nBcc: c@d.example", "a b@c.example", "|"):
        with pytest.raises(ValueError):
            build_email(settings(), Recipient("1", "d", "N", bad), MSG)


def test_multipart_with_attachment_headers_as_asterisk():
    attachment = Attachment(b"\x01\x02", "msg0004.gsm", "audio/x-gsm")
    mail = built(attachment=attachment)
    assert mail.get_content_type() == "multipart/mixed"
    assert mail.get_boundary().startswith("----voicemail_51234")
    assert mail.preamble.startswith("This is a multi-part message in MIME format.")
    text, audio = mail.get_payload()
    assert text.get_content_type() == "text/plain"
    assert audio["Content-Type"] == 'audio/x-gsm; name="msg0004.gsm"'
    assert audio["Content-Disposition"] == 'attachment; filename="msg0004.gsm"'
    assert audio["Content-Description"] == "Voicemail sound attachment."
    assert "MIME-Version" not in audio
    raw = message_bytes(build_email(settings(), BOX, MSG, attachment))
    assert b"\n" not in raw.replace(b"\r\n", b"")


def test_pager_defaults_exactly_as_asterisk():
    page = build_pager(settings(), BOX, MSG, now=NOW, hostname="pbx.example")
    page = email.message_from_bytes(message_bytes(page), policy=policy.default)
    assert page["Subject"] == "New VM"
    assert page["To"] == "Example Mailbox <pager@localhost>"
    assert page["From"] == "Asterisk PBX <asterisk@pbx.example>"
    date = dates.localtime(NOW, None).strftime(DEFAULT_DATEFORMAT)
    assert page.get_content().replace("\r\n", "\n") == (
        f"New 1:23 long  msg in box 1234\nfrom Alice, on {date}\n"
    )
    urgent = MessageInfo(msgnum=0, duration=5, flag="Urgent")
    page = build_pager(settings(), BOX, urgent, now=NOW)
    assert page["Subject"] == "New Urgent VM"
    assert "New 0:05 long Urgent msg in box 1234\nfrom unknown, on " in page.get_content()


def test_pager_strings_and_pagerdateformat():
    general = {
        "pagerfromstring": "PBX ${VM_MAILBOX}",
        "pagersubject": r"VM ${VM_MSGNUM}\tfrom ${VM_CIDNUM}",
        "pagerbody": r"${VM_DUR} ${VM_CALLERID}\n${VM_DATE}",
        "pagerdateformat": "%T %D",
        "emaildateformat": "unused %Y",
        "serveremail": "pbx@example.net",
    }
    page = build_pager(settings(general, {"tz": "eu"}), BOX, MSG, now=NOW)
    assert page["From"] == "PBX 1234 <pbx@example.net>"
    assert page["Subject"] == "VM 5 from 5551234"  # the tab is not allowed in a header
    assert page.get_content() == '1:23 "Alice" <5551234>\n23:13:20 11/14/23\n'
    assert not page.is_multipart()
