"""End to end against a running endpoint: what it refuses before any work is done.

Dial plan injection (404), an offer our RTP socket cannot reach (488, or nat=comedia),
the call limits and the admission hook (503 with Retry-After) and the transaction table
bound (stateless 503).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterator

import pytest

from channels.sip.endpoint import EndpointConfig
from channels.sip.messages import tag_of

from .test_endpoint_harness import LiveEndpoint, Phone, live_endpoints

pytestmark = pytest.mark.timeout(60)

Live = Callable[..., LiveEndpoint]


@pytest.fixture
def live() -> Iterator[Live]:
    yield from live_endpoints()


# -- dial plan injection ------------------------------------------------------------------


@pytest.mark.parametrize(
    "uri_user",
    ["1001%40secret,", "1000;x", "1000%24%7BEXTEN%7D", "10%2000", "%22quoted%22", "1000%0d"],
)
def test_unsafe_request_uri_user_gets_404_before_the_router(
    live: Live, uri_user: str, caplog: pytest.LogCaptureFixture
) -> None:
    endpoint = live()
    phone = Phone(endpoint)
    try:
        with caplog.at_level(logging.WARNING, logger="channels.sip.endpoint"):
            answer = phone.call("inject-1", uri=f"sip:{uri_user}@127.0.0.1:{endpoint.port}")
        assert answer.code == 404, bytes(answer)
        assert endpoint.routed == []
        assert any("not dial plan safe" in r.getMessage() for r in caplog.records)
        assert phone.call("inject-2").code == 200  # and the server takes the next call
    finally:
        phone.close()


@pytest.mark.parametrize(
    "header",
    [
        "Diversion: <sip:1001%40secret,@pbx>;reason=user-busy",
        "History-Info: <sip:10,01@pbx>;index=1, <sip:1000@pbx;cause=486>;index=1.1",
    ],
)
def test_unsafe_redirect_number_gets_404(live: Live, header: str) -> None:
    endpoint = live()
    phone = Phone(endpoint)
    try:
        answer = phone.call("inject-redirect", user="vm", extra=header + "\r\n")
        assert answer.code == 404, bytes(answer)
        assert endpoint.routed == []
    finally:
        phone.close()


def test_dialable_symbols_reach_the_router(live: Live) -> None:
    endpoint = live()
    phone = Phone(endpoint)
    try:
        answer = phone.call("dialable", user="+1*2%233.a_b-C")
        assert answer.code == 200, bytes(answer)
        assert [info.exten for info in endpoint.routed] == ["+1*2#3.a_b-C"]
    finally:
        phone.close()


# -- an offer in an address family our RTP socket cannot reach ----------------------------


def test_ipv6_offer_on_an_ipv4_call_gets_488_and_the_next_call_is_served(live: Live) -> None:
    endpoint = live()
    phone = Phone(endpoint)
    try:
        answer = phone.call("v6-offer", address="fd00::2")
        assert answer.code == 488, bytes(answer)
        assert answer.headers["Warning"] == '301 - "Incompatible network address formats"'
        assert endpoint.routed == []
        assert phone.call("v4-offer").code == 200
    finally:
        phone.close()


def test_ipv6_reinvite_on_an_ipv4_call_gets_488_and_the_call_goes_on(live: Live) -> None:
    endpoint = live()
    phone = Phone(endpoint)
    try:
        answer = phone.call("v6-reinvite")
        assert answer.code == 200
        to_tag = tag_of(answer.headers["To"]) or ""
        phone.invite("v6-reinvite", address="fd00::2", cseq=2, to_tag=to_tag)
        refused = phone.response("v6-reinvite")
        phone.request("ACK", "v6-reinvite", cseq=2, to_tag=to_tag)
        assert refused.code == 488
        assert refused.headers["Warning"].startswith("301 ")
        phone.request("BYE", "v6-reinvite", cseq=3, to_tag=to_tag)
        assert phone.response("v6-reinvite", "BYE").code == 200
    finally:
        phone.close()


def test_ipv6_offer_with_comedia_gets_rtp_at_its_rtp_source(live: Live) -> None:
    endpoint = live(EndpointConfig(port=0, comedia=True))
    phone = Phone(endpoint)
    try:
        answer = phone.call("v6-comedia", address="fd00::2")
        assert answer.code == 200, bytes(answer)
        assert b"c=IN IP4 127.0.0.1" in answer.body
        port = int(next(line.split()[1] for line in answer.body.decode().splitlines()
                        if line.startswith("m=audio")))  # fmt: skip
        # One packet from our RTP socket shows the endpoint where to send.
        packet = bytes([0x80, 0, 0, 1, 0, 0, 0, 160, 1, 2, 3, 4]) + b"\xff" * 160
        phone.rtp.sendto(packet, ("127.0.0.1", port))
        phone.rtp.settimeout(5)
        data, source = phone.rtp.recvfrom(2048)
        assert data[0] >> 6 == 2 and source == ("127.0.0.1", port)
        assert phone.hang_up(answer, "v6-comedia").code == 200
    finally:
        phone.close()


# -- call limits and the admission hook ---------------------------------------------------


def test_max_calls_refuses_with_503_and_one_log_line_until_a_call_ends(
    live: Live, caplog: pytest.LogCaptureFixture
) -> None:
    endpoint = live(EndpointConfig(port=0, max_calls=1))
    phone = Phone(endpoint)
    try:
        first = phone.call("limit-1")
        assert first.code == 200
        with caplog.at_level(logging.WARNING, logger="channels.sip.endpoint"):
            refused = [phone.call(f"limit-flood-{n}") for n in range(20)]
        assert {answer.code for answer in refused} == {503}
        assert refused[0].headers["Retry-After"].isdigit()
        lines = [r for r in caplog.records if "refused (503)" in r.getMessage()]
        assert len(lines) == 1, [r.getMessage() for r in lines]
        assert "maxcalls=1" in lines[0].getMessage()
        assert phone.hang_up(first, "limit-1").code == 200
        assert phone.call("limit-2").code == 200  # the slot is free again
    finally:
        phone.close()


def test_max_calls_per_ip_counts_each_source_address(live: Live) -> None:
    endpoint = live(EndpointConfig(port=0, max_calls_per_ip=1))
    first, second = Phone(endpoint, "127.0.0.1"), Phone(endpoint, "127.0.0.2")
    try:
        answer = first.call("per-ip-1")
        assert answer.code == 200
        refused = first.call("per-ip-2")
        assert refused.code == 503 and refused.headers.get("Retry-After")
        assert second.call("per-ip-3").code == 200  # another address has its own share
        assert first.hang_up(answer, "per-ip-1").code == 200
        assert first.call("per-ip-4").code == 200
    finally:
        first.close()
        second.close()


def test_refused_and_ended_calls_leave_no_count_behind(live: Live) -> None:
    """A call refused by the router (404) or the SDP (488) does not keep a slot."""

    async def nowhere(info: object) -> None:
        return None

    endpoint = live(EndpointConfig(port=0, max_calls=1, max_calls_per_ip=1), nowhere)
    phone = Phone(endpoint)
    try:
        for n in range(3):
            assert phone.call(f"unrouted-{n}").code == 404
        assert endpoint.call_soon(lambda: endpoint.endpoint.limits.total) == 0
    finally:
        phone.close()


def test_admission_hook_reason_answers_503(live: Live) -> None:
    endpoint = live()
    phone = Phone(endpoint)
    try:
        endpoint.call_soon(lambda: setattr(endpoint.endpoint, "admission", lambda: "spool full"))
        refused = phone.call("admission-1")
        assert refused.code == 503 and refused.headers["Retry-After"].isdigit()
        assert endpoint.routed == []
        endpoint.call_soon(lambda: setattr(endpoint.endpoint, "admission", lambda: None))
        assert phone.call("admission-2").code == 200
    finally:
        phone.close()


# -- the transaction table bound ----------------------------------------------------------


def test_full_transaction_table_answers_stateless_503_and_stays_bounded(live: Live) -> None:
    endpoint = live(EndpointConfig(port=0, max_transactions=5))
    phone = Phone(endpoint)
    try:
        for n in range(5):  # each OPTIONS transaction lives 32 s after its 200
            phone.request("OPTIONS", f"fill-{n}")
            assert phone.response(f"fill-{n}", "OPTIONS").code == 200
        for n in range(50):
            phone.request("OPTIONS", f"over-{n}")
            over = phone.response(f"over-{n}", "OPTIONS")
            assert over.code == 503 and over.headers["Retry-After"].isdigit()
        udp = endpoint.endpoint.udp
        assert udp is not None
        assert endpoint.call_soon(lambda: udp.layer.transaction_count) <= 5
        # A retransmission of an open transaction is still answered from it.
        phone.request("OPTIONS", "fill-0", branch="z9hG4bK-fill-0-OPTIONS-1-1")
        assert phone.response("fill-0", "OPTIONS").code == 200
    finally:
        phone.close()


def test_loopback_alias_is_usable() -> None:
    """127.0.0.2 (used above) is loopback on Linux without configuration."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.2", 0))
