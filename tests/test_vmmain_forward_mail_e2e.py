"""End to end: a message forwarded with VoiceMailMain key 8 reaches each recipient by email,
in Asterisk's forwarded-message wording, through the outbox; a real aiosmtpd server receives
the mail."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from . import mail_server
from .dbbackends import Backend
from .mail_server import Handler
from .server import start_server, write_config
from .softphone import Softphone
from .test_notify_mail_e2e import outbox, parsed, wait_for
from .test_vmmain_forward_e2e import PIN, Caller, deposit, inbox

pytestmark = pytest.mark.timeout(240)

smtp_server = pytest.fixture(mail_server.smtp_servers)
EXTENSIONS = "[default]\nexten => 8500,1,VoiceMailMain(@default)\nsame => n,Hangup()\n"
MAILBOXES = (
    f"[default]\n1000 => {PIN},Alice\n"
    "1001 => 1111,Bob Example,bob@example.com,,attach=yes\n"
    "1002 => 2222,Carol Example,carol@example.com,,attach=no\n"
)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"], indirect=True)
def test_each_recipient_of_a_forward_gets_the_forwarded_mail(
    backend: Backend, tmp_path: Path, smtp_server: Callable[..., int]
) -> None:
    handler = Handler()
    port = smtp_server(handler)
    config = write_config(
        tmp_path / "etc", backend, mailboxes=MAILBOXES, extensions=EXTENSIONS, smtp_port=port
    )
    server = start_server(config)
    try:
        original = deposit(backend)  # straight into the table: 1000 has no address anyway
        with Softphone(server) as phone:
            caller = Caller(phone.call("8500"))
            caller.log_in()
            caller.press("8")
            caller.hear("vm-extension")
            caller.press("1001*1002#")
            caller.hear("vm-forwardoptions", "vm-starmain")
            caller.press("2")
            caller.hear("vm-msgforwarded")
            caller.press("#")
            caller.hear("vm-goodbye")
        wait_for(lambda: len(handler.received) == 2, "two mails", server.log)
        time.sleep(1.0)  # a third (duplicate) mail would come now
        log = server.log()
    finally:
        server.stop()
    assert len(handler.received) == 2, log
    rows = {row["recipient"]: row for row in outbox(backend)}
    assert set(rows) == {"bob@example.com", "carol@example.com"}, rows
    assert {row["state"] for row in rows.values()} == {"sent"}
    for mailbox, address in (("1001", "bob@example.com"), ("1002", "carol@example.com")):
        (copy,) = inbox(backend, mailbox)
        assert rows[address]["mailbox"] == mailbox
        assert rows[address]["msg_id"] == copy["msg_id"]  # a copy keeps the msg_id
    mails = {
        tuple(envelope[1]): mail
        for envelope, mail in zip(handler.received, parsed(handler.received), strict=True)
    }
    bob = mails[("bob@example.com",)]
    carol = mails[("carol@example.com",)]
    assert bob["Subject"] == "[PBX]: New message 1 in mailbox 1001"
    assert carol["Subject"] == "[PBX]: New message 1 in mailbox 1002"
    for mail, name in ((bob, "Bob Example"), (carol, "Carol Example")):
        body = mail.get_body(preferencelist=("plain",)).get_content()
        assert f"Dear {name}:" in body, body
        assert "forwarded a" in body and "originally sent by" in body, body
        assert '"Dave" <5550199>' in body, body
    attachments = list(bob.iter_attachments())
    assert [part.get_filename() for part in attachments] == ["msg0000.wav"]
    assert attachments[0].get_content() == original
    assert list(carol.iter_attachments()) == []
