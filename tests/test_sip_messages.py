"""Parsing and building SIP messages: RFC 3261 framing rules and the headers of a response."""

from __future__ import annotations

import pytest
from sipmessage import Request, Response

from channels.sip.messages import (
    MessageError,
    header_tokens,
    make_response,
    media_type,
    parse_message,
    response_address,
    sdp_body,
    serialize,
    stamp_received,
    tag_of,
    top_via,
)

SDP = b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"


def invite_text(
    *,
    via: str = "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds",
    headers: str = "",
    content_length: str | None = None,
    body: bytes = SDP,
) -> bytes:
    length = str(len(body)) if content_length is None else content_length
    head = (
        "INVITE sip:1234@voicemail.example SIP/2.0\r\n"
        f"Via: {via}\r\n"
        "Max-Forwards: 70\r\n"
        "From: Alice <sip:alice@example.com>;tag=1928301774\r\n"
        "To: <sip:1234@voicemail.example>\r\n"
        "Call-ID: a84b4c76e66710@192.0.2.10\r\n"
        "CSeq: 314159 INVITE\r\n"
        "Contact: <sip:alice@192.0.2.10>\r\n"
        "Content-Type: application/sdp\r\n"
        f"{headers}"
        f"Content-Length: {length}\r\n"
        "\r\n"
    )
    return head.encode() + body


def parsed_request(data: bytes) -> Request:
    message = parse_message(data)
    assert isinstance(message, Request)
    return message


# -- parse_message ---------------------------------------------------------------------


def test_valid_invite_is_parsed_with_its_body() -> None:
    request = parsed_request(invite_text())
    assert request.method == "INVITE"
    assert request.headers["Call-ID"] == "a84b4c76e66710@192.0.2.10"
    assert request.body == SDP


def test_body_longer_than_content_length_is_truncated() -> None:
    request = parsed_request(invite_text(content_length="10"))
    assert request.body == SDP[:10]


def test_body_shorter_than_content_length_is_an_error_that_keeps_the_request() -> None:
    with pytest.raises(MessageError) as caught:
        parse_message(invite_text(content_length=str(len(SDP) + 1)))
    # The partly parsed request is kept so that it can still be answered 400.
    assert isinstance(caught.value.message, Request)


@pytest.mark.parametrize("length", ["-1", "abc", "1e3", "+5", "5_0", "١٢"])
def test_negative_or_non_numeric_content_length_is_an_error(length: str) -> None:
    with pytest.raises(MessageError, match="Content-Length"):
        parse_message(invite_text(content_length=length))


@pytest.mark.parametrize("name", ["Via", "From", "To", "Call-ID", "CSeq"])
def test_missing_mandatory_header_is_an_error(name: str) -> None:
    lines = invite_text().split(b"\r\n")
    data = b"\r\n".join(line for line in lines if not line.startswith(name.encode() + b":"))
    with pytest.raises(MessageError, match=f"missing {name}"):
        parse_message(data)


def test_empty_call_id_counts_as_missing() -> None:
    data = invite_text().replace(b"Call-ID: a84b4c76e66710@192.0.2.10", b"Call-ID: ")
    with pytest.raises(MessageError, match="missing Call-ID"):
        parse_message(data)


def test_cseq_method_differing_from_request_method_is_an_error() -> None:
    data = invite_text().replace(b"CSeq: 314159 INVITE", b"CSeq: 314159 BYE")
    with pytest.raises(MessageError, match="CSeq method"):
        parse_message(data)


def test_unparseable_cseq_and_via_are_errors() -> None:
    with pytest.raises(MessageError):
        parse_message(invite_text().replace(b"CSeq: 314159 INVITE", b"CSeq: INVITE"))
    with pytest.raises(MessageError):
        parse_message(invite_text(via="not a via"))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xfe\x00garbage",
        b"INVITE sip:1234@voicemail.example SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10",
        b"HELLO WORLD\r\n\r\n",
    ],
    ids=["empty", "garbage", "truncated", "not-sip"],
)
def test_garbage_is_a_message_error_with_nothing_to_answer(data: bytes) -> None:
    with pytest.raises(MessageError) as caught:
        parse_message(data)
    assert caught.value.message is None


def test_non_utf8_header_is_a_message_error() -> None:
    data = invite_text().replace(b"Alice", b"Al\xe9ce")
    with pytest.raises(MessageError):
        parse_message(data)


def test_non_utf8_body_is_kept_as_bytes() -> None:
    body = b"\xff\xfe binary"
    assert parsed_request(invite_text(body=body)).body == body


def test_message_larger_than_64k_is_an_error() -> None:
    data = invite_text(body=b"x" * 70_000)
    with pytest.raises(MessageError, match="too large"):
        parse_message(data)


def test_response_with_impossible_status_code_is_an_error() -> None:
    data = (
        b"SIP/2.0 999 Odd\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 BYE\r\n\r\n"
    )
    with pytest.raises(MessageError, match="status code"):
        parse_message(data)


