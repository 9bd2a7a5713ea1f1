"""Digest authentication of REGISTER/INVITE and the per-address failure limiter."""

from __future__ import annotations

import hashlib

import pytest
from sipmessage import AuthChallenge, Request

from channels.sip.auth import (
    AuthResult,
    FailureLimiter,
    NonceManager,
    NonceState,
    challenge,
    parse_credentials,
    verify,
)
from channels.sip.messages import parse_message

REALM = "asterisk"
SECRET = b"test secret for nonces"


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def digest_response(
    user: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    *,
    realm: str = REALM,
    qop: str | None = "auth",
    nc: str = "00000001",
    cnonce: str = "0a4f113b",
) -> str:
    """The response value a phone computes (RFC 2617 3.2.2.1), written out by hand."""
    ha1 = md5(f"{user}:{realm}:{password}")
    ha2 = md5(f"{method}:{uri}")
    if qop is None:
        return md5(f"{ha1}:{nonce}:{ha2}")
    return md5(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


def credentials(
    user: str,
    password: str,
    nonce: str,
    *,
    method: str = "REGISTER",
    uri: str = "sip:voicemail.example",
    realm: str = REALM,
    qop: str | None = "auth",
    nc: str = "00000001",
    cnonce: str = "0a4f113b",
) -> dict[str, str]:
    creds = {
        "username": user,
        "realm": realm,
        "nonce": nonce,
        "uri": uri,
        "algorithm": "MD5",
        "response": digest_response(
            user, password, method, uri, nonce, realm=realm, qop=qop, nc=nc, cnonce=cnonce
        ),
    }
    if qop is not None:
        creds.update(qop=qop, nc=nc, cnonce=cnonce)
    return creds


def check(
    creds: dict[str, str],
    nonces: NonceManager,
    now: float,
    *,
    method: str = "REGISTER",
    secret: str | None = "s3cret",
    md5secret: str | None = None,
    username: str = "1001",
) -> AuthResult:
    return verify(
        creds,
        method,
        realm=REALM,
        username=username,
        secret=secret,
        md5secret=md5secret,
        nonces=nonces,
        now=now,
    )


@pytest.fixture
def nonces() -> NonceManager:
    return NonceManager(SECRET, lifetime=300)


# -- the digest computation ----------------------------------------------------------------


def test_rfc2617_example_response_is_recognised_as_the_right_password() -> None:
    # RFC 2617 3.5: Mufasa / "Circle Of Life" answers 6629fae49393a05397450978507c4ef1.
    # The nonce is not one of ours, so the right answer only earns a fresh challenge.
    creds = {
        "username": "Mufasa",
        "realm": "testrealm@host.com",
        "nonce": "dcd98b7102dd2f0e8b11d0f600bfb0c093",
        "uri": "/dir/index.html",
        "qop": "auth",
        "nc": "00000001",
        "cnonce": "0a4f113b",
        "response": "6629fae49393a05397450978507c4ef1",
    }
    common = dict(realm="testrealm@host.com", username="Mufasa", md5secret=None, now=0.0)
    nonces = NonceManager(SECRET)
    right = verify(creds, "GET", secret="Circle Of Life", nonces=nonces, **common)
    wrong = verify(creds, "GET", secret="Circle of Life", nonces=nonces, **common)
    assert right is AuthResult.STALE
    assert wrong is AuthResult.FAILED


def test_register_with_qop_auth_and_the_right_password_is_accepted(nonces) -> None:
    nonce = nonces.issue(100.0)
    assert check(credentials("1001", "s3cret", nonce), nonces, 101.0) is AuthResult.OK


def test_register_without_qop_is_accepted(nonces) -> None:
    nonce = nonces.issue(100.0)
    creds = credentials("1001", "s3cret", nonce, qop=None)
    assert check(creds, nonces, 101.0) is AuthResult.OK


def test_invite_digest_uses_the_invite_method(nonces) -> None:
    nonce = nonces.issue(0.0)
    creds = credentials("1001", "s3cret", nonce, method="INVITE", uri="sip:8500@vm.example")
    assert check(creds, nonces, 1.0, method="REGISTER") is AuthResult.FAILED
    assert check(creds, nonces, 1.0, method="INVITE") is AuthResult.OK


def test_digest_uri_need_not_be_the_request_uri(nonces) -> None:
    nonce = nonces.issue(0.0)
    creds = credentials("1001", "s3cret", nonce, uri="sip:whatever.invalid;transport=udp")
    assert check(creds, nonces, 1.0) is AuthResult.OK


def test_md5secret_is_used_as_ha1(nonces) -> None:
    nonce = nonces.issue(0.0)
    ha1 = md5(f"1001:{REALM}:s3cret")
    creds = credentials("1001", "s3cret", nonce)
    assert check(creds, nonces, 1.0, secret=None, md5secret=ha1.upper()) is AuthResult.OK


def test_md5secret_wins_over_secret(nonces) -> None:
    nonce = nonces.issue(0.0)
    creds = credentials("1001", "s3cret", nonce)
    other = md5(f"1001:{REALM}:other")
    assert check(creds, nonces, 1.0, secret="s3cret", md5secret=other) is AuthResult.FAILED


def test_wrong_password_fails(nonces) -> None:
    nonce = nonces.issue(0.0)
    assert check(credentials("1001", "guess", nonce), nonces, 1.0) is AuthResult.FAILED


def test_digest_username_must_be_the_peer_name(nonces) -> None:
    nonce = nonces.issue(0.0)
    creds = credentials("1002", "s3cret", nonce)
    assert check(creds, nonces, 1.0, username="1001") is AuthResult.FAILED


def test_other_realm_fails(nonces) -> None:
    nonce = nonces.issue(0.0)
    creds = credentials("1001", "s3cret", nonce, realm="elsewhere")
    assert check(creds, nonces, 1.0) is AuthResult.FAILED


@pytest.mark.parametrize(
    "change",
    [
        {"qop": "auth-int"},
        {"algorithm": "SHA-256"},
        {"nc": "1"},
        {"cnonce": ""},
        {"response": ""},
        {"uri": None},
        {"nonce": None},
    ],
)
def test_malformed_or_unsupported_credentials_fail(nonces, change) -> None:
    creds = credentials("1001", "s3cret", nonces.issue(0.0))
    for name, value in change.items():
        if value is None:
            del creds[name]
        else:
            creds[name] = value
    assert check(creds, nonces, 1.0) is AuthResult.FAILED


def test_peer_without_secret_needs_no_authentication(nonces) -> None:
    assert check({}, nonces, 0.0, secret="", md5secret=None) is AuthResult.OK


# -- nonces --------------------------------------------------------------------------------


def test_nonce_older_than_its_lifetime_is_stale(nonces) -> None:
    nonce = nonces.issue(1000.0)
    assert nonces.validate(nonce, 1299.0) is NonceState.OK
    assert nonces.validate(nonce, 1301.0) is NonceState.STALE
    assert check(credentials("1001", "s3cret", nonce), nonces, 1301.0) is AuthResult.STALE


def test_stale_nonce_with_wrong_password_fails(nonces) -> None:
    nonce = nonces.issue(0.0)
    assert check(credentials("1001", "guess", nonce), nonces, 1000.0) is AuthResult.FAILED


def test_nonce_from_the_future_is_stale_after_a_clock_jump(nonces) -> None:
    nonce = nonces.issue(5000.0)
    assert nonces.validate(nonce, 100.0) is NonceState.STALE


def test_forged_or_foreign_nonces_are_invalid(nonces) -> None:
    nonce = nonces.issue(10.0)
    tampered = nonce[:-1] + ("0" if nonce[-1] != "0" else "1")
    other_server = NonceManager(b"another secret").issue(10.0)
    assert nonces.validate(tampered, 11.0) is NonceState.INVALID
    assert nonces.validate(other_server, 11.0) is NonceState.INVALID
    assert nonces.validate("abc", 11.0) is NonceState.INVALID
    assert nonces.validate(nonce.upper(), 11.0) is NonceState.INVALID


def test_every_challenge_gets_a_different_nonce(nonces) -> None:
    assert len({nonces.issue(7.0) for _ in range(50)}) == 50


def test_replayed_nonce_count_is_refused(nonces) -> None:
    nonce = nonces.issue(0.0)
    first = credentials("1001", "s3cret", nonce, nc="00000001")
    second = credentials("1001", "s3cret", nonce, nc="00000002")
    assert check(first, nonces, 1.0) is AuthResult.OK
    assert check(first, nonces, 2.0) is AuthResult.STALE  # same header again
    assert check(second, nonces, 3.0) is AuthResult.OK
    assert check(first, nonces, 4.0) is AuthResult.STALE  # going backwards


def test_nonce_without_qop_is_good_for_one_request(nonces) -> None:
    nonce = nonces.issue(0.0)
    creds = credentials("1001", "s3cret", nonce, qop=None)
    assert check(creds, nonces, 1.0) is AuthResult.OK
    assert check(creds, nonces, 2.0) is AuthResult.STALE


def test_nonce_count_zero_is_refused(nonces) -> None:
    nonce = nonces.issue(0.0)
    creds = credentials("1001", "s3cret", nonce, nc="00000000")
    assert check(creds, nonces, 1.0) is AuthResult.STALE


def test_failed_attempt_does_not_use_up_the_nonce(nonces) -> None:
    nonce = nonces.issue(0.0)
    assert check(credentials("1001", "guess", nonce), nonces, 1.0) is AuthResult.FAILED
    assert check(credentials("1001", "s3cret", nonce), nonces, 2.0) is AuthResult.OK


def test_nonce_table_is_bounded_without_opening_replays() -> None:
    nonces = NonceManager(SECRET, lifetime=300, max_tracked=2)
    issued = [nonces.issue(float(t)) for t in (1, 2, 3)]
    for when, nonce in enumerate(issued, start=10):
        assert check(credentials("1001", "s3cret", nonce), nonces, float(when)) is AuthResult.OK
    # The oldest entry was dropped; its nonce (and any older) is now stale, never replayable.
    assert nonces.validate(issued[0], 20.0) is NonceState.STALE
    assert check(credentials("1001", "s3cret", issued[0]), nonces, 20.0) is AuthResult.STALE
    assert nonces.validate(issued[2], 20.0) is NonceState.OK


def test_nonces_past_their_lifetime_are_forgotten() -> None:
    nonces = NonceManager(SECRET, lifetime=10)
    for t in range(100):
        nonce = nonces.issue(float(t))
        assert check(credentials("1001", "s3cret", nonce), nonces, t + 0.5) is AuthResult.OK
    assert len(nonces._used) <= 12


# -- challenge and credentials text ------------------------------------------------------


def test_challenge_offers_md5_with_qop_auth(nonces) -> None:
    nonce = nonces.issue(0.0)
    parsed = AuthChallenge.parse(challenge(REALM, nonce))
    assert parsed.scheme == "Digest"
    assert dict(parsed.parameters) == {
        "algorithm": "MD5",
        "realm": REALM,
        "nonce": nonce,
        "qop": "auth",
    }
    stale = AuthChallenge.parse(challenge(REALM, nonce, stale=True))
    assert stale.parameters["stale"] == "true"


def test_challenge_quotes_the_realm() -> None:
    assert 'realm="a \\"b\\""' in challenge('a "b"', "n")


def test_parse_credentials_reads_quoted_and_token_values() -> None:
    value = (
        'Digest username="1001",realm="asterisk", nonce="abc", '
        'uri="sip:vm.example;transport=udp,x", response="ABCDEF", '
        'algorithm=MD5, cnonce="c\\"q", QOP=auth, nc=00000001'
    )
    assert parse_credentials(value) == {
        "username": "1001",
        "realm": "asterisk",
        "nonce": "abc",
        "uri": "sip:vm.example;transport=udp,x",
        "response": "ABCDEF",
        "algorithm": "MD5",
        "cnonce": 'c"q',
        "qop": "auth",
        "nc": "00000001",
    }


@pytest.mark.parametrize(
    "value",
    [
        "Basic dXNlcjpwYXNz",
        'Digest username="1001", realm',
        'Digest username="1001',
        'Digest username="1001", username="1002"',
        "",
    ],
)
def test_parse_credentials_refuses_malformed_headers(value) -> None:
    with pytest.raises(ValueError):
        parse_credentials(value)


def test_register_from_a_phone_authenticates_end_to_end(nonces) -> None:
    nonce = nonces.issue(50.0)
    uri = "sip:192.0.2.1"
    response = digest_response("1001", "s3cret", "REGISTER", uri, nonce, cnonce="7a3e")
    text = (
        f"REGISTER {uri} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-1;rport\r\n"
        "From: <sip:1001@192.0.2.1>;tag=a1\r\n"
        "To: <sip:1001@192.0.2.1>\r\n"
        "Call-ID: reg-1@192.0.2.10\r\n"
        "CSeq: 2 REGISTER\r\n"
        "Contact: <sip:1001@192.0.2.10:5060>\r\n"
        f'Authorization: Digest username="1001", realm="{REALM}", nonce="{nonce}", '
        f'uri="{uri}", response="{response}", algorithm=MD5, cnonce="7a3e", '
        "qop=auth, nc=00000001\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    request = parse_message(text.encode())
    assert isinstance(request, Request)
    creds = parse_credentials(request.headers["Authorization"])
    assert check(creds, nonces, 51.0) is AuthResult.OK


# -- FailureLimiter ------------------------------------------------------------------------


def test_source_is_blocked_after_too_many_failures_and_recovers() -> None:
    limiter = FailureLimiter(max_failures=3, window=60, block=60)
    for t in (0.0, 1.0):
        limiter.failed("192.0.2.7", t)
        assert not limiter.blocked("192.0.2.7", t)
    limiter.failed("192.0.2.7", 2.0)
    assert limiter.blocked("192.0.2.7", 2.0)
    assert limiter.blocked("192.0.2.7", 61.9)
    assert not limiter.blocked("192.0.2.8", 3.0)  # other sources are not affected
    assert not limiter.blocked("192.0.2.7", 62.0)
    # After the block it takes a full new series of failures to be blocked again.
    limiter.failed("192.0.2.7", 63.0)
    assert not limiter.blocked("192.0.2.7", 63.0)


def test_failures_spread_wider_than_the_window_do_not_block() -> None:
    limiter = FailureLimiter(max_failures=3, window=10, block=60)
    for t in (0.0, 6.0, 12.0, 18.0, 24.0):
        limiter.failed("198.51.100.1", t)
        assert not limiter.blocked("198.51.100.1", t)


def test_success_forgets_earlier_failures() -> None:
    limiter = FailureLimiter(max_failures=3, window=60, block=60)
    limiter.failed("198.51.100.2", 0.0)
    limiter.failed("198.51.100.2", 1.0)
    limiter.succeeded("198.51.100.2")
    limiter.failed("198.51.100.2", 2.0)
    assert not limiter.blocked("198.51.100.2", 2.0)


def test_limiter_memory_is_bounded() -> None:
    limiter = FailureLimiter(max_failures=5, window=60, block=60, max_tracked=100)
    for n in range(1000):
        limiter.failed(f"10.0.{n // 256}.{n % 256}", float(n) / 100)
    assert len(limiter) <= 100
    # Idle sources are dropped as time goes by.
    limiter.failed("203.0.113.1", 10_000.0)
    assert len(limiter) == 1


def test_limiter_defaults_block_ten_failures_in_a_minute() -> None:
    limiter = FailureLimiter()
    for n in range(9):
        limiter.failed("203.0.113.9", float(n))
    assert not limiter.blocked("203.0.113.9", 9.0)
    limiter.failed("203.0.113.9", 9.0)
    assert limiter.blocked("203.0.113.9", 9.0)
    assert not limiter.blocked("203.0.113.9", 69.0)
