"""A cheap caller load: SIP and RTP from one thread on plain sockets, for `bench.calls`.

sipp's `play_pcap_audio` runs a thread per call and needed more CPU than the server from 400
calls on (bench/RESULTS.md), so at 800 it was the load generator, not the server, that ran out
of cores. This generator places the same calls with the same RTP: every caller's packets are
prepared once, each 20 ms tick sends one packet per talking call, and nothing the server sends
on the media port is read (the kernel drops it, as with sipp). It is not our SIP stack: it
writes requests from templates and reads only what it needs from the answers (status, Call-ID,
CSeq, To tag, the SDP's audio port), so a bug in channels/sip cannot hide in it.

Run by `bench.calls --generator raw`; on its own:
``python -m bench.loadgen --target 127.0.0.1:5060 --mailboxes boxes.txt --audio caller.g711
--payload-type 8 --calls 100 --rate 50 --hangup-after 23.6 --report out.json``
"""

from __future__ import annotations

import argparse
import json
import random
import re
import select
import socket
import struct
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

T1 = 0.5  # RFC 3261 timer T1: retransmit every T1, doubling, up to T2
T2 = 4.0
TRANSACTION_TIMEOUT = 32.0  # 64 * T1: a request with no final answer by then fails the call
FRAME_SECONDS = 0.020
PAYLOAD_BYTES = 160  # 20 ms of G.711
TELEPHONE_EVENT = 101
CODEC_NAMES = {0: "PCMU", 8: "PCMA"}


@dataclass
class Report:
    created: int = 0
    successful: int = 0
    failed: dict[str, int] = field(default_factory=dict)  # reason -> calls
    retransmissions: int = 0
    unexpected: dict[str, int] = field(default_factory=dict)  # messages no call expected
    invite_ms: list[float] = field(default_factory=list)  # INVITE sent -> its 200
    bye_ms: list[float] = field(default_factory=list)  # BYE sent -> its 200
    rtp_packets: int = 0
    late_ticks: int = 0  # 20 ms ticks sent more than 5 ms late (the generator fell behind)
    worst_tick_lag_ms: float = 0.0


class Call:
    """One caller: INVITE, then on its 200 ACK and talk, then BYE `hangup_after` after ACK."""

    def __init__(self, index: int, mailbox: str, ssrc: int) -> None:
        self.index = index
        self.mailbox = mailbox
        self.call_id = f"load-{index}-{random.getrandbits(48):012x}"
        self.from_tag = f"{random.getrandbits(32):08x}"
        self.to_tag = ""
        self.ssrc = ssrc
        self.sequence = random.getrandbits(16)
        self.timestamp = random.getrandbits(32)
        self.remote_media: tuple[str, int] | None = None
        self.state = "inviting"  # inviting, talking, hanging-up, done
        self.request = b""  # the request being retransmitted
        self.sent_at = 0.0  # first sending of that request
        self.retransmit_at = 0.0
        self.interval = T1
        self.answered = False  # a provisional or final answer stops INVITE retransmissions
        self.frame = 0  # next RTP packet to send
        self.bye_at = 0.0


class Dialog(Protocol):
    """A call of either generator (Call here, bench.listener's Session): the request it is
    retransmitting, and when."""

    request: bytes
    sent_at: float
    retransmit_at: float
    interval: float
    to_tag: str
    remote_media: tuple[str, int] | None


