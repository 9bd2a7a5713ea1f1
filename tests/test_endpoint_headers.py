"""End to end: header values the endpoint parses instead of searching them as strings
(issue 7): the offer's Content-Type (SDP, multipart with SDP, anything else 415), INFO's
media type, Supported tokens of a session timer and From/To tags with quoted names."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from channels.channel import CallerInfo, Channel, ChannelHungUp
from channels.sip.calls import session_timer_headers
from channels.sip.endpoint import CallHandler, EndpointConfig
from channels.sip.messages import parse_message, tag_of

from .test_endpoint_harness import LiveEndpoint, Phone, live_endpoints, sdp_offer

pytestmark = pytest.mark.timeout(60)

Live = Callable[..., LiveEndpoint]


@pytest.fixture
def live() -> Iterator[Live]:
    yield from live_endpoints()


def test_offer_inside_a_multipart_body_is_answered(live: Live) -> None:
    endpoint = live()
    phone = Phone(endpoint)
    try:
        body = (
            b"--b1\r\nContent-Type: application/isup;version=itu-t92+\r\n\r\n\x01\xff\x80\r\n"
            b"--b1\r\nContent-Type: application/sdp\r\n\r\n"
            + sdp_offer(phone.rtp_port).encode()
            + b"\r\n--b1--\r\n"
        )
        phone.request(
            "INVITE", "multipart", body=body, content_type='multipart/mixed;boundary="b1"'
        )
        answer = phone.response("multipart")
        phone.ack(answer, "multipart")
        assert answer.code == 200, bytes(answer)
        assert f"m=audio {phone.rtp_port}".encode() not in answer.body  # our port, not theirs
        assert phone.hang_up(answer, "multipart").code == 200
    finally:
        phone.close()


def test_offer_that_is_not_sdp_gets_415_with_accept(live: Live) -> None:
    endpoint = live()
    phone = Phone(endpoint)
    try:
        phone.request(
            "INVITE", "not-sdp", body=sdp_offer(phone.rtp_port), content_type="text/plain"
        )
        answer = phone.response("not-sdp")
        phone.ack(answer, "not-sdp")
        assert answer.code == 415 and answer.headers["Accept"] == "application/sdp"
        assert endpoint.routed == []
    finally:
        phone.close()


def reading_router(results: list[str], done: threading.Event) -> Callable[..., Any]:
    async def read(channel: Channel) -> None:
        await channel.answer()
        try:
            results.append(await channel.read_digits(2, 3.0, 1.5))
            done.set()
            await channel.wait(30)
        except ChannelHungUp:
            done.set()

    async def router(info: CallerInfo) -> CallHandler | None:
        return read

    return router


def test_info_media_type_is_compared_whole(live: Live) -> None:
    """`application/dtmf-relayx` is not DTMF; `Application/DTMF-Relay; x=y` is."""
    results: list[str] = []
    done = threading.Event()
    endpoint = live(EndpointConfig(port=0), reading_router(results, done))
    phone = Phone(endpoint)
    try:
        answer = phone.call("info-type")
        to_tag = tag_of(answer.headers["To"]) or ""
        for cseq, (kind, digit) in enumerate(
            [("application/dtmf-relayx", "1"), ("Application/DTMF-Relay; x=y", "2"),
             ("application/dtmfish", "3"), ("application/dtmf", "4")], start=2,
        ):  # fmt: skip
            body = f"Signal={digit}\r\nDuration=160\r\n" if "relay" in kind.lower() else digit
            phone.request("INFO", "info-type", cseq=cseq, to_tag=to_tag, body=body,
                          content_type=kind)  # fmt: skip
            assert phone.response("info-type", "INFO").code == 200
        assert done.wait(10)
        assert results == ["24"]
        phone.request("BYE", "info-type", cseq=9, to_tag=to_tag)
        assert phone.response("info-type", "BYE").code == 200
    finally:
        phone.close()


def test_session_timer_require_only_for_the_timer_token() -> None:
    def request(supported: str) -> Any:
        return parse_message(
            (
                "INVITE sip:1000@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKst\r\n"
                "From: <sip:a@h>;tag=1\r\nTo: <sip:1000@h>\r\nCall-ID: st\r\nCSeq: 1 INVITE\r\n"
                f"Session-Expires: 1800;refresher=uac\r\nSupported: {supported}\r\n"
                "Content-Length: 0\r\n\r\n"
            ).encode()
        )

    assert ("Require", "timer") in session_timer_headers(request("100rel, Timer"))
    assert ("Require", "timer") not in session_timer_headers(request("x-timer-ext, timers"))


def test_reinvite_whose_to_has_a_quoted_bracket_is_in_the_dialog(live: Live) -> None:
    """The To tag before a parameter quoting `>` is found: a re-INVITE, not a new call."""
    endpoint = live()
    phone = Phone(endpoint)
    try:
        answer = phone.call("quoted")
        assert answer.code == 200
        to_tag = tag_of(answer.headers["To"]) or ""
        phone.invite("quoted", cseq=2, to_tag=to_tag, to_params=';note=">"')
        again = phone.response("quoted")
        phone.request("ACK", "quoted", cseq=2, to_tag=to_tag)
        assert again.code == 200 and tag_of(again.headers["To"]) == to_tag
        assert b" 2 IN IP4 " in again.body  # the o= version went up: the same session
        assert len(endpoint.routed) == 1
        phone.request("BYE", "quoted", cseq=3, to_tag=to_tag)
        assert phone.response("quoted", "BYE").code == 200
    finally:
        phone.close()
