"""Notification mails composed in worker processes at a low priority, sent from the loop.

Making a mail is CPU work: converting the stored wav to mp3, ogg or gsm (pydub and the ffmpeg
or sox it starts), then the `email` package's MIME composition and flattening, pure Python
that base64-encodes the attachment. On the server's thread that work holds the GIL the event
loop needs, and ffmpeg takes a core the loop shares: with 100 deposits mailed within a second
the media clock ran more than 5 ms late on 14-22 % of its ticks (bench/RESULTS.md,
`bench.mail_burst`). Here the whole mail is made in a pool of processes and comes back as
the bytes to send and their envelope; at `nice` 10 (inherited by ffmpeg) the kernel hands the
loop's thread the CPU first whenever both want it, and the pool's size bounds how many mails
are made at once. The loop only hands the bytes to SMTP.

The workers are spawned (not forked from a process with ODBC and loop threads) on the first
mail, so a server that mails nothing never starts one. Spawning imports the parent's main
module again in the worker: the `voicemail` console script guards its entry point, as a
program that embeds the composer must.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from .attach import conversion, converted_attachment
from .compose import Attachment, ComposedMail, MessageInfo, Recipient, build_email, composed
from .settings import MailSettings

log = logging.getLogger(__name__)

WORKERS = 1  # mails made at once: a 3 s message's mp3 takes ffmpeg tens of ms
NICE = 10  # added to the workers' niceness: the loop's thread first


def compose_email(
    settings: MailSettings,
    recipient: Recipient,
    info: MessageInfo,
    audio: bytes | None,
    stored_format: str,
) -> tuple[ComposedMail, str]:
    """The mail, with `audio` attached (converted to attachfmt) when it is not None, and why
    the stored audio went out unconverted ("" when it did not). Runs in a worker process."""
    attachment: Attachment | None = None
    problem = ""
    if audio is not None:
        target, gain = conversion(stored_format, settings)
        attachment, problem = converted_attachment(audio, stored_format, target, gain, info.msgnum)
    return composed(build_email(settings, recipient, info, attachment)), problem


def _start_worker(increment: int) -> None:
    """Lower the worker's priority, and end it with the server: a server killed by SIGKILL
    (or the OOM killer) cannot stop its pool, and the worker would wait for work forever."""
    os.nice(increment)
    threading.Thread(target=_exit_with_parent, name="parent-watch", daemon=True).start()


def _exit_with_parent() -> None:
    parent = multiprocessing.parent_process()
    if parent is not None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)


class MailComposer:
    """Makes the notification mails in its worker processes. One per server."""

    def __init__(self, workers: int = WORKERS, nice: int = NICE) -> None:
        self.workers = workers
        self.nice = nice
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(self.nice,),
            )
        return self._pool

    async def email(
        self,
        settings: MailSettings,
        recipient: Recipient,
        info: MessageInfo,
        audio: bytes | None,
        stored_format: str,
    ) -> ComposedMail:
        """compose_email in a worker; ValueError when the mail cannot be built."""
        arguments = (settings, recipient, info, audio, stored_format)
        loop = asyncio.get_running_loop()
        try:
            mail, problem = await loop.run_in_executor(self._executor(), compose_email, *arguments)
        except BrokenProcessPool as exc:  # a worker was killed (OOM, a signal): new workers
            self.close()
            log.warning("mail msg%04d: the mail worker died (%s); once more", info.msgnum, exc)
            mail, problem = await loop.run_in_executor(self._executor(), compose_email, *arguments)
        if problem:
            log.warning("%s", problem)
        return mail

    def close(self) -> None:
        """Stop the workers (a mail being made is abandoned: its row is sent again)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
