"""The worker threads behind OdbcPool, with plain blocking functions standing in for a driver
call that never returns: abandoned threads are replaced, bounded, and clean up when they return."""

from __future__ import annotations

import threading
import time

import pytest

from storage.odbc_workers import PoolExhausted, Workers, current_job

pytestmark = pytest.mark.timeout(30)


def wait_until(check: object, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_an_abandoned_worker_is_replaced_and_does_not_commit_when_it_returns() -> None:
    exits: list[str] = []
    workers = Workers("t", 1, max_abandoned=1, on_exit=lambda: exits.append("closed"))
    release = threading.Event()
    claims: list[bool] = []

    def stuck() -> None:
        release.wait(10)
        job = current_job()
        assert job is not None
        claims.append(job.claim_commit())

    job = workers.submit(stuck)
    wait_until(lambda: job.worker is not None)
    assert workers.abandon(job) is False  # no COMMIT was in flight
    assert (workers.active, workers.stuck) == (0, 1)
    # The pool still answers: a new thread runs the next job.
    assert workers.submit(lambda: 42).future.result(5) == 42
    release.set()
    wait_until(lambda: workers.stuck == 0)
    assert claims == [False]  # the returning thread was told not to commit
    assert exits == ["closed"]  # ...and it closed its connection and ended
    assert workers.shutdown(5) == []


def test_past_the_bound_of_stuck_threads_calls_fail_at_once() -> None:
    workers = Workers("t", 2, max_abandoned=2)
    release = threading.Event()
    jobs = []
    for _ in range(4):
        job = workers.submit(release.wait, 10)
        wait_until(lambda job=job: job.worker is not None)
        workers.abandon(job)
        jobs.append(job)
    assert (workers.active, workers.stuck) == (0, 4)
    with pytest.raises(PoolExhausted, match="stuck"):
        workers.submit(lambda: 1)
    release.set()  # the driver calls return: the threads end and workers come back
    wait_until(lambda: workers.stuck == 0)
    assert workers.submit(lambda: 1).future.result(5) == 1
    assert workers.shutdown(5) == []


def test_a_queued_job_given_up_on_never_runs() -> None:
    workers = Workers("t", 1, max_abandoned=1)
    release = threading.Event()
    ran: list[int] = []
    busy = workers.submit(release.wait, 10)
    queued = workers.submit(ran.append, 1)
    workers.abandon(queued)
    assert queued.future.cancelled()
    release.set()
    assert busy.future.result(5) is True
    assert workers.submit(ran.append, 2).future.result(5) is None
    assert ran == [2]
    assert workers.shutdown(5) == []
