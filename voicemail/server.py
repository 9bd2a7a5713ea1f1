"""The voicemail server: configuration, database pools, the SIP endpoint and the dial plan.

Data flows one way: SIP/RTP -> Channel -> dial plan application -> storage.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Sequence
from pathlib import Path

from channels.channel import Channel
from channels.sip.endpoint import EndpointConfig, SipEndpoint
from channels.sip.mwi_service import MwiService
from channels.sip.registrar import Registrar
from channels.sip.registration import PeerDirectory, RealtimeOptions, Registrations
from storage.audioformats import stored_format
from storage.changelog import ChangeLog
from storage.conffile import ConfigError
from storage.logins import LoginStore
from storage.messages import MessageStore
from storage.odbc import DatabaseError, OdbcPool, check_blob_column
from storage.outbox import Outbox
from storage.realtime import Realtime
from storage.realtime_tables import extensions_table, sippeers_table
from storage.recording_journal import RecordingJournals
from storage.schema import (
    create_tables,
    login_audit_table,
    login_state_table,
    mailbox_changes_table,
    messages_table,
    outbox_table,
    storage_tables,
    voicemail_table,
)
from storage.schemacheck import Finding, check_table, expected_table
from storage.spool import PendingMessage, Spool, SpoolFlusher
from storage.staticconfig import ast_config_table

from .ami.server import AmiServer
from .app_voicemail import VoiceMailApp
from .basic_apps import BasicApplications
from .callpath import CallPathDatabase
from .config import ServerConfig, voicemail_settings
from .console.commands import Commands
from .console.control import ControlServer, ControlSocketError
from .console.server_commands import register_server_commands
from .dialplan import Dialplan
from .dialplan_runner import DialplanRunner
from .externnotify import ExternNotify
from .http_status import load_http_settings
from .invite_policy import InvitePolicy
from .lifecycle import Lifecycle
from .login_guard import LoginGuard
from .mailboxes import MailboxDirectory
from .metrics import ServerMetrics
from .mwi_feed import MwiFeed, follow_interval, listener_conninfo
from .notifications import notify_recovered
from .outbox_sender import OutboxSender, server_id_for
from .server_reload import ReloadResult, reload_server, static_peers
from .sounds import SoundLibrary
from .vmmain.app import VoiceMailMainApp

log = logging.getLogger(__name__)

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"


class StartupError(Exception):
    """The server cannot start; the message is for the operator, no traceback needed."""


class VoicemailServer:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.pools: dict[str, OdbcPool] = {}
        self.dialplan = Dialplan.from_config(config.extensions)
        self.sounds = SoundLibrary([config.sounds_dir], PROMPTS_DIR, config.language)
        self.endpoint: SipEndpoint | None = None
        self.store: MessageStore | None = None
        self.runner: DialplanRunner | None = None
        self.journals: RecordingJournals | None = None
        self.voicemailmain: VoiceMailMainApp | None = None
        self.flusher: SpoolFlusher | None = None
        self._flusher_task: asyncio.Future[None] | None = None
        self.registrations: Registrations | None = None
        self._started: set[str] = set()
        self.mailboxes: MailboxDirectory | None = None
        self.voicemail: VoiceMailApp | None = None
        self.mwi: MwiService | None = None
        self.changelog: ChangeLog | None = None
        self.mwi_feed: MwiFeed | None = None
        self.externnotify: ExternNotify | None = None
        self.outbox: Outbox | None = None
        self.logins: LoginStore | None = None  # failed logins and their audit (login_guard)
        self.outbox_sender: OutboxSender | None = None
        # Database reads on a caller's time: bounded, skipped for a while after an outage.
        self.call_path = CallPathDatabase()
        # The console's commands; the control socket and AMI's Command action run them.
        self.commands = Commands()
        self.control: ControlServer | None = None
        self.ami: AmiServer | None = None  # manager.conf; None when AMI is off
        self.mailbox_listeners: list[Callable[[str, str], None]] = []  # (mailbox, context)
        self.reload_listeners: list[Callable[[ReloadResult], None]] = []  # after each reload
        self.metrics: ServerMetrics | None = None  # /metrics, /health, /ready (metrics.py)
        # Graceful stop and stop now (voicemail/lifecycle.py); set by serve().
        self.lifecycle: Lifecycle | None = None

    def _pool(self, class_name: str) -> OdbcPool:
        pool = self.pools.get(class_name)
        if pool is None:
            connection_class = self.config.connection_classes.get(class_name)
            if connection_class is None:
                raise StartupError(f"res_odbc.conf has no enabled connection class [{class_name}]")
            pool = OdbcPool(connection_class)
            self.pools[class_name] = pool
        return pool

    async def _start_pool(self, pool: OdbcPool) -> None:
        if pool.name in self._started:
            return
        try:
            await pool.start()
        except DatabaseError as exc:
            raise StartupError(f"cannot connect to the database: {exc}") from exc
        self._started.add(pool.name)

    async def open_storage(self, config_from_database: bool = True) -> None:
        """Connect every class we use; a dead database stops start-up with its message.

        Realtime classes come first: voicemail.conf itself may live in the database
        (`voicemail.conf => odbc,class,ast_config` in extconfig.conf), and it names the
        class that stores messages.
        """
        for mapping in self.config.realtime:
            if mapping.driver == "odbc":
                await self._start_pool(self._pool(mapping.database))
        self.realtime = Realtime(self.config.realtime, self.pools, config_dir=self.config.directory)
        if config_from_database and self.realtime.has_family("voicemail.conf"):
            try:
                conf = await self.realtime.load_config_file("voicemail.conf")
            except (DatabaseError, ConfigError) as exc:
                raise StartupError(f"voicemail.conf from the database: {exc}") from exc
            if conf is not None:
                self.config.voicemail = voicemail_settings(conf)
        storage_pool = self._pool(self.config.voicemail.odbcstorage)
        await self._start_pool(storage_pool)
        self.outbox = Outbox(storage_pool)  # mail, pager and webhook rows (outbox_sender.py)
        self.store = MessageStore(
            storage_pool,
            self.config.voicemail.odbctable,
            self.config.spool_prefix,
            outbox=self.outbox,
        )

        # Every folder write records its mailboxes, so other servers' lamps follow.
        self.changelog = ChangeLog(storage_pool)
        self.store.on_change = self.changelog.hook

    async def init_database(self) -> list[str]:
        """`voicemail db init`: create the message table and the mapped realtime tables.

        voicemail.conf is read from its file here: its table may not exist yet.
        """
        await self.open_storage(config_from_database=False)
        created = []
        storage_pool = self._pool(self.config.voicemail.odbcstorage)
        await create_tables(storage_pool, storage_tables(self.config.voicemail.odbctable))
        created.append(f"{self.config.voicemail.odbctable} on [{storage_pool.name}]")
        definitions = {
            "voicemail": voicemail_table,
            "sippeers": sippeers_table,
            "extensions": extensions_table,
        }
        for mapping in self.config.realtime:
            if mapping.driver != "odbc":
                continue
            define = definitions.get(mapping.family)
            if mapping.family.endswith(".conf"):
                table = ast_config_table(name=mapping.table)
            elif define is not None:
                table = define(name=mapping.table)
            else:
                continue
            await create_tables(self._pool(mapping.database), [table])
            created.append(f"{mapping.table} on [{mapping.database}]")
        return created

    async def check_database(self, *, connect: bool = True) -> list[Finding]:
        """`voicemail db check`, and start-up: the message table and every mapped family's
        table against what we expect, each finding with the SQL that fixes it."""
        if connect:
            await self.open_storage()
        storage_pool = self._pool(self.config.voicemail.odbcstorage)
        table = messages_table(self.config.voicemail.odbctable)
        findings = await check_table(storage_pool, table, "voicemessages")
        findings += await check_table(storage_pool, outbox_table(), "outbox")
        findings += await check_table(storage_pool, mailbox_changes_table(), "mailbox_changes")
        findings += await check_table(storage_pool, login_state_table(), "vm_login_state")
        findings += await check_table(storage_pool, login_audit_table(), "vm_login_audit")
        for mapping in self.config.realtime:
            if mapping.driver != "odbc":
                continue
            expected = expected_table(mapping.family, mapping.table)
            if expected is not None:
                findings += await check_table(self._pool(mapping.database), *expected)
        return findings

    async def _refuse_broken_tables(self) -> None:
        """A wrong table name or a missing column is a configuration error, found before the
        first call, not a database outage that takes messages for mailboxes nobody has."""
        try:
            findings = await self.check_database(connect=False)
        except DatabaseError as exc:
            raise StartupError(f"cannot check the tables: {exc}") from exc
        errors = [finding for finding in findings if finding.severity == "error"]
        if errors:
            raise StartupError(
                "the database does not have the tables this configuration names "
                "(`voicemail db init` creates missing ones):\n"
                + "\n".join(str(finding) for finding in errors)
            )

    async def start(self) -> None:
        """Open storage, start the tasks and listen; a failure stops what had started (the
        flusher, the outbox sender, the SIP endpoint...) before it is raised, so that the
        process can exit: left to asyncio's cancel-at-exit, one of them sometimes never ended
        (tests/test_startup_checks_e2e.py::test_a_bad_peer_option_stops_start_up_at_its_line)."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        # Mistakes in the files themselves first: they need no database to be found.
        tls_context = self._tls_context()
        self.ami = AmiServer.from_config(self)  # manager.conf: a ConfigError at file:line
        http_settings = load_http_settings(self.config.directory)
        await self.open_storage()
        assert self.store is not None
        try:
            await check_blob_column(self.store.pool, self.config.voicemail.odbctable, "recording")
        except DatabaseError as exc:
            raise StartupError(str(exc)) from exc
        await self._refuse_broken_tables()
        try:
            spool = Spool(self.config.local_spool)
            self.journals = RecordingJournals(spool)
            # Recordings a crash interrupted become spooled messages before the flusher starts.
            recovered = await asyncio.to_thread(self.journals.recover)
        except OSError as exc:
            raise StartupError(f"local spool {self.config.local_spool}: {exc}") from exc
        for message in recovered:
            log.warning(
                "recovered message %s for %s@%s (%d s) from a recording interrupted by a crash",
                message.msg_id,
                message.mailbox,
                message.context,
                message.duration,
            )
        if recovered:  # their notifications, from the mailboxes as configured now
            lookup = MailboxDirectory(self.config.voicemail, self.realtime, self.call_path)
            fmt = stored_format("|".join(self.config.voicemail.formats))
            await notify_recovered(spool, recovered, lookup, fmt)
        self.flusher = SpoolFlusher(spool, self.store, on_stored=self._message_stored)
        if self.flusher.backlog:
            log.info("%d message(s) waiting in the local spool", self.flusher.backlog)
        self._flusher_task = asyncio.ensure_future(self.flusher.run())
        await self._start_outbox_sender(spool)
        conf_path = None  # where a static mailbox's new PIN goes; none if from the database
        if not self.realtime.has_family("voicemail.conf"):
            conf_path = self.config.directory / "voicemail.conf"
        self.mailboxes = MailboxDirectory(
            self.config.voicemail, self.realtime, self.call_path, conf_path
        )
        self.voicemail = VoiceMailApp(
            self.store,
            self.flusher,
            self.mailboxes,
            self.sounds,
            self.config.voicemail.formats,
            self.journals,
            extension_exists=lambda context, exten: (
                self.runner is not None and self.runner.static_extension_exists(context, exten)
            ),
        )
        voicemail = self.voicemail
        voicemail.max_record_seconds = self.config.voicemail.maxrecordsecs
        self.voicemailmain = VoiceMailMainApp(
            self.store,
            self.mailboxes,
            self.sounds,
            general=self.config.voicemail.general,
            zonemessages=self.config.voicemail.zonemessages,
            audio_format=voicemail.format,
            mailbox_changed=self.mailbox_changed,
            max_record_seconds=self.config.voicemail.maxrecordsecs,
            leave_message=self._leave_message,
        )
        self.voicemailmain.access.outbox = self.outbox  # read/deleted webhook events
        # Failed logins counted in the database: a lockout holds on every server sharing it.
        self.logins = LoginStore(self.store.pool)
        self.voicemailmain.access.guard = LoginGuard(self.logins)
        self.runner = DialplanRunner(
            self.dialplan,
            self.realtime,
            self.call_path,
            {
                "voicemail": voicemail.run,
                "voicemailmain": self.voicemailmain.run,
                **BasicApplications(self.sounds).table(),
            },
        )
        for problem in self.runner.unsupported_applications():
            log.warning("%s", problem)
        sip = self.config.sip
        self.endpoint = SipEndpoint(
            EndpointConfig(
                host=sip.bindaddr,
                port=sip.bindport,
                rtp_ports=(sip.rtpstart, sip.rtpend),
                default_context=sip.context,
                tcp=sip.tcpenable,
                tcp_port=sip.tcpport,
                tls_context=tls_context,
                tls_port=sip.tlsport,
                rtp_timeout=sip.rtptimeout,
                comedia="comedia" in sip.nat,
                tcp_host=sip.tcp_host,
                tls_host=sip.tls_host,
                max_calls=sip.maxcalls,
                max_calls_per_ip=sip.maxcallsperip,
                guard=sip.guard,
            ),
            self.runner.route,
        )
        try:
            await self.endpoint.start()
        except OSError as exc:
            raise StartupError(f"cannot listen on {sip.bindaddr}:{sip.bindport}: {exc}") from exc
        self.endpoint.admission = self._spool_admission
        self._start_registrations()
        await self._start_mwi_feed()
        register_server_commands(self)
        self.control = ControlServer(self.config.control_socket, self.commands)
        try:
            await self.control.start()
        except ControlSocketError as exc:
            raise StartupError(str(exc)) from exc
        if self.ami is not None:
            try:
                await self.ami.start()
            except OSError as exc:
                raise StartupError(f"AMI: {exc}") from exc
            self.mailbox_listeners.append(self.ami.mailbox_changed)
            self.reload_listeners.append(self.ami.reloaded)
        self.metrics = ServerMetrics(self)
        self.metrics.attach()
        try:
            await self.metrics.start(http_settings)
        except OSError as exc:
            where = f"{http_settings.bindaddr}:{http_settings.bindport}"
            raise StartupError(f"http.conf: cannot listen on {where}: {exc}") from exc

    async def _start_outbox_sender(self, spool: Spool) -> None:
        """The task sending the outbox; woken by every committed deposit."""
        assert self.outbox is not None and self.store is not None and self.flusher is not None
        sender = OutboxSender(
            self.outbox,
            self.store,
            lambda: self.config.voicemail,  # a reload's mail settings apply to the next send
            server_id_for(spool.directory),
        )
        self.outbox_sender = sender
        stored = self.flusher.on_stored

        def stored_then_wake(message: PendingMessage, msgnum: int) -> object:
            sender.wake()
            return stored(message, msgnum) if stored is not None else None

        self.flusher.on_stored = stored_then_wake  # type: ignore[assignment]
        await sender.start()

    def _start_registrations(self) -> None:
        """Peers (sip.conf and realtime sippeers), REGISTER, SUBSCRIBE and MWI."""
        assert self.endpoint is not None
        sip = self.config.sip
        try:
            static = static_peers(sip)
        except ConfigError as exc:
            raise StartupError(str(exc)) from exc
        defaults = list(sip.general.items())
        directory = PeerDirectory(
            static,
            self.realtime,
            RealtimeOptions(
                rtcachefriends=sip.rtcachefriends,
                rtupdate=sip.rtupdate,
                rtautoclear=sip.rtautoclear,
                ignoreregexpire=sip.ignoreregexpire,
                regserver=sip.regserver,
            ),
            defaults=dict(defaults),
        )
        registrar = Registrar(sip.minexpiry, sip.maxexpiry, sip.defaultexpiry)
        self.registrations = Registrations(
            self.endpoint, directory, realm=sip.realm, registrar=registrar
        )
        self.mwi = MwiService(
            self.endpoint,
            self.registrations,
            self._mwi_counts,
            self._poll_interval(),
            each_counter=self._mwi_counts_each,
            on_poll_change=self._poll_change,
        )
        self.endpoint.handlers.update(
            {
                "REGISTER": self.registrations.handle_register,
                "SUBSCRIBE": self.mwi.handle_subscribe,
                "response": self._client_response,
                "timeout": self._client_timeout,
            }
        )
        self.endpoint.authorize = InvitePolicy(
            lambda: self.config.sip, self.registrations, self.call_path
        )
        self.registrations.start()
        self.mwi.start()

    async def _mwi_counts(self, mailboxes: list[tuple[str, str]]) -> tuple[int, int]:
        assert self.store is not None
        return await self.store.mwi_counts([(context, box) for box, context in mailboxes])

    async def _mwi_counts_each(
        self, mailboxes: list[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[int, int]]:
        assert self.store is not None
        each = await self.store.mwi_counts_each([(context, box) for box, context in mailboxes])
        return {(box, context): counts for (context, box), counts in each.items()}

    async def _start_mwi_feed(self) -> None:
        """Changes committed by any server (this one too) reach our lamps and externnotify."""
        assert self.store is not None and self.changelog is not None and self.mwi is not None
        command = self.config.voicemail.general.get("externnotify", "").strip()
        if command:
            self.externnotify = ExternNotify(command, self.store.counts)
            self.externnotify.start()
        pool = self.store.pool
        self.mwi_feed = MwiFeed(
            self.changelog,
            self.mailbox_changed,
            self.mwi.recount_all,
            conninfo=listener_conninfo(pool.backend, pool.connection_class.connection_string),
            follow_interval=follow_interval(self.config.voicemail.general),
        )
        try:
            await self.mwi_feed.start()
        except DatabaseError as exc:
            raise StartupError(f"cannot read the mailbox change log: {exc}") from exc

    def _poll_change(self, mailbox: str, context: str) -> None:
        """The poll saw a mailbox's counts move (changed behind our back)."""
        if self.externnotify is not None:
            self.externnotify.mailbox_changed(mailbox, context)

    def _client_response(self, transport: object, response: object, tx: object) -> None:
        self._client_answered(tx, response.code)  # type: ignore[attr-defined]

    def _client_timeout(self, transport: object, request: object, tx: object) -> None:
        self._client_answered(tx, None)

    def _client_answered(self, tx: object, code: int | None) -> None:
        method = tx.request.method  # type: ignore[attr-defined]
        if method == "OPTIONS":
            asyncio.ensure_future(self.registrations.qualify_answered(tx, code is not None))
        elif method == "NOTIFY":
            self.mwi.notify_result(tx, code)  # type: ignore[arg-type]

    def mailbox_changed(self, mailbox: str, context: str) -> None:
        """A mailbox's counts may have changed: phones, externnotify and listeners hear it."""
        if self.mwi is not None:
            self.mwi.mailbox_changed(mailbox, context)
        if self.externnotify is not None:
            self.externnotify.mailbox_changed(mailbox, context)
        for listener in self.mailbox_listeners:
            listener(mailbox, context)

    async def _leave_message(self, channel: Channel, recipients: Sequence[tuple[str, str]]) -> str:
        """VoiceMailMain's reply and compose: VoiceMail(a@c&b@c) without options; its VMSTATUS."""
        assert self.voicemail is not None
        variables: dict[str, str] = {}
        boxes = "&".join(f"{mailbox}@{context}" for mailbox, context in recipients)
        await self.voicemail.run(channel, [boxes], variables)
        return variables.get("VMSTATUS", "FAILED")

    def _message_stored(self, message: PendingMessage, msgnum: int) -> None:
        """Called once a message is committed (now, or later from the spool)."""
        self.mailbox_changed(message.mailbox, message.context)

    async def reload(self) -> ReloadResult:
        """`voicemail reload`: re-read the configuration without dropping calls."""
        result = await reload_server(self)
        for listener in self.reload_listeners:
            listener(result)
        return result

    def _spool_admission(self) -> str | None:
        """New calls are refused (503) while the local spool holds more than spoolmaxmb:
        the database has been away long enough that the disk, not a caller, is at risk."""
        assert self.flusher is not None
        limit = self.config.voicemail.spoolmaxmb * 1024 * 1024
        if self.flusher.spool.over_limit(limit):
            used = self.flusher.spool.bytes_used / 1024 / 1024
            return f"local spool holds {used:.0f} MB, over spoolmaxmb={limit // 1048576}"
        return None

    def _poll_interval(self) -> float:
        settings = self.config.voicemail
        return float(settings.pollfreq) if settings.pollmailboxes else 0.0

    def _tls_context(self) -> ssl.SSLContext | None:
        sip = self.config.sip
        if not sip.tlsenable:
            return None
        if sip.tlscertfile is None:
            raise StartupError("sip.conf: tlsenable=yes needs tlscertfile")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            context.load_cert_chain(sip.tlscertfile, sip.tlsprivatekey)
        except (OSError, ssl.SSLError) as exc:
            raise StartupError(f"sip.conf: cannot load TLS certificate: {exc}") from exc
        return context

    async def stop(self) -> None:
        if self.control is not None:
            await self.control.stop()  # also removes the socket file
        if self.ami is not None:
            await self.ami.stop()  # Shutdown first, while everything still runs
        if self.metrics is not None:
            await self.metrics.stop()
        if self.mwi_feed is not None:
            await self.mwi_feed.stop()
        if self.externnotify is not None:
            await self.externnotify.stop()
        if self.mwi is not None:
            self.mwi.stop()
        if self.registrations is not None:
            self.registrations.stop()
        if self.endpoint is not None:
            await self.endpoint.stop()
        if self.journals is not None:
            self.journals.close()
        if self.flusher is not None:
            self.flusher.stop()
            if self._flusher_task is not None:
                await asyncio.wait({self._flusher_task}, timeout=5)
        if self.outbox_sender is not None:
            await self.outbox_sender.stop()  # the send in flight finishes first
        for pool in self.pools.values():
            await pool.close()
