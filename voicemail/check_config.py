"""`voicemail check-config -C DIR`: find every mistake a start or a reload would trip on, at once.

An operator editing files on a live system wants to know before `reload` (or a restart at 3am)
that a line is wrong, that a res_odbc class cannot connect or that a table lacks a column.
Start-up stops at the first such problem; this reads each file on its own so that each broken
file is reported (with file:line), connects to every ODBC class with a short timeout (a dead
database is a problem named by its class, not a traceback), and checks the tables as
`voicemail db check` does. Warnings (options we do not act on, applications we do not run)
are listed but do not fail the check, as they do not stop the server.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from storage.conffile import ConfigError, ConfigFile, load_config
from storage.odbc import ConnectionClass, DatabaseError, OdbcPool
from storage.odbc_class import driver_name
from storage.realtime import Realtime, RealtimeMapping
from storage.realtime_static import static_rows
from storage.schema import (
    login_audit_table,
    login_state_table,
    mailbox_changes_table,
    messages_table,
    outbox_table,
)
from storage.schemacheck import Finding, check_table, expected_table

from .ami.manager_conf import load_manager_conf
from .basic_apps import BasicApplications
from .callpath import CallPathDatabase
from .config import (
    ServerConfig,
    load_connection_classes,
    load_extconfig,
    load_server_config,
    load_sip_settings,
    load_voicemail_conf,
    voicemail_settings,
)
from .dialplan import Dialplan
from .dialplan_runner import DialplanRunner
from .http_status import load_http_settings
from .logconfig import load_logger_settings
from .server import StartupError, VoicemailServer
from .server_reload import static_peers

T = TypeVar("T")

# Seconds allowed to log in to each ODBC class and for each check query: short, so that a dead
# or unreachable server costs the check seconds, not a minute per class.
CONNECT_TIMEOUT = 5
QUERY_TIMEOUT = 5.0


@dataclass
class CheckReport:
    """What check-config found: problems (exit 1) and warnings, each a `file:line: ...`."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def load(self, what: str, loader: Callable[[], T]) -> T | None:
        """Run one loader; a ConfigError (or another error naming the file) is a problem."""
        try:
            return loader()
        except ConfigError as exc:
            self.problems.append(str(exc))
        except (ValueError, OSError, StartupError) as exc:
            self.problems.append(f"{what}: {exc}")
        return None


async def check_config(directory: Path) -> CheckReport:
    """Every file the server reads, every ODBC class it may use and every table it needs."""
    report = CheckReport()
    directory = directory.resolve()
    if not directory.is_dir():
        report.problems.append(f"{directory}: configuration directory not found")
        return report
    classes = _check_files(report, directory)
    config = None
    if report.ok:  # each file parsed: now as the server combines them
        config = report.load("configuration", lambda: load_server_config(directory))
    if config is not None:
        _check_server_pieces(report, config)
    if classes is not None:
        await _check_databases(report, directory, classes, config)
    return report


def _check_files(report: CheckReport, directory: Path) -> dict[str, ConnectionClass] | None:
    """Each file on its own, so that a broken one does not hide the next."""
    report.load("asterisk.conf", lambda: load_config(directory / "asterisk.conf", required=False))
    voicemail = report.load(
        "voicemail.conf", lambda: load_voicemail_conf(directory / "voicemail.conf")
    )
    if voicemail is not None:
        report.warnings.extend(voicemail.warnings)
    sip = report.load(
        "sip.conf", lambda: load_sip_settings(directory / "sip.conf", directory / "rtp.conf")
    )
    if sip is not None:
        report.warnings.extend(sip.warnings)
        report.load("sip.conf", lambda: static_peers(sip))
    extensions = report.load(
        "extensions.conf", lambda: load_config(directory / "extensions.conf", required=False)
    )
    if extensions is not None:
        report.load("extensions.conf", lambda: Dialplan.from_config(extensions))
    mappings = report.load("extconfig.conf", lambda: load_extconfig(directory / "extconfig.conf"))
    for mapping in mappings or []:
        if mapping.driver.strip().lower() == "static":
            report.load(mapping.database, lambda m=mapping: _static_file(directory, m))
    report.load("manager.conf", lambda: load_manager_conf(directory))
    report.load("http.conf", lambda: load_http_settings(directory))  # and prometheus.conf
    report.load("logger.conf", lambda: load_logger_settings(directory / "logger.conf"))
    return report.load(
        "res_odbc.conf", lambda: load_connection_classes(directory / "res_odbc.conf")
    )


