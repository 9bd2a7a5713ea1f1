"""The outbox sender: the server's task that sends queued notifications (storage/outbox.py).

It claims due rows under its server id, and for each: an email or pager row reads its
message by msg_id from the database (it may have been renumbered or moved since; if it is
gone the row fails with that reason), composes the mail with the mail package (the audio
attached when attach=yes), sends it; a webhook row POSTs its signed event (webhook.py).
Then the row is marked sent, retried later (the SMTP server away or answering 4xx: backoff
from `outboxretry`/`outboxretrymax`), or failed with the server's answer (5xx). With
delete=yes the message is deleted once every email row of it is sent (and no pager row is
still pending), never before.

It runs every `interval` seconds and at once when woken (a deposit just committed). The
server id names the host and the local spool, which belongs to one server process: a
server restarted after SIGKILL takes back at once the rows its previous process held,
instead of waiting for their lease to run out. Stopping lets the sends in flight finish
and gives back the rows claimed but not tried yet.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from storage.audioformats import detect_format
from storage.messages import MessageStore, StoredMessage
from storage.odbc import DatabaseError
from storage.outbox import PENDING, SENT, Backoff, Outbox, OutboxRow

from . import webhook
from .config_voicemail import VoicemailSettings, mail_settings
from .mail.compose import MessageInfo, Recipient, build_pager, composed
from .mail.composer import MailComposer
from .mail.send import PERMANENT, TEMPORARY, SendResult, send
from .mail.settings import DEFAULT_SMTPTIMEOUT, MailSettings
from .mail.variables import Original, callerid_split
from .notifications import MailPayload, WebhookPayload, message_places

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 5.0  # seconds between rounds when nothing wakes the sender
WEBHOOK_TIMEOUT = 10.0
PRUNE_EVERY = 3600.0
PRUNE_AFTER = 86400.0  # sent rows are kept a day, for the operator
_LOCATE_ATTEMPTS = 3
_MARK_SENT_ATTEMPTS = 5


def server_id_for(spool_directory: Path) -> str:
    """`<host>:<hash of the spool path>`: the same after a restart, never shared by two live
    servers (a local spool belongs to one process)."""
    host = socket.gethostname()[:50] or "localhost"
    digest = hashlib.sha256(str(Path(spool_directory).resolve()).encode()).hexdigest()[:16]
    return f"{host}:{digest}"


@dataclass(frozen=True)
class _Found:
    folder: str
    message: StoredMessage


class OutboxSender:
    """Sends what the outbox holds; one per server process."""

    def __init__(
        self,
        outbox: Outbox,
        store: MessageStore,
        settings: Callable[[], VoicemailSettings],
        server_id: str,
        *,
        interval: float = DEFAULT_INTERVAL,
        batch: int = 10,
        concurrency: int = 4,
        composer: MailComposer | None = None,
    ) -> None:
        """`settings` gives the running voicemail.conf (a reload replaces it)."""
        self.outbox = outbox
        self.store = store
        self.settings = settings
        self.server_id = server_id
        self.interval = interval
        self.batch = batch
        self.concurrency = concurrency
        self.composer = composer if composer is not None else MailComposer()
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._last_prune = float("-inf")
        # A claim or mark whose outcome the database left unknown (a timeout with the COMMIT
        # in flight) may have left rows claimed by us: give them back before the next claim.
        self._unsure = False
        # Send attempts by (kind, "sent" | "failed"), for the metrics.
        self.results: Counter[tuple[str, str]] = Counter()

    # --- running ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Take back rows a previous process of this server left claimed, then run."""
        try:
            released = await self.outbox.release(self.server_id)
        except DatabaseError as exc:
            log.warning("outbox: could not take back rows of %s: %s", self.server_id, exc)
            released = 0
        if released:
            log.warning(
                "outbox: %d notification(s) claimed by a previous process of this server "
                "(stopped before sending them) are sent again",
                released,
            )
        self._task = asyncio.ensure_future(self.run())

    def wake(self) -> None:
        """Look for due rows now (a deposit just committed)."""
        self._wake.set()

    async def stop(self, timeout: float | None = None) -> None:
        """Finish the sends in flight (up to `timeout`, by default the SMTP timeout and a
        little), give back the rows not tried, and end."""
        self._stopping = True
        self._wake.set()
        try:
            if self._task is None:
                return
            if timeout is None:
                timeout = self._smtp_timeout() + 5.0
            done, _ = await asyncio.wait({self._task}, timeout=timeout)
            if not done:
                log.warning("outbox: a send still in flight after %.0f s is abandoned", timeout)
                self._task.cancel()
                await asyncio.wait({self._task}, timeout=2)
        finally:
            self.composer.close()

    async def run(self) -> None:
        """Rounds until stopped: claim, send, mark; prune now and then."""
        while not self._stopping:
            self._wake.clear()
            claimed = 0
            try:
                claimed = await self.round()
                await self._prune()
            except DatabaseError as exc:
                log.warning("outbox: database: %s; trying again in %.0f s", exc, self.interval)
            except Exception:  # noqa: BLE001 - the sender must outlive any bug in one round
                log.exception("outbox: round failed")
            if claimed >= self.batch and not self._stopping:
                continue  # a full batch: more may be due
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval)
            except TimeoutError:
                pass

    async def round(self) -> int:
        """One claim and the sends of what it got; returns how many rows it claimed."""
        settings = self.settings()
        first, longest = settings.outbox_retry
        if (self.outbox.backoff.base, self.outbox.backoff.cap) != (first, longest):
            self.outbox.backoff = Backoff(first, longest, self.outbox.backoff.jitter)
        if self._unsure:
            # Safe: every row of our previous round has been dealt with, none is in flight.
            await self.outbox.release(self.server_id)
            self._unsure = False
        try:
            rows = await self.outbox.claim(self.server_id, self.batch, self._lease())
        except DatabaseError:
            self._unsure = True
            raise
        if not rows:
            return 0
        gate = asyncio.Semaphore(self.concurrency)

        async def one(row: OutboxRow) -> None:
            async with gate:
                if self._stopping:
                    await self.outbox.release(self.server_id, row.id)
                    return
                await self.process(row)

        # Every send ends before the next round (return_exceptions: none is left running).
        outcomes = await asyncio.gather(*(one(row) for row in rows), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                self._unsure = True
                log.warning("outbox: recording an outcome failed: %s", outcome)
        return len(rows)

    # --- one row ------------------------------------------------------------------------------

    async def process(self, row: OutboxRow) -> None:
        """Send one claimed row and record the outcome."""
        started = time.monotonic()
        try:
            result = await self._attempt(row)
        except DatabaseError as exc:
            result = SendResult(TEMPORARY, f"database: {exc}")
        except Exception as exc:  # noqa: BLE001 - recorded on the row, retried
            log.exception("outbox: row %d (%s to %s) failed", row.id, row.kind, row.recipient)
            result = SendResult(TEMPORARY, f"internal error: {exc!r}")
        what = f"{row.kind} for {row.mailbox}@{row.context} msg {row.msg_id} to {row.recipient}"
        self.results[(row.kind, "sent" if result.sent else "failed")] += 1
        if result.sent:
            await self._mark_sent(row)
            log.info(
                "outbox: %s sent in %.2f s (attempt %d)%s",
                what,
                time.monotonic() - started,
                row.attempts,
                f": {result.detail}" if result.detail else "",
            )
            if row.kind in ("email", "pager"):
                try:
                    await self._delete_if_mailed(row)
                except DatabaseError as exc:  # the safe way round: the message stays
                    log.error("outbox: delete=yes for msg %s not done: %s", row.msg_id, exc)
        elif result.status == PERMANENT:
            await self.outbox.mark_failed(row.id, result.detail, self.server_id)
            log.error("outbox: %s failed for good: %s", what, result.detail)
        else:
            due = await self.outbox.mark_retry(row.id, self.server_id, result.detail)
            if due is None:
                log.error("outbox: %s: %s; not retried any more", what, result.detail)
            else:
                log.warning(
                    "outbox: %s not sent (attempt %d): %s; next attempt in %.0f s",
                    what,
                    row.attempts,
                    result.detail,
                    due - time.time(),
                )

    async def _mark_sent(self, row: OutboxRow) -> None:
        """Record a sent row, insisting: if this is lost the row is sent again (a duplicate)."""
        for attempt in range(_MARK_SENT_ATTEMPTS):
            try:
                await self.outbox.mark_sent(row.id, self.server_id)
                return
            except DatabaseError as exc:
                if attempt == _MARK_SENT_ATTEMPTS - 1:
                    raise
                log.warning("outbox: row %d sent, recording it failed (%s); again", row.id, exc)
                await asyncio.sleep(1.0 * 2**attempt)

    async def _attempt(self, row: OutboxRow) -> SendResult:
        settings = self.settings()
        if row.kind == "webhook":
            try:
                payload = WebhookPayload.from_json(row.payload)
            except ValueError as exc:
                return SendResult(PERMANENT, str(exc))
            if not settings.webhooksecret:
                return SendResult(PERMANENT, "webhooksecret is not set any more; not sent")
            return await webhook.post(
                payload.url, settings.webhooksecret, payload.body, WEBHOOK_TIMEOUT
            )
        try:
            payload_mail = MailPayload.from_json(row.payload)
            mail = mail_settings(settings.general, payload_mail.options, settings.zonemessages)
        except ValueError as exc:
            return SendResult(PERMANENT, f"mail settings: {exc}")
        found = await self.find_message(row.context, row.mailbox, row.msg_id)
        if found is None:
            return SendResult(
                PERMANENT,
                f"message {row.msg_id} is no longer in mailbox {row.mailbox}@{row.context} "
                "(deleted before it was mailed)",
            )
        return await self._mail(row, payload_mail, mail, found.message)

    async def _mail(
        self, row: OutboxRow, payload: MailPayload, mail: MailSettings, stored: StoredMessage
    ) -> SendResult:
        cidname, cidnum = callerid_split(stored.callerid)
        info = MessageInfo(
            msgnum=stored.msgnum,
            duration=stored.duration,
            cidnum=cidnum,
            cidname=cidname,
            flag=stored.flag,
            category=stored.category,
            original=Original(stored.callerid, stored.origtime),
            forwarded=payload.forwarded,
        )
        email, pager = (row.recipient, "") if row.kind == "email" else ("", row.recipient)
        recipient = Recipient(row.mailbox, row.context, payload.fullname, email, pager)
        try:
            if row.kind == "pager":
                message = composed(build_pager(mail, recipient, info))
            else:
                audio, fmt = None, ""
                if mail.attach:
                    audio = stored.recording
                    fmt = detect_format(audio) or payload.audio_format or "wav"
                message = await self.composer.email(mail, recipient, info, audio, fmt)
        except ValueError as exc:
            return SendResult(PERMANENT, f"cannot build the mail: {exc}")
        return await send(message, mail)

    # --- the message --------------------------------------------------------------------------

    async def find_message(self, context: str, mailbox: str, msg_id: str) -> _Found | None:
        """The message with this msg_id in any folder of the mailbox, or None."""
        for _ in range(_LOCATE_ATTEMPTS):
            places = await self._places(context, mailbox, msg_id)
            if not places:
                return None
            for folder, msgnum in places:
                stored = await self.store.retrieve(context, mailbox, folder, msgnum)
                if stored is not None and stored.msg_id == msg_id:
                    return _Found(folder, stored)
            # renumbered between the two reads: look again
        return None

    async def _places(self, context: str, mailbox: str, msg_id: str) -> list[tuple[str, int]]:
        return await message_places(self.store, context, mailbox, msg_id)

    async def _delete_if_mailed(self, row: OutboxRow) -> None:
        """delete=yes: delete the message once all its email rows are sent."""
        try:
            if not MailPayload.from_json(row.payload).delete_after:
                return
        except ValueError:
            return
        states = await self.outbox.states(row.context, row.mailbox, row.msg_id)
        emails = [state for kind, state in states if kind == "email"]
        pagers = [state for kind, state in states if kind == "pager"]
        if not emails or any(state != SENT for state in emails) or PENDING in pagers:
            return
        deleted = 0
        for folder, _ in await self._places(row.context, row.mailbox, row.msg_id):
            if await self.store.delete_msg_id(row.context, row.mailbox, folder, row.msg_id):
                deleted += 1
        if deleted:
            log.info(
                "message %s of %s@%s deleted after it was mailed (delete=yes)",
                row.msg_id,
                row.mailbox,
                row.context,
            )

    # --- helpers ------------------------------------------------------------------------------

    def _smtp_timeout(self) -> float:
        try:
            return mail_settings(self.settings().general, {}, {}).smtptimeout
        except ValueError:
            return DEFAULT_SMTPTIMEOUT

    def _lease(self) -> float:
        """Long enough for the SMTP dialogue and the attachment's conversion, with margin."""
        return max(120.0, 3 * self._smtp_timeout() + 60.0)

    async def _prune(self) -> None:
        now = time.monotonic()
        if now - self._last_prune < PRUNE_EVERY:
            return
        self._last_prune = now
        pruned = await self.outbox.prune(PRUNE_AFTER)
        if pruned:
            log.info("outbox: pruned %d sent row(s) older than a day", pruned)
