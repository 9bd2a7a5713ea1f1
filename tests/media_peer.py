"""A caller's RTP side for media unit tests: a real UDP socket on 127.0.0.1 and packets."""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import Callable

from channels.channel import CallerInfo, Channel
from channels.media import MediaClock, RtpSession
from channels.rtp import G711, RtpPacket
from channels.sdp import NegotiatedAudio

PORTS = (30000, 39998)
_ssrcs = itertools.count(0x5EED1234)


def negotiated(
    port: int,
    address: str = "127.0.0.1",
    *,
    telephone_event: int | None = 101,
    ptime: int = 20,
    direction: str = "sendrecv",
) -> NegotiatedAudio:
    return NegotiatedAudio(
        remote_address=address,
        remote_port=port,
        payload_type=0,
        codec="PCMU",
        telephone_event=telephone_event,
        ptime=ptime,
        direction=direction,
    )


class Peer:
    """One UDP socket sending RTP to a session (PCMU, 20 ms packets)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.sequence = 100
        self.timestamp = 8000
        self.ssrc = next(_ssrcs)  # each peer its own stream

    def send_audio(
        self, session: RtpSession, pcm: bytes = b"\x00\x04" * 160, *, skip_samples: int = 0
    ) -> None:
        """One audio packet; `skip_samples` moves its timestamp on (lost or forged audio)."""
        self.timestamp += skip_samples
        payload = G711("PCMU").encode(pcm)
        packet = RtpPacket(0, self.sequence, self.timestamp, self.ssrc, payload)
        self.sock.sendto(bytes(packet), ("127.0.0.1", session.local_port))
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.timestamp += len(pcm) // 2

    def send_event(self, session: RtpSession, event: int, timestamp: int) -> None:
        payload = bytes([event, 10]) + (160).to_bytes(2, "big")
        packet = RtpPacket(101, self.sequence, timestamp, self.ssrc, payload, marker=True)
        self.sock.sendto(bytes(packet), ("127.0.0.1", session.local_port))
        self.sequence = (self.sequence + 1) & 0xFFFF

    def close(self) -> None:
        self.sock.close()


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait (bounded) for something the event loop is about to do."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


async def open_session(clock: MediaClock, **options: object) -> RtpSession:
    session = RtpSession(clock, **options)  # type: ignore[arg-type]
    await session.open("127.0.0.1", PORTS)
    return session


class NoSignalling:
    """A CallControl for channels without SIP: the tests only exercise the media side."""

    async def answer_call(self) -> None:
        return None

    async def ring(self) -> None:
        return None

    def end_call(self, code: int | None, reason: str) -> None:
        return None


def channel_for(session: RtpSession) -> Channel:
    return Channel(CallerInfo(exten="1000", context="default"), NoSignalling(), session)
