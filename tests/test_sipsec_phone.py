"""Helpers, no tests: a raw UDP SIP phone on 127.0.0.1 for the security tests.

It sends exactly the bytes a test forges (a To header with "tag=" in its display name, a
foreign Call-ID) and records every message the server sends back, so a test can assert that
no NOTIFY came.

It answers the digest challenge itself (RFC 2617, qop=auth, MD5) and every NOTIFY with 200,
so the server has no reason to retransmit.
"""

from __future__ import annotations

import hashlib
import secrets
import socket
import time
from dataclasses import dataclass, field

from sipmessage import Request, Response

from channels.sip.auth import parse_credentials
from channels.sip.messages import parse_message, serialize
from channels.sip.mwi import header_tag

from .server import RunningServer


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def digest_answer(
    challenge: str, method: str, uri: str, username: str, password: str, nc: int = 1
) -> str:
    """The Authorization value answering a `WWW-Authenticate: Digest ...` challenge."""
    params = parse_credentials(challenge)
    realm, nonce = params["realm"], params["nonce"]
    cnonce = secrets.token_hex(8)
    nc_text = f"{nc:08x}"
    ha1 = _md5(f"{username}:{realm}:{password}")
    ha2 = _md5(f"{method}:{uri}")
    response = _md5(f"{ha1}:{nonce}:{nc_text}:{cnonce}:auth:{ha2}")
    return (
        f'Digest username="{username}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
        f'response="{response}", algorithm=MD5, qop=auth, nc={nc_text}, cnonce="{cnonce}"'
    )


@dataclass
class RawPhone:
    """One UDP socket talking to the server at `target` (host, port)."""

    target: tuple[str, int]
    notify_code: int = 200  # how NOTIFYs are answered
    sock: socket.socket = field(init=False)
    received: list[Request | Response] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawPhone:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, text: str) -> None:
        """Send a message written with \\n line ends; [port] is our port."""
        text = text.replace("[port]", str(self.port))
        head, _, body = text.partition("\n\n")
        data = head.strip("\n").replace("\n", "\r\n") + "\r\n"
        data += f"Content-Length: {len(body.encode())}\r\n\r\n" + body
        self.sock.sendto(data.encode(), self.target)

    def _receive_one(self, deadline: float) -> Request | Response | None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        self.sock.settimeout(remaining)
        try:
            data, _ = self.sock.recvfrom(65535)
        except TimeoutError:
            return None
        message = parse_message(data)
        self.received.append(message)
        if isinstance(message, Request) and message.method == "NOTIFY":
            self._answer(message)
        return message

    def _answer(self, request: Request) -> None:
        response = Response(self.notify_code, "OK" if self.notify_code == 200 else "No")
        for name in ("Via", "From", "To", "Call-ID", "CSeq"):
            for value in request.headers.getlist(name):
                response.headers.add(name, value)
        self.sock.sendto(serialize(response), self.target)

    def response(self, cseq: int, timeout: float = 10.0) -> Response:
        """The final response to our request with this CSeq number (NOTIFYs are answered)."""
        deadline = time.monotonic() + timeout
        while True:
            message = self._receive_one(deadline)
            if message is None:
                raise AssertionError(f"no final response to CSeq {cseq}: {self.received}")
            if (
                isinstance(message, Response)
                and message.code >= 200
                and message.headers["CSeq"].split()[0] == str(cseq)
            ):
                return message

    def notify(self, timeout: float = 10.0) -> Request | None:
        """The next NOTIFY within `timeout` seconds (answered 200), or None."""
        deadline = time.monotonic() + timeout
        while True:
            message = self._receive_one(deadline)
            if message is None:
                return None
            if isinstance(message, Request) and message.method == "NOTIFY":
                return message

    def notifies(self) -> list[Request]:
        return [m for m in self.received if isinstance(m, Request) and m.method == "NOTIFY"]


def to_tag(response: Response) -> str:
    tag = header_tag(response.headers["To"])
    assert tag, response.headers["To"]
    return tag


def wait_for_log(server: RunningServer, text: str, timeout: float = 10.0) -> str:
    """The server's log once it holds `text`."""
    return server.wait_for_log(text, timeout)
