"""MWI: chan_sip's message-summary body, SUBSCRIBE handling and the NOTIFYs a phone receives."""

from __future__ import annotations

import pytest
from sipmessage import Request, Response

from channels.sip.messages import parse_message, serialize, tag_of, top_via
from channels.sip.mwi import (
    SubscribeOutcome,
    Subscription,
    SubscriptionManager,
    SubscriptionState,
    SubscriptionStateError,
    build_notify,
    build_unsolicited_notify,
    header_tag,
    message_summary,
)

PHONE = ("192.0.2.20", 5062)
MAILBOXES = [("1234", "default")]
T0 = 1000.0


def subscribe_text(
    *,
    to_tag: str | None = None,
    cseq: int = 1,
    event: str | None = "message-summary",
    expires: str | None = "3600",
    contact: str | None = "<sip:1234@192.0.2.20:5062>",
    call_id: str = "mwi-1@192.0.2.20",
    extra: str = "",
) -> bytes:
    lines = [
        "SUBSCRIBE sip:asterisk@voicemail.example SIP/2.0",
        f"Via: SIP/2.0/UDP 192.0.2.20:5062;branch=z9hG4bK-sub-{cseq};rport",
        "Max-Forwards: 70",
        "From: <sip:1234@voicemail.example>;tag=phone-tag",
        "To: <sip:asterisk@voicemail.example>" + (f";tag={to_tag}" if to_tag else ""),
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} SUBSCRIBE",
    ]
    if contact is not None:
        lines.append(f"Contact: {contact}")
    if event is not None:
        lines.append(f"Event: {event}")
    if expires is not None:
        lines.append(f"Expires: {expires}")
    lines.extend(line for line in extra.split("\n") if line)
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def subscribe_request(**kwargs: object) -> Request:
    message = parse_message(subscribe_text(**kwargs))  # type: ignore[arg-type]
    assert isinstance(message, Request)
    return message


def sent_response(outcome: SubscribeOutcome, request: Request) -> Response:
    """The response as the phone receives it (serialised and parsed again)."""
    wire = serialize(outcome.response(request, contact="<sip:asterisk@198.51.100.1:5060>"))
    message = parse_message(wire)
    assert isinstance(message, Response)
    return message


def sent_notify(subscription: Subscription, now: float, body: bytes = b"") -> Request:
    body = body or message_summary(1, 2, domain="198.51.100.1")
    notify = build_notify(
        subscription,
        body,
        local_host="198.51.100.1",
        local_port=5060,
        branch="z9hG4bK-notify",
        now=now,
    )
    message = parse_message(serialize(notify))
    assert isinstance(message, Request)
    return message


def new_subscription(
    manager: SubscriptionManager, now: float = T0, **kwargs: object
) -> tuple[Request, SubscribeOutcome]:
    request = subscribe_request(**kwargs)
    outcome = manager.subscribe(request, PHONE, "udp", "1234", MAILBOXES, now)
    return request, outcome


# -- message_summary ---------------------------------------------------------------------


def test_body_is_chan_sips_byte_for_byte() -> None:
    assert message_summary(2, 5, domain="198.51.100.1") == (
        b"Messages-Waiting: yes\r\n"
        b"Message-Account: sip:asterisk@198.51.100.1\r\n"
        b"Voice-Message: 2/5 (0/0)\r\n"
    )


def test_no_new_messages_means_no_lamp() -> None:
    body = message_summary(0, 3, vmexten="*97", domain="pbx.example")
    assert body.startswith(b"Messages-Waiting: no\r\n")
    assert b"Message-Account: sip:*97@pbx.example\r\n" in body
    assert body.endswith(b"Voice-Message: 0/3 (0/0)\r\n")


def test_buggymwi_drops_the_urgent_counts() -> None:
    body = message_summary(1, 0, domain="pbx.example", buggymwi=True)
    assert body.endswith(b"Voice-Message: 1/0\r\n")


