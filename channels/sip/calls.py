"""One incoming call: its INVITE dialog, its RTP session and the `Channel` the application sees.

States (h11 style, named, with the transitions the endpoint makes):
INCOMING (100 sent) -> RINGING (180) -> ANSWERED (200 sent) -> CONFIRMED (ACK) -> ENDED;
INCOMING/RINGING -> ENDED by CANCEL or a final error; any -> ENDED by BYE either way.
"""

from __future__ import annotations

import enum
import random
from typing import TYPE_CHECKING

from sipmessage import Address, Request

from ..channel import CallerInfo, Channel
from ..media import RtpSession
from ..sdp import NegotiatedAudio, build_answer
from .messages import ALLOW, make_response, new_tag, tag_of
from .transactions import ServerTransaction

if TYPE_CHECKING:
    from .endpoint import SipEndpoint
    from .transport import SipTransport


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
    if not interval.isdigit():
        return []
    headers = [("Session-Expires", f"{interval};refresher=uac")]
    supported = ",".join(request.headers.getlist("Supported")).lower()
    if "timer" in supported:
        headers.append(("Require", "timer"))
    return headers


class SipCall:
    """The `CallControl` of one channel."""

    def __init__(
        self,
        endpoint: SipEndpoint,
        transport: SipTransport,
        invite: ServerTransaction,
        negotiated: NegotiatedAudio,
        media: RtpSession,
        info: CallerInfo,
    ) -> None:
        self.endpoint = endpoint
        self.transport = transport
        self.invite = invite
        self.negotiated = negotiated
        self.media = media
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
        self.remote_gone = False

    @property
    def dialog_key(self) -> tuple[str, str, str]:
        return (self.call_id, self.local_tag, self.remote_tag)

    def contact(self) -> str:
        return self.endpoint.contact_for(self.transport, self.channel.info.exten)

    def sdp_answer(self) -> bytes:
        return build_answer(
            self.negotiated,
            self.endpoint.rtp_host,
            self.media.local_port,
            self.session_id,
            self.sdp_version,
        )

    # -- CallControl --------------------------------------------------------------------

    async def ring(self) -> None:
        if self.state == CallState.INCOMING:
            self.state = CallState.RINGING
            self.endpoint.respond(
                self.transport,
                self.invite,
                make_response(self.request, 180, to_tag=self.local_tag),
            )

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
        self.endpoint.respond(self.transport, self.invite, response)
        self.media.start()

    def end_call(self, code: int | None, reason: str) -> None:
        if self.state == CallState.ENDED:
            return
        if self.state in (CallState.INCOMING, CallState.RINGING):
            final = code or 480
            self.endpoint.respond(
                self.transport,
                self.invite,
                make_response(
                    self.request,
                    final,
                    to_tag=self.local_tag,
                    headers=[("Reason", f'SIP;cause={final};text="{reason}"')],
                ),
            )
        elif self.pending_bye is None and not self.remote_gone:
            self.endpoint.send_bye(self)
        self.finish()

    # -- lifecycle ----------------------------------------------------------------------

    def remote_ended(self, reason: str) -> None:
        self.remote_gone = True
        self.channel.remote_hangup(reason)

    def finish(self) -> None:
        if self.state != CallState.ENDED:
            self.state = CallState.ENDED
            self.media.close()
            self.endpoint.forget(self)

    def remote_target(self) -> Address | None:
        try:
            return Address.parse_many(self.request.headers["Contact"])[0]
        except (KeyError, ValueError, IndexError):
            return None
