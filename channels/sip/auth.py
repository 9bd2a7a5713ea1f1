"""SIP digest authentication (RFC 3261 22, RFC 2617, RFC 7616 with MD5) without any I/O.

What chan_sip's check_auth does, with the holes closed: nonces are stateless (an HMAC of
their issue time, so any number of challenges costs no memory) but expire after `lifetime`
seconds, and the `nc` count of each nonce is remembered so a captured Authorization header
cannot be replayed. As in chan_sip, the digest username must be the peer name, `md5secret`
(MD5 of `user:realm:secret`) is used as HA1 when set, and the digest `uri` is not compared
with the Request-URI. `FailureLimiter` blocks a source address after repeated bad passwords.

Time is always a parameter (`now`, seconds on any steady clock), as everywhere in channels/.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
import secrets
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from .limits import RecentTable

__all__ = [
    "AuthResult",
    "FailureLimiter",
    "NonceManager",
    "NonceState",
    "challenge",
    "parse_credentials",
    "verify",
]

# A nonce is 60 lowercase hex digits: issue time in ms (12), random (16), HMAC-SHA256 (32).
_TIME_DIGITS = 12
_RANDOM_DIGITS = 16
_MAC_DIGITS = 32
_NONCE_LENGTH = _TIME_DIGITS + _RANDOM_DIGITS + _MAC_DIGITS
_NONCE = re.compile(f"[0-9a-f]{{{_NONCE_LENGTH}}}")
_NC = re.compile(r"[0-9a-fA-F]{8}")

# A nonce issued up to this many seconds "in the future" is accepted (clock granularity).
_FUTURE_TOLERANCE = 1.0


class NonceState(enum.Enum):
    OK = "ok"  # ours, and young enough
    STALE = "stale"  # ours, but too old (or from before a clock jump): challenge again
    INVALID = "invalid"  # not a nonce we issued


class AuthResult(enum.Enum):
    OK = "ok"
    STALE = "stale"  # the password was right but the nonce is not usable: re-challenge, stale=true
    FAILED = "failed"  # wrong password, wrong user or malformed credentials


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


class NonceManager:
    """Issues and checks stateless nonces; remembers the last `nc` of each nonce in use.

    Only nonces that authenticated a request are remembered, at most `max_tracked` of them;
    older ones are dropped once their lifetime is over. If the table is full anyway, every
    nonce issued before the dropped one becomes stale, so dropping never opens a replay.
    """

    def __init__(self, secret: bytes, lifetime: float = 300, max_tracked: int = 10_000) -> None:
        if not secret:
            raise ValueError("the nonce secret must not be empty")
        self._secret = secret
        self.lifetime = lifetime
        self.max_tracked = max_tracked
        self._used: OrderedDict[str, tuple[int, float]] = OrderedDict()  # nonce -> (nc, issued)
        self._floor = -1.0  # nonces issued at or before this time are stale

    def _mac(self, body: str) -> str:
        digest = hmac.new(self._secret, body.encode("ascii"), hashlib.sha256).hexdigest()
        return digest[:_MAC_DIGITS]

    def issue(self, now: float) -> str:
        """A fresh nonce for a 401/407 challenge."""
        stamp = f"{max(0, int(now * 1000)):0{_TIME_DIGITS}x}"[-_TIME_DIGITS:]
        body = stamp + secrets.token_hex(_RANDOM_DIGITS // 2)
        return body + self._mac(body)

    def issued_at(self, nonce: str) -> float | None:
        """When a nonce of ours was issued, or None if it is not one of ours."""
        if not _NONCE.fullmatch(nonce):
            return None
        body, mac = nonce[:-_MAC_DIGITS], nonce[-_MAC_DIGITS:]
        if not hmac.compare_digest(mac, self._mac(body)):
            return None
        return int(body[:_TIME_DIGITS], 16) / 1000

    def validate(self, nonce: str, now: float) -> NonceState:
        """Whether `nonce` is ours and still within its lifetime."""
        issued = self.issued_at(nonce)
        if issued is None:
            return NonceState.INVALID
        if issued <= self._floor or issued > now + _FUTURE_TOLERANCE:
            return NonceState.STALE
        if now - issued > self.lifetime:
            return NonceState.STALE
        return NonceState.OK

    def use(self, nonce: str, nc: int | None, now: float) -> bool:
        """Record one use of a valid nonce; False if it is a replay.

        With qop the nonce count must grow at every use (RFC 7616 3.4); without qop there is
        no count, so the nonce is good for one request only (as chan_sip's stalenonce).
        """
        issued = self.issued_at(nonce)
        if issued is None:
            return False
        self._forget_expired(now)
        last = self._used.get(nonce)
        count = 0 if nc is None else nc
        if last is not None and (nc is None or count <= last[0]):
            return False
        if last is None and nc is not None and nc < 1:
            return False
        self._used[nonce] = (count, issued)
        self._used.move_to_end(nonce)
        while len(self._used) > self.max_tracked:
            _, (_, dropped_issued) = self._used.popitem(last=False)
            self._floor = max(self._floor, dropped_issued)
        return True

    def _forget_expired(self, now: float) -> None:
        while self._used:
            nonce, (_, issued) = next(iter(self._used.items()))
            if now - issued <= self.lifetime:
                break
            del self._used[nonce]


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def challenge(realm: str, nonce: str, stale: bool = False) -> str:
    """The value of a WWW-Authenticate (or Proxy-Authenticate) header for a 401 (407)."""
    value = f'Digest algorithm=MD5, realm={_quote(realm)}, nonce={_quote(nonce)}, qop="auth"'
    if stale:
        value += ", stale=true"
    return value


_SCHEME = re.compile(r"\s*([A-Za-z][A-Za-z0-9._-]*)(?:\s+|$)")
_PARAM_NAME = re.compile(r"\s*([A-Za-z0-9._-]+)\s*=\s*")


def parse_credentials(header_value: str) -> dict[str, str]:
    """The parameters of a Digest Authorization header, names in lower case, unquoted.

    Quoted values may contain commas and backslash escapes. A scheme other than Digest, a
    parameter without `=`, an unterminated quote or a repeated parameter is a ValueError.
    """
    scheme = _SCHEME.match(header_value)
    if scheme is None or scheme.group(1).lower() != "digest":
        raise ValueError("not Digest credentials")
    text = header_value[scheme.end() :]
    params: dict[str, str] = {}
    pos = 0
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text):
            break
        match = _PARAM_NAME.match(text, pos)
        if match is None:
            raise ValueError(f"bad credentials parameter at {text[pos : pos + 20]!r}")
        name = match.group(1).lower()
        pos = match.end()
        if text[pos : pos + 1] == '"':
            pos += 1
            chars: list[str] = []
            while True:
                if pos >= len(text):
                    raise ValueError("unterminated quoted string in credentials")
                char = text[pos]
                if char == "\\" and pos + 1 < len(text):
                    chars.append(text[pos + 1])
                    pos += 2
                    continue
                pos += 1
                if char == '"':
                    break
                chars.append(char)
            value = "".join(chars)
        else:
            end = text.find(",", pos)
            end = len(text) if end < 0 else end
            value = text[pos:end].strip()
            pos = end
        if name in params:
            raise ValueError(f"repeated credentials parameter {name!r}")
        params[name] = value
    return params


def _same(a: str, b: str) -> bool:
    """Constant-time equality of two strings (any characters)."""
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def verify(
    credentials: Mapping[str, str],
    method: str,
    *,
    realm: str,
    username: str,
    secret: str | None,
    md5secret: str | None,
    nonces: NonceManager,
    now: float,
) -> AuthResult:
    """Check parsed Digest credentials for a request of `method` against a peer's secret.

    `username` is the peer name (chan_sip requires the digest username to equal it).
    A peer with neither secret nor md5secret needs no authentication (chan_sip), so OK.
    A right answer on a stale, unknown or replayed nonce is STALE: the client knows the
    password and only needs a new challenge (stale=true). A wrong one is FAILED.
    """
    if not secret and not md5secret:
        return AuthResult.OK
    user = credentials.get("username")
    cred_realm = credentials.get("realm")
    nonce = credentials.get("nonce")
    uri = credentials.get("uri")
    response = credentials.get("response")
    if user is None or cred_realm is None or not nonce or uri is None or not response:
        return AuthResult.FAILED
    if not _same(user, username) or cred_realm != realm:
        return AuthResult.FAILED
    algorithm = credentials.get("algorithm", "MD5")
    if algorithm.upper() != "MD5":
        return AuthResult.FAILED

    ha1 = md5secret.strip().lower() if md5secret else _md5(f"{username}:{realm}:{secret}")
    ha2 = _md5(f"{method}:{uri}")
    qop = credentials.get("qop")
    nc: int | None = None
    if qop is None:
        expected = _md5(f"{ha1}:{nonce}:{ha2}")
    else:
        nc_text = credentials.get("nc", "")
        cnonce = credentials.get("cnonce")
        if qop.lower() != "auth" or not _NC.fullmatch(nc_text) or not cnonce:
            return AuthResult.FAILED
        nc = int(nc_text, 16)
        expected = _md5(f"{ha1}:{nonce}:{nc_text}:{cnonce}:{qop}:{ha2}")
    if not _same(expected, response.strip().lower()):
        return AuthResult.FAILED

    if nonces.validate(nonce, now) is not NonceState.OK:
        return AuthResult.STALE
    if not nonces.use(nonce, nc, now):
        return AuthResult.STALE
    return AuthResult.OK


@dataclass
class _Source:
    failures: deque[float]
    blocked_until: float = float("-inf")
    last_seen: float = field(default=float("-inf"))


class FailureLimiter:
    """Blocks a source IP that failed authentication `max_failures` times within `window` s.

    A blocked source stays blocked for `block` seconds; a success forgets its failures. At
    most `max_tracked` sources are remembered: idle ones are forgotten first, then the least
    recently seen, so a flood of spoofed addresses cannot exhaust memory.
    """

    def __init__(
        self,
        max_failures: int = 10,
        window: float = 60,
        block: float = 60,
        max_tracked: int = 10_000,
    ) -> None:
        if max_failures < 1:
            raise ValueError("max_failures must be at least 1")
        self.max_failures = max_failures
        self.window = window
        self.block = block
        self._sources: RecentTable[_Source] = RecentTable(max_tracked)

    def __len__(self) -> int:
        return len(self._sources)

    def blocked(self, ip: str, now: float) -> bool:
        source = self._sources.get(ip)
        return source is not None and now < source.blocked_until

    def failed(self, ip: str, now: float) -> None:
        """Count one failed authentication from `ip`; may start a block."""
        self._forget_idle(now)
        source = self._sources.use(ip, lambda: _Source(deque(maxlen=self.max_failures)))
        source.last_seen = now
        source.failures.append(now)
        if len(source.failures) == self.max_failures and now - source.failures[0] <= self.window:
            source.blocked_until = now + self.block
            source.failures.clear()

    def succeeded(self, ip: str) -> None:
        self._sources.pop(ip, None)

    def _idle(self, source: _Source, now: float) -> bool:
        return now >= source.blocked_until and now - source.last_seen > self.window

    def _forget_idle(self, now: float) -> None:
        # Sources are kept in order of last failure, so idle ones are at the front.
        while self._sources:
            ip, source = next(iter(self._sources.items()))
            if not self._idle(source, now):
                break
            del self._sources[ip]
