"""The control socket on its own: framing, stale sockets, a second server, path lengths."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import pytest

from voicemail.config import control_socket_path, default_control_socket
from voicemail.console.commands import CommandError, Commands
from voicemail.console.control import ControlClient, ControlServer, ControlSocketError
from voicemail.console.server_commands import format_duration

pytestmark = pytest.mark.timeout(30)


def _commands() -> Commands:
    commands = Commands()

    async def echo(arguments: list[str]) -> str:
        return " ".join(arguments)

    async def fail(arguments: list[str]) -> str:
        raise CommandError("it failed")

    async def crash(arguments: list[str]) -> str:
        raise RuntimeError("bug")

    commands.register("echo <words>", echo, "say it back")
    commands.register("fail now", fail, "fail")
    commands.register("crash now", crash, "raise")
    return commands


def test_requests_and_answers_are_json_lines_on_one_connection(tmp_path: Path) -> None:
    path = tmp_path / "vm.ctl"

    async def scenario() -> None:
        server = ControlServer(path, _commands())
        await server.start()
        assert path.stat().st_mode & 0o777 == 0o660
        try:
            client = await asyncio.to_thread(ControlClient, path)
            try:
                assert await asyncio.to_thread(client.run, "echo a b") == (True, "a b")
                assert await asyncio.to_thread(client.run, "fail now") == (False, "it failed")
                ok, output = await asyncio.to_thread(client.run, "crash now")
                assert not ok and "internal error" in output
                assert await asyncio.to_thread(client.completions, "fa") == ["fail"]
                reply = await asyncio.to_thread(client.request, {"nothing": "x"})
                assert reply == {"ok": False, "output": 'bad request: no "command" or "complete"'}
            finally:
                client.close()
        finally:
            await server.stop()
        assert not path.exists()

    asyncio.run(scenario())


def test_a_garbled_request_gets_an_error_and_the_server_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "vm.ctl"

    async def scenario() -> None:
        server = ControlServer(path, _commands())
        await server.start()
        try:
            reader, writer = await asyncio.open_unix_connection(str(path))
            writer.write(b"not json\n")
            assert json.loads(await reader.readline())["ok"] is False
            writer.write(b'{"command": "echo still here"}\n')
            assert json.loads(await reader.readline()) == {"ok": True, "output": "still here"}
            writer.close()
        finally:
            await server.stop()

    asyncio.run(scenario())


def test_a_stale_socket_is_replaced_and_a_live_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "vm.ctl"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, as after a crash

    async def scenario() -> None:
        first = ControlServer(path, _commands())
        await first.start()
        try:
            with pytest.raises(ControlSocketError, match="in use by another running server"):
                await ControlServer(path, _commands()).start()
        finally:
            await first.stop()

    asyncio.run(scenario())


def test_the_derived_socket_path_is_short_and_differs_per_configuration(tmp_path: Path) -> None:
    deep = tmp_path / ("x" * 120) / "etc"
    deep.mkdir(parents=True)
    other = tmp_path / "other"
    other.mkdir()
    path = control_socket_path(deep)
    assert len(str(path).encode()) < 107
    assert path != control_socket_path(other)
    assert path == default_control_socket(deep, None)
    (other / "asterisk.conf").write_text("[directories]\nastrundir => run\n")
    assert control_socket_path(other) == other / "run" / "voicemail.ctl"


def test_uptime_is_worded_as_asterisk_words_it() -> None:
    assert format_duration(0) == "0 seconds"
    assert format_duration(61) == "1 minute, 1 second"
    assert format_duration(3 * 86400 + 2 * 3600 + 5) == "3 days, 2 hours, 5 seconds"
    assert format_duration(8 * 86400) == "1 week, 1 day"
