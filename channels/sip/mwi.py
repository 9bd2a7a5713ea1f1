"""Message waiting indication: the message-summary event package (RFC 3842 over RFC 6665).

This module owns the body chan_sip sends (`message_summary`), the notifier side of
message-summary subscriptions (`SubscriptionManager`: SUBSCRIBE answered, refreshed, ended,
expired) and the NOTIFY requests for them, in-dialog and unsolicited. It is sans-I/O: time is
a parameter, requests go out through the transaction layer, and which mailboxes a peer watches
(its sip.conf `mailbox=`) and their counts come from the caller. It knows nothing of storage.

Choices, where the RFCs or chan_sip leave room:

* Subscription states are PENDING, ACTIVE and TERMINATED with the transitions in
  `_TRANSITIONS`. A SUBSCRIBE reaching `subscribe` is already authorised (the endpoint
  authenticated the peer, as chan_sip does), so subscriptions start ACTIVE; PENDING exists for
  a future authorisation step and `build_notify` renders it.
* Ending a subscription, whether the subscriber sent Expires: 0 or let it run out, gives a final
  NOTIFY with `Subscription-State: terminated;reason=timeout`. RFC 6665 4.2.1.4 only says an
  unsubscribe triggers a final NOTIFY; of the reasons of 4.1.3 "timeout" (the subscription was
  not refreshed: Expires: 0 sets its remaining time to zero) is the only one that fits: the
  others tell the subscriber to come back at once (deactivated), later (probation, giveup) or
  never (rejected, noresource). chan_sip and PJSIP send "timeout" in both cases too.
  `terminate` takes an explicit reason for the other cases (mailbox removed: noresource).
* A fetch (a new SUBSCRIBE with Expires: 0) is answered 200 and gets one terminated NOTIFY;
  nothing is stored.
* A peer that subscribes again from the same address with a new dialog (a phone that
  rebooted) replaces its older subscriptions silently; chan_sip keeps one per peer.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

from sipmessage import URI, Address, Request, Response, Via

from .messages import SERVER_NAME, cseq_of, make_response, new_tag

Addr = tuple[str, int]

EVENT_PACKAGE = "message-summary"
CONTENT_TYPE = "application/simple-message-summary"
DEFAULT_VMEXTEN = "asterisk"  # chan_sip's DEFAULT_VMEXTEN
STANDARD_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}
# chan_sip's first outgoing CSeq (INITIAL_CSEQ 101, incremented before the first request).
FIRST_UNSOLICITED_CSEQ = 102
# Subscription-State of an out-of-dialog NOTIFY: what res_pjsip_mwi sends for a count change.
UNSOLICITED_STATE = "active"

_PHRASES = {
    404: "Not Found (no mailbox)",
    406: "Not Acceptable",
    423: "Interval Too Brief",
    481: "Call/Transaction Does Not Exist",
    489: "Bad Event",
    500: "Server Internal Error",
}


def _host_reference(host: str) -> str:
    """An IPv6 address as the bracketed form a URI or Via needs."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def message_summary(
    new: int,
    old: int,
    *,
    vmexten: str = DEFAULT_VMEXTEN,
    domain: str,
    port: int | None = None,
    transport: str = "udp",
    buggymwi: bool = False,
) -> bytes:
    """The application/simple-message-summary body, byte for byte as chan_sip builds it.

    `new` is INBOX + Urgent and `old` the Old folder (app_voicemail's counts); the urgent
    counts in parentheses are always 0/0, and `buggymwi` (Cisco) leaves them out. `domain` is
    the peer's fromdomain or our address. `port` is added only when it is not the standard
    port of the transport (5061 for TLS, 5060 otherwise), as chan_sip's sip_standard_port()
    decides; None means standard. `;transport=` is added for anything but UDP.
    """
    if new < 0 or old < 0:
        raise ValueError("message counts cannot be negative")
    transport = transport.lower()
    if transport not in STANDARD_PORTS:
        raise ValueError(f"unknown transport {transport!r}")
    account = f"sip:{vmexten}@{_host_reference(domain)}"
    if port is not None and port != STANDARD_PORTS[transport]:
        account += f":{port}"
    if transport != "udp":
        account += f";transport={transport}"
    lines = (
        f"Messages-Waiting: {'yes' if new > 0 else 'no'}",
        f"Message-Account: {account}",
        f"Voice-Message: {new}/{old}{'' if buggymwi else ' (0/0)'}",
    )
    return "".join(line + "\r\n" for line in lines).encode("utf-8")


