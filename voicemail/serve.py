"""`voicemail serve`: run one server until it is stopped.

Signals, the pid file, dropping root and systemd's notifications live here, around the
server object, so that tests can run a VoicemailServer in-process without them.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import os
import signal
from collections.abc import Callable

from .config import ServerConfig
from .lifecycle import Lifecycle, PrivilegeError, RunAs
from .logconfig import apply_logger_conf
from .server import StartupError, VoicemailServer

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
LARGE_ALLOCATION = 256 * 1024  # 8 s of 8 kHz PCM: a played message, its BLOB, the driver's copy


def map_large_allocations() -> bool:
    """Have glibc give each buffer of LARGE_ALLOCATION or more its own mapping, returned to
    the system when freed; False where there is no glibc.

    glibc's default raises that threshold each time such a buffer is freed, after which the
    1 MB messages that VoiceMailMain reads and decodes in worker threads come from the heaps,
    where a freed one can stay: 200 sessions hearing two 1 MB messages peaked at 380 and
    738 MB in two runs without this, and at 342-351 MB in three with it, 91-129 MB after
    them (bench/RESULTS.md, "Retrievals"); no CPU cost showed.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, LARGE_ALLOCATION))


async def serve(
    config: ServerConfig, ready: Callable[[VoicemailServer], None] | None = None
) -> None:
    """Run until stopped, then stop cleanly (voicemail/lifecycle.py).

    SIGTERM stops gracefully (a second one at once), SIGHUP reloads, cancelling (Ctrl-C)
    stops at once. Root is dropped for asterisk.conf runuser/rungroup once the sockets are
    bound; systemd hears READY=1 once we serve and STOPPING=1 when we stop.
    """
    apply_logger_conf(config.directory)  # logger.conf: format and levels
    map_large_allocations()
    try:
        run_as = RunAs.resolve(
            config.runuser, config.rungroup, str(config.directory / "asterisk.conf")
        )
    except PrivilegeError as exc:
        raise StartupError(str(exc)) from exc
    server = VoicemailServer(config)
    await server.start()
    lifecycle = Lifecycle(server)
    lifecycle.attach()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, lifecycle.reload)
    loop.add_signal_handler(signal.SIGTERM, lifecycle.on_sigterm)
    pidfile = config.pidfile
    try:
        pidfile.parent.mkdir(parents=True, exist_ok=True)
        pidfile.write_text(f"{os.getpid()}\n")
        if run_as is not None:
            socket_path = config.control_socket  # the console's, if any
            owned = (pidfile.parent, pidfile, *([socket_path] if socket_path else []))
            run_as.drop(config.local_spool, owned)
    except (OSError, PrivilegeError) as exc:
        pidfile.unlink(missing_ok=True)
        await server.stop()
        if isinstance(exc, PrivilegeError):
            raise StartupError(str(exc)) from exc
        raise StartupError(f"cannot write the pid file {pidfile}: {exc}") from exc
    try:
        if ready is not None:
            ready(server)
        lifecycle.notifier.ready("serving")
        await lifecycle.finished()
    finally:
        if lifecycle.state == "running":  # cancelled: Ctrl-C
            lifecycle.notifier.stopping("stopping")
        try:
            pidfile.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("cannot remove the pid file %s: %s", pidfile, exc)
        await server.stop()
