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
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sipmessage import Address, Request, Response

from ..channel import CallerInfo, Channel
from ..media import MediaClock, RtpSession
from ..sdp import NegotiatedAudio, SdpError, negotiate, parse_sdp, reachable
from ..tasks import BackgroundTasks
from .admission import RETRY_AFTER, CallLimits, LogLimiter, valid_extension
from .calls import CallState, SipCall, session_timer_headers
from .limits import ExemptAddresses, FloodLimiter, GuardSettings, Verdict
from .messages import (
    ALLOW,
    header_tokens,
    host_reference,
    make_response,
    media_type,
    new_branch,
    new_tag,
    sdp_body,
    tag_of,
)
from .policy import Authorizer, CallPolicy
from .redirect import redirect_of
from .transactions import (
    DEFAULT_MAX_TRANSACTIONS,
    AckReceived,
    AckTimeout,
    CancelReceived,
    ClientTimeout,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
)
from .transport import SipTransport, StreamTransport, UdpTransport, local_address_toward

log = logging.getLogger(__name__)

Addr = tuple[str, int]
CallHandler = Callable[[Channel], Awaitable[None]]
# The dial plan: which application runs a call, or None (404). Async, because a realtime
# dial plan (Asterisk's realtime switch) asks the database.
Router = Callable[[CallerInfo], Awaitable[CallHandler | None]]
# Extra request handlers by method (REGISTER, SUBSCRIBE...), given the transport and source.
RequestHandler = Callable[["SipTransport", Request, ServerTransaction], None]
# Asked for each new INVITE: a reason to refuse it with 503 (the spool is full...), or None.
Admission = Callable[[], "str | None"]

# Option tags we support in Require (RFC 3261 8.2.2.3); anything else gets 420.
SUPPORTED_EXTENSIONS = {"timer"}
# Methods counted by name in requests_received; anything else is "OTHER" (a bounded label).
COUNTED_METHODS = frozenset(
    "INVITE ACK BYE CANCEL OPTIONS REGISTER SUBSCRIBE NOTIFY INFO UPDATE PRACK MESSAGE REFER "
    "PUBLISH".split()
)
INCOMPATIBLE_ADDRESS = '301 - "Incompatible network address formats"'  # RFC 3261 20.43