class SubscriptionState(enum.Enum):
    PENDING = "pending"  # accepted, authorisation outstanding (RFC 6665 4.1.2.3)
    ACTIVE = "active"
    TERMINATED = "terminated"  # final NOTIFY due; no longer held by the manager


_TRANSITIONS: dict[SubscriptionState, frozenset[SubscriptionState]] = {
    SubscriptionState.PENDING: frozenset({SubscriptionState.ACTIVE, SubscriptionState.TERMINATED}),
    SubscriptionState.ACTIVE: frozenset({SubscriptionState.TERMINATED}),
    SubscriptionState.TERMINATED: frozenset(),
}


class SubscriptionStateError(RuntimeError):
    """A transition the subscription state machine does not allow."""


@dataclass(eq=False)
class Subscription:
    """One message-summary subscription: its dialog (we are the UAS) and what it watches."""

    call_id: str
    local_tag: str  # our To tag in the 200; our From tag in NOTIFYs
    remote_tag: str  # the subscriber's From tag
    remote_target: URI  # the subscriber's Contact: the Request-URI of our NOTIFYs
    route_set: list[str]  # Record-Route values of the SUBSCRIBE, in order: our Route headers
    source: Addr  # where the SUBSCRIBE came from; NOTIFYs go back there (NAT)
    transport: str  # "udp", "tcp" or "tls"
    peer_name: str
    mailboxes: list[tuple[str, str]]  # (mailbox, context) pairs whose counts are summed
    expires_at: float
    local_uri: str  # the SUBSCRIBE's To header (no tag): our From
    remote_uri: str  # the SUBSCRIBE's From header (with its tag): the NOTIFY's To
    local_user: str | None = None  # user part of the SUBSCRIBE's Request-URI, for Contact
    event_id: str | None = None  # Event id parameter, echoed in NOTIFYs
    remote_cseq: int = 0
    local_cseq: int = 0  # CSeq of the last NOTIFY we built
    state: SubscriptionState = SubscriptionState.ACTIVE
    reason: str | None = None  # the terminated reason
    last_counts: tuple[int, int] | None = None  # (new, old) last sent; the caller keeps it

    @property
    def dialog_key(self) -> tuple[str, str, str]:
        return (self.call_id, self.local_tag, self.remote_tag)

    def expires_in(self, now: float) -> int:
        """Whole seconds left, rounded up, for `Subscription-State: ...;expires=`."""
        return max(0, math.ceil(self.expires_at - now))

    def move_to(self, state: SubscriptionState, reason: str | None = None) -> None:
        if state not in _TRANSITIONS[self.state]:
            raise SubscriptionStateError(f"{self.state.value} -> {state.value}")
        self.state = state
        if state == SubscriptionState.TERMINATED:
            self.reason = reason or "timeout"


@dataclass
class SubscribeOutcome:
    """The answer to a SUBSCRIBE and the subscription now due an immediate NOTIFY (if any)."""

    code: int
    phrase: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    to_tag: str | None = None  # To tag to add (out-of-dialog requests only)
    subscription: Subscription | None = None

    def response(self, request: Request, *, contact: str | None = None) -> Response:
        """The SIP response; `contact` (our Contact header value) is added to a 2xx."""
        headers = list(self.headers)
        if contact is not None and 200 <= self.code < 300:
            headers.append(("Contact", contact))
        return make_response(request, self.code, self.phrase, to_tag=self.to_tag, headers=headers)