class RequestSender:
    """Requests written from templates and sent from `sip` to `target`, the last one of each
    dialog kept for retransmission; subclasses say what the headers are."""

    target: tuple[str, int]
    sip: socket.socket

    def _headers(self, dialog: Any, method: str, cseq: int, branch: str) -> str:  # noqa: ANN401
        raise NotImplementedError

    def _simple(self, dialog: Dialog, method: str, cseq: int, branch: str) -> bytes:
        return (self._headers(dialog, method, cseq, branch) + "Content-Length: 0\r\n\r\n").encode()

    def _send_request(self, dialog: Dialog, request: bytes, now: float) -> None:
        dialog.request, dialog.sent_at, dialog.interval = request, now, T1
        dialog.retransmit_at = now + T1
        self.sip.sendto(request, self.target)

    def _accept(self, dialog: Dialog, lines: list[str], body: str, ack_branch: str) -> bool:
        """The INVITE's 200: learn the To tag and the audio address, and ACK it. False when
        the answer has no audio address."""
        dialog.to_tag = to_tag(header(lines, "to", "t") or "")
        dialog.remote_media = sdp_media(body)
        self.sip.sendto(self._simple(dialog, "ACK", 1, ack_branch), self.target)
        return dialog.remote_media is not None


class LoadGenerator(RequestSender):
    def __init__(self, args: argparse.Namespace) -> None:
        host, _, port = args.target.rpartition(":")
        self.target = (host, int(port))
        self.mailboxes = Path(args.mailboxes).read_text().split()
        audio = Path(args.audio).read_bytes()
        self.payloads = [audio[i : i + PAYLOAD_BYTES] for i in range(0, len(audio), PAYLOAD_BYTES)]
        self.payload_type = args.payload_type
        self.calls_wanted = args.calls
        self.rate = args.rate
        self.hangup_after = args.hangup_after
        self.report = Report()
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind(("127.0.0.1", 0))
        self.sip.setblocking(False)
        self.sip_port = self.sip.getsockname()[1]
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the server's RTP: dropped
        self.rtp.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
        self.rtp.bind(("127.0.0.1", args.media_port))
        self.media_port = self.rtp.getsockname()[1]
        self.calls: dict[str, Call] = {}
        self.talking: list[Call] = []

    # -- messages -------------------------------------------------------------------------

    def _headers(self, call: Call, method: str, cseq: int, branch: str) -> str:
        dialog = (call.call_id, call.from_tag, call.to_tag)
        return request_head(method, call.mailbox, f"caller{call.index}", dialog, cseq, branch,
                            self.target, self.sip_port)  # fmt: skip

    def _invite(self, call: Call) -> bytes:
        codec = CODEC_NAMES[self.payload_type]
        sdp = sdp_offer(f"load {call.index}", self.media_port, self.payload_type, codec)
        head = self._headers(call, "INVITE", 1, f"z9hG4bK-i{call.index}")
        return with_sdp(head, sdp)

    # -- the loop -------------------------------------------------------------------------

    def run(self) -> Report:
        start = time.monotonic()
        next_tick = start + FRAME_SECONDS
        started = 0
        while started < self.calls_wanted or self.calls:
            now = time.monotonic()
            while started < self.calls_wanted and start + started / self.rate <= now:
                self._start_call(started, now)
                started += 1
            if now >= next_tick:
                lag = now - next_tick
                if lag > 0.005:
                    self.report.late_ticks += 1
                self.report.worst_tick_lag_ms = max(self.report.worst_tick_lag_ms, lag * 1000)
                self._send_rtp()
                next_tick += FRAME_SECONDS
                if now - next_tick > 0.2:  # far behind: resynchronise rather than burst
                    next_tick = now + FRAME_SECONDS
            self._timers(now)
            wait = max(0.0, next_tick - time.monotonic())
            if started < self.calls_wanted:
                wait = min(wait, max(0.0, start + started / self.rate - time.monotonic()))
            readable, _, _ = select.select([self.sip], [], [], wait)
            if readable:
                self._read_sip()
        return self.report

    def _start_call(self, index: int, now: float) -> None:
        call = Call(index, self.mailboxes[index % len(self.mailboxes)], ssrc=0x10000 + index)
        self.calls[call.call_id] = call
        self.report.created += 1
        self._send_request(call, self._invite(call), now)

    def _send_rtp(self) -> None:
        sendto, pack, payloads = self.rtp.sendto, struct.pack, self.payloads
        last = len(payloads)
        finished = []
        for call in self.talking:
            header = pack(
                "!BBHII",
                0x80,
                self.payload_type | (0x80 if call.frame == 0 else 0),
                call.sequence,
                call.timestamp,
                call.ssrc,
            )
            try:
                sendto(header + payloads[call.frame], call.remote_media)
            except OSError:
                pass  # a full socket buffer: the packet is lost, as on a network
            call.sequence = (call.sequence + 1) & 0xFFFF
            call.timestamp = (call.timestamp + PAYLOAD_BYTES) & 0xFFFFFFFF
            call.frame += 1
            if call.frame == last:
                finished.append(call)
        self.report.rtp_packets += len(self.talking)
        for call in finished:
            self.talking.remove(call)

    def _timers(self, now: float) -> None:
        for call in list(self.calls.values()):
            if call.state == "talking" and now >= call.bye_at:
                if call in self.talking:
                    self.talking.remove(call)
                call.state = "hanging-up"
                self._send_request(
                    call, self._simple(call, "BYE", 2, f"z9hG4bK-b{call.index}"), now
                )
                continue
            if call.state not in ("inviting", "hanging-up"):
                continue
            if now - call.sent_at > TRANSACTION_TIMEOUT:
                self._fail(call, f"no final answer to {call.state}")
            elif now >= call.retransmit_at and not (call.state == "inviting" and call.answered):
                self.sip.sendto(call.request, self.target)
                self.report.retransmissions += 1
                call.interval = min(call.interval * 2, T2)
                call.retransmit_at = now + call.interval

    def _fail(self, call: Call, reason: str) -> None:
        self.report.failed[reason] = self.report.failed.get(reason, 0) + 1
        if call in self.talking:
            self.talking.remove(call)
        call.state = "done"
        self.calls.pop(call.call_id, None)

    def _read_sip(self) -> None:
        while True:
            try:
                data, _ = self.sip.recvfrom(65536)
            except BlockingIOError:
                return
            self._handle(data, time.monotonic())

    def _handle(self, data: bytes, now: float) -> None:
        text = data.decode("utf-8", "replace")
        head, _, body = text.partition("\r\n\r\n")
        lines = head.split("\r\n")
        call_id = header(lines, "call-id", "i")
        call = self.calls.get(call_id or "")
        if not lines[0].startswith("SIP/2.0 "):
            self._answer_request(lines, data, call)
            return
        status = int(lines[0].split()[1])
        method = (header(lines, "cseq") or " ").split()[-1]
        if call is None:
            self._unexpected(f"{status} {method} for no call")
            return
        if method == "INVITE" and call.state == "inviting":
            call.answered = True
            if status < 200:
                return
            if status >= 300:
                self._fail(call, f"INVITE answered {status}")
                return
            self.report.invite_ms.append((now - call.sent_at) * 1000)
            if not self._accept(call, lines, body, f"z9hG4bK-a{call.index}"):
                self._fail(call, "200 without an audio address")
                return
            call.state = "talking"
            call.bye_at = now + self.hangup_after
            self.talking.append(call)
        elif method == "INVITE" and status == 200:  # our ACK was lost: ACK the retransmission
            self.sip.sendto(self._simple(call, "ACK", 1, f"z9hG4bK-a{call.index}"), self.target)
            self._unexpected("200 INVITE retransmitted")
        elif method == "BYE" and call.state == "hanging-up" and status >= 200:
            if status == 200:
                self.report.bye_ms.append((now - call.sent_at) * 1000)
                self.report.successful += 1
                call.state = "done"
                self.calls.pop(call.call_id, None)
            else:
                self._fail(call, f"BYE answered {status}")
        elif status >= 200:
            self._unexpected(f"{status} {method} in state {call.state}")

    def _answer_request(self, lines: list[str], data: bytes, call: Call | None) -> None:
        """A request from the server (a BYE of its own, an OPTIONS): answer 200, fail the call."""
        method = lines[0].split()[0]
        self._unexpected(f"{method} from the server")
        self.sip.sendto(ok_reply(lines), self.target)
        if call is not None and method == "BYE":
            self._fail(call, "the server hung up")

    def _unexpected(self, what: str) -> None:
        self.report.unexpected[what] = self.report.unexpected.get(what, 0) + 1


