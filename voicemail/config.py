"""The server's configuration, read from Asterisk's files in one directory.

`voicemail serve -C DIR` reads asterisk.conf, voicemail.conf, extconfig.conf,
res_odbc.conf, sip.conf, rtp.conf and extensions.conf from DIR. Only the parts we support
are read; a wrong line is reported with its file and line number (`ConfigError`).
Relative paths in these files resolve against DIR.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from storage.conffile import ConfigError, ConfigFile, load_config
from storage.odbc import ConnectionClass
from storage.realtime import RealtimeMapping

DEFAULT_SPOOL_DIR = "/var/spool/asterisk"
DEFAULT_DATA_DIR = "/usr/share/asterisk"  # Debian's astdatadir; sounds live below it


@dataclass
class StaticMailbox:
    """One `mailbox => password,fullname,email,pager,options` line of voicemail.conf."""

    context: str
    mailbox: str
    password: str
    fullname: str = ""
    email: str = ""
    pager: str = ""
    options: dict[str, str] = field(default_factory=dict)


@dataclass
class VoicemailSettings:
    """voicemail.conf [general] and the per-mailbox defaults it sets."""

    general: dict[str, str]
    mailboxes: dict[tuple[str, str], StaticMailbox]
    zonemessages: dict[str, str]

    @property
    def odbcstorage(self) -> str:
        return self.general.get("odbcstorage", "asterisk")

    @property
    def odbctable(self) -> str:
        return self.general.get("odbctable", "voicemessages")

    @property
    def formats(self) -> list[str]:
        return [f for f in self.general.get("format", "wav").split("|") if f] or ["wav"]


@dataclass
class SipSettings:
    bindaddr: str = "127.0.0.1"
    bindport: int = 5060
    context: str = "default"
    rtpstart: int = 10000
    rtpend: int = 20000
    rtptimeout: int = 0
    nat: set[str] = field(default_factory=lambda: {"force_rport"})
    tcpenable: bool = False
    tcpport: int | None = None
    tlsenable: bool = False
    tlsport: int = 5061
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
    regserver: str = ""  # rtsavesysname=yes: systemname from asterisk.conf
    general: dict[str, str] = field(default_factory=dict)
    # [name] sections other than [general]: static peers, as (name, option pairs).
    peers: list[tuple[str, list[tuple[str, str]]]] = field(default_factory=list)


@dataclass
class ServerConfig:
    directory: Path
    spool_dir: str
    sounds_dir: Path
    language: str
    voicemail: VoicemailSettings
    sip: SipSettings
    connection_classes: dict[str, ConnectionClass]
    realtime: list[RealtimeMapping]
    extensions: ConfigFile
    local_spool: Path

    @property
    def spool_prefix(self) -> str:
        """The `dir` column prefix, as Asterisk forms it: `<astspooldir>/voicemail/`."""
        return self.spool_dir.rstrip("/") + "/voicemail/"


def _resolve(directory: Path, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else (directory / path).resolve()


def parse_mailbox_line(context: str, mailbox: str, value: str) -> StaticMailbox:
    """`1234 => 4242,Example Mailbox,root@localhost,pager@example.com,attach=no|tz=central`."""
    parts = [p.strip() for p in value.split(",", 4)]
    parts += [""] * (5 - len(parts))
    options: dict[str, str] = {}
    for item in parts[4].split("|"):
        if "=" in item:
            name, _, option_value = item.partition("=")
            options[name.strip().lower()] = option_value.strip()
    return StaticMailbox(context, mailbox, parts[0], parts[1], parts[2], parts[3], options)


def load_voicemail_conf(path: Path) -> VoicemailSettings:
    return voicemail_settings(load_config(path, required=False))


def voicemail_settings(conf: ConfigFile) -> VoicemailSettings:
    """voicemail.conf's content, from the file or from the database (ast_config)."""
    general: dict[str, str] = {}
    mailboxes: dict[tuple[str, str], StaticMailbox] = {}
    zones: dict[str, str] = {}
    for section in conf.sections:
        name = section.name.lower()
        if name == "general":
            general.update({k.lower(): v for k, v in section.items()})
        elif name == "zonemessages":
            zones.update(dict(section.items()))
        else:
            for variable in section.variables:
                if not variable.value:
                    raise ConfigError(
                        variable.filename, variable.line, "mailbox without a password"
                    )
                key = (section.name, variable.name)
                mailboxes[key] = parse_mailbox_line(section.name, variable.name, variable.value)
    return VoicemailSettings(general, mailboxes, zones)


def resolve_sqlite_database(connection_string: str, directory: Path) -> str:
    """Make a relative SQLite `Database=` path relative to the configuration directory."""
    if "sqlite" not in connection_string.lower():
        return connection_string
    parts = []
    for part in connection_string.split(";"):
        key, sep, value = part.partition("=")
        if sep and key.strip().lower() == "database" and not Path(value.strip()).is_absolute():
            part = f"{key}={(directory / value.strip()).resolve()}"
        parts.append(part)
    return ";".join(parts)


def load_connection_classes(path: Path) -> dict[str, ConnectionClass]:
    conf = load_config(path, required=False)
    classes: dict[str, ConnectionClass] = {}
    for section in conf.sections:
        if section.name.lower() == "env":
            continue
        if not section.getbool("enabled", True):
            continue
        options = {k.lower(): v for k, v in section.items()}
        if "connection_string" in options:
            options["connection_string"] = resolve_sqlite_database(
                options["connection_string"], path.parent
            )
        try:
            classes[section.name] = ConnectionClass.from_options(section.name, options)
        except ValueError as exc:
            raise ConfigError(section.filename, section.line, str(exc)) from exc
    return classes