def header_tag(value: str) -> str | None:
    """The `tag` parameter of a From or To header, from the parsed address.

    Parsed rather than searched for: `To: "tag=" <sip:1000@host>` has no tag (its display
    name only says so), and taking it for an in-dialog request would skip authentication.
    A value that is not a name-addr / addr-spec is a ValueError.
    """
    address = Address.parse(value)
    for name, parameter in address.parameters.items():
        if name.lower() == "tag":
            return parameter or None
    return None


def _event(value: str | None) -> tuple[str, str | None]:
    """(event type, id parameter) of an Event header; ("", None) when absent."""
    if value is None:
        return "", None
    kind, *parameters = value.split(";")
    event_id = None
    for parameter in parameters:
        name, _, param_value = parameter.partition("=")
        if name.strip().lower() == "id":
            event_id = param_value.strip()
    return kind.strip().lower(), event_id


def _accepts_summary(request: Request) -> bool:
    """Does the Accept header (if any) allow application/simple-message-summary?

    Each media range is parsed (type/subtype and its parameters), so `q=0`, which RFC 3261
    20.1 / RFC 9110 12.4.2 define as "not acceptable", refuses it.
    """
    values = request.headers.getlist("Accept")
    if not values:
        return True
    for value in values:
        for item in value.split(","):
            media, *parameters = item.split(";")
            if media.strip().lower() not in (CONTENT_TYPE, "application/*", "*/*"):
                continue
            if not any(_is_q_zero(parameter) for parameter in parameters):
                return True
    return False


def _is_q_zero(parameter: str) -> bool:
    name, _, value = parameter.partition("=")
    if name.strip().lower() != "q":
        return False
    try:
        return float(value.strip()) == 0
    except ValueError:
        return False


class _Refused(Exception):
    """Raised inside `subscribe` to answer with an error response."""

    def __init__(
        self, code: int, phrase: str | None = None, headers: list[tuple[str, str]] | None = None
    ) -> None:
        super().__init__(code)
        self.code = code
        self.phrase = phrase
        self.headers: list[tuple[str, str]] = headers or []


