"""The remote console against a running server: `voicemail -C DIR -rx "COMMAND"` and `-r`."""

from __future__ import annotations

import os
import re
import select
import subprocess
import threading
import time
from pathlib import Path

import pyodbc
import pytest

from voicemail.config import load_server_config

from . import sipp
from .dbbackends import Backend
from .server import VOICEMAIL_BIN, RunningServer, run_cli, start_server, write_config
from .test_deposit_e2e import DATA, deposit_scenario, rows
from .test_mwi_e2e import register, start_mwi_server
from .test_reload_e2e import deposit, wait_for

pytestmark = pytest.mark.timeout(240)

MAILBOXES = """[zonemessages]
eastern=America/New_York|'vm-received' Q 'digits/at' IMp

[other]
3000 => 1111,Carol Other

[default]
1000 => 1234,Alice Example,alice@example.com,,tz=eastern
2000 => 4321,Bob Example
"""

PEER = "\n[1000]\ntype=friend\nhost=dynamic\nsecret=s3cret\nmailbox=1000@default\n"


def configure(directory: Path, backend: Backend) -> Path:
    config = write_config(directory, backend, mailboxes=MAILBOXES, realtime_voicemail=False)
    with (config / "sip.conf").open("a") as sip_conf:
        sip_conf.write(PEER)
    return config


def rx(config: Path, command: str) -> subprocess.CompletedProcess[str]:
    return run_cli("-C", str(config), "-rx", command, timeout=60)


def ok(config: Path, command: str) -> str:
    result = rx(config, command)
    assert result.returncode == 0, (command, result.stdout, result.stderr)
    return result.stdout


