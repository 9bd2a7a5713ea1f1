"""The status HTTP server: `/metrics`, `/health` and `/ready`, configured as Asterisk's.

http.conf `[general]`: `enabled` (default no), `bindaddr` (default 127.0.0.1: monitoring
is local unless the operator says otherwise), `bindport` (default 8088), `prefix` (URIs
under `/<prefix>/`), `sessionlimit` (connections at once, default 100) and
`session_inactivity` (ms a connection may idle, default 30000). prometheus.conf `[general]`:
`enabled` (default no) and `uri` (default `metrics`). A missing file is "off"; any other
option, or a bad value, is refused at its `file:line`.

HTTP/1.1 is parsed by h11; this module only moves bytes between it and asyncio streams.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import h11

from storage.conffile import ConfigError, Section, load_config

from .config_checks import checked_bool, checked_int, parse_host_port

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 16 * 1024
HTTP_OPTIONS = frozenset({"enabled", "bindaddr", "bindport", "prefix", "sessionlimit",
                          "session_inactivity"})  # fmt: skip
PROMETHEUS_OPTIONS = frozenset({"enabled", "uri"})


@dataclass
class HttpSettings:
    enabled: bool = False
    bindaddr: str = "127.0.0.1"
    bindport: int = 8088
    prefix: str = ""
    sessionlimit: int = 100
    session_inactivity: float = 30.0
    metrics_uri: str | None = None  # None: prometheus.conf is off

    def path(self, name: str) -> str:
        return "/" + "/".join(part for part in (self.prefix, name) if part)


def _general(path: Path, allowed: frozenset[str]) -> Section | None:
    conf = load_config(path, required=False)
    for section in conf.sections:
        if section.name.lower() != "general":
            raise ConfigError(
                section.filename, section.line, f"section [{section.name}] is not supported"
            )
        for var in section.variables:
            if var.name.lower() not in allowed:
                raise ConfigError(
                    var.filename,
                    var.line,
                    f'"{var.name}" is not supported (only {", ".join(sorted(allowed))})',
                )
    return conf.section("general")


def load_http_settings(directory: Path) -> HttpSettings:
    """http.conf and prometheus.conf of a configuration directory, checked."""
    settings = HttpSettings()
    general = _general(directory / "http.conf", HTTP_OPTIONS)
    if general is None:
        return settings
    if (var := general.variable("enabled")) is not None:
        settings.enabled = checked_bool(var)
    if (var := general.variable("bindaddr")) is not None:
        try:
            host, port = parse_host_port(var.value)
        except ValueError as exc:
            raise ConfigError(var.filename, var.line, f'"bindaddr" {exc}') from exc
        settings.bindaddr = host
        settings.bindport = port if port is not None else settings.bindport
    if (var := general.variable("bindport")) is not None:
        settings.bindport = checked_int(var, 0, 65535)
    if (var := general.variable("prefix")) is not None:
        settings.prefix = var.value.strip().strip("/")
    if (var := general.variable("sessionlimit")) is not None:
        settings.sessionlimit = checked_int(var, 1)
    if (var := general.variable("session_inactivity")) is not None:
        settings.session_inactivity = checked_int(var, 1) / 1000
    prometheus = _general(directory / "prometheus.conf", PROMETHEUS_OPTIONS)
    if prometheus is not None:
        on = prometheus.variable("enabled")
        if on is not None and checked_bool(on):
            settings.metrics_uri = (prometheus.get("uri") or "metrics").strip().strip("/")
    return settings


@dataclass
class Reply:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


# A route: awaited for each GET/HEAD of its path.
Route = Callable[[], Awaitable[Reply]]


async def _drain_quietly(writer: asyncio.StreamWriter) -> None:
    try:
        await asyncio.wait_for(writer.drain(), 2)
    except (OSError, TimeoutError):
        pass


class StatusHttpServer:
    """A small HTTP/1.1 server for a fixed set of GET routes."""

    def __init__(self, settings: HttpSettings, routes: dict[str, Route]) -> None:
        self.settings = settings
        self.routes = routes
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.port = settings.bindport

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._connection, self.settings.bindaddr, self.settings.bindport
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("HTTP status server on %s:%d: %s", self.settings.bindaddr, self.port,
                 ", ".join(sorted(self.routes)))  # fmt: skip

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.wait(self._connections, timeout=2)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._connections) >= self.settings.sessionlimit:
            writer.close()
            return
        self._connections.add(task)
        try:
            await self._serve(reader, writer)
        except h11.RemoteProtocolError:
            writer.write(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            await _drain_quietly(writer)
        except (OSError, asyncio.IncompleteReadError, TimeoutError, h11.ProtocolError):
            pass
        finally:
            self._connections.discard(task)
            writer.close()

    async def _next(self, conn: h11.Connection, reader: asyncio.StreamReader) -> object:
        """The next h11 event, reading (with the inactivity limit) when it needs data."""
        while (event := conn.next_event()) is h11.NEED_DATA:
            conn.receive_data(
                await asyncio.wait_for(reader.read(8192), self.settings.session_inactivity)
            )
        return event

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_BYTES)
        while isinstance(request := await self._next(conn, reader), h11.Request):
            body = 0  # a GET has none; a large one ends the connection
            while isinstance(event := await self._next(conn, reader), h11.Data):
                body += len(event.data)
                if body > MAX_REQUEST_BYTES:
                    return
            if not isinstance(event, h11.EndOfMessage):
                return
            reply = await self._answer(request)
            headers = [
                ("Content-Type", reply.content_type),
                ("Content-Length", str(len(reply.body))),
                ("Cache-Control", "no-store"),
            ]
            writer.write(conn.send(h11.Response(status_code=reply.status, headers=headers)))
            if request.method != b"HEAD":
                writer.write(conn.send(h11.Data(data=reply.body)))
            writer.write(conn.send(h11.EndOfMessage()))
            await writer.drain()
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    async def _answer(self, request: h11.Request) -> Reply:
        path = request.target.decode("latin-1").split("?", 1)[0]
        route = self.routes.get(path)
        if route is None:
            return Reply(404, b"Not Found\n")
        if request.method not in (b"GET", b"HEAD"):
            return Reply(405, b"Method Not Allowed\n")
        try:
            return await route()
        except Exception:  # noqa: BLE001 - a broken route must not end the server
            log.exception("HTTP %s failed", path)
            return Reply(500, b"Internal Server Error\n")
