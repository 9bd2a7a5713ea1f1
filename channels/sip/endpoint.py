"""The SIP endpoint: transports in, calls out as `Channel`s.

Each transport (UDP, TCP, TLS) owns a sans-I/O `TransactionLayer`; the endpoint takes the
events of all of them and turns INVITE dialogs into `SipCall`s whose application runs as
its own task. It answers OPTIONS and in-dialog INFO, UPDATE and re-INVITE itself.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sipmessage import URI, Address, Request, Response

from ..channel import CallerInfo, Channel
from ..media import MediaClock, RtpSession
from ..sdp import NegotiatedAudio, SdpError, negotiate, parse_sdp
from ..tasks import BackgroundTasks
from .calls import CallState, SipCall, session_timer_headers
from .messages import (
    ALLOW,
    SERVER_NAME,
    host_reference,
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
)
from .transport import SipTransport, StreamTransport, UdpTransport

log = logging.getLogger(__name__)

Addr = tuple[str, int]
CallHandler = Callable[[Channel], Awaitable[None]]
# The dial plan: which application runs a call, or None (404). Async, because a realtime
# dial plan (Asterisk's realtime switch) asks the database.
Router = Callable[[CallerInfo], Awaitable[CallHandler | None]]
# Who may call: returns the dial plan context for the call, or None when it refused the
# INVITE (it has sent the 401/403 itself).
Authorizer = Callable[["SipTransport", Request, ServerTransaction], Awaitable[str | None]]
# Extra request handlers by method (REGISTER, SUBSCRIBE...), given the transport and source.
RequestHandler = Callable[["SipTransport", Request, ServerTransaction], None]

# How long a caller's BYE waits for the application to finish (store the message) before
# we answer it anyway. Below the caller's 32 s transaction timeout.
BYE_ANSWER_DEADLINE = 20.0
# Option tags we support in Require (RFC 3261 8.2.2.3); anything else gets 420.
SUPPORTED_EXTENSIONS = {"timer"}


@dataclass
class EndpointConfig:
    host: str = "127.0.0.1"
    port: int = 5060
    rtp_host: str | None = None
    rtp_ports: tuple[int, int] = (10000, 20000)
    default_context: str = "default"
    tcp: bool = False
    tcp_port: int | None = None  # None: the UDP port
    tls_context: ssl.SSLContext | None = None
    tls_port: int = 5061
    rtp_timeout: float = 0  # sip.conf rtptimeout: hang up after this many seconds without RTP
    comedia: bool = False  # sip.conf nat=comedia: send RTP where the caller's comes from


class SipEndpoint:
    def __init__(self, config: EndpointConfig, router: Router) -> None:
        self.config = config
        self.router = router
        self.clock = MediaClock()
        self.transports: list[SipTransport] = []
        self.udp: UdpTransport | None = None
        self.calls: dict[tuple[str, str, str], SipCall] = {}
        self._calls_by_invite: dict[int, SipCall] = {}
        self._tasks = BackgroundTasks()
        self.handlers: dict[str, RequestHandler] = {}
        self.authorize: Authorizer | None = None
        self.rtp_host = config.rtp_host or config.host
        self.contact_host = f"{host_reference(config.host)}:{config.port}"

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        self.udp = UdpTransport(self._process_events)
        await self.udp.start(self.config.host, self.config.port)
        self.transports.append(self.udp)
        self.config.port = self.udp.port
        self.contact_host = f"{host_reference(self.udp.host)}:{self.udp.port}"
        if self.config.tcp:
            tcp = StreamTransport(self._process_events)
            await tcp.start(self.config.host, self.config.tcp_port or self.udp.port)
            self.transports.append(tcp)
        if self.config.tls_context is not None:
            tls = StreamTransport(self._process_events, self.config.tls_context)
            await tls.start(self.config.host, self.config.tls_port)
            self.transports.append(tls)

    async def stop(self, grace: float = 5.0) -> None:
        """Hang up every call, give applications `grace` seconds to store, then close."""
        for call in list(self._calls_by_invite.values()):
            call.channel.hangup(503, "server shutting down")
        if running := self._tasks.running():
            await asyncio.wait(running, timeout=grace)
        for transport in self.transports:
            transport.flush()
        await asyncio.sleep(0.05)
        for transport in self.transports:
            transport.close()

    @property
    def active_calls(self) -> int:
        return len(self._calls_by_invite)

    def transport_named(self, name: str) -> SipTransport | None:
        for transport in self.transports:
            if transport.name == name.upper():
                return transport
        return None

    def contact_for(self, transport: SipTransport, user: str) -> str:
        suffix = "" if transport.name == "UDP" else f";transport={transport.name.lower()}"
        scheme = "sips" if transport.name == "TLS" else "sip"
        return f"<{scheme}:{user}@{host_reference(transport.host)}:{transport.port}{suffix}>"

    def via_for(self, transport: SipTransport) -> str:
        sent_by = f"{host_reference(transport.host)}:{transport.port}"
        return f"SIP/2.0/{transport.name} {sent_by};branch={new_branch()};rport"

    def respond(self, transport: SipTransport, tx: ServerTransaction, response: Response) -> None:
        transport.layer.respond(tx, response, transport.now())
        transport.flush()

    def send_request(self, transport: SipTransport, request: Request, destination: Addr) -> None:
        transport.layer.send_request(request, destination, transport.now())
        transport.flush()

    def forget(self, call: SipCall) -> None:
        self.calls.pop(call.dialog_key, None)
        self._calls_by_invite.pop(id(call.invite), None)

    # -- events -------------------------------------------------------------------------

    def _process_events(self, transport: SipTransport) -> None:
        layer = transport.layer
        while (event := layer.next_event()) is not None:
            if isinstance(event, RequestReceived):
                self._on_request(transport, event.request, event.transaction)
            elif isinstance(event, CancelReceived):
                # The layer has answered the CANCEL and sent the 487 already.
                call = self._calls_by_invite.get(id(event.invite))
                if call is not None and call.state in (CallState.INCOMING, CallState.RINGING):
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
                handler = self.handlers.get("timeout")
                if handler is not None:
                    handler(transport, tx.request, tx)  # type: ignore[arg-type]
            elif isinstance(event, ResponseReceived):
                handler = self.handlers.get("response")
                if handler is not None:
                    handler(transport, event.response, event.transaction)  # type: ignore[arg-type]

    def _on_request(self, transport: SipTransport, request: Request, tx: ServerTransaction) -> None:
        method = request.method
        unsupported = self._unsupported_extensions(request)
        if unsupported and method not in ("CANCEL", "BYE"):
            self.respond(
                transport,
                tx,
                make_response(
                    request,
                    420,
                    to_tag=new_tag(),
                    headers=[("Unsupported", ", ".join(unsupported))],
                ),
            )
            return
        if method in self.handlers:
            self.handlers[method](transport, request, tx)
        elif method == "INVITE":
            if tag_of(request.headers["To"]) is not None:
                self._on_reinvite(transport, request, tx)
            else:
                self._on_invite(transport, request, tx)
        elif method == "BYE":
            self._on_bye(transport, request, tx)
        elif method == "OPTIONS":
            headers = [("Allow", ALLOW), ("Accept", "application/sdp")]
            self.respond(
                transport, tx, make_response(request, 200, to_tag=new_tag(), headers=headers)
            )
        elif method == "INFO":
            self._on_info(transport, request, tx)
        elif method == "UPDATE":
            self._on_update(transport, request, tx)
        elif method == "PRACK":
            # We never send reliable provisionals, so no PRACK can match one (RFC 3262 3).
            self.respond(transport, tx, make_response(request, 481))
        elif method in ("REGISTER", "SUBSCRIBE", "NOTIFY", "MESSAGE", "REFER", "PUBLISH"):
            # REGISTER and SUBSCRIBE are served when the server installs their handlers.
            self.respond(transport, tx, make_response(request, 405, headers=[("Allow", ALLOW)]))
        else:
            self.respond(transport, tx, make_response(request, 501, headers=[("Allow", ALLOW)]))

    @staticmethod
    def _unsupported_extensions(request: Request) -> list[str]:
        required = ",".join(request.headers.getlist("Require"))
        tags = [t.strip() for t in required.split(",") if t.strip()]
        return [t for t in tags if t.lower() not in SUPPORTED_EXTENSIONS]

    def _dialog_of(self, request: Request) -> SipCall | None:
        key = (
            request.headers["Call-ID"],
            tag_of(request.headers["To"]) or "",
            tag_of(request.headers["From"]) or "",
        )
        return self.calls.get(key)

    # -- calls --------------------------------------------------------------------------

    def _on_invite(self, transport: SipTransport, request: Request, tx: ServerTransaction) -> None:
        try:
            offer = parse_sdp(request.body) if request.body else None
            if offer is None:
                raise SdpError("an INVITE without an SDP offer is not supported")
            negotiated = negotiate(offer)
        except SdpError as exc:
            log.info("INVITE %s refused: %s", request.headers["Call-ID"], exc)
            self.respond(
                transport,
                tx,
                make_response(
                    request, 488, to_tag=new_tag(), headers=[("Warning", f'399 - "{exc}"')]
                ),
            )
            return
        info = self._caller_info(request)
        self._tasks.spawn(self._run_call(transport, request, tx, negotiated, info))

    async def _run_call(
        self,
        transport: SipTransport,
        request: Request,
        tx: ServerTransaction,
        negotiated: NegotiatedAudio,
        info: CallerInfo,
    ) -> None:
        if self.authorize is not None:
            context = await self.authorize(transport, request, tx)
            if context is None:
                return
            info.context = context
        try:
            handler = await self.router(info)
        except Exception:  # noqa: BLE001 - a broken dial plan lookup refuses one call
            log.exception("call %s: dial plan lookup failed", info.call_id)
            self.respond(transport, tx, make_response(request, 500, to_tag=new_tag()))
            return
        if handler is None:
            log.info("no dial plan entry for %s@%s", info.exten, info.context)
            self.respond(transport, tx, make_response(request, 404, to_tag=new_tag()))
            return
        if tx.final_code:
            return  # cancelled during the lookup
        media = RtpSession(self.clock, self.config.rtp_timeout, self.config.comedia)
        try:
            await media.open(self.rtp_host, self.config.rtp_ports)
        except OSError as exc:
            log.error("call %s: %s", info.call_id, exc)
            self.respond(transport, tx, make_response(request, 503, to_tag=new_tag()))
            return
        media.configure(negotiated)
        if tx.final_code:
            media.close()  # cancelled while we were opening the socket
            return
        call = SipCall(self, transport, tx, negotiated, media, info)
        self.calls[call.dialog_key] = call
        self._calls_by_invite[id(tx)] = call

        def rtp_timeout() -> None:
            log.info("call %s: RTP timeout (%s s without RTP), hanging up", call.call_id,
                     self.config.rtp_timeout)  # fmt: skip
            call.channel.hangup(None, "RTP timeout")

        media.on_timeout = rtp_timeout
        log.info(
            "call %s from %r <%s> to %s@%s (%s, %s)",
            call.call_id,
            info.caller_id_name,
            info.caller_id_num,
            info.exten,
            info.context,
            negotiated.codec,
            transport.name,
        )
        try:
            await handler(call.channel)
        except Exception:  # noqa: BLE001 - an application bug ends one call, not the server
            log.exception("call %s: application failed", call.call_id)
        finally:
            if call.state != CallState.ENDED:
                call.channel.hangup(None, "application finished")
            self._answer_pending_bye(call)

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

    def _on_bye(self, transport: SipTransport, request: Request, tx: ServerTransaction) -> None:
        call = self._dialog_of(request)
        if call is None:
            self.respond(transport, tx, make_response(request, 481))
            return
        call.remote_ended("caller hung up")
        if call.state == CallState.ENDED:
            self.respond(transport, tx, make_response(request, 200))
            return
        # Answer once the application has stored the message (_run_call), or at the
        # deadline, whichever comes first.
        call.pending_bye = tx
        asyncio.get_running_loop().call_later(BYE_ANSWER_DEADLINE, self._answer_bye_late, call)

    def _answer_pending_bye(self, call: SipCall) -> None:
        if call.pending_bye is not None:
            bye, call.pending_bye = call.pending_bye, None
            self.respond(call.transport, bye, make_response(bye.request, 200))

    def _answer_bye_late(self, call: SipCall) -> None:
        if call.pending_bye is not None:
            log.warning("call %s: answering BYE before the application finished", call.call_id)
            self._answer_pending_bye(call)

    def _renegotiate(
        self, transport: SipTransport, request: Request, tx: ServerTransaction
    ) -> SipCall | None:
        """re-INVITE and UPDATE: a new offer (hold, new address) or a session refresh."""
        call = self._dialog_of(request)
        if call is None:
            self.respond(transport, tx, make_response(request, 481))
            return None
        body = b""
        if request.body:
            try:
                negotiated = negotiate(parse_sdp(request.body))
            except SdpError as exc:
                self.respond(
                    transport,
                    tx,
                    make_response(request, 488, headers=[("Warning", f'399 - "{exc}"')]),
                )
                return None
            call.negotiated = negotiated
            call.media.configure(negotiated)
            call.sdp_version += 1
            body = call.sdp_answer()
        self.respond(
            transport,
            tx,
            make_response(
                request,
                200,
                body=body,
                content_type="application/sdp" if body else None,
                headers=[("Contact", call.contact()), *session_timer_headers(request)],
            ),
        )
        return call

    def _on_reinvite(
        self, transport: SipTransport, request: Request, tx: ServerTransaction
    ) -> None:
        self._renegotiate(transport, request, tx)

    def _on_update(self, transport: SipTransport, request: Request, tx: ServerTransaction) -> None:
        self._renegotiate(transport, request, tx)

    def _on_info(self, transport: SipTransport, request: Request, tx: ServerTransaction) -> None:
        call = self._dialog_of(request)
        if call is None:
            self.respond(transport, tx, make_response(request, 481))
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
            call.channel.digit_received(digit)
        self.respond(transport, tx, make_response(request, 200))

    # -- requests we send ---------------------------------------------------------------

    def send_bye(self, call: SipCall) -> None:
        """BYE within the dialog: through the Record-Route set, else to where the INVITE
        came from (chan_sip's default nat=force_rport)."""
        request = call.request
        contact = call.remote_target()
        uri = contact.uri if contact else Address.parse(request.headers["From"]).uri
        call.local_cseq += 1
        bye = Request("BYE", uri)
        bye.headers.add("Via", self.via_for(call.transport))
        routes = request.headers.getlist("Record-Route")
        for route in routes:
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
        destination = call.invite.source
        if routes and call.transport.name == "UDP":
            destination = _first_hop(routes[0]) or destination
        elif isinstance(call.transport, StreamTransport) and contact is not None:
            if destination not in call.transport.connections:
                # The caller closed its connection: open one to its Contact, not to the
                # ephemeral port it used (RFC 3261 18.2.2).
                default_port = 5061 if call.transport.name == "TLS" else 5060
                destination = (contact.uri.host.strip("[]"), contact.uri.port or default_port)
        self.send_request(call.transport, bye, destination)


def _first_hop(route: str) -> Addr | None:
    """The address of a Record-Route entry we send to first (a loose router, RFC 3261 16.12)."""
    try:
        uri: URI = Address.parse_many(route)[0].uri
    except (ValueError, IndexError):
        return None
    return (uri.host.strip("[]"), uri.port or 5060)
