"""systemd's readiness protocol (sd_notify): `READY=1`, `RELOADING=1`, `STOPPING=1`.

The protocol is one datagram of `KEY=VALUE` lines sent to the Unix socket named by the
NOTIFY_SOCKET environment variable (a path, or an abstract name when it starts with `@`).
That is about ten lines of code, so we write them here rather than add a dependency (and a
C library binding) for it. Without NOTIFY_SOCKET (not started by systemd with Type=notify)
every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger(__name__)


class SdNotifier:
    """Sends state changes to the service manager; silent when there is none."""

    def __init__(self, address: str | None) -> None:
        self.address = address or None
        if self.address is not None and self.address.startswith("@"):
            self.address = "\0" + self.address[1:]  # Linux abstract socket namespace

    @classmethod
    def from_environment(cls) -> SdNotifier:
        return cls(os.environ.get("NOTIFY_SOCKET"))

    def send(self, *fields: str) -> bool:
        """Send one datagram of `fields`; True when a service manager got it."""
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(fields).encode(), self.address)
        except OSError as exc:  # a manager that went away must not stop the server
            log.warning("sd_notify to %s failed: %s", self.address.lstrip("\0"), exc)
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> bool:
        # systemd wants the monotonic time with RELOADING=1, to match it with the reload job.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self, status: str = "") -> bool:
        return self.send("STOPPING=1", *([f"STATUS={status}"] if status else []))
