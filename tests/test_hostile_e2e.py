"""End to end: hostile input against the running server, which must keep serving.

Over UDP, a raw socket sends a torture corpus after RFC 4475 (tests/data/torture/*.txt, plus
binary cases built here), then 500 REGISTERs with bad credentials, then hypothesis-generated
datagrams; every well-formed request gets a 4xx (501/505 where RFC 3261 names them) or is
dropped, and afterwards OPTIONS still gets 200 and a deposit call is still stored. Over
TCP, a connection that cannot be framed (garbage, a header block too large, no
Content-Length) is closed, and the next connection is served.

The corpus files are written with LF line ends and these placeholders: `$TARGET` (the
server's host:port), `$LOCAL` (our socket's), `$CALLID` (unique per message) and `$LEN`
(the body's length once the line ends are CRLF).
"""

from __future__ import annotations

import random
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from . import sipp
from .dbbackends import Backend
from .server import RunningServer, start_server, write_config
from .test_deposit_e2e import DATA, assert_recording_is, deposit_scenario, rows

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.parametrize("backend", ["sqlite"], indirect=True),
]

TORTURE = DATA / "torture"

# What each corpus message may get: status codes, None for "dropped".
EXPECTED: dict[str, set[int | None]] = {
    "wsinv": {481},  # valid despite its white space; in a dialog we do not have
    "esc01": {404},  # escaped characters: a valid INVITE to an unknown extension
    "escnull": {401},  # %00 in a URI is fine: REGISTER is challenged
    "lwsdisp": {404},  # no space before <, leading CRLFs
    "inv2543": {404},  # RFC 2543 INVITE without a branch
    "unkmeth": {501},  # RFC 3261 8.2.1
    "clerr": {400},  # Content-Length larger than the body
    "ncl": {400},  # negative Content-Length
    "mcl01": {400},  # conflicting Content-Length headers
    "mismatch01": {400},  # CSeq method differs from the request method
    "scalar02": {400},  # CSeq beyond 2**31
    "badvers": {505, None},  # SIP/7.0
    "nocallid": {400, None},
    "nocseq": {400, None},
    "novia": {None},  # no Via: no way to answer
    "insuf": {400, None},  # no From, To, Max-Forwards
    "ltgtruri": {400, None},  # Request-URI in angle brackets
    "unksm": {400, 416, None},  # unknown URI scheme
    "bext01": {420},  # Require: unknown extensions
    "invut": {415, 488},  # INVITE whose body is not SDP
    "unreason": {None},  # a response to nothing
}

# RFC 4475 wants 400 for these: repeated Content-Length headers that disagree, and a CSeq
# number beyond 2**32 - 1 (RFC 3261 8.1.1.5).
STRICT_400 = ("mcl01", "scalar02")

ADMIN_SIP_CONF = """
[alice]
type=friend
host=dynamic
secret=the-right-secret
context=default
"""


@pytest.fixture
def server(backend: Backend, tmp_path: Path) -> Iterator[RunningServer]:
    config = write_config(tmp_path / "etc", backend)
    with (config / "sip.conf").open("a") as sip_conf:
        sip_conf.write("tcpenable=yes\n" + ADMIN_SIP_CONF)
    running = start_server(config)
    yield running
    assert running.stop() == 0, running.log()


class RawUdp:
    """A UDP socket that sends exact bytes and reads the server's answers by Call-ID."""

    def __init__(self, server: RunningServer) -> None:
        self.server = server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.local = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.received: list[bytes] = []

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, (self.server.host, self.server.port))

    def final_for(self, call_id: str | None, wait: float) -> int | None:
        """The first final status for `call_id` (any Call-ID if None) within `wait` s.

        Final answers to an INVITE are acknowledged, so the server stops retransmitting.
        """
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                return None
            self.received.append(data)
            match = re.match(rb"SIP/2\.0 (\d{3}) ", data)
            assert match is not None, f"the server sent us a non-response: {data[:200]!r}"
            code = int(match.group(1))
            if code < 200:
                continue
            if call_id is not None and header(data, "Call-ID") != call_id:
                continue
            if b" INVITE\r\n" in data and code >= 300:
                self.send(ack_for(data, self.server.target))
            return code
        return None

    def drain(self) -> list[bytes]:
        """Whatever arrived and is waiting, without blocking."""
        found = []
        self.sock.settimeout(0)
        while True:
            try:
                found.append(self.sock.recv(65535))
            except (BlockingIOError, TimeoutError):
                return found


