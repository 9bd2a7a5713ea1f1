"""Sending through a real aiosmtpd server on 127.0.0.1 (plain, STARTTLS, implicit TLS, AUTH),
reading the mail back with the email package; SMTP answers classified; mailcmd."""

from __future__ import annotations

import asyncio
import email
import socket
import sys
from email import policy

import pytest

from voicemail.mail.compose import (
    Attachment,
    MessageInfo,
    Recipient,
    build_email,
    build_pager,
    message_bytes,
)
from voicemail.mail.send import PERMANENT, SENT, TEMPORARY, send
from voicemail.mail.settings import MailSettings

from . import mail_server
from .mail_server import Handler, free_port, server_context

smtp_server = pytest.fixture(mail_server.smtp_servers)
certificate = pytest.fixture(scope="module")(mail_server.make_certificate)

pytestmark = pytest.mark.timeout(60)

NOW = 1_700_000_000


def settings_for(port: int, **general: str) -> MailSettings:
    values = {"smtphost": "127.0.0.1", "smtpport": str(port), "smtptimeout": "10"}
    values.update(general)
    values.setdefault("serveremail", "vm@pbx.example")
    return MailSettings.from_general(values, {})


RECIPIENT = Recipient("1234", "default", "Zoë Müller", "zoe@example.com", "pager@example.com")
MESSAGE = MessageInfo(msgnum=0, duration=7, cidnum="5551234", cidname="Alice")


def mail(**changes) -> email.message.EmailMessage:
    settings = changes.pop("settings", MailSettings.from_general({}, {}))
    recipient = changes.pop("recipient", RECIPIENT)
    message = changes.pop("message", MESSAGE)
    return build_email(settings, recipient, message, now=NOW, hostname="pbx.example", **changes)


def parse(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=policy.default)


def test_plain_smtp_delivers_headers_body_and_attachment(smtp_server):
    handler = Handler()
    port = smtp_server(handler)
    audio = bytes(range(256)) * 40
    attachment = Attachment(audio, "msg0000.wav", "audio/x-wav")
    result = asyncio.run(send(mail(attachment=attachment), settings_for(port)))
    assert result.status == SENT, result
    ((sender, rcpts, raw),) = handler.received
    assert rcpts == ["zoe@example.com"]
    received = parse(raw)
    assert received["To"].addresses[0].display_name == "Zoë Müller"
    assert received["Subject"] == "[PBX]: New message 1 in mailbox 1234"
    assert received["Message-ID"].startswith("<Asterisk-1-")
    assert received["X-Asterisk-CallerID"] == "5551234"
    body = received.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert "left a 0:07 long message (number 1)\nin mailbox 1234 from Alice" in body
    (part,) = list(received.iter_attachments())
    assert part.get_filename() == "msg0000.wav"
    assert part.get_content_type() == "audio/x-wav"
    assert part["Content-Description"] == "Voicemail sound attachment."
    assert part.get_content() == audio


def test_several_addresses_each_get_the_mail(smtp_server):
    handler = Handler()
    port = smtp_server(handler)
    recipient = Recipient("1234", "default", "Team", "a@example.com|b@example.com")
    result = asyncio.run(send(mail(recipient=recipient), settings_for(port)))
    assert result.status == SENT
    assert handler.received[0][1] == ["a@example.com", "b@example.com"]