class SubscriptionManager:
    """All message-summary subscriptions of one endpoint, as a sans-I/O notifier.

    The adapter passes each SUBSCRIBE to `subscribe`, sends `outcome.response(...)`, then a
    NOTIFY built with `build_notify` for `outcome.subscription` (if set). It arms a timer at
    `next_expiry()` and calls `expire(now)`, sending each returned subscription its final
    NOTIFY. When a mailbox's counts change it notifies `for_mailbox(mailbox, context)`.
    """

    def __init__(
        self, min_expires: int = 60, max_expires: int = 3600, default_expires: int = 3600
    ) -> None:
        if not 0 < min_expires <= default_expires <= max_expires:
            raise ValueError("need 0 < min_expires <= default_expires <= max_expires")
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.default_expires = default_expires  # RFC 3842 5: one hour
        self._subscriptions: dict[tuple[str, str, str], Subscription] = {}
        # The same subscriptions by peer name: a REGISTER and the poll ask per peer, and a
        # scan of all of them per peer is quadratic at 10 000 phones.
        self._by_peer: dict[str, dict[tuple[str, str, str], Subscription]] = {}

    def __len__(self) -> int:
        return len(self._subscriptions)

    # -- SUBSCRIBE ---------------------------------------------------------------------

    def subscribe(
        self,
        request: Request,
        source: Addr,
        transport: str,
        peer_name: str,
        mailboxes: list[tuple[str, str]],
        now: float,
    ) -> SubscribeOutcome:
        """Answer a SUBSCRIBE from an authenticated peer watching `mailboxes`."""
        if request.method != "SUBSCRIBE":
            raise ValueError(f"not a SUBSCRIBE: {request.method}")
        try:
            in_dialog = header_tag(request.headers["To"]) is not None
            header_tag(request.headers["From"])
        except ValueError:
            return SubscribeOutcome(400, "Bad Request (bad From or To)", to_tag=new_tag())
        try:
            if in_dialog:
                return self._refresh(request, source, transport, now)
            return self._create(request, source, transport, peer_name, mailboxes, now)
        except _Refused as refusal:
            return SubscribeOutcome(
                refusal.code,
                refusal.phrase or _PHRASES.get(refusal.code),
                refusal.headers,
                to_tag=None if in_dialog else new_tag(),
            )

    def _check_common(self, request: Request) -> tuple[int | None, str | None]:
        """Event and Expires checks shared by new and in-dialog SUBSCRIBEs."""
        kind, event_id = _event(request.headers.get("Event"))
        if kind != EVENT_PACKAGE:
            raise _Refused(489, headers=[("Allow-Events", EVENT_PACKAGE)])
        text = request.headers.get("Expires")
        if text is None:
            return None, event_id
        text = text.strip()
        if not (text.isascii() and text.isdigit()):
            raise _Refused(400, "Bad Request (bad Expires)")
        return int(text), event_id

    def _granted(self, requested: int | None) -> int:
        """The subscription duration to grant (0 ends it), or 423."""
        if requested is None:
            return self.default_expires
        if requested == 0:
            return 0
        if requested < self.min_expires:
            raise _Refused(423, headers=[("Min-Expires", str(self.min_expires))])
        return min(requested, self.max_expires)

    def _create(
        self,
        request: Request,
        source: Addr,
        transport: str,
        peer_name: str,
        mailboxes: list[tuple[str, str]],
        now: float,
    ) -> SubscribeOutcome:
        requested, event_id = self._check_common(request)
        if not _accepts_summary(request):
            raise _Refused(406)
        if not mailboxes:
            raise _Refused(404)  # chan_sip: "404 Not found (no mailbox)"
        target = _contact_uri(request)
        route_set = _record_route(request)
        expires = self._granted(requested)
        local_tag = new_tag()
        subscription = Subscription(
            call_id=request.headers["Call-ID"],
            local_tag=local_tag,
            remote_tag=header_tag(request.headers["From"]) or "",
            remote_target=target,
            route_set=route_set,
            source=source,
            transport=transport.lower(),
            peer_name=peer_name,
            mailboxes=list(mailboxes),
            expires_at=now + expires,
            local_uri=request.headers["To"],
            remote_uri=request.headers["From"],
            local_user=request.uri.user,
            event_id=event_id,
            remote_cseq=cseq_of(request).sequence,
        )
        if expires == 0:
            subscription.move_to(SubscriptionState.TERMINATED, "timeout")  # a fetch
        else:
            for old in self.of_peer(peer_name):
                if old.source == source:
                    self._remove(old)
            self._subscriptions[subscription.dialog_key] = subscription
            self._by_peer.setdefault(peer_name, {})[subscription.dialog_key] = subscription
        return SubscribeOutcome(
            200,
            headers=[("Expires", str(expires))],
            to_tag=local_tag,
            subscription=subscription,
        )

    def _refresh(
        self, request: Request, source: Addr, transport: str, now: float
    ) -> SubscribeOutcome:
        requested, event_id = self._check_common(request)
        subscription = self.dialog_of(request)
        if subscription is None or subscription.event_id != event_id:
            raise _Refused(481)
        if not _accepts_summary(request):
            raise _Refused(406)
        sequence = cseq_of(request).sequence
        if sequence < subscription.remote_cseq:
            raise _Refused(500, "Server Internal Error (CSeq out of order)")  # RFC 3261 12.2.2
        target = _contact_uri(request) if request.headers.get("Contact") else None
        expires = self._granted(requested)
        subscription.remote_cseq = sequence
        if target is not None:
            subscription.remote_target = target  # SUBSCRIBE is a target refresh request
        subscription.source = source
        subscription.transport = transport.lower()
        if expires == 0:
            self.terminate(subscription, "timeout")
        else:
            subscription.expires_at = now + expires
        return SubscribeOutcome(200, headers=[("Expires", str(expires))], subscription=subscription)

    def dialog_of(self, request: Request) -> Subscription | None:
        """The live subscription an in-dialog SUBSCRIBE belongs to, or None.

        In dialog means all three of RFC 3261 12's dialog identifiers match one of our
        subscriptions: the Call-ID, the To tag (ours) and the From tag (the subscriber's),
        each taken from the parsed header. Anything else is not in dialog: with a To tag it
        gets 481 (RFC 3261 12.2.2, as chan_sip answers a To-tagged request it has no dialog
        for), without one it is a new subscription and is authenticated.
        """
        try:
            local_tag = header_tag(request.headers["To"])
            remote_tag = header_tag(request.headers["From"]) or ""
        except ValueError:
            return None
        if local_tag is None:
            return None
        key = (request.headers["Call-ID"], local_tag, remote_tag)
        return self._subscriptions.get(key)

    # -- lifetime ----------------------------------------------------------------------

    def terminate(self, subscription: Subscription, reason: str) -> Subscription:
        """End a subscription (e.g. "noresource" when its mailbox is gone); send the result
        its final NOTIFY."""
        subscription.move_to(SubscriptionState.TERMINATED, reason)
        self._remove(subscription)
        return subscription

    def expire(self, now: float) -> list[Subscription]:
        """End the subscriptions not refreshed in time; each is due a final NOTIFY."""
        due = [s for s in self._subscriptions.values() if s.expires_at <= now]
        return [self.terminate(s, "timeout") for s in due]

    def next_expiry(self) -> float | None:
        """When `expire` has work next (the adapter's timer), or None."""
        return min((s.expires_at for s in self._subscriptions.values()), default=None)

    def notify_result(self, subscription: Subscription, code: int | None) -> bool:
        """Take note of the final response to a NOTIFY (None: transaction timeout).

        RFC 6665 4.2.2: a 481 or a timeout means the subscriber is gone, and the subscription
        is dropped without a further NOTIFY (408 is the same thing said by a proxy). Returns
        whether it was dropped.
        """
        if code is None or code in (408, 481):
            if subscription.state != SubscriptionState.TERMINATED:
                subscription.move_to(SubscriptionState.TERMINATED, "timeout")
            self._remove(subscription)
            return True
        return False

    # -- lookups -----------------------------------------------------------------------

    def for_mailbox(self, mailbox: str, context: str) -> list[Subscription]:
        """The live subscriptions watching mailbox@context (to notify on a count change)."""
        return [
            s
            for s in self._subscriptions.values()
            if (mailbox, context) in s.mailboxes and s.state != SubscriptionState.TERMINATED
        ]

    def subscriptions(self) -> list[Subscription]:
        return list(self._subscriptions.values())

    def of_peer(self, peer_name: str) -> list[Subscription]:
        """The subscriptions a peer holds (chan_sip's mwipvt: it then gets no unsolicited
        NOTIFY)."""
        return list(self._by_peer.get(peer_name, {}).values())

    def _remove(self, subscription: Subscription) -> None:
        self._subscriptions.pop(subscription.dialog_key, None)
        held = self._by_peer.get(subscription.peer_name)
        if held is not None:
            held.pop(subscription.dialog_key, None)
            if not held:
                del self._by_peer[subscription.peer_name]


