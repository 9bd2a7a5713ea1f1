"""End to end: calls over TCP, DTMF by SIP INFO, and mid-call requests (re-INVITE, UPDATE,
PRACK, 100rel, session timers) against the running server.

The deposit calls use sipp and check the stored row as test_deposit_e2e does. The mid-call
requests use a small raw UDP user agent, because the assertions are about exact headers and
SDP lines of the server's answers.
"""

from __future__ import annotations

import re
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from . import sipp
from .dbbackends import Backend
from .server import RunningServer, free_port, start_server, write_config
from .test_deposit_e2e import DATA, assert_recording_is, deposit_scenario, rows

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.parametrize("backend", ["sqlite"], indirect=True),
]


@pytest.fixture
def server(backend: Backend, tmp_path: Path) -> Iterator[RunningServer]:
    """The server with TCP enabled on the UDP port (sip.conf tcpenable=yes)."""
    config = write_config(tmp_path / "etc", backend)
    with (config / "sip.conf").open("a") as sip_conf:
        sip_conf.write("tcpenable=yes\n")
    running = start_server(config)
    yield running
    assert running.stop() == 0, running.log()


def run_sipp_tcp(workdir: Path, xml: str, target: str, timeout: float = 60) -> sipp.SippResult:
    """sipp over one TCP connection (`-t t1`); tests/sipp.run_sipp speaks UDP only."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "tcp.xml"
    path.write_text(xml)
    cmd = [
        "sipp",
        target,
        "-t",
        "t1",
        "-sf",
        str(path),
        "-i",
        "127.0.0.1",
        "-p",
        str(free_port(socket.SOCK_STREAM)),
        "-mi",
        "127.0.0.1",
        "-mp",
        str(free_port(socket.SOCK_DGRAM) & ~1),
        "-m",
        "1",
        "-timeout",
        f"{int(timeout)}s",
        "-timeout_error",
        "-trace_err",
        "-nostdin",
        "-cp",
        str(free_port(socket.SOCK_DGRAM)),
        "-max_recv_loops",
        "1000",
    ]
    proc = subprocess.run(
        cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout + 30, check=False
    )
    errors = "".join(p.read_text(errors="replace") for p in workdir.glob("tcp_*_errors.log"))
    return sipp.SippResult(proc.returncode, proc.stdout, proc.stderr, errors)


def test_deposit_over_tcp_is_stored(
    server: RunningServer, backend: Backend, tmp_path: Path
) -> None:
    pcap = DATA / "signal3s_pcmu.pcap"
    xml = deposit_scenario(
        "1000", pcap, [0, 101], [sipp.pause(3200), sipp.bye("1000"), sipp.recv(200)]
    )
    run_sipp_tcp(tmp_path / "sipp", xml, server.target).check()
    stored = rows(backend)
    assert len(stored) == 1, server.log()
    row = stored[0]
    assert row["dir"] == "/var/spool/asterisk/voicemail/default/1000/INBOX"
    assert row["callerid"] == '"Test Caller" <5551234>'
    assert int(row["duration"]) == 3
    assert_recording_is(row, pcap, 3.0)
    assert re.search(r"call \S+ from .* to 1000@default \(\w+, TCP\)", server.log())


def info(content_type: str, body: str) -> str:
    """An in-dialog INFO carrying one DTMF digit (sipp keywords fill the dialog fields)."""
    text = "INFO sip:1000@[remote_ip]:[remote_port] SIP/2.0\n"
    text += sipp.HEADERS.format(
        branch="[branch]", user="1000", cseq="2 INFO", to_tag="[peer_tag_param]"
    )
    text += f"Content-Type: {content_type}\nContent-Length: [len]\n\n{body}"
    return sipp.send(text)


def test_pound_sent_by_sip_info_ends_the_recording(
    server: RunningServer, backend: Backend, tmp_path: Path
) -> None:
    """Both INFO flavours at once: application/dtmf-relay (Cisco) over TCP, so the server's
    BYE goes down the caller's connection, and application/dtmf over UDP."""
    pcap = DATA / "signal3s_pcmu.pcap"
    flavours = {
        "relay": info("application/dtmf-relay", "Signal=#\nDuration=160\n"),
        "dtmf": info("application/dtmf", "#"),
    }

    def call(name: str) -> sipp.SippResult:
        xml = deposit_scenario(
            "1000",
            pcap,
            [0],
            [
                sipp.pause(3100),
                flavours[name],
                sipp.recv(200),
                sipp.recv_request("BYE"),
                sipp.answer_request(),
            ],
        )
        if name == "relay":
            return run_sipp_tcp(tmp_path / f"sipp-{name}", xml, server.target)
        return sipp.run_sipp(tmp_path / f"sipp-{name}", xml, server.target, timeout=60)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(call, flavours))
    for result in results:
        result.check()
    stored = rows(backend)
    assert len(stored) == 2, server.log()
    for row in stored:
        assert int(row["duration"]) == 3
        assert_recording_is(row, pcap, 3.0)
    assert server.log().count("stopped by digit") == 2, server.log()
    assert len(re.findall(r"call \S+ from .* \(\w+, TCP\)", server.log())) == 1


