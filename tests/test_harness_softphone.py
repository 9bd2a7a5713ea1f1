"""The softphone itself, against a raw UDP user agent on 127.0.0.1 that records every packet.

What the menu tests rely on: RFC 4733 events with the right marker, timestamps, durations
and end packets; the gaps between digits; SIP INFO digits; audio pacing; the timeline of
what the far end sent (gaps as silence); BYE from the far end answered with 200.
"""

from __future__ import annotations

import math
import socket
import threading
import time
import warnings
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from . import sipua
from .heard import Timeline, common_words_ratio, loud_spans, rms
from .softphone import Softphone

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

pytestmark = pytest.mark.timeout(60)


def tone(seconds: float, hz: float = 440.0, amplitude: int = 8000) -> bytes:
    count = round(seconds * 8000)
    return array(
        "h", (round(amplitude * math.sin(2 * math.pi * hz * i / 8000)) for i in range(count))
    ).tobytes()


@dataclass
class RawAgent:
    """Answers one INVITE with PCMA + telephone-event 101 and keeps what it receives."""

    host: str = "127.0.0.1"
    sip: socket.socket = field(
        default_factory=lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    )
    rtp: socket.socket = field(
        default_factory=lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    )
    requests: list[sipua.SipMessage] = field(default_factory=list)
    responses: list[sipua.SipMessage] = field(default_factory=list)
    packets: list[tuple[float, sipua.Rtp]] = field(default_factory=list)
    phone_rtp: tuple[str, int] | None = None
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        for sock in (self.sip, self.rtp):
            sock.bind((self.host, 0))
            sock.settimeout(0.05)
        self.port = self.sip.getsockname()[1]
        self.threads = [threading.Thread(target=f, daemon=True) for f in (self._sip, self._rtp)]
        for thread in self.threads:
            thread.start()

    def _sip(self) -> None:
        while not self.stop.is_set():
            try:
                data, source = self.sip.recvfrom(65535)
            except TimeoutError:
                continue
            message = sipua.parse(data)
            if message.is_response:
                self.responses.append(message)
                continue
            self.requests.append(message)
            self.phone_sip = source
            if message.method == "INVITE":
                offer = message.body.decode()
                port = int(offer.split("m=audio ")[1].split()[0])
                self.phone_rtp = (self.host, port)
                answer = (
                    "v=0\r\no=raw 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                    f"m=audio {self.rtp.getsockname()[1]} RTP/AVP 8 101\r\n"
                    "a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
                ).encode()
                self.sip.sendto(sipua.response_to(message, 100, "Trying", None), source)
                response = sipua.response_to(message, 200, "OK", "rawtag")
                head, _, _ = response.partition(b"Content-Length")
                extra = (
                    f"Contact: <sip:raw@{self.host}:{self.port}>\r\n"
                    "Content-Type: application/sdp\r\n"
                )
                self.invite_200 = (
                    head
                    + extra.encode()
                    + f"Content-Length: {len(answer)}\r\n\r\n".encode()
                    + answer
                )
                self.sip.sendto(self.invite_200, source)
            elif message.method in ("BYE", "INFO"):
                self.sip.sendto(sipua.response_to(message, 200, "OK", None), source)

    def _rtp(self) -> None:
        while not self.stop.is_set():
            try:
                data = self.rtp.recv(2048)
            except TimeoutError:
                continue
            packet = sipua.parse_rtp(data)
            if packet is not None:
                self.packets.append((time.monotonic(), packet))

    def send_rtp(self, pcm: bytes, timestamp: int, sequence: int, ssrc: int = 77) -> None:
        assert self.phone_rtp is not None
        for index in range(0, len(pcm), 320):
            payload = audioop.lin2alaw(pcm[index : index + 320], 2)
            packet = sipua.Rtp(
                8, index == 0, sequence + index // 320, timestamp + index // 2, ssrc, payload
            )
            self.rtp.sendto(sipua.build_rtp(packet), self.phone_rtp)

    def bye(self, invite: sipua.SipMessage) -> None:
        headers = [
            ("Via", f"SIP/2.0/UDP {self.host}:{self.port};branch={sipua.new_branch()}"),
            ("From", (invite.header("To") or "") + ";tag=rawtag"),
            ("To", invite.header("From") or ""),
            ("Call-ID", invite.header("Call-ID") or ""),
            ("CSeq", "1 BYE"),
        ]
        contact = sipua.uri_of(invite.header("Contact") or "")
        self.sip.sendto(sipua.build(f"BYE {contact} SIP/2.0", headers), self.phone_sip)

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(2)
        self.sip.close()
        self.rtp.close()


