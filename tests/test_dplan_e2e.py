"""The dial plan end to end: sipp calls the real server; its log says which steps ran.

The server logs every step it executes (`call X: executing [exten@context:priority]
App(args)`), so the log shows which GotoIf branch ran, that a Goto to a missing extension
went to `i`, and that `h` ran after the caller's BYE.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import sipp
from .dbbackends import Backend
from .server import RunningServer, start_server, write_config
from .test_deposit_e2e import DATA, POUND, deposit_scenario, rows

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.parametrize("backend", ["sqlite"], indirect=True),
]

EXTENSIONS = """[default]
exten => _X.,1,VoiceMail(${EXTEN}@default,u)
same => n,GotoIf($["${VMSTATUS}" = "SUCCESS"]?ok:failed)
same => n(ok),NoOp(stored)
same => n,Hangup()
same => n(failed),NoOp(not stored)
same => n,Hangup()
exten => jump,1,Goto(nosuch,1)
same => n,NoOp(not reached)
exten => i,1,NoOp(invalid ${INVALID_EXTEN})
same => n,Hangup()
exten => h,1,NoOp(hung up: VMSTATUS=${VMSTATUS})
"""


@pytest.fixture
def server(backend: Backend, tmp_path: Path) -> Iterator[RunningServer]:
    running = start_server(write_config(tmp_path / "etc", backend, extensions=EXTENSIONS))
    yield running
    assert running.stop() == 0, running.log()


def executed(server: RunningServer) -> list[str]:
    """`exten@context:priority App(args)` of every step the server ran, in order."""
    return re.findall(r"executing \[(\S+)\] (.*)", server.log())


def test_gotoif_takes_the_ok_branch_after_a_stored_message(
    server: RunningServer, backend: Backend, tmp_path: Path
) -> None:
    pcap = DATA / "signal3s_pcmu.pcap"
    xml = deposit_scenario(
        "1000",
        pcap,
        [0, 101],
        [sipp.pause(3100), sipp.play_pcap(POUND), sipp.recv_request("BYE"), sipp.answer_request()],
    )
    sipp.run_sipp(tmp_path / "sipp", xml, server.target, timeout=60).check()
    assert len(rows(backend)) == 1
    assert executed(server) == [
        ("1000@default:1", "VoiceMail(1000@default,u)"),
        ("1000@default:2", "GotoIf(1?ok:failed)"),
        ("1000@default:3", "NoOp(stored)"),
        ("1000@default:4", "Hangup()"),
        ("h@default:1", "NoOp(hung up: VMSTATUS=SUCCESS)"),
    ], server.log()


def test_gotoif_takes_the_failed_branch_for_an_unknown_mailbox(
    server: RunningServer, backend: Backend, tmp_path: Path
) -> None:
    xml = sipp.scenario(
        "nomailbox",
        sipp.invite("1999", [0]),
        sipp.recv(100, optional=True),
        sipp.recv(480),
        sipp.ack_non2xx("1999"),
    )
    sipp.run_sipp(tmp_path / "sipp", xml, server.target, timeout=20).check()
    assert executed(server) == [
        ("1999@default:1", "VoiceMail(1999@default,u)"),
        ("1999@default:2", "GotoIf(0?ok:failed)"),
        ("1999@default:5", "NoOp(not stored)"),
        ("1999@default:6", "Hangup()"),
        ("h@default:1", "NoOp(hung up: VMSTATUS=FAILED)"),
    ], server.log()
    assert rows(backend) == []


def test_goto_to_a_missing_extension_runs_i(
    server: RunningServer, backend: Backend, tmp_path: Path
) -> None:
    xml = sipp.scenario(
        "invalid",
        sipp.invite("jump", [0]),
        sipp.recv(100, optional=True),
        sipp.recv(480),
        sipp.ack_non2xx("jump"),
    )
    sipp.run_sipp(tmp_path / "sipp", xml, server.target, timeout=20).check()
    assert executed(server) == [
        ("jump@default:1", "Goto(nosuch,1)"),
        ("i@default:1", "NoOp(invalid nosuch)"),
        ("i@default:2", "Hangup()"),
        ("h@default:1", "NoOp(hung up: VMSTATUS=)"),
    ], server.log()


def test_h_runs_after_the_callers_bye_and_the_main_dial_plan_stops(
    server: RunningServer, backend: Backend, tmp_path: Path
) -> None:
    pcap = DATA / "signal3s_pcmu.pcap"
    xml = deposit_scenario(
        "1000", pcap, [0, 101], [sipp.pause(3200), sipp.bye("1000"), sipp.recv(200)]
    )
    sipp.run_sipp(tmp_path / "sipp", xml, server.target, timeout=60).check()
    assert len(rows(backend)) == 1
    # No GotoIf after the hang-up: the caller is gone; h logs the status instead.
    assert executed(server) == [
        ("1000@default:1", "VoiceMail(1000@default,u)"),
        ("h@default:1", "NoOp(hung up: VMSTATUS=SUCCESS)"),
    ], server.log()