# -- a raw user agent for the mid-call requests --------------------------------------------


@dataclass
class SipResponse:
    code: int
    headers: list[tuple[str, str]]
    body: str

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]

    @property
    def cseq(self) -> str:
        return self.header("CSeq") or ""


def parse_response(data: bytes) -> SipResponse | None:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    match = re.fullmatch(r"SIP/2\.0 (\d{3}) .*", lines[0])
    if match is None:
        return None  # a request from the server (its BYE): not what we wait for
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    return SipResponse(int(match.group(1)), headers, body.decode())


def sdp_offer(port: int, direction: str, formats: str = "0 101") -> str:
    rtpmaps = {"0": "PCMU/8000", "101": "telephone-event/8000", "3": "GSM/8000", "18": "G729/8000"}
    return (
        "v=0\r\no=caller 4242 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP {formats}\r\n"
        + "".join(f"a=rtpmap:{f} {rtpmaps[f]}\r\n" for f in formats.split())
        + f"a=ptime:20\r\na={direction}\r\n"
    )


class RawCall:
    """One dialog driven by hand over UDP: exact requests in, parsed responses out."""

    def __init__(self, server: RunningServer, call_id: str, user: str = "1000") -> None:
        self.server = server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(5)
        self.port = self.sock.getsockname()[1]
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind(("127.0.0.1", 0))
        self.call_id = call_id
        self.user = user
        self.from_tag = f"raw-{call_id}"
        self.to_tag: str | None = None
        self.cseq = 0
        self.branches = 0

    def close(self) -> None:
        self.sock.close()
        self.rtp.close()

    def rtp_packets(self, seconds: float) -> int:
        """RTP packets the server sends us during the next `seconds` (older ones dropped)."""
        self.rtp.setblocking(False)
        try:
            while self.rtp.recv(2048):
                pass
        except BlockingIOError:
            pass
        count = 0
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.rtp.settimeout(left)
            try:
                self.rtp.recv(2048)
            except TimeoutError:
                break
            count += 1
        return count

    def send(
        self,
        method: str,
        *,
        body: str = "",
        content_type: str = "application/sdp",
        headers: tuple[str, ...] = (),
        cseq: int | None = None,
        branch: str | None = None,
    ) -> str:
        """Send a request; returns its branch (an ACK for a non-2xx reuses the INVITE's)."""
        if cseq is None:
            self.cseq += 1
            cseq = self.cseq
        if branch is None:
            self.branches += 1
            branch = f"z9hG4bK-{self.call_id}-{self.branches}"
        target = f"sip:{self.user}@{self.server.target}"
        to_tag = f";tag={self.to_tag}" if self.to_tag else ""
        text = (
            f"{method} {target} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch};rport\r\n"
            f'From: "Raw Caller" <sip:5551234@127.0.0.1:{self.port}>;tag={self.from_tag}\r\n'
            f"To: <{target}>{to_tag}\r\n"
            f"Call-ID: {self.call_id}\r\n"
            f"CSeq: {cseq} {method}\r\n"
            f"Contact: <sip:5551234@127.0.0.1:{self.port}>\r\n"
            "Max-Forwards: 70\r\n" + "".join(h + "\r\n" for h in headers)
        )
        if body:
            text += f"Content-Type: {content_type}\r\n"
        text += f"Content-Length: {len(body.encode())}\r\n\r\n{body}"
        self.sock.sendto(text.encode(), (self.server.host, self.server.port))
        return branch

    def final(self, method: str) -> SipResponse:
        """The final response to our latest `method` request (provisionals skipped)."""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            response = parse_response(self.sock.recv(65535))
            if response is None or response.code < 200:
                continue
            if response.cseq == f"{self.cseq} {method}":
                return response
        raise AssertionError(f"no final response to {method}")

    def invite(
        self, headers: tuple[str, ...] = (), direction: str = "sendrecv", formats: str = "0 101"
    ) -> SipResponse:
        """INVITE (or re-INVITE once the dialog exists), ACKed as RFC 3261 says."""
        body = sdp_offer(self.rtp.getsockname()[1], direction, formats)
        branch = self.send("INVITE", body=body, headers=headers)
        response = self.final("INVITE")
        if self.to_tag is None:
            match = re.search(r";\s*tag=([^;\s]+)", response.header("To") or "")
            assert match is not None, response
            self.to_tag = match.group(1)
        if response.code < 300:
            self.send("ACK", cseq=self.cseq)
        else:
            self.send("ACK", cseq=self.cseq, branch=branch)
        return response