@pytest.mark.parametrize(
    ("transport", "port", "account"),
    [
        ("udp", 5060, "sip:asterisk@pbx.example"),
        ("udp", None, "sip:asterisk@pbx.example"),
        ("udp", 5070, "sip:asterisk@pbx.example:5070"),
        ("tcp", 5060, "sip:asterisk@pbx.example;transport=tcp"),
        ("tcp", 5080, "sip:asterisk@pbx.example:5080;transport=tcp"),
        ("tls", 5061, "sip:asterisk@pbx.example;transport=tls"),
        ("tls", 5060, "sip:asterisk@pbx.example:5060;transport=tls"),
    ],
)
def test_message_account_port_only_when_not_standard(
    transport: str, port: int | None, account: str
) -> None:
    body = message_summary(1, 1, domain="pbx.example", port=port, transport=transport)
    assert f"Message-Account: {account}\r\n".encode() in body


def test_ipv6_domain_is_bracketed() -> None:
    body = message_summary(0, 0, domain="2001:db8::1", port=5070)
    assert b"Message-Account: sip:asterisk@[2001:db8::1]:5070\r\n" in body


def test_negative_counts_are_refused() -> None:
    with pytest.raises(ValueError):
        message_summary(-1, 0, domain="pbx.example")


# -- SUBSCRIBE ----------------------------------------------------------------------------


def test_new_subscription_gets_200_with_expires_to_tag_and_a_notify() -> None:
    manager = SubscriptionManager()
    request, outcome = new_subscription(manager)
    response = sent_response(outcome, request)
    assert response.code == 200
    assert response.headers["Expires"] == "3600"
    assert response.headers["Contact"] == "<sip:asterisk@198.51.100.1:5060>"
    sub = outcome.subscription
    assert sub is not None and sub.state == SubscriptionState.ACTIVE
    assert tag_of(response.headers["To"]) == sub.local_tag
    assert sub.expires_at == T0 + 3600
    assert manager.for_mailbox("1234", "default") == [sub]


def test_missing_expires_gets_the_default_and_long_ones_are_shortened() -> None:
    manager = SubscriptionManager(min_expires=60, max_expires=1800, default_expires=900)
    _, outcome = new_subscription(manager, expires=None)
    assert outcome.headers == [("Expires", "900")]
    _, outcome = new_subscription(manager, expires="86400", call_id="other@192.0.2.20")
    assert outcome.headers == [("Expires", "1800")]


@pytest.mark.parametrize("event", ["presence", "dialog", None])
def test_other_event_packages_get_489_with_allow_events(event: str | None) -> None:
    manager = SubscriptionManager()
    request, outcome = new_subscription(manager, event=event)
    response = sent_response(outcome, request)
    assert response.code == 489
    assert response.headers["Allow-Events"] == "message-summary"
    assert tag_of(response.headers["To"])  # a final response to a new request has a To tag
    assert outcome.subscription is None and len(manager) == 0


def test_too_short_expires_gets_423_with_min_expires() -> None:
    manager = SubscriptionManager(min_expires=60)
    request, outcome = new_subscription(manager, expires="30")
    response = sent_response(outcome, request)
    assert response.code == 423
    assert response.headers["Min-Expires"] == "60"
    assert len(manager) == 0


@pytest.mark.parametrize(
    "kwargs",
    [{"expires": "soon"}, {"expires": "-5"}, {"contact": None}, {"contact": "*"}],
)
def test_garbage_subscribe_gets_400(kwargs: dict[str, object]) -> None:
    manager = SubscriptionManager()
    _, outcome = new_subscription(manager, **kwargs)
    assert outcome.code == 400
    assert outcome.subscription is None and len(manager) == 0


def test_peer_without_mailbox_gets_404() -> None:
    manager = SubscriptionManager()
    outcome = manager.subscribe(subscribe_request(), PHONE, "udp", "1234", [], T0)
    assert outcome.code == 404


