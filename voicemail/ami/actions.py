"""AMI action handlers: each takes the action and answers with the bytes to send.

Each entry names the write classes that allow it (any one of them), as Asterisk 20's
manager actions are registered; an empty set is allowed to every logged-in user.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING

from storage.conffile import ConfigError
from storage.odbc import DatabaseError

from . import protocol
from .protocol import Message

if TYPE_CHECKING:
    from channels.sip.peers import Peer

    from .server import AmiServer, AmiSession

Handler = Callable[["AmiServer", "AmiSession", Message], Awaitable[bytes]]

# Reload's Module: names that mean our configuration (every one reloads all of it).
RELOADABLE = frozenset(
    {"app_voicemail", "chan_sip", "pbx_config", "res_odbc", "res_config_odbc", "extconfig"}
)
NEEDS_NO_LOGIN = frozenset({"logoff"})
SYSTEM = frozenset({"system"})


async def ping(ami: AmiServer, session: AmiSession, action: Message) -> bytes:
    return protocol.response(action, fields=[("Ping", "Pong"), ("Timestamp", f"{time.time():.6f}")])


async def logoff(ami: AmiServer, session: AmiSession, action: Message) -> bytes:
    data = protocol.response(action, "Goodbye", "Thanks for all the fish.")
    session.send(data)
    await session.writer.drain()
    session.close()
    return b""


async def command(ami: AmiServer, session: AmiSession, action: Message) -> bytes:
    line = action.get("Command").strip()
    if not line:
        return protocol.error(action, "No command provided")
    result = await ami.server.commands.run(line)
    return protocol.command_output(action, result.ok, result.output)


async def reload(ami: AmiServer, session: AmiSession, action: Message) -> bytes:
    """Every Module: we know reloads all our files, as `reload` does (manager only
    manager.conf); the Reload event follows from AmiServer.reloaded."""
    module = action.get("Module").strip()
    name = module.lower().removesuffix(".so")
    if name and name not in RELOADABLE | {"manager"}:
        return protocol.error(action, "No such module")
    if name == "manager":
        try:
            ami.reload_users()
        except ConfigError as exc:
            return protocol.error(action, f"manager.conf refused, keeping its users: {exc}")
        ami.broadcast("Reload", SYSTEM, [("Module", module), ("Status", "Success")])
        return protocol.response(action, message="Module Reloaded.")
    ami.reload_module = module
    result = await ami.server.reload()
    if not result.ok:
        return protocol.error(action, result.summary)
    return protocol.response(action, message="Module Reloaded.")


def _date_time(stamp: float) -> tuple[str, str]:
    moment = datetime.fromtimestamp(stamp)
    return moment.strftime("%Y-%m-%d"), moment.strftime("%H:%M:%S")


async def core_status(ami: AmiServer, session: AmiSession, action: Message) -> bytes:
    start_date, start_time = _date_time(ami.started_at)
    reload_date, reload_time = _date_time(ami.reloaded_at)
    runner = ami.server.runner
    return protocol.response(
        action,
        message="Core Status",
        fields=[
            ("CoreStartupDate", start_date),
            ("CoreStartupTime", start_time),
            ("CoreReloadDate", reload_date),
            ("CoreReloadTime", reload_time),
            ("CoreCurrentCalls", len(runner.active_calls) if runner is not None else 0),
        ],
    )


def _duration(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


async def core_show_channels(ami: AmiServer, session: AmiSession, action: Message) -> bytes:
    runner = ami.server.runner
    calls = list(runner.active_calls) if runner is not None else []
    parts = [protocol.list_start(action, "Channels")]
    for call in calls:
        parts.append(
            protocol.list_event(
                "CoreShowChannel",
                action,
                [
                    ("Channel", call.channel),
                    ("ChannelState", 6),
                    ("ChannelStateDesc", "Up"),
                    ("CallerIDNum", call.caller),
                    ("Context", call.context),
                    ("Exten", call.exten),
                    ("Uniqueid", call.call_id),
                    ("Application", call.application),
                    ("ApplicationData", call.application_data),
                    ("Duration", _duration(call.seconds)),
                ],
            )
        )
    parts.append(protocol.list_complete("CoreShowChannelsComplete", action, len(calls)))
    return b"".join(parts)


def _mailbox(action: Message) -> tuple[str, str] | None:
    box, _, context = action.get("Mailbox").strip().partition("@")
    return (box, context or "default") if box else None


async def _counts(ami: AmiServer, action: Message) -> tuple[str, str, int, int, int] | bytes:
    """(mailbox, context, new, old, urgent) of the action's Mailbox, or the error response."""
    found = _mailbox(action)
    if found is None or ami.server.store is None:
        return protocol.error(action, "Mailbox not specified")
    box, context = found
    try:
        inbox, old, urgent = await ami.server.store.counts(context, box)
    except DatabaseError as exc:
        return protocol.error(action, f"cannot count messages: {exc}")
    return box, context, inbox, old, urgent


