"""Callers who check their voicemail, for `bench.retrievals`: SIP, RTP and RFC 4733 keys from
one thread on plain sockets.

Each session calls VoiceMailMain, waits for each prompt to end (the server silent for
`QUIET` s), then keys what a mailbox owner keys: the mailbox and `#`, the PIN and `#`, `1`
(the first new message, heard to its end), `6` (the next, heard to its end) and `5` (that one
again, heard for `REPLAY_HOLD` s), then BYE. The messages are tones the generator knows (see
`message_payloads`): every 20 ms packet of message 1 carries the same payload, and so does
every packet of message 2, so each packet the server sends is classified by one comparison as
message 1, message 2 or a prompt.

For each of the three keys it reports the time from the key's first event packet to the first
packet of the message and how many prompt packets the server sent in between ("first message",
the envelope...), so `wait - 20 ms * prompt packets` is the delay the server added: the folder
opened, the message fetched and decoded, every gap between prompts. It also reports whether
each message arrived whole and the longest gap between two of its packets.

Like bench.loadgen it is not our SIP stack: requests come from templates and only the status,
To tag and SDP audio port of the answers are read.
"""

from __future__ import annotations

import heapq
import itertools
import random
import selectors
import socket
import struct
import time
from dataclasses import dataclass, field

from bench.loadgen import (
    FRAME_SECONDS,
    T1,
    T2,
    TELEPHONE_EVENT,
    TRANSACTION_TIMEOUT,
    RequestSender,
    header,
    ok_reply,
    request_head,
    sdp_offer,
    with_sdp,
)
from tests.audio import PAYLOAD_PCMU, g711_encode
from tests.sipua import event_packets

QUIET = 0.6  # the server silent this long: its prompt is over, the caller keys
KEY_MS = 100  # each key held 100 ms, 60 ms between keys
KEY_GAP = 0.16
REPLAY_HOLD = 1.0
STALL = 45.0  # no progress for this long fails the session (a wrong prompt, a lost key)
RTP_HEADER = struct.Struct("!BBHII")


@dataclass
class Listen:
    """One key that starts a message, and what the caller heard after it."""

    key: str
    message: int  # 1 or 2: which message should follow the key
    key_at: float = 0.0
    answered_at: float = 0.0  # the server's first packet after the key, of any kind
    prompt_packets: int = 0  # server packets between the key and the message's first packet
    first_at: float = 0.0
    packets: int = 0  # the message's packets
    last_at: float = 0.0
    max_gap: float = 0.0  # the longest time between two of the message's packets

    def answer_ms(self) -> float:
        return (self.answered_at - self.key_at) * 1000

    def wait_ms(self) -> float:
        return (self.first_at - self.key_at) * 1000

    def added_ms(self) -> float:
        """The wait less the prompts' own play time: what the server added."""
        return self.wait_ms() - self.prompt_packets * FRAME_SECONDS * 1000


@dataclass
class SessionResult:
    mailbox: str
    invite_ms: float = 0.0
    listens: list[Listen] = field(default_factory=list)
    failure: str = ""


class Session:
    """Call, log in, listen; `phase` says what the caller waits for next."""

    def __init__(self, index: int, mailbox: str) -> None:
        self.index = index
        self.result = SessionResult(mailbox)
        self.call_id = f"listen-{index}-{random.getrandbits(48):012x}"
        self.from_tag = f"{random.getrandbits(32):08x}"
        self.to_tag = ""
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind(("127.0.0.1", 0))
        self.rtp.setblocking(False)
        self.media_port = self.rtp.getsockname()[1]
        self.remote_media: tuple[str, int] | None = None
        self.ssrc = 0x20000 + index
        self.sequence = random.getrandbits(16)
        self.timestamp0 = random.getrandbits(32)
        self.answered_at = 0.0
        # answering: INVITE sent; mailbox, pin, menu: keys when quiet; msg1, msg2: keys when
        # the message was heard and then quiet; replay: BYE after REPLAY_HOLD; bye, done
        self.phase = "answering"
        self.request = b""
        self.sent_at = 0.0
        self.retransmit_at = 0.0
        self.interval = T1
        self.provisional = False
        self.heard_since_keys = 0  # server packets since our last keys
        self.last_packet_at = 0.0
        self.progress_at = 0.0
        self.keys_done_at = 0.0  # when the last event packet of our keys leaves
        self.listen: Listen | None = None
        self.bye_at = 0.0


def message_payloads(amplitude: int) -> tuple[bytes, bytes]:
    """(one 20 ms frame of 16-bit PCM, its PCMU payload) of a message: a 2 kHz square wave of
    this amplitude, so that every frame of the message is the same frame."""
    frame = struct.pack("<4h", amplitude, amplitude, -amplitude, -amplitude) * 40
    return frame, g711_encode(frame, PAYLOAD_PCMU)


