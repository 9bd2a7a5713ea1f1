"""Diversion and History-Info: whose mailbox a forwarded call is for, and which greeting."""

from __future__ import annotations

from channels.sip.messages import parse_message
from channels.sip.redirect import redirect_of


def invite(*headers: str) -> object:
    text = (
        "INVITE sip:vm@127.0.0.1 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK-1\r\n"
        "From: <sip:5551234@10.0.0.5>;tag=a\r\nTo: <sip:vm@127.0.0.1>\r\n"
        "Call-ID: c1\r\nCSeq: 1 INVITE\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n"
    )
    return parse_message(text.encode())


def test_first_diversion_entry_gives_mailbox_and_busy_greeting() -> None:
    request = invite(
        'Diversion: "Alice" <sip:1000@pbx.example.com>;reason=user-busy;counter=1',
        "Diversion: <sip:2000@pbx.example.com>;reason=no-answer",
    )
    redirect = redirect_of(request)
    assert redirect is not None
    assert (redirect.number, redirect.reason, redirect.greeting) == ("1000", "user-busy", "busy")


def test_diversion_no_answer_and_unknown_use_the_unavailable_greeting() -> None:
    for reason in ("no-answer", '"unavailable"', "unconditional"):
        redirect = redirect_of(invite(f"Diversion: <sip:1000@pbx>;reason={reason}"))
        assert redirect is not None and redirect.greeting == "unavail"
    bare = redirect_of(invite("Diversion: <sip:1000@pbx>"))
    assert bare is not None and (bare.reason, bare.greeting) == ("unknown", "unavail")


def test_history_info_first_entry_with_rfc4458_cause() -> None:
    request = invite("History-Info: <sip:1000@pbx>;index=1, <sip:vm@127.0.0.1;cause=486>;index=1.1")
    redirect = redirect_of(request)
    assert redirect is not None and (redirect.number, redirect.greeting) == ("1000", "busy")


def test_history_info_with_reason_uri_header() -> None:
    request = invite(
        "History-Info: <sip:1000@pbx?Reason=SIP%3Bcause%3D408>;index=1",
        "History-Info: <sip:vm@127.0.0.1;cause=408>;index=1.1",
    )
    redirect = redirect_of(request)
    assert redirect is not None and (redirect.number, redirect.reason) == ("1000", "no-answer")


def test_plain_call_has_no_redirect_and_garbage_is_ignored() -> None:
    assert redirect_of(invite()) is None
    assert redirect_of(invite("Diversion: not an address")) is None


def test_diversion_reason_parameter_name_is_case_insensitive() -> None:
    redirect = redirect_of(invite("Diversion: <sip:1000@pbx>;Reason=user-busy;counter=1"))
    assert redirect is not None and (redirect.reason, redirect.greeting) == ("user-busy", "busy")


def test_history_info_display_name_with_angle_brackets_is_not_a_uri() -> None:
    request = invite(
        'History-Info: "Sales <sip:9999@pbx>, desk" <sip:1000@pbx>;index=1, '
        "<sip:vm@127.0.0.1;cause=486>;index=1.1"
    )
    redirect = redirect_of(request)
    assert redirect is not None and (redirect.number, redirect.reason) == ("1000", "user-busy")


def test_history_info_cause_is_a_whole_parameter_name() -> None:
    request = invite(
        "History-Info: <sip:1000@pbx>;index=1, <sip:vm@127.0.0.1;x-because=486>;index=1.1"
    )
    redirect = redirect_of(request)
    assert redirect is not None and redirect.reason == "unknown"