@pytest.fixture
def agent() -> Iterator[RawAgent]:
    raw = RawAgent()
    yield raw
    raw.close()


def events_by_start(agent: RawAgent) -> list[list[sipua.Rtp]]:
    """The telephone-event packets the agent got, one list per event (by timestamp)."""
    events: dict[int, list[sipua.Rtp]] = {}
    for _arrival, packet in agent.packets:
        if packet.payload_type == 101:
            events.setdefault(packet.timestamp, []).append(packet)
    return list(events.values())


def test_rfc4733_digits_with_gaps_then_audio_and_the_far_end_hangs_up(agent: RawAgent) -> None:
    with Softphone(agent) as phone:
        call = phone.call("8500", codecs=("PCMU", "PCMA"))
        assert call.answer is not None and call.answer.payload_type == 8
        assert call.provisional == [100]
        started = time.monotonic()
        call.dtmf("1#9", duration=0.1, gap=[0.1, 0.6, 0.2])
        assert time.monotonic() - started >= 0.1 * 3 + 0.9 - 0.05  # pressed in real time
        call.send_pcm(tone(0.5))
        agent.bye(agent.requests[0])
        call.wait_hangup(timeout=10)
        assert call.ended_by == "server"
    events = events_by_start(agent)
    assert [sipua.EVENT_CODES[d] for d in "1#9"] == [e[0].payload[0] for e in events]
    for packets in events:
        durations = [p.payload[2] << 8 | p.payload[3] for p in packets]
        assert [p.marker for p in packets] == [True] + [False] * (len(packets) - 1)
        assert durations[:5] == [160, 320, 480, 640, 800]  # 100 ms in 20 ms updates
        assert [p.payload[1] & 0x80 for p in packets] == [0] * 5 + [0x80] * 3
        assert durations[5:] == [800, 800, 800]
    starts = [e[0].timestamp for e in events]
    # Each step: the event (5 updates + 3 end packets, 20 ms apart) and its gap.
    assert [b - a for a, b in zip(starts, starts[1:], strict=False)] == [
        (8 + 5) * 160,
        (8 + 30) * 160,
    ]
    audio = [p for _t, p in agent.packets if p.payload_type == 8]
    assert len(audio) == 25 and audio[0].marker and not any(p.marker for p in audio[1:])
    assert audio[0].timestamp >= starts[-1] + (8 + 10) * 160
    assert all(b.timestamp - a.timestamp == 160 for a, b in zip(audio, audio[1:], strict=False))
    sequences = [p.sequence for _t, p in agent.packets]
    assert sequences == list(range(sequences[0], sequences[0] + len(sequences)))
    arrivals = [t for t, p in agent.packets if p.payload_type == 8]
    assert arrivals[-1] - arrivals[0] >= 0.4  # paced, not a burst
    assert len({p.ssrc for _t, p in agent.packets}) == 1
    bye_answers = [r for r in agent.responses if r.method == "BYE"]
    assert [r.status for r in bye_answers] == [200]


