"""End to end: the webhook. A small HTTP server in the test gets the signed JSON events of a
deposit (new) and of a VoiceMailMain session (read, deleted); a 500 answer is retried."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from . import sipp
from .dbbackends import Backend
from .server import RunningServer, start_server, write_config
from .test_notify_mail_e2e import outbox, wait_for
from .test_notify_outbox_e2e import FAST_RETRY, deposits
from .test_vmmain_e2e import Keys, call
from .test_vmmain_e2e import deposit as store_messages

pytestmark = pytest.mark.timeout(240)

SECRET = "k3y-for-the-test"
EXTENSIONS = (
    "[default]\nexten => 8500,1,VoiceMailMain(@default)\nsame => n,Hangup()\n"
    "exten => _X.,1,VoiceMail(${EXTEN}@default,u)\nsame => n,Hangup()\n"
)


class Hook:
    """An HTTP server on 127.0.0.1 keeping each POST; answers from `answers`, then 200."""

    def __init__(self, answers: list[int]) -> None:
        self.answers = list(answers)
        self.requests: list[tuple[dict[str, str], bytes, int]] = []
        self.lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with hook.lock:
                    code = hook.answers.pop(0) if hook.answers else 200
                    hook.requests.append((dict(self.headers.items()), body, code))
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http.server_address[1]}/voicemail-events"

    def events(self) -> list[dict]:
        with self.lock:
            return [json.loads(body) for _, body, code in self.requests if code == 200]

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    running = Hook([500])  # the first POST fails: it must be tried again
    yield running
    running.close()


def start(tmp_path: Path, backend: Backend, hook: Hook, mailboxes: str) -> RunningServer:
    general = f"webhookurl={hook.url}\nwebhooksecret={SECRET}\n" + FAST_RETRY
    config = write_config(
        tmp_path / "etc", backend, mailboxes=mailboxes, general=general, extensions=EXTENSIONS
    )
    return start_server(config)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mysql"], indirect=True)
def test_a_deposit_posts_a_signed_new_event_retried_after_a_500(
    backend: Backend, tmp_path: Path, hook: Hook
) -> None:
    server = start(tmp_path, backend, hook, "[default]\n1000 => 1234,Alice Example\n")
    try:
        deposits(tmp_path, server, 1, "a")
        wait_for(lambda: hook.events(), "webhook event", server.log)
        wait_for(
            lambda: outbox(backend) and outbox(backend)[0]["state"] == "sent",
            "sent webhook row",
            server.log,
        )
    finally:
        assert server.stop() == 0, server.log()
    assert [code for _, _, code in hook.requests] == [500, 200]  # retried once, then done
    [row] = outbox(backend)
    assert (row["kind"], row["recipient"], int(row["attempts"])) == (
        "webhook",
        "new:1000@default",
        2,
    )
    stored = backend.sql("SELECT msg_id, origtime, duration FROM voicemessages")[0]
    for headers, body, _ in hook.requests:
        assert headers["Content-Type"] == "application/json"
        expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["X-Signature-SHA256"], expected)
        assert json.loads(body) == {
            "event": "new",
            "context": "default",
            "mailbox": "1000",
            "msg_id": stored["msg_id"],
            "folder": "INBOX",
            "callerid": '"Test Caller" <5551234>',
            "duration": int(stored["duration"]),
            "origtime": int(stored["origtime"]),
        }


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_listening_and_deleting_post_read_and_deleted_events(
    backend: Backend, tmp_path: Path
) -> None:
    hook = Hook([])
    server = start(tmp_path, backend, hook, "[default]\n1000 => 8642,Alice Example\n")
    try:
        ids = store_messages(backend, 3)  # straight into the table: no new events
        keys = Keys()
        xml = call(
            keys,
            *keys.press("1000#8642#"),
            sipp.pause(1500),
            *keys.press("11", 2500),  # the first message, heard
            *keys.press("7", 1500),  # deleted
            *keys.press("61", 2500),  # the second
            *keys.press("9", 1000),  # saved ...
            *keys.press("2", 3000),  # ... to Work: moved, not deleted
            *keys.press("61", 2500),  # the third: heard, so it goes to Old (read)
            sipp.pause(500),
        )
        sipp.run_sipp(tmp_path / "sipp", xml, server.target, timeout=90).check()
        wait_for(lambda: len(hook.events()) >= 2, "webhook events", server.log)
        wait_for(
            lambda: all(r["state"] == "sent" for r in outbox(backend)), "sent rows", server.log
        )
    finally:
        assert server.stop() == 0, server.log()
    events = sorted((e["event"], e["msg_id"], e["folder"]) for e in hook.events())
    assert events == [("deleted", ids[0], "INBOX"), ("read", ids[2], "INBOX")], server.log()
    for headers, body, _ in hook.requests:
        expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert headers["X-Signature-SHA256"] == expected
