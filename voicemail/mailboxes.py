"""Finding a mailbox: voicemail.conf first, then the realtime `voicemail` family.

Asterisk's find_user order. Realtime rows are read on every call (as in Asterisk), so a row
an operator inserts works for the next call. The last row read for each mailbox is kept, and
used only when the database is away (refused, lost or too slow), so that a known mailbox keeps
its options, greeting choice and limits through an outage.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from storage.odbc import DatabaseUnavailable
from storage.realtime import Realtime

from .callpath import CallPathDatabase
from .config import VoicemailSettings

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
    ) -> None:
        self.settings = settings
        self.realtime = realtime
        self.call_path = call_path or CallPathDatabase()
        # The last realtime answer per (context, mailbox), for when the database is away.
        self._last_known: dict[tuple[str, str], Mailbox] = {}

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
