"""The SIP registrar for peers (RFC 3261 10.3) with chan_sip's one-binding-per-peer model.

`Registrar.register` takes an authenticated REGISTER for a known peer and returns what to
answer and what changed; bindings expire on a clock the caller passes in (`expire(now)`,
`next_expiry()`), in the aioquic manner. As chan_sip, a peer has at most one contact (the
first Contact of the newest REGISTER wins), expiries are bounded by min/max_expires, a
binding is dropped 10 s after its expiry (chan_sip schedules expire_register at expires + 10),
and requests go to the packet's source when the peer has nat=force_rport.

`realtime_update` / `realtime_clear` give the `sippeers` columns chan_sip writes on register
and on expiry (realtime_update_peer / destroy_association); `binding_from_realtime` rebuilds a
binding from such a row, e.g. one written by another server sharing the database.
"""

from __future__ import annotations

import email.utils
import enum
import heapq
import itertools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from sipmessage import URI, Address, CSeq, Request

from .messages import top_via
from .peers import Peer

__all__ = [
    "Binding",
    "RegisterAction",
    "RegisterOutcome",
    "Registrar",
    "binding_from_realtime",
    "realtime_clear",
    "realtime_update",
]

Addr = tuple[str, int]

EXPIRY_GRACE = 10.0  # seconds a binding outlives its expiry (chan_sip: expires + 10)
_DIGITS = re.compile(r"[0-9]+")
_MAX_DELTA = 2**32 - 1  # RFC 3261 20.19: larger Expires values are taken as this


@dataclass(frozen=True)
class Binding:
    """Where a registered peer is: its Contact, and where requests for it are sent."""

    peer_name: str
    contact: str  # the registered Contact URI, without <>
    source: Addr  # where the REGISTER came from
    address: Addr  # where requests go: source (force_rport) or the Contact's host:port
    transport: str  # udp, tcp, tls, ws, wss: the REGISTER's transport
    expires: int  # seconds granted
    expires_at: float  # now + expires, on the caller's steady clock
    user_agent: str = ""
    call_id: str = ""
    cseq: int = 0
    path: tuple[str, ...] = ()  # Path values (RFC 3327), if supportpath=yes and the UA supports it
    defaultuser: str = ""  # peer defaultuser, else the Contact's user part

    @property
    def uri(self) -> URI:
        return URI.parse(self.contact)

    def remaining(self, now: float) -> int:
        """Whole seconds left before expiry, as a 200 OK reports it."""
        return max(0, math.ceil(self.expires_at - now - 1e-9))


class RegisterAction(enum.Enum):
    ADDED = "added"  # the peer had no binding
    UPDATED = "updated"  # refreshed, or replaced by a new contact (see `previous`)
    REMOVED = "removed"  # unregistered (expires=0 or Contact: *)
    QUERIED = "queried"  # no Contact: the current binding was only reported
    # Nothing changed: an older CSeq on the bound Call-ID (RFC 3261 10.3 step 7), or an
    # unregistration of a contact that is not the bound one.
    IGNORED = "ignored"
    REJECTED = "rejected"  # 4xx/6xx: see `reason`


@dataclass
class RegisterOutcome:
    """What to answer (`code`, `headers` for make_response) and what changed."""

    code: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    action: RegisterAction = RegisterAction.REJECTED
    binding: Binding | None = None  # in force after this request
    previous: Binding | None = None  # replaced or removed by it
    reason: str = ""

    @property
    def changed(self) -> bool:
        """Whether the peer's registration state changed (write realtime, log, send MWI)."""
        if self.action is RegisterAction.REMOVED:
            return self.previous is not None
        return self.action in (RegisterAction.ADDED, RegisterAction.UPDATED)