def test_info_digits_and_our_bye(agent: RawAgent) -> None:
    with Softphone(agent) as phone:
        call = phone.call("8500")
        call.dtmf("4*", mode="info", gap=0.05)
        assert call.hangup() == 200
        assert call.ended_by == "caller"
    infos = [r for r in agent.requests if r.method == "INFO"]
    assert [r.header("Content-Type") for r in infos] == ["application/dtmf-relay"] * 2
    assert [r.body.decode().split("\r\n")[0] for r in infos] == ["Signal=4", "Signal=*"]
    assert [r.method for r in agent.requests] == ["INVITE", "ACK", "INFO", "INFO", "BYE"]
    ack = agent.requests[1]
    assert ack.start_line == f"ACK sip:raw@127.0.0.1:{agent.port} SIP/2.0"
    assert sipua.tag_of(ack.header("To") or "") == "rawtag"


def test_timeline_of_what_the_far_end_sent(agent: RawAgent) -> None:
    with Softphone(agent) as phone:
        call = phone.call("8500")
        agent.send_rtp(tone(0.4), timestamp=1000, sequence=1)
        # 0.6 s later in the same stream: the timeline keeps the gap as silence.
        agent.send_rtp(tone(0.4, 880), timestamp=1000 + 8000, sequence=21)
        call.wait_heard_silence(0.3, after=0.0, timeout=10)
        heard = call.heard()
        call.hangup()
    spans = loud_spans(heard, min_silence=0.2)
    assert len(spans) == 2, spans
    (a0, a1), (b0, b1) = spans
    assert abs((a1 - a0) - 0.4) < 0.05 and abs((b1 - b0) - 0.4) < 0.05
    assert abs((b0 - a0) - 1.0) < 0.03  # placed by timestamp, not by arrival
    assert rms(call.heard(a0 + 0.45, b0 - 0.05)) == 0


def test_timeline_anchors_new_streams_and_timestamp_wrap() -> None:
    timeline = Timeline()
    loud = b"\x00\x20" * 160
    timeline.add(1.0, ssrc=1, timestamp=2**32 - 160, pcm=loud)
    timeline.add(1.02, ssrc=1, timestamp=0, pcm=loud)  # wrapped: the next 20 ms
    assert timeline.seconds == pytest.approx(1.04)
    timeline.add(3.0, ssrc=2, timestamp=123456, pcm=loud)  # a new source: at its arrival
    assert timeline.seconds == pytest.approx(3.02)
    assert timeline.pcm(1.04, 3.0) == bytes(2 * 15680)
    assert timeline.last_loud == pytest.approx(3.02)


def test_rfc2617_digest_example() -> None:
    challenge = sipua.parse_challenge(
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    value = sipua.digest_authorization(
        challenge, "GET", "/dir/index.html", "Mufasa", "Circle Of Life", cnonce="0a4f113b"
    )
    assert 'response="6629fae49393a05397450978507c4ef1"' in value
    assert 'opaque="5ccc069c403ebaf9f0171e9517f40e41"' in value and "nc=00000001" in value


def test_rtp_parsing_skips_csrc_extension_and_padding() -> None:
    header = bytes([0x80 | 0x20 | 0x10 | 1, 0x80 | 8]) + (7).to_bytes(2, "big")
    header += (160).to_bytes(4, "big") + (99).to_bytes(4, "big") + b"CSRC"
    extension = b"\xbe\xde\x00\x01" + b"EXT!"
    packet = sipua.parse_rtp(header + extension + b"audio" + b"\x00\x00\x03")
    assert packet == sipua.Rtp(8, True, 7, 160, 99, b"audio")
    assert sipua.parse_rtp(bytes([0x80, 200]) + bytes(6)) is None  # RTCP sender report


def test_word_ratio_is_ordered_and_tolerant() -> None:
    assert common_words_ratio("you have 2 new messages", "you have two new messages") == 1.0
    assert common_words_ratio("you have two new messages", "you have to new message") == 0.6
    assert common_words_ratio("new messages you have", "you have two new messages") == 0.5
