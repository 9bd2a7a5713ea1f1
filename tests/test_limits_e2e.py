"""Limits that protect the server from callers: the longest recording, how many calls, how full
the local spool may get."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from storage.messages import new_msg_id
from storage.spool import PendingMessage
from voicemail.config import load_server_config
from voicemail.server import VoicemailServer

from . import sipp
from .dbbackends import Backend
from .server import run_cli, start_server, write_config
from .test_deposit_e2e import DATA, deposit_scenario, rows
from .test_endpoint_harness import Phone
from .test_reload_e2e import wait_for

pytestmark = pytest.mark.timeout(180)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_maxrecordsecs_caps_a_recording_when_maxsecs_is_unlimited(
    backend: Backend, tmp_path: Path
) -> None:
    """Asterisk's maxsecs=0 means no limit; ours stops at maxrecordsecs all the same."""
    config = write_config(tmp_path / "etc", backend, general="maxsecs=0\nmaxrecordsecs=2\n")
    server = start_server(config)
    try:
        xml = deposit_scenario(
            "1000",
            DATA / "signal5s_pcmu.pcap",
            [0, 101],
            [sipp.pause(5200), sipp.bye("1000"), sipp.recv(200, optional=True)],
        )
        sipp.run_sipp(tmp_path / "sipp", xml, server.target, timeout=60)
        stored = rows(backend)
        assert len(stored) == 1, server.log()
        # The limit is wall-clock time from the beep, as Asterisk's maxsecs: the caller's
        # audio starts a little after it, so 1-2 s of a 5 s message are kept.
        assert int(stored[0]["duration"]) in (1, 2)
        server.wait_for_log("recording for 1000@default (at most 2 s)")
        server.wait_for_log("stopped by maxsecs")
    finally:
        assert server.stop() == 0, server.log()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_maxcalls_refuses_a_call_past_the_limit_with_503(backend: Backend, tmp_path: Path) -> None:
    config = write_config(tmp_path / "etc", backend)
    with (config / "sip.conf").open("a") as sip_conf:
        sip_conf.write("maxcalls=1\n")
    server = start_server(config)
    first = deposit_scenario(
        "1000",
        DATA / "signal3s_pcmu.pcap",
        [0, 101],
        [sipp.pause(3200), sipp.bye("1000"), sipp.recv(200)],
    )
    refused = sipp.scenario(
        "second",
        sipp.invite("1000", [0, 101]),
        sipp.recv(100, optional=True),
        sipp.recv(503),
        sipp.ack_non2xx("1000"),
    )
    try:
        results: list[sipp.SippResult] = []
        call = threading.Thread(
            target=lambda: results.append(
                sipp.run_sipp(tmp_path / "a", first, server.target, timeout=60)
            )
        )
        call.start()
        wait_for(server, "greeting")
        sipp.run_sipp(tmp_path / "b", refused, server.target, timeout=30).check()
        call.join(60)
        results[0].check()  # the call in progress was not disturbed
        assert len(rows(backend)) == 1
    finally:
        assert server.stop() == 0, server.log()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_spool_over_spoolmaxmb_refuses_new_calls_with_503(
    backend: Backend, tmp_path: Path
) -> None:
    """The server in this process, so the test can fill its spool while the flusher rests."""
    directory = write_config(tmp_path / "etc", backend, general="spoolmaxmb=1\n")
    assert run_cli("db", "init", "-C", str(directory)).returncode == 0
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = VoicemailServer(load_server_config(directory))

    def on_loop(coroutine: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout)

    phone = None
    try:
        on_loop(server.start())
        assert server.flusher is not None and server.endpoint is not None
        server.flusher.stop()  # what we spool now stays there
        time.sleep(0.5)
        path = server.flusher.spool.write(
            PendingMessage(
                msg_id=new_msg_id(),
                context="default",
                mailbox="1000",
                folder="INBOX",
                recording=b"\x00" * (2 * 1024 * 1024),
                callerid="Spool Filler <1>",
                origtime=int(time.time()),
                duration=65,
                caller_context="default",
            )
        )
        phone = Phone(SimpleNamespace(port=server.endpoint.config.port))
        refused = phone.call("spool-full-1")
        assert refused.code == 503
        assert refused.headers.get("Retry-After")
        server.flusher.spool.remove(path)  # back under the limit
        answered = phone.call("spool-full-2")
        assert answered.code == 200
        phone.hang_up(answered, "spool-full-2")
    finally:
        if phone is not None:
            phone.close()
        on_loop(server.stop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