def test_accept_without_message_summary_gets_406() -> None:
    manager = SubscriptionManager()
    _, outcome = new_subscription(manager, extra="Accept: application/pidf+xml")
    assert outcome.code == 406
    _, outcome = new_subscription(
        manager, extra="Accept: application/simple-message-summary", call_id="b@192.0.2.20"
    )
    assert outcome.code == 200


def test_refresh_in_dialog_extends_the_subscription() -> None:
    manager = SubscriptionManager()
    _, first = new_subscription(manager)
    sub = first.subscription
    assert sub is not None
    refresh = subscribe_request(to_tag=sub.local_tag, cseq=2, expires="600")
    outcome = manager.subscribe(refresh, PHONE, "udp", "1234", MAILBOXES, T0 + 3000)
    response = sent_response(outcome, refresh)
    assert response.code == 200
    assert response.headers["Expires"] == "600"
    assert tag_of(response.headers["To"]) == sub.local_tag
    assert outcome.subscription is sub
    assert sub.expires_at == T0 + 3600
    assert manager.expire(T0 + 3599) == []
    assert len(manager) == 1


def test_refresh_of_an_unknown_dialog_gets_481() -> None:
    manager = SubscriptionManager()
    new_subscription(manager)
    outcome = manager.subscribe(
        subscribe_request(to_tag="nosuchtag", cseq=2), PHONE, "udp", "1234", MAILBOXES, T0
    )
    assert outcome.code == 481
    assert outcome.to_tag is None  # the request already carries one


def test_refresh_with_an_older_cseq_gets_500() -> None:
    manager = SubscriptionManager()
    _, first = new_subscription(manager, cseq=5)
    assert first.subscription is not None
    stale = subscribe_request(to_tag=first.subscription.local_tag, cseq=4)
    assert manager.subscribe(stale, PHONE, "udp", "1234", MAILBOXES, T0).code == 500


def test_refresh_with_new_contact_moves_the_notify_target() -> None:
    manager = SubscriptionManager()
    _, first = new_subscription(manager)
    sub = first.subscription
    assert sub is not None
    refresh = subscribe_request(
        to_tag=sub.local_tag, cseq=2, contact="<sip:1234@192.0.2.99:5070;transport=udp>"
    )
    manager.subscribe(refresh, ("192.0.2.99", 5070), "udp", "1234", MAILBOXES, T0 + 10)
    notify = sent_notify(sub, T0 + 10)
    assert str(notify.uri) == "sip:1234@192.0.2.99:5070;transport=udp"
    assert sub.source == ("192.0.2.99", 5070)


def test_unsubscribe_gets_200_and_a_final_notify_with_reason_timeout() -> None:
    manager = SubscriptionManager()
    _, first = new_subscription(manager)
    sub = first.subscription
    assert sub is not None
    unsubscribe = subscribe_request(to_tag=sub.local_tag, cseq=2, expires="0")
    outcome = manager.subscribe(unsubscribe, PHONE, "udp", "1234", MAILBOXES, T0 + 60)
    assert outcome.code == 200 and outcome.headers == [("Expires", "0")]
    assert outcome.subscription is sub
    assert sub.state == SubscriptionState.TERMINATED
    notify = sent_notify(sub, T0 + 60)
    assert notify.headers["Subscription-State"] == "terminated;reason=timeout"
    assert manager.for_mailbox("1234", "default") == [] and len(manager) == 0
    assert manager.next_expiry() is None


def test_fetch_with_expires_0_gets_one_terminated_notify_and_keeps_nothing() -> None:
    manager = SubscriptionManager()
    request, outcome = new_subscription(manager, expires="0")
    assert sent_response(outcome, request).code == 200
    assert outcome.subscription is not None
    notify = sent_notify(outcome.subscription, T0)
    assert notify.headers["Subscription-State"] == "terminated;reason=timeout"
    assert len(manager) == 0


