"""The sans-I/O abuse limits (channels/sip/limits.py) and the transaction layer's screen."""

from __future__ import annotations

import pytest
from sipmessage import Request

from channels.sip.limits import (
    ConnectionLimits,
    ExemptAddresses,
    FloodLimiter,
    RecentTable,
    TokenBucket,
    UserLockout,
    Verdict,
    parse_network,
)
from channels.sip.transactions import RequestReceived, TransactionLayer

from .test_sip_transactions import CLIENT, events, sent, sip_request

A, B = "192.0.2.7", "198.51.100.9"

# -- TokenBucket ----------------------------------------------------------------------------


def test_bucket_gives_its_burst_then_its_rate() -> None:
    bucket = TokenBucket(rate=10, burst=5, now=0.0)
    assert [bucket.take(0.0) for _ in range(6)] == [True] * 5 + [False]
    assert bucket.take(0.1) and not bucket.take(0.1)  # 0.1 s at 10/s: one token
    assert not bucket.take(0.15)
    # A long pause refills to the burst, never beyond it.
    assert [bucket.take(100.0) for _ in range(6)] == [True] * 5 + [False]


def test_bucket_survives_a_clock_going_backwards() -> None:
    bucket = TokenBucket(rate=1, burst=1, now=10.0)
    assert bucket.take(10.0)
    assert not bucket.take(5.0)  # no refill from a negative interval
    assert bucket.take(6.0)


# -- FloodLimiter ---------------------------------------------------------------------------


def test_flood_is_answered_503_a_few_times_then_ignored() -> None:
    limiter = FloodLimiter(rate=10, burst=20, block=10, replies=3)
    verdicts = [limiter.check(A, 0.0) for _ in range(100)]
    assert verdicts[:20] == [Verdict.ALLOW] * 20
    assert verdicts[20:23] == [Verdict.LIMITED, Verdict.REFUSE, Verdict.REFUSE]
    assert set(verdicts[23:]) == {Verdict.DROP}
    assert limiter.refused == 3 and limiter.dropped == 77
    assert limiter.retry_after == 10
    assert limiter.check(B, 0.0) is Verdict.ALLOW  # another source is not affected


def test_flood_that_goes_on_stays_ignored_and_a_quiet_source_is_let_in() -> None:
    limiter = FloodLimiter(rate=10, burst=5, block=10, replies=1)
    for _ in range(6):
        limiter.check(A, 0.0)
    # Keeps sending at 100/s for a minute: every request dropped (the bucket would have
    # tokens again, but the limit is pushed on by each request).
    for step in range(6000):
        assert limiter.check(A, 0.01 * step + 0.01) is Verdict.DROP
    assert limiter.limited(A, 60.0)
    # Honours Retry-After: quiet for 10 s, then it is served.
    assert not limiter.limited(A, 70.1)
    assert limiter.check(A, 70.1) is Verdict.ALLOW


def test_recent_table_forgets_the_least_recently_used_first() -> None:
    table: RecentTable[list[str]] = RecentTable(2)
    a = table.use("a", list)
    table.use("b", list)
    assert table.use("a", list) is a  # found, not made again, and now the newest
    table.use("c", list)
    assert list(table) == ["a", "c"]


def test_flood_limiter_remembers_a_bounded_number_of_sources() -> None:
    limiter = FloodLimiter(rate=1, burst=1, block=10, max_tracked=100)
    for index in range(10_000):
        limiter.check(f"10.{index // 65536}.{index // 256 % 256}.{index % 256}", 0.0)
    assert len(limiter) == 100
    # The oldest were forgotten first: the last source is still remembered as limited.
    last = "10.0.39.15"
    assert limiter.check(last, 0.0) is not Verdict.ALLOW


def test_zero_rate_means_no_limit() -> None:
    limiter = FloodLimiter(rate=0, burst=1)
    assert all(limiter.check(A, 0.0) is Verdict.ALLOW for _ in range(10_000))
    assert len(limiter) == 0


# -- UserLockout ----------------------------------------------------------------------------


def test_user_attacked_from_many_addresses_is_locked_and_released() -> None:
    lockout = UserLockout(max_failures=5, window=60, lockout=30)
    starts = [lockout.failed("1000", f"203.0.113.{n}", float(n)) for n in range(5)]
    assert starts == [False] * 4 + [True]  # one log line, when the lock starts
    assert lockout.locked("1000", "203.0.113.99", 4.0) == pytest.approx(30.0)
    assert lockout.locked("1000", "203.0.113.99", 33.9) is not None
    assert lockout.locked("1000", "203.0.113.99", 34.0) is None
    assert lockout.locked("1001", "203.0.113.99", 10.0) is None  # other users are not


def test_failures_spread_wider_than_the_window_do_not_lock() -> None:
    lockout = UserLockout(max_failures=3, window=10, lockout=30)
    for t in (0.0, 6.0, 12.0, 18.0, 24.0):
        assert not lockout.failed("1000", f"203.0.113.{int(t)}", t)
    assert lockout.locked("1000", "203.0.113.200", 24.0) is None


