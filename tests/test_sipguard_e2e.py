"""End to end: the SIP abuse limits of the running server (issue 11, toll fraud and abuse).

Sources are told apart by IP address, so the tests send from several loopback addresses
(127.0.0.2, 127.0.0.3...; Linux answers the whole of 127/8 on `lo`) to the server on
127.0.0.1. The limits are set low in this test's sip.conf; the defaults are far above what
the rest of the suite sends.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import sipua
from .dbbackends import Backend
from .server import RunningServer, free_port, start_server, write_config

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.parametrize("backend", ["sqlite"], indirect=True),
]

GUARD = """registerrate=2
registerburst=10
requestrate=5
requestburst=40
floodblock=3
floodexempt=127.0.0.3, 10.9.0.0/16
authfailuresperip=100
authfailuresperuser=5
authfailurewindow=60
authlockout=60
tcpenable=yes
tcpmaxconnectionsperip=3
tcpauthlimit=50
tcpauthtimeout=2
tcpidletimeout=6
"""

PEERS = """
[alice]
type=friend
host=dynamic
secret=alice-secret
context=default

[bob]
type=friend
host=dynamic
secret=bob-secret
context=default
transport=udp,tcp

[pbx]
type=peer
host=127.0.0.4
context=default
"""


@pytest.fixture
def server(backend: Backend, tmp_path: Path) -> Iterator[RunningServer]:
    config = write_config(tmp_path / "etc", backend)
    with (config / "sip.conf").open("a") as sip_conf:
        # TCP on a port of its own: bindport=0's UDP port may be taken for TCP.
        tcp_port = free_port(socket.SOCK_STREAM)
        sip_conf.write(GUARD + f"tcpbindaddr=127.0.0.1:{tcp_port}\n" + PEERS)
    running = start_server(config)
    running.tcp_port = tcp_port  # type: ignore[attr-defined]
    yield running
    assert running.stop() == 0, running.log()
    assert "Traceback" not in running.log(), running.log()


class Phone:
    """A UDP socket on one loopback address that sends requests and reads the answers."""

    def __init__(self, server: RunningServer, address: str) -> None:
        self.server = server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((address, 0))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.local = f"{address}:{self.sock.getsockname()[1]}"
        self.cseq = 0

    def __enter__(self) -> Phone:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def request(
        self, method: str, user: str, call_id: str, authorization: str = "", **extra: str
    ) -> bytes:
        self.cseq += 1
        target = self.server.target
        headers = [
            ("Via", f"SIP/2.0/UDP {self.local};rport;branch={sipua.new_branch()}"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:{user}@{target}>;tag={sipua.new_token('f')}"),
            ("To", f"<sip:{user}@{target}>"),
            ("Call-ID", call_id),
            ("CSeq", f"{self.cseq} {method}"),
            ("Contact", f"<sip:{user}@{self.local}>"),
        ]
        if method == "REGISTER":
            headers.append(("Expires", "120"))
        if authorization:
            headers.append(("Authorization", authorization))
        headers += list(extra.items())
        uri = f"sip:{target}" if method == "REGISTER" else f"sip:{user}@{target}"
        return sipua.build(f"{method} {uri} SIP/2.0", headers)

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, (self.server.host, self.server.port))

    def answers(self, wait: float) -> list[sipua.SipMessage]:
        """Every response that arrives until `wait` seconds pass without one."""
        out: list[sipua.SipMessage] = []
        self.sock.settimeout(wait)
        while True:
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                return out
            message = sipua.parse(data)
            if message.is_response and message.status >= 200:
                out.append(message)

    def final(self, data: bytes, wait: float = 5.0) -> sipua.SipMessage:
        """The final answer to the request `data` (answers to others are skipped)."""
        self.send(data)
        call_id = sipua.parse(data).header("Call-ID")
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                message = sipua.parse(self.sock.recv(65535))
            except TimeoutError:
                break
            if message.is_response and message.status >= 200:
                if message.header("Call-ID") == call_id:
                    return message
        raise AssertionError(f"no final answer to {call_id} from the server")

    def options_ok(self) -> bool:
        return self.final(self.request("OPTIONS", "probe", sipua.new_token("o-"))).status == 200

    def register(self, user: str, password: str) -> sipua.SipMessage:
        """REGISTER, answer the challenge with `password`; the final answer to that."""
        call_id = sipua.new_token("reg-")
        first = self.final(self.request("REGISTER", user, call_id))
        if first.status != 401:
            return first
        challenge = sipua.parse_challenge(first.header("WWW-Authenticate") or "")
        value = sipua.digest_authorization(
            challenge, "REGISTER", f"sip:{self.server.target}", user, password
        )
        return self.final(self.request("REGISTER", user, call_id, value))


def flood(phone: Phone, method: str, count: int, batch: int = 20) -> list[sipua.SipMessage]:
    """Send `count` requests in batches, each after the answers to the last (or silence):
    as fast as the server answers, without overrunning its socket's receive buffer."""
    answers: list[sipua.SipMessage] = []
    for start in range(0, count, batch):
        for index in range(start, min(count, start + batch)):
            phone.send(phone.request(method, "scanner", f"flood-{method}-{index}-{phone.local}"))
        answers += phone.answers(0.5)
    return answers


