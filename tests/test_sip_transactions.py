"""The RFC 3261 transaction layer driven with datagrams and a fake clock (time is a parameter)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sipmessage import Request, Response

from channels.sip.messages import make_response, parse_message, tag_of, top_via
from channels.sip.transactions import (
    T1,
    T2,
    T4,
    AckReceived,
    AckTimeout,
    CancelReceived,
    ClientTimeout,
    Event,
    RequestReceived,
    ResponseReceived,
    ServerState,
    TransactionLayer,
)

Addr = tuple[str, int]
CLIENT: Addr = ("192.0.2.10", 5060)
SDP = b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
_branches = itertools.count(1)


def sip_request(
    method: str,
    *,
    branch: str | None = "z9hG4bKinvite1",
    call_id: str = "call-1@192.0.2.10",
    cseq: int = 1,
    cseq_method: str | None = None,
    from_tag: str = "caller-tag",
    to_tag: str | None = None,
    via_host: str = "192.0.2.10:5060",
    via_params: str = "",
    body: bytes = b"",
) -> bytes:
    """A request as a UA would send it; `branch=None` makes an RFC 2543 Via."""
    branch_param = f";branch={branch}" if branch else ""
    to = "<sip:1234@voicemail.example>" + (f";tag={to_tag}" if to_tag else "")
    head = (
        f"{method} sip:1234@voicemail.example SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {via_host}{branch_param}{via_params}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: Alice <sip:alice@example.com>;tag={from_tag}\r\n"
        f"To: {to}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {cseq_method or method}\r\n"
        "Contact: <sip:alice@192.0.2.10>\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    )
    return head.encode() + body


def invite(**kwargs: object) -> bytes:
    kwargs.setdefault("body", SDP)
    return sip_request("INVITE", **kwargs)  # type: ignore[arg-type]


def ack(**kwargs: object) -> bytes:
    return sip_request("ACK", **kwargs)  # type: ignore[arg-type]


def unique_branch() -> str:
    return f"z9hG4bKfresh{next(_branches)}"


def sent(layer: TransactionLayer) -> list[tuple[Response | Request, Addr]]:
    return [(parse_message(data), addr) for data, addr in layer.datagrams_to_send()]


def sent_codes(layer: TransactionLayer) -> list[int]:
    return [m.code for m, _ in sent(layer) if isinstance(m, Response)]


def events(layer: TransactionLayer) -> list[Event]:
    out = []
    while (event := layer.next_event()) is not None:
        out.append(event)
    return out


def advance(layer: TransactionLayer, until: float) -> list[tuple[float, bytes]]:
    """Fire every timer due up to `until`, at its own deadline; return (time, datagram)."""
    out: list[tuple[float, bytes]] = []
    while (when := layer.get_timer()) is not None and when <= until:
        layer.handle_timer(when)
        out += [(when, data) for data, _ in layer.datagrams_to_send()]
    return out


def gaps(times: list[float]) -> list[float]:
    return [round(b - a, 6) for a, b in itertools.pairwise([0.0, *times])]


def start_invite(layer: TransactionLayer, now: float = 0.0, **kwargs: object) -> RequestReceived:
    layer.receive_datagram(invite(**kwargs), CLIENT, now)
    assert sent_codes(layer) == [100]
    (event,) = events(layer)
    assert isinstance(event, RequestReceived)
    return event


def ok_for(event: RequestReceived, tag: str = "uas-tag") -> Response:
    return make_response(event.request, 200, to_tag=tag, body=SDP, content_type="application/sdp")


# -- INVITE server transaction ---------------------------------------------------------


def test_invite_gets_100_trying_at_once_and_one_request_event() -> None:
    layer = TransactionLayer()
    layer.receive_datagram(invite(), CLIENT, 0.0)
    ((trying, addr),) = sent(layer)
    assert isinstance(trying, Response) and trying.code == 100
    assert addr == CLIENT
    assert tag_of(trying.headers["To"]) is None
    (event,) = events(layer)
    assert isinstance(event, RequestReceived) and event.request.method == "INVITE"


def test_retransmitted_invite_while_proceeding_resends_last_provisional_and_no_event() -> None:
    layer = TransactionLayer()
    event = start_invite(layer)
    layer.receive_datagram(invite(), CLIENT, 0.4)
    assert sent_codes(layer) == [100]
    layer.respond(event.transaction, make_response(event.request, 180, to_tag="uas"), 0.5)
    assert sent_codes(layer) == [180]
    layer.receive_datagram(invite(), CLIENT, 1.5)
    ((ringing, _),) = sent(layer)
    assert isinstance(ringing, Response) and ringing.code == 180
    assert tag_of(ringing.headers["To"]) == "uas"
    assert events(layer) == []


def test_2xx_retransmitted_at_t1_doubling_capped_at_t2_until_ack_then_no_more() -> None:
    layer = TransactionLayer()
    event = start_invite(layer)
    layer.respond(event.transaction, ok_for(event), 0.0)
    assert sent_codes(layer) == [200]
    retransmissions = advance(layer, 20.0)
    assert gaps([t for t, _ in retransmissions]) == [T1, 2 * T1, 4 * T1, T2, T2, T2, T2]
    assert all(parse_message(d).code == 200 for _, d in retransmissions)  # type: ignore[union-attr]

    layer.receive_datagram(ack(branch="z9hG4bKack1", to_tag="uas-tag"), CLIENT, 20.0)
    (acked,) = events(layer)
    assert isinstance(acked, AckReceived) and acked.invite is event.transaction
    assert advance(layer, 100.0) == []
    assert events(layer) == []  # in particular no AckTimeout
    assert layer.transaction_count == 0


def test_ack_for_2xx_needs_same_call_id_cseq_number_and_from_tag() -> None:
    layer = TransactionLayer()
    event = start_invite(layer)
    layer.respond(event.transaction, ok_for(event), 0.0)
    sent(layer)
    for wrong in (
        ack(branch="z9hG4bKa1", call_id="other@x", to_tag="uas-tag"),
        ack(branch="z9hG4bKa2", cseq=2, to_tag="uas-tag"),
        ack(branch="z9hG4bKa3", from_tag="someone-else", to_tag="uas-tag"),
    ):
        layer.receive_datagram(wrong, CLIENT, 0.1)
    assert events(layer) == []
    assert [t for t, _ in advance(layer, 0.5)] == [0.5]  # still retransmitting
    layer.receive_datagram(ack(branch="z9hG4bKa4", to_tag="uas-tag"), CLIENT, 0.6)
    assert [type(e) for e in events(layer)] == [AckReceived]


def test_ack_for_2xx_reusing_the_invite_branch_is_still_matched() -> None:
    layer = TransactionLayer()
    event = start_invite(layer)
    layer.respond(event.transaction, ok_for(event), 0.0)
    sent(layer)
    layer.receive_datagram(ack(to_tag="uas-tag"), CLIENT, 0.2)  # same branch as the INVITE
    assert [type(e) for e in events(layer)] == [AckReceived]
    assert advance(layer, 10.0) == []


def test_retransmitted_ack_for_2xx_gives_no_second_event() -> None:
    layer = TransactionLayer()
    event = start_invite(layer)
    layer.respond(event.transaction, ok_for(event), 0.0)
    layer.receive_datagram(ack(branch="z9hG4bKack", to_tag="uas-tag"), CLIENT, 0.1)
    layer.receive_datagram(ack(branch="z9hG4bKack", to_tag="uas-tag"), CLIENT, 0.2)
    assert [type(e) for e in events(layer)] == [AckReceived]


def test_retransmitted_invite_after_200_gets_the_identical_200_and_no_event() -> None:
    layer = TransactionLayer()
    event = start_invite(layer)
    layer.respond(event.transaction, ok_for(event), 0.0)
    ((first, _),) = layer.datagrams_to_send()
    layer.receive_datagram(invite(), CLIENT, 0.3)
    assert layer.datagrams_to_send() == [(first, CLIENT)]
    assert events(layer) == []


def test_2xx_never_acknowledged_gives_ack_timeout_at_64_t1() -> None:
    layer = TransactionLayer()
    event = start_invite(layer)
    layer.respond(event.transaction, ok_for(event), 0.0)
    advance(layer, 64 * T1 - 0.001)
    assert events(layer) == []
    advance(layer, 64 * T1)
    (timeout,) = events(layer)
    assert isinstance(timeout, AckTimeout) and timeout.invite is event.transaction
    assert advance(layer, 200.0) == []
    assert layer.transaction_count == 0
    layer.receive_datagram(ack(branch="z9hG4bKlate", to_tag="uas-tag"), CLIENT, 40.0)
    assert events(layer) == []  # a late ACK is stray


def test_second_final_response_on_an_answered_invite_is_ignored() -> None:
    layer = TransactionLayer()
    event = start_invite(layer)
    layer.respond(event.transaction, ok_for(event), 0.0)
    layer.respond(event.transaction, make_response(event.request, 486, to_tag="uas-tag"), 0.1)
    assert sent_codes(layer) == [200]


def test_non_2xx_final_retransmitted_until_ack_then_absorbed_and_forgotten() -> None:
    layer = TransactionLayer()
    event = start_invite(layer)
    layer.respond(event.transaction, make_response(event.request, 486, to_tag="uas"), 0.0)
    assert sent_codes(layer) == [486]
    retransmissions = advance(layer, 4.0)
    assert gaps([t for t, _ in retransmissions]) == [T1, 2 * T1, 4 * T1]

    layer.receive_datagram(ack(to_tag="uas"), CLIENT, 4.0)  # the INVITE's branch
    assert event.transaction.state == ServerState.CONFIRMED
    layer.receive_datagram(ack(to_tag="uas"), CLIENT, 4.1)  # retransmitted ACK: absorbed
    layer.receive_datagram(invite(), CLIENT, 4.2)  # late INVITE copy: absorbed
    assert layer.datagrams_to_send() == []
    assert events(layer) == []
    assert advance(layer, 4.0 + T4 - 0.01) == []
    assert layer.transaction_count == 1
    advance(layer, 4.0 + T4)
    assert layer.transaction_count == 0  # timer I: forgotten
    assert advance(layer, 100.0) == []
    assert events(layer) == []


def test_non_2xx_final_never_acknowledged_stops_at_64_t1() -> None:
    layer = TransactionLayer()
    event = start_invite(layer)
    layer.respond(event.transaction, make_response(event.request, 404, to_tag="uas"), 0.0)
    sent(layer)
    times = [t for t, _ in advance(layer, 1000.0)]
    assert max(times) < 64 * T1
    assert layer.transaction_count == 0


def test_rfc2543_invite_without_magic_cookie_is_matched_for_retransmission_and_ack() -> None:
    layer = TransactionLayer()
    event = start_invite(layer, branch=None)
    layer.receive_datagram(invite(branch=None), CLIENT, 0.2)
    assert sent_codes(layer) == [100]
    assert events(layer) == []
    layer.respond(event.transaction, make_response(event.request, 486, to_tag="uas"), 0.3)
    sent(layer)
    layer.receive_datagram(ack(branch=None, to_tag="uas"), CLIENT, 0.4)
    assert event.transaction.state == ServerState.CONFIRMED
    assert advance(layer, 100.0) == []
    assert events(layer) == []


# -- CANCEL ----------------------------------------------------------------------------


@pytest.mark.parametrize("rang", [False, True], ids=["after-100", "after-180"])
def test_cancel_of_proceeding_invite_gets_200_and_487_with_one_to_tag(rang: bool) -> None:
    layer = TransactionLayer()
    event = start_invite(layer)
    if rang:
        layer.respond(event.transaction, make_response(event.request, 180, to_tag="uas"), 0.1)
        sent(layer)
    layer.receive_datagram(sip_request("CANCEL"), CLIENT, 1.0)
    replies = [m for m, _ in sent(layer)]
    assert [(m.code, m.headers["CSeq"]) for m in replies] == [  # type: ignore[union-attr]
        (200, "1 CANCEL"),
        (487, "1 INVITE"),
    ]
    tags = {tag_of(m.headers["To"]) for m in replies}
    assert len(tags) == 1 and None not in tags
    if rang:
        assert tags == {"uas"}
    (cancelled,) = events(layer)
    assert isinstance(cancelled, CancelReceived) and cancelled.invite is event.transaction
    # The user agent's own 487 (or a late 200) on the cancelled INVITE is not sent again.
    layer.respond(event.transaction, make_response(event.request, 487, to_tag="other"), 1.1)
    layer.respond(event.transaction, ok_for(event), 1.2)
    assert layer.datagrams_to_send() == []
    # The 487 is retransmitted until the caller's ACK.
    assert [t for t, _ in advance(layer, 1.5)] == [1.5]
    layer.receive_datagram(ack(to_tag=tags.pop()), CLIENT, 1.6)
    assert advance(layer, 100.0) == []
    assert layer.transaction_count == 0


def test_retransmitted_cancel_gets_the_same_200_and_no_event() -> None:
    layer = TransactionLayer()
    start_invite(layer)
    layer.receive_datagram(sip_request("CANCEL"), CLIENT, 1.0)
    first_200 = layer.datagrams_to_send()[0]
    events(layer)
    layer.receive_datagram(sip_request("CANCEL"), CLIENT, 1.5)
    assert layer.datagrams_to_send() == [first_200]
    assert events(layer) == []


def test_cancel_with_no_matching_invite_gets_481() -> None:
    layer = TransactionLayer()
    layer.receive_datagram(sip_request("CANCEL", branch="z9hG4bKnothing"), CLIENT, 0.0)
    assert sent_codes(layer) == [481]
    assert events(layer) == []


def test_cancel_after_invite_was_answered_gets_200_and_no_event() -> None:
    layer = TransactionLayer()
    event = start_invite(layer)
    layer.respond(event.transaction, ok_for(event, tag="answered"), 0.0)
    sent(layer)
    layer.receive_datagram(sip_request("CANCEL"), CLIENT, 0.2)
    ((reply, _),) = sent(layer)
    assert isinstance(reply, Response) and reply.code == 200
    assert tag_of(reply.headers["To"]) == "answered"
    assert events(layer) == []
    assert event.transaction.state == ServerState.ACCEPTED


# -- non-INVITE server transaction -----------------------------------------------------


def test_non_invite_final_response_resent_on_retransmission_and_forgotten_after_64_t1() -> None:
    layer = TransactionLayer()
    options = sip_request("OPTIONS", branch="z9hG4bKopt")
    layer.receive_datagram(options, CLIENT, 0.0)
    assert layer.datagrams_to_send() == []  # no 100 for non-INVITE
    (event,) = events(layer)
    assert isinstance(event, RequestReceived)
    layer.receive_datagram(options, CLIENT, 0.3)  # retransmission before we answered
    assert layer.datagrams_to_send() == []
    assert events(layer) == []

    layer.respond(event.transaction, make_response(event.request, 200, to_tag="o"), 1.0)
    ((first, _),) = layer.datagrams_to_send()
    layer.receive_datagram(options, CLIENT, 2.0)
    assert layer.datagrams_to_send() == [(first, CLIENT)]
    assert events(layer) == []
    assert advance(layer, 1.0 + 64 * T1 - 0.01) == []  # no retransmission on our own
    assert layer.transaction_count == 1
    advance(layer, 1.0 + 64 * T1)
    assert layer.transaction_count == 0  # timer J
    layer.receive_datagram(options, CLIENT, 40.0)
    assert [type(e) for e in events(layer)] == [RequestReceived]


def test_bye_is_one_event_however_often_it_is_retransmitted() -> None:
    layer = TransactionLayer()
    bye = sip_request("BYE", branch="z9hG4bKbye", cseq=2, to_tag="uas")
    for now in (0.0, 0.5, 1.5):
        layer.receive_datagram(bye, CLIENT, now)
    assert [type(e) for e in events(layer)] == [RequestReceived]


# -- client non-INVITE transaction -----------------------------------------------------


def our_bye(branch: str = "z9hG4bKourbye") -> Request:
    request = parse_message(
        (
            "BYE sip:alice@192.0.2.10 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 198.51.100.1:5060;branch={branch};rport\r\n"
            "Max-Forwards: 70\r\n"
            "From: <sip:1234@voicemail.example>;tag=uas\r\n"
            "To: Alice <sip:alice@example.com>;tag=caller-tag\r\n"
            "Call-ID: call-1@192.0.2.10\r\nCSeq: 5 BYE\r\n\r\n"
        ).encode()
    )
    assert isinstance(request, Request)
    return request


def response_to(request: Request, code: int) -> bytes:
    return bytes(make_response(request, code))


def test_client_request_retransmitted_at_t1_doubling_capped_at_t2() -> None:
    layer = TransactionLayer()
    layer.send_request(our_bye(), CLIENT, 0.0)
    assert len(layer.datagrams_to_send()) == 1
    times = [t for t, _ in advance(layer, 20.0)]
    assert gaps(times) == [T1, 2 * T1, 4 * T1, T2, T2, T2, T2]


def test_client_final_response_reported_once_and_duplicates_absorbed() -> None:
    layer = TransactionLayer()
    bye = our_bye()
    tx = layer.send_request(bye, CLIENT, 0.0)
    layer.datagrams_to_send()
    advance(layer, 1.0)
    layer.receive_datagram(response_to(bye, 200), CLIENT, 1.2)
    layer.receive_datagram(response_to(bye, 200), CLIENT, 1.3)
    (event,) = events(layer)
    assert isinstance(event, ResponseReceived) and event.transaction is tx
    assert event.response.code == 200
    assert advance(layer, 100.0) == []  # no more retransmissions, no timeout
    assert events(layer) == []
    assert layer.transaction_count == 0  # timer K


def test_client_provisional_response_slows_retransmission_to_t2() -> None:
    layer = TransactionLayer()
    bye = our_bye()
    layer.send_request(bye, CLIENT, 0.0)
    layer.datagrams_to_send()
    layer.receive_datagram(response_to(bye, 100), CLIENT, 0.1)
    assert events(layer) == []
    assert gaps([t for t, _ in advance(layer, 13.0)]) == [T1, T2, T2, T2]


def test_client_request_without_response_times_out_at_64_t1() -> None:
    layer = TransactionLayer()
    tx = layer.send_request(our_bye(), CLIENT, 0.0)
    advance(layer, 64 * T1 - 0.001)
    assert events(layer) == []
    advance(layer, 64 * T1)
    (event,) = events(layer)
    assert isinstance(event, ClientTimeout) and event.transaction is tx
    assert advance(layer, 200.0) == []
    assert layer.transaction_count == 0


def test_response_to_an_unknown_branch_is_ignored() -> None:
    layer = TransactionLayer()
    layer.receive_datagram(response_to(our_bye("z9hG4bKnobody"), 200), CLIENT, 0.0)
    assert events(layer) == []
    assert layer.datagrams_to_send() == []


# -- where responses go (RFC 3581) -----------------------------------------------------


def test_responses_go_to_the_source_when_via_has_rport() -> None:
    layer = TransactionLayer()
    nat = ("203.0.113.7", 40000)
    layer.receive_datagram(invite(via_host="10.0.0.5:5060", via_params=";rport"), nat, 0.0)
    ((trying, addr),) = sent(layer)
    assert addr == nat
    via = top_via(trying)
    assert via.parameters["rport"] == "40000"
    assert via.parameters["received"] == "203.0.113.7"


def test_responses_go_to_via_host_and_port_without_rport() -> None:
    layer = TransactionLayer()
    layer.receive_datagram(invite(via_host="192.0.2.10:5070"), ("192.0.2.10", 6000), 0.0)
    ((trying, addr),) = sent(layer)
    assert addr == ("192.0.2.10", 5070)
    assert "received" not in top_via(trying).parameters


def test_received_is_added_when_via_host_differs_from_source() -> None:
    layer = TransactionLayer()
    source = ("198.51.100.2", 5070)
    layer.receive_datagram(invite(via_host="phone.example:5070"), source, 0.0)
    ((trying, addr),) = sent(layer)
    assert addr == source
    assert top_via(trying).parameters["received"] == "198.51.100.2"


# -- malformed input -------------------------------------------------------------------

VALID = invite()


def _without(name: bytes) -> bytes:
    return b"\r\n".join(line for line in VALID.split(b"\r\n") if not line.startswith(name))


def _length(value: str) -> bytes:
    return VALID.replace(
        f"Content-Length: {len(SDP)}".encode(), f"Content-Length: {value}".encode()
    )


MALFORMED: dict[str, tuple[bytes, int | None]] = {
    # name: (datagram, the response code expected back, None for silence)
    "garbage": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" * 20, None),
    "truncated": (VALID[:120], None),
    "no-blank-line": (VALID.split(b"\r\n\r\n")[0], None),
    "missing-via": (_without(b"Via:"), None),
    "missing-call-id": (_without(b"Call-ID:"), None),
    "missing-from": (_without(b"From:"), None),
    "missing-cseq": (_without(b"CSeq:"), None),
    "content-length-too-large": (_length("900"), 400),
    "content-length-negative": (_length("-3"), 400),
    "content-length-text": (_length("ten"), 400),
    "cseq-method-mismatch": (VALID.replace(b"1 INVITE", b"1 OPTIONS"), 400),
    "cseq-not-a-number": (VALID.replace(b"1 INVITE", b"one INVITE"), None),
    "bad-via": (VALID.replace(b"SIP/2.0/UDP 192.0.2.10:5060", b"nonsense"), None),
    "non-utf8": (VALID.replace(b"Alice", b"\xc3\x28lice\xff"), None),
    "bad-ack": (ack(branch="z9hG4bKx").replace(b"1 ACK", b"1 INVITE"), None),
    "response-garbage": (b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n", None),
    "response-bad-code": (b"SIP/2.0 abc OK\r\n\r\n", None),
    "70kb": (invite(body=b"a" * 70_000), 400),
    "only-headers-no-colon": (b"INVITE sip:a@b SIP/2.0\r\nNoColonHere\r\n\r\n", None),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_datagram_never_raises_and_answerable_requests_get_400(name: str) -> None:
    data, expected = MALFORMED[name]
    layer = TransactionLayer()
    layer.receive_datagram(data, CLIENT, 0.0)
    replies = sent(layer)
    assert [m.code for m, _ in replies] == ([expected] if expected else [])  # type: ignore[union-attr]
    if expected:
        assert replies[0][1] == CLIENT
    assert events(layer) == []
    assert layer.malformed_count == 1
    assert layer.transaction_count == 0
    start_invite(layer, now=1.0, branch=unique_branch())  # still works


@pytest.mark.parametrize("data", [b"", b"\r\n", b"\r\n\r\n"], ids=["empty", "crlf", "crlfcrlf"])
def test_empty_datagram_and_crlf_keepalive_are_ignored_silently(data: bytes) -> None:
    layer = TransactionLayer()
    layer.receive_datagram(data, CLIENT, 0.0)
    assert layer.datagrams_to_send() == []
    assert events(layer) == []
    assert layer.malformed_count == 0


def _mutate(data: bytes, operations: list[tuple[int, int, int, bytes]]) -> bytes:
    """Apply (kind, position, length, payload) edits: delete, insert, overwrite, truncate."""
    buffer = bytearray(data)
    for kind, position, length, payload in operations:
        position %= len(buffer) + 1
        if kind == 0:
            del buffer[position : position + length]
        elif kind == 1:
            buffer[position:position] = payload
        elif kind == 2:
            buffer[position : position + len(payload)] = payload
        else:
            del buffer[position:]
        if not buffer:
            break
    return bytes(buffer)


_edits = st.lists(
    st.tuples(
        st.integers(0, 3),
        st.integers(0, 2000),
        st.integers(1, 40),
        st.one_of(
            st.binary(min_size=1, max_size=12),
            st.sampled_from([b"\r\n", b":", b";", b",", b" ", b"\r\n\r\n", b"=", b"<", b"\xff"]),
        ),
    ),
    min_size=1,
    max_size=6,
)
_fuzz_settings = settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def _still_works(layer: TransactionLayer) -> None:
    layer.datagrams_to_send()
    events(layer)
    branch = unique_branch()
    layer.receive_datagram(sip_request("OPTIONS", branch=branch, call_id=branch), CLIENT, 5.0)
    (event,) = events(layer)
    assert isinstance(event, RequestReceived) and event.request.method == "OPTIONS"
    layer.respond(event.transaction, make_response(event.request, 200, to_tag="t"), 5.0)
    assert sent_codes(layer) == [200]


@_fuzz_settings
@given(data=st.binary(max_size=1500))
def test_random_bytes_never_raise_and_the_layer_keeps_working(data: bytes) -> None:
    layer = TransactionLayer()
    layer.receive_datagram(data, CLIENT, 0.0)
    layer.handle_timer(1.0)
    _still_works(layer)


@_fuzz_settings
@given(operations=_edits, base=st.sampled_from([VALID, ack(), sip_request("CANCEL")]))
def test_mutated_requests_never_raise_and_the_layer_keeps_working(
    operations: list[tuple[int, int, int, bytes]], base: bytes
) -> None:
    layer = TransactionLayer()
    layer.receive_datagram(VALID, CLIENT, 0.0)  # an INVITE in progress for mutants to hit
    layer.receive_datagram(_mutate(base, operations), CLIENT, 0.5)
    for event in events(layer):
        if isinstance(event, RequestReceived):
            layer.respond(event.transaction, make_response(event.request, 486, to_tag="x"), 1)
    layer.handle_timer(2.0)
    _still_works(layer)


# -- reliable (stream) transports -------------------------------------------------------


def test_reliable_transport_sends_no_retransmissions_and_answers_the_connection() -> None:
    layer = TransactionLayer(reliable=True)
    source = ("127.0.0.1", 40001)
    text = (
        "BYE sip:1000@127.0.0.1 SIP/2.0\r\n"
        "Via: SIP/2.0/TCP 10.9.9.9:5099;branch=z9hG4bK-tcp-1\r\n"
        "From: <sip:a@10.9.9.9>;tag=a\r\nTo: <sip:1000@127.0.0.1>;tag=b\r\n"
        "Call-ID: tcp-1\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    )
    layer.receive_datagram(text.encode(), source, 0.0)
    event = layer.next_event()
    assert isinstance(event, RequestReceived)
    layer.respond(event.transaction, make_response(event.request, 200), 0.0)
    sent = layer.datagrams_to_send()
    assert [addr for _data, addr in sent] == [source]  # not the Via's 10.9.9.9:5099
    layer.handle_timer(0.0)  # timer J is zero on a stream: the transaction is gone
    assert layer.transaction_count == 0
    layer.handle_timer(100.0)
    assert layer.datagrams_to_send() == []
