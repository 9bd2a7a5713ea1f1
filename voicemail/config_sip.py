"""sip.conf [general] and peer sections, and rtp.conf, checked when loaded.

A bad value is a `ConfigError` at its line (`bindport=abc`, `tlsbindaddr=[::1`), never a
traceback. Addresses are `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address
(`tlsbindaddr=::` listens on every IPv6 address). Ports follow chan_sip: `bindport` overrides
a port in `bindaddr` (default 5060); `tcpbindaddr` without a port is port 5060, and without
`tcpbindaddr` TCP shares the UDP address and port; `tlsbindaddr` without a port is 5061, and
without `tlsbindaddr` TLS listens on the UDP address, port 5061.

Unknown [general] options are warnings naming file and line ("not implemented yet" for an
option chan_sip 20 reads, "unknown option" otherwise), as chan_sip ignores them. Peer
options are passed on as pairs; `peer_lines` says where each was written so an error found
when the peer is built can be reported as `file:line`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from channels.sip.limits import GuardSettings, parse_network
from channels.sip.peers import parse_nat
from storage.conffile import ConfigError, ConfigFile, Section, Variable, load_config

from .config_checks import (
    FALSE_WORDS,
    TRUE_WORDS,
    Checker,
    Warnings,
    boolean,
    checked_bool,
    checked_int,
    either,
    fail,
    integer,
    near_miss,
    one_of,
    parse_host_port,
    text_value,
)
from .config_names import SIP_GENERAL

CALLS_PER_CPU = 400  # measured: 400 calls used 28 % of one core (bench/RESULTS.md)
STANDARD_SIP_PORT = 5060
STANDARD_TLS_PORT = 5061

# Our abuse limits (channels/sip/limits.py GuardSettings): option -> (field, minimum).
GUARD_INTEGERS = {
    "registerrate": ("register_rate", 0),
    "registerburst": ("register_burst", 1),
    "requestrate": ("request_rate", 0),
    "requestburst": ("request_burst", 1),
    "floodblock": ("flood_block", 1),
    "authfailuresperip": ("auth_failures_per_ip", 1),
    "authfailuresperuser": ("auth_failures_per_user", 1),
    "authfailurewindow": ("auth_window", 1),
    "authlockout": ("auth_lockout", 1),
    "tcpmaxconnections": ("tcp_max_connections", 0),
    "tcpmaxconnectionsperip": ("tcp_max_per_ip", 0),
    "tcpidletimeout": ("tcp_idle_timeout", 1),
    "tcpauthlimit": ("tcp_auth_limit", 0),  # chan_sip's name, as its meaning
    "tcpauthtimeout": ("tcp_auth_timeout", 0),  # chan_sip's name, as its meaning
}
OWN_GENERAL = frozenset({"maxcalls", "maxcallsperip", "floodexempt", *GUARD_INTEGERS})
IMPLEMENTED_GENERAL = (
    frozenset(
        """
        bindaddr udpbindaddr bindport context rtptimeout nat tcpenable tcpbindaddr tlsenable
        tlsbindaddr tlscertfile tlsprivatekey realm rtcachefriends rtupdate rtautoclear
        ignoreregexpire allowguest minexpiry maxexpiry defaultexpiry rtsavesysname
        qualify qualifyfreq vmexten language dtmfmode transport buggymwi insecure supportpath
        fromdomain callerid mwi_from
        """.split()
    )
    | OWN_GENERAL
)


def _address(text: str) -> str | None:
    try:
        parse_host_port(text)
    except ValueError as exc:
        return str(exc)
    return None


def _words(*allowed: str) -> Checker:
    """A comma-separated list of words from `allowed`, or a yes/no word."""

    def check(text: str) -> str | None:
        word = text.strip().lower()
        if word in TRUE_WORDS or word in FALSE_WORDS:
            return None
        bad = [w.strip() for w in word.split(",") if w.strip() not in allowed]
        return f"must be yes, no or a list of {', '.join(allowed)}" if bad else None

    return check


def _networks(text: str) -> tuple[list[str], str | None]:
    """A comma-separated list of addresses or networks (floodexempt), and an error."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    for item in items:
        try:
            parse_network(item)
        except ValueError as exc:
            return items, str(exc)
    return items, None


