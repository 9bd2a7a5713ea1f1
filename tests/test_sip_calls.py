"""The dialog layer (`SipCall`, `CallState`) without sockets.

The call runs on a real `TransactionLayer` (its answers are read back as datagrams), an
unopened `RtpSession` and transports that are never started; `RecordingHost` is the
endpoint's side of the `DialogHost` protocol and keeps what the call asked of it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
import sys
from typing import Any

import pytest
from sipmessage import Request, Response

from channels.channel import CallerInfo
from channels.media import MediaClock, RtpSession
from channels.sdp import negotiate, parse_sdp
from channels.sip import calls
from channels.sip.calls import CallState, SipCall
from channels.sip.messages import cseq_of, parse_message, tag_of
from channels.sip.transactions import CancelReceived, RequestReceived, TransactionLayer
from channels.sip.transport import SipTransport, StreamTransport, UdpTransport

CALLER = ("192.0.2.10", 5062)
SDP = (
    "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
)


def request_bytes(
    method: str,
    *,
    cseq: int = 1,
    to_tag: str = "",
    branch: str = "z9hG4bKcall1",
    body: str = "",
    extra: str = "",
) -> bytes:
    to = "<sip:1000@voicemail.example>" + (f";tag={to_tag}" if to_tag else "")
    return (
        f"{method} sip:1000@voicemail.example SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.10:5062;branch={branch};rport\r\n"
        'From: "Alice" <sip:alice@example.com>;tag=alice-tag\r\n'
        f"To: {to}\r\nCall-ID: dialog-1@192.0.2.10\r\nCSeq: {cseq} {method}\r\n"
        "Contact: <sip:alice@192.0.2.10:5062;transport=udp>\r\nMax-Forwards: 70\r\n"
        + extra
        + ("Content-Type: application/sdp\r\n" if body else "")
        + f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


class RecordingHost:
    """The endpoint as a call sees it; responses go through the real transaction layer."""

    rtp_host = "127.0.0.1"

    def __init__(self, layer: TransactionLayer) -> None:
        self.layer = layer
        self.requests: list[tuple[Request, tuple[str, int]]] = []
        self.forgotten: list[SipCall] = []

    def respond(self, transport: SipTransport, tx: Any, response: Response) -> None:
        self.layer.respond(tx, response, 0.0)

    def send_request(self, transport: SipTransport, request: Request, destination: Any) -> None:
        self.requests.append((request, destination))

    def contact_for(self, transport: SipTransport, user: str, toward: str | None = None) -> str:
        return f"<sip:{user}@127.0.0.1:5060>"

    def via_for(self, transport: SipTransport, toward: str | None = None) -> str:
        return "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKours;rport"

    def forget(self, call: SipCall) -> None:
        self.forgotten.append(call)


class Dialog:
    """One INVITE received by a layer and the `SipCall` made for it."""

    def __init__(self, transport: SipTransport | None = None, extra: str = "") -> None:
        self.transport = transport or UdpTransport(lambda _t: None)
        self.layer = self.transport.layer
        self.host = RecordingHost(self.layer)
        self.layer.receive_datagram(request_bytes("INVITE", body=SDP, extra=extra), CALLER, 0.0)
        event = self.layer.next_event()
        assert isinstance(event, RequestReceived)
        self.tx = event.transaction
        assert self.sent() == [100]
        negotiated = negotiate(parse_sdp(SDP.encode()))
        self.media = RtpSession(MediaClock())
        self.media.configure(negotiated)
        info = CallerInfo(exten="1000", context="default", call_id="dialog-1@192.0.2.10")
        self.call = SipCall(self.host, self.transport, self.tx, negotiated, self.media, info)
        self.responses: list[Response] = []

    def sent(self) -> list[int]:
        """Status codes the layer sent since the last look (the messages kept in responses)."""
        messages = [parse_message(data) for data, _ in self.layer.datagrams_to_send()]
        found = [m for m in messages if isinstance(m, Response)]
        if hasattr(self, "responses"):
            self.responses += found
        return [m.code for m in found]

    def feed(self, data: bytes) -> Any:
        self.layer.receive_datagram(data, CALLER, 0.1)
        return self.layer.next_event()


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


# -- state transitions ------------------------------------------------------------------


def test_ring_answer_ack_walk_the_states_with_one_to_tag() -> None:
    async def scenario() -> None:
        dialog = Dialog()
        call = dialog.call
        assert call.state == CallState.INCOMING
        await call.ring()
        assert call.state == CallState.RINGING and dialog.sent() == [180]
        await call.ring()  # once only
        assert dialog.sent() == []
        await call.answer_call()
        assert call.state == CallState.ANSWERED and dialog.sent() == [200]
        ringing, ok = dialog.responses
        assert tag_of(ringing.headers["To"]) == tag_of(ok.headers["To"]) == call.local_tag
        assert ok.headers["Contact"] == "<sip:1000@127.0.0.1:5060>"
        assert "INVITE" in ok.headers["Allow"]
        assert ok.headers["Content-Type"] == "application/sdp"
        assert b"m=audio 0 RTP/AVP 0 101" in ok.body  # the unopened session's port
        await call.answer_call()  # answering twice sends nothing
        assert dialog.sent() == []
        call.acknowledged()
        assert call.state == CallState.CONFIRMED
        call.end_call(None, "done")
        assert call.state == CallState.ENDED and dialog.host.forgotten == [call]

    run(scenario())


@pytest.mark.parametrize(("code", "expected"), [(None, 480), (486, 486), (503, 503)])
def test_end_before_answer_sends_the_final_response(code: int | None, expected: int) -> None:
    async def scenario() -> None:
        dialog = Dialog()
        await dialog.call.ring()
        dialog.sent()
        dialog.call.end_call(code, "busy now")
        assert dialog.sent() == [expected]
        final = dialog.responses[-1]
        assert final.headers["Reason"] == f'SIP;cause={expected};text="busy now"'
        assert tag_of(final.headers["To"]) == dialog.call.local_tag
        assert dialog.call.state == CallState.ENDED
        assert dialog.host.requests == []  # no BYE for a call never answered
        dialog.call.end_call(None, "again")
        assert dialog.sent() == []

    run(scenario())


def test_cancel_ends_a_ringing_call_and_the_487_keeps_the_to_tag() -> None:
    async def scenario() -> None:
        dialog = Dialog()
        await dialog.call.ring()
        dialog.sent()
        event = dialog.feed(request_bytes("CANCEL"))
        assert isinstance(event, CancelReceived) and event.invite is dialog.tx
        dialog.call.cancelled()
        assert sorted(dialog.sent()) == [200, 487]
        assert {tag_of(r.headers["To"]) for r in dialog.responses[1:]} == {dialog.call.local_tag}
        assert dialog.call.state == CallState.ENDED
        assert dialog.call.channel.hung_up
        assert dialog.call.channel.hangup_reason == "caller cancelled"

    run(scenario())


def test_cancel_after_the_answer_changes_nothing() -> None:
    async def scenario() -> None:
        dialog = Dialog()
        await dialog.call.answer_call()
        dialog.call.cancelled()
        assert dialog.call.state == CallState.ANSWERED and not dialog.call.channel.hung_up

    run(scenario())


# -- BYE from the caller ----------------------------------------------------------------


def bye_tx(dialog: Dialog) -> Any:
    event = dialog.feed(
        request_bytes("BYE", cseq=2, to_tag=dialog.call.local_tag, branch="z9hG4bKbye")
    )
    assert isinstance(event, RequestReceived)
    return event.transaction


def test_bye_is_answered_after_the_application_finished() -> None:
    async def scenario() -> None:
        dialog = Dialog()
        await dialog.call.answer_call()
        dialog.call.acknowledged()
        dialog.sent()
        dialog.call.bye_received(bye_tx(dialog))
        assert dialog.call.channel.hung_up
        assert dialog.sent() == []  # the application is still storing the message
        dialog.call.application_finished()
        assert dialog.sent() == [200]
        assert cseq_of(dialog.responses[-1]).method == "BYE"
        assert dialog.host.requests == []  # the caller hung up: no BYE of ours
        assert dialog.call.state == CallState.ENDED

    run(scenario())


def test_bye_is_answered_at_the_deadline_if_the_application_hangs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(calls, "BYE_ANSWER_DEADLINE", 0.01)

    async def scenario() -> None:
        dialog = Dialog()
        await dialog.call.answer_call()
        dialog.sent()
        dialog.call.bye_received(bye_tx(dialog))
        await asyncio.sleep(0.1)
        assert dialog.sent() == [200]
        dialog.call.application_finished()
        assert dialog.sent() == []  # answered once

    run(scenario())


def test_bye_for_an_ended_call_is_answered_at_once() -> None:
    async def scenario() -> None:
        dialog = Dialog()
        await dialog.call.answer_call()
        dialog.call.end_call(None, "we hung up")
        dialog.sent()
        dialog.call.bye_received(bye_tx(dialog))
        assert dialog.sent() == [200]

    run(scenario())


# -- re-INVITE ----------------------------------------------------------------------------


def test_reinvite_offer_gives_a_new_answer_version_and_direction() -> None:
    async def scenario() -> None:
        dialog = Dialog()
        await dialog.call.answer_call()
        held = negotiate(parse_sdp((SDP + "a=sendonly\r\n").encode()))
        answer = dialog.call.offer_received(held)
        assert b"o=- " in answer and f" {dialog.call.session_id} 2 IN".encode() in answer
        assert b"a=recvonly" in answer
        assert dialog.call.negotiated is held
        moved = dataclasses.replace(held, remote_address="192.0.2.99", direction="sendrecv")
        assert b"a=sendrecv" in dialog.call.offer_received(moved)
        assert dialog.media.remote == ("192.0.2.99", 40000)
        assert dialog.call.sdp_version == 3

    run(scenario())


def test_unreachable_reoffer_keeps_the_latched_rtp_source() -> None:
    dialog = Dialog()
    dialog.media.remote = ("192.0.2.10", 41000)  # where the caller's RTP came from
    v6 = dataclasses.replace(dialog.call.negotiated, remote_address="fd00::2")
    dialog.call.offer_received(v6, reachable=False)
    assert dialog.media.remote == ("192.0.2.10", 41000)


# -- our BYE ------------------------------------------------------------------------------

ROUTES = "Record-Route: <sip:proxy1.example:5070;lr>\r\nRecord-Route: <sip:192.0.2.50;lr>\r\n"


def test_bye_request_follows_the_dialog() -> None:
    async def scenario() -> None:
        dialog = Dialog(extra=ROUTES)
        call = dialog.call
        await call.answer_call()
        call.acknowledged()
        start = call.local_cseq
        call.end_call(None, "application finished")
        ((bye, destination),) = dialog.host.requests
        assert bye.method == "BYE"
        assert str(bye.uri) == "sip:alice@192.0.2.10:5062;transport=udp"  # the Contact
        assert bye.headers.getlist("Route") == [
            "<sip:proxy1.example:5070;lr>",
            "<sip:192.0.2.50;lr>",
        ]
        assert destination == ("proxy1.example", 5070)  # the first loose router
        assert tag_of(bye.headers["From"]) == call.local_tag
        assert bye.headers["From"].startswith("<sip:1000@voicemail.example>")
        assert bye.headers["To"] == '"Alice" <sip:alice@example.com>;tag=alice-tag'
        assert bye.headers["Call-ID"] == "dialog-1@192.0.2.10"
        cseq = cseq_of(bye)
        assert (cseq.method, cseq.sequence) == ("BYE", start + 1)
        assert bye.headers["Via"].startswith("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK")
        assert bye.headers["Max-Forwards"] == "70"
        assert call.state == CallState.ENDED

    run(scenario())


def test_bye_without_route_set_goes_to_the_invites_source() -> None:
    dialog = Dialog()
    bye, destination = dialog.call.build_bye()
    assert destination == CALLER and bye.headers.getlist("Route") == []
    second, _ = dialog.call.build_bye()
    assert cseq_of(second).sequence == cseq_of(bye).sequence + 1


def test_bye_over_a_closed_tcp_connection_goes_to_the_contact() -> None:
    dialog = Dialog(StreamTransport(lambda _t: None))
    _bye, destination = dialog.call.build_bye()
    assert destination == ("192.0.2.10", 5062)  # not the connection's ephemeral port


def test_bye_over_an_open_tcp_connection_uses_it() -> None:
    transport = StreamTransport(lambda _t: None)
    transport.connections[CALLER] = object()  # type: ignore[assignment]
    dialog = Dialog(transport)
    _bye, destination = dialog.call.build_bye()
    assert destination == CALLER


def test_the_dialog_layer_loads_without_the_endpoint() -> None:
    """No import cycle: calls.py works with the endpoint module never loaded."""
    code = (
        "import sys, channels.sip.calls; "
        "assert 'channels.sip.endpoint' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)
    with open(calls.__file__, encoding="utf-8") as source:
        assert "from .endpoint" not in source.read()  # not even for type checking
