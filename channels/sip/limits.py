"""Abuse limits for SIP, without any I/O: floods, digest guessing, stream connections.

A scanner (SIPVicious and its kind) sends thousands of REGISTERs or INVITEs a second from one
address, and a password guesser spreads its attempts over many addresses. These classes
decide, from the source address and a clock passed in, what the endpoint does:

- `FloodLimiter`: a token bucket per source address. Past the rate a source is answered 503
  with Retry-After a few times, then dropped without an answer for as long as it keeps
  sending; it is let in again once it has been quiet for `block` seconds.
- `UserLockout`: digest failures counted per user name, whatever the address; a user past
  the limit is locked for a while, except from the addresses it authenticated from lately
  (its own phone keeps working while a botnet guesses its password).
- `ExemptAddresses`: who no flood limit applies to: configured peers and PBX trunks (a PBX
  sends every call from one address) and the networks of sip.conf `floodexempt`.
- `ConnectionLimits`: TCP/TLS connections in total, per address and unauthenticated
  (chan_sip's `tcpauthlimit`).

Every table is bounded (`max_tracked`): the least recently seen entry is forgotten first, so
a flood of spoofed addresses or made-up names cannot exhaust memory.
"""

from __future__ import annotations

import enum
import ipaddress
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

__all__ = [
    "ConnectionLimits",
    "ExemptAddresses",
    "FloodLimiter",
    "GuardSettings",
    "RecentTable",
    "TokenBucket",
    "UserLockout",
    "Verdict",
]

DEFAULT_MAX_TRACKED = 10_000
V = TypeVar("V")


@dataclass
class GuardSettings:
    """sip.conf [general] abuse limits (names in comments); rates of 0 mean no limit.

    The defaults stop a scanner (thousands of requests a second) but never an honest site:
    an office of 200 phones behind one NAT address rebooting at once stays under them.
    """

    register_rate: float = 50.0  # registerrate: REGISTERs a second per source
    register_burst: int = 500  # registerburst
    request_rate: float = 500.0  # requestrate: other requests out of a known dialog
    request_burst: int = 2000  # requestburst
    flood_block: float = 10.0  # floodblock: Retry-After, and the quiet time to be let in
    flood_replies: int = 3  # 503s sent in one flood before the source is ignored
    flood_exempt: tuple[str, ...] = ()  # floodexempt: addresses or networks, e.g. PBX trunks
    auth_failures_per_ip: int = 10  # authfailuresperip
    auth_failures_per_user: int = 20  # authfailuresperuser
    auth_window: float = 60.0  # authfailurewindow: seconds the failures are counted over
    auth_lockout: float = 60.0  # authlockout: seconds an address or a user stays locked
    tcp_max_connections: int = 2000  # tcpmaxconnections
    tcp_max_per_ip: int = 200  # tcpmaxconnectionsperip (peers' addresses exempt)
    tcp_auth_limit: int = 100  # tcpauthlimit (chan_sip): unauthenticated connections
    tcp_auth_timeout: float = 30.0  # tcpauthtimeout (chan_sip): seconds to authenticate
    tcp_idle_timeout: float = 300.0  # tcpidletimeout: seconds without traffic


class RecentTable(OrderedDict[str, V]):
    """A dict that keeps at most `max_size` keys, forgetting the least recently used first:
    every table keyed by what the network sends (an address, a user name) is one of these."""

    def __init__(self, max_size: int) -> None:
        super().__init__()
        self.max_size = max_size

    def use(self, key: str, make: Callable[[], V]) -> V:
        """The entry of `key`, made if new, as the most recently used."""
        value = self.get(key)
        if value is None:
            value = self[key] = make()
            while len(self) > self.max_size:
                self.popitem(last=False)
        else:
            self.move_to_end(key)
        return value


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved; one request takes one token."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self.tokens = float(self.burst)
        self.stamp = now

    def take(self, now: float) -> bool:
        """Take a token if one is there (the bucket refills since the last call)."""
        elapsed = max(0.0, now - self.stamp)
        self.stamp = now
        self.tokens = min(float(self.burst), self.tokens + elapsed * self.rate)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Verdict(enum.Enum):
    ALLOW = "allow"
    LIMITED = "limited"  # the first refusal of a flood: answer 503 and log it
    REFUSE = "refuse"  # answer 503 with Retry-After
    DROP = "drop"  # send nothing


@dataclass
class _Flood:
    bucket: TokenBucket
    limited_until: float = float("-inf")
    replies: int = 0


