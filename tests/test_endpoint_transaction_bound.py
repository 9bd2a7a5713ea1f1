"""The transaction layer's bound on open server transactions (stateless 503 past it)."""

from __future__ import annotations

from channels.sip.messages import make_response, tag_of
from channels.sip.transactions import T1, CancelReceived, RequestReceived, TransactionLayer

from .test_sip_transactions import (
    CLIENT,
    ack,
    advance,
    events,
    invite,
    sent,
    sent_codes,
    sip_request,
    start_invite,
)

# -- a bound on open server transactions -----------------------------------------------------


def test_full_table_answers_new_requests_with_stateless_503_and_keeps_nothing() -> None:
    layer = TransactionLayer(max_transactions=2)
    start_invite(layer, branch="z9hG4bKfirst", call_id="first")
    layer.receive_datagram(sip_request("OPTIONS", branch="z9hG4bKopt"), CLIENT, 0.1)
    events(layer)
    sent(layer)
    for index in range(100):
        layer.receive_datagram(
            invite(branch=f"z9hG4bKover{index}", call_id=f"over{index}"), CLIENT, 0.2
        )
    replies = sent(layer)
    assert len(replies) == 100
    assert {m.code for m, _ in replies} == {503}  # type: ignore[union-attr]
    assert all(m.headers["Retry-After"].isdigit() for m, _ in replies)
    assert all(tag_of(m.headers["To"]) for m, _ in replies)
    assert events(layer) == []  # the user agent never hears of them
    assert layer.transaction_count == 2 and layer.overload_count == 100
    # The ACK for a stateless 503 matches nothing and is dropped.
    layer.receive_datagram(ack(branch="z9hG4bKover0", call_id="over0"), CLIENT, 0.3)
    assert sent(layer) == [] and events(layer) == []


def test_full_table_still_serves_its_own_transactions() -> None:
    layer = TransactionLayer(max_transactions=1)
    start_invite(layer, branch="z9hG4bKonly")
    layer.receive_datagram(invite(branch="z9hG4bKonly"), CLIENT, 0.5)
    assert sent_codes(layer) == [100]  # a retransmission is answered from the transaction
    layer.receive_datagram(sip_request("CANCEL", branch="z9hG4bKonly"), CLIENT, 0.6)
    assert sorted(sent_codes(layer)) == [200, 487]
    assert isinstance(events(layer)[0], CancelReceived)


def test_table_frees_its_slots_when_transactions_end() -> None:
    layer = TransactionLayer(max_transactions=1)
    layer.receive_datagram(sip_request("OPTIONS", branch="z9hG4bKa"), CLIENT, 0.0)
    (event,) = events(layer)
    assert isinstance(event, RequestReceived)
    layer.respond(event.transaction, make_response(event.request, 200), 0.0)
    sent(layer)
    advance(layer, 64 * T1)  # timer J
    layer.receive_datagram(sip_request("OPTIONS", branch="z9hG4bKb"), CLIENT, 64 * T1 + 1)
    assert isinstance(events(layer)[0], RequestReceived)
