"""Who a forwarded call was for, and why: Diversion (RFC 5806) and History-Info (RFC 7044).

A PBX that forwards an unanswered or busy call to voicemail keeps the request URI's user as
the voicemail pilot and says whose call it was in one of these headers. We take the first
(most recent) Diversion entry, or else the first History-Info entry (the originally called
target) with the RFC 4458 `cause` of the retargeting.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

from sipmessage import Address, Request

# RFC 4458 cause values on a retargeted URI, in Diversion's vocabulary.
CAUSE_REASONS = {
    "486": "user-busy",
    "408": "no-answer",
    "480": "unavailable",
    "487": "no-answer",
    "302": "unconditional",
    "404": "unknown",
    "503": "unavailable",
}


@dataclass(frozen=True)
class Redirect:
    number: str  # the user part of the diverting (originally called) URI
    reason: str  # Diversion's reason token, e.g. "user-busy", "no-answer", "unknown"

    @property
    def greeting(self) -> str:
        """The voicemail greeting Asterisk's busy/unavailable options would pick."""
        return "busy" if self.reason == "user-busy" else "unavail"


def _addresses(values: list[str]) -> list[Address]:
    found: list[Address] = []
    for value in values:
        try:
            found.extend(Address.parse_many(value))
        except ValueError:
            continue
    return found


# History-Info URIs often carry `?Reason=SIP%3Bcause%3D486` headers, which sipmessage's URI
# parser refuses, so its entries are read with two small patterns instead.
_HISTORY_URI = re.compile(r"<([^>]*)>")
_URI_USER = re.compile(r"^sips?:([^@;?>]+)@", re.IGNORECASE)
_CAUSE = re.compile(r"(?<![A-Za-z0-9-])cause(?:=|%3D)(\d{3})", re.IGNORECASE)
# A display name may hold `<...>` or commas: quoted strings are blanked before the search.
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')


def _history_entries(values: list[str]) -> list[tuple[str | None, str | None]]:
    """(user, cause) for each History-Info entry, in header order."""
    entries = []
    for value in values:
        for uri in _HISTORY_URI.findall(_QUOTED.sub('""', value)):
            user = _URI_USER.match(uri)
            cause = _CAUSE.search(uri)
            entries.append(
                (
                    urllib.parse.unquote(user.group(1)) if user else None,
                    cause.group(1) if cause else None,
                )
            )
    return entries


def redirect_of(request: Request) -> Redirect | None:
    diversions = _addresses(request.headers.getlist("Diversion"))
    if diversions:
        first = diversions[0]
        if first.uri.user:
            # Parameter names are case-insensitive (RFC 3261 7.3.1), sipmessage's keys are not.
            given = next((v for k, v in first.parameters.items() if k.lower() == "reason"), None)
            reason = (given or "unknown").strip('"').lower()
            return Redirect(first.uri.user, reason)
    history = _history_entries(request.headers.getlist("History-Info"))
    if history and history[0][0]:
        causes = [cause for _user, cause in history[1:] if cause]
        reason = CAUSE_REASONS.get(causes[0], "unknown") if causes else "unknown"
        return Redirect(history[0][0], reason)
    return None
