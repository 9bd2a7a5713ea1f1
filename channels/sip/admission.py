"""Which new calls the endpoint takes: pure checks and counters, no I/O.

A stranger can send INVITEs as fast as the network allows; each one costs a task, a database
lookup and an RTP socket. These bound that work (a total and a per-source limit on calls in
progress), refuse extensions that could inject into a dial plan, and keep the log readable
while a flood is refused (`LogLimiter`).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

# What a dial plan extension may contain: digits, letters and the dialable symbols. Anything
# else (`@`, `,`, `;`, `$`, quotes, spaces...) could reach a VoiceMail(${EXTEN}@...) argument
# or a realtime lookup, so the call is refused before the router is asked.
_EXTENSION = re.compile(r"[0-9A-Za-z*#+._-]+")

# Seconds a refused caller is asked to wait (RFC 3261 20.33) before trying again.
RETRY_AFTER = 10


def valid_extension(value: str) -> bool:
    """True when `value` is a non-empty string of dial plan safe characters."""
    return _EXTENSION.fullmatch(value) is not None


@dataclass
class CallLimits:
    """Calls in progress, in total and by source address; `max_*` of 0 means no limit."""

    max_calls: int = 0
    max_calls_per_ip: int = 0
    _by_ip: Counter[str] = field(default_factory=Counter)
    total: int = 0

    def refusal(self, ip: str) -> str | None:
        """Why a new call from `ip` would exceed a limit, or None when it may start."""
        if self.max_calls and self.total >= self.max_calls:
            return f"{self.total} calls in progress (maxcalls={self.max_calls})"
        if self.max_calls_per_ip and self._by_ip[ip] >= self.max_calls_per_ip:
            return f"{self._by_ip[ip]} calls from {ip} (limit {self.max_calls_per_ip} per address)"
        return None

    def started(self, ip: str) -> None:
        self.total += 1
        self._by_ip[ip] += 1

    def ended(self, ip: str) -> None:
        self.total -= 1
        self._by_ip[ip] -= 1
        if self._by_ip[ip] <= 0:
            del self._by_ip[ip]  # the counter stays as small as the calls in progress

    def from_ip(self, ip: str) -> int:
        return self._by_ip[ip]


@dataclass
class LogLimiter:
    """At most one log line per `interval` seconds for one kind of event.

    `should_log(now)` says whether to write a line now; `suppressed` is how many were left
    out since the last one, for that line to mention.
    """

    interval: float = 10.0
    _last: float | None = None
    suppressed: int = 0

    def should_log(self, now: float) -> bool:
        if self._last is not None and now - self._last < self.interval:
            self.suppressed += 1
            return False
        self._last = now
        return True

    def take_suppressed(self) -> int:
        count, self.suppressed = self.suppressed, 0
        return count
