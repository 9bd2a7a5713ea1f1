"""End to end, against the real server: REGISTER handling that must parse what it reads."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .dbbackends import Backend
from .server import RunningServer
from .test_mwi_e2e import PASSWORD, start_mwi_server
from .test_sipsec_phone import RawPhone, digest_answer

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.parametrize("backend", ["sqlite"], indirect=True),
]


@pytest.fixture
def server(backend: Backend, tmp_path: Path) -> Iterator[RunningServer]:
    running = start_mwi_server(tmp_path, backend)
    yield running
    assert running.stop() == 0, running.log()
    assert "Traceback" not in running.log(), running.log()


def register(server: RunningServer, user: str, cseq: int, *authorizations: str) -> str:
    lines = [
        f"REGISTER sip:{server.target} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:[port];branch=z9hG4bK-reg-{user}-{cseq};rport",
        "Max-Forwards: 70",
        f"From: <sip:{user}@{server.host}>;tag=reg-{user}",
        f"To: <sip:{user}@{server.host}>",
        f"Call-ID: reg-{user}@127.0.0.1",
        f"CSeq: {cseq} REGISTER",
        f"Contact: <sip:{user}@127.0.0.1:[port]>",
        "Expires: 120",
    ]
    lines += [f"Authorization: {value}" for value in authorizations]
    return "\n".join(lines) + "\n\n"


def challenge(server: RunningServer, phone: RawPhone, user: str) -> str:
    phone.send(register(server, user, 1))
    response = phone.response(1)
    assert response.code == 401
    return response.headers["WWW-Authenticate"]


def test_credentials_for_another_realm_before_ours_do_not_hide_ours(
    server: RunningServer,
) -> None:
    """RFC 3261 22.3: one Authorization per realm; the one for our realm is checked."""
    with RawPhone((server.host, server.port)) as phone:
        www = challenge(server, phone, "6001")
        uri = f"sip:{server.target}"
        ours = digest_answer(www, "REGISTER", uri, "6001", PASSWORD)
        other = (
            'Digest username="6001", realm="proxy.example", nonce="abc", '
            f'uri="{uri}", response="00000000000000000000000000000000"'
        )
        phone.send(register(server, "6001", 2, other, ours))
        assert phone.response(2).code == 200
    assert "peer 6001 registered" in server.log()