def test_hostile_caller_name_adds_no_header(smtp_server):
    handler = Handler()
    port = smtp_server(handler)
    hostile = 'Eve "the, boss"\r\nBcc: victim@example.com\r\nX-Injected: 1'
    message = MessageInfo(msgnum=2, duration=3, cidnum="5551\r\n234", cidname=hostile)
    settings = MailSettings.from_general(
        {"fromstring": "Voicemail from ${VM_CIDNAME}", "emailsubject": "From ${VM_CALLERID}"}, {}
    )
    result = asyncio.run(send(mail(message=message, settings=settings), settings_for(port)))
    assert result.status == SENT
    sender, rcpts, raw = handler.received[0]
    assert rcpts == ["zoe@example.com"]
    received = parse(raw)
    assert "Bcc" not in received and "X-Injected" not in received
    names = sorted(received.keys())
    assert names == sorted(
        ["Date", "From", "To", "Subject", "Message-ID", "X-Asterisk-CallerID",
         "X-Asterisk-CallerIDName", "MIME-Version", "Content-Type", "Content-Transfer-Encoding"]
    )  # fmt: skip
    assert received["From"].addresses[0].display_name == (
        'Voicemail from Eve "the, boss"Bcc: victim@example.comX-Injected: 1'
    )
    assert received["From"].addresses[0].addr_spec.startswith("asterisk@")
    assert received["X-Asterisk-CallerIDName"] == (
        'Eve "the, boss"Bcc: victim@example.comX-Injected: 1'
    )
    assert received["X-Asterisk-CallerID"] == "5551234"
    assert "\n" not in str(received["Subject"])


def test_utf8_subject_and_file_name_round_trip(smtp_server):
    handler = Handler()
    port = smtp_server(handler)
    settings = MailSettings.from_general({"emailsubject": "Nachricht für ${VM_NAME} ✉"}, {})
    attachment = Attachment(b"\x00\x01" * 100, "grüße-日本.wav", "audio/x-wav")
    result = asyncio.run(send(mail(settings=settings, attachment=attachment), settings_for(port)))
    assert result.status == SENT
    raw = handler.received[0][2]
    raw.decode("ascii")  # RFC 2047 / 2231 encoded: the mail itself is 7-bit
    assert b"\r\n" in raw
    received = parse(raw)
    assert received["Subject"] == "Nachricht für Zoë Müller ✉"
    (part,) = list(received.iter_attachments())
    assert part.get_filename() == "grüße-日本.wav"
    assert part.get_content_type() == "audio/x-wav"
    assert "filename*=utf-8''" in raw.decode("ascii")


def test_pager_mail_is_short_without_attachment(smtp_server):
    handler = Handler()
    port = smtp_server(handler)
    page = build_pager(
        MailSettings.from_general({}, {}), RECIPIENT, MESSAGE, now=NOW, hostname="pbx"
    )
    assert asyncio.run(send(page, settings_for(port))).status == SENT
    sender, rcpts, raw = handler.received[0]
    received = parse(raw)
    assert rcpts == ["pager@example.com"]
    assert received["Subject"] == "New VM"
    assert not received.is_multipart()
    assert (
        received.get_content()
        .replace("\r\n", "\n")
        .startswith("New 0:07 long  msg in box 1234\nfrom Alice, on ")
    )


def test_starttls_with_auth_login_and_plain(smtp_server, certificate, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))  # trust the self-signed cert
    for excluded, expected in ((["PLAIN"], "LOGIN"), (["LOGIN"], "PLAIN")):
        handler = Handler()
        port = smtp_server(
            handler,
            tls_context=server_context(certificate),
            require_starttls=True,
            auth_required=True,
            authenticator=handler.authenticator,
            auth_exclude_mechanism=excluded,
        )
        settings = settings_for(port, smtptls="starttls", smtpuser="vm", smtppassword="s3cret")
        result = asyncio.run(send(mail(), settings))
        assert result.status == SENT, result
        assert handler.logins == [(expected, "vm", "s3cret")]
        assert len(handler.received) == 1


