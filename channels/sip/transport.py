"""SIP transports: the asyncio sockets around one `TransactionLayer` each.

UDP is one datagram socket. TCP (and TLS, the same with an SSL context) is a listening
socket plus connections, each with a `StreamFramer` that cuts the byte stream into
messages by Content-Length (which bounds a message's size); a connection is named by its
remote address, which is how the transaction layer addresses its answers. Connections are
bounded (`ConnectionLimits`: in total, per address, unauthenticated) and closed when idle
(`tcpidletimeout`) or still unauthenticated after `tcpauthtimeout` seconds.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
from collections.abc import Callable

from .admission import LogLimiter
from .limits import ConnectionLimits, ExemptAddresses, GuardSettings
from .stream import FramingError, StreamFramer
from .transactions import DEFAULT_MAX_TRANSACTIONS, TransactionLayer

log = logging.getLogger(__name__)

Addr = tuple[str, int]
IDLE_TIMEOUT = 300.0  # seconds without traffic before we close a connection (default)


def parse_bind_address(value: str) -> tuple[str, int | None]:
    """sip.conf `bindaddr`-style `host[:port]` as (host, port or None).

    IPv6 addresses come bracketed with a port (`[::1]:5062`) or bare without one (`::1`);
    ValueError for a port that is not a number in 1-65535 or an empty host.
    """
    text = value.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else None
        if rest and port_text is None:
            raise ValueError(f"bad address {value!r}")
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, None  # a name, an IPv4 address or a bare IPv6 address
    if not host:
        raise ValueError(f"no host in {value!r}")
    if port_text is None:
        return host, None
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad port in {value!r}")
    return host, int(port_text)


def local_address_toward(bound: str, remote: str) -> str:
    """The address to advertise (Contact, Via, SDP) to `remote` for a socket bound to `bound`.

    A socket bound to a wildcard (0.0.0.0, ::) has no address of its own to put in a
    message; the one the kernel would send from toward `remote` is found with a connected
    UDP socket, which sends nothing. A specific address, a name or a failure keeps `bound`.
    """
    try:
        wildcard = ipaddress.ip_address(bound.strip("[]")).is_unspecified
        target = ipaddress.ip_address(remote.strip("[]"))
    except ValueError:
        return bound
    if not wildcard or target.is_unspecified:
        return bound
    family = socket.AF_INET6 if target.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((str(target), 9))
            return str(probe.getsockname()[0])
    except OSError:
        return bound


class SipTransport:
    """What every transport shares: a transaction layer, its timer and its output."""

    name = "UDP"

    def __init__(
        self,
        reliable: bool,
        on_events: Callable[[SipTransport], None],
        max_transactions: int = DEFAULT_MAX_TRANSACTIONS,
    ) -> None:
        self.reliable = reliable
        self.layer = TransactionLayer(reliable=reliable, max_transactions=max_transactions)
        self._on_events = on_events
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when: float | None = None
        self.host = ""
        self.port = 0

    @property
    def via_transport(self) -> str:
        return self.name

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def feed(self, data: bytes, source: Addr) -> None:
        try:
            self.layer.receive_datagram(data, source, self.now())
            self._on_events(self)
        except Exception:  # noqa: BLE001 - hostile input must never stop the endpoint
            log.exception("error handling %s message from %s:%s", self.name, *source)
        self.flush()

    def flush(self) -> None:
        for data, addr in self.layer.datagrams_to_send():
            try:
                self.send(data, addr)
            except (OSError, ValueError, OverflowError) as exc:
                # An address the socket refuses must not cost the other datagrams or the
                # timer below (without it no transaction would expire).
                log.info("cannot send %s to %s:%s: %s", self.name, *addr, exc)
        when = self.layer.get_timer()
        if when is not None and when != self._timer_when:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_when = when
            self._timer = asyncio.get_running_loop().call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_when = None
        try:
            self.layer.handle_timer(self.now())
            self._on_events(self)
        except Exception:  # noqa: BLE001
            log.exception("error in %s SIP timer", self.name)
        self.flush()

    def send(self, data: bytes, addr: Addr) -> None:
        raise NotImplementedError

    def connected(self, addr: Addr) -> bool:
        """Whether a message to `addr` goes out on what the peer opened (always, for UDP)."""
        return True

    def authenticated(self, addr: Addr) -> None:
        """A request from `addr` authenticated (or started a call): nothing for UDP; a
        stream connection is no longer subject to tcpauthtimeout and tcpauthlimit."""

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class UdpTransport(SipTransport, asyncio.DatagramProtocol):
    name = "UDP"

    def __init__(
        self,
        on_events: Callable[[SipTransport], None],
        max_transactions: int = DEFAULT_MAX_TRANSACTIONS,
    ) -> None:
        super().__init__(False, on_events, max_transactions)
        self.transport: asyncio.DatagramTransport | None = None

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=(host, port))
        assert self.transport is not None
        self.host, self.port = self.transport.get_extra_info("sockname")[:2]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.feed(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        log.debug("SIP UDP socket error: %s", exc)

    def send(self, data: bytes, addr: Addr) -> None:
        if not 0 < addr[1] < 65536:
            # asyncio's transport would close itself on the OverflowError (uvloop raises it).
            raise ValueError(f"port {addr[1]} is out of range")
        if self.transport is not None:
            self.transport.sendto(data, addr)

    def close(self) -> None:
        super().close()
        if self.transport is not None:
            self.transport.close()


class _StreamConnection(asyncio.Protocol):
    def __init__(self, owner: StreamTransport, outbound: bool = False) -> None:
        self.owner = owner
        self.outbound = outbound  # we opened it (to send a NOTIFY...): trusted
        self.framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.remote: Addr | None = None
        self.last_activity = 0.0
        self.refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.remote = (peer[0], peer[1])
        self.last_activity = self.owner.now()
        if not self.owner.admit(self):
            self.refused = True
            transport.abort()  # type: ignore[attr-defined]
            return
        self.owner.connections[self.remote] = self

    def data_received(self, data: bytes) -> None:
        assert self.remote is not None and self.transport is not None
        if self.refused:
            return
        self.last_activity = self.owner.now()
        try:
            result = self.framer.feed(data)
        except FramingError as exc:
            # Messages complete before the fault are answered; close() flushes the answers.
            for message in exc.messages:
                self.owner.feed(message, self.remote)
            log.info("closing %s connection from %s:%s: %s", self.owner.name, *self.remote, exc)
            self.transport.close()
            return
        if result.pong:
            self.transport.write(b"\r\n")  # RFC 5626 keep-alive answer
        for message in result.messages:
            self.owner.feed(message, self.remote)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.remote is not None and self.owner.connections.get(self.remote) is self:
            del self.owner.connections[self.remote]
            self.owner.limits.closed(self.remote)


class StreamTransport(SipTransport):
    """TCP, or TLS when given an SSL context."""

    def __init__(
        self,
        on_events: Callable[[SipTransport], None],
        ssl_context: ssl.SSLContext | None = None,
        max_transactions: int = DEFAULT_MAX_TRANSACTIONS,
        guard: GuardSettings | None = None,
        exempt: ExemptAddresses | None = None,
    ) -> None:
        super().__init__(True, on_events, max_transactions)
        self.name = "TLS" if ssl_context is not None else "TCP"
        self.ssl_context = ssl_context
        guard = guard or GuardSettings()
        self.limits = ConnectionLimits(
            guard.tcp_max_connections,
            guard.tcp_max_per_ip,
            guard.tcp_auth_limit,
            guard.tcp_auth_timeout,
        )
        self.idle_timeout = guard.tcp_idle_timeout or IDLE_TIMEOUT
        self.exempt = exempt or ExemptAddresses()
        self._refusal_log = LogLimiter()
        self.connections: dict[Addr, _StreamConnection] = {}
        self.server: asyncio.base_events.Server | None = None
        self._idle_task: asyncio.Task[None] | None = None
        self._pending: dict[Addr, list[bytes]] = {}
        self._connecting: set[asyncio.Task[None]] = set()  # held: the loop keeps weak refs

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: _StreamConnection(self), host, port, ssl=self.ssl_context
        )
        self.host, self.port = self.server.sockets[0].getsockname()[:2]
        self._idle_task = asyncio.ensure_future(self._close_idle())

    def connected(self, addr: Addr) -> bool:
        return addr in self.connections

    def admit(self, connection: _StreamConnection) -> bool:
        """Count a new connection, or refuse it (logged at most every 10 s) past a limit."""
        assert connection.remote is not None
        ip = connection.remote[0]
        trusted = connection.outbound or ip in self.exempt
        if not connection.outbound:
            reason = self.limits.refusal(ip, exempt=trusted)
            if reason is not None:
                self.limits.refused += 1
                if self._refusal_log.should_log(self.now()):
                    log.warning(
                        "%s connection from %s:%s refused: %s (%d more since the last such line)",
                        self.name, *connection.remote, reason, self._refusal_log.take_suppressed(),
                    )  # fmt: skip
                return False
        if not trusted:
            oldest = self.limits.evict_for_new()
            if oldest is not None:
                victim = self.connections.get(oldest)  # type: ignore[call-overload]
                log.info(
                    "%s: %d unauthenticated connections (tcpauthlimit): closing the oldest, %s:%s",
                    self.name, self.limits.unauthenticated, *oldest,  # type: ignore[misc]
                )  # fmt: skip
                if victim is not None and victim.transport is not None:
                    victim.transport.close()
                self.limits.closed(oldest)
        self.limits.opened(connection.remote, ip, self.now(), authenticated=trusted)
        return True

    def authenticated(self, addr: Addr) -> None:
        self.limits.authenticated(addr)

    def send(self, data: bytes, addr: Addr) -> None:
        connection = self.connections.get(addr)
        if connection is not None and connection.transport is not None:
            connection.transport.write(data)
            connection.last_activity = self.now()
            return
        # No connection (the peer closed it): open one, as RFC 3261 18.2.2 allows.
        queued = self._pending.setdefault(addr, [])
        queued.append(data)
        if len(queued) == 1:
            task = asyncio.ensure_future(self._connect(addr))
            self._connecting.add(task)
            task.add_done_callback(self._connecting.discard)

    async def _connect(self, addr: Addr) -> None:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(
                loop.create_connection(
                    lambda: _StreamConnection(self, outbound=True),
                    addr[0],
                    addr[1],
                    ssl=self.ssl_context,
                ),
                timeout=5,
            )
        except (OSError, TimeoutError) as exc:
            log.info("cannot open %s connection to %s:%s: %s", self.name, *addr, exc)
            self._pending.pop(addr, None)
            return
        for data in self._pending.pop(addr, []):
            self.send(data, addr)

    async def _close_idle(self) -> None:
        """Close idle connections, and those unauthenticated past tcpauthtimeout."""
        timeouts = [self.idle_timeout, self.limits.auth_timeout]
        period = max(0.05, min(t for t in timeouts if t > 0) / 4)
        while True:
            await asyncio.sleep(period)
            now = self.now()
            for connection in list(self.connections.values()):
                if now - connection.last_activity > self.idle_timeout and connection.transport:
                    log.info("closing idle %s connection from %s:%s", self.name, *connection.remote)
                    connection.transport.close()
            for key in self.limits.overdue(now):
                connection = self.connections.get(key)  # type: ignore[call-overload]
                if connection is not None and connection.transport is not None:
                    log.info(
                        "closing %s connection from %s:%s: not authenticated within %g s"
                        " (tcpauthtimeout)", self.name, *key, self.limits.auth_timeout,
                    )  # fmt: skip
                    connection.transport.close()
                    self.limits.closed(key)  # counted no more, whenever the close completes

    def close(self) -> None:
        super().close()
        if self._idle_task is not None:
            self._idle_task.cancel()
        for task in list(self._connecting):
            task.cancel()
        if self.server is not None:
            self.server.close()
        for connection in list(self.connections.values()):
            if connection.transport is not None:
                connection.transport.close()