async def mailbox_count(ami: AmiServer, session: AmiSession, action: Message) -> bytes:
    counted = await _counts(ami, action)
    if isinstance(counted, bytes):
        return counted
    box, context, inbox, old, urgent = counted
    return protocol.response(
        action,
        message="Mailbox Message Count",
        fields=[
            ("Mailbox", f"{box}@{context}"),
            ("UrgMessages", urgent),
            ("NewMessages", inbox),
            ("OldMessages", old),
        ],
    )


async def mailbox_status(ami: AmiServer, session: AmiSession, action: Message) -> bytes:
    counted = await _counts(ami, action)
    if isinstance(counted, bytes):
        return counted
    box, context, inbox, _old, urgent = counted
    return protocol.response(
        action,
        message="Mailbox Status",
        fields=[("Mailbox", f"{box}@{context}"), ("Waiting", 1 if inbox + urgent else 0)],
    )


async def voicemail_users_list(ami: AmiServer, session: AmiSession, action: Message) -> bytes:
    """The static mailboxes of voicemail.conf (realtime ones cannot be listed cheaply)."""
    settings = ami.server.config.voicemail
    store = ami.server.store
    parts = [protocol.list_start(action, "Voicemail user list")]
    boxes = sorted(settings.mailboxes.values(), key=lambda b: (b.context, b.mailbox))
    for box in boxes:
        try:
            inbox, old, urgent = (
                await store.counts(box.context, box.mailbox) if store else (0, 0, 0)
            )
        except DatabaseError:
            inbox = old = urgent = 0
        options = {**settings.general, **box.options}
        parts.append(
            protocol.list_event(
                "VoicemailUserEntry",
                action,
                [
                    ("VMContext", box.context),
                    ("VoiceMailbox", box.mailbox),
                    ("Fullname", box.fullname),
                    ("Email", box.email),
                    ("Pager", box.pager),
                    ("Language", options.get("language", "")),
                    ("TimeZone", options.get("tz", "")),
                    ("NewMessageCount", inbox + urgent),
                    ("OldMessageCount", old),
                ],
            )
        )
    parts.append(protocol.list_complete("VoicemailUserEntryComplete", action, len(boxes)))
    return b"".join(parts)


async def voicemail_refresh(ami: AmiServer, session: AmiSession, action: Message) -> bytes:
    """Recount mailboxes and tell phones and AMI (Context and Mailbox narrow it down)."""
    context = action.get("Context").strip()
    mailbox = action.get("Mailbox").strip()
    server = ami.server
    if mailbox:
        targets = [(mailbox, context or "default")]
    else:
        targets = [
            (box.mailbox, box.context)
            for box in server.config.voicemail.mailboxes.values()
            if not context or box.context == context
        ]
    for box, box_context in targets:
        server.mailbox_changed(box, box_context)
    return protocol.response(action)


def _peer_fields(ami: AmiServer, peer: Peer) -> tuple[str, int, str]:
    registrations = ami.server.registrations
    binding = registrations.registrar.binding(peer.name) if registrations else None
    if binding is not None:
        host, port = binding.address
    elif peer.host and peer.host.lower() != "dynamic":
        host, port = peer.host, 5060
    else:
        host, port = "", 0
    if peer.qualify == 0:
        status = "Unmonitored"
    else:
        status = "OK" if binding is not None or host else "UNKNOWN"
    return host, port, status