def test_subscription_not_refreshed_expires_with_a_final_notify() -> None:
    manager = SubscriptionManager()
    _, first = new_subscription(manager, expires="120")
    sub = first.subscription
    assert manager.next_expiry() == T0 + 120
    assert manager.expire(T0 + 119.9) == []
    assert manager.expire(T0 + 120) == [sub]
    assert sub is not None and sub.state == SubscriptionState.TERMINATED
    assert sent_notify(sub, T0 + 120).headers["Subscription-State"] == "terminated;reason=timeout"
    assert manager.expire(T0 + 500) == [] and len(manager) == 0


def test_for_mailbox_finds_only_the_watchers_of_that_mailbox() -> None:
    manager = SubscriptionManager()
    a = manager.subscribe(
        subscribe_request(call_id="a@x"), PHONE, "udp", "1234", [("1234", "default")], T0
    ).subscription
    b = manager.subscribe(
        subscribe_request(call_id="b@x"),
        ("192.0.2.30", 5060),
        "udp",
        "5678",
        [("5678", "default"), ("1234", "default")],
        T0,
    ).subscription
    assert manager.for_mailbox("1234", "default") == [a, b]
    assert manager.for_mailbox("5678", "default") == [b]
    assert manager.for_mailbox("1234", "other") == []


def test_rebooted_phone_subscribing_again_replaces_its_old_subscription() -> None:
    manager = SubscriptionManager()
    _, first = new_subscription(manager, call_id="before-reboot@x")
    _, second = new_subscription(manager, call_id="after-reboot@x")
    assert manager.for_mailbox("1234", "default") == [second.subscription]
    assert first.subscription is not second.subscription


def test_of_peer_follows_every_way_a_subscription_comes_and_goes() -> None:
    """The per-peer index must say what a scan of all subscriptions would."""
    manager = SubscriptionManager()
    _, first = new_subscription(manager, call_id="a@x")
    other = manager.subscribe(
        subscribe_request(call_id="b@x"), ("192.0.2.30", 5060), "udp", "1234", MAILBOXES, T0
    ).subscription
    assert manager.of_peer("1234") == [first.subscription, other] and manager.of_peer("x") == []
    _, again = new_subscription(manager, call_id="c@x")  # same phone again: replaces `first`
    assert manager.of_peer("1234") == [other, again.subscription]
    assert other is not None and again.subscription is not None
    manager.notify_result(other, 481)
    assert manager.of_peer("1234") == [again.subscription]
    manager.expire(T0 + 100_000)
    assert manager.of_peer("1234") == [] and len(manager) == 0


def test_notify_answered_481_or_lost_drops_the_subscription() -> None:
    manager = SubscriptionManager()
    _, outcome = new_subscription(manager, call_id="a@x")
    sub = outcome.subscription
    assert sub is not None
    assert manager.notify_result(sub, 200) is False
    assert manager.for_mailbox("1234", "default") == [sub]
    assert manager.notify_result(sub, 481) is True
    assert manager.for_mailbox("1234", "default") == [] and len(manager) == 0

    _, outcome = new_subscription(manager, call_id="b@x")
    assert outcome.subscription is not None
    assert manager.notify_result(outcome.subscription, None) is True  # timer F fired
    assert len(manager) == 0


def test_terminated_subscription_cannot_come_back() -> None:
    manager = SubscriptionManager()
    _, outcome = new_subscription(manager)
    sub = outcome.subscription
    assert sub is not None
    manager.terminate(sub, "noresource")
    assert sent_notify(sub, T0).headers["Subscription-State"] == "terminated;reason=noresource"
    with pytest.raises(SubscriptionStateError):
        sub.move_to(SubscriptionState.ACTIVE)


# -- NOTIFY ------------------------------------------------------------------------------