def test_register_flood_gets_503_with_retry_after_then_silence_others_still_register(
    server: RunningServer,
) -> None:
    with Phone(server, "127.0.0.2") as scanner, Phone(server, "127.0.0.1") as alice:
        answers = flood(scanner, "REGISTER", 100)
        codes = [m.status for m in answers]
        # The burst (10, and what 2/s added meanwhile) is served, then three 503s, then nothing.
        assert 10 <= codes.count(401) <= 16, codes
        refused = [m for m in answers if m.status == 503]
        assert len(refused) == 3, codes
        assert {m.header("Retry-After") for m in refused} == {"3"}
        assert len(answers) < 20  # the other 80-odd REGISTERs were ignored
        # Another source registers meanwhile.
        assert alice.register("alice", "alice-secret").status == 200
        # The flood goes on: still ignored, and it keeps the limit on.
        assert flood(scanner, "REGISTER", 20) == []
        # Quiet for the Retry-After: served again.
        time.sleep(3.5)
        assert scanner.register("bob", "bob-secret").status == 200
        assert alice.options_ok()
    log = server.wait_for_log("SIP REGISTER flood from 127.0.0.2")
    assert len(re.findall(r"REGISTER flood from 127\.0\.0\.2", log)) == 1


def test_floodexempt_address_and_configured_peer_are_never_limited(
    server: RunningServer,
) -> None:
    with (
        Phone(server, "127.0.0.3") as trunk,
        Phone(server, "127.0.0.4") as pbx,
        Phone(server, "127.0.0.5") as stranger,
    ):
        # floodexempt=127.0.0.3: 100 REGISTERs, 100 answers.
        assert [m.status for m in flood(trunk, "REGISTER", 100)] == [401] * 100
        # [pbx] host=127.0.0.4 sends 300 requests at once, as a PBX trunk does: all answered.
        assert [m.status for m in flood(pbx, "OPTIONS", 300)] == [200] * 300
        # The same from an address nobody configured is cut at the burst (40).
        codes = [m.status for m in flood(stranger, "OPTIONS", 300)]
        assert 40 <= codes.count(200) <= 60 and codes.count(503) == 3, codes
    assert "SIP request flood from 127.0.0.5" in server.wait_for_log("request flood")
    assert "flood from 127.0.0.3" not in server.log()
    assert "flood from 127.0.0.4" not in server.log()


def test_user_attacked_from_many_addresses_is_locked_but_its_phone_is_not(
    server: RunningServer,
) -> None:
    with Phone(server, "127.0.0.1") as own_phone:
        assert own_phone.register("alice", "alice-secret").status == 200
    # Five guesses, each from another address (authfailuresperip=100 never blocks one).
    for host in range(10, 15):
        with Phone(server, f"127.0.0.{host}") as guesser:
            assert guesser.register("alice", f"guess-{host}").status == 403
    log = server.wait_for_log("digest authentication for 'alice' locked")
    # Locked: the right password from a new address is not even checked; 503 says when.
    with Phone(server, "127.0.0.20") as newcomer:
        locked = newcomer.register("alice", "alice-secret")
        assert locked.status == 503, locked
        assert 1 <= int(locked.header("Retry-After") or "0") <= 60
        # Wrong guesses go on being refused the same way, without a second log line.
        assert newcomer.register("alice", "guess-again").status == 503
        # Another user is not affected.
        assert newcomer.register("bob", "bob-secret").status == 200
    # The phone that authenticated before still registers.
    with Phone(server, "127.0.0.1") as own_phone:
        assert own_phone.register("alice", "alice-secret").status == 200
    log = server.log()
    assert log.count("digest authentication for 'alice' locked") == 1
    assert "alice-secret" not in log