def test_the_users_own_phone_is_not_locked_out() -> None:
    lockout = UserLockout(max_failures=3, window=60, lockout=60, trust_for=3600)
    lockout.succeeded("1000", "192.0.2.50", 0.0)  # its phone registers
    for n in range(3):
        lockout.failed("1000", f"203.0.113.{n}", 100.0 + n)
    assert lockout.locked("1000", "203.0.113.77", 103.0) is not None
    assert lockout.locked("1000", "192.0.2.50", 103.0) is None
    # Its own failures (a stale password) do not count toward a lock.
    lockout.succeeded("1001", "192.0.2.51", 0.0)
    assert not any(lockout.failed("1001", "192.0.2.51", 1.0 + n) for n in range(10))
    # Trust ends `trust_for` after its last success.
    for n in range(3):
        lockout.failed("1000", f"203.0.113.{n}", 5000.0 + n)
    assert lockout.locked("1000", "192.0.2.50", 5003.0) is not None


def test_user_lockout_is_bounded() -> None:
    lockout = UserLockout(max_failures=3, window=60, lockout=60, max_tracked=50)
    for n in range(5000):
        lockout.failed(f"scan{n}", A, 0.0)
    assert len(lockout) == 50
    # Idle entries go once their windows have passed.
    lockout.failed("late", A, 10_000.0)
    assert len(lockout) == 1


# -- ExemptAddresses ------------------------------------------------------------------------


def test_exempt_networks_peers_and_learned_hosts() -> None:
    exempt = ExemptAddresses(["10.1.0.0/16", "2001:db8::1"], peers=["192.0.2.20", "dynamic"])
    assert "10.1.2.3" in exempt and "10.2.0.1" not in exempt
    assert "2001:db8::1" in exempt and "[2001:db8::1]" in exempt and "2001:db8::2" not in exempt
    assert "192.0.2.20" in exempt and "::ffff:192.0.2.20" in exempt
    assert A not in exempt
    exempt.learn(A)
    exempt.learn("pbx.example.com")  # a name is not learned
    assert A in exempt
    exempt.set_peers([])  # a reload dropped the peer
    assert "192.0.2.20" not in exempt and A in exempt


def test_exempt_learned_hosts_are_bounded() -> None:
    exempt = ExemptAddresses(max_learned=10)
    for n in range(100):
        exempt.learn(f"10.0.0.{n}")
    assert "10.0.0.99" in exempt and "10.0.0.0" not in exempt


def test_parse_network_refuses_what_is_not_an_address() -> None:
    assert str(parse_network("192.0.2.1/24")) == "192.0.2.0/24"
    for bad in ("pbx.example.com", "10.0.0.0/33", "", "1.2.3"):
        with pytest.raises(ValueError, match="not an IP address or network"):
            parse_network(bad)


# -- ConnectionLimits -----------------------------------------------------------------------


def test_connections_bounded_in_total_per_address_and_unauthenticated() -> None:
    limits = ConnectionLimits(max_total=5, max_per_ip=2, auth_limit=3, auth_timeout=30)
    limits.opened((A, 1), A, 0.0)
    limits.opened((A, 2), A, 0.0)
    assert "tcpmaxconnectionsperip=2" in (limits.refusal(A) or "")
    assert limits.refusal(A, exempt=True) is None
    assert limits.evict_for_new() is None
    limits.opened((B, 1), B, 0.0)
    # At tcpauthlimit the oldest unauthenticated connection makes room.
    assert limits.refusal("192.0.2.99") is None and limits.evict_for_new() == (A, 1)
    assert limits.authenticated((B, 1)) and not limits.authenticated((B, 1))
    assert limits.evict_for_new() is None
    limits.opened(("192.0.2.99", 1), "192.0.2.99", 0.0, authenticated=True)
    limits.opened(("192.0.2.98", 1), "192.0.2.98", 0.0, authenticated=True)
    assert "tcpmaxconnections=5" in (limits.refusal("192.0.2.97", exempt=True) or "")
    limits.closed((A, 1))
    limits.closed((A, 1))  # twice is harmless
    assert len(limits) == 4 and limits.unauthenticated == 1
    assert limits.refusal(A) is None


def test_unauthenticated_connections_are_overdue_after_the_timeout() -> None:
    limits = ConnectionLimits(auth_timeout=30)
    limits.opened((A, 1), A, 0.0)
    limits.opened((B, 1), B, 0.0)
    limits.authenticated((B, 1))
    assert limits.overdue(29.9) == []
    assert limits.overdue(30.0) == [(A, 1)]
    assert ConnectionLimits(auth_timeout=0).overdue(1e9) == []


# -- the transaction layer's screen -----------------------------------------------------------


def test_screen_refuses_statelessly_or_drops_before_a_transaction_exists() -> None:
    layer = TransactionLayer()
    limiter = FloodLimiter(rate=1, burst=2, block=7, replies=1)
    seen: list[str] = []

    def screen(request: Request, source: tuple[str, int], now: float) -> tuple[Verdict, int]:
        seen.append(request.method)
        return limiter.check(source[0], now), limiter.retry_after

    layer.screen = screen
    for n in range(5):
        layer.receive_datagram(sip_request("REGISTER", branch=f"z9hG4bKr{n}"), CLIENT, 0.0)
    received = [e for e in events(layer) if isinstance(e, RequestReceived)]
    assert len(received) == 2
    replies = sent(layer)
    assert [m.code for m, _ in replies] == [503]  # type: ignore[union-attr]
    assert replies[0][0].headers["Retry-After"] == "7"
    assert layer.transaction_count == 2  # nothing kept for the refused and dropped ones
    # A retransmission of an accepted request is absorbed without asking the screen again.
    layer.receive_datagram(sip_request("REGISTER", branch="z9hG4bKr0"), CLIENT, 0.1)
    assert seen.count("REGISTER") == 5
