"""voicemail.conf `externnotify=<cmd>`: a program told a mailbox's counts whenever they change.

Asterisk (AV@20 run_externnotify) builds `<cmd> <context> <mailbox> <new> <old> <urgent> &`
and hands it to the shell (ast_safe_system), with the counts of inboxcount2: new = INBOX,
old = Old, urgent = Urgent (the lamp's "new" adds Urgent to INBOX; this one does not). We do
the same through /bin/sh, so a command with arguments or a pipe keeps working, but the
context and mailbox are shell-quoted (a realtime mailbox name is not the shell's to read) and
the program is not left in the background: it is waited for, at most `timeout` seconds, then
its process group is killed, so a hung script cannot pile up processes.

It runs when a mailbox's counts differ from what the program was last told on this server:
a change made here (deposit, forward, VoiceMailMain), one seen through the change feed
(another server) or one the poll found. Events are coalesced per mailbox and counted when
their turn comes; at most `max_running` programs run at once, never two for one mailbox, and
nothing here waits on the event loop's time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import signal
from collections.abc import Awaitable, Callable

from storage.odbc import DatabaseError

log = logging.getLogger(__name__)

# (context, mailbox) -> (INBOX, Old, Urgent), as MessageStore.counts.
Counts = Callable[[str, str], Awaitable[tuple[int, int, int]]]

DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_RUNNING = 4


def command_line(command: str, context: str, mailbox: str, counts: tuple[int, int, int]) -> str:
    """The shell text Asterisk builds, its context and mailbox quoted."""
    inbox, old, urgent = counts
    where = shlex.quote(context) if context else '""'  # Asterisk's S_OR(context, "\"\"")
    return f"{command} {where} {shlex.quote(mailbox)} {inbox} {old} {urgent}"


class ExternNotify:
    """Runs the externnotify program for mailboxes whose counts changed."""

    def __init__(
        self,
        command: str,
        counts: Counts,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_running: int = DEFAULT_MAX_RUNNING,
    ) -> None:
        self.command = command
        self.counts = counts
        self.timeout = timeout
        self.max_running = max_running
        self._told: dict[tuple[str, str], tuple[int, int, int]] = {}
        self._pending: dict[tuple[str, str], None] = {}  # in arrival order
        self._busy: set[tuple[str, str]] = set()
        self._wake = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        self._stopping = False  # see MwiFeed._stopping

    def start(self) -> None:
        self._workers = [asyncio.ensure_future(self._work()) for _ in range(self.max_running)]

    async def stop(self) -> None:
        """Cancel the workers; a program running is killed (its process group)."""
        self._stopping = True
        self._wake.set()
        for worker in self._workers:
            worker.cancel()
        if self._workers:
            await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []

    def mailbox_changed(self, mailbox: str, context: str) -> None:
        """A mailbox may have new counts (argument order as MwiService.mailbox_changed)."""
        self._pending[(context, mailbox)] = None
        self._wake.set()

    async def idle(self) -> None:
        """Wait until nothing is pending or running (for tests and a clean stop)."""
        while self._pending or self._busy:
            await asyncio.sleep(0.01)

    async def _work(self) -> None:
        while not self._stopping:
            await self._wake.wait()
            if self._stopping:
                return
            key = next((k for k in self._pending if k not in self._busy), None)
            if key is None:
                self._wake.clear()
                continue
            del self._pending[key]
            self._busy.add(key)
            try:
                await self._tell(*key)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - one bad run must not stop the worker
                log.exception("externnotify for %s@%s failed", key[1], key[0])
            finally:
                self._busy.discard(key)
                if self._pending:
                    self._wake.set()

    async def _tell(self, context: str, mailbox: str) -> None:
        try:
            counts = await self.counts(context, mailbox)
        except DatabaseError as exc:
            log.warning("externnotify: cannot count %s@%s: %s", mailbox, context, exc)
            return
        key = (context, mailbox)
        if self._stopping or self._told.get(key) == counts:
            return
        self._told[key] = counts
        await self._run(command_line(self.command, context, mailbox, counts))

    async def _run(self, text: str) -> None:
        log.debug("externnotify: %s", text)
        try:
            process = await asyncio.create_subprocess_exec(
                "/bin/sh",
                "-c",
                text,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # its own process group, killed as a whole
            )
        except OSError as exc:
            log.error("externnotify: cannot run /bin/sh: %s", exc)
            return
        try:
            _, stderr = await asyncio.wait_for(process.communicate(), self.timeout)
        except (TimeoutError, asyncio.CancelledError) as exc:
            _kill_group(process.pid)
            await process.wait()
            if isinstance(exc, asyncio.CancelledError):
                raise
            log.warning("externnotify: killed after %.0f s: %s", self.timeout, text)
            return
        if process.returncode != 0:
            detail = stderr.decode(errors="replace").strip()[-300:]
            log.warning("externnotify exited with %s: %s %s", process.returncode, text, detail)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