def _static_file(directory: Path, mapping: RealtimeMapping) -> None:
    """A `family => static,file.conf` mapping's file, read as the realtime driver reads it."""
    path = Path(mapping.database.strip().strip('"'))
    conf = load_config(path if path.is_absolute() else directory / path)
    if not mapping.family.endswith(".conf"):
        static_rows(mapping.family, conf)


def _check_server_pieces(report: CheckReport, config: ServerConfig) -> None:
    """What start-up checks beyond parsing: the TLS certificate, the dial plan's applications,
    the local spool directory."""
    server = report.load("configuration", lambda: VoicemailServer(config))
    if server is None:
        return
    report.load("sip.conf", server._tls_context)
    # The applications VoicemailServer.start() registers; only their names matter here.
    applications: dict[str, Any] = dict.fromkeys(("voicemail", "voicemailmain"))
    applications.update(BasicApplications(server.sounds).table())
    runner = DialplanRunner(server.dialplan, Realtime([], {}), CallPathDatabase(), applications)
    report.warnings.extend(runner.unsupported_applications())
    spool = config.local_spool
    existing = next((p for p in (spool, *spool.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        report.problems.append(f"voicemail.conf: localspool {spool}: {existing} is not a directory")


def _section_line(directory: Path, filename: str, section: str, variable: str = "") -> str:
    """`file:line` of a section (or of one of its variables), for a problem found later."""
    try:
        conf: ConfigFile = load_config(directory / filename, required=False)
    except ConfigError:
        return filename
    for found in conf.sections:
        if found.name != section:
            continue
        if not variable:
            return f"{found.filename}:{found.line}"
        for var in found.variables:
            if var.name.strip().lower() == variable.lower():
                return f"{var.filename}:{var.line}"
    return filename


def _short(connection_class: ConnectionClass) -> ConnectionClass:
    """The class with one connection and short timeouts, for a check."""
    return dataclasses.replace(
        connection_class,
        max_connections=1,
        pre_connect=False,
        connect_timeout=min(connection_class.connect_timeout, CONNECT_TIMEOUT),
        dbtimeout=min(connection_class.dbtimeout or QUERY_TIMEOUT, QUERY_TIMEOUT),
        negative_connection_cache=0.0,
    )


async def _check_databases(
    report: CheckReport,
    directory: Path,
    classes: dict[str, ConnectionClass],
    config: ServerConfig | None,
) -> None:
    """Connect to every class, then check the tables of the classes that answered."""
    pools: dict[str, OdbcPool] = {}
    for name, cls in classes.items():
        missing = _missing_sqlite_file(cls)
        if missing is not None:  # connecting would create an empty database there
            where = _section_line(directory, "res_odbc.conf", name)
            report.problems.append(
                f"{where}: [{name}] SQLite database {missing} does not exist "
                "(`voicemail db init -C DIR` creates it)"
            )
        else:
            pools[name] = OdbcPool(_short(cls), retry_timeout=0.0)
    live: dict[str, OdbcPool] = {}
    try:
        results = await asyncio.gather(
            *(pool.start() for pool in pools.values()), return_exceptions=True
        )
        for (name, pool), result in zip(pools.items(), results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, DatabaseError | TimeoutError):
                    raise result
                where = _section_line(directory, "res_odbc.conf", name)
                report.problems.append(f"{where}: [{name}] cannot connect: {_reason(result)}")
            else:
                live[name] = pool
        if config is not None:
            await _check_tables(report, directory, config, live)
    finally:
        for pool in pools.values():
            await pool.close()


def _missing_sqlite_file(connection_class: ConnectionClass) -> Path | None:
    """The `Database=` file of a SQLite class when it does not exist yet, else None."""
    if "sqlite" not in driver_name(connection_class.connection_string).lower():
        return None
    for part in connection_class.connection_string.split(";"):
        key, sep, value = part.partition("=")
        if sep and key.strip().lower() == "database" and value.strip():
            path = Path(value.strip().strip("{}"))
            return None if path.exists() else path
    return None


def _reason(exc: BaseException) -> str:
    text = " ".join((str(exc) or type(exc).__name__).split())  # drivers' messages span lines
    return text.split("] ", 1)[1] if text.startswith("[") and "] " in text else text


async def _check_tables(
    report: CheckReport, directory: Path, config: ServerConfig, live: dict[str, OdbcPool]
) -> None:
    """The tables `voicemail db check` checks (VoicemailServer.check_database), on the
    classes that answered; a class the files name but res_odbc.conf lacks is a problem."""
    known = set(config.connection_classes)
    settings = config.voicemail
    for mapping in config.realtime:
        if mapping.driver.strip().lower() == "odbc" and mapping.database not in known:
            where = _section_line(directory, "extconfig.conf", "settings", mapping.family)
            report.problems.append(
                f"{where}: {mapping.family} names res_odbc class [{mapping.database}], "
                "which res_odbc.conf does not define (or disables)"
            )
    if "voicemail.conf" in {m.family for m in config.realtime}:
        # voicemail.conf itself from the database, as start-up reads it.
        realtime = Realtime(config.realtime, live, config_dir=config.directory)
        try:
            conf = await realtime.load_config_file("voicemail.conf")
        except DatabaseError as exc:
            report.problems.append(f"voicemail.conf from the database: {exc}")
            conf = None
        if conf is not None:
            from_db = report.load("voicemail.conf (database)", lambda: voicemail_settings(conf))
            if from_db is not None:
                settings = from_db
                report.warnings.extend(from_db.warnings)
    storage = _section_line(directory, "voicemail.conf", "general", "odbcstorage")
    checks: list[tuple[str, str, Any, str]] = [
        (settings.odbcstorage, storage, messages_table(settings.odbctable), "voicemessages"),
        (settings.odbcstorage, storage, outbox_table(), "outbox"),
        (settings.odbcstorage, storage, mailbox_changes_table(), "mailbox_changes"),
        (settings.odbcstorage, storage, login_state_table(), "vm_login_state"),
        (settings.odbcstorage, storage, login_audit_table(), "vm_login_audit"),
    ]
    if settings.odbcstorage not in known:
        report.problems.append(
            f"{storage}: odbcstorage names res_odbc class [{settings.odbcstorage}], "
            "which res_odbc.conf does not define (or disables)"
        )
    for mapping in config.realtime:
        if mapping.driver.strip().lower() != "odbc":
            continue
        expected = expected_table(mapping.family, mapping.table)
        if expected is not None:
            where = _section_line(directory, "extconfig.conf", "settings", mapping.family)
            checks.append((mapping.database, where, *expected))
    for class_name, where, table, role in checks:
        pool = live.get(class_name)
        if pool is None:
            continue  # reported above: unknown or dead class
        try:
            findings: list[Finding] = await check_table(pool, table, role)
        except DatabaseError as exc:
            report.problems.append(f"{where}: [{class_name}] table {table.name}: {_reason(exc)}")
            continue
        for finding in findings:
            line = f"{where}: [{class_name}] {finding}"
            (report.problems if finding.severity == "error" else report.warnings).append(line)
