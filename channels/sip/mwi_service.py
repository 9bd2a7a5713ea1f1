"""Message-waiting indication: who gets a NOTIFY, and when.

The channel does not count messages. The server hands it a `counter` (mailboxes -> (new,
old)); we call it when a phone registers or subscribes, when the server says a mailbox
changed, and on a poll (so a deposit made by another server on the same database reaches
our phones). A NOTIFY is sent when the counts a phone last saw differ, and always on
REGISTER and SUBSCRIBE, as chan_sip does. Phones with `subscribemwi=yes` only get NOTIFYs
through their subscription.

A change event recounts only the mailbox named (one recount at a time per mailbox: events
arriving meanwhile are folded into one more recount, so an older count never overwrites a
newer one). The poll, the safety net for rows changed behind our back, counts every watched
mailbox with `each_counter` (one query for all of them) and reports mailboxes whose counts
moved since the previous poll to `on_poll_change`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sipmessage import Address, Request

from storage.odbc import DatabaseError

from ..tasks import BackgroundTasks
from .messages import make_response, new_branch, new_call_id, new_tag
from .mwi import (
    Subscription,
    SubscriptionManager,
    build_notify,
    build_unsolicited_notify,
    header_tag,
    message_summary,
)
from .peers import Peer
from .registrar import Binding
from .registration import Registrations
from .transactions import ClientTransaction, ServerTransaction

log = logging.getLogger(__name__)

Mailboxes = list[tuple[str, str]]
Counter = Callable[[Mailboxes], Awaitable[tuple[int, int]]]
# (new, old) of each distinct (mailbox, context) given, in one go.
EachCounter = Callable[[Mailboxes], Awaitable[dict[tuple[str, str], tuple[int, int]]]]


@dataclass
class MwiService:
    endpoint: object  # SipEndpoint
    registrations: Registrations
    counter: Counter
    poll_interval: float = 5.0  # 0: no polling
    each_counter: EachCounter | None = None  # without it the poll counts phone by phone
    on_poll_change: Callable[[str, str], None] | None = None  # (mailbox, context)
    subscriptions: SubscriptionManager = field(default_factory=SubscriptionManager)
    # Counts last sent by unsolicited NOTIFY, per peer.
    _sent: dict[str, tuple[int, int]] = field(default_factory=dict)
    # In-dialog NOTIFYs awaiting their answer (transactions hash by identity).
    _pending: dict[ClientTransaction, Subscription] = field(default_factory=dict)
    _tasks: BackgroundTasks = field(default_factory=BackgroundTasks)
    # Mailboxes being recounted, and those changed again meanwhile.
    _recounting: set[tuple[str, str]] = field(default_factory=set)
    _dirty: set[tuple[str, str]] = field(default_factory=set)
    # Per-mailbox counts of the last poll.
    _polled: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)

    def start(self) -> None:
        self.registrations.on_registered = self.peer_registered
        self._tasks.spawn(self._housekeeping())

    def stop(self) -> None:
        self._tasks.cancel()

    async def _count(self, mailboxes: Mailboxes) -> tuple[int, int] | None:
        try:
            return await self.counter(mailboxes)
        except DatabaseError as exc:
            log.warning("MWI: cannot count %s: %s", mailboxes, exc)
            return None

    # -- SUBSCRIBE ------------------------------------------------------------------------

    def handle_subscribe(self, transport: object, request: Request, tx: ServerTransaction) -> None:
        self._tasks.spawn(self._subscribe(transport, request, tx))

    async def _subscribe(self, transport: object, request: Request, tx: ServerTransaction) -> None:
        """Refreshes of a subscription we hold are authenticated by their dialog; anything
        else is a new subscription and goes through the digest challenge."""
        endpoint = self.endpoint
        try:
            user = Address.parse(request.headers["From"]).uri.user or ""
            to_tag = header_tag(request.headers["To"])
        except ValueError:
            endpoint.respond(transport, tx, make_response(request, 400, "Bad From or To"))
            return
        in_dialog = to_tag is not None
        peer: Peer | None
        if in_dialog:
            existing = self.subscriptions.dialog_of(request)
            if existing is None:
                # A To tag, but not one of our dialogs (or its Call-ID / From tag differ).
                log.info("SUBSCRIBE from %s:%s matches no MWI subscription: 481", *tx.source[:2])
                endpoint.respond(transport, tx, make_response(request, 481))
                return
            peer = await self.registrations.peers.find(existing.peer_name)
        else:
            peer = await self.registrations.authenticate(transport, request, tx, user)
            if peer is None:
                return
        if peer is not None and not self.registrations.transport_allowed(
            transport, request, tx, peer
        ):
            return
        mailboxes = peer.mailbox if peer is not None else []
        peer_name = peer.name if peer is not None else user
        now = transport.now()
        outcome = self.subscriptions.subscribe(
            request, tx.source, transport.name.lower(), peer_name, mailboxes, now
        )
        contact = endpoint.contact_for(transport, request.uri.user or "asterisk")
        endpoint.respond(transport, tx, outcome.response(request, contact=contact))
        subscription = outcome.subscription
        if outcome.code // 100 != 2 or subscription is None:
            return
        if not in_dialog:
            log.info("peer %s subscribed to MWI for %s", peer_name, mailboxes)
        await self._notify_subscription(subscription, peer, force=True)

    async def _notify_subscription(
        self,
        subscription: Subscription,
        peer: Peer | None,
        force: bool,
        counts: tuple[int, int] | None = None,
    ) -> None:
        if counts is None:
            counts = await self._count(subscription.mailboxes)
        counts = counts or subscription.last_counts or (0, 0)
        if not force and counts == subscription.last_counts:
            return
        transport = self.endpoint.transport_named(subscription.transport)
        if transport is None:
            return
        body = self._body(counts, peer, transport)
        now = transport.now()
        request = build_notify(
            subscription,
            body,
            local_host=transport.host,
            local_port=transport.port,
            branch=new_branch(),
            now=now,
        )
        subscription.last_counts = counts
        tx = transport.layer.send_request(request, subscription.source, now)
        self._pending[tx] = subscription
        transport.flush()

    # -- unsolicited NOTIFY to registered peers ------------------------------------------

    def peer_registered(self, peer: Peer, binding: Binding) -> None:
        """chan_sip sends MWI on every successful REGISTER (refreshes too): in the peer's
        subscription if it has one, else out of dialog unless `subscribemwi`."""
        subscriptions = self.subscriptions.of_peer(peer.name)
        if subscriptions:
            for subscription in subscriptions:
                self._tasks.spawn(self._notify_subscription(subscription, peer, force=True))
        elif peer.mailbox and not peer.subscribemwi:
            self._tasks.spawn(self._notify_peer(peer, binding, force=True))

    def _wants_unsolicited(self, peer: Peer) -> bool:
        """chan_sip sends out-of-dialog NOTIFYs only to a peer without an MWI subscription
        (its mwipvt), and never with subscribemwi=yes; else a subscribed phone would get
        every change twice."""
        return (
            bool(peer.mailbox)
            and not peer.subscribemwi
            and not self.subscriptions.of_peer(peer.name)
        )

    async def _notify_peer(
        self, peer: Peer, binding: Binding, force: bool, counts: tuple[int, int] | None = None
    ) -> None:
        if counts is None:
            counts = await self._count(peer.mailbox)
        if counts is None or (not force and self._sent.get(peer.name) == counts):
            return
        transport = self.endpoint.transport_named(binding.transport)
        if transport is None:
            return
        body = self._body(counts, peer, transport)
        request = build_unsolicited_notify(
            binding.uri,
            body,
            local_host=transport.host,
            local_port=transport.port,
            branch=new_branch(),
            from_user=peer.options.get("mwi_from") or peer.vmexten,
            call_id=new_call_id(transport.host),
            tag=new_tag(),
            transport=transport.name.lower(),
        )
        self._sent[peer.name] = counts
        transport.layer.send_request(request, binding.address, transport.now())
        transport.flush()

    def _body(self, counts: tuple[int, int], peer: Peer | None, transport: object) -> bytes:
        return message_summary(
            counts[0],
            counts[1],
            vmexten=peer.vmexten if peer is not None else "asterisk",
            domain=(peer.fromdomain if peer is not None and peer.fromdomain else transport.host),
            port=transport.port,
            transport=transport.name.lower(),
            buggymwi=peer.buggymwi if peer is not None else False,
        )

    # -- changes --------------------------------------------------------------------------

    def mailbox_changed(self, mailbox: str, context: str) -> None:
        """A mailbox changed (here or on another server): tell every phone that watches it."""
        key = (mailbox, context)
        if key in self._recounting:
            self._dirty.add(key)
            return
        self._recounting.add(key)
        self._tasks.spawn(self._recount(key))

    def recount_all(self) -> None:
        """Change events may have been lost (the feed reconnected): poll now."""
        self._tasks.spawn(self.poll())

    def refresh(self, mailbox: str | None = None, context: str = "default") -> None:
        """The console's `mwi refresh`: send the phones watching mailbox@context (every
        watched mailbox when None) their counts again even if unchanged (a lost lamp)."""
        for subscription in self.subscriptions.subscriptions():
            if mailbox is None or (mailbox, context) in subscription.mailboxes:
                subscription.last_counts = None
        for peer in self.registrations.peers.in_memory():
            if mailbox is None or (mailbox, context) in peer.mailbox:
                self._sent.pop(peer.name, None)
        if mailbox is None:
            self.recount_all()
        else:
            self.mailbox_changed(mailbox, context)

    async def _recount(self, key: tuple[str, str]) -> None:
        try:
            while True:
                self._dirty.discard(key)
                await self._mailbox_changed(*key)
                if key not in self._dirty:
                    return
        finally:
            self._recounting.discard(key)

    async def _mailbox_changed(self, mailbox: str, context: str) -> None:
        for subscription in self.subscriptions.for_mailbox(mailbox, context):
            peer = await self.registrations.peers.find(subscription.peer_name)
            await self._notify_subscription(subscription, peer, force=False)
        for peer in self.registrations.peers.watching(mailbox, context):
            if self._wants_unsolicited(peer):
                binding = self.registrations.registrar.binding(peer.name)
                if binding is not None:
                    await self._notify_peer(peer, binding, force=False)

    async def poll(self) -> None:
        """Recount every watched mailbox and notify where it changed (rows changed behind our
        back: an Asterisk box, an admin's SQL)."""
        if self.each_counter is None:
            await self._poll_one_by_one()
            return
        subscriptions = list(self.subscriptions.subscriptions())
        unsolicited = [
            (peer, binding)
            for peer in self.registrations.peers.in_memory()
            if self._wants_unsolicited(peer)
            and (binding := self.registrations.registrar.binding(peer.name)) is not None
        ]
        watched = list(
            dict.fromkeys(
                [box for s in subscriptions for box in s.mailboxes]
                + [box for peer, _ in unsolicited for box in peer.mailbox]
            )
        )
        if not watched:
            return
        try:
            each = await self.each_counter(watched)
        except DatabaseError as exc:
            log.warning("MWI poll: cannot count %d mailbox(es): %s", len(watched), exc)
            return
        previous, self._polled = self._polled, each
        if self.on_poll_change is not None:
            for key, counts in each.items():
                if key in previous and previous[key] != counts:
                    self.on_poll_change(*key)
        # Most phones' counts did not move: compare here, not in a coroutine per phone.
        for subscription in subscriptions:
            counts = _sum(each, subscription.mailboxes)
            if counts != subscription.last_counts:
                peer = await self.registrations.peers.find(subscription.peer_name)
                await self._notify_subscription(subscription, peer, force=False, counts=counts)
        for peer, binding in unsolicited:
            counts = _sum(each, peer.mailbox)
            if counts != self._sent.get(peer.name):
                await self._notify_peer(peer, binding, force=False, counts=counts)

    async def _poll_one_by_one(self) -> None:
        for subscription in self.subscriptions.subscriptions():
            peer = await self.registrations.peers.find(subscription.peer_name)
            await self._notify_subscription(subscription, peer, force=False)
        for peer in self.registrations.peers.in_memory():
            if self._wants_unsolicited(peer):
                binding = self.registrations.registrar.binding(peer.name)
                if binding is not None:
                    await self._notify_peer(peer, binding, force=False)

    def notify_result(self, transaction: ClientTransaction, code: int | None) -> None:
        """A NOTIFY we sent was answered (or timed out): drop dead subscriptions.

        Only a subscription that ends is logged (481, 408, no answer): a 200 to a NOTIFY of a
        live subscription is the normal case and says nothing.
        """
        subscription = self._pending.pop(transaction, None)
        if subscription is not None:
            if self.subscriptions.notify_result(subscription, code):
                answer = "no answer" if code is None else str(code)
                log.info("MWI subscription of %s ended (%s)", subscription.peer_name, answer)
            return
        if transaction.request.method == "NOTIFY" and (code is None or code >= 300):
            log.info("unsolicited NOTIFY to %s failed (%s)", transaction.destination, code)

    async def _housekeeping(self) -> None:
        elapsed = 0.0
        while True:
            await asyncio.sleep(1.0)
            elapsed += 1.0
            try:
                for subscription in self.subscriptions.expire(asyncio.get_running_loop().time()):
                    peer = await self.registrations.peers.find(subscription.peer_name)
                    await self._notify_subscription(subscription, peer, force=True)
                if self.poll_interval and elapsed >= self.poll_interval:
                    elapsed = 0.0
                    await self.poll()
            except Exception:  # noqa: BLE001 - keep the loop alive
                log.exception("MWI housekeeping failed")


def _sum(each: dict[tuple[str, str], tuple[int, int]], mailboxes: Mailboxes) -> tuple[int, int]:
    """Counts of a mailbox list; one listed twice counts twice, as in Asterisk."""
    new = old = 0
    for box in mailboxes:
        box_new, box_old = each.get(box, (0, 0))
        new, old = new + box_new, old + box_old
    return new, old