def test_wrong_password_is_permanent(smtp_server, certificate, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    handler = Handler()
    port = smtp_server(
        handler,
        tls_context=server_context(certificate),
        auth_required=True,
        authenticator=handler.authenticator,
    )
    settings = settings_for(port, smtptls="starttls", smtpuser="vm", smtppassword="wrong")
    result = asyncio.run(send(mail(), settings))
    assert result.status == PERMANENT and result.code == 535
    assert handler.received == []


def test_implicit_tls(smtp_server, certificate, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    handler = Handler()
    port = smtp_server(handler, ssl_context=server_context(certificate))
    result = asyncio.run(send(mail(), settings_for(port, smtptls="tls")))
    assert result.status == SENT, result
    assert len(handler.received) == 1


def test_untrusted_certificate_is_temporary_and_sends_nothing(smtp_server, certificate):
    handler = Handler()
    port = smtp_server(handler, tls_context=server_context(certificate))
    result = asyncio.run(send(mail(), settings_for(port, smtptls="starttls")))
    assert result.status == TEMPORARY
    assert "certificate" in result.detail.lower()
    assert handler.received == []


def test_550_is_permanent_with_the_server_text(smtp_server):
    handler = Handler(rcpt_answer="550 5.1.1 <nobody@example.com>: no such user here")
    port = smtp_server(handler)
    recipient = Recipient("1234", "default", "Nobody", "nobody@example.com")
    result = asyncio.run(send(mail(recipient=recipient), settings_for(port)))
    assert result.status == PERMANENT
    assert result.code == 550
    assert "no such user here" in result.detail


def test_one_refused_of_two_still_sent(smtp_server):
    handler = Handler(rcpt_answer="550 5.1.1 no such user")
    port = smtp_server(handler)
    recipient = Recipient("1234", "default", "Two", "nobody@example.com|zoe@example.com")
    result = asyncio.run(send(mail(recipient=recipient), settings_for(port)))
    assert result.status == SENT
    assert result.refused == {"nobody@example.com": "550 5.1.1 no such user"}
    assert handler.received[0][1] == ["zoe@example.com"]


def test_451_is_temporary_with_the_server_text(smtp_server):
    handler = Handler(data_answer="451 4.3.0 Mail server temporarily rejected message")
    port = smtp_server(handler)
    result = asyncio.run(send(mail(), settings_for(port)))
    assert result.status == TEMPORARY
    assert result.code == 451
    assert "temporarily rejected" in result.detail


def test_refused_connection_is_temporary():
    port = free_port()  # nothing listens there
    result = asyncio.run(send(mail(), settings_for(port)))
    assert result.status == TEMPORARY
    assert result.code is None and result.detail


def test_server_that_never_answers_is_a_temporary_timeout():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # accepts the TCP connection, never says 220
        port = listener.getsockname()[1]
        settings = settings_for(port, smtptimeout="0.5")
        result = asyncio.run(send(mail(), settings))
    assert result.status == TEMPORARY
    assert "timed out" in result.detail


def test_mailcmd_gets_the_exact_bytes(tmp_path):
    out = tmp_path / "mail.eml"
    script = tmp_path / "fake-sendmail"
    script.write_text(
        f"#!{sys.executable}\nimport sys\nopen(sys.argv[2], 'wb').write(sys.stdin.buffer.read())\n"
    )
    script.chmod(0o755)
    settings = MailSettings.from_general({"mailcmd": f"{script} -t {out}"}, {})
    built = mail(attachment=Attachment(b"\xff" * 5000, "msg0000.wav", "audio/x-wav"))
    result = asyncio.run(send(built, settings))
    assert result.status == SENT, result
    assert out.read_bytes() == message_bytes(built)


def test_mailcmd_failing_is_temporary(tmp_path):
    settings = MailSettings.from_general({"mailcmd": "cat >/dev/null; echo full >&2; exit 75"}, {})
    result = asyncio.run(send(mail(), settings))
    assert result.status == TEMPORARY
    assert "status 75" in result.detail and "full" in result.detail


def test_mailcmd_hanging_is_ended_and_temporary():
    settings = MailSettings.from_general({"mailcmd": "sleep 30", "smtptimeout": "0.5"}, {})
    result = asyncio.run(send(mail(), settings))
    assert result.status == TEMPORARY
    assert "longer than" in result.detail
