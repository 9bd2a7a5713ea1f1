"""Running the dial plan for one call, as Asterisk's pbx does.

The static dial plan (extensions.conf, with includes) is searched in Asterisk's order: for
each context in `Dialplan.search_order`, its own extensions, then its realtime switches
(pbx_realtime). A call runs its extension's priorities in order until one is missing; an
application may return a `Goto` instead of True (go on) or False (end the call), and the
dial plan's own Goto, GotoIf and Set are run here (see `dialplan_flow`).

Special extensions: a jump to an extension that does not exist goes to `i` of the target
context (INVALID_EXTEN set) or ends the call; `a` and `o` are where VoiceMail() sends `*` and
`0` (it asks `extension_exists` first); `t` is an ordinary target here (we have no
WaitExten/Background whose timeout would lead to it); `h` runs when the call is over, for
whatever reason, with the call's variables and no audio: as in Asterisk, the main dial plan
stops as soon as the caller has hung up and `h` runs instead, so `h` is where a dial plan
logs VMSTATUS.

Arguments are split before variables are substituted, so a caller-chosen `${EXTEN}` can
never add an argument or an option (see `dialplan.expand_arguments`), and `$[...]` is cut into
tokens before its variables are (see `dialplan_expr`).

Not as in Asterisk: a call that runs more than `max_steps` (1000) steps is ended with a log
line (Asterisk loops for ever).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from channels.channel import CallerInfo, Channel, ChannelHungUp
from channels.sip.endpoint import CallHandler
from storage.odbc import DatabaseError
from storage.realtime import Realtime

from .active_calls import ActiveCall, ActiveCalls
from .callpath import CallPathDatabase
from .dialplan import Dialplan, Step, expand_arguments, pattern_regex, steps_from_rows
from .dialplan_expr import substitute
from .dialplan_flow import Assignment, FlowError, goto, gotoif, set_variable
from .goto import Goto
from .logconfig import current_call

log = logging.getLogger(__name__)

# A dial plan application: (channel, arguments, the call's variables) -> True to go on to the
# next priority, False to end the call, or a Goto to continue somewhere else.
Application = Callable[[Channel, list[str], dict[str, str]], Awaitable["bool | Goto"]]

# A call that runs more steps than this is ended (a Goto loop, or a dial plan gone wrong).
MAX_STEPS = 1000
# Applications the runner itself runs, on the argument text as written (see dialplan_flow).
BUILTINS = frozenset({"goto", "gotoif", "set"})
_CALLERID_ALL = re.compile(r'\s*(?:"([^"]*)"|([^<]*?))\s*<([^>]*)>\s*\Z')


@dataclass
class CallState:
    """Where one call is in the dial plan, and its variables."""

    channel: Channel
    dialplan: Dialplan
    variables: dict[str, str]
    context: str
    exten: str
    steps: list[Step]
    active: ActiveCall
    priority: int = 1
    executed: int = 0

    def current(self) -> Step | None:
        return next((step for step in self.steps if step.priority == self.priority), None)

    def move(self, context: str, exten: str, steps: list[Step], priority: int) -> None:
        self.context, self.exten, self.steps, self.priority = context, exten, steps, priority
        self.variables["CONTEXT"] = context
        self.variables["EXTEN"] = exten
        # What applications read as the call's context (VoiceMail's `a`/`o`, the message's
        # context column), as Asterisk's channel context follows a Goto. The dialled
        # extension in CallerInfo stays: the SIP dialog's Contact is built from it.
        self.channel.info.context = context


class DialplanRunner:
    def __init__(
        self,
        dialplan: Dialplan,
        realtime: Realtime,
        call_path: CallPathDatabase,
        applications: dict[str, Application],
        max_steps: int = MAX_STEPS,
    ) -> None:
        self.dialplan = dialplan
        self.realtime = realtime
        self.call_path = call_path
        self.applications = applications
        self.max_steps = max_steps
        self.active_calls = ActiveCalls()

    def unsupported_applications(self, dialplan: Dialplan | None = None) -> list[str]:
        """`file:line: application X is not implemented` for every step we cannot run."""
        return [
            f"{filename}:{line}: application {app} is not implemented"
            for app, filename, line in (dialplan or self.dialplan).applications()
            if app.lower() not in self.applications and app.lower() not in BUILTINS
        ]

    async def route(self, info: CallerInfo) -> CallHandler | None:
        """The handler for a call, or None (404). The dial plan in force when the call
        arrives is the one it runs to the end, whatever a reload does meanwhile."""
        dialplan = self.dialplan
        steps = await self.find_steps(dialplan, info.context, info.exten)
        if not steps:
            return None
        chosen = steps

        async def run(channel: Channel) -> None:
            await self.run_call(channel, dialplan, chosen)

        return run

    async def find_steps(self, dialplan: Dialplan, context: str, exten: str) -> list[Step] | None:
        """The steps of `exten` in `context`: for each context of its search order (itself,
        then its includes), its own extensions, then its realtime switches (pbx_find_extension's
        order). None when no extension matches."""
        for name in dialplan.search_order(context) or [context]:
            extension = dialplan.match_local(name, exten)
            if extension is not None and extension.steps:
                return extension.steps
            steps = await self._realtime_steps(dialplan, name, exten)
            if steps:
                return steps
        return None

    def static_extension_exists(self, context: str, exten: str) -> bool:
        """Whether extensions.conf (with includes) has `exten` in `context`: what VoiceMail()
        asks, while the greeting plays, before it offers `*` (a) and `0` (o). Realtime switches
        are not asked there, so that no key press waits for the database."""
        return self.dialplan.match(context, exten) is not None

    async def extension_exists(self, context: str, exten: str) -> bool:
        """Whether `exten` exists in `context` (static, included or realtime), as Asterisk's
        ast_exists_extension: VoiceMail() asks it before offering `*` (a) and `0` (o)."""
        return await self.find_steps(self.dialplan, context, exten) is not None

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

    def initial_variables(self, info: CallerInfo, globals_: dict[str, str]) -> dict[str, str]:
        return {
            **globals_,
            "EXTEN": info.exten,
            "CONTEXT": info.context,
            "CALLERID(num)": info.caller_id_num,
            "CALLERID(name)": info.caller_id_name,
            "CHANNEL": info.channel_name,
            "REDIRECTING(from-num)": info.redirecting_from,
            "REDIRECTING(reason)": info.redirect_reason,
        }

    async def run_call(self, channel: Channel, dialplan: Dialplan, steps: list[Step]) -> None:
        """Run the call from priority 1 of its extension, then `h` when it is over.

        As Asterisk's pbx does: priorities in order until one is missing (the call ends), a
        jump wherever an application or Goto sends it, and the end of the main dial plan as
        soon as the caller has hung up. When the call ends for any reason, the context's `h`
        extension runs (if it has one) with the call's variables and no audio.
        """
        info = channel.info
        call = CallState(
            channel,
            dialplan,
            self.initial_variables(info, dialplan.globals),
            info.context,
            info.exten,
            steps,
            self.active_calls.begin(channel),
        )
        token = current_call.set(call.active)  # log lines of this call carry its id, mailbox
        try:
            await self._run_with_h(call)
        finally:
            current_call.reset(token)
            self.active_calls.end(channel)

    async def _run_with_h(self, call: CallState) -> None:
        channel = call.channel
        await self._run(call, hangup_ends=True)
        if call.exten == "h":
            return
        h_steps = await self.find_steps(call.dialplan, call.context, "h")
        if not h_steps:
            return
        if not channel.hung_up:
            channel.hangup(None, "dial plan ended")
        call.move(call.context, "h", h_steps, 1)
        call.executed = 0
        await self._run(call, hangup_ends=False)

    async def _run(self, call: CallState, *, hangup_ends: bool) -> None:
        while True:
            if hangup_ends and call.channel.hung_up:
                return
            step = call.current()
            if step is None:
                return  # no such priority: the extension is done (autofallthrough)
            if call.executed >= self.max_steps:
                log.warning(
                    "call %s: more than %d dial plan steps, ending the call (a Goto loop?) at "
                    "[%s@%s:%d] (%s:%d)",
                    call.channel.info.call_id,
                    self.max_steps,
                    call.exten,
                    call.context,
                    call.priority,
                    step.filename,
                    step.line,
                )
                return
            call.executed += 1
            try:
                result = await self._execute(call, step)
            except ChannelHungUp:
                return
            except FlowError as exc:
                log.warning("%s:%d: %s(%s): %s; ending the call", step.filename, step.line,
                            step.app, step.args, exc)  # fmt: skip
                return
            if isinstance(result, Goto):
                if not await self._jump(call, result, step):
                    return
            elif result:
                call.priority += 1
            else:
                return

    async def _execute(self, call: CallState, step: Step) -> bool | Goto:
        info, variables = call.channel.info, call.variables
        name = step.app.lower()
        app = self.applications.get(name)
        if name not in BUILTINS and app is None:
            log.warning(
                "%s:%d: application %s is not implemented; ending the call",
                step.filename,
                step.line,
                step.app,
            )
            return False
        args = [] if name in BUILTINS else expand_arguments(step.args, variables)
        log.info(
            "call %s: executing [%s@%s:%d] %s(%s)",
            info.call_id,
            call.exten,
            call.context,
            step.priority,
            step.app,
            # for the log only: applications get the list
            substitute(step.args, variables, log_errors=False)
            if name in BUILTINS
            else ",".join(args),
        )
        if name == "goto":
            return goto(step.args, variables, call.exten)
        if name == "gotoif":
            return gotoif(step.args, variables, call.exten) or True
        if name == "set":
            self._assign(call, set_variable(step.args, variables), step)
            return True
        assert app is not None
        self.active_calls.entering(call.active, step.app, args)
        status = "FAILED"
        try:
            outcome = await app(call.channel, args, variables)
            status = variables.get("VMSTATUS", "SUCCESS") if name == "voicemail" else "SUCCESS"
            return outcome
        except ChannelHungUp:
            status = variables.get("VMSTATUS", "SUCCESS") if name == "voicemail" else "SUCCESS"
            raise
        finally:
            self.active_calls.finished(call.active, step.app, status)
            call.active.application = ""

    def _assign(self, call: CallState, assignment: Assignment, step: Step) -> None:
        """A call variable, or the caller ID the applications see (CALLERID(num|name|all))."""
        name, value = assignment.name, assignment.value
        info = call.channel.info
        function = name.upper()
        if function in ("CALLERID(NUM)", "CALLERID(NUMBER)"):
            info.caller_id_num = value
        elif function == "CALLERID(NAME)":
            info.caller_id_name = value
        elif function == "CALLERID(ALL)":
            match = _CALLERID_ALL.match(value)
            if match:
                info.caller_id_name = (match.group(1) or match.group(2) or "").strip()
                info.caller_id_num = match.group(3).strip()
            else:
                info.caller_id_name, info.caller_id_num = "", value.strip()
        elif "(" in name:
            log.warning(
                "%s:%d: Set(%s=...): function %s is not implemented; nothing set",
                step.filename,
                step.line,
                name,
                name.partition("(")[0],
            )
            return
        else:
            call.variables[name] = value
            return
        call.variables["CALLERID(num)"] = info.caller_id_num
        call.variables["CALLERID(name)"] = info.caller_id_name

    async def _jump(self, call: CallState, target: Goto, step: Step) -> bool:
        """Continue at `target`; False when the call must end.

        An extension that does not exist sends the call to `i` of the target context (with
        INVALID_EXTEN set), or ends it when there is no `i`; a label the extension does not
        have ends the call, as Asterisk's Goto does.
        """
        call_id = call.channel.info.call_id
        context = target.context or call.context
        steps = await self.find_steps(call.dialplan, context, target.exten)
        if steps is None:
            if isinstance(target.priority, str):
                log.warning("%s:%d: Goto: no extension %s@%s for label %s; ending the call",
                            step.filename, step.line, target.exten, context,
                            target.priority)  # fmt: skip
                return False
            invalid = None if target.exten == "i" else await self.find_steps(
                call.dialplan, context, "i"
            )  # fmt: skip
            if invalid is None:
                log.warning(
                    "call %s: sent to invalid extension %s@%s but there is no invalid "
                    "handler (i); ending the call",
                    call_id,
                    target.exten,
                    context,
                )
                return False
            log.info("call %s: invalid extension %s@%s, going to i", call_id, target.exten,
                     context)  # fmt: skip
            call.variables["INVALID_EXTEN"] = target.exten
            call.move(context, "i", invalid, 1)
            return True
        priority = target.priority
        if isinstance(priority, str):
            found = next((s.priority for s in steps if s.label == priority), None)
            if found is None:
                log.warning("%s:%d: Goto: extension %s@%s has no label %r; ending the call",
                            step.filename, step.line, target.exten, context,
                            priority)  # fmt: skip
                return False
            priority = found
        log.info("call %s: goto (%s,%s,%d)", call_id, context, target.exten, priority)
        call.move(context, target.exten, steps, priority)
        return True