def load_extconfig(path: Path) -> list[RealtimeMapping]:
    """`family => driver,database[,table[,priority]]` lines of [settings]."""
    conf = load_config(path, required=False)
    mappings: list[RealtimeMapping] = []
    for section in conf.sections_named("settings"):
        for variable in section.variables:
            parts = [p.strip().strip('"') for p in variable.value.split(",")]
            if len(parts) < 2 or not parts[0] or not parts[1]:
                raise ConfigError(
                    variable.filename,
                    variable.line,
                    "expected 'family => driver,database[,table[,priority]]', "
                    f"got {variable.value!r}",
                )
            family = variable.name
            table = parts[2] if len(parts) > 2 and parts[2] else family.removesuffix(".conf")
            try:
                priority = int(parts[3]) if len(parts) > 3 and parts[3] else 1
            except ValueError as exc:
                raise ConfigError(variable.filename, variable.line, "bad priority") from exc
            mappings.append(RealtimeMapping(family, parts[0], parts[1], table, priority))
    return mappings


def load_sip_settings(sip_path: Path, rtp_path: Path) -> SipSettings:
    settings = SipSettings()
    sip = load_config(sip_path, required=False)
    general = sip.section("general")
    if general is not None:
        settings.bindaddr = general.get("bindaddr") or settings.bindaddr
        settings.bindport = general.getint("bindport", settings.bindport)
        settings.context = general.get("context", settings.context) or settings.context
        settings.rtptimeout = general.getint("rtptimeout", 0)
        nat = general.get("nat")
        if nat is not None:
            settings.nat = {word.strip().lower() for word in nat.split(",") if word.strip()}
        settings.tcpenable = general.getbool("tcpenable", False)
        tcp_bind = general.get("tcpbindaddr")
        if tcp_bind and ":" in tcp_bind:
            settings.tcpport = int(tcp_bind.rsplit(":", 1)[1])
        settings.tlsenable = general.getbool("tlsenable", False)
        tls_bind = general.get("tlsbindaddr")
        if tls_bind and ":" in tls_bind:
            settings.tlsport = int(tls_bind.rsplit(":", 1)[1])
        for name in ("tlscertfile", "tlsprivatekey"):
            value = general.get(name)
            if value:
                setattr(settings, name, _resolve(sip_path.parent, value))
        settings.realm = general.get("realm") or settings.realm
        settings.rtcachefriends = general.getbool("rtcachefriends", False)
        settings.rtupdate = general.getbool("rtupdate", True)
        autoclear = (general.get("rtautoclear") or "no").strip().lower()
        if autoclear.isdigit():
            settings.rtautoclear = int(autoclear)
        else:
            settings.rtautoclear = 120 if general.getbool("rtautoclear", False) else 0
        settings.ignoreregexpire = general.getbool("ignoreregexpire", False)
        settings.allowguest = general.getbool("allowguest", True)
        settings.minexpiry = general.getint("minexpiry", settings.minexpiry)
        settings.maxexpiry = general.getint("maxexpiry", settings.maxexpiry)
        settings.defaultexpiry = general.getint("defaultexpiry", settings.defaultexpiry)
        settings.general = {k.lower(): v for k, v in general.items()}
    for section in sip.sections:
        if section.name.lower() != "general":
            settings.peers.append((section.name, [(k.lower(), v) for k, v in section.items()]))
    rtp = load_config(rtp_path, required=False).section("general")
    if rtp is not None:
        settings.rtpstart = rtp.getint("rtpstart", settings.rtpstart)
        settings.rtpend = rtp.getint("rtpend", settings.rtpend)
    return settings


def load_server_config(directory: Path) -> ServerConfig:
    directory = directory.resolve()
    if not directory.is_dir():
        raise ConfigError(str(directory), 0, "configuration directory not found")
    asterisk = load_config(directory / "asterisk.conf", required=False)
    dirs = asterisk.section("directories")
    options = asterisk.section("options")
    spool_dir = (dirs.get("astspooldir") if dirs else None) or DEFAULT_SPOOL_DIR
    data_dir = (dirs.get("astdatadir") if dirs else None) or DEFAULT_DATA_DIR
    language = (options.get("defaultlanguage") if options else None) or "en"
    voicemail = load_voicemail_conf(directory / "voicemail.conf")
    sip = load_sip_settings(directory / "sip.conf", directory / "rtp.conf")
    if sip.general.get("rtsavesysname", "no").lower() in ("yes", "true", "1", "on") and options:
        sip.regserver = options.get("systemname") or ""
    return ServerConfig(
        directory=directory,
        spool_dir=spool_dir,
        sounds_dir=_resolve(directory, data_dir) / "sounds",
        language=language,
        voicemail=voicemail,
        sip=sip,
        connection_classes=load_connection_classes(directory / "res_odbc.conf"),
        realtime=load_extconfig(directory / "extconfig.conf"),
        extensions=load_config(directory / "extensions.conf", required=False),
        local_spool=_resolve(
            directory,
            voicemail.general.get("localspool") or spool_dir.rstrip("/") + "/voicemail-spool",
        ),
    )
