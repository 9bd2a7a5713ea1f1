"""SIP and RTP over IPv6 (the loopback ::1), where the host has it."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from .dbbackends import Backend
from .server import start_server, write_config

pytestmark = pytest.mark.timeout(60)


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


def request(method: str, port: int, local_port: int, cseq: int, extra: str = "",
            body: str = "", to_tag: str = "") -> bytes:  # fmt: skip
    return (
        f"{method} sip:1000@[::1]:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP [::1]:{local_port};branch=z9hG4bK-v6-{method}-{cseq};rport\r\n"
        f"From: <sip:5551234@[::1]:{local_port}>;tag=v6\r\n"
        f"To: <sip:1000@[::1]:{port}>{to_tag}\r\nCall-ID: v6-call\r\nCSeq: {cseq} {method}\r\n"
        f"Contact: <sip:5551234@[::1]:{local_port}>\r\nMax-Forwards: 70\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


@pytest.mark.skipif(not has_ipv6_loopback(), reason="this host has no IPv6 loopback")
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_call_over_ipv6_gets_an_ip6_answer_and_rtp(backend: Backend, tmp_path: Path) -> None:
    config = write_config(tmp_path / "etc", backend)
    sip_conf = config / "sip.conf"
    sip_conf.write_text(sip_conf.read_text().replace("bindaddr=127.0.0.1", "bindaddr=::1"))
    server = start_server(config)
    assert server.host == "[::1]"
    with (
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sip,
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as rtp,
    ):
        sip.bind(("::1", 0))
        rtp.bind(("::1", 0))
        sip.settimeout(5)
        rtp.settimeout(5)
        local, media = sip.getsockname()[1], rtp.getsockname()[1]
        sdp = (
            f"v=0\r\no=- 1 1 IN IP6 ::1\r\ns=-\r\nc=IN IP6 ::1\r\nt=0 0\r\n"
            f"m=audio {media} RTP/AVP 0\r\n"
        )
        try:
            sip.sendto(
                request("INVITE", server.port, local, 1, "Content-Type: application/sdp\r\n", sdp),
                ("::1", server.port),
            )
            answer = b""
            while not answer.startswith(b"SIP/2.0 200"):
                answer = sip.recv(65535)
            assert b"c=IN IP6 ::1" in answer, answer
            assert re.search(rb"^Contact: <sip:1000@\[::1\]:\d+>", answer, re.M), answer
            to_tag = re.search(rb"^To: .*(;tag=[^\r\n;]+)", answer, re.M).group(1).decode()
            sip.sendto(request("ACK", server.port, local, 1, to_tag=to_tag), ("::1", server.port))
            packet, source = rtp.recvfrom(2048)  # the greeting, over IPv6
            assert packet[0] >> 6 == 2 and packet[1] & 0x7F == 0
            assert source[0] == "::1"
            sip.sendto(request("BYE", server.port, local, 2, to_tag=to_tag), ("::1", server.port))
            bye_answer = b""
            while b"CSeq: 2 BYE" not in bye_answer:
                bye_answer = sip.recv(65535)
            assert bye_answer.startswith(b"SIP/2.0 200")
        finally:
            assert server.stop() == 0, server.log()
