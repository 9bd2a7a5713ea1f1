"""A fresh, empty database per test on SQLite, PostgreSQL and MariaDB, dropped afterwards.

PostgreSQL (127.0.0.1:5432, user postgres, trust) and MariaDB (127.0.0.1:3306, root, no password)
must be running: a test fails, rather than skips, when they are not, because CI starts them.
Each database gets its own user, so a test sees only what it created.

Use the `backend` fixture (all three) or `server_backend` (PostgreSQL and MariaDB only).
"""

from __future__ import annotations

import dataclasses
import secrets
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyodbc
import pytest

from storage.odbc import ConnectionClass
from storage.odbc_handles import handle_lock

BACKEND_NAMES = ("sqlite", "postgresql", "mysql")
SERVER_BACKEND_NAMES = ("postgresql", "mysql")

PG_ADMIN = (
    "Driver=PostgreSQL Unicode;Server=127.0.0.1;Port=5432;Database=postgres;UID=postgres;CommLog=0;"
)
MARIADB_ADMIN = "Driver=MariaDB Unicode;Server=127.0.0.1;Port=3306;User=root;Password=;"

_UNREACHABLE = {
    "sqlite": "Driver=SQLite3;Database=/nonexistent-directory/voicemail.db;Timeout=1000;",
    "postgresql": "Driver=PostgreSQL Unicode;Server=127.0.0.1;Port=1;Database=x;UID=x;CommLog=0;",
    "mysql": "Driver=MariaDB Unicode;Server=127.0.0.1;Port=1;Database=x;User=x;Password=;",
}


@dataclass
class Backend:
    """One fresh database: how to reach it, as our code and as res_odbc.conf would say it."""

    name: str
    connection_string: str
    database: str
    user: str
    unreachable_connection_string: str

    def connection_class(self, name: str = "asterisk", max_connections: int = 2) -> ConnectionClass:
        """A res_odbc class for this database."""
        return ConnectionClass(
            name=name, connection_string=self.connection_string, max_connections=max_connections
        )

    def res_odbc_section(
        self, name: str = "asterisk", max_connections: int = 4, pre_connect: bool = True
    ) -> str:
        """A res_odbc.conf section for this database.

        `;` starts a comment in Asterisk .conf files, so the string's `;` are written `\\;`.
        """
        escaped = self.connection_string.replace(";", "\\;")
        return (
            f"[{name}]\n"
            "enabled => yes\n"
            f"connection_string => {escaped}\n"
            f"max_connections => {max_connections}\n"
            f"pre-connect => {'yes' if pre_connect else 'no'}\n"
            "connect_timeout => 5\n"
        )

    def connection_string_via(self, port: int) -> str:
        """This database's connection string, reaching the server through 127.0.0.1:`port`."""
        server_port = {"postgresql": "Port=5432;", "mysql": "Port=3306;"}[self.name]
        return self.connection_string.replace(server_port, f"Port={port};")

    def via(self, port: int) -> Backend:
        """The same database, reached through 127.0.0.1:`port` (a test's TCP proxy)."""
        return dataclasses.replace(self, connection_string=self.connection_string_via(port))

    def session_count(self) -> int:
        """How many server sessions this database's user has open right now."""
        if self.name == "postgresql":
            query = "SELECT COUNT(*) FROM pg_stat_activity WHERE usename = ?"
            with _admin(PG_ADMIN, "PostgreSQL") as admin:
                return int(admin.execute(query, self.user).fetchone()[0])
        if self.name == "mysql":
            query = "SELECT COUNT(*) FROM information_schema.processlist WHERE user = ?"
            with _admin(MARIADB_ADMIN, "MariaDB") as admin:
                return int(admin.execute(query, self.user).fetchone()[0])
        raise ValueError(f"{self.name} has no server sessions")

    def sql(self, statement: str, *params: object) -> list[dict[str, object]]:
        """Run one statement on this database (autocommit); rows as dicts, lower-case keys."""
        serialize = self.name == "sqlite"  # the server's pools may connect meanwhile
        with handle_lock(serialize):
            connection = pyodbc.connect(self.connection_string, autocommit=True)
        try:
            cursor = connection.execute(statement, *params)
            if cursor.description is None:
                return []
            names = [column[0].lower() for column in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        finally:
            with handle_lock(serialize):
                connection.close()

    def terminate_connections(self) -> int:
        """Make the server drop every session of this database's user (a simulated outage)."""
        if self.name == "postgresql":
            with _admin(PG_ADMIN, "PostgreSQL") as admin:
                rows = admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = ?",
                    self.user,
                ).fetchall()
                return len(rows)
        if self.name == "mysql":
            with _admin(MARIADB_ADMIN, "MariaDB") as admin:
                ids = admin.execute(
                    "SELECT id FROM information_schema.processlist WHERE user = ?", self.user
                ).fetchall()
                for (session_id,) in ids:
                    try:
                        admin.execute(f"KILL {int(session_id)}")
                    except pyodbc.Error:
                        pass  # already gone
                return len(ids)
        raise ValueError(f"{self.name} has no server sessions to terminate")


