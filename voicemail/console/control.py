"""The control socket: `voicemail -rx "COMMAND"` and `voicemail -r` talk to the running server.

A Unix socket (mode 0660, so the service's group can use it and nobody else can) carries one
JSON object per line each way:

    {"command": "sip show peers"}    ->  {"ok": true, "output": "..."}
    {"complete": "sip sh"}           ->  {"ok": true, "completions": ["show"]}

A connection may carry any number of requests (the interactive console keeps one open).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import sys
from pathlib import Path

from ..config import control_socket_path
from .commands import Commands

log = logging.getLogger(__name__)

MODE = 0o660
CLIENT_TIMEOUT = 120.0  # a reload of a large configuration may take a while
MAX_REQUEST = 64 * 1024


class ControlSocketError(Exception):
    """The socket cannot be created (in use by a running server, or not writable)."""


class NoServer(Exception):
    """Nothing answers on the control socket."""


class ControlServer:
    """Serves one server's commands on its control socket."""

    def __init__(self, path: Path, commands: Commands) -> None:
        self.path = path
        self.commands = commands
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Bind the socket; a stale file from a crashed server is replaced, a live one is not."""
        if self.path.exists() or self.path.is_symlink():
            if _answers(self.path):
                raise ControlSocketError(
                    f"control socket {self.path} is in use by another running server"
                )
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._server = await asyncio.start_unix_server(
                self._client, path=str(self.path), limit=MAX_REQUEST
            )
            os.chmod(self.path, MODE)
        except OSError as exc:
            message = f"cannot create the control socket {self.path}: {exc}"
            raise ControlSocketError(message) from exc
        log.info("console listening on %s", self.path)

    async def stop(self) -> None:
        """Stop accepting, end the open consoles and remove the socket file."""
        if self._server is not None:
            self._server.close()
            for task in list(self._clients):
                task.cancel()
            if self._clients:
                await asyncio.wait(self._clients, timeout=2)
            self._server = None
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    await _send(writer, {"ok": False, "output": "request too long"})
                    return
                if not line:
                    return
                await _send(writer, await self._answer(line))
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._clients.discard(task)
            writer.close()

    async def _answer(self, line: bytes) -> dict[str, object]:
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            return {"ok": False, "output": f"bad request: {exc}"}
        if "complete" in request:
            return {"ok": True, "completions": self.commands.completions(str(request["complete"]))}
        if not isinstance(request.get("command"), str):
            return {"ok": False, "output": 'bad request: no "command" or "complete"'}
        command = request["command"]
        log.info("console: %s", self.commands.loggable(command))
        try:
            result = await self.commands.run(command)
        except Exception as exc:  # a bug in a handler must not kill the console
            log.exception("console command %r failed", self.commands.loggable(command))
            return {"ok": False, "output": f"internal error: {exc}"}
        return {"ok": result.ok, "output": result.output}


async def _send(writer: asyncio.StreamWriter, reply: dict[str, object]) -> None:
    writer.write(json.dumps(reply).encode() + b"\n")
    await writer.drain()


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


class ControlClient:
    """One connection to a server's control socket (blocking: the console is a terminal)."""

    def __init__(self, path: Path, timeout: float = CLIENT_TIMEOUT) -> None:
        self.path = path
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._socket.settimeout(timeout)
        try:
            self._socket.connect(str(path))
        except OSError as exc:
            self._socket.close()
            raise NoServer(f"no server answers on {path}: {exc.strerror or exc}") from exc
        self._file = self._socket.makefile("rb")

    def request(self, payload: dict[str, str]) -> dict[str, object]:
        try:
            self._socket.sendall(json.dumps(payload).encode() + b"\n")
            line = self._file.readline()
        except OSError as exc:
            raise NoServer(f"the server on {self.path} did not answer: {exc}") from exc
        if not line:
            raise NoServer(f"the server on {self.path} closed the connection")
        reply = json.loads(line)
        assert isinstance(reply, dict)
        return reply

    def run(self, command: str) -> tuple[bool, str]:
        reply = self.request({"command": command})
        return bool(reply.get("ok")), str(reply.get("output", ""))

    def completions(self, line: str) -> list[str]:
        return [str(word) for word in self.request({"complete": line}).get("completions", [])]  # type: ignore[union-attr]

    def close(self) -> None:
        self._file.close()
        self._socket.close()


def connect(config_dir: Path) -> ControlClient:
    """A connection to the server that `config_dir` configures; NoServer if none answers."""
    try:
        path = control_socket_path(config_dir)
    except Exception as exc:  # asterisk.conf unreadable: we cannot even know where to look
        raise NoServer(f"cannot find the control socket for {config_dir}: {exc}") from exc
    return ControlClient(path)


def run_remote(config_dir: Path, command: str) -> int:
    """`voicemail -C DIR -rx COMMAND`: 0 and the answer on stdout, 1 and the message on
    stderr when the command failed, 2 when no server answers."""
    try:
        client = connect(config_dir)
        try:
            ok, output = client.run(command)
        finally:
            client.close()
    except NoServer as exc:
        print(f"voicemail: {exc}", file=sys.stderr)
        return 2
    if output:
        print(output, file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


def interactive(config_dir: Path) -> int:
    """`voicemail -C DIR -r`: the interactive console (see interactive.py)."""
    from .interactive import console

    return console(config_dir)
