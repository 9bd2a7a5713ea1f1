"""Failed logins counted in the database (storage/logins.py) and the guard that consults it
(voicemail/login_guard.py), on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable

import pytest

from storage.logins import MAX_LOCKOUT_SECS, LoginStore
from storage.odbc import OdbcPool
from storage.schema import create_tables, storage_tables
from tests.dbbackends import Backend, TcpProxy
from tests.helpers import run
from tests.test_outbox import Clock, started_pool
from voicemail.login_guard import LoginAttempt, LoginGuard, LoginOutcome

pytestmark = pytest.mark.timeout(120)

WHO = LoginAttempt("1234", "default", caller_id='"Eve" <666>', source="127.0.0.1:5099")


class Verifier:
    """A PIN check that answers `result` and counts how often it was asked."""

    def __init__(self, result: bool) -> None:
        self.result = result
        self.calls = 0

    async def __call__(self) -> bool:
        self.calls += 1
        return self.result


def audit(backend: Backend, mailbox: str = "1234") -> list[tuple[str, str, str]]:
    rows = backend.sql(
        "SELECT outcome, caller_id, source FROM vm_login_audit WHERE mailbox = ? ORDER BY id",
        mailbox,
    )
    return [(str(r["outcome"]), str(r["caller_id"]), str(r["source"])) for r in rows]


async def guard_on(pool: OdbcPool, clock: Clock) -> LoginGuard:
    await create_tables(pool, storage_tables())
    return LoginGuard(LoginStore(pool), clock=clock)


def run_with_guard(
    backend: Backend, scenario: Callable[[LoginGuard, Clock], Awaitable[None]]
) -> None:
    """Run `scenario` with a guard on a fresh pool of `backend` and a clock it can move."""

    async def main() -> None:
        clock = Clock()
        async with started_pool(backend) as pool:
            await scenario(await guard_on(pool, clock), clock)

    run(main)


def test_five_wrong_pins_lock_the_mailbox_and_the_right_pin_is_then_refused_unchecked(
    backend: Backend,
) -> None:
    async def scenario(guard: LoginGuard, clock: Clock) -> None:
        wrong, right = Verifier(False), Verifier(True)
        for _ in range(4):
            assert await guard.attempt(WHO, wrong) is LoginOutcome.WRONG
        assert await guard.logins.check("1234", "default", clock()) is None
        assert await guard.attempt(WHO, wrong) is LoginOutcome.WRONG  # the 5th locks
        assert wrong.calls == 5
        assert await guard.logins.check("1234", "default", clock()) == clock() + 60
        clock.now += 30
        assert await guard.attempt(WHO, right) is LoginOutcome.LOCKED
        assert await guard.attempt(WHO, wrong) is LoginOutcome.LOCKED
        assert right.calls == 0 and wrong.calls == 5  # no PIN checked while locked
        # Refused attempts do not extend the lock: it still ends 60 s after it began.
        assert await guard.logins.check("1234", "default", clock()) == clock() + 30
        clock.now += 30
        assert await guard.attempt(WHO, right) is LoginOutcome.OK
        assert right.calls == 1
        # Another mailbox was never affected.
        other = LoginAttempt("5678", "default")
        assert await guard.attempt(other, right) is LoginOutcome.OK

    run_with_guard(backend, scenario)
    caller = ('"Eve" <666>', "127.0.0.1:5099")
    assert audit(backend) == [
        *[("wrong", *caller)] * 5,
        ("lockout", *caller),
        ("locked", *caller),
        ("locked", *caller),
        ("ok", *caller),
    ]
    assert audit(backend, "5678") == [("ok", "", "")]


def test_each_further_lockout_doubles_up_to_a_day_and_a_good_login_resets_it(
    backend: Backend,
) -> None:
    async def scenario(guard: LoginGuard, clock: Clock) -> None:
        wrong = Verifier(False)
        lengths = []
        for _ in range(14):
            for _ in range(3):
                assert (
                    await guard.attempt(WHO, wrong, maxfailedlogins=3, lockoutsecs=60)
                    is LoginOutcome.WRONG
                )
            until = await guard.logins.check("1234", "default", clock())
            assert until is not None
            lengths.append(until - clock())
            clock.now = until  # the lockout is over exactly then
        assert lengths[:6] == [60, 120, 240, 480, 960, 1920]
        assert lengths[-1] == MAX_LOCKOUT_SECS and max(lengths) == MAX_LOCKOUT_SECS
        assert await guard.attempt(WHO, Verifier(True), maxfailedlogins=3) is LoginOutcome.OK
        assert await guard.logins.state("1234", "default") is None  # failures and lockouts
        for _ in range(3):
            await guard.attempt(WHO, wrong, maxfailedlogins=3, lockoutsecs=60)
        # After the reset the next lockout is the first one again.
        assert await guard.logins.check("1234", "default", clock()) == clock() + 60

    run_with_guard(backend, scenario)


def test_a_good_login_resets_the_count_of_wrong_pins(backend: Backend) -> None:
    async def scenario(guard: LoginGuard, clock: Clock) -> None:
        wrong = Verifier(False)
        for _ in range(4):
            await guard.attempt(WHO, wrong)
        assert await guard.logins.state("1234", "default") == (4, 0.0, 0)
        assert await guard.attempt(WHO, Verifier(True)) is LoginOutcome.OK
        for _ in range(4):
            assert await guard.attempt(WHO, wrong) is LoginOutcome.WRONG
        assert await guard.logins.check("1234", "default", clock()) is None

    run_with_guard(backend, scenario)


def test_unlock_clears_the_lockout_and_its_doubling(backend: Backend) -> None:
    async def scenario(guard: LoginGuard, clock: Clock) -> None:
        for _ in range(5):
            await guard.attempt(WHO, Verifier(False))
        assert await guard.attempt(WHO, Verifier(True)) is LoginOutcome.LOCKED
        assert await guard.logins.unlock("1234", "default") is True
        assert await guard.logins.unlock("1234", "default") is False  # nothing left
        assert await guard.logins.state("1234", "default") is None
        assert await guard.attempt(WHO, Verifier(True)) is LoginOutcome.OK

    run_with_guard(backend, scenario)


def test_recent_lists_the_last_audit_rows_newest_first(backend: Backend) -> None:
    async def scenario(guard: LoginGuard, clock: Clock) -> None:
        for n in range(25):
            clock.now += 1
            await guard.attempt(
                LoginAttempt("1234", "default", str(n), "10.0.0.1:5060"), Verifier(True)
            )
        events = await guard.logins.recent("1234", "default", 20)
        assert [e.caller_id for e in events] == [str(n) for n in range(24, 4, -1)]
        assert events[0].at == clock() and events[0].outcome == "ok"
        assert events[0].source == "10.0.0.1:5060"
        assert await guard.logins.recent("9999", "default") == []

    run_with_guard(backend, scenario)


def test_with_the_database_down_every_login_is_refused_as_locked(
    server_backend: Backend,
) -> None:
    """Fail closed: the database goes away under a running server; no way in (and no PIN
    checked) without the count, and the guard works again when the database is back."""
    proxy = TcpProxy(5432 if server_backend.name == "postgresql" else 3306)
    proxy.start()
    via = server_backend.via(proxy.port)

    async def scenario() -> None:
        # No negative_connection_cache: the attempt after the outage connects at once.
        down_cache = dataclasses.replace(via.connection_class(), negative_connection_cache=0)
        pool = OdbcPool(down_cache, retry_timeout=1)
        await pool.start()
        try:
            guard = await guard_on(pool, Clock())
            guard.logins.retry_for = 0.5
            right = Verifier(True)
            proxy.stop()
            assert await guard.attempt(WHO, right) is LoginOutcome.LOCKED
            assert await guard.attempt(WHO, right) is LoginOutcome.LOCKED
            assert right.calls == 0
            proxy.start()
            guard.logins.retry_for = 10
            assert await guard.attempt(WHO, right) is LoginOutcome.OK
            assert right.calls == 1
        finally:
            proxy.stop()
            await pool.close()

    run(scenario)
    assert audit(server_backend) == [("ok", '"Eve" <666>', "127.0.0.1:5099")]


def test_without_a_store_every_attempt_is_checked_and_nothing_remembered() -> None:
    async def scenario() -> None:
        guard = LoginGuard()
        wrong = Verifier(False)
        for _ in range(10):
            assert await guard.attempt(WHO, wrong) is LoginOutcome.WRONG
        assert await guard.attempt(WHO, Verifier(True)) is LoginOutcome.OK

    run(scenario)


def test_two_servers_failing_at_once_count_every_failure(backend: Backend) -> None:
    """Two stores on two pools (as two servers on one database) record 2 x 40 failures
    concurrently with maxfailedlogins=1000: the count is 80, none lost to a race."""

    async def scenario() -> None:
        clock = Clock()
        async with started_pool(backend, 4) as one, started_pool(backend, 4) as two:
            await create_tables(one, storage_tables())
            stores = [LoginStore(one, retry_for=10), LoginStore(two, retry_for=10)]

            async def fail(store: LoginStore) -> None:
                await store.record_failure("1234", "default", clock(), maxfailedlogins=1000)

            await asyncio.gather(*(fail(stores[n % 2]) for n in range(80)))
            assert await stores[1].state("1234", "default") == (80, 0.0, 0)
            # And a lockout threshold reached by both at once locks exactly once.
            await stores[0].unlock("1234", "default")
            await asyncio.gather(
                *(
                    stores[n % 2].record_failure("1234", "default", clock(), maxfailedlogins=5)
                    for n in range(5)
                )
            )
            assert await stores[0].state("1234", "default") == (0, clock() + 60, 1)

    run(scenario)
    outcomes = [outcome for outcome, _, _ in audit(backend)]
    assert outcomes.count("wrong") == 85 and outcomes.count("lockout") == 1