def origin_version(sdp: str) -> tuple[str, int]:
    """The session id and version of the answer's o= line."""
    match = re.search(r"^o=\S+ (\d+) (\d+) ", sdp, re.M)
    assert match is not None, sdp
    return match.group(1), int(match.group(2))


def test_hold_by_reinvite_update_and_prack_in_a_call(server: RunningServer) -> None:
    call = RawCall(server, "midcall-1")
    try:
        answer = call.invite()
        assert answer.code == 200
        session, version = origin_version(answer.body)
        assert "a=sendrecv" in answer.body

        held = call.invite(direction="sendonly")
        assert held.code == 200, held
        assert held.header("Content-Type") == "application/sdp"
        assert "a=recvonly" in held.body.split("\r\n"), held.body
        held_session, held_version = origin_version(held.body)
        assert held_session == session
        assert held_version > version

        resumed = call.invite(direction="sendrecv")
        assert resumed.code == 200
        assert "a=sendrecv" in resumed.body.split("\r\n")
        assert origin_version(resumed.body)[1] > held_version

        # A refused re-INVITE leaves the session as it was (RFC 3261 14.2).
        assert call.invite(formats="3 18").code == 488
        call.send(
            "INFO", body="Signal=5\r\nDuration=160\r\n", content_type="application/dtmf-relay"
        )
        assert call.final("INFO").code == 200

        call.send("UPDATE")
        update = call.final("UPDATE")
        assert update.code == 200
        assert update.body == ""

        call.send("PRACK", headers=("RAck: 1 1 INVITE",))
        assert call.final("PRACK").code == 481

        call.send("BYE")
        assert call.final("BYE").code == 200
    finally:
        call.close()
    assert "Traceback" not in server.log()


def test_held_caller_gets_no_rtp_until_resumed(server: RunningServer) -> None:
    """RFC 3264 6.1: a sendonly offer is answered recvonly, and then we send nothing."""
    call = RawCall(server, "hold-media")
    try:
        assert call.invite().code == 200
        assert call.rtp_packets(0.5) > 10  # the greeting plays
        assert call.invite(direction="sendonly").code == 200
        assert call.rtp_packets(0.5) == 0
        assert call.invite(direction="sendrecv").code == 200
        assert call.rtp_packets(0.5) > 10
        call.send("BYE")
        assert call.final("BYE").code == 200
    finally:
        call.close()


def test_invite_requiring_100rel_gets_420(server: RunningServer) -> None:
    call = RawCall(server, "require-100rel")
    try:
        refused = call.invite(headers=("Require: 100rel",))
        assert refused.code == 420
        assert refused.header("Unsupported") == "100rel"
    finally:
        call.close()


def test_session_timer_is_accepted_with_the_caller_refreshing(server: RunningServer) -> None:
    call = RawCall(server, "session-timer")
    try:
        answer = call.invite(headers=("Session-Expires: 1800", "Supported: timer"))
        assert answer.code == 200
        expires = answer.header("Session-Expires") or ""
        assert expires.split(";")[0].strip() == "1800", answer.headers
        assert "timer" in [t.strip() for t in ",".join(answer.all("Require")).split(",")]
        call.send("BYE")
        assert call.final("BYE").code == 200
    finally:
        call.close()
