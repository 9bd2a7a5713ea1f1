"""Reload: re-read every configuration file while calls go on.

A reload builds the whole new configuration first and swaps it in only when every file
parsed, so a broken line leaves the running configuration in force and the answer names
the file and line. Calls in progress keep the objects they started with.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from channels.sip.peers import Peer, PeerOptionError
from channels.sip.registration import RealtimeOptions
from storage.conffile import ConfigError
from storage.odbc import DatabaseError

from .config import SipSettings, load_server_config, voicemail_settings
from .dialplan import Dialplan
from .logconfig import apply_logger_conf, load_logger_settings

if TYPE_CHECKING:
    from .server import VoicemailServer

log = logging.getLogger(__name__)


@dataclass
class ReloadResult:
    """What a reload did, for the log and for the console's and AMI's answer."""

    ok: bool
    summary: str = ""
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def failed(cls, reason: str) -> ReloadResult:
        log.error("reload failed, keeping the running configuration: %s", reason)
        return cls(ok=False, summary=f"reload failed, keeping the running configuration: {reason}")

    def warn(self, message: str) -> None:
        log.warning("reload: %s", message)
        self.warnings.append(message)

    def text(self) -> str:
        return "\n".join([*self.warnings, self.summary])


async def reload_server(server: VoicemailServer) -> ReloadResult:
    """`voicemail reload`: re-read the configuration files without dropping calls.

    Mailboxes, voicemail.conf options, the dial plan, static peers and realtime caches
    change at once; calls in progress keep what they started with. Sockets, database
    classes and the spool need a restart (logged). A broken file keeps the old
    configuration and says where the error is.
    """
    try:
        fresh = load_server_config(server.config.directory)
        dialplan = Dialplan.from_config(fresh.extensions)
        peers = static_peers(fresh.sip)
        load_logger_settings(server.config.directory / "logger.conf")  # checked before any swap
    except ConfigError as exc:
        return ReloadResult.failed(str(exc))
    if server.realtime.has_family("voicemail.conf"):
        try:
            conf = await server.realtime.load_config_file("voicemail.conf")
        except (DatabaseError, ConfigError) as exc:
            return ReloadResult.failed(str(exc))
        if conf is not None:
            fresh.voicemail = voicemail_settings(conf)
    result = ReloadResult(ok=True)
    for what, old, new in (
        (
            "sip.conf bindaddr/bindport",
            (server.config.sip.bindaddr, server.config.sip.bindport),
            (fresh.sip.bindaddr, fresh.sip.bindport),
        ),
        ("res_odbc.conf", server.config.connection_classes, fresh.connection_classes),
        (
            "voicemail.conf odbcstorage/odbctable",
            (server.config.voicemail.odbcstorage, server.config.voicemail.odbctable),
            (fresh.voicemail.odbcstorage, fresh.voicemail.odbctable),
        ),
        (
            "voicemail.conf externnotify/changelogpollms",
            [server.config.voicemail.general.get(k) for k in ("externnotify", "changelogpollms")],
            [fresh.voicemail.general.get(k) for k in ("externnotify", "changelogpollms")],
        ),
    ):
        if old != new:
            result.warn(f"{what} changed; that takes effect after a restart")
    server.config.voicemail = fresh.voicemail
    server.config.extensions = fresh.extensions
    server.dialplan = dialplan
    if server.runner is not None:
        for problem in server.runner.unsupported_applications(dialplan):
            result.warn(str(problem))
        server.runner.dialplan = dialplan
    if server.mailboxes is not None and server.voicemail is not None:
        server.mailboxes.settings = fresh.voicemail
        server.voicemail.set_formats(fresh.voicemail.formats)
        server.voicemail.max_record_seconds = fresh.voicemail.maxrecordsecs
    if server.voicemailmain is not None:
        server.voicemailmain.configure(fresh.voicemail.general, fresh.voicemail.zonemessages)
        server.voicemailmain.max_record_seconds = fresh.voicemail.maxrecordsecs
    if server.registrations is not None:
        server.registrations.peers.static = peers
    for warning in apply_sip_settings(server, fresh.sip):
        result.warn(warning)
    server.realtime.invalidate()
    if server.registrations is not None:
        server.registrations.peers.invalidate()  # names found missing may exist now
    apply_logger_conf(server.config.directory)  # levels and format, as `logger reload` would
    result.summary = (
        f"configuration reloaded: {len(fresh.voicemail.mailboxes)} static mailboxes, "
        f"{len(dialplan.contexts)} dial plan contexts, {len(peers)} static peers"
    )
    log.info("%s", result.summary)
    return result


def apply_sip_settings(server: VoicemailServer, fresh: SipSettings) -> list[str]:
    """sip.conf [general] options that take effect for the next call or request; the
    listening sockets (bindaddr, ports, transports, certificates) need a restart.

    Returns a warning for each such option that changed."""
    warnings: list[str] = []
    old = server.config.sip
    restart_only = ("bindaddr", "bindport", "tcpenable", "tcpport", "tlsenable", "tlsport")
    for name in restart_only + ("tlscertfile", "tlsprivatekey"):
        if getattr(old, name) != getattr(fresh, name):
            warnings.append(f"sip.conf {name} changed; that takes effect after a restart")
    for name in restart_only + ("tlscertfile", "tlsprivatekey"):
        setattr(fresh, name, getattr(old, name))
    if fresh.guard != old.guard:
        # The flood, digest and TCP limiters hold live counts; they are built once.
        warnings.append(
            "sip.conf abuse limits (registerrate ... tcpidletimeout, floodexempt) changed; "
            "they take effect after a restart"
        )
        fresh.guard = old.guard
    server.config.sip = fresh
    if server.endpoint is not None:
        config = server.endpoint.config
        config.default_context = fresh.context
        config.rtp_timeout = fresh.rtptimeout
        config.comedia = "comedia" in fresh.nat
        config.rtp_ports = (fresh.rtpstart, fresh.rtpend)
        config.max_calls = fresh.maxcalls
        config.max_calls_per_ip = fresh.maxcallsperip
    if server.registrations is not None:
        server.registrations.realm = fresh.realm
        server.registrations.peers.defaults = dict(fresh.general)
        server.registrations.peers.options = RealtimeOptions(
            rtcachefriends=fresh.rtcachefriends,
            rtupdate=fresh.rtupdate,
            rtautoclear=fresh.rtautoclear,
            ignoreregexpire=fresh.ignoreregexpire,
            regserver=fresh.regserver,
        )
        registrar = server.registrations.registrar
        registrar.min_expires = fresh.minexpiry
        registrar.max_expires = fresh.maxexpiry
        registrar.default_expires = min(max(fresh.defaultexpiry, fresh.minexpiry), fresh.maxexpiry)
    if server.mwi is not None:
        server.mwi.poll_interval = server._poll_interval()
    return warnings


def static_peers(sip: SipSettings) -> dict[str, Peer]:
    """sip.conf's peer sections; a bad option is a ConfigError at its file and line."""
    # [general] options chan_sip copies into every peer (context, nat, qualify, vmexten...).
    defaults = list(sip.general.items())
    peers: dict[str, Peer] = {}
    for name, options in sip.peers:
        try:
            peers[name] = Peer.from_options(name, options, realtime=False, defaults=defaults)
        except PeerOptionError as exc:
            raise sip.peer_error(name, exc.option, str(exc)) from exc
        except ValueError as exc:
            raise ConfigError("sip.conf", 0, f"peer [{name}]: {exc}") from exc
    return peers