def _contact_uri(request: Request) -> URI:
    value = request.headers.get("Contact")
    if not value:
        raise _Refused(400, "Bad Request (missing Contact)")
    try:
        return Address.parse_many(value)[0].uri
    except (ValueError, IndexError):
        raise _Refused(400, "Bad Request (bad Contact)") from None


def _record_route(request: Request) -> list[str]:
    values = request.headers.getlist("Record-Route")
    for value in values:
        try:
            Address.parse_many(value)
        except ValueError:
            raise _Refused(400, "Bad Request (bad Record-Route)") from None
    return list(values)


def _via(transport: str, local_host: str, local_port: int, branch: str) -> str:
    sent_by = Via(transport.upper(), _host_reference(local_host), local_port)
    return f"{sent_by};branch={branch};rport"


def _contact(user: str | None, local_host: str, local_port: int, transport: str) -> str:
    userinfo = f"{user}@" if user else ""
    suffix = "" if transport == "udp" else f";transport={transport}"
    return f"<sip:{userinfo}{_host_reference(local_host)}:{local_port}{suffix}>"


def build_notify(
    subscription: Subscription,
    body: bytes,
    *,
    local_host: str,
    local_port: int,
    branch: str,
    now: float,
) -> Request:
    """The next in-dialog NOTIFY of a subscription (its CSeq is taken here).

    Send it to `subscription.source` through the transaction layer and pass the outcome to
    `SubscriptionManager.notify_result`. Run `expire(now)` first: an ACTIVE subscription past
    its time would be announced with expires=0.
    """
    subscription.local_cseq += 1
    state = subscription.state
    if state == SubscriptionState.TERMINATED:
        subscription_state = f"terminated;reason={subscription.reason or 'timeout'}"
    else:
        subscription_state = f"{state.value};expires={subscription.expires_in(now)}"
    event = EVENT_PACKAGE
    if subscription.event_id is not None:
        event += f";id={subscription.event_id}"
    request = Request("NOTIFY", subscription.remote_target, body)
    headers = request.headers
    headers.add("Via", _via(subscription.transport, local_host, local_port, branch))
    for route in subscription.route_set:
        headers.add("Route", route)
    headers.add("Max-Forwards", "70")
    headers.add("From", f"{subscription.local_uri};tag={subscription.local_tag}")
    headers.add("To", subscription.remote_uri)
    headers.add("Call-ID", subscription.call_id)
    headers.add("CSeq", f"{subscription.local_cseq} NOTIFY")
    headers.add(
        "Contact",
        _contact(subscription.local_user, local_host, local_port, subscription.transport),
    )
    headers.add("Event", event)
    headers.add("Subscription-State", subscription_state)
    headers.add("Content-Type", CONTENT_TYPE)
    headers.add("User-Agent", SERVER_NAME)
    headers.add("Content-Length", str(len(body)))
    return request