class Listeners(RequestSender):
    """`calls` sessions started at `rate` a second against `target`; run() returns each one's
    result."""

    def __init__(
        self,
        target: tuple[str, int],
        mailboxes: list[str],
        pin: str,
        message_payload: dict[bytes, int],
        rate: float,
    ) -> None:
        self.target = target
        self.mailboxes = mailboxes
        self.pin = pin
        self.message_payload = message_payload  # PCMU payload -> message number
        self.rate = rate
        self.selector = selectors.DefaultSelector()
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind(("127.0.0.1", 0))
        self.sip.setblocking(False)
        self.sip_port = self.sip.getsockname()[1]
        self.selector.register(self.sip, selectors.EVENT_READ, None)
        self.sessions: dict[str, Session] = {}
        self.finished: list[SessionResult] = []
        self.outgoing: list[tuple[float, int, Session, bytes]] = []  # (when, seq, session, rtp)
        self._seq = itertools.count()
        self.retransmissions = 0

    # -- SIP -------------------------------------------------------------------------------

    def _headers(self, session: Session, method: str, cseq: int, branch: str) -> str:
        dialog = (session.call_id, session.from_tag, session.to_tag)
        return request_head(method, "8500", session.result.mailbox, dialog, cseq, branch,
                            self.target, self.sip_port)  # fmt: skip

    def _invite(self, session: Session) -> bytes:
        sdp = sdp_offer(f"listen {session.index}", session.media_port, PAYLOAD_PCMU, "PCMU")
        return with_sdp(self._headers(session, "INVITE", 1, f"z9hG4bK-li{session.index}"), sdp)

    def _read_sip(self, now: float) -> None:
        while True:
            try:
                data, _ = self.sip.recvfrom(65536)
            except BlockingIOError:
                return
            text = data.decode("utf-8", "replace")
            head, _, body = text.partition("\r\n\r\n")
            lines = head.split("\r\n")
            session = self.sessions.get(header(lines, "call-id", "i") or "")
            if session is None:
                continue
            if not lines[0].startswith("SIP/2.0 "):
                self._answer_request(lines, session)
                continue
            status = int(lines[0].split()[1])
            method = (header(lines, "cseq") or " ").split()[-1]
            if method == "INVITE":
                self._invite_answered(session, status, lines, body, now)
            elif method == "BYE" and session.phase == "bye" and status >= 200:
                self._finish(session, "" if status == 200 else f"BYE answered {status}")

    def _invite_answered(
        self, session: Session, status: int, lines: list[str], body: str, now: float
    ) -> None:
        if session.phase != "answering":
            if status == 200:  # our ACK was lost: ACK the retransmission
                ack = self._simple(session, "ACK", 1, f"z9hG4bK-la{session.index}")
                self.sip.sendto(ack, self.target)
            return
        session.provisional = True
        if status < 200:
            return
        if status >= 300:
            self._finish(session, f"INVITE answered {status}")
            return
        session.result.invite_ms = (now - session.sent_at) * 1000
        if not self._accept(session, lines, body, f"z9hG4bK-la{session.index}"):
            self._finish(session, "200 without an audio address")
            return
        session.phase = "mailbox"
        session.answered_at = session.progress_at = now

    def _answer_request(self, lines: list[str], session: Session) -> None:
        self.sip.sendto(ok_reply(lines), self.target)
        if lines[0].split()[0] == "BYE":
            self._finish(session, f"the server hung up while the caller waited for {session.phase}")

    # -- keys and media ---------------------------------------------------------------------

    def _send_keys(self, session: Session, keys: str, now: float) -> None:
        """Queue RFC 4733 events, one packet per 20 ms, each key with its own timestamp."""
        at = now
        for key in keys:
            timestamp = session.timestamp0 + int((at - session.answered_at) * 8000)
            for marker, payload in event_packets(key, KEY_MS):
                second = (0x80 if marker else 0) | TELEPHONE_EVENT
                rtp = RTP_HEADER.pack(0x80, second, 0, timestamp & 0xFFFFFFFF, session.ssrc)
                heapq.heappush(self.outgoing, (at, next(self._seq), session, rtp + payload))
                at += FRAME_SECONDS
            at += KEY_GAP - FRAME_SECONDS * 3
        session.keys_done_at = at
        session.heard_since_keys = 0
        session.progress_at = now

    def _send_due(self, now: float) -> None:
        while self.outgoing and self.outgoing[0][0] <= now:
            _, _, session, packet = heapq.heappop(self.outgoing)
            if session.remote_media is None or session.phase in ("bye", "done"):
                continue
            packet = packet[:2] + session.sequence.to_bytes(2, "big") + packet[4:]
            session.sequence = (session.sequence + 1) & 0xFFFF
            try:
                session.rtp.sendto(packet, session.remote_media)
            except OSError:
                pass  # a full buffer: lost, as on a network

    def _read_rtp(self, session: Session, now: float) -> None:
        while True:
            try:
                data = session.rtp.recv(2048)
            except BlockingIOError:
                return
            if len(data) < 12 or data[1] & 0x7F != PAYLOAD_PCMU:
                continue
            session.last_packet_at = session.progress_at = now
            session.heard_since_keys += 1
            listen = session.listen
            if listen is None:
                continue
            if not listen.answered_at:
                listen.answered_at = now
            message = self.message_payload.get(data[12:])
            if message == listen.message:
                if listen.packets == 0:
                    listen.first_at = now
                else:
                    listen.max_gap = max(listen.max_gap, now - listen.last_at)
                listen.packets += 1
                listen.last_at = now
            elif listen.packets == 0:
                listen.prompt_packets += 1

    # -- what the caller does next ------------------------------------------------------------

    def _step(self, session: Session, now: float) -> None:
        phase = session.phase
        if phase in ("answering", "bye", "done"):
            return
        if now - session.progress_at > STALL:
            self._hang_up(session, now, f"stalled waiting to key after {phase}")
            return
        if phase == "replay":
            if session.listen is None or not session.listen.packets:
                return
            if not session.bye_at:
                session.bye_at = now + REPLAY_HOLD
            elif now >= session.bye_at:
                self._hang_up(session, now, "")
            return
        quiet = (
            now >= session.keys_done_at
            and session.heard_since_keys > 0
            and now - session.last_packet_at >= QUIET
        )
        if not quiet:
            return
        if phase in ("msg1", "msg2") and (session.listen is None or not session.listen.packets):
            return  # the message has not started: the server is still busy (fetching?)
        if phase == "mailbox":
            self._send_keys(session, session.result.mailbox + "#", now)
            session.phase = "pin"
        elif phase == "pin":
            self._send_keys(session, self.pin + "#", now)
            session.phase = "menu"
        elif phase == "menu":
            self._listen(session, "1", 1, now)
            session.phase = "msg1"
        elif phase == "msg1":
            self._listen(session, "6", 2, now)
            session.phase = "msg2"
        elif phase == "msg2":
            self._listen(session, "5", 2, now)
            session.phase = "replay"

    def _listen(self, session: Session, key: str, message: int, now: float) -> None:
        session.listen = Listen(key, message, key_at=now)
        session.result.listens.append(session.listen)
        self._send_keys(session, key, now)

    def _hang_up(self, session: Session, now: float, failure: str) -> None:
        session.result.failure = failure
        session.phase = "bye"
        self._send_request(
            session, self._simple(session, "BYE", 2, f"z9hG4bK-lb{session.index}"), now
        )

    def _finish(self, session: Session, failure: str) -> None:
        if failure and not session.result.failure:
            session.result.failure = failure
        session.phase = "done"
        self.sessions.pop(session.call_id, None)
        self.selector.unregister(session.rtp)
        session.rtp.close()
        self.finished.append(session.result)

    def _timers(self, now: float) -> None:
        for session in list(self.sessions.values()):
            if session.phase in ("answering", "bye"):
                if now - session.sent_at > TRANSACTION_TIMEOUT:
                    self._finish(session, f"no final answer while {session.phase}")
                    continue
                waiting = session.phase == "bye" or not session.provisional
                if waiting and now >= session.retransmit_at:
                    self.sip.sendto(session.request, self.target)
                    self.retransmissions += 1
                    session.interval = min(session.interval * 2, T2)
                    session.retransmit_at = now + session.interval
            else:
                self._step(session, now)

    # -- the loop -----------------------------------------------------------------------------

    def run(self, calls: int) -> list[SessionResult]:
        start = time.monotonic()
        started = 0
        next_check = start
        while started < calls or self.sessions:
            now = time.monotonic()
            while started < calls and start + started / self.rate <= now:
                session = Session(started, self.mailboxes[started])
                self.sessions[session.call_id] = session
                self.selector.register(session.rtp, selectors.EVENT_READ, session)
                self._send_request(session, self._invite(session), now)
                started += 1
            self._send_due(now)
            if now >= next_check:
                self._timers(now)
                next_check = now + 0.05
            wake = next_check
            if self.outgoing:
                wake = min(wake, self.outgoing[0][0])
            if started < calls:
                wake = min(wake, start + started / self.rate)
            for key, _ in self.selector.select(max(0.0, wake - time.monotonic())):
                now = time.monotonic()
                if key.data is None:
                    self._read_sip(now)
                else:
                    self._read_rtp(key.data, now)
        return self.finished
