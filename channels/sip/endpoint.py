"""The asyncio adapter: a UDP socket, the transaction layer, and calls as `Channel`s.

This is the thin layer of the aioquic pattern: it feeds datagrams and time into
`TransactionLayer`, sends what it returns, arms one loop timer, and turns events into
calls. Each call's application runs as its own task with a `Channel`.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sipmessage import URI, Address, Request, Via

from ..channel import CallerInfo, Channel
from ..media import MediaClock, RtpSession
from ..sdp import NegotiatedAudio, SdpError, build_answer, negotiate, parse_sdp
from .messages import (
    ALLOW,
    SERVER_NAME,
    make_response,
    new_branch,
    new_tag,
    tag_of,
)
from .redirect import redirect_of
from .transactions import (
    AckReceived,
    AckTimeout,
    CancelReceived,
    ClientTimeout,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    TransactionLayer,
)

log = logging.getLogger(__name__)

Addr = tuple[str, int]
CallHandler = Callable[[Channel], Awaitable[None]]
Router = Callable[[CallerInfo], CallHandler | None]

# How long a caller's BYE waits for the application to finish (store the message) before
# we answer it anyway. Below the caller's 32 s transaction timeout.
BYE_ANSWER_DEADLINE = 20.0


class CallState(enum.Enum):
    INCOMING = "incoming"  # INVITE received, 100 sent
    RINGING = "ringing"  # 180 sent
    ANSWERED = "answered"  # 200 sent, waiting for ACK
    CONFIRMED = "confirmed"  # ACK received
    ENDED = "ended"


@dataclass
class EndpointConfig:
    host: str = "127.0.0.1"
    port: int = 5060
    rtp_host: str | None = None
    rtp_ports: tuple[int, int] = (10000, 20000)
    default_context: str = "default"


class SipCall:
    """One incoming INVITE dialog and its channel (the `CallControl` of the channel)."""

    def __init__(
        self,
        endpoint: SipEndpoint,
        invite: ServerTransaction,
        negotiated: NegotiatedAudio,
        media: RtpSession,
        info: CallerInfo,
    ) -> None:
        self.endpoint = endpoint
        self.invite = invite
        self.negotiated = negotiated
        self.media = media
        self.local_tag = new_tag()
        self.state = CallState.INCOMING
        self.request = invite.request
        self.call_id = self.request.headers["Call-ID"]
        self.remote_tag = tag_of(self.request.headers["From"]) or ""
        self.local_cseq = random.randrange(1, 10000)
        self.session_id = random.randrange(1, 2**31)
        self.channel = Channel(info, self, media)
        self.task: asyncio.Task[None] | None = None
        self.pending_bye: ServerTransaction | None = None
        self._answered = asyncio.get_running_loop().create_future()

    @property
    def dialog_key(self) -> tuple[str, str, str]:
        return (self.call_id, self.local_tag, self.remote_tag)

    # -- CallControl --------------------------------------------------------------------

    async def ring(self) -> None:
        if self.state == CallState.INCOMING:
            self.state = CallState.RINGING
            self.endpoint.respond(
                self.invite, make_response(self.request, 180, to_tag=self.local_tag)
            )

    async def answer_call(self) -> None:
        if self.state not in (CallState.INCOMING, CallState.RINGING):
            return
        body = build_answer(
            self.negotiated, self.endpoint.rtp_host, self.media.local_port, self.session_id
        )
        response = make_response(
            self.request,
            200,
            to_tag=self.local_tag,
            body=body,
            content_type="application/sdp",
            headers=[
                ("Contact", f"<sip:{self.channel.info.exten}@{self.endpoint.contact_host}>"),
                ("Allow", ALLOW),
            ],
        )
        self.state = CallState.ANSWERED
        self.endpoint.respond(self.invite, response)
        self.media.start()

    def end_call(self, code: int | None, reason: str) -> None:
        if self.state == CallState.ENDED:
            return
        if self.state in (CallState.INCOMING, CallState.RINGING):
            final = code or 480
            self.endpoint.respond(
                self.invite,
                make_response(
                    self.request,
                    final,
                    to_tag=self.local_tag,
                    headers=[("Reason", f'SIP;cause={final};text="{reason}"')],
                ),
            )
        elif self.pending_bye is None and not self.channel_remote_gone:
            self.endpoint.send_bye(self)
        self.finish()

    # -- lifecycle ----------------------------------------------------------------------

    channel_remote_gone = False

    def remote_ended(self, reason: str) -> None:
        self.channel_remote_gone = True
        self.channel.remote_hangup(reason)

    def finish(self) -> None:
        if self.state != CallState.ENDED:
            self.state = CallState.ENDED
            self.media.close()
            self.endpoint.forget(self)


class SipEndpoint(asyncio.DatagramProtocol):
    """SIP over UDP for a voicemail server: a UAS for calls, plus OPTIONS."""

    def __init__(self, config: EndpointConfig, router: Router) -> None:
        self.config = config
        self.router = router
        self.layer = TransactionLayer()
        self.clock = MediaClock()
        self.transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when: float | None = None
        self.calls: dict[tuple[str, str, str], SipCall] = {}
        self._calls_by_invite: dict[int, SipCall] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.rtp_host = config.rtp_host or config.host
        self.contact_host = f"{config.host}:{config.port}"

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(
            lambda: self, local_addr=(self.config.host, self.config.port)
        )
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        self.config.port = port
        self.contact_host = f"{host}:{port}"

    async def stop(self, grace: float = 5.0) -> None:
        """Hang up every call, give applications `grace` seconds to store, then close."""
        for call in list(self.calls.values()) + list(self._calls_by_invite.values()):
            call.channel.hangup(503, "server shutting down")
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace)
        self._flush()
        await asyncio.sleep(0.05)
        if self._timer is not None:
            self._timer.cancel()
        if self.transport is not None:
            self.transport.close()

    @property
    def active_calls(self) -> int:
        return len(self._calls_by_invite)

    # -- asyncio protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        now = asyncio.get_running_loop().time()
        try:
            self.layer.receive_datagram(data, (addr[0], addr[1]), now)
            self._process_events()
        except Exception:  # noqa: BLE001 - hostile input must never stop the endpoint
            log.exception("error handling datagram from %s:%s", addr[0], addr[1])
        self._flush()

    def error_received(self, exc: Exception) -> None:
        log.debug("SIP socket error: %s", exc)

    # -- plumbing -----------------------------------------------------------------------

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _flush(self) -> None:
        if self.transport is not None:
            for data, addr in self.layer.datagrams_to_send():
                self.transport.sendto(data, addr)
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
            self.layer.handle_timer(self._now())
            self._process_events()
        except Exception:  # noqa: BLE001
            log.exception("error in SIP timer")
        self._flush()

    def respond(self, tx: ServerTransaction, response: object) -> None:
        self.layer.respond(tx, response, self._now())  # type: ignore[arg-type]
        self._flush()

    def forget(self, call: SipCall) -> None:
        self.calls.pop(call.dialog_key, None)
        self._calls_by_invite.pop(id(call.invite), None)

    # -- events -------------------------------------------------------------------------

    def _process_events(self) -> None:
        while (event := self.layer.next_event()) is not None:
            if isinstance(event, RequestReceived):
                self._on_request(event.request, event.transaction)
            elif isinstance(event, CancelReceived):
                call = self._calls_by_invite.get(id(event.invite))
                if call is not None and call.state in (CallState.INCOMING, CallState.RINGING):
                    self.respond(
                        call.invite, make_response(call.request, 487, to_tag=call.local_tag)
                    )
                    call.remote_ended("caller cancelled")
                    call.finish()
            elif isinstance(event, AckReceived):
                call = self._calls_by_invite.get(id(event.invite))
                if call is not None and call.state == CallState.ANSWERED:
                    call.state = CallState.CONFIRMED
            elif isinstance(event, AckTimeout):
                call = self._calls_by_invite.get(id(event.invite))
                if call is not None and call.state != CallState.ENDED:
                    log.warning("call %s: no ACK for our answer, hanging up", call.call_id)
                    call.channel.hangup(None, "no ACK")
            elif isinstance(event, ClientTimeout):
                tx = event.transaction
                log.info("%s to %s:%s timed out", tx.request.method, *tx.destination)
            elif isinstance(event, ResponseReceived):
                pass  # answers to our BYE need no action

    def _on_request(self, request: Request, tx: ServerTransaction) -> None:
        method = request.method
        if method == "INVITE":
            if tag_of(request.headers["To"]) is not None:
                self._on_reinvite(request, tx)
            else:
                self._on_invite(request, tx)
        elif method == "BYE":
            self._on_bye(request, tx)
        elif method == "OPTIONS":
            self.respond(
                tx,
                make_response(
                    request,
                    200,
                    to_tag=new_tag(),
                    headers=[("Allow", ALLOW), ("Accept", "application/sdp")],
                ),
            )
        elif method == "INFO":
            self._on_info(request, tx)
        elif method in ("REGISTER", "SUBSCRIBE", "NOTIFY", "MESSAGE", "PRACK", "UPDATE", "REFER"):
            self.respond(tx, make_response(request, 405, headers=[("Allow", ALLOW)]))
        else:
            self.respond(tx, make_response(request, 501, headers=[("Allow", ALLOW)]))

    def _dialog_of(self, request: Request) -> SipCall | None:
        key = (
            request.headers["Call-ID"],
            tag_of(request.headers["To"]) or "",
            tag_of(request.headers["From"]) or "",
        )
        return self.calls.get(key)

    def _on_invite(self, request: Request, tx: ServerTransaction) -> None:
        try:
            offer = parse_sdp(request.body) if request.body else None
            if offer is None:
                raise SdpError("an INVITE without an SDP offer is not supported")
            negotiated = negotiate(offer)
        except SdpError as exc:
            log.info("INVITE %s refused: %s", request.headers["Call-ID"], exc)
            self.respond(
                tx,
                make_response(
                    request, 488, to_tag=new_tag(), headers=[("Warning", f'399 - "{exc}"')]
                ),
            )
            return
        info = self._caller_info(request)
        handler = self.router(info)
        if handler is None:
            log.info("no dial plan entry for %s@%s", info.exten, info.context)
            self.respond(tx, make_response(request, 404, to_tag=new_tag()))
            return
        task = asyncio.ensure_future(self._start_call(request, tx, negotiated, info, handler))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _start_call(
        self,
        request: Request,
        tx: ServerTransaction,
        negotiated: NegotiatedAudio,
        info: CallerInfo,
        handler: CallHandler,
    ) -> None:
        media = RtpSession(self.clock)
        try:
            await media.open(self.rtp_host, self.config.rtp_ports)
        except OSError as exc:
            log.error("call %s: %s", info.call_id, exc)
            self.respond(tx, make_response(request, 503, to_tag=new_tag()))
            self._flush()
            return
        media.configure(negotiated)
        if tx.final_code:
            media.close()  # cancelled while we were opening the socket
            return
        call = SipCall(self, tx, negotiated, media, info)
        self.calls[call.dialog_key] = call
        self._calls_by_invite[id(tx)] = call
        log.info(
            "call %s from %r <%s> to %s@%s (%s)",
            call.call_id,
            info.caller_id_name,
            info.caller_id_num,
            info.exten,
            info.context,
            negotiated.codec,
        )
        try:
            await handler(call.channel)
        except Exception:  # noqa: BLE001 - an application bug ends one call, not the server
            log.exception("call %s: application failed", call.call_id)
        finally:
            if call.state != CallState.ENDED:
                call.channel.hangup(None, "application finished")
            if call.pending_bye is not None:
                self.respond(call.pending_bye, make_response(call.pending_bye.request, 200))
                call.pending_bye = None
            self._flush()

    def _caller_info(self, request: Request) -> CallerInfo:
        """Who calls and for whom; a forwarded call is routed by the diverting number."""
        exten = request.uri.user or "s"
        name, number = "", ""
        try:
            caller = Address.parse(request.headers["From"])
            name = caller.name
            number = caller.uri.user or ""
        except ValueError:
            pass
        redirect = redirect_of(request)
        return CallerInfo(
            exten=redirect.number if redirect else exten,
            context=self.config.default_context,
            caller_id_name=name,
            caller_id_num=number,
            call_id=request.headers["Call-ID"],
            channel_name=f"SIP/{number or 'unknown'}-{random.getrandbits(32):08x}",
            redirecting_from=redirect.number if redirect else "",
            redirect_reason=redirect.reason if redirect else "",
            headers={key.lower(): request.headers[key] for key in request.headers.keys()},
        )

    def _on_bye(self, request: Request, tx: ServerTransaction) -> None:
        call = self._dialog_of(request)
        if call is None:
            self.respond(tx, make_response(request, 481))
            return
        call.remote_ended("caller hung up")
        if call.state == CallState.ENDED:
            self.respond(tx, make_response(request, 200))
            return
        # Answer once the application has stored the message (see _start_call), or at the
        # deadline, whichever comes first.
        call.pending_bye = tx
        asyncio.get_running_loop().call_later(BYE_ANSWER_DEADLINE, self._answer_bye_late, call)

    def _answer_bye_late(self, call: SipCall) -> None:
        if call.pending_bye is not None:
            log.warning("call %s: answering BYE before the application finished", call.call_id)
            self.respond(call.pending_bye, make_response(call.pending_bye.request, 200))
            call.pending_bye = None

    def _on_reinvite(self, request: Request, tx: ServerTransaction) -> None:
        call = self._dialog_of(request)
        if call is None:
            self.respond(tx, make_response(request, 481))
            return
        try:
            negotiated = negotiate(parse_sdp(request.body)) if request.body else call.negotiated
        except SdpError:
            self.respond(tx, make_response(request, 488))
            return
        call.negotiated = negotiated
        call.media.configure(negotiated)
        body = build_answer(negotiated, self.rtp_host, call.media.local_port, call.session_id, 2)
        self.respond(
            tx,
            make_response(
                request,
                200,
                body=body,
                content_type="application/sdp",
                headers=[("Contact", f"<sip:{call.channel.info.exten}@{self.contact_host}>")],
            ),
        )

    def _on_info(self, request: Request, tx: ServerTransaction) -> None:
        call = self._dialog_of(request)
        if call is None:
            self.respond(tx, make_response(request, 481))
            return
        content_type = (request.headers.get("Content-Type") or "").lower()
        body = request.body.decode("utf-8", "replace")
        digit = None
        if content_type.startswith("application/dtmf-relay"):
            for line in body.splitlines():
                name, _, value = line.partition("=")
                if name.strip().lower() == "signal":
                    digit = value.strip()[:1]
        elif content_type.startswith("application/dtmf"):
            digit = body.strip()[:1]
        if digit and digit in "0123456789*#ABCD":
            call.channel._digit_received(digit)
        self.respond(tx, make_response(request, 200))

    # -- requests we send ---------------------------------------------------------------

    def send_bye(self, call: SipCall) -> None:
        """BYE within the dialog, to where the INVITE came from (nat=force_rport)."""
        request = call.request
        try:
            contact = Address.parse_many(request.headers["Contact"])[0].uri
        except (KeyError, ValueError, IndexError):
            contact = Address.parse(request.headers["From"]).uri
        target = URI(
            scheme=contact.scheme,
            host=contact.host,
            user=contact.user,
            port=contact.port,
            parameters=contact.parameters,
        )
        call.local_cseq += 1
        bye = Request("BYE", target)
        host, port = self.contact_host.rsplit(":", 1)
        bye.headers.add("Via", f"{Via('UDP', host, int(port))};branch={new_branch()};rport")
        for route in request.headers.getlist("Record-Route"):
            bye.headers.add("Route", route)
        bye.headers.add("Max-Forwards", "70")
        to_value = request.headers["To"]
        if tag_of(to_value) is None:
            to_value = f"{to_value};tag={call.local_tag}"
        bye.headers.add("From", to_value)
        bye.headers.add("To", request.headers["From"])
        bye.headers.add("Call-ID", call.call_id)
        bye.headers.add("CSeq", f"{call.local_cseq} BYE")
        bye.headers.add("User-Agent", SERVER_NAME)
        self.layer.send_request(bye, call.invite.source, self._now())
        self._flush()
