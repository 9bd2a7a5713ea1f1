"""How the server stops, reloads on SIGHUP, and gives up root: `server.lifecycle`.

A graceful stop (SIGTERM, `core stop gracefully`) must not lose a message: new INVITEs are
refused with 503 and Retry-After (a caller's proxy tries another server, or the caller
later), calls in progress run to their end and are stored, the spool is flushed while the
database answers, then serve() returns and the process exits 0. A second SIGTERM or
`core stop now` hangs up the calls instead; each recording is stored as far as it got, as
when a caller hangs up.
"""

from __future__ import annotations

import asyncio
import grp
import logging
import os
import pwd
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .sdnotify import SdNotifier

if TYPE_CHECKING:
    from .server import VoicemailServer

log = logging.getLogger(__name__)

SHUTTING_DOWN = "server is shutting down"
# How long `stop now` lets hung-up calls store what they recorded (a deposit waits 3 s for
# the database before spooling), and how long the final spool flush may take.
END_CALLS_GRACE = 10.0
FINAL_FLUSH_TIMEOUT = 60.0
POLL = 0.2


class Lifecycle:
    """The server's running / draining / stopping state; serve() waits on `finished()`."""

    def __init__(self, server: VoicemailServer, notifier: SdNotifier | None = None) -> None:
        self.server = server
        self.notifier = notifier or SdNotifier.from_environment()
        self.state = "running"  # then "draining" (graceful), "stopping" (now)
        self._done = asyncio.Event()
        self._task: asyncio.Future[None] | None = None
        self._reloading: asyncio.Future[None] | None = None

    def attach(self) -> None:
        """Refuse new calls once stopping, before the endpoint's other admission checks."""
        endpoint = self.server.endpoint
        assert endpoint is not None
        previous = endpoint.admission

        def admission() -> str | None:
            if self.state != "running":
                return SHUTTING_DOWN
            return previous() if previous is not None else None

        endpoint.admission = admission
        self.server.lifecycle = self

    # -- what signals and the console call ---------------------------------------------

    def on_sigterm(self) -> None:
        """The first SIGTERM stops gracefully, the next one at once."""
        if self.state == "running":
            log.info("SIGTERM: stopping gracefully; a second SIGTERM ends the calls now")
            self.stop_gracefully()
        else:
            log.info("SIGTERM again: ending the calls in progress now")
            self.stop_now()

    def stop_gracefully(self) -> None:
        """Refuse new calls, let the calls in progress finish, flush the spool, exit 0."""
        if self.state != "running":
            return
        self.state = "draining"
        self.notifier.stopping("stopping gracefully: calls in progress finish first")
        self._task = asyncio.ensure_future(self._drain())

    def stop_now(self) -> None:
        """End every call (each stored as far as it was recorded), then exit."""
        if self.state == "stopping":
            return
        if self.state == "running":
            self.notifier.stopping("stopping now")
        self.state = "stopping"
        if self._task is not None:
            self._task.cancel()
        self._task = asyncio.ensure_future(self._end_calls())

    def reload(self) -> None:
        """SIGHUP: reload, telling systemd (RELOADING=1, then READY=1) around it."""
        if self._reloading is not None and not self._reloading.done():
            log.info("SIGHUP: a reload is already running")
            return
        self._reloading = asyncio.ensure_future(self._reload())

    async def finished(self) -> None:
        """Returns once the stop is complete (calls ended, spool flushed where possible)."""
        await self._done.wait()

    # -- the work ---------------------------------------------------------------------

    def calls_in_progress(self) -> int:
        """Calls admitted and not yet over: in the dial plan, or still being set up."""
        server = self.server
        in_dialplan = len(server.runner.active_calls) if server.runner is not None else 0
        admitted = server.endpoint.limits.total if server.endpoint is not None else 0
        return max(in_dialplan, admitted)

    async def _drain(self) -> None:
        try:
            waiting = self.calls_in_progress()
            if waiting:
                log.info("graceful stop: waiting for %d call(s) in progress", waiting)
            while self.calls_in_progress():
                await asyncio.sleep(POLL)
            log.info("graceful stop: no calls in progress")
            await self._flush_spool()
        finally:
            if self.state == "draining":
                self._done.set()

    async def _flush_spool(self) -> None:
        flusher = self.server.flusher
        if flusher is None:
            return
        try:  # flush_once lists the spool directory itself: backlog may not know every file
            stored = await asyncio.wait_for(flusher.flush_once(), FINAL_FLUSH_TIMEOUT)
        except Exception:  # noqa: BLE001 - what is left stays spooled for the next start
            log.exception("graceful stop: the spool flush did not finish")
            stored = 0
        if stored:
            log.info("graceful stop: stored %d message(s) from the local spool", stored)
        if flusher.backlog:
            log.warning(
                "graceful stop: %d message(s) stay in the local spool (database away); "
                "the next start stores them",
                flusher.backlog,
            )
        else:
            log.info("graceful stop: the local spool is empty")

    async def _end_calls(self) -> None:
        try:
            runner = self.server.runner
            channels = runner.active_calls.channels() if runner is not None else []
            log.info("stop now: ending %d call(s)", len(channels))
            for channel in channels:
                channel.hangup(503, "server stopping")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + END_CALLS_GRACE
            while self.calls_in_progress() and loop.time() < deadline:
                await asyncio.sleep(POLL)
        finally:
            self._done.set()

    async def _reload(self) -> None:
        self.notifier.reloading()
        try:
            result = await self.server.reload()
            log.info("SIGHUP reload: %s", result.text())
        except Exception:  # noqa: BLE001 - a reload bug must not stop the server
            log.exception("SIGHUP reload failed")
        finally:
            self.notifier.ready("serving")


