"""Handing a built mail to the mail system: SMTP with aiosmtplib, or Asterisk's `mailcmd`.

The outcome is classified for a durable outbox: `sent`; `temporary` (a 4xx answer, a refused
or lost connection, a timeout, a TLS handshake that failed, a mailcmd exiting non-zero): try
again later; `permanent` (a 5xx answer, or something retrying cannot change, such as a server
without the STARTTLS or AUTH the settings ask for): give up. `detail` carries the server's
answer text or the reason.

TLS (`smtptls=starttls` or `tls`) verifies the server's certificate against the system's
trust store (OpenSSL's SSL_CERT_FILE / SSL_CERT_DIR are honoured) and its name.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage

import aiosmtplib

from .compose import ComposedMail, composed
from .settings import MailSettings

log = logging.getLogger(__name__)

SENT = "sent"
TEMPORARY = "temporary"
PERMANENT = "permanent"


@dataclass(frozen=True)
class SendResult:
    """What became of one mail. `refused`: recipients the server turned down while it
    accepted others (address -> "code text"); the mail counts as sent."""

    status: str
    detail: str = ""
    code: int | None = None
    refused: dict[str, str] = field(default_factory=dict)

    @property
    def sent(self) -> bool:
        return self.status == SENT


async def send(message: EmailMessage | ComposedMail, settings: MailSettings) -> SendResult:
    """Send to the message's To addresses: pipe to mailcmd when set, else SMTP. A mail built
    here is flattened here; the outbox's come composed from worker processes (composer.py)."""
    mail = message if isinstance(message, ComposedMail) else composed(message)
    if settings.mailcmd:
        return await pipe_to_command(mail.data, settings.mailcmd, settings.smtptimeout)
    return await _smtp(mail, settings)


async def _smtp(mail: ComposedMail, settings: MailSettings) -> SendResult:
    where = f"{settings.smtphost}:{settings.smtpport}"
    context = ssl.create_default_context() if settings.smtptls != "no" else None
    try:
        errors, response = await aiosmtplib.send(
            mail.data,
            sender=mail.sender,
            recipients=mail.recipients,
            hostname=settings.smtphost,
            port=settings.smtpport,
            username=settings.smtpuser or None,
            password=settings.smtppassword or None,
            use_tls=settings.smtptls == "tls",
            start_tls=settings.smtptls == "starttls",
            tls_context=context,
            timeout=settings.smtptimeout,
        )
    except aiosmtplib.SMTPRecipientsRefused as exc:
        answers = [f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients]
        codes = [r.code for r in exc.recipients]
        status = PERMANENT if codes and all(code >= 500 for code in codes) else TEMPORARY
        return _result(status, "; ".join(answers), min(codes) if codes else None, where)
    except aiosmtplib.SMTPResponseException as exc:
        status = PERMANENT if exc.code >= 500 else TEMPORARY
        return _result(status, f"{exc.code} {exc.message}", exc.code, where)
    except aiosmtplib.SMTPNotSupported as exc:
        return _result(PERMANENT, str(exc), None, where)
    except (aiosmtplib.SMTPTimeoutError, TimeoutError) as exc:
        return _result(TEMPORARY, f"timed out: {exc}", None, where)
    except aiosmtplib.SMTPServerDisconnected as exc:
        return _result(TEMPORARY, f"disconnected: {exc}", None, where)
    except (aiosmtplib.SMTPConnectError, OSError) as exc:  # ssl.SSLError is an OSError
        return _result(TEMPORARY, str(exc), None, where)
    except aiosmtplib.SMTPException as exc:
        return _result(TEMPORARY, str(exc), None, where)
    refused = {address: f"{answer.code} {answer.message}" for address, answer in errors.items()}
    if refused:
        log.warning("mail via %s: refused for %s", where, refused)
    return SendResult(SENT, response, None, refused)


def _result(status: str, detail: str, code: int | None, where: str) -> SendResult:
    log.warning("mail via %s not sent (%s): %s", where, status, detail)
    return SendResult(status, detail, code)


async def pipe_to_command(data: bytes, command: str, timeout: float) -> SendResult:
    """Run `command` with the shell (Asterisk runs `( mailcmd < file ; rm -f file ) &`),
    the mail on its stdin; exit status 0 = sent, anything else = temporary failure."""
    process = await asyncio.create_subprocess_shell(
        command,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # so a timeout can end the command and its children
    )
    try:
        _, stderr = await asyncio.wait_for(process.communicate(data), timeout)
    except TimeoutError:
        _kill_group(process.pid)
        await process.wait()
        return _result(TEMPORARY, f"mailcmd ran longer than {timeout:g} s", None, command)
    except BrokenPipeError:
        await process.wait()
        stderr = b""
    if process.returncode != 0:
        text = stderr.decode("utf-8", "replace").strip()
        detail = f"mailcmd exited with status {process.returncode}" + (f": {text}" if text else "")
        return _result(TEMPORARY, detail, None, command)
    return SendResult(SENT, f"mailcmd {command!r} exited 0")


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
