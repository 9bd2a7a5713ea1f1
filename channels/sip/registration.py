"""Peers and their registrations: sip.conf and realtime `sippeers`, as chan_sip does it.

A REGISTER is authenticated with digest, its binding kept by the sans-I/O `Registrar`, and
with `rtupdate=yes` written back to the peer's row (`ipaddr`, `port`, `regseconds`, ...).
With `rtcachefriends=yes` a realtime peer that registers stays in memory for the life of
its registration (or `rtautoclear` seconds), so it gets MWI NOTIFYs and qualify pings;
without it a realtime peer is loaded for one request and dropped, the limitation the ARA
article describes. Peers with `qualify` are pinged with OPTIONS every `qualifyfreq`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from sipmessage import URI, Address, Request

from storage.odbc import DatabaseError
from storage.realtime import Realtime

from ..tasks import BackgroundTasks
from .auth import AuthResult, FailureLimiter, NonceManager, challenge, parse_credentials, verify
from .limits import GuardSettings, UserLockout
from .messages import SERVER_NAME, host_reference, make_response, new_call_id, new_tag
from .peers import Peer
from .registrar import (
    Binding,
    RegisterAction,
    Registrar,
    binding_from_realtime,
    realtime_clear,
    realtime_update,
)
from .transactions import ClientTransaction, ServerTransaction

log = logging.getLogger(__name__)

# How long a REGISTER's answer waits for the realtime row to be written.
WRITE_BACK_WAIT = 2.0
# Seconds a name missing from realtime sippeers is answered "unknown" without a query, and
# how many such names are remembered (PeerDirectory).
NEGATIVE_TTL = 5.0
NEGATIVE_MAX = 10_000


def _mark_authenticated(transport: object, source: tuple[str, int]) -> None:
    """Tell a stream transport that the connection from `source` authenticated."""
    mark = getattr(transport, "authenticated", None)
    if mark is not None:
        mark(source)


@dataclass
class RealtimeOptions:
    """sip.conf [general] realtime switches (fact sheet 2.5)."""

    rtcachefriends: bool = False
    rtupdate: bool = True
    rtautoclear: int = 0  # seconds a cached friend lives; 0: as long as its registration
    ignoreregexpire: bool = False
    regserver: str = ""


@dataclass
class CachedPeer:
    peer: Peer
    until: float | None = None  # rtautoclear deadline for realtime peers


@dataclass
class QualifyState:
    sent_at: float
    transaction: ClientTransaction | None = None
    lastms: int = 0


class PeerDirectory:
    """Find peers by name: sip.conf first, then the cache, then the realtime family.

    A name the realtime family does not have (or whose row is unusable) is remembered as
    unknown for `negative_ttl` seconds (NEGATIVE_TTL, 5 s), so a scanner sending REGISTERs or
    SUBSCRIBEs for made-up users costs one database query per name per window, not one per
    request; a row inserted meanwhile is found once the window has passed, or at once after
    `invalidate()` (which a reload calls). At most `negative_max` names are remembered, the
    oldest forgotten first. A failed query (database down) is not remembered.
    """

    @property
    def static(self) -> dict[str, Peer]:
        return self._static

    @static.setter
    def static(self, peers: dict[str, Peer]) -> None:
        self._static = peers
        self._watchers = None
        if getattr(self, "on_static", None) is not None:
            self.on_static(peers)  # type: ignore[misc]

    def __init__(
        self,
        static: dict[str, Peer],
        realtime: Realtime | None,
        options: RealtimeOptions,
        defaults: dict[str, str] | None = None,
        *,
        negative_ttl: float = NEGATIVE_TTL,
        negative_max: int = NEGATIVE_MAX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.static = static
        self.realtime = realtime
        self.options = options
        self.defaults = defaults or {}
        # Told the static peers at each change and each realtime peer loaded: the flood
        # limits exempt the fixed hosts of configured peers (Registrations sets it).
        self.on_static: Callable[[dict[str, Peer]], None] | None = None
        self.on_loaded: Callable[[Peer], None] | None = None
        self.cache: dict[str, CachedPeer] = {}
        # mailbox -> {name: peer} of the peers in memory whose mailbox= lists it; None until
        # first asked and after the static peers change; the cache is changed only by keep()
        # and drop(), which keep it.
        self._watchers: dict[tuple[str, str], dict[str, Peer]] | None = None
        self.negative_ttl = negative_ttl
        self.negative_max = negative_max
        self._clock = clock
        self._unknown: OrderedDict[str, float] = OrderedDict()  # name -> remembered until

    async def find(self, name: str) -> Peer | None:
        peer = self.static.get(name)
        if peer is not None:
            return peer
        cached = self.cache.get(name)
        if cached is not None:
            return cached.peer
        if self.realtime is None or not self.realtime.has_family("sippeers"):
            return None
        now = self._clock()
        until = self._unknown.get(name)
        if until is not None:
            if now < until:
                return None
            del self._unknown[name]
        try:
            row = await self.realtime.load("sippeers", name=name)
        except DatabaseError as exc:
            log.warning("realtime sippeers lookup of %s failed: %s", name, exc)
            return None
        if row is None:
            self._remember_unknown(name, now)
            return None
        try:
            peer = Peer.from_options(name, row, realtime=True, defaults=self.defaults)
        except ValueError as exc:
            log.warning("realtime peer %s is unusable: %s", name, exc)
            self._remember_unknown(name, now)
            return None
        if self.on_loaded is not None:
            self.on_loaded(peer)
        return peer

    def _remember_unknown(self, name: str, now: float) -> None:
        if self.negative_ttl <= 0 or self.negative_max <= 0:
            return
        self._unknown[name] = now + self.negative_ttl
        self._unknown.move_to_end(name)
        while len(self._unknown) > self.negative_max:
            self._unknown.popitem(last=False)

    def invalidate(self) -> None:
        """Forget the names remembered as unknown (reload: rows may have been added)."""
        self._unknown.clear()

    def keep(self, peer: Peer, now: float) -> None:
        """rtcachefriends: keep a realtime peer in memory, like a sip.conf friend."""
        if peer.realtime and self.options.rtcachefriends:
            until = now + self.options.rtautoclear if self.options.rtautoclear else None
            self.drop(peer.name)
            self.cache[peer.name] = CachedPeer(peer, until)
            if self._watchers is not None:
                self._index(peer)

    def drop(self, name: str) -> None:
        cached = self.cache.pop(name, None)
        if cached is not None and self._watchers is not None:
            for box in cached.peer.mailbox:
                self._watchers.get(box, {}).pop(name, None)
            static = self.static.get(name)
            if static is not None:
                self._index(static)

    def in_memory(self) -> list[Peer]:
        return list(self.static.values()) + [c.peer for c in self.cache.values()]

    def watching(self, mailbox: str, context: str) -> list[Peer]:
        """The peers in memory whose mailbox= lists mailbox@context: where a change's
        unsolicited NOTIFYs go. Indexed, since a scan of 10 000 peers for each deposit held
        the event loop for milliseconds."""
        if self._watchers is None:
            self._watchers = {}
            for peer in self.in_memory():
                self._index(peer)
        return list(self._watchers.get((mailbox, context), {}).values())

    def _index(self, peer: Peer) -> None:
        assert self._watchers is not None
        for box in peer.mailbox:
            self._watchers.setdefault(box, {})[peer.name] = peer

    async def write_back(self, peer: Peer, fields: dict[str, str]) -> None:
        if not peer.realtime or not self.options.rtupdate or self.realtime is None:
            return
        try:
            await self.realtime.update("sippeers", "name", peer.name, fields)
        except DatabaseError as exc:
            log.warning("could not write registration of %s back to sippeers: %s", peer.name, exc)


@dataclass
class Registrations:
    """REGISTER handling, expiry, and qualify, for one endpoint."""

    endpoint: object  # the SipEndpoint (respond, send_request, via_for, transport_named)
    peers: PeerDirectory
    realm: str = "asterisk"
    on_registered: Callable[[Peer, Binding], None] | None = None
    registrar: Registrar = field(default_factory=Registrar)
    nonces: NonceManager = field(default_factory=lambda: NonceManager(secrets.token_bytes(32)))
    limiter: FailureLimiter | None = None  # None: from the endpoint's GuardSettings
    user_lockout: UserLockout | None = None  # likewise
    qualifying: dict[str, QualifyState] = field(default_factory=dict)
    _tasks: BackgroundTasks = field(default_factory=BackgroundTasks)

    def __post_init__(self) -> None:
        config = getattr(self.endpoint, "config", None)
        guard = getattr(config, "guard", None) or GuardSettings()
        if self.limiter is None:
            self.limiter = FailureLimiter(
                guard.auth_failures_per_ip, guard.auth_window, guard.auth_lockout
            )
        if self.user_lockout is None:
            self.user_lockout = UserLockout(
                guard.auth_failures_per_user, guard.auth_window, guard.auth_lockout
            )
        exempt = getattr(self.endpoint, "exempt", None)
        if exempt is not None:
            self.peers.on_static = lambda peers: exempt.set_peers(
                p.host for p in peers.values() if not p.dynamic
            )
            self.peers.on_static(self.peers.static)
            self.peers.on_loaded = lambda peer: None if peer.dynamic else exempt.learn(peer.host)

    def start(self) -> None:
        self._tasks.spawn(self._housekeeping())

    def stop(self) -> None:
        self._tasks.cancel()

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    # -- authentication, shared with SUBSCRIBE --------------------------------------------

    async def authenticate(
        self, transport: object, request: Request, tx: ServerTransaction, user: str
    ) -> Peer | None:
        """The peer `user`, after ACL and digest checks; None when a response was sent.

        Unknown names are challenged like known ones (chan_sip's alwaysauthreject), so a
        scanner cannot tell which exist.
        """
        endpoint = self.endpoint
        source_ip = tx.source[0]
        now = self.now()
        assert self.limiter is not None and self.user_lockout is not None
        if self.limiter.blocked(source_ip, now):
            endpoint.respond(transport, tx, make_response(request, 403, "Too many failed attempts"))
            return None
        peer = await self.peers.find(user)
        if peer is not None and not peer.acl.allows(source_ip):
            log.info("%s from %s for %s refused by ACL", request.method, source_ip, user)
            endpoint.respond(transport, tx, make_response(request, 403, to_tag=new_tag()))
            return None
        if peer is not None and not peer.requires_auth:
            _mark_authenticated(transport, tx.source)
            return peer
        headers = request.headers.getlist("Authorization")
        if not headers:
            self._challenge(transport, request, tx, stale=False)
            return None
        try:
            credentials = self._credentials_for_our_realm(headers)
        except ValueError:
            endpoint.respond(transport, tx, make_response(request, 400, "Bad Authorization"))
            return None
        locked_for = self.user_lockout.locked(user, source_ip, now)
        if locked_for is not None:
            # Not checked at all while locked; 503 so that the owner's phone tries again
            # once the lock is over, not 403, which would make it give up.
            retry = str(max(1, math.ceil(locked_for)))
            endpoint.respond(
                transport,
                tx,
                make_response(
                    request, 503, "Too many failed attempts", to_tag=new_tag(),
                    headers=[("Retry-After", retry)],
                ),
            )  # fmt: skip
            return None
        if peer is None:
            result = AuthResult.FAILED
        else:
            result = verify(
                credentials,
                request.method,
                realm=self.realm,
                username=peer.name,
                secret=peer.secret or None,
                md5secret=peer.md5secret or None,
                nonces=self.nonces,
                now=now,
            )
        if result is AuthResult.STALE:
            self._challenge(transport, request, tx, stale=True)
            return None
        if result is AuthResult.FAILED or peer is None:
            self.limiter.failed(source_ip, now)
            log.info("%s from %s for %s: wrong credentials", request.method, source_ip, user)
            if self.user_lockout.failed(user, source_ip, now):
                log.warning(
                    "digest authentication for %r locked for %g s: %d failures within %g s"
                    " (the last from %s); addresses it authenticated from are not locked",
                    user, self.user_lockout.lockout, self.user_lockout.max_failures,
                    self.user_lockout.window, source_ip,
                )  # fmt: skip
            endpoint.respond(transport, tx, make_response(request, 403, to_tag=new_tag()))
            return None
        self.limiter.succeeded(source_ip)
        self.user_lockout.succeeded(user, source_ip, now)
        _mark_authenticated(transport, tx.source)
        return peer

    def transport_allowed(
        self, transport: object, request: Request, tx: ServerTransaction, peer: Peer
    ) -> bool:
        """chan_sip's check_request_transport: a request from a peer over a transport its
        `transport=` does not list is refused 403 (after authentication, as chan_sip), with
        an error in the log; True when it may go on."""
        name = transport.name.lower()
        if peer.allows_transport(name):
            return True
        log.error(
            "%s from %s for peer %s refused: %s is not a valid transport for it (transport=%s)",
            request.method,
            tx.source[0],
            peer.name,
            name.upper(),
            ",".join(peer.transport),
        )
        self.endpoint.respond(transport, tx, make_response(request, 403, to_tag=new_tag()))
        return False

    def _credentials_for_our_realm(self, headers: list[str]) -> dict[str, str]:
        """The parsed credentials answering our realm (RFC 3261 22.3: a UA may send one
        Authorization header per realm), else the first parseable ones; ValueError if none
        parses (another realm's header in a form we do not know is not our business)."""
        parsed: list[dict[str, str]] = []
        for header in headers:
            try:
                parsed.append(parse_credentials(header))
            except ValueError:
                continue
        if not parsed:
            raise ValueError("no parseable Authorization header")
        return next((c for c in parsed if c.get("realm") == self.realm), parsed[0])

    def _challenge(
        self, transport: object, request: Request, tx: ServerTransaction, stale: bool
    ) -> None:
        value = challenge(self.realm, self.nonces.issue(self.now()), stale=stale)
        response = make_response(
            request, 401, to_tag=new_tag(), headers=[("WWW-Authenticate", value)]
        )
        self.endpoint.respond(transport, tx, response)

    # -- REGISTER -------------------------------------------------------------------------

    def handle_register(self, transport: object, request: Request, tx: ServerTransaction) -> None:
        self._tasks.spawn(self._register(transport, request, tx))

    async def _register(self, transport: object, request: Request, tx: ServerTransaction) -> None:
        try:
            user = Address.parse(request.headers["To"]).uri.user or ""
        except ValueError:
            self.endpoint.respond(transport, tx, make_response(request, 400, "Bad To"))
            return
        peer = await self.authenticate(transport, request, tx, user)
        if peer is None:
            return
        if not peer.can_register:
            self.endpoint.respond(
                transport, tx, make_response(request, 403, "Peer is not dynamic", to_tag=new_tag())
            )
            return
        if not self.transport_allowed(transport, request, tx, peer):
            return
        now = self.now()
        wall = int(time.time())
        if peer.realtime and self.registrar.binding(peer.name) is None:
            # Registered earlier, or at another server sharing the database.
            restored = binding_from_realtime(peer.name, peer.options, wall, now)
            if restored is not None:
                self.registrar.restore(restored)
        outcome = self.registrar.register(
            request, tx.source, transport.name.lower(), peer, now, wall_clock_now=wall
        )
        binding = outcome.binding
        if outcome.code == 200 and outcome.changed:
            # As chan_sip (update_peer before the 200), the row is written before we answer,
            # so a phone that has its 200 finds itself in sippeers; a slow database delays
            # the answer by WRITE_BACK_WAIT at most, the write then finishes on its own.
            write = self._registration_changed(peer, outcome.action, binding, now, wall)
            await self._within(write, WRITE_BACK_WAIT)
        self.endpoint.respond(
            transport,
            tx,
            make_response(request, outcome.code, to_tag=new_tag(), headers=outcome.headers),
        )
        if outcome.code == 200 and binding is not None and self.on_registered is not None:
            self.on_registered(peer, binding)

    async def _registration_changed(
        self,
        peer: Peer,
        action: RegisterAction,
        binding: Binding | None,
        now: float,
        wall: int,
    ) -> None:
        """Log, cache (rtcachefriends) or drop the peer, and write its row (rtupdate)."""
        if action is RegisterAction.REMOVED:
            log.info("peer %s unregistered", peer.name)
            self.peers.drop(peer.name)
            self.qualifying.pop(peer.name, None)
            await self.peers.write_back(peer, realtime_clear())
        elif binding is not None:
            log.info(
                "peer %s registered at %s (%s:%s, %d s)",
                peer.name,
                binding.contact,
                *binding.address,
                binding.expires,
            )
            self.peers.keep(peer, now)
            fields = realtime_update(binding, wall, regserver=self.peers.options.regserver)
            await self.peers.write_back(peer, fields)

    async def _within(self, coroutine: Coroutine[Any, Any, None], seconds: float) -> None:
        """Wait for `coroutine` at most `seconds`; past that it goes on as a background task."""
        task = self._tasks.spawn(coroutine)
        await asyncio.wait({task}, timeout=seconds)

    # -- expiry and qualify ----------------------------------------------------------------

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                await self._expire()
                self._qualify()
            except Exception:  # noqa: BLE001 - keep the loop alive
                log.exception("registration housekeeping failed")

    async def _expire(self) -> None:
        now = self.now()
        for binding in self.registrar.expire(now):
            log.info("registration of %s expired", binding.peer_name)
            peer = await self.peers.find(binding.peer_name)
            self.peers.drop(binding.peer_name)
            if peer is not None and not self.peers.options.ignoreregexpire:
                await self.peers.write_back(peer, realtime_clear())
        for name, cached in list(self.peers.cache.items()):
            if cached.until is not None and cached.until <= now:
                self.peers.drop(name)

    def _qualify(self) -> None:
        now = self.now()
        for peer in self.peers.in_memory():
            if not peer.qualify:
                continue
            binding = self.registrar.binding(peer.name)
            if binding is None:
                continue
            state = self.qualifying.get(peer.name)
            if state is not None and now - state.sent_at < peer.qualifyfreq:
                continue
            self._send_options(peer, binding, now)

    def _send_options(self, peer: Peer, binding: Binding, now: float) -> None:
        transport = self.endpoint.transport_named(binding.transport)
        if transport is None:
            return
        request = Request("OPTIONS", URI.parse(binding.contact))
        request.headers.add("Via", self.endpoint.via_for(transport))
        request.headers.add("Max-Forwards", "70")
        host = f"{host_reference(transport.host)}:{transport.port}"
        request.headers.add("From", f"<sip:{self.realm}@{host}>;tag={new_tag()}")
        request.headers.add("To", f"<{binding.contact}>")
        request.headers.add("Call-ID", new_call_id(transport.host))
        request.headers.add("CSeq", "102 OPTIONS")
        request.headers.add("User-Agent", SERVER_NAME)
        transaction = transport.layer.send_request(request, binding.address, transport.now())
        transport.flush()
        previous = self.qualifying.get(peer.name)
        self.qualifying[peer.name] = QualifyState(
            now, transaction, previous.lastms if previous else 0
        )

    async def qualify_answered(self, transaction: ClientTransaction, reachable: bool) -> None:
        """A qualify OPTIONS got an answer (any final response) or timed out."""
        for name, state in self.qualifying.items():
            if state.transaction is transaction:
                lastms = int((self.now() - state.sent_at) * 1000) if reachable else -1
                if lastms != state.lastms:
                    log.info(
                        "peer %s qualify: %s", name, f"{lastms} ms" if reachable else "UNREACHABLE"
                    )
                state.lastms = lastms
                state.transaction = None
                peer = await self.peers.find(name)
                if peer is not None:
                    await self.peers.write_back(peer, {"lastms": str(lastms)})
                return