# -- runuser / rungroup -----------------------------------------------------------------


class PrivilegeError(Exception):
    """runuser/rungroup cannot be honoured; the message is for the operator."""


@dataclass
class RunAs:
    """Whom to become after binding: asterisk.conf [options] runuser and rungroup."""

    user: pwd.struct_passwd | None
    group: grp.struct_group | None

    @classmethod
    def resolve(cls, user: str | None, group: str | None, where: str) -> RunAs | None:
        """Look the names up now (before binding), so a typo stops the start at once."""
        if user is None and group is None:
            return None
        found_user = found_group = None
        if user is not None:
            try:
                found_user = pwd.getpwnam(user)
            except KeyError:
                raise PrivilegeError(f"{where}: runuser = {user}: no such user") from None
        if group is not None:
            try:
                found_group = grp.getgrnam(group)
            except KeyError:
                raise PrivilegeError(f"{where}: rungroup = {group}: no such group") from None
        return cls(found_user, found_group)

    @property
    def gid(self) -> int | None:
        if self.group is not None:
            return self.group.gr_gid
        return self.user.pw_gid if self.user is not None else None

    def describe(self) -> str:
        user = self.user.pw_name if self.user is not None else "-"
        group = self.group.gr_name if self.group is not None else "-"
        return f"runuser={user} rungroup={group}"

    def chown(self, tree: Path | None = None, files: tuple[Path, ...] = ()) -> None:
        """Hand what we created as root to the new user: the local spool `tree` (recordings
        are written there) and `files` such as the pid file, its directory, the socket."""
        uid = self.user.pw_uid if self.user is not None else -1
        gid = self.gid if self.gid is not None else -1
        targets = list(files)
        if tree is not None and tree.is_dir():
            targets += [tree, *tree.rglob("*")]
        for path in targets:
            if not os.path.lexists(path):
                continue
            try:
                os.chown(path, uid, gid, follow_symlinks=False)
            except OSError as exc:
                log.warning("cannot hand %s to %s: %s", path, self.describe(), exc)

    def drop(self, tree: Path | None = None, files: tuple[Path, ...] = ()) -> None:
        """Become runuser/rungroup (root only); not root: fine if they name who we are."""
        if os.geteuid() != 0:
            same_user = self.user is None or self.user.pw_uid == os.geteuid()
            same_group = self.group is None or self.group.gr_gid in (os.getegid(), *os.getgroups())
            if same_user and same_group:
                log.info("not root: already running as %s", self.describe())
                return
            raise PrivilegeError(
                f"asterisk.conf {self.describe()} needs root to switch to; running as "
                f"{pwd.getpwuid(os.geteuid()).pw_name} (uid {os.geteuid()})"
            )
        self.chown(tree, files)
        gid = self.gid
        assert gid is not None
        try:
            os.setgid(gid)
            if self.user is not None:
                os.initgroups(self.user.pw_name, gid)
            else:
                os.setgroups([gid])
            if self.user is not None:
                os.setuid(self.user.pw_uid)
        except OSError as exc:
            raise PrivilegeError(f"cannot switch to {self.describe()}: {exc}") from exc
        log.info("running as %s (uid %d, gid %d)", self.describe(), os.getuid(), os.getgid())
