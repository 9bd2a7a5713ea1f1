"""RFC 3261 transactions as a sans-I/O state machine.

`TransactionLayer` takes datagrams and the current time and gives back datagrams to send,
events for the user agent and the next timer deadline, in the manner of aioquic's
`QuicConnection`. Nothing here touches a socket or a clock, so every retransmission
timer is tested with a fake time.

Server transactions absorb retransmitted requests (resending the last response), an INVITE
answered with 2xx stays "accepted" (RFC 6026) and retransmits its 2xx until the ACK arrives,
and non-2xx INVITE answers are retransmitted until their ACK (timers G/H/I). Client
transactions are non-INVITE only (BYE, NOTIFY, OPTIONS): timers E/F/K.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from sipmessage import Request, Response

from .admission import LogLimiter
from .limits import Verdict
from .messages import (
    MessageError,
    cseq_of,
    make_response,
    new_tag,
    parse_message,
    release_parser_tracebacks,
    response_address,
    serialize,
    stamp_received,
    tag_of,
    top_via,
)

log = logging.getLogger(__name__)

T1 = 0.5
T2 = 4.0
T4 = 5.0

# Open server transactions one layer keeps at most. Each lives up to 64*T1 (32 s) after its
# final answer, so this allows some 300 new requests a second; past it new requests get a
# stateless 503 and memory stays bounded whatever a flood sends.
DEFAULT_MAX_TRANSACTIONS = 10000
OVERLOAD_RETRY_AFTER = 10

Addr = tuple[str, int]
# Asked about each new request (not a retransmission, ACK or CANCEL) before a transaction
# is made for it: ALLOW, a 503 with Retry-After (LIMITED, REFUSE: the int) or DROP.
Screen = Callable[[Request, Addr, float], tuple[Verdict, int]]


class ServerState(enum.Enum):
    TRYING = "trying"  # non-INVITE, no response yet
    PROCEEDING = "proceeding"  # provisional sent (INVITE from the start)
    ACCEPTED = "accepted"  # INVITE answered 2xx, retransmitting until ACK (RFC 6026)
    COMPLETED = "completed"  # final sent; absorbing retransmissions
    CONFIRMED = "confirmed"  # INVITE non-2xx final acknowledged
    TERMINATED = "terminated"


class ClientState(enum.Enum):
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    TERMINATED = "terminated"


@dataclass(eq=False)
class ServerTransaction:
    key: tuple[str, str, str]
    request: Request
    source: Addr
    reply_to: Addr
    state: ServerState
    last_response: bytes | None = None
    final_code: int = 0
    retransmit_interval: float = T1
    dialog_key: tuple[str, int, str] | None = None  # (Call-ID, CSeq, From tag) for 2xx ACK matching
    to_tag: str | None = None  # the To tag of our responses; a CANCEL's 200 and the 487 reuse it

    @property
    def is_invite(self) -> bool:
        return self.request.method == "INVITE"


@dataclass(eq=False)
class ClientTransaction:
    key: tuple[str, str]
    request: Request
    destination: Addr
    data: bytes
    state: ClientState = ClientState.TRYING
    retransmit_interval: float = T1
    response: Response | None = None


# Events handed to the user agent.
@dataclass
class RequestReceived:
    """A new request (not a retransmission) that needs an answer through `respond`."""

    request: Request
    transaction: ServerTransaction


@dataclass
class CancelReceived:
    """A CANCEL matched an INVITE still in progress.

    The layer has already answered the CANCEL 200 and the INVITE 487 (RFC 3261 9.2), both
    with the To tag of the INVITE's earlier responses; the call only has to stop.
    """

    invite: ServerTransaction


@dataclass
class AckReceived:
    """The ACK for a 2xx: it confirms the dialog."""

    request: Request
    invite: ServerTransaction


@dataclass
class AckTimeout:
    """A 2xx to an INVITE was never acknowledged (timer L/H): the call must end."""

    invite: ServerTransaction


@dataclass
class ResponseReceived:
    response: Response
    transaction: ClientTransaction


@dataclass
class ClientTimeout:
    """A request of ours got no final response within 64*T1 (timer F)."""

    transaction: ClientTransaction


Event = (
    RequestReceived | CancelReceived | AckReceived | AckTimeout | ResponseReceived | ClientTimeout
)


@dataclass(order=True)
class _Timer:
    when: float
    seq: int
    kind: str = field(compare=False)
    target: object = field(compare=False)
    generation: int = field(compare=False, default=0)


class TransactionLayer:
    """All transactions of one transport.

    `reliable=True` is for stream transports (TCP, TLS): nothing is retransmitted (timers
    E and G off), the absorbing timers I, J and K are zero (RFC 3261 17), and responses go
    back to the connection the request came from (18.2.2), named by its remote address.
    """

    def __init__(
        self, reliable: bool = False, max_transactions: int = DEFAULT_MAX_TRANSACTIONS
    ) -> None:
        self.reliable = reliable
        self.max_transactions = max_transactions
        self.overload_count = 0  # requests refused with 503 because the table was full
        self._overload_log = LogLimiter()
        self._server: dict[tuple[str, str, str], ServerTransaction] = {}
        self._accepted: dict[tuple[str, int, str], ServerTransaction] = {}
        self._client: dict[tuple[str, str], ClientTransaction] = {}
        self._outgoing: list[tuple[bytes, Addr]] = []
        self._events: deque[Event] = deque()
        self._timers: list[_Timer] = []
        self._seq = itertools.count()
        self.malformed_count = 0
        self.abandoned_count = 0  # non-INVITE requests the user agent never answered
        self.screen: Screen | None = None

    # -- input -------------------------------------------------------------------------

    def receive_datagram(self, data: bytes, source: Addr, now: float) -> None:
        """Feed one datagram. Malformed input is answered 400 where possible, else dropped."""
        if not data.strip(b"\r\n"):
            return  # keep-alive (RFC 5626 CRLF)
        try:
            self._receive(data, source, now)
        finally:
            release_parser_tracebacks()

    def _receive(self, data: bytes, source: Addr, now: float) -> None:
        try:
            message = parse_message(data)
        except MessageError as exc:
            self.malformed_count += 1
            log.info("dropping malformed message from %s:%s: %s", *source, exc)
            if isinstance(exc.message, Request):
                self._answer_malformed(exc.message, source, str(exc))
            return
        if isinstance(message, Request):
            self._receive_request(message, source, now)
        else:
            self._receive_response(message, now)

    def _answer_malformed(self, request: Request, source: Addr, reason: str) -> None:
        """Send 400 to a request we can still route a response for; drop anything else."""
        if request.method == "ACK":
            return  # an ACK is never answered
        try:
            cseq_of(request)  # a response with a CSeq the client cannot read is no answer
            stamp_received(request, source)
            response = make_response(request, 400, f"Bad Request ({reason})"[:120])
            self._outgoing.append((serialize(response), self._reply_address(request, source)))
        except (ValueError, KeyError, IndexError):
            return  # no usable Via, From, To...: nothing routable

    def _receive_request(self, request: Request, source: Addr, now: float) -> None:
        stamp_received(request, source)
        via = top_via(request)
        branch = str(via.parameters.get("branch") or "")
        sent_by = f"{via.host}:{via.port or 5060}"
        if not branch.startswith("z9hG4bK"):
            # RFC 2543 peers: fall back to a key built from the request itself (an ACK or
            # CANCEL carries the INVITE's Call-ID and CSeq number, so they still match).
            branch = "2543:" + request.headers["Call-ID"] + ":" + str(cseq_of(request).sequence)
        if request.method == "ACK":
            self._receive_ack(request, branch, sent_by, now)
            return
        key = (branch, sent_by, request.method)
        existing = self._server.get(key)
        if existing is not None:
            self._retransmitted_request(existing)
            return
        if request.method == "CANCEL":
            self._receive_cancel(request, source, branch, sent_by, now)
            return
        if self.screen is not None:
            verdict, retry_after = self.screen(request, source, now)
            if verdict is Verdict.DROP:
                return
            if verdict is not Verdict.ALLOW:
                self._refuse_stateless(request, source, retry_after)
                return
        if len(self._server) >= self.max_transactions:
            self._refuse_overloaded(request, source, now)
            return
        is_invite = request.method == "INVITE"
        tx = ServerTransaction(
            key=key,
            request=request,
            source=source,
            reply_to=self._reply_address(request, source),
            state=ServerState.PROCEEDING if is_invite else ServerState.TRYING,
        )
        self._server[key] = tx
        if is_invite:
            # Answer at once so the caller stops retransmitting while the application runs.
            self.respond(tx, make_response(request, 100), now)
        else:
            # A request the user agent never answers (a bug, a lost task) must not keep its
            # slot for good: its client gave up after timer F (64*T1), so do we.
            self._schedule(now + 64 * T1, "Z", tx)
        self._events.append(RequestReceived(request, tx))

    def _refuse_overloaded(self, request: Request, source: Addr, now: float) -> None:
        """Stateless 503 (RFC 3261 21.5.4): nothing is kept for the request."""
        self.overload_count += 1
        if self._overload_log.should_log(now):
            log.warning(
                "%d server transactions open (the limit): refusing new requests with 503"
                " (%d more since the last such line)",
                len(self._server),
                self._overload_log.take_suppressed(),
            )
        self._refuse_stateless(request, source, OVERLOAD_RETRY_AFTER)

    def _refuse_stateless(self, request: Request, source: Addr, retry_after: int) -> None:
        response = make_response(
            request, 503, to_tag=new_tag(), headers=[("Retry-After", str(retry_after))]
        )
        self._outgoing.append((serialize(response), self._reply_address(request, source)))

    def _retransmitted_request(self, tx: ServerTransaction) -> None:
        if tx.last_response is not None and tx.state in (
            ServerState.PROCEEDING,
            ServerState.ACCEPTED,
            ServerState.COMPLETED,
        ):
            self._outgoing.append((tx.last_response, tx.reply_to))

    def _receive_cancel(
        self, request: Request, source: Addr, branch: str, sent_by: str, now: float
    ) -> None:
        invite = self._server.get((branch, sent_by, "INVITE"))
        reply_to = self._reply_address(request, source)
        if invite is None:
            response = make_response(request, 481)
            self._outgoing.append((serialize(response), reply_to))
            return
        # The CANCEL gets its own transaction so that its retransmissions are absorbed.
        cancel_tx = ServerTransaction(
            key=(branch, sent_by, "CANCEL"),
            request=request,
            source=source,
            reply_to=reply_to,
            state=ServerState.TRYING,
        )
        self._server[cancel_tx.key] = cancel_tx
        # RFC 3261 9.2: the 200 to the CANCEL carries the To tag of the INVITE's responses.
        if invite.to_tag is None:
            invite.to_tag = new_tag()
        self._send_final_non_invite(cancel_tx, make_response(request, 200, to_tag=invite.to_tag))
        self._schedule(now + 64 * T1, "J", cancel_tx)
        if invite.state == ServerState.PROCEEDING:
            # Answered here rather than by the user agent, so the To tags agree and a call
            # still being set up cannot answer 200 after the caller gave up.
            self.respond(invite, make_response(invite.request, 487, to_tag=invite.to_tag), now)
            self._events.append(CancelReceived(invite))

    def _receive_ack(self, request: Request, branch: str, sent_by: str, now: float) -> None:
        invite = self._server.get((branch, sent_by, "INVITE"))
        if invite is not None and invite.state == ServerState.COMPLETED:
            invite.state = ServerState.CONFIRMED
            self._schedule(
                now + (0 if self.reliable else T4), "I", invite
            )  # timer I: absorb further ACKs, then forget
            return
        if invite is not None and invite.state == ServerState.CONFIRMED:
            return  # ACK retransmission
        # The ACK for a 2xx is its own transaction; match it to the dialog (some UAs reuse
        # the INVITE's branch for it, so a branch match alone does not decide).
        dialog_key = (
            request.headers["Call-ID"],
            cseq_of(request).sequence,
            tag_of(request.headers["From"]) or "",
        )
        accepted = self._accepted.pop(dialog_key, None)
        if accepted is None:
            return  # stray or retransmitted 2xx ACK
        self._events.append(AckReceived(request, accepted))

    def _receive_response(self, response: Response, now: float) -> None:
        via = top_via(response)
        key = (str(via.parameters.get("branch") or ""), cseq_of(response).method)
        tx = self._client.get(key)
        if tx is None or tx.state in (ClientState.COMPLETED, ClientState.TERMINATED):
            return
        if response.code < 200:
            tx.state = ClientState.PROCEEDING
            return
        tx.state = ClientState.COMPLETED
        tx.response = response
        self._schedule(now + (0 if self.reliable else T4), "K", tx)
        self._events.append(ResponseReceived(response, tx))

    # -- commands from the user agent --------------------------------------------------

    def respond(self, tx: ServerTransaction, response: Response, now: float) -> None:
        """Send a response within a server transaction and move it along its states."""
        if tx.state in (ServerState.COMPLETED, ServerState.CONFIRMED, ServerState.TERMINATED):
            log.debug("late response %s on finished transaction dropped", response.code)
            return
        if tx.state == ServerState.ACCEPTED:
            return
        if not tx.is_invite:
            if response.code < 200:
                tx.state = ServerState.PROCEEDING
                tx.last_response = serialize(response)
                self._outgoing.append((tx.last_response, tx.reply_to))
            else:
                self._send_final_non_invite(tx, response)
                self._schedule(now + (0 if self.reliable else 64 * T1), "J", tx)
            return
        if tx.to_tag is None:
            tx.to_tag = tag_of(response.headers["To"])
        data = serialize(response)
        tx.last_response = data
        self._outgoing.append((data, tx.reply_to))
        if response.code < 200:
            return
        tx.final_code = response.code
        tx.retransmit_interval = T1
        if response.code < 300:
            tx.state = ServerState.ACCEPTED
            tx.dialog_key = (
                tx.request.headers["Call-ID"],
                cseq_of(tx.request).sequence,
                tag_of(tx.request.headers["From"]) or "",
            )
            self._accepted[tx.dialog_key] = tx
        else:
            tx.state = ServerState.COMPLETED
        if not self.reliable:
            self._schedule(now + T1, "G", tx)  # retransmit 2xx or non-2xx final
        self._schedule(now + 64 * T1, "H", tx)  # give up waiting for the ACK

    def _send_final_non_invite(self, tx: ServerTransaction, response: Response) -> None:
        tx.state = ServerState.COMPLETED
        tx.final_code = response.code
        tx.last_response = serialize(response)
        self._outgoing.append((tx.last_response, tx.reply_to))

    def send_request(self, request: Request, destination: Addr, now: float) -> ClientTransaction:
        """Start a non-INVITE client transaction (the Via branch must be set by the caller)."""
        via = top_via(request)
        key = (str(via.parameters.get("branch") or ""), request.method)
        data = serialize(request)
        tx = ClientTransaction(key=key, request=request, destination=destination, data=data)
        self._client[key] = tx
        self._outgoing.append((data, destination))
        if not self.reliable:
            self._schedule(now + T1, "E", tx)
        self._schedule(now + 64 * T1, "F", tx)
        return tx

    def send_raw(self, data: bytes, destination: Addr) -> None:
        """Send outside any transaction (an ACK for a 2xx we received, for instance)."""
        self._outgoing.append((data, destination))

    def _reply_address(self, request: Request, source: Addr) -> Addr:
        return source if self.reliable else response_address(request, source)

    # -- output ------------------------------------------------------------------------

    def datagrams_to_send(self) -> list[tuple[bytes, Addr]]:
        out, self._outgoing = self._outgoing, []
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        return self._timers[0].when if self._timers else None

    def handle_timer(self, now: float) -> None:
        while self._timers and self._timers[0].when <= now:
            timer = heapq.heappop(self._timers)
            self._fire(timer, now)

    @property
    def transaction_count(self) -> int:
        return len(self._server) + len(self._client)

    # -- timers ------------------------------------------------------------------------

    def _schedule(self, when: float, kind: str, target: object) -> None:
        heapq.heappush(self._timers, _Timer(when, next(self._seq), kind, target))

    def _fire(self, timer: _Timer, now: float) -> None:
        target = timer.target
        if isinstance(target, ServerTransaction):
            self._fire_server(timer.kind, target, now)
        elif isinstance(target, ClientTransaction):
            self._fire_client(timer.kind, target, now)

    def _fire_server(self, kind: str, tx: ServerTransaction, now: float) -> None:
        if tx.state == ServerState.TERMINATED:
            return
        acknowledged = tx.state == ServerState.ACCEPTED and tx.dialog_key not in self._accepted
        if (
            kind == "G"
            and not acknowledged
            and tx.state in (ServerState.ACCEPTED, ServerState.COMPLETED)
        ):
            assert tx.last_response is not None
            self._outgoing.append((tx.last_response, tx.reply_to))
            tx.retransmit_interval = min(tx.retransmit_interval * 2, T2)
            self._schedule(now + tx.retransmit_interval, "G", tx)
        elif kind == "H":
            if tx.state == ServerState.ACCEPTED and tx.dialog_key in self._accepted:
                del self._accepted[tx.dialog_key]
                self._events.append(AckTimeout(tx))
            elif tx.state == ServerState.COMPLETED:
                self._events.append(AckTimeout(tx))
            self._terminate_server(tx)
        elif kind in ("I", "J"):
            self._terminate_server(tx)
        elif kind == "Z" and tx.state in (ServerState.TRYING, ServerState.PROCEEDING):
            self.abandoned_count += 1
            log.info("%s from %s:%s never answered: forgotten", tx.request.method, *tx.source)
            self._terminate_server(tx)

    def _terminate_server(self, tx: ServerTransaction) -> None:
        tx.state = ServerState.TERMINATED
        self._server.pop(tx.key, None)
        if tx.dialog_key is not None:
            self._accepted.pop(tx.dialog_key, None)

    def _fire_client(self, kind: str, tx: ClientTransaction, now: float) -> None:
        if tx.state == ClientState.TERMINATED:
            return
        if kind == "E" and tx.state in (ClientState.TRYING, ClientState.PROCEEDING):
            self._outgoing.append((tx.data, tx.destination))
            if tx.state == ClientState.TRYING:
                tx.retransmit_interval = min(tx.retransmit_interval * 2, T2)
            else:
                tx.retransmit_interval = T2
            self._schedule(now + tx.retransmit_interval, "E", tx)
        elif kind == "F" and tx.state in (ClientState.TRYING, ClientState.PROCEEDING):
            tx.state = ClientState.TERMINATED
            self._client.pop(tx.key, None)
            self._events.append(ClientTimeout(tx))
        elif kind == "K":
            tx.state = ClientState.TERMINATED
            self._client.pop(tx.key, None)