def table_row(output: str, *cells: str) -> bool:
    """Some line has these cells, in order, separated by blanks."""
    pattern = r"\s+".join(re.escape(cell) for cell in cells)
    return any(re.match(pattern + r"(\s|$)", line) for line in output.splitlines())


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_every_console_command_answers_as_asterisk_lays_it_out(
    backend: Backend, tmp_path: Path
) -> None:
    config = configure(tmp_path / "etc", backend)
    server = start_server(config)
    try:
        socket_path = load_server_config(config).control_socket
        assert socket_path.is_socket() and socket_path.stat().st_mode & 0o777 == 0o660
        users = ok(config, "voicemail show users")
        assert users.splitlines()[0].split() == ["Context", "Mbox", "User", "Zone", "NewMsg"]
        assert table_row(users, "default", "1000", "Alice Example", "eastern", "0")
        assert table_row(users, "other", "3000", "Carol Other", "0")
        assert "3 voicemail users configured." in users

        deposit(server, "1000", tmp_path / "call").check()
        users = ok(config, "voicemail show users for default")
        assert table_row(users, "default", "1000", "Alice Example", "eastern", "1")
        assert table_row(users, "default", "2000", "Bob Example", "0")
        assert "other" not in users and "2 voicemail users configured." in users
        missing = rx(config, "voicemail show users for nowhere")
        assert missing.returncode == 1 and "nowhere" in missing.stderr

        zones = ok(config, "voicemail show zones")
        assert zones.splitlines()[0].split() == ["Zone", "Timezone", "Message", "Format"]
        assert table_row(zones, "eastern", "America/New_York", "'vm-received'")

        peers = ok(config, "sip show peers")
        assert peers.split()[:4] == ["Name/username", "Host", "Dyn", "Forcerport"]
        assert table_row(peers, "1000", "(Unspecified)", "D")
        assert "1 sip peers [Monitored: 0 online, 0 offline Unmonitored: 1 online" in peers
        peer = ok(config, "sip show peer 1000")
        assert re.search(r"\* Name\s+: 1000", peer) and re.search(r"Secret\s+: <Set>", peer)
        assert re.search(r"Mailbox\s+: 1000@default", peer)
        unknown = rx(config, "sip show peer 9999")
        assert (unknown.returncode, unknown.stderr.strip()) == (1, "Peer 9999 not found.")
        registry = ok(config, "sip show registry")
        assert registry.split()[:3] == ["Host", "dnsmgr", "Username"]
        assert registry.strip().endswith("0 SIP registrations.")
        assert ok(config, "sip show subscriptions").strip().endswith("0 active SIP subscriptions")
        assert ok(config, "sip show channels").strip().endswith("0 active SIP dialogs")

        # A call in progress shows in core show channels with its application and mailbox.
        results: list[sipp.SippResult] = []
        call = threading.Thread(
            target=lambda: results.append(deposit(server, "2000", tmp_path / "call2"))
        )
        call.start()
        try:
            wait_for(server, "greeting")
            channels = ok(config, "core show channels")
            assert channels.split()[:5] == [
                "Channel",
                "Caller",
                "Application(Data)",
                "Mailbox",
                "State",
            ]
            assert "VoiceMail(2000@default,u)" in channels and " 2000@default " in channels
            assert channels.strip().splitlines()[-1] == "1 active call"
            assert "1 active SIP dialog" in ok(config, "sip show channels")
        finally:
            call.join(90)
        results[0].check()
        assert ok(config, "core show channels").strip().splitlines()[-1] == "0 active calls"

        assert "MWI refresh requested for 1000@default" in ok(config, "mwi refresh 1000@default")
        assert "every watched mailbox" in ok(config, "mwi refresh")
        assert "DEBUG" in ok(config, "logger set level debug")
        bad_level = rx(config, "logger set level loud")
        assert bad_level.returncode == 1 and "Unknown log level 'loud'" in bad_level.stderr
        assert re.fullmatch(r"ARA Voicemail \d+\.\d+\.\d+\S*\n", ok(config, "core show version"))
        uptime = ok(config, "core show uptime")
        assert re.match(r"System uptime: .*second", uptime) and "Last reload: " in uptime
        for command in ("reload", "voicemail reload", "dialplan reload", "sip reload"):
            assert "configuration reloaded: 3 static mailboxes" in ok(config, command)
        help_text = ok(config, "help")
        for usage in (
            "sip show peer <name>",
            "voicemail show users [for <context>]",
            "core stop now",
        ):
            assert usage in help_text
        nothing = rx(config, "frobnicate")
        assert nothing.returncode == 1
        assert nothing.stderr.strip() == "No such command 'frobnicate' (type 'help' for help)"
        # With no call up, a graceful stop ends the process at once, with status 0.
        assert "Shutting down gracefully" in ok(config, "core stop gracefully")
        assert server.process.wait(30) == 0, server.log()
    finally:
        assert server.stop() == 0, server.log()
    assert not socket_path.exists()  # removed on stop
    gone = rx(config, "core show version")
    assert gone.returncode == 2 and "no server answers" in gone.stderr


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_reload_with_20_calls_up_keeps_them_and_a_broken_line_is_refused(
    backend: Backend, tmp_path: Path
) -> None:
    config = configure(tmp_path / "etc", backend)
    server = start_server(config)
    try:
        pcap = DATA / "signal3s_pcmu.pcap"
        xml = deposit_scenario(
            "1000", pcap, [0, 101], [sipp.pause(3200), sipp.bye("1000"), sipp.recv(200)]
        )
        results: list[sipp.SippResult] = []
        calls = threading.Thread(
            target=lambda: results.append(
                sipp.run_sipp(
                    tmp_path / "sipp", xml, server.target, calls=20, rate=40,
                    concurrency=20, timeout=120,
                )
            )
        )  # fmt: skip
        calls.start()
        try:
            deadline = time.monotonic() + 60
            while ok(config, "core show channels").strip().splitlines()[-1] != "20 active calls":
                assert time.monotonic() < deadline, server.log()
                time.sleep(0.2)
            with (config / "voicemail.conf").open("a") as voicemail_conf:
                voicemail_conf.write("4000 => 1111,Dana Reloaded\n")
            assert "4 static mailboxes" in ok(config, "reload")
        finally:
            calls.join(150)
        results[0].check()
        assert len(rows(backend)) == 20
        deposit(server, "4000", tmp_path / "dana").check()
        assert rows(backend)[-1]["dir"].endswith("/default/4000/INBOX")

        with (config / "extensions.conf").open("a") as extensions:
            extensions.write("exten => 5000,x,Answer()\n")
        broken_line = len((config / "extensions.conf").read_text().splitlines())
        refused = rx(config, "reload")
        assert refused.returncode == 1
        assert "keeping the running configuration" in refused.stderr
        assert f"extensions.conf:{broken_line}" in refused.stderr
        deposit(server, "1000", tmp_path / "after").check()  # still serving, old dial plan
        assert len(rows(backend)) == 22
    finally:
        assert server.stop() == 0, server.log()


