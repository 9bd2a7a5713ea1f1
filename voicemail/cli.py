"""The `voicemail` command: serve, database set-up, mailbox tools and checks.

Errors an operator can fix (a wrong config line, a dead database, a busy port) are printed
as one line and exit 1; they are not tracebacks.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from importlib import metadata
from pathlib import Path

from storage.audioformats import detect_format, stored_format
from storage.conffile import ConfigError
from storage.logins import LoginStore
from storage.messages import MessageStore
from storage.odbc import DatabaseError

from . import login_admin, operator_messages
from .check_config import check_config
from .config import load_server_config
from .mailboxes import MailboxDirectory
from .operator_messages import EXPORT_FORMATS, OperatorError
from .serve import serve
from .server import StartupError, VoicemailServer

CONFIG_DIR_HELP = "directory with voicemail.conf, sip.conf, ... (default /etc/asterisk)"


def _config_dir_option(parser: argparse.ArgumentParser) -> None:
    """`-C DIR` after any subcommand, with the same help as before it."""
    parser.add_argument(
        "-C", "--config-dir", type=Path, dest="config_dir_sub", metavar="DIR", help=CONFIG_DIR_HELP
    )


def _version() -> str:
    """The installed package's version (pyproject.toml), as `voicemail --version` says it."""
    try:
        return metadata.version("ara-voicemail")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voicemail", description="ARA Voicemail server")
    parser.add_argument("--version", action="version", version=f"ara-voicemail {_version()}")
    parser.add_argument(
        "-C",
        "--config-dir",
        type=Path,
        default=Path("/etc/asterisk"),
        metavar="DIR",
        help=CONFIG_DIR_HELP,
    )
    parser.add_argument("-v", "--verbose", action="count", default=0)
    # `voicemail -r` / `voicemail -rx "COMMAND"`: the running server's console, as asterisk's.
    parser.add_argument("-r", "--remote", action="store_true", help="console on the server")
    parser.add_argument("-x", "--execute", metavar="COMMAND", help="with -r: run one command")
    commands = parser.add_subparsers(dest="command", required=False)
    serve_cmd = commands.add_parser("serve", help="run the server in the foreground")
    _config_dir_option(serve_cmd)
    db = commands.add_parser("db", help="database set-up")
    _config_dir_option(db)
    db_commands = db.add_subparsers(dest="db_command", required=True)
    init = db_commands.add_parser("init", help="create missing tables")
    _config_dir_option(init)
    reload = commands.add_parser("reload", help="make the running server re-read its files")
    _config_dir_option(reload)
    check = db_commands.add_parser("check", help="compare the database with the expected schema")
    _config_dir_option(check)
    message = commands.add_parser("message", help="messages in the database")
    _config_dir_option(message)
    message_commands = message.add_subparsers(dest="message_command", required=True)
    export = message_commands.add_parser(
        "export", help="write one message's audio, as stored, to a file"
    )
    _config_dir_option(export)
    export.add_argument("mailbox", help="MAILBOX[@CONTEXT] (context default: default)")
    export.add_argument("msgnum", type=int, help="message number in the folder (0 is the first)")
    export.add_argument("--folder", default="INBOX", help="INBOX, Old, Urgent, ... (INBOX)")
    export.add_argument(
        "-o", "--output", type=Path, help="file to write (default msgNNNN.<format> here)"
    )
    _messages_commands(commands)
    _login_commands(commands)
    check_config_cmd = commands.add_parser(
        "check-config",
        help="parse every file, connect to every ODBC class, check the tables",
    )
    _config_dir_option(check_config_cmd)
    return parser


# --- operator's mailbox tools (voicemail/operator_messages.py) and check-config -----------


def _messages_commands(commands: argparse._SubParsersAction) -> None:
    """`voicemail messages list|export|delete MAILBOX@CONTEXT ...`."""
    messages = commands.add_parser("messages", help="list, export and delete a mailbox's messages")
    _config_dir_option(messages)
    sub = messages.add_subparsers(dest="messages_command", required=True)
    folder_help = "INBOX, Old, Work, Family, Friends, Cust1-5, Deleted, Urgent, or 0-11"
    listing = sub.add_parser("list", help="the messages of a folder (of every folder if none)")
    _config_dir_option(listing)
    listing.add_argument("mailbox", help="MAILBOX@CONTEXT")
    listing.add_argument("folder", nargs="?", help=folder_help)
    export = sub.add_parser("export", help="write one message's audio to a file")
    _config_dir_option(export)
    delete = sub.add_parser("delete", help="delete one message; later ones are renumbered")
    _config_dir_option(delete)
    for command in (export, delete):
        command.add_argument("mailbox", help="MAILBOX@CONTEXT")
        command.add_argument("folder", help=folder_help)
        command.add_argument("msgnum", help="message number in the folder (0 is the first)")
    export.add_argument("file", type=Path, help="file to write")
    export.add_argument(
        "--format",
        dest="audio_format",
        metavar="FORMAT",
        help=f"convert to {'|'.join(EXPORT_FORMATS)} (default: as stored)",
    )


