"""The notification wiring's pure parts: mail settings checked at load with file:line, the
outbox items a deposit queues, the webhook signature; and long payloads on every backend."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json

import pytest

from storage.conffile import ConfigError, parse_config_text
from storage.odbc import OdbcPool
from storage.outbox import Outbox, OutboxItem
from storage.schema import create_tables, outbox_table
from voicemail.config_voicemail import VoicemailSettings, voicemail_settings
from voicemail.mailboxes import Mailbox
from voicemail.notifications import MailPayload, WebhookPayload, deposit_items, mail_items
from voicemail.webhook import body_bytes, signature

from .dbbackends import Backend

pytestmark = pytest.mark.timeout(60)


def settings(text: str) -> VoicemailSettings:
    return voicemail_settings(parse_config_text(text, "voicemail.conf"))


def error(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        settings(text)
    return str(info.value)


def test_mail_options_are_implemented_and_smtp_and_webhook_are_ours() -> None:
    vm = settings(
        "[general]\nserveremail=vm@example.com\nattach=yes\nemaildateformat=%A\n"
        "pagerdateformat=%A\nemailsubject=New ${VM_MSGNUM}\nsmtphost=mail.example.com\n"
        "smtpport=587\nsmtptls=starttls\nwebhookurl=https://hooks.example.com/vm\n"
        "webhooksecret=s\noutboxretry=5\noutboxretrymax=60\n"
        "[default]\n1000 => 1,A,a@example.com,,attachfmt=mp3|delete=yes|fromstring=VM\n"
    )
    assert vm.warnings == []
    assert vm.webhookurl == "https://hooks.example.com/vm"
    assert vm.outbox_retry == (5.0, 60.0)
    mail = vm.mail_settings(vm.mailboxes[("default", "1000")].options)
    assert (mail.smtphost, mail.smtpport, mail.attachfmt, mail.fromstring) == (
        "mail.example.com",
        587,
        "mp3",
        "VM",
    )


def test_bad_mail_settings_are_errors_at_their_line() -> None:
    assert error("[general]\nformat=wav\nsmtptls=maybe\n").startswith(
        "voicemail.conf:3: smtptls=maybe: must be one of no, starttls, tls"
    )
    assert error("[general]\nsmtpprot=25\n").startswith("voicemail.conf:2: smtpprot: unknown")
    assert error("[general]\nemailsubject=${NOPE(x)}\n").startswith(
        "voicemail.conf:2: emailsubject"
    )
    message = error("[general]\n\n[default]\n1000 => 1,A,a@x.org,,attachfmt=flac\n")
    assert message.startswith("voicemail.conf:4: mailbox 1000@default: attachfmt=flac"), message
    assert "voicemail.conf:2:" in error("[general]\nwebhookurl=ftp://x/\nwebhooksecret=s\n")
    assert "needs" in error("[general]\nwebhookurl=http://127.0.0.1:9/x\n")
    assert "without" in error("[general]\nwebhooksecret=s\n")


def test_a_tz_naming_no_zone_stays_a_warning() -> None:
    vm = settings("[default]\n1000 => 1,A,a@x.org,,tz=nowhere\n")
    assert vm.warnings == ['voicemail.conf:2: "tz=nowhere" names no [zonemessages] zone']
    assert vm.mail_settings({"tz": "nowhere"}).zone is None  # the server's zone, as Asterisk


def test_a_deposit_queues_one_row_per_address_and_the_webhook_event() -> None:
    vm = settings("[general]\nwebhookurl=http://127.0.0.1:9/hook\nwebhooksecret=s\n")
    box = Mailbox(
        "default",
        "1000",
        "1",
        "Alice",
        email="a@x.org| b@x.org |a@x.org",
        pager="p@x.org",
        options={"attach": "no", "delete": "yes", "maxmsg": "10"},
    )
    items = deposit_items(
        box,
        vm,
        audio_format="wav49",
        folder="INBOX",
        msg_id="m1",
        callerid='"C" <5>',
        duration=7,
        origtime=1700000000,
    )
    assert [(i.kind, i.recipient) for i in items] == [
        ("email", "a@x.org"),
        ("email", "b@x.org"),
        ("pager", "p@x.org"),
        ("webhook", "new:1000@default"),
    ]
    payload = MailPayload.from_json(items[0].payload)
    assert payload == MailPayload("Alice", {"attach": "no", "delete": "yes"}, "wav49", False)
    assert payload.delete_after
    hook = WebhookPayload.from_json(items[3].payload)
    assert hook.url == "http://127.0.0.1:9/hook"
    assert hook.body == {
        "event": "new",
        "context": "default",
        "mailbox": "1000",
        "msg_id": "m1",
        "folder": "INBOX",
        "callerid": '"C" <5>',
        "duration": 7,
        "origtime": 1700000000,
    }
    no_hook = settings("[general]\n")
    plain = deposit_items(
        Mailbox("default", "1001", "1"),
        no_hook,
        audio_format="wav",
        folder="INBOX",
        msg_id="m2",
        callerid="",
        duration=1,
        origtime=1,
    )
    assert plain == ()  # no email, no pager, no webhook: nothing queued
    assert mail_items(fullname="", email="", pager="", options={}, audio_format="wav") == []


def test_the_signature_is_hmac_sha256_of_the_exact_body() -> None:
    body = body_bytes({"b": 1, "a": "é"})
    assert body == b'{"a":"\\u00e9","b":1}'  # compact, sorted, ASCII
    assert signature("k", body) == hmac.new(b"k", body, hashlib.sha256).hexdigest()
    assert json.loads(body) == {"a": "é", "b": 1}


def test_long_payloads_and_errors_are_stored_whole(backend: Backend) -> None:
    """A webhook payload or an SMTP answer is often longer than 127 characters (MariaDB's
    ODBC driver used to cut such parameters)."""
    text = "é" + "x" * 3000

    async def work() -> tuple[str, str | None]:
        pool = OdbcPool(backend.connection_class())
        await pool.start()
        try:
            await create_tables(pool, [outbox_table()])
            outbox = Outbox(pool)
            items = [OutboxItem("webhook", "new:1@d", text)]
            await outbox.enqueue(context="d", mailbox="1", msg_id="m", items=items)
            [row] = await outbox.claim("s")
            await outbox.mark_failed(row.id, "550 " + text, "s")
            again = await outbox.get(row.id)
            assert again is not None
            return row.payload, again.last_error
        finally:
            await pool.close()

    payload, last_error = asyncio.run(work())
    assert payload == text
    assert last_error == ("550 " + text)[:1997] + "..."
