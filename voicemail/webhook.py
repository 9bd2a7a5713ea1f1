"""The webhook: an HTTP POST of one JSON event (new, read, deleted message), signed.

The body is the event's JSON; the header `X-Signature-SHA256` carries the hex HMAC-SHA256 of
the exact body bytes with `webhooksecret` as key, so the receiver can tell our events from
forged ones (compare with hmac.compare_digest). The outcome is classified like a mail's
(voicemail/mail/send.py): a 2xx answer is `sent`; a 5xx, 408, 429, a refused connection or a
timeout is `temporary` (the outbox retries with backoff); any other answer (4xx, 3xx: we do
not follow redirects) is `permanent`.

http.client in a thread: the project has no asynchronous HTTP client, and one POST per event
does not justify adding one. HTTPS verifies the receiver's certificate and name.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.client
import json
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from .mail.send import PERMANENT, SENT, TEMPORARY, SendResult

SIGNATURE_HEADER = "X-Signature-SHA256"
USER_AGENT = "ara-voicemail-webhook/1"
_RETRY_CODES = frozenset({408, 425, 429})
_MAX_ANSWER = 300  # characters of the receiver's answer kept


def body_bytes(event: Mapping[str, Any]) -> bytes:
    """The event as sent: compact JSON, keys sorted, UTF-8."""
    return json.dumps(event, sort_keys=True, separators=(",", ":")).encode()


def signature(secret: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of `body` keyed with `secret`."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def post(url: str, secret: str, event: Mapping[str, Any], timeout: float) -> SendResult:
    """POST the event to `url`; never raises for network or HTTP trouble."""
    body = body_bytes(event)
    return await asyncio.to_thread(_post, url, body, signature(secret, body), timeout)


def _post(url: str, body: bytes, sign: str, timeout: float) -> SendResult:
    parts = urlsplit(url)
    try:
        if parts.scheme == "https":
            connection: http.client.HTTPConnection = http.client.HTTPSConnection(
                parts.hostname or "",
                parts.port,
                timeout=timeout,
                context=ssl.create_default_context(),
            )
        elif parts.scheme == "http":
            connection = http.client.HTTPConnection(
                parts.hostname or "", parts.port, timeout=timeout
            )
        else:
            return SendResult(PERMANENT, f"webhook {url}: not an http(s) URL")
    except ValueError as exc:  # a bad port: retrying cannot help
        return SendResult(PERMANENT, f"webhook {url}: {exc}")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign,
        "User-Agent": USER_AGENT,
    }
    try:
        connection.request("POST", path, body=body, headers=headers)
        answer = connection.getresponse()
        code = answer.status
        text = answer.read(_MAX_ANSWER).decode("utf-8", "replace")
    except TimeoutError as exc:
        return SendResult(TEMPORARY, f"webhook {url}: timed out ({exc})")
    except (OSError, http.client.HTTPException) as exc:  # refused, reset, TLS, bad answer
        return SendResult(TEMPORARY, f"webhook {url}: {exc!r}")
    finally:
        connection.close()
    detail = f"{code} {text.strip()}".strip()
    if 200 <= code < 300:
        return SendResult(SENT, detail, code)
    status = TEMPORARY if code >= 500 or code in _RETRY_CODES else PERMANENT
    return SendResult(status, f"webhook {url}: {detail}", code)