def test_in_dialog_notify_has_every_header_a_phone_checks() -> None:
    manager = SubscriptionManager()
    request, outcome = new_subscription(
        manager,
        event="message-summary;id=7",
        extra="Record-Route: <sip:proxy2.example;lr>, <sip:proxy1.example;lr>\n"
        "Record-Route: <sip:proxy0.example;lr>",
    )
    sub = outcome.subscription
    assert sub is not None
    body = message_summary(3, 1, domain="198.51.100.1")
    first = sent_notify(sub, T0 + 10, body)
    second = sent_notify(sub, T0 + 20, body)

    assert first.method == "NOTIFY"
    assert str(first.uri) == "sip:1234@192.0.2.20:5062"
    assert first.headers.getlist("Route") == [
        "<sip:proxy2.example;lr>, <sip:proxy1.example;lr>",
        "<sip:proxy0.example;lr>",
    ]
    assert first.headers["From"] == f"<sip:asterisk@voicemail.example>;tag={sub.local_tag}"
    assert tag_of(first.headers["To"]) == "phone-tag"
    assert first.headers["Call-ID"] == request.headers["Call-ID"]
    assert (first.headers["CSeq"], second.headers["CSeq"]) == ("1 NOTIFY", "2 NOTIFY")
    assert first.headers["Event"] == "message-summary;id=7"
    assert first.headers["Subscription-State"] == "active;expires=3590"
    assert second.headers["Subscription-State"] == "active;expires=3580"
    assert first.headers["Content-Type"] == "application/simple-message-summary"
    assert first.headers["Contact"] == "<sip:asterisk@198.51.100.1:5060>"
    assert first.headers["Max-Forwards"] == "70"
    via = top_via(first)
    assert (via.transport, via.host, via.port) == ("UDP", "198.51.100.1", 5060)
    assert via.parameters["branch"] == "z9hG4bK-notify" and "rport" in via.parameters
    assert first.body == body


def test_notify_over_tcp_says_so_in_via_and_contact() -> None:
    manager = SubscriptionManager()
    request = subscribe_request()
    sub = manager.subscribe(request, PHONE, "TCP", "1234", MAILBOXES, T0).subscription
    assert sub is not None
    notify = sent_notify(sub, T0)
    assert top_via(notify).transport == "TCP"
    assert notify.headers["Contact"].endswith(";transport=tcp>")


def test_unsolicited_notify_is_chan_sips_out_of_dialog_form() -> None:
    """chan_sip's form, plus the Subscription-State res_pjsip_mwi sends (baresip needs it)."""
    body = message_summary(1, 0, domain="198.51.100.1")
    notify = build_unsolicited_notify(
        "sip:1234@192.0.2.20:5062;line=abc",
        body,
        local_host="198.51.100.1",
        local_port=5060,
        branch="z9hG4bK-unsolicited",
        from_user="asterisk",
        call_id="mwi-unsolicited@198.51.100.1",
        tag="as-tag",
    )
    message = parse_message(serialize(notify))
    assert isinstance(message, Request)
    assert str(message.uri) == "sip:1234@192.0.2.20:5062;line=abc"
    assert message.headers["From"] == "<sip:asterisk@198.51.100.1>;tag=as-tag"
    assert message.headers["To"] == "<sip:1234@192.0.2.20:5062;line=abc>"
    assert tag_of(message.headers["To"]) is None
    assert message.headers["CSeq"] == "102 NOTIFY"
    assert message.headers["Event"] == "message-summary"
    assert message.headers["Subscription-State"] == "active"  # as res_pjsip_mwi
    assert message.headers["Content-Type"] == "application/simple-message-summary"
    assert top_via(message).parameters["branch"] == "z9hG4bK-unsolicited"
    assert message.body == body


# -- what counts as in dialog ------------------------------------------------------------


