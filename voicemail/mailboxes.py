"""Finding a mailbox: voicemail.conf first, then the realtime `voicemail` family.

Asterisk's find_user order. Realtime rows are read on every call (as in Asterisk), so a row
an operator inserts works for the next call. The last row read for each mailbox is kept, and
used only when the database is away (refused, lost or too slow), so that a known mailbox keeps
its options, greeting choice and limits through an outage.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

from channels.sip.admission import LogLimiter
from storage.identifiers import box_name_problem
from storage.odbc import DatabaseError, DatabaseUnavailable
from storage.realtime import Realtime

from .callpath import CallPathDatabase
from .config import VoicemailSettings
from .config_checks import parse_bool
from .password_writer import (
    PasswordWriteError,
    run_externpass,
    write_conf_password,
    write_realtime_password,
)
from .pins import is_locked, stored_form

log = logging.getLogger(__name__)

# Per-mailbox options whose defaults come from [general] (fact sheet 7).
DEFAULTS = {
    "maxmsg": "100",
    "maxsecs": "0",
    "minsecs": "0",
    "attach": "yes",
    "envelope": "yes",
    "saycid": "no",
    "review": "no",
    "operator": "no",
    "leaveurgent": "yes",
    "moveheard": "yes",
    "language": "",
    "serveremail": "asterisk",
    "tz": "",
}


@dataclass
class Mailbox:
    context: str
    mailbox: str
    password: str
    fullname: str = ""
    email: str = ""
    pager: str = ""
    options: dict[str, str] = field(default_factory=dict)
    source: str = "static"

    def option(self, name: str) -> str:
        return self.options.get(name, DEFAULTS.get(name, ""))

    def int_option(self, name: str) -> int:
        value = self.option(name)
        try:
            return int(value)
        except ValueError:
            log.warning("mailbox %s@%s: bad %s=%r", self.mailbox, self.context, name, value)
            return int(DEFAULTS.get(name, "0"))


_ROW_FIELDS = ("context", "mailbox", "password", "fullname", "email", "pager", "uniqueid")


class MailboxDirectory:
    def __init__(
        self,
        settings: VoicemailSettings,
        realtime: Realtime,
        call_path: CallPathDatabase | None = None,
        conf_path: Path | None = None,
    ) -> None:
        """`conf_path`: the voicemail.conf file a new PIN of a static mailbox is written to
        (None: voicemail.conf came from the database, so such a PIN cannot be stored)."""
        self.settings = settings
        self.realtime = realtime
        self.call_path = call_path or CallPathDatabase()
        self.conf_path = conf_path
        # The last realtime answer per (context, mailbox), for when the database is away.
        self._last_known: dict[tuple[str, str], Mailbox] = {}
        self._pin_lock = asyncio.Lock()  # one voicemail.conf rewrite at a time
        self._refused_log = LogLimiter()

    def _general_options(self) -> dict[str, str]:
        names = set(DEFAULTS) | {"maxmessage"}
        options = {k: v for k, v in self.settings.general.items() if k in names}
        if "maxmessage" in options and "maxsecs" not in options:
            options["maxsecs"] = options["maxmessage"]  # Asterisk's old name
        options.pop("maxmessage", None)
        return options

    def unverified(self, mailbox: str, context: str) -> Mailbox:
        """A mailbox we could not look up (database away), with [general]'s options."""
        return Mailbox(context, mailbox, "", options=self._general_options(), source="unverified")

    async def find(self, mailbox: str, context: str = "default") -> Mailbox | None:
        problem = box_name_problem(mailbox) or box_name_problem(context)
        if problem is not None:  # from SIP, the dial plan or a row: it would form a bad `dir`
            if self._refused_log.should_log(asyncio.get_running_loop().time()):
                log.warning(
                    "mailbox %r@%r refused: not a valid mailbox@context name (%s)"
                    " (%d more since the last such line)",
                    mailbox[:100], context[:100], problem, self._refused_log.take_suppressed(),
                )  # fmt: skip
            return None
        options = self._general_options()
        static = self.settings.mailboxes.get((context, mailbox))
        if static is not None:
            options.update(static.options)
            return Mailbox(
                context=context,
                mailbox=mailbox,
                password=static.password,
                fullname=static.fullname,
                email=static.email,
                pager=static.pager,
                options=options,
            )
        if not self.realtime.has_family("voicemail"):
            return None
        try:
            row = await self.call_path.read(
                self.realtime.load("voicemail", mailbox=mailbox, context=context)
            )
        except DatabaseUnavailable as exc:
            known = self._last_known.get((context, mailbox))
            if known is None:
                raise
            log.warning(
                "mailbox %s@%s: database away (%s); using its row as last read",
                mailbox,
                context,
                exc,
            )
            return Mailbox(**{**known.__dict__, "source": "last-known"})
        if row is None:
            self._last_known.pop((context, mailbox), None)
            return None
        password = row.get("vmsecret") or row.get("password") or row.get("secret") or ""
        for name, value in row.items():
            if name not in _ROW_FIELDS and value != "":
                options[name] = value
        found = Mailbox(
            context=context,
            mailbox=mailbox,
            password=password,
            fullname=row.get("fullname", ""),
            email=row.get("email", ""),
            pager=row.get("pager", ""),
            options=options,
            source="realtime",
        )
        self._last_known[(context, mailbox)] = found
        return found

    async def change_password(
        self,
        mailbox: str,
        context: str,
        new: str,
        *,
        externpass: str = "",
        externpassnotify: str = "",
        pinhash: bool | None = None,
    ) -> bool:
        """Store a new PIN where the mailbox lives (Asterisk's vm_change_password and
        vm_change_password_shell); True when it is stored. Failures are logged, never raised;
        the PIN is never logged. The next lookup (this call's or another's) sees the new PIN.

        With `pinhash` (None: [general]'s, default yes) what is written is the PIN's hash
        (pins.stored_form); the externpass scripts are given the PIN itself, as in Asterisk,
        since they store it their own way.
        """
        static = self.settings.mailboxes.get((context, mailbox))
        where = "voicemail.conf" if static is not None else "realtime"
        if pinhash is None:
            pinhash = self.pinhash
        stored = new
        try:
            if externpass:  # replaces our own write
                if not await run_externpass(externpass, context, mailbox, new):
                    raise PasswordWriteError(f"externpass {externpass} failed")
                where = f"externpass {externpass}"
            else:
                stored = await asyncio.to_thread(stored_form, new, pinhash=pinhash)
                await self._write(mailbox, context, stored, current=None)
        except (PasswordWriteError, DatabaseError) as exc:
            log.error("mailbox %s@%s: new PIN not stored: %s", mailbox, context, exc)
            return False
        self._remember_password(mailbox, context, stored)
        log.info("mailbox %s@%s: PIN changed (%s)", mailbox, context, where)
        if externpassnotify and not externpass:
            if not await run_externpass(externpassnotify, context, mailbox, new):
                log.warning("mailbox %s@%s: externpassnotify failed", mailbox, context)
        return True

    @property
    def pinhash(self) -> bool:
        """[general] pinhash (default yes): PINs we write are stored as hashes."""
        return parse_bool(self.settings.general.get("pinhash", "yes")) is not False

    async def rehash_password(self, mailbox: str, context: str, current: str, pin: str) -> bool:
        """After a good login with the clear-text PIN `current`: store its hash instead (the
        '-' "not changeable" prefix kept). False (logged, without the PIN) when it could not
        be; the login goes on either way."""
        try:
            stored = await asyncio.to_thread(
                stored_form, pin, pinhash=True, locked=is_locked(current)
            )
            await self._write(mailbox, context, stored, current=current)
        except (PasswordWriteError, DatabaseError, OSError) as exc:
            log.error(
                "mailbox %s@%s: clear-text PIN not replaced by its hash: %s", mailbox, context, exc
            )
            return False
        self._remember_password(mailbox, context, stored)
        log.info("mailbox %s@%s: clear-text PIN replaced by its hash", mailbox, context)
        return True

    async def _write(self, mailbox: str, context: str, stored: str, *, current: str | None) -> None:
        """Write `stored` to the mailbox's voicemail.conf line or realtime row. `current`:
        the value it must replace (None: whatever is there now)."""
        static = self.settings.mailboxes.get((context, mailbox))
        if static is not None:
            if current is not None and static.password != current:
                raise PasswordWriteError("the PIN changed meanwhile")
            await self._write_static(mailbox, context, static.password, stored)
            return
        known = await self.find(mailbox, context)
        if known is None or known.source != "realtime":
            raise PasswordWriteError(f"mailbox {mailbox}@{context} is not in realtime")
        if current is not None and known.password != current:
            raise PasswordWriteError("the PIN changed meanwhile")
        await write_realtime_password(self.realtime, context, mailbox, known.password, stored)

    async def _write_static(self, mailbox: str, context: str, old: str, new: str) -> None:
        if self.conf_path is None:
            raise PasswordWriteError("voicemail.conf comes from the database; it is not written")
        async with self._pin_lock:
            path = await asyncio.to_thread(
                write_conf_password, self.conf_path, context, mailbox, old, new
            )
        log.info("mailbox %s@%s: PIN written to %s", mailbox, context, path)

    def _remember_password(self, mailbox: str, context: str, new: str) -> None:
        """What Asterisk's reset_user_pw does: the running server knows the new PIN now."""
        key = (context, mailbox)
        static = self.settings.mailboxes.get(key)
        if static is not None:
            self.settings.mailboxes[key] = dataclasses.replace(static, password=new)
        self._last_known.pop(key, None)
