"""SIP over TLS when a certificate is configured (sip.conf tlsenable, tlscertfile...)."""

from __future__ import annotations

import re
import socket
import ssl
import subprocess
from pathlib import Path

import pytest

from .dbbackends import Backend
from .server import free_port, start_server, write_config

pytestmark = pytest.mark.timeout(60)


def self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_options_over_tls_is_answered_on_the_tls_port(backend: Backend, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    port = free_port(socket.SOCK_STREAM)
    config = write_config(tmp_path / "etc", backend)
    with (config / "sip.conf").open("a") as sip_conf:
        sip_conf.write(
            f"tlsenable=yes\ntlsbindaddr=127.0.0.1:{port}\ntlscertfile={cert}\n"
            f"tlsprivatekey={key}\n"
        )
    server = start_server(config)
    try:
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with context.wrap_socket(raw) as tls:
                local = tls.getsockname()
                tls.sendall(
                    (
                        f"OPTIONS sip:1000@127.0.0.1:{port};transport=tls SIP/2.0\r\n"
                        f"Via: SIP/2.0/TLS 127.0.0.1:{local[1]};branch=z9hG4bK-tls-1\r\n"
                        f"From: <sips:probe@127.0.0.1>;tag=t1\r\n"
                        f"To: <sips:1000@127.0.0.1>\r\nCall-ID: tls-1\r\nCSeq: 1 OPTIONS\r\n"
                        "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
                    ).encode()
                )
                answer = b""
                while b"\r\n\r\n" not in answer:
                    answer += tls.recv(4096)
        assert answer.startswith(b"SIP/2.0 200 "), answer
        assert re.search(rb"^Allow: .*INVITE", answer, re.M)
    finally:
        assert server.stop() == 0, server.log()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_tls_without_a_certificate_stops_startup_with_a_clear_error(
    backend: Backend, tmp_path: Path
) -> None:
    from .server import run_cli

    config = write_config(tmp_path / "etc", backend)
    with (config / "sip.conf").open("a") as sip_conf:
        sip_conf.write("tlsenable=yes\n")
    result = run_cli("serve", "-C", str(config), timeout=30)
    assert result.returncode == 1
    assert "tlsenable=yes needs tlscertfile" in result.stderr
    assert "Traceback" not in result.stderr