class OfferRefused(Exception):
    """An SDP offer we answer with `code` (415, 488) and `headers` (Accept, Warning)."""

    def __init__(self, code: int, headers: list[tuple[str, str]], reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.headers = headers


@dataclass
class EndpointConfig:
    host: str = "127.0.0.1"
    port: int = 5060
    rtp_host: str | None = None
    rtp_ports: tuple[int, int] = (10000, 20000)
    default_context: str = "default"
    tcp: bool = False
    tcp_port: int | None = None  # None: the UDP port
    tcp_host: str | None = None  # sip.conf tcpbindaddr's address; None: `host`
    tls_context: ssl.SSLContext | None = None
    tls_port: int = 5061
    tls_host: str | None = None  # sip.conf tlsbindaddr's address; None: `host`
    rtp_timeout: float = 0  # sip.conf rtptimeout: hang up after this many seconds without RTP
    comedia: bool = False  # sip.conf nat=comedia: send RTP where the caller's comes from
    max_calls: int = 0  # calls in progress at most (sip.conf maxcalls); 0: no limit
    max_calls_per_ip: int = 0  # calls in progress from one address at most; 0: no limit
    max_transactions: int = DEFAULT_MAX_TRANSACTIONS  # open server transactions per transport
    guard: GuardSettings = field(default_factory=GuardSettings)  # flood and connection limits


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
        self.admission: Admission | None = None
        self.limits = CallLimits(config.max_calls, config.max_calls_per_ip)
        self._refusal_log = LogLimiter()
        self._bad_exten_log = LogLimiter()
        self.rtp_host = config.rtp_host or config.host
        # Requests received, by method (unknown methods as OTHER), for monitoring.
        self.requests_received: Counter[str] = Counter()
        self.contact_host = f"{host_reference(config.host)}:{config.port}"
        guard = config.guard
        self.exempt = ExemptAddresses(guard.flood_exempt)
        self.register_flood = FloodLimiter(
            guard.register_rate, guard.register_burst, guard.flood_block, guard.flood_replies
        )
        self.request_flood = FloodLimiter(
            guard.request_rate, guard.request_burst, guard.flood_block, guard.flood_replies
        )
        self._flood_log = LogLimiter()

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        config = self.config
        self.udp = UdpTransport(self._process_events, config.max_transactions)
        self.udp.layer.screen = self._screen
        await self.udp.start(config.host, config.port)
        self.transports.append(self.udp)
        config.port = self.udp.port
        self.contact_host = f"{host_reference(self.udp.host)}:{self.udp.port}"
        if config.tcp:
            tcp = self._stream_transport(None)
            await tcp.start(config.tcp_host or config.host, config.tcp_port or self.udp.port)
            self.transports.append(tcp)
        if config.tls_context is not None:
            tls = self._stream_transport(config.tls_context)
            await tls.start(config.tls_host or config.host, config.tls_port)
            self.transports.append(tls)

    def _stream_transport(self, tls: ssl.SSLContext | None) -> StreamTransport:
        transport = StreamTransport(
            self._process_events, tls, self.config.max_transactions, self.config.guard, self.exempt
        )
        transport.layer.screen = self._screen
        return transport

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

    def contact_for(self, transport: SipTransport, user: str, toward: str | None = None) -> str:
        """Our Contact; `toward` (the peer's address) picks ours when bound to a wildcard."""
        suffix = "" if transport.name == "UDP" else f";transport={transport.name.lower()}"
        scheme = "sips" if transport.name == "TLS" else "sip"
        host = local_address_toward(transport.host, toward) if toward else transport.host
        return f"<{scheme}:{user}@{host_reference(host)}:{transport.port}{suffix}>"

    def via_for(self, transport: SipTransport, toward: str | None = None) -> str:
        host = local_address_toward(transport.host, toward) if toward else transport.host
        sent_by = f"{host_reference(host)}:{transport.port}"
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

    # -- floods -------------------------------------------------------------------------

    def _screen(self, request: Request, source: Addr, now: float) -> tuple[Verdict, int]:
        """The flood limits, asked by the transaction layer before a request costs anything.

        REGISTERs have a bucket per source address, every other request outside a call we
        know has another; configured peers and `floodexempt` networks have none.
        """
        ip = source[0]
        if ip in self.exempt:
            return Verdict.ALLOW, 0
        if request.method == "REGISTER":
            limiter, what = self.register_flood, "REGISTER"
        else:
            try:
                in_call = self._dialog_of(request) is not None
            except (KeyError, ValueError):
                in_call = False
            if in_call:
                return Verdict.ALLOW, 0
            limiter, what = self.request_flood, "request"
        verdict = limiter.check(ip, now)
        if verdict is Verdict.LIMITED and self._flood_log.should_log(now):
            log.warning(
                "SIP %s flood from %s (over %g a second): answered 503 Retry-After %d, then"
                " ignored while it goes on (%d more such lines suppressed)",
                what, ip, limiter.rate, limiter.retry_after, self._flood_log.take_suppressed(),
            )  # fmt: skip
        return verdict, limiter.retry_after

    # -- events -------------------------------------------------------------------------

    def _process_events(self, transport: SipTransport) -> None:
        layer = transport.layer
        while (event := layer.next_event()) is not None:
            if isinstance(event, RequestReceived):
                method = event.request.method
                self.requests_received[method if method in COUNTED_METHODS else "OTHER"] += 1
                try:
                    self._on_request(transport, event.request, event.transaction)
                except Exception:  # noqa: BLE001 - one request's bug must not hold its slot
                    log.exception("error handling %s %s", method, event.request.uri)
                    self._answer_failed(transport, event.transaction)
            elif isinstance(event, CancelReceived):
                self.requests_received["CANCEL"] += 1
                # The layer has answered the CANCEL and sent the 487 already.
                call = self._calls_by_invite.get(id(event.invite))
                if call is not None:
                    call.cancelled()
            elif isinstance(event, AckReceived):
                self.requests_received["ACK"] += 1
                call = self._calls_by_invite.get(id(event.invite))
                if call is not None:
                    call.acknowledged()
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
        unsupported = [
            t for t in header_tokens(request, "Require") if t not in SUPPORTED_EXTENSIONS
        ]
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
                self._renegotiate(transport, request, tx)
            else:
                self._on_invite(transport, request, tx)
        elif method == "BYE":
            call = self._dialog_of(request)
            if call is None:
                self.respond(transport, tx, make_response(request, 481))
            else:
                call.bye_received(tx)
        elif method == "OPTIONS":
            headers = [("Allow", ALLOW), ("Accept", "application/sdp")]
            self.respond(
                transport, tx, make_response(request, 200, to_tag=new_tag(), headers=headers)
            )
        elif method == "INFO":
            self._on_info(transport, request, tx)
        elif method == "UPDATE":
            self._renegotiate(transport, request, tx)
        elif method == "PRACK":
            # We never send reliable provisionals, so no PRACK can match one (RFC 3262 3).
            self.respond(transport, tx, make_response(request, 481))
        elif method in ("REGISTER", "SUBSCRIBE", "NOTIFY", "MESSAGE", "REFER", "PUBLISH"):
            # REGISTER and SUBSCRIBE are served when the server installs their handlers.
            self.respond(transport, tx, make_response(request, 405, headers=[("Allow", ALLOW)]))
        else:
            self.respond(transport, tx, make_response(request, 501, headers=[("Allow", ALLOW)]))

    def _answer_failed(self, transport: SipTransport, tx: ServerTransaction) -> None:
        """500 for a request whose handler raised before answering: the transaction then
        expires like any other instead of keeping its slot in the table for good."""
        if tx.final_code:
            return
        try:
            self._refuse(transport, tx, 500)
        except Exception:  # noqa: BLE001 - nothing routable: the layer's timer drops it
            log.debug("no 500 for a failed %s", tx.request.method, exc_info=True)

    def _dialog_of(self, request: Request) -> SipCall | None:
        key = (
            request.headers["Call-ID"],
            tag_of(request.headers["To"]) or "",
            tag_of(request.headers["From"]) or "",
        )
        return self.calls.get(key)

    # -- calls --------------------------------------------------------------------------

    def _refuse(
        self,
        transport: SipTransport,
        tx: ServerTransaction,
        code: int,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self.respond(
            transport, tx, make_response(tx.request, code, to_tag=new_tag(), headers=headers)
        )

    def _on_invite(self, transport: SipTransport, request: Request, tx: ServerTransaction) -> None:
        """A new call: the checks that cost nothing come first, then its task starts."""
        try:
            Address.parse(request.headers["From"])
        except ValueError:
            # We could never address a BYE to it (RFC 3261 8.2: From is mandatory and ours
            # to echo), so no call starts.
            response = make_response(request, 400, "Bad From", to_tag=new_tag())
            self.respond(transport, tx, response)
            return
        info = self._caller_info(request, tx.source)
        uri_user = request.uri.user or "s"
        unsafe = next((e for e in (uri_user, info.exten) if not valid_extension(e)), None)
        if unsafe is not None:
            if self._bad_exten_log.should_log(transport.now()):
                log.warning(
                    "INVITE %s from %s refused (404): extension %r is not dial plan safe"
                    " (%d more since the last such line)",
                    info.call_id, tx.source[0], unsafe, self._bad_exten_log.take_suppressed(),
                )  # fmt: skip
            self._refuse(transport, tx, 404)
            return
        source_ip = tx.source[0]
        try:
            reason = self.limits.refusal(source_ip) or (self.admission and self.admission())
        except Exception:  # noqa: BLE001 - a broken admission hook refuses one call
            log.exception("call %s: admission check failed", info.call_id)
            self._refuse(transport, tx, 500)
            return
        if reason:
            if self._refusal_log.should_log(transport.now()):
                log.warning(
                    "INVITE %s from %s refused (503): %s (%d more since the last such line)",
                    info.call_id, source_ip, reason, self._refusal_log.take_suppressed(),
                )  # fmt: skip
            self._refuse(transport, tx, 503, [("Retry-After", str(RETRY_AFTER))])
            return
        try:
            negotiated, media_reachable = self._read_offer(request)
        except OfferRefused as refused:
            log.info("INVITE %s refused (%d): %s", info.call_id, refused.code, refused)
            self._refuse(transport, tx, refused.code, refused.headers)
            return
        self.limits.started(source_ip)
        self._tasks.spawn(self._run_call(transport, request, tx, negotiated, info, media_reachable))

    async def _run_call(
        self,
        transport: SipTransport,
        request: Request,
        tx: ServerTransaction,
        negotiated: NegotiatedAudio,
        info: CallerInfo,
        media_reachable: bool,
    ) -> None:
        try:
            try:
                policy = await self._policy_for(transport, request, tx)
            except Exception:  # noqa: BLE001 - a broken authorizer refuses one call
                log.exception("call %s: authorization failed", info.call_id)
                self._refuse(transport, tx, 500)
                return
            if policy is not None:
                await self._call(transport, request, tx, negotiated, info, policy, media_reachable)
        except Exception:  # noqa: BLE001 - logged here, not as "Task exception never retrieved"
            log.exception("call %s failed", info.call_id)
            self._answer_failed(transport, tx)
        finally:
            self.limits.ended(tx.source[0])

    async def _policy_for(
        self, transport: SipTransport, request: Request, tx: ServerTransaction
    ) -> CallPolicy | None:
        if self.authorize is None:
            return CallPolicy(self.config.default_context)
        result = await self.authorize(transport, request, tx)
        return CallPolicy(result) if isinstance(result, str) else result

    async def _call(
        self,
        transport: SipTransport,
        request: Request,
        tx: ServerTransaction,
        negotiated: NegotiatedAudio,
        info: CallerInfo,
        policy: CallPolicy,
        media_reachable: bool,
    ) -> None:
        info.context = policy.context
        info.language = policy.language
        if policy.caller_id is not None:
            info.caller_id_name, info.caller_id_num = policy.caller_id
        try:
            handler = await self.router(info)
        except Exception:  # noqa: BLE001 - a broken dial plan lookup refuses one call
            log.exception("call %s: dial plan lookup failed", info.call_id)
            self._refuse(transport, tx, 500)
            return
        if handler is None:
            log.info("no dial plan entry for %s@%s", info.exten, info.context)
            self._refuse(transport, tx, 404)
            return
        if tx.final_code:
            return  # cancelled during the lookup
        rtp_timeout = self.config.rtp_timeout if policy.rtp_timeout is None else policy.rtp_timeout
        media = RtpSession(self.clock, rtp_timeout, self.config.comedia, dtmfmode=policy.dtmfmode)
        try:
            await media.open(self.rtp_host, self.config.rtp_ports)
        except OSError as exc:
            log.error("call %s: %s", info.call_id, exc)
            self._refuse(transport, tx, 503)
            return
        media.configure(negotiated)
        if not media_reachable:
            media.remote = None  # nat=comedia: wait for the caller's RTP and answer its source
        if tx.final_code:
            media.close()  # cancelled while we were opening the socket
            return
        call = SipCall(self, transport, tx, negotiated, media, info, policy.dtmfmode)
        transport.authenticated(tx.source)  # a call it carries: no tcpauthtimeout on it
        self.calls[call.dialog_key] = call
        self._calls_by_invite[id(tx)] = call

        def on_rtp_timeout() -> None:
            log.info("call %s: RTP timeout (%s s without RTP), hanging up", call.call_id,
                     rtp_timeout)  # fmt: skip
            call.channel.hangup(None, "RTP timeout")

        media.on_timeout = on_rtp_timeout
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
            call.application_finished()

    def _caller_info(self, request: Request, source: Addr) -> CallerInfo:
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
            source_address=f"[{source[0]}]:{source[1]}"
            if ":" in source[0]
            else f"{source[0]}:{source[1]}",
        )

    def _read_offer(self, request: Request) -> tuple[NegotiatedAudio, bool]:
        """The offer in a request and whether our RTP socket can send to it (False only
        with nat=comedia, which answers the RTP source instead); `OfferRefused` if unusable."""
        sdp = sdp_body(request)
        if sdp is None:
            kind = media_type(request)
            raise OfferRefused(415, [("Accept", "application/sdp")], f"a {kind} body, not SDP")
        try:
            if not sdp:
                raise SdpError("an INVITE without an SDP offer is not supported")
            negotiated = negotiate(parse_sdp(sdp))
        except SdpError as exc:
            raise OfferRefused(488, [("Warning", f'399 - "{exc}"')], str(exc)) from exc
        media_reachable = reachable(negotiated.remote_address, self.rtp_host)
        if not media_reachable and not self.config.comedia:
            raise OfferRefused(
                488,
                [("Warning", INCOMPATIBLE_ADDRESS)],
                f"media address {negotiated.remote_address} is not reachable from our RTP"
                f" address {self.rtp_host}",
            )
        return negotiated, media_reachable

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
                negotiated, media_reachable = self._read_offer(request)
            except OfferRefused as refused:
                log.info("%s in call %s refused (%d): %s", request.method, call.call_id,
                         refused.code, refused)  # fmt: skip
                self._refuse(transport, tx, refused.code, refused.headers)
                return None
            body = call.offer_received(negotiated, media_reachable)
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

    def _on_info(self, transport: SipTransport, request: Request, tx: ServerTransaction) -> None:
        call = self._dialog_of(request)
        if call is None:
            self.respond(transport, tx, make_response(request, 481))
            return
        content_type = media_type(request)
        body = request.body.decode("utf-8", "replace")
        digit = None
        if content_type == "application/dtmf-relay":
            for line in body.splitlines():
                name, _, value = line.partition("=")
                if name.strip().lower() == "signal":
                    digit = value.strip()[:1].upper()
        elif content_type == "application/dtmf":
            digit = body.strip()[:1].upper()
        if digit and digit in "0123456789*#ABCD" and call.accepts_info_digits:
            call.channel.digit_received(digit)
        self.respond(transport, tx, make_response(request, 200))
