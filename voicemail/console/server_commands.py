"""The console commands of a running server, named and laid out as Asterisk 20's CLI.

Each handler reads the server's live objects (configuration, registrar, active calls,
store) and returns the text the operator sees; a failure is a CommandError.
"""

from __future__ import annotations

import time
from importlib import metadata
from typing import TYPE_CHECKING

from storage.odbc import DatabaseError

from ..logconfig import LEVELS, set_level
from ..login_admin import register_console_commands as register_login_commands
from ..operator_messages import register_console_commands as register_message_commands
from ..server_reload import ReloadResult
from .commands import CommandError

if TYPE_CHECKING:
    from ..server import VoicemailServer

PACKAGE = "ara-voicemail"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def format_duration(seconds: float) -> str:
    """Asterisk's uptime wording: "1 hour, 2 minutes, 3 seconds"."""
    left = int(seconds)
    parts = []
    for name, size in (
        ("year", 31536000),
        ("week", 604800),
        ("day", 86400),
        ("hour", 3600),
        ("minute", 60),
    ):
        if left >= size:
            parts.append(_plural(left // size, name))
            left %= size
    if left or not parts:
        parts.append(_plural(left, "second"))
    return ", ".join(parts)


def _hms(seconds: float) -> str:
    total = int(seconds)
    return f"{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"


class ServerCommands:
    """The handlers, bound to one server."""

    def __init__(self, server: VoicemailServer) -> None:
        self.server = server
        self.started = time.time()
        self.last_reload = self.started
        # Every reload counts (console, AMI, SIGHUP, `voicemail reload`), as Asterisk's does.
        server.reload_listeners.append(self._reloaded)

    def _reloaded(self, result: ReloadResult) -> None:
        if result.ok:
            self.last_reload = time.time()

    # -- reload -------------------------------------------------------------------------

    async def reload(self, arguments: list[str]) -> str:
        result = await self.server.reload()
        if not result.ok:
            raise CommandError(result.text())
        return result.text()

    # -- voicemail ------------------------------------------------------------------------

    async def show_users(self, arguments: list[str]) -> str:
        only = None
        if arguments:
            if len(arguments) != 2 or arguments[0].lower() != "for":
                raise CommandError("Usage: voicemail show users [for <context>]")
            only = arguments[1]
        settings = self.server.config.voicemail
        users = {
            (box.context, box.mailbox): (box.fullname, box.options.get("tz", ""))
            for box in settings.mailboxes.values()
        }
        realtime = getattr(self.server, "realtime", None)
        if realtime is not None and realtime.has_family("voicemail"):
            try:
                rows = await realtime.load_multi("voicemail", {"mailbox LIKE": "%"})
            except DatabaseError as exc:
                raise CommandError(f"cannot list the realtime mailboxes: {exc}") from exc
            for row in rows:
                key = (row.get("context") or "default", row.get("mailbox") or "")
                users.setdefault(key, (row.get("fullname") or "", row.get("tz") or ""))
        if only is not None:
            users = {key: value for key, value in users.items() if key[0] == only}
            if not users:
                raise CommandError(f'No such voicemail context "{only}"')
        if not users:
            return "There are no voicemail users currently defined"
        counts: dict[tuple[str, str], tuple[int, int]] = {}
        if self.server.store is not None:
            try:
                counts = await self.server.store.mwi_counts_each(list(users))
            except DatabaseError as exc:
                raise CommandError(f"cannot count messages: {exc}") from exc
        row = "{:<10} {:<5} {:<25} {:<10} {:>6}"
        lines = [row.format("Context", "Mbox", "User", "Zone", "NewMsg")]
        for (context, mailbox), (fullname, zone) in sorted(users.items()):
            new = counts.get((context, mailbox), (0, 0))[0]
            lines.append(row.format(context, mailbox, fullname, zone, new))
        lines.append(f"{len(users)} voicemail users configured.")
        return "\n".join(lines)

    async def show_zones(self, arguments: list[str]) -> str:
        zones = self.server.config.voicemail.zonemessages
        if not zones:
            return "There are no voicemail zones currently defined"
        row = "{:<15} {:<20} {:<45}"
        lines = [row.format("Zone", "Timezone", "Message Format")]
        for name, value in sorted(zones.items()):
            timezone, _, message_format = value.partition("|")
            lines.append(row.format(name, timezone, message_format).rstrip())
        return "\n".join(lines)

    # -- sip ------------------------------------------------------------------------------

    def _registrations(self):  # type: ignore[no-untyped-def]
        registrations = self.server.registrations
        if registrations is None:
            raise CommandError("SIP is not running")
        return registrations

    def _peers(self) -> dict[str, object]:
        registrations = self._registrations()
        peers = dict(registrations.peers.static)
        for peer in registrations.peers.in_memory():
            peers.setdefault(peer.name, peer)
        return peers

    def _status(self, name: str, qualify: int) -> str:
        registrations = self._registrations()
        if not qualify:
            return "Unmonitored"
        state = registrations.qualifying.get(name)
        if state is None:
            return "UNKNOWN"
        if state.lastms <= 0:
            return "UNREACHABLE"
        return f"OK ({state.lastms} ms)"

    async def sip_peers(self, arguments: list[str]) -> str:
        registrations = self._registrations()
        row = "{:<25.25} {:<39.39} {:<3.3} {:<10.10} {:<10.10} {:<3.3} {:<8} {:<11} {:<32.32} {}"
        lines = [
            row.format(
                "Name/username", "Host", "Dyn", "Forcerport", "Comedia", "ACL", "Port",
                "Status", "Description", "Realtime" if _realtime_peers(registrations) else "",
            ).rstrip()
        ]  # fmt: skip
        online = offline = unmonitored = 0
        for name, peer in sorted(self._peers().items()):
            binding = registrations.registrar.binding(name)
            host, port = ("(Unspecified)", "0")
            if binding is not None:
                host, port = binding.address[0], str(binding.address[1])
            elif peer.host and not peer.dynamic:
                host = peer.host
            user = peer.defaultuser or (binding.defaultuser if binding else "")
            status = self._status(name, peer.qualify)
            if status == "Unmonitored":
                unmonitored += 1
            elif status.startswith("OK"):
                online += 1
            else:
                offline += 1
            lines.append(
                row.format(
                    f"{name}/{user}" if user else name,
                    host,
                    "D" if peer.dynamic else "",
                    "Yes" if "force_rport" in peer.nat else "No",
                    "Yes" if "comedia" in peer.nat else "No",
                    "A" if peer.acl else "",
                    port,
                    status,
                    peer.options.get("description", ""),
                    "Cached RT" if peer.realtime else "",
                ).rstrip()
            )
        lines.append(
            f"{len(lines) - 1} sip peers [Monitored: {online} online, {offline} offline "
            f"Unmonitored: {unmonitored} online, 0 offline]"
        )
        return "\n".join(lines)

    async def sip_peer(self, arguments: list[str]) -> str:
        if not arguments:
            raise CommandError("Usage: sip show peer <name>")
        name = arguments[0]
        registrations = self._registrations()
        try:
            peer = await registrations.peers.find(name)
        except DatabaseError as exc:
            raise CommandError(f"cannot look up peer {name}: {exc}") from exc
        if peer is None:
            raise CommandError(f"Peer {name} not found.")
        binding = registrations.registrar.binding(name)
        now = registrations.now()
        fields = [
            ("* Name", peer.name),
            ("Description", peer.options.get("description", "")),
            ("Secret", "<Set>" if peer.secret else "<Not set>"),
            ("MD5Secret", "<Set>" if peer.md5secret else "<Not set>"),
            ("Context", peer.context),
            ("Language", peer.language),
            ("Mailbox", ",".join(f"{box}@{context}" for box, context in peer.mailbox)),
            ("VM Extension", peer.vmexten),
            ("Subscr.MWI", "Yes" if peer.subscribemwi else "No"),
            ("Dynamic", "Yes" if peer.dynamic else "No"),
            ("Callerid", f'"{peer.callerid_name}" <{peer.callerid_num}>'),
            ("Insecure", ",".join(sorted(peer.insecure)) or "no"),
            ("Force rport", "Yes" if "force_rport" in peer.nat else "No"),
            ("Comedia", "Yes" if "comedia" in peer.nat else "No"),
            ("ACL", "Yes" if peer.acl else "No"),
            ("DTMFmode", peer.dtmfmode),
            ("Addr->IP", f"{binding.address[0]}:{binding.address[1]}" if binding else "(null)"),
            ("Defaddr->IP", peer.host if peer.host and not peer.dynamic else "(null)"),
            ("Transport", ",".join(t.upper() for t in peer.transport)),
            ("Def. Username", peer.defaultuser),
            ("Useragent", binding.user_agent if binding else ""),
            ("Reg. Contact", binding.contact if binding else ""),
            ("Reg. Expire", f"{binding.remaining(now)} s" if binding else ""),
            ("Qualify Freq", f"{peer.qualifyfreq * 1000} ms"),
            ("Status", self._status(name, peer.qualify)),
            ("Realtime peer", "Yes, cached" if peer.realtime else "No"),
        ]
        return "\n" + "\n".join(f"  {label:<13}: {value}" for label, value in fields) + "\n"

    async def sip_registry(self, arguments: list[str]) -> str:
        # We register to nobody: no register => lines are read (sip.conf refuses them).
        row = "{:<39.39} {:<6.6} {:<12.12}  {:>8.8} {:<20.20} {:<25.25}"
        header = row.format("Host", "dnsmgr", "Username", "Refresh", "State", "Reg.Time")
        return header.rstrip() + "\n0 SIP registrations."

    async def sip_subscriptions(self, arguments: list[str]) -> str:
        mwi = self.server.mwi
        if mwi is None:
            raise CommandError("SIP is not running")
        row = "{:<15.15}  {:<15.15}  {:<15.15}  {:<15.15}  {:<13.13}  {:<15.15} {:<10.10} {:<6.6}"
        lines = [
            row.format(
                "Peer", "User", "Call ID", "Extension", "Last state", "Type", "Mailbox", "Expiry"
            ).rstrip()
        ]
        now = self._registrations().now()
        live = [s for s in mwi.subscriptions.subscriptions() if s.state.name != "TERMINATED"]
        for sub in live:
            mailboxes = ",".join(f"{box}@{context}" for box, context in sub.mailboxes)
            lines.append(
                row.format(
                    f"{sub.source[0]}",
                    sub.peer_name,
                    sub.call_id,
                    sub.local_user or "",
                    sub.state.name.lower(),
                    "mwi",
                    mailboxes,
                    str(max(0, int(sub.expires_at - now))),
                ).rstrip()
            )
        lines.append(f"{_plural(len(live), 'active SIP subscription')}")
        return "\n".join(lines)

    def _calls(self) -> list[object]:
        runner = self.server.runner
        return list(runner.active_calls) if runner is not None else []

    async def sip_channels(self, arguments: list[str]) -> str:
        row = "{:<15.15}  {:<15.15}  {:<15.15}  {:<15.15}  {:<7.7}  {:<15.15}  {:<10.10}"
        lines = [
            row.format(
                "Peer", "User/ANR", "Call ID", "Format", "Hold", "Last Message", "Expiry"
            ).rstrip()
        ]
        calls = self._calls()
        for call in calls:
            lines.append(
                row.format(
                    call.caller, call.exten, call.call_id, "", "No", "", _hms(call.seconds)
                ).rstrip()
            )
        lines.append(_plural(len(calls), "active SIP dialog"))
        return "\n".join(lines)

    async def core_channels(self, arguments: list[str]) -> str:
        row = "{:<32.32} {:<24.24} {:<32.32} {:<16.16} {:<6.6} {:>8}"
        lines = [
            row.format(
                "Channel", "Caller", "Application(Data)", "Mailbox", "State", "Duration"
            ).rstrip()
        ]
        calls = self._calls()
        for call in calls:
            application = f"{call.application}({call.application_data})" if call.application else ""
            lines.append(
                row.format(
                    call.channel, call.caller, application, call.mailbox, "Up", _hms(call.seconds)
                )
            )
        lines.append(_plural(len(calls), "active channel"))
        lines.append(_plural(len(calls), "active call"))
        return "\n".join(lines)

    # -- mwi ------------------------------------------------------------------------------

    async def mwi_refresh(self, arguments: list[str]) -> str:
        mwi = self.server.mwi
        if mwi is None:
            raise CommandError("SIP is not running")
        if not arguments:
            mwi.refresh()
            return "MWI refresh requested for every watched mailbox"
        mailbox, at, context = arguments[0].partition("@")
        if not mailbox or (at and not context) or len(arguments) > 1:
            raise CommandError("Usage: mwi refresh [<mailbox>@<context>]")
        context = context or "default"
        mwi.refresh(mailbox, context)
        return f"MWI refresh requested for {mailbox}@{context}"

    # -- logger, core ---------------------------------------------------------------------

    async def logger_level(self, arguments: list[str]) -> str:
        """`logger set level <level> [<facility>]`: the root, or one logger such as
        channels.sip; logger.conf's words (debug, verbose, info, notice, warning, error)."""
        if len(arguments) not in (1, 2):
            raise CommandError("Usage: logger set level <level> [<facility>]")
        facility = arguments[1] if len(arguments) == 2 else None
        try:
            set_level(arguments[0], facility)
        except ValueError:
            raise CommandError(
                f"Unknown log level '{arguments[0]}' (one of {', '.join(LEVELS)})"
            ) from None
        level = arguments[0].upper()
        return f"Logger status changed: {facility or 'root'} level is now {level}"

    async def version(self, arguments: list[str]) -> str:
        try:
            number = metadata.version(PACKAGE)
        except metadata.PackageNotFoundError:
            number = "unknown"
        return f"ARA Voicemail {number}"

    async def uptime(self, arguments: list[str]) -> str:
        now = time.time()
        return (
            f"System uptime: {format_duration(now - self.started)}\n"
            f"Last reload: {format_duration(now - self.last_reload)}"
        )

    async def stop_gracefully(self, arguments: list[str]) -> str:
        lifecycle = getattr(self.server, "lifecycle", None)
        if lifecycle is None:
            raise CommandError("not available")
        await _maybe_await(lifecycle.stop_gracefully())
        return "Shutting down gracefully: calls in progress finish first"

    async def stop_now(self, arguments: list[str]) -> str:
        lifecycle = getattr(self.server, "lifecycle", None)
        if lifecycle is None:
            raise CommandError("not available")
        await _maybe_await(lifecycle.stop_now())
        return "Shutting down now"

    async def help(self, arguments: list[str]) -> str:
        return self.server.commands.help_text()


def _realtime_peers(registrations: object) -> bool:
    realtime = registrations.peers.realtime  # type: ignore[attr-defined]
    return realtime is not None and realtime.has_family("sippeers")


async def _maybe_await(value: object) -> None:
    if hasattr(value, "__await__"):
        await value  # type: ignore[misc]


def register_server_commands(server: VoicemailServer) -> ServerCommands:
    """Put every console command of a running server in `server.commands`."""
    handlers = ServerCommands(server)
    register = server.commands.register
    register_message_commands(server.commands, server)  # voicemail messages list / delete
    register_login_commands(server.commands, server)  # voicemail unlock / show logins / passwd
    register("reload", handlers.reload, "re-read every configuration file")
    register("voicemail reload", handlers.reload, "re-read the configuration (all of it)")
    register("dialplan reload", handlers.reload, "re-read the configuration (all of it)")
    register("sip reload", handlers.reload, "re-read the configuration (all of it)")
    register("voicemail show users [for <context>]", handlers.show_users, "list mailboxes")
    register("voicemail show zones", handlers.show_zones, "list [zonemessages] zones")
    register("sip show peers", handlers.sip_peers, "list SIP peers")
    register("sip show peer <name>", handlers.sip_peer, "show one SIP peer")
    register("sip show registry", handlers.sip_registry, "list outbound registrations")
    register("sip show subscriptions", handlers.sip_subscriptions, "list MWI subscriptions")
    register("sip show channels", handlers.sip_channels, "list active SIP dialogs")
    register("core show channels", handlers.core_channels, "list calls in progress")
    register("mwi refresh [<mailbox>@<context>]", handlers.mwi_refresh, "re-send MWI NOTIFYs")
    register("logger set level <level> [<facility>]", handlers.logger_level, "set the log level")
    register("core show version", handlers.version, "show the version")
    register("core show uptime", handlers.uptime, "show uptime and time since last reload")
    register("core stop gracefully", handlers.stop_gracefully, "stop after calls finish")
    register("core stop now", handlers.stop_now, "stop at once")
    register("help", handlers.help, "list commands")
    return handlers