def _unbracket(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def _default_port(uri: URI, transport: str) -> int:
    secure = uri.scheme == "sips" or (uri.parameters.get("transport") or "").lower() == "tls"
    return 5061 if secure or transport in ("tls", "wss") else 5060


def _same_contact(a: URI, b: URI) -> bool:
    """RFC 3261 19.1.4 in the parts that identify a UA: scheme, user, host, port, transport."""
    return (
        a.scheme.lower() == b.scheme.lower()
        and a.user == b.user
        and a.host.lower() == b.host.lower()
        and a.port == b.port
        and (a.parameters.get("transport") or "udp").lower()
        == (b.parameters.get("transport") or "udp").lower()
    )


def _delta(text: str | None) -> int | None:
    """A delta-seconds value; None when absent or not a number."""
    if text is None or not _DIGITS.fullmatch(text.strip()):
        return None
    return min(int(text.strip()), _MAX_DELTA)


class Registrar:
    """Bindings of dynamic peers, one per peer name (case-insensitive, as chan_sip)."""

    def __init__(
        self,
        min_expires: int = 60,
        max_expires: int = 3600,
        default_expires: int = 120,
        grace: float = EXPIRY_GRACE,
    ) -> None:
        if not 0 < min_expires <= max_expires:
            raise ValueError("need 0 < min_expires <= max_expires")
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.default_expires = min(max(default_expires, min_expires), max_expires)
        self.grace = grace
        self._bindings: dict[str, Binding] = {}
        self._deadlines: list[tuple[float, int, str]] = []  # heap; stale entries skipped
        self._counter = itertools.count()

    # -- queries ---------------------------------------------------------------------------

    def binding(self, peer_name: str) -> Binding | None:
        return self._bindings.get(peer_name.lower())

    def bindings(self) -> list[Binding]:
        return sorted(self._bindings.values(), key=lambda binding: binding.peer_name.lower())

    def next_expiry(self) -> float | None:
        """When `expire` next has work to do (expiry plus grace), or None."""
        self._drop_stale_deadlines()
        return self._deadlines[0][0] if self._deadlines else None

    # -- changes ---------------------------------------------------------------------------

    def expire(self, now: float) -> list[Binding]:
        """Remove the bindings whose time (plus grace) has come; they are returned so the
        caller can clear the realtime row (realtime_clear) and log the unregistration."""
        removed: list[Binding] = []
        while True:
            self._drop_stale_deadlines()
            if not self._deadlines or self._deadlines[0][0] > now:
                return removed
            _, _, key = heapq.heappop(self._deadlines)
            removed.append(self._bindings.pop(key))

    def restore(self, binding: Binding) -> None:
        """Install a binding obtained elsewhere (binding_from_realtime), replacing any."""
        self._store(binding)

    def remove(self, peer_name: str) -> Binding | None:
        """Drop a peer's binding (peer deleted, `sip unregister`-like actions)."""
        return self._bindings.pop(peer_name.lower(), None)

    def register(
        self,
        request: Request,
        source: Addr,
        transport: str,
        peer: Peer,
        now: float,
        *,
        wall_clock_now: float | None = None,
    ) -> RegisterOutcome:
        """Apply an authenticated REGISTER for `peer` received at steady time `now`.

        Expiry: the Contact's `expires` parameter, else the Expires header, else
        default_expires; 0 unregisters, below min_expires is 423 with Min-Expires, above
        max_expires is lowered. A REGISTER without Contact is a query (or, as chan_sip,
        an unregistration when it carries Expires: 0). `wall_clock_now` (time.time()) adds
        the Date header chan_sip puts on REGISTER answers.
        """
        transport = transport.lower()
        outcome = self._register(request, source, transport, peer, now)
        if wall_clock_now is not None:
            outcome.headers.append(("Date", email.utils.formatdate(wall_clock_now, usegmt=True)))
        return outcome

    # -- internals -------------------------------------------------------------------------

    def _register(
        self, request: Request, source: Addr, transport: str, peer: Peer, now: float
    ) -> RegisterOutcome:
        def reject(
            code: int, reason: str, headers: list[tuple[str, str]] | None = None
        ) -> RegisterOutcome:
            return RegisterOutcome(code, headers or [], RegisterAction.REJECTED, reason=reason)

        try:
            call_id = request.headers["Call-ID"].strip()
            cseq = CSeq.parse(request.headers["CSeq"]).sequence
        except (KeyError, ValueError):
            return reject(400, "bad Call-ID or CSeq")

        expires_header = request.headers.get("Expires")
        header_expires = _delta(expires_header)
        if expires_header is not None and header_expires is None:
            return reject(400, "bad Expires header")

        values = [value.strip() for value in request.headers.getlist("Contact") if value.strip()]
        wildcard = any(value == "*" for value in values)
        current = self.binding(peer.name)

        if not values or wildcard:
            if wildcard and (len(values) > 1 or header_expires != 0):
                return reject(400, "Contact: * needs Expires: 0 and no other Contact")
            if not values and header_expires != 0:
                return self._answer(RegisterAction.QUERIED, current, None, now)
            if current is not None and current.call_id == call_id and cseq <= current.cseq:
                return self._answer(RegisterAction.IGNORED, current, None, now)
            if current is None:
                return self._answer(RegisterAction.REMOVED, None, None, now)
            self.remove(peer.name)
            return self._answer(RegisterAction.REMOVED, None, current, now)

        try:
            address = Address.parse_many(values[0])[0]
        except (ValueError, IndexError):
            return reject(400, "bad Contact header")
        uri = address.uri
        if uri.scheme.lower() not in ("sip", "sips") or not uri.host:
            return reject(400, "Contact is not a sip: or sips: URI")

        expires = _delta(address.parameters.get("expires"))
        if expires is None:
            expires = header_expires if header_expires is not None else self.default_expires
        if 0 < expires < self.min_expires:
            return reject(423, "interval too brief", [("Min-Expires", str(self.min_expires))])
        expires = min(expires, self.max_expires)

        if current is not None and current.call_id == call_id and cseq <= current.cseq:
            return self._answer(RegisterAction.IGNORED, current, None, now)

        if expires == 0:
            if current is None:
                return self._answer(RegisterAction.REMOVED, None, None, now)
            if not _same_contact(current.uri, uri):
                return self._answer(RegisterAction.IGNORED, current, None, now)
            self.remove(peer.name)
            return self._answer(RegisterAction.REMOVED, None, current, now)

        try:
            via_host = top_via(request).host
        except (IndexError, ValueError):
            via_host = source[0]
        if peer.force_rport_for(via_host, source[0]):
            destination = source
        else:
            destination = (_unbracket(uri.host), uri.port or _default_port(uri, transport))
        if peer.contactacl and not peer.contactacl.allows(destination[0]):
            return reject(603, "contact address denied by contactpermit/contactdeny")

        path: tuple[str, ...] = ()
        if peer.supportpath and _supports_path(request):
            path = tuple(value for value in request.headers.getlist("Path") if value.strip())

        binding = Binding(
            peer_name=peer.name,
            contact=str(uri),
            source=source,
            address=destination,
            transport=transport,
            expires=expires,
            expires_at=now + expires,
            user_agent=(request.headers.get("User-Agent") or "").strip(),
            call_id=call_id,
            cseq=cseq,
            path=path,
            defaultuser=peer.defaultuser or (uri.user or ""),
        )
        self._store(binding)
        action = RegisterAction.ADDED if current is None else RegisterAction.UPDATED
        outcome = self._answer(action, binding, current, now)
        if path:
            outcome.headers += [("Path", value) for value in path]
            outcome.headers.append(("Supported", "path"))
        return outcome

    def _answer(
        self,
        action: RegisterAction,
        binding: Binding | None,
        previous: Binding | None,
        now: float,
    ) -> RegisterOutcome:
        """A 200 listing the binding in force (chan_sip: Expires always, Contact if bound)."""
        headers: list[tuple[str, str]] = []
        if binding is not None:
            left = binding.remaining(now)
            headers.append(("Contact", f"<{binding.contact}>;expires={left}"))
            headers.append(("Expires", str(left)))
        else:
            headers.append(("Expires", "0"))
        return RegisterOutcome(200, headers, action, binding, previous)

    def _store(self, binding: Binding) -> None:
        key = binding.peer_name.lower()
        self._bindings[key] = binding
        heapq.heappush(self._deadlines, (binding.expires_at + self.grace, next(self._counter), key))
        if len(self._deadlines) > 2 * len(self._bindings) + 64:
            self._deadlines = [
                (found.expires_at + self.grace, next(self._counter), name)
                for name, found in self._bindings.items()
            ]
            heapq.heapify(self._deadlines)

    def _drop_stale_deadlines(self) -> None:
        """Pop heap entries left behind by refreshed or removed bindings."""
        while self._deadlines:
            deadline, _, key = self._deadlines[0]
            found = self._bindings.get(key)
            if found is not None and found.expires_at + self.grace == deadline:
                return
            heapq.heappop(self._deadlines)


def _supports_path(request: Request) -> bool:
    for value in request.headers.getlist("Supported"):
        if "path" in (item.strip().lower() for item in value.split(",")):
            return True
    return False


# -- realtime (sippeers / sipregs) ----------------------------------------------------------


def _ipaddr_text(host: str) -> str:
    """The ipaddr column as chan_sip writes it (ast_sockaddr_stringify_addr: IPv6 in [])."""
    host = _unbracket(host)
    return f"[{host}]" if ":" in host else host


def realtime_update(
    binding: Binding, wall_clock_now: int, regserver: str = "", lastms: int = 0
) -> dict[str, str]:
    """The columns chan_sip's realtime_update_peer sets when `binding` is made.

    Call it at registration time: `regseconds` is the absolute expiry, wall_clock_now +
    expires (as chan_sip's time(NULL) + expiry). `regserver` is the system name when
    rtsavesysname=yes, else "". `lastms` is the last qualify time (0 when unknown).
    """
    host, port = binding.address
    return {
        "ipaddr": _ipaddr_text(host),
        "port": str(port),
        "regseconds": str(int(wall_clock_now) + binding.expires),
        "defaultuser": binding.defaultuser,
        "fullcontact": binding.contact,
        "useragent": binding.user_agent,
        "lastms": str(lastms),
        "regserver": regserver,
    }


def realtime_clear() -> dict[str, str]:
    """The columns chan_sip's destroy_association blanks when a registration ends."""
    return {
        "fullcontact": "",
        "ipaddr": "",
        "port": "0",
        "regseconds": "0",
        "regserver": "",
        "useragent": "",
        "lastms": "0",
    }


def binding_from_realtime(
    peer_name: str, row: Mapping[str, str], now_wall: float, now_mono: float
) -> Binding | None:
    """The binding a sippeers row describes, if its `regseconds` is still in the future.

    For a realtime dynamic peer registered earlier (or at another server sharing the
    database). None when the registration has expired (chan_sip then ignores the address,
    unless ignoreregexpire) or the row holds no usable address or contact.
    """
    regseconds = _delta(row.get("regseconds"))
    if regseconds is None or regseconds <= now_wall:
        return None
    host = _unbracket((row.get("ipaddr") or "").strip())
    port = _delta(row.get("port")) or 0
    fullcontact = (row.get("fullcontact") or "").strip()
    defaultuser = (row.get("defaultuser") or "").strip()
    uri: URI | None = None
    if fullcontact:
        try:
            uri = URI.parse(fullcontact.strip("<>"))
        except ValueError:
            uri = None
    if uri is None:
        if not host:
            return None
        host_part = f"[{host}]" if ":" in host else host
        user_part = f"{defaultuser}@" if defaultuser else ""
        uri = URI.parse(f"sip:{user_part}{host_part}:{port or 5060}")
    transport = (uri.parameters.get("transport") or "udp").lower()
    if not host:
        host = _unbracket(uri.host)
        port = port or uri.port or _default_port(uri, transport)
    address = (host, port or 5060)
    remaining = int(regseconds - now_wall)
    return Binding(
        peer_name=peer_name,
        contact=str(uri),
        source=address,
        address=address,
        transport=transport,
        expires=remaining,
        expires_at=now_mono + remaining,
        user_agent=(row.get("useragent") or "").strip(),
        defaultuser=defaultuser or (uri.user or ""),
    )
