"""The asyncio side of RTP: one socket per call, one 20 ms clock for every call.

A per-call pacing task costs about 1.7 times the CPU of one shared clock at 400 calls and
falls behind at 800 (reference/stack.md), so `MediaClock` ticks once for all sessions.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import socket
from collections.abc import Callable

from .inband_dtmf import InbandDtmfDetector
from .rtp import (
    FRAME_BYTES,
    FRAME_SAMPLES,
    G711,
    SILENCE_FRAME,
    DtmfReceiver,
    JitterBuffer,
    ReceiveBuffer,
    RtpCounts,
    RtpError,
    RtpPacket,
    is_rtcp,
    rtp_header,
)
from .sdp import NegotiatedAudio

log = logging.getLogger(__name__)

FRAME_SECONDS = 0.020

# sip.conf dtmfmode values: where a caller's keys come from (shortinfo is info for RTP).
DTMF_MODES = frozenset({"rfc2833", "inband", "info", "shortinfo", "auto"})


def ip_key(text: str) -> str:
    """An address in one spelling, so that the SDP's and the socket's forms compare equal."""
    try:
        ip = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return text.lower()  # a host name
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def is_ip_literal(text: str) -> bool:
    try:
        ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return False
    return True


class MediaClock:
    """Calls `tick()` on every registered session every 20 ms, on an absolute schedule."""

    def __init__(self) -> None:
        self._sessions: set[RtpSession] = set()
        self.rtp = RtpCounts()  # every session's packets, for monitoring
        self._handle: asyncio.TimerHandle | None = None
        self._next = 0.0
        self._ticks = 0
        # Called with each tick's lateness in seconds (the metrics' media clock histogram).
        self.on_lag: Callable[[float], None] | None = None

    def add(self, session: RtpSession) -> None:
        self._sessions.add(session)
        if self._handle is None:
            loop = asyncio.get_running_loop()
            self._next = loop.time() + FRAME_SECONDS
            self._handle = loop.call_at(self._next, self._tick)

    def __contains__(self, session: object) -> bool:
        return session in self._sessions

    def remove(self, session: RtpSession) -> None:
        self._sessions.discard(session)
        if not self._sessions and self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self.on_lag is not None:
            self.on_lag(max(0.0, now - self._next))
        self._ticks += 1
        self._next += FRAME_SECONDS
        if now - self._next > 0.2:  # the loop stalled; resynchronise instead of bursting
            log.warning(
                "media clock %.0f ms late (CPU overloaded?): prompts are being stretched",
                (now - self._next) * 1000,
            )
            self._next = now + FRAME_SECONDS
        # The next tick is booked before any session runs: nothing a session does (not even
        # a BaseException) can stop the clock for the others. remove() cancels it if the
        # last session goes during this tick.
        self._handle = loop.call_at(self._next, self._tick)
        check_timeouts = self._ticks % 50 == 0  # once a second
        for session in list(self._sessions):
            if session.closed:
                self._sessions.discard(session)
                continue
            try:
                session.tick()
                if check_timeouts:
                    session.check_timeout(now)
            except (Exception, asyncio.CancelledError):  # noqa: BLE001 - one broken call must not stop the others
                session.tick_failures += 1
                if session.tick_failures == 1:  # a traceback once, not every 20 ms
                    log.exception("media tick failed (RTP port %s)", session.local_port)
        if not self._sessions and self._handle is not None:
            self._handle.cancel()
            self._handle = None


class RtpSession(asyncio.DatagramProtocol):
    """One call's RTP: plays queued PCM frames, hands received audio and DTMF up."""

    def __init__(
        self,
        clock: MediaClock,
        rtp_timeout: float = 0,
        comedia: bool = False,
        dtmfmode: str = "auto",
    ) -> None:
        if dtmfmode not in DTMF_MODES:
            raise ValueError(f"dtmfmode {dtmfmode!r} is not one of {', '.join(sorted(DTMF_MODES))}")
        self._clock = clock
        # sip.conf dtmfmode of the calling peer: rfc2833, inband, info or auto.
        self.dtmfmode = dtmfmode
        self.rtp_timeout = rtp_timeout  # seconds without RTP before on_timeout; 0 = never
        self.comedia = comedia  # send to where the caller's RTP comes from (nat=comedia)
        self.last_received = 0.0
        self.on_timeout: Callable[[], None] | None = None
        self._frames_per_packet = 1
        self._inband: InbandDtmfDetector | None = None
        self._tick_count = 0
        self.transport: asyncio.DatagramTransport | None = None
        # Kept, not looked up per packet: asyncio.get_running_loop() makes a getpid() system
        # call each time (CPython 3.11): 11 % of the server's samples at 400 calls (py-spy).
        self._loop: asyncio.AbstractEventLoop | None = None
        self.local_port = 0
        self.remote: tuple[str, int] | None = None
        self._codec: G711 | None = None
        self._payload_type = 0
        self._telephone_event: int | None = None
        self._ssrc = random.getrandbits(32)
        self._sequence = random.getrandbits(16)
        self._timestamp = random.getrandbits(32)
        self._marker = True
        # The audio being played and how far: the prompt's own bytes (the sound cache shares
        # them between calls), not a copy cut into frames (230 KB a greeting, at each call).
        self._playing = b""
        self._offset = 0
        self._play_done: asyncio.Future[None] | None = None
        self._dtmf = DtmfReceiver()
        self._buffer = ReceiveBuffer()
        self._jitter = JitterBuffer(counts=clock.rtp)
        # Audio nobody listens to (the greeting plays, no in-band DTMF) is not decoded or
        # ordered; the buffers start afresh when someone listens again.
        self._unheard = False
        # Received audio in order: (pcm, samples lost just before it, to be silence).
        self.on_audio: Callable[[bytes, int], None] | None = None
        self.on_dtmf: Callable[[str], None] | None = None
        self.packets_received = 0
        self.packets_sent = 0
        # Where RTP may come from: the SDP's address (None: any IP, the SDP named a host)
        # and port, or with comedia the first source that sent, latched for the call.
        self._expected: tuple[str | None, int] | None = None
        self._latched: tuple[str, int] | None = None  # as received, to send to
        self._latched_key: tuple[str, int] | None = None  # normalised, to compare
        self._accepted: object = None  # the last source address that passed, as received
        self.packets_dropped = 0  # RTP from a source other than the expected one
        self.send_errors = 0  # sendto or socket errors (logged once per call)
        self.tick_failures = 0  # exceptions out of tick() (logged once by the clock)
        self.closed = False
        self._muted = False  # the caller holds (RFC 3264 6.1): play on, send nothing

    async def open(self, host: str, port_range: tuple[int, int]) -> None:
        """Bind an even port in the range (RTP convention, RTCP would be odd)."""
        loop = asyncio.get_running_loop()
        low, high = port_range
        for _ in range(64):
            port = random.randrange(low, high) & ~1
            try:
                await loop.create_datagram_endpoint(
                    lambda: self,
                    local_addr=(host, port),
                    family=socket.AF_INET6 if ":" in host else socket.AF_INET,
                )
            except OSError:
                continue
            self.local_port = port
            return
        raise OSError(f"no free RTP port in {low}-{high}")

    def configure(self, negotiated: NegotiatedAudio) -> None:
        """Apply the negotiated SDP (the call's INVITE, or a re-INVITE)."""
        self._codec = G711(negotiated.codec)
        self._payload_type = negotiated.payload_type
        self._configure_dtmf(negotiated.telephone_event)
        address, port = negotiated.remote_address, negotiated.remote_port
        unspecified = (
            is_ip_literal(address) and ipaddress.ip_address(ip_key(address)).is_unspecified
        )
        if not unspecified:  # c=0.0.0.0 (hold) does not move where the caller sends from
            self._expected = (ip_key(address) if is_ip_literal(address) else None, port)
            self._accepted = None
        if self.comedia and self._latched is not None:
            self.remote = self._latched  # a re-INVITE does not move the latch
        else:
            self.remote = (address, port)
        self._muted = negotiated.direction in ("sendonly", "inactive") or unspecified
        # The caller's ptime, in whole 20 ms frames (RFC 4566 a=ptime), up to 60 ms.
        self._frames_per_packet = min(max(negotiated.ptime // 20, 1), 3)

    def _configure_dtmf(self, telephone_event: int | None) -> None:
        """dtmfmode: rfc2833 = telephone-event only, inband = tones in the audio only (events
        ignored), info/shortinfo = none on RTP (SIP INFO), auto = events if negotiated, else
        the tones in the audio (a caller that offers no telephone-event sends them so)."""
        mode = self.dtmfmode
        self._telephone_event = telephone_event if mode in ("rfc2833", "auto") else None
        inband = mode == "inband" or (mode == "auto" and telephone_event is None)
        if not inband:
            self._inband = None
        elif self._inband is None:
            self._inband = InbandDtmfDetector()

    def start(self) -> None:
        if self.closed:
            return
        self.last_received = asyncio.get_running_loop().time()
        self._clock.add(self)

    def check_timeout(self, now: float) -> None:
        if self.rtp_timeout and now - self.last_received > self.rtp_timeout:
            self.rtp_timeout = 0  # report once
            if self.on_timeout is not None:
                self.on_timeout()

    def close(self) -> None:
        self.closed = True
        self._clock.remove(self)
        self.stop_playing()
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    # -- sending ------------------------------------------------------------------------

    def play(self, pcm: bytes) -> asyncio.Future[None]:
        """Play audio (the last frame padded with silence); the future resolves when its last
        frame has been sent."""
        self.stop_playing()
        self._playing, self._offset = pcm, 0
        self._play_done = asyncio.get_running_loop().create_future()
        if not pcm:
            self._play_done.set_result(None)
        return self._play_done

    def stop_playing(self) -> None:
        self._playing, self._offset = b"", 0
        if self._play_done is not None and not self._play_done.done():
            self._play_done.set_result(None)
        self._play_done = None

    def tick(self) -> None:
        """One 20 ms step of the shared clock: send a packet every `ptime`."""
        self._tick_count += 1
        if self._tick_count % self._frames_per_packet:
            return
        self._timestamp = (self._timestamp + FRAME_SAMPLES * self._frames_per_packet) & 0xFFFFFFFF
        if self._offset >= len(self._playing):
            self._marker = True
            return
        size = FRAME_BYTES * self._frames_per_packet
        frame = self._playing[self._offset : self._offset + size]
        self._offset += size
        if len(frame) % FRAME_BYTES:  # the end of the audio: silence to a whole frame
            frame += SILENCE_FRAME[: FRAME_BYTES - len(frame) % FRAME_BYTES]
        sendable = self.transport is not None and self.remote is not None
        if sendable and self._codec is not None and not self._muted:
            header = rtp_header(
                self._payload_type, self._sequence, self._timestamp, self._ssrc, self._marker
            )
            try:
                self.transport.sendto(header + self._codec.encode(frame), self.remote)
            except Exception as exc:  # noqa: BLE001 - uvloop raises what asyncio reports
                self._socket_error(exc)
            else:
                self.packets_sent += 1
            self._sequence = (self._sequence + 1) & 0xFFFF
            self._marker = False
        finished = self._offset >= len(self._playing)
        if finished and self._play_done is not None and not self._play_done.done():
            self._play_done.set_result(None)

    # -- receiving ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        self._loop = asyncio.get_running_loop()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if is_rtcp(data) or self._codec is None:
            return
        if addr != self._accepted and not self._source_allowed(addr):
            return
        try:
            packet = RtpPacket.parse(data)
        except RtpError:
            return
        self.packets_received += 1
        self._clock.rtp.received += 1
        if self._loop is not None:
            self.last_received = self._loop.time()
        if packet.payload_type == self._telephone_event:
            digit = self._dtmf.receive(packet)
            if digit is not None and self.on_dtmf is not None:
                self.on_dtmf(digit)
            return
        if packet.payload_type != self._payload_type:
            return
        if self.on_audio is None and self._inband is None:
            self._unheard = True
            return
        if self._unheard:
            self._unheard = False
            self._buffer = ReceiveBuffer()
            self._jitter = JitterBuffer(counts=self._clock.rtp)
        for ordered, pcm in self._jitter.push(packet, self._codec.decode(packet.payload)):
            self._deliver(ordered, pcm)

    def _source_allowed(self, addr: tuple[str, int]) -> bool:
        """RTP only from the SDP's address and port, or (comedia) the first source that sent.

        sipp, our end-to-end peer, sends its RTP from the port its SDP names, so the port
        is checked too. Checked once per new source address; the result is remembered.
        """
        source = (ip_key(addr[0]), addr[1])
        if self.comedia:
            if self._latched is None:
                self._latched = (addr[0], addr[1])
                self._latched_key = source
                self.remote = self._latched
                log.info("RTP port %s: sending to %s:%s, where the caller's RTP comes from",
                         self.local_port, *self._latched)  # fmt: skip
            allowed = source == self._latched_key
        else:
            expected = self._expected
            allowed = (
                expected is not None
                and expected[1] == source[1]
                and expected[0] in (None, source[0])
            )
        if allowed:
            self._accepted = addr
            return True
        self.packets_dropped += 1
        if self.packets_dropped == 1:
            log.warning(
                "RTP port %s: dropped RTP from %s:%s, expected %s; later drops are only counted",
                self.local_port,
                addr[0],
                addr[1],
                self._describe_expected(),
            )
        return False

    def _describe_expected(self) -> str:
        if self.comedia and self._latched is not None:
            return f"{self._latched[0]}:{self._latched[1]} (nat=comedia, latched)"
        if self._expected is None:
            return "nothing (no SDP yet)"
        return f"{self._expected[0] or 'any address'}:{self._expected[1]}"

    def _deliver(self, packet: RtpPacket, pcm: bytes) -> None:
        if self._inband is not None and self.on_dtmf is not None:
            for digit in self._inband.feed(pcm):
                self.on_dtmf(digit)
        gap = self._buffer.place(packet, len(pcm) // 2)
        if gap < 0 or self.on_audio is None:
            return
        self.on_audio(pcm, gap)  # gap: samples lost before this packet

    def flush_received(self) -> None:
        """Hand up what the jitter buffer still holds (a recording is about to end)."""
        for packet, pcm in self._jitter.flush():
            self._deliver(packet, pcm)

    def error_received(self, exc: Exception) -> None:
        self._socket_error(exc)  # asyncio reports a failed sendto here, uvloop raises it

    def connection_lost(self, exc: Exception | None) -> None:
        # The socket is gone (a fatal error, or close): ticks go on consuming frames, so a
        # prompt still ends on time, but nothing is sent any more.
        self.transport = None
        if exc is not None:
            self._socket_error(exc)

    def _socket_error(self, exc: BaseException) -> None:
        """One log line per call, however many packets fail; the rest are counted."""
        self.send_errors += 1
        if self.send_errors == 1:
            remote = f"{self.remote[0]}:{self.remote[1]}" if self.remote else "nowhere"
            log.warning(
                "RTP port %s: socket error sending to %s: %s (later errors only counted)",
                self.local_port,
                remote,
                exc,
            )
