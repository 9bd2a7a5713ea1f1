"""End to end, against the real server: a SUBSCRIBE is in dialog only when its parsed To tag,
Call-ID and From tag name a subscription we hold. Everything else is challenged (no To tag)
or answered 481 (a To tag of no dialog of ours), and gets no NOTIFY with the counts."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from .dbbackends import Backend
from .server import RunningServer
from .test_mwi_e2e import PASSWORD, start_mwi_server
from .test_sipsec_phone import RawPhone, digest_answer, to_tag, wait_for_log

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.parametrize("backend", ["sqlite"], indirect=True),
]

QUIET = 1.5  # seconds a NOTIFY would have taken to arrive (it comes right after the 200)


@pytest.fixture
def server(backend: Backend, tmp_path: Path) -> Iterator[RunningServer]:
    running = start_mwi_server(tmp_path, backend)
    yield running
    assert running.stop() == 0, running.log()
    assert "Traceback" not in running.log(), running.log()


def subscribe(
    server: RunningServer,
    cseq: int,
    *,
    to: str = "<sip:6001@[host]>",
    from_tag: str = "phone-tag",
    call_id: str = "mwi-sec-1@127.0.0.1",
    user: str = "6001",
    expires: int = 600,
    authorization: str = "",
) -> str:
    branch_part = re.sub(r"[^A-Za-z0-9-]", "-", call_id)
    lines = [
        f"SUBSCRIBE sip:{user}@{server.target} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:[port];branch=z9hG4bK-sec-{branch_part}-{cseq};rport",
        "Max-Forwards: 70",
        f"From: <sip:{user}@{server.host}>;tag={from_tag}",
        "To: " + to.replace("[host]", server.host),
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} SUBSCRIBE",
        f"Contact: <sip:{user}@127.0.0.1:[port]>",
        "Event: message-summary",
        "Accept: application/simple-message-summary",
        f"Expires: {expires}",
    ]
    if authorization:
        lines.append(f"Authorization: {authorization}")
    return "\n".join(lines) + "\n\n"


def subscribed(server: RunningServer, phone: RawPhone, call_id: str) -> str:
    """A real subscription (challenge, credentials, 200, first NOTIFY); its To tag."""
    phone.send(subscribe(server, 1, call_id=call_id))
    challenge = phone.response(1)
    assert challenge.code == 401
    answer = digest_answer(
        challenge.headers["WWW-Authenticate"],
        "SUBSCRIBE",
        f"sip:6001@{server.target}",
        "6001",
        PASSWORD,
    )
    phone.send(subscribe(server, 2, call_id=call_id, authorization=answer))
    ok = phone.response(2)
    assert ok.code == 200, ok
    notify = phone.notify()
    assert notify is not None and b"Voice-Message: 0/0" in notify.body
    return to_tag(ok)


def test_to_header_saying_tag_in_its_display_name_is_challenged_not_served(
    server: RunningServer,
) -> None:
    """`"tag=" <sip:...>` has no tag: a new subscription, so a digest challenge."""
    with RawPhone((server.host, server.port)) as phone:
        phone.send(subscribe(server, 1, to='"tag=" <sip:1000@[host]>'))
        answer = phone.response(1)
        assert answer.code in (401, 407), answer
        assert phone.notify(QUIET) is None
        assert phone.notifies() == []
    assert "subscribed to MWI" not in server.log()


def test_to_tag_of_no_subscription_gets_481_and_no_notify(server: RunningServer) -> None:
    with RawPhone((server.host, server.port)) as phone:
        phone.send(subscribe(server, 1, to="<sip:6001@[host]>;tag=guessed"))
        assert phone.response(1).code == 481
        assert phone.notify(QUIET) is None


def test_refresh_with_a_foreign_call_id_or_from_tag_is_not_in_dialog(
    server: RunningServer,
) -> None:
    with RawPhone((server.host, server.port)) as phone:
        tag = subscribed(server, phone, "mwi-sec-real@127.0.0.1")
        dialog_to = f"<sip:6001@[host]>;tag={tag}"

        phone.send(subscribe(server, 3, to=dialog_to, call_id="mwi-sec-other@127.0.0.1"))
        assert phone.response(3).code == 481
        phone.send(
            subscribe(server, 4, to=dialog_to, call_id="mwi-sec-real@127.0.0.1", from_tag="x")
        )
        assert phone.response(4).code == 481
        assert phone.notify(QUIET) is None

        # The real refresh is still in dialog: 200 and the counts, without a challenge.
        phone.send(subscribe(server, 5, to=dialog_to, call_id="mwi-sec-real@127.0.0.1"))
        assert phone.response(5).code == 200
        notify = phone.notify()
        assert notify is not None and b"Voice-Message: 0/0" in notify.body


def test_answered_notifies_of_a_live_subscription_log_no_end(server: RunningServer) -> None:
    with RawPhone((server.host, server.port)) as phone:
        tag = subscribed(server, phone, "mwi-sec-live@127.0.0.1")
        phone.send(
            subscribe(
                server, 3, to=f"<sip:6001@[host]>;tag={tag}", call_id="mwi-sec-live@127.0.0.1"
            )
        )
        assert phone.response(3).code == 200
        assert phone.notify() is not None
        assert phone.notify(QUIET) is None
    log = wait_for_log(server, "peer 6001 subscribed to MWI")
    assert "subscription of 6001 ended" not in log, log


def test_notify_answered_481_ends_the_subscription_and_says_so(server: RunningServer) -> None:
    with RawPhone((server.host, server.port), notify_code=481) as phone:
        tag = subscribed(server, phone, "mwi-sec-gone@127.0.0.1")
        wait_for_log(server, "MWI subscription of 6001 ended (481)")
        # Gone: a refresh of it is no longer in dialog.
        phone.send(
            subscribe(
                server, 3, to=f"<sip:6001@[host]>;tag={tag}", call_id="mwi-sec-gone@127.0.0.1"
            )
        )
        assert phone.response(3).code == 481
