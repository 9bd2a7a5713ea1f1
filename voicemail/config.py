"""The server's configuration, read from Asterisk's files in one directory.

`voicemail serve -C DIR` reads asterisk.conf, voicemail.conf, extconfig.conf,
res_odbc.conf, sip.conf, rtp.conf and extensions.conf from DIR. Only the parts we support
are read; a wrong line is reported with its file and line number (`ConfigError`), an
option we do not act on is a warning (`ServerConfig.warnings`).

Relative paths in these files (res_odbc.conf `Database=`, voicemail.conf `localspool`,
sip.conf `tlscertfile`, asterisk.conf `astdatadir`/`astrundir`) resolve against DIR itself,
so a configuration directory that keeps its data below it (as the demo does: `var/...`)
works wherever it is copied.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from storage.conffile import ConfigError, ConfigFile, load_config
from storage.identifiers import split_table_name
from storage.odbc import ConnectionClass
from storage.realtime import DRIVERS, RealtimeMapping

from .config_checks import Warnings
from .config_sip import SipSettings, default_maxcalls, load_sip_settings, sip_settings
from .config_voicemail import (
    StaticMailbox,
    VoicemailSettings,
    parse_mailbox_line,
    voicemail_settings,
)

__all__ = [
    "ServerConfig",
    "SipSettings",
    "StaticMailbox",
    "VoicemailSettings",
    "default_maxcalls",
    "control_socket_path",
    "default_control_socket",
    "default_pidfile",
    "load_server_config",
    "load_sip_settings",
    "load_voicemail_conf",
    "parse_mailbox_line",
    "resolve_sqlite_database",
    "sip_settings",
    "voicemail_settings",
]

DEFAULT_SPOOL_DIR = "/var/spool/asterisk"
DEFAULT_DATA_DIR = "/usr/share/asterisk"  # Debian's astdatadir; sounds live below it


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
    pidfile: Path
    control_socket: Path
    # asterisk.conf [options] runuser/rungroup: whom the server becomes after binding.
    runuser: str | None
    rungroup: str | None

    @property
    def spool_prefix(self) -> str:
        """The `dir` column prefix, as Asterisk forms it: `<astspooldir>/voicemail/`."""
        return self.spool_dir.rstrip("/") + "/voicemail/"

    @property
    def warnings(self) -> list[str]:
        """Every `file:line: ...` warning of voicemail.conf and sip.conf (already logged)."""
        return [*self.voicemail.warnings, *self.sip.warnings]


def default_pidfile(directory: Path, local_spool: Path, rundir: Path | None) -> Path:
    """Where `voicemail serve` writes its pid and `voicemail reload` finds it.

    `<astrundir>/voicemail.pid` when asterisk.conf sets astrundir (Asterisk's own layout);
    otherwise a file in the local spool named after the configuration directory, so two
    servers that share a spool directory but not a configuration never share a pid file.
    """
    if rundir is not None:
        return rundir / "voicemail.pid"
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", str(directory.resolve())).strip("-.") or "root"
    return local_spool / f"voicemail-{name[-150:]}.pid"


def default_control_socket(directory: Path, rundir: Path | None) -> Path:
    """Where the console's Unix socket is (`voicemail -rx` finds it the same way).

    `<astrundir>/voicemail.ctl` when asterisk.conf sets astrundir; otherwise a short name in
    the temporary directory hashed from the configuration directory, so two servers with
    different `-C` never share it, the path fits a socket address (107 bytes), and a client
    finds it from asterisk.conf alone even while voicemail.conf has a broken line.
    """
    if rundir is not None:
        return rundir / "voicemail.ctl"
    digest = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"voicemail-{digest}.ctl"


def control_socket_path(directory: Path) -> Path:
    """The control socket of the server that `directory` configures, from asterisk.conf."""
    directory = directory.resolve()
    dirs = load_config(directory / "asterisk.conf", required=False).section("directories")
    run_dir = dirs.get("astrundir") if dirs else None
    return default_control_socket(directory, _resolve(directory, run_dir) if run_dir else None)


def _resolve(directory: Path, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else (directory / path).resolve()


def load_voicemail_conf(path: Path) -> VoicemailSettings:
    return voicemail_settings(load_config(path, required=False))


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


# res_odbc.conf options we honour (storage/odbc_class.py), and Asterisk's that we do not.
RES_ODBC_OPTIONS = frozenset(
    {
        "enabled", "dsn", "connection_string", "username", "password", "max_connections",
        "pre-connect", "connect_timeout", "negative_connection_cache", "sanitysql", "isolation",
        "dbtimeout",
    }
)  # fmt: skip
RES_ODBC_NOT_IMPLEMENTED = frozenset(
    {
        "forcecommit", "backslash_is_escape", "idlecheck", "logging", "slow_query_limit",
        "cache_type", "cache_size", "share_connections", "limit",
    }
)  # fmt: skip


def load_connection_classes(path: Path) -> dict[str, ConnectionClass]:
    conf = load_config(path, required=False)
    classes: dict[str, ConnectionClass] = {}
    warnings = Warnings()
    for section in conf.sections:
        if section.name.lower() == "env":
            continue
        for var in section.variables:
            name = var.name.strip().lower()
            if name in RES_ODBC_NOT_IMPLEMENTED:
                warnings.add(var.filename, var.line, f'"{name}": not implemented, no effect')
            elif name not in RES_ODBC_OPTIONS:
                warnings.add(var.filename, var.line, f'"{name}": unknown option')
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
            driver = parts[0].lower()
            if driver not in DRIVERS:
                raise ConfigError(
                    variable.filename,
                    variable.line,
                    f"driver {parts[0]!r} is not supported (only {' and '.join(DRIVERS)})",
                )
            if driver == "odbc":
                try:
                    split_table_name(table, "realtime table name")
                except ValueError as exc:
                    raise ConfigError(variable.filename, variable.line, str(exc)) from exc
            mappings.append(RealtimeMapping(family, parts[0], parts[1], table, priority))
    return mappings


def load_server_config(directory: Path) -> ServerConfig:
    directory = directory.resolve()
    if not directory.is_dir():
        raise ConfigError(str(directory), 0, "configuration directory not found")
    asterisk = load_config(directory / "asterisk.conf", required=False)
    dirs = asterisk.section("directories")
    options = asterisk.section("options")
    spool_dir = (dirs.get("astspooldir") if dirs else None) or DEFAULT_SPOOL_DIR
    data_dir = (dirs.get("astdatadir") if dirs else None) or DEFAULT_DATA_DIR
    run_dir = dirs.get("astrundir") if dirs else None
    language = (options.get("defaultlanguage") if options else None) or "en"
    voicemail = load_voicemail_conf(directory / "voicemail.conf")
    sip = load_sip_settings(directory / "sip.conf", directory / "rtp.conf")
    if sip.general.get("rtsavesysname", "no").lower() in ("yes", "true", "1", "on") and options:
        sip.regserver = options.get("systemname") or ""
    local_spool = _resolve(
        directory,
        voicemail.general.get("localspool") or spool_dir.rstrip("/") + "/voicemail-spool",
    )
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
        local_spool=local_spool,
        pidfile=default_pidfile(
            directory, local_spool, _resolve(directory, run_dir) if run_dir else None
        ),
        control_socket=default_control_socket(
            directory, _resolve(directory, run_dir) if run_dir else None
        ),
        runuser=((options.get("runuser") or "").strip() or None) if options else None,
        rungroup=((options.get("rungroup") or "").strip() or None) if options else None,
    )