class TcpProxy:
    """A TCP forwarder to a database server that a test can cut, to stage an outage.

    stop() drops every connection and refuses new ones, as a server being restarted does;
    start() accepts again on the same port, forwarding.

    blackhole() stages a firewall that silently drops packets: connections stay open and new
    ones are still accepted (and connected upstream), but no byte, FIN or reset passes in
    either direction, so each side waits in silence. forward() opens the path again and what
    was held is then delivered, in order: through a real firewall TCP keeps retransmitting
    the dropped segments, so once packets pass again the peer receives everything the
    connection has not given up on. Code that was already waiting must cope with a late
    answer (an abandoned worker whose reply arrives after all); code that timed out and
    closed its side simply never sees it.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._gate = threading.Condition(self._lock)
        self._forwarding = True

    def start(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self.port = listener.getsockname()[1]
        with self._lock:
            self._listener = listener
            self._forwarding = True
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def blackhole(self) -> None:
        """Hold every byte (and every close) in both directions until forward() or stop()."""
        with self._lock:
            self._forwarding = False

    def forward(self) -> None:
        """Let bytes through again, delivering what blackhole() held back."""
        with self._gate:
            self._forwarding = True
            self._gate.notify_all()

    def stop(self) -> None:
        with self._gate:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, set()
            self._gate.notify_all()  # held pumps of these sockets give up
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() in progress (Linux)
            except OSError:
                pass
            listener.close()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._sockets.update((client, server))
            for source, target in ((client, server), (server, client)):
                threading.Thread(
                    target=self._pump,
                    args=(_GatedSocket(self, source), _GatedSocket(self, target)),
                    daemon=True,
                ).start()

    def _hold(self, sock: socket.socket) -> None:
        """Wait while blackholed; OSError when the proxy dropped `sock` meanwhile."""
        with self._gate:
            while not self._forwarding and sock in self._sockets:
                self._gate.wait()
            if sock not in self._sockets:
                raise OSError("proxy stopped")

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class _GatedSocket:
    """A proxied socket whose recv() holds what it read while the proxy is blackholed.

    Holding at recv() (not dropping) keeps the bytes, and an end of stream, for forward();
    other methods are the socket's own, so a subclass's _pump may set options on it.
    """

    def __init__(self, proxy: TcpProxy, sock: socket.socket) -> None:
        self._proxy = proxy
        self._sock = sock

    def recv(self, size: int) -> bytes:
        self._proxy._hold(self._sock)
        data = self._sock.recv(size)
        self._proxy._hold(self._sock)  # read before the blackhole began: held, not lost
        return data

    def __getattr__(self, name: str) -> object:
        return getattr(self._sock, name)


@contextmanager
def tcp_proxy(upstream_port: int) -> Iterator[TcpProxy]:
    """A started TcpProxy, stopped on exit."""
    proxy = TcpProxy(upstream_port)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


@contextmanager
def _admin(connection_string: str, label: str) -> Iterator[pyodbc.Connection]:
    try:
        connection = pyodbc.connect(connection_string, autocommit=True, timeout=5)
    except pyodbc.Error as exc:
        pytest.fail(
            f"{label} is not reachable as superuser ({connection_string}): {exc}. "
            "The storage tests need a running server; CI starts it as a service.",
            pytrace=False,
        )
    try:
        yield connection
    finally:
        connection.close()


@contextmanager
def fresh_database(name: str, tmp_path: Path) -> Iterator[Backend]:
    """Create an empty database (and user) on backend `name`; drop both on exit."""
    ident = f"aravm_{secrets.token_hex(6)}"
    password = secrets.token_hex(12)
    if name == "sqlite":
        path = tmp_path / f"{ident}.db"
        yield Backend(
            name=name,
            connection_string=f"Driver=SQLite3;Database={path};Timeout=10000;",
            database=str(path),
            user="",
            unreachable_connection_string=_UNREACHABLE[name],
        )
        return
    if name == "postgresql":
        with _admin(PG_ADMIN, "PostgreSQL") as admin:
            admin.execute(f"CREATE USER {ident} PASSWORD '{password}'")
            admin.execute(f"CREATE DATABASE {ident} OWNER {ident} ENCODING 'UTF8'")
        try:
            yield Backend(
                name=name,
                connection_string=(
                    "Driver=PostgreSQL Unicode;Server=127.0.0.1;Port=5432;"
                    f"Database={ident};UID={ident};PWD={password};"
                    "ByteaAsLongVarBinary=1;CommLog=0;"
                ),
                database=ident,
                user=ident,
                unreachable_connection_string=_UNREACHABLE[name],
            )
        finally:
            with _admin(PG_ADMIN, "PostgreSQL") as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {ident} WITH (FORCE)")
                admin.execute(f"DROP USER IF EXISTS {ident}")
        return
    if name == "mysql":
        with _admin(MARIADB_ADMIN, "MariaDB") as admin:
            admin.execute(f"CREATE DATABASE {ident} CHARACTER SET utf8mb4")
            admin.execute(f"CREATE USER '{ident}'@'%' IDENTIFIED BY '{password}'")
            admin.execute(f"GRANT ALL PRIVILEGES ON {ident}.* TO '{ident}'@'%'")
        try:
            yield Backend(
                name=name,
                connection_string=(
                    "Driver=MariaDB Unicode;Server=127.0.0.1;Port=3306;"
                    f"Database={ident};User={ident};Password={password};"
                ),
                database=ident,
                user=ident,
                unreachable_connection_string=_UNREACHABLE[name],
            )
        finally:
            with _admin(MARIADB_ADMIN, "MariaDB") as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {ident}")
                admin.execute(f"DROP USER IF EXISTS '{ident}'@'%'")
        return
    raise ValueError(f"unknown backend {name!r}")


@pytest.fixture(params=BACKEND_NAMES)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """A fresh database on each of SQLite, PostgreSQL and MariaDB."""
    with fresh_database(request.param, tmp_path) as fresh:
        yield fresh


@pytest.fixture(params=SERVER_BACKEND_NAMES)
def server_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """A fresh database on PostgreSQL and on MariaDB (the backends several servers can share)."""
    with fresh_database(request.param, tmp_path) as fresh:
        yield fresh