def read_until(fd: int, text: str, seen: bytearray, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while text.encode() not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"{text!r} not in {seen.decode(errors='replace')!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                seen += os.read(fd, 4096)
            except OSError:  # the child closed the terminal
                break
    output = seen.decode(errors="replace")
    del seen[:]
    return output


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_two_servers_have_their_own_sockets_and_the_interactive_console_runs_commands(
    backend: Backend, tmp_path: Path
) -> None:
    first = configure(tmp_path / "etc1", backend)
    second = write_config(
        tmp_path / "etc2", backend, realtime_voicemail=False,
        mailboxes="[default]\n7000 => 1,Only In Second\n",
    )  # fmt: skip
    assert load_server_config(first).control_socket != load_server_config(second).control_socket
    servers: list[RunningServer] = []
    try:
        servers = [start_server(first), start_server(second)]
        assert "Alice Example" in ok(first, "voicemail show users")
        assert "Alice Example" not in ok(second, "voicemail show users")
        assert "Only In Second" in ok(second, "voicemail show users")

        home = tmp_path / "home"
        home.mkdir()
        controller, terminal = os.openpty()
        console = subprocess.Popen(
            [str(VOICEMAIL_BIN), "-C", str(first), "-r"],
            stdin=terminal, stdout=terminal, stderr=terminal,
            env={**os.environ, "HOME": str(home), "TERM": "dumb"},
        )  # fmt: skip
        os.close(terminal)
        seen = bytearray()
        try:
            read_until(controller, "voicemail*CLI> ", seen)
            os.write(controller, b"voicemail show users\r")
            assert "3 voicemail users configured." in read_until(
                controller, "voicemail*CLI> ", seen
            )
            os.write(controller, b"core show upt\t")  # Tab completes the last word
            read_until(controller, "uptime", seen)
            os.write(controller, b"\r")
            assert "System uptime:" in read_until(controller, "voicemail*CLI> ", seen)
            os.write(controller, b"quit\r")
            assert console.wait(20) == 0
        finally:
            if console.poll() is None:
                console.kill()
                console.wait(5)
            os.close(controller)
        history = (home / ".voicemail_history").read_text()
        assert "voicemail show users" in history and "core show uptime" in history
    finally:
        for server in servers:
            assert server.stop() == 0, server.log()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_without_a_running_server_the_console_exits_2(backend: Backend, tmp_path: Path) -> None:
    config = configure(tmp_path / "etc", backend)
    result = rx(config, "core show version")
    assert result.returncode == 2 and "no server answers" in result.stderr
    interactive = subprocess.run(
        [str(VOICEMAIL_BIN), "-C", str(config), "-r"],
        input="", capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert interactive.returncode == 2
    # The subcommands still need a command, and `voicemail reload` is unchanged.
    assert run_cli("-C", str(config)).returncode == 2
    assert run_cli("reload", "-C", str(config)).returncode == 1


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_registered_peer_shows_in_sip_show_peers_and_mwi_refresh_resends_its_lamp(
    backend: Backend, tmp_path: Path
) -> None:
    server = start_mwi_server(tmp_path, backend)  # voicemail realtime family mapped too
    config = tmp_path / "etc"
    try:
        connection = pyodbc.connect(backend.connection_string, autocommit=True)
        try:
            connection.execute(
                "INSERT INTO voicemail (context, mailbox, password, fullname) "
                "VALUES ('default', '5000', '1', 'Rita Realtime')"
            )
        finally:
            connection.close()
        users = ok(config, "voicemail show users")
        assert table_row(users, "default", "1000", "Alice Example", "0")
        assert table_row(users, "default", "5000", "Rita Realtime", "0")

        phone = sipp.start_sipp(
            tmp_path / "phone",
            sipp.scenario("phone", '<recv request="NOTIFY"/>\n', sipp.answer_request()),
            server.target,
            name="phone",
            calls=2,
        )
        try:
            xml = sipp.scenario("register", *register("6003", f"127.0.0.1:{phone.port}"))
            sipp.run_sipp(tmp_path / "register", xml, server.target, timeout=20).check()
            deadline = time.monotonic() + 10
            while not phone.received():
                assert time.monotonic() < deadline, "no NOTIFY after REGISTER"
                time.sleep(0.1)
            peers = ok(config, "sip show peers")
            assert table_row(peers, "6003/6003", "127.0.0.1", "D", "No", "No", "", str(phone.port))
            peer = ok(config, "sip show peer 6003")
            assert f"sip:6003@127.0.0.1:{phone.port}" in peer
            # Nothing changed and nothing polls: only the refresh makes the second NOTIFY.
            ok(config, "mwi refresh 1000@default")
            phone.wait(15).check()
        finally:
            phone.stop()
        # By Call-ID: a NOTIFY retransmitted under load is still one NOTIFY.
        notifies = {
            re.search(r"^Call-ID: *(\S+)", text, re.M | re.I).group(1): text  # type: ignore[union-attr]
            for _, text in phone.received()
        }
        bodies = list(notifies.values())
        assert len(bodies) == 2, bodies
        assert all(body.endswith("Voice-Message: 0/0 (0/0)\r\n") for body in bodies), bodies
    finally:
        assert server.stop() == 0, server.log()
