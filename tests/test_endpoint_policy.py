"""End to end: the authorizer's `CallPolicy` is what the call runs with, and the TCP/TLS
listeners bind where `tcp_host`/`tls_host` say."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sipmessage import Request

from channels.channel import CallerInfo, Channel, ChannelHungUp
from channels.sip.endpoint import CallHandler, CallPolicy, EndpointConfig
from channels.sip.messages import make_response, new_tag, tag_of
from channels.sip.transactions import ServerTransaction
from channels.sip.transport import local_address_toward, parse_bind_address

from .test_endpoint_harness import LiveEndpoint, Phone, live_endpoints
from .test_tls_e2e import self_signed

pytestmark = pytest.mark.timeout(60)

Live = Callable[..., LiveEndpoint]


@pytest.fixture
def live() -> Iterator[Live]:
    yield from live_endpoints()


def authorizing(endpoint: LiveEndpoint, result: CallPolicy | str | None) -> None:
    """Install an authorizer that answers `result` (and refuses with 403 for None)."""
    sip = endpoint.endpoint

    async def authorize(transport: Any, request: Request, tx: ServerTransaction) -> Any:
        if result is None:
            sip.respond(transport, tx, make_response(request, 403, to_tag=new_tag()))
        return result

    endpoint.call_soon(lambda: setattr(sip, "authorize", authorize))


def test_policy_sets_context_language_caller_id_and_media_options(live: Live) -> None:
    endpoint = live(EndpointConfig(port=0, rtp_timeout=60))
    policy = CallPolicy(
        "vip", rtp_timeout=7.5, dtmfmode="rfc2833", language="fr", caller_id=("Reception", "200")
    )
    authorizing(endpoint, policy)
    phone = Phone(endpoint)
    try:
        answer = phone.call("policy-1")
        assert answer.code == 200, bytes(answer)
        (info,) = endpoint.routed
        assert (info.context, info.language) == ("vip", "fr")
        assert (info.caller_id_name, info.caller_id_num) == ("Reception", "200")
        media = endpoint.call_soon(
            lambda: [(c.media.dtmfmode, c.media.rtp_timeout, c.dtmfmode)
                     for c in endpoint.endpoint.calls.values()]
        )  # fmt: skip
        assert media == [("rfc2833", 7.5, "rfc2833")]
        assert phone.hang_up(answer, "policy-1").code == 200
    finally:
        phone.close()


def test_policy_without_rtp_timeout_keeps_the_endpoints(live: Live) -> None:
    endpoint = live(EndpointConfig(port=0, rtp_timeout=60))
    authorizing(endpoint, CallPolicy("default"))
    phone = Phone(endpoint)
    try:
        answer = phone.call("policy-2")
        timeouts = endpoint.call_soon(
            lambda: [c.media.rtp_timeout for c in endpoint.endpoint.calls.values()]
        )
        assert timeouts == [60]
        assert endpoint.routed[0].caller_id_num == "5551234"  # From's, without an override
        phone.hang_up(answer, "policy-2")
    finally:
        phone.close()


def test_plain_context_string_is_still_accepted(live: Live) -> None:
    endpoint = live()
    authorizing(endpoint, "legacy")
    phone = Phone(endpoint)
    try:
        answer = phone.call("policy-3")
        assert answer.code == 200 and endpoint.routed[0].context == "legacy"
        phone.hang_up(answer, "policy-3")
    finally:
        phone.close()


def test_refusing_authorizer_keeps_the_router_out(live: Live) -> None:
    endpoint = live(EndpointConfig(port=0, max_calls=1))
    authorizing(endpoint, None)
    phone = Phone(endpoint)
    try:
        assert phone.call("policy-4").code == 403
        assert phone.call("policy-5").code == 403  # and the refused call freed its slot
        assert endpoint.routed == []
    finally:
        phone.close()


def test_failing_authorizer_answers_500_and_the_next_call_is_served(live: Live) -> None:
    endpoint = live(EndpointConfig(port=0, max_calls=1))
    sip = endpoint.endpoint
    calls = 0

    async def authorize(transport: Any, request: Request, tx: ServerTransaction) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            return CallPolicy("default", dtmfmode="sip-info")  # raises ValueError
        return CallPolicy("default")

    endpoint.call_soon(lambda: setattr(sip, "authorize", authorize))
    phone = Phone(endpoint)
    try:
        assert phone.call("broken-auth").code == 500
        answer = phone.call("fine-auth")
        assert answer.code == 200  # the failed call gave its slot back
        phone.hang_up(answer, "fine-auth")
    finally:
        phone.close()


def test_policy_refuses_an_unknown_dtmfmode() -> None:
    with pytest.raises(ValueError, match="dtmfmode"):
        CallPolicy("default", dtmfmode="sip-info")


# -- SIP INFO digits follow dtmfmode -----------------------------------------------------


def digit_reader(results: list[str], done: threading.Event) -> Callable[..., Any]:
    async def read_one(channel: Channel) -> None:
        await channel.answer()
        try:
            results.append(await channel.read_digits(1, 2.0, 2.0))
            done.set()
            await channel.wait(30)
        except ChannelHungUp:
            done.set()

    async def router(info: CallerInfo) -> CallHandler | None:
        return read_one

    return router


@pytest.mark.parametrize(
    ("dtmfmode", "expected"),
    [("info", "5"), ("auto", "5"), ("shortinfo", "5"), ("rfc2833", ""), ("inband", "")],
)
def test_sip_info_digit_counts_only_for_info_and_auto(
    live: Live, dtmfmode: str, expected: str
) -> None:
    results: list[str] = []
    done = threading.Event()
    endpoint = live(EndpointConfig(port=0), digit_reader(results, done))
    authorizing(endpoint, CallPolicy("default", dtmfmode=dtmfmode))
    phone = Phone(endpoint)
    try:
        answer = phone.call("info-digit")
        assert answer.code == 200
        to_tag = tag_of(answer.headers["To"]) or ""
        phone.request(
            "INFO",
            "info-digit",
            cseq=2,
            to_tag=to_tag,
            body="Signal=5\r\nDuration=160\r\n",
            content_type="application/dtmf-relay",
        )
        assert phone.response("info-digit", "INFO").code == 200  # answered either way
        assert done.wait(10)
        assert results == [expected]
        phone.request("BYE", "info-digit", cseq=3, to_tag=to_tag)
        assert phone.response("info-digit", "BYE").code == 200
    finally:
        phone.close()


# -- where the stream listeners bind -----------------------------------------------------


def listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def test_tcp_and_tls_listeners_bind_their_own_hosts(live: Live, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        tls_port = probe.getsockname()[1]
    config = EndpointConfig(
        port=0, tcp=True, tcp_host="127.0.0.2", tls_context=context, tls_port=tls_port,
        tls_host="127.0.0.3",
    )  # fmt: skip
    endpoint = live(config)
    tcp = endpoint.endpoint.transport_named("TCP")
    tls = endpoint.endpoint.transport_named("TLS")
    assert tcp is not None and tls is not None
    assert (tcp.host, tls.host) == ("127.0.0.2", "127.0.0.3")
    assert listening("127.0.0.2", tcp.port) and not listening("127.0.0.1", tcp.port)
    assert listening("127.0.0.3", tls_port) and not listening("127.0.0.1", tls_port)
    udp = endpoint.endpoint.udp
    assert udp is not None and udp.host == "127.0.0.1"


def test_stream_listeners_default_to_the_udp_host(live: Live) -> None:
    endpoint = live(EndpointConfig(port=0, tcp=True))
    tcp = endpoint.endpoint.transport_named("TCP")
    assert tcp is not None and tcp.host == "127.0.0.1"
    deadline = time.monotonic() + 5
    while not listening("127.0.0.1", tcp.port) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert listening("127.0.0.1", tcp.port)


def test_wildcard_bind_advertises_the_address_toward_the_caller(live: Live) -> None:
    """bindaddr=0.0.0.0 (Asterisk's default): the SDP must not say c=IN IP4 0.0.0.0
    (which means "on hold") nor the Contact 0.0.0.0; both name the address the caller
    reaches us at."""
    endpoint = live(EndpointConfig(host="0.0.0.0", port=0))
    phone = Phone(endpoint)
    try:
        answer = phone.call("wildcard")
        assert answer.code == 200, bytes(answer)
        assert b"c=IN IP4 127.0.0.1\r\n" in answer.body, answer.body
        assert answer.headers["Contact"].startswith("<sip:1000@127.0.0.1:")
        assert phone.hang_up(answer, "wildcard").code == 200
    finally:
        phone.close()


def test_local_address_toward() -> None:
    assert local_address_toward("0.0.0.0", "127.0.0.1") == "127.0.0.1"
    assert local_address_toward("127.0.0.1", "192.0.2.1") == "127.0.0.1"  # specific: kept
    assert local_address_toward("0.0.0.0", "pbx.example") == "0.0.0.0"  # no lookup
    assert local_address_toward("0.0.0.0", "0.0.0.0") == "0.0.0.0"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.2:5070", ("127.0.0.2", 5070)),
        ("0.0.0.0", ("0.0.0.0", None)),
        ("[::1]:5061", ("::1", 5061)),
        ("[::1]", ("::1", None)),
        ("::", ("::", None)),
        ("fd00::2", ("fd00::2", None)),
        ("sip.example:5060", ("sip.example", 5060)),
    ],
)
def test_parse_bind_address(value: str, expected: tuple[str, int | None]) -> None:
    assert parse_bind_address(value) == expected


@pytest.mark.parametrize(
    "value", ["", ":5060", "127.0.0.1:x", "127.0.0.1:0", "[::1]x", "[::1]:99999"]
)
def test_parse_bind_address_refuses(value: str) -> None:
    with pytest.raises(ValueError):
        parse_bind_address(value)
