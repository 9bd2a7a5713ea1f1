"""One incoming call: its INVITE dialog, its RTP session and the `Channel` the application sees.

States (h11 style, named, with the transitions the call makes):
INCOMING (100 sent) -> RINGING (180) -> ANSWERED (200 sent) -> CONFIRMED (ACK) -> ENDED;
INCOMING/RINGING -> ENDED by CANCEL or a final error; any -> ENDED by BYE either way.

The call talks to the endpoint only through `DialogHost`, so it can be driven without
sockets: the endpoint dispatches transaction events to `cancelled`, `acknowledged`,
`bye_received` and `offer_received`.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
from typing import Protocol

from sipmessage import Address, Request, Response

from ..channel import CallerInfo, Channel
from ..media import RtpSession
from ..sdp import NegotiatedAudio, build_answer
from .messages import ALLOW, SERVER_NAME, header_tokens, make_response, new_tag, tag_of
from .policy import INFO_DTMF_MODES
from .transactions import ServerTransaction
from .transport import SipTransport, local_address_toward

log = logging.getLogger(__name__)

Addr = tuple[str, int]

# How long a caller's BYE waits for the application to finish (store the message) before
# we answer it anyway. Below the caller's 32 s transaction timeout.
BYE_ANSWER_DEADLINE = 20.0


class DialogHost(Protocol):
    """What a call needs from the endpoint that owns it."""

    rtp_host: str

    def respond(
        self, transport: SipTransport, tx: ServerTransaction, response: Response
    ) -> None: ...
    def send_request(
        self, transport: SipTransport, request: Request, destination: Addr
    ) -> None: ...
    def contact_for(self, transport: SipTransport, user: str, toward: str | None = None) -> str: ...
    def via_for(self, transport: SipTransport, toward: str | None = None) -> str: ...
    def forget(self, call: SipCall) -> None: ...


class CallState(enum.Enum):
    INCOMING = "incoming"
    RINGING = "ringing"
    ANSWERED = "answered"
    CONFIRMED = "confirmed"
    ENDED = "ended"


def session_timer_headers(request: Request) -> list[tuple[str, str]]:
    """Accept the caller's session timer (RFC 4028) as it is: we never refresh, they do."""
    value = request.headers.get("Session-Expires")
    if not value:
        return []
    interval = value.split(";")[0].strip()
    if not (interval.isascii() and interval.isdigit()):
        return []
    headers = [("Session-Expires", f"{interval};refresher=uac")]
    if "timer" in header_tokens(request, "Supported"):
        headers.append(("Require", "timer"))
    return headers


