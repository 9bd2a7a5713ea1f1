"""AMI over TCP: one session per connection, login, per-source rate limits, event fan-out.

Every session reads actions with protocol.Parser and answers in order; events go to the
logged-in sessions whose read classes cover them. A slow client whose output piles up is
disconnected rather than letting memory grow.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from channels.sip.auth import FailureLimiter
from storage.conffile import ConfigError

from . import protocol
from .actions import ACTIONS, NEEDS_NO_LOGIN
from .manager_conf import AmiUser, ManagerSettings, load_manager_conf

if TYPE_CHECKING:
    from ..server import VoicemailServer
    from ..server_reload import ReloadResult

log = logging.getLogger(__name__)

MAX_PENDING_BYTES = 4 * 1024 * 1024  # unread output after which a session is dropped
LOGIN_FAILURES = 5  # wrong secrets from one address within LOGIN_WINDOW block it
LOGIN_WINDOW = 60.0
LOGIN_BLOCK = 60.0

SYSTEM = frozenset({"system"})
CALL = frozenset({"call"})


class AmiSession:
    """One TCP connection: who logged in, what it may see, and its output."""

    def __init__(self, ami: AmiServer, writer: asyncio.StreamWriter, address: str) -> None:
        self.ami = ami
        self.writer = writer
        self.address = address
        self.user: AmiUser | None = None
        self.challenge = ""
        self.events = True
        self.closing = False

    def send(self, data: bytes) -> None:
        if self.closing or self.writer.is_closing():
            return
        transport = self.writer.transport
        if transport.get_write_buffer_size() > MAX_PENDING_BYTES:
            log.warning("AMI: %s does not read its events; disconnecting", self.address)
            self.close()
            return
        self.writer.write(data)

    def close(self) -> None:
        self.closing = True
        self.writer.close()

    def wants(self, classes: frozenset[str]) -> bool:
        return self.user is not None and self.events and self.user.may_read(classes)


class AmiServer:
    """The AMI listener of one VoicemailServer."""

    def __init__(self, server: VoicemailServer, settings: ManagerSettings) -> None:
        self.server = server
        self.settings = settings
        self.sessions: set[AmiSession] = set()
        self.limiter = FailureLimiter(LOGIN_FAILURES, LOGIN_WINDOW, LOGIN_BLOCK)
        self.started_at = time.time()
        self.reloaded_at = self.started_at
        self.reload_module = ""  # the Module: of the AMI Reload in progress
        self._listener: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def from_config(cls, server: VoicemailServer) -> AmiServer | None:
        """None when manager.conf is missing or says enabled = no."""
        settings = load_manager_conf(server.config.directory)
        return cls(server, settings) if settings.enabled else None

    @property
    def port(self) -> int:
        assert self._listener is not None
        return int(self._listener.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._listener = await asyncio.start_server(
            self._session, self.settings.bindaddr, self.settings.port
        )
        log.info("AMI: manager connections accepted at %s:%d", self.settings.bindaddr, self.port)

    async def stop(self) -> None:
        """Shutdown to every session that reads system events, then close them all."""
        self.broadcast("Shutdown", SYSTEM, [("Shutdown", "Cleanly"), ("Restart", "False")])
        if self._listener is not None:
            self._listener.close()
        for session in list(self.sessions):
            try:
                await asyncio.wait_for(session.writer.drain(), 2)
            except (TimeoutError, OSError):
                pass
            session.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2)

    def reload_users(self) -> str:
        """Re-read manager.conf's users; the listening address needs a restart. A broken
        file keeps the users in force (ConfigError raised)."""
        fresh = load_manager_conf(self.server.config.directory)
        self.settings = ManagerSettings(
            self.settings.enabled, self.settings.port, self.settings.bindaddr, fresh.users
        )
        if (fresh.enabled, fresh.port, fresh.bindaddr) != (
            self.settings.enabled,
            self.settings.port,
            self.settings.bindaddr,
        ):
            return "manager.conf enabled/port/bindaddr changed; that takes effect after a restart"
        return ""

    def reloaded(self, result: ReloadResult) -> None:
        """After every reload (console, SIGHUP or AMI): manager.conf's users, then the Reload
        event; `reload_module` is the Module: an AMI Reload named, else All."""
        warning = ""
        try:
            if result.ok:  # a refused reload keeps every file's old contents, this one's too
                warning = self.reload_users()
        except ConfigError as exc:
            warning = f"manager.conf refused, keeping its users: {exc}"
        if warning:
            result.warn(warning)
        self.reloaded_at = time.time()
        module, self.reload_module = self.reload_module or "All", ""
        self.broadcast(
            "Reload",
            SYSTEM,
            [
                ("Module", module),
                ("Status", "Success" if result.ok else "Failure"),
                ("Message", result.summary),
            ],
        )

    def broadcast(
        self, name: str, classes: frozenset[str], fields: Iterable[tuple[str, object]]
    ) -> None:
        data = protocol.event(name, classes, fields)
        for session in list(self.sessions):
            if session.wants(classes):
                session.send(data)

    def mailbox_changed(self, mailbox: str, context: str) -> None:
        """A mailbox's counts may have moved: MessageWaiting with the counts as stored."""
        if not any(session.wants(CALL) for session in self.sessions):
            return
        task = asyncio.ensure_future(self._message_waiting(mailbox, context))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _message_waiting(self, mailbox: str, context: str) -> None:
        store = self.server.store
        if store is None:
            return
        try:
            new, old = await store.mwi_counts([(context, mailbox)])
        except Exception as exc:  # a database outage must not end the feed
            log.warning("AMI: no MessageWaiting for %s@%s: %s", mailbox, context, exc)
            return
        self.broadcast(
            "MessageWaiting",
            CALL,
            [
                ("Mailbox", f"{mailbox}@{context}"),
                ("Waiting", 1 if new else 0),
                ("New", new),
                ("Old", old),
            ],
        )

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        session = AmiSession(self, writer, peer[0] if peer else "")
        self.sessions.add(session)
        parser = protocol.Parser()
        try:
            writer.write(protocol.BANNER)
            while not session.closing:
                data = await reader.read(65536)
                if not data:
                    break
                for action in parser.feed(data):
                    await self.handle(session, action)
                    if session.closing:
                        break
                await writer.drain()
        except (OSError, protocol.ProtocolError) as exc:
            log.info("AMI: session from %s ended: %s", session.address, exc)
        finally:
            self.sessions.discard(session)
            session.close()

    async def handle(self, session: AmiSession, action: protocol.Message) -> None:
        """One action: login first, then the user's write classes decide."""
        name = action.action.lower()
        if not name:
            session.send(protocol.error(action, "Missing action in request"))
            return
        if name == "login":
            self._login(session, action)
            return
        if name == "challenge":
            self._challenge(session, action)
            return
        if session.user is None and name not in NEEDS_NO_LOGIN:
            session.send(protocol.error(action, "Authentication Required"))
            return
        entry = ACTIONS.get(name)
        if entry is None:
            session.send(
                protocol.error(
                    action,
                    f"Invalid/unknown command: {action.action}. "
                    "Use Action: ListCommands to show available commands.",
                )
            )
            return
        classes, handler = entry
        if session.user is not None and not session.user.may_write(classes):
            session.send(protocol.error(action, "Permission denied"))
            return
        try:
            answer = await handler(self, session, action)
        except Exception:  # a bug in one action must not end the session
            log.exception("AMI: action %s failed", action.action)
            answer = protocol.error(action, f"{action.action} failed; the server log says why")
        session.send(answer)

    def _challenge(self, session: AmiSession, action: protocol.Message) -> None:
        if action.get("AuthType").strip().lower() != "md5":
            session.send(protocol.error(action, "Must specify AuthType"))
            return
        if not session.challenge:
            session.challenge = str(secrets.randbelow(2**31 - 1) + 1)
        session.send(protocol.response(action, fields=[("Challenge", session.challenge)]))

    def _login(self, session: AmiSession, action: protocol.Message) -> None:
        if session.user is not None:
            session.send(protocol.response(action, message="Already authenticated"))
            return
        now = time.monotonic()
        if self.limiter.blocked(session.address, now):
            log.warning("AMI: login from %s refused: too many failures", session.address)
            session.send(protocol.error(action, "Authentication failed"))
            return
        username = action.get("Username").strip()
        user = self.settings.user(username)
        reason = self._refusal(session, action, user)
        if reason is not None:
            self.limiter.failed(session.address, now)
            log.warning("AMI: %s failed to log in as %r: %s", session.address, username, reason)
            session.send(protocol.error(action, "Authentication failed"))
            return
        assert user is not None
        self.limiter.succeeded(session.address)
        session.user = user
        session.events = action.get("Events", "on").strip().lower() not in ("off", "no", "0")
        log.info("AMI: %s logged in from %s", user.name, session.address)
        session.send(protocol.response(action, message="Authentication accepted"))
        if session.wants(SYSTEM):
            uptime = int(time.time() - self.started_at)
            session.send(
                protocol.event(
                    "FullyBooted",
                    SYSTEM,
                    [
                        ("Uptime", uptime),
                        ("LastReload", int(time.time() - self.reloaded_at)),
                        ("Status", "Fully Booted"),
                    ],
                )
            )

    def _refusal(
        self, session: AmiSession, action: protocol.Message, user: AmiUser | None
    ) -> str | None:
        if user is None:
            return "no such user"
        if not user.acl.allows(session.address):
            return "address not permitted by manager.conf deny/permit"
        if action.get("AuthType").strip().lower() == "md5":
            if not session.challenge:
                return "MD5 login without a Challenge"
            expected = hashlib.md5((session.challenge + user.secret).encode()).hexdigest()
            session.challenge = ""  # one challenge per attempt
            if not hmac.compare_digest(expected, action.get("Key").strip().lower()):
                return "wrong key"
            return None
        if not hmac.compare_digest(user.secret.encode(), action.get("Secret").encode()):
            return "wrong secret"
        return None