def header(data: bytes, name: str) -> str | None:
    match = re.search(rb"^" + name.encode() + rb"[ \t]*:[ \t]*(.*?)\r$", data, re.M | re.I)
    return match.group(1).decode(errors="replace") if match else None


def ack_for(response: bytes, target: str) -> bytes:
    """ACK for a non-2xx final answer: its Via, From, To, Call-ID (RFC 3261 17.1.1.3)."""
    via = header(response, "Via")
    cseq = header(response, "CSeq") or "1 INVITE"
    lines = [
        f"ACK sip:nobody@{target} SIP/2.0",
        f"Via: {via}",
        f"From: {header(response, 'From')}",
        f"To: {header(response, 'To')}",
        f"Call-ID: {header(response, 'Call-ID')}",
        f"CSeq: {cseq.split()[0]} ACK",
        "Max-Forwards: 70",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def load_torture(name: str, target: str, local: str, call_id: str) -> bytes:
    text = (TORTURE / f"{name}.txt").read_text(encoding="utf-8").replace("\n", "\r\n")
    text = text.replace("$TARGET", target).replace("$LOCAL", local).replace("$CALLID", call_id)
    _head, _, body = text.lstrip("\r\n").partition("\r\n\r\n")
    return text.replace("$LEN", str(len(body.encode()))).encode()


def invite_to_nobody(target: str, local: str, call_id: str, extra: bytes = b"") -> bytes:
    """A well-formed INVITE to an extension without dial plan entry, with `extra` headers."""
    sdp = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    sdp += b"m=audio 49217 RTP/AVP 0\r\n"
    head = (
        f"INVITE sip:nobody@{target} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {local};rport;branch=z9hG4bK-{call_id}\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:caller@example.com>;tag=h1\r\n"
        f"To: <sip:nobody@{target}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n"
        "Content-Type: application/sdp\r\n"
    ).encode()
    return head + extra + f"Content-Length: {len(sdp)}\r\n\r\n".encode() + sdp


def binary_cases(target: str, local: str) -> dict[str, tuple[bytes, set[int | None]]]:
    """Hostile datagrams that do not fit a text file."""
    rng = random.Random(4475)
    whole = invite_to_nobody(target, local, "bin-truncated")
    return {
        "garbage": (rng.randbytes(1400), {None}),
        "empty": (b"", {None}),
        "crlf-only": (b"\r\n\r\n", {None}),
        "truncated": (whole[: len(whole) * 3 // 5], {400, None}),
        "nul": (
            invite_to_nobody(target, local, "bin-nul", b"Subject: a\x00b\x00\r\n"),
            {400, 404, None},
        ),
        "nul-in-start-line": (
            invite_to_nobody(target, local, "bin-nul2").replace(b"nobody@", b"no\x00body@", 1),
            {400, 404, None},
        ),
        "non-utf8": (
            invite_to_nobody(target, local, "bin-latin1").replace(
                b"From: <", b'From: "J\xf6rg \xff\xfe\xc3(" <', 1
            ),
            {400, 404, None},
        ),
        "huge-header": (
            invite_to_nobody(target, local, "bin-huge", b"X-Huge: " + b"a" * 60000 + b"\r\n"),
            {400, 404, 413, 513, None},
        ),
        "many-vias": (
            invite_to_nobody(target, local, "bin-vias").replace(
                b"Max-Forwards",
                b"".join(
                    f"Via: SIP/2.0/UDP 192.0.2.{i % 250}:5060;branch=z9hG4bK{i}\r\n".encode()
                    for i in range(800)
                )
                + b"Max-Forwards",
                1,
            ),
            {400, 404, 413, 513, None},
        ),
    }


def options(target: str, local: str, call_id: str) -> bytes:
    return (
        f"OPTIONS sip:{target} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {local};rport;branch=z9hG4bK-{call_id}\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:probe@{local}>;tag=p1\r\nTo: <sip:{target}>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def assert_options_answered(server: RunningServer, name: str) -> None:
    udp = RawUdp(server)
    try:
        udp.send(options(server.target, udp.local, name))
        assert udp.final_for(name, 3) == 200, server.log()[-3000:]
    finally:
        udp.close()


def bad_register(target: str, local: str, index: int) -> bytes:
    """A REGISTER that cannot succeed: no credentials, wrong ones, or for nobody known."""
    user = "alice" if index % 2 else f"scanner{index}"
    authorization = ""
    if index % 3:
        authorization = (
            f'Authorization: Digest username="{user}", realm="asterisk", '
            f'nonce="{index:08x}deadbeef", uri="sip:{target}", '
            'response="0123456789abcdef0123456789abcdef", algorithm=MD5\r\n'
        )
    call_id = f"reg-{index}"
    return (
        f"REGISTER sip:{target} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {local};rport;branch=z9hG4bK-{call_id}\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:{user}@{target}>;tag=r{index}\r\n"
        f"To: <sip:{user}@{target}>\r\nCall-ID: {call_id}\r\nCSeq: 1 REGISTER\r\n"
        f"Contact: <sip:{user}@{local}>\r\nExpires: 3600\r\n{authorization}"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def test_torture_corpus_and_bad_registers_leave_the_server_serving(
    server: RunningServer, backend: Backend, tmp_path: Path
) -> None:
    udp = RawUdp(server)
    outcomes: dict[str, int | None] = {}
    try:
        for name in sorted(EXPECTED):
            call_id = f"torture-{name}"
            udp.send(load_torture(name, server.target, udp.local, call_id))
            # A drop is only visible as silence: wait a little longer for those.
            outcomes[name] = udp.final_for(call_id, 0.6)
        for name, (data, allowed) in binary_cases(server.target, udp.local).items():
            udp.send(data)
            outcomes[name] = udp.final_for(None, 0.6)
            EXPECTED[name] = allowed
        wrong = {name: code for name, code in outcomes.items() if code not in EXPECTED[name]}
        assert not wrong, f"unexpected answers {wrong}\n{server.log()[-4000:]}"

        codes: list[int | None] = []
        for start in range(0, 500, 50):
            for index in range(start, start + 50):
                udp.send(bad_register(server.target, udp.local, index))
            codes += [udp.final_for(f"reg-{index}", 3) for index in range(start, start + 50)]
        assert all(code is not None and 400 <= code < 500 for code in codes), sorted(
            set(codes), key=str
        )
        assert 401 in codes and 403 in codes
        time.sleep(0.3)
        late = udp.drain()
        assert not [d for d in udp.received + late if re.match(rb"SIP/2\.0 2", d)]
    finally:
        udp.close()

    assert_options_answered(server, "after-torture")
    pcap = DATA / "signal3s_pcmu.pcap"
    xml = deposit_scenario(
        "1000", pcap, [0, 101], [sipp.pause(3200), sipp.bye("1000"), sipp.recv(200)]
    )
    sipp.run_sipp(tmp_path / "sipp", xml, server.target, timeout=60).check()
    stored = rows(backend)
    assert len(stored) == 1, server.log()
    assert_recording_is(stored[0], pcap, 3.0)
    assert "Traceback" not in server.log()


def test_rfc4475_conflicting_length_and_huge_cseq_get_400(server: RunningServer) -> None:
    udp = RawUdp(server)
    try:
        for name in STRICT_400:
            udp.send(load_torture(name, server.target, udp.local, f"strict-{name}"))
            assert udp.final_for(f"strict-{name}", 2) == 400, name
    finally:
        udp.close()


# -- hypothesis --------------------------------------------------------------------------

METHODS = ["INVITE", "OPTIONS", "REGISTER", "BYE", "CANCEL", "ACK", "INFO", "UPDATE", "PRACK"]
METHODS += ["SUBSCRIBE", "NOTIFY", "X-UNKNOWN"]
EXTRA_HEADERS = [
    "Contact", "m", "Content-Type", "c", "Require", "Supported", "Authorization", "Expires",
    "Session-Expires", "Route", "Record-Route", "Event", "Accept", "Diversion", "X-Fuzz",
]  # fmt: skip
SDP = (
    "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    "m=audio 49217 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
)

hostile_values = st.one_of(
    st.binary(max_size=80),
    st.text(max_size=80).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.integers(-(2**70), 2**70).map(lambda n: str(n).encode()),
    st.sampled_from(
        [b"", b"<sip:a@b>;tag=1", b"1 INVITE", b"1 X", b"-1", b";;;,,,", b"<", b'"', b"%00"]
    ),
)


@st.composite
def mutated_sdp(draw: st.DrawFn) -> bytes:
    """The SDP offer with some of its lines replaced by hostile ones."""
    lines = SDP.encode().split(b"\r\n")
    for _ in range(draw(st.integers(1, 4))):
        index = draw(st.integers(0, len(lines) - 1))
        prefix = draw(st.sampled_from([b"", b"m=audio ", b"c=IN IP4 ", b"a=rtpmap:", b"o=- "]))
        lines[index] = prefix + draw(hostile_values)
    return b"\r\n".join(lines)


@st.composite
def sip_like(draw: st.DrawFn, target: str, local: str) -> bytes:
    """A request that parses, or nearly: each mandatory header may be hostile or missing,
    and hostile extra headers and bodies reach the handlers (INVITE's SDP, REGISTER's
    digest, INFO's DTMF...). `$N` is made unique when sent, so no two share a branch."""
    method = draw(st.sampled_from(METHODS))
    headers = [
        (b"Via", f"SIP/2.0/UDP {local};rport;branch=z9hG4bK-fz$N".encode()),
        (b"From", b"<sip:fuzz@example.com>;tag=fz$N"),
        (b"To", f"<sip:nobody@{target}>".encode()),
        (b"Call-ID", b"fuzz-$N"),
        (b"CSeq", f"1 {method}".encode()),
        (b"Max-Forwards", b"70"),
    ]
    lines = [f"{method} sip:nobody@{target} SIP/2.0".encode()]
    for name, value in headers:
        fate = draw(st.integers(0, 11))
        if fate == 0:
            continue
        lines.append(name + b": " + (draw(hostile_values) if fate == 1 else value))
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from(EXTRA_HEADERS)).encode()
        separator = draw(st.sampled_from([b": ", b":", b" : ", b":\r\n "]))
        lines.append(name + separator + draw(hostile_values))
    body = draw(st.one_of(st.just(b""), st.binary(max_size=200), mutated_sdp()))
    if body and draw(st.booleans()):
        lines.append(b"Content-Type: application/sdp")
    lines.append(b"Content-Length: " + draw(st.sampled_from([str(len(body)).encode(), b"7"])))
    end = draw(st.sampled_from([b"\r\n", b"\n"]))
    return end.join(lines) + end + end + body


@st.composite
def mutated(draw: st.DrawFn, target: str, local: str) -> bytes:
    """A valid OPTIONS with a few bytes replaced, inserted or cut."""
    data = bytearray(options(target, local, "fuzz-$N"))
    for _ in range(draw(st.integers(1, 6))):
        position = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["replace", "insert", "cut"]))
        chunk = draw(st.binary(min_size=1, max_size=8))
        if action == "replace":
            data[position : position + len(chunk)] = chunk
        elif action == "insert":
            data[position:position] = chunk
        else:
            del data[position : position + len(chunk)]
    return bytes(data)


def test_hypothesis_datagrams_leave_the_server_answering_options(server: RunningServer) -> None:
    udp = RawUdp(server)
    sent = [0]
    answers: list[bytes] = []
    datagrams = st.one_of(
        st.binary(max_size=1500),
        sip_like(server.target, udp.local),
        sip_like(server.target, udp.local),
        mutated(server.target, udp.local),
    )

    def collect() -> None:
        for data in udp.drain():
            answers.append(data)
            code = data[8:11]
            if b" INVITE\r\n" in data and code.isdigit() and int(code) >= 300:
                udp.send(ack_for(data, server.target))

    @settings(
        max_examples=400,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(data=datagrams)
    def fire(data: bytes) -> None:
        sent[0] += 1
        udp.send(data.replace(b"$N", str(sent[0]).encode()))
        if sent[0] % 20 == 0:
            time.sleep(0.02)  # let the server keep up: this is about content, not load
            collect()

    try:
        fire()
        time.sleep(0.3)
        collect()
    finally:
        udp.close()
    assert sent[0] >= 400
    for data in answers:
        assert data.startswith(b"SIP/2.0 "), data[:200]
    # The fuzz reached the handlers: many requests parsed well enough to be answered.
    finals = {data[8:11] for data in answers} - {b"100"}
    assert len(answers) > 50 and len(finals) >= 4, finals
    assert server.process.poll() is None
    assert_options_answered(server, "after-fuzz")
    assert "Traceback" not in server.log(), server.log()[-5000:]


# -- TCP -------------------------------------------------------------------------------------


def closed_by_server(connection: socket.socket, timeout: float = 3) -> bool:
    """Read until the server closes the connection (True) or stays silent (False)."""
    connection.settimeout(timeout)
    try:
        while connection.recv(65535):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


def tcp_options(server: RunningServer, call_id: str) -> bytes:
    return (
        f"OPTIONS sip:{server.target};transport=tcp SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bK-{call_id}\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=t1\r\n"
        f"To: <sip:{server.target}>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def read_response(connection: socket.socket) -> bytes:
    connection.settimeout(3)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65535)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    return data


def test_tcp_connections_that_cannot_be_framed_are_closed(server: RunningServer) -> None:
    rng = random.Random(18)
    hostile = {
        "garbage": rng.randbytes(3000) + b"\r\n\r\n",
        "no-content-length": tcp_options(server, "tcp-nocl").replace(b"Content-Length: 0\r\n", b""),
        "huge-header": b"OPTIONS sip:x SIP/2.0\r\nX-Huge: " + b"a" * 70000,
        "huge-body": tcp_options(server, "tcp-big").replace(
            b"Content-Length: 0", b"Content-Length: 99999999"
        ),
        "negative-length": tcp_options(server, "tcp-neg").replace(
            b"Content-Length: 0", b"Content-Length: -5"
        ),
    }
    for name, data in hostile.items():
        with socket.create_connection((server.host, server.port), timeout=3) as connection:
            connection.sendall(data)
            assert closed_by_server(connection), f"{name}: connection left open"

    # A good message then garbage in one write: the message is still answered.
    with socket.create_connection((server.host, server.port), timeout=3) as connection:
        connection.sendall(tcp_options(server, "tcp-before") + b"junk\r\n\r\n")
        answer = read_response(connection)
        assert answer.startswith(b"SIP/2.0 200"), answer
        assert closed_by_server(connection)

    # 100 connections left hanging mid-header do not starve the next one.
    hanging = [socket.create_connection((server.host, server.port), timeout=3) for _ in range(100)]
    try:
        for connection in hanging:
            connection.sendall(b"OPTIONS sip:x SIP/2.0\r\nX-Slow: " + b"s" * 8000)
        with socket.create_connection((server.host, server.port), timeout=3) as connection:
            connection.sendall(tcp_options(server, "tcp-beside-hanging"))
            assert read_response(connection).startswith(b"SIP/2.0 200")
    finally:
        for connection in hanging:
            connection.close()

    with socket.create_connection((server.host, server.port), timeout=3) as connection:
        connection.sendall(b"\r\n\r\n")  # RFC 5626 ping first
        connection.sendall(tcp_options(server, "tcp-after"))
        answer = read_response(connection)
        assert answer.lstrip(b"\r\n").startswith(b"SIP/2.0 200"), answer
        assert b"Call-ID: tcp-after" in answer
    assert_options_answered(server, "after-tcp")
    assert "Traceback" not in server.log(), server.log()[-5000:]


# -- refused before the dial plan: injected extensions, unreachable media (issue 7) --------


def invite_with(target: str, local: str, call_id: str, uri_user: str, sdp_address: str) -> bytes:
    family = "IP6" if ":" in sdp_address else "IP4"
    sdp = (
        f"v=0\r\no=- 1 1 IN {family} {sdp_address}\r\ns=-\r\nc=IN {family} {sdp_address}\r\n"
        "t=0 0\r\nm=audio 49217 RTP/AVP 0\r\n"
    ).encode()
    head = (
        f"INVITE sip:{uri_user}@{target} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {local};rport;branch=z9hG4bK-{call_id}\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:caller@example.com>;tag=h1\r\n"
        f"To: <sip:{uri_user}@{target}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n"
        "Content-Type: application/sdp\r\n"
    ).encode()
    return head + f"Content-Length: {len(sdp)}\r\n\r\n".encode() + sdp


def test_injected_extension_and_ipv6_offer_are_refused_and_calls_go_on(
    server: RunningServer, backend: Backend, tmp_path: Path
) -> None:
    """`sip:1001%40secret,@host` would match `_X.` and reach VoiceMail(${EXTEN}@default):
    it gets 404. An IPv4 call whose SDP offers `c=IN IP6` gets 488 (Warning 301)."""
    udp = RawUdp(server)
    try:
        udp.send(invite_with(server.target, udp.local, "inject", "1001%40secret,", "127.0.0.1"))
        assert udp.final_for("inject", 5) == 404
        udp.send(invite_with(server.target, udp.local, "v6-offer", "1000", "fd00::2"))
        assert udp.final_for("v6-offer", 5) == 488
        answer = next(d for d in udp.received if d.startswith(b"SIP/2.0 488"))
        assert header(answer, "Warning") == '301 - "Incompatible network address formats"'
    finally:
        udp.close()
    server.wait_for_log("not dial plan safe")
    pcap = DATA / "signal3s_pcmu.pcap"
    xml = deposit_scenario(
        "1000", pcap, [0, 101], [sipp.pause(3200), sipp.bye("1000"), sipp.recv(200)]
    )
    sipp.run_sipp(tmp_path / "sipp", xml, server.target, timeout=60).check()
    assert len(rows(backend)) == 1, server.log()