class SipCall:
    """The `CallControl` of one channel."""

    def __init__(
        self,
        host: DialogHost,
        transport: SipTransport,
        invite: ServerTransaction,
        negotiated: NegotiatedAudio,
        media: RtpSession,
        info: CallerInfo,
        dtmfmode: str = "auto",
    ) -> None:
        self.host = host
        self.transport = transport
        self.invite = invite
        self.negotiated = negotiated
        self.media = media
        self.dtmfmode = dtmfmode  # the peer's sip.conf dtmfmode: SIP INFO digits or not
        # One To tag for every answer to this INVITE, including the layer's own 487.
        self.local_tag = invite.to_tag or new_tag()
        invite.to_tag = self.local_tag
        self.state = CallState.INCOMING
        self.request = invite.request
        self.call_id = self.request.headers["Call-ID"]
        self.remote_tag = tag_of(self.request.headers["From"]) or ""
        self.local_cseq = random.randrange(1, 10000)
        self.session_id = random.randrange(1, 2**31)
        self.sdp_version = 1
        self.channel = Channel(info, self, media)
        self.pending_bye: ServerTransaction | None = None
        self._bye_deadline: asyncio.TimerHandle | None = None
        self.remote_gone = False
        # Our address as this caller sees it (the bound one unless that is a wildcard).
        self.peer_host = invite.source[0]
        self.media_host = local_address_toward(host.rtp_host, self.peer_host)

    @property
    def dialog_key(self) -> tuple[str, str, str]:
        return (self.call_id, self.local_tag, self.remote_tag)

    @property
    def accepts_info_digits(self) -> bool:
        """SIP INFO DTMF counts only for dtmfmode=info (shortinfo) or auto."""
        return self.dtmfmode in INFO_DTMF_MODES

    def contact(self) -> str:
        return self.host.contact_for(self.transport, self.channel.info.exten, self.peer_host)

    def sdp_answer(self) -> bytes:
        return build_answer(
            self.negotiated,
            self.media_host,
            self.media.local_port,
            self.session_id,
            self.sdp_version,
        )

    def _respond(self, tx: ServerTransaction, response: Response) -> None:
        self.host.respond(self.transport, tx, response)

    # -- CallControl --------------------------------------------------------------------

    async def ring(self) -> None:
        if self.state == CallState.INCOMING:
            self.state = CallState.RINGING
            self._respond(self.invite, make_response(self.request, 180, to_tag=self.local_tag))

    async def answer_call(self) -> None:
        if self.state not in (CallState.INCOMING, CallState.RINGING):
            return
        response = make_response(
            self.request,
            200,
            to_tag=self.local_tag,
            body=self.sdp_answer(),
            content_type="application/sdp",
            headers=[
                ("Contact", self.contact()),
                ("Allow", ALLOW),
                *session_timer_headers(self.request),
            ],
        )
        self.state = CallState.ANSWERED
        self._respond(self.invite, response)
        self.media.start()

    def end_call(self, code: int | None, reason: str) -> None:
        if self.state == CallState.ENDED:
            return
        if self.state in (CallState.INCOMING, CallState.RINGING):
            final = code or 480
            self._respond(
                self.invite,
                make_response(
                    self.request,
                    final,
                    to_tag=self.local_tag,
                    headers=[("Reason", f'SIP;cause={final};text="{reason}"')],
                ),
            )
        elif self.pending_bye is None and not self.remote_gone:
            try:
                self.send_bye()
            except (KeyError, ValueError, IndexError) as exc:
                # No BYE can be addressed (a From or Contact we cannot parse): the call
                # still ends here, or it would hold its media and table slots for good.
                log.info("call %s: no BYE sent: %s", self.call_id, exc)
        self.finish()

    # -- events from the transaction layer ----------------------------------------------

    def cancelled(self) -> None:
        """CANCEL matched our INVITE; the layer has answered it and sent the 487."""
        if self.state in (CallState.INCOMING, CallState.RINGING):
            self.remote_ended("caller cancelled")
            self.finish()

    def acknowledged(self) -> None:
        if self.state == CallState.ANSWERED:
            self.state = CallState.CONFIRMED

    def bye_received(self, tx: ServerTransaction) -> None:
        """The caller hung up. The 200 waits until the application has stored the message
        (`application_finished`), or `BYE_ANSWER_DEADLINE`, whichever comes first."""
        self.remote_ended("caller hung up")
        if self.state == CallState.ENDED:
            self._respond(tx, make_response(tx.request, 200))
            return
        self.pending_bye = tx
        loop = asyncio.get_running_loop()
        self._bye_deadline = loop.call_later(BYE_ANSWER_DEADLINE, self._answer_bye_late)

    def offer_received(self, negotiated: NegotiatedAudio, reachable: bool = True) -> bytes:
        """A re-INVITE or UPDATE offer: use it and return our new answer.

        `reachable=False` (an address our RTP socket cannot send to, accepted for
        nat=comedia) keeps sending to where the caller's RTP comes from.
        """
        latched = self.media.remote
        self.negotiated = negotiated
        self.media.configure(negotiated)
        if not reachable:
            self.media.remote = latched
        self.sdp_version += 1
        return self.sdp_answer()

    def application_finished(self) -> None:
        """The application returned: end the call and answer a BYE that waited for it."""
        if self.state != CallState.ENDED:
            self.channel.hangup(None, "application finished")
        self._answer_pending_bye()

    def _answer_bye_late(self) -> None:
        if self.pending_bye is not None:
            log.warning("call %s: answering BYE before the application finished", self.call_id)
            self._answer_pending_bye()

    def _answer_pending_bye(self) -> None:
        if self._bye_deadline is not None:
            self._bye_deadline.cancel()
            self._bye_deadline = None
        if self.pending_bye is not None:
            bye, self.pending_bye = self.pending_bye, None
            self._respond(bye, make_response(bye.request, 200))

    # -- lifecycle ----------------------------------------------------------------------

    def remote_ended(self, reason: str) -> None:
        self.remote_gone = True
        self.channel.remote_hangup(reason)

    def finish(self) -> None:
        if self.state != CallState.ENDED:
            self.state = CallState.ENDED
            self.media.close()
            self.host.forget(self)

    def remote_target(self) -> Address | None:
        try:
            return Address.parse_many(self.request.headers["Contact"])[0]
        except (KeyError, ValueError, IndexError):
            return None

    # -- requests we send ---------------------------------------------------------------

    def build_bye(self) -> tuple[Request, Addr]:
        """BYE within the dialog (RFC 3261 15.1.1) and where to send it: through the
        Record-Route set, else to where the INVITE came from (chan_sip's default
        nat=force_rport)."""
        request = self.request
        contact = self.remote_target()
        uri = contact.uri if contact else Address.parse(request.headers["From"]).uri
        self.local_cseq += 1
        bye = Request("BYE", uri)
        routes = request.headers.getlist("Record-Route")
        destination = self._bye_destination(routes, contact)
        bye.headers.add("Via", self.host.via_for(self.transport, destination[0]))
        for route in routes:
            bye.headers.add("Route", route)
        bye.headers.add("Max-Forwards", "70")
        to_value = request.headers["To"]
        if tag_of(to_value) is None:
            to_value = f"{to_value};tag={self.local_tag}"
        bye.headers.add("From", to_value)
        bye.headers.add("To", request.headers["From"])
        bye.headers.add("Call-ID", self.call_id)
        bye.headers.add("CSeq", f"{self.local_cseq} BYE")
        bye.headers.add("User-Agent", SERVER_NAME)
        return bye, destination

    def _bye_destination(self, routes: list[str], contact: Address | None) -> Addr:
        destination = self.invite.source
        if routes and not self.transport.reliable:
            destination = _first_hop(routes[0]) or destination
        elif self.transport.reliable and contact is not None:
            if not self.transport.connected(destination):
                # The caller closed its connection: open one to its Contact, not to the
                # ephemeral port it used (RFC 3261 18.2.2).
                default_port = 5061 if self.transport.name == "TLS" else 5060
                destination = (contact.uri.host.strip("[]"), contact.uri.port or default_port)
        return destination

    def send_bye(self) -> None:
        bye, destination = self.build_bye()
        self.host.send_request(self.transport, bye, destination)


def _first_hop(route: str) -> Addr | None:
    """The address of a Record-Route entry we send to first (a loose router, RFC 3261 16.12)."""
    try:
        uri = Address.parse_many(route)[0].uri
    except (ValueError, IndexError):
        return None
    return (uri.host.strip("[]"), uri.port or 5060)