def test_header_tag_is_parsed_not_searched_for() -> None:
    assert header_tag('"tag=" <sip:1000@voicemail.example>') is None
    assert header_tag("<sip:1000@voicemail.example;tag=uri-param>") is None
    assert header_tag('"a;tag=b" <sip:1000@voicemail.example> ; TAG=real') == "real"
    assert header_tag("sip:1000@voicemail.example;tag=bare") == "bare"
    with pytest.raises(ValueError):
        header_tag("<<not an address")


def test_dialog_of_needs_call_id_to_tag_and_from_tag_to_match() -> None:
    manager = SubscriptionManager()
    _, outcome = new_subscription(manager)
    sub = outcome.subscription
    assert sub is not None
    assert manager.dialog_of(subscribe_request(to_tag=sub.local_tag, cseq=2)) is sub
    assert manager.dialog_of(subscribe_request(to_tag="guessed", cseq=2)) is None
    other_call = subscribe_request(to_tag=sub.local_tag, cseq=2, call_id="other@x")
    assert manager.dialog_of(other_call) is None
    other_from = subscribe_request(to_tag=sub.local_tag, cseq=2)
    other_from.headers.set("From", "<sip:1234@voicemail.example>;tag=someone-else")
    assert manager.dialog_of(other_from) is None
    forged = subscribe_request(cseq=2)
    forged.headers.set("To", f'"tag={sub.local_tag}" <sip:asterisk@voicemail.example>')
    assert manager.dialog_of(forged) is None


def test_forged_to_tag_in_the_display_name_is_a_new_subscription() -> None:
    """The manager sees no tag, so this is not a refresh of anything (the endpoint then
    challenges it, see tests/test_sipsec_subscribe_e2e.py)."""
    manager = SubscriptionManager()
    request = subscribe_request()
    request.headers.set("To", '"tag=" <sip:asterisk@voicemail.example>')
    outcome = manager.subscribe(request, PHONE, "udp", "1234", MAILBOXES, T0)
    assert outcome.code == 200 and outcome.to_tag is not None


def test_unparseable_to_gets_400() -> None:
    manager = SubscriptionManager()
    request = subscribe_request()
    request.headers.set("To", "<<garbage")
    assert manager.subscribe(request, PHONE, "udp", "1234", MAILBOXES, T0).code == 400


@pytest.mark.parametrize(
    ("accept", "code"),
    [
        ("application/simple-message-summary;q=0", 406),
        ("application/simple-message-summary; q=0.0, text/plain", 406),
        ("application/simple-message-summary;q=0.5", 200),
        ("text/plain;q=0, application/*", 200),
    ],
)
def test_accept_media_ranges_are_parsed_with_their_q_value(accept: str, code: int) -> None:
    _, outcome = new_subscription(SubscriptionManager(), extra=f"Accept: {accept}")
    assert outcome.code == code


def test_unsolicited_notify_byte_for_byte() -> None:
    body = message_summary(2, 1, domain="198.51.100.1")
    notify = build_unsolicited_notify(
        "sip:1234@192.0.2.20:5062",
        body,
        local_host="198.51.100.1",
        local_port=5060,
        branch="z9hG4bK-b",
        from_user="asterisk",
        call_id="c@198.51.100.1",
        tag="t",
    )
    assert serialize(notify) == (
        b"NOTIFY sip:1234@192.0.2.20:5062 SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 198.51.100.1:5060;branch=z9hG4bK-b;rport\r\n"
        b"Max-Forwards: 70\r\n"
        b"From: <sip:asterisk@198.51.100.1>;tag=t\r\n"
        b"To: <sip:1234@192.0.2.20:5062>\r\n"
        b"Call-ID: c@198.51.100.1\r\n"
        b"CSeq: 102 NOTIFY\r\n"
        b"Contact: <sip:asterisk@198.51.100.1:5060>\r\n"
        b"Event: message-summary\r\n"
        b"Subscription-State: active\r\n"
        b"Content-Type: application/simple-message-summary\r\n"
        b"User-Agent: ARA Voicemail\r\n"
        b"Content-Length: 93\r\n"
        b"\r\n" + body
    )
