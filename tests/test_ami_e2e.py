"""AMI end to end: the real server in a subprocess, driven by panoramisk (a real AMI client
we did not write), calls placed with sipp."""

from __future__ import annotations

import asyncio
import hashlib
import socket
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
from panoramisk import Manager
from panoramisk.message import Message

from .dbbackends import Backend
from .server import RunningServer, free_port, run_cli, start_server, write_config
from .test_deposit_e2e import rows
from .test_reload_e2e import deposit, wait_for

pytestmark = pytest.mark.timeout(150)

USERS = """
[admin]
secret = adminpw
read = all
write = all

[watcher]
secret = watchpw
permit = 127.0.0.0/255.0.0.0
read = call
write = reporting

[faraway]
secret = farpw
deny = 0.0.0.0/0.0.0.0
permit = 10.0.0.0/255.0.0.0
read = all
write = all
"""


def ami_config(tmp_path: Path, backend: Backend) -> tuple[Path, int]:
    config = write_config(tmp_path / "etc", backend, realtime_voicemail=False)
    port = free_port(socket.SOCK_STREAM)
    with (config / "sip.conf").open("a") as sip_conf:
        sip_conf.write("\n[2000]\ntype=friend\nhost=dynamic\nsecret=pw2000\ncontext=default\n")
    (config / "manager.conf").write_text(
        f"[general]\nenabled = yes\nport = {port}\nbindaddr = 127.0.0.1\n{USERS}"
    )
    return config, port


def start_ami(config: Path) -> RunningServer:
    server = start_server(config)
    wait_for(server, "AMI: manager connections accepted at 127.0.0.1")
    return server


def run(coroutine: Coroutine[Any, Any, None]) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(coroutine, 100)

    asyncio.run(bounded())


class Client:
    """A panoramisk Manager and the events it was sent."""

    def __init__(self, port: int, **login: str) -> None:
        self.events: list[Message] = []
        self.arrived = asyncio.Event()
        self.manager = Manager(
            loop=asyncio.get_running_loop(),
            host="127.0.0.1",
            port=port,
            ping_delay=3600,
            reconnect_timeout=3600,
            **login,
        )
        self.manager.register_event("*", self._event)

    def _event(self, manager: Manager, event: Message) -> None:
        self.events.append(event)
        self.arrived.set()

    async def connect(self) -> Message | None:
        """Connects; with a username, returns the Login response."""
        await self.manager.connect()
        if "username" not in self.manager.config:
            return None
        while self.manager.authenticated_future is None:
            await asyncio.sleep(0.01)
        return await self.manager.authenticated_future

    async def event(self, name: str, **fields: str) -> Message:
        """The first event called `name` whose fields have these values."""
        while True:
            for event in self.events:
                if event.event == name and all(event.get(k) == v for k, v in fields.items()):
                    return event
            self.arrived.clear()
            await self.arrived.wait()

    async def send(self, action: dict[str, str]) -> Any:
        return await asyncio.wait_for(self.manager.send_action(action), 30)

    def close(self) -> None:
        self.manager.close()


