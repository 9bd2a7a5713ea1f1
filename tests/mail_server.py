"""A real aiosmtpd SMTP server on 127.0.0.1 for the mail tests: a handler keeping what it
received (or answering with a chosen code), a fixture starting servers on free ports, and a
self-signed certificate made with openssl. A test module makes fixtures of them:

    smtp_server = pytest.fixture(mail_server.smtp_servers)
    certificate = pytest.fixture(scope="module")(mail_server.make_certificate)
"""

from __future__ import annotations

import socket
import ssl
import subprocess
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Handler:
    """Keeps what the server received; answers RCPT or DATA with a chosen code."""

    def __init__(self, rcpt_answer: str = "", data_answer: str = "") -> None:
        self.rcpt_answer = rcpt_answer
        self.data_answer = data_answer
        self.received: list[tuple[str, list[str], bytes]] = []
        self.logins: list[tuple[str, str, str]] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if self.rcpt_answer and address.startswith("nobody@"):
            return self.rcpt_answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        if self.data_answer:
            return self.data_answer
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 Message accepted"

    def authenticator(self, server, session, envelope, mechanism, auth_data):
        assert isinstance(auth_data, LoginPassword)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        self.logins.append((mechanism, login, password))
        return AuthResult(success=(login, password) == ("vm", "s3cret"), handled=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def smtp_servers():
    """Start an aiosmtpd server; yields a function (handler, **SMTP options) -> port."""
    controllers: list[Controller] = []

    def start(handler: Handler, **options) -> int:
        port = free_port()
        controller = Controller(handler, hostname="127.0.0.1", port=port, **options)
        controller.start()
        controllers.append(controller)
        return port

    yield start
    for controller in controllers:
        controller.stop()


def make_certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with openssl."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


def server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(certificate[0]), str(certificate[1]))
    return context
