"""Who may leave a message: peers authenticate their INVITE, guests follow allowguest."""

from __future__ import annotations

from pathlib import Path

import pytest

from . import sipp
from .dbbackends import Backend
from .server import start_server, unavailable_greeting_seconds, write_config
from .test_deposit_e2e import DATA, MARGIN_MS, assert_recording_is, rows

pytestmark = pytest.mark.timeout(120)

PEER = "[5551234]\ntype=friend\nhost=dynamic\nsecret=s3cret\ncontext=default\n"


def authenticated_deposit(password: str) -> str:
    pcap = DATA / "signal3s_pcmu.pcap"
    invite = sipp.invite("1000", [0, 101])
    second = (
        invite.replace("CSeq: 1 INVITE", "CSeq: 2 INVITE")
        .replace(sipp.INVITE_BRANCH, "[branch]")
        .replace(
            "Max-Forwards: 70\n",
            f"Max-Forwards: 70\n[authentication username=5551234 password={password}]\n",
        )
    )
    ack = sipp.ack("1000").replace("CSeq: 1 ACK", "CSeq: 2 ACK")
    bye = sipp.bye("1000").replace("CSeq: 2 BYE", "CSeq: 3 BYE")
    return sipp.scenario(
        "auth-deposit",
        invite,
        sipp.recv(100, optional=True),
        sipp.recv(401, extra=' auth="true"'),
        sipp.ack_non2xx("1000"),
        second,
        sipp.recv(100, optional=True),
        sipp.recv(200),
        ack,
        sipp.pause(unavailable_greeting_seconds("1000") * 1000 + MARGIN_MS),
        sipp.play_pcap(pcap),
        sipp.pause(3200),
        bye,
        sipp.recv(200),
    )


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_peer_must_authenticate_its_invite(backend: Backend, tmp_path: Path) -> None:
    config = write_config(tmp_path / "etc", backend)
    with (config / "sip.conf").open("a") as sip_conf:
        sip_conf.write(PEER)
    server = start_server(config)
    try:
        sipp.run_sipp(
            tmp_path / "ok", authenticated_deposit("s3cret"), server.target, timeout=60
        ).check()
        stored = rows(backend)
        assert len(stored) == 1, server.log()
        assert_recording_is(stored[0], DATA / "signal3s_pcmu.pcap", 3.0)
        wrong = sipp.scenario(
            "wrong",
            sipp.invite("1000", [0]),
            sipp.recv(100, optional=True),
            sipp.recv(401, extra=' auth="true"'),
            sipp.ack_non2xx("1000"),
            sipp.invite("1000", [0])
            .replace("CSeq: 1 INVITE", "CSeq: 2 INVITE")
            .replace(sipp.INVITE_BRANCH, "z9hG4bK-inv2-[pid]-[call_number]")
            .replace(
                "Max-Forwards: 70\n",
                "Max-Forwards: 70\n[authentication username=5551234 password=wrong]\n",
            ),
            sipp.recv(100, optional=True),
            sipp.recv(403),
        )
        sipp.run_sipp(tmp_path / "wrong", wrong, server.target, timeout=30).check()
        assert len(rows(backend)) == 1
    finally:
        assert server.stop() == 0, server.log()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_guest_calls_are_refused_with_allowguest_no(backend: Backend, tmp_path: Path) -> None:
    config = write_config(tmp_path / "etc", backend)
    with (config / "sip.conf").open("a") as sip_conf:
        sip_conf.write("allowguest=no\n")  # still in [general]
    server = start_server(config)
    try:
        xml = sipp.scenario(
            "guest",
            sipp.invite("1000", [0]).replace("5551234", "7777"),
            sipp.recv(100, optional=True),
            sipp.recv(403),
            sipp.ack_non2xx("1000").replace("5551234", "7777"),
        )
        sipp.run_sipp(tmp_path / "guest", xml, server.target, timeout=30).check()
        assert rows(backend) == []
    finally:
        assert server.stop() == 0, server.log()