def _peers(ami: AmiServer) -> list[Peer]:
    registrations = ami.server.registrations
    if registrations is None:
        return []
    return sorted(registrations.peers.in_memory(), key=lambda p: p.name.lower())


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


async def sip_peers(ami: AmiServer, session: AmiSession, action: Message) -> bytes:
    peers = _peers(ami)
    parts = [protocol.list_start(action, "Peer status list")]
    for peer in peers:
        host, port, status = _peer_fields(ami, peer)
        parts.append(
            protocol.list_event(
                "PeerEntry",
                action,
                [
                    ("Channeltype", "SIP"),
                    ("ObjectName", peer.name),
                    ("ChanObjectType", "peer"),
                    ("IPaddress", host or "-none-"),
                    ("IPport", port),
                    ("Dynamic", _yes(peer.host.lower() == "dynamic")),
                    ("AutoForcerport", _yes("auto_force_rport" in peer.nat)),
                    ("Forcerport", _yes("force_rport" in peer.nat)),
                    ("AutoComedia", _yes("auto_comedia" in peer.nat)),
                    ("Comedia", _yes("comedia" in peer.nat)),
                    ("VideoSupport", "no"),
                    ("TextSupport", "no"),
                    ("ACL", _yes(bool(peer.acl))),
                    ("Status", status),
                    ("RealtimeDevice", _yes(peer.realtime)),
                    ("Description", ""),
                    ("Accountcode", ""),
                ],
            )
        )
    parts.append(protocol.list_complete("PeerlistComplete", action, len(peers)))
    return b"".join(parts)


async def sip_show_peer(ami: AmiServer, session: AmiSession, action: Message) -> bytes:
    name = action.get("Peer").strip()
    if not name:
        return protocol.error(action, "Peer: <name> missing.")
    registrations = ami.server.registrations
    peer = await registrations.peers.find(name) if registrations else None
    if peer is None:
        return protocol.error(action, "Peer not found")
    host, port, status = _peer_fields(ami, peer)
    binding = registrations.registrar.binding(peer.name) if registrations else None
    return protocol.response(
        action,
        fields=[
            ("Channeltype", "SIP"),
            ("ObjectName", peer.name),
            ("ChanObjectType", "peer"),
            ("SecretExist", "Y" if peer.secret else "N"),
            ("Context", peer.context),
            ("Language", peer.language),
            ("VoiceMailbox", ",".join(f"{b}@{c}" for b, c in peer.mailbox)),
            ("Dynamic", "Y" if peer.host.lower() == "dynamic" else "N"),
            ("Callerid", peer.callerid),
            ("ACL", "Y" if peer.acl else "N"),
            ("Address-IP", host or "(null)"),
            ("Address-Port", port),
            ("Default-Username", peer.defaultuser),
            ("Transport", ",".join(peer.transport).upper()),
            ("SIP-Useragent", binding.user_agent if binding else ""),
            ("Reg-Contact", binding.contact if binding else ""),
            ("Status", status),
        ],
    )


_REPORT = frozenset({"system", "reporting"})
_MAILBOX = frozenset({"call", "reporting"})
ACTIONS: dict[str, tuple[frozenset[str], Handler]] = {
    "ping": (frozenset(), ping),
    "logoff": (frozenset(), logoff),
    "command": (frozenset({"command"}), command),
    "reload": (frozenset({"system", "config"}), reload),
    "corestatus": (_REPORT, core_status),
    "coreshowchannels": (_REPORT, core_show_channels),
    "mailboxcount": (_MAILBOX, mailbox_count),
    "mailboxstatus": (_MAILBOX, mailbox_status),
    "voicemailuserslist": (_MAILBOX, voicemail_users_list),
    "voicemailrefresh": (frozenset({"user"}), voicemail_refresh),
    "sippeers": (_REPORT, sip_peers),
    "sipshowpeer": (_REPORT, sip_show_peer),
}