def test_compact_header_names_are_understood() -> None:
    data = (
        b"OPTIONS sip:1234@voicemail.example SIP/2.0\r\n"
        b"v: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKc1\r\n"
        b"f: <sip:alice@example.com>;tag=9\r\nt: <sip:1234@voicemail.example>\r\n"
        b"i: compact@192.0.2.10\r\nCSeq: 7 OPTIONS\r\nl: 0\r\n\r\n"
    )
    request = parsed_request(data)
    assert request.headers["Call-ID"] == "compact@192.0.2.10"
    assert top_via(request).parameters["branch"] == "z9hG4bKc1"


def test_bare_lf_message_keeps_its_whole_body() -> None:
    body = b"v=0\no=- 1 1 IN IP4 192.0.2.10\ns=-\nc=IN IP4 192.0.2.10\nt=0 0\n"
    data = invite_text(body=body).replace(b"\r\n", b"\n")
    request = parsed_request(data)
    # Only the header section is rewritten: Content-Length still counts the body exactly.
    assert request.body == body


def test_folded_header_and_space_before_colon_are_accepted() -> None:
    data = invite_text().replace(
        b"Call-ID: a84b4c76e66710@192.0.2.10", b"Call-ID :\r\n a84b4c76e66710@192.0.2.10"
    )
    assert parsed_request(data).headers["Call-ID"] == "a84b4c76e66710@192.0.2.10"


def test_leading_crlf_before_start_line_is_ignored() -> None:
    assert parsed_request(b"\r\n\r\n" + invite_text()).method == "INVITE"


# -- building responses ----------------------------------------------------------------


def test_response_copies_via_from_to_call_id_and_cseq() -> None:
    data = invite_text(via="SIP/2.0/UDP p.example;branch=z9hG4bKp, SIP/2.0/UDP 192.0.2.10")
    request = parsed_request(data)
    response = make_response(request, 486)
    assert response.phrase == "Busy Here"
    assert response.headers.getlist("Via") == request.headers.getlist("Via")
    for name in ("From", "To", "Call-ID", "CSeq"):
        assert response.headers[name] == request.headers[name]


def test_to_tag_is_added_to_responses_except_100() -> None:
    request = parsed_request(invite_text())
    assert tag_of(make_response(request, 100, to_tag="abc").headers["To"]) is None
    assert tag_of(make_response(request, 180, to_tag="abc").headers["To"]) == "abc"


def test_existing_to_tag_is_kept() -> None:
    data = invite_text().replace(
        b"To: <sip:1234@voicemail.example>", b"To: <sip:1234@voicemail.example>;tag=mine"
    )
    response = make_response(parsed_request(data), 200, to_tag="other")
    assert tag_of(response.headers["To"]) == "mine"


def test_dialog_creating_response_copies_record_route() -> None:
    routes = "Record-Route: <sip:p1.example;lr>\r\nRecord-Route: <sip:p2.example;lr>\r\n"
    request = parsed_request(invite_text(headers=routes))
    ok = make_response(request, 200, to_tag="t")
    assert ok.headers.getlist("Record-Route") == ["<sip:p1.example;lr>", "<sip:p2.example;lr>"]
    assert make_response(request, 486, to_tag="t").headers.getlist("Record-Route") == []


def test_100_trying_copies_timestamp() -> None:
    request = parsed_request(invite_text(headers="Timestamp: 54.2\r\n"))
    assert make_response(request, 100).headers.get("Timestamp") == "54.2"


def test_serialize_sets_content_length_from_the_body() -> None:
    request = parsed_request(invite_text())
    response = make_response(request, 200, body=b"hello", content_type="text/plain")
    reparsed = parse_message(serialize(response))
    assert isinstance(reparsed, Response)
    assert reparsed.headers["Content-Length"] == "5"
    assert reparsed.body == b"hello"
    assert reparsed.headers["Content-Type"] == "text/plain"


@pytest.mark.parametrize(
    ("value", "tag"),
    [
        ("<sip:a@b>;tag=xyz", "xyz"),
        ("Alice <sip:a@b;transport=udp>;foo=1;TAG=q", "q"),
        ("sip:a@b;tag=plain", "plain"),
        ('"Tag;tag=fake" <sip:a@b>', None),
        ("<sip:a@b;tag=uri-param>", None),
        ('"a" <sip:a@b>;tag=1;x=">"', "1"),  # a quoted `>` after the URI
        ('"a\\"<b>;tag=q" <sip:a@b>;tag=real', "real"),  # an escaped quote in the name
        ("<sip:a@b>;tag", None),
        ("<sip:a@b>;xtag=1;tag = 2 ", "2"),
    ],
)
def test_tag_of_reads_the_header_tag_only(value: str, tag: str | None) -> None:
    assert tag_of(value) == tag


# -- Via: where responses go (RFC 3261 18.2.2, RFC 3581) ------------------------------


