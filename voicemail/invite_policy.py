"""Who may call, and with which options: chan_sip's INVITE checks, as a `CallPolicy`.

A caller that is a peer (by From user, or a static peer by its host address) passes its ACL,
its `transport=` list and its digest unless `insecure=invite`, and calls in the peer's context
with the peer's `dtmfmode`, `language`, `callerid` and `rtptimeout`; anyone else is a guest in
sip.conf's `context` while `allowguest=yes`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sipmessage import Address, Request

from channels.sip.endpoint import CallPolicy
from channels.sip.messages import make_response, new_tag
from channels.sip.peers import Peer
from channels.sip.registration import Registrations
from channels.sip.transactions import ServerTransaction
from storage.odbc import DatabaseError

from .callpath import CallPathDatabase
from .config import SipSettings

log = logging.getLogger(__name__)

# Guests have no peer options; "auto" takes keys from RFC 4733 when offered, else in-band.
GUEST_DTMFMODE = "auto"


def peer_policy(peer: Peer) -> CallPolicy:
    caller_id = None
    if peer.callerid_name or peer.callerid_num:
        caller_id = (peer.callerid_name, peer.callerid_num)
    return CallPolicy(
        peer.context,
        rtp_timeout=float(peer.rtptimeout) if peer.rtptimeout else None,
        dtmfmode=peer.dtmfmode,
        language=peer.language,
        caller_id=caller_id,
    )


class InvitePolicy:
    def __init__(
        self,
        sip: Callable[[], SipSettings],
        registrations: Registrations,
        call_path: CallPathDatabase,
    ) -> None:
        self._sip = sip  # the settings in force now (a reload replaces them)
        self.registrations = registrations
        self.call_path = call_path

    async def _find(self, user: str) -> Peer | None:
        """The peer named by the From user, within the call path's deadline."""
        directory = self.registrations.peers
        if user in directory.static:
            return directory.static[user]
        try:
            return await self.call_path.read(directory.find(user))
        except DatabaseError as exc:
            log.warning("INVITE: peer lookup of %s failed (%s); treating as a guest", user, exc)
            return None

    async def __call__(
        self, transport: object, request: Request, tx: ServerTransaction
    ) -> CallPolicy | None:
        sip = self._sip()
        endpoint = self.registrations.endpoint
        directory = self.registrations.peers
        source_ip = tx.source[0]
        try:
            user = Address.parse(request.headers["From"]).uri.user or ""
        except ValueError:
            user = ""
        peer = await self._find(user) if user else None
        if peer is None:
            peer = next((p for p in directory.static.values() if p.host == source_ip), None)
        if peer is None:
            if sip.allowguest:
                return CallPolicy(sip.context, dtmfmode=GUEST_DTMFMODE)
            log.info("INVITE from %s (%s) refused: not a peer, allowguest=no", user, source_ip)
            endpoint.respond(transport, tx, make_response(request, 403, to_tag=new_tag()))
            return None
        if not peer.acl.allows(source_ip):
            log.info("INVITE from peer %s at %s refused by its ACL", peer.name, source_ip)
            endpoint.respond(transport, tx, make_response(request, 403, to_tag=new_tag()))
            return None
        if "invite" not in peer.insecure and peer.requires_auth:
            authenticated = await self.registrations.authenticate(transport, request, tx, peer.name)
            if authenticated is None:
                return None
            peer = authenticated
        if not self.registrations.transport_allowed(transport, request, tx, peer):
            return None
        return peer_policy(peer)
