"""A real `SipEndpoint` on 127.0.0.1 in its own event loop thread, and a raw UDP phone.

Endpoint options that sip.conf does not reach yet (the server wires them) are tested by
building the endpoint directly with a tiny router; the phone is a plain socket that sends
exact requests and reads the answers, as any SIP peer would.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future
from typing import Any

import pytest

from channels.channel import CallerInfo, Channel, ChannelHungUp
from channels.sip.endpoint import CallHandler, EndpointConfig, SipEndpoint
from channels.sip.messages import parse_message, tag_of

pytestmark = pytest.mark.timeout(60)

Router = Callable[[CallerInfo], Awaitable[CallHandler | None]]


async def answer_and_wait(channel: Channel) -> None:
    """The application of most tests: answer, play a little, then wait for the BYE."""
    await channel.answer()
    try:
        await channel.play(b"\x10\x00" * 8000)
        await channel.wait(30)
    except ChannelHungUp:
        pass


class LiveEndpoint:
    """The endpoint under test; `routed` lists the CallerInfo of every call routed."""

    def __init__(self, config: EndpointConfig, router: Router | None = None) -> None:
        config.host = config.host or "127.0.0.1"
        self.routed: list[CallerInfo] = []
        self.channels: list[Channel] = []

        async def default_router(info: CallerInfo) -> CallHandler | None:
            return answer_and_wait

        self._router = router or default_router
        self.endpoint = SipEndpoint(config, self._route)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def _route(self, info: CallerInfo) -> CallHandler | None:
        self.routed.append(info)
        handler = await self._router(info)
        if handler is None:
            return None

        async def recorded(channel: Channel) -> None:
            self.channels.append(channel)
            await handler(channel)

        return recorded

    def start(self) -> LiveEndpoint:
        self._thread.start()
        self.run(self.endpoint.start())
        return self

    def run(self, coroutine: Awaitable[Any], timeout: float = 15) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)  # type: ignore[arg-type]

    def call_soon(self, function: Callable[[], Any]) -> Any:
        """Run `function` in the endpoint's thread and return its result."""
        result: Future[Any] = Future()

        def run() -> None:
            try:
                result.set_result(function())
            except Exception as exc:  # noqa: BLE001 - handed to the test
                result.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return result.result(10)

    def stop(self) -> None:
        self.run(self.endpoint.stop(grace=2))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    @property
    def port(self) -> int:
        return self.endpoint.config.port


def live_endpoints() -> Iterator[Callable[..., LiveEndpoint]]:
    """The body of a `live` fixture: `live(config, router)` starts an endpoint that is
    stopped after the test. (Each test module declares the fixture with `yield from`.)"""
    started: list[LiveEndpoint] = []

    def start(config: EndpointConfig | None = None, router: Router | None = None) -> LiveEndpoint:
        endpoint = LiveEndpoint(config or EndpointConfig(port=0), router).start()
        started.append(endpoint)
        return endpoint

    yield start
    for endpoint in started:
        endpoint.stop()


def sdp_offer(rtp_port: int, address: str = "127.0.0.1") -> str:
    family = "IP6" if ":" in address else "IP4"
    return (
        f"v=0\r\no=- 1 1 IN {family} {address}\r\ns=-\r\nc=IN {family} {address}\r\nt=0 0\r\n"
        f"m=audio {rtp_port} RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
    )


class Phone:
    """A raw UDP user agent: one SIP socket and one RTP socket on a loopback address."""

    def __init__(self, endpoint: LiveEndpoint, address: str = "127.0.0.1") -> None:
        self.target = ("127.0.0.1", endpoint.port)
        self.address = address
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind((address, 0))
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind((address, 0))
        self.port = self.sip.getsockname()[1]
        self.rtp_port = self.rtp.getsockname()[1]
        self._count = 0
        # The From header value, formatted with `address` and `call_id`.
        self.from_template = "<sip:5551234@{address}>;tag=phone-{call_id}"
        self.backlog: list[Any] = []

    def close(self) -> None:
        self.sip.close()
        self.rtp.close()

    def request(
        self,
        method: str,
        call_id: str,
        *,
        user: str = "1000",
        uri: str | None = None,
        cseq: int = 1,
        to_tag: str = "",
        branch: str | None = None,
        extra: str = "",
        body: str | bytes = "",
        content_type: str = "application/sdp",
        to_params: str = "",
    ) -> str:
        """Send one request; returns its Via branch."""
        self._count += 1
        branch = branch or f"z9hG4bK-{call_id}-{method}-{cseq}-{self._count}"
        uri = uri or f"sip:{user}@127.0.0.1:{self.target[1]}"
        to = f"<sip:{user}@127.0.0.1>" + (f";tag={to_tag}" if to_tag else "") + to_params
        data = body if isinstance(body, bytes) else body.encode()
        text = (
            f"{method} {uri} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {self.address}:{self.port};branch={branch};rport\r\n"
            f"From: {self.from_template.format(address=self.address, call_id=call_id)}\r\n"
            f"To: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\n"
            f"Contact: <sip:5551234@{self.address}:{self.port}>\r\nMax-Forwards: 70\r\n"
            + extra
            + (f"Content-Type: {content_type}\r\n" if body else "")
            + f"Content-Length: {len(data)}\r\n\r\n"
        )
        self.sip.sendto(text.encode() + data, self.target)
        return branch

    def invite(self, call_id: str, *, address: str | None = None, **kwargs: Any) -> str:
        body = sdp_offer(self.rtp_port, address or self.address)
        return self.request("INVITE", call_id, body=body, **kwargs)

    def response(self, call_id: str, method: str = "INVITE", wait: float = 5) -> Any:
        """The next final response to `method` of `call_id`; others are kept in `backlog`."""
        for index, message in enumerate(self.backlog):
            if _is_final_for(message, call_id, method):
                return self.backlog.pop(index)
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            self.sip.settimeout(left)
            try:
                data = self.sip.recv(65535)
            except TimeoutError:
                break
            message = parse_message(data)
            if _is_final_for(message, call_id, method):
                return message
            if not re.match(r"1\d\d$", str(getattr(message, "code", ""))):
                self.backlog.append(message)
        raise AssertionError(f"no final response to {method} {call_id} within {wait} s")

    def ack(self, response: Any, call_id: str) -> None:
        self.request("ACK", call_id, to_tag=tag_of(response.headers["To"]) or "")

    def call(self, call_id: str, **kwargs: Any) -> Any:
        """INVITE, and ACK whatever final response comes; returns that response."""
        self.invite(call_id, **kwargs)
        answer = self.response(call_id)
        self.ack(answer, call_id)
        return answer

    def hang_up(self, answer: Any, call_id: str) -> Any:
        self.request("BYE", call_id, cseq=2, to_tag=tag_of(answer.headers["To"]) or "")
        return self.response(call_id, "BYE", wait=10)


def _is_final_for(message: Any, call_id: str, method: str) -> bool:
    code = getattr(message, "code", None)
    return (
        code is not None
        and code >= 200
        and message.headers["Call-ID"] == call_id
        and message.headers["CSeq"].split()[-1] == method
    )


@pytest.fixture
def live() -> Iterator[Callable[..., LiveEndpoint]]:
    yield from live_endpoints()


def test_a_call_through_the_harness(live: Callable[..., LiveEndpoint]) -> None:
    endpoint = live()
    phone = Phone(endpoint)
    try:
        answer = phone.call("harness-1")
        assert answer.code == 200, bytes(answer)
        assert phone.hang_up(answer, "harness-1").code == 200
        assert [info.exten for info in endpoint.routed] == ["1000"]
    finally:
        phone.close()