def test_response_goes_to_source_when_via_has_rport() -> None:
    request = parsed_request(invite_text(via="SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKn;rport"))
    stamp_received(request, ("203.0.113.7", 40000))
    assert response_address(request, ("203.0.113.7", 40000)) == ("203.0.113.7", 40000)
    via = top_via(request)
    assert via.parameters["rport"] == "40000"
    assert via.parameters["received"] == "203.0.113.7"


def test_response_goes_to_via_host_and_port_without_rport() -> None:
    request = parsed_request(invite_text(via="SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKa"))
    stamp_received(request, ("192.0.2.10", 6000))
    assert response_address(request, ("192.0.2.10", 6000)) == ("192.0.2.10", 5070)
    assert "received" not in top_via(request).parameters


def test_via_without_port_means_5060() -> None:
    request = parsed_request(invite_text(via="SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKa"))
    assert response_address(request, ("192.0.2.10", 6000)) == ("192.0.2.10", 5060)


def test_received_is_added_when_via_host_differs_and_then_used() -> None:
    request = parsed_request(invite_text(via="SIP/2.0/UDP client.example:5070;branch=z9hG4bKa"))
    stamp_received(request, ("198.51.100.2", 5070))
    assert top_via(request).parameters["received"] == "198.51.100.2"
    assert response_address(request, ("198.51.100.2", 5070)) == ("198.51.100.2", 5070)


def test_rport_gets_received_even_when_host_is_the_source() -> None:
    request = parsed_request(invite_text(via="SIP/2.0/UDP 192.0.2.10:5060;rport;branch=z9hG4bKa"))
    stamp_received(request, ("192.0.2.10", 5060))
    assert top_via(request).parameters["received"] == "192.0.2.10"
    assert top_via(request).parameters["rport"] == "5060"


def test_stamping_keeps_branch_and_other_vias_byte_for_byte() -> None:
    via = "SIP/2.0/UDP 10.0.0.5;branch=z9hG4bK!a+b*'c;rport, SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKo"
    request = parsed_request(invite_text(via=via))
    stamp_received(request, ("203.0.113.7", 40000))
    stamped = request.headers.getlist("Via")[0]
    assert stamped == (
        "SIP/2.0/UDP 10.0.0.5;branch=z9hG4bK!a+b*'c;rport=40000;received=203.0.113.7"
        ", SIP/2.0/UDP 10.0.0.9;branch=z9hG4bKo"
    )
    assert top_via(request).parameters["branch"] == "z9hG4bK!a+b*'c"


def test_ipv6_source_is_stamped_and_routable() -> None:
    request = parsed_request(invite_text(via="SIP/2.0/UDP [2001:db8::5];branch=z9hG4bKa"))
    stamp_received(request, ("2001:db8::7", 5060))
    assert response_address(request, ("2001:db8::7", 5060)) == ("2001:db8::7", 5060)
    same = parsed_request(invite_text(via="SIP/2.0/UDP [2001:db8::5];branch=z9hG4bKa"))
    stamp_received(same, ("2001:db8::5", 5060))
    assert "received" not in top_via(same).parameters


# -- header values parsed, not searched ---------------------------------------------------


def test_header_tokens_reads_every_line_as_lower_case_tokens() -> None:
    request = parsed_request(invite_text(headers="Supported: Timer, 100rel\r\nk: path\r\n"))
    assert header_tokens(request, "Supported") == ["timer", "100rel", "path"]
    assert header_tokens(request, "Require") == []


def test_media_type_drops_parameters_and_case() -> None:
    request = parsed_request(invite_text().replace(
        b"application/sdp", b"Application/DTMF-Relay ; charset=utf-8"))  # fmt: skip
    assert media_type(request) == "application/dtmf-relay"


MULTIPART = (
    b"--unique-boundary-1\r\nContent-Type: application/isup;version=itu-t92+\r\n"
    b"Content-Disposition: signal;handling=optional\r\n\r\n\x01\x00\xff\x02\r\n"
    b"--unique-boundary-1\r\nContent-Type: Application/SDP\r\n\r\n" + SDP + b"\r\n"
    b"--unique-boundary-1--\r\n"
)


def with_body(content_type: str, body: bytes) -> Request:
    data = invite_text(body=body).replace(b"application/sdp", content_type.encode())
    return parsed_request(data)


def test_sdp_body_of_plain_and_multipart_bodies() -> None:
    assert sdp_body(parsed_request(invite_text())) == SDP
    assert sdp_body(with_body('multipart/mixed; boundary="unique-boundary-1"', MULTIPART)) == SDP
    assert sdp_body(with_body("multipart/mixed;boundary=unique-boundary-1", MULTIPART)) == SDP


def test_sdp_body_is_none_without_sdp() -> None:
    assert sdp_body(with_body("text/plain", b"hello")) is None
    assert sdp_body(with_body("multipart/mixed", MULTIPART)) is None  # no boundary
    assert sdp_body(with_body("multipart/mixed;boundary=other", MULTIPART)) is None