def request_head(
    method: str,
    callee: str,
    caller: str,
    dialog: tuple[str, str, str],
    cseq: int,
    branch: str,
    target: tuple[str, int],
    sip_port: int,
) -> str:
    """A request's headers up to the body's, from 127.0.0.1:sip_port; dialog is (Call-ID,
    From tag, To tag or "")."""
    call_id, from_tag, to_tag = dialog
    host, port = target
    tag = f";tag={to_tag}" if to_tag else ""
    return (
        f"{method} sip:{callee}@{host}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{sip_port};branch={branch};rport\r\n"
        f"From: <sip:{caller}@127.0.0.1:{sip_port}>;tag={from_tag}\r\n"
        f"To: <sip:{callee}@{host}:{port}>{tag}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {method}\r\n"
        f"Contact: <sip:{caller}@127.0.0.1:{sip_port}>\r\n"
        "Max-Forwards: 70\r\n"
    )


def sdp_offer(origin: str, media_port: int, payload_type: int, codec: str) -> str:
    """An audio offer on 127.0.0.1 with RFC 4733 events beside the codec."""
    return (
        f"v=0\r\no={origin} 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {media_port} RTP/AVP {payload_type} {TELEPHONE_EVENT}\r\n"
        f"a=rtpmap:{payload_type} {codec}/8000\r\n"
        f"a=rtpmap:{TELEPHONE_EVENT} telephone-event/8000\r\n"
        f"a=fmtp:{TELEPHONE_EVENT} 0-16\r\na=ptime:20\r\na=sendrecv\r\n"
    )