def _tcp(server: RunningServer, source: str) -> socket.socket:
    """A TCP connection from `source` to the server's TCP port (set by the fixture)."""
    port = server.tcp_port  # type: ignore[attr-defined]
    return socket.create_connection((server.host, port), 5, source_address=(source, 0))


def _closed_by_server(sock: socket.socket, wait: float) -> bool:
    """True when the server closes (or resets) the connection within `wait` seconds."""
    sock.settimeout(wait)
    try:
        while True:
            data = sock.recv(65535)
            if not data:
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_tcp_connections_are_bounded_per_address_and_unauthenticated_ones_time_out(
    server: RunningServer,
) -> None:
    # tcpmaxconnectionsperip=3: the fourth connection from one address is closed at once.
    held = [_tcp(server, "127.0.0.30") for _ in range(3)]
    try:
        fourth = _tcp(server, "127.0.0.30")
        assert _closed_by_server(fourth, 2.0)
        fourth.close()
        other = _tcp(server, "127.0.0.31")  # another address is still let in
        other.sendall(
            sipua.build(
                f"OPTIONS sip:{server.target} SIP/2.0",
                [
                    ("Via", "SIP/2.0/TCP 127.0.0.31:5060;branch=" + sipua.new_branch()),
                    ("Max-Forwards", "70"),
                    ("From", f"<sip:probe@{server.target}>;tag=t1"),
                    ("To", f"<sip:{server.target}>"),
                    ("Call-ID", "tcp-options-1"),
                    ("CSeq", "1 OPTIONS"),
                    ("Content-Length", "0"),
                ],
            )
        )
        other.settimeout(5)
        assert other.recv(65535).startswith(b"SIP/2.0 200")
        # tcpauthtimeout=2: none of them authenticated, so all are closed (before the 6 s
        # of tcpidletimeout would close them).
        for sock in [*held, other]:
            assert _closed_by_server(sock, 5.0)
    finally:
        for sock in held:
            sock.close()
    log = server.wait_for_log("not authenticated within 2 s (tcpauthtimeout)")
    assert "connection from 127.0.0.30" in log and "tcpmaxconnectionsperip=3" in log


def test_authenticated_tcp_connection_stays_until_idle(server: RunningServer) -> None:
    sock = _tcp(server, "127.0.0.40")
    try:
        local = f"127.0.0.40:{sock.getsockname()[1]}"
        reader = sock.makefile("rb")

        def register(cseq: int, authorization: str = "") -> sipua.SipMessage:
            headers = [
                ("Via", f"SIP/2.0/TCP {local};branch={sipua.new_branch()}"),
                ("Max-Forwards", "70"),
                ("From", f"<sip:bob@{server.target}>;tag=tb"),
                ("To", f"<sip:bob@{server.target}>"),
                ("Call-ID", "tcp-reg-bob"),
                ("CSeq", f"{cseq} REGISTER"),
                ("Contact", f"<sip:bob@{local};transport=tcp>"),
                ("Expires", "120"),
            ]
            if authorization:
                headers.append(("Authorization", authorization))
            sock.sendall(sipua.build(f"REGISTER sip:{server.target} SIP/2.0", headers))
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                head += reader.read(1)
            message = sipua.parse(head)
            length = int(message.header("Content-Length") or "0")
            return sipua.parse(head + reader.read(length))

        sock.settimeout(5)
        first = register(1)
        assert first.status == 401
        value = sipua.digest_authorization(
            sipua.parse_challenge(first.header("WWW-Authenticate") or ""),
            "REGISTER",
            f"sip:{server.target}",
            "bob",
            "bob-secret",
        )
        assert register(2, value).status == 200
        # Authenticated: past tcpauthtimeout (2 s) it stays open...
        assert not _closed_by_server(sock, 3.0)
        # ...until tcpidletimeout (6 s) without traffic closes it.
        assert _closed_by_server(sock, 10.0)
    finally:
        sock.close()
    assert "closing idle TCP connection from 127.0.0.40" in server.wait_for_log("idle TCP")