class FloodLimiter:
    """Requests per source address: a token bucket each, then 503, then silence.

    While a source is limited every request is refused (the first `replies` with 503 and
    Retry-After `block`, the rest dropped) and pushes the end of the limit `block` seconds
    further: a client that honours Retry-After is let in again, a flood stays ignored.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        block: float = 10.0,
        replies: int = 3,
        max_tracked: int = DEFAULT_MAX_TRACKED,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.block = block
        self.replies = replies
        self._sources: RecentTable[_Flood] = RecentTable(max_tracked)
        self.refused = 0  # requests answered 503
        self.dropped = 0  # requests left unanswered

    def __len__(self) -> int:
        return len(self._sources)

    @property
    def retry_after(self) -> int:
        return max(1, round(self.block))

    def check(self, ip: str, now: float) -> Verdict:
        if self.rate <= 0:
            return Verdict.ALLOW
        source = self._sources.use(ip, lambda: _Flood(TokenBucket(self.rate, self.burst, now)))
        if now < source.limited_until:
            source.bucket.take(now)  # keeps its clock; tokens do not matter while limited
            source.limited_until = now + self.block
            return self._refusal(source, first=False)
        if source.bucket.take(now):
            return Verdict.ALLOW
        source.limited_until = now + self.block
        source.replies = 0
        return self._refusal(source, first=True)

    def _refusal(self, source: _Flood, first: bool) -> Verdict:
        if source.replies >= self.replies:
            self.dropped += 1
            return Verdict.DROP
        source.replies += 1
        self.refused += 1
        return Verdict.LIMITED if first else Verdict.REFUSE

    def limited(self, ip: str, now: float) -> bool:
        source = self._sources.get(ip)
        return source is not None and now < source.limited_until


@dataclass
class _User:
    failures: deque[float]
    locked_until: float = float("-inf")
    last_seen: float = float("-inf")
    trusted: OrderedDict[str, float] = field(default_factory=OrderedDict)  # ip -> last success


class UserLockout:
    """Digest failures per user name from any address; past `max_failures` within `window`
    seconds the user is locked for `lockout` seconds.

    An address the user authenticated from within `trust_for` seconds (its registered phone)
    is not locked out, so an attack on a name does not take its owner's phone off line. Names
    that do not exist are counted like real ones, so a lockout tells a scanner nothing.
    """

    TRUSTED_PER_USER = 4

    def __init__(
        self,
        max_failures: int = 20,
        window: float = 60.0,
        lockout: float = 60.0,
        trust_for: float = 3600.0,
        max_tracked: int = DEFAULT_MAX_TRACKED,
    ) -> None:
        if max_failures < 1:
            raise ValueError("max_failures must be at least 1")
        self.max_failures = max_failures
        self.window = window
        self.lockout = lockout
        self.trust_for = trust_for
        self._users: RecentTable[_User] = RecentTable(max_tracked)

    def __len__(self) -> int:
        return len(self._users)

    def _trusted(self, user: _User, ip: str, now: float) -> bool:
        seen = user.trusted.get(ip)
        return seen is not None and now - seen <= self.trust_for

    def locked(self, name: str, ip: str, now: float) -> float | None:
        """Seconds `name` stays locked for a request from `ip`, or None when it may try."""
        user = self._users.get(name)
        if user is None or now >= user.locked_until or self._trusted(user, ip, now):
            return None
        return user.locked_until - now

    def failed(self, name: str, ip: str, now: float) -> bool:
        """Count one failure; True when it starts a lockout (the moment to log it)."""
        user = self._touch(name, now)
        if self._trusted(user, ip, now):
            return False  # its own phone with a stale password is no attack
        user.failures.append(now)
        if len(user.failures) == self.max_failures and now - user.failures[0] <= self.window:
            user.locked_until = now + self.lockout
            user.failures.clear()
            return True
        return False

    def succeeded(self, name: str, ip: str, now: float) -> None:
        user = self._touch(name, now)
        user.trusted[ip] = now
        user.trusted.move_to_end(ip)
        while len(user.trusted) > self.TRUSTED_PER_USER:
            user.trusted.popitem(last=False)

    def _touch(self, name: str, now: float) -> _User:
        self._forget_idle(now)
        user = self._users.use(name, lambda: _User(deque(maxlen=self.max_failures)))
        user.last_seen = now
        return user

    def _forget_idle(self, now: float) -> None:
        # Kept in order of last use: the idle ones are at the front.
        keep = max(self.window, self.lockout, self.trust_for)
        while self._users:
            name, user = next(iter(self._users.items()))
            if now < user.locked_until or now - user.last_seen <= keep:
                break
            del self._users[name]


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _host_of(ip: str) -> str:
    """`ip` without brackets, an IPv4-mapped IPv6 address as IPv4."""
    text = ip.strip().strip("[]").lower()
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return text
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


class ExemptAddresses:
    """Addresses no flood or per-address connection limit applies to.

    `networks` come from configuration (ValueError for one that is not an address or a
    network); `peers` are the fixed hosts of configured peers, replaced at each reload;
    `learn()` adds the fixed host of a realtime peer when it is loaded (at most `max_learned`).
    """

    def __init__(
        self,
        networks: Iterable[str] = (),
        peers: Iterable[str] = (),
        max_learned: int = DEFAULT_MAX_TRACKED,
    ) -> None:
        self.networks: list[Network] = [parse_network(n) for n in networks]
        self.peers: set[str] = set()
        self.set_peers(peers)
        self._learned: RecentTable[bool] = RecentTable(max_learned)

    def set_peers(self, hosts: Iterable[str]) -> None:
        self.peers = {_host_of(h) for h in hosts if is_address(h)}

    def learn(self, host: str) -> None:
        if not is_address(host):
            return  # dynamic, a name, empty
        self._learned.use(_host_of(host), lambda: True)

    def __contains__(self, ip: object) -> bool:
        if not isinstance(ip, str):
            return False
        host = _host_of(ip)
        if host in self.peers or host in self._learned:
            return True
        if not self.networks:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)


def is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return False
    return True


def parse_network(text: str) -> Network:
    """`192.0.2.7`, `192.0.2.0/24`, `2001:db8::/32` or `[2001:db8::1]`; ValueError else."""
    value = text.strip().strip("[]")
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"{text.strip()!r} is not an IP address or network") from None


@dataclass
class _Connection:
    ip: str
    authenticated: bool
    opened: float


class ConnectionLimits:
    """Stream connections open, in total, per address and not yet authenticated (past
    `auth_limit` the oldest unauthenticated one makes room for the new one).

    A key names one connection (the transport uses the remote address). `max_*` of 0 means
    no limit. An exempt or outbound connection counts as authenticated from the start.
    """

    def __init__(
        self,
        max_total: int = 2000,
        max_per_ip: int = 200,
        auth_limit: int = 100,
        auth_timeout: float = 30.0,
    ) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.auth_limit = auth_limit
        self.auth_timeout = auth_timeout
        self._open: dict[object, _Connection] = {}
        self._by_ip: dict[str, int] = {}
        self.unauthenticated = 0
        self.refused = 0

    def __len__(self) -> int:
        return len(self._open)

    def refusal(self, ip: str, exempt: bool = False) -> str | None:
        """Why a new connection from `ip` is refused, or None."""
        if self.max_total and len(self._open) >= self.max_total:
            return f"{len(self._open)} connections open (tcpmaxconnections={self.max_total})"
        if exempt:
            return None
        count = self._by_ip.get(ip, 0)
        if self.max_per_ip and count >= self.max_per_ip:
            return f"{count} connections from {ip} (tcpmaxconnectionsperip={self.max_per_ip})"
        return None

    def evict_for_new(self) -> object | None:
        """At tcpauthlimit unauthenticated connections, the oldest of them, for the caller
        to close (and forget) so that a new one gets in: hanging connections cannot starve
        the next client. None below the limit."""
        if not self.auth_limit or self.unauthenticated < self.auth_limit:
            return None
        return next((k for k, c in self._open.items() if not c.authenticated), None)

    def opened(self, key: object, ip: str, now: float, authenticated: bool = False) -> None:
        self.closed(key)
        self._open[key] = _Connection(ip, authenticated, now)
        self._by_ip[ip] = self._by_ip.get(ip, 0) + 1
        if not authenticated:
            self.unauthenticated += 1

    def authenticated(self, key: object) -> bool:
        """Mark a connection authenticated; True if it was not before."""
        connection = self._open.get(key)
        if connection is None or connection.authenticated:
            return False
        connection.authenticated = True
        self.unauthenticated -= 1
        return True

    def is_authenticated(self, key: object) -> bool:
        connection = self._open.get(key)
        return connection is not None and connection.authenticated

    def closed(self, key: object) -> None:
        connection = self._open.pop(key, None)
        if connection is None:
            return
        if not connection.authenticated:
            self.unauthenticated -= 1
        left = self._by_ip[connection.ip] - 1
        if left:
            self._by_ip[connection.ip] = left
        else:
            del self._by_ip[connection.ip]

    def overdue(self, now: float) -> list[object]:
        """Connections still unauthenticated `auth_timeout` seconds after they opened."""
        if self.auth_timeout <= 0:
            return []
        return [
            key
            for key, c in self._open.items()
            if not c.authenticated and now - c.opened >= self.auth_timeout
        ]