def _login_commands(commands: argparse._SubParsersAction) -> None:
    """`voicemail unlock`, `voicemail show logins` and `voicemail passwd` (login_admin.py)."""
    unlock = commands.add_parser("unlock", help="clear a mailbox's login lockout")
    _config_dir_option(unlock)
    unlock.add_argument("mailbox", help="MAILBOX@CONTEXT")
    show = commands.add_parser("show", help="show logins")
    _config_dir_option(show)
    show_commands = show.add_subparsers(dest="show_command", required=True)
    logins = show_commands.add_parser("logins", help="a mailbox's last 20 logins")
    _config_dir_option(logins)
    logins.add_argument("mailbox", help="MAILBOX@CONTEXT")
    passwd = commands.add_parser("passwd", help="set a mailbox's PIN")
    _config_dir_option(passwd)
    passwd.add_argument("mailbox", help="MAILBOX@CONTEXT")
    passwd.add_argument(
        "newpin",
        help="the new PIN (digits), or - to read it from standard input (kept out of "
        "ps and the shell's history)",
    )


async def _run_login_tool(config_dir: Path, args: argparse.Namespace) -> int:
    """One login tool against the database the configuration names; errors are one line."""

    async def action(store: MessageStore, directory: MailboxDirectory) -> str:
        logins = LoginStore(store.pool)
        if args.command == "unlock":
            return await login_admin.unlock(logins, directory, args.mailbox)
        if args.command == "show":
            return await login_admin.show_logins(logins, directory, args.mailbox)
        pin = sys.stdin.readline().strip() if args.newpin == "-" else args.newpin
        return await login_admin.set_password(directory, args.mailbox, pin)

    return await _with_store(config_dir, action)


async def _with_store(
    config_dir: Path, action: Callable[[MessageStore, MailboxDirectory], Awaitable[str]]
) -> int:
    """Open the message store the configuration names, run one mailbox tool, print its
    answer; a wrong mailbox, folder or message, or a database error, is one line and exit 1."""
    server = VoicemailServer(load_server_config(config_dir))
    try:
        await server.open_storage()
        assert server.store is not None
        conf_path = None  # as the server: a static mailbox's PIN goes to voicemail.conf
        if not server.realtime.has_family("voicemail.conf"):
            conf_path = server.config.directory / "voicemail.conf"
        directory = MailboxDirectory(server.config.voicemail, server.realtime, None, conf_path)
        directory.call_path.wait = 10.0  # an operator can wait longer than a caller
        print(await action(server.store, directory))
        return 0
    except OperatorError as exc:
        print(f"voicemail: {exc}", file=sys.stderr)
        return 1
    except DatabaseError as exc:
        print(f"voicemail: database: {exc}", file=sys.stderr)
        return 1
    finally:
        for pool in server.pools.values():
            await pool.close()


def _run_messages(config_dir: Path, args: argparse.Namespace) -> int:
    try:
        mailbox, context = operator_messages.parse_mailbox(args.mailbox)
    except OperatorError as exc:
        print(f"voicemail: {exc}", file=sys.stderr)
        return 1
    command = args.messages_command

    async def action(store: MessageStore, directory: MailboxDirectory) -> str:
        if command == "list":
            return await operator_messages.list_messages(
                store, mailbox, context, args.folder, directory=directory
            )
        if command == "delete":
            return await operator_messages.delete_message(
                store, mailbox, context, args.folder, args.msgnum, directory=directory
            )
        formats = directory.settings.formats
        return await operator_messages.export_message(
            store,
            mailbox,
            context,
            args.folder,
            args.msgnum,
            args.file,
            args.audio_format,
            stored=stored_format("|".join(formats)),
        )

    return asyncio.run(_with_store(config_dir, action))


def _run_check_config(config_dir: Path) -> int:
    report = asyncio.run(check_config(config_dir))
    for warning in report.warnings:
        print(f"warning: {warning}")
    for problem in report.problems:
        print(problem)
    if report.problems:
        count = len(report.problems)
        print(f"{count} problem{'s' if count != 1 else ''} found")
        return 1
    print("configuration OK")
    return 0