def build_unsolicited_notify(
    target_uri: URI | str,
    body: bytes,
    *,
    local_host: str,
    local_port: int,
    branch: str,
    from_user: str,
    call_id: str,
    tag: str,
    transport: str = "udp",
    cseq: int = FIRST_UNSOLICITED_CSEQ,
) -> Request:
    """chan_sip's out-of-dialog MWI NOTIFY to a registered peer's contact.

    As sip_send_mwi_to_peer() does for a peer without an MWI subscription: a fresh Call-ID and
    From tag, a To without tag and `Event: message-summary`. Unlike chan_sip, which sends no
    Subscription-State here, we send `Subscription-State: active` as res_pjsip_mwi does on its
    unsolicited NOTIFYs (the state of a change notification, no expires: there is no
    subscription to run out): RFC 6665 8.2.3 makes the header mandatory in every NOTIFY and
    strict phones (baresip: "400 Bad Subscription-State Header") refuse one without it.
    `from_user` is sip.conf's `mwi_from`
    (chan_sip falls back to the caller ID, "asterisk" by default). Send it to the peer's
    registered address; the Request-URI stays its Contact even behind NAT.
    """
    target = URI.parse(target_uri) if isinstance(target_uri, str) else target_uri
    transport = transport.lower()
    host = _host_reference(local_host)
    domain = host if local_port == STANDARD_PORTS.get(transport) else f"{host}:{local_port}"
    request = Request("NOTIFY", target, body)
    headers = request.headers
    headers.add("Via", _via(transport, local_host, local_port, branch))
    headers.add("Max-Forwards", "70")
    headers.add("From", f"<sip:{from_user}@{domain}>;tag={tag}")
    headers.add("To", f"<{target}>")
    headers.add("Call-ID", call_id)
    headers.add("CSeq", f"{cseq} NOTIFY")
    headers.add("Contact", _contact(from_user, local_host, local_port, transport))
    headers.add("Event", EVENT_PACKAGE)
    headers.add("Subscription-State", UNSOLICITED_STATE)
    headers.add("Content-Type", CONTENT_TYPE)
    headers.add("User-Agent", SERVER_NAME)
    headers.add("Content-Length", str(len(body)))
    return request