_UINT = integer(0)
CHECKS: dict[str, Checker] = {
    "bindaddr": _address,
    "udpbindaddr": _address,
    "tcpbindaddr": _address,
    "tlsbindaddr": _address,
    "sslbindaddr": _address,
    "bindport": integer(0, 65535),
    "rtptimeout": _UINT,
    "rtpholdtimeout": _UINT,
    "rtpkeepalive": _UINT,
    "minexpiry": integer(1),
    "maxexpiry": integer(1),
    "defaultexpiry": integer(1),
    "qualifyfreq": integer(1),
    "rtautoclear": either(_UINT, boolean),
    "qualify": either(_UINT, boolean),
    "nat": _words("force_rport", "comedia", "auto_force_rport", "auto_comedia", "never", "route"),
    "insecure": _words("port", "invite", "very"),
    "transport": _words("udp", "tcp", "tls", "ws", "wss"),
    "dtmfmode": one_of("rfc2833", "info", "shortinfo", "inband", "auto"),
    "maxcalls": integer(1),
    "maxcallsperip": _UINT,
    "floodexempt": lambda text: _networks(text)[1],
    **{name: integer(minimum) for name, (_, minimum) in GUARD_INTEGERS.items()},
    **{
        name: boolean
        for name in (
            "tcpenable tlsenable sslenable rtcachefriends rtupdate ignoreregexpire allowguest "
            "rtsavesysname rtsavepath buggymwi supportpath alwaysauthreject callcounter "
            "allowsubscribe allowoverlap"
        ).split()
    },
}


