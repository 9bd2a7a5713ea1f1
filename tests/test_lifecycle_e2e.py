"""Stopping the real server: SIGTERM lets calls finish, a second SIGTERM ends them, systemd
hears READY/STOPPING, the spool is flushed on the way out, and runuser is checked."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from storage.messages import new_msg_id
from storage.spool import PendingMessage
from voicemail.config import load_server_config
from voicemail.lifecycle import Lifecycle
from voicemail.sdnotify import SdNotifier
from voicemail.server import VoicemailServer

from . import sipp
from .dbbackends import Backend
from .server import RunningServer, run_cli, start_server, write_config
from .test_deposit_e2e import DATA, assert_recording_is, deposit_scenario, rows
from .test_endpoint_harness import Phone
from .test_reload_e2e import wait_for

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def notify_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket standing in for systemd's; the server finds it in NOTIFY_SOCKET."""
    directory = tempfile.mkdtemp(prefix="vm-notify-")  # short: a socket path has 107 bytes
    path = os.path.join(directory, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    try:
        yield sock
    finally:
        sock.close()
        shutil.rmtree(directory, ignore_errors=True)


def notifications(sock: socket.socket, until: str, timeout: float = 30) -> list[str]:
    """The datagrams received until one with the field `until` (each as one string)."""
    received: list[str] = []
    deadline = time.monotonic() + timeout
    while not any(until in message.split("\n") for message in received):
        left = deadline - time.monotonic()
        assert left > 0, f"no {until} among {received}"
        sock.settimeout(left)
        received.append(sock.recv(4096).decode())
    return received


def deposit_in_background(
    server: RunningServer, workdir: Path, hang_up_after_ms: int = 5200
) -> sipp.BackgroundSipp:
    """A caller sending 5 s of audio, hanging up `hang_up_after_ms` after it started."""
    xml = deposit_scenario(
        "1000",
        DATA / "signal5s_pcmu.pcap",
        [0, 101],
        [sipp.pause(hang_up_after_ms), sipp.bye("1000"), sipp.recv(200)],
    )
    return sipp.start_sipp(workdir, xml, server.target, name="deposit", timeout=60)


def exit_code(server: RunningServer, timeout: float = 30) -> int:
    return server.process.wait(timeout)


def ask_to_stop(server: RunningServer, config: Path, how: str, command: str) -> None:
    """SIGTERM, or the console's `core stop gracefully` / `core stop now`."""
    if how == "sigterm":
        server.process.send_signal(signal.SIGTERM)
        return
    answer = run_cli("-C", str(config), "-rx", command)
    assert answer.returncode == 0, (answer.stdout, answer.stderr, server.log())
    assert "Shutting down" in answer.stdout


@pytest.mark.parametrize("how", ["sigterm", "console"])
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_sigterm_lets_the_call_finish_refuses_new_ones_and_exits_0(
    backend: Backend, tmp_path: Path, notify_socket: socket.socket, how: str
) -> None:
    config = write_config(tmp_path / "etc", backend)
    server = start_server(config)
    caller = None
    phone = Phone(SimpleNamespace(port=server.port))
    try:
        assert any("READY=1" in m.split("\n") for m in notifications(notify_socket, "READY=1"))
        caller = deposit_in_background(server, tmp_path / "sipp")
        wait_for(server, "recording for 1000@default", timeout=30)
        ask_to_stop(server, config, how, "core stop gracefully")
        assert notifications(notify_socket, "STOPPING=1")
        wait_for(server, "graceful stop: ")
        refused = phone.call("during-drain")
        assert refused.code == 503
        assert int(refused.headers.get("Retry-After")) > 0
        assert caller.wait(60).returncode == 0, server.log()
        assert exit_code(server) == 0, server.log()
    finally:
        phone.close()
        if caller is not None:
            caller.stop()
        server.stop()
    stored = rows(backend)
    assert len(stored) == 1, server.log()
    assert_recording_is(stored[0], DATA / "signal5s_pcmu.pcap", 5.0)
    server.wait_for_log("no calls in progress")


@pytest.mark.parametrize("how", ["sigterm", "console"])
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_second_sigterm_ends_the_call_and_stores_what_was_recorded(
    backend: Backend, tmp_path: Path, how: str
) -> None:
    config = write_config(tmp_path / "etc", backend)
    server = start_server(config)
    caller = None
    try:
        caller = deposit_in_background(server, tmp_path / "sipp", 30000)
        wait_for(server, "recording for 1000@default", timeout=30)
        time.sleep(2)  # two seconds of the caller's audio are recorded
        ask_to_stop(server, config, how, "core stop gracefully")
        wait_for(server, "graceful stop: ")
        ask_to_stop(server, config, how, "core stop now")
        assert exit_code(server) == 0, server.log()
    finally:
        if caller is not None:
            caller.stop()
        server.stop()
    server.wait_for_log("ending 1 call(s)")
    stored = rows(backend)
    assert len(stored) == 1, server.log()
    # Hung up by the server about two seconds into the audio: what was recorded is kept.
    assert 1 <= int(stored[0]["duration"]) < 5, stored[0]["duration"]
    assert len(bytes(stored[0]["recording"])) > 8000 * 2  # over a second of 16-bit audio


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_graceful_stop_stores_what_waits_in_the_spool(backend: Backend, tmp_path: Path) -> None:
    """The server in this process: the spool gets a message the flusher has not seen."""
    directory = write_config(tmp_path / "etc", backend)
    assert run_cli("db", "init", "-C", str(directory)).returncode == 0
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = VoicemailServer(load_server_config(directory))

    def on_loop(coroutine: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout)

    async def start() -> Lifecycle:
        await server.start()
        assert server._flusher_task is not None
        server._flusher_task.cancel()  # the background flusher rests; the stop must flush
        lifecycle = Lifecycle(server, SdNotifier(None))
        lifecycle.attach()
        return lifecycle

    async def stop_gracefully(lifecycle: Lifecycle) -> None:
        lifecycle.stop_gracefully()
        await lifecycle.finished()

    try:
        lifecycle = on_loop(start())
        assert server.flusher is not None
        server.flusher.spool.write(
            PendingMessage(
                msg_id=new_msg_id(),
                context="default",
                mailbox="1000",
                folder="INBOX",
                recording=b"RIFF-not-checked" + b"\x00" * 1600,
                callerid="Spooled <1>",
                origtime=int(time.time()),
                duration=1,
                caller_context="default",
            )
        )
        assert rows(backend) == []
        on_loop(stop_gracefully(lifecycle))
        stored = rows(backend)
        assert [row["callerid"] for row in stored] == ["Spooled <1>"]
        assert not list((directory / "spool").glob("*.vmsg"))
    finally:
        on_loop(server.stop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_runuser_that_does_not_exist_is_refused(backend: Backend, tmp_path: Path) -> None:
    directory = write_config(tmp_path / "etc", backend)
    conf = directory / "asterisk.conf"
    conf.write_text(conf.read_text() + "[options]\nrunuser = no-such-user-here\n")
    served = run_cli("serve", "-C", str(directory), timeout=30)
    assert served.returncode == 1
    assert "runuser = no-such-user-here: no such user" in served.stderr
    assert "asterisk.conf" in served.stderr