def with_sdp(head: str, sdp: str) -> bytes:
    return (
        head + f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n" + sdp
    ).encode()


def ok_reply(lines: list[str]) -> bytes:
    """200 OK to a request the server sent (its BYE, an OPTIONS), from the request's lines."""
    keep = [
        line
        for line in lines[1:]
        if line.split(":", 1)[0].strip().lower()
        in ("via", "v", "from", "f", "to", "t", "call-id", "i", "cseq")
    ]
    return ("SIP/2.0 200 OK\r\n" + "\r\n".join(keep) + "\r\nContent-Length: 0\r\n\r\n").encode()


def header(lines: list[str], name: str, short: str = "") -> str | None:
    for line in lines[1:]:
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in (name, short):
            return value.strip()
    return None


def to_tag(value: str) -> str:
    match = re.search(r";\s*tag=([^;>\s]+)", value)
    return match.group(1) if match else ""


def sdp_media(body: str) -> tuple[str, int] | None:
    address = re.search(r"^c=IN IP[46] (\S+)", body, re.MULTILINE)
    port = re.search(r"^m=audio (\d+)", body, re.MULTILINE)
    if address is None or port is None:
        return None
    return address.group(1), int(port.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__)
    parser.add_argument("--target", required=True, help="host:port of the server's SIP socket")
    parser.add_argument("--mailboxes", required=True, help="file: one mailbox per call, in order")
    parser.add_argument("--audio", required=True, help="file: the caller's G.711 payload bytes")
    parser.add_argument("--payload-type", type=int, choices=sorted(CODEC_NAMES), default=8)
    parser.add_argument("--media-port", type=int, default=0)
    parser.add_argument("--calls", type=int, required=True)
    parser.add_argument("--rate", type=float, default=50.0, help="new calls per second")
    parser.add_argument("--hangup-after", type=float, required=True, help="BYE, s after the ACK")
    parser.add_argument("--report", required=True, help="write the JSON report here")
    args = parser.parse_args(argv)
    report = LoadGenerator(args).run()
    Path(args.report).write_text(json.dumps(asdict(report)))
    return 0 if report.successful == report.created else 1


if __name__ == "__main__":
    sys.exit(main())