def outputs(response: Message) -> list[str]:
    output = response.get("Output", [])
    return output if isinstance(output, list) else [output]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_login_plain_and_md5_commands_lists_and_shutdown(backend: Backend, tmp_path: Path) -> None:
    config, port = ami_config(tmp_path, backend)
    server = start_ami(config)
    try:

        async def scenario() -> None:
            admin = Client(port, username="admin", secret="adminpw")
            login = await admin.connect()
            assert login.success and login.message == "Authentication accepted"
            assert admin.manager.protocol.version == "9.0.0"  # the banner's AMI version
            booted = await admin.event("FullyBooted")
            assert booted.status == "Fully Booted"
            pong = await admin.send({"Action": "Ping"})
            assert pong.ping == "Pong"

            unknown = await admin.manager.send_command("frobnicate now")
            assert unknown.response == "Error"
            assert outputs(unknown) == ["No such command 'frobnicate now' (type 'help' for help)"]
            users = await admin.manager.send_command("voicemail show users")
            if users.response == "Success":  # the console's command, once merged
                assert any("1000" in line for line in outputs(users))
            else:
                assert "No such command" in outputs(users)[0]

            listed = await admin.send({"Action": "VoicemailUsersList"})
            entries = [m for m in listed if m.event == "VoicemailUserEntry"]
            assert [(e.vmcontext, e.voicemailbox, e.fullname) for e in entries] == [
                ("default", "1000", "Alice Example")
            ]
            assert listed[-1].event == "VoicemailUserEntryComplete"
            peers = await admin.send({"Action": "SIPpeers"})
            (peer,) = [m for m in peers if m.event == "PeerEntry"]
            assert (peer.objectname, peer.ipaddress, peer.dynamic) == ("2000", "-none-", "yes")
            assert peers[-1].event == "PeerlistComplete" and peers[-1].listitems == "1"
            shown = await admin.send({"Action": "SIPshowpeer", "Peer": "2000"})
            assert (shown.objectname, shown.secretexist, shown.context) == ("2000", "Y", "default")
            missing = await admin.send({"Action": "SIPshowpeer", "Peer": "nobody"})
            assert (missing.response, missing.message) == ("Error", "Peer not found")
            status = await admin.send({"Action": "CoreStatus"})
            assert status.success and status.corecurrentcalls == "0"
            bogus = await admin.send({"Action": "Originate"})
            assert bogus.response == "Error" and "Invalid/unknown command" in bogus.message

            md5 = Client(port)
            await md5.connect()
            challenge = await md5.send({"Action": "Challenge", "AuthType": "MD5"})
            key = hashlib.md5((challenge.challenge + "watchpw").encode()).hexdigest()
            accepted = await md5.send(
                {"Action": "Login", "AuthType": "MD5", "Username": "watcher", "Key": key}
            )
            assert accepted.success, accepted
            # watcher writes "reporting" only: Command needs "command".
            denied = await md5.manager.send_command("help")
            assert (denied.response, denied.message) == ("Error", "Permission denied")
            count = await md5.send({"Action": "MailboxCount", "Mailbox": "1000@default"})
            assert (count.newmessages, count.oldmessages, count.urgmessages) == ("0", "0", "0")
            goodbye = await md5.send({"Action": "Logoff"})
            assert goodbye.response == "Goodbye"

            stopped = asyncio.ensure_future(asyncio.to_thread(server.stop))
            shutdown = await admin.event("Shutdown")
            assert shutdown.shutdown == "Cleanly"
            assert await stopped == 0, server.log()
            admin.close()
            md5.close()

        run(scenario())
    finally:
        assert server.stop() == 0, server.log()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_reload_during_a_call_then_message_waiting_and_counts(
    backend: Backend, tmp_path: Path
) -> None:
    config, port = ami_config(tmp_path, backend)
    server = start_ami(config)
    try:

        async def scenario() -> None:
            admin = Client(port, username="admin", secret="adminpw")
            watcher = Client(port, username="watcher", secret="watchpw")
            assert (await admin.connect()).success
            assert (await watcher.connect()).success
            call = asyncio.ensure_future(
                asyncio.to_thread(deposit, server, "1000", tmp_path / "call")
            )
            while "greeting" not in server.log():
                assert not call.done(), call.result()
                await asyncio.sleep(0.1)
            channels = await admin.send({"Action": "CoreShowChannels"})
            (channel,) = [m for m in channels if m.event == "CoreShowChannel"]
            assert channel.application == "VoiceMail"
            assert channel.applicationdata.startswith("1000@default")
            assert channels[-1].event == "CoreShowChannelsComplete"

            reloaded = await admin.send({"Action": "Reload", "Module": "app_voicemail.so"})
            assert reloaded.success, reloaded
            event = await admin.event("Reload")
            assert (event.module, event.status) == ("app_voicemail.so", "Success")
            assert "configuration reloaded" in event.message

            (await call).check()  # the call up during the reload completed
            waiting = await watcher.event("MessageWaiting", Mailbox="1000@default", New="1")
            assert (waiting.waiting, waiting.old) == ("1", "0")
            # watcher reads "call" only: the system Reload event was not sent to it.
            assert "Reload" not in [e.event for e in watcher.events]
            count = await watcher.send({"Action": "MailboxCount", "Mailbox": "1000@default"})
            assert (count.newmessages, count.oldmessages) == ("1", "0")
            status = await watcher.send({"Action": "MailboxStatus", "Mailbox": "1000@default"})
            assert status.waiting == "1"
            refused = await watcher.send({"Action": "Reload"})
            assert refused.message == "Permission denied"
            # VoicemailRefresh (write class user: admin) tells AMI the counts again.
            seen = len([e for e in watcher.events if e.event == "MessageWaiting"])
            refresh = await admin.send(
                {"Action": "VoicemailRefresh", "Context": "default", "Mailbox": "1000"}
            )
            assert refresh.success
            while len([e for e in watcher.events if e.event == "MessageWaiting"]) == seen:
                watcher.arrived.clear()
                await watcher.arrived.wait()
            assert watcher.events[-1].new == "1"
            # The console's reload (here: `voicemail reload`) is announced too.
            assert (await asyncio.to_thread(run_cli, "reload", "-C", str(config))).returncode == 0
            console = await admin.event("Reload", Module="All")
            assert console.status == "Success"
            admin.close()
            watcher.close()

        run(scenario())
        assert len(rows(backend)) == 1
    finally:
        assert server.stop() == 0, server.log()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_acl_deny_and_wrong_secrets_are_rate_limited(backend: Backend, tmp_path: Path) -> None:
    config, port = ami_config(tmp_path, backend)
    server = start_ami(config)
    try:

        async def attempt(username: str, secret: str) -> bool:
            client = Client(port, username=username, secret=secret)
            try:
                response = await client.connect()
                assert response is not None
                if not response.success:
                    assert response.message == "Authentication failed"
                return bool(response.success)
            finally:
                client.close()

        async def scenario() -> None:
            assert not await attempt("faraway", "farpw")  # right secret, address denied
            for _ in range(4):
                assert not await attempt("admin", "wrong")
            # Five failures within a minute: even the right secret is refused now.
            assert not await attempt("admin", "adminpw")

        run(scenario())
        server.wait_for_log("address not permitted")
        server.wait_for_log("too many failures")
    finally:
        assert server.stop() == 0, server.log()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_unimplemented_manager_conf_option_stops_startup_with_file_and_line(
    backend: Backend, tmp_path: Path
) -> None:
    config, port = ami_config(tmp_path, backend)
    (config / "manager.conf").write_text(f"[general]\nenabled=yes\nport={port}\nwebenabled=yes\n")
    assert run_cli("db", "init", "-C", str(config)).returncode == 0
    result = run_cli("serve", "-C", str(config), timeout=60)
    assert result.returncode != 0
    assert "manager.conf:4" in result.stdout + result.stderr
    assert 'option "webenabled" is not implemented' in result.stdout + result.stderr


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_ami_port_in_use_stops_startup_and_the_process_exits(
    backend: Backend, tmp_path: Path
) -> None:
    config, port = ami_config(tmp_path, backend)
    assert run_cli("db", "init", "-C", str(config)).returncode == 0
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        result = run_cli("serve", "-C", str(config), timeout=60)
    assert result.returncode == 1
    assert "voicemail: AMI:" in result.stderr
