"""Datagrams found by bench/soak_fuzz.py that broke the server, fed to the layers they broke.

Each test here failed before its fix (see bench/RESULTS.md, the datagram-fuzz section):
a Via port out of range, a send the socket refuses, a request nobody answers, a raising handler.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import types
from collections.abc import Callable, Iterator

import pytest
import uvloop

from channels.sip.messages import (
    _SHARED_PARSER_EXCEPTIONS,
    make_response,
    response_address,
    stamp_received,
)
from channels.sip.transactions import T1, RequestReceived, TransactionLayer
from channels.sip.transport import UdpTransport

from .test_endpoint_harness import LiveEndpoint, Phone, live_endpoints
from .test_sip_messages import invite_text, parsed_request
from .test_sip_transactions import advance, events

SOURCE = ("127.0.0.1", 40000)


def options_from(via: str) -> bytes:
    return (
        "OPTIONS sip:voicemail@127.0.0.1 SIP/2.0\r\n"
        f"Via: {via}\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:fuzz@127.0.0.1>;tag=f1\r\nTo: <sip:voicemail@127.0.0.1>\r\n"
        "Call-ID: fz-port\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()


@pytest.mark.parametrize(
    "via",
    [
        # The soak's datagram: a flipped byte turned ";rport" into digits of the port.
        "SIP/2.0/UDP 127.0.0.1:559199999999999999999;branch=z9hG4bK-fz1",
        "SIP/2.0/UDP 127.0.0.1:65536;branch=z9hG4bK-fz1",
    ],
)
def test_via_port_no_socket_has_is_answered_at_the_source(via: str) -> None:
    request = parsed_request(invite_text(via=via))
    stamp_received(request, SOURCE)
    assert response_address(request, SOURCE) == SOURCE


def test_a_valid_via_port_is_still_used() -> None:
    request = parsed_request(invite_text(via="SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-fz1"))
    stamp_received(request, SOURCE)
    assert response_address(request, SOURCE) == ("127.0.0.1", 5070)


def test_layer_answers_a_huge_via_port_at_the_source() -> None:
    layer = TransactionLayer()
    via = "SIP/2.0/UDP 127.0.0.1:559199999999999999999;branch=z9hG4bK-fz2"
    layer.receive_datagram(options_from(via), SOURCE, 0.0)
    event = layer.next_event()
    assert isinstance(event, RequestReceived)
    assert event.transaction.reply_to == SOURCE


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_udp_flush_survives_an_address_the_socket_refuses(loop_kind: str) -> None:
    """One unsendable datagram must not drop the others nor the timer that expires them."""

    async def scenario() -> tuple[bytes, float | None, float | None]:
        receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(5)
        transport = UdpTransport(lambda _t: None)
        await transport.start("127.0.0.1", 0)
        try:
            layer = transport.layer
            via = "SIP/2.0/UDP 127.0.0.1:5060;rport;branch=z9hG4bK-fz3"
            layer.receive_datagram(options_from(via), SOURCE, transport.now())
            event = layer.next_event()
            assert isinstance(event, RequestReceived)
            layer.send_raw(b"to nowhere", ("127.0.0.1", 559199999999999999999))
            layer.send_raw(b"to the receiver", receiver.getsockname())
            layer.respond(event.transaction, make_response(event.request, 200), transport.now())
            transport.flush()  # uvloop raised, asyncio closed the socket, before the fix
            assert transport.transport is not None and not transport.transport.is_closing()
            data = await asyncio.get_running_loop().run_in_executor(None, receiver.recv, 100)
            return data, layer.get_timer(), transport._timer_when
        finally:
            transport.close()
            receiver.close()

    loop = uvloop.new_event_loop() if loop_kind == "uvloop" else asyncio.new_event_loop()
    try:
        data, due, scheduled = loop.run_until_complete(asyncio.wait_for(scenario(), 10))
    finally:
        loop.close()
    assert data == b"to the receiver"
    assert due is not None and scheduled == due  # timer J is armed: the transaction expires


# -- a request nobody answers keeps no slot ------------------------------------------------


def test_unanswered_non_invite_transaction_is_forgotten_after_64_t1() -> None:
    layer = TransactionLayer(max_transactions=1)
    via = "SIP/2.0/UDP 127.0.0.1:5060;rport;branch=z9hG4bK-fz4"
    layer.receive_datagram(options_from(via), SOURCE, 0.0)
    (event,) = events(layer)
    assert isinstance(event, RequestReceived)
    assert layer.transaction_count == 1
    advance(layer, 64 * T1 - 0.01)
    assert layer.transaction_count == 1  # the user agent still has its time
    advance(layer, 64 * T1)
    assert layer.transaction_count == 0 and layer.abandoned_count == 1
    # A late answer is dropped, and the freed slot takes a new request.
    layer.respond(event.transaction, make_response(event.request, 200), 40.0)
    assert layer.datagrams_to_send() == []
    via2 = "SIP/2.0/UDP 127.0.0.1:5060;rport;branch=z9hG4bK-fz5"
    layer.receive_datagram(options_from(via2), SOURCE, 41.0)
    assert isinstance(layer.next_event(), RequestReceived)


@pytest.fixture
def live() -> Iterator[Callable[..., LiveEndpoint]]:
    yield from live_endpoints()


def test_a_handler_that_raises_answers_500_and_frees_its_transaction(
    live: Callable[..., LiveEndpoint],
) -> None:
    endpoint = live()

    def broken(transport: object, request: object, tx: object) -> None:
        raise KeyError("a header the handler did not expect")

    endpoint.call_soon(lambda: endpoint.endpoint.handlers.__setitem__("MESSAGE", broken))
    phone = Phone(endpoint)
    try:
        phone.request("MESSAGE", "boom-1", body="hi", content_type="text/plain")
        assert phone.response("boom-1", "MESSAGE").code == 500
        phone.request("OPTIONS", "after-boom")
        assert phone.response("after-boom", "OPTIONS").code == 200
    finally:
        phone.close()


# -- a call whose caller cannot be addressed ----------------------------------------------


@pytest.mark.parametrize("from_value", ["<sip:>;tag=x", '"unclosed;tag=x', "<>;tag=x"])
def test_invite_whose_from_cannot_be_parsed_gets_400_and_starts_no_call(
    live: Callable[..., LiveEndpoint], from_value: str
) -> None:
    """The soak's call from `<sip:>`: its BYE could not be built, so the hangup raised, the
    call was never forgotten (media, table slots, the application) and stop() failed."""
    endpoint = live()
    phone = Phone(endpoint)
    try:
        phone.from_template = from_value
        refused = phone.call("bad-from")
        assert refused.code == 400 and refused.phrase == "Bad From"
        assert endpoint.routed == []
        assert endpoint.call_soon(lambda: endpoint.endpoint.active_calls) == 0
        phone.from_template = "<sip:5551234@{address}>;tag=phone-{call_id}"
        answer = phone.call("good-from")
        assert answer.code == 200
        assert phone.hang_up(answer, "good-from").code == 200
    finally:
        phone.close()


def test_malformed_headers_leave_no_frames_behind() -> None:
    """sipmessage raises the same exception objects for every bad Via, From or Content-Type;
    each raise used to add its frames to that object's traceback, so a flood of bad headers
    kept every frame and its datagram alive (bench/RESULTS.md, the memory of the datagram
    fuzz). The layer now lets them go after each message."""
    layer = TransactionLayer()
    bad_headers = [
        ("Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-a", "Via: SIP/2.0/UDP ,,;;"),
        ("From: <sip:fuzz@127.0.0.1>;tag=f1", "From: <sip:fuzz@127.0.0.1"),
        ("Content-Length: 0", "Content-Type: /\r\nContent-Length: 0"),
    ]

    def frames() -> int:
        gc.collect()
        return sum(isinstance(o, types.FrameType) for o in gc.get_objects())

    def flood(count: int) -> None:
        for n in range(count):
            good, bad = bad_headers[n % len(bad_headers)]
            text = options_from("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-a").decode()
            text = text.replace("Call-ID: fz-port", f"Call-ID: fz-leak-{n}")
            layer.receive_datagram(text.replace(good, bad).encode(), SOURCE, n * 1e-3)
            while layer.next_event() is not None:
                pass

    flood(300)  # warm up: whatever is made once
    before = frames()
    flood(3000)
    assert frames() - before < 100
    for exc in _SHARED_PARSER_EXCEPTIONS:
        assert exc.__traceback__ is None
