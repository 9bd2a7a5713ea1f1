"""Running the dial plan for one call: find its steps, then run each step's application.

The static dial plan (extensions.conf, with includes) is searched in Asterisk's order: for
each context in `Dialplan.search_order`, its own extensions, then its realtime switches
(pbx_realtime). Arguments are split before variables are substituted, so a caller-chosen
`${EXTEN}` can never add an argument or an option (see `dialplan.expand_arguments`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from channels.channel import CallerInfo, Channel, ChannelHungUp
from channels.sip.endpoint import CallHandler
from storage.odbc import DatabaseError
from storage.realtime import Realtime

from .callpath import CallPathDatabase
from .dialplan import Dialplan, Step, expand_arguments, pattern_regex, steps_from_rows

log = logging.getLogger(__name__)

# A dial plan application: (channel, arguments, the call's variables) -> False to stop.
Application = Callable[[Channel, list[str], dict[str, str]], Awaitable[bool]]


class DialplanRunner:
    def __init__(
        self,
        dialplan: Dialplan,
        realtime: Realtime,
        call_path: CallPathDatabase,
        applications: dict[str, Application],
    ) -> None:
        self.dialplan = dialplan
        self.realtime = realtime
        self.call_path = call_path
        self.applications = applications

    def unsupported_applications(self, dialplan: Dialplan | None = None) -> list[str]:
        """`file:line: application X is not implemented` for every step we cannot run."""
        return [
            f"{filename}:{line}: application {app} is not implemented"
            for app, filename, line in (dialplan or self.dialplan).applications()
            if app.lower() not in self.applications
        ]

    async def route(self, info: CallerInfo) -> CallHandler | None:
        """The handler for a call, or None (404). The dial plan in force when the call
        arrives is the one it runs to the end, whatever a reload does meanwhile."""
        dialplan = self.dialplan
        steps: list[Step] | None = None
        for context in dialplan.search_order(info.context) or [info.context]:
            extension = dialplan.match_local(context, info.exten)
            if extension is not None:
                steps = extension.steps
                break
            steps = await self._realtime_steps(dialplan, context, info.exten)
            if steps:
                break
        if not steps:
            return None
        chosen = steps

        async def run(channel: Channel) -> None:
            await self.execute(channel, chosen, dialplan.globals)

        return run

    async def _realtime_steps(
        self, dialplan: Dialplan, context: str, exten: str
    ) -> list[Step] | None:
        """pbx_realtime: exact rows first, then `_` pattern rows, longest pattern first."""
        for switch in dialplan.switches.get(context, []):
            if not self.realtime.has_family(switch.family):
                log.warning("switch => Realtime/%s: family not in extconfig.conf", switch.family)
                continue
            try:
                rows = await self.call_path.read(
                    self.realtime.load_multi(
                        switch.family, {"exten": exten, "context": switch.db_context}
                    )
                )
                if not rows and switch.patterns:
                    candidates = await self.call_path.read(
                        self.realtime.load_multi(
                            switch.family, {"exten LIKE": "\\_%", "context": switch.db_context}
                        )
                    )
                    patterns = sorted(
                        {row.get("exten", "") for row in candidates}, key=len, reverse=True
                    )
                    for pattern in patterns:
                        if pattern_regex(pattern).match(exten):
                            rows = [row for row in candidates if row.get("exten") == pattern]
                            break
            except (DatabaseError, ValueError) as exc:
                log.warning("realtime dial plan lookup of %s@%s failed: %s", exten, context, exc)
                continue
            if rows:
                return steps_from_rows(rows)
        return None

    async def execute(
        self, channel: Channel, steps: list[Step], globals_: dict[str, str] | None = None
    ) -> None:
        info = channel.info
        variables = {
            **(globals_ or {}),
            "EXTEN": info.exten,
            "CONTEXT": info.context,
            "CALLERID(num)": info.caller_id_num,
            "CALLERID(name)": info.caller_id_name,
            "CHANNEL": info.channel_name,
            "REDIRECTING(from-num)": info.redirecting_from,
            "REDIRECTING(reason)": info.redirect_reason,
        }
        for step in steps:
            app = self.applications.get(step.app.lower())
            if app is None:
                log.warning(
                    "%s:%d: application %s is not implemented; ending the call",
                    step.filename,
                    step.line,
                    step.app,
                )
                return
            args = expand_arguments(step.args, variables)
            log.info(
                "call %s: executing [%s@%s:%d] %s(%s)",
                info.call_id,
                info.exten,
                info.context,
                step.priority,
                step.app,
                ",".join(args),  # for the log only: applications get the list
            )
            try:
                keep_going = await app(channel, args, variables)
            except ChannelHungUp:
                return
            if not keep_going:
                return
