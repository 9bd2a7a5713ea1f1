"""A scriptable SIP/RTP softphone on 127.0.0.1 for end-to-end tests of the phone menus.

    with Softphone(server) as phone:
        call = phone.call("1000")
        call.wait_heard_silence(1.0)
        call.send_pcm(pcm)
        call.dtmf("#")
        call.wait_hangup()
        heard = call.heard()

Blocking sockets and two threads per phone (SIP) and per call (RTP in, RTP out); every wait
is bounded and raises `SoftphoneError` with what was received. Messages are built and
parsed by `tests.sipua`, not by the server's code.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
import warnings
import wave
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import sipua
from .heard import RATE, PromptMatch, Timeline, find_audio, find_prompts

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

FRAME_SAMPLES = 160
FRAME_SECONDS = 0.020
T1 = 0.5


class SoftphoneError(AssertionError):
    """The server did not do what the call needed (in time); the message says what it did."""


@dataclass(frozen=True)
class ReceivedEvent:
    """An RFC 4733 packet from the server (we log them; the server should send none)."""

    arrival: float
    digit_code: int
    end: bool
    duration: int


class Softphone:
    """One SIP user agent on a UDP socket; `call()` makes calls to the server."""

    def __init__(
        self,
        server: object,
        *,
        user: str = "5551234",
        display: str = "Test Caller",
        password: str | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.server_address = (server.host, server.port)  # type: ignore[attr-defined]
        self.target = f"{server.host}:{server.port}"  # type: ignore[attr-defined]
        self.user, self.display, self.password, self.host = user, display, password, host
        self.sock = socket.socket(
            socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM
        )
        self.sock.bind((host, 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.calls: dict[str, Call] = {}
        self.stray: list[sipua.SipMessage] = []  # what belonged to no call
        self._closed = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True, name="softphone-sip")
        self._reader.start()

    def __enter__(self) -> Softphone:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def contact(self) -> str:
        return f"<sip:{self.user}@{self.host}:{self.port}>"

    def call(
        self,
        number: str,
        *,
        codecs: Sequence[str] = ("PCMU", "PCMA"),
        headers: Sequence[tuple[str, str]] = (),
        expect: int = 200,
        timeout: float = 20.0,
    ) -> Call:
        """INVITE `number`; return the call once it has the final response `expect`.

        A 401/407 is answered once with digest credentials when the phone has a password.
        For a final response other than 2xx the call is returned ended (`call.status`).
        """
        call = Call(self, number, tuple(codecs), tuple(headers))
        self.calls[call.call_id] = call
        call.invite(timeout)
        if call.status != expect:
            raise SoftphoneError(
                f"INVITE {number}: expected {expect}, got {call.status}\n{call.final}"
            )
        return call

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, self.server_address)

    def close(self) -> None:
        """Hang up what is still up (best effort), stop the threads, close the sockets."""
        for call in list(self.calls.values()):
            if call.established and not call.ended.is_set():
                try:
                    call.hangup(timeout=5)
                except SoftphoneError:
                    pass
            call.close_media()
        self._closed.set()
        self._reader.join(2)
        self.sock.close()

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data.strip():
                continue  # keep-alive
            try:
                message = sipua.parse(data)
            except (sipua.SipParseError, ValueError):
                continue
            call = self.calls.get(message.header("Call-ID") or "")
            if call is None:
                self.stray.append(message)
                if not message.is_response and message.method != "ACK":
                    self.send(sipua.response_to(message, 481, "Call Does Not Exist", None))
            elif message.is_response:
                call.responses.put(message)
            else:
                call.on_request(message)


class Call:
    """One dialog with the server and its RTP: what was heard, and ways to answer it."""

    def __init__(
        self,
        phone: Softphone,
        number: str,
        codecs: tuple[str, ...],
        headers: tuple[tuple[str, str], ...],
    ) -> None:
        self.phone, self.number, self.codecs, self.extra_headers = phone, number, codecs, headers
        self.call_id = sipua.new_token("softphone-") + "@127.0.0.1"
        self.local_tag = sipua.new_token()
        self.remote_tag: str | None = None
        self.request_uri = f"sip:{number}@{phone.target}"
        self.remote_target = self.request_uri
        self.to_header = f"<sip:{number}@{phone.target}>"
        self.cseq = 0
        self.responses: queue.Queue[sipua.SipMessage] = queue.Queue()
        self.requests: list[sipua.SipMessage] = []  # in-dialog requests from the server
        self.status: int | None = None
        self.final: sipua.SipMessage | None = None
        self.provisional: list[int] = []
        self.challenges: list[int] = []  # 401/407 answered with credentials
        self.established = False
        self.ended = threading.Event()
        self.ended_by: str | None = None
        self.answer: sipua.SdpAnswer | None = None
        self.timeline = Timeline()
        self.events: list[ReceivedEvent] = []
        self.foreign_payloads: list[int] = []
        self.answered_at: float | None = None
        self._ack: bytes | None = None
        self.rtp = socket.socket(
            socket.AF_INET6 if ":" in phone.host else socket.AF_INET, socket.SOCK_DGRAM
        )
        self.rtp.bind((phone.host, 0))
        self.rtp.settimeout(0.05)
        self.rtp_port = self.rtp.getsockname()[1]
        self._stop = threading.Event()
        self._outgoing: queue.Queue[list[tuple[str, object]]] = queue.Queue()
        self._idle = threading.Condition()
        self._pending = 0
        self._threads: list[threading.Thread] = []

    # -- signalling ---------------------------------------------------------------------

    def _headers(self, method: str, branch: str, cseq: int) -> list[tuple[str, str]]:
        phone = self.phone
        to = self.to_header + (f";tag={self.remote_tag}" if self.remote_tag else "")
        return [
            ("Via", f"SIP/2.0/UDP {phone.host}:{phone.port};branch={branch};rport"),
            ("Max-Forwards", "70"),
            ("From", f'"{phone.display}" <sip:{phone.user}@{phone.host}>;tag={self.local_tag}'),
            ("To", to),
            ("Call-ID", self.call_id),
            ("CSeq", f"{cseq} {method}"),
            ("User-Agent", "ARA test softphone"),
        ]

    def invite(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        offer = sipua.sdp_offer(self.phone.host, self.rtp_port, self.codecs, int(time.time()))
        authorization: tuple[str, str] | None = None
        while True:
            self.cseq += 1
            branch = sipua.new_branch()
            headers = self._headers("INVITE", branch, self.cseq)
            headers += [("Contact", self.phone.contact), ("Content-Type", "application/sdp")]
            headers += [*self.extra_headers, *([authorization] if authorization else [])]
            request = sipua.build(f"INVITE {self.request_uri} SIP/2.0", headers, offer)
            final = self._transaction(request, "INVITE", deadline, invite=True)
            self.status, self.final = final.status, final
            if final.status in (401, 407) and authorization is None and self.phone.password:
                self.challenges.append(final.status)
                self._ack_failure(final, branch)
                field = "WWW-Authenticate" if final.status == 401 else "Proxy-Authenticate"
                challenge = sipua.parse_challenge(final.header(field) or "")
                value = sipua.digest_authorization(
                    challenge, "INVITE", self.request_uri, self.phone.user, self.phone.password
                )
                name = "Authorization" if final.status == 401 else "Proxy-Authorization"
                authorization = (name, value)
                self.remote_tag = None
                continue
            break
        if 200 <= final.status < 300:
            self._established(final)
        else:
            self._ack_failure(final, branch)
            self.ended_by = f"{final.status}"
            self.ended.set()
            self.close_media()

    def _transaction(
        self, request: bytes, method: str, deadline: float, invite: bool = False
    ) -> sipua.SipMessage:
        """Send with RFC 3261 retransmissions (T1 doubling, to T2 for non-INVITE)."""
        interval, sent_at = T1, time.monotonic()
        self.phone.send(request)
        provisional = False
        while True:
            now = time.monotonic()
            if now > deadline:
                raise SoftphoneError(f"no final response to {method} of call {self.call_id}")
            try:
                response = self.responses.get(timeout=min(0.05, max(0.0, deadline - now)))
            except queue.Empty:
                if not provisional and time.monotonic() - sent_at >= interval:
                    self.phone.send(request)
                    sent_at, interval = time.monotonic(), min(interval * 2, 4.0)
                continue
            if response.cseq != (self.cseq, method):
                if response.method == "INVITE" and 200 <= response.status < 300 and self._ack:
                    self.phone.send(self._ack)  # a retransmitted 200: ACK it again
                continue
            if response.status < 200:
                provisional = provisional or invite
                self.provisional.append(response.status)
                continue
            return response

    def _ack_failure(self, final: sipua.SipMessage, branch: str) -> None:
        """ACK of a non-2xx final response: same branch and CSeq number as the INVITE."""
        headers = self._headers("ACK", branch, self.cseq)
        headers[3] = ("To", final.header("To") or self.to_header)
        self.phone.send(sipua.build(f"ACK {self.request_uri} SIP/2.0", headers))

    def _established(self, final: sipua.SipMessage) -> None:
        self.remote_tag = sipua.tag_of(final.header("To") or "")
        contact = final.header("Contact")
        if contact:
            self.remote_target = sipua.uri_of(contact)
        self.answer = sipua.parse_answer(final.body)
        self._ack = sipua.build(
            f"ACK {self.remote_target} SIP/2.0", self._headers("ACK", sipua.new_branch(), self.cseq)
        )
        self.phone.send(self._ack)
        self.established = True
        self.answered_at = time.monotonic()
        for target, name in ((self._receive_rtp, "in"), (self._send_rtp, "out")):
            thread = threading.Thread(target=target, daemon=True, name=f"softphone-rtp-{name}")
            thread.start()
            self._threads.append(thread)

    def request(self, method: str, body: bytes = b"", content_type: str | None = None,
                timeout: float = 10.0) -> sipua.SipMessage:  # fmt: skip
        """An in-dialog request (BYE, INFO, OPTIONS...); returns the final response."""
        self.cseq += 1
        headers = self._headers(method, sipua.new_branch(), self.cseq)
        headers.append(("Contact", self.phone.contact))
        if content_type:
            headers.append(("Content-Type", content_type))
        data = sipua.build(f"{method} {self.remote_target} SIP/2.0", headers, body)
        return self._transaction(data, method, time.monotonic() + timeout)

    def on_request(self, message: sipua.SipMessage) -> None:
        """Called on the SIP thread: answer BYE (and anything else) from the server."""
        if message.method == "ACK":
            return
        self.requests.append(message)
        if message.method == "BYE":
            self.phone.send(sipua.response_to(message, 200, "OK", self.local_tag))
            self.ended_by = self.ended_by or "server"
            self.ended.set()
        elif message.method in ("OPTIONS", "INFO", "NOTIFY", "UPDATE"):
            self.phone.send(sipua.response_to(message, 200, "OK", self.local_tag))
        else:
            self.phone.send(sipua.response_to(message, 501, "Not Implemented", self.local_tag))

    def hangup(self, timeout: float = 10.0) -> int:
        """BYE from us; returns the status of the server's answer (200 expected)."""
        self.wait_sent(timeout)
        self.ended_by = self.ended_by or "caller"
        response = self.request("BYE", timeout=timeout)
        self.ended.set()
        self.close_media()
        return response.status

    def wait_hangup(self, timeout: float = 30.0) -> None:
        """Wait for the server's BYE (answered with 200 already)."""
        if not self.ended.wait(timeout):
            raise SoftphoneError(f"the server did not hang up within {timeout} s")
        time.sleep(0.1)  # let the last RTP packets arrive
        self.close_media()

    # -- what was heard -----------------------------------------------------------------

    def elapsed(self) -> float:
        """Seconds since the 200 OK (the timeline's zero)."""
        return 0.0 if self.answered_at is None else time.monotonic() - self.answered_at

    def heard(self, start: float | None = None, end: float | None = None) -> bytes:
        """8 kHz 16-bit PCM the caller heard from `start` to `end` seconds of the call."""
        return self.timeline.pcm(start, end)

    def wait_until(self, seconds: float) -> None:
        """Sleep until `seconds` after the answer."""
        time.sleep(max(0.0, seconds - self.elapsed()))

    def wait_heard_silence(
        self, seconds: float = 1.0, *, after: float | None = None, timeout: float = 60.0
    ) -> float:
        """Wait until something loud was heard (after call time `after`, default: the time
        of this call) followed by `seconds` without it; return the call time it went quiet.

        Silence is measured in the timeline (the server sends nothing or silent packets),
        so a packet delayed by a loaded machine only postpones the answer.
        """
        since = self.elapsed() if after is None else after
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            loud = self.timeline.last_loud
            if loud is not None and loud > since and self.elapsed() - loud >= seconds:
                return loud
            if self.ended.is_set() and (loud is None or loud <= since):
                break
            time.sleep(0.05)
        raise SoftphoneError(
            f"no audio followed by {seconds} s of silence after {since:.2f} s "
            f"(last loud {self.timeline.last_loud}, {self.timeline.packets} packets)"
        )

    def wait_prompts(
        self,
        expected: Sequence[str],
        *,
        candidates: Sequence[str] = (),
        after: float = 0.0,
        timeout: float = 60.0,
        threshold: float = 0.8,
        heads: Mapping[str, float] | None = None,
    ) -> list[PromptMatch]:
        """Wait until the prompts heard since call time `after` include `expected`, one
        after the other; return every match since `after` up to the last expected one
        (times in call seconds). `candidates` are other prompts that may come between.
        `heads`: prompts heard once their first seconds were (see `heard.find_prompts`).
        """
        names = [*dict.fromkeys([*expected, *candidates])]
        deadline = time.monotonic() + timeout
        matches: list[PromptMatch] = []
        ended_before = False
        while True:
            found = find_prompts(self.heard(after), names, threshold=threshold, heads=heads)
            matches = [PromptMatch(m.name, m.start + after, m.end + after, m.score) for m in found]
            sequence = [m.name for m in matches]
            for index in range(len(sequence) - len(expected) + 1):
                if sequence[index : index + len(expected)] == list(expected):
                    return matches[: index + len(expected)]
            if time.monotonic() > deadline or ended_before:
                raise SoftphoneError(
                    f"expected to hear {list(expected)} after {after:.2f} s, heard {sequence} "
                    f"({self.timeline.seconds:.2f} s of audio, {self.timeline.packets} packets)"
                )
            ended_before = self.ended.is_set()  # one more look at what arrived before the BYE
            time.sleep(0.4)

    def wait_audio(
        self, reference: bytes, *, after: float = 0.0, timeout: float = 60.0,
        threshold: float = 0.8,
    ) -> PromptMatch:  # fmt: skip
        """Wait until all of `reference` (8 kHz 16-bit PCM: a stored message, a greeting)
        was heard after call time `after`; return where (in call seconds)."""
        deadline = time.monotonic() + timeout
        ended_before = False
        while True:
            found = find_audio(self.heard(after), reference, threshold=threshold)
            if found:
                first = found[0]
                return PromptMatch(first.name, first.start + after, first.end + after, first.score)
            if time.monotonic() > deadline or ended_before:
                raise SoftphoneError(
                    f"the {len(reference) / 2 / RATE:.2f} s of audio expected after {after:.2f} s "
                    f"were not heard ({self.timeline.seconds:.2f} s of audio, "
                    f"{self.timeline.packets} packets)"
                )
            ended_before = self.ended.is_set()
            time.sleep(0.4)

    # -- what we send -------------------------------------------------------------------

    def send_pcm(self, pcm: bytes, *, wait: bool = True) -> None:
        """Queue 8 kHz 16-bit PCM as 20 ms packets (the last one padded with silence)."""
        frame = 2 * FRAME_SAMPLES
        if len(pcm) % frame:
            pcm += bytes(frame - len(pcm) % frame)
        self._queue([("audio", pcm[index : index + frame]) for index in range(0, len(pcm), frame)])
        if wait:
            self.wait_sent(len(pcm) / 2 / RATE + 15)

    def send_wav(self, path: Path, *, wait: bool = True) -> None:
        """A WAV file (any rate, mono or stereo, 8/16 bit) converted to 8 kHz and sent."""
        with wave.open(str(path), "rb") as wav:
            width, channels, rate = wav.getsampwidth(), wav.getnchannels(), wav.getframerate()
            pcm = wav.readframes(wav.getnframes())
        if width == 1:
            pcm = audioop.bias(pcm, 1, -128)
        pcm = audioop.lin2lin(pcm, width, 2) if width != 2 else pcm
        if channels == 2:
            pcm = audioop.tomono(pcm, 2, 0.5, 0.5)
        if rate != RATE:
            pcm, _ = audioop.ratecv(pcm, 2, 1, rate, RATE, None)
        self.send_pcm(pcm, wait=wait)

    def send_silence(self, seconds: float, *, wait: bool = True) -> None:
        """Silent packets (a phone that stays on the line but says nothing)."""
        self.send_pcm(bytes(2 * round(seconds * RATE)), wait=wait)

    def pause(self, seconds: float, *, wait: bool = True) -> None:
        """Send nothing for `seconds` (the RTP timestamp still advances, as for a muted phone)."""
        self._queue(self._silent_slots(seconds))
        if wait:
            self.wait_sent(seconds + 15)

    def dtmf(
        self,
        digits: str,
        *,
        mode: str = "rfc4733",
        duration: float = 0.12,
        gap: float | Sequence[float] = 0.3,
    ) -> None:
        """Press keys: RFC 4733 events in the RTP stream, or SIP INFO application/dtmf-relay.

        `gap` is the pause after each digit, one number or one per digit. Returns when the
        last digit was sent (and for INFO, answered).
        """
        gaps = [gap] * len(digits) if isinstance(gap, (int, float)) else list(gap)
        if len(gaps) != len(digits):
            raise ValueError(f"{len(gaps)} gaps for {len(digits)} digits")
        if mode not in ("rfc4733", "info"):
            raise ValueError(f"dtmf mode {mode!r} is not rfc4733 or info")
        if mode == "rfc4733":
            if self.answer is None or self.answer.telephone_event is None:
                raise SoftphoneError("the SDP answer has no telephone-event")
            # All queued at once, so the timestamps and gaps are exact however loaded we are.
            items: list[tuple[str, object]] = []
            for digit, pause in zip(digits, gaps, strict=True):
                items.append(("event", sipua.event_packets(digit, round(duration * 1000))))
                items += self._silent_slots(pause)
            self._queue(items)
            self.wait_sent(len(digits) * (duration + 0.1) + sum(gaps) + 15)
            return
        for digit, pause in zip(digits, gaps, strict=True):
            self.wait_sent(15)
            body = f"Signal={digit}\r\nDuration={round(duration * 1000)}\r\n".encode()
            answer = self.request("INFO", body, "application/dtmf-relay")
            if answer.status != 200:
                raise SoftphoneError(f"INFO {digit}: {answer.status}\n{answer}")
            time.sleep(pause)

    def wait_sent(self, timeout: float = 15.0) -> None:
        """Block until everything queued for RTP has gone out."""
        with self._idle:
            if not self._idle.wait_for(lambda: self._pending == 0 or self._stop.is_set(), timeout):
                raise SoftphoneError(f"RTP queue not sent within {timeout} s")

    @staticmethod
    def _silent_slots(seconds: float) -> list[tuple[str, object]]:
        return [("skip", None)] * max(1, round(seconds / FRAME_SECONDS))

    def _queue(self, items: list[tuple[str, object]]) -> None:
        """Queue items that go out back to back (one batch: no idle gap can split them)."""
        if not self.established:
            raise SoftphoneError("the call is not established")
        with self._idle:
            self._pending += 1
        self._outgoing.put(items)

    # -- RTP threads --------------------------------------------------------------------

    def _receive_rtp(self) -> None:
        assert self.answer is not None and self.answered_at is not None
        while not self._stop.is_set():
            try:
                data = self.rtp.recv(2048)
            except TimeoutError:
                continue
            except OSError:
                return
            arrival = time.monotonic() - self.answered_at
            packet = sipua.parse_rtp(data)
            if packet is None:
                continue
            if packet.payload_type in sipua.CODECS:
                decode = audioop.ulaw2lin if packet.payload_type == 0 else audioop.alaw2lin
                pcm = decode(packet.payload, 2)
                self.timeline.add(arrival, packet.ssrc, packet.timestamp, pcm)
            elif packet.payload_type == self.answer.telephone_event and len(packet.payload) >= 4:
                p = packet.payload
                self.events.append(
                    ReceivedEvent(arrival, p[0], bool(p[1] & 0x80), p[2] << 8 | p[3])
                )
            else:
                self.foreign_payloads.append(packet.payload_type)

    def _send_rtp(self) -> None:
        """Send queued items in 20 ms slots; the timestamp counts slots since the first.

        After an idle spell the slot count jumps to the present (as a muted phone's clock
        goes on); when merely late it does not, and the late packets go at once.
        """
        assert self.answer is not None
        remote = (self.answer.address, self.answer.port)
        if self.answer.address in ("0.0.0.0", "::"):
            remote = self.phone.server_address[0], self.answer.port
        encode = audioop.lin2ulaw if self.answer.payload_type == 0 else audioop.lin2alaw
        event_type = self.answer.telephone_event or sipua.TELEPHONE_EVENT
        ssrc = int.from_bytes(sipua.secrets.token_bytes(4), "big")
        first_timestamp = int.from_bytes(sipua.secrets.token_bytes(2), "big") << 8
        sequence, marker, idle = 1000, True, True
        slot, start = 0, time.monotonic()
        while not self._stop.is_set():
            try:
                batch = self._outgoing.get(timeout=0.05)
            except queue.Empty:
                marker = idle = True
                continue
            if idle:
                slot = max(slot, int((time.monotonic() - start) / FRAME_SECONDS))
                idle = False
            for kind, item in batch:
                timestamp = (first_timestamp + slot * FRAME_SAMPLES) & 0xFFFFFFFF
                packets: list[tuple[int, bool, bytes]] = []
                if kind == "audio":
                    packets.append((self.answer.payload_type, marker, encode(item, 2)))
                    marker = False
                elif kind == "event":  # every packet of an event has the start's timestamp
                    packets += [(event_type, mark, payload) for mark, payload in item]
                    marker = True
                else:  # a silent slot: nothing is sent, the clock goes on
                    self._pace(start, slot)
                    marker = True
                    slot += 1
                for payload_type, mark, payload in packets:
                    self._pace(start, slot)
                    packet = sipua.Rtp(payload_type, mark, sequence, timestamp, ssrc, payload)
                    try:
                        self.rtp.sendto(sipua.build_rtp(packet), remote)
                    except OSError:
                        return
                    sequence = (sequence + 1) & 0xFFFF
                    slot += 1
                if self._stop.is_set():
                    return
            with self._idle:
                self._pending -= 1
                self._idle.notify_all()

    def _pace(self, start: float, slot: int) -> None:
        """Sleep until 20 ms slot `slot` after `start`; late slots go at once (no skipping)."""
        delay = start + slot * FRAME_SECONDS - time.monotonic()
        if delay > 0:
            self._stop.wait(delay)

    def close_media(self) -> None:
        self._stop.set()
        with self._idle:
            self._idle.notify_all()
        for thread in self._threads:
            thread.join(2)
        self._threads.clear()
        try:
            self.rtp.close()
        except OSError:
            pass
