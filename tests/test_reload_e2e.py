"""`voicemail reload`: new mailboxes at once, calls in progress untouched, bad files refused."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from . import sipp
from .dbbackends import Backend
from .server import RunningServer, run_cli, start_server, write_config
from .test_deposit_e2e import DATA, POUND, assert_recording_is, deposit_scenario, rows

pytestmark = pytest.mark.timeout(150)


def wait_for(server: RunningServer, text: str, timeout: float = 10) -> None:
    server.wait_for_log(text, timeout)


def deposit(server: RunningServer, mailbox: str, workdir: Path) -> sipp.SippResult:
    pcap = DATA / "signal3s_pcmu.pcap"
    xml = deposit_scenario(
        mailbox, pcap, [0, 101], [sipp.pause(3200), sipp.bye(mailbox), sipp.recv(200)]
    )
    return sipp.run_sipp(workdir, xml, server.target, timeout=60)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_reload_adds_a_mailbox_without_dropping_the_call_in_progress(
    backend: Backend, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "etc", backend, realtime_voicemail=False)
    server = start_server(config)
    try:
        results: list[sipp.SippResult] = []
        call = threading.Thread(
            target=lambda: results.append(deposit(server, "1000", tmp_path / "a"))
        )
        call.start()
        wait_for(server, "greeting")
        with (config / "voicemail.conf").open("a") as voicemail_conf:
            voicemail_conf.write("4000 => 1111,Dana Reloaded,dana@example.com\n")
        reload = run_cli("reload", "-C", str(config))
        assert reload.returncode == 0, reload.stderr
        wait_for(server, "configuration reloaded: 2 static mailboxes")
        call.join(90)
        results[0].check()  # the call that was running when we reloaded completed
        deposit(server, "4000", tmp_path / "b").check()
        stored = rows(backend)
        assert [r["dir"].split("/")[-2] for r in stored] == ["1000", "4000"]
        for row in stored:
            assert_recording_is(row, DATA / "signal3s_pcmu.pcap", 3.0)
        # A broken line is refused with file and line; the running configuration stays.
        with (config / "extensions.conf").open("a") as extensions:
            extensions.write("exten => 5000,x,Answer()\n")
        assert run_cli("reload", "-C", str(config)).returncode == 0
        wait_for(server, "reload failed, keeping the running configuration")
        server.wait_for_log("extensions.conf:")
        deposit(server, "1000", tmp_path / "c").check()
        assert len(rows(backend)) == 3
    finally:
        assert server.stop() == 0, server.log()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_reload_without_a_running_server_says_so(tmp_path: Path, backend: Backend) -> None:
    config = write_config(tmp_path / "etc", backend)
    result = run_cli("reload", "-C", str(config))
    assert result.returncode == 1
    assert "no running server" in result.stderr


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_reload_during_a_recording_keeps_the_call_and_its_dial_plan(
    backend: Backend, tmp_path: Path
) -> None:
    """A reload while the caller is being recorded used to raise KeyError when the recording
    ended (the deposit counter was replaced): the call lost VMSTATUS and the rest of its dial
    plan. The step after VoiceMail must run with VMSTATUS=SUCCESS."""
    extensions = (
        "[default]\nexten => _X.,1,VoiceMail(${EXTEN}@default,u)\n"
        "same => n,NoOp(after VoiceMail VMSTATUS=${VMSTATUS})\nsame => n,Hangup()\n"
    )
    config = write_config(
        tmp_path / "etc", backend, realtime_voicemail=False, extensions=extensions
    )
    server = start_server(config)
    try:
        pcap = DATA / "signal3s_pcmu.pcap"
        xml = deposit_scenario(
            "1000",
            pcap,
            [0, 101],
            [
                sipp.pause(3100),
                sipp.play_pcap(POUND),
                sipp.recv_request("BYE"),
                sipp.answer_request(),
            ],
        )
        results: list[sipp.SippResult] = []
        call = threading.Thread(
            target=lambda: results.append(
                sipp.run_sipp(tmp_path / "sipp", xml, server.target, timeout=60)
            )
        )
        call.start()
        wait_for(server, "recording for 1000@default", timeout=30)
        assert run_cli("reload", "-C", str(config)).returncode == 0
        wait_for(server, "configuration reloaded")
        call.join(90)
        results[0].check()
        wait_for(server, "NoOp(after VoiceMail VMSTATUS=SUCCESS)")
        assert "application failed" not in server.log(), server.log()
        stored = rows(backend)
        assert len(stored) == 1
        assert_recording_is(stored[0], pcap, 3.0)
    finally:
        assert server.stop() == 0, server.log()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_reload_applies_sip_conf_general_options(backend: Backend, tmp_path: Path) -> None:
    """sip.conf [general] is re-read too: allowguest=no refuses the next guest call; a changed
    abuse limit is named as one that needs a restart (its limiter holds live counts)."""
    config = write_config(tmp_path / "etc", backend, realtime_voicemail=False)
    server = start_server(config)
    refused = sipp.scenario(
        "guest",
        sipp.invite("1000", [0, 101]),
        sipp.recv(100, optional=True),
        sipp.recv(403),
        sipp.ack_non2xx("1000"),
    )
    try:
        with (config / "sip.conf").open("a") as sip_conf:
            sip_conf.write("allowguest=no\nregisterrate=5\n")
        assert run_cli("reload", "-C", str(config)).returncode == 0
        wait_for(server, "configuration reloaded")
        wait_for(server, "sip.conf abuse limits (registerrate ... tcpidletimeout, floodexempt) ch")
        sipp.run_sipp(tmp_path / "sipp", refused, server.target, timeout=30).check()
        server.wait_for_log("not a peer, allowguest=no")
    finally:
        assert server.stop() == 0, server.log()
