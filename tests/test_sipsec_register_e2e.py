"""End to end, against the real server: REGISTER handling that must parse what it reads."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .dbbackends import Backend
from .server import RunningServer, start_server, write_config
from .test_mwi_e2e import PASSWORD, PEERS
from .test_sipsec_phone import RawPhone, digest_answer, wait_for_log

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.parametrize("backend", ["sqlite"], indirect=True),
]


# 6201 may only use TLS, 6202 TCP or UDP; both have a mailbox (for SUBSCRIBE).
TRANSPORT_PEERS = f"""
[6201]
type=friend
host=dynamic
secret={PASSWORD}
mailbox=1000@default
transport=tls

[6202]
type=friend
host=dynamic
secret={PASSWORD}
mailbox=1000@default
transport=tcp,udp
"""


@pytest.fixture
def server(backend: Backend, tmp_path: Path) -> Iterator[RunningServer]:
    config = write_config(tmp_path / "etc", backend)
    with (config / "sip.conf").open("a") as sip_conf:
        sip_conf.write(PEERS + TRANSPORT_PEERS)
    running = start_server(config)
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
    """RFC 3261 22.3: one Authorization per realm; the one for our realm is checked, and
    another scheme for someone else does not make the request a bad one."""
    with RawPhone((server.host, server.port)) as phone:
        www = challenge(server, phone, "6001")
        uri = f"sip:{server.target}"
        ours = digest_answer(www, "REGISTER", uri, "6001", PASSWORD)
        other = (
            'Digest username="6001", realm="proxy.example", nonce="abc", '
            f'uri="{uri}", response="00000000000000000000000000000000"'
        )
        phone.send(register(server, "6001", 2, "Basic b3RoZXI6cmVhbG0=", other, ours))
        assert phone.response(2).code == 200
    wait_for_log(server, "peer 6001 registered")


def authenticated(server: RunningServer, phone: RawPhone, user: str) -> int:
    """REGISTER with the right password over UDP; the final answer's code."""
    www = challenge(server, phone, user)
    phone.send(
        register(
            server,
            user,
            2,
            digest_answer(www, "REGISTER", f"sip:{server.target}", user, PASSWORD),
        )
    )
    return phone.response(2).code


def test_tls_only_peer_is_refused_over_udp_after_authentication(server: RunningServer) -> None:
    with RawPhone((server.host, server.port)) as phone:
        assert authenticated(server, phone, "6201") == 403
    log = wait_for_log(
        server, "REGISTER from 127.0.0.1 for peer 6201 refused: UDP is not a valid transport"
    )
    assert "(transport=tls)" in log
    assert "peer 6201 registered" not in log


def test_peer_listing_udp_second_registers_over_udp(server: RunningServer) -> None:
    with RawPhone((server.host, server.port)) as phone:
        assert authenticated(server, phone, "6202") == 200
    wait_for_log(server, "peer 6202 registered")


def test_tls_only_peer_cannot_subscribe_to_mwi_over_udp(server: RunningServer) -> None:
    """Its counts would go back in clear over UDP: refused like its REGISTER."""
    from .test_sipsec_subscribe_e2e import subscribe

    with RawPhone((server.host, server.port)) as phone:
        phone.send(subscribe(server, 1, user="6201", call_id="mwi-tls@127.0.0.1"))
        www = phone.response(1)
        assert www.code == 401
        answer = digest_answer(
            www.headers["WWW-Authenticate"],
            "SUBSCRIBE",
            f"sip:6201@{server.target}",
            "6201",
            PASSWORD,
        )
        phone.send(
            subscribe(server, 2, user="6201", call_id="mwi-tls@127.0.0.1", authorization=answer)
        )
        assert phone.response(2).code == 403
        assert phone.notify(1.0) is None
    wait_for_log(server, "SUBSCRIBE from 127.0.0.1 for peer 6201 refused: UDP")


def test_only_unparseable_credentials_get_400(server: RunningServer) -> None:
    with RawPhone((server.host, server.port)) as phone:
        phone.send(register(server, "6001", 1, "Basic b3RoZXI6cmVhbG0="))
        answer = phone.response(1)
        assert (answer.code, answer.phrase) == (400, "Bad Authorization")