def _configure_logging(verbose: int) -> None:
    level = logging.DEBUG if verbose > 1 else logging.INFO
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _announce(server: VoicemailServer) -> None:
    assert server.endpoint is not None
    host, port = server.endpoint.contact_host.rsplit(":", 1)
    transports = ", ".join(t.name for t in server.endpoint.transports)
    print(f"ARA Voicemail listening on {host}:{port} ({transports})", flush=True)
    print(
        f"  leave a message: sipp -sf voicemail/demo/leave-message.xml -s 1000 {host}:{port} "
        "-m 1 -i 127.0.0.1 -mi 127.0.0.1",
        flush=True,
    )
    print(f"  or call sip:1000@{host}:{port} from a softphone", flush=True)
    print(
        f"  messages are stored in [{server.config.voicemail.odbcstorage}] "
        f"table {server.config.voicemail.odbctable}; Ctrl-C stops",
        flush=True,
    )


async def _run_serve(config_dir: Path) -> None:
    config = load_server_config(config_dir)
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await serve(config, _announce)
    except asyncio.CancelledError:
        pass


async def _run_db_init(config_dir: Path) -> None:
    server = VoicemailServer(load_server_config(config_dir))
    try:
        for line in await server.init_database():
            print(f"table ready: {line}")
    finally:
        for pool in server.pools.values():
            await pool.close()


async def _run_db_check(config_dir: Path) -> int:
    server = VoicemailServer(load_server_config(config_dir))
    try:
        findings = await server.check_database()
    finally:
        for pool in server.pools.values():
            await pool.close()
    for finding in findings:
        print(finding)
    errors = sum(1 for f in findings if f.severity == "error")
    print(f"schema check: {errors} error(s), {len(findings) - errors} note(s)")
    return 1 if errors else 0


# File name endings of the stored formats (Asterisk's: wav49 is written as .WAV).
_EXTENSIONS = {"wav": "wav", "wav49": "WAV", "gsm": "gsm", "ulaw": "ulaw", "alaw": "alaw"}


async def _run_message_export(config_dir: Path, args: argparse.Namespace) -> int:
    config = load_server_config(config_dir)
    server = VoicemailServer(config)
    mailbox, _, context = args.mailbox.partition("@")
    try:
        await server.open_storage()
        assert server.store is not None
        message = await server.store.retrieve(
            context or "default", mailbox, args.folder, args.msgnum
        )
    finally:
        for pool in server.pools.values():
            await pool.close()
    if message is None:
        print(
            f"voicemail: no message {args.msgnum} in {mailbox}@{context or 'default'} "
            f"{args.folder}",
            file=sys.stderr,
        )
        return 1
    fmt = detect_format(message.recording) or stored_format("|".join(config.voicemail.formats))
    output = args.output or Path(f"msg{args.msgnum:04d}.{_EXTENSIONS.get(fmt, fmt)}")
    output.write_bytes(message.recording)
    print(
        f"{output}: {len(message.recording)} bytes, {fmt}, {message.duration} s, "
        f"from {message.callerid}"
    )
    return 0


def _reload(config_dir: Path) -> int:
    """Signal the server that serves this configuration (its pid is in the local spool)."""
    config = load_server_config(config_dir)
    pidfile = config.pidfile
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError) as exc:
        print(f"voicemail: no running server for {config_dir} ({pidfile}: {exc})", file=sys.stderr)
        return 1
    print(f"reload requested from server {pid}; its log says what changed")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    config_dir = getattr(args, "config_dir_sub", None) or args.config_dir
    if args.remote or args.execute is not None:
        from .console.control import interactive, run_remote

        if args.execute is not None:
            return run_remote(config_dir, args.execute)
        return interactive(config_dir)
    if args.command is None:
        parser.error("a command is required (serve, db, reload, message) or -r / -rx")
    _configure_logging(args.verbose)
    try:
        if args.command == "serve":
            try:
                import uvloop

                uvloop.run(_run_serve(config_dir))
            except ImportError:
                asyncio.run(_run_serve(config_dir))
        elif args.command == "reload":
            return _reload(config_dir)
        elif args.command == "message":
            return asyncio.run(_run_message_export(config_dir, args))
        elif args.command == "messages":
            return _run_messages(config_dir, args)
        elif args.command in ("unlock", "show", "passwd"):
            return asyncio.run(_run_login_tool(config_dir, args))
        elif args.command == "check-config":
            return _run_check_config(config_dir)
        elif args.command == "db" and args.db_command == "check":
            return asyncio.run(_run_db_check(config_dir))
        elif args.command == "db":
            asyncio.run(_run_db_init(config_dir))
    except (ConfigError, StartupError) as exc:
        print(f"voicemail: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
