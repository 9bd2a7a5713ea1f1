"""The worker threads of one connection class, which a hung database cannot use up.

A driver call cannot be interrupted from Python: a thread waiting on a server behind a firewall
that drops packets waits until the kernel gives up on the TCP connection, which can be never.
So a caller whose deadline passed abandons the job: the thread running it stops counting as a
worker and a fresh thread takes its place. When the driver call in an abandoned thread returns
after all, `Job.claim_commit()` tells it not to commit; the thread's `on_exit` hook then drops its
connection and the thread ends. At most `max_abandoned` threads may be stuck at once; past that
no replacement is started, and with no worker left a new job fails at once (`PoolExhausted`)
rather than queueing behind threads that may never come back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["Job", "PoolExhausted", "Workers", "current_job"]

_current = threading.local()


class PoolExhausted(Exception):
    """Every worker thread is stuck in the driver and no more may be started."""


class Job:
    """One call handed to a worker; abandoned by its caller once its deadline passed."""

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn = fn
        self.args = args
        self.future: Future[Any] = Future()
        self._lock = threading.Lock()
        self._abandoned = False
        self._committing = False
        self.worker: _Worker | None = None

    @property
    def abandoned(self) -> bool:
        with self._lock:
            return self._abandoned

    def claim_commit(self) -> bool:
        """Called just before COMMIT: False when the caller gave up (then roll back instead)."""
        with self._lock:
            if self._abandoned:
                return False
            self._committing = True
            return True

    def commit_done(self) -> None:
        """Called after COMMIT returned: an abandonment from now on cannot undo anything."""
        with self._lock:
            self._committing = False

    def _abandon(self) -> bool:
        """Mark abandoned; True when a COMMIT was in flight (its outcome is then unknown)."""
        with self._lock:
            self._abandoned = True
            return self._committing


def current_job() -> Job | None:
    """The job the calling worker thread is running (None outside a worker)."""
    return getattr(_current, "job", None)


class _Worker:
    def __init__(self, number: int) -> None:
        self.number = number
        self.abandoned = False
        self.thread: threading.Thread | None = None


class Workers:
    """`size` worker threads started on demand, replaced when abandoned."""

    def __init__(
        self,
        name: str,
        size: int,
        *,
        max_abandoned: int,
        on_exit: Callable[[], None] = lambda: None,
    ) -> None:
        self.name = name
        self.size = size
        self.max_abandoned = max_abandoned
        self._on_exit = on_exit
        self._cond = threading.Condition()
        self._jobs: deque[Job] = deque()
        self._active: set[_Worker] = set()
        self._stuck: set[_Worker] = set()
        self._idle = 0
        self._closing = False
        self._started = 0
        self._bound_logged = False

    @property
    def stuck(self) -> int:
        """How many abandoned threads are still inside a driver call."""
        with self._cond:
            return len(self._stuck)

    @property
    def active(self) -> int:
        with self._cond:
            return len(self._active)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Job:
        """Queue a call for the next free worker; PoolExhausted when none can ever take it."""
        job = Job(fn, args)
        with self._cond:
            if self._closing:
                raise RuntimeError("workers are shut down")
            self._jobs.append(job)
            self._spawn_as_needed()
            if not self._active:
                self._jobs.remove(job)
                raise PoolExhausted(
                    f"all {self.size} worker thread(s) are stuck in the database driver "
                    f"({len(self._stuck)} abandoned, at most {self.max_abandoned})"
                )
            self._cond.notify()
        return job

    def abandon(self, job: Job) -> bool:
        """Give up on `job`: it will not commit; its thread, if any, is replaced.

        Returns True when a COMMIT was already in flight, so the outcome is unknown.
        """
        committing = job._abandon()
        job.future.cancel()  # a job still queued never runs
        with self._cond:
            worker = job.worker
            if worker is not None and worker in self._active:
                self._active.discard(worker)
                self._stuck.add(worker)
                worker.abandoned = True
                log.warning(
                    "[%s] worker %d abandoned in a database call; %d abandoned thread(s) now",
                    self.name,
                    worker.number,
                    len(self._stuck),
                )
                self._spawn_as_needed()
        return committing

    def shutdown(self, timeout: float) -> list[threading.Thread]:
        """Let the workers finish queued jobs and end; the threads still running after
        `timeout` seconds (stuck ones included) are returned, left to end by themselves."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            threads = [w.thread for w in self._active | self._stuck if w.thread is not None]
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return [thread for thread in threads if thread.is_alive()]

    # --- under self._cond --------------------------------------------------------------------

    def _spawn_as_needed(self) -> None:
        while len(self._active) < self.size and self._idle < len(self._jobs):
            if len(self._active) + len(self._stuck) >= self.size + self.max_abandoned:
                if not self._bound_logged:
                    log.error(
                        "[%s] %d worker thread(s) stuck in the database driver: the bound of "
                        "%d abandoned threads is reached, no replacement started",
                        self.name,
                        len(self._stuck),
                        self.max_abandoned,
                    )
                    self._bound_logged = True
                return
            self._started += 1
            worker = _Worker(self._started)
            worker.thread = threading.Thread(
                target=self._loop,
                args=(worker,),
                name=f"odbc-{self.name}-{worker.number}",
                daemon=True,
            )
            self._active.add(worker)
            self._idle += 1  # idle: not running a job
            worker.thread.start()

    # --- worker threads ----------------------------------------------------------------------

    def _loop(self, worker: _Worker) -> None:
        try:
            while True:
                job = self._next_job(worker)
                if job is None:
                    return
                _current.job = job
                try:
                    result = job.fn(*job.args)
                except BaseException as exc:  # handed to the caller
                    _settle(job.future, exception=exc)
                else:
                    _settle(job.future, result=result)
                finally:
                    _current.job = None
                with self._cond:
                    job.worker = None
                    if worker.abandoned:
                        return
                    self._idle += 1
        finally:
            try:
                self._on_exit()
            finally:
                with self._cond:
                    self._active.discard(worker)
                    if worker in self._stuck:
                        self._stuck.discard(worker)
                        self._bound_logged = False
                        log.info(
                            "[%s] abandoned worker %d came back and ended", self.name, worker.number
                        )
                        self._spawn_as_needed()

    def _next_job(self, worker: _Worker) -> Job | None:
        """The next job not given up on, or None when shutting down with nothing queued."""
        with self._cond:
            while True:
                while self._jobs:
                    job = self._jobs.popleft()
                    if job.future.set_running_or_notify_cancel():
                        job.worker = worker
                        self._idle -= 1
                        return job
                if self._closing:
                    self._idle -= 1
                    return None
                self._cond.wait()


def _settle(
    future: Future[Any], *, result: Any = None, exception: BaseException | None = None
) -> None:
    try:
        if exception is not None:
            future.set_exception(exception)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass  # the caller gave up on it