@dataclass
class SipSettings:
    bindaddr: str = "127.0.0.1"  # host only, IPv6 without brackets
    bindport: int = STANDARD_SIP_PORT
    context: str = "default"
    rtpstart: int = 10000
    rtpend: int = 20000
    rtptimeout: int = 0
    nat: set[str] = field(default_factory=lambda: {"force_rport"})
    tcpenable: bool = False
    tcpbindaddr: str = ""  # "": the UDP address
    tcpport: int | None = None  # None: the UDP port
    tlsenable: bool = False
    tlsbindaddr: str = ""  # "": the UDP address
    tlsport: int = STANDARD_TLS_PORT
    tlscertfile: Path | None = None
    tlsprivatekey: Path | None = None
    realm: str = "asterisk"
    rtcachefriends: bool = False
    rtupdate: bool = True
    rtautoclear: int = 0
    ignoreregexpire: bool = False
    allowguest: bool = True
    minexpiry: int = 60
    maxexpiry: int = 3600
    defaultexpiry: int = 120
    # Calls at once (503 past it); 0 until loaded, then maxcalls= or default_maxcalls().
    maxcalls: int = 0
    maxcallsperip: int = 0  # 0 = no limit: a PBX in front sends every call from one address
    guard: GuardSettings = field(default_factory=GuardSettings)  # flood, digest, TCP limits
    regserver: str = ""  # rtsavesysname=yes: systemname from asterisk.conf
    general: dict[str, str] = field(default_factory=dict)
    # [name] sections other than [general]: static peers, as (name, option pairs).
    peers: list[tuple[str, list[tuple[str, str]]]] = field(default_factory=list)
    # (peer, lower-case option) -> (file, line) of the line that set it (the last one).
    peer_lines: dict[tuple[str, str], tuple[str, int]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def tcp_host(self) -> str:
        return self.tcpbindaddr or self.bindaddr

    @property
    def tls_host(self) -> str:
        return self.tlsbindaddr or self.bindaddr

    def peer_error(self, peer: str, option: str, message: str) -> ConfigError:
        """A ConfigError at the line of a peer's option (e.g. from Peer.from_options)."""
        filename, line = self.peer_lines.get((peer, option.lower()), ("sip.conf", 0))
        return ConfigError(filename, line, f"peer [{peer}]: {message}")


def default_maxcalls(rtpstart: int, rtpend: int, cpus: int | None = None) -> int:
    """min(400 x CPUs, half the RTP port range): every call holds an RTP/RTCP port pair,
    and one core carries well over 400 calls (bench/RESULTS.md)."""
    cpus = cpus or os.cpu_count() or 1
    return max(1, min(CALLS_PER_CPU * cpus, (rtpend - rtpstart + 1) // 2))


def _check_general(general: Section, warnings: Warnings) -> None:
    for var in general.variables:
        name = var.name.lower()
        error = CHECKS.get(name, text_value)(var.value)
        if error is not None:
            raise fail(var, error)
        if name in IMPLEMENTED_GENERAL:
            continue
        message = "not implemented yet" if name in SIP_GENERAL else "unknown option"
        warnings.add(var.filename, var.line, f'"{name}": {message}')


def _host_port(var: Variable) -> tuple[str, int | None]:
    try:
        return parse_host_port(var.value)
    except ValueError as exc:  # already checked; kept for a direct caller
        raise fail(var, str(exc)) from exc


def _last(general: Section, *names: str) -> Variable | None:
    found = [v for v in general.variables if v.name.lower() in names]
    return found[-1] if found else None


def _apply_general(settings: SipSettings, general: Section, directory: Path) -> None:
    def integer_of(name: str, default: int, minimum: int | None = None) -> int:
        var = general.variable(name)
        return default if var is None else checked_int(var, minimum)

    def bool_of(name: str, default: bool) -> bool:
        var = general.variable(name)
        return default if var is None else checked_bool(var)

    bind = _last(general, "bindaddr", "udpbindaddr")
    port: int | None = None
    if bind is not None:
        settings.bindaddr, port = _host_port(bind)
    bindport = general.variable("bindport")
    if bindport is not None:
        settings.bindport = checked_int(bindport)  # chan_sip: bindport wins over bindaddr's
    elif port is not None:
        settings.bindport = port
    settings.context = general.get("context") or settings.context
    settings.rtptimeout = integer_of("rtptimeout", 0)
    nat = general.get("nat")
    if nat is not None:
        settings.nat = set(parse_nat(nat))
    settings.tcpenable = bool_of("tcpenable", False)
    tcp = general.variable("tcpbindaddr")
    if tcp is not None:
        settings.tcpbindaddr, tcp_port = _host_port(tcp)
        settings.tcpport = STANDARD_SIP_PORT if tcp_port is None else tcp_port
    settings.tlsenable = bool_of("tlsenable", False)
    tls = general.variable("tlsbindaddr")
    if tls is not None:
        settings.tlsbindaddr, tls_port = _host_port(tls)
        settings.tlsport = STANDARD_TLS_PORT if tls_port is None else tls_port
    for name in ("tlscertfile", "tlsprivatekey"):
        value = general.get(name)
        if value:
            path = Path(value)
            setattr(settings, name, path if path.is_absolute() else (directory / path).resolve())
    settings.realm = general.get("realm") or settings.realm
    settings.rtcachefriends = bool_of("rtcachefriends", False)
    settings.rtupdate = bool_of("rtupdate", True)
    autoclear = general.variable("rtautoclear")
    if autoclear is not None:
        word = autoclear.value.strip()
        settings.rtautoclear = int(word) if word.isdigit() else 120 * checked_bool(autoclear)
    settings.ignoreregexpire = bool_of("ignoreregexpire", False)
    settings.allowguest = bool_of("allowguest", True)
    settings.minexpiry = integer_of("minexpiry", settings.minexpiry)
    settings.maxexpiry = integer_of("maxexpiry", settings.maxexpiry)
    settings.defaultexpiry = integer_of("defaultexpiry", settings.defaultexpiry)
    settings.maxcalls = integer_of("maxcalls", 0)
    settings.maxcallsperip = integer_of("maxcallsperip", 0)
    _apply_guard(settings.guard, general)
    settings.general = {k.lower(): v for k, v in general.items()}


def _apply_guard(guard: GuardSettings, general: Section) -> None:
    """The abuse limits; `floodexempt` may be given on several lines, each a list."""
    for name, (attribute, minimum) in GUARD_INTEGERS.items():
        var = general.variable(name)
        if var is not None:
            setattr(guard, attribute, checked_int(var, minimum))
    exempt: list[str] = []
    for var in general.variables:
        if var.name.lower() == "floodexempt":
            items, error = _networks(var.value)
            if error is not None:
                raise fail(var, error)
            exempt += items
    guard.flood_exempt = tuple(exempt)


def _apply_rtp(settings: SipSettings, rtp: ConfigFile) -> None:
    general = rtp.section("general")
    if general is None:
        return
    start, end = general.variable("rtpstart"), general.variable("rtpend")
    if start is not None:
        settings.rtpstart = checked_int(start, 1, 65535)
    if end is not None:
        settings.rtpend = checked_int(end, 1, 65535)
    if settings.rtpstart >= settings.rtpend:
        where = end or start
        assert where is not None  # the defaults are in order
        raise ConfigError(
            where.filename,
            where.line,
            f"rtpstart ({settings.rtpstart}) must be below rtpend ({settings.rtpend})",
        )


def sip_settings(sip: ConfigFile, rtp: ConfigFile, directory: Path) -> SipSettings:
    """The settings of parsed sip.conf and rtp.conf; relative paths resolve in `directory`."""
    settings = SipSettings()
    warnings = Warnings()
    general = sip.section("general")
    if general is not None:
        _check_general(general, warnings)
        _apply_general(settings, general, directory)
    for section in sip.sections:
        if section.name.lower() == "general":
            continue
        guess = near_miss(section.name, ("general",))
        if guess is not None:
            warnings.add(
                section.filename,
                section.line,
                f"section [{section.name}] is read as a peer; did you mean [{guess}]?",
            )
        settings.peers.append((section.name, [(k.lower(), v) for k, v in section.items()]))
        for var in section.variables:
            settings.peer_lines[(section.name, var.name.lower())] = (var.filename, var.line)
    _apply_rtp(settings, rtp)
    if settings.maxcalls == 0:
        settings.maxcalls = default_maxcalls(settings.rtpstart, settings.rtpend)
    settings.warnings = warnings
    return settings


def load_sip_settings(sip_path: Path, rtp_path: Path) -> SipSettings:
    return sip_settings(
        load_config(sip_path, required=False),
        load_config(rtp_path, required=False),
        sip_path.parent,
    )
